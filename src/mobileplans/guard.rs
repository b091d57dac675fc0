//! Who may act on a Mobile Plans purchase from the public operator-web
//! listener, and how much a stranger may buy there.
//!
//! A transactionId is not a secret: the app puts it in the portal URL and
//! it is logged. So every action on an existing order (cancel, withdraw,
//! the result-page decision, a reload of the result page, the download
//! retry) needs the order's **capability**: HMAC-SHA256 under a server key
//! over the order's id, transactionId and creation time. It is handed out
//! once, in the response that created the order: as the cookie
//! `__Host-mpcap-<order id>` (HttpOnly, Secure, SameSite=Strict, Path=/,
//! for the order's life) by the portal, and in the admin API's answers to
//! the operator. It is presented back as that cookie or as the header
//! `X-MP-Capability`, and compared in constant time.
//!
//! The purchase form carries a CSRF token: a random 128-bit value in the
//! cookie `__Host-mpcsrf`, set by the plans and checkout pages, repeated
//! in the form's `csrf` field (double submit, compared in constant time).
//!
//! Portal purchases are rate-limited per client address and per EID
//! ([`KeyedLimiter`]), and the open portal orders of an EID are capped.
//! Every refusal is counted in
//! `smdpplus_mobileplans_refused_total{reason}` and logged (the log lines
//! themselves rate-limited).

use crate::config::Config;
use crate::limits::{KeyedLimiter, Rate, RateLimiter};
use crate::metrics::Metrics;
use crate::store::mobileplans::MobilePlansOrder;
use aws_lc_rs::hmac;
use hyper::HeaderMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The header an operator's own page may present the capability in.
pub const CAPABILITY_HEADER: &str = "x-mp-capability";
/// The CSRF cookie.
pub const CSRF_COOKIE: &str = "__Host-mpcsrf";
/// The CSRF form field.
pub const CSRF_FIELD: &str = "csrf";
/// Buckets kept per keyed limiter.
const MAX_KEYS: usize = 100_000;
/// How long a CSRF cookie lives, seconds.
const CSRF_MAX_AGE: u64 = 3600;

/// Why a request was refused (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No capability, or a wrong one, for an action on an order.
    Capability,
    /// A purchase without a valid CSRF token.
    Csrf,
    /// Too many purchases from one client address.
    RateLimitIp,
    /// Too many purchases for one EID.
    RateLimitEid,
    /// Too many open portal orders for one EID.
    OpenOrdersEid,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capability => "capability",
            Refusal::Csrf => "csrf",
            Refusal::RateLimitIp => "rate_limit_ip",
            Refusal::RateLimitEid => "rate_limit_eid",
            Refusal::OpenOrdersEid => "open_orders_eid",
        }
    }
}

/// Who confirms a portal order (the payment) before its profile is
/// released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirmation {
    /// The reference portal's stand-in payment step: a page with a Pay
    /// button (`POST /portal/confirm`).
    #[default]
    Portal,
    /// The operator's backend, after its payment, through the admin API
    /// (`POST /smdpplus/admin/v1/mobileplans/orders/{transactionId}/confirm`).
    Operator,
}

/// The capability key, the purchase limiters and the refusal log.
pub struct Guard {
    key: hmac::Key,
    /// Portal purchases per client address.
    pub per_ip: KeyedLimiter<IpAddr>,
    /// Portal purchases per EID.
    pub per_eid: KeyedLimiter<String>,
    log: RateLimiter,
}

