//! `smdpplus store migrate --from sled:PATH --to postgres` from the real
//! binary against a real PostgreSQL (`SMDPPLUS_TEST_POSTGRES`; skipped
//! with a message when unset): a sled store with profiles in several
//! states, history, outbox items, a kept package, an idempotency record,
//! balances, a GetBalance transaction id and a Mobile Plans order is
//! copied, and the PostgreSQL store answers every read as the sled store
//! does; an interrupted run resumes to the same result; a store a server
//! holds is refused; a password on the command line is refused unechoed.

use crate::common::postgres::TestSchema;
use crate::common::store::{ctx, eid, iccid, pool_iccid, profiles, T0};
use smdpplus::error::StatusCode;
use smdpplus::es2plus::confirmation_code_hashes;
use smdpplus::ids::Iccid;
use smdpplus::store::balance::{BalanceType, Credit};
use smdpplus::store::bound::{KeptPackage, KEPT_VERSION};
use smdpplus::store::mobileplans::{Choice, NewOrder, OrderKind, PurchaseMetadata, Registration};
use smdpplus::store::pg::engine::{PgEngine, PgOptions};
use smdpplus::store::{
    Command, Ctx, FinalStatus, Idem, ListFilter, ProfileRecord, Store, StoreOptions,
};
use std::path::Path;
use std::process::{Command as Process, Output};

const OP: &str = "OP-ONE";
const TYPE: &str = "TYPE-A";
const E1: &str = "89049032123451234512345678901235";
/// Profiles in the store.
const N: usize = 23;
/// The idempotency key of the one idempotent call.
const IDEM: [u8; 32] = [7; 32];
/// The GetBalance transaction id used once.
const USED: &str = "gb-transaction-1";
/// A SIM registered for balances only.
fn sim() -> Iccid {
    pool_iccid(99, 1)
}

fn apply(s: &Store, cmd: Command) {
    s.apply(&cmd, &ctx("smdpplus", T0 + 1)).expect("command");
}

fn order(s: &Store, i: usize, linked: bool, release: bool) -> Iccid {
    let id = iccid(i);
    s.apply(
        &Command::DownloadOrder {
            operator: OP.into(),
            eid: linked.then(|| eid(E1)),
            iccid: Some(id.clone()),
            profile_type: None,
        },
        &ctx(OP, T0),
    )
    .expect("downloadOrder");
    s.apply(
        &Command::ConfirmOrder {
            operator: OP.into(),
            iccid: id.clone(),
            eid: None,
            matching_id: Some(format!("MATCH-{i}")),
            cc_hashes: if i % 2 == 0 {
                confirmation_code_hashes("1234")
            } else {
                vec![]
            },
            smds_address: None,
            release,
        },
        &ctx(OP, T0),
    )
    .expect("confirmOrder");
    id
}

fn delivered(s: &Store, i: usize, keep: bool) -> Iccid {
    let id = order(s, i, false, true);
    apply(
        s,
        Command::AuthenticateClient {
            iccid: id.clone(),
            eid: eid(E1),
            matching_id: Some(format!("MATCH-{i}")),
            max_attempts: 5,
        },
    );
    apply(
        s,
        Command::BppDelivered {
            iccid: id.clone(),
            eid: eid(E1),
            retry: None,
            keep: keep.then(|| {
                Box::new(KeptPackage {
                    v: KEPT_VERSION,
                    eid: E1.into(),
                    dp_ci: vec![0xf5; 20],
                    euicc_otpk: vec![0x04, 1],
                    metadata: vec![0xbf, 0x25, 0x00],
                    bpp: vec![0xbf, 0x36, 0x01, 0x02],
                    expires_at: T0 + 86_400,
                })
            }),
        },
    );
    id
}

fn metadata() -> PurchaseMetadata {
    PurchaseMetadata {
        user_account: Choice::New,
        purchase_instrument: Choice::Existing,
        line: Choice::New,
        plan_name: "plan".into(),
    }
}

