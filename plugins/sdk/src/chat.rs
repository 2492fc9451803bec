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

    /// The assigned agent's email, if any and not blank.
    pub fn agent_email(&self) -> Option<&str> {
        self.agent.as_ref()?.email.as_deref().filter(|e| !e.trim().is_empty())
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
