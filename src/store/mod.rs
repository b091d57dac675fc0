//! The durable store: profiles, their lifecycle, history, the ES2+
//! notification outbox, the ES9+ sessions, Mobile Plans orders and
//! balances, behind one API whose every state change is one atomic
//! command.
//!
//! # Engines
//! The domain code here is written once, against [`engine::Engine`] and
//! the [`tx::Records`] of its transactions. [`sled`](self::sled) is the
//! embedded default (one process); [`pg`] is PostgreSQL, which several
//! nodes share. [`migrate`] moves a whole store from sled to PostgreSQL.
//!
//! # Durability
//! A command's transaction is committed when [`Store::apply`] returns, but
//! only [`Store::sync`] makes it durable on every engine; callers
//! acknowledge a transition only after it. Concurrent callers share one
//! flush (group commit).

pub mod balance;
pub mod bound;
mod commands;
pub mod engine;
pub mod lifecycle;
pub mod migrate;
pub mod mobileplans;
mod outbox;
pub mod pg;
mod queries;
pub mod record;
mod seen;
pub mod session;
pub mod sled;
pub mod tx;

use crate::error::{codes, Error, Result, StatusCode};
use crate::ids::{generate_matching_id, Eid, Iccid};
use engine::Engine;
use lifecycle::{Event, State};
pub use record::{
    HistoryEntry, IdemRecord, OutboxItem, PointStatus, ProfileRecord, RetryKind, RECORD_VERSION,
};
use sha2::{Digest, Sha256};
pub use sled::{index_keys, outbox_index_keys};
use std::sync::Arc;
use std::time::Duration;
use tx::{gsma, retry, Records, Then, TxResult};

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
    engine: Box<dyn Engine>,
    opts: StoreOptions,
}

/// 8.2.1/3.9: the ICCID is unknown to this caller.
pub(crate) fn unknown_iccid(iccid: &Iccid) -> Error {
    Error::refused(codes::ICCID_UNKNOWN, format!("ICCID {iccid} is unknown"))
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
    /// Opens (or creates) the embedded sled store at `path`.
    pub fn open(path: &std::path::Path, opts: StoreOptions) -> Result<Store> {
        let engine = sled::Sled::open(path, &opts)?;
        Ok(Store::with_engine(Box::new(engine), opts))
    }

    /// Opens the store the configuration names: sled in the data
    /// directory, or PostgreSQL, whose schema is brought up to date first
    /// when `migrate` is set (a schema this build does not know is
    /// refused either way).
    pub fn open_configured(
        config: &crate::config::Config,
        migrate: bool,
    ) -> std::result::Result<Store, String> {
        let opts = StoreOptions {
            order_ttl: config.order_ttl,
        };
        match config.store_config()? {
            crate::config::StoreConfig::Sled => {
                Store::open(&config.db_path(), opts).map_err(|e| e.to_string())
            }
            crate::config::StoreConfig::Postgres(pg) => {
                let engine = pg::engine::PgEngine::connect(
                    &pg,
                    pg::engine::PgOptions {
                        outbox_lease: Duration::from_secs(config.outbox.lease_secs.max(1)),
                        ..Default::default()
                    },
                    migrate,
                )
                .map_err(|e| e.to_string())?;
                Ok(Store::with_engine(Box::new(engine), opts))
            }
        }
    }

    /// A store on an opened engine.
    pub fn with_engine(engine: Box<dyn Engine>, opts: StoreOptions) -> Store {
        Store {
            inner: Arc::new(Inner { engine, opts }),
        }
    }

    /// The engine.
    pub(crate) fn engine(&self) -> &dyn Engine {
        self.inner.engine.as_ref()
    }

    /// The engine's name: `sled` or `postgres`.
    pub fn engine_name(&self) -> &'static str {
        self.engine().name()
    }

    /// Whether other nodes share this store (their writes wake nothing
    /// here: a worker waiting for them polls).
    pub fn shared(&self) -> bool {
        self.engine().shared()
    }

    /// The sled engine, for its consistency checks; `None` on another.
    pub fn as_sled(&self) -> Option<&sled::Sled> {
        self.engine().as_sled()
    }

    /// False while writes fail (a full disk, a lost database).
    pub fn writable(&self) -> bool {
        self.engine().writable()
    }

    /// After a failed write: tries to make the store writable again (the
    /// sled engine reopens its database once the disk takes writes).
    /// Returns whether the store is writable.
    pub fn recover(&self) -> Result<bool> {
        self.engine().recover()
    }

    /// Makes every transaction committed before this call durable.
    /// Concurrent callers share one flush.
    pub async fn sync(&self) -> Result<()> {
        self.engine().sync().await
    }

    /// Flushes synchronously (shutdown, CLI).
    pub fn flush_blocking(&self) -> Result<()> {
        self.engine().flush_blocking()
    }

    /// Flushes, and keeps what lives only in memory (RSP sessions on sled,
    /// SGP.22 §3.1.3) for the next start: the last call of a graceful
    /// shutdown.
    pub fn close(&self) -> Result<()> {
        self.engine().close()
    }

    /// Available profiles per (operator, profile type).
    pub fn available_by_pool(&self) -> Vec<((String, String), i64)> {
        self.engine().available_by_pool()
    }

    /// Profiles per state.
    pub fn counts(&self) -> Vec<(State, i64)> {
        self.engine().counts()
    }

    /// Adds profiles to the inventory as one atomic batch. Every ICCID must
    /// carry a valid Luhn digit and be new; the first bad one fails the
    /// whole batch with its position.
    pub fn add_profiles(&self, items: &[NewProfile], caller: &str, now: i64) -> Result<usize> {
        let mut seen = std::collections::HashSet::new();
        let bad = |i: usize, why: &str| {
            Error::invalid(
                codes::ICCID_INVALID,
                format!("item {}: ICCID {}: {why}", i + 1, items[i].iccid.as_str()),
            )
        };
        for (i, p) in items.iter().enumerate() {
            if !p.iccid.luhn_ok() {
                return Err(bad(i, "bad Luhn check digit"));
            }
            if !seen.insert(p.iccid.as_str()) {
                return Err(bad(i, "duplicate in batch"));
            }
            if !valid_label(&p.profile_type) || !valid_label(&p.operator) {
                return Err(bad(
                    i,
                    "profile type and operator must be 1-64 printable characters",
                ));
            }
        }
        match self.engine().insert_profiles(items, caller, now)? {
            Ok(n) => Ok(n),
            Err(i) => Err(bad(i, "already in inventory")),
        }
    }

    /// A stored response for an idempotent re-send, if any.
    pub fn idempotent_response(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.engine().idempotent_response(key)
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
        self.engine().rewrite_packages(&mut f, &mut progress)
    }

    /// Drops idempotency records older than `cutoff` (Unix seconds).
    pub fn prune_idempotency(&self, cutoff: i64) -> Result<usize> {
        self.engine().prune_idempotency(cutoff)
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
