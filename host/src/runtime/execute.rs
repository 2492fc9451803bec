//! One execution of one component function: a fresh store under the call's limits, a fresh
//! instance, the call, and the classification of how it ended (a limit, a trap, or the
//! adapter's own answer).

use super::state::HostState;
use super::Runtime;
use crate::bindings::{wit, Adapter, AdapterPre};
use crate::egress::EgressPolicy;
use crate::error::{CallFailure, FailureKind};
use crate::limits::{Limits, MemoryCap};
use crate::metrics::InFlight;
use crate::outbound::CallOutbound;
use crate::trace::CallScope;
use serde_json::{Map, Value};
use std::sync::Arc;
use wasmtime::component::{ComponentExportIndex, Instance, ResourceTable, ResourceTableError, WasmStr};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::types::FieldSizeLimitError;
use wasmtime_wasi_http::WasiHttpCtx;

/// What an execution needs of the runtime, owned, so that it can run on the guest pool.
#[derive(Clone)]
pub(super) struct Executor {
    pub engine: wasmtime::Engine,
    pub outbound: Arc<crate::outbound::OutboundConfig>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the engine counts fuel (`--fuel`): then every store gets a budget.
    pub fuel_metering: bool,
}

impl Runtime {
    /// Runs `op` in a fresh instance: on the guest threads when the host has them (so a
    /// guest burning CPU competes with other guests, never with the threads that serve the
    /// API), otherwise on the caller's runtime.
    pub(super) async fn execute(
        &self,
        pre: &AdapterPre<HostState>,
        limits: &Limits,
        policy: EgressPolicy,
        scope: Arc<CallScope>,
        op: Op,
    ) -> Result<OpResult, CallFailure> {
        let run = self.executor.clone().execute(pre.clone(), limits.clone(), policy, scope, op);
        let Some(pool) = &self.guests else { return run.await };
        // If the caller goes away (the client hung up), the execution goes too, at its next
        // yield, as it would on the caller's own runtime: its admission place is gone.
        let mut task = AbortOnDrop(pool.handle().spawn(run));
        (&mut task.0).await.unwrap_or_else(|e| {
            tracing::error!("an execution failed inside the host: {e}");
            Err(CallFailure::new(FailureKind::Internal, "the host failed while running the adapter; the failure is logged"))
        })
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Executor {
    fn new_store(&self, limits: &Limits, policy: EgressPolicy, scope: Arc<CallScope>) -> Store<HostState> {
        let state = HostState {
            // Nothing granted: no env, args or preopens; stdin closed; stdout/stderr discarded.
            wasi: WasiCtxBuilder::new().build(),
            table: {
                let mut t = ResourceTable::new();
                t.set_max_capacity(limits.max_resources);
                t
            },
            http: {
                let mut h = WasiHttpCtx::new();
                h.set_field_size_limit(limits.max_header_bytes);
                h
            },
            max_header_entries: limits.max_header_entries,
            memory: MemoryCap::new(limits.memory_bytes),
            outbound: CallOutbound {
                policy,
                config: self.outbound.clone(),
                request_timeout: limits.request_timeout,
                max_response_bytes: limits.max_response_bytes,
                max_requests: limits.max_outbound_requests,
                scope,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        if self.fuel_metering {
            // Metering is engine-wide; a tenant without a budget gets one it cannot spend.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        // Yield to the executor on every tick: a guest spinning on the CPU must not hold a
        // worker thread (other tenants' calls, and this call's wall-clock timeout, run in
        // between). Past the deadline, trap.
        let started = std::time::Instant::now();
        let deadline = limits.deadline;
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
        self,
        pre: AdapterPre<HostState>,
        limits: Limits,
        policy: EgressPolicy,
        scope: Arc<CallScope>,
        op: Op,
    ) -> Result<OpResult, CallFailure> {
        let limits = &limits;
        let _in_flight = InFlight::enter(&self.metrics.instances_in_flight);
        let mut store = self.new_store(limits, policy, scope.clone());
        let run = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            if let Op::Invoke(export, f, ctx) = &op {
                return invoke_checked(&mut store, &instance, export, f, ctx, limits.max_crm_data_bytes).await;
            }
            let adapter = Adapter::new(&mut store, &instance)?;
            let crm = adapter.crm_adapter_crm();
            anyhow::Ok(match op {
                Op::Describe => OpResult::Describe(crm.call_describe(&mut store).await?),
                Op::Validate(c) => OpResult::Validate(crm.call_validate_config(&mut store, &c).await?),
                Op::Webhook(p, c, r) => OpResult::Webhook(crm.call_handle_webhook(&mut store, &p, &c, &r).await?),
                Op::Invoke(..) => unreachable!("handled above"),
            })
        };
        let outcome = tokio::time::timeout(limits.deadline, run).await;
        let deadline = || {
            CallFailure::new(
                FailureKind::DeadlineExceeded,
                format!("the adapter did not finish within the {} ms call deadline", limits.deadline.as_millis()),
            )
        };
        if let Some((kind, why)) = scope.limit_hit() {
            // Whatever the adapter made of the refusal, the call ends on the limit.
            return Err(CallFailure::new(kind, why));
        }
        let denials = scope.denials();
        if !denials.is_empty() {
            // A denied request is never part of a correct adapter's work: whatever the guest
            // made of it (it only learns "denied"), the call ends there, saying why.
            return Err(CallFailure::new(FailureKind::EgressDenied, denials.join("; ")));
        }
        match outcome {
            Err(_) => Err(deadline()),
            Ok(Err(e)) if store.data().memory.hit => Err(CallFailure::new(
                FailureKind::MemoryLimitExceeded,
                format!(
                    "the adapter needed more than its {} MiB memory cap and was stopped ({})",
                    limits.memory_bytes >> 20,
                    trap_summary(&e)
                ),
            )),
            Ok(Err(e)) => Err(classify(e, limits).unwrap_or_else(deadline)),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// How an execution that did not return ended; `None` for the deadline.
fn classify(e: anyhow::Error, limits: &Limits) -> Option<CallFailure> {
    let e = match e.downcast::<Refused>() {
        Ok(Refused(f)) => return Some(f),
        Err(e) => e,
    };
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return Some(CallFailure::new(
            FailureKind::RateLimited,
            format!("the host is running as many instances as its pool holds ({e}); try again shortly (--max-instances)"),
        ));
    }
    Some(match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return None,
        Some(Trap::OutOfFuel) => CallFailure::new(
            FailureKind::FuelExhausted,
            format!(
                "the adapter used up its budget of {} fuel units (wasm instructions) and was stopped (--fuel)",
                limits.fuel.unwrap_or(0)
            ),
        ),
        Some(Trap::StackOverflow) => CallFailure::new(
            FailureKind::Trap,
            "the adapter crashed: its wasm call stack overflowed (unbounded recursion?)",
        ),
        _ if matches!(e.downcast_ref::<ResourceTableError>(), Some(ResourceTableError::Full)) => CallFailure::new(
            FailureKind::ResourceLimitExceeded,
            format!(
                "the adapter held more than the {} host resources (wasi-http fields, requests, bodies, streams) a call may hold (--max-resources)",
                limits.max_resources
            ),
        ),
        _ if e.downcast_ref::<FieldSizeLimitError>().is_some() => CallFailure::new(
            FailureKind::ResourceLimitExceeded,
            format!("the adapter built a header map larger than the {} bytes allowed (--max-header-bytes)", limits.max_header_bytes),
        ),
        _ => CallFailure::new(FailureKind::Trap, format!("the adapter crashed: {}", trap_summary(&e))),
    })
}

/// An answer the host refuses to take from the guest, raised inside the run so that the
/// instance's memory is still there to look at.
#[derive(Debug)]
struct Refused(CallFailure);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Refused {}

/// `invoke`, with its crmData lifted lazily: the string stays in guest memory until its size
/// is known to be within the cap, and is parsed from there, never copied whole first.
async fn invoke_checked(
    store: &mut Store<HostState>,
    instance: &Instance,
    export: &ComponentExportIndex,
    func_id: &str,
    ctx: &wit::CallContext,
    max_bytes: usize,
) -> anyhow::Result<OpResult> {
    let func = instance
        .get_typed_func::<(&str, &wit::CallContext), (Result<WasmStr, wit::CrmError>,)>(&mut *store, export)?;
    let (result,) = func.call_async(&mut *store, (func_id, ctx)).await?;
    let out = match result {
        Err(e) => Err(e),
        Ok(text) => {
            let text = text.to_str(&*store)?;
            if text.len() > max_bytes {
                return Err(Refused(CallFailure::new(
                    FailureKind::InvalidOutput,
                    format!(
                        "the adapter returned {} bytes of crmData, more than the {max_bytes} bytes allowed (--max-crm-data-bytes)",
                        text.len()
                    ),
                ))
                .into());
            }
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(data)) => Ok(data),
                _ => {
                    return Err(Refused(CallFailure::new(
                        FailureKind::InvalidOutput,
                        "the adapter returned crmData that is not a JSON object",
                    ))
                    .into())
                }
            }
        }
    };
    func.post_return_async(&mut *store).await?;
    Ok(OpResult::Invoke(out))
}

pub(super) enum Op {
    Describe,
    Validate(String),
    /// the export's index, the func_id, the context
    Invoke(ComponentExportIndex, String, Box<wit::CallContext>),
    /// project id, crmConfig JSON, the request
    Webhook(String, String, Box<wit::WebhookRequest>),
}

pub(super) enum OpResult {
    Describe(wit::Description),
    Validate(Result<(), wit::CrmError>),
    Invoke(Result<Map<String, Value>, wit::CrmError>),
    Webhook(Result<wit::WebhookOutcome, wit::CrmError>),
}

fn trap_summary(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "wasm `unreachable` (usually a panic in the adapter)".to_string(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    text.chars().take(1000).collect()
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

