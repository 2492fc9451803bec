//! An attacker's component, straight against `crm:adapter@0.1.0` with raw wit-bindgen (no
//! SDK): `describe` never returns, or (feature `validate`) `validate-config` and `invoke`
//! never return. The deploy and tenant paths of the host must not hang on it.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../../wit", world: "crm:adapter/adapter", generate_all });

use exports::crm::adapter::crm::{CallContext, CrmError, Description, Guest, WebhookOutcome, WebhookRequest};

struct Stuck;

fn forever() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Guest for Stuck {
    fn describe() -> Description {
        if cfg!(not(feature = "validate")) {
            forever();
        }
        Description {
            name: "stuck".into(),
            version: "0.1.0".into(),
            operations: vec!["anything".into()],
            config_schema: "{}".into(),
            secret_fields: vec![],
            endpoint_fields: vec![],
            outbound_hosts: vec![],
        }
    }

    fn validate_config(_crm_config: String) -> Result<(), CrmError> {
        forever()
    }

    fn invoke(_func_id: String, _ctx: CallContext) -> Result<String, CrmError> {
        forever()
    }

    fn handle_webhook(_project_id: String, _crm_config: String, _request: WebhookRequest) -> Result<WebhookOutcome, CrmError> {
        forever()
    }
}

export!(Stuck);
