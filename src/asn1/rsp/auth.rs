//! Common mutual authentication (SGP.22 §3.1.2): what the SM-DP+ signs in
//! ES9+.InitiateAuthentication (§5.6.1) and what the eUICC answers through
//! ES9+.AuthenticateClient (§5.6.3), both defined with
//! ES10b.AuthenticateServer (§5.7.13).

use super::{certificate, inherent_codec, named_integer, EcdsaSignature, TransactionId};
use crate::asn1::der::{Class, DerCodec, Signed, Tag, Tlv, Writer};
use crate::asn1::rsp::{DeviceInfo, EuiccInfo2};
use crate::asn1::Asn1Error;

/// `ServerSigned1 ::= SEQUENCE` (§5.7.13): what serverSignature1 covers.
/// The SM-DP+ returns it as `serverSigned1` from InitiateAuthentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSigned1 {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `euiccChallenge [1] Octet16`: the challenge the eUICC sent.
    pub euicc_challenge: [u8; 16],
    /// `serverAddress [3] UTF8String`: the SM-DP+ address.
    pub server_address: String,
    /// `serverChallenge [4] Octet16`: our fresh challenge.
    pub server_challenge: [u8; 16],
}

impl DerCodec for ServerSigned1 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<ServerSigned1, Asn1Error> {
        const CTX: &str = "ServerSigned1";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = ServerSigned1 {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            euicc_challenge: r.expect(Tag::new(0x81))?.octets::<16>(CTX)?,
            server_address: r.expect(Tag::new(0x83))?.utf8(CTX)?.to_owned(),
            server_challenge: r.expect(Tag::new(0x84))?.octets::<16>(CTX)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.tlv(Tag::new(0x81), &self.euicc_challenge);
            w.utf8(Tag::new(0x83), &self.server_address);
            w.tlv(Tag::new(0x84), &self.server_challenge);
        });
    }
}

/// `AuthenticateServerResponse ::= [56] CHOICE` (tag `BF38`, §5.7.13), the
/// `authenticateServerResponse` of ES9+.AuthenticateClient. The CHOICE is
/// tagged, hence explicitly: `BF38 { A0 {...} }` or `BF38 { A1 {...} }`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "decoded once per request and moved whole"
)]
pub enum AuthenticateServerResponse {
    /// `authenticateResponseOk [0]`.
    Ok(AuthenticateResponseOk),
    /// `authenticateResponseError [1]`.
    Error(AuthenticateResponseError),
}

impl AuthenticateServerResponse {
    /// Tag `BF38`.
    pub const TAG: Tag = Tag::new(0xBF38);
}

