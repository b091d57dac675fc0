//! The gate between the SM-DP+ lifecycle and the Mobile Plans app: which
//! callback a portal may send now for an order, and why every other one is
//! refused ([MP-Callbacks] "Which callback to use", and [MP-eSIM]
//! "Release and reuse rules"). Pure: the order, the profile record and
//! the clock come in, a [`Decision`] goes out.
//!
//! | order and profile | callback now | also allowed |
//! |---|---|---|
//! | profile Released, registration now | inline `notifyProfileDownload(purchaseMetaData, activationCode)` | cancel |
//! | profile Released, registration later | `notifyPurchaseWithProfileDownload(metadata, activationCode, interval)`, interval rounded to 15 | cancel |
//! | profile Confirmed, release scheduled in the future | delayed `notifyProfileDownload(…, downloadDelay)` | cancel; `notifyOperationCancel` (withdraw) |
//! | profile Confirmed, portal order awaiting its confirmation (payment) | none | cancel |
//! | profile Allocated, Linked, Confirmed otherwise | none | cancel |
//! | profile Downloaded, Installed | none | none |
//! | profile Error | `notifyCancelledPurchase` with the error (after the cancel) | none |
//! | balance purchase, credited (pSIM, or eSIM Installed) | `notifyBalanceAddition(purchaseMetaData[, iccid])` | none |
//! | order cancelled / withdrawn / not confirmed in time / no longer at the SM-DP+ | `notifyCancelledPurchase` / `notifyOperationCancel` | none |
//!
//! "cancel" is `notifyCancelledPurchase` after the order is cancelled at
//! the SM-DP+ (the profile goes back to Available): any state before
//! Downloaded.

use super::callback::{Callback, CallbackKind, Metadata, MoDirectStatus};
use crate::store::lifecycle::State;
use crate::store::mobileplans::{MobilePlansOrder, OrderKind, OrderStatus, Registration};
use crate::store::ProfileRecord;

/// The rule for an order whose profile no longer carries it (cancelled, or
/// re-ordered, through ES2+ outside the portal).
pub const RULE_ORDER_GONE: &str = "orderGone";

/// The rule for a portal order whose hold ran out before its confirmation.
pub const RULE_HOLD_LAPSED: &str = "holdLapsed";

/// The rule for a portal order held for its confirmation (payment).
pub const RULE_AWAITING_CONFIRMATION: &str = "awaitingConfirmation";

/// A server action the portal must call before the callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `POST /mobileplans/v1/cancel`: ES2+.CancelOrder (Available).
    Cancel,
    /// `POST /mobileplans/v1/withdraw`: the scheduled release is cancelled
    /// and so is the order (Available).
    Withdraw,
}

impl Action {
    /// The path of the action on the operator-web listener.
    pub fn path(self) -> &'static str {
        match self {
            Action::Cancel => "/mobileplans/v1/cancel",
            Action::Withdraw => "/mobileplans/v1/withdraw",
        }
    }
}

/// A callback the portal may send, and the action that must come first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The callback.
    pub callback: Callback,
    /// The server action to call before it, if any.
    pub action: Option<Action>,
    /// When the portal sends it.
    pub when: &'static str,
}

/// A callback the portal may not send, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Which.
    pub kind: CallbackKind,
    /// Why.
    pub reason: String,
}

/// The answer for one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The rule of the table that applied (logs and tests).
    pub rule: &'static str,
    /// The callback to send now, if any.
    pub now: Option<Allowed>,
    /// Other callbacks the portal may send (cancel, withdraw).
    pub also: Vec<Allowed>,
    /// Every other callback, with the reason.
    pub refused: Vec<Refused>,
    /// The error the order ended with, for an order in Error.
    pub error: Option<String>,
}

/// What the decision is made from.
pub struct Facts<'a> {
    /// The order.
    pub order: &'a MobilePlansOrder,
    /// The record of the order's ICCID, when it is a profile of this SM-DP+.
    pub profile: Option<&'a ProfileRecord>,
    /// The SM-DP+ address of activation codes.
    pub smdp_address: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// The activation code the app gets: exactly `1$<SM-DP+ address>$<MatchingID>`,
/// no `LPA:` prefix and no confirmation code ([MP-eSIM]).
pub fn activation_code(smdp_address: &str, matching_id: &str) -> String {
    format!("1${smdp_address}${matching_id}")
}

