//! The PostgreSQL engine: [`Engine`] over the queries of [`super::sql`].
//!
//! # Isolation
//! Commands run under READ COMMITTED with explicit locking: every read in
//! a command transaction locks the row it reads (`FOR UPDATE`), so the
//! read-modify-write of a record is serialised with any other command on
//! it; a pool allocation takes its candidate with `FOR UPDATE SKIP
//! LOCKED`, so concurrent allocators on any number of nodes never take
//! the same profile and never wait on each other. A key that does not
//! exist yet cannot be locked: two transactions inserting it meet on its
//! unique index (23505), which counts as a conflict, as do serialization
//! failures (40001) and deadlocks (40P01). A conflicting transaction is
//! rolled back and run again from the start (its body has no effect
//! outside it), so the same code is correct on engines that run every
//! transaction SERIALIZABLE (CockroachDB, YugabyteDB).
//!
//! # Calls from synchronous code
//! The store's API is synchronous (the sled engine answers from memory
//! or its page cache). This engine owns a small runtime that drives its
//! connections, and each call blocks on it: inside the server's runtime
//! through `block_in_place`, so other tasks move to other workers
//! meanwhile. A current-thread runtime cannot lend its thread this way;
//! the engine refuses calls from one.
//!
//! # Durability
//! A commit returns once PostgreSQL has made it durable (with the default
//! `synchronous_commit`), so [`Engine::sync`] has nothing left to do.

use super::{sql, Conflict, PgError, Postgres};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::store::balance::BalanceRecord;
use crate::store::bound::KeptPackage;
use crate::store::engine::{Engine, Rewrite, SyncFuture, TxBody};
use crate::store::lifecycle::State;
use crate::store::mobileplans::MobilePlansOrder;
use crate::store::session::{Admission, SessionCounts};
use crate::store::tx::{Records, TxAbort, TxFail, TxResult};
use crate::store::{HistoryEntry, IdemRecord, ListFilter, NewProfile, OutboxItem, ProfileRecord};
use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_postgres::IsolationLevel;

/// Attempts of a conflicting transaction at most.
const ATTEMPTS: u32 = super::RETRY_ATTEMPTS;

/// How long the metrics counts read from the database are reused.
const COUNTS_TTL: Duration = Duration::from_secs(2);

/// Packages read per batch by [`Engine::rewrite_packages`].
const REWRITE_BATCH: usize = 256;

/// Options of the PostgreSQL engine beside the connection settings.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// This node's name in outbox leases.
    pub node: String,
    /// How long a node holds the outbox items it took for delivery.
    pub outbox_lease: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            node: default_node_name(),
            outbox_lease: Duration::from_secs(60),
        }
    }
}

/// `<host>-<pid>-<random>`: unique per process.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The counts the metrics read, with when they were read.
struct Cached {
    at: Instant,
    counts: Vec<(State, i64)>,
    pools: Vec<((String, String), i64)>,
    sessions: SessionCounts,
}

/// The PostgreSQL engine.
pub struct PgEngine {
    db: Postgres,
    /// The runtime's handle: the engine's calls block on it.
    handle: tokio::runtime::Handle,
    /// Kept for its lifetime; declared after the pool so that the pool's
    /// connections go first.
    _rt: Runtime,
    opts: PgOptions,
    /// False from a failed database call until one succeeds.
    healthy: AtomicBool,
    cache: Mutex<Option<Cached>>,
}

