//! Planfix through the real host and the real component, against the Planfix emulator:
//! the chat API the platform calls (Planfix's chat API) and the messages Planfix sends back
//! (`POST /v1/tenants/{t}/webhook`, stored durably, read through `/events`).

use crm_tests::planfix::{self, PlanfixEmulator, ReplyForm, API_PATH};
use crm_tests::{TestHost, TestHostConfig};
use serde_json::{json, Value};
use std::sync::Arc;

const ADMIN: &str = "planfix-admin";

async fn setup() -> (PlanfixEmulator, TestHost) {
    let crm = planfix::start("pf-token", "texter").await;
    let config = TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default().routes(&[("*.planfix.com", &crm.url)]) };
    let host = TestHost::start_config(config).await;
    host.deploy("planfix").await;
    (crm, host)
}

fn config() -> Value {
    json!({"planfixUrl": "https://acme.planfix.com", "token": "pf-token", "providerId": "texter", "chatToken": "in-token"})
}

async fn tenant(host: &TestHost, config: Value) {
    let (s, body) = host.put_tenant("acme", json!({"adapter": "planfix", "projectId": "acme", "crmConfig": config})).await;
    assert_eq!(s, 200, "{body}");
}

fn chat() -> Value {
    json!({"id": "chat-1", "phone": "+972-50-123-4567", "title": "Dana Levi Cohen", "agent": {"email": "avi@acme.example"}})
}

fn pairs(r: &crm_tests::emulator::Recorded) -> Vec<(String, String)> {
    r.form()
}

fn field<'a>(p: &'a [(String, String)], k: &str) -> Vec<&'a str> {
    p.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect()
}

// ----- platform -> Planfix --------------------------------------------------------------

#[tokio::test]
async fn new_message_sends_planfix_names_with_chat_defaults_in_order() {
    let (crm, host) = setup().await;
    let mut cfg = config();
    cfg["channel"] = json!("whatsapp");
    tenant(&host, cfg).await;
    let params = json!({"message": "שלום 👋", "attachments": [{"name": "a.pdf", "url": "https://f.test/a.pdf"}, {"name": "b.jpg", "url": "https://f.test/b.jpg"}],
                        "data_utm_source": "wa", "contactEmail": "dana@example.com"});
    let d = host.complete("acme", "newMessage", json!({"chat": chat(), "params": params})).await;
    assert_eq!(d, json!({"chatId": "chat-1"}));
    let r = crm.single(API_PATH);
    assert_eq!(r.header("host"), Some("acme.planfix.com"));
    assert!(r.header("content-type").unwrap().starts_with("application/x-www-form-urlencoded"));
    let got: Vec<(String, String)> = pairs(&r);
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("cmd", "newMessage"),
            ("providerId", "texter"),
            ("planfix_token", "pf-token"),
            ("channel", "whatsapp"),
            ("chatId", "chat-1"),
            ("message", "שלום 👋"),
            ("contactId", "972501234567"),
            ("contactName", "Dana"),
            ("contactLastName", "Levi Cohen"),
            ("contactEmail", "dana@example.com"),
            ("contactPhone", "972501234567"),
            ("attachments[name]", "a.pdf"),
            ("attachments[url]", "https://f.test/a.pdf"),
            ("attachments[name]", "b.jpg"),
            ("attachments[url]", "https://f.test/b.jpg"),
            ("data_utm_source", "wa"),
        ]
    );
    // The emulated Planfix made a task and a contact of the new chat.
    let (task, contact) = crm.with_state(|s| (s.tasks[0].clone(), s.contacts[0].clone()));
    assert_eq!((task.chat_id.as_str(), task.contact_id.as_str()), ("chat-1", "972501234567"));
    assert_eq!(task.fields, [("data_utm_source".to_string(), "wa".to_string())]);
    assert_eq!((contact.name.as_str(), contact.last_name.as_str(), contact.phone.as_str()), ("Dana", "Levi Cohen", "972501234567"));
}

