//! Lead.IM CRM adapter (the platform's Lead.IM adapter reference; wire formats, and which are
//! ASSUMED, in README.md here): look a lead up by phone (or only display the one already on
//! the chat), and create leads through Lead.IM's submit API.

use crm_sdk::{
    digits_only, json, Adapter, AdapterSpec, Call, Config, ConfigField, CrmData, CrmError, Direction, Map, Phone,
    Request, Transport, Value,
};

/// Lead.IM's lead submission endpoint (ASSUMED, as the Lead.IM adapter reference's create-lead example).
pub const SUBMIT_URL: &str = "https://api.lead.im/v2/submit";
/// Lead.IM's web app; a lead's page is `{APP}{aid}/lead/{lid}` (ASSUMED).
pub const APP: &str = "https://sys.lead.im/a/";
/// Lead.IM keeps at most this much message text.
const MAX_MESSAGE_CHARS: usize = 3500;

const CONFIG: &[ConfigField] = &[
    ConfigField::string("lm_form").required().doc("Lead.IM form ID, sent as lm_form by openTicket."),
    ConfigField::string("lm_key").required().secret().doc("The form's API key, sent as lm_key by openTicket."),
    ConfigField::string("token").secret().doc("X-LEAD-IM-AUTH token for the lookup (getCustomerDetails)."),
    ConfigField::endpoint("getCustomerDetailsUrl").doc("The account's lead lookup URL (getCustomerDetails)."),
    ConfigField::string("nameField").default("\"שם\"").doc("Lead field holding the contact's display name."),
    ConfigField::boolean("onlyDisplayData")
        .default("false")
        .doc("getCustomerDetails makes no request and shows the aid/lid already on the chat's crmData."),
];

#[derive(Default)]
pub struct LeadIm;

impl Adapter for LeadIm {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "leadim",
        version: env!("CARGO_PKG_VERSION"),
        operations: &["getCustomerDetails", "openTicket"],
        config: CONFIG,
        // The lookup goes to the tenant's getCustomerDetailsUrl (an endpoint field).
        outbound_hosts: &["https://api.lead.im"],
    };

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        match func_id {
            "getCustomerDetails" if call.config.bool("onlyDisplayData", false)? => display(call),
            "getCustomerDetails" => lookup(call, http),
            "openTicket" => create_lead(call, http),
            other => Err(CrmError::unsupported_function(other)),
        }
    }
}

crm_sdk::export_adapter!(LeadIm);

fn name_field(cfg: &Config) -> Result<String, CrmError> {
    Ok(cfg.non_empty_str("nameField")?.unwrap_or_else(|| "שם".into()))
}

fn deep_link(aid: &str, lid: &str) -> String {
    format!("{APP}{aid}/lead/{lid}")
}

fn text_of(v: Option<&Value>) -> Option<String> {
    v.and_then(crm_sdk::scalar_text).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Lookup mode: `GET {getCustomerDetailsUrl}?by_phone=<phone>` with `X-LEAD-IM-AUTH`.
fn lookup(call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    let cfg = &call.config;
    let token = cfg.required_str("token")?;
    let url = cfg.url("getCustomerDetailsUrl")?.ok_or_else(|| cfg.error("getCustomerDetailsUrl", "is required"))?;
    let phone =
        Phone::digits(&call.chat.phone).ok_or_else(|| CrmError::invalid_params("chat.phone", "has no digits to look up"))?;
    let resp = Request::get(url.as_str()).query(&[("by_phone", phone.as_str())]).header("X-LEAD-IM-AUTH", token).send(http)?;
    let body: Value = resp.error_for_status()?.json()?;
    let lead = match (body.get("status").and_then(Value::as_str), body.get("data")) {
        (Some("success"), Some(Value::Array(leads))) => leads.iter().find_map(Value::as_object),
        (Some("success"), Some(Value::Object(lead))) => Some(lead),
        _ => None,
    };
    let lead = lead.ok_or_else(|| CrmError::NotFound(format!("no Lead.IM lead matches phone {phone}")))?;
    // Every lead field under its Lead.IM name, then the computed ones on top.
    let mut data: CrmData = lead.clone();
    let name_field = name_field(cfg)?;
    if let Some(lid) = text_of(lead.get("lid")) {
        data.insert("id".into(), json!(lid));
    }
    if let Some(name) = text_of(lead.get(&name_field)) {
        data.insert("name".into(), json!(name));
    }
    data.insert("phone".into(), json!(phone));
    let link = match (text_of(lead.get("aid")), text_of(lead.get("lid"))) {
        (Some(aid), Some(lid)) => deep_link(&aid, &lid),
        _ => APP.to_string(),
    };
    data.insert("deepLink".into(), json!(link));
    Ok(data)
}

/// Display mode: no request; the lead Lead.IM already put on the chat.
fn display(call: &Call) -> Result<CrmData, CrmError> {
    let crm = &call.chat.crm_data;
    if crm.is_empty() {
        return Err(CrmError::NotFound("onlyDisplayData is set but the chat has no crmData to display".into()));
    }
    let pair = |a: &str, l: &str| Some((text_of(crm.get(a))?, text_of(crm.get(l))?));
    let mut data = CrmData::new();
    match pair("aid", "lid").or_else(|| pair("pp_aid", "pp_lid")) {
        Some((aid, lid)) => {
            data.insert("id".into(), json!(lid));
            data.insert("deepLink".into(), json!(deep_link(&aid, &lid)));
        }
        None => {
            data.insert("deepLink".into(), json!(APP));
        }
    }
    if let Some(name) = text_of(crm.get(&name_field(&call.config)?)) {
        data.insert("name".into(), json!(name));
    }
    data.insert("phone".into(), json!(digits_only(&call.chat.phone)));
    Ok(data)
}

/// openTicket: `GET https://api.lead.im/v2/submit?lm_form&lm_key&lm_redirect=no&fld_*&chat_url`.
fn create_lead(call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    let (cfg, chat) = (&call.config, &call.chat);
    let name = chat
        .node("lead_get_name")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| chat.title.clone())
        .unwrap_or_default();
    let email = chat.node("lead_get_email").map(str::trim).unwrap_or_default().to_string();
    let message =
        chat.transcript().only(Direction::Outgoing).fit_lines(|m| m.text.clone(), "\n", MAX_MESSAGE_CHARS, usize::MAX).join("\n");
    let chat_url = match chat.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        // ASSUMED: the platform's chat page, as Plando's formal_whatsapp_url builds it.
        None => format!("https://{}.texterchat.com/chats/{}", call.project_id, chat.id),
    };
    let query: Vec<(&str, String)> = vec![
        ("lm_form", cfg.required_str("lm_form")?),
        ("lm_key", cfg.required_str("lm_key")?),
        ("lm_redirect", "no".into()),
        ("fld_name", name),
        ("fld_phone", digits_only(&chat.phone)),
        ("fld_email", email),
        ("fld_message", message),
        ("chat_url", chat_url),
    ];
    // A GET that creates a lead: never retried.
    let resp = Request::get(SUBMIT_URL).query(&query).not_idempotent().send(http)?.error_for_status()?;
    let body: Value = resp.json()?;
    let result = match body.get("status").and_then(Value::as_str) {
        Some("success") => text_of(body.get("result")),
        _ => None,
    };
    let result = result.ok_or_else(|| CrmError::upstream(resp.status, "Lead.IM did not answer success with a lead id", &resp.body))?;
    let mut data = Map::new();
    data.insert("result".into(), json!(result));
    Ok(data)
}

#[cfg(test)]
mod tests;
