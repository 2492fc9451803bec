//! One contract, both storage backends: SQLite (embedded) and PostgreSQL (a real server).
//! Whatever the host relies on from the `Store` trait is checked here against each.

use crm_host::limits::TraceRetention;
use crm_host::store::postgres::PgStore;
use crm_host::store::sqlite::SqliteStore;
use crm_host::store::*;
use crm_tests::postgres::Postgres;
use crm_tests::TempDir;
use serde_json::{json, Map};

fn audit(action: AuditAction, adapter: Option<&str>, tenant: Option<&str>) -> Audit {
    Audit { at_ms: 1, actor: "test".into(), action, adapter: adapter.map(Into::into), tenant: tenant.map(Into::into), digest: None, detail: Some(json!({"n": 1})) }
}

fn version(adapter: &str, digest: &str, at: i64) -> VersionRecord {
    VersionRecord {
        adapter: adapter.into(),
        digest: digest.into(),
        version: format!("v-{digest}"),
        manifest: json!({"name": adapter, "operations": ["a", "b"]}),
        deployed_at_ms: at,
        deployed_by: "test".into(),
        staged: false,
    }
}

fn tenant(id: &str, pin: Option<&str>) -> TenantRecord {
    let mut crm_config = Map::new();
    crm_config.insert("token".into(), json!("s3cret"));
    crm_config.insert("nested".into(), json!({"b": 2, "a": [1, "שלום"]}));
    TenantRecord {
        id: id.into(),
        adapter: "a".into(),
        project_id: "p".into(),
        crm_config,
        pin: pin.map(Into::into),
        limits: serde_json::from_value(json!({"memoryMb": 16})).unwrap(),
        updated_at_ms: 5,
        redactor: Default::default(),
        config_digest: Default::default(),
    }
}

fn call(id: &str, tenant: &str) -> CallRecord {
    let head = CallHead {
        call_id: id.into(),
        tenant: tenant.into(),
        func_id: "getCustomerDetails".into(),
        adapter: "a".into(),
        version: "1".into(),
        digest: "d1".into(),
        started_at_ms: 7,
        duration_us: 1234,
        outcome: "failure".into(),
        error_kind: Some("crm_error".into()),
    };
    CallRecord { head, trace: json!({"request": {"chat": {"id": "c"}}, "outbound": []}).to_string() }
}

fn event(message_id: Option<&str>, hash: &str, text: &str) -> NewEvent {
    NewEvent { message_id: message_id.map(Into::into), content_hash: hash.into(), event: json!({"text": text}) }
}

