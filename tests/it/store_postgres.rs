//! The PostgreSQL store's groundwork against a real PostgreSQL
//! (`SMDPPLUS_TEST_POSTGRES`; skipped with a message when unset): the
//! migration runner, `smdpplus store migrate` and `serve` from the real
//! binary, pool allocation with `FOR UPDATE SKIP LOCKED`, and the
//! conflict retry.

use crate::common::postgres::{postgres_config, TestSchema, TEST_POSTGRES_CA_ENV};
use smdpplus::store::pg::migrate::{self, Migration, MIGRATIONS};
use smdpplus::store::pg::{IsolationLevel, PgError, Postgres};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::Barrier;

/// The tables of the schema this build migrates to.
const SCHEMA_TABLES: [&str; 10] = [
    "balance_transaction_ids",
    "balances",
    "idempotency",
    "kept_packages",
    "mobileplans_orders",
    "outbox",
    "profile_history",
    "profile_types",
    "profiles",
    "rsp_sessions",
];

async fn tables(pg: &Postgres) -> Vec<String> {
    let client = pg.client().await.expect("client");
    client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every migration of this build, as (version, name).
fn all_migrations() -> Vec<(i64, String)> {
    MIGRATIONS
        .iter()
        .map(|m| (m.version, m.name.to_owned()))
        .collect()
}

/// The latest version of this build's schema.
fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

async fn recorded(pg: &Postgres) -> Vec<(i64, String)> {
    let client = pg.client().await.expect("client");
    client
        .query(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_on_an_empty_database_once() {
    let Some(schema) = TestSchema::create("migrations_apply_once").await else {
        return;
    };
    let pg = schema.connect(2).await;
    let status = pg.check_schema().await.expect("status of an empty schema");
    assert_eq!(status.version, 0);
    assert_eq!(status.pending, all_migrations());
    assert!(MIGRATIONS.len() >= 2, "{:?}", all_migrations());

    let applied = pg.migrate().await.expect("migrate");
    assert_eq!(
        applied
            .iter()
            .map(|a| (a.version, a.name.clone()))
            .collect::<Vec<_>>(),
        all_migrations()
    );
    assert_eq!(applied[0].checksum, MIGRATIONS[0].checksum());
    let mut expected: Vec<String> = SCHEMA_TABLES.iter().map(|t| t.to_string()).collect();
    expected.push("schema_migrations".into());
    expected.sort();
    assert_eq!(tables(&pg).await, expected);

    // A second run applies nothing.
    assert!(pg.migrate().await.expect("migrate again").is_empty());
    let status = pg.check_schema().await.expect("status");
    assert_eq!((status.version, status.pending.len()), (latest(), 0));
    assert_eq!(recorded(&pg).await, all_migrations());
    schema.drop().await;
}

/// A second migration that is not idempotent: applied twice, it would
/// leave two rows (or fail on the table that exists).
const PROBE: &str = "CREATE TABLE probe (n integer NOT NULL); INSERT INTO probe VALUES (1);";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrators_apply_each_file_once() {
    let Some(schema) = TestSchema::create("concurrent_migrators").await else {
        return;
    };
    let migrations: Vec<Migration<'static>> = vec![
        MIGRATIONS[0],
        Migration {
            version: 2,
            name: "probe",
            sql: PROBE,
        },
    ];
    let nodes = 8;
    let pg = schema.connect(nodes).await;
    let start = Arc::new(Barrier::new(nodes));
    let mut tasks = Vec::new();
    for _ in 0..nodes {
        let (pg, start, migrations) = (pg.clone(), start.clone(), migrations.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = pg.client().await.expect("client");
            start.wait().await;
            migrate::apply(&mut client, &migrations).await
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.extend(t.await.expect("task").expect("each migrator succeeds"));
    }
    let mut versions: Vec<i64> = applied.iter().map(|a| a.version).collect();
    versions.sort();
    assert_eq!(
        versions,
        vec![1, 2],
        "each file applied by exactly one node"
    );
    let client = pg.client().await.expect("client");
    let n: i64 = client
        .query_one("SELECT count(*) FROM probe", &[])
        .await
        .expect("probe")
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(
        recorded(&pg).await,
        vec![(1, "initial".to_owned()), (2, "probe".to_owned())]
    );
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_applied_migration_is_refused() {
    let Some(schema) = TestSchema::create("edited_migration").await else {
        return;
    };
    let pg = schema.connect(2).await;
    pg.migrate().await.expect("migrate");
    let edited_sql = format!("{}\n-- an edit after the fact\n", MIGRATIONS[0].sql);
    let edited = [Migration {
        sql: &edited_sql,
        ..MIGRATIONS[0]
    }];
    let mut client = pg.client().await.expect("client");
    let err = migrate::apply(&mut client, &edited)
        .await
        .expect_err("an edited migration is refused");
    assert!(matches!(err, PgError::Schema(_)), "{err}");
    assert!(err.to_string().contains("V1__initial.sql differs"), "{err}");
    let err = migrate::status(&**client, &edited)
        .await
        .expect_err("and reported by the status check");
    assert!(err.to_string().contains("must never change"), "{err}");
    // The database is as it was.
    assert_eq!(recorded(&pg).await, all_migrations());
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_at_an_unknown_newer_version_is_refused() {
    let Some(schema) = TestSchema::create("newer_version").await else {
        return;
    };
    let pg = schema.connect(2).await;
    pg.migrate().await.expect("migrate");
    let client = pg.client().await.expect("client");
    client
        .execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES (999, 'from_the_future', '00', 0)",
            &[],
        )
        .await
        .expect("record a newer version");
    for err in [
        pg.migrate().await.expect_err("migrate refuses"),
        pg.check_schema().await.expect_err("the check refuses"),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("version 999 (from_the_future), which this build does not know"),
            "{text}"
        );
    }
    // The real binary refuses to serve from it, and to migrate it.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = smdpplus(&dir, &schema.url, &["serve", "--data-dir"]);
    assert!(!out.status.success(), "serve must refuse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not know"), "{stderr}");
    let out = smdpplus(&dir, &schema.url, &["store", "migrate"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not know"),
        "{out:?}"
    );
    schema.drop().await;
}

/// Runs the real binary with a config of `[store] engine = "postgres"` and
/// the URL in the environment. `serve --data-dir` gets the directory.
fn smdpplus(dir: &tempfile::TempDir, url: &str, args: &[&str]) -> Output {
    let config = dir.path().join("smdpplus.toml");
    std::fs::write(&config, "[store]\nengine = \"postgres\"\npool_size = 2\n").expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smdpplus"));
    cmd.args(args);
    if args.last() == Some(&"--data-dir") {
        cmd.arg(dir.path().join("data"));
    }
    cmd.arg("--config")
        .arg(&config)
        .env("SMDPPLUS_STORE_URL", url)
        .env_remove("SMDPPLUS_CONFIG")
        .env("RUST_LOG", "warn");
    cmd.output().expect("run smdpplus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_from_the_binary() {
    let Some(schema) = TestSchema::create("store_migrate_cli").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = smdpplus(&dir, &schema.url, &["store", "migrate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let expected: String = MIGRATIONS
        .iter()
        .map(|m| format!("applied {}\n", m.file_name().trim_end_matches(".sql")))
        .chain([format!("the schema is at version {}\n", latest())])
        .collect();
    assert_eq!(stdout, expected, "{out:?}");
    let password = password_of(&schema.url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        password.is_empty() || !stderr.contains(&password) && !stdout.contains(&password),
        "the password is never printed"
    );

    let out = smdpplus(&dir, &schema.url, &["store", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("nothing to apply: the schema is at version {}\n", latest())
    );
    let pg = schema.connect(1).await;
    assert_eq!(recorded(&pg).await, all_migrations());

    // A wrong password stops it with the database's reason, unprinted.
    let (scheme, after) = schema.url.split_once("://").expect("scheme");
    let (auth, rest) = after.split_once('@').expect("the test URL names a user");
    let user = auth.split(':').next().unwrap_or(auth);
    let wrong = format!("{scheme}://{user}:wrong-password@{rest}");
    let out = smdpplus(&dir, &wrong, &["store", "migrate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("28P01"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    schema.drop().await;
}

/// The password in a URL, if any.
fn password_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default()
}

/// Inserts `n` available profiles of one operator and type.
async fn seed_pool(pg: &Postgres, n: usize) {
    let client = pg.client().await.expect("client");
    for i in 0..n {
        let iccid = format!("89440000000000{i:05}");
        client
            .execute(
                "INSERT INTO profiles (iccid, operator, profile_type, state, created_at, \
                 updated_at, package) VALUES ($1, 'op', 'demo', 'Available', 0, 0, $2)",
                &[&iccid, &vec![0u8; 16]],
            )
            .await
            .expect("insert a profile");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_locked_hands_concurrent_allocators_distinct_profiles() {
    let Some(schema) = TestSchema::create("skip_locked_pool").await else {
        return;
    };
    const ALLOCATORS: usize = 64;
    let pg = schema.connect(ALLOCATORS).await;
    pg.migrate().await.expect("migrate");
    seed_pool(&pg, 100).await;
    // Every allocator holds its row lock until all of them have one, so
    // the 64 transactions are open together.
    let all_locked = Arc::new(Barrier::new(ALLOCATORS));
    let mut tasks = Vec::new();
    for _ in 0..ALLOCATORS {
        let (pg, all_locked) = (pg.clone(), all_locked.clone());
        tasks.push(tokio::spawn(async move {
            let waited = Arc::new(AtomicBool::new(false));
            pg.retry(IsolationLevel::ReadCommitted, |tx| {
                let (all_locked, waited) = (all_locked.clone(), waited.clone());
                Box::pin(async move {
                    let row = tx
                        .query_one(
                            "SELECT iccid FROM profiles \
                             WHERE operator = $1 AND profile_type = $2 AND state = 'Available' \
                             ORDER BY iccid LIMIT 1 FOR UPDATE SKIP LOCKED",
                            &[&"op", &"demo"],
                        )
                        .await?;
                    let iccid: String = row.try_get(0)?;
                    if !waited.swap(true, Ordering::SeqCst) {
                        all_locked.wait().await;
                    }
                    tx.execute(
                        "UPDATE profiles SET state = 'Allocated', updated_at = 1 WHERE iccid = $1",
                        &[&iccid],
                    )
                    .await?;
                    Ok::<_, PgError>(iccid)
                })
            })
            .await
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("task").expect("allocation"));
    }
    let distinct: std::collections::BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        ALLOCATORS,
        "every allocator got its own profile"
    );
    let client = pg.client().await.expect("client");
    let counts: Vec<(String, i64)> = client
        .query(
            "SELECT state, count(*) FROM profiles GROUP BY state ORDER BY state",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        counts,
        vec![("Allocated".to_owned(), 64), ("Available".to_owned(), 36)]
    );
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_runs_a_serialization_failure_again() {
    let Some(schema) = TestSchema::create("retry_conflict").await else {
        return;
    };
    let pg = schema.connect(4).await;
    pg.migrate().await.expect("migrate");
    // Two SERIALIZABLE transactions each read the pool's size and write a
    // row the other read: one of them must fail with 40001 and is run
    // again.
    seed_pool(&pg, 2).await;
    let attempts = Arc::new(AtomicU32::new(0));
    let both_read = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for i in 0..2 {
        let (pg, attempts, both_read) = (pg.clone(), attempts.clone(), both_read.clone());
        tasks.push(tokio::spawn(async move {
            let waited = Arc::new(AtomicBool::new(false));
            pg.retry(IsolationLevel::Serializable, |tx| {
                let (attempts, both_read, waited) =
                    (attempts.clone(), both_read.clone(), waited.clone());
                Box::pin(async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let n: i64 = tx
                        .query_one(
                            "SELECT count(*) FROM profiles WHERE state = 'Available'",
                            &[],
                        )
                        .await?
                        .try_get(0)?;
                    if !waited.swap(true, Ordering::SeqCst) {
                        both_read.wait().await;
                    }
                    let iccid = format!("89440000000000{i:05}");
                    tx.execute(
                        "UPDATE profiles SET state = 'Allocated', history_len = $2 WHERE iccid = $1",
                        &[&iccid, &n],
                    )
                    .await?;
                    Ok::<_, PgError>(n)
                })
            })
            .await
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task").expect("both commit in the end"));
    }
    seen.sort();
    // The one run again saw the other's write.
    assert_eq!(seen, vec![1, 2]);
    assert!(
        attempts.load(Ordering::SeqCst) >= 3,
        "a conflict was retried"
    );
    schema.drop().await;
}

/// Whether the pool's connections are encrypted (`pg_stat_ssl`).
async fn encrypted(pg: &Postgres) -> bool {
    let client = pg.client().await.expect("client");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_the_url_asks_for_it() {
    let Some(schema) = TestSchema::create("tls").await else {
        return;
    };
    let Some(ca) = std::env::var_os(TEST_POSTGRES_CA_ENV) else {
        eprintln!("SKIP tls: {TEST_POSTGRES_CA_ENV} is not set (tests/tools/postgres.sh sets it)");
        schema.drop().await;
        return;
    };
    let ca = ca.to_string_lossy().into_owned();
    // Without sslmode: plain TCP.
    assert!(!encrypted(&schema.connect(1).await).await);
    // verify-full against the cluster's CA: TLS, channel binding and all.
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = format!("{}&sslmode={mode}&sslrootcert={ca}", schema.url);
        let pg = Postgres::connect(&postgres_config(&url, 1))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(encrypted(&pg).await, "{mode}");
        assert_eq!(
            pg.check_schema().await.expect("schema").version,
            0,
            "{mode}: the connection works"
        );
    }
    // Another CA: the server's certificate is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other-ca.crt");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).expect("ca").pem()).expect("write");
    let url = format!(
        "{}&sslmode=verify-full&sslrootcert={}",
        schema.url,
        other.display()
    );
    let err = Postgres::connect(&postgres_config(&url, 1))
        .await
        .expect_err("a certificate from another CA is refused");
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
    assert!(!text.contains(&password_of(&url)) || password_of(&url).is_empty());
    schema.drop().await;
}
