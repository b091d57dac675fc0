//! The operator-web listener (HTTPS, server-authenticated, public): the
//! Mobile Plans callback decision API for the page that made a purchase,
//! and the portal ([`super::portal`], under `/portal`).
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/mobileplans/v1/callback?transactionId=` | the callback the portal may send now, the others refused with reasons |
//! | POST | `/mobileplans/v1/cancel?transactionId=` | cancel the purchase at the SM-DP+ (before Downloaded) |
//! | POST | `/mobileplans/v1/withdraw?transactionId=` | withdraw a delayed download before its release |
//!
//! Each needs the order's capability ([`super::guard`]): the
//! `__Host-mpcap-<order id>` cookie the purchase response set, or the
//! `X-MP-Capability` header; without it 403 and nothing changes. The
//! lookups of a line's or an eUICC's latest order are operator functions,
//! on the admin API (mutual TLS), not here.
//!
//! Answers are JSON: 200 with the decision, or 400 (the bad parameter
//! named), 403, 404, 405, 409 (with the decision) and `{"error": ...}`.

use super::guard::Refusal;
use super::{Lookup, MpError};
use crate::app::App;
use crate::http::query::Query;
use crate::http::{self, ConnInfo, Outcome};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

/// Path prefix of the decision API.
pub const PREFIX: &str = "/mobileplans/v1/";

fn transaction(q: &Query) -> Result<String, MpError> {
    match q.get("transactionId") {
        Some(Ok(v)) => super::transaction_id(v, "transactionId"),
        Some(Err(())) => Err(MpError::BadRequest {
            parameter: "transactionId".into(),
            message: "the value is not valid percent-encoded UTF-8".into(),
        }),
        None => Err(MpError::BadRequest {
            parameter: "transactionId".into(),
            message: "transactionId is required".into(),
        }),
    }
}

/// Handles a request on the operator-web listener.
pub async fn handle(app: App, req: Request<Incoming>, conn: &ConnInfo) -> Outcome {
    let p = req.uri().path();
    if p == super::portal::PREFIX || p.starts_with("/portal/") {
        return super::portal::handle(app, req, conn).await;
    }
    let q = Query::parse(req.uri().query());
    let route = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    let function = match (route.as_str(), &method) {
        ("callback", &Method::GET) => "callbackDecision",
        ("cancel", &Method::POST) => "cancelPurchase",
        ("withdraw", &Method::POST) => "withdrawDelayedDownload",
        ("callback" | "cancel" | "withdraw", _) => {
            let allow = if route == "callback" { "GET" } else { "POST" };
            let mut response = http::json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("use {allow}")}),
            );
            if let Ok(v) = hyper::header::HeaderValue::from_str(allow) {
                response.headers_mut().insert(hyper::header::ALLOW, v);
            }
            return finish(response, "unknown", "error");
        }
        _ => {
            let response = http::json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no operator-web endpoint {}", req.uri().path())}),
            );
            return finish(response, "unknown", "error");
        }
    };
    if q.has("iccid") || q.has("eid") {
        // The lookups by line and eUICC are the operator's (admin API).
        let response = http::json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "orders are named by transactionId here"}),
        );
        return finish(response, function, "error");
    }
    let order = match transaction(&q).and_then(|t| super::find(&app, &Lookup::Transaction(t))) {
        Ok(o) => o,
        Err(e) => {
            return finish(
                http::json_response(e.status(), &e.body()),
                function,
                "error",
            )
        }
    };
    if !app.mobile_plans.allowed(req.headers(), &order) {
        app.mobile_plans
            .refused(&app.metrics, Refusal::Capability, conn.peer.ip(), function);
        let response = http::json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "this purchase's capability is missing or wrong: only the page that made the purchase may act on it"}),
        );
        return finish(response, function, "error");
    }
    let txid = order.transaction_id.clone();
    let result = match function {
        "cancelPurchase" => super::cancel(&app, &txid).await,
        "withdrawDelayedDownload" => super::withdraw(&app, &txid).await,
        _ => super::decide(&app, order),
    };
    match result {
        Ok(answer) => finish(
            http::json_response(StatusCode::OK, &answer.to_json()),
            function,
            "ok",
        ),
        Err(e) => {
            if let MpError::Internal(m) | MpError::Unavailable(m) = &e {
                tracing::error!(function, error = %m, "Mobile Plans call failed");
            }
            finish(
                http::json_response(e.status(), &e.body()),
                function,
                "error",
            )
        }
    }
}

fn finish(
    mut response: hyper::Response<http::Body>,
    function: &'static str,
    status: &'static str,
) -> Outcome {
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    let code = if response.status().is_success() {
        String::new()
    } else {
        response.status().as_u16().to_string()
    };
    Outcome {
        response,
        function,
        status,
        code,
    }
}
