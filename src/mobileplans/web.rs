//! The operator-web listener (HTTPS, server-authenticated): the Mobile
//! Plans callback decision API and its two actions, and the portal
//! ([`super::portal`], under `/portal`).
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/mobileplans/v1/callback?transactionId=` (or `iccid=`, `eid=`) | the callback the portal may send now, the others refused with reasons |
//! | POST | `/mobileplans/v1/cancel?transactionId=` | cancel the purchase at the SM-DP+ (before Downloaded) |
//! | POST | `/mobileplans/v1/withdraw?transactionId=` | withdraw a delayed download before its release |
//!
//! Answers are JSON: 200 with the decision, or 400 (the bad parameter
//! named), 404, 405, 409 (with the decision) and `{"error": ...}`. The
//! transactionId is what the app gave the portal; the actions take nothing
//! else.

use super::{Lookup, MpError};
use crate::http::query::Query;
use crate::http::{self, Outcome};
use crate::ids::{Eid, Iccid};
use crate::server::App;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

/// Path prefix of the decision API.
pub const PREFIX: &str = "/mobileplans/v1/";

fn lookup(q: &Query) -> Result<Lookup, MpError> {
    let given: Vec<&str> = ["transactionId", "iccid", "eid"]
        .into_iter()
        .filter(|n| q.has(n))
        .collect();
    let name = match given.as_slice() {
        [one] => *one,
        [] => {
            return Err(MpError::BadRequest {
                parameter: "transactionId".into(),
                message: "one of transactionId, iccid and eid is required".into(),
            })
        }
        _ => {
            return Err(MpError::BadRequest {
                parameter: given.join(","),
                message: "give only one of transactionId, iccid and eid".into(),
            })
        }
    };
    let bad = |m: &str| MpError::BadRequest {
        parameter: name.into(),
        message: m.into(),
    };
    let value = match q.get(name) {
        Some(Ok(v)) => v,
        _ => return Err(bad("the value is not valid percent-encoded UTF-8")),
    };
    match name {
        "iccid" => Iccid::parse(value)
            .map(Lookup::Iccid)
            .ok_or_else(|| bad("iccid must be 19 digits, or 20 with a trailing F")),
        "eid" => Eid::parse(value)
            .map(Lookup::Eid)
            .ok_or_else(|| bad("eid must be 32 digits")),
        _ => super::transaction_id(value, "transactionId").map(Lookup::Transaction),
    }
}

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
pub async fn handle(app: App, req: Request<Incoming>) -> Outcome {
    let p = req.uri().path();
    if p == super::portal::PREFIX || p.starts_with("/portal/") {
        return super::portal::handle(app, req).await;
    }
    let q = Query::parse(req.uri().query());
    let route = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or("")
        .to_owned();
    let method = req.method().clone();
    let (function, result) = match (route.as_str(), &method) {
        ("callback", &Method::GET) => (
            "callbackDecision",
            match lookup(&q) {
                Ok(l) => super::find(&app, &l).and_then(|o| super::decide(&app, o)),
                Err(e) => Err(e),
            },
        ),
        ("cancel", &Method::POST) => (
            "cancelPurchase",
            match transaction(&q) {
                Ok(t) => super::cancel(&app, &t).await,
                Err(e) => Err(e),
            },
        ),
        ("withdraw", &Method::POST) => (
            "withdrawDelayedDownload",
            match transaction(&q) {
                Ok(t) => super::withdraw(&app, &t).await,
                Err(e) => Err(e),
            },
        ),
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
