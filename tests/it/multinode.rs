//! Several real `smdpplus serve` processes on one PostgreSQL schema
//! (`[store] engine = "postgres"`), as the nodes of a cluster behind a TCP
//! load balancer: each ES2+ or ES9+ call may reach any node, a node may die
//! at any time, and the store is the only state they share besides their
//! files.
//!
//! [`Cluster`] starts the nodes one after the other, each with a data
//! directory of its own and every listener on an ephemeral port. They share
//! what the nodes of a deployment share: the database URL (node A is given
//! it in `SMDPPLUS_STORE_URL`, the others in `[store] url_file`, never on
//! the command line), the master key file that wraps every profile key
//! (`master_key_file`), the Mobile Plans capability key
//! (`[mobile_plans] capability_key_file`), and the dev PKI that node A
//! creates in its data directory on first start (TLS certificate, operator
//! CA and operator client certificate), copied into every later node's data
//! directory before it starts. Demo profiles are seeded once: every node has
//! the same `seed_demo_profiles`, and only node A finds the store empty.
//!
//! Each test on PostgreSQL skips with the fixture's message when
//! `SMDPPLUS_TEST_POSTGRES` is unset; the harness's own test runs on sled.

use crate::common::postgres::TestSchema;
use crate::common::{code, iccids, status, Operator, Receiver, Server, EID};
use crate::durability::{check_acked, report, Load};
use crate::es9plus_download::{
    authenticate_client, authenticate_server, get_bpp, initiate, nist, prepare, random_package,
};
use hyper::Method;
use serde_json::{json, Value};
use smdpplus::config::{FileConfig, STORE_URL_ENV};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The nodes of a test cluster, the files they share and their schema.
pub struct Cluster {
    /// The nodes in start order (A, B, C, ...); a killed node keeps its
    /// place, and [`Cluster::restart`] puts a new process there.
    pub nodes: Vec<Server>,
    /// The PostgreSQL schema, or `None` for sled nodes (each on its own
    /// store: only the harness's file sharing can be checked with them).
    schema: Option<TestSchema>,
    /// Top-level keys and tables added to every node's configuration.
    extra: String,
    /// `seed_demo_profiles` of every node.
    seed: usize,
    // Last: the directory outlives the nodes (dropped first, killed).
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes on a fresh schema, each with
    /// `seed_demo_profiles = seed` and `extra` in its configuration (top
    /// level keys first, then tables; not `[store]` nor `[mobile_plans]`).
    /// `None` (the test skips, with the fixture's message) without a test
    /// database.
    pub async fn start(test: &str, n: usize, seed: usize, extra: &str) -> Option<Cluster> {
        let schema = TestSchema::create(test).await?;
        Some(Cluster::launch(Some(schema), n, seed, extra))
    }

    /// Starts `n` nodes, each on a sled store of its own: the file sharing
    /// without PostgreSQL.
    fn start_sled(n: usize, extra: &str) -> Cluster {
        Cluster::launch(None, n, 0, extra)
    }