#[tokio::test]
async fn later_messages_of_a_chat_go_to_its_task_and_echoes_carry_the_agent() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "first"}})).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "reply", "isEcho": true}})).await;
    let other = json!({"id": "chat-2", "phone": "972509999999", "title": "Other"});
    host.complete("acme", "newMessage", json!({"chat": other, "params": {"message": "hello"}})).await;
    let tasks = crm.with_state(|s| s.tasks.clone());
    assert_eq!(tasks.len(), 2, "one task per chat");
    assert_eq!(tasks[0].messages.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["first", "reply"]);
    assert!(tasks[1].number > tasks[0].number, "task numbers increase");
    let echo = &crm.requests_to(API_PATH)[1];
    let p = pairs(echo);
    assert_eq!(field(&p, "isEcho"), ["1"]);
    assert_eq!(field(&p, "userEmail"), ["avi@acme.example"], "the agent's email for echoes");
    assert!(field(&pairs(&crm.requests_to(API_PATH)[0]), "userEmail").is_empty(), "not for customer messages");
    assert!(field(&p, "channel").is_empty(), "channel only when set");
}

#[tokio::test]
async fn new_message_defaults_to_the_chats_newest_message_and_its_media() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    let mut c = chat();
    c["messages"] = json!([
        {"id": "m1", "direction": "incoming", "text": "older", "timestamp": 1, "from": "a", "to": "b"},
        {"id": "m2", "direction": "incoming", "text": "newest", "timestamp": 2, "from": "a", "to": "b",
         "media": [{"url": "https://f.test/x/photo.jpg", "fileName": "photo.jpg"}]}]);
    host.complete("acme", "newMessage", json!({"chat": c})).await;
    let p = pairs(&crm.single(API_PATH));
    assert_eq!(field(&p, "message"), ["newest"]);
    assert_eq!((field(&p, "attachments[name]"), field(&p, "attachments[url]")), (vec!["photo.jpg"], vec!["https://f.test/x/photo.jpg"]));
    let e = host.failure("acme", "newMessage", json!({"chat": chat()})).await;
    assert_eq!((e["kind"].clone(), e["field"].clone()), (json!("invalid_params"), json!("message")), "nothing to send: {e}");
}

#[tokio::test]
async fn get_task_and_get_contact_read_numbers_in_every_reply_form() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "hi"}})).await;
    let (task, contact) = crm.with_state(|s| (s.tasks[0].number, s.contacts[0].number));
    for form in [ReplyForm::Plain, ReplyForm::Data, ReplyForm::DataText] {
        crm.with_state(|s| s.reply_form = form);
        assert_eq!(host.complete("acme", "getTask", json!({"chat": chat()})).await, json!({"taskNumber": task}), "{form:?}");
        assert_eq!(host.complete("acme", "getContact", json!({"chat": chat()})).await, json!({"contactNumber": contact}), "{form:?}");
    }
    let gets = crm.requests_to(API_PATH);
    assert_eq!(field(&pairs(&gets[1]), "chatId"), ["chat-1"]);
    assert_eq!(field(&pairs(&gets[2]), "contactId"), ["972501234567"], "contactId defaults to the chat's phone");
    let d = host.complete("acme", "getContact", json!({"chat": chat(), "params": {"contactId": "972501234567"}})).await;
    assert_eq!(d["contactNumber"], contact);
}

#[tokio::test]
async fn get_customer_details_gives_task_contact_and_a_deep_link() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "hi"}})).await;
    let (task, contact) = crm.with_state(|s| (s.tasks[0].number, s.contacts[0].number));
    let d = host.complete("acme", "getCustomerDetails", json!({"chat": chat()})).await;
    assert_eq!(d, json!({"deepLink": format!("https://acme.planfix.com/task/{task}"), "taskNumber": task, "contactNumber": contact}));
    let e = host.failure("acme", "getCustomerDetails", json!({"chat": {"id": "unknown", "phone": "1"}})).await;
    assert_eq!(e["kind"], "not_found", "{e}");
}

