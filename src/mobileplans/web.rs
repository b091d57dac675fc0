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
use crate::http;
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::error::HttpError;
use crate::http::query::Query;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Method, Request, Response, StatusCode};

/// The decision API's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The callback the portal may send now.
    Callback,
    /// Cancel the purchase at the SM-DP+.
    Cancel,
    /// Withdraw a delayed download before its release.
    Withdraw,
}

static ROUTES: &[Route<Endpoint>] = &[
    Route {
        method: Method::GET,
        path: "/mobileplans/v1/callback",
        endpoint: Endpoint::Callback,
    },
    Route {
        method: Method::POST,
        path: "/mobileplans/v1/cancel",
        endpoint: Endpoint::Cancel,
    },
    Route {
        method: Method::POST,
        path: "/mobileplans/v1/withdraw",
        endpoint: Endpoint::Withdraw,
    },
];

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

/// Answers of this API are about one purchase and change with it: never
/// cached.
fn no_store(e: HttpError) -> HttpError {
    e.header(CACHE_CONTROL.as_str(), HeaderValue::from_static("no-store"))
}

/// The Mobile Plans decision API on the operator-web listener.
pub struct MobilePlans(pub App);

impl Api for MobilePlans {
    const NAME: &'static str = "mobileplans";
    const PREFIX: &'static str = "/mobileplans/v1";
    type Endpoint = Endpoint;
    type Error = HttpError;

    fn routes() -> &'static [Route<Endpoint>] {
        ROUTES
    }

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::Callback => "callbackDecision",
            Endpoint::Cancel => "cancelPurchase",
            Endpoint::Withdraw => "withdrawDelayedDownload",
        }
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> HttpError {
        no_store(HttpError::unrouted(miss, "operator-web", req.uri().path()))
    }

    async fn handle(&self, call: Call<Endpoint>) -> Result<Response<http::Body>, HttpError> {
        let app = &self.0;
        let function = Self::name(call.endpoint);
        let q = Query::parse(call.req.uri().query());
        if q.has("iccid") || q.has("eid") {
            // The lookups by line and eUICC are the operator's (admin API).
            return Err(no_store(HttpError::not_found(
                "orders are named by transactionId here",
            )));
        }
        let decided = async {
            let order = super::find(app, &Lookup::Transaction(transaction(&q)?))?;
            if !app.mobile_plans.allowed(call.req.headers(), &order) {
                app.mobile_plans.refused(
                    &app.metrics,
                    Refusal::Capability,
                    call.conn.peer.ip(),
                    function,
                );
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    "this purchase's capability is missing or wrong: only the page that made the purchase may act on it",
                ));
            }
            let txid = order.transaction_id.clone();
            let answer = match call.endpoint {
                Endpoint::Cancel => super::cancel(app, &txid).await?,
                Endpoint::Withdraw => super::withdraw(app, &txid).await?,
                Endpoint::Callback => super::decide(app, order)?,
            };
            Ok::<_, HttpError>(answer)
        };
        let answer = decided.await.map_err(no_store)?;
        let mut response = http::json_response(StatusCode::OK, &answer.to_json());
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
}
