//! Software eUICCs with their own identities: a fresh key pair and a
//! CERT.EUICC.ECDSA issued in-process by an EUM, with an EID inside the
//! range the EUM certificate permits (SGP.22 §4.5.2.1.0.2, §4.5.2.2).
//!
//! The certificate follows the profile of the SGP.26 test eUICC
//! certificate: v3, ecdsa-with-SHA256, the issuer copied byte for byte from
//! the EUM's subject, a subject `C, O, serialNumber = EID, CN`, the EUM's
//! SubjectKeyIdentifier as AuthorityKeyIdentifier, a SubjectKeyIdentifier,
//! a critical keyUsage digitalSignature and a critical certificatePolicies
//! id-rspRole-euicc. The organization and the EID's prefix come from the
//! first DirectoryName of the EUM's permitted subtrees (§4.5.2.1.0.3), so
//! an SM-DP+ that checks the chain up to the CI accepts the eUICC.
//!
//! [`Eum::sgp26`] is the SGP.26 test EUM (NIST P-256 or brainpoolP256r1)
//! with its published key; test material only.

use super::{ierr, EuiccError, SoftEuicc};
use crate::asn1::der::write_length;
use crate::crypto::ecdsa::{Curve, PublicKey, SigningKey};
use crate::ids::Eid;
use crate::pki::ci::CiSet;
use crate::pki::x509::{attribute_values, extensions, role, OID_ORGANIZATION, OID_SERIAL_NUMBER};
use rand::RngCore;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;

const NIST_EUM_KEY: &str = include_str!("../../certs/sgp26/EUM/SK_EUM_ECDSA_NIST.pem");
const BRP_EUM_KEY: &str = include_str!("../../certs/sgp26/EUM/SK_EUM_ECDSA_BRP.pem");

/// ecdsa-with-SHA256 (RFC 5758).
const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// prime256v1 (RFC 5480).
const PRIME256V1: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
/// brainpoolP256r1 (RFC 5639).
const BRAINPOOL_P256R1: &[u64] = &[1, 3, 36, 3, 3, 2, 8, 1, 1, 7];
/// id-at-countryName, id-at-commonName (X.520).
const COUNTRY: &[u64] = &[2, 5, 4, 6];
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];
/// id-ce-authorityKeyIdentifier, -subjectKeyIdentifier, -keyUsage,
/// -certificatePolicies (RFC 5280).
const AKI: &[u64] = &[2, 5, 29, 35];
const SKI: &[u64] = &[2, 5, 29, 14];
const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const CERT_POLICIES: &[u64] = &[2, 5, 29, 32];

/// An EUM that issues eUICC certificates: its key, its certificate and
/// what its nameConstraints permit.
pub struct Eum {
    key: SigningKey,
    certificate: Vec<u8>,
    subject: Vec<u8>,
    key_id: Vec<u8>,
    organization: String,
    iin: String,
    cis: CiSet,
}

