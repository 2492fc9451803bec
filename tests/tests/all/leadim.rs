//! Lead.IM through the real host and the real component, against the Lead.IM emulator: one
//! test per documented behaviour (the Lead.IM adapter reference, `plugins/leadim/README.md`), each checking what Lead.IM
//! received and what the call returned.

use crm_tests::emulator::Fault;
use crm_tests::leadim::{self, LeadImEmulator, LOOKUP_PATH, LOOKUP_URL, SUBMIT_PATH};
use crm_tests::TestHost;
use serde_json::{json, Value};

async fn setup() -> (LeadImEmulator, TestHost) {
    let crm = leadim::start("auth-token", "form-1", "form-key").await;
    crm.with_state(|s| {
        s.add_lead(json!({"aid": "9", "lid": "123", "phone": "972501234567", "שם": "דנה כהן 🌸", "מטפל": "אבי", "status": "new"}))
    });
    let host = TestHost::start(&[("proxy.leadim.xyz", &crm.url), ("api.lead.im", &crm.url)]).await;
    host.deploy("leadim").await;
    (crm, host)
}

fn lookup_config() -> Value {
    json!({"lm_form": "form-1", "lm_key": "form-key", "token": "auth-token", "getCustomerDetailsUrl": LOOKUP_URL})
}

async fn tenant(host: &TestHost, config: Value) {
    let (s, body) = host.put_tenant("acme", json!({"adapter": "leadim", "projectId": "acme", "crmConfig": config})).await;
    assert_eq!(s, 200, "{body}");
}

fn chat() -> Value {
    json!({"id": "chat-7", "phone": "+972-50-123-4567", "title": "Dana Cohen"})
}

fn query(r: &crm_tests::emulator::Recorded) -> Vec<(String, String)> {
    form_urlencoded::parse(r.query.as_bytes()).into_owned().collect()
}

#[tokio::test]
async fn lookup_sends_by_phone_with_the_auth_header_and_maps_every_lead_field() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    let d = host.complete("acme", "getCustomerDetails", json!({"chat": chat()})).await;
    let r = crm.single(LOOKUP_PATH);
    assert_eq!(r.method, "GET");
    assert_eq!(query(&r), [("by_phone".to_string(), "972501234567".to_string())]);
    assert_eq!(r.header("x-lead-im-auth"), Some("auth-token"));
    assert_eq!(r.header("host"), Some("proxy.leadim.xyz"));
    // Hebrew names and values, and emoji, round-trip intact.
    assert_eq!(d["שם"], "דנה כהן 🌸");
    assert_eq!(d["מטפל"], "אבי");
    assert_eq!(d["status"], "new");
    assert_eq!(d["id"], "123");
    assert_eq!(d["name"], "דנה כהן 🌸");
    assert_eq!(d["phone"], "972501234567");
    assert_eq!(d["deepLink"], "https://sys.lead.im/a/9/lead/123");
}

#[tokio::test]
async fn name_field_picks_the_display_name() {
    let (crm, host) = setup().await;
    let mut cfg = lookup_config();
    cfg["nameField"] = json!("מטפל");
    tenant(&host, cfg).await;
    let d = host.complete("acme", "getCustomerDetails", json!({"chat": chat()})).await;
    assert_eq!(d["name"], "אבי");
    assert_eq!(crm.requests_to(LOOKUP_PATH).len(), 1);
}

#[tokio::test]
async fn lookup_without_a_match_fails_not_found() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    let e = host.failure("acme", "getCustomerDetails", json!({"chat": {"id": "c", "phone": "972500000000"}})).await;
    assert_eq!(e["kind"], "not_found", "{e}");
    assert_eq!(query(&crm.single(LOOKUP_PATH))[0].1, "972500000000");
}