#[tokio::test]
async fn open_ticket_is_a_new_message_with_a_title() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "openTicket", json!({"chat": chat(), "params": {"message": "I need help"}})).await;
    let p = pairs(&crm.single(API_PATH));
    assert_eq!(field(&p, "cmd"), ["newMessage"]);
    assert_eq!(field(&p, "title"), ["Dana Levi Cohen"], "the chat title names the task");
    assert_eq!(crm.with_state(|s| s.tasks[0].title.clone()), Some("Dana Levi Cohen".to_string()));
    host.complete("acme", "openTicket", json!({"chat": {"id": "c2", "phone": "9725"}, "params": {"message": "x", "title": "Refund"}})).await;
    assert_eq!(field(&pairs(&crm.requests_to(API_PATH)[1]), "title"), ["Refund"]);
}

#[tokio::test]
async fn update_contact_and_message_status_reach_planfix() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "hi"}})).await;
    host.complete("acme", "updateContact", json!({"chat": chat(), "params": {"contactEmail": "new@example.com", "contactName": "Dani"}})).await;
    let c = crm.with_state(|s| s.contacts[0].clone());
    assert_eq!((c.email.as_str(), c.name.as_str(), c.last_name.as_str()), ("new@example.com", "Dani", "Levi Cohen"));
    let update = pairs(&crm.requests_to(API_PATH)[1]);
    assert_eq!(field(&update, "cmd"), ["updateContact"]);
    assert_eq!(field(&update, "contactId"), ["972501234567"]);

    host.complete("acme", "messageStatus", json!({"chat": chat(), "params": {"messageId": "4188849", "messageStatus": "read", "messageStatusText": "seen"}})).await;
    assert_eq!(crm.with_state(|s| s.statuses.clone()), [("4188849".to_string(), "read".to_string())]);
    let e = host.failure("acme", "messageStatus", json!({"chat": chat(), "params": {"messageId": "1"}})).await;
    assert_eq!((e["kind"].clone(), e["field"].clone()), (json!("invalid_params"), json!("messageStatus")));
}

#[tokio::test]
async fn planfix_errors_map_to_failure_kinds() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    let e = host.failure("acme", "getTask", json!({"chat": chat()})).await;
    assert_eq!(e["kind"], "not_found", "task not found: {e}");
    let e = host.failure("acme", "getContact", json!({"chat": chat()})).await;
    assert_eq!(e["kind"], "not_found", "unknown contact: {e}");
    let e = host.failure("acme", "newMessage", json!({"chat": chat(), "params": {"message": "x", "contactId": ""}})).await;
    assert_eq!(e["kind"], "invalid_params", "Invalid parameters: {e}");
    let mut cfg = config();
    cfg["token"] = json!("wrong");
    tenant(&host, cfg).await;
    let e = host.failure("acme", "getTask", json!({"chat": chat()})).await;
    assert_eq!(e["kind"], "unauthorized", "{e}");
    assert!(crm.requests_to(API_PATH).len() >= 4);
}

#[tokio::test]
async fn config_is_checked_at_registration() {
    let (_crm, host) = setup().await;
    // Host names are ASCII (README): an internationalised one is written in punycode.
    let cases = [
        ("providerId", json!("tex~ter"), "providerId"),
        ("planfixUrl", Value::Null, "planfixUrl"),
        ("planfixUrl", json!("https://bücher.planfix.com"), "planfixUrl"),
        ("token", Value::Null, "token"),
    ];
    for (key, value, field) in cases {
        let mut cfg = config();
        if value.is_null() {
            cfg.as_object_mut().unwrap().remove(key);
        } else {
            cfg[key] = value;
        }
        let (s, e) = host.put_tenant("acme", json!({"adapter": "planfix", "crmConfig": cfg})).await;
        assert_eq!((s, e["error"]["field"].clone()), (422, json!(field)), "{e}");
    }
    let mut punycode = config();
    punycode["planfixUrl"] = json!("https://xn--bcher-kva.planfix.com");
    let (s, e) = host.put_tenant("acme", json!({"adapter": "planfix", "crmConfig": punycode})).await;
    assert_eq!(s, 200, "{e}");
    let (_, t) = {
        tenant(&host, config()).await;
        host.get("/v1/tenants/acme").await
    };
    assert_eq!((t["crmConfig"]["token"].clone(), t["crmConfig"]["chatToken"].clone()), (json!("[redacted]"), json!("[redacted]")));
    let (_, a) = host.get("/v1/adapters/planfix").await;
    assert_eq!((a["outboundHosts"].clone(), a["endpointFields"].clone()), (json!([]), json!(["planfixUrl"])));
}

