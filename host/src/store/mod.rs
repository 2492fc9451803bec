//! Durable state: component blobs, adapter versions and which one is active, tenants and
//! pins, API keys, the audit log and recorded calls. One trait, async and fallible; SQLite is
//! the embedded default ([`sqlite::SqliteStore`]); a shared PostgreSQL store implements the
//! same trait. Every method that changes something is one transaction and writes its audit
//! entry in that same transaction, so a crash leaves either the old state or the new one.
//!
//! The store holds records only. The host keeps an in-memory view (tenants, active digests,
//! compiled components) built from [`Store::snapshot`] and updated after each committed write.
//! A store several hosts share ([`Store::changes`]) also has them follow each other: the audit
//! log is the change log, and a host re-reads what the entries after its cursor name.

pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use crate::limits::TraceRetention;
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::migrate::{Migration, MigrationSource, MigrationType};
use std::borrow::Cow;
use std::sync::Arc;

/// A write that the store refused for a reason of the data, not of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("adapter '{adapter}' has no stored version {digest}")]
    UnknownVersion { adapter: String, digest: String },
    #[error("adapter '{0}' has no previously active version to roll back to")]
    NoPreviousVersion(String),
    #[error("{0}")]
    VersionInUse(String),
    /// A constraint refused the write: with several hosts, another host changed what this
    /// host's view said (a version deleted, a tenant gone) a moment before.
    #[error("{0}")]
    Conflict(String),
    #[error("storage failed: {0}")]
    Db(String),
}

/// A backend's schema migrations, compiled into the binary: (version, description, SQL).
#[derive(Debug)]
struct Migrations(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Migrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, Cow::Borrowed(*sql), false))
                .collect())
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match e.as_database_error().map(|d| d.kind()) {
            Some(ErrorKind::ForeignKeyViolation | ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                "another host changed what this one was about to build on (the database refused: {e}); nothing was changed, retry"
            )),
            _ => StoreError::Db(e.to_string()),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One stored version of an adapter (the blob is fetched separately, by digest).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub adapter: String,
    pub digest: String,
    pub version: String,
    /// What `describe` returned when it was deployed.
    pub manifest: Value,
    pub deployed_at_ms: i64,
    pub deployed_by: String,
    pub staged: bool,
}

/// Which version serves an adapter's unpinned tenants, and which served before.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterState {
    pub name: String,
    pub active: Option<String>,
    pub previous: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: String,
    pub adapter: String,
    pub project_id: String,
    pub crm_config: Map<String, Value>,
    /// A digest of `adapter` this tenant stays on, whatever is active.
    pub pin: Option<String>,
    /// The operator's overrides of the host's limits for this tenant.
    pub limits: crate::limits::TenantLimits,
    pub updated_at_ms: i64,
    /// The redactor of this crmConfig's secrets, made by the first execution that needs it.
    pub redactor: Derived<crate::redact::RedactorCache>,
    /// The crmConfig's digest, made by the first trace that needs it.
    pub config_digest: Derived<crate::trace::ConfigDigest>,
}

/// What a record's other fields determine, kept with it once made. Never part of what the
/// record is (equality, debug output), and a copy starts empty: it may be changed before
/// it is used.
#[derive(Default)]
pub struct Derived<T>(T);

impl<T> std::ops::Deref for Derived<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Default> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub key_id: String,
    pub tenant: String,
    /// Hex SHA-256 of the whole key.
    pub key_hash: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// A change, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    #[serde(skip)]
    pub cursor: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: AuditAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Deploy,
    Stage,
    Activate,
    Rollback,
    DeleteVersion,
    Pin,
    TenantPut,
    TenantDelete,
    KeyIssued,
    KeyRevoked,
    CanaryStart,
    CanaryUpdate,
    CanaryEnd,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        crate::error::variant_name(&self)
    }

    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// Who did what, written with the change it describes.
