//! The Bound Profile Package and the ES8+ commands inside it (SGP.22 §2.5.4,
//! §5.5): InitialiseSecureChannel (`BF23`), ConfigureISDP (`BF24`),
//! StoreMetadata (`BF25`, also the `profileMetadata` of AuthenticateClient)
//! and ReplaceSessionKeys (`BF26`).
//!
//! The BPP segments (`87`, `88`, `86`) are opaque here: their values are the
//! SCP03t ciphertext and MAC the crypto module produces.

use std::fmt;

use zeroize::Zeroize;

use super::{inherent_codec, named_integer, EcdsaSignature, IccidBcd, TransactionId};
use crate::asn1::der::{BitString, DerCodec, Oid, Reader, Tag, Tlv, Writer};
use crate::asn1::rsp::NotificationEvent;
use crate::asn1::Asn1Error;

named_integer! {
    /// `RemoteOpId ::= [2] INTEGER` (tag `82`).
    RemoteOpId {
        /// `installBoundProfilePackage(1)`, the only value v2.2 defines.
        InstallBoundProfilePackage = 1,
    }
}

/// `InitialiseSecureChannelRequest ::= [35] SEQUENCE` (tag `BF23`, §5.5.1),
/// the first element of the BPP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialiseSecureChannelRequest {
    /// `remoteOpId [2]`: installBoundProfilePackage.
    pub remote_op_id: RemoteOpId,
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `controlRefTemplate [6]` (tag `A6`).
    pub control_ref_template: ControlRefTemplate,
    /// `smdpOtpk [APPLICATION 73]` (tag `5F49`): otPK.DP.ECKA.
    pub smdp_otpk: Vec<u8>,
    /// `smdpSign [APPLICATION 55]` (tag `5F37`).
    pub smdp_sign: EcdsaSignature,
}

impl InitialiseSecureChannelRequest {
    /// Tag `BF23`.
    pub const TAG: Tag = Tag::new(0xBF23);

    /// What smdpSign covers (§5.5.1): the TLVs remoteOpId, transactionId,
    /// controlRefTemplate, smdpOtpk, then euiccOtpk (`5F49`, as received in
    /// the PrepareDownloadResponse).
    pub fn signed_data(&self, euicc_otpk: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        self.write_unsigned(&mut w);
        w.tlv(Tag::new(0x5F49), euicc_otpk);
        w.into_bytes()
    }

    fn write_unsigned(&self, w: &mut Writer) {
        w.integer(Tag::new(0x82), self.remote_op_id.to_i64());
        w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
        self.control_ref_template.write(w);
        w.tlv(Tag::new(0x5F49), &self.smdp_otpk);
    }
}

