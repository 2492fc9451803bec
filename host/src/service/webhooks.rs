//! A CRM calling back: the tenant's adapter checks the request (the CRM's own token) and
//! turns it into an answer and inbound messages; the messages are committed before the CRM
//! gets a 2xx, so a message the CRM was told was received is never lost. And reading them.

use super::{now_ms, Host};
use crate::error::HostError;
use crate::runtime::{InboundMessage, WebhookInput, WebhookRequest};
use crate::store::{EventRecord, NewEvent};
use crate::FailureKind;
use serde_json::{json, Value};
use std::time::Instant;

/// A delivery without the CRM's message id is a duplicate of an identical message (same
/// chat, phone, text, author and attachments) stored less than this long ago.
pub const EVENT_DEDUP_WINDOW_MS: i64 = 10 * 60 * 1000;

/// The answer a webhook gets.
pub struct WebhookAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Host {
    pub async fn webhook(&self, tenant_id: &str, request: WebhookRequest) -> Result<WebhookAnswer, HostError> {
        let (tenant, compiled) = self.tenant_and_version(tenant_id)?;
        let d = &compiled.description;
        if !compiled.receives_webhooks() {
            return Err(HostError::WebhooksUnsupported(d.name.clone()));
        }
        let redactor = tenant.redactor.get(&compiled.digest, &d.secret_fields, &tenant.crm_config);
        let limits = tenant.limits.apply(self.runtime.limits());
        let started = Instant::now();
        // Anyone may post to a webhook URL: a flood of them has places of its own, and never
        // takes a call's.
        let _admitted = self
            .webhook_admission
            .enter(tenant_id, limits.max_webhooks_per_tenant)
            .map_err(|f| HostError::RateLimited(f.message))?;
        let input = WebhookInput { project_id: &tenant.project_id, crm_config: &tenant.crm_config, limits: &limits, redactor: &redactor, request };
        let out = match self.runtime.handle_webhook(&compiled, input).await {
            Ok(o) if (100..600).contains(&o.status) => o,
            Ok(o) => return Err(HostError::AdapterFailed(format!("the adapter answered the webhook with HTTP status {}", o.status))),
            Err(f) if f.kind == FailureKind::Unsupported => {
                compiled.without_webhooks();
                return Err(HostError::WebhooksUnsupported(d.name.clone()));
            }
            Err(f) => {
                let message = redactor.text(&f.message);
                tracing::warn!(tenant = tenant_id, adapter = %d.name, kind = %f.kind, "webhook failed: {message}");
                return Err(HostError::AdapterFailed(format!("the adapter failed handling the webhook ({}): {message}", f.kind)));
            }
        };
        let accepted = (200..300).contains(&out.status);
        let (mut stored, received) = (0, out.messages.len());
        if accepted && received > 0 {
            let events: Vec<NewEvent> = out.messages.iter().map(new_event).collect();
            stored = self.store.append_events(tenant_id, &events, now_ms(), EVENT_DEDUP_WINDOW_MS).await?;
            let m = self.metrics();
            m.inbound_events.with_label_values(&[&d.name, "stored"]).inc_by(stored as u64);
            m.inbound_events.with_label_values(&[&d.name, "duplicate"]).inc_by((received - stored) as u64);
        }
        self.metrics().webhooks.with_label_values(&[&d.name, &out.status.to_string()]).inc();
        self.stats.update(tenant_id, |s| {
            *s.webhooks.entry(out.status).or_default() += 1;
            *s.inbound_events.entry("stored").or_default() += stored as u64;
            *s.inbound_events.entry("duplicate").or_default() += (received - stored) as u64;
        });
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(tenant = tenant_id, adapter = %d.name, status = out.status, received, stored, ms, "webhook");
        // Only what describes the body goes back; the rest is the host's business.
        let headers = out.headers.into_iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).collect();
        Ok(WebhookAnswer { status: out.status, headers, body: out.body })
    }

    /// A tenant's inbound events after `cursor`, oldest first.
    pub async fn events(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<EventRecord>, HostError> {
        if !self.read().tenants.contains_key(tenant) {
            return Err(HostError::UnknownTenant(tenant.to_string()));
        }
        Ok(self.store.events_after(tenant, after, limit).await?)
    }
}

/// The stored form of an inbound message, and what identifies a second delivery of it.
fn new_event(m: &InboundMessage) -> NewEvent {
    use sha2::Digest;
    let event = serde_json::to_value(m).unwrap_or(Value::Null);
    let content = json!([m.chat_id, m.phone, m.text, m.author, m.media]);
    NewEvent {
        message_id: m.extra.get("messageId").and_then(crate::store::scalar_id),
        content_hash: format!("{:x}", sha2::Sha256::digest(content.to_string().as_bytes())),
        event,
    }
}
