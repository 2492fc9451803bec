//! Plando CRM adapter: the platform's Plando adapter reference; wire formats (and which are
//! ASSUMED) in README.md here.

use crm_sdk::{
    json, scalar_text, truthy, Adapter, AdapterSpec, Call, ConfigField, Config, CrmData, CrmError, Form, Map, Phone,
    Request, Response, Transport, Value,
};

/// Plando's production base URL. The host may route it elsewhere (tests, demos).
pub const BASE: &str = "https://plando.co.il";

const DEFAULT_MAX_MESSAGES: u64 = 30;

const CONFIG: &[ConfigField] = &[
    ConfigField::string("token").required().secret().doc("API access key, sent as access_key on every call."),
    ConfigField::string("chat").required().doc("Plando chat ID, sent as chat by newOpportunity."),
    ConfigField::string("customerId")
        .doc("Overrides the tenant's project id in formal_whatsapp_url ({customerId}.texterchat.com)."),
    ConfigField::string("defaultEmail")
        .doc("Agent email for openTicket/closeTicket when the chat has no assigned agent."),
    ConfigField::integer("closeTicketMaxMessagesCount")
        .default("30")
        .doc("Most recent messages pushed by openTicket/closeTicket."),
    ConfigField::boolean("failOnMultipleContacts")
        .default("false")
        .doc("getCustomerDetails fails when the phone matches more than one contact."),
    ConfigField::string("statusField").default("\"id\"").doc("Contact field mapped to crmData.status."),
    ConfigField::string("idField").default("\"id\"").doc("Contact field mapped to crmData.id."),
    ConfigField::list("attrFields").doc("Contact attribute fields to request, comma-separated."),
    ConfigField::object("pullContactByField").doc(
        "{\"fieldName\": \"expectedValue\"}: pick the first contact whose field equals the value \
         (or is non-empty when the value is empty); falls back to the first contact.",
    ),
];

#[derive(Default)]
pub struct Plando;

impl Adapter for Plando {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "plando",
        version: env!("CARGO_PKG_VERSION"),
        operations: &["getCustomerDetails", "newOpportunity", "openTicket", "closeTicket"],
        config: CONFIG,
        outbound_hosts: &[BASE],
    };

    fn validate_config(&self, config: &Config) -> Result<(), CrmError> {
        Self::SPEC.validate(config)?;
        pull_contact_by_field(config).map(drop)
    }

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        match func_id {
            "getCustomerDetails" => get_customer_details(call, http),
            "newOpportunity" => new_opportunity(call, http),
            // The seed: both use the same handler and behave identically.
            "openTicket" | "closeTicket" => push_transcript(call, http),
            other => Err(CrmError::unsupported_function(other)),
        }
    }
}

crm_sdk::export_adapter!(Plando);

/// `POST /contact_details`: find the chat's contact.
fn get_customer_details(call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    let (request, lookup) = ContactLookup::new(call)?;
    lookup.answer(request.send(http)?)
}

/// `getCustomerDetails` in two halves around its one request, so that a caller with a
/// client of its own (the benchmark's native server, which is async) runs the same mapping:
/// [`ContactLookup::new`] builds the request, [`ContactLookup::answer`] maps Plando's answer.
pub struct ContactLookup {
    phone: String,
    pull: Option<(String, String)>,
    id_field: String,
    status_field: String,
    fail_on_multiple: Result<bool, CrmError>,
}

impl ContactLookup {
    pub fn new(call: &Call) -> Result<(Request, ContactLookup), CrmError> {
        let cfg = &call.config;
        let phone = match call.params.non_empty_str("phoneNumber")? {
            Some(p) => Phone::digits(&p).ok_or_else(|| call.params.error("phoneNumber", "has no digits"))?,
            None => Phone::digits(&call.chat.phone).ok_or_else(|| {
                CrmError::invalid_params("phoneNumber", "no phone to look up: the chat has no phone and params.phoneNumber is not set")
            })?,
        };
        let pull = pull_contact_by_field(cfg)?;
        let id_field = cfg.non_empty_str("idField")?.unwrap_or_else(|| "id".into());
        let status_field = cfg.non_empty_str("statusField")?.unwrap_or_else(|| "id".into());

        let mut attr: Vec<String> = Vec::new();
        let extra = pull.as_ref().map(|(f, _)| f.clone());
        for f in cfg.list("attrFields")?.into_iter().chain(extra).chain([id_field.clone(), status_field.clone()]) {
            if !attr.contains(&f) {
                attr.push(f);
            }
        }
        // Every param but phoneNumber goes to Plando untouched (seed: "forwarded as-is").
        let search_options: Map<String, Value> =
            call.params.map().iter().filter(|(k, _)| *k != "phoneNumber").map(|(k, v)| (k.clone(), v.clone())).collect();

        let mut form = Form::new();
        form.push("access_key", cfg.required_str("token")?)
            .push("phone", phone.as_str())
            .push("attr", attr.join(","))
            .push("search_options", crm_sdk::json::object_to_string(&search_options));
        // A search: safe for the host to retry.
        let request = Request::post(format!("{BASE}/contact_details")).idempotent().form(&form);
        // Read now, judged only when several contacts match (as the one-piece lookup did).
        let fail_on_multiple = cfg.bool("failOnMultipleContacts", false);
        Ok((request, ContactLookup { phone, pull, id_field, status_field, fail_on_multiple }))
    }

