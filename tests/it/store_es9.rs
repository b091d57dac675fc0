//! Focused tests of the ES9+ store commands (`Store::resolve_order`,
//! `Command::AuthenticateClient`, `CheckConfirmationCode`, `BppDelivered`,
//! `InstallResult`, `DownloadCancelled`, `DeviceNotification`) against a
//! real [`Store`] in a fresh sled directory.
//!
//! The authority is SGP.22 v2.2 §5.6.2-5.6.5 (order matching at p.170,
//! hashCc = SHA256(SHA256(code) || transactionId)) and §5.3.5 (notification
//! points 1-4, tables 32b and 32c). After every test the raw index entries
//! must be exactly the ones the records imply and the per-state counts must
//! match the records.
//!
//! The tests at the end pin store bugs found by these tests and since fixed.

use crate::common::store::engine_tests;
use crate::common::store::{ctx, eid, iccid, open, Fixture, T0, TTL};
use sha2::{Digest, Sha256};
use smdpplus::error::{codes, Error, Result, StatusCode};
use smdpplus::es2plus::confirmation_code_hashes;
use smdpplus::ids::Iccid;
use smdpplus::store::bound::{KeptPackage, KEPT_VERSION};
use smdpplus::store::lifecycle::{Event, State};
use smdpplus::store::{
    index_keys, Applied, Command, HistoryEntry, ListFilter, OutboxItem, PointStatus, ProfileRecord,
    RetryKind, Store, POINT_BPP_DOWNLOAD, POINT_BPP_INSTALLATION, POINT_CONFIRMATION_FAILURE,
    POINT_DEVICE_DELETED, POINT_ELIGIBILITY,
};
use std::collections::BTreeMap;

const OP: &str = "OP-ONE";
const TYPE: &str = "TYPE-A";
const E1: &str = "89049032123451234512345678901235";
const E2: &str = "89049032123451234512345678901243";
const TID: &[u8] = &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
/// endUserRejection(0) -> '8.8.5 Download Order - 3.8 Refused' (§5.3.5 table 32b).
const END_USER_REJECTION: StatusCode = StatusCode {
    subject: "8.8.5",
    reason: "3.8",
};
/// loadBppExecutionError(5) -> '8.2.10 Bound Profile Package - 4.2 Execution Error'.
const LOAD_BPP_ERROR: StatusCode = StatusCode {
    subject: "8.2.10",
    reason: "4.2",
};

/// A store in a fresh directory with `n` Available profiles of OP/TYPE.
fn fixture(n: usize) -> Fixture {
    Fixture::with_profiles(n, OP, TYPE)
}

fn es9(store: &Store, cmd: Command, now: i64) -> Result<Applied> {
    store.apply(&cmd, &ctx("smdpplus", now))
}

/// downloadOrder (optionally linked) + confirmOrder, released or not.
fn order(
    store: &Store,
    i: usize,
    linked: Option<&str>,
    matching_id: Option<&str>,
    cc: Option<&str>,
    release: bool,
) -> Iccid {
    let id = iccid(i);
    store
        .apply(
            &Command::DownloadOrder {
                operator: OP.into(),
                eid: linked.map(eid),
                iccid: Some(id.clone()),
                profile_type: None,
            },
            &ctx(OP, T0),
        )
        .expect("downloadOrder");
    store
        .apply(
            &Command::ConfirmOrder {
                operator: OP.into(),
                iccid: id.clone(),
                eid: None,
                matching_id: matching_id.map(str::to_owned),
                cc_hashes: cc.map(confirmation_code_hashes).unwrap_or_default(),
                smds_address: None,
                release,
            },
            &ctx(OP, T0),
        )
        .expect("confirmOrder");
    id
}

/// downloadOrder with an EID only: the order stays Linked.
fn linked_only(store: &Store, i: usize, e: &str) -> Iccid {
    let id = iccid(i);
    store
        .apply(
            &Command::DownloadOrder {
                operator: OP.into(),
                eid: Some(eid(e)),
                iccid: Some(id.clone()),
                profile_type: None,
            },
            &ctx(OP, T0),
        )
        .expect("downloadOrder");
    id
}

fn authenticate(
    store: &Store,
    id: &Iccid,
    e: &str,
    m: Option<&str>,
    max: u32,
    now: i64,
) -> Result<Applied> {
    es9(
        store,
        Command::AuthenticateClient {
            iccid: id.clone(),
            eid: eid(e),
            matching_id: m.map(str::to_owned),
            max_attempts: max,
        },
        now,
    )
}

fn check_cc(
    store: &Store,
    id: &Iccid,
    tid: &[u8],
    hash: Option<Vec<u8>>,
    max: u32,
    now: i64,
) -> Result<Applied> {
    es9(
        store,
        Command::CheckConfirmationCode {
            iccid: id.clone(),
            transaction_id: tid.to_vec(),
            hash_cc: hash,
            max_attempts: max,
            eid: None,
        },
        now,
    )
}

fn delivered(store: &Store, id: &Iccid, e: &str, now: i64) -> Result<Applied> {
    es9(
        store,
        Command::BppDelivered {
            iccid: id.clone(),
            eid: eid(e),
            retry: None,
            keep: None,
        },
        now,
    )
}

fn install(
    store: &Store,
    id: &Iccid,
    success: bool,
    data: &[u8],
    reason: Option<&str>,
    now: i64,
) -> Result<Applied> {
    es9(
        store,
        Command::InstallResult {
            iccid: id.clone(),
            success,
            result_data: data.to_vec(),
            reason: reason.map(str::to_owned),
        },
        now,
    )
}

fn cancelled(
    store: &Store,
    id: &Iccid,
    code: StatusCode,
    reason: &str,
    now: i64,
) -> Result<Applied> {
    es9(
        store,
        Command::DownloadCancelled {
            iccid: id.clone(),
            code,
            reason: reason.into(),
            eid: None,
        },
        now,
    )
}

/// hashCc as the eUICC computes it (SGP.22 §3.1.3.1, §5.7.5):
/// SHA256(SHA256(code) || transactionId), the code as the bytes given.
fn hash_cc(code: &[u8], tid: &[u8]) -> Vec<u8> {
    let inner = Sha256::digest(code);
    let mut d = Sha256::new();
    d.update(inner);
    d.update(tid);
    d.finalize().to_vec()
}

fn rec(store: &Store, id: &Iccid) -> ProfileRecord {
    store.get(id).expect("get").expect("record exists")
}

fn last_event(store: &Store, id: &Iccid) -> HistoryEntry {
    store
        .history(id)
        .expect("history")
        .pop()
        .expect("has history")
}

fn code_of(r: Result<Applied>) -> StatusCode {
    match r {
        Ok(a) => panic!("expected a refusal, got {:?}", a.record),
        Err(Error { code, .. }) => code,
    }
}

fn resolve_code_with(store: &Store, e: &str, m: Option<&str>, strict: bool) -> StatusCode {
    match store.resolve_order(&eid(e), m, strict) {
        Ok(i) => panic!("resolve_order({e}, {m:?}) found {i}, expected a refusal"),
        Err(err) => err.code,
    }
}

fn resolve_code(store: &Store, e: &str, m: Option<&str>) -> StatusCode {
    resolve_code_with(store, e, m, false)
}

fn failed(code: StatusCode) -> (String, String) {
    (code.subject.to_owned(), code.reason.to_owned())
}

