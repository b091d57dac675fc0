//! The outbox of ES2+ handleDownloadProgressInfo notifications (SGP.22
//! §5.3.5): items written with their transitions, indexed by operator and
//! due time, removed only once the operator has acknowledged them.

use super::*;

impl Store {
    /// Every outbox item, oldest first: the full listing for the CLI and
    /// the admin API. The delivery worker reads [`Store::outbox_due`].
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.tree()?
            .scan_prefix(b"o/")
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt outbox item: {e}")))
            })
            .collect()
    }

    /// `operator`'s outbox items due at `now_ms`, earliest first, at most
    /// `limit`, and the time of the next attempt after them (the first item
    /// left in the due-time index, which may already be due when `limit`
    /// cut the list). Reads only that operator's due entries.
    pub fn outbox_due(
        &self,
        operator: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Option<i64>)> {
        let tree = self.tree()?;
        let prefix = outbox_due_prefix(operator);
        let mut items = vec![];
        for kv in tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let rest = &k[prefix.len()..];
            let (Some(due), Some(id)) = (
                rest.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                rest.get(8..16).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            ) else {
                return Err(Error::internal("corrupt outbox index entry"));
            };
            let due = u64::from_be_bytes(due).min(i64::MAX as u64) as i64;
            if due > now_ms || items.len() >= limit {
                return Ok((items, Some(due)));
            }
            let id = u64::from_be_bytes(id);
            match tree.get(outbox_key(id))? {
                Some(v) => items.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| Error::internal(format!("corrupt outbox item: {e}")))?,
                ),
                None => return Err(Error::internal("outbox index names a missing item")),
            }
        }
        Ok((items, None))
    }

    /// Outbox items per operator with the event time (Unix seconds) of each
    /// operator's oldest item: the in-memory counts and one index lookup per
    /// operator.
    pub fn outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        let counts: Vec<(String, i64)> = {
            let m = self.inner.outbox.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(k, n)| (k.clone(), *n)).collect()
        };
        let tree = self.tree()?;
        let mut out = Vec::with_capacity(counts.len());
        for (op, n) in counts {
            let oldest = match tree.scan_prefix(outbox_operator_prefix(&op)).next() {
                Some(kv) => {
                    let (_, v) = kv?;
                    <[u8; 8]>::try_from(v.as_ref()).ok().map(i64::from_be_bytes)
                }
                None => None,
            };
            out.push((op, n, oldest));
        }
        Ok(out)
    }

    pub(super) fn count_outbox(&self, operator: &str, delta: i64) {
        let mut m = self.inner.outbox.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(operator.to_owned()).or_insert(0) += delta;
    }

    /// Removes a delivered outbox item and its index entries.
    pub fn outbox_delivered(&self, id: u64) -> Result<()> {
        let removed = self.transact(|tx| {
            let Some(item) = tx.outbox_item(id)? else {
                return Ok(None);
            };
            tx.remove_outbox(&item)?;
            Ok(Some(item.operator))
        })?;
        if let Some(op) = removed {
            self.count_outbox(&op, -1);
        }
        Ok(())
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

    /// Every raw outbox index entry, for consistency checks: (key, value).
    pub fn outbox_index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        for p in ["od/", "oi/"] {
            for kv in self.tree()?.scan_prefix(p.as_bytes()) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }
}

/// Builds the outbox index of a store written before it existed: one
/// atomic batch with every item's entries and the version marker. Runs
/// once; later opens find the marker.
pub(super) fn migrate_outbox_index(tree: &sled::Tree) -> Result<()> {
    if tree.contains_key(OUTBOX_INDEX_KEY)? {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    for kv in tree.scan_prefix(b"o/") {
        let (_, v) = kv?;
        let item: OutboxItem = serde_json::from_slice(&v)
            .map_err(|e| Error::internal(format!("corrupt outbox item: {e}")))?;
        for (k, v) in outbox_index_keys(&item) {
            batch.insert(k, v);
        }
        n += 1;
    }
    batch.insert(OUTBOX_INDEX_KEY, &OUTBOX_INDEX_VERSION.to_be_bytes()[..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    if n > 0 {
        tracing::info!(items = n, "outbox index built for existing items");
    }
    Ok(())
}