    pub fn answer(self, response: Response) -> Result<CrmData, CrmError> {
        let ContactLookup { phone, pull, id_field, status_field, fail_on_multiple } = self;
        let body = envelope(response)?;
        let contacts: Vec<&Map<String, Value>> = match body.get("contacts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| c.as_object().ok_or_else(|| bad_answer("contacts holds something that is not an object", &body)))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad_answer("contacts is not a list", &body)),
        };
        if contacts.is_empty() {
            return Err(CrmError::NotFound(format!("no Plando contact matches phone {phone}")));
        }
        if contacts.len() > 1 && fail_on_multiple? {
            return Err(CrmError::Ambiguous(format!(
                "{} Plando contacts match phone {phone} and failOnMultipleContacts is set",
                contacts.len()
            )));
        }
        let contact = select_contact(&contacts, pull.as_ref());
        let contact_id = contact
            .get("id")
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad_answer("the selected contact has no id", &body))?;

        // All contact fields, then the computed ones on top (they win on a name clash).
        let mut data = contact.clone();
        data.insert("contact_id".into(), contact["id"].clone());
        let name: Vec<String> = ["first_name", "last_name"]
            .iter()
            .filter_map(|k| contact.get(*k).and_then(scalar_text))
            .filter(|s| !s.trim().is_empty())
            .collect();
        data.insert("name".into(), name.join(" ").into());
        set_or_remove(&mut data, "status", contact.get(&status_field));
        set_or_remove(&mut data, "id", contact.get(&id_field));
        data.insert("phone".into(), phone.into());
        data.insert("deepLink".into(), format!("{BASE}/contacts/show/{contact_id}").into());
        Ok(data)
    }
}

/// The `{fieldName: expectedValue}` rule, checked: exactly one pair, a scalar value.
fn pull_contact_by_field(cfg: &Config) -> Result<Option<(String, String)>, CrmError> {
    let Some(rule) = cfg.object("pullContactByField")? else { return Ok(None) };
    if rule.is_empty() {
        return Ok(None);
    }
    let bad = |m: &str| cfg.error("pullContactByField", m);
    if rule.len() != 1 {
        return Err(bad("must hold exactly one {\"fieldName\": \"expectedValue\"} pair"));
    }
    let (field, value) = rule.iter().next().expect("one entry");
    if field.trim().is_empty() {
        return Err(bad("the field name is empty"));
    }
    let expected = match value {
        Value::Null => String::new(),
        v => scalar_text(v).ok_or_else(|| bad("the expected value must be text"))?,
    };
    Ok(Some((field.clone(), expected)))
}

fn select_contact<'a>(contacts: &[&'a Map<String, Value>], pull: Option<&(String, String)>) -> &'a Map<String, Value> {
    let picked = pull.and_then(|(field, expected)| {
        contacts.iter().copied().find(|c| match c.get(field) {
            None | Some(Value::Null) => false,
            Some(v) if expected.is_empty() => !is_empty_value(v),
            Some(v) => scalar_text(v).as_deref() == Some(expected.as_str()),
        })
    });
    picked.unwrap_or(contacts[0])
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn set_or_remove(data: &mut CrmData, key: &str, value: Option<&Value>) {
    match value {
        Some(v) if !v.is_null() => data.insert(key.into(), v.clone()),
        _ => data.remove(key),
    };
}

/// Params the adapter fills itself; a param of the same name would silently fight it.
const RESERVED: &[&str] = &["chat", "access_key", "no_redirect"];