fn status_code(item: &OutboxItem) -> Option<(String, String)> {
    match &item.status {
        PointStatus::Success => None,
        PointStatus::Failed {
            subject, reason, ..
        } => Some((subject.clone(), reason.clone())),
    }
}

/// Everything observable, for "nothing changed" checks.
#[derive(Debug, PartialEq)]
struct Snapshot {
    records: Vec<ProfileRecord>,
    histories: Vec<Vec<HistoryEntry>>,
    index: Vec<(Vec<u8>, Vec<u8>)>,
    outbox: Vec<OutboxItem>,
    counts: Vec<(State, i64)>,
}

fn snapshot(store: &Store) -> Snapshot {
    let records = store.list(&ListFilter::default()).expect("list");
    let histories = records
        .iter()
        .map(|r| {
            store
                .history(&Iccid::parse(&r.iccid).expect("iccid"))
                .expect("history")
        })
        .collect();
    let mut index = store
        .as_sled()
        .map(|s| s.index_entries().expect("index"))
        .unwrap_or_default();
    index.sort();
    Snapshot {
        records,
        histories,
        index,
        outbox: store.outbox().expect("outbox"),
        counts: store.counts(),
    }
}

/// Raw index entries are exactly the union of `index_keys` of the records,
/// each pointing at its ICCID, and the in-memory counts match the records.
fn assert_consistent(store: &Store) {
    let records = store.list(&ListFilter::default()).expect("list");
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = records
        .iter()
        .flat_map(|r| {
            index_keys(r)
                .into_iter()
                .map(move |k| (k, r.iccid.as_bytes().to_vec()))
        })
        .collect();
    want.sort();
    if let Some(sled) = store.as_sled() {
        let mut got = sled.index_entries().expect("index");
        got.sort();
        assert_eq!(got, want, "index entries differ from the records");
    }
    crate::common::store::check_lookups(store).expect("lookups agree with the records");
    // The outbox index is exactly what the items imply, and the depth per
    // operator is their number.
    let items = store.outbox().expect("outbox");
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = items
        .iter()
        .flat_map(smdpplus::store::outbox_index_keys)
        .collect();
    want.sort();
    if let Some(sled) = store.as_sled() {
        let mut got = sled.outbox_index_entries().expect("outbox index");
        got.sort();
        assert_eq!(got, want, "outbox index differs from the items");
    }
    let mut per_op: BTreeMap<String, i64> = BTreeMap::new();
    for i in &items {
        *per_op.entry(i.operator.clone()).or_insert(0) += 1;
    }
    let depths: BTreeMap<String, i64> = store
        .outbox_depths()
        .expect("depths")
        .into_iter()
        .filter(|(_, n, _)| *n != 0)
        .map(|(o, n, _)| (o, n))
        .collect();
    assert_eq!(depths, per_op, "outbox depths differ from the items");
    let mut per_state: BTreeMap<State, i64> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for r in &records {
        *per_state.get_mut(&r.state).expect("state") += 1;
    }
    let counts: BTreeMap<State, i64> = store.counts().into_iter().collect();
    assert_eq!(counts, per_state, "counts() differ from the records");
    for r in &records {
        assert_eq!(
            r.history_len,
            store
                .history(&Iccid::parse(&r.iccid).expect("iccid"))
                .expect("history")
                .len() as u64
        );
    }
}

// ---------------------------------------------------------------------------
// resolve_order (§5.6.3, p.170)

engine_tests! {
fn resolve_order_linked_to_the_eid() {
    let f = fixture(3);
    let s = &f.store;
    let a = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    // Another order, matchingId only, not linked to any EID.
    let b = order(s, 1, None, Some("MATCH-2"), None, true);

    // A pending order linked to E1: found without matchingId, with the
    // right one, and "" counts as absent.
    assert_eq!(
        s.resolve_order(&eid(E1), None, false)
            .expect("no matchingId"),
        a
    );
    assert_eq!(
        s.resolve_order(&eid(E1), Some("MATCH-1"), false)
            .expect("right matchingId"),
        a
    );
    assert_eq!(
        s.resolve_order(&eid(E1), Some(""), false).expect("empty"),
        a
    );
    // A present matchingId must match the EID's pending order.
    assert_eq!(
        resolve_code(s, E1, Some("MATCH-9")),
        codes::MATCHING_ID_REFUSED
    );
    assert_eq!(codes::MATCHING_ID_REFUSED.to_string(), "8.2.6/3.8");
    // Another, unlinked, order's matchingId: accepted by default (any
    // eUICC could claim it), refused under the literal §5.6.3 rule while E1
    // has a pending order.
    assert_eq!(
        s.resolve_order(&eid(E1), Some("MATCH-2"), false)
            .expect("relaxed"),
        b
    );
    assert_eq!(
        resolve_code_with(s, E1, Some("MATCH-2"), true),
        codes::MATCHING_ID_REFUSED
    );
    // The unlinked order is still reachable by another eUICC.
    assert_eq!(
        s.resolve_order(&eid(E2), Some("MATCH-2"), false)
            .expect("b"),
        b
    );
    assert_consistent(s);
}
}

engine_tests! {
fn resolve_order_prefers_the_released_order_of_the_eid() {
    let f = fixture(3);
    let s = &f.store;
    let _linked = linked_only(s, 0, E1);
    let released = order(s, 1, Some(E1), Some("MATCH-1"), None, true);
    assert_eq!(
        s.resolve_order(&eid(E1), None, false).expect("pick"),
        released
    );
    assert_consistent(s);
}
}

