//! The SM-DP+ side of ES9+ (SGP.22 §5.6): mutual authentication, order
//! matching, binding and notifications. Each function takes the parsed
//! request, checks it against the stored session phase, and returns the
//! response or the spec's status code. HTTP lives in [`super`].

use super::dto::*;
use super::limits::{QuietLog, SESSIONS_FULL};
use super::session::{
    Authenticated, Delivered, ExpectAuthenticateClient, ExpectGetBpp, Phase, Session,
    SESSION_VERSION,
};
use crate::app::App;
use crate::asn1::der::{parse_one, DerCodec};
use crate::asn1::rsp::{
    AuthenticateServerResponse, BoundProfilePackage, CancelSessionReason, CancelSessionResponse,
    ConfigureIsdpRequest, ControlRefTemplate, CtxParams1, EcdsaSignature, EuiccInfo1, FinalResult,
    IccidBcd, IconType, InitialiseSecureChannelRequest, NotificationConfigurationInformation,
    NotificationEvent, NotificationOperation, OperatorId, PendingNotification,
    PrepareDownloadResponse, ProfileClass, RemoteOpId, ServerSigned1, SmdpSigned2,
    StoreMetadataRequest, TransactionId,
};
use crate::config::{NotificationTarget, NotifyOn};
use crate::crypto::bsp::Bsp;
use crate::crypto::ecdsa::{PublicKey, Signature};
use crate::crypto::ecka::OneTimeKeyPair;
use crate::crypto::kdf::{derive_session_keys, eid_bytes};
use crate::error::{codes, Error, StatusCode};
use crate::ids::{Eid, Iccid};
use crate::pki::euicc::EuiccValidator;
use crate::pki::smdp::{SmdpCredentials, SmdpKeyring};
use crate::pki::x509::KeyId;
use crate::profile::protect::{Keyring, ProtectedPackage};
use crate::profile::stored::StoredPackage;
use crate::store::bound::{KeptPackage, KEPT_VERSION};
use crate::store::lifecycle::State;
use crate::store::session::Admission;
use crate::store::{Command, Ctx, RetryKind};
use rand::RngCore;

/// hostId in the BSP key derivation and the CRT of BF23 (§2.6.6.1, §5.5.1).
pub const HOST_ID: &[u8] = b"SMDPPLUS";

/// The status codes of ES9+ that only this module uses (§5.6).
pub mod es9codes {
    use crate::error::StatusCode;
    /// 8.1 eUICC, 6.1 Verification Failed.
    pub const EUICC_VERIFICATION_FAILED: StatusCode = StatusCode {
        subject: "8.1",
        reason: "6.1",
    };
    /// 8.8.1 SM-DP+ Address, 3.8 Refused.
    pub const SMDP_ADDRESS_REFUSED: StatusCode = StatusCode {
        subject: "8.8.1",
        reason: "3.8",
    };
    /// 8.8.3 SVN, 3.1 Unsupported.
    pub const SVN_UNSUPPORTED: StatusCode = StatusCode {
        subject: "8.8.3",
        reason: "3.1",
    };
    /// 8.10.1 TransactionId, 3.9 Unknown.
    pub const TRANSACTION_UNKNOWN: StatusCode = StatusCode {
        subject: "8.10.1",
        reason: "3.9",
    };
    /// 8.2 Profile, 3.7 Unavailable: BPP not available for a new binding.
    pub const BPP_UNAVAILABLE: StatusCode = StatusCode {
        subject: "8.2",
        reason: "3.7",
    };
    /// 8.8 SM-DP+, 3.10 Invalid Association: wrong SM-DP+ OID.
    pub const SMDP_OID_INVALID: StatusCode = StatusCode {
        subject: "8.8",
        reason: "3.10",
    };
    /// 8.8.5 Download order, 3.8 Refused (end-user rejection, §5.3.5 table 32b).
    pub const ORDER_REFUSED: StatusCode = StatusCode {
        subject: "8.8.5",
        reason: "3.8",
    };
    /// 8.2.8 PPR, 1.2 Not Allowed.
    pub const PPR_NOT_ALLOWED: StatusCode = StatusCode {
        subject: "8.2.8",
        reason: "1.2",
    };
    /// 8.2.9 Profile Metadata, 3.11 Value has changed.
    pub const METADATA_MISMATCH: StatusCode = StatusCode {
        subject: "8.2.9",
        reason: "3.11",
    };
    /// 8.2.5 Profile Type, 4.3 Stopped on warning: no eligible profile.
    pub const NO_ELIGIBLE_PROFILE: StatusCode = StatusCode {
        subject: "8.2.5",
        reason: "4.3",
    };
    /// 8 eUICC Remote Provisioning, 4.2 Execution Error.
    pub const RSP_EXECUTION_ERROR: StatusCode = StatusCode {
        subject: "8",
        reason: "4.2",
    };
}
use es9codes::*;

/// The SM-DP+'s ES9+ keys: DPauth/DPpb per CI, and the eUICC chain validator.
pub struct Es9Keys {
    /// DPauth and DPpb per CI.
    pub keyring: SmdpKeyring,
    /// Validates EUM and eUICC certificates (with its EUM cache).
    pub validator: EuiccValidator,
}

impl Es9Keys {
    /// The SGP.26 test credentials compiled into the binary.
    pub fn sgp26() -> Result<Es9Keys, crate::pki::PkiError> {
        let cis = crate::pki::sgp26::ci_set()?;
        let keyring = crate::pki::sgp26::keyring(&cis)?;
        Ok(Es9Keys {
            keyring,
            validator: EuiccValidator::new(cis),
        })
    }
}