// ----- Planfix -> platform --------------------------------------------------------------

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

async fn post_webhook(host: &TestHost, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/webhook", host.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn webhook(host: &TestHost, pairs: &[(&str, &str)]) -> (u16, Value) {
    post_webhook(host, "application/x-www-form-urlencoded", form(pairs)).await
}

async fn events(host: &TestHost) -> Vec<Value> {
    let (s, e) = host.get("/v1/tenants/acme/events").await;
    assert_eq!(s, 200, "{e}");
    e["events"].as_array().unwrap().clone()
}

const MESSAGE: &[(&str, &str)] = &[
    ("cmd", "newMessage"),
    ("providerId", "texter"),
    ("chatId", "chat-1"),
    ("contactPhone", "+972 50-123-4567"),
    ("channel", "whatsapp"),
    ("token", "in-token"),
    ("message", "שלום, how can I help? 🙂"),
    ("userName", "Peter"),
    ("userLastName", "Peterson"),
    ("userIco", "https://acme.planfix.com/?action=getuserpic&id=77"),
    ("taskEmail", "task+1014@acme.planfix.com"),
    ("attachments[name]", "file1.doc"),
    ("attachments[url]", "https://acme.planfix.com/file/1"),
    ("attachments[name]", "file2.doc"),
    ("attachments[url]", "https://acme.planfix.com/file/2"),
];

#[tokio::test]
async fn a_planfix_message_is_answered_and_stored_as_an_event() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    let (s, answer) = webhook(&host, MESSAGE).await;
    assert_eq!((s, answer), (200, json!({"chatId": "chat-1", "contactId": "972501234567"})));
    let events = events(&host).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["chatId"], "chat-1");
    assert_eq!(e["phone"], "972501234567");
    assert_eq!(e["text"], "שלום, how can I help? 🙂", "Hebrew and emoji intact");
    assert_eq!(e["author"], "Peter Peterson");
    assert_eq!(
        e["media"],
        json!([{"url": "https://acme.planfix.com/file/1", "fileName": "file1.doc"}, {"url": "https://acme.planfix.com/file/2", "fileName": "file2.doc"}])
    );
    assert_eq!(e["extra"]["authorPicture"], "https://acme.planfix.com/?action=getuserpic&id=77");
    assert_eq!(e["extra"]["taskEmail"], "task+1014@acme.planfix.com");
    assert_eq!(e["extra"]["channel"], "whatsapp");
    assert!(e["extra"].get("token").is_none(), "the token is not kept");
    assert!(e["receivedAt"].as_str().unwrap().ends_with('Z'));
    assert!(e["cursor"].as_str().is_some());
}

#[tokio::test]
async fn the_first_message_variant_gets_a_chat_id_derived_from_the_phone() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    let first: Vec<(&str, &str)> = vec![
        ("cmd", "newMessage"),
        ("providerId", "texter"),
        ("contactPhone", "190512345670"),
        ("token", "in-token"),
        ("message", "Hello, what are you interested in?"),
        ("messageId", "777"),
        ("userName", "Mike"),
    ];
    let (s, a) = webhook(&host, &first).await;
    assert_eq!((s, a), (200, json!({"chatId": "planfix:190512345670", "contactId": "190512345670"})));
    let mut again = first.clone();
    again[5] = ("messageId", "778");
    assert_eq!(webhook(&host, &again).await.1["chatId"], "planfix:190512345670", "deterministic");
    let e = events(&host).await;
    assert_eq!(e[0]["extra"]["messageId"], "777");
    assert_eq!(e[0]["author"], "Mike");
}

