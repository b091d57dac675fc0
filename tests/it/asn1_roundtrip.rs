//! Round trips and known answers for the data objects the SM-DP+ encodes
//! (ServerSigned1, SmdpSigned2, StoreMetadataRequest, the BPP and its ES8+
//! commands) and for the alternatives the reference capture lacks.

use base64::Engine;
use proptest::prelude::*;
use smdpplus::asn1::der::{Tag, Writer};
use smdpplus::asn1::rsp::*;
use smdpplus::asn1::Asn1Error;

use crate::asn1_samples as samples;

const CAPTURE: &str = include_str!("../vectors/lpac-yggdrasim-osmo-smdpp.json");

fn capture_field(n: usize, side: &str, key: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(CAPTURE).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["exchanges"][n][side][key].as_str().unwrap())
        .unwrap()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Built from values, our encoder reproduces osmo-smdpp's bytes exactly.
#[test]
fn encoder_matches_osmo_smdpp() {
    let asr = AuthenticateServerResponse::decode(&capture_field(
        1,
        "request",
        "authenticateServerResponse",
    ))
    .unwrap();
    let AuthenticateServerResponse::Ok(ok) = asr else {
        panic!("ok")
    };
    let server_challenge = ok.euicc_signed1.value().server_challenge;
    let euicc_challenge: [u8; 16] = capture_field(0, "request", "euiccChallenge")
        .try_into()
        .unwrap();

    let server_signed1 = ServerSigned1 {
        transaction_id: samples::transaction_id(),
        euicc_challenge,
        server_address: "testsmdpplus1.example.com".into(),
        server_challenge,
    };
    assert_eq!(
        server_signed1.encode(),
        capture_field(0, "response", "serverSigned1")
    );

    let smdp_signed2 = SmdpSigned2 {
        transaction_id: samples::transaction_id(),
        cc_required_flag: false,
        bpp_euicc_otpk: None,
    };
    assert_eq!(
        smdp_signed2.encode(),
        capture_field(1, "response", "smdpSigned2")
    );

    let nci = |op| NotificationConfigurationInformation {
        profile_management_operation: NotificationEvent::from_operations(&[op]),
        notification_address: "testsmdpplus1.example.com".into(),
    };
    let metadata = StoreMetadataRequest {
        iccid: samples::iccid(),
        service_provider_name: "OsmocomSPN".into(),
        profile_name: "TS48V2-SAIP2-1-BERTLV-UNIQUE".into(),
        icon_type: None,
        icon: None,
        profile_class: Some(ProfileClass::Operational),
        notification_configuration_info: Some(vec![
            nci(NotificationOperation::Enable),
            nci(NotificationOperation::Disable),
            nci(NotificationOperation::Delete),
        ]),
        profile_owner: None,
        profile_policy_rules: None,
    };
    assert_eq!(
        metadata.encode(),
        capture_field(1, "response", "profileMetadata")
    );
}

