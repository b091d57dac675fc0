//! One span per request in the real server's log (`--log-format json`):
//! the request id comes back in `x-request-id`, and every line of a
//! request carries the protocol identifiers it names, so that one
//! transactionId finds the four ES9+ calls of a download and an ES2+
//! functionCallIdentifier finds its order.

use crate::common::{status, Server, EID};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::euicc::SoftEuicc;
use std::collections::BTreeSet;

fn lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_download_and_its_order_can_be_followed_in_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(
        dir.path(),
        Some("order_ttl_secs = 3600\n"),
        &[("SMDPPLUS_LOG_FORMAT", "json")],
    );
    let op = server.operator();

    // ES2+: the request id comes back, and the log line of the call carries
    // its functionCallIdentifier and the ICCID it allocated.
    let body = json!({"header": {"functionRequesterIdentifier": op.requester,
                                 "functionCallIdentifier": "trace-order-1"},
                      "eid": EID, "profileType": "demo"});
    let r = op
        .raw(
            Method::POST,
            "/gsma/rsp2/es2plus/downloadOrder",
            &[
                ("content-type", "application/json"),
                ("x-admin-protocol", "gsma/rsp/v2.2.0"),
            ],
            body.to_string().as_bytes(),
        )
        .await
        .expect("downloadOrder");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let request_id = r
        .headers
        .get("x-request-id")
        .and_then(|h| h.to_str().ok())
        .expect("x-request-id")
        .to_owned();
    assert_eq!(request_id.len(), 16);
    let (_, v) = op
        .call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");

    // ES9+: a whole download with the software eUICC.
    let lpa = server.lpa();
    let mut euicc = SoftEuicc::sgp26_nist().expect("eUICC");
    let report = lpa
        .download(&mut euicc, None, None, &mut |_| {})
        .await
        .expect("download");
    let txid = hex::encode_upper(&report.transaction_id);

    // A refused call, inside a span too.
    let refused = lpa.authenticate(&mut euicc, Some("NO-SUCH-ORDER")).await;
    assert!(refused.is_err());

    let log = lines(&server);
    let span = |l: &Value, f: &str| l["span"][f].as_str().map(str::to_owned);
    let order_line = log
        .iter()
        .find(|l| span(l, "request_id").as_deref() == Some(request_id.as_str()))
        .expect("the downloadOrder line has the request id");
    assert_eq!(
        span(order_line, "function_call_id").as_deref(),
        Some("trace-order-1")
    );
    assert_eq!(span(order_line, "iccid").as_deref(), Some(iccid.as_str()));
    assert_eq!(
        span(order_line, "operator").as_deref(),
        Some("dev-operator")
    );

    let calls: BTreeSet<String> = log
        .iter()
        .filter(|l| span(l, "transaction_id").as_deref() == Some(txid.as_str()))
        .filter(|l| l["fields"]["message"] == "request")
        .filter_map(|l| l["fields"]["endpoint"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = [
        "initiateAuthentication",
        "authenticateClient",
        "getBoundProfilePackage",
        "handleNotification",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(calls, want, "one transactionId finds the four calls");
    assert!(
        log.iter().any(
            |l| span(l, "transaction_id").as_deref() == Some(txid.as_str())
                && span(l, "iccid").as_deref() == Some(iccid.as_str())
        ),
        "the ICCID joins the span once the order is known"
    );
    let refusal = log
        .iter()
        .find(|l| l["fields"]["message"] == "call refused")
        .expect("the refusal is logged");
    assert!(span(refusal, "transaction_id").is_some(), "{refusal}");
    assert!(span(refusal, "request_id").is_some(), "{refusal}");
}
