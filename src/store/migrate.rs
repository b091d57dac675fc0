//! Moving a deployment's store from one engine to another (today: from
//! the embedded sled store to PostgreSQL), written once against two small
//! traits: a [`Source`] that lists its records in key order, in batches
//! after a key, and a [`Destination`] that reads records back by key,
//! inserts new ones without ever overwriting, and digests each of its
//! tables. The sled engine is a source (`store::sled`, which keeps its key
//! layout to itself), the PostgreSQL engine a destination (`store::pg`,
//! whose inserts reuse the row mapping of `store::pg::rows`).
//!
//! # What is copied
//! Every profile with its stored package (the bytes exactly as stored:
//! they are protected already, nothing is ever in clear), its history and
//! its kept Bound Profile Package; the profile types; the outbox items
//! (their ids kept: they are the functionCallIdentifiers the operators
//! see); the idempotency records; the balances; the GetBalance
//! transaction ids; the Mobile Plans orders (ids kept). RSP sessions are
//! not copied: a session is short-lived, and a device whose session is
//! gone starts a new one. A kept package the source itself would never
//! serve (unreadable, or of another record version) is left behind and
//! counted. Afterwards the destination's id sequence is moved above every
//! id the source may have issued, so new ids never collide.
//!
//! # Resuming
//! Each table is copied in key order (profiles by ICCID, with their
//! history and kept package, in one transaction per batch), and each batch
//! first reads back the keys it is about to write: a key the destination
//! lacks is inserted (`ON CONFLICT DO NOTHING`), a key it holds with the
//! same record is left alone, and a key it holds with a different record
//! is reported as a conflict and never overwritten. A run that was
//! interrupted and is started again therefore walks the same batches,
//! writes only what is missing, and ends with the same result.
//!
//! # Verifying
//! Every record has a canonical form: the JSON of the record (an object's
//! keys sorted), for a profile with the SHA-256 of its package in place of
//! the package. A table's checksum is the SHA-256 over the canonical forms
//! of its records in key order, each followed by a newline, and the run
//! compares, per table, the row count and checksum of what it read from
//! the source with those the destination computes from its own rows, read
//! back through its row mapping into the same record types.
//!
//! # Threads
//! The run is synchronous, like the store's API: the sled engine reads
//! its tree directly, and the PostgreSQL engine keeps the bridge of
//! `store::pg::engine` (each call blocks on the engine's own runtime), so
//! the same engine objects the server uses do the work and no second
//! async path over the SQL exists. The command line runs it on a blocking
//! thread (`spawn_blocking`), outside the runtime's workers.

use super::balance::BalanceRecord;
use super::bound::KeptPackage;
use super::mobileplans::MobilePlansOrder;
use super::{HistoryEntry, IdemRecord, OutboxItem, ProfileRecord};
use crate::error::{Error, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The tables of a store, as the PostgreSQL schema names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Profiles and their packages.
    Profiles,
    /// Profile history entries.
    ProfileHistory,
    /// Bound Profile Packages kept for a retry.
    KeptPackages,
    /// Profile types known per operator.
    ProfileTypes,
    /// ES2+ notifications waiting for delivery.
    Outbox,
    /// Stored answers for idempotent re-sends.
    Idempotency,
    /// SIM balances.
    Balances,
    /// GetBalance transaction ids and their last use.
    BalanceTransactionIds,
    /// Mobile Plans orders.
    MobilePlansOrders,
}

impl Table {
    /// Every table, in the order of the summary.
    pub const ALL: [Table; 9] = [
        Table::Profiles,
        Table::ProfileHistory,
        Table::KeptPackages,
        Table::ProfileTypes,
        Table::Outbox,
        Table::Idempotency,
        Table::Balances,
        Table::BalanceTransactionIds,
        Table::MobilePlansOrders,
    ];

    /// The tables a source lists (history entries and kept packages come
    /// with their profile), in copy order.
    pub const COPIED: [Table; 7] = [
        Table::Profiles,
        Table::ProfileTypes,
        Table::Outbox,
        Table::Idempotency,
        Table::Balances,
        Table::BalanceTransactionIds,
        Table::MobilePlansOrders,
    ];

