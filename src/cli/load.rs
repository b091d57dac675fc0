//! `smdpplus load getbalance`: an open-loop load generator for the
//! GetBalance API. Requests are scheduled at a fixed rate and each latency
//! is measured from its scheduled time, so a slow server cannot slow the
//! generator down and hide its own queueing (no coordinated omission).
//! Connections are kept alive, as a proxy in front of the API keeps them.

use crate::http::tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What to send and how.
pub struct LoadArgs {
    /// `host:port` of the GetBalance listener.
    pub target: String,
    /// TLS server name.
    pub server_name: String,
    /// The ICCID asked for.
    pub iccid: String,
    /// Requests per second.
    pub rate: u32,
    /// Seconds of load.
    pub duration_secs: u64,
    /// Client TLS config (CA, client certificate).
    pub tls: Arc<rustls::ClientConfig>,
    /// `Authorization` header value, if any.
    pub authorization: Option<String>,
}

/// What came back.
pub struct LoadReport {
    /// Requests sent.
    pub sent: usize,
    /// Answers by HTTP status; transport failures under 0.
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Connections opened.
    pub connections: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl LoadReport {
    /// The latency at quantile `q` (0..=1), microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i.min(self.latencies_us.len() - 1)]
    }
}

async fn connect(
    target: &str,
    name: &ServerName<'static>,
    tls: &TlsConnector,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let stream = tls
        .connect(name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Runs the load and collects the answers.
pub async fn getbalance(a: LoadArgs) -> Result<LoadReport, String> {
    let name = ServerName::try_from(a.server_name.clone()).map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(a.tls.clone());
    let total = (u64::from(a.rate) * a.duration_secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(a.rate.max(1)));
    // Idle connections come back through this channel.
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<SendRequest<Full<Bytes>>>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u16, u64)>();
    let path = format!(
        "/v1/sims/iccid:{}/balances?fieldsTemplate=basic&limit=1",
        a.iccid
    );
    let run: [u8; 4] = rand::random();
    let start = Instant::now();
    let mut connections = 0;
    for i in 0..total {
        let scheduled = start + interval * (i as u32);
        tokio::time::sleep_until(scheduled.into()).await;
        let mut sender = loop {
            match idle_rx.try_recv() {
                Ok(s) if !s.is_closed() => break Some(s),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        if sender.is_none() {
            sender = Some(connect(&a.target, &name, &connector).await?);
            connections += 1;
        }
        let Some(mut sender) = sender else { continue };
        let mut req = hyper::Request::builder()
            .method(hyper::Method::GET)
            .uri(path.as_str())
            .header("host", a.server_name.as_str())
            .header(
                "x-ms-dm-transactionid",
                format!("load-{}-{i}", hex::encode(run)),
            );
        if let Some(auth) = &a.authorization {
            req = req.header("authorization", auth.as_str());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (idle_tx, done_tx) = (idle_tx.clone(), done_tx.clone());
        tokio::spawn(async move {
            let status = match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            let latency = scheduled.elapsed().as_micros() as u64;
            let _ = done_tx.send((status, latency));
            if status != 0 {
                let _ = idle_tx.send(sender);
            }
        });
    }
    drop(done_tx);
    let mut statuses = std::collections::BTreeMap::new();
    let mut latencies_us = Vec::with_capacity(total);
    while latencies_us.len() < total {
        match tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await {
            Ok(Some((status, us))) => {
                *statuses.entry(status).or_insert(0) += 1;
                latencies_us.push(us);
            }
            _ => break,
        }
    }
    latencies_us.sort_unstable();
    Ok(LoadReport {
        sent: total,
        statuses,
        latencies_us,
        connections,
        elapsed: start.elapsed(),
    })
}

/// The client TLS config: trust `ca`, present `cert`/`key` if given.
pub fn client_tls(
    ca: &std::path::Path,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let id = match (cert, key) {
        (Some(c), Some(k)) => Some(tls::Identity::load(c, k).map_err(|e| e.to_string())?),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    tls::client(&[ca], id.as_ref(), false).map_err(|e| e.to_string())
}
