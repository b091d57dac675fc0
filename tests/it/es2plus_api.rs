//! ES2+ over real mutual TLS against the real server process: every
//! function, every status code the core service can produce, and bad input.

use crate::common::{code, iccids, operator_cert, status, Operator, Server, EID, EID2};
use hyper::Method;
use serde_json::{json, Value};

const OPS_CONFIG: &str =
    "order_ttl_secs = 3600\n[[operators]]\nid = \"dev-operator\"\n[[operators]]\nid = \"op-b\"\n";

fn assert_failed(v: &Value, expected: &str) {
    assert_eq!(status(v), "Failed", "expected Failed {expected}, got {v}");
    assert_eq!(code(v), expected, "{v}");
}

fn assert_ok(v: &Value) {
    assert_eq!(status(v), "Executed-Success", "{v}");
}

#[tokio::test]
async fn order_lifecycle_through_every_function() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(OPS_CONFIG));
    let op = server.operator();
    let ids = iccids(1, 3);
    op.add_profiles("gold", &ids).await;

    // downloadOrder by profile type with an EID: Linked.
    let (http, v) = op
        .call("downloadOrder", json!({"eid": EID, "profileType": "gold"}))
        .await;
    assert_eq!(http, 200);
    assert_ok(&v);
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    assert!(ids.contains(&iccid));
    assert_eq!(op.state(&iccid).await, "Linked");

    // confirmOrder without release: Confirmed, with a generated matchingId.
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": iccid, "releaseFlag": false, "confirmationCode": "5551234987"}),
        )
        .await;
    assert_ok(&v);
    let matching = v["matchingId"].as_str().expect("matchingId").to_owned();
    assert!(
        smdpplus::ids::matching_id_is_valid(&matching) && matching.len() >= 10,
        "{matching}"
    );
    assert_eq!(v["eid"], EID);
    assert_eq!(v["smdpAddress"], "localhost");
    let shown = op.show(&iccid).await;
    assert_eq!(shown["profile"]["state"], "Confirmed");
    assert_eq!(shown["profile"]["confirmationCodeRequired"], true);
    assert!(
        !shown.to_string().contains("5551234987"),
        "the confirmation code is never stored or shown"
    );

    // releaseProfile: Released; again: success, no change.
    let (_, v) = op.call("releaseProfile", json!({"iccid": iccid})).await;
    assert_ok(&v);
    assert_eq!(op.state(&iccid).await, "Released");
    let before = op.show(&iccid).await["history"]
        .as_array()
        .expect("history")
        .len();
    let (_, v) = op.call("releaseProfile", json!({"iccid": iccid})).await;
    assert_ok(&v);
    assert_eq!(
        op.show(&iccid).await["history"]
            .as_array()
            .expect("history")
            .len(),
        before
    );

    // cancelOrder needs the EID and matchingId of the order.
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_failed(&v, "8.1.1/2.3");
    let (_, v) = op.call("cancelOrder", json!({"iccid": iccid, "eid": EID2, "matchingId": matching, "finalProfileStatusIndicator": "Available"})).await;
    assert_failed(&v, "8.2.1/3.10");
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "eid": EID, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_failed(&v, "8.2.6/2.3");
    let (_, v) = op.call("cancelOrder", json!({"iccid": iccid, "eid": EID, "matchingId": "OTHER-1", "finalProfileStatusIndicator": "Available"})).await;
    assert_failed(&v, "8.2.6/3.10");
    let (_, v) = op.call("cancelOrder", json!({"iccid": iccid, "eid": EID, "matchingId": matching, "finalProfileStatusIndicator": "Maybe"})).await;
    assert_failed(&v, "1.3.1/2.1");
    let (_, v) = op.call("cancelOrder", json!({"iccid": iccid, "eid": EID, "matchingId": matching, "finalProfileStatusIndicator": "Available"})).await;
    assert_ok(&v);
    let shown = op.show(&iccid).await;
    assert_eq!(shown["profile"]["state"], "Available");
    assert_eq!(shown["profile"]["eid"], Value::Null);
    let events: Vec<_> = shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            format!(
                "{}>{}",
                h["event"].as_str().unwrap_or(""),
                h["to"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            "imported>Available",
            "downloadOrder>Linked",
            "confirmOrder>Confirmed",
            "releaseProfile>Released",
            "cancelOrder>Available"
        ]
    );
    assert!(shown["history"]
        .as_array()
        .expect("h")
        .iter()
        .skip(1)
        .all(|h| h["caller"] == "dev-operator"));

    // Cancelling a profile with no order is an invalid transition; the
    // matchingId is free again.
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "finalProfileStatusIndicator": "Available"}),
        )
        .await;
    assert_failed(&v, "8.2.1/3.5");

    // Cancel to Unavailable takes the profile out of the pool for good.
    let (_, v) = op.call("downloadOrder", json!({"iccid": iccid})).await;
    assert_ok(&v);
    assert_eq!(op.state(&iccid).await, "Allocated");
    let (_, v) = op
        .call(
            "cancelOrder",
            json!({"iccid": iccid, "finalProfileStatusIndicator": "Unavailable"}),
        )
        .await;
    assert_ok(&v);
    assert_eq!(op.state(&iccid).await, "Unavailable");
    let (_, v) = op.call("downloadOrder", json!({"iccid": iccid})).await;
    assert_failed(&v, "8.2.1/3.3");
}

