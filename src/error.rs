//! One error type for the protocol layers, sorted by blame, each variant
//! carrying the SGP.22 status code (§5.2.6 subject and reason codes) that
//! goes on the wire.

use std::fmt;

/// A GSMA status code: subject code and reason code (SGP.22 §5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusCode {
    /// Subject code, e.g. `8.2.1` (Profile ICCID).
    pub subject: &'static str,
    /// Reason code, e.g. `3.9` (Unknown).
    pub reason: &'static str,
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.subject, self.reason)
    }
}

const fn sc(subject: &'static str, reason: &'static str) -> StatusCode {
    StatusCode { subject, reason }
}

/// Status codes used by this server (SGP.22 §5.2.6, §5.3, §5.6).
pub mod codes {
    use super::{sc, StatusCode};
    /// 1.1 Function Requester, 1.2 Not Allowed.
    pub const REQUESTER_NOT_ALLOWED: StatusCode = sc("1.1", "1.2");
    /// 1.2 Function Provider, 4.2 Execution Error.
    pub const PROVIDER_ERROR: StatusCode = sc("1.2", "4.2");
    /// 1.3.1 Protocol Format, 2.1 Invalid.
    pub const FORMAT_INVALID: StatusCode = sc("1.3.1", "2.1");
    /// 1.3.1 Protocol Format, 2.2 Mandatory Element Missing.
    pub const FORMAT_MISSING: StatusCode = sc("1.3.1", "2.2");
    /// 1.3.1 Protocol Format, 2.3 Conditional Element Missing.
    pub const FORMAT_CONDITIONAL_MISSING: StatusCode = sc("1.3.1", "2.3");
    /// 1.3.2 Protocol Version, 2.2 Mandatory Element Missing (no X-Admin-Protocol).
    pub const VERSION_MISSING: StatusCode = sc("1.3.2", "2.2");
    /// 1.3.2 Protocol Version, 3.1 Unsupported.
    pub const VERSION_UNSUPPORTED: StatusCode = sc("1.3.2", "3.1");
    /// 1.6 Function, 3.1 Unsupported (unknown function path).
    pub const FUNCTION_UNSUPPORTED: StatusCode = sc("1.6", "3.1");
    /// 8.1.1 EID, 2.1 Invalid.
    pub const EID_INVALID: StatusCode = sc("8.1.1", "2.1");
    /// 8.1.1 EID, 2.2 Mandatory Element Missing.
    pub const EID_MISSING: StatusCode = sc("8.1.1", "2.2");
    /// 8.1.1 EID, 2.3 Conditional Element Missing.
    pub const EID_CONDITIONAL_MISSING: StatusCode = sc("8.1.1", "2.3");
    /// 8.1.1 EID, 3.10 Invalid Association.
    pub const EID_INVALID_ASSOCIATION: StatusCode = sc("8.1.1", "3.10");
    /// 8.2.1 Profile ICCID, 2.1 Invalid.
    pub const ICCID_INVALID: StatusCode = sc("8.2.1", "2.1");
    /// 8.2.1 Profile ICCID, 3.3 Already in Use.
    pub const ICCID_IN_USE: StatusCode = sc("8.2.1", "3.3");
    /// 8.2.1 Profile ICCID, 3.5 Invalid Transition.
    pub const ICCID_INVALID_TRANSITION: StatusCode = sc("8.2.1", "3.5");
    /// 8.2.1 Profile ICCID, 3.9 Unknown.
    pub const ICCID_UNKNOWN: StatusCode = sc("8.2.1", "3.9");
    /// 8.2.1 Profile ICCID, 3.10 Invalid Association (different EID).
    pub const ICCID_EID_MISMATCH: StatusCode = sc("8.2.1", "3.10");
    /// 8.2.5 Profile Type, 3.7 Unavailable (pool exhausted).
    pub const TYPE_EXHAUSTED: StatusCode = sc("8.2.5", "3.7");
    /// 8.2.5 Profile Type, 3.8 Refused (type does not match the ICCID).
    pub const TYPE_MISMATCH: StatusCode = sc("8.2.5", "3.8");
    /// 8.2.5 Profile Type, 3.9 Unknown.
    pub const TYPE_UNKNOWN: StatusCode = sc("8.2.5", "3.9");
    /// 8.2.6 Matching ID, 2.1 Invalid.
    pub const MATCHING_ID_INVALID: StatusCode = sc("8.2.6", "2.1");
    /// 8.2.6 Matching ID, 2.3 Conditional Element Missing.
    pub const MATCHING_ID_MISSING: StatusCode = sc("8.2.6", "2.3");
    /// 8.2.6 Matching ID, 3.3 Already in Use.
    pub const MATCHING_ID_IN_USE: StatusCode = sc("8.2.6", "3.3");
    /// 8.2.6 Matching ID, 3.10 Invalid Association.
    pub const MATCHING_ID_MISMATCH: StatusCode = sc("8.2.6", "3.10");
    /// 8.8.5 Download Order, 4.10 Time to Live Expired.
    pub const ORDER_EXPIRED: StatusCode = sc("8.8.5", "4.10");
    /// 8.9 SM-DS, 5.1 Inaccessible.
    pub const SMDS_INACCESSIBLE: StatusCode = sc("8.9", "5.1");

