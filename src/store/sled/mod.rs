//! The sled engine: the embedded default. Everything lives in one sled
//! tree, so that one sled transaction covers a record, its indexes, its
//! history entry, any outbox item and the idempotency record of the call
//! that caused it.
//!
//! # Layout
//! The keys ([`keys`]):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `p/` | ICCID | [`ProfileRecord`] in its binary form ([`compact`]; JSON in stores written before) |
//! | `h/` | ICCID `/` seq (u64 BE) | [`HistoryEntry`] |
//! | `b/` | ICCID | stored profile package, in stores written before it went at the end of the `p/` record |
//! | `m/` | MatchingID | ICCID |
//! | `e/` | EID `/` ICCID | ICCID (open orders of an EID) |
//! | `a/` | operator `\0` type `\0` ICCID | - (available pool; the ICCID in stores written before) |
//! | `t/` | type `\0` operator | - (known profile types) |
//! | `x/` | expiry (u64 BE) ICCID | ICCID (orders that can expire) |
//! | `o/` | seq (u64 BE) | [`OutboxItem`] |
//! | `od/` | operator `\0` next attempt (ms, u64 BE) seq | - (outbox items by due time, per operator) |
//! | `oi/` | operator `\0` seq | event time (i64 BE) (outbox items per operator, oldest first) |
//! | `om/index` | | outbox index version (u32 BE): the `od/` and `oi/` entries exist |
//! | `i/` | SHA-256 | [`IdemRecord`] |
//! | `j/` | time (u64 BE) SHA-256 | - (idempotency retention) |
//! | `s/` | transactionId | ES9+ session left by a closed store ([`session`]: sessions live in memory) |
//! | `u/` `k/` `l/` `d/` `r/` `w/` | | Mobile Plans orders and their indexes (Mobile Plans) |
//! | `g/` | ICCID | SIM balance  |
//! | `n/` | ICCID | Bound Profile Package kept for a retry  |
//!
//! Index entries are derived from the record alone ([`index_keys`],
//! [`outbox_index_keys`]), and every write replaces the old record's entries
//! with the new one's, so indexes cannot drift from the records.
//!
//! # Durability
//! A transaction only reaches sled's page cache. [`Store::sync`] makes every
//! transaction committed before the call durable; concurrent callers share
//! one fsync (group commit). Callers acknowledge a transition only after it.

mod compact;
mod counters;
mod export;
mod keys;
mod reads;
mod records;
mod session;

pub use counters::Counts;
pub use keys::{index_keys, order_index_keys, outbox_index_keys};

use super::engine::{Engine, Rewrite, SyncFuture, TxBody};
use super::lifecycle::State;
use super::tx::TxAbort;
use super::{NewProfile, OutboxItem, ProfileRecord, StoreOptions};
use crate::error::{Error, Result};
use keys::{key, package_key, profile_key, type_key};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// The sled engine: the open database and what is kept in memory beside it.
pub struct Sled {
    /// The open sled database; `None` only while it is being reopened.
    db: std::sync::RwLock<Option<Db>>,
    /// Where the database lives (for reopening).
    path: std::path::PathBuf,
    /// False from a write that failed for lack of space or an I/O error
    /// until a reopened database has taken a write again (`/readyz`).
    writable: AtomicBool,
    /// Serialises pool allocation and inventory writes: the choice of a free
    /// ICCID reads outside the transaction (sled transactions cannot scan),
    /// so two allocators would race for the same candidate and retry.
    alloc: Mutex<()>,
    /// Transactions committed so far (group commit bookkeeping).
    written: AtomicU64,
    /// Highest `written` value known to be on disk.
    flushed: tokio::sync::Mutex<u64>,
    /// Profiles per state, kept in memory for metrics.
    counts: [AtomicI64; 9],
    /// Available profiles per (operator, profile type), for metrics: what
    /// an operator alerts on before a pool runs dry.
    pools: Mutex<BTreeMap<(String, String), i64>>,
    /// Live ES9+ sessions, in memory ([`session`]).
    sessions: Mutex<session::Sessions>,
    /// Outbox items per operator, for metrics (rebuilt at open from `oi/`).
    outbox: Mutex<BTreeMap<String, i64>>,
    /// Count deltas written since the last fold ([`counters`]).
    unfolded: AtomicU64,
    /// Held by the one fold that runs at a time.
    folding: Mutex<()>,
}

