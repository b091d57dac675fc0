//! The background workers that keep the store's promises over time:
//! expired orders, scheduled releases (Mobile Plans delayed downloads),
//! lapsed portal holds, RSP sessions past their life, old idempotency
//! records, and the store's own recovery after a full disk.

use crate::app::App;
use crate::error::codes;
use crate::store::{Command, Ctx};
use std::time::Duration;
use tokio::sync::watch;

/// Expires orders whose time to live ran out, releases profiles whose
/// scheduled release time has come, returns the profiles of portal orders
/// not confirmed in time, and prunes idempotency records.
pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut last_prune = 0i64;
    let mut advances = crate::time::Advances::new();
    loop {
        let now = crate::time::now();
        match app.store.due_expiries(now) {
            Ok(due) => {
                let expired_any = !due.is_empty();
                for iccid in due {
                    let cmd = Command::Expire {
                        iccid: iccid.clone(),
                    };
                    match app.store.apply(
                        &cmd,
                        &Ctx {
                            caller: "smdpplus",
                            now,
                            idem: None,
                        },
                    ) {
                        Ok(_) => {
                            app.metrics.orders_expired.inc();
                            tracing::info!(%iccid, "download order expired");
                        }
                        // Another node sharing the store expired it first (the
                        // command locks the record and checks it again).
                        Err(e) if e.code == codes::ORDER_EXPIRED => {
                            tracing::debug!(%iccid, "order no longer expiring")
                        }
                        Err(e) => tracing::warn!(%iccid, error = %e, "could not expire order"),
                    }
                }
                if expired_any {
                    if let Err(e) = app.store.sync().await {
                        tracing::error!(error = %e, "flush after expiry failed");
                    }
                    app.outbox_wake.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "expiry scan failed"),
        }
        // Delayed downloads whose release time has come ([MP-Callbacks] delayed download).
        crate::mobileplans::release_due(&app, now).await;
        // Portal orders not confirmed within their hold.
        crate::mobileplans::lapse_due(&app, now).await;
        match app.store.sweep_sessions(now) {
            Ok(n) if n > 0 => tracing::debug!(expired = n, "RSP sessions expired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "session sweep failed"),
        }
        if now - last_prune > 3600 {
            last_prune = now;
            match app.store.prune_idempotency(now - 24 * 3600) {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "idempotency records pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "idempotency prune failed"),
            }
            let g = &app.config.getbalance;
            let window = i64::try_from(g.transaction_id_window_secs).unwrap_or(i64::MAX);
            match app
                .store
                .prune_uses(now.saturating_sub(window), g.transaction_id_window_max)
            {
                Ok(n) if n > 0 => {
                    tracing::info!(pruned = n, "GetBalance transaction ids forgotten")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "GetBalance transaction id prune failed"),
            }
            match app.store.sweep_kept_packages(now) {
                Ok(n) if n > 0 => tracing::info!(removed = n, "expired retry packages removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retry package sweep failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(app.config.expiry_sweep) => {}
            _ = advances.next() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// While the store cannot write (a full disk, an I/O error), tries once a
/// second to bring it back without a restart ([`crate::store::Store::recover`]).
pub async fn store_recovery(app: App, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        if app.store.writable() {
            continue;
        }
        let store = app.store.clone();
        match tokio::task::spawn_blocking(move || store.recover()).await {
            Ok(Ok(true)) => app.outbox_wake.notify_one(),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e.message, "store recovery failed"),
            Err(e) => tracing::warn!(error = %e, "store recovery task failed"),
        }
    }
}
