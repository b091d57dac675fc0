//! ES9+ RSP sessions on the sled engine (SGP.22 §3.1.1.4, §5.6): kept in
//! memory while the server runs, written to sled only when the store is
//! closed.
//!
//! A session's state between two ES9+ calls needs no fsync: when it is
//! lost, the eUICC's next call fails with 8.10.1/3.9 and the LPA starts
//! a new RSP session, which SGP.22 allows (§3.1.3, §5.6.2, §5.6.3). What
//! must survive is durable elsewhere: the order's lifecycle transitions
//! and attempt counters are committed, and flushed before each answer, in
//! the store's transactions, and a delivered Bound Profile Package is
//! kept there for a retry. sled serves one process, so no other node needs
//! to see a session. Writing each step to sled cost about a fifth of a
//! download's server CPU (a batch per step, and the delivered BPP twice in
//! the log); now a step is a map update under a lock.
//!
//! Closing the store (graceful shutdown, the CLI) writes the live sessions
//! to sled, and opening it takes them back into memory and removes them
//! from sled, so a restart keeps every download in flight, including the
//! delivered ones still waiting for their installation result. A crash
//! loses them, as above.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `s/` | transactionId | expiry (i64 BE) + phase (1: authenticated, 0: pending) + session (opaque) |
//!
//! A session is *pending* from ES9+.InitiateAuthentication until
//! ES9+.AuthenticateClient saves its next phase; it is then
//! *authenticated*. Pending sessions all get the same (short) time to
//! live, so the pending index in expiry order is also creation order: its
//! first entry is the oldest pending session, the one the cap evicts
//! first. Authenticated sessions are never evicted.

use super::keys::key;
use super::Sled;
use crate::error::{Error, Result};
use crate::store::session::{Admission, SessionCounts, MAX_EVICTIONS_PER_CREATE};
use std::collections::{BTreeSet, HashMap};
use std::sync::MutexGuard;

const RECORD: &str = "s/";
/// Entries of stores written before sessions moved to memory.
const OLD_INDEXES: [&str; 2] = ["q/", "y/"];

/// One live session.
struct Entry {
    expires_at: i64,
    authenticated: bool,
    session: Vec<u8>,
}

/// The live sessions, with an expiry index per phase.
#[derive(Default)]
pub(super) struct Sessions {
    by_id: HashMap<Vec<u8>, Entry>,
    /// (expiry, transactionId) of pending sessions: oldest first.
    pending: BTreeSet<(i64, Vec<u8>)>,
    /// (expiry, transactionId) of authenticated sessions.
    authenticated: BTreeSet<(i64, Vec<u8>)>,
}

impl Sessions {
    fn counts(&self) -> SessionCounts {
        SessionCounts {
            pending: self.pending.len() as u64,
            authenticated: self.authenticated.len() as u64,
        }
    }

    fn index(&mut self, authenticated: bool) -> &mut BTreeSet<(i64, Vec<u8>)> {
        if authenticated {
            &mut self.authenticated
        } else {
            &mut self.pending
        }
    }

    fn insert(&mut self, transaction_id: &[u8], e: Entry) {
        self.remove(transaction_id);
        self.index(e.authenticated)
            .insert((e.expires_at, transaction_id.to_vec()));
        self.by_id.insert(transaction_id.to_vec(), e);
    }

    fn remove(&mut self, transaction_id: &[u8]) -> bool {
        match self.by_id.remove(transaction_id) {
            Some(old) => {
                self.index(old.authenticated)
                    .remove(&(old.expires_at, transaction_id.to_vec()));
                true
            }
            None => false,
        }
    }

    /// Adds sessions found on reopening the database.
    pub(super) fn absorb(&mut self, other: Sessions) {
        for (id, e) in other.by_id {
            if !self.by_id.contains_key(&id) {
                self.insert(&id, e);
            }
        }
    }

    /// Takes the sessions a closed store left in sled, and removes their
    /// records (and the index entries of older stores) from it.
    pub(super) fn load(tree: &sled::Tree) -> Result<Sessions> {
        let mut s = Sessions::default();
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix(RECORD.as_bytes()) {
            let (k, v) = kv?;
            let id = &k[RECORD.len()..];
            if let Some(e) = decode(&v) {
                s.insert(id, e);
            }
            batch.remove(k);
        }
        for p in OLD_INDEXES {
            for kv in tree.scan_prefix(p.as_bytes()) {
                batch.remove(kv?.0);
            }
        }
        tree.apply_batch(batch)?;
        Ok(s)
    }

