//! Windows Mobile Plans orders ([MP-Callbacks], [MP-eSIM]): what a portal
//! checkout bought, under the Mobile Plans `transactionId`, with the
//! options that decide the callback (network registration now or later, a
//! scheduled release) and the durable schedule of releases.
//!
//! Keys (in the profiles' tree, so an order is written in the same
//! transaction as its profile's transition and its balance credit):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `u/` | order id (u64 BE) | [`MobilePlansOrder`] |
//! | `k/` | transactionId | order id (u64 BE): one order per transactionId |
//! | `l/` | ICCID `/` order id (u64 BE) | order id (orders of a line) |
//! | `d/` | EID `/` order id (u64 BE) | order id (orders of an eUICC) |
//! | `r/` | release time (u64 BE) order id (u64 BE) | order id (pending scheduled releases) |
//! | `w/` | hold end (u64 BE) order id (u64 BE) | order id (portal orders awaiting confirmation) |
//!
//! As for profiles, index entries derive from the record alone
//! ([`order_index_keys`]) and each write replaces the old record's entries.

pub mod status;

pub use super::sled::order_index_keys;
pub use status::{OrderEvent, OrderStatus};

use super::balance::{credit_tx, remove_bucket_tx, Credit};
use super::{gsma, Command, Ctx, ProfileRecord, Records, Store, TxResult, RECORD_VERSION};
use crate::error::{codes, Error, Result};
use crate::ids::{Eid, Iccid};
use serde::{Deserialize, Serialize};

/// What the purchase is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    /// A new eSIM profile: downloadOrder bound to the EID and confirmOrder
    /// ([MP-eSIM]); a download callback tells the app.
    Profile,
    /// Balance added to an existing line, a warm physical SIM or an
    /// installed eSIM ([MP-Portal], "Warm pSIM", "Top-up").
    Balance,
}

/// When the device may register on the network ([MP-Callbacks],
/// "Async connectivity").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Registration {
    /// At once: inline download and connectivity.
    Now,
    /// Later: `networkRegistrationInterval` minutes, as requested (the
    /// callback rounds it to 15).
    Later {
        /// Minutes.
        interval_minutes: u32,
    },
}

/// A value of `userAccount`, `purchaseInstrument` or `line`
/// ([MP-Callbacks], purchase metadata; lowercase in code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// `new`.
    New,
    /// `existing`.
    Existing,
    /// `bailed`.
    Bailed,
    /// `none`.
    None,
}

impl Choice {
    /// The enum member name in JavaScript (`MobilePlansUserAccount.new`).
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::New => "new",
            Choice::Existing => "existing",
            Choice::Bailed => "bailed",
            Choice::None => "none",
        }
    }

    /// Parses a member name, case-insensitively (the table writes `New`,
    /// code writes `new`).
    pub fn parse(s: &str) -> Option<Choice> {
        [Choice::New, Choice::Existing, Choice::Bailed, Choice::None]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// The purchase metadata the portal reports in the callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseMetadata {
    /// `userAccount`.
    pub user_account: Choice,
    /// `purchaseInstrument`.
    pub purchase_instrument: Choice,
    /// `line` (also sent as `lineType`).
    pub line: Choice,
    /// `planName`: non-empty on success.
    pub plan_name: String,
}

/// One Mobile Plans purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MobilePlansOrder {
    /// Record version.
    pub v: u32,
    /// Order id (store-generated, increasing).
    pub id: u64,
    /// The Mobile Plans `transactionId` of the portal launch (at most 64
    /// characters), logged with every decision.
    pub transaction_id: String,
    /// The operator.
    pub operator: String,
    /// What was bought.
    pub kind: OrderKind,
    /// The eUICC (eSIM), or none (physical SIM).
    pub eid: Option<String>,
    /// The profile ordered, or the line topped up.
    pub iccid: String,
    /// The MatchingID of the profile's order at confirmOrder: the profile
    /// still belongs to this purchase while its record carries it.
    pub matching_id: Option<String>,
    /// Network registration now or later.
    pub registration: Registration,
    /// Unix time of the scheduled release (delayed download), if any.
    pub release_at: Option<i64>,
    /// When smdpplus released the profile at the scheduled time.
    pub released_at: Option<i64>,
    /// Why the scheduled release could not be done.
    pub release_error: Option<String>,
    /// Open, or how it ended ([status]).
    pub status: OrderStatus,
    /// Unix time of the last status change.
    pub status_at: i64,
    /// The purchase metadata.
    pub metadata: PurchaseMetadata,
    /// The balance bucket this purchase credited, if any.
    pub bucket: Option<String>,
    /// Unix time of the checkout.
    pub created_at: i64,
    /// Unix time of the last change.
    pub updated_at: i64,
    /// A portal order: the profile is held (Confirmed, not released) until
    /// this Unix time, for the operator to confirm it (payment); then it
    /// goes back to Available. Stays set after the confirmation.
    #[serde(default)]
    pub hold_until: Option<i64>,
    /// When the operator (or the portal's stand-in payment) confirmed a
    /// held order.
    #[serde(default)]
    pub confirmed_at: Option<i64>,
}

