//! eUICC certificate chain validation, the SGP.22 way (§4.5.2.2, §5.6.3).
//!
//! ES9+.AuthenticateClient verifies CERT.EUM.ECDSA with PK.CI.ECDSA, then
//! CERT.EUICC.ECDSA with PK.EUM.ECDSA (§5.6.3). Generic X.509 path
//! validation rejects real chains: the EUM's nameConstraints carry a
//! DirectoryName `O = <EUM>, serialNumber = <IIN>` that §4.5.2.2 reads as
//! "the eUICC's organization is one of these, and its EID starts with the
//! IIN paired with it", not as the RFC 5280 prefix match of whole names. So
//! the chain is checked here, step by step, each failure with its status
//! code:
//!
//! | step | failure | code |
//! |---|---|---|
//! | EUM AuthorityKeyIdentifier absent (mandatory, §4.5.2.1.0.3) | EUM invalid | 8.1.2/6.1 |
//! | no trusted CI has that key identifier | unknown CI | 8.11.1/3.9 |
//! | EUM issuer name is not the CI's subject, or signature invalid | EUM invalid | 8.1.2/6.1 |
//! | EUM notAfter passed / notBefore not reached | expired / invalid | 8.1.2/6.3 / 8.1.2/6.1 |
//! | EUM profile: v3, critical extensions, keyCertSign, id-rspRole-eum, cA with pathLen 0, SKI, nameConstraints | EUM invalid | 8.1.2/6.1 |
//! | eUICC AuthorityKeyIdentifier is not the EUM's SKI, issuer name is not the EUM's subject, or signature invalid | eUICC invalid | 8.1.3/6.1 |
//! | eUICC notAfter passed / notBefore not reached | expired / invalid | 8.1.3/6.3 / 8.1.3/6.1 |
//! | eUICC profile: v3, critical extensions, digitalSignature, id-rspRole-euicc, supported curve | eUICC invalid | 8.1.3/6.1 |
//! | EID (subject serialNumber) not 32 digits, or organization/EID outside the EUM's permitted subtrees | eUICC invalid | 8.1.3/6.1 |
//!
//! Expiry is checked before the role profile, so an expired certificate is
//! reported as expired even if its profile is also wrong. An EID outside
//! the EUM's range is 8.1.3/6.1: §4.5.2.2 makes the name constraints part
//! of the eUICC certificate's verification, and SGP.22 has no dedicated
//! code for it. The EID's check digits are not checked (real test eUICCs
//! have wrong ones, see [`crate::ids`]); an eUICC whose EID matches no
//! order is the caller's business (8.1.1/3.8 or 8.2.5/4.3, §5.6.3).
//!
//! The result is a [`VerifiedEuicc`], which only [`EuiccValidator`] can
//! make.

use super::ci::CiSet;
use super::x509::{
    attribute_values, check_validity, extensions, role, KeyId, OID_ORGANIZATION, OID_SERIAL_NUMBER,
};
use crate::crypto::ecdsa::{self, parse_certificate, Curve, PublicKey, Signature};
use crate::crypto::CryptoError;
use crate::error::{codes, Error, StatusCode};
use crate::ids::Eid;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, NameConstraints};

/// Default bound of the EUM cache. There are a few hundred EUM
/// certificates in the world; each entry is well under a kilobyte.
pub const DEFAULT_EUM_CACHE_CAPACITY: usize = 1024;

/// An eUICC whose certificate chain has been verified up to a trusted CI
/// (§5.6.3). Only [`EuiccValidator::validate`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedEuicc {
    eid: Eid,
    public_key: PublicKey,
    ci_pkid: KeyId,
    eum_key_id: KeyId,
    not_after: i64,
}

impl VerifiedEuicc {
    /// The EID, from the eUICC certificate's subject serialNumber.
    pub fn eid(&self) -> &Eid {
        &self.eid
    }

    /// PK.EUICC.ECDSA.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The curve of PK.EUICC.ECDSA.
    pub fn curve(&self) -> Curve {
        self.public_key.curve()
    }

    /// The key identifier of the CI at the root of the chain.
    pub fn ci_pkid(&self) -> &KeyId {
        &self.ci_pkid
    }

    /// The EUM certificate's SubjectKeyIdentifier.
    pub fn eum_key_id(&self) -> &KeyId {
        &self.eum_key_id
    }

    /// The eUICC certificate's notAfter, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Verifies a signature made by the eUICC (euiccSignature1/2, §5.7.13,
    /// §5.7.5) over `message`, the signed bytes as received.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        self.public_key.verify(message, signature)
    }
}

/// One permitted (organization, IIN) group of an EUM's nameConstraints:
/// the attribute values of one DirectoryName subtree.
#[derive(Clone, Debug)]
struct PermittedSubtree {
    organizations: Vec<String>,
    iins: Vec<String>,
}

