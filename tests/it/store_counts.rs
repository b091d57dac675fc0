//! The profile counts the sled engine keeps in the store so that it
//! starts without reading every record: deltas folded into the base as
//! they accumulate, read back at open, built once for a store written
//! before they existed, and checked and repaired by `smdpplus store check`.

use crate::common::store::{open, profiles, T0};
use smdpplus::ids::Eid;
use smdpplus::store::lifecycle::State;
use smdpplus::store::{Command, Ctx, FinalStatus, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;

const EID: &str = "89049032123451234512345678901235";

fn ctx(now: i64) -> Ctx<'static> {
    Ctx {
        caller: "op-a",
        now,
        idem: None,
    }
}

/// downloadOrder by profile type, then cancelOrder back to Available:
/// two transitions of one profile of `op-a`'s pool `T`.
fn order_and_cancel(store: &Store, now: i64) {
    let eid = Eid::parse(EID).expect("eid");
    let a = store
        .apply(
            &Command::DownloadOrder {
                operator: "op-a".into(),
                eid: Some(eid.clone()),
                iccid: None,
                profile_type: Some("T".into()),
            },
            &ctx(now),
        )
        .expect("downloadOrder");
    let iccid = smdpplus::ids::Iccid::parse(&a.record.iccid).expect("allocated ICCID");
    store
        .apply(
            &Command::CancelOrder {
                operator: "op-a".into(),
                iccid,
                eid: Some(eid),
                matching_id: None,
                final_status: FinalStatus::Available,
            },
            &ctx(now),
        )
        .expect("cancelOrder");
}

/// One downloadOrder that stays open (Linked).
fn order(store: &Store, now: i64) {
    store
        .apply(
            &Command::DownloadOrder {
                operator: "op-a".into(),
                eid: Some(Eid::parse(EID).expect("eid")),
                iccid: None,
                profile_type: Some("T".into()),
            },
            &ctx(now),
        )
        .expect("downloadOrder");
}

fn counts(store: &Store) -> BTreeMap<State, i64> {
    store
        .counts()
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect()
}

fn pools(store: &Store) -> BTreeMap<(String, String), i64> {
    store
        .available_by_pool()
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect()
}

/// The raw sled tree of a closed store (sled lets go of its lock a moment
/// after the store is dropped).
fn raw_tree(dir: &Path) -> (sled::Db, sled::Tree) {
    let mut tries = 0;
    let db = loop {
        match sled::open(dir) {
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
    (db, tree)
}

fn keys_under(tree: &sled::Tree, prefix: &[u8]) -> usize {
    tree.scan_prefix(prefix).count()
}

#[test]
fn counts_survive_folds_and_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .add_profiles(&profiles(0, 0..10, "op-a", "T"), "admin", T0)
        .expect("inventory");
    store
        .add_profiles(&profiles(1, 0..4, "op-b", "U"), "admin", T0)
        .expect("inventory");
    // 2 x 2100 transitions: more than one fold's worth of deltas.
    for i in 0..2100 {
        order_and_cancel(&store, T0 + i);
    }
    for i in 0..3 {
        order(&store, T0 + 3000 + i);
    }
    let want_states = BTreeMap::from([(State::Available, 11), (State::Linked, 3)]);
    let want_pools = BTreeMap::from([
        (("op-a".to_owned(), "T".to_owned()), 7),
        (("op-b".to_owned(), "U".to_owned()), 4),
    ]);
    assert_eq!(counts(&store), want_states);
    assert_eq!(pools(&store), want_pools);
    let sled = store.as_sled().expect("sled");
    let (held, scanned) = sled.check_counts().expect("check");
    assert_eq!(held, scanned);
    assert_eq!(held.state(State::Linked), 3);
    store.flush_blocking().expect("flush");
    drop(store);

    {
        // Folded as they accumulated: far fewer deltas than transitions.
        let (_db, tree) = raw_tree(dir.path());
        let deltas = keys_under(&tree, b"cd/");
        assert!(deltas < 4096, "{deltas} deltas left unfolded");
        assert!(keys_under(&tree, b"cb/") >= 3, "base counts are stored");
    }
    let store = open(dir.path());
    assert_eq!(counts(&store), want_states);
    assert_eq!(pools(&store), want_pools);
    // Opening folded what was left.
    store.flush_blocking().expect("flush");
    drop(store);
    let (_db, tree) = raw_tree(dir.path());
    assert_eq!(keys_under(&tree, b"cd/"), 0);
}

#[test]
fn a_store_without_kept_counts_is_counted_once_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        store
            .add_profiles(&profiles(0, 0..6, "op-a", "T"), "admin", T0)
            .expect("inventory");
        order(&store, T0);
        store.flush_blocking().expect("flush");
    }
    {
        // As in a store written before the counts were kept.
        let (db, tree) = raw_tree(dir.path());
        for p in [&b"cm/"[..], b"cb/", b"cd/"] {
            for kv in tree.scan_prefix(p) {
                tree.remove(kv.expect("kv").0).expect("remove");
            }
        }
        db.flush().expect("flush");
    }
    let store = open(dir.path());
    assert_eq!(
        counts(&store),
        BTreeMap::from([(State::Available, 5), (State::Linked, 1)])
    );
    let (held, scanned) = store
        .as_sled()
        .expect("sled")
        .check_counts()
        .expect("check");
    assert_eq!(held, scanned);
    assert_eq!(held.state(State::Available), 5);
}

fn store_check(dir: &Path, repair: bool) -> (bool, String) {
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_smdpplus"));
    cmd.args(["store", "check", "--data-dir"]).arg(dir);
    if repair {
        cmd.arg("--repair");
    }
    let out = cmd.output().expect("run smdpplus store check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn store_check_finds_and_repairs_wrong_counts() {
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("db");
    {
        let store = Store::open(&db, Default::default()).expect("open");
        store
            .add_profiles(&profiles(0, 0..8, "op-a", "T"), "admin", T0)
            .expect("inventory");
        order(&store, T0);
        store.flush_blocking().expect("flush");
    }
    let (ok, out) = store_check(data.path(), false);
    assert!(ok, "{out}");
    assert!(
        out.contains("counts consistent: 8 profiles, 1 pools"),
        "{out}"
    );

    // Damage the kept Available count.
    {
        let (db, tree) = raw_tree(&db);
        tree.insert(b"cb/sAvailable", &100i64.to_be_bytes()[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let (ok, out) = store_check(data.path(), false);
    assert!(!ok, "a wrong count must fail the check: {out}");
    assert!(out.contains("Available") && out.contains("100"), "{out}");
    assert!(out.contains("store check --repair"), "{out}");

    let (ok, out) = store_check(data.path(), true);
    assert!(ok, "{out}");
    assert!(out.contains("repaired"), "{out}");
    let (ok, out) = store_check(data.path(), false);
    assert!(ok && out.contains("counts consistent"), "{out}");
    let store = Store::open(&db, Default::default()).expect("open");
    assert_eq!(
        counts(&store),
        BTreeMap::from([(State::Available, 7), (State::Linked, 1)])
    );
}
