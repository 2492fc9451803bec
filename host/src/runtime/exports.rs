//! One method per export of the adapter world. Each runs its export in a fresh instance
//! through [`Runtime::execute`] (a closure over the store and instance), under the right
//! limits and egress policy, and turns the WIT answer into the host's types. A new export is
//! one more method here.

use super::execute::Refused;
use super::{Compiled, HostState, Runtime};
use crate::bindings::{wit, Adapter, AdapterPre};
use crate::chat::{json_text, Media};
use crate::egress::EgressPolicy;
use crate::error::{CallFailure, FailureKind, HostError};
use crate::limits::{check_crm_data_size, Limits};
use crate::printed::CrmData;
use crate::redact::Redactor;
use crate::replay::Replayer;
use std::sync::Arc;
use serde_json::{Map, Value};
use wasmtime::component::{ComponentExportIndex, Instance, WasmStr};
use wasmtime::Store;

/// One call of an adapter function for one tenant.
pub(crate) struct CallInput<'a> {
    pub call_id: &'a str,
    pub func_id: &'a str,
    pub crm_config: &'a Map<String, Value>,
    pub limits: &'a Limits,
    pub redactor: &'a Redactor,
    pub context: wit::CallContext,
    /// The call's start (Unix ms): the wall-clock time the guest sees.
    pub at_ms: i64,
    /// A replay: outbound requests are answered from the recording.
    pub replay: Option<Arc<Replayer>>,
}

/// How a call ended, and every outbound attempt it made (redacted), in order.
pub(crate) struct Invocation {
    /// The crmData object, or why the call failed.
    pub outcome: Result<CrmData, CallFailure>,
    /// Every outbound attempt, as the JSON array a trace stores (`CallScope::take_exchanges`).
    pub outbound: String,
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

/// One webhook for one tenant.
pub(crate) struct WebhookInput<'a> {
    pub project_id: &'a str,
    pub crm_config: &'a Map<String, Value>,
    pub limits: &'a Limits,
    pub redactor: &'a Redactor,
    pub request: WebhookRequest,
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
    pub media: Vec<Media>,
    pub extra: Map<String, Value>,
}

impl Runtime {
    /// `describe`, at deploy: no tenant, no egress, the host's limits.
    pub(super) async fn describe(&self, pre: &AdapterPre<HostState>) -> Result<wit::Description, CallFailure> {
        let scope = Arc::new(self.scope("deploy", "(describe)", Redactor::default(), &self.limits));
        self.execute(pre, &self.limits, EgressPolicy::default(), scope, |store, instance| {
            Box::pin(async move { Ok(Adapter::new(&mut *store, instance)?.crm_adapter_crm().call_describe(&mut *store).await?) })
        })
        .await
    }