/// What a verified EUM certificate contributes to later validations.
#[derive(Debug)]
struct VerifiedEum {
    key_id: KeyId,
    subject: Vec<u8>,
    public_key: PublicKey,
    ci: KeyId,
    not_before: i64,
    not_after: i64,
    permitted: Vec<PermittedSubtree>,
}

/// A bounded map from SHA-256(EUM DER) to the verified EUM, evicting the
/// oldest entry when full.
#[derive(Default)]
struct EumCache {
    capacity: usize,
    map: HashMap<[u8; 32], Arc<VerifiedEum>>,
    order: VecDeque<[u8; 32]>,
}

impl EumCache {
    fn get(&self, key: &[u8; 32]) -> Option<Arc<VerifiedEum>> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: [u8; 32], eum: Arc<VerifiedEum>) {
        if self.capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(key, eum);
        self.order.push_back(key);
    }
}

/// Validates eUICC certificate chains against a set of trusted CIs, with a
/// bounded cache of verified EUM certificates.
///
/// Shared by all sessions (put it in an `Arc`). The cache sits behind a
/// `Mutex` held only for a lookup or an insert, never during a signature
/// check; two sessions meeting a new EUM at once may both verify it, which
/// is harmless.
pub struct EuiccValidator {
    cis: CiSet,
    cache: Mutex<EumCache>,
    eum_signature_checks: AtomicU64,
}

impl EuiccValidator {
    /// A validator trusting `cis`, with the default cache bound.
    pub fn new(cis: CiSet) -> EuiccValidator {
        EuiccValidator::with_cache_capacity(cis, DEFAULT_EUM_CACHE_CAPACITY)
    }

    /// A validator whose EUM cache holds at most `capacity` certificates
    /// (0 disables it).
    pub fn with_cache_capacity(cis: CiSet, capacity: usize) -> EuiccValidator {
        EuiccValidator {
            cis,
            cache: Mutex::new(EumCache {
                capacity,
                ..EumCache::default()
            }),
            eum_signature_checks: AtomicU64::new(0),
        }
    }

    /// The trusted CIs.
    pub fn trusted_cis(&self) -> &CiSet {
        &self.cis
    }

    /// How many EUM certificate signatures were checked so far: a cached
    /// EUM costs none.
    pub fn eum_signature_checks(&self) -> u64 {
        self.eum_signature_checks.load(Ordering::Relaxed)
    }