async fn contract(s: &dyn Store) {
    let snap = s.snapshot().await.unwrap();
    assert_eq!((snap.adapters.len(), snap.cursor), (0, 0), "an empty store");

    // Versions: activate, stage, roll back, delete.
    s.put_version(&version("a", "d1", 10), b"one", DeployMode::Activate, &audit(AuditAction::Deploy, Some("a"), None)).await.unwrap();
    let st = s.put_version(&version("a", "d2", 20), b"two", DeployMode::Activate, &audit(AuditAction::Deploy, Some("a"), None)).await.unwrap();
    assert_eq!((st.active.as_deref(), st.previous.as_deref()), (Some("d2"), Some("d1")));
    let st = s.put_version(&version("a", "d3", 30), &[0, 255, 1], DeployMode::Stage, &audit(AuditAction::Stage, Some("a"), None)).await.unwrap();
    assert_eq!(st.active.as_deref(), Some("d2"), "staging does not activate");
    assert_eq!(s.blob("d3").await.unwrap().as_deref(), Some(&[0u8, 255, 1][..]), "bytes exactly");
    assert_eq!(s.blob_size("d3").await.unwrap(), Some(3));
    let st = s.rollback("a", &audit(AuditAction::Rollback, Some("a"), None)).await.unwrap();
    assert_eq!((st.active.as_deref(), st.previous.as_deref()), (Some("d1"), Some("d2")));
    assert!(matches!(s.delete_version("a", "d1", &audit(AuditAction::DeleteVersion, Some("a"), None)).await, Err(StoreError::VersionInUse(_))));
    assert!(matches!(s.activate("a", "nope", &audit(AuditAction::Activate, Some("a"), None)).await, Err(StoreError::UnknownVersion { .. })));
    let (state, versions) = s.adapter_records("a").await.unwrap();
    assert_eq!(state.unwrap().active.as_deref(), Some("d1"));
    assert_eq!(versions.iter().map(|v| (v.digest.as_str(), v.staged)).collect::<Vec<_>>(), [("d1", false), ("d2", false), ("d3", true)], "oldest first");
    assert_eq!(versions[0], version("a", "d1", 10), "a version reads back as written");
    assert_eq!(s.adapter_records("none").await.unwrap(), (None, vec![]));

    // Tenants, pins and keys.
    s.put_tenant(&tenant("t1", Some("d2")), &audit(AuditAction::Pin, Some("a"), Some("t1"))).await.unwrap();
    assert!(matches!(s.delete_version("a", "d2", &audit(AuditAction::DeleteVersion, Some("a"), None)).await, Err(StoreError::VersionInUse(m)) if m.contains("t1")));
    let key = KeyRecord { key_id: "k1".into(), tenant: "t1".into(), key_hash: "h".into(), created_at_ms: 3, created_by: "test".into() };
    s.put_key(&key, &audit(AuditAction::KeyIssued, None, Some("t1"))).await.unwrap();
    let (t, keys) = s.tenant_records("t1").await.unwrap();
    assert_eq!(t.unwrap(), tenant("t1", Some("d2")), "a tenant reads back as written, nested JSON and all");
    assert_eq!(keys, std::slice::from_ref(&key));

    // The snapshot and its cursor: every audit entry so far, in order.
    let snap = s.snapshot().await.unwrap();
    let log = s.audit_after(0, 100).await.unwrap();
    assert_eq!(snap.cursor, log.last().unwrap().cursor);
    assert_eq!(
        log.iter().map(|e| e.action).collect::<Vec<_>>(),
        [AuditAction::Deploy, AuditAction::Deploy, AuditAction::Stage, AuditAction::Rollback, AuditAction::Pin, AuditAction::KeyIssued]
    );
    assert_eq!(log[3].digest.as_deref(), Some("d1"), "a rollback's entry names the version it returned to");
    assert_eq!(s.audit_after(log[1].cursor, 2).await.unwrap(), log[2..4], "paging from a cursor");
    assert_eq!((snap.tenants.len(), snap.keys.len(), snap.versions.len()), (1, 1, 3));

    // Inbound events: duplicates by message id (ever) or content (within the window).
    let first = [event(Some("m1"), "h1", "one"), event(None, "h2", "two"), event(Some("m1"), "h9", "one again")];
    assert_eq!(s.append_events("t1", &first, 1_000, 500).await.unwrap(), 2);
    assert_eq!(s.append_events("t1", &[event(None, "h2", "two")], 1_400, 500).await.unwrap(), 0, "inside the window");
    assert_eq!(s.append_events("t1", &[event(None, "h2", "two")], 1_600, 500).await.unwrap(), 1, "after the window");
    assert_eq!(s.append_events("t2", &[event(Some("m1"), "h1", "other tenant")], 1_600, 500).await.unwrap(), 1, "ids are per tenant");
    let events = s.events_after("t1", 0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.event["text"].as_str().unwrap()).collect::<Vec<_>>(), ["one", "two", "two"]);
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(s.events_after("t1", events[0].cursor, 1).await.unwrap(), events[1..2]);

    // Recorded calls: newest first, kept up to the retention per tenant.
    let calls: Vec<CallRecord> = (0..5).map(|i| call(&format!("c{i}"), "t1")).chain([call("x", "t2")]).collect();
    s.record_calls(calls.clone(), &TraceRetention { calls: 3, ..TraceRetention::DEFAULT }).await.unwrap();
    let kept = s.calls("t1", 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["c4", "c3", "c2"]);
    assert_eq!(kept[0], calls[4].head, "listed from the summary columns");
    assert_eq!(s.call("t1", "c4").await.unwrap().unwrap(), calls[4], "a call reads back as written");
    assert_eq!(s.call("t1", "x").await.unwrap(), None, "another tenant's call");
    assert_eq!(s.calls("t1", 10, Some("failure")).await.unwrap().len(), 3, "by outcome");
    assert!(s.calls("t1", 10, Some("complete")).await.unwrap().is_empty());

    // ... and up to the bytes of their traces: the newest that fit.
    let big = |id: &str| CallRecord { trace: json!({"data": "x".repeat(1000)}).to_string(), ..call(id, "t3") };
    let size = big("b0").trace.len() as u64;
    let bound = TraceRetention { calls: 1000, trace_bytes: 3 * size + size / 2 };
    s.record_calls(vec![big("b0"), big("b1")], &bound).await.unwrap();
    s.record_calls(vec![big("b2"), big("b3"), big("b4")], &bound).await.unwrap();
    let kept = s.calls("t3", 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["b4", "b3", "b2"]);
    // Traces that add up to exactly the bound all fit.
    let exact: Vec<CallRecord> = (0..3).map(|i| CallRecord { head: call(&format!("t8-{i}"), "t8").head, ..big("") }).collect();
    s.record_calls(exact, &TraceRetention { calls: 1000, trace_bytes: 3 * size }).await.unwrap();
    assert_eq!(s.calls("t8", 10, None).await.unwrap().len(), 3);
    // Both bounds at once: whichever keeps fewer decides.
    for (tenant, keep_calls, kept) in [("t6", 2, &["t6-4", "t6-3"][..]), ("t7", 4, &["t7-4", "t7-3", "t7-2"][..])] {
        let calls: Vec<CallRecord> = (0..5).map(|i| CallRecord { head: call(&format!("{tenant}-{i}"), tenant).head, ..big("") }).collect();
        s.record_calls(calls, &TraceRetention { calls: keep_calls, ..bound }).await.unwrap();
        assert_eq!(s.calls(tenant, 10, None).await.unwrap().iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), kept);
    }

    // Many batches, several tenants at once, either bound deciding: each tenant keeps
    // exactly its newest calls that fit, batch after batch; deleting a tenant starts it over.
    let sized = |id: String, tenant: &str, len: usize| CallRecord { trace: "x".repeat(len), ..call(&id, tenant) };
    let bound = TraceRetention { calls: 5, trace_bytes: 1000 };
    let exact = [200, 500, 500].iter().enumerate().map(|(i, &len)| sized(format!("e{i}"), "m0", len)).collect();
    s.record_calls(exact, &bound).await.unwrap();
    let kept = s.calls("m0", 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), ["e2", "e1"], "the oldest go until the rest fit exactly");
    let mut written: Vec<(String, String, usize)> = Vec::new();
    for batch in 0..12usize {
        let mut calls = Vec::new();
        for i in 0..(batch * 7) % 9 {
            let (tenant, len) = (["m1", "m2", "m3"][(batch + i) % 3], 90 + (batch * 31 + i * 17) % 400);
            written.push((format!("m{batch}-{i}"), tenant.to_string(), len));
            calls.push(sized(format!("m{batch}-{i}"), tenant, len));
        }
        s.record_calls(calls, &bound).await.unwrap();
        if batch == 8 {
            // No tenant record: its calls go all the same.
            s.delete_tenant("m2", &audit(AuditAction::TenantDelete, None, Some("m2"))).await.unwrap();
            written.retain(|w| w.1 != "m2");
        }
        for tenant in ["m1", "m2", "m3"] {
            let (mut expect, mut bytes) = (Vec::new(), 0);
            for (id, _, len) in written.iter().rev().filter(|w| w.1 == tenant) {
                if expect.len() == 5 || bytes + len > 1000 {
                    break;
                }
                bytes += len;
                expect.push(id.as_str());
            }
            let kept = s.calls(tenant, 10, None).await.unwrap();
            assert_eq!(kept.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), expect, "{tenant} after batch {batch}");
        }
    }

    // A replay's selection of an adapter's calls: by tenant, function and time, newest first.
    let at = |id: &str, tenant: &str, func: &str, ms: i64| {
        let mut c = call(id, tenant);
        (c.head.func_id, c.head.started_at_ms) = (func.into(), ms);
        c
    };
    let replayable = [at("r1", "t4", "lookup", 100), at("r2", "t5", "lookup", 200), at("r3", "t4", "create", 300), at("r4", "t4", "lookup", 400)];
    s.record_calls(replayable.to_vec(), &TraceRetention::DEFAULT).await.unwrap();
    let pick = |tenants: Option<&[&str]>, functions: Option<&[&str]>, since_ms, limit| CallFilter {
        adapter: "a".into(),
        tenants: tenants.map(|t| t.iter().map(|x| x.to_string()).collect()),
        functions: functions.map(|f| f.iter().map(|x| x.to_string()).collect()),
        call_ids: None,
        since_ms,
        limit,
    };
    let ids = |heads: Vec<CallHead>| heads.into_iter().map(|h| h.call_id).collect::<Vec<_>>();
    assert_eq!(ids(s.recorded_calls(&pick(Some(&["t4", "t5"]), None, None, 10)).await.unwrap()), ["r4", "r3", "r2", "r1"]);
    assert_eq!(ids(s.recorded_calls(&pick(Some(&["t4"]), Some(&["lookup"]), None, 10)).await.unwrap()), ["r4", "r1"]);
    assert_eq!(ids(s.recorded_calls(&pick(Some(&["t4"]), None, Some(300), 10)).await.unwrap()), ["r4", "r3"]);
    assert_eq!(ids(s.recorded_calls(&pick(Some(&["t4"]), None, None, 1)).await.unwrap()), ["r4"]);
    assert!(s.recorded_calls(&pick(Some(&[]), None, None, 10)).await.unwrap().is_empty(), "an empty list selects nothing");
    let one = CallFilter { call_ids: Some(vec!["r3".into()]), ..pick(None, None, None, 10) };
    assert_eq!(ids(s.recorded_calls(&one).await.unwrap()), ["r3"], "by call id");

    // Replay reports: read back whole, listed by their heads, the newest kept.
    let report = |id: &str| ReplayRecord {
        id: id.into(),
        adapter: "a".into(),
        candidate: "d3".into(),
        created_at_ms: 9,
        verdict: "pass".into(),
        head: json!({"id": id}).to_string(),
        report: json!({"id": id, "results": ["שלום"]}).to_string(),
    };
    for id in ["p1", "p2", "p3"] {
        s.put_replay(&report(id), 2).await.unwrap();
    }
    assert_eq!(s.replay("a", "p3").await.unwrap(), Some(report("p3")));
    assert_eq!(s.replay("a", "p1").await.unwrap(), None, "beyond the kept reports");
    let listed = s.replays("a", 10).await.unwrap();
    assert_eq!(listed.iter().map(|r| (r.id.as_str(), r.report.as_str())).collect::<Vec<_>>(), [("p3", ""), ("p2", "")]);

    // Canaries: one running per adapter; an ended one never changes again.
    let canary = CanaryRecord {
        id: "k1".into(),
        adapter: "a".into(),
        digest: "d3".into(),
        percent: 20,
        max_failure_rate_increase: 0.05,
        min_calls: 50,
        excluded: vec!["t9".into()],
        state: CanaryState::Running,
        reason: None,
        started_at_ms: 11,
        started_by: "test".into(),
        ended_at_ms: None,
    };
    assert!(s.put_canary(&canary, &audit(AuditAction::CanaryStart, Some("a"), None)).await.unwrap());
    let second = CanaryRecord { id: "k2".into(), ..canary.clone() };
    assert!(matches!(s.put_canary(&second, &audit(AuditAction::CanaryStart, Some("a"), None)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.delete_version("a", "d3", &audit(AuditAction::DeleteVersion, Some("a"), None)).await, Err(StoreError::VersionInUse(m)) if m.contains("k1")));
    let ended = CanaryRecord { percent: 40, state: CanaryState::RolledBack, reason: Some("why".into()), ended_at_ms: Some(12), ..canary.clone() };
    assert!(s.put_canary(&ended, &audit(AuditAction::CanaryEnd, Some("a"), None)).await.unwrap());
    assert_eq!(s.canary("a").await.unwrap(), Some(ended.clone()), "a canary reads back as written");
    let again = CanaryRecord { state: CanaryState::Promoted, ..ended.clone() };
    assert!(!s.put_canary(&again, &audit(AuditAction::CanaryEnd, Some("a"), None)).await.unwrap(), "ended: unchanged");
    assert!(s.put_canary(&second, &audit(AuditAction::CanaryStart, Some("a"), None)).await.unwrap(), "the next one may start");
    assert_eq!(s.snapshot().await.unwrap().canaries, [second.clone()], "the snapshot holds each adapter's latest");
    assert_eq!(s.canary("none").await.unwrap(), None);

    // Events past their retention go, oldest first, a batch at a time.
    s.append_events("t2", &[event(Some("old1"), "o1", "old"), event(Some("old2"), "o2", "old")], 100, 500).await.unwrap();
    assert_eq!(s.delete_events_before(1_000, 1).await.unwrap(), 1);
    assert_eq!(s.delete_events_before(1_000, 10).await.unwrap(), 1);
    assert_eq!(s.delete_events_before(1_000, 10).await.unwrap(), 0);
    assert_eq!(s.events_after("t2", 0, 10).await.unwrap().len(), 1, "the newer event stays");
    assert_eq!(s.events_after("t1", 0, 10).await.unwrap().len(), 3);

    // Deleting a tenant takes its keys, calls and events with it.
    assert!(s.delete_tenant("t1", &audit(AuditAction::TenantDelete, Some("a"), Some("t1"))).await.unwrap());
    assert!(!s.delete_tenant("t1", &audit(AuditAction::TenantDelete, Some("a"), Some("t1"))).await.unwrap());
    assert_eq!(s.tenant_records("t1").await.unwrap(), (None, vec![]));
    assert!(s.events_after("t1", 0, 10).await.unwrap().is_empty());
    assert!(s.calls("t1", 10, None).await.unwrap().is_empty());
    let st = s.delete_version("a", "d2", &audit(AuditAction::DeleteVersion, Some("a"), None)).await.unwrap();
    assert_eq!(st.previous, None, "the deleted version is no rollback target");
    assert_eq!(s.blob("d2").await.unwrap(), None, "an unused blob goes with its last version");
    assert!(matches!(s.rollback("a", &audit(AuditAction::Rollback, Some("a"), None)).await, Err(StoreError::NoPreviousVersion(_))));
    s.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_keeps_the_store_contract() {
    let dir = TempDir::new("store-sqlite");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    contract(&store).await;
    assert!(store.changes().is_none(), "one host: nothing to follow");
}

#[tokio::test]
async fn postgres_keeps_the_store_contract() {
    let pg = Postgres::start();
    let url = pg.database("contract");
    let store = PgStore::open(&url).await.unwrap();
    contract(&store).await;
    assert!(store.changes().is_some(), "a shared store announces changes");
    drop(store);
    // Migrations are recorded: opening again (as every replica does) changes nothing.
    let again = PgStore::open(&url).await.unwrap();
    assert_eq!(again.snapshot().await.unwrap().adapters[0].active.as_deref(), Some("d1"));
}

#[tokio::test]
async fn a_postgres_store_announces_another_hosts_change() {
    let pg = Postgres::start();
    let url = pg.database("notify");
    let (a, b) = (PgStore::open(&url).await.unwrap(), PgStore::open(&url).await.unwrap());
    let changes = b.changes().unwrap();
    // The listener's first notice is its catch-up after connecting; take it.
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.notified()).await.expect("catch-up notice");
    a.put_version(&version("a", "d1", 1), b"x", DeployMode::Activate, &audit(AuditAction::Deploy, Some("a"), None)).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.notified()).await.expect("a notice of A's deploy reaches B");
    assert_eq!(b.audit_after(0, 10).await.unwrap().len(), 1);
}

