//! ECDSA-SHA256 on NIST P-256 and brainpoolP256r1 (SGP.22 §2.6.7.1,
//! §2.6.7.2).
//!
//! Two signature encodings meet in SGP.22:
//! - the plain format of BSI TR-03111 / GlobalPlatform Amendment E: 64 raw
//!   bytes `r || s`, carried in the `5F37` TLVs (serverSignature1,
//!   smdpSignature2, euiccSignature1/2, smdpSign of BF23);
//! - the X.509 DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`
//!   of certificate signatures (RFC 5480, §4.5.2.1.1).
//!
//! [`Signature`] holds the plain form and converts from and to DER.
//! [`PublicKey`] and [`SigningKey`] hide the backend: aws-lc-rs for NIST
//! P-256, RustCrypto `bp256` for brainpoolP256r1.

use super::{pem, CryptoError};
use aws_lc_rs::signature::{self as aws, KeyPair as _};
use bp256::BrainpoolP256r1;
use ecdsa::signature::{Signer as _, Verifier as _};
use std::fmt;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// id-ecPublicKey (RFC 5480), the SubjectPublicKeyInfo algorithm of every
/// SGP.22 key (§4.5.2.1.1).
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
/// prime256v1 / NIST P-256 (RFC 5480).
const OID_NIST_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
/// brainpoolP256r1 (RFC 5639).
const OID_BRAINPOOL_P256R1: &[u64] = &[1, 3, 36, 3, 3, 2, 8, 1, 1, 7];
/// ecdsa-with-SHA256 (RFC 5758), the only certificate signature algorithm
/// of §4.5.2.1.1.
const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

/// Tag of the signature data objects (`[APPLICATION 55]`, §5.7.13).
const TAG_SIGNATURE: [u8; 2] = [0x5F, 0x37];

/// Whether `oid` has exactly the arcs `arcs`.
pub(crate) fn oid_is(oid: &Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}

/// An elliptic curve of SGP.22 §2.6.7.1. FRP256V1 is not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1).
    NistP256,
    /// brainpoolP256r1 (RFC 5639).
    BrainpoolP256r1,
}

impl Curve {
    /// The curve named by a namedCurve OID.
    pub fn from_oid(oid: &Oid<'_>) -> Result<Curve, CryptoError> {
        if oid_is(oid, OID_NIST_P256) {
            Ok(Curve::NistP256)
        } else if oid_is(oid, OID_BRAINPOOL_P256R1) {
            Ok(Curve::BrainpoolP256r1)
        } else {
            Err(CryptoError::UnsupportedCurve(oid.to_id_string()))
        }
    }