impl Eum {
    /// An EUM from its certificate (DER) and key; `cis` are the CIs the
    /// eUICCs it issues will trust.
    pub fn new(certificate: Vec<u8>, key: SigningKey, cis: CiSet) -> Result<Eum, EuiccError> {
        let (subject, key_id, organization, iin) = {
            let (_, cert) = x509_parser::parse_x509_certificate(&certificate).map_err(ierr)?;
            let ext = extensions(&cert).map_err(ierr)?;
            let key_id = ext
                .ski
                .ok_or_else(|| ierr("EUM certificate has no SubjectKeyIdentifier"))?
                .as_bytes()
                .to_vec();
            let mut permitted = None;
            for subtree in ext
                .name_constraints
                .and_then(|nc| nc.permitted_subtrees.as_ref())
                .into_iter()
                .flatten()
            {
                if let GeneralName::DirectoryName(name) = &subtree.base {
                    let orgs = attribute_values(name, OID_ORGANIZATION).map_err(ierr)?;
                    let iins = attribute_values(name, OID_SERIAL_NUMBER).map_err(ierr)?;
                    if let Some(iin) = iins.into_iter().next() {
                        permitted = Some((orgs.into_iter().next(), iin));
                        break;
                    }
                }
            }
            let (org, iin) = permitted
                .ok_or_else(|| ierr("EUM certificate permits no DirectoryName with an IIN"))?;
            if iin.is_empty() || iin.len() > 30 || !iin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ierr(format!(
                    "EUM permitted IIN {iin:?} is not 1-30 digits"
                )));
            }
            let organization = match org {
                Some(o) => o,
                None => attribute_values(cert.subject(), OID_ORGANIZATION)
                    .map_err(ierr)?
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
            };
            (cert.subject().as_raw().to_vec(), key_id, organization, iin)
        };
        if PublicKey::from_certificate_der(&certificate).map_err(ierr)? != *key.public_key() {
            return Err(ierr("the EUM key does not match its certificate"));
        }
        Ok(Eum {
            key,
            certificate,
            subject,
            key_id,
            organization,
            iin,
            cis,
        })
    }

    /// The SGP.26 test EUM on `curve`. The eUICCs it issues trust only the
    /// SGP.26 test CI of that curve, so an SM-DP+ authenticates to them
    /// with its DPauth/DPpb credentials on that curve too (§5.6.1): a
    /// whole session runs on one curve.
    pub fn sgp26(curve: Curve) -> Result<Eum, EuiccError> {
        let (cert, key) = match curve {
            Curve::NistP256 => (super::NIST_EUM, NIST_EUM_KEY),
            Curve::BrainpoolP256r1 => (super::BRP_EUM, BRP_EUM_KEY),
        };
        let all = crate::pki::sgp26::ci_set().map_err(ierr)?;
        let cis = CiSet::from_der(
            all.iter()
                .filter(|c| c.public_key().curve() == curve)
                .map(|c| c.certificate_der()),
        )
        .map_err(ierr)?;
        Eum::new(cert.to_vec(), SigningKey::from_pem(key).map_err(ierr)?, cis)
    }

    /// The curve of the EUM key, hence of the eUICC keys it issues.
    pub fn curve(&self) -> Curve {
        self.key.curve()
    }

    /// The EUM certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The IIN the EUM's nameConstraints permit: every EID it issues
    /// starts with it.
    pub fn iin(&self) -> &str {
        &self.iin
    }

    /// The EID with this EUM's IIN, then `serial` (zero-padded, its
    /// low-order digits kept) up to 30 digits, then the two ISO 7064
    /// MOD 97-10 check digits that make the whole number 1 modulo 97.
    pub fn eid(&self, serial: u128) -> Result<Eid, EuiccError> {
        let width = 30 - self.iin.len();
        let digits = format!("{serial:0width$}");
        let body = format!("{}{}", self.iin, &digits[digits.len() - width..]);
        let rem = body
            .bytes()
            .fold(0u32, |acc, b| (acc * 10 + u32::from(b - b'0')) % 97);
        let check = 98 - (rem * 100) % 97;
        Eid::parse(&format!("{body}{check:02}")).ok_or_else(|| ierr("EID is not 32 digits"))
    }

    /// Issues CERT.EUICC.ECDSA for `eid` and `public_key` (§4.5.2.1.0.2).
    pub fn issue_certificate(
        &self,
        eid: &Eid,
        public_key: &PublicKey,
    ) -> Result<Vec<u8>, EuiccError> {
        if !eid.as_str().starts_with(&self.iin) {
            return Err(ierr(format!(
                "EID {eid} is outside the EUM's IIN {}",
                self.iin
            )));
        }
        self.sign_certificate(eid, public_key)
    }

    /// The certificate, without the range check (tests make out-of-range
    /// ones with it).
    fn sign_certificate(&self, eid: &Eid, public_key: &PublicKey) -> Result<Vec<u8>, EuiccError> {
        let mut serial = [0u8; 9];
        rand::rngs::OsRng.fill_bytes(&mut serial[1..]);
        serial[0] = 0x02;
        let alg = tlv(0x30, &oid(ECDSA_WITH_SHA256));
        let subject = tlv(
            0x30,
            &[
                rdn(COUNTRY, 0x13, "ES"),
                rdn(OID_ORGANIZATION, 0x0C, &self.organization),
                rdn(OID_SERIAL_NUMBER, 0x13, eid.as_str()),
                rdn(COMMON_NAME, 0x0C, "Test eUICC"),
            ]
            .concat(),
        );
        let curve_oid = match public_key.curve() {
            Curve::NistP256 => PRIME256V1,
            Curve::BrainpoolP256r1 => BRAINPOOL_P256R1,
        };
        let point = public_key.to_uncompressed();
        let mut bits = vec![0u8];
        bits.extend_from_slice(point);
        let spki = tlv(
            0x30,
            &[
                tlv(0x30, &[oid(EC_PUBLIC_KEY), oid(curve_oid)].concat()),
                tlv(0x03, &bits),
            ]
            .concat(),
        );
        // RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 of the key.
        let ski = &Sha256::digest(point)[..20];
        let extensions = tlv(
            0x30,
            &[
                extension(AKI, false, &tlv(0x30, &tlv(0x80, &self.key_id))),
                extension(SKI, false, &tlv(0x04, ski)),
                // BIT STRING, 7 unused bits, digitalSignature.
                extension(KEY_USAGE, true, &[0x03, 0x02, 0x07, 0x80]),
                extension(
                    CERT_POLICIES,
                    true,
                    &tlv(0x30, &tlv(0x30, &oid(role::EUICC))),
                ),
            ]
            .concat(),
        );
        let tbs = tlv(
            0x30,
            &[
                tlv(0xA0, &[0x02, 0x01, 0x02]),
                tlv(0x02, &serial),
                alg.clone(),
                self.subject.clone(),
                tlv(
                    0x30,
                    &[tlv(0x17, b"200401000000Z"), tlv(0x18, b"99991231235959Z")].concat(),
                ),
                subject,
                spki,
                tlv(0xA3, &extensions),
            ]
            .concat(),
        );
        let sig = self
            .key
            .sign(&tbs)
            .and_then(|s| s.to_der(self.key.curve()))
            .map_err(ierr)?;
        let mut sig_bits = vec![0u8];
        sig_bits.extend_from_slice(&sig);
        Ok(tlv(0x30, &[tbs, alg, tlv(0x03, &sig_bits)].concat()))
    }

    /// A new software eUICC with the EID made from `serial` (see
    /// [`Eum::eid`]), a fresh key pair and a certificate issued now.
    pub fn issue(&self, serial: u128) -> Result<SoftEuicc, EuiccError> {
        self.issue_for(&self.eid(serial)?)
    }

    /// A new software eUICC with the given EID (inside this EUM's range).
    pub fn issue_for(&self, eid: &Eid) -> Result<SoftEuicc, EuiccError> {
        let key = generate_key(self.curve())?;
        let cert = self.issue_certificate(eid, key.public_key())?;
        SoftEuicc::new(key, cert, self.certificate.clone(), self.cis.clone())
    }
}

