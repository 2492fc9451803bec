//! Planfix CRM adapter (Planfix's chat API and its WhatsApp/Chatra integrations; wire formats,
//! and which are ASSUMED, in README.md here): the platform's messages and lookups go to
//! Planfix's chat API, and Planfix's messages back to the platform arrive through
//! `handle-webhook`.

use crm_sdk::{
    constant_time_eq, form_text, join_path, join_segments, json, truthy, Adapter, AdapterSpec, Call, Config, ConfigField, CrmData,
    CrmError, Form, InboundMessage, Map, Media, Phone, Request, Transport, Url, Value, WebhookOutcome, WebhookRequest,
    WebhookResponse,
};

const CONFIG: &[ConfigField] = &[
    ConfigField::endpoint("planfixUrl")
        .required()
        .doc("The account's base URL, e.g. https://acme.planfix.com; the chat API is {planfixUrl}/webchat/api."),
    ConfigField::string("token").required().secret().doc("Sent as planfix_token on every call to Planfix."),
    ConfigField::string("providerId").required().doc("This platform's identifier in the integration; no '~'."),
    ConfigField::string("channel").doc("Extra channel identifier, sent when set."),
    ConfigField::string("chatToken").secret().doc("The token Planfix sends with its messages; required to receive them."),
];

/// Params that come from crmConfig; a param of the same name would silently fight it.
const RESERVED: &[&str] = &["cmd", "providerId", "planfix_token", "channel"];

/// newMessage's own parameters, in the order they are sent; `attachments` and `data_*` follow.
const MESSAGE_FIELDS: &[&str] = &[
    "chatId",
    "message",
    "title",
    "contactId",
    "contactName",
    "contactLastName",
    "contactIco",
    "contactEmail",
    "contactPhone",
    "contactData",
    "isEcho",
    "userEmail",
];

const CONTACT_FIELDS: &[&str] =
    &["contactId", "contactName", "contactLastName", "contactIco", "contactEmail", "contactPhone", "contactData"];

#[derive(Default)]
pub struct Planfix;

impl Adapter for Planfix {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "planfix",
        version: env!("CARGO_PKG_VERSION"),
        operations: &[
            "getCustomerDetails",
            "openTicket",
            "newMessage",
            "getTask",
            "getContact",
            "updateContact",
            "messageStatus",
        ],
        config: CONFIG,
        // Every account has its own host: the only server is the tenant's planfixUrl.
        outbound_hosts: &[],
    };

    fn validate_config(&self, config: &Config) -> Result<(), CrmError> {
        Self::SPEC.validate(config)?;
        if config.required_str("providerId")?.contains('~') {
            return Err(config.error("providerId", "must not contain '~' (Planfix reserves it)"));
        }
        Ok(())
    }

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        if let Some(k) = RESERVED.iter().find(|k| call.params.contains(k)) {
            return Err(call.params.error(k, "is set by the adapter (from crmConfig) and cannot be passed as a param"));
        }
        let api = Api::new(&call.config)?;
        let mut data = CrmData::new();
        match func_id {
            "newMessage" | "openTicket" => {
                let form = new_message(call, func_id == "openTicket")?;
                api.send("newMessage", form, false, http)?;
                data.insert("chatId".into(), json!(chat_id(call)?));
            }
            "getTask" => {
                data.insert("taskNumber".into(), get_task(&api, call, http)?);
            }
            "getContact" => {
                data.insert("contactNumber".into(), get_contact(&api, call, http)?);
            }
            "getCustomerDetails" => {
                let task = get_task(&api, call, http)?;
                let contact = get_contact(&api, call, http)?;
                let number = crm_sdk::scalar_text(&task).unwrap_or_default();
                // The number comes from Planfix's answer: one encoded segment, whatever it holds.
                data.insert("deepLink".into(), json!(join_segments(&api.base, &["task", &number]).as_str()));
                data.insert("taskNumber".into(), task);
                data.insert("contactNumber".into(), contact);
            }
            "updateContact" => {
                let mut form = Form::new();
                for field in CONTACT_FIELDS {
                    if let Some(v) = param_or_default(call, field)? {
                        form.push(*field, v);
                    }
                }
                api.send("updateContact", form, true, http)?;
            }
            "messageStatus" => {
                let p = &call.params;
                let mut form = Form::new();
                form.push("messageId", p.required_str("messageId")?).push("messageStatus", p.required_str("messageStatus")?);
                if let Some(t) = p.non_empty_str("messageStatusText")? {
                    form.push("messageStatusText", t);
                }
                api.send("messageStatus", form, true, http)?;
            }
            other => return Err(CrmError::unsupported_function(other)),
        }
        Ok(data)
    }

    fn handle_webhook(
        &self,
        _project_id: &str,
        config: &Config,
        request: &WebhookRequest,
        _http: &dyn Transport,
    ) -> Result<WebhookOutcome, CrmError> {
        inbound(config, request)
    }
}

