//! The replay fixture: one small CRM mapping, and variants of it that a replay must tell
//! apart. `same` (1.0.1) behaves as the base (1.0.0); `rename` answers `fullName` instead of
//! `name`; `extra` makes a request more; `fix` completes a lookup the base fails (a contact
//! without a name). `stamp` reads the call's time (pinned per call) and randomness (not).

use crm_sdk::{json, Adapter, AdapterSpec, Call, ConfigField, CrmData, CrmError, Form, Request, Transport, Value};

#[cfg(target_arch = "wasm32")]
mod extras {
    wit_bindgen::generate!({ path: "wit", world: "crm:replayee-test/extras", generate_all });
}

const VERSION: &str = if cfg!(feature = "same") {
    "1.0.1"
} else if cfg!(feature = "rename") {
    "1.1.0"
} else if cfg!(feature = "extra") {
    "1.2.0"
} else if cfg!(feature = "fix") {
    "1.3.0"
} else {
    "1.0.0"
};

#[derive(Default)]
pub struct Replayee;

impl Adapter for Replayee {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "replayee",
        version: VERSION,
        operations: &["lookup", "stamp"],
        config: &[ConfigField::endpoint("url"), ConfigField::string("key").secret()],
        outbound_hosts: &[],
    };

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        let mut data = CrmData::new();
        match func_id {
            "lookup" => {
                let url = call.config.required_str("url")?;
                let url = url.trim_end_matches('/');
                let mut form = Form::new();
                form.push("phone", call.params.required_str("phone")?).push("key", call.config.required_str("key")?);
                let found: Value =
                    Request::post(format!("{url}/contacts")).form(&form).idempotent().send(http)?.error_for_status()?.json()?;
                let name = found.get("name").cloned().unwrap_or(Value::Null);
                if name.is_null() && !cfg!(feature = "fix") {
                    return Err(CrmError::NotFound("the CRM answered a contact without a name".into()));
                }
                data.insert(if cfg!(feature = "rename") { "fullName" } else { "name" }.into(), name);
                data.insert("id".into(), found.get("id").cloned().unwrap_or(Value::Null));
                if cfg!(feature = "extra") {
                    let id = found.get("id").map(|v| v.to_string()).unwrap_or_default();
                    let notes: Value = Request::get(format!("{url}/contacts/{id}/notes")).send(http)?.error_for_status()?.json()?;
                    data.insert("notes".into(), notes);
                }
            }
            "stamp" => {
                data.insert("seenAt".into(), json!(call.now().unix_ms()));
                data.insert("nonce".into(), json!(random()));
            }
            other => return Err(CrmError::unsupported_function(other)),
        }
        Ok(data)
    }
}

#[cfg(target_arch = "wasm32")]
fn random() -> u64 {
    extras::wasi::random::insecure::get_insecure_random_u64()
}

#[cfg(not(target_arch = "wasm32"))]
fn random() -> u64 {
    0
}

crm_sdk::export_adapter!(Replayee);
