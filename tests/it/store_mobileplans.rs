//! The Mobile Plans records in the store (`u/` orders, `k/` `l/` `d/` `r/` `w/`
//! indexes, `g/` balances) against a real [`Store`]: the order is written in
//! the transaction of its profile's confirmOrder (a refused order rolls the
//! confirmOrder back), the release schedule, cancellation with its balance
//! taken back, and after every step the raw index entries are exactly the
//! ones the records imply.

use crate::common::store::engine_tests;
use crate::common::store::{self, iccid, Fixture, T0};
use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::balance::{BalanceType, Credit};
use smdpplus::store::lifecycle::State;
use smdpplus::store::mobileplans::{
    order_index_keys, Choice, MobilePlansOrder, NewOrder, OrderEvent, OrderKind, OrderStatus,
    PurchaseMetadata, Registration,
};
use smdpplus::store::{Command, Ctx, FinalStatus, Store};
use std::collections::BTreeSet;

const OP: &str = "OP-ONE";
const E1: &str = "89049032123451234512345678901235";

fn eid() -> Eid {
    store::eid(E1)
}

fn ctx(now: i64) -> Ctx<'static> {
    store::ctx("test", now)
}

/// A store in a fresh directory with `n` Available profiles of OP.
fn fixture(n: usize) -> Fixture {
    Fixture::with_profiles(n, OP, "T")
}

fn new_order(txid: &str, release_at: Option<i64>) -> NewOrder {
    NewOrder {
        transaction_id: txid.into(),
        operator: OP.into(),
        kind: OrderKind::Profile,
        eid: Some(eid()),
        iccid: None,
        registration: Registration::Now,
        release_at,
        hold_until: None,
        metadata: PurchaseMetadata {
            user_account: Choice::New,
            purchase_instrument: Choice::New,
            line: Choice::New,
            plan_name: "plan".into(),
        },
        credit: Some(Credit {
            id: None,
            balance_type: BalanceType::ModirectPayg,
            data_kb: 2_000_000,
            expires_at: T0 + 86400,
            locations: vec![],
            plan_name: "plan".into(),
        }),
    }
}

fn link(store: &Store, i: usize) {
    store
        .apply(
            &Command::DownloadOrder {
                operator: OP.into(),
                eid: Some(eid()),
                iccid: Some(iccid(i)),
                profile_type: None,
            },
            &ctx(T0),
        )
        .expect("downloadOrder");
}

fn confirm(i: usize, release: bool) -> Command {
    Command::ConfirmOrder {
        operator: OP.into(),
        iccid: iccid(i),
        eid: Some(eid()),
        matching_id: None,
        cc_hashes: vec![],
        smds_address: None,
        release,
    }
}

fn state(store: &Store, i: usize) -> State {
    store.get(&iccid(i)).expect("get").expect("profile").state
}

/// The raw index entries are exactly those the order records imply.
fn check_indexes(store: &Store) {
    let want: BTreeSet<(Vec<u8>, Vec<u8>)> = store
        .mp_orders()
        .expect("orders")
        .iter()
        .flat_map(|o| {
            order_index_keys(o)
                .into_iter()
                .map(|k| (k, o.id.to_be_bytes().to_vec()))
        })
        .collect();
    if let Some(sled) = store.as_sled() {
        let have: BTreeSet<(Vec<u8>, Vec<u8>)> = sled
            .mp_index_entries()
            .expect("entries")
            .into_iter()
            .collect();
        assert_eq!(have, want);
    }
    // Every engine: the lookups find exactly what the records imply.
    let orders = store.mp_orders().expect("orders");
    let far = i64::MAX / 2;
    let due = |f: &dyn Fn(&MobilePlansOrder) -> bool| -> Vec<u64> {
        orders.iter().filter(|o| f(o)).map(|o| o.id).collect()
    };
    let mut releases = store.mp_due_releases(far).expect("releases");
    releases.sort();
    assert_eq!(
        releases,
        due(&|o| o.release_pending() && o.release_at.is_some())
    );
    let mut holds = store.mp_due_holds(far).expect("holds");
    holds.sort();
    assert_eq!(holds, due(&|o| o.hold_pending() && o.hold_until.is_some()));
    for o in &orders {
        let by_tx = store
            .mp_order_by_transaction(&o.transaction_id)
            .expect("by transactionId");
        assert_eq!(by_tx.as_ref(), Some(o));
        let line = Iccid::parse(&o.iccid).expect("iccid");
        let of_line: Vec<u64> = store
            .mp_orders_for_iccid(&line)
            .expect("orders of the line")
            .iter()
            .map(|x| x.id)
            .collect();
        let want: Vec<u64> = orders
            .iter()
            .filter(|x| x.iccid == o.iccid)
            .map(|x| x.id)
            .collect();
        assert_eq!(of_line, want);
    }
}

