//! The host as a durable service, through its HTTP API: restarts, the compile cache,
//! versions (stage, activate, rollback, delete), pins, refused tenants, the audit log,
//! auth, call traces and retries. `whoami` is a test adapter that answers with its own
//! version (1.0.0, or 2.0.0 for whoami-v2), so every call shows which version served it.

use crm_tests::emulator::{Emulator, Fault, Recorded, Reply};
use crm_host::limits::TraceRetention;
use crm_tests::{component, TestHost, TestHostConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-secret-token";

/// A CRM that answers every request with 200 and what it saw.
async fn crm() -> Emulator<()> {
    fn ok(_: &mut (), r: &Recorded) -> Reply {
        (200, json!({"ok": true, "path": r.path}))
    }
    Emulator::start((), ok).await
}

fn config(crm: &Emulator<()>) -> TestHostConfig {
    TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default().routes(&[("crm.test", &crm.url)]) }
}

async fn deploy(host: &TestHost, file: &str, query: &str) -> (u16, Value) {
    host.put_raw(&format!("/v1/adapters/whoami{query}"), component(file)).await
}

async fn whoami_tenant(host: &TestHost, tenant: &str, extra: Value) -> (u16, Value) {
    let mut cfg = json!({"url": "http://crm.test", "token": "tok-SECRET-123"});
    cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    host.put_tenant(tenant, json!({"adapter": "whoami", "crmConfig": cfg})).await
}

async fn version_of(host: &TestHost, tenant: &str) -> String {
    let data = host.complete(tenant, "whoami", json!({"chat": {"id": "c", "phone": "1"}})).await;
    data["version"].as_str().unwrap().to_string()
}

async fn metric(host: &TestHost, prefix: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn state_survives_a_restart_and_the_first_call_needs_no_upload() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (_, v1) = deploy(&host, "whoami", "").await;
    let (_, v2) = deploy(&host, "whoami-v2", "?stage=true").await;
    assert_eq!(v2["state"], "staged");
    host.deploy("plando").await;
    assert_eq!(whoami_tenant(&host, "acme", json!({"region": "eu"})).await.0, 200);
    let (s, _) = host
        .put_tenant("pinned", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": v1["digest"]}))
        .await;
    assert_eq!(s, 200);
    let (s, key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    assert_eq!(s, 201, "{key}");
    let (_, versions_before) = host.get("/v1/adapters/whoami/versions").await;
    let data_dir = host.data_dir.clone();
    drop(host);

    let host = TestHost::start_in(config(&crm), data_dir).await;
    let (_, adapters) = host.get("/v1/adapters").await;
    let names: Vec<&str> = adapters["adapters"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plando", "whoami"]);
    assert_eq!(host.get("/v1/adapters/whoami/versions").await.1, versions_before, "versions, states and pins restored");
    let (_, t) = host.get("/v1/tenants/pinned").await;
    assert_eq!(t["pin"], v1["digest"]);
    // The first call after the restart, with the restored key, no upload in between.
    let (s, out) = host
        .request_as(
            key["key"].as_str(),
            "POST",
            "/v1/tenants/acme/crm/whoami",
            Some(json!({"chat": {"id": "c", "phone": "1"}}).to_string().into_bytes()),
        )
        .await;
    assert_eq!((s, out["crmData"]["version"].clone()), (200, json!("1.0.0")), "{out}");
    // Activating the staged version needs no recompile: it was compiled at start-up.
    let (s, a) = host.post_json("/v1/adapters/whoami/activate", json!({"digest": v2["digest"]})).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(version_of(&host, "acme").await, "2.0.0");
    assert_eq!(version_of(&host, "pinned").await, "1.0.0");
}

#[tokio::test]
async fn restart_uses_the_compile_cache_and_recompiles_a_corrupt_entry() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    assert_eq!(metric(&host, "crm_compile_cache_total{result=\"miss\"}").await, 1.0);
    let data_dir = host.data_dir.clone();
    drop(host);

    let host = TestHost::start_in(config(&crm), data_dir.clone()).await;
    assert_eq!(metric(&host, "crm_compile_cache_total{result=\"hit\"}").await, 1.0, "no recompile after a restart");
    assert_eq!(metric(&host, "crm_compile_cache_total{result=\"miss\"}").await, 0.0);
    assert_eq!(version_of(&host, "acme").await, "1.0.0");
    drop(host);

    let entries: Vec<_> = std::fs::read_dir(data_dir.path().join("compiled")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], bytes).unwrap();

    let host = TestHost::start_in(config(&crm), data_dir).await;
    assert_eq!(metric(&host, "crm_compile_cache_total{result=\"corrupt\"}").await, 1.0, "the corrupt entry was detected");
    assert_eq!(version_of(&host, "acme").await, "1.0.0", "and recompiled");
}

/// The compile cache holds entries of stored versions for this engine build only: a deleted
/// version's entry goes with it, and what another build or an interrupted write left is
/// removed at start-up.
#[tokio::test]
async fn compile_cache_entries_go_with_their_version_and_other_builds() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (_, first) = deploy(&host, "whoami", "").await;
    deploy(&host, "whoami-v2", "").await;
    let cache = host.data_dir.path().join("compiled");
    let entries = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(entries().len(), 2);
    let digest = first["digest"].as_str().unwrap();
    let (s, b) = host.delete(&format!("/v1/adapters/whoami/versions/{digest}")).await;
    assert_eq!(s, 204, "{b}");
    let left = entries();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].starts_with(digest.trim_start_matches("sha256:")), "the deleted version's entry is gone: {left:?}");

    let data_dir = host.data_dir.clone();
    drop(host);
    std::fs::write(cache.join(format!("{}-00000000deadbeef.cwasm", "ab".repeat(32))), b"another engine build").unwrap();
    std::fs::write(cache.join("cd.tmp4242"), b"an interrupted write").unwrap();
    let _host = TestHost::start_in(config(&crm), data_dir).await;
    assert_eq!(entries(), left, "only the stored version's entry stays");
}

