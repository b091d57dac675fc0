//! The master key on the token: non-extractable AES-256 secret keys
//! (CKO_SECRET_KEY, CKK_AES, CKA_SENSITIVE, CKA_EXTRACTABLE false), one per
//! key id, labelled `<master_key_label>-<id>` with CKA_ID the id (4 bytes,
//! big-endian). Every PPK is wrapped and unwrapped on the token.
//!
//! Mechanism: CKM_AES_GCM through C_Encrypt/C_Decrypt (PKCS#11 Current
//! Mechanisms, AES-GCM), not CKM_AES_KEY_WRAP_PAD (RFC 5649) through C_WrapKey:
//! - the PPK is not a key the token uses: it must come back into the
//!   process in clear anyway, for ReplaceSessionKeys and the SCP03t
//!   encryption of the binding (SGP.22 §2.5.5, §5.5.1), so C_UnwrapKey
//!   would only create a session object to be read out again, which a
//!   non-extractable policy forbids;
//! - GCM authenticates the ICCID as associated data, binding a wrapped PPK
//!   to its profile as the file master key does; key wrap has no
//!   associated data;
//! - the wrapped form is the one the file master key writes (`nonce ||
//!   ciphertext || tag`, a 96-bit random nonce and a 128-bit tag), so a
//!   move onto the token is an ordinary rotation, record by record.
//!
//! The nonce is drawn by the server (a CSPRNG seeded from the OS): an HSM in a mode that
//! insists on generating GCM IVs itself would need the IV read back from
//! the mechanism parameters instead.

use super::{HsmError, Token};
use crate::profile::protect::{self, Keyring, MasterEntry, ProtectError};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// The key was not found, in sessions of this generation.
struct Missing(u64);

/// One master key on the token.
#[derive(Clone)]
pub struct TokenMasterKey {
    inner: Arc<Inner>,
}

