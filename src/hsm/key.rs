//! ECDSA keys on the token, and keys in a file or on the token.
//!
//! A [`TokenKey`] is a CKO_PRIVATE_KEY of type CKK_EC found by the label
//! and/or id of its URI; its public key comes from the CKO_PUBLIC_KEY of
//! the same label/id (CKA_EC_POINT), or, where the token keeps none, from
//! the certificate it serves. It signs with CKM_ECDSA over a SHA-256 digest
//! made here (PKCS#11 Current Mechanisms, CKM_ECDSA: the signature is `r || s`, each as long
//! as the order, the plain format of SGP.22 §2.6.7.2).

use super::{HsmError, KeyUri, Token};
use crate::crypto::ecdsa::{Curve, PublicKey, Signature, SigningKey};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// The search template of the object of class `class` that `uri` names.
pub(crate) fn template(uri: &KeyUri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

/// The one object of `class` that `uri` names: none or several is an error
/// (`Ok(Err(why))`), a PKCS#11 failure is `Err`.
pub(crate) fn find_one(
    session: &Session,
    uri: &KeyUri,
    class: ObjectClass,
) -> Result<Result<ObjectHandle, String>, CkError> {
    let found = session.find_objects(&template(uri, class))?;
    Ok(match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no {} object on the token", class_name(class))),
        many => Err(format!(
            "{} {} objects match; give id= as well",
            many.len(),
            class_name(class)
        )),
    })
}

pub(crate) fn class_name(class: ObjectClass) -> &'static str {
    if class == ObjectClass::PRIVATE_KEY {
        "private key"
    } else if class == ObjectClass::PUBLIC_KEY {
        "public key"
    } else if class == ObjectClass::SECRET_KEY {
        "secret key"
    } else if class == ObjectClass::CERTIFICATE {
        "certificate"
    } else {
        "other"
    }
}

/// The curve and public point of an EC public key object (CKA_EC_PARAMS,
/// CKA_EC_POINT). CKA_EC_POINT is the DER OCTET STRING of the point (PKCS#11
/// EC public key objects); some modules give the bare point, which is accepted too.
pub(crate) fn read_public(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Result<PublicKey, String>, CkError> {
    let attrs =
        session.get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let (Some(params), Some(point)) = (params, point) else {
        return Ok(Err(
            "the public key object has no CKA_EC_PARAMS or CKA_EC_POINT".into(),
        ));
    };
    let curve = match Curve::from_ec_params_der(&params) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let bare = match point.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 0x41 => rest,
        p => p,
    };
    Ok(PublicKey::from_uncompressed(curve, bare).map_err(|e| e.to_string()))
}

/// An EC private key on the token, with its public key. Cheap to clone.
#[derive(Clone)]
pub struct TokenKey {
    inner: Arc<Inner>,
}

struct Inner {
    token: Arc<Token>,
    uri: KeyUri,
    public: PublicKey,
    // The private key's handle and the session generation it was found in:
    // handles are valid in every session of the application (PKCS#11
    // object handles) until the connection is lost.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
    // The session generation in which the key was last not found.
    missing_in: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.inner.uri.to_string())
            .field("public", &self.inner.public)
            .finish()
    }
}

