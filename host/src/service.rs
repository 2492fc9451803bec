//! The host's operations, independent of HTTP. Two halves:
//!
//! - **Changes** (deploy, stage, activate, rollback, pins, tenants, keys) are written to the
//!   [`Store`] first, in one transaction with their audit entry, then applied to the
//!   in-memory [`View`]. A mutex orders them, so store and view always agree.
//! - **Calls** read only the view: tenant -> its pinned or the active digest -> the compiled
//!   component -> a fresh instance ([`Runtime::invoke`]) -> crmData or a typed failure; the
//!   trace goes to the [`Recorder`] after the answer is ready.
//! - **Following** ([`Host::sync`]): with a store other hosts write too, the view also takes
//!   their changes. The audit log is the change log: the entries after the view's cursor name
//!   the adapters and tenants to re-read; new digests are compiled first, then the records
//!   and components switch in one step, so no call sees a half-applied change.

use crate::auth::{self, Auth, Caller};
use crate::chat::{parse_json, CallRequest};
use crate::error::{CallFailure, HostError, InvalidTenant};
use crate::limits::TenantLimits;
use crate::runtime::{Compiled, InboundMessage, Runtime, WebhookRequest};
use crate::store::{
    AdapterState, Audit, AuditAction, AuditEntry, CallRecord, DeployMode, EventRecord, KeyRecord, NewEvent, Store,
    TenantRecord, VersionRecord,
};
use crate::trace::{CallTrace, Recorder, Redactor, REDACTED};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A delivery without the CRM's message id is a duplicate of an identical message (same
/// chat, phone, text, author and attachments) stored less than this long ago.
pub const EVENT_DEDUP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// The answer a webhook gets, and what was stored.
pub struct WebhookAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Host-wide settings that are not the runtime's.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Recorded calls kept per tenant.
    pub trace_retention: u32,
    pub admin_token: Option<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions { trace_retention: 1000, admin_token: None }
    }
}

/// What the host serves from, rebuilt from the store at start-up.
#[derive(Default)]
struct View {
    adapters: BTreeMap<String, AdapterState>,
    /// Every stored version per adapter, oldest first.
    versions: HashMap<String, Vec<VersionRecord>>,
    tenants: HashMap<String, Arc<TenantRecord>>,
    /// Compiled components by digest: every active, staged or pinned version (calls in
    /// flight keep their own `Arc` of any other).
    compiled: HashMap<String, Arc<Compiled>>,
    keys: HashMap<String, KeyRecord>,
    /// The last audit entry the view includes.
    cursor: i64,
}

impl View {
    fn version(&self, adapter: &str, digest: &str) -> Option<&VersionRecord> {
        self.versions.get(adapter)?.iter().find(|v| v.digest == digest)
    }

    /// The digest a tenant's calls run: its pin, or its adapter's active version.
    fn digest_for(&self, t: &TenantRecord) -> Option<String> {
        t.pin.clone().or_else(|| self.adapters.get(&t.adapter)?.active.clone())
    }

    /// Digests that must stay compiled.
    fn needed(&self) -> HashSet<String> {
        let mut keep: HashSet<String> = self.adapters.values().filter_map(|a| a.active.clone()).collect();
        keep.extend(self.versions.values().flatten().filter(|v| v.staged).map(|v| v.digest.clone()));
        keep.extend(self.tenants.values().filter_map(|t| t.pin.clone()));
        keep
    }

    /// Drops compiled components nothing needs, except each adapter's rollback target when it
    /// is still in memory (a rollback, or redeploying the version before, is then instant;
    /// start-up does not load it).
    fn prune(&mut self) {
        let mut keep = self.needed();
        keep.extend(self.adapters.values().filter_map(|a| a.previous.clone()));
        self.compiled.retain(|d, _| keep.contains(d));
    }

    fn state(&self, adapter: &str, digest: &str) -> VersionState {
        match self.adapters.get(adapter) {
            Some(a) if a.active.as_deref() == Some(digest) => VersionState::Active,
            _ if self.version(adapter, digest).is_some_and(|v| v.staged) => VersionState::Staged,
            _ => VersionState::Inactive,
        }
    }

