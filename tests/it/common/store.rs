//! Store-level fixtures: a real [`Store`] on the engine under test, the
//! identifiers and the command context the store tests share.
//!
//! The store tests are one conformance suite: [`engine_tests!`] runs each
//! of them on the sled engine and on PostgreSQL. On PostgreSQL, [`open`]
//! of a directory opens a schema of its own (named after the directory),
//! so that a test's stores are as separate, and a reopened store as
//! persistent, as sled directories.

use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::pg::engine::{PgEngine, PgOptions};
use smdpplus::store::{Ctx, NewProfile, Store, StoreOptions};
use std::cell::RefCell;
use std::path::Path;

/// Runs each store test once per engine, as `<test>::sled` and
/// `<test>::postgres`. The PostgreSQL run skips with a message when no
/// test database is configured ([`super::postgres::TEST_POSTGRES_ENV`];
/// CI always sets it).
#[allow(unused_macros, reason = "the benches share these fixtures")]
macro_rules! engine_tests {
    ($( $(#[$meta:meta])* fn $name:ident() $body:block )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $(#[$meta])*
                #[test]
                fn sled() $body

                $(#[$meta])*
                #[test]
                fn postgres() {
                    let Some(_on) = crate::common::store::on_postgres(concat!(
                        module_path!()
                    )) else {
                        return;
                    };
                    $body
                }
            }
        )*
    };
}
#[allow(unused_imports, reason = "the benches share these fixtures")]
pub(crate) use engine_tests;

thread_local! {
    /// The test database of a test running on PostgreSQL, and the schemas
    /// it made (dropped when the test ends).
    static POSTGRES: RefCell<Option<(String, Vec<String>)>> = const { RefCell::new(None) };
}

/// While the guard lives, [`open`] on this thread opens PostgreSQL stores;
/// `None` (after printing why) when no test database is configured.
pub fn on_postgres(test: &str) -> Option<OnPostgres> {
    let url = super::postgres::test_postgres(test)?;
    POSTGRES.with(|p| *p.borrow_mut() = Some((url, Vec::new())));
    Some(OnPostgres(()))
}

/// See [`on_postgres`]: drops the test's schemas when dropped.
pub struct OnPostgres(());

impl Drop for OnPostgres {
    fn drop(&mut self) {
        let Some((url, schemas)) = POSTGRES.with(|p| p.borrow_mut().take()) else {
            return;
        };
        let sql: String = schemas
            .iter()
            .map(|s| format!("DROP SCHEMA IF EXISTS {s} CASCADE;"))
            .collect();
        if let Err(e) = admin(&url, &sql) {
            eprintln!("could not drop the test schemas: {e}");
        }
    }
}

/// Runs `sql` on the test database's default schema.
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let pg = smdpplus::store::pg::Postgres::connect(&super::postgres::postgres_config(url, 1))
            .await
            .map_err(|e| e.to_string())?;
        let client = pg.client().await.map_err(|e| e.to_string())?;
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    })
}

/// The engine of the stores this thread opens.
pub fn engine_name() -> &'static str {
    if POSTGRES.with(|p| p.borrow().is_some()) {
        "postgres"
    } else {
        "sled"
    }
}

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

/// Opens (or reopens) the store in `dir` with the default options, on the
/// engine under test. Opening waits for sled's lock of a store just
/// dropped in this process.
pub fn open(dir: &Path) -> Store {
    open_with(dir, StoreOptions::default())
}

/// [`open`] with options.
pub fn open_with(dir: &Path, opts: StoreOptions) -> Store {
    let Some(url) = POSTGRES.with(|p| p.borrow().as_ref().map(|(u, _)| u.clone())) else {
        return Store::open(dir, opts).expect("open store");
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
    let schema = format!("store_{}", hex::encode(&digest[..8]));
    let new = POSTGRES.with(|p| match p.borrow_mut().as_mut() {
        Some((_, made)) if !made.contains(&schema) => {
            made.push(schema.clone());
            true
        }
        _ => false,
    });
    if new {
        admin(
            &url,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        )
        .expect("create the test schema");
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    // No hold on the outbox items a read returns: the store tests read
    // the due items again and again, as one node's worker does; the hold
    // between nodes has tests of its own.
    let engine = PgEngine::connect(
        &super::postgres::postgres_config(&url, 8),
        PgOptions {
            outbox_lease: std::time::Duration::ZERO,
            ..PgOptions::default()
        },
        true,
    )
    .expect("open the PostgreSQL store");
    Store::with_engine(Box::new(engine), opts)
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

/// The engine's lookups agree with its records, on any engine: each
/// record is found by exactly the lookups its state and fields imply (its
/// pool while Available, its matchingId, its EID's open orders, the expiry
/// schedule while it can expire), and nothing else is found.
pub fn check_lookups(store: &Store) -> Result<(), String> {
    use smdpplus::store::ListFilter;
    use std::collections::{BTreeMap, BTreeSet};
    let records = store.list(&ListFilter::default()).map_err(|e| e.message)?;
    let set = |v: Vec<Iccid>| -> BTreeSet<String> {
        v.into_iter().map(|i| i.as_str().to_owned()).collect()
    };
    let mut pools: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut eids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut expiring = BTreeSet::new();
    for r in &records {
        let pool = pools
            .entry((r.operator.clone(), r.profile_type.clone()))
            .or_default();
        if r.state == smdpplus::store::lifecycle::State::Available {
            pool.insert(r.iccid.clone());
        }
        if let Some(e) = &r.eid {
            let open = eids.entry(e.clone()).or_default();
            if r.state.is_pending_order() {
                open.insert(r.iccid.clone());
            }
        }
        if r.expires_at.is_some() && r.state.can_expire() {
            expiring.insert(r.iccid.clone());
        }
        if let Some(m) = r.matching_id.as_deref().filter(|m| !m.is_empty()) {
            let found = store.by_matching_id(m).map_err(|e| e.message)?;
            if found.as_ref().map(|i| i.as_str()) != Some(r.iccid.as_str()) {
                return Err(format!("matchingId {m} of {} finds {found:?}", r.iccid));
            }
        }
    }
    for ((operator, profile_type), want) in pools {
        let got = set(store
            .pool(&operator, &profile_type)
            .map_err(|e| e.message)?);
        if got != want {
            return Err(format!(
                "pool {operator}/{profile_type}: {got:?} != {want:?}"
            ));
        }
    }
    for (e, want) in eids {
        let got = set(store.pending_for_eid(&eid(&e)).map_err(|e| e.message)?);
        if got != want {
            return Err(format!("open orders of {e}: {got:?} != {want:?}"));
        }
        let records = store.pending_orders(&eid(&e)).map_err(|e| e.message)?;
        let got: BTreeSet<String> = records.iter().map(|r| r.iccid.clone()).collect();
        if got != want || records.iter().any(|r| r.eid.as_deref() != Some(e.as_str())) {
            return Err(format!("open order records of {e}: {got:?} != {want:?}"));
        }
    }
    let got = set(store.due_expiries(i64::MAX / 2).map_err(|e| e.message)?);
    if got != expiring {
        return Err(format!("expiry schedule: {got:?} != {expiring:?}"));
    }
    Ok(())
}
