//! Wiring: opens the store, makes the dev PKI, binds the listeners,
//! runs the background workers (outbox, expiry sweeper), and shuts down
//! gracefully on SIGTERM or SIGINT.

use crate::app::{pid_file, App, DEMO_PROFILE_TYPE};
use crate::config::Config;
use crate::error::codes;
use crate::http::api::{Apis, Mounted};
use crate::http::{self, tls, Listener};
use crate::metrics::Metrics;
use crate::pki::dev;
use crate::profile::protect::Keyring;
use crate::store::{NewProfile, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Every route the listeners serve: the routing tables of their APIs, for
/// the API description (`GET /openapi.json`) and its drift test.
pub fn routes() -> Vec<http::api::RouteInfo> {
    use crate::http::api::routes_of;
    [
        routes_of::<crate::es9plus::Es9plus>(),
        routes_of::<crate::es2plus::Es2plus>(),
        routes_of::<crate::admin::Admin>(),
        routes_of::<crate::ops::Ops>(),
        routes_of::<crate::mobileplans::web::MobilePlans>(),
        routes_of::<crate::mobileplans::portal::Portal>(),
        routes_of::<crate::getbalance::GetBalance>(),
    ]
    .concat()
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
    match store.add_profiles(&items, "smdpplus", crate::time::now()) {
        Ok(n) => Ok(n),
        // Another node sharing the store seeded it meanwhile.
        Err(e) if e.code == codes::ICCID_INVALID && e.message.contains("already in inventory") => {
            Ok(0)
        }
        Err(e) => Err(e.to_string()),
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

/// A listener's own TLS identity from `tls_cert` and `tls_key` (`section`
/// names where they are configured), `None` when neither is set. A
/// `tls_key` given as a `pkcs11:` URI is a NIST P-256 key on the `[hsm]`
/// token, checked like the ES9+ keys (present, a test signature verifies)
/// and against the certificate.
fn listener_identity(
    section: &str,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
    token: Option<&Arc<crate::hsm::Token>>,
) -> Result<Option<tls::Identity>, String> {
    let bad = |e: String| format!("{section}tls_cert/tls_key: {e}");
    match (cert, key) {
        (Some(c), Some(k)) => match k.to_str() {
            Some(uri) if uri.starts_with(crate::hsm::uri::SCHEME) => {
                let uri = crate::hsm::KeyUri::parse(uri).map_err(|e| bad(e.to_string()))?;
                let token = token.ok_or_else(|| {
                    bad(format!(
                        "{uri} names a key on a token, but there is no [hsm] section"
                    ))
                })?;
                let leaf = crate::pki::load_certs(c)
                    .map_err(|e| bad(e.to_string()))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| bad(format!("{}: no certificate", c.display())))?;
                let cert_key = crate::crypto::PublicKey::from_certificate_der(&leaf)
                    .map_err(|e| bad(format!("{}: {e}", c.display())))?;
                let key = crate::hsm::TokenKey::open(token, uri, Some(&cert_key))
                    .map_err(|e| bad(e.to_string()))?;
                let key = crate::hsm::tls::TlsTokenKey::new(key).map_err(bad)?;
                tls::Identity::with_token_key(c, key)
                    .map(Some)
                    .map_err(|e| bad(e.to_string()))
            }
            _ => tls::Identity::load(c, k)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
        },
        (None, None) => Ok(None),
        _ => Err(format!(
            "{section}tls_cert and tls_key go together: give both or neither"
        )),
    }
}

/// Why the server could not start, or could not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration, a key, a certificate or a template is unusable.
    #[error("{0}")]
    Setup(String),
    /// A listener could not bind its address.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened or flushed.
    #[error("store: {}", .0.message)]
    Store(#[from] crate::error::Error),
    /// The `[hsm]` token could not be opened or logged in to.
    #[error("[hsm] token: {0}")]
    Hsm(#[from] crate::hsm::HsmError),
}

impl From<String> for ServerError {
    fn from(m: String) -> ServerError {
        ServerError::Setup(m)
    }
}

impl From<&str> for ServerError {
    fn from(m: &str) -> ServerError {
        ServerError::Setup(m.to_owned())
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(mut config: Config) -> Result<(), ServerError> {
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
    let store = Store::open_configured(&config, true)?;
    // The token, and every key configured on it, before anything listens:
    // a server with a key missing, not matching its certificate or unable
    // to sign does not start.
    let token = match &config.hsm {
        Some(h) => {
            let t = crate::hsm::Token::open(h)?;
            tracing::info!(token = %t.label(), module = %h.module.display(), "PKCS#11 token opened");
            Some(t)
        }
        None => None,
    };
    let es9_keys = crate::es9plus::service::Es9Keys::from_config(&config, token.as_ref())
        .map_err(|e| format!("ES9+ credentials: {e}"))?;
    let on_token = es9_keys
        .keyring
        .iter()
        .flat_map(|s| [s.dpauth(), s.dppb()])
        .filter(|c| c.key().on_token())
        .count();
    if on_token > 0 {
        tracing::info!(keys = on_token, "DPauth/DPpb keys on the token checked (present, match their certificates, test signatures verify)");
    }
    let (master, created) = crate::hsm::master::configured_ring(&config, token.as_ref())?;
    if created && master.current_on_token() {
        println!(
            "smdpplus: created master key 0 on token {:?} (non-extractable AES-256; it unlocks every stored profile)",
            token.as_ref().map(|t| t.label()).unwrap_or_default()
        );
    } else if created {
        println!(
            "smdpplus: created the master key {} (mode 0600; back it up, it unlocks every stored profile)",
            config.master_key_file.display()
        );
    }
    if token.is_some()
        && !master.current_on_token()
        && config
            .hsm
            .as_ref()
            .is_some_and(|h| h.master_key_label.is_some())
    {
        tracing::warn!("the current master key is still in the key file: `smdpplus keys rotate-master --config` moves it onto the token");
    }
    let templates = crate::profile::stored::Templates::load(&config.templates)?;
    let seeded = seed_demo(
        &store,
        &master,
        &templates,
        config.dev_operator(),
        config.seed_demo_profiles,
    )?;
    if seeded > 0 {
        store.flush_blocking()?;
        println!("smdpplus: seeded {seeded} demo profiles (profileType {DEMO_PROFILE_TYPE:?}) for operator {}", config.dev_operator());
    }

    let identity = listener_identity("", &config.tls_cert, &config.tls_key, token.as_ref())?
        .map_or_else(
            || tls::Identity::load(&pki.tls_cert, &pki.tls_key).map_err(|e| e.to_string()),
            Ok,
        )?;
    let web_identity = listener_identity(
        "[mobile_plans] ",
        &config.mobile_plans.tls_cert,
        &config.mobile_plans.tls_key,
        token.as_ref(),
    )?;
    let balance_identity = listener_identity(
        "[getbalance] ",
        &config.getbalance.tls_cert,
        &config.getbalance.tls_key,
        token.as_ref(),
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
    let balance_svc =
        crate::getbalance::Service::from_config(&config).map_err(|e| format!("GetBalance: {e}"))?;

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
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
        token,
    };
    let (tx, rx) = watch::channel(false);
    let drain = Duration::from_secs(30);
    let limits = &app.config.listeners;
    let listeners = [
        Listener {
            name: "es9plus",
            socket: es9,
            tls: Some(es9_tls),
            apis: Apis::one(crate::es9plus::Es9plus::new(app.clone())),
            limits: limits.es9.clone(),
        },
        Listener {
            name: "es2plus",
            socket: es2,
            tls: Some(es2_tls),
            // ES2+ answers the paths no other API claims with 1.6/3.1.
            apis: Apis::new(vec![
                Arc::new(crate::es2plus::Es2plus(app.clone())) as Arc<dyn Mounted>,
                Arc::new(crate::admin::Admin(app.clone())),
            ]),
            limits: limits.es2.clone(),
        },
        Listener {
            name: "ops",
            socket: ops,
            tls: None,
            apis: Apis::one(crate::ops::Ops(app.clone())),
            limits: limits.ops.clone(),
        },
        Listener {
            name: "operator-web",
            socket: web,
            tls: Some(web_tls),
            apis: Apis::new(vec![
                Arc::new(crate::mobileplans::web::MobilePlans(app.clone())) as Arc<dyn Mounted>,
                Arc::new(crate::mobileplans::portal::Portal(app.clone())),
            ]),
            limits: limits.operator_web.clone(),
        },
        Listener {
            name: "getbalance",
            socket: balance,
            tls: Some(balance_tls),
            apis: Apis::one(crate::getbalance::GetBalance::new(app.clone(), balance_svc)),
            limits: limits.getbalance.clone(),
        },
    ];
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(http::serve(l, app.metrics.clone(), rx.clone(), drain)))
        .collect();
    let workers = vec![
        tokio::spawn(crate::es2plus::notify::run(app.clone(), rx.clone())),
        tokio::spawn(crate::sweeper::run(app.clone(), rx.clone())),
        tokio::spawn(crate::rotation::run(app.clone(), rx.clone())),
        tokio::spawn(crate::sweeper::store_recovery(app.clone(), rx.clone())),
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
    store.close()?;
    let _ = std::fs::remove_file(&pid_path);
    tracing::info!("shutdown complete");
    Ok(())
}
