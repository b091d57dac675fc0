//! ES2+.HandleDownloadProgressInfo (SM-DP+ -> Operator, §5.3.5, §6.5.2.5)
//! delivered from the durable outbox.
//!
//! Items are written by the same transaction as the transition that caused
//! them, so a notification is never lost once its transition is durable.
//! Delivery is at least once: an item is removed only after the operator
//! answered 2xx, and retried with exponential backoff otherwise, across
//! restarts. The functionCallIdentifier is stable per item, so the operator
//! can drop a redelivery.

use crate::app::App;
use crate::http::client::Client;
use crate::http::tls;
use crate::store::{OutboxItem, PointStatus};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

/// Path of the operator's notification handler (§6.5.2, table 57).
pub const PATH: &str = "/gsma/rsp2/es2plus/handleDownloadProgressInfo";

/// The JSON request message for an outbox item.
pub fn message(item: &OutboxItem, requester: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "header".into(),
        json!({"functionRequesterIdentifier": requester, "functionCallIdentifier": format!("smdpplus-{}", item.id)}),
    );
    if let Some(eid) = &item.eid {
        m.insert("eid".into(), json!(eid));
    }
    m.insert("iccid".into(), json!(item.iccid));
    m.insert("profileType".into(), json!(item.profile_type));
    m.insert(
        "timestamp".into(),
        json!(crate::time::datetime(item.timestamp)),
    );
    m.insert("notificationPointId".into(), json!(item.point));
    let status = match &item.status {
        PointStatus::Success => json!({"status": "Executed-Success"}),
        PointStatus::Failed {
            subject,
            reason,
            message,
        } => json!({"status": "Failed", "statusCodeData": {
            "subjectCode": subject, "reasonCode": reason, "message": message}}),
    };
    m.insert("notificationPointStatus".into(), status);
    if let Some(d) = &item.result_data {
        use base64::Engine;
        m.insert(
            "resultData".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(d)),
        );
    }
    Value::Object(m)
}

/// Delay before attempt `attempts + 1`: doubling from the initial backoff,
/// capped, with up to 20% random jitter so retries do not synchronise.
pub fn backoff(initial_ms: u64, max_ms: u64, attempts: u32) -> u64 {
    let base = initial_ms
        .saturating_mul(1u64 << attempts.min(30))
        .min(max_ms);
    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=base / 5);
    base.saturating_sub(jitter)
}

/// Runs the outbox until shutdown.
///
/// Each pass reads, for every operator that has a `notification_url`, only
/// the items of that operator that are due (the `od/` index), at most
/// `[outbox] batch_size`, and hands them to a task of that operator, which
/// delivers them with at most `max_in_flight_per_operator` requests at a
/// time. Operators are delivered concurrently: one whose endpoint times out
/// holds up only its own items. Items of an operator without a
/// `notification_url` are held and never read here (the configuration is
/// read at start, so a restart that configures one sends them). Between
/// passes the worker sleeps until the earliest next attempt in the index or
/// until a transition wakes it.
pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut clients: HashMap<String, Client> = HashMap::new();
    let live: Vec<String> = app
        .config
        .operators
        .iter()
        .filter(|o| o.notification_url.is_some())
        .map(|o| o.id.clone())
        .collect();
    if let Ok(depths) = app.store.outbox_depths() {
        for (operator, n, _) in depths {
            if n > 0 && !live.contains(&operator) {
                tracing::info!(%operator, items = n, "notifications held: operator has no notification_url");
            }
        }
    }
    let batch = app.config.outbox.batch_size.max(1);
    // Operators with a batch in flight, by the id of the task delivering it.
    let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut advances = crate::time::Advances::new();
    loop {
        let now = crate::time::now_ms();
        let mut next_due: Option<i64> = None;
        for operator in &live {
            if busy.values().any(|b| b == operator) {
                continue;
            }
            match app.store.outbox_due(operator, now, batch) {
                Ok((items, next)) => {
                    if items.is_empty() {
                        if let Some(d) = next {
                            next_due = Some(next_due.map_or(d, |n| n.min(d)));
                        }
                        continue;
                    }
                    app.metrics
                        .outbox_examined
                        .with_label_values(&[operator.as_str()])
                        .inc_by(items.len() as u64);
                    let client = client_for(&app, &mut clients, operator);
                    let app = app.clone();
                    let task = tasks.spawn(async move { deliver_batch(&app, client, items).await });
                    busy.insert(task.id(), operator.clone());
                }
                Err(e) => tracing::error!(error = %e, %operator, "outbox read failed"),
            }
        }
        // Alone on its store, a transition wakes the worker; on a store
        // shared by several nodes another node's items (enqueued there, or
        // left by a node that died) are found by looking again, at the
        // latest after a lease.
        let idle_ms = if app.store.shared() {
            app.config.outbox.lease_secs.clamp(1, 60) * 1000
        } else {
            60_000
        };
        let wait = next_due
            .map(|d| {
                Duration::from_millis((d - crate::time::now_ms()).clamp(0, idle_ms as i64) as u64)
            })
            .unwrap_or(Duration::from_millis(idle_ms));
        tokio::select! {
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // Its attempts rescheduled its items: look at that operator again.
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "outbox delivery task failed");
                        e.id()
                    }
                };
                busy.remove(&id);
            }
            _ = app.outbox_wake.notified() => {}
            _ = advances.next() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                // An attempt cut short is retried after the restart
                // (delivery is at least once).
                tasks.abort_all();
                return;
            }
        }
    }
}