fn refused(code: StatusCode, msg: impl Into<String>) -> Error {
    Error::refused(code, msg)
}

fn verification_failed(msg: impl Into<String>) -> Error {
    refused(EUICC_VERIFICATION_FAILED, msg)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

fn asn1_format(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(codes::FORMAT_INVALID, format!("{what}: {e}"))
}

fn to_wire(sig: &Signature) -> EcdsaSignature {
    EcdsaSignature(*sig.as_raw())
}

fn from_wire(sig: &EcdsaSignature) -> Result<Signature, Error> {
    Signature::from_raw(sig.as_bytes()).map_err(|e| verification_failed(format!("signature: {e}")))
}

fn credentials<'a>(app: &'a App, dp_ci: &[u8]) -> Result<&'a SmdpCredentials, Error> {
    app.es9
        .keyring
        .get(&KeyId::new(dp_ci))
        .ok_or_else(|| Error::internal("session names a CI without credentials"))
}

fn load_session(app: &App, transaction_id: &[u8]) -> Result<Session, Error> {
    let bytes = app
        .store
        .get_session(transaction_id, crate::time::now())?
        .ok_or_else(|| refused(TRANSACTION_UNKNOWN, "unknown or expired transactionId"))?;
    let s: Session =
        serde_json::from_slice(&bytes).map_err(|e| internal(format!("corrupt session: {e}")))?;
    if s.v != SESSION_VERSION {
        return Err(refused(
            TRANSACTION_UNKNOWN,
            "session from an incompatible version",
        ));
    }
    Ok(s)
}

fn session_bytes(phase: Phase) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(&Session {
        v: SESSION_VERSION,
        phase,
    })
    .map_err(internal)
}

/// Stores the session's next phase (authenticated: it leaves the pending
/// index and is never evicted). A session removed meanwhile (expired,
/// evicted, ended) is not brought back: 8.10.1/3.9.
fn save_session(
    app: &App,
    transaction_id: &[u8],
    phase: Phase,
    ttl_secs: i64,
) -> Result<(), Error> {
    let bytes = session_bytes(phase)?;
    if app
        .store
        .update_session(transaction_id, crate::time::now() + ttl_secs, &bytes)?
    {
        Ok(())
    } else {
        Err(refused(
            TRANSACTION_UNKNOWN,
            "the RSP session ended meanwhile",
        ))
    }
}

fn session_ttl(app: &App) -> i64 {
    app.config.session_ttl.as_secs() as i64
}

/// Life of a session before AuthenticateClient: the shorter of
/// `[es9] pending_session_ttl_secs` and `session_ttl_secs`.
fn pending_ttl(app: &App) -> i64 {
    session_ttl(app).min(app.config.es9.pending_session_ttl_secs.max(1) as i64)
}

/// Throttles the log line of evictions.
static EVICTIONS_LOG: QuietLog = QuietLog::new(std::time::Duration::from_secs(10));

/// A delivered BPP waits this long for its installation result: LPAs send
/// notifications when asked, possibly much later.
const NOTIFICATION_WINDOW_SECS: i64 = 30 * 24 * 3600;

/// ES9+.InitiateAuthentication (§5.6.1).
pub async fn initiate_authentication(
    app: &App,
    req: &InitiateAuthenticationRequest,
) -> Result<InitiateAuthenticationResponse, Error> {
    let euicc_challenge: [u8; 16] =
        req.euicc_challenge.as_slice().try_into().map_err(|_| {
            Error::invalid(codes::FORMAT_INVALID, "euiccChallenge must be 16 bytes")
        })?;
    if !app.config.is_own_address(&req.smdp_address) {
        return Err(refused(
            SMDP_ADDRESS_REFUSED,
            format!(
                "{} is not this SM-DP+",
                crate::error::quote(&req.smdp_address)
            ),
        ));
    }
    let info = EuiccInfo1::decode(&req.euicc_info1).map_err(|e| asn1_format("euiccInfo1", e))?;
    if info.svn.major() != 2 {
        return Err(refused(
            SVN_UNSUPPORTED,
            format!(
                "SVN {}.{} is not supported",
                info.svn.major(),
                info.svn.minor()
            ),
        ));
    }
    let ids = |l: &[Vec<u8>]| l.iter().map(|k| KeyId::new(k)).collect::<Vec<_>>();
    let selection = app.es9.keyring.select(
        app.es9.validator.trusted_cis(),
        &ids(&info.ci_pkid_list_for_verification),
        &ids(&info.ci_pkid_list_for_signing),
    )?;
    let cred = selection.credentials;

    // transactionId and serverChallenge from the OS CSPRNG (§3.1.1.4, §3.1.2).
    let mut transaction_id = [0u8; 16];
    let mut server_challenge = [0u8; 16];
    loop {
        rand::rngs::OsRng.fill_bytes(&mut transaction_id);
        if !app.store.session_exists(&transaction_id)? {
            break;
        }
    }
    rand::rngs::OsRng.fill_bytes(&mut server_challenge);
    let signed = ServerSigned1 {
        transaction_id: TransactionId::new(&transaction_id).map_err(internal)?,
        euicc_challenge,
        server_address: req.smdp_address.clone(),
        server_challenge,
    };
    let signed_der = signed.encode();
    let signature = cred.dpauth().sign(&signed_der).await.map_err(internal)?;
    let phase = Phase::ExpectAuthenticateClient(ExpectAuthenticateClient {
        server_challenge: server_challenge.to_vec(),
        server_address: req.smdp_address.clone(),
        dp_ci: cred.ci().as_bytes().to_vec(),
    });
    let expires_at = crate::time::now() + pending_ttl(app);
    let admission = app.store.create_session(
        &transaction_id,
        expires_at,
        &session_bytes(phase)?,
        app.config.es9.max_sessions,
    )?;
    match admission {
        Admission::Full => {
            return Err(refused(
                SESSIONS_FULL,
                format!(
                    "the SM-DP+ holds its maximum of {} RSP sessions; retry later",
                    app.config.es9.max_sessions
                ),
            ))
        }
        Admission::Created { evicted } if evicted > 0 => {
            app.metrics.rsp_sessions_evicted.inc_by(evicted);
            if let Some(n) = EVICTIONS_LOG.admit(evicted) {
                tracing::warn!(
                    evicted = n,
                    max_sessions = app.config.es9.max_sessions,
                    "RSP session cap reached: the oldest unauthenticated sessions were removed"
                );
            }
        }
        Admission::Created { .. } => {}
    }
    Ok(InitiateAuthenticationResponse {
        transaction_id: transaction_id.to_vec(),
        server_signed1: signed_der,
        server_signature1: to_wire(&signature).to_tlv(),
        euicc_ci_pk_id_to_be_used: selection.euicc_ci_pkid_to_be_used.to_octet_string(),
        server_certificate: cred.dpauth().certificate_der().to_vec(),
    })
}