crm_sdk::export_adapter!(Planfix);

/// The chat API of one account.
struct Api {
    base: Url,
    url: Url,
    head: Form,
}

impl Api {
    fn new(cfg: &Config) -> Result<Api, CrmError> {
        let base = cfg.url("planfixUrl")?.ok_or_else(|| cfg.error("planfixUrl", "is required"))?;
        let mut head = Form::new();
        head.push("providerId", cfg.required_str("providerId")?).push("planfix_token", cfg.required_str("token")?);
        if let Some(channel) = cfg.non_empty_str("channel")? {
            head.push("channel", channel);
        }
        Ok(Api { url: join_path(&base, "webchat/api"), base, head })
    }

    /// `POST {planfixUrl}/webchat/api` with `cmd`, the config's fields and `fields`; the
    /// answer's JSON (unwrapped from `{"data": ...}`), or `None` for a plain `OK`.
    fn send(&self, cmd: &str, fields: Form, idempotent: bool, http: &dyn Transport) -> Result<Option<Value>, CrmError> {
        let mut form = Form::new();
        form.push("cmd", cmd).extend(self.head.pairs().iter().cloned()).extend(fields.pairs().iter().cloned());
        let mut request = Request::post(self.url.as_str()).form(&form);
        if idempotent {
            request = request.idempotent();
        }
        let resp = request.send(http)?;
        let text = resp.text();
        let error = || {
            crm_sdk::json::from_str(&text)
                .ok()
                .map(unwrap_data)
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        };
        match resp.status {
            200..=299 => {
                let t = text.trim().trim_matches('"');
                // Planfix's chat API documentation writes the plain answer as "ОК" (Cyrillic);
                // Planfix sends "OK".
                if t.is_empty() || t.eq_ignore_ascii_case("ok") || t == "ОК" {
                    return Ok(None);
                }
                let v: Value = resp.json()?;
                Ok(Some(unwrap_data(v)))
            }
            401 => Err(CrmError::Unauthorized(format!("Planfix refused planfix_token: {}", error().unwrap_or(text)))),
            400 => match error() {
                Some(e) if e.eq_ignore_ascii_case("task not found") || e.eq_ignore_ascii_case("unknown contact") => {
                    Err(CrmError::NotFound(format!("Planfix: {e}")))
                }
                Some(e) if e.eq_ignore_ascii_case("invalid parameters") => {
                    Err(CrmError::invalid_params(cmd, format!("Planfix refused the {cmd} parameters: {e}")))
                }
                _ => Err(resp.status_error()),
            },
            _ => Err(resp.status_error()),
        }
    }
}

/// `{"data": {...}}` and `{"data": "<JSON text>"}` become what `data` holds.
fn unwrap_data(v: Value) -> Value {
    match v {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("data") => match m.remove("data").unwrap_or_default() {
            Value::String(s) => crm_sdk::json::from_str(&s).unwrap_or(Value::String(s)),
            other => other,
        },
        other => other,
    }
}

fn number(answer: Option<Value>, cmd: &str) -> Result<Value, CrmError> {
    answer
        .as_ref()
        .and_then(|v| v.get("number"))
        .filter(|n| crm_sdk::scalar_text(n).is_some_and(|s| !s.is_empty()))
        .cloned()
        .ok_or_else(|| {
            let body = answer.map(|v| crm_sdk::json::to_string(&v)).unwrap_or_else(|| "OK".into());
            CrmError::upstream(200, format!("Planfix's {cmd} answer has no number"), body.as_bytes())
        })
}

