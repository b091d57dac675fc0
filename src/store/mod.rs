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
pub mod lifecycle;
pub mod mobileplans;
pub mod record;
pub mod session;

use crate::error::{codes, Error, Result, StatusCode};
use crate::ids::{generate_matching_id, Eid, Iccid};
use lifecycle::{Event, State};
pub use record::{
    HistoryEntry, IdemRecord, OutboxItem, PointStatus, ProfileRecord, RetryKind, RECORD_VERSION,
};
use sha2::{Digest, Sha256};
use sled::transaction::{abort, ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Package record ([`NewProfile::protected`] makes one), never the
    /// package in clear.
    pub package: Vec<u8>,
}

impl NewProfile {
    /// A profile whose unprotected package `upp` is protected under a fresh
    /// PPK wrapped with `master` (SGP.22 §2.5.5) before it reaches the store.
    pub fn protected(
        iccid: Iccid,
        profile_type: String,
        operator: String,
        upp: &[u8],
        master: &crate::profile::protect::Keyring,
    ) -> Result<NewProfile> {
        let p = crate::profile::protect::ProtectedPackage::protect(
            master,
            upp,
            iccid.as_str().as_bytes(),
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        Ok(NewProfile {
            iccid,
            profile_type,
            operator,
            package: p.to_bytes(),
        })
    }
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
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()?;
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

/// 8.2.1/3.9: the ICCID is unknown to this caller.
pub(crate) fn unknown_iccid(iccid: &Iccid) -> Error {
    Error::refused(codes::ICCID_UNKNOWN, format!("ICCID {iccid} is unknown"))
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn profile_key(iccid: &str) -> Vec<u8> {
    key("p/", &[iccid.as_bytes()])
}
fn package_key(iccid: &str) -> Vec<u8> {
    key("b/", &[iccid.as_bytes()])
}
fn history_key(iccid: &str, seq: u64) -> Vec<u8> {
    key("h/", &[iccid.as_bytes(), b"/", &seq.to_be_bytes()])
}
fn matching_key(m: &str) -> Vec<u8> {
    key("m/", &[m.as_bytes()])
}
fn pool_prefix(operator: &str, profile_type: &str) -> Vec<u8> {
    key(
        "a/",
        &[operator.as_bytes(), b"\0", profile_type.as_bytes(), b"\0"],
    )
}
fn type_key(profile_type: &str, operator: &str) -> Vec<u8> {
    key("t/", &[profile_type.as_bytes(), b"\0", operator.as_bytes()])
}
fn outbox_key(id: u64) -> Vec<u8> {
    key("o/", &[&id.to_be_bytes()])
}
fn outbox_due_prefix(operator: &str) -> Vec<u8> {
    key("od/", &[operator.as_bytes(), b"\0"])
}
fn outbox_operator_prefix(operator: &str) -> Vec<u8> {
    key("oi/", &[operator.as_bytes(), b"\0"])
}
/// Version of the outbox index layout, kept at [`OUTBOX_INDEX_KEY`].
const OUTBOX_INDEX_VERSION: u32 = 1;
/// Marks a store whose outbox items all have their index entries.
const OUTBOX_INDEX_KEY: &[u8] = b"om/index";

/// The outbox index entries an item implies, (key, value): its due-time
/// entry (`od/`, by operator and next attempt, which the worker reads to
/// find what is due) and its per-operator entry (`oi/`, by id, whose value
/// is the event time: the first one is the operator's oldest item).
pub fn outbox_index_keys(item: &OutboxItem) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut due = outbox_due_prefix(&item.operator);
    due.extend_from_slice(&(item.next_attempt_ms.max(0) as u64).to_be_bytes());
    due.extend_from_slice(&item.id.to_be_bytes());
    let mut by_op = outbox_operator_prefix(&item.operator);
    by_op.extend_from_slice(&item.id.to_be_bytes());
    vec![
        (due, vec![]),
        (by_op, item.timestamp.to_be_bytes().to_vec()),
    ]
}

/// Builds the outbox index of a store written before it existed: one
/// atomic batch with every item's entries and the version marker. Runs
/// once; later opens find the marker.
fn migrate_outbox_index(tree: &sled::Tree) -> Result<()> {
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

/// The index keys a record implies. Every value is the ICCID.
pub fn index_keys(r: &ProfileRecord) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4);
    if r.state == State::Available {
        let mut k = pool_prefix(&r.operator, &r.profile_type);
        k.extend_from_slice(r.iccid.as_bytes());
        out.push(k);
    }
    if let Some(m) = r.matching_id.as_deref().filter(|m| !m.is_empty()) {
        out.push(matching_key(m));
    }
    if let (Some(eid), true) = (&r.eid, r.state.is_pending_order()) {
        out.push(key("e/", &[eid.as_bytes(), b"/", r.iccid.as_bytes()]));
    }
    if let (Some(t), true) = (r.expires_at, r.state.can_expire()) {
        out.push(key(
            "x/",
            &[&(t.max(0) as u64).to_be_bytes(), r.iccid.as_bytes()],
        ));
    }
    out
}

/// Errors inside a transaction closure.
type TxResult<T> = std::result::Result<T, ConflictableTransactionError<TxAbort>>;

/// More writes in the transaction of a command, given the record after it.
type Then<'a> = dyn Fn(&TransactionalTree, &ProfileRecord) -> TxResult<()> + 'a;

/// Why a transaction was aborted.
#[derive(Debug)]
enum TxAbort {
    /// A protocol error for the caller.
    Gsma(Error),
    /// The chosen pool candidate was taken meanwhile: choose again.
    Retry,
}

/// The caller's result of a transaction that does not retry.
fn tx_result<T>(r: std::result::Result<T, TransactionError<TxAbort>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(TxAbort::Gsma(e))) => Err(e),
        Err(TransactionError::Abort(TxAbort::Retry)) => {
            Err(Error::internal("transaction asked for a retry"))
        }
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

fn gsma<T>(e: Error) -> TxResult<T> {
    abort(TxAbort::Gsma(e))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    serde_json::from_slice(bytes).or_else(|e| gsma(Error::internal(format!("corrupt record: {e}"))))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_vec(v).unwrap_or_default()
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
        for _ in 0..50 {
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

    /// Applies a command atomically: record, indexes, history, outbox and
    /// idempotency record in one transaction. Not yet durable: call
    /// [`Store::sync`] before acknowledging.
    pub fn apply(&self, cmd: &Command, ctx: &Ctx<'_>) -> Result<Applied> {
        self.apply_then(cmd, ctx, None)
    }

    /// Like [`Store::apply`], and when the command succeeds, `then` writes
    /// more records in the same transaction (a Mobile Plans order beside its
    /// profile's transition). `then` may run more than once (sled retries
    /// conflicting transactions), so it must only write through `tx`.
    fn apply_then(&self, cmd: &Command, ctx: &Ctx<'_>, then: Option<&Then<'_>>) -> Result<Applied> {
        // Pool allocation picks its candidate outside the transaction.
        let alloc_guard = match cmd {
            Command::DownloadOrder { iccid: None, .. } => Some(
                self.inner
                    .alloc
                    .lock()
                    .map_err(|_| Error::internal("allocation lock poisoned"))?,
            ),
            _ => None,
        };
        for _ in 0..16 {
            let candidate = match cmd {
                Command::DownloadOrder {
                    operator,
                    iccid: None,
                    profile_type: Some(t),
                    ..
                } => Some(self.pick_from_pool(operator, t)?),
                _ => None,
            };
            let result = self.tree()?.transaction(|tx| {
                let applied = self.apply_tx(tx, cmd, ctx, candidate.as_ref())?;
                if let (Some(then), None) = (then, &applied.refusal) {
                    then(tx, &applied.record)?;
                }
                Ok(applied)
            });
            match result {
                Ok(mut applied) => {
                    drop(alloc_guard);
                    // Any committed transaction may have written: count it for sync().
                    self.inner.written.fetch_add(1, Ordering::SeqCst);
                    if applied.changed {
                        self.count_transition(applied.from, &applied.record);
                    }
                    if applied.enqueued {
                        self.count_outbox(&applied.record.operator, 1);
                    }
                    return match applied.refusal.take() {
                        Some(e) => Err(e),
                        None => Ok(applied),
                    };
                }
                Err(TransactionError::Abort(TxAbort::Retry)) => continue,
                Err(TransactionError::Abort(TxAbort::Gsma(e))) => return Err(e),
                Err(TransactionError::Storage(e)) => return self.watch(Err(e.into())),
            }
        }
        Err(Error::internal("allocation kept conflicting"))
    }

    fn pick_from_pool(&self, operator: &str, profile_type: &str) -> Result<Iccid> {
        // Another operator's type answers as unknown: SGP.22 (§5.3.1) lets
        // 8.2.5/1.2 exist but does not require it, and telling the two apart
        // would let operators probe each other's inventory.
        if !self
            .tree()?
            .contains_key(type_key(profile_type, operator))?
        {
            return Err(Error::refused(
                codes::TYPE_UNKNOWN,
                format!(
                    "profile type {} is unknown",
                    crate::error::quote(profile_type)
                ),
            ));
        }
        match self
            .tree()?
            .scan_prefix(pool_prefix(operator, profile_type))
            .next()
        {
            Some(kv) => {
                let (_, v) = kv?;
                let s = String::from_utf8_lossy(&v);
                Iccid::parse(&s).ok_or_else(|| Error::internal("corrupt pool entry"))
            }
            None => Err(Error::refused(
                codes::TYPE_EXHAUSTED,
                format!("no more profiles of type {profile_type}"),
            )),
        }
    }

    fn load(&self, tx: &TransactionalTree, iccid: &Iccid) -> TxResult<ProfileRecord> {
        match tx.get(profile_key(iccid.as_str()))? {
            Some(v) => decode(&v),
            None => gsma(unknown_iccid(iccid)),
        }
    }

    fn load_owned(
        &self,
        tx: &TransactionalTree,
        iccid: &Iccid,
        operator: &str,
    ) -> TxResult<ProfileRecord> {
        let r = self.load(tx, iccid)?;
        // Another operator's profile answers exactly as an unknown ICCID
        // (SGP.22 §5.3 does not require 8.2.1/1.2 here), so that operators
        // cannot probe each other's inventory.
        if r.operator != operator {
            return gsma(unknown_iccid(iccid));
        }
        Ok(r)
    }

    fn apply_tx(
        &self,
        tx: &TransactionalTree,
        cmd: &Command,
        ctx: &Ctx<'_>,
        candidate: Option<&Iccid>,
    ) -> TxResult<Applied> {
        let now = ctx.now;
        let step: Step = match cmd {
            Command::DownloadOrder {
                operator,
                eid,
                iccid,
                profile_type,
            } => self.download_order(tx, ctx, candidate, operator, eid, iccid, profile_type)?,
            Command::ConfirmOrder {
                operator,
                iccid,
                eid,
                matching_id,
                cc_hashes,
                smds_address,
                release,
            } => self.confirm_order(
                tx,
                operator,
                iccid,
                eid,
                matching_id,
                cc_hashes,
                smds_address,
                release,
            )?,
            Command::ReleaseProfile { operator, iccid } => {
                self.release_profile(tx, operator, iccid)?
            }
            Command::CancelOrder {
                operator,
                iccid,
                eid,
                matching_id,
                final_status,
            } => self.cancel_order(tx, operator, iccid, eid, matching_id, final_status)?,
            Command::Expire { iccid } => self.expire(tx, ctx, iccid)?,
            Command::SetExpiry {
                operator,
                iccid,
                expires_at,
            } => self.set_expiry(tx, operator, iccid, expires_at)?,
            Command::AuthenticateClient {
                iccid,
                eid,
                matching_id,
                max_attempts,
            } => self.authenticate_client(
                tx,
                iccid,
                eid,
                matching_id.as_deref(),
                *max_attempts,
                now,
            )?,
            Command::CheckConfirmationCode {
                iccid,
                transaction_id,
                hash_cc,
                max_attempts,
                eid,
            } => self.check_confirmation_code(
                tx,
                ctx,
                iccid,
                transaction_id,
                hash_cc,
                max_attempts,
                eid,
            )?,
            Command::BppDelivered {
                iccid,
                eid,
                retry,
                keep,
            } => self.bpp_delivered(tx, ctx, iccid, eid, retry, keep)?,
            Command::InstallResult {
                iccid,
                success,
                result_data,
                reason,
            } => self.install_result(tx, iccid, success, result_data, reason)?,
            Command::DeviceNotification { iccid, eid, event } => {
                self.device_notification(tx, iccid, eid, event)?
            }
            Command::DownloadCancelled {
                iccid,
                code,
                reason,
                eid,
            } => self.download_cancelled(tx, iccid, code, reason, eid)?,
        };
        self.finish(tx, ctx, step)
    }

    /// Applies [`Command::DownloadOrder`]: ES2+.DownloadOrder (§5.3.1). One of `iccid` and `profile_type` is set.
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    fn download_order(
        &self,
        tx: &TransactionalTree,
        ctx: &Ctx<'_>,
        candidate: Option<&Iccid>,
        operator: &str,
        eid: &Option<Eid>,
        iccid: &Option<Iccid>,
        profile_type: &Option<String>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = match (iccid, candidate) {
            (Some(i), _) => {
                let r = self.load_owned(tx, i, operator)?;
                if let Some(t) = profile_type {
                    if *t != r.profile_type {
                        return gsma(Error::refused(
                            codes::TYPE_MISMATCH,
                            format!("ICCID {i} is of type {}, not {t}", r.profile_type),
                        ));
                    }
                }
                r
            }
            (None, Some(c)) => {
                let r = self.load(tx, c)?;
                if r.state != State::Available {
                    return abort(TxAbort::Retry);
                }
                r
            }
            (None, None) => {
                return gsma(Error::invalid(
                    codes::FORMAT_CONDITIONAL_MISSING,
                    "iccid or profileType is required",
                ))
            }
        };
        let event = if eid.is_some() {
            Event::DownloadOrderLinked
        } else {
            Event::DownloadOrderAllocated
        };
        let mut new = old.clone();
        new.eid = eid.as_ref().map(|e| e.as_str().to_owned());
        new.expires_at = Some(now.saturating_add(self.inner.opts.order_ttl.as_secs() as i64));
        new.error_reason = None;
        Ok(Step::new(old, new, Some(event)))
    }

    /// Applies [`Command::ConfirmOrder`]: ES2+.ConfirmOrder (§5.3.2).
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    fn confirm_order(
        &self,
        tx: &TransactionalTree,
        operator: &str,
        iccid: &Iccid,
        eid: &Option<Eid>,
        matching_id: &Option<String>,
        cc_hashes: &[String],
        smds_address: &Option<String>,
        release: &bool,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let event = if *release {
            Event::ConfirmOrderAndRelease
        } else {
            Event::ConfirmOrder
        };
        lifecycle::next(old.state, event).or_else(gsma)?;
        let mut new = old.clone();
        match (&old.eid, eid) {
            (Some(a), Some(b)) if a != b.as_str() => {
                return gsma(Error::refused(
                    codes::EID_INVALID_ASSOCIATION,
                    format!("ICCID {iccid} is linked to a different EID"),
                ))
            }
            (None, Some(b)) => new.eid = Some(b.as_str().to_owned()),
            _ => {}
        }
        let m = match matching_id {
            Some(m) => m.clone(),
            None => loop {
                let m = generate_matching_id(&mut rand::thread_rng());
                if tx.get(matching_key(&m))?.is_none() {
                    break m;
                }
            },
        };
        if m.is_empty() && new.eid.is_none() {
            return gsma(Error::invalid(
                codes::EID_MISSING,
                "an empty matchingId requires an EID",
            ));
        }
        if smds_address.is_some() && new.eid.is_none() {
            return gsma(Error::invalid(
                codes::EID_MISSING,
                "an SM-DS registration requires an EID",
            ));
        }
        if !m.is_empty() {
            if let Some(owner) = tx.get(matching_key(&m))? {
                if owner.as_ref() != iccid.as_str().as_bytes() {
                    return gsma(Error::refused(
                        codes::MATCHING_ID_IN_USE,
                        format!("matchingId {m} is already in use"),
                    ));
                }
            }
        }
        new.matching_id = Some(m);
        new.cc_hashes = cc_hashes.to_vec();
        new.smds_address = smds_address.clone();
        Ok(Step::new(old, new, Some(event)))
    }

    /// Applies [`Command::ReleaseProfile`]: ES2+.ReleaseProfile (§5.3.4).
    fn release_profile(
        &self,
        tx: &TransactionalTree,
        operator: &str,
        iccid: &Iccid,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let new = old.clone();
        Ok(Step::new(old, new, Some(Event::ReleaseProfile)))
    }

    /// Applies [`Command::CancelOrder`]: ES2+.CancelOrder (§5.3.3).
    fn cancel_order(
        &self,
        tx: &TransactionalTree,
        operator: &str,
        iccid: &Iccid,
        eid: &Option<Eid>,
        matching_id: &Option<String>,
        final_status: &FinalStatus,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        let event = match final_status {
            FinalStatus::Available => Event::CancelOrderAvailable,
            FinalStatus::Unavailable => Event::CancelOrderUnavailable,
        };
        lifecycle::next(old.state, event).or_else(gsma)?;
        if let Some(linked) = &old.eid {
            match eid {
                None => {
                    return gsma(Error::invalid(
                        codes::EID_CONDITIONAL_MISSING,
                        "eid is required: the order is linked to an EID",
                    ))
                }
                Some(e) if e.as_str() != linked => {
                    return gsma(Error::refused(
                        codes::ICCID_EID_MISMATCH,
                        format!("ICCID {iccid} is associated with a different EID"),
                    ))
                }
                _ => {}
            }
        }
        if let Some(m) = old.matching_id.as_deref().filter(|m| !m.is_empty()) {
            match matching_id {
                None => {
                    return gsma(Error::invalid(
                        codes::MATCHING_ID_MISSING,
                        "matchingId is required: the order has one",
                    ))
                }
                Some(given) if given != m => {
                    return gsma(Error::refused(
                        codes::MATCHING_ID_MISMATCH,
                        format!("ICCID {iccid} is associated with a different matchingId"),
                    ))
                }
                _ => {}
            }
        }
        let mut new = old.clone();
        new.eid = None;
        new.matching_id = None;
        new.cc_hashes.clear();
        new.smds_address = None;
        new.download_attempts = 0;
        new.cc_attempts = 0;
        new.expires_at = None;
        new.error_reason = None;
        let note = Note::new(POINT_ORDER_CANCELLED, PointStatus::Success, &old);
        Ok(Step::new(old, new, Some(event)).notify(note))
    }

    /// Applies [`Command::Expire`]: the order's time to live ran out.
    fn expire(&self, tx: &TransactionalTree, ctx: &Ctx<'_>, iccid: &Iccid) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        match old.expires_at {
            Some(t) if t <= now && old.state.can_expire() => {}
            _ => {
                return gsma(Error::refused(
                    codes::ORDER_EXPIRED,
                    format!("order for {iccid} has not expired"),
                ))
            }
        }
        let mut new = old.clone();
        new.error_reason = Some("order expired".into());
        let note = expiry_note(&old);
        Ok(Step::new(old, new, Some(Event::Expired)).notify(note))
    }

    /// Applies [`Command::SetExpiry`]: operator admin call: set the expiry of an open order.
    fn set_expiry(
        &self,
        tx: &TransactionalTree,
        operator: &str,
        iccid: &Iccid,
        expires_at: &i64,
    ) -> TxResult<Step> {
        let old = self.load_owned(tx, iccid, operator)?;
        if !old.state.can_expire() {
            return gsma(Error::refused(
                codes::ICCID_INVALID_TRANSITION,
                format!(
                    "ICCID {iccid} has no open order that can expire (state {})",
                    old.state
                ),
            ));
        }
        let mut new = old.clone();
        new.expires_at = Some(*expires_at);
        Ok(Step::new(old, new, None))
    }

    /// Applies [`Command::CheckConfirmationCode`]: ES9+.GetBoundProfilePackage: check the hashed confirmation code (§5.6.2).
    #[allow(
        clippy::too_many_arguments,
        reason = "one parameter a field of the command"
    )]
    fn check_confirmation_code(
        &self,
        tx: &TransactionalTree,
        ctx: &Ctx<'_>,
        iccid: &Iccid,
        transaction_id: &[u8],
        hash_cc: &Option<Vec<u8>>,
        max_attempts: &u32,
        eid: &Option<Eid>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        if !matches!(old.state, State::Released | State::Downloaded) {
            return gsma(Error::refused(
                codes::PROFILE_UNAVAILABLE,
                format!("the order for {iccid} is {}", old.state),
            ));
        }
        if let Some(step) = expiry_refusal(&old, now, eid.as_ref()) {
            return Ok(step);
        }
        let mut new = old.clone();
        Ok(if old.cc_hashes.is_empty() {
            Step::new(old, new, None)
        } else {
            let Some(given) = hash_cc else {
                return gsma(Error::refused(
                    codes::CC_MISSING,
                    "the order requires a confirmation code",
                ));
            };
            let matches = old
                .cc_hashes
                .iter()
                .filter_map(|h| hex::decode(h).ok())
                .any(|h| {
                    let mut d = Sha256::new();
                    d.update(&h);
                    d.update(transaction_id);
                    d.finalize().as_slice() == given.as_slice()
                });
            if matches {
                Step::new(old, new, None)
            } else {
                new.cc_attempts = new.cc_attempts.saturating_add(1);
                if new.cc_attempts >= *max_attempts {
                    new.error_reason = Some("confirmation code retries exceeded".into());
                    let status = PointStatus::failed(
                        codes::CC_RETRIES_EXCEEDED,
                        "confirmation code retries exceeded",
                    );
                    let note =
                        Note::new(POINT_CONFIRMATION_FAILURE, status, &old).or_eid(eid.as_ref());
                    Step::new(old, new, Some(Event::LimitExceeded))
                        .notify(note)
                        .refuse(Error::refused(
                            codes::CC_RETRIES_EXCEEDED,
                            "confirmation code retries exceeded",
                        ))
                } else {
                    Step::new(old, new, None).refuse(Error::refused(
                        codes::CC_REFUSED,
                        "confirmation code refused",
                    ))
                }
            }
        })
    }

    /// Applies [`Command::BppDelivered`]: a Bound Profile Package was handed to the LPA; the EID is linked.
    fn bpp_delivered(
        &self,
        tx: &TransactionalTree,
        ctx: &Ctx<'_>,
        iccid: &Iccid,
        eid: &Eid,
        retry: &Option<RetryKind>,
        keep: &Option<Box<bound::KeptPackage>>,
    ) -> TxResult<Step> {
        let now = ctx.now;
        let old = self.load(tx, iccid)?;
        let mut new = old.clone();
        match &old.eid {
            Some(linked) if linked != eid.as_str() => {
                return gsma(Error::refused(
                    codes::EID_REFUSED,
                    format!("ICCID {iccid} is linked to another EID"),
                ))
            }
            _ => new.eid = Some(eid.as_str().to_owned()),
        }
        if old.state == State::Released {
            if let Some(step) = expiry_refusal(&old, now, Some(eid)) {
                return Ok(step);
            }
        }
        let k = bound::kept_key(iccid.as_str());
        match (keep, retry) {
            (Some(p), _) => {
                let mut p = (**p).clone();
                // Never beyond the order's own time to live.
                if let Some(t) = old.expires_at {
                    p.expires_at = p.expires_at.min(t);
                }
                tx.insert(k, encode(&p))?;
            }
            (None, Some(RetryKind::SameKey)) => {}
            (None, _) => {
                tx.remove(k)?;
            }
        }
        let mut step = Step::new(old.clone(), new, Some(Event::BppDelivered));
        step.retry = *retry;
        Ok(if old.state == State::Released {
            step.notify(Note::new(POINT_BPP_DOWNLOAD, PointStatus::Success, &old).with_eid(eid))
        } else {
            step
        })
    }

    /// Applies [`Command::InstallResult`]: a verified ProfileInstallationResult (§5.6.4).
    fn install_result(
        &self,
        tx: &TransactionalTree,
        iccid: &Iccid,
        success: &bool,
        result_data: &[u8],
        reason: &Option<String>,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        // In Error, only a late result for a delivered package whose
        // order expired while waiting for it.
        if old.state == State::Error && !expired_after_delivery(tx, &old)? {
            return gsma(Error::refused(
                codes::ICCID_INVALID_TRANSITION,
                format!("ICCID {iccid} has no installation pending"),
            ));
        }
        let mut new = old.clone();
        let (event, status) = if *success {
            // A late result for an order that expired meanwhile.
            new.error_reason = None;
            (Event::InstallSucceeded, PointStatus::Success)
        } else {
            new.error_reason = Some(
                reason
                    .clone()
                    .unwrap_or_else(|| "installation failed".into()),
            );
            (
                Event::InstallFailed,
                PointStatus::failed(
                    codes::BPP_EXECUTION_ERROR,
                    reason.clone().unwrap_or_default(),
                ),
            )
        };
        let mut note = Note::new(POINT_BPP_INSTALLATION, status, &old);
        note.result_data = Some(result_data.to_vec());
        Ok(Step::new(old, new, Some(event)).notify(note))
    }

    /// Applies [`Command::DeviceNotification`]: a verified OtherSignedNotification about an installed profile (§3.5, §5.6.4): enable, disable or delete on the device.
    fn device_notification(
        &self,
        tx: &TransactionalTree,
        iccid: &Iccid,
        eid: &Eid,
        event: &Event,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        if old.eid.as_deref() != Some(eid.as_str()) {
            return gsma(Error::refused(
                codes::EID_REFUSED,
                format!("ICCID {iccid} is not installed on this eUICC"),
            ));
        }
        let new = old.clone();
        Ok(if *event == Event::DeviceDeleted {
            let note = Note::new(POINT_DEVICE_DELETED, PointStatus::Success, &old);
            Step::new(old, new, Some(*event)).notify(note)
        } else {
            Step::new(old, new, Some(*event))
        })
    }

    /// Applies [`Command::DownloadCancelled`]: a terminal ES9+.CancelSession reason ended the order (§5.6.5).
    fn download_cancelled(
        &self,
        tx: &TransactionalTree,
        iccid: &Iccid,
        code: &StatusCode,
        reason: &str,
        eid: &Option<Eid>,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        let mut new = old.clone();
        new.error_reason = Some(reason.to_owned());
        let point = if old.state == State::Downloaded {
            POINT_BPP_DOWNLOAD
        } else {
            POINT_ELIGIBILITY
        };
        let note = Note::new(point, PointStatus::failed(*code, reason), &old).or_eid(eid.as_ref());
        Ok(Step::new(old, new, Some(Event::DownloadCancelled)).notify(note))
    }

    /// Applies a [`Step`]: the lifecycle table, history, outbox, record,
    /// indexes and idempotency record, in the caller's transaction.
    fn finish(&self, tx: &TransactionalTree, ctx: &Ctx<'_>, step: Step) -> TxResult<Applied> {
        let now = ctx.now;
        let Step {
            old,
            mut new,
            event,
            note,
            refusal,
            retry,
        } = step;
        let changed = match event {
            Some(event) => {
                let to = lifecycle::next(old.state, event).or_else(gsma)?;
                // §5.3.4: releasing a released profile changes nothing.
                let changed = !(to == old.state && event == Event::ReleaseProfile);
                if changed {
                    new.state = to;
                    let h = HistoryEntry {
                        v: RECORD_VERSION,
                        at: now,
                        event,
                        from: Some(old.state),
                        to,
                        caller: ctx.caller.to_owned(),
                        retry,
                    };
                    tx.insert(history_key(&new.iccid, new.history_len), encode(&h))?;
                    new.history_len += 1;
                }
                changed
            }
            None => false,
        };
        let mut enqueued = false;
        if changed {
            if !new.state.can_expire() {
                new.expires_at = None;
            }
            // A kept package lives only while its order is Downloaded:
            // installed, failed, expired or cancelled, it is erased here,
            // in the transition's own transaction.
            if new.state != State::Downloaded {
                tx.remove(bound::kept_key(&new.iccid))?;
            }
            if let Some(n) = note {
                let id = tx.generate_id()?;
                let item = OutboxItem {
                    v: RECORD_VERSION,
                    id,
                    operator: new.operator.clone(),
                    eid: n.eid,
                    iccid: new.iccid.clone(),
                    profile_type: new.profile_type.clone(),
                    timestamp: now,
                    point: n.point,
                    status: n.status,
                    result_data: n.result_data,
                    attempts: 0,
                    next_attempt_ms: now.saturating_mul(1000),
                    last_error: None,
                };
                tx.insert(outbox_key(id), encode(&item))?;
                for (k, v) in outbox_index_keys(&item) {
                    tx.insert(k, v)?;
                }
                enqueued = true;
            }
        }
        if new != old {
            new.updated_at = now;
            self.write_record(tx, Some(&old), &new)?;
        }
        self.write_idem(tx, ctx, &new)?;
        Ok(Applied {
            from: old.state,
            record: new,
            changed,
            refusal,
            enqueued,
        })
    }

    /// The order-matching part of ES9+.AuthenticateClient inside the
    /// transaction: the order still names this EID or matchingId, is
    /// released (or downloaded, on a retry), has not expired, and is within
    /// its download-attempt limit. Expiry and the limit end the order
    /// (committed, with an operator notification) and are returned as the
    /// refusal.
    fn authenticate_client(
        &self,
        tx: &TransactionalTree,
        iccid: &Iccid,
        eid: &Eid,
        matching_id: Option<&str>,
        max_attempts: u32,
        now: i64,
    ) -> TxResult<Step> {
        let old = self.load(tx, iccid)?;
        match (&old.eid, matching_id.filter(|m| !m.is_empty())) {
            (Some(linked), _) if linked != eid.as_str() => {
                return gsma(Error::refused(
                    codes::EID_REFUSED,
                    "the order is linked to another EID",
                ))
            }
            (_, Some(m)) if old.matching_id.as_deref() != Some(m) => {
                return gsma(Error::refused(
                    codes::MATCHING_ID_REFUSED,
                    "matchingId refused",
                ))
            }
            (None, None) => {
                return gsma(Error::refused(
                    codes::MATCHING_ID_REFUSED,
                    "matchingId refused",
                ))
            }
            _ => {}
        }
        if let Some(step) = expiry_refusal(&old, now, Some(eid)) {
            return Ok(step);
        }
        let mut new = old.clone();
        if !matches!(old.state, State::Released | State::Downloaded) {
            return gsma(Error::refused(
                codes::PROFILE_NOT_RELEASED,
                format!("the profile is {}, not released", old.state),
            ));
        }
        new.download_attempts = new.download_attempts.saturating_add(1);
        if new.download_attempts > max_attempts {
            new.error_reason = Some("download retries exceeded".into());
            let status = PointStatus::failed(
                codes::DOWNLOAD_RETRIES_EXCEEDED,
                "download retries exceeded",
            );
            let note = Note::new(POINT_ELIGIBILITY, status, &old).with_eid(eid);
            return Ok(Step::new(old, new, Some(Event::LimitExceeded))
                .notify(note)
                .refuse(Error::refused(
                    codes::DOWNLOAD_RETRIES_EXCEEDED,
                    "the maximum number of download attempts was reached",
                )));
        }
        Ok(Step::new(old, new, None))
    }

    /// Finds the order an authenticated eUICC asks for (SGP.22 §5.6.3,
    /// p.170).
    ///
    /// - A matchingId names the order: one linked to this EID (a pending
    ///   order, or a retry of a delivered one), else an order linked to no
    ///   EID. An order linked to another EID is 8.1.1/3.8; an unknown
    ///   matchingId 8.2.6/3.8.
    /// - `strict`: the literal §5.6.3 rule, under which an EID with a
    ///   pending order may only use that order's matchingId. By default an
    ///   unbound order is accepted anyway: any eUICC could claim it, so
    ///   refusing only stops a user with two purchases.
    /// - No matchingId (or an empty one): this EID's released order, else a
    ///   retry of its delivered one, else its unreleased order (refused
    ///   later with 8.2/1.2); none is 8.1.1/3.8.
    ///
    /// A delivered order waiting for its installation result (Downloaded)
    /// is not a pending order here: it never blocks the eUICC's others.
    pub fn resolve_order(
        &self,
        eid: &Eid,
        matching_id: Option<&str>,
        strict: bool,
    ) -> Result<Iccid> {
        let matching_id = matching_id.filter(|m| !m.is_empty());
        let linked: Vec<ProfileRecord> = self
            .pending_for_eid(eid)?
            .iter()
            .filter_map(|i| self.get(i).ok().flatten())
            .collect();
        let waiting = || linked.iter().filter(|r| r.state != State::Downloaded);
        let parse = |r: &ProfileRecord| {
            Iccid::parse(&r.iccid).ok_or_else(|| Error::internal("corrupt ICCID"))
        };
        let Some(m) = matching_id else {
            return match waiting()
                .find(|r| r.state == State::Released)
                .or_else(|| linked.iter().find(|r| r.state == State::Downloaded))
                .or_else(|| waiting().next())
            {
                Some(r) => parse(r),
                None => Err(Error::refused(
                    codes::EID_REFUSED,
                    "no download order for this eUICC, and no matchingId",
                )),
            };
        };
        if let Some(r) = linked.iter().find(|r| r.matching_id.as_deref() == Some(m)) {
            return parse(r);
        }
        let refused = || Error::refused(codes::MATCHING_ID_REFUSED, "matchingId refused");
        let iccid = self.by_matching_id(m)?.ok_or_else(refused)?;
        let r = self.get(&iccid)?.ok_or_else(refused)?;
        match r.eid.as_deref() {
            Some(e) if e != eid.as_str() => Err(Error::refused(
                codes::EID_REFUSED,
                "the order is linked to another EID",
            )),
            None if strict && waiting().next().is_some() => Err(Error::refused(
                codes::MATCHING_ID_REFUSED,
                "matchingId does not name the pending order of this eUICC",
            )),
            _ => Ok(iccid),
        }
    }

    fn write_record(
        &self,
        tx: &TransactionalTree,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> TxResult<()> {
        let old_keys = old.map(index_keys).unwrap_or_default();
        let new_keys = index_keys(new);
        for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            tx.remove(k.as_slice())?;
        }
        for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
            tx.insert(k.as_slice(), new.iccid.as_bytes())?;
        }
        tx.insert(profile_key(&new.iccid), encode(new))?;
        Ok(())
    }

    fn write_idem(
        &self,
        tx: &TransactionalTree,
        ctx: &Ctx<'_>,
        rec: &ProfileRecord,
    ) -> TxResult<()> {
        if let Some(idem) = &ctx.idem {
            let r = IdemRecord {
                at: ctx.now,
                response: (idem.render)(rec),
            };
            tx.insert(key("i/", &[&idem.key]), encode(&r))?;
            tx.insert(
                key("j/", &[&(ctx.now.max(0) as u64).to_be_bytes(), &idem.key]),
                &[][..],
            )?;
        }
        Ok(())
    }

    /// The first stored ICCID of the same length as `first` and `last`
    /// that lies between them (inclusive), if any: one range scan that
    /// tells whether a block of consecutive ICCIDs is still free.
    pub fn first_taken_in(&self, first: &Iccid, last: &Iccid) -> Result<Option<String>> {
        let width = first.as_str().len();
        let range = profile_key(first.as_str())..=profile_key(last.as_str());
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
    pub fn get(&self, iccid: &Iccid) -> Result<Option<ProfileRecord>> {
        match self.tree()?.get(profile_key(iccid.as_str()))? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    Error::internal(format!("corrupt record: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The stored package of a profile.
    pub fn package(&self, rec: &ProfileRecord) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree()?
            .get(rec.package_ref.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// A profile's history, oldest first.
    pub fn history(&self, iccid: &Iccid) -> Result<Vec<HistoryEntry>> {
        let first = self.get(iccid)?.and_then(|r| r.import_entry());
        let stored = self
            .tree()?
            .scan_prefix(key("h/", &[iccid.as_str().as_bytes(), b"/"]))
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v)
                    .map_err(|e| Error::internal(format!("corrupt history: {e}")))
            });
        first.map(Ok).into_iter().chain(stored).collect()
    }

    /// Profiles matching a filter, in ICCID order.
    pub fn list(&self, f: &ListFilter) -> Result<Vec<ProfileRecord>> {
        let mut out = vec![];
        for kv in self.tree()?.scan_prefix(b"p/") {
            let (_, v) = kv?;
            let r: ProfileRecord = serde_json::from_slice(&v)
                .map_err(|e| Error::internal(format!("corrupt record: {e}")))?;
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

    /// The ICCID an active MatchingID names.
    pub fn by_matching_id(&self, m: &str) -> Result<Option<Iccid>> {
        Ok(self
            .tree()?
            .get(matching_key(m))?
            .and_then(|v| Iccid::parse(&String::from_utf8_lossy(&v))))
    }

    /// ICCIDs of the open orders linked to an EID.
    pub fn pending_for_eid(&self, eid: &Eid) -> Result<Vec<Iccid>> {
        self.tree()?
            .scan_prefix(key("e/", &[eid.as_str().as_bytes(), b"/"]))
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt EID index"))
            })
            .collect()
    }

    /// ICCIDs in the available pool of (operator, type).
    pub fn pool(&self, operator: &str, profile_type: &str) -> Result<Vec<Iccid>> {
        self.tree()?
            .scan_prefix(pool_prefix(operator, profile_type))
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt pool entry"))
            })
            .collect()
    }

    /// Orders whose expiry is at or before `now`.
    pub fn due_expiries(&self, now: i64) -> Result<Vec<Iccid>> {
        let end = key(
            "x/",
            &[&((now.max(0) as u64).saturating_add(1)).to_be_bytes()],
        );
        self.tree()?
            .range(b"x/".to_vec()..end)
            .map(|kv| {
                let (_, v) = kv?;
                Iccid::parse(&String::from_utf8_lossy(&v))
                    .ok_or_else(|| Error::internal("corrupt expiry index"))
            })
            .collect()
    }

    /// Every raw index entry, for consistency checks: (key, value).
    pub fn index_entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        for p in ["a/", "m/", "e/", "x/"] {
            for kv in self.tree()?.scan_prefix(p.as_bytes()) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

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

    fn count_outbox(&self, operator: &str, delta: i64) {
        let mut m = self.inner.outbox.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(operator.to_owned()).or_insert(0) += delta;
    }

    /// Removes a delivered outbox item and its index entries.
    pub fn outbox_delivered(&self, id: u64) -> Result<()> {
        let r = self.tree()?.transaction(|tx| {
            let Some(v) = tx.remove(outbox_key(id))? else {
                return Ok(None);
            };
            let item: OutboxItem = decode(&v)?;
            for (k, _) in outbox_index_keys(&item) {
                tx.remove(k)?;
            }
            Ok(Some(item.operator))
        });
        let removed = self.watch(tx_result(r))?;
        self.inner.written.fetch_add(1, Ordering::SeqCst);
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
        let r = self.tree()?.transaction(|tx| {
            let Some(v) = tx.get(outbox_key(item.id))? else {
                return Ok(());
            };
            let old: OutboxItem = decode(&v)?;
            let mut it = old.clone();
            it.attempts += 1;
            it.last_error = Some(error.to_owned());
            it.next_attempt_ms = next_attempt_ms;
            let (old_keys, new_keys) = (outbox_index_keys(&old), outbox_index_keys(&it));
            for (k, _) in old_keys.iter().filter(|e| !new_keys.contains(e)) {
                tx.remove(k.as_slice())?;
            }
            for (k, v) in new_keys.iter().filter(|e| !old_keys.contains(e)) {
                tx.insert(k.as_slice(), v.as_slice())?;
            }
            tx.insert(outbox_key(it.id), encode(&it))?;
            Ok(())
        });
        self.watch(tx_result(r))?;
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
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
fn expired_after_delivery(tx: &TransactionalTree, r: &ProfileRecord) -> TxResult<bool> {
    let Some(last) = r.history_len.checked_sub(1) else {
        return Ok(false);
    };
    Ok(match tx.get(history_key(&r.iccid, last))? {
        Some(v) => {
            let h: HistoryEntry = decode(&v)?;
            h.event == Event::Expired && h.from == Some(State::Downloaded)
        }
        None => false,
    })
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
