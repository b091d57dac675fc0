//! The storage engine seam: what the store needs from a database, stated
//! by the service's needs rather than by one engine's data model.
//!
//! The domain code (the command interpreter, Mobile Plans orders,
//! balances, the outbox's transitions) is written once, against
//! [`Records`] inside a transaction from [`Engine::transact`], and
//! against the reads below. Each engine lives in a module of its own:
//! [`super::sled`] (the embedded default) and [`super::pg`]
//! (PostgreSQL, for several nodes); one conformance suite runs against
//! both.

use super::bound::KeptPackage;
use super::lifecycle::State;
use super::mobileplans::MobilePlansOrder;
use super::session::{Admission, SessionCounts};
use super::tx::{Records, TxAbort, TxResult};
use super::{balance::BalanceRecord, HistoryEntry, ListFilter, NewProfile, OutboxItem};
use super::{ProfileRecord, Result};
use std::future::Future;
use std::pin::Pin;

/// The future of [`Engine::sync`].
pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A transaction body: it may run more than once (after a conflict), so
/// it must only write through the [`Records`] it is given.
pub type TxBody<'a> = dyn Fn(&dyn Records) -> TxResult<()> + 'a;

/// Rewrites one stored package: `Some(new bytes)` or `None` to keep it.
pub type Rewrite<'a> = dyn FnMut(&[u8], &str) -> Result<Option<Vec<u8>>> + 'a;

/// One storage engine. Every method is one atomic operation; state that
/// changes is durable once [`Engine::sync`] returns.
pub trait Engine: Send + Sync {
    /// `sled` or `postgres`.
    fn name(&self) -> &'static str;

    /// Runs `body` as one transaction and commits it. `pool` names the
    /// (operator, profile type) pool of a transaction that takes a profile
    /// from it ([`Records::pool_candidate`]). `Err(TxAbort::Retry)` means
    /// the candidate was taken meanwhile: the caller chooses again.
    fn transact(
        &self,
        pool: Option<(&str, &str)>,
        body: &TxBody<'_>,
    ) -> std::result::Result<(), TxAbort>;

    /// Makes every transaction committed before the call durable.
    fn sync(&self) -> SyncFuture<'_>;
    /// [`Engine::sync`] for callers outside the runtime (CLI, shutdown).
    fn flush_blocking(&self) -> Result<()>;
    /// Flushes and keeps what lives only in memory (the sled engine's RSP
    /// sessions) for the next opening; the server's last store call.
    fn close(&self) -> Result<()> {
        self.flush_blocking()
    }
    /// False while writes fail (a full disk, a lost database).
    fn writable(&self) -> bool;
    /// Tries to make the store writable again after a failure.
    fn recover(&self) -> Result<bool>;

    /// Profiles per state, every state listed.
    fn counts(&self) -> Vec<(State, i64)>;
    /// Available profiles per (operator, profile type).
    fn available_by_pool(&self) -> Vec<((String, String), i64)>;

