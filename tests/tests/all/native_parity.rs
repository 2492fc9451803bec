//! The same Plando adapter code compiled natively (SDK `native` feature) and run through the
//! host as a wasm component: same requests to Plando, same outcome.

use crm_plando::Plando;
use crm_sdk::native::NativeTransport;
use crm_sdk::Call;
use crm_tests::plando::{self, CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION};
use crm_tests::TestHost;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn native_and_wasm_builds_send_the_same_requests_and_return_the_same_data() {
    let config = json!({"token": "k", "chat": "77", "attrFields": "category_1", "closeTicketMaxMessagesCount": 1});
    let chat = json!({"id": "c", "phone": "+972 50 123 4567", "title": "Dana Levi", "agent": {"email": "a@example.com"},
        "messages": [
            {"id": "1", "direction": "incoming", "text": "a", "timestamp": 1, "from": "x", "to": "y"},
            {"id": "2", "direction": "outgoing", "text": "b", "timestamp": 2, "from": "y", "to": "x"}]});
    let calls = [
        ("getCustomerDetails", json!({"contact_mail": "dana@example.com"})),
        ("newOpportunity", json!({"contact_first_name": "Dana", "tags": "x"})),
        ("closeTicket", json!({})),
        ("getCustomerDetails", json!({"phoneNumber": "000"})),
    ];

    let wasm_crm = plando::start("k").await;
    let native_crm = plando::start("k").await;
    for crm in [&wasm_crm, &native_crm] {
        crm.with_state(|s| s.add_contact(json!({"id": "5", "first_name": "Dana", "phone": "972501234567", "email": "dana@example.com", "category_1": "gold"})));
    }
    let host = TestHost::start(&[("plando.co.il", &wasm_crm.url)]).await;
    host.deploy("plando").await;
    host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": config, "projectId": "acme"})).await;

    for (func, params) in calls {
        let (_, wasm) = host.call("acme", func, json!({"chat": chat, "params": params})).await;
        let (config, chat, params, url) = (config.clone(), chat.clone(), params.clone(), native_crm.url.clone());
        let native = tokio::task::spawn_blocking(move || {
            let http = NativeTransport::new(Duration::from_secs(5)).route("plando.co.il", &url);
            let call = Call::from_json("acme", config, chat, params).unwrap();
            match crm_sdk::run(&Plando, func, &call, &http) {
                Ok(data) => json!({"outcome": "complete", "crmData": data}),
                Err(e) => json!({"outcome": "failure", "kind": e.kind()}),
            }
        })
        .await
        .unwrap();
        assert_eq!(wasm["outcome"], native["outcome"], "{func}: wasm {wasm} native {native}");
        match native["outcome"].as_str() {
            Some("complete") => assert_eq!(wasm["crmData"], native["crmData"], "{func}"),
            _ => assert_eq!(wasm["error"]["kind"], native["kind"], "{func}"),
        }
    }
    for path in [CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION] {
        let forms = |crm: &plando::PlandoEmulator| -> Vec<Vec<(String, String)>> { crm.requests_to(path).iter().map(|r| r.form()).collect() };
        assert_eq!(forms(&wasm_crm), forms(&native_crm), "{path}");
        let hosts = |crm: &plando::PlandoEmulator| -> Vec<Option<String>> {
            crm.requests_to(path).iter().map(|r| r.header("host").map(String::from)).collect()
        };
        assert_eq!(hosts(&wasm_crm), hosts(&native_crm), "{path}");
    }
    assert_eq!(native_crm.requests().len(), 4);
}
