//! Per-tenant figures, kept in memory since the host started and read through the admin API
//! (`GET /v1/tenants/{t}/stats`): what `/metrics` leaves out so that no caller can name or
//! mint its series. One entry per existing tenant, gone with the tenant.

use super::Host;
use crate::error::HostError;
use crate::lock;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A tenant's calls, webhooks and inbound messages on this host.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStats {
    /// `complete` and `failure`.
    pub calls: BTreeMap<&'static str, u64>,
    /// Failed calls by kind.
    pub failures: BTreeMap<&'static str, u64>,
    /// Webhooks by the status they were answered with.
    pub webhooks: BTreeMap<u16, u64>,
    /// `stored` and `duplicate`.
    pub inbound_events: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub(super) struct Stats(Mutex<HashMap<String, TenantStats>>);

impl Stats {
    /// Counts into a tenant's figures (allocating its entry only the first time).
    pub fn update(&self, tenant: &str, f: impl FnOnce(&mut TenantStats)) {
        let mut all = lock(&self.0);
        match all.get_mut(tenant) {
            Some(stats) => f(stats),
            None => f(all.entry(tenant.to_string()).or_default()),
        }
    }

    pub fn remove(&self, tenant: &str) {
        lock(&self.0).remove(tenant);
    }
}

impl Host {
    /// A tenant's figures since this host started.
    pub fn tenant_stats(&self, tenant: &str) -> Result<TenantStats, HostError> {
        if !self.read().tenants.contains_key(tenant) {
            return Err(HostError::UnknownTenant(tenant.to_string()));
        }
        Ok(lock(&self.stats.0).get(tenant).cloned().unwrap_or_default())
    }
}
