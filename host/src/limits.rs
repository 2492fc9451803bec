//! Every limit, in one place: what an instance may use (memory, time, outbound requests,
//! header entries, response, request and output sizes), a tenant's overrides and their
//! ceilings, how many calls may run at once (per tenant, and host-wide), the API's body caps
//! and what the host keeps (trace bodies, idle connections). Each limit that trips ends the
//! call with a failure that names it.

use crate::error::{CallFailure, FailureKind, FieldError};
use crate::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// The largest linear memory any call may be given (a tenant's `memoryMb` ceiling); the
/// pooling allocator sizes its slots for it.
pub const MAX_MEMORY_BYTES: usize = 4 << 30;

/// The longest `Retry-After` the host takes from a CRM; longer ones count as this long (a
/// wait past the call's deadline means no retry either way).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Largest request body an adapter may send (buffered whole: retries resend it).
pub const MAX_OUTBOUND_REQUEST_BODY: usize = 4 << 20;

/// Largest component upload (`PUT /v1/adapters/{name}`).
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Largest JSON body of the API (a chat with a long transcript).
pub const MAX_JSON_BYTES: usize = 8 << 20;
/// Largest webhook body: CRM notifications are small forms.
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// Largest body kept per request or response in a trace.
pub const MAX_TRACE_BODY: usize = 64 << 10;
/// Bodies and headers a call's trace keeps in all; exchanges past it are recorded without
/// them (`omitted`).
pub const MAX_TRACE_BYTES_PER_CALL: usize = 1 << 20;
/// Longest URL a trace keeps of an outbound request.
pub const MAX_RECORDED_URL: usize = 8 << 10;
/// What the host keeps of a tenant's recorded calls: the newest, up to `calls` of them and
/// `trace_bytes` of their traces (`--trace-retention`, `--trace-retention-bytes`). A trace is
/// at most a capped request and 2 capped bodies per outbound request (about 6.5 MiB with
/// the defaults), so the newest call always fits.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRetention {
    pub calls: u32,
    pub trace_bytes: u64,
}

impl TraceRetention {
    pub const DEFAULT: TraceRetention = TraceRetention { calls: 1000, trace_bytes: 16 << 20 };
}

/// Inbound events are deleted this long after they were received (`--event-retention-days`).
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Idle keep-alive connections to CRMs: closed after this long unused, at most so many per
/// address and TLS name, and so many in all.
pub const OUTBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const OUTBOUND_IDLE_PER_KEY: usize = 256;
pub const OUTBOUND_IDLE_TOTAL: usize = 2048;

/// The API's front door: how many connections it holds open, how long a client may take to
/// send a request's head and its body, and how many body bytes it reads or holds at once.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    /// Open connections; past it a new one gets a `503` and is closed. Each costs at most
    /// `HEAD_BUFFER` of header buffer plus a task, so this bounds the memory idle clients hold.
    pub max_connections: usize,
    /// From a connection's start, or its previous answer, until the next request's head has
    /// arrived: slow heads (slowloris) and idle keep-alive connections both end here.
    pub header_timeout: Duration,
    /// From a request's head until its whole body has arrived (slow bodies): `408`.
    pub body_timeout: Duration,
    /// Request-body bytes being read or held at once, all requests together; a body that
    /// does not fit is refused (`503 overloaded`, `Retry-After`) before it is read. An eighth
    /// of it is for webhooks (anyone may post one), the rest for authenticated requests.
    pub max_inflight_body_bytes: usize,
}

impl FrontDoor {
    pub const DEFAULT: FrontDoor = FrontDoor {
        max_connections: 4096,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(60),
        max_inflight_body_bytes: 256 << 20,
    };
}

/// The buffer a connection reads a request's head into: heads larger than this are refused
/// (`431`). hyper's smallest is 8 KiB.
pub const HEAD_BUFFER: usize = 32 << 10;

