//! A strict reader for the PEM sections of key files (RFC 7468).
//!
//! rustls-pki-types reads the key section but skips the `EC PARAMETERS`
//! section that OpenSSL writes before SGP.26 keys; we want both, to check
//! that they agree.

use base64::Engine;
use zeroize::Zeroizing;

/// One PEM section: its label and its decoded content, zeroized on drop
/// (it may be a private key).
pub(crate) struct Section {
    pub label: String,
    pub der: Zeroizing<Vec<u8>>,
}

/// Reads every `-----BEGIN X-----` ... `-----END X-----` section of `text`.
/// Text outside sections is ignored (RFC 7468 §2 allows explanatory text);
/// a section that is not closed by the matching END line, or whose body is
/// not base64, is an error.
pub(crate) fn sections(text: &str) -> Result<Vec<Section>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = Zeroizing::new(String::new());
        let mut closed = false;
        for l in lines.by_ref() {
            if l == end {
                closed = true;
                break;
            }
            body.push_str(l);
        }
        if !closed {
            return Err(format!("PEM section {label} is not closed"));
        }
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|e| format!("PEM section {label}: {e}"))?,
        );
        out.push(Section {
            label: label.to_owned(),
            der,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_sections_in_order() {
        let text = "junk\n-----BEGIN A-----\nAAEC\n-----END A-----\n-----BEGIN B C-----\nAw==\n-----END B C-----\n";
        let s = super::sections(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "A");
        assert_eq!(*s[0].der, vec![0, 1, 2]);
        assert_eq!(s[1].label, "B C");
        assert_eq!(*s[1].der, vec![3]);
    }

    #[test]
    fn rejects_unclosed_or_bad_base64() {
        assert!(super::sections("-----BEGIN A-----\nAAEC\n").is_err());
        assert!(super::sections("-----BEGIN A-----\n!!\n-----END A-----\n").is_err());
    }
}
