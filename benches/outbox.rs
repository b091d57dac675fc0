//! Server CPU per ES2+ order and per download, with and without a large
//! held outbox.
//!
//! Notifications of an operator without `notification_url` (the default
//! configuration) stay in the outbox. The delivery worker wakes after every
//! transition; it must not pay for the items it holds. This bench runs the
//! release `smdpplus` binary for each outbox size:
//!
//! 1. starts it on a fresh data directory (1,000 seeded `demo` profiles of
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
//! Run: `cargo bench --bench outbox` (N = 0 and 10,000; about 2 minutes).
//! `SMDPPLUS_BENCH_HELD` (comma-separated sizes), `SMDPPLUS_BENCH_ORDERS`
//! and `SMDPPLUS_BENCH_DOWNLOADS` change the sizes and the counts.

#[path = "../tests/common/mod.rs"]
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

const CONFIG: &str = "seed_demo_profiles = 1000\n";

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

/// Server CPU seconds per order pair and per download with `held` items.
async fn measure(held: usize, orders: usize, downloads: usize) -> (f64, f64) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, Some(CONFIG));
    assert!(server.terminate().success());
    place_held(&data, held);
    let server = Server::start(&data, Some(CONFIG));
    let op = server.operator();
    let lpa = smdpplus::euicc::lpa::Lpa::new(
        &format!("localhost:{}", server.es9.port()),
        smdpplus::euicc::lpa::Lpa::sgp26_roots(),
        false,
    )
    .expect("lpa");
    // Warm up: connections, caches, one download.
    for _ in 0..10 {
        order(&op).await;
    }
    let mid = order(&op).await;
    let mut card = smdpplus::euicc::SoftEuicc::sgp26_nist().expect("eUICC");
    lpa.download(&mut card, Some(&mid), None, &mut |_| {})
        .await
        .expect("download");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let before = server_cpu(&data);
    for _ in 0..orders {
        order(&op).await;
    }
    let per_order = (server_cpu(&data) - before) / orders as f64;

    let mids: Vec<String> = {
        let mut v = vec![];
        for _ in 0..downloads {
            v.push(order(&op).await);
        }
        v
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = server_cpu(&data);
    for mid in &mids {
        let mut card = smdpplus::euicc::SoftEuicc::sgp26_nist().expect("eUICC");
        lpa.download(&mut card, Some(mid), None, &mut |_| {})
            .await
            .expect("download");
    }
    let per_download = (server_cpu(&data) - before) / downloads as f64;
    // Each download left two held notifications (points 3 and 4).
    let (_, m) = server.ops_get("/metrics").await;
    let depth = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("smdpplus_outbox_depth ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(-1i64);
    assert_eq!(depth, (held + 2 * (downloads + 1)) as i64, "{m}");
    (per_order, per_download)
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
    let orders = env_or("SMDPPLUS_BENCH_ORDERS", 300);
    let downloads = env_or("SMDPPLUS_BENCH_DOWNLOADS", 40);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("outbox: load average before: {}", load_average());
    for n in held {
        let (o, d) = rt.block_on(measure(n, orders, downloads));
        println!(
            "outbox/held_{n}: server CPU {:.2} ms per order pair ({orders}), {:.2} ms per download ({downloads}); load average {}",
            o * 1000.0,
            d * 1000.0,
            load_average()
        );
    }
}
