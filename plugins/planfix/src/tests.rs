//! Native unit tests of the mapping against a recorded transport; the same behaviours are
//! tested end to end (real component, real host, Planfix emulator) in the root `tests/`.

use super::*;
use crm_sdk::testing::Recorder;

fn config() -> Value {
    json!({"planfixUrl": "https://acme.planfix.com", "token": "pf-token", "providerId": "texter", "channel": "wa", "chatToken": "in-token"})
}

fn call(params: Value) -> Call {
    let chat = json!({"id": "chat-9", "phone": "+972-50-123-4567", "title": "Dana Levi Cohen",
                      "agent": {"email": "avi@acme.example"},
                      "messages": [{"id": "m1", "direction": "incoming", "text": "Hi", "timestamp": 1,
                                    "media": [{"url": "https://f.test/a/photo.jpg"}]}]});
    Call::from_json("acme", config(), chat, params).unwrap()
}

fn pairs(r: &Request) -> Vec<(String, String)> {
    r.form_pairs()
}

#[test]
fn new_message_defaults_from_the_chat_in_order() {
    let http = Recorder::new().reply(200, "OK");
    let d = crm_sdk::run(&Planfix, "newMessage", &call(json!({"data_utm_source": "wa"})), &http).unwrap();
    assert_eq!(d["chatId"], "chat-9");
    let r = http.single();
    assert_eq!(r.url, "https://acme.planfix.com/webchat/api");
    assert!(!r.idempotent, "a message is never sent twice");
    let expected: Vec<(&str, &str)> = vec![
        ("cmd", "newMessage"),
        ("providerId", "texter"),
        ("planfix_token", "pf-token"),
        ("channel", "wa"),
        ("chatId", "chat-9"),
        ("message", "Hi"),
        ("contactId", "972501234567"),
        ("contactName", "Dana"),
        ("contactLastName", "Levi Cohen"),
        ("contactPhone", "972501234567"),
        ("attachments[name]", "photo.jpg"),
        ("attachments[url]", "https://f.test/a/photo.jpg"),
        ("data_utm_source", "wa"),
    ];
    let owned: Vec<(String, String)> = pairs(&r);
    let got: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected);
}

#[test]
fn replies_wrapped_in_data_are_understood() {
    for body in [json!({"number": 1014}), json!({"data": {"number": 1014}}), json!({"data": "{\"number\": 1014}"})] {
        let http = Recorder::new().reply_json(200, body.clone());
        let d = crm_sdk::run(&Planfix, "getTask", &call(json!({})), &http).unwrap();
        assert_eq!(d["taskNumber"], 1014, "{body}");
        assert!(http.single().idempotent, "a read may be retried");
    }
}

#[test]
fn errors_have_kinds() {
    let cases = [
        (401, json!({"error": "Invalid token"}), "unauthorized"),
        (400, json!({"error": "task not found"}), "not_found"),
        (400, json!({"error": "Invalid parameters"}), "invalid_params"),
        (500, json!({"error": "boom"}), "upstream"),
    ];
    for (status, body, kind) in cases {
        let http = Recorder::new().reply_json(status, body.clone());
        let e = crm_sdk::run(&Planfix, "getTask", &call(json!({})), &http).unwrap_err();
        assert_eq!(e.kind(), kind, "{status} {body}");
    }
}

#[test]
fn provider_id_with_a_tilde_is_a_config_error() {
    let mut cfg = config();
    cfg["providerId"] = json!("tex~ter");
    let c = Call::from_json("acme", cfg, json!({"id": "c", "phone": "1"}), json!({})).unwrap();
    let e = crm_sdk::run(&Planfix, "getTask", &c, &Recorder::new()).unwrap_err();
    assert_eq!(e, CrmError::config("providerId", "must not contain '~' (Planfix reserves it)"));
}

#[test]
fn a_task_number_is_one_path_segment_of_the_deep_link() {
    for (number, link) in [(json!(1014), "https://acme.planfix.com/task/1014"), (json!("7/../admin?x"), "https://acme.planfix.com/task/7%2F..%2Fadmin%3Fx")] {
        let http = Recorder::new().reply_json(200, json!({"number": number})).reply_json(200, json!({"number": 55}));
        let d = crm_sdk::run(&Planfix, "getCustomerDetails", &call(json!({})), &http).unwrap();
        assert_eq!(d["deepLink"], link, "{number}");
    }
}
