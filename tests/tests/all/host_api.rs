//! The host's HTTP API contract: statuses, bodies, errors that say what was wrong.

use crm_tests::{component, TestHost, TestHostConfig};
use serde_json::{json, Value};

async fn host_with_plando() -> TestHost {
    let host = TestHost::start(&[]).await;
    host.deploy("plando").await;
    host
}

#[tokio::test]
async fn healthz_answers() {
    let host = TestHost::start(&[]).await;
    assert_eq!(host.get("/healthz").await, (200, json!({"status": "ok"})));
    // Deep: the database answers; the cursor is the last audit entry the view includes.
    assert_eq!(host.get("/healthz?deep=1").await, (200, json!({"status": "ok", "store": "ok", "cursor": 0})));
    host.deploy("plando").await;
    let reopened = TestHost::start_in(TestHostConfig::default(), host.data_dir.clone()).await;
    assert_eq!(reopened.get("/healthz?deep=true").await.1["cursor"], 1, "restored with the state");
    let (s, e) = host.get("/healthz?deep=maybe").await;
    assert_eq!((s, e["error"]["kind"].clone()), (400, json!("bad_request")), "{e}");
}

#[tokio::test]
async fn deploy_answers_201_with_name_version_digest_operations() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.put_raw("/v1/adapters/plando", component("plando")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "plando");
    assert_eq!(body["version"], "0.1.0");
    assert!(body["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(body["operations"], json!(["getCustomerDetails", "newOpportunity", "openTicket", "closeTicket"]));
    assert_eq!(body["state"], "active");
    assert_eq!(body["invalidTenants"], json!([]));
    let (status, list) = host.get("/v1/adapters").await;
    assert_eq!(status, 200);
    let summary: Value = ["name", "version", "digest", "operations"].iter().map(|k| (k.to_string(), body[k].clone())).collect::<serde_json::Map<_, _>>().into();
    assert_eq!(list["adapters"], json!([summary]));
}

#[tokio::test]
async fn adapter_details_show_schema_secrets_and_outbound_hosts() {
    let host = host_with_plando().await;
    let (status, d) = host.get("/v1/adapters/plando").await;
    assert_eq!(status, 200);
    assert_eq!(d["secretFields"], json!(["token"]));
    assert_eq!(d["outboundHosts"], json!(["https://plando.co.il"]));
    assert_eq!(d["configSchema"]["required"], json!(["token", "chat"]));
    assert_eq!(d["configSchema"]["properties"]["token"]["writeOnly"], true);
    assert_eq!(d["configSchema"]["properties"]["closeTicketMaxMessagesCount"]["default"], 30);
    assert_eq!(host.get("/v1/adapters/nope").await.0, 404);
}

#[tokio::test]
async fn deploy_refuses_bytes_that_are_not_a_component() {
    let host = TestHost::start(&[]).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello".to_vec(), "not WebAssembly"),
        (b"\0asm\x01\0\0\0".to_vec(), "core wasm module"),
        (b"\0asm\x0d\0\x01\0garbage".to_vec(), "cannot compile"),
    ];
    for (bytes, says) in cases {
        let (status, body) = host.put_raw("/v1/adapters/plando", bytes).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["kind"], "invalid_component");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(host.get("/v1/adapters").await.1, json!({"adapters": []}));
}

#[tokio::test]
async fn deploy_refuses_a_component_importing_sockets_naming_the_import() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.put_raw("/v1/adapters/sockets", component("sockets")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "forbidden_import");
    let import = body["error"]["import"].as_str().unwrap();
    assert!(import.starts_with("wasi:sockets/"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(import));
}

#[tokio::test]
async fn deploy_refuses_a_component_of_another_world() {
    let host = TestHost::start(&[]).await;
    // The smallest valid component: no imports, no exports.
    let (status, body) = host.put_raw("/v1/adapters/empty", b"\0asm\x0d\0\x01\0".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "wrong_world");
    assert!(body["error"]["message"].as_str().unwrap().contains("crm:adapter/crm@0.1"), "{body}");
}

#[tokio::test]
async fn deploy_refuses_a_name_that_differs_from_the_components() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.put_raw("/v1/adapters/leadim", component("plando")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["kind"], "name_mismatch");
    assert!(body["error"]["message"].as_str().unwrap().contains("'plando'"), "{body}");
}

#[tokio::test]
async fn tenant_put_get_redacts_secrets_and_delete_removes() {
    let host = host_with_plando().await;
    let config = json!({"token": "s3cret", "chat": "77", "defaultEmail": "a@example.com"});
    let (status, put) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": config, "projectId": "acme"})).await;
    assert_eq!(status, 200, "{put}");
    let (status, got) = host.get("/v1/tenants/acme").await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({"tenant": "acme", "adapter": "plando", "projectId": "acme", "pin": null, "limits": {},
               "crmConfig": {"token": "[redacted]", "chat": "77", "defaultEmail": "a@example.com"}})
    );
    assert!(!put.to_string().contains("s3cret"));
    assert_eq!(host.delete("/v1/tenants/acme").await.0, 204);
    let (status, body) = host.get("/v1/tenants/acme").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["kind"], "unknown_tenant");
    assert_eq!(host.delete("/v1/tenants/acme").await.0, 404);
}

