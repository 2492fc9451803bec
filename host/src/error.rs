//! The one error type at the host's API boundary, and the failure a call reports.

use crate::store::StoreError;
use serde::Serialize;

/// Everything the API can refuse. Each maps to one status and one `kind`.
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
    #[error("{0}")]
    UnknownVersion(String),
    #[error("tenant '{0}' does not exist")]
    UnknownTenant(String),
    #[error("{0}")]
    UnknownKey(String),
    #[error("{0}")]
    UnknownCall(String),
    #[error("no such endpoint: {0} (see the README for the API)")]
    NoSuchEndpoint(String),
    #[error("{0}")]
    WebhooksUnsupported(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    AdapterFailed(String),
    #[error("{message}")]
    InvalidConfig { field: Option<String>, message: String },
    #[error("{0}")]
    InvalidPin(String),
    #[error("{message}")]
    InvalidLimits { field: String, message: String },
    #[error("{message}")]
    InvalidTenants { message: String, tenants: Vec<InvalidTenant> },
    #[error("{0}")]
    NoPreviousVersion(String),
    #[error("{0}")]
    VersionInUse(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
}

/// A tenant whose crmConfig a new version would refuse.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvalidTenant {
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl HostError {
    pub fn status(&self) -> u16 {
        match self {
            HostError::BadRequest(_)
            | HostError::InvalidComponent(_)
            | HostError::WrongWorld(_)
            | HostError::ForbiddenImport { .. }
            | HostError::NameMismatch(_) => 400,
            HostError::Unauthorized(_) => 401,
            HostError::Forbidden(_) => 403,
            HostError::UnknownAdapter(_)
            | HostError::UnknownVersion(_)
            | HostError::UnknownTenant(_)
            | HostError::UnknownKey(_)
            | HostError::UnknownCall(_)
            | HostError::NoSuchEndpoint(_)
            | HostError::WebhooksUnsupported(_) => 404,
            HostError::PayloadTooLarge(_) => 413,
            HostError::AdapterFailed(_) => 502,
            HostError::InvalidTenants { .. } | HostError::NoPreviousVersion(_) | HostError::VersionInUse(_) | HostError::Conflict(_) => 409,
            HostError::InvalidConfig { .. } | HostError::InvalidPin(_) | HostError::InvalidLimits { .. } => 422,
            HostError::RateLimited(_) => 429,
            HostError::Storage(_) => 503,
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
            HostError::UnknownVersion(_) => "unknown_version",
            HostError::UnknownTenant(_) => "unknown_tenant",
            HostError::UnknownKey(_) => "unknown_key",
            HostError::UnknownCall(_) => "unknown_call",
            HostError::NoSuchEndpoint(_) => "not_found",
            HostError::WebhooksUnsupported(_) => "webhooks_unsupported",
            HostError::PayloadTooLarge(_) => "payload_too_large",
            HostError::AdapterFailed(_) => "adapter_failed",
            HostError::InvalidConfig { .. } => "invalid_config",
            HostError::InvalidPin(_) => "invalid_pin",
            HostError::InvalidLimits { .. } => "invalid_limits",
            HostError::InvalidTenants { .. } => "invalid_tenants",
            HostError::NoPreviousVersion(_) => "no_previous_version",
            HostError::VersionInUse(_) => "version_in_use",
            HostError::Unauthorized(_) => "unauthorized",
            HostError::Forbidden(_) => "forbidden",
            HostError::RateLimited(_) => "rate_limited",
            HostError::Conflict(_) => "conflict",
            HostError::Storage(_) => "storage_unavailable",
            HostError::Internal(_) => "internal",
        }
    }

    /// `{"error": {"kind", "message", ...}}`
    pub fn body(&self) -> ErrorBody {
        let (field, import, invalid_tenants) = match self {
            HostError::InvalidConfig { field, .. } => (field.clone(), None, None),
            HostError::InvalidLimits { field, .. } => (Some(field.clone()), None, None),
            HostError::ForbiddenImport { import, .. } => (None, Some(import.clone()), None),
            HostError::InvalidTenants { tenants, .. } => (None, None, Some(tenants.clone())),
            _ => (None, None, None),
        };
        ErrorBody { error: ErrorDetail { kind: self.kind(), message: self.to_string(), field, import, invalid_tenants } }
    }
}

impl From<StoreError> for HostError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownVersion { .. } => HostError::UnknownVersion(e.to_string()),
            StoreError::NoPreviousVersion(_) => HostError::NoPreviousVersion(e.to_string()),
            StoreError::VersionInUse(m) => HostError::VersionInUse(m),
            StoreError::Conflict(m) => HostError::Conflict(m),
            StoreError::Db(m) => {
                tracing::error!("storage error: {m}");
                HostError::Storage(format!("the host's database failed, nothing was changed: {m}"))
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_tenants: Option<Vec<InvalidTenant>>,
}

/// Why a call went to `on_failure`: the adapter's typed error, or what the host saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Config,
    InvalidParams,
    NotFound,
    Ambiguous,
    Unauthorized,
    RateLimited,
    Upstream,
    Unsupported,
    EgressDenied,
    Timeout,
    Transport,
    Internal,
    DeadlineExceeded,
    MemoryLimitExceeded,
    Trap,
    InvalidOutput,
    OutboundLimitExceeded,
    ResourceLimitExceeded,
    ResponseLimitExceeded,
    FuelExhausted,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Config => "config",
            FailureKind::InvalidParams => "invalid_params",
            FailureKind::NotFound => "not_found",
            FailureKind::Ambiguous => "ambiguous",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Upstream => "upstream",
            FailureKind::Unsupported => "unsupported",
            FailureKind::EgressDenied => "egress_denied",
            FailureKind::Timeout => "timeout",
            FailureKind::Transport => "transport",
            FailureKind::Internal => "internal",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::MemoryLimitExceeded => "memory_limit_exceeded",
            FailureKind::Trap => "trap",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::OutboundLimitExceeded => "outbound_limit_exceeded",
            FailureKind::ResourceLimitExceeded => "resource_limit_exceeded",
            FailureKind::ResponseLimitExceeded => "response_limit_exceeded",
            FailureKind::FuelExhausted => "fuel_exhausted",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialised as the `error` of a failure outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallFailure {
    pub kind: FailureKind,
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
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        CallFailure { kind, message: message.into(), field: None, status: None, body_excerpt: None, retry_after_ms: None }
    }
}
