//! Windows Mobile Plans: Mobile Plans orders placed
//! in-process through the same store commands as ES2+, the callback
//! decision API that gates what a portal may tell the app, the durable
//! scheduled release of delayed downloads, and the walled-garden list.
//!
//! - [`callback`]: the JavaScript callbacks, spelled as the docs do;
//! - [`decision`]: the pure decision table;
//! - [`web`]: the operator-web listener (`/mobileplans/v1/...`);
//! - [`guard`]: the capability that lets only the purchasing page act on
//!   an order, the portal's CSRF token, and the refusals;
//! - [`portal`]: the reference operator portal (`/portal`), in the
//!   languages of [`text`];
//! - [`walled_garden`]: the hosts to zero-rate.
//!
//! This module is the service between the handlers and the store:
//! checkout, cancel, withdraw, decide, and the release sweep.
//!
//! The facts come from Microsoft's Mobile Plans documentation for mobile
//! operators (Windows hardware docs, "Mobile Plans"), cited by page:
//! [MP-Portal] "Mobile Plans web portal interface", [MP-Callbacks] "Mobile
//! Plans callback notifications", [MP-Errors] "Mobile Plans eSIM error
//! handling", [MP-Account] "Mobile Plans account management",
//! [MP-WalledGarden] "Mobile Plans walled garden", [MP-eSIM] the eSIM
//! profile, activation code and SM-DP+ requirements of the same docs.

pub mod callback;
pub mod decision;
pub mod guard;
pub mod portal;
pub mod text;
pub mod walled_garden;
pub mod web;

