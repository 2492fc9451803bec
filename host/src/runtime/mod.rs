//! The wasmtime side. One [`Engine`]; each component compiled once per digest and
//! pre-instantiated; a fresh [`Store`] and instance for every call, so nothing is shared
//! between calls or tenants. Every call runs under a memory cap, a CPU deadline (epoch
//! interruption) and a wall-clock deadline, and its outbound requests go through
//! [`HostState::send_request`], which enforces the tenant's egress policy.

mod checks;
mod execute;
mod state;

use crate::bindings::{wit, AdapterPre};
use crate::compile_cache::CompileCache;
use crate::egress::{EgressPolicy, OriginRule};
use crate::error::{CallFailure, FailureKind, HostError};
pub use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::outbound::OutboundConfig;
use crate::trace::{CallScope, Redactor};
use bytes::Bytes;
use checks::{check_description, check_header, check_imports_exports};
use execute::{failure_from_wit, Op, OpResult};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
pub(crate) use state::HostState;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances; the CPU deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(2);

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
    #[serde(skip)]
    outbound: Vec<OriginRule>,
}

/// A compiled, pre-instantiated, described component. Shared by every call of every tenant
/// that uses it; in-flight calls keep it alive across a hot deploy.
pub struct Compiled {
    pub digest: String,
    pub description: Description,
    pre: AdapterPre<HostState>,
    /// `invoke` in the component's crm export, looked up once.
    invoke: ComponentExportIndex,
}

impl Compiled {
    /// The origins a tenant's calls may reach: the declared hosts plus its endpoint fields'.
    pub fn egress_policy(&self, crm_config: &Map<String, Value>) -> EgressPolicy {
        let mut rules = self.description.outbound.clone();
        for field in &self.description.endpoint_fields {
            if let Some(rule) = crm_config
                .get(field)
                .and_then(Value::as_str)
                .and_then(|s| url::Url::parse(s.trim()).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .and_then(|u| OriginRule::of_url(&u))
            {
                rules.push(rule);
            }
        }
        EgressPolicy::new(rules)
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

/// One guest thread per CPU.
pub fn default_guest_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// A tokio runtime that runs only guest executions (and their outbound requests).
struct GuestPool(Option<tokio::runtime::Runtime>);

impl GuestPool {
    fn new(threads: usize) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("crm-guest")
            // A spinning guest yields every epoch tick but is always runnable, so these
            // workers never park, and tokio would look at new calls (the injection queue)
            // and at I/O readiness (a CRM's answer) only every 61st turn: 61 ticks, over
            // half a second (BENCHMARKS.md). Look at both at every turn.
            .global_queue_interval(1)
            .event_interval(1)
            .enable_all()
            .build()?;
        Ok(GuestPool(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("the guest pool lives as long as the runtime").handle()
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; its tasks are the host's to abandon.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// How instances get their memories, tables and stacks (`--allocator`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved at start-up and reused: an instance costs a few microseconds
    /// (memories are reset copy-on-write, not mapped anew). Bounded by `max_instances`.
    #[default]
    Pooling,
    /// mmap and munmap for every instance (wasmtime's default).
    OnDemand,
}

impl std::str::FromStr for Allocator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pooling" => Ok(Allocator::Pooling),
            "on-demand" => Ok(Allocator::OnDemand),
            other => Err(format!("unknown allocator '{other}' (pooling, on-demand)")),
        }
    }
}

/// Instances beyond `max_instances` the pool has room for: deploy-time `describe` and
/// crmConfig validation run outside call admission.
const POOL_HEADROOM: u32 = 32;

/// Bytes of each pooled memory, table and stack reset by zeroing rather than by madvise.
const KEEP_RESIDENT: usize = 64 << 10;

/// The pooling allocator sized for adapters: one slot per admitted call (plus headroom),
/// memories up to the largest cap a tenant may be given (the per-call cap itself is the
/// store limiter's), and room for the handful of core instances a component is made of.
fn pooling_config(instances: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .max_core_instances_per_component(16)
        .total_core_instances(instances.saturating_mul(16))
        .max_memories_per_component(4)
        .total_memories(instances.saturating_mul(2))
        .max_tables_per_component(16)
        .total_tables(instances.saturating_mul(8))
        .max_memory_size(crate::limits::MAX_MEMORY_BYTES)
        // Resetting a slot by madvise costs page faults on the next call and TLB-shootdown
        // IPIs to every CPU; zeroing the first 64 KiB of each memory, table and stack by
        // hand is cheaper for what adapters touch there (BENCHMARKS.md, section 1).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    pool
}

fn engine_config(fuel_metering: bool, pool: Option<wasmtime::PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).async_support(true).epoch_interruption(true);
    // Fuel instruments every wasm block: only when the operator asks for budgets.
    config.consume_fuel(fuel_metering);
    if let Some(pool) = pool {
        // A fiber stack holds host frames of the previous call (and its tenant's strings);
        // wasm cannot address it, but a reused stack starts zeroed all the same.
        config.async_stack_zeroing(true).allocation_strategy(pool);
    }
    config
}

impl Runtime {
    pub fn new(limits: Limits, outbound: OutboundConfig) -> anyhow::Result<Self> {
        Self::with_allocator(limits, outbound, Allocator::default())
    }

