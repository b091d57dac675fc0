//! Transactions: the records a command reads and writes ([`Records`],
//! which the command interpreter is written against), its sled
//! implementation, and the helpers every write uses: aborts with an error
//! for the caller, records in and out, and sled's errors as the store's.

use super::*;
use sled::transaction::{ConflictableTransactionError, UnabortableTransactionError};

/// Why a transaction closure stopped.
#[derive(Debug)]
pub(super) enum TxFail {
    /// Stopped on purpose.
    Abort(TxAbort),
    /// Another transaction wrote what this one read: the engine runs it
    /// again.
    Conflict,
    /// The engine failed.
    Storage(Error),
}

/// Errors inside a transaction closure.
pub(super) type TxResult<T> = std::result::Result<T, TxFail>;

impl From<UnabortableTransactionError> for TxFail {
    fn from(e: UnabortableTransactionError) -> TxFail {
        match e {
            UnabortableTransactionError::Conflict => TxFail::Conflict,
            UnabortableTransactionError::Storage(e) => TxFail::Storage(e.into()),
        }
    }
}

impl From<sled::Error> for TxFail {
    fn from(e: sled::Error) -> TxFail {
        TxFail::Storage(e.into())
    }
}

impl From<TxFail> for ConflictableTransactionError<TxAbort> {
    fn from(f: TxFail) -> ConflictableTransactionError<TxAbort> {
        match f {
            TxFail::Abort(a) => ConflictableTransactionError::Abort(a),
            TxFail::Conflict => ConflictableTransactionError::Conflict,
            // Already the store's error (its blame says whether the disk
            // refused): carried out as an abort.
            TxFail::Storage(e) => ConflictableTransactionError::Abort(TxAbort::Gsma(e)),
        }
    }
}

/// The profile records a command reads and writes, inside the one
/// transaction that applies it. The command interpreter is written
/// against this; an engine implements it over its own transaction.
pub(super) trait Records {
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
}

/// [`Records`] over one sled transaction and the key layout of
/// [`super::keys`].
pub(super) struct SledRecords<'a>(pub(super) &'a TransactionalTree);

