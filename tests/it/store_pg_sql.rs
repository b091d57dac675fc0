//! The PostgreSQL store's queries (`store::pg::sql`) against a real
//! PostgreSQL (`SMDPPLUS_TEST_POSTGRES`; skipped with a message when
//! unset): every record type written then read back equal, field by
//! field; pool allocation of concurrent transactions; the outbox leases;
//! the session cap; the due schedules; the import's duplicate check; a
//! unique violation as a conflict.

use crate::common::postgres::TestSchema;
use smdpplus::ids::Iccid;
use smdpplus::store::balance::{BalanceRecord, BalanceType, Bucket};
use smdpplus::store::bound::{KeptPackage, KEPT_VERSION};
use smdpplus::store::lifecycle::{Event, State};
use smdpplus::store::mobileplans::{
    Choice, MobilePlansOrder, OrderKind, OrderStatus, PurchaseMetadata, Registration,
};
use smdpplus::store::pg::{sql, Conflict, PgError, Postgres};
use smdpplus::store::session::{Admission, SessionCounts};
use smdpplus::store::{
    HistoryEntry, IdemRecord, ListFilter, NewProfile, OutboxItem, PointStatus, ProfileRecord,
    RetryKind, RECORD_VERSION,
};
use std::time::Duration;

/// A migrated schema of its own and a pool on it, or `None` (skip).
async fn setup(test: &str, pool: usize) -> Option<(TestSchema, Postgres)> {
    let schema = TestSchema::create(test).await?;
    let pg = schema.connect(pool).await;
    pg.migrate().await.expect("migrate");
    Some((schema, pg))
}

/// The `n`th test ICCID (19 digits).
fn iccid(n: u64) -> String {
    format!("8944000000{n:09}")
}

fn new_profile(n: u64, operator: &str, profile_type: &str) -> NewProfile {
    NewProfile {
        iccid: Iccid::parse(&iccid(n)).expect("iccid"),
        profile_type: profile_type.into(),
        operator: operator.into(),
        package: format!("package {n}").into_bytes(),
    }
}

/// Imports profiles `ns` of (operator, type) at time 100, by "admin".
async fn import(pg: &Postgres, ns: impl IntoIterator<Item = u64>, operator: &str, ty: &str) {
    let items: Vec<NewProfile> = ns
        .into_iter()
        .map(|n| new_profile(n, operator, ty))
        .collect();
    let client = pg.client().await.expect("client");
    let added = sql::insert_profiles(&client, &items, "admin", 100)
        .await
        .expect("insert")
        .expect("new ICCIDs");
    assert_eq!(added, items.len());
}

/// The record the sled store writes for an imported profile.
fn imported(n: u64, operator: &str, ty: &str) -> ProfileRecord {
    ProfileRecord {
        v: RECORD_VERSION,
        iccid: iccid(n),
        profile_type: ty.into(),
        operator: operator.into(),
        state: State::Available,
        eid: None,
        matching_id: None,
        cc_hashes: vec![],
        smds_address: None,
        download_attempts: 0,
        cc_attempts: 0,
        expires_at: None,
        created_at: 100,
        updated_at: 100,
        package_ref: format!("b/{}", iccid(n)),
        history_len: 1,
        error_reason: None,
        imported_by: Some("admin".into()),
    }
}

/// Writes `rec` over its row in a transaction of its own.
async fn put(pg: &Postgres, rec: &ProfileRecord) {
    let mut client = pg.client().await.expect("client");
    let tx = client.transaction().await.expect("tx");
    sql::put_profile(&tx, rec).await.expect("put");
    tx.commit().await.expect("commit");
}

fn order(id: u64, tx: &str, iccid: &str, eid: Option<&str>) -> MobilePlansOrder {
    MobilePlansOrder {
        v: RECORD_VERSION,
        id,
        transaction_id: tx.into(),
        operator: "op".into(),
        kind: OrderKind::Profile,
        eid: eid.map(str::to_owned),
        iccid: iccid.into(),
        matching_id: None,
        registration: Registration::Now,
        release_at: None,
        released_at: None,
        release_error: None,
        status: OrderStatus::Open,
        status_at: 5,
        metadata: PurchaseMetadata {
            user_account: Choice::New,
            purchase_instrument: Choice::Existing,
            line: Choice::Bailed,
            plan_name: "Plan".into(),
        },
        bucket: None,
        created_at: 5,
        updated_at: 6,
        hold_until: None,
        confirmed_at: None,
    }
}

