//! The shared store: one PostgreSQL database behind several hosts (`serve --database
//! postgres://…`). The same records as the SQLite store; what sharing adds:
//!
//! - **Write order.** Every registry write holds one transaction-scoped advisory lock from
//!   its first statement to its commit. Registry writes are rare (deploys, tenants, keys), so
//!   serialising them costs nothing that matters, and it makes the audit log's `seq` commit
//!   in order: a host following the log after its cursor never skips an entry that commits
//!   late. Inbound events take a per-tenant lock for the same reason (their cursor) and so
//!   that a duplicate delivered to two hosts at once is seen by the second.
//! - **Change notices.** The audit insert also `pg_notify`s; each host `LISTEN`s on a
//!   connection of its own and wakes its follower ([`Store::changes`]). Notices sent while a
//!   host is disconnected are lost; the follower's periodic poll and the catch-up after
//!   reconnecting cover that, because the log itself is durable.

use super::*;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::time::Duration;
use tokio::sync::Notify;

const MIGRATIONS: Migrations = Migrations(&[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "storage bounds", include_str!("../../migrations/postgres/0002_storage_bounds.sql")),
    (3, "replays and canaries", include_str!("../../migrations/postgres/0003_replays_and_canaries.sql")),
    (4, "trace retention index", include_str!("../../migrations/postgres/0004_trace_retention_index.sql")),
    (5, "call totals", include_str!("../../migrations/postgres/0005_call_totals.sql")),
]);

/// The channel registry changes are announced on.
pub const CHANNEL: &str = "crm_host_changes";
/// Advisory lock keys: the registry (one key), and inbound events (this class, one key per
/// tenant). Arbitrary, fixed numbers: "crm" in ASCII.
const REGISTRY_LOCK: i64 = 0x63_72_6d_00;
const EVENTS_LOCK_CLASS: i32 = 0x63_72_6d_01;

pub struct PgStore {
    pool: PgPool,
    changes: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl PgStore {
    /// Connects (failing if the database does not answer), brings the schema up to date (the
    /// migrator holds its own advisory lock, so replicas starting together are safe) and
    /// starts listening for other hosts' changes.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| anyhow::anyhow!("not a PostgreSQL URL: {e}"))?;
        let pool = PgPoolOptions::new()
            // Calls do not use it (their traces go in batches on one); writes are serialised.
            // With the LISTEN connection: at most 9 per replica (README).
            .max_connections(8)
            // A write while the database is away fails within this, as a 503, instead of
            // hanging the request; calls never wait for the database.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        let mut migrator = Migrator::new(MIGRATIONS).await?;
        // During a rolling upgrade the database may already carry a newer host's migrations;
        // this (older) host still starts. Migrations are therefore additive (README, rolling upgrades).
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        let changes = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), changes.clone()));
        Ok(PgStore { pool, changes, listener })
    }

    async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(REGISTRY_LOCK).execute(&mut *tx).await?;
        Ok(tx)
    }

    /// A read of several statements that sees one moment.
    async fn read(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?)
    }

    /// The tenant's events lock, held to the commit: its cursor commits in order, and a
    /// duplicate delivered to two hosts at once is seen by the second.
    async fn events_write(&self, tenant: &str) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))").bind(EVENTS_LOCK_CLASS).bind(tenant).execute(&mut *tx).await?;
        Ok(tx)
    }

    async fn traces_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// The batch's tenants' totals, which the database's triggers have already brought up to
    /// date (and locked until this transaction ends).
    async fn calls_inserted(tx: &mut Transaction<'static, Postgres>, added: &[(String, i64, i64)]) -> StoreResult<Vec<(String, i64, i64)>> {
        let tenants: Vec<&str> = added.iter().map(|a| a.0.as_str()).collect();
        Ok(sqlx::query_as("SELECT tenant, calls, trace_bytes FROM call_totals WHERE tenant = ANY($1)").bind(tenants).fetch_all(&mut **tx).await?)
    }

    /// The triggers have taken them off already.
    async fn calls_deleted(_tx: &mut Transaction<'static, Postgres>, _removed: &[(String, i64, i64)]) -> StoreResult<()> {
        Ok(())
    }

    /// Delivered at commit, and only if it commits.
    async fn announce(tx: &mut Transaction<'static, Postgres>) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut **tx).await?;
        Ok(())
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Holds a `LISTEN` connection for as long as the store lives, reconnecting with backoff;
/// wakes the follower on every notice and once after each (re)connect, to catch up on what
/// was announced while nobody listened.
async fn listen(pool: PgPool, changes: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                if !lost {
                    tracing::warn!("cannot listen for other hosts' changes, retrying: {e}");
                    lost = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!("LISTEN {CHANNEL} failed, retrying: {e}");
            tokio::time::sleep(backoff).await;
            continue;
        }
        if lost {
            tracing::info!("listening for other hosts' changes again");
        }
        backoff = Duration::from_millis(100);
        changes.notify_one();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => changes.notify_one(),
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the database connection that listens for other hosts' changes; reconnecting");
                    lost = true;
                    break;
                }
            }
        }
    }
}

super::sql::impl_store!(PgStore, Postgres, insertion_order = "seq", extra = {
    fn changes(&self) -> Option<Arc<Notify>> {
        Some(self.changes.clone())
    }
});