impl TokenKey {
    /// Finds the private key `uri` names on `token` and its public key: the
    /// public key object of the same label/id, or else `expected` (the key
    /// of the certificate it will serve). Then makes a test signature and
    /// verifies it: a key that cannot sign, or is not the private half of
    /// that public key, is refused here, before the server starts.
    pub fn open(
        token: &Arc<Token>,
        uri: KeyUri,
        expected: Option<&PublicKey>,
    ) -> Result<TokenKey, HsmError> {
        let key_err = |why: String| HsmError::Key {
            uri: uri.to_string(),
            why,
        };
        if let Some(t) = &uri.token {
            if t != token.label() {
                return Err(key_err(format!(
                    "names token {t:?} but [hsm] token_label is {:?}",
                    token.label()
                )));
            }
        }
        if uri.object_type.as_deref().is_some_and(|t| t != "private") {
            return Err(key_err("a signing key must be type=private".into()));
        }
        let u = uri.clone();
        let (handle, generation, public) = token
            .with_session("find key", move |s, generation| {
                let handle = match find_one(s, &u, ObjectClass::PRIVATE_KEY)? {
                    Ok(h) => h,
                    Err(why) => return Ok(Err(why)),
                };
                let attrs = s.get_attributes(handle, &[AttributeType::KeyType])?;
                if !attrs
                    .iter()
                    .any(|a| matches!(a, Attribute::KeyType(k) if *k == KeyType::EC))
                {
                    return Ok(Err("the private key is not an EC key".into()));
                }
                let public = match find_one(s, &u, ObjectClass::PUBLIC_KEY)? {
                    Ok(p) => Some(read_public(s, p)?),
                    Err(_) => None,
                };
                Ok(Ok((handle, generation, public)))
            })?
            .map_err(key_err)?;
        let public = match (public, expected) {
            (Some(Ok(p)), _) => p,
            (Some(Err(why)), _) => return Err(key_err(why)),
            (None, Some(e)) => e.clone(),
            (None, None) => {
                return Err(key_err(
                    "no public key object beside it, and no certificate to take it from".into(),
                ))
            }
        };
        let key = TokenKey {
            inner: Arc::new(Inner {
                token: token.clone(),
                uri,
                public,
                handle: Mutex::new(Some((generation, handle))),
                missing_in: std::sync::atomic::AtomicU64::new(u64::MAX),
            }),
        };
        key.self_test()?;
        Ok(key)
    }

    /// The key's URI.
    pub fn uri(&self) -> &KeyUri {
        &self.inner.uri
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.inner.public
    }

    /// Signs a fresh random message on the token and verifies the signature
    /// with the public key.
    pub fn self_test(&self) -> Result<(), HsmError> {
        let mut message = b"smdpplus token self-test ".to_vec();
        message.extend_from_slice(&rand::random::<[u8; 16]>());
        let sig = self.sign_blocking(&message)?;
        self.inner
            .public
            .verify(&message, &sig)
            .map_err(|_| HsmError::Key {
                uri: self.inner.uri.to_string(),
                why: format!(
                    "a test signature does not verify with the public key ({}): the key pair is not a pair",
                    self.inner.public.curve()
                ),
            })
    }

    /// Signs `message` on this thread (start-up, CLI).
    pub fn sign_blocking(&self, message: &[u8]) -> Result<Signature, HsmError> {
        self.sign_here(message, Caller::Thread)
    }

    /// Signs `message` from synchronous code that may run on an async
    /// worker ([`Token::call_sync`]): the TLS handshake.
    pub fn sign_sync(&self, message: &[u8]) -> Result<Signature, HsmError> {
        self.sign_here(message, Caller::MaybeWorker)
    }

