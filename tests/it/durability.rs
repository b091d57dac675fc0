//! kill -9 in the middle of a load: every acknowledged transition is there
//! after a restart, and the outbox still delivers what was enqueued.

use crate::common::{iccids, status, Receiver, Server};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Acked {
    Ordered,
    Released,
    Withdrawn,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_orders_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let mut server = Server::start(&data, Some(&rx.config("seed_demo_profiles = 0")));
    let op = server.operator();
    let pool = iccids(21, 600);
    op.add_profiles("load", &pool).await;

    // Eight clients: downloadOrder, confirmOrder with release, and every
    // third order withdrawn (cancelOrder Unavailable, which notifies).
    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let op = op.clone();
        let acked = acked.clone();
        tasks.spawn(async move {
            for i in 0..1000u32 {
                let eid = format!("890490320000000000000{w:03}{i:08}");
                let Ok(v) = op.try_call("downloadOrder", json!({"profileType": "load", "eid": eid})).await else { return };
                if status(&v) != "Executed-Success" {
                    return;
                }
                let iccid = v["iccid"].as_str().expect("iccid").to_owned();
                acked.lock().expect("lock").insert(iccid.clone(), Acked::Ordered);
                let Ok(v) = op.try_call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true})).await else { return };
                if status(&v) != "Executed-Success" {
                    return;
                }
                acked.lock().expect("lock").insert(iccid.clone(), Acked::Released);
                if i % 3 == 0 {
                    let m = v["matchingId"].clone();
                    let Ok(v) = op.try_call("cancelOrder", json!({"iccid": iccid, "eid": eid, "matchingId": m, "finalProfileStatusIndicator": "Unavailable"})).await else { return };
                    if status(&v) == "Executed-Success" {
                        acked.lock().expect("lock").insert(iccid, Acked::Withdrawn);
                    }
                }
            }
        });
    }
    // Let the load run, then kill the server mid-flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 150 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    while tasks.join_next().await.is_some() {}
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 100,
        "load too small to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "acknowledged before kill -9: {} orders ({} withdrawn)",
        acked.len(),
        acked.values().filter(|a| **a == Acked::Withdrawn).count()
    );

    let server = Server::start(&data, Some(&rx.config("seed_demo_profiles = 0")));
    let op = server.operator();
    for (iccid, what) in &acked {
        let state = op.state(iccid).await;
        let ok = match what {
            Acked::Ordered => state == "Linked" || state == "Released",
            Acked::Released => state == "Released" || state == "Unavailable",
            Acked::Withdrawn => state == "Unavailable",
        };
        assert!(ok, "{iccid}: acknowledged {what:?}, found {state}");
    }
    // Every acknowledged withdrawal is notified at least once, after the restart if need be.
    let withdrawn: HashSet<&String> = acked
        .iter()
        .filter(|(_, a)| **a == Acked::Withdrawn)
        .map(|(i, _)| i)
        .collect();
    assert!(!withdrawn.is_empty());
    let mut seen = HashSet::new();
    while !withdrawn.iter().all(|i| seen.contains(*i)) {
        let n = rx.next(Duration::from_secs(20)).await.unwrap_or_else(|| {
            panic!(
                "missing notifications: {} of {}",
                withdrawn.iter().filter(|i| !seen.contains(**i)).count(),
                withdrawn.len()
            )
        });
        seen.insert(n["iccid"].as_str().unwrap_or_default().to_owned());
    }
}
