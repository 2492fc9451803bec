//! The chat and call data an adapter function sees. The chat's types are the host API's own
//! call body (`crm-call`), so native tests build them from the same JSON the platform sends,
//! and whatever the host accepts, `Call::from_json` accepts too.

use crate::time::Timestamp;
use crate::values::{Origin, Values};
pub use crm_call::{Agent, CallBody, Chat, Direction, Media, Message, Transcript};
use serde_json::{Map, Value};

/// One call of an adapter function.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's time: when the host started it (read with [`Call::now`]).
    pub now: Timestamp,
    /// The tenant's project id on the platform.
    pub project_id: String,
    /// The tenant's crmConfig.
    pub config: Values,
    /// The chat the call is for.
    pub chat: Chat,
    /// The function's params.
    pub params: Values,
}

impl Call {
    /// A call from the JSON shapes of the host API, for native tests and tools. Its time is
    /// now: the system's natively, the call's in a component.
    pub fn from_json(project_id: &str, config: Value, chat: Value, params: Value) -> Result<Call, String> {
        let object = |v: Value, what: &str| match v {
            Value::Object(m) => Ok(m),
            Value::Null => Ok(Map::new()),
            _ => Err(format!("{what} must be a JSON object")),
        };
        Ok(Call {
            now: crate::time::clock_now(),
            project_id: project_id.to_string(),
            config: Values::new(Origin::Config, object(config, "crmConfig")?),
            chat: serde_json::from_value(chat).map_err(|e| format!("chat: {e}"))?,
            params: Values::new(Origin::Params, object(params, "params")?),
        })
    }

    /// The call's time. Adapters have no other clock: the host answers the time its call
    /// started, one time for the whole call, so that a call is repeatable (a replay runs it
    /// at the time it was recorded). Natively, the time the `Call` was made.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The same call at another time (native tests of time-dependent mapping).
    pub fn at(mut self, now: Timestamp) -> Call {
        self.now = now;
        self
    }
}
