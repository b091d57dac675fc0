//! ES9+ (LPA -> SM-DP+), SGP.22 §5.6 and the JSON binding §6.5.2.6-6.5.2.10.
//!
//! [`handle`] is the HTTP handler: it checks the headers real LPAs send,
//! parses the JSON fields into the [`dto`] structs, calls [`service`], and
//! renders the GSMA envelope. The protocol lives in [`service`], the
//! session phases in [`session`].

pub mod dto;
pub mod limits;
pub mod service;
pub mod session;

use crate::app::App;
use crate::error::Error;
use crate::http::fields::Fields;
use crate::http::{self, Outcome};
use dto::*;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The ES9+ functions (§6.5.2, table 57).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// ES9+.InitiateAuthentication (§5.6.1).
    InitiateAuthentication,
    /// ES9+.AuthenticateClient (§5.6.3).
    AuthenticateClient,
    /// ES9+.GetBoundProfilePackage (§5.6.2).
    GetBoundProfilePackage,
    /// ES9+.HandleNotification (§5.6.4).
    HandleNotification,
    /// ES9+.CancelSession (§5.6.5).
    CancelSession,
}

impl Function {
    /// Every ES9+ function, in the order of table 57.
    pub const ALL: [Function; 5] = [
        Function::InitiateAuthentication,
        Function::AuthenticateClient,
        Function::GetBoundProfilePackage,
        Function::HandleNotification,
        Function::CancelSession,
    ];

    /// The path segment after `/gsma/rsp2/es9plus/`.
    pub fn name(self) -> &'static str {
        match self {
            Function::InitiateAuthentication => "initiateAuthentication",
            Function::AuthenticateClient => "authenticateClient",
            Function::GetBoundProfilePackage => "getBoundProfilePackage",
            Function::HandleNotification => "handleNotification",
            Function::CancelSession => "cancelSession",
        }
    }

    /// The full path.
    pub fn path(self) -> String {
        format!("/gsma/rsp2/es9plus/{}", self.name())
    }
}

/// transactionId is 1 to 16 bytes (§6.5.2.6).
const TRANSACTION_ID_MAX: usize = 16;

fn failed(function: &'static str, http: StatusCode, e: Error) -> Outcome {
    http::gsma_failed("ES9+", function, http, e)
}

fn success<T: Serialize>(function: &'static str, body: &T) -> Outcome {
    let map = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Outcome {
        response: http::gsma_response(StatusCode::OK, None, map),
        function,
        status: "Executed-Success",
        code: String::new(),
    }
}

/// Throttles the log line of refusals by a limit.
static REFUSALS_LOG: limits::QuietLog = limits::QuietLog::new(std::time::Duration::from_secs(10));

/// A refusal by a limit: counted by reason, logged at most once per period
/// (a flood must not flood the log too), answered like any other refusal.
fn limited(
    app: &App,
    function: &'static str,
    reason: &'static str,
    peer: IpAddr,
    e: Error,
) -> Outcome {
    app.metrics.es9_refused.with_label_values(&[reason]).inc();
    if let Some(n) = REFUSALS_LOG.admit(1) {
        tracing::warn!(function, reason, %peer, refused = n, message = %e.message, "ES9+ calls refused by a limit (count since the last such line)");
    }
    Outcome {
        response: http::gsma_response(StatusCode::OK, Some(&e), Map::new()),
        function,
        status: "Failed",
        code: e.code.to_string(),
    }
}

