//! A software eUICC: the eUICC side of ES10b (SGP.22 §5.7) over a given
//! key and certificate chain, strict enough to prove an SM-DP+ right. It
//! verifies every certificate, signature and MAC the SM-DP+ sends, derives
//! the BSP keys, decrypts the Bound Profile Package, applies
//! ReplaceSessionKeys, reassembles the profile package and signs the
//! ProfileInstallationResult. [`lpa`] drives it against an ES9+ server over
//! HTTPS, as a device would.
//!
//! Default identity: the SGP.26 test eUICC (EID
//! 89049032123451234512345678901235) under the NIST or brainpool test CI.

pub mod issue;
pub mod lpa;

use crate::asn1::der::{Oid, Signed, Version};
use crate::asn1::rsp::{
    AuthenticateResponseOk, AuthenticateServerResponse, BitString, BoundProfilePackage,
    BppCommandId, CancelSessionReason, CancelSessionResponse, CancelSessionResponseOk, CtxParams1,
    CtxParamsForCommonAuthentication, DeviceCapabilities, DeviceInfo, EcdsaSignature, ErrorReason,
    ErrorResult, EuiccCancelSessionSigned, EuiccInfo1, EuiccInfo2, EuiccSigned1, EuiccSigned2,
    FinalResult, IccidBcd, NotificationEvent, NotificationMetadata, NotificationOperation,
    OtherSignedNotification, PendingNotification, PrepareDownloadResponse,
    PrepareDownloadResponseOk, ProfileInstallationResult, ProfileInstallationResultData,
    ServerSigned1, SmdpSigned2, StoreMetadataRequest, SuccessResult, TransactionId,
};
use crate::crypto::bsp::{Bsp, SessionKeys};
use crate::crypto::ecdsa::{verify_certificate_der, PublicKey, Signature, SigningKey};
use crate::crypto::ecka::OneTimeKeyPair;
use crate::crypto::kdf::{derive_session_keys, eid_bytes};
use crate::ids::{Eid, Iccid};
use crate::pki::ci::CiSet;
use crate::pki::x509::{role, KeyId};
use sha2::{Digest, Sha256};

/// Why the software eUICC refused something.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EuiccError {
    /// A certificate, signature or MAC from the SM-DP+ did not verify.
    #[error("verification failed: {0}")]
    Verification(String),
    /// Data from the SM-DP+ did not decode or did not fit the session.
    #[error("invalid data: {0}")]
    Invalid(String),
    /// A call came in the wrong order.
    #[error("no session: {0}")]
    NoSession(&'static str),
}

fn verr(s: impl Into<String>) -> EuiccError {
    EuiccError::Verification(s.into())
}

fn ierr(s: impl std::fmt::Display) -> EuiccError {
    EuiccError::Invalid(s.to_string())
}

/// Device capabilities sent in ctxParams1 (what a phone would send).
fn device_info() -> DeviceInfo {
    DeviceInfo {
        tac: [0x35, 0x29, 0x06, 0x11],
        device_capabilities: DeviceCapabilities {
            gsm_supported_release: Some(Version([13, 0, 0])),
            utran_supported_release: Some(Version([13, 0, 0])),
            eutran_epc_supported_release: Some(Version([13, 0, 0])),
            ..Default::default()
        },
        imei: None,
        extensions: vec![],
    }
}

/// Where a download stands on the eUICC.
struct Session {
    transaction_id: Vec<u8>,
    server_address: String,
    euicc_signature1: Option<EcdsaSignature>,
    dppb: Option<PublicKey>,
    smdp_oid: Option<Oid>,
    smdp_signature2: Option<EcdsaSignature>,
    one_time: Option<OneTimeKeyPair>,
    euicc_otpk: Option<Vec<u8>>,
    metadata: Option<Vec<u8>>,
}

