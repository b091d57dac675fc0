//! The SM-DP+'s own signing credentials per CI: CERT.DPauth.ECDSA with
//! SK.DPauth.ECDSA (mutual authentication, §5.6.1) and CERT.DPpb.ECDSA with
//! SK.DPpb.ECDSA (profile binding, §5.6.2), and the choice of CI for an
//! eUICC (§2.6.7.1, §3.1.2 step 7-8, §5.6.1).

use super::ci::CiSet;
use super::x509::{extensions, role, KeyId};
use super::PkiError;
use crate::crypto::ecdsa::{self, parse_certificate, PublicKey, Signature, SigningKey};
use crate::error::{codes, Error};
use crate::hsm::key::{EcKey, SignError};
use std::path::Path;

/// One certificate and its private key (in a file or on the `[hsm]` token).
#[derive(Debug)]
pub struct Credential {
    cert_der: Vec<u8>,
    key: EcKey,
}

impl Credential {
    /// The certificate, DER (what goes into serverCertificate /
    /// smdpCertificate).
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The public key of the certificate.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Signs `message` with the certificate's key (§2.6.7.2); a key on the
    /// token signs on the token's bounded blocking pool.
    pub async fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        self.key.sign(message).await
    }

    /// Signs `message` on this thread (tests, tools).
    pub fn sign_blocking(&self, message: &[u8]) -> Result<Signature, SignError> {
        match &self.key {
            EcKey::Software(k) => Ok(k.sign(message)?),
            EcKey::Token(k) => Ok(k.sign_blocking(message)?),
        }
    }

    /// The private key: in a file or on the token.
    pub fn key(&self) -> &EcKey {
        &self.key
    }
}

/// The DPauth and DPpb credentials issued under one CI.
#[derive(Debug)]
pub struct SmdpCredentials {
    ci: KeyId,
    dpauth: Credential,
    dppb: Credential,
}

impl SmdpCredentials {
    /// Checks and pairs the two certificates with their keys: each is
    /// signed by a CI of `cis` (named by its AuthorityKeyIdentifier), has
    /// the digitalSignature key usage and its role policy
    /// (id-rspRole-dp-auth, id-rspRole-dp-pb, §4.5.2.2), and matches its
    /// key; both come from the same CI. Validity dates are not checked
    /// here: expiry is an operations matter, not a configuration error.
    pub fn new(
        cis: &CiSet,
        dpauth_cert: Vec<u8>,
        dpauth_key: impl Into<EcKey>,
        dppb_cert: Vec<u8>,
        dppb_key: impl Into<EcKey>,
    ) -> Result<SmdpCredentials, PkiError> {
        let (ci_auth, dpauth) = credential(
            cis,
            "CERT.DPauth",
            role::DP_AUTH,
            dpauth_cert,
            dpauth_key.into(),
        )?;
        let (ci_pb, dppb) = credential(cis, "CERT.DPpb", role::DP_PB, dppb_cert, dppb_key.into())?;
        if ci_auth != ci_pb {
            return Err(PkiError::Certificate {
                what: "SM-DP+ credentials".into(),
                why: format!("CERT.DPauth is under CI {ci_auth} but CERT.DPpb under CI {ci_pb}"),
            });
        }
        Ok(SmdpCredentials {
            ci: ci_auth,
            dpauth,
            dppb,
        })
    }

    /// The CI both certificates chain to.
    pub fn ci(&self) -> &KeyId {
        &self.ci
    }

    /// CERT.DPauth.ECDSA and SK.DPauth.ECDSA.
    pub fn dpauth(&self) -> &Credential {
        &self.dpauth
    }

    /// CERT.DPpb.ECDSA and SK.DPpb.ECDSA.
    pub fn dppb(&self) -> &Credential {
        &self.dppb
    }
}

fn credential(
    cis: &CiSet,
    what: &str,
    role: &[u64],
    cert_der: Vec<u8>,
    key: EcKey,
) -> Result<(KeyId, Credential), PkiError> {
    let bad = |why: String| PkiError::Certificate {
        what: what.to_owned(),
        why,
    };
    let cert = parse_certificate(&cert_der).map_err(|e| bad(e.to_string()))?;
    let ext = extensions(&cert).map_err(bad)?;
    let ci_id = match &ext.aki {
        Some(Some(id)) => id.clone(),
        _ => return Err(bad("no AuthorityKeyIdentifier keyIdentifier".into())),
    };
    let ci = cis
        .get(&ci_id)
        .ok_or_else(|| bad(format!("issued by CI {ci_id}, which is not trusted")))?;
    ecdsa::verify_certificate_signature(&cert, ci.public_key())
        .map_err(|e| bad(format!("signature by CI {ci_id}: {e}")))?;
    if !ext.key_usage.is_some_and(|k| k.digital_signature()) {
        return Err(bad("keyUsage lacks digitalSignature".into()));
    }
    if !ext.has_policy(role) {
        return Err(bad("missing its role certificate policy".into()));
    }
    let public = PublicKey::from_spki(cert.public_key()).map_err(|e| bad(e.to_string()))?;
    if &public != key.public_key() {
        return Err(bad(if key.on_token() {
            "the key on the token does not match the certificate".into()
        } else {
            "the private key does not match the certificate".into()
        }));
    }
    Ok((ci_id, Credential { cert_der, key }))
}

