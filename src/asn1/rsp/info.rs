//! What the eUICC and the device say about themselves: `EUICCInfo1`,
//! `EUICCInfo2` (SGP.22 §5.7.8 ES10b.GetEUICCInfo) and `DeviceInfo`
//! (§5.7.13, inside ctxParams1).

use super::{inherent_codec, named_integer, ski_list, write_ski_list};
use crate::asn1::der::{BitString, DerCodec, Reader, Tag, Tlv, Version, Writer};
use crate::asn1::Asn1Error;

/// `EUICCInfo1 ::= [32] SEQUENCE` (tag `BF20`, §5.7.8), sent in
/// ES9+.InitiateAuthentication (§5.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EuiccInfo1 {
    /// `svn [2] VersionType`: the SGP.22 version the eUICC supports.
    pub svn: Version,
    /// `euiccCiPKIdListForVerification [9]`: SubjectKeyIdentifiers of the CI
    /// keys the eUICC verifies with, in its order of preference.
    pub ci_pkid_list_for_verification: Vec<Vec<u8>>,
    /// `euiccCiPKIdListForSigning [10]`: SubjectKeyIdentifiers of the CIs
    /// the eUICC's own certificate chains to.
    pub ci_pkid_list_for_signing: Vec<Vec<u8>>,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl EuiccInfo1 {
    /// Tag `BF20`.
    pub const TAG: Tag = Tag::new(0xBF20);
}

