//! Says which build it is, so tests can tell which version served a call. `v1` by default,
//! `v2` with the `v2` feature. Never deploy it for real.

use crm_sdk::{json, Adapter, AdapterSpec, Call, ConfigField, CrmData, CrmError, Request, Transport, Value};

#[cfg(not(feature = "v2"))]
const VERSION: &str = "1.0.0";
#[cfg(feature = "v2")]
const VERSION: &str = "2.0.0";

#[cfg(not(feature = "v2"))]
const CONFIG: &[ConfigField] = &[ConfigField::endpoint("url"), ConfigField::string("token").secret()];
/// v2 needs a `region` its tenants may not have: a version that invalidates tenants.
#[cfg(feature = "v2")]
const CONFIG: &[ConfigField] =
    &[ConfigField::endpoint("url"), ConfigField::string("token").secret(), ConfigField::string("region")];

#[derive(Default)]
pub struct Whoami;

impl Adapter for Whoami {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "whoami",
        version: VERSION,
        operations: &["whoami", "lookup", "create"],
        config: CONFIG,
        outbound_hosts: &[],
    };

    fn validate_config(&self, config: &crm_sdk::Config) -> Result<(), CrmError> {
        Self::SPEC.validate(config)?;
        if cfg!(feature = "v2") && config.non_empty_str("region")?.is_none() {
            return Err(CrmError::config("region", "is required since 2.0.0"));
        }
        Ok(())
    }

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        let mut data = CrmData::new();
        data.insert("version".into(), json!(VERSION));
        match func_id {
            "whoami" => {
                // With a url, first wait for it (tests make it slow to hold a call in flight).
                if let Some(url) = call.config.non_empty_str("url")? {
                    Request::get(url).send(http)?.error_for_status()?;
                }
            }
            // A read through POST, marked safe to retry; and a create, which is not.
            "lookup" | "create" => {
                let url = call.config.required_str("url")?;
                let mut req = Request::post(format!("{}/{func_id}", url.trim_end_matches('/')))
                    .header("authorization", format!("Bearer {}", call.config.non_empty_str("token")?.unwrap_or_default()));
                if func_id == "lookup" {
                    req = req.idempotent();
                }
                let resp = req.send(http)?.error_for_status()?;
                data.insert("status".into(), json!(resp.status));
                data.insert("body".into(), Value::String(resp.text()));
            }
            other => return Err(CrmError::unsupported_function(other)),
        }
        Ok(data)
    }
}

crm_sdk::export_adapter!(Whoami);