impl DerCodec for InitialiseSecureChannelRequest {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<InitialiseSecureChannelRequest, Asn1Error> {
        const CTX: &str = "InitialiseSecureChannelRequest";
        tlv.expect_tag(InitialiseSecureChannelRequest::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = InitialiseSecureChannelRequest {
            remote_op_id: RemoteOpId::from_i64(r.expect(Tag::new(0x82))?.integer(CTX)?),
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            control_ref_template: ControlRefTemplate::from_tlv(
                &r.expect(ControlRefTemplate::TAG)?,
            )?,
            smdp_otpk: r.expect(Tag::new(0x5F49))?.octet_string(CTX)?.to_vec(),
            smdp_sign: EcdsaSignature::from_tlv(&r.expect(EcdsaSignature::TAG)?)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(InitialiseSecureChannelRequest::TAG, |w| {
            self.write_unsigned(w);
            self.smdp_sign.write(w);
        });
    }
}

/// `ControlRefTemplate ::= SEQUENCE` under `[6] IMPLICIT` (tag `A6`): the
/// key agreement CRT of GlobalPlatform Card Specification §6.4.2.3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlRefTemplate {
    /// `keyType [0] Octet1`: `88` (AES).
    pub key_type: u8,
    /// `keyLen [1] Octet1`: `10` (16 octets).
    pub key_len: u8,
    /// `hostId [4] OctetTo16`.
    pub host_id: Vec<u8>,
}

impl ControlRefTemplate {
    /// Tag `A6`.
    pub const TAG: Tag = Tag::new(0xA6);
}

impl DerCodec for ControlRefTemplate {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ControlRefTemplate, Asn1Error> {
        const CTX: &str = "ControlRefTemplate";
        tlv.expect_tag(ControlRefTemplate::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let [key_type] = r.expect(Tag::new(0x80))?.octets::<1>(CTX)?;
        let [key_len] = r.expect(Tag::new(0x81))?.octets::<1>(CTX)?;
        let host_id = r.expect(Tag::new(0x84))?.octets_sized(1, 16, CTX)?.to_vec();
        r.finish()?;
        Ok(ControlRefTemplate {
            key_type,
            key_len,
            host_id,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ControlRefTemplate::TAG, |w| {
            w.tlv(Tag::new(0x80), &[self.key_type]);
            w.tlv(Tag::new(0x81), &[self.key_len]);
            w.tlv(Tag::new(0x84), &self.host_id);
        });
    }
}

/// `ConfigureISDPRequest ::= [36] SEQUENCE` (tag `BF24`, §5.5.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfigureIsdpRequest {
    /// `dpProprietaryData [24]` (tag `B8`).
    pub dp_proprietary_data: Option<DpProprietaryData>,
}

impl ConfigureIsdpRequest {
    /// Tag `BF24`.
    pub const TAG: Tag = Tag::new(0xBF24);
}

impl DerCodec for ConfigureIsdpRequest {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ConfigureIsdpRequest, Asn1Error> {
        const CTX: &str = "ConfigureISDPRequest";
        tlv.expect_tag(ConfigureIsdpRequest::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = ConfigureIsdpRequest {
            dp_proprietary_data: r
                .optional(DpProprietaryData::TAG)?
                .map(|t| DpProprietaryData::from_tlv(&t))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ConfigureIsdpRequest::TAG, |w| {
            if let Some(d) = &self.dp_proprietary_data {
                d.write(w);
            }
        });
    }
}

/// `DpProprietaryData ::= SEQUENCE` under `[24]` (tag `B8`): the SM-DP+ OID,
/// then any data objects the SM-DP+ defines (at most 128 octets in all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpProprietaryData {
    /// `dpOid OBJECT IDENTIFIER`.
    pub dp_oid: Oid,
    /// The SM-DP+'s own data objects, as TLVs.
    pub additional: Vec<Vec<u8>>,
}

impl DpProprietaryData {
    /// Tag `B8`.
    pub const TAG: Tag = Tag::new(0xB8);
}

impl DerCodec for DpProprietaryData {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<DpProprietaryData, Asn1Error> {
        const CTX: &str = "DpProprietaryData";
        tlv.expect_tag(DpProprietaryData::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(DpProprietaryData {
            dp_oid: r.expect(Tag::OID)?.oid(CTX)?,
            additional: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(DpProprietaryData::TAG, |w| {
            w.oid(Tag::OID, &self.dp_oid);
            for a in &self.additional {
                w.raw(a);
            }
        });
    }
}

named_integer! {
    /// `IconType ::= INTEGER`.
    IconType {
        /// `jpg(0)`.
        Jpg = 0,
        /// `png(1)`.
        Png = 1,
    }
}

named_integer! {
    /// `ProfileClass ::= INTEGER`.
    ProfileClass {
        /// `test(0)`.
        Test = 0,
        /// `provisioning(1)`.
        Provisioning = 1,
        /// `operational(2)`, the DEFAULT.
        Operational = 2,
    }
}

/// `StoreMetadataRequest ::= [37] SEQUENCE` (tag `BF25`, §5.5.3): the
/// Profile Metadata. Sent in clear as `profileMetadata` by AuthenticateClient
/// (§5.6.3) and MAC-protected in the BPP's `88` segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMetadataRequest {
    /// `iccid` (tag `5A`).
    pub iccid: IccidBcd,
    /// `serviceProviderName [17] UTF8String (SIZE(0..32))` (tag `91`).
    pub service_provider_name: String,
    /// `profileName [18] UTF8String (SIZE(0..64))` (tag `92`).
    pub profile_name: String,
    /// `iconType [19]` (tag `93`).
    pub icon_type: Option<IconType>,
    /// `icon [20] OCTET STRING (SIZE(0..1024))` (tag `94`); only with
    /// `icon_type`.
    pub icon: Option<Vec<u8>>,
    /// `profileClass [21] ProfileClass DEFAULT operational` (tag `95`).
    /// Presence is kept as received: DER says to omit the DEFAULT
    /// (X.690 §11.5), but some SM-DP+ (osmo-smdpp) send `95 01 02`.
    pub profile_class: Option<ProfileClass>,
    /// `notificationConfigurationInfo [22]` (tag `B6`).
    pub notification_configuration_info: Option<Vec<NotificationConfigurationInformation>>,
    /// `profileOwner [23] OperatorId` (tag `B7`).
    pub profile_owner: Option<OperatorId>,
    /// `profilePolicyRules [25] PprIds` (tag `99`).
    pub profile_policy_rules: Option<BitString>,
}

impl StoreMetadataRequest {
    /// Tag `BF25`.
    pub const TAG: Tag = Tag::new(0xBF25);
}

fn utf8_max(tlv: &Tlv<'_>, max: usize, context: &'static str) -> Result<String, Asn1Error> {
    let s = tlv.utf8(context)?;
    if s.chars().count() > max {
        return Err(Asn1Error::invalid(context, "string longer than its SIZE"));
    }
    Ok(s.to_owned())
}

impl DerCodec for StoreMetadataRequest {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<StoreMetadataRequest, Asn1Error> {
        const CTX: &str = "StoreMetadataRequest";
        tlv.expect_tag(StoreMetadataRequest::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = StoreMetadataRequest {
            iccid: IccidBcd::from_tlv(&r.expect(IccidBcd::TAG)?)?,
            service_provider_name: utf8_max(&r.expect(Tag::new(0x91))?, 32, CTX)?,
            profile_name: utf8_max(&r.expect(Tag::new(0x92))?, 64, CTX)?,
            icon_type: r
                .optional(Tag::new(0x93))?
                .map(|t| t.integer(CTX).map(IconType::from_i64))
                .transpose()?,
            icon: r
                .optional(Tag::new(0x94))?
                .map(|t| t.octets_sized(0, 1024, CTX).map(<[u8]>::to_vec))
                .transpose()?,
            profile_class: r
                .optional(Tag::new(0x95))?
                .map(|t| t.integer(CTX).map(ProfileClass::from_i64))
                .transpose()?,
            notification_configuration_info: r
                .optional(Tag::new(0xB6))?
                .map(|t| {
                    let mut list = t.children(CTX)?;
                    let mut out = Vec::new();
                    while let Some(item) = list.next_tlv()? {
                        out.push(NotificationConfigurationInformation::from_tlv(&item)?);
                    }
                    Ok::<_, Asn1Error>(out)
                })
                .transpose()?,
            profile_owner: r
                .optional(OperatorId::TAG)?
                .map(|t| OperatorId::from_tlv(&t))
                .transpose()?,
            profile_policy_rules: r
                .optional(Tag::new(0x99))?
                .map(|t| t.bit_string(CTX))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(StoreMetadataRequest::TAG, |w| {
            self.iccid.write(w);
            w.utf8(Tag::new(0x91), &self.service_provider_name);
            w.utf8(Tag::new(0x92), &self.profile_name);
            if let Some(t) = self.icon_type {
                w.integer(Tag::new(0x93), t.to_i64());
            }
            if let Some(icon) = &self.icon {
                w.tlv(Tag::new(0x94), icon);
            }
            if let Some(c) = self.profile_class {
                w.integer(Tag::new(0x95), c.to_i64());
            }
            if let Some(list) = &self.notification_configuration_info {
                w.constructed(Tag::new(0xB6), |w| {
                    for item in list {
                        item.write(w);
                    }
                });
            }
            if let Some(o) = &self.profile_owner {
                o.write(w);
            }
            if let Some(p) = &self.profile_policy_rules {
                w.bit_string(Tag::new(0x99), p);
            }
        });
    }
}

/// `NotificationConfigurationInformation ::= SEQUENCE` (automatically
/// tagged): where to send which notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationConfigurationInformation {
    /// `profileManagementOperation [0] NotificationEvent`.
    pub profile_management_operation: NotificationEvent,
    /// `notificationAddress [1] UTF8String`: FQDN.
    pub notification_address: String,
}

impl DerCodec for NotificationConfigurationInformation {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<NotificationConfigurationInformation, Asn1Error> {
        const CTX: &str = "NotificationConfigurationInformation";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = NotificationConfigurationInformation {
            profile_management_operation: NotificationEvent(
                r.expect(Tag::new(0x80))?.bit_string(CTX)?,
            ),
            notification_address: r.expect(Tag::new(0x81))?.utf8(CTX)?.to_owned(),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.bit_string(Tag::new(0x80), &self.profile_management_operation.0);
            w.utf8(Tag::new(0x81), &self.notification_address);
        });
    }
}

/// `OperatorId ::= SEQUENCE` (automatically tagged) under `[23]` (tag `B7`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorId {
    /// `mccMnc [0] OCTET STRING (SIZE(3))`, coded as in 3GPP TS 24.008.
    pub mcc_mnc: [u8; 3],
    /// `gid1 [1]`.
    pub gid1: Option<Vec<u8>>,
    /// `gid2 [2]`.
    pub gid2: Option<Vec<u8>>,
}

impl OperatorId {
    /// Tag `B7` (`profileOwner [23]`).
    pub const TAG: Tag = Tag::new(0xB7);
}

impl DerCodec for OperatorId {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<OperatorId, Asn1Error> {
        const CTX: &str = "OperatorId";
        tlv.expect_tag(OperatorId::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let opt = |r: &mut Reader<'_>, tag| -> Result<Option<Vec<u8>>, Asn1Error> {
            r.optional(Tag::new(tag))?
                .map(|t| t.octet_string(CTX).map(<[u8]>::to_vec))
                .transpose()
        };
        let out = OperatorId {
            mcc_mnc: r.expect(Tag::new(0x80))?.octets::<3>(CTX)?,
            gid1: opt(&mut r, 0x81)?,
            gid2: opt(&mut r, 0x82)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(OperatorId::TAG, |w| {
            w.tlv(Tag::new(0x80), &self.mcc_mnc);
            if let Some(g) = &self.gid1 {
                w.tlv(Tag::new(0x81), g);
            }
            if let Some(g) = &self.gid2 {
                w.tlv(Tag::new(0x82), g);
            }
        });
    }
}

/// `ReplaceSessionKeysRequest ::= [38] SEQUENCE` (tag `BF26`, §5.5.4),
/// automatically tagged: the Profile Protection Keys and their initial MAC
/// chaining value. Secret: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplaceSessionKeysRequest {
    /// `initialMacChainingValue [0]`.
    pub initial_mac_chaining_value: Vec<u8>,
    /// `ppkEnc [1]`: PPK-ENC.
    pub ppk_enc: Vec<u8>,
    /// `ppkCmac [2]`: PPK-MAC.
    pub ppk_cmac: Vec<u8>,
}

impl ReplaceSessionKeysRequest {
    /// Tag `BF26`.
    pub const TAG: Tag = Tag::new(0xBF26);
}

impl Drop for ReplaceSessionKeysRequest {
    fn drop(&mut self) {
        self.initial_mac_chaining_value.zeroize();
        self.ppk_enc.zeroize();
        self.ppk_cmac.zeroize();
    }
}

impl fmt::Debug for ReplaceSessionKeysRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaceSessionKeysRequest")
            .finish_non_exhaustive()
    }
}

impl DerCodec for ReplaceSessionKeysRequest {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ReplaceSessionKeysRequest, Asn1Error> {
        const CTX: &str = "ReplaceSessionKeysRequest";
        tlv.expect_tag(ReplaceSessionKeysRequest::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = ReplaceSessionKeysRequest {
            initial_mac_chaining_value: r.expect(Tag::new(0x80))?.octet_string(CTX)?.to_vec(),
            ppk_enc: r.expect(Tag::new(0x81))?.octet_string(CTX)?.to_vec(),
            ppk_cmac: r.expect(Tag::new(0x82))?.octet_string(CTX)?.to_vec(),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(ReplaceSessionKeysRequest::TAG, |w| {
            w.tlv(Tag::new(0x80), &self.initial_mac_chaining_value);
            w.tlv(Tag::new(0x81), &self.ppk_enc);
            w.tlv(Tag::new(0x82), &self.ppk_cmac);
        });
    }
}

/// `BoundProfilePackage ::= [54] SEQUENCE` (tag `BF36`, §2.5.4), the
/// `boundProfilePackage` of GetBoundProfilePackage (§5.6.2).
///
/// Each segment is kept as the value of its TLV (ciphertext and/or MAC);
/// the tags are `87` in the first and second sequences, `88` and `86`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundProfilePackage {
    /// `initialiseSecureChannelRequest [35]` (tag `BF23`).
    pub initialise_secure_channel_request: InitialiseSecureChannelRequest,
    /// `firstSequenceOf87 [0]` (tag `A0`): ConfigureISDP.
    pub first_sequence_of_87: Vec<Vec<u8>>,
    /// `sequenceOf88 [1]` (tag `A1`): StoreMetadata, MAC only.
    pub sequence_of_88: Vec<Vec<u8>>,
    /// `secondSequenceOf87 [2]` (tag `A2`): ReplaceSessionKeys.
    pub second_sequence_of_87: Option<Vec<Vec<u8>>>,
    /// `sequenceOf86 [3]` (tag `A3`): the protected profile package.
    pub sequence_of_86: Vec<Vec<u8>>,
}

impl BoundProfilePackage {
    /// Tag `BF36`.
    pub const TAG: Tag = Tag::new(0xBF36);
    /// Tag of ConfigureISDP and ReplaceSessionKeys segments.
    pub const TAG_87: Tag = Tag::new(0x87);
    /// Tag of StoreMetadata segments.
    pub const TAG_88: Tag = Tag::new(0x88);
    /// Tag of profile package segments.
    pub const TAG_86: Tag = Tag::new(0x86);
}

fn segments(tlv: &Tlv<'_>, segment_tag: Tag) -> Result<Vec<Vec<u8>>, Asn1Error> {
    const CTX: &str = "BoundProfilePackage segments";
    let mut r = tlv.children(CTX)?;
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.expect(segment_tag)?.octet_string(CTX)?.to_vec());
    }
    Ok(out)
}

