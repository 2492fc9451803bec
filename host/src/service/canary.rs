//! Canary rollouts: a candidate version serves a stable share of an adapter's unpinned
//! tenants, is watched call by call against the tenants that stay on the active version, and
//! is rolled back by the host itself when it fails more (or fails the way a broken adapter
//! does). Stored with an audit entry like every change, so replicas follow it and a restart
//! keeps it.
//!
//! ```text
//! call ─► Registry::route: pinned? its pin : canary running and hash(canary id, tenant) < percent
//!           and not refused? candidate : active
//!      ─► Canary::observe (the call's side, its outcome) ─► over the bounds? ─► rolled_back:
//!           routing stops at once on this host, then the store and audit say so (replicas follow)
//! ```

use super::{audit, now_ms, Host};
use crate::error::{FailureKind, HostError, InvalidTenant};
use crate::lock;
use crate::store::{AuditAction, CallFilter, CanaryRecord, CanaryState};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Tenants listed by a canary's status (the rest are counted).
const TENANTS_SHOWN: usize = 100;
/// Recorded calls read to count a canary's calls when a host loads it.
const SEED_CALLS: u32 = 100_000;

/// A canary as the registry holds it: the stored record, and what this host counted.
pub(crate) struct Canary {
    pub record: CanaryRecord,
    /// Cleared when this host ends the canary by itself, before the store says so: the
    /// tenants' next calls run the active version at once.
    live: Arc<AtomicBool>,
    ended: Arc<Mutex<Option<String>>>,
    counts: Arc<Counts>,
}

/// Calls since the canary started, per side.
#[derive(Default)]
struct Counts {
    canary_calls: AtomicU64,
    canary_failures: AtomicU64,
    baseline_calls: AtomicU64,
    baseline_failures: AtomicU64,
    baseline_deadlines: AtomicU64,
}

impl Canary {
    pub fn new(record: CanaryRecord) -> Self {
        Canary { record, live: Arc::new(AtomicBool::new(true)), ended: Arc::default(), counts: Arc::default() }
    }

    /// The stored record of the same canary, read again: what this host counted and decided
    /// stays (a rollback it is still storing must not be undone by an older read).
    pub fn refreshed(&self, record: CanaryRecord) -> Self {
        Canary { record, live: self.live.clone(), ended: self.ended.clone(), counts: self.counts.clone() }
    }

    pub fn running(&self) -> bool {
        self.record.state == CanaryState::Running && self.live.load(Relaxed)
    }

    /// Whether the candidate serves this (unpinned) tenant.
    pub fn selects(&self, tenant: &str) -> bool {
        self.running() && !self.record.excluded.iter().any(|t| t == tenant) && in_share(&self.record.id, tenant, self.record.percent)
    }

    /// Counts a call of a tenant in the canary (`inside`) or on the active version, and says
    /// why the canary must roll back, once, when it must.
    pub fn observe(&self, inside: bool, outcome: Result<(), FailureKind>) -> Option<String> {
        let c = &self.counts;
        let failed = outcome.is_err();
        if !inside {
            c.baseline_calls.fetch_add(1, Relaxed);
            if failed {
                c.baseline_failures.fetch_add(1, Relaxed);
            }
            if outcome == Err(FailureKind::DeadlineExceeded) {
                c.baseline_deadlines.fetch_add(1, Relaxed);
            }
            return None;
        }
        let calls = c.canary_calls.fetch_add(1, Relaxed) + 1;
        let failures = c.canary_failures.fetch_add(u64::from(failed), Relaxed) + u64::from(failed);
        let why = match outcome {
            Err(k @ (FailureKind::Internal | FailureKind::Trap | FailureKind::InvalidOutput | FailureKind::MemoryLimitExceeded)) => {
                Some(format!("a call of the candidate ended in {k}, which means the adapter is broken"))
            }
            Err(FailureKind::DeadlineExceeded) if c.baseline_deadlines.load(Relaxed) == 0 => {
                Some("a call of the candidate exceeded its deadline, and no call of the active version did".to_string())
            }
            _ if calls >= u64::from(self.record.min_calls) => {
                let (rate, base) =
                    (failures as f64 / calls as f64, rate(c.baseline_failures.load(Relaxed), c.baseline_calls.load(Relaxed)));
                (rate - base > self.record.max_failure_rate_increase).then(|| {
                    format!(
                        "the canary tenants' failure rate {:.1}% ({failures} of {calls} calls) exceeds the other tenants' {:.1}% by more than {:.1} points",
                        rate * 100.0,
                        base * 100.0,
                        self.record.max_failure_rate_increase * 100.0
                    )
                })
            }
            _ => None,
        }?;
        // Decided once, whichever call got here first.
        self.live.compare_exchange(true, false, Relaxed, Relaxed).ok()?;
        *lock(&self.ended) = Some(why.clone());
        Some(why)
    }

