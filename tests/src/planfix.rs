//! A Planfix chat-API emulator that behaves as Planfix's chat API and its WhatsApp and Chatra
//! integrations describe: a new chat's first message creates a task and a contact (numbers
//! increasing), later messages of that chat go to its task, tokens and providerId are checked, and lookups answer plain or wrapped in
//! `{"data": ...}` (object or JSON text), as Planfix does.

use crate::emulator::{Emulator, Recorded, Reply};
use serde_json::{json, Value};

pub const API_PATH: &str = "/webchat/api";

/// How getTask / getContact answers are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyForm {
    Plain,
    Data,
    DataText,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub number: u64,
    pub chat_id: String,
    pub contact_id: String,
    pub title: Option<String>,
    /// (message, attachments (name, url))
    pub messages: Vec<(String, Vec<(String, String)>)>,
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Contact {
    pub number: u64,
    pub id: String,
    pub name: String,
    pub last_name: String,
    pub phone: String,
    pub email: String,
}

pub struct Planfix {
    pub token: String,
    pub provider_id: String,
    pub tasks: Vec<Task>,
    pub contacts: Vec<Contact>,
    pub reply_form: ReplyForm,
    pub statuses: Vec<(String, String)>,
    next_task: u64,
    next_contact: u64,
}

pub type PlanfixEmulator = Emulator<Planfix>;

pub async fn start(token: &str, provider_id: &str) -> PlanfixEmulator {
    let state = Planfix {
        token: token.into(),
        provider_id: provider_id.into(),
        tasks: Vec::new(),
        contacts: Vec::new(),
        reply_form: ReplyForm::Plain,
        statuses: Vec::new(),
        next_task: 1000,
        next_contact: 5000,
    };
    Emulator::start(state, handle).await
}

fn shaped(form: ReplyForm, v: Value) -> Value {
    match form {
        ReplyForm::Plain => v,
        ReplyForm::Data => json!({"data": v}),
        ReplyForm::DataText => json!({"data": v.to_string()}),
    }
}

fn invalid() -> Reply {
    (400, json!({"error": "Invalid parameters"}))
}

fn handle(s: &mut Planfix, r: &Recorded) -> Reply {
    if r.path != API_PATH {
        return (404, json!({"error": "not found"}));
    }
    if !r.header("content-type").unwrap_or("").starts_with("application/x-www-form-urlencoded") {
        return invalid();
    }
    let form = r.form();
    let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let all = |k: &str| form.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    if get("planfix_token").as_deref() != Some(s.token.as_str()) {
        return (401, json!({"error": "Invalid token"}));
    }
    match get("providerId") {
        Some(p) if p == s.provider_id && !p.contains('~') => {}
        _ => return invalid(),
    }
    match get("cmd").as_deref() {
        Some("newMessage") => {
            let Some(chat_id) = get("chatId") else { return invalid() };
            let attachments: Vec<(String, String)> = all("attachments[name]").into_iter().zip(all("attachments[url]")).collect();
            let message = get("message").unwrap_or_default();
            if message.is_empty() && attachments.is_empty() {
                return invalid();
            }
            let fields: Vec<(String, String)> = form.iter().filter(|(k, _)| k.starts_with("data_")).cloned().collect();
            if let Some(task) = s.tasks.iter_mut().find(|t| t.chat_id == chat_id) {
                task.messages.push((message, attachments));
                return (200, json!("OK"));
            }
            let Some(contact_id) = get("contactId") else { return invalid() };
            if !s.contacts.iter().any(|c| c.id == contact_id) {
                s.next_contact += 1;
                s.contacts.push(Contact {
                    number: s.next_contact,
                    id: contact_id.clone(),
                    name: get("contactName").unwrap_or_default(),
                    last_name: get("contactLastName").unwrap_or_default(),
                    phone: get("contactPhone").unwrap_or_default(),
                    email: get("contactEmail").unwrap_or_default(),
                });
            }
            s.next_task += 1;
            s.tasks.push(Task {
                number: s.next_task,
                chat_id,
                contact_id,
                title: get("title"),
                messages: vec![(message, attachments)],
                fields,
            });
            (200, json!("OK"))
        }
        Some("getTask") => match s.tasks.iter().find(|t| Some(&t.chat_id) == get("chatId").as_ref()) {
            Some(t) => (200, shaped(s.reply_form, json!({"number": t.number}))),
            None => (400, json!({"error": "task not found"})),
        },
        Some("getContact") => match s.contacts.iter().find(|c| Some(&c.id) == get("contactId").as_ref()) {
            Some(c) => (200, shaped(s.reply_form, json!({"number": c.number}))),
            None => (400, json!({"error": "unknown contact"})),
        },
        Some("updateContact") => {
            let Some(id) = get("contactId") else { return invalid() };
            let Some(c) = s.contacts.iter_mut().find(|c| c.id == id) else { return (400, json!({"error": "unknown contact"})) };
            if let Some(v) = get("contactName") {
                c.name = v;
            }
            if let Some(v) = get("contactLastName") {
                c.last_name = v;
            }
            if let Some(v) = get("contactEmail") {
                c.email = v;
            }
            if let Some(v) = get("contactPhone") {
                c.phone = v;
            }
            (200, json!("OK"))
        }
        Some("messageStatus") => match (get("messageId"), get("messageStatus")) {
            (Some(id), Some(status)) => {
                s.statuses.push((id, status));
                (200, json!("OK"))
            }
            _ => invalid(),
        },
        _ => invalid(),
    }
}
