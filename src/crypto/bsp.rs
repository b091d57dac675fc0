//! The BSP secure channel: SCP03t as SGP.22 uses it to protect the Bound
//! Profile Package (§2.5.3, §2.5.4; command TLV protection of SGP.02
//! §4.1.3.3).
//!
//! Each segment is one TLV:
//! - tag `86` (profile package) or `87` (ConfigureISDP,
//!   ReplaceSessionKeys): the data is padded with `80 00..` to a multiple
//!   of 16 bytes and encrypted with AES-128-CBC under S-ENC, with
//!   ICV = AES-ECB(S-ENC, block counter as 16 bytes big-endian);
//! - tag `88` (StoreMetadata): the data in clear, MAC only.
//!
//! Both end with a C-MAC: the first 8 bytes of
//! `AES-CMAC(S-MAC, MCV || tag || length || data)`, where length is the BER
//! length of the value (data plus the 8 MAC bytes); the full 16-byte CMAC
//! becomes the next MAC chaining value (MCV). The block counter starts at 1
//! and is incremented after every segment, MAC-only ones included (§2.5.4).
//!
//! A segment TLV is at most 1020 bytes, tag, length and MAC included
//! (§2.5.3): 1007 bytes of plaintext per encrypted segment (1008 once
//! padded), 1008 bytes per MAC-only segment. Emitting 1008 plaintext bytes
//! (1036-byte TLVs) is a known interoperability bug that strict eUICCs
//! reject.
//!
//! ReplaceSessionKeys (§2.5.4.4, §5.5.4) switches to PPK-ENC, PPK-MAC and
//! the initial MCV that came with them, with the block counter reset to 1
//! (§2.5.3).

use super::CryptoError;
use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128,
};
use aws_lc_rs::{cmac, constant_time, iv::FixedLength};
use std::fmt;
use zeroize::Zeroizing;

/// Tag of a profile package segment (§2.5.3).
pub const TAG_PROFILE: u8 = 0x86;
/// Tag of an encrypted BSP command segment (ConfigureISDP,
/// ReplaceSessionKeys; §2.5.4).
pub const TAG_ENCRYPTED: u8 = 0x87;
/// Tag of a MAC-only segment (StoreMetadata; §2.5.4).
pub const TAG_MAC_ONLY: u8 = 0x88;

/// Largest segment TLV, tag, length and MAC included (§2.5.3).
pub const MAX_SEGMENT_LEN: usize = 1020;
/// Largest plaintext of one encrypted segment (§2.5.3 NOTE): 1020 minus tag
/// (1), length (3) and MAC (8) leaves 1008 bytes of ciphertext, one of
/// which is at least the `80` padding byte.
pub const MAX_ENCRYPTED_PLAINTEXT: usize = 1007;
/// Largest data of one MAC-only segment: 1020 minus tag, length and MAC.
pub const MAX_MAC_ONLY_DATA: usize = 1008;

const MAC_LEN: usize = 8;
const BLOCK: usize = 16;

/// Tag of ReplaceSessionKeysRequest (`[38]`, §5.5.4).
const TAG_REPLACE_SESSION_KEYS: [u8; 2] = [0xBF, 0x26];

/// A BSP key set: initial MAC chaining value, S-ENC and S-MAC (or, after
/// ReplaceSessionKeys, the PPK set). Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SessionKeys {
    initial_mcv: Zeroizing<[u8; 16]>,
    enc: Zeroizing<[u8; 16]>,
    mac: Zeroizing<[u8; 16]>,
}

impl SessionKeys {
    /// A key set from its three parts (order of Annex G Table 65).
    pub fn new(initial_mcv: &[u8; 16], enc: &[u8; 16], mac: &[u8; 16]) -> SessionKeys {
        SessionKeys {
            initial_mcv: Zeroizing::new(*initial_mcv),
            enc: Zeroizing::new(*enc),
            mac: Zeroizing::new(*mac),
        }
    }