    /// The state, with an end this host decided and is still storing.
    fn state(&self) -> (CanaryState, Option<String>) {
        match lock(&self.ended).clone() {
            Some(why) if self.record.state == CanaryState::Running => (CanaryState::RolledBack, Some(why)),
            _ => (self.record.state, self.record.reason.clone()),
        }
    }
}

/// A tenant is in a canary when a hash of (canary id, tenant id) falls below `percent`: the
/// same tenants stay in as long as the canary runs, and raising the percentage only adds.
pub(crate) fn in_share(canary_id: &str, tenant: &str, percent: u8) -> bool {
    let h = Sha256::digest(format!("{canary_id}\0{tenant}").as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    x % 10_000 < u64::from(percent) * 100
}

fn rate(failures: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        failures as f64 / calls as f64
    }
}

/// `POST /v1/adapters/{name}/canary`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStart {
    pub digest: String,
    pub percent: u8,
    #[serde(default = "default_increase")]
    pub max_failure_rate_increase: f64,
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
}

fn default_increase() -> f64 {
    0.05
}

fn default_min_calls() -> u32 {
    50
}

/// What `GET /v1/adapters/{name}/canary` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    pub id: String,
    pub adapter: String,
    pub digest: String,
    pub version: String,
    pub percent: u8,
    pub max_failure_rate_increase: f64,
    pub min_calls: u32,
    pub state: CanaryState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
    pub started_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The tenants the candidate serves now (none once it has ended).
    pub tenants: CanaryTenants,
    /// Tenants never selected: the candidate refuses their crmConfig.
    pub excluded: Vec<String>,
    /// Calls since the start as this host counts them: the canary's tenants, the others.
    pub canary: SideCounts,
    pub baseline: SideCounts,
    /// On start: why each excluded tenant was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_tenants: Vec<InvalidTenant>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CanaryTenants {
    pub count: usize,
    pub first: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideCounts {
    pub calls: u64,
    pub failures: u64,
    pub failure_rate: f64,
}

impl SideCounts {
    fn of(calls: u64, failures: u64) -> Self {
        SideCounts { calls, failures, failure_rate: rate(failures, calls) }
    }
}

