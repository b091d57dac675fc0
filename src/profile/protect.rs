//! Profile data at rest (SGP.22 §2.5.5): a finished profile package is kept
//! as a Protected Profile Package, its 86 segments encrypted and MACed
//! under a random per-profile PPK (PPK-ENC, PPK-MAC, initial MCV) exactly as
//! they will travel in the BPP, and the PPK wrapped under the master key.
//! Binding then sends the PPK in ReplaceSessionKeys and the stored segments
//! as they are: no profile byte is re-encrypted per download, and no
//! profile byte is stored in clear.

use crate::crypto::bsp::{Bsp, SessionKeys};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

/// Why protection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A wrapped secret did not authenticate (wrong master key or corrupt data).
    #[error("unwrap failed: wrong master key or corrupt record")]
    Unwrap,
    /// Segment encryption or decryption failed.
    #[error("profile segments: {0}")]
    Segments(String),
    /// The stored record does not decode.
    #[error("corrupt protected package: {0}")]
    Corrupt(String),
}

/// The master key (AES-256) that wraps every PPK. Never logged.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From 32 bytes.
    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(b))
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> MasterKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        MasterKey(k)
    }

    /// From 64 hex digits (config or `SMDPPLUS_MASTER_KEY`).
    pub fn from_hex(s: &str) -> Result<MasterKey, ProtectError> {
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s.trim(), k.as_mut())
            .map_err(|_| ProtectError::MasterKey("expected 64 hex digits".into()))?;
        Ok(MasterKey(k))
    }

    /// Reads a key file (64 hex digits), creating it with a fresh random key
    /// (mode 0600) if it does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), ProtectError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((MasterKey::from_hex(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(k.as_mut());
                let text = Zeroizing::new(hex::encode(k.as_ref()));
                write_secret(path, text.as_bytes())
                    .map_err(|e| ProtectError::MasterKey(format!("{}: {e}", path.display())))?;
                Ok((MasterKey(k), true))
            }
            Err(e) => Err(ProtectError::MasterKey(format!("{}: {e}", path.display()))),
        }
    }

    fn aead(&self) -> Result<LessSafeKey, ProtectError> {
        Ok(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.0.as_ref())
                .map_err(|_| ProtectError::MasterKey("bad key".into()))?,
        ))
    }

    /// AES-256-GCM in the [wrapped form](frame), bound to `context`
    /// (e.g. the ICCID).
    pub fn wrap(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, ProtectError> {
        let nonce = new_nonce();
        let mut buf = secret.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| ProtectError::Unwrap)?;
        Ok(frame(nonce, &buf))
    }

    /// The inverse of [`MasterKey::wrap`].
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        let (nonce, sealed) = unframe(wrapped)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                buf.as_mut_slice(),
            )
            .map_err(|_| ProtectError::Unwrap)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// Length of the AES-GCM authentication tag in the wrapped form.
pub(crate) const TAG_LEN: usize = 16;

/// A fresh random 96-bit nonce for one wrap (the process's CSPRNG, seeded
/// from the OS).
pub(crate) fn new_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// The wrapped form of a secret under any master key, in a file or on the
/// token: `nonce || ciphertext || tag`, where `sealed` is the ciphertext
/// with its tag.
pub(crate) fn frame(nonce: [u8; NONCE_LEN], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(sealed);
    out
}

