//! The outbox index against a real [`Store`] in a fresh sled directory:
//! items by due time and by operator, written and removed in the
//! transaction of their item, a failed attempt moving its due-time entry,
//! the per-operator depth and oldest item, and the one-time build of the
//! index for a store written before it existed.

use crate::common::store::engine_tests;
use crate::common::store::{open, pool_iccid as iccid, profiles, T0};
use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::{outbox_index_keys, Command, Ctx, FinalStatus, OutboxItem, Store};
use std::collections::BTreeSet;

const EID: &str = "89049032123451234512345678901235";

/// `n` profiles of each operator in `ops`.
fn inventory(store: &Store, ops: &[&str], n: usize) {
    for (o, op) in ops.iter().enumerate() {
        store
            .add_profiles(&profiles(o, 0..n, op, "T"), "admin", T0)
            .expect("inventory");
    }
}

/// downloadOrder then cancelOrder for `op`'s profile: one outbox item
/// (notification point 100) with its event at `now`.
fn order_and_cancel(store: &Store, op: &str, iccid: &Iccid, now: i64) {
    let ctx = Ctx {
        caller: op,
        now,
        idem: None,
    };
    store
        .apply(
            &Command::DownloadOrder {
                operator: op.into(),
                eid: Some(Eid::parse(EID).expect("eid")),
                iccid: Some(iccid.clone()),
                profile_type: None,
            },
            &ctx,
        )
        .expect("downloadOrder");
    let a = store
        .apply(
            &Command::CancelOrder {
                operator: op.into(),
                iccid: iccid.clone(),
                eid: Some(Eid::parse(EID).expect("eid")),
                matching_id: None,
                final_status: FinalStatus::Available,
            },
            &ctx,
        )
        .expect("cancelOrder");
    assert!(a.enqueued, "a cancelled order notifies the operator");
}

/// The raw index entries are exactly those the stored items imply.
fn assert_index_consistent(store: &Store) {
    let want: BTreeSet<(Vec<u8>, Vec<u8>)> = store
        .outbox()
        .expect("outbox")
        .iter()
        .flat_map(outbox_index_keys)
        .collect();
    if let Some(sled) = store.as_sled() {
        let have: BTreeSet<(Vec<u8>, Vec<u8>)> = sled
            .outbox_index_entries()
            .expect("entries")
            .into_iter()
            .collect();
        assert_eq!(have, want);
    }
}

fn depth(store: &Store, op: &str) -> (i64, Option<i64>) {
    store
        .outbox_depths()
        .expect("depths")
        .into_iter()
        .find(|(o, _, _)| o == op)
        .map(|(_, n, oldest)| (n, oldest))
        .unwrap_or((0, None))
}

fn ids(items: &[OutboxItem]) -> Vec<u64> {
    items.iter().map(|i| i.id).collect()
}