#[tokio::test]
async fn tenant_with_an_unknown_adapter_is_404() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {}})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["kind"], "unknown_adapter");
}

#[tokio::test]
async fn tenant_body_errors_say_what_is_wrong() {
    let host = host_with_plando().await;
    let (status, body) = host.put_raw("/v1/tenants/acme", b"{\"adapter\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("malformed JSON"), "{body}");
    let (status, body) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": "token=1"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("crmConfig"), "{body}");
    let (status, body) = host.put_tenant("bad id!", json!({"adapter": "plando"})).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn call_for_an_unknown_tenant_is_404() {
    let host = host_with_plando().await;
    let (status, body) = host.call("ghost", "getCustomerDetails", json!({"chat": {"id": "1", "phone": "1"}})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["kind"], "unknown_tenant");
}

#[tokio::test]
async fn call_with_malformed_bodies_is_400_saying_where() {
    let host = host_with_plando().await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}})).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"chat\": {".to_vec(), "malformed JSON"),
        (b"[]".to_vec(), "the call body must be a JSON object"),
        (json!({"params": {}}).to_string().into_bytes(), "chat"),
        (json!({"chat": {"id": "1", "phone": {"cc": 972}}}).to_string().into_bytes(), "chat.phone"),
        (json!({"chat": "972501234567"}).to_string().into_bytes(), "chat"),
        (
            json!({"chat": {"id": "1", "phone": "1", "messages": [{"id": "m", "direction": "up", "text": "", "timestamp": 1, "from": "a", "to": "b"}]}})
                .to_string()
                .into_bytes(),
            "chat.messages[0].direction",
        ),
        (json!({"chat": {"id": "1", "phone": "1"}, "params": [1]}).to_string().into_bytes(), "params"),
    ];
    for (bytes, says) in cases {
        let (status, body) = host.post_raw("/v1/tenants/acme/crm/getCustomerDetails", bytes).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["kind"], "bad_request");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "expected '{says}' in {body}");
    }
}

#[tokio::test]
async fn unknown_func_id_is_an_unsupported_failure() {
    let host = host_with_plando().await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}})).await;
    let e = host.failure("acme", "deleteEverything", json!({"chat": {"id": "1", "phone": "1"}})).await;
    assert_eq!(e["kind"], "unsupported");
    assert!(e["message"].as_str().unwrap().contains("deleteEverything"), "{e}");
}

#[tokio::test]
async fn unknown_paths_are_json_404s() {
    let host = TestHost::start(&[]).await;
    let (status, body) = host.get("/v2/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["kind"], "not_found");
}

#[tokio::test]
async fn an_invalid_crm_config_is_422_with_the_documented_message() {
    let host = host_with_plando().await;
    let (status, body) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"chat": "1"}})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": {"kind": "invalid_config", "field": "token", "message": "crmConfig.token: is required"}})
    );
    assert_eq!(host.get("/v1/tenants/acme").await.0, 404, "a refused tenant is not stored");
}

#[tokio::test]
async fn every_error_is_json_even_the_ones_axum_makes() {
    let host = host_with_plando().await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}})).await;
    // A call body over the 8 MiB limit.
    let (status, body) = host.post_raw("/v1/tenants/acme/crm/getCustomerDetails", vec![b' '; (8 << 20) + 1]).await;
    assert_eq!((status, body["error"]["kind"].clone()), (413, json!("payload_too_large")), "{body}");
    // A method the path does not take.
    let (status, body) = host.delete("/v1/adapters").await;
    assert_eq!((status, body["error"]["kind"].clone()), (405, json!("method_not_allowed")), "{body}");
    // A malformed query.
    let (status, body) = host.get("/v1/audit?after=%ZZ").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "bad_request");
    let (status, body) = host.get("/v1/audit?after=yesterday").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("after=yesterday"), "{body}");
}

