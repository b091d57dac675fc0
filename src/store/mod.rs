//! The durable store: profiles, their lifecycle, indexes, history and the
//! ES2+ notification outbox, in one sled tree.
//!
//! # Layout
//! All keys live in one tree, so that one sled transaction covers a record,
//! its indexes, its history entry, any outbox item and the idempotency record
//! of the call that caused it:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `p/` | ICCID | [`ProfileRecord`] |
//! | `h/` | ICCID `/` seq (u64 BE) | [`HistoryEntry`] |
//! | `b/` | ICCID | stored profile package |
//! | `m/` | MatchingID | ICCID |
//! | `e/` | EID `/` ICCID | ICCID (open orders of an EID) |
//! | `a/` | operator `\0` type `\0` ICCID | ICCID (available pool) |
//! | `t/` | type `\0` operator | - (known profile types) |
//! | `x/` | expiry (u64 BE) ICCID | ICCID (orders that can expire) |
//! | `o/` | seq (u64 BE) | [`OutboxItem`] |
//! | `od/` | operator `\0` next attempt (ms, u64 BE) seq | - (outbox items by due time, per operator) |
//! | `oi/` | operator `\0` seq | event time (i64 BE) (outbox items per operator, oldest first) |
//! | `om/index` | | outbox index version (u32 BE): the `od/` and `oi/` entries exist |
//! | `i/` | SHA-256 | [`IdemRecord`] |
//! | `j/` | time (u64 BE) SHA-256 | - (idempotency retention) |
//! | `s/` | transactionId | expiry (i64 BE) + ES9+ session (opaque) |
//! | `y/` | expiry (u64 BE) transactionId | - (authenticated session expiry) |
//! | `q/` | expiry (u64 BE) transactionId | - (pending session expiry; [`session`]) |
//! | `u/` `k/` `l/` `d/` `r/` `w/` | | Mobile Plans orders and their indexes ([`mobileplans`]) |
//! | `g/` | ICCID | SIM balance ([`balance`]) |
//! | `n/` | ICCID | Bound Profile Package kept for a retry ([`bound`]) |
//!
//! Index entries are derived from the record alone ([`index_keys`],
//! [`outbox_index_keys`]), and every write replaces the old record's entries
//! with the new one's, so indexes cannot drift from the records.
//!
//! # Durability
//! A transaction only reaches sled's page cache. [`Store::sync`] makes every
//! transaction committed before the call durable; concurrent callers share
//! one fsync (group commit). Callers acknowledge a transition only after it.

pub mod balance;
pub mod bound;
mod commands;
mod keys;
pub mod lifecycle;
pub mod mobileplans;
mod outbox;
pub mod pg;
mod queries;
pub mod record;
mod seen;
pub mod session;
mod tx;

use crate::error::{codes, Error, Result, StatusCode};
use crate::ids::{generate_matching_id, Eid, Iccid};
use keys::{
    history_key, key, matching_key, outbox_due_prefix, outbox_key, outbox_operator_prefix,
    package_key, pool_prefix, profile_key, type_key, OUTBOX_INDEX_KEY, OUTBOX_INDEX_VERSION,
};
pub use keys::{index_keys, outbox_index_keys};
use lifecycle::{Event, State};
use outbox::migrate_outbox_index;
pub use record::{
    HistoryEntry, IdemRecord, OutboxItem, PointStatus, ProfileRecord, RetryKind, RECORD_VERSION,
};
use sha2::{Digest, Sha256};
use sled::transaction::{TransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tx::{encode, gsma, retry, Records, SledRecords, Then, TxAbort, TxResult};

/// Options fixed when the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Default order time to live, from downloadOrder.
    pub order_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            order_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// finalProfileStatusIndicator of ES2+.CancelOrder (§5.3.3, table 29).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalStatus {
    /// Back to inventory.
    Available,
    /// Withdrawn.
    Unavailable,
}

