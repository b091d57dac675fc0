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
