//! [`Records`] over one sled transaction and the key layout of [`keys`],
//! and the transaction runner that keeps the in-memory counts in step
//! with what commits.

use super::keys::*;
use super::{compact, state_index, Sled};
use crate::error::Error;
use crate::store::balance::BalanceRecord;
use crate::store::bound::KeptPackage;
use crate::store::engine::TxBody;
use crate::store::lifecycle::State;
use crate::store::mobileplans::MobilePlansOrder;
use crate::store::tx::{gsma, Records, TxAbort, TxFail, TxResult};
use crate::store::{HistoryEntry, IdemRecord, OutboxItem, ProfileRecord};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use std::cell::RefCell;
use std::sync::atomic::Ordering;

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

/// [`Records`] over one sled transaction and the key layout of
/// [`super::keys`].
pub(crate) struct SledRecords<'a> {
    tx: &'a TransactionalTree,
    /// The first entry of the pool being allocated from, read before the
    /// transaction (sled transactions cannot scan, and the tree cannot be
    /// read from inside one); the allocation lock keeps other allocators
    /// from taking it meanwhile.
    candidate: Option<&'a str>,
    /// What the metrics counts gain if the transaction commits.
    deltas: RefCell<Deltas>,
}

/// Changes to the in-memory counts that a transaction makes.
#[derive(Default)]
struct Deltas {
    /// (state before, record after) of each profile write.
    transitions: Vec<(Option<State>, State, String, String)>,
    /// (operator, +1 or -1) of each outbox insert or removal.
    outbox: Vec<(String, i64)>,
}

