//! ES2+ handleDownloadProgressInfo from the durable outbox, delivered over
//! real mutual TLS to a real HTTPS operator endpoint: cancel and expiry
//! events, retries with backoff, delivery across restarts, and the CLI view.

mod common;

use common::{iccids, status, Receiver, Server, EID};
use hyper::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn cancel_is_notified_after_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 2).await;
    let server = Server::start(&dir.path().join("data"), Some(&rx.config("")));
    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo", "eid": EID}))
        .await;
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success");

    let n = rx
        .next(Duration::from_secs(20))
        .await
        .expect("notification delivered");
    assert_eq!(n["_path"], "/gsma/rsp2/es2plus/handleDownloadProgressInfo");
    assert_eq!(n["iccid"], iccid.as_str());
    assert_eq!(n["eid"], EID);
    assert_eq!(n["profileType"], "demo");
    assert_eq!(n["notificationPointId"], 100);
    assert_eq!(n["notificationPointStatus"]["status"], "Executed-Success");
    assert_eq!(n["header"]["functionRequesterIdentifier"], "localhost");
    assert!(n["header"]["functionCallIdentifier"]
        .as_str()
        .is_some_and(|s| s.starts_with("smdpplus-")));
    let ts = n["timestamp"].as_str().expect("timestamp");
    assert!(
        smdpplus::time::parse_datetime(ts).is_some() && ts.ends_with('Z'),
        "{ts}"
    );
    assert_eq!(
        rx.attempts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two refusals, then delivered"
    );

    // Delivered items leave the outbox.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = op.admin(Method::GET, "outbox", None).await;
        if v["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox not drained: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, m) = server.ops_get("/metrics").await;
    assert!(
        m.contains(r#"smdpplus_outbox_attempts_total{result="failed"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"smdpplus_outbox_attempts_total{result="delivered"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn expired_order_goes_to_error_and_is_notified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let server = Server::start(
        &dir.path().join("data"),
        Some(&rx.config("expiry_sweep_secs = 1")),
    );
    let op = server.operator();
    let ids = iccids(7, 1);
    op.add_profiles("bronze", &ids).await;
    let (_, v) = op
        .call("downloadOrder", json!({"iccid": ids[0], "eid": EID}))
        .await;
    assert_eq!(status(&v), "Executed-Success");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success");
    // The default expiry is a week away; the operator moves it into the past.
    let shown = op.show(&ids[0]).await;
    let default_expiry =
        smdpplus::time::parse_datetime(shown["profile"]["expiresAt"].as_str().expect("expiresAt"))
            .expect("date");
    assert!(default_expiry > smdpplus::time::now() + 6 * 24 * 3600);
    let (s, v) = op
        .admin(
            Method::PUT,
            &format!("profiles/{}/expiry", ids[0]),
            Some(json!({"expiresAt": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = op
        .admin(
            Method::PUT,
            &format!("profiles/{}/expiry", ids[0]),
            Some(json!({"expiresAt": "soon"})),
        )
        .await;
    assert_eq!(s, 400);

    let n = rx
        .next(Duration::from_secs(20))
        .await
        .expect("expiry notified");
    assert_eq!(n["iccid"], ids[0].as_str());
    assert_eq!(n["notificationPointId"], 1);
    assert_eq!(n["notificationPointStatus"]["status"], "Failed");
    assert_eq!(
        n["notificationPointStatus"]["statusCodeData"]["subjectCode"],
        "8.8.5"
    );
    assert_eq!(
        n["notificationPointStatus"]["statusCodeData"]["reasonCode"],
        "4.10"
    );
    let shown = op.show(&ids[0]).await;
    assert_eq!(shown["profile"]["state"], "Error");
    assert_eq!(shown["profile"]["errorReason"], "order expired");
    let last = shown["history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .expect("history");
    assert_eq!(
        (
            last["event"].as_str(),
            last["from"].as_str(),
            last["caller"].as_str()
        ),
        (Some("expired"), Some("Released"), Some("smdpplus"))
    );
    // An expired order can be cancelled back into the pool.
    let (_, v) = op.call("cancelOrder", json!({"iccid": ids[0], "eid": EID, "matchingId": shown["profile"]["matchingId"], "finalProfileStatusIndicator": "Available"})).await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    assert_eq!(op.state(&ids[0]).await, "Available");
}

#[tokio::test]
async fn outbox_survives_restart_and_is_visible_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Reserve a port for the receiver but do not listen yet: deliveries fail.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let receiver_dir = dir.path().join("receiver");
    // The config only needs the receiver's CA file, which does not exist
    // yet: the SM-DP+ cannot even build a client for it, and retries.
    let cfg = |ca: &std::path::Path| {
        format!(
            "[outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 300\nrequest_timeout_ms = 2000\n[[operators]]\nid = \"dev-operator\"\nnotification_url = \"https://localhost:{}\"\nnotification_ca = \"{}\"\n",
            addr.port(),
            ca.display()
        )
    };
    let ca = receiver_dir.join("receiver.crt");
    let mut server = Server::start(&data, Some(&cfg(&ca)));
    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "finalProfileStatusIndicator": "Unavailable"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success");

    // The CLI shows the pending item with its failed attempts.
    let wait_attempts = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smdpplus"))
            .args([
                "outbox",
                "list",
                "--server",
                &format!("https://localhost:{}", server.es2.port()),
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains(&iccid), "{text}");
        let line = text
            .lines()
            .find(|l| l.contains(&iccid))
            .unwrap_or_default()
            .to_owned();
        let attempts: u32 = line
            .split_whitespace()
            .nth(4)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        if attempts >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < wait_attempts,
            "no failed attempt recorded: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Crash, start the receiver, restart: the item is still there and delivered.
    server.kill9();
    let mut rx = Receiver::start_on(&receiver_dir, addr, 0).await;
    let _server = Server::start(&data, Some(&cfg(&rx.ca_file)));
    let n = rx
        .next(Duration::from_secs(20))
        .await
        .expect("delivered after restart");
    assert_eq!(n["iccid"], iccid.as_str());
}