/// The StoreMetadataRequest for a profile (§5.5.3): values per profile type
/// from the configuration (notifications included), the ICCID from the
/// profile.
fn profile_metadata(
    app: &App,
    iccid: &Iccid,
    profile_type: &str,
) -> Result<StoreMetadataRequest, Error> {
    let t = app.config.profile_type(profile_type);
    let ppr_bits = t.ppr_bits();
    let profile_class = match t.profile_class.as_str() {
        "test" => Some(ProfileClass::Test),
        "provisioning" => Some(ProfileClass::Provisioning),
        // operational is the DEFAULT: DER leaves it out.
        _ => None,
    };
    let notifications = t
        .notification_targets(&app.config.smdp_address)
        .map_err(internal)?
        .map(|list| list.into_iter().map(notification_info).collect());
    let profile_owner = t
        .profile_owner_mcc_mnc
        .as_deref()
        .and_then(mcc_mnc)
        .map(|mcc_mnc| OperatorId {
            mcc_mnc,
            gid1: None,
            gid2: None,
        });
    Ok(StoreMetadataRequest {
        iccid: IccidBcd::from_iccid(iccid),
        service_provider_name: t.service_provider_name,
        profile_name: t.profile_name,
        icon_type: t
            .icon_data
            .as_ref()
            .map(|(png, _)| if *png { IconType::Png } else { IconType::Jpg }),
        icon: t.icon_data.as_ref().map(|(_, b)| b.clone()),
        profile_class,
        notification_configuration_info: notifications,
        profile_owner,
        profile_policy_rules: (!ppr_bits.is_empty())
            .then(|| crate::asn1::der::BitString::from_named_bits(&ppr_bits)),
    })
}

/// A configured notification target as an entry of
/// notificationConfigurationInfo (SGP.22 §5.5.3): its operations become the
/// NotificationEvent bits.
fn notification_info(t: NotificationTarget) -> NotificationConfigurationInformation {
    let ops: Vec<NotificationOperation> = t
        .operations
        .iter()
        .map(|op| match op {
            NotifyOn::Install => NotificationOperation::Install,
            NotifyOn::Enable => NotificationOperation::Enable,
            NotifyOn::Disable => NotificationOperation::Disable,
            NotifyOn::Delete => NotificationOperation::Delete,
        })
        .collect();
    NotificationConfigurationInformation {
        profile_management_operation: NotificationEvent::from_operations(&ops),
        notification_address: t.address,
    }
}

/// MCC+MNC digits as the 3 bytes of TS 24.008 (`00101` -> `00 F1 10`).
pub fn mcc_mnc(s: &str) -> Option<[u8; 3]> {
    let d: Vec<u8> = s.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    if !(5..=6).contains(&d.len()) || d.iter().any(|x| *x > 9) {
        return None;
    }
    let mnc3 = if d.len() == 6 { d[5] } else { 0xF };
    Some([(d[1] << 4) | d[0], (mnc3 << 4) | d[2], (d[4] << 4) | d[3]])
}