/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

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
    /// Bytes of outbound bodies a call may make the host hold at once: requests (buffered
    /// whole, for retries) and responses (read whole before the adapter sees them), all its
    /// requests together.
    pub max_outbound_bytes: u64,
    /// Largest crmData (JSON text) a call may return.
    pub max_crm_data_bytes: usize,
    /// Calls of one tenant running at once; more are refused at once (`rate_limited`).
    pub max_concurrent_calls_per_tenant: u32,
    /// Instances running calls at once on this host, every tenant together.
    pub max_instances: u32,
    /// Webhooks handled at once on this host, and per tenant: a budget apart from calls, so
    /// that forged webhooks (anyone may post them) never take a call's place.
    pub max_webhooks: u32,
    pub max_webhooks_per_tenant: u32,
    /// Host-side resources (wasi-http fields, requests, bodies, streams, pollables) one call
    /// may hold at once. With `max_header_bytes` this bounds the host memory a call can pin.
    pub max_resources: usize,
    /// Bytes of one header map (names and values together).
    pub max_header_bytes: usize,
    /// Header entries a call may create in all (a guard against header floods).
    pub max_header_entries: u32,
    /// Fuel (roughly, wasm instructions) one call may burn; `None` turns metering off
    /// host-wide (the deadline still bounds CPU).
    pub fuel: Option<u64>,
}