    // ES9+ (§5.6).
    /// 8.1.1 EID, 3.8 Refused: EID does not match the expected value.
    pub const EID_REFUSED: StatusCode = sc("8.1.1", "3.8");
    /// 8.2 Profile, 3.7 Unavailable: BPP not available for a new binding.
    pub const PROFILE_UNAVAILABLE: StatusCode = sc("8.2", "3.7");
    /// 8.2 Profile, 1.2 Not Allowed: profile not yet released.
    pub const PROFILE_NOT_RELEASED: StatusCode = sc("8.2", "1.2");
    /// 8.2.6 Matching ID, 3.8 Refused.
    pub const MATCHING_ID_REFUSED: StatusCode = sc("8.2.6", "3.8");
    /// 8.2.7 Confirmation Code, 2.2 Mandatory Element Missing.
    pub const CC_MISSING: StatusCode = sc("8.2.7", "2.2");
    /// 8.2.7 Confirmation Code, 3.8 Refused.
    pub const CC_REFUSED: StatusCode = sc("8.2.7", "3.8");
    /// 8.2.7 Confirmation Code, 6.4 Maximum number of retries exceeded.
    pub const CC_RETRIES_EXCEEDED: StatusCode = sc("8.2.7", "6.4");
    /// 8.8.5 Download Order, 6.4 Maximum number of retries exceeded.
    pub const DOWNLOAD_RETRIES_EXCEEDED: StatusCode = sc("8.8.5", "6.4");
    /// 8.2.10 Bound Profile Package, 4.2 Execution Error.
    pub const BPP_EXECUTION_ERROR: StatusCode = sc("8.2.10", "4.2");

    // Certificates and CI selection (ES9+, §5.6.1 and §5.6.3).
    /// 8.1.2 EUM Certificate, 6.1 Verification Failed (certificate invalid).
    pub const EUM_CERT_INVALID: StatusCode = sc("8.1.2", "6.1");
    /// 8.1.2 EUM Certificate, 6.3 Expired.
    pub const EUM_CERT_EXPIRED: StatusCode = sc("8.1.2", "6.3");
    /// 8.1.3 eUICC Certificate, 6.1 Verification Failed (certificate
    /// invalid, including an EID outside the EUM's permitted range).
    pub const EUICC_CERT_INVALID: StatusCode = sc("8.1.3", "6.1");
    /// 8.1.3 eUICC Certificate, 6.3 Expired.
    pub const EUICC_CERT_EXPIRED: StatusCode = sc("8.1.3", "6.3");
    /// 8.11.1 CI Public Key, 3.9 Unknown: the EUM certificate's CI is not a
    /// trusted root of this SM-DP+.
    pub const CI_PK_UNKNOWN: StatusCode = sc("8.11.1", "3.9");
    /// 8.8.2 Security configuration, 3.1 Unsupported: none of the eUICC's
    /// CI Public Key Identifiers is supported.
    pub const CI_PKID_UNSUPPORTED: StatusCode = sc("8.8.2", "3.1");
    /// 8.8.4 SM-DP+ Certificate, 3.7 Unavailable: no CERT.DPauth.ECDSA
    /// signed by a CI the eUICC supports.
    pub const DPAUTH_CERT_UNAVAILABLE: StatusCode = sc("8.8.4", "3.7");
}

