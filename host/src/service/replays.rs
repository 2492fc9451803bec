//! Replays (see [`crate::replay`]): which recorded calls, which versions, each call run
//! through the version that recorded it (its noise) and the candidate, the report stored;
//! and the gate that activates a deploy only when its replay passes.

use super::{now_ms, Host};
use crate::chat::{into_wit, parse_call};
use crate::error::{CallFailure, HostError};
use crate::replay::{
    diff_outcomes, recorded_requests, CallResult, Change, ReplayHead, ReplayReport, ReplayRequest, Replayer, Status, Summary, Unmatched, VersionRef,
};
use crate::runtime::{CallInput, Compiled};
use crate::store::{CallFilter, CallHead, ReplayRecord, TenantRecord};
use crate::trace::CallTrace;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Replay reports kept per adapter.
pub const KEPT_REPLAY_REPORTS: u32 = 100;

/// Replayed calls running at once, host-wide: replays take guest threads and pool slots
/// from live calls, so only this many (BENCHMARKS.md measures what they cost live calls).
pub(super) const REPLAY_CONCURRENCY: usize = 2;

/// How one execution of a recorded call ended, in the form outcomes are compared in.
struct Replayed {
    outcome: Value,
    unmatched: Vec<Unmatched>,
}

impl Host {
    /// Re-runs recorded calls of `adapter` (newest first) through version `digest`, offline,
    /// and stores and answers the report.
    pub async fn replay(&self, adapter: &str, digest: &str, request: &ReplayRequest) -> Result<ReplayReport, HostError> {
        let limit = request.limit().map_err(HostError::BadRequest)?;
        let since_ms = match &request.since {
            Some(s) => Some(
                crate::time::parse_rfc3339(s)
                    .ok_or_else(|| HostError::BadRequest(format!("since: '{s}' is not an RFC 3339 time (2026-11-26T10:00:00Z)")))?,
            ),
            None => None,
        };
        let candidate = self.compiled_version(adapter, digest).await?;
        self.flush_traces().await;
        let filter = CallFilter {
            adapter: adapter.to_string(),
            tenants: request.tenants.clone(),
            functions: request.functions.clone(),
            call_ids: request.call_ids.clone(),
            since_ms,
            limit,
        };
        let heads = self.store.recorded_calls(&filter).await?;
        // Every call is compared with the version that recorded it, when that is still stored.
        let mut recorders: HashMap<String, Option<Arc<Compiled>>> = HashMap::new();
        for h in &heads {
            if !recorders.contains_key(&h.digest) {
                recorders.insert(h.digest.clone(), self.compiled_version(adapter, &h.digest).await.ok());
            }
        }
        let candidate_ref = &candidate;
        let recorders = &recorders;
        let results: Vec<CallResult> = futures::stream::iter(heads.clone())
            .map(|h| async move { self.replay_call(&h, candidate_ref, recorders.get(&h.digest).cloned().flatten()).await })
            .buffered(REPLAY_CONCURRENCY)
            .collect()
            .await;
        let summary = Summary::of(&results);
        let head = ReplayHead {
            id: super::new_id(),
            adapter: adapter.to_string(),
            created_at: crate::time::rfc3339(now_ms()),
            candidate: VersionRef { digest: candidate.digest.clone(), version: candidate.description.version.clone() },
            baseline: self.baseline(adapter, &heads, &candidate),
            calls: results.len() as u32,
            verdict: summary.verdict(),
            summary,
        };
        let report = ReplayReport { head, results };
        self.store_report(&report).await?;
        let h = &report.head;
        self.metrics().replays.with_label_values(&[adapter, crate::error::variant_name(&h.verdict)]).inc();
        tracing::info!(adapter, candidate = %digest, id = %h.id, calls = h.calls, verdict = ?h.verdict, "replayed");
        Ok(report)
    }

