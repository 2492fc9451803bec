//! What the console's overview shows: calls and failures per adapter, minute by minute over
//! the last hour, counted in memory by this host (not read back from Prometheus); and the
//! admin's paged, searchable list of tenants.

use super::Host;
use crate::lock;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use utoipa::ToSchema;

/// Minutes an adapter's activity is kept.
const MINUTES: i64 = 60;

/// Calls per adapter per minute, the last hour's.
#[derive(Default)]
pub(super) struct Activity(Mutex<HashMap<String, VecDeque<Minute>>>);

#[derive(Clone, Copy)]
struct Minute {
    /// Unix minutes.
    at: i64,
    calls: u64,
    failures: u64,
}

impl Activity {
    pub fn record(&self, adapter: &str, failed: bool, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000);
        let mut all = lock(&self.0);
        let ring = match all.get_mut(adapter) {
            Some(r) => r,
            None => all.entry(adapter.to_string()).or_default(),
        };
        match ring.back_mut() {
            Some(m) if m.at == minute => {
                m.calls += 1;
                m.failures += u64::from(failed);
            }
            _ => ring.push_back(Minute { at: minute, calls: 1, failures: u64::from(failed) }),
        }
        while ring.front().is_some_and(|m| m.at <= minute - MINUTES) {
            ring.pop_front();
        }
    }

    /// Each adapter's last 60 minutes, oldest first, a zero for a minute without calls.
    fn last_hour(&self, now_ms: i64) -> Vec<AdapterActivity> {
        let now = now_ms.div_euclid(60_000);
        let all = lock(&self.0);
        let mut out: Vec<AdapterActivity> = all
            .iter()
            .map(|(adapter, ring)| {
                let minutes: Vec<MinuteCount> = (now - MINUTES + 1..=now)
                    .map(|at| {
                        let m = ring.iter().find(|m| m.at == at);
                        MinuteCount {
                            at: crate::time::rfc3339(at * 60_000),
                            calls: m.map_or(0, |m| m.calls),
                            failures: m.map_or(0, |m| m.failures),
                        }
                    })
                    .collect();
                let calls = minutes.iter().map(|m| m.calls).sum::<u64>();
                let failures = minutes.iter().map(|m| m.failures).sum::<u64>();
                let failure_rate = if calls == 0 { 0.0 } else { failures as f64 / calls as f64 };
                AdapterActivity { adapter: adapter.clone(), calls, failures, failure_rate, minutes }
            })
            .collect();
        out.sort_by(|a, b| a.adapter.cmp(&b.adapter));
        out
    }
}

/// `GET /v1/overview`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub at: String,
    pub health: super::DeepHealth,
    pub tenants: usize,
    /// Every adapter called in the last hour on this host.
    pub adapters: Vec<AdapterActivity>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdapterActivity {
    pub adapter: String,
    pub calls: u64,
    pub failures: u64,
    pub failure_rate: f64,
    /// The last 60 minutes, oldest first.
    pub minutes: Vec<MinuteCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteCount {
    /// The minute's start.
    pub at: String,
    pub calls: u64,
    pub failures: u64,
}

/// One tenant in `GET /v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub tenant: String,
    pub adapter: String,
    pub project_id: String,
    pub pin: Option<String>,
    pub updated_at: String,
}

/// `GET /v1/tenants`: a page, and the cursor of the next (`null` at the end).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub tenants: Vec<TenantSummary>,
    pub next: Option<String>,
}

impl Host {
    pub async fn overview(&self) -> Overview {
        let now = super::now_ms();
        Overview {
            at: crate::time::rfc3339(now),
            health: self.health().await,
            tenants: self.read().tenants.len(),
            adapters: self.activity.last_hour(now),
        }
    }

    /// Tenants by id after `after`, of `adapter` when given, whose id or project id contains
    /// `q` (any case) when given.
    pub fn list_tenants(&self, after: Option<&str>, limit: usize, adapter: Option<&str>, q: Option<&str>) -> TenantPage {
        let q = q.map(str::to_lowercase).filter(|q| !q.is_empty());
        let registry = self.read();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<TenantSummary> = registry
            .tenants
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, t)| t)
            .filter(|t| adapter.is_none_or(|a| t.adapter == a))
            .filter(|t| {
                q.as_deref().is_none_or(|q| t.id.to_lowercase().contains(q) || t.project_id.to_lowercase().contains(q))
            })
            .take(limit + 1)
            .map(|t| TenantSummary {
                tenant: t.id.clone(),
                adapter: t.adapter.clone(),
                project_id: t.project_id.clone(),
                pin: t.pin.clone(),
                updated_at: crate::time::rfc3339(t.updated_at_ms),
            })
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|t| t.tenant.clone()).unwrap_or_default()
        });
        TenantPage { tenants: page, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_keeps_an_hour_by_minute() {
        let a = Activity::default();
        let t0 = 1_767_000_000_000;
        a.record("plando", false, t0);
        a.record("plando", true, t0 + 1_000);
        a.record("plando", false, t0 + 60_000);
        let hour = a.last_hour(t0 + 60_000);
        assert_eq!(hour[0].minutes.len(), 60);
        let last: Vec<(u64, u64)> = hour[0].minutes[58..].iter().map(|m| (m.calls, m.failures)).collect();
        assert_eq!(last, [(2, 1), (1, 0)]);
        assert_eq!((hour[0].calls, hour[0].failures), (3, 1));
        let later = a.last_hour(t0 + 60 * 60_000);
        assert_eq!(later[0].calls, 1, "the first minute has gone");
        a.record("plando", false, t0 + 120 * 60_000);
        assert_eq!(lock(&a.0)["plando"].len(), 1, "old minutes are dropped as new ones come");
    }
}
