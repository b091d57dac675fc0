//! The binding handshake: what the SM-DP+ signs in ES9+.AuthenticateClient
//! (§5.6.3) and what the eUICC answers through ES9+.GetBoundProfilePackage
//! (§5.6.2), both defined with ES10b.PrepareDownload (§5.7.5).

use super::{inherent_codec, named_integer, EcdsaSignature, TransactionId};
use crate::asn1::der::{DerCodec, Signed, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

/// `SmdpSigned2 ::= SEQUENCE` (§5.7.5), returned as `smdpSigned2` from
/// AuthenticateClient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmdpSigned2 {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `ccRequiredFlag BOOLEAN`: whether a confirmation code is required.
    pub cc_required_flag: bool,
    /// `bppEuiccOtpk [APPLICATION 73]` (tag `5F49`): the otPK.EUICC.ECKA a
    /// previously bound BPP used, on a retry.
    pub bpp_euicc_otpk: Option<Vec<u8>>,
}

impl SmdpSigned2 {
    /// What smdpSignature2 covers: `smdpSigned2 || euiccSignature1` (the
    /// latter as its `5F37` TLV), §5.7.5.
    pub fn signed_data(&self, euicc_signature1: &EcdsaSignature) -> Vec<u8> {
        let mut out = self.encode();
        out.extend_from_slice(&euicc_signature1.to_tlv());
        out
    }
}

impl DerCodec for SmdpSigned2 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<SmdpSigned2, Asn1Error> {
        const CTX: &str = "SmdpSigned2";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = SmdpSigned2 {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            cc_required_flag: r.expect(Tag::BOOLEAN)?.boolean(CTX)?,
            bpp_euicc_otpk: r
                .optional(Tag::new(0x5F49))?
                .map(|t| t.octet_string(CTX).map(<[u8]>::to_vec))
                .transpose()?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.boolean(Tag::BOOLEAN, self.cc_required_flag);
            if let Some(otpk) = &self.bpp_euicc_otpk {
                w.tlv(Tag::new(0x5F49), otpk);
            }
        });
    }
}

/// `PrepareDownloadResponse ::= [33] CHOICE` (tag `BF21`, §5.7.5), the
/// `prepareDownloadResponse` of ES9+.GetBoundProfilePackage; explicitly
/// tagged: `BF21 { A0 {...} }` or `BF21 { A1 {...} }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrepareDownloadResponse {
    /// `downloadResponseOk [0]`.
    Ok(PrepareDownloadResponseOk),
    /// `downloadResponseError [1]`.
    Error(PrepareDownloadResponseError),
}

impl PrepareDownloadResponse {
    /// Tag `BF21`.
    pub const TAG: Tag = Tag::new(0xBF21);
}

impl DerCodec for PrepareDownloadResponse {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PrepareDownloadResponse, Asn1Error> {
        const CTX: &str = "PrepareDownloadResponse";
        tlv.expect_tag(PrepareDownloadResponse::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let inner = r.next_tlv()?.ok_or(Asn1Error::MissingElement {
            context: CTX,
            expected: PrepareDownloadResponseOk::TAG,
        })?;
        let out = if inner.tag() == PrepareDownloadResponseError::TAG {
            PrepareDownloadResponse::Error(PrepareDownloadResponseError::from_tlv(&inner)?)
        } else {
            PrepareDownloadResponse::Ok(PrepareDownloadResponseOk::from_tlv(&inner)?)
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(PrepareDownloadResponse::TAG, |w| match self {
            PrepareDownloadResponse::Ok(ok) => ok.write(w),
            PrepareDownloadResponse::Error(e) => e.write(w),
        });
    }
}

/// `PrepareDownloadResponseOk ::= SEQUENCE` under `[0]` (tag `A0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareDownloadResponseOk {
    /// `euiccSigned2`, with the bytes euiccSignature2 covers as received.
    pub euicc_signed2: Signed<EuiccSigned2>,
    /// `euiccSignature2 [APPLICATION 55]` (tag `5F37`).
    pub euicc_signature2: EcdsaSignature,
}

impl PrepareDownloadResponseOk {
    /// Tag `A0`.
    pub const TAG: Tag = Tag::new(0xA0);

