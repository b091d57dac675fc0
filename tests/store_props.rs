//! Property tests of the durable lifecycle store (`smdpplus::store`).
//!
//! Random sequences of ES2+ commands (and the server's own expiry and the
//! admin expiry change) run against a real [`Store`] on a fresh sled
//! directory. After every step the whole store is snapshotted (records,
//! histories, raw index entries) and the lifecycle invariants are checked:
//!
//! - (a) only legal transitions: every state change, and every history entry,
//!   is a triple of `lifecycle::table()`; a failed command changes nothing;
//! - (b) EID and MatchingID shape per state, and an order's EID (and
//!   MatchingID) never changes once set until the order is cancelled;
//! - (c) monotonic counters: `history_len` never decreases, the attempt
//!   counters only go back to zero through a cancel;
//! - (d) indexes consistent with the records: raw index entries, per-state
//!   counts, pools, MatchingID lookup, open orders per EID, due expiries.

use proptest::prelude::*;
use smdpplus::error::{codes, Blame};
use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::lifecycle::{self, Event, State};
use smdpplus::store::{
    index_keys, Applied, Command, Ctx, FinalStatus, HistoryEntry, ListFilter, NewProfile,
    OutboxItem, ProfileRecord, Store, StoreOptions, POINT_ELIGIBILITY, POINT_ORDER_CANCELLED,
};
use std::collections::{BTreeMap, BTreeSet};

/// Operators of the inventory.
const OPERATORS: [&str; 2] = ["OP-ONE", "OP-TWO"];
/// Profile types known to the tests: TYPE-A is used by both operators (one
/// pool each), TYPE-B only by OP-ONE, TYPE-C only by OP-TWO, TYPE-Z by nobody.
const TYPES: [&str; 4] = ["TYPE-A", "TYPE-B", "TYPE-C", "TYPE-Z"];
/// The inventory: (operator index, type index), `PER_POOL` profiles each.
const POOLS: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 2)];
const PER_POOL: usize = 3;
const INVENTORY: usize = POOLS.len() * PER_POOL;
const EIDS: [&str; 3] = [
    "89049032123451234512345678901235",
    "89049032123451234512345678901243",
    "89049032123451234512345678901250",
];
/// Operator-supplied MatchingIDs, few enough to collide; "" is the empty
/// MatchingID (§5.3.2), which needs an EID.
const MATCHING_IDS: [&str; 3] = ["MATCH-00001", "MATCH-00002", ""];
const T0: i64 = 1_700_000_000;
const TTL: i64 = 7 * 24 * 3600;

/// Profile `i` of the inventory; `i == INVENTORY` is a well-formed ICCID
/// that is not in the inventory.
fn iccid(i: usize) -> Iccid {
    Iccid::with_check_digit(&format!("894400000000{i:06}")).expect("18 digits")
}

fn eid(i: usize) -> Eid {
    Eid::parse(EIDS[i]).expect("32 digits")
}

fn pool_of(i: usize) -> (&'static str, &'static str) {
    let (o, t) = POOLS[i / PER_POOL];
    (OPERATORS[o], TYPES[t])
}

fn inventory() -> Vec<NewProfile> {
    (0..INVENTORY)
        .map(|i| {
            let (operator, profile_type) = pool_of(i);
            NewProfile {
                iccid: iccid(i),
                profile_type: profile_type.to_owned(),
                operator: operator.to_owned(),
                package: vec![0x30, 0x03, 0x02, 0x01, i as u8],
            }
        })
        .collect()
}

fn open_store(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open store")
}