    /// The initial MAC chaining value.
    pub fn initial_mcv(&self) -> &[u8; 16] {
        &self.initial_mcv
    }

    /// S-ENC (or PPK-ENC).
    pub fn enc(&self) -> &[u8; 16] {
        &self.enc
    }

    /// S-MAC (or PPK-MAC).
    pub fn mac(&self) -> &[u8; 16] {
        &self.mac
    }

    /// Encodes ReplaceSessionKeysRequest (§5.5.4):
    /// `BF26 36 { 80 10 initialMacChainingValue, 81 10 ppkEnc, 82 10 ppkCmac }`.
    pub fn to_replace_session_keys_request(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(57));
        out.extend_from_slice(&TAG_REPLACE_SESSION_KEYS);
        out.push(0x36);
        for (tag, value) in [
            (0x80, &*self.initial_mcv),
            (0x81, &*self.enc),
            (0x82, &*self.mac),
        ] {
            out.push(tag);
            out.push(0x10);
            out.extend_from_slice(value);
        }
        out
    }

    /// Decodes ReplaceSessionKeysRequest (§5.5.4), as the eUICC does after
    /// unwrapping its `87` segment. The input must be exactly the BF26 TLV.
    pub fn from_replace_session_keys_request(bytes: &[u8]) -> Result<SessionKeys, CryptoError> {
        const BAD: CryptoError = CryptoError::Bsp("malformed ReplaceSessionKeysRequest");
        let body = match bytes {
            [0xBF, 0x26, 0x36, body @ ..] if body.len() == 0x36 => body,
            _ => return Err(BAD),
        };
        let mut parts = [[0u8; 16]; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            let field = &body[18 * i..18 * (i + 1)];
            if field[0] != 0x80 + i as u8 || field[1] != 0x10 {
                return Err(BAD);
            }
            part.copy_from_slice(&field[2..]);
        }
        let keys = SessionKeys::new(&parts[0], &parts[1], &parts[2]);
        zeroize::Zeroize::zeroize(&mut parts);
        Ok(keys)
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// A segment recovered by [`Bsp::unwrap`].
#[derive(PartialEq, Eq)]
pub struct Segment {
    /// `86`, `87` or `88`.
    pub tag: u8,
    /// The plaintext (decrypted and unpadded, or the MAC-only data).
    /// Zeroized on drop: it may carry PPKs or profile secrets.
    pub data: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({:02X}, {} bytes)", self.tag, self.data.len())
    }
}

/// One side of a BSP session: the current keys, the block counter and the
/// MAC chaining value. The SM-DP+ wraps, the eUICC unwraps; both must see
/// the same segments in the same order.
pub struct Bsp {
    enc: Zeroizing<[u8; 16]>,
    mac: Zeroizing<[u8; 16]>,
    mcv: [u8; 16],
    counter: u128,
}

impl Bsp {
    /// A session starting with `keys` (from the key derivation of Annex G,
    /// or a PPK set for protecting a profile package in advance, §2.5.3):
    /// MCV = the initial MCV, block counter = 1.
    pub fn new(keys: SessionKeys) -> Bsp {
        Bsp {
            enc: keys.enc.clone(),
            mac: keys.mac.clone(),
            mcv: *keys.initial_mcv,
            counter: 1,
        }
    }

    /// The block counter of the next segment.
    pub fn counter(&self) -> u128 {
        self.counter
    }

    /// The current MAC chaining value.
    pub fn mac_chaining_value(&self) -> &[u8; 16] {
        &self.mcv
    }

    /// ReplaceSessionKeys (§2.5.3, §5.5.4): switch to the PPK set and its
    /// initial MCV; the block counter restarts at 1.
    pub fn replace_session_keys(&mut self, ppk: SessionKeys) {
        *self = Bsp::new(ppk);
    }