    /// Starts the nodes one after the other; a node that does not start
    /// is a panic with its log.
    fn launch(schema: Option<TestSchema>, n: usize, seed: usize, extra: &str) -> Cluster {
        assert!(n >= 1, "a cluster has a node");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("shared")).expect("shared dir");
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            schema,
            extra: extra.to_owned(),
            seed,
            dir,
        };
        if let Some(s) = &cluster.schema {
            write_secret(&cluster.url_file(), &s.url);
        }
        for i in 0..n {
            let server = cluster
                .start_node(i)
                .unwrap_or_else(|log| panic!("node {} did not report ready; log:\n{log}", name(i)));
            cluster.nodes.push(server);
        }
        cluster
    }

    /// The folder of the files every node shares.
    fn shared(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    /// The file holding the database URL (mode 0600).
    fn url_file(&self) -> PathBuf {
        self.shared().join("store-url")
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{}", name(i)))
    }

    /// The configuration of node `i`.
    fn config(&self, i: usize) -> String {
        let shared = self.shared();
        let store = match &self.schema {
            None => String::new(),
            // Node A reads the URL from the environment, the others from
            // the file: both ways a deployment keeps it off the command line.
            Some(_) if i == 0 => "[store]\nengine = \"postgres\"\npool_size = 8\n".to_owned(),
            Some(_) => format!(
                "[store]\nengine = \"postgres\"\npool_size = 8\nurl_file = \"{}\"\n",
                self.url_file().display()
            ),
        };
        format!(
            "seed_demo_profiles = {seed}\nmaster_key_file = \"{master}\"\n{extra}\n\n{store}\n\
             [mobile_plans]\ncapability_key_file = \"{capability}\"\n",
            seed = self.seed,
            master = shared.join("master.key").display(),
            extra = self.extra,
            capability = shared.join("mobileplans.key").display(),
        )
    }

    /// Starts node `i`: a later node first gets a copy of node A's dev PKI.
    /// Its configuration is checked in this process first, so that a bad
    /// one fails with the reason rather than with a node that never starts.
    fn start_node(&self, i: usize) -> Result<Server, String> {
        let data = self.data_dir(i);
        std::fs::create_dir_all(&data).expect("data dir");
        if i > 0 {
            copy_files(&self.data_dir(0).join("pki"), &data.join("pki"));
        }
        let config = self.config(i);
        let checked = data.join("checked-config.toml");
        std::fs::write(&checked, &config).expect("write config");
        let file = FileConfig::load(&checked).unwrap_or_else(|e| panic!("node config: {e}"));
        let url = self.schema.as_ref().map(|s| s.url.clone());
        let env_url = if i == 0 { url.clone() } else { None };
        file.store
            .unwrap_or_default()
            .resolve(env_url)
            .unwrap_or_else(|e| panic!("node {} [store]: {e}", name(i)));
        let env: Vec<(&str, &str)> = match (&url, i) {
            (Some(u), 0) => vec![(STORE_URL_ENV, u.as_str())],
            _ => vec![],
        };
        Server::try_start_with_env(&data, Some(&config), &env)
    }

    /// Starts node `i` again (after [`Server::kill9`]) on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill9();
        let server = self
            .start_node(i)
            .unwrap_or_else(|log| panic!("node {} did not start again; log:\n{log}", name(i)));
        self.nodes[i] = server;
    }

    /// An ES2+ client of node `i`.
    pub fn operator(&self, i: usize) -> Operator {
        self.nodes[i].operator()
    }

    /// Stops every node and removes the schema.
    pub async fn finish(mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        if let Some(s) = self.schema.take() {
            s.drop().await;
        }
    }
}

/// Node `i`'s name: A, B, C, ...
fn name(i: usize) -> char {
    char::from(b'A' + u8::try_from(i % 26).expect("small"))
}

/// Writes `text` to a new file only its owner may read.
fn write_secret(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create secret file");
    f.write_all(text.as_bytes()).expect("write secret file");
}

