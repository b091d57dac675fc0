//! Records kept in the store. Every record carries a version (`v`) so that a
//! later release can migrate it.

use super::lifecycle::{Event, State};
use crate::error::StatusCode;
use serde::{Deserialize, Serialize};

/// Current record version.
pub const RECORD_VERSION: u32 = 1;

/// One profile and its order (SGP.22 §3.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Record version.
    pub v: u32,
    /// Canonical ICCID (digits, no `F` padding).
    pub iccid: String,
    /// Operator-defined profile type.
    pub profile_type: String,
    /// The operator that owns the profile.
    pub operator: String,
    /// Lifecycle state.
    pub state: State,
    /// EID linked to the order, if any.
    pub eid: Option<String>,
    /// MatchingID of the order; `Some("")` is the empty MatchingID (§5.3.2).
    pub matching_id: Option<String>,
    /// Hex SHA-256 hashes of the confirmation code, never the code itself
    /// (§5.3.2). One per accepted encoding of the code.
    pub cc_hashes: Vec<String>,
    /// SM-DS address given at confirmOrder.
    pub smds_address: Option<String>,
    /// Download attempts in this order (counted by authenticateClient).
    pub download_attempts: u32,
    /// Confirmation-code attempts in this order.
    pub cc_attempts: u32,
    /// Unix time (seconds) after which the order expires, while it can expire.
    pub expires_at: Option<i64>,
    /// Unix time of import.
    pub created_at: i64,
    /// Unix time of the last transition.
    pub updated_at: i64,
    /// Key of the stored profile package.
    pub package_ref: String,
    /// Number of history entries (the next history sequence number).
    pub history_len: u64,
    /// Why the order ended in [`State::Error`], if it did.
    pub error_reason: Option<String>,
    /// Who imported the profile, for records whose import is not stored as
    /// a history entry of its own: entry 0 (Imported, at `created_at`) is
    /// then read from here, which spares bulk imports one write per
    /// profile. Absent in records that keep that entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_by: Option<String>,
}

impl ProfileRecord {
    /// The record of a profile as it enters the inventory: Available, its
    /// import entry carried by the record itself.
    pub fn imported(p: &super::NewProfile, caller: &str, now: i64) -> ProfileRecord {
        ProfileRecord {
            v: RECORD_VERSION,
            iccid: p.iccid.as_str().to_owned(),
            profile_type: p.profile_type.clone(),
            operator: p.operator.clone(),
            state: State::Available,
            eid: None,
            matching_id: None,
            cc_hashes: vec![],
            smds_address: None,
            download_attempts: 0,
            cc_attempts: 0,
            expires_at: None,
            created_at: now,
            updated_at: now,
            package_ref: format!("b/{}", p.iccid.as_str()),
            history_len: 1,
            error_reason: None,
            imported_by: Some(caller.to_owned()),
        }
    }

    /// History entry 0 when the record carries it (see
    /// [`ProfileRecord::imported_by`]).
    pub fn import_entry(&self) -> Option<HistoryEntry> {
        self.imported_by.as_ref().map(|caller| HistoryEntry {
            v: RECORD_VERSION,
            at: self.created_at,
            event: Event::Imported,
            from: None,
            to: State::Available,
            caller: caller.clone(),
            retry: None,
        })
    }
}

/// One transition in a profile's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Record version.
    pub v: u32,
    /// Unix time.
    pub at: i64,
    /// The event.
    pub event: Event,
    /// State before.
    pub from: Option<State>,
    /// State after.
    pub to: State,
    /// Who caused it: an operator id or `smdpplus`.
    pub caller: String,
    /// A delivery to an eUICC that had the package already (§5.6.2): how
    /// it was served again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryKind>,
}

/// How a Bound Profile Package was delivered again for an order already
/// Downloaded (SGP.22 §5.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RetryKind {
    /// The eUICC reused its otPK.EUICC.ECKA: the same bound segments under
    /// a fresh InitialiseSecureChannel.
    SameKey,
    /// A new otPK.EUICC.ECKA: the package was bound anew.
    Rebind,
}

impl RetryKind {
    /// The name in history and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryKind::SameKey => "same_key",
            RetryKind::Rebind => "rebind",
        }
    }
}

/// The outcome reported to the operator at a notification point (§5.3.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointStatus {
    /// Executed-Success.
    Success,
    /// Failed, with subject and reason codes and a message.
    Failed {
        /// Subject code.
        subject: String,
        /// Reason code.
        reason: String,
        /// Message.
        message: String,
    },
}

impl PointStatus {
    /// A failed status from a status code.
    pub fn failed(code: StatusCode, message: impl Into<String>) -> PointStatus {
        PointStatus::Failed {
            subject: code.subject.to_owned(),
            reason: code.reason.to_owned(),
            message: message.into(),
        }
    }
}

/// A pending ES2+ handleDownloadProgressInfo call in the durable outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Record version.
    pub v: u32,
    /// Outbox sequence number, also used as functionCallIdentifier, so the
    /// operator can recognise a redelivery.
    pub id: u64,
    /// The operator to notify.
    pub operator: String,
    /// EID, when known.
    pub eid: Option<String>,
    /// ICCID.
    pub iccid: String,
    /// Profile type.
    pub profile_type: String,
    /// Unix time of the event.
    pub timestamp: i64,
    /// notificationPointId (1-4 from §5.3.5, >= 100 custom).
    pub point: u32,
    /// notificationPointStatus.
    pub status: PointStatus,
    /// resultData (finalResult of a ProfileInstallationResult), raw bytes.
    pub result_data: Option<Vec<u8>>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix time in milliseconds of the next attempt.
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A stored response for an idempotent re-send.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdemRecord {
    /// Unix time.
    pub at: i64,
    /// The response body that was sent.
    pub response: Vec<u8>,
}