/// An unused one-time key pair kept for a retry with the SM-DP+ that asked
/// for it (§3.1.3, §5.7.14, §5.7.15).
struct KeptKey {
    smdp_oid: Oid,
    otpk: Vec<u8>,
    pair: OneTimeKeyPair,
}

/// A profile the software eUICC installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// ICCID from the StoreMetadataRequest.
    pub iccid: Iccid,
    /// The reassembled unprotected profile package.
    pub upp: Vec<u8>,
    /// StoreMetadataRequest as received.
    pub metadata: Vec<u8>,
}

/// The software eUICC.
pub struct SoftEuicc {
    eid: Eid,
    key: SigningKey,
    euicc_certificate: Vec<u8>,
    eum_certificate: Vec<u8>,
    cis: CiSet,
    challenge: Option<[u8; 16]>,
    session: Option<Session>,
    kept: Option<KeptKey>,
    seq_number: i64,
    /// Profiles installed so far.
    pub installed: Vec<Installed>,
    /// PPR bits this eUICC refuses (EUICCInfo2 forbiddenProfilePolicyRules:
    /// 1 = ppr1, 2 = ppr2).
    pub forbidden_pprs: Vec<usize>,
}

const NIST_KEY: &str = include_str!("../../certs/sgp26/eUICC/SK_EUICC_ECDSA_NIST.pem");
const NIST_CERT: &[u8] = include_bytes!("../../certs/sgp26/eUICC/CERT_EUICC_ECDSA_NIST.der");
const NIST_EUM: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_NIST.der");
const BRP_KEY: &str = include_str!("../../certs/sgp26/eUICC/SK_EUICC_ECDSA_BRP.pem");
const BRP_CERT: &[u8] = include_bytes!("../../certs/sgp26/eUICC/CERT_EUICC_ECDSA_BRP.der");
const BRP_EUM: &[u8] = include_bytes!("../../certs/sgp26/EUM/CERT_EUM_ECDSA_BRP.der");

impl SoftEuicc {
    /// An eUICC from its key, its certificate, its EUM's certificate and the
    /// CIs it trusts.
    pub fn new(
        key: SigningKey,
        euicc_certificate: Vec<u8>,
        eum_certificate: Vec<u8>,
        cis: CiSet,
    ) -> Result<SoftEuicc, EuiccError> {
        let (_, cert) = x509_parser::parse_x509_certificate(&euicc_certificate).map_err(ierr)?;
        let serial = cert
            .subject()
            .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(|| ierr("eUICC certificate has no subject serialNumber"))?;
        let eid = Eid::parse(serial).ok_or_else(|| ierr("subject serialNumber is not an EID"))?;
        Ok(SoftEuicc {
            eid,
            key,
            euicc_certificate,
            eum_certificate,
            cis,
            challenge: None,
            session: None,
            kept: None,
            seq_number: 0,
            installed: vec![],
            forbidden_pprs: vec![],
        })
    }

    /// The SGP.26 test eUICC under the NIST P-256 test CI.
    pub fn sgp26_nist() -> Result<SoftEuicc, EuiccError> {
        let cis = crate::pki::sgp26::ci_set().map_err(ierr)?;
        SoftEuicc::new(
            SigningKey::from_pem(NIST_KEY).map_err(ierr)?,
            NIST_CERT.to_vec(),
            NIST_EUM.to_vec(),
            cis,
        )
    }

    /// The SGP.26 test eUICC under the brainpoolP256r1 test CI.
    pub fn sgp26_brainpool() -> Result<SoftEuicc, EuiccError> {
        let cis = crate::pki::sgp26::ci_set().map_err(ierr)?;
        SoftEuicc::new(
            SigningKey::from_pem(BRP_KEY).map_err(ierr)?,
            BRP_CERT.to_vec(),
            BRP_EUM.to_vec(),
            cis,
        )
    }

    /// The EID.
    pub fn eid(&self) -> &Eid {
        &self.eid
    }

