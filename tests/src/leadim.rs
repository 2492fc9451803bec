//! A Lead.IM emulator speaking the wire formats of `plugins/leadim/README.md`: the account's
//! lead lookup (`GET ...?by_phone=`, `X-LEAD-IM-AUTH`) and the submit API
//! (`GET /v2/submit?lm_form&lm_key&...`), over a small lead database.

use crate::emulator::{Emulator, Recorded, Reply};
use serde_json::{json, Map, Value};

/// Where tests point `getCustomerDetailsUrl` (its host is routed to the emulator).
pub const LOOKUP_URL: &str = "https://proxy.leadim.xyz/apiproxy/9/api/leads_get.ashx";
pub const LOOKUP_PATH: &str = "/apiproxy/9/api/leads_get.ashx";
pub const SUBMIT_PATH: &str = "/v2/submit";
pub const ACCOUNT: &str = "9";

pub struct LeadIm {
    pub token: String,
    pub form: String,
    pub key: String,
    /// Leads with their Lead.IM fields; `phone` (digits) is what by_phone matches.
    pub leads: Vec<Map<String, Value>>,
    next_lid: u64,
}

pub type LeadImEmulator = Emulator<LeadIm>;

pub async fn start(token: &str, form: &str, key: &str) -> LeadImEmulator {
    let state = LeadIm { token: token.into(), form: form.into(), key: key.into(), leads: Vec::new(), next_lid: 5000 };
    Emulator::start(state, handle).await
}

impl LeadIm {
    pub fn add_lead(&mut self, lead: Value) {
        self.leads.push(lead.as_object().expect("lead is an object").clone());
    }
}

fn query(r: &Recorded) -> Vec<(String, String)> {
    form_urlencoded::parse(r.query.as_bytes()).into_owned().collect()
}

fn handle(s: &mut LeadIm, r: &Recorded) -> Reply {
    let q = query(r);
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    match r.path.as_str() {
        LOOKUP_PATH => {
            if r.header("x-lead-im-auth") != Some(s.token.as_str()) {
                return (401, json!({"status": "error", "message": "unauthorized"}));
            }
            let phone = get("by_phone").unwrap_or_default();
            let found: Vec<Value> =
                s.leads.iter().filter(|l| l.get("phone").and_then(Value::as_str) == Some(phone.as_str())).cloned().map(Value::Object).collect();
            (200, json!({"status": "success", "data": found}))
        }
        SUBMIT_PATH => {
            if get("lm_form").as_deref() != Some(s.form.as_str()) || get("lm_key").as_deref() != Some(s.key.as_str()) {
                return (200, json!({"status": "error", "message": "invalid form or key"}));
            }
            s.next_lid += 1;
            let lid = s.next_lid.to_string();
            let mut lead = Map::new();
            lead.insert("aid".into(), json!(ACCOUNT));
            lead.insert("lid".into(), json!(lid));
            for (k, v) in &q {
                if let Some(f) = k.strip_prefix("fld_") {
                    lead.insert(f.to_string(), json!(v));
                }
            }
            s.leads.push(lead);
            (200, json!({"status": "success", "result": lid}))
        }
        _ => (404, json!({"status": "error", "message": "no such endpoint"})),
    }
}