fn get_task(api: &Api, call: &Call, http: &dyn Transport) -> Result<Value, CrmError> {
    let mut form = Form::new();
    form.push("chatId", chat_id(call)?);
    number(api.send("getTask", form, true, http)?, "getTask")
}

fn get_contact(api: &Api, call: &Call, http: &dyn Transport) -> Result<Value, CrmError> {
    let contact_id = param_or_default(call, "contactId")?
        .ok_or_else(|| CrmError::invalid_params("contactId", "no contact: pass params.contactId or give the chat a phone"))?;
    let mut form = Form::new();
    form.push("contactId", contact_id);
    number(api.send("getContact", form, true, http)?, "getContact")
}

fn chat_id(call: &Call) -> Result<String, CrmError> {
    param_or_default(call, "chatId")?.ok_or_else(|| CrmError::invalid_params("chatId", "no chat id: the chat has none and params.chatId is not set"))
}

/// A param in Planfix's name, or what the chat says when it is not passed.
fn param_or_default(call: &Call, field: &str) -> Result<Option<String>, CrmError> {
    if let Some(v) = call.params.get(field) {
        return Ok(Some(form_text(v)).filter(|s| !s.is_empty()));
    }
    let chat = &call.chat;
    let phone = Phone::digits(&chat.phone);
    let title = chat.title.as_deref().map(str::trim).filter(|t| !t.is_empty());
    Ok(match field {
        "chatId" => Some(chat.id.clone()).filter(|s| !s.is_empty()),
        "contactId" | "contactPhone" => phone,
        // "Dana Levi Cohen": first name "Dana", last name "Levi Cohen".
        "contactName" => title.map(|t| t.split_once(' ').map_or(t, |(first, _)| first).to_string()),
        "contactLastName" => title.and_then(|t| t.split_once(' ')).map(|(_, last)| last.trim().to_string()),
        "userEmail" if is_echo(call)? => chat.agent_email().map(str::to_string),
        _ => None,
    })
}

fn is_echo(call: &Call) -> Result<bool, CrmError> {
    match call.params.get("isEcho") {
        None => Ok(false),
        Some(v) => truthy(v).ok_or_else(|| call.params.error("isEcho", "must be true or false")),
    }
}

/// newMessage's form (openTicket: with a title, which makes Planfix name the new task).
fn new_message(call: &Call, open_ticket: bool) -> Result<Form, CrmError> {
    let p = &call.params;
    let newest = call.chat.transcript().newest(1).messages().first().copied();
    let mut form = Form::new();
    for field in MESSAGE_FIELDS {
        let value = match *field {
            "message" => match p.get("message") {
                Some(v) => Some(form_text(v)),
                None => newest.map(|m| m.text.clone()),
            },
            "title" if open_ticket => Some(match p.non_empty_str("title")? {
                Some(t) => t,
                None => call.chat.title.clone().filter(|t| !t.trim().is_empty()).unwrap_or_else(|| format!("Chat {}", call.chat.phone)),
            }),
            "isEcho" => p.get("isEcho").map(|_| if is_echo(call).unwrap_or(false) { "1".to_string() } else { "0".to_string() }),
            f => param_or_default(call, f)?,
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            form.push(*field, v);
        }
    }
    if form.get("chatId").is_none() {
        return Err(CrmError::invalid_params("chatId", "no chat id: the chat has none and params.chatId is not set"));
    }
    is_echo(call)?;
    let attachments = match p.get("attachments") {
        Some(v) => attachments_param(v).map_err(|m| p.error("attachments", m))?,
        None if !p.contains("message") => newest.map(|m| m.media.iter().map(attachment_of).collect()).unwrap_or_default(),
        None => Vec::new(),
    };
    if form.get("message").is_none() && attachments.is_empty() {
        return Err(CrmError::invalid_params("message", "nothing to send: no params.message, no attachments, and the chat has no message"));
    }
    for (name, url) in attachments {
        form.push("attachments[name]", name).push("attachments[url]", url);
    }
    for (key, value) in p.iter() {
        let known = MESSAGE_FIELDS.contains(&key.as_str()) || key == "attachments";
        if !known {
            // data_<field> fills a task field; anything else Planfix may know goes as is.
            form.push_value(key.as_str(), value);
        }
    }
    Ok(form)
}