/// Plaintexts of a third-party SM-DP+'s BPP (shared testdata
/// `vectors/bsp_mode51_ciphering.json`): ConfigureISDP, StoreMetadata and
/// ReplaceSessionKeys decode and re-encode exactly.
#[test]
fn third_party_es8_commands() {
    let bf24 = h("bf2400");
    let c = ConfigureIsdpRequest::decode(&bf24).unwrap();
    assert_eq!(c, ConfigureIsdpRequest::default());
    assert_eq!(c.encode(), bf24);

    let bf25 = h("bf252d5a0a98001032547698103214910947534d415f54455354921147534d415f544553545f50524f46494c45950100");
    let m = StoreMetadataRequest::decode(&bf25).unwrap();
    assert_eq!(m.encode(), bf25);
    assert_eq!(m.iccid.to_iccid().unwrap().as_str(), "89000123456789012341");
    assert_eq!(m.service_provider_name, "GSMA_TEST");
    assert_eq!(m.profile_name, "GSMA_TEST_PROFILE");
    assert_eq!(m.profile_class, Some(ProfileClass::Test));

    let bf26 = h("bf26368010000102030405060708090a0b0c0d0e0f8110010102030405060708090a0b0c0d0e0f8210020102030405060708090a0b0c0d0e0f");
    let r = ReplaceSessionKeysRequest::decode(&bf26).unwrap();
    assert_eq!(r.encode(), bf26);
    assert_eq!(
        r.initial_mac_chaining_value,
        h("000102030405060708090a0b0c0d0e0f")
    );
    assert_eq!(r.ppk_enc, h("010102030405060708090a0b0c0d0e0f"));
    assert_eq!(r.ppk_cmac, h("020102030405060708090a0b0c0d0e0f"));
    assert_eq!(format!("{r:?}"), "ReplaceSessionKeysRequest { .. }");

    // The protected segments of the same trace slot into the BPP container
    // unchanged: the container writes the exact TLVs the BSP produced.
    let seg87 = h("8718f6fe031e4b9cfe87c8e1e62f3fde85c49412d7722a6a2d89");
    let seg88 = h("8838bf252d5a0a98001032547698103214910947534d415f54455354921147534d415f544553545f50524f46494c459501008a62cc9adbb5ccbc");
    let seg87b = h("8748a14c800a001992351cd46ad2945654674369701d82b7b46567652bc8fbed234939fc57fba748015525fd6c651e9d3d1330652d42a0cfad950e912122af4ec5362d3c0bc535729c40");
    let bpp = BoundProfilePackage {
        initialise_secure_channel_request: samples::initialise_secure_channel(),
        first_sequence_of_87: vec![seg87[2..].to_vec()],
        sequence_of_88: vec![seg88[2..].to_vec()],
        second_sequence_of_87: Some(vec![seg87b[2..].to_vec()]),
        sequence_of_86: vec![vec![0x5A; 1016]],
    };
    let der = bpp.encode();
    let find = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    let mut a0 = vec![0xA0, seg87.len() as u8];
    a0.extend_from_slice(&seg87);
    let mut a1 = vec![0xA1, seg88.len() as u8];
    a1.extend_from_slice(&seg88);
    let mut a2 = vec![0xA2, seg87b.len() as u8];
    a2.extend_from_slice(&seg87b);
    assert!(find(&a0) && find(&a1) && find(&a2));
    // A full 1020-octet 86 TLV (1016-octet value): 86 82 03F8.
    assert!(find(&[0xA3, 0x82, 0x03, 0xFC, 0x86, 0x82, 0x03, 0xF8]));
    assert_eq!(BoundProfilePackage::decode(&der).unwrap(), bpp);
    // The 88 segment starts with the StoreMetadataRequest in clear.
    assert_eq!(&seg88[2..2 + bf25.len()], &bf25[..]);
}