    /// The curve of a SubjectPublicKeyInfo: algorithm id-ecPublicKey with a
    /// namedCurve parameter (§4.5.2.1.1).
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Curve, CryptoError> {
        if !oid_is(&spki.algorithm.algorithm, OID_EC_PUBLIC_KEY) {
            return Err(CryptoError::UnsupportedCurve(format!(
                "key algorithm {} is not id-ecPublicKey",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| CryptoError::UnsupportedCurve("no namedCurve parameter".into()))?;
        let oid = params
            .as_oid()
            .map_err(|_| CryptoError::UnsupportedCurve("parameter is not a namedCurve".into()))?;
        Curve::from_oid(&oid)
    }

    fn from_sec1_oid(oid: &sec1::der::asn1::ObjectIdentifier) -> Result<Curve, CryptoError> {
        let arcs: Vec<u64> = oid.arcs().map(u64::from).collect();
        if arcs == OID_NIST_P256 {
            Ok(Curve::NistP256)
        } else if arcs == OID_BRAINPOOL_P256R1 {
            Ok(Curve::BrainpoolP256r1)
        } else {
            Err(CryptoError::UnsupportedCurve(oid.to_string()))
        }
    }

    /// The DER encoding of the namedCurve OID: the `ECParameters` of a
    /// PKCS#11 EC key object (CKA_EC_PARAMS, PKCS#11 v2.40 §2.3.3).
    pub fn ec_params_der(self) -> &'static [u8] {
        match self {
            Curve::NistP256 => &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
            Curve::BrainpoolP256r1 => &[
                0x06, 0x09, 0x2B, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07,
            ],
        }
    }

    /// The curve named by a DER namedCurve OID ([`Curve::ec_params_der`]).
    pub fn from_ec_params_der(der: &[u8]) -> Result<Curve, CryptoError> {
        [Curve::NistP256, Curve::BrainpoolP256r1]
            .into_iter()
            .find(|c| c.ec_params_der() == der)
            .ok_or_else(|| {
                CryptoError::UnsupportedCurve(format!("EC parameters {}", hex::encode(der)))
            })
    }

    /// The curve's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::NistP256 => "NIST P-256",
            Curve::BrainpoolP256r1 => "brainpoolP256r1",
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ECDSA signature in the plain format (BSI TR-03111): `r || s`, each a
/// 32-byte big-endian integer, as carried in the `5F37` TLVs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Takes 64 raw bytes `r || s`. No range check: verification rejects an
    /// out-of-range `r` or `s`.
    pub fn from_raw(raw: &[u8]) -> Result<Signature, CryptoError> {
        let raw: [u8; 64] = raw
            .try_into()
            .map_err(|_| CryptoError::SignatureEncoding("plain signature is not 64 bytes"))?;
        Ok(Signature(raw))
    }

    /// The 64 bytes `r || s`.
    pub fn as_raw(&self) -> &[u8; 64] {
        &self.0
    }

    /// Reads a DER `ECDSA-Sig-Value` (a certificate signature) made on
    /// `curve`. Strict DER; `r` and `s` must lie in `[1, n-1]`.
    pub fn from_der(curve: Curve, der: &[u8]) -> Result<Signature, CryptoError> {
        const BAD: CryptoError = CryptoError::SignatureEncoding("invalid DER ECDSA-Sig-Value");
        let raw = match curve {
            Curve::NistP256 => p256::ecdsa::Signature::from_der(der)
                .map_err(|_| BAD)?
                .to_bytes(),
            Curve::BrainpoolP256r1 => bp256::r1::ecdsa::Signature::from_der(der)
                .map_err(|_| BAD)?
                .to_bytes(),
        };
        Signature::from_raw(&raw)
    }

    /// Encodes as a DER `ECDSA-Sig-Value` for `curve`.
    pub fn to_der(&self, curve: Curve) -> Result<Vec<u8>, CryptoError> {
        const BAD: CryptoError = CryptoError::SignatureEncoding("r or s out of range");
        Ok(match curve {
            Curve::NistP256 => p256::ecdsa::Signature::from_slice(&self.0)
                .map_err(|_| BAD)?
                .to_der()
                .as_bytes()
                .to_vec(),
            Curve::BrainpoolP256r1 => bp256::r1::ecdsa::Signature::from_slice(&self.0)
                .map_err(|_| BAD)?
                .to_der()
                .as_bytes()
                .to_vec(),
        })
    }

    /// Reads the TLV `5F37 40 || r || s` (§5.7.13), which must be the whole
    /// input.
    pub fn from_tlv(tlv: &[u8]) -> Result<Signature, CryptoError> {
        match tlv {
            [0x5F, 0x37, 0x40, raw @ ..] if raw.len() == 64 => Signature::from_raw(raw),
            _ => Err(CryptoError::SignatureEncoding(
                "not a 5F37 TLV with a 64-byte value",
            )),
        }
    }

    /// Encodes the TLV `5F37 40 || r || s`.
    pub fn to_tlv(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(67);
        out.extend_from_slice(&TAG_SIGNATURE);
        out.push(0x40);
        out.extend_from_slice(&self.0);
        out
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// The verification backend of a [`PublicKey`].
#[derive(Clone)]
enum Verifier {
    Nist(aws::ParsedPublicKey),
    Brainpool(ecdsa::VerifyingKey<BrainpoolP256r1>),
}

/// A validated public key: a point on its curve, kept in the uncompressed
/// form `04 || X || Y` (the form of `5F49` and of SGP.22 certificates).
#[derive(Clone)]
pub struct PublicKey {
    curve: Curve,
    point: [u8; 65],
    verifier: Verifier,
}

impl PublicKey {
    /// Takes a SEC1 point (uncompressed, or compressed for tolerance) on
    /// `curve`; rejects points off the curve and the identity.
    pub fn from_sec1(curve: Curve, bytes: &[u8]) -> Result<PublicKey, CryptoError> {
        const BAD: CryptoError = CryptoError::InvalidPublicKey("not a point on the curve");
        // RustCrypto validates and normalises to the uncompressed form.
        let uncompressed: Box<[u8]> = match curve {
            Curve::NistP256 => p256::PublicKey::from_sec1_bytes(bytes)
                .map_err(|_| BAD)?
                .to_sec1_bytes(),
            Curve::BrainpoolP256r1 => {
                elliptic_curve::PublicKey::<BrainpoolP256r1>::from_sec1_bytes(bytes)
                    .map_err(|_| BAD)?
                    .to_sec1_bytes()
            }
        };
        let point: [u8; 65] = (*uncompressed)
            .try_into()
            .map_err(|_| CryptoError::InvalidPublicKey("not an uncompressed 256-bit point"))?;
        let verifier = match curve {
            Curve::NistP256 => Verifier::Nist(
                aws::ParsedPublicKey::new(&aws::ECDSA_P256_SHA256_FIXED, point).map_err(|_| BAD)?,
            ),
            Curve::BrainpoolP256r1 => Verifier::Brainpool(
                ecdsa::VerifyingKey::<BrainpoolP256r1>::from_sec1_bytes(&point).map_err(|_| BAD)?,
            ),
        };
        Ok(PublicKey {
            curve,
            point,
            verifier,
        })
    }

    /// Takes exactly the uncompressed form `04 || X || Y` (65 bytes), as
    /// required for `5F49` one-time keys (§5.5.1, GlobalPlatform Amd F).
    pub fn from_uncompressed(curve: Curve, bytes: &[u8]) -> Result<PublicKey, CryptoError> {
        if bytes.len() != 65 || bytes[0] != 0x04 {
            return Err(CryptoError::InvalidPublicKey(
                "not an uncompressed point (04 || X || Y, 65 bytes)",
            ));
        }
        PublicKey::from_sec1(curve, bytes)
    }

    /// The key of a parsed SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, CryptoError> {
        let curve = Curve::from_spki(spki)?;
        if spki.subject_public_key.unused_bits != 0 {
            return Err(CryptoError::InvalidPublicKey("BIT STRING has unused bits"));
        }
        PublicKey::from_sec1(curve, &spki.subject_public_key.data)
    }

    /// The key of a DER SubjectPublicKeyInfo (a `PUBLIC KEY` PEM section).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| CryptoError::InvalidPublicKey(spki_error(e)))?;
        if !rest.is_empty() {
            return Err(CryptoError::InvalidPublicKey(
                "trailing bytes after SubjectPublicKeyInfo",
            ));
        }
        PublicKey::from_spki(&spki)
    }

    /// The subject key of a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let cert = parse_certificate(der)?;
        PublicKey::from_spki(cert.public_key())
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The uncompressed point `04 || X || Y`.
    pub fn to_uncompressed(&self) -> &[u8; 65] {
        &self.point
    }

    /// Verifies an ECDSA-SHA256 signature over `message` (§2.6.7.2).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        match &self.verifier {
            Verifier::Nist(key) => key
                .verify_sig(message, signature.as_raw())
                .map_err(|_| CryptoError::BadSignature),
            Verifier::Brainpool(key) => {
                let sig = bp256::r1::ecdsa::Signature::from_slice(signature.as_raw())
                    .map_err(|_| CryptoError::BadSignature)?;
                key.verify(message, &sig)
                    .map_err(|_| CryptoError::BadSignature)
            }
        }
    }
}