engine_tests! {
fn resolve_order_without_an_eid_order() {
    let f = fixture(3);
    let s = &f.store;
    let b = order(s, 0, None, Some("MATCH-2"), None, true);
    let _a = order(s, 1, Some(E1), Some("MATCH-1"), None, true);

    // No order for E2 and no matchingId: the EID is refused (§5.6.3).
    assert_eq!(resolve_code(s, E2, None), codes::EID_REFUSED);
    assert_eq!(resolve_code(s, E2, Some("")), codes::EID_REFUSED);
    // It must name an order...
    assert_eq!(
        resolve_code(s, E2, Some("NO-SUCH-ORDER")),
        codes::MATCHING_ID_REFUSED
    );
    // ... that is not linked to another EID.
    assert_eq!(resolve_code(s, E2, Some("MATCH-1")), codes::EID_REFUSED);
    assert_eq!(codes::EID_REFUSED.to_string(), "8.1.1/3.8");
    assert_eq!(
        s.resolve_order(&eid(E2), Some("MATCH-2"), false)
            .expect("b"),
        b
    );
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// AuthenticateClient

engine_tests! {
fn authenticate_client_counts_attempts_on_a_released_order() {
    let f = fixture(2);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    let found = s
        .resolve_order(&eid(E1), Some("MATCH-1"), false)
        .expect("resolve");
    assert_eq!(found, id);
    let a = authenticate(s, &found, E1, Some("MATCH-1"), 3, T0 + 10).expect("first");
    assert_eq!(a.record.state, State::Released);
    assert!(!a.changed, "counting an attempt is no state change");
    assert_eq!(a.record.download_attempts, 1);
    // The EID is linked at BPP time, not here.
    assert_eq!(a.record.eid, None);
    assert_eq!(rec(s, &id), a.record, "returned record is the stored one");
    let b = authenticate(s, &found, E1, Some("MATCH-1"), 3, T0 + 20).expect("second");
    assert_eq!(b.record.download_attempts, 2);
    assert_eq!(s.history(&id).expect("history").len(), 3, "no new history");
    assert!(s.outbox().expect("outbox").is_empty());
    assert_consistent(s);
}
}

engine_tests! {
fn authenticate_client_refuses_an_order_not_released() {
    let f = fixture(3);
    let s = &f.store;
    let linked = linked_only(s, 0, E1);
    let confirmed = order(s, 1, Some(E2), Some("MATCH-2"), None, false);
    let before = snapshot(s);
    assert_eq!(
        s.resolve_order(&eid(E1), None, false).expect("linked"),
        linked
    );
    assert_eq!(
        code_of(authenticate(s, &linked, E1, None, 3, T0 + 1)),
        codes::PROFILE_NOT_RELEASED
    );
    assert_eq!(codes::PROFILE_NOT_RELEASED.to_string(), "8.2/1.2");
    assert_eq!(
        s.resolve_order(&eid(E2), Some("MATCH-2"), false)
            .expect("confirmed"),
        confirmed
    );
    assert_eq!(
        code_of(authenticate(s, &confirmed, E2, Some("MATCH-2"), 3, T0 + 1)),
        codes::PROFILE_NOT_RELEASED
    );
    assert_eq!(snapshot(s), before, "a plain refusal changes nothing");
    assert_consistent(s);
}
}

engine_tests! {
fn authenticate_client_rechecks_the_match_inside_the_transaction() {
    let f = fixture(2);
    let s = &f.store;
    let a = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    let b = order(s, 1, None, Some("MATCH-2"), None, true);
    let before = snapshot(s);
    assert_eq!(
        code_of(authenticate(s, &a, E2, Some("MATCH-1"), 3, T0)),
        codes::EID_REFUSED
    );
    assert_eq!(
        code_of(authenticate(s, &a, E1, Some("MATCH-2"), 3, T0)),
        codes::MATCHING_ID_REFUSED
    );
    assert_eq!(
        code_of(authenticate(s, &b, E1, None, 3, T0)),
        codes::MATCHING_ID_REFUSED
    );
    assert_eq!(
        code_of(authenticate(s, &b, E1, Some(""), 3, T0)),
        codes::MATCHING_ID_REFUSED
    );
    assert_eq!(snapshot(s), before);
    // Linked to E1 with an empty matchingId: "" counts as absent.
    authenticate(s, &a, E1, Some(""), 3, T0).expect("linked, empty matchingId");
    assert_consistent(s);
}
}

engine_tests! {
fn authenticate_client_on_an_expired_order_ends_it() {
    let f = fixture(2);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    assert_eq!(rec(s, &id).expires_at, Some(T0 + TTL));
    let now = T0 + TTL; // expires_at <= now: expired
    let found = s
        .resolve_order(&eid(E1), Some("MATCH-1"), false)
        .expect("resolve");
    let err = authenticate(s, &found, E1, Some("MATCH-1"), 3, now).expect_err("expired");
    assert_eq!(err.code, codes::ORDER_EXPIRED);
    assert_eq!(err.code.to_string(), "8.8.5/4.10");

    // Committed despite the Err.
    let r = rec(s, &id);
    assert_eq!(r.state, State::Error);
    assert!(r.error_reason.is_some());
    assert_eq!(r.expires_at, None);
    assert_eq!(r.download_attempts, 0, "an expired order counts no attempt");
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (Event::Expired, Some(State::Released), State::Error)
    );
    assert_eq!(h.at, now);
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_ELIGIBILITY);
    assert_eq!(out[0].iccid, id.as_str());
    assert_eq!(out[0].operator, OP);
    assert_eq!(out[0].profile_type, TYPE);
    assert_eq!(out[0].timestamp, now);
    assert_eq!(status_code(&out[0]), Some(failed(codes::ORDER_EXPIRED)));
    assert!(s.due_expiries(now + TTL).expect("due").is_empty());
    assert_consistent(s);

    // Nothing more happens on a second attempt.
    let before = snapshot(s);
    assert_eq!(
        code_of(authenticate(s, &id, E1, Some("MATCH-1"), 3, now + 1)),
        codes::PROFILE_NOT_RELEASED
    );
    assert_eq!(snapshot(s), before);
}
}

engine_tests! {
fn authenticate_client_over_the_attempt_limit_ends_the_order() {
    let f = fixture(2);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    for n in 1..=2 {
        let a = authenticate(s, &id, E1, None, 2, T0 + n).expect("within the limit");
        assert_eq!(a.record.download_attempts, n as u32);
    }
    let err = authenticate(s, &id, E1, None, 2, T0 + 3).expect_err("third attempt");
    assert_eq!(err.code, codes::DOWNLOAD_RETRIES_EXCEEDED);
    assert_eq!(err.code.to_string(), "8.8.5/6.4");
    let r = rec(s, &id);
    assert_eq!(r.state, State::Error);
    assert!(r.error_reason.is_some());
    assert_eq!(r.download_attempts, 3);
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (Event::LimitExceeded, Some(State::Released), State::Error)
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_ELIGIBILITY);
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_eq!(
        status_code(&out[0]),
        Some(failed(codes::DOWNLOAD_RETRIES_EXCEEDED))
    );
    // The order is no longer pending for E1.
    assert!(s.pending_for_eid(&eid(E1)).expect("pending").is_empty());
    assert_consistent(s);
}
}

engine_tests! {
fn authenticate_client_limit_on_a_matching_id_order_names_the_eid() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    authenticate(s, &id, E2, Some("MATCH-1"), 1, T0 + 1).expect("first");
    let err = authenticate(s, &id, E2, Some("MATCH-1"), 1, T0 + 2).expect_err("second");
    assert_eq!(err.code, codes::DOWNLOAD_RETRIES_EXCEEDED);
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1);
    // §5.3.5: the EID "SHALL be set if available to the SM-DP+".
    assert_eq!(out[0].eid.as_deref(), Some(E2));
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// CheckConfirmationCode (§5.6.2)

engine_tests! {
fn confirmation_code_not_required() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    let before = snapshot(s);
    let a = check_cc(s, &id, TID, None, 3, T0 + 1).expect("no code required");
    assert!(!a.changed);
    // A hashCc the order does not ask for is ignored.
    check_cc(s, &id, TID, Some(vec![0; 32]), 3, T0 + 1).expect("ignored hash");
    assert_eq!(snapshot(s), before);
    assert_consistent(s);
}
}

engine_tests! {
fn confirmation_code_missing() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), Some("12345678"), true);
    let before = snapshot(s);
    let code = code_of(check_cc(s, &id, TID, None, 3, T0 + 1));
    assert_eq!(code, codes::CC_MISSING);
    assert_eq!(code.to_string(), "8.2.7/2.2");
    assert_eq!(
        snapshot(s),
        before,
        "a missing hash is not a counted attempt"
    );
    assert_eq!(rec(s, &id).cc_attempts, 0);
    assert_consistent(s);
}
}

engine_tests! {
fn confirmation_code_wrong_is_counted() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), Some("12345678"), true);
    let history = s.history(&id).expect("history");
    let err =
        check_cc(s, &id, TID, Some(hash_cc(b"87654321", TID)), 3, T0 + 1).expect_err("wrong code");
    assert_eq!(err.code, codes::CC_REFUSED);
    assert_eq!(err.code.to_string(), "8.2.7/3.8");
    let r = rec(s, &id);
    assert_eq!(r.cc_attempts, 1, "the failed attempt is persisted");
    assert_eq!(r.state, State::Released);
    assert_eq!(r.updated_at, T0 + 1);
    assert_eq!(s.history(&id).expect("history"), history);
    assert!(s.outbox().expect("outbox").is_empty());
    // The right code bound to another transaction is wrong too.
    let err = check_cc(s, &id, TID, Some(hash_cc(b"12345678", b"other")), 3, T0 + 2)
        .expect_err("other transactionId");
    assert_eq!(err.code, codes::CC_REFUSED);
    assert_eq!(rec(s, &id).cc_attempts, 2);
    // Survives a reopen.
    let f = f.reopen();
    assert_eq!(rec(&f.store, &id).cc_attempts, 2);
    assert_consistent(&f.store);
}
}