#[derive(Debug, Clone)]
pub struct Audit {
    pub at_ms: i64,
    pub actor: String,
    pub action: AuditAction,
    pub adapter: Option<String>,
    pub tenant: Option<String>,
    pub digest: Option<String>,
    pub detail: Option<Value>,
}

/// One recorded call: its summary (the columns calls are listed from) and the whole trace
/// (already redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub head: CallHead,
    /// The whole trace as JSON text (`GET .../calls/{id}` answers it as stored).
    pub trace: String,
}

/// What lists a recorded call, read without its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHead {
    pub call_id: String,
    pub tenant: String,
    pub func_id: String,
    pub adapter: String,
    pub version: String,
    pub digest: String,
    pub started_at_ms: i64,
    pub duration_us: i64,
    pub outcome: String,
    pub error_kind: Option<String>,
}

/// Which recorded calls of an adapter a replay runs.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub adapter: String,
    pub tenants: Option<Vec<String>>,
    pub functions: Option<Vec<String>>,
    pub call_ids: Option<Vec<String>>,
    pub since_ms: Option<i64>,
    pub limit: u32,
}

/// A stored replay report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRecord {
    pub id: String,
    pub adapter: String,
    pub candidate: String,
    pub created_at_ms: i64,
    pub verdict: String,
    /// The report without its per-call results, as JSON text (what lists show).
    pub head: String,
    /// The whole report, as JSON text.
    pub report: String,
}

/// Where a canary rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    Running,
    Promoted,
    RolledBack,
    Stopped,
}

impl CanaryState {
    pub fn as_str(self) -> &'static str {
        crate::error::variant_name(&self)
    }

    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// A canary rollout: `digest` serves the unpinned tenants of `adapter` that fall in
/// `percent` (a hash of tenant and canary id), except those whose crmConfig it refused.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRecord {
    pub id: String,
    pub adapter: String,
    pub digest: String,
    pub percent: u8,
    pub max_failure_rate_increase: f64,
    pub min_calls: u32,
    /// Tenants never selected: the candidate refuses their crmConfig.
    pub excluded: Vec<String>,
    pub state: CanaryState,
    /// Why it ended, when it did.
    pub reason: Option<String>,
    pub started_at_ms: i64,
    pub started_by: String,
    pub ended_at_ms: Option<i64>,
}

/// An inbound event to store (see [`Store::append_events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The CRM's own id of the message, when it gives one: stored once per tenant.
    pub message_id: Option<String>,
    /// A digest of the content: a second delivery within the window is a duplicate.
    pub content_hash: String,
    pub event: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub cursor: i64,
    pub received_at_ms: i64,
    pub event: Value,
}

/// A message id as text, from a string or a number; blank is none.
pub fn scalar_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Everything the host needs in memory to serve, read once at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub adapters: Vec<AdapterState>,
    pub versions: Vec<VersionRecord>,
    pub tenants: Vec<TenantRecord>,
    pub keys: Vec<KeyRecord>,
    /// Each adapter's latest canary, whatever its state.
    pub canaries: Vec<CanaryRecord>,
    /// The last audit entry these records include: where following the change log starts.
    pub cursor: i64,
}

