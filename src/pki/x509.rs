//! What the SGP.22 certificate profiles (§4.5.2.1) read from an X.509
//! certificate, extracted once with the RFC 5280 rules that §4.5.2.2 asks
//! for: no duplicate extension, every critical extension understood, the
//! extensions we rely on well formed.

use crate::crypto::ecdsa::oid_is;
use std::fmt;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{BasicConstraints, KeyUsage, NameConstraints, ParsedExtension};
use x509_parser::x509::{X509Name, X509Version};

/// Role OIDs of SGP.22 Annex H (`id-rspRole`, 2.23.146.1.2.1.x).
pub mod role {
    /// id-rspRole-ci.
    pub const CI: &[u64] = &[2, 23, 146, 1, 2, 1, 0];
    /// id-rspRole-euicc.
    pub const EUICC: &[u64] = &[2, 23, 146, 1, 2, 1, 1];
    /// id-rspRole-eum.
    pub const EUM: &[u64] = &[2, 23, 146, 1, 2, 1, 2];
    /// id-rspRole-dp-auth.
    pub const DP_AUTH: &[u64] = &[2, 23, 146, 1, 2, 1, 4];
    /// id-rspRole-dp-pb.
    pub const DP_PB: &[u64] = &[2, 23, 146, 1, 2, 1, 5];
}

/// id-at-organizationName (X.520).
pub(crate) const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
/// id-at-serialNumber (X.520), which carries the EID (§4.5.2.1.0.2).
pub(crate) const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

/// A key identifier: the value of a SubjectKeyIdentifier or of the
/// keyIdentifier of an AuthorityKeyIdentifier (RFC 5280 §4.2.1.1-2). SGP.22
/// names a CI by it (the "CI Public Key Identifier", e.g. in
/// euiccCiPKIdListForVerification, §5.7.8); it is 20 bytes in practice.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Vec<u8>);

