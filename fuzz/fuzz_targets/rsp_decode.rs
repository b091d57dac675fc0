//! Coverage-guided fuzzing of the SGP.22 data objects an eUICC (through
//! its LPA) sends to the SM-DP+ over ES9+, and of the certificate chain
//! check that AuthenticateClient runs on the certificates inside them.
//!
//! The first input byte picks what the rest is decoded as (modulo the
//! number of choices, see `KINDS`); the rest is the DER. For every input:
//!
//! - nothing panics (cargo-fuzz builds with overflow checks);
//! - an accepted value re-encodes to exactly the input, and the encoding
//!   decodes back to an equal value: `asn1::rsp` promises both (strict DER,
//!   received extension elements kept, `Signed` writes its kept bytes);
//! - every `Signed<T>` part (the bytes a signature covers) decodes alone to
//!   the same value, and that value re-encodes to exactly the kept bytes,
//!   since the inner type makes the same strict-DER promise;
//! - what ES9+ does next with a decoded value runs too: the signature
//!   conversion, the signed-data concatenations, the ICCID digits, and for
//!   AuthenticateResponseOk the EUM/eUICC chain validation against the
//!   SGP.26 test CIs.
//!
//! The last kind feeds the bytes as a certificate to the validator, both
//! as CERT.EUM (beside the real SGP.26 eUICC certificate) and as
//! CERT.EUICC (beside the real SGP.26 EUM, so the eUICC steps run).

#![no_main]

use std::fmt::Debug;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smdpplus::asn1::der::DerCodec;
use smdpplus::asn1::rsp::*;
use smdpplus::crypto::ecdsa::{PublicKey, Signature};
use smdpplus::pki::ci::CiSet;
use smdpplus::pki::euicc::EuiccValidator;

/// The selector values, in order: `data[0] % KINDS.len()` indexes this.
const KINDS: &[&str] = &[
    "AuthenticateServerResponse",
    "AuthenticateResponseOk",
    "EuiccSigned1",
    "CtxParams1",
    "EuiccInfo1",
    "EuiccInfo2",
    "DeviceInfo",
    "PrepareDownloadResponse",
    "EuiccSigned2",
    "PendingNotification",
    "ProfileInstallationResult",
    "OtherSignedNotification",
    "NotificationMetadata",
    "CancelSessionResponse",
    "EuiccCancelSessionSigned",
    "certificate",
];

const CI_NIST: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_NIST.der");
const CI_BRP: &[u8] = include_bytes!("../../certs/sgp26/CI/CERT_CI_ECDSA_BRP.der");
const EUM_NIST: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_NIST.der");
const EUICC_NIST: &[u8] = include_bytes!("../../certs/sgp26/eUICC/CERT_EUICC_ECDSA_NIST.der");

/// 2025-06-01, inside the validity of the SGP.26 test certificates and of
/// the captured YggdraSIM chain (the time `tests/it/es9_capture.rs` uses).
const NOW: i64 = 1_748_736_000;