impl MobilePlansOrder {
    /// A release is scheduled and has not happened (and the order is not
    /// waiting for its confirmation): the [status] table allows it.
    pub fn release_pending(&self) -> bool {
        status::allows(self, OrderEvent::Release)
    }

    /// A portal order held for its confirmation, not yet confirmed: the
    /// [status] table allows the confirmation.
    pub fn hold_pending(&self) -> bool {
        status::allows(self, OrderEvent::Confirm)
    }
}

/// A new order, before the store gives it an id.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// See [`MobilePlansOrder::transaction_id`].
    pub transaction_id: String,
    /// See [`MobilePlansOrder::operator`].
    pub operator: String,
    /// See [`MobilePlansOrder::kind`].
    pub kind: OrderKind,
    /// See [`MobilePlansOrder::eid`].
    pub eid: Option<Eid>,
    /// See [`MobilePlansOrder::iccid`] (a profile order learns it from
    /// downloadOrder).
    pub iccid: Option<Iccid>,
    /// See [`MobilePlansOrder::registration`].
    pub registration: Registration,
    /// See [`MobilePlansOrder::release_at`].
    pub release_at: Option<i64>,
    /// See [`MobilePlansOrder::metadata`].
    pub metadata: PurchaseMetadata,
    /// The balance the purchase credits, if any.
    pub credit: Option<Credit>,
    /// See [`MobilePlansOrder::hold_until`].
    pub hold_until: Option<i64>,
}

fn load_order_tx(tx: &dyn Records, id: u64) -> TxResult<MobilePlansOrder> {
    match tx.order(id)? {
        Some(o) => Ok(o),
        None => gsma(Error::internal(format!(
            "Mobile Plans order {id} is missing"
        ))),
    }
}

/// Creates the order record inside a transaction: refuses a transactionId
/// that already has one, credits the balance if the purchase carries one.
fn create_order_tx(
    tx: &dyn Records,
    new: &NewOrder,
    iccid: &Iccid,
    matching_id: Option<String>,
    now: i64,
) -> TxResult<MobilePlansOrder> {
    if tx.order_exists(&new.transaction_id)? {
        return gsma(Error::refused(
            codes::ICCID_IN_USE,
            format!(
                "transactionId {:?} already has an order",
                new.transaction_id
            ),
        ));
    }
    let id = tx.new_id()?;
    let bucket = match &new.credit {
        Some(c) => Some(credit_tx(tx, &new.operator, iccid, c, Some(id), now)?.1),
        None => None,
    };
    let order = MobilePlansOrder {
        v: RECORD_VERSION,
        id,
        transaction_id: new.transaction_id.clone(),
        operator: new.operator.clone(),
        kind: new.kind,
        eid: new.eid.as_ref().map(|e| e.as_str().to_owned()),
        iccid: iccid.as_str().to_owned(),
        matching_id,
        registration: new.registration,
        release_at: new.release_at,
        released_at: None,
        release_error: None,
        status: OrderStatus::Open,
        status_at: now,
        metadata: new.metadata.clone(),
        bucket,
        created_at: now,
        updated_at: now,
        hold_until: new.hold_until,
        confirmed_at: None,
    };
    tx.put_order(None, &order)?;
    Ok(order)
}

/// The order as the transaction sees it and its status after `event`, or
/// the [status] table's refusal.
fn load_for(
    tx: &dyn Records,
    id: u64,
    event: OrderEvent,
) -> TxResult<(MobilePlansOrder, OrderStatus)> {
    let old = load_order_tx(tx, id)?;
    match status::next(&old, event) {
        Ok(to) => Ok((old, to)),
        Err(e) => gsma(e),
    }
}

