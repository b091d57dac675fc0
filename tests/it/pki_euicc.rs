//! SGP.22 eUICC chain validation and SM-DP+ credential selection against
//! the SGP.26 test PKI in `certs/sgp26` (see certs/README.md).
//!
//! Every file of `certs/sgp26/invalid` is classified below, with the status
//! code it must produce; a new file there fails `every_invalid_file_is_covered`
//! until it is added.

use smdpplus::crypto::ecdsa::{verify_certificate_der, PublicKey, SigningKey};
use smdpplus::error::{codes, Error, StatusCode};
use smdpplus::pki::ci::{CiSet, TrustedCi};
use smdpplus::pki::euicc::{EuiccValidator, VerifiedEuicc};
use smdpplus::pki::smdp::{SmdpCredentials, SmdpKeyring};
use smdpplus::pki::x509::KeyId;
use std::path::{Path, PathBuf};

/// 2025-06-01T00:00:00Z: inside the validity of every valid SGP.26
/// certificate used here, after the expiry of the expired test ones.
const NOW: i64 = 1_748_736_000;
/// 2060-01-01T00:00:00Z: after the SGP.26 EUM certificates expire (2054).
const Y2060: i64 = 2_840_140_800;
/// 2019-01-01T00:00:00Z: before the SGP.26 EUM certificates start (2020).
const Y2019: i64 = 1_546_300_800;

const EID: &str = "89049032123451234512345678901235";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/sgp26")
}