use crate::app::App;
use crate::error::{Blame, Error};
use crate::http::query::percent_encode;
use crate::ids::{Eid, Iccid};
use crate::store::balance::{BalanceType, Credit};
use crate::store::lifecycle::State;
use crate::store::mobileplans::{
    Choice, MobilePlansOrder, NewOrder, OrderEvent, OrderKind, OrderStatus, PurchaseMetadata,
    Registration,
};
use crate::store::{Command, Ctx, FinalStatus, Idem, ProfileRecord};
use decision::{Action, Allowed, Decision, Facts};
use hyper::StatusCode;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The longest Mobile Plans `transactionId` ([MP-Portal]: "At most
/// 64 chars").
pub const MAX_TRANSACTION_ID: usize = 64;

/// The caller recorded in a profile's history for portal-driven changes.
pub const CALLER: &str = "mobileplans";

/// Why a Mobile Plans call failed, with its HTTP status.
#[derive(Clone, Debug)]
pub enum MpError {
    /// 400: a parameter is missing or malformed; it is named.
    BadRequest {
        /// The parameter.
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// 403: another operator's order or line.
    Forbidden(String),
    /// 404: no such order or line.
    NotFound(String),
    /// 409: the order's state does not allow it; the current decision is
    /// attached when there is one.
    Conflict {
        /// What is refused.
        message: String,
        /// The decision as it stands.
        decision: Option<Box<Value>>,
    },
    /// 500: our failure (the detail is logged, not sent).
    Internal(String),
    /// 503: the store cannot write now (the detail is logged, not sent).
    Unavailable(String),
}

impl MpError {
    fn bad(parameter: &str, message: impl Into<String>) -> MpError {
        MpError::BadRequest {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            MpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            MpError::Forbidden(_) => StatusCode::FORBIDDEN,
            MpError::NotFound(_) => StatusCode::NOT_FOUND,
            MpError::Conflict { .. } => StatusCode::CONFLICT,
            MpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            MpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body: `{"error", "parameter"?, "decision"?}`.
    pub fn body(&self) -> Value {
        match self {
            MpError::BadRequest { parameter, message } => {
                json!({"error": message, "parameter": parameter})
            }
            MpError::Forbidden(m) | MpError::NotFound(m) => json!({"error": m}),
            MpError::Conflict { message, decision } => {
                let mut v = json!({"error": message});
                if let Some(d) = decision {
                    v["decision"] = (**d).clone();
                }
                v
            }
            MpError::Internal(_) => json!({"error": "internal error"}),
            MpError::Unavailable(_) => {
                json!({"error": Error::unavailable("").public_message()})
            }
        }
    }
}

impl From<Error> for MpError {
    fn from(e: Error) -> MpError {
        match e.blame {
            Blame::InvalidRequest => MpError::bad("", e.message),
            Blame::NotAllowed => MpError::Forbidden(e.message),
            Blame::Conditions if e.code.reason == "3.9" => MpError::NotFound(e.message),
            Blame::Conditions => MpError::Conflict {
                message: format!("{}: {}", e.code, e.message),
                decision: None,
            },
            Blame::Internal => MpError::Internal(e.message),
            Blame::Unavailable => MpError::Unavailable(e.message),
        }
    }
}

/// The JSON refusal of the Mobile Plans and admin APIs.
impl From<MpError> for crate::http::error::HttpError {
    fn from(e: MpError) -> crate::http::error::HttpError {
        use crate::http::error::HttpError;
        match e {
            MpError::BadRequest { parameter, message } if parameter.is_empty() => {
                HttpError::bad(message)
            }
            MpError::BadRequest { parameter, message } => {
                HttpError::bad_parameter(&parameter, message)
            }
            MpError::Forbidden(m) => HttpError::new(StatusCode::FORBIDDEN, m),
            MpError::NotFound(m) => HttpError::not_found(m),
            MpError::Conflict { message, decision } => {
                let e = HttpError::new(StatusCode::CONFLICT, message);
                match decision {
                    Some(d) => e.with_decision(*d),
                    None => e,
                }
            }
            MpError::Internal(m) => {
                HttpError::ours(StatusCode::INTERNAL_SERVER_ERROR, "internal error", m)
            }
            MpError::Unavailable(m) => HttpError::ours(
                StatusCode::SERVICE_UNAVAILABLE,
                Error::unavailable("").public_message(),
                m,
            ),
        }
    }
}

/// How the decision API names the order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// By Mobile Plans transactionId.
    Transaction(String),
    /// The latest order of a line.
    Iccid(Iccid),
    /// The latest order of an eUICC.
    Eid(Eid),
}

/// Checks a Mobile Plans transactionId: 1 to 64 characters, no control
/// characters.
pub fn transaction_id(s: &str, parameter: &str) -> Result<String, MpError> {
    let n = s.chars().count();
    if n == 0 || n > MAX_TRANSACTION_ID || s.chars().any(char::is_control) {
        return Err(MpError::bad(
            parameter,
            format!("{parameter} must be 1 to {MAX_TRANSACTION_ID} characters without control characters"),
        ));
    }
    crate::http::trace::record(crate::http::trace::Field::MobilePlansTransactionId, s);
    Ok(s.to_owned())
}

/// An order, its profile and the decision made for it now.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The order.
    pub order: MobilePlansOrder,
    /// The profile record of the order's ICCID, if it is one of ours.
    pub profile: Option<ProfileRecord>,
    /// The decision.
    pub decision: Decision,
}

fn allowed_json(a: &Allowed, txid: &str) -> Value {
    let mut v = a.callback.to_json();
    v["when"] = json!(a.when);
    v["action"] = match a.action {
        Some(act) => json!({
            "method": "POST",
            "path": format!("{}?transactionId={}", act.path(), percent_encode(txid)),
        }),
        None => Value::Null,
    };
    v
}

impl Answer {
    /// The decision API's answer.
    pub fn to_json(&self) -> Value {
        let o = &self.order;
        let d = &self.decision;
        let txid = &o.transaction_id;
        let mut v = json!({
            "transactionId": txid,
            "orderId": o.id,
            "kind": match o.kind { OrderKind::Profile => "profile", OrderKind::Balance => "balance" },
            "status": o.status.as_str(),
            "holdUntil": o.hold_until.map(crate::time::datetime),
            "confirmedAt": o.confirmed_at.map(crate::time::datetime),
            "iccid": o.iccid,
            "eid": o.eid,
            "profileState": self.profile.as_ref().map(|p| p.state.as_str()),
            "networkRegistration": match o.registration {
                Registration::Now => json!({"when": "now"}),
                Registration::Later { interval_minutes } => json!({"when": "later", "intervalMinutes": interval_minutes}),
            },
            "releaseAt": o.release_at.map(crate::time::datetime),
            "releasedAt": o.released_at.map(crate::time::datetime),
            "rule": d.rule,
            "callback": d.now.as_ref().map(|a| allowed_json(a, txid)),
            "alsoAllowed": d.also.iter().map(|a| allowed_json(a, txid)).collect::<Vec<_>>(),
            "refused": d.refused.iter().map(|r| json!({
                "name": r.kind.name(),
                "object": r.kind.object(),
                "method": r.kind.method(),
                "reason": r.reason,
            })).collect::<Vec<_>>(),
        });
        if let Some(e) = &d.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// Finds the order a lookup names.
pub fn find(app: &App, lookup: &Lookup) -> Result<MobilePlansOrder, MpError> {
    let found = match lookup {
        Lookup::Transaction(t) => app.store.mp_order_by_transaction(t)?,
        Lookup::Iccid(i) => app.store.mp_latest_for_iccid(i)?,
        Lookup::Eid(e) => app.store.mp_latest_for_eid(e)?,
    };
    found.ok_or_else(|| {
        MpError::NotFound(match lookup {
            Lookup::Transaction(t) => format!("no Mobile Plans order for transactionId {t:?}"),
            Lookup::Iccid(i) => format!("no Mobile Plans order for ICCID {i}"),
            Lookup::Eid(e) => format!("no Mobile Plans order for EID {e}"),
        })
    })
}

/// The latest order of a line or an eUICC placed by `operator`; another
/// operator's orders are not seen.
pub fn find_for_operator(
    app: &App,
    lookup: &Lookup,
    operator: &str,
) -> Result<MobilePlansOrder, MpError> {
    let orders = match lookup {
        Lookup::Transaction(_) => vec![find(app, lookup)?],
        Lookup::Iccid(i) => app.store.mp_orders_for_iccid(i)?,
        Lookup::Eid(e) => app.store.mp_orders_for_eid(e)?,
    };
    orders
        .into_iter()
        .rev()
        .find(|o| o.operator == operator)
        .ok_or_else(|| MpError::NotFound("no such Mobile Plans order".into()))
}

/// Decides for an order now, and logs the decision with its transactionId.
pub fn decide(app: &App, order: MobilePlansOrder) -> Result<Answer, MpError> {
    let profile = match Iccid::parse(&order.iccid) {
        Some(i) => app.store.get(&i)?,
        None => None,
    };
    let decision = decision::decide(&Facts {
        order: &order,
        profile: profile.as_ref(),
        smdp_address: &app.config.smdp_address,
        now: crate::time::now(),
    });
    let also: Vec<&str> = decision
        .also
        .iter()
        .map(|a| a.callback.kind().name())
        .collect();
    tracing::info!(
        transaction_id = %order.transaction_id,
        order = order.id,
        iccid = %order.iccid,
        eid = order.eid.as_deref().unwrap_or("-"),
        state = profile.as_ref().map(|p| p.state.as_str()).unwrap_or("-"),
        rule = decision.rule,
        callback = decision.now.as_ref().map(|a| a.callback.kind().name()).unwrap_or("none"),
        also = %also.join(","),
        refused = decision.refused.len(),
        "Mobile Plans callback decision"
    );
    Ok(Answer {
        order,
        profile,
        decision,
    })
}

fn allows(d: &Decision, action: Action) -> bool {
    d.now
        .iter()
        .chain(d.also.iter())
        .any(|a| a.action == Some(action))
}

fn conflict(message: impl Into<String>, answer: &Answer) -> MpError {
    MpError::Conflict {
        message: message.into(),
        decision: Some(Box::new(answer.to_json())),
    }
}

/// The ES2+.CancelOrder (Available) of an order's profile, with the EID
/// and MatchingID the order holds (the store checks them again).
fn cancel_command(order: &MobilePlansOrder, profile: &ProfileRecord) -> Result<Command, MpError> {
    let iccid =
        Iccid::parse(&profile.iccid).ok_or_else(|| MpError::Internal("corrupt ICCID".into()))?;
    Ok(Command::CancelOrder {
        operator: order.operator.clone(),
        iccid,
        eid: profile.eid.as_deref().and_then(Eid::parse),
        matching_id: profile.matching_id.clone(),
        final_status: FinalStatus::Available,
    })
}

/// The user cancelled the purchase (`notifyCancelledPurchase`): the order
/// is cancelled at the SM-DP+ (the profile goes back to Available) and its
/// balance credit taken back. Any state before Downloaded; repeating it
/// answers the same.
pub async fn cancel(app: &App, txid: &str) -> Result<Answer, MpError> {
    let order = find(app, &Lookup::Transaction(txid.to_owned()))?;
    let before = decide(app, order)?;
    if before.order.status == OrderStatus::Cancelled {
        return Ok(before);
    }
    let gone = before.decision.rule == decision::RULE_ORDER_GONE;
    if !allows(&before.decision, Action::Cancel) && !gone {
        return Err(conflict("this order cannot be cancelled now", &before));
    }
    let now = crate::time::now();
    let order = &before.order;
    let ctx = Ctx {
        caller: CALLER,
        now,
        idem: None,
    };
    // An order gone from the SM-DP+ is only recorded as cancelled.
    let profile_cancel = match &before.profile {
        Some(p) if !gone => Some(cancel_command(order, p)?),
        _ => None,
    };
    app.store.mp_end_order(
        order.id,
        OrderEvent::Cancel,
        profile_cancel.as_ref().map(|c| (c, &ctx)),
        now,
    )?;
    app.store.sync().await?;
    app.outbox_wake.notify_one();
    tracing::info!(transaction_id = %txid, iccid = %order.iccid, "Mobile Plans purchase cancelled at the SM-DP+");
    decide(app, find(app, &Lookup::Transaction(txid.to_owned()))?)
}

/// The portal withdrew a delayed download (`notifyOperationCancel`): the
/// scheduled release is cancelled, and so is the order at the SM-DP+.
/// Only while the release is still pending; repeating it answers the same.
pub async fn withdraw(app: &App, txid: &str) -> Result<Answer, MpError> {
    let order = find(app, &Lookup::Transaction(txid.to_owned()))?;
    let before = decide(app, order)?;
    if before.order.status == OrderStatus::Withdrawn {
        return Ok(before);
    }
    if !allows(&before.decision, Action::Withdraw) {
        return Err(conflict(
            "no scheduled release to withdraw: notifyOperationCancel only works before the release",
            &before,
        ));
    }
    let Some(profile) = &before.profile else {
        return Err(conflict("the order has no profile", &before));
    };
    let now = crate::time::now();
    let cmd = cancel_command(&before.order, profile)?;
    let ctx = Ctx {
        caller: CALLER,
        now,
        idem: None,
    };
    app.store.mp_end_order(
        before.order.id,
        OrderEvent::Withdraw,
        Some((&cmd, &ctx)),
        now,
    )?;
    app.store.sync().await?;
    app.outbox_wake.notify_one();
    tracing::info!(transaction_id = %txid, iccid = %before.order.iccid, "Mobile Plans delayed download withdrawn; scheduled release cancelled");
    decide(app, find(app, &Lookup::Transaction(txid.to_owned()))?)
}

/// The operator (or the portal's stand-in payment step) confirms a held
/// portal order, after the payment: the profile is released (or stays
/// scheduled for its delayed release) and its order gets the normal time
/// to live. Repeating it answers the same. `caller` goes in the history.
pub async fn confirm(app: &App, txid: &str, caller: &str) -> Result<Answer, MpError> {
    let order = find(app, &Lookup::Transaction(txid.to_owned()))?;
    if order.confirmed_at.is_some() {
        return decide(app, order);
    }
    let before = decide(app, order)?;
    let order = &before.order;
    if !order.hold_pending() {
        return Err(conflict(
            "this order is not waiting for its confirmation",
            &before,
        ));
    }
    let belongs = before
        .profile
        .as_ref()
        .is_some_and(|p| p.matching_id.is_some() && p.matching_id == order.matching_id);
    if !belongs {
        return Err(conflict(
            "the order no longer exists at the SM-DP+",
            &before,
        ));
    }
    let now = crate::time::now();
    let iccid =
        Iccid::parse(&order.iccid).ok_or_else(|| MpError::Internal("corrupt ICCID".into()))?;
    let cmd = Command::ReleaseProfile {
        operator: order.operator.clone(),
        iccid,
    };
    let ctx = Ctx {
        caller,
        now,
        idem: None,
    };
    let release_now = order.release_at.is_none_or(|t| t <= now);
    app.store
        .mp_confirm_hold(order.id, release_now.then_some((&cmd, &ctx)), now)?;
    app.store.sync().await?;
    app.outbox_wake.notify_one();
    tracing::info!(transaction_id = %txid, iccid = %order.iccid, caller, released = release_now, "Mobile Plans portal order confirmed");
    decide(app, find(app, &Lookup::Transaction(txid.to_owned()))?)
}

/// Portal orders of an eUICC still open: held, or released and not yet
/// downloaded.
pub fn open_portal_orders(app: &App, eid: &Eid) -> Result<usize, MpError> {
    let mut n = 0;
    for o in app.store.mp_orders_for_eid(eid)? {
        if o.hold_until.is_none() || o.status != OrderStatus::Open || o.kind != OrderKind::Profile {
            continue;
        }
        let open = Iccid::parse(&o.iccid)
            .and_then(|i| app.store.get(&i).ok().flatten())
            .is_some_and(|p| {
                p.matching_id.is_some()
                    && p.matching_id == o.matching_id
                    && (p.state.is_reserved() || p.state == State::Released)
            });
        if open {
            n += 1;
        }
    }
    Ok(n)
}

/// Ends the held portal orders whose hold ran out unconfirmed: the
/// profile goes back to Available (ES2+.CancelOrder by smdpplus, in the
/// transaction that marks the order lapsed: a history entry, and the
/// operator's handleDownloadProgressInfo from the outbox). Returns how
/// many were handled.
pub async fn lapse_due(app: &App, now: i64) -> usize {
    let due = app.store.mp_due_holds(now);
    each_due(app, due, "portal hold", |order| {
        if !order.hold_pending() {
            // Another node sharing the store took care of it.
            return;
        }
        let profile = Iccid::parse(&order.iccid)
            .and_then(|i| app.store.get(&i).ok().flatten())
            .filter(|p| p.matching_id.is_some() && p.matching_id == order.matching_id);
        if profile
            .as_ref()
            .is_some_and(|p| p.state != State::Confirmed)
        {
            // Released (or further) through ES2+ meanwhile: the operator
            // has confirmed it its own way; nothing is taken back.
            match app.store.mp_confirm_hold(order.id, None, now) {
                Ok(_) => {
                    tracing::info!(transaction_id = %order.transaction_id, "portal hold ended: the profile was released through ES2+; taken as confirmed")
                }
                Err(e) => {
                    tracing::warn!(transaction_id = %order.transaction_id, error = %e, "portal hold left as it is")
                }
            }
            return;
        }
        let cmd = match profile.as_ref().map(|p| cancel_command(&order, p)) {
            Some(Ok(c)) => Some(c),
            _ => None,
        };
        let ctx = Ctx {
            caller: "smdpplus",
            now,
            idem: None,
        };
        let mut result = app.store.mp_end_order(
            order.id,
            OrderEvent::Lapse,
            cmd.as_ref().map(|c| (c, &ctx)),
            now,
        );
        if let (Err(e), Some(_)) = (&result, &cmd) {
            // The profile cannot be cancelled (changed through ES2+
            // meanwhile): the order still leaves the hold.
            tracing::warn!(transaction_id = %order.transaction_id, error = %e, "portal hold: the profile could not be returned");
            result = app
                .store
                .mp_end_order(order.id, OrderEvent::Lapse, None, now);
        }
        match result {
            Ok(_) => {
                app.metrics.mobileplans_holds_lapsed.inc();
                tracing::info!(
                    transaction_id = %order.transaction_id,
                    iccid = %order.iccid,
                    eid = order.eid.as_deref().unwrap_or("-"),
                    "portal order not confirmed in time; profile returned to Available"
                );
            }
            Err(e) => {
                tracing::warn!(transaction_id = %order.transaction_id, error = %e, "portal hold left as it is")
            }
        }
    })
    .await
}

/// Hands each order of a schedule's scan (`due`: the scheduled releases
/// or the portal holds that have come due) to `handle`, loaded; one that
/// cannot be read is logged and skipped. Then makes the changes durable
/// and wakes the outbox worker for the notifications they caused.
/// `schedule` names the schedule in the log. Returns how many were due.
async fn each_due(
    app: &App,
    due: Result<Vec<u64>, Error>,
    schedule: &str,
    mut handle: impl FnMut(MobilePlansOrder),
) -> usize {
    let due = match due {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "{schedule}: scan failed");
            return 0;
        }
    };
    for id in &due {
        match app.store.mp_order(*id) {
            Ok(Some(o)) => handle(o),
            Ok(None) => {}
            Err(e) => tracing::error!(order = id, error = %e, "{schedule}: order unreadable"),
        }
    }
    if !due.is_empty() {
        if let Err(e) = app.store.sync().await {
            tracing::error!(error = %e, "{schedule}: flush failed");
        }
        app.outbox_wake.notify_one();
    }
    due.len()
}

/// A checkout to place (what the portal, or until then the operator API,
/// asks for).
#[derive(Clone, Debug)]
pub struct Checkout {
    /// Mobile Plans transactionId.
    pub transaction_id: String,
    /// Profile or balance.
    pub kind: OrderKind,
    /// The eUICC (required for a profile).
    pub eid: Option<Eid>,
    /// A profile: the ICCID to order (else `profile_type`); a balance: the line.
    pub iccid: Option<Iccid>,
    /// A profile: the type to take from the pool.
    pub profile_type: Option<String>,
    /// Network registration.
    pub registration: Registration,
    /// A profile: release at this Unix time (delayed download), not at once.
    pub release_at: Option<i64>,
    /// A profile placed by the portal: held (Confirmed, not released)
    /// until this Unix time for the operator's confirmation (payment).
    pub hold_until: Option<i64>,
    /// Purchase metadata.
    pub metadata: PurchaseMetadata,
    /// The balance to credit.
    pub credit: Option<CreditSpec>,
}

fn req_str<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, MpError> {
    opt_str(m, name)?.ok_or_else(|| MpError::bad(name, format!("{name} is missing")))
}

fn opt_str<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, MpError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MpError::bad(name, format!("{name} must be a string"))),
    }
}