    fn pinned_tenants(&self, adapter: &str, digest: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .tenants
            .values()
            .filter(|t| t.adapter == adapter && t.pin.as_deref() == Some(digest))
            .map(|t| t.id.clone())
            .collect();
        t.sort();
        t
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Active,
    Staged,
    Inactive,
}

/// The result of a deploy.
pub struct Deployed {
    pub compiled: Arc<Compiled>,
    pub state: VersionState,
    pub invalid_tenants: Vec<InvalidTenant>,
}

/// One version as `GET /v1/adapters/{name}/versions` lists it.
pub struct VersionInfo {
    pub record: VersionRecord,
    pub state: VersionState,
    pub pinned_tenants: Vec<String>,
}

/// A tenant as the API shows it: secrets redacted.
pub struct TenantView {
    pub record: Arc<TenantRecord>,
    pub crm_config: Map<String, Value>,
}

/// A call's answer, with what identifies it.
pub struct CallAnswer {
    pub result: Result<Map<String, Value>, CallFailure>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    pub stage: bool,
    pub force: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TenantBody {
    pub(crate) adapter: String,
    #[serde(default)]
    pub(crate) crm_config: Option<Map<String, Value>>,
    #[serde(default)]
    pub(crate) project_id: Option<String>,
    /// A digest to stay on, or null / absent to follow the active version.
    #[serde(default)]
    pub(crate) pin: Option<String>,
    /// Overrides of the host's limits; absent: the host's defaults.
    #[serde(default)]
    pub(crate) limits: Option<TenantLimits>,
}

pub struct Host {
    runtime: Runtime,
    store: Arc<dyn Store>,
    view: RwLock<View>,
    writes: tokio::sync::Mutex<()>,
    recorder: Recorder,
    auth: Auth,
    admission: Arc<crate::limits::Admission>,
    /// Why the last attempt to follow the shared store failed; `None` while it works.
    follow_error: std::sync::Mutex<Option<String>>,
}

/// Audit entries read per step while following.
const FOLLOW_BATCH: u32 = 500;

/// What `/healthz?deep=1` reports.
#[derive(Debug, serde::Serialize)]
pub struct DeepHealth {
    pub status: &'static str,
    /// `ok`, or why the database does not answer.
    pub store: String,
    /// The last change this host has applied (its audit cursor).
    pub cursor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub following: Option<String>,
}

impl Host {
    /// Builds the view from the store: every adapter's active version, staged versions and
    /// pinned versions are compiled (or taken from the disk cache) before the host serves.
    pub async fn open(runtime: Runtime, store: Arc<dyn Store>, options: HostOptions) -> anyhow::Result<Self> {
        let snapshot = store.snapshot().await?;
        let admission = crate::limits::Admission::new(runtime.limits());
        let recorder = Recorder::start(store.clone(), options.trace_retention, runtime.metrics().clone());
        let mut view = View {
            adapters: snapshot.adapters.into_iter().map(|a| (a.name.clone(), a)).collect(),
            tenants: snapshot.tenants.into_iter().map(|t| (t.id.clone(), Arc::new(t))).collect(),
            keys: snapshot.keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
            cursor: snapshot.cursor,
            ..View::default()
        };
        for v in snapshot.versions {
            view.versions.entry(v.adapter.clone()).or_default().push(v);
        }
        runtime.metrics().registry_cursor.set(view.cursor);
        let mut needed: Vec<String> = view.needed().into_iter().collect();
        needed.sort();
        for digest in needed {
            let started = Instant::now();
            match load_stored(&runtime, store.as_ref(), &digest).await {
                Ok(c) => {
                    tracing::info!(adapter = %c.description.name, %digest, ms = started.elapsed().as_millis() as u64, "loaded");
                    view.compiled.insert(digest, c);
                }
                Err(e) => tracing::error!(%digest, "stored version cannot be loaded; its tenants fail until it is replaced: {e}"),
            }
        }
        Ok(Host {
            runtime,
            store,
            view: RwLock::new(view),
            writes: tokio::sync::Mutex::new(()),
            recorder,
            auth: Auth::new(options.admin_token.as_deref()),
            admission,
            follow_error: std::sync::Mutex::new(None),
        })
    }