/// `POST /contacts/lead_form1`: create (or, with updateContact, update) a contact.
fn new_opportunity(call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    let (cfg, p) = (&call.config, &call.params);
    if let Some(k) = RESERVED.iter().find(|k| p.contains(k)) {
        return Err(p.error(k, "is set by the adapter (from crmConfig) and cannot be passed as a param"));
    }
    let update = match p.get("updateContact") {
        None => false,
        Some(v) => truthy(v).ok_or_else(|| p.error("updateContact", "must be 1/0 or true/false"))?,
    };
    if update {
        p.non_empty_str("id")?.ok_or_else(|| p.error("id", "is required when updateContact is set"))?;
    }
    let name = match p.non_empty_str("name")? {
        Some(n) => Some(n),
        None => call.chat.title.clone().filter(|t| !t.trim().is_empty()),
    };
    let split_name = p.non_empty_str("contact_first_name")?.is_some() || p.non_empty_str("contact_last_name")?.is_some();
    if name.is_none() && !split_name && !update {
        return Err(p.error(
            "name",
            "is required: pass params.name or contact_first_name/contact_last_name, or give the chat a title",
        ));
    }
    let phone = match p.non_empty_str("phoneNumber")? {
        Some(v) => Some(Phone::digits(&v).ok_or_else(|| p.error("phoneNumber", "has no digits"))?),
        None => Phone::digits(&call.chat.phone),
    };

    let mut form = Form::new();
    form.push("chat", cfg.required_str("chat")?).push("access_key", cfg.required_str("token")?).push("no_redirect", "1");
    if let Some(n) = name {
        form.push("name", n);
    }
    if let Some(ph) = phone {
        form.push("phone", ph);
    }
    for (key, value) in p.iter() {
        let sent_as = match key.as_str() {
            "name" | "phoneNumber" => continue,
            "updateContact" => {
                form.push("update_contact", if update { "1" } else { "0" });
                continue;
            }
            k => match k.strip_prefix("contact_") {
                Some(field) if !field.is_empty() => format!("contact[{field}]"),
                _ => k.to_string(),
            },
        };
        form.push_value(sent_as, value);
    }

    // Creates a lead: never retried.
    let body = post(http, Request::post(format!("{BASE}/contacts/lead_form1")), &form)?;
    let contact_id = body
        .get("contact_id")
        .filter(|v| scalar_text(v).is_some_and(|s| !s.is_empty()))
        .ok_or_else(|| bad_answer("Plando did not return a contact_id", &body))?;
    let mut data = CrmData::new();
    data.insert("id".into(), contact_id.clone());
    Ok(data)
}

/// `POST /contacts/parse_whatsapp_session`: push the chat's transcript (openTicket/closeTicket).
fn push_transcript(call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    let (cfg, p, chat) = (&call.config, &call.params, &call.chat);
    let customer_id = match cfg.non_empty_str("customerId")? {
        Some(c) => c,
        None if !call.project_id.trim().is_empty() => call.project_id.clone(),
        None => {
            return Err(cfg.error("customerId", "is required for openTicket/closeTicket: the tenant has no project id to default to"))
        }
    };
    let email = match p.non_empty_str("email")? {
        Some(e) => e,
        None => match chat.agent_email() {
            Some(e) => e.to_string(),
            None => cfg.non_empty_str("defaultEmail")?.ok_or_else(|| {
                cfg.error(
                    "defaultEmail",
                    "no email to push the transcript as: params.email is not set, the chat has no assigned agent email, and crmConfig.defaultEmail is not set",
                )
            })?,
        },
    };
    let phone = Phone::digits(&chat.phone).ok_or_else(|| CrmError::invalid_params("chat.phone", "has no digits"))?;
    let max = cfg.uint("closeTicketMaxMessagesCount", DEFAULT_MAX_MESSAGES)? as usize;

    let msg: Vec<Value> = chat
        .transcript()
        .newest(max)
        .messages()
        .iter()
        .map(|m| {
            json!({
                "message": m.text,
                "timestamp": m.timestamp,
                "from": m.from,
                "to": m.to,
                "media": m.media,
            })
        })
        .collect();

    let mut form = Form::new();
    form.push("access_key", cfg.required_str("token")?)
        .push("user_email", email)
        .push("formal_whatsapp_url", format!("{customer_id}.texterchat.com"))
        .push("phone", phone)
        .push("msg", crm_sdk::json::to_string(&Value::Array(msg)));
    let resp = Request::post(format!("{BASE}/contacts/parse_whatsapp_session")).form(&form).send(http)?;
    // The seed: anything but 200 is a failure.
    if resp.status != 200 {
        return Err(resp.status_error());
    }
    Ok(CrmData::new())
}

/// Posts a form and reads Plando's `{"err": "0", ...}` envelope; any other err is a failure.
fn post(http: &dyn Transport, request: Request, form: &Form) -> Result<Value, CrmError> {
    envelope(request.form(form).send(http)?)
}

fn envelope(resp: Response) -> Result<Value, CrmError> {
    let resp = resp.error_for_status()?;
    let body: Value = resp.json()?;
    if !body.is_object() {
        return Err(CrmError::upstream(resp.status, "Plando answered with JSON that is not an object", &resp.body));
    }
    let err = body.get("err").and_then(scalar_text);
    if err.as_deref() != Some("0") {
        let desc = body.get("errdesc").and_then(scalar_text).unwrap_or_default();
        let message = match err {
            Some(code) => format!("Plando error {code}: {desc}"),
            None => "Plando's answer has no err field".to_string(),
        };
        return Err(CrmError::upstream(resp.status, message, &resp.body));
    }
    Ok(body)
}

/// The answer quoted as text (written by the SDK's loop: it nests as deep as Plando makes it).
fn bad_answer(what: &str, body: &Value) -> CrmError {
    CrmError::upstream(200, what, crm_sdk::json::to_string(body).as_bytes())
}

#[cfg(test)]
mod tests;