/// ES9+.AuthenticateClient (§5.6.3).
pub async fn authenticate_client(
    app: &App,
    req: &AuthenticateClientRequest,
) -> Result<AuthenticateClientResponse, Error> {
    let session = load_session(app, &req.transaction_id)?;
    let Phase::ExpectAuthenticateClient(expect) = session.phase else {
        return Err(refused(
            TRANSACTION_UNKNOWN,
            "the RSP session is not waiting for AuthenticateClient",
        ));
    };
    let response = AuthenticateServerResponse::decode(&req.authenticate_server_response)
        .map_err(|e| asn1_format("authenticateServerResponse", e))?;
    let ok = match response {
        AuthenticateServerResponse::Ok(ok) => ok,
        AuthenticateServerResponse::Error(e) => {
            app.store.remove_session(&req.transaction_id)?;
            return Err(verification_failed(format!(
                "the eUICC refused the server: {:?}",
                e.authenticate_error_code
            )));
        }
    };
    let now = crate::time::now();
    let euicc = app
        .es9
        .validator
        .validate(&ok.eum_certificate, &ok.euicc_certificate, now)?;
    // euiccSignature1 over EuiccSigned1 exactly as received (§5.7.13).
    euicc
        .verify(ok.euicc_signed1.raw(), &from_wire(&ok.euicc_signature1)?)
        .map_err(|_| verification_failed("euiccSignature1 does not verify"))?;
    let signed = ok.euicc_signed1.value();
    if signed.transaction_id.as_bytes() != req.transaction_id.as_slice() {
        // A genuine signature over another session's transactionId: that
        // session is not this one (§5.6.2, §5.6.3, §5.6.5: 8.10.1/3.9).
        return Err(refused(
            TRANSACTION_UNKNOWN,
            "transactionId in euiccSigned1 names another RSP session",
        ));
    }
    if signed.server_challenge.as_slice() != expect.server_challenge.as_slice() {
        return Err(verification_failed("serverChallenge does not match"));
    }
    if signed.server_address != expect.server_address {
        return Err(verification_failed("serverAddress does not match"));
    }
    let matching_id = match &signed.ctx_params1 {
        CtxParams1::CommonAuthentication(c) => c.matching_id.clone(),
        CtxParams1::Other(_) => {
            return Err(refused(
                codes::MATCHING_ID_REFUSED,
                "unsupported ctxParams1",
            ))
        }
    };
    let eid = euicc.eid().clone();
    let iccid = app.store.resolve_order(
        &eid,
        matching_id.as_deref(),
        app.config.strict_order_matching,
    )?;
    crate::http::trace::record(crate::http::trace::Field::Iccid, iccid.as_str());
    // Eligibility (Annex F): the eUICC must accept the profile's PPRs.
    if let Some(forbidden) = &signed.euicc_info2.forbidden_profile_policy_rules {
        let profile_type = app
            .store
            .get(&iccid)?
            .map(|r| r.profile_type)
            .unwrap_or_default();
        if app
            .config
            .profile_type(&profile_type)
            .ppr_bits()
            .iter()
            .any(|b| forbidden.is_set(*b))
        {
            return Err(refused(
                NO_ELIGIBLE_PROFILE,
                "the eUICC forbids the profile's policy rules",
            ));
        }
    }
    let cmd = Command::AuthenticateClient {
        iccid: iccid.clone(),
        eid: eid.clone(),
        matching_id: matching_id.clone(),
        max_attempts: app.config.max_download_attempts,
    };
    let applied = app.store.apply(
        &cmd,
        &Ctx {
            caller: "es9plus",
            now,
            idem: None,
        },
    );
    app.store.sync().await?;
    app.outbox_wake.notify_one();
    let record = applied?.record;

    let cred = credentials(app, &expect.dp_ci)?;
    let metadata = profile_metadata(app, &iccid, &record.profile_type)?;
    // "Check if download retry" (§3.1.3 step 5, §5.6.3): a package kept
    // from an earlier session of this Downloaded order, bound for this
    // eUICC under this DPpb with this metadata, is named by its
    // otPK.EUICC so that an eUICC that kept the key pair reuses it.
    let bpp_euicc_otpk = match record.state {
        State::Downloaded => {
            let metadata_der = metadata.encode();
            app.store
                .kept_package(&iccid, now)?
                .filter(|k| k.eid == eid.as_str() && k.dp_ci == expect.dp_ci)
                .filter(|k| k.metadata == metadata_der)
                .map(|k| k.euicc_otpk)
        }
        _ => None,
    };
    let smdp_signed2 = SmdpSigned2 {
        transaction_id: TransactionId::new(&req.transaction_id).map_err(internal)?,
        cc_required_flag: !record.cc_hashes.is_empty(),
        bpp_euicc_otpk,
    };
    let smdp_signature2 = cred
        .dppb()
        .sign(&smdp_signed2.signed_data(&ok.euicc_signature1))
        .await
        .map_err(internal)?;
    let phase = Phase::ExpectGetBpp(ExpectGetBpp {
        auth: Authenticated {
            dp_ci: expect.dp_ci.clone(),
            eid: eid.as_str().to_owned(),
            iccid: iccid.as_str().to_owned(),
            euicc_certificate: ok.euicc_certificate.clone(),
        },
        smdp_signature2: smdp_signature2.as_raw().to_vec(),
    });
    save_session(app, &req.transaction_id, phase, session_ttl(app))?;
    tracing::info!(transaction_id = %hex::encode_upper(&req.transaction_id), %eid, %iccid, "eUICC authenticated; order matched");
    Ok(AuthenticateClientResponse {
        transaction_id: req.transaction_id.clone(),
        profile_metadata: metadata.encode(),
        smdp_signed2: smdp_signed2.encode(),
        smdp_signature2: to_wire(&smdp_signature2).to_tlv(),
        smdp_certificate: cred.dppb().certificate_der().to_vec(),
    })
}

fn euicc_key(auth: &Authenticated) -> Result<PublicKey, Error> {
    PublicKey::from_certificate_der(&auth.euicc_certificate).map_err(internal)
}

