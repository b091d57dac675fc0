//! The Mobile Plans callback decision API ([MP-Callbacks]) against the real
//! binary: orders placed through the operator API (the portal's checkout
//! in-process), then `GET /mobileplans/v1/callback` on the operator-web
//! listener over real TLS, for every rule of the decision table; the
//! cancel and withdraw actions and their effect at the SM-DP+; bad input.
//! The callback names and arguments are those of [MP-Callbacks].

use crate::common;

use crate::common::mobileplans::owner_call;
use crate::common::{iccids, Operator, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::euicc::lpa::Lpa;
use smdpplus::euicc::SoftEuicc;

async fn checkout(op: &Operator, body: Value) -> Value {
    let (s, v) = op
        .admin(Method::POST, "mobileplans/orders", Some(body))
        .await;
    assert_eq!(s, 200, "checkout: {v}");
    v["decision"].clone()
}

/// The decision for a transactionId, as the page that owns the order sees
/// it; by `iccid=` or `eid=`, as the operator's admin API gives it.
async fn decision(server: &Server, op: &Operator, query: &str) -> (u16, Value) {
    if query.starts_with("iccid=") || query.starts_with("eid=") {
        let (s, v) = op
            .admin(Method::GET, &format!("mobileplans/orders?{query}"), None)
            .await;
        return (s, v["decision"].clone());
    }
    owner_call(
        server,
        op,
        Method::GET,
        &format!("/mobileplans/v1/callback?{query}"),
    )
    .await
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn refused_reason(d: &Value, name: &str) -> String {
    d["refused"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name))
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("{name} is not refused: {d}"))
}

/// Every callback appears once: the one to send now, the others allowed,
/// the refused ones each with a reason.
fn assert_complete(d: &Value) {
    let mut all = names(&d["alsoAllowed"]);
    all.extend(names(&d["refused"]));
    if !d["callback"].is_null() {
        all.push(d["callback"]["name"].as_str().unwrap_or_default().into());
    }
    all.sort();
    let mut want = vec![
        "balanceAddition",
        "cancelledPurchase",
        "delayedProfileDownload",
        "inlineProfileDownload",
        "operationCancel",
        "purchaseWithProfileDownload",
    ];
    want.sort();
    assert_eq!(all, want, "{d}");
    for r in d["refused"].as_array().expect("refused") {
        assert!(!r["reason"].as_str().unwrap_or_default().is_empty(), "{r}");
        assert!(r["object"].is_string() && r["method"].is_string(), "{r}");
    }
}

fn profile_order(txid: &str) -> Value {
    json!({
        "transactionId": txid,
        "kind": "profile",
        "eid": EID,
        "profileType": "demo",
        "planName": "2GB Monthly",
        "dataInMB": 2048,
        "validForSecs": 30 * 86400,
    })
}

#[tokio::test]
async fn released_with_registration_now_is_the_inline_download() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let d = checkout(&op, profile_order("inline-1")).await;
    assert_eq!(d["profileState"], "Released", "{d}");
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let matching = op.show(&iccid).await["profile"]["matchingId"]
        .as_str()
        .expect("matchingId")
        .to_owned();

    let (s, d) = decision(&server, &op, "transactionId=inline-1").await;
    assert_eq!(s, 200, "{d}");
    assert_complete(&d);
    assert_eq!(d["rule"], "releasedRegistrationNow");
    let cb = &d["callback"];
    assert_eq!(cb["name"], "inlineProfileDownload");
    assert_eq!(cb["object"], "MobilePlansInlineOperations");
    assert_eq!(cb["method"], "notifyProfileDownload");
    assert_eq!(
        cb["argumentNames"],
        json!(["purchaseMetaData", "activationCode"])
    );
    // Exactly 1$<SM-DP+ address>$<matchingId>: no LPA: prefix, no
    // confirmation code.
    let code = format!("1$localhost${matching}");
    assert_eq!(cb["arguments"][1], code.as_str());
    assert_eq!(
        cb["arguments"][0],
        json!({"userAccount": "new", "purchaseInstrument": "new", "line": "new", "lineType": "new",
               "moDirectStatus": "complete", "modirectStatus": "complete", "planName": "2GB Monthly"})
    );
    let js = cb["js"].as_str().expect("js");
    assert!(js.contains("purchaseMetaData.lineType = MobilePlansLineType.new;"));
    assert!(js.ends_with(&format!(
        "MobilePlansInlineOperations.notifyProfileDownload(purchaseMetaData, \"{code}\");"
    )));
    assert!(cb["action"].is_null());
    // Cancel stays possible before download, after the cancel action.
    assert_eq!(names(&d["alsoAllowed"]), vec!["cancelledPurchase"]);
    assert_eq!(
        d["alsoAllowed"][0]["action"],
        json!({"method": "POST", "path": "/mobileplans/v1/cancel?transactionId=inline-1"})
    );
    assert!(refused_reason(&d, "delayedProfileDownload").contains("already released"));
    assert!(refused_reason(&d, "purchaseWithProfileDownload").contains("now"));

    // The same order by ICCID and by EID; every decision logged with the
    // transactionId.
    for q in [format!("iccid={iccid}"), format!("eid={EID}")] {
        let (s, by) = decision(&server, &op, &q).await;
        assert_eq!(s, 200);
        assert_eq!(by["orderId"], d["orderId"]);
        assert_eq!(by["transactionId"], "inline-1");
    }
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Mobile Plans callback decision")
                && l.contains("inline-1")
                && l.contains("inlineProfileDownload")),
        "{log}"
    );
}

