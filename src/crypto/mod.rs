//! The SGP.22 cryptography, behind one small API whatever the backend.
//!
//! - [`ecdsa`]: ECDSA-SHA256 signatures on NIST P-256 and brainpoolP256r1
//!   (§2.6.7.2), in the plain `r || s` format of the `5F37` TLVs (BSI
//!   TR-03111) and in the X.509 DER format of certificates.
//! - [`ecka`]: the one-time key agreement of the profile binding (§2.6.7.3,
//!   Annex G): otSK.DP / otPK.DP and the shared secret ShS.
//! - [`kdf`]: the BSP key derivation (Annex G, X9.63 KDF with SHA-256).
//! - [`bsp`]: the SCP03t secure channel that protects the Bound Profile
//!   Package (§2.5.3, §2.5.4, SGP.02 §4.1.3.3).
//!
//! Backends: NIST P-256, AES and CMAC come from aws-lc-rs (already built for
//! rustls, and several times faster than pure Rust for P-256);
//! brainpoolP256r1 comes from RustCrypto `bp256`, since aws-lc-rs has no
//! brainpool curve. Nothing outside this module names a backend type.
//!
//! Secrets (private keys, one-time keys, shared secrets, session keys) are
//! zeroized on drop and never printed by `Debug`.

pub mod bsp;
pub mod ecdsa;
pub mod ecka;
pub mod kdf;
mod pem;

pub use ecdsa::{Curve, PublicKey, Signature, SigningKey};

/// A cryptographic failure. Callers map it to the GSMA status code of the
/// step that failed (e.g. an invalid eUICC signature is 8.1/6.1 in
/// ES9+.AuthenticateClient, §5.6.3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key or certificate names a curve other than NIST P-256 and
    /// brainpoolP256r1 (§2.6.7.1; FRP256V1 is not supported).
    #[error("unsupported curve or key algorithm: {0}")]
    UnsupportedCurve(String),
    /// A public key is not a valid uncompressed point on its curve.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// A private key could not be read or is not a valid scalar.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    /// A signature is not 64 raw bytes, not a valid DER `ECDSA-Sig-Value`,
    /// or not a `5F37` TLV.
    #[error("invalid signature encoding: {0}")]
    SignatureEncoding(&'static str),
    /// The signature does not verify with this key and message.
    #[error("signature verification failed")]
    BadSignature,
    /// A certificate uses a signature algorithm other than
    /// ecdsa-with-SHA256 (§4.5.2.1.1).
    #[error("unsupported signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// A certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Certificate(String),
    /// The backend failed where it should not (signing, key generation).
    #[error("crypto backend failure: {0}")]
    Backend(&'static str),
    /// The key agreement failed (bad peer point, curve mismatch).
    #[error("key agreement failed: {0}")]
    KeyAgreement(&'static str),
    /// A key derivation input is out of range (hostId length, EID length).
    #[error("key derivation: {0}")]
    Kdf(&'static str),
    /// A BSP (SCP03t) segment could not be built or was rejected.
    #[error("BSP: {0}")]
    Bsp(&'static str),
}
