//! Concurrent ES2+ calls against the real server: allocation never hands one
//! profile out twice, and a profile is never linked to two EIDs.

use crate::common::{code, iccids, status, Server};
use serde_json::json;
use std::collections::HashSet;

async fn race(server: &Server, n: usize, profile_type: &str) -> (Vec<String>, Vec<String>) {
    let op = server.operator();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let op = op.clone();
        let profile_type = profile_type.to_owned();
        tasks.spawn(async move {
            let eid = format!("8904903200000000000000000{i:07}");
            op.call(
                "downloadOrder",
                json!({"profileType": profile_type, "eid": eid}),
            )
            .await
        });
    }
    let (mut won, mut lost) = (vec![], vec![]);
    while let Some(r) = tasks.join_next().await {
        let (http, v) = r.expect("task");
        assert_eq!(http, 200, "{v}");
        if status(&v) == "Executed-Success" {
            won.push(v["iccid"].as_str().expect("iccid").to_owned());
        } else {
            lost.push(code(&v));
        }
    }
    (won, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_download_orders_on_a_small_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    for (series, m, n) in [(11u32, 25usize, 60usize), (12, 30, 10)] {
        let profile_type = format!("pool-{series}");
        let pool = iccids(series, m);
        op.add_profiles(&profile_type, &pool).await;
        let (won, lost) = race(&server, n, &profile_type).await;
        assert_eq!(won.len(), n.min(m), "exactly min(N, M) orders succeed");
        let distinct: HashSet<_> = won.iter().collect();
        assert_eq!(distinct.len(), won.len(), "no profile handed out twice");
        assert!(won.iter().all(|i| pool.contains(i)));
        assert_eq!(lost.len(), n.saturating_sub(m));
        assert!(lost.iter().all(|c| c == "8.2.5/3.7"), "{lost:?}");
        for iccid in &won {
            assert_eq!(op.state(iccid).await, "Linked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_profile_is_never_linked_to_two_eids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), None);
    let op = server.operator();
    let target = iccids(13, 1).remove(0);
    op.add_profiles("single", std::slice::from_ref(&target))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let op = op.clone();
        let target = target.clone();
        tasks.spawn(async move {
            let eid = format!("8904903211111111111111111{i:07}");
            let (_, v) = op
                .call("downloadOrder", json!({"iccid": target, "eid": eid}))
                .await;
            (eid, v)
        });
    }
    let mut winners = vec![];
    while let Some(r) = tasks.join_next().await {
        let (eid, v) = r.expect("task");
        if status(&v) == "Executed-Success" {
            winners.push(eid);
        } else {
            assert_eq!(code(&v), "8.2.1/3.3", "{v}");
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let shown = op.show(&target).await;
    assert_eq!(shown["profile"]["eid"], winners[0].as_str());
    // Confirming with another EID is refused; the link stays.
    let (_, v) = op.call("confirmOrder", json!({"iccid": target, "eid": "89049032999999999999999999999999", "releaseFlag": true})).await;
    assert_eq!(code(&v), "8.1.1/3.10");
    assert_eq!(
        op.show(&target).await["profile"]["eid"],
        winners[0].as_str()
    );
}
