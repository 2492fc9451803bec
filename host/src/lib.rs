//! `crm-host`: runs CRM adapter components for tenants.
//!
//! Data flow of a call (ARCHITECTURE.md): HTTP request ([`api`], caller identified by
//! [`auth`]) -> tenant and its version ([`service`]'s in-memory registry, built from the
//! [`store`]) -> a fresh wasm instance with the tenant's crmConfig under its [`limits`]
//! ([`runtime`]) -> outbound wasi-http requests ([`outbound`]: the [`egress`] policy,
//! routing, retries) -> crmData or a typed failure -> HTTP response; then the call's
//! [`trace`] is written (secrets [`redact`]ed) and its [`metrics`] counted. A [`replay`]
//! runs recorded calls through another version with the recording answering its requests.

pub mod api;
pub mod auth;
mod bindings;
mod chat;
pub mod cli;
pub mod compile_cache;
pub mod egress;
pub mod error;
mod failpoint;
#[cfg(test)]
mod fuzz;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod printed;
pub mod redact;
pub mod replay;
pub mod runtime;
pub mod service;
pub mod setup;
pub mod store;
pub mod time;
pub mod trace;
pub mod watch;

/// The host allocates and frees per call (bodies, JSON, traces, wasi-http resources) from
/// several threads: mimalloc's per-thread heaps cost less than glibc's arenas there
/// (BENCHMARKS.md, issue 18).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use error::{CallFailure, FailureKind, HostError};
pub use outbound::{OutboundConfig, RetryPolicy};
pub use runtime::{Limits, Runtime};
pub use service::{Host, HostOptions};

/// A poisoned lock only means another thread panicked while holding it; what these locks
/// guard (counters, lists, the registry) stays valid, so later requests go on instead of
/// panicking in turn.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