/// An open sled database and the tree that holds everything.
#[derive(Clone)]
struct Db {
    db: sled::Db,
    tree: sled::Tree,
}

/// What opening the database finds: the engine and the in-memory counts.
struct Opened {
    db: Db,
    counts: [i64; 9],
    pools: BTreeMap<(String, String), i64>,
    sessions: session::Sessions,
    outbox: BTreeMap<String, i64>,
}

impl Opened {
    fn open(path: &std::path::Path) -> Result<Opened> {
        let db = open_db(path)?;
        let tree = db.open_tree("smdpplus")?;
        let stored = match counters::load(&tree)? {
            Some(c) => {
                counters::fold(&tree)?;
                c
            }
            None => {
                // A store from before the counters: counted once.
                let c = Counts::scan(&tree)?;
                counters::reset(&tree, &c)?;
                c
            }
        };
        let counts = State::ALL.map(|s| stored.state(s));
        let pools = stored.pools.into_iter().filter(|(_, n)| *n != 0).collect();
        let sessions = session::Sessions::load(&tree)?;
        reads::migrate_outbox_index(&tree)?;
        let mut outbox = BTreeMap::new();
        for kv in tree.scan_prefix(b"oi/") {
            let (k, _) = kv?;
            let op = k[3..].split(|b| *b == 0).next().unwrap_or_default();
            *outbox
                .entry(String::from_utf8_lossy(op).into_owned())
                .or_insert(0) += 1;
        }
        Ok(Opened {
            db: Db { db, tree },
            counts,
            pools,
            sessions,
            outbox,
        })
    }
}

