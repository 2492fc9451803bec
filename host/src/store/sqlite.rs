//! The embedded default store: one SQLite database (WAL) in the data directory.

use super::*;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

/// Versioned schema migrations, compiled into the binary and applied at start-up.
const MIGRATIONS: Migrations = Migrations(&[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "tenant limits", include_str!("../../migrations/sqlite/0002_tenant_limits.sql")),
    (3, "storage bounds", include_str!("../../migrations/sqlite/0003_storage_bounds.sql")),
    (4, "replays and canaries", include_str!("../../migrations/sqlite/0004_replays_and_canaries.sql")),
    (5, "trace retention index", include_str!("../../migrations/sqlite/0005_trace_retention_index.sql")),
    (6, "call totals", include_str!("../../migrations/sqlite/0006_call_totals.sql")),
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
            // A batch is a few round trips to the connection's thread; a ping before each
            // would be one more, and a local file does not go away like a server does.
            .test_before_acquire(false)
            // SQLite's temporary storage (sorts, statement journals) in memory: a batch
            // created and unlinked a file in /var/tmp.
            .connect_with(options.synchronous(SqliteSynchronous::Normal).pragma("temp_store", "memory"))
            .await?;
        Ok(SqliteStore { pool, traces })
    }

    /// A write transaction that takes the write lock up front, so a read-modify-write
    /// cannot fail half-way on a lock upgrade.
    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// One reader sees one moment in WAL mode.
    async fn read(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin().await?)
    }

    /// The database's write lock serialises every tenant's events.
    async fn events_write(&self, _tenant: &str) -> StoreResult<Transaction<'static, Sqlite>> {
        self.write().await
    }

    async fn traces_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.traces.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Adds a batch's calls and trace bytes per tenant to the tenants' totals and returns the
    /// totals after: this store keeps them itself, one host being its only writer.
    async fn calls_inserted(tx: &mut Transaction<'static, Sqlite>, added: &[(String, i64, i64)]) -> StoreResult<Vec<(String, i64, i64)>> {
        add_to_call_totals(tx, added).await
    }

    /// Takes calls deleted by the retention off their tenants' totals.
    async fn calls_deleted(tx: &mut Transaction<'static, Sqlite>, removed: &[(String, i64, i64)]) -> StoreResult<()> {
        if !removed.is_empty() {
            let negated: Vec<_> = removed.iter().map(|(t, n, b)| (t.clone(), -n, -b)).collect();
            add_to_call_totals(tx, &negated).await?;
        }
        Ok(())
    }

    /// One host, one writer: nobody to tell.
    async fn announce(_tx: &mut Transaction<'static, Sqlite>) -> StoreResult<()> {
        Ok(())
    }

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// One statement for every tenant of a batch: `(tenant, calls, trace bytes)` added to the
/// tenants' totals (created at the first), the totals after returned.
async fn add_to_call_totals(tx: &mut Transaction<'static, Sqlite>, deltas: &[(String, i64, i64)]) -> StoreResult<Vec<(String, i64, i64)>> {
    let mut upsert = sqlx::QueryBuilder::<Sqlite>::new("INSERT INTO call_totals (tenant, calls, trace_bytes) ");
    upsert.push_values(deltas, |mut row, (tenant, calls, bytes)| {
        row.push_bind(tenant).push_bind(calls).push_bind(bytes);
    });
    upsert.push(
        " ON CONFLICT (tenant) DO UPDATE SET calls = call_totals.calls + excluded.calls, \
         trace_bytes = call_totals.trace_bytes + excluded.trace_bytes RETURNING tenant, calls, trace_bytes",
    );
    Ok(upsert.build_query_as().fetch_all(&mut **tx).await?)
}

super::sql::impl_store!(SqliteStore, Sqlite, insertion_order = "rowid");

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