/// Reopens a store that was just dropped. sled 0.34 releases its file lock
/// from a background flusher thread, possibly after `Drop` returned
/// (spacejam/sled#1234, #1289), so an immediate reopen can fail with
/// `WouldBlock` under load: retry for up to a second.
fn reopen_store(dir: &std::path::Path) -> Store {
    let mut last = None;
    for _ in 0..20 {
        match Store::open(dir, StoreOptions::default()) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("reopen store: {last:?}");
}

// ---------------------------------------------------------------------------
// Operations

/// Which profile an operation names.
#[derive(Clone, Debug)]
struct Sel {
    /// Profile index (`INVENTORY` is the unknown ICCID), or the index among
    /// the candidates when `fitting`.
    p: usize,
    /// Choose among the profiles in a state where the operation can succeed
    /// (so that deep states are reached); otherwise profile `p` as is.
    fitting: bool,
}

/// How a DownloadOrder names its profile.
#[derive(Clone, Debug)]
enum Target {
    /// By ICCID, optionally with a profile type (right or wrong).
    Iccid { sel: Sel, with_type: Option<usize> },
    /// By profile type, from the caller's pool.
    Type { t: usize },
}

/// An EID or MatchingID given with a command.
#[derive(Clone, Debug)]
enum Given {
    /// The one the order currently has (read from the store just before).
    Current,
    /// One from the fixed set (right or wrong by chance).
    Pick(usize),
    /// None given.
    Missing,
}

#[derive(Clone, Debug)]
enum Op {
    Download {
        /// The caller when ordering by type.
        operator: usize,
        /// By ICCID: the owner, or (rarely) the other operator.
        wrong_operator: bool,
        target: Target,
        eid: Option<usize>,
    },
    Confirm {
        sel: Sel,
        wrong_operator: bool,
        eid: Given,
        /// `None`: let the SM-DP+ generate one.
        matching_id: Option<usize>,
        cc: bool,
        smds: bool,
        release: bool,
    },
    Release {
        sel: Sel,
        wrong_operator: bool,
    },
    Cancel {
        sel: Sel,
        wrong_operator: bool,
        eid: Given,
        matching_id: Given,
        available: bool,
    },
    /// Expire a profile; when `sel.fitting`, one of the orders the expiry
    /// index reports as due, like the server's sweeper.
    Expire {
        sel: Sel,
    },
    SetExpiry {
        sel: Sel,
        wrong_operator: bool,
        delta: i64,
    },
}

/// One step: advance the clock, then run the operation.
#[derive(Clone, Debug)]
struct Step {
    advance: i64,
    op: Op,
}

/// A profile selector: mostly a fitting profile, sometimes any profile or
/// the unknown ICCID.
fn sel() -> impl Strategy<Value = Sel> {
    (
        prop_oneof![12 => 0..INVENTORY, 1 => Just(INVENTORY)],
        proptest::bool::weighted(0.75),
    )
        .prop_map(|(p, fitting)| Sel { p, fitting })
}

fn wrong() -> impl Strategy<Value = bool> {
    proptest::bool::weighted(0.1)
}

fn given(n: usize) -> impl Strategy<Value = Given> {
    prop_oneof![
        6 => Just(Given::Current),
        2 => (0..n).prop_map(Given::Pick),
        1 => Just(Given::Missing),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let download = (
        0..OPERATORS.len(),
        wrong(),
        prop_oneof![
            (sel(), proptest::option::weighted(0.2, 0..TYPES.len()))
                .prop_map(|(sel, with_type)| Target::Iccid { sel, with_type }),
            (0..TYPES.len()).prop_map(|t| Target::Type { t }),
        ],
        proptest::option::weighted(0.6, 0..EIDS.len()),
    )
        .prop_map(|(operator, wrong_operator, target, eid)| Op::Download {
            operator,
            wrong_operator,
            target,
            eid,
        });
    let confirm = (
        sel(),
        wrong(),
        given(EIDS.len()),
        proptest::option::weighted(0.5, 0..MATCHING_IDS.len()),
        any::<bool>(),
        proptest::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(
            |(sel, wrong_operator, eid, matching_id, cc, smds, release)| Op::Confirm {
                sel,
                wrong_operator,
                eid,
                matching_id,
                cc,
                smds,
                release,
            },
        );
    let release = (sel(), wrong()).prop_map(|(sel, wrong_operator)| Op::Release {
        sel,
        wrong_operator,
    });
    let cancel = (
        sel(),
        wrong(),
        given(EIDS.len()),
        given(MATCHING_IDS.len()),
        any::<bool>(),
    )
        .prop_map(
            |(sel, wrong_operator, eid, matching_id, available)| Op::Cancel {
                sel,
                wrong_operator,
                eid,
                matching_id,
                available,
            },
        );
    let expire = sel().prop_map(|sel| Op::Expire { sel });
    let set_expiry = (
        sel(),
        wrong(),
        prop_oneof![
            Just(-100i64),
            Just(-1),
            Just(0),
            Just(1),
            Just(3600),
            Just(TTL)
        ],
    )
        .prop_map(|(sel, wrong_operator, delta)| Op::SetExpiry {
            sel,
            wrong_operator,
            delta,
        });
    prop_oneof![
        4 => download,
        4 => confirm,
        2 => release,
        2 => cancel,
        2 => expire,
        1 => set_expiry,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            12 => 0i64..600,
            1 => Just(TTL),
            1 => Just(TTL + 1),
            1 => Just(30 * 24 * 3600),
        ],
        op(),
    )
        .prop_map(|(advance, op)| Step { advance, op })
}

/// Resolves a selector against the state before the step: with `fitting`,
/// the `p`-th (modulo) profile whose state satisfies `fits`, if any.
fn pick(sel: &Sel, before: &Snapshot, fits: impl Fn(&ProfileRecord) -> bool) -> Iccid {
    if sel.fitting {
        let candidates: Vec<&ProfileRecord> = before.records.values().filter(|r| fits(r)).collect();
        if !candidates.is_empty() {
            let r = candidates[sel.p % candidates.len()];
            return Iccid::parse(&r.iccid).expect("stored ICCID parses");
        }
    }
    iccid(sel.p)
}

/// The operator that owns the profile (or the other one).
fn owner(iccid: &Iccid, before: &Snapshot, wrong_operator: bool) -> String {
    let right = before
        .records
        .get(iccid.as_str())
        .map_or(OPERATORS[0], |r| r.operator.as_str());
    let o = if wrong_operator {
        OPERATORS
            .iter()
            .find(|o| **o != right)
            .expect("two operators")
    } else {
        right
    };
    o.to_owned()
}

/// Turns an operation into a store command, reading what it needs (the
/// target, the current EID and MatchingID, the due orders) from the state
/// before, and the history event a success must record.
fn command(op: &Op, before: &Snapshot, store: &Store, now: i64) -> (Command, Option<Event>) {
    let current = |i: &Iccid| before.records.get(i.as_str());
    let given_eid = |g: &Given, i: &Iccid| match g {
        Given::Current => current(i)
            .and_then(|r| r.eid.as_deref())
            .and_then(Eid::parse),
        Given::Pick(n) => Some(eid(*n)),
        Given::Missing => None,
    };
    match op {
        Op::Download {
            operator,
            wrong_operator,
            target,
            eid: e,
        } => {
            let (operator, iccid, profile_type) = match target {
                Target::Iccid { sel, with_type } => {
                    let i = pick(sel, before, |r| r.state == State::Available);
                    (
                        owner(&i, before, *wrong_operator),
                        Some(i),
                        with_type.map(|t| TYPES[t].to_owned()),
                    )
                }
                Target::Type { t } => (
                    OPERATORS[*operator].to_owned(),
                    None,
                    Some(TYPES[*t].to_owned()),
                ),
            };
            let event = if e.is_some() {
                Event::DownloadOrderLinked
            } else {
                Event::DownloadOrderAllocated
            };
            (
                Command::DownloadOrder {
                    operator,
                    eid: e.map(eid),
                    iccid,
                    profile_type,
                },
                Some(event),
            )
        }
        Op::Confirm {
            sel,
            wrong_operator,
            eid: e,
            matching_id,
            cc,
            smds,
            release,
        } => {
            let i = pick(sel, before, |r| {
                matches!(r.state, State::Allocated | State::Linked)
            });
            (
                Command::ConfirmOrder {
                    operator: owner(&i, before, *wrong_operator),
                    eid: given_eid(e, &i),
                    iccid: i,
                    matching_id: matching_id.map(|m| MATCHING_IDS[m].to_owned()),
                    cc_hashes: if *cc { vec!["ab".repeat(32)] } else { vec![] },
                    smds_address: smds.then(|| "smds.example.com".to_owned()),
                    release: *release,
                },
                Some(if *release {
                    Event::ConfirmOrderAndRelease
                } else {
                    Event::ConfirmOrder
                }),
            )
        }
        Op::Release {
            sel,
            wrong_operator,
        } => {
            let i = pick(sel, before, |r| {
                matches!(r.state, State::Confirmed | State::Released)
            });
            (
                Command::ReleaseProfile {
                    operator: owner(&i, before, *wrong_operator),
                    iccid: i,
                },
                Some(Event::ReleaseProfile),
            )
        }
        Op::Cancel {
            sel,
            wrong_operator,
            eid: e,
            matching_id,
            available,
        } => {
            let i = pick(sel, before, |r| {
                r.state.is_reserved() || matches!(r.state, State::Released | State::Error)
            });
            let matching_id = match matching_id {
                Given::Current => current(&i).and_then(|r| r.matching_id.clone()),
                Given::Pick(n) => Some(MATCHING_IDS[*n].to_owned()),
                Given::Missing => None,
            };
            let (final_status, event) = if *available {
                (FinalStatus::Available, Event::CancelOrderAvailable)
            } else {
                (FinalStatus::Unavailable, Event::CancelOrderUnavailable)
            };
            (
                Command::CancelOrder {
                    operator: owner(&i, before, *wrong_operator),
                    eid: given_eid(e, &i),
                    iccid: i,
                    matching_id,
                    final_status,
                },
                Some(event),
            )
        }
        Op::Expire { sel } => {
            let due = store.due_expiries(now).expect("due expiries");
            let target = if sel.fitting && !due.is_empty() {
                due[sel.p % due.len()].clone()
            } else {
                iccid(sel.p)
            };
            (Command::Expire { iccid: target }, Some(Event::Expired))
        }
        Op::SetExpiry {
            sel,
            wrong_operator,
            delta,
        } => {
            let i = pick(sel, before, |r| r.state.can_expire());
            (
                Command::SetExpiry {
                    operator: owner(&i, before, *wrong_operator),
                    iccid: i,
                    expires_at: now + delta,
                },
                None,
            )
        }
    }
}

fn caller(cmd: &Command) -> &str {
    match cmd {
        Command::DownloadOrder { operator, .. }
        | Command::ConfirmOrder { operator, .. }
        | Command::CancelOrder { operator, .. }
        | Command::ReleaseProfile { operator, .. }
        | Command::SetExpiry { operator, .. } => operator,
        Command::Expire { .. }
        | Command::AuthenticateClient { .. }
        | Command::CheckConfirmationCode { .. }
        | Command::BppDelivered { .. }
        | Command::InstallResult { .. }
        | Command::DownloadCancelled { .. } => "smdpplus",
    }
}

// ---------------------------------------------------------------------------
// Snapshots and invariants

/// Everything observable about the store.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    /// By ICCID.
    records: BTreeMap<String, ProfileRecord>,
    /// By ICCID.
    histories: BTreeMap<String, Vec<HistoryEntry>>,
    /// Raw index entries, sorted.
    index: Vec<(Vec<u8>, Vec<u8>)>,
    /// ES2+ notifications waiting for delivery, oldest first.
    outbox: Vec<OutboxItem>,
}

fn snapshot(store: &Store) -> Snapshot {
    let list = store.list(&ListFilter::default()).expect("list");
    let mut records = BTreeMap::new();
    let mut histories = BTreeMap::new();
    for r in list {
        let i = Iccid::parse(&r.iccid).expect("stored ICCID parses");
        histories.insert(r.iccid.clone(), store.history(&i).expect("history"));
        records.insert(r.iccid.clone(), r);
    }
    let mut index = store.index_entries().expect("index entries");
    index.sort();
    Snapshot {
        records,
        histories,
        index,
        outbox: store.outbox().expect("outbox"),
    }
}

fn in_table(from: State, event: Event, to: State) -> bool {
    lifecycle::table().contains(&(from, event, to))
}

/// The per-record shape of each state (property b) and its history (a).
fn check_record(r: &ProfileRecord, h: &[HistoryEntry]) -> Result<(), TestCaseError> {
    use State::*;
    let ctx = format!("{r:?}");
    // (b) EID only where an order has one.
    if r.eid.is_some() {
        prop_assert!(
            matches!(
                r.state,
                Linked | Confirmed | Released | Downloaded | Installed | Error
            ),
            "EID in state {}: {ctx}",
            r.state
        );
    }
    match r.state {
        Available | Unavailable => {
            prop_assert_eq!(&r.eid, &None, "{}", ctx);
            prop_assert_eq!(&r.matching_id, &None, "{}", ctx);
            prop_assert_eq!(r.expires_at, None, "{}", ctx);
            prop_assert!(r.cc_hashes.is_empty(), "cc hashes left: {}", ctx);
            prop_assert_eq!(&r.smds_address, &None, "{}", ctx);
            prop_assert_eq!((r.download_attempts, r.cc_attempts), (0, 0), "{}", ctx);
        }
        Allocated => {
            prop_assert_eq!(&r.eid, &None, "{}", ctx);
            prop_assert_eq!(&r.matching_id, &None, "{}", ctx);
        }
        Linked => {
            prop_assert!(r.eid.is_some(), "Linked without EID: {}", ctx);
            prop_assert_eq!(&r.matching_id, &None, "{}", ctx);
        }
        Confirmed | Released => {
            prop_assert!(
                r.matching_id.is_some(),
                "confirmed without MatchingID: {}",
                ctx
            );
        }
        _ => {}
    }
    if r.matching_id.as_deref() == Some("") {
        prop_assert!(r.eid.is_some(), "empty MatchingID without EID: {}", ctx);
    }
    if r.smds_address.is_some() {
        prop_assert!(r.eid.is_some(), "SM-DS registration without EID: {}", ctx);
    }
    if r.state.can_expire() {
        prop_assert!(r.expires_at.is_some(), "open order without expiry: {}", ctx);
    }
    if r.state == Error {
        prop_assert!(r.error_reason.is_some(), "Error without reason: {}", ctx);
    }
    // (a) + (c) the history is a legal walk through the table that ends in
    // the record's state, and history_len counts it.
    prop_assert_eq!(r.history_len, h.len() as u64, "history_len: {}", ctx);
    prop_assert!(!h.is_empty(), "no history: {}", ctx);
    prop_assert_eq!(h[0].event, Event::Imported);
    prop_assert_eq!(h[0].from, None);
    prop_assert_eq!(h[0].to, Available);
    for w in h.windows(2) {
        prop_assert_eq!(w[1].from, Some(w[0].to), "history chain: {:?}", h);
        prop_assert!(
            in_table(w[0].to, w[1].event, w[1].to),
            "history entry not in the table: {:?}",
            w[1]
        );
        prop_assert!(w[1].at >= w[0].at, "history goes back in time: {:?}", h);
    }
    prop_assert_eq!(
        h[h.len() - 1].to,
        r.state,
        "history ends elsewhere: {}",
        ctx
    );
    Ok(())
}

/// Whole-store invariants: records (b) and indexes (d).
fn check_store(store: &Store, s: &Snapshot, now: i64) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.records.len(), INVENTORY);
    for (i, r) in &s.records {
        check_record(r, &s.histories[i])?;
    }

    // Non-empty MatchingIDs are unique.
    let mut seen = BTreeMap::new();
    for r in s.records.values() {
        if let Some(m) = r.matching_id.as_deref().filter(|m| !m.is_empty()) {
            if let Some(other) = seen.insert(m.to_owned(), r.iccid.clone()) {
                prop_assert!(false, "MatchingID {} on {} and {}", m, other, r.iccid);
            }
        }
    }

    // (d) raw index entries are exactly the ones the records imply.
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = s
        .records
        .values()
        .flat_map(|r| {
            index_keys(r)
                .into_iter()
                .map(move |k| (k, r.iccid.as_bytes().to_vec()))
        })
        .collect();
    expected.sort();
    let keys: BTreeSet<_> = expected.iter().map(|(k, _)| k).collect();
    prop_assert_eq!(
        keys.len(),
        expected.len(),
        "two records imply one index key"
    );
    if s.index != expected {
        let show = |v: &[(Vec<u8>, Vec<u8>)]| -> Vec<String> {
            v.iter()
                .map(|(k, v)| {
                    format!(
                        "{} -> {}",
                        String::from_utf8_lossy(k).escape_debug(),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect()
        };
        prop_assert!(
            false,
            "index entries differ\nstored:   {:#?}\nexpected: {:#?}",
            show(&s.index),
            show(&expected)
        );
    }

    // Per-state counts (kept in memory) match the records.
    let mut per_state: BTreeMap<State, i64> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for r in s.records.values() {
        *per_state.get_mut(&r.state).expect("every state") += 1;
    }
    let counts: BTreeMap<State, i64> = store.counts().into_iter().collect();
    prop_assert_eq!(counts, per_state);

    // Pools hold exactly the Available profiles of (operator, type).
    for o in OPERATORS {
        for t in TYPES {
            let mut pool: Vec<String> = store
                .pool(o, t)
                .expect("pool")
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect();
            pool.sort();
            let want: Vec<String> = s
                .records
                .values()
                .filter(|r| r.state == State::Available && r.operator == o && r.profile_type == t)
                .map(|r| r.iccid.clone())
                .collect();
            prop_assert_eq!(pool, want, "pool {} {}", o, t);
        }
    }

    // MatchingID lookup agrees with the records.
    let mut names: BTreeSet<String> = MATCHING_IDS.iter().map(|m| (*m).to_owned()).collect();
    names.extend(s.records.values().filter_map(|r| r.matching_id.clone()));
    for m in &names {
        let want = s
            .records
            .values()
            .find(|r| !m.is_empty() && r.matching_id.as_deref() == Some(m.as_str()))
            .map(|r| r.iccid.clone());
        let got = store
            .by_matching_id(m)
            .expect("by_matching_id")
            .map(|i| i.as_str().to_owned());
        prop_assert_eq!(got, want, "by_matching_id({:?})", m);
    }

    // Open orders per EID.
    for e in EIDS {
        let mut got: Vec<String> = store
            .pending_for_eid(&Eid::parse(e).expect("EID"))
            .expect("pending_for_eid")
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect();
        got.sort();
        let want: Vec<String> = s
            .records
            .values()
            .filter(|r| r.eid.as_deref() == Some(e) && r.state.is_pending_order())
            .map(|r| r.iccid.clone())
            .collect();
        prop_assert_eq!(got, want, "pending_for_eid({})", e);
    }

    // Due expiries: open orders that can expire, expiry at or before now.
    for at in [now, now + TTL] {
        let mut got: Vec<String> = store
            .due_expiries(at)
            .expect("due_expiries")
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect();
        got.sort();
        let want: Vec<String> = s
            .records
            .values()
            .filter(|r| r.state.can_expire() && r.expires_at.is_some_and(|t| t <= at))
            .map(|r| r.iccid.clone())
            .collect();
        prop_assert_eq!(got, want, "due_expiries({})", at);
    }
    Ok(())
}

/// Per-step invariants: what may change between two snapshots.
fn check_step(
    cmd: &Command,
    event: Option<Event>,
    result: &smdpplus::error::Result<Applied>,
    before: &Snapshot,
    after: &Snapshot,
    now: i64,
) -> Result<(), TestCaseError> {
    let applied = match result {
        Err(e) => {
            prop_assert!(e.blame != Blame::Internal, "internal error: {}", e);
            // (a) A failed command changes nothing.
            prop_assert!(before == after, "failed command ({}) changed the store", e);
            return Ok(());
        }
        Ok(a) => a,
    };
    let id = applied.record.iccid.clone();
    let old = before.records.get(&id).expect("applied to a known profile");
    let new = after.records.get(&id).expect("still there");
    prop_assert_eq!(&applied.record, new, "returned record differs from stored");
    prop_assert_eq!(applied.from, old.state);

    // Only the target changed.
    for (i, r) in &before.records {
        if *i != id {
            prop_assert_eq!(r, &after.records[i], "another record changed");
            prop_assert_eq!(&before.histories[i], &after.histories[i]);
        }
    }

    // The command acted on the profile it named, or on one of the
    // caller's pool.
    match cmd {
        Command::DownloadOrder {
            iccid: Some(i),
            profile_type,
            ..
        } => {
            prop_assert_eq!(i.as_str(), id.as_str());
            if let Some(t) = profile_type {
                prop_assert_eq!(&old.profile_type, t);
            }
        }
        Command::DownloadOrder {
            operator,
            iccid: None,
            profile_type,
            ..
        } => {
            prop_assert_eq!(old.state, State::Available);
            prop_assert_eq!(&old.operator, operator);
            prop_assert_eq!(Some(&old.profile_type), profile_type.as_ref());
        }
        Command::ConfirmOrder { iccid, .. }
        | Command::CancelOrder { iccid, .. }
        | Command::ReleaseProfile { iccid, .. }
        | Command::Expire { iccid }
        | Command::SetExpiry { iccid, .. }
        | Command::AuthenticateClient { iccid, .. }
        | Command::CheckConfirmationCode { iccid, .. }
        | Command::BppDelivered { iccid, .. }
        | Command::InstallResult { iccid, .. }
        | Command::DownloadCancelled { iccid, .. } => prop_assert_eq!(iccid.as_str(), id.as_str()),
    }
    if let Some(op) = match cmd {
        Command::Expire { .. }
        | Command::AuthenticateClient { .. }
        | Command::CheckConfirmationCode { .. }
        | Command::BppDelivered { .. }
        | Command::InstallResult { .. }
        | Command::DownloadCancelled { .. } => None,
        Command::DownloadOrder { operator, .. }
        | Command::ConfirmOrder { operator, .. }
        | Command::CancelOrder { operator, .. }
        | Command::ReleaseProfile { operator, .. }
        | Command::SetExpiry { operator, .. } => Some(operator),
    } {
        prop_assert_eq!(&old.operator, op, "acted on another operator's profile");
    }

    // (a) History grew by at most one legal entry, for exactly the
    // observed state change.
    let (hb, ha) = (&before.histories[&id], &after.histories[&id]);
    prop_assert!(ha.starts_with(hb), "history was rewritten");
    let added = &ha[hb.len()..];
    prop_assert!(
        added.len() <= 1,
        "{} history entries for one command",
        added.len()
    );
    prop_assert_eq!(applied.changed, added.len() == 1);
    match added.first() {
        Some(h) => {
            prop_assert_eq!(h.from, Some(old.state));
            prop_assert_eq!(h.to, new.state);
            prop_assert_eq!(Some(h.event), event, "unexpected event");
            prop_assert!(
                in_table(old.state, h.event, new.state),
                "illegal transition {:?} --{:?}--> {:?}",
                old.state,
                h.event,
                new.state
            );
            prop_assert_eq!(h.at, now);
            prop_assert_eq!(h.caller.as_str(), caller(cmd));
        }
        None => {
            prop_assert_eq!(old.state, new.state, "state changed without history");
            let noop_release =
                matches!(cmd, Command::ReleaseProfile { .. }) && old.state == State::Released;
            let set_expiry = matches!(cmd, Command::SetExpiry { .. });
            prop_assert!(noop_release || set_expiry, "unexpected no-op");
            if noop_release {
                prop_assert_eq!(old, new, "no-op release changed the record");
            }
            if let Command::SetExpiry { expires_at, .. } = cmd {
                let mut want = old.clone();
                want.expires_at = Some(*expires_at);
                want.updated_at = new.updated_at;
                prop_assert_eq!(&want, new, "SetExpiry changed more than the expiry");
            }
        }
    }

    // Cancel and expiry queue exactly one notification for the operator;
    // nothing else does here.
    prop_assert!(
        after.outbox.starts_with(&before.outbox),
        "outbox items changed"
    );
    let queued = &after.outbox[before.outbox.len()..];
    let point = match cmd {
        Command::CancelOrder { .. } => Some(POINT_ORDER_CANCELLED),
        Command::Expire { .. } => Some(POINT_ELIGIBILITY),
        _ => None,
    };
    match (queued, point) {
        ([], None) => {}
        ([item], Some(point)) => {
            prop_assert_eq!(item.point, point);
            prop_assert_eq!(&item.iccid, &id);
            prop_assert_eq!(&item.operator, &new.operator);
            prop_assert_eq!(&item.eid, &old.eid);
        }
        _ => prop_assert!(false, "unexpected notifications: {:?}", queued),
    }

    // (c) Monotonic counters.
    prop_assert!(new.history_len >= old.history_len);
    let cancelled = matches!(new.state, State::Available | State::Unavailable)
        && matches!(cmd, Command::CancelOrder { .. });
    if !cancelled {
        prop_assert!(new.download_attempts >= old.download_attempts);
        prop_assert!(new.cc_attempts >= old.cc_attempts);
    }

    // (b) An order keeps its EID and MatchingID until it is cancelled.
    let reset = matches!(new.state, State::Available | State::Unavailable);
    if old.eid.is_some() && !reset {
        prop_assert_eq!(&new.eid, &old.eid, "the order's EID changed");
    }
    if old.eid.is_some() && old.state.is_pending_order() && new.state.is_pending_order() {
        prop_assert_eq!(&new.eid, &old.eid, "an open order's EID changed");
    }
    if old.matching_id.is_some() && !reset {
        prop_assert_eq!(
            &new.matching_id,
            &old.matching_id,
            "the order's MatchingID changed"
        );
    }
    // A successful Expire only hits an order that was due.
    if let Command::Expire { .. } = cmd {
        prop_assert!(old.state.can_expire() && old.expires_at.is_some_and(|t| t <= now));
    }
    Ok(())
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    store
        .add_profiles(&inventory(), "admin", T0)
        .expect("add inventory");
    let mut now = T0;
    let mut before = snapshot(&store);
    check_store(&store, &before, now)?;
    for (n, step) in steps.iter().enumerate() {
        now += step.advance;
        let (cmd, event) = command(&step.op, &before, &store, now);
        let ctx = Ctx {
            caller: caller(&cmd),
            now,
            idem: None,
        };
        let result = store.apply(&cmd, &ctx);
        let after = snapshot(&store);
        let here = format!("step {n}: {cmd:?} -> {result:?}");
        check_step(&cmd, event, &result, &before, &after, now)
            .map_err(|e| TestCaseError::fail(format!("{here}\n{e}")))?;
        check_store(&store, &after, now)
            .map_err(|e| TestCaseError::fail(format!("{here}\n{e}")))?;
        before = after;
    }
    // Reopening rebuilds the in-memory counts from the records.
    drop(store);
    let store = reopen_store(dir.path());
    let reopened = snapshot(&store);
    prop_assert!(reopened == before, "reopened store differs");
    check_store(&store, &reopened, now)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lifecycle_invariants_hold(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}

// ---------------------------------------------------------------------------
// Pool allocation

fn download_by_type(
    store: &Store,
    operator: &str,
    t: &str,
    now: i64,
) -> smdpplus::error::Result<Applied> {
    store.apply(
        &Command::DownloadOrder {
            operator: operator.to_owned(),
            eid: None,
            iccid: None,
            profile_type: Some(t.to_owned()),
        },
        &Ctx {
            caller: operator,
            now,
            idem: None,
        },
    )
}

#[test]
fn exhausted_pool_and_unique_allocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    store
        .add_profiles(&inventory(), "admin", T0)
        .expect("add inventory");

    // OP-ONE has PER_POOL profiles of TYPE-A; OP-TWO has its own TYPE-A pool.
    let mut got = BTreeSet::new();
    for n in 0..PER_POOL {
        let a = download_by_type(&store, "OP-ONE", "TYPE-A", T0 + n as i64).expect("allocate");
        assert_eq!(a.record.state, State::Allocated);
        assert_eq!(a.record.operator, "OP-ONE");
        assert_eq!(a.record.profile_type, "TYPE-A");
        assert!(
            got.insert(a.record.iccid.clone()),
            "ICCID {} allocated twice",
            a.record.iccid
        );
    }
    let e = download_by_type(&store, "OP-ONE", "TYPE-A", T0 + 10).expect_err("pool is empty");
    assert_eq!(e.code, codes::TYPE_EXHAUSTED);
    assert_eq!(e.code.to_string(), "8.2.5/3.7");
    assert!(store.pool("OP-ONE", "TYPE-A").expect("pool").is_empty());
    // The other operator's pool of the same type is untouched.
    assert_eq!(
        store.pool("OP-TWO", "TYPE-A").expect("pool").len(),
        PER_POOL
    );

    // Cancelling back to Available refills the pool with that ICCID.
    let first = Iccid::parse(got.iter().next().expect("one")).expect("iccid");
    store
        .apply(
            &Command::CancelOrder {
                operator: "OP-ONE".into(),
                iccid: first.clone(),
                eid: None,
                matching_id: None,
                final_status: FinalStatus::Available,
            },
            &Ctx {
                caller: "OP-ONE",
                now: T0 + 20,
                idem: None,
            },
        )
        .expect("cancel");
    let again = download_by_type(&store, "OP-ONE", "TYPE-A", T0 + 30).expect("allocate again");
    assert_eq!(again.record.iccid, first.as_str());
    let e = download_by_type(&store, "OP-ONE", "TYPE-A", T0 + 40).expect_err("empty again");
    assert_eq!(e.code, codes::TYPE_EXHAUSTED);
}

#[test]
fn concurrent_allocations_never_share_an_iccid() {
    const POOL: usize = 40;
    const THREADS: usize = 8;
    const TRIES: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let items: Vec<NewProfile> = (0..POOL)
        .map(|i| NewProfile {
            iccid: Iccid::with_check_digit(&format!("894411111111{i:06}")).expect("18 digits"),
            profile_type: "BULK".into(),
            operator: "OP-ONE".into(),
            package: vec![0],
        })
        .collect();
    store.add_profiles(&items, "admin", T0).expect("add");

    let results: Vec<smdpplus::error::Result<Applied>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                s.spawn(move || {
                    (0..TRIES)
                        .map(|n| {
                            download_by_type(&store, "OP-ONE", "BULK", T0 + (t * TRIES + n) as i64)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut seen = BTreeSet::new();
    let mut exhausted = 0;
    for r in results {
        match r {
            Ok(a) => assert!(
                seen.insert(a.record.iccid.clone()),
                "ICCID {} allocated twice",
                a.record.iccid
            ),
            Err(e) => {
                assert_eq!(e.code, codes::TYPE_EXHAUSTED, "{e}");
                exhausted += 1;
            }
        }
    }
    assert_eq!(seen.len(), POOL, "every profile allocated exactly once");
    assert_eq!(exhausted, THREADS * TRIES - POOL);
    assert!(store.pool("OP-ONE", "BULK").expect("pool").is_empty());
    let counts: BTreeMap<State, i64> = store.counts().into_iter().collect();
    assert_eq!(counts[&State::Allocated], POOL as i64);
    assert_eq!(counts[&State::Available], 0);
}