/// The newest `n` of a tenant's calls are kept, checked after one more call is recorded
/// with a bound of `n`: what the retention deletes depends on the tenant's totals.
async fn keeps_newest(s: &dyn Store, tenant: &str, n: u32, expect: &[&str]) {
    s.record_calls(vec![call(&format!("{tenant}-new"), tenant)], &TraceRetention { calls: n, ..TraceRetention::DEFAULT }).await.unwrap();
    let kept = s.calls(tenant, 10, None).await.unwrap();
    assert_eq!(kept.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), expect);
}

/// Calls recorded before the tenants' totals existed are counted when the host upgrades.
#[tokio::test]
async fn an_upgraded_sqlite_store_counts_the_calls_it_had() {
    use sqlx::Connection;
    let dir = TempDir::new("store-sqlite-upgrade");
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store.record_calls((0..4).map(|i| call(&format!("u-{i}"), "u")).collect(), &TraceRetention::DEFAULT).await.unwrap();
    drop(store);
    // The database as the release before it left it.
    let db = format!("sqlite://{}", dir.path().join(crm_host::store::sqlite::DB_FILE).display());
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::raw_sql("DROP TABLE call_totals; DELETE FROM _sqlx_migrations WHERE version = 6").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    keeps_newest(&store, "u", 3, &["u-new", "u-3", "u-2"]).await;
}

