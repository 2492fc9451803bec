//! Native unit tests of the mapping, against a recorded transport. The same behaviours are
//! tested end to end (real component, real host, Plando emulator) in the root `tests/` crate.

use super::*;
use crm_sdk::testing::Recorder;

fn call(config: Value, chat: Value, params: Value) -> Call {
    Call::from_json("acme", config, chat, params).unwrap()
}

fn base_chat() -> Value {
    json!({"id": "c1", "phone": "+972-50-123-4567", "title": "Dana Levi"})
}

fn run(func: &str, c: &Call, http: &Recorder) -> Result<CrmData, CrmError> {
    crm_sdk::run(&Plando, func, c, http)
}

fn form_of(r: &Request) -> Form {
    Form::decode(&r.body)
}

#[test]
fn lookup_builds_attr_and_search_options() {
    let http = Recorder::new().reply_json(200, json!({"err": "0", "contacts": [{"id": "7", "first_name": "Dana"}]}));
    let c = call(
        json!({"token": "k", "chat": "1", "attrFields": "category_1, id", "pullContactByField": {"category_9": "x"}, "statusField": "category_2"}),
        base_chat(),
        json!({"contact_mail": "d@x.test", "phoneNumber": "050-1"}),
    );
    run("getCustomerDetails", &c, &http).unwrap();
    let req = http.single();
    assert_eq!(req.url, "https://plando.co.il/contact_details");
    assert!(req.idempotent, "a lookup may be retried by the host");
    let f = form_of(&req);
    assert_eq!(f.get("phone"), Some("0501"));
    assert_eq!(f.get("attr"), Some("category_1,id,category_9,category_2"));
    assert_eq!(f.get("search_options"), Some(r#"{"contact_mail":"d@x.test"}"#));
}

#[test]
fn lookup_selects_by_pull_rule_and_maps_fields() {
    let contacts = json!([
        {"id": "1", "first_name": "A", "last_name": "One", "category_9": ""},
        {"id": "2", "first_name": "B", "last_name": "Two", "category_9": "vip", "phone": "999"}
    ]);
    let http = Recorder::new().reply_json(200, json!({"err": "0", "contacts": contacts}));
    let c = call(json!({"token": "k", "chat": "1", "pullContactByField": {"category_9": ""}}), base_chat(), json!({}));
    let d = run("getCustomerDetails", &c, &http).unwrap();
    assert_eq!(d["contact_id"], "2");
    assert_eq!(d["name"], "B Two");
    assert_eq!(d["phone"], "972501234567");
    assert_eq!(d["category_9"], "vip");
    assert_eq!(d["deepLink"], "https://plando.co.il/contacts/show/2");
}

#[test]
fn lookup_failures_have_kinds() {
    let cfg = json!({"token": "k", "chat": "1", "failOnMultipleContacts": true});
    let two = json!({"err": "0", "contacts": [{"id": "1"}, {"id": "2"}]});
    let cases = [
        (json!({"err": "0", "contacts": []}), "not_found"),
        (two, "ambiguous"),
        (json!({"err": "3", "errdesc": "bad key"}), "upstream"),
    ];
    for (answer, kind) in cases {
        let http = Recorder::new().reply_json(200, answer);
        let e = run("getCustomerDetails", &call(cfg.clone(), base_chat(), json!({})), &http).unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
    }
}

#[test]
fn new_opportunity_maps_params() {
    let http = Recorder::new().reply_json(200, json!({"err": "0", "contact_id": "55"}));
    let c = call(
        json!({"token": "k", "chat": "9"}),
        base_chat(),
        json!({"contact_first_name": "Dana", "tags": "a,b", "is_org": true, "updateContact": 1, "id": "55"}),
    );
    assert_eq!(run("newOpportunity", &c, &http).unwrap()["id"], "55");
    assert!(!http.single().idempotent, "a create is never retried");
    let f = form_of(&http.single());
    let pairs: Vec<(&str, &str)> = f.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("chat", "9"),
            ("access_key", "k"),
            ("no_redirect", "1"),
            ("name", "Dana Levi"),
            ("phone", "972501234567"),
            ("contact[first_name]", "Dana"),
            ("tags", "a,b"),
            ("is_org", "1"),
            ("update_contact", "1"),
            ("id", "55"),
        ]
    );
}

#[test]
fn update_without_id_is_refused_before_any_call() {
    let http = Recorder::new();
    let c = call(json!({"token": "k", "chat": "9"}), base_chat(), json!({"updateContact": "1"}));
    assert_eq!(run("newOpportunity", &c, &http).unwrap_err(), CrmError::invalid_params("id", "is required when updateContact is set"));
    assert!(http.requests().is_empty());
}

#[test]
fn transcript_keeps_the_most_recent_messages() {
    let msgs: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("m{i}"), "direction": "incoming", "text": format!("t{i}"), "timestamp": 1000 + i, "from": "a", "to": "b"}))
        .rev()
        .collect();
    let mut chat = base_chat();
    chat["messages"] = Value::Array(msgs);
    chat["agent"] = json!({"email": "agent@x.test"});
    let http = Recorder::new().reply(200, "ok");
    let c = call(json!({"token": "k", "chat": "9", "closeTicketMaxMessagesCount": "2"}), chat, json!({}));
    run("closeTicket", &c, &http).unwrap();
    let f = form_of(&http.single());
    assert_eq!(f.get("user_email"), Some("agent@x.test"));
    assert_eq!(f.get("formal_whatsapp_url"), Some("acme.texterchat.com"));
    let msg: Value = crm_sdk::serde_json::from_str(f.get("msg").unwrap()).unwrap();
    assert_eq!(
        msg,
        json!([
            {"message": "t3", "timestamp": 1003, "from": "a", "to": "b", "media": []},
            {"message": "t4", "timestamp": 1004, "from": "a", "to": "b", "media": []}
        ])
    );
}

#[test]
fn config_rules() {
    let bad = json!({"token": "k", "chat": "1", "pullContactByField": {"a": "1", "b": "2"}});
    assert!(matches!(Plando.validate_config(&call(bad, base_chat(), json!({})).config),
        Err(CrmError::Config { field, .. }) if field == "pullContactByField"));
    let missing = call(json!({"chat": "1"}), base_chat(), json!({}));
    assert_eq!(run("getCustomerDetails", &missing, &Recorder::new()).unwrap_err(), CrmError::config("token", "is required"));
}
