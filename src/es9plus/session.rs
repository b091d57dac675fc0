//! The RSP session (SGP.22 §3.1.1.4, §3.1.2-3.1.3), one phase per type.
//!
//! A session is created by InitiateAuthentication and moves forward one
//! phase per ES9+ call; each phase holds exactly what the next call needs.
//! It is stored in sled under its transactionId (see
//! [`crate::store::session`]) so that any server process and any
//! TLS connection can continue it, and so that it survives a restart.

use crate::b64;
use serde::{Deserialize, Serialize};

/// Current session record version.
pub const SESSION_VERSION: u32 = 1;

/// A stored RSP session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// Record version.
    pub v: u32,
    /// The phase: what the session expects next.
    pub phase: Phase,
}

/// Where a session stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Phase {
    /// After InitiateAuthentication: waiting for AuthenticateClient.
    ExpectAuthenticateClient(ExpectAuthenticateClient),
    /// After AuthenticateClient: waiting for GetBoundProfilePackage (or
    /// CancelSession).
    ExpectGetBpp(ExpectGetBpp),
    /// After GetBoundProfilePackage: the BPP was handed out; a retry with
    /// the same otPK.EUICC gets it again, and the installation result
    /// arrives through HandleNotification.
    Delivered(Delivered),
}

impl Phase {
    /// Name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::ExpectAuthenticateClient(_) => "ExpectAuthenticateClient",
            Phase::ExpectGetBpp(_) => "ExpectGetBpp",
            Phase::Delivered(_) => "Delivered",
        }
    }
}

/// What AuthenticateClient checks against (§5.6.3).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectAuthenticateClient {
    /// serverChallenge we sent.
    #[serde(with = "b64")]
    pub server_challenge: Vec<u8>,
    /// serverAddress we signed.
    pub server_address: String,
    /// The CI whose DPauth signed serverSigned1 (keyring key).
    #[serde(with = "b64")]
    pub dp_ci: Vec<u8>,
}

/// The authenticated eUICC and its order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Authenticated {
    /// The CI whose DPauth/DPpb serve this session.
    #[serde(with = "b64")]
    pub dp_ci: Vec<u8>,
    /// EID of the eUICC (from its verified certificate).
    pub eid: String,
    /// The order's ICCID.
    pub iccid: String,
    /// CERT.EUICC.ECDSA, verified at AuthenticateClient.
    #[serde(with = "b64")]
    pub euicc_certificate: Vec<u8>,
}

/// What GetBoundProfilePackage checks against (§5.6.2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectGetBpp {
    /// The eUICC and order.
    pub auth: Authenticated,
    /// smdpSignature2 (r||s) that euiccSignature2 covers.
    #[serde(with = "b64")]
    pub smdp_signature2: Vec<u8>,
}

/// A BPP handed out (§5.6.2 retry rules, §5.6.4 notifications).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivered {
    /// The eUICC and order.
    pub auth: Authenticated,
    /// smdpSignature2 (r||s) that every euiccSignature2 of a retry covers.
    #[serde(with = "b64")]
    pub smdp_signature2: Vec<u8>,
    /// otPK.EUICC.ECKA the BPP is bound to.
    #[serde(with = "b64")]
    pub euicc_otpk: Vec<u8>,
    /// The BPP (BF36) as sent; a retry re-signs its BF23.
    #[serde(with = "b64")]
    pub bpp: Vec<u8>,
}
