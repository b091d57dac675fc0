//! Anonymous portal purchases cannot drain the pool, against the real
//! binary over real TLS: a portal order holds its profile only until its
//! confirmation (payment) or the end of its hold, after which the profile
//! is back in Available with its history and the operator notified, after
//! a kill -9 too; purchases are rate-limited per client address and per
//! EID, and the open portal orders of an EID are capped.

use crate::common;

use crate::common::mobileplans::{csrf_of, portal_buy, post_form, refused_count, set_cookies};
use crate::common::{Receiver, Server, EID, EID2};
use hyper::Method;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The portal hold of the tests that let it end: the tests move the
/// server's clock past it.
const HOLD_SECS: i64 = 1800;

/// Limits out of the way of the test at hand.
const NO_LIMITS: &str = "purchase_rate_per_ip = { per_minute = 6000, burst = 1000 }\npurchase_rate_per_eid = { per_minute = 6000, burst = 1000 }\nmax_open_orders_per_eid = 0\n";

fn eid(n: u32) -> String {
    format!("890490321234512345123456{n:08}")
}

async fn order(op: &common::Operator, txid: &str) -> Value {
    let (s, v) = op
        .admin(Method::GET, &format!("mobileplans/orders/{txid}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["decision"].clone()
}

async fn counter(server: &Server, name: &str) -> u64 {
    let (_, m) = server.ops_get("/metrics").await;
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_unconfirmed_portal_order_returns_its_profile_after_the_hold_even_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start(dir.path(), 0).await;
    let config = receiver.config(&format!(
        "expiry_sweep_secs = 1\n[mobile_plans]\nhold_secs = {HOLD_SECS}\n{NO_LIMITS}"
    ));
    let mut server = Server::start(dir.path(), Some(&config));
    let op = server.operator();
    let (s, page, _) = portal_buy(&server, "hold-1", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("data-step=\"payment\""), "{page}");
    assert!(page.contains("id=\"pay\""), "{page}");
    let d = order(&op, "hold-1").await;
    assert_eq!(d["rule"], "awaitingConfirmation", "{d}");
    assert!(d["callback"].is_null());
    assert!(d["holdUntil"].is_string(), "{d}");
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    assert_eq!(
        op.state(&iccid).await,
        "Confirmed",
        "reserved, not released"
    );

    // kill -9 before the hold ends: the hold is in the store.
    server.kill9();
    let server = Server::start(dir.path(), Some(&config));
    let op = server.operator();
    assert_eq!(
        op.state(&iccid).await,
        "Confirmed",
        "held after the restart"
    );
    server.advance_clock(HOLD_SECS + 1).await;
    op.wait_for_state(&iccid, "Available", Duration::from_secs(15))
        .await;
    let history = op.show(&iccid).await["history"].clone();
    let last = history
        .as_array()
        .and_then(|h| h.last())
        .expect("history")
        .clone();
    assert_eq!(last["event"], "cancelOrder", "{history}");
    assert_eq!(last["from"], "Confirmed");
    assert_eq!(last["to"], "Available");
    assert_eq!(last["caller"], "smdpplus");
    let d = order(&op, "hold-1").await;
    assert_eq!(d["status"], "lapsed", "{d}");
    assert_eq!(d["rule"], "holdLapsed");
    assert_eq!(d["callback"]["name"], "cancelledPurchase");
    assert_eq!(
        counter(&server, "smdpplus_mobileplans_holds_lapsed_total").await,
        1
    );
    assert!(server.log().contains("portal order not confirmed in time"));
    // The operator hears of it: handleDownloadProgressInfo, cancelled.
    let mut cancelled = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while cancelled.is_none() && Instant::now() < deadline {
        if let Some(n) = receiver.next(Duration::from_secs(5)).await {
            if n["iccid"] == iccid.as_str() && n["notificationPointId"] == 100 {
                cancelled = Some(n);
            }
        }
    }
    let n = cancelled.expect("a cancellation notification for the lapsed order");
    assert_eq!(n["eid"], EID, "{n}");
    // Too late to pay now.
    let (s, v) = op
        .admin(Method::POST, "mobileplans/orders/hold-1/confirm", None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(op.state(&iccid).await, "Available");
}

#[tokio::test]
async fn the_operator_confirms_after_its_payment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "order_ttl_secs = 3600\n[[operators]]\nid = \"dev-operator\"\n[[operators]]\nid = \"op-b\"\n[mobile_plans]\nconfirmation = \"operator\"\n{NO_LIMITS}"
    );
    let server = Server::start(dir.path(), Some(&config));
    let op = server.operator();
    let (s, page, cookies) = portal_buy(&server, "op-pay-1", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("id=\"refresh\""), "{page}");
    assert!(!page.contains("id=\"pay\""), "{page}");
    let iccid = order(&op, "op-pay-1").await["iccid"]
        .as_str()
        .expect("iccid")
        .to_owned();
    // The portal's own step does not confirm in this mode.
    let form = format!(
        "transactionId=op-pay-1&eid={EID}&csrf={}",
        csrf_of(&cookies)
    );
    let (s, _, page) = post_form(&server, "/portal/confirm", &cookies, &form).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("data-step=\"payment\""), "{page}");
    assert_eq!(op.state(&iccid).await, "Confirmed");
    // Another operator cannot confirm it.
    let (s, _) = other_operator(&server)
        .admin(Method::POST, "mobileplans/orders/op-pay-1/confirm", None)
        .await;
    assert_eq!(s, 404);
    assert_eq!(op.state(&iccid).await, "Confirmed");
    // The operator can, after its payment: released, with the normal time
    // to live from now.
    let before = smdpplus::time::now();
    let (s, v) = op
        .admin(Method::POST, "mobileplans/orders/op-pay-1/confirm", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["profileState"], "Released");
    assert_eq!(v["decision"]["rule"], "releasedRegistrationNow");
    let shown = op.show(&iccid).await;
    let last = shown["history"]
        .as_array()
        .and_then(|h| h.last())
        .expect("history")
        .clone();
    assert_eq!(last["event"], "releaseProfile");
    assert_eq!(last["caller"], "dev-operator");
    let expires = shown["profile"]["expiresAt"]
        .as_str()
        .and_then(smdpplus::time::parse_datetime)
        .expect("expiresAt");
    assert!(expires >= before + 3600, "{shown}");
    // Repeating it answers the same; the page now sends the code.
    let (s, _) = op
        .admin(Method::POST, "mobileplans/orders/op-pay-1/confirm", None)
        .await;
    assert_eq!(s, 200);
    let (s, _, page) = post_form(&server, "/portal/confirm", &cookies, &form).await;
    assert_eq!(s, 200);
    let matching = shown["profile"]["matchingId"].as_str().expect("matchingId");
    assert!(page.contains(matching), "{page}");
}