/// A call body larger than a recorded body may be is kept as its first 64 KiB, redacted
/// before the cut, like every other recorded body.
#[tokio::test]
async fn a_large_call_body_is_recorded_capped_and_redacted() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    let secret = "tok-SECRET-123";
    let text = format!("{secret} {}", "y".repeat(200 << 10));
    let body = json!({"chat": {"id": "c-1", "phone": "1", "messages": [{"id": "m", "direction": "incoming", "text": text, "timestamp": 1}]}, "params": {"q": secret}});
    let (_, answer, call_id) = host.call_with_id("acme", "lookup", body).await;
    assert_eq!(answer["outcome"], "complete", "{answer}");
    let (_, trace) = host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    assert_eq!(trace["request"], Value::Null, "{}", &trace.to_string()[..300]);
    let recorded = &trace["requestBody"];
    assert_eq!(recorded["truncated"], true);
    assert!(recorded["size"].as_u64().unwrap() > 200 << 10);
    assert_eq!(recorded["data"].as_str().unwrap().len(), 64 << 10);
    assert!(!trace.to_string().contains(secret), "the secret is redacted in the capped request");
}

#[tokio::test]
async fn stage_activate_rollback_and_version_listing() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (s, v1) = deploy(&host, "whoami", "").await;
    assert_eq!(s, 201);
    whoami_tenant(&host, "acme", json!({"region": "eu"})).await;
    let (s, body) = host.post_raw("/v1/adapters/whoami/rollback", vec![]).await;
    assert_eq!((s, body["error"]["kind"].clone()), (409, json!("no_previous_version")), "{body}");

    let (s, v2) = deploy(&host, "whoami-v2", "?stage=true").await;
    assert_eq!((s, v2["state"].clone(), v2["version"].clone()), (201, json!("staged"), json!("2.0.0")));
    assert_eq!(version_of(&host, "acme").await, "1.0.0", "staging does not activate");

    let (_, list) = host.get("/v1/adapters/whoami/versions").await;
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["digest"], v2["digest"], "newest first");
    assert_eq!(versions[0]["state"], "staged");
    assert_eq!(versions[1]["state"], "active");
    assert_eq!(versions[1]["deployedBy"], "admin");
    assert!(versions[1]["deployedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(versions[1]["pinnedTenants"], json!([]));

    let (s, a) = host.post_json("/v1/adapters/whoami/activate", json!({"digest": v2["digest"]})).await;
    assert_eq!((s, a["state"].clone()), (200, json!("active")), "{a}");
    assert_eq!(version_of(&host, "acme").await, "2.0.0");
    let (s, _) = host.post_raw("/v1/adapters/whoami/rollback", vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(version_of(&host, "acme").await, "1.0.0");
    let (_, list) = host.get("/v1/adapters/whoami/versions").await;
    assert_eq!(list["versions"][0]["state"], "inactive", "once activated, a version is no longer staged");
    // Rolling back again returns to the version rolled back from.
    host.post_raw("/v1/adapters/whoami/rollback", vec![]).await;
    assert_eq!(version_of(&host, "acme").await, "2.0.0");

    let (s, e) = host.post_json("/v1/adapters/whoami/activate", json!({"digest": "sha256:00"})).await;
    assert_eq!((s, e["error"]["kind"].clone()), (404, json!("unknown_version")));
    let (s, _) = host.post_json("/v1/adapters/whoami/activate", json!({"version": "1"})).await;
    assert_eq!(s, 400);
    assert_eq!(host.get("/v1/adapters/nope/versions").await.0, 404);
    let _ = v1;
}

#[tokio::test]
async fn pins_hold_a_tenant_on_a_version_and_are_checked() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (_, v1) = deploy(&host, "whoami", "").await;
    let (_, plando) = host.put_raw("/v1/adapters/plando", component("plando")).await;
    whoami_tenant(&host, "free", json!({"region": "eu"})).await;
    let (s, t) = whoami_tenant(&host, "held", json!({"region": "eu", "x": 1})).await;
    assert_eq!(s, 200, "{t}");
    let (s, t) = host
        .put_tenant("held", json!({"adapter": "whoami", "crmConfig": {"url": "http://crm.test", "region": "eu"}, "pin": v1["digest"]}))
        .await;
    assert_eq!((s, t["pin"].clone()), (200, v1["digest"].clone()));

    deploy(&host, "whoami-v2", "").await;
    assert_eq!(version_of(&host, "free").await, "2.0.0");
    assert_eq!(version_of(&host, "held").await, "1.0.0", "the pinned tenant stays");
    let (_, list) = host.get("/v1/adapters/whoami/versions").await;
    assert_eq!(list["versions"][1]["pinnedTenants"], json!(["held"]));

    for (pin, says) in [(json!("sha256:1234"), "not a stored version"), (plando["digest"].clone(), "version of adapter 'plando'")] {
        let (s, e) = host.put_tenant("held", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": pin})).await;
        assert_eq!((s, e["error"]["kind"].clone()), (422, json!("invalid_pin")), "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{e}");
    }
    let (s, _) = host
        .put_tenant("held", json!({"adapter": "whoami", "crmConfig": {"url": "http://crm.test", "region": "eu"}, "pin": null}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(version_of(&host, "held").await, "2.0.0", "unpinned: follows the active version");
}

#[tokio::test]
async fn deleting_versions_is_refused_while_active_or_pinned() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (_, v1) = deploy(&host, "whoami", "").await;
    let (_, v2) = deploy(&host, "whoami-v2", "?stage=true").await;
    host.put_tenant("held", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": v2["digest"]})).await;
    let path = |d: &Value| format!("/v1/adapters/whoami/versions/{}", d.as_str().unwrap());
    let (s, e) = host.delete(&path(&v1["digest"])).await;
    assert_eq!((s, e["error"]["kind"].clone()), (409, json!("version_in_use")), "active: {e}");
    let (s, e) = host.delete(&path(&v2["digest"])).await;
    assert_eq!(s, 409, "pinned: {e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("held"), "{e}");
    host.delete("/v1/tenants/held").await;
    assert_eq!(host.delete(&path(&v2["digest"])).await.0, 204);
    let (_, list) = host.get("/v1/adapters/whoami/versions").await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 1);
    assert_eq!(host.delete(&path(&v2["digest"])).await.0, 404);
}

#[tokio::test]
async fn a_version_that_refuses_existing_tenants_is_refused_unless_staged_or_forced() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "has-region", json!({"region": "eu"})).await;
    whoami_tenant(&host, "no-region", json!({})).await;

    let (s, e) = deploy(&host, "whoami-v2", "").await;
    assert_eq!((s, e["error"]["kind"].clone()), (409, json!("invalid_tenants")), "{e}");
    assert_eq!(
        e["error"]["invalidTenants"],
        json!([{"tenant": "no-region", "field": "region", "message": "crmConfig.region: is required since 2.0.0"}])
    );
    assert_eq!(version_of(&host, "no-region").await, "1.0.0", "nothing changed");
    assert_eq!(host.get("/v1/adapters/whoami/versions").await.1["versions"].as_array().unwrap().len(), 1);

    let (s, staged) = deploy(&host, "whoami-v2", "?stage=true").await;
    assert_eq!((s, staged["state"].clone()), (201, json!("staged")));
    assert_eq!(staged["invalidTenants"][0]["tenant"], "no-region");
    let (s, e) = host.post_json("/v1/adapters/whoami/activate", json!({"digest": staged["digest"]})).await;
    assert_eq!((s, e["error"]["kind"].clone()), (409, json!("invalid_tenants")));

    let (s, forced) = deploy(&host, "whoami-v2", "?force=true").await;
    assert_eq!((s, forced["state"].clone()), (201, json!("active")), "{forced}");
    assert_eq!(forced["invalidTenants"][0]["tenant"], "no-region");
    assert_eq!(version_of(&host, "has-region").await, "2.0.0");
}

#[tokio::test]
async fn the_audit_log_lists_every_change_with_actor_and_digest() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    let (_, v1) = deploy(&host, "whoami", "").await;
    let (_, v2) = deploy(&host, "whoami-v2", "?stage=true").await;
    host.post_json("/v1/adapters/whoami/activate", json!({"digest": v2["digest"]})).await;
    host.post_raw("/v1/adapters/whoami/rollback", vec![]).await;
    whoami_tenant(&host, "acme", json!({"region": "eu"})).await;
    host.put_tenant("acme", json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": v1["digest"]})).await;
    let (_, key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    host.delete(&format!("/v1/tenants/acme/keys/{}", key["keyId"].as_str().unwrap())).await;
    host.delete("/v1/tenants/acme").await;

    let (s, log) = host.get("/v1/audit").await;
    assert_eq!(s, 200);
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["deploy", "stage", "activate", "rollback", "tenant_put", "pin", "key_issued", "key_revoked", "tenant_delete"]
    );
    assert!(entries.iter().all(|e| e["actor"] == "admin" && e["at"].as_str().unwrap().ends_with('Z')));
    assert_eq!(entries[0]["digest"], v1["digest"]);
    assert_eq!(entries[2]["digest"], v2["digest"]);
    assert_eq!(entries[3]["digest"], v1["digest"], "rollback names the version it re-activated");
    assert!(!log.to_string().contains(key["key"].as_str().unwrap()), "keys never appear in the log");
    // Cursors: read on from the fourth entry.
    let cursor = entries[3]["cursor"].as_str().unwrap();
    let (_, rest) = host.get(&format!("/v1/audit?after={cursor}")).await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 5);
    let (_, none) = host.get(&format!("/v1/audit?after={}", log["next"].as_str().unwrap())).await;
    assert_eq!(none["entries"], json!([]));
    assert_eq!(none["next"], log["next"]);
}

#[tokio::test]
async fn auth_on_every_endpoint() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    whoami_tenant(&host, "other", json!({})).await;
    let (_, acme_key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    let (_, other_key) = host.post_raw("/v1/tenants/other/keys", vec![]).await;
    let acme_key = acme_key["key"].as_str().unwrap().to_string();
    let other_key = other_key["key"].as_str().unwrap().to_string();
    let call_body = Some(json!({"chat": {"id": "c", "phone": "1"}}).to_string().into_bytes());

    let admin_endpoints: &[(&str, &str)] = &[
        ("GET", "/v1/adapters"),
        ("GET", "/v1/adapters/whoami"),
        ("PUT", "/v1/adapters/whoami"),
        ("GET", "/v1/adapters/whoami/versions"),
        ("DELETE", "/v1/adapters/whoami/versions/sha256:00"),
        ("POST", "/v1/adapters/whoami/activate"),
        ("POST", "/v1/adapters/whoami/rollback"),
        ("GET", "/v1/tenants/acme"),
        ("PUT", "/v1/tenants/acme"),
        ("DELETE", "/v1/tenants/acme"),
        ("POST", "/v1/tenants/acme/keys"),
        ("DELETE", "/v1/tenants/acme/keys/k"),
        ("GET", "/v1/tenants/acme/calls"),
        ("GET", "/v1/tenants/acme/calls/c"),
        ("GET", "/v1/audit"),
    ];
    for (method, path) in admin_endpoints {
        let (s, e) = host.request_as(None, method, path, None).await;
        assert_eq!((s, e["error"]["kind"].clone()), (401, json!("unauthorized")), "{method} {path} without a token");
        assert_eq!(host.request_as(Some("wrong"), method, path, None).await.0, 401, "{method} {path} with a wrong token");
        let (s, e) = host.request_as(Some(&acme_key), method, path, None).await;
        assert_eq!((s, e["error"]["kind"].clone()), (403, json!("forbidden")), "{method} {path} with a tenant key");
    }
    // The admin passes auth everywhere (read-only ones answer 200).
    for path in ["/v1/adapters", "/v1/adapters/whoami", "/v1/adapters/whoami/versions", "/v1/tenants/acme", "/v1/tenants/acme/calls", "/v1/audit"] {
        assert_eq!(host.request_as(Some(ADMIN), "GET", path, None).await.0, 200, "GET {path} as admin");
    }

    let call = "/v1/tenants/acme/crm/whoami";
    assert_eq!(host.request_as(None, "POST", call, call_body.clone()).await.0, 401);
    assert_eq!(host.request_as(Some("crmk_0000_bogus"), "POST", call, call_body.clone()).await.0, 401);
    assert_eq!(host.request_as(Some(&other_key), "POST", call, call_body.clone()).await.0, 403, "another tenant's key");
    assert_eq!(host.request_as(Some(&acme_key), "POST", call, call_body.clone()).await.0, 200, "the tenant's own key");
    assert_eq!(host.request_as(Some(ADMIN), "POST", call, call_body.clone()).await.0, 200, "the admin");

    let key_id = acme_key.split('_').nth(1).unwrap();
    assert_eq!(host.delete(&format!("/v1/tenants/acme/keys/{key_id}")).await.0, 204);
    assert_eq!(host.request_as(Some(&acme_key), "POST", call, call_body).await.0, 401, "a revoked key");

    assert_eq!(host.request_as(None, "GET", "/healthz", None).await.0, 200);
    let metrics = reqwest::get(format!("{}/metrics", host.url)).await.unwrap();
    assert_eq!(metrics.status(), 200, "metrics need no token");
}

#[tokio::test]
async fn calls_are_traced_with_every_exchange_and_secrets_redacted() {
    let crm = crm().await;
    let host = TestHost::start_config(TestHostConfig { traces: TraceRetention { calls: 3, ..TraceRetention::DEFAULT }, ..config(&crm) }).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;

    let body = json!({"chat": {"id": "c-1", "phone": "972501234567"}, "params": {"q": "tok-SECRET-123"}});
    let (_, answer, call_id) = host.call_with_id("acme", "lookup", body).await;
    assert_eq!(answer["outcome"], "complete", "{answer}");
    let sent = crm.requests_to("/lookup");
    assert_eq!(sent[0].header("authorization"), Some("Bearer tok-SECRET-123"), "the CRM did get the secret");
    assert!(
        sent[0].headers.iter().all(|(k, v)| !k.contains("trace") && !k.contains("call-id") && !v.contains(&call_id)),
        "the call id stays inside the platform: {:?}",
        sent[0].headers
    );

    let (s, trace) = host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    assert_eq!(s, 200, "{trace}");
    assert_eq!(trace["callId"], call_id.as_str());
    assert_eq!(trace["funcId"], "lookup");
    assert_eq!(trace["version"], "1.0.0");
    assert_eq!(trace["request"]["chat"]["id"], "c-1", "the chat as received");
    assert_eq!(trace["request"]["params"]["q"], "[redacted]", "a secret value is redacted wherever it appears");
    assert_eq!(trace["outcome"], "complete");
    assert_eq!(trace["crmData"]["version"], "1.0.0");
    let out = &trace["outbound"][0];
    assert_eq!(out["method"], "POST");
    assert_eq!(out["url"], "http://crm.test/lookup");
    assert_eq!(out["routedTo"], format!("{}/lookup", crm.url));
    assert_eq!(out["status"], 200);
    assert_eq!(out["attempt"], 1);
    assert!(out["requestHeaders"].as_array().unwrap().contains(&json!(["authorization", "Bearer [redacted]"])), "{out}");
    assert_eq!(out["responseBody"]["encoding"], "utf8");
    assert_eq!(serde_json::from_str::<Value>(out["responseBody"]["data"].as_str().unwrap()).unwrap()["path"], "/lookup");
    assert!(out["durationMs"].as_f64().unwrap() > 0.0);
    assert!(!trace.to_string().contains("tok-SECRET-123"));

    // A failure is traced too; retention keeps the newest 3.
    for _ in 0..4 {
        host.call("acme", "nope", json!({"chat": {"id": "c", "phone": "1"}})).await;
    }
    let (_, list) = host.get("/v1/tenants/acme/calls?limit=10").await;
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{list}");
    assert!(calls.iter().all(|c| c["funcId"] == "nope" && c["outcome"] == "failure" && c["errorKind"] == "unsupported"));
    let (s, e) = host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    assert_eq!((s, e["error"]["kind"].clone()), (404, json!("unknown_call")), "the oldest call was dropped");
    assert_eq!(host.get("/v1/tenants/ghost/calls").await.0, 404);
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_5xx_and_connection_errors_until_they_succeed() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    let chat = json!({"chat": {"id": "c", "phone": "1"}});

    crm.fault("/lookup", Fault::Times(2, Box::new(Fault::Status(503, "busy".into()))));
    let (_, out, call_id) = host.call_with_id("acme", "lookup", chat.clone()).await;
    assert_eq!(out["outcome"], "complete", "{out}");
    assert_eq!(crm.requests_to("/lookup").len(), 3, "two 503s, then success");
    let (_, trace) = host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    let attempts: Vec<(Value, Value)> =
        trace["outbound"].as_array().unwrap().iter().map(|e| (e["attempt"].clone(), e["status"].clone())).collect();
    assert_eq!(attempts, [(json!(1), json!(503)), (json!(2), json!(503)), (json!(3), json!(200))]);
    // crm.test is the tenant's endpoint field: metrics do not name it.
    assert_eq!(metric(&host, "crm_outbound_retries_total{adapter=\"whoami\",host=\"endpoint\",reason=\"503\"}").await, 2.0);
    assert_eq!(metric(&host, "crm_outbound_requests_total{adapter=\"whoami\",host=\"endpoint\",status=\"503\"}").await, 2.0);

    // More failures than attempts: the last answer reaches the adapter.
    crm.fault("/lookup", Fault::Times(5, Box::new(Fault::Status(502, "down".into()))));
    let e = host.failure("acme", "lookup", chat.clone()).await;
    assert_eq!((e["kind"].clone(), e["status"].clone()), (json!("upstream"), json!(502)));
    assert_eq!(crm.requests_to("/lookup").len(), 6, "3 attempts in all");
    crm.clear_faults();

    // A GET is idempotent by default; a refused connection is retried too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dead_host = TestHost::start_config(TestHostConfig {
        admin_token: Some(ADMIN.into()),
        ..TestHostConfig::default().routes(&[("crm.test", &dead)])
    })
    .await;
    deploy(&dead_host, "whoami", "").await;
    whoami_tenant(&dead_host, "acme", json!({})).await;
    let (_, out, call_id) = dead_host.call_with_id("acme", "whoami", chat.clone()).await;
    assert_eq!(out["error"]["kind"], "transport", "{out}");
    let (_, trace) = dead_host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    let errors: Vec<&str> = trace["outbound"].as_array().unwrap().iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 3, "{trace}");
    assert!(errors.iter().all(|e| e.contains("ConnectionRefused")), "{errors:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_deadline_and_creates_are_never_retried() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    let chat = json!({"chat": {"id": "c", "phone": "1"}});

    let limited = |after: &str| Fault::StatusHeaders(429, vec![("retry-after".into(), after.into())], "slow down".into());
    crm.fault("/lookup", Fault::Times(1, Box::new(limited("1"))));
    let started = Instant::now();
    assert_eq!(host.complete("acme", "lookup", chat.clone()).await["status"], 200);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as Retry-After asked: {:?}", started.elapsed());
    assert_eq!(crm.requests_to("/lookup").len(), 2);

    // Waiting 60 s would pass the call's 5 s deadline: no retry, the adapter sees the 429.
    crm.fault("/lookup", Fault::Times(1, Box::new(limited("60"))));
    let started = Instant::now();
    let e = host.failure("acme", "lookup", chat.clone()).await;
    assert_eq!((e["kind"].clone(), e["retryAfterMs"].clone()), (json!("rate_limited"), json!(60000)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(crm.requests_to("/lookup").len(), 3);

    // Waits too long for the clock (seconds of any size, dates of any year) are clamped: no
    // retry, no panic, the adapter sees the 429.
    for (i, after) in ["10000000000000000000", "Fri, 31 Dec 9999 23:59:59 GMT"].into_iter().enumerate() {
        crm.fault("/lookup", Fault::Times(1, Box::new(limited(after))));
        let e = host.failure("acme", "lookup", chat.clone()).await;
        assert_eq!(e["kind"], "rate_limited", "Retry-After: {after}: {e}");
        assert_eq!(crm.requests_to("/lookup").len(), 4 + i, "Retry-After: {after}: not retried");
    }

    // A create is not idempotent: one attempt, whatever the CRM says.
    crm.fault("/create", Fault::Times(1, Box::new(Fault::Status(503, "busy".into()))));
    let e = host.failure("acme", "create", chat.clone()).await;
    assert_eq!((e["kind"].clone(), e["status"].clone()), (json!("upstream"), json!(503)));
    assert_eq!(crm.requests_to("/create").len(), 1, "never retried");
    let sent = crm.requests_to("/lookup");
    assert!(sent.iter().all(|r| r.header("x-crm-idempotent").is_none()), "the marker never reaches the CRM");
}

/// 32 clients call continuously while the adapter is deployed, activated and rolled back.
/// Every response is counted: none may fail, and every call that starts after a switch
/// has answered sees the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_deploy_activate_and_rollback_under_load_lose_no_call() {
    let crm = crm().await;
    // 32 clients of one tenant: admission must not be what this test measures.
    let limits = crm_host::Limits { max_concurrent_calls_per_tenant: 64, ..crm_tests::test_limits() };
    let host = Arc::new(TestHost::start_config(TestHostConfig { limits, ..config(&crm) }).await);
    let (_, v1) = deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({"region": "eu"})).await;
    let (_, v2) = deploy(&host, "whoami-v2", "?stage=true").await;

    // The switches, in order, and the version each one makes active.
    let switches: Vec<(&str, String, &str)> = vec![
        ("POST", "/v1/adapters/whoami/activate".into(), "2.0.0"),
        ("POST", "/v1/adapters/whoami/rollback".into(), "1.0.0"),
        ("PUT", "/v1/adapters/whoami?force=true".into(), "2.0.0"),
        ("POST", "/v1/adapters/whoami/rollback".into(), "1.0.0"),
    ];
    // versions[i]: what is active once i switches are done.
    let versions: Vec<&str> = std::iter::once("1.0.0").chain(switches.iter().map(|s| s.2)).collect();
    // (switches started, switches done)
    let progress = Arc::new(std::sync::Mutex::new((0usize, 0usize)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (host, progress, stop) = (host.clone(), progress.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let done_before = progress.lock().unwrap().1;
                let (status, out) = host.call("acme", "whoami", json!({"chat": {"id": "c", "phone": "1"}})).await;
                let started_after = progress.lock().unwrap().0;
                seen.push((done_before, started_after, status, out));
            }
            seen
        }));
    }
    for (method, path, expect) in &switches {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let body = if method == &"PUT" { component("whoami-v2") } else { json!({"digest": v2["digest"]}).to_string().into_bytes() };
        progress.lock().unwrap().0 += 1;
        let (s, out) = host.request_as(Some(ADMIN), method, path, Some(body)).await;
        assert!(s == 200 || s == 201, "{path}: {out}");
        assert_eq!(out["version"], *expect, "{out}");
        progress.lock().unwrap().1 += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut total = 0;
    let mut quiet_per_phase = vec![0usize; versions.len()];
    for c in clients {
        for (done_before, started_after, status, out) in c.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["outcome"], "complete", "{out}");
            // The version must have been active at some moment of the call.
            let got = out["crmData"]["version"].as_str().unwrap();
            assert!(versions[done_before..=started_after].contains(&got), "calls between {done_before} and {started_after} switches got {got}");
            if done_before == started_after {
                // No switch in flight at any moment of this call: exactly the active one.
                assert_eq!(got, versions[done_before], "a call after switch {done_before} answered");
                quiet_per_phase[done_before] += 1;
            }
        }
    }
    assert!(quiet_per_phase.iter().all(|n| *n > 0), "calls ran in every phase: {quiet_per_phase:?}");
    assert!(total > 100, "{total} calls");
    let _ = v1;
}

