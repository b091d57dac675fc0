//! ES9+ RSP sessions in sled (SGP.22 §3.1.1.4, §5.6): the session records,
//! their expiry indexes and the cap on how many live at once.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `s/` | transactionId | expiry (i64 BE) + session (opaque) |
//! | `q/` | expiry (u64 BE) transactionId | - (pending: not yet authenticated) |
//! | `y/` | expiry (u64 BE) transactionId | - (authenticated) |
//!
//! A session is *pending* from ES9+.InitiateAuthentication until
//! ES9+.AuthenticateClient saves its next phase; it is then *authenticated*.
//! Every session is in exactly one of the two indexes, written in the same
//! atomic batch as its record. Pending sessions all get the same (short)
//! time to live, so `q/` in key order is also creation order: its first
//! entry is the oldest pending session, the one the cap evicts first.
//! Authenticated sessions are never evicted.
//!
//! Every session write holds one lock, under which the counts of pending
//! and authenticated sessions are kept exact; they are rebuilt from the
//! indexes when the store opens.

use super::keys::key;
use super::Sled;
use crate::error::{Error, Result};
use crate::store::session::{Admission, SessionCounts, MAX_EVICTIONS_PER_CREATE};
use std::sync::MutexGuard;

const RECORD: &str = "s/";
const PENDING: &str = "q/";
const AUTHENTICATED: &str = "y/";

/// Sessions removed per batch by [`Store::sweep_sessions`] (the lock is
/// released between batches).
const SWEEP_BATCH: usize = 1024;

fn index_key(prefix: &str, expires_at: i64, transaction_id: &[u8]) -> Vec<u8> {
    key(
        prefix,
        &[&(expires_at.max(0) as u64).to_be_bytes(), transaction_id],
    )
}

fn record_key(transaction_id: &[u8]) -> Vec<u8> {
    key(RECORD, &[transaction_id])
}

fn expiry_of(value: &[u8]) -> Option<i64> {
    let t: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(i64::from_be_bytes(t))
}

/// Counts the index entries of a freshly opened tree, and checks them
/// against the session records.
pub(super) fn count(tree: &sled::Tree) -> Result<SessionCounts> {
    let n = |p: &str| -> Result<u64> {
        let mut n = 0;
        for kv in tree.scan_prefix(p.as_bytes()) {
            kv?;
            n += 1;
        }
        Ok(n)
    };
    let counts = SessionCounts {
        pending: n(PENDING)?,
        authenticated: n(AUTHENTICATED)?,
    };
    let records = n(RECORD)?;
    if records != counts.total() {
        tracing::warn!(
            records,
            indexed = counts.total(),
            "RSP session records and indexes differ; the sweeper removes the strays as they expire"
        );
    }
    Ok(counts)
}

