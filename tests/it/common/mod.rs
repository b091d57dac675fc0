//! Test harness: starts the real `smdpplus` binary on ephemeral loopback
//! ports with a fresh data directory, talks to it over real mutual TLS, and
//! runs a real HTTPS operator endpoint that receives ES2+ notifications.
#![allow(dead_code)] // benches/outbox.rs includes this file and uses a part of it

pub mod browser;
pub mod hsm;
pub mod mobileplans;
pub mod postgres;
pub mod props;
pub mod store;

use hyper::body::Incoming;
use serde_json::{json, Value};
use smdpplus::http::client::{Client, Response};
use smdpplus::http::tls::{self, Identity};
use smdpplus::pki::dev::DevPki;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The SGP.26 test eUICC's EID.
pub const EID: &str = "89049032123451234512345678901235";
/// Another well-formed EID.
pub const EID2: &str = "89049032123451234512345678901243";

/// A running server process.
pub struct Server {
    child: Option<Child>,
    pub dir: PathBuf,
    pub es9: SocketAddr,
    pub es2: SocketAddr,
    pub ops: SocketAddr,
    /// The operator-web listener (Mobile Plans decision API).
    pub web: SocketAddr,
    /// The GetBalance listener.
    pub balance: SocketAddr,
    /// See [`Server::refusing_errors`].
    no_errors: bool,
}

impl Server {
    /// Starts `smdpplus serve` on `dir` with an optional TOML config. The
    /// SM-DP+ address is `localhost` unless the config sets one, so that
    /// activation codes do not depend on the ephemeral ES9+ port.
    pub fn start(dir: &Path, config: Option<&str>) -> Server {
        Server::start_with_env(dir, config, &[])
    }

