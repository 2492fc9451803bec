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

/// The SDK's heap (a bump arena in the initial memory, then dlmalloc on grown pages:
/// `plugins/sdk/src/alloc.rs`) keeps every block intact under churn that outgrows the arena.
#[tokio::test]
async fn the_sdk_heap_keeps_every_block_intact_past_its_arena() {
    let host = chaos(&[], json!({})).await;
    for seed in 1..=3 {
        let d = host.complete("t1", "churn", call_body(json!({"rounds": 20_000, "seed": seed}))).await;
        assert_eq!(d["rounds"], 20_000, "{d}");
        assert!(d["pages"].as_u64().unwrap() > 3, "the churn went past the 192 KiB initial memory: {d}");
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
async fn a_refused_request_header_is_named_in_the_error() {
    let up = echo_server().await;
    let host = chaos(&[("api.chaos.test", &up.url)], json!({})).await;
    let bad = call_body(json!({"url": "https://api.chaos.test/x", "headerName": "x-ok", "headerValue": "line\nbreak"}));
    let e = host.failure("t1", "fetch", bad).await;
    assert_eq!(e["kind"], "internal", "{e}");
    assert!(e["message"].as_str().unwrap().starts_with("header x-ok: "), "{e}");
    assert!(up.requests().is_empty(), "nothing reached the network");
    // The same header with a valid value goes out.
    let good = call_body(json!({"url": "https://api.chaos.test/x", "headerName": "x-ok", "headerValue": "fine"}));
    assert_eq!(host.complete("t1", "fetch", good).await["status"], 200);
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
async fn validate_config_messages_never_echo_a_secret() {
    let host = chaos(&[], json!({})).await;
    // Characters that JSON, form and percent encodings each escape.
    let secret = "s3c\"ret\\tok +/=&ü";
    let config = json!({"token": secret, "leakOnValidate": true});
    let (status, body) = host.put_tenant("t4", json!({"adapter": "chaos", "crmConfig": config})).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("[redacted]") && !message.contains("s3c"), "{message}");
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
    // 40,000 one-byte headers: the header map's bytes (as wasmtime-wasi-http counts them,
    // with each entry's overhead) run out first; with room for more bytes, the entry count
    // stops it before `HeaderMap` could.
    for (max_header_bytes, limit) in [(64 << 10, "65536 bytes allowed (--max-header-bytes)"), (64 << 20, "4096 header entries")] {
        let limits = crm_host::Limits { max_header_bytes, ..crm_tests::test_limits() };
        let host = TestHost::start_with(limits, &[]).await;
        host.deploy("chaos").await;
        host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
        let chat = json!({"chat": {"id": "c", "phone": "1"}});
        let e = host.failure("acme", "headers", chat.clone()).await;
        assert_eq!(e["kind"], "resource_limit_exceeded", "{e}");
        assert!(e["message"].as_str().unwrap().contains(limit), "{e}");
        assert_eq!(host.complete("acme", "counter", chat).await["count"], 1, "the host keeps serving");
    }
}

// ---------------------------------------------------------------- the hostile set

/// A TCP listener on 127.0.0.1 (and, where the machine has IPv6, [::1] on the same port)
/// that counts the connections it accepts: a denied request must reach neither.
struct Bait {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Bait {
    fn start() -> Bait {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut listeners = vec![v4];
        listeners.extend(std::net::TcpListener::bind(("::1", port)).ok());
        for l in listeners {
            let n = accepted.clone();
            std::thread::spawn(move || {
                for _ in l.incoming() {
                    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        Bait { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A host whose unrouted requests reach the connector (not refused by `--upstream-only`),
/// with a resolver that knows only `names` and a dialer that records what it was asked.
async fn open_host(names: &[(&str, &str)], routes: &[(&str, &str)]) -> (TestHost, crm_tests::LoopbackDialer) {
    let dialer = crm_tests::LoopbackDialer::default();
    let resolver =
        crm_tests::LocalResolver { names: names.iter().map(|(n, ip)| (n.to_string(), ip.parse().unwrap())).collect() };
    let connector = crm_host::outbound::connect::Connector::new(std::sync::Arc::new(resolver), std::sync::Arc::new(dialer.clone()));
    let config = crm_tests::TestHostConfig { upstream_only: false, connector: Some(connector), ..Default::default() }.routes(routes);
    let host = TestHost::start_config(config).await;
    host.deploy("chaos").await;
    (host, dialer)
}

#[tokio::test]
async fn every_spelling_of_loopback_is_denied_and_the_listener_hears_nothing() {
    let bait = Bait::start();
    let (host, dialer) = open_host(&[], &[]).await;
    let p = bait.port;
    // Each spelling becomes the tenant's endpoint (so the egress policy allows it) and is
    // fetched through the SDK and through raw bindings: the connector must refuse it.
    let spellings = [
        format!("http://127.0.0.1:{p}"),
        format!("http://localhost:{p}"),
        format!("http://LOCALHOST:{p}"),
        format!("http://[::1]:{p}"),
        format!("http://[::ffff:127.0.0.1]:{p}"),
        format!("http://[::127.0.0.1]:{p}"),
        format!("http://0.0.0.0:{p}"),
        format!("http://[::]:{p}"),
        format!("http://127.1:{p}"),
        format!("http://2130706433:{p}"),
        format!("http://0x7f000001:{p}"),
        format!("http://0177.0.0.1:{p}"),
        format!("http://127.0.0.2:{p}"),
    ];
    for (i, url) in spellings.iter().enumerate() {
        let tenant = format!("t{i}");
        let (status, body) = host.put_tenant(&tenant, json!({"adapter": "chaos", "crmConfig": {"hookUrl": url}})).await;
        assert_eq!(status, 200, "{url}: {body}");
        let e = host.failure(&tenant, "fetch", call_body(json!({"url": format!("{url}/x")}))).await;
        assert_eq!(e["kind"], "egress_denied", "{url}: {e}");
        let authority = url.trim_start_matches("http://");
        let e = host.failure(&tenant, "rawget", call_body(json!({"scheme": "http", "authority": authority}))).await;
        assert_eq!(e["kind"], "egress_denied", "raw {authority}: {e}");
    }
    let e = host.failure("t0", "fetch", call_body(json!({"url": format!("http://127.0.0.1:{p}/x")}))).await;
    assert!(e["message"].as_str().unwrap().contains("127.0.0.1 is not a public address"), "says why: {e}");
    assert_eq!(bait.accepted(), 0, "a loopback listener received a connection");
    assert_eq!(dialer.asked(), vec![], "nothing was dialed");
}

#[tokio::test]
async fn names_resolving_to_internal_addresses_are_denied_before_any_dial() {
    let names = [
        ("metadata.evil.test", "169.254.169.254"),
        ("lan.evil.test", "192.168.0.10"),
        ("cgnat.evil.test", "100.100.100.200"),
        ("mcast.evil.test", "239.1.2.3"),
        ("v6.evil.test", "fd12::1"),
        ("rebind.evil.test", "127.0.0.1"),
    ];
    let (host, dialer) = open_host(&names, &[]).await;
    for (name, ip) in names {
        let url = format!("https://{name}");
        host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {"hookUrl": url}})).await;
        let e = host.failure("t", "fetch", call_body(json!({"url": format!("{url}/latest/meta-data")}))).await;
        assert_eq!(e["kind"], "egress_denied", "{name}: {e}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{name} resolves to {ip}")), "{msg}");
    }
    // Literal addresses of the same kinds, without DNS.
    for url in ["http://169.254.169.254", "http://10.0.0.1:8080", "http://[fe80::1]", "http://100.64.0.1", "http://224.0.0.1"] {
        host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {"hookUrl": url}})).await;
        let e = host.failure("t", "fetch", call_body(json!({"url": format!("{url}/x")}))).await;
        assert_eq!(e["kind"], "egress_denied", "{url}: {e}");
    }
    assert_eq!(dialer.asked(), vec![], "the connector was never asked to dial");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let bait = Bait::start();
    let crm = echo_server().await;
    let location = format!("http://127.0.0.1:{}/steal", bait.port);
    crm.fault("/go", Fault::StatusHeaders(302, vec![("location".into(), location.clone())], String::new()));
    let (host, _) = open_host(&[], &[("api.chaos.test", &crm.url)]).await;
    host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let data = host.complete("t", "fetch", call_body(json!({"url": "https://api.chaos.test/go"}))).await;
    assert_eq!(data["status"], 302, "the adapter sees the redirect itself: {data}");
    assert_eq!(bait.accepted(), 0);
}

#[tokio::test]
async fn a_100_mb_response_is_cut_off_at_the_cap() {
    let crm = echo_server().await;
    crm.fault("/huge", Fault::FloodChunked(100 << 20));
    let host = chaos(&[("api.chaos.test", &crm.url)], json!({})).await;
    let before = vm_hwm_kib();
    let started = std::time::Instant::now();
    let e = host.failure("t1", "fetch", call_body(json!({"url": "https://api.chaos.test/huge"}))).await;
    assert_eq!(e["kind"], "response_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("larger than the 262144 bytes allowed (--max-response-bytes)"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!((vm_hwm_kib().saturating_sub(before) >> 10) < 64, "host memory stayed bounded");
    assert_eq!(host.complete("t1", "counter", call_body(json!({}))).await["count"], 1);
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_timeout() {
    let crm = echo_server().await;
    crm.fault("/never", Fault::Hang);
    let host = chaos(&[("api.chaos.test", &crm.url)], json!({})).await;
    let started = std::time::Instant::now();
    let e = host.failure("t1", "fetch", call_body(json!({"url": "https://api.chaos.test/never"}))).await;
    assert_eq!(e["kind"], "timeout", "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the request timeout ended it");
}

#[tokio::test]
async fn deep_recursion_and_raw_traps_are_trap_failures() {
    let host = chaos(&[], json!({})).await;
    let e = host.failure("t1", "recurse", call_body(json!({}))).await;
    assert_eq!(e["kind"], "trap", "{e}");
    // Rust on wasm32 keeps its frames on a shadow stack at the bottom of linear memory: deep
    // recursion runs off its end (an out-of-bounds access) before wasm's own stack overflows.
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("out of bounds memory access") || msg.contains("stack overflowed"), "{e}");
    let e = host.failure("t1", "trap", call_body(json!({}))).await;
    assert_eq!(e["kind"], "trap", "{e}");
    assert_eq!(host.complete("t1", "counter", call_body(json!({}))).await["count"], 1);
}

#[tokio::test]
async fn a_describe_that_never_returns_fails_the_deploy_within_the_deadline() {
    let host = TestHost::start(&[]).await;
    let started = std::time::Instant::now();
    let (status, body) = host.put_raw("/v1/adapters/stuck", crm_tests::component("stuck")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "invalid_component");
    assert!(body["error"]["message"].as_str().unwrap().contains("deadline"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(host.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_validate_config_that_never_returns_fails_the_tenant_put_within_the_deadline() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.put_raw("/v1/adapters/stuck", crm_tests::component("stuck-validate")).await;
    assert_eq!(status, 201, "describe answers: {body}");
    let started = std::time::Instant::now();
    let (status, body) = host.put_tenant("t", json!({"adapter": "stuck", "crmConfig": {}})).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("deadline_exceeded"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(host.get("/v1/tenants/t").await.0, 404, "nothing was stored");
}

// ---------------------------------------------------------------- per-tenant limits

#[tokio::test]
async fn tenant_limits_override_the_host_defaults_for_that_tenant_only() {
    let crm = echo_server().await;
    let host = TestHost::start(&[("api.chaos.test", &crm.url)]).await;
    host.deploy("chaos").await;
    let limits = json!({"memoryMb": 4, "deadlineMs": 300, "maxOutboundRequests": 3, "maxCrmDataBytes": 1000});
    let small = json!({"adapter": "chaos", "crmConfig": {}, "limits": limits});
    let (status, body) = host.put_tenant("small", small).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"], limits);
    host.put_tenant("big", json!({"adapter": "chaos", "crmConfig": {}})).await;

    let e = host.failure("small", "hog", call_body(json!({}))).await;
    assert!(e["message"].as_str().unwrap().contains("4 MiB"), "{e}");
    let started = std::time::Instant::now();
    let e = host.failure("small", "spin", call_body(json!({}))).await;
    assert_eq!(e["kind"], "deadline_exceeded");
    assert!(e["message"].as_str().unwrap().contains("300 ms"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let e = host.failure("big", "hog", call_body(json!({}))).await;
    assert!(e["message"].as_str().unwrap().contains("32 MiB"), "the other tenant keeps the host's: {e}");

    let flood = call_body(json!({"url": "https://api.chaos.test/x"}));
    let e = host.failure("small", "flood", flood.clone()).await;
    assert_eq!(e["kind"], "outbound_limit_exceeded", "{e}");
    assert_eq!(crm.requests_to("/x").len(), 3, "the tenant's maxOutboundRequests");
    let e = host.failure("big", "flood", flood).await;
    assert_eq!(crm.requests_to("/x").len(), 3 + crm_tests::test_limits().max_outbound_requests as usize, "the host's: {e}");
    let e = host.failure("small", "big", call_body(json!({"bytes": 2000}))).await;
    assert!(e["message"].as_str().unwrap().contains("1000 bytes"), "the tenant's maxCrmDataBytes: {e}");
    assert!(host.complete("big", "big", call_body(json!({"bytes": 2000}))).await["filler"].is_string());
}

#[tokio::test]
async fn invalid_tenant_limits_are_refused_with_the_field() {
    let host = TestHost::start(&[]).await;
    host.deploy("chaos").await;
    for (limits, field) in [
        (json!({"memoryMb": 0}), "limits.memoryMb"),
        (json!({"deadlineMs": 3_600_000}), "limits.deadlineMs"),
        (json!({"fuel": 1000}), "limits.fuel"),
    ] {
        let (status, body) = host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {}, "limits": limits})).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["kind"], "invalid_limits");
        assert_eq!(body["error"]["field"], field);
    }
    let (status, body) = host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {}, "limits": {"memMb": 1}})).await;
    assert_eq!(status, 400, "unknown limit names are refused: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("memMb"), "{body}");
}

#[tokio::test]
async fn tenant_limits_survive_a_restart() {
    let data = std::sync::Arc::new(crm_tests::TempDir::new("limits"));
    {
        let host = TestHost::start_in(Default::default(), data.clone()).await;
        host.deploy("chaos").await;
        let (s, b) = host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {}, "limits": {"maxOutboundRequests": 3}})).await;
        assert_eq!(s, 200, "{b}");
    }
    let host = TestHost::start_in(Default::default(), data).await;
    assert_eq!(host.get("/v1/tenants/t").await.1["limits"], json!({"maxOutboundRequests": 3}));
}