fn der(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cis() -> CiSet {
    CiSet::load_dir(&root().join("CI")).unwrap()
}

fn validator() -> EuiccValidator {
    EuiccValidator::new(cis())
}

fn nist_ci() -> KeyId {
    KeyId::new(&hex::decode("F54172BDF98A95D65CBEB88A38A1C11D800A85C3").unwrap())
}

fn brp_ci() -> KeyId {
    KeyId::new(&hex::decode("C0BC70BA36929D43B467FF57570530E57AB8FCD8").unwrap())
}

fn chain(eum: &str, euicc: &str, now: i64) -> Result<VerifiedEuicc, Error> {
    validator().validate(&der(eum), &der(euicc), now)
}

#[track_caller]
fn assert_code(r: Result<VerifiedEuicc, Error>, code: StatusCode) -> Error {
    match r {
        Ok(v) => panic!("expected {code}, got a verified eUICC {}", v.eid()),
        Err(e) => {
            assert_eq!(e.code, code, "{e}");
            e
        }
    }
}

// ------------------------------------------------------------- valid chains

#[test]
fn valid_chains_on_both_curves() {
    for (c, ci) in [("NIST", nist_ci()), ("BRP", brp_ci())] {
        let v = chain(
            &format!("EUM/CERT_EUM_ECDSA_{c}.der"),
            &format!("eUICC/CERT_EUICC_ECDSA_{c}.der"),
            NOW,
        )
        .unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(v.eid().as_str(), EID);
        assert_eq!(v.ci_pkid(), &ci);
        assert_eq!(
            v.public_key(),
            &PublicKey::from_certificate_der(&der(&format!("eUICC/CERT_EUICC_ECDSA_{c}.der")))
                .unwrap()
        );
        // The proof carries the key that checks the eUICC's signatures
        // (euiccSignature1 over euiccSigned1, §5.7.13).
        let sk = SigningKey::from_pem_file(&root().join(format!("eUICC/SK_EUICC_ECDSA_{c}.pem")))
            .unwrap();
        let sig = sk.sign(b"euiccSigned1").unwrap();
        v.verify(b"euiccSigned1", &sig).unwrap();
        assert!(v.verify(b"euiccSigned2", &sig).is_err());
    }
    assert!(nist_ci().to_string().starts_with("F54172BD"));
}

#[test]
fn trusted_cis_load_from_der_files_only() {
    let set = cis();
    assert_eq!(set.len(), 2, "the .pem copies are not loaded twice");
    assert!(set.get(&nist_ci()).is_some());
    assert!(set.get(&brp_ci()).is_some());
}

// ------------------------------------------------------------ invalid/ set

/// What each file of certs/sgp26/invalid exercises (from
/// `openssl x509 -inform der -text`), and the outcome it must give.
const INVALID: &[(&str, &str)] = &[
    // CI-signed, 2010-2015, policy .4 (not EUM): expiry is reported first.
    ("CERT_EUM_ECDSA_NIST_EXPIRED.der", "EUM 8.1.2/6.3"),
    // Self-signed EUM, no AuthorityKeyIdentifier.
    ("CERT_EUM_ECDSA_NIST_INVALID.der", "EUM 8.1.2/6.1"),
    // Signed by the "Unknown CI" (AKI 8466D9DC...).
    ("CERT_EUM_ECDSA_NIST_UNKNOWN_CI.der", "EUM 8.11.1/3.9"),
    // The unknown CI itself: no SKI, no extensions.
    (
        "CERT_UNKNOWN_CI_ECDSA_NIST.der",
        "not a trust anchor; as EUM 8.1.2/6.1",
    ),
    // EUM-signed, 2010-2015.
    ("CERT_EUICC_ECDSA_NIST_EXPIRED.der", "eUICC 8.1.3/6.3"),
    // Self-signed eUICC, no AuthorityKeyIdentifier.
    ("CERT_EUICC_ECDSA_NIST_INVALID.der", "eUICC 8.1.3/6.1"),
    // EID 89049033... outside the EUM's IIN 89049032.
    (
        "CERT_EUICC_ECDSA_NIST_INVALID_EID.der",
        "eUICC 8.1.3/6.1 (range)",
    ),
    (
        "CERT_EUICC_ECDSA_NIST_INVALID_EID.pem",
        "same certificate as the .der",
    ),
    // EID 89049032...1299: in range, valid chain; matches no order.
    ("CERT_EUICC_ECDSA_NIST_UNMATCHED_EID.der", "valid chain"),
    (
        "CERT_EUICC_ECDSA_NIST_UNMATCHED_EID.pem",
        "same certificate as the .der",
    ),
];

#[test]
fn every_invalid_file_is_covered() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("invalid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = INVALID.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
    // The PEM files are the same certificates as the DER ones.
    for pem in files.iter().filter(|f| f.ends_with(".pem")) {
        let certs = smdpplus::pki::load_certs(&root().join("invalid").join(pem)).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(
            certs[0].as_ref(),
            der(&format!("invalid/{}", pem.replace(".pem", ".der"))).as_slice(),
            "{pem}"
        );
    }
}

#[test]
fn expired_eum() {
    let e = assert_code(
        chain(
            "invalid/CERT_EUM_ECDSA_NIST_EXPIRED.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::EUM_CERT_EXPIRED,
    );
    assert!(e.message.contains("expired"), "{e}");
    // Inside its validity (2012) its wrong role shows: policy .4 is
    // id-rspRole-dp-auth, not id-rspRole-eum.
    let e = assert_code(
        chain(
            "invalid/CERT_EUM_ECDSA_NIST_EXPIRED.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            1_325_376_000,
        ),
        codes::EUM_CERT_INVALID,
    );
    assert!(e.message.contains("id-rspRole-eum"), "{e}");
}

#[test]
fn invalid_eum() {
    let e = assert_code(
        chain(
            "invalid/CERT_EUM_ECDSA_NIST_INVALID.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::EUM_CERT_INVALID,
    );
    assert!(e.message.contains("AuthorityKeyIdentifier"), "{e}");
}

#[test]
fn eum_of_unknown_ci() {
    let e = assert_code(
        chain(
            "invalid/CERT_EUM_ECDSA_NIST_UNKNOWN_CI.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::CI_PK_UNKNOWN,
    );
    assert!(e.message.contains("8466D9DC"), "{e}");
    // The chain itself is consistent: it is the trust that is missing.
    let unknown_ci =
        PublicKey::from_certificate_der(&der("invalid/CERT_UNKNOWN_CI_ECDSA_NIST.der")).unwrap();
    verify_certificate_der(
        &der("invalid/CERT_EUM_ECDSA_NIST_UNKNOWN_CI.der"),
        &unknown_ci,
    )
    .unwrap();
}

#[test]
fn certificate_of_unknown_ci() {
    let unknown = der("invalid/CERT_UNKNOWN_CI_ECDSA_NIST.der");
    // It cannot be made a trust anchor: a CI certificate has a
    // SubjectKeyIdentifier and the id-rspRole-ci policy (§4.5.2.2).
    let err = TrustedCi::from_der(&unknown).unwrap_err();
    assert!(err.to_string().contains("SubjectKeyIdentifier"), "{err}");
    assert!(CiSet::from_der([unknown.as_slice()]).is_err());
    // Presented in place of an EUM certificate it names no CI.
    assert_code(
        validator().validate(&unknown, &der("eUICC/CERT_EUICC_ECDSA_NIST.der"), NOW),
        codes::EUM_CERT_INVALID,
    );
}

#[test]
fn expired_euicc() {
    let e = assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "invalid/CERT_EUICC_ECDSA_NIST_EXPIRED.der",
            NOW,
        ),
        codes::EUICC_CERT_EXPIRED,
    );
    assert!(e.message.contains("eUICC certificate has expired"), "{e}");
}

#[test]
fn invalid_euicc() {
    let e = assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "invalid/CERT_EUICC_ECDSA_NIST_INVALID.der",
            NOW,
        ),
        codes::EUICC_CERT_INVALID,
    );
    assert!(e.message.contains("AuthorityKeyIdentifier"), "{e}");
}

