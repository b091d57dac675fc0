//! The scheduled release of a delayed download ([MP-Callbacks]): smdpplus
//! releases the profile itself at the release time, the schedule survives
//! a kill -9 and a restart, withdrawing the offer (notifyOperationCancel)
//! cancels it, and a release that can no longer be done is dropped with
//! its reason.

use crate::common;

use crate::common::mobileplans::owner_call;
use crate::common::{Operator, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CONFIG: &str = "expiry_sweep_secs = 1\n";
/// Releases are scheduled an hour ahead; the tests move the server's clock
/// past them instead of waiting.
const HOUR: i64 = 3600;

async fn checkout_delayed(op: &Operator, txid: &str, release_at: i64) -> String {
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(json!({
                "transactionId": txid,
                "kind": "profile",
                "eid": EID,
                "profileType": "demo",
                "planName": "Later plan",
                "releaseAt": smdpplus::time::datetime(release_at),
            })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["profileState"], "Confirmed", "{v}");
    v["decision"]["iccid"].as_str().expect("iccid").to_owned()
}

async fn last_event(op: &Operator, iccid: &str) -> Value {
    op.show(iccid).await["history"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .expect("history")
}

async fn decision(server: &Server, op: &Operator, txid: &str) -> Value {
    let (s, v) = owner_call(
        server,
        op,
        Method::GET,
        &format!("/mobileplans/v1/callback?transactionId={txid}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn the_profile_is_released_at_the_scheduled_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    let iccid = checkout_delayed(&op, "sched-1", smdpplus::time::now() + HOUR).await;
    let d = decision(&server, &op, "sched-1").await;
    assert_eq!(d["callback"]["name"], "delayedProfileDownload");
    assert_eq!(d["callback"]["arguments"][2], 60, "{d}");
    server.advance_clock(HOUR - 60).await;
    assert_eq!(op.state(&iccid).await, "Confirmed", "not a minute early");
    server.advance_clock(61).await;
    op.wait_for_state(&iccid, "Released", Duration::from_secs(10))
        .await;
    let e = last_event(&op, &iccid).await;
    assert_eq!(e["event"], "releaseProfile");
    assert_eq!(e["caller"], "smdpplus");
    let d = decision(&server, &op, "sched-1").await;
    assert_eq!(d["callback"]["name"], "inlineProfileDownload");
    assert!(d["releasedAt"].is_string(), "{d}");
    assert!(server.log().contains("scheduled release: profile released"));
}

#[tokio::test]
async fn the_schedule_survives_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    let iccid = checkout_delayed(&op, "sched-restart", smdpplus::time::now() + HOUR).await;
    server.kill9();
    // The restarted server's clock starts from the wall time again: it
    // passes the release time with the schedule read back from the store.
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    assert_eq!(op.state(&iccid).await, "Confirmed");
    server.advance_clock(HOUR + 1).await;
    op.wait_for_state(&iccid, "Released", Duration::from_secs(10))
        .await;
    assert_eq!(last_event(&op, &iccid).await["caller"], "smdpplus");
    let d = decision(&server, &op, "sched-restart").await;
    assert_eq!(d["callback"]["name"], "inlineProfileDownload");
}

#[tokio::test]
async fn withdrawing_the_offer_cancels_the_scheduled_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    let iccid = checkout_delayed(&op, "withdraw-1", smdpplus::time::now() + HOUR).await;
    let (s, d) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/withdraw?transactionId=withdraw-1",
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "withdrawn");
    assert_eq!(d["callback"]["name"], "operationCancel");
    assert_eq!(
        d["callback"]["js"],
        "MobilePlansInlineOperations.notifyOperationCancel(operationContext);"
    );
    assert_eq!(op.state(&iccid).await, "Available");
    // The release time passes: nothing is released.
    // (The sweeper, woken by the advance, has had its turn.)
    let offset = server.advance_clock(HOUR + 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(op.state(&iccid).await, "Available");
    let history = op.show(&iccid).await["history"].clone();
    assert!(!history.to_string().contains("releaseProfile"), "{history}");
    // Repeating it answers the same.
    let (s, d) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/withdraw?transactionId=withdraw-1",
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        decision(&server, &op, "withdraw-1").await["rule"],
        "withdrawn"
    );

    // After the release it is too late: the app has shown its toast.
    let release_at = smdpplus::time::now() + offset + HOUR;
    let iccid = checkout_delayed(&op, "withdraw-late", release_at).await;
    server.advance_clock(HOUR + 1).await;
    op.wait_for_state(&iccid, "Released", Duration::from_secs(10))
        .await;
    let (s, v) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/withdraw?transactionId=withdraw-late",
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["decision"]["callback"]["name"], "inlineProfileDownload");
    assert_eq!(op.state(&iccid).await, "Released");
}

#[tokio::test]
async fn a_release_that_can_no_longer_be_done_leaves_the_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(CONFIG));
    let op = server.operator();
    let iccid = checkout_delayed(&op, "gone-1", smdpplus::time::now() + HOUR).await;
    let matching = op.show(&iccid).await["profile"]["matchingId"].clone();
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "matchingId": matching, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(common::status(&v), "Executed-Success", "{v}");
    server.advance_clock(HOUR + 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("scheduled release refused") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(op.state(&iccid).await, "Available");
    let d = decision(&server, &op, "gone-1").await;
    assert_eq!(d["rule"], "orderGone");
    assert_eq!(d["callback"]["name"], "cancelledPurchase");
}