/// A fresh ECDSA key on `curve` from the OS CSPRNG.
pub fn generate_key(curve: Curve) -> Result<SigningKey, EuiccError> {
    let mut scalar = zeroize::Zeroizing::new([0u8; 32]);
    for _ in 0..64 {
        rand::rngs::OsRng.fill_bytes(scalar.as_mut());
        if let Ok(k) = SigningKey::from_scalar(curve, scalar.as_ref()) {
            return Ok(k);
        }
    }
    Err(ierr("the random generator gave no valid scalar"))
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(tag);
    write_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = vec![];
    if let [a, b, rest @ ..] = arcs {
        body.push((a * 40 + b) as u8);
        for &arc in rest {
            let mut tmp = vec![(arc & 0x7f) as u8];
            let mut v = arc >> 7;
            while v > 0 {
                tmp.push(((v & 0x7f) as u8) | 0x80);
                v >>= 7;
            }
            tmp.reverse();
            body.extend(tmp);
        }
    }
    tlv(0x06, &body)
}

/// One RelativeDistinguishedName: `SET { SEQUENCE { type, value } }` with
/// the value as string type `string_tag`.
fn rdn(attr: &[u64], string_tag: u8, value: &str) -> Vec<u8> {
    tlv(
        0x31,
        &tlv(
            0x30,
            &[oid(attr), tlv(string_tag, value.as_bytes())].concat(),
        ),
    )
}

fn extension(id: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut body = oid(id);
    if critical {
        body.extend_from_slice(&[0x01, 0x01, 0xFF]);
    }
    body.extend(tlv(0x04, value));
    tlv(0x30, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::euicc::EuiccValidator;

    #[test]
    fn issued_certificates_verify_under_the_eum_on_both_curves() {
        let now = crate::time::now();
        for curve in [Curve::NistP256, Curve::BrainpoolP256r1] {
            let eum = Eum::sgp26(curve).expect("EUM");
            assert_eq!(eum.iin(), "89049032");
            let validator = EuiccValidator::new(crate::pki::sgp26::ci_set().expect("CIs"));
            for serial in [0u128, 7, 123_456_789_012_345_678_901] {
                let eid = eum.eid(serial).expect("EID");
                assert!(eid.check_digits_ok(), "{eid}");
                assert!(eid.as_str().starts_with("89049032"));
                let card = eum.issue_for(&eid).expect("issue");
                assert_eq!(card.eid(), &eid);
                crate::crypto::ecdsa::verify_certificate_der(
                    &card.euicc_certificate,
                    &PublicKey::from_certificate_der(eum.certificate()).expect("EUM key"),
                )
                .expect("signed by the EUM");
                let v = validator
                    .validate(eum.certificate(), &card.euicc_certificate, now)
                    .unwrap_or_else(|e| panic!("{curve}: {e}"));
                assert_eq!(v.eid(), &eid);
                assert_eq!(v.curve(), curve);
                assert_eq!(v.public_key(), card.key.public_key());
            }
            assert_ne!(eum.eid(1).expect("EID"), eum.eid(2).expect("EID"));
        }
    }

    #[test]
    fn eids_outside_the_range_are_refused() {
        let eum = Eum::sgp26(Curve::NistP256).expect("EUM");
        let key = generate_key(Curve::NistP256).expect("key");
        let outside = Eid::parse("89049033123451234512345678901235").expect("EID");
        assert!(eum.issue_certificate(&outside, key.public_key()).is_err());
        // The SM-DP+ refuses such a certificate: the range is the EUM's.
        let cert = eum
            .sign_certificate(&outside, key.public_key())
            .expect("cert");
        let validator = EuiccValidator::new(crate::pki::sgp26::ci_set().expect("CIs"));
        let err = validator
            .validate(eum.certificate(), &cert, crate::time::now())
            .expect_err("outside the range");
        assert_eq!(err.code, crate::error::codes::EUICC_CERT_INVALID, "{err}");
    }
}
