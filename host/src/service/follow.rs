//! Following other hosts ([`Host::sync`]): with a store other hosts write too, the registry
//! also takes their changes. The audit log is the change log: the entries after the
//! registry's cursor name the adapters and tenants to re-read; new digests are compiled
//! first, then the records and components switch in one step, so no call sees a
//! half-applied change. And health: what `/healthz?deep=1` reports.

use super::{load_stored, Host};
use crate::error::HostError;
use crate::lock;
use super::canary::Canary;
use crate::store::{AuditAction, CanaryState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Audit entries read per step while following.
const FOLLOW_BATCH: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Unhealthy,
}

/// What `/healthz?deep=1` reports.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeepHealth {
    pub status: HealthStatus,
    /// `ok`, or why the database does not answer.
    pub store: String,
    /// The last change this host has applied (its audit cursor).
    pub cursor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub following: Option<String>,
}

impl Host {
    /// With a shared store, follows other hosts' changes: on each of the store's notices, and
    /// every `poll` whatever happens (notices are lost while disconnected). Ends with the host.
    pub fn follow(self: &Arc<Self>, poll: Duration) {
        let Some(changes) = self.store.changes() else { return };
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = changes.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
                let Some(host) = host.upgrade() else { return };
                let result = host.sync().await;
                let mut error = lock(&host.follow_error);
                match result {
                    Ok(_) if error.take().is_some() => tracing::info!("following the shared store again"),
                    Ok(_) => {}
                    Err(e) => {
                        host.metrics().registry_follow_failures.inc();
                        if error.is_none() {
                            tracing::warn!("cannot follow the shared store, serving what this host has: {e}");
                        }
                        *error = Some(e.to_string());
                    }
                }
            }
        });
    }

    /// Applies every change other hosts committed since the registry's cursor. Returns how
    /// many audit entries it applied. A failure to read leaves the registry (and its cursor)
    /// as it was.
    pub async fn sync(&self) -> Result<usize, HostError> {
        // Local writes apply their own records to the registry; none may interleave with
        // records read here, or an older read could overwrite a newer local write.
        let _w = self.writes.lock().await;
        let mut applied = 0;
        loop {
            let cursor = self.read().cursor;
            let changes = self.store.audit_after(cursor, FOLLOW_BATCH).await?;
            let Some(last) = changes.last().map(|c| c.cursor) else { return Ok(applied) };
            let (mut adapters, mut tenants) = (BTreeSet::new(), BTreeSet::new());
            for c in &changes {
                use AuditAction::*;
                match c.action {
                    Deploy | Stage | Activate | Rollback | DeleteVersion | CanaryStart | CanaryUpdate | CanaryEnd => {
                        adapters.extend(c.adapter.clone())
                    }
                    Pin | TenantPut | TenantDelete | KeyIssued | KeyRevoked => tenants.extend(c.tenant.clone()),
                }
            }
            let mut fresh_adapters = Vec::new();
            let mut fresh_canaries = Vec::new();
            for name in adapters {
                let records = self.store.adapter_records(&name).await?;
                fresh_canaries.extend(self.store.canary(&name).await?);
                fresh_adapters.push((name, records));
            }
            let mut fresh_tenants = Vec::new();
            for id in tenants {
                let records = self.store.tenant_records(&id).await?;
                fresh_tenants.push((id, records));
            }
            // Everything the new records run is compiled before any of them is served.
            let mut wanted: BTreeSet<String> = BTreeSet::new();
            for (_, (state, versions)) in &fresh_adapters {
                wanted.extend(state.as_ref().and_then(|s| s.active.clone()));
                wanted.extend(versions.iter().filter(|v| v.staged).map(|v| v.digest.clone()));
            }
            wanted.extend(fresh_tenants.iter().filter_map(|(_, (t, _))| t.as_ref()?.pin.clone()));
            wanted.extend(fresh_canaries.iter().filter(|c| c.state == CanaryState::Running).map(|c| c.digest.clone()));
            wanted.retain(|d| !self.read().compiled.contains_key(d));
            let mut loaded = Vec::new();
            for digest in wanted {
                match load_stored(&self.runtime, self.store.as_ref(), &digest).await {
                    Ok(c) => loaded.push(c),
                    Err(e @ HostError::Storage(_)) => return Err(e),
                    // As at start-up: its tenants fail (unknown_adapter) until it is replaced.
                    Err(e) => tracing::error!(%digest, "a version another host stored cannot be loaded here: {e}"),
                }
            }
            let mut seeds = Vec::new();
            {
                let mut registry = self.write();
                for c in loaded {
                    tracing::info!(adapter = %c.description.name, version = %c.description.version, digest = %c.digest, "loaded a version another host stored");
                    registry.compiled.insert(c.digest.clone(), c);
                }
                for (name, (state, versions)) in fresh_adapters {
                    match state {
                        Some(s) => registry.adapters.insert(name.clone(), s),
                        None => registry.adapters.remove(&name),
                    };
                    registry.versions.insert(name, versions);
                }
                for c in fresh_canaries {
                    let canary = match registry.canaries.get(&c.adapter) {
                        Some(known) if known.record.id == c.id => known.refreshed(c),
                        _ => {
                            let canary = Arc::new(Canary::new(c));
                            seeds.push(canary.clone());
                            registry.canaries.insert(canary.record.adapter.clone(), canary);
                            continue;
                        }
                    };
                    registry.canaries.insert(canary.record.adapter.clone(), Arc::new(canary));
                }
                for (id, (tenant, keys)) in fresh_tenants {
                    if tenant.is_none() {
                        self.stats.remove(&id);
                    }
                    registry.replace_tenant(&id, tenant, keys);
                }
                registry.prune();
                registry.cursor = last;
            }
            for canary in seeds.iter().filter(|c| c.running()) {
                self.seed_canary(canary).await;
            }
            if changes.iter().any(|c| c.action == AuditAction::DeleteVersion) {
                self.prune_compile_cache(false).await;
            }
            applied += changes.len();
            self.metrics().registry_cursor.set(last);
            self.metrics().registry_changes.inc_by(changes.len() as u64);
        }
    }

    /// What `/healthz?deep=1` reports: whether the database answers and, with a shared store,
    /// whether this host is following it. Calls are served from memory either way.
    pub async fn health(&self) -> DeepHealth {
        let store = match tokio::time::timeout(Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the database did not answer within 2 s".to_string()),
        };
        let following = lock(&self.follow_error).clone();
        let status = if store.is_none() && following.is_none() { HealthStatus::Ok } else { HealthStatus::Unhealthy };
        DeepHealth { status, store: store.unwrap_or_else(|| "ok".into()), cursor: self.read().cursor, following }
    }
}
