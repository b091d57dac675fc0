//! The test clock of debug builds (`serve --test-clock`, or
//! `SMDPPLUS_TEST_CLOCK=true`), which the other tests use instead of
//! sleeping through an expiry: hidden from `serve --help`, absent unless
//! asked for, and moving only forward.

use crate::common::Server;
use serde_json::json;

#[test]
fn the_flag_is_not_in_the_help() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smdpplus"))
        .args(["serve", "--help"])
        .output()
        .expect("run smdpplus");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!help.contains("test-clock"), "{help}");
    assert!(!help.contains("TEST_CLOCK"), "{help}");
}

#[tokio::test]
async fn without_the_flag_there_is_no_clock_to_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(dir.path(), None, &[("SMDPPLUS_TEST_CLOCK", "false")]);
    let (s, body) = server.ops_request("POST", "/test/clock?advance=60").await;
    assert_eq!(s, 404, "{body}");
}

#[tokio::test]
async fn the_clock_moves_forward_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    assert_eq!(server.ops_request("GET", "/test/clock").await.0, 405);
    for bad in ["", "?advance=-1", "?advance=soon", "?advance=999999999999"] {
        let (s, body) = server
            .ops_request("POST", &format!("/test/clock{bad}"))
            .await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    // A day later, an order made now has a day less to live.
    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let expires = |p: serde_json::Value| {
        smdpplus::time::parse_datetime(p["profile"]["expiresAt"].as_str().expect("expiresAt"))
            .expect("date")
    };
    let before = expires(op.show(&iccid).await);
    assert_eq!(server.advance_clock(86400).await, 86400);
    assert_eq!(server.advance_clock(0).await, 86400);
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    let later = v["iccid"].as_str().expect("iccid").to_owned();
    let after = expires(op.show(&later).await);
    assert!(
        (86400..86400 + 60).contains(&(after - before)),
        "{before} then {after}"
    );
}
