//! `smdpplus load download`: a load generator for whole profile downloads
//! (SGP.22 §3.1.3), with many software eUICCs, that reports how far the
//! server's CPU cost per download is above its cryptographic floor.
//!
//! 1. **eUICCs.** `--euiccs N` software eUICCs ([`crate::euicc::SoftEuicc`]),
//!    each with a fresh key pair and a CERT.EUICC.ECDSA issued in-process by
//!    the SGP.26 test EUM of its curve ([`crate::euicc::issue::Eum`]), with
//!    a distinct EID in the EUM's permitted range (§4.5.2.2).
//! 2. **Orders.** Placed over ES2+ before the measured phase, with the
//!    operator client certificate of the data directory's dev PKI (as
//!    `smdpplus es2`): `eid` (DownloadOrder linked to an eUICC's EID, then
//!    ConfirmOrder with releaseFlag, §5.3.1-2: the eUICC sends no
//!    matchingId), `ac` (DownloadOrder without EID, ConfirmOrder with a
//!    generated matchingId that the eUICC then sends, as from an
//!    activation code, §4.1), `mix` (alternating), or `existing`: the
//!    Released orders already in the store (admin API, state Released).
//!    An existing order linked to an EID is downloaded by an eUICC issued
//!    for that EID (it must lie in the test EUM's range, 89049032...); one
//!    with a matchingId and no EID by any eUICC of the pool.
//! 3. **Sessions.** InitiateAuthentication, AuthenticateClient,
//!    GetBoundProfilePackage and HandleNotification with the signed
//!    ProfileInstallationResult (§5.6.1-4); the eUICC side does its real
//!    cryptography (§5.7), which is the client's CPU. Connections are kept
//!    alive across sessions (`keepalive`) or opened per session.
//! 4. **Load.** Closed loop (`--concurrency`) or open loop (`--rate`, each
//!    latency measured from the scheduled start, so a slow server cannot
//!    hide its queueing), for `--duration-secs` or `--sessions`.
//! 5. **Report.** Downloads/s, latency percentiles per ES9+ step and per
//!    session, errors by GSMA status code or HTTP status, the server's CPU
//!    per session (`/proc/<pid>/stat` or its `process_cpu_seconds_total`),
//!    the client's own CPU, and the crypto floor: the server's
//!    cryptographic work for one session timed in-process (best of
//!    several batches after a warm-up), and the ratio of the two. The
//!    floor counts one TLS handshake per session; with kept-alive
//!    connections the report also gives the floor and ratio counting only
//!    the handshakes made.

use super::measure::{best_of, cpu_marks, es2_result, floor_tls, percentiles, progress};
use super::ConnArgs;
use crate::crypto::ecdsa::{Curve, SigningKey};
use crate::crypto::ecka::OneTimeKeyPair;
use crate::es2plus::{self, Function as Es2Function};
use crate::es9plus::dto::*;
use crate::es9plus::Function;
use crate::euicc::issue::Eum;
use crate::euicc::lpa::{parse_answer, LpaError, HEADERS};
use crate::euicc::SoftEuicc;
use crate::ids::Eid;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The curve of the eUICCs (and so of the DPauth/DPpb credentials the
/// server signs with, §5.6.1).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurveChoice {
    /// NIST P-256.
    Nist,
    /// brainpoolP256r1.
    Brainpool,
    /// Half and half.
    Mix,
}

/// How the orders are made.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderKind {
    /// Linked to the eUICC's EID, no matchingId sent.
    Eid,
    /// Activation code: no EID, a generated matchingId.
    Ac,
    /// Alternating `eid` and `ac`.
    Mix,
    /// The Released orders already in the store (admin API, state
    /// Released, at most --order-count): one linked to an EID in the
    /// SGP.26 test EUM's range (89049032...) is downloaded by an eUICC
    /// issued for that EID, one with a matchingId and no EID by any eUICC
    /// of the pool; others are skipped.
    Existing,
}

/// Connection reuse.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnMode {
    /// Connections are kept alive and reused across sessions.
    Keepalive,
    /// A new TLS connection for every session.
    PerSession,
}

