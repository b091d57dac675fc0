//! ES9+ JSON bodies (SGP.22 §6.5.2.6-6.5.2.10). Binary values are base64
//! of DER with tags; transactionId is upper-case hex. The server parses
//! requests field by field (for exact status codes); the LPA driver of the
//! software eUICC sends and reads these same structs.

use crate::b64;
use serde::{Deserialize, Serialize};

/// Upper-case hex for transactionId.
pub mod hexid {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as upper-case hex.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(v))
    }

    /// Parses hex (either case) into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// ES9+.InitiateAuthentication request (§5.6.1, table 35).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiateAuthenticationRequest {
    /// 16 random bytes from the eUICC.
    #[serde(with = "b64")]
    pub euicc_challenge: Vec<u8>,
    /// EUICCInfo1 (BF20).
    #[serde(with = "b64")]
    pub euicc_info1: Vec<u8>,
    /// The address the LPA used.
    pub smdp_address: String,
}

/// ES9+.InitiateAuthentication response (table 36).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiateAuthenticationResponse {
    /// New RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// ServerSigned1 (DER).
    #[serde(with = "b64")]
    pub server_signed1: Vec<u8>,
    /// serverSignature1 (5F37 TLV).
    #[serde(with = "b64")]
    pub server_signature1: Vec<u8>,
    /// SubjectKeyIdentifier of the CI to use (`04 14 || SKI`).
    #[serde(with = "b64", rename = "euiccCiPKIdToBeUsed")]
    pub euicc_ci_pk_id_to_be_used: Vec<u8>,
    /// CERT.DPauth.ECDSA.
    #[serde(with = "b64")]
    pub server_certificate: Vec<u8>,
}

/// ES9+.AuthenticateClient request (table 41).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticateClientRequest {
    /// The RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// AuthenticateServerResponse (BF38).
    #[serde(with = "b64")]
    pub authenticate_server_response: Vec<u8>,
}

/// ES9+.AuthenticateClient response (table 42).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticateClientResponse {
    /// The RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// StoreMetadataRequest (BF25).
    #[serde(with = "b64")]
    pub profile_metadata: Vec<u8>,
    /// SmdpSigned2 (DER).
    #[serde(with = "b64")]
    pub smdp_signed2: Vec<u8>,
    /// smdpSignature2 (5F37 TLV).
    #[serde(with = "b64")]
    pub smdp_signature2: Vec<u8>,
    /// CERT.DPpb.ECDSA.
    #[serde(with = "b64")]
    pub smdp_certificate: Vec<u8>,
}

/// ES9+.GetBoundProfilePackage request (table 38).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetBoundProfilePackageRequest {
    /// The RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// PrepareDownloadResponse (BF21).
    #[serde(with = "b64")]
    pub prepare_download_response: Vec<u8>,
}

/// ES9+.GetBoundProfilePackage response (table 39).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetBoundProfilePackageResponse {
    /// The RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// BoundProfilePackage (BF36).
    #[serde(with = "b64")]
    pub bound_profile_package: Vec<u8>,
}

/// ES9+.HandleNotification request (table 44).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleNotificationRequest {
    /// ProfileInstallationResult (BF37) or OtherSignedNotification (30).
    #[serde(with = "b64")]
    pub pending_notification: Vec<u8>,
}

/// ES9+.CancelSession request (table 45).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelSessionRequest {
    /// The RSP session.
    #[serde(with = "hexid")]
    pub transaction_id: Vec<u8>,
    /// CancelSessionResponse (BF41).
    #[serde(with = "b64")]
    pub cancel_session_response: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_follow_the_spec() {
        let r = InitiateAuthenticationResponse {
            transaction_id: vec![0xab, 0x01],
            server_signed1: vec![1],
            server_signature1: vec![2],
            euicc_ci_pk_id_to_be_used: vec![3],
            server_certificate: vec![4],
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["transactionId"], "AB01");
        assert_eq!(v["euiccCiPKIdToBeUsed"], "Aw==");
        for k in ["serverSigned1", "serverSignature1", "serverCertificate"] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let back: InitiateAuthenticationResponse = serde_json::from_value(v).expect("parse");
        assert_eq!(back.transaction_id, vec![0xab, 0x01]);
    }
}
