//! Prometheus metrics. Names follow the Prometheus conventions:
//! `smdpplus_` prefix, `_total` for counters, base units (seconds).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::time::Duration;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by API, endpoint, outcome (`success`, `refused`, `error`,
    /// `timeout`) and code (a GSMA status code, or the HTTP status).
    pub requests: IntCounterVec,
    /// Request latency by API and endpoint.
    pub latency: HistogramVec,
    /// Profiles by lifecycle state (set at scrape time).
    pub profiles: IntGaugeVec,
    /// Available profiles per operator and profile type (set at scrape
    /// time).
    pub available: IntGaugeVec,
    /// ES2+ notifications waiting in the outbox (set at scrape time).
    pub outbox_depth: IntGauge,
    /// Outbox delivery attempts by result (`delivered`, `failed`).
    pub outbox_attempts: IntCounterVec,
    /// ES2+ notifications waiting per operator (set at scrape time).
    pub outbox_operator_depth: IntGaugeVec,
    /// Age of each operator's oldest waiting notification, seconds (set at
    /// scrape time; 0 when none waits).
    pub outbox_oldest_age: IntGaugeVec,
    /// Outbox items the delivery worker read from the store, per operator.
    pub outbox_examined: IntCounterVec,
    /// Identifiers with a wrong check digit seen on the wire, by kind (`eid`, `iccid`).
    pub check_digit_mismatches: IntCounterVec,
    /// Refused TLS handshakes by listener.
    pub tls_failures: IntCounterVec,
    /// Orders expired by the sweeper.
    pub orders_expired: prometheus::IntCounter,
    /// Mobile Plans requests refused on the operator-web listener, by
    /// reason (`capability`, `csrf`, `rate_limit_ip`, `rate_limit_eid`,
    /// `open_orders_eid`).
    pub mobileplans_refused: IntCounterVec,
    /// Portal orders whose hold ran out unconfirmed (profile returned).
    pub mobileplans_holds_lapsed: prometheus::IntCounter,
    /// Id of the current master key.
    pub master_key_id: IntGauge,
    /// Stored packages still to re-wrap in a master key rotation.
    pub master_key_rewrap_pending: IntGauge,
    /// Open connections by listener.
    pub open_connections: IntGaugeVec,
    /// Connections closed at accept time by listener and reason
    /// (`max_connections`, `max_connections_per_ip`).
    pub connections_refused: IntCounterVec,
    /// Deadlines passed by listener and phase (`tls_handshake`, `headers`,
    /// `body`).
    pub deadline_exceeded: IntCounterVec,
    /// Requests refused for too large or too many header fields (431).
    pub headers_too_large: IntCounterVec,
    /// Failed accepts (such as running out of file descriptors) by listener.
    pub accept_errors: IntCounterVec,
    /// ES9+ calls refused by a limit, by reason (`rate_limited`,
    /// `sessions_full`).
    pub es9_refused: IntCounterVec,
    /// ES9+ notifications answered 204 but not used (unparsable, an
    /// unknown sequence number, a bad signature; SGP.22 §5.6.4).
    pub es9_notifications_dropped: prometheus::IntCounter,
    /// Live RSP sessions by phase (`pending`, `authenticated`; set at
    /// scrape time).
    pub rsp_sessions: IntGaugeVec,
    /// Pending RSP sessions removed to make room for new ones.
    pub rsp_sessions_evicted: prometheus::IntCounter,
    /// Bound Profile Packages delivered again for an order already
    /// Downloaded, by kind (`same_key`: the same bound segments for the
    /// same otPK.EUICC; `rebind`: bound anew for a new one).
    pub bpp_retries: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "smdpplus_requests_total",
                "Requests by API, endpoint, outcome and code (a GSMA status code, or the HTTP status)",
            ),
            &["api", "endpoint", "outcome", "code"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "smdpplus_request_duration_seconds",
                "Request latency by API and endpoint",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["api", "endpoint"],
        )
        .expect("static metric definition");
        let profiles = IntGaugeVec::new(
            Opts::new("smdpplus_profiles", "Profiles by lifecycle state"),
            &["state"],
        )
        .expect("static metric definition");
        let available = IntGaugeVec::new(
            Opts::new(
                "smdpplus_available_profiles",
                "Available profiles per operator and profile type",
            ),
            &["operator", "profile_type"],
        )
        .expect("static metric definition");
        let outbox_depth = IntGauge::new(
            "smdpplus_outbox_depth",
            "ES2+ notifications waiting for delivery",
        )
        .expect("static metric definition");
        let outbox_attempts = IntCounterVec::new(
            Opts::new(
                "smdpplus_outbox_attempts_total",
                "Outbox delivery attempts by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let outbox_operator_depth = IntGaugeVec::new(
            Opts::new(
                "smdpplus_outbox_operator_depth",
                "ES2+ notifications waiting for delivery, per operator",
            ),
            &["operator"],
        )
        .expect("static metric definition");
        let outbox_oldest_age = IntGaugeVec::new(
            Opts::new(
                "smdpplus_outbox_oldest_item_age_seconds",
                "Age of the operator's oldest ES2+ notification waiting for delivery",
            ),
            &["operator"],
        )
        .expect("static metric definition");
        let outbox_examined = IntCounterVec::new(
            Opts::new(
                "smdpplus_outbox_items_examined_total",
                "Outbox items read by the delivery worker, per operator",
            ),
            &["operator"],
        )
        .expect("static metric definition");
        let check_digit_mismatches = IntCounterVec::new(
            Opts::new(
                "smdpplus_check_digit_mismatches_total",
                "Identifiers with a wrong check digit accepted on the wire",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let tls_failures = IntCounterVec::new(
            Opts::new(
                "smdpplus_tls_handshake_failures_total",
                "Refused or timed-out TLS handshakes",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let orders_expired =
            prometheus::IntCounter::new("smdpplus_orders_expired_total", "Download orders expired")
                .expect("static metric definition");
        let mobileplans_refused = IntCounterVec::new(
            Opts::new(
                "smdpplus_mobileplans_refused_total",
                "Mobile Plans requests refused on the operator-web listener, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let mobileplans_holds_lapsed = prometheus::IntCounter::new(
            "smdpplus_mobileplans_holds_lapsed_total",
            "Portal orders not confirmed within their hold; profile returned to Available",
        )
        .expect("static metric definition");
        let master_key_id = IntGauge::new("smdpplus_master_key_id", "Id of the current master key")
            .expect("static metric definition");
        let master_key_rewrap_pending = IntGauge::new(
            "smdpplus_master_key_rewrap_pending",
            "Stored profile packages still to re-wrap under the current master key",
        )
        .expect("static metric definition");
        let open_connections = IntGaugeVec::new(
            Opts::new("smdpplus_open_connections", "Open connections by listener"),
            &["listener"],
        )
        .expect("static metric definition");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "smdpplus_connections_refused_total",
                "Connections closed at accept time because a connection cap was reached",
            ),
            &["listener", "reason"],
        )
        .expect("static metric definition");
        let deadline_exceeded = IntCounterVec::new(
            Opts::new(
                "smdpplus_deadline_exceeded_total",
                "Connections or requests that did not arrive in time, by phase",
            ),
            &["listener", "phase"],
        )
        .expect("static metric definition");
        let headers_too_large = IntCounterVec::new(
            Opts::new(
                "smdpplus_request_headers_too_large_total",
                "Requests refused with 431 for too large or too many header fields",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let accept_errors = IntCounterVec::new(
            Opts::new(
                "smdpplus_accept_errors_total",
                "Failed accepts, such as running out of file descriptors",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let es9_refused = IntCounterVec::new(
            Opts::new(
                "smdpplus_es9_refused_total",
                "ES9+ calls refused by a limit, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let rsp_sessions = IntGaugeVec::new(
            Opts::new("smdpplus_rsp_sessions", "Live ES9+ RSP sessions by phase"),
            &["phase"],
        )
        .expect("static metric definition");
        let rsp_sessions_evicted = prometheus::IntCounter::new(
            "smdpplus_rsp_sessions_evicted_total",
            "Pending RSP sessions removed to make room for new ones",
        )
        .expect("static metric definition");
        let es9_notifications_dropped = prometheus::IntCounter::new(
            "smdpplus_es9_notifications_dropped_total",
            "ES9+ notifications acknowledged with 204 but not used",
        )
        .expect("static metric definition");
        let bpp_retries = IntCounterVec::new(
            Opts::new(
                "smdpplus_bpp_retries_total",
                "Bound Profile Packages delivered again for a Downloaded order, by kind",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(profiles.clone()),
            Box::new(available.clone()),
            Box::new(outbox_depth.clone()),
            Box::new(outbox_attempts.clone()),
            Box::new(outbox_operator_depth.clone()),
            Box::new(outbox_oldest_age.clone()),
            Box::new(outbox_examined.clone()),
            Box::new(check_digit_mismatches.clone()),
            Box::new(tls_failures.clone()),
            Box::new(orders_expired.clone()),
            Box::new(mobileplans_refused.clone()),
            Box::new(mobileplans_holds_lapsed.clone()),
            Box::new(master_key_id.clone()),
            Box::new(master_key_rewrap_pending.clone()),
            Box::new(open_connections.clone()),
            Box::new(connections_refused.clone()),
            Box::new(deadline_exceeded.clone()),
            Box::new(headers_too_large.clone()),
            Box::new(accept_errors.clone()),
            Box::new(es9_refused.clone()),
            Box::new(es9_notifications_dropped.clone()),
            Box::new(rsp_sessions.clone()),
            Box::new(rsp_sessions_evicted.clone()),
            Box::new(bpp_retries.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            profiles,
            available,
            outbox_depth,
            outbox_attempts,
            outbox_operator_depth,
            outbox_oldest_age,
            outbox_examined,
            check_digit_mismatches,
            tls_failures,
            orders_expired,
            mobileplans_refused,
            mobileplans_holds_lapsed,
            master_key_id,
            master_key_rewrap_pending,
            open_connections,
            connections_refused,
            deadline_exceeded,
            headers_too_large,
            accept_errors,
            es9_refused,
            es9_notifications_dropped,
            rsp_sessions,
            rsp_sessions_evicted,
            bpp_retries,
        }
    }

    /// Records one request.
    pub fn observe(&self, api: &str, endpoint: &str, outcome: &str, code: &str, elapsed: Duration) {
        self.requests
            .with_label_values(&[api, endpoint, outcome, code])
            .inc();
        self.latency
            .with_label_values(&[api, endpoint])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = vec![];
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        // The standard process metric, as client libraries name it.
        if let Some(cpu) = process_cpu_seconds("self") {
            buf.extend_from_slice(
                format!(
                    "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                     # TYPE process_cpu_seconds_total counter\n\
                     process_cpu_seconds_total {cpu}\n"
                )
                .as_bytes(),
            );
        }
        buf
    }
}

/// Clock ticks per second of the `/proc` CPU times (`USER_HZ`, 100 on
/// every Linux architecture this runs on).
const USER_HZ: f64 = 100.0;

/// The CPU time (user + system, all threads) process `pid` has used so
/// far, in seconds, from `/proc/<pid>/stat` (`"self"` for this process);
/// `None` where there is no such file. Resolution: one clock tick.
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are
    // counted after its closing parenthesis (field 3 is the state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_cpu_time_from_proc() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let own = super::process_cpu_seconds("self").expect("/proc/self/stat");
        assert!(own >= 0.0);
        assert!(super::process_cpu_seconds(&std::process::id().to_string()).is_some());
        assert!(super::process_cpu_seconds("0").is_none());
        let scrape = String::from_utf8(super::Metrics::new().render()).expect("utf-8");
        assert!(
            scrape.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "),
            "{scrape}"
        );
    }
}
