//! What an anonymous ES9+ client may cost (SGP.22 §5.6.1): a rate of
//! InitiateAuthentication per client address, a cap on live RSP sessions
//! (see [`crate::store::session`]) and a short life for sessions that never
//! reach AuthenticateClient.
//!
//! ES9+ is server-authenticated only (§2.6.6, CERT.DPtls): anyone who can
//! reach the listener may call InitiateAuthentication, and each call signs
//! with DPauth and stores a session. The eUICC authenticates itself only at
//! AuthenticateClient, so limits before it can only key on the network
//! address. A refusal is the common status 1.2 Function Provider with a
//! reason of §5.2.6.2: 4.2 Execution Error when the client is over its
//! rate, 4.8 Insufficient Memory when the session store is full; both come
//! with HTTP 200 (§6.3) and a message saying why.

use crate::error::{codes, Error, StatusCode};
use crate::limits::{KeyedLimiter, Rate};
use serde::Deserialize;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// 1.2 Function Provider, 4.8 Insufficient Memory: the SM-DP+ holds as many
/// RSP sessions as it is configured to, all authenticated.
pub const SESSIONS_FULL: StatusCode = StatusCode {
    subject: "1.2",
    reason: "4.8",
};

/// 1.2 Function Provider, 4.2 Execution Error: this client address is over
/// its InitiateAuthentication rate.
pub const RATE_LIMITED: StatusCode = codes::PROVIDER_ERROR;

/// The `[es9]` table of the configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Es9Config {
    /// InitiateAuthentication calls per client address (IPv4 address, or
    /// IPv6 /64): `per_minute` tokens a minute, `burst` at once;
    /// `per_minute = 0` turns the limit off. The default is generous
    /// because a carrier-grade NAT puts thousands of devices behind one
    /// address, and each download needs one call.
    pub initiate_authentication_rate: Rate,
    /// Client addresses whose buckets are remembered at most (memory bound,
    /// about 100 bytes each); past it, full buckets are forgotten first.
    pub rate_limit_max_clients: usize,
    /// Live RSP sessions at most (0: no cap). Past it, the oldest session
    /// that has not authenticated is removed for a new one; when all are
    /// authenticated, InitiateAuthentication is refused.
    pub max_sessions: u64,
    /// Life of a session that has not reached AuthenticateClient (at most
    /// `session_ttl_secs`); an authenticated one lives `session_ttl_secs`.
    pub pending_session_ttl_secs: u64,
    /// How long a delivered Bound Profile Package is kept for a retry in a
    /// later RSP session with the same otPK.EUICC.ECKA (SGP.22 §5.6.2,
    /// §5.6.3 bppEuiccOtpk), at most the order's time to live; 0 keeps
    /// none (every later session binds anew).
    pub bpp_retry_secs: u64,
}

impl Default for Es9Config {
    fn default() -> Self {
        Es9Config {
            initiate_authentication_rate: Rate {
                per_minute: 3000,
                burst: 1000,
            },
            rate_limit_max_clients: 100_000,
            max_sessions: 100_000,
            pending_session_ttl_secs: 120,
            bpp_retry_secs: 24 * 3600,
        }
    }
}

/// The key of a client's bucket: its IPv4 address (an IPv4-mapped IPv6
/// address counts as IPv4), or the /64 prefix of its IPv6 address, which
/// one host or subscriber holds whole and can rotate addresses within.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// Per-process limiter of InitiateAuthentication by client address.
pub struct Es9Limiter {
    initiate: KeyedLimiter<IpAddr>,
}

impl Es9Limiter {
    /// A limiter with the configured rate.
    pub fn new(c: &Es9Config) -> Es9Limiter {
        Es9Limiter {
            initiate: KeyedLimiter::new(c.initiate_authentication_rate, c.rate_limit_max_clients),
        }
    }

    /// Takes a token for a call from `peer`, or refuses with the wait.
    pub fn initiate(&self, peer: IpAddr) -> Result<(), Error> {
        self.initiate.take(&client_key(peer)).map_err(|wait| {
            Error::refused(
                RATE_LIMITED,
                format!(
                    "rate-limited: too many initiateAuthentication calls from this address; retry in {wait} s"
                ),
            )
        })
    }
}

/// A log line at most once per `every`; the lines held back are counted
/// and reported with the next one, so a flood costs one line a period.
pub struct QuietLog {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl QuietLog {
    /// A log throttle.
    pub const fn new(every: Duration) -> QuietLog {
        QuietLog {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// Records `n` events; `Some(events since the last line, these
    /// included)` when a line may be written now.
    pub fn admit(&self, n: u64) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.held.fetch_add(n, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held.swap(0, Ordering::Relaxed) + n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(client_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }

    #[test]
    fn one_prefix_shares_a_bucket_other_addresses_do_not() {
        let l = Es9Limiter::new(&Es9Config {
            initiate_authentication_rate: Rate {
                per_minute: 1,
                burst: 2,
            },
            ..Es9Config::default()
        });
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(l.initiate(a).is_ok());
        assert!(l.initiate(b).is_ok());
        let e = l.initiate(a).unwrap_err();
        assert_eq!(e.code, RATE_LIMITED);
        assert!(e.message.contains("rate-limited"), "{}", e.message);
        assert!(l.initiate("192.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn quiet_log_holds_back_and_counts() {
        let q = QuietLog::new(Duration::from_secs(3600));
        assert_eq!(q.admit(1), Some(1));
        assert_eq!(q.admit(1), None);
        assert_eq!(q.admit(5), None);
        if let Some(past) = Instant::now().checked_sub(Duration::from_secs(3601)) {
            *q.last.lock().unwrap() = Some(past);
            assert_eq!(q.admit(1), Some(7), "the held-back events are reported");
        }
        let q = QuietLog::new(Duration::ZERO);
        assert_eq!(q.admit(1), Some(1));
        assert_eq!(q.admit(2), Some(2));
    }
}
