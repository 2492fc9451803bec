//! Canary rollouts through the real host: the share of tenants and its stability as it grows,
//! the automatic rollback of a candidate that fails more, promote and stop, and a restart.
//! `whoami` says which version served each call (2.0.0 needs a `region` its tenants may lack);
//! `replayee`'s `extra` variant makes a request the base does not, which the CRM can fail.

use crm_tests::emulator::{Emulator, Fault, Recorded, Reply};
use crm_tests::{component, TestHost, TestHostConfig};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

const ADMIN: &str = "admin-secret-token";

async fn host_with(routes: &[(&str, &str)]) -> TestHost {
    TestHost::start_config(TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default().routes(routes) }).await
}

async fn deploy(host: &TestHost, adapter: &str, file: &str, query: &str) -> String {
    let (s, b) = host.put_raw(&format!("/v1/adapters/{adapter}{query}"), component(file)).await;
    assert_eq!(s, 201, "deploy {file}: {b}");
    b["digest"].as_str().unwrap().to_string()
}

async fn version(host: &TestHost, tenant: &str) -> String {
    let data = host.complete(tenant, "whoami", json!({"chat": {"id": "c", "phone": "1"}})).await;
    data["version"].as_str().unwrap().to_string()
}

/// `n` whoami tenants with a region (and so valid for 2.0.0), and `refused` without one.
async fn whoami_tenants(host: &TestHost, n: usize, refused: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n + refused {
        let id = format!("t{i:03}");
        let config = if i < n { json!({"region": "eu"}) } else { json!({}) };
        let (s, b) = host.put_tenant(&id, json!({"adapter": "whoami", "crmConfig": config})).await;
        assert_eq!(s, 200, "{b}");
        ids.push(id);
    }
    ids
}

async fn on_candidate(host: &TestHost, tenants: &[String]) -> BTreeSet<String> {
    let mut inside = BTreeSet::new();
    for t in tenants {
        if version(host, t).await == "2.0.0" {
            inside.insert(t.clone());
        }
    }
    inside
}

#[tokio::test]
async fn the_share_of_tenants_matches_the_percentage_and_only_grows() {
    let host = host_with(&[]).await;
    deploy(&host, "whoami", "whoami", "").await;
    let v2 = deploy(&host, "whoami", "whoami-v2", "?stage=true").await;
    let tenants = whoami_tenants(&host, 300, 5).await;
    let (s, pinned) = host
        .put_tenant(
            "pinned",
            json!({"adapter": "whoami", "crmConfig": {"region": "eu"}, "pin": deploy(&host, "whoami", "whoami", "").await}),
        )
        .await;
    assert_eq!(s, 200, "{pinned}");

    let (s, started) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 20})).await;
    assert_eq!(s, 201, "{started}");
    assert_eq!((started["state"].as_str(), started["version"].as_str()), (Some("running"), Some("2.0.0")));
    let refused: Vec<&str> = started["invalidTenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    assert_eq!(refused, ["t300", "t301", "t302", "t303", "t304"], "{started}");
    assert_eq!(started["excluded"], json!(refused));

    let at20 = on_candidate(&host, &tenants).await;
    let count = started["tenants"]["count"].as_u64().unwrap() as usize;
    assert_eq!(at20.len(), count, "the status counts the tenants whose calls run the candidate");
    // 300 draws at 20%: 4 standard deviations is about 28 tenants.
    assert!((32..=88).contains(&count), "{count} of 300 at 20%");
    assert!(at20.iter().all(|t| t < &"t300".to_string()), "refused tenants are never selected: {at20:?}");
    assert_eq!(version(&host, "pinned").await, "1.0.0", "pinned tenants stay pinned");

    let (s, grown) =
        host.request_as(Some(ADMIN), "PATCH", "/v1/adapters/whoami/canary", Some(json!({"percent": 60}).to_string().into_bytes())).await;
    assert_eq!((s, grown["percent"].as_u64()), (200, Some(60)), "{grown}");
    let at60 = on_candidate(&host, &tenants).await;
    assert!(at20.is_subset(&at60), "growing the share dropped tenants: {:?}", at20.difference(&at60).collect::<Vec<_>>());
    assert!((130..=230).contains(&at60.len()), "{} of 300 at 60%", at60.len());
    let (_, status) = host.get("/v1/adapters/whoami/canary").await;
    assert_eq!(status["canary"]["calls"].as_u64(), Some((at20.len() + at60.len()) as u64), "{status}");
    assert_eq!(status["tenants"]["first"].as_array().unwrap().len(), 100, "the first page");
}