/// A sled store in `data/db` with records of every kind.
fn build_sled(data: &Path) {
    let s = Store::open(&data.join("db"), StoreOptions::default()).expect("sled store");
    s.add_profiles(&profiles(0, 0..N, OP, TYPE), "admin", T0)
        .expect("inventory");
    order(&s, 0, true, false); // Confirmed, linked
    order(&s, 1, false, true); // Released
    delivered(&s, 2, true); // Downloaded, with a kept package
    let installed = delivered(&s, 3, false);
    apply(
        &s,
        Command::InstallResult {
            iccid: installed,
            success: true,
            result_data: vec![0xbf, 0x37, 0x00],
            reason: None,
        },
    );
    let failed = delivered(&s, 4, false);
    apply(
        &s,
        Command::DownloadCancelled {
            iccid: failed,
            code: StatusCode {
                subject: "8.8.5",
                reason: "3.8",
            },
            reason: "end user rejection".into(),
            eid: Some(eid(E1)),
        },
    );
    let cancelled = order(&s, 5, false, false);
    s.apply(
        &Command::CancelOrder {
            operator: OP.into(),
            iccid: cancelled,
            eid: None,
            matching_id: Some("MATCH-5".into()),
            final_status: FinalStatus::Unavailable,
        },
        &ctx(OP, T0 + 2),
    )
    .expect("cancel");
    // An allocation by profile type, with an idempotency record.
    let render = |r: &ProfileRecord| format!("{{\"iccid\":\"{}\"}}", r.iccid).into_bytes();
    s.apply(
        &Command::DownloadOrder {
            operator: OP.into(),
            eid: None,
            iccid: None,
            profile_type: Some(TYPE.into()),
        },
        &Ctx {
            caller: OP,
            now: T0 + 3,
            idem: Some(Idem {
                key: IDEM,
                render: &render,
            }),
        },
    )
    .expect("downloadOrder by type");
    // A Mobile Plans balance purchase (order and balance), a registered
    // SIM, a GetBalance transaction id.
    s.mp_place_balance_order(
        &NewOrder {
            transaction_id: "mp-tx-1".into(),
            operator: OP.into(),
            kind: OrderKind::Balance,
            eid: None,
            iccid: Some(iccid(20)),
            registration: Registration::Now,
            release_at: None,
            metadata: metadata(),
            credit: Some(Credit {
                id: None,
                balance_type: BalanceType::ModirectPayg,
                data_kb: 2_000_000,
                expires_at: T0 + 86_400,
                locations: vec![],
                plan_name: "plan".into(),
            }),
            hold_until: None,
        },
        T0 + 4,
    )
    .expect("balance order");
    s.register_sim(OP, &sim(), false, T0 + 5).expect("register");
    assert!(s.first_use(USED, T0 + 6, 3600).expect("use"));
    assert!(!s.outbox().expect("outbox").is_empty());
    s.flush_blocking().expect("flush");
}

