//! The wasmtime side. One [`wasmtime::Engine`]; each component compiled once per digest and
//! pre-instantiated; a fresh [`Store`](wasmtime::Store) and instance for every execution,
//! so nothing is shared between calls or tenants. Every execution runs under the call's
//! [`Limits`] (memory cap, CPU deadline by epoch interruption, wall-clock deadline) with a
//! [`CallScope`] of its own, and its outbound requests go through [`crate::outbound`], which
//! enforces the tenant's egress policy.
//!
//! - `engine.rs`: engine settings, the pooling allocator, the guest threads;
//! - `checks.rs`: what a deploy refuses before a component runs for a tenant;
//! - `exports.rs`: one method per export of the adapter world (describe, validate-config,
//!   invoke, handle-webhook), each a closure over a fresh instance;
//! - `execute.rs`: one execution, generic over what it calls, and how it ended;
//! - `scope.rs`: what an execution shares with its outbound requests;
//! - `state.rs`: the store data and the linker (what a component can import).

mod checks;
mod engine;
mod execute;
mod exports;
mod http_types;
mod scope;
mod spin;
mod state;

use crate::bindings::AdapterPre;
use crate::compile_cache::CompileCache;
use crate::egress::OriginRule;
use crate::error::HostError;
pub use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::outbound::OutboundConfig;
use crate::redact::Redactor;
use bytes::Bytes;
use checks::{check_description, check_header, check_imports_exports};
pub use engine::{default_guest_threads, Allocator};
use engine::GuestPool;
pub(crate) use engine::{current_guest_thread, keep_a_timer_armed};
pub use spin::DEFAULT_IDLE_SPIN;
pub(crate) use spin::SPIN;
pub(crate) use exports::{CallInput, InboundMessage, Invocation, WebhookInput, WebhookRequest};
use serde_json::Value;
pub use scope::CallScope;
use sha2::{Digest, Sha256};
pub(crate) use state::HostState;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

/// What an adapter says about itself, checked. Stored with each version as its manifest.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    pub name: String,
    pub version: String,
    pub operations: Vec<String>,
    pub config_schema: Value,
    pub secret_fields: Vec<String>,
    pub endpoint_fields: Vec<String>,
    pub outbound_hosts: Vec<String>,
    /// `outbound_hosts`, parsed.
    #[serde(skip)]
    pub(crate) outbound: Vec<OriginRule>,
}

/// A compiled, pre-instantiated, described component. Shared by every call of every tenant
/// that uses it; in-flight calls keep it alive across a hot deploy.
pub struct Compiled {
    pub digest: String,
    pub description: Description,
    pre: AdapterPre<HostState>,
    /// `invoke` in the component's crm export, looked up once.
    invoke: ComponentExportIndex,
    /// Cleared when the adapter answers a webhook `unsupported`: the world says adapters of
    /// CRMs that never call back answer so whatever the request, so this version is not
    /// instantiated for a webhook again (anyone may post one).
    webhooks: AtomicBool,
}

impl Compiled {
    pub fn receives_webhooks(&self) -> bool {
        self.webhooks.load(Relaxed)
    }

    pub(crate) fn without_webhooks(&self) {
        self.webhooks.store(false, Relaxed);
    }
}

pub struct Runtime {
    linker: Linker<HostState>,
    limits: Limits,
    /// Compiled code on disk, so a restart does not recompile.
    compile_cache: Option<CompileCache>,
    metrics: Arc<Metrics>,
    executor: execute::Executor,
    /// Threads of their own for guest code (`--guest-threads`); `None`: the caller's.
    guests: Option<GuestPool>,
}

impl Runtime {
    pub fn new(limits: Limits, outbound: OutboundConfig) -> anyhow::Result<Self> {
        Self::with_allocator(limits, outbound, Allocator::default())
    }

    pub fn with_allocator(limits: Limits, outbound: OutboundConfig, allocator: Allocator) -> anyhow::Result<Self> {
        let fuel_metering = limits.fuel.is_some();
        // Calls and webhooks are admitted apart; the pool holds both.
        let engine = engine::start_engine(fuel_metering, allocator, limits.max_instances.saturating_add(limits.max_webhooks))?;
        let linker = state::adapter_linker(&engine)?;
        let metrics = Arc::new(Metrics::new());
        let executor =
            execute::Executor { engine: engine.clone(), outbound: Arc::new(outbound), metrics: metrics.clone(), fuel_metering, resetting: Default::default() };
        Ok(Runtime { linker, limits, compile_cache: None, metrics, executor, guests: None })
    }