/// `[{"name": "a.pdf", "url": "https://..."}, ...]`
fn attachments_param(v: &Value) -> Result<Vec<(String, String)>, String> {
    let items = v.as_array().ok_or("must be a list of {name, url}")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let url = item.get("url").and_then(Value::as_str).filter(|u| !u.trim().is_empty());
            let url = url.ok_or(format!("item {i} has no url"))?;
            let name = item.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| file_name(url));
            Ok((name, url.to_string()))
        })
        .collect()
}

fn attachment_of(m: &Media) -> (String, String) {
    (m.file_name.clone().unwrap_or_else(|| file_name(&m.url)), m.url.clone())
}

fn file_name(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or(url).to_string()
}

// ----- Planfix -> platform --------------------------------------------------------------

fn reply(status: u16, body: Value) -> WebhookOutcome {
    WebhookOutcome { response: WebhookResponse::json(status, &body), messages: Vec::new() }
}

fn invalid() -> WebhookOutcome {
    reply(400, json!({"error": "Invalid parameters"}))
}

/// Planfix's `newMessage` to the platform (its chat API, both variants): checked, answered, and
/// turned into one inbound message.
fn inbound(config: &Config, request: &WebhookRequest) -> Result<WebhookOutcome, CrmError> {
    let expected = config.non_empty_str("chatToken")?.ok_or_else(|| {
        config.error("chatToken", "is required to receive Planfix messages (the token Planfix sends with them)")
    })?;
    let is_form = request
        .header("content-type")
        .is_some_and(|c| c.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if request.method != "POST" || !is_form || std::str::from_utf8(&request.body).is_err() {
        return Ok(invalid());
    }
    let form = Form::decode(&request.body);
    let field = |k: &str| form.get(k).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    match field("token") {
        Some(t) if constant_time_eq(&t, &expected) => {}
        _ => return Ok(reply(401, json!({"error": "Invalid token"}))),
    }
    if field("cmd").as_deref() != Some("newMessage") || field("providerId") != config.non_empty_str("providerId")? {
        return Ok(invalid());
    }
    let phone = field("contactPhone").and_then(|p| Phone::digits(&p));
    let message_id = field("messageId");
    let chat_id = match (field("chatId"), &phone, &message_id) {
        (Some(id), _, _) => id,
        // The first message to a contact (the chat API's second variant) names no chat: one is
        // derived from the phone, the same for every such message to that phone.
        (None, Some(phone), Some(_)) => format!("planfix:{phone}"),
        _ => return Ok(invalid()),
    };
    let names = form.get_all("attachments[name]");
    let urls = form.get_all("attachments[url]");
    if names.len() != urls.len() || urls.iter().any(|u| u.trim().is_empty()) {
        return Ok(invalid());
    }
    let text = form.get("message").unwrap_or_default().to_string();
    if text.trim().is_empty() && urls.is_empty() {
        return Ok(invalid());
    }
    let author = [field("userName"), field("userLastName")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let consumed = ["cmd", "token", "chatId", "contactPhone", "message", "attachments[name]", "attachments[url]", "userName", "userLastName"];
    let mut extra = Map::new();
    for (k, v) in form.pairs() {
        if consumed.contains(&k.as_str()) || extra.contains_key(k) {
            continue;
        }
        let name = match k.as_str() {
            "userIco" => "authorPicture",
            other => other,
        };
        extra.insert(name.to_string(), json!(v));
    }
    let contact_id = phone.clone().unwrap_or_else(|| chat_id.clone());
    let message = InboundMessage {
        chat_id: Some(chat_id.clone()),
        phone,
        text,
        author: Some(author).filter(|a| !a.is_empty()),
        media: names
            .iter()
            .zip(&urls)
            .map(|(name, url)| Media { url: url.to_string(), file_name: Some(name.to_string()).filter(|n| !n.is_empty()), mime_type: None })
            .collect(),
        extra,
    };
    Ok(WebhookOutcome {
        response: WebhookResponse::json(200, &json!({"chatId": chat_id, "contactId": contact_id})),
        messages: vec![message],
    })
}

#[cfg(test)]
mod tests;