#[tokio::test]
async fn download_and_confirm_status_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(OPS_CONFIG));
    let op = server.operator();
    let ids = iccids(2, 2);
    op.add_profiles("silver", &ids).await;
    let other = iccids(3, 1);

    // Format: EID and ICCID patterns.
    let (_, v) = op
        .call(
            "downloadOrder",
            json!({"eid": "1234", "profileType": "silver"}),
        )
        .await;
    assert_failed(&v, "8.1.1/2.1");
    let (_, v) = op.call("downloadOrder", json!({"iccid": "89ABC"})).await;
    assert_failed(&v, "8.2.1/2.1");
    let (_, v) = op.call("downloadOrder", json!({"eid": EID})).await;
    assert_failed(&v, "1.3.1/2.3");
    // Unknown ICCID, unknown type, type mismatch.
    let (_, v) = op.call("downloadOrder", json!({"iccid": other[0]})).await;
    assert_failed(&v, "8.2.1/3.9");
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "platinum"}))
        .await;
    assert_failed(&v, "8.2.5/3.9");
    let (_, v) = op
        .call(
            "downloadOrder",
            json!({"iccid": ids[0], "profileType": "demo"}),
        )
        .await;
    assert_failed(&v, "8.2.5/3.8");
    // The trailing F form names the same profile.
    let (_, v) = op
        .call(
            "downloadOrder",
            json!({"iccid": format!("{}F", ids[0]), "profileType": "silver"}),
        )
        .await;
    assert_ok(&v);
    assert_eq!(v["iccid"], ids[0]);
    let (_, v) = op.call("downloadOrder", json!({"iccid": ids[0]})).await;
    assert_failed(&v, "8.2.1/3.3");
    // A wrong EID check digit is accepted (and counted).
    let (_, v) = op
        .call(
            "downloadOrder",
            json!({"profileType": "silver", "eid": "89049032123451234512345678901234"}),
        )
        .await;
    assert_ok(&v);
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "silver"}))
        .await;
    assert_failed(&v, "8.2.5/3.7");
    let (_, metrics) = server.ops_get("/metrics").await;
    assert!(
        metrics.contains("smdpplus_check_digit_mismatches_total{kind=\"eid\"} 1"),
        "{metrics}"
    );

    // confirmOrder rules (§5.3.2).
    let (_, v) = op.call("confirmOrder", json!({"iccid": ids[0]})).await;
    assert_failed(&v, "1.3.1/2.2");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": "yes"}),
        )
        .await;
    assert_failed(&v, "1.3.1/2.1");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true, "matchingId": ""}),
        )
        .await;
    assert_failed(&v, "8.1.1/2.2");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true, "matchingId": "lower-case"}),
        )
        .await;
    assert_failed(&v, "8.2.6/2.1");
    let (_, v) = op.call("confirmOrder", json!({"iccid": ids[0], "releaseFlag": true, "smdsAddress": "smds.example.com", "eid": EID})).await;
    assert_failed(&v, "8.9/5.1");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true, "matchingId": "ABC-123"}),
        )
        .await;
    assert_ok(&v);
    assert_eq!(v["matchingId"], "ABC-123");
    assert!(v.get("eid").is_none(), "no EID bound to this order: {v}");
    assert_eq!(op.state(&ids[0]).await, "Released");
    // The other order: EID conflict, then a matchingId conflict.
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[1], "releaseFlag": false, "eid": EID2}),
        )
        .await;
    assert_failed(&v, "8.1.1/3.10");
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[1], "releaseFlag": false, "matchingId": "ABC-123"}),
        )
        .await;
    assert_failed(&v, "8.2.6/3.3");
    // A second confirm on a released profile is an invalid transition.
    let (_, v) = op
        .call(
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true}),
        )
        .await;
    assert_failed(&v, "8.2.1/3.5");
    // releaseProfile before confirmOrder.
    let (_, v) = op.call("releaseProfile", json!({"iccid": ids[1]})).await;
    assert_failed(&v, "8.2.1/3.5");
    let (_, v) = op.call("releaseProfile", json!({"iccid": other[0]})).await;
    assert_failed(&v, "8.2.1/3.9");
    let (_, v) = op.call("releaseProfile", json!({})).await;
    assert_failed(&v, "1.3.1/2.2");
}

