//! Replay of recorded calls against a candidate version, through the real host and the
//! `replayee` fixture (one mapping, and variants that keep, rename, add to or fix it).
//! Recordings are made by live calls to an emulator; replays must never reach it.

use crm_tests::emulator::{Emulator, Recorded, Reply};
use crm_tests::plando;
use crm_tests::{component, TestHost, TestHostConfig};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-token";
const KEY: &str = "k3y-SECRET-value";

/// A CRM with three contacts by phone; `000` has no name (the base version fails on it).
async fn crm() -> Emulator<()> {
    fn handle(_: &mut (), r: &Recorded) -> Reply {
        let phone = r.form().into_iter().find(|(k, _)| k == "phone").map(|(_, v)| v).unwrap_or_default();
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/contacts") if r.form().iter().any(|(k, v)| k == "key" && v == KEY) => match phone.as_str() {
                "111" => (200, json!({"id": 1, "name": "Dana"})),
                "222" => (200, json!({"id": 2, "name": "Noa"})),
                "000" => (200, json!({"id": 0, "name": null})),
                _ => (404, json!({"error": "no such contact"})),
            },
            ("POST", "/contacts") => (401, json!({"error": "bad key"})),
            _ => (200, json!(["a note"])),
        }
    }
    Emulator::start((), handle).await
}

/// A host with `replayee` 1.0.0 active, tenants `t1` and `t2`, and recorded calls: two
/// lookups that complete, one that fails, one stamp per tenant.
async fn recorded() -> (TestHost, Emulator<()>) {
    let crm = crm().await;
    let host = TestHost::start_config(TestHostConfig {
        admin_token: Some(ADMIN.into()),
        ..TestHostConfig::default().routes(&[("crm.test", &crm.url)])
    })
    .await;
    deploy(&host, "replayee", "").await;
    for t in ["t1", "t2"] {
        let (s, b) = host.put_tenant(t, json!({"adapter": "replayee", "crmConfig": {"url": "http://crm.test", "key": KEY}})).await;
        assert_eq!(s, 200, "{b}");
    }
    host.complete("t1", "lookup", lookup("111")).await;
    host.complete("t2", "lookup", lookup("222")).await;
    assert_eq!(host.failure("t1", "lookup", lookup("000")).await["kind"], "not_found");
    let stamped = host.complete("t1", "stamp", json!({"chat": {}})).await;
    let now = crm_host::service::now_ms() as u64;
    let seen = stamped["seenAt"].as_u64().unwrap();
    assert!(seen <= now && now - seen < 10_000, "the wall clock reads the call's time: {seen} vs {now}");
    crm.forget_requests();
    (host, crm)
}

fn lookup(phone: &str) -> Value {
    json!({"chat": {"id": "c1", "phone": phone}, "params": {"phone": phone}})
}

async fn deploy(host: &TestHost, file: &str, query: &str) -> Value {
    let (s, b) = host.put_raw(&format!("/v1/adapters/replayee{query}"), component(file)).await;
    assert_eq!(s, 201, "deploy {file}{query}: {b}");
    b
}

async fn replay(host: &TestHost, digest: &str, body: Value) -> Value {
    let (s, report) = host.post_json(&format!("/v1/adapters/replayee/versions/{digest}/replay"), body).await;
    assert_eq!(s, 200, "{report}");
    report
}

/// `(funcId, status)` of every result, newest call first.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["funcId"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
        .collect()
}

fn count(report: &Value, status: &str) -> usize {
    report["results"].as_array().unwrap().iter().filter(|r| r["status"] == status).count()
}

