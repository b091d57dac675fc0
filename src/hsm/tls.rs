//! A TLS private key on the token, for rustls: the handshake signature
//! (CertificateVerify in TLS 1.3, ServerKeyExchange in TLS 1.2, RFC 8446
//! §4.4.3, RFC 5246 §7.4.3) is made by the token. SGP.22 §2.6.6 asks for
//! ECDSA on NIST P-256 with SHA-256 for TLS, so that is the only scheme
//! offered (rustls has no brainpool curve either).

use super::TokenKey;
use crate::crypto::ecdsa::Curve;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// A NIST P-256 key on the token as a rustls [`SigningKey`].
#[derive(Debug, Clone)]
pub struct TlsTokenKey(TokenKey);

impl TlsTokenKey {
    /// Wraps a key on the token; a key on another curve than NIST P-256 is
    /// refused (SGP.22 §2.6.6, TLS 1.2/1.3 `ecdsa_secp256r1_sha256`).
    pub fn new(key: TokenKey) -> Result<TlsTokenKey, String> {
        match key.public_key().curve() {
            Curve::NistP256 => Ok(TlsTokenKey(key)),
            other => Err(format!(
                "{}: a TLS key must be on NIST P-256, not {other}",
                key.uri()
            )),
        }
    }
}

impl SigningKey for TlsTokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(rustls::sign::public_key_to_spki(
            &rustls::pki_types::alg_id::ECDSA_P256,
            self.0.public_key().to_uncompressed(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

impl Signer for TlsTokenKey {
    /// rustls signs inside the handshake, synchronously, on the async
    /// worker that drives the connection. On a multi-threaded runtime the
    /// worker hands its other tasks over (`block_in_place`) and the call
    /// takes its turn on the token's bounded blocking pool like every other
    /// token call; elsewhere (CLI clients) it signs on this thread.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sig = self
            .0
            .sign_sync(message)
            .map_err(|e| rustls::Error::General(format!("TLS signature on the token: {e}")))?;
        // TLS carries the DER ECDSA-Sig-Value (RFC 8446 §4.2.3).
        sig.to_der(Curve::NistP256)
            .map_err(|e| rustls::Error::General(format!("TLS signature on the token: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
