//! What the host knows: deployed adapter versions (with their component bytes) and tenants.
//! In memory for now; this is the one type a durable store replaces, so it holds records
//! only (bytes, metadata, tenants), never runtime objects.

use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// One deployed version of an adapter.
#[derive(Debug, Clone)]
pub struct AdapterRecord {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub operations: Vec<String>,
    pub deployed_at_ms: u64,
    pub component: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub adapter: String,
    pub project_id: String,
    pub crm_config: Map<String, Value>,
}

#[derive(Default)]
struct State {
    /// Every version deployed, oldest first; the last one is active.
    adapters: BTreeMap<String, Vec<AdapterRecord>>,
    tenants: BTreeMap<String, Tenant>,
}

#[derive(Default)]
pub struct Registry {
    state: RwLock<State>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a deployment; it becomes the active version.
    pub fn add_adapter_version(&self, record: AdapterRecord) {
        let mut s = self.state.write().expect("registry lock");
        s.adapters.entry(record.name.clone()).or_default().push(record);
    }

    pub fn active_adapter(&self, name: &str) -> Option<AdapterRecord> {
        self.state.read().expect("registry lock").adapters.get(name).and_then(|v| v.last().cloned())
    }

    /// Active version of every adapter, by name.
    pub fn active_adapters(&self) -> Vec<AdapterRecord> {
        self.state.read().expect("registry lock").adapters.values().filter_map(|v| v.last().cloned()).collect()
    }

    /// Every version of one adapter, oldest first.
    pub fn adapter_history(&self, name: &str) -> Vec<AdapterRecord> {
        self.state.read().expect("registry lock").adapters.get(name).cloned().unwrap_or_default()
    }

    pub fn put_tenant(&self, tenant: Tenant) {
        let mut s = self.state.write().expect("registry lock");
        s.tenants.insert(tenant.id.clone(), tenant);
    }

    pub fn tenant(&self, id: &str) -> Option<Tenant> {
        self.state.read().expect("registry lock").tenants.get(id).cloned()
    }

    pub fn delete_tenant(&self, id: &str) -> bool {
        self.state.write().expect("registry lock").tenants.remove(id).is_some()
    }
}