engine_tests! {
fn confirmation_code_right_in_both_encodings() {
    let f = fixture(2);
    let s = &f.store;
    // "12345678" is stored both as ASCII and as hex-decoded bytes.
    let id = order(s, 0, Some(E1), Some("MATCH-1"), Some("12345678"), true);
    assert_eq!(rec(s, &id).cc_hashes.len(), 2);
    let before = snapshot(s);
    check_cc(s, &id, TID, Some(hash_cc(b"12345678", TID)), 3, T0 + 1).expect("ASCII code");
    let hex = hex::decode("12345678").expect("hex");
    check_cc(s, &id, TID, Some(hash_cc(&hex, TID)), 3, T0 + 1).expect("hex-decoded code");
    assert_eq!(snapshot(s), before, "a right code changes nothing");

    // A code that is not hex has one encoding.
    let other = order(s, 1, None, Some("MATCH-2"), Some("PIN-CODE"), true);
    assert_eq!(rec(s, &other).cc_hashes.len(), 1);
    check_cc(s, &other, TID, Some(hash_cc(b"PIN-CODE", TID)), 3, T0 + 1).expect("ASCII code");
    assert_consistent(s);
}
}

engine_tests! {
fn confirmation_code_limit_ends_the_order() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), Some("12345678"), true);
    let wrong = || Some(hash_cc(b"00000000", TID));
    for n in 1..=2u32 {
        let e = check_cc(s, &id, TID, wrong(), 3, T0 + i64::from(n)).expect_err("wrong");
        assert_eq!(e.code, codes::CC_REFUSED);
        assert_eq!(rec(s, &id).cc_attempts, n);
    }
    let e = check_cc(s, &id, TID, wrong(), 3, T0 + 3).expect_err("third");
    assert_eq!(e.code, codes::CC_RETRIES_EXCEEDED);
    assert_eq!(e.code.to_string(), "8.2.7/6.4");
    let r = rec(s, &id);
    assert_eq!(r.state, State::Error);
    assert_eq!(r.cc_attempts, 3);
    assert!(r.error_reason.is_some());
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (Event::LimitExceeded, Some(State::Released), State::Error)
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_CONFIRMATION_FAILURE);
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_eq!(
        status_code(&out[0]),
        Some(failed(codes::CC_RETRIES_EXCEEDED))
    );
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// BppDelivered

engine_tests! {
fn bpp_delivered_links_the_eid_and_notifies_once() {
    let f = fixture(2);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    let found = s
        .resolve_order(&eid(E1), Some("MATCH-1"), false)
        .expect("resolve");
    authenticate(s, &found, E1, Some("MATCH-1"), 3, T0 + 1).expect("authenticate");
    assert!(s.pending_for_eid(&eid(E1)).expect("pending").is_empty());

    let a = delivered(s, &id, E1, T0 + 2).expect("delivered");
    assert_eq!(a.from, State::Released);
    assert!(a.changed);
    assert_eq!(a.record.state, State::Downloaded);
    assert_eq!(a.record.eid.as_deref(), Some(E1));
    assert!(
        a.record.expires_at.is_some(),
        "a delivered order still expires if its installation result never comes"
    );
    assert_eq!(rec(s, &id), a.record);
    assert_eq!(
        s.pending_for_eid(&eid(E1)).expect("pending"),
        vec![id.clone()]
    );
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (
            Event::BppDelivered,
            Some(State::Released),
            State::Downloaded
        )
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_BPP_DOWNLOAD);
    assert_eq!(out[0].status, PointStatus::Success);
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_consistent(s);

    // A retry: the order now belongs to E1, found without matchingId.
    assert_eq!(s.resolve_order(&eid(E1), None, false).expect("retry"), id);
    let a = authenticate(s, &id, E1, None, 3, T0 + 3).expect("retry authenticate");
    assert_eq!(a.record.download_attempts, 2);
    let a = delivered(s, &id, E1, T0 + 4).expect("delivered again");
    assert_eq!(a.record.state, State::Downloaded);
    assert_eq!(a.record.eid.as_deref(), Some(E1));
    assert_eq!(
        s.outbox().expect("outbox").len(),
        1,
        "no second notification"
    );
    assert_consistent(s);

    // Another eUICC.
    let before = snapshot(s);
    assert_eq!(code_of(delivered(s, &id, E2, T0 + 5)), codes::EID_REFUSED);
    assert_eq!(resolve_code(s, E2, Some("MATCH-1")), codes::EID_REFUSED);
    assert_eq!(snapshot(s), before);
    assert_consistent(s);
}
}

engine_tests! {
fn bpp_delivered_needs_a_released_order() {
    let f = fixture(2);
    let s = &f.store;
    let confirmed = order(s, 0, Some(E1), Some("MATCH-1"), None, false);
    let before = snapshot(s);
    assert_eq!(
        code_of(delivered(s, &confirmed, E1, T0 + 1)),
        codes::ICCID_INVALID_TRANSITION
    );
    assert_eq!(
        code_of(delivered(s, &iccid(1), E1, T0 + 1)),
        codes::ICCID_INVALID_TRANSITION
    );
    assert_eq!(snapshot(s), before);
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// InstallResult (§5.6.4, notification point 4)

fn downloaded(s: &Store, i: usize, e: &str) -> Iccid {
    let id = order(s, i, None, Some(&format!("MATCH-{i}")), None, true);
    authenticate(s, &id, e, Some(&format!("MATCH-{i}")), 3, T0 + 1).expect("authenticate");
    delivered(s, &id, e, T0 + 2).expect("delivered");
    id
}

engine_tests! {
fn install_result_success() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    let data = [0xa0, 0x03, 0x80, 0x01, 0x00];
    let a = install(s, &id, true, &data, None, T0 + 3).expect("installed");
    assert_eq!(a.record.state, State::Installed);
    assert_eq!(a.record.error_reason, None);
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (
            Event::InstallSucceeded,
            Some(State::Downloaded),
            State::Installed
        )
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].point, POINT_BPP_INSTALLATION);
    assert_eq!(out[1].status, PointStatus::Success);
    assert_eq!(out[1].result_data.as_deref(), Some(&data[..]));
    assert_eq!(out[1].eid.as_deref(), Some(E1));
    assert_eq!(out[1].timestamp, T0 + 3);
    // The order is no longer pending.
    assert!(s.pending_for_eid(&eid(E1)).expect("pending").is_empty());
    assert_consistent(s);
}
}