fn tlv_values(tlvs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, Error> {
    tlvs.iter()
        .map(|t| {
            parse_one(t, "BSP segment")
                .map(|t| t.value().to_vec())
                .map_err(internal)
        })
        .collect()
}

/// BF23 with a fresh smdpSign over its data and the eUICC's otPK (§5.5.1).
async fn sign_bf23(
    cred: &SmdpCredentials,
    mut bf23: InitialiseSecureChannelRequest,
    euicc_otpk: &[u8],
) -> Result<InitialiseSecureChannelRequest, Error> {
    let sig = cred
        .dppb()
        .sign(&bf23.signed_data(euicc_otpk))
        .await
        .map_err(internal)?;
    bf23.smdp_sign = to_wire(&sig);
    Ok(bf23)
}

/// Binds a profile package for one eUICC (§2.5.4, §5.6.2): a one-time key
/// pair on the DPpb curve, ECKA with otPK.EUICC, the BSP keys, then BF23,
/// ConfigureISDP (87), StoreMetadata (88, MAC only), ReplaceSessionKeys (87,
/// unless session-key-only) and the profile (86). otSK.DP is consumed by the
/// key agreement and erased with it.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; each argument is a distinct input of §2.5.4"
)]
async fn bind(
    cred: &SmdpCredentials,
    transaction_id: &[u8],
    eid: &Eid,
    euicc_otpk: &[u8],
    metadata: &[u8],
    profile: &ProtectedPackage,
    master: &Keyring,
    iccid: &Iccid,
    with_ppk: bool,
) -> Result<Vec<u8>, Error> {
    let curve = cred.dppb().public_key().curve();
    let otk = OneTimeKeyPair::generate(curve, &mut rand::rngs::OsRng).map_err(internal)?;
    let smdp_otpk = otk.public_key().to_vec();
    let shared = otk
        .agree(euicc_otpk)
        .map_err(|e| verification_failed(format!("otPK.EUICC.ECKA: {e}")))?;
    let keys = derive_session_keys(
        shared.as_bytes(),
        HOST_ID,
        &eid_bytes(eid).map_err(internal)?,
    )
    .map_err(internal)?;
    drop(shared);
    let mut bsp = Bsp::new(keys);
    let first_87 = bsp
        .wrap_enc_segments(0x87, &ConfigureIsdpRequest::default().to_der())
        .map_err(internal)?;
    let seq_88 = bsp
        .wrap_mac_only_segments(0x88, metadata)
        .map_err(internal)?;
    let context = iccid.as_str().as_bytes();
    let (second_87, seq_86) = if with_ppk {
        // §2.5.5: the stored segments are already protected under the PPK;
        // ReplaceSessionKeys hands the PPK to the eUICC.
        let ppk = profile.ppk(master, context).map_err(internal)?;
        let a2 = vec![bsp.wrap_replace_session_keys(ppk).map_err(internal)?];
        (
            Some(a2),
            profile
                .segments
                .iter()
                .map(|s| s.0.clone())
                .collect::<Vec<_>>(),
        )
    } else {
        let upp = profile.decrypt(master, context).map_err(internal)?;
        (None, bsp.wrap_enc_segments(0x86, &upp).map_err(internal)?)
    };
    let bf23 = InitialiseSecureChannelRequest {
        remote_op_id: RemoteOpId::InstallBoundProfilePackage,
        transaction_id: TransactionId::new(transaction_id).map_err(internal)?,
        control_ref_template: ControlRefTemplate {
            key_type: 0x88,
            key_len: 0x10,
            host_id: HOST_ID.to_vec(),
        },
        smdp_otpk,
        smdp_sign: EcdsaSignature([0u8; 64]),
    };
    // The session keys are no longer needed while BF23 is signed (on the
    // token, possibly after a wait).
    drop(bsp);
    let bpp = BoundProfilePackage {
        initialise_secure_channel_request: sign_bf23(cred, bf23, euicc_otpk).await?,
        first_sequence_of_87: tlv_values(first_87)?,
        sequence_of_88: tlv_values(seq_88)?,
        second_sequence_of_87: second_87.map(tlv_values).transpose()?,
        sequence_of_86: tlv_values(seq_86)?,
    };
    Ok(bpp.to_der())
}

