//! Where a Mobile Plans order stands ([MP-Callbacks]), as a table like the
//! profiles' [lifecycle](crate::store::lifecycle): from a status and an
//! event to a status, with what the event needs of the order besides its
//! status; anything else is refused. The store checks every change of an
//! order against it, in the transaction that writes the change.

use super::{MobilePlansOrder, OrderKind};
use crate::error::{codes, Error};
use serde::{Deserialize, Serialize};

/// Where an order stands on the portal's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed.
    Open,
    /// The user cancelled the purchase (notifyCancelledPurchase); the order
    /// was cancelled at the SM-DP+.
    Cancelled,
    /// The portal withdrew the delayed download (notifyOperationCancel)
    /// before its release; the order was cancelled at the SM-DP+.
    Withdrawn,
    /// A portal order's hold ran out before the operator confirmed it
    /// (payment); the order was cancelled at the SM-DP+ by smdpplus.
    Lapsed,
}

impl OrderStatus {
    /// The name in the decision API and in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Open => "open",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Withdrawn => "withdrawn",
            OrderStatus::Lapsed => "lapsed",
        }
    }
}

/// What happens to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// The user cancelled the purchase (notifyCancelledPurchase).
    Cancel,
    /// The portal withdrew the delayed download (notifyOperationCancel).
    Withdraw,
    /// A portal order's hold ran out unconfirmed.
    Lapse,
    /// smdpplus released the profile at the scheduled time.
    Release,
    /// The scheduled release cannot be done; the order leaves the schedule
    /// with the reason.
    ReleaseFailed,
    /// The operator (or the portal's stand-in payment) confirmed a held
    /// portal order.
    Confirm,
}

impl OrderEvent {
    /// The name in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderEvent::Cancel => "cancel",
            OrderEvent::Withdraw => "withdraw",
            OrderEvent::Lapse => "lapse",
            OrderEvent::Release => "release",
            OrderEvent::ReleaseFailed => "releaseFailed",
            OrderEvent::Confirm => "confirm",
        }
    }
}

/// What an event needs of the order besides its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing more.
    Nothing,
    /// A profile order's scheduled release, neither done nor failed, and no
    /// hold waiting for its confirmation (a held order is released by its
    /// confirmation).
    Release,
    /// A profile order's portal hold, waiting for its confirmation.
    Hold,
}

use OrderEvent as E;
use OrderStatus as S;

/// The table. A pair not listed is refused; so is a row whose need the
/// order does not meet. Only an open order changes.
const TABLE: &[(OrderStatus, OrderEvent, OrderStatus, Needs)] = &[
    (S::Open, E::Cancel, S::Cancelled, Needs::Nothing),
    (S::Open, E::Withdraw, S::Withdrawn, Needs::Release),
    (S::Open, E::Lapse, S::Lapsed, Needs::Hold),
    (S::Open, E::Release, S::Open, Needs::Release),
    (S::Open, E::ReleaseFailed, S::Open, Needs::Release),
    (S::Open, E::Confirm, S::Open, Needs::Hold),
];

/// Every `(from, event, to, needs)` row.
pub fn table() -> &'static [(OrderStatus, OrderEvent, OrderStatus, Needs)] {
    TABLE
}

/// Whether the order meets a need.
fn meets(o: &MobilePlansOrder, needs: Needs) -> bool {
    let profile = o.kind == OrderKind::Profile;
    let held = profile && o.hold_until.is_some() && o.confirmed_at.is_none();
    match needs {
        Needs::Nothing => true,
        Needs::Hold => held,
        Needs::Release => {
            profile
                && o.release_at.is_some()
                && o.released_at.is_none()
                && o.release_error.is_none()
                && !held
        }
    }
}

/// Whether `event` may happen to the order now.
pub fn allows(o: &MobilePlansOrder, event: OrderEvent) -> bool {
    TABLE
        .iter()
        .any(|(f, e, _, needs)| *f == o.status && *e == event && meets(o, *needs))
}

