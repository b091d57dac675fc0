//! Known-answer tests on a real ES9+ exchange (tests/vectors/SOURCES.md):
//! lpac driving the YggdraSIM eUICC against osmo-smdpp. Every eUICC-made
//! value decodes, re-encodes to the received bytes, keeps the signed bytes
//! exactly as received, and its signature verifies with the certificates it
//! came with.

use aws_lc_rs::signature::{
    UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA384_ASN1,
};
use base64::Engine;
use serde_json::Value;
use smdpplus::asn1::der::{BitString, Version};
use smdpplus::asn1::rsp::{
    subject_key_identifier_tlv, AuthenticateServerResponse, CtxParams1, EcdsaSignature,
    EuiccCategory, EuiccInfo1, FinalResult, NotificationOperation, OtherSignedNotification,
    PendingNotification, PrepareDownloadResponse, ProfileClass, ServerSigned1, SmdpSigned2,
    StoreMetadataRequest, TransactionId,
};
use smdpplus::ids::{Eid, Iccid};

const CAPTURE: &str = include_str!("../vectors/lpac-yggdrasim-osmo-smdpp.json");
const TRANSACTION_ID: &str = "031A2A1375F749478E737A2DF774E4A8";
const EID: &str = "89049032123451234512345678901234";
const MATCHING_ID: &str = "TS48V2-SAIP2-1-BERTLV-UNIQUE";
const ICCID: &str = "8949449999999990049";
const SMDP_ADDRESS: &str = "testsmdpplus1.example.com";
const CI_SKI: &str = "f54172bdf98a95d65cbeb88a38a1c11d800a85c3";

fn capture() -> Value {
    serde_json::from_str(CAPTURE).expect("capture is JSON")
}

/// The base64 field `key` of `side` ("request"/"response") of exchange `n`.
fn field(v: &Value, n: usize, side: &str, key: &str) -> Vec<u8> {
    let s = v["exchanges"][n][side][key]
        .as_str()
        .unwrap_or_else(|| panic!("exchange {n} {side}.{key}"));
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

fn text(v: &Value, n: usize, side: &str, key: &str) -> String {
    v["exchanges"][n][side][key]
        .as_str()
        .unwrap_or_else(|| panic!("exchange {n} {side}.{key}"))
        .to_owned()
}

/// The uncompressed EC point of a certificate's public key.
fn public_key(cert_der: &[u8]) -> Vec<u8> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der).expect("certificate");
    assert!(rest.is_empty());
    cert.public_key().subject_public_key.data.to_vec()
}

/// Verifies `sig` over `msg` with the certificate's P-256 key, both with the
/// plain r||s form and with its X9.62 DER conversion.
fn verify(cert_der: &[u8], msg: &[u8], sig: &EcdsaSignature) -> bool {
    let key = public_key(cert_der);
    let fixed = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key)
        .verify(msg, sig.as_bytes())
        .is_ok();
    let asn1 = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key)
        .verify(msg, &sig.to_x962_der())
        .is_ok();
    assert_eq!(fixed, asn1, "r||s and DER forms must agree");
    fixed
}

/// `raw` occurs in `whole` at `offset`: kept bytes are the received bytes.
fn assert_slice_at(whole: &[u8], offset: usize, raw: &[u8]) {
    assert_eq!(&whole[offset..offset + raw.len()], raw);
}

fn eid_of(cert_der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("certificate");
    let attr = cert
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .expect("serialNumber in subject");
    attr.as_str().expect("printable").to_owned()
}

#[test]
fn euicc_info1() {
    let v = capture();
    let bytes = field(&v, 0, "request", "euiccInfo1");
    let info = EuiccInfo1::decode(&bytes).expect("EUICCInfo1");
    assert_eq!(info.encode(), bytes);
    assert_eq!(info.svn, Version::new(2, 6, 0));
    let ski = hex::decode(CI_SKI).unwrap();
    assert_eq!(info.ci_pkid_list_for_verification, vec![ski.clone()]);
    assert_eq!(info.ci_pkid_list_for_signing, vec![ski.clone()]);
    assert!(info.extensions.is_empty());
    // What the SM-DP+ answers as euiccCiPKIdToBeUsed.
    assert_eq!(
        subject_key_identifier_tlv(&ski),
        field(&v, 0, "response", "euiccCiPKIdToBeUsed")
    );
}