/// A state-changing command. One per ES2+ function plus the server's own
/// events; ES9+ adds its own later.
#[derive(Clone, Debug)]
pub enum Command {
    /// ES2+.DownloadOrder (§5.3.1). One of `iccid` and `profile_type` is set.
    DownloadOrder {
        /// Caller.
        operator: String,
        /// EID to link.
        eid: Option<Eid>,
        /// Requested ICCID.
        iccid: Option<Iccid>,
        /// Requested profile type.
        profile_type: Option<String>,
    },
    /// ES2+.ConfirmOrder (§5.3.2).
    ConfirmOrder {
        /// Caller.
        operator: String,
        /// ICCID.
        iccid: Iccid,
        /// EID.
        eid: Option<Eid>,
        /// Operator-supplied MatchingID; `None` lets the SM-DP+ generate one.
        matching_id: Option<String>,
        /// Hex SHA-256 hashes of the confirmation code.
        cc_hashes: Vec<String>,
        /// SM-DS address.
        smds_address: Option<String>,
        /// releaseFlag.
        release: bool,
    },
    /// ES2+.CancelOrder (§5.3.3).
    CancelOrder {
        /// Caller.
        operator: String,
        /// ICCID.
        iccid: Iccid,
        /// EID given by the caller.
        eid: Option<Eid>,
        /// MatchingID given by the caller.
        matching_id: Option<String>,
        /// finalProfileStatusIndicator.
        final_status: FinalStatus,
    },
    /// ES2+.ReleaseProfile (§5.3.4).
    ReleaseProfile {
        /// Caller.
        operator: String,
        /// ICCID.
        iccid: Iccid,
    },
    /// The order's time to live ran out.
    Expire {
        /// ICCID.
        iccid: Iccid,
    },
    /// ES9+.AuthenticateClient matched this order (§5.6.3): count a
    /// download attempt, check expiry and the attempt limit.
    AuthenticateClient {
        /// The order, from [`Store::resolve_order`].
        iccid: Iccid,
        /// The authenticated eUICC.
        eid: Eid,
        /// matchingId from ctxParams1, if any.
        matching_id: Option<String>,
        /// Download attempts allowed per order.
        max_attempts: u32,
    },
    /// ES9+.GetBoundProfilePackage: check the hashed confirmation code (§5.6.2).
    CheckConfirmationCode {
        /// The order.
        iccid: Iccid,
        /// The RSP session's transactionId (raw bytes).
        transaction_id: Vec<u8>,
        /// EUICCSigned2.hashCc.
        hash_cc: Option<Vec<u8>>,
        /// Confirmation-code attempts allowed per order.
        max_attempts: u32,
        /// The authenticated eUICC, for the operator notification (§5.3.5:
        /// the EID "SHALL be set if available").
        eid: Option<Eid>,
    },
    /// A Bound Profile Package was handed to the LPA; the EID is linked.
    BppDelivered {
        /// The order.
        iccid: Iccid,
        /// The authenticated eUICC.
        eid: Eid,
        /// For an order already Downloaded: how the package was served
        /// again (recorded in history).
        retry: Option<RetryKind>,
        /// The package to keep for a retry in a later session
        /// ([`bound`]); `None` removes a kept one, except on a
        /// [`RetryKind::SameKey`] delivery, which serves the kept one.
        keep: Option<Box<bound::KeptPackage>>,
    },
    /// A verified ProfileInstallationResult (§5.6.4).
    InstallResult {
        /// The order.
        iccid: Iccid,
        /// finalResult is successResult.
        success: bool,
        /// The finalResult bytes, forwarded to the operator as resultData.
        result_data: Vec<u8>,
        /// Why it failed.
        reason: Option<String>,
    },
    /// A terminal ES9+.CancelSession reason ended the order (§5.6.5).
    DownloadCancelled {
        /// The order.
        iccid: Iccid,
        /// Status code for the operator (§5.3.5 table 32b).
        code: StatusCode,
        /// Text for the record and the operator.
        reason: String,
        /// The authenticated eUICC, for the operator notification (§5.3.5:
        /// the EID "SHALL be set if available").
        eid: Option<Eid>,
    },
    /// A verified OtherSignedNotification about an installed profile
    /// (§3.5, §5.6.4): enable, disable or delete on the device.
    DeviceNotification {
        /// The profile.
        iccid: Iccid,
        /// The eUICC that signed it.
        eid: Eid,
        /// [`Event::DeviceEnabled`], [`Event::DeviceDisabled`] or [`Event::DeviceDeleted`].
        event: Event,
    },
    /// Operator admin call: set the expiry of an open order.
    SetExpiry {
        /// Caller.
        operator: String,
        /// ICCID.
        iccid: Iccid,
        /// New expiry, Unix seconds.
        expires_at: i64,
    },
}

