//! The trusted GSMA CI certificates (CERT.CI.ECDSA, §4.5.2.1.0.1), the
//! roots of every SGP.22 chain, named by their SubjectKeyIdentifier (the
//! "CI Public Key Identifier").

use super::x509::{extensions, role, KeyId};
use super::PkiError;
use crate::crypto::ecdsa::{self, parse_certificate, PublicKey};
use std::path::Path;

/// A trusted CI: its certificate, public key and key identifier.
#[derive(Clone, Debug)]
pub struct TrustedCi {
    ski: KeyId,
    subject: Vec<u8>,
    public_key: PublicKey,
    cert_der: Vec<u8>,
}

impl TrustedCi {
    /// Accepts a CI certificate as a trust anchor after checking what can
    /// be checked of a root (§4.5.2.2): a SubjectKeyIdentifier (CIs carry
    /// only that one), the id-rspRole-ci policy, cA with keyCertSign, a
    /// supported curve, and a valid self-signature. Validity is not checked:
    /// trust anchors are configuration (RFC 5280 §6.1.1).
    pub fn from_der(der: &[u8]) -> Result<TrustedCi, PkiError> {
        let bad = |why: String| PkiError::Certificate {
            what: "CI certificate".into(),
            why,
        };
        let cert = parse_certificate(der).map_err(|e| bad(e.to_string()))?;
        let ext = extensions(&cert).map_err(bad)?;
        let ski = ext
            .ski
            .clone()
            .ok_or_else(|| bad("no SubjectKeyIdentifier".into()))?;
        if !ext.has_policy(role::CI) {
            return Err(bad("no id-rspRole-ci certificate policy".into()));
        }
        if !ext.basic_constraints.as_ref().is_some_and(|b| b.ca)
            || !ext.key_usage.is_some_and(|k| k.key_cert_sign())
        {
            return Err(bad("not a CA certificate with keyCertSign".into()));
        }
        let public_key = PublicKey::from_spki(cert.public_key()).map_err(|e| bad(e.to_string()))?;
        ecdsa::verify_certificate_signature(&cert, &public_key)
            .map_err(|e| bad(format!("self-signature: {e}")))?;
        Ok(TrustedCi {
            ski,
            subject: cert.subject().as_raw().to_vec(),
            public_key,
            cert_der: der.to_vec(),
        })
    }

    /// The CI Public Key Identifier (SubjectKeyIdentifier).
    pub fn key_id(&self) -> &KeyId {
        &self.ski
    }

    /// PK.CI.ECDSA.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The DER subject name, which certificates it issued carry as issuer.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject
    }

    /// The certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// The set of trusted CIs, looked up by key identifier.
#[derive(Clone, Debug, Default)]
pub struct CiSet {
    cis: Vec<TrustedCi>,
}

impl CiSet {
    /// A set from DER certificates; see [`TrustedCi::from_der`]. Two CIs
    /// with the same key identifier are an error.
    pub fn from_der<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> Result<CiSet, PkiError> {
        let mut set = CiSet::default();
        for der in certs {
            let ci = TrustedCi::from_der(der)?;
            if set.get(ci.key_id()).is_some() {
                return Err(PkiError::Certificate {
                    what: "CI certificates".into(),
                    why: format!("two CIs with key identifier {}", ci.key_id()),
                });
            }
            set.cis.push(ci);
        }
        Ok(set)
    }

    /// Loads every `*.der` file of `dir` (e.g. `certs/sgp26/CI`), in name
    /// order.
    pub fn load_dir(dir: &Path) -> Result<CiSet, PkiError> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "der"))
            .collect();
        paths.sort();
        let ders = paths
            .iter()
            .map(std::fs::read)
            .collect::<Result<Vec<_>, _>>()?;
        CiSet::from_der(ders.iter().map(Vec::as_slice))
    }

    /// The CI with this key identifier.
    pub fn get(&self, id: &KeyId) -> Option<&TrustedCi> {
        self.cis.iter().find(|c| c.key_id() == id)
    }

    /// The CIs, in load order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustedCi> {
        self.cis.iter()
    }

    /// How many CIs.
    pub fn len(&self) -> usize {
        self.cis.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.cis.is_empty()
    }
}
