//! The one error type at the host's API boundary, and the failure a call reports.

use serde::Serialize;
use serde_json::{json, Value};

/// Everything the control API can refuse. Each maps to one status and one `kind`.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidComponent(String),
    #[error("{0}")]
    WrongWorld(String),
    #[error("{message}")]
    ForbiddenImport { import: String, message: String },
    #[error("{0}")]
    NameMismatch(String),
    #[error("adapter '{0}' is not deployed")]
    UnknownAdapter(String),
    #[error("tenant '{0}' does not exist")]
    UnknownTenant(String),
    #[error("{message}")]
    InvalidConfig { field: Option<String>, message: String },
    #[error("{0}")]
    Internal(String),
}

impl HostError {
    pub fn status(&self) -> u16 {
        match self {
            HostError::BadRequest(_)
            | HostError::InvalidComponent(_)
            | HostError::WrongWorld(_)
            | HostError::ForbiddenImport { .. }
            | HostError::NameMismatch(_) => 400,
            HostError::UnknownAdapter(_) | HostError::UnknownTenant(_) => 404,
            HostError::InvalidConfig { .. } => 422,
            HostError::Internal(_) => 500,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            HostError::BadRequest(_) => "bad_request",
            HostError::InvalidComponent(_) => "invalid_component",
            HostError::WrongWorld(_) => "wrong_world",
            HostError::ForbiddenImport { .. } => "forbidden_import",
            HostError::NameMismatch(_) => "name_mismatch",
            HostError::UnknownAdapter(_) => "unknown_adapter",
            HostError::UnknownTenant(_) => "unknown_tenant",
            HostError::InvalidConfig { .. } => "invalid_config",
            HostError::Internal(_) => "internal",
        }
    }

    /// `{"error": {"kind", "message", ...}}`
    pub fn body(&self) -> Value {
        let mut e = json!({"kind": self.kind(), "message": self.to_string()});
        match self {
            HostError::InvalidConfig { field: Some(f), .. } => e["field"] = f.as_str().into(),
            HostError::ForbiddenImport { import, .. } => e["import"] = import.as_str().into(),
            _ => {}
        }
        json!({ "error": e })
    }
}

/// Why a call ended on `on_failure`: the adapter's typed error, or what the host saw
/// (deadline, memory cap, trap). Serialised as the `error` of a failure outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallFailure {
    pub kind: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_excerpt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl CallFailure {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        CallFailure {
            kind: kind.into(),
            message: message.into(),
            field: None,
            status: None,
            body_excerpt: None,
            retry_after_ms: None,
        }
    }
}