fn other_operator(server: &Server) -> common::Operator {
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
        .push(rcgen::DnType::CommonName, "op-b");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (c, k) = (server.dir.join("op-b.crt"), server.dir.join("op-b.key"));
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    common::Operator::new(server.es2, &c, &k, &server.pki().ci_cert)
}

#[tokio::test]
async fn thirty_anonymous_purchases_from_one_address_reserve_at_most_the_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The defaults: 10 a minute per address, burst 5.
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let mut ok = 0;
    let mut limited = 0;
    for n in 0..30 {
        let (s, page, _) = portal_buy(&server, &format!("drain-{n}"), &eid(n), "demo-1gb").await;
        match s {
            200 => ok += 1,
            429 => {
                assert!(page.contains("data-step=\"limited\""), "{page}");
                limited += 1;
            }
            other => panic!("{other}: {page}"),
        }
    }
    assert_eq!(ok, 5, "the burst");
    assert_eq!(limited, 25);
    let (_, v) = op
        .admin(Method::GET, "profiles?state=Confirmed", None)
        .await;
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(5), "{v}");
    assert_eq!(refused_count(&server, "rate_limit_ip").await, 25);
    assert!(server.log().contains("rate_limit_ip"));
}

#[tokio::test]
async fn purchases_per_eid_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        Some(
            "[mobile_plans]\npurchase_rate_per_ip = { per_minute = 6000, burst = 1000 }\npurchase_rate_per_eid = { per_minute = 1, burst = 2 }\nmax_open_orders_per_eid = 0\n",
        ),
    );
    for txid in ["rate-1", "rate-2"] {
        let (s, page, _) = portal_buy(&server, txid, EID2, "demo-1gb").await;
        assert_eq!(s, 200, "{page}");
    }
    // The third within the minute: 429 with Retry-After, no order.
    let token = common::mobileplans::csrf(&server, "rate-3", EID2).await;
    let (s, h, page) = post_form(
        &server,
        "/portal/purchase",
        &format!("__Host-mpcsrf={token}"),
        &format!("transactionId=rate-3&eid={EID2}&choice=demo-1gb&account=new&csrf={token}"),
    )
    .await;
    assert_eq!(s, 429, "{page}");
    assert!(page.contains("Too many purchases"), "{page}");
    let wait: u64 = h
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(set_cookies(&h)
        .iter()
        .all(|(n, _, _)| !n.starts_with("__Host-mpcap-")));
    assert_eq!(refused_count(&server, "rate_limit_eid").await, 1);
    let (s, _) = server
        .operator()
        .admin(Method::GET, "mobileplans/orders/rate-3", None)
        .await;
    assert_eq!(s, 404);
    // Another EID has its own bucket.
    let (s, page, _) = portal_buy(&server, "rate-4", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
}