/// What a version deploy does to the adapter's active version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    Activate,
    Stage,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn snapshot(&self) -> StoreResult<Snapshot>;
    /// An adapter's state and stored versions (oldest first), as they are now.
    async fn adapter_records(&self, name: &str) -> StoreResult<(Option<AdapterState>, Vec<VersionRecord>)>;
    /// A tenant and its API keys, as they are now (`None`: deleted).
    async fn tenant_records(&self, id: &str) -> StoreResult<(Option<TenantRecord>, Vec<KeyRecord>)>;
    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// For a store other hosts write too: notified whenever another host may have changed
    /// something (and after a lost notification channel is back). `None`: this host is the
    /// only writer, its view is always current.
    fn changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
    async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>>;
    /// A blob's size, without reading it.
    async fn blob_size(&self, digest: &str) -> StoreResult<Option<i64>>;

    /// Stores the blob (once per digest) and the version (kept as it was if already stored),
    /// and with [`DeployMode::Activate`] makes it active. Returns the adapter's new state.
    async fn put_version(&self, v: &VersionRecord, bytes: &[u8], mode: DeployMode, audit: &Audit) -> StoreResult<AdapterState>;
    /// Makes a stored version active; the one it replaces becomes the previous.
    async fn activate(&self, adapter: &str, digest: &str, audit: &Audit) -> StoreResult<AdapterState>;
    /// Re-activates the previous version (it and the current one swap places).
    async fn rollback(&self, adapter: &str, audit: &Audit) -> StoreResult<AdapterState>;
    /// Deletes a version that is neither active nor pinned, and its blob once unused.
    async fn delete_version(&self, adapter: &str, digest: &str, audit: &Audit) -> StoreResult<AdapterState>;

    async fn put_tenant(&self, t: &TenantRecord, audit: &Audit) -> StoreResult<()>;
    /// Deletes the tenant, its keys, its recorded calls and its inbound events. `false` if it did not exist.
    async fn delete_tenant(&self, id: &str, audit: &Audit) -> StoreResult<bool>;

    async fn put_key(&self, k: &KeyRecord, audit: &Audit) -> StoreResult<()>;
    async fn delete_key(&self, tenant: &str, key_id: &str, audit: &Audit) -> StoreResult<bool>;

    /// Audit entries after `cursor`, oldest first.
    async fn audit_after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    /// Stores a webhook's events in one transaction, skipping duplicates (same message id
    /// ever, or same content hash within `dedup_window_ms`). Returns how many were new.
    async fn append_events(&self, tenant: &str, events: &[NewEvent], received_at_ms: i64, dedup_window_ms: i64) -> StoreResult<usize>;
    /// A tenant's events after `cursor`, oldest first.
    async fn events_after(&self, tenant: &str, cursor: i64, limit: u32) -> StoreResult<Vec<EventRecord>>;

    /// Deletes up to `batch` events received before `before_ms`, oldest first; how many.
    async fn delete_events_before(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;

    /// Stores recorded calls and keeps, of each of their tenants, the newest calls up to
    /// `keep.calls` of them and `keep.trace_bytes` of traces.
    async fn record_calls(&self, calls: Vec<CallRecord>, keep: &TraceRetention) -> StoreResult<()>;
    /// A tenant's most recent calls (with that outcome, when given), newest first, without
    /// their traces.
    async fn calls(&self, tenant: &str, limit: u32, outcome: Option<&str>) -> StoreResult<Vec<CallHead>>;
    async fn call(&self, tenant: &str, call_id: &str) -> StoreResult<Option<CallRecord>>;
    /// An adapter's recorded calls that `filter` selects, newest first, without their traces.
    async fn recorded_calls(&self, filter: &CallFilter) -> StoreResult<Vec<CallHead>>;

    /// Stores a canary with its audit entry: a new one (refused while another of its adapter
    /// runs), or a change of a running one. `false`: it had ended already, nothing changed.
    async fn put_canary(&self, c: &CanaryRecord, audit: &Audit) -> StoreResult<bool>;
    /// An adapter's latest canary.
    async fn canary(&self, adapter: &str) -> StoreResult<Option<CanaryRecord>>;

    /// Stores a replay report and keeps the adapter's newest `keep`.
    async fn put_replay(&self, r: &ReplayRecord, keep: u32) -> StoreResult<()>;
    /// An adapter's replay reports, newest first (`report` left empty).
    async fn replays(&self, adapter: &str, limit: u32) -> StoreResult<Vec<ReplayRecord>>;
    async fn replay(&self, adapter: &str, id: &str) -> StoreResult<Option<ReplayRecord>>;
}