engine_tests! {
fn install_result_failure() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    let data = [0xa1, 0x03, 0x80, 0x01, 0x07];
    let a = install(
        s,
        &id,
        false,
        &data,
        Some("installFailedDueToIccidAlreadyExistsOnEuicc"),
        T0 + 3,
    )
    .expect("a failed installation is reported, not refused");
    assert_eq!(a.record.state, State::Error);
    assert_eq!(
        a.record.error_reason.as_deref(),
        Some("installFailedDueToIccidAlreadyExistsOnEuicc")
    );
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (Event::InstallFailed, Some(State::Downloaded), State::Error)
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].point, POINT_BPP_INSTALLATION);
    assert_eq!(
        status_code(&out[1]),
        Some(failed(codes::BPP_EXECUTION_ERROR))
    );
    assert_eq!(codes::BPP_EXECUTION_ERROR.to_string(), "8.2.10/4.2");
    assert_eq!(out[1].result_data.as_deref(), Some(&data[..]));
    assert_consistent(s);
}
}

engine_tests! {
fn install_result_needs_a_downloaded_order() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    let before = snapshot(s);
    assert_eq!(
        code_of(install(s, &id, true, &[], None, T0 + 1)),
        codes::ICCID_INVALID_TRANSITION
    );
    assert_eq!(snapshot(s), before);
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// DownloadCancelled (§5.6.5, §5.3.5 table 32b)

engine_tests! {
fn download_cancelled_on_a_released_order() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), None, true);
    authenticate(s, &id, E1, None, 3, T0 + 1).expect("authenticate");
    let a = cancelled(s, &id, END_USER_REJECTION, "endUserRejection", T0 + 2).expect("cancelled");
    assert_eq!(a.record.state, State::Error);
    assert_eq!(a.record.error_reason.as_deref(), Some("endUserRejection"));
    assert_eq!(a.record.expires_at, None);
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (
            Event::DownloadCancelled,
            Some(State::Released),
            State::Error
        )
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_ELIGIBILITY);
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_eq!(status_code(&out[0]), Some(failed(END_USER_REJECTION)));
    assert!(s.pending_for_eid(&eid(E1)).expect("pending").is_empty());
    assert_consistent(s);
}
}

engine_tests! {
/// An order by matchingId alone names no EID; the eUICC that
/// authenticated does, and the notification carries it (§5.3.5).
fn download_cancelled_notifies_the_authenticated_eid() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    authenticate(s, &id, E1, Some("MATCH-1"), 3, T0 + 1).expect("authenticate");
    es9(
        s,
        Command::DownloadCancelled {
            iccid: id.clone(),
            code: END_USER_REJECTION,
            reason: "endUserRejection".into(),
            eid: Some(eid(E1)),
        },
        T0 + 2,
    )
    .expect("cancelled");
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_consistent(s);
}
}

engine_tests! {
/// The confirmation-code limit of an order by matchingId alone: the
/// notification (point 2) carries the authenticated EID.
fn confirmation_code_limit_notifies_the_authenticated_eid() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), Some("1234"), true);
    authenticate(s, &id, E1, Some("MATCH-1"), 3, T0 + 1).expect("authenticate");
    let r = es9(
        s,
        Command::CheckConfirmationCode {
            iccid: id.clone(),
            transaction_id: TID.to_vec(),
            hash_cc: Some(vec![0; 32]),
            max_attempts: 1,
            eid: Some(eid(E1)),
        },
        T0 + 2,
    );
    assert!(r.is_err());
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].point, POINT_CONFIRMATION_FAILURE);
    assert_eq!(out[0].eid.as_deref(), Some(E1));
    assert_consistent(s);
}
}

engine_tests! {
fn download_cancelled_on_a_downloaded_order() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    let a = cancelled(s, &id, LOAD_BPP_ERROR, "loadBppExecutionError", T0 + 3).expect("cancelled");
    assert_eq!(a.record.state, State::Error);
    assert_eq!(
        a.record.error_reason.as_deref(),
        Some("loadBppExecutionError")
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].point, POINT_BPP_DOWNLOAD);
    assert_eq!(status_code(&out[1]), Some(failed(LOAD_BPP_ERROR)));
    assert_eq!(out[1].eid.as_deref(), Some(E1));
    assert_consistent(s);
}
}

engine_tests! {
fn download_cancelled_after_installation_is_refused() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    install(s, &id, true, &[0xa0, 0x00], None, T0 + 3).expect("installed");
    let before = snapshot(s);
    let code = code_of(cancelled(s, &id, END_USER_REJECTION, "late", T0 + 4));
    assert_eq!(code, codes::ICCID_INVALID_TRANSITION);
    assert_eq!(code.to_string(), "8.2.1/3.5");
    assert_eq!(snapshot(s), before, "nothing changed");
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// DeviceNotification (§3.5, §5.6.4 OtherSignedNotification)

fn device(s: &Store, id: &Iccid, e: &str, event: Event, now: i64) -> Result<Applied> {
    es9(
        s,
        Command::DeviceNotification {
            iccid: id.clone(),
            eid: eid(e),
            event,
        },
        now,
    )
}

engine_tests! {
fn device_notifications_on_an_installed_profile() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    install(s, &id, true, &[0xa0, 0x00], None, T0 + 3).expect("installed");
    let outbox = s.outbox().expect("outbox").len();
    for (n, event) in [Event::DeviceEnabled, Event::DeviceDisabled]
        .into_iter()
        .enumerate()
    {
        let a = device(s, &id, E1, event, T0 + 4 + n as i64).expect("recorded");
        assert_eq!(a.record.state, State::Installed);
        assert_eq!(last_event(s, &id).event, event);
    }
    assert_eq!(s.outbox().expect("outbox").len(), outbox, "no notification");
    // Another eUICC cannot report about this profile.
    let before = snapshot(s);
    assert_eq!(
        code_of(device(s, &id, E2, Event::DeviceDeleted, T0 + 6)),
        codes::EID_REFUSED
    );
    assert_eq!(snapshot(s), before);

    let a = device(s, &id, E1, Event::DeviceDeleted, T0 + 7).expect("deleted");
    assert_eq!(a.record.state, State::Unavailable);
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to),
        (
            Event::DeviceDeleted,
            Some(State::Installed),
            State::Unavailable
        )
    );
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), outbox + 1, "{out:?}");
    let item = out.last().expect("one more");
    assert_eq!(item.point, POINT_DEVICE_DELETED);
    assert_eq!(item.status, PointStatus::Success);
    assert_eq!(item.eid.as_deref(), Some(E1));
    assert!(s.pool(OP, TYPE).expect("pool").is_empty(), "not reused");
    assert_consistent(s);
}
}

engine_tests! {
fn device_notification_before_installation_is_refused() {
    let f = fixture(1);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    let before = snapshot(s);
    assert_eq!(
        code_of(device(s, &id, E1, Event::DeviceDeleted, T0 + 3)),
        codes::ICCID_INVALID_TRANSITION
    );
    assert_eq!(snapshot(s), before);
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// Known store bugs, reproduced; run with `cargo test --test it store_es9:: -- --ignored`.

engine_tests! {
/// §5.6.2: "If the SM-DP+ determines that the related Profile download order
/// has expired, the relevant status code is 8.8.5/4.10" - also at
/// GetBoundProfilePackage. An order that expires between AuthenticateClient
/// and GetBoundProfilePackage (before the sweeper ran) is still delivered.
fn get_bpp_on_an_expired_order_is_refused() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    authenticate(s, &id, E1, Some("MATCH-1"), 3, T0 + TTL - 1).expect("not yet expired");
    let now = T0 + TTL + 10;
    let cc = check_cc(s, &id, TID, None, 3, now);
    let bpp = cc.and_then(|_| delivered(s, &id, E1, now));
    let e = bpp.expect_err("the order expired before GetBoundProfilePackage");
    assert_eq!(e.code, codes::ORDER_EXPIRED);
    assert_ne!(rec(s, &id).state, State::Downloaded);
    assert_consistent(s);
}
}

engine_tests! {
/// A confirmation-code attempt is only counted on an open order (Released
/// or Downloaded). Here the sweeper ended the order between
/// AuthenticateClient and GetBoundProfilePackage.
fn confirmation_code_on_an_ended_order_is_not_counted() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, Some(E1), Some("MATCH-1"), Some("12345678"), true);
    authenticate(s, &id, E1, None, 3, T0 + TTL - 1).expect("authenticate");
    es9(s, Command::Expire { iccid: id.clone() }, T0 + TTL).expect("swept");
    let before = snapshot(s);
    let wrong = Some(hash_cc(b"00000000", TID));
    let e = check_cc(s, &id, TID, wrong.clone(), 3, T0 + TTL + 1).expect_err("ended");
    assert_ne!(e.code, codes::CC_REFUSED, "{e}");
    assert_eq!(
        snapshot(s),
        before,
        "an attempt was counted on an Error order"
    );
    let right = Some(hash_cc(b"12345678", TID));
    check_cc(s, &id, TID, right, 3, T0 + TTL + 1).expect_err("the order has ended");
}
}

