//! Adapters and their versions: deploy (or stage), activate, roll back, delete, list. Each
//! change is stored with its audit entry first, then applied to the registry; calls running
//! finish on the version they started with.

use super::registry::VersionState;
use super::{audit, check_id, load_stored, now_ms, Host};
use crate::error::{HostError, InvalidTenant};
use crate::replay::{ReplayReport, ReplayRequest, Verdict};
use crate::runtime::{Compiled, Runtime};
use crate::store::{AdapterState, AuditAction, DeployMode, TenantRecord, VersionRecord};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// The result of a deploy, an activation or a rollback.
pub struct Deployed {
    pub compiled: Arc<Compiled>,
    pub state: VersionState,
    pub invalid_tenants: Vec<InvalidTenant>,
    /// The replay that gated the activation, if one did.
    pub replay: Option<ReplayReport>,
}

/// One version as `GET /v1/adapters/{name}/versions` lists it.
pub struct VersionInfo {
    pub record: VersionRecord,
    pub state: VersionState,
    pub pinned_tenants: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    pub stage: bool,
    /// Activate even though tenants' crmConfig is refused, or the replay failed.
    pub force: bool,
    /// Stage, replay the adapter's last N recorded calls, activate only if that passes.
    pub replay: Option<u32>,
}

impl Host {
    /// Compiles, checks and stores a component under `name`; unless staged, makes it the
    /// active version for every tenant of `name` that is not pinned. Hot: calls running
    /// finish on the version they started with. A version whose crmConfig validation
    /// refuses existing (unpinned) tenants is refused unless forced or staged.
    pub async fn deploy(&self, name: &str, bytes: Bytes, opts: DeployOptions, actor: &str) -> Result<Deployed, HostError> {
        check_id("adapter name", name)?;
        let result = match opts.replay {
            Some(n) if !opts.stage => self.deploy_gated(name, bytes, n, opts.force, actor).await,
            _ => self.deploy_inner(name, bytes, None, opts, actor).await,
        };
        self.count_deploy(name, &result);
        result
    }

    /// Stages the upload, then [`Host::activate_after_replay`]: a refused replay leaves it staged.
    async fn deploy_gated(&self, name: &str, bytes: Bytes, calls: u32, force: bool, actor: &str) -> Result<Deployed, HostError> {
        let staged = self.deploy_inner(name, bytes, None, DeployOptions { stage: true, force, replay: None }, actor).await?;
        self.activate_after_replay(name, &staged.compiled.digest, calls, force, actor).await
    }

    /// Replays the adapter's last `calls` recorded calls through a stored version and
    /// activates it only when the replay passes (or `force` accepts what it found).
    pub async fn activate_after_replay(&self, adapter: &str, digest: &str, calls: u32, force: bool, actor: &str) -> Result<Deployed, HostError> {
        let report = self.replay(adapter, digest, &ReplayRequest::last(calls)).await?;
        if report.head.verdict == Verdict::Fail && !force {
            return Err(HostError::ReplayFailed { adapter: adapter.into(), digest: digest.into(), report: Box::new(report) });
        }
        let mut deployed = self.activate(adapter, digest, force, actor).await?;
        deployed.replay = Some(report);
        Ok(deployed)
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
            return Err(HostError::NameMismatch { declared: compiled.description.name.clone(), uploaded: name.to_string() });
        }
        let invalid_tenants = self.invalid_tenants(&compiled).await;
        if !invalid_tenants.is_empty() && !opts.stage && !opts.force {
            return Err(HostError::InvalidTenants { adapter: name.into(), digest: compiled.digest.clone(), tenants: invalid_tenants });
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
        let audit = audit(actor, action, Some(name), None, Some(&digest), Some(detail));
        let state = self.store.put_version(&record, &bytes, mode, &audit).await?;
        let mut registry = self.write();
        let versions = registry.versions.entry(name.to_string()).or_default();
        match versions.iter_mut().find(|v| v.digest == digest) {
            // Stored already: activating it clears its staged mark; staging it changes nothing.
            Some(v) => v.staged &= opts.stage,
            None => versions.push(record),
        }
        registry.adapters.insert(name.to_string(), state);
        registry.compiled.insert(digest.clone(), compiled.clone());
        registry.prune();
        let vstate = registry.state(name, &digest);
        drop(registry);
        tracing::info!(adapter = name, version = %compiled.description.version, %digest, state = ?vstate, actor, "deployed");
        Ok(Deployed { compiled, state: vstate, invalid_tenants, replay: None })
    }

