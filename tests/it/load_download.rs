//! `smdpplus load download` against a real server: the generator issues
//! its own eUICCs, places the orders over ES2+, downloads them over ES9+
//! and reports CPU per session against the crypto floor.

use crate::common::{Server, EID2};
use serde_json::{json, Value};
use std::process::Command;

/// Runs the generator against `server` with `--json --server-pid` and
/// `args`; returns the report.
fn load(server: &Server, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["load", "download", "--json"])
        .args(["--smdp", &format!("localhost:{}", server.es9.port())])
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
        .expect("run smdpplus load download");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "load download failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The report of `n` successful downloads, with its CPU and floor figures.
#[track_caller]
fn assert_clean_report(r: &Value, n: u64) {
    assert_eq!(r["downloads"], n, "{r:#}");
    assert_eq!(r["sessions"], n, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["errors"], json!({}), "{r:#}");
    for step in [
        "initiateAuthentication",
        "authenticateClient",
        "getBoundProfilePackage",
        "handleNotification",
    ] {
        let s = &r["steps"][step];
        assert_eq!(s["count"], n, "{step}: {r:#}");
        for q in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(s[q].as_f64().is_some_and(|v| v > 0.0), "{step} {q}: {r:#}");
        }
        assert!(s["p50_ms"].as_f64() <= s["p99_ms"].as_f64());
        assert!(s["p99_ms"].as_f64() <= s["max_ms"].as_f64());
    }
    assert_eq!(r["session"]["count"], n);
    assert!(r["downloads_per_sec"].as_f64().is_some_and(|v| v > 0.0));
    let cpu = r["server_cpu"]["per_session_us"]
        .as_f64()
        .expect("server CPU");
    assert!(cpu > 0.0, "{r:#}");
    assert!(r["server_cpu"]["metrics_secs"].as_f64().is_some(), "{r:#}");
    assert!(r["client_cpu"]["secs"].as_f64().is_some(), "{r:#}");
    let floor = r["floor"]["per_session_us"].as_f64().expect("floor");
    assert!(floor > 0.0, "{r:#}");
    for part in [
        "ecdsa_sign_3_us",
        "ecdsa_verify_4_us",
        "ecka_keygen_ecdh_us",
        "tls_sign_us",
        "tls_kx_us",
    ] {
        assert!(
            r["floor"]["parts"][part].as_f64().is_some_and(|v| v > 0.0),
            "{part}: {r:#}"
        );
    }
    let ratio = r["ratio"].as_f64().expect("ratio");
    assert!(
        (ratio - cpu / floor).abs() <= 1e-9 * ratio.max(1.0),
        "{r:#}"
    );
}

/// How many profiles are in `state`.
async fn count_in(server: &Server, state: &str) -> usize {
    let (s, v) = server
        .operator()
        .admin(
            hyper::Method::GET,
            &format!("profiles?state={state}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["profiles"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn eid_orders_nist_closed_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let r = load(
        &server,
        &["--euiccs", "4", "--sessions", "8", "--concurrency", "2"],
    );
    assert_clean_report(&r, 8);
    assert_eq!(r["load"]["orders"], "eid");
    assert_eq!(r["load"]["euiccs"], 4);
    assert!(r["floor"]["by_curve"]["NIST P-256"].is_object(), "{r:#}");
    assert_eq!(
        r["floor"]["sessions_by_curves"],
        json!({ "DPauth/DPpb NIST P-256, eUICC NIST P-256": 8 }),
        "{r:#}"
    );
    // Kept-alive connections: at most one per session in flight.
    assert!(
        r["connections_opened"].as_u64().is_some_and(|c| c <= 2),
        "{r:#}"
    );
    assert_eq!(count_in(&server, "Installed").await, 8);
}

#[tokio::test]
async fn brainpool_euiccs_per_session_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let r = load(
        &server,
        &[
            "--euiccs",
            "3",
            "--sessions",
            "4",
            "--concurrency",
            "2",
            "--curve",
            "brainpool",
            "--connections",
            "per-session",
        ],
    );
    assert_clean_report(&r, 4);
    assert_eq!(r["connections_opened"], 4, "{r:#}");
    assert!(
        r["floor"]["by_curve"]["brainpoolP256r1"].is_object(),
        "{r:#}"
    );
    assert!(r["floor"]["by_curve"]["NIST P-256"].is_null(), "{r:#}");
    // A brainpool eUICC trusts the brainpool CI only: the server signs with
    // its brainpool DPauth/DPpb.
    assert_eq!(
        r["floor"]["sessions_by_curves"],
        json!({ "DPauth/DPpb brainpoolP256r1, eUICC brainpoolP256r1": 4 }),
        "{r:#}"
    );
    assert_eq!(count_in(&server, "Installed").await, 4);
}

#[tokio::test]
async fn activation_codes_with_a_confirmation_code_open_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let r = load(
        &server,
        &[
            "--euiccs",
            "2",
            "--sessions",
            "6",
            "--rate",
            "20",
            "--orders",
            "ac",
            "--confirmation-code",
            "12345678",
        ],
    );
    assert_clean_report(&r, 6);
    assert_eq!(r["load"]["loop"], "open");
    assert_eq!(r["load"]["orders"], "ac");
    assert_eq!(count_in(&server, "Installed").await, 6);
}

#[tokio::test]
async fn existing_released_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let op = server.operator();
    // One order linked to an EID in the test EUM's range, one with a
    // matchingId and no EID.
    for (eid, matching_id) in [(Some(EID2), None), (None, Some("LOAD-EXISTING-1"))] {
        let mut order = json!({ "profileType": "demo" });
        if let Some(e) = eid {
            order["eid"] = json!(e);
        }
        let (_, v) = op.call("downloadOrder", order).await;
        let iccid = v["iccid"].as_str().expect("iccid").to_owned();
        let mut confirm = json!({ "iccid": iccid, "releaseFlag": true });
        if let Some(e) = eid {
            confirm["eid"] = json!(e);
        }
        if let Some(m) = matching_id {
            confirm["matchingId"] = json!(m);
        }
        let (_, v) = op.call("confirmOrder", confirm).await;
        assert_eq!(crate::common::status(&v), "Executed-Success", "{v}");
    }
    let r = load(
        &server,
        &["--euiccs", "1", "--orders", "existing", "--sessions", "2"],
    );
    assert_clean_report(&r, 2);
    assert_eq!(
        r["load"]["euiccs"], 2,
        "one eUICC issued for the order's EID"
    );
    assert_eq!(count_in(&server, "Installed").await, 2);
}

#[tokio::test]
async fn mixed_curves_and_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None).refusing_errors();
    let r = load(
        &server,
        &[
            "--euiccs",
            "4",
            "--sessions",
            "8",
            "--concurrency",
            "2",
            "--curve",
            "mix",
            "--orders",
            "mix",
        ],
    );
    assert_clean_report(&r, 8);
    let pairs = r["floor"]["sessions_by_curves"].as_object().expect("pairs");
    let nist = &pairs["DPauth/DPpb NIST P-256, eUICC NIST P-256"];
    let brp = &pairs["DPauth/DPpb brainpoolP256r1, eUICC brainpoolP256r1"];
    assert!(nist.as_u64().is_some_and(|n| n > 0), "{r:#}");
    assert!(brp.as_u64().is_some_and(|n| n > 0), "{r:#}");
    assert_eq!(nist.as_u64().unwrap_or(0) + brp.as_u64().unwrap_or(0), 8);
    assert_eq!(count_in(&server, "Installed").await, 8);
}