/// Exact encodings of the alternatives the capture lacks (hex worked out by
/// hand from RSPDefinitions with AUTOMATIC TAGS).
#[test]
fn error_and_cancel_known_answers() {
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "bf3817a1158010031a2a1375f749478e737a2df774e4a8020101",
            samples::authenticate_error().encode(),
        ),
        (
            "bf2117a1158010031a2a1375f749478e737a2df774e4a8020102",
            samples::download_error().encode(),
        ),
        ("bf4103810105", samples::cancel_error().encode()),
        (
            "bf4161a05f301a8010031a2a1375f749478e737a2df774e4a8810388370a8201005f3740\
             11111111111111111111111111111111111111111111111111111111111111111111111111111111\
             111111111111111111111111111111111111111111111111",
            samples::cancel_ok().encode(),
        ),
    ];
    for (hex_str, der) in cases {
        assert_eq!(hex::encode(&der), hex_str.replace(' ', ""));
    }
    assert_eq!(
        AuthenticateServerResponse::decode(&samples::authenticate_error().encode()),
        Ok(samples::authenticate_error())
    );
    assert_eq!(
        PrepareDownloadResponse::decode(&samples::download_error().encode()),
        Ok(samples::download_error())
    );
    let cancel = CancelSessionResponse::decode(&samples::cancel_ok().encode()).unwrap();
    let CancelSessionResponse::Ok(ok) = &cancel else {
        panic!("ok")
    };
    assert_eq!(
        hex::encode(ok.euicc_cancel_session_signed.raw()),
        "301a8010031a2a1375f749478e737a2df774e4a8810388370a820100"
    );
    let signed = ok.euicc_cancel_session_signed.value();
    assert_eq!(signed.smdp_oid.to_string(), "2.999.10");
    assert_eq!(signed.reason, CancelSessionReason::EndUserRejection);
    assert_eq!(
        CancelSessionResponse::decode(&h("bf4103810105")),
        Ok(CancelSessionResponse::Error(
            CancelSessionErrorCode::InvalidTransactionId
        ))
    );
    // Unnamed codes survive a round trip.
    let odd = h("bf410381010a");
    assert_eq!(
        CancelSessionResponse::decode(&odd).unwrap(),
        CancelSessionResponse::Error(CancelSessionErrorCode::Other(10))
    );
    assert_eq!(CancelSessionResponse::decode(&odd).unwrap().encode(), odd);
}

/// What each signature covers, byte by byte (SGP.22 §5.5.1, §5.7.5).
#[test]
fn signed_data_layouts() {
    let isc = samples::initialise_secure_channel();
    let mut euicc_otpk = vec![0x04];
    euicc_otpk.extend_from_slice(&[0x55; 64]);
    let mut expected =
        h("8201018010031a2a1375f749478e737a2df774e4a8a61080018881011084088080808080808080");
    expected.extend_from_slice(&[0x5F, 0x49, 0x41]);
    expected.extend_from_slice(&isc.smdp_otpk);
    expected.extend_from_slice(&[0x5F, 0x49, 0x41]);
    expected.extend_from_slice(&euicc_otpk);
    assert_eq!(isc.signed_data(&euicc_otpk), expected);
    // The BF23 itself: the same TLVs then smdpSign.
    let der = isc.encode();
    assert_eq!(&der[..4], &[0xBF, 0x23, 0x81, 0xAE]);
    assert_eq!(
        &der[4..4 + expected.len() - 67],
        &expected[..expected.len() - 67]
    );

    let s2 = SmdpSigned2 {
        transaction_id: samples::transaction_id(),
        cc_required_flag: true,
        bpp_euicc_otpk: Some(euicc_otpk.clone()),
    };
    let sig1 = EcdsaSignature([0x66; 64]);
    let data = s2.signed_data(&sig1);
    assert_eq!(&data[..data.len() - 67], &s2.encode()[..]);
    assert_eq!(&data[data.len() - 67..data.len() - 64], &[0x5F, 0x37, 0x40]);
    // ccRequiredFlag is a universal BOOLEAN, TRUE = FF.
    assert!(s2.encode().windows(3).any(|w| w == [0x01, 0x01, 0xFF]));
}

