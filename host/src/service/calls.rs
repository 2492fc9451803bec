//! The call path: tenant -> its version -> admission -> a fresh instance
//! ([`Runtime::invoke`](crate::runtime::Runtime::invoke)) -> crmData or a typed failure, then
//! [`Host::finish_call`] (metrics, one log line, the trace). And reading recorded calls.

use super::{now_ms, Host};
use crate::chat::{into_wit, parse_call};
use crate::error::{CallFailure, HostError};
use crate::printed::{recorded_request, CrmData};
use crate::redact::Redactor;
use crate::runtime::{CallInput, Compiled, Invocation};
use crate::store::{CallHead, CallRecord, TenantRecord};
use crate::limits::MAX_TRACE_BODY;
use crate::trace::{BodyRecord, CallTrace};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a call answers: crmData (`on_complete`) or why it failed (`on_failure`).
pub type CallOutcome = Result<CrmData, CallFailure>;

/// A call that has ended, with everything its metrics, log line and trace are made of.
struct EndedCall<'a> {
    call_id: &'a str,
    tenant: &'a Arc<TenantRecord>,
    func_id: &'a str,
    compiled: &'a Arc<Compiled>,
    /// The body as received.
    body: &'a [u8],
    redactor: &'a Redactor,
    started_at_ms: i64,
    elapsed: Duration,
    outcome: &'a Arc<CallOutcome>,
    outbound: String,
}

impl Host {
    /// Runs `func_id` for a tenant. Adapter failures are outcomes (`Ok` with a failure);
    /// only bad requests and unknown tenants are errors.
    /// The outcome is shared with the trace, which is built after the answer has gone.
    pub async fn call(&self, tenant_id: &str, func_id: &str, body: &[u8], call_id: &str) -> Result<Arc<CallOutcome>, HostError> {
        let (tenant, compiled, canary) = self.route(tenant_id)?;
        let request = parse_call(body).map_err(HostError::BadRequest)?;
        let redactor = tenant.redactor.get(&compiled.digest, &compiled.description.secret_fields, &tenant.crm_config);
        let context = into_wit(request, &tenant.project_id, &tenant.crm_config);
        let started_at_ms = now_ms();
        let started = Instant::now();
        let limits = tenant.limits.apply(self.runtime.limits());
        let Invocation { mut outcome, outbound } = match self.admission.enter(tenant_id, limits.max_concurrent_calls_per_tenant) {
            Ok(_admitted) => {
                let input = CallInput {
                    call_id,
                    func_id,
                    crm_config: &tenant.crm_config,
                    limits: &limits,
                    redactor: &redactor,
                    context,
                    at_ms: started_at_ms,
                    replay: None,
                };
                self.runtime.invoke(&compiled, input).await
            }
            Err(refused) => Invocation { outcome: Err(refused), outbound: "[]".to_string() },
        };
        if let Some((canary, inside)) = &canary {
            self.observe_canary(canary, *inside, outcome.as_ref().map(|_| ()).map_err(|f| f.kind));
        }
        if let Err(f) = &mut outcome {
            // An adapter may echo what the CRM said, and the CRM may echo credentials.
            f.message = redactor.text(&f.message);
            f.body_excerpt = f.body_excerpt.as_deref().map(|b| redactor.text(b));
        }
        let elapsed = started.elapsed();
        let outcome = Arc::new(outcome);
        self.finish_call(EndedCall {
            call_id,
            tenant: &tenant,
            func_id,
            compiled: &compiled,
            body,
            redactor: &redactor,
            started_at_ms,
            elapsed,
            outcome: &outcome,
            outbound,
        });
        Ok(outcome)
    }

