//! Fuzz-style property tests for every RSP decoder (no cargo-fuzz needed):
//! random bytes and mutations of real messages must never panic, and
//! whatever a decoder accepts must re-encode to exactly the input (strict
//! DER has one encoding per value, so accepting anything else would mean a
//! decoder silently dropped or normalised bytes).

use base64::Engine;
use proptest::prelude::*;
use smdpplus::asn1::rsp::*;

use crate::asn1_samples;

const CAPTURE: &str = include_str!("../vectors/lpac-yggdrasim-osmo-smdpp.json");

/// Runs every decoder on `input`; returns how many accepted it.
fn decode_everything(input: &[u8]) -> usize {
    let mut accepted = 0;
    macro_rules! check {
        ($($t:ty),+ $(,)?) => {$(
            if let Ok(v) = <$t>::decode(input) {
                assert_eq!(v.encode(), input, "{} re-encodes differently", stringify!($t));
                accepted += 1;
            }
        )+};
    }
    check!(
        EuiccInfo1,
        EuiccInfo2,
        DeviceInfo,
        DeviceCapabilities,
        CertificationDataObject,
        ServerSigned1,
        AuthenticateServerResponse,
        AuthenticateResponseOk,
        AuthenticateResponseError,
        EuiccSigned1,
        CtxParams1,
        CtxParamsForCommonAuthentication,
        SmdpSigned2,
        PrepareDownloadResponse,
        PrepareDownloadResponseOk,
        PrepareDownloadResponseError,
        EuiccSigned2,
        InitialiseSecureChannelRequest,
        ControlRefTemplate,
        ConfigureIsdpRequest,
        DpProprietaryData,
        StoreMetadataRequest,
        NotificationConfigurationInformation,
        OperatorId,
        ReplaceSessionKeysRequest,
        BoundProfilePackage,
        NotificationMetadata,
        PendingNotification,
        ProfileInstallationResult,
        ProfileInstallationResultData,
        FinalResult,
        SuccessResult,
        ErrorResult,
        OtherSignedNotification,
        CancelSessionResponse,
        CancelSessionResponseOk,
        EuiccCancelSessionSigned,
    );
    if let Ok(s) = EcdsaSignature::from_tlv_bytes(input) {
        assert_eq!(s.to_tlv(), input);
        accepted += 1;
    }
    if let Ok(s) = EcdsaSignature::from_x962_der(input) {
        // X9.62 DER round-trips through r||s.
        assert_eq!(EcdsaSignature::from_x962_der(&s.to_x962_der()), Ok(s));
    }
    if let Ok(s) = Signed::<EuiccSigned1>::from_der(input) {
        assert_eq!(s.raw(), input);
        assert_eq!(s.value().encode(), input);
    }
    accepted
}

/// Every DER value in the capture, plus a few the capture lacks.
fn seeds() -> Vec<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_str(CAPTURE).expect("JSON");
    let mut out = Vec::new();
    for ex in v["exchanges"].as_array().expect("exchanges") {
        for side in ["request", "response"] {
            let Some(obj) = ex[side].as_object() else {
                continue;
            };
            for (key, value) in obj {
                // The DER data objects (not raw challenges, SKIs or X.509).
                if !matches!(
                    key.as_str(),
                    "euiccInfo1"
                        | "serverSigned1"
                        | "serverSignature1"
                        | "authenticateServerResponse"
                        | "profileMetadata"
                        | "smdpSigned2"
                        | "smdpSignature2"
                        | "prepareDownloadResponse"
                        | "pendingNotification"
                ) {
                    continue;
                }
                if let Some(b) = value
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                {
                    out.push(b);
                }
            }
        }
    }
    out.extend(asn1_samples::encoded());
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Half the positions land in the first 64 bytes, where the structure
    // (tags and lengths) is densest; the rest anywhere.
    let pos = prop_oneof![0usize..64, any::<usize>()];
    prop_oneof![
        (pos.clone(), 1u8..).prop_map(|(p, x)| Mutation::Flip(p, x)),
        (pos.clone(), any::<u8>()).prop_map(|(p, x)| Mutation::Set(p, x)),
        (pos.clone(), any::<u8>()).prop_map(|(p, x)| Mutation::Insert(p, x)),
        pos.clone().prop_map(Mutation::Remove),
        pos.prop_map(Mutation::Truncate),
    ]
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    if input.is_empty() {
        return;
    }
    let len = input.len();
    match *m {
        Mutation::Flip(p, x) => input[p % len] ^= x,
        Mutation::Set(p, x) => input[p % len] = x,
        Mutation::Insert(p, x) => input.insert(p % (len + 1), x),
        Mutation::Remove(p) => {
            input.remove(p % len);
        }
        Mutation::Truncate(p) => input.truncate(p % len),
    }
}

#[test]
fn seeds_decode() {
    // Each seed is accepted by at least one decoder, so the mutation test
    // starts from valid messages.
    for (i, s) in seeds().iter().enumerate() {
        assert!(
            decode_everything(s) > 0,
            "seed {i} ({}) rejected",
            hex::encode(s)
        );
    }
}

proptest! {
    #![proptest_config(crate::common::props::config(2000))]

    #[test]
    fn random_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&input);
    }

    #[test]
    fn random_tlv_shaped_input_never_panics(
        tag in prop::sample::select(vec![
            0x30u16, 0xBF20, 0xBF21, 0xBF22, 0xBF23, 0xBF24, 0xBF25, 0xBF26, 0xBF27,
            0xBF2F, 0xBF36, 0xBF37, 0xBF38, 0xBF41, 0xA0, 0xA1, 0xA2, 0xA6, 0xAC, 0xB7, 0xB8,
        ]),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // A valid outer header around random contents gets past the first
        // check of every decoder.
        let mut input = Vec::new();
        if tag > 0xFF {
            input.extend_from_slice(&tag.to_be_bytes());
        } else {
            input.push(tag as u8);
        }
        let len = body.len();
        if len < 0x80 {
            input.push(len as u8);
        } else if len < 0x100 {
            input.extend_from_slice(&[0x81, len as u8]);
        } else {
            input.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
        input.extend_from_slice(&body);
        decode_everything(&input);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        seed in prop::sample::select(seeds()),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut input = seed;
        for m in &mutations {
            apply(&mut input, m);
        }
        decode_everything(&input);
    }
}