/// Delivers one operator's due items, at most `max_in_flight_per_operator`
/// at a time, then flushes what the attempts recorded.
async fn deliver_batch(app: &App, client: Result<Client, String>, items: Vec<OutboxItem>) {
    let limit = app.config.outbox.max_in_flight_per_operator.max(1);
    let mut inflight = tokio::task::JoinSet::new();
    for item in items {
        while inflight.len() >= limit {
            inflight.join_next().await;
        }
        let (app, client) = (app.clone(), client.clone());
        inflight.spawn(async move { deliver(&app, client, item).await });
    }
    while inflight.join_next().await.is_some() {}
    if let Err(e) = app.store.sync().await {
        tracing::error!(error = %e, "outbox flush failed");
    }
}

/// Sets the outbox gauges from the store's per-operator counts and each
/// operator's oldest item (at scrape time).
pub fn export_metrics(app: &App) {
    match app.store.outbox_depths() {
        Ok(depths) => {
            let now = crate::time::now();
            let mut total = 0;
            for (operator, n, oldest) in depths {
                total += n;
                app.metrics
                    .outbox_operator_depth
                    .with_label_values(&[operator.as_str()])
                    .set(n);
                app.metrics
                    .outbox_oldest_age
                    .with_label_values(&[operator.as_str()])
                    .set(oldest.map_or(0, |t| (now - t).max(0)));
            }
            app.metrics.outbox_depth.set(total);
        }
        Err(e) => {
            tracing::warn!(error = %e, "outbox depths unavailable");
            app.metrics.outbox_depth.set(-1);
        }
    }
}

fn client_for(
    app: &App,
    cache: &mut HashMap<String, Client>,
    operator: &str,
) -> Result<Client, String> {
    if let Some(c) = cache.get(operator) {
        return Ok(c.clone());
    }
    let op = app
        .config
        .operator(operator)
        .ok_or_else(|| format!("operator {operator} is not configured"))?;
    let ca = op
        .notification_ca
        .clone()
        .unwrap_or_else(|| crate::pki::dev::DevPki::paths(&app.config.data_dir).ci_cert);
    let cfg =
        tls::client(&[ca.as_path()], Some(&app.identity), false).map_err(|e| e.to_string())?;
    let c = Client::new(
        cfg,
        Duration::from_millis(app.config.outbox.request_timeout_ms),
    );
    cache.insert(operator.to_owned(), c.clone());
    Ok(c)
}

async fn deliver(app: &App, client: Result<Client, String>, item: OutboxItem) {
    let result = async {
        let client = client?;
        let op = app
            .config
            .operator(&item.operator)
            .ok_or("operator is not configured")?;
        let base = op
            .notification_url
            .as_deref()
            .ok_or("operator has no notification_url")?;
        let url = format!("{}{PATH}", base.trim_end_matches('/'));
        let body = serde_json::to_vec(&message(&item, app.config.smdp_host())).unwrap_or_default();
        let resp = client.post_gsma(&url, body).await?;
        if (200..300).contains(&resp.status) {
            Ok(())
        } else {
            Err(format!("operator answered HTTP {}", resp.status))
        }
    }
    .await;
    match result {
        Ok(()) => {
            app.metrics
                .outbox_attempts
                .with_label_values(&["delivered"])
                .inc();
            tracing::info!(id = item.id, iccid = %item.iccid, point = item.point, attempts = item.attempts + 1, "notification delivered");
            if let Err(e) = app.store.outbox_delivered(item.id) {
                tracing::error!(error = %e, id = item.id, "could not remove a delivered notification");
            }
        }
        Err(why) => {
            app.metrics
                .outbox_attempts
                .with_label_values(&["failed"])
                .inc();
            let delay = backoff(
                app.config.outbox.initial_backoff_ms,
                app.config.outbox.max_backoff_ms,
                item.attempts,
            );
            tracing::warn!(id = item.id, iccid = %item.iccid, attempts = item.attempts + 1, retry_in_ms = delay, error = %why, "notification not delivered");
            if let Err(e) =
                app.store
                    .outbox_failed(&item, &why, crate::time::now_ms() + delay as i64)
            {
                tracing::error!(error = %e, id = item.id, "could not record a failed delivery");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert!(backoff(1000, 60_000, 0) <= 1000 && backoff(1000, 60_000, 0) >= 800);
        assert!(backoff(1000, 60_000, 3) <= 8000 && backoff(1000, 60_000, 3) >= 6400);
        assert!(backoff(1000, 60_000, 40) <= 60_000);
    }

    #[test]
    fn message_has_the_spec_fields() {
        let item = OutboxItem {
            v: 1,
            id: 7,
            operator: "op".into(),
            eid: None,
            iccid: "8900000000000000001".into(),
            profile_type: "demo".into(),
            timestamp: 0,
            point: 1,
            status: PointStatus::failed(crate::error::codes::ORDER_EXPIRED, "expired"),
            result_data: None,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        };
        let m = message(&item, "smdp.example.com");
        assert_eq!(m["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(m["notificationPointId"], 1);
        assert_eq!(
            m["notificationPointStatus"]["statusCodeData"]["subjectCode"],
            "8.8.5"
        );
        assert_eq!(m["header"]["functionCallIdentifier"], "smdpplus-7");
        assert!(m.get("eid").is_none());
    }
}
