//! Wiring: opens the store, makes the dev PKI, binds the listeners,
//! runs the background workers (outbox, expiry sweeper), and shuts down
//! gracefully on SIGTERM or SIGINT.

use crate::config::Config;
use crate::http::{self, tls, ConnInfo, Handler, Outcome};
use crate::metrics::Metrics;
use crate::pki::dev;
use crate::profile::protect::Keyring;
use crate::store::{Command, Ctx, NewProfile, Store, StoreOptions};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Shared state of a running server: a cheap-to-clone handle.
#[derive(Clone)]
pub struct App {
    /// The store.
    pub store: Store,
    /// The configuration.
    pub config: Arc<Config>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the outbox worker after a transition that may have enqueued.
    pub outbox_wake: Arc<Notify>,
    /// The SM-DP+ TLS identity, also presented to operators as client certificate.
    pub identity: Arc<tls::Identity>,
    /// False once shutdown started (/readyz).
    pub ready: Arc<AtomicBool>,
    /// DPauth/DPpb credentials and the eUICC chain validator (ES9+).
    pub es9: Arc<crate::es9plus::service::Es9Keys>,
    /// Profile templates by id (the shipped one and `templates` from config).
    pub templates: crate::profile::stored::Templates,
    /// The master keys that wrap every PPK at rest; replaced on rotation.
    pub keyring: Arc<std::sync::RwLock<Arc<Keyring>>>,
    /// Mobile Plans purchase capabilities and limits.
    pub mobile_plans: Arc<crate::mobileplans::guard::Guard>,
}