/// `load download` options.
#[derive(clap::Args, Debug)]
pub struct DownloadArgs {
    /// ES9+ listener, HOST:PORT (also sent as smdpAddress).
    #[arg(long, default_value = "localhost:8443")]
    pub smdp: String,
    /// Software eUICCs, each with its own key, certificate and EID
    /// (default: one per order, at most 8192). A device has one or two
    /// orders; one EID with hundreds of open orders makes every
    /// AuthenticateClient read them all (SGP.22 §5.6.3 order matching).
    #[arg(long)]
    pub euiccs: Option<usize>,
    /// Curve of the eUICCs.
    #[arg(long, value_enum, default_value_t = CurveChoice::Nist)]
    pub curve: CurveChoice,
    /// How the orders are placed.
    #[arg(long, value_enum, default_value_t = OrderKind::Eid)]
    pub orders: OrderKind,
    /// How many orders to place (default: --sessions, or rate x duration in
    /// open loop, or 50 x concurrency x duration in closed loop). The run
    /// ends early when they are used up.
    #[arg(long)]
    pub order_count: Option<usize>,
    /// Profile type asked for in DownloadOrder.
    #[arg(long, default_value = crate::app::DEMO_PROFILE_TYPE)]
    pub profile_type: String,
    /// Confirmation code set in ConfirmOrder and entered by the eUICC.
    #[arg(long)]
    pub confirmation_code: Option<String>,
    /// Connection reuse.
    #[arg(long, value_enum, default_value_t = ConnMode::Keepalive)]
    pub connections: ConnMode,
    /// Closed loop: sessions in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: sessions started per second (overrides --concurrency).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of load (default 10 unless --sessions).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Number of sessions instead of a duration.
    #[arg(long, conflicts_with = "duration_secs")]
    pub sessions: Option<usize>,
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
    /// CA file for the ES9+ TLS certificate (default: the SGP.26 test CI).
    #[arg(long)]
    pub es9_ca: Option<std::path::PathBuf>,
    /// Accept any ES9+ TLS server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// ES2+ connection (operator certificate from the data directory).
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// One placed order.
#[derive(Clone, Debug)]
struct Order {
    iccid: String,
    matching_id: Option<String>,
}

/// The eUICCs and the orders waiting for them.
struct Pool {
    cards: Vec<Option<SoftEuicc>>,
    curves: Vec<Curve>,
    /// Orders linked to each eUICC's EID.
    linked: Vec<VecDeque<Order>>,
    /// Orders any eUICC may take (matchingId, no EID).
    open: VecDeque<Order>,
    idle: VecDeque<usize>,
}

impl Pool {
    /// Orders not yet taken.
    fn left(&self) -> usize {
        self.open.len() + self.linked.iter().map(VecDeque::len).sum::<usize>()
    }

    /// An idle eUICC with an order for it, if any.
    fn take(&mut self) -> Option<(usize, SoftEuicc, Order)> {
        let pos = self
            .idle
            .iter()
            .position(|&i| !self.linked[i].is_empty())
            .or_else(|| (!self.open.is_empty() && !self.idle.is_empty()).then_some(0))?;
        let i = self.idle.remove(pos)?;
        let order = match self.linked[i].pop_front() {
            Some(o) => o,
            None => self.open.pop_front()?,
        };
        let card = self.cards[i].take()?;
        Some((i, card, order))
    }

    fn give_back(&mut self, i: usize, mut card: SoftEuicc) {
        // The installed packages are not needed again: memory stays flat.
        card.installed.clear();
        self.cards[i] = Some(card);
        self.idle.push_back(i);
    }
}

/// What the sessions share.
struct Shared {
    pool: Mutex<Pool>,
    freed: tokio::sync::Notify,
    idle_conns: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    smdp: String,
    confirmation_code: Option<String>,
    mode: ConnMode,
    connections: AtomicUsize,
    tls_group: Mutex<Option<String>>,
}

impl Shared {
    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for an idle eUICC with an order; `None` when no order is left.
    async fn take(&self) -> Option<(usize, SoftEuicc, Order)> {
        loop {
            let freed = self.freed.notified();
            {
                let mut p = self.lock_pool();
                if let Some(t) = p.take() {
                    return Some(t);
                }
                if p.left() == 0 {
                    return None;
                }
            }
            freed.await;
        }
    }

