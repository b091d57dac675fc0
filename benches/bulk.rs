//! The inventory at scale: a million profiles generated and imported, then
//! served.
//!
//! Runs the release `smdpplus` binary as an operator would:
//! 1. `profiles generate --count N` into an empty store (values from the
//!    CSPRNG, wrapped under the master key, and the operator's CSV
//!    written);
//! 2. `profiles import --csv` of that CSV (Ki and OPc from the file) into a
//!    second empty store;
//! 3. on PostgreSQL, `VACUUM (ANALYZE)` of the store's tables (what
//!    autovacuum does soon after a bulk load, done first so that it falls
//!    outside the measured loads);
//! 4. `serve` on the generated store: the time from process start to the
//!    `ready` line, the idle resident memory, the store's size on disk,
//!    then `smdpplus load es2` (downloadOrder+confirmOrder pairs at 32
//!    clients) and `smdpplus load download` (whole ES9+ downloads at 8
//!    sessions in flight), each with the server's CPU from `/proc` and,
//!    on PostgreSQL, the database's CPU counted apart (from the load
//!    generator's start line, so not the orders a download run places
//!    first).
//!
//! Each step is timed from process start to exit (or to ready), fsync of
//! the store included, and its summary is checked.
//!
//! Run: `cargo bench --bench bulk` (N = 1,000,000, sled). Set
//! `SMDPPLUS_BULK_COUNT` for another size, `SMDPPLUS_BULK_ENGINE=postgres`
//! for the PostgreSQL store (in a new schema of the database that
//! `SMDPPLUS_TEST_POSTGRES` names; `SMDPPLUS_PG_FSYNC=on
//! tests/tools/postgres.sh start DIR` starts a cluster of its own, so that
//! no other client's work counts in its CPU),
//! `SMDPPLUS_BULK_STEPS` for a subset of `generate,import,serve`, and
//! `SMDPPLUS_BULK_LOAD_SECS` (default 15) for the length of each load. It
//! needs about 4 GB of disk and 2 GB of memory at N = 1,000,000.

#[path = "../tests/it/common/mod.rs"]
mod common;

use common::postgres::TestSchema;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smdpplus");

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Where the profiles go: a sled data directory, or a schema of the test
/// PostgreSQL database (with a data directory for the keys and the PKI).
struct Target {
    dir: PathBuf,
    /// The configuration file `--config` names.
    config: PathBuf,
    /// The PostgreSQL schema, if any, and its URL.
    schema: Option<TestSchema>,
}

impl Target {
    fn new(rt: &tokio::runtime::Runtime, dir: PathBuf, postgres: bool, name: &str) -> Target {
        std::fs::create_dir_all(&dir).expect("data dir");
        let schema = postgres.then(|| {
            rt.block_on(TestSchema::create(name))
                .expect("SMDPPLUS_BULK_ENGINE=postgres needs SMDPPLUS_TEST_POSTGRES")
        });
        let mut toml = format!(
            "data_dir = \"{}\"\n\
             [es9]\n\
             initiate_authentication_rate = {{ per_minute = 0, burst = 1 }}\n",
            dir.display()
        );
        if schema.is_some() {
            toml.push_str("[store]\nengine = \"postgres\"\npool_size = 16\n");
        }
        let config = dir.join("bulk.toml");
        std::fs::write(&config, toml).expect("config");
        Target {
            dir,
            config,
            schema,
        }
    }

    /// Environment for a process on this store.
    fn env(&self) -> Vec<(&'static str, String)> {
        self.schema
            .iter()
            .map(|s| ("SMDPPLUS_STORE_URL", s.url.clone()))
            .collect()
    }

    /// Bytes the store takes: the sled directory's allocated blocks, or
    /// the schema's tables with their indexes and TOAST.
    fn disk_bytes(&self, rt: &tokio::runtime::Runtime) -> u64 {
        match &self.schema {
            None => du(&self.dir.join("db")),
            Some(s) => rt.block_on(async {
                let pg = s.connect(1).await;
                let client = pg.client().await.expect("connection");
                let row = client
                    .query_one(
                        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint \
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relkind = 'r'",
                        &[&s.name],
                    )
                    .await
                    .expect("schema size");
                row.get::<_, i64>(0) as u64
            }),
        }
    }
}