impl KeyId {
    /// A key identifier from its bytes.
    pub fn new(bytes: &[u8]) -> KeyId {
        KeyId(bytes.to_vec())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DER OCTET STRING `04 len || id`, the form of
    /// euiccCiPKIdToBeUsed (`SubjectKeyIdentifier`, §5.6.1).
    pub fn to_octet_string(&self) -> Vec<u8> {
        let len = self.0.len();
        let mut out = Vec::with_capacity(len + 4);
        out.push(0x04);
        // DER length: short form below 128 (always, for SHA-1 identifiers);
        // an extension value, hence an identifier, is under 64 KiB.
        match len {
            0..=0x7F => out.push(len as u8),
            0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
        out.extend_from_slice(&self.0);
        out
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The extensions SGP.22 reads, from one certificate.
pub(crate) struct Extensions<'c> {
    /// SubjectKeyIdentifier.
    pub ski: Option<KeyId>,
    /// AuthorityKeyIdentifier: `None` if absent, `Some(None)` if present
    /// without keyIdentifier.
    pub aki: Option<Option<KeyId>>,
    /// KeyUsage.
    pub key_usage: Option<KeyUsage>,
    /// BasicConstraints.
    pub basic_constraints: Option<BasicConstraints>,
    /// NameConstraints.
    pub name_constraints: Option<&'c NameConstraints<'c>>,
    /// The certificate policy OIDs, as arc lists.
    policies: Vec<Vec<u64>>,
}

impl Extensions<'_> {
    /// Whether the certificatePolicies extension lists `role`.
    pub fn has_policy(&self, role: &[u64]) -> bool {
        self.policies.iter().any(|p| p == role)
    }
}

/// Reads the extensions of `cert`, checking the version (v3, since the
/// profiles use extensions, §4.5.2.1), duplicate extensions and critical
/// extensions we do not understand (RFC 5280 §4.2). The error is a plain
/// reason for the caller's status message.
pub(crate) fn extensions<'c>(cert: &'c X509Certificate<'c>) -> Result<Extensions<'c>, String> {
    if cert.version() != X509Version::V3 {
        return Err("not an X.509 v3 certificate".into());
    }
    cert.extensions_map()
        .map_err(|_| "duplicate extension".to_string())?;
    let mut out = Extensions {
        ski: None,
        aki: None,
        key_usage: None,
        basic_constraints: None,
        name_constraints: None,
        policies: Vec::new(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => out.ski = Some(KeyId::new(id.0)),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                out.aki = Some(aki.key_identifier.as_ref().map(|id| KeyId::new(id.0)));
            }
            ParsedExtension::KeyUsage(ku) => out.key_usage = Some(*ku),
            ParsedExtension::BasicConstraints(bc) => out.basic_constraints = Some(bc.clone()),
            ParsedExtension::NameConstraints(nc) => out.name_constraints = Some(nc),
            ParsedExtension::CertificatePolicies(ps) => {
                out.policies = ps
                    .iter()
                    .filter_map(|p| p.policy_id.iter().map(|arcs| arcs.collect()))
                    .collect();
            }
            // Understood and not needed by the SGP.22 checks.
            ParsedExtension::SubjectAlternativeName(_)
            | ParsedExtension::ExtendedKeyUsage(_)
            | ParsedExtension::CRLDistributionPoints(_)
            | ParsedExtension::AuthorityInfoAccess(_) => {}
            ParsedExtension::ParseError { .. } => {
                return Err(format!("malformed extension {}", ext.oid.to_id_string()))
            }
            _ if ext.critical => {
                return Err(format!(
                    "unsupported critical extension {}",
                    ext.oid.to_id_string()
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The string values of the attributes of type `arcs` in a name, in
/// order. A value that is not a string is an error.
pub(crate) fn attribute_values(name: &X509Name<'_>, arcs: &[u64]) -> Result<Vec<String>, String> {
    name.iter_attributes()
        .filter(|a| oid_is(a.attr_type(), arcs))
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .map_err(|_| "a name attribute is not a string".to_string())
        })
        .collect()
}

/// Validity check (RFC 5280 §4.1.2.5, §4.5.2.2 "not have expired"):
/// `Err(true)` if `now` is after notAfter, `Err(false)` if before
/// notBefore.
pub(crate) fn check_validity(not_before: i64, not_after: i64, now: i64) -> Result<(), bool> {
    if now > not_after {
        Err(true)
    } else if now < not_before {
        Err(false)
    } else {
        Ok(())
    }
}

/// The SM-DP+ OID of a certificate: the registeredID in its
/// subjectAltName (SGP.22 §4.5.2.1.0.4, e.g. `2.999.10` for the SGP.26
/// TEST SM-DP+), dotted.
///
/// ```
/// let der = std::fs::read("certs/sgp26/DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der").unwrap();
/// assert_eq!(smdpplus::pki::x509::smdp_oid(&der).as_deref(), Some("2.999.10"));
/// ```
pub fn smdp_oid(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        // Decoded with our own OID reader: asn1-rs renders a first
        // subidentifier of two bytes (2.999 -> 0x88 0x37) wrongly.
        x509_parser::extensions::GeneralName::RegisteredID(oid) => {
            crate::asn1::der::Oid::from_content(oid.as_bytes(), "registeredID")
                .ok()
                .map(|o| o.to_string())
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_forms() {
        let id = KeyId::new(&[0xF5, 0x41, 0x72, 0xBD]);
        assert_eq!(id.to_string(), "F54172BD");
        assert_eq!(
            id.to_octet_string(),
            vec![0x04, 0x04, 0xF5, 0x41, 0x72, 0xBD]
        );
    }

    #[test]
    fn validity_bounds() {
        assert_eq!(check_validity(10, 20, 10), Ok(()));
        assert_eq!(check_validity(10, 20, 20), Ok(()));
        assert_eq!(check_validity(10, 20, 21), Err(true));
        assert_eq!(check_validity(10, 20, 9), Err(false));
    }
}