#[test]
fn eid_outside_the_eum_range() {
    let e = assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "invalid/CERT_EUICC_ECDSA_NIST_INVALID_EID.der",
            NOW,
        ),
        codes::EUICC_CERT_INVALID,
    );
    assert!(
        e.message.contains("89049033123451234512345678901234"),
        "{e}"
    );
    assert!(e.message.contains("outside"), "{e}");
}

/// "Unmatched EID" is an order-matching case (osmocom's test 14: an eUICC
/// whose EID has no profile): its chain is valid and the EID is in range,
/// so chain validation succeeds and hands the EID to the order lookup,
/// which answers 8.1.1/3.8 or 8.2.5/4.3 (§5.6.3). Its check digits are
/// wrong, which SGP.22 does not ask the SM-DP+ to check.
#[test]
fn unmatched_eid_is_a_valid_chain() {
    let v = chain(
        "EUM/CERT_EUM_ECDSA_NIST.der",
        "invalid/CERT_EUICC_ECDSA_NIST_UNMATCHED_EID.der",
        NOW,
    )
    .unwrap();
    assert_eq!(v.eid().as_str(), "89049032123451234512345678901299");
    assert!(!v.eid().check_digits_ok());
}

// ------------------------------------------------------------ other cases

#[test]
fn chains_do_not_mix_curves_or_order() {
    // eUICC of the other EUM
    assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "eUICC/CERT_EUICC_ECDSA_BRP.der",
            NOW,
        ),
        codes::EUICC_CERT_INVALID,
    );
    assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_BRP.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::EUICC_CERT_INVALID,
    );
    // a CI certificate in place of the EUM (it has no AKI)
    assert_code(
        chain(
            "CI/CERT_CI_ECDSA_NIST.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::EUM_CERT_INVALID,
    );
    // a DPauth certificate in place of the EUM: CI-signed but not an EUM
    assert_code(
        chain(
            "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            NOW,
        ),
        codes::EUM_CERT_INVALID,
    );
    // garbage and trailing bytes
    assert_code(
        validator().validate(b"\x30\x00", &der("eUICC/CERT_EUICC_ECDSA_NIST.der"), NOW),
        codes::EUM_CERT_INVALID,
    );
    let mut long = der("eUICC/CERT_EUICC_ECDSA_NIST.der");
    long.push(0);
    assert_code(
        validator().validate(&der("EUM/CERT_EUM_ECDSA_NIST.der"), &long, NOW),
        codes::EUICC_CERT_INVALID,
    );
}

#[test]
fn a_tampered_certificate_fails_its_signature() {
    let mut eum = der("EUM/CERT_EUM_ECDSA_NIST.der");
    // Flip a byte inside the validity period's text (still parses).
    let pos = eum.windows(13).position(|w| w == b"200401092837Z").unwrap();
    eum[pos + 1] = b'1'; // 2010 instead of 2020
    let e = assert_code(
        validator().validate(&eum, &der("eUICC/CERT_EUICC_ECDSA_NIST.der"), NOW),
        codes::EUM_CERT_INVALID,
    );
    assert!(e.message.contains("signature"), "{e}");
}

#[test]
fn validity_windows() {
    assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            Y2060,
        ),
        codes::EUM_CERT_EXPIRED,
    );
    assert_code(
        chain(
            "EUM/CERT_EUM_ECDSA_NIST.der",
            "eUICC/CERT_EUICC_ECDSA_NIST.der",
            Y2019,
        ),
        codes::EUM_CERT_INVALID,
    );
}