    /// How many EUM certificates are cached.
    pub fn cached_eums(&self) -> usize {
        self.lock_cache().map.len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, EumCache> {
        // A panic while holding the lock cannot leave the cache
        // inconsistent (each operation completes or does nothing useful),
        // so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates CERT.EUM.ECDSA and CERT.EUICC.ECDSA (DER, as received in
    /// AuthenticateServerResponse, §5.7.13) at time `now` (Unix seconds);
    /// see the module documentation for the steps and status codes.
    ///
    /// The caller still checks that [`VerifiedEuicc::ci_pkid`] is the CI it
    /// named in euiccCiPKIdToBeUsed, if it requires that.
    pub fn validate(
        &self,
        eum_der: &[u8],
        euicc_der: &[u8],
        now: i64,
    ) -> Result<VerifiedEuicc, Error> {
        let eum = self.verified_eum(eum_der, now)?;
        verify_euicc(&eum, euicc_der, now)
    }

    fn verified_eum(&self, der: &[u8], now: i64) -> Result<Arc<VerifiedEum>, Error> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        let cached = self.lock_cache().get(&digest);
        let eum = match cached {
            // Same bytes, already verified: only time can have changed.
            Some(eum) => eum,
            None => {
                let eum = Arc::new(self.verify_eum(der, now)?);
                self.lock_cache().insert(digest, eum.clone());
                eum
            }
        };
        check_validity(eum.not_before, eum.not_after, now)
            .map_err(|expired| validity_error(EUM, expired))?;
        Ok(eum)
    }

    fn verify_eum(&self, der: &[u8], now: i64) -> Result<VerifiedEum, Error> {
        let cert = parse_certificate(der).map_err(|e| invalid(EUM, e))?;
        let ext = extensions(&cert).map_err(|e| invalid(EUM, e))?;
        let ci_id = match &ext.aki {
            Some(Some(id)) => id,
            _ => return Err(invalid(EUM, "no AuthorityKeyIdentifier keyIdentifier")),
        };
        let ci = self.cis.get(ci_id).ok_or_else(|| {
            Error::refused(
                codes::CI_PK_UNKNOWN,
                format!("EUM certificate issued by CI {ci_id}, which is not trusted"),
            )
        })?;
        if cert.issuer().as_raw() != ci.subject_der() {
            return Err(invalid(EUM, "issuer is not the subject of its CI"));
        }
        self.eum_signature_checks.fetch_add(1, Ordering::Relaxed);
        ecdsa::verify_certificate_signature(&cert, ci.public_key())
            .map_err(|e| invalid(EUM, format!("signature by CI {ci_id}: {e}")))?;
        let (not_before, not_after) = validity(&cert);
        check_validity(not_before, not_after, now)
            .map_err(|expired| validity_error(EUM, expired))?;

        // CERT.EUM.ECDSA profile (§4.5.2.1.0.3, §4.5.2.2).
        if !ext.key_usage.is_some_and(|k| k.key_cert_sign()) {
            return Err(invalid(EUM, "keyUsage lacks keyCertSign"));
        }
        if !ext.has_policy(role::EUM) {
            return Err(invalid(EUM, "certificate policy is not id-rspRole-eum"));
        }
        match &ext.basic_constraints {
            Some(bc) if bc.ca && bc.path_len_constraint == Some(0) => {}
            _ => return Err(invalid(EUM, "basicConstraints is not cA with pathLen 0")),
        }
        let key_id = ext
            .ski
            .clone()
            .ok_or_else(|| invalid(EUM, "no SubjectKeyIdentifier"))?;
        let permitted = permitted_subtrees(ext.name_constraints).map_err(|e| invalid(EUM, e))?;
        let public_key = PublicKey::from_spki(cert.public_key()).map_err(|e| invalid(EUM, e))?;
        Ok(VerifiedEum {
            key_id,
            subject: cert.subject().as_raw().to_vec(),
            public_key,
            ci: ci_id.clone(),
            not_before,
            not_after,
            permitted,
        })
    }
}

fn verify_euicc(eum: &VerifiedEum, der: &[u8], now: i64) -> Result<VerifiedEuicc, Error> {
    let cert = parse_certificate(der).map_err(|e| invalid(EUICC, e))?;
    let ext = extensions(&cert).map_err(|e| invalid(EUICC, e))?;
    match &ext.aki {
        Some(Some(id)) if *id == eum.key_id => {}
        Some(Some(id)) => {
            return Err(invalid(
                EUICC,
                format!("issued by key {id}, not by the EUM's key {}", eum.key_id),
            ))
        }
        _ => return Err(invalid(EUICC, "no AuthorityKeyIdentifier keyIdentifier")),
    }
    if cert.issuer().as_raw() != eum.subject.as_slice() {
        return Err(invalid(EUICC, "issuer is not the EUM's subject"));
    }
    ecdsa::verify_certificate_signature(&cert, &eum.public_key)
        .map_err(|e| invalid(EUICC, format!("signature by the EUM: {e}")))?;
    let (not_before, not_after) = validity(&cert);
    check_validity(not_before, not_after, now).map_err(|expired| validity_error(EUICC, expired))?;

    // CERT.EUICC.ECDSA profile (§4.5.2.1.0.2, §4.5.2.2).
    if !ext.key_usage.is_some_and(|k| k.digital_signature()) {
        return Err(invalid(EUICC, "keyUsage lacks digitalSignature"));
    }
    if !ext.has_policy(role::EUICC) {
        return Err(invalid(EUICC, "certificate policy is not id-rspRole-euicc"));
    }
    let public_key = PublicKey::from_spki(cert.public_key()).map_err(|e| invalid(EUICC, e))?;
    let eid = eid_of(&cert)?;
    let organizations =
        attribute_values(cert.subject(), OID_ORGANIZATION).map_err(|e| invalid(EUICC, e))?;
    if !eum
        .permitted
        .iter()
        .any(|p| p.permits(&organizations, eid.as_str()))
    {
        return Err(invalid(
            EUICC,
            format!(
                "EID {eid} (organization {organizations:?}) is outside the range permitted by \
                 the EUM certificate's nameConstraints"
            ),
        ));
    }
    Ok(VerifiedEuicc {
        eid,
        public_key,
        ci_pkid: eum.ci.clone(),
        eum_key_id: eum.key_id.clone(),
        not_after,
    })
}

/// The EID: the subject's single serialNumber attribute, 32 digits
/// (§4.5.2.1.0.2).
fn eid_of(cert: &X509Certificate<'_>) -> Result<Eid, Error> {
    let serials =
        attribute_values(cert.subject(), OID_SERIAL_NUMBER).map_err(|e| invalid(EUICC, e))?;
    match serials.as_slice() {
        [one] => Eid::parse(one)
            .ok_or_else(|| invalid(EUICC, format!("subject serialNumber {one:?} is not an EID"))),
        [] => Err(invalid(EUICC, "subject has no serialNumber (EID)")),
        _ => Err(invalid(EUICC, "subject has several serialNumbers")),
    }
}

impl PermittedSubtree {
    /// §4.5.2.2: the eUICC's organization is one of the subtree's (if it
    /// names any), and the EID starts with one of the subtree's IINs.
    fn permits(&self, organizations: &[String], eid: &str) -> bool {
        let org_ok = self.organizations.is_empty()
            || organizations.iter().any(|o| {
                self.organizations
                    .iter()
                    .any(|p| normalize(p) == normalize(o))
            });
        org_ok && self.iins.iter().any(|iin| eid.starts_with(iin.as_str()))
    }
}

/// Directory string comparison in the spirit of RFC 4518 caseIgnoreMatch:
/// surrounding spaces dropped, inner runs of spaces collapsed, ASCII case
/// ignored.
fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The (organization, IIN) groups of the EUM's nameConstraints
/// (§4.5.2.1.0.3). The extension is mandatory and critical in the EUM
/// profile, so its absence makes the EUM invalid; so does a subtree
/// without an IIN. excludedSubtrees are not part of the profile and are
/// refused rather than half-honoured.
fn permitted_subtrees(nc: Option<&NameConstraints<'_>>) -> Result<Vec<PermittedSubtree>, String> {
    let nc = nc.ok_or("no nameConstraints")?;
    if nc.excluded_subtrees.is_some() {
        return Err("nameConstraints has excludedSubtrees".into());
    }
    let mut out = Vec::new();
    for subtree in nc.permitted_subtrees.iter().flatten() {
        if let GeneralName::DirectoryName(name) = &subtree.base {
            let iins = attribute_values(name, OID_SERIAL_NUMBER)?;
            if iins.is_empty() || iins.iter().any(|i| i.is_empty()) {
                return Err("a permitted DirectoryName has no IIN (serialNumber)".into());
            }
            out.push(PermittedSubtree {
                organizations: attribute_values(name, OID_ORGANIZATION)?,
                iins,
            });
        }
    }
    if out.is_empty() {
        return Err("nameConstraints permits no DirectoryName".into());
    }
    Ok(out)
}

fn validity(cert: &X509Certificate<'_>) -> (i64, i64) {
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp())
}