    /// Like [`Server::start`], with more environment variables.
    pub fn start_with_env(dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Server {
        let pin = !config.is_some_and(|c| c.contains("smdp_address"));
        Self::spawn(dir, config, pin, env)
    }

    /// Starts `smdpplus serve` without an SM-DP+ address unless the config
    /// sets one: the server derives it from its ES9+ listener.
    pub fn start_with_derived_address(dir: &Path, config: Option<&str>) -> Server {
        Self::spawn(dir, config, false, &[])
    }

    /// Like [`Server::start_with_env`], but a server that exits or does
    /// not report ready within 60 s is an `Err` with its log, not a panic:
    /// the caller can tell a refusal it expects from a failure.
    pub fn try_start_with_env(
        dir: &Path,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let pin = !config.is_some_and(|c| c.contains("smdp_address"));
        Self::try_spawn(dir, config, pin, env)
    }

    fn spawn(dir: &Path, config: Option<&str>, pin_address: bool, env: &[(&str, &str)]) -> Server {
        Self::try_spawn(dir, config, pin_address, env)
            .unwrap_or_else(|log| panic!("server did not report ready; log:\n{log}"))
    }

    #[allow(
        clippy::zombie_processes,
        reason = "the child is killed and waited for in Drop"
    )]
    fn try_spawn(
        dir: &Path,
        config: Option<&str>,
        pin_address: bool,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smdpplus"));
        // `serve --test-clock`: see [`Server::advance_clock`].
        cmd.env("SMDPPLUS_TEST_CLOCK", "true");
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--es9-listen",
                "127.0.0.1:0",
                "--es2-listen",
                "127.0.0.1:0",
                "--ops-listen",
                "127.0.0.1:0",
                "--operator-web-listen",
                "127.0.0.1:0",
                "--getbalance-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .env_remove("SMDPPLUS_SMDP_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        std::fs::create_dir_all(dir).expect("data dir");
        if pin_address {
            cmd.args(["--smdp-address", "localhost"]);
        }
        if let Some(c) = config {
            let p = dir.join("test-config.toml");
            std::fs::write(&p, c).expect("write config");
            cmd.arg("--config").arg(p);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("log file");
        cmd.stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn smdpplus");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(dir.join("server.log")).unwrap_or_default());
                }
            };
            if let Some(rest) = line.strip_prefix("ready ") {
                // `ready key=address ...`: listeners by name, in any order.
                let addrs: std::collections::HashMap<&str, SocketAddr> = rest
                    .split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k, v.parse::<SocketAddr>().expect("addr")))
                    .collect();
                let get = |k: &str| *addrs.get(k).unwrap_or_else(|| panic!("no {k}= in {line}"));
                let (es9, es2, ops, web, balance) = (
                    get("es9"),
                    get("es2"),
                    get("ops"),
                    get("web"),
                    get("balance"),
                );
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Ok(Server {
                    child: Some(child),
                    dir: dir.to_owned(),
                    es9,
                    es2,
                    ops,
                    web,
                    balance,
                    no_errors: false,
                });
            }
        }
    }

    /// This server's log must have no ERROR line when it is dropped:
    /// whatever a test sent, the server must not have failed internally (an
    /// internal error would hide behind a GSMA code or a 204). Not checked
    /// when the test is already failing.
    pub fn refusing_errors(mut self) -> Server {
        self.no_errors = true;
        self
    }

    /// Stops refusing ERROR lines in the log (see
    /// [`Server::refusing_errors`]): for a test that provokes one.
    pub fn allow_errors(&mut self) {
        self.no_errors = false;
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// The dev PKI of this server's data directory.
    pub fn pki(&self) -> DevPki {
        DevPki::paths(&self.dir)
    }

    /// An ES2+ client with the dev operator certificate.
    pub fn operator(&self) -> Operator {
        let p = self.pki();
        Operator::new(
            self.es2,
            &p.operator_client_cert,
            &p.operator_client_key,
            &p.ci_cert,
        )
    }

    /// The software LPA, pointed at this server's ES9+ listener and
    /// trusting the SGP.26 test roots.
    pub fn lpa(&self) -> smdpplus::euicc::lpa::Lpa {
        use smdpplus::euicc::lpa::Lpa;
        Lpa::new(
            &format!("localhost:{}", self.es9.port()),
            Lpa::sgp26_roots(),
            false,
        )
        .expect("LPA")
    }

    /// An HTTPS client for the operator-web listener (server-authenticated;
    /// trusts the dev TLS certificate's CI).
    pub fn web_client(&self) -> Client {
        let cfg = tls::client(&[self.pki().ci_cert.as_path()], None, false).expect("client config");
        Client::new(cfg, Duration::from_secs(30))
    }

    /// A request to the operator-web listener: (status, JSON).
    pub async fn web_call(&self, method: hyper::Method, path_and_query: &str) -> (u16, Value) {
        let r = self
            .web_client()
            .request(
                method,
                &format!("https://localhost:{}{path_and_query}", self.web.port()),
                &[],
                vec![],
            )
            .await
            .expect("operator-web call");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        c.wait().expect("wait")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Moves the server's clock `secs` forward (`serve --test-clock`): the
    /// workers that wait for a due time (expiry, holds, scheduled releases,
    /// RSP sessions, the outbox) look again at once. Returns the new offset.
    pub async fn advance_clock(&self, secs: i64) -> i64 {
        let (status, body) = self
            .ops_request("POST", &format!("/test/clock?advance={secs}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body.trim()
            .strip_prefix("offset=")
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("offset in {body}"))
    }

    /// GET on the operations listener: (status, body).
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        self.ops_request("GET", path).await
    }

    /// A request without a body on the operations listener: (status, body).
    pub async fn ops_request(&self, method: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.ops)
            .await
            .expect("connect ops");
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = vec![];
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if self.no_errors && !std::thread::panicking() {
            let log = self.log();
            let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
            assert!(errors.is_empty(), "server errors:\n{}", errors.join("\n"));
        }
    }
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// An operator's ES2+ client.
#[derive(Clone)]
pub struct Operator {
    pub client: Client,
    pub base: String,
    pub requester: String,
}

impl Operator {
    pub fn new(es2: SocketAddr, cert: &Path, key: &Path, ca: &Path) -> Operator {
        let id = Identity::load(cert, key).expect("client identity");
        let requester = smdpplus::pki::common_name(&id.chain[0]).expect("CN");
        let cfg = tls::client(&[ca], Some(&id), false).expect("client config");
        Operator {
            client: Client::new(cfg, Duration::from_secs(30)),
            base: format!("https://localhost:{}", es2.port()),
            requester,
        }
    }

    /// Calls an ES2+ function with a fresh functionCallIdentifier: (HTTP status, JSON).
    pub async fn call(&self, function: &str, body: Value) -> (u16, Value) {
        let id = format!(
            "t-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::SeqCst)
        );
        self.call_as(function, &self.requester.clone(), &id, body)
            .await
    }

    /// Like [`Operator::call`], but a transport failure is an `Err` (the
    /// server may be gone).
    pub async fn try_call(&self, function: &str, mut body: Value) -> Result<Value, String> {
        let id = format!(
            "t-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::SeqCst)
        );
        body["header"] =
            json!({"functionRequesterIdentifier": self.requester, "functionCallIdentifier": id});
        let r = self
            .client
            .post_gsma(
                &format!("{}/gsma/rsp2/es2plus/{function}", self.base),
                body.to_string().into_bytes(),
            )
            .await?;
        serde_json::from_slice(&r.body).map_err(|e| e.to_string())
    }

    /// Calls with an explicit header.
    pub async fn call_as(
        &self,
        function: &str,
        requester: &str,
        call_id: &str,
        mut body: Value,
    ) -> (u16, Value) {
        body["header"] =
            json!({"functionRequesterIdentifier": requester, "functionCallIdentifier": call_id});
        let r = self
            .client
            .post_gsma(
                &format!("{}/gsma/rsp2/es2plus/{function}", self.base),
                body.to_string().into_bytes(),
            )
            .await
            .expect("ES2+ call");
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    /// A raw request.
    pub async fn raw(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        self.client
            .request(
                method,
                &format!("{}{path}", self.base),
                headers,
                body.to_vec(),
            )
            .await
    }

    /// Admin API call: (status, JSON).
    pub async fn admin(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = self
            .raw(
                method,
                &format!("/smdpplus/admin/v1/{path}"),
                &[("content-type", "application/json")],
                &bytes,
            )
            .await
            .expect("admin call");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// Adds `iccids` of `profile_type` to the inventory.
    pub async fn add_profiles(&self, profile_type: &str, iccids: &[String]) {
        let items: Vec<Value> = iccids
            .iter()
            .map(|i| json!({"iccid": i, "profileType": profile_type}))
            .collect();
        let (s, v) = self
            .admin(
                hyper::Method::POST,
                "profiles",
                Some(json!({ "profiles": items })),
            )
            .await;
        assert_eq!(s, 200, "add profiles: {v}");
    }

    /// Adds one profile of `profile_type` whose stored package is exactly
    /// `package` (sent base64 through the admin API).
    pub async fn add_profile_with_package(&self, profile_type: &str, iccid: &str, package: &[u8]) {
        use base64::Engine;
        let item = json!({
            "iccid": iccid,
            "profileType": profile_type,
            "package": base64::engine::general_purpose::STANDARD.encode(package),
        });
        let (s, v) = self
            .admin(
                hyper::Method::POST,
                "profiles",
                Some(json!({ "profiles": [item] })),
            )
            .await;
        assert_eq!(s, 200, "add profile {iccid} with package: {v}");
    }

    /// A profile's admin view and history.
    pub async fn show(&self, iccid: &str) -> Value {
        let (s, v) = self
            .admin(hyper::Method::GET, &format!("profiles/{iccid}"), None)
            .await;
        assert_eq!(s, 200, "show {iccid}: {v}");
        v
    }

    /// A profile's state.
    pub async fn state(&self, iccid: &str) -> String {
        self.show(iccid).await["profile"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// downloadOrder of `iccid` for `eid`, then confirmOrder with release:
    /// the order is ready to download.
    pub async fn order_released(&self, iccid: &str, eid: &str) {
        let (_, v) = self
            .call("downloadOrder", json!({"iccid": iccid, "eid": eid}))
            .await;
        assert_eq!(status(&v), "Executed-Success", "{v}");
        let (_, v) = self
            .call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true}))
            .await;
        assert_eq!(status(&v), "Executed-Success", "{v}");
    }

    /// Waits up to `within` for the profile to reach state `want`.
    pub async fn wait_for_state(&self, iccid: &str, want: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let s = self.state(iccid).await;
            if s == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{iccid} stayed {s}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `status` of a GSMA response header.
pub fn status(v: &Value) -> &str {
    v["header"]["functionExecutionStatus"]["status"]
        .as_str()
        .unwrap_or("")
}

/// `subject/reason` of a GSMA response, or "".
pub fn code(v: &Value) -> String {
    let d = &v["header"]["functionExecutionStatus"]["statusCodeData"];
    match (d["subjectCode"].as_str(), d["reasonCode"].as_str()) {
        (Some(s), Some(r)) => format!("{s}/{r}"),
        _ => String::new(),
    }
}

/// `n` fresh ICCIDs with valid Luhn digits, unique per `series`.
pub fn iccids(series: u32, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            smdpplus::ids::Iccid::with_check_digit(&format!("8944{series:04}{i:010}"))
                .expect("iccid")
                .to_string()
        })
        .collect()
}

/// An HTTPS operator endpoint for handleDownloadProgressInfo, requiring the
/// SM-DP+'s client certificate (chained to the SGP.26 CI). It answers 500 to
/// the first `fail_first` calls, then 204, and hands every body it accepted
/// to the test.
pub struct Receiver {
    pub addr: SocketAddr,
    pub ca_file: PathBuf,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    pub attempts: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(dir: &Path, fail_first: usize) -> Receiver {
        Self::start_on(dir, "127.0.0.1:0".parse().expect("addr"), fail_first).await
    }

    /// Creates the receiver's key and self-signed certificate in `dir`
    /// (`receiver.key`, `receiver.crt`) before it starts, so that a server
    /// can be configured to trust it while the endpoint is still down:
    /// [`Receiver::start_on`] on the same `dir` uses them. Returns the
    /// certificate's file.
    pub fn prepare_identity(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("dir");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join("receiver.key"), key.serialize_pem()).expect("write receiver key");
        let ca_file = dir.join("receiver.crt");
        std::fs::write(&ca_file, cert.pem()).expect("write receiver cert");
        ca_file
    }

    /// Starts the endpoint on `addr`, with the identity that
    /// [`Receiver::prepare_identity`] left in `dir` or a new one.
    pub async fn start_on(dir: &Path, addr: SocketAddr, fail_first: usize) -> Receiver {
        let ca_file = dir.join("receiver.crt");
        if !(ca_file.is_file() && dir.join("receiver.key").is_file()) {
            Self::prepare_identity(dir);
        }
        let key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(dir.join("receiver.key")).expect("read receiver key"),
        )
        .expect("receiver key");
        let cert_der = smdpplus::pki::load_certs(&ca_file)
            .expect("receiver cert")
            .remove(0);
        let ci = dir.join("receiver-trusts-ci.crt");
        std::fs::write(&ci, smdpplus::pki::dev::SGP26_CI_CERT_PEM).expect("write ci");
        let mut roots = rustls::RootCertStore::empty();
        for c in smdpplus::pki::load_certs(&ci).expect("ci") {
            roots.add(c).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("verifier");
        let key_der =
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der], key_der)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let tx = tx.clone();
                        let counter = counter.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            let status = if n < fail_first {
                                500
                            } else {
                                let mut v: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                v["_path"] = json!(path);
                                let _ = tx.send(v);
                                204
                            };
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            ));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            ca_file,
            rx,
            attempts,
        }
    }

    /// The next accepted notification, or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// A config that points the dev operator's notifications here.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "{extra}\n[outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 400\nrequest_timeout_ms = 3000\n\n[[operators]]\nid = \"dev-operator\"\nnotification_url = \"https://localhost:{}\"\nnotification_ca = \"{}\"\n",
            self.addr.port(),
            self.ca_file.display()
        )
    }
}

/// Issues a client certificate for `cn` from the server's dev operator CA.
pub fn operator_cert(server: &Server, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pki = server.dir.join("pki");
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(pki.join("operator-ca.key")).expect("ca key"),
    )
    .expect("parse ca key");
    let ca_pem = std::fs::read_to_string(pki.join("operator-ca.crt")).expect("ca cert");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (c, k) = (
        server.dir.join(format!("{cn}.crt")),
        server.dir.join(format!("{cn}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}
