//! `smdpplus store migrate --from sled:PATH --to postgres`: finds the two
//! stores, refuses while a server holds the sled one, applies the schema,
//! runs [`crate::store::migrate`] on a blocking thread (both engines are
//! synchronous behind the store's API) and prints its progress, the
//! summary and the verification table.
//!
//! `smdpplus store check`: the sled store's kept counts against a count of
//! its records.

use super::{StoreCheckArgs, StoreMigrateArgs};
use crate::config::{Engine, FileConfig, PostgresConfig, StoreConfig, STORE_URL_ENV};
use crate::store::migrate::{self, Options, Progress, Report, Table};
use crate::store::pg::engine::{PgEngine, PgOptions};
use crate::store::sled::Sled;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often a long table reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Whether a `postgres://` URL carries a password (in its user info or as
/// a `password` parameter).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = query
        .split('&')
        .any(|p| p.split('=').next().is_some_and(|k| k == "password"));
    in_userinfo || in_query
}

/// The PostgreSQL store to copy into: the configured one for `postgres`
/// (whatever engine the file names: it may still describe the sled
/// deployment), or a URL given without a password.
fn destination(to: &str, config: Option<&Path>) -> Result<PostgresConfig, String> {
    let file = match config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mut store = file.store.unwrap_or_default();
    store.engine = Engine::Postgres;
    let env = if to == "postgres" {
        std::env::var(STORE_URL_ENV).ok()
    } else if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        if url_has_password(to) {
            return Err(format!(
                "--to: the URL holds a password, which does not go on the command line \
                 (other users see it in the process list; shells keep it in their history): \
                 give the URL in {STORE_URL_ENV} or in the file [store] url_file names, \
                 and pass --to postgres"
            ));
        }
        store.url = Some(to.to_owned());
        store.url_file = None;
        None
    } else {
        return Err(
            "--to takes `postgres` (the PostgreSQL store the configuration names) or a \
             postgres:// URL without a password"
                .into(),
        );
    };
    match store.resolve(env)? {
        StoreConfig::Postgres(c) => Ok(c),
        StoreConfig::Sled => Err("--to: no PostgreSQL store is configured".into()),
    }
}

/// The data directory (if known) and the sled folder of `--from`.
fn source_path(from: &str) -> Result<(Option<PathBuf>, PathBuf), String> {
    let Some(path) = from.strip_prefix("sled:") else {
        return Err("--from takes sled:PATH (a data directory, or its db folder)".into());
    };
    let path = PathBuf::from(path);
    if Sled::exists_at(&path.join("db")) {
        return Ok((Some(path.clone()), path.join("db")));
    }
    if Sled::exists_at(&path) {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        return Ok((parent, path));
    }
    Err(format!(
        "{}: no sled store there (give a data directory, or its db folder)",
        path.display()
    ))
}

/// `store migrate --from sled:PATH --to ...`.
pub(super) async fn copy(a: StoreMigrateArgs) -> Result<ExitCode, String> {
    let to = a.to.as_deref().unwrap_or("postgres");
    let pg = destination(to, a.config.as_deref())?;
    let (data_dir, db) = source_path(a.from.as_deref().unwrap_or_default())?;
    if let Some(dir) = &data_dir {
        if let Some(pid) = super::server_running(dir) {
            return Err(format!(
                "a server (pid {pid}) is running on {}: stop the server first",
                dir.display()
            ));
        }
    }
    let given = match &data_dir {
        Some(d) if db.parent() == Some(d.as_path()) && db.file_name() == Some("db".as_ref()) => {
            "the data directory's db folder"
        }
        _ => "the sled folder given",
    };
    println!("source: the sled store in {} ({given})", db.display());
    let source = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || Sled::open_existing(&db))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?
    };
    println!("destination: PostgreSQL; applying the schema first");
    super::apply_schema(&pg).await?;
    let opts = Options {
        batch_size: a.batch_size.max(1),
        stop_after_batches: a.stop_after_batches,
    };
    let report = tokio::task::spawn_blocking(move || -> Result<Report, String> {
        let dest =
            PgEngine::connect(&pg, PgOptions::default(), false).map_err(|e| e.to_string())?;
        let mut last = Instant::now();
        let mut show = |p: &Progress| {
            if p.finished {
                println!("  {}: {} record(s) read", p.table, p.done);
                last = Instant::now();
            } else if last.elapsed() >= PROGRESS_EVERY {
                println!(
                    "  {}: {} record(s) so far ({} batches)",
                    p.table, p.done, p.batches
                );
                last = Instant::now();
            }
        };
        migrate::run(&source, &dest, &opts, &mut show).map_err(|e| e.message)
    })
    .await
    .map_err(|e| e.to_string())??;
    print_report(&report);
    if report.conflict_count > 0 {
        let mut tables: Vec<&str> = report.conflicts.iter().map(|c| c.table.name()).collect();
        tables.dedup();
        return Err(format!(
            "{} record(s) in PostgreSQL differ from the source and were left as they are \
             (tables: {}); see the list above",
            report.conflict_count,
            tables.join(", ")
        ));
    }
    let differing = report.differing();
    if !differing.is_empty() {
        let names: Vec<&str> = differing.iter().map(|t| t.name()).collect();
        return Err(format!(
            "verification failed: PostgreSQL differs from the source in {}",
            names.join(", ")
        ));
    }
    println!("done: every table verified");
    Ok(ExitCode::SUCCESS)
}