/// Which certificate of the chain failed.
#[derive(Clone, Copy)]
struct Which {
    name: &'static str,
    invalid: StatusCode,
    expired: StatusCode,
}

const EUM: Which = Which {
    name: "EUM certificate",
    invalid: codes::EUM_CERT_INVALID,
    expired: codes::EUM_CERT_EXPIRED,
};

const EUICC: Which = Which {
    name: "eUICC certificate",
    invalid: codes::EUICC_CERT_INVALID,
    expired: codes::EUICC_CERT_EXPIRED,
};

/// A verification failure (reason 6.1): the peer failed authentication.
fn invalid(which: Which, why: impl std::fmt::Display) -> Error {
    Error::not_allowed(which.invalid, format!("{}: {why}", which.name))
}

fn validity_error(which: Which, expired: bool) -> Error {
    if expired {
        Error::not_allowed(which.expired, format!("{} has expired", which.name))
    } else {
        invalid(which, "not yet valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permitted_subtree_matching() {
        let p = PermittedSubtree {
            organizations: vec!["RSP Test EUM".into()],
            iins: vec!["89049032".into()],
        };
        let org = vec!["rsp  test eum ".to_string()];
        assert!(p.permits(&org, "89049032123451234512345678901235"));
        assert!(!p.permits(&org, "89049033123451234512345678901235"));
        assert!(!p.permits(&["Other".to_string()], "89049032123451234512345678901235"));
        assert!(!p.permits(&[], "89049032123451234512345678901235"));
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = EumCache {
            capacity: 2,
            ..EumCache::default()
        };
        let eum = |n: u8| {
            Arc::new(VerifiedEum {
                key_id: KeyId::new(&[n]),
                subject: vec![],
                public_key: PublicKey::from_certificate_der(include_bytes!(
                    "../../certs/sgp26/CI/CERT_CI_ECDSA_NIST.der"
                ))
                .unwrap(),
                ci: KeyId::new(&[0]),
                not_before: 0,
                not_after: 0,
                permitted: vec![],
            })
        };
        for n in 0..5u8 {
            c.insert([n; 32], eum(n));
            assert!(c.map.len() <= 2);
        }
        assert!(c.get(&[4; 32]).is_some());
        assert!(c.get(&[3; 32]).is_some());
        assert!(c.get(&[0; 32]).is_none());
        let mut off = EumCache::default();
        off.insert([1; 32], eum(1));
        assert!(off.map.is_empty());
    }
}