/// ES9+.GetBoundProfilePackage (§5.6.2).
pub async fn get_bound_profile_package(
    app: &App,
    req: &GetBoundProfilePackageRequest,
) -> Result<GetBoundProfilePackageResponse, Error> {
    let session = load_session(app, &req.transaction_id)?;
    let (auth, smdp_signature2, previous) = match session.phase {
        Phase::ExpectGetBpp(e) => (e.auth, e.smdp_signature2, None),
        Phase::Delivered(d) => (d.auth.clone(), d.smdp_signature2.clone(), Some(d)),
        Phase::ExpectAuthenticateClient(_) => {
            return Err(refused(
                TRANSACTION_UNKNOWN,
                "the RSP session is not waiting for GetBoundProfilePackage",
            ))
        }
    };
    let response = PrepareDownloadResponse::decode(&req.prepare_download_response)
        .map_err(|e| asn1_format("prepareDownloadResponse", e))?;
    let ok = match response {
        PrepareDownloadResponse::Ok(ok) => ok,
        PrepareDownloadResponse::Error(e) => {
            return Err(verification_failed(format!(
                "the eUICC refused PrepareDownload: {:?}",
                e.download_error_code
            )))
        }
    };
    let signed = ok.euicc_signed2.value();
    let euicc_otpk = signed.euicc_otpk.clone();

    // Every call, retries included (§3.1.3.2 step 6): euiccSignature2 over
    // euiccSigned2 || smdpSignature2, and the transactionId inside.
    let smdp_sig = Signature::from_raw(&smdp_signature2).map_err(internal)?;
    euicc_key(&auth)?
        .verify(
            &ok.signed_data(&to_wire(&smdp_sig)),
            &from_wire(&ok.euicc_signature2)?,
        )
        .map_err(|_| verification_failed("euiccSignature2 does not verify"))?;
    if signed.transaction_id.as_bytes() != req.transaction_id.as_slice() {
        // A genuine signature over another session's transactionId: that
        // session is not this one (§5.6.2, §5.6.3, §5.6.5: 8.10.1/3.9).
        return Err(refused(
            TRANSACTION_UNKNOWN,
            "transactionId in euiccSigned2 names another RSP session",
        ));
    }
    let iccid =
        Iccid::parse(&auth.iccid).ok_or_else(|| Error::internal("corrupt session ICCID"))?;
    let eid = Eid::parse(&auth.eid).ok_or_else(|| Error::internal("corrupt session EID"))?;
    let now = crate::time::now();
    let ctx = Ctx {
        caller: "es9plus",
        now,
        idem: None,
    };

    // Expiry (8.8.5/4.10), the order's state (8.2/3.7) and the confirmation
    // code (8.2.7/*), on every call. A counted failure or an ended order is
    // committed before the answer.
    let cc = Command::CheckConfirmationCode {
        iccid: iccid.clone(),
        transaction_id: req.transaction_id.clone(),
        hash_cc: signed.hash_cc.map(|h| h.to_vec()),
        max_attempts: app.config.max_cc_attempts,
        eid: Some(eid.clone()),
    };
    let checked = app.store.apply(&cc, &ctx);
    if checked.is_err() {
        app.store.sync().await?;
        app.outbox_wake.notify_one();
    }
    let record = checked?.record;
    let cred = credentials(app, &auth.dp_ci)?;

    // The BPP already bound to this otPK.EUICC can be re-used: only the
    // signature of InitialiseSecureChannel is made again (§5.6.2). It is
    // the one delivered earlier in this session, or one kept from an
    // earlier session whose eUICC reused its one-time key pair (§5.6.3
    // bppEuiccOtpk, §5.7.5). Nothing in the 87/88/86 segments depends on
    // the transactionId: the session keys come from the two otPKs and the
    // EID, so BF23 alone carries this session's transactionId.
    let metadata = profile_metadata(app, &iccid, &record.profile_type)?.encode();
    let bound = match (&previous, record.state) {
        (Some(d), _) if d.euicc_otpk == euicc_otpk => Some(d.bpp.clone()),
        (_, State::Downloaded) => app
            .store
            .kept_package(&iccid, now)?
            .filter(|k| k.eid == eid.as_str() && k.dp_ci == auth.dp_ci)
            .filter(|k| k.metadata == metadata && k.euicc_otpk == euicc_otpk)
            .map(|k| k.bpp),
        _ => None,
    };
    let retry_of_delivered = record.state == State::Downloaded;
    let (bpp, retry, keep) = match bound {
        Some(bound) => {
            let mut bpp = BoundProfilePackage::decode(&bound).map_err(internal)?;
            let mut bf23 = bpp.initialise_secure_channel_request;
            bf23.transaction_id = TransactionId::new(&req.transaction_id).map_err(internal)?;
            bpp.initialise_secure_channel_request = sign_bf23(cred, bf23, &euicc_otpk).await?;
            (bpp.to_der(), Some(RetryKind::SameKey), None)
        }
        None => {
            // A first binding, or a new otPK.EUICC: the stored Protected
            // Profile Package can always be bound again (§5.6.2 allows
            // re-binding); the new binding replaces any kept one.
            let stored = app
                .store
                .package(&record)?
                .ok_or_else(|| Error::internal("profile package missing"))?;
            let package = StoredPackage::from_bytes(&stored)
                .and_then(|p| p.protected(&app.keyring(), &app.templates, iccid.as_str()))
                .map_err(internal)?;
            let bpp = bind(
                cred,
                &req.transaction_id,
                &eid,
                &euicc_otpk,
                &metadata,
                &package,
                &app.keyring(),
                &iccid,
                !app.config.session_keys_only,
            )
            .await?;
            let keep_secs = app.config.es9.bpp_retry_secs;
            let keep = (keep_secs > 0).then(|| {
                Box::new(KeptPackage {
                    v: KEPT_VERSION,
                    eid: eid.as_str().to_owned(),
                    dp_ci: auth.dp_ci.clone(),
                    euicc_otpk: euicc_otpk.clone(),
                    metadata: metadata.clone(),
                    bpp: bpp.clone(),
                    expires_at: now.saturating_add(i64::try_from(keep_secs).unwrap_or(i64::MAX)),
                })
            });
            (bpp, retry_of_delivered.then_some(RetryKind::Rebind), keep)
        }
    };
    let delivered = app.store.apply(
        &Command::BppDelivered {
            iccid: iccid.clone(),
            eid: eid.clone(),
            retry,
            keep,
        },
        &ctx,
    );
    if delivered.is_err() {
        app.store.sync().await?;
        app.outbox_wake.notify_one();
    }
    delivered?;
    let phase = Phase::Delivered(Delivered {
        auth,
        smdp_signature2,
        euicc_otpk,
        bpp: bpp.clone(),
    });
    save_session(app, &req.transaction_id, phase, NOTIFICATION_WINDOW_SECS)?;
    app.store.sync().await?;
    app.outbox_wake.notify_one();
    tracing::info!(
        transaction_id = %hex::encode_upper(&req.transaction_id),
        %iccid,
        bytes = bpp.len(),
        retry = retry.map(RetryKind::as_str),
        "BPP delivered"
    );
    if let Some(kind) = retry {
        app.metrics
            .bpp_retries
            .with_label_values(&[kind.as_str()])
            .inc();
    }
    Ok(GetBoundProfilePackageResponse {
        transaction_id: req.transaction_id.clone(),
        bound_profile_package: bpp,
    })
}