/// Opens the sled database. sled locks its files until the last handle of
/// a previous opening is gone, and its background flusher lets go a moment
/// after the database is dropped: a lock held elsewhere is waited for up to
/// two seconds (a reopen in this process, or a server still exiting), then
/// reported.
fn open_db(path: &std::path::Path) -> Result<sled::Db> {
    let mut waited = 0;
    loop {
        match sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && waited < 40 =>
            {
                waited += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return Ok(r?),
        }
    }
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Sled {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &std::path::Path, _opts: &StoreOptions) -> Result<Sled> {
        let opened = Opened::open(path)?;
        restrict_permissions(path);
        Ok(Sled {
            sessions: Mutex::new(opened.sessions),
            db: std::sync::RwLock::new(Some(opened.db)),
            path: path.to_owned(),
            writable: AtomicBool::new(true),
            alloc: Mutex::new(()),
            written: AtomicU64::new(0),
            flushed: tokio::sync::Mutex::new(0),
            counts: opened.counts.map(AtomicI64::new),
            pools: Mutex::new(opened.pools),
            outbox: Mutex::new(opened.outbox),
            unfolded: AtomicU64::new(0),
            folding: Mutex::new(()),
        })
    }

    fn handle(&self) -> Result<Db> {
        // A poisoned lock still holds a usable database.
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::unavailable("the store is being reopened"))
    }

    fn tree(&self) -> Result<sled::Tree> {
        Ok(self.handle()?.tree)
    }

    /// Notes a failed write: after a full disk or an I/O error, sled
    /// refuses every write until it is reopened, so the store says it is
    /// not writable (`/readyz`) until [`Engine::recover`] has reopened it.
    fn watch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if e.blame == crate::error::Blame::Unavailable
                && self.writable.swap(false, Ordering::SeqCst)
            {
                tracing::error!(error = %e.message, "store write failed: refusing writes until the store recovers");
            }
        }
        r
    }

    fn wrote(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// Notes a committed count delta; every [`counters::FOLD_EVERY`] of
    /// them, folds them into the base counts (unless a fold is running).
    fn counted(&self) {
        if self.unfolded.fetch_add(1, Ordering::Relaxed) + 1 < counters::FOLD_EVERY {
            return;
        }
        let Ok(_fold) = self.folding.try_lock() else {
            return;
        };
        self.unfolded.store(0, Ordering::Relaxed);
        if let Err(e) = self.tree().and_then(|t| counters::fold(&t)) {
            tracing::warn!(error = %e.message, "folding the count deltas failed; they stay until the next fold");
        }
    }

    /// The counts the store holds, and the counts its records give when
    /// every record is read: they differ only if the store is damaged.
    pub fn check_counts(&self) -> Result<(Counts, Counts)> {
        let _fold = self.folding.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree()?;
        let held = counters::load(&tree)?.unwrap_or_default();
        Ok((held, Counts::scan(&tree)?))
    }

    /// Replaces the stored counts with those of a scan of every record.
    /// Only offline: writers meanwhile would be lost from the counts.
    pub fn repair_counts(&self) -> Result<Counts> {
        let _fold = self.folding.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree()?;
        let c = Counts::scan(&tree)?;
        counters::reset(&tree, &c)?;
        tree.flush()?;
        Ok(c)
    }

    fn count_transition(&self, old: State, new: State, operator: &str, profile_type: &str) {
        self.counts[state_index(old)].fetch_sub(1, Ordering::Relaxed);
        self.counts[state_index(new)].fetch_add(1, Ordering::Relaxed);
        let delta = match (old == State::Available, new == State::Available) {
            (true, false) => -1,
            (false, true) => 1,
            _ => return,
        };
        self.count_pool(operator, profile_type, delta);
    }

    fn count_pool(&self, operator: &str, profile_type: &str, delta: i64) {
        // A poisoned lock still holds usable counts.
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        *pools
            .entry((operator.to_owned(), profile_type.to_owned()))
            .or_insert(0) += delta;
    }

    fn count_outbox(&self, operator: &str, delta: i64) {
        let mut m = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(operator.to_owned()).or_insert(0) += delta;
    }

    /// Every profile index entry, for consistency checks: (key, the ICCID
    /// it names). An `a/` entry names the ICCID at the end of its key (its
    /// value is empty, or the ICCID in stores written before).
    pub fn index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = self.entries(&["a/", "m/", "e/", "x/"])?;
        for (k, v) in &mut out {
            if k.starts_with(b"a/") && v.is_empty() {
                let iccid = k.rsplit(|b| *b == 0).next().unwrap_or_default();
                *v = iccid.to_vec();
            }
        }
        Ok(out)
    }

    /// Every raw outbox index entry, for consistency checks.
    pub fn outbox_index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.entries(&["od/", "oi/"])
    }

    /// Every raw Mobile Plans index entry, for consistency checks.
    pub fn mp_index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.entries(&["k/", "l/", "d/", "r/", "w/"])
    }

    fn entries(&self, prefixes: &[&str]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        for p in prefixes {
            for kv in self.tree()?.scan_prefix(p.as_bytes()) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }
}

impl Engine for Sled {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn transact(
        &self,
        pool: Option<(&str, &str)>,
        body: &TxBody<'_>,
    ) -> std::result::Result<(), TxAbort> {
        records::transact(self, pool, body)
    }

