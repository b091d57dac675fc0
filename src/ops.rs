//! The operations listener: Prometheus metrics, liveness and readiness,
//! and the API description.
//! Plain HTTP with no authentication, so it serves read-only counters and
//! health only; bind it to loopback or a private network.

use crate::app::App;
use crate::http::api::{Api, Call, Route, Unrouted};
use crate::http::error::HttpError;
use crate::http::{self, Body};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::Ordering;

/// The OpenAPI 3.1 description of every HTTP API (ES2+ and ES9+ per the
/// SGP.22 §6.5 JSON binding, the admin API, Mobile Plans, the portal,
/// GetBalance and operations), with ES2+.HandleDownloadProgressInfo
/// (SGP.22 §5.3.5) as a webhook. Kept by hand; the drift test checks it
/// against the routing tables and real answers.
pub const OPENAPI: &str = include_str!("http/openapi.json");

/// The operations endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Prometheus text exposition.
    Metrics,
    /// Liveness: the process answers.
    Healthz,
    /// Readiness: 503 while shutting down or while the store cannot write.
    Readyz,
    /// The OpenAPI 3.1 description of every API the server offers.
    OpenApi,
    /// Moves the test clock (`serve --test-clock`, debug builds only).
    #[cfg(debug_assertions)]
    TestClock,
}

static ROUTES: &[Route<Endpoint>] = &[
    Route {
        method: Method::GET,
        path: "/metrics",
        endpoint: Endpoint::Metrics,
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        endpoint: Endpoint::Healthz,
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        endpoint: Endpoint::Readyz,
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        endpoint: Endpoint::OpenApi,
    },
    #[cfg(debug_assertions)]
    Route {
        method: Method::POST,
        path: "/test/clock",
        endpoint: Endpoint::TestClock,
    },
];

/// Whether the `[hsm]` token (if any) answers: after a lost connection,
/// one call on a fresh session decides.
async fn token_ready(app: &App) -> bool {
    match &app.token {
        None => true,
        Some(t) if t.healthy() => true,
        Some(t) => t.probe().await.is_ok(),
    }
}

/// The operations API.
pub struct Ops(pub App);

impl Api for Ops {
    const NAME: &'static str = "ops";
    const PREFIX: &'static str = "";
    type Endpoint = Endpoint;
    type Error = HttpError;

    fn routes() -> &'static [Route<Endpoint>] {
        ROUTES
    }

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::Metrics => "metrics",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::OpenApi => "openapi",
            #[cfg(debug_assertions)]
            Endpoint::TestClock => "testClock",
        }
    }

    fn unrouted(&self, miss: &Unrouted, req: &Request<Incoming>) -> HttpError {
        HttpError::unrouted(miss, "operations", req.uri().path())
    }

    async fn handle(&self, call: Call<Endpoint>) -> Result<Response<Body>, HttpError> {
        let app = &self.0;
        let text = |status, body: &'static str| http::text_response(status, "text/plain", body);
        Ok(match call.endpoint {
            Endpoint::Metrics => {
                http::text_response(StatusCode::OK, "text/plain; version=0.0.4", metrics(app))
            }
            Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
            Endpoint::Readyz if !app.store.writable() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "store cannot write\n")
            }
            Endpoint::Readyz if !token_ready(app).await => {
                text(StatusCode::SERVICE_UNAVAILABLE, "HSM token unreachable\n")
            }
            Endpoint::Readyz if app.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n"),
            Endpoint::Readyz => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            Endpoint::OpenApi => http::text_response(StatusCode::OK, "application/json", OPENAPI),
            #[cfg(debug_assertions)]
            Endpoint::TestClock => return test_clock(call.req.uri().query()),
        })
    }
}

/// The metrics, with the gauges read from the store at scrape time.
fn metrics(app: &App) -> Vec<u8> {
    for (state, n) in app.store.counts() {
        app.metrics
            .profiles
            .with_label_values(&[state.as_str()])
            .set(n);
    }
    for ((operator, profile_type), n) in app.store.available_by_pool() {
        app.metrics
            .available
            .with_label_values(&[operator.as_str(), profile_type.as_str()])
            .set(n);
    }
    let sessions = app.store.session_counts();
    for (phase, n) in [
        ("pending", sessions.pending),
        ("authenticated", sessions.authenticated),
    ] {
        app.metrics
            .rsp_sessions
            .with_label_values(&[phase])
            .set(n as i64);
    }
    crate::es2plus::notify::export_metrics(app);
    app.metrics.render()
}

/// `POST /test/clock?advance=SECONDS` of `serve --test-clock`: moves the
/// clock forward (0 to 10 years; the store's due times only move
/// forward). Without the flag there is no such endpoint.
#[cfg(debug_assertions)]
fn test_clock(query: Option<&str>) -> Result<Response<Body>, HttpError> {
    if !crate::time::test_clock::enabled() {
        return Err(HttpError::not_found(
            "no operations endpoint \"/test/clock\"",
        ));
    }
    let secs = crate::http::query::Query::parse(query)
        .get("advance")
        .and_then(Result::ok)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|s| (0..=10 * 365 * 86400).contains(s))
        .ok_or_else(|| {
            HttpError::bad_parameter("advance", "advance=SECONDS (0 to 10 years) expected")
        })?;
    let offset = crate::time::test_clock::advance(secs);
    Ok(http::text_response(
        StatusCode::OK,
        "text/plain",
        format!("offset={offset}\n"),
    ))
}