engine_tests! {
/// §5.3.5 table 32a: the EID "SHALL be set if available to the SM-DP+".
/// AuthenticateClient knows the authenticated EID and sets it when the
/// attempt limit ends a matchingId-only order, but not when expiry does.
fn authenticate_client_expiry_notification_names_the_eid() {
    let f = fixture(1);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-1"), None, true);
    let e = authenticate(s, &id, E2, Some("MATCH-1"), 3, T0 + TTL).expect_err("expired");
    assert_eq!(e.code, codes::ORDER_EXPIRED);
    let out = s.outbox().expect("outbox");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].eid.as_deref(), Some(E2));
}
}

engine_tests! {
/// The free-range check behind `profiles generate`: one scan finds any
/// stored ICCID of the same width inside the range, ends included.
fn first_taken_in_finds_any_stored_iccid_in_a_range() {
    let f = fixture(3); // 894400000000000000.. 894400000000000002, with Luhn digits
    let s = &f.store;
    let at = |i: usize| iccid(i);
    let taken = |a: &Iccid, b: &Iccid| s.first_taken_in(a, b).expect("scan");
    assert_eq!(taken(&at(0), &at(2)), Some(at(0).to_string()));
    // Only the last of the range is stored.
    let below = Iccid::with_check_digit("894399999999999998").expect("iccid");
    assert_eq!(taken(&below, &at(0)), Some(at(0).to_string()));
    // Only the first is.
    assert_eq!(taken(&at(2), &at(9)), Some(at(2).to_string()));
    // Past the stored ones.
    assert_eq!(taken(&at(3), &at(900)), None);
    // A 20-digit range whose keys sort around stored 19-digit ICCIDs does
    // not collide with them.
    let wide_a = Iccid::with_check_digit("8944000000000000000").expect("iccid");
    let wide_b = Iccid::with_check_digit("8944000000000000009").expect("iccid");
    let inside = (0..3).filter(|i| {
        let k = at(*i).to_string();
        wide_a.to_string() < k && k < wide_b.to_string()
    });
    assert!(inside.count() > 0, "the case is real");
    assert_eq!(taken(&wide_a, &wide_b), None);
}
}

// ---------------------------------------------------------------------------
// RSP sessions: the cap, eviction order, short-lived pending sessions.

use smdpplus::store::session::{Admission, SessionCounts};

fn tid(i: u8) -> Vec<u8> {
    vec![0xA0, i]
}

fn counts(pending: u64, authenticated: u64) -> SessionCounts {
    SessionCounts {
        pending,
        authenticated,
    }
}

/// Creates pending session `i` (expiring at `expires_at`) under `max`.
fn create(s: &Store, i: u8, expires_at: i64, max: u64) -> Admission {
    s.create_session(&tid(i), expires_at, &[b'p', i], max)
        .expect("create session")
}

fn live(s: &Store, i: u8) -> bool {
    s.get_session(&tid(i), T0).expect("get").is_some()
}

engine_tests! {
/// Past the cap the oldest pending session goes first, never an
/// authenticated one, and with only authenticated sessions left a new one
/// is refused with nothing stored.
fn session_cap_evicts_the_oldest_pending_session_first() {
    let f = fixture(0);
    let s = &f.store;
    for i in 1..=3 {
        assert_eq!(
            create(s, i, T0 + 120 + i64::from(i), 3),
            Admission::Created { evicted: 0 }
        );
    }
    assert_eq!(s.session_counts(), counts(3, 0));
    // Session 1, the oldest, authenticates: it is safe from now on.
    assert!(s.update_session(&tid(1), T0 + 900, b"a1").expect("update"));
    assert_eq!(s.session_counts(), counts(2, 1));
    // A fourth: session 2 is now the oldest pending one.
    assert_eq!(create(s, 4, T0 + 124, 3), Admission::Created { evicted: 1 });
    assert!(live(s, 1) && !live(s, 2) && live(s, 3) && live(s, 4));
    assert!(!s.session_exists(&tid(2)).expect("exists"));
    assert_eq!(s.session_counts(), counts(2, 1));
    // The evicted session cannot be brought back by a late AuthenticateClient.
    assert!(!s.update_session(&tid(2), T0 + 900, b"a2").expect("update"));
    assert_eq!(s.session_counts(), counts(2, 1));
    // Then 3, then 4.
    assert_eq!(create(s, 5, T0 + 125, 3), Admission::Created { evicted: 1 });
    assert!(!live(s, 3) && live(s, 4) && live(s, 5));
    assert!(s.update_session(&tid(4), T0 + 900, b"a4").expect("update"));
    assert!(s.update_session(&tid(5), T0 + 900, b"a5").expect("update"));
    assert_eq!(s.session_counts(), counts(0, 3));
    // Only authenticated sessions: full, nothing stored, nothing evicted.
    assert_eq!(create(s, 6, T0 + 126, 3), Admission::Full);
    assert!(!s.session_exists(&tid(6)).expect("exists"));
    assert!(live(s, 1) && live(s, 4) && live(s, 5));
    assert_eq!(s.session_counts(), counts(0, 3));
    // An ended session makes room again.
    s.remove_session(&tid(4)).expect("remove");
    assert_eq!(s.session_counts(), counts(0, 2));
    assert_eq!(create(s, 6, T0 + 126, 3), Admission::Created { evicted: 0 });
    assert_eq!(
        s.get_session(&tid(6), T0).expect("get"),
        Some(vec![b'p', 6])
    );
    // Without a cap (0) nothing is evicted.
    for i in 10..20 {
        assert_eq!(create(s, i, T0 + 130, 0), Admission::Created { evicted: 0 });
    }
    assert_eq!(s.session_counts(), counts(11, 2));
}
}

engine_tests! {
/// A cap lowered below the live count is restored a few evictions at a time.
fn a_lowered_cap_is_caught_up_by_the_next_creations() {
    let f = fixture(0);
    let s = &f.store;
    for i in 0..40 {
        create(s, i, T0 + 120 + i64::from(i), 0);
    }
    assert_eq!(
        create(s, 100, T0 + 200, 10),
        Admission::Created { evicted: 16 }
    );
    assert_eq!(s.session_counts().total(), 25);
    assert_eq!(
        create(s, 101, T0 + 200, 10),
        Admission::Created { evicted: 16 }
    );
    assert_eq!(
        create(s, 102, T0 + 200, 10),
        Admission::Created { evicted: 1 }
    );
    assert_eq!(s.session_counts(), counts(10, 0));
    // The survivors are the newest.
    assert!((0..33).all(|i| !live(s, i)));
    assert!((33..40).all(|i| live(s, i)));
}
}