    /// Wraps ReplaceSessionKeysRequest for `ppk` in an `87` segment with
    /// the current keys, then switches to `ppk` (§2.5.4.4).
    pub fn wrap_replace_session_keys(&mut self, ppk: SessionKeys) -> Result<Vec<u8>, CryptoError> {
        let request = ppk.to_replace_session_keys_request();
        let tlv = self.wrap_enc(TAG_ENCRYPTED, &request)?;
        self.replace_session_keys(ppk);
        Ok(tlv)
    }

    /// Encrypts and MACs one segment (`86` or `87`) of at most
    /// [`MAX_ENCRYPTED_PLAINTEXT`] bytes.
    pub fn wrap_enc(&mut self, tag: u8, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if tag != TAG_PROFILE && tag != TAG_ENCRYPTED {
            return Err(CryptoError::Bsp("encrypted segments are tagged 86 or 87"));
        }
        if plaintext.len() > MAX_ENCRYPTED_PLAINTEXT {
            return Err(CryptoError::Bsp(
                "more than 1007 plaintext bytes in one segment",
            ));
        }
        let mut body = Zeroizing::new(Vec::with_capacity(plaintext.len() + BLOCK));
        body.extend_from_slice(plaintext);
        body.push(0x80);
        while body.len() % BLOCK != 0 {
            body.push(0);
        }
        let icv = self.icv()?;
        let key = EncryptingKey::cbc(self.aes_key()?).map_err(|_| backend())?;
        key.less_safe_encrypt(&mut body, EncryptionContext::Iv128(FixedLength::from(icv)))
            .map_err(|_| backend())?;
        self.seal(tag, &body)
    }

    /// MACs one segment (`88`) of at most [`MAX_MAC_ONLY_DATA`] bytes.
    pub fn wrap_mac_only(&mut self, tag: u8, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if tag != TAG_MAC_ONLY {
            return Err(CryptoError::Bsp("MAC-only segments are tagged 88"));
        }
        if data.len() > MAX_MAC_ONLY_DATA {
            return Err(CryptoError::Bsp("more than 1008 data bytes in one segment"));
        }
        self.seal(tag, data)
    }

    /// Splits `payload` into segments of at most 1007 bytes and wraps each
    /// with [`Bsp::wrap_enc`] (§2.5.3: the profile package is one block of
    /// data cut into segments of at most 1020 bytes). An empty payload
    /// gives one segment.
    pub fn wrap_enc_segments(
        &mut self,
        tag: u8,
        payload: &[u8],
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        if payload.is_empty() {
            return Ok(vec![self.wrap_enc(tag, payload)?]);
        }
        payload
            .chunks(MAX_ENCRYPTED_PLAINTEXT)
            .map(|chunk| self.wrap_enc(tag, chunk))
            .collect()
    }

    /// Splits `data` into segments of at most 1008 bytes and wraps each
    /// with [`Bsp::wrap_mac_only`] (StoreMetadata may need two, §2.5.4).
    pub fn wrap_mac_only_segments(
        &mut self,
        tag: u8,
        data: &[u8],
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        if data.is_empty() {
            return Ok(vec![self.wrap_mac_only(tag, data)?]);
        }
        data.chunks(MAX_MAC_ONLY_DATA)
            .map(|chunk| self.wrap_mac_only(tag, chunk))
            .collect()
    }