/// `networkRegistrationInterval` is "rounded to the nearest 15 minute
/// interval" and "A value of 5 gives about 15 minutes" ([MP-Callbacks]
/// ): 0 stays 0 (register now), anything else goes to the nearest
/// multiple of 15, at least 15.
pub fn round_to_15(minutes: u32) -> u32 {
    if minutes == 0 {
        return 0;
    }
    ((minutes.saturating_add(7) / 15) * 15).max(15)
}

/// `downloadDelay` (minutes, uint): the minutes left until `release_at`,
/// rounded up so the app never invites the user before the release.
pub fn download_delay(release_at: i64, now: i64) -> u32 {
    let secs = release_at.saturating_sub(now).max(0);
    u32::try_from((secs + 59) / 60).unwrap_or(u32::MAX)
}

/// Builds a decision: `now` and `also` given, every other callback refused
/// with `reason`'s answer.
struct Builder {
    rule: &'static str,
    now: Option<Allowed>,
    also: Vec<Allowed>,
    error: Option<String>,
}

impl Builder {
    fn new(rule: &'static str) -> Builder {
        Builder {
            rule,
            now: None,
            also: vec![],
            error: None,
        }
    }
    fn now(mut self, callback: Callback, action: Option<Action>, when: &'static str) -> Builder {
        self.now = Some(Allowed {
            callback,
            action,
            when,
        });
        self
    }
    fn also(mut self, callback: Callback, action: Option<Action>, when: &'static str) -> Builder {
        self.also.push(Allowed {
            callback,
            action,
            when,
        });
        self
    }
    fn error(mut self, e: Option<String>) -> Builder {
        self.error = e;
        self
    }
    fn refuse(self, reason: impl Fn(CallbackKind) -> String) -> Decision {
        let taken: Vec<CallbackKind> = self
            .now
            .iter()
            .chain(self.also.iter())
            .map(|a| a.callback.kind())
            .collect();
        let refused = CallbackKind::ALL
            .into_iter()
            .filter(|k| !taken.contains(k))
            .map(|kind| Refused {
                kind,
                reason: reason(kind),
            })
            .collect();
        Decision {
            rule: self.rule,
            now: self.now,
            also: self.also,
            refused,
            error: self.error,
        }
    }
}

const WHEN_CANCEL: &str = "the user cancels the purchase: call the action first";
const WHEN_WITHDRAW: &str =
    "after the delayed notifyProfileDownload, to withdraw the offer before the release time";

/// Decides.
pub fn decide(f: &Facts<'_>) -> Decision {
    let o = f.order;
    let md = &o.metadata;
    let cancelled = || Callback::CancelledPurchase {
        metadata: Metadata::ended(md, MoDirectStatus::Cancelled),
    };
    match o.status {
        OrderStatus::Cancelled => {
            return Builder::new("cancelled")
                .now(cancelled(), None, "the purchase was cancelled")
                .refuse(|_| {
                    format!(
                        "the purchase was cancelled at {}",
                        crate::time::datetime(o.status_at)
                    )
                })
        }
        OrderStatus::Withdrawn => {
            return Builder::new("withdrawn")
                .now(
                    Callback::OperationCancel,
                    None,
                    "the delayed download was withdrawn",
                )
                .refuse(|_| {
                    format!(
                        "the delayed download was withdrawn at {}",
                        crate::time::datetime(o.status_at)
                    )
                })
        }
        OrderStatus::Lapsed => {
            return Builder::new(RULE_HOLD_LAPSED)
                .now(cancelled(), None, "the purchase was not confirmed in time")
                .refuse(|_| {
                    format!(
                        "the purchase was not confirmed in time; its profile was returned at {}",
                        crate::time::datetime(o.status_at)
                    )
                })
        }
        OrderStatus::Open => {}
    }
    match o.kind {
        OrderKind::Balance => decide_balance(f),
        OrderKind::Profile => decide_profile(f, cancelled),
    }
}

