//! The embedded default store: one SQLite database (WAL) in the data directory.

use super::*;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

/// Versioned schema migrations, compiled into the binary and applied at start-up.
const MIGRATIONS: Migrations = Migrations(&[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "tenant limits", include_str!("../../migrations/sqlite/0002_tenant_limits.sql")),
]);

pub struct SqliteStore {
    pool: SqlitePool,
    /// Call traces: telemetry, written in batches on a connection of their own that syncs
    /// the WAL at checkpoints only (`synchronous=NORMAL`): a host crash loses nothing
    /// committed, a power cut may lose the last batches. Everything else syncs every commit.
    traces: SqlitePool,
}

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "crm-host.db";

impl SqliteStore {
    /// Opens (creating if missing) `DIR/crm-host.db` and brings its schema up to date.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed change (an inbound event, a deploy) survives power loss too.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await?;
        Migrator::new(MIGRATIONS).await?.run(&pool).await?;
        let traces = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await?;
        Ok(SqliteStore { pool, traces })
    }

    /// A write transaction that takes the write lock up front, so a read-modify-write
    /// cannot fail half-way on a lock upgrade.
    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

async fn insert_audit(tx: &mut Transaction<'static, Sqlite>, a: &Audit) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit (at_ms, actor, action, adapter, tenant, digest, detail) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(a.at_ms)
        .bind(&a.actor)
        .bind(a.action.as_str())
        .bind(&a.adapter)
        .bind(&a.tenant)
        .bind(&a.digest)
        .bind(a.detail.as_ref().map(Value::to_string))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn adapter_state(tx: &mut Transaction<'static, Sqlite>, name: &str) -> StoreResult<AdapterState> {
    let row = sqlx::query("SELECT * FROM adapters WHERE name = ?").bind(name).fetch_optional(&mut **tx).await?;
    Ok(match row {
        Some(r) => rows::adapter(&r)?,
        None => AdapterState { name: name.to_string(), ..Default::default() },
    })
}

async fn version_exists(tx: &mut Transaction<'static, Sqlite>, adapter: &str, digest: &str) -> StoreResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM adapter_versions WHERE adapter = ? AND digest = ?")
        .bind(adapter)
        .bind(digest)
        .fetch_optional(&mut **tx)
        .await?
        .is_some())
}

/// Sets the active version; the one replaced (if another) becomes the previous.
async fn set_active(tx: &mut Transaction<'static, Sqlite>, adapter: &str, digest: &str) -> StoreResult<AdapterState> {
    let mut state = adapter_state(tx, adapter).await?;
    if state.active.as_deref() != Some(digest) {
        state.previous = state.active.take();
        state.active = Some(digest.to_string());
    }
    save_state(tx, &state).await?;
    sqlx::query("UPDATE adapter_versions SET staged = 0 WHERE adapter = ? AND digest = ?")
        .bind(adapter)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok(state)
}

