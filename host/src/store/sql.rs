//! The statements both databases run, and the [`Store`](super::Store) implementation built
//! on them, written once. SQLite and PostgreSQL agree on the SQL the store needs (sqlx takes
//! `$1`-style parameters for both), so [`impl_store!`] expands the same code for each
//! backend with its own concrete types, as `rows.rs` does for decoding with `cells!`.
//!
//! What differs stays with each backend, as inherent methods the expansion calls:
//!
//! - `write()`: a transaction for a registry write (SQLite `BEGIN IMMEDIATE`; PostgreSQL the
//!   registry advisory lock, so the audit log's `seq` commits in order);
//! - `read()`: a transaction that sees one moment (the snapshot);
//! - `events_write(tenant)`: a transaction for a tenant's inbound events;
//! - `traces_write()`: a transaction for a batch of call traces;
//! - `announce(tx)`: tell other hosts a change is committing (PostgreSQL `NOTIFY`);
//! - `pool()`: the connection pool for single reads;
//! - `calls_inserted(tx, added)`, `calls_deleted(tx, removed)`: each tenant's call totals
//!   (rows, trace bytes), which the trace retention reads: SQLite's store keeps them itself,
//!   PostgreSQL's triggers keep them for every host that writes (a rolling upgrade).
//!
//! and `$order`, the column that is insertion order in `adapter_versions` (SQLite's rowid,
//! PostgreSQL's `seq`): versions list oldest first by when they were stored, never by the
//! clock of whichever host stored them.

