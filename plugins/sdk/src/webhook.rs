//! Requests a CRM sends back to the platform (Planfix does), and what they mean.

use crate::chat::Media;
use serde_json::{Map, Value};

/// A request the CRM sent to the platform's webhook URL for a tenant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebhookRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The path below the tenant's webhook URL.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl WebhookRequest {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the platform answers the CRM.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers to send.
    pub headers: Vec<(String, String)>,
    /// Body to send.
    pub body: Vec<u8>,
}

impl WebhookResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: &Value) -> Self {
        WebhookResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A message the CRM pushed towards a chat.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InboundMessage {
    /// The platform's chat, when the CRM names it.
    pub chat_id: Option<String>,
    /// The customer's phone, international digits.
    pub phone: Option<String>,
    /// The message text (may be empty when it carries media).
    pub text: String,
    /// Who wrote it on the CRM's side (an agent's name).
    pub author: Option<String>,
    /// Attachments.
    pub media: Vec<Media>,
    /// Whatever else the CRM sent that the platform may use, by name.
    pub extra: Map<String, Value>,
}

/// What a webhook request comes to: the answer for the CRM, and the messages for chats.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOutcome {
    /// Sent back to the CRM.
    pub response: WebhookResponse,
    /// Delivered to the platform's chats, in order.
    pub messages: Vec<InboundMessage>,
}
