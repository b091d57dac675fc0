//! Configuration: built-in defaults, overridden by an optional TOML file
//! (`--config`), overridden by flags and environment variables.
//! Every key is documented in the README.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The operator id of the dev setup, used when no operator is configured.
pub const DEV_OPERATOR: &str = "dev-operator";

/// One operator allowed on ES2+.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Operator id: the client certificate's subject CN and the
    /// functionRequesterIdentifier it must send.
    pub id: String,
    /// Base URL for ES2+ handleDownloadProgressInfo, e.g.
    /// `https://operator.example.com`; the function path is appended.
    pub notification_url: Option<String>,
    /// PEM file of the CA that signs the operator's notification endpoint
    /// certificate. Default: the dev CI (`<data-dir>/pki/ci.crt`).
    pub notification_ca: Option<PathBuf>,
}

/// What the eUICC shows for a profile type: the StoreMetadataRequest
/// values (SGP.22 §5.5.3). The ICCID always comes from the profile itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileTypeConfig {
    /// serviceProviderName (at most 32 bytes).
    pub service_provider_name: String,
    /// profileName.
    pub profile_name: String,
    /// profileClass: `test`, `provisioning` or `operational`.
    #[serde(default = "default_profile_class")]
    pub profile_class: String,
    /// profileOwner MCC+MNC, e.g. `00101`.
    pub profile_owner_mcc_mnc: Option<String>,
    /// Profile Policy Rules the profile carries (SGP.22 §2.9): `ppr1`
    /// (disabling not allowed), `ppr2` (deletion not allowed).
    #[serde(default)]
    pub profile_policy_rules: Vec<String>,
    /// Icon file (PNG or JPEG, at most 1024 bytes, SGP.22 §5.5.3).
    pub icon: Option<PathBuf>,
    /// The icon's bytes and whether it is a PNG, read at start.
    #[serde(skip)]
    pub icon_data: Option<(bool, Vec<u8>)>,
    /// notificationConfigurationInfo: which profile management operations
    /// the eUICC reports, and to which address (SGP.22 §5.5.3, §3.5).
    /// Absent: all four operations, to this SM-DP+. An empty list asks
    /// for no notifications.
    pub notifications: Option<Vec<NotificationConfig>>,
}

/// One entry of a profile type's notificationConfigurationInfo.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// `install`, `enable`, `disable` and/or `delete`.
    pub operations: Vec<String>,
    /// The FQDN the eUICC sends them to. Default: this SM-DP+'s address.
    pub address: Option<String>,
}

/// A profile management operation the eUICC reports (SGP.22 §3.5,
/// notificationConfigurationInfo of §5.5.3), as the configuration names
/// it; the ES9+ layer turns it into its NotificationEvent bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOn {
    /// `install`.
    Install,
    /// `enable`.
    Enable,
    /// `disable`.
    Disable,
    /// `delete`.
    Delete,
}

impl NotifyOn {
    /// The four operations.
    pub const ALL: [NotifyOn; 4] = [
        NotifyOn::Install,
        NotifyOn::Enable,
        NotifyOn::Disable,
        NotifyOn::Delete,
    ];
}

/// One checked entry of a profile type's notificationConfigurationInfo:
/// the operations the eUICC reports, and the FQDN it sends them to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationTarget {
    /// At least one operation, none twice, in the order configured.
    pub operations: Vec<NotifyOn>,
    /// The notification address.
    pub address: String,
}

impl NotificationConfig {
    /// The operations, checked: known names, at least one, none twice.
    pub fn parsed_operations(&self) -> Result<Vec<NotifyOn>, String> {
        let mut out = Vec::with_capacity(self.operations.len());
        for name in &self.operations {
            let op = match name.as_str() {
                "install" => NotifyOn::Install,
                "enable" => NotifyOn::Enable,
                "disable" => NotifyOn::Disable,
                "delete" => NotifyOn::Delete,
                other => {
                    return Err(format!(
                    "unknown notification operation {other:?} (install, enable, disable, delete)"
                ))
                }
            };
            if out.contains(&op) {
                return Err(format!("notification operation {name:?} given twice"));
            }
            out.push(op);
        }
        if out.is_empty() {
            return Err("a notification entry needs at least one operation".into());
        }
        Ok(out)
    }
}

fn default_profile_class() -> String {
    "operational".into()
}

impl ProfileTypeConfig {
    /// Metadata for a type nobody configured: its name, shown as is.
    pub fn fallback(profile_type: &str) -> ProfileTypeConfig {
        ProfileTypeConfig {
            service_provider_name: "smdpplus".into(),
            profile_name: profile_type.chars().take(64).collect(),
            profile_class: default_profile_class(),
            profile_owner_mcc_mnc: None,
            profile_policy_rules: vec![],
            icon: None,
            icon_data: None,
            notifications: None,
        }
    }

