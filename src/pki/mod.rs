//! Certificates and keys: loading PEM files, the dev PKI made at first
//! start, and the SGP.22 certificate logic:
//! - [`ci`]: the trusted GSMA CI certificates, by key identifier;
//! - [`euicc`]: eUICC certificate chain validation (§4.5.2.2, §5.6.3),
//!   which yields a [`euicc::VerifiedEuicc`];
//! - [`smdp`]: the SM-DP+'s DPauth and DPpb credentials per CI, and the
//!   choice of CI for an eUICC (§5.6.1);
//! - [`x509`]: what the SGP.22 certificate profiles read from X.509.

pub mod ci;
pub mod dev;
pub mod euicc;
pub mod sgp26;
pub mod smdp;
pub mod x509;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// A PKI loading error, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// A certificate or key does not fit its SGP.22 role.
    #[error("{what}: {why}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> PkiError {
    PkiError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate found"));
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file (PKCS#8 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

/// The subject common name of a certificate.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