/// Who is to blame for a failed function call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The request was malformed (format, missing or invalid element).
    InvalidRequest,
    /// The caller may not do this (authorisation).
    NotAllowed,
    /// The request was well-formed but the conditions of use are not met
    /// (unknown object, wrong state, exhausted pool, conflict).
    Conditions,
    /// We failed (a bug, corrupt data).
    Internal,
    /// The store cannot write now (a full disk, an I/O error). Nothing was
    /// changed; the same call can succeed once the store has recovered.
    Unavailable,
}

/// A failed function execution: what goes into `statusCodeData`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// Who is to blame.
    pub blame: Blame,
    /// The GSMA status code.
    pub code: StatusCode,
    /// Human-readable explanation (`message`).
    pub message: String,
}

impl Error {
    /// A malformed request.
    pub fn invalid(code: StatusCode, message: impl Into<String>) -> Error {
        Error {
            blame: Blame::InvalidRequest,
            code,
            message: message.into(),
        }
    }
    /// An authorisation failure.
    pub fn not_allowed(code: StatusCode, message: impl Into<String>) -> Error {
        Error {
            blame: Blame::NotAllowed,
            code,
            message: message.into(),
        }
    }
    /// Conditions of use not satisfied.
    pub fn refused(code: StatusCode, message: impl Into<String>) -> Error {
        Error {
            blame: Blame::Conditions,
            code,
            message: message.into(),
        }
    }
    /// Our own failure; the detail is logged, the wire gets a generic text.
    pub fn internal(message: impl Into<String>) -> Error {
        Error {
            blame: Blame::Internal,
            code: codes::PROVIDER_ERROR,
            message: message.into(),
        }
    }
}

impl Error {
    /// The store cannot write now; the detail is logged, the wire gets a
    /// generic text.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error {
            blame: Blame::Unavailable,
            code: codes::PROVIDER_ERROR,
            message: message.into(),
        }
    }

    /// What the caller may see of this error: our own failures get a
    /// generic text (their detail, OS errors included, goes to the log
    /// only), refusals their message.
    pub fn public_message(&self) -> &str {
        match self.blame {
            Blame::Internal => "internal error",
            Blame::Unavailable => "the SM-DP+ cannot store data now; try again later",
            _ => &self.message,
        }
    }

    /// True for our own failures (logged as errors, not refusals).
    pub fn is_ours(&self) -> bool {
        matches!(self.blame, Blame::Internal | Blame::Unavailable)
    }
}

/// Client input as an error message may show it: quoted, at most 64
/// characters (then `…`), quotes, backslashes, control and non-ASCII
/// characters escaped, so that an answer never carries much of what the
/// client sent, nor anything that could be read as markup or a new line.
pub fn quote(input: &str) -> String {
    let mut out = String::with_capacity(input.len().min(64) + 4);
    out.push('"');
    for (i, c) in input.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        match c {
            '<' => out.push_str("\\u{3c}"),
            '>' => out.push_str("\\u{3e}"),
            '&' => out.push_str("\\u{26}"),
            c => out.extend(c.escape_default()),
        }
    }
    out.push('"');
    out
}

/// Convenience alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