fn write_segments(w: &mut Writer, tag: Tag, segment_tag: Tag, list: &[Vec<u8>]) {
    w.constructed(tag, |w| {
        for s in list {
            w.tlv(segment_tag, s);
        }
    });
}

impl DerCodec for BoundProfilePackage {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<BoundProfilePackage, Asn1Error> {
        const CTX: &str = "BoundProfilePackage";
        tlv.expect_tag(BoundProfilePackage::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = BoundProfilePackage {
            initialise_secure_channel_request: InitialiseSecureChannelRequest::from_tlv(
                &r.expect(InitialiseSecureChannelRequest::TAG)?,
            )?,
            first_sequence_of_87: segments(&r.expect(Tag::new(0xA0))?, Self::TAG_87)?,
            sequence_of_88: segments(&r.expect(Tag::new(0xA1))?, Self::TAG_88)?,
            second_sequence_of_87: r
                .optional(Tag::new(0xA2))?
                .map(|t| segments(&t, Self::TAG_87))
                .transpose()?,
            sequence_of_86: segments(&r.expect(Tag::new(0xA3))?, Self::TAG_86)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(BoundProfilePackage::TAG, |w| {
            self.initialise_secure_channel_request.write(w);
            write_segments(w, Tag::new(0xA0), Self::TAG_87, &self.first_sequence_of_87);
            write_segments(w, Tag::new(0xA1), Self::TAG_88, &self.sequence_of_88);
            if let Some(second) = &self.second_sequence_of_87 {
                write_segments(w, Tag::new(0xA2), Self::TAG_87, second);
            }
            write_segments(w, Tag::new(0xA3), Self::TAG_86, &self.sequence_of_86);
        });
    }
}

inherent_codec!(
    InitialiseSecureChannelRequest,
    ControlRefTemplate,
    ConfigureIsdpRequest,
    DpProprietaryData,
    StoreMetadataRequest,
    NotificationConfigurationInformation,
    OperatorId,
    ReplaceSessionKeysRequest,
    BoundProfilePackage,
);