/// The engine's own runtime, shut down without waiting when dropped (it
/// may be dropped from inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PgEngine {
    /// Connects, checks that this build knows the schema (or applies the
    /// pending migrations when `migrate` is set), and returns the engine.
    pub fn connect(
        cfg: &PostgresConfig,
        opts: PgOptions,
        migrate: bool,
    ) -> std::result::Result<PgEngine, PgError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("smdpplus-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Pool(format!("runtime: {e}")))?;
        let handle = rt.handle().clone();
        let rt = Runtime(Some(rt));
        let db = outside_runtime(|| {
            handle.block_on(async {
                let db = Postgres::connect(cfg).await?;
                if migrate {
                    db.migrate().await?;
                }
                let status = db.check_schema().await?;
                if !status.pending.is_empty() {
                    return Err(PgError::Schema(format!(
                        "the schema is at version {} and this build needs {} more migration(s): \
                         run `smdpplus store migrate`",
                        status.version,
                        status.pending.len()
                    )));
                }
                Ok(db)
            })
        })
        .map_err(|e| PgError::Pool(e.message))??;
        Ok(PgEngine {
            db,
            handle,
            _rt: rt,
            opts,
            healthy: AtomicBool::new(true),
            cache: Mutex::new(None),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs one query future on a pooled connection.
    pub(super) fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = std::result::Result<T, PgError>>,
    {
        let r = outside_runtime(|| {
            self.handle().block_on(async {
                let client = self.db.client().await?;
                f(client).await
            })
        })?;
        self.seen(r)
    }

    /// Notes whether the database answered.
    fn seen<T>(&self, r: std::result::Result<T, PgError>) -> Result<T> {
        match r {
            Ok(v) => {
                self.answered();
                Ok(v)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// The store's error for a database error: a lost or refusing
    /// database is "unavailable" (503, GSMA 1.2/4.2), the rest internal.
    fn error(&self, e: PgError) -> Error {
        let unavailable = match &e {
            PgError::Pool(_) => true,
            PgError::Db(d) => d.is_closed() || d.as_db_error().is_none(),
            _ => false,
        };
        if unavailable {
            if self.healthy.swap(false, Ordering::Relaxed) {
                tracing::error!(error = %e, "the PostgreSQL store is unreachable");
            }
            Error::unavailable(e.to_string())
        } else {
            Error::internal(e.to_string())
        }
    }

    /// Notes that the database answered.
    fn answered(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("the PostgreSQL store is reachable again");
        }
    }

    fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The metrics counts, read again when older than [`COUNTS_TTL`] or
    /// after this node changed something. Other nodes' changes show
    /// within the TTL.
    fn cached<T>(&self, pick: impl Fn(&Cached) -> T) -> Option<T> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.at.elapsed() < COUNTS_TTL) {
            return Some(pick(c));
        }
        let read = self.call(|c| async move {
            Ok((
                sql::counts_by_state(&c).await?,
                sql::available_by_pool(&c).await?,
                sql::session_counts(&c).await?,
            ))
        });
        match read {
            Ok((counts, pools, sessions)) => {
                let c = Cached {
                    at: Instant::now(),
                    counts,
                    pools,
                    sessions,
                };
                let v = pick(&c);
                *cache = Some(c);
                Some(v)
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "store counts unavailable");
                cache.as_ref().map(pick)
            }
        }
    }

    /// Runs `body` in a READ COMMITTED transaction, again after a
    /// conflict (see the module documentation).
    fn run_tx(&self, body: &TxBody<'_>) -> std::result::Result<(), TxAbort> {
        let rt = self.handle();
        let mut attempt = 1;
        loop {
            let outcome: std::result::Result<(), TxFail> = (|| {
                let mut client = rt
                    .block_on(self.db.client())
                    .map_err(|e| TxFail::Storage(self.error(e)))?;
                let tx = rt
                    .block_on(
                        client
                            .build_transaction()
                            .isolation_level(IsolationLevel::ReadCommitted)
                            .start(),
                    )
                    .map_err(|e| self.tx_fail(e.into()))?;
                let records = PgRecords {
                    tx: &tx,
                    rt,
                    engine: self,
                    missing_balances: RefCell::new(HashSet::new()),
                };
                body(&records)?;
                rt.block_on(tx.commit()).map_err(|e| self.tx_fail(e.into()))
            })();
            match outcome {
                Ok(()) => {
                    self.answered();
                    self.invalidate();
                    return Ok(());
                }
                Err(TxFail::Conflict) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, "store transaction conflict; running it again");
                    std::thread::sleep(super::backoff(attempt));
                    attempt += 1;
                }
                Err(TxFail::Conflict) => {
                    return Err(TxAbort::Gsma(Error::unavailable(
                        "the store transaction kept conflicting",
                    )))
                }
                Err(TxFail::Abort(a)) => return Err(a),
                Err(TxFail::Storage(e)) => return Err(TxAbort::Gsma(e)),
            }
        }
    }

    fn tx_fail(&self, e: PgError) -> TxFail {
        if e.is_conflict() {
            TxFail::Conflict
        } else {
            TxFail::Storage(self.error(e))
        }
    }
}