fn opt_u64(m: &Map<String, Value>, name: &str) -> Result<Option<u64>, MpError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| MpError::bad(name, format!("{name} must be a non-negative integer"))),
    }
}

/// MB given as a JSON number, in thousandths of a MB.
pub fn mb_to_kb(v: &Value, name: &str) -> Result<u64, MpError> {
    match v.as_f64() {
        Some(mb) if mb.is_finite() && (0.0..=1e12).contains(&mb) => {
            Ok((mb * 1000.0).round() as u64)
        }
        _ => Err(MpError::bad(
            name,
            format!("{name} must be a number of MB from 0 to 10^12"),
        )),
    }
}

fn choice(m: &Map<String, Value>, name: &str, default: Choice) -> Result<Choice, MpError> {
    match opt_str(m, name)? {
        None => Ok(default),
        Some(s) => Choice::parse(s).ok_or_else(|| {
            MpError::bad(
                name,
                format!("{name} must be new, existing, bailed or none"),
            )
        }),
    }
}

/// A balance to credit: (data in thousandths of a MB, seconds of
/// validity, type, locations).
pub type CreditSpec = (u64, i64, BalanceType, Vec<String>);

/// The credit fields of a JSON body (`dataInMB`, `validForSecs`,
/// `balanceType`, `locations`); `None` without `dataInMB`.
pub fn credit_spec(m: &Map<String, Value>) -> Result<Option<CreditSpec>, MpError> {
    let d = match m.get("dataInMB") {
        None | Some(Value::Null) => return Ok(None),
        Some(d) => d,
    };
    let kb = mb_to_kb(d, "dataInMB")?;
    let secs = opt_u64(m, "validForSecs")?
        .filter(|s| (1..=10 * 366 * 86400).contains(s))
        .ok_or_else(|| {
            MpError::bad(
                "validForSecs",
                "validForSecs (1 s to 10 years) is required with dataInMB",
            )
        })?;
    let t = match opt_str(m, "balanceType")?.unwrap_or("MODIRECTPAYG") {
        "MODIRECTPAYG" => BalanceType::ModirectPayg,
        "MODIRECT" => BalanceType::Modirect,
        _ => {
            return Err(MpError::bad(
                "balanceType",
                "balanceType must be MODIRECTPAYG or MODIRECT",
            ))
        }
    };
    let locations = match m.get("locations") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|l| match l.as_str() {
                Some(s) if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    Ok(s.to_owned())
                }
                _ => Err(MpError::bad(
                    "locations",
                    "locations must be two-letter ISO 3166 codes",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(MpError::bad("locations", "locations must be an array")),
    };
    Ok(Some((kb, secs as i64, t, locations)))
}

impl Checkout {
    /// Parses the operator API's JSON body (camelCase, names as in
    /// Microsoft's Mobile Plans documentation where it has them).
    pub fn from_json(v: &Value, now: i64) -> Result<Checkout, MpError> {
        let m = v
            .as_object()
            .ok_or_else(|| MpError::bad("body", "the body must be a JSON object"))?;
        let transaction_id = transaction_id(req_str(m, "transactionId")?, "transactionId")?;
        let kind = match req_str(m, "kind")? {
            "profile" => OrderKind::Profile,
            "balance" => OrderKind::Balance,
            _ => return Err(MpError::bad("kind", "kind must be profile or balance")),
        };
        let eid = match opt_str(m, "eid")? {
            Some(s) => {
                Some(Eid::parse(s).ok_or_else(|| MpError::bad("eid", "eid must be 32 digits"))?)
            }
            None => None,
        };
        let iccid = match opt_str(m, "iccid")? {
            Some(s) => {
                let i = Iccid::parse(s).filter(Iccid::luhn_ok).ok_or_else(|| {
                    MpError::bad(
                        "iccid",
                        "iccid must be 19-20 digits with a valid Luhn digit",
                    )
                })?;
                Some(i)
            }
            None => None,
        };
        let profile_type = opt_str(m, "profileType")?.map(str::to_owned);
        let plan_name = req_str(m, "planName")?;
        if plan_name.trim().is_empty() || plan_name.chars().count() > 128 {
            return Err(MpError::bad(
                "planName",
                "planName must be 1 to 128 characters",
            ));
        }
        let registration = match opt_str(m, "networkRegistration")?.unwrap_or("now") {
            "now" => Registration::Now,
            "later" => {
                let n = opt_u64(m, "networkRegistrationInterval")?.ok_or_else(|| {
                    MpError::bad("networkRegistrationInterval", "networkRegistrationInterval (minutes) is required when networkRegistration is later")
                })?;
                let interval_minutes = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=7 * 24 * 60).contains(n))
                    .ok_or_else(|| {
                        MpError::bad(
                            "networkRegistrationInterval",
                            "networkRegistrationInterval must be 1 to 10080 minutes",
                        )
                    })?;
                Registration::Later { interval_minutes }
            }
            _ => {
                return Err(MpError::bad(
                    "networkRegistration",
                    "networkRegistration must be now or later",
                ))
            }
        };
        let release_at = match opt_str(m, "releaseAt")? {
            Some(s) => {
                let t = crate::time::parse_datetime(s).ok_or_else(|| {
                    MpError::bad("releaseAt", "releaseAt must be an RFC 3339 date-time")
                })?;
                // A time that has come means release at once.
                (t > now).then_some(t)
            }
            None => None,
        };
        let (def_account, def_line) = match kind {
            OrderKind::Profile => (Choice::New, Choice::New),
            OrderKind::Balance => (Choice::Existing, Choice::Existing),
        };
        let metadata = PurchaseMetadata {
            user_account: choice(m, "userAccount", def_account)?,
            purchase_instrument: choice(m, "purchaseInstrument", def_account)?,
            line: choice(m, "line", def_line)?,
            plan_name: plan_name.to_owned(),
        };
        let credit = credit_spec(m)?;
        match kind {
            OrderKind::Profile => {
                if eid.is_none() {
                    return Err(MpError::bad(
                        "eid",
                        "a profile purchase names the eUICC (eid)",
                    ));
                }
                if iccid.is_none() && profile_type.is_none() {
                    return Err(MpError::bad(
                        "profileType",
                        "a profile purchase names an iccid or a profileType",
                    ));
                }
            }
            OrderKind::Balance => {
                if iccid.is_none() {
                    return Err(MpError::bad(
                        "iccid",
                        "a balance purchase names the line (iccid)",
                    ));
                }
                if credit.is_none() {
                    return Err(MpError::bad(
                        "dataInMB",
                        "a balance purchase credits dataInMB",
                    ));
                }
                if release_at.is_some() || registration != Registration::Now {
                    return Err(MpError::bad(
                        "releaseAt",
                        "releaseAt and networkRegistration apply to profile purchases",
                    ));
                }
            }
        }
        Ok(Checkout {
            transaction_id,
            kind,
            eid,
            iccid,
            profile_type,
            registration,
            release_at,
            hold_until: None,
            metadata,
            credit,
        })
    }
}

