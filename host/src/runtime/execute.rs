//! One execution: a fresh store under the call's limits, a fresh instance, whatever the
//! caller runs in it (one export; see `exports.rs`), and the classification of how it ended
//! (a limit, a trap, or the adapter's own answer). Generic over what is called, in the
//! manner of Zed's `WasmExtension::call`: the closure gets the store and the instance.

use super::scope::CallScope;
use super::state::{CallHooks, HostState};
use super::Runtime;
use crate::bindings::AdapterPre;
use crate::egress::EgressPolicy;
use crate::error::{CallFailure, FailureKind};
use crate::limits::{Limits, MemoryCap};
use crate::metrics::InFlight;
use crate::outbound::CallOutbound;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wasmtime::component::{Instance, ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::FieldMapError;
use wasmtime_wasi_http::WasiHttpCtx;

/// What an execution needs of the runtime, owned, so that it can run on the guest pool.
#[derive(Clone)]
pub(super) struct Executor {
    pub engine: wasmtime::Engine,
    pub outbound: Arc<crate::outbound::OutboundConfig>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the engine counts fuel (`--fuel`): then every store gets a budget.
    pub fuel_metering: bool,
    /// Executions that have answered and whose slots are being reset.
    pub resetting: Arc<AtomicUsize>,
}

/// At most this many slots are reset after their answers have gone (the others before): the
/// pool has room for them beyond the admitted calls (`POOL_HEADROOM`).
pub(super) const RESETTING_MAX: usize = 16;

impl Runtime {
    /// Runs `call` in a fresh instance: on the guest threads when the host has them (so a
    /// guest burning CPU competes with other guests, never with the threads that serve the
    /// API), otherwise on the caller's runtime.
    pub(super) async fn execute<T, F>(
        &self,
        pre: &AdapterPre<HostState>,
        limits: &Limits,
        policy: EgressPolicy,
        scope: Arc<CallScope>,
        call: F,
    ) -> Result<T, CallFailure>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Store<HostState>, &'a Instance) -> BoxFuture<'a, anyhow::Result<T>> + Send + 'static,
    {
        let executor = self.executor.clone();
        let Some(pool) = &self.guests else {
            let mut answer = None;
            executor.run(pre.clone(), limits.clone(), policy, scope, call, |a| answer = Some(a)).await;
            return answer.expect("an execution always delivers its answer");
        };
        // If the caller goes away (the client hung up), the execution goes too, at its next
        // yield, as it would on the caller's own runtime: its admission place is gone.
        let (thread, placed) = pool.place();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pre, limits) = (pre.clone(), limits.clone());
        let mut task = AbortOnDrop(thread.spawn(async move {
            // The answer goes back before the instance's slot is reset, which happens on
            // this thread while the caller's thread writes the answer out. The thread counts
            // as free from then on: the tenant's next call goes to the same thread, which
            // holds its keep-alive connection, and waits for the reset only there.
            executor
                .run(pre, limits, policy, scope, call, |a| {
                    drop(placed);
                    drop(tx.send(a));
                    super::spin::SPIN.answer_sent();
                })
                .await;
        }));
        match rx.await {
            Ok(answer) => answer,
            Err(_) => {
                let why = match (&mut task.0).await {
                    Err(e) => e.to_string(),
                    Ok(()) => "it ended without an answer".to_string(),
                };
                tracing::error!("an execution failed inside the host: {why}");
                Err(CallFailure::new(FailureKind::Internal, "the host failed while running the adapter; the failure is logged"))
            }
        }
    }
}

/// A clock that always reads one time (Unix ms): a call is repeatable, and a replay gives it
/// the recorded call's time. Waiting still works: wasmtime-wasi sleeps for the difference
/// between a deadline and this time, on the host's own clock.
struct PinnedClock(i64);

impl wasmtime_wasi::HostMonotonicClock for PinnedClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0).unwrap_or(0).saturating_mul(1_000_000)
    }
}

impl wasmtime_wasi::HostWallClock for PinnedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
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
            // Both clocks read the execution's own time, one time for all of it.
            wasi: WasiCtxBuilder::new().wall_clock(PinnedClock(scope.wall_ms)).monotonic_clock(PinnedClock(scope.wall_ms)).build(),
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
            memory: MemoryCap::new(limits.memory_bytes),
            hooks: CallHooks {
                max_header_entries: limits.max_header_entries,
                outbound: CallOutbound {
                    policy,
                    config: self.outbound.clone(),
                    request_timeout: limits.request_timeout,
                    max_response_bytes: limits.max_response_bytes,
                    max_requests: limits.max_outbound_requests,
                    max_held_bytes: limits.max_outbound_bytes,
                    scope,
                },
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

    /// The execution itself, owning all it needs (it may run on the guest pool). Its answer
    /// goes to `deliver`, as a rule before the store, and with it the instance's slot, is
    /// dropped: the slot's reset is then no part of the call's latency. The caller's admission
    /// place goes with the answer, so the pool keeps room for the slots still being reset
    /// ([`RESETTING_MAX`], counted in `POOL_HEADROOM`).
    async fn run<T, F, D>(
        self,
        pre: AdapterPre<HostState>,
        limits: Limits,
        policy: EgressPolicy,
        scope: Arc<CallScope>,
        call: F,
        deliver: D,
    ) where
        F: for<'a> FnOnce(&'a mut Store<HostState>, &'a Instance) -> BoxFuture<'a, anyhow::Result<T>>,
        D: FnOnce(Result<T, CallFailure>),
    {
        let in_flight = InFlight::enter(&self.metrics.instances_in_flight);
        self.metrics.instances.inc();
        let mut store = self.new_store(&limits, policy, scope.clone());
        let answer = Self::attempt(&mut store, &pre, &limits, &scope, call).await;
        // The instance has stopped running: what is left is its slot's reset, and whoever
        // reads the gauge after the answer must see it gone.
        drop(in_flight);
        if self.resetting.fetch_add(1, Ordering::AcqRel) < RESETTING_MAX {
            deliver(answer);
            drop(store);
        } else {
            drop(store);
            deliver(answer);
        }
        self.resetting.fetch_sub(1, Ordering::AcqRel);
    }

    async fn attempt<T, F>(
        store: &mut Store<HostState>,
        pre: &AdapterPre<HostState>,
        limits: &Limits,
        scope: &CallScope,
        call: F,
    ) -> Result<T, CallFailure>
    where
        F: for<'a> FnOnce(&'a mut Store<HostState>, &'a Instance) -> BoxFuture<'a, anyhow::Result<T>>,
    {
        let run = async {
            let instance = pre.instance_pre().instantiate_async(&mut *store).await?;
            call(store, &instance).await
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
        _ if e.downcast_ref::<FieldMapError>().is_some_and(|e| matches!(e, FieldMapError::TotalSizeTooBig)) => CallFailure::new(
            FailureKind::ResourceLimitExceeded,
            format!("the adapter built a header map larger than the {} bytes allowed (--max-header-bytes)", limits.max_header_bytes),
        ),
        _ => CallFailure::new(FailureKind::Trap, format!("the adapter crashed: {}", trap_summary(&e))),
    })
}

/// An answer the host refuses to take from the guest, raised inside the run so that the
/// instance's memory is still there to look at.
#[derive(Debug)]
pub(super) struct Refused(pub CallFailure);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Refused {}

fn trap_summary(e: &anyhow::Error) -> String {
    let text = match e.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "wasm `unreachable` (usually a panic in the adapter)".to_string(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    text.chars().take(1000).collect()
}
