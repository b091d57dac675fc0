//! `smdpplus load es2`: the operator's side of ES2+ under load. Each unit
//! of work is a pair, ES2+.DownloadOrder then ES2+.ConfirmOrder with
//! releaseFlag (SGP.22 §5.3.1-2), over mutually authenticated TLS
//! connections that are kept alive, as an operator's backend keeps them.
//!
//! Closed loop (`--concurrency C`: C clients, one connection each) or open
//! loop (`--rate R` pairs/s, latency counted from the scheduled start so a
//! slow server cannot hide its queueing). The report gives pairs/s, the
//! latency of each function and of the pair, errors by GSMA status code,
//! and the server's and the generator's CPU per pair.
//!
//! An ES2+ pair has no cryptography of its own: with kept-alive
//! connections its floor is the TLS handshakes' share, which the report
//! gives next to the server's CPU.

use super::measure::{cpu_marks, floor_tls, percentiles, progress};
use super::ConnArgs;
use crate::es2plus::{self, Function};
use crate::ids::Eid;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How DownloadOrder names the eUICC.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Es2Orders {
    /// No EID: ConfirmOrder gets a generated matchingId (activation code).
    Ac,
    /// A distinct EID per order (in the SGP.26 test EUM's range).
    Eid,
}

/// `load es2` options.
#[derive(clap::Args, Debug)]
pub struct Es2Args {
    /// Closed loop: clients, each with its own kept-alive connection.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: pairs started per second (overrides --concurrency).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load (default 10 unless --pairs).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Number of pairs instead of a duration.
    #[arg(long, conflicts_with = "duration_secs")]
    pub pairs: Option<usize>,
    /// How the orders name the eUICC.
    #[arg(long, value_enum, default_value_t = Es2Orders::Ac)]
    pub orders: Es2Orders,
    /// Profile type asked for in DownloadOrder.
    #[arg(long, default_value = crate::app::DEMO_PROFILE_TYPE)]
    pub profile_type: String,
    /// Confirmation code set in ConfirmOrder.
    #[arg(long)]
    pub confirmation_code: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Server process id, for its CPU time from /proc/PID/stat.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Server metrics URL (plain HTTP, e.g. http://HOST:9090/metrics), for
    /// its process_cpu_seconds_total.
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// ES2+ connection (operator certificate from the data directory).
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// One pair's outcome.
struct Outcome {
    /// Latency of DownloadOrder and ConfirmOrder when answered,
    /// microseconds.
    steps: [Option<u64>; 2],
    /// From the (scheduled) start to the end, microseconds.
    total_us: u64,
    /// `function code` of the failure, if any.
    error: Option<String>,
}

const STEPS: [Function; 2] = [Function::DownloadOrder, Function::ConfirmOrder];

/// What every client shares.
struct Shared {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// `host:port` of the ES2+ listener.
    addr: String,
    requester: String,
    orders: Es2Orders,
    profile_type: String,
    confirmation_code: Option<String>,
    /// EIDs are drawn from this run's range of the test EUM.
    eum: Option<crate::euicc::issue::Eum>,
    run_id: u128,
    next: AtomicUsize,
    connections: AtomicUsize,
    tls_group: Mutex<Option<String>>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Shared {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.addr.as_str())
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        tcp.set_nodelay(true).ok();
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        {
            let mut g = self.tls_group.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = stream
                    .get_ref()
                    .1
                    .negotiated_key_exchange_group()
                    .map(|k| format!("{:?}", k.name()));
            }
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// An idle connection, or a new one.
    async fn checkout(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match c {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.connect().await,
            }
        }
    }

    fn checkin(&self, c: SendRequest<Full<Bytes>>) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// Sends one ES2+ call; `Ok(answer)` on Executed-Success, else the
    /// error key (function and GSMA subject/reason code, or HTTP status).
    async fn call(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        f: Function,
        body: Value,
    ) -> Result<Value, String> {
        let transport = |e: String| format!("{} transport ({e})", f.name());
        let call_id = format!("load-{}", hex::encode(rand::random::<[u8; 8]>()));
        let msg = es2plus::request_message(&self.requester, &call_id, &body);
        sender.ready().await.map_err(|e| transport(e.to_string()))?;
        let req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(f.path())
            .header("host", self.addr.as_str())
            .header("content-type", "application/json")
            .header("x-admin-protocol", crate::http::gsma::ADMIN_PROTOCOL)
            .body(Full::new(Bytes::from(msg)))
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{} HTTP {status} (not JSON)", f.name()))?;
        let st = &v["header"]["functionExecutionStatus"];
        if status == 200 && st["status"] == "Executed-Success" {
            return Ok(v);
        }
        let d = &st["statusCodeData"];
        Err(
            match (d["subjectCode"].as_str(), d["reasonCode"].as_str()) {
                (Some(s), Some(r)) => format!("{} {s}/{r}", f.name()),
                _ => format!("{} HTTP {status}", f.name()),
            },
        )
    }

    /// One DownloadOrder + ConfirmOrder pair.
    async fn pair(&self, start: Instant) -> Outcome {
        let mut out = Outcome {
            steps: [None; 2],
            total_us: 0,
            error: None,
        };
        let mut sender = match self.checkout().await {
            Ok(s) => s,
            Err(e) => {
                out.error = Some(format!("connect ({e})"));
                out.total_us = start.elapsed().as_micros() as u64;
                return out;
            }
        };
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let eid: Option<Eid> = self
            .eum
            .as_ref()
            .and_then(|eum| eum.eid(self.run_id * 10_000_000_000_000 + k as u128).ok());
        let r = self.pair_on(&mut sender, eid, &mut out).await;
        out.total_us = start.elapsed().as_micros() as u64;
        if let Err(e) = r {
            out.error = Some(e);
        }
        if !sender.is_closed() {
            self.checkin(sender);
        }
        out
    }

    async fn pair_on(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        eid: Option<Eid>,
        out: &mut Outcome,
    ) -> Result<(), String> {
        let t = Instant::now();
        let order = self
            .call(
                sender,
                Function::DownloadOrder,
                serde_json::to_value(es2plus::DownloadOrder {
                    eid: eid.as_ref().map(|e| e.as_str().to_owned()),
                    iccid: None,
                    profile_type: Some(self.profile_type.clone()),
                })
                .map_err(|e| e.to_string())?,
            )
            .await;
        out.steps[0] = Some(t.elapsed().as_micros() as u64);
        let order = order?;
        let iccid = order["iccid"]
            .as_str()
            .ok_or("downloadOrder answered no iccid")?
            .to_owned();
        let matching_id = match self.orders {
            Es2Orders::Ac => Some(crate::ids::generate_matching_id(&mut rand::thread_rng())),
            Es2Orders::Eid => None,
        };
        let mut body = serde_json::to_value(es2plus::ConfirmOrder {
            iccid,
            eid: eid.as_ref().map(|e| e.as_str().to_owned()),
            matching_id,
            confirmation_code: self.confirmation_code.clone(),
            smds_address: None,
            release_flag: true,
        })
        .map_err(|e| e.to_string())?;
        if let Some(m) = body.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        let t = Instant::now();
        let r = self.call(sender, Function::ConfirmOrder, body).await;
        out.steps[1] = Some(t.elapsed().as_micros() as u64);
        r.map(|_| ())
    }
}

/// Runs `load es2`.
pub async fn run(a: Es2Args) -> Result<ExitCode, String> {
    let duration = match (a.pairs, a.duration_secs) {
        (Some(_), _) => None,
        (None, d) => Some(Duration::from_secs(d.unwrap_or(10).max(1))),
    };
    let budget = a.pairs.unwrap_or(usize::MAX);
    let concurrency = a.concurrency.max(1);
    let (tls, requester) = super::es2_tls(&a.conn)?;
    let base = a.conn.server.trim_end_matches('/');
    let addr = base
        .strip_prefix("https://")
        .ok_or("--server must be an https:// URL")?
        .to_owned();
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let eum = match a.orders {
        Es2Orders::Eid => Some(
            crate::euicc::issue::Eum::sgp26(crate::crypto::ecdsa::Curve::NistP256)
                .map_err(|e| e.to_string())?,
        ),
        Es2Orders::Ac => None,
    };
    let sh = Arc::new(Shared {
        connector: TlsConnector::from(tls),
        server_name: ServerName::try_from(host).map_err(|e| e.to_string())?,
        addr,
        requester,
        orders: a.orders,
        profile_type: a.profile_type.clone(),
        confirmation_code: a.confirmation_code.clone(),
        eum,
        run_id: u128::from(rand::random::<u32>() % 1_000_000_000),
        next: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        tls_group: Mutex::new(None),
        idle: Mutex::new(vec![]),
    });
    // Connections first, so that the measured phase counts no handshake in
    // closed loop.
    if a.rate.is_none() {
        for _ in 0..concurrency {
            let c = sh.connect().await?;
            sh.checkin(c);
        }
    }
    match (a.rate, duration) {
        (Some(r), Some(d)) => eprintln!("open loop: {r} pairs/s for {} s", d.as_secs()),
        (Some(r), None) => eprintln!("open loop: {r} pairs/s, {budget} pairs"),
        (None, Some(d)) => eprintln!("closed loop: {concurrency} clients for {} s", d.as_secs()),
        (None, None) => eprintln!("closed loop: {concurrency} clients, {budget} pairs"),
    }
    let connections_before = sh.connections.load(Ordering::Relaxed);
    let before = cpu_marks(a.server_pid, a.server_metrics.as_deref()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let start = Instant::now();
    let end = duration.map(|d| start + d);
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    match a.rate {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            for k in 0..budget {
                let scheduled = start + interval.mul_f64(k as f64);
                if end.is_some_and(|e| scheduled >= e) {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let (sh, tx) = (sh.clone(), tx.clone());
                tasks.spawn(async move {
                    let _ = tx.send(sh.pair(scheduled).await);
                });
            }
        }
        None => {
            for _ in 0..concurrency {
                let (sh, tx, started) = (sh.clone(), tx.clone(), started.clone());
                tasks.spawn(async move {
                    while end.is_none_or(|e| Instant::now() < e)
                        && started.fetch_add(1, Ordering::Relaxed) < budget
                    {
                        let _ = tx.send(sh.pair(Instant::now()).await);
                    }
                });
            }
        }
    }
    drop(tx);
    let mut outcomes = Vec::new();
    let expected = duration.map_or(budget, |d| {
        a.rate
            .map_or(usize::MAX, |r| (r * d.as_secs_f64()).ceil() as usize)
    });
    while let Some(o) = rx.recv().await {
        outcomes.push(o);
        if expected != usize::MAX {
            progress(outcomes.len().min(expected), expected, "pairs");
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let after = cpu_marks(a.server_pid, a.server_metrics.as_deref()).await?;

    // The report.
    let pairs_ok = outcomes.iter().filter(|o| o.error.is_none()).count();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for e in outcomes.iter().filter_map(|o| o.error.as_ref()) {
        *errors.entry(e.clone()).or_insert(0) += 1;
    }
    let mut steps = serde_json::Map::new();
    for (k, f) in STEPS.iter().enumerate() {
        steps.insert(
            f.name().to_owned(),
            percentiles(outcomes.iter().filter_map(|o| o.steps[k]).collect()),
        );
    }
    let run = outcomes.len();
    let per = |secs: Option<f64>| secs.filter(|_| run > 0).map(|s| s * 1e6 / run as f64);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a).max(0.0));
    let server_proc = diff(before.proc, after.proc);
    let server_metrics = diff(before.metrics, after.metrics);
    let client = diff(before.client, after.client);
    let server_per_pair = per(server_proc.or(server_metrics));
    let group = sh
        .tls_group
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (tls_sign, tls_kx, group_name) = floor_tls(group.as_deref())?;
    let handshakes = sh.connections.load(Ordering::Relaxed) - connections_before;
    // The server's share of a handshake: its CertificateVerify signature,
    // its key exchange, and two P-256 verifies (the operator's certificate
    // and its CertificateVerify).
    let p256 = super::load_download::floor_sgp22(crate::crypto::ecdsa::Curve::NistP256)?;
    let handshake_us = tls_sign + tls_kx + p256.ecdsa_verify / 2.0;
    let floor_per_pair = if run > 0 {
        handshake_us * handshakes as f64 / run as f64
    } else {
        0.0
    };
    let report = json!({
        "pairs": pairs_ok,
        "attempted": run,
        "failed": run - pairs_ok,
        "elapsed_secs": elapsed.as_secs_f64(),
        "pairs_per_sec": pairs_ok as f64 / elapsed.as_secs_f64().max(1e-9),
        "load": {
            "loop": if a.rate.is_some() { "open" } else { "closed" },
            "rate": a.rate,
            "concurrency": if a.rate.is_some() { None } else { Some(concurrency) },
            "orders": format!("{:?}", a.orders).to_lowercase(),
        },
        "connections_opened": sh.connections.load(Ordering::Relaxed),
        "handshakes_measured": handshakes,
        "tls_group": group_name,
        "steps": Value::Object(steps),
        "pair": percentiles(
            outcomes.iter().filter(|o| o.error.is_none()).map(|o| o.total_us).collect()
        ),
        "errors": errors,
        "server_cpu": {
            "proc_secs": server_proc,
            "metrics_secs": server_metrics,
            "per_pair_us": server_per_pair,
        },
        "client_cpu": {
            "secs": client,
            "per_pair_us": per(client),
        },
        "floor": {
            "handshake_us": handshake_us,
            "per_pair_us": floor_per_pair,
        },
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_text(&report);
    }
    Ok(if errors.is_empty() && pairs_ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "{} order pairs in {:.1} s: {:.1} pairs/s ({} attempted, {} failed; {} connections, {} opened while measuring, TLS group {})",
        r["pairs"],
        f(&r["elapsed_secs"]),
        f(&r["pairs_per_sec"]),
        r["attempted"],
        r["failed"],
        r["connections_opened"],
        r["handshakes_measured"],
        r["tls_group"].as_str().unwrap_or("-"),
    );
    println!(
        "{:<16} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "latency ms", "count", "p50", "p90", "p99", "max"
    );
    let row = |name: &str, p: &Value| {
        println!(
            "{:<16} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            p["count"].as_u64().unwrap_or(0),
            f(&p["p50_ms"]),
            f(&p["p90_ms"]),
            f(&p["p99_ms"]),
            f(&p["max_ms"])
        )
    };
    for step in STEPS {
        row(step.name(), &r["steps"][step.name()]);
    }
    row("pair", &r["pair"]);
    match r["errors"].as_object() {
        Some(e) if !e.is_empty() => {
            println!("errors:");
            for (k, n) in e {
                println!("  {k}: {n}");
            }
        }
        _ => println!("errors: none"),
    }
    let opt = |v: &Value, unit: &str| match v.as_f64() {
        Some(x) => format!("{x:.3} {unit}"),
        None => "-".into(),
    };
    let sc = &r["server_cpu"];
    println!(
        "server CPU: {} (/proc), {} (metrics); {} per pair",
        opt(&sc["proc_secs"], "s"),
        opt(&sc["metrics_secs"], "s"),
        opt(&sc["per_pair_us"], "us"),
    );
    println!(
        "client CPU: {}; {} per pair",
        opt(&r["client_cpu"]["secs"], "s"),
        opt(&r["client_cpu"]["per_pair_us"], "us"),
    );
    println!(
        "floor: an ES2+ pair has no cryptography of its own; the TLS handshakes made while measuring add {:.1} us per pair ({:.1} us each)",
        f(&r["floor"]["per_pair_us"]),
        f(&r["floor"]["handshake_us"]),
    );
}