impl DerCodec for EuiccInfo1 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<EuiccInfo1, Asn1Error> {
        const CTX: &str = "EUICCInfo1";
        tlv.expect_tag(EuiccInfo1::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(EuiccInfo1 {
            svn: r.expect(Tag::new(0x82))?.version(CTX)?,
            ci_pkid_list_for_verification: ski_list(&r.expect(Tag::new(0xA9))?, CTX)?,
            ci_pkid_list_for_signing: ski_list(&r.expect(Tag::new(0xAA))?, CTX)?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(EuiccInfo1::TAG, |w| {
            w.version(Tag::new(0x82), self.svn);
            write_ski_list(w, Tag::new(0xA9), &self.ci_pkid_list_for_verification);
            write_ski_list(w, Tag::new(0xAA), &self.ci_pkid_list_for_signing);
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

named_integer! {
    /// `euiccCategory [11] INTEGER` of EUICCInfo2.
    EuiccCategory {
        /// `other(0)`.
        OtherCategory = 0,
        /// `basicEuicc(1)`.
        BasicEuicc = 1,
        /// `mediumEuicc(2)`.
        MediumEuicc = 2,
        /// `contactlessEuicc(3)`.
        ContactlessEuicc = 3,
    }
}

/// `EUICCInfo2 ::= [34] SEQUENCE` (tag `BF22`, §5.7.8), carried inside
/// EuiccSigned1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EuiccInfo2 {
    /// `profileVersion [1]`: SIMalliance profile package version.
    pub profile_version: Version,
    /// `svn [2]`: SGP.22 version.
    pub svn: Version,
    /// `euiccFirmwareVer [3]`.
    pub euicc_firmware_ver: Version,
    /// `extCardResource [4]`: ETSI TS 102 226 extended card resource TLVs.
    pub ext_card_resource: Vec<u8>,
    /// `uiccCapability [5] UICCCapability` (named bits, e.g. 1 = USIM).
    pub uicc_capability: BitString,
    /// `ts102241Version [6]`.
    pub ts102241_version: Option<Version>,
    /// `globalplatformVersion [7]`.
    pub globalplatform_version: Option<Version>,
    /// `rspCapability [8] RspCapability` (named bits, e.g. 0 =
    /// additionalProfile).
    pub rsp_capability: BitString,
    /// `euiccCiPKIdListForVerification [9]`.
    pub ci_pkid_list_for_verification: Vec<Vec<u8>>,
    /// `euiccCiPKIdListForSigning [10]`.
    pub ci_pkid_list_for_signing: Vec<Vec<u8>>,
    /// `euiccCategory [11]`.
    pub euicc_category: Option<EuiccCategory>,
    /// `forbiddenProfilePolicyRules [25] PprIds` (tag `99`).
    pub forbidden_profile_policy_rules: Option<BitString>,
    /// `ppVersion VersionType`: Protection Profile version.
    pub pp_version: Version,
    /// `sasAcreditationNumber UTF8String (SIZE(0..64))`.
    pub sas_accreditation_number: String,
    /// `certificationDataObject [12]`.
    pub certification_data_object: Option<CertificationDataObject>,
    /// Elements after the v2.2 components, as received (v2.3+ eUICCs send
    /// e.g. `[15]` additionalEuiccProfilePackageVersions, `[16]`, `[20]`).
    pub extensions: Vec<Vec<u8>>,
}

impl EuiccInfo2 {
    /// Tag `BF22`.
    pub const TAG: Tag = Tag::new(0xBF22);
}

impl DerCodec for EuiccInfo2 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<EuiccInfo2, Asn1Error> {
        const CTX: &str = "EUICCInfo2";
        tlv.expect_tag(EuiccInfo2::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let opt_version = |r: &mut Reader<'_>, tag| -> Result<Option<Version>, Asn1Error> {
            r.optional(Tag::new(tag))?
                .map(|t| t.version(CTX))
                .transpose()
        };
        Ok(EuiccInfo2 {
            profile_version: r.expect(Tag::new(0x81))?.version(CTX)?,
            svn: r.expect(Tag::new(0x82))?.version(CTX)?,
            euicc_firmware_ver: r.expect(Tag::new(0x83))?.version(CTX)?,
            ext_card_resource: r.expect(Tag::new(0x84))?.octet_string(CTX)?.to_vec(),
            uicc_capability: r.expect(Tag::new(0x85))?.bit_string(CTX)?,
            ts102241_version: opt_version(&mut r, 0x86)?,
            globalplatform_version: opt_version(&mut r, 0x87)?,
            rsp_capability: r.expect(Tag::new(0x88))?.bit_string(CTX)?,
            ci_pkid_list_for_verification: ski_list(&r.expect(Tag::new(0xA9))?, CTX)?,
            ci_pkid_list_for_signing: ski_list(&r.expect(Tag::new(0xAA))?, CTX)?,
            euicc_category: r
                .optional(Tag::new(0x8B))?
                .map(|t| t.integer(CTX).map(EuiccCategory::from_i64))
                .transpose()?,
            forbidden_profile_policy_rules: r
                .optional(Tag::new(0x99))?
                .map(|t| t.bit_string(CTX))
                .transpose()?,
            pp_version: r.expect(Tag::OCTET_STRING)?.version(CTX)?,
            sas_accreditation_number: {
                let s = r.expect(Tag::UTF8_STRING)?.utf8(CTX)?;
                if s.chars().count() > 64 {
                    return Err(Asn1Error::invalid(CTX, "sasAcreditationNumber over 64"));
                }
                s.to_owned()
            },
            certification_data_object: r
                .optional(CertificationDataObject::TAG)?
                .map(|t| CertificationDataObject::from_tlv(&t))
                .transpose()?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(EuiccInfo2::TAG, |w| {
            w.version(Tag::new(0x81), self.profile_version);
            w.version(Tag::new(0x82), self.svn);
            w.version(Tag::new(0x83), self.euicc_firmware_ver);
            w.tlv(Tag::new(0x84), &self.ext_card_resource);
            w.bit_string(Tag::new(0x85), &self.uicc_capability);
            if let Some(v) = self.ts102241_version {
                w.version(Tag::new(0x86), v);
            }
            if let Some(v) = self.globalplatform_version {
                w.version(Tag::new(0x87), v);
            }
            w.bit_string(Tag::new(0x88), &self.rsp_capability);
            write_ski_list(w, Tag::new(0xA9), &self.ci_pkid_list_for_verification);
            write_ski_list(w, Tag::new(0xAA), &self.ci_pkid_list_for_signing);
            if let Some(c) = self.euicc_category {
                w.integer(Tag::new(0x8B), c.to_i64());
            }
            if let Some(p) = &self.forbidden_profile_policy_rules {
                w.bit_string(Tag::new(0x99), p);
            }
            w.version(Tag::OCTET_STRING, self.pp_version);
            w.utf8(Tag::UTF8_STRING, &self.sas_accreditation_number);
            if let Some(c) = &self.certification_data_object {
                c.write(w);
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `CertificationDataObject` under `[12]` (tag `AC`): GlobalPlatform DLOA
/// platform label and discovery URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificationDataObject {
    /// `platformLabel [0] UTF8String`.
    pub platform_label: String,
    /// `discoveryBaseURL [1] UTF8String`.
    pub discovery_base_url: String,
}

impl CertificationDataObject {
    /// Tag `AC` (`[12]` in EUICCInfo2).
    pub const TAG: Tag = Tag::new(0xAC);
}

impl DerCodec for CertificationDataObject {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<CertificationDataObject, Asn1Error> {
        const CTX: &str = "CertificationDataObject";
        tlv.expect_tag(CertificationDataObject::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = CertificationDataObject {
            platform_label: r.expect(Tag::new(0x80))?.utf8(CTX)?.to_owned(),
            discovery_base_url: r.expect(Tag::new(0x81))?.utf8(CTX)?.to_owned(),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(CertificationDataObject::TAG, |w| {
            w.utf8(Tag::new(0x80), &self.platform_label);
            w.utf8(Tag::new(0x81), &self.discovery_base_url);
        });
    }
}

/// `DeviceInfo ::= SEQUENCE` (§5.7.13), automatically tagged; inside
/// CtxParamsForCommonAuthentication it sits under `[1]` (tag `A1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `tac [0] Octet4`: the Type Allocation Code of the device.
    pub tac: [u8; 4],
    /// `deviceCapabilities [1]`.
    pub device_capabilities: DeviceCapabilities,
    /// `imei [2] Octet8`.
    pub imei: Option<[u8; 8]>,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl DeviceInfo {
    /// Tag `A1`: `deviceInfo [1]` in CtxParamsForCommonAuthentication.
    pub const TAG: Tag = Tag::new(0xA1);
}

impl DerCodec for DeviceInfo {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<DeviceInfo, Asn1Error> {
        const CTX: &str = "DeviceInfo";
        tlv.expect_tag(DeviceInfo::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(DeviceInfo {
            tac: r.expect(Tag::new(0x80))?.octets::<4>(CTX)?,
            device_capabilities: DeviceCapabilities::from_tlv(&r.expect(DeviceCapabilities::TAG)?)?,
            imei: r
                .optional(Tag::new(0x82))?
                .map(|t| t.octets::<8>(CTX))
                .transpose()?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(DeviceInfo::TAG, |w| {
            w.tlv(Tag::new(0x80), &self.tac);
            self.device_capabilities.write(w);
            if let Some(imei) = &self.imei {
                w.tlv(Tag::new(0x82), imei);
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `DeviceCapabilities ::= SEQUENCE` (§5.7.13): the highest release the
/// device fully supports per radio / feature, each OPTIONAL, automatically
/// tagged `[0]` to `[10]`; under `[1]` (tag `A1`) in DeviceInfo.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeviceCapabilities {
    /// `gsmSupportedRelease [0]`.
    pub gsm_supported_release: Option<Version>,
    /// `utranSupportedRelease [1]`.
    pub utran_supported_release: Option<Version>,
    /// `cdma2000onexSupportedRelease [2]`.
    pub cdma2000onex_supported_release: Option<Version>,
    /// `cdma2000hrpdSupportedRelease [3]`.
    pub cdma2000hrpd_supported_release: Option<Version>,
    /// `cdma2000ehrpdSupportedRelease [4]`.
    pub cdma2000ehrpd_supported_release: Option<Version>,
    /// `eutranEpcSupportedRelease [5]`.
    pub eutran_epc_supported_release: Option<Version>,
    /// `contactlessSupportedRelease [6]`.
    pub contactless_supported_release: Option<Version>,
    /// `rspCrlSupportedVersion [7]`.
    pub rsp_crl_supported_version: Option<Version>,
    /// `nrEpcSupportedRelease [8]`.
    pub nr_epc_supported_release: Option<Version>,
    /// `nr5gcSupportedRelease [9]`.
    pub nr5gc_supported_release: Option<Version>,
    /// `eutran5gcSupportedRelease [10]`.
    pub eutran5gc_supported_release: Option<Version>,
    /// Elements after the v2.2 components, as received (newer devices add
    /// e.g. `lpaSvn [11]`).
    pub extensions: Vec<Vec<u8>>,
}

impl DeviceCapabilities {
    /// Tag `A1` (`[1]` in DeviceInfo).
    pub const TAG: Tag = Tag::new(0xA1);

    fn fields_mut(&mut self) -> [&mut Option<Version>; 11] {
        [
            &mut self.gsm_supported_release,
            &mut self.utran_supported_release,
            &mut self.cdma2000onex_supported_release,
            &mut self.cdma2000hrpd_supported_release,
            &mut self.cdma2000ehrpd_supported_release,
            &mut self.eutran_epc_supported_release,
            &mut self.contactless_supported_release,
            &mut self.rsp_crl_supported_version,
            &mut self.nr_epc_supported_release,
            &mut self.nr5gc_supported_release,
            &mut self.eutran5gc_supported_release,
        ]
    }

    fn fields(&self) -> [Option<Version>; 11] {
        [
            self.gsm_supported_release,
            self.utran_supported_release,
            self.cdma2000onex_supported_release,
            self.cdma2000hrpd_supported_release,
            self.cdma2000ehrpd_supported_release,
            self.eutran_epc_supported_release,
            self.contactless_supported_release,
            self.rsp_crl_supported_version,
            self.nr_epc_supported_release,
            self.nr5gc_supported_release,
            self.eutran5gc_supported_release,
        ]
    }
}

impl DerCodec for DeviceCapabilities {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<DeviceCapabilities, Asn1Error> {
        const CTX: &str = "DeviceCapabilities";
        tlv.expect_tag(DeviceCapabilities::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let mut out = DeviceCapabilities::default();
        for (n, field) in (0u32..).zip(out.fields_mut()) {
            if let Some(t) = r.optional(Tag::context(n, false))? {
                *field = Some(t.version(CTX)?);
            }
        }
        out.extensions = r.extensions()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(DeviceCapabilities::TAG, |w| {
            for (n, field) in (0u32..).zip(self.fields()) {
                if let Some(v) = field {
                    w.version(Tag::context(n, false), v);
                }
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

inherent_codec!(
    EuiccInfo1,
    EuiccInfo2,
    DeviceInfo,
    DeviceCapabilities,
    CertificationDataObject
);