    /// What the StoreMetadataRequest notificationConfigurationInfo of this
    /// type holds (SGP.22 §5.5.3), with `smdp_address` as the default
    /// address; `None` (the field left out) when the type asks for no
    /// notifications.
    pub fn notification_targets(
        &self,
        smdp_address: &str,
    ) -> Result<Option<Vec<NotificationTarget>>, String> {
        let Some(entries) = &self.notifications else {
            return Ok(Some(vec![NotificationTarget {
                operations: NotifyOn::ALL.to_vec(),
                address: smdp_address.to_owned(),
            }]));
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let ops = e.parsed_operations()?;
            let address = e.address.as_deref().unwrap_or(smdp_address);
            let fqdn_ok = !address.is_empty()
                && address.len() <= 255
                && address
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
            if !fqdn_ok {
                return Err(format!("notification address {address:?} is not an FQDN"));
            }
            out.push(NotificationTarget {
                operations: ops,
                address: address.to_owned(),
            });
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// The PprIds bit numbers (RSPDefinitions: pprUpdateControl(0),
    /// ppr1(1), ppr2(2)) of [`ProfileTypeConfig::profile_policy_rules`].
    pub fn ppr_bits(&self) -> Vec<usize> {
        self.profile_policy_rules
            .iter()
            .filter_map(|p| match p.as_str() {
                "ppr1" => Some(1),
                "ppr2" => Some(2),
                _ => None,
            })
            .collect()
    }
}

/// One set of SM-DP+ signing credentials under one CI (PEM or DER files).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// CERT.DPauth.ECDSA (DER).
    pub dpauth_cert: PathBuf,
    /// SK.DPauth.ECDSA: a PEM file (SEC1), or a key on the `[hsm]` token
    /// named by a PKCS#11 URI (RFC 7512), e.g. `pkcs11:object=dpauth-nist`.
    pub dpauth_key: PathBuf,
    /// CERT.DPpb.ECDSA (DER).
    pub dppb_cert: PathBuf,
    /// SK.DPpb.ECDSA: a PEM file or a `pkcs11:` URI (see `dpauth_key`).
    pub dppb_key: PathBuf,
}

/// Outbox retry policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// First retry delay, milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest retry delay, milliseconds.
    pub max_backoff_ms: u64,
    /// Timeout of one delivery attempt, milliseconds.
    pub request_timeout_ms: u64,
    /// Most items one pass takes for one operator.
    pub batch_size: usize,
    /// Most deliveries in flight to one operator.
    pub max_in_flight_per_operator: usize,
    /// How long a node holds the items it took for delivery, seconds, on
    /// a store shared by several nodes: a node that dies mid-delivery
    /// leaves its items to the others after this.
    pub lease_secs: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            initial_backoff_ms: 1000,
            max_backoff_ms: 300_000,
            request_timeout_ms: 10_000,
            batch_size: 64,
            max_in_flight_per_operator: 8,
            lease_secs: 60,
        }
    }
}

/// Windows Mobile Plans: the public addresses of this deployment
/// ([MP-Portal] "Service configuration", §5 "Walled garden") and
/// the reference portal's catalogue.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MobilePlansConfig {
    /// The portal URI registered with Microsoft: https, no port.
    /// Default `https://<smdp_address>/portal`.
    pub portal_url: Option<String>,
    /// The GetBalance base URL (`moBaseUrl`, which includes `/v1`): https,
    /// no port. Default `https://<smdp_address>/v1`.
    pub getbalance_url: Option<String>,
    /// The operator the portal sells for. Default: the first operator.
    pub operator: Option<String>,
    /// The brand shown by the portal. Default `smdpplus`.
    pub brand_name: Option<String>,
    /// Support, privacy and terms links (https). Default: the portal's own
    /// pages.
    pub support_url: Option<String>,
    /// See `support_url`.
    pub privacy_url: Option<String>,
    /// See `support_url`.
    pub terms_url: Option<String>,
    /// The plans the portal offers. Default: a demo catalogue.
    pub plans: Option<Vec<PlanConfig>>,
    /// TLS chain (PEM) of the operator-web listener (the portal and the
    /// callback decision API). The Mobile Plans app is a browser, so in
    /// production this is a publicly trusted certificate for the portal's
    /// host. Default: the SM-DP+ certificate (`tls_cert`).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, or a NIST P-256 key on the `[hsm]` token as a
    /// `pkcs11:` URI); given together with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The key (64 hex digits) of the purchase capabilities, shared by
    /// every node. Default `<data_dir>/mobileplans.key`, created at first
    /// start (mode 0600). See `crate::mobileplans::guard`.
    pub capability_key_file: Option<PathBuf>,
    /// How long a portal order holds its profile until it is confirmed
    /// (payment), seconds. Default 1800.
    pub hold_secs: Option<u64>,
    /// Who confirms portal orders: `portal` (default) or `operator`.
    pub confirmation: Option<crate::mobileplans::guard::Confirmation>,
    /// Portal purchases per client address. Default 10 a minute, burst 5.
    pub purchase_rate_per_ip: Option<crate::limits::Rate>,
    /// Portal purchases per EID. Default 2 a minute, burst 3.
    pub purchase_rate_per_eid: Option<crate::limits::Rate>,
    /// Open portal orders (held, or released and not downloaded) per EID.
    /// Default 2; 0 turns the cap off.
    pub max_open_orders_per_eid: Option<u32>,
}

/// What a plan sells.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// A new eSIM profile (offered to eSIM launches).
    Profile,
    /// Balance on an existing line: a warm physical SIM, or an installed
    /// eSIM profile of this operator (top-up).
    Balance,
}

