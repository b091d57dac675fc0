//! TLS configuration for the listeners and for outgoing calls.
//!
//! SGP.22 §6.1 and §2.6.6: TLS 1.2 at least, ECDHE-ECDSA with AES-128-GCM.
//! ES2+ is mutually authenticated: the operator's client certificate must
//! chain to a configured operator CA *and* name a configured operator, or the
//! handshake fails. ES9+ is server-authenticated only.

use crate::pki::{self, PkiError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_err(e: rustls::Error) -> PkiError {
    PkiError::File {
        path: "tls".into(),
        why: e.to_string(),
    }
}

fn roots(ca_files: &[&Path]) -> Result<RootCertStore, PkiError> {
    let mut store = RootCertStore::empty();
    for f in ca_files {
        for c in pki::load_certs(f)? {
            store.add(c).map_err(|e| PkiError::File {
                path: f.display().to_string(),
                why: e.to_string(),
            })?;
        }
    }
    Ok(store)
}

/// Accepts client certificates that chain to the operator CAs and whose
/// subject CN is a configured operator id.
#[derive(Debug)]
struct OperatorVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    operators: HashSet<String>,
}

impl ClientCertVerifier for OperatorVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match pki::common_name(end_entity) {
            Some(cn) if self.operators.contains(&cn) => Ok(ok),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS identity's private key.
#[derive(Debug)]
pub enum IdentityKey {
    /// A PEM key file, signing in this process.
    File(PrivateKeyDer<'static>),
    /// A NIST P-256 key on the `[hsm]` token, signing there.
    Token(crate::hsm::tls::TlsTokenKey),
}

/// A server identity: certificate chain and key.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: IdentityKey,
}

impl Identity {
    /// Loads a PEM chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, PkiError> {
        Ok(Identity {
            chain: pki::load_certs(cert)?,
            key: IdentityKey::File(pki::load_key(key)?),
        })
    }

    /// A PEM chain with its key on the token.
    pub fn with_token_key(
        cert: &Path,
        key: crate::hsm::tls::TlsTokenKey,
    ) -> Result<Identity, PkiError> {
        let id = Identity {
            chain: pki::load_certs(cert)?,
            key: IdentityKey::Token(key),
        };
        // The key must be the certificate's.
        id.certified().map_err(|e| PkiError::File {
            path: cert.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(id)
    }

    /// The chain and its signing key, checked to belong together.
    fn certified(&self) -> Result<Arc<CertifiedKey>, rustls::Error> {
        let ck = match &self.key {
            IdentityKey::File(der) => {
                CertifiedKey::from_der(self.chain.clone(), der.clone_key(), &provider())?
            }
            IdentityKey::Token(k) => {
                let ck = CertifiedKey::new(self.chain.clone(), Arc::new(k.clone()));
                ck.keys_match()?;
                ck
            }
        };
        Ok(Arc::new(ck))
    }

    fn resolver(&self) -> Result<Arc<SingleCertAndKey>, PkiError> {
        Ok(Arc::new(SingleCertAndKey::from(
            self.certified().map_err(tls_err)?,
        )))
    }
}

/// ES9+ server config: server authentication only.
pub fn es9_server(id: &Identity) -> Result<Arc<ServerConfig>, PkiError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_cert_resolver(id.resolver()?);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// ES2+ server config: client certificate required, chaining to
/// `operator_cas`, with a CN in `operators`.
pub fn es2_server(
    id: &Identity,
    operator_cas: &[&Path],
    operators: &[String],
) -> Result<Arc<ServerConfig>, PkiError> {
    let inner =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(operator_cas)?), provider())
            .build()
            .map_err(|e| PkiError::File {
                path: "operator CA".into(),
                why: e.to_string(),
            })?;
    let verifier = OperatorVerifier {
        inner,
        operators: operators.iter().cloned().collect(),
    };
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(id.resolver()?);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Asks for a client certificate without requiring one, and accepts any at
/// the TLS layer: the handshake still proves the client holds the key, but
/// whether the certificate is trusted is decided per request, so that the
/// GetBalance API can answer 401 (missing or expired) and 403 (untrusted)
/// as [MP-Account] requires, instead of a failed handshake.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// GetBalance server config: a client certificate is requested, not
/// required, and checked per request ([`client_cert_verifier`]).
pub fn getbalance_server(id: &Identity) -> Result<Arc<ServerConfig>, PkiError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider())))
        .with_cert_resolver(id.resolver()?);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A WebPKI client certificate verifier for the CAs in `ca_files`, to check
/// a chain received by [`getbalance_server`] after the handshake.
pub fn client_cert_verifier(ca_files: &[&Path]) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_files)?), provider())
        .build()
        .map_err(|e| PkiError::File {
            path: "client CA".into(),
            why: e.to_string(),
        })
}

/// Client config for outgoing calls: trust `ca_files`, present `client` if given.
/// With `insecure`, any server certificate is accepted (smoke tests only).
pub fn client(
    ca_files: &[&Path],
    client: Option<&Identity>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, PkiError> {
    let roots = if insecure {
        RootCertStore::empty()
    } else {
        roots(ca_files)?
    };
    client_with_roots(roots, client, insecure)
}

/// Like [`client`], with the trust anchors given as a root store.
pub fn client_with_roots(
    roots: RootCertStore,
    client: Option<&Identity>,
    insecure: bool,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        builder.with_root_certificates(roots)
    };
    let cfg = match client {
        Some(id) => builder.with_client_cert_resolver(id.resolver()?),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (`--insecure`).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