/// On PostgreSQL, `VACUUM (ANALYZE)` of the schema's tables, as
/// autovacuum would do on its own soon after a bulk load; done here first
/// so that it does not land inside a measured load run. Prints its time
/// and the cluster's CPU.
fn vacuum(rt: &tokio::runtime::Runtime, s: &TestSchema, pm: Option<u32>) {
    let cpu = postgres_cpu(pm);
    let started = Instant::now();
    rt.block_on(async {
        let pg = s.connect(1).await;
        let client = pg.client().await.expect("connection");
        let tables = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
                &[&s.name],
            )
            .await
            .expect("the schema's tables");
        for t in tables {
            let table: String = t.get(0);
            client
                .batch_execute(&format!("VACUUM (ANALYZE) \"{}\".\"{table}\"", s.name))
                .await
                .expect("vacuum");
        }
    });
    println!(
        "bulk/vacuum: VACUUM (ANALYZE) of the schema in {:.1} s, PostgreSQL CPU {:.1} s",
        started.elapsed().as_secs_f64(),
        postgres_cpu(pm) - cpu
    );
}

/// Allocated bytes under `path`.
fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Runs `smdpplus` to its exit: the time, its stdout, and its peak
/// resident memory in KiB (the child's own `ru_maxrss`, from `wait4`).
fn step(args: &[&str], env: &[(&str, String)]) -> (Duration, String, u64) {
    use std::io::Read;
    let started = Instant::now();
    #[allow(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also gives its rusage"
    )]
    let mut child = spawn(args, env);
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout);
    let (code, max_rss_kib) = wait4(child.id());
    let took = started.elapsed();
    assert!(
        code == Some(0),
        "smdpplus {args:?} failed ({code:?}): {stdout}{}",
        errors.join().unwrap_or_default()
    );
    (took, stdout, max_rss_kib)
}

/// Starts `smdpplus` with `args` and `env` (warnings only in its log),
/// its standard output and error piped.
fn spawn(args: &[impl AsRef<std::ffi::OsStr>], env: &[(&str, String)]) -> std::process::Child {
    use std::process::Stdio;
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smdpplus")
}

/// Reaps the child `pid`: its exit code (`None` if a signal ended it) and
/// its peak resident memory in KiB.
fn wait4(pid: u32) -> (Option<i32>, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and both pointers outlive the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(
        reaped,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss.max(0) as u64)
}

fn report(what: &str, n: u64, took: Duration, max_rss_kib: Option<u64>) {
    let secs = took.as_secs_f64();
    let rss = max_rss_kib
        .map(|k| format!(", peak RSS {:.0} MB", k as f64 * 1024.0 / 1e6))
        .unwrap_or_default();
    println!(
        "bulk/{what}: {n} profiles in {secs:.1} s ({:.0} profiles/s){rss}",
        n as f64 / secs
    );
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: &str) -> Option<(String, Vec<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let f = stat[close + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Some((comm, f))
}

/// CPU seconds of the PostgreSQL cluster whose postmaster is `postmaster`:
/// its processes' utime+stime, plus what the postmaster collected from
/// backends that have exited (cutime+cstime). Other clusters on the
/// machine do not count.
fn postgres_cpu(postmaster: Option<u32>) -> f64 {
    let Some(pm) = postmaster else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if let Some((_, f)) = stat_fields(&name) {
            // ppid is field 4 of stat; utime, stime, cutime, cstime 14-17.
            if f.len() > 14 && (pid == pm || f[1] == u64::from(pm)) {
                ticks += f[11] + f[12];
                if pid == pm {
                    ticks += f[13] + f[14];
                }
            }
        }
    }
    ticks as f64 / clock_ticks()
}

/// The postmaster of the cluster the schema lives in: the parent of this
/// connection's backend.
fn postmaster(rt: &tokio::runtime::Runtime, s: &TestSchema) -> Option<u32> {
    let pid: i32 = rt.block_on(async {
        let pg = s.connect(1).await;
        let client = pg.client().await.ok()?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?;
        Some(row.get::<_, i32>(0))
    })?;
    let (_, f) = stat_fields(&pid.to_string())?;
    u32::try_from(f[1]).ok()
}

