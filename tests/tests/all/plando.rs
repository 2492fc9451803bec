//! Every documented Plando behaviour (the Plando adapter reference, `plugins/plando/README.md`), end to end: the real host
//! running the real Plando component, calling a Plando emulator on loopback.

use crm_tests::emulator::Fault;
use crm_tests::plando::{self, PlandoEmulator, CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION};
use crm_tests::TestHost;
use serde_json::{json, Value};

const TOKEN: &str = "tok-123";

/// A host with Plando deployed and tenant `acme` (project `acme`) configured with `extra`.
async fn setup(extra: Value) -> (TestHost, PlandoEmulator) {
    let crm = plando::start(TOKEN).await;
    let host = TestHost::start(&[("plando.co.il", &crm.url)]).await;
    host.deploy("plando").await;
    let mut config = json!({"token": TOKEN, "chat": "77"});
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, body) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": config, "projectId": "acme"})).await;
    assert_eq!(status, 200, "{body}");
    (host, crm)
}

fn chat() -> Value {
    json!({"id": "chat-1", "phone": "+972-50-123-4567", "title": "Dana Levi"})
}

fn body(params: Value) -> Value {
    json!({"chat": chat(), "params": params})
}

fn add(crm: &PlandoEmulator, contact: Value) {
    crm.with_state(|s| s.add_contact(contact));
}

fn dana(crm: &PlandoEmulator) {
    add(crm, json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567", "email": "dana@example.com", "category_1": "gold", "category_2": "active"}));
}

// ---------------------------------------------------------------- getCustomerDetails

#[tokio::test]
async fn lookup_uses_the_chat_phone_digits_only_by_default() {
    let (host, crm) = setup(json!({})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    let req = crm.single(CONTACT_DETAILS);
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("host"), Some("plando.co.il"), "the adapter addresses production Plando");
    assert_eq!(req.field("access_key").as_deref(), Some(TOKEN));
    assert_eq!(req.field("phone").as_deref(), Some("972501234567"));
    assert_eq!(req.field("attr").as_deref(), Some("id"), "idField and statusField default to id");
    assert_eq!(req.json_field("search_options"), json!({}));
    assert_eq!(data["phone"], "972501234567");
    assert_eq!(data["contact_id"], "501");
}

#[tokio::test]
async fn lookup_phone_number_param_overrides_the_chat_phone() {
    let (host, crm) = setup(json!({})).await;
    add(&crm, json!({"id": "9", "first_name": "Collected", "phone": "0541112222"}));
    let data = host.complete("acme", "getCustomerDetails", body(json!({"phoneNumber": "054-111-2222"}))).await;
    let req = crm.single(CONTACT_DETAILS);
    assert_eq!(req.field("phone").as_deref(), Some("0541112222"));
    assert_eq!(req.json_field("search_options"), json!({}), "phoneNumber is not a search option");
    assert_eq!(data["phone"], "0541112222", "crmData.phone is the phone used for the lookup");
    assert_eq!(data["contact_id"], "9");
}

#[tokio::test]
async fn lookup_forwards_every_search_option_as_is() {
    let (host, crm) = setup(json!({})).await;
    dana(&crm);
    let options = json!({
        "contact_id": "501",
        "contact_mail": "dana@example.com",
        "contact_p_id": "012345678",
        "contact_name": "Dana Levi",
        "from_contact_id": "400",
        "created_at": "2026-01-01 00:00",
        "created_at_to": "2026-02-01 00:00",
        "updated_at": "2026-03-01 10:30",
        "updated_at_to": "2026-04-01 10:30",
        "customer_status": "0,1",
        "extra_params": {"category_9": "vip"},
        "input_id": 1,
        "extra_objects_ids": "3,4"
    });
    let mut params = options.clone();
    params["phoneNumber"] = "972501234567".into();
    host.complete("acme", "getCustomerDetails", body(params)).await;
    assert_eq!(crm.single(CONTACT_DETAILS).json_field("search_options"), options);
}

#[tokio::test]
async fn lookup_attr_merges_attr_fields_pull_field_id_field_and_status_field() {
    let (host, crm) = setup(json!({
        "attrFields": "category_1, category_9,category_1",
        "pullContactByField": {"category_30": "x"},
        "idField": "category_9",
        "statusField": "category_2"
    }))
    .await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(
        crm.single(CONTACT_DETAILS).field("attr").as_deref(),
        Some("category_1,category_9,category_30,category_2"),
        "attrFields, then pullContactByField's field, idField, statusField; no duplicates"
    );
    assert_eq!(data["category_1"], "gold", "requested attribute fields reach crmData");
    assert_eq!(data["status"], "active");
}

#[tokio::test]
async fn lookup_spreads_all_contact_fields_and_computes_the_documented_ones() {
    let (host, crm) = setup(json!({"attrFields": "category_1,category_2"})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(
        data,
        json!({
            "id": "501",
            "first_name": "Dana",
            "last_name": "Levi",
            "phone": "972501234567",
            "email": "dana@example.com",
            "category_1": "gold",
            "category_2": "active",
            "contact_id": "501",
            "name": "Dana Levi",
            "status": "501",
            "deepLink": "https://plando.co.il/contacts/show/501"
        })
    );
}

#[tokio::test]
async fn lookup_id_field_and_status_field_choose_crm_data_id_and_status() {
    let (host, crm) = setup(json!({"idField": "category_1", "statusField": "category_2"})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["id"], "gold");
    assert_eq!(data["status"], "active");
    assert_eq!(data["contact_id"], "501", "contact_id stays the Plando id");
    assert_eq!(data["deepLink"], "https://plando.co.il/contacts/show/501");
}

async fn three_contacts(extra: Value) -> (TestHost, PlandoEmulator) {
    let (host, crm) = setup(extra).await;
    add(&crm, json!({"id": "1", "first_name": "First", "phone": "972501234567", "category_5": ""}));
    add(&crm, json!({"id": "2", "first_name": "Second", "phone": "972501234567", "category_5": "b"}));
    add(&crm, json!({"id": "3", "first_name": "Third", "phone": "972501234567", "category_5": "c"}));
    (host, crm)
}

#[tokio::test]
async fn pull_contact_by_field_with_a_value_selects_the_first_exact_match() {
    let (host, crm) = three_contacts(json!({"pullContactByField": {"category_5": "c"}})).await;
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "3");
    assert_eq!(crm.single(CONTACT_DETAILS).field("attr").as_deref(), Some("category_5,id"));
}

#[tokio::test]
async fn pull_contact_by_field_with_an_empty_value_selects_the_first_non_empty() {
    let (host, _crm) = three_contacts(json!({"pullContactByField": {"category_5": ""}})).await;
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "2");
}

