//! The bulk goal of profile data preparation: a million profiles generated
//! and imported in under two minutes.
//!
//! Runs the release `smdpplus` binary as an operator would:
//! 1. `profiles generate --count N` into an empty data directory (values
//!    from the CSPRNG, wrapped under the master key, stored in sled, and
//!    the operator's CSV written);
//! 2. `profiles import --csv` of that CSV (Ki and OPc from the file) into a
//!    second empty data directory.
//!
//! Each step is timed from process start to exit, fsync of the store
//! included, and its summary line is checked for the count.
//!
//! Run: `cargo bench --bench bulk` (N = 1,000,000; set
//! `SMDPPLUS_BULK_COUNT` for another size). It needs about 5 GB of disk
//! and 4 GB of memory at that size.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smdpplus");

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs one step; returns its wall time and what it printed.
fn step(args: &[&str]) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run smdpplus");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "smdpplus {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, stdout)
}

fn report(what: &str, n: u64, took: Duration) {
    let secs = took.as_secs_f64();
    println!(
        "bulk/{what}: {n} profiles in {secs:.1} s ({:.0} profiles/s)",
        n as f64 / secs
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
    let tmp = tempfile::tempdir().expect("temp dir");
    let gen_dir = tmp.path().join("generated");
    let imp_dir = tmp.path().join("imported");
    let csv = tmp.path().join("operator.csv");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let count = n.to_string();
    println!("bulk: N = {n}, load average before: {}", load_average());

    let (gen_took, out) = step(&[
        "profiles",
        "generate",
        "--data-dir",
        &path(&gen_dir),
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
    ]);
    assert!(
        out.contains(&format!("generated {n} profiles")),
        "unexpected summary: {out}"
    );
    report("generate", n, gen_took);

    println!("bulk: load average before import: {}", load_average());
    let (imp_took, out) = step(&[
        "profiles",
        "import",
        "--data-dir",
        &path(&imp_dir),
        "--csv",
        &path(&csv),
        "--profile-type",
        "bulk",
    ]);
    assert!(
        out.contains(&format!("imported {n} profiles")),
        "unexpected summary: {out}"
    );
    report("import", n, imp_took);
    report("generate+import", n, gen_took + imp_took);
}