    /// The table's name (the PostgreSQL table).
    pub fn name(self) -> &'static str {
        match self {
            Table::Profiles => "profiles",
            Table::ProfileHistory => "profile_history",
            Table::KeptPackages => "kept_packages",
            Table::ProfileTypes => "profile_types",
            Table::Outbox => "outbox",
            Table::Idempotency => "idempotency",
            Table::Balances => "balances",
            Table::BalanceTransactionIds => "balance_transaction_ids",
            Table::MobilePlansOrders => "mobileplans_orders",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A record's key in its table; keys of one table sort in the order the
/// source lists them (byte order of the text).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// An ICCID or another text key.
    Text(String),
    /// An outbox item's or Mobile Plans order's id.
    Id(u64),
    /// An idempotency record's SHA-256.
    Hash([u8; 32]),
    /// A profile type: (profile type, operator).
    Pair(String, String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Text(s) => f.write_str(s),
            Key::Id(n) => write!(f, "{n}"),
            Key::Hash(h) => f.write_str(&hex::encode(h)),
            Key::Pair(a, b) => write!(f, "{a}/{b}"),
        }
    }
}

/// One profile with everything stored under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileExport {
    /// The record.
    pub record: ProfileRecord,
    /// The stored (protected) package, exactly as stored.
    pub package: Vec<u8>,
    /// The stored history entries with their sequence numbers, in order
    /// (the import entry a record carries itself is not among them).
    pub history: Vec<(u64, HistoryEntry)>,
    /// The Bound Profile Package kept for a retry, if any.
    pub kept: Option<KeptPackage>,
    /// A kept package was stored but is unusable (unreadable, or of
    /// another record version): it is not copied.
    pub kept_unusable: bool,
}

/// A record of one table, as it is copied.
#[derive(Clone, Debug)]
pub enum Record {
    /// A profile with its package, history and kept package.
    Profile(Box<ProfileExport>),
    /// A known (profile type, operator).
    ProfileType {
        /// The profile type.
        profile_type: String,
        /// The operator.
        operator: String,
    },
    /// An outbox item.
    Outbox(OutboxItem),
    /// An idempotency record.
    Idempotency {
        /// SHA-256 of the call.
        key: [u8; 32],
        /// The stored answer.
        record: IdemRecord,
    },
    /// A balance.
    Balance(BalanceRecord),
    /// A GetBalance transaction id and its last use (Unix seconds).
    Use {
        /// The X-MS-DM-TransactionId.
        id: String,
        /// When it was last used.
        at: i64,
    },
    /// A Mobile Plans order.
    MpOrder(MobilePlansOrder),
}

