use std::fmt;

/// Why an adapter function failed. Mirrors the WIT `crm-error` variant one to one, so the
/// platform and its operators see the same kinds whether the adapter runs in wasm or natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmError {
    /// A crmConfig field is missing or invalid.
    Config { field: String, message: String },
    /// A param (or a chat field the function needs) is missing or invalid.
    InvalidParams { field: String, message: String },
    NotFound(String),
    Ambiguous(String),
    Unauthorized(String),
    RateLimited { message: String, retry_after_ms: Option<u64> },
    /// The CRM answered with an error status or body, or an unreadable body.
    Upstream { status: u16, message: String, body_excerpt: String },
    Unsupported(String),
    EgressDenied(String),
    Timeout(String),
    Transport(String),
    Internal(String),
}

/// How much of a CRM's body an error carries: enough to diagnose, not enough to flood logs.
pub const BODY_EXCERPT_BYTES: usize = 512;

impl CrmError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        CrmError::Config { field: field.into(), message: message.into() }
    }

    pub fn invalid_params(field: impl Into<String>, message: impl Into<String>) -> Self {
        CrmError::InvalidParams { field: field.into(), message: message.into() }
    }

    pub fn upstream(status: u16, message: impl Into<String>, body: &[u8]) -> Self {
        CrmError::Upstream { status, message: message.into(), body_excerpt: excerpt(body) }
    }

    pub fn unsupported_function(func_id: &str) -> Self {
        CrmError::Unsupported(format!("function '{func_id}' is not supported by this adapter"))
    }

    /// The stable snake_case name of the kind, as the host reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            CrmError::Config { .. } => "config",
            CrmError::InvalidParams { .. } => "invalid_params",
            CrmError::NotFound(_) => "not_found",
            CrmError::Ambiguous(_) => "ambiguous",
            CrmError::Unauthorized(_) => "unauthorized",
            CrmError::RateLimited { .. } => "rate_limited",
            CrmError::Upstream { .. } => "upstream",
            CrmError::Unsupported(_) => "unsupported",
            CrmError::EgressDenied(_) => "egress_denied",
            CrmError::Timeout(_) => "timeout",
            CrmError::Transport(_) => "transport",
            CrmError::Internal(_) => "internal",
        }
    }
}

/// The start of a body as text, cut on a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    // A cut inside a multi-byte character shows up as a trailing replacement char: drop it.
    let text = if cut.len() < body.len() { text.trim_end_matches('\u{FFFD}') } else { &text };
    text.to_string()
}

impl fmt::Display for CrmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrmError::Config { field, message } => write!(f, "crmConfig.{field}: {message}"),
            CrmError::InvalidParams { field, message } => write!(f, "{field}: {message}"),
            CrmError::RateLimited { message, retry_after_ms: Some(ms) } => {
                write!(f, "{message} (retry after {ms} ms)")
            }
            CrmError::RateLimited { message, retry_after_ms: None } => f.write_str(message),
            CrmError::Upstream { status, message, .. } => write!(f, "CRM answered {status}: {message}"),
            CrmError::NotFound(m)
            | CrmError::Ambiguous(m)
            | CrmError::Unauthorized(m)
            | CrmError::Unsupported(m)
            | CrmError::EgressDenied(m)
            | CrmError::Timeout(m)
            | CrmError::Transport(m)
            | CrmError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CrmError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_long_bodies_on_char_boundaries() {
        let body = "ש".repeat(400); // 2 bytes each: 800 bytes
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= BODY_EXCERPT_BYTES);
        assert!(e.chars().all(|c| c == 'ש'));
        assert_eq!(excerpt(b"short"), "short");
    }
}
