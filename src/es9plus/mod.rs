//! ES9+ (LPA -> SM-DP+), SGP.22 §5.6 and the JSON binding §6.5.2.6-6.5.2.10.
//!
//! [`Es9plus`] is the HTTP API: it checks the headers real LPAs send,
//! parses the JSON fields into the [`dto`] structs, calls [`service`], and
//! renders the GSMA envelope. The protocol lives in [`service`], the
//! session phases in [`session`].

pub mod dto;
pub mod limits;
pub mod service;
pub mod session;

use crate::app::App;
use crate::error::Error;
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::fields::Fields;
use crate::http::gsma::{self, GsmaError};
use crate::http::{self, trace};
use dto::*;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
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
    pub fn path(self) -> &'static str {
        ROUTES
            .iter()
            .find(|r| r.endpoint == self)
            .map_or("", |r| r.path)
    }
}

/// Every function is a POST to its own path (§6.5.2).
static ROUTES: &[Route<Function>] = &[
    Route {
        method: Method::POST,
        path: "/gsma/rsp2/es9plus/initiateAuthentication",
        endpoint: Function::InitiateAuthentication,
    },
    Route {
        method: Method::POST,
        path: "/gsma/rsp2/es9plus/authenticateClient",
        endpoint: Function::AuthenticateClient,
    },
    Route {
        method: Method::POST,
        path: "/gsma/rsp2/es9plus/getBoundProfilePackage",
        endpoint: Function::GetBoundProfilePackage,
    },
    Route {
        method: Method::POST,
        path: "/gsma/rsp2/es9plus/handleNotification",
        endpoint: Function::HandleNotification,
    },
    Route {
        method: Method::POST,
        path: "/gsma/rsp2/es9plus/cancelSession",
        endpoint: Function::CancelSession,
    },
];

/// transactionId is 1 to 16 bytes (§6.5.2.6).
const TRANSACTION_ID_MAX: usize = 16;

/// A successful function execution with the fields of `body`.
fn success<T: Serialize>(body: &T) -> Result<Response<http::Body>, GsmaError> {
    let map = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Ok(gsma::success(map))
}

/// Throttles the log line of refusals by a limit.
static REFUSALS_LOG: limits::QuietLog = limits::QuietLog::new(std::time::Duration::from_secs(10));

/// ES9+ as the SM-DP+ serves it to LPAs.
pub struct Es9plus {
    app: App,
    limiter: limits::Es9Limiter,
}

impl Es9plus {
    /// The API with its limits from `[es9]`.
    pub fn new(app: App) -> Es9plus {
        let limiter = limits::Es9Limiter::new(&app.config.es9);
        Es9plus { app, limiter }
    }

    /// A refusal by a limit: counted by reason, logged at most once per
    /// period (a flood must not flood the log too), answered like any other
    /// refusal.
    fn limited(
        &self,
        function: Function,
        reason: &'static str,
        peer: IpAddr,
        e: Error,
    ) -> GsmaError {
        self.app
            .metrics
            .es9_refused
            .with_label_values(&[reason])
            .inc();
        if let Some(n) = REFUSALS_LOG.admit(1) {
            tracing::warn!(function = function.name(), reason, %peer, refused = n, message = %e.message, "ES9+ calls refused by a limit (count since the last such line)");
        }
        GsmaError {
            http: StatusCode::OK,
            error: e,
            logged: true,
            close: false,
        }
    }

    /// §5.6.1: rate-limited per client address, then bounded by the
    /// session cap.
    async fn initiate(
        &self,
        b: &Fields<'_>,
        peer: IpAddr,
    ) -> Result<Response<http::Body>, GsmaError> {
        let f = Function::InitiateAuthentication;
        self.limiter
            .initiate(peer)
            .map_err(|e| self.limited(f, "rate_limited", peer, e))?;
        let r = InitiateAuthenticationRequest {
            euicc_challenge: b.req_base64("euiccChallenge")?,
            euicc_info1: b.req_base64("euiccInfo1")?,
            smdp_address: b.req_str("smdpAddress")?.to_owned(),
        };
        let o = service::initiate_authentication(&self.app, &r)
            .await
            .map_err(|e| match e.code == limits::SESSIONS_FULL {
                true => self.limited(f, "sessions_full", peer, e),
                false => e.into(),
            })?;
        trace::record(
            trace::Field::TransactionId,
            &hex::encode_upper(&o.transaction_id),
        );
        success(&o)
    }

    /// §5.6.4 and §6.3: always 204 with an empty body; what could not be
    /// used is logged and counted, never answered.
    async fn notification(&self, b: &Fields<'_>) -> Result<Response<http::Body>, GsmaError> {
        let r = HandleNotificationRequest {
            pending_notification: b.req_base64("pendingNotification")?,
        };
        if let service::NotificationOutcome::Dropped(why) =
            service::handle_notification(&self.app, &r).await
        {
            self.app.metrics.es9_notifications_dropped.inc();
            tracing::info!(reason = %why, "notification dropped");
        }
        let mut r = Response::new(http::Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut().insert(
            "x-admin-protocol",
            hyper::header::HeaderValue::from_static(gsma::ADMIN_PROTOCOL),
        );
        Ok(r)
    }
}

impl Api for Es9plus {
    const NAME: &'static str = "es9plus";
    const PREFIX: &'static str = "/gsma/rsp2/es9plus";
    type Endpoint = Function;
    type Error = GsmaError;

    fn routes() -> &'static [Route<Function>] {
        ROUTES
    }

    fn name(f: Function) -> &'static str {
        f.name()
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> GsmaError {
        GsmaError::unrouted(miss, "ES9+", req.uri().path())
    }

    async fn handle(&self, call: Call<Function>) -> Result<Response<http::Body>, GsmaError> {
        let body = gsma::read_call(call.req, self.app.config.max_body_bytes).await?;
        let obj = &body.json;
        if let Some(t) = obj.get("transactionId").and_then(Value::as_str) {
            trace::record(trace::Field::TransactionId, &t.to_ascii_uppercase());
        }
        // ES9+ requests carry no header (§6.5.1.1); one sent anyway is ignored.
        let b = Fields(obj);
        let app = &self.app;
        let transaction_id = || b.req_hex("transactionId", TRANSACTION_ID_MAX);
        match call.endpoint {
            Function::InitiateAuthentication => self.initiate(&b, call.conn.peer.ip()).await,
            Function::AuthenticateClient => {
                let r = AuthenticateClientRequest {
                    transaction_id: transaction_id()?,
                    authenticate_server_response: b.req_base64("authenticateServerResponse")?,
                };
                success(&service::authenticate_client(app, &r).await?)
            }
            Function::GetBoundProfilePackage => {
                let r = GetBoundProfilePackageRequest {
                    transaction_id: transaction_id()?,
                    prepare_download_response: b.req_base64("prepareDownloadResponse")?,
                };
                success(&service::get_bound_profile_package(app, &r).await?)
            }
            Function::HandleNotification => self.notification(&b).await,
            Function::CancelSession => {
                let r = CancelSessionRequest {
                    transaction_id: transaction_id()?,
                    cancel_session_response: b.req_base64("cancelSessionResponse")?,
                };
                service::cancel_session(app, &r).await?;
                success(&Map::new())
            }
        }
    }
}