#[test]
fn strictness_on_sequences() {
    // ServerSigned1 with a trailing extra element: rejected, named.
    let mut s = capture_field(0, "response", "serverSigned1");
    s[1] += 3;
    s.extend_from_slice(&[0x85, 0x01, 0x00]);
    assert_eq!(
        ServerSigned1::decode(&s),
        Err(Asn1Error::UnexpectedElement {
            context: "ServerSigned1",
            found: Tag::new(0x85)
        })
    );
    // SmdpSigned2 with BOOLEAN 01 (BER, not DER).
    let bad = h("30158010031a2a1375f749478e737a2df774e4a8010101");
    assert!(SmdpSigned2::decode(&bad).is_err());
    // A missing mandatory element.
    assert_eq!(
        SmdpSigned2::decode(&h("30128010031a2a1375f749478e737a2df774e4a8")),
        Err(Asn1Error::MissingElement {
            context: "SmdpSigned2",
            expected: Tag::BOOLEAN
        })
    );
    // TransactionId of 17 octets.
    let mut long = vec![0x30, 0x16, 0x80, 0x11];
    long.extend_from_slice(&[0; 17]);
    long.extend_from_slice(&[0x01, 0x01, 0x00]);
    assert!(SmdpSigned2::decode(&long).is_err());
    // CtxParams1: an unknown [n] alternative is kept, a universal tag is not.
    let other = h("a2020500");
    assert_eq!(
        CtxParams1::decode(&other),
        Ok(CtxParams1::Other(other.clone()))
    );
    assert!(CtxParams1::decode(&h("30020500")).is_err());
    // Extensions after the v2.2 components are kept, in order.
    let info1 = h("bf2011820302020ca9020400aa0204009f7f0101");
    let decoded = EuiccInfo1::decode(&info1).unwrap();
    assert_eq!(decoded.extensions, vec![h("9f7f0101")]);
    assert_eq!(decoded.encode(), info1);
}

fn txid() -> impl Strategy<Value = TransactionId> {
    prop::collection::vec(any::<u8>(), 1..=16).prop_map(|v| TransactionId::new(&v).unwrap())
}

