//! Every limit a call runs under, in one place: what an instance may use (memory, time,
//! outbound requests, response and output sizes) and how many calls may run at once (per
//! tenant, and host-wide). Each limit that trips ends the call with a failure that names it.

use crate::error::{CallFailure, FailureKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Per-call limits. Defaults suit CRM mapping code: small heaps, a few round trips.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of one instance, all memories together.
    pub memory_bytes: usize,
    /// Wall-clock budget of one call, outbound requests included; also the CPU deadline.
    pub deadline: Duration,
    /// Budget of one outbound request (connect, first byte, and between body chunks).
    pub request_timeout: Duration,
    /// Largest outbound response body.
    pub max_response_bytes: u64,
    /// Outbound requests one call may make (retries included).
    pub max_outbound_requests: u32,
    /// Largest crmData (JSON text) a call may return.
    pub max_crm_data_bytes: usize,
    /// Calls of one tenant running at once; more are refused at once (`rate_limited`).
    pub max_concurrent_calls_per_tenant: u32,
    /// Instances running at once on this host, every tenant together.
    pub max_instances: u32,
    /// Host-side resources (wasi-http fields, requests, bodies, streams, pollables) one call
    /// may hold at once. With `max_header_bytes` this bounds the host memory a call can pin.
    pub max_resources: usize,
    /// Bytes of one header map (names and values together).
    pub max_header_bytes: usize,
    /// Header entries a call may create in all (a guard against header floods).
    pub max_header_entries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            deadline: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            max_outbound_requests: 50,
            max_crm_data_bytes: 1 << 20,
            max_concurrent_calls_per_tenant: 16,
            max_instances: 256,
            // 256 resources x 64 KiB of headers: at most 16 MiB of host memory per call,
            // well under the 64 MiB of linear memory an instance may have.
            max_resources: 256,
            max_header_bytes: 64 << 10,
            max_header_entries: 4096,
        }
    }
}

/// Caps the linear memory of one instance, all its memories together, and remembers
/// whether the cap was hit so the failure can say so.
pub(crate) struct MemoryCap {
    pub max: usize,
    pub used: usize,
    pub hit: bool,
}

impl MemoryCap {
    pub fn new(max: usize) -> Self {
        MemoryCap { max, used: 0, hit: false }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> anyhow::Result<bool> {
        let total = self.used + desired.saturating_sub(current);
        if total > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> anyhow::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Admission of calls: at most N per tenant and M host-wide at once. Excess calls are refused
/// at once, never queued, so a flooding tenant cannot build an unbounded backlog.
pub struct Admission {
    per_tenant: u32,
    total: u32,
    running: Mutex<(u32, HashMap<String, u32>)>,
}

/// A call's place; released on drop.
pub struct Admitted {
    admission: Arc<Admission>,
    tenant: String,
}

impl Admission {
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Admission {
            per_tenant: limits.max_concurrent_calls_per_tenant.max(1),
            total: limits.max_instances.max(1),
            running: Mutex::default(),
        })
    }

    pub fn enter(self: &Arc<Self>, tenant: &str) -> Result<Admitted, CallFailure> {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_tenant) = &mut *running;
        let mine = per_tenant.get(tenant).copied().unwrap_or(0);
        let refuse = |why: String| {
            let mut f = CallFailure::new(FailureKind::RateLimited, why);
            f.retry_after_ms = Some(100);
            Err(f)
        };
        if mine >= self.per_tenant {
            return refuse(format!(
                "tenant '{tenant}' already has {mine} calls running, its limit (--max-concurrent-calls {}); retry shortly",
                self.per_tenant
            ));
        }
        if *total >= self.total {
            return refuse(format!("the host runs {total} calls, its limit (--max-instances {}); retry shortly", self.total));
        }
        *total += 1;
        per_tenant.insert(tenant.to_string(), mine + 1);
        Ok(Admitted { admission: self.clone(), tenant: tenant.to_string() })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut running = self.admission.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (total, per_tenant) = &mut *running;
        *total -= 1;
        if let Some(n) = per_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                per_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_per_tenant_and_in_total_and_releases_on_drop() {
        let a = Admission::new(&Limits { max_concurrent_calls_per_tenant: 2, max_instances: 3, ..Limits::default() });
        let a1 = a.enter("a").unwrap();
        let _a2 = a.enter("a").unwrap();
        let e = a.enter("a").err().unwrap();
        assert_eq!(e.kind, FailureKind::RateLimited);
        assert!(e.message.contains("--max-concurrent-calls 2"), "{}", e.message);
        let _b1 = a.enter("b").unwrap();
        let e = a.enter("c").err().unwrap();
        assert!(e.message.contains("--max-instances 3"), "{}", e.message);
        drop(a1);
        assert!(a.enter("c").is_ok(), "a released place is free again");
    }
}