/// Serialises checkouts: a checkout is a downloadOrder then a confirmOrder,
/// and two checkouts of one transactionId must not both allocate.
static CHECKOUT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Places a purchase. A profile: ES2+.DownloadOrder bound to the EID
/// (idempotent per transactionId, so a retry after a crash resumes), then
/// ES2+.ConfirmOrder (released at once, or at `release_at`) together with
/// the order record and its balance credit. A balance: the order and the
/// credit. Durable before it returns. A transactionId that already has an
/// order of the same kind returns it (`false`); another kind is a conflict.
pub async fn checkout(
    app: &App,
    operator: &str,
    c: &Checkout,
) -> Result<(MobilePlansOrder, bool), MpError> {
    let _serial = CHECKOUT.lock().await;
    if let Some(o) = app.store.mp_order_by_transaction(&c.transaction_id)? {
        if o.kind == c.kind && o.operator == operator {
            return Ok((o, false));
        }
        return Err(MpError::Conflict {
            message: format!(
                "transactionId {:?} already has another order",
                c.transaction_id
            ),
            decision: None,
        });
    }
    let now = crate::time::now();
    let mut new = NewOrder {
        transaction_id: c.transaction_id.clone(),
        operator: operator.to_owned(),
        kind: c.kind,
        eid: c.eid.clone(),
        iccid: c.iccid.clone(),
        registration: c.registration,
        release_at: c.release_at,
        hold_until: c.hold_until,
        metadata: c.metadata.clone(),
        credit: c.credit.as_ref().map(|(kb, secs, t, locations)| Credit {
            id: None,
            balance_type: *t,
            data_kb: *kb,
            expires_at: now.saturating_add(*secs),
            locations: locations.clone(),
            plan_name: c.metadata.plan_name.clone(),
        }),
    };
    let order = match c.kind {
        OrderKind::Balance => {
            let Some(iccid) = &c.iccid else {
                return Err(MpError::bad(
                    "iccid",
                    "a balance purchase names the line (iccid)",
                ));
            };
            if let Some(p) = app.store.get(iccid)? {
                if p.operator != operator {
                    // As for an unknown line: no probing of another
                    // operator's inventory.
                    return Err(crate::store::unknown_iccid(iccid).into());
                }
                if p.state != State::Installed {
                    return Err(MpError::Conflict {
                        message: format!("the eSIM profile {iccid} is {}, not Installed", p.state),
                        decision: None,
                    });
                }
            }
            app.store.mp_place_balance_order(&new, now)?
        }
        OrderKind::Profile => {
            let iccid = download_order(app, operator, c, now)?;
            new.iccid = Some(iccid.clone());
            let confirm = Command::ConfirmOrder {
                operator: operator.to_owned(),
                iccid,
                eid: c.eid.clone(),
                matching_id: None,
                cc_hashes: vec![],
                smds_address: None,
                // A held order is released by its confirmation.
                release: c.release_at.is_none() && c.hold_until.is_none(),
            };
            let ctx = Ctx {
                caller: operator,
                now,
                idem: None,
            };
            app.store.mp_confirm_profile_order(&confirm, &ctx, &new)?
        }
    };
    app.store.sync().await?;
    tracing::info!(
        transaction_id = %order.transaction_id,
        order = order.id,
        iccid = %order.iccid,
        eid = order.eid.as_deref().unwrap_or("-"),
        release_at = order.release_at.map(crate::time::datetime).unwrap_or_default(),
        "Mobile Plans order placed"
    );
    Ok((order, true))
}