/// A CRM whose contact notes fail: only the `extra` candidate asks for them.
async fn crm() -> Emulator<()> {
    fn handle(_: &mut (), r: &Recorded) -> Reply {
        match r.path.as_str() {
            "/contacts" => (200, json!({"id": 1, "name": "Dana"})),
            _ => (200, json!([])),
        }
    }
    Emulator::start((), handle).await
}

#[tokio::test]
async fn a_candidate_that_fails_more_rolls_back_by_itself() {
    let crm = crm().await;
    crm.fault("/contacts/1/notes", Fault::Status(500, "notes are down".into()));
    let host = host_with(&[("crm.test", &crm.url)]).await;
    deploy(&host, "replayee", "replayee", "").await;
    let extra = deploy(&host, "replayee", "replayee-extra", "?stage=true").await;
    let tenants: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    for t in &tenants {
        let (s, b) = host.put_tenant(t, json!({"adapter": "replayee", "crmConfig": {"url": "http://crm.test", "key": "k"}})).await;
        assert_eq!(s, 200, "{b}");
    }
    let body = json!({"digest": extra, "percent": 50, "minCalls": 5, "maxFailureRateIncrease": 0.1});
    let (s, started) = host.post_json("/v1/adapters/replayee/canary", body).await;
    assert_eq!(s, 201, "{started}");
    let inside: Vec<String> = started["tenants"]["first"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    assert!(inside.len() >= 6, "{started}");
    let outside: Vec<&String> = tenants.iter().filter(|t| !inside.contains(t)).collect();
    let lookup = json!({"chat": {"id": "c", "phone": "1"}, "params": {"phone": "1"}});
    for t in &outside[..5] {
        host.complete(t, "lookup", lookup.clone()).await;
    }
    // Five canary calls fail (upstream): 100% against 0%, over the bound at minCalls.
    for t in &inside[..5] {
        assert_eq!(host.failure(t, "lookup", lookup.clone()).await["kind"], "upstream");
    }
    let (_, status) = host.get("/v1/adapters/replayee/canary").await;
    assert_eq!(status["state"], "rolled_back", "{status}");
    assert!(status["reason"].as_str().unwrap().contains("100.0%"), "{status}");
    assert_eq!(status["tenants"]["count"], 0);
    // The canary tenants' next calls run the active version, which asks no notes.
    let notes_before = crm.requests_to("/contacts/1/notes").len();
    for t in &inside {
        let data = host.complete(t, "lookup", lookup.clone()).await;
        assert!(data.get("notes").is_none(), "{t} still runs the candidate: {data}");
    }
    assert_eq!(crm.requests_to("/contacts/1/notes").len(), notes_before);
    // Recorded: the audit log and the metric.
    let mut ended = None;
    for _ in 0..50 {
        let (_, audit) = host.get("/v1/audit").await;
        ended = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "canary_end").cloned();
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ended = ended.expect("an audit entry for the rollback");
    assert_eq!((ended["actor"].as_str(), ended["detail"]["state"].as_str()), (Some("canary"), Some("rolled_back")), "{ended}");
    let metrics = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"crm_canaries_ended_total{adapter="replayee",state="rolled_back"} 1"#), "{metrics}");
    let (s, e) = host.request_as(Some(ADMIN), "PATCH", "/v1/adapters/replayee/canary", Some(br#"{"percent": 80}"#.to_vec())).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (409, Some("conflict")), "an ended canary does not change: {e}");
}

#[tokio::test]
async fn promote_and_stop() {
    let host = host_with(&[]).await;
    let v1 = deploy(&host, "whoami", "whoami", "").await;
    let v2 = deploy(&host, "whoami", "whoami-v2", "?stage=true").await;
    let tenants = whoami_tenants(&host, 30, 0).await;

    let (s, _) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 30})).await;
    assert_eq!(s, 201);
    let (s, e) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 30})).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (409, Some("conflict")), "one canary at a time: {e}");
    let (s, e) = host.delete(&format!("/v1/adapters/whoami/versions/{v2}")).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (409, Some("version_in_use")), "{e}");
    let (s, stopped) = host.delete("/v1/adapters/whoami/canary").await;
    assert_eq!((s, stopped["state"].as_str()), (200, Some("stopped")), "{stopped}");
    assert!(on_candidate(&host, &tenants).await.is_empty(), "after stop, every tenant runs the active version");

    let (s, _) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 10})).await;
    assert_eq!(s, 201);
    let (s, promoted) = host.post_json("/v1/adapters/whoami/canary/promote", json!({})).await;
    assert_eq!((s, promoted["state"].as_str()), (200, Some("promoted")), "{promoted}");
    assert_eq!(on_candidate(&host, &tenants).await.len(), 30, "promoted: every tenant");
    assert_eq!(host.get("/v1/adapters/whoami").await.1["digest"], v2);
    let (s, e) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 10})).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (400, Some("bad_request")), "the active version is no candidate: {e}");
    let (s, e) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v1, "percent": 0})).await;
    assert!(s == 400 && e["error"]["message"].as_str().unwrap().contains("percent"), "{e}");
    let (s, e) = host.get("/v1/adapters/plando/canary").await;
    assert_eq!((s, e["error"]["kind"].as_str()), (404, Some("unknown_canary")), "{e}");
}

