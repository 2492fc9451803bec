#![deny(missing_docs)]
//! The SDK for CRM adapters.
//!
//! An adapter is mapping logic only: it declares an [`AdapterSpec`], implements [`Adapter`],
//! and registers itself with [`export_adapter!`]. The same code runs
//! - inside a wasm component, where requests go out through wasi-http and the host decides
//!   what may be reached; and
//! - natively, with [`native::NativeTransport`] (feature `native`) or a
//!   [`testing::Recorder`], for fast unit tests and native-vs-wasm benchmarks.
//!
//! The guide (the model, a JSON and a form CRM, testing, deploying) is the crate's README.md.

#[cfg(all(target_arch = "wasm32", target_os = "unknown", feature = "allocator"))]
mod alloc;
#[cfg(any(test, all(target_arch = "wasm32", target_os = "unknown", feature = "allocator")))]
mod arena;
mod chat;
mod error;
mod http;
pub mod json;
mod phone;
mod spec;
mod time;
mod values;
mod webhook;

#[cfg(feature = "native")]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use chat::{Agent, Call, CallBody, Chat, Direction, Media, Message, Transcript};
pub use error::{excerpt, CrmError, BODY_EXCERPT_BYTES};
pub use http::{
    constant_time_eq, digits_only, join_path, join_segments, ErrorMapping, Form, Method, Request, Response, Transport, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use phone::Phone;
pub use time::Timestamp;
pub use spec::{AdapterSpec, ConfigField, FieldKind};
pub use values::{form_text, scalar_text, split_list, truthy, Config, Origin, Params, Values};
pub use webhook::{InboundMessage, WebhookOutcome, WebhookRequest, WebhookResponse};

pub use serde_json::{self, json, Map, Value};
/// What URL helpers take and return ([`Values::url`], [`join_path`]).
pub use url::Url;

/// crmData: the JSON object a successful function returns.
pub type CrmData = Map<String, Value>;

/// A CRM adapter. Implementations hold no state between calls: every call gets a fresh
/// instance in the host.
pub trait Adapter: Default {
    /// What the adapter declares: name, version, functions, crmConfig fields, origins.
    const SPEC: AdapterSpec;

    /// Checks a tenant's crmConfig without calling the CRM. The default checks the declared
    /// fields; override to add cross-field rules (and call `Self::SPEC.validate` first).
    fn validate_config(&self, config: &Config) -> Result<(), CrmError> {
        Self::SPEC.validate(config)
    }

    /// Runs `func_id` (one of `SPEC.operations`; the config is already validated).
    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError>;

    /// Handles a request the CRM sent to the platform.
    fn handle_webhook(
        &self,
        _project_id: &str,
        _config: &Config,
        _request: &WebhookRequest,
        _http: &dyn Transport,
    ) -> Result<WebhookOutcome, CrmError> {
        Err(CrmError::Unsupported(format!("{} does not receive webhooks", Self::SPEC.name)))
    }
}

/// What the host calls, in wasm and natively alike: unknown functions are `unsupported`,
/// the config is validated, then the function runs.
pub fn run<A: Adapter>(adapter: &A, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
    if !A::SPEC.operations.contains(&func_id) {
        return Err(CrmError::Unsupported(format!(
            "function '{func_id}' is not supported by {} (supported: {})",
            A::SPEC.name,
            A::SPEC.operations.join(", ")
        )));
    }
    adapter.validate_config(&call.config)?;
    adapter.invoke(func_id, call, http)
}

/// Registers an [`Adapter`] type as the component's export. Put it once in the adapter crate:
/// `crm_sdk::export_adapter!(Plando);`. Outside wasm it expands to nothing.
#[macro_export]
macro_rules! export_adapter {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Guest;
            impl $crate::__private::Guest for Guest {
                fn describe() -> $crate::__private::Description {
                    $crate::__private::describe::<$ty>()
                }
                fn validate_config(crm_config: String) -> Result<(), $crate::__private::WitError> {
                    $crate::__private::validate_config::<$ty>(crm_config)
                }
                fn invoke(
                    func_id: String,
                    ctx: $crate::__private::CallContext,
                ) -> Result<String, $crate::__private::WitError> {
                    $crate::__private::invoke::<$ty>(func_id, ctx)
                }
                fn handle_webhook(
                    project_id: String,
                    crm_config: String,
                    request: $crate::__private::WitWebhookRequest,
                ) -> Result<$crate::__private::WitWebhookOutcome, $crate::__private::WitError> {
                    $crate::__private::handle_webhook::<$ty>(project_id, crm_config, request)
                }
            }
            $crate::__private::bindings::__export_crm_adapter!(Guest with_types_in $crate::__private::bindings);
        };
    };
}