/// The order ended by `event` (cancel, withdraw, lapse), its bucket taken
/// back.
fn end_order_tx(
    tx: &dyn Records,
    id: u64,
    event: OrderEvent,
    now: i64,
) -> TxResult<MobilePlansOrder> {
    let (old, to) = load_for(tx, id, event)?;
    if to == OrderStatus::Open {
        return gsma(Error::internal(format!(
            "{} does not end an order",
            event.as_str()
        )));
    }
    let mut new = old.clone();
    new.status = to;
    new.status_at = now;
    new.updated_at = now;
    if let Some(b) = &old.bucket {
        remove_bucket_tx(tx, &old.iccid, b, now)?;
    }
    tx.put_order(Some(&old), &new)?;
    Ok(new)
}

impl Store {
    /// One order.
    pub fn mp_order(&self, id: u64) -> Result<Option<MobilePlansOrder>> {
        self.engine().mp_order(id)
    }

    /// The order of a Mobile Plans transactionId.
    pub fn mp_order_by_transaction(
        &self,
        transaction_id: &str,
    ) -> Result<Option<MobilePlansOrder>> {
        self.engine().mp_order_by_transaction(transaction_id)
    }

    /// The latest order of a line.
    pub fn mp_latest_for_iccid(&self, iccid: &Iccid) -> Result<Option<MobilePlansOrder>> {
        Ok(self.mp_orders_for_iccid(iccid)?.pop())
    }

    /// The latest order of an eUICC.
    pub fn mp_latest_for_eid(&self, eid: &Eid) -> Result<Option<MobilePlansOrder>> {
        Ok(self.mp_orders_for_eid(eid)?.pop())
    }

    /// The orders of a line, oldest first.
    pub fn mp_orders_for_iccid(&self, iccid: &Iccid) -> Result<Vec<MobilePlansOrder>> {
        self.engine().mp_orders_for_iccid(iccid.as_str())
    }

    /// The orders of an eUICC, oldest first.
    pub fn mp_orders_for_eid(&self, eid: &Eid) -> Result<Vec<MobilePlansOrder>> {
        self.engine().mp_orders_for_eid(eid.as_str())
    }

    /// Every order, oldest first.
    pub fn mp_orders(&self) -> Result<Vec<MobilePlansOrder>> {
        self.engine().mp_orders()
    }

    /// Orders whose scheduled release is at or before `now`.
    pub fn mp_due_releases(&self, now: i64) -> Result<Vec<u64>> {
        self.engine().mp_due_releases(now)
    }

    /// Held portal orders whose hold ran out at or before `now`.
    pub fn mp_due_holds(&self, now: i64) -> Result<Vec<u64>> {
        self.engine().mp_due_holds(now)
    }

    /// Runs `f` in one transaction, after `profile`'s command on the
    /// order's profile when there is one (`f` then sees the profile's
    /// record after it): the order and its profile change together or not
    /// at all. Not yet durable: [`Store::sync`].
    fn mp_tx<T>(
        &self,
        profile: Option<(&Command, &Ctx<'_>)>,
        f: impl Fn(&dyn Records, Option<&ProfileRecord>) -> TxResult<T>,
    ) -> Result<T> {
        let Some((cmd, ctx)) = profile else {
            return self.transact(|tx| f(tx, None));
        };
        // sled may run the transaction more than once: the last run's
        // value is the one committed.
        let out = std::sync::Mutex::new(None);
        self.apply_then(
            cmd,
            ctx,
            Some(&|tx, rec| {
                let v = f(tx, Some(rec))?;
                if let Ok(mut o) = out.lock() {
                    *o = Some(v);
                }
                Ok(())
            }),
        )?;
        out.into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| Error::internal("the order was not written"))
    }

    /// Keeps the profile's order at least until `until` (its time to live
    /// counted from a later start than its own).
    fn mp_keep_until(&self, tx: &dyn Records, rec: &ProfileRecord, until: i64) -> TxResult<()> {
        if rec.expires_at.is_some_and(|e| e < until) {
            let mut longer = rec.clone();
            longer.expires_at = Some(until);
            tx.put_profile(Some(rec), &longer)?;
        }
        Ok(())
    }

    /// The order time to live, in seconds.
    fn mp_ttl(&self) -> i64 {
        i64::try_from(self.inner.opts.order_ttl.as_secs()).unwrap_or(i64::MAX)
    }