/// The nonce and the sealed part (ciphertext and tag) of a wrapped secret;
/// one too short to hold a nonce and a tag is [`ProtectError::Unwrap`].
pub(crate) fn unframe(wrapped: &[u8]) -> Result<([u8; NONCE_LEN], &[u8]), ProtectError> {
    if wrapped.len() < NONCE_LEN + TAG_LEN {
        return Err(ProtectError::Unwrap);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    Ok((n, sealed))
}

/// One master key: in the key file (or `SMDPPLUS_MASTER_KEY`), or a
/// non-extractable AES-256 key on the `[hsm]` token, which wraps and
/// unwraps there ([`crate::hsm::master`]).
#[derive(Debug)]
pub enum MasterEntry {
    /// In the key file; wraps in this process.
    File(MasterKey),
    /// On the token.
    Token(crate::hsm::master::TokenMasterKey),
}

impl MasterEntry {
    fn wrap(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, ProtectError> {
        match self {
            MasterEntry::File(k) => k.wrap(secret, context),
            MasterEntry::Token(k) => k.wrap(secret, context),
        }
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        match self {
            MasterEntry::File(k) => k.unwrap(wrapped, context),
            MasterEntry::Token(k) => k.unwrap(wrapped, context),
        }
    }
}

/// The master keys by id; the last one (the highest id) is current. A PPK
/// is wrapped under the current key and names the key that wrapped it, so
/// a rotation can re-wrap records one by one while the server keeps
/// serving. Keys may be in the file, on the token, or (while a rotation
/// moves them onto the token) both.
///
/// File format: one `<id>:<64 hex digits>` line per key, oldest first; a
/// single bare hex line (the first format) is key 0.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<(u32, MasterEntry)>,
}

impl Keyring {
    /// A ring of one key.
    pub fn single(id: u32, key: MasterKey) -> Keyring {
        Keyring {
            keys: vec![(id, MasterEntry::File(key))],
        }
    }

    /// A ring of the given keys, ordered by id; an id given twice is an
    /// error, and so is no key.
    pub fn from_entries(mut keys: Vec<(u32, MasterEntry)>) -> Result<Keyring, ProtectError> {
        keys.sort_by_key(|(id, _)| *id);
        if let Some(w) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ProtectError::MasterKey(format!(
                "key id {} is both in the key file and on the token",
                w[0].0
            )));
        }
        if keys.is_empty() {
            return Err(ProtectError::MasterKey("no key".into()));
        }
        Ok(Keyring { keys })
    }

    /// The keys, by id.
    pub fn into_entries(self) -> Vec<(u32, MasterEntry)> {
        self.keys
    }

    /// Whether the current key is on the token.
    pub fn current_on_token(&self) -> bool {
        matches!(self.keys.last(), Some((_, MasterEntry::Token(_))))
    }

    /// Parses the file format.
    pub fn parse(text: &str) -> Result<Keyring, ProtectError> {
        let mut keys: Vec<(u32, MasterEntry)> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (id, hex) = match line.split_once(':') {
                Some((id, hex)) => (
                    id.parse::<u32>()
                        .map_err(|_| ProtectError::MasterKey("bad key id".into()))?,
                    hex,
                ),
                None => (0, line),
            };
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(ProtectError::MasterKey(format!(
                    "key id {id} appears twice"
                )));
            }
            keys.push((id, MasterEntry::File(MasterKey::from_hex(hex)?)));
        }
        Keyring::from_entries(keys)
    }

    /// The file's lines: the keys in the file (not those on the token).
    fn render(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        for (id, k) in &self.keys {
            if let MasterEntry::File(k) = k {
                out.push_str(&format!("{id}:{}\n", hex::encode(k.0.as_ref())));
            }
        }
        out
    }

    /// Reads the key file, creating it with one fresh key (mode 0600) if it
    /// does not exist. Returns the ring and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Keyring, bool), ProtectError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Keyring::parse(&Zeroizing::new(text))?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = Keyring::single(0, MasterKey::generate());
                write_secret(path, ring.render().as_bytes())
                    .map_err(|e| ProtectError::MasterKey(format!("{}: {e}", path.display())))?;
                Ok((ring, true))
            }
            Err(e) => Err(ProtectError::MasterKey(format!("{}: {e}", path.display()))),
        }
    }

    /// Adds a fresh key as the current one and writes the file atomically
    /// (new file, fsync, rename). Returns the new key id.
    pub fn rotate(&mut self, path: &Path) -> Result<u32, ProtectError> {
        let id = self.current_id().saturating_add(1);
        self.keys
            .push((id, MasterEntry::File(MasterKey::generate())));
        self.save(path)?;
        Ok(id)
    }

    /// Adds `key` (just made on the token) as the current key.
    pub fn push_token_key(&mut self, key: crate::hsm::master::TokenMasterKey) {
        self.keys.push((key.id(), MasterEntry::Token(key)));
    }

    /// Drops every key but the current one: retired keys on the token are
    /// destroyed there, and the file keeps the current key, or is removed
    /// when the current key is on the token.
    pub fn retire_old(&mut self, path: &Path) -> Result<(), ProtectError> {
        if let Some(last) = self.keys.pop() {
            for (_, old) in std::mem::take(&mut self.keys) {
                if let MasterEntry::Token(k) = old {
                    crate::hsm::master::destroy(&k)
                        .map_err(|e| ProtectError::MasterKey(e.to_string()))?;
                }
            }
            self.keys = vec![last];
        }
        if self.current_on_token() {
            return match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ProtectError::MasterKey(format!("{}: {e}", path.display()))),
            };
        }
        self.save(path)
    }

    fn save(&self, path: &Path) -> Result<(), ProtectError> {
        let tmp = path.with_extension("key.new");
        let _ = std::fs::remove_file(&tmp);
        write_secret(&tmp, self.render().as_bytes())
            .map_err(|e| ProtectError::MasterKey(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| ProtectError::MasterKey(format!("{}: {e}", path.display())))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Id of the current key.
    pub fn current_id(&self) -> u32 {
        self.keys.last().map(|(id, _)| *id).unwrap_or(0)
    }

    /// Ids of all keys.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// Wraps a secret under the current key: (key id, wrapped bytes).
    pub fn wrap_current(
        &self,
        secret: &[u8],
        context: &[u8],
    ) -> Result<(u32, Vec<u8>), ProtectError> {
        let (id, k) = self.current()?;
        Ok((id, k.wrap(secret, context)?))
    }

    /// Unwraps a secret wrapped under key `id`.
    pub fn unwrap_with(
        &self,
        id: u32,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        self.get(id)?.unwrap(wrapped, context)
    }

    fn current(&self) -> Result<(u32, &MasterEntry), ProtectError> {
        self.keys
            .last()
            .map(|(id, k)| (*id, k))
            .ok_or_else(|| ProtectError::MasterKey("empty keyring".into()))
    }

    fn get(&self, id: u32) -> Result<&MasterEntry, ProtectError> {
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, k)| k)
            .ok_or_else(|| ProtectError::MasterKey(format!("no master key {id}")))
    }
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A Protected Profile Package as stored (§2.5.5).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProtectedPackage {
    /// Record version.
    pub v: u32,
    /// Id of the master key that wraps the PPK.
    #[serde(default)]
    pub key: u32,
    /// The PPK (initial MCV || PPK-ENC || PPK-MAC) wrapped under the master key.
    #[serde(with = "crate::b64")]
    pub ppk_wrapped: Vec<u8>,
    /// The 86 segment TLVs, protected under the PPK, in order.
    pub segments: Vec<Segment>,
}