#[tokio::test]
async fn operators_only_touch_their_own_profiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(OPS_CONFIG));
    let a = server.operator();
    let (cert, key) = operator_cert(&server, "op-b");
    let b = Operator::new(server.es2, &cert, &key, &server.pki().ci_cert);
    assert_eq!(b.requester, "op-b");
    let ids = iccids(4, 1);
    a.add_profiles("gold", &ids).await;

    // Another operator's ICCID and profile type answer exactly as unknown
    // ones: operators cannot probe each other's inventory.
    let message =
        |v: &Value| v["header"]["functionExecutionStatus"]["statusCodeData"]["message"].clone();
    let (_, v) = b.call("downloadOrder", json!({"iccid": ids[0]})).await;
    assert_failed(&v, "8.2.1/3.9");
    assert_eq!(message(&v), format!("ICCID {} is unknown", ids[0]));
    let (_, v) = b
        .call("downloadOrder", json!({"profileType": "gold"}))
        .await;
    assert_failed(&v, "8.2.5/3.9");
    let (_, unknown) = b
        .call("downloadOrder", json!({"profileType": "silver"}))
        .await;
    assert_eq!(
        message(&v).as_str().map(|m| m.replace("gold", "silver")),
        message(&unknown).as_str().map(str::to_owned)
    );
    let (_, v) = a.call("downloadOrder", json!({"iccid": ids[0]})).await;
    assert_ok(&v);
    for (f, body) in [
        (
            "confirmOrder",
            json!({"iccid": ids[0], "releaseFlag": true}),
        ),
        ("releaseProfile", json!({"iccid": ids[0]})),
        (
            "cancelOrder",
            json!({"iccid": ids[0], "finalProfileStatusIndicator": "Available"}),
        ),
    ] {
        let (_, v) = b.call(f, body).await;
        assert_failed(&v, "8.2.1/3.9");
    }
    // The admin API is scoped too, and another operator's line is unknown.
    let (s, _) = b
        .admin(Method::GET, &format!("profiles/{}", ids[0]), None)
        .await;
    assert_eq!(s, 404);
    let (s, v) = b
        .admin(
            Method::PUT,
            &format!("balances/{}", ids[0]),
            Some(json!({"notSupported": false})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["code"], "8.2.1/3.9", "{v}");
    let (s, v) = b.admin(Method::GET, "profiles", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(0));

    // functionRequesterIdentifier must match the certificate.
    let (_, v) = a
        .call_as(
            "downloadOrder",
            "op-b",
            "x-1",
            json!({"profileType": "gold"}),
        )
        .await;
    assert_failed(&v, "1.1/1.2");
    assert_eq!(a.state(&ids[0]).await, "Allocated");
}

