//! `crm-host`: runs CRM adapter components for tenants.
//!
//! Data flow of a call (see ARCHITECTURE.md): HTTP request ([`api`], caller identified by
//! [`auth`]) -> tenant and its version ([`service`]'s in-memory view of the [`store`]) ->
//! fresh wasm instance with the tenant's crmConfig ([`runtime`]) -> outbound wasi-http
//! requests ([`outbound`]: [`egress`] policy, routing, retries) -> crmData or a typed
//! failure -> HTTP response; the call's [`trace`] is recorded after it, [`metrics`] counted.

pub mod api;
pub mod auth;
mod bindings;
mod chat;
pub mod cli;
pub mod compile_cache;
pub mod egress;
pub mod error;
pub mod limits;
mod failpoint;
#[cfg(test)]
mod fuzz;
pub mod metrics;
pub mod outbound;
pub mod runtime;
pub mod service;
pub mod store;
pub mod trace;
pub mod watch;

pub use error::{CallFailure, FailureKind, HostError};
pub use outbound::{OutboundConfig, RetryPolicy};
pub use runtime::{Limits, Runtime};
pub use service::{Host, HostOptions};