/// Runs `smdpplus store migrate` with a config of `[store] engine =
/// "postgres"` (unless `config` is false) and the URL in the environment.
fn migrate(dir: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let config = dir.join("migrate.toml");
    std::fs::write(&config, "[store]\nengine = \"postgres\"\npool_size = 2\n").expect("config");
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_smdpplus"));
    cmd.args(["store", "migrate"])
        .args(args)
        .arg("--config")
        .arg(&config)
        .env_remove("SMDPPLUS_CONFIG")
        .env_remove("SMDPPLUS_STORE_URL")
        .env("RUST_LOG", "warn");
    if let Some(u) = url {
        cmd.env("SMDPPLUS_STORE_URL", u);
    }
    cmd.output().expect("run smdpplus")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The verification table's lines.
fn verification(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("verification"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .map(str::to_owned)
        .collect()
}

/// The "N copied" count of a table in the summary.
fn copied(stdout: &str, table: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix(table)?;
            rest.trim_start().split(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary line for {table} in {stdout}"))
}

fn pg_store(schema: &TestSchema) -> Store {
    let engine = PgEngine::connect(&schema.config(2), PgOptions::default(), false)
        .expect("open the PostgreSQL store");
    Store::with_engine(Box::new(engine), StoreOptions::default())
}

/// Every read of the two stores answers the same.
fn assert_same(sled: &Store, pg: &Store) {
    let all = sled.list(&ListFilter::default()).expect("list");
    assert_eq!(all.len(), N);
    assert_eq!(pg.list(&ListFilter::default()).expect("list"), all);
    for r in &all {
        let id = Iccid::parse(&r.iccid).expect("iccid");
        assert_eq!(pg.get(&id).expect("get"), Some(r.clone()));
        assert_eq!(
            pg.history(&id).expect("history"),
            sled.history(&id).expect("history")
        );
        assert_eq!(
            pg.package(r).expect("package"),
            sled.package(r).expect("package")
        );
        assert_eq!(
            pg.kept_package(&id, T0).expect("kept"),
            sled.kept_package(&id, T0).expect("kept"),
            "{id}"
        );
        assert_eq!(
            pg.balance(&id).expect("balance"),
            sled.balance(&id).expect("balance")
        );
        assert_eq!(
            pg.mp_orders_for_iccid(&id).expect("orders"),
            sled.mp_orders_for_iccid(&id).expect("orders")
        );
        if let Some(m) = r.matching_id.as_deref().filter(|m| !m.is_empty()) {
            assert_eq!(pg.by_matching_id(m).expect("m"), Some(id.clone()));
        }
    }
    assert!(sled.kept_package(&iccid(2), T0).expect("kept").is_some());
    let sim = sim();
    assert!(pg.balance(&sim).expect("balance").is_some());
    assert_eq!(pg.balance(&sim).expect("b"), sled.balance(&sim).expect("b"));
    assert_eq!(pg.outbox().expect("outbox"), sled.outbox().expect("outbox"));
    assert_eq!(
        pg.mp_orders().expect("orders"),
        sled.mp_orders().expect("orders")
    );
    assert_eq!(pg.mp_orders().expect("orders").len(), 1);
    assert_eq!(pg.counts(), sled.counts());
    assert_eq!(pg.available_by_pool(), sled.available_by_pool());
    assert_eq!(
        pg.pending_for_eid(&eid(E1)).expect("pending"),
        sled.pending_for_eid(&eid(E1)).expect("pending")
    );
    assert_eq!(
        pg.due_expiries(i64::MAX / 2).expect("due"),
        sled.due_expiries(i64::MAX / 2).expect("due")
    );
    let idem = sled.idempotent_response(&IDEM).expect("idem");
    assert!(idem.is_some());
    assert_eq!(pg.idempotent_response(&IDEM).expect("idem"), idem);
    // The GetBalance transaction id came along: its second use is refused.
    assert!(!pg.first_use(USED, T0 + 7, 3600).expect("use"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_moves_to_postgres_whole() {
    let Some(schema) = TestSchema::create("store_migrate_whole").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    build_sled(&data);
    let from = format!("sled:{}", data.display());
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres", "--batch-size", "7"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("not copied: RSP sessions"), "{stdout}");
    assert!(stdout.contains("done: every table verified"), "{stdout}");
    let table = verification(&stdout);
    assert_eq!(table.len(), 9, "{stdout}");
    assert!(table.iter().all(|l| l.ends_with(" ok")), "{stdout}");

    let sled = Store::open(&data.join("db"), StoreOptions::default()).expect("sled again");
    let pg = pg_store(&schema);
    assert_same(&sled, &pg);
    // The summary's counts are the stores' counts.
    assert_eq!(copied(&stdout, "profiles"), N as u64);
    assert_eq!(
        copied(&stdout, "outbox"),
        sled.outbox().expect("outbox").len() as u64
    );
    assert_eq!(copied(&stdout, "mobileplans_orders"), 1);
    assert_eq!(copied(&stdout, "balances"), 2);
    assert_eq!(copied(&stdout, "idempotency"), 1);
    assert_eq!(copied(&stdout, "balance_transaction_ids"), 1);
    // New ids come after every copied one.
    let max_id = sled
        .outbox()
        .expect("outbox")
        .iter()
        .map(|o| o.id)
        .chain(sled.mp_orders().expect("orders").iter().map(|o| o.id))
        .max()
        .expect("ids");
    let db = schema.connect(1).await;
    let next: i64 = db
        .client()
        .await
        .expect("client")
        .query_one("SELECT nextval('record_ids')", &[])
        .await
        .expect("nextval")
        .get(0);
    assert!(next as u64 > max_id, "{next} <= {max_id}");
    drop((sled, pg));

    // Again: nothing new, everything already there, still verified.
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &[
            "--from",
            &format!("sled:{}", data.join("db").display()),
            "--to",
            "postgres",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(copied(&stdout, "profiles"), 0, "{stdout}");
    assert!(
        stdout.contains(&format!("0 copied, {N} already there")),
        "{stdout}"
    );
    assert_eq!(verification(&stdout), table);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_to_the_same_result() {
    let Some(whole) = TestSchema::create("store_migrate_ref").await else {
        return;
    };
    let Some(schema) = TestSchema::create("store_migrate_resume").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    build_sled(&data);
    let from = format!("sled:{}", data.display());
    let args = ["--from", &from, "--to", "postgres", "--batch-size", "5"];
    let out = migrate(dir.path(), Some(&whole.url), &args);
    let (reference, stderr) = text(&out);
    assert!(out.status.success(), "{reference}\n{stderr}");

    let mut stopped = args.to_vec();
    stopped.extend(["--stop-after-batches", "2"]);
    let out = migrate(dir.path(), Some(&schema.url), &stopped);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopped after 2 batch(es)"), "{stderr}");
    let db = schema.connect(1).await;
    let n: i64 = db
        .client()
        .await
        .expect("client")
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 10, "two batches of five profiles were committed");

    let out = migrate(dir.path(), Some(&schema.url), &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("{} copied, 10 already there", N - 10)),
        "{stdout}"
    );
    assert_eq!(verification(&stdout), verification(&reference));
    assert!(verification(&stdout).iter().all(|l| l.ends_with(" ok")));

    let sled = Store::open(&data.join("db"), StoreOptions::default()).expect("sled again");
    let pg = pg_store(&schema);
    assert_same(&sled, &pg);
    drop((sled, pg));
    whole.drop().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_holding_other_data_is_reported_not_overwritten() {
    let Some(schema) = TestSchema::create("store_migrate_conflict").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    build_sled(&data);
    let from = format!("sled:{}", data.display());
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let db = schema.connect(1).await;
    let client = db.client().await.expect("client");
    let victim = iccid(7);
    client
        .execute(
            "UPDATE profiles SET operator = 'OTHER' WHERE iccid = $1",
            &[&victim.as_str()],
        )
        .await
        .expect("update");
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres"],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("conflict: profiles {victim}")),
        "{stdout}"
    );
    assert!(stderr.contains("tables: profiles"), "{stderr}");
    let operator: String = client
        .query_one(
            "SELECT operator FROM profiles WHERE iccid = $1",
            &[&victim.as_str()],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(operator, "OTHER", "not overwritten");
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_a_server_holds_is_refused() {
    let Some(schema) = TestSchema::create("store_migrate_running").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _server = crate::common::Server::start(&data, None);
    let pid = data.join("smdpplus.pid");
    for _ in 0..200 {
        if pid.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let from = format!("sled:{}", data.display());
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres"],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("stop the server first"), "{stderr}");
    assert!(
        stderr.contains("is running on"),
        "the pid file names it: {stderr}"
    );

    // Without the pid file, sled's own lock refuses it.
    std::fs::remove_file(&pid).expect("pid file");
    let from = format!("sled:{}", data.join("db").display());
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres"],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("open in another process"), "{stderr}");
    assert!(stderr.contains("stop the server first"), "{stderr}");
    schema.drop().await;
}

#[test]
fn a_password_on_the_command_line_is_refused_unechoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let from = format!("sled:{}", data.display());
    let secret = "s3cret-Passw0rd";
    for url in [
        format!("postgres://smdpplus:{secret}@127.0.0.1:1/smdpplus"),
        format!("postgresql://smdpplus@127.0.0.1:1/smdpplus?password={secret}"),
    ] {
        let out = migrate(dir.path(), None, &["--from", &from, "--to", &url]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}\n{stderr}");
        assert!(stderr.contains("SMDPPLUS_STORE_URL"), "{stderr}");
        assert!(stderr.contains("url_file"), "{stderr}");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "the password is never printed: {stdout}\n{stderr}"
        );
    }
    assert!(!data.exists(), "nothing was created");
}

/// The time to move 10,000 profiles of 8 KB packages (1,000 of them with
/// an order: two history entries each). Run by hand:
/// `cargo test --release --test it store_migrate::timing -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn timing_10000_profiles() {
    let Some(schema) = TestSchema::create("store_migrate_timing").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    {
        let s = Store::open(&data.join("db"), StoreOptions::default()).expect("sled store");
        for chunk in 0..10 {
            let mut items = profiles(0, chunk * 1000..(chunk + 1) * 1000, OP, TYPE);
            for (i, p) in items.iter_mut().enumerate() {
                p.package = (0..8192u32).map(|b| (b as usize ^ i) as u8).collect();
            }
            s.add_profiles(&items, "admin", T0).expect("inventory");
        }
        for i in 0..1000 {
            order(&s, i, false, true);
        }
        s.flush_blocking().expect("flush");
    }
    let from = format!("sled:{}", data.display());
    let start = std::time::Instant::now();
    let out = migrate(
        dir.path(),
        Some(&schema.url),
        &["--from", &from, "--to", "postgres"],
    );
    let elapsed = start.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    println!(
        "store migrate of 10,000 profiles: {:.1} s",
        elapsed.as_secs_f64()
    );
    schema.drop().await;
}