async fn save_state(tx: &mut Transaction<'static, Sqlite>, s: &AdapterState) -> StoreResult<()> {
    sqlx::query("UPDATE adapters SET active_digest = ?, previous_digest = ? WHERE name = ?")
        .bind(&s.active)
        .bind(&s.previous)
        .bind(&s.name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn all<T>(tx: &mut Transaction<'static, Sqlite>, sql: &str, row: fn(&SqliteRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    sqlx::query(sql).fetch_all(&mut **tx).await?.iter().map(row).collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn snapshot(&self) -> StoreResult<Snapshot> {
        // One read transaction: the records and the cursor describe the same moment.
        let mut tx = self.pool.begin().await?;
        let adapters = all(&mut tx, "SELECT * FROM adapters ORDER BY name", rows::adapter).await?;
        let versions = all(&mut tx, "SELECT * FROM adapter_versions ORDER BY adapter, deployed_at_ms, rowid", rows::version).await?;
        let tenants = all(&mut tx, "SELECT * FROM tenants ORDER BY id", rows::tenant).await?;
        let keys = all(&mut tx, "SELECT * FROM api_keys", rows::key).await?;
        let cursor = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit").fetch_one(&mut *tx).await?;
        Ok(Snapshot { adapters, versions, tenants, keys, cursor })
    }

    async fn adapter_records(&self, name: &str) -> StoreResult<(Option<AdapterState>, Vec<VersionRecord>)> {
        let mut tx = self.pool.begin().await?;
        let state = sqlx::query("SELECT * FROM adapters WHERE name = ?").bind(name).fetch_optional(&mut *tx).await?;
        let versions = sqlx::query("SELECT * FROM adapter_versions WHERE adapter = ? ORDER BY deployed_at_ms, rowid")
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
        Ok((state.as_ref().map(rows::adapter).transpose()?, versions.iter().map(rows::version).collect::<StoreResult<_>>()?))
    }

    async fn tenant_records(&self, id: &str) -> StoreResult<(Option<TenantRecord>, Vec<KeyRecord>)> {
        let mut tx = self.pool.begin().await?;
        let tenant = sqlx::query("SELECT * FROM tenants WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
        let keys = sqlx::query("SELECT * FROM api_keys WHERE tenant = ?").bind(id).fetch_all(&mut *tx).await?;
        Ok((tenant.as_ref().map(rows::tenant).transpose()?, keys.iter().map(rows::key).collect::<StoreResult<_>>()?))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT bytes FROM blobs WHERE digest = ?").bind(digest).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    async fn blob_size(&self, digest: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT size_bytes FROM blobs WHERE digest = ?").bind(digest).fetch_optional(&self.pool).await?)
    }

    async fn put_version(&self, v: &VersionRecord, bytes: &[u8], mode: DeployMode, audit: &Audit) -> StoreResult<AdapterState> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO blobs (digest, bytes, size_bytes) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(&v.digest)
            .bind(bytes)
            .bind(bytes.len() as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO adapters (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
            .bind(&v.adapter)
            .execute(&mut *tx)
            .await?;
        let staged = mode == DeployMode::Stage;
        sqlx::query(
            "INSERT INTO adapter_versions (adapter, digest, version, manifest, deployed_at_ms, deployed_by, staged)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (adapter, digest) DO NOTHING",
        )
        .bind(&v.adapter)
        .bind(&v.digest)
        .bind(&v.version)
        .bind(v.manifest.to_string())
        .bind(v.deployed_at_ms)
        .bind(&v.deployed_by)
        .bind(staged)
        .execute(&mut *tx)
        .await?;
        let state = match mode {
            DeployMode::Activate => set_active(&mut tx, &v.adapter, &v.digest).await?,
            DeployMode::Stage => adapter_state(&mut tx, &v.adapter).await?,
        };
        insert_audit(&mut tx, audit).await?;
        crate::failpoint::hit("deploy-commit").await;
        tx.commit().await?;
        Ok(state)
    }

    async fn activate(&self, adapter: &str, digest: &str, audit: &Audit) -> StoreResult<AdapterState> {
        let mut tx = self.write().await?;
        if !version_exists(&mut tx, adapter, digest).await? {
            return Err(StoreError::UnknownVersion { adapter: adapter.into(), digest: digest.into() });
        }
        let state = set_active(&mut tx, adapter, digest).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn rollback(&self, adapter: &str, audit: &Audit) -> StoreResult<AdapterState> {
        let mut tx = self.write().await?;
        let state = adapter_state(&mut tx, adapter).await?;
        let previous = match state.previous {
            Some(p) if version_exists(&mut tx, adapter, &p).await? => p,
            _ => return Err(StoreError::NoPreviousVersion(adapter.to_string())),
        };
        let state = set_active(&mut tx, adapter, &previous).await?;
        let mut audit = audit.clone();
        audit.digest = Some(previous);
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn delete_version(&self, adapter: &str, digest: &str, audit: &Audit) -> StoreResult<AdapterState> {
        let mut tx = self.write().await?;
        if !version_exists(&mut tx, adapter, digest).await? {
            return Err(StoreError::UnknownVersion { adapter: adapter.into(), digest: digest.into() });
        }
        let mut state = adapter_state(&mut tx, adapter).await?;
        if state.active.as_deref() == Some(digest) {
            return Err(StoreError::VersionInUse(format!("{digest} is the active version of '{adapter}': activate another first")));
        }
        let pinned: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE adapter = ? AND pin = ? ORDER BY id")
            .bind(adapter)
            .bind(digest)
            .fetch_all(&mut *tx)
            .await?;
        if !pinned.is_empty() {
            return Err(StoreError::VersionInUse(format!("{digest} is pinned by tenants {}", pinned.join(", "))));
        }
        sqlx::query("DELETE FROM adapter_versions WHERE adapter = ? AND digest = ?")
            .bind(adapter)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blobs WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM adapter_versions WHERE digest = ?)")
            .bind(digest)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        if state.previous.as_deref() == Some(digest) {
            state.previous = None;
            save_state(&mut tx, &state).await?;
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(state)
    }

    async fn put_tenant(&self, t: &TenantRecord, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO tenants (id, adapter, project_id, crm_config, pin, limits, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET adapter = excluded.adapter, project_id = excluded.project_id,
               crm_config = excluded.crm_config, pin = excluded.pin, limits = excluded.limits,
               updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&t.id)
        .bind(&t.adapter)
        .bind(&t.project_id)
        .bind(Value::Object(t.crm_config.clone()).to_string())
        .bind(&t.pin)
        .bind(serde_json::to_string(&t.limits).map_err(|e| StoreError::Db(e.to_string()))?)
        .bind(t.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_tenant(&self, id: &str, audit: &Audit) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM calls WHERE tenant = ?").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM inbound_events WHERE tenant = ?").bind(id).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = ?").bind(id).execute(&mut *tx).await?.rows_affected() > 0;
        if deleted {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn put_key(&self, k: &KeyRecord, audit: &Audit) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO api_keys (key_id, tenant, key_hash, created_at_ms, created_by) VALUES (?, ?, ?, ?, ?)")
            .bind(&k.key_id)
            .bind(&k.tenant)
            .bind(&k.key_hash)
            .bind(k.created_at_ms)
            .bind(&k.created_by)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_key(&self, tenant: &str, key_id: &str, audit: &Audit) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM api_keys WHERE tenant = ? AND key_id = ?")
            .bind(tenant)
            .bind(key_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if deleted {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn audit_after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let found = sqlx::query("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::audit).collect()
    }

    async fn append_events(&self, tenant: &str, events: &[NewEvent], received_at_ms: i64, dedup_window_ms: i64) -> StoreResult<usize> {
        let mut tx = self.write().await?;
        let mut stored = 0;
        for e in events {
            let seen = match &e.message_id {
                Some(id) => sqlx::query("SELECT 1 FROM inbound_events WHERE tenant = ? AND message_id = ?")
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some(),
                None => sqlx::query(
                    "SELECT 1 FROM inbound_events WHERE tenant = ? AND content_hash = ? AND received_at_ms > ? LIMIT 1",
                )
                .bind(tenant)
                .bind(&e.content_hash)
                .bind(received_at_ms - dedup_window_ms)
                .fetch_optional(&mut *tx)
                .await?
                .is_some(),
            };
            if seen {
                continue;
            }
            sqlx::query("INSERT INTO inbound_events (tenant, message_id, content_hash, received_at_ms, event) VALUES (?, ?, ?, ?, ?)")
                .bind(tenant)
                .bind(&e.message_id)
                .bind(&e.content_hash)
                .bind(received_at_ms)
                .bind(e.event.to_string())
                .execute(&mut *tx)
                .await?;
            stored += 1;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn events_after(&self, tenant: &str, cursor: i64, limit: u32) -> StoreResult<Vec<EventRecord>> {
        sqlx::query("SELECT seq, received_at_ms, event FROM inbound_events WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?")
            .bind(tenant)
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::event)
            .collect()
    }

    async fn record_calls(&self, calls: &[CallRecord], keep_per_tenant: u32) -> StoreResult<()> {
        let mut tx = self.traces.begin_with("BEGIN IMMEDIATE").await?;
        let mut tenants: Vec<&str> = Vec::new();
        for c in calls {
            sqlx::query(
                "INSERT INTO calls (call_id, tenant, func_id, adapter, version, digest, started_at_ms, duration_us, outcome, error_kind, trace)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.call_id)
            .bind(&c.tenant)
            .bind(&c.func_id)
            .bind(&c.adapter)
            .bind(&c.version)
            .bind(&c.digest)
            .bind(c.started_at_ms)
            .bind(c.duration_us)
            .bind(&c.outcome)
            .bind(&c.error_kind)
            .bind(c.trace.to_string())
            .execute(&mut *tx)
            .await?;
            if !tenants.contains(&c.tenant.as_str()) {
                tenants.push(&c.tenant);
            }
        }
        for t in tenants {
            sqlx::query(
                "DELETE FROM calls WHERE tenant = ? AND seq <= (SELECT seq FROM calls WHERE tenant = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            )
            .bind(t)
            .bind(t)
            .bind(keep_per_tenant)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn calls(&self, tenant: &str, limit: u32) -> StoreResult<Vec<CallRecord>> {
        sqlx::query("SELECT * FROM calls WHERE tenant = ? ORDER BY seq DESC LIMIT ?")
            .bind(tenant)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::call)
            .collect()
    }

    async fn call(&self, tenant: &str, call_id: &str) -> StoreResult<Option<CallRecord>> {
        sqlx::query("SELECT * FROM calls WHERE tenant = ? AND call_id = ?")
            .bind(tenant)
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(rows::call)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(action: AuditAction) -> Audit {
        Audit { at_ms: 1, actor: "test".into(), action, adapter: Some("a".into()), tenant: None, digest: None, detail: None }
    }

    fn version(digest: &str) -> VersionRecord {
        VersionRecord {
            adapter: "a".into(),
            digest: digest.into(),
            version: "1".into(),
            manifest: serde_json::json!({"name": "a"}),
            deployed_at_ms: 1,
            deployed_by: "test".into(),
            staged: false,
        }
    }

    #[tokio::test]
    async fn activate_rollback_delete_and_reopen() {
        let dir = std::env::temp_dir().join(format!("crm-store-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SqliteStore::open(&dir).await.unwrap();
        s.put_version(&version("d1"), b"one", DeployMode::Activate, &audit(AuditAction::Deploy)).await.unwrap();
        let st = s.put_version(&version("d2"), b"two", DeployMode::Activate, &audit(AuditAction::Deploy)).await.unwrap();
        assert_eq!((st.active.as_deref(), st.previous.as_deref()), (Some("d2"), Some("d1")));
        let st = s.put_version(&version("d3"), b"two", DeployMode::Stage, &audit(AuditAction::Stage)).await.unwrap();
        assert_eq!(st.active.as_deref(), Some("d2"), "staging does not activate");
        let st = s.rollback("a", &audit(AuditAction::Rollback)).await.unwrap();
        assert_eq!((st.active.as_deref(), st.previous.as_deref()), (Some("d1"), Some("d2")));
        assert!(matches!(s.delete_version("a", "d1", &audit(AuditAction::DeleteVersion)).await, Err(StoreError::VersionInUse(_))));
        let st = s.delete_version("a", "d2", &audit(AuditAction::DeleteVersion)).await.unwrap();
        assert_eq!(st.previous, None);
        assert!(matches!(s.rollback("a", &audit(AuditAction::Rollback)).await, Err(StoreError::NoPreviousVersion(_))));
        assert_eq!(s.blob("d2").await.unwrap(), None, "an unused blob goes with its last version");
        assert_eq!(s.blob("d3").await.unwrap().as_deref(), Some(&b"two"[..]));
        drop(s);

        let s = SqliteStore::open(&dir).await.unwrap();
        let snap = s.snapshot().await.unwrap();
        assert_eq!(snap.adapters[0].active.as_deref(), Some("d1"));
        let staged: Vec<_> = snap.versions.iter().filter(|v| v.staged).map(|v| v.digest.as_str()).collect();
        assert_eq!(staged, ["d3"]);
        assert_eq!(s.audit_after(0, 100).await.unwrap().len(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
