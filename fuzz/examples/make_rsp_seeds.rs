//! Writes the seed corpus of the `rsp_decode` target: the eUICC-made
//! values of the ES9+ capture in `tests/vectors/` (whole messages and the
//! parts nested in them), the SGP.26 test certificates, and built values
//! for the alternatives the capture lacks (error answers, CancelSession).
//!
//! cargo run --manifest-path fuzz/Cargo.toml --example make_rsp_seeds -- fuzz/seeds/rsp_decode
//!
//! Each file is the target's selector byte (its index in `KINDS` of
//! `fuzz_targets/rsp_decode.rs`) followed by the DER; every seed is checked
//! to decode and to re-encode to itself before it is written.

use base64::Engine;
use serde_json::Value;
use smdpplus::asn1::der::DerCodec;
use smdpplus::asn1::rsp::*;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

const CAPTURE: &str = include_str!("../../tests/vectors/lpac-yggdrasim-osmo-smdpp.json");

// Selector bytes: must match `KINDS` in fuzz_targets/rsp_decode.rs.
const AUTHENTICATE_SERVER_RESPONSE: u8 = 0;
const AUTHENTICATE_RESPONSE_OK: u8 = 1;
const EUICC_SIGNED1: u8 = 2;
const CTX_PARAMS1: u8 = 3;
const EUICC_INFO1: u8 = 4;
const EUICC_INFO2: u8 = 5;
const DEVICE_INFO: u8 = 6;
const PREPARE_DOWNLOAD_RESPONSE: u8 = 7;
const EUICC_SIGNED2: u8 = 8;
const PENDING_NOTIFICATION: u8 = 9;
const PROFILE_INSTALLATION_RESULT: u8 = 10;
const OTHER_SIGNED_NOTIFICATION: u8 = 11;
const NOTIFICATION_METADATA: u8 = 12;
const CANCEL_SESSION_RESPONSE: u8 = 13;
const EUICC_CANCEL_SESSION_SIGNED: u8 = 14;
const CERTIFICATE: u8 = 15;

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "seeds/rsp_decode".into()),
    );
    std::fs::create_dir_all(&out).expect("create the output directory");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let capture: Value = serde_json::from_str(CAPTURE).expect("capture JSON");
    let request = |i: usize, field: &str| -> Vec<u8> {
        let s = capture["exchanges"][i]["request"][field]
            .as_str()
            .unwrap_or_else(|| panic!("exchange {i} has no {field}"));
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
    };

    // InitiateAuthentication: euiccInfo1.
    seed::<EuiccInfo1>(&out, "euiccInfo1", EUICC_INFO1, &request(0, "euiccInfo1"));

    // AuthenticateClient: BF38 and everything inside it.
    let bf38 = request(1, "authenticateServerResponse");
    let AuthenticateServerResponse::Ok(ok) =
        seed::<AuthenticateServerResponse>(&out, "bf38", AUTHENTICATE_SERVER_RESPONSE, &bf38)
    else {
        panic!("the captured BF38 is not the Ok alternative");
    };
    seed::<AuthenticateResponseOk>(&out, "bf38-ok", AUTHENTICATE_RESPONSE_OK, &ok.to_der());
    let signed1 = seed::<EuiccSigned1>(&out, "euiccSigned1", EUICC_SIGNED1, ok.euicc_signed1.raw());
    seed::<EuiccInfo2>(
        &out,
        "euiccInfo2",
        EUICC_INFO2,
        &signed1.euicc_info2.to_der(),
    );
    seed::<CtxParams1>(
        &out,
        "ctxParams1",
        CTX_PARAMS1,
        &signed1.ctx_params1.to_der(),
    );
    if let CtxParams1::CommonAuthentication(c) = &signed1.ctx_params1 {
        seed::<DeviceInfo>(&out, "deviceInfo", DEVICE_INFO, &c.device_info.to_der());
    }
    certificate(&out, "cert-eum-captured", &ok.eum_certificate);
    certificate(&out, "cert-euicc-captured", &ok.euicc_certificate);
    for name in [
        "EUM/CERT_EUM_ECDSA_BRP.der",
        "eUICC/CERT_EUICC_ECDSA_BRP.der",
    ] {
        let der = std::fs::read(root.join("certs/sgp26").join(name)).expect("SGP.26 certificate");
        let file = name
            .split('/')
            .next_back()
            .unwrap_or(name)
            .trim_end_matches(".der");
        certificate(&out, &format!("cert-{file}"), &der);
    }

    // GetBoundProfilePackage: BF21 and euiccSigned2.
    let bf21 = request(2, "prepareDownloadResponse");
    let PrepareDownloadResponse::Ok(pd) =
        seed::<PrepareDownloadResponse>(&out, "bf21", PREPARE_DOWNLOAD_RESPONSE, &bf21)
    else {
        panic!("the captured BF21 is not the Ok alternative");
    };
    seed::<EuiccSigned2>(&out, "euiccSigned2", EUICC_SIGNED2, pd.euicc_signed2.raw());

    // HandleNotification: a PIR and three other signed notifications.
    for i in 3..=6 {
        let der = request(i, "pendingNotification");
        let n = seed::<PendingNotification>(
            &out,
            &format!("pendingNotification-{i}"),
            PENDING_NOTIFICATION,
            &der,
        );
        match &n {
            PendingNotification::ProfileInstallationResult(_) => {
                seed::<ProfileInstallationResult>(&out, "bf37", PROFILE_INSTALLATION_RESULT, &der);
            }
            PendingNotification::OtherSignedNotification(_) => {
                seed::<OtherSignedNotification>(
                    &out,
                    &format!("otherSignedNotification-{i}"),
                    OTHER_SIGNED_NOTIFICATION,
                    &der,
                );
            }
        }
        seed::<NotificationMetadata>(
            &out,
            &format!("notificationMetadata-{i}"),
            NOTIFICATION_METADATA,
            &n.notification_metadata().to_der(),
        );
    }

    // What the capture lacks.
    let transaction_id = TransactionId::from_hex("0102030405060708090A0B0C0D0E0F10").expect("hex");
    let error = AuthenticateServerResponse::Error(AuthenticateResponseError {
        transaction_id: transaction_id.clone(),
        authenticate_error_code: AuthenticateErrorCode::Other(99),
    });
    seed::<AuthenticateServerResponse>(
        &out,
        "bf38-error",
        AUTHENTICATE_SERVER_RESPONSE,
        &error.to_der(),
    );
    let error = PrepareDownloadResponse::Error(PrepareDownloadResponseError {
        transaction_id: transaction_id.clone(),
        download_error_code: DownloadErrorCode::InvalidSignature,
    });
    seed::<PrepareDownloadResponse>(
        &out,
        "bf21-error",
        PREPARE_DOWNLOAD_RESPONSE,
        &error.to_der(),
    );
    let cancel_signed = EuiccCancelSessionSigned {
        transaction_id,
        smdp_oid: "2.999.10".parse().expect("OID"),
        reason: CancelSessionReason::PprNotAllowed,
    };
    seed::<EuiccCancelSessionSigned>(
        &out,
        "euiccCancelSessionSigned",
        EUICC_CANCEL_SESSION_SIGNED,
        &cancel_signed.to_der(),
    );
    let cancel = CancelSessionResponse::Ok(CancelSessionResponseOk {
        euicc_cancel_session_signed: Signed::new(cancel_signed),
        euicc_cancel_session_signature: EcdsaSignature([0x42; 64]),
    });
    seed::<CancelSessionResponse>(&out, "bf41-ok", CANCEL_SESSION_RESPONSE, &cancel.to_der());
    let cancel = CancelSessionResponse::Error(CancelSessionErrorCode::InvalidTransactionId);
    seed::<CancelSessionResponse>(
        &out,
        "bf41-error",
        CANCEL_SESSION_RESPONSE,
        &cancel.to_der(),
    );
}

/// Checks that `der` decodes as a `T` and re-encodes to itself, writes
/// `selector || der` to `dir/name.der`, and returns the value.
fn seed<T: DerCodec + Debug>(dir: &Path, name: &str, selector: u8, der: &[u8]) -> T {
    let v = T::from_der(der).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(v.to_der(), der, "{name} does not round-trip");
    write(dir, name, selector, der);
    v
}

fn certificate(dir: &Path, name: &str, der: &[u8]) {
    smdpplus::crypto::ecdsa::PublicKey::from_certificate_der(der)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    write(dir, name, CERTIFICATE, der);
}

fn write(dir: &Path, name: &str, selector: u8, der: &[u8]) {
    let mut bytes = Vec::with_capacity(der.len() + 1);
    bytes.push(selector);
    bytes.extend_from_slice(der);
    std::fs::write(dir.join(format!("{name}.der")), &bytes).expect("write seed");
    println!("{name}: selector {selector}, {} bytes of DER", der.len());
}