fn outbox_item(id: u64, operator: &str, next_attempt_ms: i64) -> OutboxItem {
    OutboxItem {
        v: RECORD_VERSION,
        id,
        operator: operator.into(),
        eid: None,
        iccid: iccid(1),
        profile_type: "demo".into(),
        timestamp: 1_000 + id as i64,
        point: 3,
        status: PointStatus::Success,
        result_data: None,
        attempts: 0,
        next_attempt_ms,
        last_error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_history_round_trip() {
    let Some((schema, pg)) = setup("pgsql_profiles", 2).await else {
        return;
    };
    import(&pg, 1..=4, "op", "demo").await;
    import(&pg, [9], "other", "gold").await;
    let client = pg.client().await.expect("client");
    let c = &client;
    assert_eq!(
        sql::get_profile(c, &iccid(1)).await.expect("get"),
        Some(imported(1, "op", "demo"))
    );
    assert_eq!(sql::get_profile(c, &iccid(5)).await.expect("get"), None);
    assert_eq!(
        sql::package(c, &iccid(2)).await.expect("package"),
        Some(b"package 2".to_vec())
    );

    // Every field set, then every optional one cleared again.
    let full = ProfileRecord {
        state: State::Released,
        eid: Some("89049032123451234512345678901235".into()),
        matching_id: Some("ABCD-1234".into()),
        cc_hashes: vec!["aa".into(), "bb".into()],
        smds_address: Some("smds.example".into()),
        download_attempts: 3,
        cc_attempts: 2,
        expires_at: Some(5_000),
        updated_at: 200,
        history_len: 4,
        error_reason: Some("why".into()),
        imported_by: None,
        ..imported(1, "op", "demo")
    };
    put(&pg, &full).await;
    {
        let mut client = pg.client().await.expect("client");
        let tx = client.transaction().await.expect("tx");
        assert_eq!(
            sql::profile_for_update(&tx, &iccid(1)).await.expect("read"),
            Some(full.clone())
        );
        assert_eq!(
            sql::matching_owner(&tx, "ABCD-1234").await.expect("owner"),
            Some(iccid(1))
        );
        assert_eq!(sql::matching_owner(&tx, "nope").await.expect("owner"), None);
        tx.commit().await.expect("commit");
    }
    assert_eq!(
        sql::get_profile(c, &iccid(1)).await.expect("get"),
        Some(full.clone())
    );
    assert_eq!(
        sql::package(c, &iccid(1)).await.expect("package"),
        Some(b"package 1".to_vec()),
        "the package is not touched"
    );
    assert_eq!(
        sql::by_matching_id(c, "ABCD-1234").await.expect("by id"),
        Some(iccid(1))
    );
    let bare = ProfileRecord {
        eid: None,
        matching_id: Some(String::new()),
        smds_address: None,
        expires_at: None,
        error_reason: None,
        state: State::Confirmed,
        ..full.clone()
    };
    put(&pg, &bare).await;
    assert_eq!(
        sql::get_profile(c, &iccid(1)).await.expect("get"),
        Some(bare.clone())
    );
    // The empty MatchingID is no index entry.
    assert_eq!(sql::by_matching_id(c, "").await.expect("by id"), None);
    assert_eq!(sql::matching_owner(c, "").await.expect("owner"), None);
    assert_eq!(
        sql::by_matching_id(c, "ABCD-1234").await.expect("by id"),
        None
    );

    // A missing row is an error, not a silent insert.
    assert!(sql::put_profile(c, &imported(7, "op", "demo"))
        .await
        .is_err());

    // History.
    let entries = [
        HistoryEntry {
            v: RECORD_VERSION,
            at: 10,
            event: Event::DownloadOrderLinked,
            from: Some(State::Available),
            to: State::Linked,
            caller: "op".into(),
            retry: None,
        },
        HistoryEntry {
            v: RECORD_VERSION,
            at: 11,
            event: Event::DownloadOrderAllocated,
            from: None,
            to: State::Allocated,
            caller: "smdpplus".into(),
            retry: Some(RetryKind::SameKey),
        },
        HistoryEntry {
            v: RECORD_VERSION,
            at: 12,
            event: Event::BppDelivered,
            from: Some(State::Downloaded),
            to: State::Downloaded,
            caller: "smdpplus".into(),
            retry: Some(RetryKind::Rebind),
        },
    ];
    for (seq, e) in entries.iter().enumerate().rev() {
        sql::insert_history(c, &iccid(1), seq as u64 + 1, e)
            .await
            .expect("history");
    }
    assert_eq!(sql::history(c, &iccid(1)).await.expect("history"), entries);
    assert_eq!(
        sql::history_entry(c, &iccid(1), 2).await.expect("entry"),
        Some(entries[1].clone())
    );
    assert_eq!(
        sql::history_entry(c, &iccid(1), 0).await.expect("entry"),
        None
    );
    assert!(sql::history(c, &iccid(2)).await.expect("none").is_empty());

    // Listings and indexes.
    let linked = ProfileRecord {
        state: State::Linked,
        eid: Some("E1".into()),
        expires_at: Some(300),
        ..imported(2, "op", "demo")
    };
    put(&pg, &linked).await;
    let installed = ProfileRecord {
        state: State::Installed,
        eid: Some("E1".into()),
        expires_at: Some(300),
        ..imported(3, "op", "demo")
    };
    put(&pg, &installed).await;
    assert_eq!(
        sql::pending_for_eid(c, "E1").await.expect("eid"),
        vec![iccid(2)],
        "an installed profile is no open order"
    );
    assert_eq!(
        sql::pool(c, "op", "demo").await.expect("pool"),
        vec![iccid(4)]
    );
    assert_eq!(
        sql::pool(c, "other", "gold").await.expect("pool"),
        vec![iccid(9)]
    );
    assert!(sql::type_known(c, "demo", "op").await.expect("type"));
    assert!(!sql::type_known(c, "demo", "other").await.expect("type"));
    let all = sql::list(c, &ListFilter::default()).await.expect("list");
    assert_eq!(
        all.iter().map(|r| r.iccid.clone()).collect::<Vec<_>>(),
        vec![iccid(1), iccid(2), iccid(3), iccid(4), iccid(9)]
    );
    let some = sql::list(
        c,
        &ListFilter {
            operator: Some("op".into()),
            state: Some(State::Linked),
            profile_type: Some("demo".into()),
            limit: None,
        },
    )
    .await
    .expect("list");
    assert_eq!(some, vec![linked.clone()]);
    let first = sql::list(
        c,
        &ListFilter {
            limit: Some(2),
            ..ListFilter::default()
        },
    )
    .await
    .expect("list");
    assert_eq!(first.len(), 2);
    assert_eq!(
        sql::first_taken_in(c, &iccid(5), &iccid(8))
            .await
            .expect("range"),
        None
    );
    assert_eq!(
        sql::first_taken_in(c, &iccid(3), &iccid(8))
            .await
            .expect("range"),
        Some(iccid(3))
    );
    let mut counts = sql::counts_by_state(c).await.expect("counts");
    assert_eq!(counts.len(), 9);
    counts.retain(|(_, n)| *n > 0);
    assert_eq!(
        counts,
        vec![
            (State::Available, 2),
            (State::Linked, 1),
            (State::Confirmed, 1),
            (State::Installed, 1)
        ]
    );
    assert_eq!(
        sql::available_by_pool(c).await.expect("pools"),
        vec![
            (("op".into(), "demo".into()), 1),
            (("other".into(), "gold".into()), 1)
        ]
    );
    assert!(sql::sim_known(c, &iccid(9)).await.expect("known"));
    assert!(!sql::sim_known(c, &iccid(8)).await.expect("known"));

    // Packages for the key rotation.
    assert_eq!(sql::package_count(c).await.expect("count"), 5);
    let page = sql::packages_after(c, None, 2).await.expect("page");
    assert_eq!(
        page,
        vec![
            (iccid(1), b"package 1".to_vec()),
            (iccid(2), b"package 2".to_vec())
        ]
    );
    let page = sql::packages_after(c, Some(&iccid(2)), 10)
        .await
        .expect("page");
    assert_eq!(page.len(), 3);
    assert!(sql::swap_package(c, &iccid(1), b"package 1", b"new 1")
        .await
        .expect("swap"));
    assert!(!sql::swap_package(c, &iccid(1), b"package 1", b"newer")
        .await
        .expect("swap"));
    assert_eq!(
        sql::package(c, &iccid(1)).await.expect("package"),
        Some(b"new 1".to_vec())
    );
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_records_round_trip() {
    let Some((schema, pg)) = setup("pgsql_records", 2).await else {
        return;
    };
    import(&pg, 1..=2, "op", "demo").await;
    let client = pg.client().await.expect("client");
    let c = &client;

    // Ids: one sequence, increasing.
    let a = sql::new_id(c).await.expect("id");
    let b = sql::new_id(c).await.expect("id");
    assert!(a >= 1 && b > a);

    // Outbox items.
    let ok = outbox_item(a, "op", 7_000);
    let failed = OutboxItem {
        eid: Some("E1".into()),
        status: PointStatus::Failed {
            subject: "8.1".into(),
            reason: "4.10".into(),
            message: "expired".into(),
        },
        result_data: Some(vec![0xbf, 0x37, 0]),
        attempts: 4,
        last_error: Some("timeout".into()),
        ..outbox_item(b, "op", 5_000)
    };
    sql::put_outbox(c, &ok).await.expect("put");
    sql::put_outbox(c, &failed).await.expect("put");
    assert_eq!(
        sql::outbox_all(c).await.expect("all"),
        vec![ok.clone(), failed.clone()]
    );
    assert_eq!(
        sql::outbox_item_for_update(c, b).await.expect("item"),
        Some(failed.clone())
    );
    let retried = OutboxItem {
        attempts: 5,
        next_attempt_ms: 9_000,
        ..failed.clone()
    };
    sql::put_outbox(c, &retried).await.expect("update");
    assert_eq!(
        sql::outbox_item_for_update(c, b).await.expect("item"),
        Some(retried)
    );
    assert_eq!(
        sql::outbox_operators(c).await.expect("ops"),
        vec!["op".to_owned()]
    );
    assert_eq!(
        sql::outbox_depths(c).await.expect("depths"),
        vec![("op".to_owned(), 2, Some(ok.timestamp))]
    );
    assert!(sql::remove_outbox(c, a).await.expect("remove"));
    assert!(!sql::remove_outbox(c, a).await.expect("remove again"));
    assert_eq!(sql::outbox_item_for_update(c, a).await.expect("gone"), None);

    // Kept packages.
    let kept = KeptPackage {
        v: KEPT_VERSION,
        eid: "E1".into(),
        dp_ci: vec![1, 2],
        euicc_otpk: vec![3, 4, 5],
        metadata: vec![6],
        bpp: vec![7; 40],
        expires_at: 500,
    };
    sql::put_kept(c, &iccid(1), Some(&kept))
        .await
        .expect("keep");
    assert_eq!(
        sql::kept_package(c, &iccid(1), 499).await.expect("kept"),
        Some(kept.clone())
    );
    assert!(sql::has_kept(c, &iccid(1)).await.expect("has"));
    let replaced = KeptPackage {
        bpp: vec![8; 10],
        expires_at: 900,
        ..kept.clone()
    };
    sql::put_kept(c, &iccid(1), Some(&replaced))
        .await
        .expect("replace");
    assert_eq!(
        sql::kept_package(c, &iccid(1), 499).await.expect("kept"),
        Some(replaced)
    );
    assert_eq!(
        sql::kept_package(c, &iccid(1), 900).await.expect("expired"),
        None
    );
    assert!(
        !sql::has_kept(c, &iccid(1)).await.expect("has"),
        "an expired package is removed when read"
    );
    sql::put_kept(c, &iccid(1), Some(&kept))
        .await
        .expect("keep");
    sql::put_kept(
        c,
        &iccid(2),
        Some(&KeptPackage {
            expires_at: 1_000,
            ..kept.clone()
        }),
    )
    .await
    .expect("keep");
    assert_eq!(sql::sweep_kept(c, 600).await.expect("sweep"), 1);
    assert!(sql::has_kept(c, &iccid(2)).await.expect("has"));
    sql::put_kept(c, &iccid(2), None).await.expect("erase");
    assert!(!sql::has_kept(c, &iccid(2)).await.expect("has"));

    // Idempotency records.
    let key = [7u8; 32];
    let rec = IdemRecord {
        at: 50,
        response: b"{\"header\":{}}".to_vec(),
    };
    sql::put_idempotency(c, &key, &rec).await.expect("idem");
    sql::put_idempotency(
        c,
        &[8u8; 32],
        &IdemRecord {
            at: 70,
            response: vec![],
        },
    )
    .await
    .expect("idem");
    assert_eq!(
        sql::idempotent_response(c, &key).await.expect("idem"),
        Some(rec.response.clone())
    );
    assert_eq!(sql::prune_idempotency(c, 50).await.expect("prune"), 0);
    assert_eq!(sql::prune_idempotency(c, 51).await.expect("prune"), 1);
    assert_eq!(sql::idempotent_response(c, &key).await.expect("gone"), None);
    assert_eq!(
        sql::idempotent_response(c, &[8u8; 32]).await.expect("kept"),
        Some(vec![])
    );

    // Balances.
    assert_eq!(sql::balance(c, &iccid(5)).await.expect("none"), None);
    let balance = BalanceRecord {
        v: RECORD_VERSION,
        iccid: iccid(5),
        operator: "op".into(),
        not_supported: true,
        buckets: vec![
            Bucket {
                id: "b-1".into(),
                balance_type: BalanceType::ModirectPayg,
                remaining_kb: 1_500,
                credited_kb: 2_000,
                expires_at: 9_000,
                locations: vec!["US".into(), "ca".into()],
                plan_name: "Plan".into(),
                credited_at: 10,
                order: Some(u64::MAX),
            },
            Bucket {
                id: "b-2".into(),
                balance_type: BalanceType::Modirect,
                remaining_kb: 0,
                credited_kb: 0,
                expires_at: -1,
                locations: vec![],
                plan_name: String::new(),
                credited_at: 0,
                order: None,
            },
        ],
        next_bucket: 3,
        created_at: 1,
        updated_at: 2,
    };
    sql::put_balance(c, &balance, true).await.expect("balance");
    assert_eq!(
        sql::balance_for_update(c, &iccid(5))
            .await
            .expect("balance"),
        Some(balance.clone())
    );
    let emptied = BalanceRecord {
        buckets: vec![],
        not_supported: false,
        updated_at: 3,
        ..balance.clone()
    };
    sql::put_balance(c, &emptied, false).await.expect("balance");
    assert_eq!(
        sql::balance(c, &iccid(5)).await.expect("balance"),
        Some(emptied)
    );
    assert!(sql::sim_known(c, &iccid(5)).await.expect("known"));
    assert!(sql::put_balance(c, &balance, true)
        .await
        .expect_err("twice")
        .is_conflict());
    let missing = BalanceRecord {
        iccid: iccid(6),
        ..balance.clone()
    };
    assert!(sql::put_balance(c, &missing, false).await.is_err());

    // GetBalance transaction ids.
    assert_eq!(sql::use_of(c, "t1").await.expect("use"), None);
    sql::put_use(c, "t1", None, 10).await.expect("use");
    sql::put_use(c, "t1", Some(10), 20)
        .await
        .expect("use again");
    assert_eq!(sql::use_of(c, "t1").await.expect("use"), Some(20));
    for (id, at) in [("t2", 30), ("t3", 40), ("t4", 50), ("t0", 5)] {
        sql::put_use(c, id, None, at).await.expect("use");
    }
    // Older than 10: t0; then beyond 2 left: the oldest, t1 and t2.
    assert_eq!(sql::prune_uses(c, 10, 2).await.expect("prune"), 3);
    for (id, left) in [
        ("t0", false),
        ("t1", false),
        ("t2", false),
        ("t3", true),
        ("t4", true),
    ] {
        assert_eq!(
            sql::use_of(c, id).await.expect("use").is_some(),
            left,
            "{id}"
        );
    }
    assert_eq!(sql::prune_uses(c, 0, 10).await.expect("prune"), 0);

    // Mobile Plans orders.
    let first = order(
        sql::new_id(c).await.expect("id"),
        "T1",
        &iccid(1),
        Some("E1"),
    );
    let second = MobilePlansOrder {
        kind: OrderKind::Balance,
        eid: None,
        matching_id: Some("M-1".into()),
        registration: Registration::Later {
            interval_minutes: 45,
        },
        release_at: Some(100),
        released_at: Some(101),
        release_error: Some("gone".into()),
        status: OrderStatus::Withdrawn,
        metadata: PurchaseMetadata {
            user_account: Choice::None,
            purchase_instrument: Choice::Bailed,
            line: Choice::New,
            plan_name: "Other".into(),
        },
        bucket: Some("b-1".into()),
        hold_until: Some(200),
        confirmed_at: Some(150),
        ..order(sql::new_id(c).await.expect("id"), "T2", &iccid(1), None)
    };
    let third = order(
        sql::new_id(c).await.expect("id"),
        "T3",
        &iccid(2),
        Some("E1"),
    );
    for o in [&first, &second, &third] {
        sql::put_order(c, o).await.expect("order");
    }
    assert_eq!(
        sql::order_for_update(c, second.id).await.expect("order"),
        Some(second.clone())
    );
    assert_eq!(
        sql::mp_order(c, first.id).await.expect("order"),
        Some(first.clone())
    );
    assert!(sql::order_exists(c, "T2").await.expect("exists"));
    assert!(!sql::order_exists(c, "T9").await.expect("exists"));
    assert_eq!(
        sql::mp_order_by_transaction(c, "T3").await.expect("by tx"),
        Some(third.clone())
    );
    assert_eq!(
        sql::mp_latest_for_iccid(c, &iccid(1))
            .await
            .expect("latest"),
        Some(second.clone())
    );
    assert_eq!(
        sql::mp_latest_for_eid(c, "E1").await.expect("latest"),
        Some(third.clone())
    );
    assert_eq!(
        sql::mp_orders_for_iccid(c, &iccid(1))
            .await
            .expect("orders"),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        sql::mp_orders_for_eid(c, "E1").await.expect("orders"),
        vec![first.clone(), third.clone()]
    );
    let changed = MobilePlansOrder {
        status: OrderStatus::Cancelled,
        status_at: 9,
        eid: None,
        ..first.clone()
    };
    sql::put_order(c, &changed).await.expect("update");
    assert_eq!(
        sql::mp_orders(c).await.expect("all"),
        vec![changed, second, third.clone()]
    );
    assert_eq!(
        sql::mp_orders_for_eid(c, "E1").await.expect("orders"),
        vec![third]
    );
    // A second order for a transactionId meets the unique index.
    let dup = order(sql::new_id(c).await.expect("id"), "T1", &iccid(1), None);
    let err = sql::put_order(c, &dup).await.expect_err("duplicate");
    assert!(err.is_conflict(), "{err}");
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pool_candidates_differ() {
    let Some((schema, pg)) = setup("pgsql_pool", 3).await else {
        return;
    };
    import(&pg, 1..=3, "op", "demo").await;
    import(&pg, [4], "op", "gold").await;
    let mut first = pg.client().await.expect("client");
    let tx1 = first.transaction().await.expect("tx");
    let a = sql::pool_candidate(&tx1, "op", "demo")
        .await
        .expect("candidate")
        .expect("one free");
    assert_eq!(a, iccid(1));
    // The first transaction holds its row; the second takes the next one
    // without waiting.
    let pg2 = pg.clone();
    let b = tokio::time::timeout(Duration::from_secs(10), async move {
        let mut second = pg2.client().await.expect("client");
        let tx2 = second.transaction().await.expect("tx");
        let b = sql::pool_candidate(&tx2, "op", "demo")
            .await
            .expect("candidate")
            .expect("one free");
        let mut rec = sql::profile_for_update(&tx2, &b)
            .await
            .expect("read")
            .expect("row");
        rec.state = State::Allocated;
        sql::put_profile(&tx2, &rec).await.expect("put");
        tx2.commit().await.expect("commit");
        b
    })
    .await
    .expect("the second allocator does not wait for the first");
    assert_ne!(a, b);
    assert_eq!(b, iccid(2));
    // Another pool is not affected; the first allocator's row is still free
    // for others once it gives up.
    {
        let client = pg.client().await.expect("client");
        assert_eq!(
            sql::pool_candidate(&client, "op", "gold")
                .await
                .expect("candidate"),
            Some(iccid(4))
        );
    }
    tx1.rollback().await.expect("rollback");
    let client = pg.client().await.expect("client");
    assert_eq!(
        sql::pool_candidate(&client, "op", "demo")
            .await
            .expect("candidate"),
        Some(iccid(1))
    );
    assert_eq!(
        sql::pool(&client, "op", "demo").await.expect("pool"),
        vec![iccid(1), iccid(3)]
    );
    drop(client);
    drop(first);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_leases_hold_items_for_one_node() {
    let Some((schema, pg)) = setup("pgsql_outbox", 3).await else {
        return;
    };
    let client = pg.client().await.expect("client");
    let c = &client;
    let now = 1_000_000;
    let mut ids = vec![];
    for due in [now - 30, now - 20, now - 10, now + 500] {
        let id = sql::new_id(c).await.expect("id");
        sql::put_outbox(c, &outbox_item(id, "op", due))
            .await
            .expect("put");
        ids.push(id);
    }
    let other = sql::new_id(c).await.expect("id");
    sql::put_outbox(c, &outbox_item(other, "other", now - 5))
        .await
        .expect("put");

    // Node A claims two in an open transaction; node B, at the same time,
    // skips them and gets the third.
    let mut a_client = pg.client().await.expect("client");
    let a_tx = a_client.transaction().await.expect("tx");
    let (a_items, a_next) = sql::outbox_claim_due(&a_tx, "op", now, 2, "A", 60_000)
        .await
        .expect("claim");
    assert_eq!(
        a_items.iter().map(|i| i.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(a_next, Some(now - 10), "the limit cut a due item");
    let pg2 = pg.clone();
    let (b_items, _) = tokio::time::timeout(Duration::from_secs(10), async move {
        let client = pg2.client().await.expect("client");
        sql::outbox_claim_due(&client, "op", now, 10, "B", 60_000)
            .await
            .expect("claim")
    })
    .await
    .expect("B does not wait for A");
    assert_eq!(
        b_items.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![ids[2]],
        "B gets none of A's items"
    );
    assert!(sql::remove_outbox(c, ids[2]).await.expect("B delivered it"));
    a_tx.commit().await.expect("commit");

    // Committed leases hold the items: B gets nothing until they end.
    let (b_items, b_next) = sql::outbox_claim_due(c, "op", now + 1, 10, "B", 60_000)
        .await
        .expect("claim");
    assert!(b_items.is_empty());
    assert_eq!(b_next, Some(now + 500), "the unleased item is due first");
    let (b_items, b_next) = sql::outbox_claim_due(c, "op", now + 501, 10, "B", 60_000)
        .await
        .expect("claim");
    assert_eq!(
        b_items.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![ids[3]]
    );
    assert_eq!(b_next, Some(now + 60_000), "A's leases end first");
    assert!(sql::remove_outbox(c, ids[3]).await.expect("B delivered it"));
    // A's node died: once its leases end, B claims its items.
    let (b_items, _) = sql::outbox_claim_due(c, "op", now + 60_000, 10, "B", 60_000)
        .await
        .expect("claim");
    assert_eq!(
        b_items.iter().map(|i| i.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(b_items[0], outbox_item(ids[0], "op", now - 30));
    // A failed attempt frees the item for its next attempt; a delivered
    // one is gone.
    let retry = OutboxItem {
        attempts: 1,
        next_attempt_ms: now + 61_000,
        last_error: Some("503".into()),
        ..b_items[0].clone()
    };
    sql::put_outbox(c, &retry).await.expect("failed attempt");
    assert!(sql::remove_outbox(c, ids[1]).await.expect("delivered"));
    let (a_items, _) = sql::outbox_claim_due(c, "op", now + 61_000, 10, "A", 60_000)
        .await
        .expect("claim");
    assert_eq!(a_items, vec![retry]);
    // Another operator's item was never touched.
    let (others, next) = sql::outbox_claim_due(c, "other", now, 10, "A", 1_000)
        .await
        .expect("claim");
    assert_eq!(others.len(), 1);
    assert_eq!(next, None);
    drop(a_client);
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_evict_the_oldest_pending_never_an_authenticated_one() {
    let Some((schema, pg)) = setup("pgsql_sessions", 2).await else {
        return;
    };
    let client = pg.client().await.expect("client");
    let c = &client;
    let created = |evicted| Admission::Created { evicted };
    let max = 3;
    assert_eq!(
        sql::create_session(c, b"s1", 100, b"one", max, 10)
            .await
            .expect("s1"),
        created(0)
    );
    assert_eq!(
        sql::create_session(c, b"s2", 101, b"two", max, 11)
            .await
            .expect("s2"),
        created(0)
    );
    assert!(sql::update_session(c, b"s2", 500, b"two'")
        .await
        .expect("auth"));
    assert_eq!(
        sql::create_session(c, b"s3", 102, b"three", max, 12)
            .await
            .expect("s3"),
        created(0)
    );
    assert_eq!(
        sql::session_counts(c).await.expect("counts"),
        SessionCounts {
            pending: 2,
            authenticated: 1
        }
    );
    // Full: the oldest pending session (s1) makes room, not s2, which is
    // older but authenticated.
    assert_eq!(
        sql::create_session(c, b"s4", 103, b"four", max, 13)
            .await
            .expect("s4"),
        created(1)
    );
    assert!(!sql::session_exists(c, b"s1").await.expect("s1"));
    assert!(sql::session_exists(c, b"s2").await.expect("s2"));
    assert_eq!(
        sql::create_session(c, b"s5", 104, b"five", max, 14)
            .await
            .expect("s5"),
        created(1)
    );
    assert!(!sql::session_exists(c, b"s3").await.expect("s3"));
    for s in [&b"s4"[..], b"s5"] {
        assert!(sql::update_session(c, s, 600, b"auth").await.expect("auth"));
    }
    // Every live session authenticated: nothing is stored.
    assert_eq!(
        sql::create_session(c, b"s6", 105, b"six", max, 15)
            .await
            .expect("s6"),
        Admission::Full
    );
    assert!(!sql::session_exists(c, b"s6").await.expect("s6"));
    assert_eq!(
        sql::session_counts(c).await.expect("counts"),
        SessionCounts {
            pending: 0,
            authenticated: 3
        }
    );
    // No cap: always stored.
    assert_eq!(
        sql::create_session(c, b"s7", 106, b"seven", 0, 16)
            .await
            .expect("s7"),
        created(0)
    );
    // A cap lowered below the count: several evictions at once, pending
    // ones only.
    for (i, t) in [(8u8, 107), (9, 108)] {
        sql::create_session(c, &[b's', b'0' + i], t, b"x", 0, 17)
            .await
            .expect("more");
    }
    assert_eq!(
        sql::create_session(c, b"sa", 110, b"ten", 2, 18)
            .await
            .expect("sa"),
        created(3),
        "s7, s8 and s9 go; the three authenticated stay"
    );

    // Reads, updates and ends.
    assert_eq!(
        sql::get_session(c, b"s2", 499).await.expect("get"),
        Some(b"two'".to_vec())
    );
    assert_eq!(
        sql::get_session(c, b"s2", 500).await.expect("expired"),
        None
    );
    assert!(!sql::update_session(c, b"s1", 900, b"late")
        .await
        .expect("gone"));
    assert!(sql::remove_session(c, b"sa").await.expect("remove"));
    assert!(!sql::remove_session(c, b"sa").await.expect("again"));
    // s2 expires at 500, s4 and s5 at 600.
    assert_eq!(sql::sweep_sessions(c, 500).await.expect("sweep"), 0);
    assert_eq!(sql::sweep_sessions(c, 501).await.expect("sweep"), 1);
    assert_eq!(sql::sweep_sessions(c, 10_000).await.expect("sweep"), 2);
    assert_eq!(
        sql::session_counts(c).await.expect("counts"),
        SessionCounts::default()
    );
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_expiries_releases_and_holds() {
    let Some((schema, pg)) = setup("pgsql_due", 2).await else {
        return;
    };
    import(&pg, 1..=9, "op", "demo").await;
    // One profile per state, each with an expiry.
    for (n, state) in (1..).zip(State::ALL) {
        let rec = ProfileRecord {
            state,
            expires_at: Some(if n % 2 == 0 { 50 } else { 60 }),
            ..imported(n, "op", "demo")
        };
        put(&pg, &rec).await;
    }
    let client = pg.client().await.expect("client");
    let c = &client;
    for (n, state) in (1..).zip(State::ALL) {
        let got = sql::get_profile(c, &iccid(n)).await.expect("get");
        assert_eq!(got.map(|r| r.state), Some(state), "every state reads back");
    }
    let want = |now: i64| -> Vec<String> {
        let mut due: Vec<(i64, String)> = (1..)
            .zip(State::ALL)
            .filter(|(n, s)| s.can_expire() && (if n % 2 == 0 { 50 } else { 60 }) <= now)
            .map(|(n, _)| (if n % 2 == 0 { 50 } else { 60 }, iccid(n)))
            .collect();
        due.sort();
        due.into_iter().map(|(_, i)| i).collect()
    };
    for now in [49, 50, 59, 60, 1_000] {
        assert_eq!(
            sql::due_expiries(c, now).await.expect("due"),
            want(now),
            "{now}"
        );
    }
    assert_eq!(sql::due_expiries(c, 1_000).await.expect("due").len(), 5);

    // Orders of every status and kind with every combination of the facts
    // that decide a pending release and a pending hold.
    let mut orders = vec![];
    for status in [
        OrderStatus::Open,
        OrderStatus::Cancelled,
        OrderStatus::Withdrawn,
        OrderStatus::Lapsed,
    ] {
        for kind in [OrderKind::Profile, OrderKind::Balance] {
            for facts in 0u8..32 {
                let id = sql::new_id(c).await.expect("id");
                let at = |bit: u8, t: i64| (facts & bit != 0).then_some(t + id as i64 % 7);
                let o = MobilePlansOrder {
                    kind,
                    status,
                    release_at: at(1, 100),
                    released_at: at(2, 100),
                    release_error: at(4, 0).map(|_| "failed".into()),
                    hold_until: at(8, 200),
                    confirmed_at: at(16, 150),
                    ..order(id, &format!("T{id}"), &iccid(1), None)
                };
                sql::put_order(c, &o).await.expect("order");
                orders.push(o);
            }
        }
    }
    for now in [99, 103, 106, 203, 10_000] {
        let mut releases: Vec<(i64, u64)> = orders
            .iter()
            .filter(|o| o.release_pending())
            .filter_map(|o| o.release_at.filter(|t| *t <= now).map(|t| (t, o.id)))
            .collect();
        releases.sort();
        assert_eq!(
            sql::mp_due_releases(c, now).await.expect("releases"),
            releases.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            "releases at {now}"
        );
        let mut holds: Vec<(i64, u64)> = orders
            .iter()
            .filter(|o| o.hold_pending())
            .filter_map(|o| o.hold_until.filter(|t| *t <= now).map(|t| (t, o.id)))
            .collect();
        holds.sort();
        assert_eq!(
            sql::mp_due_holds(c, now).await.expect("holds"),
            holds.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            "holds at {now}"
        );
    }
    assert!(!sql::mp_due_releases(c, 10_000).await.expect("r").is_empty());
    assert!(!sql::mp_due_holds(c, 10_000).await.expect("h").is_empty());
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_known_iccid_is_reported_and_rolled_back() {
    let Some((schema, pg)) = setup("pgsql_import", 2).await else {
        return;
    };
    import(&pg, [1, 2], "op", "demo").await;
    let mut client = pg.client().await.expect("client");
    // More than one statement's worth, the known ICCID in the second.
    let mut items: Vec<NewProfile> = (100..100 + sql::INSERT_BATCH as u64 + 10)
        .map(|n| new_profile(n, "op", "bulk"))
        .collect();
    items.push(new_profile(2, "op", "bulk"));
    items.push(new_profile(1, "op", "bulk"));
    let tx = client.transaction().await.expect("tx");
    let got = sql::insert_profiles(&tx, &items, "admin", 200)
        .await
        .expect("insert");
    assert_eq!(got, Err(iccid(2)), "the first known ICCID in item order");
    tx.rollback().await.expect("rollback");
    let c = &client;
    assert_eq!(
        sql::package_count(c).await.expect("count"),
        2,
        "nothing left"
    );
    assert!(!sql::type_known(c, "bulk", "op").await.expect("type"));
    assert_eq!(sql::get_profile(c, &iccid(100)).await.expect("get"), None);
    // A repeat inside one import is reported too.
    let tx = client.transaction().await.expect("tx");
    let twice = [new_profile(5, "op", "demo"), new_profile(5, "op", "demo")];
    assert_eq!(
        sql::insert_profiles(&tx, &twice, "admin", 200)
            .await
            .expect("insert"),
        Err(iccid(5))
    );
    tx.rollback().await.expect("rollback");
    // The same import without them goes in whole.
    items.truncate(items.len() - 2);
    let tx = client.transaction().await.expect("tx");
    assert_eq!(
        sql::insert_profiles(&tx, &items, "ops", 200)
            .await
            .expect("insert"),
        Ok(items.len())
    );
    tx.commit().await.expect("commit");
    let c = &client;
    assert_eq!(sql::package_count(c).await.expect("count"), 2 + items.len());
    let last = 100 + sql::INSERT_BATCH as u64 + 9;
    assert_eq!(
        sql::get_profile(c, &iccid(last)).await.expect("get"),
        Some(ProfileRecord {
            created_at: 200,
            updated_at: 200,
            imported_by: Some("ops".into()),
            ..imported(last, "op", "bulk")
        })
    );
    assert!(sql::type_known(c, "bulk", "op").await.expect("type"));
    drop(client);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_insert_of_one_key_is_a_conflict() {
    let Some((schema, pg)) = setup("pgsql_unique", 3).await else {
        return;
    };
    import(&pg, [1], "op", "demo").await;
    let entry = HistoryEntry {
        v: RECORD_VERSION,
        at: 1,
        event: Event::DownloadOrderAllocated,
        from: Some(State::Available),
        to: State::Allocated,
        caller: "op".into(),
        retry: None,
    };
    let mut first = pg.client().await.expect("client");
    let tx1 = first.transaction().await.expect("tx");
    sql::insert_history(&tx1, &iccid(1), 1, &entry)
        .await
        .expect("first");
    let (pg2, entry2) = (pg.clone(), entry.clone());
    let second = tokio::spawn(async move {
        let mut client = pg2.client().await.expect("client");
        let tx2 = client.transaction().await.expect("tx");
        // Waits for the first transaction at the primary key.
        sql::insert_history(&tx2, &iccid(1), 1, &entry2).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx1.commit().await.expect("commit");
    let err: PgError = second
        .await
        .expect("task")
        .expect_err("the second insert loses");
    assert!(err.is_conflict(), "23505 counts as a conflict: {err}");
    drop(first);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_share_the_outbox_without_overlap() {
    let Some((schema, pg)) = setup("pgsql_claimers", 9).await else {
        return;
    };
    const ITEMS: usize = 200;
    {
        let client = pg.client().await.expect("client");
        for _ in 0..ITEMS {
            let id = sql::new_id(&client).await.expect("id");
            sql::put_outbox(&client, &outbox_item(id, "op", 10))
                .await
                .expect("put");
        }
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut nodes = vec![];
    for n in 0..8 {
        let (pg, start) = (pg.clone(), start.clone());
        nodes.push(tokio::spawn(async move {
            let client = pg.client().await.expect("client");
            let node = format!("node-{n}");
            start.wait().await;
            let mut got = vec![];
            loop {
                let (items, _) = sql::outbox_claim_due(&client, "op", 1_000, 7, &node, 60_000)
                    .await
                    .expect("claim");
                if items.is_empty() {
                    return got;
                }
                got.extend(items.into_iter().map(|i| i.id));
            }
        }));
    }
    let mut all = vec![];
    for n in nodes {
        all.extend(n.await.expect("node"));
    }
    let distinct: std::collections::BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), ITEMS, "every item claimed once");
    assert_eq!(distinct.len(), ITEMS);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_writes_after_a_missing_read_conflict() {
    let Some((schema, pg)) = setup("pgsql_first_writes", 3).await else {
        return;
    };
    // Two transactions both find no balance for a SIM and no use of a
    // GetBalance transaction id, and both write one: the second to commit
    // its write loses with a conflict instead of overwriting the first.
    let record = |operator: &str| BalanceRecord {
        v: RECORD_VERSION,
        iccid: iccid(7),
        operator: operator.into(),
        not_supported: false,
        buckets: vec![],
        next_bucket: 1,
        created_at: 1,
        updated_at: 1,
    };
    let mut first = pg.client().await.expect("client");
    let tx1 = first.transaction().await.expect("tx");
    assert_eq!(
        sql::balance_for_update(&tx1, &iccid(7))
            .await
            .expect("read"),
        None
    );
    assert_eq!(sql::use_of(&tx1, "X1").await.expect("read"), None);
    let pg2 = pg.clone();
    let second = tokio::spawn(async move {
        let mut client = pg2.client().await.expect("client");
        let tx2 = client.transaction().await.expect("tx");
        assert_eq!(
            sql::balance_for_update(&tx2, &iccid(7))
                .await
                .expect("read"),
            None
        );
        assert_eq!(sql::use_of(&tx2, "X1").await.expect("read"), None);
        let balance = sql::put_balance(&tx2, &record("two"), true).await;
        let used = sql::put_use(&tx2, "X1", None, 2).await;
        (balance, used)
    });
    sql::put_use(&tx1, "X1", None, 1).await.expect("use");
    sql::put_balance(&tx1, &record("one"), true)
        .await
        .expect("balance");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx1.commit().await.expect("commit");
    let (balance, used) = second.await.expect("task");
    let err = match (balance, used) {
        (Err(e), _) | (Ok(()), Err(e)) => e,
        (Ok(()), Ok(())) => panic!("both transactions wrote a first record"),
    };
    assert!(err.is_conflict(), "{err}");
    let client = pg.client().await.expect("client");
    assert_eq!(
        sql::balance(&client, &iccid(7)).await.expect("read"),
        Some(record("one"))
    );
    assert_eq!(sql::use_of(&client, "X1").await.expect("read"), Some(1));
    drop(client);
    drop(first);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_columns_of_eight_bytes_work_too() {
    let Some((schema, pg)) = setup("pgsql_int8", 2).await else {
        return;
    };
    // CockroachDB makes `integer` an INT8: the same schema with 8-byte
    // integer columns.
    let client = pg.client().await.expect("client");
    let c = &client;
    c.batch_execute(
        "ALTER TABLE profiles ALTER COLUMN download_attempts TYPE bigint, \
             ALTER COLUMN cc_attempts TYPE bigint; \
         ALTER TABLE outbox ALTER COLUMN point TYPE bigint, \
             ALTER COLUMN attempts TYPE bigint; \
         ALTER TABLE mobileplans_orders \
             ALTER COLUMN registration_interval_minutes TYPE bigint",
    )
    .await
    .expect("alter");
    import(&pg, [1], "op", "demo").await;
    let rec = ProfileRecord {
        state: State::Linked,
        download_attempts: 7,
        cc_attempts: u32::MAX >> 1,
        ..imported(1, "op", "demo")
    };
    put(&pg, &rec).await;
    assert_eq!(
        sql::get_profile(c, &iccid(1)).await.expect("get"),
        Some(rec)
    );
    let item = OutboxItem {
        point: 101,
        attempts: 9,
        ..outbox_item(5, "op", 1)
    };
    sql::put_outbox(c, &item).await.expect("put");
    assert_eq!(sql::outbox_all(c).await.expect("all"), vec![item]);
    for registration in [
        Registration::Now,
        Registration::Later {
            interval_minutes: 30,
        },
    ] {
        let o = MobilePlansOrder {
            registration,
            ..order(sql::new_id(c).await.expect("id"), "T", &iccid(1), None)
        };
        sql::put_order(c, &o).await.expect("order");
        assert_eq!(
            sql::mp_order(c, o.id).await.expect("order"),
            Some(o.clone())
        );
        sql::put_order(
            c,
            &MobilePlansOrder {
                transaction_id: format!("T{}", o.id),
                ..o
            },
        )
        .await
        .expect("rename");
    }
    drop(client);
    schema.drop().await;
}
