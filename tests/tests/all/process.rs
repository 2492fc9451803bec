//! `crm-host` as a real process: `kill -9` in the middle of a deploy, the --plugins
//! watcher, the client subcommands end to end, logs (JSON, no secrets) and the refusal to
//! run open on a non-loopback address.

use crate::host_bin;
use crm_tests::emulator::{Emulator, Recorded, Reply};
use crm_tests::{component, plando, TempDir};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crm_tests::process::{eventually, Proc, ADMIN};


fn start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    Proc::start(&host_bin(), data, extra, env)
}

async fn whoami_version(p: &Proc, tenant: &str) -> Value {
    let body = json!({"chat": {"id": "c", "phone": "1"}}).to_string().into_bytes();
    let (s, out) = p.req("POST", &format!("/v1/tenants/{tenant}/crm/whoami"), Some(body)).await;
    assert_eq!(s, 200, "{out}");
    out["crmData"]["version"].clone()
}

#[tokio::test]
async fn kill_9_inside_the_deploy_transaction_leaves_the_previous_state() {
    let data = TempDir::new("kill9");
    let p = start(data.path(), &[], &[]);
    assert_eq!(p.req("PUT", "/v1/adapters/whoami", Some(component("whoami"))).await.0, 201);
    let tenant = json!({"adapter": "whoami", "crmConfig": {"region": "eu"}}).to_string().into_bytes();
    assert_eq!(p.req("PUT", "/v1/tenants/acme", Some(tenant)).await.0, 200);
    let v1 = p.active("whoami").await.unwrap();
    p.kill9();

    // This time the deploy stops inside its transaction, after every write, before commit.
    let p = start(data.path(), &[], &[("CRM_HOST_FAILPOINT", "deploy-commit")]);
    let url = p.url.clone();
    let upload = tokio::spawn(async move {
        reqwest::Client::new().put(format!("{url}/v1/adapters/whoami")).bearer_auth(ADMIN).body(component("whoami-v2")).send().await
    });
    eventually("the failpoint", Duration::from_secs(30), async || p.logs().contains("failpoint deploy-commit")).await;
    p.kill9();
    assert!(upload.await.unwrap().is_err(), "the deploy never answered");

    let p = start(data.path(), &[], &[]);
    assert_eq!(p.active("whoami").await.unwrap()["digest"], v1["digest"], "the old version is active");
    let (_, list) = p.req("GET", "/v1/adapters/whoami/versions", None).await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 1, "no half-stored version: {list}");
    assert_eq!(whoami_version(&p, "acme").await, "1.0.0");
    let (_, audit) = p.req("GET", "/v1/audit", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "no audit entry for the lost deploy: {audit}");
    // And the host takes the same deploy afterwards.
    let (s, out) = p.req("PUT", "/v1/adapters/whoami", Some(component("whoami-v2"))).await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(whoami_version(&p, "acme").await, "2.0.0");
}

#[tokio::test]
async fn kill_9_at_any_moment_of_a_deploy_leaves_old_or_new_never_half() {
    let data = TempDir::new("kill9-random");
    let p = start(data.path(), &[], &[]);
    p.req("PUT", "/v1/adapters/whoami", Some(component("whoami"))).await;
    let tenant = json!({"adapter": "whoami", "crmConfig": {"region": "eu"}}).to_string().into_bytes();
    p.req("PUT", "/v1/tenants/acme", Some(tenant)).await;
    p.kill9();
    let files = ["whoami-v2", "whoami"];
    let mut outcomes = Vec::new();
    for i in 0..6u64 {
        let p = start(data.path(), &[], &[]);
        let before = p.active("whoami").await.unwrap();
        let next = if before["version"] == "1.0.0" { files[0] } else { files[1] };
        let url = p.url.clone();
        let upload = tokio::spawn(async move {
            reqwest::Client::new().put(format!("{url}/v1/adapters/whoami?force=true")).bearer_auth(ADMIN).body(component(next)).send().await
        });
        // From "before the request arrives" to "after it committed".
        tokio::time::sleep(Duration::from_millis(i * 40)).await;
        p.kill9();
        let _ = upload.await;

        let p = start(data.path(), &[], &[]);
        let after = p.active("whoami").await.expect("an active version after the restart");
        let (_, list) = p.req("GET", "/v1/adapters/whoami/versions", None).await;
        let stored: Vec<&Value> = list["versions"].as_array().unwrap().iter().map(|v| &v["digest"]).collect();
        assert!(stored.contains(&&after["digest"]), "the active version is stored whole");
        assert_eq!(whoami_version(&p, "acme").await, after["version"], "and serves");
        outcomes.push(if after["digest"] == before["digest"] { "old" } else { "new" });
        p.kill9();
    }
    eprintln!("outcomes: {outcomes:?}");
}

