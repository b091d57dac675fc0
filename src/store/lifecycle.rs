//! The profile lifecycle at the SM-DP+ (SGP.22 §3.1.1, PDF p.76-78) as one
//! table: `(state, event) -> state`. This is the only code that decides a
//! state; the store applies what it returns.

use crate::error::{codes, Error, StatusCode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Profile states kept by the SM-DP+ (SGP.22 §3.1.1).
///
/// "Reserved" is the umbrella for [`State::Allocated`], [`State::Linked`]
/// and [`State::Confirmed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum State {
    /// In inventory, free to be ordered.
    Available,
    /// Reserved by downloadOrder without an EID.
    Allocated,
    /// Reserved by downloadOrder with an EID.
    Linked,
    /// Confirmed (MatchingID and optional confirmation code set), not released.
    Confirmed,
    /// Released for download.
    Released,
    /// The Bound Profile Package has been delivered.
    Downloaded,
    /// The eUICC reported a successful installation.
    Installed,
    /// The order ended in error (install failure, retry limit, expiry...).
    Error,
    /// Withdrawn from inventory (cancelOrder with finalProfileStatusIndicator Unavailable).
    Unavailable,
}

impl State {
    /// All states, in lifecycle order.
    pub const ALL: [State; 9] = [
        State::Available,
        State::Allocated,
        State::Linked,
        State::Confirmed,
        State::Released,
        State::Downloaded,
        State::Installed,
        State::Error,
        State::Unavailable,
    ];

    /// The name used on the CLI, in metrics and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Available => "Available",
            State::Allocated => "Allocated",
            State::Linked => "Linked",
            State::Confirmed => "Confirmed",
            State::Released => "Released",
            State::Downloaded => "Downloaded",
            State::Installed => "Installed",
            State::Error => "Error",
            State::Unavailable => "Unavailable",
        }
    }

    /// Parses a state name, case-insensitively.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Allocated, Linked or Confirmed.
    pub fn is_reserved(self) -> bool {
        matches!(self, State::Allocated | State::Linked | State::Confirmed)
    }

    /// An order is open: reserved, released or downloaded (not yet installed).
    pub fn is_pending_order(self) -> bool {
        self.is_reserved() || matches!(self, State::Released | State::Downloaded)
    }

    /// The order can still expire: the table has an expiry from this state
    /// (an open order, a delivered package still waiting for its
    /// installation result included).
    pub fn can_expire(self) -> bool {
        TABLE
            .iter()
            .any(|(from, event, _, _)| *from == self && *event == Event::Expired)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle events (SGP.22 §3.1.1 and §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// ES2+.DownloadOrder with an EID.
    DownloadOrderLinked,
    /// ES2+.DownloadOrder without an EID.
    DownloadOrderAllocated,
    /// ES2+.ConfirmOrder with releaseFlag false.
    ConfirmOrder,
    /// ES2+.ConfirmOrder with releaseFlag true.
    ConfirmOrderAndRelease,
    /// ES2+.ReleaseProfile.
    ReleaseProfile,
    /// ES2+.CancelOrder, finalProfileStatusIndicator Available.
    CancelOrderAvailable,
    /// ES2+.CancelOrder, finalProfileStatusIndicator Unavailable.
    CancelOrderUnavailable,
    /// ES9+.GetBoundProfilePackage delivered a BPP.
    BppDelivered,
    /// ProfileInstallationResult reported success.
    InstallSucceeded,
    /// ProfileInstallationResult reported failure.
    InstallFailed,
    /// A retry limit was exceeded, or the order ended on the device side.
    LimitExceeded,
    /// The order's time to live ran out.
    Expired,
    /// The end user or the device ended the download (ES9+.CancelSession
    /// with a terminal reason, §5.6.5).
    DownloadCancelled,
    /// A profile entered the inventory.
    Imported,
    /// The eUICC reported the profile enabled (OtherSignedNotification).
    DeviceEnabled,
    /// The eUICC reported the profile disabled.
    DeviceDisabled,
    /// The eUICC reported the profile deleted: it left the device.
    DeviceDeleted,
}

impl Event {
    /// The name recorded in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::DownloadOrderLinked | Event::DownloadOrderAllocated => "downloadOrder",
            Event::ConfirmOrder | Event::ConfirmOrderAndRelease => "confirmOrder",
            Event::ReleaseProfile => "releaseProfile",
            Event::CancelOrderAvailable | Event::CancelOrderUnavailable => "cancelOrder",
            Event::BppDelivered => "bppDelivered",
            Event::InstallSucceeded => "installSucceeded",
            Event::InstallFailed => "installFailed",
            Event::LimitExceeded => "limitExceeded",
            Event::Expired => "expired",
            Event::DownloadCancelled => "downloadCancelled",
            Event::Imported => "imported",
            Event::DeviceEnabled => "deviceEnabled",
            Event::DeviceDisabled => "deviceDisabled",
            Event::DeviceDeleted => "deviceDeleted",
        }
    }
}