engine_tests! {
fn due_items_per_operator_in_due_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    inventory(&store, &["op-a", "op-b"], 3);
    for i in 0..3 {
        order_and_cancel(&store, "op-a", &iccid(0, i), T0 + i as i64);
        order_and_cancel(&store, "op-b", &iccid(1, i), T0 + 10 + i as i64);
    }
    assert_index_consistent(&store);
    let all = store.outbox().expect("outbox");
    let a_ids: Vec<u64> = all
        .iter()
        .filter(|i| i.operator == "op-a")
        .map(|i| i.id)
        .collect();
    assert_eq!(a_ids.len(), 3);

    // Nothing is due before the first event; then only that operator's items.
    let (due, next) = store.outbox_due("op-a", T0 * 1000 - 1, 100).expect("due");
    assert!(due.is_empty());
    assert_eq!(next, Some(T0 * 1000));
    let (due, next) = store
        .outbox_due("op-a", T0 * 1000 + 1000, 100)
        .expect("due");
    assert_eq!(ids(&due), a_ids[..2].to_vec());
    assert_eq!(next, Some((T0 + 2) * 1000));
    let (due, next) = store.outbox_due("op-a", i64::MAX, 100).expect("due");
    assert_eq!(ids(&due), a_ids);
    assert!(due.iter().all(|i| i.operator == "op-a"));
    assert_eq!(next, None);
    // The cap: at most `limit`, and the next one is reported as due.
    let (due, next) = store.outbox_due("op-a", i64::MAX, 2).expect("due");
    assert_eq!(ids(&due), a_ids[..2].to_vec());
    assert_eq!(next, Some((T0 + 2) * 1000));
    // An operator with no items, and one never seen.
    let (due, next) = store.outbox_due("op-c", i64::MAX, 100).expect("due");
    assert!(due.is_empty() && next.is_none());

    assert_eq!(depth(&store, "op-a"), (3, Some(T0)));
    assert_eq!(depth(&store, "op-b"), (3, Some(T0 + 10)));

    // A failed attempt moves the item behind the others in due order.
    let first = all
        .iter()
        .find(|i| i.id == a_ids[0])
        .expect("first")
        .clone();
    store
        .outbox_failed(&first, "HTTP 500", (T0 + 100) * 1000)
        .expect("failed");
    assert_index_consistent(&store);
    let (due, next) = store
        .outbox_due("op-a", (T0 + 50) * 1000, 100)
        .expect("due");
    assert_eq!(ids(&due), a_ids[1..].to_vec());
    assert_eq!(next, Some((T0 + 100) * 1000));
    let (due, _) = store.outbox_due("op-a", i64::MAX, 100).expect("due");
    assert_eq!(ids(&due), vec![a_ids[1], a_ids[2], a_ids[0]]);
    assert_eq!(due[2].attempts, 1);
    assert_eq!(due[2].last_error.as_deref(), Some("HTTP 500"));
    // Still the oldest item by event time.
    assert_eq!(depth(&store, "op-a"), (3, Some(T0)));

    // Delivery removes the item and both index entries.
    store.outbox_delivered(a_ids[0]).expect("delivered");
    store
        .outbox_delivered(a_ids[0])
        .expect("a repeat is harmless");
    assert_index_consistent(&store);
    assert_eq!(depth(&store, "op-a"), (2, Some(T0 + 1)));
    for id in &a_ids[1..] {
        store.outbox_delivered(*id).expect("delivered");
    }
    assert_eq!(depth(&store, "op-a"), (0, None));
    let (due, next) = store.outbox_due("op-a", i64::MAX, 100).expect("due");
    assert!(due.is_empty() && next.is_none());
    assert_eq!(depth(&store, "op-b").0, 3);
    assert_index_consistent(&store);
}
}

engine_tests! {
fn depths_are_rebuilt_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        inventory(&store, &["op-a", "op-b"], 2);
        order_and_cancel(&store, "op-a", &iccid(0, 0), T0);
        order_and_cancel(&store, "op-a", &iccid(0, 1), T0 + 5);
        order_and_cancel(&store, "op-b", &iccid(1, 0), T0 + 7);
        store.flush_blocking().expect("flush");
    }
    let store = open(dir.path());
    assert_eq!(depth(&store, "op-a"), (2, Some(T0)));
    assert_eq!(depth(&store, "op-b"), (1, Some(T0 + 7)));
}
}

/// A store written before the index existed: items under `o/` only. The
/// first open builds their entries; the items are then due as usual.
#[test]
fn index_is_built_for_a_store_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before: Vec<OutboxItem> = {
        let store = open(dir.path());
        inventory(&store, &["op-a", "op-b"], 3);
        for i in 0..3 {
            order_and_cancel(&store, "op-a", &iccid(0, i), T0 + i as i64);
        }
        order_and_cancel(&store, "op-b", &iccid(1, 0), T0 + 9);
        store.flush_blocking().expect("flush");
        store.outbox().expect("outbox")
    };
    // Take the index and its marker away, as in a store of the older layout.
    {
        // sled lets go of its lock a moment after the store is dropped.
        let mut tries = 0;
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if tries < 40 => {
                    tries += 1;
                    eprintln!("waiting for the sled lock: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("sled: {e}"),
            }
        };
        let tree = db.open_tree("smdpplus").expect("tree");
        let mut removed = 0;
        for p in [&b"od/"[..], b"oi/", b"om/"] {
            for kv in tree.scan_prefix(p) {
                let (k, _) = kv.expect("kv");
                tree.remove(k).expect("remove");
                removed += 1;
            }
        }
        assert_eq!(removed, 2 * before.len() + 1);
        db.flush().expect("flush");
    }
    let store = open(dir.path());
    assert_eq!(store.outbox().expect("outbox"), before);
    assert_index_consistent(&store);
    assert_eq!(depth(&store, "op-a"), (3, Some(T0)));
    assert_eq!(depth(&store, "op-b"), (1, Some(T0 + 9)));
    let (due, _) = store.outbox_due("op-a", i64::MAX, 100).expect("due");
    assert_eq!(due.len(), 3);
    // New items after the migration are indexed as usual.
    order_and_cancel(&store, "op-b", &iccid(1, 1), T0 + 20);
    assert_index_consistent(&store);
    assert_eq!(depth(&store, "op-b").0, 2);
}