#[tokio::test]
async fn released_with_registration_later_is_async_with_the_interval_rounded_to_15() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    for (txid, asked, sent) in [
        ("async-5", 5, 15),
        ("async-22", 22, 15),
        ("async-23", 23, 30),
    ] {
        let mut body = profile_order(txid);
        body["networkRegistration"] = json!("later");
        body["networkRegistrationInterval"] = json!(asked);
        checkout(&op, body).await;
        let (s, d) = decision(&server, &op, &format!("transactionId={txid}")).await;
        assert_eq!(s, 200);
        assert_complete(&d);
        assert_eq!(d["rule"], "releasedRegistrationLater");
        let cb = &d["callback"];
        assert_eq!(cb["name"], "purchaseWithProfileDownload");
        assert_eq!(cb["object"], "MobilePlans");
        assert_eq!(cb["method"], "notifyPurchaseWithProfileDownload");
        assert_eq!(
            cb["argumentNames"],
            json!(["metadata", "activationCode", "networkRegistrationInterval"])
        );
        assert_eq!(cb["arguments"][2], sent, "{asked} minutes");
        assert!(cb["arguments"][1]
            .as_str()
            .expect("code")
            .starts_with("1$localhost$"));
        assert!(cb["js"]
            .as_str()
            .expect("js")
            .contains("metadata.moDirectStatus = MobilePlansMoDirectStatus.complete;"));
        assert!(refused_reason(&d, "inlineProfileDownload").contains("later"));
    }
}

#[tokio::test]
async fn confirmed_with_a_future_release_is_the_delayed_download() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let mut body = profile_order("delayed-1");
    let at = smdpplus::time::now() + 3600 - 20;
    body["releaseAt"] = json!(smdpplus::time::datetime(at));
    let d = checkout(&op, body).await;
    assert_eq!(d["profileState"], "Confirmed", "{d}");
    let (_, d) = decision(&server, &op, "transactionId=delayed-1").await;
    assert_complete(&d);
    assert_eq!(d["rule"], "confirmedReleaseScheduled");
    let cb = &d["callback"];
    assert_eq!(cb["name"], "delayedProfileDownload");
    assert_eq!(cb["method"], "notifyProfileDownload");
    assert_eq!(
        cb["argumentNames"],
        json!(["purchaseMetaData", "activationCode", "downloadDelay"])
    );
    assert_eq!(cb["arguments"][2], 60);
    assert!(cb["js"]
        .as_str()
        .expect("js")
        .contains("var operationContext = MobilePlansInlineOperations.notifyProfileDownload("));
    assert_eq!(
        names(&d["alsoAllowed"]),
        vec!["cancelledPurchase", "operationCancel"]
    );
    assert_eq!(
        d["alsoAllowed"][1]["action"]["path"],
        "/mobileplans/v1/withdraw?transactionId=delayed-1"
    );
    assert!(refused_reason(&d, "inlineProfileDownload").contains("not released until"));
    assert_eq!(d["releaseAt"], smdpplus::time::datetime(at));
    // The order lives its time to live from the release, not the checkout.
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let expires = op.show(&iccid).await["profile"]["expiresAt"]
        .as_str()
        .and_then(smdpplus::time::parse_datetime)
        .expect("expiresAt");
    assert_eq!(expires, at + 7 * 24 * 3600);
}

