//! The PostgreSQL storage engine's groundwork: a connection pool (TLS
//! through rustls when the URL asks for it), the schema migrations
//! ([`migrate`]), [`Postgres::retry`], which re-runs a transaction that
//! lost a conflict, the store's record operations in SQL ([`sql`], whose
//! documentation gives the isolation design) and the mapping between rows
//! and records ([`rows`]). The server does not serve from it yet.
//!
//! # The URL
//! `postgres://user:password@host:port/database?param=value&...`, with the
//! parameters tokio-postgres knows, and:
//! - `sslmode`: `disable` (the default) for a plain connection; `require`,
//!   `verify-ca` or `verify-full` for TLS, which always verifies the
//!   server's certificate chain and host name (stricter than libpq's
//!   `require` and `verify-ca`); `prefer` and `allow`, which may fall back
//!   to plain text, are refused.
//! - `sslrootcert`: the PEM file of the CA(s) the server's certificate
//!   chains to; needed with TLS.
//!
//! The URL carries the password: no error message or log line holds it.

pub mod engine;
mod import;
pub mod migrate;
pub mod rows;
pub mod sql;

use crate::config::PostgresConfig;
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use migrate::{Applied, SchemaStatus, MIGRATIONS};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
pub use tokio_postgres::IsolationLevel;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The future a transaction body of [`Postgres::retry`] returns.
pub type TxFuture<'t, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>;

/// Attempts [`Postgres::retry`] makes of a transaction at most.
pub const RETRY_ATTEMPTS: u32 = 8;

/// The first retry's longest wait; each later one doubles it, up to
/// [`RETRY_MAX_BACKOFF`].
const RETRY_BASE_BACKOFF: Duration = Duration::from_millis(4);

/// The longest wait between two attempts.
const RETRY_MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What can go wrong with the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is not usable (the message never holds it).
    #[error("store URL: {0}")]
    Url(String),
    /// The TLS settings are not usable.
    #[error("store TLS: {0}")]
    Tls(String),
    /// No connection from the pool.
    #[error("store connection: {0}")]
    Pool(String),
    /// The database answered with an error, or the connection failed.
    #[error("store database: {}", error_text(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The schema cannot be used by this build, or a migration failed.
    #[error("store schema: {0}")]
    Schema(String),
    /// A value does not fit its column, or a stored value does not map
    /// back to its record (an unknown name, a negative counter).
    #[error("store data: {0}")]
    Data(String),
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::{PoolError as P, TimeoutType};
        match e {
            P::Backend(e) => PgError::Db(e),
            P::Timeout(TimeoutType::Wait) => {
                PgError::Pool("timed out waiting for a free connection".into())
            }
            P::Timeout(_) => PgError::Pool("timed out connecting to the database".into()),
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// A driver error as the operator needs it: the server's SQLSTATE and
/// message, or the driver's message and its causes.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Whether an error is a transaction conflict that a new attempt may not
/// meet: a serialization failure (SQLSTATE 40001), a deadlock (40P01), or
/// a unique violation (23505).
pub trait Conflict {
    /// The error is a serialization failure, a deadlock or a unique
    /// violation.
    fn is_conflict(&self) -> bool;
}

impl Conflict for tokio_postgres::Error {
    fn is_conflict(&self) -> bool {
        // Commands run under READ COMMITTED and lock every row they read
        // (`SELECT ... FOR UPDATE`, see [`sql`]), but a row that does not
        // exist yet cannot be locked: two transactions that both found a
        // key missing and both insert it meet at the unique index, and the
        // second one fails with 23505. That is the same lost race as a
        // serialization failure, and a new attempt reads the row the winner
        // committed and decides again.
        matches!(
            self.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
        )
    }
}

impl Conflict for PgError {
    fn is_conflict(&self) -> bool {
        matches!(self, PgError::Db(e) if e.is_conflict())
    }
}

/// How the connection is protected.
#[derive(Debug, PartialEq, Eq)]
enum Tls {
    /// Plain TCP.
    Disable,
    /// TLS, verified against the CA file.
    Verify(PathBuf),
}

/// Decodes `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Url("a bad %-escape in a parameter".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Url("a parameter is not UTF-8".into()))
}

/// Splits the URL into the driver's configuration and the TLS settings
/// (`sslmode` and `sslrootcert`, which the driver does not take as we
/// mean them).
fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Tls), PgError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => mode = Some(percent_decode(v)?),
            "sslrootcert" => root = Some(PathBuf::from(percent_decode(v)?)),
            _ => kept.push(pair),
        }
    }
    let tls =
        match (mode.as_deref().unwrap_or("disable"), root) {
            ("disable", None) => Tls::Disable,
            ("disable", Some(_)) => {
                return Err(PgError::Url(
                    "sslrootcert is given but sslmode is disable".into(),
                ))
            }
            ("require" | "verify-ca" | "verify-full", Some(root)) => Tls::Verify(root),
            ("require" | "verify-ca" | "verify-full", None) => return Err(PgError::Url(
                "TLS (sslmode require, verify-ca or verify-full) needs sslrootcert=<PEM file of \
                 the server's CA>: the server's certificate is always verified"
                    .into(),
            )),
            (other, _) => {
                return Err(PgError::Url(format!(
                "sslmode={other} is not supported: use disable, require, verify-ca or verify-full"
            )))
            }
        };
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // The driver's messages name the option at fault, never the URL.
    let cfg = tokio_postgres::Config::from_str(&rebuilt)
        .map_err(|e| PgError::Url(format!("the URL does not parse: {e}")))?;
    Ok((cfg, tls))
}

