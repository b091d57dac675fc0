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

    /// AES-256-GCM: `nonce || ciphertext || tag`, bound to `context` (e.g. the ICCID).
    pub fn wrap(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, ProtectError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = secret.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| ProtectError::Unwrap)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The inverse of [`MasterKey::wrap`].
    pub fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        if wrapped.len() < NONCE_LEN + 16 {
            return Err(ProtectError::Unwrap);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
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
    /// The PPK (initial MCV || PPK-ENC || PPK-MAC) wrapped under the master key.
    #[serde(with = "crate::es9plus::dto::b64")]
    pub ppk_wrapped: Vec<u8>,
    /// The 86 segment TLVs, protected under the PPK, in order.
    pub segments: Vec<Segment>,
}

/// One protected segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment(#[serde(with = "crate::es9plus::dto::b64")] pub Vec<u8>);

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
    /// Protects an unprotected profile package under a fresh PPK.
    /// `context` (the ICCID) binds the wrapped PPK to its profile.
    pub fn protect(
        master: &MasterKey,
        upp: &[u8],
        context: &[u8],
    ) -> Result<ProtectedPackage, ProtectError> {
        let mut ppk = Zeroizing::new([0u8; 48]);
        rand::rngs::OsRng.fill_bytes(ppk.as_mut());
        let mut bsp = Bsp::new(keys_from(ppk.as_ref())?);
        let segments = bsp
            .wrap_enc_segments(0x86, upp)
            .map_err(|e| ProtectError::Segments(e.to_string()))?;
        Ok(ProtectedPackage {
            v: 1,
            ppk_wrapped: master.wrap(ppk.as_ref(), context)?,
            segments: segments.into_iter().map(Segment).collect(),
        })
    }

    /// The PPK, for ReplaceSessionKeys at binding time.
    pub fn ppk(&self, master: &MasterKey, context: &[u8]) -> Result<SessionKeys, ProtectError> {
        keys_from(&master.unwrap(&self.ppk_wrapped, context)?)
    }

    /// The unprotected package (export, session-key-only binding).
    pub fn decrypt(
        &self,
        master: &MasterKey,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ProtectError> {
        let mut bsp = Bsp::new(self.ppk(master, context)?);
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
        let master = MasterKey::from_bytes([7; 32]);
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
            .decrypt(&MasterKey::from_bytes([8; 32]), b"8999900000000000006")
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