/// What happened to a notification (for logs and metrics; the LPA always
/// gets 204, §5.6.4).
#[derive(Debug, PartialEq, Eq)]
pub enum NotificationOutcome {
    /// A ProfileInstallationResult was applied.
    Installed {
        /// Whether finalResult was a success.
        success: bool,
    },
    /// An OtherSignedNotification was verified and recorded.
    Recorded(&'static str),
    /// Dropped, with the reason.
    Dropped(String),
}

/// ES9+.HandleNotification (§5.6.4).
pub async fn handle_notification(
    app: &App,
    req: &HandleNotificationRequest,
) -> NotificationOutcome {
    match handle_notification_inner(app, req).await {
        Ok(o) => o,
        Err(e) => NotificationOutcome::Dropped(e.message),
    }
}

async fn handle_notification_inner(
    app: &App,
    req: &HandleNotificationRequest,
) -> Result<NotificationOutcome, Error> {
    let n = PendingNotification::decode(&req.pending_notification)
        .map_err(|e| asn1_format("pendingNotification", e))?;
    let now = crate::time::now();
    match n {
        PendingNotification::ProfileInstallationResult(pir) => {
            let data = pir.profile_installation_result_data.value();
            let txid = data.transaction_id.as_bytes().to_vec();
            crate::http::trace::record(
                crate::http::trace::Field::TransactionId,
                &hex::encode_upper(&txid),
            );
            let session = load_session(app, &txid)?;
            let Phase::Delivered(d) = session.phase else {
                return Err(refused(
                    TRANSACTION_UNKNOWN,
                    "no BPP was delivered in this session",
                ));
            };
            euicc_key(&d.auth)?
                .verify(
                    pir.profile_installation_result_data.raw(),
                    &from_wire(&pir.euicc_sign_pir)?,
                )
                .map_err(|_| verification_failed("euiccSignPIR does not verify"))?;
            let iccid = Iccid::parse(&d.auth.iccid)
                .ok_or_else(|| Error::internal("corrupt session ICCID"))?;
            let (success, reason) = match &data.final_result {
                FinalResult::Success(_) => (true, None),
                FinalResult::Error(e) => (
                    false,
                    Some(format!(
                        "bppCommandId {:?}, errorReason {:?}",
                        e.bpp_command_id, e.error_reason
                    )),
                ),
            };
            let result_data = data.final_result.to_der();
            let cmd = Command::InstallResult {
                iccid,
                success,
                result_data,
                reason,
            };
            app.store.apply(
                &cmd,
                &Ctx {
                    caller: "es9plus",
                    now,
                    idem: None,
                },
            )?;
            app.store.remove_session(&txid)?;
            app.store.sync().await?;
            app.outbox_wake.notify_one();
            Ok(NotificationOutcome::Installed { success })
        }
        PendingNotification::OtherSignedNotification(o) => {
            let euicc =
                app.es9
                    .validator
                    .validate(&o.eum_certificate, &o.euicc_certificate, now)?;
            euicc
                .verify(
                    o.tbs_other_notification.raw(),
                    &from_wire(&o.euicc_notification_signature)?,
                )
                .map_err(|_| verification_failed("euiccNotificationSignature does not verify"))?;
            let meta = o.tbs_other_notification.value();
            let op = match meta.profile_management_operation.single() {
                Some(NotificationOperation::Enable) => "enable",
                Some(NotificationOperation::Disable) => "disable",
                Some(NotificationOperation::Delete) => "delete",
                Some(NotificationOperation::Install) => "install",
                None => "unknown",
            };
            let iccid = meta.iccid.as_ref().and_then(|i| i.to_iccid().ok());
            tracing::info!(eid = %euicc.eid(), iccid = ?iccid.as_ref().map(|i| i.to_string()), operation = op, seq = meta.seq_number, "eUICC notification");
            let event = match op {
                "enable" => Some(crate::store::lifecycle::Event::DeviceEnabled),
                "disable" => Some(crate::store::lifecycle::Event::DeviceDisabled),
                "delete" => Some(crate::store::lifecycle::Event::DeviceDeleted),
                _ => None,
            };
            // Recorded against our profile when it is one of ours, installed
            // on this eUICC; anything else is only logged.
            if let (Some(iccid), Some(event)) = (iccid, event) {
                if app.store.get(&iccid)?.is_some() {
                    let cmd = Command::DeviceNotification {
                        iccid,
                        eid: euicc.eid().clone(),
                        event,
                    };
                    app.store.apply(
                        &cmd,
                        &Ctx {
                            caller: "es9plus",
                            now,
                            idem: None,
                        },
                    )?;
                    app.store.sync().await?;
                    app.outbox_wake.notify_one();
                }
            }
            Ok(NotificationOutcome::Recorded(op))
        }
    }
}

/// ES9+.CancelSession (§5.6.5), with the reason mapping of §5.3.5 table 32b.
pub async fn cancel_session(app: &App, req: &CancelSessionRequest) -> Result<(), Error> {
    let session = load_session(app, &req.transaction_id)?;
    let auth = match session.phase {
        Phase::ExpectGetBpp(e) => e.auth,
        Phase::Delivered(d) => d.auth,
        Phase::ExpectAuthenticateClient(_) => {
            return Err(refused(
                TRANSACTION_UNKNOWN,
                "the RSP session has no authenticated eUICC yet",
            ))
        }
    };
    let response = CancelSessionResponse::decode(&req.cancel_session_response)
        .map_err(|e| asn1_format("cancelSessionResponse", e))?;
    let ok = match response {
        CancelSessionResponse::Ok(ok) => ok,
        CancelSessionResponse::Error(code) => {
            return Err(verification_failed(format!(
                "the eUICC answered CancelSession with an error: {code:?}"
            )))
        }
    };
    euicc_key(&auth)?
        .verify(
            ok.euicc_cancel_session_signed.raw(),
            &from_wire(&ok.euicc_cancel_session_signature)?,
        )
        .map_err(|_| verification_failed("euiccCancelSessionSignature does not verify"))?;
    let signed = ok.euicc_cancel_session_signed.value();
    if signed.transaction_id.as_bytes() != req.transaction_id.as_slice() {
        // A genuine signature over another session's transactionId: that
        // session is not this one (§5.6.2, §5.6.3, §5.6.5: 8.10.1/3.9).
        return Err(refused(
            TRANSACTION_UNKNOWN,
            "transactionId in euiccCancelSessionSigned names another RSP session",
        ));
    }
    let cred = credentials(app, &auth.dp_ci)?;
    let ours = crate::pki::x509::smdp_oid(cred.dpauth().certificate_der());
    if ours.as_deref() != Some(signed.smdp_oid.to_string().as_str()) {
        return Err(refused(
            SMDP_OID_INVALID,
            format!("smdpOid {} is not this SM-DP+", signed.smdp_oid),
        ));
    }
    let terminal = match signed.reason {
        CancelSessionReason::Postponed | CancelSessionReason::Timeout => None,
        CancelSessionReason::EndUserRejection => Some((ORDER_REFUSED, "end user rejection")),
        CancelSessionReason::PprNotAllowed => Some((PPR_NOT_ALLOWED, "PPR not allowed")),
        CancelSessionReason::MetadataMismatch => Some((METADATA_MISMATCH, "metadata mismatch")),
        CancelSessionReason::LoadBppExecutionError => {
            Some((codes::BPP_EXECUTION_ERROR, "load BPP execution error"))
        }
        _ => Some((RSP_EXECUTION_ERROR, "undefined reason")),
    };
    app.store.remove_session(&req.transaction_id)?;
    if let Some((code, reason)) = terminal {
        let iccid =
            Iccid::parse(&auth.iccid).ok_or_else(|| Error::internal("corrupt session ICCID"))?;
        let cmd = Command::DownloadCancelled {
            iccid,
            code,
            reason: reason.to_owned(),
            eid: Eid::parse(&auth.eid),
        };
        app.store.apply(
            &cmd,
            &Ctx {
                caller: "es9plus",
                now: crate::time::now(),
                idem: None,
            },
        )?;
        app.outbox_wake.notify_one();
    }
    app.store.sync().await?;
    Ok(())
}

impl Es9Keys {
    /// The configured CIs and credentials, each falling back to the
    /// compiled-in SGP.26 test set when not configured. A key given as a
    /// `pkcs11:` URI is found on `token` (`[hsm]`), must be the key of its
    /// certificate, and must make a test signature that verifies; any
    /// failure names the credential and stops the start.
    pub fn from_config(
        c: &crate::config::Config,
        token: Option<&std::sync::Arc<crate::hsm::Token>>,
    ) -> Result<Es9Keys, crate::pki::PkiError> {
        use crate::pki::{ci::CiSet, smdp::SmdpCredentials, PkiError};
        let cis = if c.ci_certs.is_empty() {
            crate::pki::sgp26::ci_set()?
        } else {
            let ders = c
                .ci_certs
                .iter()
                .map(std::fs::read)
                .collect::<Result<Vec<_>, _>>()?;
            CiSet::from_der(ders.iter().map(Vec::as_slice))?
        };
        let keyring = if c.credentials.is_empty() {
            crate::pki::sgp26::keyring(&cis)?
        } else {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| PkiError::File {
                    path: p.display().to_string(),
                    why: e.to_string(),
                })
            };
            let mut sets = Vec::new();
            for (i, s) in c.credentials.iter().enumerate() {
                let dpauth_cert = read(&s.dpauth_cert)?;
                let dppb_cert = read(&s.dppb_cert)?;
                let dpauth_key = credential_key(
                    &format!("credentials[{i}].dpauth_key"),
                    &s.dpauth_key,
                    &dpauth_cert,
                    token,
                )?;
                let dppb_key = credential_key(
                    &format!("credentials[{i}].dppb_key"),
                    &s.dppb_key,
                    &dppb_cert,
                    token,
                )?;
                sets.push(SmdpCredentials::new(
                    &cis,
                    dpauth_cert,
                    dpauth_key,
                    dppb_cert,
                    dppb_key,
                )?);
            }
            SmdpKeyring::new(sets)?
        };
        Ok(Es9Keys {
            keyring,
            validator: EuiccValidator::new(cis),
        })
    }
}