#[tokio::test]
async fn lookup_fails_on_every_upstream_error() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    let body = json!({"chat": chat()});
    let cases = [
        (Fault::Status(401, r#"{"status":"error"}"#.into()), "unauthorized"),
        (Fault::Status(500, "boom".into()), "upstream"),
        (Fault::Garbage, "upstream"),
        (Fault::Status(200, r#"{"status":"error","message":"quota"}"#.into()), "not_found"),
    ];
    for (fault, kind) in cases {
        crm.fault(LOOKUP_PATH, fault.clone());
        let e = host.failure("acme", "getCustomerDetails", body.clone()).await;
        assert_eq!(e["kind"], kind, "{fault:?}: {e}");
    }
    // A wrong token: the emulator's own 401.
    crm.clear_faults();
    let mut cfg = lookup_config();
    cfg["token"] = json!("wrong");
    tenant(&host, cfg).await;
    assert_eq!(host.failure("acme", "getCustomerDetails", body).await["kind"], "unauthorized");
}

#[tokio::test]
async fn lookup_mode_needs_token_and_url_naming_the_field() {
    let (crm, host) = setup().await;
    for missing in ["token", "getCustomerDetailsUrl"] {
        let mut cfg = lookup_config();
        cfg.as_object_mut().unwrap().remove(missing);
        tenant(&host, cfg).await;
        let e = host.failure("acme", "getCustomerDetails", json!({"chat": chat()})).await;
        assert_eq!((e["kind"].clone(), e["field"].clone()), (json!("config"), json!(missing)), "{e}");
    }
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn lm_form_and_lm_key_are_required_at_registration() {
    let (_crm, host) = setup().await;
    for missing in ["lm_form", "lm_key"] {
        let mut cfg = lookup_config();
        cfg.as_object_mut().unwrap().remove(missing);
        let (s, e) = host.put_tenant("acme", json!({"adapter": "leadim", "crmConfig": cfg})).await;
        assert_eq!(s, 422, "{e}");
        assert_eq!(e["error"]["field"], missing);
        assert_eq!(e["error"]["message"], format!("crmConfig.{missing}: is required"));
        assert_eq!(host.get("/v1/tenants/acme").await.0, 404, "not stored");
    }
}

#[tokio::test]
async fn secrets_are_redacted_and_the_lookup_url_is_an_endpoint_field() {
    let (_crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    let (_, t) = host.get("/v1/tenants/acme").await;
    assert_eq!(t["crmConfig"]["token"], "[redacted]");
    assert_eq!(t["crmConfig"]["lm_key"], "[redacted]");
    assert_eq!(t["crmConfig"]["lm_form"], "form-1");
    let (_, a) = host.get("/v1/adapters/leadim").await;
    assert_eq!(a["endpointFields"], json!(["getCustomerDetailsUrl"]));
    assert_eq!(a["outboundHosts"], json!(["https://api.lead.im"]));
}

#[tokio::test]
async fn the_lookup_url_is_reachable_only_for_the_tenant_that_configured_it() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    // Another tenant whose lookup URL is elsewhere cannot be made to reach this one's.
    let mut other = lookup_config();
    other["getCustomerDetailsUrl"] = json!("https://other.leadim.test/lookup");
    host.put_tenant("other", json!({"adapter": "leadim", "crmConfig": other})).await;
    let e = host.failure("other", "getCustomerDetails", json!({"chat": chat()})).await;
    assert_eq!(e["kind"], "egress_denied", "not routed, so refused: {e}");
    assert!(e["message"].as_str().unwrap().contains("other.leadim.test"), "{e}");
    assert!(crm.requests().is_empty());
}

#[tokio::test]
async fn display_mode_reads_aid_lid_from_crm_data_without_a_request() {
    let (crm, host) = setup().await;
    tenant(&host, json!({"lm_form": "form-1", "lm_key": "form-key", "onlyDisplayData": true})).await;
    let with = |crm_data: Value| json!({"chat": {"id": "c", "phone": "972501234567", "crmData": crm_data}});

    let d = host.complete("acme", "getCustomerDetails", with(json!({"aid": "9", "lid": "55", "שם": "דנה"}))).await;
    assert_eq!(d, json!({"id": "55", "deepLink": "https://sys.lead.im/a/9/lead/55", "name": "דנה", "phone": "972501234567"}));
    let d = host.complete("acme", "getCustomerDetails", with(json!({"pp_aid": "4", "pp_lid": "66"}))).await;
    assert_eq!((d["id"].clone(), d["deepLink"].clone()), (json!("66"), json!("https://sys.lead.im/a/4/lead/66")));
    // crmData with neither pair: success, the bare base deepLink, no id.
    let d = host.complete("acme", "getCustomerDetails", with(json!({"other": "x"}))).await;
    assert_eq!(d["deepLink"], "https://sys.lead.im/a/");
    assert!(d.get("id").is_none(), "{d}");
    // No crmData at all: failure.
    let e = host.failure("acme", "getCustomerDetails", json!({"chat": {"id": "c", "phone": "1"}})).await;
    assert_eq!(e["kind"], "not_found", "{e}");
    assert!(crm.requests().is_empty(), "display mode makes no request");
}

#[tokio::test]
async fn open_ticket_creates_a_lead_with_every_field() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    let body = json!({"chat": {
        "id": "chat-7", "phone": "+972-50-123-4567", "title": "Chat Title", "url": "https://acme.texterchat.com/chats/chat-7",
        "nodes": {"lead_get_name": "דנה כהן", "lead_get_email": "dana@example.com"},
        "messages": [
            {"id": "1", "direction": "outgoing", "text": "שלום! 👋", "timestamp": 10, "from": "a", "to": "b"},
            {"id": "2", "direction": "incoming", "text": "customer text", "timestamp": 20, "from": "b", "to": "a"},
            {"id": "3", "direction": "outgoing", "text": "second", "timestamp": 30, "from": "a", "to": "b"}]}});
    let d = host.complete("acme", "openTicket", body).await;
    let r = crm.single(SUBMIT_PATH);
    assert_eq!(r.method, "GET");
    assert_eq!(r.header("host"), Some("api.lead.im"));
    let q = query(&r);
    let expected: Vec<(&str, &str)> = vec![
        ("lm_form", "form-1"),
        ("lm_key", "form-key"),
        ("lm_redirect", "no"),
        ("fld_name", "דנה כהן"),
        ("fld_phone", "972501234567"),
        ("fld_email", "dana@example.com"),
        ("fld_message", "שלום! 👋\nsecond"),
        ("chat_url", "https://acme.texterchat.com/chats/chat-7"),
    ];
    let got: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, expected, "in order; outgoing messages only");
    let lid = crm.with_state(|s| s.leads.last().unwrap()["lid"].clone());
    assert_eq!(d, json!({"result": lid}));
}

#[tokio::test]
async fn open_ticket_defaults_name_to_the_title_email_to_empty_and_builds_the_chat_url() {
    let (crm, host) = setup().await;
    tenant(&host, lookup_config()).await;
    host.complete("acme", "openTicket", json!({"chat": chat()})).await;
    let q: std::collections::HashMap<String, String> = query(&crm.single(SUBMIT_PATH)).into_iter().collect();
    assert_eq!(q["fld_name"], "Dana Cohen");
    assert_eq!(q["fld_email"], "");
    assert_eq!(q["fld_message"], "");
    assert_eq!(q["chat_url"], "https://acme.texterchat.com/chats/chat-7");
}

#[tokio::test]
async fn open_ticket_fails_unless_lead_im_answers_success_and_is_never_retried() {
    let (crm, host) = setup().await;
    tenant(&host, json!({"lm_form": "form-1", "lm_key": "wrong-key"})).await;
    let e = host.failure("acme", "openTicket", json!({"chat": chat()})).await;
    assert_eq!(e["kind"], "upstream", "{e}");
    assert!(e["bodyExcerpt"].as_str().unwrap().contains("invalid form or key"), "{e}");
    crm.fault(SUBMIT_PATH, Fault::Status(503, "busy".into()));
    let e = host.failure("acme", "openTicket", json!({"chat": chat()})).await;
    assert_eq!((e["kind"].clone(), e["status"].clone()), (json!("upstream"), json!(503)));
    assert_eq!(crm.requests_to(SUBMIT_PATH).len(), 2, "the GET that creates a lead was not retried");
}
