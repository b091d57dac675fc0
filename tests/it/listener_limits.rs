//! Listener protections against the real binary: connection caps (per
//! listener and per client address) enforced at accept time, the TLS
//! handshake and whole-request deadlines, header size and count caps, and
//! a log that stays small while a flood is refused. ES2+ and the
//! operations listener keep answering while ES9+ is saturated.

use crate::common::Server;
use rustls::pki_types::ServerName;
use serde_json::json;
use smdpplus::http::tls;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::new(from, 0))
        .expect("bind client address");
    s.connect(addr).await.expect("connect")
}

/// A TLS connection to `addr` (trusting the dev CI), from `from`.
async fn tls_from(server: &Server, from: IpAddr, addr: SocketAddr) -> TlsStream<TcpStream> {
    let cfg = tls::client(&[server.pki().ci_cert.as_path()], None, false).expect("client config");
    let tcp = tcp_from(from, addr).await;
    TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// Reads until the server closes (or `within` passes): (bytes read, time to
/// close). A reset counts as closed.
async fn read_to_close<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut buf = vec![];
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return (buf, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, Some(start.elapsed())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The headers of an ES9+ call announcing a 60000-byte body.
const STALLED_HEAD: &str = "POST /gsma/rsp2/es9plus/initiateAuthentication HTTP/1.1\r\n\
     Host: localhost\r\nContent-Type: application/json\r\n\
     X-Admin-Protocol: gsma/rsp/v2.2.0\r\nContent-Length: 60000\r\n\r\n{\"euiccChallenge\":";

/// An ES9+ request whose body never completes.
async fn stalled_body<S: AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(STALLED_HEAD.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
}

/// The value of the metric line starting with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

const FLOOD_CONFIG: &str = r#"
seed_demo_profiles = 0

[listeners.es9]
max_connections = 10
max_connections_per_ip = 0
request_timeout_secs = 2
tls_handshake_timeout_secs = 2
"#;

/// The attack: more stalled connections than the cap against ES9+ (TLS
/// connections that announced a body which never comes, TCP connections
/// that never start TLS), then a flood of new ones. ES9+ closes the excess
/// at once; ES2+ and /healthz answer within 1 s; the stalled ones are
/// closed by the deadlines (408 for the stalled bodies); the log stays
/// small; the metrics count it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_flood_on_es9_is_capped_and_others_keep_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(FLOOD_CONFIG));
    let op = server.operator();
    // The server works before the attack.
    let (status, _) = server.ops_get("/healthz").await;
    assert_eq!(status, 200);
    let log_before = server.log().len();

    // Fill the cap: 6 stalled bodies over TLS, 4 connections that never
    // start the handshake.
    let mut bodies = vec![];
    for _ in 0..6 {
        let mut s = tls_from(&server, loopback(), server.es9).await;
        stalled_body(&mut s).await;
        bodies.push((s, Instant::now()));
    }
    let mut silent = vec![];
    for _ in 0..4 {
        silent.push((
            TcpStream::connect(server.es9).await.expect("connect"),
            Instant::now(),
        ));
    }
    // Let the server accept them all before the flood.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The excess: every new connection is closed at once.
    const EXCESS: usize = 150;
    let flood: Vec<_> = (0..EXCESS)
        .map(|_| {
            let addr = server.es9;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                read_to_close(&mut s, Duration::from_millis(1500)).await
            })
        })
        .collect();
    let mut closed_at_once = 0;
    for f in flood {
        let (bytes, closed) = f.await.expect("task");
        assert!(bytes.is_empty(), "a refused connection gets no bytes");
        if closed.is_some() {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, EXCESS,
        "every connection past the cap is closed within 1.5 s, before any deadline"
    );

    // ES9+ is saturated; ES2+ and operations answer within 1 s.
    let t = Instant::now();
    let (status, body) = server.ops_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let t = Instant::now();
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(1),
        op.call(
            "cancelOrder",
            json!({"iccid": "8999900000000000006", "finalProfileStatusIndicator": "Available"}),
        ),
    )
    .await
    .expect("ES2+ answers within 1 s while ES9+ is saturated");
    assert_eq!(status, 200, "{v}");
    assert!(
        v["header"]["functionExecutionStatus"]["status"].is_string(),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));

    // The deadlines close the stalled connections: a 408 for each stalled
    // body, a plain close for each silent TLS handshake, about 2 s after
    // they began.
    for (mut s, began) in bodies {
        let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(6)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "stalled body answered {text:?}"
        );
        assert!(closed.is_some(), "the connection is closed after the 408");
        let age = began.elapsed();
        assert!(
            age >= Duration::from_millis(1500) && age < Duration::from_secs(5),
            "closed after {age:?}"
        );
    }
    for (mut s, began) in silent {
        let (_, closed) = read_to_close(&mut s, Duration::from_secs(6)).await;
        assert!(closed.is_some(), "a silent connection is closed");
        let age = began.elapsed();
        assert!(
            age >= Duration::from_millis(1500) && age < Duration::from_secs(5),
            "closed after {age:?}"
        );
    }

    // With the stalled connections gone, ES9+ accepts again.
    let mut s = tls_from(&server, loopback(), server.es9).await;
    s.write_all(b"GET /gsma/rsp2/es9plus/initiateAuthentication HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(
        String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );

    // The metrics count the refusals and the deadlines.
    let (_, m) = server.ops_get("/metrics").await;
    let refused = metric(
        &m,
        "smdpplus_connections_refused_total{listener=\"es9plus\",reason=\"max_connections\"}",
    );
    assert!(refused >= EXCESS as f64, "refused {refused}");
    assert_eq!(
        metric(
            &m,
            "smdpplus_deadline_exceeded_total{listener=\"es9plus\",phase=\"body\"}"
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            "smdpplus_deadline_exceeded_total{listener=\"es9plus\",phase=\"tls_handshake\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "smdpplus_connections_refused_total{listener=\"es2plus\",reason=\"max_connections\"}"
        ),
        0.0
    );
    assert!(metric(&m, "smdpplus_open_connections{listener=\"es9plus\"}") <= 1.0);

    // The refusals and deadlines were logged, throttled: a few lines, not
    // one per connection.
    let log = server.log();
    let grown = log.len() - log_before;
    assert!(
        log.contains("connection refused: cap reached"),
        "refusals are logged"
    );
    let refusal_lines = log.matches("connection refused: cap reached").count();
    eprintln!(
        "flood: {refused} refused, {refusal_lines} refusal log lines, log grew {grown} bytes"
    );
    assert!(
        refusal_lines <= 5,
        "{refusal_lines} refusal lines for {EXCESS} refusals"
    );
    assert!(
        grown < 16 * 1024,
        "the log grew by {grown} bytes during the flood"
    );
}