/// The same on PostgreSQL, and during a rolling upgrade: a host of the release before
/// writes and trims calls without knowing of the totals, and they stay exact.
#[tokio::test]
async fn an_upgraded_postgres_store_counts_calls_whichever_host_writes_them() {
    let pg = Postgres::start();
    let url = pg.database("upgrade");
    let store = PgStore::open(&url).await.unwrap();
    store.record_calls((0..4).map(|i| call(&format!("u-{i}"), "u")).collect(), &TraceRetention::DEFAULT).await.unwrap();
    drop(store);
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "DROP TABLE call_totals; DROP FUNCTION call_totals_add CASCADE; DROP FUNCTION call_totals_remove CASCADE;
         DELETE FROM _sqlx_migrations WHERE version = 5",
    )
    .execute(&raw)
    .await
    .unwrap();
    let store = PgStore::open(&url).await.unwrap();
    keeps_newest(&store, "u", 3, &["u-new", "u-3", "u-2"]).await;

    // An older host's batch and its retention, as that release wrote them.
    for i in 0..4 {
        sqlx::query(
            "INSERT INTO calls (call_id, tenant, func_id, adapter, version, digest, started_at_ms, duration_us, outcome, error_kind, trace, trace_bytes)
             VALUES ($1, 'old', 'f', 'a', '1', 'd1', 7, 1, 'complete', NULL, '{}', 2)",
        )
        .bind(format!("old-{i}"))
        .execute(&raw)
        .await
        .unwrap();
    }
    sqlx::query("DELETE FROM calls WHERE call_id = 'old-0'").execute(&raw).await.unwrap();
    keeps_newest(&store, "old", 3, &["old-new", "old-3", "old-2"]).await;
}