/// ES2+.DownloadOrder for a checkout, recorded under an idempotency key of
/// the transactionId: a second call returns the same ICCID.
fn download_order(app: &App, operator: &str, c: &Checkout, now: i64) -> Result<Iccid, MpError> {
    let mut h = Sha256::new();
    for part in [
        b"mobileplans/downloadOrder".as_slice(),
        operator.as_bytes(),
        c.transaction_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let key: [u8; 32] = h.finalize().into();
    if let Some(previous) = app.store.idempotent_response(&key)? {
        return Iccid::parse(&String::from_utf8_lossy(&previous))
            .ok_or_else(|| MpError::Internal("corrupt checkout record".into()));
    }
    let render = |r: &ProfileRecord| r.iccid.as_bytes().to_vec();
    let cmd = Command::DownloadOrder {
        operator: operator.to_owned(),
        eid: c.eid.clone(),
        iccid: c.iccid.clone(),
        profile_type: c.profile_type.clone(),
    };
    let applied = app.store.apply(
        &cmd,
        &Ctx {
            caller: operator,
            now,
            idem: Some(Idem {
                key,
                render: &render,
            }),
        },
    )?;
    Iccid::parse(&applied.record.iccid).ok_or_else(|| MpError::Internal("corrupt ICCID".into()))
}

/// Releases the profiles whose scheduled release time has come
/// (ES2+.ReleaseProfile by smdpplus, in the transaction that marks the
/// order released). A release that cannot be done (the order was cancelled
/// through ES2+ meanwhile, or expired) leaves the schedule with its reason.
/// Returns how many were handled.
pub async fn release_due(app: &App, now: i64) -> usize {
    let due = app.store.mp_due_releases(now);
    each_due(app, due, "scheduled release", |order| {
        if !order.release_pending() {
            // Another node sharing the store took care of it.
            return;
        }
        let result = match Iccid::parse(&order.iccid) {
            Some(iccid) => {
                let belongs =
                    app.store.get(&iccid).ok().flatten().is_some_and(|p| {
                        p.matching_id.is_some() && p.matching_id == order.matching_id
                    });
                if belongs {
                    let cmd = Command::ReleaseProfile {
                        operator: order.operator.clone(),
                        iccid,
                    };
                    let ctx = Ctx {
                        caller: "smdpplus",
                        now,
                        idem: None,
                    };
                    app.store.mp_release(order.id, &cmd, &ctx)
                } else {
                    Err(Error::refused(
                        crate::error::codes::ICCID_INVALID_TRANSITION,
                        "the profile no longer belongs to this order",
                    ))
                }
            }
            None => Err(Error::internal("corrupt ICCID")),
        };
        match result {
            Ok(()) => tracing::info!(
                transaction_id = %order.transaction_id,
                iccid = %order.iccid,
                "scheduled release: profile released"
            ),
            Err(e) => {
                tracing::warn!(
                    transaction_id = %order.transaction_id,
                    iccid = %order.iccid,
                    error = %e,
                    "scheduled release refused; taken off the schedule"
                );
                if let Err(e) = app.store.mp_release_failed(order.id, &e.message, now) {
                    tracing::error!(order = order.id, error = %e, "could not record the failed release");
                }
            }
        }
    })
    .await
}
