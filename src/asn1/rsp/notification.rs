//! Notifications the eUICC signs and the LPA forwards with
//! ES9+.HandleNotification (SGP.22 §5.6.4, §3.5): the Profile Installation
//! Result (`BF37`, §2.5.6) and the other signed notifications (enable,
//! disable, delete; §5.7.10).

use super::{certificate, inherent_codec, named_integer, EcdsaSignature, IccidBcd, TransactionId};
use crate::asn1::der::{BitString, DerCodec, Oid, Signed, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

/// The operations `NotificationEvent` names, by bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationOperation {
    /// `notificationInstall(0)`.
    Install = 0,
    /// `notificationEnable(1)`.
    Enable = 1,
    /// `notificationDisable(2)`.
    Disable = 2,
    /// `notificationDelete(3)`.
    Delete = 3,
}

impl NotificationOperation {
    /// The four operations, in bit order.
    pub const ALL: [NotificationOperation; 4] = [
        NotificationOperation::Install,
        NotificationOperation::Enable,
        NotificationOperation::Disable,
        NotificationOperation::Delete,
    ];
}

/// `NotificationEvent ::= BIT STRING`, kept as received.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NotificationEvent(pub BitString);

impl NotificationEvent {
    /// The DER value with exactly `ops` set.
    pub fn from_operations(ops: &[NotificationOperation]) -> NotificationEvent {
        let bits: Vec<usize> = ops.iter().map(|op| *op as usize).collect();
        NotificationEvent(BitString::from_named_bits(&bits))
    }

    /// The named operations whose bits are set.
    pub fn operations(&self) -> Vec<NotificationOperation> {
        NotificationOperation::ALL
            .into_iter()
            .filter(|op| self.0.is_set(*op as usize))
            .collect()
    }

    /// The operation, when exactly one bit is set and it is a named one
    /// (NotificationMetadata: "Only one bit SHALL be set to 1").
    pub fn single(&self) -> Option<NotificationOperation> {
        match (self.0.set_bits().as_slice(), self.operations().as_slice()) {
            ([_], [op]) => Some(*op),
            _ => None,
        }
    }
}

/// `NotificationMetadata ::= [47] SEQUENCE` (tag `BF2F`, §5.7.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationMetadata {
    /// `seqNumber [0] INTEGER`.
    pub seq_number: i64,
    /// `profileManagementOperation [1] NotificationEvent`.
    pub profile_management_operation: NotificationEvent,
    /// `notificationAddress UTF8String`: FQDN the notification goes to.
    pub notification_address: String,
    /// `iccid Iccid OPTIONAL` (tag `5A`).
    pub iccid: Option<IccidBcd>,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl NotificationMetadata {
    /// Tag `BF2F`.
    pub const TAG: Tag = Tag::new(0xBF2F);
}