fn validator() -> &'static EuiccValidator {
    static V: OnceLock<EuiccValidator> = OnceLock::new();
    V.get_or_init(|| {
        let cis = CiSet::from_der([CI_NIST, CI_BRP]).expect("the SGP.26 CIs load");
        let v = EuiccValidator::new(cis);
        v.validate(EUM_NIST, EUICC_NIST, NOW)
            .expect("the SGP.26 NIST chain validates");
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, der)) = data.split_first() else {
        return;
    };
    match KINDS[selector as usize % KINDS.len()] {
        "AuthenticateServerResponse" => {
            if let Some(v) = round_trip::<AuthenticateServerResponse>(der) {
                match &v {
                    AuthenticateServerResponse::Ok(ok) => authenticate_ok(ok),
                    AuthenticateServerResponse::Error(e) => {
                        let _ = e.authenticate_error_code.to_i64();
                    }
                }
            }
        }
        "AuthenticateResponseOk" => {
            if let Some(ok) = round_trip::<AuthenticateResponseOk>(der) {
                authenticate_ok(&ok);
            }
        }
        "EuiccSigned1" => {
            round_trip::<EuiccSigned1>(der);
        }
        "CtxParams1" => {
            round_trip::<CtxParams1>(der);
        }
        "EuiccInfo1" => {
            if let Some(info) = round_trip::<EuiccInfo1>(der) {
                let _ = (info.svn.major(), info.svn.minor());
            }
        }
        "EuiccInfo2" => {
            round_trip::<EuiccInfo2>(der);
        }
        "DeviceInfo" => {
            round_trip::<DeviceInfo>(der);
        }
        "PrepareDownloadResponse" => {
            if let Some(PrepareDownloadResponse::Ok(ok)) =
                round_trip::<PrepareDownloadResponse>(der)
            {
                signed(&ok.euicc_signed2);
                signature(&ok.euicc_signature2);
                let smdp_signature2 = EcdsaSignature([0x5A; 64]);
                let covered = ok.signed_data(&smdp_signature2);
                assert!(covered.starts_with(ok.euicc_signed2.raw()));
                assert!(covered.ends_with(&smdp_signature2.to_tlv()));
            }
        }
        "EuiccSigned2" => {
            round_trip::<EuiccSigned2>(der);
        }
        "PendingNotification" => {
            if let Some(n) = round_trip::<PendingNotification>(der) {
                match &n {
                    PendingNotification::ProfileInstallationResult(pir) => pir_checks(pir),
                    PendingNotification::OtherSignedNotification(other) => other_checks(other),
                }
                metadata_checks(n.notification_metadata());
                signature(n.signature());
                assert!(!n.signed_data().is_empty());
            }
        }
        "ProfileInstallationResult" => {
            if let Some(pir) = round_trip::<ProfileInstallationResult>(der) {
                pir_checks(&pir);
            }
        }
        "OtherSignedNotification" => {
            if let Some(other) = round_trip::<OtherSignedNotification>(der) {
                other_checks(&other);
            }
        }
        "NotificationMetadata" => {
            if let Some(m) = round_trip::<NotificationMetadata>(der) {
                metadata_checks(&m);
            }
        }
        "CancelSessionResponse" => {
            if let Some(CancelSessionResponse::Ok(ok)) = round_trip::<CancelSessionResponse>(der) {
                signed(&ok.euicc_cancel_session_signed);
                signature(&ok.euicc_cancel_session_signature);
            }
        }
        "EuiccCancelSessionSigned" => {
            round_trip::<EuiccCancelSessionSigned>(der);
        }
        "certificate" => {
            let v = validator();
            let _ = v.validate(der, EUICC_NIST, NOW);
            let _ = v.validate(EUM_NIST, der, NOW);
            let _ = PublicKey::from_certificate_der(der);
        }
        other => unreachable!("no case for {other}"),
    }
});

/// Decodes `der` as a `T`; if accepted, checks both round trips and
/// returns the value.
fn round_trip<T: DerCodec + PartialEq + Debug>(der: &[u8]) -> Option<T> {
    let v = T::from_der(der).ok()?;
    let encoded = v.to_der();
    assert!(
        encoded == der,
        "{}: encode(decode(b)) != b\n  in:  {}\n  out: {}",
        std::any::type_name::<T>(),
        hex(der),
        hex(&encoded)
    );
    let again = T::from_der(&encoded).expect("the encoder's output must decode");
    assert_eq!(again, v, "decode(encode(v)) != v");
    let _ = format!("{v:?}");
    Some(v)
}

/// The kept bytes of a signed part are one strict-DER `T` on their own.
fn signed<T: DerCodec + PartialEq + Debug>(s: &Signed<T>) {
    let alone = round_trip::<T>(s.raw()).expect("the signed bytes decode alone");
    assert_eq!(
        &alone,
        s.value(),
        "the signed bytes decode differently alone"
    );
    assert_eq!(
        s.value().to_der(),
        s.raw(),
        "the signed value re-encodes differently"
    );
}

/// ES9+ turns the received r || s into a signature before verifying.
fn signature(sig: &EcdsaSignature) {
    let _ = Signature::from_raw(sig.as_bytes());
    let tlv = sig.to_tlv();
    assert_eq!(EcdsaSignature::from_tlv_bytes(&tlv).as_ref(), Ok(sig));
}

fn authenticate_ok(ok: &AuthenticateResponseOk) {
    signed(&ok.euicc_signed1);
    signature(&ok.euicc_signature1);
    let _ = validator().validate(&ok.eum_certificate, &ok.euicc_certificate, NOW);
}

fn pir_checks(pir: &ProfileInstallationResult) {
    signed(&pir.profile_installation_result_data);
    signature(&pir.euicc_sign_pir);
    let data = pir.profile_installation_result_data.value();
    metadata_checks(&data.notification_metadata);
    let result = data.final_result.to_der();
    assert_eq!(
        FinalResult::decode(&result).as_ref(),
        Ok(&data.final_result)
    );
}

fn other_checks(other: &OtherSignedNotification) {
    signed(&other.tbs_other_notification);
    signature(&other.euicc_notification_signature);
    metadata_checks(other.tbs_other_notification.value());
}

fn metadata_checks(m: &NotificationMetadata) {
    let ops = m.profile_management_operation.operations();
    let _ = m.profile_management_operation.single();
    let _ = NotificationEvent::from_operations(&ops);
    if let Some(iccid) = &m.iccid {
        if let Ok(parsed) = iccid.to_iccid() {
            assert_eq!(&IccidBcd::from_iccid(&parsed), iccid, "ICCID digits");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