engine_tests! {
fn the_order_is_written_with_its_confirm_order_or_not_at_all() {
    let Fixture { dir: _d, store } = fixture(2);
    link(&store, 0);
    let o = store
        .mp_confirm_profile_order(&confirm(0, true), &ctx(T0), &new_order("T1", None))
        .expect("order");
    assert_eq!(state(&store, 0), State::Released);
    assert_eq!(o.iccid, iccid(0).as_str());
    assert_eq!(
        o.matching_id,
        store.get(&iccid(0)).expect("get").expect("p").matching_id
    );
    let bucket = o.bucket.clone().expect("credited");
    let bal = store.balance(&iccid(0)).expect("balance").expect("record");
    assert_eq!(bal.buckets.len(), 1);
    assert_eq!(bal.buckets[0].id, bucket);
    assert_eq!(bal.buckets[0].order, Some(o.id));
    check_indexes(&store);

    // The same transactionId for another profile: refused, and the
    // confirmOrder of that profile is rolled back with it.
    link(&store, 1);
    let e = store
        .mp_confirm_profile_order(&confirm(1, true), &ctx(T0), &new_order("T1", None))
        .expect_err("one order per transactionId");
    assert!(e.message.contains("already has an order"), "{e:?}");
    assert_eq!(state(&store, 1), State::Linked);
    assert!(store.balance(&iccid(1)).expect("balance").is_none());
    assert_eq!(store.mp_orders().expect("orders").len(), 1);
    check_indexes(&store);
    assert_eq!(
        store
            .mp_latest_for_eid(&eid())
            .expect("by eid")
            .map(|o| o.id),
        Some(o.id)
    );
    assert_eq!(
        store
            .mp_order_by_transaction("T1")
            .expect("by txid")
            .map(|o| o.id),
        Some(o.id)
    );
}
}

engine_tests! {
fn the_release_schedule_and_its_outcomes() {
    let Fixture { dir: _d, store } = fixture(3);
    let at = T0 + 600;
    for i in 0..3 {
        link(&store, i);
        store
            .mp_confirm_profile_order(
                &confirm(i, false),
                &ctx(T0),
                &new_order(&format!("R{i}"), Some(at + i as i64)),
            )
            .expect("order");
        assert_eq!(state(&store, i), State::Confirmed);
        let p = store.get(&iccid(i)).expect("get").expect("p");
        assert_eq!(p.expires_at, Some(at + i as i64 + 7 * 24 * 3600));
    }
    check_indexes(&store);
    assert!(store.mp_due_releases(at - 1).expect("due").is_empty());
    let due = store.mp_due_releases(at + 1).expect("due");
    assert_eq!(due.len(), 2);

    // Released on time: the schedule entry goes with it.
    let o0 = store.mp_order_by_transaction("R0").expect("o").expect("o");
    let release = Command::ReleaseProfile {
        operator: OP.into(),
        iccid: iccid(0),
    };
    store
        .mp_release(o0.id, &release, &ctx(at))
        .expect("release");
    assert_eq!(state(&store, 0), State::Released);
    let o0 = store.mp_order(o0.id).expect("o").expect("o");
    assert_eq!(o0.released_at, Some(at));
    assert!(!o0.release_pending());
    check_indexes(&store);
    // Released twice: refused, nothing changes.
    assert!(store.mp_release(o0.id, &release, &ctx(at)).is_err());

    // Withdrawn: cancelled at the SM-DP+, its credit taken back, off the schedule.
    let o1 = store.mp_order_by_transaction("R1").expect("o").expect("o");
    let p1 = store.get(&iccid(1)).expect("get").expect("p");
    let cancel = Command::CancelOrder {
        operator: OP.into(),
        iccid: iccid(1),
        eid: Some(eid()),
        matching_id: p1.matching_id.clone(),
        final_status: FinalStatus::Available,
    };
    let ended = store
        .mp_end_order(
            o1.id,
            OrderEvent::Withdraw,
            Some((&cancel, &ctx(T0 + 1))),
            T0 + 1,
        )
        .expect("withdraw");
    assert_eq!(ended.status, OrderStatus::Withdrawn);
    assert_eq!(state(&store, 1), State::Available);
    let bal = store.balance(&iccid(1)).expect("b").expect("record");
    assert!(bal.buckets.is_empty(), "{bal:?}");
    check_indexes(&store);
    assert!(!store
        .mp_due_releases(at + 10)
        .expect("due")
        .contains(&o1.id));

    // A refusal of the order's status table rolls the cancelOrder back
    // too (an order that is not held does not lapse).
    let o2 = store.mp_order_by_transaction("R2").expect("o").expect("o");
    let p2 = store.get(&iccid(2)).expect("get").expect("p");
    let cancel = Command::CancelOrder {
        operator: OP.into(),
        iccid: iccid(2),
        eid: Some(eid()),
        matching_id: p2.matching_id.clone(),
        final_status: FinalStatus::Available,
    };
    assert!(store
        .mp_end_order(o2.id, OrderEvent::Lapse, Some((&cancel, &ctx(T0))), T0)
        .is_err());
    assert_eq!(state(&store, 2), State::Confirmed);

    // A release that cannot be done leaves the schedule with its reason.
    store
        .mp_release_failed(o2.id, "gone", at + 5)
        .expect("failed");
    let o2 = store.mp_order(o2.id).expect("o").expect("o");
    assert_eq!(o2.release_error.as_deref(), Some("gone"));
    assert!(store.mp_due_releases(at + 10).expect("due").is_empty());
    check_indexes(&store);
}
}

