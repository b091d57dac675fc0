//! Session cancellation: the `cancelSessionResponse` of ES9+.CancelSession
//! (SGP.22 §5.6.5), made by ES10b.CancelSession (§5.7.14).

use super::{inherent_codec, named_integer, EcdsaSignature, TransactionId};
use crate::asn1::der::{DerCodec, Oid, Signed, Tag, Tlv, Writer};
use crate::asn1::Asn1Error;

named_integer! {
    /// `CancelSessionReason ::= INTEGER` (§5.7.14). All but `postponed`
    /// and `timeout` terminate the download order.
    CancelSessionReason {
        /// `endUserRejection(0)`.
        EndUserRejection = 0,
        /// `postponed(1)`.
        Postponed = 1,
        /// `timeout(2)`.
        Timeout = 2,
        /// `pprNotAllowed(3)`.
        PprNotAllowed = 3,
        /// `metadataMismatch(4)`.
        MetadataMismatch = 4,
        /// `loadBppExecutionError(5)`.
        LoadBppExecutionError = 5,
        /// `undefinedReason(127)`.
        UndefinedReason = 127,
    }
}

named_integer! {
    /// `cancelSessionResponseError INTEGER` (§5.7.14).
    CancelSessionErrorCode {
        /// `invalidTransactionId(5)`.
        InvalidTransactionId = 5,
        /// `undefinedError(127)`.
        UndefinedError = 127,
    }
}

/// `CancelSessionResponse ::= [65] CHOICE` (tag `BF41`, §5.7.14); explicitly
/// tagged: `BF41 { A0 {...} }` or `BF41 { 81 code }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelSessionResponse {
    /// `cancelSessionResponseOk [0]` (tag `A0`).
    Ok(CancelSessionResponseOk),
    /// `cancelSessionResponseError [1] INTEGER` (tag `81`).
    Error(CancelSessionErrorCode),
}

impl CancelSessionResponse {
    /// Tag `BF41`.
    pub const TAG: Tag = Tag::new(0xBF41);
    /// Tag of the error alternative.
    const ERROR_TAG: Tag = Tag::new(0x81);
}

impl DerCodec for CancelSessionResponse {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<CancelSessionResponse, Asn1Error> {
        const CTX: &str = "CancelSessionResponse";
        tlv.expect_tag(CancelSessionResponse::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let inner = r.next_tlv()?.ok_or(Asn1Error::MissingElement {
            context: CTX,
            expected: CancelSessionResponseOk::TAG,
        })?;
        let out = if inner.tag() == CancelSessionResponse::ERROR_TAG {
            CancelSessionResponse::Error(CancelSessionErrorCode::from_i64(inner.integer(CTX)?))
        } else {
            CancelSessionResponse::Ok(CancelSessionResponseOk::from_tlv(&inner)?)
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(CancelSessionResponse::TAG, |w| match self {
            CancelSessionResponse::Ok(ok) => ok.write(w),
            CancelSessionResponse::Error(code) => {
                w.integer(CancelSessionResponse::ERROR_TAG, code.to_i64())
            }
        });
    }
}

/// `CancelSessionResponseOk ::= SEQUENCE` under `[0]` (tag `A0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelSessionResponseOk {
    /// `euiccCancelSessionSigned`, with the bytes the signature covers as
    /// received.
    pub euicc_cancel_session_signed: Signed<EuiccCancelSessionSigned>,
    /// `euiccCancelSessionSignature [APPLICATION 55]` (tag `5F37`).
    pub euicc_cancel_session_signature: EcdsaSignature,
}

impl CancelSessionResponseOk {
    /// Tag `A0`.
    pub const TAG: Tag = Tag::new(0xA0);
}

impl DerCodec for CancelSessionResponseOk {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<CancelSessionResponseOk, Asn1Error> {
        const CTX: &str = "CancelSessionResponseOk";
        tlv.expect_tag(CancelSessionResponseOk::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = CancelSessionResponseOk {
            euicc_cancel_session_signed: Signed::from_tlv(&r.expect(Tag::SEQUENCE)?)?,
            euicc_cancel_session_signature: EcdsaSignature::from_tlv(
                &r.expect(EcdsaSignature::TAG)?,
            )?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(CancelSessionResponseOk::TAG, |w| {
            w.raw(self.euicc_cancel_session_signed.raw());
            self.euicc_cancel_session_signature.write(w);
        });
    }
}

/// `EuiccCancelSessionSigned ::= SEQUENCE` (§5.7.14). No component is
/// tagged, so the module's AUTOMATIC TAGS give `80`, `81`, `82`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EuiccCancelSessionSigned {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `smdpOid [1] OBJECT IDENTIFIER`: the SM-DP+ OID from CERT.DPauth.
    pub smdp_oid: Oid,
    /// `reason [2] CancelSessionReason`.
    pub reason: CancelSessionReason,
}

impl DerCodec for EuiccCancelSessionSigned {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<EuiccCancelSessionSigned, Asn1Error> {
        const CTX: &str = "EuiccCancelSessionSigned";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = EuiccCancelSessionSigned {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            smdp_oid: r.expect(Tag::new(0x81))?.oid(CTX)?,
            reason: CancelSessionReason::from_i64(r.expect(Tag::new(0x82))?.integer(CTX)?),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.oid(Tag::new(0x81), &self.smdp_oid);
            w.integer(Tag::new(0x82), self.reason.to_i64());
        });
    }
}

inherent_codec!(
    CancelSessionResponse,
    CancelSessionResponseOk,
    EuiccCancelSessionSigned,
);
