//! Query strings and path segments (RFC 3986 §2.1 percent-encoding; `+` is
//! a space in a query, as HTML forms and WebView navigations send it).

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`).
/// `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would
                // also take a sign (`%+1`).
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a
/// query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parsed query string.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pairs: Vec<(String, Option<String>)>,
}

impl Query {
    /// Parses `a=1&b=2`. A pair whose value does not decode is kept with
    /// no value, so the parameter can be named in the error.
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                Some((percent_decode(k, true)?, percent_decode(v, true)))
            })
            .collect();
        Query { pairs }
    }

    /// The first value of `name`: `None` when absent, `Some(Err(()))` when
    /// present but not decodable.
    pub fn get(&self, name: &str) -> Option<Result<&str, ()>> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref().ok_or(()))
    }

    /// Whether `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_plus_and_refuses_bad_ones() {
        assert_eq!(
            percent_decode("%2F7RBTuSJt02OZbX8.4", true).as_deref(),
            Some("/7RBTuSJt02OZbX8.4")
        );
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%2", true), None);
        assert_eq!(percent_decode("%zz", true), None);
        assert_eq!(percent_decode("%ff", true), None);
        // A sign is not a hex digit.
        assert_eq!(percent_decode("%+1", true), None);
        assert_eq!(percent_decode("%-1", true), None);
        assert_eq!(percent_decode("%4a", true).as_deref(), Some("J"));
        assert_eq!(percent_encode("/7R b.4~"), "%2F7R%20b.4~");
        assert_eq!(
            percent_decode(&percent_encode("é/+&="), true).as_deref(),
            Some("é/+&=")
        );
        let q = Query::parse(Some("limit=1&location=us&bad=%zz&limit=2"));
        assert_eq!(q.get("limit"), Some(Ok("1")));
        assert_eq!(q.get("bad"), Some(Err(())));
        assert_eq!(q.get("none"), None);
    }
}