#[tokio::test]
async fn a_fuel_budget_stops_a_spinner_with_its_own_kind() {
    let limits = crm_host::Limits { fuel: Some(50_000_000), ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[]).await;
    host.deploy("chaos").await;
    host.put_tenant("t", json!({"adapter": "chaos", "crmConfig": {}, "limits": {"fuel": 1_000_000}})).await;
    host.put_tenant("u", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let e = host.failure("t", "spin", call_body(json!({}))).await;
    assert_eq!(e["kind"], "fuel_exhausted", "{e}");
    assert!(e["message"].as_str().unwrap().contains("1000000 fuel"), "{e}");
    let e = host.failure("u", "spin", call_body(json!({}))).await;
    assert!(e["message"].as_str().unwrap().contains("50000000 fuel"), "the host's default budget: {e}");
    assert_eq!(host.complete("t", "counter", call_body(json!({}))).await["count"], 1, "ordinary work fits the budget");
}

#[tokio::test]
async fn a_call_whose_client_hangs_up_stops_running() {
    let host = chaos(&[], json!({})).await;
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(300)).build().unwrap();
    let hung_up = impatient
        .post(format!("{}/v1/tenants/t1/crm/spin", host.url))
        .body(call_body(json!({})).to_string())
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up");
    let in_flight = || async {
        let text = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
        text.lines().find(|l| l.starts_with("crm_instances_in_flight ")).map(|l| l.to_string())
    };
    let started = std::time::Instant::now();
    while in_flight().await.as_deref() != Some("crm_instances_in_flight 0") {
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "the spinner kept running: {:?}", in_flight().await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Pooled keep-alive connections save handshakes, never checks: a tenant's calls share one
/// connection to its CRM, and once its allowed origins change, its next request is refused
/// before any connection (pooled or new) is looked at.
#[tokio::test]
async fn pooled_connections_are_reused_but_egress_is_checked_per_request() {
    let up = echo_server().await;
    let dialer = crm_tests::LoopbackDialer::default();
    let connector = crm_host::outbound::connect::Connector::new(
        std::sync::Arc::new(crm_tests::LocalResolver::default()),
        std::sync::Arc::new(dialer.clone()),
    );
    let config = crm_tests::TestHostConfig { connector: Some(connector), ..Default::default() }
        .routes(&[("hooks.example.test", up.url.as_str()), ("other.example.test", up.url.as_str())]);
    let host = TestHost::start_config(config).await;
    host.deploy("chaos").await;
    let tenant = |hook: &str| json!({"adapter": "chaos", "crmConfig": {"hookUrl": hook}});
    assert_eq!(host.put_tenant("t1", tenant("https://hooks.example.test/in")).await.0, 200);
    let fetch = call_body(json!({"url": "https://hooks.example.test/in"}));
    for _ in 0..5 {
        assert_eq!(host.complete("t1", "fetch", fetch.clone()).await["status"], 200);
    }
    assert_eq!(up.requests().len(), 5);
    assert_eq!(dialer.asked().len(), 1, "five calls, one connection: {:?}", dialer.asked());

    // The tenant's endpoint moves: hooks.example.test is no longer one of its origins, though
    // an idle connection to the very same address is in the pool.
    assert_eq!(host.put_tenant("t1", tenant("https://other.example.test/in")).await.0, 200);
    let e = host.failure("t1", "fetch", fetch).await;
    assert_eq!(e["kind"], "egress_denied", "{e}");
    assert_eq!(up.requests().len(), 5, "the refused request reached nothing");
    let other = call_body(json!({"url": "https://other.example.test/in"}));
    assert_eq!(host.complete("t1", "fetch", other).await["status"], 200);
    assert_eq!(up.requests().len(), 6);
}

/// Host memory through responses: an adapter that makes requests at once and keeps every
/// response unread makes the host hold their bodies. Past `--max-outbound-bytes` (16 MiB)
/// the call ends on that limit, however many requests it runs at once; within it, the same
/// adapter completes.
#[tokio::test]
async fn responses_held_at_once_are_bounded_by_the_calls_outbound_bytes() {
    fn big(_: &mut (), _: &Recorded) -> Reply {
        (200, json!({"filler": "x".repeat(3 << 20)}))
    }
    let crm = Emulator::start((), big).await;
    let limits = crm_host::Limits { max_response_bytes: 4 << 20, max_outbound_bytes: 16 << 20, ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[("hoard.test", &crm.url)]).await;
    host.deploy("chaos").await;
    host.put_tenant("t1", json!({"adapter": "chaos", "crmConfig": {"hookUrl": "http://hoard.test"}})).await;
    let e = host.failure("t1", "hoard", call_body(json!({"authority": "hoard.test", "requests": 8}))).await;
    assert_eq!(e["kind"], "outbound_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--max-outbound-bytes"), "{e}");
    let done = host.complete("t1", "hoard", call_body(json!({"authority": "hoard.test", "requests": 4}))).await;
    assert_eq!(done["kept"], 4, "{done}");
}

/// Host memory through a request's strings: a path is the guest's to choose and the host
/// keeps it with the request; past 8 KiB the setter fails and the call ends on the limit.
#[tokio::test]
async fn long_request_strings_are_refused() {
    let host = chaos(&[], json!({})).await;
    let e = host.failure("t1", "longpath", call_body(json!({"bytes": 1 << 20}))).await;
    assert_eq!(e["kind"], "resource_limit_exceeded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("path"), "{e}");
    let ok = host.complete("t1", "longpath", call_body(json!({"bytes": 2000}))).await;
    assert_eq!(ok["kept"], 64, "{ok}");
}

/// A call's trace keeps 1 MiB of bodies and headers: exchanges past it are recorded (method,
/// URL, status, timing) with `omitted` and without them.
#[tokio::test]
async fn a_calls_trace_keeps_a_bounded_share_of_its_exchanges() {
    fn big(_: &mut (), _: &Recorded) -> Reply {
        (200, json!({"filler": "x".repeat(100 << 10)}))
    }
    let crm = Emulator::start((), big).await;
    let limits = crm_host::Limits { max_outbound_requests: 30, max_response_bytes: 1 << 20, ..crm_tests::test_limits() };
    let host = TestHost::start_with(limits, &[("api.chaos.test", &crm.url)]).await;
    host.deploy("chaos").await;
    host.put_tenant("t1", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let (_, answer, call_id) = host.call_with_id("t1", "flood", call_body(json!({"url": "https://api.chaos.test/big"}))).await;
    assert_eq!(answer["error"]["kind"], "outbound_limit_exceeded", "{answer}");
    let (_, trace) = host.get(&format!("/v1/tenants/t1/calls/{call_id}")).await;
    let exchanges = trace["outbound"].as_array().unwrap();
    assert_eq!(exchanges.len(), 30, "every exchange is recorded");
    let kept: usize = exchanges.iter().filter_map(|e| e["responseBody"]["data"].as_str()).map(str::len).sum();
    assert!(kept <= 1 << 20, "{kept} bytes of bodies kept");
    let omitted = exchanges.iter().filter(|e| e["omitted"] == true).count();
    assert!(omitted >= 10, "{omitted} exchanges omitted");
    assert!(exchanges.iter().all(|e| e["status"] == 200 && e["url"] == "https://api.chaos.test/big"));
}

/// A request without the SDK's idempotency marker (raw bindings) is retried only when its
/// method is safe: a POST answered 503 is sent once, a GET until it succeeds.
#[tokio::test]
async fn unmarked_requests_are_retried_only_for_safe_methods() {
    let crm = echo_server().await;
    let limits = crm_tests::test_limits();
    let host = TestHost::start_with(limits, &[("raw.test", &crm.url)]).await;
    host.deploy("chaos").await;
    host.put_tenant("t1", json!({"adapter": "chaos", "crmConfig": {"hookUrl": "http://raw.test"}})).await;
    let raw = |method: &str| call_body(json!({"scheme": "http", "authority": "raw.test", "method": method}));
    crm.fault("/raw", Fault::Times(2, Box::new(Fault::Status(503, "busy".into()))));
    let out = host.complete("t1", "rawget", raw("GET")).await;
    assert_eq!(out["status"], 200, "retried until it succeeded: {out}");
    assert_eq!(crm.requests_to("/raw").len(), 3);
    crm.fault("/raw", Fault::Times(2, Box::new(Fault::Status(503, "busy".into()))));
    let out = host.complete("t1", "rawget", raw("POST")).await;
    assert_eq!(out["status"], 503, "not retried: {out}");
    assert_eq!(crm.requests_to("/raw").len(), 4, "one POST");
}

/// Adapters are linked with a 48 KiB stack (xtask's `ADAPTER_STACK`): the most deeply
/// nested params the host accepts still reach the adapter and come back, with no stack
/// exhausted on the way (the SDK reads the call and writes crmData without recursion; the
/// chaos adapter's echo copies the params with serde's recursive code on top).
#[tokio::test]
async fn the_deepest_params_the_host_accepts_fit_an_adapters_stack() {
    let host = TestHost::start_with(crm_tests::test_limits(), &[]).await;
    host.deploy("chaos").await;
    host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    let nested = |depth: usize| (0..depth).fold(json!(1), |inner, _| json!([inner]));
    let chat = json!({"id": "c", "phone": "1"});
    // The answer nests one level deeper than the params: read it as text.
    let call = |depth: usize| {
        let body = json!({"chat": chat, "params": {"deep": nested(depth)}});
        let req = reqwest::Client::new().post(format!("{}/v1/tenants/acme/crm/echo", host.url)).json(&body);
        async move {
            let resp = req.send().await.expect("host answers");
            (resp.status().as_u16(), resp.text().await.expect("answer"))
        }
    };
    let mut accepted = None;
    for depth in (100..=130).rev() {
        let (status, answer) = call(depth).await;
        if status == 200 {
            accepted = Some((depth, answer));
            break;
        }
        assert_eq!(status, 400, "{answer}");
    }
    let (depth, answer) = accepted.expect("the host accepts params nested 100 deep");
    assert!(answer.starts_with(r#"{"outcome":"complete""#), "depth {depth}: {answer}");
    assert!(answer.contains(&format!(r#""params":{{"deep":{}}}"#, nested(depth))), "depth {depth}: {answer}");
}

/// A CRM's answer may nest as deep as JSON allows (serde_json's 127 levels): the SDK reads it
/// without recursion, as a `Value` or as a type made from one, and one level more is an
/// `upstream` error, not a crashed adapter.
#[tokio::test]
async fn the_deepest_answer_a_crm_can_send_fits_an_adapters_stack() {
    let crm = echo_server().await;
    let host = chaos(&[("api.chaos.test", &crm.url)], json!({})).await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let fetch = |read: &str| call_body(json!({"url": "https://api.chaos.test/deep", "read": read}));
    crm.fault("/deep", Fault::Status(200, nested(127)));
    for read in ["value", "typed"] {
        let data = host.complete("t1", "fetch", fetch(read)).await;
        assert_eq!(data["depth"], 127, "{read}: {data}");
    }
    crm.fault("/deep", Fault::Status(200, nested(128)));
    let e = host.failure("t1", "fetch", fetch("value")).await;
    assert_eq!(e["kind"], "upstream", "{e}");
    assert!(e["message"].as_str().unwrap().contains("recursion limit exceeded"), "{e}");
}