use Event as E;
use State as S;

/// What a legal transition leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The transition is recorded: a history entry, the record updated,
    /// and the notification the command names.
    Recorded,
    /// The call succeeds and nothing is written (§5.3.4 NOTE).
    Nothing,
}

const RECORDED: Effect = Effect::Recorded;
const NOTHING: Effect = Effect::Nothing;

/// The transition table. A pair not listed is an illegal transition.
const TABLE: &[(State, Event, State, Effect)] = &[
    (S::Available, E::DownloadOrderLinked, S::Linked, RECORDED),
    (
        S::Available,
        E::DownloadOrderAllocated,
        S::Allocated,
        RECORDED,
    ),
    (S::Allocated, E::ConfirmOrder, S::Confirmed, RECORDED),
    (S::Linked, E::ConfirmOrder, S::Confirmed, RECORDED),
    (
        S::Allocated,
        E::ConfirmOrderAndRelease,
        S::Released,
        RECORDED,
    ),
    (S::Linked, E::ConfirmOrderAndRelease, S::Released, RECORDED),
    (S::Confirmed, E::ReleaseProfile, S::Released, RECORDED),
    // §5.3.4 NOTE: releasing a released profile succeeds and changes
    // nothing: no history entry, no notification.
    (S::Released, E::ReleaseProfile, S::Released, NOTHING),
    (S::Released, E::BppDelivered, S::Downloaded, RECORDED),
    (S::Downloaded, E::BppDelivered, S::Downloaded, RECORDED),
    (S::Downloaded, E::InstallSucceeded, S::Installed, RECORDED),
    (S::Downloaded, E::InstallFailed, S::Error, RECORDED),
    (S::Released, E::LimitExceeded, S::Error, RECORDED),
    (S::Downloaded, E::LimitExceeded, S::Error, RECORDED),
    (S::Installed, E::DeviceEnabled, S::Installed, RECORDED),
    (S::Installed, E::DeviceDisabled, S::Installed, RECORDED),
    // The profile left the device; its credentials are not handed out again
    // unless the operator decides so.
    (S::Installed, E::DeviceDeleted, S::Unavailable, RECORDED),
    (S::Released, E::DownloadCancelled, S::Error, RECORDED),
    (S::Downloaded, E::DownloadCancelled, S::Error, RECORDED),
    (S::Allocated, E::Expired, S::Error, RECORDED),
    (S::Linked, E::Expired, S::Error, RECORDED),
    (S::Confirmed, E::Expired, S::Error, RECORDED),
    (S::Released, E::Expired, S::Error, RECORDED),
    // A delivered package whose installation result never came is not
    // pending forever: the order ends on its time to live.
    (S::Downloaded, E::Expired, S::Error, RECORDED),
    // Installation results arrive late (the LPA sends pending notifications
    // when it next can); one for an order that expired meanwhile still
    // tells the truth about the device.
    (S::Error, E::InstallSucceeded, S::Installed, RECORDED),
    (S::Error, E::InstallFailed, S::Error, RECORDED),
    (
        S::Allocated,
        E::CancelOrderAvailable,
        S::Available,
        RECORDED,
    ),
    (S::Linked, E::CancelOrderAvailable, S::Available, RECORDED),
    (
        S::Confirmed,
        E::CancelOrderAvailable,
        S::Available,
        RECORDED,
    ),
    (S::Released, E::CancelOrderAvailable, S::Available, RECORDED),
    (S::Error, E::CancelOrderAvailable, S::Available, RECORDED),
    (
        S::Allocated,
        E::CancelOrderUnavailable,
        S::Unavailable,
        RECORDED,
    ),
    (
        S::Linked,
        E::CancelOrderUnavailable,
        S::Unavailable,
        RECORDED,
    ),
    (
        S::Confirmed,
        E::CancelOrderUnavailable,
        S::Unavailable,
        RECORDED,
    ),
    (
        S::Released,
        E::CancelOrderUnavailable,
        S::Unavailable,
        RECORDED,
    ),
    (
        S::Error,
        E::CancelOrderUnavailable,
        S::Unavailable,
        RECORDED,
    ),
];