impl Limits {
    /// The host's defaults (`crm-host serve`'s, flag by flag).
    pub const DEFAULT: Limits = Limits {
        memory_bytes: 64 << 20,
        deadline: Duration::from_secs(15),
        request_timeout: Duration::from_secs(10),
        max_response_bytes: 4 << 20,
        max_outbound_requests: 50,
        max_outbound_bytes: 16 << 20,
        max_crm_data_bytes: 1 << 20,
        max_concurrent_calls_per_tenant: 16,
        max_instances: 256,
        max_webhooks: 32,
        max_webhooks_per_tenant: 4,
        // 256 resources x 64 KiB of headers: at most 16 MiB of header maps per call (see
        // `host_bytes_per_call` for everything a call can make the host hold).
        max_resources: 256,
        max_header_bytes: 64 << 10,
        max_header_entries: 4096,
        fuel: None,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A tenant's own limits, stored with the tenant; each field left out follows the host's
/// default. Set by the operator (admin), bounded by ceilings (README, Tenants) so that a
/// typo cannot hand one tenant the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_outbound_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_outbound_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_crm_data_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_calls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resources: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

impl TenantLimits {
    /// `(field, value, largest value an override may ask for)`.
    fn fields(&self) -> [(&'static str, Option<u64>, u64); 10] {
        // Ceilings of what a tenant can make the host hold: 16 times the defaults' header
        // maps and outbound bodies (see `host_bytes_per_call`).
        [
            ("memoryMb", self.memory_mb, (MAX_MEMORY_BYTES >> 20) as u64),
            ("deadlineMs", self.deadline_ms, 300_000),
            ("requestTimeoutMs", self.request_timeout_ms, 300_000),
            ("maxResponseBytes", self.max_response_bytes, 256 << 20),
            ("maxOutboundRequests", self.max_outbound_requests, 10_000),
            ("maxOutboundBytes", self.max_outbound_bytes, 256 << 20),
            ("maxCrmDataBytes", self.max_crm_data_bytes, 64 << 20),
            ("maxConcurrentCalls", self.max_concurrent_calls, 4096),
            ("maxResources", self.max_resources, 4096),
            ("fuel", self.fuel, u64::MAX),
        ]
    }

    /// Every value between 1 and its ceiling; `fuel` only on a host that meters fuel.
    pub fn check(&self, fuel_metering: bool) -> Result<(), FieldError> {
        for (name, value, ceiling) in self.fields() {
            let Some(v) = value else { continue };
            let field = format!("limits.{name}");
            if v == 0 || v > ceiling {
                let message = format!("{field} must be between 1 and {ceiling}, not {v}");
                return Err(FieldError { field, message });
            }
        }
        if self.fuel.is_some() && !fuel_metering {
            return Err(FieldError {
                field: "limits.fuel".into(),
                message: "limits.fuel needs fuel metering, which this host runs without (start it with --fuel N)".into(),
            });
        }
        Ok(())
    }

    /// The host's defaults with this tenant's overrides on top.
    pub fn apply(&self, base: &Limits) -> Limits {
        let mut l = base.clone();
        let clamp = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        if let Some(v) = self.memory_mb {
            l.memory_bytes = clamp(v) << 20;
        }
        if let Some(v) = self.deadline_ms {
            l.deadline = Duration::from_millis(v);
        }
        if let Some(v) = self.request_timeout_ms {
            l.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.max_response_bytes {
            l.max_response_bytes = v;
        }
        if let Some(v) = self.max_outbound_requests {
            l.max_outbound_requests = v as u32;
        }
        if let Some(v) = self.max_outbound_bytes {
            l.max_outbound_bytes = v;
        }
        if let Some(v) = self.max_crm_data_bytes {
            l.max_crm_data_bytes = clamp(v);
        }
        if let Some(v) = self.max_concurrent_calls {
            l.max_concurrent_calls_per_tenant = v as u32;
        }
        if let Some(v) = self.max_resources {
            l.max_resources = clamp(v);
        }
        if self.fuel.is_some() {
            l.fuel = self.fuel;
        }
        l
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
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used + desired.saturating_sub(current);
        if total > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What one call spends of its per-call counts (outbound requests, header entries), and the
/// first limit that ended it.
#[derive(Debug, Default)]
pub struct CallBudget {
    requests: AtomicU32,
    headers: AtomicU32,
    /// Bytes of outbound bodies the host holds for the call now.
    held: Arc<AtomicU64>,
    /// Bytes of bodies and headers recorded in the call's trace so far.
    recorded: AtomicUsize,
    hit: Mutex<Option<(FailureKind, String)>>,
}

impl CallBudget {
    /// Counts one more outbound request; `false` once `max` are spent (and the call is
    /// marked as ended by that limit).
    pub fn take_request(&self, max: u32) -> bool {
        self.requests.fetch_add(1, Relaxed) < max
            || self.hit(
                FailureKind::OutboundLimitExceeded,
                format!("the adapter made more than the {max} outbound requests a call may make (--max-outbound-requests)"),
            )
    }

    /// Takes one more request for a retry if any is left; never ends the call (a retry that
    /// does not fit is simply not made).
    pub fn take_retry(&self, max: u32) -> bool {
        self.requests.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Counts one more header entry; `false` once `max` are spent.
    pub fn take_header(&self, max: u32) -> bool {
        self.headers.fetch_add(1, Relaxed) < max
            || self.hit(
                FailureKind::ResourceLimitExceeded,
                format!("the adapter created more than the {max} header entries a call may create (--max-header-entries)"),
            )
    }

    /// An empty hold on the call's outbound bytes, grown as a body is buffered.
    pub fn hold(&self) -> Held {
        Held { held: self.held.clone(), n: 0 }
    }

    /// Counts `n` more bytes recorded in the trace; `false` (and nothing counted) once the
    /// call's trace would pass [`MAX_TRACE_BYTES_PER_CALL`].
    pub fn take_recorded(&self, n: usize) -> bool {
        self.recorded.fetch_update(Relaxed, Relaxed, |used| used.checked_add(n).filter(|t| *t <= MAX_TRACE_BYTES_PER_CALL)).is_ok()
    }

    /// Records the first limit that ended the call; always `false` (nothing more is allowed).
    pub fn hit(&self, kind: FailureKind, why: String) -> bool {
        lock(&self.hit).get_or_insert((kind, why));
        false
    }

    pub fn limit_hit(&self) -> Option<(FailureKind, String)> {
        lock(&self.hit).clone()
    }
}

/// Bytes of a call's outbound bodies the host holds, given back when the body is dropped.
#[derive(Debug)]
pub struct Held {
    held: Arc<AtomicU64>,
    n: u64,
}

impl Held {
    /// Holds `more` bytes if the call's total stays within `max`; `false` (nothing taken)
    /// otherwise.
    pub fn grow(&mut self, more: u64, max: u64) -> bool {
        let taken = self.held.fetch_update(Relaxed, Relaxed, |now| now.checked_add(more).filter(|t| *t <= max)).is_ok();
        if taken {
            self.n += more;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.n, Relaxed);
    }
}

/// A budget a buffer takes its room from; it may refuse.
pub trait Room {
    /// Takes `bytes` more; `false` (nothing taken) when they do not fit.
    fn take(&mut self, bytes: usize) -> bool;
}

/// A call's outbound bytes, up to `max` for the whole call.
pub struct Within {
    pub held: Held,
    pub max: u64,
}

impl Room for Within {
    fn take(&mut self, bytes: usize) -> bool {
        self.held.grow(bytes as u64, self.max)
    }
}

/// A body buffered whole whose every growth takes its room first, so what the buffer holds
/// (its capacity, not just its length) is what the room counts. It grows by doubling, but
/// never past the length the body announced (or its cap), so a client that announces much
/// and sends little holds little.
pub struct CountedBuffer<R> {
    bytes: Vec<u8>,
    room: R,
    cap: usize,
    grow_to: usize,
}

pub enum Overflow {
    /// Past the body's own cap.
    Cap,
    /// Past the room's budget.
    Room,
}

impl<R: Room> CountedBuffer<R> {
    /// `cap`: the largest the body may be; `announced`: its declared length, if any.
    pub fn new(room: R, cap: usize, announced: Option<usize>) -> Self {
        CountedBuffer { bytes: Vec::new(), room, cap, grow_to: announced.unwrap_or(cap).min(cap) }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn push(&mut self, data: &[u8]) -> Result<(), Overflow> {
        let needed = self.bytes.len() + data.len();
        if needed > self.cap {
            return Err(Overflow::Cap);
        }
        let capacity = self.bytes.capacity();
        if needed > capacity {
            let grown = (capacity * 2).min(self.grow_to).max(needed);
            if !self.room.take(grown - capacity) {
                return Err(Overflow::Room);
            }
            self.bytes.reserve_exact(grown - self.bytes.len());
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// The bytes, and their room (given back when it is dropped).
    pub fn finish(self) -> (bytes::Bytes, R) {
        (bytes::Bytes::from(self.bytes), self.room)
    }
}

/// Everything one call can make the host hold, at most, besides its instance's linear
/// memory: header maps (`max_resources` of `max_header_bytes`), outbound bodies
/// (`max_outbound_bytes`) and its trace ([`MAX_TRACE_BYTES_PER_CALL`] of bodies and headers;
/// the rest of a recorded exchange is a few hundred bytes and a URL of at most
/// [`MAX_RECORDED_URL`]).
pub fn host_bytes_per_call(l: &Limits) -> u64 {
    let exchanges = u64::from(l.max_outbound_requests) * (512 + MAX_RECORDED_URL as u64);
    (l.max_resources * l.max_header_bytes) as u64 + l.max_outbound_bytes + MAX_TRACE_BYTES_PER_CALL as u64 + exchanges
}

/// The crmData cap, checked on the text's size while it is still in guest memory.
pub fn check_crm_data_size(len: usize, max_bytes: usize) -> Result<(), CallFailure> {
    if len > max_bytes {
        return Err(CallFailure::new(
            FailureKind::InvalidOutput,
            format!("the adapter returned {len} bytes of crmData, more than the {max_bytes} bytes allowed (--max-crm-data-bytes)"),
        ));
    }
    Ok(())
}

/// Admission of calls: at most N per tenant and M host-wide at once. Excess calls are refused
/// at once, never queued, so a flooding tenant cannot build an unbounded backlog.
pub struct Admission {
    total: u32,
    /// What is admitted (`calls`, `webhooks`) and the flags of its two caps, for messages.
    what: &'static str,
    flags: (&'static str, &'static str),
    running: Mutex<(u32, HashMap<String, u32>)>,
}

/// A call's place; released on drop.
pub struct Admitted {
    admission: Arc<Admission>,
    tenant: String,
}

impl Admission {
    /// Calls: `--max-concurrent-calls` per tenant, `--max-instances` in all.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Admission {
            total: limits.max_instances.max(1),
            what: "calls",
            flags: ("--max-concurrent-calls", "--max-instances"),
            running: Mutex::default(),
        })
    }

    /// Webhooks, apart from calls: `--max-webhooks-per-tenant`, `--max-webhooks`.
    pub fn webhooks(limits: &Limits) -> Arc<Self> {
        Arc::new(Admission {
            total: limits.max_webhooks.max(1),
            what: "webhooks",
            flags: ("--max-webhooks-per-tenant", "--max-webhooks"),
            running: Mutex::default(),
        })
    }

    /// Admits one call of `tenant`, whose own cap is `per_tenant`.
    pub fn enter(self: &Arc<Self>, tenant: &str, per_tenant: u32) -> Result<Admitted, CallFailure> {
        let per_tenant_cap = per_tenant.max(1);
        let mut running = lock(&self.running);
        let (total, per_tenant) = &mut *running;
        let mine = per_tenant.get(tenant).copied().unwrap_or(0);
        let refuse = |why: String| {
            let mut f = CallFailure::new(FailureKind::RateLimited, why);
            f.retry_after_ms = Some(100);
            Err(f)
        };
        let (what, (tenant_flag, host_flag)) = (self.what, self.flags);
        if mine >= per_tenant_cap {
            return refuse(format!(
                "tenant '{tenant}' already has {mine} {what} running, its limit ({tenant_flag} {per_tenant_cap}); retry shortly"
            ));
        }
        if *total >= self.total {
            return refuse(format!("the host runs {total} {what}, its limit ({host_flag} {}); retry shortly", self.total));
        }
        *total += 1;
        per_tenant.insert(tenant.to_string(), mine + 1);
        Ok(Admitted { admission: self.clone(), tenant: tenant.to_string() })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut running = lock(&self.admission.running);
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
        let a = Admission::new(&Limits { max_instances: 3, ..Limits::default() });
        let a1 = a.enter("a", 2).unwrap();
        let _a2 = a.enter("a", 2).unwrap();
        let e = a.enter("a", 2).err().unwrap();
        assert_eq!(e.kind, FailureKind::RateLimited);
        assert!(e.message.contains("--max-concurrent-calls 2"), "{}", e.message);
        let _b1 = a.enter("b", 2).unwrap();
        let e = a.enter("c", 2).err().unwrap();
        assert!(e.message.contains("--max-instances 3"), "{}", e.message);
        drop(a1);
        assert!(a.enter("c", 2).is_ok(), "a released place is free again");
    }

    /// The host memory one call can pin counts every part (SECURITY.md), and no tenant's
    /// overrides, each at its ceiling, can raise it past 256 times the default.
    #[test]
    fn a_tenant_at_every_ceiling_stays_within_256_times_the_default_host_memory() {
        let base = Limits::DEFAULT;
        let default = host_bytes_per_call(&base);
        assert!(default < 40 << 20, "{default}");
        let mut all = TenantLimits::default();
        for (name, _, ceiling) in all.fields() {
            let v = Some(ceiling);
            match name {
                "memoryMb" => all.memory_mb = v,
                "deadlineMs" => all.deadline_ms = v,
                "requestTimeoutMs" => all.request_timeout_ms = v,
                "maxResponseBytes" => all.max_response_bytes = v,
                "maxOutboundRequests" => all.max_outbound_requests = v,
                "maxOutboundBytes" => all.max_outbound_bytes = v,
                "maxCrmDataBytes" => all.max_crm_data_bytes = v,
                "maxConcurrentCalls" => all.max_concurrent_calls = v,
                "maxResources" => all.max_resources = v,
                "fuel" => all.fuel = v,
                other => panic!("a limit this test does not know: {other}"),
            }
        }
        assert_eq!(all.check(true), Ok(()));
        let worst = host_bytes_per_call(&all.apply(&base));
        assert!(worst <= 256 * default, "{worst} > 256 x {default}");
    }

    #[test]
    fn held_bytes_are_bounded_and_given_back() {
        let budget = CallBudget::default();
        let (mut a, mut b) = (budget.hold(), budget.hold());
        assert!(a.grow(6, 10));
        assert!(!b.grow(5, 10), "past the call's total");
        assert!(b.grow(4, 10));
        drop(a);
        assert!(b.grow(6, 10), "a dropped hold is given back");
    }

    #[test]
    fn tenant_overrides_apply_on_top_and_are_bounded() {
        let base = Limits::default();
        let t = TenantLimits { memory_mb: Some(8), deadline_ms: Some(500), max_concurrent_calls: Some(2), ..Default::default() };
        assert_eq!(t.check(false), Ok(()));
        let l = t.apply(&base);
        assert_eq!((l.memory_bytes, l.deadline, l.max_concurrent_calls_per_tenant), (8 << 20, Duration::from_millis(500), 2));
        assert_eq!(l.max_outbound_requests, base.max_outbound_requests, "the rest follows the host");
        let too_big = TenantLimits { memory_mb: Some(1 << 20), ..Default::default() };
        assert_eq!(too_big.check(false).unwrap_err().field, "limits.memoryMb");
        let zero = TenantLimits { deadline_ms: Some(0), ..Default::default() };
        assert!(zero.check(false).unwrap_err().message.contains("between 1 and 300000"));
        let fuel = TenantLimits { fuel: Some(1000), ..Default::default() };
        assert!(fuel.check(false).unwrap_err().message.contains("--fuel"));
        assert_eq!(fuel.check(true), Ok(()));
        assert!(serde_json::from_str::<TenantLimits>(r#"{"memoryMB": 3}"#).is_err(), "unknown fields are refused");
    }
}