impl Host {
    /// Starts routing a share of the adapter's unpinned tenants to a stored version.
    pub async fn start_canary(&self, adapter: &str, start: CanaryStart, actor: &str) -> Result<CanaryStatus, HostError> {
        if !(1..=100).contains(&start.percent) {
            return Err(HostError::BadRequest(format!("percent: {} is not within 1-100", start.percent)));
        }
        if !(0.0..=1.0).contains(&start.max_failure_rate_increase) {
            return Err(HostError::BadRequest(format!(
                "maxFailureRateIncrease: {} is not a fraction within 0-1 (0.05 is five points)",
                start.max_failure_rate_increase
            )));
        }
        if start.min_calls == 0 {
            return Err(HostError::BadRequest("minCalls: must be at least 1".into()));
        }
        let compiled = self.compiled_version(adapter, &start.digest).await?;
        if self.read().adapters.get(adapter).and_then(|a| a.active.as_deref()) == Some(start.digest.as_str()) {
            return Err(HostError::BadRequest(format!("{} is the active version of '{adapter}' already", start.digest)));
        }
        let invalid = self.invalid_tenants(&compiled).await;
        let record = CanaryRecord {
            id: super::new_id(),
            adapter: adapter.to_string(),
            digest: start.digest.clone(),
            percent: start.percent,
            max_failure_rate_increase: start.max_failure_rate_increase,
            min_calls: start.min_calls,
            excluded: invalid.iter().map(|t| t.tenant.clone()).collect(),
            state: CanaryState::Running,
            reason: None,
            started_at_ms: now_ms(),
            started_by: actor.to_string(),
            ended_at_ms: None,
        };
        let _w = self.writes.lock().await;
        let detail = json!({"id": record.id, "percent": record.percent, "state": "running"});
        let audit = audit(actor, AuditAction::CanaryStart, Some(adapter), None, Some(&record.digest), Some(detail));
        self.store.put_canary(&record, &audit).await?;
        {
            let mut registry = self.write();
            registry.compiled.insert(compiled.digest.clone(), compiled);
            registry.canaries.insert(adapter.to_string(), Arc::new(Canary::new(record)));
        }
        tracing::info!(adapter, digest = %start.digest, percent = start.percent, actor, "canary started");
        let mut status = self.canary_status(adapter)?;
        status.invalid_tenants = invalid;
        Ok(status)
    }

    /// The adapter's latest canary.
    pub fn canary_status(&self, adapter: &str) -> Result<CanaryStatus, HostError> {
        let registry = self.read();
        let c = registry.canaries.get(adapter).ok_or_else(|| HostError::UnknownCanary(adapter.to_string()))?;
        let (state, reason) = c.state();
        let mut tenants: Vec<String> = registry
            .tenants
            .values()
            .filter(|t| t.adapter == adapter && t.pin.is_none() && c.selects(&t.id))
            .map(|t| t.id.clone())
            .collect();
        tenants.sort();
        let count = tenants.len();
        tenants.truncate(TENANTS_SHOWN);
        let r = &c.record;
        let n = &c.counts;
        Ok(CanaryStatus {
            id: r.id.clone(),
            adapter: r.adapter.clone(),
            digest: r.digest.clone(),
            version: registry.version(adapter, &r.digest).map(|v| v.version.clone()).unwrap_or_default(),
            percent: r.percent,
            max_failure_rate_increase: r.max_failure_rate_increase,
            min_calls: r.min_calls,
            state,
            reason,
            started_at: crate::time::rfc3339(r.started_at_ms),
            started_by: r.started_by.clone(),
            ended_at: r.ended_at_ms.map(crate::time::rfc3339),
            tenants: CanaryTenants { count, first: tenants },
            excluded: r.excluded.clone(),
            canary: SideCounts::of(n.canary_calls.load(Relaxed), n.canary_failures.load(Relaxed)),
            baseline: SideCounts::of(n.baseline_calls.load(Relaxed), n.baseline_failures.load(Relaxed)),
            invalid_tenants: Vec::new(),
        })
    }

    /// Changes the share of a running canary (its tenants so far stay in when it grows).
    pub async fn set_canary_percent(&self, adapter: &str, percent: u8, actor: &str) -> Result<CanaryStatus, HostError> {
        if !(1..=100).contains(&percent) {
            return Err(HostError::BadRequest(format!("percent: {percent} is not within 1-100")));
        }
        self.change_canary(adapter, actor, AuditAction::CanaryUpdate, |r| r.percent = percent).await
    }

    /// Makes the candidate the active version for every unpinned tenant; the canary ends
    /// `promoted`.
    pub async fn promote_canary(&self, adapter: &str, force: bool, actor: &str) -> Result<CanaryStatus, HostError> {
        let digest = self.running_canary(adapter)?.record.digest.clone();
        self.activate(adapter, &digest, force, actor).await?;
        self.end_canary(adapter, CanaryState::Promoted, format!("promoted by {actor}"), actor).await
    }

