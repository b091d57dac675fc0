//! ECKA: the one-time elliptic curve key agreement of the profile binding
//! (SGP.22 §2.6.7.3, §3.1.3.3, Annex G).
//!
//! The SM-DP+ makes a one-time key pair (otSK.DP.ECKA, otPK.DP.ECKA) on the
//! curve of its CERT.DPpb, sends otPK.DP in `5F49` of
//! InitialiseSecureChannelRequest (§5.5.1), and computes the shared secret
//! ShS from otSK.DP and the eUICC's otPK.EUICC.ECKA (GlobalPlatform Card
//! Specification Amendment F §3.1.1, ephemeral keys only): ShS is the X
//! coordinate of `otSK.DP * otPK.EUICC`.
//!
//! The secret half is consumed by [`OneTimeKeyPair::agree`], so it is used
//! once, and zeroized when dropped; neither it nor the shared secret is
//! ever printed by `Debug`.

use super::{CryptoError, Curve};
use aws_lc_rs::agreement;
use bp256::BrainpoolP256r1;
use rand::{CryptoRng, RngCore};
use std::fmt;
use zeroize::Zeroizing;

/// Rejection sampling bound for [`OneTimeKeyPair::generate`]. A uniformly
/// random 256-bit string is a valid brainpoolP256r1 scalar with probability
/// about 0.66 (and almost 1 for P-256), so 64 failures mean a broken RNG.
const MAX_GENERATION_ATTEMPTS: usize = 64;

/// The secret half, per backend. aws-lc frees its key with
/// `OPENSSL_cleanse`; RustCrypto's `SecretKey` zeroizes on drop.
enum Secret {
    Nist(agreement::PrivateKey),
    Brainpool(elliptic_curve::SecretKey<BrainpoolP256r1>),
}

/// A one-time ECKA key pair: otSK.DP.ECKA and otPK.DP.ECKA.
pub struct OneTimeKeyPair {
    curve: Curve,
    secret: Secret,
    public: [u8; 65],
}

impl OneTimeKeyPair {
    /// Generates a fresh key pair on `curve` from `rng` (a CSPRNG in
    /// production; tests pass a seeded one).
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(
        curve: Curve,
        rng: &mut R,
    ) -> Result<OneTimeKeyPair, CryptoError> {
        let mut scalar = Zeroizing::new([0u8; 32]);
        for _ in 0..MAX_GENERATION_ATTEMPTS {
            rng.try_fill_bytes(scalar.as_mut())
                .map_err(|_| CryptoError::Backend("random generator failed"))?;
            if let Ok(pair) = OneTimeKeyPair::from_scalar(curve, scalar.as_ref()) {
                return Ok(pair);
            }
        }
        Err(CryptoError::Backend(
            "random generator gave no valid scalar",
        ))
    }

    /// Rebuilds a key pair from its 32-byte private scalar (known-answer
    /// tests, and the eUICC side of the software eUICC).
    pub fn from_scalar(curve: Curve, scalar: &[u8]) -> Result<OneTimeKeyPair, CryptoError> {
        const BAD: &str = "the private scalar is not in [1, n-1]";
        let (secret, public): (Secret, Box<[u8]>) = match curve {
            Curve::NistP256 => {
                // aws-lc-rs checks the range; p256 would too, but we want
                // the backend that does the agreement to own the key.
                let key = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar)
                    .map_err(|_| CryptoError::InvalidPrivateKey(BAD.into()))?;
                let public = key
                    .compute_public_key()
                    .map_err(|_| CryptoError::Backend("P-256 public key computation failed"))?;
                let public: Box<[u8]> = public.as_ref().into();
                (Secret::Nist(key), public)
            }
            Curve::BrainpoolP256r1 => {
                let key = elliptic_curve::SecretKey::<BrainpoolP256r1>::from_slice(scalar)
                    .map_err(|_| CryptoError::InvalidPrivateKey(BAD.into()))?;
                let public = key.public_key().to_sec1_bytes();
                (Secret::Brainpool(key), public)
            }
        };
        let public: [u8; 65] = (*public)
            .try_into()
            .map_err(|_| CryptoError::Backend("public key is not an uncompressed point"))?;
        Ok(OneTimeKeyPair {
            curve,
            secret,
            public,
        })
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// otPK as carried in `5F49`: the uncompressed point `04 || X || Y`.
    pub fn public_key(&self) -> &[u8; 65] {
        &self.public
    }