impl Records for SledRecords<'_> {
    fn profile(&self, iccid: &str) -> TxResult<Option<ProfileRecord>> {
        self.tx
            .get(profile_key(iccid))?
            .map(|v| compact::decode_profile(iccid, &v).or_else(gsma))
            .transpose()
    }

    fn matching_owner(&self, matching_id: &str) -> TxResult<Option<String>> {
        Ok(self
            .tx
            .get(matching_key(matching_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn history_entry(&self, iccid: &str, seq: u64) -> TxResult<Option<HistoryEntry>> {
        self.tx
            .get(history_key(iccid, seq))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_profile(&self, old: Option<&ProfileRecord>, new: &ProfileRecord) -> TxResult<()> {
        let old_keys = old.map(index_keys).unwrap_or_default();
        reindex(self.tx, &old_keys, &index_keys(new), |k| {
            (k.as_slice(), index_value(k, &new.iccid))
        })?;
        // The stored package at the end of the record stays there.
        let key = profile_key(&new.iccid);
        let stored = self.tx.get(&key)?;
        let package = match &stored {
            Some(v) => compact::decode_with_package(&new.iccid, v).or_else(gsma)?.1,
            None => None,
        };
        self.tx.insert(key, compact::encode_profile(new, package))?;
        self.deltas.borrow_mut().transitions.push((
            old.map(|o| o.state),
            new.state,
            new.operator.clone(),
            new.profile_type.clone(),
        ));
        Ok(())
    }

    fn put_history(&self, iccid: &str, seq: u64, entry: &HistoryEntry) -> TxResult<()> {
        self.tx.insert(history_key(iccid, seq), encode(entry))?;
        Ok(())
    }

    fn new_id(&self) -> TxResult<u64> {
        Ok(self.tx.generate_id()?)
    }

    fn outbox_item(&self, id: u64) -> TxResult<Option<OutboxItem>> {
        self.tx.get(outbox_key(id))?.map(|v| decode(&v)).transpose()
    }

    fn put_outbox(&self, old: Option<&OutboxItem>, item: &OutboxItem) -> TxResult<()> {
        let old_keys = old.map(outbox_index_keys).unwrap_or_default();
        reindex(self.tx, &old_keys, &outbox_index_keys(item), |(k, v)| {
            (k.as_slice(), v.as_slice())
        })?;
        self.tx.insert(outbox_key(item.id), encode(item))?;
        if old.is_none() {
            self.deltas
                .borrow_mut()
                .outbox
                .push((item.operator.clone(), 1));
        }
        Ok(())
    }

    fn remove_outbox(&self, item: &OutboxItem) -> TxResult<()> {
        self.tx.remove(outbox_key(item.id))?;
        for (k, _) in outbox_index_keys(item) {
            self.tx.remove(k)?;
        }
        self.deltas
            .borrow_mut()
            .outbox
            .push((item.operator.clone(), -1));
        Ok(())
    }

    fn put_kept(&self, iccid: &str, kept: Option<&KeptPackage>) -> TxResult<()> {
        let k = kept_key(iccid);
        match kept {
            Some(p) => self.tx.insert(k, encode(p))?,
            None => self.tx.remove(k)?,
        };
        Ok(())
    }

    fn put_idempotency(&self, hash: &[u8; 32], record: &IdemRecord) -> TxResult<()> {
        self.tx.insert(key("i/", &[hash]), encode(record))?;
        self.tx.insert(
            key("j/", &[&(record.at.max(0) as u64).to_be_bytes(), hash]),
            &[][..],
        )?;
        Ok(())
    }

    fn balance(&self, iccid: &str) -> TxResult<Option<BalanceRecord>> {
        self.tx
            .get(balance_key(iccid))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_balance(&self, record: &BalanceRecord) -> TxResult<()> {
        self.tx.insert(balance_key(&record.iccid), encode(record))?;
        Ok(())
    }

    fn use_of(&self, id: &str) -> TxResult<Option<i64>> {
        Ok(self.tx.get(use_key(id))?.as_deref().and_then(use_at))
    }

    fn put_use(&self, id: &str, old: Option<i64>, at: i64) -> TxResult<()> {
        if let Some(t) = old {
            self.tx.remove(use_age_key(t, id))?;
        }
        self.tx
            .insert(use_key(id), &(at.max(0) as u64).to_be_bytes()[..])?;
        self.tx.insert(use_age_key(at, id), &[][..])?;
        Ok(())
    }

    fn order(&self, id: u64) -> TxResult<Option<MobilePlansOrder>> {
        self.tx.get(order_key(id))?.map(|v| decode(&v)).transpose()
    }

    fn order_exists(&self, transaction_id: &str) -> TxResult<bool> {
        Ok(self.tx.get(txid_key(transaction_id))?.is_some())
    }

    fn put_order(&self, old: Option<&MobilePlansOrder>, new: &MobilePlansOrder) -> TxResult<()> {
        let old_keys = old.map(order_index_keys).unwrap_or_default();
        let id = new.id.to_be_bytes();
        reindex(self.tx, &old_keys, &order_index_keys(new), |k| {
            (k.as_slice(), &id[..])
        })?;
        self.tx.insert(order_key(new.id), encode(new))?;
        Ok(())
    }

    fn pool_candidate(&self, _operator: &str, _profile_type: &str) -> TxResult<Option<String>> {
        Ok(self.candidate.map(str::to_owned))
    }

    fn type_known(&self, profile_type: &str, operator: &str) -> TxResult<bool> {
        Ok(self.tx.get(type_key(profile_type, operator))?.is_some())
    }
}

/// Runs `body` in one sled transaction (sled runs it again after a
/// conflict), then applies the committed run's count changes.
pub(super) fn transact(
    sled: &Sled,
    pool: Option<(&str, &str)>,
    body: &TxBody<'_>,
) -> std::result::Result<(), TxAbort> {
    let _alloc = if pool.is_some() {
        Some(
            sled.alloc
                .lock()
                .map_err(|_| TxAbort::Gsma(Error::internal("allocation lock poisoned")))?,
        )
    } else {
        None
    };
    let tree = sled.tree().map_err(TxAbort::Gsma)?;
    let candidate = match pool {
        Some((operator, profile_type)) => {
            let prefix = pool_prefix(operator, profile_type);
            match tree.scan_prefix(&prefix).keys().next() {
                Some(k) => Some(pool_iccid(
                    &k.map_err(|e| TxAbort::Gsma(e.into()))?,
                    prefix.len(),
                )),
                None => None,
            }
        }
        None => None,
    };
    let committed = RefCell::new(Deltas::default());
    let r = tree.transaction(|tx| {
        let records = SledRecords {
            tx,
            candidate: candidate.as_deref(),
            deltas: RefCell::new(Deltas::default()),
        };
        body(&records).map_err(ConflictableTransactionError::from)?;
        let deltas = records.deltas.into_inner();
        let counted = super::counters::Delta::of_writes(&deltas.transitions);
        if !counted.is_empty() {
            let (k, v) = counted.entry(tx.generate_id()?);
            tx.insert(k, v)?;
        }
        *committed.borrow_mut() = deltas;
        Ok(())
    });
    // Any transaction may have written: count it for sync().
    sled.wrote();
    match r {
        Ok(()) => {
            let d = committed.into_inner();
            if !d.transitions.is_empty() {
                sled.counted();
            }
            for (from, to, operator, profile_type) in d.transitions {
                match from {
                    Some(from) => sled.count_transition(from, to, &operator, &profile_type),
                    None => {
                        sled.counts[state_index(to)].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            for (operator, delta) in d.outbox {
                sled.count_outbox(&operator, delta);
            }
            Ok(())
        }
        // Storage errors inside the transaction arrive as aborts with the
        // store's error; watch() acts on those.
        Err(TransactionError::Abort(TxAbort::Gsma(e))) => Err(TxAbort::Gsma(watched(sled, e))),
        Err(TransactionError::Abort(TxAbort::Retry)) => Err(TxAbort::Retry),
        Err(TransactionError::Storage(e)) => Err(TxAbort::Gsma(watched(sled, e.into()))),
    }
}

/// `e`, after [`Sled::watch`] has seen it.
fn watched(sled: &Sled, e: Error) -> Error {
    match sled.watch::<()>(Err(e)) {
        Err(e) => e,
        Ok(()) => Error::internal("storage"),
    }
}

/// A stored record, or an aborted transaction if it is corrupt.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    serde_json::from_slice(bytes).or_else(|e| gsma(Error::internal(format!("corrupt record: {e}"))))
}

/// A record as it is stored (JSON).
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
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