    /// Ends the canary: its tenants go back to the active version.
    pub async fn stop_canary(&self, adapter: &str, actor: &str) -> Result<CanaryStatus, HostError> {
        self.end_canary(adapter, CanaryState::Stopped, format!("stopped by {actor}"), actor).await
    }

    async fn end_canary(&self, adapter: &str, state: CanaryState, reason: String, actor: &str) -> Result<CanaryStatus, HostError> {
        self.change_canary(adapter, actor, AuditAction::CanaryEnd, |r| {
            r.state = state;
            r.reason = Some(reason);
            r.ended_at_ms = Some(now_ms());
        })
        .await?;
        self.metrics().canaries.with_label_values(&[adapter, state.as_str()]).inc();
        tracing::info!(adapter, state = state.as_str(), actor, "canary ended");
        self.canary_status(adapter)
    }

    fn running_canary(&self, adapter: &str) -> Result<Arc<Canary>, HostError> {
        let c = self.read().canaries.get(adapter).cloned().ok_or_else(|| HostError::UnknownCanary(adapter.to_string()))?;
        if !c.running() {
            let (state, _) = c.state();
            return Err(HostError::Conflict(format!(
                "canary {} of '{adapter}' has ended ({}): start another",
                c.record.id,
                state.as_str()
            )));
        }
        Ok(c)
    }

    async fn change_canary(
        &self,
        adapter: &str,
        actor: &str,
        action: AuditAction,
        change: impl FnOnce(&mut CanaryRecord),
    ) -> Result<CanaryStatus, HostError> {
        let _w = self.writes.lock().await;
        let current = self.running_canary(adapter)?;
        let mut record = current.record.clone();
        change(&mut record);
        let detail = json!({"id": record.id, "percent": record.percent, "state": record.state, "reason": record.reason});
        let audit = audit(actor, action, Some(adapter), None, Some(&record.digest), Some(detail));
        if !self.store.put_canary(&record, &audit).await? {
            return Err(HostError::Conflict(format!("canary {} of '{adapter}' has ended: start another", record.id)));
        }
        let mut registry = self.write();
        registry.canaries.insert(adapter.to_string(), Arc::new(current.refreshed(record)));
        registry.prune();
        drop(registry);
        self.canary_status(adapter)
    }

