//! Tenant isolation with a hostile test adapter (`plugins/testing/chaos`): CPU and memory
//! caps, traps, deny-by-default egress, a fresh instance per call, the inert wasip2 imports.

use crm_tests::emulator::{Emulator, Fault, Recorded, Reply};
use crm_tests::TestHost;
use serde_json::{json, Value};

/// A loopback server answering every request with what it saw.
async fn echo_server() -> Emulator<()> {
    fn handle(_: &mut (), r: &Recorded) -> Reply {
        (200, json!({"path": r.path, "host": r.header("host")}))
    }
    Emulator::start((), handle).await
}

async fn chaos(routes: &[(&str, &str)], config: Value) -> TestHost {
    let host = TestHost::start(routes).await;
    host.deploy("chaos").await;
    let (status, body) = host.put_tenant("t1", json!({"adapter": "chaos", "crmConfig": config, "projectId": "p1"})).await;
    assert_eq!(status, 200, "{body}");
    host
}

fn call_body(params: Value) -> Value {
    json!({"chat": {"id": "c1", "phone": "972501234567"}, "params": params})
}

#[tokio::test]
async fn a_spinning_adapter_hits_the_deadline_and_the_host_keeps_serving() {
    let host = chaos(&[], json!({})).await;
    let started = std::time::Instant::now();
    let e = host.failure("t1", "spin", call_body(json!({}))).await;
    assert_eq!(e["kind"], "deadline_exceeded", "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(host.complete("t1", "counter", call_body(json!({}))).await["count"], 1);
}

#[tokio::test]
async fn a_memory_hog_hits_the_memory_cap() {
    let host = chaos(&[], json!({})).await;
    let e = host.failure("t1", "hog", call_body(json!({}))).await;
    assert_eq!(e["kind"], "memory_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("32 MiB"), "{e}");
}

#[tokio::test]
async fn a_panicking_adapter_is_a_trap_failure() {
    let host = chaos(&[], json!({})).await;
    let e = host.failure("t1", "panic", call_body(json!({}))).await;
    assert_eq!(e["kind"], "trap", "{e}");
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance() {
    let host = chaos(&[], json!({})).await;
    for _ in 0..3 {
        assert_eq!(host.complete("t1", "counter", call_body(json!({}))).await["count"], 1);
    }
}

#[tokio::test]
async fn wasip2_imports_are_linked_but_grant_nothing() {
    // The test process has PATH, HOME, ...: none of it may reach the component.
    let host = chaos(&[], json!({})).await;
    let data = host.complete("t1", "env", call_body(json!({}))).await;
    assert_eq!(data, json!({"env": 0, "args": 0, "preopens": 0}));
}

#[tokio::test]
async fn declared_hosts_are_allowed_and_routed_upstream() {
    let up = echo_server().await;
    let host = chaos(&[("api.chaos.test", &up.url)], json!({})).await;
    let data = host.complete("t1", "fetch", call_body(json!({"url": "https://api.chaos.test/v1/ping?x=1"}))).await;
    assert_eq!(data["status"], 200);
    let seen: Value = serde_json::from_str(data["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen, json!({"path": "/v1/ping", "host": "api.chaos.test"}));
    assert_eq!(up.single("/v1/ping").query, "x=1");
}

#[tokio::test]
async fn undeclared_hosts_are_denied_with_a_reason() {
    let up = echo_server().await;
    // Even a host the operator routes is denied when the adapter did not declare it.
    let host = chaos(&[("evil.test", &up.url), ("api.chaos.test", &up.url)], json!({})).await;
    for url in ["https://evil.test/steal", "http://api.chaos.test/plain-http", "https://api.chaos.test:8443/other-port"] {
        let e = host.failure("t1", "fetch", call_body(json!({"url": url}))).await;
        assert_eq!(e["kind"], "egress_denied", "{url}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("not an allowed outbound origin") && msg.contains("https://api.chaos.test"), "{msg}");
    }
    assert!(up.requests().is_empty(), "nothing reached the network");
}

#[tokio::test]
async fn endpoint_fields_extend_egress_for_their_tenant_only() {
    let up = echo_server().await;
    let routes = [("hooks.example.test", up.url.as_str())];
    let host = chaos(&routes, json!({"hookUrl": "https://hooks.example.test/in"})).await;
    host.put_tenant("t2", json!({"adapter": "chaos", "crmConfig": {}, "projectId": "p2"})).await;
    let fetch = call_body(json!({"url": "https://hooks.example.test/in"}));
    assert_eq!(host.complete("t1", "fetch", fetch.clone()).await["status"], 200);
    let e = host.failure("t2", "fetch", fetch).await;
    assert_eq!(e["kind"], "egress_denied", "t2 has no hookUrl: {e}");
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn unrouted_requests_are_refused_in_upstream_only_mode() {
    let host = chaos(&[], json!({})).await;
    let e = host.failure("t1", "fetch", call_body(json!({"url": "https://api.chaos.test/x"}))).await;
    assert_eq!(e["kind"], "egress_denied");
    assert!(e["message"].as_str().unwrap().contains("--upstream-only"), "{e}");
}

#[tokio::test]
async fn invalid_endpoint_values_are_refused_at_tenant_put() {
    let host = chaos(&[], json!({})).await;
    let (status, body) = host.put_tenant("t3", json!({"adapter": "chaos", "crmConfig": {"hookUrl": "ftp://x"}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "hookUrl");
}

#[tokio::test]
async fn the_chat_reaches_the_adapter_intact() {
    let host = chaos(&[], json!({"token": "t"})).await;
    let chat = json!({
        "id": "c1",
        "phone": "972501234567",
        "title": "Dana",
        "agent": {"email": "a@example.com", "name": "Avi"},
        "crmData": {"contact_id": "5", "nested": {"x": [1, 2]}},
        "nodes": {"lead_get_name": "Dana Levi", "lead_get_email": "d@example.com"},
        "messages": [{"id": "m1", "direction": "outgoing", "text": "שלום", "timestamp": 1767000000000u64,
                      "from": "972700000000", "to": "972501234567",
                      "media": [{"url": "https://f.example.com/a.png", "fileName": "a.png", "mimeType": "image/png"}]}],
        "url": "https://acme.texterchat.com/chats/c1"
    });
    let data = host.complete("t1", "echo", json!({"chat": chat, "params": {"a": 1, "b": {"c": true}}})).await;
    assert_eq!(data["chat"], chat);
    assert_eq!(data["params"], json!({"a": 1, "b": {"c": true}}));
    assert_eq!(data["projectId"], "p1");
    assert_eq!(data["config"], json!({"token": "t"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_adapters_do_not_starve_other_calls() {
    use std::time::{Duration, Instant};
    let host = chaos(&[], json!({})).await;
    // As many spinners as the runtime has workers: without yielding they would hold both.
    let spin = || async { (host.call("t1", "spin", call_body(json!({}))).await, Instant::now()) };
    let quick = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        (host.complete("t1", "counter", call_body(json!({}))).await, Instant::now())
    };
    let (((_, a), a_done), ((_, b), b_done), (q, q_done)) = tokio::join!(spin(), spin(), quick);
    assert_eq!(q["count"], 1);
    assert_eq!(a["error"]["kind"], "deadline_exceeded", "{a}");
    assert_eq!(b["error"]["kind"], "deadline_exceeded", "{b}");
    assert!(q_done < a_done && q_done < b_done, "the quick call finished while both spinners still ran");
}

// ---------------------------------------------------------------- per-call and admission limits

#[tokio::test]
async fn a_call_may_make_only_so_many_outbound_requests() {
    let crm = Emulator::start((), |_: &mut (), _| (200, json!({"ok": true}))).await;
    let limits = crm_host::Limits { max_outbound_requests: 5, ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[("api.chaos.test", &crm.url)]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let e = host.failure("acme", "flood", json!({"chat": {"id": "c", "phone": "1"}, "params": {"url": "https://api.chaos.test/x"}})).await;
    assert_eq!(e["kind"], "outbound_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("5 outbound requests"), "names the limit and its value: {e}");
    assert_eq!(crm.requests().len(), 5, "the sixth never left");
}

#[tokio::test]
async fn crm_data_past_its_cap_is_invalid_output() {
    let limits = crm_host::Limits { max_crm_data_bytes: 64 << 10, ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let chat = json!({"id": "c", "phone": "1"});
    let ok = host.complete("acme", "big", json!({"chat": chat, "params": {"bytes": 60_000}})).await;
    assert_eq!(ok["filler"].as_str().unwrap().len(), 60_000);
    let e = host.failure("acme", "big", json!({"chat": chat, "params": {"bytes": 70_000}})).await;
    assert_eq!(e["kind"], "invalid_output", "{e}");
    assert!(e["message"].as_str().unwrap().contains("65536 bytes allowed"), "{e}");
}

#[tokio::test]
async fn a_tenant_past_its_concurrent_calls_is_refused_at_once_as_rate_limited() {
    let crm = Emulator::start((), |_: &mut (), _| (200, json!({"ok": true}))).await;
    crm.fault("/slow", Fault::Delay(std::time::Duration::from_millis(800)));
    let limits = crm_host::Limits { max_concurrent_calls_per_tenant: 2, ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[("api.chaos.test", &crm.url)]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    host.put_tenant("other", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let slow = json!({"chat": {"id": "c", "phone": "1"}, "params": {"url": "https://api.chaos.test/slow"}});
    let (a, b, c, d) = tokio::join!(
        host.call("acme", "fetch", slow.clone()),
        host.call("acme", "fetch", slow.clone()),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let started = std::time::Instant::now();
            (host.call("acme", "fetch", slow.clone()).await, started.elapsed())
        },
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            host.call("other", "fetch", slow.clone()).await
        },
    );
    assert_eq!((a.1["outcome"].clone(), b.1["outcome"].clone()), (json!("complete"), json!("complete")));
    let ((_, third), waited) = c;
    assert_eq!(third["error"]["kind"], "rate_limited", "{third}");
    assert!(third["error"]["message"].as_str().unwrap().contains("--max-concurrent-calls 2"), "{third}");
    assert!(waited < std::time::Duration::from_millis(300), "refused at once, not queued: {waited:?}");
    assert_eq!(d.1["outcome"], "complete", "another tenant is not held back");
}

/// Peak resident memory of this process, in KiB (Linux).
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn host_side_resources_a_call_holds_are_capped_and_returned() {
    let host = TestHost::start_with(crm_tests::test_limits(), &[]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    let before = vm_hwm_kib();
    for _ in 0..3 {
        let e = host.failure("acme", "fields", chat.clone()).await;
        assert_eq!(e["kind"], "resource_limit_exceeded", "{e}");
        assert!(e["message"].as_str().unwrap().contains("256 host resources"), "names the limit: {e}");
    }
    let grown_mib = vm_hwm_kib().saturating_sub(before) / 1024;
    // 256 resources x 60 KB is 15 MiB; unbounded, this attack took over 300 MB in 3 s.
    // (Other tests of this binary run alongside: the bound leaves room for them.)
    assert!(grown_mib < 160, "peak memory grew by {grown_mib} MiB");
    assert_eq!(host.complete("acme", "counter", chat).await["count"], 1, "the host keeps serving");
}

#[tokio::test]
async fn a_header_flood_is_a_clean_failure_not_a_panic() {
    let host = TestHost::start_with(crm_tests::test_limits(), &[]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    let e = host.failure("acme", "headers", chat.clone()).await;
    assert_eq!(e["kind"], "resource_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("4096 header entries"), "{e}");
    assert_eq!(host.complete("acme", "counter", chat).await["count"], 1, "the host keeps serving");
}