#[tokio::test]
async fn the_plugins_directory_is_watched() {
    let data = TempDir::new("watch-data");
    let dir = TempDir::new("watch-plugins");
    std::fs::write(dir.path().join("whoami.wasm"), component("whoami")).unwrap();
    let p = start(data.path(), &["--plugins", dir.path().to_str().unwrap()], &[]);
    assert_eq!(p.active("whoami").await.unwrap()["version"], "1.0.0");

    // A new file.
    std::fs::write(dir.path().join("plando.wasm"), component("plando")).unwrap();
    let started = Instant::now();
    eventually("plando deployed", Duration::from_secs(10), async || p.active("plando").await.is_some()).await;
    assert!(started.elapsed() < Duration::from_secs(3), "deployed within 2 s (plus the compile): {:?}", started.elapsed());
    // A changed file.
    std::fs::write(dir.path().join("whoami.wasm"), component("whoami-v2")).unwrap();
    eventually("whoami 2.0.0 active", Duration::from_secs(10), async || {
        p.active("whoami").await.is_some_and(|v| v["version"] == "2.0.0")
    })
    .await;
    let (_, audit) = p.req("GET", "/v1/audit", None).await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["actor"] == "watcher"), "{audit}");
    // A broken file: logged, and the serving version stays.
    std::fs::write(dir.path().join("whoami.wasm"), b"\0asm broken").unwrap();
    eventually("the broken file logged", Duration::from_secs(10), async || p.logs().contains("watcher: not deployed")).await;
    assert!(p.logs().contains("not WebAssembly") || p.logs().contains("invalid_component"), "{}", p.logs());
    assert_eq!(p.active("whoami").await.unwrap()["version"], "2.0.0");
}