/// Prints what was copied, what was not, and the verification table.
fn print_report(r: &Report) {
    println!("copied in {:.1} s:", r.elapsed.as_secs_f64());
    for (table, c) in &r.copied {
        let with = if *table == Table::Profiles {
            " (each with its package, history and kept package)"
        } else {
            ""
        };
        println!(
            "  {:<24} {} copied, {} already there{with}",
            table.name(),
            c.inserted,
            c.present
        );
    }
    println!("not copied: RSP sessions (short-lived; a device starts a new one)");
    if r.kept_unusable > 0 {
        println!(
            "not copied: {} kept package(s) the source could not serve either \
             (unreadable or of another version)",
            r.kept_unusable
        );
    }
    println!(
        "the profile packages are copied as stored, protected under the source's master key: \
         the PostgreSQL deployment needs the same master key file"
    );
    println!(
        "new outbox and Mobile Plans ids start above {}",
        r.ids_above
    );
    for c in &r.conflicts {
        println!("conflict: {} {}: {}", c.table, c.key, c.why);
    }
    if r.conflict_count > r.conflicts.len() as u64 {
        println!(
            "conflict: ... and {} more",
            r.conflict_count - r.conflicts.len() as u64
        );
    }
    println!("verification (rows, and SHA-256 over each record's canonical JSON in key order):");
    println!(
        "  {:<24} {:>10} {:>10}  {:<16}  {:<16}  result",
        "table", "sled", "postgres", "sha256 sled", "sha256 postgres"
    );
    for c in &r.checks {
        println!(
            "  {:<24} {:>10} {:>10}  {:<16}  {:<16}  {}",
            c.table.name(),
            c.source_rows,
            c.dest_rows,
            c.source_sha256.get(..16).unwrap_or_default(),
            c.dest_sha256.get(..16).unwrap_or_default(),
            if c.ok() { "ok" } else { "DIFFERS" }
        );
    }
}

/// `store check`: compares the counts the sled store keeps with a count of
/// every record, prints both where they differ, and with `--repair`
/// replaces the kept ones.
pub fn check(a: StoreCheckArgs) -> Result<ExitCode, String> {
    use crate::config::{Config, Overrides};
    let (data_dir, engine) = match &a.config {
        Some(p) => {
            let file = FileConfig::load(p)?;
            let engine = file.store.as_ref().map_or(Engine::Sled, |s| s.engine);
            let c = Config::resolve(file, Overrides::default());
            (c.data_dir, engine)
        }
        None => (a.data_dir.clone(), Engine::Sled),
    };
    if engine == Engine::Postgres {
        println!(
            "the PostgreSQL store counts its tables at every read: it keeps no counts to check"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let sled = Sled::open_existing(&data_dir.join("db")).map_err(|e| e.to_string())?;
    let (held, counted) = sled.check_counts().map_err(|e| e.to_string())?;
    let mut rows = vec![];
    for s in crate::store::lifecycle::State::ALL {
        rows.push((format!("{s:?}"), held.state(s), counted.state(s)));
    }
    let pools: std::collections::BTreeSet<_> =
        held.pools.keys().chain(counted.pools.keys()).collect();
    for (op, ty) in pools {
        let get = |c: &crate::store::sled::Counts| {
            c.pools.get(&(op.clone(), ty.clone())).copied().unwrap_or(0)
        };
        rows.push((format!("available {op}/{ty}"), get(&held), get(&counted)));
    }
    let total: i64 = counted.states.values().sum();
    let wrong: Vec<_> = rows.iter().filter(|(_, h, c)| h != c).collect();
    if wrong.is_empty() {
        println!(
            "counts consistent: {total} profiles, {} pools",
            rows.len() - 9
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:>12} {:>12}", "count", "kept", "records");
    for (name, h, c) in &wrong {
        println!("{name:<40} {h:>12} {c:>12}");
    }
    if a.repair {
        sled.repair_counts().map_err(|e| e.to_string())?;
        println!("repaired: the kept counts are now those of the {total} records");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} counts differ; `smdpplus store check --repair` replaces the kept ones",
        wrong.len()
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_found() {
        assert!(url_has_password("postgres://u:secret@h/db"));
        assert!(url_has_password(
            "postgresql://u:p%40ss@h:5432/db?sslmode=disable"
        ));
        assert!(url_has_password("postgres://u@h/db?password=x"));
        assert!(!url_has_password("postgres://u@h/db"));
        assert!(!url_has_password("postgres://h:5432/db"));
        assert!(!url_has_password("postgres://u@h/db?options=a:b"));
    }
}