    /// Counts a call for the canary it ran under, and rolls the canary back when the call
    /// shows it must: at once on this host, then in the store (and so on every replica).
    pub(super) fn observe_canary(&self, canary: &Arc<Canary>, inside: bool, outcome: Result<(), FailureKind>) {
        let Some(why) = canary.observe(inside, outcome) else { return };
        let r = &canary.record;
        tracing::warn!(adapter = %r.adapter, canary = %r.id, digest = %r.digest, "canary rolled back: {why}");
        self.metrics().canaries.with_label_values(&[&r.adapter, CanaryState::RolledBack.as_str()]).inc();
        let mut record = r.clone();
        record.state = CanaryState::RolledBack;
        record.reason = Some(why);
        record.ended_at_ms = Some(now_ms());
        let detail = json!({"id": record.id, "percent": record.percent, "state": record.state, "reason": record.reason});
        let audit = audit("canary", AuditAction::CanaryEnd, Some(&record.adapter), None, Some(&record.digest), Some(detail));
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.put_canary(&record, &audit).await {
                tracing::error!(adapter = %record.adapter, canary = %record.id, "could not store the canary's rollback (it holds on this host): {e}");
            }
        });
    }

    /// Counts the calls recorded since a canary started (a host that loads a running canary
    /// at start-up, or from another host, did not see them).
    pub(super) async fn seed_canary(&self, canary: &Canary) {
        let r = &canary.record;
        let filter = CallFilter { adapter: r.adapter.clone(), since_ms: Some(r.started_at_ms), limit: SEED_CALLS, ..Default::default() };
        let heads = match self.store.recorded_calls(&filter).await {
            Ok(h) => h,
            Err(e) => return tracing::warn!(adapter = %r.adapter, "cannot count the canary's recorded calls: {e}"),
        };
        let pinned: std::collections::HashSet<String> =
            self.read().tenants.values().filter(|t| t.adapter == r.adapter && t.pin.is_some()).map(|t| t.id.clone()).collect();
        let c = &canary.counts;
        for h in heads.iter().filter(|h| !pinned.contains(&h.tenant)) {
            let failed = u64::from(h.outcome != "complete");
            if h.digest == r.digest {
                c.canary_calls.fetch_add(1, Relaxed);
                c.canary_failures.fetch_add(failed, Relaxed);
            } else {
                c.baseline_calls.fetch_add(1, Relaxed);
                c.baseline_failures.fetch_add(failed, Relaxed);
                c.baseline_deadlines.fetch_add(u64::from(h.error_kind.as_deref() == Some("deadline_exceeded")), Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(percent: u8, min_calls: u32) -> Canary {
        Canary::new(CanaryRecord {
            id: "c1".into(),
            adapter: "a".into(),
            digest: "sha256:1".into(),
            percent,
            max_failure_rate_increase: 0.05,
            min_calls,
            excluded: vec!["refused".into()],
            state: CanaryState::Running,
            reason: None,
            started_at_ms: 0,
            started_by: "admin".into(),
            ended_at_ms: None,
        })
    }

    #[test]
    fn the_share_matches_the_percentage_and_only_grows() {
        let tenants: Vec<String> = (0..20_000).map(|i| format!("tenant-{i}")).collect();
        let mut before: Vec<&String> = Vec::new();
        for percent in [1u8, 10, 25, 50, 100] {
            let inside: Vec<&String> = tenants.iter().filter(|t| in_share("c1", t, percent)).collect();
            let share = inside.len() as f64 / tenants.len() as f64 * 100.0;
            // Binomial: 4 standard deviations of 20,000 draws is under 1.5 points.
            assert!((share - f64::from(percent)).abs() < 1.5, "{percent}%: {share:.2}%");
            assert!(before.iter().all(|t| inside.contains(t)), "growing to {percent}% dropped a tenant");
            before = inside;
        }
        assert!(!canary(100, 1).selects("refused"), "a refused tenant is never selected");
    }

    #[test]
    fn a_broken_kind_rolls_back_at_once_and_only_once() {
        let c = canary(50, 50);
        assert_eq!(c.observe(true, Ok(())), None);
        assert!(c.observe(true, Err(FailureKind::Trap)).unwrap().contains("trap"));
        assert!(!c.running() && !c.selects("x"));
        assert_eq!(c.observe(true, Err(FailureKind::Trap)), None, "decided once");
        assert_eq!(c.state().0, CanaryState::RolledBack);
    }

    #[test]
    fn deadlines_roll_back_only_when_the_baseline_has_none() {
        let c = canary(50, 50);
        c.observe(false, Err(FailureKind::DeadlineExceeded));
        assert_eq!(c.observe(true, Err(FailureKind::DeadlineExceeded)), None);
        let c = canary(50, 50);
        assert!(c.observe(true, Err(FailureKind::DeadlineExceeded)).is_some());
    }

    #[test]
    fn the_failure_rate_counts_after_min_calls_against_the_baseline() {
        let c = canary(50, 10);
        for i in 0..100 {
            c.observe(false, if i % 10 == 0 { Err(FailureKind::NotFound) } else { Ok(()) });
        }
        // 10% baseline; the canary at 10% for 9 calls, then 2 of 10 (20%): over +5 points.
        for i in 0..9 {
            assert_eq!(c.observe(true, if i == 0 { Err(FailureKind::NotFound) } else { Ok(()) }), None);
        }
        let why = c.observe(true, Err(FailureKind::Upstream)).expect("rolled back at min_calls");
        assert!(why.contains("20.0%") && why.contains("10.0%"), "{why}");
        let c = canary(50, 10);
        for _ in 0..20 {
            assert_eq!(c.observe(true, Ok(())), None, "no failures, no rollback");
        }
    }
}
