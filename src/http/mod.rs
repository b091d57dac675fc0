//! HTTP plumbing shared by every listener: TLS accept, HTTP/1.1 serving,
//! graceful shutdown, metrics and tracing per request, and the GSMA JSON
//! envelope (SGP.22 §6.5.1).
//!
//! Handlers stay thin: they parse, call the domain, and render. This module
//! owns everything around them.

pub mod client;
pub mod fields;
pub mod listener;
pub mod query;
pub mod routes;
pub mod tls;
pub mod trace;

use crate::error::{codes, Error};
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use listener::{
    AcceptBackoff, Activity, ConnLimiter, ListenerLimits, LogThrottle, RequestDeadline, Tracked,
};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The X-Admin-Protocol value we send (SGP.22 §6.2): the highest version we implement.
pub const ADMIN_PROTOCOL: &str = "gsma/rsp/v2.2.0";

/// A response body.
pub type Body = Full<Bytes>;

/// What a handler produced, with the labels for metrics and logs.
pub struct Outcome {
    /// The response.
    pub response: Response<Body>,
    /// Function name (metrics label), e.g. `downloadOrder`.
    pub function: &'static str,
    /// `Executed-Success`, `Failed` or an HTTP-level result.
    pub status: &'static str,
    /// The GSMA status code, `subject/reason`, or empty.
    pub code: String,
}

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

/// A request handler.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Arc<ConnInfo>) -> Pin<Box<dyn Future<Output = Outcome> + Send>>
        + Send
        + Sync,
>;