fn sig() -> impl Strategy<Value = EcdsaSignature> {
    (
        prop::array::uniform32(any::<u8>()),
        prop::array::uniform32(any::<u8>()),
    )
        .prop_map(|(r, s)| {
            let mut rs = [0u8; 64];
            rs[..32].copy_from_slice(&r);
            rs[32..].copy_from_slice(&s);
            EcdsaSignature(rs)
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn oid() -> impl Strategy<Value = Oid> {
    (
        0u64..=2,
        0u64..40,
        prop::collection::vec(any::<u64>(), 0..5),
    )
        .prop_map(|(a, b, rest)| {
            let mut arcs = vec![a, b];
            arcs.extend(rest);
            Oid::from_arcs(&arcs).unwrap()
        })
}

fn bits() -> impl Strategy<Value = BitString> {
    prop::collection::vec(0usize..40, 0..5).prop_map(|b| BitString::from_named_bits(&b))
}

/// A primitive TLV with a context tag, as an opaque extension element.
fn raw_tlv() -> impl Strategy<Value = Vec<u8>> {
    (0u32..30, bytes(40)).prop_map(|(n, v)| {
        let mut w = Writer::new();
        w.tlv(Tag::context(n, false), &v);
        w.into_bytes()
    })
}

fn certificate() -> impl Strategy<Value = Vec<u8>> {
    bytes(300).prop_map(|v| {
        let mut w = Writer::new();
        w.tlv(Tag::SEQUENCE, &v);
        w.into_bytes()
    })
}

fn store_metadata() -> impl Strategy<Value = StoreMetadataRequest> {
    let nci = (bits(), "\\PC{0,30}").prop_map(|(b, a)| NotificationConfigurationInformation {
        profile_management_operation: NotificationEvent(b),
        notification_address: a,
    });
    let owner = (
        prop::array::uniform3(any::<u8>()),
        prop::option::of(bytes(8)),
        prop::option::of(bytes(8)),
    )
        .prop_map(|(mcc_mnc, gid1, gid2)| OperatorId {
            mcc_mnc,
            gid1,
            gid2,
        });
    (
        prop::array::uniform10(any::<u8>()),
        "\\PC{0,32}",
        "\\PC{0,64}",
        prop::option::of(any::<i64>().prop_map(IconType::from_i64)),
        prop::option::of(bytes(1025)),
        prop::option::of((0i64..4).prop_map(ProfileClass::from_i64)),
        prop::option::of(prop::collection::vec(nci, 0..4)),
        prop::option::of(owner),
        prop::option::of(bits()),
    )
        .prop_map(
            |(iccid, spn, name, icon_type, icon, class, nci, owner, ppr)| StoreMetadataRequest {
                iccid: IccidBcd(iccid),
                service_provider_name: spn,
                profile_name: name,
                icon_type,
                icon,
                profile_class: class,
                notification_configuration_info: nci,
                profile_owner: owner,
                profile_policy_rules: ppr,
            },
        )
}

fn initialise_secure_channel() -> impl Strategy<Value = InitialiseSecureChannelRequest> {
    (
        any::<i64>().prop_map(RemoteOpId::from_i64),
        txid(),
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 1..=16),
        ),
        bytes(100),
        sig(),
    )
        .prop_map(
            |(remote_op_id, transaction_id, (kt, kl, host), otpk, sign)| {
                InitialiseSecureChannelRequest {
                    remote_op_id,
                    transaction_id,
                    control_ref_template: ControlRefTemplate {
                        key_type: kt,
                        key_len: kl,
                        host_id: host,
                    },
                    smdp_otpk: otpk,
                    smdp_sign: sign,
                }
            },
        )
}

fn notification_metadata() -> impl Strategy<Value = NotificationMetadata> {
    (
        any::<i64>(),
        bits(),
        "\\PC{0,30}",
        prop::option::of(prop::array::uniform10(any::<u8>())),
        prop::collection::vec(raw_tlv(), 0..2),
    )
        .prop_map(|(seq, ops, addr, iccid, ext)| NotificationMetadata {
            seq_number: seq,
            profile_management_operation: NotificationEvent(ops),
            notification_address: addr,
            iccid: iccid.map(IccidBcd),
            extensions: ext,
        })
}

fn pending_notification() -> impl Strategy<Value = PendingNotification> {
    let final_result = prop_oneof![
        (
            bytes(17).prop_filter("AID is 5..16", |a| a.len() >= 5),
            bytes(50)
        )
            .prop_map(|(aid, sima_response)| FinalResult::Success(SuccessResult {
                aid,
                sima_response
            })),
        (any::<i64>(), any::<i64>(), prop::option::of(bytes(20))).prop_map(|(c, r, s)| {
            FinalResult::Error(ErrorResult {
                bpp_command_id: BppCommandId::from_i64(c),
                error_reason: ErrorReason::from_i64(r),
                sima_response: s,
            })
        }),
    ];
    let pir = (
        txid(),
        notification_metadata(),
        prop::option::of(oid()),
        final_result,
        sig(),
    )
        .prop_map(|(t, m, o, f, s)| {
            PendingNotification::ProfileInstallationResult(ProfileInstallationResult {
                profile_installation_result_data: Signed::new(ProfileInstallationResultData {
                    transaction_id: t,
                    notification_metadata: m,
                    smdp_oid: o,
                    final_result: f,
                    extensions: vec![],
                }),
                euicc_sign_pir: s,
            })
        });
    let other = (notification_metadata(), sig(), certificate(), certificate()).prop_map(
        |(m, s, c1, c2)| {
            PendingNotification::OtherSignedNotification(OtherSignedNotification {
                tbs_other_notification: Signed::new(m),
                euicc_notification_signature: s,
                euicc_certificate: c1,
                eum_certificate: c2,
            })
        },
    );
    prop_oneof![pir, other]
}

fn cancel_session_response() -> impl Strategy<Value = CancelSessionResponse> {
    prop_oneof![
        (txid(), oid(), any::<i64>(), sig()).prop_map(|(t, o, r, s)| {
            CancelSessionResponse::Ok(CancelSessionResponseOk {
                euicc_cancel_session_signed: Signed::new(EuiccCancelSessionSigned {
                    transaction_id: t,
                    smdp_oid: o,
                    reason: CancelSessionReason::from_i64(r),
                }),
                euicc_cancel_session_signature: s,
            })
        }),
        any::<i64>()
            .prop_map(|c| CancelSessionResponse::Error(CancelSessionErrorCode::from_i64(c))),
    ]
}

proptest! {
    #[test]
    fn server_signed1_round_trip(
        t in txid(),
        ec in prop::array::uniform16(any::<u8>()),
        addr in "\\PC{0,40}",
        sc in prop::array::uniform16(any::<u8>()),
    ) {
        let v = ServerSigned1 { transaction_id: t, euicc_challenge: ec, server_address: addr, server_challenge: sc };
        prop_assert_eq!(ServerSigned1::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn smdp_signed2_round_trip(t in txid(), cc in any::<bool>(), otpk in prop::option::of(bytes(70))) {
        let v = SmdpSigned2 { transaction_id: t, cc_required_flag: cc, bpp_euicc_otpk: otpk };
        prop_assert_eq!(SmdpSigned2::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn store_metadata_round_trip(v in store_metadata()) {
        prop_assert_eq!(StoreMetadataRequest::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn initialise_secure_channel_round_trip(v in initialise_secure_channel()) {
        prop_assert_eq!(InitialiseSecureChannelRequest::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn configure_isdp_round_trip(d in prop::option::of((oid(), prop::collection::vec(raw_tlv(), 0..3)))) {
        let v = ConfigureIsdpRequest {
            dp_proprietary_data: d.map(|(dp_oid, additional)| DpProprietaryData { dp_oid, additional }),
        };
        prop_assert_eq!(ConfigureIsdpRequest::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn replace_session_keys_round_trip(a in bytes(32), b in bytes(32), c in bytes(32)) {
        let v = ReplaceSessionKeysRequest { initial_mac_chaining_value: a, ppk_enc: b, ppk_cmac: c };
        prop_assert_eq!(ReplaceSessionKeysRequest::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn bound_profile_package_round_trip(
        isc in initialise_secure_channel(),
        a0 in prop::collection::vec(bytes(50), 0..3),
        a1 in prop::collection::vec(bytes(50), 0..3),
        a2 in prop::option::of(prop::collection::vec(bytes(50), 0..3)),
        a3 in prop::collection::vec(bytes(1100), 0..4),
    ) {
        let v = BoundProfilePackage {
            initialise_secure_channel_request: isc,
            first_sequence_of_87: a0,
            sequence_of_88: a1,
            second_sequence_of_87: a2,
            sequence_of_86: a3,
        };
        prop_assert_eq!(BoundProfilePackage::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn pending_notification_round_trip(v in pending_notification()) {
        let der = v.encode();
        let back = PendingNotification::decode(&der).unwrap();
        prop_assert_eq!(back.signed_data(), v.signed_data());
        prop_assert_eq!(back, v);
    }

    #[test]
    fn cancel_session_round_trip(v in cancel_session_response()) {
        prop_assert_eq!(CancelSessionResponse::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn euicc_info1_round_trip(
        svn in prop::array::uniform3(any::<u8>()),
        ver in prop::collection::vec(bytes(21), 0..3),
        sign in prop::collection::vec(bytes(21), 0..3),
        ext in prop::collection::vec(raw_tlv(), 0..2),
    ) {
        let v = EuiccInfo1 {
            svn: Version(svn),
            ci_pkid_list_for_verification: ver,
            ci_pkid_list_for_signing: sign,
            extensions: ext,
        };
        prop_assert_eq!(EuiccInfo1::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn signature_forms_round_trip(s in sig()) {
        prop_assert_eq!(EcdsaSignature::from_tlv_bytes(&s.to_tlv()), Ok(s));
        prop_assert_eq!(EcdsaSignature::from_x962_der(&s.to_x962_der()), Ok(s));
    }

    #[test]
    fn iccid_round_trip(digits in "[0-9]{19,20}") {
        let iccid = smdpplus::ids::Iccid::parse(&digits).unwrap();
        let bcd = IccidBcd::from_iccid(&iccid);
        prop_assert_eq!(bcd.to_iccid(), Ok(iccid));
    }
}
