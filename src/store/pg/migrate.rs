//! Schema migrations of the PostgreSQL store: versioned SQL files in
//! `migrations/` (`V<version>__<name>.sql`), compiled in, applied in order
//! by this runner.
//!
//! The table `schema_migrations(version, name, checksum, applied_at)`
//! records each applied file with the SHA-256 of its text. Each file is
//! applied in a transaction of its own, which first takes a transaction
//! advisory lock: nodes starting together queue on it, and each one reads
//! what is applied only once it holds the lock, so every file is applied
//! once. An applied file whose text changed since, or a version this build
//! does not know (the database was migrated by a newer build), stops the
//! runner with the reason.

use super::PgError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio_postgres::{Client, GenericClient};

/// One migration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration<'a> {
    /// The version, from the file name: applied in increasing order.
    pub version: i64,
    /// The name, from the file name (`V1__initial.sql` is `initial`).
    pub name: &'a str,
    /// The SQL: statements separated by semicolons.
    pub sql: &'a str,
}

impl Migration<'_> {
    /// Hex SHA-256 of the SQL text.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }

    /// The file name, `V<version>__<name>.sql`.
    pub fn file_name(&self) -> String {
        format!("V{}__{}.sql", self.version, self.name)
    }
}

/// The migrations of this build, in version order.
pub const MIGRATIONS: &[Migration<'static>] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/V1__initial.sql"),
    },
    Migration {
        version: 2,
        name: "records",
        sql: include_str!("migrations/V2__records.sql"),
    },
];

/// The key of the advisory lock the runner holds while it applies a file
/// (the bytes of "smdpmigr").
pub const LOCK_KEY: i64 = 0x736d_6470_6d69_6772;

/// Creates the bookkeeping table. Run only under the lock, when the table
/// is missing.
const CREATE_TABLE: &str = "CREATE TABLE schema_migrations (
    version    bigint PRIMARY KEY,
    name       text   NOT NULL,
    checksum   text   NOT NULL,
    applied_at bigint NOT NULL
)";

/// A migration recorded in `schema_migrations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// Hex SHA-256 of its text when it was applied.
    pub checksum: String,
    /// Unix time it was applied.
    pub applied_at: i64,
}

/// Where a database's schema stands against this build's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The highest applied version; 0 for an empty database.
    pub version: i64,
    /// The migrations of this build not applied yet, in order.
    pub pending: Vec<(i64, String)>,
}

/// Whether the bookkeeping table exists (in the current schema).
async fn table_exists(client: &impl GenericClient) -> Result<bool, PgError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'schema_migrations'",
            &[],
        )
        .await?
        .is_some())
}

/// The applied migrations by version; empty when the bookkeeping table
/// does not exist.
async fn applied(client: &impl GenericClient) -> Result<BTreeMap<i64, Applied>, PgError> {
    if !table_exists(client).await? {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let a = Applied {
            version: r.try_get(0)?,
            name: r.try_get(1)?,
            checksum: r.try_get(2)?,
            applied_at: r.try_get(3)?,
        };
        out.insert(a.version, a);
    }
    Ok(out)
}