/// The ES9+ listener's handler: `peer` is the client's address, which
/// InitiateAuthentication's rate is keyed on.
pub async fn handle(
    app: App,
    req: Request<Incoming>,
    peer: IpAddr,
    limiter: &limits::Es9Limiter,
) -> Outcome {
    let lookup = |n: &str| Function::ALL.into_iter().find(|f| f.name() == n);
    let limit = app.config.max_body_bytes;
    let call = match http::gsma_request(
        "ES9+",
        req,
        "/gsma/rsp2/es9plus/",
        lookup,
        Function::name,
        limit,
    )
    .await
    {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let (f, obj) = (call.function, &call.json);
    let name = f.name();
    if let Some(t) = obj.get("transactionId").and_then(serde_json::Value::as_str) {
        http::trace::record(http::trace::Field::TransactionId, &t.to_ascii_uppercase());
    }
    // ES9+ requests carry no header (§6.5.1.1); one sent anyway is ignored.
    let b = Fields(obj);
    let result = match f {
        Function::InitiateAuthentication => {
            if let Err(e) = limiter.initiate(peer) {
                return limited(&app, name, "rate_limited", peer, e);
            }
            match parse_initiate(&b) {
                Ok(r) => match service::initiate_authentication(&app, &r).await {
                    Ok(o) => {
                        http::trace::record(
                            http::trace::Field::TransactionId,
                            &hex::encode_upper(&o.transaction_id),
                        );
                        Ok(success(name, &o))
                    }
                    Err(e) if e.code == limits::SESSIONS_FULL => {
                        return limited(&app, name, "sessions_full", peer, e)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Function::AuthenticateClient => match (
            b.req_hex("transactionId", TRANSACTION_ID_MAX),
            b.req_base64("authenticateServerResponse"),
        ) {
            (Ok(transaction_id), Ok(authenticate_server_response)) => {
                let r = AuthenticateClientRequest {
                    transaction_id,
                    authenticate_server_response,
                };
                service::authenticate_client(&app, &r)
                    .await
                    .map(|o| success(name, &o))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Function::GetBoundProfilePackage => match (
            b.req_hex("transactionId", TRANSACTION_ID_MAX),
            b.req_base64("prepareDownloadResponse"),
        ) {
            (Ok(transaction_id), Ok(prepare_download_response)) => {
                let r = GetBoundProfilePackageRequest {
                    transaction_id,
                    prepare_download_response,
                };
                service::get_bound_profile_package(&app, &r)
                    .await
                    .map(|o| success(name, &o))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Function::HandleNotification => match b.req_base64("pendingNotification") {
            Ok(pending_notification) => {
                // §5.6.4 and §6.3: always 204 with an empty body; what could
                // not be used is logged and counted, never answered.
                let outcome = service::handle_notification(
                    &app,
                    &HandleNotificationRequest {
                        pending_notification,
                    },
                )
                .await;
                let status = match &outcome {
                    service::NotificationOutcome::Dropped(why) => {
                        tracing::info!(reason = %why, "notification dropped");
                        "Dropped"
                    }
                    _ => "Executed-Success",
                };
                let mut r = hyper::Response::new(http::Body::default());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert(
                    "x-admin-protocol",
                    hyper::header::HeaderValue::from_static(http::ADMIN_PROTOCOL),
                );
                return Outcome {
                    response: r,
                    function: name,
                    status,
                    code: String::new(),
                };
            }
            Err(e) => Err(e),
        },
        Function::CancelSession => match (
            b.req_hex("transactionId", TRANSACTION_ID_MAX),
            b.req_base64("cancelSessionResponse"),
        ) {
            (Ok(transaction_id), Ok(cancel_session_response)) => {
                let r = CancelSessionRequest {
                    transaction_id,
                    cancel_session_response,
                };
                service::cancel_session(&app, &r)
                    .await
                    .map(|()| success(name, &Map::new()))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
    };
    result.unwrap_or_else(|e| failed(name, StatusCode::OK, e))
}

fn parse_initiate(b: &Fields<'_>) -> Result<InitiateAuthenticationRequest, Error> {
    Ok(InitiateAuthenticationRequest {
        euicc_challenge: b.req_base64("euiccChallenge")?,
        euicc_info1: b.req_base64("euiccInfo1")?,
        smdp_address: b.req_str("smdpAddress")?.to_owned(),
    })
}
