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

#[cfg(test)]
mod tests {
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