/// Compares what the database has applied with `migrations`: the pending
/// ones, or why this build must not use the database.
fn compare(
    applied: &BTreeMap<i64, Applied>,
    migrations: &[Migration<'_>],
) -> Result<SchemaStatus, PgError> {
    for a in applied.values() {
        let Some(m) = migrations.iter().find(|m| m.version == a.version) else {
            let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
            return Err(PgError::Schema(format!(
                "the database schema has version {} ({}), which this build does not know \
                 (it knows up to {known}): a newer smdpplus migrated it; run that version",
                a.version, a.name
            )));
        };
        if m.name != a.name || m.checksum() != a.checksum {
            return Err(PgError::Schema(format!(
                "migration {} differs from the one applied to the database as V{}__{} \
                 (checksum {} there, {} here): an applied migration must never change",
                m.file_name(),
                a.version,
                a.name,
                a.checksum,
                m.checksum()
            )));
        }
    }
    Ok(SchemaStatus {
        version: applied.keys().next_back().copied().unwrap_or(0),
        pending: migrations
            .iter()
            .filter(|m| !applied.contains_key(&m.version))
            .map(|m| (m.version, m.name.to_owned()))
            .collect(),
    })
}

/// Checks that `migrations` is in strictly increasing version order.
fn check_order(migrations: &[Migration<'_>]) -> Result<(), PgError> {
    if migrations.windows(2).any(|w| w[0].version >= w[1].version) {
        return Err(PgError::Schema(
            "the migrations are not in strictly increasing version order".into(),
        ));
    }
    Ok(())
}

/// Where the database stands, without changing it: an error when it has
/// a version this build does not know or an applied file was edited.
pub async fn status(
    client: &impl GenericClient,
    migrations: &[Migration<'_>],
) -> Result<SchemaStatus, PgError> {
    check_order(migrations)?;
    compare(&applied(client).await?, migrations)
}

/// Applies the pending `migrations` in order, each in its own transaction
/// under the advisory lock, and returns those this call applied (none
/// when another node applied them first).
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration<'_>],
) -> Result<Vec<Applied>, PgError> {
    check_order(migrations)?;
    let mut done = Vec::new();
    loop {
        let tx = client.transaction().await?;
        // A migration may outlast `[store] statement_timeout_secs`, and so
        // may the wait for another node's.
        tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        if !table_exists(&tx).await? {
            tx.batch_execute(CREATE_TABLE).await?;
        }
        let recorded = applied(&tx).await?;
        compare(&recorded, migrations)?;
        let Some(m) = migrations
            .iter()
            .find(|m| !recorded.contains_key(&m.version))
        else {
            tx.commit().await?;
            return Ok(done);
        };
        tx.batch_execute(m.sql).await.map_err(|e| {
            PgError::Schema(format!(
                "migration {} failed: {}",
                m.file_name(),
                super::error_text(&e)
            ))
        })?;
        let a = Applied {
            version: m.version,
            name: m.name.to_owned(),
            checksum: m.checksum(),
            applied_at: crate::time::now(),
        };
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)",
            &[&a.version, &a.name, &a.checksum, &a.applied_at],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = a.version, name = %a.name, "store schema migration applied");
        done.push(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_the_files_in_order() {
        check_order(MIGRATIONS).expect("order");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/pg/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations directory")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = MIGRATIONS.iter().map(|m| m.file_name()).collect();
        listed.sort();
        assert_eq!(
            files, listed,
            "every file in migrations/ is listed in MIGRATIONS"
        );
    }

    #[test]
    fn the_profile_states_are_the_lifecycle_states() {
        let sql = MIGRATIONS[0].sql;
        for s in crate::store::lifecycle::State::ALL {
            assert!(sql.contains(&format!("'{}'", s.as_str())), "{s} missing");
        }
    }

    #[test]
    fn edited_and_unknown_versions_are_refused() {
        let m = [Migration {
            version: 1,
            name: "initial",
            sql: "CREATE TABLE t (x int);",
        }];
        let rec = |version: i64, name: &str, checksum: String| Applied {
            version,
            name: name.into(),
            checksum,
            applied_at: 0,
        };
        let mut applied = BTreeMap::new();
        assert_eq!(
            compare(&applied, &m).expect("empty").pending,
            vec![(1, "initial".into())]
        );
        applied.insert(1, rec(1, "initial", m[0].checksum()));
        let s = compare(&applied, &m).expect("applied");
        assert_eq!((s.version, s.pending.len()), (1, 0));
        applied.insert(1, rec(1, "initial", "00".into()));
        let e = compare(&applied, &m).expect_err("edited").to_string();
        assert!(e.contains("must never change"), "{e}");
        applied.insert(1, rec(1, "initial", m[0].checksum()));
        applied.insert(2, rec(2, "later", "00".into()));
        let e = compare(&applied, &m).expect_err("newer").to_string();
        assert!(e.contains("does not know"), "{e}");
    }
}
