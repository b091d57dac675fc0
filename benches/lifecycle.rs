//! Durable lifecycle transitions per second.
//!
//! One "order" is what an operator does to hand out a profile:
//! ES2+.DownloadOrder by profile type (pool allocation, Available -> Linked)
//! then ES2+.ConfirmOrder with releaseFlag true (Linked -> Released), then
//! `Store::sync()`, the fsync'd group commit the server awaits before it
//! acknowledges. Throughput is counted in transitions (two per order):
//!
//! - `sequential`: one order at a time, each with its own sync;
//! - `concurrent_32`: batches of 32 orders in parallel tasks on a
//!   multi-thread runtime, each task syncing on its own, so that group
//!   commit can share fsyncs between them.
//!
//! The inventory (50k profiles per benchmark, ~1.5 s to load) is added
//! before measuring and topped up outside the timed section (`iter_custom`)
//! if criterion asks for more, so the pool never runs out. After a bulk load
//! the benchmark pauses for [`SETTLE`]. The data directory lives under
//! `target/tmp` (same filesystem as the project).
//!
//! Run: `cargo bench --bench lifecycle` (about 35 s), or add `-- --quick`
//! (about 15 s, similar figures).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::{Command, Ctx, NewProfile, Store, StoreOptions};
use std::time::{Duration, Instant};

const OPERATOR: &str = "BENCH-OP";
const PROFILE_TYPE: &str = "BENCH-TYPE";
const EID: &str = "89049032123451234512345678901235";
const NOW: i64 = 1_700_000_000;
/// Orders per batch in the concurrent benchmark.
const BATCH: u64 = 32;
/// Transitions per order: DownloadOrder + ConfirmOrder.
const TRANSITIONS: u64 = 2;
/// Profiles added per inventory top-up (one sled batch): enough for a
/// normal run of either benchmark, so that no top-up happens mid-run.
const CHUNK: u64 = 50_000;
/// Pause after a bulk load. For 2-3 s after loading tens of thousands of
/// profiles, applies and flushes run 5-10x slower (background write-back of
/// the load); measured on the 2-core dev VM.
const SETTLE: Duration = Duration::from_secs(3);

/// A store on a fresh directory and its not yet ordered inventory.
struct Fixture {
    store: Store,
    /// Next ICCID serial to add.
    next: u64,
    /// Profiles added and not yet ordered.
    available: u64,
    /// Time spent adding inventory.
    setup: Duration,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).expect("target tmp dir");
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
        let mut fx = Fixture {
            store,
            next: 0,
            available: 0,
            setup: Duration::ZERO,
            _dir: dir,
        };
        // The inventory, and one untimed order, so that warm-up measures
        // orders rather than the first load and cold caches.
        fx.top_up(CHUNK);
        order(&fx.store, &Eid::parse(EID).expect("EID"));
        fx.store.flush_blocking().expect("flush");
        fx.available -= 1;
        fx
    }

    /// Makes sure at least `need` profiles are available (untimed).
    fn top_up(&mut self, need: u64) {
        if self.available >= need {
            return;
        }
        while self.available < need {
            let start = Instant::now();
            let n = CHUNK.max(need - self.available);
            let items: Vec<NewProfile> = (self.next..self.next + n)
                .map(|serial| NewProfile {
                    iccid: Iccid::with_check_digit(&format!("8988{serial:014}"))
                        .expect("18 digits"),
                    profile_type: PROFILE_TYPE.to_owned(),
                    operator: OPERATOR.to_owned(),
                    // A small stand-in for an unprotected profile package.
                    package: vec![0x5a; 256],
                })
                .collect();
            self.store
                .add_profiles(&items, "bench", NOW)
                .expect("add profiles");
            self.store.flush_blocking().expect("flush");
            self.next += n;
            self.available += n;
            self.setup += start.elapsed();
        }
        std::thread::sleep(SETTLE);
    }
}

/// DownloadOrder by type (linked to an EID) then ConfirmOrder with release.
fn order(store: &Store, eid: &Eid) {
    let ctx = Ctx {
        caller: OPERATOR,
        now: NOW,
        idem: None,
    };
    let allocated = store
        .apply(
            &Command::DownloadOrder {
                operator: OPERATOR.to_owned(),
                eid: Some(eid.clone()),
                iccid: None,
                profile_type: Some(PROFILE_TYPE.to_owned()),
            },
            &ctx,
        )
        .expect("downloadOrder");
    let iccid = Iccid::parse(&allocated.record.iccid).expect("stored ICCID");
    store
        .apply(
            &Command::ConfirmOrder {
                operator: OPERATOR.to_owned(),
                iccid,
                eid: None,
                matching_id: None,
                cc_hashes: vec![],
                smds_address: None,
                release: true,
            },
            &ctx,
        )
        .expect("confirmOrder");
}

fn sequential(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let eid = Eid::parse(EID).expect("EID");
    let mut fx = Fixture::new();
    let mut group = c.benchmark_group("durable_transitions");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(TRANSITIONS));
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            fx.top_up(iters);
            let store = fx.store.clone();
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    order(&store, &eid);
                    store.sync().await.expect("sync");
                }
            });
            let elapsed = start.elapsed();
            fx.available -= iters;
            elapsed
        })
    });
    group.finish();
    eprintln!(
        "sequential: {} profiles added in {:.2?} (untimed)",
        fx.next, fx.setup
    );
}

fn concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let eid = Eid::parse(EID).expect("EID");
    let mut fx = Fixture::new();
    let mut group = c.benchmark_group("durable_transitions");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(BATCH * TRANSITIONS));
    group.bench_function("concurrent_32", |b| {
        b.iter_custom(|iters| {
            fx.top_up(iters * BATCH);
            let store = fx.store.clone();
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..BATCH)
                        .map(|_| {
                            let store = store.clone();
                            let eid = eid.clone();
                            tokio::spawn(async move {
                                order(&store, &eid);
                                store.sync().await.expect("sync");
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("order task");
                    }
                }
            });
            let elapsed = start.elapsed();
            fx.available -= iters * BATCH;
            elapsed
        })
    });
    group.finish();
    eprintln!(
        "concurrent_32: {} profiles added in {:.2?} (untimed)",
        fx.next, fx.setup
    );
}

criterion_group!(benches, sequential, concurrent);
criterion_main!(benches);