impl Sled {
    fn session_lock(&self) -> MutexGuard<'_, SessionCounts> {
        // A poisoned lock still holds counts that match the last committed
        // batch (they are changed only after a successful apply).
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a new, pending session until `expires_at` (ES9+.
    /// InitiateAuthentication). With `max_sessions` > 0 and that many
    /// live, the oldest pending sessions are removed in the same batch to
    /// make room; when all of them are authenticated nothing is stored
    /// and the answer is [`Admission::Full`].
    pub(super) fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<Admission> {
        let mut counts = self.session_lock();
        let mut batch = sled::Batch::default();
        let mut evicted = 0;
        if max_sessions > 0 && counts.total() >= max_sessions {
            let need = (counts.total() + 1 - max_sessions).min(MAX_EVICTIONS_PER_CREATE);
            for kv in self.tree()?.scan_prefix(PENDING.as_bytes()) {
                if evicted == need {
                    break;
                }
                let (k, _) = kv?;
                batch.remove(record_key(&k[PENDING.len() + 8..]));
                batch.remove(k);
                evicted += 1;
            }
            // A cap lowered across a restart may need more than one
            // creation to be met again: each one trades at least one.
            if evicted == 0 {
                return Ok(Admission::Full);
            }
        }
        let mut v = expires_at.to_be_bytes().to_vec();
        v.extend_from_slice(session);
        batch.insert(record_key(transaction_id), v);
        batch.insert(index_key(PENDING, expires_at, transaction_id), &[][..]);
        self.watch(self.tree()?.apply_batch(batch).map_err(Error::from))?;
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        counts.pending = counts.pending.saturating_sub(evicted) + 1;
        Ok(Admission::Created { evicted })
    }

    /// Replaces a live session with its next phase, authenticated, until
    /// `expires_at` (ES9+.AuthenticateClient and GetBoundProfilePackage).
    /// A pending session leaves the pending index. False, and nothing
    /// stored, when the session is gone (expired, swept, evicted or ended).
    pub(super) fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool> {
        let mut counts = self.session_lock();
        let Some(old) = self.tree()?.get(record_key(transaction_id))? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        let was_pending = match expiry_of(&old) {
            Some(t) => {
                let pending = index_key(PENDING, t, transaction_id);
                let was_pending = self.tree()?.contains_key(&pending)?;
                batch.remove(pending);
                batch.remove(index_key(AUTHENTICATED, t, transaction_id));
                was_pending
            }
            None => false,
        };
        let mut v = expires_at.to_be_bytes().to_vec();
        v.extend_from_slice(session);
        batch.insert(record_key(transaction_id), v);
        batch.insert(
            index_key(AUTHENTICATED, expires_at, transaction_id),
            &[][..],
        );
        self.watch(self.tree()?.apply_batch(batch).map_err(Error::from))?;
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if was_pending {
            counts.pending = counts.pending.saturating_sub(1);
            counts.authenticated += 1;
        }
        Ok(true)
    }

    /// An ES9+ session that has not expired at `now`.
    pub(super) fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree()?
            .get(record_key(transaction_id))?
            .and_then(|v| (expiry_of(&v)? > now).then(|| v[8..].to_vec())))
    }

    /// Whether a transactionId was ever issued and is still remembered
    /// (sessions and their expiry index are swept together).
    pub(super) fn session_exists(&self, transaction_id: &[u8]) -> Result<bool> {
        Ok(self.tree()?.contains_key(record_key(transaction_id))?)
    }

    /// Ends an ES9+ session.
    pub(super) fn remove_session(&self, transaction_id: &[u8]) -> Result<()> {
        let mut counts = self.session_lock();
        let Some(old) = self.tree()?.get(record_key(transaction_id))? else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        batch.remove(record_key(transaction_id));
        let mut was = (false, false);
        if let Some(t) = expiry_of(&old) {
            let (p, a) = (
                index_key(PENDING, t, transaction_id),
                index_key(AUTHENTICATED, t, transaction_id),
            );
            was = (
                self.tree()?.contains_key(&p)?,
                self.tree()?.contains_key(&a)?,
            );
            batch.remove(p);
            batch.remove(a);
        }
        self.watch(self.tree()?.apply_batch(batch).map_err(Error::from))?;
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if was.0 {
            counts.pending = counts.pending.saturating_sub(1);
        }
        if was.1 {
            counts.authenticated = counts.authenticated.saturating_sub(1);
        }
        Ok(())
    }

    /// Removes sessions that expired before `now`, pending and
    /// authenticated; returns how many.
    pub(super) fn sweep_sessions(&self, now: i64) -> Result<usize> {
        let mut n = 0;
        for prefix in [PENDING, AUTHENTICATED] {
            let end = key(prefix, &[&(now.max(0) as u64).to_be_bytes()]);
            loop {
                let mut counts = self.session_lock();
                let mut batch = sled::Batch::default();
                let mut removed = 0u64;
                for kv in self
                    .tree()?
                    .range(prefix.as_bytes().to_vec()..end.clone())
                    .take(SWEEP_BATCH)
                {
                    let (k, _) = kv?;
                    batch.remove(record_key(&k[prefix.len() + 8..]));
                    batch.remove(k);
                    removed += 1;
                }
                if removed == 0 {
                    break;
                }
                self.watch(self.tree()?.apply_batch(batch).map_err(Error::from))?;
                self.written
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let c = if prefix == PENDING {
                    &mut counts.pending
                } else {
                    &mut counts.authenticated
                };
                *c = c.saturating_sub(removed);
                n += removed as usize;
            }
        }
        Ok(n)
    }

    /// Live sessions by phase (expired ones count until swept).
    pub(super) fn session_counts(&self) -> SessionCounts {
        *self.session_lock()
    }
}