    fn sync(&self) -> SyncFuture<'_> {
        Box::pin(async move {
            let mine = self.written.load(Ordering::SeqCst);
            let mut flushed = self.flushed.lock().await;
            if *flushed >= mine {
                return Ok(());
            }
            // Everything committed up to here is covered by the flush below,
            // including the transactions of callers queued behind this lock.
            let target = self.written.load(Ordering::SeqCst);
            let db = self.handle()?.db.clone();
            let r = tokio::task::spawn_blocking(move || db.flush())
                .await
                .map_err(|e| Error::internal(format!("flush task: {e}")))
                .and_then(|r| r.map_err(Error::from));
            self.watch(r)?;
            *flushed = target;
            Ok(())
        })
    }

    fn flush_blocking(&self) -> Result<()> {
        let r = self.handle()?.db.flush().map_err(Error::from);
        self.watch(r).map(|_| ())
    }

    fn close(&self) -> Result<()> {
        self.save_sessions()
    }

    fn writable(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
    }

    fn recover(&self) -> Result<bool> {
        if self.writable() {
            return Ok(true);
        }
        // Cheap test first: can the filesystem take a small synced file?
        if let Err(e) = disk_takes_writes(&self.path) {
            tracing::debug!(error = %e, "store still cannot write");
            return Ok(false);
        }
        let _alloc = self
            .alloc
            .lock()
            .map_err(|_| Error::internal("allocation lock poisoned"))?;
        // Readers meanwhile get a quick "unavailable" rather than waiting.
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        // sled holds an exclusive lock on its files until every handle of
        // the old database is gone; handles in flight end within moments.
        drop(old);
        let mut opened = None;
        for _ in 0..3 {
            match Opened::open(&self.path) {
                Ok(o) => {
                    opened = Some(o);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e.message, "store reopen: retrying");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        let Some(opened) = opened else {
            tracing::warn!("store reopen failed; trying again later");
            return Ok(false);
        };
        let probe = opened
            .db
            .tree
            .insert(b"h/probe", &crate::time::now().to_be_bytes()[..])
            .and_then(|_| opened.db.db.flush());
        for (c, n) in self.counts.iter().zip(opened.counts) {
            c.store(n, Ordering::Relaxed);
        }
        *self.pools.lock().unwrap_or_else(|e| e.into_inner()) = opened.pools;
        // The live sessions stay in memory; a reopened database holds none
        // but those a closed store left (none while serving).
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .absorb(opened.sessions);
        *self.outbox.lock().unwrap_or_else(|e| e.into_inner()) = opened.outbox;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(opened.db);
        match probe {
            Ok(_) => {
                self.writable.store(true, Ordering::SeqCst);
                tracing::info!("store reopened and writable again");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "store reopened but still cannot write");
                Ok(false)
            }
        }
    }

    fn counts(&self) -> Vec<(State, i64)> {
        State::ALL
            .iter()
            .map(|s| (*s, self.counts[state_index(*s)].load(Ordering::Relaxed)))
            .collect()
    }

    fn available_by_pool(&self) -> Vec<((String, String), i64)> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    fn insert_profiles(
        &self,
        items: &[NewProfile],
        caller: &str,
        now: i64,
    ) -> Result<std::result::Result<usize, usize>> {
        let _guard = self
            .alloc
            .lock()
            .map_err(|_| Error::internal("allocation lock poisoned"))?;
        let tree = self.tree()?;
        let mut batch = sled::Batch::default();
        let mut types = std::collections::BTreeSet::new();
        for (i, p) in items.iter().enumerate() {
            let iccid = p.iccid.as_str();
            if tree.contains_key(profile_key(iccid))? {
                return Ok(Err(i));
            }
            let rec = ProfileRecord::imported(p, caller, now);
            for k in index_keys(&rec) {
                let v = keys::index_value(&k, iccid);
                batch.insert(k, v);
            }
            types.insert(type_key(&rec.profile_type, &rec.operator));
            // The package at the end of the record: one entry per profile.
            batch.insert(
                profile_key(iccid),
                compact::encode_profile(&rec, Some(&p.package)),
            );
        }
        for k in types {
            batch.insert(k, &[][..]);
        }
        let mut added: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for p in items {
            *added
                .entry((p.operator.as_str(), p.profile_type.as_str()))
                .or_insert(0) += 1;
        }
        let (k, v) = counters::Delta::of_import(&added).entry(self.handle()?.db.generate_id()?);
        batch.insert(k, v);
        self.watch(tree.apply_batch(batch).map_err(Error::from))?;
        self.counted();
        self.wrote();
        self.counts[state_index(State::Available)].fetch_add(items.len() as i64, Ordering::Relaxed);
        for ((operator, profile_type), n) in added {
            self.count_pool(operator, profile_type, n);
        }
        Ok(Ok(items.len()))
    }

    fn rewrite_packages(
        &self,
        f: &mut Rewrite<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize> {
        let tree = self.tree()?;
        // Packages of their own (`b/`, stores written before the package
        // went into the record), then those at the end of a record (`p/`).
        let total = tree.scan_prefix(b"b/").count() + tree.scan_prefix(b"p/").count();
        let mut changed = 0;
        let mut done = 0;
        for kv in tree.scan_prefix(b"b/") {
            let (k, v) = kv?;
            let iccid = String::from_utf8_lossy(&k[2..]).into_owned();
            if let Some(new) = f(&v, &iccid)? {
                let swapped = tree.compare_and_swap(&k, Some(&v), Some(new))?;
                if swapped.is_ok() {
                    changed += 1;
                }
            }
            done += 1;
            progress(done, total);
        }
        for kv in tree.scan_prefix(b"p/") {
            let (k, v) = kv?;
            let iccid = keys::profile_iccid(&k);
            if let (record, Some(package)) = compact::decode_with_package(&iccid, &v)? {
                if let Some(new) = f(package, &iccid)? {
                    let new = compact::encode_profile(&record, Some(&new));
                    // A record changed meanwhile keeps its package: the
                    // caller runs the rewrite again.
                    let swapped = tree.compare_and_swap(&k, Some(&v), Some(new))?;
                    if swapped.is_ok() {
                        changed += 1;
                    }
                }
            }
            done += 1;
            progress(done, total);
        }
        self.wrote();
        Ok(changed)
    }

    fn first_taken_in(&self, first: &str, last: &str) -> Result<Option<String>> {
        self.read_first_taken_in(first, last)
    }

    fn profile(&self, iccid: &str) -> Result<Option<ProfileRecord>> {
        self.read_profile(iccid)
    }

    fn package(&self, record: &ProfileRecord) -> Result<Option<Vec<u8>>> {
        let tree = self.tree()?;
        if let Some(v) = tree.get(profile_key(&record.iccid))? {
            if let (_, Some(p)) = compact::decode_with_package(&record.iccid, &v)? {
                return Ok(Some(p.to_vec()));
            }
        }
        Ok(tree.get(package_key(&record.iccid))?.map(|v| v.to_vec()))
    }

    fn history(&self, iccid: &str) -> Result<Vec<super::HistoryEntry>> {
        self.read_history(iccid)
    }

    fn list(&self, filter: &super::ListFilter) -> Result<Vec<ProfileRecord>> {
        self.read_list(filter)
    }

    fn by_matching_id(&self, matching_id: &str) -> Result<Option<String>> {
        Ok(self
            .tree()?
            .get(keys::matching_key(matching_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn pending_for_eid(&self, eid: &str) -> Result<Vec<String>> {
        self.values(key("e/", &[eid.as_bytes(), b"/"]))
    }

    fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<String>> {
        let prefix = keys::pool_prefix(operator, profile_type);
        self.tree()?
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(keys::pool_iccid(&k?, prefix.len())))
            .collect()
    }

    fn due_expiries(&self, now: i64) -> Result<Vec<String>> {
        let end = key(
            "x/",
            &[&((now.max(0) as u64).saturating_add(1)).to_be_bytes()],
        );
        self.tree()?
            .range(b"x/".to_vec()..end)
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.1).into_owned()))
            .collect()
    }

    fn idempotent_response(&self, k: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(match self.tree()?.get(key("i/", &[k]))? {
            Some(v) => serde_json::from_slice::<super::IdemRecord>(&v)
                .ok()
                .map(|r| r.response),
            None => None,
        })
    }

    fn prune_idempotency(&self, cutoff: i64) -> Result<usize> {
        let tree = self.tree()?;
        let end = key("j/", &[&(cutoff.max(0) as u64).to_be_bytes()]);
        let mut n = 0;
        for kv in tree.range(b"j/".to_vec()..end) {
            let (k, _) = kv?;
            let hash = &k[k.len() - 32..];
            tree.remove(key("i/", &[hash]))?;
            tree.remove(&k)?;
            n += 1;
        }
        Ok(n)
    }

    fn create_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
        max_sessions: u64,
    ) -> Result<super::session::Admission> {
        Sled::create_session(self, transaction_id, expires_at, session, max_sessions)
    }

    fn update_session(
        &self,
        transaction_id: &[u8],
        expires_at: i64,
        session: &[u8],
    ) -> Result<bool> {
        Sled::update_session(self, transaction_id, expires_at, session)
    }

    fn get_session(&self, transaction_id: &[u8], now: i64) -> Result<Option<Vec<u8>>> {
        Sled::get_session(self, transaction_id, now)
    }

    fn session_exists(&self, transaction_id: &[u8]) -> Result<bool> {
        Sled::session_exists(self, transaction_id)
    }

    fn remove_session(&self, transaction_id: &[u8]) -> Result<()> {
        Sled::remove_session(self, transaction_id)
    }

    fn sweep_sessions(&self, now: i64) -> Result<usize> {
        Sled::sweep_sessions(self, now)
    }

    fn session_counts(&self) -> super::session::SessionCounts {
        Sled::session_counts(self)
    }

    fn outbox(&self) -> Result<Vec<OutboxItem>> {
        self.read_outbox()
    }

    fn outbox_due(
        &self,
        operator: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Option<i64>)> {
        self.read_outbox_due(operator, now_ms, limit)
    }

    fn outbox_depths(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        self.read_outbox_depths()
    }

    fn kept_package(&self, iccid: &str, now: i64) -> Result<Option<super::bound::KeptPackage>> {
        self.read_kept_package(iccid, now)
    }

    fn sweep_kept_packages(&self, now: i64) -> Result<usize> {
        self.sweep_kept(now)
    }

    fn has_kept_package(&self, iccid: &str) -> Result<bool> {
        Ok(self.tree()?.contains_key(keys::kept_key(iccid))?)
    }

    fn prune_uses(&self, cutoff: i64, max: usize) -> Result<usize> {
        self.prune_seen(cutoff, max)
    }

    fn balance(&self, iccid: &str) -> Result<Option<super::balance::BalanceRecord>> {
        match self.tree()?.get(keys::balance_key(iccid))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                Error::internal(format!("corrupt balance record: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    fn sim_known(&self, iccid: &str) -> Result<bool> {
        let tree = self.tree()?;
        Ok(
            tree.contains_key(keys::balance_key(iccid))?
                || tree.contains_key(profile_key(iccid))?,
        )
    }

    fn mp_order(&self, id: u64) -> Result<Option<super::mobileplans::MobilePlansOrder>> {
        self.read_mp_order(id)
    }

    fn mp_order_by_transaction(
        &self,
        transaction_id: &str,
    ) -> Result<Option<super::mobileplans::MobilePlansOrder>> {
        match self.tree()?.get(keys::txid_key(transaction_id))? {
            Some(v) => match keys::id_of(&v) {
                Some(id) => self.read_mp_order(id),
                None => Err(Error::internal("corrupt transactionId index")),
            },
            None => Ok(None),
        }
    }

    fn mp_orders_for_iccid(
        &self,
        iccid: &str,
    ) -> Result<Vec<super::mobileplans::MobilePlansOrder>> {
        self.mp_orders_under(key("l/", &[iccid.as_bytes(), b"/"]))
    }

    fn mp_orders_for_eid(&self, eid: &str) -> Result<Vec<super::mobileplans::MobilePlansOrder>> {
        self.mp_orders_under(key("d/", &[eid.as_bytes(), b"/"]))
    }

    fn mp_orders(&self) -> Result<Vec<super::mobileplans::MobilePlansOrder>> {
        self.read_mp_orders()
    }

    fn mp_due_releases(&self, now: i64) -> Result<Vec<u64>> {
        self.mp_due("r/", now)
    }

    fn mp_due_holds(&self, now: i64) -> Result<Vec<u64>> {
        self.mp_due("w/", now)
    }

    fn as_sled(&self) -> Option<&Sled> {
        Some(self)
    }
}

impl Drop for Sled {
    /// Keeps the live RSP sessions for the next opening (a store dropped
    /// without [`Engine::close`]: the CLI, tests).
    fn drop(&mut self) {
        if self.handle().is_err() {
            return;
        }
        if let Err(e) = self.save_sessions() {
            tracing::warn!(error = %e.message, "could not keep the RSP sessions for the next start");
        }
    }
}

/// Makes the database folder and everything in it readable by the owner
/// only: the store holds EIDs, matchingIds and confirmation-code hashes.
/// sled creates its files with the process umask; this tightens them.
fn restrict_permissions(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &std::path::Path, mode: u32| {
        if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %p.display(), error = %e, "could not restrict permissions");
        }
    };
    set(path, 0o700);
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    set(&p, 0o700);
                    stack.push(p);
                }
                Ok(t) if t.is_file() => set(&p, 0o600),
                _ => {}
            }
        }
    }
}