const PER_IP_CONFIG: &str = r#"
seed_demo_profiles = 0

[listeners.operator_web]
max_connections = 100
max_connections_per_ip = 3
request_timeout_secs = 2
tls_handshake_timeout_secs = 2
"#;

/// The per-address cap on a public listener (operator web): the fourth
/// connection from one address is closed at once, while another address is
/// served; once the first ones close, the address is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_spares_other_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(PER_IP_CONFIG));
    let held: Vec<TcpStream> = {
        let mut v = vec![];
        for _ in 0..3 {
            v.push(tcp_from(loopback(), server.web).await);
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = tcp_from(loopback(), server.web).await;
    let (_, closed) = read_to_close(&mut fourth, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "the fourth connection from 127.0.0.1 is closed at once"
    );

    // Another address is not affected: a whole request is served.
    let other = IpAddr::from([127, 0, 0, 2]);
    let mut s = tls_from(&server, other, server.web).await;
    s.write_all(b"GET /no-such-page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    assert!(!text.starts_with("HTTP/1.1 408"), "{text}");

    // Closing the held connections frees the address's places.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tls_from(&server, loopback(), server.web).await;
    again
        .write_all(b"GET /no-such-page HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (bytes, _) = read_to_close(&mut again, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 "));

    let (_, m) = server.ops_get("/metrics").await;
    assert_eq!(
        metric(
            &m,
            "smdpplus_connections_refused_total{listener=\"operator-web\",reason=\"max_connections_per_ip\"}"
        ),
        1.0
    );
}

/// Header caps with the defaults (16 KiB, 64 fields) on ES9+: a 200 KB
/// header and 100 header fields get 431; a 10 KB header passes the cap.
/// On the operations listener a header block that never completes is
/// closed by the request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_caps_and_header_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        Some("seed_demo_profiles = 0\n[listeners.ops]\nrequest_timeout_secs = 2\n"),
    );
    let request = |headers: String| {
        format!(
            "GET /gsma/rsp2/es9plus/initiateAuthentication HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        )
    };
    let answer = |req: String| {
        let server = &server;
        async move {
            let mut s = tls_from(server, loopback(), server.es9).await;
            // The server may answer and close before the whole header is
            // written; what it sent is still readable.
            let _ = s.write_all(req.as_bytes()).await;
            let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
            assert!(
                closed.is_some(),
                "the connection is closed, not left hanging"
            );
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    // The server stops reading at the cap, so the client may see a reset
    // before the 431 it was sent: either way the request is refused.
    let big = answer(request(format!("X-Big: {}\r\n", "a".repeat(200_000)))).await;
    assert!(
        big.is_empty() || big.starts_with("HTTP/1.1 431"),
        "200 KB header: {big:?}"
    );
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = answer(request(many)).await;
    assert!(
        many.starts_with("HTTP/1.1 431"),
        "100 header fields: {many:?}"
    );
    let fine = answer(request(format!("X-Big: {}\r\n", "a".repeat(10_000)))).await;
    assert!(fine.starts_with("HTTP/1.1 405"), "10 KB header: {fine:?}");

    // Half a header block on the plain operations listener: closed by the
    // 2 s deadline.
    let mut s = TcpStream::connect(server.ops).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(6)).await;
    let closed = closed.expect("a half header block is closed by the deadline");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");

    // An idle keep-alive connection is closed by the same deadline.
    let mut s = TcpStream::connect(server.ops).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (bytes, closed) = read_to_close(&mut s, Duration::from_secs(6)).await;
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
    let closed = closed.expect("an idle keep-alive connection is closed");
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_secs(5),
        "{closed:?}"
    );

    let (_, m) = server.ops_get("/metrics").await;
    assert_eq!(
        metric(
            &m,
            "smdpplus_request_headers_too_large_total{listener=\"es9plus\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "smdpplus_deadline_exceeded_total{listener=\"ops\",phase=\"headers\"}"
        ),
        2.0
    );
}

/// The binary started under `sh` with `ulimit <ulimit>` in force (no
/// harness: the open-file limit is what is tested).
struct Limited {
    child: std::process::Child,
    log: std::path::PathBuf,
    es9: SocketAddr,
    ops: SocketAddr,
}

impl Limited {
    fn start(dir: &std::path::Path, ulimit: &str, config: &str) -> Limited {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).expect("dir");
        let cfg = dir.join("test-config.toml");
        std::fs::write(&cfg, config).expect("config");
        let log = dir.join("server.log");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$@\""))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_smdpplus"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
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
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("ready ") => break l,
                Some(Ok(_)) => continue,
                _ => panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let addr = |k: &str| -> SocketAddr {
            ready
                .split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {ready}"))
        };
        Limited {
            child,
            log,
            es9: addr("es9"),
            ops: addr("ops"),
        }
    }

    /// The log so far, without terminal colours.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on a plain HTTP listener: the status, or 0 when nothing came.