    /// Adds checked profiles to the inventory, all or none: `Ok(Err(i))`
    /// when item `i` is already in the inventory (nothing is stored).
    fn insert_profiles(
        &self,
        items: &[NewProfile],
        caller: &str,
        now: i64,
    ) -> Result<std::result::Result<usize, usize>>;
    /// Rewrites stored packages one by one, each a compare-and-swap, so
    /// that the pass runs beside live traffic. Returns how many changed.
    fn rewrite_packages(
        &self,
        f: &mut Rewrite<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize>;
    /// The first stored ICCID of the same length as `first` within
    /// `first..=last`.
    fn first_taken_in(&self, first: &str, last: &str) -> Result<Option<String>>;

    /// One profile.
    fn profile(&self, iccid: &str) -> Result<Option<ProfileRecord>>;
    /// A profile's stored package.
    fn package(&self, record: &ProfileRecord) -> Result<Option<Vec<u8>>>;
    /// A profile's stored history entries, oldest first (the import entry
    /// a record carries itself is not among them).
    fn history(&self, iccid: &str) -> Result<Vec<HistoryEntry>>;
    /// Profiles matching a filter, in ICCID order.
    fn list(&self, filter: &ListFilter) -> Result<Vec<ProfileRecord>>;
    /// The ICCID whose order holds a (non-empty) matchingId.
    fn by_matching_id(&self, matching_id: &str) -> Result<Option<String>>;
    /// ICCIDs of the open orders linked to an EID.
    fn pending_for_eid(&self, eid: &str) -> Result<Vec<String>>;
    /// The records of the open orders linked to an EID, in ICCID order
    /// (an engine with round trips to a server reads them in one).
    fn pending_records_for_eid(&self, eid: &str) -> Result<Vec<ProfileRecord>> {
        let mut out = Vec::new();
        for iccid in self.pending_for_eid(eid)? {
            out.extend(self.profile(&iccid)?);
        }
        Ok(out)
    }
    /// ICCIDs in the available pool of (operator, profile type).
    fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<String>>;
    /// Orders that can expire and whose expiry is at or before `now`.
    fn due_expiries(&self, now: i64) -> Result<Vec<String>>;

    /// A stored response for an idempotent re-send.
    fn idempotent_response(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>>;
    /// Drops idempotency records older than `cutoff`; how many.
    fn prune_idempotency(&self, cutoff: i64) -> Result<usize>;

    /// Stores a new pending RSP session, evicting the oldest pending ones
    /// when `max_sessions` (> 0) are live.
    fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<Admission>;
    /// Replaces a live session with its authenticated next phase; false
    /// when it is gone.
    fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool>;
    /// A session not expired at `now`.
    fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>>;
    /// Whether a transactionId is still remembered.
    fn session_exists(&self, transaction_id: &[u8]) -> Result<bool>;
    /// Ends a session.
    fn remove_session(&self, transaction_id: &[u8]) -> Result<()>;
    /// Removes sessions expired before `now`; how many.
    fn sweep_sessions(&self, now: i64) -> Result<usize>;
    /// Live sessions by phase.
    fn session_counts(&self) -> SessionCounts;

    /// Every outbox item, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxItem>>;
    /// `operator`'s items due at `now_ms`, earliest first, at most
    /// `limit`, taken for delivery by this node (other nodes do not get
    /// them until they are delivered, failed or the hold lapses), and the
    /// time of the next attempt after them.
    fn outbox_due(
        &self,
        operator: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Option<i64>)>;
    /// Items per operator with each operator's oldest event time.
    fn outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>>;

    /// The package kept for a retry of an order, if not expired at `now`
    /// (an expired one is removed).
    fn kept_package(&self, iccid: &str, now: i64) -> Result<Option<KeptPackage>>;
    /// Removes kept packages expired at `now`; how many.
    fn sweep_kept_packages(&self, now: i64) -> Result<usize>;
    /// Whether a package is kept for an order.
    fn has_kept_package(&self, iccid: &str) -> Result<bool>;

    /// Forgets GetBalance transactionId uses older than `cutoff`, then the
    /// oldest beyond `max`; how many.
    fn prune_uses(&self, cutoff: i64, max: usize) -> Result<usize>;

    /// A SIM's balance record.
    fn balance(&self, iccid: &str) -> Result<Option<BalanceRecord>>;
    /// Whether the ICCID names a profile or a registered SIM.
    fn sim_known(&self, iccid: &str) -> Result<bool>;

    /// One Mobile Plans order.
    fn mp_order(&self, id: u64) -> Result<Option<MobilePlansOrder>>;
    /// The order of a Mobile Plans transactionId.
    fn mp_order_by_transaction(&self, transaction_id: &str) -> Result<Option<MobilePlansOrder>>;
    /// The orders of a line, oldest first.
    fn mp_orders_for_iccid(&self, iccid: &str) -> Result<Vec<MobilePlansOrder>>;
    /// The orders of an eUICC, oldest first.
    fn mp_orders_for_eid(&self, eid: &str) -> Result<Vec<MobilePlansOrder>>;
    /// Every order, oldest first.
    fn mp_orders(&self) -> Result<Vec<MobilePlansOrder>>;
    /// Orders whose scheduled release is due at `now`.
    fn mp_due_releases(&self, now: i64) -> Result<Vec<u64>>;
    /// Held portal orders whose hold ran out at `now`.
    fn mp_due_holds(&self, now: i64) -> Result<Vec<u64>>;

    /// Whether other processes share this store: their writes are not
    /// announced here, so whoever waits for them polls.
    fn shared(&self) -> bool {
        false
    }

    /// The sled engine, for its own consistency checks.
    fn as_sled(&self) -> Option<&super::sled::Sled> {
        None
    }
}
