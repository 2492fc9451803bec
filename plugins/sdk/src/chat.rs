//! The chat and call data an adapter function sees. Serde shapes match the host's JSON API
//! (camelCase), so native tests can build them from the same JSON the platform sends.

use crate::values::{Origin, Values};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub direction: Direction,
    #[serde(default)]
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub media: Vec<Media>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: String,
    /// The customer's channel phone, international digits.
    pub phone: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub agent: Option<Agent>,
    #[serde(default)]
    pub crm_data: Map<String, Value>,
    /// Texts collected by bot nodes, by node name, in the order the platform sent them.
    #[serde(default)]
    pub nodes: Map<String, Value>,
    /// Oldest first.
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub url: Option<String>,
}

impl Chat {
    /// The text a bot node collected, if any.
    pub fn node(&self, name: &str) -> Option<&str> {
        self.nodes.get(name).and_then(Value::as_str)
    }

    /// The chat's messages, oldest first, to filter and format (see [`Transcript`]).
    pub fn transcript(&self) -> Transcript<'_> {
        let mut messages: Vec<&Message> = self.messages.iter().collect();
        // Stable: equal timestamps keep the platform's order.
        messages.sort_by_key(|m| m.timestamp);
        Transcript { messages }
    }

    /// The assigned agent's email, if any and not blank.
    pub fn agent_email(&self) -> Option<&str> {
        self.agent.as_ref()?.email.as_deref().filter(|e| !e.trim().is_empty())
    }
}

/// A chat's messages, oldest first, narrowed step by step:
/// `chat.transcript().only(Direction::Outgoing).newest(30).text("\n")`.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    messages: Vec<&'a Message>,
}

impl<'a> Transcript<'a> {
    /// Only the messages in this direction.
    pub fn only(mut self, direction: Direction) -> Self {
        self.messages.retain(|m| m.direction == direction);
        self
    }

    /// The newest `n` messages (still oldest first).
    pub fn newest(mut self, n: usize) -> Self {
        let drop = self.messages.len().saturating_sub(n);
        self.messages.drain(..drop);
        self
    }

    /// Drops the oldest messages until the texts joined with `separator` fit in `max_chars`
    /// characters (a single newest message longer than that is cut at the end).
    pub fn fit(mut self, separator: &str, max_chars: usize) -> Self {
        while self.messages.len() > 1 && self.text(separator).chars().count() > max_chars {
            self.messages.remove(0);
        }
        self
    }

    pub fn messages(&self) -> &[&'a Message] {
        &self.messages
    }

    /// One line per message, formatted by `line`.
    pub fn lines(&self, line: impl Fn(&Message) -> String) -> Vec<String> {
        self.messages.iter().map(|m| line(m)).collect()
    }

    /// The texts joined with `separator` (messages without text are skipped).
    pub fn text(&self, separator: &str) -> String {
        self.messages.iter().filter(|m| !m.text.is_empty()).map(|m| m.text.as_str()).collect::<Vec<_>>().join(separator)
    }
}

/// One call of an adapter function.
#[derive(Debug, Clone)]
pub struct Call {
    /// The tenant's project id on the platform.
    pub project_id: String,
    pub config: Values,
    pub chat: Chat,
    pub params: Values,
}

impl Call {
    /// A call from the JSON shapes of the host API, for native tests and tools.
    pub fn from_json(project_id: &str, config: Value, chat: Value, params: Value) -> Result<Call, String> {
        let object = |v: Value, what: &str| match v {
            Value::Object(m) => Ok(m),
            Value::Null => Ok(Map::new()),
            _ => Err(format!("{what} must be a JSON object")),
        };
        Ok(Call {
            project_id: project_id.to_string(),
            config: Values::new(Origin::Config, object(config, "crmConfig")?),
            chat: serde_json::from_value(chat).map_err(|e| format!("chat: {e}"))?,
            params: Values::new(Origin::Params, object(params, "params")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Chat {
        let m = |id: &str, d: &str, text: &str, ts: u64| {
            serde_json::from_value::<Message>(serde_json::json!({"id": id, "direction": d, "text": text, "timestamp": ts})).unwrap()
        };
        Chat {
            messages: vec![m("3", "outgoing", "third", 30), m("1", "incoming", "first", 10), m("2", "outgoing", "second", 20), m("4", "outgoing", "", 40)],
            ..Chat::default()
        }
    }

    #[test]
    fn transcripts_sort_filter_cut_and_join() {
        let c = chat();
        let ids = |t: &Transcript| t.messages().iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.transcript()), ["1", "2", "3", "4"]);
        assert_eq!(ids(&c.transcript().newest(2)), ["3", "4"]);
        assert_eq!(ids(&c.transcript().only(Direction::Outgoing)), ["2", "3", "4"]);
        assert_eq!(c.transcript().only(Direction::Outgoing).text("\n"), "second\nthird");
        assert_eq!(c.transcript().fit("\n", 12).text("\n"), "second\nthird");
        assert_eq!(c.transcript().lines(|m| format!("{}:{}", m.id, m.text))[0], "1:first");
    }
}