    /// Runs the adapter's own crmConfig validation.
    pub async fn validate_config(&self, adapter: &Compiled, crm_config: &Map<String, Value>) -> Result<(), HostError> {
        let json = json_text(crm_config);
        let redactor = Redactor::new(&adapter.description.secret_fields, crm_config);
        let scope = Arc::new(self.scope("validate", &adapter.description.name, redactor.clone(), &self.limits));
        let answer = self
            .execute(&adapter.pre, &self.limits, EgressPolicy::default(), scope, move |store, instance| {
                Box::pin(async move {
                    Ok(Adapter::new(&mut *store, instance)?.crm_adapter_crm().call_validate_config(&mut *store, &json).await?)
                })
            })
            .await;
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // A config error's message already names the field (`crmConfig.token: ...`);
                // it must not repeat a secret field's value (nor may a failure's).
                let f = failure_from_wit(e);
                Err(HostError::InvalidConfig { field: f.field.filter(|s| !s.is_empty()), message: redactor.text(&f.message) })
            }
            Err(f) => Err(HostError::InvalidConfig {
                field: None,
                message: format!("the adapter failed while validating crmConfig ({}): {}", f.kind, redactor.text(&f.message)),
            }),
        }
    }

    /// Runs one adapter function for one tenant under its limits and egress policy.
    pub(crate) async fn invoke(&self, adapter: &Compiled, input: CallInput<'_>) -> Invocation {
        let d = &adapter.description;
        let mut scope = self.scope(input.call_id, &d.name, input.redactor.clone(), input.limits);
        scope.wall_ms = input.at_ms;
        scope.replay = input.replay;
        let scope = Arc::new(scope);
        let policy = EgressPolicy::for_tenant(&d.outbound, &d.endpoint_fields, input.crm_config);
        // The context's strings were allocated on this thread: shared with the guest thread,
        // which drops its reference before it answers, they are freed here, not block by
        // block across threads.
        let context = Arc::new(input.context);
        let (export, func_id, shared) = (adapter.invoke, input.func_id.to_string(), context.clone());
        let max_bytes = input.limits.max_crm_data_bytes;
        let outcome = self
            .execute(&adapter.pre, input.limits, policy, scope.clone(), move |store, instance| {
                Box::pin(async move { invoke_checked(store, instance, &export, &func_id, &shared, max_bytes).await })
            })
            .await
            .and_then(|answer| answer.map_err(failure_from_wit))
            .and_then(CrmData::from_adapter);
        Invocation { outcome, outbound: scope.take_exchanges() }
    }

    /// One execution of `func_id` with an empty chat and config under the host's limits:
    /// the host's own cost per call (store, instance, invoke, drop), as `cargo xtask bench`
    /// times it. The service never calls this.
    #[doc(hidden)]
    pub async fn invoke_bare(&self, adapter: &Compiled, func_id: &str) -> Result<CrmData, CallFailure> {
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
        let context = wit::CallContext { project_id: String::new(), crm_config: "{}".into(), chat, params: "{}".into() };
        let redactor = Redactor::default();
        let input = CallInput {
            call_id: "bench",
            func_id,
            crm_config: &Map::new(),
            limits: &self.limits,
            redactor: &redactor,
            context,
            at_ms: crate::service::now_ms(),
            replay: None,
        };
        self.invoke(adapter, input).await.outcome
    }

    /// Hands a request the CRM sent to the platform to the tenant's adapter
    /// (`handle-webhook`): the answer for the CRM and the messages it carried.
    pub(crate) async fn handle_webhook(&self, adapter: &Compiled, input: WebhookInput<'_>) -> Result<WebhookOutcome, CallFailure> {
        let d = &adapter.description;
        let scope = Arc::new(self.scope("webhook", &d.name, input.redactor.clone(), input.limits));
        let policy = EgressPolicy::for_tenant(&d.outbound, &d.endpoint_fields, input.crm_config);
        let (project_id, crm_config) = (input.project_id.to_string(), json_text(input.crm_config));
        let r = input.request;
        let request =
            wit::WebhookRequest { method: r.method, path: r.path, query: r.query, headers: r.headers, body: r.body };
        let out = self
            .execute(&adapter.pre, input.limits, policy, scope, move |store, instance| {
                Box::pin(async move {
                    let crm = Adapter::new(&mut *store, instance)?;
                    Ok(crm.crm_adapter_crm().call_handle_webhook(&mut *store, &project_id, &crm_config, &request).await?)
                })
            })
            .await?
            .map_err(failure_from_wit)?;
        let messages = out.messages.into_iter().map(inbound_message).collect::<Result<_, _>>()?;
        let r = out.response;
        Ok(WebhookOutcome { status: r.status, headers: r.headers, body: r.body, messages })
    }
}

fn inbound_message(m: wit::InboundMessage) -> Result<InboundMessage, CallFailure> {
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
        media: m.media.into_iter().map(|x| Media { url: x.url, file_name: x.file_name, mime_type: x.mime_type }).collect(),
        extra,
    })
}

/// `invoke`, with its crmData lifted lazily: the string stays in guest memory until its size
/// is known to be within the cap, and only then is copied out. It is checked (and parsed,
/// when it is not as serde prints it) by the caller ([`CrmData::from_adapter`]), on the
/// thread that answers and then frees it: a map built on a guest thread would be freed
/// block by block across threads.
async fn invoke_checked(
    store: &mut Store<HostState>,
    instance: &Instance,
    export: &ComponentExportIndex,
    func_id: &str,
    ctx: &wit::CallContext,
    max_bytes: usize,
) -> anyhow::Result<Result<String, wit::CrmError>> {
    let func = instance
        .get_typed_func::<(&str, &wit::CallContext), (Result<WasmStr, wit::CrmError>,)>(&mut *store, export)?;
    let (result,) = func.call_async(&mut *store, (func_id, ctx)).await?;
    let out = match result {
        Err(e) => Err(e),
        Ok(text) => {
            let text = text.to_str(&*store)?;
            check_crm_data_size(text.len(), max_bytes).map_err(Refused)?;
            Ok(text.into_owned())
        }
    };
    Ok(out)
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