#[test]
fn server_signed1_and_signature() {
    let v = capture();
    let bytes = field(&v, 0, "response", "serverSigned1");
    let s = ServerSigned1::decode(&bytes).expect("ServerSigned1");
    assert_eq!(s.encode(), bytes);
    assert_eq!(s.transaction_id.to_hex(), TRANSACTION_ID);
    assert_eq!(
        text(&v, 0, "response", "transactionId"),
        s.transaction_id.to_hex()
    );
    assert_eq!(
        s.euicc_challenge.to_vec(),
        field(&v, 0, "request", "euiccChallenge")
    );
    assert_eq!(s.server_address, SMDP_ADDRESS);
    let sig = EcdsaSignature::from_tlv_bytes(&field(&v, 0, "response", "serverSignature1"))
        .expect("5F37");
    let dpauth = field(&v, 0, "response", "serverCertificate");
    assert!(verify(&dpauth, &bytes, &sig));
}

#[test]
fn authenticate_server_response() {
    let v = capture();
    let bytes = field(&v, 1, "request", "authenticateServerResponse");
    let resp = AuthenticateServerResponse::decode(&bytes).expect("BF38");
    assert_eq!(resp.encode(), bytes);
    let AuthenticateServerResponse::Ok(ok) = resp else {
        panic!("expected authenticateResponseOk");
    };

    // BF38 8205B7 A0 8205B3 | EuiccSigned1: the kept bytes are the
    // received ones, from offset 9.
    let raw = ok.euicc_signed1.raw();
    assert_eq!(&raw[..4], &[0x30, 0x82, 0x01, 0x00]);
    assert_eq!(raw.len(), 260);
    assert_slice_at(&bytes, 9, raw);

    let signed = ok.euicc_signed1.value();
    assert_eq!(signed.encode(), raw);
    assert_eq!(
        signed.transaction_id,
        TransactionId::from_hex(&text(&v, 1, "request", "transactionId")).unwrap()
    );
    assert_eq!(signed.server_address, SMDP_ADDRESS);
    let server_signed1 = ServerSigned1::decode(&field(&v, 0, "response", "serverSigned1")).unwrap();
    assert_eq!(signed.server_challenge, server_signed1.server_challenge);

    // EUICCInfo2: every v2.2 field, plus the v2.3+ extensions kept.
    let i2 = &signed.euicc_info2;
    assert_eq!(i2.profile_version, Version::new(2, 3, 1));
    assert_eq!(i2.svn, Version::new(2, 6, 0));
    assert_eq!(i2.euicc_firmware_ver, Version::new(3, 1, 0));
    assert_eq!(
        hex::encode(&i2.ext_card_resource),
        "810107820302da8083022340"
    );
    assert_eq!(
        i2.uicc_capability,
        BitString::new(6, &[0x68, 0x04, 0xC0]).unwrap()
    );
    assert!(i2.uicc_capability.is_set(1), "usimSupport");
    assert_eq!(i2.ts102241_version, Some(Version::new(3, 3, 0)));
    assert_eq!(i2.globalplatform_version, Some(Version::new(2, 3, 0)));
    assert_eq!(i2.rsp_capability.set_bits(), vec![0, 2, 3]);
    let ski = hex::decode(CI_SKI).unwrap();
    assert_eq!(i2.ci_pkid_list_for_verification, vec![ski.clone()]);
    assert_eq!(i2.ci_pkid_list_for_signing, vec![ski]);
    assert_eq!(i2.euicc_category, Some(EuiccCategory::MediumEuicc));
    assert_eq!(
        i2.forbidden_profile_policy_rules
            .as_ref()
            .map(BitString::set_bits),
        Some(vec![1, 2])
    );
    assert_eq!(i2.pp_version, Version::new(3, 0, 0));
    assert_eq!(i2.sas_accreditation_number, "KN-DN-UP-0327");
    assert_eq!(i2.certification_data_object, None);
    let ext_tags: Vec<u8> = i2.extensions.iter().map(|e| e[0]).collect();
    assert_eq!(ext_tags, vec![0xAF, 0x90, 0xB4]);

    // ctxParams1: the MatchingID lives here, not in the JSON.
    let CtxParams1::CommonAuthentication(ctx) = &signed.ctx_params1 else {
        panic!("expected ctxParamsForCommonAuthentication");
    };
    assert_eq!(ctx.matching_id.as_deref(), Some(MATCHING_ID));
    assert_eq!(ctx.device_info.tac, [0x35, 0x29, 0x06, 0x11]);
    assert_eq!(ctx.device_info.imei, None);
    assert_eq!(ctx.device_info.device_capabilities, Default::default());
    assert!(signed.extensions.is_empty());

    // The EID is the eUICC certificate's subject serialNumber.
    let eid = eid_of(&ok.euicc_certificate);
    assert_eq!(eid, EID);
    assert!(Eid::parse(&eid).is_some());

    // euiccSignature1 over EuiccSigned1 as received, with the eUICC key.
    assert!(verify(&ok.euicc_certificate, raw, &ok.euicc_signature1));
    // Any change to the signed bytes breaks it; so does the wrong key.
    let mut tampered = raw.to_vec();
    tampered[20] ^= 1;
    assert!(!verify(
        &ok.euicc_certificate,
        &tampered,
        &ok.euicc_signature1
    ));
    assert!(!verify(&ok.eum_certificate, raw, &ok.euicc_signature1));

    // The eUICC certificate is signed by the EUM certificate sent with it.
    let (_, euicc) = x509_parser::parse_x509_certificate(&ok.euicc_certificate).unwrap();
    let (_, eum) = x509_parser::parse_x509_certificate(&ok.eum_certificate).unwrap();
    assert!(euicc.verify_signature(Some(eum.public_key())).is_ok());
}

