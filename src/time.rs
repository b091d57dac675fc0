//! Time helpers: Unix seconds and the SGP.22 DATETIME format
//! (`YYYY-MM-DDThh:mm:ssZ`, §6.5.2.5).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
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
