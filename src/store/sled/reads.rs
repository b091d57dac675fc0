//! Reads of the sled engine (and the maintenance passes that scan):
//! records by key, listings by prefix, and the due-time indexes.

use super::keys::*;
use super::Sled;
use crate::error::{Error, Result};
use crate::store::bound::{KeptPackage, KEPT_VERSION};
use crate::store::mobileplans::MobilePlansOrder;
use crate::store::{HistoryEntry, ListFilter, OutboxItem, ProfileRecord};
use serde::Deserialize;

impl Sled {
    /// The first stored ICCID of the same length as `first` and `last`
    /// that lies between them (inclusive), if any: one range scan that
    /// tells whether a block of consecutive ICCIDs is still free.
    pub(super) fn read_first_taken_in(&self, first: &str, last: &str) -> Result<Option<String>> {
        let width = first.len();
        let range = profile_key(first)..=profile_key(last);
        for kv in self.tree()?.range(range) {
            let (k, _) = kv?;
            let iccid = k.get(2..).unwrap_or_default();
            if iccid.len() == width {
                return Ok(Some(String::from_utf8_lossy(iccid).into_owned()));
            }
        }
        Ok(None)
    }

    /// One profile.
    pub(super) fn read_profile(&self, iccid: &str) -> Result<Option<ProfileRecord>> {
        match self.tree()?.get(profile_key(iccid))? {
            Some(v) => Ok(Some(super::compact::decode_profile(iccid, &v)?)),
            None => Ok(None),
        }
    }

    /// A profile's stored history entries, oldest first.
    pub(super) fn read_history(&self, iccid: &str) -> Result<Vec<HistoryEntry>> {
        self.tree()?
            .scan_prefix(key("h/", &[iccid.as_bytes(), b"/"]))
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt history: {e}")))
            })
            .collect()
    }

    /// Profiles matching a filter, in ICCID order.
    pub(super) fn read_list(&self, f: &ListFilter) -> Result<Vec<ProfileRecord>> {
        let mut out = vec![];
        for kv in self.tree()?.scan_prefix(b"p/") {
            let (k, v) = kv?;
            let r = super::compact::decode_profile(&profile_iccid(&k), &v)?;
            if f.operator.as_ref().is_some_and(|o| *o != r.operator)
                || f.state.is_some_and(|s| s != r.state)
                || f.profile_type
                    .as_ref()
                    .is_some_and(|t| *t != r.profile_type)
            {
                continue;
            }
            out.push(r);
            if f.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// The values (ICCIDs) of the index entries under `prefix`.
    pub(super) fn values(&self, prefix: Vec<u8>) -> Result<Vec<String>> {
        self.tree()?
            .scan_prefix(prefix)
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.1).into_owned()))
            .collect()
    }

    /// Every outbox item, oldest first: the full listing for the CLI and
    /// the admin API. The delivery worker reads [`Store::outbox_due`].
    pub(super) fn read_outbox(&self) -> Result<Vec<OutboxItem>> {
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
    pub(super) fn read_outbox_due(
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
    pub(super) fn read_outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        let counts: Vec<(String, i64)> = {
            let m = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
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

    /// The package kept for a retry of this order, if any and not expired
    /// at `now`. An expired one is removed (unless it was replaced
    /// meanwhile).
    pub(super) fn read_kept_package(&self, iccid: &str, now: i64) -> Result<Option<KeptPackage>> {
        let k = kept_key(iccid);
        let Some(bytes) = self.tree()?.get(&k)? else {
            return Ok(None);
        };
        let kept: Option<KeptPackage> = serde_json::from_slice(&bytes).ok();
        match kept {
            Some(p) if p.v == KEPT_VERSION && p.expires_at > now => Ok(Some(p)),
            // Expired, or unreadable: never served; gone unless replaced.
            _ => {
                let _ = self
                    .tree()?
                    .compare_and_swap(&k, Some(bytes), None::<&[u8]>)?;
                self.wrote();
                Ok(None)
            }
        }
    }

    /// Removes every kept package expired at `now` (the sweeper runs it
    /// hourly; a read removes an expired one too). Returns how many.
    pub(super) fn sweep_kept(&self, now: i64) -> Result<usize> {
        #[derive(Deserialize)]
        struct Expiry {
            expires_at: i64,
        }
        let mut n = 0;
        for kv in self.tree()?.scan_prefix(b"n/") {
            let (k, v) = kv?;
            let expired =
                serde_json::from_slice::<Expiry>(&v).map_or(true, |e| e.expires_at <= now);
            if expired
                && self
                    .tree()?
                    .compare_and_swap(&k, Some(&v), None::<&[u8]>)?
                    .is_ok()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wrote();
        }
        Ok(n)
    }

    /// Forgets the uses older than `cutoff`, then the oldest beyond `max`:
    /// how many were forgotten.
    pub(super) fn prune_seen(&self, cutoff: i64, max: usize) -> Result<usize> {
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

    /// One order.
    pub(super) fn read_mp_order(&self, id: u64) -> Result<Option<MobilePlansOrder>> {
        match self.tree()?.get(order_key(id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                Error::internal(format!("corrupt Mobile Plans order: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    pub(super) fn mp_orders_under(&self, prefix: Vec<u8>) -> Result<Vec<MobilePlansOrder>> {
        let mut out = vec![];
        for kv in self.tree()?.scan_prefix(prefix) {
            let (_, v) = kv?;
            let id = id_of(&v).ok_or_else(|| Error::internal("corrupt Mobile Plans index"))?;
            if let Some(o) = self.read_mp_order(id)? {
                out.push(o);
            }
        }
        Ok(out)
    }

    /// Every order, oldest first.
    pub(super) fn read_mp_orders(&self) -> Result<Vec<MobilePlansOrder>> {
        self.tree()?
            .scan_prefix(b"u/")
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt Mobile Plans order: {e}")))
            })
            .collect()
    }

    pub(super) fn mp_due(&self, prefix: &str, now: i64) -> Result<Vec<u64>> {
        let end = key(
            prefix,
            &[&((now.max(0) as u64).saturating_add(1)).to_be_bytes()],
        );
        self.tree()?
            .range(prefix.as_bytes().to_vec()..end)
            .map(|kv| {
                let (_, v) = kv?;
                id_of(&v).ok_or_else(|| Error::internal("corrupt release schedule"))
            })
            .collect()
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