#[test]
fn smdp_signed2_and_signature() {
    let v = capture();
    let bytes = field(&v, 1, "response", "smdpSigned2");
    let s = SmdpSigned2::decode(&bytes).expect("SmdpSigned2");
    assert_eq!(s.encode(), bytes);
    assert_eq!(s.transaction_id.to_hex(), TRANSACTION_ID);
    assert!(!s.cc_required_flag);
    assert_eq!(s.bpp_euicc_otpk, None);

    // smdpSignature2 covers smdpSigned2 || euiccSignature1 (5F37 TLV).
    let asr =
        AuthenticateServerResponse::decode(&field(&v, 1, "request", "authenticateServerResponse"))
            .unwrap();
    let AuthenticateServerResponse::Ok(ok) = asr else {
        panic!("ok")
    };
    let sig = EcdsaSignature::from_tlv_bytes(&field(&v, 1, "response", "smdpSignature2")).unwrap();
    let dppb = field(&v, 1, "response", "smdpCertificate");
    assert!(verify(&dppb, &s.signed_data(&ok.euicc_signature1), &sig));
}

#[test]
fn profile_metadata() {
    // Made by osmo-smdpp, not by us: decoding it checks our tagging against
    // a third-party encoder.
    let v = capture();
    let bytes = field(&v, 1, "response", "profileMetadata");
    let m = StoreMetadataRequest::decode(&bytes).expect("BF25");
    assert_eq!(m.encode(), bytes);
    assert_eq!(m.iccid.to_iccid().unwrap(), Iccid::parse(ICCID).unwrap());
    assert_eq!(m.service_provider_name, "OsmocomSPN");
    assert_eq!(m.profile_name, MATCHING_ID);
    assert_eq!(m.profile_class, Some(ProfileClass::Operational));
    let ops: Vec<_> = m
        .notification_configuration_info
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n.notification_address, SMDP_ADDRESS);
            n.profile_management_operation.single().unwrap()
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            NotificationOperation::Enable,
            NotificationOperation::Disable,
            NotificationOperation::Delete
        ]
    );
}

