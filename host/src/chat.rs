//! The call body of the HTTP API (`{"chat": {...}, "params": {...}}`, camelCase; one
//! definition shared with the adapter SDK, `crm-call`) and its conversion to the WIT call
//! context; and parsing of every JSON body the API takes, with errors that name the path.

use crate::bindings::wit;
use crm_call::{CallBody, Direction};
pub use crm_call::Media;
use serde_json::{Map, Value};

/// Deserialises `body`; an error says whether the JSON is malformed or, if it is valid, at
/// which path (`chat.messages[0].direction`) it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    // serde would take `[chat, params]` for a struct; the API's bodies are objects only.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(format!("the {what} is empty: expected a JSON object")),
        Some(_) => return Err(format!("the {what} must be a JSON object")),
    }
    // JSON is UTF-8 throughout. serde_json checks the strings it decodes, not those it skips
    // (a field the body type does not have), and the trace writer, which parses the whole
    // body again, would then lose it.
    let body = std::str::from_utf8(body).map_err(|e| {
        let before = &body[..e.valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        format!("malformed JSON: invalid UTF-8 at line {line} column {column}")
    })?;
    let de = &mut serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            format!("invalid {what}: {inner}")
        } else {
            format!("invalid {what} at `{path}`: {inner}")
        }
    })?;
    // One JSON value, then whitespace at most: `{…} {…}` or `{…} garbage` is not a body.
    de.end().map_err(|e| format!("malformed JSON: {e}"))?;
    Ok(value)
}

/// Parses a call body; the error names the JSON path and what was wrong there.
pub(crate) fn parse_call(body: &[u8]) -> Result<CallBody, String> {
    parse_json("call body", body)
}

/// A JSON object's text, as the object holding the map would print: no copy of the map.
pub(crate) fn json_text(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).expect("a JSON map prints")
}

/// The WIT call context of a parsed body, for a tenant.
pub(crate) fn into_wit(body: CallBody, project_id: &str, crm_config: &Map<String, Value>) -> wit::CallContext {
    let c = body.chat;
    wit::CallContext {
        project_id: project_id.to_string(),
        crm_config: json_text(crm_config),
        params: json_text(&body.params),
        chat: wit::Chat {
            id: c.id,
            phone: c.phone,
            title: c.title,
            agent: c.agent.map(|a| wit::Agent { email: a.email, name: a.name }),
            crm_data: json_text(&c.crm_data),
            nodes: c
                .nodes
                .into_iter()
                .map(|(node, text)| wit::NodeText { node, text: text.as_str().unwrap_or_default().to_string() })
                .collect(),
            messages: c
                .messages
                .into_iter()
                .map(|m| wit::Message {
                    id: m.id,
                    direction: match m.direction {
                        Direction::Incoming => wit::Direction::Incoming,
                        Direction::Outgoing => wit::Direction::Outgoing,
                    },
                    text: m.text,
                    timestamp: m.timestamp,
                    from: m.from,
                    to: m.to,
                    media: m.media.into_iter().map(|x| wit::Media { url: x.url, file_name: x.file_name, mime_type: x.mime_type }).collect(),
                })
                .collect(),
            url: c.url,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path() {
        let e = parse_call(br#"{"chat": {"id": "1", "phone": "9", "messages": [{"id": "m", "direction": "sideways", "timestamp": 1, "from": "a", "to": "b"}]}}"#).unwrap_err();
        assert!(e.contains("chat.messages[0].direction"), "{e}");
        let e = parse_call(br#"{"chat": {"id": "1", "phone": ["x"]}}"#).unwrap_err();
        assert!(e.contains("chat.phone"), "{e}");
        let e = parse_call(br#"{"params": {}}"#).unwrap_err();
        assert!(e.contains("chat"), "{e}");
        let e = parse_call(b"{not json").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        for trailing in [&br#"{"chat": {"id": "1"}} {"chat": {}}"#[..], br#"{"chat": {"id": "1"}}]"#, b"{\"chat\": {}} x"] {
            let e = parse_call(trailing).unwrap_err();
            assert!(e.starts_with("malformed JSON: trailing characters at line 1 column"), "{e}");
        }
        assert!(parse_call(b" {\"chat\": {}}\r\n\t ").is_ok(), "whitespace around the object is fine");
        // Also in a string no field of the body reads.
        let e = parse_call(b"{\"chat\": {\"id\": \"1\"},\n \"note\": \"caf\xe9\"}").unwrap_err();
        assert_eq!(e, "malformed JSON: invalid UTF-8 at line 2 column 14");
        assert!(parse_call("{\"chat\": {\"id\": \"שלום\"}, \"note\": \"café\"}".as_bytes()).is_ok());
        let e = parse_call(br#"{"chat": {"id": "1", "phone": "9"}, "params": []}"#).unwrap_err();
        assert!(e.contains("params"), "{e}");
        let e = parse_call(br#"{"chat": {"id": "1", "phone": "9", "nodes": {"n": 5}}}"#).unwrap_err();
        assert!(e.contains("chat.nodes.n"), "{e}");
    }

    #[test]
    fn numbers_are_accepted_for_ids_and_phones() {
        let r = parse_call(br#"{"chat": {"id": 12, "phone": 972501234567}}"#).unwrap();
        assert_eq!(r.chat.id, "12");
        assert_eq!(r.chat.phone, "972501234567");
        let r = parse_call(br#"{"chat": {}}"#).unwrap();
        assert_eq!((r.chat.id.as_str(), r.chat.phone.as_str()), ("", ""));
    }
}
