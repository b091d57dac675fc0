//! Personalization values of one profile: the identifiers and the secrets a
//! template leaves open (ICCID, IMSI, Ki, OPc, PIN1/PIN2,
//! PUK1/PUK2, ADM1, SPN and the MNO-SD keys).
//!
//! Secrets live in [`zeroize::Zeroizing`] buffers and never show in
//! `Debug` output.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "values come from operators: errors, not panics"
    )
)]

use std::fmt;

use rand::{CryptoRng, Rng, RngCore};
use zeroize::Zeroizing;

use super::saip::ef::{self, EfError, Imsi};
use crate::ids::Iccid;

/// A 128-bit key (Ki, OPc, an AES security domain key).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<[u8; 16]>);

impl Key {
    /// From 16 octets.
    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    /// From 32 hex digits (upper or lower case).
    pub fn from_hex(s: &str) -> Option<Key> {
        let mut k = Zeroizing::new([0u8; 16]);
        hex::decode_to_slice(s.trim(), k.as_mut()).ok()?;
        Some(Key(k))
    }

    /// A fresh key from a cryptographically secure generator.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Key {
        let mut k = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(k.as_mut());
        Key(k)
    }

    /// The octets. Callers must not log them.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// Upper-case hex (for the operator's output file), in a buffer that is
    /// zeroized on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode_upper(self.0.as_ref()))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A PIN, PUK or ADM code: 4 to 8 decimal digits (ETSI TS 102 221 §9.5.1).
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Parses 4 to 8 decimal digits.
    pub fn new(digits: &str) -> Result<Pin, EfError> {
        ef::pin_value(digits)?;
        Ok(Pin(Zeroizing::new(digits.to_owned())))
    }

    /// `len` (4 to 8) uniformly random digits from a cryptographically
    /// secure generator.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R, len: usize) -> Pin {
        let len = len.clamp(4, 8);
        let mut s = Zeroizing::new(String::with_capacity(len));
        for _ in 0..len {
            s.push(char::from(b'0' + rng.gen_range(0..10u8)));
        }
        Pin(s)
    }

    /// The digits. Callers must not log them.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: ASCII digits padded with `FF` to 8 octets.
    pub fn value(&self) -> Zeroizing<[u8; 8]> {
        // Validated at construction, so the fallback is never taken.
        Zeroizing::new(ef::pin_value(&self.0).unwrap_or([0xFF; 8]))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// The MNO-SD keys: an SCP80 (OTA) key set and an SCP03 key set, all
/// AES-128 (GlobalPlatform Card Specification Amendment D for SCP03, ETSI
/// TS 102 225 for SCP80).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdKeys {
    /// SCP80 KIc (ciphering).
    pub scp80_kic: Key,
    /// SCP80 KID (integrity).
    pub scp80_kid: Key,
    /// SCP80 KIK (key encryption).
    pub scp80_kik: Key,
    /// SCP03 S-ENC master key.
    pub scp03_enc: Key,
    /// SCP03 S-MAC master key.
    pub scp03_mac: Key,
    /// SCP03 DEK.
    pub scp03_dek: Key,
}

impl SdKeys {
    /// Six fresh keys.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> SdKeys {
        SdKeys {
            scp80_kic: Key::random(rng),
            scp80_kid: Key::random(rng),
            scp80_kik: Key::random(rng),
            scp03_enc: Key::random(rng),
            scp03_mac: Key::random(rng),
            scp03_dek: Key::random(rng),
        }
    }
}

/// The generator for personalization secrets in bulk: ChaCha12 (`StdRng`,
/// a CSPRNG) seeded once from the operating system's generator. Drawing
/// each of a profile's forty-odd secret bytes and digits straight from the
/// OS would cost one system call apiece.
pub fn secret_rng() -> rand::rngs::StdRng {
    rand::SeedableRng::from_entropy()
}

/// Everything that makes one profile of a template unique. The same
/// `Params` and template always give the same package, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The ICCID (with its Luhn digit).
    pub iccid: Iccid,
    /// The IMSI.
    pub imsi: Imsi,
    /// The subscriber key K.
    pub ki: Key,
    /// OPc, the operator variant key already combined with K (3GPP TS
    /// 35.206 §4.1).
    pub opc: Key,
    /// PIN1 (4 to 8 digits).
    pub pin1: Pin,
    /// PIN2.
    pub pin2: Pin,
    /// PUK1 (8 digits).
    pub puk1: Pin,
    /// PUK2.
    pub puk2: Pin,
    /// ADM1 (8 digits).
    pub adm1: Pin,
    /// The service provider name (EF.SPN).
    pub spn: String,
    /// The MNO-SD keys.
    pub sd_keys: SdKeys,
}

impl Params {
    /// Fresh secrets for an ICCID and IMSI: Ki, OPc and the MNO-SD keys
    /// (128 bits each), 4-digit PIN1 and PIN2, 8-digit PUK1, PUK2 and ADM1,
    /// all from the cryptographically secure generator `rng`.
    pub fn random<R: RngCore + CryptoRng>(
        iccid: Iccid,
        imsi: Imsi,
        spn: &str,
        rng: &mut R,
    ) -> Params {
        Params {
            iccid,
            imsi,
            ki: Key::random(rng),
            opc: Key::random(rng),
            pin1: Pin::random(rng, 4),
            pin2: Pin::random(rng, 4),
            puk1: Pin::random(rng, 8),
            puk2: Pin::random(rng, 8),
            adm1: Pin::random(rng, 8),
            spn: spn.to_owned(),
            sd_keys: SdKeys::random(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let p = Params::random(
            Iccid::parse("8999900000000000006").unwrap(),
            Imsi::parse("001010000000001").unwrap(),
            "smdpplus",
            &mut rng,
        );
        let shown = format!("{p:?}");
        assert!(shown.contains("8999900000000000006") && shown.contains("001010000000001"));
        for secret in [p.ki.to_hex(), p.opc.to_hex(), p.sd_keys.scp03_enc.to_hex()] {
            assert!(!shown.contains(secret.as_str()));
            assert!(!shown.contains(&secret.to_lowercase()));
        }
        assert!(!shown.contains(p.adm1.expose()));
        assert_eq!(p.pin1.expose().len(), 4);
        assert_eq!(p.puk1.expose().len(), 8);
        assert_ne!(p.ki, p.opc);
    }

    #[test]
    fn pins_and_keys_parse() {
        assert!(Pin::new("0000").is_ok());
        assert!(Pin::new("000").is_err());
        assert_eq!(&*Pin::new("1234").unwrap().value(), b"1234\xFF\xFF\xFF\xFF");
        let k = Key::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(k.to_hex().as_str(), "000102030405060708090A0B0C0D0E0F");
        assert!(Key::from_hex("0001").is_none());
    }
}
