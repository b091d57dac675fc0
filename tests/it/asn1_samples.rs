//! Hand-built RSP values for the alternatives the reference capture lacks
//! (error answers, CancelSession, a Bound Profile Package, a failed PIR),
//! shared by the ASN.1 round-trip and fuzz tests.

use smdpplus::asn1::rsp::*;

pub fn transaction_id() -> TransactionId {
    TransactionId::from_hex("031A2A1375F749478E737A2DF774E4A8").expect("hex")
}

pub fn smdp_oid() -> Oid {
    "2.999.10".parse().expect("OID")
}

pub fn iccid() -> IccidBcd {
    IccidBcd::from_iccid(&smdpplus::ids::Iccid::parse("8949449999999990049").expect("ICCID"))
}

pub fn cancel_ok() -> CancelSessionResponse {
    CancelSessionResponse::Ok(CancelSessionResponseOk {
        euicc_cancel_session_signed: Signed::new(EuiccCancelSessionSigned {
            transaction_id: transaction_id(),
            smdp_oid: smdp_oid(),
            reason: CancelSessionReason::EndUserRejection,
        }),
        euicc_cancel_session_signature: EcdsaSignature([0x11; 64]),
    })
}

pub fn cancel_error() -> CancelSessionResponse {
    CancelSessionResponse::Error(CancelSessionErrorCode::InvalidTransactionId)
}

pub fn authenticate_error() -> AuthenticateServerResponse {
    AuthenticateServerResponse::Error(AuthenticateResponseError {
        transaction_id: transaction_id(),
        authenticate_error_code: AuthenticateErrorCode::InvalidCertificate,
    })
}

pub fn download_error() -> PrepareDownloadResponse {
    PrepareDownloadResponse::Error(PrepareDownloadResponseError {
        transaction_id: transaction_id(),
        download_error_code: DownloadErrorCode::InvalidSignature,
    })
}

pub fn initialise_secure_channel() -> InitialiseSecureChannelRequest {
    InitialiseSecureChannelRequest {
        remote_op_id: RemoteOpId::InstallBoundProfilePackage,
        transaction_id: transaction_id(),
        control_ref_template: ControlRefTemplate {
            key_type: 0x88,
            key_len: 0x10,
            host_id: vec![0x80; 8],
        },
        smdp_otpk: {
            let mut p = vec![0x04];
            p.extend_from_slice(&[0x22; 64]);
            p
        },
        smdp_sign: EcdsaSignature([0x33; 64]),
    }
}

pub fn bound_profile_package() -> BoundProfilePackage {
    BoundProfilePackage {
        initialise_secure_channel_request: initialise_secure_channel(),
        first_sequence_of_87: vec![vec![0xAA; 24]],
        sequence_of_88: vec![vec![0xBB; 56]],
        second_sequence_of_87: Some(vec![vec![0xCC; 72]]),
        sequence_of_86: vec![vec![0xDD; 1016], vec![0xEE; 100]],
    }
}

pub fn replace_session_keys() -> ReplaceSessionKeysRequest {
    ReplaceSessionKeysRequest {
        initial_mac_chaining_value: (0u8..16).collect(),
        ppk_enc: (1u8..17).collect(),
        ppk_cmac: (2u8..18).collect(),
    }
}

pub fn configure_isdp() -> ConfigureIsdpRequest {
    ConfigureIsdpRequest {
        dp_proprietary_data: Some(DpProprietaryData {
            dp_oid: smdp_oid(),
            additional: vec![],
        }),
    }
}

pub fn pir_error() -> PendingNotification {
    PendingNotification::ProfileInstallationResult(ProfileInstallationResult {
        profile_installation_result_data: Signed::new(ProfileInstallationResultData {
            transaction_id: transaction_id(),
            notification_metadata: NotificationMetadata {
                seq_number: 7,
                profile_management_operation: NotificationEvent::from_operations(&[
                    NotificationOperation::Install,
                ]),
                notification_address: "smdp.example.com".into(),
                iccid: Some(iccid()),
                extensions: vec![],
            },
            smdp_oid: Some(smdp_oid()),
            final_result: FinalResult::Error(ErrorResult {
                bpp_command_id: BppCommandId::LoadProfileElements,
                error_reason: ErrorReason::PeProcessingError,
                sima_response: Some(vec![0x30, 0x00]),
            }),
            extensions: vec![],
        }),
        euicc_sign_pir: EcdsaSignature([0x44; 64]),
    })
}

/// Every sample, encoded.
pub fn encoded() -> Vec<Vec<u8>> {
    vec![
        cancel_ok().encode(),
        cancel_error().encode(),
        authenticate_error().encode(),
        download_error().encode(),
        initialise_secure_channel().encode(),
        bound_profile_package().encode(),
        replace_session_keys().encode(),
        configure_isdp().encode(),
        pir_error().encode(),
    ]
}
