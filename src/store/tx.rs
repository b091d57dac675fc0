//! The sled transaction helpers every write of the store uses: aborts
//! with an error for the caller, records in and out, and sled's errors as
//! the store's.

use super::*;
use sled::transaction::ConflictableTransactionError;

/// Errors inside a transaction closure.
pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<TxAbort>>;

/// More writes in the transaction of a command, given the record after it.
pub(super) type Then<'a> = dyn Fn(&TransactionalTree, &ProfileRecord) -> TxResult<()> + 'a;

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
    abort(TxAbort::Gsma(e))
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
pub(super) fn reindex<'a, E: PartialEq>(
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
    pub(super) fn transact<T>(&self, f: impl Fn(&TransactionalTree) -> TxResult<T>) -> Result<T> {
        let r = self.tree()?.transaction(|tx| f(tx));
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