/// The canonical JSON of a value: serde's form with object keys sorted.
fn canonical(v: serde_json::Value) -> Vec<u8> {
    // A Value always serialises.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A serde value of a record (these plain structs always serialise).
fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The canonical form of a profile row: the record and the SHA-256 of
/// its package.
pub fn canonical_profile(record: &ProfileRecord, package: &[u8]) -> Vec<u8> {
    canonical(json!({
        "record": value(record),
        "package_sha256": hex::encode(Sha256::digest(package)),
    }))
}

/// The canonical form of a history entry.
pub fn canonical_history(iccid: &str, seq: u64, entry: &HistoryEntry) -> Vec<u8> {
    canonical(json!({ "iccid": iccid, "seq": seq, "entry": value(entry) }))
}

/// The canonical form of a kept package.
pub fn canonical_kept(iccid: &str, kept: &KeptPackage) -> Vec<u8> {
    canonical(json!({ "iccid": iccid, "kept": value(kept) }))
}

/// The canonical form of a profile type.
pub fn canonical_type(profile_type: &str, operator: &str) -> Vec<u8> {
    canonical(json!({ "profile_type": profile_type, "operator": operator }))
}

/// The canonical form of an outbox item.
pub fn canonical_outbox(item: &OutboxItem) -> Vec<u8> {
    canonical(value(item))
}

/// The canonical form of an idempotency record.
pub fn canonical_idempotency(key: &[u8; 32], record: &IdemRecord) -> Vec<u8> {
    canonical(json!({ "key": hex::encode(key), "record": value(record) }))
}

/// The canonical form of a balance.
pub fn canonical_balance(b: &BalanceRecord) -> Vec<u8> {
    canonical(value(b))
}

/// The canonical form of a GetBalance transaction id's use.
pub fn canonical_use(id: &str, at: i64) -> Vec<u8> {
    canonical(json!({ "id": id, "at": at }))
}

/// The canonical form of a Mobile Plans order.
pub fn canonical_order(o: &MobilePlansOrder) -> Vec<u8> {
    canonical(value(o))
}

impl Record {
    /// The table the record is listed in.
    pub fn table(&self) -> Table {
        match self {
            Record::Profile(_) => Table::Profiles,
            Record::ProfileType { .. } => Table::ProfileTypes,
            Record::Outbox(_) => Table::Outbox,
            Record::Idempotency { .. } => Table::Idempotency,
            Record::Balance(_) => Table::Balances,
            Record::Use { .. } => Table::BalanceTransactionIds,
            Record::MpOrder(_) => Table::MobilePlansOrders,
        }
    }

    /// The record's key.
    pub fn key(&self) -> Key {
        match self {
            Record::Profile(p) => Key::Text(p.record.iccid.clone()),
            Record::ProfileType {
                profile_type,
                operator,
            } => Key::Pair(profile_type.clone(), operator.clone()),
            Record::Outbox(o) => Key::Id(o.id),
            Record::Idempotency { key, .. } => Key::Hash(*key),
            Record::Balance(b) => Key::Text(b.iccid.clone()),
            Record::Use { id, .. } => Key::Text(id.clone()),
            Record::MpOrder(o) => Key::Id(o.id),
        }
    }

    /// The canonical forms of the record, per table (a profile has rows in
    /// three).
    pub fn canonical(&self) -> Vec<(Table, Vec<u8>)> {
        match self {
            Record::Profile(p) => {
                let iccid = p.record.iccid.as_str();
                let mut out = vec![(Table::Profiles, canonical_profile(&p.record, &p.package))];
                out.extend(
                    p.history
                        .iter()
                        .map(|(seq, h)| (Table::ProfileHistory, canonical_history(iccid, *seq, h))),
                );
                if let Some(k) = &p.kept {
                    out.push((Table::KeptPackages, canonical_kept(iccid, k)));
                }
                out
            }
            Record::ProfileType {
                profile_type,
                operator,
            } => vec![(Table::ProfileTypes, canonical_type(profile_type, operator))],
            Record::Outbox(o) => vec![(Table::Outbox, canonical_outbox(o))],
            Record::Idempotency { key, record } => {
                vec![(Table::Idempotency, canonical_idempotency(key, record))]
            }
            Record::Balance(b) => vec![(Table::Balances, canonical_balance(b))],
            Record::Use { id, at } => vec![(Table::BalanceTransactionIds, canonical_use(id, *at))],
            Record::MpOrder(o) => vec![(Table::MobilePlansOrders, canonical_order(o))],
        }
    }

    /// The id the record uses from the shared id sequence, if any.
    fn id(&self) -> Option<u64> {
        match self {
            Record::Outbox(o) => Some(o.id),
            Record::MpOrder(o) => Some(o.id),
            _ => None,
        }
    }
}

/// A row count and a running SHA-256 over canonical forms.
#[derive(Clone, Debug, Default)]
pub struct TableDigest {
    rows: u64,
    hash: Sha256,
}

impl TableDigest {
    /// Adds one record's canonical form.
    pub fn add(&mut self, canonical: &[u8]) {
        self.rows += 1;
        self.hash.update(canonical);
        self.hash.update(b"\n");
    }

    /// The row count and the hex SHA-256.
    pub fn finish(self) -> (u64, String) {
        (self.rows, hex::encode(self.hash.finalize()))
    }
}

/// A digest per table.
#[derive(Clone, Debug, Default)]
pub struct Digests(BTreeMap<Table, TableDigest>);

impl Digests {
    /// Adds a record's canonical form to `table`'s digest.
    pub fn add(&mut self, table: Table, canonical: &[u8]) {
        self.0.entry(table).or_default().add(canonical);
    }

    /// The (row count, checksum) of every table.
    pub fn finish(self) -> BTreeMap<Table, (u64, String)> {
        let mut m = self.0;
        Table::ALL
            .iter()
            .map(|t| (*t, m.remove(t).unwrap_or_default().finish()))
            .collect()
    }
}

/// A store that lists its records in key order.
pub trait Source {
    /// Up to `limit` records of `table` (one of [`Table::COPIED`]) whose
    /// key sorts after `after` (from the first when `None`), in key order.
    fn export(&self, table: Table, after: Option<&Key>, limit: usize) -> Result<Vec<Record>>;
    /// A number above every id the store has issued to outbox items and
    /// Mobile Plans orders (the store may count it as issued).
    fn id_watermark(&self) -> Result<u64>;
}

/// A store that takes records without overwriting any.
pub trait Destination {
    /// The records of `table` it holds under `keys` (those it lacks are
    /// left out), as the source would list them.
    fn existing(&self, table: Table, keys: &[Key]) -> Result<Vec<Record>>;
    /// Inserts the records (all of one table), in one transaction, each
    /// only if no record holds its key or another of its unique values;
    /// returns the keys it inserted.
    fn insert(&self, records: &[&Record]) -> Result<Vec<Key>>;
    /// Makes every id it issues from now on greater than `above`.
    fn raise_ids(&self, above: u64) -> Result<()>;
    /// The digest of every table, read from its own rows.
    fn digests(&self) -> Result<Digests>;
}

/// How a run goes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Records (profiles with their history) per batch.
    pub batch_size: usize,
    /// Stop with an error after this many batches (tests of resuming).
    pub stop_after_batches: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 1000,
            stop_after_batches: None,
        }
    }
}

