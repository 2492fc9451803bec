//! A Plando emulator speaking the wire format of `plugins/plando/README.md` (form-encoded
//! requests, `{"err": "0", ...}` answers), with a small contact database.
//!
//! Behaviour beyond the documented format is kept minimal and explicit: a wrong access key
//! answers `err: "401"`; contacts carry their base fields (id, names, phone, email) plus the
//! fields the request's `attr` names, as the Plando adapter reference's attrFields section describes.

use crate::emulator::{Emulator, Recorded, Reply};
use serde_json::{json, Map, Value};

pub const CONTACT_DETAILS: &str = "/contact_details";
pub const LEAD_FORM: &str = "/contacts/lead_form1";
pub const WHATSAPP_SESSION: &str = "/contacts/parse_whatsapp_session";

const BASE_FIELDS: &[&str] = &["id", "first_name", "last_name", "phone", "email"];

pub struct Plando {
    pub access_key: String,
    pub contacts: Vec<Map<String, Value>>,
    next_id: u64,
    /// Scripted answers by path, used instead of the emulation (e.g. an `err` or a missing
    /// `contact_id`).
    pub scripted: Vec<(String, u16, Value)>,
}

pub type PlandoEmulator = Emulator<Plando>;

pub async fn start(access_key: &str) -> PlandoEmulator {
    let state = Plando { access_key: access_key.into(), contacts: Vec::new(), next_id: 1000, scripted: Vec::new() };
    Emulator::start(state, handle).await
}

impl Plando {
    pub fn add_contact(&mut self, contact: Value) {
        self.contacts.push(contact.as_object().expect("contact is an object").clone());
    }

    /// Answer `path` with `status` and `body` instead of emulating.
    pub fn script(&mut self, path: &str, status: u16, body: Value) {
        self.scripted.push((path.to_string(), status, body));
    }

    pub fn contact(&self, id: &str) -> Option<&Map<String, Value>> {
        self.contacts.iter().find(|c| text(c.get("id")) == id)
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn err(code: &str, desc: &str) -> Reply {
    (200, json!({"err": code, "errdesc": desc}))
}

fn handle(p: &mut Plando, r: &Recorded) -> Reply {
    if let Some((_, status, body)) = p.scripted.iter().find(|(path, _, _)| *path == r.path) {
        return (*status, body.clone());
    }
    if r.method != "POST" {
        return (405, json!({"err": "405", "errdesc": "POST only"}));
    }
    if r.header("content-type") != Some("application/x-www-form-urlencoded") {
        return err("400", "expected a form body");
    }
    let key_ok = r.field("access_key").as_deref() == Some(p.access_key.as_str());
    match r.path.as_str() {
        CONTACT_DETAILS if !key_ok => err("401", "invalid access key"),
        CONTACT_DETAILS => contact_details(p, r),
        LEAD_FORM if !key_ok => err("401", "invalid access key"),
        LEAD_FORM => lead_form(p, r),
        WHATSAPP_SESSION if !key_ok => (403, json!({"err": "401", "errdesc": "invalid access key"})),
        WHATSAPP_SESSION => whatsapp_session(r),
        _ => (404, json!({"err": "404", "errdesc": "no such endpoint"})),
    }
}

fn contact_details(p: &Plando, r: &Recorded) -> Reply {
    let Some(options) = r.field("search_options").map(|s| serde_json::from_str::<Value>(&s)) else {
        return err("2", "search_options is required");
    };
    let Ok(Value::Object(options)) = options else { return err("2", "search_options is not a JSON object") };
    let phone = digits(&r.field("phone").unwrap_or_default());
    let attr: Vec<String> = r.field("attr").unwrap_or_default().split(',').map(str::to_string).collect();
    let matches = p.contacts.iter().filter(|c| {
        let by_phone = phone.is_empty() || digits(&text(c.get("phone"))) == phone;
        let by_id = options.get("contact_id").is_none_or(|v| text(Some(v)) == text(c.get("id")));
        let by_mail = options.get("contact_mail").is_none_or(|v| text(Some(v)) == text(c.get("email")));
        by_phone && by_id && by_mail
    });
    let contacts: Vec<Value> = matches
        .map(|c| {
            let picked: Map<String, Value> = c
                .iter()
                .filter(|(k, _)| BASE_FIELDS.contains(&k.as_str()) || attr.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(picked)
        })
        .collect();
    (200, json!({"err": "0", "errdesc": "", "contacts": contacts}))
}

fn lead_form(p: &mut Plando, r: &Recorded) -> Reply {
    let form = r.form();
    if r.field("chat").unwrap_or_default().is_empty() {
        return err("3", "chat is required");
    }
    if r.field("no_redirect").as_deref() != Some("1") {
        return err("3", "no_redirect must be 1 for API use");
    }
    let mut fields = Map::new();
    for (k, v) in &form {
        if matches!(k.as_str(), "chat" | "access_key" | "no_redirect" | "update_contact") {
            continue;
        }
        let key = k.strip_prefix("contact[").and_then(|s| s.strip_suffix(']')).unwrap_or(k);
        fields.insert(key.to_string(), Value::String(v.clone()));
    }
    if r.field("update_contact").as_deref() == Some("1") {
        let id = r.field("id").unwrap_or_default();
        let Some(contact) = p.contacts.iter_mut().find(|c| text(c.get("id")) == id) else {
            return err("5", "contact to update not found");
        };
        contact.extend(fields);
        return (200, json!({"err": "0", "errdesc": "updated", "contact_id": id}));
    }
    if !fields.contains_key("name") && !fields.contains_key("first_name") {
        return err("4", "name is required");
    }
    p.next_id += 1;
    let id = p.next_id.to_string();
    fields.insert("id".into(), Value::String(id.clone()));
    p.contacts.push(fields);
    (200, json!({"err": "0", "errdesc": "created", "contact_id": id}))
}

fn whatsapp_session(r: &Recorded) -> Reply {
    if r.field("user_email").unwrap_or_default().is_empty() {
        return (400, json!({"err": "6", "errdesc": "user_email is required"}));
    }
    match r.field("msg").map(|m| serde_json::from_str::<Value>(&m)) {
        Some(Ok(Value::Array(_))) => (200, json!({"err": "0", "errdesc": ""})),
        _ => (400, json!({"err": "6", "errdesc": "msg must be a JSON array"})),
    }
}