#[tokio::test]
async fn open_mode_answers_only_requests_from_this_machine() {
    let host = TestHost::start(&[]).await;
    let addr = host.url.trim_start_matches("http://").to_string();
    let get = |name: &str, origin: &str| format!("GET /healthz HTTP/1.1\r\nhost: {name}\r\n{origin}connection: close\r\n\r\n");
    let post = |origin: &str| {
        format!("PUT /v1/tenants/t HTTP/1.1\r\nhost: {addr}\r\n{origin}content-length: 2\r\nconnection: close\r\n\r\n{{}}")
    };
    let status = |answer: Option<String>| answer.expect("an answer")[9..12].to_string();
    // A page whose own name was rebound to 127.0.0.1 still sends that name.
    for name in ["evil.example", "evil.example:80", "10.0.0.1", "localhost.evil.example"] {
        assert_eq!(status(crm_tests::raw_http(&host.url, &get(name, "")).await), "421", "Host: {name}");
    }
    for name in [addr.as_str(), "localhost:1", "[::1]:80", "127.0.0.2"] {
        assert_eq!(status(crm_tests::raw_http(&host.url, &get(name, "")).await), "200", "Host: {name}");
    }
    let refused = crm_tests::raw_http(&host.url, &get("evil.example", "")).await.unwrap();
    assert!(refused.contains("misdirected_request") && refused.contains("loopback"), "{refused}");
    // Another site's page may read /healthz, but not change anything.
    assert_eq!(status(crm_tests::raw_http(&host.url, &get(&addr, "origin: https://evil.example\r\n")).await), "200");
    for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example"] {
        let answer = crm_tests::raw_http(&host.url, &post(&format!("origin: {origin}\r\n"))).await.unwrap();
        assert!(answer.starts_with("http/1.1 403") && answer.contains("another site"), "Origin: {origin}: {answer}");
    }
    // The developer's own tools on this machine are not another site (400: the body was read
    // and checked, so the request got through).
    assert_eq!(status(crm_tests::raw_http(&host.url, &post("origin: http://localhost:5173\r\n")).await), "400");
    assert_eq!(host.get("/v1/tenants/t").await.0, 404, "nothing was stored");

    // With an admin token the host is meant to be reached by name: no such rule.
    let guarded = TestHost::start_config(TestHostConfig { admin_token: Some("a-long-enough-admin-token".into()), ..Default::default() }).await;
    assert_eq!(status(crm_tests::raw_http(&guarded.url, &get("crm.example.com", "")).await), "200");
}

#[tokio::test]
async fn metrics_name_no_tenant_and_callers_cannot_mint_series() {
    let crm = crm_tests::emulator::Emulator::start((), |_: &mut (), _| (200, json!({"ok": true}))).await;
    let host = TestHost::start(&[("customer-name.example", &crm.url), ("api.chaos.test", &crm.url)]).await;
    host.deploy("chaos").await;
    let tenant = "tenant-with-a-name";
    let config = json!({"adapter": "chaos", "crmConfig": {"hookUrl": "https://customer-name.example"}});
    assert_eq!(host.put_tenant(tenant, config).await.0, 200);
    let call = |url: &str| json!({"chat": {"id": "c", "phone": "1"}, "params": {"url": url}});
    host.complete(tenant, "fetch", call("https://customer-name.example/x")).await;
    host.complete(tenant, "fetch", call("https://api.chaos.test/y")).await;
    let metrics = || async { reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap() };
    let series = |text: &str| text.lines().filter(|l| l.starts_with("crm_calls_total{")).count();
    host.failure(tenant, "made-up-0", call("")).await;
    let before = series(&metrics().await);
    for i in 1..50 {
        assert_eq!(host.failure(tenant, &format!("made-up-{i}"), call("")).await["kind"], "unsupported");
    }
    let text = metrics().await;
    assert_eq!(series(&text), before, "made-up func_ids mint no series:\n{text}");
    assert!(text.contains(r#"func_id="unsupported""#), "{text}");
    for private in [tenant, "customer-name", "made-up-"] {
        assert!(!text.contains(private), "{private} in /metrics:\n{text}");
    }
    assert!(text.contains(r#"host="endpoint""#) && text.contains(r#"host="https://api.chaos.test""#), "{text}");

    // The per-tenant figures are the admin's to read.
    let (s, stats) = host.get(&format!("/v1/tenants/{tenant}/stats")).await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!((stats["calls"]["complete"].clone(), stats["calls"]["failure"].clone()), (json!(2), json!(50)), "{stats}");
    assert_eq!(stats["failures"]["unsupported"], 50, "{stats}");
    assert_eq!(host.get("/v1/tenants/nobody/stats").await.0, 404);
}

#[tokio::test]
async fn deep_health_tells_only_the_admin_why() {
    let host = TestHost::start_config(TestHostConfig { admin_token: Some("a-long-enough-admin-token".into()), ..Default::default() }).await;
    assert_eq!(host.request_as(None, "GET", "/healthz?deep=1", None).await, (200, json!({"status": "ok"})));
    assert_eq!(host.get("/healthz?deep=1").await, (200, json!({"status": "ok", "store": "ok", "cursor": 0})));
    let (s, _) = host.request_as(None, "GET", "/v1/tenants/t/stats", None).await;
    assert_eq!(s, 401, "stats are the admin's");
}