impl Records for SledRecords<'_> {
    fn profile(&self, iccid: &str) -> TxResult<Option<ProfileRecord>> {
        self.0
            .get(profile_key(iccid))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn matching_owner(&self, matching_id: &str) -> TxResult<Option<String>> {
        Ok(self
            .0
            .get(matching_key(matching_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn history_entry(&self, iccid: &str, seq: u64) -> TxResult<Option<HistoryEntry>> {
        self.0
            .get(history_key(iccid, seq))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_profile(&self, old: Option<&ProfileRecord>, new: &ProfileRecord) -> TxResult<()> {
        let old_keys = old.map(index_keys).unwrap_or_default();
        reindex(self.0, &old_keys, &index_keys(new), |k| {
            (k.as_slice(), new.iccid.as_bytes())
        })?;
        self.0.insert(profile_key(&new.iccid), encode(new))?;
        Ok(())
    }

    fn put_history(&self, iccid: &str, seq: u64, entry: &HistoryEntry) -> TxResult<()> {
        self.0.insert(history_key(iccid, seq), encode(entry))?;
        Ok(())
    }

    fn new_id(&self) -> TxResult<u64> {
        Ok(self.0.generate_id()?)
    }

    fn outbox_item(&self, id: u64) -> TxResult<Option<OutboxItem>> {
        self.0.get(outbox_key(id))?.map(|v| decode(&v)).transpose()
    }

    fn put_outbox(&self, old: Option<&OutboxItem>, item: &OutboxItem) -> TxResult<()> {
        let old_keys = old.map(outbox_index_keys).unwrap_or_default();
        reindex(self.0, &old_keys, &outbox_index_keys(item), |(k, v)| {
            (k.as_slice(), v.as_slice())
        })?;
        self.0.insert(outbox_key(item.id), encode(item))?;
        Ok(())
    }

    fn remove_outbox(&self, item: &OutboxItem) -> TxResult<()> {
        self.0.remove(outbox_key(item.id))?;
        for (k, _) in outbox_index_keys(item) {
            self.0.remove(k)?;
        }
        Ok(())
    }

    fn put_kept(&self, iccid: &str, kept: Option<&bound::KeptPackage>) -> TxResult<()> {
        let k = bound::kept_key(iccid);
        match kept {
            Some(p) => self.0.insert(k, encode(p))?,
            None => self.0.remove(k)?,
        };
        Ok(())
    }

    fn put_idempotency(&self, key: &[u8; 32], record: &IdemRecord) -> TxResult<()> {
        self.0.insert(super::key("i/", &[key]), encode(record))?;
        self.0.insert(
            super::key("j/", &[&(record.at.max(0) as u64).to_be_bytes(), key]),
            &[][..],
        )?;
        Ok(())
    }

    fn balance(&self, iccid: &str) -> TxResult<Option<balance::BalanceRecord>> {
        self.0
            .get(balance::balance_key(iccid))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_balance(&self, record: &balance::BalanceRecord) -> TxResult<()> {
        self.0
            .insert(balance::balance_key(&record.iccid), encode(record))?;
        Ok(())
    }

    fn use_of(&self, id: &str) -> TxResult<Option<i64>> {
        Ok(self
            .0
            .get(seen::use_key(id))?
            .as_deref()
            .and_then(seen::use_at))
    }

    fn put_use(&self, id: &str, old: Option<i64>, at: i64) -> TxResult<()> {
        if let Some(t) = old {
            self.0.remove(seen::use_age_key(t, id))?;
        }
        self.0
            .insert(seen::use_key(id), &(at.max(0) as u64).to_be_bytes()[..])?;
        self.0.insert(seen::use_age_key(at, id), &[][..])?;
        Ok(())
    }

    fn order(&self, id: u64) -> TxResult<Option<mobileplans::MobilePlansOrder>> {
        self.0
            .get(mobileplans::order_key(id))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn order_exists(&self, transaction_id: &str) -> TxResult<bool> {
        Ok(self.0.get(mobileplans::txid_key(transaction_id))?.is_some())
    }

    fn put_order(
        &self,
        old: Option<&mobileplans::MobilePlansOrder>,
        new: &mobileplans::MobilePlansOrder,
    ) -> TxResult<()> {
        let old_keys = old.map(mobileplans::order_index_keys).unwrap_or_default();
        let id = new.id.to_be_bytes();
        reindex(
            self.0,
            &old_keys,
            &mobileplans::order_index_keys(new),
            |k| (k.as_slice(), &id[..]),
        )?;
        self.0.insert(mobileplans::order_key(new.id), encode(new))?;
        Ok(())
    }
}

/// More writes in the transaction of a command, given the record after it.
pub(super) type Then<'a> = dyn Fn(&dyn Records, &ProfileRecord) -> TxResult<()> + 'a;

/// Why a transaction was aborted.
#[derive(Debug)]
pub(super) enum TxAbort {
    /// A protocol error for the caller.
    Gsma(Error),
    /// The chosen pool candidate was taken meanwhile: choose again.
    Retry,
}

/// The caller's result of a transaction that does not retry.
fn tx_result<T>(r: std::result::Result<T, TransactionError<TxAbort>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(TxAbort::Gsma(e))) => Err(e),
        Err(TransactionError::Abort(TxAbort::Retry)) => {
            Err(Error::internal("transaction asked for a retry"))
        }
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

/// Aborts the transaction with an error for the caller.
pub(super) fn gsma<T>(e: Error) -> TxResult<T> {
    Err(TxFail::Abort(TxAbort::Gsma(e)))
}

/// Aborts the transaction: the pool candidate it chose was taken, choose
/// again.
pub(super) fn retry<T>() -> TxResult<T> {
    Err(TxFail::Abort(TxAbort::Retry))
}

/// A stored record, or an aborted transaction if it is corrupt.
pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    serde_json::from_slice(bytes).or_else(|e| gsma(Error::internal(format!("corrupt record: {e}"))))
}

/// A record as it is stored (JSON).
pub(super) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Moves a record's index entries from those its old version implied
/// (`old`) to those of its new version (`new`): removes the ones that
/// went, inserts the ones that came, leaves the rest. `entry` gives an
/// entry's key and value.
fn reindex<'a, E: PartialEq>(
    tx: &TransactionalTree,
    old: &'a [E],
    new: &'a [E],
    entry: impl Fn(&'a E) -> (&'a [u8], &'a [u8]),
) -> TxResult<()> {
    for e in old.iter().filter(|e| !new.contains(e)) {
        tx.remove(entry(e).0)?;
    }
    for e in new.iter().filter(|e| !old.contains(e)) {
        let (k, v) = entry(e);
        tx.insert(k, v)?;
    }
    Ok(())
}

impl Store {
    /// Runs `f` as one transaction (sled may run it more than once, so it
    /// must only write through `tx`), counted for [`Store::sync`] and
    /// watched for a full disk. Not yet durable.
    pub(super) fn transact<T>(&self, f: impl Fn(&dyn Records) -> TxResult<T>) -> Result<T> {
        let r = self
            .tree()?
            .transaction(|tx| f(&SledRecords(tx)).map_err(ConflictableTransactionError::from));
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        self.watch(tx_result(r))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        match e {
            // An I/O error (ENOSPC, EIO) leaves sled refusing every write
            // until it is reopened: the store recovers by reopening.
            sled::Error::Io(_) => Error::unavailable(format!("storage: {e}")),
            _ => Error::internal(format!("storage: {e}")),
        }
    }
}