#[tokio::test]
async fn the_same_message_delivered_twice_is_stored_once() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    // By Planfix's messageId.
    let with_id: Vec<(&str, &str)> =
        vec![("cmd", "newMessage"), ("providerId", "texter"), ("contactPhone", "972500000001"), ("token", "in-token"), ("message", "hi"), ("messageId", "42")];
    assert_eq!(webhook(&host, &with_id).await.0, 200);
    assert_eq!(webhook(&host, &with_id).await.0, 200, "a duplicate is still acknowledged");
    // Without one: the same chat, text and attachments within the window.
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    let mut different = MESSAGE.to_vec();
    different[6] = ("message", "another text");
    assert_eq!(webhook(&host, &different).await.0, 200);
    let texts: Vec<Value> = events(&host).await.iter().map(|e| e["text"].clone()).collect();
    assert_eq!(texts, [json!("hi"), json!("שלום, how can I help? 🙂"), json!("another text")]);
}

#[tokio::test]
async fn a_bad_token_is_401_and_stores_nothing() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    let mut bad = MESSAGE.to_vec();
    bad[5] = ("token", "guess");
    assert_eq!(webhook(&host, &bad).await, (401, json!({"error": "Invalid token"})));
    let missing: Vec<(&str, &str)> = MESSAGE.iter().filter(|(k, _)| *k != "token").copied().collect();
    assert_eq!(webhook(&host, &missing).await, (401, json!({"error": "Invalid token"})));
    // The admin token is not what authorises a CRM's webhook.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/webhook", host.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&missing))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(events(&host).await.is_empty());
}

#[tokio::test]
async fn malformed_oversized_or_non_form_bodies_are_4xx_and_store_nothing() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    let without = |k: &str| MESSAGE.iter().filter(|(key, _)| *key != k).copied().collect::<Vec<_>>();
    let invalid = json!({"error": "Invalid parameters"});
    assert_eq!(webhook(&host, &without("cmd")).await, (400, invalid.clone()), "no cmd");
    assert_eq!(webhook(&host, &without("providerId")).await, (400, invalid.clone()), "no providerId");
    assert_eq!(webhook(&host, &without("chatId")).await, (400, invalid.clone()), "no chatId and no messageId");
    let no_text: Vec<(&str, &str)> = MESSAGE.iter().filter(|(k, _)| !k.starts_with("attachments") && *k != "message").copied().collect();
    assert_eq!(webhook(&host, &no_text).await, (400, invalid.clone()), "nothing in the message");
    let mut unpaired = MESSAGE.to_vec();
    unpaired.push(("attachments[name]", "orphan.doc"));
    assert_eq!(webhook(&host, &unpaired).await, (400, invalid.clone()), "attachment names and urls unpaired");
    let mut other_provider = MESSAGE.to_vec();
    other_provider[1] = ("providerId", "someone-else");
    assert_eq!(webhook(&host, &other_provider).await, (400, invalid.clone()));
    assert_eq!(post_webhook(&host, "application/json", br#"{"cmd":"newMessage"}"#.to_vec()).await, (400, invalid.clone()), "not a form");
    assert_eq!(post_webhook(&host, "application/x-www-form-urlencoded", vec![0xff, 0xfe, 0x00]).await, (400, invalid), "not UTF-8");
    let big = vec![b'a'; (1 << 20) + 1];
    let (s, e) = post_webhook(&host, "application/x-www-form-urlencoded", big).await;
    assert_eq!((s, e["error"]["kind"].clone()), (413, json!("payload_too_large")), "{e}");
    assert!(events(&host).await.is_empty());
    let (s, e) = host.post_raw("/v1/tenants/ghost/webhook", form(MESSAGE)).await;
    assert_eq!((s, e["error"]["kind"].clone()), (404, json!("unknown_tenant")));
}

#[tokio::test]
async fn events_survive_a_restart_between_receipt_and_read() {
    let (crm, host) = setup().await;
    tenant(&host, config()).await;
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    let data_dir = host.data_dir.clone();
    drop(host);
    let config = TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default().routes(&[("*.planfix.com", &crm.url)]) };
    let host = TestHost::start_in(config, Arc::clone(&data_dir)).await;
    let e = events(&host).await;
    assert_eq!(e.len(), 1, "nothing lost");
    assert_eq!(e[0]["text"], "שלום, how can I help? 🙂");
    // And the dedup memory survived too.
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    assert_eq!(events(&host).await.len(), 1);
}

