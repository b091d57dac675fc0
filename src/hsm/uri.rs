//! PKCS#11 URIs (RFC 7512) naming one key on the configured token:
//! `pkcs11:object=dpauth-nist`, `pkcs11:id=%01%02`, or both, optionally
//! with `token=<label>` (which must be the configured token) and
//! `type=private|public|secret` (which must fit the use).
//!
//! The PIN is never part of a URI here: `pin-value` (RFC 7512 §2.3) is
//! refused, so that a configuration file never holds it; the PIN comes from
//! `[hsm] pin_file` or the environment.

use super::HsmError;
use std::fmt;

/// A key reference: the CKA_LABEL and/or CKA_ID of the object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyUri {
    /// `object=`: CKA_LABEL.
    pub object: Option<String>,
    /// `id=`: CKA_ID (percent-encoded bytes in the URI).
    pub id: Option<Vec<u8>>,
    /// `token=`: the token label, when the URI names one.
    pub token: Option<String>,
    /// `type=`: `private`, `public`, `secret` or `cert`, when named.
    pub object_type: Option<String>,
}

/// The scheme prefix that marks a key reference as a token key.
pub const SCHEME: &str = "pkcs11:";

impl KeyUri {
    /// Parses a PKCS#11 URI (RFC 7512 §2.3). Only the path attributes
    /// `object`, `id`, `token` and `type` are accepted (others, such as
    /// `slot-id` or `serial`, would select a token other than the
    /// configured one); the query may carry none of ours, and `pin-value`
    /// is refused.
    pub fn parse(text: &str) -> Result<KeyUri, HsmError> {
        // The query is left out of errors: it may hold a PIN.
        let shown = text.split('?').next().unwrap_or_default();
        let bad = |why: String| HsmError::Uri {
            uri: shown.to_owned(),
            why,
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("does not start with pkcs11:".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        // No query attribute is ours (RFC 7512 §2.3: pin-source,
        // pin-value, module-name, module-path).
        if let Some(attr) = query.and_then(|q| q.split('&').find(|a| !a.is_empty())) {
            let name = attr.split_once('=').map_or(attr, |(n, _)| n);
            return Err(bad(if name == "pin-value" || name == "pin-source" {
                "the PIN does not go in a key URI: use [hsm] pin_file or SMDPPLUS_HSM_PIN".into()
            } else {
                format!("query attribute {name} is not supported")
            }));
        }
        let mut uri = KeyUri {
            object: None,
            id: None,
            token: None,
            object_type: None,
        };
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("path attribute {attr} has no value")))?;
            let value = percent_decode(value).map_err(|e| bad(e.into()))?;
            let text_value = || {
                String::from_utf8(value.clone()).map_err(|_| bad(format!("{name} is not UTF-8")))
            };
            let slot = match name {
                "object" => {
                    let v = text_value()?;
                    set(&mut uri.object, v)
                }
                "id" => set(&mut uri.id, value.clone()),
                "token" => {
                    let v = text_value()?;
                    set(&mut uri.token, v)
                }
                "type" => {
                    let v = text_value()?;
                    if !["private", "public", "secret-key", "secret", "cert"].contains(&v.as_str())
                    {
                        return Err(bad(format!("type={v} is not an object type")));
                    }
                    set(&mut uri.object_type, v)
                }
                other => return Err(bad(format!("path attribute {other} is not supported"))),
            };
            if !slot {
                return Err(bad(format!("{name} appears twice")));
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("names no key: give object= (label) or id=".into()));
        }
        Ok(uri)
    }

    /// A URI naming a key by its label.
    pub fn label(label: &str) -> KeyUri {
        KeyUri {
            object: Some(label.to_owned()),
            id: None,
            token: None,
            object_type: None,
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(value);
    true
}

fn percent_decode(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("truncated percent escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "bad percent escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 3986 unreserved characters and the `pk11-pchar` extras of RFC 7512
/// §2.3 stay as they are; every other byte is percent-encoded.
fn percent_encode(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for &c in bytes {
        if c.is_ascii_alphanumeric() || b"-._~:[]@!$'()*+,=&".contains(&c) {
            write!(f, "{}", c as char)?;
        } else {
            write!(f, "%{c:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        let mut sep = "";
        if let Some(t) = &self.token {
            f.write_str("token=")?;
            percent_encode(t.as_bytes(), f)?;
            sep = ";";
        }
        if let Some(o) = &self.object {
            write!(f, "{sep}object=")?;
            percent_encode(o.as_bytes(), f)?;
            sep = ";";
        }
        if let Some(id) = &self.id {
            write!(f, "{sep}id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
            sep = ";";
        }
        if let Some(t) = &self.object_type {
            write!(f, "{sep}type={t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_ids_and_tokens() {
        let u = KeyUri::parse("pkcs11:object=dpauth-nist").expect("label");
        assert_eq!(u.object.as_deref(), Some("dpauth-nist"));
        assert_eq!(u.id, None);
        let u = KeyUri::parse("pkcs11:token=My%20HSM;id=%01%a2;type=private").expect("id");
        assert_eq!(u.token.as_deref(), Some("My HSM"));
        assert_eq!(u.id, Some(vec![0x01, 0xA2]));
        assert_eq!(u.object_type.as_deref(), Some("private"));
        assert_eq!(
            u.to_string(),
            "pkcs11:token=My%20HSM;id=%01%A2;type=private"
        );
        assert_eq!(KeyUri::parse(&u.to_string()).expect("round trip"), u);
    }

    #[test]
    fn refuses_pins_unknown_attributes_and_empty_names() {
        for bad in [
            "pkcs11:object=a?pin-value=1234",
            "pkcs11:object=a?pin-source=file:/x",
            "pkcs11:object=a;slot-id=3",
            "pkcs11:object=a;object=b",
            "pkcs11:token=t",
            "pkcs11:object=a%2",
            "pkcs11:type=private;object=a;type=bogus",
            "/etc/smdpplus/dpauth.key",
        ] {
            let e = KeyUri::parse(bad).expect_err(bad);
            let path = bad.split('?').next().unwrap_or_default();
            assert!(e.to_string().contains(path), "{e} names the URI");
        }
        let e = KeyUri::parse("pkcs11:object=a?pin-value=1234").expect_err("pin");
        assert!(e.to_string().contains("pin_file"), "{e}");
        assert!(!e.to_string().contains("1234"), "{e} shows no PIN");
    }
}