/// Custom notificationPointId (>= 100, §5.3.5 note 1) sent when an order is cancelled.
pub const POINT_ORDER_CANCELLED: u32 = 100;
/// notificationPointId 1: eligibility and retry limit check (§5.3.5).
pub const POINT_ELIGIBILITY: u32 = 1;
/// notificationPointId 2: confirmation failure (§5.3.5).
pub const POINT_CONFIRMATION_FAILURE: u32 = 2;
/// notificationPointId 3: BPP download (§5.3.5).
pub const POINT_BPP_DOWNLOAD: u32 = 3;
/// notificationPointId 4: BPP installation (§5.3.5).
pub const POINT_BPP_INSTALLATION: u32 = 4;
/// Custom notificationPointId (>= 100): the profile was deleted on the device.
pub const POINT_DEVICE_DELETED: u32 = 101;

/// An idempotency record to write in the same transaction as the command.
pub struct Idem<'a> {
    /// SHA-256 over the function, requester, call identifier and body.
    pub key: [u8; 32],
    /// Renders the response body from the resulting record.
    pub render: &'a (dyn Fn(&ProfileRecord) -> Vec<u8> + Sync),
}

/// Who and when.
pub struct Ctx<'a> {
    /// Recorded in history.
    pub caller: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Idempotency record, if the call carried one.
    pub idem: Option<Idem<'a>>,
}

/// A new profile for the inventory.
#[derive(Clone, Debug)]
pub struct NewProfile {
    /// ICCID (Luhn-checked on import).
    pub iccid: Iccid,
    /// Profile type.
    pub profile_type: String,
    /// Owning operator.
    pub operator: String,
    /// The stored form of the profile package: a Protected Profile
    /// Package record (the profile module's `NewProfile::protected` makes
    /// one), never the package in clear.
    pub package: Vec<u8>,
}

/// Filter for [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this operator's profiles.
    pub operator: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Only this profile type.
    pub profile_type: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// The store: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open sled database; `None` only while it is being reopened.
    engine: std::sync::RwLock<Option<Engine>>,
    /// Where the database lives (for reopening).
    path: std::path::PathBuf,
    /// False from a write that failed for lack of space or an I/O error
    /// until a reopened database has taken a write again (`/readyz`).
    writable: AtomicBool,
    opts: StoreOptions,
    /// Serialises pool allocation and inventory writes: the choice of a free
    /// ICCID happens outside the transaction (sled transactions cannot scan),
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
    /// Live ES9+ sessions by phase; held by every session write.
    sessions: Mutex<session::SessionCounts>,
    /// Outbox items per operator, for metrics (rebuilt at open from `oi/`).
    outbox: Mutex<BTreeMap<String, i64>>,
}

/// An open sled database and the tree that holds everything.
#[derive(Clone)]
struct Engine {
    db: sled::Db,
    tree: sled::Tree,
}

/// What opening the database finds: the engine and the in-memory counts.
struct Opened {
    engine: Engine,
    counts: [i64; 9],
    pools: BTreeMap<(String, String), i64>,
    sessions: session::SessionCounts,
    outbox: BTreeMap<String, i64>,
}

