//! Transactions: the records a command reads and writes ([`Records`],
//! which the command interpreter is written against and each engine
//! implements over its own transaction), and the helpers every write
//! uses: aborts with an error for the caller.

use super::*;

/// Why a transaction closure stopped.
#[derive(Debug)]
pub enum TxFail {
    /// Stopped on purpose.
    Abort(TxAbort),
    /// Another transaction wrote what this one read: the engine runs it
    /// again.
    Conflict,
    /// The engine failed.
    Storage(Error),
}

/// Errors inside a transaction closure.
pub type TxResult<T> = std::result::Result<T, TxFail>;

/// The profile records a command reads and writes, inside the one
/// transaction that applies it. The command interpreter is written
/// against this; an engine implements it over its own transaction.
pub trait Records {
    /// The profile record of `iccid`.
    fn profile(&self, iccid: &str) -> TxResult<Option<ProfileRecord>>;
    /// The ICCID whose order holds `matching_id`.
    fn matching_owner(&self, matching_id: &str) -> TxResult<Option<String>>;
    /// Entry `seq` (from 0) of a profile's history.
    fn history_entry(&self, iccid: &str, seq: u64) -> TxResult<Option<HistoryEntry>>;
    /// Writes `new`; its index entries move from those `old` implied.
    fn put_profile(&self, old: Option<&ProfileRecord>, new: &ProfileRecord) -> TxResult<()>;
    /// Writes entry `seq` of a profile's history.
    fn put_history(&self, iccid: &str, seq: u64, entry: &HistoryEntry) -> TxResult<()>;
    /// A fresh id for an outbox item or a Mobile Plans order.
    fn new_id(&self) -> TxResult<u64>;
    /// An outbox item.
    fn outbox_item(&self, id: u64) -> TxResult<Option<OutboxItem>>;
    /// Writes an outbox item (a new one when `old` is `None`); its index
    /// entries move from those `old` implied.
    fn put_outbox(&self, old: Option<&OutboxItem>, item: &OutboxItem) -> TxResult<()>;
    /// Removes an outbox item with its index entries.
    fn remove_outbox(&self, item: &OutboxItem) -> TxResult<()>;
    /// Keeps the Bound Profile Package delivered for `iccid` (for a retry
    /// in a later session), or erases it (`None`).
    fn put_kept(&self, iccid: &str, kept: Option<&bound::KeptPackage>) -> TxResult<()>;
    /// The answer to an ES2+ call, kept for a re-send of it.
    fn put_idempotency(&self, key: &[u8; 32], record: &IdemRecord) -> TxResult<()>;
    /// A SIM's balance record.
    fn balance(&self, iccid: &str) -> TxResult<Option<balance::BalanceRecord>>;
    /// Writes a SIM's balance record.
    fn put_balance(&self, record: &balance::BalanceRecord) -> TxResult<()>;
    /// When `id` was last recorded as used ([`Store::first_use`]).
    fn use_of(&self, id: &str) -> TxResult<Option<i64>>;
    /// Records a use of `id` at `at`, replacing the one at `old`.
    fn put_use(&self, id: &str, old: Option<i64>, at: i64) -> TxResult<()>;
    /// A Mobile Plans order.
    fn order(&self, id: u64) -> TxResult<Option<mobileplans::MobilePlansOrder>>;
    /// Whether a Mobile Plans transactionId has an order.
    fn order_exists(&self, transaction_id: &str) -> TxResult<bool>;
    /// Writes a Mobile Plans order; its index entries move from those `old`
    /// implied.
    fn put_order(
        &self,
        old: Option<&mobileplans::MobilePlansOrder>,
        new: &mobileplans::MobilePlansOrder,
    ) -> TxResult<()>;
    /// The first ICCID of the available pool of (operator, profile type)
    /// that no concurrent transaction is taking, if any (SGP.22 §5.3.1).
    /// The command then reads and checks the record itself.
    fn pool_candidate(&self, operator: &str, profile_type: &str) -> TxResult<Option<String>>;
    /// Whether the operator has profiles of this type.
    fn type_known(&self, profile_type: &str, operator: &str) -> TxResult<bool>;
}

/// More writes in the transaction of a command, given the record after it.
pub(super) type Then<'a> = dyn Fn(&dyn Records, &ProfileRecord) -> TxResult<()> + 'a;

/// Why a transaction was aborted.
#[derive(Debug)]
pub enum TxAbort {
    /// A protocol error for the caller.
    Gsma(Error),
    /// The chosen pool candidate was taken meanwhile: choose again.
    Retry,
}

/// Aborts the transaction with an error for the caller.
pub(crate) fn gsma<T>(e: Error) -> TxResult<T> {
    Err(TxFail::Abort(TxAbort::Gsma(e)))
}

/// Aborts the transaction: the pool candidate it chose was taken, choose
/// again.
pub(crate) fn retry<T>() -> TxResult<T> {
    Err(TxFail::Abort(TxAbort::Retry))
}

impl Store {
    /// Runs `f` as one transaction (an engine may run it more than once,
    /// so it must only write through `tx`), and returns the value of the
    /// run that committed. Not yet durable: [`Store::sync`].
    pub(super) fn transact<T>(&self, f: impl Fn(&dyn Records) -> TxResult<T>) -> Result<T> {
        self.transact_with(None, f)
            .and_then(|v| v.ok_or_else(|| Error::internal("transaction asked for a retry")))
    }

    /// [`Store::transact`] for a transaction that may take a profile from
    /// the (operator, profile type) `pool`; `Ok(None)` when it aborted with
    /// [`TxAbort::Retry`].
    pub(super) fn transact_with<T>(
        &self,
        pool: Option<(&str, &str)>,
        f: impl Fn(&dyn Records) -> TxResult<T>,
    ) -> Result<Option<T>> {
        let out = std::cell::RefCell::new(None);
        let body = |tx: &dyn Records| -> TxResult<()> {
            let v = f(tx)?;
            *out.borrow_mut() = Some(v);
            Ok(())
        };
        match self.engine().transact(pool, &body) {
            Ok(()) => out
                .into_inner()
                .map(Some)
                .ok_or_else(|| Error::internal("the transaction returned nothing")),
            Err(TxAbort::Retry) => Ok(None),
            Err(TxAbort::Gsma(e)) => Err(e),
        }
    }
}