    /// The eUICC side: checks one segment TLV (exactly one TLV, at most
    /// 1020 bytes), verifies its C-MAC, decrypts it if tagged `86`/`87`
    /// and strips the padding. On success the MCV and block counter move
    /// on; on any failure they do not, and the session should be dropped.
    pub fn unwrap(&mut self, segment: &[u8]) -> Result<Segment, CryptoError> {
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(CryptoError::Bsp("segment longer than 1020 bytes"));
        }
        let (tag, header_len, value_len) = parse_header(segment)?;
        if segment.len() != header_len + value_len {
            return Err(CryptoError::Bsp(
                "segment length does not match its TLV length",
            ));
        }
        if value_len < MAC_LEN {
            return Err(CryptoError::Bsp("segment shorter than its MAC"));
        }
        let (header, value) = segment.split_at(header_len);
        let (body, mac) = value.split_at(value_len - MAC_LEN);
        let full = self.cmac(header, body)?;
        constant_time::verify_slices_are_equal(&full[..MAC_LEN], mac)
            .map_err(|_| CryptoError::Bsp("C-MAC mismatch"))?;
        let data = match tag {
            TAG_MAC_ONLY => Zeroizing::new(body.to_vec()),
            TAG_PROFILE | TAG_ENCRYPTED => self.decrypt(body)?,
            _ => return Err(CryptoError::Bsp("segment tag is not 86, 87 or 88")),
        };
        self.advance(full)?;
        Ok(Segment { tag, data })
    }

    /// Appends the C-MAC to `tag || length || body` and moves the session
    /// on.
    fn seal(&mut self, tag: u8, body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(body.len() + 4 + MAC_LEN);
        out.push(tag);
        push_ber_length(&mut out, body.len() + MAC_LEN);
        let full = self.cmac(&out, body)?;
        out.extend_from_slice(body);
        out.extend_from_slice(&full[..MAC_LEN]);
        if out.len() > MAX_SEGMENT_LEN {
            // Unreachable given the size checks above; never emit one.
            return Err(CryptoError::Bsp("segment longer than 1020 bytes"));
        }
        self.advance(full)?;
        Ok(out)
    }

    fn advance(&mut self, full_mac: [u8; 16]) -> Result<(), CryptoError> {
        self.mcv = full_mac;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(CryptoError::Bsp("block counter exhausted"))?;
        Ok(())
    }

    /// AES-CMAC(S-MAC, MCV || header || body).
    fn cmac(&self, header: &[u8], body: &[u8]) -> Result<[u8; 16], CryptoError> {
        let key = cmac::Key::new(cmac::AES_128, self.mac.as_ref()).map_err(|_| backend())?;
        let mut ctx = cmac::Context::with_key(&key);
        for part in [&self.mcv[..], header, body] {
            ctx.update(part).map_err(|_| backend())?;
        }
        let tag = ctx.sign().map_err(|_| backend())?;
        tag.as_ref().try_into().map_err(|_| backend())
    }

    /// ICV = AES-ECB(S-ENC, block counter on 16 bytes, big-endian).
    fn icv(&self) -> Result<[u8; 16], CryptoError> {
        let mut block = self.counter.to_be_bytes();
        let key = EncryptingKey::ecb(self.aes_key()?).map_err(|_| backend())?;
        key.encrypt(&mut block).map_err(|_| backend())?;
        Ok(block)
    }

    fn aes_key(&self) -> Result<UnboundCipherKey, CryptoError> {
        UnboundCipherKey::new(&AES_128, self.enc.as_ref()).map_err(|_| backend())
    }

    fn decrypt(&self, body: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if body.is_empty() || body.len() % BLOCK != 0 {
            return Err(CryptoError::Bsp(
                "ciphertext is not a whole number of blocks",
            ));
        }
        let icv = self.icv()?;
        let key = DecryptingKey::cbc(self.aes_key()?).map_err(|_| backend())?;
        let mut buf = Zeroizing::new(body.to_vec());
        key.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(icv)))
            .map_err(|_| backend())?;
        // Padding `80 00..`, 1 to 16 bytes. The MAC was checked first, so
        // this is no padding oracle.
        let last_nonzero = buf
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(CryptoError::Bsp("invalid padding"))?;
        if buf[last_nonzero] != 0x80 || buf.len() - last_nonzero > BLOCK {
            return Err(CryptoError::Bsp("invalid padding"));
        }
        buf.truncate(last_nonzero);
        Ok(buf)
    }
}

impl fmt::Debug for Bsp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bsp")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