    /// With a shared store, follows other hosts' changes: on each of the store's notices, and
    /// every `poll` whatever happens (notices are lost while disconnected). Ends with the host.
    pub fn follow(self: &Arc<Self>, poll: std::time::Duration) {
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
                let mut error = crate::trace::lock(&host.follow_error);
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

    /// Applies every change other hosts committed since the view's cursor. Returns how many
    /// audit entries it applied. A failure to read leaves the view (and its cursor) as it was.
    pub async fn sync(&self) -> Result<usize, HostError> {
        // Local writes apply their own records to the view; none may interleave with records
        // read here, or an older read could overwrite a newer local write.
        let _w = self.writes.lock().await;
        let mut applied = 0;
        loop {
            let cursor = self.read().cursor;
            // Not through `From<StoreError>`, which logs: the follower reports an outage once.
            let changes = self.store.audit_after(cursor, FOLLOW_BATCH).await.map_err(|e| HostError::Storage(e.to_string()))?;
            let Some(last) = changes.last().map(|c| c.cursor) else { return Ok(applied) };
            let (mut adapters, mut tenants) = (BTreeSet::new(), BTreeSet::new());
            for c in &changes {
                use AuditAction::*;
                match c.action {
                    Deploy | Stage | Activate | Rollback | DeleteVersion => adapters.extend(c.adapter.clone()),
                    Pin | TenantPut | TenantDelete | KeyIssued | KeyRevoked => tenants.extend(c.tenant.clone()),
                }
            }
            let mut fresh_adapters = Vec::new();
            for name in adapters {
                let records = self.store.adapter_records(&name).await?;
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
            let mut view = self.write();
            for c in loaded {
                tracing::info!(adapter = %c.description.name, version = %c.description.version, digest = %c.digest, "loaded a version another host stored");
                view.compiled.insert(c.digest.clone(), c);
            }
            for (name, (state, versions)) in fresh_adapters {
                match state {
                    Some(s) => view.adapters.insert(name.clone(), s),
                    None => view.adapters.remove(&name),
                };
                view.versions.insert(name, versions);
            }
            for (id, (tenant, keys)) in fresh_tenants {
                view.keys.retain(|_, k| k.tenant != id);
                view.keys.extend(keys.into_iter().map(|k| (k.key_id.clone(), k)));
                match tenant {
                    Some(t) => view.tenants.insert(id, Arc::new(t)),
                    None => view.tenants.remove(&id),
                };
            }
            view.prune();
            view.cursor = last;
            drop(view);
            applied += changes.len();
            self.metrics().registry_cursor.set(last);
            self.metrics().registry_changes.inc_by(changes.len() as u64);
        }
    }

    /// What `/healthz?deep=1` reports: whether the database answers and, with a shared store,
    /// whether this host is following it. Calls are served from memory either way.
    pub async fn health(&self) -> DeepHealth {
        let store = match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the database did not answer within 2 s".to_string(),
        };
        let following = crate::trace::lock(&self.follow_error).clone();
        let status = if store == "ok" && following.is_none() { "ok" } else { "unhealthy" };
        DeepHealth { status, store, cursor: self.read().cursor, following }
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.runtime.metrics()
    }

    /// A panic elsewhere while holding the lock leaves the view as it was (every change
    /// to it is a handful of map inserts after the store committed), so go on.
    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn identify(&self, authorization: Option<&str>) -> Caller {
        self.auth.identify(authorization, |id| self.read().keys.get(id).cloned())
    }

    pub fn is_open(&self) -> bool {
        self.auth.is_open()
    }

    // ----- adapters and versions -------------------------------------------------------

    /// Compiles, checks and stores a component under `name`; unless staged, makes it the
    /// active version for every tenant of `name` that is not pinned. Hot: calls running
    /// finish on the version they started with. A version whose crmConfig validation
    /// refuses existing (unpinned) tenants is refused unless forced or staged.
    pub async fn deploy(&self, name: &str, bytes: Bytes, opts: DeployOptions, actor: &str) -> Result<Deployed, HostError> {
        check_id("adapter name", name)?;
        let result = self.deploy_inner(name, bytes, None, opts, actor).await;
        self.count_deploy(name, &result);
        result
    }

    fn count_deploy(&self, name: &str, result: &Result<Deployed, HostError>) {
        self.metrics().deploys.with_label_values(&[name, if result.is_ok() { "ok" } else { "refused" }]).inc();
    }

    /// `compiled`: the component, when the caller has already loaded it.
    async fn deploy_inner(
        &self,
        name: &str,
        bytes: Bytes,
        compiled: Option<Arc<Compiled>>,
        opts: DeployOptions,
        actor: &str,
    ) -> Result<Deployed, HostError> {
        let digest = Runtime::digest(&bytes);
        let existing = compiled.or_else(|| self.read().compiled.get(&digest).cloned());
        let compiled = match existing {
            Some(c) => c,
            None => self.runtime.load(bytes.clone()).await?,
        };
        if compiled.description.name != name {
            return Err(HostError::NameMismatch(format!(
                "the component describes itself as '{}', but was uploaded as '{name}'",
                compiled.description.name
            )));
        }
        let invalid_tenants = self.invalid_tenants(&compiled).await;
        if !invalid_tenants.is_empty() && !opts.stage && !opts.force {
            return Err(invalid_tenants_error(name, &compiled.digest, invalid_tenants));
        }
        let _w = self.writes.lock().await;
        let d = &compiled.description;
        let record = VersionRecord {
            adapter: name.to_string(),
            digest: digest.clone(),
            version: d.version.clone(),
            manifest: serde_json::to_value(&compiled.description).unwrap_or(Value::Null),
            deployed_at_ms: now_ms(),
            deployed_by: actor.to_string(),
            staged: opts.stage,
        };
        let mode = if opts.stage { DeployMode::Stage } else { DeployMode::Activate };
        let action = if opts.stage { AuditAction::Stage } else { AuditAction::Deploy };
        let detail = json!({"version": d.version, "forced": opts.force && !invalid_tenants.is_empty()});
        let audit = self.audit(actor, action, Some(name), None, Some(&digest), Some(detail));
        let state = self.store.put_version(&record, &bytes, mode, &audit).await?;
        let mut view = self.write();
        let versions = view.versions.entry(name.to_string()).or_default();
        match versions.iter_mut().find(|v| v.digest == digest) {
            // Stored already: activating it clears its staged mark; staging it changes nothing.
            Some(v) => v.staged &= opts.stage,
            None => versions.push(record),
        }
        view.adapters.insert(name.to_string(), state);
        view.compiled.insert(digest.clone(), compiled.clone());
        view.prune();
        let vstate = view.state(name, &digest);
        drop(view);
        tracing::info!(adapter = name, version = %compiled.description.version, %digest, state = ?vstate, actor, "deployed");
        Ok(Deployed { compiled, state: vstate, invalid_tenants })
    }

    /// Tenants that follow `compiled`'s adapter's active version and whose crmConfig it
    /// refuses.
    async fn invalid_tenants(&self, compiled: &Arc<Compiled>) -> Vec<InvalidTenant> {
        let name = &compiled.description.name;
        let following: Vec<Arc<TenantRecord>> =
            self.read().tenants.values().filter(|t| &t.adapter == name && t.pin.is_none()).cloned().collect();
        let mut invalid: Vec<InvalidTenant> = futures::stream::iter(following)
            .map(|t| async move {
                match self.validate_tenant_config(compiled, &t.crm_config).await {
                    Ok(()) => None,
                    Err(HostError::InvalidConfig { field, message }) => Some(InvalidTenant { tenant: t.id.clone(), field, message }),
                    Err(e) => Some(InvalidTenant { tenant: t.id.clone(), field: None, message: e.to_string() }),
                }
            })
            .buffer_unordered(4)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        invalid.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        invalid
    }

    /// Deploys every `*.wasm` in `dir` under the name its component declares, skipping
    /// files whose digest is already stored for that adapter (so a restart does not undo a
    /// rollback). Returns what failed; a broken file does not stop the others.
    pub async fn deploy_dir(&self, dir: &Path, actor: &str) -> anyhow::Result<Vec<(String, HostError)>> {
        let mut failures = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wasm")) {
            let bytes = Bytes::from(std::fs::read(&path)?);
            if let Err(e) = self.deploy_file(&bytes, actor).await {
                failures.push((path.display().to_string(), e));
            }
        }
        Ok(failures)
    }