#[tokio::test]
async fn resent_request_returns_the_original_response() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let body = json!({"profileType": "demo", "eid": EID});
    let (_, first) = op
        .call_as("downloadOrder", "dev-operator", "call-42", body.clone())
        .await;
    assert_ok(&first);
    let (_, again) = op
        .call_as("downloadOrder", "dev-operator", "call-42", body.clone())
        .await;
    assert_eq!(first, again, "same call id and body: same answer");
    let iccid = first["iccid"].as_str().expect("iccid");
    let (_, v) = op.admin(Method::GET, "profiles?state=Linked", None).await;
    assert_eq!(
        v["profiles"].as_array().map(Vec::len),
        Some(1),
        "the re-send reserved nothing more"
    );
    // Admin query parameters are percent-decoded; a bad escape is a 400.
    let (_, v) = op
        .admin(Method::GET, "profiles?%73tate=Linked&limit=%31", None)
        .await;
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(1));
    let (code, v) = op.admin(Method::GET, "profiles?state=%zz", None).await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v.to_string().contains("state is not valid percent-encoded"),
        "{v}"
    );
    assert_eq!(
        op.show(iccid).await["history"].as_array().map(Vec::len),
        Some(2)
    );
    // A new call id is a new order.
    let (_, other) = op
        .call_as("downloadOrder", "dev-operator", "call-43", body)
        .await;
    assert_ok(&other);
    assert_ne!(other["iccid"], first["iccid"]);
    // Confirm re-sent: same generated matchingId.
    let c = json!({"iccid": iccid, "releaseFlag": true});
    let (_, c1) = op
        .call_as("confirmOrder", "dev-operator", "call-44", c.clone())
        .await;
    let (_, c2) = op
        .call_as("confirmOrder", "dev-operator", "call-44", c)
        .await;
    assert_ok(&c1);
    assert_eq!(c1, c2);
}

