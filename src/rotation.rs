//! Online master key rotation: on SIGHUP the running server reloads the
//! master keys (the key file, and the keys on the token with `[hsm]
//! master_key_label`) and re-wraps every stored PPK under the newest key
//! beside live traffic, then retires the old keys.

use crate::app::App;
use crate::profile::protect::Keyring;
use std::sync::Arc;
use tokio::sync::watch;

/// The master keyring as configured: the key file, and the keys on the
/// token with `[hsm] master_key_label`.
fn load(app: &App) -> Result<Keyring, String> {
    crate::hsm::master::configured_ring(&app.config, app.token.as_ref()).map(|(r, _)| r)
}

/// On SIGHUP: reload the master keys (the file, and the token's); if it holds more than one key,
/// re-wrap every stored PPK under the newest one, beside live traffic, then
/// retire the old keys (rewriting the file). `smdpplus keys rotate-master`
/// adds the key and sends the signal.
pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: master key rotation needs a restart");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = shutdown.changed() => return,
        }
        if std::env::var("SMDPPLUS_MASTER_KEY").is_ok() {
            tracing::warn!("SIGHUP ignored: the master key comes from SMDPPLUS_MASTER_KEY");
            continue;
        }
        let path = app.config.master_key_file.clone();
        let ring = match load(&app) {
            Ok(ring) => Arc::new(ring),
            Err(e) => {
                tracing::error!(error = %e, "master key reload failed; keeping the current keys");
                continue;
            }
        };
        *app.keyring.write().unwrap_or_else(|e| e.into_inner()) = ring.clone();
        app.metrics.master_key_id.set(i64::from(ring.current_id()));
        if ring.ids().len() < 2 {
            continue;
        }
        tracing::info!(
            key = ring.current_id(),
            "master key rotation: re-wrapping every stored PPK"
        );
        let (store, metrics, r) = (app.store.clone(), app.metrics.clone(), ring.clone());
        let result = tokio::task::spawn_blocking(move || {
            crate::profile::rotate::rewrap_all(&store, &r, |done, total| {
                metrics.master_key_rewrap_pending.set((total - done) as i64);
                if done % 10_000 == 0 {
                    tracing::info!(done, total, "master key rotation progress");
                }
            })
        })
        .await;
        match result {
            Ok(Ok(n)) => {
                if let Err(e) = app.store.sync().await {
                    tracing::error!(error = %e, "flush after re-wrap failed; old keys kept");
                    continue;
                }
                let mut retired = match load(&app) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "master key file unreadable; old keys kept");
                        continue;
                    }
                };
                if retired.current_id() != ring.current_id() {
                    tracing::warn!("the key file changed during the re-wrap; rotating again on the next SIGHUP");
                    continue;
                }
                match retired.retire_old(&path) {
                    Ok(()) => {
                        *app.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(retired);
                        tracing::info!(
                            rewrapped = n,
                            key = ring.current_id(),
                            "master key rotation complete; old keys retired"
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "could not retire the old keys"),
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "re-wrap failed; old keys kept"),
            Err(e) => tracing::error!(error = %e, "re-wrap task failed; old keys kept"),
        }
    }
}