macro_rules! impl_store {
    ($store:ty, $db:ty, insertion_order = $order:literal $(, extra = { $($extra:tt)* })?) => {
        type Tx = sqlx::Transaction<'static, $db>;
        type DbRow = <$db as sqlx::Database>::Row;

        async fn insert_audit(tx: &mut Tx, a: &Audit) -> StoreResult<()> {
            sqlx::query("INSERT INTO audit (at_ms, actor, action, adapter, tenant, digest, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(a.at_ms)
                .bind(&a.actor)
                .bind(a.action.as_str())
                .bind(&a.adapter)
                .bind(&a.tenant)
                .bind(&a.digest)
                .bind(a.detail.as_ref().map(Value::to_string))
                .execute(&mut **tx)
                .await?;
            <$store>::announce(tx).await
        }

        /// Deletes a tenant's oldest calls until the rest fit both bounds, given its totals
        /// (`calls`, `bytes`); returns how many calls and trace bytes went.
        async fn trim_calls(tx: &mut Tx, tenant: &str, calls: i64, bytes: i64, keep: &TraceRetention) -> StoreResult<(i64, i64)> {
            let max_bytes = i64::try_from(keep.trace_bytes).unwrap_or(i64::MAX);
            let (mut n, mut b) = (0, 0);
            // Past the count: exactly that many of the oldest, found in the tenant's index.
            let over = calls - i64::from(keep.calls);
            if over > 0 {
                let gone: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM calls WHERE tenant = $1
                     AND seq <= (SELECT seq FROM calls WHERE tenant = $1 ORDER BY seq LIMIT 1 OFFSET $2) RETURNING trace_bytes",
                )
                .bind(tenant)
                .bind(over - 1)
                .fetch_all(&mut **tx)
                .await?;
                (n, b) = (gone.len() as i64, gone.iter().sum());
            }
            // Past the bytes: the oldest of the rest, as many as it takes, read 64 at a time
            // (once, unless more than 64 traces must go).
            while bytes - b > max_bytes {
                let oldest: Vec<(i64, i64)> = sqlx::query_as("SELECT seq, trace_bytes FROM calls WHERE tenant = $1 ORDER BY seq LIMIT 64")
                    .bind(tenant)
                    .fetch_all(&mut **tx)
                    .await?;
                let Some(&(last, _)) = oldest.last() else { break };
                let (mut cut, mut freed) = (last, 0);
                for &(seq, size) in &oldest {
                    freed += size;
                    if bytes - b - freed <= max_bytes {
                        cut = seq;
                        break;
                    }
                }
                let gone: Vec<i64> = sqlx::query_scalar("DELETE FROM calls WHERE tenant = $1 AND seq <= $2 RETURNING trace_bytes")
                    .bind(tenant)
                    .bind(cut)
                    .fetch_all(&mut **tx)
                    .await?;
                (n, b) = (n + gone.len() as i64, b + gone.iter().sum::<i64>());
            }
            Ok((n, b))
        }

        async fn adapter_state(tx: &mut Tx, name: &str) -> StoreResult<AdapterState> {
            let row = sqlx::query("SELECT * FROM adapters WHERE name = $1").bind(name).fetch_optional(&mut **tx).await?;
            Ok(match row {
                Some(r) => rows::adapter(&r)?,
                None => AdapterState { name: name.to_string(), ..Default::default() },
            })
        }

        async fn version_exists(tx: &mut Tx, adapter: &str, digest: &str) -> StoreResult<bool> {
            Ok(sqlx::query("SELECT 1 FROM adapter_versions WHERE adapter = $1 AND digest = $2")
                .bind(adapter)
                .bind(digest)
                .fetch_optional(&mut **tx)
                .await?
                .is_some())
        }

        /// Sets the active version; the one replaced (if another) becomes the previous.
        async fn set_active(tx: &mut Tx, adapter: &str, digest: &str) -> StoreResult<AdapterState> {
            let mut state = adapter_state(tx, adapter).await?;
            if state.active.as_deref() != Some(digest) {
                state.previous = state.active.take();
                state.active = Some(digest.to_string());
            }
            save_state(tx, &state).await?;
            sqlx::query("UPDATE adapter_versions SET staged = FALSE WHERE adapter = $1 AND digest = $2")
                .bind(adapter)
                .bind(digest)
                .execute(&mut **tx)
                .await?;
            Ok(state)
        }

        async fn save_state(tx: &mut Tx, s: &AdapterState) -> StoreResult<()> {
            sqlx::query("UPDATE adapters SET active_digest = $1, previous_digest = $2 WHERE name = $3")
                .bind(&s.active)
                .bind(&s.previous)
                .bind(&s.name)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn all<T>(tx: &mut Tx, sql: &'static str, row: fn(&DbRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
            sqlx::query(sql).fetch_all(&mut **tx).await?.iter().map(row).collect()
        }

        /// Writes the change's audit entry, then commits.
        async fn commit(mut tx: Tx, audit: &Audit) -> StoreResult<()> {
            insert_audit(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(())
        }

        #[async_trait]
        impl Store for $store {
            async fn snapshot(&self) -> StoreResult<Snapshot> {
                // One read transaction: the records and the cursor describe the same moment.
                let mut tx = self.read().await?;
                let adapters = all(&mut tx, "SELECT * FROM adapters ORDER BY name", rows::adapter).await?;
                let versions = all(&mut tx, concat!("SELECT * FROM adapter_versions ORDER BY adapter, ", $order), rows::version).await?;
                let tenants = all(&mut tx, "SELECT * FROM tenants ORDER BY id", rows::tenant).await?;
                let keys = all(&mut tx, "SELECT * FROM api_keys", rows::key).await?;
                let canaries = all(
                    &mut tx,
                    "SELECT * FROM canaries WHERE seq IN (SELECT MAX(seq) FROM canaries GROUP BY adapter) ORDER BY adapter",
                    rows::canary,
                )
                .await?;
                let cursor = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM audit").fetch_one(&mut *tx).await?;
                Ok(Snapshot { adapters, versions, tenants, keys, canaries, cursor })
            }

            async fn adapter_records(&self, name: &str) -> StoreResult<(Option<AdapterState>, Vec<VersionRecord>)> {
                let mut tx = self.read().await?;
                let state = sqlx::query("SELECT * FROM adapters WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?;
                let versions = sqlx::query(concat!("SELECT * FROM adapter_versions WHERE adapter = $1 ORDER BY ", $order))
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await?;
                Ok((state.as_ref().map(rows::adapter).transpose()?, versions.iter().map(rows::version).collect::<StoreResult<_>>()?))
            }

            async fn tenant_records(&self, id: &str) -> StoreResult<(Option<TenantRecord>, Vec<KeyRecord>)> {
                let mut tx = self.read().await?;
                let tenant = sqlx::query("SELECT * FROM tenants WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
                let keys = sqlx::query("SELECT * FROM api_keys WHERE tenant = $1").bind(id).fetch_all(&mut *tx).await?;
                Ok((tenant.as_ref().map(rows::tenant).transpose()?, keys.iter().map(rows::key).collect::<StoreResult<_>>()?))
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(self.pool()).await?;
                Ok(())
            }

            async fn blob(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT bytes FROM blobs WHERE digest = $1").bind(digest).fetch_optional(self.pool()).await?)
            }

            async fn blob_size(&self, digest: &str) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT size_bytes FROM blobs WHERE digest = $1").bind(digest).fetch_optional(self.pool()).await?)
            }

            async fn put_version(&self, v: &VersionRecord, bytes: &[u8], mode: DeployMode, audit: &Audit) -> StoreResult<AdapterState> {
                let mut tx = self.write().await?;
                sqlx::query("INSERT INTO blobs (digest, bytes, size_bytes) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
                    .bind(&v.digest)
                    .bind(bytes)
                    .bind(bytes.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO adapters (name) VALUES ($1) ON CONFLICT (name) DO NOTHING").bind(&v.adapter).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO adapter_versions (adapter, digest, version, manifest, deployed_at_ms, deployed_by, staged)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (adapter, digest) DO NOTHING",
                )
                .bind(&v.adapter)
                .bind(&v.digest)
                .bind(&v.version)
                .bind(v.manifest.to_string())
                .bind(v.deployed_at_ms)
                .bind(&v.deployed_by)
                .bind(mode == DeployMode::Stage)
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
                commit(tx, audit).await?;
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
                commit(tx, &Audit { digest: Some(previous), ..audit.clone() }).await?;
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
                let pinned: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE adapter = $1 AND pin = $2 ORDER BY id")
                    .bind(adapter)
                    .bind(digest)
                    .fetch_all(&mut *tx)
                    .await?;
                if !pinned.is_empty() {
                    return Err(StoreError::VersionInUse(format!("{digest} is pinned by tenants {}", pinned.join(", "))));
                }
                let canary: Option<String> = sqlx::query_scalar("SELECT id FROM canaries WHERE adapter = $1 AND digest = $2 AND state = 'running'")
                    .bind(adapter)
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(id) = canary {
                    return Err(StoreError::VersionInUse(format!("{digest} is the candidate of running canary {id}: stop or promote it first")));
                }
                sqlx::query("DELETE FROM adapter_versions WHERE adapter = $1 AND digest = $2")
                    .bind(adapter)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM blobs WHERE digest = $1 AND NOT EXISTS (SELECT 1 FROM adapter_versions WHERE digest = $1)")
                    .bind(digest)
                    .execute(&mut *tx)
                    .await?;
                if state.previous.as_deref() == Some(digest) {
                    state.previous = None;
                    save_state(&mut tx, &state).await?;
                }
                commit(tx, audit).await?;
                Ok(state)
            }

            async fn put_tenant(&self, t: &TenantRecord, audit: &Audit) -> StoreResult<()> {
                let mut tx = self.write().await?;
                sqlx::query(
                    "INSERT INTO tenants (id, adapter, project_id, crm_config, pin, limits, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
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
                commit(tx, audit).await
            }

            async fn delete_tenant(&self, id: &str, audit: &Audit) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                // The totals first: a trace batch locks them before the calls it trims, and
                // taking both in the same order cannot deadlock with it (PostgreSQL).
                sqlx::query("DELETE FROM call_totals WHERE tenant = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM calls WHERE tenant = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM inbound_events WHERE tenant = $1").bind(id).execute(&mut *tx).await?;
                let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected() > 0;
                if deleted {
                    insert_audit(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn put_key(&self, k: &KeyRecord, audit: &Audit) -> StoreResult<()> {
                let mut tx = self.write().await?;
                sqlx::query("INSERT INTO api_keys (key_id, tenant, key_hash, created_at_ms, created_by) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&k.key_id)
                    .bind(&k.tenant)
                    .bind(&k.key_hash)
                    .bind(k.created_at_ms)
                    .bind(&k.created_by)
                    .execute(&mut *tx)
                    .await?;
                commit(tx, audit).await
            }

            async fn delete_key(&self, tenant: &str, key_id: &str, audit: &Audit) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let deleted = sqlx::query("DELETE FROM api_keys WHERE tenant = $1 AND key_id = $2")
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
                sqlx::query("SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(cursor)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?
                    .iter()
                    .map(rows::audit)
                    .collect()
            }

            async fn append_events(&self, tenant: &str, events: &[NewEvent], received_at_ms: i64, dedup_window_ms: i64) -> StoreResult<usize> {
                let mut tx = self.events_write(tenant).await?;
                let mut stored = 0;
                for e in events {
                    let seen = match &e.message_id {
                        Some(id) => sqlx::query("SELECT 1 FROM inbound_events WHERE tenant = $1 AND message_id = $2")
                            .bind(tenant)
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some(),
                        None => sqlx::query(
                            "SELECT 1 FROM inbound_events WHERE tenant = $1 AND content_hash = $2 AND received_at_ms > $3 LIMIT 1",
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
                    sqlx::query("INSERT INTO inbound_events (tenant, message_id, content_hash, received_at_ms, event) VALUES ($1, $2, $3, $4, $5)")
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
                sqlx::query("SELECT seq, received_at_ms, event FROM inbound_events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3")
                    .bind(tenant)
                    .bind(cursor)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?
                    .iter()
                    .map(rows::event)
                    .collect()
            }

            async fn delete_events_before(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
                Ok(sqlx::query(
                    "DELETE FROM inbound_events WHERE seq IN
                     (SELECT seq FROM inbound_events WHERE received_at_ms < $1 ORDER BY received_at_ms LIMIT $2)",
                )
                .bind(before_ms)
                .bind(i64::from(batch))
                .execute(self.pool())
                .await?
                .rows_affected())
            }

            async fn record_calls(&self, calls: Vec<CallRecord>, keep: &TraceRetention) -> StoreResult<()> {
                if calls.is_empty() {
                    return Ok(());
                }
                // (tenant, calls, trace bytes) of the batch.
                let mut added: Vec<(String, i64, i64)> = Vec::new();
                for c in &calls {
                    let bytes = c.trace.len() as i64;
                    match added.iter_mut().find(|a| a.0 == c.head.tenant) {
                        Some(a) => (a.1, a.2) = (a.1 + 1, a.2 + bytes),
                        None => added.push((c.head.tenant.clone(), 1, bytes)),
                    }
                }
                let mut tx = self.traces_write().await?;
                // One statement for the batch: each statement is a round trip to the
                // database (for SQLite, to its worker thread). The records are bound by
                // value: a bound `&String` is copied, and the traces are most of a batch.
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO calls (call_id, tenant, func_id, adapter, version, digest, started_at_ms, duration_us, outcome, error_kind, trace, trace_bytes) ",
                );
                insert.push_values(calls, |mut row, CallRecord { head: c, trace }| {
                    let trace_bytes = trace.len() as i64;
                    row.push_bind(c.call_id)
                        .push_bind(c.tenant)
                        .push_bind(c.func_id)
                        .push_bind(c.adapter)
                        .push_bind(c.version)
                        .push_bind(c.digest)
                        .push_bind(c.started_at_ms)
                        .push_bind(c.duration_us)
                        .push_bind(c.outcome)
                        .push_bind(c.error_kind)
                        .push_bind(trace)
                        .push_bind(trace_bytes);
                });
                insert.build().execute(&mut *tx).await?;
                // Each tenant keeps its newest `keep.calls` calls whose traces fit in
                // `keep.trace_bytes`. Its totals (rows and bytes, kept in the same
                // transactions as the rows) say how far over either bound it is, so only
                // the oldest rows past it are read: the cost follows what is deleted, not
                // what is kept (with 50 tenants, counting each one's newest 1,000 calls
                // after every batch took a third of SQLite's thread).
                let mut removed = Vec::new();
                for (tenant, calls, bytes) in <$store>::calls_inserted(&mut tx, &added).await? {
                    let (n, b) = trim_calls(&mut tx, &tenant, calls, bytes, keep).await?;
                    if n > 0 {
                        removed.push((tenant, n, b));
                    }
                }
                <$store>::calls_deleted(&mut tx, &removed).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn calls(&self, tenant: &str, limit: u32, outcome: Option<&str>) -> StoreResult<Vec<CallHead>> {
                sqlx::query(
                    "SELECT call_id, tenant, func_id, adapter, version, digest, started_at_ms, duration_us, outcome, error_kind
                     FROM calls WHERE tenant = $1 AND ($3 IS NULL OR outcome = $3) ORDER BY seq DESC LIMIT $2",
                )
                    .bind(tenant)
                    .bind(i64::from(limit))
                    .bind(outcome)
                    .fetch_all(self.pool())
                    .await?
                    .iter()
                    .map(rows::call_head)
                    .collect()
            }

            async fn call(&self, tenant: &str, call_id: &str) -> StoreResult<Option<CallRecord>> {
                sqlx::query("SELECT * FROM calls WHERE tenant = $1 AND call_id = $2")
                    .bind(tenant)
                    .bind(call_id)
                    .fetch_optional(self.pool())
                    .await?
                    .as_ref()
                    .map(rows::call)
                    .transpose()
            }

            async fn recorded_calls(&self, f: &CallFilter) -> StoreResult<Vec<CallHead>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT call_id, tenant, func_id, adapter, version, digest, started_at_ms, duration_us, outcome, error_kind
                     FROM calls WHERE adapter = ",
                );
                q.push_bind(&f.adapter);
                for (column, values) in [("tenant", &f.tenants), ("func_id", &f.functions), ("call_id", &f.call_ids)] {
                    if let Some(values) = values {
                        q.push(format!(" AND {column} IN ("));
                        let mut list = q.separated(", ");
                        for v in values {
                            list.push_bind(v);
                        }
                        // `IN ()` is not SQL; an empty list selects nothing.
                        if values.is_empty() {
                            list.push("NULL");
                        }
                        q.push(")");
                    }
                }
                if let Some(since) = f.since_ms {
                    q.push(" AND started_at_ms >= ").push_bind(since);
                }
                q.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(f.limit));
                q.build().fetch_all(self.pool()).await?.iter().map(rows::call_head).collect()
            }

            async fn put_canary(&self, c: &CanaryRecord, audit: &Audit) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM canaries WHERE id = $1").bind(&c.id).fetch_optional(&mut *tx).await?;
                match state.as_deref() {
                    None => {
                        let running: Option<String> = sqlx::query_scalar("SELECT id FROM canaries WHERE adapter = $1 AND state = 'running'")
                            .bind(&c.adapter)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if let Some(other) = running {
                            return Err(StoreError::Conflict(format!(
                                "canary {other} of '{}' is running: promote or stop it before starting another",
                                c.adapter
                            )));
                        }
                        sqlx::query(
                            "INSERT INTO canaries (id, adapter, digest, percent, max_failure_rate_increase, min_calls, excluded, state, reason,
                               started_at_ms, started_by, ended_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                        )
                        .bind(&c.id)
                        .bind(&c.adapter)
                        .bind(&c.digest)
                        .bind(i64::from(c.percent))
                        .bind(c.max_failure_rate_increase)
                        .bind(i64::from(c.min_calls))
                        .bind(serde_json::to_string(&c.excluded).unwrap_or_else(|_| "[]".into()))
                        .bind(c.state.as_str())
                        .bind(&c.reason)
                        .bind(c.started_at_ms)
                        .bind(&c.started_by)
                        .bind(c.ended_at_ms)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Some("running") => {
                        sqlx::query("UPDATE canaries SET percent = $1, state = $2, reason = $3, ended_at_ms = $4 WHERE id = $5")
                            .bind(i64::from(c.percent))
                            .bind(c.state.as_str())
                            .bind(&c.reason)
                            .bind(c.ended_at_ms)
                            .bind(&c.id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some(_) => return Ok(false),
                }
                commit(tx, audit).await?;
                Ok(true)
            }

            async fn canary(&self, adapter: &str) -> StoreResult<Option<CanaryRecord>> {
                sqlx::query("SELECT * FROM canaries WHERE adapter = $1 ORDER BY seq DESC LIMIT 1")
                    .bind(adapter)
                    .fetch_optional(self.pool())
                    .await?
                    .as_ref()
                    .map(rows::canary)
                    .transpose()
            }

            async fn put_replay(&self, r: &ReplayRecord, keep: u32) -> StoreResult<()> {
                let mut tx = self.traces_write().await?;
                sqlx::query(
                    "INSERT INTO replays (id, adapter, candidate, created_at_ms, verdict, head, report) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.id)
                .bind(&r.adapter)
                .bind(&r.candidate)
                .bind(r.created_at_ms)
                .bind(&r.verdict)
                .bind(&r.head)
                .bind(&r.report)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM replays WHERE adapter = $1 AND seq <= (SELECT seq FROM replays WHERE adapter = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                )
                .bind(&r.adapter)
                .bind(i64::from(keep))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn replays(&self, adapter: &str, limit: u32) -> StoreResult<Vec<ReplayRecord>> {
                sqlx::query(
                    "SELECT id, adapter, candidate, created_at_ms, verdict, head, '' AS report FROM replays
                     WHERE adapter = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(adapter)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(rows::replay)
                .collect()
            }

            async fn replay(&self, adapter: &str, id: &str) -> StoreResult<Option<ReplayRecord>> {
                sqlx::query("SELECT id, adapter, candidate, created_at_ms, verdict, head, report FROM replays WHERE adapter = $1 AND id = $2")
                    .bind(adapter)
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?
                    .as_ref()
                    .map(rows::replay)
                    .transpose()
            }

            $($($extra)*)?
        }
    };
}

pub(super) use impl_store;
