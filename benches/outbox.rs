//! Server CPU per ES2+ order and per download, with and without a large
//! held outbox.
//!
//! Notifications of an operator without `notification_url` (the default
//! configuration) stay in the outbox. The delivery worker wakes after every
//! transition; it must not pay for the items it holds. This bench runs the
//! release `smdpplus` binary for each outbox size:
//!
//! 1. starts it on a fresh data directory (1,500 seeded `demo` profiles of
//!    `dev-operator`, which has no `notification_url`), then stops it;
//! 2. places N held notifications in its store (downloadOrder + cancelOrder
//!    pairs on one profile, each cancel writing one outbox item), offline
//!    through the library's store;
//! 3. starts it again and measures its CPU time (utime + stime from
//!    `/proc/<pid>/stat`) over
//!    - `order`: sequential ES2+ downloadOrder (by profile type) +
//!      confirmOrder (releaseFlag true) pairs over mutual TLS, and
//!    - `download`: sequential full ES9+ downloads by the software eUICC
//!      (activation-code flow: InitiateAuthentication, AuthenticateClient,
//!      GetBoundProfilePackage, the installation result through
//!      HandleNotification), whose orders were made before the measurement.
//!
//! Only the server's CPU is counted: the bench's own TLS and the eUICC's
//! cryptography run in this process.
//!
//! Both servers run at once and the measurement alternates between them
//! in 5 rounds, so that changes in the machine's load touch both alike.
//!
//! Run: `cargo bench --bench outbox` (N = 0 and 10,000; 1,000 order pairs and 150 downloads each; about 2 minutes).
//! `SMDPPLUS_BENCH_HELD` (comma-separated sizes), `SMDPPLUS_BENCH_ORDERS`
//! and `SMDPPLUS_BENCH_DOWNLOADS` change the sizes and the counts.

#[path = "../tests/it/common/mod.rs"]
mod common;