struct Inner {
    token: Arc<Token>,
    label: String,
    id: u32,
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for TokenMasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMasterKey")
            .field("label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

fn label_of(prefix: &str, id: u32) -> String {
    format!("{prefix}-{id}")
}

fn template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

fn hsm_to_protect(e: HsmError) -> ProtectError {
    ProtectError::MasterKey(e.to_string())
}

impl TokenMasterKey {
    fn new(token: &Arc<Token>, label: String, id: u32) -> TokenMasterKey {
        TokenMasterKey {
            inner: Arc::new(Inner {
                token: token.clone(),
                label,
                id,
                handle: Mutex::new(None),
            }),
        }
    }

    /// The key's label on the token.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The key id (the ids of wrapped records name it).
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// AES-256-GCM on the token: `nonce || ciphertext || tag`, `context`
    /// authenticated as associated data.
    pub fn wrap(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, ProtectError> {
        let nonce = protect::new_nonce();
        let secret = Zeroizing::new(secret.to_vec());
        let context = context.to_vec();
        let sealed = self.retrying(|| {
            let (inner, secret, context) = (self.inner.clone(), secret.clone(), context.clone());
            self.inner
                .token
                .call_sync("C_Encrypt AES-GCM", move |s, g| {
                    let Some(h) = inner.handle(s, g)? else {
                        return Ok(Err(Missing(g)));
                    };
                    let mut iv = nonce;
                    let params = GcmParams::new(&mut iv, &context, 128.into())?;
                    Ok(Ok(s.encrypt(&Mechanism::AesGcm(params), h, &secret)?))
                })
                .map_err(hsm_to_protect)
        })?;
        Ok(protect::frame(nonce, &sealed))
    }

    /// The inverse of [`TokenMasterKey::wrap`]; a wrong key, context or a
    /// corrupt record is [`ProtectError::Unwrap`].
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        let (nonce, sealed) = protect::unframe(wrapped)?;
        let sealed = sealed.to_vec();
        let context = context.to_vec();
        let opened = self.retrying(|| {
            let (inner, sealed, context) = (self.inner.clone(), sealed.clone(), context.clone());
            self.inner
                .token
                .call_sync("C_Decrypt AES-GCM", move |s, g| {
                    let Some(h) = inner.handle(s, g)? else {
                        return Ok(Err(Missing(g)));
                    };
                    let mut iv = nonce;
                    let params = GcmParams::new(&mut iv, &context, 128.into())?;
                    match s.decrypt(&Mechanism::AesGcm(params), h, &sealed) {
                        Ok(plain) => Ok(Ok(Some(Zeroizing::new(plain)))),
                        // The tag does not verify: CKR_ENCRYPTED_DATA_INVALID
                        // (PKCS#11 C_Decrypt); SoftHSM2 2.6 answers
                        // CKR_GENERAL_ERROR for it.
                        Err(CkError::Pkcs11(
                            RvError::EncryptedDataInvalid
                            | RvError::EncryptedDataLenRange
                            | RvError::GeneralError,
                            _,
                        )) => Ok(Ok(None)),
                        Err(e) => Err(e),
                    }
                })
                .map_err(hsm_to_protect)
        })?;
        opened.ok_or(ProtectError::Unwrap)
    }

    /// Runs a call; when the key is not found (it was there when the ring
    /// was loaded: the token was replaced or reset), reconnects once and
    /// runs it again.
    fn retrying<R>(
        &self,
        call: impl Fn() -> Result<Result<R, Missing>, ProtectError>,
    ) -> Result<R, ProtectError> {
        match call()? {
            Ok(r) => Ok(r),
            Err(Missing(g)) => {
                tracing::warn!(key = %self.inner.label, "master key not found on the token; finding the token again");
                self.inner
                    .token
                    .call_sync_reconnect(g)
                    .map_err(hsm_to_protect)?;
                call()?.map_err(|_| self.missing())
            }
        }
    }

    /// A wrap and unwrap round trip on the token, so that a key the token
    /// cannot use (absent, not allowed to encrypt or decrypt) is known
    /// before it is needed.
    pub fn self_test(&self) -> Result<(), HsmError> {
        const PROBE: &[u8] = b"smdpplus master key self-test";
        let bad = |why: String| HsmError::Key {
            uri: format!("master key {} ({:?})", self.inner.id, self.inner.label),
            why,
        };
        let back = self
            .wrap(PROBE, b"self-test")
            .and_then(|w| self.unwrap(&w, b"self-test"))
            .map_err(|e| bad(e.to_string()))?;
        if back.as_slice() != PROBE {
            return Err(bad(
                "AES-GCM round trip on the token returned other bytes".into()
            ));
        }
        Ok(())
    }

    fn missing(&self) -> ProtectError {
        ProtectError::MasterKey(format!(
            "master key {} ({:?}) is not on token {:?}",
            self.inner.id,
            self.inner.label,
            self.inner.token.label()
        ))
    }
}

impl Inner {
    /// The key's handle, found again after a reconnect; `None`: not on the
    /// token.
    fn handle(&self, s: &Session, generation: u64) -> Result<Option<ObjectHandle>, CkError> {
        let mut cached = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, h)) = *cached {
            if g == generation {
                return Ok(Some(h));
            }
        }
        let found = s.find_objects(&template(&self.label))?;
        let h = found.first().copied();
        *cached = h.map(|h| (generation, h));
        Ok(h)
    }
}