fn decide_balance(f: &Facts<'_>) -> Decision {
    let o = f.order;
    let not_profile = "this purchase adds balance to an existing line: no profile download";
    if let Some(p) = f.profile.filter(|p| p.state != State::Installed) {
        let state = p.state;
        return Builder::new("balanceLineNotInstalled").refuse(move |k| match k {
            CallbackKind::BalanceAddition => format!(
                "the eSIM profile {} is {state}, not Installed: balance is added to an installed profile",
                p.iccid
            ),
            CallbackKind::CancelledPurchase => "the balance was credited: a credited purchase is not cancelled here".into(),
            CallbackKind::OperationCancel => "no delayed download is pending".into(),
            _ => not_profile.into(),
        });
    }
    if o.bucket.is_none() {
        return Builder::new("balanceNotCredited").refuse(|k| match k {
            CallbackKind::BalanceAddition => "the balance is not credited yet".into(),
            CallbackKind::CancelledPurchase => "nothing to cancel at the SM-DP+".into(),
            CallbackKind::OperationCancel => "no delayed download is pending".into(),
            _ => not_profile.into(),
        });
    }
    let callback = Callback::BalanceAddition {
        metadata: Metadata::complete(&o.metadata),
        // An eSIM line names the profile, so the app switches to it.
        iccid: o.eid.as_ref().map(|_| o.iccid.clone()),
    };
    Builder::new("balanceAddition")
        .now(callback, None, "the balance was credited")
        .refuse(|k| match k {
            CallbackKind::CancelledPurchase => {
                "the balance was credited: a credited purchase is not cancelled here".into()
            }
            CallbackKind::OperationCancel => "no delayed download is pending".into(),
            _ => not_profile.into(),
        })
}

