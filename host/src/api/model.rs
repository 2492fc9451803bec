//! The JSON shapes of the HTTP API, one type per answer, built from the service's records.

use crate::error::{CallFailure, InvalidTenant};
use crate::printed::CrmData;
use crate::runtime::Compiled;
use crate::service::{Deployed, RedactedTenant, VersionInfo, VersionState};
use crate::store::{AuditEntry, CallHead, EventRecord, VersionRecord};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use crate::time::rfc3339;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSummary {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub operations: Vec<String>,
}

impl AdapterSummary {
    pub fn of(c: &Compiled) -> Self {
        let d = &c.description;
        AdapterSummary { name: d.name.clone(), version: d.version.clone(), digest: c.digest.clone(), operations: d.operations.clone() }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployResponse {
    #[serde(flatten)]
    pub adapter: AdapterSummary,
    pub state: VersionState,
    /// Tenants following the active version whose crmConfig this version refuses.
    pub invalid_tenants: Vec<InvalidTenant>,
    /// The replay that gated it (`?replay=N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayReport>,
}

impl From<Deployed> for DeployResponse {
    fn from(d: Deployed) -> Self {
        DeployResponse { adapter: AdapterSummary::of(&d.compiled), state: d.state, invalid_tenants: d.invalid_tenants, replay: d.replay }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdapterList {
    pub adapters: Vec<AdapterSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterDetails {
    #[serde(flatten)]
    pub adapter: AdapterSummary,
    pub size_bytes: usize,
    pub config_schema: Value,
    pub secret_fields: Vec<String>,
    pub endpoint_fields: Vec<String>,
    pub outbound_hosts: Vec<String>,
    /// Every stored version, oldest first.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub version: String,
    pub digest: String,
    pub deployed_at_ms: i64,
}

impl AdapterDetails {
    pub fn new(c: &Compiled, history: &[VersionRecord], size_bytes: usize) -> Self {
        let d = &c.description;
        AdapterDetails {
            adapter: AdapterSummary::of(c),
            size_bytes,
            config_schema: d.config_schema.clone(),
            secret_fields: d.secret_fields.clone(),
            endpoint_fields: d.endpoint_fields.clone(),
            outbound_hosts: d.outbound_hosts.clone(),
            history: history
                .iter()
                .map(|r| HistoryEntry { version: r.version.clone(), digest: r.digest.clone(), deployed_at_ms: r.deployed_at_ms })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionEntry {
    pub version: String,
    pub digest: String,
    /// RFC 3339, UTC.
    pub deployed_at: String,
    pub deployed_by: String,
    pub state: VersionState,
    pub pinned_tenants: Vec<String>,
}

impl From<VersionInfo> for VersionEntry {
    fn from(v: VersionInfo) -> Self {
        VersionEntry {
            version: v.record.version,
            digest: v.record.digest,
            deployed_at: rfc3339(v.record.deployed_at_ms),
            deployed_by: v.record.deployed_by,
            state: v.state,
            pinned_tenants: v.pinned_tenants,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantResponse {
    pub tenant: String,
    pub adapter: String,
    pub project_id: String,
    pub crm_config: Map<String, Value>,
    /// The digest this tenant stays on; null: it follows the active version.
    pub pin: Option<String>,
    /// The operator's overrides (`{}`: the host's defaults throughout).
    pub limits: crate::limits::TenantLimits,
}

impl From<RedactedTenant> for TenantResponse {
    fn from(t: RedactedTenant) -> Self {
        TenantResponse {
            tenant: t.record.id.clone(),
            adapter: t.record.adapter.clone(),
            project_id: t.record.project_id.clone(),
            crm_config: t.crm_config,
            pin: t.record.pin.clone(),
            limits: t.record.limits.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    pub key_id: String,
    /// Shown once; only its hash is stored.
    pub key: String,
}

/// Where the bot goes next: `on_complete` with crmData, or `on_failure` with the error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum CallResponse<'a> {
    Complete {
        #[serde(rename = "crmData")]
        #[schema(value_type = Map<String, Value>)]
        crm_data: &'a RawValue,
    },
    Failure {
        error: &'a CallFailure,
    },
}

impl<'a> From<&'a Result<CrmData, CallFailure>> for CallResponse<'a> {
    fn from(r: &'a Result<CrmData, CallFailure>) -> Self {
        match r {
            Ok(crm_data) => CallResponse::Complete { crm_data: crm_data.raw() },
            Err(error) => CallResponse::Failure { error },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallList {
    pub calls: Vec<CallSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallSummary {
    pub call_id: String,
    pub func_id: String,
    pub adapter: String,
    pub version: String,
    pub digest: String,
    pub started_at: String,
    pub duration_ms: f64,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

impl From<CallHead> for CallSummary {
    fn from(c: CallHead) -> Self {
        CallSummary {
            call_id: c.call_id,
            func_id: c.func_id,
            adapter: c.adapter,
            version: c.version,
            digest: c.digest,
            started_at: rfc3339(c.started_at_ms),
            duration_ms: c.duration_us as f64 / 1000.0,
            outcome: c.outcome,
            error_kind: c.error_kind,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditItem>,
    /// Pass as `after` to read on; the same cursor when nothing is new.
    pub next: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditItem {
    pub cursor: String,
    pub at: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

impl From<AuditEntry> for AuditItem {
    fn from(entry: AuditEntry) -> Self {
        AuditItem { cursor: entry.cursor.to_string(), at: rfc3339(entry.at_ms), entry }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<EventItem>,
    /// Pass as `after` to read on; the same cursor when nothing is new.
    pub next: String,
}

/// An inbound message: `cursor`, `receivedAt`, then `chatId`, `phone`, `text`, `author`,
/// `media`, `extra` as stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventItem {
    pub cursor: String,
    pub received_at: String,
    #[serde(flatten)]
    pub event: Map<String, Value>,
}

impl From<EventRecord> for EventItem {
    fn from(e: EventRecord) -> Self {
        let event = match e.event {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        EventItem { cursor: e.cursor.to_string(), received_at: rfc3339(e.received_at_ms), event }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: crate::service::HealthStatus,
}