impl DerCodec for AuthenticateServerResponse {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<AuthenticateServerResponse, Asn1Error> {
        const CTX: &str = "AuthenticateServerResponse";
        tlv.expect_tag(AuthenticateServerResponse::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = match r.peek_tag()? {
            Some(t) if t == AuthenticateResponseOk::TAG => {
                AuthenticateServerResponse::Ok(AuthenticateResponseOk::from_tlv(&r.expect(t)?)?)
            }
            Some(t) if t == AuthenticateResponseError::TAG => AuthenticateServerResponse::Error(
                AuthenticateResponseError::from_tlv(&r.expect(t)?)?,
            ),
            Some(found) => {
                return Err(Asn1Error::UnexpectedTag {
                    context: CTX,
                    expected: AuthenticateResponseOk::TAG,
                    found,
                })
            }
            None => {
                return Err(Asn1Error::MissingElement {
                    context: CTX,
                    expected: AuthenticateResponseOk::TAG,
                })
            }
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(AuthenticateServerResponse::TAG, |w| match self {
            AuthenticateServerResponse::Ok(ok) => ok.write(w),
            AuthenticateServerResponse::Error(e) => e.write(w),
        });
    }
}

/// `AuthenticateResponseOk ::= SEQUENCE` under `[0]` (tag `A0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticateResponseOk {
    /// `euiccSigned1`, with the bytes euiccSignature1 covers as received.
    pub euicc_signed1: Signed<EuiccSigned1>,
    /// `euiccSignature1 [APPLICATION 55]` (tag `5F37`).
    pub euicc_signature1: EcdsaSignature,
    /// `euiccCertificate`: CERT.EUICC.ECDSA, DER as received.
    pub euicc_certificate: Vec<u8>,
    /// `eumCertificate`: CERT.EUM.ECDSA, DER as received.
    pub eum_certificate: Vec<u8>,
}

impl AuthenticateResponseOk {
    /// Tag `A0`.
    pub const TAG: Tag = Tag::new(0xA0);
}

impl DerCodec for AuthenticateResponseOk {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<AuthenticateResponseOk, Asn1Error> {
        const CTX: &str = "AuthenticateResponseOk";
        tlv.expect_tag(AuthenticateResponseOk::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = AuthenticateResponseOk {
            euicc_signed1: Signed::from_tlv(&r.expect(Tag::SEQUENCE)?)?,
            euicc_signature1: EcdsaSignature::from_tlv(&r.expect(EcdsaSignature::TAG)?)?,
            euicc_certificate: certificate(&mut r)?,
            eum_certificate: certificate(&mut r)?,
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(AuthenticateResponseOk::TAG, |w| {
            w.raw(self.euicc_signed1.raw());
            self.euicc_signature1.write(w);
            w.raw(&self.euicc_certificate);
            w.raw(&self.eum_certificate);
        });
    }
}

named_integer! {
    /// `AuthenticateErrorCode ::= INTEGER` (§5.7.13).
    AuthenticateErrorCode {
        /// `invalidCertificate(1)`.
        InvalidCertificate = 1,
        /// `invalidSignature(2)`.
        InvalidSignature = 2,
        /// `unsupportedCurve(3)`.
        UnsupportedCurve = 3,
        /// `noSessionContext(4)`.
        NoSessionContext = 4,
        /// `invalidOid(5)`.
        InvalidOid = 5,
        /// `euiccChallengeMismatch(6)`.
        EuiccChallengeMismatch = 6,
        /// `ciPKUnknown(7)`.
        CiPkUnknown = 7,
        /// `undefinedError(127)`.
        UndefinedError = 127,
    }
}

/// `AuthenticateResponseError ::= SEQUENCE` under `[1]` (tag `A1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticateResponseError {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `authenticateErrorCode`.
    pub authenticate_error_code: AuthenticateErrorCode,
}

impl AuthenticateResponseError {
    /// Tag `A1`.
    pub const TAG: Tag = Tag::new(0xA1);
}

impl DerCodec for AuthenticateResponseError {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<AuthenticateResponseError, Asn1Error> {
        const CTX: &str = "AuthenticateResponseError";
        tlv.expect_tag(AuthenticateResponseError::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        let out = AuthenticateResponseError {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            authenticate_error_code: AuthenticateErrorCode::from_i64(
                r.expect(Tag::INTEGER)?.integer(CTX)?,
            ),
        };
        r.finish()?;
        Ok(out)
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(AuthenticateResponseError::TAG, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.integer(Tag::INTEGER, self.authenticate_error_code.to_i64());
        });
    }
}

/// `EuiccSigned1 ::= SEQUENCE` (§5.7.13): what euiccSignature1 covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EuiccSigned1 {
    /// `transactionId [0]`.
    pub transaction_id: TransactionId,
    /// `serverAddress [3] UTF8String`.
    pub server_address: String,
    /// `serverChallenge [4] Octet16`: must equal the one we sent.
    pub server_challenge: [u8; 16],
    /// `euiccInfo2 [34]` (tag `BF22`).
    pub euicc_info2: EuiccInfo2,
    /// `ctxParams1`.
    pub ctx_params1: CtxParams1,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl DerCodec for EuiccSigned1 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<EuiccSigned1, Asn1Error> {
        const CTX: &str = "EuiccSigned1";
        tlv.expect_tag(Tag::SEQUENCE, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(EuiccSigned1 {
            transaction_id: TransactionId::from_tlv(&r.expect(Tag::new(0x80))?, CTX)?,
            server_address: r.expect(Tag::new(0x83))?.utf8(CTX)?.to_owned(),
            server_challenge: r.expect(Tag::new(0x84))?.octets::<16>(CTX)?,
            euicc_info2: EuiccInfo2::from_tlv(&r.expect(EuiccInfo2::TAG)?)?,
            ctx_params1: {
                let t = r.next_tlv()?.ok_or(Asn1Error::MissingElement {
                    context: CTX,
                    expected: CtxParamsForCommonAuthentication::TAG,
                })?;
                CtxParams1::from_tlv(&t)?
            },
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(Tag::SEQUENCE, |w| {
            w.tlv(Tag::new(0x80), self.transaction_id.as_bytes());
            w.utf8(Tag::new(0x83), &self.server_address);
            w.tlv(Tag::new(0x84), &self.server_challenge);
            self.euicc_info2.write(w);
            self.ctx_params1.write(w);
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

/// `CtxParams1 ::= CHOICE` (§5.7.13). v2.2 defines one alternative; later
/// versions add others (device change, profile recovery), which are kept as
/// received so the caller can refuse them with the right status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtxParams1 {
    /// `ctxParamsForCommonAuthentication [0]` (tag `A0`).
    CommonAuthentication(CtxParamsForCommonAuthentication),
    /// Another `[n]` alternative, as received.
    Other(Vec<u8>),
}

impl DerCodec for CtxParams1 {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<CtxParams1, Asn1Error> {
        if tlv.tag() == CtxParamsForCommonAuthentication::TAG {
            return Ok(CtxParams1::CommonAuthentication(
                CtxParamsForCommonAuthentication::from_tlv(tlv)?,
            ));
        }
        if tlv.tag().class() == Class::Context && tlv.tag().is_constructed() {
            return Ok(CtxParams1::Other(tlv.raw().to_vec()));
        }
        Err(Asn1Error::UnexpectedTag {
            context: "CtxParams1",
            expected: CtxParamsForCommonAuthentication::TAG,
            found: tlv.tag(),
        })
    }

    fn write(&self, w: &mut Writer) {
        match self {
            CtxParams1::CommonAuthentication(c) => c.write(w),
            CtxParams1::Other(raw) => w.raw(raw),
        }
    }
}

/// `CtxParamsForCommonAuthentication ::= SEQUENCE` under `[0]` (tag `A0`),
/// automatically tagged. It carries the MatchingID, which ES9+ does not
/// send in the JSON (§5.6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtxParamsForCommonAuthentication {
    /// `matchingId [0] UTF8String OPTIONAL`: the activation code token or
    /// event ID, possibly empty.
    pub matching_id: Option<String>,
    /// `deviceInfo [1]`.
    pub device_info: DeviceInfo,
    /// Elements after the v2.2 components, as received.
    pub extensions: Vec<Vec<u8>>,
}

impl CtxParamsForCommonAuthentication {
    /// Tag `A0`.
    pub const TAG: Tag = Tag::new(0xA0);
}

impl DerCodec for CtxParamsForCommonAuthentication {
    fn from_tlv(tlv: &Tlv<'_>) -> Result<CtxParamsForCommonAuthentication, Asn1Error> {
        const CTX: &str = "CtxParamsForCommonAuthentication";
        tlv.expect_tag(CtxParamsForCommonAuthentication::TAG, CTX)?;
        let mut r = tlv.children(CTX)?;
        Ok(CtxParamsForCommonAuthentication {
            matching_id: r
                .optional(Tag::new(0x80))?
                .map(|t| t.utf8(CTX).map(str::to_owned))
                .transpose()?,
            device_info: DeviceInfo::from_tlv(&r.expect(DeviceInfo::TAG)?)?,
            extensions: r.extensions()?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.constructed(CtxParamsForCommonAuthentication::TAG, |w| {
            if let Some(m) = &self.matching_id {
                w.utf8(Tag::new(0x80), m);
            }
            self.device_info.write(w);
            for e in &self.extensions {
                w.raw(e);
            }
        });
    }
}

inherent_codec!(
    ServerSigned1,
    AuthenticateServerResponse,
    AuthenticateResponseOk,
    AuthenticateResponseError,
    EuiccSigned1,
    CtxParams1,
    CtxParamsForCommonAuthentication,
);