fn spki_error<E>(_: E) -> &'static str {
    "malformed SubjectPublicKeyInfo"
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.curve == other.curve && self.point == other.point
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("curve", &self.curve)
            .field("point", &hex::encode(self.point))
            .finish()
    }
}

/// The signing backend of a [`SigningKey`]. Both zeroize their secret on
/// drop (aws-lc frees it with `OPENSSL_cleanse`; RustCrypto's `SigningKey`
/// implements `Drop` with zeroize).
enum Signer {
    Nist(aws::EcdsaKeyPair),
    Brainpool(ecdsa::SigningKey<BrainpoolP256r1>),
}

/// A private ECDSA key (SK.DPauth.ECDSA, SK.DPpb.ECDSA, or in tests an
/// eUICC or CI key). Never printed.
pub struct SigningKey {
    signer: Signer,
    public: PublicKey,
}

impl SigningKey {
    /// Reads a PEM key file as OpenSSL writes it for SGP.26: an optional
    /// `EC PARAMETERS` section naming the curve, then an `EC PRIVATE KEY`
    /// section (SEC1, RFC 5915). A `PRIVATE KEY` section (PKCS#8) is not
    /// accepted. If both name a curve they must agree.
    pub fn from_pem(text: &str) -> Result<SigningKey, CryptoError> {
        let sections = pem::sections(text).map_err(CryptoError::InvalidPrivateKey)?;
        let mut params_curve = None;
        let mut key = None;
        for s in &sections {
            match s.label.as_str() {
                "EC PARAMETERS" => {
                    use sec1::der::Decode;
                    let params = sec1::EcParameters::from_der(&s.der).map_err(|e| {
                        CryptoError::InvalidPrivateKey(format!("EC PARAMETERS: {e}"))
                    })?;
                    let oid = params.named_curve().ok_or_else(|| {
                        CryptoError::InvalidPrivateKey("EC PARAMETERS is not a named curve".into())
                    })?;
                    params_curve = Some(Curve::from_sec1_oid(&oid)?);
                }
                "EC PRIVATE KEY" if key.is_none() => key = Some(&*s.der),
                "EC PRIVATE KEY" => {
                    return Err(CryptoError::InvalidPrivateKey(
                        "more than one EC PRIVATE KEY section".into(),
                    ))
                }
                other => {
                    return Err(CryptoError::InvalidPrivateKey(format!(
                        "unexpected PEM section {other}"
                    )))
                }
            }
        }
        let der =
            key.ok_or_else(|| CryptoError::InvalidPrivateKey("no EC PRIVATE KEY section".into()))?;
        SigningKey::from_sec1_der_with_curve(der, params_curve)
    }