    /// Runs guest code on `threads` threads of its own (0: on the caller's runtime). See
    /// BENCHMARKS.md for why this is the default.
    pub fn with_guest_threads(mut self, threads: usize) -> std::io::Result<Self> {
        self.guests = if threads == 0 { None } else { Some(GuestPool::new(threads)?) };
        Ok(self)
    }

    /// Keeps compiled code in `dir` (see [`CompileCache`]).
    pub fn with_compile_cache(mut self, dir: std::path::PathBuf) -> std::io::Result<Self> {
        self.compile_cache = Some(CompileCache::new(dir, &self.executor.engine)?);
        Ok(self)
    }

    pub fn compile_cache(&self) -> Option<&CompileCache> {
        self.compile_cache.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The host's defaults (command line); a tenant's overrides apply on top.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether tenants may have fuel budgets (the host runs with `--fuel`).
    pub fn fuel_metering(&self) -> bool {
        self.executor.fuel_metering
    }

    /// The digest a component is stored and cached under.
    pub fn digest(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    /// Compiles a component (or takes its compilation from the disk cache), checks its
    /// imports and exports, and asks it to describe itself. Everything a deploy can refuse
    /// is refused here.
    pub async fn load(&self, bytes: Bytes) -> Result<Arc<Compiled>, HostError> {
        let digest = Self::digest(&bytes);
        check_header(&bytes)?;
        let engine = self.executor.engine.clone();
        let linker = self.linker.clone();
        let cache = self.compile_cache.clone();
        let metrics = self.metrics.clone();
        let key = digest.clone();
        // Cranelift takes tens to hundreds of milliseconds: keep it off the async workers.
        let pre = tokio::task::spawn_blocking(move || -> Result<AdapterPre<HostState>, HostError> {
            let (cached, lookup) = match &cache {
                Some(c) => c.get(&engine, &key),
                None => (None, crate::compile_cache::Lookup::Miss),
            };
            if cache.is_some() {
                metrics.compile_cache.with_label_values(&[lookup.as_str()]).inc();
            }
            let fresh = cached.is_none();
            let component = match cached {
                Some(c) => c,
                None => Component::new(&engine, &bytes)
                    .map_err(|e| HostError::InvalidComponent(format!("cannot compile the component: {e:#}")))?,
            };
            check_imports_exports(&engine, &component)?;
            if let (true, Some(cache)) = (fresh, &cache) {
                cache.put(&key, &component);
            }
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| HostError::WrongWorld(format!("the component does not fit the adapter world: {e:#}")))?;
            AdapterPre::new(pre).map_err(|e| {
                HostError::WrongWorld(format!("the component's crm export does not match crm:adapter@0.1: {e:#}"))
            })
        })
        .await
        .map_err(|e| HostError::Internal(format!("compile task failed: {e}")))??;

        let invoke = component_invoke_export(&pre)?;
        let raw = self
            .describe(&pre)
            .await
            .map_err(|f| HostError::InvalidComponent(format!("describe failed ({}): {}", f.kind, f.message)))?;
        let description = check_description(raw)?;
        Ok(Arc::new(Compiled { digest, description, pre, invoke, webhooks: AtomicBool::new(true) }))
    }

    fn scope(&self, call_id: &str, adapter: &str, redactor: Redactor, limits: &Limits) -> CallScope {
        CallScope::new(call_id.to_string(), adapter.to_string(), limits.deadline, redactor, self.metrics.clone())
    }
}

/// Where `invoke` is in the component (any crm:adapter/crm@0.1.x, as the bindings accept).
fn component_invoke_export(pre: &AdapterPre<HostState>) -> Result<ComponentExportIndex, HostError> {
    let component = pre.instance_pre().component();
    component
        .get_export_index(None, "crm:adapter/crm@0.1.0")
        .and_then(|crm| component.get_export_index(Some(&crm), "invoke"))
        .ok_or_else(|| HostError::WrongWorld("the component's crm export has no `invoke` function".into()))
}
