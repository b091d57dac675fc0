//! ES9+ limits against the real binary over real TLS: the rate of
//! InitiateAuthentication per client address, the cap on live RSP sessions
//! (oldest unauthenticated session evicted first, never an authenticated
//! one), and the short life of sessions that never authenticate.
//!
//! SGP.22 v2.2: §5.6.1 (InitiateAuthentication creates the RSP session),
//! §5.2.6 (1.2 Function Provider, 4.2 Execution Error, 4.8 Insufficient
//! Memory), §6.3 (HTTP 200 for every synchronous result), and
//! 8.10.1/3.9 for a transactionId that is no longer known (§5.6.3).
//!
//! Every download is real: the software eUICC (SGP.26 test eUICC) against
//! a real order placed over ES2+, ending Installed.

use crate::common::{code, status, Server, EID};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use smdpplus::es9plus::dto::*;
use smdpplus::es9plus::Function;
use smdpplus::euicc::lpa::Lpa;
use smdpplus::euicc::SoftEuicc;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

fn nist() -> SoftEuicc {
    SoftEuicc::sgp26_nist().expect("NIST eUICC")
}

/// A server in a fresh directory with `config` (the seeded demo profiles
/// are the inventory), whose log must show no internal error.
struct Env {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start(config: &str) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(
            &dir.path().join("data"),
            Some(&format!("seed_demo_profiles = 10\n{config}")),
        )
        .refusing_errors();
        Env { server, _dir: dir }
    }

    /// A released order of a demo profile, linked to the test eUICC's EID
    /// or (without `eid`) to be matched by its matchingId alone:
    /// (ICCID, matchingId).
    async fn order(&self, eid: bool) -> (String, String) {
        let op = self.server.operator();
        let mut req = json!({ "profileType": "demo" });
        if eid {
            req["eid"] = json!(EID);
        }
        let (_, v) = op.call("downloadOrder", req).await;
        assert_eq!(status(&v), "Executed-Success", "downloadOrder: {v}");
        let iccid = v["iccid"].as_str().expect("iccid").to_owned();
        let (_, v) = op
            .call(
                "confirmOrder",
                json!({ "iccid": iccid, "releaseFlag": true }),
            )
            .await;
        assert_eq!(status(&v), "Executed-Success", "confirmOrder: {v}");
        let matching_id = v["matchingId"].as_str().expect("matchingId").to_owned();
        (iccid, matching_id)
    }

    async fn state(&self, iccid: &str) -> String {
        self.server.operator().state(iccid).await
    }

    /// One sample of /metrics, by its full name with labels.
    async fn metric(&self, name: &str) -> Option<f64> {
        let (s, body) = self.server.ops_get("/metrics").await;
        assert_eq!(s, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The ES9+ client from `local` (a loopback address of the test's choice).
    fn lpa_from(&self, local: IpAddr) -> Es9Client {
        Es9Client::new(self.server.es9, local)
    }
}

/// An LPA transport bound to a chosen source address, so that the server
/// sees another client: real TLS (trusting the SGP.26 test CI), one
/// connection per call, the headers real LPAs send.
struct Es9Client {
    server: SocketAddr,
    local: IpAddr,
    tls: tokio_rustls::TlsConnector,
}

/// A call's result: the answer, or the GSMA failure (`subject/reason`,
/// message).
type Answer<R> = Result<R, (String, String)>;

impl Es9Client {
    fn new(server: SocketAddr, local: IpAddr) -> Es9Client {
        let cfg = smdpplus::http::tls::client_with_roots(Lpa::sgp26_roots(), None, false)
            .expect("TLS client config");
        Es9Client {
            server,
            local,
            tls: tokio_rustls::TlsConnector::from(cfg),
        }
    }

    /// The HTTP status and JSON of one call.
    async fn post(&self, f: Function, body: Vec<u8>) -> (u16, Value) {
        use http_body_util::BodyExt;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(self.local, 0))
            .expect("bind the client address");
        let tcp = socket.connect(self.server).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = self.tls.connect(name, tcp).await.expect("TLS");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("HTTP handshake");
        tokio::spawn(conn);
        let req = hyper::Request::post(f.path())
            .header("host", format!("localhost:{}", self.server.port()))
            .header("content-type", "application/json")
            .header("x-admin-protocol", "gsma/rsp/v2.2.0")
            .header("user-agent", "gsma-rsp-lpad")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .expect("answered in time")
            .expect("response");
        let st = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// A synchronous ES9+ call: HTTP 200 always; the answer or the failure.
    async fn call<T: Serialize, R: DeserializeOwned>(&self, f: Function, req: &T) -> Answer<R> {
        let (st, v) = self.post(f, serde_json::to_vec(req).expect("JSON")).await;
        assert_eq!(st, 200, "{}: HTTP {st} {v}", f.name());
        if status(&v) == "Executed-Success" {
            return Ok(serde_json::from_value(v).expect("answer"));
        }
        assert_eq!(status(&v), "Failed", "{v}");
        let msg = v["header"]["functionExecutionStatus"]["statusCodeData"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Err((code(&v), msg))
    }

    async fn initiate(&self, euicc: &mut SoftEuicc) -> Answer<InitiateAuthenticationResponse> {
        let challenge = euicc.get_euicc_challenge();
        self.call(
            Function::InitiateAuthentication,
            &InitiateAuthenticationRequest {
                euicc_challenge: challenge.to_vec(),
                euicc_info1: euicc.get_euicc_info1().expect("euiccInfo1"),
                smdp_address: "localhost".into(),
            },
        )
        .await
    }

    /// ES10b.AuthenticateServer on the eUICC, then ES9+.AuthenticateClient.
    async fn authenticate_client(
        &self,
        euicc: &mut SoftEuicc,
        init: &InitiateAuthenticationResponse,
        matching_id: &str,
    ) -> Answer<AuthenticateClientResponse> {
        let asr = euicc
            .authenticate_server(
                &init.server_signed1,
                &init.server_signature1,
                &init.euicc_ci_pk_id_to_be_used,
                &init.server_certificate,
                "localhost",
                Some(matching_id),
            )
            .expect("AuthenticateServer");
        self.call(
            Function::AuthenticateClient,
            &AuthenticateClientRequest {
                transaction_id: init.transaction_id.clone(),
                authenticate_server_response: asr,
            },
        )
        .await
    }

    /// After AuthenticateClient: PrepareDownload, GetBoundProfilePackage,
    /// LoadBoundProfilePackage and the installation result; the installed
    /// ICCID.
    async fn finish(&self, euicc: &mut SoftEuicc, auth: &AuthenticateClientResponse) -> String {
        let pdr = euicc
            .prepare_download(
                &auth.smdp_signed2,
                &auth.smdp_signature2,
                &auth.smdp_certificate,
                &auth.profile_metadata,
                None,
                false,
            )
            .expect("PrepareDownload");
        let bpp: GetBoundProfilePackageResponse = self
            .call(
                Function::GetBoundProfilePackage,
                &GetBoundProfilePackageRequest {
                    transaction_id: auth.transaction_id.clone(),
                    prepare_download_response: pdr,
                },
            )
            .await
            .expect("getBoundProfilePackage");
        let (pir, installed) = euicc
            .load_bound_profile_package(&bpp.bound_profile_package)
            .expect("LoadBoundProfilePackage");
        let body = serde_json::to_vec(&HandleNotificationRequest {
            pending_notification: pir,
        })
        .expect("JSON");
        let (st, _) = self.post(Function::HandleNotification, body).await;
        assert_eq!(st, 204, "handleNotification");
        installed.expect("installed").iccid.to_string()
    }

    /// A whole download of the order with `matching_id`.
    async fn download(&self, matching_id: &str) -> Answer<String> {
        let mut euicc = nist();
        let init = self.initiate(&mut euicc).await?;
        let auth = self
            .authenticate_client(&mut euicc, &init, matching_id)
            .await?;
        Ok(self.finish(&mut euicc, &auth).await)
    }
}

const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The expected refusal of a client over its rate.
fn assert_rate_limited<R: std::fmt::Debug>(a: &Answer<R>) {
    match a {
        Err((c, msg)) => {
            assert_eq!(c, "1.2/4.2", "{msg}");
            assert!(msg.contains("rate-limited"), "{msg}");
        }
        Ok(r) => panic!("expected a rate-limit refusal, got {r:?}"),
    }
}

/// Past its burst, one address gets 1.2/4.2 "rate-limited" (HTTP 200, never
/// a 5xx), counted and logged once, not per call; another address still
/// downloads at once, and so does the first once its bucket refilled.
#[tokio::test]
async fn initiate_authentication_is_rate_limited_per_client_address() {
    let e = Env::start("[es9]\ninitiate_authentication_rate = { per_minute = 60, burst = 20 }\n");
    let here = e.lpa_from(HERE);
    let (mut ok, mut refused) = (0u32, 0u32);
    let start = Instant::now();
    for _ in 0..40 {
        let a = here.initiate(&mut nist()).await;
        if a.is_ok() {
            ok += 1;
            continue;
        }
        assert!(ok >= 20, "refused before the burst was spent: {a:?}");
        assert_rate_limited(&a);
        refused += 1;
    }
    // One token a second comes back while the calls run.
    let refills = start.elapsed().as_secs() as u32 + 1;
    assert!(
        (20..=20 + refills).contains(&ok),
        "{ok} calls accepted in {:?}",
        start.elapsed()
    );
    assert!(refused >= 40 - 20 - refills, "{refused} refused");
    assert_eq!(
        e.metric("smdpplus_es9_refused_total{reason=\"rate_limited\"}")
            .await,
        Some(f64::from(refused)),
        "every refusal counted"
    );
    let log = e.server.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("ES9+ calls refused by a limit"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} refusal log lines for {refused} refusals"
    );

    // Another client address downloads a real profile meanwhile.
    let (iccid, matching_id) = e.order(true).await;
    let elsewhere = e.lpa_from(ELSEWHERE);
    assert_eq!(
        elsewhere.download(&matching_id).await.expect("download"),
        iccid
    );
    assert_eq!(e.state(&iccid).await, "Installed");

    // The first address again, once a token has come back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (iccid, matching_id) = e.order(true).await;
    assert_eq!(here.download(&matching_id).await.expect("download"), iccid);
    assert_eq!(e.state(&iccid).await, "Installed");
}

/// With `max_sessions` = 5, a flood of unauthenticated sessions evicts the
/// oldest of them, never the authenticated download started before it,
/// which completes afterwards; the live sessions stay at the cap. When
/// every live session is authenticated, a new one is refused (1.2/4.8).
#[tokio::test]
async fn session_cap_evicts_pending_sessions_never_authenticated_ones() {
    let e = Env::start(
        "[es9]\nmax_sessions = 5\ninitiate_authentication_rate = { per_minute = 0, burst = 0 }\n",
    );
    let lpa = e.lpa_from(HERE);
    let (iccid, matching_id) = e.order(false).await;
    let mut downloading = nist();
    let init = lpa.initiate(&mut downloading).await.expect("initiate");
    let auth = lpa
        .authenticate_client(&mut downloading, &init, &matching_id)
        .await
        .expect("authenticateClient");
    // A session opened before the flood and left waiting.
    let (_, late_matching_id) = e.order(false).await;
    let mut late = nist();
    let late_init = lpa.initiate(&mut late).await.expect("initiate");

    let flood: Vec<_> = (0..60)
        .map(|_| {
            let c = e.lpa_from(HERE);
            tokio::spawn(async move { c.initiate(&mut nist()).await.map(|_| ()) })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.expect("task"), Ok(()), "every flood call is served");
    }
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"authenticated\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"pending\"}").await,
        Some(4.0)
    );
    assert_eq!(
        e.metric("smdpplus_rsp_sessions_evicted_total").await,
        Some(57.0),
        "1 + 60 pending sessions into 4 places"
    );
    // The waiting session was the oldest pending one: gone.
    let r = lpa
        .authenticate_client(&mut late, &late_init, &late_matching_id)
        .await;
    assert_eq!(r.map(|_| ()).map_err(|(c, _)| c), Err("8.10.1/3.9".into()));

    // The authenticated download completes after the flood.
    assert_eq!(lpa.finish(&mut downloading, &auth).await, iccid);
    assert_eq!(e.state(&iccid).await, "Installed");

    // Five authenticated sessions fill the store: a new one is refused,
    // and no authenticated session is touched.
    let mut held = vec![];
    for _ in 0..5 {
        let (iccid, matching_id) = e.order(false).await;
        let mut euicc = nist();
        let init = lpa.initiate(&mut euicc).await.expect("initiate");
        let auth = lpa
            .authenticate_client(&mut euicc, &init, &matching_id)
            .await
            .expect("authenticateClient");
        held.push((iccid, euicc, auth));
    }
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"authenticated\"}")
            .await,
        Some(5.0)
    );
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"pending\"}").await,
        Some(0.0)
    );
    match lpa.initiate(&mut nist()).await {
        Err((c, msg)) => {
            assert_eq!(c, "1.2/4.8", "{msg}");
            assert!(msg.contains("maximum of 5 RSP sessions"), "{msg}");
        }
        Ok(_) => panic!("a sixth session was created"),
    }
    assert_eq!(
        e.metric("smdpplus_es9_refused_total{reason=\"sessions_full\"}")
            .await,
        Some(1.0)
    );
    // Each held download still completes; each frees its place.
    for (iccid, mut euicc, auth) in held {
        assert_eq!(lpa.finish(&mut euicc, &auth).await, iccid);
        assert_eq!(e.state(&iccid).await, "Installed");
    }
    let (iccid, matching_id) = e.order(false).await;
    assert_eq!(lpa.download(&matching_id).await.expect("download"), iccid);
}