/// One protected segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment(#[serde(with = "crate::b64")] pub Vec<u8>);

fn keys_from(bytes: &[u8]) -> Result<SessionKeys, ProtectError> {
    if bytes.len() != 48 {
        return Err(ProtectError::Corrupt("PPK is not 48 bytes".into()));
    }
    let part = |i: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[i * 16..i * 16 + 16]);
        a
    };
    Ok(SessionKeys::new(&part(0), &part(1), &part(2)))
}

impl ProtectedPackage {
    /// Protects an unprotected profile package under a fresh PPK, wrapped
    /// under the ring's current key. `context` (the ICCID) binds the
    /// wrapped PPK to its profile.
    pub fn protect(
        ring: &Keyring,
        upp: &[u8],
        context: &[u8],
    ) -> Result<ProtectedPackage, ProtectError> {
        let mut ppk = Zeroizing::new([0u8; 48]);
        rand::rngs::OsRng.fill_bytes(ppk.as_mut());
        let mut bsp = Bsp::new(keys_from(ppk.as_ref())?);
        let segments = bsp
            .wrap_enc_segments(0x86, upp)
            .map_err(|e| ProtectError::Segments(e.to_string()))?;
        let (key, master) = ring.current()?;
        Ok(ProtectedPackage {
            v: 1,
            key,
            ppk_wrapped: master.wrap(ppk.as_ref(), context)?,
            segments: segments.into_iter().map(Segment).collect(),
        })
    }

    /// The PPK, for ReplaceSessionKeys at binding time.
    pub fn ppk(&self, ring: &Keyring, context: &[u8]) -> Result<SessionKeys, ProtectError> {
        keys_from(&ring.get(self.key)?.unwrap(&self.ppk_wrapped, context)?)
    }

