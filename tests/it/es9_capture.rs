//! Third-party vectors: the signatures and certificates of a real ES9+
//! exchange (lpac + YggdraSIM software eUICC against osmo-smdpp, see
//! tests/vectors/SOURCES.md). None of these bytes were made by us, so they
//! check our plain-format (5F37) ECDSA and our chain validation against
//! other implementations.
//!
//! The signed data follows SGP.22 §5.7.13 (serverSignature1 over
//! serverSigned1, euiccSignature1 over euiccSigned1), §5.7.5
//! (smdpSignature2 over smdpSigned2 || euiccSignature1 TLV, euiccSignature2
//! over euiccSigned2 || smdpSignature2 TLV) and §5.7.6 / §5.7.10
//! (euiccSignPIR over profileInstallationResultData,
//! euiccNotificationSignature over tbsOtherNotification), always over the
//! bytes as received.

use base64::Engine;
use serde_json::Value;
use smdpplus::crypto::ecdsa::{PublicKey, Signature};
use smdpplus::pki::ci::CiSet;
use smdpplus::pki::euicc::EuiccValidator;
use std::path::Path;

const CAPTURE: &str = include_str!("../vectors/lpac-yggdrasim-osmo-smdpp.json");
/// 2025-06-01T00:00:00Z, inside the capture certificates' validity.
const NOW: i64 = 1_748_736_000;

fn exchange(i: usize) -> Value {
    let v: Value = serde_json::from_str(CAPTURE).unwrap();
    v["exchanges"][i].clone()
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// A BER-TLV: (tag bytes, whole TLV, value).
fn tlv(buf: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut i = 1;
    if buf[0] & 0x1F == 0x1F {
        while buf[i] & 0x80 != 0 {
            i += 1;
        }
        i += 1;
    }
    let tag_end = i;
    let mut len = usize::from(buf[i]);
    i += 1;
    if len & 0x80 != 0 {
        let n = len & 0x7F;
        len = buf[i..i + n]
            .iter()
            .fold(0, |acc, b| acc << 8 | usize::from(*b));
        i += n;
    }
    (&buf[..tag_end], &buf[..i + len], &buf[i..i + len])
}

/// The TLVs of a constructed value, in order.
fn children(mut value: &[u8]) -> Vec<(&[u8], &[u8], &[u8])> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let t = tlv(value);
        value = &value[t.1.len()..];
        out.push(t);
    }
    out
}

fn sig(tlv_bytes: &[u8]) -> Signature {
    Signature::from_tlv(tlv_bytes).unwrap()
}

/// BF38 -> A0 { euiccSigned1, 5F37 euiccSignature1, euiccCertificate,
/// eumCertificate }.
fn authenticate_server_response() -> Vec<Vec<u8>> {
    let bf38 = b64(&exchange(1)["request"]["authenticateServerResponse"]);
    let (tag, _, value) = tlv(&bf38);
    assert_eq!(tag, [0xBF, 0x38]);
    let (tag, _, ok) = tlv(value);
    assert_eq!(tag, [0xA0], "authenticateResponseOk");
    children(ok).iter().map(|c| c.1.to_vec()).collect()
}

fn validator() -> EuiccValidator {
    let cis =
        CiSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/sgp26/CI")).unwrap();
    EuiccValidator::new(cis)
}

#[test]
fn server_signature1_from_osmo_smdpp() {
    let r = &exchange(0)["response"];
    let dpauth = PublicKey::from_certificate_der(&b64(&r["serverCertificate"])).unwrap();
    let signed = b64(&r["serverSigned1"]);
    dpauth
        .verify(&signed, &sig(&b64(&r["serverSignature1"])))
        .unwrap();
    let mut tampered = signed.clone();
    tampered[5] ^= 1;
    assert!(dpauth
        .verify(&tampered, &sig(&b64(&r["serverSignature1"])))
        .is_err());
    // euiccCiPKIdToBeUsed is `04 14 || SKI of the NIST test CI`.
    assert_eq!(
        hex::encode_upper(b64(&r["euiccCiPKIdToBeUsed"])),
        "0414F54172BDF98A95D65CBEB88A38A1C11D800A85C3"
    );
}

#[test]
fn yggdrasim_chain_and_euicc_signature1() {
    let parts = authenticate_server_response();
    assert_eq!(parts.len(), 4);
    let verified = validator().validate(&parts[3], &parts[2], NOW).unwrap();
    assert_eq!(verified.eid().as_str(), "89049032123451234512345678901234");
    assert_eq!(
        verified.ci_pkid().to_string(),
        "F54172BDF98A95D65CBEB88A38A1C11D800A85C3"
    );
    // euiccSignature1 over euiccSigned1 exactly as received.
    verified.verify(&parts[0], &sig(&parts[1])).unwrap();
    assert!(verified.verify(&parts[0][1..], &sig(&parts[1])).is_err());
}

#[test]
fn smdp_signature2_and_euicc_signature2() {
    let parts = authenticate_server_response();
    let euicc_signature1 = &parts[1];
    let r = &exchange(1)["response"];
    let dppb = PublicKey::from_certificate_der(&b64(&r["smdpCertificate"])).unwrap();
    let smdp_signature2 = b64(&r["smdpSignature2"]);
    let mut signed = b64(&r["smdpSigned2"]);
    signed.extend_from_slice(euicc_signature1);
    dppb.verify(&signed, &sig(&smdp_signature2)).unwrap();

    // BF21 -> A0 { euiccSigned2, 5F37 euiccSignature2 }
    let bf21 = b64(&exchange(2)["request"]["prepareDownloadResponse"]);
    let (tag, _, value) = tlv(&bf21);
    assert_eq!(tag, [0xBF, 0x21]);
    let (_, _, ok) = tlv(value);
    let ok = children(ok);
    let mut signed = ok[0].1.to_vec();
    signed.extend_from_slice(&smdp_signature2);
    let euicc = validator().validate(&parts[3], &parts[2], NOW).unwrap();
    euicc.verify(&signed, &sig(ok[1].1)).unwrap();
}

#[test]
fn notification_signatures() {
    let euicc = {
        let parts = authenticate_server_response();
        validator().validate(&parts[3], &parts[2], NOW).unwrap()
    };
    // BF37 ProfileInstallationResult { BF27 data, 5F37 euiccSignPIR }
    let bf37 = b64(&exchange(3)["request"]["pendingNotification"]);
    let (tag, _, value) = tlv(&bf37);
    assert_eq!(tag, [0xBF, 0x37]);
    let c = children(value);
    assert_eq!(c[0].0, [0xBF, 0x27]);
    euicc.verify(c[0].1, &sig(c[1].1)).unwrap();

    // OtherSignedNotification { BF2F, 5F37, euiccCertificate, eumCertificate }
    let v = validator();
    for i in 4..=6 {
        let n = b64(&exchange(i)["request"]["pendingNotification"]);
        let (tag, _, value) = tlv(&n);
        assert_eq!(tag, [0x30]);
        let c = children(value);
        assert_eq!(c[0].0, [0xBF, 0x2F]);
        let signer = v.validate(c[3].1, c[2].1, NOW).unwrap();
        signer.verify(c[0].1, &sig(c[1].1)).unwrap();
    }
    // Same EUM each time: one signature check for three notifications.
    assert_eq!(v.eum_signature_checks(), 1);
}