/// One plan of the portal's catalogue.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Identifier in forms.
    pub id: String,
    /// `planName` reported to the app.
    pub name: String,
    /// Profile or balance.
    pub kind: PlanKind,
    /// Price as shown (the portal takes no payment).
    #[serde(default)]
    pub price: String,
    /// Data credited, MB.
    pub data_mb: f64,
    /// Validity, days.
    pub valid_for_days: u32,
    /// Profile plans: the profile type ordered.
    pub profile_type: Option<String>,
    /// Profile plans: `now` (default) or `later`.
    #[serde(default)]
    pub network_registration: Option<String>,
    /// Profile plans with registration `later`: minutes.
    #[serde(default)]
    pub network_registration_interval: Option<u32>,
    /// Profile plans: release the profile this many minutes after the
    /// purchase (a delayed download); 0 or absent: at once.
    #[serde(default)]
    pub release_delay_minutes: Option<u32>,
    /// `MODIRECTPAYG` (default) or `MODIRECT`.
    #[serde(default)]
    pub balance_type: Option<String>,
}

impl MobilePlansConfig {
    /// The configured plans, or the demo catalogue.
    pub fn catalogue(&self) -> Vec<PlanConfig> {
        self.plans.clone().unwrap_or_else(|| {
            vec![
                PlanConfig {
                    id: "demo-1gb".into(),
                    name: "Demo 1 GB".into(),
                    kind: PlanKind::Profile,
                    price: "0.00".into(),
                    data_mb: 1024.0,
                    valid_for_days: 30,
                    profile_type: Some("demo".into()),
                    network_registration: None,
                    network_registration_interval: None,
                    release_delay_minutes: None,
                    balance_type: None,
                },
                PlanConfig {
                    id: "day-pass".into(),
                    name: "Day pass 500 MB".into(),
                    kind: PlanKind::Balance,
                    price: "0.00".into(),
                    data_mb: 500.0,
                    valid_for_days: 1,
                    profile_type: None,
                    network_registration: None,
                    network_registration_interval: None,
                    release_delay_minutes: None,
                    balance_type: None,
                },
            ]
        })
    }
}

/// How GetBalance callers authenticate ([MP-Account] "Auth").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GetBalanceAuth {
    /// A client certificate chaining to `client_ca` whose subject is
    /// `client_subject`.
    #[default]
    Mtls,
    /// HTTP basic authentication with `basic_user` and the password whose
    /// SHA-256 is `basic_password_sha256`.
    Basic,
}

/// The GetBalance API ([MP-Account]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GetBalanceConfig {
    /// `mtls` or `basic`.
    pub auth: GetBalanceAuth,
    /// CA files (PEM) the caller's client certificate must chain to.
    /// Default: the dev operator CA. Microsoft's chains to DigiCert Global
    /// Root G2.
    pub client_ca: Option<Vec<PathBuf>>,
    /// The expected subject of the caller's certificate, as
    /// `C=US, ST=WA, L=Redmond, O=Microsoft Corporation, CN=partners.datamart.windows.com`
    /// (the default). Attribute order and spacing do not matter.
    pub client_subject: String,
    /// TLS chain (PEM) of the GetBalance listener, for the `moBaseUrl`
    /// host Microsoft's service calls. Default: the SM-DP+ certificate.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, or a NIST P-256 key on the `[hsm]` token as a
    /// `pkcs11:` URI); given together with `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Basic auth user name.
    pub basic_user: Option<String>,
    /// Hex SHA-256 of the basic auth password (the password itself is
    /// never written in the configuration).
    pub basic_password_sha256: Option<String>,
    /// Requests per second accepted before 429 (token bucket refill rate).
    pub rate_limit_per_sec: u32,
    /// Requests accepted in a burst before 429 (token bucket size).
    pub rate_limit_burst: u32,
    /// How long an X-MS-DM-TransactionId is remembered for 409 (seconds).
    pub transaction_id_window_secs: u64,
    /// How many X-MS-DM-TransactionIds are kept at most (in the store; the
    /// oldest beyond it are pruned hourly).
    pub transaction_id_window_max: usize,
}

/// The subject Microsoft's GetBalance client certificate carries
/// ([MP-Account] "Auth").
pub const MICROSOFT_GETBALANCE_SUBJECT: &str =
    "C=US, ST=WA, L=Redmond, O=Microsoft Corporation, CN=partners.datamart.windows.com";

impl Default for GetBalanceConfig {
    fn default() -> Self {
        GetBalanceConfig {
            auth: GetBalanceAuth::Mtls,
            client_ca: None,
            client_subject: MICROSOFT_GETBALANCE_SUBJECT.into(),
            tls_cert: None,
            tls_key: None,
            basic_user: None,
            basic_password_sha256: None,
            rate_limit_per_sec: 2000,
            rate_limit_burst: 4000,
            transaction_id_window_secs: 3600,
            transaction_id_window_max: 1_000_000,
        }
    }
}

/// Which storage engine holds the state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The embedded sled database in `<data_dir>/db` (the default).
    #[default]
    Sled,
    /// A PostgreSQL database shared by several nodes.
    Postgres,
}

/// The environment variable that gives the PostgreSQL store URL (with its
/// password); it wins over `[store] url_file` and `[store] url`.
pub const STORE_URL_ENV: &str = "SMDPPLUS_STORE_URL";

/// The `[store]` table as written in the file.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    /// `sled` (default) or `postgres`.
    pub engine: Engine,
    /// PostgreSQL URL, `postgres://user:password@host:port/db`
    /// (`sslmode=verify-full&sslrootcert=FILE` for TLS). Postgres only.
    pub url: Option<String>,
    /// A file holding the URL (so the password stays out of the
    /// configuration). Postgres only.
    pub url_file: Option<PathBuf>,
    /// Most connections to the database per node. Default 16.
    pub pool_size: Option<usize>,
    /// Seconds to wait for a connection, new or from the pool. Default 10.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds a statement may run before the database cancels it; 0: no
    /// limit. Default 30.
    pub statement_timeout_secs: Option<u64>,
}