    /// Re-wraps the PPK under the ring's current key; false if it already was.
    pub fn rewrap(&mut self, ring: &Keyring, context: &[u8]) -> Result<bool, ProtectError> {
        let (current, master) = ring.current()?;
        if self.key == current {
            return Ok(false);
        }
        let ppk = ring.get(self.key)?.unwrap(&self.ppk_wrapped, context)?;
        self.ppk_wrapped = master.wrap(&ppk, context)?;
        self.key = current;
        Ok(true)
    }

    /// The unprotected package (export, session-key-only binding).
    pub fn decrypt(
        &self,
        ring: &Keyring,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        let mut bsp = Bsp::new(self.ppk(ring, context)?);
        let mut out = Zeroizing::new(Vec::new());
        for s in &self.segments {
            let seg = bsp
                .unwrap(&s.0)
                .map_err(|e| ProtectError::Segments(e.to_string()))?;
            out.extend_from_slice(&seg.data);
        }
        Ok(out)
    }

    /// Serialised form for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the stored form.
    pub fn from_bytes(b: &[u8]) -> Result<ProtectedPackage, ProtectError> {
        serde_json::from_slice(b).map_err(|e| ProtectError::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protect_then_decrypt_is_identity_and_nothing_is_in_clear() {
        let master = Keyring::single(0, MasterKey::from_bytes([7; 32]));
        let upp: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let p = ProtectedPackage::protect(&master, &upp, b"8999900000000000006").expect("protect");
        assert_eq!(p.segments.len(), 5, "1007 plaintext bytes per segment");
        assert!(p.segments.iter().all(|s| s.0.len() <= 1020));
        assert_eq!(
            p.decrypt(&master, b"8999900000000000006")
                .expect("decrypt")
                .as_slice(),
            upp.as_slice()
        );
        let stored = p.to_bytes();
        assert!(
            !stored.windows(16).any(|w| upp.windows(16).any(|u| u == w)),
            "no plaintext run in the record"
        );
        // Wrong master key or wrong profile: refused.
        assert!(p
            .decrypt(
                &Keyring::single(0, MasterKey::from_bytes([8; 32])),
                b"8999900000000000006"
            )
            .is_err());
        assert!(p.decrypt(&master, b"8999900000000000014").is_err());
        assert_eq!(ProtectedPackage::from_bytes(&stored).expect("parse"), p);
    }

    #[test]
    fn master_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("master.key");
        let (a, created) = MasterKey::load_or_create(&path).expect("create");
        assert!(created);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let (b, again) = MasterKey::load_or_create(&path).expect("load");
        assert!(!again);
        let w = a.wrap(b"secret", b"ctx").expect("wrap");
        assert_eq!(b.unwrap(&w, b"ctx").expect("unwrap").as_slice(), b"secret");
        assert!(format!("{a:?}").contains(".."));
    }
}

#[cfg(test)]
mod keyring_tests {
    use super::*;

    #[test]
    fn rotation_rewraps_and_retires_the_old_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("master.key");
        let (ring, created) = Keyring::load_or_create(&path).expect("create");
        assert!(created);
        let upp = vec![0x42u8; 3000];
        let mut p = ProtectedPackage::protect(&ring, &upp, b"ctx").expect("protect");
        assert_eq!(p.key, 0);
        let mut ring = ring;
        assert_eq!(ring.rotate(&path).expect("rotate"), 1);
        let reread = Keyring::load_or_create(&path).expect("reload").0;
        assert_eq!(reread.ids(), vec![0, 1]);
        assert_eq!(
            p.decrypt(&reread, b"ctx")
                .expect("old key still works")
                .as_slice(),
            upp.as_slice()
        );
        assert!(p.rewrap(&reread, b"ctx").expect("rewrap"));
        assert!(!p.rewrap(&reread, b"ctx").expect("idempotent"));
        assert_eq!(p.key, 1);
        let mut ring = reread;
        ring.retire_old(&path).expect("retire");
        let only_new = Keyring::load_or_create(&path).expect("reload").0;
        assert_eq!(only_new.ids(), vec![1]);
        assert_eq!(
            p.decrypt(&only_new, b"ctx").expect("new key").as_slice(),
            upp.as_slice()
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        // The first file format, one bare hex line, is key 0.
        let legacy = Keyring::parse(&"ab".repeat(32)).expect("legacy");
        assert_eq!(legacy.ids(), vec![0]);
    }
}