/// Resident memory of `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs a load generator with `--json` against the server; its report,
/// and the PostgreSQL CPU seconds spent while it measured: from its
/// "closed loop:"/"open loop:" line on standard error (the orders a
/// download run places first are not part of it) to its exit.
fn load(args: &[String], env: &[(&str, String)], pm: Option<u32>) -> (Value, f64) {
    use std::io::{BufRead, BufReader, Read};
    let mut all = vec!["load".to_owned()];
    all.extend(args.iter().cloned());
    all.push("--json".into());
    let mut child = spawn(&all, env);
    let stderr = child.stderr.take().expect("stderr");
    let watcher = std::thread::spawn(move || {
        let mut start = None;
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if start.is_none()
                && (line.starts_with("closed loop:") || line.starts_with("open loop:"))
            {
                start = Some(postgres_cpu(pm));
            }
            text.push_str(&line);
            text.push('\n');
        }
        (start, text)
    });
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read the report");
    let status = child.wait().expect("wait for smdpplus load");
    let (start, errors) = watcher.join().expect("stderr reader");
    assert!(status.success(), "smdpplus {all:?} failed: {out}{errors}");
    let pg = postgres_cpu(pm) - start.expect("the load generator's start line");
    let v: Value = serde_json::from_str(out.trim()).expect("load report JSON");
    (v, pg)
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Step 3: the server on the generated store.
fn serve(rt: &tokio::runtime::Runtime, target: &Target, n: u64, load_secs: u64) {
    let postgres = target.schema.is_some();
    let pm = target.schema.as_ref().and_then(|s| postmaster(rt, s));
    if postgres {
        println!("bulk: PostgreSQL postmaster {pm:?} (its processes' CPU is counted apart)");
    }
    let disk = target.disk_bytes(rt);
    println!(
        "bulk/disk: {:.1} MiB for {n} profiles ({:.0} bytes per profile)",
        disk as f64 / (1 << 20) as f64,
        disk as f64 / n as f64
    );
    if let Some(s) = &target.schema {
        vacuum(rt, s, pm);
    }
    let env = target.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = std::fs::read_to_string(&target.config).expect("config");
    // Twice: the first start after the bulk write may still find it in
    // the page cache being written back; both are reported.
    let mut server = None;
    for round in 1..=2 {
        drop(server.take());
        let started = Instant::now();
        let s = common::Server::start_with_env(&target.dir, Some(&config), &env_refs);
        println!(
            "bulk/start-up {round}: ready in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        server = Some(s);
    }
    let server = server.expect("server");
    std::thread::sleep(Duration::from_secs(2));
    println!("bulk/idle RSS: {:.0} MiB", rss_mib(server.pid()));

    let pki = server.pki();
    let pid = server.pid().to_string();
    let conn = |v: &mut Vec<String>| {
        v.extend([
            "--server".into(),
            format!("https://localhost:{}", server.es2.port()),
            "--data-dir".into(),
            target.dir.display().to_string(),
            "--ca".into(),
            pki.ci_cert.display().to_string(),
            "--server-pid".into(),
            pid.clone(),
            "--profile-type".into(),
            "bulk".into(),
        ]);
    };
    // Small stores cannot feed a timed run: count the work instead.
    let budget = (n / 3).max(1);
    let mut es2 = vec!["es2".to_owned(), "--concurrency".into(), "32".into()];
    if budget < 40_000 {
        es2.extend(["--pairs".into(), budget.min(20_000).to_string()]);
    } else {
        es2.extend(["--duration-secs".into(), load_secs.to_string()]);
    }
    conn(&mut es2);
    let (v, pg) = load(&es2, &env, pm);
    let pairs = f(&v, &["pairs"]);
    println!(
        "bulk/es2 (32 clients): {pairs} pairs, {:.0} pairs/s, {} failed, pair p50 {:.2} ms p99 {:.2} ms; \
         server CPU {:.0} us per pair ({} TLS handshakes in the measurement){}",
        f(&v, &["pairs_per_sec"]),
        v["failed"],
        f(&v, &["pair", "p50_ms"]),
        f(&v, &["pair", "p99_ms"]),
        f(&v, &["server_cpu", "per_pair_us"]),
        v["handshakes_measured"],
        if postgres {
            format!("; PostgreSQL CPU {:.0} us per pair", pg * 1e6 / pairs)
        } else {
            String::new()
        }
    );

    let mut dl = vec![
        "download".to_owned(),
        "--smdp".into(),
        format!("localhost:{}", server.es9.port()),
        "--concurrency".into(),
        "8".into(),
        "--order-count".into(),
        budget.min(20_000).to_string(),
        "--duration-secs".into(),
        load_secs.to_string(),
    ];
    conn(&mut dl);
    let (v, pg) = load(&dl, &env, pm);
    let downloads = f(&v, &["downloads"]);
    println!(
        "bulk/download (8 in flight): {downloads} downloads, {:.0} downloads/s, {} failed, session p50 {:.2} ms; \
         server CPU {:.0} us per session, floor {:.1} us, ratio {:.1}{}",
        f(&v, &["downloads_per_sec"]),
        v["failed"],
        f(&v, &["session", "p50_ms"]),
        f(&v, &["server_cpu", "per_session_us"]),
        f(&v, &["floor", "per_session_us"]),
        f(&v, &["ratio"]),
        if postgres {
            format!("; PostgreSQL CPU {:.0} us per session", pg * 1e6 / downloads)
        } else {
            String::new()
        }
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this file
    // too, without it, and should not spend minutes on a million profiles.
    if !std::env::args().any(|a| a == "--bench") {
        println!("bulk: skipped (run it with `cargo bench --bench bulk`)");
        return;
    }
    let n: u64 = std::env::var("SMDPPLUS_BULK_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let postgres = match std::env::var("SMDPPLUS_BULK_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("SMDPPLUS_BULK_ENGINE: sled or postgres, not {other}"),
    };
    let steps =
        std::env::var("SMDPPLUS_BULK_STEPS").unwrap_or_else(|_| "generate,import,serve".into());
    let steps: Vec<&str> = steps.split(',').map(str::trim).collect();
    let load_secs: u64 = std::env::var("SMDPPLUS_BULK_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("temp dir");
    let generated = Target::new(
        &rt,
        tmp.path().join("generated"),
        postgres,
        "bulk_generated",
    );
    let csv = tmp.path().join("operator.csv");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let count = n.to_string();
    println!(
        "bulk: N = {n}, engine {}, load average before: {}",
        if postgres { "postgres" } else { "sled" },
        load_average()
    );

    let (gen_took, out, gen_rss) = step(
        &[
            "profiles",
            "generate",
            "--config",
            &path(&generated.config),
            "--count",
            &count,
            "--iccid-start",
            "894400000000000000",
            "--imsi-start",
            "001010000000000",
            "--profile-type",
            "bulk",
            "--csv",
            &path(&csv),
        ],
        &generated.env(),
    );
    assert!(
        out.contains(&format!("generated {n} profiles")),
        "unexpected summary: {out}"
    );
    report("generate", n, gen_took, Some(gen_rss));

    if steps.contains(&"import") {
        println!("bulk: load average before import: {}", load_average());
        let imported = Target::new(&rt, tmp.path().join("imported"), postgres, "bulk_imported");
        let (imp_took, out, imp_rss) = step(
            &[
                "profiles",
                "import",
                "--config",
                &path(&imported.config),
                "--csv",
                &path(&csv),
                "--profile-type",
                "bulk",
            ],
            &imported.env(),
        );
        assert!(
            out.contains(&format!("imported {n} profiles")),
            "unexpected summary: {out}"
        );
        report("import", n, imp_took, Some(imp_rss));
        report("generate+import", n, gen_took + imp_took, None);
        if let Some(s) = imported.schema {
            rt.block_on(s.drop());
        }
    }

    if steps.contains(&"serve") {
        println!("bulk: load average before serve: {}", load_average());
        serve(&rt, &generated, n, load_secs);
    }
    if let Some(s) = generated.schema {
        rt.block_on(s.drop());
    }
}