    /// The version that recorded most of the calls (the active one when there were none).
    fn baseline(&self, adapter: &str, heads: &[CallHead], candidate: &Compiled) -> VersionRef {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for h in heads {
            *counts.entry((&h.digest, &h.version)).or_default() += 1;
        }
        if let Some(((digest, version), _)) = counts.into_iter().max_by_key(|(k, n)| (*n, *k)) {
            return VersionRef { digest: digest.to_string(), version: version.to_string() };
        }
        let registry = self.read();
        let active = registry.adapters.get(adapter).and_then(|a| a.active.clone());
        match active.and_then(|d| registry.version(adapter, &d)) {
            Some(v) => VersionRef { digest: v.digest.clone(), version: v.version.clone() },
            None => VersionRef { digest: candidate.digest.clone(), version: candidate.description.version.clone() },
        }
    }

    async fn store_report(&self, report: &ReplayReport) -> Result<(), HostError> {
        let text = serde_json::to_string(report).map_err(|e| HostError::Internal(format!("a replay report does not serialise: {e}")))?;
        let h = &report.head;
        let head = serde_json::to_value(h).unwrap_or(Value::Null);
        let record = ReplayRecord {
            id: h.id.clone(),
            adapter: h.adapter.clone(),
            candidate: h.candidate.digest.clone(),
            created_at_ms: now_ms(),
            verdict: crate::error::variant_name(&h.verdict).to_string(),
            head: head.to_string(),
            report: text,
        };
        Ok(self.store.put_replay(&record, KEPT_REPLAY_REPORTS).await?)
    }

    /// An adapter's replay reports, newest first, without their per-call results.
    pub async fn replays(&self, adapter: &str, limit: u32) -> Result<Vec<ReplayHead>, HostError> {
        if !self.read().versions.contains_key(adapter) {
            return Err(HostError::UnknownAdapter(adapter.to_string()));
        }
        let heads = self.store.replays(adapter, limit).await?;
        Ok(heads.into_iter().filter_map(|r| serde_json::from_str(&r.head).ok()).collect())
    }

    /// One stored report, as JSON text.
    pub async fn replay_report(&self, adapter: &str, id: &str) -> Result<String, HostError> {
        match self.store.replay(adapter, id).await? {
            Some(r) => Ok(r.report),
            None => Err(HostError::UnknownReplay { adapter: adapter.into(), id: id.into() }),
        }
    }

    /// One recorded call through its recorder (for noise) and the candidate.
    async fn replay_call(&self, head: &CallHead, candidate: &Compiled, recorder: Option<Arc<Compiled>>) -> CallResult {
        let skipped = |why: String| CallResult::skipped(&head.call_id, &head.tenant, &head.func_id, why);
        let trace = match self.store.call(&head.tenant, &head.call_id).await {
            Ok(Some(r)) => match serde_json::from_str::<CallTrace>(&r.trace) {
                Ok(t) => t,
                Err(e) => return skipped(format!("the recording cannot be read: {e}")),
            },
            Ok(None) => return skipped("the recording was dropped (trace retention) before it was replayed".into()),
            Err(e) => return skipped(format!("the recording cannot be read: {e}")),
        };
        let tenant = match self.read().tenants.get(&trace.tenant).cloned() {
            Some(t) if t.adapter == candidate.description.name => t,
            Some(t) => return skipped(format!("tenant '{}' now uses adapter '{}'", t.id, t.adapter)),
            None => return skipped(format!("tenant '{}' was deleted", trace.tenant)),
        };
        match &trace.config_digest {
            None => return skipped("recorded without a crmConfig digest (by an older host)".into()),
            Some(d) if d != tenant.config_digest.of(&tenant.crm_config) => {
                return skipped("the tenant's crmConfig changed since the call was recorded".into())
            }
            Some(_) => {}
        }
        if trace.request.get() == "null" {
            return skipped("the call body was larger than a recording keeps".into());
        }
        if let Some(why) = Replayer::incomplete(&trace.outbound) {
            return skipped(why);
        }
        let recorded = recorded_outcome(&trace);
        let _permit = self.replay_slots.acquire().await;
        let mut noise = Vec::new();
        if let Some(recorder) = recorder {
            let again = match self.run_replayed(&recorder, &tenant, &trace).await {
                Ok(r) => r,
                Err(why) => return skipped(why),
            };
            if !again.unmatched.is_empty() {
                return skipped(format!(
                    "the version that recorded the call does not repeat its requests ({}): they depend on more than the call",
                    again.unmatched[0].difference
                ));
            }
            noise = diff_outcomes(&recorded, &again.outcome).into_iter().map(|c| c.path).collect();
        }
        let replayed = match self.run_replayed(candidate, &tenant, &trace).await {
            Ok(r) => r,
            Err(why) => return skipped(why),
        };
        classify(head, &recorded, replayed, &noise)
    }