impl std::fmt::Debug for StoreFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFile")
            .field("engine", &self.engine)
            .field("url", &self.url.as_ref().map(|_| "(hidden)"))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .finish()
    }
}

/// A database URL, which may carry a password: its `Debug` form hides it,
/// and nothing logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL itself, for the database driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreUrl(hidden)")
    }
}

/// The resolved PostgreSQL settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Where the database is.
    pub url: StoreUrl,
    /// Most connections per node (at least 1).
    pub pool_size: usize,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a statement may run; `None`: no limit.
    pub statement_timeout: Option<Duration>,
}

/// The resolved `[store]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded sled database.
    Sled,
    /// A PostgreSQL database.
    Postgres(PostgresConfig),
}

impl StoreFile {
    /// Checks the section and finds the URL: `env_url` (the value of
    /// [`STORE_URL_ENV`]) wins over `url_file`, which wins over `url`.
    /// A bad combination is refused with the reason; no message holds
    /// the URL.
    pub fn resolve(&self, env_url: Option<String>) -> Result<StoreConfig, String> {
        let env_url = env_url.filter(|u| !u.trim().is_empty());
        match self.engine {
            Engine::Sled => {
                let mut postgres_only = vec![];
                for (set, key) in [
                    (self.url.is_some(), "url"),
                    (self.url_file.is_some(), "url_file"),
                    (self.pool_size.is_some(), "pool_size"),
                    (self.connect_timeout_secs.is_some(), "connect_timeout_secs"),
                    (
                        self.statement_timeout_secs.is_some(),
                        "statement_timeout_secs",
                    ),
                ] {
                    if set {
                        postgres_only.push(key);
                    }
                }
                if !postgres_only.is_empty() {
                    return Err(format!(
                        "[store] {} only apply to engine = \"postgres\" (the engine is sled)",
                        postgres_only.join(", ")
                    ));
                }
                if env_url.is_some() {
                    return Err(format!(
                        "{STORE_URL_ENV} is set but [store] engine is sled: set engine = \"postgres\" or unset it"
                    ));
                }
                Ok(StoreConfig::Sled)
            }
            Engine::Postgres => {
                if self.url.is_some() && self.url_file.is_some() {
                    return Err("[store] give one of url and url_file, not both".into());
                }
                let url = match (env_url, &self.url_file, &self.url) {
                    (Some(u), _, _) => u,
                    (None, Some(path), _) => std::fs::read_to_string(path)
                        .map_err(|e| format!("[store] url_file {}: {e}", path.display()))?,
                    (None, None, Some(u)) => u.clone(),
                    (None, None, None) => {
                        return Err(format!(
                            "[store] engine = \"postgres\" needs the database URL: \
                             {STORE_URL_ENV}, [store] url_file or [store] url"
                        ))
                    }
                };
                let url = url.trim().to_owned();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(
                        "[store] the database URL must start with postgres:// or postgresql://"
                            .into(),
                    );
                }
                let pool_size = self.pool_size.unwrap_or(16);
                if pool_size == 0 {
                    return Err("[store] pool_size must be at least 1".into());
                }
                let statement_timeout = match self.statement_timeout_secs.unwrap_or(30) {
                    0 => None,
                    s => Some(Duration::from_secs(s)),
                };
                Ok(StoreConfig::Postgres(PostgresConfig {
                    url: StoreUrl(url),
                    pool_size,
                    connect_timeout: Duration::from_secs(
                        self.connect_timeout_secs.unwrap_or(10).max(1),
                    ),
                    statement_timeout,
                }))
            }
        }
    }
}