#[tokio::test]
async fn pull_contact_by_field_falls_back_to_the_first_contact() {
    let (host, _crm) = three_contacts(json!({"pullContactByField": {"category_5": "zzz"}})).await;
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "1");
}

#[tokio::test]
async fn pull_contact_by_field_may_be_given_as_json_text() {
    let (host, _crm) = three_contacts(json!({"pullContactByField": "{\"category_5\": \"b\"}"})).await;
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "2");
}

#[tokio::test]
async fn multiple_contacts_without_fail_on_multiple_pick_the_first() {
    let (host, _crm) = three_contacts(json!({})).await;
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "1");
    assert_eq!(data["name"], "First", "name without last_name is just the first name");
}

#[tokio::test]
async fn fail_on_multiple_contacts_fails_as_ambiguous() {
    let (host, _crm) = three_contacts(json!({"failOnMultipleContacts": true})).await;
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "ambiguous");
    assert!(e["message"].as_str().unwrap().contains("3 Plando contacts"), "{e}");
}

#[tokio::test]
async fn fail_on_multiple_contacts_passes_a_single_match() {
    let (host, crm) = setup(json!({"failOnMultipleContacts": "true"})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(data["contact_id"], "501");
}

#[tokio::test]
async fn lookup_fails_when_no_contact_is_found() {
    let (host, crm) = setup(json!({})).await;
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "not_found");
    assert!(e["message"].as_str().unwrap().contains("972501234567"), "{e}");
    assert_eq!(crm.requests_to(CONTACT_DETAILS).len(), 1);
}

