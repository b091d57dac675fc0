//! The outbox of ES2+ handleDownloadProgressInfo notifications (SGP.22
//! §5.3.5): items written with their transitions, indexed by operator and
//! due time, removed only once the operator has acknowledged them.

use super::*;

impl Store {
    /// Every outbox item, oldest first: the full listing for the CLI and
    /// the admin API. The delivery worker reads [`Store::outbox_due`].
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.engine().outbox()
    }

    /// `operator`'s outbox items due at `now_ms`, earliest first, at most
    /// `limit`, and the time of the next attempt after them. The items are
    /// this node's to deliver until it reports them delivered or failed
    /// (on an engine shared by several nodes, another node gets them only
    /// once that hold lapses).
    pub fn outbox_due(
        &self,
        operator: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Option<i64>)> {
        self.engine().outbox_due(operator, now_ms, limit)
    }

    /// Outbox items per operator with the event time (Unix seconds) of each
    /// operator's oldest item.
    pub fn outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        self.engine().outbox_depths()
    }

    /// Removes a delivered outbox item and its index entries.
    pub fn outbox_delivered(&self, id: u64) -> Result<()> {
        self.transact(|tx| {
            if let Some(item) = tx.outbox_item(id)? {
                tx.remove_outbox(&item)?;
            }
            Ok(())
        })
    }

    /// Records a failed delivery attempt and when to try again: the item
    /// and its due-time index entry move together.
    pub fn outbox_failed(
        &self,
        item: &OutboxItem,
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<()> {
        self.transact(|tx| {
            let Some(old) = tx.outbox_item(item.id)? else {
                return Ok(());
            };
            let mut it = old.clone();
            it.attempts += 1;
            it.last_error = Some(error.to_owned());
            it.next_attempt_ms = next_attempt_ms;
            tx.put_outbox(Some(&old), &it)
        })
    }
}