    /// Keeps a discarded session's one-time key pair, if PrepareDownload
    /// made one (it is unused: LoadBoundProfilePackage consumes it).
    fn keep_unused_key(&mut self, s: Session) {
        if let (Some(smdp_oid), Some(otpk), Some(pair)) = (s.smdp_oid, s.euicc_otpk, s.one_time) {
            self.kept = Some(KeptKey {
                smdp_oid,
                otpk,
                pair,
            });
        }
    }

    /// otPK.EUICC.ECKA of the one-time key pair kept for a retry, if any.
    pub fn kept_otpk(&self) -> Option<&[u8]> {
        self.kept.as_ref().map(|k| k.otpk.as_slice())
    }

    /// The CI of this eUICC's own chain (its EUM certificate's AKI).
    fn own_ci(&self) -> Result<KeyId, EuiccError> {
        let (_, eum) = x509_parser::parse_x509_certificate(&self.eum_certificate).map_err(ierr)?;
        for ext in eum.extensions() {
            if let x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) =
                ext.parsed_extension()
            {
                if let Some(k) = &aki.key_identifier {
                    return Ok(KeyId::new(k.0));
                }
            }
        }
        Err(ierr("EUM certificate has no AuthorityKeyIdentifier"))
    }

    /// ES10b.GetEUICCChallenge (§5.7.7, §5.7.15): 16 fresh random bytes.
    /// A previous session that was not completed is discarded; its unused
    /// one-time key pair is kept, with the SM-DP+ OID, for a retry
    /// (§3.1.3).
    pub fn get_euicc_challenge(&mut self) -> [u8; 16] {
        if let Some(s) = self.session.take() {
            self.keep_unused_key(s);
        }
        let c: [u8; 16] = rand::random();
        self.challenge = Some(c);
        c
    }

    /// ES10b.GetEUICCInfo (§5.7.8): EUICCInfo1. The eUICC verifies with
    /// every CI it trusts and signs with the CI of its own chain.
    pub fn get_euicc_info1(&self) -> Result<Vec<u8>, EuiccError> {
        Ok(EuiccInfo1 {
            svn: Version([2, 2, 0]),
            ci_pkid_list_for_verification: self
                .cis
                .iter()
                .map(|c| c.key_id().as_bytes().to_vec())
                .collect(),
            ci_pkid_list_for_signing: vec![self.own_ci()?.as_bytes().to_vec()],
            extensions: vec![],
        }
        .encode())
    }

    fn euicc_info2(&self) -> Result<EuiccInfo2, EuiccError> {
        let info1 = EuiccInfo1::decode(&self.get_euicc_info1()?).map_err(ierr)?;
        Ok(EuiccInfo2 {
            profile_version: Version([2, 3, 1]),
            svn: Version([2, 2, 0]),
            euicc_firmware_ver: Version([1, 0, 0]),
            ext_card_resource: vec![
                0x81, 0x01, 0x00, 0x82, 0x04, 0x00, 0x04, 0x00, 0x00, 0x83, 0x02, 0x22, 0x00,
            ],
            uicc_capability: BitString::from_named_bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
            ts102241_version: Some(Version([9, 2, 0])),
            globalplatform_version: Some(Version([2, 3, 0])),
            rsp_capability: BitString::from_named_bits(&[0, 2]),
            ci_pkid_list_for_verification: info1.ci_pkid_list_for_verification,
            ci_pkid_list_for_signing: info1.ci_pkid_list_for_signing,
            euicc_category: None,
            forbidden_profile_policy_rules: (!self.forbidden_pprs.is_empty())
                .then(|| BitString::from_named_bits(&self.forbidden_pprs)),
            pp_version: Version([1, 0, 0]),
            sas_accreditation_number: "SMDPPLUS-SOFT-EUICC".into(),
            certification_data_object: None,
            extensions: vec![],
        })
    }

    /// Verifies an SM-DP+ certificate: signed by a CI we trust, with the
    /// expected role policy (§4.5.2.1.0.4-5).
    fn verify_smdp_certificate(
        &self,
        der: &[u8],
        role_oid: &[u64],
    ) -> Result<PublicKey, EuiccError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(ierr)?;
        let ext = crate::pki::x509::extensions(&cert).map_err(verr)?;
        let aki = ext
            .aki
            .clone()
            .flatten()
            .ok_or_else(|| verr("SM-DP+ certificate has no AuthorityKeyIdentifier"))?;
        let ci = self
            .cis
            .get(&aki)
            .ok_or_else(|| verr("SM-DP+ certificate from an unknown CI"))?;
        verify_certificate_der(der, ci.public_key())
            .map_err(|e| verr(format!("SM-DP+ certificate signature: {e}")))?;
        if !ext.has_policy(role_oid) {
            return Err(verr("SM-DP+ certificate lacks its role policy"));
        }
        PublicKey::from_certificate_der(der).map_err(ierr)
    }

    /// ES10b.AuthenticateServer (§5.7.13): checks CERT.DPauth and
    /// serverSignature1, then signs EuiccSigned1. `smdp_address` is the
    /// address the LPA was given; `matching_id` goes into ctxParams1.
    pub fn authenticate_server(
        &mut self,
        server_signed1: &[u8],
        server_signature1: &[u8],
        euicc_ci_pkid_to_be_used: &[u8],
        server_certificate: &[u8],
        smdp_address: &str,
        matching_id: Option<&str>,
    ) -> Result<Vec<u8>, EuiccError> {
        let challenge = self
            .challenge
            .take()
            .ok_or(EuiccError::NoSession("GetEUICCChallenge first"))?;
        let dpauth = self.verify_smdp_certificate(server_certificate, role::DP_AUTH)?;
        let smdp_oid = smdp_oid(server_certificate)?;
        let sig = EcdsaSignature::from_tlv_bytes(server_signature1).map_err(ierr)?;
        dpauth
            .verify(
                server_signed1,
                &Signature::from_raw(sig.as_bytes()).map_err(ierr)?,
            )
            .map_err(|_| verr("serverSignature1 does not verify"))?;
        let signed = ServerSigned1::decode(server_signed1).map_err(ierr)?;
        if signed.euicc_challenge != challenge {
            return Err(verr("euiccChallenge does not match"));
        }
        if !signed.server_address.eq_ignore_ascii_case(smdp_address) {
            return Err(verr("serverAddress does not match the SM-DP+ address"));
        }
        let ci = self.own_ci()?;
        if euicc_ci_pkid_to_be_used != ci.to_octet_string().as_slice() {
            return Err(verr("euiccCiPKIdToBeUsed is not the CI of this eUICC"));
        }
        let euicc_signed1 = Signed::new(EuiccSigned1 {
            transaction_id: signed.transaction_id.clone(),
            server_address: signed.server_address.clone(),
            server_challenge: signed.server_challenge,
            euicc_info2: self.euicc_info2()?,
            ctx_params1: CtxParams1::CommonAuthentication(CtxParamsForCommonAuthentication {
                matching_id: matching_id.map(str::to_owned),
                device_info: device_info(),
                extensions: vec![],
            }),
            extensions: vec![],
        });
        let s = self.key.sign(euicc_signed1.raw()).map_err(ierr)?;
        let euicc_signature1 = EcdsaSignature(*s.as_raw());
        self.session = Some(Session {
            transaction_id: signed.transaction_id.as_bytes().to_vec(),
            server_address: signed.server_address,
            euicc_signature1: Some(euicc_signature1),
            dppb: None,
            smdp_oid: Some(smdp_oid),
            smdp_signature2: None,
            one_time: None,
            euicc_otpk: None,
            metadata: None,
        });
        Ok(AuthenticateServerResponse::Ok(AuthenticateResponseOk {
            euicc_signed1,
            euicc_signature1,
            euicc_certificate: self.euicc_certificate.clone(),
            eum_certificate: self.eum_certificate.clone(),
        })
        .encode())
    }

    /// ES10b.PrepareDownload (§5.7.5): checks CERT.DPpb and smdpSignature2,
    /// makes the one-time key pair, and signs EUICCSigned2 (with hashCc
    /// when the SM-DP+ asks for a confirmation code). When smdpSigned2
    /// carries bppEuiccOtpk and it is the otPK of the key pair kept for
    /// this SM-DP+, that pair serves this session; otherwise a new pair is
    /// made and any kept one is erased. `reuse_otpk` keeps this session's
    /// one-time key (a retry of GetBoundProfilePackage in the same
    /// session, §3.1.3).
    pub fn prepare_download(
        &mut self,
        smdp_signed2: &[u8],
        smdp_signature2: &[u8],
        smdp_certificate: &[u8],
        profile_metadata: &[u8],
        confirmation_code: Option<&str>,
        reuse_otpk: bool,
    ) -> Result<Vec<u8>, EuiccError> {
        let dppb = self.verify_smdp_certificate(smdp_certificate, role::DP_PB)?;
        let s = self
            .session
            .as_mut()
            .ok_or(EuiccError::NoSession("AuthenticateServer first"))?;
        let euicc_signature1 = s
            .euicc_signature1
            .ok_or(EuiccError::NoSession("AuthenticateServer first"))?;
        let signed = SmdpSigned2::decode(smdp_signed2).map_err(ierr)?;
        let sig2 = EcdsaSignature::from_tlv_bytes(smdp_signature2).map_err(ierr)?;
        dppb.verify(
            &signed.signed_data(&euicc_signature1),
            &Signature::from_raw(sig2.as_bytes()).map_err(ierr)?,
        )
        .map_err(|_| verr("smdpSignature2 does not verify"))?;
        if signed.transaction_id.as_bytes() != s.transaction_id.as_slice() {
            return Err(verr("transactionId in smdpSigned2 does not match"));
        }
        StoreMetadataRequest::decode(profile_metadata).map_err(ierr)?;
        let hash_cc = match (signed.cc_required_flag, confirmation_code) {
            (true, Some(code)) => {
                let mut d = Sha256::new();
                d.update(Sha256::digest(code.as_bytes()));
                d.update(&s.transaction_id);
                Some(d.finalize().into())
            }
            (true, None) => None,
            (false, _) => None,
        };
        let kept = self.kept.take().filter(|k| {
            signed.bpp_euicc_otpk.as_deref() == Some(k.otpk.as_slice())
                && s.smdp_oid.as_ref() == Some(&k.smdp_oid)
        });
        if let Some(k) = kept {
            s.euicc_otpk = Some(k.otpk);
            s.one_time = Some(k.pair);
        } else if !(reuse_otpk && s.one_time.is_some()) {
            let otk =
                OneTimeKeyPair::generate(dppb.curve(), &mut rand::rngs::OsRng).map_err(ierr)?;
            s.euicc_otpk = Some(otk.public_key().to_vec());
            s.one_time = Some(otk);
        }
        let euicc_otpk = s
            .euicc_otpk
            .clone()
            .ok_or(EuiccError::NoSession("no one-time key"))?;
        let euicc_signed2 = Signed::new(EuiccSigned2 {
            transaction_id: signed.transaction_id.clone(),
            euicc_otpk,
            hash_cc,
            extensions: vec![],
        });
        let mut data = euicc_signed2.raw().to_vec();
        data.extend_from_slice(&sig2.to_tlv());
        let s2 = self.key.sign(&data).map_err(ierr)?;
        s.dppb = Some(dppb);
        s.smdp_signature2 = Some(sig2);
        s.metadata = Some(profile_metadata.to_vec());
        Ok(PrepareDownloadResponse::Ok(PrepareDownloadResponseOk {
            euicc_signed2,
            euicc_signature2: EcdsaSignature(*s2.as_raw()),
        })
        .encode())
    }

    /// ES10b.LoadBoundProfilePackage (§5.7.6, §2.5.4): verifies smdpSign,
    /// derives the session keys, checks every MAC, decrypts, applies
    /// ReplaceSessionKeys and reassembles the profile package. Returns the
    /// signed ProfileInstallationResult (success or error) and, on
    /// success, what was installed.
    pub fn load_bound_profile_package(
        &mut self,
        bpp: &[u8],
    ) -> Result<(Vec<u8>, Option<Installed>), EuiccError> {
        let s = self
            .session
            .take()
            .ok_or(EuiccError::NoSession("PrepareDownload first"))?;
        let transaction_id = s.transaction_id.clone();
        let smdp_oid = s.smdp_oid.clone();
        let address = s.server_address.clone();
        match self.load(s, bpp) {
            Ok(installed) => {
                let pir = self.installation_result(
                    &transaction_id,
                    &address,
                    smdp_oid,
                    Some(&installed.iccid),
                    None,
                )?;
                self.installed.push(installed.clone());
                Ok((pir, Some(installed)))
            }
            Err((command, reason, _why)) => {
                let pir = self.installation_result(
                    &transaction_id,
                    &address,
                    smdp_oid,
                    None,
                    Some((command, reason)),
                )?;
                Ok((pir, None))
            }
        }
    }

    fn load(
        &mut self,
        s: Session,
        bpp: &[u8],
    ) -> Result<Installed, (BppCommandId, ErrorReason, String)> {
        use BppCommandId as C;
        use ErrorReason as R;
        let fail = |c: C, r: R, why: String| (c, r, why);
        let bpp = BoundProfilePackage::decode(bpp).map_err(|e| {
            fail(
                C::InitialiseSecureChannel,
                R::IncorrectInputValues,
                e.to_string(),
            )
        })?;
        let bf23 = &bpp.initialise_secure_channel_request;
        let (Some(dppb), Some(euicc_otpk), Some(one_time)) = (s.dppb, s.euicc_otpk, s.one_time)
        else {
            return Err(fail(
                C::InitialiseSecureChannel,
                R::IncorrectInputValues,
                "no PrepareDownload".into(),
            ));
        };
        let sig = Signature::from_raw(bf23.smdp_sign.as_bytes()).map_err(|e| {
            fail(
                C::InitialiseSecureChannel,
                R::InvalidSignature,
                e.to_string(),
            )
        })?;
        dppb.verify(&bf23.signed_data(&euicc_otpk), &sig)
            .map_err(|_| {
                fail(
                    C::InitialiseSecureChannel,
                    R::InvalidSignature,
                    "smdpSign".into(),
                )
            })?;
        if bf23.transaction_id.as_bytes() != s.transaction_id.as_slice() {
            return Err(fail(
                C::InitialiseSecureChannel,
                R::InvalidTransactionId,
                "transactionId".into(),
            ));
        }
        if bf23.control_ref_template.key_type != 0x88 || bf23.control_ref_template.key_len != 0x10 {
            return Err(fail(
                C::InitialiseSecureChannel,
                R::UnsupportedCrtValues,
                "CRT".into(),
            ));
        }
        let shared = one_time.agree(&bf23.smdp_otpk).map_err(|e| {
            fail(
                C::InitialiseSecureChannel,
                R::IncorrectInputValues,
                e.to_string(),
            )
        })?;
        let eid16 = eid_bytes(&self.eid).map_err(|e| {
            fail(
                C::InitialiseSecureChannel,
                R::IncorrectInputValues,
                e.to_string(),
            )
        })?;
        let keys = derive_session_keys(
            shared.as_bytes(),
            &bf23.control_ref_template.host_id,
            &eid16,
        )
        .map_err(|e| {
            fail(
                C::InitialiseSecureChannel,
                R::IncorrectInputValues,
                e.to_string(),
            )
        })?;
        let mut bsp = Bsp::new(keys);
        let open =
            |bsp: &mut Bsp, tag: u8, segs: &[Vec<u8>], cmd: C| -> Result<Vec<u8>, (C, R, String)> {
                let mut out = vec![];
                for v in segs {
                    let mut tlv = vec![tag];
                    crate::asn1::der::write_length(v.len(), &mut tlv);
                    tlv.extend_from_slice(v);
                    let seg = bsp
                        .unwrap(&tlv)
                        .map_err(|e| (cmd, R::Scp03tSecurityError, e.to_string()))?;
                    out.extend_from_slice(&seg.data);
                }
                Ok(out)
            };
        let configure = open(&mut bsp, 0x87, &bpp.first_sequence_of_87, C::ConfigureIsdp)?;
        crate::asn1::rsp::ConfigureIsdpRequest::decode(&configure)
            .map_err(|e| fail(C::ConfigureIsdp, R::IncorrectInputValues, e.to_string()))?;
        let metadata = open(&mut bsp, 0x88, &bpp.sequence_of_88, C::StoreMetadata)?;
        if s.metadata.as_deref() != Some(metadata.as_slice()) {
            return Err(fail(
                C::StoreMetadata,
                R::DataMismatch,
                "metadata differs from AuthenticateClient".into(),
            ));
        }
        let smr = StoreMetadataRequest::decode(&metadata)
            .map_err(|e| fail(C::StoreMetadata, R::IncorrectInputValues, e.to_string()))?;
        if let Some(second) = &bpp.second_sequence_of_87 {
            let rsk = open(&mut bsp, 0x87, second, C::ReplaceSessionKeys)?;
            let ppk = SessionKeys::from_replace_session_keys_request(&rsk).map_err(|e| {
                fail(
                    C::ReplaceSessionKeys,
                    R::IncorrectInputValues,
                    e.to_string(),
                )
            })?;
            bsp.replace_session_keys(ppk);
        }
        let upp = open(&mut bsp, 0x86, &bpp.sequence_of_86, C::LoadProfileElements)?;
        let iccid = smr
            .iccid
            .to_iccid()
            .map_err(|e| fail(C::StoreMetadata, R::IncorrectInputValues, e.to_string()))?;
        if self.installed.iter().any(|p| p.iccid == iccid) {
            return Err(fail(
                C::StoreMetadata,
                R::IccidAlreadyExistsOnEuicc,
                iccid.to_string(),
            ));
        }
        Ok(Installed {
            iccid,
            upp,
            metadata,
        })
    }

    fn next_seq(&mut self) -> i64 {
        self.seq_number += 1;
        self.seq_number
    }

    fn installation_result(
        &mut self,
        transaction_id: &[u8],
        address: &str,
        smdp_oid: Option<Oid>,
        iccid: Option<&Iccid>,
        error: Option<(BppCommandId, ErrorReason)>,
    ) -> Result<Vec<u8>, EuiccError> {
        let final_result = match error {
            None => FinalResult::Success(SuccessResult {
                aid: vec![
                    0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00,
                    0x00, 0x11, 0x00,
                ],
                sima_response: vec![0x30, 0x03, 0x80, 0x01, 0x00],
            }),
            Some((bpp_command_id, error_reason)) => FinalResult::Error(ErrorResult {
                bpp_command_id,
                error_reason,
                sima_response: None,
            }),
        };
        let seq = self.next_seq();
        let data = Signed::new(ProfileInstallationResultData {
            transaction_id: TransactionId::new(transaction_id).map_err(ierr)?,
            notification_metadata: NotificationMetadata {
                seq_number: seq,
                profile_management_operation: NotificationEvent::from_operations(&[
                    NotificationOperation::Install,
                ]),
                notification_address: address.to_owned(),
                iccid: iccid.map(IccidBcd::from_iccid),
                extensions: vec![],
            },
            smdp_oid,
            final_result,
            extensions: vec![],
        });
        let sig = self.key.sign(data.raw()).map_err(ierr)?;
        Ok(
            PendingNotification::ProfileInstallationResult(ProfileInstallationResult {
                profile_installation_result_data: data,
                euicc_sign_pir: EcdsaSignature(*sig.as_raw()),
            })
            .encode(),
        )
    }

    /// ES10b.CancelSession (§5.7.14): a signed CancelSessionResponse for the
    /// current session.
    pub fn cancel_session(
        &mut self,
        reason: CancelSessionReason,
    ) -> Result<(Vec<u8>, Vec<u8>), EuiccError> {
        let s = self
            .session
            .take()
            .ok_or(EuiccError::NoSession("no session to cancel"))?;
        let smdp_oid = s
            .smdp_oid
            .clone()
            .ok_or(EuiccError::NoSession("no SM-DP+ authenticated"))?;
        let transaction_id = s.transaction_id.clone();
        // §5.7.14: after 'postponed' or 'timeout' the unused one-time key
        // pair may be kept for a retry; any other reason ends the download,
        // and with it any pair kept for this SM-DP+.
        if matches!(
            reason,
            CancelSessionReason::Postponed | CancelSessionReason::Timeout
        ) {
            self.keep_unused_key(s);
        } else if self.kept.as_ref().map(|k| &k.smdp_oid) == Some(&smdp_oid) {
            self.kept = None;
        }
        self.cancel_session_with(&transaction_id, smdp_oid, reason)
    }

    /// A CancelSessionResponse for any transactionId and SM-DP+ OID (tests
    /// use it to send mismatching ones).
    pub fn cancel_session_with(
        &mut self,
        transaction_id: &[u8],
        smdp_oid: Oid,
        reason: CancelSessionReason,
    ) -> Result<(Vec<u8>, Vec<u8>), EuiccError> {
        let signed = Signed::new(EuiccCancelSessionSigned {
            transaction_id: TransactionId::new(transaction_id).map_err(ierr)?,
            smdp_oid,
            reason,
        });
        let sig = self.key.sign(signed.raw()).map_err(ierr)?;
        let bytes = CancelSessionResponse::Ok(CancelSessionResponseOk {
            euicc_cancel_session_signed: signed,
            euicc_cancel_session_signature: EcdsaSignature(*sig.as_raw()),
        })
        .encode();
        Ok((transaction_id.to_vec(), bytes))
    }

    /// An OtherSignedNotification (enable, disable, delete) for a profile.
    pub fn other_notification(
        &mut self,
        operation: NotificationOperation,
        iccid: &Iccid,
        address: &str,
    ) -> Result<Vec<u8>, EuiccError> {
        let seq = self.next_seq();
        let meta = Signed::new(NotificationMetadata {
            seq_number: seq,
            profile_management_operation: NotificationEvent::from_operations(&[operation]),
            notification_address: address.to_owned(),
            iccid: Some(IccidBcd::from_iccid(iccid)),
            extensions: vec![],
        });
        let sig = self.key.sign(meta.raw()).map_err(ierr)?;
        Ok(
            PendingNotification::OtherSignedNotification(OtherSignedNotification {
                tbs_other_notification: meta,
                euicc_notification_signature: EcdsaSignature(*sig.as_raw()),
                euicc_certificate: self.euicc_certificate.clone(),
                eum_certificate: self.eum_certificate.clone(),
            })
            .encode(),
        )
    }
}

/// The SM-DP+ OID in a certificate's subjectAltName.
fn smdp_oid(cert: &[u8]) -> Result<Oid, EuiccError> {
    let dotted = crate::pki::x509::smdp_oid(cert)
        .ok_or_else(|| verr("SM-DP+ certificate has no registeredID"))?;
    let arcs: Result<Vec<u64>, _> = dotted.split('.').map(str::parse).collect();
    Oid::from_arcs(&arcs.map_err(ierr)?).map_err(ierr)
}