#[tokio::test]
async fn lookup_fails_when_no_phone_is_available_without_calling_plando() {
    let (host, crm) = setup(json!({})).await;
    for chat in [json!({"id": "c", "phone": ""}), json!({"id": "c"}), json!({"id": "c", "phone": "n/a"})] {
        let e = host.failure("acme", "getCustomerDetails", json!({"chat": chat})).await;
        assert_eq!(e["kind"], "invalid_params", "{chat}: {e}");
        assert_eq!(e["field"], "phoneNumber");
    }
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn lookup_fails_on_a_plando_error() {
    let (host, crm) = setup(json!({})).await;
    crm.with_state(|s| s.script(CONTACT_DETAILS, 200, json!({"err": "7", "errdesc": "account suspended"})));
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert!(e["message"].as_str().unwrap().contains("account suspended"), "{e}");
}

#[tokio::test]
async fn lookup_with_a_wrong_token_fails_with_plandos_error() {
    let (host, crm) = setup(json!({"token": "wrong"})).await;
    dana(&crm);
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert!(e["message"].as_str().unwrap().contains("invalid access key"), "{e}");
    assert_eq!(crm.single(CONTACT_DETAILS).field("access_key").as_deref(), Some("wrong"));
}

/// A CRM that repeats the access key in its error: the failure the platform gets (message
/// and excerpt) and the call's trace carry `[redacted]`, never the key.
#[tokio::test]
async fn plandos_error_repeating_the_access_key_is_redacted_in_the_failure_and_trace() {
    let (host, crm) = setup(json!({})).await;
    crm.with_state(|s| s.script(CONTACT_DETAILS, 200, json!({"err": "401", "errdesc": format!("access key {TOKEN} is suspended")})));
    let (status, out, call_id) = host.call_with_id("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!((status, out["error"]["kind"].clone()), (200, json!("upstream")), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("[redacted]"), "{out}");
    assert!(!out.to_string().contains(TOKEN), "the key in the failure: {out}");
    let (_, trace) = host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await;
    assert!(!trace.to_string().contains(TOKEN), "the key in the trace: {trace}");
}

// ---------------------------------------------------------------- newOpportunity

#[tokio::test]
async fn new_opportunity_always_sends_chat_access_key_no_redirect_and_defaults() {
    let (host, crm) = setup(json!({})).await;
    let data = host.complete("acme", "newOpportunity", body(json!({}))).await;
    let req = crm.single(LEAD_FORM);
    assert_eq!(
        req.form(),
        vec![
            ("chat".to_string(), "77".to_string()),
            ("access_key".into(), TOKEN.into()),
            ("no_redirect".into(), "1".into()),
            ("name".into(), "Dana Levi".into()),
            ("phone".into(), "972501234567".into()),
        ],
        "name defaults to the chat title, phone to the chat's digits"
    );
    let created = crm.with_state(|s| s.contacts.last().unwrap().clone());
    assert_eq!(created["name"], "Dana Levi");
    assert_eq!(data, json!({"id": created["id"]}), "crmData.id is the contact_id Plando answered");
}

#[tokio::test]
async fn new_opportunity_maps_every_documented_param() {
    let (host, crm) = setup(json!({})).await;
    let params = json!({
        "name": "Dana L",
        "phoneNumber": "+972 (54) 000-1111",
        "email": "dana@example.com",
        "legacy_id": "ext-9",
        "is_org": 1,
        "approve_mailing": 0,
        "tags": "whatsapp,bot",
        "refer_email": "sales@example.com",
        "contact_first_name": "Dana",
        "contact_last_name": "Levi",
        "contact_remark": "asked for a quote",
        "contact_main_city": "Haifa",
        "contact_main_address": "Herzl 1",
        "contact_customer_cat_id": "0",
        "contact_customer_sales_person_id": "4512",
        "contact_lead_status_cat_id": "323140",
        "contact_lead_origin_cat_id": "724240",
        "contact_category_9": "123",
        "utm_source": "campaign-7"
    });
    host.complete("acme", "newOpportunity", body(params)).await;
    let form = crm.single(LEAD_FORM).form();
    let expected: Vec<(&str, &str)> = vec![
        ("chat", "77"),
        ("access_key", TOKEN),
        ("no_redirect", "1"),
        ("name", "Dana L"),
        ("phone", "972540001111"),
        ("email", "dana@example.com"),
        ("legacy_id", "ext-9"),
        ("is_org", "1"),
        ("approve_mailing", "0"),
        ("tags", "whatsapp,bot"),
        ("refer_email", "sales@example.com"),
        ("contact[first_name]", "Dana"),
        ("contact[last_name]", "Levi"),
        ("contact[remark]", "asked for a quote"),
        ("contact[main_city]", "Haifa"),
        ("contact[main_address]", "Herzl 1"),
        ("contact[customer_cat_id]", "0"),
        ("contact[customer_sales_person_id]", "4512"),
        ("contact[lead_status_cat_id]", "323140"),
        ("contact[lead_origin_cat_id]", "724240"),
        ("contact[category_9]", "123"),
        ("utm_source", "campaign-7"),
    ];
    let got: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn new_opportunity_without_title_can_use_first_and_last_name() {
    let (host, crm) = setup(json!({})).await;
    let body = json!({"chat": {"id": "c", "phone": "972501234567"}, "params": {"contact_first_name": "Dana", "contact_last_name": "Levi"}});
    host.complete("acme", "newOpportunity", body).await;
    let req = crm.single(LEAD_FORM);
    assert_eq!(req.field("name"), None, "no title and no name: name is not sent");
    assert_eq!(req.field("contact[first_name]").as_deref(), Some("Dana"));
}

#[tokio::test]
async fn new_opportunity_without_any_name_fails_before_calling_plando() {
    let (host, crm) = setup(json!({})).await;
    let e = host.failure("acme", "newOpportunity", json!({"chat": {"id": "c", "phone": "972501234567"}})).await;
    assert_eq!(e["kind"], "invalid_params");
    assert_eq!(e["field"], "name");
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn new_opportunity_update_contact_sends_update_contact_and_id() {
    let (host, crm) = setup(json!({})).await;
    dana(&crm);
    let params = json!({"updateContact": 1, "id": "501", "email": "new@example.com", "name": "Dana Levi", "contact_lead_status_cat_id": "601305"});
    let data = host.complete("acme", "newOpportunity", body(params)).await;
    let req = crm.single(LEAD_FORM);
    assert_eq!(req.field("update_contact").as_deref(), Some("1"));
    assert_eq!(req.field("id").as_deref(), Some("501"));
    assert_eq!(data, json!({"id": "501"}));
    let updated = crm.with_state(|s| s.contact("501").unwrap().clone());
    assert_eq!(updated["email"], "new@example.com");
    assert_eq!(updated["lead_status_cat_id"], "601305");
}

#[tokio::test]
async fn new_opportunity_update_contact_requires_id() {
    let (host, crm) = setup(json!({})).await;
    let e = host.failure("acme", "newOpportunity", body(json!({"updateContact": "1"}))).await;
    assert_eq!(e["kind"], "invalid_params");
    assert_eq!(e["field"], "id");
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn new_opportunity_fails_when_err_is_not_zero() {
    let (host, crm) = setup(json!({})).await;
    crm.with_state(|s| s.script(LEAD_FORM, 200, json!({"err": "4", "errdesc": "name is required", "contact_id": "1"})));
    let e = host.failure("acme", "newOpportunity", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert!(e["message"].as_str().unwrap().contains("name is required"), "{e}");
}

#[tokio::test]
async fn new_opportunity_fails_without_contact_id() {
    let (host, crm) = setup(json!({})).await;
    crm.with_state(|s| s.script(LEAD_FORM, 200, json!({"err": "0", "errdesc": "ok"})));
    let e = host.failure("acme", "newOpportunity", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert!(e["message"].as_str().unwrap().contains("contact_id"), "{e}");
}

#[tokio::test]
async fn new_opportunity_refuses_params_that_would_override_config() {
    let (host, crm) = setup(json!({})).await;
    let e = host.failure("acme", "newOpportunity", body(json!({"access_key": "other"}))).await;
    assert_eq!(e["kind"], "invalid_params");
    assert_eq!(e["field"], "access_key");
    assert!(crm.requests().is_empty());
}

// ---------------------------------------------------------------- openTicket / closeTicket

fn transcript_chat(messages: usize) -> Value {
    let msgs: Vec<Value> = (0..messages)
        .map(|i| {
            json!({
                "id": format!("m{i}"),
                "direction": if i % 2 == 0 { "incoming" } else { "outgoing" },
                "text": format!("message {i}"),
                "timestamp": 1_767_000_000_000u64 + i as u64 * 1000,
                "from": if i % 2 == 0 { "972501234567" } else { "972700000000" },
                "to": if i % 2 == 0 { "972700000000" } else { "972501234567" }
            })
        })
        .collect();
    json!({"id": "chat-1", "phone": "+972-50-123-4567", "title": "Dana", "agent": {"email": "agent@example.com", "name": "Avi"}, "messages": msgs})
}

#[tokio::test]
async fn close_ticket_pushes_the_transcript() {
    let (host, crm) = setup(json!({})).await;
    let data = host.complete("acme", "closeTicket", json!({"chat": transcript_chat(2)})).await;
    assert_eq!(data, json!({}));
    let req = crm.single(WHATSAPP_SESSION);
    let keys: Vec<String> = req.form().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["access_key", "user_email", "formal_whatsapp_url", "phone", "msg"]);
    assert_eq!(req.field("access_key").as_deref(), Some(TOKEN));
    assert_eq!(req.field("user_email").as_deref(), Some("agent@example.com"));
    assert_eq!(req.field("formal_whatsapp_url").as_deref(), Some("acme.texterchat.com"), "customerId defaults to the project id");
    assert_eq!(req.field("phone").as_deref(), Some("972501234567"));
    assert_eq!(
        req.json_field("msg"),
        json!([
            {"message": "message 0", "timestamp": 1_767_000_000_000u64, "from": "972501234567", "to": "972700000000", "media": []},
            {"message": "message 1", "timestamp": 1_767_000_001_000u64, "from": "972700000000", "to": "972501234567", "media": []}
        ])
    );
}

#[tokio::test]
async fn open_ticket_behaves_exactly_like_close_ticket() {
    let (host, crm) = setup(json!({})).await;
    host.complete("acme", "openTicket", json!({"chat": transcript_chat(3)})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(3)})).await;
    let reqs = crm.requests_to(WHATSAPP_SESSION);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].form(), reqs[1].form());
}

#[tokio::test]
async fn transcript_holds_at_most_the_default_30_most_recent_messages() {
    let (host, crm) = setup(json!({})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(35)})).await;
    let msg = crm.single(WHATSAPP_SESSION).json_field("msg");
    let texts: Vec<&str> = msg.as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 30);
    assert_eq!(texts[0], "message 5", "the oldest of the 30 most recent comes first");
    assert_eq!(texts[29], "message 34");
}