#[test]
fn known_eum_costs_no_signature_check() {
    let v = validator();
    let (eum_nist, euicc_nist) = (
        der("EUM/CERT_EUM_ECDSA_NIST.der"),
        der("eUICC/CERT_EUICC_ECDSA_NIST.der"),
    );
    v.validate(&eum_nist, &euicc_nist, NOW).unwrap();
    assert_eq!(v.eum_signature_checks(), 1);
    v.validate(&eum_nist, &euicc_nist, NOW).unwrap();
    v.validate(
        &eum_nist,
        &der("invalid/CERT_EUICC_ECDSA_NIST_UNMATCHED_EID.der"),
        NOW,
    )
    .unwrap();
    assert_eq!(v.eum_signature_checks(), 1, "cached EUM re-verified");
    // A cached EUM still expires.
    assert_code(
        v.validate(&eum_nist, &euicc_nist, Y2060),
        codes::EUM_CERT_EXPIRED,
    );
    // A cached EUM does not make a bad eUICC certificate pass.
    assert_code(
        v.validate(
            &eum_nist,
            &der("invalid/CERT_EUICC_ECDSA_NIST_INVALID_EID.der"),
            NOW,
        ),
        codes::EUICC_CERT_INVALID,
    );
    v.validate(
        &der("EUM/CERT_EUM_ECDSA_BRP.der"),
        &der("eUICC/CERT_EUICC_ECDSA_BRP.der"),
        NOW,
    )
    .unwrap();
    assert_eq!(v.eum_signature_checks(), 2);
    assert_eq!(v.cached_eums(), 2);
    // Failed EUMs are not cached.
    for _ in 0..2 {
        assert!(v
            .validate(
                &der("invalid/CERT_EUM_ECDSA_NIST_EXPIRED.der"),
                &euicc_nist,
                NOW
            )
            .is_err());
    }
    assert_eq!(v.eum_signature_checks(), 4);
    assert_eq!(v.cached_eums(), 2);
}

#[test]
fn eum_cache_is_bounded() {
    let v = EuiccValidator::with_cache_capacity(cis(), 1);
    let nist = (
        der("EUM/CERT_EUM_ECDSA_NIST.der"),
        der("eUICC/CERT_EUICC_ECDSA_NIST.der"),
    );
    let brp = (
        der("EUM/CERT_EUM_ECDSA_BRP.der"),
        der("eUICC/CERT_EUICC_ECDSA_BRP.der"),
    );
    for (eum, euicc) in [&nist, &brp, &nist] {
        v.validate(eum, euicc, NOW).unwrap();
        assert_eq!(v.cached_eums(), 1);
    }
    assert_eq!(v.eum_signature_checks(), 3, "the NIST EUM was evicted");
    let off = EuiccValidator::with_cache_capacity(cis(), 0);
    off.validate(&nist.0, &nist.1, NOW).unwrap();
    off.validate(&nist.0, &nist.1, NOW).unwrap();
    assert_eq!(off.eum_signature_checks(), 2);
    assert_eq!(off.cached_eums(), 0);
}

// ------------------------------------------------------------ SM-DP+ keys

fn keyring() -> SmdpKeyring {
    SmdpKeyring::load_sgp26(&root(), &cis()).unwrap()
}

#[test]
fn smdp_credentials_per_ci() {
    let ring = keyring();
    assert_eq!(ring.iter().count(), 2);
    for (ci, c) in [(nist_ci(), "NIST"), (brp_ci(), "BRP")] {
        let set = ring.get(&ci).unwrap();
        assert_eq!(set.ci(), &ci);
        assert_eq!(
            set.dpauth().certificate_der(),
            der(&format!("DPauth/CERT_S_SM_DPauth_ECDSA_{c}.der")).as_slice()
        );
        assert_eq!(
            set.dppb().certificate_der(),
            der(&format!("DPpb/CERT_S_SM_DPpb_ECDSA_{c}.der")).as_slice()
        );
        // serverSignature1 made with SK.DPauth verifies with CERT.DPauth.
        let sig = set.dpauth().sign_blocking(b"serverSigned1").unwrap();
        PublicKey::from_certificate_der(set.dpauth().certificate_der())
            .unwrap()
            .verify(b"serverSigned1", &sig)
            .unwrap();
        let sig = set.dppb().sign_blocking(b"smdpSigned2").unwrap();
        set.dppb()
            .public_key()
            .verify(b"smdpSigned2", &sig)
            .unwrap();
    }
    // euiccCiPKIdToBeUsed on the wire: 04 14 || SKI
    let wire = nist_ci().to_octet_string();
    assert_eq!(&wire[..6], &[0x04, 0x14, 0xF5, 0x41, 0x72, 0xBD]);
    assert_eq!(wire.len(), 22);
}

