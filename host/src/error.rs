//! The one error type at the host's API boundary, and the failure a call reports. Every
//! `kind` string is the serde name of its variant ([`variant_name`]), spelled once.

use crate::store::StoreError;
use serde::Serialize;

/// Everything the API can refuse. Each maps to one status and one `kind` (its serde name).
#[derive(Debug, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidComponent(String),
    #[error("{0}")]
    WrongWorld(String),
    #[error("{message}")]
    ForbiddenImport { import: String, message: String },
    #[error("the component describes itself as '{declared}', but was uploaded as '{uploaded}'")]
    NameMismatch { declared: String, uploaded: String },
    #[error("adapter '{0}' is not deployed")]
    UnknownAdapter(String),
    #[error("adapter '{adapter}' has no stored version {digest}")]
    UnknownVersion { adapter: String, digest: String },
    #[error("tenant '{0}' does not exist")]
    UnknownTenant(String),
    #[error("tenant '{tenant}' has no API key '{key_id}'")]
    UnknownKey { tenant: String, key_id: String },
    #[error("tenant '{tenant}' has no recorded call '{call_id}' (recent calls are kept, older ones are dropped)")]
    UnknownCall { tenant: String, call_id: String },
    #[error("adapter '{0}' has no canary (start one with POST /v1/adapters/{0}/canary)")]
    UnknownCanary(String),
    #[error("adapter '{adapter}' has no stored replay report '{id}' (the newest reports are kept)")]
    UnknownReplay { adapter: String, id: String },
    #[error("the replay of {digest} of '{adapter}' against recorded calls failed ({}): the version stays staged; read the report, fix it, or accept the differences with force", replay_summary(.report))]
    ReplayFailed { adapter: String, digest: String, report: Box<crate::replay::ReplayReport> },
    #[error("no such endpoint: {0} (see the README for the API)")]
    #[serde(rename = "not_found")]
    NoSuchEndpoint(String),
    #[error("adapter '{0}' does not receive webhooks")]
    WebhooksUnsupported(String),
    #[error("a {what} may hold at most {limit} bytes")]
    PayloadTooLarge { what: &'static str, limit: usize },
    #[error("{0}")]
    AdapterFailed(String),
    #[error("{message}")]
    InvalidConfig { field: Option<String>, message: String },
    #[error("{}", invalid_pin(.adapter, .pin, .of_adapter))]
    InvalidPin {
        adapter: String,
        pin: String,
        /// The adapter the pinned digest belongs to, when it is another one's.
        of_adapter: Option<String>,
    },
    #[error("{0}")]
    InvalidLimits(FieldError),
    #[error("{}", invalid_tenants(.adapter, .digest, .tenants))]
    InvalidTenants { adapter: String, digest: String, tenants: Vec<InvalidTenant> },
    #[error("adapter '{0}' has no previously active version to roll back to")]
    NoPreviousVersion(String),
    #[error("{0}")]
    VersionInUse(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MisdirectedRequest(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    RateLimited(String),
    /// The host is at a capacity of its own (connections, body bytes in flight): the
    /// request was not read, and may be retried.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the host's database failed, nothing was changed: {0}")]
    #[serde(rename = "storage_unavailable")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
}

fn replay_summary(r: &crate::replay::ReplayReport) -> String {
    let (s, calls) = (&r.head.summary, r.head.calls);
    format!("{} changed, {} new failures, {} unmatched of {calls} calls", s.changed, s.new_failure, s.unmatched)
}

fn invalid_pin(adapter: &str, pin: &str, of_adapter: &Option<String>) -> String {
    match of_adapter {
        Some(a) => format!("pin {pin} is a version of adapter '{a}', not of '{adapter}'"),
        None => format!("pin {pin} is not a stored version of adapter '{adapter}'"),
    }
}

fn invalid_tenants(adapter: &str, digest: &str, tenants: &[InvalidTenant]) -> String {
    let names: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
    format!(
        "version {digest} of '{adapter}' refuses the crmConfig of tenants {}: fix or pin them first, stage it \
         (?stage=true), or force it (?force=true)",
        names.join(", ")
    )
}

/// A value the host refuses, and the field (a JSON path such as `limits.memoryMb`) it is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A tenant whose crmConfig a new version would refuse.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct InvalidTenant {
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl HostError {
    pub fn status(&self) -> u16 {
        use HostError::*;
        match self {
            BadRequest(_) | InvalidComponent(_) | WrongWorld(_) | ForbiddenImport { .. } | NameMismatch { .. } => 400,
            Unauthorized(_) => 401,
            Forbidden(_) => 403,
            RequestTimeout(_) => 408,
            MisdirectedRequest(_) => 421,
            UnknownAdapter(_)
            | UnknownVersion { .. }
            | UnknownTenant(_)
            | UnknownKey { .. }
            | UnknownCall { .. }
            | UnknownReplay { .. }
            | UnknownCanary(_)
            | NoSuchEndpoint(_)
            | WebhooksUnsupported(_) => 404,
            PayloadTooLarge { .. } => 413,
            AdapterFailed(_) => 502,
            InvalidTenants { .. } | NoPreviousVersion(_) | VersionInUse(_) | Conflict(_) | ReplayFailed { .. } => 409,
            InvalidConfig { .. } | InvalidPin { .. } | InvalidLimits(_) => 422,
            RateLimited(_) => 429,
            Storage(_) | Overloaded(_) => 503,
            Internal(_) => 500,
        }
    }

    pub fn kind(&self) -> &'static str {
        variant_name(self)
    }

    /// `{"error": {"kind", "message", ...}}`
    pub fn body(&self) -> ErrorBody {
        let (field, import, invalid_tenants) = match self {
            HostError::InvalidConfig { field, .. } => (field.clone(), None, None),
            HostError::InvalidLimits(e) => (Some(e.field.clone()), None, None),
            HostError::ForbiddenImport { import, .. } => (None, Some(import.clone()), None),
            HostError::InvalidTenants { tenants, .. } => (None, None, Some(tenants.clone())),
            _ => (None, None, None),
        };
        let report = match self {
            HostError::ReplayFailed { report, .. } => Some(report.clone()),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { kind: self.kind(), message: self.to_string(), field, import, invalid_tenants, report } }
    }
}

/// Pure conversion: a database failure is logged where its answer is made (the API, for a
/// 5xx), not here, so that callers that report an outage themselves (the follower) do not
/// log it twice.
impl From<StoreError> for HostError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownVersion { adapter, digest } => HostError::UnknownVersion { adapter, digest },
            StoreError::NoPreviousVersion(adapter) => HostError::NoPreviousVersion(adapter),
            StoreError::VersionInUse(m) => HostError::VersionInUse(m),
            StoreError::Conflict(m) => HostError::Conflict(m),
            StoreError::Db(m) => HostError::Storage(m),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// `replay_failed`: the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<crate::replay::ReplayReport>>,
}

