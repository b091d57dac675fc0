//! kill -9 in the middle of a load: every acknowledged transition is there
//! after a restart, and the outbox still delivers what was enqueued.
//!
//! The load, the record of what it had acknowledged and the checks against
//! the store are shared with the PostgreSQL variant in `multinode`, where
//! one of several nodes is killed and another one answers for the store.

use crate::common::{iccids, status, Operator, Receiver, Server};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The last transition of an order that a client saw acknowledged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Acked {
    /// downloadOrder answered Executed-Success.
    Ordered,
    /// confirmOrder with release answered Executed-Success.
    Released,
    /// cancelOrder (Unavailable) answered Executed-Success.
    Withdrawn,
}

impl Acked {
    /// Whether `state` in the store agrees with an acknowledged `self`:
    /// a later transition may have been applied without its answer.
    pub(crate) fn admits(self, state: &str) -> bool {
        match self {
            Acked::Ordered => state == "Linked" || state == "Released",
            Acked::Released => state == "Released" || state == "Unavailable",
            Acked::Withdrawn => state == "Unavailable",
        }
    }
}

/// The acknowledged transitions by ICCID, filled in by the load's clients.
pub(crate) type AckedLog = Arc<Mutex<HashMap<String, Acked>>>;

/// A load of ES2+ clients: each one, again and again, orders a profile of
/// `profile_type` for an EID of its own (downloadOrder), confirms it with
/// release (confirmOrder) and withdraws every third one (cancelOrder
/// Unavailable, which notifies). Client `w` talks to `ops[w % ops.len()]`
/// and stops at its first transport failure (its node is gone) or refusal
/// (the pool is exhausted).
pub(crate) struct Load {
    /// What the clients saw acknowledged.
    pub(crate) acked: AckedLog,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// Starts `clients` clients spread over `ops`.
    pub(crate) fn start(ops: &[Operator], clients: u32, profile_type: &str) -> Load {
        let acked: AckedLog = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..clients {
            let op = ops[w as usize % ops.len()].clone();
            let acked = acked.clone();
            let profile_type = profile_type.to_owned();
            tasks.spawn(async move { client(op, w, &profile_type, acked).await });
        }
        Load { acked, tasks }
    }

    /// How many orders were acknowledged so far.
    pub(crate) fn count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Waits until `n` orders were acknowledged, or `within` passed.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every client to stop; returns what was acknowledged.
    pub(crate) async fn finish(mut self) -> HashMap<String, Acked> {
        while let Some(r) = self.tasks.join_next().await {
            r.expect("a load client panicked");
        }
        let acked = self.acked.lock().expect("lock").clone();
        acked
    }
}

/// One client of [`Load`].
async fn client(op: Operator, w: u32, profile_type: &str, acked: AckedLog) {
    let ack = |iccid: &str, what| {
        acked.lock().expect("lock").insert(iccid.to_owned(), what);
    };
    for i in 0..1000u32 {
        let eid = format!("890490320000000000000{w:03}{i:08}");
        let Ok(v) = op
            .try_call(
                "downloadOrder",
                json!({"profileType": profile_type, "eid": eid}),
            )
            .await
        else {
            return;
        };
        if status(&v) != "Executed-Success" {
            return;
        }
        let iccid = v["iccid"].as_str().expect("iccid").to_owned();
        ack(&iccid, Acked::Ordered);
        let Ok(v) = op
            .try_call("confirmOrder", json!({"iccid": iccid, "releaseFlag": true}))
            .await
        else {
            return;
        };
        if status(&v) != "Executed-Success" {
            return;
        }
        ack(&iccid, Acked::Released);
        if i % 3 == 0 {
            let m = v["matchingId"].clone();
            let Ok(v) = op
                .try_call(
                    "cancelOrder",
                    json!({"iccid": iccid, "eid": eid, "matchingId": m, "finalProfileStatusIndicator": "Unavailable"}),
                )
                .await
            else {
                return;
            };
            if status(&v) == "Executed-Success" {
                ack(&iccid, Acked::Withdrawn);
            }
        }
    }
}

/// Prints the size of the acknowledged load and fails when it is too small
/// to mean anything.
pub(crate) fn report(acked: &HashMap<String, Acked>, what: &str) {
    assert!(
        acked.len() >= 100,
        "load too small to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "acknowledged {what}: {} orders ({} withdrawn)",
        acked.len(),
        acked.values().filter(|a| **a == Acked::Withdrawn).count()
    );
}

/// Every acknowledged transition is in the store that `op` reads.
pub(crate) async fn check_acked(op: &Operator, acked: &HashMap<String, Acked>) {
    for (iccid, what) in acked {
        let state = op.state(iccid).await;
        assert!(
            what.admits(&state),
            "{iccid}: acknowledged {what:?}, found {state}"
        );
    }
}

/// Every acknowledged withdrawal reaches `rx` at least once within 20 s of
/// the previous notification.
pub(crate) async fn check_withdrawals_notified(rx: &mut Receiver, acked: &HashMap<String, Acked>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_orders_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rx = Receiver::start(&dir.path().join("receiver"), 0).await;
    let mut server = Server::start(&data, Some(&rx.config("seed_demo_profiles = 0")));
    let op = server.operator();
    op.add_profiles("load", &iccids(21, 600)).await;

    // Eight clients; let the load run, then kill the server mid-flight.
    let load = Load::start(&[op], 8, "load");
    load.wait_for(150, Duration::from_secs(30)).await;
    server.kill9();
    let acked = load.finish().await;
    report(&acked, "before kill -9");

    let server = Server::start(&data, Some(&rx.config("seed_demo_profiles = 0")));
    check_acked(&server.operator(), &acked).await;
    // Every acknowledged withdrawal is notified at least once, after the restart if need be.
    check_withdrawals_notified(&mut rx, &acked).await;
}