/// A record the destination holds differently.
#[derive(Clone, Debug)]
pub struct Conflict {
    /// The table.
    pub table: Table,
    /// The key.
    pub key: Key,
    /// What differs.
    pub why: &'static str,
}

/// Per table: how many records were written and how many were there.
#[derive(Clone, Copy, Debug, Default)]
pub struct Copied {
    /// Inserted by this run.
    pub inserted: u64,
    /// Already in the destination, equal.
    pub present: u64,
}

/// One line of the verification: a table's counts and checksums.
#[derive(Clone, Debug)]
pub struct Check {
    /// The table.
    pub table: Table,
    /// Rows in the source.
    pub source_rows: u64,
    /// SHA-256 over the source's canonical forms.
    pub source_sha256: String,
    /// Rows in the destination.
    pub dest_rows: u64,
    /// SHA-256 over the destination's canonical forms.
    pub dest_sha256: String,
}

impl Check {
    /// Counts and checksums agree.
    pub fn ok(&self) -> bool {
        self.source_rows == self.dest_rows && self.source_sha256 == self.dest_sha256
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Per copied table (profiles stand for their history and kept
    /// packages too).
    pub copied: BTreeMap<Table, Copied>,
    /// Records the destination holds differently (not overwritten).
    pub conflicts: Vec<Conflict>,
    /// How many conflicts there were in all (the list keeps the first
    /// few per table).
    pub conflict_count: u64,
    /// Kept packages left behind (unusable in the source too).
    pub kept_unusable: u64,
    /// The destination issues ids above this one from now on.
    pub ids_above: u64,
    /// The verification, per table.
    pub checks: Vec<Check>,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    /// The tables whose verification failed.
    pub fn differing(&self) -> Vec<Table> {
        self.checks
            .iter()
            .filter(|c| !c.ok())
            .map(|c| c.table)
            .collect()
    }

    /// Copied, verified, no conflict.
    pub fn ok(&self) -> bool {
        self.conflict_count == 0 && self.differing().is_empty()
    }
}

/// Where a run is, for progress lines.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The table being copied.
    pub table: Table,
    /// Records of it done so far.
    pub done: u64,
    /// Batches done so far, all tables.
    pub batches: usize,
    /// The table is done.
    pub finished: bool,
}

/// Conflicts listed per table at most (the rest are counted).
const CONFLICTS_LISTED: usize = 10;

/// Copies everything from `src` to `dst`, then verifies. An error stops
/// the run (what was committed stays, and a new run continues); the
/// conflicts and the verification are in the report.
pub fn run(
    src: &dyn Source,
    dst: &dyn Destination,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report> {
    let start = Instant::now();
    let limit = opts.batch_size.max(1);
    let mut report = Report::default();
    let mut source = Digests::default();
    let mut batches = 0usize;
    let mut max_id = 0u64;
    for table in Table::COPIED {
        let mut after: Option<Key> = None;
        let mut done = 0u64;
        let mut listed = 0usize;
        loop {
            let batch = src.export(table, after.as_ref(), limit)?;
            let Some(last) = batch.last() else {
                break;
            };
            after = Some(last.key());
            let keys: Vec<Key> = batch.iter().map(Record::key).collect();
            let existing: HashMap<Key, Vec<(Table, Vec<u8>)>> = dst
                .existing(table, &keys)?
                .iter()
                .map(|r| (r.key(), r.canonical()))
                .collect();
            let mut new = Vec::new();
            let copied = report.copied.entry(table).or_default();
            for r in &batch {
                let forms = r.canonical();
                for (t, c) in &forms {
                    source.add(*t, c);
                }
                if let Record::Profile(p) = r {
                    report.kept_unusable += u64::from(p.kept_unusable);
                }
                max_id = max_id.max(r.id().unwrap_or(0));
                match existing.get(&r.key()) {
                    None => new.push(r),
                    Some(there) if *there == forms => copied.present += 1,
                    Some(_) => {
                        report.conflict_count += 1;
                        if listed < CONFLICTS_LISTED {
                            listed += 1;
                            report.conflicts.push(Conflict {
                                table,
                                key: r.key(),
                                why: "the destination holds a different record under this key",
                            });
                        }
                    }
                }
            }
            if !new.is_empty() {
                let inserted: std::collections::HashSet<Key> =
                    dst.insert(&new)?.into_iter().collect();
                for r in &new {
                    if inserted.contains(&r.key()) {
                        copied.inserted += 1;
                    } else {
                        report.conflict_count += 1;
                        if listed < CONFLICTS_LISTED {
                            listed += 1;
                            report.conflicts.push(Conflict {
                                table,
                                key: r.key(),
                                why: "another record in the destination holds one of its \
                                      unique values",
                            });
                        }
                    }
                }
            }
            done += batch.len() as u64;
            batches += 1;
            progress(&Progress {
                table,
                done,
                batches,
                finished: false,
            });
            if opts.stop_after_batches.is_some_and(|n| batches >= n) {
                return Err(Error::internal(format!(
                    "stopped after {batches} batch(es) as asked; run the command again to continue"
                )));
            }
            if batch.len() < limit {
                break;
            }
        }
        progress(&Progress {
            table,
            done,
            batches,
            finished: true,
        });
    }
    report.ids_above = max_id.max(src.id_watermark()?);
    dst.raise_ids(report.ids_above)?;
    let theirs = dst.digests()?.finish();
    for (table, (source_rows, source_sha256)) in source.finish() {
        let (dest_rows, dest_sha256) = theirs.get(&table).cloned().unwrap_or_default();
        report.checks.push(Check {
            table,
            source_rows,
            source_sha256,
            dest_rows,
            dest_sha256,
        });
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_cover_every_table_and_depend_on_order() {
        let mut a = Digests::default();
        a.add(Table::Outbox, b"1");
        a.add(Table::Outbox, b"2");
        let mut b = Digests::default();
        b.add(Table::Outbox, b"2");
        b.add(Table::Outbox, b"1");
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a.len(), Table::ALL.len());
        assert_eq!(a[&Table::Outbox].0, 2);
        assert_ne!(a[&Table::Outbox].1, b[&Table::Outbox].1);
        assert_eq!(a[&Table::Profiles], b[&Table::Profiles]);
    }

    #[test]
    fn canonical_forms_sort_keys() {
        let c = canonical_use("x", 5);
        assert_eq!(c, br#"{"at":5,"id":"x"}"#);
    }
}