fn backend() -> CryptoError {
    CryptoError::Backend("AES/CMAC failure")
}

/// BER definite length: short form below 128, else `81 xx` or `82 xx xx`
/// (segments never need more).
fn push_ber_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.push(0x81);
        out.push(len as u8);
    } else {
        out.push(0x82);
        out.push((len >> 8) as u8);
        out.push(len as u8);
    }
}

/// Reads the tag and length of a segment: `(tag, header length, value
/// length)`. Accepts the short form and the `81`/`82` long forms.
fn parse_header(segment: &[u8]) -> Result<(u8, usize, usize), CryptoError> {
    const SHORT: CryptoError = CryptoError::Bsp("truncated segment header");
    let (&tag, rest) = segment.split_first().ok_or(SHORT)?;
    match rest {
        [l, ..] if *l < 0x80 => Ok((tag, 2, usize::from(*l))),
        [0x81, l, ..] => Ok((tag, 3, usize::from(*l))),
        [0x82, hi, lo, ..] => Ok((tag, 4, usize::from(*hi) << 8 | usize::from(*lo))),
        [_, ..] => Err(CryptoError::Bsp("unsupported length encoding")),
        [] => Err(SHORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> SessionKeys {
        SessionKeys::new(&[seed; 16], &[seed + 1; 16], &[seed + 2; 16])
    }

    #[test]
    fn lengths_at_the_limits() {
        let mut bsp = Bsp::new(keys(1));
        let tlv = bsp.wrap_enc(TAG_PROFILE, &[0xAA; 1007]).unwrap();
        assert_eq!(tlv.len(), 1020);
        assert_eq!(&tlv[..4], &[0x86, 0x82, 0x03, 0xF8]);
        assert!(bsp.wrap_enc(TAG_PROFILE, &[0xAA; 1008]).is_err());
        let tlv = bsp.wrap_mac_only(TAG_MAC_ONLY, &[0xAA; 1008]).unwrap();
        assert_eq!(tlv.len(), 1020);
        assert!(bsp.wrap_mac_only(TAG_MAC_ONLY, &[0xAA; 1009]).is_err());
        // 15 plaintext bytes pad to one block; 16 to two.
        assert_eq!(
            bsp.wrap_enc(TAG_ENCRYPTED, &[0; 15]).unwrap().len(),
            2 + 16 + 8
        );
        assert_eq!(
            bsp.wrap_enc(TAG_ENCRYPTED, &[0; 16]).unwrap().len(),
            2 + 32 + 8
        );
        assert_eq!(
            bsp.counter(),
            5,
            "four segments made, failures do not count"
        );
    }

    #[test]
    fn wrong_tags_are_refused() {
        let mut bsp = Bsp::new(keys(1));
        assert!(bsp.wrap_enc(TAG_MAC_ONLY, b"x").is_err());
        assert!(bsp.wrap_mac_only(TAG_PROFILE, b"x").is_err());
        assert_eq!(bsp.counter(), 1);
    }

    #[test]
    fn replace_session_keys_request_round_trip() {
        let k = keys(3);
        let enc = k.to_replace_session_keys_request();
        assert_eq!(enc.len(), 57);
        let back = SessionKeys::from_replace_session_keys_request(&enc).unwrap();
        assert_eq!(back.initial_mcv(), k.initial_mcv());
        assert_eq!(back.enc(), k.enc());
        assert_eq!(back.mac(), k.mac());
        assert!(SessionKeys::from_replace_session_keys_request(&enc[..56]).is_err());
        let mut bad = enc.to_vec();
        bad[3] = 0x81;
        assert!(SessionKeys::from_replace_session_keys_request(&bad).is_err());
    }

    #[test]
    fn debug_hides_keys() {
        let k = keys(0x41);
        assert_eq!(format!("{k:?}"), "SessionKeys(..)");
        let bsp = Bsp::new(k);
        assert!(!format!("{bsp:?}").contains("41"));
    }
}