/// The TOML file. Every key is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::smdp_address`].
    pub smdp_address: Option<String>,
    /// See [`Config::es9_listen`].
    pub es9_listen: Option<SocketAddr>,
    /// See [`Config::es2_listen`].
    pub es2_listen: Option<SocketAddr>,
    /// See [`Config::ops_listen`].
    pub ops_listen: Option<SocketAddr>,
    /// See [`Config::operator_web_listen`].
    pub operator_web_listen: Option<SocketAddr>,
    /// See [`Config::getbalance_listen`].
    pub getbalance_listen: Option<SocketAddr>,
    /// See [`Config::mobile_plans`].
    pub mobile_plans: Option<MobilePlansConfig>,
    /// See [`Config::getbalance`].
    pub getbalance: Option<GetBalanceConfig>,
    /// See [`Config::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Config::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Config::operator_ca`].
    pub operator_ca: Option<Vec<PathBuf>>,
    /// See [`Config::max_body_bytes`].
    pub max_body_bytes: Option<usize>,
    /// See [`Config::order_ttl`].
    pub order_ttl_secs: Option<u64>,
    /// See [`Config::expiry_sweep`].
    pub expiry_sweep_secs: Option<u64>,
    /// See [`Config::seed_demo_profiles`].
    pub seed_demo_profiles: Option<usize>,
    /// See [`Config::operators`].
    pub operators: Option<Vec<OperatorConfig>>,
    /// See [`Config::outbox`].
    pub outbox: Option<OutboxConfig>,
    /// See [`Config::extra_smdp_addresses`].
    pub extra_smdp_addresses: Option<Vec<String>>,
    /// See [`Config::session_ttl`].
    pub session_ttl_secs: Option<u64>,
    /// See [`Config::es9`].
    pub es9: Option<crate::es9plus::limits::Es9Config>,
    /// See [`Config::max_download_attempts`].
    pub max_download_attempts: Option<u32>,
    /// See [`Config::max_cc_attempts`].
    pub max_cc_attempts: Option<u32>,
    /// See [`Config::profile_types`].
    pub profile_types: Option<std::collections::BTreeMap<String, ProfileTypeConfig>>,
    /// See [`Config::session_keys_only`].
    pub session_keys_only: Option<bool>,
    /// See [`Config::strict_order_matching`].
    pub strict_order_matching: Option<bool>,
    /// See [`Config::master_key_file`].
    pub master_key_file: Option<PathBuf>,
    /// See [`Config::ci_certs`].
    pub ci_certs: Option<Vec<PathBuf>>,
    /// See [`Config::credentials`].
    pub credentials: Option<Vec<CredentialConfig>>,
    /// See [`Config::templates`].
    pub templates: Option<Vec<PathBuf>>,
    /// See [`Config::listeners`].
    pub listeners: Option<crate::http::listener::ListenersFile>,
    /// See [`Config::store`].
    pub store: Option<StoreFile>,
    /// See [`Config::hsm`].
    pub hsm: Option<crate::hsm::HsmConfig>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Holds the sled database (`db/`) and the dev PKI (`pki/`).
    pub data_dir: PathBuf,
    /// The SM-DP+ address (FQDN, with `:port` when it is not 443) given in
    /// activation codes, confirmOrder and the profile metadata's
    /// notification addresses. When not configured, `localhost` with the
    /// ES9+ listener's port ([`derived_smdp_address`]).
    pub smdp_address: String,
    /// Whether [`Config::smdp_address`] was derived from the ES9+ listener
    /// (not configured): the server sets it again from the bound port.
    pub smdp_address_derived: bool,
    /// ES9+ (LPA-facing) TLS listener.
    pub es9_listen: SocketAddr,
    /// ES2+ (operator-facing) mutual-TLS listener.
    pub es2_listen: SocketAddr,
    /// Plain-HTTP operations listener: /metrics, /healthz, /readyz.
    pub ops_listen: SocketAddr,
    /// Operator-web HTTPS listener: the Mobile Plans callback decision API
    /// (and later the portal).
    pub operator_web_listen: SocketAddr,
    /// GetBalance HTTPS listener (client certificate requested, not required).
    pub getbalance_listen: SocketAddr,
    /// Mobile Plans public addresses.
    pub mobile_plans: MobilePlansConfig,
    /// GetBalance API settings.
    pub getbalance: GetBalanceConfig,
    /// TLS server certificate chain (PEM). Default: the dev DPtls cert.
    pub tls_cert: Option<PathBuf>,
    /// TLS server key: PEM, or a NIST P-256 key on the `[hsm]` token as a
    /// `pkcs11:` URI (RFC 7512). Default: the dev DPtls key.
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that operator client certificates must chain to.
    /// Default: the dev operator CA.
    pub operator_ca: Vec<PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Default time to live of a download order.
    pub order_ttl: Duration,
    /// How often expired orders are swept.
    pub expiry_sweep: Duration,
    /// Placeholder profiles seeded for the first operator on an empty store.
    pub seed_demo_profiles: usize,
    /// Operators allowed on ES2+.
    pub operators: Vec<OperatorConfig>,
    /// Outbox retry policy.
    pub outbox: OutboxConfig,
    /// Other names under which LPAs may reach this SM-DP+ (ES9+
    /// smdpAddress is compared case-insensitively, with or without port).
    pub extra_smdp_addresses: Vec<String>,
    /// How long an ES9+ RSP session lives after its last step.
    pub session_ttl: Duration,
    /// ES9+ limits: InitiateAuthentication rate, session cap, pending TTL.
    pub es9: crate::es9plus::limits::Es9Config,
    /// Download attempts (authenticateClient calls) allowed per order.
    pub max_download_attempts: u32,
    /// Confirmation-code attempts allowed per order.
    pub max_cc_attempts: u32,
    /// StoreMetadataRequest values per profile type.
    pub profile_types: std::collections::BTreeMap<String, ProfileTypeConfig>,
    /// Bind with the session keys only (no ReplaceSessionKeys, §2.5.4).
    pub session_keys_only: bool,
    /// The literal §5.6.3 order matching: an eUICC with a pending order
    /// linked to its EID may use no other order's matchingId.
    pub strict_order_matching: bool,
    /// File holding the master key (64 hex digits) that wraps every PPK;
    /// created with a random key at first start. `SMDPPLUS_MASTER_KEY`
    /// (64 hex digits) overrides it.
    pub master_key_file: PathBuf,
    /// GSMA CI certificates (DER) trusted for eUICC chains; empty means
    /// the compiled-in SGP.26 test CIs.
    pub ci_certs: Vec<PathBuf>,
    /// DPauth/DPpb credentials per CI; empty means the compiled-in SGP.26
    /// test credentials.
    pub credentials: Vec<CredentialConfig>,
    /// Profile template files (TOML) besides the shipped one.
    pub templates: Vec<PathBuf>,
    /// Connection caps, deadlines and header caps of each listener.
    pub listeners: crate::http::listener::Listeners,
    /// The PKCS#11 token holding private keys named by `pkcs11:` URIs
    /// (`[hsm]`); none: every key is a file.
    pub hsm: Option<crate::hsm::HsmConfig>,
    /// The storage engine, as written: [`Config::store_config`] checks it
    /// and finds the database URL.
    pub store: StoreFile,
}