    fn give_back(&self, i: usize, card: SoftEuicc) {
        self.lock_pool().give_back(i, card);
        self.freed.notify_waiters();
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.smdp.as_str())
            .await
            .map_err(|e| format!("{}: {e}", self.smdp))?;
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
}

/// One session's outcome.
struct Outcome {
    /// The eUICC's curve: of the 4 verifies.
    curve: Curve,
    /// The curve of the DPauth certificate the server chose (§5.6.1): of
    /// the 3 signs and the ECKA.
    dp_curve: Option<Curve>,
    /// Latency of each step that completed, microseconds.
    steps: [Option<u64>; 4],
    /// From the (scheduled) start to the end, microseconds.
    total_us: u64,
    /// `step code` of the failure, if any.
    error: Option<String>,
}

const STEPS: [Function; 4] = [
    Function::InitiateAuthentication,
    Function::AuthenticateClient,
    Function::GetBoundProfilePackage,
    Function::HandleNotification,
];

/// A failure key: the function and the GSMA status code, HTTP status or
/// kind of failure.
fn error_key(f: Function, e: &LpaError) -> String {
    match e {
        LpaError::Failed { .. } => format!("{} {}", f.name(), e.code().unwrap_or_default()),
        LpaError::Transport(t) => match t.split_once("HTTP ") {
            Some((_, status)) => format!("{} HTTP {status}", f.name()),
            None => format!("{} transport", f.name()),
        },
        LpaError::Euicc(_) => format!("{} eUICC refused", f.name()),
    }
}

/// One ES9+ call over a kept connection: (HTTP status, body).
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    f: Function,
    body: Vec<u8>,
) -> Result<(u16, Bytes), LpaError> {
    sender
        .ready()
        .await
        .map_err(|e| LpaError::Transport(e.to_string()))?;
    let mut req = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(f.path())
        .header("host", host);
    for (k, v) in HEADERS {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| LpaError::Transport(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| LpaError::Transport(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| LpaError::Transport(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

async fn call<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    f: Function,
    req: &T,
) -> Result<R, LpaError> {
    let body = serde_json::to_vec(req).map_err(|e| LpaError::Transport(e.to_string()))?;
    let (status, body) = post(sender, host, f, body).await?;
    parse_answer(f, status, &body)
}

/// Runs the four ES9+ steps of one download; fills `steps` as they
/// complete. Returns the failed step and why.
async fn session_steps(
    sh: &Shared,
    sender: &mut SendRequest<Full<Bytes>>,
    card: &mut SoftEuicc,
    order: &Order,
    steps: &mut [Option<u64>; 4],
    dp_curve: &mut Option<Curve>,
) -> Result<(), (Function, LpaError)> {
    let host = sh.smdp.as_str();
    let f = Function::InitiateAuthentication;
    let challenge = card.get_euicc_challenge();
    let info1 = card.get_euicc_info1().map_err(|e| (f, e.into()))?;
    let t = Instant::now();
    let init: InitiateAuthenticationResponse = call(
        sender,
        host,
        f,
        &InitiateAuthenticationRequest {
            euicc_challenge: challenge.to_vec(),
            euicc_info1: info1,
            smdp_address: sh.smdp.clone(),
        },
    )
    .await
    .map_err(|e| (f, e))?;
    steps[0] = Some(t.elapsed().as_micros() as u64);
    *dp_curve = crate::crypto::ecdsa::PublicKey::from_certificate_der(&init.server_certificate)
        .ok()
        .map(|k| k.curve());

    let f = Function::AuthenticateClient;
    let asr = card
        .authenticate_server(
            &init.server_signed1,
            &init.server_signature1,
            &init.euicc_ci_pk_id_to_be_used,
            &init.server_certificate,
            &sh.smdp,
            order.matching_id.as_deref(),
        )
        .map_err(|e| (f, e.into()))?;
    let t = Instant::now();
    let auth: AuthenticateClientResponse = call(
        sender,
        host,
        f,
        &AuthenticateClientRequest {
            transaction_id: init.transaction_id,
            authenticate_server_response: asr,
        },
    )
    .await
    .map_err(|e| (f, e))?;
    steps[1] = Some(t.elapsed().as_micros() as u64);

    let f = Function::GetBoundProfilePackage;
    let pdr = card
        .prepare_download(
            &auth.smdp_signed2,
            &auth.smdp_signature2,
            &auth.smdp_certificate,
            &auth.profile_metadata,
            sh.confirmation_code.as_deref(),
            false,
        )
        .map_err(|e| (f, e.into()))?;
    let t = Instant::now();
    let bpp: GetBoundProfilePackageResponse = call(
        sender,
        host,
        f,
        &GetBoundProfilePackageRequest {
            transaction_id: auth.transaction_id,
            prepare_download_response: pdr,
        },
    )
    .await
    .map_err(|e| (f, e))?;
    steps[2] = Some(t.elapsed().as_micros() as u64);

    let f = Function::HandleNotification;
    let (pir, installed) = card
        .load_bound_profile_package(&bpp.bound_profile_package)
        .map_err(|e| (f, e.into()))?;
    let body = serde_json::to_vec(&HandleNotificationRequest {
        pending_notification: pir,
    })
    .map_err(|e| (f, LpaError::Transport(e.to_string())))?;
    let t = Instant::now();
    let (status, _) = post(sender, host, f, body).await.map_err(|e| (f, e))?;
    if status != 204 && status != 200 {
        return Err((f, LpaError::Transport(format!("HTTP {status}"))));
    }
    steps[3] = Some(t.elapsed().as_micros() as u64);
    if installed.is_none() {
        return Err((
            f,
            LpaError::Euicc(crate::euicc::EuiccError::Verification(
                "the eUICC refused the BPP".into(),
            )),
        ));
    }
    Ok(())
}

/// Runs one session from `start` (the scheduled start in open loop).
async fn session(sh: &Shared, start: Instant) -> Option<Outcome> {
    let (i, mut card, order) = sh.take().await?;
    let curve = sh.lock_pool().curves[i];
    let mut steps = [None; 4];
    let mut dp_curve = None;
    let kept = match sh.mode {
        ConnMode::Keepalive => {
            let mut idle = sh.idle_conns.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(s) = idle.pop() {
                if !s.is_closed() {
                    found = Some(s);
                    break;
                }
            }
            found
        }
        ConnMode::PerSession => None,
    };
    let sender = match kept {
        Some(s) => Ok(s),
        None => sh.connect().await,
    };
    let (error, sender) = match sender {
        Err(e) => {
            tracing::debug!("connect: {e}");
            (Some("connect transport".to_owned()), None)
        }
        Ok(mut s) => {
            match session_steps(sh, &mut s, &mut card, &order, &mut steps, &mut dp_curve).await {
                Ok(()) => (None, Some(s)),
                Err((f, e)) => {
                    tracing::debug!("ICCID {}: {}: {e}", order.iccid, f.name());
                    let transport = matches!(e, LpaError::Transport(_));
                    (Some(error_key(f, &e)), (!transport).then_some(s))
                }
            }
        }
    };
    let total_us = start.elapsed().as_micros() as u64;
    sh.give_back(i, card);
    if let (ConnMode::Keepalive, Some(s)) = (sh.mode, sender) {
        sh.idle_conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }
    Some(Outcome {
        curve,
        dp_curve,
        steps,
        total_us,
        error,
    })
}

/// The server's cryptographic work for one session, timed in-process:
/// the parts, in microseconds per session.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Floor {
    /// 3 ECDSA signs: serverSignature1 (DPauth), smdpSignature2 and the
    /// BPP's smdpSign (DPpb) (§5.6.1-3), on the DPauth/DPpb curve.
    ecdsa_sign: f64,
    /// 4 ECDSA verifies: CERT.EUICC (the EUM certificate is cached),
    /// euiccSignature1, euiccSignature2 and euiccSignPIR (§5.6.3-4), on
    /// the eUICC's (and its EUM's) curve.
    pub(super) ecdsa_verify: f64,
    /// otSK/otPK.DP.ECKA generation and ShS (§3.1.3.3, Annex G), on the
    /// DPpb curve.
    ecka: f64,
    /// The TLS 1.3 server's CertificateVerify signature (P-256 ECDSA).
    tls_sign: f64,
    /// The TLS server's key exchange share and shared secret.
    tls_kx: f64,
}

impl Floor {
    fn total(&self) -> f64 {
        self.ecdsa_sign + self.ecdsa_verify + self.ecka + self.tls_sign + self.tls_kx
    }

    fn scaled(&self, w: f64) -> Floor {
        Floor {
            ecdsa_sign: self.ecdsa_sign * w,
            ecdsa_verify: self.ecdsa_verify * w,
            ecka: self.ecka * w,
            tls_sign: self.tls_sign * w,
            tls_kx: self.tls_kx * w,
        }
    }

    fn add(&self, o: &Floor) -> Floor {
        Floor {
            ecdsa_sign: self.ecdsa_sign + o.ecdsa_sign,
            ecdsa_verify: self.ecdsa_verify + o.ecdsa_verify,
            ecka: self.ecka + o.ecka,
            tls_sign: self.tls_sign + o.tls_sign,
            tls_kx: self.tls_kx + o.tls_kx,
        }
    }

    fn json(&self) -> Value {
        json!({
            "per_session_us": self.total(),
            "ecdsa_sign_3_us": self.ecdsa_sign,
            "ecdsa_verify_4_us": self.ecdsa_verify,
            "ecka_keygen_ecdh_us": self.ecka,
            "tls_sign_us": self.tls_sign,
            "tls_kx_us": self.tls_kx,
        })
    }
}

/// Times the ECDSA and ECKA part of the floor with every operation on
/// `curve`.
pub(super) fn floor_sgp22(curve: Curve) -> Result<Floor, String> {
    let key: SigningKey = crate::euicc::issue::generate_key(curve).map_err(|e| e.to_string())?;
    // Sizes of the signed data: serverSigned1, smdpSigned2 and BF23 are
    // a hundred bytes or two.
    let msg = [0x5Au8; 160];
    let sig = key.sign(&msg).map_err(|e| e.to_string())?;
    let public = key.public_key().clone();
    let n = match curve {
        Curve::NistP256 => 200,
        Curve::BrainpoolP256r1 => 20,
    };
    let sign = best_of(n, || key.sign(&msg).map(|_| ())).map_err(|e| e.to_string())?;
    let verify = best_of(n, || public.verify(&msg, &sig)).map_err(|e| e.to_string())?;
    let peer = OneTimeKeyPair::generate(curve, &mut rand::rngs::OsRng)
        .map_err(|e| e.to_string())?
        .public_key()
        .to_vec();
    let ecka = best_of(n, || {
        OneTimeKeyPair::generate(curve, &mut rand::rngs::OsRng)?
            .agree(&peer)
            .map(|_| ())
    })
    .map_err(|e| e.to_string())?;
    Ok(Floor {
        ecdsa_sign: 3.0 * sign,
        ecdsa_verify: 4.0 * verify,
        ecka,
        tls_sign: 0.0,
        tls_kx: 0.0,
    })
}

async fn es2_call(r: &super::Remote, f: Es2Function, body: Value) -> Result<Value, String> {
    let msg = es2plus::request_message(&r.requester, &super::call_id(None), &body);
    let resp = r
        .client
        .post_gsma(&format!("{}{}", r.base, f.path()), msg)
        .await?;
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| format!("HTTP {}: not JSON: {e}", resp.status))?;
    es2_result(&v, resp.status)?;
    Ok(v)
}

/// DownloadOrder then ConfirmOrder with releaseFlag (SGP.22 §5.3.1-2).
async fn place(
    r: &super::Remote,
    eid: Option<&Eid>,
    profile_type: &str,
    cc: Option<&str>,
) -> Result<Order, String> {
    let order = es2_call(
        r,
        Es2Function::DownloadOrder,
        serde_json::to_value(es2plus::DownloadOrder {
            eid: eid.map(|e| e.to_string()),
            iccid: None,
            profile_type: Some(profile_type.to_owned()),
        })
        .map_err(|e| e.to_string())?,
    )
    .await?;
    let iccid = order["iccid"]
        .as_str()
        .ok_or("DownloadOrder answered no iccid")?
        .to_owned();
    let matching_id = match eid {
        Some(_) => None,
        None => Some(crate::ids::generate_matching_id(&mut rand::thread_rng())),
    };
    es2_call(
        r,
        Es2Function::ConfirmOrder,
        serde_json::to_value(es2plus::ConfirmOrder {
            iccid: iccid.clone(),
            eid: eid.map(|e| e.to_string()),
            matching_id: matching_id.clone(),
            confirmation_code: cc.map(str::to_owned),
            smds_address: None,
            release_flag: true,
        })
        .map_err(|e| e.to_string())?,
    )
    .await?;
    Ok(Order { iccid, matching_id })
}

/// Runs `load download`.
pub async fn run(a: DownloadArgs) -> Result<ExitCode, String> {
    let duration = match (a.sessions, a.duration_secs) {
        (Some(_), _) => None,
        (None, d) => Some(Duration::from_secs(d.unwrap_or(10).max(1))),
    };
    let concurrency = a.concurrency.max(1);
    let order_count = a.order_count.unwrap_or_else(|| match (a.sessions, a.rate) {
        (Some(n), _) => n,
        (None, Some(rate)) => (rate * duration.map_or(10.0, |d| d.as_secs_f64())).ceil() as usize,
        (None, None) => 50 * concurrency * duration.map_or(10, |d| d.as_secs() as usize),
    });
    let euiccs = a.euiccs.unwrap_or(order_count.clamp(1, 8192));
    if euiccs == 0 {
        return Err("--euiccs must be at least 1".into());
    }

    // eUICCs.
    let t = Instant::now();
    let eums = [
        Eum::sgp26(Curve::NistP256).map_err(|e| e.to_string())?,
        Eum::sgp26(Curve::BrainpoolP256r1).map_err(|e| e.to_string())?,
    ];
    let eum_for = |i: usize| match a.curve {
        CurveChoice::Nist => &eums[0],
        CurveChoice::Brainpool => &eums[1],
        CurveChoice::Mix => &eums[i % 2],
    };
    // EIDs distinct within the run and, with a random run prefix, from
    // earlier runs against the same store.
    let run_id = u128::from(rand::random::<u32>() % 1_000_000_000);
    let mut cards = Vec::new();
    let mut curves = Vec::new();
    for i in 0..euiccs {
        let eum = eum_for(i);
        let card = eum
            .issue(run_id * 10_000_000_000_000 + i as u128)
            .map_err(|e| e.to_string())?;
        curves.push(eum.curve());
        cards.push(card);
    }
    let eids: Vec<Eid> = cards.iter().map(|c| c.eid().clone()).collect();
    let mut linked: Vec<VecDeque<Order>> = vec![VecDeque::new(); cards.len()];
    let mut open = VecDeque::new();
    eprintln!(
        "issued {} eUICC certificates in {:.2} s",
        cards.len(),
        t.elapsed().as_secs_f64()
    );

    // Orders, before the measured phase.
    let remote = Arc::new(super::remote(&a.conn)?);
    let t = Instant::now();
    if a.orders == OrderKind::Existing {
        let v = super::admin(
            &remote,
            hyper::Method::GET,
            &format!("profiles?state=Released&limit={order_count}"),
            None,
        )
        .await?;
        let mut skipped = 0;
        for p in v["profiles"].as_array().into_iter().flatten() {
            let iccid = p["iccid"].as_str().unwrap_or_default().to_owned();
            let matching_id = p["matchingId"].as_str().map(str::to_owned);
            match p["eid"].as_str().and_then(Eid::parse) {
                Some(eid) => {
                    let i = match eids.iter().position(|e| *e == eid) {
                        Some(i) => i,
                        None => {
                            let eum = eum_for(cards.len());
                            if !eid.as_str().starts_with(eum.iin()) {
                                skipped += 1;
                                continue;
                            }
                            cards.push(eum.issue_for(&eid).map_err(|e| e.to_string())?);
                            curves.push(eum.curve());
                            linked.push(VecDeque::new());
                            cards.len() - 1
                        }
                    };
                    linked[i].push_back(Order { iccid, matching_id });
                }
                None if matching_id.is_some() => open.push_back(Order { iccid, matching_id }),
                None => skipped += 1,
            }
        }
        eprintln!(
            "using {} Released orders from the store ({skipped} skipped: EID outside the test EUM's range, or neither EID nor matchingId)",
            open.len() + linked.iter().map(VecDeque::len).sum::<usize>()
        );
    } else {
        let next = Arc::new(AtomicUsize::new(0));
        let placed = Arc::new(Mutex::new(Vec::<(usize, Order)>::new()));
        let failure = Arc::new(Mutex::new(None::<String>));
        let eids = Arc::new(eids.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (next, placed, failure, eids, remote) = (
                next.clone(),
                placed.clone(),
                failure.clone(),
                eids.clone(),
                remote.clone(),
            );
            let (kind, pt, cc) = (
                a.orders,
                a.profile_type.clone(),
                a.confirmation_code.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= order_count
                        || failure.lock().unwrap_or_else(|e| e.into_inner()).is_some()
                    {
                        break;
                    }
                    let by_eid = match kind {
                        OrderKind::Eid => true,
                        OrderKind::Mix => k % 2 == 0,
                        _ => false,
                    };
                    // In a mix every other order is linked: spread those
                    // over all the eUICCs (both curves with --curve mix).
                    let card = match kind {
                        OrderKind::Mix => (k / 2) % eids.len(),
                        _ => k % eids.len(),
                    };
                    let eid = by_eid.then(|| &eids[card]);
                    match place(&remote, eid, &pt, cc.as_deref()).await {
                        Ok(o) => {
                            let mut p = placed.lock().unwrap_or_else(|e| e.into_inner());
                            p.push((if by_eid { card } else { usize::MAX }, o));
                            progress(p.len(), order_count, "placing orders");
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            break;
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let placed = std::mem::take(&mut *placed.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if placed.is_empty() {
                return Err(format!("placing orders: {e}"));
            }
            eprintln!("\n  stopped placing orders after {}: {e}", placed.len());
        }
        for (card, o) in placed {
            if card == usize::MAX {
                open.push_back(o);
            } else {
                linked[card].push_back(o);
            }
        }
    }
    let orders = open.len() + linked.iter().map(VecDeque::len).sum::<usize>();
    eprintln!(
        "{orders} orders ready ({:?}) in {:.1} s",
        a.orders,
        t.elapsed().as_secs_f64()
    );
    if orders == 0 {
        return Err("no order to download".into());
    }

    // The measured phase.
    let roots = match &a.es9_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::pki::load_certs(path).map_err(|e| e.to_string())? {
                roots.add(c).map_err(|e| e.to_string())?;
            }
            roots
        }
        None => crate::euicc::lpa::Lpa::sgp26_roots(),
    };
    let tls =
        crate::http::tls::client_with_roots(roots, None, a.insecure).map_err(|e| e.to_string())?;
    let host = a
        .smdp
        .rsplit_once(':')
        .map_or(a.smdp.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let n_cards = cards.len();
    let shared = Arc::new(Shared {
        pool: Mutex::new(Pool {
            cards: cards.into_iter().map(Some).collect(),
            curves,
            linked,
            open,
            idle: (0..n_cards).collect(),
        }),
        freed: tokio::sync::Notify::new(),
        idle_conns: Mutex::new(vec![]),
        connector: TlsConnector::from(tls),
        server_name: ServerName::try_from(host).map_err(|e| e.to_string())?,
        smdp: a.smdp.clone(),
        confirmation_code: a.confirmation_code.clone(),
        mode: a.connections,
        connections: AtomicUsize::new(0),
        tls_group: Mutex::new(None),
    });
    let budget = a.sessions.unwrap_or(usize::MAX).min(orders);
    match (a.rate, duration) {
        (Some(r), Some(d)) => eprintln!("open loop: {r} sessions/s for {} s", d.as_secs()),
        (Some(r), None) => eprintln!("open loop: {r} sessions/s, {budget} sessions"),
        (None, Some(d)) => eprintln!("closed loop: {concurrency} in flight for {} s", d.as_secs()),
        (None, None) => eprintln!("closed loop: {concurrency} in flight, {budget} sessions"),
    }
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
                if shared.lock_pool().left() == 0 {
                    break;
                }
                let (sh, tx) = (shared.clone(), tx.clone());
                tasks.spawn(async move {
                    if let Some(o) = session(&sh, scheduled).await {
                        let _ = tx.send(o);
                    }
                });
            }
        }
        None => {
            for _ in 0..concurrency {
                let (sh, tx, started) = (shared.clone(), tx.clone(), started.clone());
                tasks.spawn(async move {
                    loop {
                        if end.is_some_and(|e| Instant::now() >= e)
                            || started.fetch_add(1, Ordering::Relaxed) >= budget
                        {
                            break;
                        }
                        match session(&sh, Instant::now()).await {
                            Some(o) => {
                                let _ = tx.send(o);
                            }
                            None => break,
                        }
                    }
                });
            }
        }
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let after = cpu_marks(a.server_pid, a.server_metrics.as_deref()).await?;
    let mut outcomes = vec![];
    while let Some(o) = rx.recv().await {
        outcomes.push(o);
    }

    // The report.
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    let downloads = ok.len();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        if let Some(e) = &o.error {
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
    }
    let mut steps = serde_json::Map::new();
    for (k, f) in STEPS.iter().enumerate() {
        steps.insert(
            f.name().to_owned(),
            percentiles(outcomes.iter().filter_map(|o| o.steps[k]).collect()),
        );
    }
    let session_lat = percentiles(ok.iter().map(|o| o.total_us).collect());
    let sessions_run = outcomes.len();
    let per = |secs: Option<f64>| -> Option<f64> {
        secs.filter(|_| sessions_run > 0)
            .map(|s| s * 1e6 / sessions_run as f64)
    };
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a).max(0.0));
    let server_proc = diff(before.proc, after.proc);
    let server_metrics = diff(before.metrics, after.metrics);
    let client = diff(before.client, after.client);
    let server_per_session = per(server_proc.or(server_metrics));

    // The floor, measured now that the load is over.
    let group = shared
        .tls_group
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (tls_sign, tls_kx, group_name) = floor_tls(group.as_deref())?;
    // Signs and ECKA on the DPauth/DPpb curve the server chose, verifies
    // on the eUICC's: weighted by the sessions of each pair.
    let mut pairs: BTreeMap<(&'static str, &'static str), (Curve, Curve, usize)> = BTreeMap::new();
    for o in &outcomes {
        let dp = o.dp_curve.unwrap_or(o.curve);
        pairs
            .entry((dp.name(), o.curve.name()))
            .or_insert((dp, o.curve, 0))
            .2 += 1;
    }
    if pairs.is_empty() {
        let c = Curve::NistP256;
        pairs.insert((c.name(), c.name()), (c, c, 1));
    }
    let mut per_curve: BTreeMap<&'static str, Floor> = BTreeMap::new();
    for (dp, eu, _) in pairs.values() {
        for c in [dp, eu] {
            if !per_curve.contains_key(c.name()) {
                per_curve.insert(c.name(), floor_sgp22(*c)?);
            }
        }
    }
    let weight_total: usize = pairs.values().map(|(_, _, n)| n).sum();
    let mut floor = Floor {
        tls_sign,
        tls_kx,
        ..Floor::default()
    };
    let mut sessions_by_curves = serde_json::Map::new();
    for ((dp_name, eu_name), (_, _, n)) in &pairs {
        let (Some(dp), Some(eu)) = (per_curve.get(dp_name), per_curve.get(eu_name)) else {
            continue;
        };
        let f = Floor {
            ecdsa_sign: dp.ecdsa_sign,
            ecdsa_verify: eu.ecdsa_verify,
            ecka: dp.ecka,
            tls_sign: 0.0,
            tls_kx: 0.0,
        };
        floor = floor.add(&f.scaled(*n as f64 / weight_total as f64));
        sessions_by_curves.insert(format!("DPauth/DPpb {dp_name}, eUICC {eu_name}"), json!(n));
    }
    let curves_json: serde_json::Map<String, Value> = per_curve
        .iter()
        .map(|(name, f)| ((*name).to_owned(), f.json()))
        .collect();
    let ratio = server_per_session.map(|c| c / floor.total());
    // With kept-alive connections the server made fewer handshakes than
    // sessions: the floor of what was actually run counts those made.
    let connections = shared.connections.load(Ordering::Relaxed);
    let handshakes_per_session = if sessions_run > 0 {
        (connections as f64 / sessions_run as f64).min(1.0)
    } else {
        1.0
    };
    let floor_as_run =
        floor.total() - (1.0 - handshakes_per_session) * (floor.tls_sign + floor.tls_kx);

    let report = json!({
        "downloads": downloads,
        "sessions": sessions_run,
        "failed": sessions_run - downloads,
        "orders_placed": orders,
        "elapsed_secs": elapsed.as_secs_f64(),
        "downloads_per_sec": downloads as f64 / elapsed.as_secs_f64().max(1e-9),
        "load": {
            "loop": if a.rate.is_some() { "open" } else { "closed" },
            "rate": a.rate,
            "concurrency": if a.rate.is_some() { None } else { Some(concurrency) },
            "euiccs": n_cards,
            "curve": format!("{:?}", a.curve).to_lowercase(),
            "orders": format!("{:?}", a.orders).to_lowercase(),
            "connections": format!("{:?}", a.connections).to_lowercase(),
        },
        "connections_opened": connections,
        "tls_group": group_name,
        "steps": Value::Object(steps),
        "session": session_lat,
        "errors": errors,
        "server_cpu": {
            "proc_secs": server_proc,
            "metrics_secs": server_metrics,
            "per_session_us": server_per_session,
        },
        "client_cpu": {
            "secs": client,
            "per_session_us": per(client),
        },
        "floor": {
            "per_session_us": floor.total(),
            "parts": floor.json(),
            "by_curve": Value::Object(curves_json),
            "sessions_by_curves": Value::Object(sessions_by_curves),
            "as_run_per_session_us": floor_as_run,
        },
        "ratio": ratio,
        "ratio_as_run": server_per_session.map(|c| c / floor_as_run),
    });
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print_text(&report);
    }
    Ok(if errors.is_empty() && downloads > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "{} downloads in {:.1} s: {:.1} downloads/s ({} sessions, {} failed; {} connections, TLS group {})",
        r["downloads"],
        f(&r["elapsed_secs"]),
        f(&r["downloads_per_sec"]),
        r["sessions"],
        r["failed"],
        r["connections_opened"],
        r["tls_group"].as_str().unwrap_or("-"),
    );
    println!(
        "{:<24} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "latency ms", "count", "p50", "p90", "p99", "max"
    );
    let row = |name: &str, p: &Value| {
        println!(
            "{:<24} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
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
    row("session", &r["session"]);
    match r["errors"].as_object() {
        Some(e) if !e.is_empty() => {
            println!("errors:");
            for (k, n) in e {
                println!("  {k}: {n}");
            }
        }
        _ => println!("errors: none"),
    }
    let sc = &r["server_cpu"];
    let opt = |v: &Value, unit: &str| match v.as_f64() {
        Some(x) => format!("{x:.3} {unit}"),
        None => "-".into(),
    };
    println!(
        "server CPU: {} (/proc), {} (metrics); {} per session",
        opt(&sc["proc_secs"], "s"),
        opt(&sc["metrics_secs"], "s"),
        opt(&sc["per_session_us"], "us"),
    );
    println!(
        "client CPU: {}; {} per session",
        opt(&r["client_cpu"]["secs"], "s"),
        opt(&r["client_cpu"]["per_session_us"], "us"),
    );
    let p = &r["floor"]["parts"];
    println!(
        "crypto floor: {:.1} us per session = 3 ECDSA signs {:.1} + 4 ECDSA verifies {:.1} + ECKA keygen+ECDH {:.1} + TLS sign {:.1} + TLS key exchange {:.1}",
        f(&r["floor"]["per_session_us"]),
        f(&p["ecdsa_sign_3_us"]),
        f(&p["ecdsa_verify_4_us"]),
        f(&p["ecka_keygen_ecdh_us"]),
        f(&p["tls_sign_us"]),
        f(&p["tls_kx_us"]),
    );
    if let Some(by) = r["floor"]["sessions_by_curves"].as_object() {
        for (pair, n) in by {
            println!("  sessions with {pair}: {n}");
        }
    }
    if let Some(by) = r["floor"]["by_curve"].as_object() {
        for (curve, parts) in by {
            println!(
                "  {curve}: 3 signs {:.1} us, 4 verifies {:.1} us, ECKA {:.1} us",
                f(&parts["ecdsa_sign_3_us"]),
                f(&parts["ecdsa_verify_4_us"]),
                f(&parts["ecka_keygen_ecdh_us"]),
            );
        }
    }
    println!(
        "ratio server CPU / floor: {}",
        match r["ratio"].as_f64() {
            Some(x) => format!("{x:.1}"),
            None => "- (give --server-pid or --server-metrics)".into(),
        }
    );
    if let (Some(x), Some(fl)) = (
        r["ratio_as_run"].as_f64(),
        r["floor"]["as_run_per_session_us"].as_f64(),
    ) {
        println!(
            "  counting only the {} TLS handshakes made: floor {fl:.1} us, ratio {x:.1}",
            r["connections_opened"]
        );
    }
}