    /// Deploys a component under its declared name unless that digest is already stored.
    /// `Ok(None)`: nothing to do.
    pub async fn deploy_file(&self, bytes: &Bytes, actor: &str) -> Result<Option<Deployed>, HostError> {
        let digest = Runtime::digest(bytes);
        if self.read().versions.values().flatten().any(|v| v.digest == digest) {
            return Ok(None);
        }
        let compiled = self.runtime.load(bytes.clone()).await?;
        let name = compiled.description.name.clone();
        let result = self.deploy_inner(&name, bytes.clone(), Some(compiled), DeployOptions::default(), actor).await;
        self.count_deploy(&name, &result);
        result.map(Some)
    }

    /// The compiled form of a stored version: from memory, else from the store's blob
    /// (through the disk cache, so usually without compiling).
    async fn compiled_version(&self, adapter: &str, digest: &str) -> Result<Arc<Compiled>, HostError> {
        if self.read().version(adapter, digest).is_none() {
            return Err(HostError::UnknownVersion(format!("adapter '{adapter}' has no stored version {digest}")));
        }
        if let Some(c) = self.read().compiled.get(digest).cloned() {
            return Ok(c);
        }
        load_stored(&self.runtime, self.store.as_ref(), digest).await
    }

    /// Makes a stored version the active one (no recompile: it is in memory or in the disk
    /// cache). Refused like a deploy when it would refuse existing tenants, unless forced.
    pub async fn activate(&self, adapter: &str, digest: &str, force: bool, actor: &str) -> Result<Deployed, HostError> {
        let compiled = self.compiled_version(adapter, digest).await?;
        let invalid_tenants = self.invalid_tenants(&compiled).await;
        if !invalid_tenants.is_empty() && !force {
            return Err(invalid_tenants_error(adapter, digest, invalid_tenants));
        }
        let _w = self.writes.lock().await;
        let audit = self.audit(actor, AuditAction::Activate, Some(adapter), None, Some(digest), None);
        let state = self.store.activate(adapter, digest, &audit).await?;
        self.apply_activation(adapter, state, compiled.clone());
        tracing::info!(adapter, digest, actor, "activated");
        Ok(Deployed { compiled, state: VersionState::Active, invalid_tenants })
    }

