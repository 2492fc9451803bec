//! `crm-host`: runs CRM adapter components for tenants.
//!
//! Data flow of a call (see ARCHITECTURE.md): HTTP request ([`api`]) -> tenant and active
//! adapter ([`service`], [`registry`]) -> fresh wasm instance with the tenant's crmConfig
//! ([`runtime`]) -> outbound wasi-http requests, filtered by [`egress`] -> crmData or a
//! typed failure -> HTTP response.

pub mod api;
mod bindings;
mod chat;
pub mod cli;
pub mod egress;
pub mod error;
pub mod registry;
pub mod runtime;
pub mod service;

pub use error::{CallFailure, HostError};
pub use runtime::{Limits, OutboundConfig, Runtime};
pub use service::Host;