/// The rustls client configuration for `tls` (one that trusts nothing when
/// TLS is off: the driver then never uses it).
fn tls_connector(tls: &Tls) -> Result<MakeRustlsConnect, PgError> {
    let cfg = match tls {
        Tls::Disable => {
            crate::http::tls::client_with_roots(rustls::RootCertStore::empty(), None, false)
        }
        Tls::Verify(root) => crate::http::tls::client(&[root.as_path()], None, false),
    }
    .map_err(|e| PgError::Tls(e.to_string()))?;
    Ok(MakeRustlsConnect::new(std::sync::Arc::unwrap_or_clone(cfg)))
}

/// A pool of connections to the PostgreSQL store.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.pool.status();
        f.debug_struct("Postgres")
            .field("max_size", &s.max_size)
            .field("size", &s.size)
            .finish()
    }
}

impl Postgres {
    /// Builds the pool and makes one connection, so that a wrong URL,
    /// password or certificate shows at start.
    pub async fn connect(c: &PostgresConfig) -> Result<Postgres, PgError> {
        let (mut cfg, tls) = parse_url(c.url.expose())?;
        cfg.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Verify(_) => SslMode::Require,
        });
        cfg.connect_timeout(c.connect_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("smdpplus");
        }
        if let Some(t) = c.statement_timeout {
            let options = format!(
                "{} -c statement_timeout={}",
                cfg.get_options().unwrap_or_default(),
                t.as_millis()
            );
            cfg.options(options.trim_start());
        }
        let manager = Manager::from_config(
            cfg,
            tls_connector(&tls)?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(c.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(c.connect_timeout))
            .create_timeout(Some(c.connect_timeout))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        let pg = Postgres { pool };
        drop(pg.client().await?);
        Ok(pg)
    }

    /// The pool, for the store's commands.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the pool.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    /// Applies this build's pending migrations (see [`migrate`]) and
    /// returns those this call applied.
    pub async fn migrate(&self) -> Result<Vec<Applied>, PgError> {
        let mut client = self.client().await?;
        migrate::apply(&mut client, MIGRATIONS).await
    }

    /// Where the schema stands, without changing it; an error when this
    /// build cannot use it (a newer version, an edited migration).
    pub async fn check_schema(&self) -> Result<SchemaStatus, PgError> {
        let client = self.client().await?;
        migrate::status(&**client, MIGRATIONS).await
    }

    /// Runs `f` in a transaction of the given isolation level and commits
    /// it; when `f` or the commit fails on a conflict ([`Conflict`]), the
    /// transaction is rolled back and run again, up to [`RETRY_ATTEMPTS`]
    /// times in all, after a jittered, doubling wait. Any other error is
    /// returned at once (the transaction rolled back). `f` must have no
    /// effect outside the transaction: it may run more than once.
    ///
    /// SERIALIZABLE suits read-modify-write commands (the sled store's
    /// transactions are serializable); pool allocation with `FOR UPDATE
    /// SKIP LOCKED` works under READ COMMITTED, where concurrent
    /// allocators do not abort each other.
    ///
    /// `f` returns a boxed future (`|tx| Box::pin(async move { ... })`)
    /// so that the whole call is `Send` and can run in spawned tasks;
    /// values it uses from outside are moved or cloned into the future.
    pub async fn retry<T, E, F>(&self, isolation: IsolationLevel, mut f: F) -> Result<T, E>
    where
        F: for<'t> FnMut(&'t Transaction<'_>) -> TxFuture<'t, T, E>,
        E: From<PgError> + From<tokio_postgres::Error> + Conflict,
    {
        let mut attempt = 1;
        loop {
            let result: Result<T, E> = async {
                let mut client = self.client().await?;
                let tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .start()
                    .await?;
                let value = f(&tx).await?;
                tx.commit().await?;
                Ok(value)
            }
            .await;
            match result {
                Err(e) if e.is_conflict() && attempt < RETRY_ATTEMPTS => {
                    tracing::debug!(attempt, "store transaction conflict; running it again");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The wait before attempt `attempt + 1`: a random time between half and
/// all of the doubling bound.
pub(crate) fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let bound = RETRY_BASE_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(RETRY_MAX_BACKOFF);
    let ms = bound.as_millis().max(1) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_tls_modes() {
        let (cfg, tls) = parse_url("postgres://u:p@127.0.0.1:5433/db").expect("plain");
        assert_eq!(tls, Tls::Disable);
        assert_eq!(cfg.get_dbname(), Some("db"));
        assert_eq!(cfg.get_ports(), &[5433]);
        let (cfg, tls) = parse_url(
            "postgresql://u:p@db.example/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=n",
        )
        .expect("tls");
        assert_eq!(tls, Tls::Verify(PathBuf::from("/etc/ca.pem")));
        assert_eq!(cfg.get_application_name(), Some("n"));
        for (bad, why) in [
            (
                "postgres://u:secret@h/d?sslmode=require",
                "needs sslrootcert",
            ),
            ("postgres://u:secret@h/d?sslmode=prefer", "not supported"),
            (
                "postgres://u:secret@h/d?sslrootcert=/ca.pem",
                "sslmode is disable",
            ),
            ("postgres://u:secret@h/d?nonsense=1", "does not parse"),
        ] {
            let e = parse_url(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        for attempt in 1..20 {
            let b = backoff(attempt);
            assert!(b <= RETRY_MAX_BACKOFF, "{attempt}: {b:?}");
            assert!(b >= Duration::from_millis(2), "{attempt}: {b:?}");
        }
        assert!(backoff(1) <= RETRY_BASE_BACKOFF);
    }
}