#[tokio::test]
async fn a_running_canary_survives_a_restart() {
    let data_dir;
    let (id, inside) = {
        let host = host_with(&[]).await;
        data_dir = host.data_dir.clone();
        deploy(&host, "whoami", "whoami", "").await;
        let v2 = deploy(&host, "whoami", "whoami-v2", "?stage=true").await;
        let tenants = whoami_tenants(&host, 40, 0).await;
        let (s, started) = host.post_json("/v1/adapters/whoami/canary", json!({"digest": v2, "percent": 50})).await;
        assert_eq!(s, 201);
        let inside = on_candidate(&host, &tenants).await;
        // As `crm-host serve` does when it stops.
        host.host.flush_traces().await;
        (started["id"].clone(), inside)
    };
    let config = TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default() };
    let host = TestHost::start_in(config, Arc::clone(&data_dir)).await;
    let (_, status) = host.get("/v1/adapters/whoami/canary").await;
    assert_eq!((status["id"].clone(), status["state"].as_str()), (id, Some("running")), "{status}");
    assert_eq!(status["canary"]["calls"].as_u64(), Some(inside.len() as u64), "counted again from the recorded calls: {status}");
    let tenants: Vec<String> = (0..40).map(|i| format!("t{i:03}")).collect();
    assert_eq!(on_candidate(&host, &tenants).await, inside, "the same tenants after the restart");
}

#[tokio::test]
async fn the_cli_starts_watches_grows_and_stops_a_canary() {
    let host = host_with(&[]).await;
    deploy(&host, "whoami", "whoami", "").await;
    let v2 = deploy(&host, "whoami", "whoami-v2", "?stage=true").await;
    whoami_tenants(&host, 10, 1).await;
    let url = host.url.clone();
    let cli = |args: &[&str]| {
        let mut all: Vec<String> = ["--server", url.as_str(), "--token", ADMIN, "canary"].iter().map(|s| s.to_string()).collect();
        all.extend(args.iter().map(|s| s.to_string()));
        async move {
            // Async: the host under test serves on this test's runtime.
            let out = tokio::process::Command::new(crate::host_bin()).args(&all).output().await.expect("run crm-host");
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
        }
    };
    let (code, out) = cli(&["start", "whoami", &v2, "--percent", "30", "--min-calls", "10"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2.0.0") && out.contains("30% of tenants: running") && out.contains("never selected (config refused): t010"),
        "{out}"
    );
    let (code, out) = cli(&["set", "whoami", "--percent", "70"]).await;
    assert!(code == Some(0) && out.contains("70%"), "{out}");
    let (code, out) = cli(&["status", "whoami"]).await;
    assert!(code == Some(0) && out.contains("canary:   0 calls") && out.contains("baseline: 0 calls"), "{out}");
    let (code, out) = cli(&["stop", "whoami"]).await;
    assert!(code == Some(0) && out.contains("stopped (stopped by admin)"), "{out}");
    let (code, out) = cli(&["set", "whoami", "--percent", "80"]).await;
    assert!(code == Some(1) && out.contains("409 conflict"), "{out}");
}