#[tokio::test]
async fn transcript_respects_close_ticket_max_messages_count() {
    let (host, crm) = setup(json!({"closeTicketMaxMessagesCount": 3})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(10)})).await;
    let msg = crm.single(WHATSAPP_SESSION).json_field("msg");
    let texts: Vec<&str> = msg.as_array().unwrap().iter().map(|m| m["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["message 7", "message 8", "message 9"]);
}

#[tokio::test]
async fn transcript_includes_media() {
    let (host, crm) = setup(json!({})).await;
    let mut chat = transcript_chat(1);
    chat["messages"][0]["media"] = json!([
        {"url": "https://files.example.com/a.pdf", "fileName": "quote.pdf", "mimeType": "application/pdf"},
        {"url": "https://files.example.com/b.jpg"}
    ]);
    host.complete("acme", "closeTicket", json!({"chat": chat})).await;
    let msg = crm.single(WHATSAPP_SESSION).json_field("msg");
    assert_eq!(
        msg[0]["media"],
        json!([
            {"url": "https://files.example.com/a.pdf", "fileName": "quote.pdf", "mimeType": "application/pdf"},
            {"url": "https://files.example.com/b.jpg"}
        ])
    );
}

#[tokio::test]
async fn transcript_email_param_wins_over_agent_and_default() {
    let (host, crm) = setup(json!({"defaultEmail": "default@example.com"})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(1), "params": {"email": "override@example.com"}})).await;
    assert_eq!(crm.single(WHATSAPP_SESSION).field("user_email").as_deref(), Some("override@example.com"));
}