/// Reads the capability key (64 hex digits), or creates it (mode 0600).
fn load_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    let parse = |text: &str| -> Result<[u8; 32], String> {
        hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("{}: not 64 hex digits", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key: [u8; 32] = rand::random();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.write_all(hex::encode(key).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn message(order: &MobilePlansOrder) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    for part in [
        b"smdpplus/mobileplans/capability/v1".as_slice(),
        &order.id.to_be_bytes(),
        order.transaction_id.as_bytes(),
        &order.created_at.to_be_bytes(),
    ] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// The values of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The capability cookie's name for an order.
pub fn capability_cookie_name(order_id: u64) -> String {
    format!("__Host-mpcap-{order_id}")
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// A well-formed CSRF token: 32 lowercase hex digits.
fn csrf_shape(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Guard {
    /// The guard of a configuration: loads or creates the key file.
    pub fn new(config: &Config) -> Result<Guard, String> {
        let mp = &config.mobile_plans;
        let path = mp.capability_key_path(&config.data_dir);
        let key = load_or_create_key(&path)?;
        Ok(Guard {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            per_ip: KeyedLimiter::new(mp.purchase_rate_per_ip(), MAX_KEYS),
            per_eid: KeyedLimiter::new(mp.purchase_rate_per_eid(), MAX_KEYS),
            log: RateLimiter::new(5, 20),
        })
    }

    /// The order's capability (64 hex digits).
    pub fn capability(&self, order: &MobilePlansOrder) -> String {
        hex::encode(hmac::sign(&self.key, &message(order)).as_ref())
    }

    /// The capability the request presents for `order` (cookie or
    /// header), checked in constant time.
    pub fn allowed(&self, headers: &HeaderMap, order: &MobilePlansOrder) -> bool {
        let name = capability_cookie_name(order.id);
        let presented = cookie(headers, &name).or_else(|| {
            headers
                .get(CAPABILITY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        });
        let Some(tag) = presented.and_then(|p| hex::decode(p).ok()) else {
            return false;
        };
        hmac::verify(&self.key, &message(order), &tag).is_ok()
    }

    /// The `Set-Cookie` value handing out the order's capability, for
    /// `max_age` seconds.
    pub fn capability_set_cookie(&self, order: &MobilePlansOrder, max_age: u64) -> String {
        format!(
            "{}={}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Strict",
            capability_cookie_name(order.id),
            self.capability(order)
        )
    }

    /// The request's CSRF token, or a new one with its `Set-Cookie`.
    pub fn csrf_token(headers: &HeaderMap) -> (String, Option<String>) {
        match cookie(headers, CSRF_COOKIE).filter(|t| csrf_shape(t)) {
            Some(t) => (t.to_owned(), None),
            None => {
                let t = hex::encode(rand::random::<[u8; 16]>());
                let set = format!(
                    "{CSRF_COOKIE}={t}; Max-Age={CSRF_MAX_AGE}; Path=/; Secure; HttpOnly; SameSite=Strict"
                );
                (t, Some(set))
            }
        }
    }

    /// The form's CSRF token matches the cookie's.
    pub fn csrf_ok(headers: &HeaderMap, field: Option<&str>) -> bool {
        match (cookie(headers, CSRF_COOKIE), field) {
            (Some(c), Some(f)) => csrf_shape(c) && same(c, f),
            _ => false,
        }
    }

    /// Counts a refusal and logs it (at most a few lines a second).
    pub fn refused(&self, metrics: &Metrics, reason: Refusal, peer: IpAddr, what: &str) {
        metrics
            .mobileplans_refused
            .with_label_values(&[reason.as_str()])
            .inc();
        if self.log.take().is_ok() {
            tracing::warn!(reason = reason.as_str(), %peer, what, "Mobile Plans request refused");
        }
    }
}

/// Resolved `[mobile_plans]` settings, with their defaults.
impl crate::config::MobilePlansConfig {
    /// The capability key file: `capability_key_file`, default
    /// `<data_dir>/mobileplans.key`.
    pub fn capability_key_path(&self, data_dir: &Path) -> PathBuf {
        self.capability_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("mobileplans.key"))
    }
    /// `hold_secs`, default 1800 (30 minutes), at least 1.
    pub fn hold_secs(&self) -> u64 {
        self.hold_secs.unwrap_or(1800).max(1)
    }

    /// `confirmation`, default `portal`.
    pub fn confirmation(&self) -> Confirmation {
        self.confirmation.unwrap_or_default()
    }

    /// `purchase_rate_per_ip`, default 10 a minute, burst 5.
    pub fn purchase_rate_per_ip(&self) -> Rate {
        self.purchase_rate_per_ip.unwrap_or(Rate {
            per_minute: 10,
            burst: 5,
        })
    }

    /// `purchase_rate_per_eid`, default 2 a minute, burst 3.
    pub fn purchase_rate_per_eid(&self) -> Rate {
        self.purchase_rate_per_eid.unwrap_or(Rate {
            per_minute: 2,
            burst: 3,
        })
    }

    /// `max_open_orders_per_eid`, default 2; 0 is no cap.
    pub fn max_open_orders_per_eid(&self) -> u32 {
        self.max_open_orders_per_eid.unwrap_or(2)
    }
}