#[tokio::test]
async fn cancel_before_download_returns_the_profile_to_available() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    // Released, and Confirmed with a scheduled release.
    let mut delayed = profile_order("cancel-delayed");
    delayed["releaseAt"] = json!(smdpplus::time::datetime(smdpplus::time::now() + 7200));
    for (txid, body) in [
        ("cancel-released", profile_order("cancel-released")),
        ("cancel-delayed", delayed),
    ] {
        let d = checkout(&op, body).await;
        let iccid = d["iccid"].as_str().expect("iccid").to_owned();
        let (s, d) = owner_call(
            &server,
            &op,
            Method::POST,
            &format!("/mobileplans/v1/cancel?transactionId={txid}"),
        )
        .await;
        assert_eq!(s, 200, "{d}");
        assert_complete(&d);
        assert_eq!(d["status"], "cancelled");
        assert_eq!(d["profileState"], "Available");
        let cb = &d["callback"];
        assert_eq!(cb["name"], "cancelledPurchase");
        assert_eq!(cb["object"], "MobilePlans");
        assert_eq!(cb["method"], "notifyCancelledPurchase");
        assert_eq!(cb["arguments"][0]["moDirectStatus"], "cancelled");
        assert_eq!(cb["arguments"][0]["line"], "bailed");
        assert_eq!(cb["arguments"][0]["planName"], "");
        assert_eq!(op.state(&iccid).await, "Available");
        let history = op.show(&iccid).await["history"].clone();
        let last = history.as_array().and_then(|h| h.last()).expect("history");
        assert_eq!(last["event"], "cancelOrder");
        assert_eq!(last["caller"], "mobileplans");
        // Repeating it answers the same; the decision now says cancelled.
        let (s, again) = owner_call(
            &server,
            &op,
            Method::POST,
            &format!("/mobileplans/v1/cancel?transactionId={txid}"),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(again["callback"]["name"], "cancelledPurchase");
        let (_, d) = decision(&server, &op, &format!("transactionId={txid}")).await;
        assert_eq!(d["rule"], "cancelled");
        assert_eq!(d["callback"]["name"], "cancelledPurchase");
    }
    // The withdrawn scheduled release never happens (checked below with
    // a short schedule in mobileplans_release.rs).
}