/// A credential's private key: a PEM file, or (a `pkcs11:` URI) the key on
/// the token, checked against the certificate's public key with a test
/// signature ([`crate::hsm::TokenKey::open`]).
fn credential_key(
    what: &str,
    configured: &std::path::Path,
    cert_der: &[u8],
    token: Option<&std::sync::Arc<crate::hsm::Token>>,
) -> Result<crate::hsm::EcKey, crate::pki::PkiError> {
    use crate::pki::PkiError;
    let bad = |why: String| PkiError::Certificate {
        what: what.to_owned(),
        why,
    };
    match configured.to_str() {
        Some(text) if text.starts_with(crate::hsm::uri::SCHEME) => {
            let uri = crate::hsm::KeyUri::parse(text).map_err(|e| bad(e.to_string()))?;
            let token = token.ok_or_else(|| {
                bad(format!(
                    "{uri} names a key on a token, but there is no [hsm] section"
                ))
            })?;
            let cert_key = PublicKey::from_certificate_der(cert_der)
                .map_err(|e| bad(format!("its certificate: {e}")))?;
            let key = crate::hsm::TokenKey::open(token, uri, Some(&cert_key))
                .map_err(|e| bad(e.to_string()))?;
            if key.public_key() != &cert_key {
                return Err(bad(format!(
                    "the key on the token ({}) does not match the certificate",
                    key.uri()
                )));
            }
            Ok(crate::hsm::EcKey::Token(key))
        }
        _ => crate::crypto::ecdsa::SigningKey::from_pem_file(configured)
            .map(crate::hsm::EcKey::Software)
            .map_err(|e| bad(format!("{}: {e}", configured.display()))),
    }
}
