//! The SGP.26 test PKI compiled into the binary, so `smdpplus serve` runs
//! with no files: the test CIs (NIST P-256 and brainpoolP256r1) and the
//! DPauth/DPpb credentials of "TEST SM-DP+" under each. Published test
//! material (certs/README.md): production deployments configure their own.

use super::ci::CiSet;
use super::smdp::{SmdpCredentials, SmdpKeyring};
use super::PkiError;
use crate::crypto::ecdsa::SigningKey;

const CI_NIST: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_NIST.der");
const CI_BRP: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_BRP.der");

struct Set {
    dpauth_cert: &'static [u8],
    dpauth_key: &'static str,
    dppb_cert: &'static [u8],
    dppb_key: &'static str,
}

const SETS: [Set; 2] = [
    Set {
        dpauth_cert: include_bytes!("../../certs/sgp26/DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der"),
        dpauth_key: include_str!("../../certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem"),
        dppb_cert: include_bytes!("../../certs/sgp26/DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der"),
        dppb_key: include_str!("../../certs/sgp26/DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem"),
    },
    Set {
        dpauth_cert: include_bytes!("../../certs/sgp26/DPauth/CERT_S_SM_DPauth_ECDSA_BRP.der"),
        dpauth_key: include_str!("../../certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem"),
        dppb_cert: include_bytes!("../../certs/sgp26/DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der"),
        dppb_key: include_str!("../../certs/sgp26/DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem"),
    },
];

/// The SGP.26 test CIs.
pub fn ci_set() -> Result<CiSet, PkiError> {
    CiSet::from_der([CI_NIST, CI_BRP])
}

/// The SGP.26 "TEST SM-DP+" credentials under both test CIs.
pub fn keyring(cis: &CiSet) -> Result<SmdpKeyring, PkiError> {
    let key = |pem: &str, what: &str| {
        SigningKey::from_pem(pem).map_err(|e| PkiError::Certificate {
            what: what.into(),
            why: e.to_string(),
        })
    };
    let mut sets = Vec::new();
    for s in &SETS {
        sets.push(SmdpCredentials::new(
            cis,
            s.dpauth_cert.to_vec(),
            key(s.dpauth_key, "embedded DPauth key")?,
            s.dppb_cert.to_vec(),
            key(s.dppb_key, "embedded DPpb key")?,
        )?);
    }
    SmdpKeyring::new(sets)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_credentials_load() {
        let cis = super::ci_set().expect("CIs");
        assert_eq!(cis.len(), 2);
        let ring = super::keyring(&cis).expect("keyring");
        assert_eq!(ring.iter().count(), 2);
    }
}
