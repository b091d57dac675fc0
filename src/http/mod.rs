//! HTTP plumbing shared by every listener: TLS accept, HTTP/1.1 serving,
//! graceful shutdown, and metrics and tracing per request. [`api`] gives
//! every API the same shape; [`gsma`] is the JSON binding of SGP.22 §6.5.1.
//!
//! Handlers stay thin: they parse, call the domain, and render. This module
//! owns everything around them.

pub mod api;
pub mod client;
pub mod error;
pub mod fields;
pub mod gsma;
pub mod listener;
pub mod query;
pub mod tls;
pub mod trace;

use crate::error::{codes, Error};
use crate::metrics::Metrics;
use api::{Apis, Outcome, Served};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use listener::{
    AcceptBackoff, Activity, ConnLimiter, ListenerLimits, LogThrottle, RequestDeadline, Tracked,
};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A response body.
pub type Body = Full<Bytes>;

/// Facts about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// Subject CN of the client certificate (on ES2+ the verified operator id).
    pub client_cn: Option<String>,
    /// The client's certificate chain as sent, leaf first (empty without
    /// one). On the GetBalance listener it is not verified by the handshake.
    pub client_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The future of one request.
type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

/// One listener: its name (the `listener` label), its socket, its TLS
/// configuration (none: plain HTTP), the APIs it serves and its limits.
pub struct Listener {
    /// The name.
    pub name: &'static str,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS, or plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// What it serves.
    pub apis: Apis,
    /// Its caps and deadlines.
    pub limits: ListenerLimits,
}

/// Serves one listener until `shutdown` turns true, then stops accepting,
/// lets in-flight requests finish (up to `drain`), and returns.
///
/// Every connection passes the listener's [`ListenerLimits`]: the caps on
/// open connections are checked at accept time, before any TLS work, and
/// a refused connection is closed at once.
pub async fn serve(
    l: Listener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let Listener {
        name: interface,
        socket: listener,
        tls,
        apis,
        limits,
    } = l;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    let conns = ConnLimiter::new(interface, &limits, &metrics);
    let limits = Arc::new(limits);
    let refusal_log = LogThrottle::new();
    // Events a client causes at will (handshake failures, deadlines,
    // oversize headers) are logged at most once a second per listener.
    let conn_log = Arc::new(LogThrottle::new());
    let mut backoff = AcceptBackoff::new();
    for phase in ["tls_handshake", "headers", "body"] {
        let _ = metrics
            .deadline_exceeded
            .with_label_values(&[interface, phase]);
    }
    let _ = metrics.headers_too_large.with_label_values(&[interface]);
    let _ = metrics.accept_errors.with_label_values(&[interface]);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    let pause = backoff.failed(interface, &e, &metrics);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            },
            _ = shutdown.changed() => break,
        };
        let slot = match conns.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics
                    .connections_refused
                    .with_label_values(&[interface, refusal.label()])
                    .inc();
                if let Some(held) = refusal_log.admit() {
                    tracing::warn!(
                        interface,
                        %peer,
                        reason = refusal.label(),
                        refused_unlogged = held,
                        "connection refused: cap reached"
                    );
                }
                drop(tcp);
                continue;
            }
        };
        tcp.set_nodelay(true).ok();
        let conn = Conn {
            interface,
            peer,
            apis: apis.clone(),
            metrics: metrics.clone(),
            limits: limits.clone(),
            log: conn_log.clone(),
        };
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                Some(acc) => {
                    let tls = match tokio::time::timeout(
                        conn.limits.tls_handshake_timeout,
                        acc.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            conn.metrics
                                .tls_failures
                                .with_label_values(&[interface])
                                .inc();
                            conn.note(|held| {
                                tracing::info!(interface, %peer, error = %e, unlogged = held, "TLS handshake refused")
                            });
                            return;
                        }
                        Err(_) => {
                            conn.metrics
                                .tls_failures
                                .with_label_values(&[interface])
                                .inc();
                            conn.metrics
                                .deadline_exceeded
                                .with_label_values(&[interface, "tls_handshake"])
                                .inc();
                            conn.note(|held| {
                                tracing::info!(interface, %peer, unlogged = held, "TLS handshake timed out")
                            });
                            return;
                        }
                    };
                    let client_chain = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.to_vec())
                        .unwrap_or_default();
                    let client_cn = client_chain
                        .first()
                        .and_then(|c| crate::pki::common_name(c));
                    let info = Arc::new(ConnInfo {
                        peer,
                        client_cn,
                        client_chain,
                    });
                    conn.serve(tls, info, watcher).await;
                }
                None => {
                    let info = Arc::new(ConnInfo {
                        peer,
                        client_cn: None,
                        client_chain: vec![],
                    });
                    conn.serve(tcp, info, watcher).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(interface, "in-flight requests did not finish in {drain:?}");
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    interface: &'static str,
    peer: SocketAddr,
    apis: Apis,
    metrics: Arc<Metrics>,
    limits: Arc<ListenerLimits>,
    log: Arc<LogThrottle>,
}

