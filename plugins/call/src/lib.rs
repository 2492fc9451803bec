#![deny(missing_docs)]
//! The call body of the CRM host's API, `{"chat": {...}, "params": {...}}` in camelCase: one
//! serde definition that the host parses requests with and the adapter SDK hands to adapter
//! code (and builds in native tests), so both take and refuse exactly the same bodies.
//!
//! Lenient where platforms differ (ids, phones and addresses as strings or numbers; `null`
//! for an absent list or object), strict where a wrong type would change meaning (a message
//! without a direction or timestamp, a node text that is not a string).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A call's body as the platform sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallBody {
    /// The chat the function runs for.
    pub chat: Chat,
    /// The function's parameters (`null` or absent: none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub params: Map<String, Value>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The customer, to the business.
    Incoming,
    /// The business (an agent or a bot), to the customer.
    Outgoing,
}

/// A message's attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// Where the platform serves it.
    pub url: String,
    /// Its file name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Its MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The platform's message id.
    #[serde(default, deserialize_with = "text_or_number")]
    pub id: String,
    /// Who wrote it.
    pub direction: Direction,
    /// Media-only messages may carry no text.
    #[serde(default)]
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The sender's address (a phone, or the business's number).
    #[serde(default, deserialize_with = "text_or_number")]
    pub from: String,
    /// The recipient's address.
    #[serde(default, deserialize_with = "text_or_number")]
    pub to: String,
    /// Attachments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub media: Vec<Media>,
}

/// The agent a chat is assigned to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// The agent's email (what CRMs know users by).
    #[serde(default)]
    pub email: Option<String>,
    /// The agent's display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// The chat a function runs for, as the platform sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    /// Absent ids and phones are the adapter's business (Plando's lookup fails with
    /// "phone is unavailable", an outcome, not a malformed request).
    #[serde(default, deserialize_with = "text_or_number")]
    pub id: String,
    /// The customer's channel phone, international digits.
    #[serde(default, deserialize_with = "text_or_number")]
    pub phone: String,
    /// The chat's title (usually the customer's name).
    #[serde(default)]
    pub title: Option<String>,
    /// The assigned agent, if any.
    #[serde(default)]
    pub agent: Option<Agent>,
    /// crmData an earlier function put on the chat (`getCustomerDetails`'s answer).
    #[serde(default, deserialize_with = "null_as_default")]
    pub crm_data: Map<String, Value>,
    /// Texts collected by bot nodes, by node name, in the order the platform sent them
    /// (strings only).
    #[serde(default, deserialize_with = "node_texts")]
    pub nodes: Map<String, Value>,
    /// As the platform sent them (`transcript()` sorts them, oldest first).
    #[serde(default, deserialize_with = "null_as_default")]
    pub messages: Vec<Message>,
    /// The chat's page on the platform, when it sends one.
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

    /// The messages as narrowed so far, oldest first.
    pub fn messages(&self) -> &[&'a Message] {
        &self.messages
    }

    /// One line per message, formatted by `line`.
    pub fn lines(&self, line: impl Fn(&Message) -> String) -> Vec<String> {
        self.messages.iter().map(|m| line(m)).collect()
    }

    /// The newest messages as formatted lines (speaker, time, attachment links: whatever
    /// `line` writes), as many as fit in `max_messages` and, joined with `separator`, in
    /// `max_chars` characters: the budget counts what is sent, not the bare texts. Oldest
    /// first; a message `line` formats as nothing is left out; a single newest line longer
    /// than the budget is cut at the end.
    pub fn fit_lines(&self, line: impl Fn(&Message) -> String, separator: &str, max_chars: usize, max_messages: usize) -> Vec<String> {
        let sep = separator.chars().count();
        let mut kept: Vec<String> = Vec::new();
        let mut used = 0;
        for l in self.messages.iter().rev().map(|m| line(m)).filter(|l| !l.is_empty()).take(max_messages) {
            let n = l.chars().count() + if kept.is_empty() { 0 } else { sep };
            if used + n > max_chars {
                if kept.is_empty() {
                    kept.push(l.chars().take(max_chars).collect());
                }
                break;
            }
            used += n;
            kept.push(l);
        }
        kept.reverse();
        kept
    }

    /// The texts joined with `separator` (messages without text are skipped).
    pub fn text(&self, separator: &str) -> String {
        self.messages.iter().filter(|m| !m.text.is_empty()).map(|m| m.text.as_str()).collect::<Vec<_>>().join(separator)
    }
}