impl App {
    /// The current master keyring.
    pub fn keyring(&self) -> Arc<Keyring> {
        // A poisoned lock still holds a valid keyring.
        self.keyring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The profile type of the seeded demo profiles.
pub const DEMO_PROFILE_TYPE: &str = "demo";

fn boxed<F>(f: F) -> Handler
where
    F: Fn(
            Request<Incoming>,
            Arc<ConnInfo>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

fn es2_handler(app: App) -> Handler {
    boxed(move |req, conn| {
        let app = app.clone();
        Box::pin(async move {
            if req.uri().path().starts_with(crate::admin::PREFIX) {
                crate::admin::handle(app, req, &conn).await
            } else {
                crate::es2plus::handle(app, req, &conn).await
            }
        })
    })
}

fn es9_handler(app: App) -> Handler {
    let limiter = Arc::new(crate::es9plus::limits::Es9Limiter::new(&app.config.es9));
    boxed(move |req, conn| {
        let (app, limiter) = (app.clone(), limiter.clone());
        Box::pin(async move { crate::es9plus::handle(app, req, conn.peer.ip(), &limiter).await })
    })
}

fn web_handler(app: App) -> Handler {
    boxed(move |req, conn| {
        let app = app.clone();
        Box::pin(async move { crate::mobileplans::web::handle(app, req, &conn).await })
    })
}

fn getbalance_handler(app: App, svc: Arc<crate::getbalance::Service>) -> Handler {
    boxed(move |req, conn| {
        let (app, svc) = (app.clone(), svc.clone());
        Box::pin(async move { crate::getbalance::handle(app, svc, req, &conn).await })
    })
}

fn ops_handler(app: App) -> Handler {
    boxed(move |req, _conn| {
        let app = app.clone();
        Box::pin(async move {
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
        })
    })
}

/// Seeds `n` placeholder profiles of type [`DEMO_PROFILE_TYPE`] for `operator`
/// when the store holds no profile at all.
fn seed_demo(
    store: &Store,
    master: &Keyring,
    templates: &crate::profile::stored::Templates,
    operator: &str,
    n: usize,
) -> Result<usize, String> {
    use crate::profile::{generate::params_iter, stored::StoredPackage};
    if n == 0 || store.counts().iter().any(|(_, c)| *c > 0) {
        return Ok(0);
    }
    // Real, personalized profiles from the shipped template: ICCIDs
    // 89999000... (first 8999900000000000006), IMSIs 001010000000001...,
    // secrets from the OS CSPRNG. Their Ki/OPc are nowhere but wrapped in
    // the store: a demo inventory for downloads, not for a live network.
    let tpl = templates
        .get("smdpplus-usim")
        .ok_or("the shipped template is missing")?;
    let mut rng = crate::profile::params::secret_rng();
    let items: Vec<NewProfile> = params_iter(
        tpl,
        n as u64,
        "899990000000000000",
        "001010000000001",
        &mut rng,
    )
    .map_err(|e| e.to_string())?
    .map(|p| {
        Ok(NewProfile {
            iccid: p.iccid.clone(),
            profile_type: DEMO_PROFILE_TYPE.into(),
            operator: operator.to_owned(),
            package: StoredPackage::template(master, tpl, &p)
                .map_err(|e| e.to_string())?
                .to_bytes(),
        })
    })
    .collect::<Result<_, String>>()?;
    store
        .add_profiles(&items, "smdpplus", crate::time::now())
        .map_err(|e| e.to_string())
}

/// Expires orders whose time to live ran out, releases profiles whose
/// scheduled release time has come, returns the profiles of portal orders
/// not confirmed in time, and prunes idempotency records.
async fn sweeper(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut last_prune = 0i64;
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
        if crate::mobileplans::release_due(&app, now).await > 0 {
            app.outbox_wake.notify_one();
        }
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
        }
        tokio::select! {
            _ = tokio::time::sleep(app.config.expiry_sweep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// While the store cannot write (a full disk, an I/O error), tries once a
/// second to bring it back without a restart ([`Store::recover`]).
async fn store_recovery(app: App, mut shutdown: watch::Receiver<bool>) {
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The pid file the CLI signals for a master key rotation.
pub fn pid_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("smdpplus.pid")
}

/// On SIGHUP: reload the master key file; if it holds more than one key,
/// re-wrap every stored PPK under the newest one, beside live traffic, then
/// retire the old keys (rewriting the file). `smdpplus keys rotate-master`
/// adds the key and sends the signal.
async fn key_rotation(app: App, mut shutdown: watch::Receiver<bool>) {
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
        let ring = match Keyring::load_or_create(&path) {
            Ok((ring, _)) => Arc::new(ring),
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
                let mut retired = match Keyring::load_or_create(&path) {
                    Ok((r, _)) => r,
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

/// A listener's own TLS identity from `tls_cert` and `tls_key` (`section`
/// names where they are configured), `None` when neither is set.
fn listener_identity(
    section: &str,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) -> Result<Option<tls::Identity>, String> {
    match (cert, key) {
        (Some(c), Some(k)) => tls::Identity::load(c, k)
            .map(Some)
            .map_err(|e| format!("{section}tls_cert/tls_key: {e}")),
        (None, None) => Ok(None),
        _ => Err(format!(
            "{section}tls_cert and tls_key go together: give both or neither"
        )),
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(mut config: Config) -> Result<(), String> {
    config.load_icons()?;
    http::listener::raise_fd_limit(&config.listeners);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    {
        // The data directory holds the master key, the dev PKI's keys and
        // the database: the owner's only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    }
    let (pki, created) = dev::ensure(&config.data_dir, config.smdp_host(), config.dev_operator())
        .map_err(|e| e.to_string())?;
    if created {
        println!(
            "smdpplus: created a dev PKI in {}",
            config.data_dir.join("pki").display()
        );
        println!(
            "  TLS server certificate (DPtls, issued by the SGP.26 test CI): {}",
            pki.tls_cert.display()
        );
        println!("  operator CA: {}", pki.operator_ca.display());
        println!(
            "  operator client certificate: {} (key {})",
            pki.operator_client_cert.display(),
            pki.operator_client_key.display()
        );
    }
    let store = Store::open(
        &config.db_path(),
        StoreOptions {
            order_ttl: config.order_ttl,
        },
    )
    .map_err(|e| e.to_string())?;
    let master = match std::env::var("SMDPPLUS_MASTER_KEY") {
        Ok(text) => Keyring::parse(&text).map_err(|e| format!("SMDPPLUS_MASTER_KEY: {e}"))?,
        Err(_) => {
            let (ring, created) =
                Keyring::load_or_create(&config.master_key_file).map_err(|e| e.to_string())?;
            if created {
                println!(
                    "smdpplus: created the master key {} (mode 0600; back it up, it unlocks every stored profile)",
                    config.master_key_file.display()
                );
            }
            ring
        }
    };
    let templates = crate::profile::stored::Templates::load(&config.templates)?;
    let seeded = seed_demo(
        &store,
        &master,
        &templates,
        config.dev_operator(),
        config.seed_demo_profiles,
    )?;
    if seeded > 0 {
        store.flush_blocking().map_err(|e| e.to_string())?;
        println!("smdpplus: seeded {seeded} demo profiles (profileType {DEMO_PROFILE_TYPE:?}) for operator {}", config.dev_operator());
    }

    let identity = listener_identity("", &config.tls_cert, &config.tls_key)?.map_or_else(
        || tls::Identity::load(&pki.tls_cert, &pki.tls_key).map_err(|e| e.to_string()),
        Ok,
    )?;
    let web_identity = listener_identity(
        "[mobile_plans] ",
        &config.mobile_plans.tls_cert,
        &config.mobile_plans.tls_key,
    )?;
    let balance_identity = listener_identity(
        "[getbalance] ",
        &config.getbalance.tls_cert,
        &config.getbalance.tls_key,
    )?;
    let operator_ids: Vec<String> = config.operators.iter().map(|o| o.id.clone()).collect();
    let cas: Vec<&std::path::Path> = config.operator_ca.iter().map(|p| p.as_path()).collect();
    let es2_tls = tls::es2_server(&identity, &cas, &operator_ids).map_err(|e| e.to_string())?;
    let es9_tls = tls::es9_server(&identity).map_err(|e| e.to_string())?;
    // The operator-web listener is browser-facing: server authentication only.
    let web_tls =
        tls::es9_server(web_identity.as_ref().unwrap_or(&identity)).map_err(|e| e.to_string())?;
    // GetBalance asks for a client certificate and judges it per request.
    let balance_tls = tls::getbalance_server(balance_identity.as_ref().unwrap_or(&identity))
        .map_err(|e| e.to_string())?;
    let balance_svc = Arc::new(
        crate::getbalance::Service::from_config(&config).map_err(|e| format!("GetBalance: {e}"))?,
    );

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))
    };
    let es9 = bind(config.es9_listen).await?;
    if config.smdp_address_derived {
        // Not configured: name the port LPAs must use (443 is implied).
        if let Ok(a) = es9.local_addr() {
            config.smdp_address = crate::config::derived_smdp_address(a.port());
        }
    }
    let es2 = bind(config.es2_listen).await?;
    let ops = bind(config.ops_listen).await?;
    let web = bind(config.operator_web_listen).await?;
    let balance = bind(config.getbalance_listen).await?;
    let addr = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!(
        "smdpplus: ES9+ on https://{}  ES2+ on https://{} (mutual TLS)  operations on http://{}  operator web on https://{}  GetBalance on https://{}",
        addr(&es9),
        addr(&es2),
        addr(&ops),
        addr(&web),
        addr(&balance)
    );
    // Machine-readable line for scripts and tests; new listeners are
    // appended as more `key=address` pairs.
    println!(
        "ready es9={} es2={} ops={} web={} balance={}",
        addr(&es9),
        addr(&es2),
        addr(&ops),
        addr(&web),
        addr(&balance)
    );

    let es9_keys = crate::es9plus::service::Es9Keys::from_config(&config)
        .map_err(|e| format!("ES9+ credentials: {e}"))?;
    let mobile_plans = crate::mobileplans::guard::Guard::new(&config)
        .map_err(|e| format!("[mobile_plans] capability key: {e}"))?;
    let app = App {
        store: store.clone(),
        config: Arc::new(config),
        metrics: Arc::new(Metrics::new()),
        outbox_wake: Arc::new(Notify::new()),
        identity: Arc::new(identity),
        ready: Arc::new(AtomicBool::new(true)),
        es9: Arc::new(es9_keys),
        keyring: Arc::new(std::sync::RwLock::new(Arc::new(master))),
        templates,
        mobile_plans: Arc::new(mobile_plans),
    };
    let (tx, rx) = watch::channel(false);
    let drain = Duration::from_secs(30);
    let m = app.metrics.clone();
    let servers = vec![
        tokio::spawn(http::serve(
            "es9plus",
            es9,
            Some(es9_tls),
            es9_handler(app.clone()),
            m.clone(),
            app.config.listeners.es9.clone(),
            rx.clone(),
            drain,
        )),
        tokio::spawn(http::serve(
            "es2plus",
            es2,
            Some(es2_tls),
            es2_handler(app.clone()),
            m.clone(),
            app.config.listeners.es2.clone(),
            rx.clone(),
            drain,
        )),
        tokio::spawn(http::serve(
            "ops",
            ops,
            None,
            ops_handler(app.clone()),
            m.clone(),
            app.config.listeners.ops.clone(),
            rx.clone(),
            drain,
        )),
        tokio::spawn(http::serve(
            "operator-web",
            web,
            Some(web_tls),
            web_handler(app.clone()),
            m.clone(),
            app.config.listeners.operator_web.clone(),
            rx.clone(),
            drain,
        )),
        tokio::spawn(http::serve(
            "getbalance",
            balance,
            Some(balance_tls),
            getbalance_handler(app.clone(), balance_svc),
            m,
            app.config.listeners.getbalance.clone(),
            rx.clone(),
            drain,
        )),
    ];
    let workers = vec![
        tokio::spawn(crate::es2plus::notify::run(app.clone(), rx.clone())),
        tokio::spawn(sweeper(app.clone(), rx.clone())),
        tokio::spawn(key_rotation(app.clone(), rx.clone())),
        tokio::spawn(store_recovery(app.clone(), rx.clone())),
    ];
    app.metrics
        .master_key_id
        .set(i64::from(app.keyring().current_id()));
    // Present from the start, at 0, so that rates and alerts over them see
    // the first event (a series born with its first increment hides it).
    for result in ["delivered", "failed"] {
        let _ = app.metrics.outbox_attempts.with_label_values(&[result]);
    }
    for reason in ["rate_limited", "sessions_full"] {
        let _ = app.metrics.es9_refused.with_label_values(&[reason]);
    }
    let pid_path = pid_file(&app.config.data_dir);
    if let Err(e) = std::fs::write(&pid_path, std::process::id().to_string()) {
        tracing::warn!(error = %e, path = %pid_path.display(), "could not write the pid file");
    }

    shutdown_signal().await;
    tracing::info!("shutdown: no new connections; finishing in-flight requests");
    app.ready.store(false, Ordering::SeqCst);
    let _ = tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    for w in workers {
        let _ = w.await;
    }
    store.flush_blocking().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&pid_path);
    tracing::info!("shutdown complete");
    Ok(())
}