async fn plain_get(addr: SocketAddr, path: &str) -> u16 {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
    else {
        return 0;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let (bytes, _) = read_to_close(&mut s, Duration::from_secs(2)).await;
    String::from_utf8_lossy(&bytes)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// At start the soft open-file limit is raised to the hard one and both
/// are logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_fd_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hard: u64 = rlimit::Resource::NOFILE.get().expect("getrlimit").1;
    let server = Limited::start(dir.path(), "-Sn 300", "seed_demo_profiles = 0\n");
    let log = server.log();
    assert!(
        log.contains("raised the open file limit to its hard limit")
            && log.contains("from=300")
            && log.contains(&format!("to={hard}")),
        "{log}"
    );
    assert_eq!(plain_get(server.ops, "/healthz").await, 200);
}

/// When the process runs out of file descriptors (caps above a low hard
/// limit, on purpose), the accept loop backs off and logs about once a
/// second with a count, instead of a line every few milliseconds; the
/// server warns at start that the caps do not fit, and recovers once the
/// stalled connections are closed by the handshake deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_are_logged_once_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Limited::start(
        dir.path(),
        "-n 128",
        "seed_demo_profiles = 0\n[listeners.es9]\nmax_connections_per_ip = 0\ntls_handshake_timeout_secs = 2\n",
    );
    let log = server.log();
    assert!(
        log.contains("open file limit") && log.contains("soft=128"),
        "{log}"
    );
    assert!(
        log.contains("add up to more than the open file limit"),
        "{log}"
    );
    // Twice as many silent connections as the process has descriptors.
    let mut flood = vec![];
    for _ in 0..256 {
        flood.push(TcpStream::connect(server.es9).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(flood);
    // The first accepted ones were closed by the 2 s handshake deadline;
    // the rest is accepted and closed in turn, and the server answers again.
    let t = Instant::now();
    while plain_get(server.ops, "/healthz").await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the server did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.log();
    let lines = log.matches("accept failed").count();
    let errors = log
        .lines()
        .filter(|l| l.contains("accept failed"))
        .map(|l| l.to_owned())
        .collect::<Vec<_>>();
    eprintln!("accept-failure log lines: {errors:#?}");
    assert!(lines >= 1, "accept errors are logged: {log}");
    assert!(
        lines <= 8,
        "{lines} accept-failure lines in about 3 s: {log}"
    );
    assert!(log.contains("errors="), "the line carries the count: {log}");
    let (_, m) = {
        let mut s = TcpStream::connect(server.ops).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let (bytes, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
        (0, String::from_utf8_lossy(&bytes).into_owned())
    };
    let counted = metric(&m, "smdpplus_accept_errors_total{listener=\"es9plus\"}");
    eprintln!("accept errors counted: {counted}");
    assert!(counted >= 1.0);
}