/// Copies the files of `from` (not its folders) into `to`, modes included.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// The profiles of `profile_type` as the admin API lists them: ICCID to state.
async fn profiles(op: &Operator, profile_type: &str) -> HashMap<String, String> {
    let (s, v) = op
        .admin(
            Method::GET,
            &format!("profiles?profileType={profile_type}&limit=100000"),
            None,
        )
        .await;
    assert_eq!(s, 200, "list profiles: {v}");
    v["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .map(|p| {
            (
                p["iccid"].as_str().expect("iccid").to_owned(),
                p["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

/// The ICCIDs among `listed` in `state`.
fn in_state(listed: &HashMap<String, String>, state: &str) -> BTreeSet<String> {
    listed
        .iter()
        .filter(|(_, s)| *s == state)
        .map(|(i, _)| i.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// The harness itself, on sled nodes (no PostgreSQL needed).

/// A later node uses node A's certificates and the shared key files, and
/// creates none of its own.
#[tokio::test]
async fn harness_nodes_share_the_master_key_and_the_pki() {
    let cluster = Cluster::start_sled(2, "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let shared = cluster.shared();
    assert!(shared.join("master.key").is_file(), "no shared master key");
    assert!(
        shared.join("mobileplans.key").is_file(),
        "no shared capability key"
    );
    for i in 0..2 {
        for own in ["master.key", "mobileplans.key"] {
            assert!(
                !cluster.data_dir(i).join(own).exists(),
                "node {} created its own {own}",
                name(i)
            );
        }
    }
    for f in [
        "dptls.crt",
        "dptls.key",
        "operator-ca.crt",
        "operator-client.crt",
    ] {
        let read = |d: &Path| std::fs::read(d.join("pki").join(f)).expect("pki file");
        assert_eq!(
            read(&a.dir),
            read(&b.dir),
            "node B does not use node A's {f}"
        );
    }
    // Node A's operator credentials open node B's ES2+ listener.
    let pki = a.pki();
    let op = Operator::new(
        b.es2,
        &pki.operator_client_cert,
        &pki.operator_client_key,
        &pki.ci_cert,
    );
    let (s, v) = op.admin(Method::GET, "profiles?limit=1", None).await;
    assert_eq!(s, 200, "{v}");
    cluster.finish().await;
}

// ---------------------------------------------------------------------------
// The cluster on PostgreSQL.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_download_orders_across_nodes_hand_out_each_iccid_once() {
    const POOL: usize = 48;
    const CALLS: usize = 64;
    let Some(cluster) = Cluster::start(
        "concurrent_download_orders_across_nodes_hand_out_each_iccid_once",
        3,
        POOL,
        "",
    )
    .await
    else {
        return;
    };
    let ops: Vec<Operator> = (0..3).map(|i| cluster.operator(i)).collect();
    // Seeded once: node A found the store empty, B and C did not.
    for op in &ops {
        let listed = profiles(op, "demo").await;
        assert_eq!(listed.len(), POOL, "demo profiles: {listed:?}");
        assert_eq!(in_state(&listed, "Available").len(), POOL, "{listed:?}");
    }

    // All the calls at once, round robin over the nodes.
    let start = Arc::new(tokio::sync::Barrier::new(CALLS));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let op = ops[i % ops.len()].clone();
        let start = start.clone();
        calls.spawn(async move {
            start.wait().await;
            let (http, v) = op
                .call("downloadOrder", json!({"profileType": "demo"}))
                .await;
            (i, http, v)
        });
    }
    let mut handed: HashMap<String, usize> = HashMap::new();
    let mut exhausted = 0;
    while let Some(r) = calls.join_next().await {
        let (i, http, v) = r.expect("a downloadOrder call panicked");
        assert_eq!(http, 200, "call {i}: {v}");
        if status(&v) == "Executed-Success" {
            let iccid = v["iccid"].as_str().expect("iccid").to_owned();
            if let Some(j) = handed.insert(iccid.clone(), i) {
                panic!("{iccid} handed out twice: calls {j} and {i}");
            }
        } else {
            assert_eq!(code(&v), "8.2.5/3.7", "call {i}: {v}");
            exhausted += 1;
        }
    }
    assert_eq!(handed.len(), POOL.min(CALLS), "orders that succeeded");
    assert_eq!(exhausted, CALLS.saturating_sub(POOL), "exhausted answers");

    // Every node reads the same store: exactly the handed-out ICCIDs are
    // allocated, the rest of the pool is still available.
    let handed: BTreeSet<String> = handed.into_keys().collect();
    for (i, op) in ops.iter().enumerate() {
        let listed = profiles(op, "demo").await;
        assert_eq!(listed.len(), POOL);
        assert_eq!(in_state(&listed, "Allocated"), handed, "node {}", name(i));
        assert_eq!(
            in_state(&listed, "Available").len(),
            POOL - handed.len(),
            "node {}",
            name(i)
        );
    }
    cluster.finish().await;
}

/// One download whose steps go to alternate nodes: the order and the RSP
/// session live in the store, and the profile key is wrapped with the
/// shared master key (the profile is added through node B and bound on A).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_steps_alternate_between_nodes() {
    let Some(cluster) = Cluster::start("download_steps_alternate_between_nodes", 2, 0, "").await
    else {
        return;
    };
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (op_a, op_b) = (a.operator(), b.operator());
    let (lpa_a, lpa_b) = (a.lpa(), b.lpa());
    let iccid = iccids(41, 1).remove(0);
    let package = random_package(3000);
    op_b.add_profile_with_package("gold", &iccid, &package)
        .await;

    // ES2+ downloadOrder and confirmOrder on A.
    op_a.order_released(&iccid, EID).await;
    let matching_id = op_b.show(&iccid).await["profile"]["matchingId"]
        .as_str()
        .expect("matchingId")
        .to_owned();
    assert_eq!(op_b.state(&iccid).await, "Released");

    let mut euicc = nist();
    // initiateAuthentication on A.
    let init = initiate(&lpa_a, &mut euicc).await;
    let asr = authenticate_server(&mut euicc, &lpa_a, &init, Some(&matching_id));
    // authenticateClient on B.
    let auth = authenticate_client(&lpa_b, &init.transaction_id, asr)
        .await
        .expect("authenticateClient on node B");
    let pdr = prepare(&mut euicc, &auth, None, false);
    // getBoundProfilePackage on A.
    let bpp = get_bpp(&lpa_a, &auth.transaction_id, pdr)
        .await
        .expect("getBoundProfilePackage on node A");
    assert_eq!(op_b.state(&iccid).await, "Downloaded");
    let (pir, installed) = euicc.load_bound_profile_package(&bpp).expect("load BPP");
    let installed = installed.expect("the eUICC installed the profile");
    assert!(
        installed.upp == package,
        "the decrypted profile differs from the stored package"
    );
    // handleNotification (the installation result) on B.
    assert_eq!(
        lpa_b
            .notify(pir)
            .await
            .expect("handleNotification on node B"),
        204
    );
    for op in [&op_a, &op_b] {
        assert_eq!(op.state(&iccid).await, "Installed");
    }
    let events: Vec<Value> = op_a.show(&iccid).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["event"].clone())
        .collect();
    assert!(
        events.ends_with(&[json!("bppDelivered"), json!("installSucceeded")]),
        "{events:?}"
    );
    cluster.finish().await;
}

/// The load of `durability` on two nodes; node A is killed mid-load and
/// node B keeps answering. Whatever either node acknowledged is in the
/// store, seen through B and through A started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_node_during_load_loses_nothing_acknowledged() {
    let Some(mut cluster) = Cluster::start(
        "kill_9_of_one_node_during_load_loses_nothing_acknowledged",
        2,
        0,
        "",
    )
    .await
    else {
        return;
    };
    let ops = [cluster.operator(0), cluster.operator(1)];
    ops[0].add_profiles("load", &iccids(31, 600)).await;

    // Eight clients, four on each node.
    let load = Load::start(&ops, 8, "load");
    load.wait_for(150, Duration::from_secs(30)).await;
    cluster.nodes[0].kill9();
    let at_kill = load.count();
    // Node B's clients go on.
    load.wait_for(at_kill + 100, Duration::from_secs(30)).await;
    let acked = load.finish().await;
    report(&acked, "by nodes A and B, A killed mid-load");
    assert!(
        acked.len() >= at_kill + 100,
        "node B stopped answering when A was killed: {at_kill} orders acknowledged \
         at the kill, {} in all",
        acked.len()
    );
    check_acked(&ops[1], &acked).await;
    cluster.restart(0);
    check_acked(&cluster.operator(0), &acked).await;
    cluster.finish().await;
}

/// `[outbox] lease_secs` of the nodes: a killed node's items are free
/// again this long after it took them.
const LEASE_SECS: u64 = 4;

/// How long the notifications of a killed node may take to arrive through
/// another one: the dead node's leases on its items expire
/// ([`LEASE_SECS`]), and a node with nothing of its own to deliver looks at
/// the shared outbox again within one lease (another node's transitions do
/// not wake it); then a few retries.
const DEAD_NODE_DELIVERY: Duration = Duration::from_secs(2 * LEASE_SECS + 20);

/// Node A enqueues notifications while the operator endpoint hangs (it
/// accepts connections and never answers, so A's deliveries are in flight
/// when it dies); A is killed, the endpoint comes up on the same address,
/// and node B delivers every item at least once, always under the item's
/// own functionCallIdentifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_of_a_killed_node_is_delivered_by_another() {
    let receiver_dir = tempfile::tempdir().expect("tempdir");
    // The hanging endpoint.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = hole.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let hole = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = hole.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    // The nodes trust the receiver's certificate from the start: they
    // connect, and their deliveries hang until the request timeout.
    let ca = Receiver::prepare_identity(receiver_dir.path());
    let extra = format!(
        "[outbox]\ninitial_backoff_ms = 100\nmax_backoff_ms = 500\nrequest_timeout_ms = 3000\n\
         lease_secs = {LEASE_SECS}\n\
         [[operators]]\nid = \"dev-operator\"\nnotification_url = \"https://localhost:{}\"\n\
         notification_ca = \"{}\"\n",
        addr.port(),
        ca.display()
    );
    let Some(mut cluster) = Cluster::start(
        "outbox_of_a_killed_node_is_delivered_by_another",
        2,
        0,
        &extra,
    )
    .await
    else {
        return;
    };
    let (op_a, op_b) = (cluster.operator(0), cluster.operator(1));
    let ids = iccids(51, 12);
    op_a.add_profiles("gold", &ids).await;
    for (i, iccid) in ids.iter().enumerate() {
        let eid = format!("890490320000000000000051{i:08}");
        let (_, v) = op_a
            .call("downloadOrder", json!({"iccid": iccid, "eid": eid}))
            .await;
        assert_eq!(status(&v), "Executed-Success", "{v}");
        let (_, v) = op_a
            .call(
                "cancelOrder",
                json!({"iccid": iccid, "eid": eid, "finalProfileStatusIndicator": "Unavailable"}),
            )
            .await;
        assert_eq!(status(&v), "Executed-Success", "{v}");
    }
    // Every item, as the store holds it: its id names the call.
    let (s, v) = op_b.admin(Method::GET, "outbox", None).await;
    assert_eq!(s, 200, "{v}");
    let expected: HashMap<String, String> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| {
            (
                it["iccid"].as_str().expect("iccid").to_owned(),
                match &it["id"] {
                    Value::String(id) => format!("smdpplus-{id}"),
                    id => format!("smdpplus-{id}"),
                },
            )
        })
        .collect();
    assert_eq!(
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "one item per cancelled order: {v}"
    );
    // Kill A while deliveries hang in the endpoint.
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no delivery reached the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.nodes[0].kill9();
    let killed = Instant::now();
    hole.abort();
    let _ = hole.await;
    let mut rx = Receiver::start_on(receiver_dir.path(), addr, 0).await;
    let deadline = Instant::now() + DEAD_NODE_DELIVERY;
    let mut delivered: HashMap<String, usize> = HashMap::new();
    while delivered.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = rx.next(left).await.unwrap_or_else(|| {
            let missing: Vec<&String> = expected
                .keys()
                .filter(|i| !delivered.contains_key(*i))
                .collect();
            panic!("not delivered within {DEAD_NODE_DELIVERY:?}: {missing:?}")
        });
        let iccid = n["iccid"].as_str().expect("iccid").to_owned();
        assert_eq!(
            n["header"]["functionCallIdentifier"].as_str(),
            expected.get(&iccid).map(String::as_str),
            "{iccid}: the identifier of its item"
        );
        *delivered.entry(iccid).or_default() += 1;
    }
    let all_delivered = killed.elapsed();
    // The outbox drains; a redelivery still carries the item's identifier.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = op_b.admin(Method::GET, "outbox", None).await;
        if v["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while let Some(n) = rx.next(Duration::from_millis(500)).await {
        let iccid = n["iccid"].as_str().expect("iccid");
        assert_eq!(
            n["header"]["functionCallIdentifier"].as_str(),
            expected.get(iccid).map(String::as_str),
            "{iccid}: redelivered under another identifier"
        );
    }
    eprintln!(
        "delivered {} items within {all_delivered:?} of the kill, {} of them more than once; \
         the hanging endpoint took {} connections",
        delivered.len(),
        delivered.values().filter(|n| **n > 1).count(),
        accepted.load(Ordering::SeqCst)
    );
    cluster.finish().await;
}