/// The CI chosen for one eUICC at InitiateAuthentication (§5.6.1).
#[derive(Debug)]
pub struct CiSelection<'k> {
    /// euiccCiPKIdToBeUsed: the CI whose chain the eUICC signs with, which
    /// the SM-DP+ trusts for verifying eUICC signatures.
    pub euicc_ci_pkid_to_be_used: KeyId,
    /// The credentials whose CERT.DPauth the eUICC can verify.
    pub credentials: &'k SmdpCredentials,
}

/// All credential sets of the SM-DP+, one per CI.
#[derive(Debug, Default)]
pub struct SmdpKeyring {
    sets: Vec<SmdpCredentials>,
}

impl SmdpKeyring {
    /// A keyring from credential sets; two sets for one CI are an error.
    pub fn new(sets: Vec<SmdpCredentials>) -> Result<SmdpKeyring, PkiError> {
        for (i, s) in sets.iter().enumerate() {
            if sets[..i].iter().any(|t| t.ci == s.ci) {
                return Err(PkiError::Certificate {
                    what: "SM-DP+ credentials".into(),
                    why: format!("two credential sets for CI {}", s.ci),
                });
            }
        }
        Ok(SmdpKeyring { sets })
    }

    /// Loads the SGP.26 layout under `root` (e.g. `certs/sgp26`): for each
    /// of `NIST` and `BRP`, `DPauth/CERT_S_SM_DPauth_ECDSA_<c>.der` with
    /// `DPauth/SK_S_SM_DPauth_ECDSA_<c>.pem`, and the same for `DPpb`.
    pub fn load_sgp26(root: &Path, cis: &CiSet) -> Result<SmdpKeyring, PkiError> {
        let mut sets = Vec::new();
        for c in ["NIST", "BRP"] {
            let read = |p: String| std::fs::read(root.join(&p)).map_err(PkiError::from);
            let key = |p: String| {
                SigningKey::from_pem_file(&root.join(&p)).map_err(|e| PkiError::Certificate {
                    what: p.clone(),
                    why: e.to_string(),
                })
            };
            sets.push(SmdpCredentials::new(
                cis,
                read(format!("DPauth/CERT_S_SM_DPauth_ECDSA_{c}.der"))?,
                key(format!("DPauth/SK_S_SM_DPauth_ECDSA_{c}.pem"))?,
                read(format!("DPpb/CERT_S_SM_DPpb_ECDSA_{c}.der"))?,
                key(format!("DPpb/SK_S_SM_DPpb_ECDSA_{c}.pem"))?,
            )?);
        }
        SmdpKeyring::new(sets)
    }

    /// The credentials under CI `ci`.
    pub fn get(&self, ci: &KeyId) -> Option<&SmdpCredentials> {
        self.sets.iter().find(|s| &s.ci == ci)
    }

    /// The credential sets.
    pub fn iter(&self) -> impl Iterator<Item = &SmdpCredentials> {
        self.sets.iter()
    }

    /// Chooses the CIs for an eUICC from its EUICCInfo1 lists (§2.6.7.1,
    /// §3.1.2 step 7-8, §5.6.1), following the eUICC's order of priority:
    /// - euiccCiPKIdToBeUsed is the first entry of
    ///   `for_signing` that `trusted` contains (else 8.8.2/3.1);
    /// - the DPauth is the first entry of `for_verification` for which we
    ///   hold credentials (else 8.8.4/3.7).
    pub fn select(
        &self,
        trusted: &CiSet,
        for_verification: &[KeyId],
        for_signing: &[KeyId],
    ) -> Result<CiSelection<'_>, Error> {
        let to_be_used = for_signing
            .iter()
            .find(|id| trusted.get(id).is_some())
            .ok_or_else(|| {
                Error::refused(
                    codes::CI_PKID_UNSUPPORTED,
                    "none of the eUICC's CI public keys for signing is trusted",
                )
            })?;
        let credentials = for_verification
            .iter()
            .find_map(|id| self.get(id))
            .ok_or_else(|| {
                Error::refused(
                    codes::DPAUTH_CERT_UNAVAILABLE,
                    "no CERT.DPauth.ECDSA signed by a CI the eUICC can verify",
                )
            })?;
        Ok(CiSelection {
            euicc_ci_pkid_to_be_used: to_be_used.clone(),
            credentials,
        })
    }
}
