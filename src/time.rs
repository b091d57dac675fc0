//! Time helpers: Unix seconds and the SGP.22 DATETIME format
//! (`YYYY-MM-DDThh:mm:ssZ`, §6.5.2.5).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in Unix seconds. Every decision the server takes on wall time
/// (order expiry, holds, scheduled releases, RSP session lives, outbox due
/// times) reads it here.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() + skew()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64 + skew() * 1000
}

/// Seconds the test clock was moved forward (none in a release build).
fn skew() -> i64 {
    #[cfg(debug_assertions)]
    return test_clock::offset();
    #[cfg(not(debug_assertions))]
    0
}

/// Resolves when the test clock moves forward, so that a background worker
/// waiting for a due time looks again at once. Never resolves in a release
/// build or without `serve --test-clock`.
pub struct Advances {
    #[cfg(debug_assertions)]
    rx: Option<tokio::sync::watch::Receiver<i64>>,
}

impl Advances {
    /// Subscribes to the test clock's advances.
    pub fn new() -> Advances {
        Advances {
            #[cfg(debug_assertions)]
            rx: test_clock::subscribe(),
        }
    }

    /// Waits for the next advance.
    pub async fn next(&mut self) {
        #[cfg(debug_assertions)]
        if let Some(rx) = &mut self.rx {
            if rx.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl Default for Advances {
    fn default() -> Self {
        Advances::new()
    }
}

/// The clock of `serve --test-clock`, in debug builds only: wall time plus
/// an offset that `POST /test/clock?advance=SECONDS` on the operations
/// listener moves forward, waking the workers that wait for a due time.
/// Integration tests use it instead of sleeping through an expiry.
#[cfg(debug_assertions)]
pub mod test_clock {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::OnceLock;
    use tokio::sync::watch;

    static OFFSET: AtomicI64 = AtomicI64::new(0);
    static ADVANCED: OnceLock<watch::Sender<i64>> = OnceLock::new();

    /// Turns the test clock on (`serve --test-clock`), before the server starts.
    pub fn enable() {
        ADVANCED.get_or_init(|| watch::channel(0).0);
    }

    /// Whether `serve --test-clock` turned it on.
    pub fn enabled() -> bool {
        ADVANCED.get().is_some()
    }

    /// Seconds added to wall time.
    pub fn offset() -> i64 {
        OFFSET.load(Ordering::SeqCst)
    }

    /// Moves the clock `secs` forward and wakes the subscribers: the new offset.
    pub fn advance(secs: i64) -> i64 {
        let offset = OFFSET.fetch_add(secs, Ordering::SeqCst) + secs;
        if let Some(tx) = ADVANCED.get() {
            tx.send_replace(offset);
        }
        offset
    }

    pub(super) fn subscribe() -> Option<watch::Receiver<i64>> {
        ADVANCED.get().map(|tx| tx.subscribe())
    }
}

/// Formats Unix seconds as `YYYY-MM-DDThh:mm:ssZ`.
pub fn datetime(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Parses an RFC 3339 date-time into Unix seconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// An ISO 8601 duration of whole seconds, largest units first, zero
/// units left out: `P23DT23H`, `PT1H30M`, `PT0S` for nothing left
/// ([MP-Account] `timeRemaining`). Negative counts as zero.
pub fn iso8601_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    if s == 0 {
        return "PT0S".into();
    }
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if h > 0 || m > 0 || sec > 0 {
        out.push('T');
        for (n, unit) in [(h, 'H'), (m, 'M'), (sec, 'S')] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_durations() {
        use super::iso8601_duration as d;
        assert_eq!(d(0), "PT0S");
        assert_eq!(d(-5), "PT0S");
        assert_eq!(d(23 * 86400 + 23 * 3600), "P23DT23H");
        assert_eq!(d(86400), "P1D");
        assert_eq!(d(5400), "PT1H30M");
        assert_eq!(d(59), "PT59S");
        assert_eq!(d(86400 + 61), "P1DT1M1S");
    }

    #[test]
    fn round_trip() {
        assert_eq!(super::datetime(1_000_000_000), "2001-09-09T01:46:40Z");
        assert_eq!(
            super::parse_datetime("2001-09-09T01:46:40Z"),
            Some(1_000_000_000)
        );
        assert_eq!(
            super::parse_datetime("2001-09-09T03:46:40+02:00"),
            Some(1_000_000_000)
        );
        assert_eq!(super::parse_datetime("yesterday"), None);
    }
}