#[tokio::test]
async fn error_allows_only_cancel_with_the_error_attached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some("expiry_sweep_secs = 1\n"));
    let op = server.operator();
    let d = checkout(&op, profile_order("err-1")).await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    // Expire the order: the sweeper puts it in Error.
    let (s, v) = op
        .admin(
            Method::PUT,
            &format!("profiles/{iccid}/expiry"),
            Some(json!({"expiresAt": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while op.state(&iccid).await != "Error" {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, d) = decision(&server, &op, "transactionId=err-1").await;
    assert_complete(&d);
    assert_eq!(d["rule"], "error");
    assert_eq!(d["error"], "order expired");
    assert_eq!(d["callback"]["name"], "cancelledPurchase");
    assert_eq!(
        d["callback"]["arguments"][0]["moDirectStatus"],
        "serviceError"
    );
    assert_eq!(
        d["callback"]["action"]["path"],
        "/mobileplans/v1/cancel?transactionId=err-1"
    );
    assert!(d["alsoAllowed"].as_array().expect("also").is_empty());
    assert_eq!(d["refused"].as_array().expect("refused").len(), 5);
    assert!(refused_reason(&d, "inlineProfileDownload").contains("only cancel"));
    let (s, d) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=err-1",
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(op.state(&iccid).await, "Available");
}

#[tokio::test]
async fn installed_gets_no_download_callback_and_its_balance_additions_name_the_iccid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let d = checkout(&op, profile_order("full-1")).await;
    let code = d["callback"]["arguments"][1]
        .as_str()
        .expect("activation code")
        .to_owned();
    // The software eUICC (the SGP.26 test eUICC, whose EID the order is
    // bound to) downloads with the activation code the portal handed out.
    let parts: Vec<&str> = code.split('$').collect();
    assert_eq!(parts.len(), 3, "{code}");
    assert_eq!(parts[0], "1");
    let lpa = Lpa::new(
        &format!("{}:{}", parts[1], server.es9.port()),
        Lpa::sgp26_roots(),
        false,
    )
    .expect("lpa");
    let mut card = SoftEuicc::sgp26_nist().expect("eUICC");
    let report = lpa
        .download(&mut card, Some(parts[2]), None, &mut |_| {})
        .await
        .expect("download");
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    assert_eq!(report.installed.iccid.as_str(), iccid);

    let (_, d) = decision(&server, &op, "transactionId=full-1").await;
    assert_complete(&d);
    assert_eq!(d["profileState"], "Installed");
    assert_eq!(d["rule"], "downloaded");
    assert!(d["callback"].is_null());
    assert!(d["alsoAllowed"].as_array().expect("also").is_empty());
    assert!(refused_reason(&d, "inlineProfileDownload").contains("Installed"));
    assert!(refused_reason(&d, "cancelledPurchase").contains("8.2.1/3.3"));
    // Cancelling after download is refused, with the decision attached.
    let (s, v) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=full-1",
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["decision"]["rule"], "downloaded");
    assert_eq!(op.state(&iccid).await, "Installed");

    // Top-up of the installed eSIM: notifyBalanceAddition with the ICCID.
    let d = checkout(
        &op,
        json!({"transactionId": "topup-esim", "kind": "balance", "eid": EID, "iccid": iccid,
               "planName": "1GB top-up", "dataInMB": 1024, "validForSecs": 86400}),
    )
    .await;
    assert_complete(&d);
    assert_eq!(d["rule"], "balanceAddition");
    let cb = &d["callback"];
    assert_eq!(cb["name"], "balanceAddition");
    assert_eq!(cb["object"], "MobilePlansInlineOperations");
    assert_eq!(cb["method"], "notifyBalanceAddition");
    assert_eq!(cb["argumentNames"], json!(["purchaseMetaData", "iccid"]));
    assert_eq!(cb["arguments"][1], iccid.as_str());
    assert_eq!(cb["arguments"][0]["userAccount"], "existing");
    assert_eq!(cb["arguments"][0]["planName"], "1GB top-up");
    // The line's latest order is now the top-up.
    let (_, by) = decision(&server, &op, &format!("iccid={iccid}")).await;
    assert_eq!(by["transactionId"], "topup-esim");
}

#[tokio::test]
async fn physical_sim_balance_addition_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let psim = iccids(71, 1).remove(0);
    let d = checkout(
        &op,
        json!({"transactionId": "waoigFfX00yGH3Vb.1", "kind": "balance", "iccid": psim,
               "planName": "Day pass", "dataInMB": 500, "validForSecs": 86400,
               "userAccount": "New", "line": "new"}),
    )
    .await;
    assert_complete(&d);
    assert_eq!(d["eid"], Value::Null);
    let cb = &d["callback"];
    assert_eq!(cb["name"], "balanceAddition");
    assert_eq!(cb["argumentNames"], json!(["purchaseMetaData"]));
    assert_eq!(cb["arguments"].as_array().expect("args").len(), 1);
    assert_eq!(cb["arguments"][0]["userAccount"], "new");
    assert!(cb["js"]
        .as_str()
        .expect("js")
        .ends_with("MobilePlansInlineOperations.notifyBalanceAddition(purchaseMetaData);"));
    assert!(refused_reason(&d, "inlineProfileDownload").contains("adds balance"));
    assert!(refused_reason(&d, "cancelledPurchase").contains("credited"));
    // Cancel and withdraw are refused for it.
    for action in ["cancel", "withdraw"] {
        let (s, v) = owner_call(
            &server,
            &op,
            Method::POST,
            &format!("/mobileplans/v1/{action}?transactionId=waoigFfX00yGH3Vb.1"),
        )
        .await;
        assert_eq!(s, 409, "{action}: {v}");
        assert_eq!(v["decision"]["callback"]["name"], "balanceAddition");
    }
    // A top-up of an eSIM profile that is not installed is refused.
    let released = checkout(&op, profile_order("not-installed")).await;
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(json!({"transactionId": "topup-early", "kind": "balance", "eid": EID,
                        "iccid": released["iccid"], "planName": "x", "dataInMB": 1, "validForSecs": 60})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test]
async fn cancelled_through_es2_outside_the_portal_means_cancelled_purchase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let d = checkout(&op, profile_order("es2-cancel")).await;
    let iccid = d["iccid"].as_str().expect("iccid").to_owned();
    let matching = op.show(&iccid).await["profile"]["matchingId"].clone();
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "matchingId": matching, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_eq!(common::status(&v), "Executed-Success", "{v}");
    let (_, d) = decision(&server, &op, "transactionId=es2-cancel").await;
    assert_complete(&d);
    assert_eq!(d["rule"], "orderGone");
    assert_eq!(d["callback"]["name"], "cancelledPurchase");
    // The portal's cancel then just records it.
    let (s, d) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=es2-cancel",
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "cancelled");
}

