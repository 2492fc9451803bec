//! Native unit tests of the mapping; end to end in the root `tests/` crate.

use super::*;
use crm_sdk::testing::Recorder;

fn call(config: Value, chat: Value) -> Call {
    Call::from_json("acme", config, chat, json!({})).unwrap()
}

fn lookup_config() -> Value {
    json!({"lm_form": "77", "lm_key": "k", "token": "t0k", "getCustomerDetailsUrl": "https://proxy.leadim.xyz/apiproxy/9/api/leads_get.ashx"})
}

#[test]
fn lookup_sends_phone_and_token_and_maps_hebrew_fields() {
    let lead = json!({"aid": "9", "lid": "123", "שם": "דנה כהן", "מטפל": "אבי"});
    let http = Recorder::new().reply_json(200, json!({"status": "success", "data": [lead]}));
    let d = crm_sdk::run(&LeadIm, "getCustomerDetails", &call(lookup_config(), json!({"id": "c", "phone": "+972 50-123"})), &http).unwrap();
    let r = http.single();
    assert_eq!(r.query_pairs(), [("by_phone".to_string(), "97250123".to_string())]);
    assert_eq!(r.header_value("x-lead-im-auth"), Some("t0k"));
    assert_eq!(d["מטפל"], "אבי");
    assert_eq!((d["id"].clone(), d["name"].clone(), d["phone"].clone()), (json!("123"), json!("דנה כהן"), json!("97250123")));
    assert_eq!(d["deepLink"], "https://sys.lead.im/a/9/lead/123");
}

#[test]
fn display_mode_makes_no_request() {
    let cfg = json!({"lm_form": "1", "lm_key": "k", "onlyDisplayData": true});
    let chat = json!({"id": "c", "phone": "972", "crmData": {"pp_aid": "4", "pp_lid": "5"}});
    let d = crm_sdk::run(&LeadIm, "getCustomerDetails", &call(cfg, chat), &Recorder::new()).unwrap();
    assert_eq!((d["id"].clone(), d["deepLink"].clone()), (json!("5"), json!("https://sys.lead.im/a/4/lead/5")));
}

#[test]
fn create_lead_query_in_order() {
    let http = Recorder::new().reply_json(200, json!({"status": "success", "result": "555"}));
    let chat = json!({"id": "c1", "phone": "+972-50", "title": "Title", "nodes": {"lead_get_name": "Dana"},
        "messages": [{"id": "1", "direction": "outgoing", "text": "a", "timestamp": 2},
                     {"id": "2", "direction": "incoming", "text": "b", "timestamp": 1},
                     {"id": "3", "direction": "outgoing", "text": "c", "timestamp": 3}]});
    let d = crm_sdk::run(&LeadIm, "openTicket", &call(lookup_config(), chat), &http).unwrap();
    assert_eq!(d["result"], "555");
    let r = http.single();
    assert!(r.url.starts_with("https://api.lead.im/v2/submit?"));
    assert!(!r.idempotent, "a create is never retried");
    let q: Vec<(String, String)> = r.query_pairs();
    let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["lm_form", "lm_key", "lm_redirect", "fld_name", "fld_phone", "fld_email", "fld_message", "chat_url"]);
    assert_eq!(q[3].1, "Dana");
    assert_eq!(q[6].1, "a\nc");
    assert_eq!(q[7].1, "https://acme.texterchat.com/chats/c1");
}