    /// What euiccSignature2 covers: `euiccSigned2 || smdpSignature2` (the
    /// former as received, the latter as its `5F37` TLV), §5.7.5.
    pub fn signed_data(&self, smdp_signature2: &EcdsaSignature) -> Vec<u8> {
        let mut out = self.euicc_signed2.raw().to_vec();
        out.extend_from_slice(&smdp_signature2.to_tlv());
        out
    }
}

impl DerCodec for PrepareDownloadResponseOk {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PrepareDownloadResponseOk, Asn1Error> {
        const CTX: &str = "PrepareDownloadResponseOk";
        tlv.expect_tag(PrepareDownloadResponseOk::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = PrepareDownloadResponseOk {
            euicc_signed2: Signed::from_tlv(&r.expect(Tag::SEQUENCE)?)?,
            euicc_signature2: EcdsaSignature::from_tlv(&r.expect(EcdsaSignature::TAG)?)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(PrepareDownloadResponseOk::TAG, |w| {
            w.raw(self.euicc_signed2.raw());
            self.euicc_signature2.write(w);
        });
    }
}

/// `EUICCSigned2 ::= SEQUENCE` (§5.7.5): what euiccSignature2 covers
/// (together with smdpSignature2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EuiccSigned2 {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `euiccOtpk [APPLICATION 73]` (tag `5F49`): otPK.EUICC.ECKA, an
    /// uncompressed point.
    pub euicc_otpk: Vec<u8>,
    /// `hashCc Octet32 OPTIONAL`: SHA-256(SHA-256(code) || transactionId).
    pub hash_cc: Option<[u8; 32]>,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl DerCodec for EuiccSigned2 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<EuiccSigned2, Asn1Error> {
        const CTX: &str = "EUICCSigned2";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(EuiccSigned2 {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            euicc_otpk: r.expect(Tag::new(0x5F49))?.octet_string(CTX)?.to_vec(),
            hash_cc: r
                .optional(Tag::OCTET_STRING)?
                .map(|t| t.octets::<32>(CTX))
                .transpose()?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.tlv(Tag::new(0x5F49), &self.euicc_otpk);
            if let Some(h) = &self.hash_cc {
                w.tlv(Tag::OCTET_STRING, h);
            }
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

named_integer! {
    /// `DownloadErrorCode ::= INTEGER` (§5.7.5).
    DownloadErrorCode {
        /// `invalidCertificate(1)`.
        InvalidCertificate = 1,
        /// `invalidSignature(2)`.
        InvalidSignature = 2,
        /// `unsupportedCurve(3)`.
        UnsupportedCurve = 3,
        /// `noSessionContext(4)`.
        NoSessionContext = 4,
        /// `invalidTransactionId(5)`.
        InvalidTransactionId = 5,
        /// `undefinedError(127)`.
        UndefinedError = 127,
    }
}

/// `PrepareDownloadResponseError ::= SEQUENCE` under `[1]` (tag `A1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareDownloadResponseError {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `downloadErrorCode`.
    pub download_error_code: DownloadErrorCode,
}

impl PrepareDownloadResponseError {
    /// Tag `A1`.
    pub const TAG: Tag = Tag::new(0xA1);
}

impl DerCodec for PrepareDownloadResponseError {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<PrepareDownloadResponseError, Asn1Error> {
        const CTX: &str = "PrepareDownloadResponseError";
        tlv.expect_tag(PrepareDownloadResponseError::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = PrepareDownloadResponseError {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            download_error_code: DownloadErrorCode::from_i64(r.expect(Tag::INTEGER)?.integer(CTX)?),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(PrepareDownloadResponseError::TAG, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.integer(Tag::INTEGER, self.download_error_code.to_i64());
        });
    }
}

inherent_codec!(
    SmdpSigned2,
    PrepareDownloadResponse,
    PrepareDownloadResponseOk,
    PrepareDownloadResponseError,
    EuiccSigned2,
);