impl Conn {
    /// Writes a log line unless the listener's connection log is throttled.
    fn note(&self, line: impl FnOnce(u64)) {
        if let Some(held) = self.log.admit() {
            line(held)
        }
    }

    /// Serves HTTP/1.1 on `io` under the listener's header caps and
    /// deadlines.
    async fn serve<S>(
        self,
        io: S,
        info: Arc<ConnInfo>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // hyper starts this clock when it waits for a request head, so it
            // also closes idle keep-alive connections.
            .header_read_timeout(self.limits.request_timeout)
            .max_header_size(self.limits.max_header_bytes)
            .max_headers(self.limits.max_headers);
        let svc = service(
            self.interface,
            self.apis.clone(),
            self.metrics.clone(),
            info,
            activity.clone(),
            self.limits.request_timeout,
        );
        let io = TokioIo::new(Tracked::new(io, activity));
        let Err(e) = watcher.watch(builder.serve_connection(io, svc)).await else {
            return;
        };
        let (interface, peer) = (self.interface, self.peer);
        if e.is_timeout() {
            self.metrics
                .deadline_exceeded
                .with_label_values(&[interface, "headers"])
                .inc();
            self.note(|held| {
                tracing::info!(interface, %peer, unlogged = held, "request headers not received in time; connection closed")
            });
        } else if e.is_parse_too_large() {
            self.metrics
                .headers_too_large
                .with_label_values(&[interface])
                .inc();
            self.note(|held| {
                tracing::info!(interface, %peer, unlogged = held, "request headers too large or too many; 431")
            });
        }
    }
}

fn service(
    interface: &'static str,
    apis: Apis,
    metrics: Arc<Metrics>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    request_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future = ResponseFuture,
> {
    hyper::service::service_fn(
        move |req: Request<Incoming>| -> Pin<
            Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>,
        > {
            let apis = apis.clone();
            let metrics = metrics.clone();
            let info = info.clone();
            let activity = activity.clone();
            let request_id = trace::request_id();
            let span = trace::span(interface, &request_id, info.peer, info.client_cn.as_deref());
            Box::pin(tracing::Instrument::instrument(
                async move {
                    let start = Instant::now();
                    let first_byte = activity.begin();
                    let path = req.uri().path().to_owned();
                    let (mut out, late) = RequestDeadline::new(first_byte + request_timeout)
                        .run(apis.serve(req, info.clone()))
                        .await;
                    activity.end();
                    if late {
                        metrics
                            .deadline_exceeded
                            .with_label_values(&[interface, "body"])
                            .inc();
                        out = timed_out(out, request_timeout);
                    }
                    let elapsed = start.elapsed();
                    metrics.observe(
                        out.api,
                        out.endpoint,
                        out.outcome.as_str(),
                        &out.code,
                        elapsed,
                    );
                    // Listener, peer and operator are the span's.
                    tracing::info!(
                        api = out.api,
                        endpoint = out.endpoint,
                        outcome = out.outcome.as_str(),
                        code = %out.code,
                        http = out.response.status().as_u16(),
                        path,
                        micros = elapsed.as_micros() as u64,
                        "request"
                    );
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&request_id) {
                        out.response
                            .headers_mut()
                            .insert(trace::REQUEST_ID_HEADER, v);
                    }
                    Ok(out.response)
                },
                span,
            ))
        },
    )
}

/// 408 for a request whose body did not arrive by the listener's deadline;
/// the connection is closed after it.
fn timed_out(late: Served, timeout: Duration) -> Served {
    let mut response = text_response(
        StatusCode::REQUEST_TIMEOUT,
        "text/plain",
        format!(
            "the request was not received within {} s\n",
            timeout.as_secs()
        ),
    );
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    Served {
        response,
        api: late.api,
        endpoint: late.endpoint,
        outcome: Outcome::Timeout,
        code: "408".into(),
    }
}

/// Reads a request body of at most `limit` bytes, within the listener's
/// request deadline (past it the server answers 408 whatever the handler
/// makes of the error).
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Error> {
    let Some(read) = listener::within_deadline(Limited::new(body, limit).collect()).await else {
        return Err(Error::invalid(
            codes::FORMAT_INVALID,
            "the request body was not received in time",
        ));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Error::invalid(
                codes::FORMAT_INVALID,
                format!("request body exceeds {limit} bytes"),
            ))
        }
        Err(e) => Err(Error::invalid(
            codes::FORMAT_INVALID,
            format!("request body could not be read: {e}"),
        )),
    }
}

/// A plain JSON response for non-GSMA endpoints.
pub fn json_response(http: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = http;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text response.
pub fn text_response(
    http: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(text.into()));
    *r.status_mut() = http;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}