    /// The synchronous signature, with one reconnection when the key is
    /// gone from the token.
    fn sign_here(&self, message: &[u8], caller: Caller) -> Result<Signature, HsmError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let token = &self.inner.token;
        let mut retried = false;
        loop {
            let inner = self.inner.clone();
            let sign = move |s: &Session, g: u64| inner.sign_digest(s, g, &digest);
            let raw = match caller {
                Caller::Thread => token.with_session("C_Sign", sign)?,
                Caller::MaybeWorker => token.call_sync("C_Sign", sign)?,
            };
            match self.step(raw, &mut retried)? {
                Some(sig) => return Ok(sig),
                None => {
                    let g = self.generation_seen();
                    match caller {
                        Caller::Thread => token.reconnect(g),
                        Caller::MaybeWorker => token.call_sync_reconnect(g)?,
                    }
                }
            }
        }
    }

    /// Signs `message` on the token, from async code: on the token's
    /// bounded blocking pool ([`Token::call`]).
    pub async fn sign(&self, message: &[u8]) -> Result<Signature, HsmError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let mut retried = false;
        loop {
            let inner = self.inner.clone();
            let raw = self
                .inner
                .token
                .call("C_Sign", move |s, g| inner.sign_digest(s, g, &digest))
                .await?;
            match self.step(raw, &mut retried)? {
                Some(sig) => return Ok(sig),
                None => {
                    let (token, g) = (self.inner.token.clone(), self.generation_seen());
                    tokio::task::spawn_blocking(move || token.reconnect(g))
                        .await
                        .map_err(|_| HsmError::Task)?;
                }
            }
        }
    }

    /// The generation of the sessions the last lookup ran in.
    fn generation_seen(&self) -> u64 {
        self.inner
            .missing_in
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A signature, or `None`: the key was not found, and (once) the token
    /// should be found again first: it was there when the server started,
    /// so the token was most likely replaced or restarted.
    fn step(
        &self,
        raw: Result<Vec<u8>, String>,
        retried: &mut bool,
    ) -> Result<Option<Signature>, HsmError> {
        let key_err = |why: String| HsmError::Key {
            uri: self.inner.uri.to_string(),
            why,
        };
        match raw {
            Ok(raw) => Signature::from_raw(&raw)
                .map(Some)
                .map_err(|e| key_err(format!("the token's ECDSA signature: {e}"))),
            Err(why) if *retried => Err(key_err(why)),
            Err(why) => {
                tracing::warn!(key = %self.inner.uri, why, "key not found on the token; finding the token again");
                *retried = true;
                Ok(None)
            }
        }
    }
}

impl Inner {
    /// CKM_ECDSA over `digest` with the cached handle, found again after a
    /// reconnect.
    fn sign_digest(
        &self,
        s: &Session,
        generation: u64,
        digest: &[u8; 32],
    ) -> Result<Result<Vec<u8>, String>, CkError> {
        let cached = *self.handle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, h)) = cached.filter(|(g, _)| *g == generation) {
            match s.sign(&Mechanism::Ecdsa, h, digest) {
                // The object was replaced on the token (deleted and
                // imported again): find it afresh below.
                Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                    _,
                )) => {
                    let mut slot = self.handle.lock().unwrap_or_else(|e| e.into_inner());
                    if *slot == Some((g, h)) {
                        *slot = None;
                    }
                }
                other => return Ok(Ok(other?)),
            }
        }
        let handle = match find_one(s, &self.uri, ObjectClass::PRIVATE_KEY)? {
            Ok(h) => h,
            Err(why) => {
                self.missing_in
                    .store(generation, std::sync::atomic::Ordering::Relaxed);
                return Ok(Err(why));
            }
        };
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, handle));
        Ok(Ok(s.sign(&Mechanism::Ecdsa, handle, digest)?))
    }
}

/// A private ECDSA key in a file (PEM) or on the token: what an SM-DP+
/// credential (CERT.DPauth, CERT.DPpb) signs with.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few per process, built at start and never moved on a request path"
)]
pub enum EcKey {
    /// Read from a PEM file or compiled in; signs in this process.
    Software(SigningKey),
    /// On the token; signs there.
    Token(TokenKey),
}

/// A signature that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The software backend failed.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
}

impl From<SigningKey> for EcKey {
    fn from(k: SigningKey) -> EcKey {
        EcKey::Software(k)
    }
}

impl From<TokenKey> for EcKey {
    fn from(k: TokenKey) -> EcKey {
        EcKey::Token(k)
    }
}

impl EcKey {
    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            EcKey::Software(k) => k.public_key(),
            EcKey::Token(k) => k.public_key(),
        }
    }

    /// Signs `message` with ECDSA-SHA256 (SGP.22 §2.6.7.2): in software at
    /// once, on the token through its bounded blocking pool.
    pub async fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        match self {
            EcKey::Software(k) => Ok(k.sign(message)?),
            EcKey::Token(k) => Ok(k.sign(message).await?),
        }
    }

    /// Whether the key is on the token.
    pub fn on_token(&self) -> bool {
        matches!(self, EcKey::Token(_))
    }
}

/// Where a synchronous signature is asked for.
#[derive(Clone, Copy)]
enum Caller {
    /// A thread that may block (start-up, CLI).
    Thread,
    /// Code that may run on an async worker (the TLS handshake).
    MaybeWorker,
}
