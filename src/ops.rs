//! The operations listener: Prometheus metrics, liveness and readiness.
//! Plain HTTP with no authentication, so it serves read-only counters and
//! health only; bind it to loopback or a private network.

use crate::app::App;
use crate::http::{self, Outcome};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use std::sync::atomic::Ordering;

/// `GET /metrics`, `/healthz`, `/openapi.json` (the API description),
/// `/readyz` (503 while shutting down or while
/// the store cannot write).
pub async fn handle(app: App, req: Request<Incoming>) -> Outcome {
    let (response, function) = match req.uri().path() {
        "/metrics" => {
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
            crate::es2plus::notify::export_metrics(&app);
            (
                http::text_response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    app.metrics.render(),
                ),
                "metrics",
            )
        }
        "/openapi.json" => (
            http::text_response(StatusCode::OK, "application/json", http::routes::OPENAPI),
            "openapi",
        ),
        "/healthz" => (
            http::text_response(StatusCode::OK, "text/plain", "ok\n"),
            "healthz",
        ),
        "/readyz" if !app.store.writable() => (
            http::text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "store cannot write\n",
            ),
            "readyz",
        ),
        "/readyz" if app.ready.load(Ordering::SeqCst) => (
            http::text_response(StatusCode::OK, "text/plain", "ready\n"),
            "readyz",
        ),
        "/readyz" => (
            http::text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down\n",
            ),
            "readyz",
        ),
        other => (
            http::text_response(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no such endpoint: {other}\n"),
            ),
            "unknown",
        ),
    };
    let status = if response.status().is_success() {
        "ok"
    } else {
        "error"
    };
    Outcome {
        response,
        function,
        status,
        code: String::new(),
    }
}