/// A session that never reaches AuthenticateClient lives
/// `pending_session_ttl_secs`; an authenticated one keeps
/// `session_ttl_secs`.
#[tokio::test]
async fn unauthenticated_sessions_expire_quickly_authenticated_ones_do_not() {
    let e = Env::start("expiry_sweep_secs = 1\n[es9]\npending_session_ttl_secs = 300\n");
    let lpa = e.lpa_from(HERE);
    let (iccid, matching_id) = e.order(false).await;
    let (_, late_matching_id) = e.order(false).await;
    let mut late = nist();
    let late_init = lpa.initiate(&mut late).await.expect("initiate");
    let mut downloading = nist();
    let init = lpa.initiate(&mut downloading).await.expect("initiate");
    let auth = lpa
        .authenticate_client(&mut downloading, &init, &matching_id)
        .await
        .expect("authenticateClient");
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"pending\"}").await,
        Some(1.0)
    );
    // Past the pending sessions' 5 minutes, within the authenticated one's 15.
    e.server.advance_clock(301).await;
    let r = lpa
        .authenticate_client(&mut late, &late_init, &late_matching_id)
        .await;
    assert_eq!(r.map(|_| ()).map_err(|(c, _)| c), Err("8.10.1/3.9".into()));
    // Swept, not only refused (the advance woke the sweeper).
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.metric("smdpplus_rsp_sessions{phase=\"pending\"}").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the pending session was not swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        e.metric("smdpplus_rsp_sessions{phase=\"authenticated\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(lpa.finish(&mut downloading, &auth).await, iccid);
    assert_eq!(e.state(&iccid).await, "Installed");
}

/// Bad limits in the configuration stop the start with a clear message.
#[test]
fn unknown_es9_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[es9]\nmax_session = 5\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_session"), "{err}");
}