engine_tests! {
/// Pending and authenticated sessions expire each at their own time; the
/// sweeper removes both kinds, and the counts survive a reopen.
fn sessions_expire_by_phase_and_counts_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        create(&s, 1, T0 + 120, 100);
        create(&s, 2, T0 + 120, 100);
        create(&s, 3, T0 + 121, 100);
        assert!(s.update_session(&tid(2), T0 + 900, b"a2").expect("update"));
        assert_eq!(s.session_counts(), counts(2, 1));
        assert_eq!(s.get_session(&tid(1), T0 + 120).expect("get"), None);
        assert!(s.get_session(&tid(3), T0 + 120).expect("get").is_some());
        assert_eq!(s.sweep_sessions(T0 + 121).expect("sweep"), 1);
        assert!(!s.session_exists(&tid(1)).expect("exists"));
        assert_eq!(s.session_counts(), counts(1, 1));
        s.flush_blocking().expect("flush");
    }
    let s = open(dir.path());
    assert_eq!(s.session_counts(), counts(1, 1), "rebuilt at open");
    assert_eq!(s.sweep_sessions(T0 + 500).expect("sweep"), 1);
    assert_eq!(s.session_counts(), counts(0, 1));
    assert_eq!(
        s.get_session(&tid(2), T0 + 500).expect("get"),
        Some(b"a2".to_vec())
    );
    assert_eq!(s.sweep_sessions(T0 + 901).expect("sweep"), 1);
    assert_eq!(s.session_counts(), counts(0, 0));
    assert!(!s.session_exists(&tid(2)).expect("exists"));
}
}

// ---------------------------------------------------------------------------
// Several orders for one eUICC, and a delivered order that never reports.

engine_tests! {
fn a_delivered_order_does_not_block_the_euiccs_other_orders() {
    let f = fixture(3);
    let s = &f.store;
    // Order A delivered to E1, its installation result never came.
    let a = downloaded(s, 0, E1);
    // Order B linked to E1 and released; order C for anyone.
    let b = order(s, 1, Some(E1), Some("MATCH-B"), None, true);
    let c = order(s, 2, None, Some("MATCH-C"), None, true);
    // No matchingId: the released order B, not the delivered A.
    assert_eq!(s.resolve_order(&eid(E1), None, false).expect("b"), b);
    assert_eq!(s.resolve_order(&eid(E1), None, true).expect("b"), b);
    // A's own matchingId is a retry of A.
    assert_eq!(
        s.resolve_order(&eid(E1), Some("MATCH-0"), true)
            .expect("retry of a"),
        a
    );
    // C's matchingId: accepted by default; the literal rule refuses it
    // while B is pending for E1, but not because of A.
    assert_eq!(
        s.resolve_order(&eid(E1), Some("MATCH-C"), false)
            .expect("c"),
        c
    );
    assert_eq!(
        resolve_code_with(s, E1, Some("MATCH-C"), true),
        codes::MATCHING_ID_REFUSED
    );
    es9(
        s,
        Command::CancelOrder {
            operator: OP.into(),
            iccid: b.clone(),
            eid: Some(eid(E1)),
            matching_id: Some("MATCH-B".into()),
            final_status: smdpplus::store::FinalStatus::Available,
        },
        T0 + 5,
    )
    .expect("cancel b");
    assert_eq!(
        s.resolve_order(&eid(E1), Some("MATCH-C"), true)
            .expect("only the delivered order left: not pending"),
        c
    );
    assert_consistent(s);
}
}

engine_tests! {
fn a_delivered_order_expires_and_a_late_result_still_counts() {
    let f = fixture(2);
    let s = &f.store;
    let id = downloaded(s, 0, E1);
    let ttl = rec(s, &id)
        .expires_at
        .expect("a delivered order keeps its expiry");
    assert_eq!(s.due_expiries(ttl - 1).expect("due"), Vec::<Iccid>::new());
    assert_eq!(s.due_expiries(ttl).expect("due"), vec![id.clone()]);
    let a = es9(s, Command::Expire { iccid: id.clone() }, ttl).expect("expire");
    assert_eq!(a.record.state, State::Error);
    let out = s.outbox().expect("outbox");
    let last = out.last().expect("the operator hears of it");
    assert_eq!(last.point, POINT_BPP_INSTALLATION);
    assert_eq!(status_code(last), Some(failed(codes::ORDER_EXPIRED)));
    assert_eq!(last.eid.as_deref(), Some(E1));
    // The installation result arrives late: it still tells the truth.
    let data = [0xa0, 0x03, 0x80, 0x01, 0x00];
    let a = install(s, &id, true, &data, None, ttl + 60).expect("late result");
    assert_eq!(a.record.state, State::Installed);
    assert_eq!(a.record.error_reason, None);
    assert_eq!(s.outbox().expect("outbox").len(), out.len() + 1);

    // An order that expired before any delivery takes no installation result.
    let other = order(s, 1, None, Some("MATCH-1"), None, true);
    let t = rec(s, &other).expires_at.expect("expiry");
    es9(
        s,
        Command::Expire {
            iccid: other.clone(),
        },
        t,
    )
    .expect("expire");
    assert_eq!(
        code_of(install(s, &other, true, &data, None, t + 1)),
        codes::ICCID_INVALID_TRANSITION
    );
    assert_consistent(s);
}
}

// ---------------------------------------------------------------------------
// Bound packages kept for a retry in a later session (store::bound).

fn kept_package(e: &str, otpk: u8, expires_at: i64) -> KeptPackage {
    KeptPackage {
        v: KEPT_VERSION,
        eid: e.into(),
        dp_ci: vec![0xf5; 20],
        euicc_otpk: vec![0x04, otpk],
        metadata: vec![0xbf, 0x25, 0x00],
        bpp: vec![0xbf, 0x36, 0x01, otpk],
        expires_at,
    }
}

fn deliver_keeping(
    s: &Store,
    id: &Iccid,
    e: &str,
    retry: Option<RetryKind>,
    keep: Option<KeptPackage>,
    now: i64,
) -> Result<Applied> {
    es9(
        s,
        Command::BppDelivered {
            iccid: id.clone(),
            eid: eid(e),
            retry,
            keep: keep.map(Box::new),
        },
        now,
    )
}

/// An order delivered to E1 with a kept package (otPK 1, kept a day).
fn downloaded_keeping(s: &Store, i: usize) -> Iccid {
    let id = order(s, i, None, Some(&format!("MATCH-{i}")), None, true);
    authenticate(s, &id, E1, Some(&format!("MATCH-{i}")), 5, T0 + 1).expect("authenticate");
    deliver_keeping(
        s,
        &id,
        E1,
        None,
        Some(kept_package(E1, 1, T0 + 2 + 86_400)),
        T0 + 2,
    )
    .expect("delivered");
    assert_eq!(
        s.kept_package(&id, T0 + 3)
            .expect("kept")
            .map(|k| k.euicc_otpk),
        Some(vec![0x04, 1])
    );
    id
}