    /// Reads a PEM key as SEC1 ([`SigningKey::from_pem`]) or as PKCS#8
    /// (`PRIVATE KEY`, RFC 5958, as TLS tools write it; NIST P-256 only):
    /// for moving a key onto a PKCS#11 token.
    pub fn from_any_pem(text: &str) -> Result<SigningKey, CryptoError> {
        let sections = pem::sections(text).map_err(CryptoError::InvalidPrivateKey)?;
        match sections.iter().find(|s| s.label == "PRIVATE KEY") {
            Some(s) => {
                let pair =
                    aws::EcdsaKeyPair::from_pkcs8(&aws::ECDSA_P256_SHA256_FIXED_SIGNING, &s.der)
                        .map_err(|_| {
                            CryptoError::InvalidPrivateKey(
                                "PKCS#8 key is not a valid NIST P-256 ECDSA key".into(),
                            )
                        })?;
                use aws_lc_rs::encoding::AsBigEndian;
                let scalar = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| CryptoError::Backend("P-256 private key export failed"))?;
                SigningKey::from_scalar(Curve::NistP256, scalar.as_ref())
            }
            None => SigningKey::from_pem(text),
        }
    }

    /// Reads a PEM key file (see [`SigningKey::from_pem`]).
    pub fn from_pem_file(path: &std::path::Path) -> Result<SigningKey, CryptoError> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| CryptoError::InvalidPrivateKey(format!("{}: {e}", path.display())))?,
        );
        SigningKey::from_pem(&text)
    }

    /// Reads a DER SEC1 `ECPrivateKey` (RFC 5915) that names its curve.
    pub fn from_sec1_der(der: &[u8]) -> Result<SigningKey, CryptoError> {
        SigningKey::from_sec1_der_with_curve(der, None)
    }

    fn from_sec1_der_with_curve(
        der: &[u8],
        hint: Option<Curve>,
    ) -> Result<SigningKey, CryptoError> {
        use sec1::der::Decode;
        let parsed = sec1::EcPrivateKey::from_der(der)
            .map_err(|e| CryptoError::InvalidPrivateKey(format!("SEC1: {e}")))?;
        let own = match parsed.parameters.and_then(|p| p.named_curve()) {
            Some(oid) => Some(Curve::from_sec1_oid(&oid)?),
            None => None,
        };
        let curve = match (own, hint) {
            (Some(a), Some(b)) if a != b => {
                return Err(CryptoError::InvalidPrivateKey(format!(
                    "EC PARAMETERS names {b} but the key names {a}"
                )))
            }
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => {
                return Err(CryptoError::InvalidPrivateKey(
                    "the key does not name its curve".into(),
                ))
            }
        };
        let key = SigningKey::from_scalar(curve, parsed.private_key)?;
        if let Some(embedded) = parsed.public_key {
            if embedded != key.public.to_uncompressed().as_slice() {
                let other = PublicKey::from_sec1(curve, embedded)?;
                if other != key.public {
                    return Err(CryptoError::InvalidPrivateKey(
                        "the embedded public key does not match the private key".into(),
                    ));
                }
            }
        }
        Ok(key)
    }

    /// Takes a raw 32-byte private scalar on `curve`.
    pub fn from_scalar(curve: Curve, scalar: &[u8]) -> Result<SigningKey, CryptoError> {
        const BAD: &str = "the private scalar is not in [1, n-1]";
        match curve {
            Curve::NistP256 => {
                // aws-lc-rs takes the scalar inside an ECPrivateKey; rebuild
                // it with RustCrypto, which also gives us the public point.
                let secret = p256::SecretKey::from_slice(scalar)
                    .map_err(|_| CryptoError::InvalidPrivateKey(BAD.into()))?;
                let public = secret.public_key().to_sec1_bytes();
                let pair = aws::EcdsaKeyPair::from_private_key_and_public_key(
                    &aws::ECDSA_P256_SHA256_FIXED_SIGNING,
                    scalar,
                    &public,
                )
                .map_err(|e| CryptoError::InvalidPrivateKey(format!("aws-lc: {e}")))?;
                let public = PublicKey::from_uncompressed(curve, pair.public_key().as_ref())?;
                Ok(SigningKey {
                    signer: Signer::Nist(pair),
                    public,
                })
            }
            Curve::BrainpoolP256r1 => {
                let key = ecdsa::SigningKey::<BrainpoolP256r1>::from_slice(scalar)
                    .map_err(|_| CryptoError::InvalidPrivateKey(BAD.into()))?;
                let public =
                    PublicKey::from_uncompressed(curve, &key.verifying_key().to_sec1_bytes())?;
                Ok(SigningKey {
                    signer: Signer::Brainpool(key),
                    public,
                })
            }
        }
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        self.public.curve
    }

    /// The private scalar (32 bytes, big-endian), zeroized on drop: only
    /// for moving a key onto a PKCS#11 token (`keys hsm-import`).
    pub fn secret_scalar(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
        match &self.signer {
            Signer::Nist(pair) => {
                use aws_lc_rs::encoding::AsBigEndian;
                let bin = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| CryptoError::Backend("P-256 private key export failed"))?;
                Ok(zeroize::Zeroizing::new(bin.as_ref().to_vec()))
            }
            Signer::Brainpool(key) => Ok(zeroize::Zeroizing::new(key.to_bytes().to_vec())),
        }
    }

    /// Signs `message` with ECDSA-SHA256 (§2.6.7.2). NIST P-256 uses a
    /// random nonce from aws-lc; brainpool uses the deterministic nonce of
    /// RFC 6979.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, CryptoError> {
        match &self.signer {
            Signer::Nist(pair) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let sig = pair
                    .sign(&rng, message)
                    .map_err(|_| CryptoError::Backend("ECDSA P-256 signing failed"))?;
                Signature::from_raw(sig.as_ref())
            }
            Signer::Brainpool(key) => {
                let sig: bp256::r1::ecdsa::Signature = key
                    .try_sign(message)
                    .map_err(|_| CryptoError::Backend("ECDSA brainpool signing failed"))?;
                Signature::from_raw(&sig.to_bytes())
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Parses a DER certificate; trailing bytes are an error.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CryptoError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CryptoError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CryptoError::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

fn check_signature_algorithm(alg: &AlgorithmIdentifier<'_>) -> Result<(), CryptoError> {
    // §4.5.2.1.1: ecdsa-with-SHA256, parameters omitted (RFC 5758 §3.2).
    if !oid_is(&alg.algorithm, OID_ECDSA_WITH_SHA256) || alg.parameters.is_some() {
        return Err(CryptoError::UnsupportedSignatureAlgorithm(
            alg.algorithm.to_id_string(),
        ));
    }
    Ok(())
}

/// Verifies that `cert` was signed by the holder of `issuer`: the outer and
/// inner signature algorithms are both ecdsa-with-SHA256 (§4.5.2.1.1), and
/// the DER signature verifies over the TBSCertificate bytes as received.
pub fn verify_certificate_signature(
    cert: &X509Certificate<'_>,
    issuer: &PublicKey,
) -> Result<(), CryptoError> {
    check_signature_algorithm(&cert.signature_algorithm)?;
    check_signature_algorithm(&cert.tbs_certificate.signature)?;
    if cert.signature_value.unused_bits != 0 {
        return Err(CryptoError::SignatureEncoding(
            "signature BIT STRING has unused bits",
        ));
    }
    let sig = Signature::from_der(issuer.curve(), &cert.signature_value.data)?;
    issuer.verify(cert.tbs_certificate.as_ref(), &sig)
}

/// [`verify_certificate_signature`] on a DER certificate.
pub fn verify_certificate_der(der: &[u8], issuer: &PublicKey) -> Result<(), CryptoError> {
    verify_certificate_signature(&parse_certificate(der)?, issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUM_NIST: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_NIST.der");
    const CI_NIST: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_NIST.der");
    const CI_BRP: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_BRP.der");

    #[test]
    fn curve_from_certificates() {
        assert_eq!(
            PublicKey::from_certificate_der(CI_NIST).unwrap().curve(),
            Curve::NistP256
        );
        assert_eq!(
            PublicKey::from_certificate_der(CI_BRP).unwrap().curve(),
            Curve::BrainpoolP256r1
        );
    }

    #[test]
    fn der_round_trip_and_strictness() {
        let cert = parse_certificate(EUM_NIST).unwrap();
        let der = cert.signature_value.data.to_vec();
        let sig = Signature::from_der(Curve::NistP256, &der).unwrap();
        assert_eq!(sig.to_der(Curve::NistP256).unwrap(), der);
        // trailing byte
        let mut long = der.clone();
        long.push(0);
        assert!(Signature::from_der(Curve::NistP256, &long).is_err());
        // raw bytes are not DER
        assert!(Signature::from_der(Curve::NistP256, sig.as_raw()).is_err());
        // zero r
        let mut zero = *sig.as_raw();
        zero[..32].fill(0);
        assert!(Signature::from_raw(&zero)
            .unwrap()
            .to_der(Curve::NistP256)
            .is_err());
    }

    #[test]
    fn tlv_round_trip() {
        let sig = Signature::from_raw(&[7u8; 64]).unwrap();
        let tlv = sig.to_tlv();
        assert_eq!(&tlv[..3], &[0x5F, 0x37, 0x40]);
        assert_eq!(Signature::from_tlv(&tlv).unwrap(), sig);
        assert!(Signature::from_tlv(&tlv[..66]).is_err());
        assert!(Signature::from_raw(&[0u8; 63]).is_err());
    }

    #[test]
    fn rejects_off_curve_points() {
        let mut p = *PublicKey::from_certificate_der(CI_NIST)
            .unwrap()
            .to_uncompressed();
        p[64] ^= 1;
        assert!(PublicKey::from_uncompressed(Curve::NistP256, &p).is_err());
        assert!(PublicKey::from_uncompressed(Curve::BrainpoolP256r1, &p).is_err());
        assert!(PublicKey::from_uncompressed(Curve::NistP256, &p[..33]).is_err());
    }
}