/// Why a call went to `on_failure`: the adapter's typed error, or what the host saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
        variant_name(&self)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serialised as the `error` of a failure outcome.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallFailure {
    pub kind: FailureKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl CallFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        CallFailure { kind, message: message.into(), field: None, status: None, body_excerpt: None, retry_after_ms: None }
    }
}

/// The serde name of an enum value's variant (`rename_all`, `rename` applied), without
/// serialising its data: the one spelling of every `kind` and audit action.
pub fn variant_name<T: Serialize + ?Sized>(value: &T) -> &'static str {
    value.serialize(VariantName).unwrap_or("unknown")
}

/// A serializer that answers an enum variant's name and refuses everything else.
struct VariantName;

#[derive(Debug)]
struct NotAVariant;

impl std::fmt::Display for NotAVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not an enum variant")
    }
}

impl std::error::Error for NotAVariant {}

impl serde::ser::Error for NotAVariant {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAVariant
    }
}

/// Takes (and ignores) the fields of a tuple or struct variant, then answers its name.
struct Fields(&'static str);

impl serde::ser::SerializeTupleVariant for Fields {
    type Ok = &'static str;
    type Error = NotAVariant;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), NotAVariant> {
        Ok(())
    }
    fn end(self) -> Result<&'static str, NotAVariant> {
        Ok(self.0)
    }
}

impl serde::ser::SerializeStructVariant for Fields {
    type Ok = &'static str;
    type Error = NotAVariant;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, _: &T) -> Result<(), NotAVariant> {
        Ok(())
    }
    fn end(self) -> Result<&'static str, NotAVariant> {
        Ok(self.0)
    }
}

macro_rules! refuse {
    ($($f:ident($($t:ty),*)),* $(,)?) => {
        $(fn $f(self, $(_: $t),*) -> Result<&'static str, NotAVariant> { Err(NotAVariant) })*
    };
}

impl serde::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotAVariant;
    type SerializeSeq = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTuple = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTupleStruct = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeTupleVariant = Fields;
    type SerializeMap = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeStruct = serde::ser::Impossible<&'static str, NotAVariant>;
    type SerializeStructVariant = Fields;

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<&'static str, NotAVariant> {
        Ok(variant)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Fields, NotAVariant> {
        Ok(Fields(variant))
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Fields, NotAVariant> {
        Ok(Fields(variant))
    }
    refuse!(
        serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_f32(f32),
        serialize_f64(f64), serialize_char(char), serialize_str(&str), serialize_bytes(&[u8]), serialize_none(),
        serialize_unit(), serialize_unit_struct(&'static str),
    );
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<&'static str, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAVariant> {
        Err(NotAVariant)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotAVariant> {
        Err(NotAVariant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_serde_names_of_their_variants() {
        assert_eq!(FailureKind::MemoryLimitExceeded.as_str(), "memory_limit_exceeded");
        assert_eq!(serde_json::to_value(FailureKind::InvalidParams).unwrap(), "invalid_params");
        assert_eq!(HostError::UnknownTenant("t".into()).kind(), "unknown_tenant");
        assert_eq!(HostError::NoSuchEndpoint("/x".into()).kind(), "not_found");
        assert_eq!(HostError::Storage("gone".into()).kind(), "storage_unavailable");
        let e = HostError::UnknownVersion { adapter: "a".into(), digest: "sha256:0".into() };
        assert_eq!((e.kind(), e.to_string().as_str()), ("unknown_version", "adapter 'a' has no stored version sha256:0"));
        assert_eq!(HostError::PayloadTooLarge { what: "webhook body", limit: 9 }.kind(), "payload_too_large");
        assert_eq!(crate::store::AuditAction::DeleteVersion.as_str(), "delete_version");
    }
}
