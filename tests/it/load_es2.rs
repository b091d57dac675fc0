//! `smdpplus load es2` against a real server: DownloadOrder + ConfirmOrder
//! pairs over kept-alive mutual-TLS connections, with the report's figures
//! and the orders really Released in the store.

use crate::common::Server;
use serde_json::{json, Value};
use std::process::Command;

/// Runs the generator against `server` with `--json --server-pid` and
/// `args`; returns (success, report).
fn load(server: &Server, args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["load", "es2", "--json"])
        .args([
            "--server",
            &format!("https://localhost:{}", server.es2.port()),
        ])
        .arg("--data-dir")
        .arg(&server.dir)
        .args(["--server-pid", &server.pid().to_string()])
        .args([
            "--server-metrics",
            &format!("http://{}/metrics", server.ops),
        ])
        .args(args)
        .output()
        .expect("run smdpplus load es2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Released orders in the store, and how many of them carry an EID.
async fn released(server: &Server) -> (usize, usize) {
    let (s, v) = server
        .operator()
        .admin(
            hyper::Method::GET,
            "profiles?state=Released&limit=1000",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let list = v["profiles"].as_array().cloned().unwrap_or_default();
    let with_eid = list.iter().filter(|p| p["eid"].is_string()).count();
    (list.len(), with_eid)
}

#[tokio::test]
async fn closed_loop_activation_code_pairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let (ok, r) = load(&server, &["--pairs", "12", "--concurrency", "3"]);
    assert!(ok, "{r:#}");
    assert_eq!(r["pairs"], 12, "{r:#}");
    assert_eq!(r["attempted"], 12, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["errors"], json!({}), "{r:#}");
    for step in ["downloadOrder", "confirmOrder"] {
        let s = &r["steps"][step];
        assert_eq!(s["count"], 12, "{step}: {r:#}");
        assert!(s["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{r:#}");
        assert!(s["p50_ms"].as_f64() <= s["max_ms"].as_f64(), "{r:#}");
    }
    assert_eq!(r["pair"]["count"], 12, "{r:#}");
    assert!(r["pairs_per_sec"].as_f64().is_some_and(|v| v > 0.0));
    // One connection per client, opened before the measured phase.
    assert_eq!(r["connections_opened"], 3, "{r:#}");
    assert_eq!(r["handshakes_measured"], 0, "{r:#}");
    assert_eq!(r["floor"]["per_pair_us"], 0.0, "{r:#}");
    assert!(r["floor"]["handshake_us"].as_f64().is_some_and(|v| v > 0.0));
    assert!(
        r["server_cpu"]["per_pair_us"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{r:#}"
    );
    assert!(r["server_cpu"]["metrics_secs"].as_f64().is_some(), "{r:#}");
    assert!(r["client_cpu"]["secs"].as_f64().is_some(), "{r:#}");
    assert_eq!(released(&server).await, (12, 0));
}

#[tokio::test]
async fn open_loop_eid_pairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let (ok, r) = load(
        &server,
        &["--rate", "40", "--duration-secs", "1", "--orders", "eid"],
    );
    assert!(ok, "{r:#}");
    assert_eq!(r["load"]["loop"], "open");
    assert_eq!(r["pairs"], 40, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    // Open loop opens its connections as it goes: they count in the floor.
    let opened = r["handshakes_measured"].as_u64().expect("handshakes");
    assert!(opened >= 1, "{r:#}");
    assert!(r["floor"]["per_pair_us"].as_f64().is_some_and(|v| v > 0.0));
    assert_eq!(released(&server).await, (40, 40));
}

#[tokio::test]
async fn an_exhausted_pool_is_counted_by_status_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    // The demo pool is seeded with a few profiles: asking for more pairs
    // than it holds ends in 8.2.5/3.7 (no profile available), which the
    // report counts and the exit status reports.
    let (s, v) = server
        .operator()
        .admin(
            hyper::Method::GET,
            "profiles?state=Available&limit=1000",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let available = v["profiles"].as_array().map_or(0, Vec::len);
    assert!(available > 0);
    let n = available + 5;
    let (ok, r) = load(&server, &["--pairs", &n.to_string(), "--concurrency", "1"]);
    assert!(!ok, "{r:#}");
    assert_eq!(r["pairs"], available, "{r:#}");
    assert_eq!(r["failed"], 5, "{r:#}");
    assert_eq!(
        r["errors"],
        json!({ "downloadOrder 8.2.5/3.7": 5 }),
        "{r:#}"
    );
}