use common::{status, Server, EID};
use serde_json::json;
use smdpplus::ids::{Eid, Iccid};
use smdpplus::store::{Command, Ctx, FinalStatus, Store, StoreOptions};
use std::path::Path;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Clock ticks per second of `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of the server (pid from its pid file), in seconds.
fn server_cpu(data: &Path) -> f64 {
    let pid = std::fs::read_to_string(data.join("smdpplus.pid")).expect("pid file");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).expect("stat");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse().expect("utime"), f[12].parse().expect("stime"));
    (utime + stime) / clock_ticks()
}

const CONFIG: &str = "seed_demo_profiles = 1500\n";

/// `n` held notifications for `dev-operator`, written through the store
/// while the server is stopped.
fn place_held(data: &Path, n: usize) {
    let store = Store::open(&data.join("db"), StoreOptions::default()).expect("open store");
    let iccid = Iccid::parse("8999900000000000006").expect("iccid");
    let eid = Eid::parse(EID).expect("eid");
    let now = smdpplus::time::now();
    let ctx = Ctx {
        caller: "dev-operator",
        now,
        idem: None,
    };
    for _ in 0..n {
        store
            .apply(
                &Command::DownloadOrder {
                    operator: "dev-operator".into(),
                    eid: Some(eid.clone()),
                    iccid: Some(iccid.clone()),
                    profile_type: None,
                },
                &ctx,
            )
            .expect("downloadOrder");
        store
            .apply(
                &Command::CancelOrder {
                    operator: "dev-operator".into(),
                    iccid: iccid.clone(),
                    eid: Some(eid.clone()),
                    matching_id: None,
                    final_status: FinalStatus::Available,
                },
                &ctx,
            )
            .expect("cancelOrder");
    }
    store.flush_blocking().expect("flush");
    assert_eq!(store.outbox().expect("outbox").len(), n);
}

/// ES2+ downloadOrder by profile type + confirmOrder with release; the
/// matchingId.
async fn order(op: &common::Operator) -> String {
    let (_, v) = op
        .call("downloadOrder", json!({"profileType": "demo"}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    let iccid = v["iccid"].as_str().expect("iccid").to_owned();
    let (_, v) = op
        .call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true}))
        .await;
    assert_eq!(status(&v), "Executed-Success", "{v}");
    v["matchingId"].as_str().expect("matchingId").to_owned()
}

/// One server with `held` notifications in its outbox, warmed up.
struct Setup {
    held: usize,
    data: std::path::PathBuf,
    server: Server,
    op: common::Operator,
    lpa: smdpplus::euicc::lpa::Lpa,
    downloads: usize,
    // Last: the directory outlives the server.
    _dir: tempfile::TempDir,
}

async fn setup(held: usize) -> Setup {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, Some(CONFIG));
    // The pid file is written once the workers run, just before the
    // signal handlers are installed.
    while !data.join("smdpplus.pid").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(server.terminate().success());
    place_held(&data, held);
    let server = Server::start(&data, Some(CONFIG));
    while !data.join("smdpplus.pid").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let op = server.operator();
    let lpa = smdpplus::euicc::lpa::Lpa::new(
        &format!("localhost:{}", server.es9.port()),
        smdpplus::euicc::lpa::Lpa::sgp26_roots(),
        false,
    )
    .expect("lpa");
    let mut s = Setup {
        held,
        data,
        server,
        op,
        lpa,
        downloads: 0,
        _dir: dir,
    };
    // Warm up: connections, caches, one download.
    orders(&s, 10).await;
    downloads(&mut s, 1).await;
    s
}

/// Server CPU seconds over `n` order pairs.
async fn orders(s: &Setup, n: usize) -> f64 {
    let before = server_cpu(&s.data);
    for _ in 0..n {
        order(&s.op).await;
    }
    server_cpu(&s.data) - before
}

/// Server CPU seconds over `n` downloads (their orders made before).
async fn downloads(s: &mut Setup, n: usize) -> f64 {
    let mut mids = vec![];
    for _ in 0..n {
        mids.push(order(&s.op).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = server_cpu(&s.data);
    for mid in &mids {
        let mut card = smdpplus::euicc::SoftEuicc::sgp26_nist().expect("eUICC");
        s.lpa
            .download(&mut card, Some(mid), None, &mut |_| {})
            .await
            .expect("download");
    }
    let cpu = server_cpu(&s.data) - before;
    s.downloads += n;
    cpu
}

/// Each download left two held notifications (points 3 and 4).
async fn check_depth(s: &Setup) {
    let (_, m) = s.server.ops_get("/metrics").await;
    let depth = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("smdpplus_outbox_depth ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(-1i64);
    assert_eq!(depth, (s.held + 2 * s.downloads) as i64, "{m}");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this file
    // too, without it, and should not spend minutes on it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("outbox: skipped (run it with `cargo bench --bench outbox`)");
        return;
    }
    let held: Vec<usize> = std::env::var("SMDPPLUS_BENCH_HELD")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 10_000]);
    let n_orders = env_or("SMDPPLUS_BENCH_ORDERS", 1000);
    let n_downloads = env_or("SMDPPLUS_BENCH_DOWNLOADS", 150);
    const ROUNDS: usize = 5;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("outbox: load average before: {}", load_average());
        let mut setups = vec![];
        for n in held {
            setups.push(setup(n).await);
        }
        // Rounds alternate between the servers, so that a change in the
        // machine's load affects every size alike.
        let mut cpu = vec![(0.0f64, 0.0f64); setups.len()];
        for _ in 0..ROUNDS {
            for (s, c) in setups.iter_mut().zip(cpu.iter_mut()) {
                c.0 += orders(s, n_orders / ROUNDS).await;
                c.1 += downloads(s, n_downloads / ROUNDS).await;
            }
        }
        for (s, (o, d)) in setups.iter().zip(cpu) {
            check_depth(s).await;
            println!(
                "outbox/held_{}: server CPU {:.2} ms per order pair ({}), {:.2} ms per download ({})",
                s.held,
                o * 1000.0 / (n_orders / ROUNDS * ROUNDS) as f64,
                n_orders / ROUNDS * ROUNDS,
                d * 1000.0 / (n_downloads / ROUNDS * ROUNDS) as f64,
                n_downloads / ROUNDS * ROUNDS,
            );
        }
        println!("outbox: load average after: {}", load_average());
    });
}
