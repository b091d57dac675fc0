//! Identifiers a caller may use once within a window: GetBalance's
//! `X-MS-DM-TransactionId`, a repeat of which is answered 409 ([MP-Account]
//! "Status codes"). They are kept in the store, so that a restart does not
//! forget them and every node on one store sees one window.

use super::*;

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
        self.engine().prune_uses(cutoff, max)
    }
}
