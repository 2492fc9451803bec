//! Several `crm-host` processes sharing one real PostgreSQL database (`--database`): a change
//! made through any of them is served by all, with no failed call; a database outage leaves
//! calls served, refuses writes with 503 and heals by itself; inbound events are one log.

use crate::host_bin;
use crm_tests::postgres::Postgres;
use crm_tests::process::{eventually, Proc};
use crm_tests::{component, with_custom_section, TempDir};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};


/// One database, `n` hosts on it, each with its own data directory (its compile cache).
struct Cluster {
    pg: Postgres,
    hosts: Vec<Proc>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        let pg = Postgres::start();
        let url = pg.database("registry");
        let dirs: Vec<TempDir> = (0..n).map(|i| TempDir::new(&format!("replica{i}"))).collect();
        // The URL through the environment, as a Kubernetes Secret passes it.
        let hosts = dirs.iter().map(|d| Proc::start(&host_bin(), d.path(), &[], &[("CRM_HOST_DATABASE_URL", &url)])).collect();
        Cluster { pg, hosts, _dirs: dirs }
    }
}

fn json_body(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

async fn call(p: &Proc, tenant: &str) -> (u16, Value) {
    p.req("POST", &format!("/v1/tenants/{tenant}/crm/whoami"), json_body(json!({"chat": {"id": "c", "phone": "1"}}))).await
}

/// The version a tenant's call ran, or what went wrong.
async fn version(p: &Proc, tenant: &str) -> Result<String, String> {
    match call(p, tenant).await {
        (200, v) if v["crmData"]["version"].is_string() => Ok(v["crmData"]["version"].as_str().unwrap().to_string()),
        (s, v) => Err(format!("{s} {v}")),
    }
}

async fn active_digest(p: &Proc, adapter: &str) -> Option<String> {
    Some(p.active(adapter).await?["digest"].as_str()?.to_string())
}

/// Propagation is specified at 1 s and measured by `cargo xtask bench`; tests wait longer so
/// that a loaded CI machine does not fail them for being slow.
const PROPAGATES: Duration = Duration::from_secs(10);

async fn deploy(p: &Proc, bytes: Vec<u8>) -> String {
    let (s, out) = p.req("PUT", "/v1/adapters/whoami", Some(bytes)).await;
    assert!(s == 201 || s == 200, "deploy: {s} {out}");
    out["digest"].as_str().unwrap().to_string()
}

async fn put_tenant(p: &Proc, id: &str, body: Value) {
    let (s, out) = p.req("PUT", &format!("/v1/tenants/{id}"), json_body(body)).await;
    assert_eq!(s, 200, "{out}");
}

#[tokio::test]
async fn a_change_on_one_host_is_served_by_every_host() {
    let c = Cluster::start(3);
    let [a, b, h3] = &c.hosts[..] else { unreachable!() };

    let v1 = deploy(a, component("whoami")).await;
    put_tenant(a, "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    for p in [b, h3] {
        eventually("the tenant and version deployed on A, on B and C", PROPAGATES, async || version(p, "acme").await.as_deref() == Ok("1.0.0")).await;
    }

    // A new version through A: B and C compile it themselves (each has its own cache).
    let v2 = deploy(a, component("whoami-v2")).await;
    for p in [b, h3] {
        eventually("2.0.0 everywhere", PROPAGATES, async || version(p, "acme").await.as_deref() == Ok("2.0.0")).await;
        let (_, list) = p.req("GET", "/v1/adapters/whoami/versions", None).await;
        assert_eq!(list["versions"].as_array().unwrap().len(), 2, "both versions listed on every host: {list}");
    }

    // A pin set through C holds on A.
    put_tenant(h3, "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": v1})).await;
    eventually("the pin, on A", PROPAGATES, async || version(a, "acme").await.as_deref() == Ok("1.0.0")).await;
    assert_eq!(active_digest(a, "whoami").await.as_deref(), Some(v2.as_str()), "the active version is unchanged");

    // A key issued on B authenticates on A; revoked on C, A refuses it.
    let (s, key) = b.req("POST", "/v1/tenants/acme/keys", None).await;
    assert_eq!(s, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    let with_key = async |p: &Proc| {
        reqwest::Client::new()
            .post(format!("{}/v1/tenants/acme/crm/whoami", p.url))
            .bearer_auth(&secret)
            .body(json!({"chat": {"id": "c"}}).to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    eventually("the key, on A", PROPAGATES, async || with_key(a).await == 200).await;
    let (s, out) = h3.req("DELETE", &format!("/v1/tenants/acme/keys/{}", key["keyId"].as_str().unwrap()), None).await;
    assert_eq!(s, 204, "{out}");
    eventually("the revocation, on A", PROPAGATES, async || with_key(a).await == 401).await;

    // A tenant deleted through B is gone from A and C.
    assert_eq!(b.req("DELETE", "/v1/tenants/acme", None).await.0, 204);
    for p in [a, h3] {
        eventually("the deletion", PROPAGATES, async || call(p, "acme").await.0 == 404).await;
    }
    let (_, audit) = h3.req("GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["deploy", "tenant_put", "deploy", "pin", "key_issued", "key_revoked", "tenant_delete"], "one audit log, in order");
}

#[tokio::test]
async fn a_rollback_on_b_is_served_by_a() {
    let c = Cluster::start(2);
    let [a, b] = &c.hosts[..] else { unreachable!() };
    let v1 = deploy(a, component("whoami")).await;
    put_tenant(a, "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    let v2 = deploy(a, component("whoami-v2")).await;
    eventually("2.0.0 on B", PROPAGATES, async || active_digest(b, "whoami").await.as_deref() == Some(v2.as_str())).await;

    let (s, out) = b.req("POST", "/v1/adapters/whoami/rollback", None).await;
    assert_eq!(s, 200, "{out}");
    eventually("the rollback, on A", PROPAGATES, async || version(a, "acme").await.as_deref() == Ok("1.0.0")).await;
    assert_eq!(active_digest(a, "whoami").await, Some(v1));

    // And back again, from A: B follows.
    assert_eq!(a.req("POST", "/v1/adapters/whoami/rollback", None).await.0, 200);
    eventually("the second rollback, on B", PROPAGATES, async || version(b, "acme").await.as_deref() == Ok("2.0.0")).await;
}

#[tokio::test]
async fn a_canary_started_on_a_routes_the_same_tenants_on_b_and_ends_everywhere() {
    let c = Cluster::start(2);
    let [a, b] = &c.hosts[..] else { unreachable!() };
    deploy(a, component("whoami")).await;
    let (s, staged) = a.req("PUT", "/v1/adapters/whoami?stage=true", Some(component("whoami-v2"))).await;
    assert_eq!(s, 201, "{staged}");
    let tenants: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for t in &tenants {
        put_tenant(a, t, json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    }
    let (s, started) = a.req("POST", "/v1/adapters/whoami/canary", json_body(json!({"digest": staged["digest"], "percent": 50}))).await;
    assert_eq!(s, 201, "{started}");
    let inside: Vec<Value> = started["tenants"]["first"].as_array().unwrap().clone();
    assert!(!inside.is_empty() && inside.len() < 20, "{started}");
    let expected = |t: &String| if inside.contains(&json!(t)) { "2.0.0" } else { "1.0.0" };
    eventually("B routes the canary's tenants as A does", PROPAGATES, async || {
        for t in &tenants {
            if version(b, t).await.as_deref() != Ok(expected(t)) {
                return false;
            }
        }
        true
    })
    .await;
    let (s, status) = b.req("GET", "/v1/adapters/whoami/canary", None).await;
    assert_eq!((s, &status["id"], status["state"].as_str()), (200, &started["id"], Some("running")), "{status}");

    let (s, stopped) = b.req("DELETE", "/v1/adapters/whoami/canary", None).await;
    assert_eq!((s, stopped["state"].as_str()), (200, Some("stopped")), "stopped through B: {stopped}");
    eventually("A sends every tenant to the active version again", PROPAGATES, async || {
        for t in &tenants {
            if version(a, t).await.as_deref() != Ok("1.0.0") {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(a.req("GET", "/v1/adapters/whoami/canary", None).await.1["state"], "stopped");
}

#[tokio::test]
async fn sixteen_clients_across_three_hosts_never_fail_during_three_deploys() {
    let c = Arc::new(Cluster::start(3));
    let first = deploy(&c.hosts[0], component("whoami")).await;
    put_tenant(&c.hosts[0], "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    for p in &c.hosts {
        eventually("the first version everywhere", PROPAGATES, async || active_digest(p, "whoami").await.as_deref() == Some(first.as_str())).await;
        eventually("the tenant everywhere", PROPAGATES, async || version(p, "acme").await.is_ok()).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (c, stop, ok, failed) = (c.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match version(&c.hosts[i % 3], "acme").await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                errors
            })
        })
        .collect();

    // Three deploys, each through another host: a new version, the first one again (stored:
    // activated as it is) and a third digest.
    let third = with_custom_section(component("whoami-v2"), "third build");
    for (through, bytes) in [(1, component("whoami-v2")), (2, component("whoami")), (0, third)] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let digest = deploy(&c.hosts[through], bytes).await;
        for p in &c.hosts {
            eventually("the deploy on every host", PROPAGATES, async || active_digest(p, "whoami").await.as_deref() == Some(digest.as_str())).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for client in clients {
        errors.extend(client.await.unwrap());
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} calls answered, {failed} failed");
    assert_eq!(failed, 0, "failed calls: {:?}", &errors[..errors.len().min(5)]);
    assert!(ok > 100, "the clients ran: {ok} calls");
    for p in &c.hosts {
        assert_eq!(version(p, "acme").await.as_deref(), Ok("2.0.0"), "the third deploy serves everywhere");
    }
}

#[tokio::test]
async fn losing_the_database_keeps_calls_served_refuses_writes_and_heals() {
    let mut c = Cluster::start(2);
    deploy(&c.hosts[0], component("whoami")).await;
    put_tenant(&c.hosts[0], "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    for p in &c.hosts {
        eventually("the tenant everywhere", PROPAGATES, async || version(p, "acme").await.is_ok()).await;
        let (s, h) = p.req("GET", "/healthz?deep=1", None).await;
        assert_eq!((s, h["status"].clone(), h["store"].clone()), (200, json!("ok"), json!("ok")), "{h}");
    }

    c.pg.kill();
    let down = Instant::now();
    for p in &c.hosts {
        for _ in 0..20 {
            assert_eq!(version(p, "acme").await.as_deref(), Ok("1.0.0"), "calls are served from memory");
        }
        let (s, h) = p.req("GET", "/healthz?deep=1", None).await;
        assert_eq!((s, h["status"].clone()), (503, json!("unhealthy")), "{h}");
        assert_ne!(h["store"], "ok", "{h}");
        assert_eq!(p.req("GET", "/healthz", None).await.0, 200, "still live: it serves calls");
        let (s, out) = p.req("PUT", "/v1/tenants/other", json_body(json!({"adapter": "whoami", "crmConfig": {}}))).await;
        assert_eq!((s, out["error"]["kind"].clone()), (503, json!("storage_unavailable")), "{out}");
        let (s, out) = p.req("PUT", "/v1/adapters/whoami", Some(component("whoami-v2"))).await;
        assert_eq!((s, out["error"]["kind"].clone()), (503, json!("storage_unavailable")), "{out}");
    }
    // A few seconds down in all.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    assert_eq!(version(&c.hosts[1], "acme").await.as_deref(), Ok("1.0.0"));

    c.pg.resume();
    for p in &c.hosts {
        eventually("deep health back", Duration::from_secs(30), async || p.req("GET", "/healthz?deep=1", None).await.0 == 200).await;
    }
    // Writes work again, and the hosts follow each other again (notices or the poll).
    let v2 = deploy(&c.hosts[0], component("whoami-v2")).await;
    eventually("the deploy after the outage, on B", PROPAGATES, async || version(&c.hosts[1], "acme").await.as_deref() == Ok("2.0.0")).await;
    assert_eq!(active_digest(&c.hosts[1], "whoami").await, Some(v2));
    put_tenant(&c.hosts[1], "other", json!({"adapter": "whoami", "crmConfig": {"region": "us"}})).await;
    eventually("a tenant made on B, on A", PROPAGATES, async || version(&c.hosts[0], "other").await.is_ok()).await;
    let (_, audit) = c.hosts[0].req("GET", "/v1/audit", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 4, "nothing refused was half-written: {audit}");

    // The registry's metrics tell the same story: following failed while the database was
    // away, and both hosts have since applied every entry.
    let last: f64 = audit["next"].as_str().unwrap().parse().unwrap();
    for p in &c.hosts {
        assert!(metric(p, "crm_registry_follow_failures_total").await >= 1.0, "the outage is counted");
        eventually("the cursor at the last entry", PROPAGATES, async || metric(p, "crm_registry_cursor").await == last).await;
        assert!(metric(p, "crm_registry_changes_applied_total").await >= 1.0);
    }
}

#[tokio::test]
async fn a_change_nobody_announced_is_found_by_the_poll() {
    let c = Cluster::start(1);
    let a = &c.hosts[0];
    let v1 = deploy(a, component("whoami")).await;
    // The deploy's own notice is taken (the host is at its entry) before the quiet write.
    let cursor = async || a.req("GET", "/healthz?deep=1", None).await.1["cursor"].as_i64();
    eventually("the deploy's notice", PROPAGATES, async || cursor().await == Some(1)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another writer that commits a tenant and its audit entry without NOTIFY, as if the
    // notice had been lost: only the reconciliation poll can find it.
    let db = sqlx::PgPool::connect(&c.pg.url("registry")).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO tenants (id, adapter, project_id, crm_config, pin, updated_at_ms) VALUES ('quiet', 'whoami', '', '{\"region\":\"eu\"}', $1, 0)")
        .bind(&v1)
        .execute(&mut *tx)
        .await
        .unwrap();
    let seq: i64 = sqlx::query_scalar("INSERT INTO audit (at_ms, actor, action, tenant) VALUES (0, 'elsewhere', 'tenant_put', 'quiet') RETURNING seq")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually("the unannounced tenant", PROPAGATES, async || version(a, "quiet").await.as_deref() == Ok("1.0.0")).await;
    let (_, health) = a.req("GET", "/healthz?deep=1", None).await;
    assert_eq!(health["cursor"], seq, "{health}");
}

#[tokio::test]
async fn a_change_built_on_what_another_host_just_removed_is_a_409_conflict() {
    let c = Cluster::start(1);
    let a = &c.hosts[0];
    let v1 = deploy(a, component("whoami")).await;
    deploy(a, component("whoami-v2")).await;
    put_tenant(a, "acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}})).await;
    // Another host removes v1 and tenant acme; this host has not heard yet (no audit entry,
    // no notice), so its own checks pass and the database's constraints refuse.
    let db = sqlx::PgPool::connect(&c.pg.url("registry")).await.unwrap();
    sqlx::query("DELETE FROM adapter_versions WHERE digest = $1").bind(&v1).execute(&db).await.unwrap();
    let (s, out) = a.req("PUT", "/v1/tenants/other", json_body(json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": v1}))).await;
    assert_eq!((s, out["error"]["kind"].clone()), (409, json!("conflict")), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("retry"), "{out}");
    sqlx::query("DELETE FROM tenants WHERE id = 'acme'").execute(&db).await.unwrap();
    let (s, out) = a.req("POST", "/v1/tenants/acme/keys", None).await;
    assert_eq!((s, out["error"]["kind"].clone()), (409, json!("conflict")), "{out}");
    let (_, audit) = a.req("GET", "/v1/audit", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 3, "nothing refused was recorded: {audit}");
}

// ----- inbound events ----------------------------------------------------------------------

fn planfix_message(text: &str) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("cmd", "newMessage"),
        ("providerId", "texter"),
        ("chatId", "chat-1"),
        ("contactPhone", "+972 50-123-4567"),
        ("token", "in-token"),
        ("message", text),
    ] {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

async fn webhook(p: &Proc, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/webhook", p.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn texts(p: &Proc) -> Vec<(i64, String)> {
    let (s, e) = p.req("GET", "/v1/tenants/acme/events", None).await;
    assert_eq!(s, 200, "{e}");
    e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["cursor"].as_str().unwrap().parse().unwrap(), e["text"].as_str().unwrap().to_string()))
        .collect()
}

async fn planfix_cluster() -> Cluster {
    let c = Cluster::start(2);
    let (s, out) = c.hosts[0].req("PUT", "/v1/adapters/planfix", Some(component("planfix"))).await;
    assert_eq!(s, 201, "{out}");
    let config = json!({"planfixUrl": "https://acme.planfix.com", "token": "pf-token", "providerId": "texter", "chatToken": "in-token"});
    put_tenant(&c.hosts[0], "acme", json!({"adapter": "planfix", "crmConfig": config})).await;
    eventually("the tenant on B", PROPAGATES, async || c.hosts[1].req("GET", "/v1/tenants/acme", None).await.0 == 200).await;
    c
}

#[tokio::test]
async fn webhooks_taken_by_either_host_are_one_ordered_log() {
    let c = planfix_cluster().await;
    let [a, b] = &c.hosts[..] else { unreachable!() };
    assert_eq!(webhook(a, planfix_message("one, via A")).await, 200);
    assert_eq!(texts(b).await.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), ["one, via A"], "read on B");
    assert_eq!(webhook(b, planfix_message("two, via B")).await, 200);
    assert_eq!(webhook(a, planfix_message("three, via A")).await, 200);
    let on_a = texts(a).await;
    assert_eq!(on_a, texts(b).await, "the same log, the same cursors, on both hosts");
    assert_eq!(on_a.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), ["one, via A", "two, via B", "three, via A"]);
    assert!(on_a.windows(2).all(|w| w[0].0 < w[1].0), "cursors increase: {on_a:?}");
    // Paging from a cursor taken on A, through B.
    let (_, page) = b.req("GET", &format!("/v1/tenants/acme/events?after={}", on_a[0].0), None).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
}

#[tokio::test]
async fn a_reader_paging_through_one_host_while_both_take_messages_misses_none() {
    let c = Arc::new(planfix_cluster().await);
    let writers: Vec<_> = (0..2)
        .map(|h| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    assert_eq!(webhook(&c.hosts[h], planfix_message(&format!("host {h} message {i}"))).await, 200);
                }
            })
        })
        .collect();
    // Paging from `next` while the writes commit: a cursor that committed out of order would
    // be skipped for good.
    let (mut seen, mut after) = (Vec::new(), "0".to_string());
    let reader = &c.hosts[1];
    let until = Instant::now() + Duration::from_secs(60);
    while seen.len() < 80 {
        assert!(Instant::now() < until, "read {} of 80 messages", seen.len());
        let (s, page) = reader.req("GET", &format!("/v1/tenants/acme/events?after={after}&limit=7"), None).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()));
        after = page["next"].as_str().unwrap().to_string();
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 80, "each message once");
    for h in 0..2 {
        let mine: Vec<&String> = seen.iter().filter(|t| t.starts_with(&format!("host {h} "))).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("host {h} message {i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "each host's messages in the order they were taken");
    }
}

#[tokio::test]
async fn the_same_message_delivered_to_both_hosts_at_once_is_stored_once() {
    let c = planfix_cluster().await;
    let [a, b] = &c.hosts[..] else { unreachable!() };
    for i in 0..10 {
        let body = planfix_message(&format!("message {i}"));
        let (x, y) = tokio::join!(webhook(a, body.clone()), webhook(b, body));
        assert_eq!((x, y), (200, 200), "both deliveries are acknowledged");
    }
    let stored = texts(a).await;
    let expected: Vec<String> = (0..10).map(|i| format!("message {i}")).collect();
    assert_eq!(stored.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(), expected, "each once, in order");
    assert_eq!(texts(b).await, stored);
}

/// An unlabelled series' value on a host's `/metrics`.
async fn metric(p: &Proc, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", p.url)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("{name} not in /metrics"))
}