    /// Re-activates the previously active version.
    pub async fn rollback(&self, adapter: &str, actor: &str) -> Result<Deployed, HostError> {
        // Held from reading the previous version to applying it, so that what was loaded is
        // what the store activates.
        let _w = self.writes.lock().await;
        let previous = {
            let view = self.read();
            let state = view.adapters.get(adapter).ok_or_else(|| HostError::UnknownAdapter(adapter.to_string()))?;
            state.previous.clone().filter(|p| view.version(adapter, p).is_some())
        };
        let Some(previous) = previous else {
            return Err(HostError::NoPreviousVersion(format!("adapter '{adapter}' has no previously active version to roll back to")));
        };
        let compiled = self.compiled_version(adapter, &previous).await?;
        let audit = self.audit(actor, AuditAction::Rollback, Some(adapter), None, Some(&previous), None);
        let state = self.store.rollback(adapter, &audit).await?;
        let active = state.active.clone();
        self.apply_activation(adapter, state, compiled.clone());
        tracing::info!(adapter, digest = ?active, actor, "rolled back");
        Ok(Deployed { compiled, state: VersionState::Active, invalid_tenants: Vec::new() })
    }

    fn apply_activation(&self, adapter: &str, state: AdapterState, compiled: Arc<Compiled>) {
        debug_assert_eq!(state.active.as_deref(), Some(compiled.digest.as_str()));
        let mut view = self.write();
        for v in view.versions.entry(adapter.to_string()).or_default().iter_mut().filter(|v| v.digest == compiled.digest) {
            v.staged = false;
        }
        view.compiled.insert(compiled.digest.clone(), compiled);
        view.adapters.insert(adapter.to_string(), state);
        view.prune();
    }

    /// Deletes a stored version that is neither active nor pinned.
    pub async fn delete_version(&self, adapter: &str, digest: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let audit = self.audit(actor, AuditAction::DeleteVersion, Some(adapter), None, Some(digest), None);
        let state = self.store.delete_version(adapter, digest, &audit).await?;
        let mut view = self.write();
        if let Some(v) = view.versions.get_mut(adapter) {
            v.retain(|v| v.digest != digest);
        }
        view.adapters.insert(adapter.to_string(), state);
        view.prune();
        Ok(())
    }

    /// Every stored version of an adapter, newest first.
    pub fn versions(&self, adapter: &str) -> Result<Vec<VersionInfo>, HostError> {
        let view = self.read();
        let versions = view.versions.get(adapter).filter(|v| !v.is_empty()).ok_or_else(|| HostError::UnknownAdapter(adapter.into()))?;
        Ok(versions
            .iter()
            .rev()
            .map(|r| VersionInfo {
                state: view.state(adapter, &r.digest),
                pinned_tenants: view.pinned_tenants(adapter, &r.digest),
                record: r.clone(),
            })
            .collect())
    }

    /// The active version of every adapter that has one.
    pub fn list_adapters(&self) -> Vec<Arc<Compiled>> {
        let view = self.read();
        view.adapters.values().filter_map(|a| view.compiled.get(a.active.as_ref()?).cloned()).collect()
    }

    /// An adapter's active version, its size, and its versions (oldest first).
    pub fn adapter(&self, name: &str) -> Result<(Arc<Compiled>, Vec<VersionRecord>), HostError> {
        let view = self.read();
        let compiled = view
            .adapters
            .get(name)
            .and_then(|a| view.compiled.get(a.active.as_ref()?))
            .cloned()
            .ok_or_else(|| HostError::UnknownAdapter(name.to_string()))?;
        Ok((compiled, view.versions.get(name).cloned().unwrap_or_default()))
    }

    pub async fn component_size(&self, digest: &str) -> Result<usize, HostError> {
        Ok(self.store.blob_size(digest).await?.unwrap_or(0) as usize)
    }

    // ----- tenants and keys ------------------------------------------------------------