/// A call in flight keeps the version it started with while the next call already runs
/// the new one: the overlap, seen from both sides.
#[tokio::test]
async fn a_call_in_flight_finishes_on_its_version_while_new_calls_run_the_new_one() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "slow", json!({"url": "http://crm.test/slow", "region": "eu"})).await;
    whoami_tenant(&host, "fast", json!({"region": "eu"})).await;
    crm.fault("/slow", Fault::Delay(Duration::from_millis(1000)));

    let slow = host.call("slow", "whoami", json!({"chat": {"id": "c", "phone": "1"}}));
    let switch_then_call = async {
        // Wait until the slow call is inside the CRM request.
        while crm.requests_to("/slow").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (s, d) = deploy(&host, "whoami-v2", "").await;
        assert_eq!(s, 201, "{d}");
        let fast = version_of(&host, "fast").await;
        (fast, crm.requests_to("/slow").len())
    };
    let ((status, slow_out), (fast_version, slow_requests)) = tokio::join!(slow, switch_then_call);
    assert_eq!(fast_version, "2.0.0", "a call after the deploy runs the new version");
    assert_eq!(slow_requests, 1, "while the old call was still in flight");
    assert_eq!(status, 200);
    assert_eq!(slow_out["crmData"]["version"], "1.0.0", "the call in flight finished on its version: {slow_out}");
}

/// A tenant's keys go with it: after a delete, its key is refused (401, not a 404 that
/// says the key was taken), and a tenant created again under the same id does not take the
/// old key back.
#[tokio::test]
async fn a_deleted_tenants_keys_die_with_it() {
    let crm = crm().await;
    let host = TestHost::start_config(config(&crm)).await;
    deploy(&host, "whoami", "").await;
    whoami_tenant(&host, "acme", json!({})).await;
    let (s, key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    assert_eq!(s, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let call = json!({"chat": {"id": "c", "phone": "1"}}).to_string().into_bytes();
    assert_eq!(host.request_as(Some(&key), "POST", "/v1/tenants/acme/crm/whoami", Some(call.clone())).await.0, 200);
    assert_eq!(host.delete("/v1/tenants/acme").await.0, 204);
    assert_eq!(host.request_as(Some(&key), "POST", "/v1/tenants/acme/crm/whoami", Some(call.clone())).await.0, 401);
    whoami_tenant(&host, "acme", json!({})).await;
    let (s, out) = host.request_as(Some(&key), "POST", "/v1/tenants/acme/crm/whoami", Some(call)).await;
    assert_eq!(s, 401, "the old key works on the new tenant: {out}");
}