/// Events past the retention are deleted by the host's sweep (`--event-retention-days`;
/// here a fraction of a second), newer ones stay.
#[tokio::test]
async fn events_past_the_retention_are_deleted() {
    let crm = planfix::start("pf-token", "texter").await;
    let config = TestHostConfig {
        admin_token: Some(ADMIN.into()),
        event_retention: std::time::Duration::from_millis(300),
        ..TestHostConfig::default().routes(&[("*.planfix.com", &crm.url)])
    };
    let host = TestHost::start_config(config).await;
    host.deploy("planfix").await;
    tenant(&host, self::config()).await;
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    assert_eq!(host.host.sweep_events().await.unwrap(), 0, "a new event stays");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut newer = MESSAGE.to_vec();
    newer[6] = ("message", "newer");
    assert_eq!(webhook(&host, &newer).await.0, 200);
    assert_eq!(host.host.sweep_events().await.unwrap(), 1);
    let left = events(&host).await;
    assert_eq!(left.iter().map(|e| e["text"].as_str().unwrap()).collect::<Vec<_>>(), ["newer"]);
}

#[tokio::test]
async fn events_are_read_in_order_with_a_cursor_by_the_admin_or_the_tenants_key() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    host.put_tenant("other", json!({"adapter": "planfix", "crmConfig": config()})).await;
    for i in 0..5 {
        let text = format!("message {i}");
        let mut m = MESSAGE.to_vec();
        m[6] = ("message", &text);
        assert_eq!(webhook(&host, &m).await.0, 200);
    }
    let (_, page) = host.get("/v1/tenants/acme/events?limit=2").await;
    let texts = |p: &Value| p["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(texts(&page), ["message 0", "message 1"]);
    let (_, rest) = host.get(&format!("/v1/tenants/acme/events?after={}", page["next"].as_str().unwrap())).await;
    assert_eq!(texts(&rest), ["message 2", "message 3", "message 4"]);
    let (_, none) = host.get(&format!("/v1/tenants/acme/events?after={}", rest["next"].as_str().unwrap())).await;
    assert_eq!((none["events"].clone(), none["next"].clone()), (json!([]), rest["next"].clone()));

    let (_, key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    let (_, other_key) = host.post_raw("/v1/tenants/other/keys", vec![]).await;
    assert_eq!(host.request_as(key["key"].as_str(), "GET", "/v1/tenants/acme/events", None).await.0, 200);
    assert_eq!(host.request_as(other_key["key"].as_str(), "GET", "/v1/tenants/acme/events", None).await.0, 403);
    assert_eq!(host.request_as(None, "GET", "/v1/tenants/acme/events", None).await.0, 401);
    assert!(host.get("/v1/tenants/other/events").await.1["events"].as_array().unwrap().is_empty(), "tenants see their own events");
}

/// Learned from the first answer: after it, a flood of webhooks for an adapter without them
/// creates no instance (anyone may post one).
#[tokio::test]
async fn adapters_without_webhooks_answer_404_without_an_instance() {
    let (_crm, host) = setup().await;
    host.deploy("plando").await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}})).await;
    let (s, e) = webhook(&host, MESSAGE).await;
    assert_eq!((s, e["error"]["kind"].clone()), (404, json!("webhooks_unsupported")), "{e}");
    let before = metric(&host, "crm_instances_total").await;
    for _ in 0..20 {
        let (s, e) = webhook(&host, MESSAGE).await;
        assert_eq!((s, e["error"]["kind"].clone()), (404, json!("webhooks_unsupported")), "{e}");
    }
    assert_eq!(metric(&host, "crm_instances_total").await, before, "a webhook for plando created an instance");
}

