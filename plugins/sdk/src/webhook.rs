//! Requests a CRM sends back to the platform (Planfix does), and what they mean.

use crate::chat::Media;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookResponse {
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
    pub chat_id: Option<String>,
    pub phone: Option<String>,
    pub text: String,
    pub author: Option<String>,
    pub media: Vec<Media>,
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookOutcome {
    pub response: WebhookResponse,
    pub messages: Vec<InboundMessage>,
}