#[tokio::test]
async fn bad_input_gets_gsma_codes_never_500() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some("max_body_bytes = 2048\n"));
    let op = server.operator();
    let json_ct = ("content-type", "application/json");
    let proto = ("x-admin-protocol", "gsma/rsp/v2.2.0");
    let path = "/gsma/rsp2/es2plus/downloadOrder";
    let header =
        r#""header":{"functionRequesterIdentifier":"dev-operator","functionCallIdentifier":"b1"}"#;
    let good = format!(r#"{{{header},"profileType":"demo"}}"#);
    let big = format!(r#"{{{header},"profileType":"{}"}}"#, "x".repeat(4096));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            vec![json_ct, proto],
            b"{\"header\":".to_vec(),
            200,
            "1.3.1/2.1",
        ),
        (
            "not an object",
            vec![json_ct, proto],
            b"[1,2]".to_vec(),
            200,
            "1.3.1/2.1",
        ),
        (
            "no header",
            vec![json_ct, proto],
            br#"{"profileType":"demo"}"#.to_vec(),
            200,
            "1.3.1/2.2",
        ),
        (
            "header not object",
            vec![json_ct, proto],
            br#"{"header":"x"}"#.to_vec(),
            200,
            "1.3.1/2.1",
        ),
        (
            "no call id",
            vec![json_ct, proto],
            br#"{"header":{"functionRequesterIdentifier":"dev-operator"}}"#.to_vec(),
            200,
            "1.3.1/2.2",
        ),
        (
            "wrong type",
            vec![json_ct, proto],
            format!(r#"{{{header},"profileType":5}}"#).into_bytes(),
            200,
            "1.3.1/2.1",
        ),
        (
            "oversized",
            vec![json_ct, proto],
            big.into_bytes(),
            200,
            "1.3.1/2.1",
        ),
        (
            "wrong content type",
            vec![("content-type", "text/plain"), proto],
            good.clone().into_bytes(),
            200,
            "1.3.1/2.1",
        ),
        (
            "no X-Admin-Protocol",
            vec![json_ct],
            good.clone().into_bytes(),
            200,
            "1.3.2/2.2",
        ),
        (
            "version 3",
            vec![json_ct, ("x-admin-protocol", "gsma/rsp/v3.0.0")],
            good.clone().into_bytes(),
            200,
            "1.3.2/3.1",
        ),
    ];
    for (what, headers, body, http, expected) in cases {
        let r = op
            .raw(Method::POST, path, &headers, &body)
            .await
            .expect(what);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(r.status, http, "{what}: {v}");
        assert_eq!(code(&v), expected, "{what}: {v}");
        assert_eq!(
            r.headers
                .get("x-admin-protocol")
                .and_then(|h| h.to_str().ok()),
            Some("gsma/rsp/v2.2.0"),
            "{what}"
        );
    }
    // Client input is echoed 64 characters at most, escaped.
    let long_eid = format!("<b>{}\n", "9".repeat(500));
    let long_type = format!("x-admin {}", "v".repeat(500));
    for (what, headers, body) in [
        (
            "long EID",
            vec![json_ct, proto],
            json!({"header": {"functionRequesterIdentifier": "dev-operator",
                              "functionCallIdentifier": "e1"}, "eid": long_eid, "profileType": "demo"})
            .to_string()
            .into_bytes(),
        ),
        (
            "long X-Admin-Protocol",
            vec![json_ct, ("x-admin-protocol", long_type.as_str())],
            good.clone().into_bytes(),
        ),
        (
            "long Content-Type",
            vec![("content-type", long_type.as_str()), proto],
            good.clone().into_bytes(),
        ),
    ] {
        let r = op.raw(Method::POST, path, &headers, &body).await.expect(what);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        let m = v["header"]["functionExecutionStatus"]["statusCodeData"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(status(&v), "Failed", "{what}: {v}");
        let echoed = m.matches(['9', 'v']).count();
        assert!(echoed <= 64, "{what}: {echoed} characters of input echoed: {m}");
        assert!(m.contains('…'), "{what}: truncation is marked: {m}");
        assert!(!m.contains('<') && !m.contains('\n'), "{what}: input escaped: {m}");
    }
    // Content-Type with a charset is fine.
    let r = op
        .raw(
            Method::POST,
            path,
            &[("content-type", "application/json;charset=UTF-8"), proto],
            good.as_bytes(),
        )
        .await
        .expect("charset");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_ok(&v);
    // Unknown function and wrong method.
    let r = op
        .raw(
            Method::POST,
            "/gsma/rsp2/es2plus/deleteEverything",
            &[json_ct, proto],
            b"{}",
        )
        .await
        .expect("unknown");
    assert_eq!(r.status, 404);
    assert_eq!(
        code(&serde_json::from_slice(&r.body).expect("json")),
        "1.6/3.1"
    );
    let r = op.raw(Method::GET, path, &[], b"").await.expect("get");
    assert_eq!(r.status, 405);
    // Nothing above was a 500, and the server is still healthy.
    let (s, body) = server.ops_get("/healthz").await;
    assert_eq!((s, body.trim()), (200, "ok"));
    assert!(
        !server.log().contains("panicked"),
        "no panic in the server log"
    );
}

#[tokio::test]
async fn tls_refuses_missing_unknown_and_unconfigured_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let ci = server.pki().ci_cert;
    let body = br#"{"header":{"functionRequesterIdentifier":"dev-operator","functionCallIdentifier":"1"},"profileType":"demo"}"#;
    let url = format!(
        "https://localhost:{}/gsma/rsp2/es2plus/downloadOrder",
        server.es2.port()
    );

    // No client certificate.
    let cfg = smdpplus::http::tls::client(&[ci.as_path()], None, false).expect("cfg");
    let c = smdpplus::http::client::Client::new(cfg, std::time::Duration::from_secs(10));
    assert!(
        c.post_gsma(&url, body.to_vec()).await.is_err(),
        "no client cert must fail"
    );

    // A certificate from a CA the server does not know, with the right CN.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dev-operator");
    let cert = params.self_signed(&key).expect("self-signed");
    std::fs::write(dir.path().join("rogue.crt"), cert.pem()).expect("w");
    std::fs::write(dir.path().join("rogue.key"), key.serialize_pem()).expect("w");
    let rogue = Operator::new(
        server.es2,
        &dir.path().join("rogue.crt"),
        &dir.path().join("rogue.key"),
        &ci,
    );
    assert!(
        rogue
            .raw(Method::POST, "/gsma/rsp2/es2plus/downloadOrder", &[], body)
            .await
            .is_err(),
        "unknown CA must fail"
    );

    // Signed by the operator CA but not a configured operator.
    let (cert, key) = operator_cert(&server, "stranger");
    let stranger = Operator::new(server.es2, &cert, &key, &ci);
    assert!(
        stranger
            .raw(Method::POST, "/gsma/rsp2/es2plus/downloadOrder", &[], body)
            .await
            .is_err(),
        "unconfigured operator must fail"
    );

    // The real operator still gets in, and nothing was reserved by the others.
    let op = server.operator();
    let (_, v) = op
        .admin(Method::GET, "profiles?state=Available", None)
        .await;
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(100));
    let (_, metrics) = server.ops_get("/metrics").await;
    let failures: u64 = metrics
        .lines()
        .find(|l| l.starts_with("smdpplus_tls_handshake_failures_total{listener=\"es2plus\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 3, "{metrics}");
}

#[tokio::test]
async fn operations_endpoints_and_graceful_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), None);
    let op = server.operator();
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    assert_ok(&v);
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "nope"}))
        .await;
    assert_failed(&v, "8.2.5/3.9");
    assert_eq!(server.ops_get("/healthz").await.0, 200);
    assert_eq!(server.ops_get("/readyz").await.0, 200);
    assert_eq!(server.ops_get("/nothing").await.0, 404);
    let (s, m) = server.ops_get("/metrics").await;
    assert_eq!(s, 200);
    for needle in [
        r#"smdpplus_requests_total{api="es2plus",code="",endpoint="downloadOrder",outcome="success"} 1"#,
        r#"smdpplus_requests_total{api="es2plus",code="8.2.5/3.9",endpoint="downloadOrder",outcome="refused"} 1"#,
        r#"smdpplus_profiles{state="Available"} 99"#,
        r#"smdpplus_profiles{state="Allocated"} 1"#,
        r#"smdpplus_available_profiles{operator="dev-operator",profile_type="demo"} 99"#,
        "smdpplus_request_duration_seconds_bucket",
        "smdpplus_outbox_depth 0",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    let exit = server.terminate();
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
    assert!(server.log().contains("shutdown complete"));
    // The acknowledged order survived the shutdown.
    let server = Server::start(dir.path(), None);
    let (_, v) = server
        .operator()
        .admin(Method::GET, "profiles?state=Allocated", None)
        .await;
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(1));
    // The pool gauge is rebuilt from the records at start.
    let (_, m) = server.ops_get("/metrics").await;
    let needle = r#"smdpplus_available_profiles{operator="dev-operator",profile_type="demo"} 99"#;
    assert!(
        m.contains(needle),
        "missing {needle} in
{m}"
    );
}
