//! Store-level fixtures: a real [`Store`] in a fresh sled directory, the
//! identifiers and the command context the store tests share.

use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::{Ctx, NewProfile, Store, StoreOptions};
use std::path::Path;

/// The store tests' "now" (November 2023).
pub const T0: i64 = 1_700_000_000;
/// The default download order time to live: 7 days.
pub const TTL: i64 = 7 * 24 * 3600;

/// Profile `i` of pool 0 (`894400000000iiiiii` with its Luhn digit).
pub fn iccid(i: usize) -> Iccid {
    pool_iccid(0, i)
}

/// Profile `i` of pool `pool` (`8944000000ppiiiiii` with its Luhn digit):
/// the ICCIDs of different pools never meet.
pub fn pool_iccid(pool: usize, i: usize) -> Iccid {
    Iccid::with_check_digit(&format!("8944000000{pool:02}{i:06}")).expect("18 digits")
}

/// A well-formed EID.
pub fn eid(digits: &str) -> Eid {
    Eid::parse(digits).expect("32 digits")
}

/// The context of a command by `caller` at `now`, without idempotency.
pub fn ctx(caller: &str, now: i64) -> Ctx<'_> {
    Ctx {
        caller,
        now,
        idem: None,
    }
}

/// Opens (or reopens) the store in `dir` with the default options.
/// Opening waits for sled's lock of a store just dropped in this process.
pub fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).expect("open store")
}

/// Profiles `range` of pool `pool` for `operator`, of `profile_type`; the
/// package of profile `i` is a small DER INTEGER holding `i`.
pub fn profiles(
    pool: usize,
    range: std::ops::Range<usize>,
    operator: &str,
    profile_type: &str,
) -> Vec<NewProfile> {
    range
        .map(|i| NewProfile {
            iccid: pool_iccid(pool, i),
            profile_type: profile_type.into(),
            operator: operator.into(),
            package: vec![0x30, 0x03, 0x02, 0x01, i as u8],
        })
        .collect()
}

/// A store in a fresh directory (removed when this is dropped).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl Fixture {
    /// An empty store.
    pub fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        Fixture { dir, store }
    }

    /// A store with profiles 0..n of pool 0, Available for `operator`
    /// as `profile_type`, added at [`T0`].
    pub fn with_profiles(n: usize, operator: &str, profile_type: &str) -> Fixture {
        let f = Fixture::empty();
        f.store
            .add_profiles(&profiles(0, 0..n, operator, profile_type), "admin", T0)
            .expect("inventory");
        f
    }

    /// Closes the store and opens it again from its directory.
    pub fn reopen(self) -> Fixture {
        let Fixture { dir, store } = self;
        drop(store);
        let store = open(dir.path());
        Fixture { dir, store }
    }
}