/// An unlabelled counter's value on `/metrics`.
async fn metric(host: &TestHost, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Anyone may post to a webhook URL. A flood of forged ones across 20 tenants takes the
/// webhooks' own places, never a call's: another tenant's calls all complete meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_webhooks_never_take_a_calls_place() {
    let crm = planfix::start("pf-token", "texter").await;
    let limits = crm_host::Limits { max_instances: 4, max_webhooks: 4, max_webhooks_per_tenant: 2, ..crm_tests::test_limits() };
    let host_config = TestHostConfig { limits, admin_token: Some(ADMIN.into()), ..TestHostConfig::default().routes(&[("*.planfix.com", &crm.url)]) };
    let host = Arc::new(TestHost::start_config(host_config).await);
    host.deploy("planfix").await;
    host.deploy("chaos").await;
    for i in 0..20 {
        let (s, b) = host.put_tenant(&format!("pf{i}"), json!({"adapter": "planfix", "crmConfig": config()})).await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(host.put_tenant("caller", json!({"adapter": "chaos", "crmConfig": {}})).await.0, 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..16)
        .map(|n| {
            let (host, stop) = (host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let form = format!("cmd=newMessage&providerId=texter&chatId=c{n}&token=forged&message=hi");
                    // (a forged token: the adapter answers 401, or 400 for what it checks first)
                    statuses.push(host.post_raw(&format!("/v1/tenants/pf{}/webhook", n % 20), form.into_bytes()).await.0);
                }
                statuses
            })
        })
        .collect();
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    for _ in 0..40 {
        let (s, out) = host.call("caller", "counter", chat.clone()).await;
        assert_eq!((s, out["outcome"].clone()), (200, json!("complete")), "a call lost its place to forged webhooks: {out}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = Vec::new();
    for f in flooders {
        statuses.extend(f.await.unwrap());
    }
    // The adapter refuses each forged one (400/401); past the webhooks' places, the host does (429).
    let refused_by = |by: &[u16]| statuses.iter().filter(|s| by.contains(s)).count();
    let (adapter, host_429) = (refused_by(&[400, 401]), refused_by(&[429]));
    assert!(adapter > 0 && host_429 > 0, "{adapter} refused by the adapter, {host_429} by the host, of {}", statuses.len());
    assert_eq!(adapter + host_429, statuses.len(), "nothing else: {statuses:?}");
}

/// Every series the README documents, from a call, a webhook delivered twice and a deploy,
/// with the values they must have. (Retries are `service.rs`'s, the registry's `replicas.rs`'s.)
#[tokio::test]
async fn every_documented_metric_counts_what_it_says() {
    let (_crm, host) = setup().await;
    tenant(&host, config()).await;
    host.complete("acme", "newMessage", json!({"chat": chat(), "params": {"message": "hi"}})).await;
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    assert_eq!(webhook(&host, MESSAGE).await.0, 200);
    let text = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
    };
    for (series, expected) in [
        (r#"crm_calls_total{adapter="planfix",func_id="newMessage",kind="",outcome="complete"}"#, 1.0),
        (r#"crm_call_duration_seconds_count{adapter="planfix",func_id="newMessage"}"#, 1.0),
        (r#"crm_deploys_total{adapter="planfix",result="ok"}"#, 1.0),
        (r#"crm_webhooks_total{adapter="planfix",status="200"}"#, 2.0),
        (r#"crm_inbound_events_total{adapter="planfix",result="stored"}"#, 1.0),
        (r#"crm_inbound_events_total{adapter="planfix",result="duplicate"}"#, 1.0),
        ("crm_instances_in_flight", 0.0),
        ("crm_call_traces_dropped_total", 0.0),
    ] {
        assert_eq!(value(series), expected, "{series}");
    }
    // Requests to the tenant's endpoint (planfixUrl), which names the customer: `endpoint`.
    let requests = value(r#"crm_outbound_requests_total{adapter="planfix",host="endpoint",status="200"}"#);
    assert!(requests >= 1.0, "{requests}");
    assert_eq!(value(r#"crm_outbound_duration_seconds_count{adapter="planfix",host="endpoint"}"#), requests);
    // Validation at tenant PUT, the call, two webhooks: an instance each.
    assert!(value("crm_instances_total") >= 4.0);

    // And nothing the README lists is missing from what the host serves.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let documented: Vec<&str> =
        readme.lines().filter_map(|l| l.strip_prefix("| `crm_")).map(|l| l.split('`').next().unwrap()).collect();
    assert!(documented.len() >= 15, "{documented:?}");
    for name in documented {
        let elsewhere = name.starts_with("outbound_retries") || name.starts_with("registry_");
        assert!(elsewhere || text.contains(&format!("# TYPE crm_{name} ")), "crm_{name} is documented but not served");
    }
}