    /// Creates or replaces a tenant after the version it will run has validated its
    /// crmConfig.
    pub async fn put_tenant(&self, id: &str, body: &[u8], actor: &str) -> Result<TenantView, HostError> {
        check_id("tenant id", id)?;
        let body: TenantBody = parse_json("tenant body", body).map_err(HostError::BadRequest)?;
        let limits = body.limits.unwrap_or_default();
        limits
            .check(self.runtime.fuel_metering())
            .map_err(|(field, message)| HostError::InvalidLimits { field, message })?;
        if let Some(pin) = &body.pin {
            if self.read().version(&body.adapter, pin).is_none() {
                let other = self.read().versions.iter().find(|(_, v)| v.iter().any(|v| &v.digest == pin)).map(|(a, _)| a.clone());
                return Err(HostError::InvalidPin(match other {
                    Some(a) => format!("pin {pin} is a version of adapter '{a}', not of '{}'", body.adapter),
                    None => format!("pin {pin} is not a stored version of adapter '{}'", body.adapter),
                }));
            }
        }
        let compiled = match &body.pin {
            Some(pin) => self.compiled_version(&body.adapter, pin).await?,
            None => self.adapter(&body.adapter)?.0,
        };
        let crm_config = body.crm_config.unwrap_or_default();
        self.validate_tenant_config(&compiled, &crm_config).await?;
        let record = TenantRecord {
            id: id.to_string(),
            adapter: body.adapter,
            project_id: body.project_id.unwrap_or_default(),
            crm_config,
            pin: body.pin,
            limits,
            updated_at_ms: now_ms(),
        };
        let _w = self.writes.lock().await;
        let old_pin = self.read().tenants.get(id).and_then(|t| t.pin.clone());
        let (action, detail) = if old_pin != record.pin {
            (AuditAction::Pin, json!({"adapter": record.adapter, "from": old_pin, "to": record.pin}))
        } else {
            (AuditAction::TenantPut, json!({"adapter": record.adapter}))
        };
        let audit = self.audit(actor, action, Some(&record.adapter), Some(id), record.pin.as_deref(), Some(detail));
        self.store.put_tenant(&record, &audit).await?;
        let record = Arc::new(record);
        let mut view = self.write();
        if let Some(pin) = &record.pin {
            view.compiled.insert(pin.clone(), compiled.clone());
        }
        view.tenants.insert(id.to_string(), record.clone());
        view.prune();
        drop(view);
        Ok(self.tenant_view(record, &compiled))
    }

