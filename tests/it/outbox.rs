//! ES2+ handleDownloadProgressInfo from the durable outbox, delivered over
//! real mutual TLS to a real HTTPS operator endpoint: cancel and expiry
//! events, retries with backoff, delivery across restarts, and the CLI view.

use crate::common;

use crate::common::{iccids, operator_cert, status, Receiver, Server, EID};
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
    op.order_released(&ids[0], EID).await;
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

/// downloadOrder then cancelOrder: one notification (point 100).
async fn order_and_cancel(op: &common::Operator, iccid: &str) {
    let (_, v) = op
        .call("downloadOrder", json!({"iccid": iccid, "eid": EID}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
}

fn metric(m: &str, series: &str) -> Option<i64> {
    m.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Three operators: one without notification_url (its items are held and
/// never read by the worker, however often it wakes), one whose endpoint
/// accepts connections and never answers (every attempt runs into the
/// 30 s timeout), and one that answers. The last one's notification
/// arrives while the dead endpoint's attempts are still hanging.
#[tokio::test]
async fn a_dead_endpoint_does_not_delay_other_operators_and_held_items_are_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    // Accepts TCP connections and holds them without a byte in return.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    let dead_accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dead_accepted.clone();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = dead.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let config = format!(
        "[outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 400\nrequest_timeout_ms = 30000\n\
         [[operators]]\nid = \"dev-operator\"\n\
         [[operators]]\nid = \"op-dead\"\nnotification_url = \"https://localhost:{dead_port}\"\nnotification_ca = \"{ca}\"\n\
         [[operators]]\nid = \"op-live\"\nnotification_url = \"https://localhost:{live_port}\"\nnotification_ca = \"{ca}\"\n",
        ca = rx.ca_file.display(),
        live_port = rx.addr.port(),
    );
    let server = Server::start(&data, Some(&config));
    let pki = server.pki();
    let held_op = server.operator();
    let (c, k) = operator_cert(&server, "op-dead");
    let dead_op = common::Operator::new(server.es2, &c, &k, &pki.ci_cert);
    let (c, k) = operator_cert(&server, "op-live");
    let live_op = common::Operator::new(server.es2, &c, &k, &pki.ci_cert);
    let dead_ids = iccids(21, 20);
    dead_op.add_profiles("gold", &dead_ids).await;
    let live_ids = iccids(22, 1);
    live_op.add_profiles("gold", &live_ids).await;

    // Three held notifications of the operator without an endpoint.
    let (_, v) = held_op
        .call("downloadOrder", json!({"profileType": "demo", "eid": EID}))
        .await;
    let demo = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = held_op
        .call(
            "cancelOrder",
            json!({"iccid": demo, "eid": EID, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    for _ in 0..2 {
        order_and_cancel(&held_op, &demo).await;
    }
    // Twenty for the dead endpoint: more than one batch in flight.
    for id in &dead_ids {
        order_and_cancel(&dead_op, id).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dead_accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt on the dead endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The live operator's notification arrives well before the dead
    // endpoint's first timeout (30 s).
    let started = std::time::Instant::now();
    order_and_cancel(&live_op, &live_ids[0]).await;
    let n = rx
        .next(Duration::from_secs(10))
        .await
        .expect("the live operator is notified while the dead endpoint hangs");
    assert_eq!(n["iccid"], live_ids[0].as_str());
    assert!(started.elapsed() < Duration::from_secs(10));

    // More wakes; then the metrics: the held operator's items were never
    // read, the live one's exactly once, and the depths per operator.
    order_and_cancel(&held_op, &demo).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, m) = server.ops_get("/metrics").await;
    assert_eq!(
        metric(
            &m,
            r#"smdpplus_outbox_items_examined_total{operator="dev-operator"}"#
        ),
        None,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"smdpplus_outbox_items_examined_total{operator="op-live"}"#
        ),
        Some(1),
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"smdpplus_outbox_items_examined_total{operator="op-dead"}"#
        )
        .is_some_and(|n| (1..=20).contains(&n)),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            r#"smdpplus_outbox_operator_depth{operator="dev-operator"}"#
        ),
        Some(4),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"smdpplus_outbox_operator_depth{operator="op-dead"}"#),
        Some(20),
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"smdpplus_outbox_operator_depth{operator="op-live"}"#),
        Some(0),
        "{m}"
    );
    assert_eq!(metric(&m, "smdpplus_outbox_depth"), Some(24), "{m}");
    assert!(
        metric(
            &m,
            r#"smdpplus_outbox_oldest_item_age_seconds{operator="dev-operator"}"#
        )
        .is_some_and(|age| (0..120).contains(&age)),
        "{m}"
    );
    // The held items are still listed for the operator.
    let (_, v) = held_op.admin(Method::GET, "outbox", None).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(4), "{v}");
}