    /// Everything after the answer is ready: metrics, one log line, the trace (built and
    /// written off the response path).
    fn finish_call(&self, call: EndedCall<'_>) {
        let d = &call.compiled.description;
        let (outcome, kind) = match &**call.outcome {
            Ok(_) => ("complete", ""),
            Err(f) => ("failure", f.kind.as_str()),
        };
        // A func_id the adapter does not declare is the caller's word: not a label.
        let op = if d.operations.iter().any(|o| o == call.func_id) { call.func_id } else { "unsupported" };
        let m = self.metrics();
        m.calls.with_label_values(&[&d.name, op, outcome, kind]).inc();
        m.call_seconds.with_label_values(&[&d.name, op]).observe(call.elapsed.as_secs_f64());
        self.activity.record(&d.name, call.outcome.is_err(), call.started_at_ms);
        self.stats.update(&call.tenant.id, |s| {
            *s.calls.entry(outcome).or_default() += 1;
            if let Err(f) = &**call.outcome {
                *s.failures.entry(f.kind.as_str()).or_default() += 1;
            }
        });
        let ms = call.elapsed.as_secs_f64() * 1000.0;
        let digest = &call.compiled.digest;
        let digest_prefix = &digest[..digest.len().min(19)];
        let adapter = format_args!("{}@{}", d.name, d.version);
        let (call_id, tenant, func_id) = (call.call_id, call.tenant.id.as_str(), call.func_id);
        match &**call.outcome {
            // Every call is in the trace store and the metrics; a log line per success would
            // cost a write per call for nothing more (BENCHMARKS.md). Failures stay at info.
            Ok(_) => tracing::debug!(call_id, tenant, %adapter, digest = digest_prefix, func_id, outcome, ms, "call"),
            Err(f) => tracing::info!(call_id, tenant, %adapter, digest = digest_prefix, func_id, outcome, kind, ms, "call: {}", f.message),
        }
        // The trace is built by the writer, after the answer has gone: only what it is made
        // of is copied here. A request over the cap is cut here (redacted before the cut), so
        // that a queued trace holds no more of it than a stored one.
        let request_body = (call.body.len() > MAX_TRACE_BODY).then(|| BodyRecord::new(call.body, call.redactor));
        let body = if request_body.is_none() { call.body.to_vec() } else { Vec::new() };
        let (call_id, func_id) = (call_id.to_string(), func_id.to_string());
        let (compiled, record, redactor) = (call.compiled.clone(), call.tenant.clone(), call.redactor.clone());
        let (started_at_ms, elapsed, outbound, answer) = (call.started_at_ms, call.elapsed, call.outbound, call.outcome.clone());
        self.traces.write(move || {
            // Over the cap, `requestBody` holds what is kept of it, and `request` is null.
            let request = recorded_request(request_body.is_none().then_some(body), &redactor);
            // The answer was written out before the writer runs, so this is the last
            // reference, unless API threads ran both at once: then a copy.
            let answer = Arc::try_unwrap(answer).unwrap_or_else(|shared| (*shared).clone());
            let (crm_data, error) = match answer {
                Ok(d) => (Some(d.redacted(&redactor)), None),
                Err(f) => (None, Some(f)),
            };
            let d = &compiled.description;
            let trace = CallTrace {
                call_id,
                tenant: record.id.clone(),
                func_id,
                adapter: d.name.clone(),
                version: d.version.clone(),
                digest: compiled.digest.clone(),
                started_at_ms,
                duration_ms: ms,
                config_digest: Some(record.config_digest.of(&record.crm_config).to_string()),
                request,
                request_body,
                outbound: Vec::new(),
                outcome: outcome.to_string(),
                crm_data,
                error,
            };
            trace.into_record(&outbound, elapsed)
        });
    }

    /// Waits until every call answered so far has its trace stored.
    pub async fn flush_traces(&self) {
        self.traces.flush().await;
    }

    /// A tenant's most recent calls (with that outcome, when given), newest first.
    pub async fn calls(&self, tenant: &str, limit: u32, outcome: Option<&str>) -> Result<Vec<CallHead>, HostError> {
        self.tenant_and_version(tenant)?;
        self.flush_traces().await;
        Ok(self.store.calls(tenant, limit, outcome).await?)
    }

    pub async fn call_trace(&self, tenant: &str, call_id: &str) -> Result<CallRecord, HostError> {
        self.tenant_and_version(tenant)?;
        self.flush_traces().await;
        self.store
            .call(tenant, call_id)
            .await?
            .ok_or_else(|| HostError::UnknownCall { tenant: tenant.into(), call_id: call_id.into() })
    }
}
