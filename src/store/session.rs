//! ES9+ RSP sessions (SGP.22 §3.1.1.4, §5.6): a session is *pending* from
//! ES9+.InitiateAuthentication until ES9+.AuthenticateClient saves its next
//! phase; it is then *authenticated*. The number of live sessions is
//! capped: the oldest pending sessions are evicted to make room, never an
//! authenticated one. Sessions live in the store, so that any node serves
//! any step of a download.

use super::{Result, Store};

/// Evictions done by one creation at most (more are needed only when the
/// cap was lowered across a restart; the next creations continue).
pub(crate) const MAX_EVICTIONS_PER_CREATE: u64 = 16;

/// Live sessions by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Created by InitiateAuthentication, not yet through AuthenticateClient.
    pub pending: u64,
    /// Through AuthenticateClient (waiting for the BPP, or delivered).
    pub authenticated: u64,
}

impl SessionCounts {
    /// Both phases.
    pub fn total(&self) -> u64 {
        self.pending + self.authenticated
    }
}

/// What [`Store::create_session`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The session is stored; `evicted` older pending sessions made room.
    Created {
        /// Pending sessions removed for it.
        evicted: u64,
    },
    /// The cap is reached and every live session is authenticated: nothing
    /// was stored.
    Full,
}

impl Store {
    /// Stores a new, pending session until `expires_at` (ES9+.
    /// InitiateAuthentication). With `max_sessions` > 0 and that many
    /// live, the oldest pending sessions are removed to make room; when all
    /// of them are authenticated nothing is stored and the answer is
    /// [`Admission::Full`].
    pub fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<Admission> {
        self.engine()
            .create_session(transaction_id, expires_at, session, max_sessions)
    }

    /// Replaces a live session with its next phase, authenticated, until
    /// `expires_at` (ES9+.AuthenticateClient and GetBoundProfilePackage).
    /// False, and nothing stored, when the session is gone (expired,
    /// swept, evicted or ended).
    pub fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool> {
        self.engine()
            .update_session(transaction_id, expires_at, session)
    }

    /// An ES9+ session that has not expired at `now`.
    pub fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        self.engine().get_session(transaction_id, now)
    }

    /// Whether a transactionId was ever issued and is still remembered.
    pub fn session_exists(&self, transaction_id: &[u8]) -> Result<bool> {
        self.engine().session_exists(transaction_id)
    }

    /// Ends an ES9+ session.
    pub fn remove_session(&self, transaction_id: &[u8]) -> Result<()> {
        self.engine().remove_session(transaction_id)
    }

    /// Removes sessions that expired before `now`, pending and
    /// authenticated; returns how many.
    pub fn sweep_sessions(&self, now: i64) -> Result<usize> {
        self.engine().sweep_sessions(now)
    }

    /// Live sessions by phase (expired ones count until swept).
    pub fn session_counts(&self) -> SessionCounts {
        self.engine().session_counts()
    }
}