/// Deleting a tenant while its traces are being written and trimmed: both finish, and the
/// totals still match the rows (PostgreSQL locks rows; taken in different orders, the two
/// would deadlock and one would fail).
#[tokio::test]
async fn a_postgres_tenant_is_deleted_while_its_calls_are_recorded() {
    let pg = Postgres::start();
    let url = pg.database("delete-race");
    let (a, b) = (PgStore::open(&url).await.unwrap(), PgStore::open(&url).await.unwrap());
    let keep = TraceRetention { calls: 10, ..TraceRetention::DEFAULT };
    let deletion = audit(AuditAction::TenantDelete, None, Some("x"));
    for round in 0..40 {
        a.record_calls((0..20).map(|i| call(&format!("r{round}-a{i}"), "x")).collect(), &keep).await.unwrap();
        let batch = (0..20).map(|i| call(&format!("r{round}-b{i}"), "x")).collect();
        let (recorded, deleted) = tokio::join!(a.record_calls(batch, &keep), b.delete_tenant("x", &deletion));
        recorded.unwrap();
        deleted.unwrap();
    }
    let raw = sqlx::PgPool::connect(&url).await.unwrap();
    let (rows, bytes): (i64, Option<i64>) = sqlx::query_as("SELECT COUNT(*), SUM(trace_bytes)::BIGINT FROM calls WHERE tenant = 'x'").fetch_one(&raw).await.unwrap();
    let totals: Option<(i64, i64)> = sqlx::query_as("SELECT calls, trace_bytes FROM call_totals WHERE tenant = 'x'").fetch_optional(&raw).await.unwrap();
    assert_eq!(totals.unwrap_or_default(), (rows, bytes.unwrap_or_default()), "the totals match the rows");
}