/// Runs `f`, which blocks on the engine's runtime, from wherever the
/// caller is: directly outside any runtime, through `block_in_place` on a
/// multi-threaded runtime's worker. A current-thread runtime's only
/// thread cannot block, so the call is refused.
fn outside_runtime<T>(f: impl FnOnce() -> T) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => Ok(f()),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(f))
        }
        Ok(_) => Err(Error::internal(
            "the PostgreSQL store cannot be called from a current-thread runtime",
        )),
    }
}

/// [`Records`] over one PostgreSQL transaction.
struct PgRecords<'a, 'c> {
    tx: &'a deadpool_postgres::Transaction<'c>,
    rt: &'a tokio::runtime::Handle,
    engine: &'a PgEngine,
    /// SIMs whose balance this transaction read and found missing: their
    /// first write is an insert, so that a concurrent first write
    /// conflicts instead of being overwritten.
    missing_balances: RefCell<HashSet<String>>,
}

impl PgRecords<'_, '_> {
    fn run<T>(&self, f: impl Future<Output = std::result::Result<T, PgError>>) -> TxResult<T> {
        self.rt.block_on(f).map_err(|e| self.engine.tx_fail(e))
    }
}

impl Records for PgRecords<'_, '_> {
    fn profile(&self, iccid: &str) -> TxResult<Option<ProfileRecord>> {
        self.run(sql::profile_for_update(self.tx, iccid))
    }

    fn matching_owner(&self, matching_id: &str) -> TxResult<Option<String>> {
        self.run(sql::matching_owner(self.tx, matching_id))
    }

    fn history_entry(&self, iccid: &str, seq: u64) -> TxResult<Option<HistoryEntry>> {
        self.run(sql::history_entry(self.tx, iccid, seq))
    }

    fn put_profile(&self, _old: Option<&ProfileRecord>, new: &ProfileRecord) -> TxResult<()> {
        self.run(sql::put_profile(self.tx, new))
    }

    fn put_history(&self, iccid: &str, seq: u64, entry: &HistoryEntry) -> TxResult<()> {
        self.run(sql::insert_history(self.tx, iccid, seq, entry))
    }

    fn new_id(&self) -> TxResult<u64> {
        self.run(sql::new_id(self.tx))
    }

    fn outbox_item(&self, id: u64) -> TxResult<Option<OutboxItem>> {
        self.run(sql::outbox_item_for_update(self.tx, id))
    }

    fn put_outbox(&self, _old: Option<&OutboxItem>, item: &OutboxItem) -> TxResult<()> {
        self.run(sql::put_outbox(self.tx, item))
    }

    fn remove_outbox(&self, item: &OutboxItem) -> TxResult<()> {
        self.run(sql::remove_outbox(self.tx, item.id)).map(|_| ())
    }

    fn put_kept(&self, iccid: &str, kept: Option<&KeptPackage>) -> TxResult<()> {
        self.run(sql::put_kept(self.tx, iccid, kept))
    }

    fn put_idempotency(&self, key: &[u8; 32], record: &IdemRecord) -> TxResult<()> {
        self.run(sql::put_idempotency(self.tx, key, record))
    }

    fn balance(&self, iccid: &str) -> TxResult<Option<BalanceRecord>> {
        let r = self.run(sql::balance_for_update(self.tx, iccid))?;
        if r.is_none() {
            self.missing_balances.borrow_mut().insert(iccid.to_owned());
        }
        Ok(r)
    }

    fn put_balance(&self, record: &BalanceRecord) -> TxResult<()> {
        let new = self.missing_balances.borrow_mut().remove(&record.iccid);
        self.run(sql::put_balance(self.tx, record, new))
    }

    fn use_of(&self, id: &str) -> TxResult<Option<i64>> {
        self.run(sql::use_of(self.tx, id))
    }

    fn put_use(&self, id: &str, old: Option<i64>, at: i64) -> TxResult<()> {
        self.run(sql::put_use(self.tx, id, old, at))
    }

    fn order(&self, id: u64) -> TxResult<Option<MobilePlansOrder>> {
        self.run(sql::order_for_update(self.tx, id))
    }

    fn order_exists(&self, transaction_id: &str) -> TxResult<bool> {
        self.run(sql::order_exists(self.tx, transaction_id))
    }

    fn put_order(&self, _old: Option<&MobilePlansOrder>, new: &MobilePlansOrder) -> TxResult<()> {
        self.run(sql::put_order(self.tx, new))
    }