#[tokio::test]
async fn the_open_portal_orders_of_an_eid_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        Some(
            "[mobile_plans]\npurchase_rate_per_ip = { per_minute = 6000, burst = 1000 }\npurchase_rate_per_eid = { per_minute = 6000, burst = 1000 }\nmax_open_orders_per_eid = 1\n",
        ),
    );
    let op = server.operator();
    // One held order, then a clear refusal.
    let (s, page, cookies) = portal_buy(&server, "open-1", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
    let (s, page, _) = portal_buy(&server, "open-2", EID, "demo-1gb").await;
    assert_eq!(s, 409, "{page}");
    assert!(page.contains("data-step=\"limited\""), "{page}");
    assert!(page.contains("waiting to be completed"), "{page}");
    assert_eq!(refused_count(&server, "open_orders_eid").await, 1);
    let (s, v) = op
        .admin(Method::GET, "mobileplans/orders/open-2", None)
        .await;
    assert_eq!(s, 404, "no order: {v}");
    // Paid and released (not yet downloaded), it still counts.
    let form = format!("transactionId=open-1&eid={EID}&csrf={}", csrf_of(&cookies));
    let (s, _, page) = post_form(&server, "/portal/confirm", &cookies, &form).await;
    assert_eq!(s, 200, "{page}");
    let (s, _, _) = portal_buy(&server, "open-3", EID, "demo-1gb").await;
    assert_eq!(s, 409);
    // Cancelled, it no longer counts.
    let (s, _, v) = common::mobileplans::web_with(
        &server,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=open-1",
        &[("cookie", &cookies)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, page, _) = portal_buy(&server, "open-4", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
}

#[tokio::test]
async fn a_hold_released_through_es2_is_taken_as_confirmed_not_taken_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        Some(&format!(
            "expiry_sweep_secs = 1\n[mobile_plans]\nhold_secs = {HOLD_SECS}\n{NO_LIMITS}"
        )),
    );
    let op = server.operator();
    let (s, page, _) = portal_buy(&server, "es2-rel", EID, "demo-1gb").await;
    assert_eq!(s, 200, "{page}");
    let iccid = order(&op, "es2-rel").await["iccid"]
        .as_str()
        .expect("iccid")
        .to_owned();
    let (_, v) = op
        .call("releaseProfile", serde_json::json!({"iccid": iccid}))
        .await;
    assert_eq!(common::status(&v), "Executed-Success", "{v}");
    server.advance_clock(HOLD_SECS + 1).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = order(&op, "es2-rel").await;
        if d["confirmedAt"].is_string() {
            assert_eq!(d["status"], "open", "{d}");
            assert_eq!(d["rule"], "releasedRegistrationNow", "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(op.state(&iccid).await, "Released");
    assert_eq!(
        counter(&server, "smdpplus_mobileplans_holds_lapsed_total").await,
        0
    );
}