/// Ids and phones arrive as strings or numbers depending on the platform's client.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a string or a number, got {other}"))),
    }
}

/// `null` where a list or an object is expected means empty.
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A node's text: a string, nothing else.
struct NodeText(String);

impl<'de> Deserialize<'de> for NodeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(NodeText(s)),
            other => Err(serde::de::Error::custom(format!("node texts must be strings, got {other}"))),
        }
    }
}

/// Node texts by node name, in order; a path-aware error names the node whose text is not
/// a string (`chat.nodes.city`).
fn node_texts<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    struct Nodes;
    impl<'de> serde::de::Visitor<'de> for Nodes {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of node texts")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Map::new())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Map::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some((k, NodeText(v))) = map.next_entry::<String, NodeText>()? {
                out.insert(k, Value::String(v));
            }
            Ok(out)
        }
    }
    d.deserialize_option(Nodes)
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
    fn numbers_nulls_and_absent_fields_are_taken_as_the_host_takes_them() {
        let b: CallBody = serde_json::from_value(serde_json::json!({
            "chat": {"id": 12, "phone": 972501234567u64, "crmData": null, "nodes": null, "messages": [
                {"id": 7, "direction": "incoming", "timestamp": 1, "from": 9725, "media": null}]},
            "params": null})).unwrap();
        assert_eq!((b.chat.id.as_str(), b.chat.phone.as_str()), ("12", "972501234567"));
        assert_eq!((b.chat.messages[0].id.as_str(), b.chat.messages[0].from.as_str()), ("7", "9725"));
        assert!(b.params.is_empty() && b.chat.nodes.is_empty() && b.chat.crm_data.is_empty());
        let e = serde_json::from_value::<CallBody>(serde_json::json!({"chat": {"nodes": {"n": 5}}})).unwrap_err();
        assert!(e.to_string().contains("node texts must be strings"), "{e}");
        let e = serde_json::from_value::<CallBody>(serde_json::json!({"chat": {"id": ["x"]}})).unwrap_err();
        assert!(e.to_string().contains("expected a string or a number"), "{e}");
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

    #[test]
    fn formatted_lines_are_fitted_newest_first_by_what_is_sent() {
        let chat: Chat = serde_json::from_value(serde_json::json!({"id": "c", "phone": "1", "messages": [
            {"id": "1", "direction": "incoming", "text": "hello", "timestamp": 1},
            {"id": "2", "direction": "outgoing", "text": "hi, how can I help?", "timestamp": 2},
            {"id": "3", "direction": "incoming", "text": "my order", "timestamp": 3}
        ]}))
        .unwrap();
        let t = chat.transcript();
        let line = |m: &Message| format!("{}: {}", if m.direction == Direction::Incoming { "Customer" } else { "Agent" }, m.text);
        assert_eq!(t.fit_lines(line, "\n", 1000, 10), ["Customer: hello", "Agent: hi, how can I help?", "Customer: my order"]);
        // "Customer: my order" (18) + "\n" + "Agent: hi, how can I help?" (26) = 45: the oldest goes.
        assert_eq!(t.fit_lines(line, "\n", 45, 10), ["Agent: hi, how can I help?", "Customer: my order"]);
        assert_eq!(t.fit_lines(line, "\n", 1000, 1), ["Customer: my order"], "the message budget");
        assert_eq!(t.fit_lines(line, "\n", 8, 10), ["Customer"], "a newest line longer than the budget is cut");
        let only_text = |m: &Message| if m.id == "2" { String::new() } else { m.text.clone() };
        assert_eq!(t.fit_lines(only_text, "\n", 14, 10), ["hello", "my order"], "a message formatted as nothing takes no room");
        assert_eq!(t.fit_lines(only_text, "\n", 1000, 2), ["hello", "my order"], "nor a place in the message budget");
    }
}
