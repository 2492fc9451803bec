//! The registry: what the host serves from, in memory. Built from [`Store::snapshot`] at
//! start-up and changed only after the store committed (or, when following, after another
//! host's change was re-read), so calls never wait for the database.
//!
//! [`Store::snapshot`]: crate::store::Store::snapshot

use super::canary::Canary;
use crate::runtime::Compiled;
use crate::store::{AdapterState, KeyRecord, Snapshot, TenantRecord, VersionRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct Registry {
    pub adapters: BTreeMap<String, AdapterState>,
    /// Every stored version per adapter, oldest first.
    pub versions: HashMap<String, Vec<VersionRecord>>,
    /// By id, in order: the admin lists them a page at a time.
    pub tenants: BTreeMap<String, Arc<TenantRecord>>,
    /// Compiled components by digest: every active, staged or pinned version (calls in
    /// flight keep their own `Arc` of any other).
    pub compiled: HashMap<String, Arc<Compiled>>,
    pub keys: HashMap<String, KeyRecord>,
    /// Each adapter's latest canary, whatever its state.
    pub canaries: HashMap<String, Arc<Canary>>,
    /// The last audit entry the registry includes.
    pub cursor: i64,
}

/// Where a stored version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Active,
    Staged,
    Inactive,
}

impl Registry {
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut registry = Registry {
            adapters: snapshot.adapters.into_iter().map(|a| (a.name.clone(), a)).collect(),
            tenants: snapshot.tenants.into_iter().map(|t| (t.id.clone(), Arc::new(t))).collect(),
            keys: snapshot.keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
            canaries: snapshot.canaries.into_iter().map(|c| (c.adapter.clone(), Arc::new(Canary::new(c)))).collect(),
            cursor: snapshot.cursor,
            ..Registry::default()
        };
        for v in snapshot.versions {
            registry.versions.entry(v.adapter.clone()).or_default().push(v);
        }
        registry
    }

    pub fn version(&self, adapter: &str, digest: &str) -> Option<&VersionRecord> {
        self.versions.get(adapter)?.iter().find(|v| v.digest == digest)
    }

    /// The digest a tenant's calls run (its pin; the candidate of a running canary that
    /// selects it; or its adapter's active version), and the canary its calls count for
    /// (`true`: inside it).
    pub fn route(&self, t: &TenantRecord) -> (Option<String>, Option<(Arc<Canary>, bool)>) {
        if let Some(pin) = &t.pin {
            return (Some(pin.clone()), None);
        }
        let active = self.adapters.get(&t.adapter).and_then(|a| a.active.clone());
        match self.canaries.get(&t.adapter).filter(|c| c.running()) {
            Some(c) if c.selects(&t.id) => (Some(c.record.digest.clone()), Some((c.clone(), true))),
            Some(c) => (active, Some((c.clone(), false))),
            None => (active, None),
        }
    }

    /// Digests that must stay compiled.
    pub fn needed(&self) -> HashSet<String> {
        let mut keep: HashSet<String> = self.adapters.values().filter_map(|a| a.active.clone()).collect();
        keep.extend(self.versions.values().flatten().filter(|v| v.staged).map(|v| v.digest.clone()));
        keep.extend(self.tenants.values().filter_map(|t| t.pin.clone()));
        keep.extend(self.canaries.values().filter(|c| c.running()).map(|c| c.record.digest.clone()));
        keep
    }

    /// Drops compiled components nothing needs, except each adapter's rollback target when it
    /// is still in memory (a rollback, or redeploying the version before, is then instant;
    /// start-up does not load it).
    pub fn prune(&mut self) {
        let mut keep = self.needed();
        keep.extend(self.adapters.values().filter_map(|a| a.previous.clone()));
        self.compiled.retain(|d, _| keep.contains(d));
    }

    pub fn state(&self, adapter: &str, digest: &str) -> VersionState {
        match self.adapters.get(adapter) {
            Some(a) if a.active.as_deref() == Some(digest) => VersionState::Active,
            _ if self.version(adapter, digest).is_some_and(|v| v.staged) => VersionState::Staged,
            _ => VersionState::Inactive,
        }
    }

    pub fn pinned_tenants(&self, adapter: &str, digest: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .tenants
            .values()
            .filter(|t| t.adapter == adapter && t.pin.as_deref() == Some(digest))
            .map(|t| t.id.clone())
            .collect();
        t.sort();
        t
    }

    /// Takes a tenant's records as they are now (`None`: deleted), keys included.
    pub fn replace_tenant(&mut self, id: &str, tenant: Option<TenantRecord>, keys: Vec<KeyRecord>) {
        self.keys.retain(|_, k| k.tenant != id);
        self.keys.extend(keys.into_iter().map(|k| (k.key_id.clone(), k)));
        match tenant {
            Some(t) => self.tenants.insert(id.to_string(), Arc::new(t)),
            None => self.tenants.remove(id),
        };
    }
}