/// The master keys on the token labelled `<prefix>-<id>`, by id.
pub fn list(token: &Arc<Token>, prefix: &str) -> Result<Vec<TokenMasterKey>, HsmError> {
    let prefix_dash = format!("{prefix}-");
    let ids = token.with_session("list master keys", move |s, _| {
        let mut ids = Vec::new();
        for h in s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ])? {
            for a in s.get_attributes(h, &[AttributeType::Label])? {
                if let Attribute::Label(l) = a {
                    let label = String::from_utf8_lossy(&l).into_owned();
                    if let Some(id) = label
                        .strip_prefix(&prefix_dash)
                        .and_then(|n| n.parse::<u32>().ok())
                    {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(ids)
    })?;
    let mut ids = ids;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids
        .into_iter()
        .map(|id| TokenMasterKey::new(token, label_of(prefix, id), id))
        .collect())
}

/// Generates master key `id` on the token (CKM_AES_KEY_GEN, 256 bits):
/// a token object that is private, sensitive, never extractable and may
/// only encrypt and decrypt.
pub fn generate(token: &Arc<Token>, prefix: &str, id: u32) -> Result<TokenMasterKey, HsmError> {
    let label = label_of(prefix, id);
    let l = label.clone();
    token.with_session("C_GenerateKey AES-256", move |s, _| {
        let mut t = template(&l);
        t.extend([
            Attribute::Id(id.to_be_bytes().to_vec()),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ]);
        s.generate_key(&Mechanism::AesKeyGen, &t).map(|_| ())
    })?;
    let key = TokenMasterKey::new(token, label, id);
    key.self_test()?;
    Ok(key)
}

/// Destroys master key `key` on the token (a retired key, once every
/// record is wrapped under a newer one).
pub fn destroy(key: &TokenMasterKey) -> Result<(), HsmError> {
    let label = key.inner.label.clone();
    key.inner
        .token
        .with_session("C_DestroyObject", move |s, _| {
            for h in s.find_objects(&template(&label))? {
                s.destroy_object(h)?;
            }
            Ok(())
        })
}

/// The master keyring the configuration names, and whether a key was
/// created: with `[hsm] master_key_label` (and `token`), the keys on the
/// token plus any still in the key file or `SMDPPLUS_MASTER_KEY` (a
/// rotation moves them onto the token); the first start with no key
/// anywhere generates key 0 on the token. Without it, the key file as
/// before (`SMDPPLUS_MASTER_KEY` wins; created at first start).
pub fn configured_ring(
    config: &crate::config::Config,
    token: Option<&Arc<Token>>,
) -> Result<(Keyring, bool), String> {
    let env = std::env::var("SMDPPLUS_MASTER_KEY").ok();
    let prefix = config
        .hsm
        .as_ref()
        .and_then(|h| h.master_key_label.as_deref());
    let (token, prefix) = match (token, prefix) {
        (Some(t), Some(p)) => (t, p),
        (None, Some(_)) => return Err("[hsm] master_key_label without a token".into()),
        _ => {
            return match env {
                Some(text) => Keyring::parse(&text)
                    .map(|r| (r, false))
                    .map_err(|e| format!("SMDPPLUS_MASTER_KEY: {e}")),
                None => Keyring::load_or_create(&config.master_key_file).map_err(|e| e.to_string()),
            }
        }
    };
    let mut entries = match env {
        Some(text) => Keyring::parse(&text)
            .map_err(|e| format!("SMDPPLUS_MASTER_KEY: {e}"))?
            .into_entries(),
        None => match std::fs::read_to_string(&config.master_key_file) {
            Ok(text) => Keyring::parse(&Zeroizing::new(text))
                .map_err(|e| format!("{}: {e}", config.master_key_file.display()))?
                .into_entries(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", config.master_key_file.display())),
        },
    };
    let on_token = list(token, prefix).map_err(|e| e.to_string())?;
    let created = entries.is_empty() && on_token.is_empty();
    if created {
        let key = generate(token, prefix, 0).map_err(|e| e.to_string())?;
        entries.push((0, MasterEntry::Token(key)));
    }
    // The current key on the token must work before anything is wrapped.
    if let Some(current) = on_token.last() {
        if entries.iter().all(|(id, _)| *id < current.id()) {
            current.self_test().map_err(|e| e.to_string())?;
        }
    }
    entries.extend(
        on_token
            .into_iter()
            .map(|k| (k.id(), MasterEntry::Token(k))),
    );
    Keyring::from_entries(entries)
        .map_err(|e| e.to_string())
        .map(|r| (r, created))
}