    pub fn with_allocator(limits: Limits, outbound: OutboundConfig, allocator: Allocator) -> anyhow::Result<Self> {
        let fuel_metering = limits.fuel.is_some();
        let pool = (allocator == Allocator::Pooling).then(|| pooling_config(limits.max_instances.saturating_add(POOL_HEADROOM)));
        let engine = Engine::new(&engine_config(fuel_metering, pool))
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine ({allocator:?} allocator): {e:#}"))?;
        let weak = engine.weak();
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        let linker = state::adapter_linker(&engine)?;
        let metrics = Arc::new(Metrics::new());
        let executor =
            execute::Executor { engine: engine.clone(), outbound: Arc::new(outbound), metrics: metrics.clone(), fuel_metering };
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
        let scope = self.scope("deploy".into(), "(describe)".into(), Redactor::default(), &self.limits);
        let raw = match self.execute(&pre, &self.limits, EgressPolicy::default(), scope, Op::Describe).await {
            Ok(OpResult::Describe(d)) => d,
            Ok(_) => unreachable!("describe answers describe"),
            Err(f) => return Err(HostError::InvalidComponent(format!("describe failed ({}): {}", f.kind, f.message))),
        };
        let description = check_description(raw)?;
        Ok(Arc::new(Compiled { digest, description, pre, invoke }))
    }

    fn scope(&self, call_id: String, adapter: String, redactor: Redactor, limits: &Limits) -> Arc<CallScope> {
        Arc::new(CallScope::new(call_id, adapter, limits.deadline, redactor, self.metrics.clone()))
    }

    /// Runs the adapter's own crmConfig validation.
    pub async fn validate_config(&self, adapter: &Compiled, crm_config: &Map<String, Value>) -> Result<(), HostError> {
        let json = Value::Object(crm_config.clone()).to_string();
        let redactor = Redactor::new(&adapter.description.secret_fields, crm_config);
        let scope = self.scope("validate".into(), adapter.description.name.clone(), redactor, &self.limits);
        match self.execute(&adapter.pre, &self.limits, EgressPolicy::default(), scope, Op::Validate(json)).await {
            Ok(OpResult::Validate(Ok(()))) => Ok(()),
            Ok(OpResult::Validate(Err(e))) => {
                // A config error's message already names the field (`crmConfig.token: ...`).
                let f = failure_from_wit(e);
                Err(HostError::InvalidConfig { field: f.field.filter(|s| !s.is_empty()), message: f.message })
            }
            Ok(_) => unreachable!("validate answers validate"),
            Err(f) => Err(HostError::InvalidConfig {
                field: None,
                message: format!("the adapter failed while validating crmConfig ({}): {}", f.kind, f.message),
            }),
        }
    }

    /// A scope for one call of `adapter` by a tenant whose secrets `redactor` knows.
    pub(crate) fn call_scope(&self, call_id: &str, adapter: &Compiled, redactor: Redactor, limits: &Limits) -> Arc<CallScope> {
        self.scope(call_id.to_string(), adapter.description.name.clone(), redactor, limits)
    }

    /// Runs one adapter function for one tenant under its limits. `Ok` is the crmData object.
    pub(crate) async fn invoke(
        &self,
        adapter: &Compiled,
        limits: &Limits,
        crm_config: &Map<String, Value>,
        func_id: &str,
        ctx: wit::CallContext,
        scope: Arc<CallScope>,
    ) -> Result<Map<String, Value>, CallFailure> {
        let policy = adapter.egress_policy(crm_config);
        let op = Op::Invoke(adapter.invoke, func_id.to_string(), Box::new(ctx));
        match self.execute(&adapter.pre, limits, policy, scope, op).await? {
            OpResult::Invoke(r) => r.map_err(failure_from_wit),
            _ => unreachable!("invoke answers invoke"),
        }
    }

    /// One execution of `func_id` with an empty chat and config under the host's limits:
    /// the host's own cost per call (store, instance, invoke, drop), as `cargo xtask bench`
    /// times it. The service never calls this.
    #[doc(hidden)]
    pub async fn invoke_bare(&self, adapter: &Compiled, func_id: &str) -> Result<Map<String, Value>, CallFailure> {
        let chat = wit::Chat {
            id: String::new(),
            phone: String::new(),
            title: None,
            agent: None,
            crm_data: "{}".into(),
            nodes: Vec::new(),
            messages: Vec::new(),
            url: None,
        };
        let ctx = wit::CallContext { project_id: String::new(), crm_config: "{}".into(), chat, params: "{}".into() };
        let scope = self.call_scope("bench", adapter, Redactor::default(), &self.limits);
        self.invoke(adapter, &self.limits, &Map::new(), func_id, ctx, scope).await
    }

    /// Hands a request the CRM sent to the platform to the tenant's adapter
    /// (`handle-webhook`): the answer for the CRM and the messages it carried.
    pub(crate) async fn handle_webhook(
        &self,
        adapter: &Compiled,
        limits: &Limits,
        project_id: &str,
        crm_config: &Map<String, Value>,
        request: WebhookRequest,
        scope: Arc<CallScope>,
    ) -> Result<WebhookOutcome, CallFailure> {
        let policy = adapter.egress_policy(crm_config);
        let request = wit::WebhookRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let op = Op::Webhook(project_id.to_string(), Value::Object(crm_config.clone()).to_string(), Box::new(request));
        match self.execute(&adapter.pre, limits, policy, scope, op).await? {
            OpResult::Webhook(Ok(out)) => {
                let messages = out
                    .messages
                    .into_iter()
                    .map(|m| {
                        let extra = match serde_json::from_str::<Value>(&m.extra) {
                            Ok(Value::Object(extra)) => extra,
                            _ if m.extra.trim().is_empty() => Map::new(),
                            _ => {
                                return Err(CallFailure::new(
                                    FailureKind::InvalidOutput,
                                    "the adapter returned an inbound message whose extra is not a JSON object",
                                ))
                            }
                        };
                        Ok(InboundMessage {
                            chat_id: m.chat_id,
                            phone: m.phone,
                            text: m.text,
                            author: m.author,
                            media: m
                                .media
                                .into_iter()
                                .map(|x| crate::chat::MediaJson { url: x.url, file_name: x.file_name, mime_type: x.mime_type })
                                .collect(),
                            extra,
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let r = out.response;
                Ok(WebhookOutcome { status: r.status, headers: r.headers, body: r.body, messages })
            }
            OpResult::Webhook(Err(e)) => Err(failure_from_wit(e)),
            _ => unreachable!("webhook answers webhook"),
        }
    }
}

/// A request a CRM sent to the platform, as the host hands it to the adapter.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the adapter made of a webhook: the answer for the CRM, and the messages it carried.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub messages: Vec<InboundMessage>,
}

/// A message a CRM pushed towards a chat.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundMessage {
    pub chat_id: Option<String>,
    pub phone: Option<String>,
    pub text: String,
    pub author: Option<String>,
    pub media: Vec<crate::chat::MediaJson>,
    pub extra: Map<String, Value>,
}

/// Where `invoke` is in the component (any crm:adapter/crm@0.1.x, as the bindings accept).
fn component_invoke_export(pre: &AdapterPre<HostState>) -> Result<ComponentExportIndex, HostError> {
    let component = pre.instance_pre().component();
    component
        .get_export_index(None, "crm:adapter/crm@0.1.0")
        .and_then(|crm| component.get_export_index(Some(&crm), "invoke"))
        .ok_or_else(|| HostError::WrongWorld("the component's crm export has no `invoke` function".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Instance, Module, Store};

    /// Raw wasm, as an attacker writes it: `mark` grows memory and leaves a marker in the
    /// initial page, in grown pages and in a table; `probe` reports anything of it it sees
    /// (after growing the same way, so grown pages are looked at too).
    const MARKER: &str = r#"(module
        (memory (export "memory") 1 16)
        (table 4 funcref)
        (func $marker (result i32) i32.const 0x5ec2e7)
        (elem declare func $marker)
        (func (export "mark")
            (drop (memory.grow (i32.const 3)))
            (i32.store (i32.const 1024) (i32.const 0x5ec2e7))
            (i32.store (i32.const 70000) (i32.const 0x5ec2e7))
            (i32.store (i32.const 250000) (i32.const 0x5ec2e7))
            (table.set (i32.const 2) (ref.func $marker)))
        (func (export "probe") (result i32)
            (local $seen i32)
            (local.set $seen (i32.ne (memory.size) (i32.const 1)))
            (drop (memory.grow (i32.const 3)))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 1024))))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 70000))))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 250000))))
            (i32.or (local.get $seen) (i32.eqz (ref.is_null (table.get (i32.const 2)))))))"#;

    #[tokio::test]
    async fn nothing_survives_in_a_reused_pool_slot() {
        let engine = Engine::new(&engine_config(false, Some(pooling_config(1)))).expect("engine with a one-slot pool");
        let module = Module::new(&engine, wat::parse_str(MARKER).unwrap()).unwrap();
        let store = || {
            let mut s = Store::new(&engine, ());
            s.set_epoch_deadline(u64::MAX / 2);
            s
        };
        async fn run<R: wasmtime::WasmResults + Send + Sync>(s: &mut Store<()>, i: &Instance, name: &str) -> R {
            i.get_typed_func::<(), R>(&mut *s, name).unwrap().call_async(&mut *s, ()).await.unwrap()
        }

        // Tenant A marks its instance; while it lives, the pool has no other slot.
        let mut a = store();
        let instance = Instance::new_async(&mut a, &module, &[]).await.expect("the slot is free");
        run::<()>(&mut a, &instance, "mark").await;
        assert_ne!(run::<i32>(&mut a, &instance, "probe").await, 0, "the probe sees a marker where there is one");
        let mut other = store();
        let e = Instance::new_async(&mut other, &module, &[]).await.expect_err("a one-slot pool holds one instance");
        assert!(e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some(), "{e:#}");
        drop(other);
        drop(a);

        // Tenant B gets the same slot (the only one), several times over.
        for _ in 0..3 {
            let mut b = store();
            let instance = Instance::new_async(&mut b, &module, &[]).await.expect("the slot is free again");
            let seen: i32 = run(&mut b, &instance, "probe").await;
            assert_eq!(seen, 0, "tenant B saw tenant A's marker (memory size, memory or table)");
            run::<()>(&mut b, &instance, "mark").await;
        }
    }

    #[test]
    fn the_compile_cache_is_keyed_by_the_engine_settings_that_shape_code() {
        let dir = std::env::temp_dir().join(format!("crm-cc-{}-{:?}", std::process::id(), std::thread::current().id()));
        let plain = Engine::new(&engine_config(false, Some(pooling_config(4)))).unwrap();
        let metered = Engine::new(&engine_config(true, Some(pooling_config(4)))).unwrap();
        let on_demand = Engine::new(&engine_config(false, None)).unwrap();
        let bytes = wat::parse_str("(component (core module))").unwrap();
        let cache = |e: &Engine| CompileCache::new(dir.clone(), e).unwrap();
        cache(&plain).put("sha256:00", &Component::new(&plain, &bytes).unwrap());
        // Fuel changes the code: a metered engine must compile its own.
        assert_eq!(cache(&metered).get(&metered, "sha256:00").1, crate::compile_cache::Lookup::Miss);
        assert_ne!(cache(&plain).path("sha256:00"), cache(&metered).path("sha256:00"));
        // The allocator does not: either may use the other's compilation.
        assert_eq!(cache(&on_demand).get(&on_demand, "sha256:00").1, crate::compile_cache::Lookup::Hit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pool_fits_the_largest_memory_a_tenant_may_get() {
        let mut limits = Limits::default();
        limits.memory_bytes = crate::limits::MAX_MEMORY_BYTES;
        Runtime::with_allocator(limits, OutboundConfig::default(), Allocator::Pooling).expect("pooling runtime");
    }
}
