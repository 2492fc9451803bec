//! The call body of the HTTP API (`{"chat": {...}, "params": {...}}`, camelCase) and its
//! conversion to the WIT call context.

use crate::bindings::wit;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRequest {
    pub chat: ChatJson,
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatJson {
    /// Absent ids and phones are the adapter's business (Plando's lookup fails with
    /// "phone is unavailable", an outcome, not a malformed request).
    #[serde(default, deserialize_with = "text_or_number")]
    pub id: String,
    #[serde(default, deserialize_with = "text_or_number")]
    pub phone: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub agent: Option<AgentJson>,
    #[serde(default)]
    pub crm_data: Option<Map<String, Value>>,
    #[serde(default)]
    pub nodes: Option<Map<String, Value>>,
    #[serde(default)]
    pub messages: Option<Vec<MessageJson>>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentJson {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionJson {
    Incoming,
    Outgoing,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageJson {
    #[serde(default, deserialize_with = "text_or_number")]
    pub id: String,
    pub direction: DirectionJson,
    /// Media-only messages may carry no text.
    #[serde(default)]
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    #[serde(default, deserialize_with = "text_or_number")]
    pub from: String,
    #[serde(default, deserialize_with = "text_or_number")]
    pub to: String,
    #[serde(default)]
    pub media: Vec<MediaJson>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaJson {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// Ids and phones arrive as strings or numbers depending on the platform's client.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a string or a number, got {other}"))),
    }
}

/// Deserialises `body`; an error says whether the JSON is malformed or, if it is valid, at
/// which path (`chat.messages[0].direction`) it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    // serde would take `[chat, params]` for a struct; the API's bodies are objects only.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(format!("the {what} is empty: expected a JSON object")),
        Some(_) => return Err(format!("the {what} must be a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            format!("invalid {what}: {inner}")
        } else {
            format!("invalid {what} at `{path}`: {inner}")
        }
    })
}

impl CallRequest {
    /// Parses a call body; the error names the JSON path and what was wrong there.
    pub fn parse(body: &[u8]) -> Result<CallRequest, String> {
        let req: CallRequest = parse_json("call body", body)?;
        if let Some(nodes) = &req.chat.nodes {
            if let Some((k, _)) = nodes.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("invalid call body at `chat.nodes.{k}`: node texts must be strings"));
            }
        }
        Ok(req)
    }

    pub(crate) fn into_wit(self, project_id: &str, crm_config: &Map<String, Value>) -> wit::CallContext {
        let c = self.chat;
        wit::CallContext {
            project_id: project_id.to_string(),
            crm_config: Value::Object(crm_config.clone()).to_string(),
            params: Value::Object(self.params.unwrap_or_default()).to_string(),
            chat: wit::Chat {
                id: c.id,
                phone: c.phone,
                title: c.title,
                agent: c.agent.map(|a| wit::Agent { email: a.email, name: a.name }),
                crm_data: Value::Object(c.crm_data.unwrap_or_default()).to_string(),
                nodes: c
                    .nodes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(node, text)| wit::NodeText { node, text: text.as_str().unwrap_or_default().to_string() })
                    .collect(),
                messages: c
                    .messages
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| wit::Message {
                        id: m.id,
                        direction: match m.direction {
                            DirectionJson::Incoming => wit::Direction::Incoming,
                            DirectionJson::Outgoing => wit::Direction::Outgoing,
                        },
                        text: m.text,
                        timestamp: m.timestamp,
                        from: m.from,
                        to: m.to,
                        media: m
                            .media
                            .into_iter()
                            .map(|x| wit::Media { url: x.url, file_name: x.file_name, mime_type: x.mime_type })
                            .collect(),
                    })
                    .collect(),
                url: c.url,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path() {
        let e = CallRequest::parse(br#"{"chat": {"id": "1", "phone": "9", "messages": [{"id": "m", "direction": "sideways", "timestamp": 1, "from": "a", "to": "b"}]}}"#).unwrap_err();
        assert!(e.contains("chat.messages[0].direction"), "{e}");
        let e = CallRequest::parse(br#"{"chat": {"id": "1", "phone": ["x"]}}"#).unwrap_err();
        assert!(e.contains("chat.phone"), "{e}");
        let e = CallRequest::parse(br#"{"params": {}}"#).unwrap_err();
        assert!(e.contains("chat"), "{e}");
        let e = CallRequest::parse(b"{not json").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = CallRequest::parse(br#"{"chat": {"id": "1", "phone": "9"}, "params": []}"#).unwrap_err();
        assert!(e.contains("params"), "{e}");
        let e = CallRequest::parse(br#"{"chat": {"id": "1", "phone": "9", "nodes": {"n": 5}}}"#).unwrap_err();
        assert!(e.contains("chat.nodes.n"), "{e}");
    }

    #[test]
    fn numbers_are_accepted_for_ids_and_phones() {
        let r = CallRequest::parse(br#"{"chat": {"id": 12, "phone": 972501234567}}"#).unwrap();
        assert_eq!(r.chat.id, "12");
        assert_eq!(r.chat.phone, "972501234567");
        let r = CallRequest::parse(br#"{"chat": {}}"#).unwrap();
        assert_eq!((r.chat.id.as_str(), r.chat.phone.as_str()), ("", ""));
    }
}