#[test]
fn prepare_download_response() {
    let v = capture();
    let bytes = field(&v, 2, "request", "prepareDownloadResponse");
    let resp = PrepareDownloadResponse::decode(&bytes).expect("BF21");
    assert_eq!(resp.encode(), bytes);
    let PrepareDownloadResponse::Ok(ok) = resp else {
        panic!("expected downloadResponseOk");
    };
    // BF21 819E A0 819B | EUICCSigned2 from offset 7.
    let raw = ok.euicc_signed2.raw();
    assert_slice_at(&bytes, 7, raw);
    let signed = ok.euicc_signed2.value();
    assert_eq!(signed.encode(), raw);
    assert_eq!(
        signed.transaction_id.to_hex(),
        text(&v, 2, "request", "transactionId")
    );
    assert_eq!(signed.euicc_otpk.len(), 65);
    assert_eq!(signed.euicc_otpk[0], 0x04);
    assert_eq!(signed.hash_cc, None);

    // euiccSignature2 covers euiccSigned2 || smdpSignature2 (5F37 TLV).
    let smdp_signature2 =
        EcdsaSignature::from_tlv_bytes(&field(&v, 1, "response", "smdpSignature2")).unwrap();
    let asr =
        AuthenticateServerResponse::decode(&field(&v, 1, "request", "authenticateServerResponse"))
            .unwrap();
    let AuthenticateServerResponse::Ok(auth) = asr else {
        panic!("ok")
    };
    assert!(verify(
        &auth.euicc_certificate,
        &ok.signed_data(&smdp_signature2),
        &ok.euicc_signature2
    ));
}

#[test]
fn profile_installation_result() {
    let v = capture();
    let bytes = field(&v, 3, "request", "pendingNotification");
    let n = PendingNotification::decode(&bytes).expect("BF37");
    assert_eq!(n.encode(), bytes);
    let PendingNotification::ProfileInstallationResult(pir) = &n else {
        panic!("expected BF37");
    };
    // BF37 81AA | BF27 from offset 4.
    let raw = pir.profile_installation_result_data.raw();
    assert_eq!(&raw[..2], &[0xBF, 0x27]);
    assert_slice_at(&bytes, 4, raw);
    assert_eq!(n.signed_data(), raw);

    let data = pir.profile_installation_result_data.value();
    assert_eq!(data.encode(), raw);
    assert_eq!(data.transaction_id.to_hex(), TRANSACTION_ID);
    // YggdraSIM leaves out smdpOid (mandatory in v2.2).
    assert_eq!(data.smdp_oid, None);
    let meta = &data.notification_metadata;
    assert_eq!(meta.seq_number, 1);
    assert_eq!(
        meta.profile_management_operation.single(),
        Some(NotificationOperation::Install)
    );
    assert_eq!(meta.notification_address, SMDP_ADDRESS);
    assert_eq!(
        meta.iccid.unwrap().to_iccid().unwrap(),
        Iccid::parse(ICCID).unwrap()
    );
    let FinalResult::Success(ok) = &data.final_result else {
        panic!("expected successResult");
    };
    assert_eq!(hex::encode(&ok.aid), "a0000005591010ffffffff8900001300");
    assert_eq!(hex::encode(&ok.sima_response), "3007a0053003800100");

    // euiccSignPIR over BF27 as received, with the key of the session's
    // eUICC certificate (from BF38).
    let asr =
        AuthenticateServerResponse::decode(&field(&v, 1, "request", "authenticateServerResponse"))
            .unwrap();
    let AuthenticateServerResponse::Ok(auth) = asr else {
        panic!("ok")
    };
    assert!(verify(&auth.euicc_certificate, raw, n.signature()));
}

#[test]
fn other_signed_notifications() {
    let v = capture();
    let asr =
        AuthenticateServerResponse::decode(&field(&v, 1, "request", "authenticateServerResponse"))
            .unwrap();
    let AuthenticateServerResponse::Ok(auth) = asr else {
        panic!("ok")
    };
    let expected = [
        (4, 2, NotificationOperation::Enable),
        (5, 3, NotificationOperation::Disable),
        (6, 4, NotificationOperation::Delete),
    ];
    for (exchange, seq, op) in expected {
        let bytes = field(&v, exchange, "request", "pendingNotification");
        let n = PendingNotification::decode(&bytes).expect("pendingNotification");
        assert_eq!(n.encode(), bytes);
        let PendingNotification::OtherSignedNotification(o) = &n else {
            panic!("expected OtherSignedNotification (tag 30)");
        };
        assert_eq!(OtherSignedNotification::decode(&bytes).as_ref(), Ok(o));
        // 30 8204E0 | BF2F from offset 4.
        let raw = o.tbs_other_notification.raw();
        assert_slice_at(&bytes, 4, raw);
        let meta = o.tbs_other_notification.value();
        assert_eq!(meta.encode(), raw);
        assert_eq!(meta.seq_number, seq);
        assert_eq!(meta.profile_management_operation.single(), Some(op));
        assert_eq!(meta.notification_address, SMDP_ADDRESS);
        assert_eq!(
            meta.iccid.unwrap().to_iccid().unwrap(),
            Iccid::parse(ICCID).unwrap()
        );
        assert_eq!(o.euicc_certificate, auth.euicc_certificate);
        assert_eq!(o.eum_certificate, auth.eum_certificate);
        assert_eq!(eid_of(&o.euicc_certificate), EID);
        assert!(verify(
            &o.euicc_certificate,
            raw,
            &o.euicc_notification_signature
        ));
    }
}

