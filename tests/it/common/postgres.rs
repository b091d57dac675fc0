//! The test PostgreSQL database: `SMDPPLUS_TEST_POSTGRES` names it
//! (`tests/tools/postgres.sh start` prints it; `.ci/run` sets it). Without
//! it the PostgreSQL tests skip with a message, or fail under
//! `SMDPPLUS_POSTGRES_TESTS=require` (set by `.ci/run`).

use smdpplus::config::{Engine, PostgresConfig, StoreConfig, StoreFile};
use smdpplus::store::pg::Postgres;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the test database.
pub const TEST_POSTGRES_ENV: &str = "SMDPPLUS_TEST_POSTGRES";

/// The variable naming the PEM file of the CA of the test database's TLS
/// certificate (for 127.0.0.1).
pub const TEST_POSTGRES_CA_ENV: &str = "SMDPPLUS_TEST_POSTGRES_CA";

/// The test database's URL, or `None` after printing why the test skips.
pub fn test_postgres(test: &str) -> Option<String> {
    match std::env::var(TEST_POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            assert!(
                std::env::var("SMDPPLUS_POSTGRES_TESTS").as_deref() != Ok("require"),
                "{test}: {TEST_POSTGRES_ENV} is required (SMDPPLUS_POSTGRES_TESTS=require)"
            );
            eprintln!(
                "SKIP {test}: {TEST_POSTGRES_ENV} is not set \
                 (eval \"$(tests/tools/postgres.sh start DIR)\" sets it)"
            );
            None
        }
    }
}

/// A schema of its own in the test database, so that tests do not see
/// each other's tables: its URL sets the search path to it.
pub struct TestSchema {
    /// The schema's name.
    pub name: String,
    /// The database URL whose connections use the schema.
    pub url: String,
    /// The database URL as given (the default schema).
    pub base_url: String,
}

impl TestSchema {
    /// A new, empty schema for `test`, or `None` (the test skips) when no
    /// test database is configured.
    pub async fn create(test: &str) -> Option<TestSchema> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base_url = test_postgres(test)?;
        let name = format!(
            "t_{}_{}_{}",
            test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
        .to_ascii_lowercase();
        let sep = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{sep}options=-c%20search_path%3D{name}");
        let s = TestSchema {
            name,
            url,
            base_url,
        };
        let admin = s.connect_base().await;
        let client = admin.client().await.expect("test database connection");
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
                s.name
            ))
            .await
            .expect("create the test schema");
        Some(s)
    }

    /// The store settings for the schema, with `pool_size` connections.
    pub fn config(&self, pool_size: usize) -> PostgresConfig {
        postgres_config(&self.url, pool_size)
    }

    /// A pool on the schema.
    pub async fn connect(&self, pool_size: usize) -> Postgres {
        Postgres::connect(&self.config(pool_size))
            .await
            .expect("connect to the test schema")
    }

    async fn connect_base(&self) -> Postgres {
        Postgres::connect(&postgres_config(&self.base_url, 1))
            .await
            .expect("connect to the test database")
    }

    /// Removes the schema and all it holds.
    pub async fn drop(self) {
        let admin = self.connect_base().await;
        let client = admin.client().await.expect("test database connection");
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
            .expect("drop the test schema");
    }
}

/// PostgreSQL store settings for `url`, as `[store]` would give them.
pub fn postgres_config(url: &str, pool_size: usize) -> PostgresConfig {
    let file = StoreFile {
        engine: Engine::Postgres,
        pool_size: Some(pool_size),
        ..StoreFile::default()
    };
    match file.resolve(Some(url.to_owned())) {
        Ok(StoreConfig::Postgres(c)) => c,
        other => panic!("the test database URL is refused: {:?}", other.err()),
    }
}
