//! The BSP key derivation (SGP.22 Annex G).
//!
//! KeyData = X9.63 KDF with SHA-256 (BSI TR-03111 §4.3.3) over the shared
//! secret ShS and
//! `SharedInfo = keyType || keyLength || len(hostId) || hostId || len(EID) || EID`,
//! with keyType `88` (AES) and keyLength `10` (16 bytes) as sent in the
//! ControlRefTemplate of InitialiseSecureChannelRequest (§5.5.1). With
//! L = 16, Annex G Table 65 assigns bytes 1..L to the initial MAC chaining
//! value, L+1..2L to S-ENC and 2L+1..3L to S-MAC.

use super::bsp::SessionKeys;
use super::CryptoError;
use crate::ids::Eid;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Key type AES (GlobalPlatform Card Specification Table 11-16), tag `80`
/// of the ControlRefTemplate (§5.5.1).
pub const KEY_TYPE_AES: u8 = 0x88;
/// Key length in bytes, tag `81` of the ControlRefTemplate (§5.5.1).
pub const KEY_LENGTH: u8 = 0x10;

/// X9.63 KDF with SHA-256: fills `out` with
/// `SHA256(Z || counter || sharedInfo)` blocks, counter a 32-bit big-endian
/// integer starting at 1 (BSI TR-03111 §4.3.3, ANSI X9.63).
pub fn x963_kdf_sha256(z: &[u8], shared_info: &[u8], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        // `out` is at most a few blocks long; the counter cannot wrap.
        let counter = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut h = Sha256::new();
        h.update(z);
        h.update(counter.to_be_bytes());
        h.update(shared_info);
        let mut block = h.finalize();
        chunk.copy_from_slice(&block[..chunk.len()]);
        zeroize::Zeroize::zeroize(block.as_mut_slice());
    }
}

/// SharedInfo of Annex G: keyType, keyLength, hostId-LV, EID-LV.
/// hostId is 1 to 16 bytes (`OctetTo16`, §5.5.1), the EID 16 bytes.
pub fn bsp_shared_info(host_id: &[u8], eid: &[u8; 16]) -> Result<Vec<u8>, CryptoError> {
    if host_id.is_empty() || host_id.len() > 16 {
        return Err(CryptoError::Kdf("hostId must be 1 to 16 bytes"));
    }
    let mut info = Vec::with_capacity(4 + host_id.len() + 16);
    info.push(KEY_TYPE_AES);
    info.push(KEY_LENGTH);
    // The length fits a byte: checked above.
    info.push(host_id.len() as u8);
    info.extend_from_slice(host_id);
    info.push(16);
    info.extend_from_slice(eid);
    Ok(info)
}

/// Derives the BSP session keys from ShS (Annex G): initial MCV, S-ENC and
/// S-MAC, 16 bytes each, in that order.
pub fn derive_session_keys(
    shared_secret: &[u8],
    host_id: &[u8],
    eid: &[u8; 16],
) -> Result<SessionKeys, CryptoError> {
    let info = bsp_shared_info(host_id, eid)?;
    let mut key_data = Zeroizing::new([0u8; 48]);
    x963_kdf_sha256(shared_secret, &info, key_data.as_mut());
    let part = |i: usize| {
        let mut k = [0u8; 16];
        k.copy_from_slice(&key_data[16 * i..16 * (i + 1)]);
        Zeroizing::new(k)
    };
    Ok(SessionKeys::new(&part(0), &part(1), &part(2)))
}

/// The EID as the 16 bytes of the key derivation: its 32 digits read as
/// hex, i.e. BCD (the EID is a 32-digit number, SGP.02 §2.2.2).
pub fn eid_bytes(eid: &Eid) -> Result<[u8; 16], CryptoError> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(eid.as_str(), &mut out)
        .map_err(|_| CryptoError::Kdf("EID is not 32 digits"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_info_layout() {
        let eid = [0x89u8; 16];
        let info = bsp_shared_info(&[0x80; 8], &eid).unwrap();
        assert_eq!(&info[..4], &[0x88, 0x10, 0x08, 0x80]);
        assert_eq!(info[11], 0x10);
        assert_eq!(info.len(), 3 + 8 + 1 + 16);
        assert!(bsp_shared_info(&[], &eid).is_err());
        assert!(bsp_shared_info(&[0; 17], &eid).is_err());
    }

    #[test]
    fn eid_as_bcd() {
        let eid = Eid::parse("89049032123451234512345678901235").unwrap();
        assert_eq!(
            hex::encode(eid_bytes(&eid).unwrap()),
            "89049032123451234512345678901235"
        );
    }
}