fn decide_profile(f: &Facts<'_>, cancelled: impl Fn() -> Callback) -> Decision {
    let o = f.order;
    let profile = f
        .profile
        .filter(|p| p.matching_id.is_some() && p.matching_id == o.matching_id && p.eid == o.eid);
    let Some(p) = profile else {
        // Cancelled (or re-ordered) by ES2+ outside the portal.
        return Builder::new(RULE_ORDER_GONE)
            .now(
                cancelled(),
                None,
                "the order no longer exists at the SM-DP+",
            )
            .refuse(|_| {
                "the order no longer exists at the SM-DP+ (cancelled through ES2+)".into()
            });
    };
    let code = activation_code(f.smdp_address, p.matching_id.as_deref().unwrap_or_default());
    let done = Metadata::complete(&o.metadata);
    let no_balance = "this purchase is a new eSIM profile, not a balance addition";
    let state = p.state;
    match state {
        State::Released => {
            let (callback, other, why) = match o.registration {
                Registration::Now => (
                    Callback::InlineProfileDownload {
                        metadata: done,
                        activation_code: code,
                    },
                    CallbackKind::PurchaseWithProfileDownload,
                    "the network can register the device now: inline download",
                ),
                Registration::Later { interval_minutes } => (
                    Callback::PurchaseWithProfileDownload {
                        metadata: done,
                        activation_code: code,
                        network_registration_interval: round_to_15(interval_minutes),
                    },
                    CallbackKind::InlineProfileDownload,
                    "network registration comes later: asynchronous connectivity",
                ),
            };
            Builder::new(if other == CallbackKind::InlineProfileDownload {
                "releasedRegistrationLater"
            } else {
                "releasedRegistrationNow"
            })
            .now(callback, None, "the profile is released")
            .also(cancelled(), Some(Action::Cancel), WHEN_CANCEL)
            .refuse(|k| match k {
                k if k == other => why.into(),
                CallbackKind::DelayedProfileDownload => {
                    "the profile is already released: nothing to delay".into()
                }
                CallbackKind::OperationCancel => "no delayed download is pending".into(),
                _ => no_balance.into(),
            })
        }
        State::Confirmed if o.hold_pending() => {
            let until = o.hold_until.map(crate::time::datetime).unwrap_or_default();
            Builder::new(RULE_AWAITING_CONFIRMATION)
                .also(cancelled(), Some(Action::Cancel), WHEN_CANCEL)
                .refuse(move |k| match k {
                    CallbackKind::OperationCancel => "no delayed download is pending".into(),
                    CallbackKind::BalanceAddition => no_balance.into(),
                    _ => format!(
                        "the purchase awaits the operator's confirmation (payment) until {until}: not released"
                    ),
                })
        }
        State::Confirmed => {
            let pending = o.release_pending();
            match o.release_at {
                Some(t) if pending && t > f.now => Builder::new("confirmedReleaseScheduled")
                    .now(
                        Callback::DelayedProfileDownload {
                            metadata: done,
                            activation_code: code,
                            download_delay: download_delay(t, f.now),
                        },
                        None,
                        "the profile is released at the scheduled time",
                    )
                    .also(cancelled(), Some(Action::Cancel), WHEN_CANCEL)
                    .also(Callback::OperationCancel, Some(Action::Withdraw), WHEN_WITHDRAW)
                    .refuse(|k| match k {
                        CallbackKind::InlineProfileDownload
                        | CallbackKind::PurchaseWithProfileDownload => format!(
                            "the profile is Confirmed, not released until {} (the LPA would report profileNotReleasedByOperator)",
                            crate::time::datetime(t)
                        ),
                        _ => no_balance.into(),
                    }),
                _ => {
                    let delayed = match (o.release_at, &o.release_error) {
                        (_, Some(e)) => format!("the scheduled release failed: {e}"),
                        (Some(t), None) if pending => format!(
                            "the release time {} has come: smdpplus releases the profile at the next sweep",
                            crate::time::datetime(t)
                        ),
                        _ => "no release is scheduled for this order".into(),
                    };
                    Builder::new("confirmedNotScheduled")
                        .also(cancelled(), Some(Action::Cancel), WHEN_CANCEL)
                        .refuse(move |k| match k {
                            CallbackKind::InlineProfileDownload
                            | CallbackKind::PurchaseWithProfileDownload => {
                                "the profile is Confirmed, not released (profileNotReleasedByOperator)".into()
                            }
                            CallbackKind::DelayedProfileDownload => delayed.clone(),
                            CallbackKind::OperationCancel => "no delayed download is pending".into(),
                            _ => no_balance.into(),
                        })
                }
            }
        }
        State::Allocated | State::Linked => Builder::new("notConfirmed")
            .also(cancelled(), Some(Action::Cancel), WHEN_CANCEL)
            .refuse(|k| match k {
                CallbackKind::OperationCancel => "no delayed download is pending".into(),
                CallbackKind::BalanceAddition => no_balance.into(),
                _ => format!("the order is {state}: not confirmed yet"),
            }),
        State::Downloaded | State::Installed => Builder::new("downloaded").refuse(|k| match k {
            CallbackKind::CancelledPurchase => format!(
                "the profile is {state}: an order is not cancelled after download (8.2.1/3.3)"
            ),
            CallbackKind::BalanceAddition => no_balance.into(),
            CallbackKind::OperationCancel => {
                format!("the profile is {state}: the download already happened")
            }
            _ => format!("the profile is already {state}: no download callback"),
        }),
        State::Error => {
            let error = p
                .error_reason
                .clone()
                .unwrap_or_else(|| "the order ended in error".into());
            let e = error.clone();
            Builder::new("error")
                .now(
                    Callback::CancelledPurchase {
                        metadata: Metadata::ended(&o.metadata, MoDirectStatus::ServiceError),
                    },
                    Some(Action::Cancel),
                    "the order ended in Error: cancel it, then tell the app",
                )
                .error(Some(error))
                .refuse(move |_| format!("the order ended in Error ({e}): only cancel"))
        }
        State::Available | State::Unavailable => {
            Builder::new("unavailable").refuse(|_| format!("the profile is {state}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mobileplans::{Choice, PurchaseMetadata};
    use crate::store::RECORD_VERSION;

    const NOW: i64 = 1_800_000_000;

    fn order(kind: OrderKind, registration: Registration) -> MobilePlansOrder {
        MobilePlansOrder {
            v: RECORD_VERSION,
            id: 1,
            transaction_id: "T1".into(),
            operator: "op".into(),
            kind,
            eid: Some("89049032123451234512345678901235".into()),
            iccid: "8999900000000000006".into(),
            matching_id: Some("MID".into()),
            registration,
            release_at: None,
            released_at: None,
            release_error: None,
            status: OrderStatus::Open,
            status_at: NOW,
            metadata: PurchaseMetadata {
                user_account: Choice::New,
                purchase_instrument: Choice::New,
                line: Choice::New,
                plan_name: "2GB Monthly".into(),
            },
            bucket: Some("b1".into()),
            created_at: NOW,
            updated_at: NOW,
            hold_until: None,
            confirmed_at: None,
        }
    }

    fn profile(state: State) -> ProfileRecord {
        ProfileRecord {
            v: RECORD_VERSION,
            iccid: "8999900000000000006".into(),
            profile_type: "demo".into(),
            operator: "op".into(),
            state,
            eid: Some("89049032123451234512345678901235".into()),
            matching_id: Some("MID".into()),
            cc_hashes: vec![],
            smds_address: None,
            download_attempts: 0,
            cc_attempts: 0,
            expires_at: None,
            created_at: NOW,
            updated_at: NOW,
            package_ref: String::new(),
            history_len: 1,
            error_reason: None,
            imported_by: None,
        }
    }

    fn decide_with(o: &MobilePlansOrder, p: Option<&ProfileRecord>) -> Decision {
        let d = decide(&Facts {
            order: o,
            profile: p,
            smdp_address: "smdp.example.com",
            now: NOW,
        });
        // Every callback appears exactly once.
        let mut all: Vec<CallbackKind> = d
            .now
            .iter()
            .chain(d.also.iter())
            .map(|a| a.callback.kind())
            .chain(d.refused.iter().map(|r| r.kind))
            .collect();
        all.sort();
        let mut want = CallbackKind::ALL.to_vec();
        want.sort();
        assert_eq!(all, want, "{d:?}");
        d
    }

    fn now_kind(d: &Decision) -> Option<CallbackKind> {
        d.now.as_ref().map(|a| a.callback.kind())
    }

    fn also_kinds(d: &Decision) -> Vec<CallbackKind> {
        d.also.iter().map(|a| a.callback.kind()).collect()
    }

    #[test]
    fn released_now_is_inline_with_the_exact_activation_code() {
        let o = order(OrderKind::Profile, Registration::Now);
        let d = decide_with(&o, Some(&profile(State::Released)));
        assert_eq!(
            d.now.as_ref().map(|a| &a.callback),
            Some(&Callback::InlineProfileDownload {
                metadata: Metadata::complete(&o.metadata),
                activation_code: "1$smdp.example.com$MID".into()
            })
        );
        assert_eq!(also_kinds(&d), vec![CallbackKind::CancelledPurchase]);
        assert_eq!(d.also[0].action, Some(Action::Cancel));
    }

    #[test]
    fn released_later_is_async_with_the_interval_rounded_to_15() {
        for (asked, sent) in [(5, 15), (15, 15), (22, 15), (23, 30), (60, 60)] {
            let o = order(
                OrderKind::Profile,
                Registration::Later {
                    interval_minutes: asked,
                },
            );
            let d = decide_with(&o, Some(&profile(State::Released)));
            match &d.now.as_ref().map(|a| &a.callback) {
                Some(Callback::PurchaseWithProfileDownload {
                    network_registration_interval,
                    activation_code,
                    ..
                }) => {
                    assert_eq!(*network_registration_interval, sent, "{asked}");
                    assert_eq!(activation_code, "1$smdp.example.com$MID");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(round_to_15(0), 0);
        assert_eq!(round_to_15(7), 15);
        assert_eq!(round_to_15(38), 45);
    }

    #[test]
    fn confirmed_with_a_future_release_is_delayed_and_can_be_withdrawn() {
        let mut o = order(OrderKind::Profile, Registration::Now);
        o.release_at = Some(NOW + 3600 - 30);
        let d = decide_with(&o, Some(&profile(State::Confirmed)));
        match &d.now.as_ref().map(|a| &a.callback) {
            Some(Callback::DelayedProfileDownload { download_delay, .. }) => {
                assert_eq!(*download_delay, 60)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            also_kinds(&d),
            vec![
                CallbackKind::CancelledPurchase,
                CallbackKind::OperationCancel
            ]
        );
        assert_eq!(d.also[1].action, Some(Action::Withdraw));
        // Released at the scheduled time: now inline.
        o.released_at = Some(NOW);
        let d = decide_with(&o, Some(&profile(State::Released)));
        assert_eq!(now_kind(&d), Some(CallbackKind::InlineProfileDownload));
    }

    #[test]
    fn confirmed_without_a_future_release_sends_nothing() {
        let mut o = order(OrderKind::Profile, Registration::Now);
        let d = decide_with(&o, Some(&profile(State::Confirmed)));
        assert_eq!(now_kind(&d), None);
        assert_eq!(also_kinds(&d), vec![CallbackKind::CancelledPurchase]);
        o.release_at = Some(NOW - 1);
        let d = decide_with(&o, Some(&profile(State::Confirmed)));
        assert_eq!(now_kind(&d), None);
        assert!(d
            .refused
            .iter()
            .any(|r| r.kind == CallbackKind::DelayedProfileDownload
                && r.reason.contains("next sweep")));
    }

    #[test]
    fn before_download_cancel_is_allowed_after_it_nothing() {
        let o = order(OrderKind::Profile, Registration::Now);
        for s in [State::Allocated, State::Linked] {
            let d = decide_with(&o, Some(&profile(s)));
            assert_eq!(now_kind(&d), None);
            assert_eq!(also_kinds(&d), vec![CallbackKind::CancelledPurchase]);
        }
        for s in [State::Downloaded, State::Installed] {
            let d = decide_with(&o, Some(&profile(s)));
            assert_eq!(now_kind(&d), None, "{s}");
            assert!(d.also.is_empty());
            assert!(d
                .refused
                .iter()
                .all(|r| r.reason.contains(s.as_str()) || r.kind == CallbackKind::BalanceAddition));
        }
    }

    #[test]
    fn error_allows_only_cancel_with_the_error() {
        let o = order(OrderKind::Profile, Registration::Now);
        let mut p = profile(State::Error);
        p.error_reason = Some("download retries exceeded".into());
        let d = decide_with(&o, Some(&p));
        let now = d.now.as_ref().expect("cancel");
        assert_eq!(now.action, Some(Action::Cancel));
        match &now.callback {
            Callback::CancelledPurchase { metadata } => {
                assert_eq!(metadata.mo_direct_status, MoDirectStatus::ServiceError);
                assert_eq!(metadata.plan_name, "");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.error.as_deref(), Some("download retries exceeded"));
        assert_eq!(d.refused.len(), 5);
    }

    #[test]
    fn balance_for_psim_and_installed_esim() {
        let mut o = order(OrderKind::Balance, Registration::Now);
        o.eid = None;
        let d = decide_with(&o, None);
        assert_eq!(
            d.now.as_ref().map(|a| &a.callback),
            Some(&Callback::BalanceAddition {
                metadata: Metadata::complete(&o.metadata),
                iccid: None
            })
        );
        let o = order(OrderKind::Balance, Registration::Now);
        let d = decide_with(&o, Some(&profile(State::Installed)));
        match &d.now.as_ref().map(|a| &a.callback) {
            Some(Callback::BalanceAddition { iccid, .. }) => {
                assert_eq!(iccid.as_deref(), Some("8999900000000000006"))
            }
            other => panic!("{other:?}"),
        }
        let d = decide_with(&o, Some(&profile(State::Released)));
        assert_eq!(now_kind(&d), None);
        let mut o = order(OrderKind::Balance, Registration::Now);
        o.bucket = None;
        assert_eq!(
            now_kind(&decide_with(&o, Some(&profile(State::Installed)))),
            None
        );
    }

    #[test]
    fn cancelled_withdrawn_and_vanished_orders() {
        let mut o = order(OrderKind::Profile, Registration::Now);
        o.status = OrderStatus::Cancelled;
        let d = decide_with(&o, Some(&profile(State::Available)));
        assert_eq!(now_kind(&d), Some(CallbackKind::CancelledPurchase));
        o.status = OrderStatus::Withdrawn;
        let d = decide_with(&o, Some(&profile(State::Available)));
        assert_eq!(now_kind(&d), Some(CallbackKind::OperationCancel));
        o.status = OrderStatus::Open;
        let mut p = profile(State::Linked);
        p.matching_id = None;
        let d = decide_with(&o, Some(&p));
        assert_eq!(d.rule, "orderGone");
        assert_eq!(now_kind(&d), Some(CallbackKind::CancelledPurchase));
    }

    #[test]
    fn held_portal_orders_send_nothing_until_confirmed() {
        let mut o = order(OrderKind::Profile, Registration::Now);
        o.hold_until = Some(NOW + 1800);
        o.release_at = Some(NOW + 600);
        let d = decide_with(&o, Some(&profile(State::Confirmed)));
        assert_eq!(d.rule, RULE_AWAITING_CONFIRMATION);
        assert_eq!(now_kind(&d), None);
        assert_eq!(d.also.len(), 1);
        assert_eq!(d.also[0].action, Some(Action::Cancel));
        assert!(!o.release_pending(), "no release before the confirmation");
        o.confirmed_at = Some(NOW);
        let d = decide_with(&o, Some(&profile(State::Confirmed)));
        assert_eq!(d.rule, "confirmedReleaseScheduled");
        o.confirmed_at = None;
        o.status = OrderStatus::Lapsed;
        let d = decide_with(&o, Some(&profile(State::Available)));
        assert_eq!(d.rule, RULE_HOLD_LAPSED);
        assert_eq!(now_kind(&d), Some(CallbackKind::CancelledPurchase));
    }
}