/// The order's status after `event`, or the refusal.
pub fn next(o: &MobilePlansOrder, event: OrderEvent) -> Result<OrderStatus, Error> {
    let refused = |why: String| Error::refused(codes::ICCID_INVALID_TRANSITION, why);
    let Some((_, _, to, needs)) = TABLE
        .iter()
        .find(|(f, e, _, _)| *f == o.status && *e == event)
    else {
        return Err(refused(format!(
            "{} is not allowed for an order that is {}",
            event.as_str(),
            o.status.as_str()
        )));
    };
    match needs {
        _ if meets(o, *needs) => Ok(*to),
        Needs::Hold => Err(refused(
            "the order is not waiting for its confirmation".into(),
        )),
        _ => Err(refused("the order has no pending release".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mobileplans::{Choice, PurchaseMetadata, Registration};

    const STATUSES: [OrderStatus; 4] = [S::Open, S::Cancelled, S::Withdrawn, S::Lapsed];
    const EVENTS: [OrderEvent; 6] = [
        E::Cancel,
        E::Withdraw,
        E::Lapse,
        E::Release,
        E::ReleaseFailed,
        E::Confirm,
    ];

    fn order(status: OrderStatus, kind: OrderKind, facts: u8) -> MobilePlansOrder {
        let at = |bit: u8| (facts & bit != 0).then_some(1_000);
        MobilePlansOrder {
            v: 1,
            id: 1,
            transaction_id: "T".into(),
            operator: "op".into(),
            kind,
            eid: None,
            iccid: "8900000000000000001".into(),
            matching_id: None,
            registration: Registration::Now,
            release_at: at(1),
            released_at: at(2),
            release_error: at(4).map(|_| "gone".into()),
            status,
            status_at: 0,
            metadata: PurchaseMetadata {
                user_account: Choice::New,
                purchase_instrument: Choice::New,
                line: Choice::New,
                plan_name: "P".into(),
            },
            bucket: None,
            created_at: 0,
            updated_at: 0,
            hold_until: at(8),
            confirmed_at: at(16),
        }
    }

    /// The rules in words, apart from the table: an ended order stays as
    /// it ended; the user may cancel any open order; a withdrawal, a
    /// release and a failed release need a scheduled release of a profile
    /// that has neither happened nor failed and waits for no confirmation;
    /// a lapse and a confirmation need a profile order held and not yet
    /// confirmed. Only cancel, withdraw and lapse end an order.
    fn rule(o: &MobilePlansOrder, e: OrderEvent) -> Option<OrderStatus> {
        if o.status != OrderStatus::Open {
            return None;
        }
        let profile = o.kind == OrderKind::Profile;
        let waiting = profile && o.hold_until.is_some() && o.confirmed_at.is_none();
        let scheduled = profile
            && o.release_at.is_some()
            && o.released_at.is_none()
            && o.release_error.is_none()
            && !waiting;
        match e {
            E::Cancel => Some(S::Cancelled),
            E::Withdraw => scheduled.then_some(S::Withdrawn),
            E::Lapse => waiting.then_some(S::Lapsed),
            E::Release | E::ReleaseFailed => scheduled.then_some(S::Open),
            E::Confirm => waiting.then_some(S::Open),
        }
    }

    #[test]
    fn the_table_states_the_rules() {
        for status in STATUSES {
            for kind in [OrderKind::Profile, OrderKind::Balance] {
                for facts in 0..32 {
                    let o = order(status, kind, facts);
                    for e in EVENTS {
                        let want = rule(&o, e);
                        let got = next(&o, e);
                        let rows = TABLE.iter().filter(|r| r.0 == status && r.1 == e);
                        assert!(rows.count() <= 1, "one row for {status:?} {e:?}");
                        assert_eq!(
                            got.as_ref().ok().copied(),
                            want,
                            "{status:?} {kind:?} {facts:05b} {e:?}"
                        );
                        assert_eq!(allows(&o, e), want.is_some());
                        if let Err(err) = got {
                            assert_eq!(err.code, codes::ICCID_INVALID_TRANSITION);
                        }
                    }
                }
            }
        }
    }
}