engine_tests! {
fn balance_orders_credit_in_the_same_transaction() {
    let Fixture { dir: _d, store } = fixture(0);
    let line = iccid(900);
    let mut new = new_order("B1", None);
    new.kind = OrderKind::Balance;
    new.eid = None;
    new.iccid = Some(line.clone());
    let o = store.mp_place_balance_order(&new, T0).expect("order");
    assert_eq!(o.kind, OrderKind::Balance);
    let bal = store.balance(&line).expect("b").expect("record");
    assert_eq!(bal.buckets[0].remaining_kb, 2_000_000);
    assert!(store.sim_known(&line).expect("known"));
    // The same transactionId again: refused, no second credit.
    assert!(store.mp_place_balance_order(&new, T0).is_err());
    assert_eq!(
        store.balance(&line).expect("b").expect("r").buckets.len(),
        1
    );
    assert_eq!(
        store.mp_latest_for_iccid(&line).expect("l").map(|o| o.id),
        Some(o.id)
    );
    check_indexes(&store);
    // Usage debits it; another operator may not.
    let d = store
        .debit_usage(OP, &line, 500_000, None, T0 + 1)
        .expect("debit");
    assert_eq!(d.uncovered_kb, 0);
    assert_eq!(d.record.buckets[0].remaining_kb, 1_500_000);
    assert!(store.debit_usage("OTHER", &line, 1, None, T0 + 1).is_err());
    assert!(store.debit_usage(OP, &iccid(901), 1, None, T0 + 1).is_err());
}
}

engine_tests! {
fn portal_holds_are_indexed_until_confirmed_or_lapsed() {
    let Fixture { dir: _d, store } = fixture(3);
    let hold = T0 + 1800;
    for i in 0..3 {
        link(&store, i);
        let mut n = new_order(&format!("H{i}"), None);
        n.hold_until = Some(hold + i as i64);
        store
            .mp_confirm_profile_order(&confirm(i, false), &ctx(T0), &n)
            .expect("order");
        assert_eq!(state(&store, i), State::Confirmed, "held, not released");
    }
    check_indexes(&store);
    assert!(store.mp_due_holds(hold - 1).expect("due").is_empty());
    assert_eq!(store.mp_due_holds(hold + 1).expect("due").len(), 2);
    assert!(store.mp_due_releases(hold + 10).expect("due").is_empty());

    // Confirmed: released in the same transaction, off the holds, and the
    // order's time to live counts from now.
    let o0 = store.mp_order_by_transaction("H0").expect("o").expect("o");
    let release = Command::ReleaseProfile {
        operator: OP.into(),
        iccid: iccid(0),
    };
    let t = T0 + 60;
    let c = store
        .mp_confirm_hold(o0.id, Some((&release, &ctx(t))), t)
        .expect("confirm");
    assert_eq!(c.confirmed_at, Some(t));
    assert!(!c.hold_pending());
    assert_eq!(state(&store, 0), State::Released);
    check_indexes(&store);
    assert!(
        store.mp_confirm_hold(o0.id, None, t).is_err(),
        "confirmed twice"
    );

    // Lapsed: cancelled at the SM-DP+ with the order, off the holds.
    let o1 = store.mp_order_by_transaction("H1").expect("o").expect("o");
    let p1 = store.get(&iccid(1)).expect("get").expect("p");
    let cancel = Command::CancelOrder {
        operator: OP.into(),
        iccid: iccid(1),
        eid: Some(eid()),
        matching_id: p1.matching_id.clone(),
        final_status: FinalStatus::Available,
    };
    let ended = store
        .mp_end_order(
            o1.id,
            OrderEvent::Lapse,
            Some((&cancel, &ctx(hold + 2))),
            hold + 2,
        )
        .expect("lapse");
    assert_eq!(ended.status, OrderStatus::Lapsed);
    assert_eq!(state(&store, 1), State::Available);
    check_indexes(&store);
    let due: Vec<u64> = store.mp_due_holds(hold + 10).expect("due");
    let o2 = store.mp_order_by_transaction("H2").expect("o").expect("o");
    assert_eq!(due, vec![o2.id]);
    // History keys (`h/`) are not mistaken for holds.
    assert!(!store.history(&iccid(1)).expect("history").is_empty());
}
}