#[tokio::test]
async fn a_candidate_that_behaves_the_same_replays_same_offline_and_random_values_are_noise() {
    let (host, crm) = recorded().await;
    let staged = deploy(&host, "replayee-same", "?stage=true").await;
    let report = replay(&host, staged["digest"].as_str().unwrap(), json!({})).await;
    assert_eq!(report["calls"], 4, "{report}");
    assert_eq!(report["verdict"], "pass", "{report}");
    assert_eq!(report["candidate"]["version"], "1.0.1");
    assert_eq!(report["baseline"]["version"], "1.0.0");
    assert_eq!(report["summary"], json!({"same": 3, "changed": 0, "newFailure": 0, "fixed": 0, "unmatched": 0, "noisy": 1, "skipped": 0}));
    // Newest first: the stamp, whose nonce is random (noise) and whose time is pinned (same).
    assert_eq!(statuses(&report)[0], ("stamp".to_string(), "noisy".to_string()), "{report}");
    assert!(report["results"][0].get("diff").is_none(), "{report}");
    assert!(crm.requests().is_empty(), "a replay sent requests to the CRM: {:?}", crm.requests());

    // Stored, listed and read back.
    let id = report["id"].as_str().unwrap();
    let (s, list) = host.get("/v1/adapters/replayee/replays").await;
    assert_eq!(s, 200);
    assert_eq!(list["replays"][0]["id"], id);
    assert!(list["replays"][0].get("results").is_none(), "lists leave the results out");
    let (s, stored) = host.get(&format!("/v1/adapters/replayee/replays/{id}")).await;
    assert_eq!((s, &stored), (200, &report));
    let (s, e) = host.get("/v1/adapters/replayee/replays/nope").await;
    assert_eq!((s, e["error"]["kind"].as_str()), (404, Some("unknown_replay")));
}

