//! Identifiers used once within a window (GetBalance's
//! `X-MS-DM-TransactionId`), kept in the real store.

use crate::common::store::engine_tests;
use crate::common::store::{open, Fixture, T0};

engine_tests! {
fn a_use_is_refused_within_its_window_and_accepted_after_it() {
    let f = Fixture::empty();
    let s = &f.store;
    assert!(s.first_use("a", T0, 60).expect("use"));
    assert!(
        !s.first_use("a", T0 + 59, 60).expect("use"),
        "within the window"
    );
    assert!(s.first_use("b", T0 + 59, 60).expect("use"), "another id");
    assert!(
        s.first_use("a", T0 + 60, 60).expect("use"),
        "the window is over"
    );
    assert!(
        !s.first_use("a", T0 + 100, 60).expect("use"),
        "the window starts again from the accepted use"
    );
}
}

engine_tests! {
fn uses_survive_a_reopen() {
    let f = Fixture::empty();
    assert!(f.store.first_use("kept", T0, 3600).expect("use"));
    f.store.flush_blocking().expect("flush");
    let dir = f.dir;
    drop(f.store);
    let store = open(dir.path());
    assert!(!store.first_use("kept", T0 + 10, 3600).expect("use"));
}
}

engine_tests! {
fn pruning_forgets_old_uses_then_the_oldest_beyond_the_cap() {
    let f = Fixture::empty();
    let s = &f.store;
    for i in 0..10 {
        assert!(s.first_use(&format!("id{i}"), T0 + i, 3600).expect("use"));
    }
    // A repeat after its window moves the id's age: its old age entry goes.
    assert!(s.first_use("id0", T0 + 5000, 3600).expect("use"));
    // Older than T0 + 3: id1, id2 (id0 is now younger).
    assert_eq!(s.prune_uses(T0 + 3, 100).expect("prune"), 2);
    assert!(s.first_use("id1", T0 + 3601, 3600).expect("forgotten"));
    assert!(!s.first_use("id3", T0 + 3601, 3600).expect("kept"));
    // 9 ids are left (id0, id1, id3..id9); a cap of 5 drops the 4 oldest.
    assert_eq!(s.prune_uses(0, 5).expect("prune"), 4);
    for gone in ["id3", "id4", "id5", "id6"] {
        assert!(s.first_use(gone, T0 + 3602, 3600).expect("use"), "{gone}");
    }
    for kept in ["id7", "id8", "id9"] {
        assert!(!s.first_use(kept, T0 + 3602, 3600).expect("use"), "{kept}");
    }
}
}