/// Serves one listener until `shutdown` turns true, then stops accepting,
/// lets in-flight requests finish (up to `drain`), and returns.
///
/// Every connection passes the listener's [`ListenerLimits`]: the caps on
/// open connections are checked at accept time, before any TLS work, and
/// a refused connection is closed at once.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    interface: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    metrics: Arc<Metrics>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
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
            handler: handler.clone(),
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
    handler: Handler,
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
            self.handler.clone(),
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
    handler: Handler,
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
            let handler = handler.clone();
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
                        .run(handler(req, info.clone()))
                        .await;
                    activity.end();
                    if late {
                        metrics
                            .deadline_exceeded
                            .with_label_values(&[interface, "body"])
                            .inc();
                        out = request_timeout_outcome(out.function, request_timeout);
                    }
                    let elapsed = start.elapsed();
                    metrics.observe(interface, out.function, out.status, &out.code, elapsed);
                    // Interface, peer and operator are the span's.
                    tracing::info!(
                        function = out.function,
                        status = out.status,
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
fn request_timeout_outcome(function: &'static str, timeout: Duration) -> Outcome {
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
    Outcome {
        response,
        function,
        status: "timeout",
        code: String::new(),
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

/// Checks the headers every GSMA function call carries (SGP.22 §6.2):
/// `X-Admin-Protocol: gsma/rsp/v2.*` and a JSON Content-Type (matched by
/// prefix, so `application/json;charset=UTF-8` is fine).
pub fn check_gsma_headers(headers: &hyper::HeaderMap) -> Result<(), Error> {
    let proto = headers
        .get("x-admin-protocol")
        .ok_or_else(|| {
            Error::invalid(codes::VERSION_MISSING, "X-Admin-Protocol header is missing")
        })?
        .to_str()
        .unwrap_or("");
    let version = proto.trim().strip_prefix("gsma/rsp/v").unwrap_or("");
    if !version.starts_with("2.") {
        return Err(Error::invalid(
            codes::VERSION_UNSUPPORTED,
            format!(
                "unsupported X-Admin-Protocol {}: this server speaks gsma/rsp/v2.x",
                crate::error::quote(proto)
            ),
        ));
    }
    let ct = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(Error::invalid(
            codes::FORMAT_INVALID,
            format!(
                "Content-Type must be application/json, got {}",
                crate::error::quote(ct)
            ),
        ));
    }
    Ok(())
}

/// `header.functionExecutionStatus` for a result (SGP.22 §6.5.1.4).
pub fn execution_status(err: Option<&Error>) -> Value {
    match err {
        None => json!({"status": "Executed-Success"}),
        Some(e) => {
            json!({"status": "Failed", "statusCodeData": {
                "subjectCode": e.code.subject, "reasonCode": e.code.reason, "message": e.public_message()}})
        }
    }
}

/// A GSMA JSON response: `{"header": {...}, ...body}` with the required headers.
pub fn gsma_response(
    http: StatusCode,
    err: Option<&Error>,
    body: Map<String, Value>,
) -> Response<Body> {
    let mut msg = Map::new();
    msg.insert(
        "header".into(),
        json!({"functionExecutionStatus": execution_status(err)}),
    );
    msg.extend(body);
    gsma_bytes(
        http,
        serde_json::to_vec(&Value::Object(msg)).unwrap_or_default(),
    )
}

/// A GSMA JSON response from already-rendered bytes.
pub fn gsma_bytes(http: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = http;
    let h = r.headers_mut();
    h.insert(
        "x-admin-protocol",
        hyper::header::HeaderValue::from_static(ADMIN_PROTOCOL),
    );
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
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

/// The outcome label for a GSMA error.
pub fn code_label(err: Option<&Error>) -> String {
    err.map(|e| e.code.to_string()).unwrap_or_default()
}

/// A GSMA function call that passed the checks every function shares.
pub struct GsmaRequest<F> {
    /// The function named by the path.
    pub function: F,
    /// The body as received (ES2+ idempotency hashes it).
    pub body: Bytes,
    /// The body parsed as a JSON object.
    pub json: Map<String, Value>,
}

/// The routing and checks shared by ES2+ and ES9+ (SGP.22 §6.2, §6.5.1):
/// the function from the path after `prefix` (404 and 1.6/3.1 otherwise),
/// POST (405), the X-Admin-Protocol and Content-Type headers, the body size
/// limit, and a JSON object body. A refusal comes back as the finished
/// [`Outcome`].
pub async fn gsma_request<F: Copy>(
    interface: &'static str,
    req: Request<Incoming>,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<F>,
    name: impl Fn(F) -> &'static str,
    limit: usize,
) -> Result<GsmaRequest<F>, Outcome> {
    let path = req.uri().path().to_owned();
    let function = path.strip_prefix(prefix).and_then(lookup);
    let method_ok = req.method() == hyper::Method::POST;
    let headers = check_gsma_headers(req.headers());
    // The body is read (within the size limit and the request deadline)
    // before any refusal is answered: a refusal that left it unread would
    // make the server close a keep-alive connection the client, told
    // nothing, goes on using for its next call.
    let body = read_body(req.into_body(), limit).await;
    let keep_alive = body.is_ok();
    let Some(function) = function else {
        let e = Error::invalid(
            codes::FUNCTION_UNSUPPORTED,
            format!("no {interface} function at {}", crate::error::quote(&path)),
        );
        let refusal = gsma_failed(interface, "unknown", StatusCode::NOT_FOUND, e);
        return Err(closing_unless(keep_alive, refusal));
    };
    let fname = name(function);
    if !method_ok {
        let e = Error::invalid(
            codes::FUNCTION_UNSUPPORTED,
            "GSMA functions are called with POST",
        );
        let refusal = gsma_failed(interface, fname, StatusCode::METHOD_NOT_ALLOWED, e);
        return Err(closing_unless(keep_alive, refusal));
    }
    let checked = async {
        headers?;
        let body = body?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::invalid(codes::FORMAT_INVALID, format!("malformed JSON: {e}")))?;
        match value {
            Value::Object(json) => Ok(GsmaRequest {
                function,
                body,
                json,
            }),
            _ => Err(Error::invalid(
                codes::FORMAT_INVALID,
                "the request must be a JSON object",
            )),
        }
    };
    checked
        .await
        .map_err(|e| closing_unless(keep_alive, gsma_failed(interface, fname, StatusCode::OK, e)))
}

/// Marks a response `Connection: close` unless the connection stays usable
/// (a request body that could not be read whole leaves it unusable, and the
/// client must not send its next request on it).
fn closing_unless(keep_alive: bool, mut outcome: Outcome) -> Outcome {
    if !keep_alive {
        outcome.response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    outcome
}

/// A `Failed` function execution (HTTP 200 unless routing failed), logged:
/// our own failures as errors, refusals at info.
pub fn gsma_failed(
    interface: &'static str,
    function: &'static str,
    http: StatusCode,
    e: Error,
) -> Outcome {
    if e.is_ours() {
        tracing::error!(interface, function, error = %e.message, "call failed internally");
    } else {
        tracing::info!(interface, function, code = %e.code, reason = %e.message, "call refused");
    }
    Outcome {
        response: gsma_response(http, Some(&e), Map::new()),
        function,
        status: "Failed",
        code: e.code.to_string(),
    }
}