engine_tests! {
fn a_kept_package_is_written_with_the_delivery_and_replaced_or_kept_by_retries() {
    let f = fixture(2);
    let s = &f.store;
    let id = downloaded_keeping(s, 0);
    assert_eq!(last_event(s, &id).retry, None);

    // The same key again: the kept package stays as it is.
    authenticate(s, &id, E1, Some("MATCH-0"), 5, T0 + 10).expect("retry session");
    let a = deliver_keeping(s, &id, E1, Some(RetryKind::SameKey), None, T0 + 11).expect("same key");
    assert_eq!(a.record.state, State::Downloaded);
    let h = last_event(s, &id);
    assert_eq!(
        (h.event, h.from, h.to, h.retry),
        (
            Event::BppDelivered,
            Some(State::Downloaded),
            State::Downloaded,
            Some(RetryKind::SameKey)
        )
    );
    assert_eq!(
        s.kept_package(&id, T0 + 12).expect("kept").map(|k| k.bpp),
        Some(vec![0xbf, 0x36, 0x01, 1])
    );

    // A new key: the new binding replaces it.
    let a = deliver_keeping(
        s,
        &id,
        E1,
        Some(RetryKind::Rebind),
        Some(kept_package(E1, 2, T0 + 86_400)),
        T0 + 13,
    )
    .expect("rebind");
    assert_eq!(a.record.state, State::Downloaded);
    assert_eq!(last_event(s, &id).retry, Some(RetryKind::Rebind));
    assert_eq!(
        s.kept_package(&id, T0 + 14)
            .expect("kept")
            .map(|k| k.euicc_otpk),
        Some(vec![0x04, 2])
    );
    // A new binding with retries turned off: nothing kept.
    deliver_keeping(s, &id, E1, Some(RetryKind::Rebind), None, T0 + 15).expect("rebind");
    assert!(!s.has_kept_package(&id).expect("kept?"));

    // A delivery the store refuses keeps nothing: another EID.
    let other = order(s, 1, Some(E1), Some("MATCH-1"), None, true);
    let r = deliver_keeping(
        s,
        &other,
        E2,
        None,
        Some(kept_package(E2, 3, T0 + 86_400)),
        T0 + 16,
    );
    assert_eq!(code_of(r), codes::EID_REFUSED);
    assert!(!s.has_kept_package(&other).expect("kept?"));
    // Nor one refused for the order's expiry (committed as Error).
    let t = rec(s, &other).expires_at.expect("expiry");
    let r = deliver_keeping(s, &other, E1, None, Some(kept_package(E1, 3, t + 9)), t);
    assert_eq!(code_of(r), codes::ORDER_EXPIRED);
    assert_eq!(rec(s, &other).state, State::Error);
    assert!(!s.has_kept_package(&other).expect("kept?"));
    assert_consistent(s);
}
}

engine_tests! {
fn a_kept_package_expires_with_its_own_time_and_never_outlives_the_order() {
    let f = fixture(3);
    let s = &f.store;
    let id = order(s, 0, None, Some("MATCH-0"), None, true);
    authenticate(s, &id, E1, Some("MATCH-0"), 5, T0 + 1).expect("authenticate");
    let order_expiry = rec(s, &id).expires_at.expect("expiry");
    // Asked for longer than the order lives: clamped to the order's expiry.
    deliver_keeping(
        s,
        &id,
        E1,
        None,
        Some(kept_package(E1, 1, order_expiry + 1000)),
        T0 + 2,
    )
    .expect("delivered");
    let k = s.kept_package(&id, T0 + 3).expect("read").expect("kept");
    assert_eq!(k.expires_at, order_expiry);
    // Past its expiry it is not served, and the read removes it.
    assert!(s.has_kept_package(&id).expect("kept?"));
    assert_eq!(s.kept_package(&id, order_expiry).expect("read"), None);
    assert!(!s.has_kept_package(&id).expect("kept?"));
    assert_eq!(rec(s, &id).state, State::Downloaded);

    // The sweep removes only the expired ones.
    let early = downloaded_keeping(s, 1);
    let late = order(s, 2, None, Some("MATCH-2"), None, true);
    authenticate(s, &late, E1, Some("MATCH-2"), 5, T0 + 1).expect("authenticate");
    deliver_keeping(
        s,
        &late,
        E1,
        None,
        Some(kept_package(E1, 2, T0 + 2 + 2 * 86_400)),
        T0 + 2,
    )
    .expect("delivered");
    assert_eq!(s.sweep_kept_packages(T0 + 3).expect("sweep"), 0);
    assert_eq!(s.sweep_kept_packages(T0 + 2 + 86_400).expect("sweep"), 1);
    assert!(!s.has_kept_package(&early).expect("kept?"));
    assert!(s.has_kept_package(&late).expect("kept?"));
    assert_consistent(s);
}
}

engine_tests! {
fn a_kept_package_is_erased_on_every_exit_from_downloaded() {
    let f = fixture(6);
    let s = &f.store;
    let data = [0xa0, 0x03, 0x80, 0x01, 0x00];
    let gone = |id: &Iccid, state: State| {
        assert_eq!(rec(s, id).state, state);
        assert!(
            !s.has_kept_package(id).expect("kept?"),
            "kept package left in {state}"
        );
    };

    // Installed.
    let id = downloaded_keeping(s, 0);
    install(s, &id, true, &data, None, T0 + 5).expect("installed");
    gone(&id, State::Installed);

    // Installation failure: Error; then cancelled to Available.
    let id = downloaded_keeping(s, 1);
    install(s, &id, false, &data, Some("bad"), T0 + 5).expect("failed");
    gone(&id, State::Error);
    es9(
        s,
        Command::CancelOrder {
            operator: OP.into(),
            iccid: id.clone(),
            eid: Some(eid(E1)),
            matching_id: Some("MATCH-1".into()),
            final_status: smdpplus::store::FinalStatus::Available,
        },
        T0 + 6,
    )
    .expect("cancel");
    gone(&id, State::Available);

    // A terminal CancelSession.
    let id = downloaded_keeping(s, 2);
    cancelled(s, &id, END_USER_REJECTION, "end user rejection", T0 + 5).expect("cancelled");
    gone(&id, State::Error);

    // The order's time to live.
    let id = downloaded_keeping(s, 3);
    let t = rec(s, &id).expires_at.expect("expiry");
    es9(s, Command::Expire { iccid: id.clone() }, t).expect("expire");
    gone(&id, State::Error);

    // The download-attempt limit.
    let id = downloaded_keeping(s, 4);
    let r = authenticate(s, &id, E1, Some("MATCH-4"), 1, T0 + 5);
    assert_eq!(code_of(r), codes::DOWNLOAD_RETRIES_EXCEEDED);
    gone(&id, State::Error);

    // The confirmation-code limit (a retry session of a delivered order).
    let id = order(s, 5, None, Some("MATCH-5"), Some("1234"), true);
    authenticate(s, &id, E1, Some("MATCH-5"), 5, T0 + 1).expect("authenticate");
    check_cc(s, &id, TID, Some(hash_cc(b"1234", TID)), 3, T0 + 1).expect("cc");
    deliver_keeping(
        s,
        &id,
        E1,
        None,
        Some(kept_package(E1, 1, T0 + 86_400)),
        T0 + 2,
    )
    .expect("delivered");
    assert!(s.has_kept_package(&id).expect("kept?"));
    for _ in 0..3 {
        let _ = check_cc(s, &id, TID, Some(vec![0; 32]), 3, T0 + 3);
    }
    gone(&id, State::Error);
    assert_consistent(s);
}
}