    /// The adapter's own crmConfig validation, plus: endpoint fields must be usable URLs
    /// (egress is derived from them).
    async fn validate_tenant_config(&self, compiled: &Compiled, crm_config: &Map<String, Value>) -> Result<(), HostError> {
        self.runtime.validate_config(compiled, crm_config).await?;
        for field in &compiled.description.endpoint_fields {
            if let Some(v) = crm_config.get(field).filter(|v| !v.is_null()) {
                let ok = v
                    .as_str()
                    .and_then(|s| url::Url::parse(s.trim()).ok())
                    .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
                if !ok {
                    return Err(HostError::InvalidConfig {
                        field: Some(field.clone()),
                        message: format!("crmConfig.{field}: must be an http(s) URL"),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn get_tenant(&self, id: &str) -> Result<TenantView, HostError> {
        let (record, compiled) = self.tenant_and_version(id)?;
        Ok(self.tenant_view(record, &compiled))
    }

    fn tenant_and_version(&self, id: &str) -> Result<(Arc<TenantRecord>, Arc<Compiled>), HostError> {
        let view = self.read();
        let t = view.tenants.get(id).cloned().ok_or_else(|| HostError::UnknownTenant(id.to_string()))?;
        let compiled = view
            .digest_for(&t)
            .and_then(|d| view.compiled.get(&d).cloned())
            .ok_or_else(|| HostError::UnknownAdapter(t.adapter.clone()))?;
        Ok((t, compiled))
    }

    fn tenant_view(&self, record: Arc<TenantRecord>, compiled: &Compiled) -> TenantView {
        let mut crm_config = record.crm_config.clone();
        for f in &compiled.description.secret_fields {
            if let Some(v) = crm_config.get_mut(f).filter(|v| !v.is_null()) {
                *v = REDACTED.into();
            }
        }
        TenantView { record, crm_config }
    }

    pub async fn delete_tenant(&self, id: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let adapter = self.read().tenants.get(id).map(|t| t.adapter.clone());
        let audit = self.audit(actor, AuditAction::TenantDelete, adapter.as_deref(), Some(id), None, None);
        if !self.store.delete_tenant(id, &audit).await? {
            return Err(HostError::UnknownTenant(id.to_string()));
        }
        let mut view = self.write();
        view.tenants.remove(id);
        view.keys.retain(|_, k| k.tenant != id);
        view.prune();
        Ok(())
    }

    /// Issues an API key for a tenant: `(key_id, key)`. Only its hash is kept.
    pub async fn create_key(&self, tenant: &str, actor: &str) -> Result<(String, String), HostError> {
        let _w = self.writes.lock().await;
        if !self.read().tenants.contains_key(tenant) {
            return Err(HostError::UnknownTenant(tenant.to_string()));
        }
        let (key_id, key, key_hash) = auth::new_key();
        let record = KeyRecord { key_id: key_id.clone(), tenant: tenant.to_string(), key_hash, created_at_ms: now_ms(), created_by: actor.to_string() };
        let audit = self.audit(actor, AuditAction::KeyIssued, None, Some(tenant), None, Some(json!({"keyId": key_id})));
        self.store.put_key(&record, &audit).await?;
        self.write().keys.insert(key_id.clone(), record);
        Ok((key_id, key))
    }

    pub async fn revoke_key(&self, tenant: &str, key_id: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let audit = self.audit(actor, AuditAction::KeyRevoked, None, Some(tenant), None, Some(json!({"keyId": key_id})));
        if !self.store.delete_key(tenant, key_id, &audit).await? {
            return Err(HostError::UnknownKey(format!("tenant '{tenant}' has no API key '{key_id}'")));
        }
        self.write().keys.remove(key_id);
        Ok(())
    }

    pub async fn audit_log(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, HostError> {
        Ok(self.store.audit_after(after, limit).await?)
    }

    fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        adapter: Option<&str>,
        tenant: Option<&str>,
        digest: Option<&str>,
        detail: Option<Value>,
    ) -> Audit {
        Audit {
            at_ms: now_ms(),
            actor: actor.to_string(),
            action,
            adapter: adapter.map(str::to_string),
            tenant: tenant.map(str::to_string),
            digest: digest.map(str::to_string),
            detail,
        }
    }

    // ----- calls -----------------------------------------------------------------------

    /// Runs `func_id` for a tenant. Adapter failures are outcomes (`Ok` with a failure);
    /// only bad requests and unknown tenants are errors.
    pub async fn call(&self, tenant_id: &str, func_id: &str, body: &[u8], call_id: &str) -> Result<CallAnswer, HostError> {
        let (tenant, compiled) = self.tenant_and_version(tenant_id)?;
        let request = CallRequest::parse(body).map_err(HostError::BadRequest)?;
        let redactor = Redactor::new(&compiled.description.secret_fields, &tenant.crm_config);
        let ctx = request.into_wit(&tenant.project_id, &tenant.crm_config);
        let started_at_ms = now_ms();
        let started = Instant::now();
        let limits = tenant.limits.apply(self.runtime.limits());
        let scope = self.runtime.call_scope(call_id, &compiled, redactor.clone(), &limits);
        let mut result = match self.admission.enter(tenant_id, limits.max_concurrent_calls_per_tenant) {
            Ok(_admitted) => self.runtime.invoke(&compiled, &limits, &tenant.crm_config, func_id, ctx, scope.clone()).await,
            Err(refused) => Err(refused),
        };
        let elapsed = started.elapsed();
        if let Err(f) = &mut result {
            // An adapter may echo what the CRM said, and the CRM may echo credentials.
            f.message = redactor.text(&f.message);
            f.body_excerpt = f.body_excerpt.as_deref().map(|b| redactor.text(b));
        }
        let d = &compiled.description;
        let (outcome, kind) = match &result {
            Ok(_) => ("complete", ""),
            Err(f) => ("failure", f.kind.as_str()),
        };
        let m = self.metrics();
        m.calls.with_label_values(&[tenant_id, &d.name, func_id, outcome, kind]).inc();
        m.call_seconds.with_label_values(&[&d.name, func_id]).observe(elapsed.as_secs_f64());
        let ms = elapsed.as_secs_f64() * 1000.0;
        let digest_prefix = &compiled.digest[..compiled.digest.len().min(19)];
        match &result {
            // Every call is in the trace store and the metrics; a log line per success would
            // cost a write per call for nothing more (BENCHMARKS.md). Failures stay at info.
            Ok(_) => tracing::debug!(call_id, tenant = tenant_id, adapter = %format!("{}@{}", d.name, d.version), digest = digest_prefix, func_id, outcome, ms, "call"),
            Err(f) => tracing::info!(call_id, tenant = tenant_id, adapter = %format!("{}@{}", d.name, d.version), digest = digest_prefix, func_id, outcome, kind, ms, "call: {}", f.message),
        }
        let request_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let trace = CallTrace {
            call_id: call_id.to_string(),
            tenant: tenant_id.to_string(),
            func_id: func_id.to_string(),
            adapter: d.name.clone(),
            version: d.version.clone(),
            digest: compiled.digest.clone(),
            started_at_ms,
            duration_ms: ms,
            request: redactor.json(&request_json),
            outbound: scope.exchanges(),
            outcome: outcome.to_string(),
            crm_data: result.as_ref().ok().map(|m| redactor.json(&Value::Object(m.clone()))),
            error: result.as_ref().err().cloned(),
        };
        self.recorder.record(trace.into_record(elapsed));
        Ok(CallAnswer { result })
    }

    /// A request the tenant's CRM sent to the platform: the adapter checks it (the CRM's
    /// own token) and turns it into an answer and messages; the messages are committed
    /// before the CRM gets a 2xx, so a message the CRM was told was received is never lost.
    pub async fn webhook(&self, tenant_id: &str, request: WebhookRequest) -> Result<WebhookAnswer, HostError> {
        let (tenant, compiled) = self.tenant_and_version(tenant_id)?;
        let d = &compiled.description;
        let redactor = Redactor::new(&d.secret_fields, &tenant.crm_config);
        let limits = tenant.limits.apply(self.runtime.limits());
        let scope = self.runtime.call_scope("webhook", &compiled, redactor.clone(), &limits);
        let started = Instant::now();
        // A CRM (or whoever posts as one) flooding the webhook shares the tenant's places.
        let _admitted = self
            .admission
            .enter(tenant_id, limits.max_concurrent_calls_per_tenant)
            .map_err(|f| HostError::RateLimited(f.message))?;
        let outcome =
            self.runtime.handle_webhook(&compiled, &limits, &tenant.project_id, &tenant.crm_config, request, scope).await;
        let out = match outcome {
            Ok(o) if (100..600).contains(&o.status) => o,
            Ok(o) => return Err(HostError::AdapterFailed(format!("the adapter answered the webhook with HTTP status {}", o.status))),
            Err(f) if f.kind == crate::FailureKind::Unsupported => {
                return Err(HostError::WebhooksUnsupported(format!("adapter '{}' does not receive webhooks", d.name)))
            }
            Err(f) => {
                let message = redactor.text(&f.message);
                tracing::warn!(tenant = tenant_id, adapter = %d.name, kind = %f.kind, "webhook failed: {message}");
                return Err(HostError::AdapterFailed(format!("the adapter failed handling the webhook ({}): {message}", f.kind)));
            }
        };
        let accepted = (200..300).contains(&out.status);
        let (mut stored, received) = (0, out.messages.len());
        if accepted && received > 0 {
            let events: Vec<NewEvent> = out.messages.iter().map(new_event).collect();
            stored = self.store.append_events(tenant_id, &events, now_ms(), EVENT_DEDUP_WINDOW_MS).await?;
            let m = self.metrics();
            m.inbound_events.with_label_values(&[tenant_id, "stored"]).inc_by(stored as u64);
            m.inbound_events.with_label_values(&[tenant_id, "duplicate"]).inc_by((received - stored) as u64);
        }
        self.metrics().webhooks.with_label_values(&[tenant_id, &d.name, &out.status.to_string()]).inc();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(tenant = tenant_id, adapter = %d.name, status = out.status, received, stored, ms, "webhook");
        // Only what describes the body goes back; the rest is the host's business.
        let headers = out.headers.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).collect();
        Ok(WebhookAnswer { status: out.status, headers, body: out.body })
    }

    /// A tenant's inbound events after `cursor`, oldest first.
    pub async fn events(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, HostError> {
        if !self.read().tenants.contains_key(tenant) {
            return Err(HostError::UnknownTenant(tenant.to_string()));
        }
        Ok(self.store.events_after(tenant, after, limit).await?)
    }

    /// Waits until every call answered so far has its trace stored.
    pub async fn flush_traces(&self) {
        self.recorder.flush().await;
    }

    /// A tenant's most recent calls, newest first.
    pub async fn calls(&self, tenant: &str, limit: u32) -> Result<Vec<CallRecord>, HostError> {
        self.tenant_and_version(tenant)?;
        self.flush_traces().await;
        Ok(self.store.calls(tenant, limit).await?)
    }

    pub async fn call_trace(&self, tenant: &str, call_id: &str) -> Result<CallRecord, HostError> {
        self.tenant_and_version(tenant)?;
        self.flush_traces().await;
        self.store
            .call(tenant, call_id)
            .await?
            .ok_or_else(|| HostError::UnknownCall(format!("tenant '{tenant}' has no recorded call '{call_id}' (recent calls are kept, older ones are dropped)")))
    }
}

/// The stored form of an inbound message, and what identifies a second delivery of it.
fn new_event(m: &InboundMessage) -> NewEvent {
    use sha2::Digest;
    let event = serde_json::to_value(m).unwrap_or(Value::Null);
    let content = json!([m.chat_id, m.phone, m.text, m.author, m.media]);
    NewEvent {
        message_id: m.extra.get("messageId").and_then(crate::store::scalar_id),
        content_hash: format!("{:x}", sha2::Sha256::digest(content.to_string().as_bytes())),
        event,
    }
}

async fn load_stored(runtime: &Runtime, store: &dyn Store, digest: &str) -> Result<Arc<Compiled>, HostError> {
    let bytes = store
        .blob(digest)
        .await?
        .ok_or_else(|| HostError::Internal(format!("the component bytes of {digest} are missing from the store")))?;
    runtime.load(Bytes::from(bytes)).await
}

fn invalid_tenants_error(adapter: &str, digest: &str, tenants: Vec<InvalidTenant>) -> HostError {
    let names: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
    HostError::InvalidTenants {
        message: format!(
            "version {digest} of '{adapter}' refuses the crmConfig of tenants {}: fix or pin them first, stage it \
             (?stage=true), or force it (?force=true)",
            names.join(", ")
        ),
        tenants,
    }
}

/// Names that appear in URL paths: letters, digits, `.`, `_`, `-`; 1-128 chars.
fn check_id(what: &str, id: &str) -> Result<(), HostError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(HostError::BadRequest(format!("{what} '{id}' must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'")))
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
