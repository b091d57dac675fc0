//! Mobile Plans helpers: calls on the operator-web listener with or
//! without an order's capability.

use super::{Operator, Server};
use hyper::Method;
use serde_json::Value;

/// A call on the operator-web listener with extra headers: (status,
/// headers, JSON).
pub async fn web_with(
    server: &Server,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Value) {
    let r = server
        .web_client()
        .request(
            method,
            &format!("https://localhost:{}{path_and_query}", server.web.port()),
            headers,
            vec![],
        )
        .await
        .expect("operator-web call");
    (
        r.status,
        r.headers,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// The capability of the order of `txid` (percent-encoded), as the
/// operator's admin API gives it; empty when there is no such order.
pub async fn capability(op: &Operator, txid: &str) -> String {
    let (_, v) = op
        .admin(Method::GET, &format!("mobileplans/orders/{txid}"), None)
        .await;
    v["capability"].as_str().unwrap_or_default().to_owned()
}

/// A call on the operator-web listener as the page that owns the order
/// named by the query's transactionId: its capability in `X-MP-Capability`.
pub async fn owner_call(
    server: &Server,
    op: &Operator,
    method: Method,
    path_and_query: &str,
) -> (u16, Value) {
    let txid = path_and_query
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("transactionId="))
        .unwrap_or_default();
    let cap = if txid.is_empty() {
        String::new()
    } else {
        capability(op, txid).await
    };
    let (s, _, v) = web_with(server, method, path_and_query, &[("x-mp-capability", &cap)]).await;
    (s, v)
}

/// `smdpplus_mobileplans_refused_total{reason}` now.
pub async fn refused_count(server: &Server, reason: &str) -> u64 {
    let (_, m) = server.ops_get("/metrics").await;
    let needle = format!("smdpplus_mobileplans_refused_total{{reason=\"{reason}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A form POST on the operator-web listener: (status, headers, body).
pub async fn post_form(
    server: &Server,
    path: &str,
    cookies: &str,
    form: &str,
) -> (u16, hyper::HeaderMap, String) {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if !cookies.is_empty() {
        headers.push(("cookie", cookies));
    }
    let r = server
        .web_client()
        .request(
            Method::POST,
            &format!("https://localhost:{}{path}", server.web.port()),
            &headers,
            form.as_bytes().to_vec(),
        )
        .await
        .expect("portal call");
    (
        r.status,
        r.headers,
        String::from_utf8_lossy(&r.body).into_owned(),
    )
}

/// The `name=value` of every Set-Cookie, with the whole header lines.
pub fn set_cookies(h: &hyper::HeaderMap) -> Vec<(String, String, String)> {
    h.get_all(hyper::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let first = v.split(';').next()?;
            let (n, val) = first.split_once('=')?;
            Some((n.to_owned(), val.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The CSRF cookie the plans page sets.
pub async fn csrf(server: &Server, txid: &str, eid: &str) -> String {
    let (s, h, _) = web_with(
        server,
        Method::GET,
        &format!("/portal?transactionId={txid}&eid={eid}"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let c = set_cookies(&h);
    let (_, v, line) = c
        .iter()
        .find(|(n, _, _)| n == "__Host-mpcsrf")
        .expect("the plans page sets the CSRF cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    v.clone()
}

/// A purchase through the portal as a fresh WebView would make it: the
/// plans page (CSRF cookie), then the purchase of `choice`. Returns
/// (status, page, the cookies the WebView then holds).
pub async fn portal_buy(
    server: &Server,
    txid: &str,
    eid: &str,
    choice: &str,
) -> (u16, String, String) {
    let token = csrf(server, txid, eid).await;
    let mut cookies = format!("__Host-mpcsrf={token}");
    let (s, h, page) = post_form(
        server,
        "/portal/purchase",
        &cookies,
        &format!("transactionId={txid}&eid={eid}&choice={choice}&account=new&csrf={token}"),
    )
    .await;
    for (n, v, _) in set_cookies(&h) {
        if n.starts_with("__Host-mpcap-") {
            cookies.push_str(&format!("; {n}={v}"));
        }
    }
    (s, page, cookies)
}

/// The CSRF token in a WebView's cookies.
pub fn csrf_of(cookies: &str) -> String {
    cookies
        .split("; ")
        .find_map(|c| c.strip_prefix("__Host-mpcsrf="))
        .unwrap_or_default()
        .to_owned()
}
