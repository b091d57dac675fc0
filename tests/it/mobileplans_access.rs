//! Who may act on a Mobile Plans purchase, against the real binary over
//! real TLS: the public operator-web listener shows and changes an order
//! only for the page that made it (its capability), the lookups by line
//! and eUICC are the operator's (admin API, mutual TLS, operator-scoped),
//! and the portal's purchase needs its CSRF token.

use crate::common;

use crate::common::mobileplans::{
    capability, csrf, post_form, refused_count, set_cookies, web_with,
};
use crate::common::{operator_cert, Server, EID};
use hyper::Method;
use serde_json::json;

const TWO_OPERATORS: &str = "[[operators]]\nid = \"dev-operator\"\n[[operators]]\nid = \"op-b\"\n";

#[tokio::test]
async fn lookups_by_line_and_euicc_are_the_operators_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(TWO_OPERATORS));
    let op = server.operator();
    let (s, v) = op
        .admin(
            Method::POST,
            "mobileplans/orders",
            Some(
                json!({"transactionId": "victim-1", "kind": "profile", "eid": EID,
                        "profileType": "demo", "planName": "2GB"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let iccid = v["decision"]["iccid"].as_str().expect("iccid").to_owned();
    let matching = op.show(&iccid).await["profile"]["matchingId"]
        .as_str()
        .expect("matchingId")
        .to_owned();
    // Anonymous lookups on the public listener: gone, and no activation
    // code anywhere in the answer.
    for q in [format!("iccid={iccid}"), format!("eid={EID}")] {
        let (s, _, v) = web_with(
            &server,
            Method::GET,
            &format!("/mobileplans/v1/callback?{q}"),
            &[],
        )
        .await;
        assert_eq!(s, 404, "{q}: {v}");
        assert!(!v.to_string().contains(&matching), "{v}");
    }
    // The operator finds its order by line and by eUICC.
    for q in [format!("iccid={iccid}"), format!("eid={EID}")] {
        let (s, v) = op
            .admin(Method::GET, &format!("mobileplans/orders?{q}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["decision"]["transactionId"], "victim-1");
        assert!(v["decision"].to_string().contains(&matching));
    }
    // Another operator does not.
    let (c, k) = operator_cert(&server, "op-b");
    let other = common::Operator::new(server.es2, &c, &k, &server.pki().ci_cert);
    for q in [format!("iccid={iccid}"), format!("eid={EID}")] {
        let (s, v) = other
            .admin(Method::GET, &format!("mobileplans/orders?{q}"), None)
            .await;
        assert_eq!(s, 404, "{v}");
        assert!(!v.to_string().contains(&matching), "{v}");
    }
    let (s, v) = other
        .admin(Method::GET, "mobileplans/orders/victim-1", None)
        .await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn actions_need_the_purchase_capability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let mut delayed = json!({"transactionId": "victim-2", "kind": "profile", "eid": EID,
                             "profileType": "demo", "planName": "Later"});
    delayed["releaseAt"] = json!(smdpplus::time::datetime(smdpplus::time::now() + 7200));
    let (s, v) = op
        .admin(Method::POST, "mobileplans/orders", Some(delayed))
        .await;
    assert_eq!(s, 200, "{v}");
    let iccid = v["decision"]["iccid"].as_str().expect("iccid").to_owned();
    let cap = v["capability"].as_str().expect("capability").to_owned();
    assert_eq!(cap.len(), 64);
    assert_eq!(capability(&op, "victim-2").await, cap);
    let before = refused_count(&server, "capability").await;
    // The capability with its last digit changed (never equal to it).
    let last = if cap.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &cap[..63]);
    let forged_cookie = format!("__Host-mpcap-1={wrong}");
    for (method, path) in [
        (
            Method::GET,
            "/mobileplans/v1/callback?transactionId=victim-2",
        ),
        (
            Method::POST,
            "/mobileplans/v1/cancel?transactionId=victim-2",
        ),
        (
            Method::POST,
            "/mobileplans/v1/withdraw?transactionId=victim-2",
        ),
    ] {
        for headers in [
            vec![],
            vec![("x-mp-capability", wrong.as_str())],
            vec![("x-mp-capability", "zz")],
            vec![("cookie", forged_cookie.as_str())],
        ] {
            let (s, _, v) = web_with(&server, method.clone(), path, &headers).await;
            assert_eq!(s, 403, "{path} {headers:?}: {v}");
            assert!(v["callback"].is_null(), "{v}");
        }
    }
    assert_eq!(op.state(&iccid).await, "Confirmed", "nothing changed");
    assert!(refused_count(&server, "capability").await >= before + 12);
    assert!(server.log().contains("Mobile Plans request refused"));
    // With the capability: the decision, then the withdrawal.
    let (s, _, v) = web_with(
        &server,
        Method::GET,
        "/mobileplans/v1/callback?transactionId=victim-2",
        &[("x-mp-capability", &cap)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rule"], "confirmedReleaseScheduled");
    let (s, _, v) = web_with(
        &server,
        Method::POST,
        "/mobileplans/v1/withdraw?transactionId=victim-2",
        &[("x-mp-capability", &cap)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(op.state(&iccid).await, "Available");
}

#[tokio::test]
async fn the_portal_purchase_needs_csrf_and_hands_out_the_capability_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let form = |txid: &str, eid: &str, csrf: &str| {
        format!("transactionId={txid}&eid={eid}&choice=demo-1gb&account=new&csrf={csrf}")
    };
    // Without the token, with a wrong one, or without the cookie: refused,
    // no order.
    let token = csrf(&server, "csrf-1", EID).await;
    let before = refused_count(&server, "csrf").await;
    let cookie = format!("__Host-mpcsrf={token}");
    for (cookies, body) in [
        ("", form("csrf-1", EID, &token)),
        (cookie.as_str(), form("csrf-1", EID, "")),
        (
            cookie.as_str(),
            form("csrf-1", EID, "00000000000000000000000000000000"),
        ),
        (
            cookie.as_str(),
            form("csrf-1", EID, "").replace("&csrf=", ""),
        ),
    ] {
        let (s, _, page) = post_form(&server, "/portal/purchase", cookies, &body).await;
        assert_eq!(s, 403, "{page}");
        assert!(page.contains("data-step=\"refused\""), "{page}");
    }
    assert_eq!(refused_count(&server, "csrf").await, before + 4);
    let (s, _) = op
        .admin(Method::GET, &format!("mobileplans/orders?eid={EID}"), None)
        .await;
    assert_eq!(s, 404, "no order was placed");

    // With it: the order, and its capability cookie in the same response.
    let (s, h, page) = post_form(
        &server,
        "/portal/purchase",
        &cookie,
        &form("csrf-1", EID, &token),
    )
    .await;
    assert_eq!(s, 200, "{page}");
    let caps: Vec<_> = set_cookies(&h)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("__Host-mpcap-"))
        .collect();
    assert_eq!(caps.len(), 1, "{h:?}");
    let (cap_name, cap, line) = caps[0].clone();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(line.contains(attr), "{line}");
    }
    let (_, v) = op
        .admin(Method::GET, "mobileplans/orders/csrf-1", None)
        .await;
    let iccid = v["decision"]["iccid"].as_str().expect("iccid").to_owned();
    let matching = op.show(&iccid).await["profile"]["matchingId"]
        .as_str()
        .expect("matchingId")
        .to_owned();
    assert_eq!(v["capability"].as_str(), Some(cap.as_str()));
    // Held for the payment: no code yet; a stranger cannot pay for it
    // (that would release it), the page that bought it can.
    assert!(page.contains("data-step=\"payment\""), "{page}");
    assert!(!page.contains(&matching));
    let pay = format!("transactionId=csrf-1&eid={EID}&csrf={token}");
    let (s, _, page) = post_form(&server, "/portal/confirm", &cookie, &pay).await;
    assert_eq!(s, 403, "{page}");
    assert_eq!(op.state(&iccid).await, "Confirmed");
    let both = format!("{cookie}; {cap_name}={cap}");
    let (s, _, page) = post_form(&server, "/portal/confirm", &both, &pay).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains(&matching), "the result page sends the code");
    assert_eq!(op.state(&iccid).await, "Released");

    // A stranger re-posting the purchase (valid CSRF of their own) gets
    // neither the page nor a capability.
    let stranger = csrf(&server, "csrf-1", EID).await;
    let stranger_cookie = format!("__Host-mpcsrf={stranger}");
    let (s, h, page) = post_form(
        &server,
        "/portal/purchase",
        &stranger_cookie,
        &form("csrf-1", EID, &stranger),
    )
    .await;
    assert_eq!(s, 403, "{page}");
    assert!(!page.contains(&matching));
    assert!(set_cookies(&h)
        .iter()
        .all(|(n, _, _)| !n.starts_with("__Host-mpcap-")));
    // Nor the retry of the download.
    let (s, _, _) = web_with(
        &server,
        Method::GET,
        &format!("/portal/retry?transactionId=x&eid={EID}&retryIccid={iccid}"),
        &[],
    )
    .await;
    assert_eq!(s, 403);
    // Nor the cancel.
    let (s, _, _) = web_with(
        &server,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=csrf-1",
        &[("cookie", &stranger_cookie)],
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(op.state(&iccid).await, "Released");

    // The page that bought it: reload, retry, cancel.
    let (s, _, page) = post_form(
        &server,
        "/portal/purchase",
        &both,
        &form("csrf-1", EID, &token),
    )
    .await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains(&matching));
    let (s, _, _) = web_with(
        &server,
        Method::GET,
        &format!("/portal/retry?transactionId=x&eid={EID}&retryIccid={iccid}"),
        &[("cookie", &both)],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, v) = web_with(
        &server,
        Method::POST,
        "/mobileplans/v1/cancel?transactionId=csrf-1",
        &[("cookie", &both)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(op.state(&iccid).await, "Available");
}