    /// Computes ShS with the peer's one-time public key (`5F49` content,
    /// uncompressed, on the same curve) and consumes the secret half.
    pub fn agree(self, peer_public: &[u8]) -> Result<SharedSecret, CryptoError> {
        if peer_public.len() != 65 || peer_public[0] != 0x04 {
            return Err(CryptoError::KeyAgreement(
                "peer key is not an uncompressed point (04 || X || Y, 65 bytes)",
            ));
        }
        let mut out = Zeroizing::new([0u8; 32]);
        match &self.secret {
            Secret::Nist(key) => {
                let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer_public);
                agreement::agree(
                    key,
                    peer,
                    CryptoError::KeyAgreement("peer key is not a P-256 point"),
                    |x| {
                        if x.len() != 32 {
                            return Err(CryptoError::KeyAgreement("unexpected secret length"));
                        }
                        out.copy_from_slice(x);
                        Ok(())
                    },
                )?;
            }
            Secret::Brainpool(key) => {
                let peer =
                    elliptic_curve::PublicKey::<BrainpoolP256r1>::from_sec1_bytes(peer_public)
                        .map_err(|_| {
                            CryptoError::KeyAgreement("peer key is not a brainpoolP256r1 point")
                        })?;
                let shared = key.diffie_hellman(&peer);
                out.copy_from_slice(shared.raw_secret_bytes());
            }
        }
        Ok(SharedSecret(out))
    }
}

impl fmt::Debug for OneTimeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimeKeyPair")
            .field("curve", &self.curve)
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// The shared secret ShS (32 bytes, the X coordinate), input of the BSP
/// key derivation (Annex G). Zeroized on drop; never printed.
pub struct SharedSecret(Zeroizing<[u8; 32]>);

impl SharedSecret {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn both_sides_agree_on_both_curves() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for curve in [Curve::NistP256, Curve::BrainpoolP256r1] {
            let dp = OneTimeKeyPair::generate(curve, &mut rng).unwrap();
            let euicc = OneTimeKeyPair::generate(curve, &mut rng).unwrap();
            let (dp_pk, euicc_pk) = (*dp.public_key(), *euicc.public_key());
            assert_eq!(dp_pk[0], 0x04);
            let a = dp.agree(&euicc_pk).unwrap();
            let b = euicc.agree(&dp_pk).unwrap();
            assert_eq!(a.as_bytes(), b.as_bytes(), "{curve}");
        }
    }

    #[test]
    fn rejects_foreign_and_malformed_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let nist = OneTimeKeyPair::generate(Curve::NistP256, &mut rng).unwrap();
        let brp = OneTimeKeyPair::generate(Curve::BrainpoolP256r1, &mut rng).unwrap();
        let brp_pk = *brp.public_key();
        let nist_pk = *nist.public_key();
        assert!(nist.agree(&brp_pk).is_err());
        assert!(brp.agree(&nist_pk).is_err());
        let nist = OneTimeKeyPair::generate(Curve::NistP256, &mut rng).unwrap();
        assert!(nist.agree(&nist_pk[..64]).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let kp = OneTimeKeyPair::from_scalar(Curve::NistP256, &[1u8; 32]).unwrap();
        let text = format!("{kp:?}");
        assert!(!text.contains(&hex::encode([1u8; 32])));
        let other = OneTimeKeyPair::generate(Curve::NistP256, &mut rng).unwrap();
        let pk = *other.public_key();
        let shs = kp.agree(&pk).unwrap();
        assert_eq!(format!("{shs:?}"), "SharedSecret(..)");
    }
}