    /// Tenants that follow `compiled`'s adapter's active version and whose crmConfig it
    /// refuses.
    pub(super) async fn invalid_tenants(&self, compiled: &Arc<Compiled>) -> Vec<InvalidTenant> {
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
    pub(super) async fn compiled_version(&self, adapter: &str, digest: &str) -> Result<Arc<Compiled>, HostError> {
        if self.read().version(adapter, digest).is_none() {
            return Err(HostError::UnknownVersion { adapter: adapter.into(), digest: digest.into() });
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
            return Err(HostError::InvalidTenants { adapter: adapter.into(), digest: digest.into(), tenants: invalid_tenants });
        }
        let _w = self.writes.lock().await;
        let audit = audit(actor, AuditAction::Activate, Some(adapter), None, Some(digest), None);
        let state = self.store.activate(adapter, digest, &audit).await?;
        self.apply_activation(adapter, state, compiled.clone());
        tracing::info!(adapter, digest, actor, "activated");
        Ok(Deployed { compiled, state: VersionState::Active, invalid_tenants, replay: None })
    }

    /// Re-activates the previously active version.
    pub async fn rollback(&self, adapter: &str, actor: &str) -> Result<Deployed, HostError> {
        // Held from reading the previous version to applying it, so that what was loaded is
        // what the store activates.
        let _w = self.writes.lock().await;
        let previous = {
            let registry = self.read();
            let state = registry.adapters.get(adapter).ok_or_else(|| HostError::UnknownAdapter(adapter.to_string()))?;
            state.previous.clone().filter(|p| registry.version(adapter, p).is_some())
        };
        let Some(previous) = previous else {
            return Err(HostError::NoPreviousVersion(adapter.to_string()));
        };
        let compiled = self.compiled_version(adapter, &previous).await?;
        let audit = audit(actor, AuditAction::Rollback, Some(adapter), None, Some(&previous), None);
        let state = self.store.rollback(adapter, &audit).await?;
        let active = state.active.clone();
        self.apply_activation(adapter, state, compiled.clone());
        tracing::info!(adapter, digest = ?active, actor, "rolled back");
        Ok(Deployed { compiled, state: VersionState::Active, invalid_tenants: Vec::new(), replay: None })
    }

    fn apply_activation(&self, adapter: &str, state: AdapterState, compiled: Arc<Compiled>) {
        debug_assert_eq!(state.active.as_deref(), Some(compiled.digest.as_str()));
        let mut registry = self.write();
        for v in registry.versions.entry(adapter.to_string()).or_default().iter_mut().filter(|v| v.digest == compiled.digest) {
            v.staged = false;
        }
        registry.compiled.insert(compiled.digest.clone(), compiled);
        registry.adapters.insert(adapter.to_string(), state);
        registry.prune();
    }

    /// Deletes a stored version that is neither active nor pinned.
    pub async fn delete_version(&self, adapter: &str, digest: &str, actor: &str) -> Result<(), HostError> {
        let _w = self.writes.lock().await;
        let audit = audit(actor, AuditAction::DeleteVersion, Some(adapter), None, Some(digest), None);
        let state = self.store.delete_version(adapter, digest, &audit).await?;
        {
            let mut registry = self.write();
            if let Some(v) = registry.versions.get_mut(adapter) {
                v.retain(|v| v.digest != digest);
            }
            registry.adapters.insert(adapter.to_string(), state);
            registry.prune();
        }
        self.prune_compile_cache(false).await;
        Ok(())
    }

    /// Every stored version of an adapter, newest first.
    pub fn versions(&self, adapter: &str) -> Result<Vec<VersionInfo>, HostError> {
        let registry = self.read();
        let versions =
            registry.versions.get(adapter).filter(|v| !v.is_empty()).ok_or_else(|| HostError::UnknownAdapter(adapter.into()))?;
        Ok(versions
            .iter()
            .rev()
            .map(|r| VersionInfo {
                state: registry.state(adapter, &r.digest),
                pinned_tenants: registry.pinned_tenants(adapter, &r.digest),
                record: r.clone(),
            })
            .collect())
    }

    /// The active version of every adapter that has one.
    pub fn list_adapters(&self) -> Vec<Arc<Compiled>> {
        let registry = self.read();
        registry.adapters.values().filter_map(|a| registry.compiled.get(a.active.as_ref()?).cloned()).collect()
    }

    /// An adapter's active version and its versions (oldest first).
    pub fn adapter(&self, name: &str) -> Result<(Arc<Compiled>, Vec<VersionRecord>), HostError> {
        let registry = self.read();
        let compiled = registry
            .adapters
            .get(name)
            .and_then(|a| registry.compiled.get(a.active.as_ref()?))
            .cloned()
            .ok_or_else(|| HostError::UnknownAdapter(name.to_string()))?;
        Ok((compiled, registry.versions.get(name).cloned().unwrap_or_default()))
    }

    pub async fn component_size(&self, digest: &str) -> Result<usize, HostError> {
        Ok(self.store.blob_size(digest).await?.unwrap_or(0) as usize)
    }
}