#[tokio::test]
async fn transcript_email_falls_back_to_default_email_without_an_agent() {
    let (host, crm) = setup(json!({"defaultEmail": "default@example.com"})).await;
    let mut chat = transcript_chat(1);
    chat.as_object_mut().unwrap().remove("agent");
    host.complete("acme", "closeTicket", json!({"chat": chat})).await;
    assert_eq!(crm.single(WHATSAPP_SESSION).field("user_email").as_deref(), Some("default@example.com"));
}

#[tokio::test]
async fn transcript_fails_when_no_email_can_be_resolved() {
    let (host, crm) = setup(json!({})).await;
    let mut chat = transcript_chat(1);
    chat["agent"] = json!({"name": "Avi"});
    let e = host.failure("acme", "closeTicket", json!({"chat": chat})).await;
    assert_eq!(e["kind"], "config");
    assert_eq!(e["field"], "defaultEmail");
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn transcript_customer_id_overrides_the_project_id() {
    let (host, crm) = setup(json!({"customerId": "mycompany"})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(1)})).await;
    assert_eq!(crm.single(WHATSAPP_SESSION).field("formal_whatsapp_url").as_deref(), Some("mycompany.texterchat.com"));
}

#[tokio::test]
async fn transcript_fails_when_customer_id_is_missing() {
    let crm = plando::start(TOKEN).await;
    let host = TestHost::start(&[("plando.co.il", &crm.url)]).await;
    host.deploy("plando").await;
    let (status, _) = host.put_tenant("noproj", json!({"adapter": "plando", "crmConfig": {"token": TOKEN, "chat": "1"}})).await;
    assert_eq!(status, 200);
    let e = host.failure("noproj", "closeTicket", json!({"chat": transcript_chat(1)})).await;
    assert_eq!(e["kind"], "config");
    assert_eq!(e["field"], "customerId");
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn transcript_fails_on_any_status_but_200() {
    let (host, crm) = setup(json!({})).await;
    crm.with_state(|s| s.script(WHATSAPP_SESSION, 201, json!({"err": "0"})));
    let e = host.failure("acme", "closeTicket", json!({"chat": transcript_chat(1)})).await;
    assert_eq!(e["kind"], "upstream");
    assert_eq!(e["status"], 201);
}

#[tokio::test]
async fn transcript_with_a_wrong_token_fails_as_unauthorized() {
    let (host, _crm) = setup(json!({"token": "wrong"})).await;
    let e = host.failure("acme", "closeTicket", json!({"chat": transcript_chat(1)})).await;
    assert_eq!(e["kind"], "unauthorized");
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn tenant_config_without_token_or_chat_is_refused_naming_the_field() {
    let crm = plando::start(TOKEN).await;
    let host = TestHost::start(&[("plando.co.il", &crm.url)]).await;
    host.deploy("plando").await;
    for (config, field) in [
        (json!({"chat": "1"}), "token"),
        (json!({"token": TOKEN}), "chat"),
        (json!({"token": TOKEN, "chat": "1", "closeTicketMaxMessagesCount": "many"}), "closeTicketMaxMessagesCount"),
        (json!({"token": TOKEN, "chat": "1", "failOnMultipleContacts": "perhaps"}), "failOnMultipleContacts"),
        (json!({"token": TOKEN, "chat": "1", "pullContactByField": {"a": "1", "b": "2"}}), "pullContactByField"),
        (json!({"token": TOKEN, "chat": "1", "pullContactByField": "not json"}), "pullContactByField"),
    ] {
        let (status, body) = host.put_tenant("t", json!({"adapter": "plando", "crmConfig": config, "projectId": "p"})).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["kind"], "invalid_config");
        assert_eq!(body["error"]["field"], field, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(field), "{body}");
        assert_eq!(host.get("/v1/tenants/t").await.0, 404, "a refused tenant is not stored");
    }
}

// ---------------------------------------------------------------- a CRM that misbehaves

#[tokio::test]
async fn plando_answering_500_is_an_upstream_failure_with_an_excerpt() {
    let (host, crm) = setup(json!({})).await;
    crm.fault(CONTACT_DETAILS, Fault::Status(500, "internal error: db down".into()));
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert_eq!(e["status"], 500);
    assert_eq!(e["bodyExcerpt"], "internal error: db down");
}

/// An answer of the wrong shape is quoted in the error; nested as deep as JSON allows, it is
/// still an `upstream` failure, not a crashed adapter.
#[tokio::test]
async fn plando_answering_the_deepest_wrong_shape_is_an_upstream_failure() {
    let (host, crm) = setup(json!({})).await;
    let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    crm.fault(LEAD_FORM, Fault::Status(200, format!(r#"{{"err":"0","contact_id":{deep}}}"#)));
    let e = host.failure("acme", "newOpportunity", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream", "{e}");
    assert!(e["message"].as_str().unwrap().contains("contact_id"), "{e}");
}

#[tokio::test]
async fn plando_answering_garbage_is_an_upstream_failure() {
    let (host, crm) = setup(json!({})).await;
    crm.fault(LEAD_FORM, Fault::Garbage);
    let e = host.failure("acme", "newOpportunity", body(json!({}))).await;
    assert_eq!(e["kind"], "upstream");
    assert!(e["message"].as_str().unwrap().contains("not the expected JSON"), "{e}");
    assert!(e["bodyExcerpt"].as_str().unwrap().contains("502 Bad Gateway"), "{e}");
}

#[tokio::test]
async fn plando_never_answering_is_a_timeout() {
    let (host, crm) = setup(json!({})).await;
    crm.fault(CONTACT_DETAILS, Fault::Hang);
    let started = std::time::Instant::now();
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "timeout", "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the request timeout, not the call deadline, ended it");
}

#[tokio::test]
async fn plando_flooding_is_cut_off_by_the_host() {
    // 512 KiB: above the host's cap in these tests (256 KiB), below the SDK's own (1 MiB), so
    // only the host's cap can refuse it: once announced by Content-Length, once streamed.
    let (host, crm) = setup(json!({})).await;
    for fault in [Fault::Flood(512 << 10), Fault::FloodChunked(512 << 10)] {
        crm.fault(CONTACT_DETAILS, fault.clone());
        let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
        assert_eq!(e["kind"], "response_limit_exceeded", "{fault:?}: {e}");
        assert!(e["message"].as_str().unwrap().contains("larger than"), "{fault:?}: {e}");
    }
}

#[tokio::test]
async fn plando_unreachable_is_a_transport_failure() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let host = TestHost::start(&[("plando.co.il", &dead)]).await;
    host.deploy("plando").await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": TOKEN, "chat": "1"}, "projectId": "acme"})).await;
    let e = host.failure("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!(e["kind"], "transport", "{e}");
    assert!(e["message"].as_str().unwrap().contains("plando.co.il/contact_details"), "names the request: {e}");
}

// ---------------------------------------------------------------- rows the tests above left out

#[tokio::test]
async fn id_field_and_status_field_may_swap() {
    let (host, crm) = setup(json!({"idField": "category_2", "statusField": "category_1"})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert_eq!((data["id"].clone(), data["status"].clone()), (json!("active"), json!("gold")));
    assert_eq!(crm.single(CONTACT_DETAILS).field("attr").as_deref(), Some("category_2,category_1"), "idField, then statusField");
}

#[tokio::test]
async fn status_and_id_are_left_out_when_the_contact_lacks_the_field() {
    let (host, crm) = setup(json!({"idField": "category_7", "statusField": "category_8"})).await;
    dana(&crm);
    let data = host.complete("acme", "getCustomerDetails", body(json!({}))).await;
    assert!(data.get("id").is_none() && data.get("status").is_none(), "{data}");
    assert_eq!(data["contact_id"], "501");
}

#[tokio::test]
async fn an_undocumented_param_is_forwarded_in_search_options() {
    let (host, crm) = setup(json!({})).await;
    dana(&crm);
    host.complete("acme", "getCustomerDetails", body(json!({"brand_new_filter": {"x": [1, 2]}, "phoneNumber": "972501234567"}))).await;
    let req = crm.single(CONTACT_DETAILS);
    assert_eq!(req.field("search_options").as_deref(), Some(r#"{"brand_new_filter":{"x":[1,2]}}"#), "exact text, as given");
}

#[tokio::test]
async fn credentials_refused_and_rate_limits_have_their_kinds_on_lookup_and_new_opportunity() {
    let (host, crm) = setup(json!({})).await;
    dana(&crm);
    let limited = Fault::StatusHeaders(429, vec![("retry-after".into(), "7".into())], "slow down".into());
    for path in [CONTACT_DETAILS, LEAD_FORM] {
        let func = if path == CONTACT_DETAILS { "getCustomerDetails" } else { "newOpportunity" };
        for (fault, kind) in [
            (Fault::Status(401, "no".into()), "unauthorized"),
            (Fault::Status(403, "forbidden".into()), "unauthorized"),
            (limited.clone(), "rate_limited"),
        ] {
            crm.fault(path, fault.clone());
            let e = host.failure("acme", func, body(json!({}))).await;
            assert_eq!(e["kind"], kind, "{func} {fault:?}: {e}");
            if kind == "rate_limited" {
                assert_eq!(e["retryAfterMs"], 7000, "{e}");
            }
        }
        crm.clear_faults();
    }
}

#[tokio::test]
async fn the_agents_email_beats_default_email_in_open_and_close_ticket() {
    let (host, crm) = setup(json!({"defaultEmail": "default@example.com"})).await;
    host.complete("acme", "openTicket", json!({"chat": transcript_chat(1)})).await;
    host.complete("acme", "closeTicket", json!({"chat": transcript_chat(1)})).await;
    for r in crm.requests_to(WHATSAPP_SESSION) {
        assert_eq!(r.field("user_email").as_deref(), Some("agent@example.com"));
    }
    assert_eq!(crm.requests_to(WHATSAPP_SESSION).len(), 2);
}

#[tokio::test]
async fn new_opportunity_sends_booleans_as_1_0_structures_as_json_and_update_contact_0() {
    let (host, crm) = setup(json!({})).await;
    let params = json!({"is_org": false, "approve_mailing": true, "contact_extra": {"a": [1, "b"]}, "tags": ["x", "y"], "updateContact": 0});
    host.complete("acme", "newOpportunity", body(params)).await;
    let req = crm.single(LEAD_FORM);
    let form = req.form();
    let got: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("chat", "77"),
            ("access_key", TOKEN),
            ("no_redirect", "1"),
            ("name", "Dana Levi"),
            ("phone", "972501234567"),
            ("is_org", "0"),
            ("approve_mailing", "1"),
            ("contact[extra]", r#"{"a":[1,"b"]}"#),
            ("tags", r#"["x","y"]"#),
            ("update_contact", "0"),
        ]
    );
}

#[tokio::test]
async fn new_opportunity_refuses_the_reserved_chat_and_no_redirect_params() {
    let (host, crm) = setup(json!({})).await;
    for key in ["chat", "no_redirect"] {
        let e = host.failure("acme", "newOpportunity", body(json!({key: "x"}))).await;
        assert_eq!((e["kind"].clone(), e["field"].clone()), (json!("invalid_params"), json!(key)), "{e}");
    }
    assert!(crm.requests().is_empty());
}