#[tokio::test]
async fn a_renamed_crm_data_field_is_changed_with_its_path() {
    let (host, crm) = recorded().await;
    let staged = deploy(&host, "replayee-rename", "?stage=true").await;
    let report = replay(&host, staged["digest"].as_str().unwrap(), json!({"functions": ["lookup"]})).await;
    assert_eq!(report["verdict"], "fail", "{report}");
    assert_eq!(report["calls"], 3);
    assert_eq!(count(&report, "changed"), 2, "{report}");
    assert_eq!(count(&report, "same"), 1, "the failing lookup fails the same way: {report}");
    let changed = report["results"].as_array().unwrap().iter().find(|r| r["status"] == "changed").unwrap();
    assert_eq!(
        changed["diff"],
        json!([
            {"path": "crmData.name", "recorded": "Noa", "candidate": null},
            {"path": "crmData.fullName", "recorded": null, "candidate": "Noa"}
        ]),
        "{report}"
    );
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn an_added_request_is_unmatched_with_the_closest_recording() {
    let (host, crm) = recorded().await;
    let staged = deploy(&host, "replayee-extra", "?stage=true").await;
    let report = replay(&host, staged["digest"].as_str().unwrap(), json!({"tenants": ["t1"], "functions": ["lookup"], "limit": 10})).await;
    assert_eq!(report["verdict"], "fail", "{report}");
    let results = report["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["tenant"] == "t1"), "{report}");
    let unmatched = results.iter().find(|r| r["status"] == "unmatched").expect("an unmatched call");
    let u = &unmatched["unmatched"][0];
    assert_eq!((u["method"].as_str(), u["url"].as_str()), (Some("GET"), Some("http://crm.test/contacts/1/notes")), "{u}");
    assert_eq!(u["closest"]["url"], "http://crm.test/contacts");
    assert_eq!(u["closest"]["method"], "POST");
    assert_eq!(u["closest"]["body"], "phone=111&key=[redacted]", "recorded bodies are redacted: {u}");
    assert!(u["difference"].as_str().unwrap().contains("method: POST recorded, GET sent"), "{u}");
    assert!(crm.requests().is_empty(), "the unmatched request went to the CRM: {:?}", crm.requests());
}

#[tokio::test]
async fn a_request_the_candidate_no_longer_makes_is_a_change() {
    let (host, _crm) = recorded().await;
    let base = host.get("/v1/adapters/replayee").await.1["digest"].as_str().unwrap().to_string();
    deploy(&host, "replayee-extra", "").await;
    host.complete("t1", "lookup", lookup("111")).await;
    let report = replay(&host, &base, json!({"functions": ["lookup"], "limit": 1})).await;
    assert_eq!((report["verdict"].as_str(), count(&report, "changed")), (Some("fail"), 1), "{report}");
    let diff = &report["results"][0]["diff"];
    assert!(
        diff.as_array()
            .unwrap()
            .contains(&json!({"path": "outbound.1", "recorded": "GET http://crm.test/contacts/1/notes", "candidate": null})),
        "{diff}"
    );
}

#[tokio::test]
async fn a_candidate_that_fixes_a_failure_is_fixed_and_passes() {
    let (host, _crm) = recorded().await;
    let staged = deploy(&host, "replayee-fix", "?stage=true").await;
    let report = replay(&host, staged["digest"].as_str().unwrap(), json!({"functions": ["lookup"]})).await;
    assert_eq!(report["verdict"], "pass", "{report}");
    assert_eq!((count(&report, "fixed"), count(&report, "same")), (1, 2), "{report}");
}

#[tokio::test]
async fn calls_whose_tenant_changed_or_went_are_skipped_with_the_reason() {
    let (host, _crm) = recorded().await;
    let (s, _) = host.put_tenant("t2", json!({"adapter": "replayee", "crmConfig": {"url": "http://crm.test", "key": "another"}})).await;
    assert_eq!(s, 200);
    let active = host.get("/v1/adapters/replayee").await.1["digest"].as_str().unwrap().to_string();
    let report = replay(&host, &active, json!({"tenants": ["t2"]})).await;
    assert_eq!((report["calls"].as_u64(), count(&report, "skipped")), (Some(1), 1), "{report}");
    assert!(report["results"][0]["reason"].as_str().unwrap().contains("crmConfig changed"), "{report}");
    assert_eq!(report["verdict"], "pass", "skipped calls do not fail a replay");

    assert_eq!(host.delete("/v1/tenants/t1").await.0, 204);
    let since = crm_host::time::rfc3339(crm_host::service::now_ms() + 60_000);
    let report = replay(&host, &active, json!({"since": since})).await;
    assert_eq!(report["calls"], 0, "nothing recorded after `since`: {report}");

    let (s, e) = host.post_json(&format!("/v1/adapters/replayee/versions/{active}/replay"), json!({"limit": 5001})).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (400, Some("bad_request")), "{e}");
    let (s, e) = host.post_json(&format!("/v1/adapters/replayee/versions/{active}/replay"), json!({"since": "yesterday"})).await;
    assert!(s == 400 && e["error"]["message"].as_str().unwrap().contains("since"), "{e}");
    let (s, e) = host.post_json("/v1/adapters/replayee/versions/sha256:00/replay", json!({})).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (404, Some("unknown_version")), "{e}");
}

#[tokio::test]
async fn the_gate_activates_on_pass_and_leaves_the_version_staged_on_fail() {
    let (host, crm) = recorded().await;
    let before = host.get("/v1/adapters/replayee").await.1["digest"].clone();

    let (s, e) = host.put_raw("/v1/adapters/replayee?replay=50", component("replayee-rename")).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (409, Some("replay_failed")), "{e}");
    assert_eq!(e["error"]["report"]["verdict"], "fail");
    assert_eq!(e["error"]["report"]["summary"]["changed"], 2, "{e}");
    assert_eq!(host.get("/v1/adapters/replayee").await.1["digest"], before, "still the active version");
    let renamed = e["error"]["report"]["candidate"]["digest"].as_str().unwrap().to_string();
    let versions = host.get("/v1/adapters/replayee/versions").await.1;
    let state = versions["versions"].as_array().unwrap().iter().find(|v| v["digest"] == renamed).unwrap()["state"].clone();
    assert_eq!(state, "staged");

    // The same through activate, then accepted on purpose.
    let (s, e) = host.post_json("/v1/adapters/replayee/activate", json!({"digest": renamed, "replay": 50})).await;
    assert_eq!((s, e["error"]["kind"].as_str()), (409, Some("replay_failed")), "{e}");
    let (s, d) = host.post_json("/v1/adapters/replayee/activate", json!({"digest": renamed, "replay": 50, "force": true})).await;
    assert_eq!((s, d["state"].as_str(), d["replay"]["verdict"].as_str()), (200, Some("active"), Some("fail")), "{d}");

    // A version that passes goes live through the gate.
    let d = deploy(&host, "replayee-fix", "?replay=50").await;
    assert_eq!((d["state"].as_str(), d["replay"]["verdict"].as_str()), (Some("active"), Some("pass")), "{d}");
    assert_eq!(host.complete("t1", "lookup", lookup("000")).await["name"], Value::Null, "the fixed version serves");
    assert_eq!(crm.requests().len(), 1, "only the live call reached the CRM: {:?}", crm.requests());
}