/// Every `(from, event, to, effect)` row the table allows.
pub fn table() -> &'static [(State, Event, State, Effect)] {
    TABLE
}

/// The state after `event` in `from`, or the status code the spec gives for
/// an illegal event in that state.
pub fn next(from: State, event: Event) -> Result<State, Error> {
    step(from, event).map(|(to, _)| to)
}

/// The state after `event` in `from` and what the transition leaves behind,
/// or the status code the spec gives for an illegal event in that state.
pub fn step(from: State, event: Event) -> Result<(State, Effect), Error> {
    TABLE
        .iter()
        .find(|(f, e, _, _)| *f == from && *e == event)
        .map(|(_, _, to, effect)| (*to, *effect))
        .ok_or_else(|| {
            Error::refused(
                rejection(from, event),
                format!("{} is not allowed in state {from}", event.as_str()),
            )
        })
}

/// The status code for an event that is illegal in `from`.
fn rejection(from: State, event: Event) -> StatusCode {
    match event {
        // §5.3.1: "the Profile identified by the provided ICCID is not available".
        E::DownloadOrderLinked | E::DownloadOrderAllocated => codes::ICCID_IN_USE,
        // §5.3.3: "already downloaded".
        E::CancelOrderAvailable | E::CancelOrderUnavailable
            if matches!(from, S::Downloaded | S::Installed) =>
        {
            codes::ICCID_IN_USE
        }
        E::Expired => codes::ORDER_EXPIRED,
        // §5.3.4 and everything else: invalid transition.
        _ => codes::ICCID_INVALID_TRANSITION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicate_keys() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(!(a.0 == b.0 && a.1 == b.1), "duplicate {a:?} / {b:?}");
            }
        }
    }

    #[test]
    fn only_a_repeated_release_leaves_nothing_behind() {
        let silent: Vec<_> = TABLE
            .iter()
            .filter(|r| r.3 == Effect::Nothing)
            .map(|r| (r.0, r.1))
            .collect();
        assert_eq!(silent, vec![(S::Released, E::ReleaseProfile)]);
        assert_eq!(
            step(S::Confirmed, E::ReleaseProfile).expect("release"),
            (S::Released, Effect::Recorded)
        );
    }

    #[test]
    fn illegal_events_get_spec_codes() {
        assert_eq!(
            next(S::Available, E::ReleaseProfile).unwrap_err().code,
            codes::ICCID_INVALID_TRANSITION
        );
        assert_eq!(
            next(S::Linked, E::ReleaseProfile).unwrap_err().code,
            codes::ICCID_INVALID_TRANSITION
        );
        assert_eq!(
            next(S::Linked, E::DownloadOrderLinked).unwrap_err().code,
            codes::ICCID_IN_USE
        );
        assert_eq!(
            next(S::Downloaded, E::CancelOrderAvailable)
                .unwrap_err()
                .code,
            codes::ICCID_IN_USE
        );
        assert_eq!(
            next(S::Installed, E::CancelOrderUnavailable)
                .unwrap_err()
                .code,
            codes::ICCID_IN_USE
        );
        assert_eq!(
            next(S::Released, E::ReleaseProfile).expect("no-op release"),
            S::Released
        );
    }

    #[test]
    fn reserved_umbrella() {
        let reserved: Vec<_> = State::ALL.into_iter().filter(|s| s.is_reserved()).collect();
        assert_eq!(reserved, vec![S::Allocated, S::Linked, S::Confirmed]);
    }
}
