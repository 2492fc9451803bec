//! The `crm-host` binary as an operator runs it: flags, printed address, --plugins, --upstream.

use crate::host_bin;
use crm_tests::plando;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};


struct Running(Child);

/// `crm-host serve` on a free loopback port (nothing routed leaves the machine) with `args`
/// and no admin token from the environment; its URL once it listens.
async fn serve(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(host_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream-only"])
        .args(args)
        .env_remove("CRM_HOST_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crm-host");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (_, url) = tokio::task::spawn_blocking(move || crm_tests::read_listen_url(stdout)).await.unwrap().unwrap();
    (running, url)
}
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_prints_its_address_and_serves_plugins_through_upstreams() {
    let crm = plando::start("k").await;
    crm.with_state(|s| s.add_contact(json!({"id": "8", "first_name": "Cli", "phone": "972501234567"})));
    // A deploy directory as operators keep them: versioned file names, and one broken file
    // that must not stop the others.
    let dir = std::env::temp_dir().join(format!("crm-host-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, file) in [("plando", "plando-0.1.0.wasm"), ("chaos", "chaos.wasm"), ("sockets", "sockets.wasm")] {
        std::fs::write(dir.join(file), crm_tests::component(name)).unwrap();
    }
    std::fs::write(dir.join("broken.wasm"), b"not wasm").unwrap();
    let data = crm_tests::TempDir::new("cli-data");
    let mut child = Command::new(host_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream-only"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--plugins")
        .arg(&dir)
        .arg("--upstream")
        .arg(format!("plando.co.il={}", crm.url))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crm-host");
    let stdout = child.stdout.take().unwrap();
    let _guard = Running(child);
    let (line, url) = tokio::task::spawn_blocking(move || crm_tests::read_listen_url(stdout)).await.unwrap().unwrap();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "printed: {line}");

    let client = reqwest::Client::new();
    let adapters: Value = client.get(format!("{url}/v1/adapters")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = adapters["adapters"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"plando") && names.contains(&"chaos"), "{adapters}");
    assert_eq!(names.len(), 2, "the forbidden and the broken components are not deployed: {adapters}");
    std::fs::remove_dir_all(&dir).unwrap();

    let put = client
        .put(format!("{url}/v1/tenants/acme"))
        .json(&json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}, "projectId": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let out: Value = client
        .post(format!("{url}/v1/tenants/acme/crm/getCustomerDetails"))
        .json(&json!({"chat": {"id": "c", "phone": "972501234567"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["outcome"], "complete", "{out}");
    assert_eq!(out["crmData"]["contact_id"], "8");
}

/// Runs `crm-host serve --listen 127.0.0.1:0 ARGS`, which must refuse to start; its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(host_bin()).args(["serve", "--listen", "127.0.0.1:0"]).args(args).output().unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_flags_fail_with_a_message() {
    let err = refused(&["--upstream", "nonsense"]);
    assert!(err.contains("expected HOST=URL"), "{err}");
    let err = refused(&["--allocator", "bogus"]);
    assert!(err.contains("unknown allocator 'bogus' (pooling, on-demand)"), "{err}");

    let data = crm_tests::TempDir::new("cli-database");
    let dir = data.path().to_str().unwrap();
    let err = refused(&["--database", "mysql://u:p@127.0.0.1/x", "--data-dir", dir]);
    assert!(err.contains("only PostgreSQL (postgres://USER:PASS@HOST:PORT/DB) is supported"), "{err}");
    // Nothing listens on port 1: the host does not start, and says where it failed without
    // printing the password.
    let err = refused(&["--database", "postgres://crm:hunter2@127.0.0.1:1/registry", "--data-dir", dir]);
    assert!(err.contains("--database postgres://crm:***@127.0.0.1:1/registry"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn the_on_demand_allocator_serves_fresh_instances_too() {
    let data = crm_tests::TempDir::new("cli-on-demand");
    let (_guard, url) = serve(&["--allocator", "on-demand", "--data-dir", data.path().to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let put = client.put(format!("{url}/v1/adapters/chaos")).body(crm_tests::component("chaos")).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let put = client.put(format!("{url}/v1/tenants/t")).json(&json!({"adapter": "chaos", "crmConfig": {}})).send().await.unwrap();
    assert_eq!(put.status(), 200);
    for _ in 0..3 {
        let out: Value = client
            .post(format!("{url}/v1/tenants/t/crm/counter"))
            .json(&json!({"chat": {"id": "c", "phone": "1"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(out["crmData"]["count"], 1, "a fresh instance per call: {out}");
    }
}

#[test]
fn short_doubled_and_placeholder_admin_tokens_are_refused_at_start_up() {
    let err = refused(&["--admin-token", "change-me"]);
    assert!(err.contains("has 9 characters, fewer than the 16"), "{err}");
    // The Kubernetes example ships no token that works.
    let secret = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/secret.yaml")).unwrap();
    let placeholder = secret.lines().find_map(|l| l.trim().strip_prefix("CRM_HOST_ADMIN_TOKEN: ")).unwrap().trim_matches('"');
    let err = refused(&["--admin-token", placeholder]);
    assert!(err.contains("fewer than the 16"), "{placeholder}: {err}");
    let data = crm_tests::TempDir::new("cli-token-refused");
    let file = data.path().join("token");
    std::fs::write(&file, "\n").unwrap();
    let err = refused(&["--admin-token-file", file.to_str().unwrap()]);
    assert!(err.contains("holds no token"), "{err}");
    let err = refused(&["--admin-token", "0123456789abcdef0123", "--admin-token-file", file.to_str().unwrap()]);
    assert!(err.contains("both set"), "{err}");
    let err = refused(&["--admin-token-file", "/nonexistent/token"]);
    assert!(err.contains("--admin-token-file /nonexistent/token"), "{err}");
}

#[tokio::test]
async fn an_admin_token_from_a_file_stays_out_of_the_process_list() {
    let data = crm_tests::TempDir::new("cli-token-file");
    let token = "from-a-file-0123456789abcdef";
    let file = data.path().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let data_dir = data.path().join("data");
    let (guard, url) = serve(&["--admin-token-file", file.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()]).await;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", guard.0.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(token), "the token is not on the command line");
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.get(format!("{url}/v1/adapters")).bearer_auth(token).send().await.unwrap()), 200);
    assert_eq!(status(client.get(format!("{url}/v1/adapters")).send().await.unwrap()), 401);
}