impl Opened {
    fn open(path: &std::path::Path) -> Result<Opened> {
        let db = open_db(path)?;
        let tree = db.open_tree("smdpplus")?;
        let mut counts = [0i64; 9];
        let mut pools = BTreeMap::new();
        for kv in tree.scan_prefix(b"p/") {
            let (_, v) = kv?;
            let r: ProfileRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::internal(format!("corrupt record: {e}")))?;
            counts[state_index(r.state)] += 1;
            if r.state == State::Available {
                *pools.entry((r.operator, r.profile_type)).or_insert(0) += 1;
            }
        }
        let sessions = session::count(&tree)?;
        migrate_outbox_index(&tree)?;
        let mut outbox = BTreeMap::new();
        for kv in tree.scan_prefix(b"oi/") {
            let (k, _) = kv?;
            let op = k[3..].split(|b| *b == 0).next().unwrap_or_default();
            *outbox
                .entry(String::from_utf8_lossy(op).into_owned())
                .or_insert(0) += 1;
        }
        Ok(Opened {
            engine: Engine { db, tree },
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

/// 8.2.1/3.9: the ICCID is unknown to this caller.
pub(crate) fn unknown_iccid(iccid: &Iccid) -> Error {
    Error::refused(codes::ICCID_UNKNOWN, format!("ICCID {iccid} is unknown"))
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// What a command did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The record after the command.
    pub record: ProfileRecord,
    /// State before the command.
    pub from: State,
    /// False when the command was a successful no-op (e.g. re-release).
    pub changed: bool,
    /// A refusal that was committed together with its side effects (a
    /// counted failed attempt, a retry limit reached): [`Store::apply`]
    /// returns it as the error after the commit.
    pub refusal: Option<Error>,
    /// Whether an outbox item was written with the transition.
    pub enqueued: bool,
}

/// What one command does to one record, before it is written.
struct Step {
    old: ProfileRecord,
    new: ProfileRecord,
    /// The lifecycle event, if the state may change.
    event: Option<Event>,
    /// The operator notification the transition causes.
    note: Option<Note>,
    /// See [`Applied::refusal`].
    refusal: Option<Error>,
    /// Recorded in the history entry of the event.
    retry: Option<RetryKind>,
}

impl Step {
    fn new(old: ProfileRecord, new: ProfileRecord, event: Option<Event>) -> Step {
        Step {
            old,
            new,
            event,
            note: None,
            refusal: None,
            retry: None,
        }
    }
    fn notify(mut self, note: Note) -> Step {
        self.note = Some(note);
        self
    }
    fn refuse(mut self, e: Error) -> Step {
        self.refusal = Some(e);
        self
    }
}

/// An ES2+ handleDownloadProgressInfo to enqueue with a transition.
struct Note {
    point: u32,
    status: PointStatus,
    eid: Option<String>,
    result_data: Option<Vec<u8>>,
}

impl Note {
    fn new(point: u32, status: PointStatus, about: &ProfileRecord) -> Note {
        Note {
            point,
            status,
            eid: about.eid.clone(),
            result_data: None,
        }
    }
    fn with_eid(mut self, eid: &Eid) -> Note {
        self.eid = Some(eid.as_str().to_owned());
        self
    }
    /// The authenticated eUICC's EID when the order names none (an order
    /// by matchingId alone).
    fn or_eid(mut self, eid: Option<&Eid>) -> Note {
        if self.eid.is_none() {
            self.eid = eid.map(|e| e.as_str().to_owned());
        }
        self
    }
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &std::path::Path, opts: StoreOptions) -> Result<Store> {
        let opened = Opened::open(path)?;
        restrict_permissions(path);
        Ok(Store {
            inner: Arc::new(Inner {
                sessions: Mutex::new(opened.sessions),
                engine: std::sync::RwLock::new(Some(opened.engine)),
                path: path.to_owned(),
                writable: AtomicBool::new(true),
                opts,
                alloc: Mutex::new(()),
                written: AtomicU64::new(0),
                flushed: tokio::sync::Mutex::new(0),
                counts: opened.counts.map(AtomicI64::new),
                pools: Mutex::new(opened.pools),
                outbox: Mutex::new(opened.outbox),
            }),
        })
    }

    fn engine(&self) -> Result<Engine> {
        // A poisoned lock still holds a usable engine.
        self.inner
            .engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::unavailable("the store is being reopened"))
    }

    fn tree(&self) -> Result<sled::Tree> {
        Ok(self.engine()?.tree)
    }

    /// Notes a failed write: after a full disk or an I/O error, sled
    /// refuses every write until it is reopened, so the store says it is
    /// not writable (`/readyz`) until [`Store::recover`] has reopened it.
    fn watch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if e.blame == crate::error::Blame::Unavailable
                && self.inner.writable.swap(false, Ordering::SeqCst)
            {
                tracing::error!(error = %e.message, "store write failed: refusing writes until the store recovers");
            }
        }
        r
    }

    /// False while writes fail for lack of space or an I/O error.
    pub fn writable(&self) -> bool {
        self.inner.writable.load(Ordering::SeqCst)
    }

    /// After a failed write: once the disk takes a write again, reopens the
    /// database (sled refuses every write after an I/O error until it is
    /// reopened), recounts the profiles, and checks that a write reaches
    /// the disk. Returns whether the store is writable. Everything that
    /// was acknowledged was flushed before, so reopening loses nothing of
    /// it; reads go on from the old database until the swap.
    pub fn recover(&self) -> Result<bool> {
        if self.writable() {
            return Ok(true);
        }
        // Cheap test first: can the filesystem take a small synced file?
        if let Err(e) = disk_takes_writes(&self.inner.path) {
            tracing::debug!(error = %e, "store still cannot write");
            return Ok(false);
        }
        let _alloc = self
            .inner
            .alloc
            .lock()
            .map_err(|_| Error::internal("allocation lock poisoned"))?;
        // Readers meanwhile get a quick "unavailable" rather than waiting.
        let old = self
            .inner
            .engine
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // sled holds an exclusive lock on its files until every handle of
        // the old database is gone; handles in flight end within moments.
        drop(old);
        let mut opened = None;
        for _ in 0..3 {
            match Opened::open(&self.inner.path) {
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
            .engine
            .tree
            .insert(b"h/probe", &crate::time::now().to_be_bytes()[..])
            .and_then(|_| opened.engine.db.flush());
        for (c, n) in self.inner.counts.iter().zip(opened.counts) {
            c.store(n, Ordering::Relaxed);
        }
        *self.inner.pools.lock().unwrap_or_else(|e| e.into_inner()) = opened.pools;
        *self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = opened.sessions;
        *self.inner.outbox.lock().unwrap_or_else(|e| e.into_inner()) = opened.outbox;
        *self.inner.engine.write().unwrap_or_else(|e| e.into_inner()) = Some(opened.engine);
        match probe {
            Ok(_) => {
                self.inner.writable.store(true, Ordering::SeqCst);
                tracing::info!("store reopened and writable again");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "store reopened but still cannot write");
                Ok(false)
            }
        }
    }

    /// Makes every transaction committed before this call durable (fsync).
    /// Concurrent callers share one flush.
    pub async fn sync(&self) -> Result<()> {
        let mine = self.inner.written.load(Ordering::SeqCst);
        let mut flushed = self.inner.flushed.lock().await;
        if *flushed >= mine {
            return Ok(());
        }
        // Everything committed up to here is covered by the flush below,
        // including the transactions of callers queued behind this lock.
        let target = self.inner.written.load(Ordering::SeqCst);
        let db = self.engine()?.db.clone();
        let r = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::internal(format!("flush task: {e}")))
            .and_then(|r| r.map_err(Error::from));
        self.watch(r)?;
        *flushed = target;
        Ok(())
    }

    /// Flushes synchronously (shutdown, CLI).
    pub fn flush_blocking(&self) -> Result<()> {
        let r = self.engine()?.db.flush().map_err(Error::from);
        self.watch(r).map(|_| ())
    }

    fn count_transition(&self, old: State, new: &ProfileRecord) {
        self.inner.counts[state_index(old)].fetch_sub(1, Ordering::Relaxed);
        self.inner.counts[state_index(new.state)].fetch_add(1, Ordering::Relaxed);
        let delta = match (old == State::Available, new.state == State::Available) {
            (true, false) => -1,
            (false, true) => 1,
            _ => return,
        };
        self.count_pool(&new.operator, &new.profile_type, delta);
    }

    fn count_pool(&self, operator: &str, profile_type: &str, delta: i64) {
        // A poisoned lock still holds usable counts.
        let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
        *pools
            .entry((operator.to_owned(), profile_type.to_owned()))
            .or_insert(0) += delta;
    }

    /// Available profiles per (operator, profile type).
    pub fn available_by_pool(&self) -> Vec<((String, String), i64)> {
        let pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// Profiles per state.
    pub fn counts(&self) -> Vec<(State, i64)> {
        State::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    self.inner.counts[state_index(*s)].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Adds profiles to the inventory as one atomic batch. Every ICCID must
    /// carry a valid Luhn digit and be new; the first bad one fails the
    /// whole batch with its position.
    pub fn add_profiles(&self, items: &[NewProfile], caller: &str, now: i64) -> Result<usize> {
        let _guard = self
            .inner
            .alloc
            .lock()
            .map_err(|_| Error::internal("allocation lock poisoned"))?;
        let mut batch = sled::Batch::default();
        let mut seen = std::collections::HashSet::new();
        let mut types = std::collections::BTreeSet::new();
        for (i, p) in items.iter().enumerate() {
            let iccid = p.iccid.as_str();
            let bad = |why: &str| {
                Error::invalid(
                    codes::ICCID_INVALID,
                    format!("item {}: ICCID {iccid}: {why}", i + 1),
                )
            };
            if !p.iccid.luhn_ok() {
                return Err(bad("bad Luhn check digit"));
            }
            if !seen.insert(iccid.to_owned()) {
                return Err(bad("duplicate in batch"));
            }
            if self.tree()?.contains_key(profile_key(iccid))? {
                return Err(bad("already in inventory"));
            }
            if !valid_label(&p.profile_type) || !valid_label(&p.operator) {
                return Err(bad(
                    "profile type and operator must be 1-64 printable characters",
                ));
            }
            let rec = ProfileRecord {
                v: RECORD_VERSION,
                iccid: iccid.to_owned(),
                profile_type: p.profile_type.clone(),
                operator: p.operator.clone(),
                state: State::Available,
                eid: None,
                matching_id: None,
                cc_hashes: vec![],
                smds_address: None,
                download_attempts: 0,
                cc_attempts: 0,
                expires_at: None,
                created_at: now,
                updated_at: now,
                package_ref: String::from_utf8_lossy(&package_key(iccid)).into_owned(),
                history_len: 1,
                error_reason: None,
                imported_by: Some(caller.to_owned()),
            };
            batch.insert(package_key(iccid), p.package.as_slice());
            for k in index_keys(&rec) {
                batch.insert(k, iccid.as_bytes());
            }
            types.insert(type_key(&rec.profile_type, &rec.operator));
            batch.insert(profile_key(iccid), encode(&rec));
        }
        for k in types {
            batch.insert(k, &[][..]);
        }
        self.watch(self.tree()?.apply_batch(batch).map_err(Error::from))?;
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        self.inner.counts[state_index(State::Available)]
            .fetch_add(items.len() as i64, Ordering::Relaxed);
        let mut added: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for p in items {
            *added
                .entry((p.operator.as_str(), p.profile_type.as_str()))
                .or_insert(0) += 1;
        }
        for ((operator, profile_type), n) in added {
            self.count_pool(operator, profile_type, n);
        }
        Ok(items.len())
    }

    /// A stored response for an idempotent re-send, if any.
    pub fn idempotent_response(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(match self.tree()?.get(crate::store::key("i/", &[key]))? {
            Some(v) => serde_json::from_slice::<IdemRecord>(&v)
                .ok()
                .map(|r| r.response),
            None => None,
        })
    }

    /// Rewrites stored profile packages one by one: `f` gets the stored
    /// bytes and the ICCID and returns replacement bytes, or `None` to keep
    /// them. Each replacement is a compare-and-swap, so the pass runs beside
    /// live traffic. `progress` hears (done, total). Returns how many changed.
    pub fn rewrite_packages(
        &self,
        mut f: impl FnMut(&[u8], &str) -> Result<Option<Vec<u8>>>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<usize> {
        let total = self.tree()?.scan_prefix(b"b/").count();
        let mut changed = 0;
        for (done, kv) in self.tree()?.scan_prefix(b"b/").enumerate() {
            let (k, v) = kv?;
            let iccid = String::from_utf8_lossy(&k[2..]).into_owned();
            if let Some(new) = f(&v, &iccid)? {
                let swapped = self.tree()?.compare_and_swap(&k, Some(&v), Some(new))?;
                if swapped.is_ok() {
                    changed += 1;
                }
            }
            progress(done + 1, total);
        }
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(changed)
    }

    /// Drops idempotency records older than `cutoff` (Unix seconds).
    pub fn prune_idempotency(&self, cutoff: i64) -> Result<usize> {
        let end = key("j/", &[&(cutoff.max(0) as u64).to_be_bytes()]);
        let mut n = 0;
        for kv in self.tree()?.range(b"j/".to_vec()..end) {
            let (k, _) = kv?;
            let hash = &k[k.len() - 32..];
            self.tree()?.remove(key("i/", &[hash]))?;
            self.tree()?.remove(&k)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The committed refusal for an order past its expiry (§5.6.2, §5.6.3:
/// 8.8.5/4.10): the order goes to Error and the operator hears of it.
fn expiry_refusal(old: &ProfileRecord, now: i64, eid: Option<&Eid>) -> Option<Step> {
    if !(old.expires_at.is_some_and(|t| t <= now) && old.state.can_expire()) {
        return None;
    }
    let mut new = old.clone();
    new.error_reason = Some("order expired".into());
    let mut note = expiry_note(old);
    if let Some(e) = eid {
        note = note.with_eid(e);
    }
    Some(
        Step::new(old.clone(), new, Some(Event::Expired))
            .notify(note)
            .refuse(Error::refused(
                codes::ORDER_EXPIRED,
                "the download order has expired",
            )),
    )
}

/// Whether the last thing that happened to the order was its expiry while
/// its delivered package waited for the installation result.
fn expired_after_delivery(tx: &dyn Records, r: &ProfileRecord) -> TxResult<bool> {
    let Some(last) = r.history_len.checked_sub(1) else {
        return Ok(false);
    };
    Ok(tx
        .history_entry(&r.iccid, last)?
        .is_some_and(|h| h.event == Event::Expired && h.from == Some(State::Downloaded)))
}

/// The operator's notification of an expired order (§5.3.5): at the
/// eligibility point, or at the installation point for a delivered package
/// whose installation result never came.
fn expiry_note(old: &ProfileRecord) -> Note {
    let point = if old.state == State::Downloaded {
        POINT_BPP_INSTALLATION
    } else {
        POINT_ELIGIBILITY
    };
    Note::new(
        point,
        PointStatus::failed(codes::ORDER_EXPIRED, "download order expired"),
        old,
    )
}

/// Operator ids and profile types: 1-64 printable ASCII characters.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| (0x20..0x7f).contains(&b))
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
