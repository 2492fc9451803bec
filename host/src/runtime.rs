//! The wasmtime side. One [`Engine`]; each component compiled once per digest and
//! pre-instantiated; a fresh [`Store`] and instance for every call, so nothing is shared
//! between calls or tenants. Every call runs under a memory cap, a CPU deadline (epoch
//! interruption) and a wall-clock deadline, and its outbound requests go through
//! [`HostState::send_request`], which enforces the tenant's egress policy.

use crate::bindings::{wit, AdapterPre};
use crate::compile_cache::CompileCache;
use crate::egress::{EgressPolicy, OriginRule};
use crate::error::{CallFailure, FailureKind, HostError};
pub use crate::limits::Limits;
use crate::limits::MemoryCap;
use crate::metrics::{InFlight, Metrics};
use crate::outbound::{CallOutbound, OutboundConfig};
use crate::trace::{CallScope, Redactor};
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasData, Linker, ResourceTable, ResourceTableError};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::types::{FieldSizeLimitError, HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

/// How often the engine's epoch advances; the CPU deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    outbound: Arc<OutboundConfig>,
    /// Compiled code on disk, so a restart does not recompile.
    compile_cache: Option<CompileCache>,
    metrics: Arc<Metrics>,
}

/// Interfaces a component may import. The adapter world needs wasi-http and what it uses;
/// the rest is the set every `wasm32-wasip2` std program imports, linked to an empty
/// context (no env vars, no args, no preopened dirs, stdin closed, stdout/stderr discarded)
/// so third-party components built for wasip2 load without gaining any capability.
/// Everything else (sockets above all) is refused at deploy.
const ALLOWED_IMPORTS: &[&str] = &[
    // the adapter world
    "wasi:http/outgoing-handler",
    "wasi:http/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    // inert wasip2 baseline
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The export every adapter must provide (any 0.1.x).
const ADAPTER_EXPORT: &str = "crm:adapter/crm@0.1.";

impl Runtime {
    pub fn new(limits: Limits, outbound: OutboundConfig) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).async_support(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        let linker = adapter_linker(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            limits,
            outbound: Arc::new(outbound),
            compile_cache: None,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Keeps compiled code in `dir` (see [`CompileCache`]).
    pub fn with_compile_cache(mut self, dir: std::path::PathBuf) -> std::io::Result<Self> {
        self.compile_cache = Some(CompileCache::new(dir, &self.engine)?);
        Ok(self)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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
        let engine = self.engine.clone();
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

        let scope = self.scope("deploy".into(), "(describe)".into(), Redactor::default());
        let raw = match self.execute(&pre, EgressPolicy::default(), scope, Op::Describe).await {
            Ok(OpResult::Describe(d)) => d,
            Ok(_) => unreachable!("describe answers describe"),
            Err(f) => return Err(HostError::InvalidComponent(format!("describe failed ({}): {}", f.kind, f.message))),
        };
        let description = check_description(raw)?;
        Ok(Arc::new(Compiled { digest, description, pre }))
    }

    fn scope(&self, call_id: String, adapter: String, redactor: Redactor) -> Arc<CallScope> {
        Arc::new(CallScope::new(call_id, adapter, self.limits.deadline, redactor, self.metrics.clone()))
    }

    /// Runs the adapter's own crmConfig validation.
    pub async fn validate_config(&self, adapter: &Compiled, crm_config: &Map<String, Value>) -> Result<(), HostError> {
        let json = Value::Object(crm_config.clone()).to_string();
        let redactor = Redactor::new(&adapter.description.secret_fields, crm_config);
        let scope = self.scope("validate".into(), adapter.description.name.clone(), redactor);
        match self.execute(&adapter.pre, EgressPolicy::default(), scope, Op::Validate(json)).await {
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
    pub(crate) fn call_scope(&self, call_id: &str, adapter: &Compiled, redactor: Redactor) -> Arc<CallScope> {
        self.scope(call_id.to_string(), adapter.description.name.clone(), redactor)
    }

    /// Runs one adapter function for one tenant. `Ok` is the crmData object.
    pub(crate) async fn invoke(
        &self,
        adapter: &Compiled,
        crm_config: &Map<String, Value>,
        func_id: &str,
        ctx: wit::CallContext,
        scope: Arc<CallScope>,
    ) -> Result<Map<String, Value>, CallFailure> {
        let policy = adapter.egress_policy(crm_config);
        match self.execute(&adapter.pre, policy, scope, Op::Invoke(func_id.to_string(), Box::new(ctx))).await? {
            OpResult::Invoke(Ok(json)) if json.len() > self.limits.max_crm_data_bytes => Err(CallFailure::new(
                FailureKind::InvalidOutput,
                format!(
                    "the adapter returned {} bytes of crmData, more than the {} bytes allowed (--max-crm-data-bytes)",
                    json.len(),
                    self.limits.max_crm_data_bytes
                ),
            )),
            OpResult::Invoke(Ok(json)) => match serde_json::from_str::<Value>(&json) {
                Ok(Value::Object(data)) => Ok(data),
                _ => Err(CallFailure::new(
                    FailureKind::InvalidOutput,
                    "the adapter returned crmData that is not a JSON object",
                )),
            },
            OpResult::Invoke(Err(e)) => Err(failure_from_wit(e)),
            _ => unreachable!("invoke answers invoke"),
        }
    }

    /// Hands a request the CRM sent to the platform to the tenant's adapter
    /// (`handle-webhook`): the answer for the CRM and the messages it carried.
    pub(crate) async fn handle_webhook(
        &self,
        adapter: &Compiled,
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
        match self.execute(&adapter.pre, policy, scope, op).await? {
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

    fn new_store(&self, policy: EgressPolicy, scope: Arc<CallScope>) -> Store<HostState> {
        let state = HostState {
            // Nothing granted: no env, args or preopens; stdin closed; stdout/stderr discarded.
            wasi: WasiCtxBuilder::new().build(),
            table: {
                let mut t = ResourceTable::new();
                t.set_max_capacity(self.limits.max_resources);
                t
            },
            http: {
                let mut h = WasiHttpCtx::new();
                h.set_field_size_limit(self.limits.max_header_bytes);
                h
            },
            max_header_entries: self.limits.max_header_entries,
            memory: MemoryCap::new(self.limits.memory_bytes),
            outbound: CallOutbound {
                policy,
                config: self.outbound.clone(),
                request_timeout: self.limits.request_timeout,
                max_response_bytes: self.limits.max_response_bytes,
                max_requests: self.limits.max_outbound_requests,
                scope,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // Yield to the executor on every tick: a guest spinning on the CPU must not hold a
        // worker thread (other tenants' calls, and this call's wall-clock timeout, run in
        // between). Past the deadline, trap.
        let started = std::time::Instant::now();
        let deadline = self.limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= deadline {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    async fn execute(
        &self,
        pre: &AdapterPre<HostState>,
        policy: EgressPolicy,
        scope: Arc<CallScope>,
        op: Op,
    ) -> Result<OpResult, CallFailure> {
        let _in_flight = InFlight::enter(&self.metrics.instances_in_flight);
        let mut store = self.new_store(policy, scope.clone());
        let run = async {
            let adapter = pre.instantiate_async(&mut store).await?;
            let crm = adapter.crm_adapter_crm();
            anyhow::Ok(match op {
                Op::Describe => OpResult::Describe(crm.call_describe(&mut store).await?),
                Op::Validate(c) => OpResult::Validate(crm.call_validate_config(&mut store, &c).await?),
                Op::Invoke(f, ctx) => OpResult::Invoke(crm.call_invoke(&mut store, &f, &ctx).await?),
                Op::Webhook(p, c, r) => OpResult::Webhook(crm.call_handle_webhook(&mut store, &p, &c, &r).await?),
            })
        };
        let outcome = tokio::time::timeout(self.limits.deadline, run).await;
        let deadline = || {
            CallFailure::new(
                FailureKind::DeadlineExceeded,
                format!("the adapter did not finish within the {} ms call deadline", self.limits.deadline.as_millis()),
            )
        };
        if let Some((kind, why)) = scope.limit_hit() {
            // Whatever the adapter made of the refusal, the call ends on the limit.
            return Err(CallFailure::new(kind, why));
        }
        match outcome {
            Err(_) => Err(deadline()),
            Ok(Err(e)) if store.data().memory.hit => Err(CallFailure::new(
                FailureKind::MemoryLimitExceeded,
                format!(
                    "the adapter needed more than its {} MiB memory cap and was stopped ({})",
                    self.limits.memory_bytes >> 20,
                    trap_summary(&e)
                ),
            )),
            Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Err(deadline()),
            Ok(Err(e)) if matches!(e.downcast_ref::<ResourceTableError>(), Some(ResourceTableError::Full)) => {
                Err(CallFailure::new(
                    FailureKind::ResourceLimitExceeded,
                    format!(
                        "the adapter held more than the {} host resources (wasi-http fields, requests, bodies, streams) a call may hold (--max-resources)",
                        self.limits.max_resources
                    ),
                ))
            }
            Ok(Err(e)) if e.downcast_ref::<FieldSizeLimitError>().is_some() => Err(CallFailure::new(
                FailureKind::ResourceLimitExceeded,
                format!(
                    "the adapter built a header map larger than the {} bytes allowed (--max-header-bytes)",
                    self.limits.max_header_bytes
                ),
            )),
            Ok(Err(e)) => Err(CallFailure::new(FailureKind::Trap, format!("the adapter crashed: {}", trap_summary(&e)))),
            Ok(Ok(OpResult::Invoke(Err(wit::CrmError::EgressDenied(m))))) => {
                // The guest only learns "denied"; the host knows why.
                let why = scope.denials().join("; ");
                let message = if why.is_empty() { m } else { why };
                Ok(OpResult::Invoke(Err(wit::CrmError::EgressDenied(message))))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }
}

enum Op {
    Describe,
    Validate(String),
    Invoke(String, Box<wit::CallContext>),
    /// project id, crmConfig JSON, the request
    Webhook(String, String, Box<wit::WebhookRequest>),
}

enum OpResult {
    Describe(wit::Description),
    Validate(Result<(), wit::CrmError>),
    Invoke(Result<String, wit::CrmError>),
    Webhook(Result<wit::WebhookOutcome, wit::CrmError>),
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

fn trap_summary(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "wasm `unreachable` (usually a panic in the adapter)".to_string(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    text.chars().take(1000).collect()
}

/// `\0asm`, then a version and a layer: layer 1 is a component, layer 0 a core module.
fn check_header(bytes: &[u8]) -> Result<(), HostError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(HostError::InvalidComponent("the body is not WebAssembly (no \\0asm header)".into()));
    }
    if bytes[6..8] == [0, 0] {
        return Err(HostError::InvalidComponent(
            "the body is a core wasm module, not a component: turn it into one \
             (`cargo xtask plugins` does, or `wasm-tools component new`)"
                .into(),
        ));
    }
    Ok(())
}

fn check_imports_exports(engine: &Engine, component: &Component) -> Result<(), HostError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let interface = name.split('@').next().unwrap_or(name);
        let version_ok = name.split_once('@').is_some_and(|(_, v)| v.starts_with("0.2."));
        if !ALLOWED_IMPORTS.contains(&interface) || !version_ok {
            return Err(HostError::ForbiddenImport {
                import: name.to_string(),
                message: format!(
                    "the component imports `{name}`, which adapters may not use: adapters reach their CRM \
                     only through wasi:http/outgoing-handler@0.2.x (the inert wasip2 std imports are also \
                     accepted; sockets, and anything else, are not)"
                ),
            });
        }
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    if !exports.iter().any(|e| e.starts_with(ADAPTER_EXPORT)) {
        return Err(HostError::WrongWorld(format!(
            "the component does not export crm:adapter/crm@0.1.x (it exports: {})",
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
        )));
    }
    Ok(())
}

fn check_description(d: wit::Description) -> Result<Description, HostError> {
    let bad = |m: String| HostError::InvalidComponent(format!("describe returned an invalid description: {m}"));
    let name_ok = !d.name.is_empty()
        && d.name.len() <= 64
        && d.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(bad(format!("name '{}' must be 1-64 chars of a-z, 0-9, '-', '_'", d.name)));
    }
    if d.operations.is_empty() {
        return Err(bad("no operations".into()));
    }
    let config_schema: Value =
        serde_json::from_str(&d.config_schema).map_err(|e| bad(format!("config-schema is not JSON: {e}")))?;
    if !config_schema.is_object() {
        return Err(bad("config-schema is not a JSON object".into()));
    }
    let outbound = d.outbound_hosts.iter().map(|h| OriginRule::parse(h)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    Ok(Description {
        name: d.name,
        version: d.version,
        operations: d.operations,
        config_schema,
        secret_fields: d.secret_fields,
        endpoint_fields: d.endpoint_fields,
        outbound_hosts: d.outbound_hosts,
        outbound,
    })
}

pub(crate) fn failure_from_wit(e: wit::CrmError) -> CallFailure {
    use wit::CrmError as E;
    use FailureKind as K;
    let simple = CallFailure::new;
    match e {
        E::Config(f) => CallFailure {
            field: Some(f.field.clone()),
            ..CallFailure::new(K::Config, format!("crmConfig.{}: {}", f.field, f.message))
        },
        E::InvalidParams(f) => CallFailure {
            field: Some(f.field.clone()),
            ..CallFailure::new(K::InvalidParams, format!("{}: {}", f.field, f.message))
        },
        E::NotFound(m) => simple(K::NotFound, m),
        E::Ambiguous(m) => simple(K::Ambiguous, m),
        E::Unauthorized(m) => simple(K::Unauthorized, m),
        E::RateLimited(r) => CallFailure { retry_after_ms: r.retry_after_ms, ..CallFailure::new(K::RateLimited, r.message) },
        E::Upstream(u) => CallFailure {
            status: Some(u.status),
            body_excerpt: Some(u.body_excerpt),
            ..CallFailure::new(K::Upstream, format!("CRM answered {}: {}", u.status, u.message))
        },
        E::Unsupported(m) => simple(K::Unsupported, m),
        E::EgressDenied(m) => simple(K::EgressDenied, m),
        E::Timeout(m) => simple(K::Timeout, m),
        E::Transport(m) => simple(K::Transport, m),
        E::Internal(m) => simple(K::Internal, m),
    }
}

/// Links the adapter world's imports and the inert wasip2 baseline; nothing else.
fn adapter_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    let mut linker = Linker::<HostState>::new(engine);
    let l = &mut linker;
    wasmtime_wasi_io::add_to_linker_async(l)?;
    wasmtime_wasi_http::add_only_http_to_linker_async(l)?;
    clocks::monotonic_clock::add_to_linker::<_, Wasi>(l, wasi_view)?;
    clocks::wall_clock::add_to_linker::<_, Wasi>(l, wasi_view)?;
    random::random::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    cli::environment::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::exit::add_to_linker::<_, Wasi>(l, &Default::default(), wasi_view)?;
    cli::stdin::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::stdout::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::stderr::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_input::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_output::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stdin::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stdout::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stderr::add_to_linker::<_, Wasi>(l, wasi_view)?;
    filesystem::types::add_to_linker::<_, Wasi>(l, wasi_view)?;
    filesystem::preopens::add_to_linker::<_, Wasi>(l, wasi_view)?;
    Ok(linker)
}

fn wasi_view(s: &mut HostState) -> WasiCtxView<'_> {
    WasiView::ctx(s)
}

struct Wasi;
impl HasData for Wasi {
    type Data<'a> = WasiCtxView<'a>;
}

struct Random;
impl HasData for Random {
    type Data<'a> = &'a mut wasmtime_wasi::random::WasiRandomCtx;
}

/// One call's store data.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    memory: MemoryCap,
    outbound: CallOutbound,
    max_header_entries: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_io::IoView for HostState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiHttpView for HostState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Every header entry a guest creates passes here first: past the per-call count it is
    /// refused (the guest sees `forbidden`, and the call ends on the limit), before a flood of
    /// names can reach `http::HeaderMap`'s own capacity panic.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        !self.outbound.scope.take_header(self.max_header_entries)
            || wasmtime_wasi_http::types::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    /// The only way out of the sandbox; see [`crate::outbound`].
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::body::HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        self.outbound.send(request, config)
    }
}