#[test]
fn ci_selection_follows_the_euicc_priorities() {
    let (ring, trusted) = (keyring(), cis());
    let unknown = KeyId::new(&[0x11; 20]);

    let s = ring.select(&trusted, &[nist_ci()], &[nist_ci()]).unwrap();
    assert_eq!(s.euicc_ci_pkid_to_be_used, nist_ci());
    assert_eq!(s.credentials.ci(), &nist_ci());

    let s = ring
        .select(
            &trusted,
            &[unknown.clone(), brp_ci(), nist_ci()],
            &[unknown.clone(), nist_ci(), brp_ci()],
        )
        .unwrap();
    assert_eq!(s.credentials.ci(), &brp_ci());
    assert_eq!(s.euicc_ci_pkid_to_be_used, nist_ci());

    // No CI in common for the eUICC's signatures.
    let e = ring
        .select(&trusted, &[nist_ci()], std::slice::from_ref(&unknown))
        .unwrap_err();
    assert_eq!(e.code, codes::CI_PKID_UNSUPPORTED);
    let e = ring.select(&trusted, &[nist_ci()], &[]).unwrap_err();
    assert_eq!(e.code, codes::CI_PKID_UNSUPPORTED);
    // A common CI, but no DPauth the eUICC can verify.
    let e = ring
        .select(&trusted, std::slice::from_ref(&unknown), &[nist_ci()])
        .unwrap_err();
    assert_eq!(e.code, codes::DPAUTH_CERT_UNAVAILABLE);
    // A trusted CI we hold no DPauth for.
    let nist_only = SmdpKeyring::new(vec![nist_set(&trusted)]).unwrap();
    let e = nist_only
        .select(&trusted, &[brp_ci()], &[brp_ci()])
        .unwrap_err();
    assert_eq!(e.code, codes::DPAUTH_CERT_UNAVAILABLE);
}

fn key(path: &str) -> SigningKey {
    SigningKey::from_pem_file(&root().join(path)).unwrap()
}

fn nist_set(trusted: &CiSet) -> SmdpCredentials {
    SmdpCredentials::new(
        trusted,
        der("DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der"),
        key("DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem"),
        der("DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der"),
        key("DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem"),
    )
    .unwrap()
}

#[test]
fn smdp_credentials_are_checked() {
    let trusted = cis();
    let build = |a: &str, ak: &str, p: &str, pk: &str| {
        SmdpCredentials::new(&trusted, der(a), key(ak), der(p), key(pk))
    };
    // key of another certificate
    assert!(build(
        "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
        "DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem",
        "DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der",
        "DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem",
    )
    .is_err());
    // roles swapped
    assert!(build(
        "DPpb/CERT_S_SM_DPpb_ECDSA_NIST.der",
        "DPpb/SK_S_SM_DPpb_ECDSA_NIST.pem",
        "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
        "DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem",
    )
    .is_err());
    // DPauth and DPpb under different CIs
    let e = build(
        "DPauth/CERT_S_SM_DPauth_ECDSA_NIST.der",
        "DPauth/SK_S_SM_DPauth_ECDSA_NIST.pem",
        "DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der",
        "DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem",
    )
    .unwrap_err();
    assert!(e.to_string().contains("under CI"), "{e}");
    // a CI we do not trust
    let nist_only = CiSet::from_der([der("CI/CERT_CI_ECDSA_NIST.der").as_slice()]).unwrap();
    assert!(SmdpCredentials::new(
        &nist_only,
        der("DPauth/CERT_S_SM_DPauth_ECDSA_BRP.der"),
        key("DPauth/SK_S_SM_DPauth_ECDSA_BRP.pem"),
        der("DPpb/CERT_S_SM_DPpb_ECDSA_BRP.der"),
        key("DPpb/SK_S_SM_DPpb_ECDSA_BRP.pem"),
    )
    .is_err());
    // two sets for one CI
    assert!(SmdpKeyring::new(vec![nist_set(&trusted), nist_set(&trusted)]).is_err());
}