/// Values given on the command line or in the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir` / `SMDPPLUS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--smdp-address` / `SMDPPLUS_SMDP_ADDRESS`.
    pub smdp_address: Option<String>,
    /// `--es9-listen` / `SMDPPLUS_ES9_LISTEN`.
    pub es9_listen: Option<SocketAddr>,
    /// `--es2-listen` / `SMDPPLUS_ES2_LISTEN`.
    pub es2_listen: Option<SocketAddr>,
    /// `--ops-listen` / `SMDPPLUS_OPS_LISTEN`.
    pub ops_listen: Option<SocketAddr>,
    /// `--operator-web-listen` / `SMDPPLUS_OPERATOR_WEB_LISTEN`.
    pub operator_web_listen: Option<SocketAddr>,
    /// `--getbalance-listen` / `SMDPPLUS_GETBALANCE_LISTEN`.
    pub getbalance_listen: Option<SocketAddr>,
}

impl Config {
    /// Resolves defaults, file and overrides, in that order of precedence (last wins).
    pub fn resolve(file: FileConfig, o: Overrides) -> Config {
        let data_dir = o
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./smdpplus-data"));
        let operators = file.operators.unwrap_or_else(|| {
            vec![OperatorConfig {
                id: DEV_OPERATOR.into(),
                notification_url: None,
                notification_ca: None,
            }]
        });
        let master_key_file = file
            .master_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("master.key"));
        let mut getbalance = file.getbalance.unwrap_or_default();
        let es9_listen = o
            .es9_listen
            .or(file.es9_listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8443)));
        if getbalance.client_ca.is_none() {
            getbalance.client_ca = Some(vec![data_dir.join("pki").join("operator-ca.crt")]);
        }
        Config {
            master_key_file,
            operator_ca: file
                .operator_ca
                .unwrap_or_else(|| vec![data_dir.join("pki").join("operator-ca.crt")]),
            data_dir,
            smdp_address_derived: o.smdp_address.is_none() && file.smdp_address.is_none(),
            smdp_address: o
                .smdp_address
                .or(file.smdp_address)
                .unwrap_or_else(|| derived_smdp_address(es9_listen.port())),
            es9_listen,
            es2_listen: o
                .es2_listen
                .or(file.es2_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8444))),
            ops_listen: o
                .ops_listen
                .or(file.ops_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
            operator_web_listen: o
                .operator_web_listen
                .or(file.operator_web_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8445))),
            getbalance_listen: o
                .getbalance_listen
                .or(file.getbalance_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8446))),
            mobile_plans: file.mobile_plans.unwrap_or_default(),
            getbalance,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
            max_body_bytes: file.max_body_bytes.unwrap_or(64 * 1024),
            order_ttl: Duration::from_secs(file.order_ttl_secs.unwrap_or(7 * 24 * 3600)),
            expiry_sweep: Duration::from_secs(file.expiry_sweep_secs.unwrap_or(5).max(1)),
            seed_demo_profiles: file.seed_demo_profiles.unwrap_or(100),
            operators,
            outbox: file.outbox.unwrap_or_default(),
            extra_smdp_addresses: file.extra_smdp_addresses.unwrap_or_else(|| {
                // The dev setup answers on loopback by name and by number.
                vec!["127.0.0.1".into()]
            }),
            session_ttl: Duration::from_secs(file.session_ttl_secs.unwrap_or(900).max(1)),
            es9: file.es9.unwrap_or_default(),
            max_download_attempts: file.max_download_attempts.unwrap_or(5).max(1),
            max_cc_attempts: file.max_cc_attempts.unwrap_or(3).max(1),
            session_keys_only: file.session_keys_only.unwrap_or(false),
            strict_order_matching: file.strict_order_matching.unwrap_or(false),
            ci_certs: file.ci_certs.clone().unwrap_or_default(),
            credentials: file.credentials.clone().unwrap_or_default(),
            templates: file.templates.clone().unwrap_or_default(),
            store: file.store.clone().unwrap_or_default(),
            hsm: file.hsm.clone(),
            listeners: crate::http::listener::Listeners::resolve(
                &file.listeners.clone().unwrap_or_default(),
            ),
            profile_types: file.profile_types.unwrap_or_else(|| {
                let demo = ProfileTypeConfig {
                    service_provider_name: "smdpplus demo".into(),
                    profile_name: "smdpplus demo profile".into(),
                    profile_class: default_profile_class(),
                    profile_owner_mcc_mnc: Some("00101".into()),
                    profile_policy_rules: vec![],
                    icon: None,
                    icon_data: None,
                    notifications: None,
                };
                [("demo".to_owned(), demo)].into_iter().collect()
            }),
        }
    }

    /// The storage engine and its settings, with the database URL from
    /// [`STORE_URL_ENV`] when it is set; a bad `[store]` section is an
    /// error that says what is wrong.
    pub fn store_config(&self) -> Result<StoreConfig, String> {
        self.store.resolve(std::env::var(STORE_URL_ENV).ok())
    }

    /// The sled database directory.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    /// The operator the dev PKI issues a client certificate for.
    pub fn dev_operator(&self) -> &str {
        self.operators
            .first()
            .map(|o| o.id.as_str())
            .unwrap_or(DEV_OPERATOR)
    }

    /// Whether an smdpAddress sent by an LPA names this SM-DP+: compared
    /// case-insensitively, with or without a `:port` suffix (lpac sends what
    /// the user typed).
    pub fn is_own_address(&self, given: &str) -> bool {
        let host = host_of(given);
        std::iter::once(&self.smdp_address)
            .chain(self.extra_smdp_addresses.iter())
            .any(|a| a.eq_ignore_ascii_case(given) || host_of(a).eq_ignore_ascii_case(host))
    }

    /// The host name of [`Config::smdp_address`], without its port: the
    /// name in the TLS certificate and of the portal and GetBalance URLs.
    pub fn smdp_host(&self) -> &str {
        host_of(&self.smdp_address)
    }

    /// Checks every profile type's notifications and reads its icon (PNG or
    /// JPEG, at most 1024 bytes): a bad entry stops the start with a clear
    /// message.
    pub fn load_icons(&mut self) -> Result<(), String> {
        let smdp_address = self.smdp_address.clone();
        for (name, t) in self.profile_types.iter_mut() {
            t.notification_targets(&smdp_address)
                .map_err(|e| format!("profile type {name}: {e}"))?;
            let Some(path) = &t.icon else { continue };
            let bytes = std::fs::read(path)
                .map_err(|e| format!("profile type {name}: icon {}: {e}", path.display()))?;
            let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
            let jpg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
            if !(png || jpg) || bytes.len() > 1024 {
                return Err(format!(
                    "profile type {name}: icon {} must be a PNG or JPEG of at most 1024 bytes",
                    path.display()
                ));
            }
            t.icon_data = Some((png, bytes));
        }
        Ok(())
    }

    /// Metadata for a profile type (configured, or a fallback).
    pub fn profile_type(&self, name: &str) -> ProfileTypeConfig {
        self.profile_types
            .get(name)
            .cloned()
            .unwrap_or_else(|| ProfileTypeConfig::fallback(name))
    }

    /// The portal URI registered with Microsoft ([MP-Portal]).
    pub fn portal_url(&self) -> String {
        self.mobile_plans
            .portal_url
            .clone()
            .unwrap_or_else(|| format!("https://{}/portal", self.smdp_host()))
    }

    /// The GetBalance base URL, `moBaseUrl` ([MP-Account]).
    pub fn getbalance_url(&self) -> String {
        self.mobile_plans
            .getbalance_url
            .clone()
            .unwrap_or_else(|| format!("https://{}/v1", self.smdp_host()))
    }

    /// Looks up a configured operator.
    pub fn operator(&self, id: &str) -> Option<&OperatorConfig> {
        self.operators.iter().find(|o| o.id == id)
    }
}

