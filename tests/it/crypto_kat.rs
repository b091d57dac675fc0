//! Known-answer and round-trip tests of `smdpplus::crypto`.
//!
//! The vectors in `tests/vectors/` (see its SOURCES.md) come from a
//! third-party SM-DP+ trace; every one of them must pass. The round trips
//! check that the eUICC side (`Bsp::unwrap`) inverts the SM-DP+ side and
//! rejects any tampering, and that signatures made with the SGP.26 keys
//! verify with the SGP.26 certificates on both curves.

use serde_json::Value;
use smdpplus::crypto::bsp::{self, Bsp, SessionKeys};
use smdpplus::crypto::ecdsa::{verify_certificate_der, Curve, PublicKey, Signature, SigningKey};
use smdpplus::crypto::ecka::OneTimeKeyPair;
use smdpplus::crypto::kdf;

const ECKA: &str = include_str!("../vectors/ecka_mode51.json");
const KDF: &str = include_str!("../vectors/bsp_kdf.json");
const BSP: &str = include_str!("../vectors/bsp_mode51_ciphering.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

fn hexf(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .unwrap_or_else(|_| panic!("{field} is not hex"))
}

fn arr16(bytes: &[u8]) -> [u8; 16] {
    bytes.try_into().expect("16 bytes")
}

fn keys_from(v: &Value) -> SessionKeys {
    SessionKeys::new(
        &arr16(&hexf(v, "initial_mcv")),
        &arr16(&hexf(v, "s_enc")),
        &arr16(&hexf(v, "s_mac")),
    )
}

fn cert(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/certs/sgp26/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn key(path: &str) -> SigningKey {
    let p = format!("{}/certs/sgp26/{path}", env!("CARGO_MANIFEST_DIR"));
    SigningKey::from_pem_file(std::path::Path::new(&p)).unwrap()
}

// ---------------------------------------------------------------- ECKA, KDF

#[test]
fn ecka_mode51() {
    let v = json(ECKA);
    assert_eq!(v["curve"], "secp256r1");
    let pair = OneTimeKeyPair::from_scalar(Curve::NistP256, &hexf(&v, "smdp_otsk")).unwrap();
    // otPK.DP as sent in 5F49
    assert_eq!(
        pair.public_key().to_vec(),
        hexf(&v, "smdp_otpk_uncompressed")
    );
    let shs = pair.agree(&hexf(&v, "euicc_otpk_uncompressed")).unwrap();
    assert_eq!(shs.as_bytes().to_vec(), hexf(&v, "expected_shared_secret"));
}

#[test]
fn kdf_vectors() {
    let v = json(KDF);
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for t in vectors {
        assert_eq!(hexf(t, "key_type"), vec![kdf::KEY_TYPE_AES]);
        assert_eq!(hexf(t, "key_length"), vec![kdf::KEY_LENGTH]);
        let eid = arr16(&hexf(t, "eid"));
        let keys =
            kdf::derive_session_keys(&hexf(t, "shared_secret"), &hexf(t, "host_id"), &eid).unwrap();
        let name = t["source_test"].as_str().unwrap();
        assert_eq!(
            keys.initial_mcv().to_vec(),
            hexf(t, "expected_initial_mcv"),
            "{name}"
        );
        assert_eq!(keys.enc().to_vec(), hexf(t, "expected_s_enc"), "{name}");
        assert_eq!(keys.mac().to_vec(), hexf(t, "expected_s_mac"), "{name}");
    }
}

/// ECKA output -> KDF -> the session keys the ciphering vector starts from:
/// the three vector files describe one session.
#[test]
fn ecka_kdf_chain() {
    let (e, k, b) = (json(ECKA), json(KDF), json(BSP));
    let pair = OneTimeKeyPair::from_scalar(Curve::NistP256, &hexf(&e, "smdp_otsk")).unwrap();
    let shs = pair.agree(&hexf(&e, "euicc_otpk_uncompressed")).unwrap();
    let mode51 = &k["vectors"][1];
    assert_eq!(mode51["source_test"], "BSP_Test_mode51");
    let eid = smdpplus::ids::Eid::parse("89049032123451234512345678901235").unwrap();
    assert_eq!(kdf::eid_bytes(&eid).unwrap().to_vec(), hexf(mode51, "eid"));
    let keys = kdf::derive_session_keys(
        shs.as_bytes(),
        &hexf(mode51, "host_id"),
        &kdf::eid_bytes(&eid).unwrap(),
    )
    .unwrap();
    let s = &b["session_keys"];
    assert_eq!(keys.initial_mcv().to_vec(), hexf(s, "initial_mcv"));
    assert_eq!(keys.enc().to_vec(), hexf(s, "s_enc"));
    assert_eq!(keys.mac().to_vec(), hexf(s, "s_mac"));
}

// ---------------------------------------------------------------- SCP03t

/// Every ciphering step, in order, on ONE `Bsp`: 87, 88, 87
/// (ReplaceSessionKeys), switch to the PPKs, 86, 86.
#[test]
fn bsp_mode51_on_one_session() {
    let v = json(BSP);
    let mut bsp = Bsp::new(keys_from(&v["session_keys"]));
    let ppk = keys_from(&v["ppk_keys_after_replace_session_keys"]);
    let steps = v["session_steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for (i, step) in steps.iter().enumerate() {
        let tag = hexf(step, "tag")[0];
        let pt = hexf(step, "plaintext");
        let out = match step["operation"].as_str().unwrap() {
            "encrypt_and_mac" => bsp.wrap_enc(tag, &pt).unwrap(),
            "mac_only" => bsp.wrap_mac_only(tag, &pt).unwrap(),
            other => panic!("unknown operation {other}"),
        };
        assert_eq!(hex::encode(&out), step["expected_output_tlv"], "step {i}");
    }
    // The third step's plaintext is ReplaceSessionKeysRequest for the PPKs.
    assert_eq!(
        ppk.to_replace_session_keys_request().to_vec(),
        hexf(&steps[2], "plaintext")
    );
    bsp.replace_session_keys(ppk);
    assert_eq!(bsp.counter(), 1);
    for step in v["ppk_steps"].as_array().unwrap() {
        assert_eq!(step["operation"], "encrypt_and_mac_one");
        let out = bsp
            .wrap_enc(hexf(step, "tag")[0], &hexf(step, "plaintext"))
            .unwrap();
        assert_eq!(out.len(), 1020, "a full segment is a 1020-byte TLV");
        assert_eq!(
            hex::encode(&out),
            step["expected_output_tlv"],
            "segment {}",
            step["segment_index"]
        );
    }
}

/// The same session through the higher-level calls: ReplaceSessionKeys
/// built by `wrap_replace_session_keys`, and the profile segments cut by
/// `wrap_enc_segments` from the concatenated package (1007 bytes each).
#[test]
fn bsp_mode51_with_segmentation() {
    let v = json(BSP);
    let mut bsp = Bsp::new(keys_from(&v["session_keys"]));
    let steps = v["session_steps"].as_array().unwrap();
    assert_eq!(
        hex::encode(bsp.wrap_enc(0x87, &hexf(&steps[0], "plaintext")).unwrap()),
        steps[0]["expected_output_tlv"]
    );
    assert_eq!(
        bsp.wrap_mac_only_segments(0x88, &hexf(&steps[1], "plaintext"))
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>(),
        vec![steps[1]["expected_output_tlv"].as_str().unwrap()]
    );
    let ppk = keys_from(&v["ppk_keys_after_replace_session_keys"]);
    assert_eq!(
        hex::encode(bsp.wrap_replace_session_keys(ppk).unwrap()),
        steps[2]["expected_output_tlv"]
    );
    let ppk_steps = v["ppk_steps"].as_array().unwrap();
    let package: Vec<u8> = ppk_steps
        .iter()
        .flat_map(|s| hexf(s, "plaintext"))
        .collect();
    assert_eq!(package.len(), 2 * 1007);
    let segments = bsp.wrap_enc_segments(0x86, &package).unwrap();
    let expected: Vec<&str> = ppk_steps
        .iter()
        .map(|s| s["expected_output_tlv"].as_str().unwrap())
        .collect();
    assert_eq!(
        segments.iter().map(hex::encode).collect::<Vec<_>>(),
        expected
    );
}

/// The eUICC side of the vector: unwrapping every expected TLV in order
/// gives back every plaintext, the ReplaceSessionKeys plaintext yields the
/// PPKs, and the profile segments then unwrap under them.
#[test]
fn bsp_mode51_unwrap_as_the_euicc() {
    let v = json(BSP);
    let mut euicc = Bsp::new(keys_from(&v["session_keys"]));
    for step in v["session_steps"].as_array().unwrap() {
        let seg = euicc.unwrap(&hexf(step, "expected_output_tlv")).unwrap();
        assert_eq!(vec![seg.tag], hexf(step, "tag"));
        assert_eq!(seg.data.to_vec(), hexf(step, "plaintext"));
        if seg.data.starts_with(&[0xBF, 0x26]) {
            let ppk = SessionKeys::from_replace_session_keys_request(&seg.data).unwrap();
            let expected = keys_from(&v["ppk_keys_after_replace_session_keys"]);
            assert_eq!(ppk.enc(), expected.enc());
            euicc.replace_session_keys(ppk);
        }
    }
    for step in v["ppk_steps"].as_array().unwrap() {
        let seg = euicc.unwrap(&hexf(step, "expected_output_tlv")).unwrap();
        assert_eq!(seg.tag, 0x86);
        assert_eq!(seg.data.to_vec(), hexf(step, "plaintext"));
    }
}

/// A deterministic byte pattern (no RNG needed for coverage of sizes).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn session() -> (Bsp, Bsp) {
    let k = SessionKeys::new(&[1; 16], &[2; 16], &[3; 16]);
    (Bsp::new(k.clone()), Bsp::new(k))
}

#[test]
fn wrap_then_unwrap_is_identity() {
    let (mut dp, mut euicc) = session();
    // ConfigureISDP-like, StoreMetadata over two 88 segments, PPK switch,
    // then profile packages of awkward sizes.
    let configure = pattern(40, 1);
    let tlv = dp.wrap_enc(bsp::TAG_ENCRYPTED, &configure).unwrap();
    assert_eq!(euicc.unwrap(&tlv).unwrap().data.to_vec(), configure);

    let metadata = pattern(1500, 2);
    let segs = dp
        .wrap_mac_only_segments(bsp::TAG_MAC_ONLY, &metadata)
        .unwrap();
    assert_eq!(segs.len(), 2);
    assert!(segs.iter().all(|s| s.len() <= bsp::MAX_SEGMENT_LEN));
    let mut back = Vec::new();
    for s in &segs {
        let seg = euicc.unwrap(s).unwrap();
        assert_eq!(seg.tag, 0x88);
        back.extend_from_slice(&seg.data);
    }
    assert_eq!(back, metadata);

    let ppk = SessionKeys::new(&[4; 16], &[5; 16], &[6; 16]);
    let tlv = dp.wrap_replace_session_keys(ppk).unwrap();
    let seg = euicc.unwrap(&tlv).unwrap();
    euicc.replace_session_keys(SessionKeys::from_replace_session_keys_request(&seg.data).unwrap());

    for len in [0, 1, 15, 16, 17, 1006, 1007, 1008, 2014, 2015, 5000] {
        let payload = pattern(len, len as u8);
        let segs = dp.wrap_enc_segments(bsp::TAG_PROFILE, &payload).unwrap();
        assert_eq!(segs.len(), len.div_ceil(1007).max(1), "len {len}");
        let mut back = Vec::new();
        for s in &segs {
            assert!(s.len() <= bsp::MAX_SEGMENT_LEN, "len {len}");
            back.extend_from_slice(&euicc.unwrap(s).unwrap().data);
        }
        assert_eq!(back, payload, "len {len}");
    }
    assert_eq!(dp.counter(), euicc.counter());
    assert_eq!(dp.mac_chaining_value(), euicc.mac_chaining_value());
}

/// Flipping any single byte of a segment (tag, length, ciphertext, MAC)
/// makes `unwrap` fail, and a failed unwrap leaves the session usable for
/// the genuine segment.
#[test]
fn any_flipped_byte_fails_unwrap() {
    for (tag, data) in [
        (bsp::TAG_ENCRYPTED, pattern(57, 7)),
        (bsp::TAG_MAC_ONLY, pattern(48, 8)),
        (bsp::TAG_PROFILE, pattern(1007, 9)),
    ] {
        let (mut dp, mut euicc) = session();
        let tlv = if tag == bsp::TAG_MAC_ONLY {
            dp.wrap_mac_only(tag, &data).unwrap()
        } else {
            dp.wrap_enc(tag, &data).unwrap()
        };
        for i in 0..tlv.len() {
            for flip in [0x01, 0x80] {
                let mut bad = tlv.clone();
                bad[i] ^= flip;
                assert!(
                    euicc.unwrap(&bad).is_err(),
                    "tag {tag:02X}: flipping byte {i} by {flip:02X} went unnoticed"
                );
            }
        }
        assert_eq!(euicc.counter(), 1, "failures must not advance the session");
        assert_eq!(euicc.unwrap(&tlv).unwrap().data.to_vec(), data);
    }
}

#[test]
fn unwrap_rejects_reorder_replay_truncation_and_oversize() {
    let (mut dp, mut euicc) = session();
    let a = dp.wrap_enc(0x87, b"first").unwrap();
    let b = dp.wrap_enc(0x87, b"second").unwrap();
    assert!(euicc.unwrap(&b).is_err(), "out of order");
    euicc.unwrap(&a).unwrap();
    assert!(euicc.unwrap(&a).is_err(), "replayed");
    assert!(euicc.unwrap(&b[..b.len() - 1]).is_err(), "truncated");
    let mut long = b.clone();
    long.push(0);
    assert!(euicc.unwrap(&long).is_err(), "trailing byte");
    assert!(euicc.unwrap(&[]).is_err());
    assert!(euicc.unwrap(&[0x87]).is_err());
    euicc.unwrap(&b).unwrap();

    // A 1036-byte segment (1008 bytes of plaintext, the known bug) is
    // refused even with a valid MAC.
    let (_, mut euicc) = session();
    let mut body = pattern(1024, 3);
    body.truncate(1024);
    let mut forged = vec![0x86, 0x82, 0x04, 0x08];
    forged.extend_from_slice(&body);
    forged.extend_from_slice(&[0; 8]);
    assert_eq!(forged.len(), 1036);
    assert!(euicc.unwrap(&forged).is_err());
}

// ---------------------------------------------------------------- ECDSA

/// Sign with each SGP.26 private key, verify with the key of the matching
/// certificate (and of the PK_*.pem file); tampering fails.
#[test]
fn sgp26_keys_sign_and_certificates_verify() {
    for (sk, cert_path, pk, curve) in [
        (
            "DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem",
            "DPauth/CERT_S_SM_DPauth_ECDSA_BRP.der",
            "DPauth/PK_S_SM_DPauth_ECDSA_BRP.pem",
            Curve::BrainpoolP256r1,
        ),
        (
            "DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem",
            "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
            "DPauth/PK_S_SM_DPauth_ECDSA_NIST.pem",
            Curve::NistP256,
        ),
        (
            "DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem",
            "DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der",
            "DPpb/PK_S_SM_DPpb_ECDSA_BRP.pem",
            Curve::BrainpoolP256r1,
        ),
        (
            "DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem",
            "DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der",
            "DPpb/PK_S_SM_DPpb_ECDSA_NIST.pem",
            Curve::NistP256,
        ),
        (
            "eUICC/SK_EUICC_ECDSA_BRP.pem",
            "eUICC/CERT_EUICC_ECDSA_BRP.der",
            "eUICC/PK_EUICC_ECDSA_BRP.pem",
            Curve::BrainpoolP256r1,
        ),
        (
            "eUICC/SK_EUICC_ECDSA_NIST.pem",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            "eUICC/PK_EUICC_ECDSA_NIST.pem",
            Curve::NistP256,
        ),
    ] {
        let signer = key(sk);
        assert_eq!(signer.curve(), curve, "{sk}");
        let from_cert = PublicKey::from_certificate_der(&cert(cert_path)).unwrap();
        assert_eq!(&from_cert, signer.public_key(), "{sk} vs {cert_path}");
        let pem =
            std::fs::read_to_string(format!("{}/certs/sgp26/{pk}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let der = base64_body(&pem);
        assert_eq!(PublicKey::from_spki_der(&der).unwrap(), from_cert, "{pk}");

        let msg = b"serverSigned1 or smdpSigned2 bytes";
        let sig = signer.sign(msg).unwrap();
        from_cert.verify(msg, &sig).unwrap();
        // via the 5F37 TLV and via DER
        from_cert
            .verify(msg, &Signature::from_tlv(&sig.to_tlv()).unwrap())
            .unwrap();
        let der_sig = sig.to_der(curve).unwrap();
        assert_eq!(Signature::from_der(curve, &der_sig).unwrap(), sig);
        assert!(from_cert.verify(b"other bytes", &sig).is_err(), "{sk}");
        let mut bad = *sig.as_raw();
        bad[40] ^= 1;
        assert!(from_cert
            .verify(msg, &Signature::from_raw(&bad).unwrap())
            .is_err());
    }
}

fn base64_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// A key of one curve does not verify a signature made on the other, and a
/// key from another pair does not verify either.
#[test]
fn wrong_keys_do_not_verify() {
    let brp = key("DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem");
    let nist = key("DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem");
    let other_brp = key("DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem");
    let sig = brp.sign(b"m").unwrap();
    assert!(nist.public_key().verify(b"m", &sig).is_err());
    assert!(other_brp.public_key().verify(b"m", &sig).is_err());
    let sig = nist.sign(b"m").unwrap();
    assert!(brp.public_key().verify(b"m", &sig).is_err());
}

/// Every certificate of the SGP.26 tree verifies with its issuer's key, on
/// both curves, through the DER -> plain signature conversion.
#[test]
fn sgp26_certificate_signatures() {
    for c in ["NIST", "BRP"] {
        let ci =
            PublicKey::from_certificate_der(&cert(&format!("CI/CERT_CI_ECDSA_{c}.der"))).unwrap();
        let eum =
            PublicKey::from_certificate_der(&cert(&format!("EUM/CERT_EUM_ECDSA_{c}.der"))).unwrap();
        for p in [
            format!("CI/CERT_CI_ECDSA_{c}.der"),
            format!("EUM/CERT_EUM_ECDSA_{c}.der"),
            format!("DPauth/CERT_S_SM_DPauth_ECDSA_{c}.der"),
            format!("DPauth/CERT_S_SM_DP2auth_ECDSA_{c}.der"),
            format!("DPpb/CERT_S_SM_DPpb_ECDSA_{c}.der"),
            format!("DPpb/CERT_S_SM_DP2pb_ECDSA_{c}.der"),
        ] {
            verify_certificate_der(&cert(&p), &ci).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(verify_certificate_der(&cert(&p), &eum).is_err(), "{p}");
        }
        let euicc = cert(&format!("eUICC/CERT_EUICC_ECDSA_{c}.der"));
        verify_certificate_der(&euicc, &eum).unwrap();
        assert!(verify_certificate_der(&euicc, &ci).is_err());
    }
}

/// Our P-256 path (aws-lc-rs) against an independent implementation
/// (RustCrypto p256), both directions, in the plain r||s format.
#[test]
fn p256_backends_agree() {
    use p256::ecdsa::signature::{Signer, Verifier};
    let ours = key("DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem");
    // The SEC1 ECPrivateKey is `30 77 02 01 01 04 20 <scalar> ...`.
    let pem = std::fs::read_to_string(format!(
        "{}/certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key_section: String = pem
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("-----BEGIN EC PRIVATE KEY"))
        .collect();
    let sec1 = base64_body(&key_section);
    assert_eq!(&sec1[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
    let scalar = sec1[7..39].to_vec();
    let theirs = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    assert_eq!(
        theirs.verifying_key().to_sec1_bytes().to_vec(),
        ours.public_key().to_uncompressed().to_vec()
    );
    let sig = ours.sign(b"hello").unwrap();
    let as_theirs = p256::ecdsa::Signature::from_slice(sig.as_raw()).unwrap();
    theirs.verifying_key().verify(b"hello", &as_theirs).unwrap();
    let theirs_sig: p256::ecdsa::Signature = theirs.sign(b"world");
    ours.public_key()
        .verify(
            b"world",
            &Signature::from_raw(&theirs_sig.to_bytes()).unwrap(),
        )
        .unwrap();
}

#[test]
fn pem_key_files_are_checked() {
    // EC PARAMETERS naming another curve than the key
    let brp = std::fs::read_to_string(format!(
        "{}/certs/sgp26/DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let nist_params =
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
    let key_only: String = brp
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("-----BEGIN EC PRIVATE KEY"))
        .collect();
    assert!(SigningKey::from_pem(&key_only).is_ok());
    assert!(SigningKey::from_pem(&format!("{nist_params}{key_only}")).is_err());
    assert!(SigningKey::from_pem("").is_err());
    assert!(SigningKey::from_pem(nist_params).is_err());
    // Debug never shows the scalar
    let k = SigningKey::from_pem(&brp).unwrap();
    assert!(format!("{k:?}").contains("SigningKey"));
    assert!(!format!("{k:?}").to_lowercase().contains("93fb33d0"));
}