    /// One execution of a recorded call, offline: the recorded body, the tenant's crmConfig
    /// and limits as they are, the recorded time, the recording answering its requests.
    async fn run_replayed(&self, compiled: &Compiled, tenant: &TenantRecord, trace: &CallTrace) -> Result<Replayed, String> {
        let request = parse_call(trace.request.get().as_bytes()).map_err(|e| format!("the recorded call body no longer parses: {e}"))?;
        let redactor = tenant.redactor.get(&compiled.digest, &compiled.description.secret_fields, &tenant.crm_config);
        let context = into_wit(request, &tenant.project_id, &tenant.crm_config);
        let limits = tenant.limits.apply(self.runtime.limits());
        let replayer = Arc::new(Replayer::new(&trace.outbound));
        let call_id = format!("replay:{}", trace.call_id);
        let input = CallInput {
            call_id: &call_id,
            func_id: &trace.func_id,
            crm_config: &tenant.crm_config,
            limits: &limits,
            redactor: &redactor,
            context,
            at_ms: trace.started_at_ms,
            replay: Some(replayer.clone()),
        };
        let invocation = self.runtime.invoke(compiled, input).await;
        let mut outcome = match invocation.outcome {
            Ok(data) => json!({"outcome": "complete", "crmData": redactor.json(data.to_value())}),
            Err(f) => json!({"outcome": "failure", "error": compared_error(&f)}),
        };
        outcome["outbound"] = Value::Object(replayer.requests());
        Ok(Replayed { outcome, unmatched: replayer.unmatched() })
    }
}

/// What a recording says the call answered, in the compared form: the outcome, and every
/// recorded request (a version that no longer makes one of them has changed, even when it
/// answers the same).
fn recorded_outcome(trace: &CallTrace) -> Value {
    let mut outcome = match (&trace.crm_data, &trace.error) {
        (_, Some(f)) => json!({"outcome": "failure", "error": compared_error(f)}),
        (data, None) => {
            let data = data.as_deref().and_then(|d| serde_json::from_str(d.get()).ok()).unwrap_or(Value::Object(Map::new()));
            json!({"outcome": "complete", "crmData": data})
        }
    };
    outcome["outbound"] = Value::Object(recorded_requests(&trace.outbound));
    outcome
}

/// What of a failure is compared: its kind, the field it names and the CRM's status. The
/// message is for people, and often carries values of the moment.
fn compared_error(f: &CallFailure) -> Value {
    let mut e = Map::new();
    e.insert("kind".into(), json!(f.kind));
    if let Some(field) = &f.field {
        e.insert("field".into(), json!(field));
    }
    if let Some(status) = f.status {
        e.insert("status".into(), json!(status));
    }
    Value::Object(e)
}

fn classify(head: &CallHead, recorded: &Value, replayed: Replayed, noise: &[String]) -> CallResult {
    let all = diff_outcomes(recorded, &replayed.outcome);
    let before = all.len();
    let mut changes: Vec<Change> = all.into_iter().filter(|c| !noise.iter().any(|n| crate::replay::is_noise(&c.path, n))).collect();
    let was_noisy = changes.len() < before;
    let completed = |v: &Value| v["outcome"] == "complete";
    let status = match (completed(recorded), completed(&replayed.outcome)) {
        _ if !replayed.unmatched.is_empty() => Status::Unmatched,
        (true, false) => Status::NewFailure,
        (false, true) => Status::Fixed,
        _ if !changes.is_empty() => Status::Changed,
        _ if was_noisy => Status::Noisy,
        _ => Status::Same,
    };
    changes.truncate(crate::replay::MAX_CHANGES);
    CallResult {
        call_id: head.call_id.clone(),
        tenant: head.tenant.clone(),
        func_id: head.func_id.clone(),
        status,
        diff: (!changes.is_empty()).then_some(changes),
        unmatched: (!replayed.unmatched.is_empty()).then_some(replayed.unmatched),
        reason: None,
    }
}