    /// Writes every live session to sled, to be taken back by the next
    /// [`Sessions::load`].
    pub(super) fn save(&self, tree: &sled::Tree) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, e) in &self.by_id {
            let mut v = e.expires_at.to_be_bytes().to_vec();
            v.push(u8::from(e.authenticated));
            v.extend_from_slice(&e.session);
            batch.insert(key(RECORD, &[id]), v);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// A saved session record; `None` for one written by an older version
/// (its device starts a new session).
fn decode(v: &[u8]) -> Option<Entry> {
    let t: [u8; 8] = v.get(..8)?.try_into().ok()?;
    let authenticated = match v.get(8)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some(Entry {
        expires_at: i64::from_be_bytes(t),
        authenticated,
        session: v.get(9..)?.to_vec(),
    })
}

impl Sled {
    fn session_lock(&self) -> MutexGuard<'_, Sessions> {
        // Every change below is complete before it can panic (no panic
        // between an index change and its map change), so a poisoned lock
        // still holds consistent sessions.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the live sessions to sled and flushes (the store is being
    /// closed).
    pub(super) fn save_sessions(&self) -> Result<()> {
        let tree = self.tree()?;
        self.session_lock().save(&tree)?;
        self.handle()?.db.flush().map_err(Error::from)?;
        Ok(())
    }

    /// Stores a new, pending session until `expires_at` (ES9+.
    /// InitiateAuthentication). With `max_sessions` > 0 and that many
    /// live, the oldest pending sessions are removed to make room; when
    /// all of them are authenticated nothing is stored and the answer is
    /// [`Admission::Full`].
    pub(super) fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<Admission> {
        let mut s = self.session_lock();
        let mut evicted = 0;
        let total = s.counts().total();
        if max_sessions > 0 && total >= max_sessions {
            let need = (total + 1 - max_sessions).min(MAX_EVICTIONS_PER_CREATE);
            while evicted < need {
                let Some((_, id)) = s.pending.first().cloned() else {
                    break;
                };
                s.remove(&id);
                evicted += 1;
            }
            // A cap lowered across a restart may need more than one
            // creation to be met again: each one trades at least one.
            if evicted == 0 {
                return Ok(Admission::Full);
            }
        }
        s.insert(
            transaction_id,
            Entry {
                expires_at,
                authenticated: false,
                session: session.to_vec(),
            },
        );
        Ok(Admission::Created { evicted })
    }

    /// Replaces a live session with its next phase, authenticated, until
    /// `expires_at` (ES9+.AuthenticateClient and GetBoundProfilePackage).
    /// False, and nothing stored, when the session is gone (expired and
    /// swept, evicted or ended).
    pub(super) fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool> {
        let mut s = self.session_lock();
        if !s.by_id.contains_key(transaction_id) {
            return Ok(false);
        }
        s.insert(
            transaction_id,
            Entry {
                expires_at,
                authenticated: true,
                session: session.to_vec(),
            },
        );
        Ok(true)
    }

    /// An ES9+ session that has not expired at `now`.
    pub(super) fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .session_lock()
            .by_id
            .get(transaction_id)
            .filter(|e| e.expires_at > now)
            .map(|e| e.session.clone()))
    }

    /// Whether a transactionId was issued and is still remembered (until
    /// swept).
    pub(super) fn session_exists(&self, transaction_id: &[u8]) -> Result<bool> {
        Ok(self.session_lock().by_id.contains_key(transaction_id))
    }

    /// Ends an ES9+ session.
    pub(super) fn remove_session(&self, transaction_id: &[u8]) -> Result<()> {
        self.session_lock().remove(transaction_id);
        Ok(())
    }

    /// Removes sessions that expired before `now`, pending and
    /// authenticated; returns how many.
    pub(super) fn sweep_sessions(&self, now: i64) -> Result<usize> {
        let mut s = self.session_lock();
        let mut n = 0;
        for authenticated in [false, true] {
            let due: Vec<Vec<u8>> = s
                .index(authenticated)
                .range(..(now, Vec::new()))
                .map(|(_, id)| id.clone())
                .collect();
            for id in due {
                n += usize::from(s.remove(&id));
            }
        }
        Ok(n)
    }

    /// Live sessions by phase (expired ones count until swept).
    pub(super) fn session_counts(&self) -> SessionCounts {
        self.session_lock().counts()
    }
}
