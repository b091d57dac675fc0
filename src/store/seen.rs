//! Identifiers a caller may use once within a window: GetBalance's
//! `X-MS-DM-TransactionId`, a repeat of which is answered 409 ([MP-Account]
//! "Status codes"). They are kept in the store, so that a restart does not
//! forget them and every node on one store sees one window.
//!
//! | key | value |
//! |---|---|
//! | `c/` id | first use, Unix seconds (u64 BE) |
//! | `ct/` first use (u64 BE), id | empty (the uses by age, for pruning) |

use super::*;

pub(super) fn use_key(id: &str) -> Vec<u8> {
    key("c/", &[id.as_bytes()])
}

pub(super) fn use_age_key(at: i64, id: &str) -> Vec<u8> {
    key("ct/", &[&(at.max(0) as u64).to_be_bytes(), id.as_bytes()])
}

/// The Unix seconds a stored use value holds.
pub(super) fn use_at(v: &[u8]) -> Option<i64> {
    Some(u64::from_be_bytes(v.try_into().ok()?) as i64)
}

impl Store {
    /// Records a use of `id` at `now`: false when it was used less than
    /// `window` seconds before (the earlier use stands), true otherwise.
    /// Not flushed: a use lost in a crash only reopens the window for it.
    pub fn first_use(&self, id: &str, now: i64, window: i64) -> Result<bool> {
        self.transact(|tx| match tx.use_of(id)? {
            Some(at) if now.saturating_sub(at) < window => Ok(false),
            old => {
                tx.put_use(id, old, now)?;
                Ok(true)
            }
        })
    }

    /// Forgets the uses older than `cutoff`, then the oldest beyond `max`:
    /// how many were forgotten.
    pub fn prune_uses(&self, cutoff: i64, max: usize) -> Result<usize> {
        let tree = self.tree()?;
        let entries: Vec<(i64, String)> = tree
            .scan_prefix(b"ct/")
            .keys()
            .filter_map(|k| {
                let k = k.ok()?;
                let rest = k.get(3..)?;
                let at = use_at(rest.get(..8)?)?;
                Some((at, String::from_utf8_lossy(rest.get(8..)?).into_owned()))
            })
            .collect();
        let excess = entries.len().saturating_sub(max);
        let mut n = 0;
        for (i, (at, id)) in entries.iter().enumerate() {
            if *at >= cutoff && i >= excess {
                break;
            }
            let mut batch = sled::Batch::default();
            batch.remove(use_age_key(*at, id));
            // A later use of the same id has its own age entry.
            if tree
                .get(use_key(id))?
                .as_deref()
                .and_then(use_at)
                .is_some_and(|t| t == *at)
            {
                batch.remove(use_key(id));
            }
            self.watch(tree.apply_batch(batch).map_err(Error::from))?;
            n += 1;
        }
        Ok(n)
    }
}