/// Every base64 value in the capture that is a DER data object decodes and
/// re-encodes exactly; counts them so a change in the capture is noticed.
#[test]
fn every_value_round_trips() {
    let v = capture();
    let mut euicc_made = 0;
    let mut smdp_made = 0;
    for (n, ex) in v["exchanges"].as_array().unwrap().iter().enumerate() {
        for side in ["request", "response"] {
            let Some(obj) = ex[side].as_object() else {
                continue;
            };
            for key in obj.keys() {
                let b = || field(&v, n, side, key);
                let (round_trip, by_euicc) = match key.as_str() {
                    "euiccInfo1" => (EuiccInfo1::decode(&b()).unwrap().encode(), true),
                    "authenticateServerResponse" => (
                        AuthenticateServerResponse::decode(&b()).unwrap().encode(),
                        true,
                    ),
                    "prepareDownloadResponse" => (
                        PrepareDownloadResponse::decode(&b()).unwrap().encode(),
                        true,
                    ),
                    "pendingNotification" => {
                        (PendingNotification::decode(&b()).unwrap().encode(), true)
                    }
                    "serverSigned1" => (ServerSigned1::decode(&b()).unwrap().encode(), false),
                    "smdpSigned2" => (SmdpSigned2::decode(&b()).unwrap().encode(), false),
                    "profileMetadata" => {
                        (StoreMetadataRequest::decode(&b()).unwrap().encode(), false)
                    }
                    "serverSignature1" | "smdpSignature2" => (
                        EcdsaSignature::from_tlv_bytes(&b()).unwrap().to_tlv(),
                        false,
                    ),
                    _ => continue,
                };
                assert_eq!(round_trip, b(), "exchange {n} {side}.{key}");
                if by_euicc {
                    euicc_made += 1;
                } else {
                    smdp_made += 1;
                }
            }
        }
    }
    // euiccInfo1, BF38, BF21, BF37 and three OtherSignedNotifications.
    assert_eq!(euicc_made, 7);
    // serverSigned1, serverSignature1, smdpSigned2, smdpSignature2,
    // profileMetadata.
    assert_eq!(smdp_made, 5);
}

/// Structural damage to a real message is an error value, never a panic,
/// and never silently accepted.
#[test]
fn damaged_capture_values_are_rejected() {
    let v = capture();
    let bytes = field(&v, 1, "request", "authenticateServerResponse");
    // Trailing byte after BF38.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(AuthenticateServerResponse::decode(&trailing).is_err());
    // Truncated.
    assert!(AuthenticateServerResponse::decode(&bytes[..bytes.len() - 1]).is_err());
    // Wrong outer tag.
    let mut retagged = bytes.clone();
    retagged[1] = 0x39;
    assert!(AuthenticateServerResponse::decode(&retagged).is_err());
    // A BF37 is not an OtherSignedNotification, and vice versa.
    let pir = field(&v, 3, "request", "pendingNotification");
    assert!(OtherSignedNotification::decode(&pir).is_err());
    // A signature TLV of the wrong size.
    let mut sig = field(&v, 0, "response", "serverSignature1");
    sig[2] = 0x3F;
    sig.pop();
    assert!(EcdsaSignature::from_tlv_bytes(&sig).is_err());
}

/// The check above is not vacuous: the same signature fails under another
/// hash (SGP.22 §2.6.5 fixes SHA-256).
#[test]
fn verification_uses_sha256() {
    let v = capture();
    let bytes = field(&v, 0, "response", "serverSigned1");
    let sig =
        EcdsaSignature::from_tlv_bytes(&field(&v, 0, "response", "serverSignature1")).unwrap();
    let key = public_key(&field(&v, 0, "response", "serverCertificate"));
    assert!(UnparsedPublicKey::new(&ECDSA_P256_SHA384_ASN1, &key)
        .verify(&bytes, &sig.to_x962_der())
        .is_err());
}