    /// The profile purchase's ES2+.ConfirmOrder (`confirm`) and its order
    /// record, with the balance credit, in one transaction. The profile
    /// came from a downloadOrder made for the same transactionId. Not yet
    /// durable: [`Store::sync`].
    pub fn mp_confirm_profile_order(
        &self,
        confirm: &Command,
        ctx: &Ctx<'_>,
        new: &NewOrder,
    ) -> Result<MobilePlansOrder> {
        let Command::ConfirmOrder { iccid, .. } = confirm else {
            return Err(Error::internal(
                "a profile order is confirmed by confirmOrder",
            ));
        };
        self.mp_tx(Some((confirm, ctx)), |tx, rec| {
            let matching_id = match rec {
                Some(rec) => {
                    // A delayed download keeps its order for the usual time
                    // to live counted from the release, not from the checkout.
                    if let Some(t) = new.release_at {
                        self.mp_keep_until(tx, rec, t.saturating_add(self.mp_ttl()))?;
                    }
                    rec.matching_id.clone()
                }
                None => None,
            };
            create_order_tx(tx, new, iccid, matching_id, ctx.now)
        })
    }

    /// A balance purchase: the order record and its credit, in one
    /// transaction. Not yet durable.
    pub fn mp_place_balance_order(&self, new: &NewOrder, now: i64) -> Result<MobilePlansOrder> {
        let Some(iccid) = &new.iccid else {
            return Err(Error::invalid(
                codes::FORMAT_MISSING,
                "a balance order names the line's iccid",
            ));
        };
        self.transact(|tx| create_order_tx(tx, new, iccid, None, now))
    }

    /// Ends an order by `event` (cancel, withdraw or lapse; refused unless
    /// the [status] table allows it for the order as it is in the
    /// transaction) and takes back its balance credit; with `cancel`, the
    /// profile's ES2+.CancelOrder in the same transaction. Not yet durable.
    pub fn mp_end_order(
        &self,
        id: u64,
        event: OrderEvent,
        cancel: Option<(&Command, &Ctx<'_>)>,
        now: i64,
    ) -> Result<MobilePlansOrder> {
        self.mp_tx(cancel, |tx, _| end_order_tx(tx, id, event, now))
    }

    /// The scheduled release of an order: ES2+.ReleaseProfile (`release`)
    /// and the order's `released_at`, in one transaction. Not yet durable.
    pub fn mp_release(&self, id: u64, release: &Command, ctx: &Ctx<'_>) -> Result<()> {
        self.mp_tx(Some((release, ctx)), |tx, _| {
            let (old, _) = load_for(tx, id, OrderEvent::Release)?;
            let mut new = old.clone();
            new.released_at = Some(ctx.now);
            new.updated_at = ctx.now;
            tx.put_order(Some(&old), &new)
        })
    }

    /// The confirmation of a held portal order (the payment): the order's
    /// `confirmed_at`, and with `release` its ES2+.ReleaseProfile, in one
    /// transaction. The profile's order gets its time to live from now
    /// (at least). Refused unless the order is still held. Not yet durable.
    pub fn mp_confirm_hold(
        &self,
        id: u64,
        release: Option<(&Command, &Ctx<'_>)>,
        now: i64,
    ) -> Result<MobilePlansOrder> {
        self.mp_tx(release, |tx, rec| {
            let (old, _) = load_for(tx, id, OrderEvent::Confirm)?;
            let mut new = old.clone();
            new.confirmed_at = Some(now);
            new.updated_at = now;
            if release.is_some() && new.release_at.is_some() {
                // The scheduled time passed during the hold: released now.
                new.released_at = Some(now);
            }
            tx.put_order(Some(&old), &new)?;
            if let Some(rec) = rec {
                self.mp_keep_until(tx, rec, now.saturating_add(self.mp_ttl()))?;
            }
            Ok(new)
        })
    }

    /// Takes a scheduled release that cannot be done off the schedule,
    /// with the reason. Not yet durable.
    pub fn mp_release_failed(&self, id: u64, reason: &str, now: i64) -> Result<()> {
        self.transact(|tx| {
            let old = load_order_tx(tx, id)?;
            if !status::allows(&old, OrderEvent::ReleaseFailed) {
                return Ok(());
            }
            let mut new = old.clone();
            new.release_error = Some(reason.to_owned());
            new.updated_at = now;
            tx.put_order(Some(&old), &new)
        })
    }
}