/// The SM-DP+ address when none is configured: `localhost`, with the ES9+
/// port when it is not 443 (an LPA given `localhost` alone would try 443).
/// Port 0 (chosen at bind) gives `localhost`; the server derives it again
/// from the bound port.
pub fn derived_smdp_address(es9_port: u16) -> String {
    match es9_port {
        0 | 443 => "localhost".into(),
        p => format!("localhost:{p}"),
    }
}

/// `address` without a trailing `:port`.
fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_address_follows_the_es9_port() {
        let c = Config::resolve(FileConfig::default(), Overrides::default());
        assert_eq!(c.smdp_address, "localhost:8443");
        assert!(c.smdp_address_derived);
        assert_eq!(c.smdp_host(), "localhost");
        assert_eq!(c.portal_url(), "https://localhost/portal");
        assert!(c.is_own_address("localhost"));
        assert!(c.is_own_address("LOCALHOST:8443"));
        assert!(c.is_own_address("127.0.0.1"));
        assert!(c.is_own_address("127.0.0.1:8443"));
        let c = Config::resolve(
            FileConfig::default(),
            Overrides {
                es9_listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
                ..Overrides::default()
            },
        );
        assert_eq!(c.smdp_address, "localhost");
        let c = Config::resolve(
            FileConfig {
                smdp_address: Some("smdp.example.com".into()),
                ..FileConfig::default()
            },
            Overrides::default(),
        );
        assert_eq!(c.smdp_address, "smdp.example.com");
        assert!(!c.smdp_address_derived);
    }

    #[test]
    fn own_address_ignores_case_and_port() {
        let mut c = Config::resolve(FileConfig::default(), Overrides::default());
        c.smdp_address = "SMDP.example.com".into();
        c.extra_smdp_addresses = vec!["127.0.0.1".into()];
        assert!(c.is_own_address("smdp.EXAMPLE.com"));
        assert!(c.is_own_address("smdp.example.com:8443"));
        assert!(c.is_own_address("127.0.0.1:8443"));
        assert!(!c.is_own_address("other.example.com"));
        assert!(!c.is_own_address("smdp.example.com.evil"));
    }

    /// Operations and address of each entry.
    type Entries = Vec<(Vec<NotifyOn>, String)>;

    fn notifications(toml_text: &str) -> Result<Option<Entries>, String> {
        let t: ProfileTypeConfig = toml::from_str(&format!(
            "service_provider_name = \"S\"\nprofile_name = \"P\"\n{toml_text}"
        ))
        .map_err(|e| e.to_string())?;
        Ok(t.notification_targets("smdp.example.com")?.map(|list| {
            list.into_iter()
                .map(|n| (n.operations, n.address))
                .collect()
        }))
    }

    #[test]
    fn notification_configuration_per_type() {
        // Default: every operation to this SM-DP+.
        assert_eq!(
            notifications(""),
            Ok(Some(vec![(
                NotifyOn::ALL.to_vec(),
                "smdp.example.com".into()
            )]))
        );
        // Configured entries, in order, with their own addresses.
        assert_eq!(
            notifications(
                "[[notifications]]\noperations = [\"delete\", \"install\"]\n\
                 [[notifications]]\noperations = [\"enable\"]\naddress = \"n.op.example\"\n"
            ),
            Ok(Some(vec![
                (
                    vec![NotifyOn::Delete, NotifyOn::Install],
                    "smdp.example.com".into()
                ),
                (vec![NotifyOn::Enable], "n.op.example".into())
            ]))
        );
        // An empty list leaves the field out.
        assert_eq!(notifications("notifications = []\n"), Ok(None));
        // Mistakes are refused with the reason.
        for (bad, why) in [
            (
                "[[notifications]]\noperations = [\"reboot\"]\n",
                "unknown notification operation",
            ),
            (
                "[[notifications]]\noperations = []\n",
                "at least one operation",
            ),
            (
                "[[notifications]]\noperations = [\"enable\", \"enable\"]\n",
                "given twice",
            ),
            (
                "[[notifications]]\noperations = [\"enable\"]\naddress = \"https://x/y\"\n",
                "not an FQDN",
            ),
            (
                "[[notifications]]\noperations = [\"enable\"]\nurl = \"x\"\n",
                "unknown field",
            ),
        ] {
            let err = notifications(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn store(toml_text: &str, env_url: Option<&str>) -> Result<StoreConfig, String> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        file.store
            .unwrap_or_default()
            .resolve(env_url.map(str::to_owned))
    }

    #[test]
    fn store_section_rules() {
        // No section, or engine sled alone: sled.
        assert_eq!(store("", None), Ok(StoreConfig::Sled));
        assert_eq!(
            store("[store]\nengine = \"sled\"\n", None),
            Ok(StoreConfig::Sled)
        );
        // Postgres with a URL in the file, defaults for the rest.
        let url = "postgres://u:secret@127.0.0.1:5432/db";
        let Ok(StoreConfig::Postgres(pg)) = store(
            &format!("[store]\nengine = \"postgres\"\nurl = \"{url}\"\n"),
            None,
        ) else {
            panic!("postgres with a url")
        };
        assert_eq!(pg.url.expose(), url);
        assert_eq!(pg.pool_size, 16);
        assert_eq!(pg.connect_timeout, Duration::from_secs(10));
        assert_eq!(pg.statement_timeout, Some(Duration::from_secs(30)));
        // The Debug form (logged with the configuration) hides the URL.
        assert!(!format!("{pg:?}").contains("secret"));
        let file: FileConfig = toml::from_str(&format!(
            "[store]\nengine = \"postgres\"\nurl = \"{url}\"\n"
        ))
        .expect("toml");
        assert!(!format!("{file:?}").contains("secret"));
        // The environment wins over the file; 0 turns the statement timeout off.
        let Ok(StoreConfig::Postgres(pg)) = store(
            &format!(
                "[store]\nengine = \"postgres\"\nurl = \"{url}\"\npool_size = 4\n\
                 connect_timeout_secs = 3\nstatement_timeout_secs = 0\n"
            ),
            Some("postgresql://env@db.example/x"),
        ) else {
            panic!("postgres with the environment")
        };
        assert_eq!(pg.url.expose(), "postgresql://env@db.example/x");
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.connect_timeout, Duration::from_secs(3));
        assert_eq!(pg.statement_timeout, None);
        // The URL from a file, trimmed.
        let dir = std::env::temp_dir().join(format!("smdpplus-store-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("url");
        std::fs::write(&path, format!("{url}\n")).expect("write");
        let Ok(StoreConfig::Postgres(pg)) = store(
            &format!(
                "[store]\nengine = \"postgres\"\nurl_file = \"{}\"\n",
                path.display()
            ),
            None,
        ) else {
            panic!("postgres with url_file")
        };
        assert_eq!(pg.url.expose(), url);
        std::fs::remove_dir_all(&dir).ok();
        // Bad combinations say what is wrong, and never echo the URL.
        for (text, env, why) in [
            ("[store]\nengine = \"postgres\"\n", None, "needs the database URL"),
            (
                "[store]\nurl = \"postgres://u:secret@h/d\"\n",
                None,
                "url only apply to engine = \"postgres\"",
            ),
            (
                "[store]\nengine = \"sled\"\npool_size = 3\n",
                None,
                "pool_size only apply",
            ),
            ("", Some("postgres://u:secret@h/d"), "SMDPPLUS_STORE_URL is set"),
            (
                "[store]\nengine = \"postgres\"\nurl = \"postgres://u:secret@h/d\"\nurl_file = \"/x\"\n",
                None,
                "not both",
            ),
            (
                "[store]\nengine = \"postgres\"\nurl = \"mysql://u:secret@h/d\"\n",
                None,
                "must start with postgres://",
            ),
            (
                "[store]\nengine = \"postgres\"\nurl = \"postgres://u:secret@h/d\"\npool_size = 0\n",
                None,
                "pool_size must be at least 1",
            ),
            (
                "[store]\nengine = \"postgres\"\nurl_file = \"/nonexistent/smdpplus-url\"\n",
                None,
                "url_file /nonexistent/smdpplus-url",
            ),
            ("[store]\nengine = \"mysql\"\n", None, "unknown variant"),
            ("[store]\npassword = \"x\"\n", None, "unknown field"),
        ] {
            let err = store(text, env).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("secret"), "{text}: {err}");
        }
    }
}