    fn pool_candidate(&self, operator: &str, profile_type: &str) -> TxResult<Option<String>> {
        self.run(sql::pool_candidate(self.tx, operator, profile_type))
    }

    fn type_known(&self, profile_type: &str, operator: &str) -> TxResult<bool> {
        self.run(sql::type_known(self.tx, profile_type, operator))
    }
}

impl Engine for PgEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn transact(
        &self,
        _pool: Option<(&str, &str)>,
        body: &TxBody<'_>,
    ) -> std::result::Result<(), TxAbort> {
        outside_runtime(|| self.run_tx(body)).map_err(TxAbort::Gsma)?
    }

    fn sync(&self) -> SyncFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    fn shared(&self) -> bool {
        true
    }

    fn flush_blocking(&self) -> Result<()> {
        Ok(())
    }

    fn writable(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn recover(&self) -> Result<bool> {
        let r = self.call(|c| async move {
            c.simple_query("SELECT 1").await?;
            Ok(())
        });
        Ok(r.is_ok())
    }

    fn counts(&self) -> Vec<(State, i64)> {
        self.cached(|c| c.counts.clone())
            .unwrap_or_else(|| State::ALL.iter().map(|s| (*s, 0)).collect())
    }

    fn available_by_pool(&self) -> Vec<((String, String), i64)> {
        self.cached(|c| c.pools.clone()).unwrap_or_default()
    }

    fn insert_profiles(
        &self,
        items: &[NewProfile],
        caller: &str,
        now: i64,
    ) -> Result<std::result::Result<usize, usize>> {
        let r = self.call(|mut c| async move {
            let tx = c.transaction().await?;
            match sql::insert_profiles(&tx, items, caller, now).await? {
                Ok(n) => {
                    tx.commit().await?;
                    Ok(Ok(n))
                }
                Err(iccid) => Ok(Err(iccid)),
            }
        })?;
        self.invalidate();
        Ok(r.map_err(|iccid| {
            items
                .iter()
                .position(|p| p.iccid.as_str() == iccid)
                .unwrap_or(0)
        }))
    }

    fn rewrite_packages(
        &self,
        f: &mut Rewrite<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize> {
        let total = self.call(|c| async move { sql::package_count(&c).await })?;
        let (mut done, mut changed) = (0, 0);
        let mut after: Option<String> = None;
        loop {
            let from = after.clone();
            let batch = self.call(|c| async move {
                sql::packages_after(&c, from.as_deref(), REWRITE_BATCH).await
            })?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(last.clone());
            for (iccid, old) in &batch {
                if let Some(new) = f(old, iccid)? {
                    let swapped = self
                        .call(|c| async move { sql::swap_package(&c, iccid, old, &new).await })?;
                    if swapped {
                        changed += 1;
                    }
                }
                done += 1;
                progress(done, total.max(done));
            }
        }
        Ok(changed)
    }

    fn first_taken_in(&self, first: &str, last: &str) -> Result<Option<String>> {
        self.call(|c| async move { sql::first_taken_in(&c, first, last).await })
    }

    fn profile(&self, iccid: &str) -> Result<Option<ProfileRecord>> {
        self.call(|c| async move { sql::get_profile(&c, iccid).await })
    }

    fn package(&self, record: &ProfileRecord) -> Result<Option<Vec<u8>>> {
        let iccid = record.iccid.as_str();
        self.call(|c| async move { sql::package(&c, iccid).await })
    }

    fn history(&self, iccid: &str) -> Result<Vec<HistoryEntry>> {
        self.call(|c| async move { sql::history(&c, iccid).await })
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<ProfileRecord>> {
        self.call(|c| async move { sql::list(&c, filter).await })
    }

    fn by_matching_id(&self, matching_id: &str) -> Result<Option<String>> {
        self.call(|c| async move { sql::by_matching_id(&c, matching_id).await })
    }

    fn pending_for_eid(&self, eid: &str) -> Result<Vec<String>> {
        self.call(|c| async move { sql::pending_for_eid(&c, eid).await })
    }

    fn pending_records_for_eid(&self, eid: &str) -> Result<Vec<ProfileRecord>> {
        self.call(|c| async move { sql::pending_records_for_eid(&c, eid).await })
    }

    fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<String>> {
        self.call(|c| async move { sql::pool(&c, operator, profile_type).await })
    }

    fn due_expiries(&self, now: i64) -> Result<Vec<String>> {
        self.call(|c| async move { sql::due_expiries(&c, now).await })
    }

    fn idempotent_response(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.call(|c| async move { sql::idempotent_response(&c, key).await })
    }

    fn prune_idempotency(&self, cutoff: i64) -> Result<usize> {
        self.call(|c| async move { sql::prune_idempotency(&c, cutoff).await })
    }

    fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<Admission> {
        let now = crate::time::now();
        let r = self.call(|c| async move {
            sql::create_session(&c, transaction_id, expires_at, session, max_sessions, now).await
        });
        self.invalidate();
        r
    }

    fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool> {
        let r = self.call(|c| async move {
            sql::update_session(&c, transaction_id, expires_at, session).await
        });
        self.invalidate();
        r
    }

    fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        self.call(|c| async move { sql::get_session(&c, transaction_id, now).await })
    }

    fn session_exists(&self, transaction_id: &[u8]) -> Result<bool> {
        self.call(|c| async move { sql::session_exists(&c, transaction_id).await })
    }

    fn remove_session(&self, transaction_id: &[u8]) -> Result<()> {
        let r = self.call(|c| async move { sql::remove_session(&c, transaction_id).await });
        self.invalidate();
        r.map(|_| ())
    }

    fn sweep_sessions(&self, now: i64) -> Result<usize> {
        let r = self.call(|c| async move { sql::sweep_sessions(&c, now).await });
        self.invalidate();
        r
    }

    fn session_counts(&self) -> SessionCounts {
        self.cached(|c| c.sessions).unwrap_or_default()
    }

    fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.call(|c| async move { sql::outbox_all(&c).await })
    }

    fn outbox_due(
        &self,
        operator: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Option<i64>)> {
        let node = self.opts.node.as_str();
        let lease = i64::try_from(self.opts.outbox_lease.as_millis()).unwrap_or(i64::MAX);
        self.call(|c| async move {
            sql::outbox_claim_due(&c, operator, now_ms, limit, node, lease).await
        })
    }

    fn outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        self.call(|c| async move { sql::outbox_depths(&c).await })
    }

    fn kept_package(&self, iccid: &str, now: i64) -> Result<Option<KeptPackage>> {
        self.call(|c| async move { sql::kept_package(&c, iccid, now).await })
    }

    fn sweep_kept_packages(&self, now: i64) -> Result<usize> {
        self.call(|c| async move { sql::sweep_kept(&c, now).await })
    }

    fn has_kept_package(&self, iccid: &str) -> Result<bool> {
        self.call(|c| async move { sql::has_kept(&c, iccid).await })
    }

    fn prune_uses(&self, cutoff: i64, max: usize) -> Result<usize> {
        self.call(|c| async move { sql::prune_uses(&c, cutoff, max).await })
    }

    fn balance(&self, iccid: &str) -> Result<Option<BalanceRecord>> {
        self.call(|c| async move { sql::balance(&c, iccid).await })
    }

    fn sim_known(&self, iccid: &str) -> Result<bool> {
        self.call(|c| async move { sql::sim_known(&c, iccid).await })
    }

    fn mp_order(&self, id: u64) -> Result<Option<MobilePlansOrder>> {
        self.call(|c| async move { sql::mp_order(&c, id).await })
    }

    fn mp_order_by_transaction(&self, transaction_id: &str) -> Result<Option<MobilePlansOrder>> {
        self.call(|c| async move { sql::mp_order_by_transaction(&c, transaction_id).await })
    }

    fn mp_orders_for_iccid(&self, iccid: &str) -> Result<Vec<MobilePlansOrder>> {
        self.call(|c| async move { sql::mp_orders_for_iccid(&c, iccid).await })
    }

    fn mp_orders_for_eid(&self, eid: &str) -> Result<Vec<MobilePlansOrder>> {
        self.call(|c| async move { sql::mp_orders_for_eid(&c, eid).await })
    }

    fn mp_orders(&self) -> Result<Vec<MobilePlansOrder>> {
        self.call(|c| async move { sql::mp_orders(&c).await })
    }

    fn mp_due_releases(&self, now: i64) -> Result<Vec<u64>> {
        self.call(|c| async move { sql::mp_due_releases(&c, now).await })
    }

    fn mp_due_holds(&self, now: i64) -> Result<Vec<u64>> {
        self.call(|c| async move { sql::mp_due_holds(&c, now).await })
    }
}
