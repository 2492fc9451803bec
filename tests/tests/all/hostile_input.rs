//! Hostile input at every door the host opens to the outside: the call API, tenant
//! registration, deploys and the webhook. Oversized bodies get 413, malformed or absurdly
//! nested JSON gets 400 naming what was wrong; nothing crashes, hangs or is stored.

use crm_tests::TestHost;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;

async fn host() -> TestHost {
    let host = TestHost::start(&[("*.planfix.com", "http://127.0.0.1:9")]).await;
    host.deploy("chaos").await;
    host.deploy("planfix").await;
    let (s, b) = host.put_tenant("acme", json!({"adapter": "chaos", "crmConfig": {}})).await;
    assert_eq!(s, 200, "{b}");
    let planfix = json!({"planfixUrl": "https://acme.planfix.com", "token": "t", "providerId": "p", "chatToken": "in-token"});
    let (s, b) = host.put_tenant("pf", json!({"adapter": "planfix", "crmConfig": planfix})).await;
    assert_eq!(s, 200, "{b}");
    host
}

/// `{"a":[[[[…1…]]]]}` nested `depth` levels deep.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

async fn still_serving(host: &TestHost) {
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    assert_eq!(host.complete("acme", "counter", chat).await["count"], 1, "the host keeps serving");
}

#[tokio::test]
async fn a_64_mib_body_is_refused_with_413_at_every_door() {
    let host = host().await;
    // One byte past 64 MiB: over every door's limit (a component may have 64 MiB at most).
    let big = vec![b' '; 64 * MIB + 1];
    for (method, path) in [
        ("POST", "/v1/tenants/acme/crm/echo"),
        ("PUT", "/v1/tenants/other"),
        ("POST", "/v1/tenants/pf/webhook"),
        ("PUT", "/v1/adapters/chaos"),
    ] {
        let (status, body) = host.request_as(None, method, path, Some(big.clone())).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
        assert_eq!(body["error"]["kind"], "payload_too_large", "{method} {path}: {body}");
    }
    assert_eq!(host.get("/v1/tenants/other").await.0, 404, "nothing was stored");
    still_serving(&host).await;
}

#[tokio::test]
async fn json_nested_100000_levels_is_a_400_not_a_stack_overflow() {
    let host = host().await;
    let deep = nested(100_000);
    let call = format!(r#"{{"chat": {{"id": "c", "phone": "1"}}, "params": {{"x": {deep}}}}}"#);
    let (status, body) = host.post_raw("/v1/tenants/acme/crm/echo", call.into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("recursion limit"), "{body}");

    let tenant = format!(r#"{{"adapter": "chaos", "crmConfig": {{"x": {deep}}}}}"#);
    let (status, body) = host.put_raw("/v1/tenants/other", tenant.into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("recursion limit"), "{body}");

    let chat = format!(r#"{{"chat": {{"id": "c", "phone": "1", "crmData": {{"x": {deep}}}}}}}"#);
    let (status, body) = host.post_raw("/v1/tenants/acme/crm/echo", chat.into_bytes()).await;
    assert_eq!(status, 400, "{body}");

    // The webhook hands the body to the adapter, which parses in the sandbox.
    for (content_type, body) in [
        ("application/json", deep.clone()),
        ("application/x-www-form-urlencoded", format!("token=in-token&data={deep}")),
    ] {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/tenants/pf/webhook", host.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{content_type}: {}", resp.status());
    }
    still_serving(&host).await;
}

#[tokio::test]
async fn malformed_bodies_are_400s_that_say_where() {
    let host = host().await;
    for (path, body, says) in [
        ("/v1/tenants/acme/crm/echo", "{\"chat\": ", "EOF"),
        ("/v1/tenants/acme/crm/echo", "[]", "object"),
        ("/v1/tenants/acme/crm/echo", "{\"chat\": {\"id\": \"c\", \"phone\": {\"x\": 1}}}", "chat.phone"),
        ("/v1/tenants/acme/crm/echo", "\u{0}\u{1}binary", "JSON object"),
        ("/v1/tenants/acme/crm/echo", "", "empty"),
        // One object, then more: not a body (and nothing of it may reach a trace).
        ("/v1/tenants/acme/crm/echo", "{\"chat\": {\"id\": \"c\"}} {\"chat\": {}}", "trailing characters"),
        ("/v1/tenants/acme/crm/echo", "{\"chat\": {\"id\": \"c\"}}]", "trailing characters"),
    ]
    .map(|(path, body, says)| (path, body.as_bytes().to_vec(), says))
    .into_iter()
    // Not UTF-8, in a field no part of the host reads.
    .chain([("/v1/tenants/acme/crm/echo", b"{\"chat\": {\"id\": \"c\"}, \"note\": \"\xff\"}".to_vec(), "invalid UTF-8 at line 1 column 32")])
    {
        let (status, answer) = host.post_raw(path, body.clone()).await;
        assert_eq!(status, 400, "{body:?}: {answer}");
        assert_eq!(answer["error"]["kind"], "bad_request");
        assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{body:?}: {answer}");
    }
    let (status, answer) = host.put_raw("/v1/tenants/x", b"{\"adapter\": 7}".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("adapter"), "{answer}");
    let (status, answer) = host.put_raw("/v1/tenants/x", b"{\"adapter\": \"echo\"} x".to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("trailing characters"), "{answer}");
    let (status, _) = host.put_raw("/v1/adapters/chaos", b"\0asm garbage".to_vec()).await;
    assert_eq!(status, 400);
    still_serving(&host).await;
}

#[tokio::test]
async fn a_flood_of_concurrent_bad_requests_does_not_disturb_good_ones() {
    let host = std::sync::Arc::new(host().await);
    let mut bad = Vec::new();
    for i in 0..64 {
        let h = host.clone();
        bad.push(tokio::spawn(async move {
            let body = if i % 2 == 0 { nested(50_000).into_bytes() } else { vec![b'{'; 4 * MIB] };
            h.post_raw("/v1/tenants/acme/crm/echo", body).await.0
        }));
    }
    still_serving(&host).await;
    for b in bad {
        let status = b.await.unwrap();
        assert_eq!(status, 400, "every bad request gets its answer");
    }
    let _: Value = host.get("/healthz").await.1;
}
