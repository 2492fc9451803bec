//! Decoding records from rows, once for both databases: each backend's row type gives the
//! four kinds of cell the schema uses, and the records are built from those.

use super::*;
use sqlx::Row;

pub(super) trait Cells {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
    fn float(&self, col: &str) -> StoreResult<f64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;

    fn json(&self, col: &str) -> StoreResult<Value> {
        serde_json::from_str(&self.text(col)?).map_err(|e| StoreError::Db(format!("column {col} holds invalid JSON: {e}")))
    }
}

macro_rules! cells {
    ($row:ty) => {
        impl Cells for $row {
            fn text(&self, col: &str) -> StoreResult<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> StoreResult<i64> {
                Ok(self.try_get(col)?)
            }
            fn flag(&self, col: &str) -> StoreResult<bool> {
                Ok(self.try_get(col)?)
            }
            fn float(&self, col: &str) -> StoreResult<f64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}

cells!(sqlx::sqlite::SqliteRow);
cells!(sqlx::postgres::PgRow);

pub(super) fn adapter<R: Cells>(r: &R) -> StoreResult<AdapterState> {
    Ok(AdapterState { name: r.text("name")?, active: r.opt_text("active_digest")?, previous: r.opt_text("previous_digest")? })
}

pub(super) fn version<R: Cells>(r: &R) -> StoreResult<VersionRecord> {
    Ok(VersionRecord {
        adapter: r.text("adapter")?,
        digest: r.text("digest")?,
        version: r.text("version")?,
        manifest: r.json("manifest")?,
        deployed_at_ms: r.int("deployed_at_ms")?,
        deployed_by: r.text("deployed_by")?,
        staged: r.flag("staged")?,
    })
}

pub(super) fn tenant<R: Cells>(r: &R) -> StoreResult<TenantRecord> {
    let Value::Object(crm_config) = r.json("crm_config")? else {
        return Err(StoreError::Db("tenants.crm_config is not a JSON object".into()));
    };
    Ok(TenantRecord {
        id: r.text("id")?,
        adapter: r.text("adapter")?,
        project_id: r.text("project_id")?,
        crm_config,
        pin: r.opt_text("pin")?,
        limits: serde_json::from_value(r.json("limits")?)
            .map_err(|e| StoreError::Db(format!("tenants.limits is not a limits object: {e}")))?,
        updated_at_ms: r.int("updated_at_ms")?,
        redactor: Default::default(),
        config_digest: Default::default(),
    })
}

pub(super) fn key<R: Cells>(r: &R) -> StoreResult<KeyRecord> {
    Ok(KeyRecord {
        key_id: r.text("key_id")?,
        tenant: r.text("tenant")?,
        key_hash: r.text("key_hash")?,
        created_at_ms: r.int("created_at_ms")?,
        created_by: r.text("created_by")?,
    })
}

pub(super) fn audit<R: Cells>(r: &R) -> StoreResult<AuditEntry> {
    let action = r.text("action")?;
    Ok(AuditEntry {
        cursor: r.int("seq")?,
        at_ms: r.int("at_ms")?,
        actor: r.text("actor")?,
        action: AuditAction::parse(&action).ok_or_else(|| StoreError::Db(format!("unknown audit action {action}")))?,
        adapter: r.opt_text("adapter")?,
        tenant: r.opt_text("tenant")?,
        digest: r.opt_text("digest")?,
        detail: r.opt_text("detail")?.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

pub(super) fn event<R: Cells>(r: &R) -> StoreResult<EventRecord> {
    Ok(EventRecord { cursor: r.int("seq")?, received_at_ms: r.int("received_at_ms")?, event: r.json("event")? })
}

pub(super) fn call<R: Cells>(r: &R) -> StoreResult<CallRecord> {
    Ok(CallRecord { head: call_head(r)?, trace: r.text("trace")? })
}

pub(super) fn call_head<R: Cells>(r: &R) -> StoreResult<CallHead> {
    Ok(CallHead {
        call_id: r.text("call_id")?,
        tenant: r.text("tenant")?,
        func_id: r.text("func_id")?,
        adapter: r.text("adapter")?,
        version: r.text("version")?,
        digest: r.text("digest")?,
        started_at_ms: r.int("started_at_ms")?,
        duration_us: r.int("duration_us")?,
        outcome: r.text("outcome")?,
        error_kind: r.opt_text("error_kind")?,
    })
}

pub(super) fn replay<R: Cells>(r: &R) -> StoreResult<ReplayRecord> {
    Ok(ReplayRecord {
        id: r.text("id")?,
        adapter: r.text("adapter")?,
        candidate: r.text("candidate")?,
        created_at_ms: r.int("created_at_ms")?,
        verdict: r.text("verdict")?,
        head: r.text("head")?,
        report: r.text("report")?,
    })
}

pub(super) fn canary<R: Cells>(r: &R) -> StoreResult<CanaryRecord> {
    let state = r.text("state")?;
    Ok(CanaryRecord {
        id: r.text("id")?,
        adapter: r.text("adapter")?,
        digest: r.text("digest")?,
        percent: u8::try_from(r.int("percent")?).map_err(|_| StoreError::Db("canaries.percent is out of range".into()))?,
        max_failure_rate_increase: r.float("max_failure_rate_increase")?,
        min_calls: u32::try_from(r.int("min_calls")?).map_err(|_| StoreError::Db("canaries.min_calls is out of range".into()))?,
        excluded: serde_json::from_value(r.json("excluded")?).map_err(|e| StoreError::Db(format!("canaries.excluded: {e}")))?,
        state: CanaryState::parse(&state).ok_or_else(|| StoreError::Db(format!("unknown canary state {state}")))?,
        reason: r.opt_text("reason")?,
        started_at_ms: r.int("started_at_ms")?,
        started_by: r.text("started_by")?,
        ended_at_ms: r.opt_int("ended_at_ms")?,
    })
}