#[tokio::test]
async fn checkout_is_idempotent_per_transaction_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    // The transactionId of the docs' example, sent URL-encoded.
    let txid = "/7RBTuSJt02OZbX8.4";
    let (s, first) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(profile_order(txid)),
        )
        .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["created"], true);
    let (s, again) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(profile_order(txid)),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["decision"]["iccid"], first["decision"]["iccid"]);
    let (s, d) = decision(&server, &op, "transactionId=%2F7RBTuSJt02OZbX8.4").await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["transactionId"], txid);
    assert_eq!(
        d["alsoAllowed"][0]["action"]["path"],
        "/mobileplans/v1/cancel?transactionId=%2F7RBTuSJt02OZbX8.4"
    );
    let (s, v) = op
        .admin(Method::GET, "mobileplans/orders/%2F7RBTuSJt02OZbX8.4", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["orderId"], d["orderId"]);
    // Another kind under the same transactionId is a conflict.
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(
                json!({"transactionId": txid, "kind": "balance", "iccid": iccids(72, 1)[0],
                        "planName": "x", "dataInMB": 1, "validForSecs": 60}),
            ),
        )
        .await;
    assert_eq!(s, 409, "{v}");
}

#[tokio::test]
async fn bad_requests_name_the_parameter_and_never_500() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let long = "x".repeat(65);
    for (query, parameter) in [
        ("", "transactionId"),
        ("market=US", "transactionId"),
        (&format!("transactionId={long}"), "transactionId"),
        ("transactionId=%zz", "transactionId"),
        ("transactionId=", "transactionId"),
    ] {
        let (s, v) = decision(&server, &op, query).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["parameter"], parameter, "{query}: {v}");
    }
    let (s, _) = decision(&server, &op, "transactionId=unknown").await;
    assert_eq!(s, 404);
    // Lookups by line or eUICC are the operator's: 400 on bad input there,
    // 404 for no order; on the public listener they do not exist.
    for (query, status) in [
        ("iccid=123", 400),
        ("eid=8904903212345123451234567890123X", 400),
        ("iccid=8999900000000000006", 404),
        ("transactionId=a&iccid=8999900000000000006", 400),
    ] {
        let (s, v) = decision(&server, &op, query).await;
        if !query.starts_with("transactionId") {
            assert_eq!(s, status, "{query}: {v}");
        }
        let (s, v) = server
            .web_call(Method::GET, &format!("/mobileplans/v1/callback?{query}"))
            .await;
        assert_eq!(s, 404, "{query}: {v}");
    }
    let (s, _) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/callback?transactionId=a",
    )
    .await;
    assert_eq!(s, 405);
    let (s, _) = server
        .web_call(Method::GET, "/mobileplans/v1/cancel?transactionId=a")
        .await;
    assert_eq!(s, 405);
    let (s, _) = server.web_call(Method::GET, "/nothing").await;
    assert_eq!(s, 404);
    let (s, v) = owner_call(&server, &op, Method::POST, "/mobileplans/v1/withdraw").await;
    assert_eq!((s, v["parameter"].as_str()), (400, Some("transactionId")));
    let (s, _) = owner_call(
        &server,
        &op,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=nope",
    )
    .await;
    assert_eq!(s, 404);
    // Checkout input.
    for (body, parameter) in [
        (json!({"kind": "profile"}), "transactionId"),
        (json!({"transactionId": "t", "kind": "x"}), "kind"),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "p", "profileType": "demo"}),
            "eid",
        ),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "p", "eid": EID}),
            "profileType",
        ),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "p", "eid": EID, "profileType": "demo",
                "networkRegistration": "later"}),
            "networkRegistrationInterval",
        ),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "p", "eid": EID, "profileType": "demo",
                "releaseAt": "tomorrow"}),
            "releaseAt",
        ),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "p", "eid": EID, "profileType": "demo",
                "dataInMB": -1, "validForSecs": 60}),
            "dataInMB",
        ),
        (
            json!({"transactionId": "t", "kind": "balance", "planName": "p", "iccid": "8999900000000000005",
                "dataInMB": 1, "validForSecs": 60}),
            "iccid",
        ),
        (
            json!({"transactionId": "t", "kind": "balance", "planName": "p", "iccid": iccids(73, 1)[0]}),
            "dataInMB",
        ),
        (
            json!({"transactionId": "t", "kind": "profile", "planName": "", "eid": EID, "profileType": "demo"}),
            "planName",
        ),
    ] {
        let (s, v) = op
            .admin(Method::POST, "mobileplans/orders", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["parameter"], parameter, "{body}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    assert!(!server.log().contains("internal error"));
}