/// Writes, syncs and removes a small file beside the database: whether
/// the filesystem takes writes again after running out of space.
fn disk_takes_writes(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let probe = path.join("space-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tx::Records;

    fn profile(n: u8) -> NewProfile {
        NewProfile {
            iccid: crate::ids::Iccid::with_check_digit(&format!("89440000000000000{n}"))
                .expect("ICCID"),
            profile_type: "bulk".into(),
            operator: "op".into(),
            package: vec![n; 40],
        }
    }

    /// A record that changes keeps the package at its end; one written
    /// before (JSON, the package under `b/`, the pool value holding the
    /// ICCID) is still read, allocated from and changed.
    #[test]
    fn packages_stay_readable_in_either_layout() {
        let dir = tempfile::tempdir().expect("dir");
        let sled = Sled::open(dir.path(), &StoreOptions::default()).expect("open");
        let (new, old) = (profile(1), profile(2));
        assert_eq!(
            sled.insert_profiles(&[new.clone(), old.clone()], "t", 7)
                .expect("insert"),
            Ok(2)
        );
        let tree = sled.tree().expect("tree");
        let (new_id, old_id) = (new.iccid.as_str(), old.iccid.as_str());
        assert!(tree.get(package_key(new_id)).expect("get").is_none());
        // The second profile as stores before kept it.
        let rec = sled.profile(old_id).expect("read").expect("record");
        tree.insert(profile_key(old_id), serde_json::to_vec(&rec).expect("json"))
            .expect("put");
        tree.insert(package_key(old_id), old.package.clone())
            .expect("put");
        for k in index_keys(&rec) {
            tree.insert(k, old_id.as_bytes()).expect("put");
        }
        assert_eq!(sled.profile(old_id).expect("read"), Some(rec.clone()));
        assert_eq!(sled.pool("op", "bulk").expect("pool"), vec![new_id, old_id]);
        for (p, id) in [(&new, new_id), (&old, old_id)] {
            let r = sled.profile(id).expect("read").expect("record");
            assert_eq!(sled.package(&r).expect("package"), Some(p.package.clone()));
            // A transition rewrites the record in the binary form.
            let body = |tx: &dyn Records| {
                let mut next = tx.profile(id)?.expect("record");
                next.state = State::Allocated;
                tx.put_profile(Some(&r), &next)
            };
            assert!(sled.transact(None, &body).is_ok());
            let after = sled.profile(id).expect("read").expect("record");
            assert_eq!(after.state, State::Allocated);
            assert_eq!(
                sled.package(&after).expect("package"),
                Some(p.package.clone())
            );
            assert_eq!(
                tree.get(profile_key(id)).expect("get").expect("value")[0],
                compact::FORM_V1
            );
        }
        assert!(sled.pool("op", "bulk").expect("pool").is_empty());
    }
}