/// Runs the client side of the CLI against `server`; returns (exit code, stdout, stderr).
fn cli(server: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(host_bin());
    cmd.arg("--server").arg(server).args(args).env_remove("CRM_HOST_TOKEN");
    if let Some(t) = token {
        cmd.env("CRM_HOST_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: the CLI runs as a blocking child process while the emulator answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_running_host_end_to_end() {
    let crm = plando::start("cli-secret-token").await;
    crm.with_state(|s| s.add_contact(json!({"id": "8", "first_name": "Cli", "phone": "972501234567"})));
    let data = TempDir::new("cli-e2e");
    let files = TempDir::new("cli-files");
    let p = start(data.path(), &["--upstream", &format!("plando.co.il={}", crm.url)], &[]);
    let plando_file = files.path().join("plando-0.1.0.wasm");
    std::fs::write(&plando_file, component("plando")).unwrap();
    let whoami_file = files.path().join("whoami.wasm");
    std::fs::write(&whoami_file, component("whoami")).unwrap();
    let v2_file = files.path().join("whoami-2.wasm");
    std::fs::write(&v2_file, component("whoami-v2")).unwrap();
    let url = p.url.as_str();
    let run = |token: Option<&str>, args: &[&str]| cli(url, token, args);
    let admin = Some(ADMIN);

    let (code, _, err) = run(None, &["adapters"]);
    assert_eq!(code, 1, "no token: refused");
    assert!(err.contains("401"), "{err}");

    let (code, out, err) = run(admin, &["deploy", plando_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plando 0.1.0 sha256:") && out.contains("(active)"), "{out}");
    let (code, out, _) = run(admin, &["--json", "deploy", whoami_file.to_str().unwrap()]);
    assert_eq!(code, 0);
    let v1: Value = serde_json::from_str(&out).unwrap();
    let (code, out, _) = run(admin, &["deploy", v2_file.to_str().unwrap(), "--name", "whoami", "--stage"]);
    assert_eq!(code, 0);
    assert!(out.contains("(staged)"), "{out}");

    let (code, out, _) = run(admin, &["adapters"]);
    assert_eq!(code, 0);
    assert!(out.contains("plando") && out.contains("whoami"), "{out}");
    let (_, out, _) = run(admin, &["--json", "versions", "whoami"]);
    let versions: Value = serde_json::from_str(&out).unwrap();
    let v2_digest = versions["versions"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(versions["versions"][0]["state"], "staged");

    let config = r#"{"token": "cli-secret-token", "chat": "1"}"#;
    let (code, out, err) = run(admin, &["tenant", "put", "acme", "--adapter", "plando", "--config", config, "--project", "acme"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[redacted]") && !out.contains("cli-secret-token"), "{out}");
    let cfg_file = files.path().join("who.json");
    std::fs::write(&cfg_file, r#"{"region": "eu"}"#).unwrap();
    let (code, _, err) = run(admin, &["tenant", "put", "who", "--adapter", "whoami", "--config", cfg_file.to_str().unwrap(), "--pin", v1["digest"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(admin, &["--json", "tenant", "get", "who"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["pin"], v1["digest"]);

    let (code, out, _) = run(admin, &["--json", "keys", "create", "acme"]);
    assert_eq!(code, 0);
    let key: Value = serde_json::from_str(&out).unwrap();
    let tenant_key = key["key"].as_str().unwrap();

    let chat = r#"{"id": "c", "phone": "972501234567"}"#;
    let (code, out, err) = run(Some(tenant_key), &["invoke", "acme", "getCustomerDetails", "--chat", chat]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.starts_with("complete") && out.contains("\"contact_id\": \"8\""), "{out}");
    let (code, out, _) = run(Some(tenant_key), &["invoke", "acme", "sendInvoice", "--chat", chat, "--params", "{}"]);
    assert_eq!(code, 3, "on_failure has its own exit code: {out}");
    assert!(out.contains("failure: unsupported"), "{out}");
    let (code, _, err) = run(Some(tenant_key), &["invoke", "who", "whoami", "--chat", chat]);
    assert_eq!(code, 1, "another tenant's call: {err}");
    assert!(err.contains("403"), "{err}");

    let (code, out, _) = run(admin, &["calls", "acme"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let call_id = out.lines().last().unwrap().split_whitespace().next().unwrap().to_string();
    let (code, out, _) = run(admin, &["calls", "acme", "--id", &call_id]);
    assert_eq!(code, 0);
    let trace: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trace["funcId"], "getCustomerDetails");
    assert!(!out.contains("cli-secret-token"), "{out}");

    let (code, out, _) = run(admin, &["activate", "whoami", &v2_digest]);
    assert_eq!(code, 0);
    assert!(out.contains("2.0.0"), "{out}");
    let (code, out, _) = run(admin, &["rollback", "whoami"]);
    assert_eq!(code, 0);
    assert!(out.contains("1.0.0"), "{out}");
    let (code, _, err) = run(admin, &["delete-version", "whoami", v1["digest"].as_str().unwrap()]);
    assert_eq!(code, 1, "active and pinned");
    assert!(err.contains("409"), "{err}");

    let (code, _, _) = run(admin, &["keys", "revoke", "acme", key["keyId"].as_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, _, _) = run(Some(tenant_key), &["invoke", "acme", "getCustomerDetails", "--chat", chat]);
    assert_eq!(code, 1, "revoked");
    let (code, out, _) = run(admin, &["audit"]);
    assert_eq!(code, 0);
    for action in ["deploy", "stage", "tenant_put", "pin", "key_issued", "activate", "rollback", "key_revoked"] {
        assert!(out.contains(action), "{action} missing from:\n{out}");
    }
    let (code, _, _) = run(admin, &["tenant", "delete", "who"]);
    assert_eq!(code, 0);
    let (code, _, err) = run(admin, &["tenant", "get", "who"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_tenant"), "{err}");
    let (code, _, _) = run(admin, &["tenant", "put", "x", "--adapter", "plando", "--config", "{not json"]);
    assert_eq!(code, 2, "bad usage");
}

#[tokio::test]
async fn json_logs_describe_calls_and_outbound_requests_without_secrets() {
    fn echo(_: &mut (), r: &Recorded) -> Reply {
        // A CRM that echoes what it got, credentials included.
        (200, json!({"echo": String::from_utf8_lossy(&r.body), "auth": r.header("authorization")}))
    }
    let crm: Emulator<()> = Emulator::start((), echo).await;
    let data = TempDir::new("logs");
    // Completed calls and answered requests are logged at debug (failures at info).
    let p = start(data.path(), &["--log-format", "json", "--upstream", &format!("crm.test={}", crm.url)], &[("RUST_LOG", "info,crm_host=debug")]);
    p.req("PUT", "/v1/adapters/whoami", Some(component("whoami"))).await;
    let secret = "log-SECRET-value-42";
    let tenant = json!({"adapter": "whoami", "crmConfig": {"url": "http://crm.test", "token": secret}});
    let (_, t) = p.req("PUT", "/v1/tenants/acme", Some(tenant.to_string().into_bytes())).await;
    let body = json!({"chat": {"id": "c", "phone": "1"}, "params": {"note": secret}}).to_string().into_bytes();
    let (s, out) = p.req("POST", "/v1/tenants/acme/crm/lookup", Some(body.clone())).await;
    assert_eq!(s, 200);
    let (_, failed) = p.req("POST", "/v1/tenants/acme/crm/nope", Some(body)).await;
    let (_, calls) = p.req("GET", "/v1/tenants/acme/calls", None).await;
    let call_id = calls["calls"][1]["callId"].as_str().unwrap().to_string();
    let (_, trace) = p.req("GET", &format!("/v1/tenants/acme/calls/{call_id}"), None).await;
    let (_, audit) = p.req("GET", "/v1/audit", None).await;
    let (_, tenant_view) = p.req("GET", "/v1/tenants/acme", None).await;
    let metrics = reqwest::get(format!("{}/metrics", p.url)).await.unwrap().text().await.unwrap();
    assert!(out["crmData"]["body"].as_str().unwrap().contains(secret), "the CRM did echo it to the adapter: {out}");
    let logs = p.logs();

    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let call = lines.iter().find(|l| l["message"] == "call" && l["func_id"] == "lookup").expect("a call line");
    assert_eq!(call["tenant"], "acme");
    assert_eq!(call["adapter"], "whoami@1.0.0");
    assert_eq!(call["outcome"], "complete");
    assert_eq!(call["call_id"], call_id.as_str());
    assert!(call["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(call["ms"].as_f64().is_some());
    let outbound = lines.iter().find(|l| l["message"] == "outbound").expect("an outbound line");
    assert_eq!((outbound["method"].clone(), outbound["host"].clone(), outbound["path"].clone()), (json!("POST"), json!("crm.test"), json!("/lookup")));
    assert_eq!(outbound["status"], "200");
    assert!(lines.iter().any(|l| l["message"].as_str().unwrap_or("").starts_with("call:") && l["kind"] == "unsupported"));

    // The secret went to the CRM and back, and appears nowhere the host shows.
    for (what, text) in [
        ("logs", logs),
        ("tenant put", t.to_string()),
        ("tenant get", tenant_view.to_string()),
        ("failure answer", failed.to_string()),
        ("calls", calls.to_string()),
        ("trace", trace.to_string()),
        ("audit", audit.to_string()),
        ("metrics", metrics),
    ] {
        assert!(!text.contains(secret), "the secret leaked into {what}:\n{text}");
    }
    assert!(trace.to_string().contains("[redacted]"));
}

#[test]
fn open_mode_refuses_a_non_loopback_address() {
    let data = TempDir::new("open");
    let out = Command::new(host_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--upstream-only"])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("CRM_HOST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an admin token") && err.contains("CRM_HOST_ADMIN_TOKEN"), "{err}");
}

/// The README's first command, as the tests run it: the whole walk-through, then exit.
#[test]
fn the_demo_walks_every_flow_and_exits_with_once() {
    let data = TempDir::new("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--once", "--data-dir"])
        .arg(data.path())
        .env("CRM_HOST_BIN", host_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("EMULATED Plando"), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(stdout.contains("demo complete"), "{stdout}");
    assert!(stdout.contains("\"token\": \"[redacted]\""), "the tenant's token comes back redacted: {stdout}");
}

#[tokio::test]
async fn the_hostile_set_leaves_no_panic_in_the_real_hosts_log() {
    let data = TempDir::new("hostile");
    let p = start(data.path(), &["--deadline-ms", "1500", "--memory-mb", "32"], &[]);
    p.req("PUT", "/v1/adapters/chaos", Some(component("chaos"))).await;
    let (s, b) = p.req("PUT", "/v1/adapters/stuck", Some(component("stuck"))).await;
    assert_eq!(s, 400, "a describe that never returns: {b}");
    let (s, b) = p.req("PUT", "/v1/tenants/t", Some(json!({"adapter": "chaos", "crmConfig": {"hookUrl": "http://127.0.0.1:9"}}).to_string().into_bytes())).await;
    assert_eq!(s, 200, "{b}");
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    for (op, params, kind) in [
        ("spin", json!({}), "deadline_exceeded"),
        ("hog", json!({}), "memory_limit_exceeded"),
        ("recurse", json!({}), "trap"),
        ("trap", json!({}), "trap"),
        ("panic", json!({}), "trap"),
        ("fields", json!({}), "resource_limit_exceeded"),
        ("headers", json!({}), "resource_limit_exceeded"),
        ("big", json!({"bytes": 2_000_000}), "invalid_output"),
        ("fetch", json!({"url": "http://127.0.0.1:9/x"}), "egress_denied"),
        ("rawget", json!({"scheme": "http", "authority": "[::ffff:127.0.0.1]:9"}), "egress_denied"),
    ] {
        let mut body = chat.clone();
        body["params"] = params;
        let (s, out) = p.req("POST", &format!("/v1/tenants/t/crm/{op}"), Some(body.to_string().into_bytes())).await;
        assert_eq!(s, 200, "{op}: {out}");
        assert_eq!(out["error"]["kind"], kind, "{op}: {out}");
    }
    let (s, out) = p.req("POST", "/v1/tenants/t/crm/counter", Some(chat.to_string().into_bytes())).await;
    assert_eq!((s, out["crmData"]["count"].clone()), (200, json!(1)), "the host keeps serving");
    let logs = p.kill9();
    // (The adapter's own panics are reported as traps; these are the host's.)
    for sign in ["panicked at", "panic while serving"] {
        assert!(!logs.contains(sign), "a host panic reached its log:\n{logs}");
    }
}

/// A request head that announces a large body, and none of it: a host that checks
/// credentials first answers at once and closes; one that reads the body first answers
/// nothing until `raw_http` gives up.
async fn head_only(url: &str, method: &str, path: &str, authorization: Option<&str>) -> Option<String> {
    let addr = url.trim_start_matches("http://");
    let auth = authorization.map(|a| format!("authorization: {a}\r\n")).unwrap_or_default();
    crm_tests::raw_http(url, &format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: {}\r\n\r\n", 60 << 20)).await
}

#[tokio::test]
async fn credentials_are_checked_before_a_body_is_read() {
    let data = TempDir::new("head-only");
    let p = start(&data.path().join("data"), &[], &[]);
    let cases = [
        ("PUT", "/v1/adapters/x", None, "401"),
        ("PUT", "/v1/adapters/x", Some("Bearer wrong"), "401"),
        ("PUT", "/v1/tenants/acme", Some("Bearer crmk_nokey_nosecret"), "401"),
        ("POST", "/v1/adapters/x/activate", None, "401"),
        ("POST", "/v1/tenants/acme/crm/getCustomerDetails", Some("Bearer wrong"), "401"),
        ("POST", "/v1/tenants/acme/crm/getCustomerDetails", None, "401"),
    ];
    for (method, path, auth, status) in cases {
        let answer = head_only(&p.url, method, path, auth)
            .await
            .unwrap_or_else(|| panic!("{method} {path} ({auth:?}): no answer while the body was not sent; the host waited to read it"));
        assert!(answer.starts_with(&format!("http/1.1 {status}")), "{method} {path}: {answer}");
        assert!(answer.contains("connection: close"), "{method} {path}: the connection closes: {answer}");
    }
    // With the admin's token the host does wait for the body (and then reads it).
    assert_eq!(head_only(&p.url, "PUT", "/v1/adapters/x", Some(&format!("Bearer {ADMIN}"))).await, None);
}
