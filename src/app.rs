//! The shared context of a running server, below every handler and
//! worker: the store, the configuration, metrics, keys and the wake-ups
//! between them. [`crate::server`] builds it; everything else receives it.

use crate::config::Config;
use crate::http::tls;
use crate::metrics::Metrics;
use crate::profile::protect::Keyring;
use crate::store::Store;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Notify;

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
    /// The `[hsm]` token, when keys are on one (`/readyz` asks it).
    pub token: Option<Arc<crate::hsm::Token>>,
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

/// The pid file the CLI signals for a master key rotation.
pub fn pid_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("smdpplus.pid")
}