impl DerCodec for NotificationMetadata {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<NotificationMetadata, Asn1Error> {
        const CTX: &str = "NotificationMetadata";
        tlv.expect_tag(NotificationMetadata::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(NotificationMetadata {
            seq_number: r.expect(Tag::new(0x80))?.integer(CTX)?,
            profile_management_operation: NotificationEvent(
                r.expect(Tag::new(0x81))?.bit_string(CTX)?,
            ),
            notification_address: r.expect(Tag::UTF8_STRING)?.utf8(CTX)?.to_owned(),
            iccid: r
                .optional(IccidBcd::TAG)?
                .map(|t| IccidBcd::from_tlv(&t))
                .transpose()?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(NotificationMetadata::TAG, |w| {
            w.integer(Tag::new(0x80), self.seq_number);
            w.bit_string(Tag::new(0x81), &self.profile_management_operation.0);
            w.utf8(Tag::UTF8_STRING, &self.notification_address);
            if let Some(iccid) = &self.iccid {
                iccid.write(w);
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `PendingNotification ::= CHOICE` (§5.7.10), the `pendingNotification`
/// of ES9+.HandleNotification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingNotification {
    /// `profileInstallationResult [55]` (tag `BF37`).
    ProfileInstallationResult(ProfileInstallationResult),
    /// `otherSignedNotification` (tag `30`).
    OtherSignedNotification(OtherSignedNotification),
}

impl PendingNotification {
    /// The notification metadata, whichever the kind.
    pub fn notification_metadata(&self) -> &NotificationMetadata {
        match self {
            PendingNotification::ProfileInstallationResult(p) => {
                &p.profile_installation_result_data
                    .value()
                    .notification_metadata
            }
            PendingNotification::OtherSignedNotification(o) => o.tbs_other_notification.value(),
        }
    }

    /// The bytes the eUICC signature covers, as received.
    pub fn signed_data(&self) -> &[u8] {
        match self {
            PendingNotification::ProfileInstallationResult(p) => {
                p.profile_installation_result_data.raw()
            }
            PendingNotification::OtherSignedNotification(o) => o.tbs_other_notification.raw(),
        }
    }

    /// The eUICC signature.
    pub fn signature(&self) -> &EcdsaSignature {
        match self {
            PendingNotification::ProfileInstallationResult(p) => &p.euicc_sign_pir,
            PendingNotification::OtherSignedNotification(o) => &o.euicc_notification_signature,
        }
    }
}

impl DerCodec for PendingNotification {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PendingNotification, Asn1Error> {
        if tlv.tag() == Tag::SEQUENCE {
            Ok(PendingNotification::OtherSignedNotification(
                OtherSignedNotification::from_tlv(tlv)?,
            ))
        } else {
            Ok(PendingNotification::ProfileInstallationResult(
                ProfileInstallationResult::from_tlv(tlv)?,
            ))
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            PendingNotification::ProfileInstallationResult(p) => p.write(w),
            PendingNotification::OtherSignedNotification(o) => o.write(w),
        }
    }
}

/// `ProfileInstallationResult ::= [55] SEQUENCE` (tag `BF37`, §2.5.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileInstallationResult {
    /// `profileInstallationResultData [39]` (tag `BF27`), with the bytes
    /// euiccSignPIR covers as received.
    pub profile_installation_result_data: Signed<ProfileInstallationResultData>,
    /// `euiccSignPIR [APPLICATION 55]` (tag `5F37`).
    pub euicc_sign_pir: EcdsaSignature,
}

impl ProfileInstallationResult {
    /// Tag `BF37`.
    pub const TAG: Tag = Tag::new(0xBF37);
}

impl DerCodec for ProfileInstallationResult {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ProfileInstallationResult, Asn1Error> {
        const CTX: &str = "ProfileInstallationResult";
        tlv.expect_tag(ProfileInstallationResult::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = ProfileInstallationResult {
            profile_installation_result_data: Signed::from_tlv(
                &r.expect(ProfileInstallationResultData::TAG)?,
            )?,
            euicc_sign_pir: EcdsaSignature::from_tlv(&r.expect(EcdsaSignature::TAG)?)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ProfileInstallationResult::TAG, |w| {
            w.raw(self.profile_installation_result_data.raw());
            self.euicc_sign_pir.write(w);
        });
    }
}

/// `ProfileInstallationResultData ::= [39] SEQUENCE` (tag `BF27`, §2.5.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileInstallationResultData {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `notificationMetadata [47]` (tag `BF2F`).
    pub notification_metadata: NotificationMetadata,
    /// `smdpOid OBJECT IDENTIFIER`: the SM-DP+ OID from CERT.DPpb. v2.2
    /// makes it mandatory, but real eUICCs omit it (the YggdraSIM PIR in the
    /// reference capture has none), so it is optional here and the caller
    /// decides.
    pub smdp_oid: Option<Oid>,
    /// `finalResult [2]` (tag `A2`).
    pub final_result: FinalResult,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl ProfileInstallationResultData {
    /// Tag `BF27`.
    pub const TAG: Tag = Tag::new(0xBF27);
}

impl DerCodec for ProfileInstallationResultData {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ProfileInstallationResultData, Asn1Error> {
        const CTX: &str = "ProfileInstallationResultData";
        tlv.expect_tag(ProfileInstallationResultData::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(ProfileInstallationResultData {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            notification_metadata: NotificationMetadata::from_tlv(
                &r.expect(NotificationMetadata::TAG)?,
            )?,
            smdp_oid: r.optional(Tag::OID)?.map(|t| t.oid(CTX)).transpose()?,
            final_result: FinalResult::from_tlv(&r.expect(FinalResult::TAG)?)?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ProfileInstallationResultData::TAG, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            self.notification_metadata.write(w);
            if let Some(oid) = &self.smdp_oid {
                w.oid(Tag::OID, oid);
            }
            self.final_result.write(w);
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `finalResult [2] CHOICE` (tag `A2`, explicit since it tags a CHOICE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalResult {
    /// `successResult [0]` (tag `A0`).
    Success(SuccessResult),
    /// `errorResult [1]` (tag `A1`).
    Error(ErrorResult),
}

impl FinalResult {
    /// Tag `A2`.
    pub const TAG: Tag = Tag::new(0xA2);
}

impl DerCodec for FinalResult {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<FinalResult, Asn1Error> {
        const CTX: &str = "finalResult";
        tlv.expect_tag(FinalResult::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let inner = r.next_tlv()?.ok_or(Asn1Error::MissingElement {
            context: CTX,
            expected: SuccessResult::TAG,
        })?;
        let out = if inner.tag() == ErrorResult::TAG {
            FinalResult::Error(ErrorResult::from_tlv(&inner)?)
        } else {
            FinalResult::Success(SuccessResult::from_tlv(&inner)?)
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(FinalResult::TAG, |w| match self {
            FinalResult::Success(s) => s.write(w),
            FinalResult::Error(e) => e.write(w),
        });
    }
}

/// `SuccessResult ::= SEQUENCE` under `[0]` (tag `A0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuccessResult {
    /// `aid [APPLICATION 15] OCTET STRING (SIZE(5..16))` (tag `4F`): the
    /// ISD-P AID.
    pub aid: Vec<u8>,
    /// `simaResponse OCTET STRING`: the EUICCResponse(s) of the profile
    /// package (SIMalliance eUICC Profile Package spec).
    pub sima_response: Vec<u8>,
}

impl SuccessResult {
    /// Tag `A0`.
    pub const TAG: Tag = Tag::new(0xA0);
}

impl DerCodec for SuccessResult {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<SuccessResult, Asn1Error> {
        const CTX: &str = "SuccessResult";
        tlv.expect_tag(SuccessResult::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = SuccessResult {
            aid: r.expect(Tag::new(0x4F))?.octets_sized(5, 16, CTX)?.to_vec(),
            sima_response: r.expect(Tag::OCTET_STRING)?.octet_string(CTX)?.to_vec(),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(SuccessResult::TAG, |w| {
            w.tlv(Tag::new(0x4F), &self.aid);
            w.tlv(Tag::OCTET_STRING, &self.sima_response);
        });
    }
}

named_integer! {
    /// `BppCommandId ::= INTEGER`: the BPP element that failed.
    BppCommandId {
        /// `initialiseSecureChannel(0)`.
        InitialiseSecureChannel = 0,
        /// `configureISDP(1)`.
        ConfigureIsdp = 1,
        /// `storeMetadata(2)`.
        StoreMetadata = 2,
        /// `storeMetadata2(3)`.
        StoreMetadata2 = 3,
        /// `replaceSessionKeys(4)`.
        ReplaceSessionKeys = 4,
        /// `loadProfileElements(5)`.
        LoadProfileElements = 5,
    }
}

named_integer! {
    /// `ErrorReason ::= INTEGER`: why the installation failed.
    ErrorReason {
        /// `incorrectInputValues(1)`.
        IncorrectInputValues = 1,
        /// `invalidSignature(2)`.
        InvalidSignature = 2,
        /// `invalidTransactionId(3)`.
        InvalidTransactionId = 3,
        /// `unsupportedCrtValues(4)`.
        UnsupportedCrtValues = 4,
        /// `unsupportedRemoteOperationType(5)`.
        UnsupportedRemoteOperationType = 5,
        /// `unsupportedProfileClass(6)`.
        UnsupportedProfileClass = 6,
        /// `scp03tStructureError(7)`.
        Scp03tStructureError = 7,
        /// `scp03tSecurityError(8)`.
        Scp03tSecurityError = 8,
        /// `installFailedDueToIccidAlreadyExistsOnEuicc(9)`.
        IccidAlreadyExistsOnEuicc = 9,
        /// `installFailedDueToInsufficientMemoryForProfile(10)`.
        InsufficientMemoryForProfile = 10,
        /// `installFailedDueToInterruption(11)`.
        Interruption = 11,
        /// `installFailedDueToPEProcessingError(12)`.
        PeProcessingError = 12,
        /// `installFailedDueToDataMismatch(13)`.
        DataMismatch = 13,
        /// `testProfileInstallFailedDueToInvalidNaaKey(14)`.
        TestProfileInvalidNaaKey = 14,
        /// `pprNotAllowed(15)`.
        PprNotAllowed = 15,
        /// `installFailedDueToUnknownError(127)`.
        UnknownError = 127,
    }
}

/// `ErrorResult ::= SEQUENCE` under `[1]` (tag `A1`), automatically tagged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResult {
    /// `bppCommandId [0]`.
    pub bpp_command_id: BppCommandId,
    /// `errorReason [1]`.
    pub error_reason: ErrorReason,
    /// `simaResponse [2] OCTET STRING OPTIONAL`.
    pub sima_response: Option<Vec<u8>>,
}

impl ErrorResult {
    /// Tag `A1`.
    pub const TAG: Tag = Tag::new(0xA1);
}

impl DerCodec for ErrorResult {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ErrorResult, Asn1Error> {
        const CTX: &str = "ErrorResult";
        tlv.expect_tag(ErrorResult::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = ErrorResult {
            bpp_command_id: BppCommandId::from_i64(r.expect(Tag::new(0x80))?.integer(CTX)?),
            error_reason: ErrorReason::from_i64(r.expect(Tag::new(0x81))?.integer(CTX)?),
            sima_response: r
                .optional(Tag::new(0x82))?
                .map(|t| t.octet_string(CTX).map(<[u8]>::to_vec))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ErrorResult::TAG, |w| {
            w.integer(Tag::new(0x80), self.bpp_command_id.to_i64());
            w.integer(Tag::new(0x81), self.error_reason.to_i64());
            if let Some(s) = &self.sima_response {
                w.tlv(Tag::new(0x82), s);
            }
        });
    }
}

/// `OtherSignedNotification ::= SEQUENCE` (tag `30`, §5.7.10): enable,
/// disable and delete notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherSignedNotification {
    /// `tbsOtherNotification NotificationMetadata` (tag `BF2F`), with the
    /// bytes euiccNotificationSignature covers as received.
    pub tbs_other_notification: Signed<NotificationMetadata>,
    /// `euiccNotificationSignature [APPLICATION 55]` (tag `5F37`).
    pub euicc_notification_signature: EcdsaSignature,
    /// `euiccCertificate`: CERT.EUICC.ECDSA, DER as received.
    pub euicc_certificate: Vec<u8>,
    /// `eumCertificate`: CERT.EUM.ECDSA, DER as received.
    pub eum_certificate: Vec<u8>,
}

impl DerCodec for OtherSignedNotification {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<OtherSignedNotification, Asn1Error> {
        const CTX: &str = "OtherSignedNotification";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = OtherSignedNotification {
            tbs_other_notification: Signed::from_tlv(&r.expect(NotificationMetadata::TAG)?)?,
            euicc_notification_signature: EcdsaSignature::from_tlv(
                &r.expect(EcdsaSignature::TAG)?,
            )?,
            euicc_certificate: certificate(&mut r)?,
            eum_certificate: certificate(&mut r)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.raw(self.tbs_other_notification.raw());
            self.euicc_notification_signature.write(w);
            w.raw(&self.euicc_certificate);
            w.raw(&self.eum_certificate);
        });
    }
}

inherent_codec!(
    NotificationMetadata,
    PendingNotification,
    ProfileInstallationResult,
    ProfileInstallationResultData,
    FinalResult,
    SuccessResult,
    ErrorResult,
    OtherSignedNotification,
);
