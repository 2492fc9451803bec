use std::fmt;

/// Why an adapter function failed. Mirrors the WIT `crm-error` variant one to one, so the
/// platform and its operators see the same kinds whether the adapter runs in wasm or natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmError {
    /// A crmConfig field is missing or invalid.
    Config {
        /// The field, as the tenant's crmConfig names it.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A param (or a chat field the function needs) is missing or invalid.
    InvalidParams {
        /// The param (`phoneNumber`) or chat field (`chat.phone`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The CRM has no record that matches (no contact with that phone).
    NotFound(String),
    /// Several records match where the function needs one.
    Ambiguous(String),
    /// The CRM refused the tenant's credentials.
    Unauthorized(String),
    /// The CRM asked the platform to slow down.
    RateLimited {
        /// What the CRM said.
        message: String,
        /// How long the CRM asked to wait, when it said.
        retry_after_ms: Option<u64>,
    },
    /// The CRM answered with an error status or body, or an unreadable body.
    Upstream {
        /// The CRM's HTTP status (200 for an error inside a successful answer).
        status: u16,
        /// What went wrong, in the CRM's words where it gave some.
        message: String,
        /// The start of the CRM's body ([`BODY_EXCERPT_BYTES`] at most).
        body_excerpt: String,
    },
    /// The adapter does not do this (an unknown function, a webhook it does not take).
    Unsupported(String),
    /// The host refused a request to a host the adapter and tenant do not allow.
    EgressDenied(String),
    /// The CRM did not answer in time.
    Timeout(String),
    /// The request failed below HTTP (connection refused or reset, TLS, DNS).
    Transport(String),
    /// A bug or broken invariant in the adapter or the host.
    Internal(String),
}

/// How much of a CRM's body an error carries: enough to diagnose, not enough to flood logs.
pub const BODY_EXCERPT_BYTES: usize = 512;

impl CrmError {
    /// A `config` error naming `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        CrmError::Config { field: field.into(), message: message.into() }
    }

    /// An `invalid_params` error naming `field`.
    pub fn invalid_params(field: impl Into<String>, message: impl Into<String>) -> Self {
        CrmError::InvalidParams { field: field.into(), message: message.into() }
    }

    /// An `upstream` error with the CRM's `status` and an excerpt of its `body`.
    pub fn upstream(status: u16, message: impl Into<String>, body: &[u8]) -> Self {
        CrmError::Upstream { status, message: message.into(), body_excerpt: excerpt(body) }
    }

    /// `unsupported`: the adapter has no function `func_id`.
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