#[tokio::test]
async fn the_cli_prints_a_report_and_its_gate_exits_1_on_fail() {
    let (host, _crm) = recorded().await;
    let rename = deploy(&host, "replayee-rename", "?stage=true").await["digest"].as_str().unwrap().to_string();
    let same = deploy(&host, "replayee-same", "?stage=true").await["digest"].as_str().unwrap().to_string();
    let run = |digest: String, extra: Vec<&'static str>| {
        let url = host.url.clone();
        async move {
            let mut args = vec!["--server".to_string(), url, "--token".into(), ADMIN.into(), "replay".into(), "replayee".into(), digest];
            args.extend(extra.iter().map(|s| s.to_string()));
            let out = tokio::process::Command::new(crate::host_bin()).args(&args).output().await.expect("run crm-host");
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let (code, out, err) = run(rename.clone(), vec!["--gate", "--function", "lookup"]).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("fail") && out.contains("changed"), "{out}");
    assert!(out.contains("crmData.name: \"Noa\" → null"), "diffs as path: recorded → candidate\n{out}");
    let (code, out, err) = run(same, vec!["--gate", "--tenant", "t2"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("pass") && out.contains("same"), "{out}");
    let (code, _, _) = run(rename, vec![]).await;
    assert_eq!(code, Some(0), "without --gate a failing replay is still a report");
}

#[tokio::test]
async fn plandos_recorded_calls_replay_the_same_through_the_version_that_made_them() {
    // Plando puts its access key in query strings and form bodies: the recordings hold
    // `[redacted]` there, and the replayed requests match only once redacted the same way.
    let crm = plando::start("tok-SECRET-42").await;
    crm.with_state(|s| {
        s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567", "email": "dana@example.com"}))
    });
    let host = TestHost::start(&[("plando.co.il", &crm.url)]).await;
    let digest = host.deploy("plando").await["digest"].as_str().unwrap().to_string();
    let (s, b) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "tok-SECRET-42", "chat": "77"}})).await;
    assert_eq!(s, 200, "{b}");
    let chat =
        |phone: &str| json!({"chat": {"id": "chat-1", "phone": phone, "title": "Dana Levi"}, "params": {"email": "dana@example.com"}});
    host.complete("acme", "getCustomerDetails", chat("+972-50-123-4567")).await;
    host.failure("acme", "getCustomerDetails", chat("+972-50-000-0000")).await;
    host.complete("acme", "newOpportunity", chat("+972-50-123-4567")).await;
    let sent = crm.requests().len();
    let report = replay_adapter(&host, "plando", &digest).await;
    assert_eq!((report["verdict"].as_str(), report["summary"]["same"].as_u64()), (Some("pass"), Some(3)), "{report}");
    assert_eq!(crm.requests().len(), sent, "the replay reached the emulator");
}

async fn replay_adapter(host: &TestHost, adapter: &str, digest: &str) -> Value {
    let (s, report) = host.post_json(&format!("/v1/adapters/{adapter}/versions/{digest}/replay"), json!({})).await;
    assert_eq!(s, 200, "{report}");
    report
}
