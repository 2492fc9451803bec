//! Prometheus metrics, served as text on `GET /metrics`, which needs no credentials. So no
//! label value comes from a caller: adapters and their declared operations (what an admin
//! deployed; any other func_id is `unsupported`), declared CRM origins (a tenant's endpoint
//! field is `endpoint`: it names the customer), and fixed sets (outcomes, kinds, statuses).
//! No tenant ids: per-tenant figures are read through the admin API (`/v1/tenants/{t}/stats`).

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub calls: IntCounterVec,
    pub call_seconds: HistogramVec,
    pub outbound: IntCounterVec,
    pub outbound_seconds: HistogramVec,
    pub outbound_retries: IntCounterVec,
    pub deploys: IntCounterVec,
    /// Replays by adapter and verdict.
    pub replays: IntCounterVec,
    /// Canary rollouts ended, by adapter and how (promoted, rolled_back, stopped).
    pub canaries: IntCounterVec,
    pub instances_in_flight: IntGauge,
    /// Instances created, for every export (calls, webhooks, deploy checks).
    pub instances: prometheus::IntCounter,
    pub compile_cache: IntCounterVec,
    pub traces_dropped: prometheus::IntCounter,
    pub webhooks: IntCounterVec,
    pub inbound_events: IntCounterVec,
    /// With a shared store: the last audit entry this host has applied, and how following
    /// the other hosts goes.
    pub registry_cursor: IntGauge,
    pub registry_changes: prometheus::IntCounter,
    pub registry_follow_failures: prometheus::IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("metric registered once");
            h
        };
        let calls = counter(
            "crm_calls_total",
            "Adapter calls by adapter, func_id, outcome and failure kind",
            &["adapter", "func_id", "outcome", "kind"],
        );
        let call_seconds = histogram("crm_call_duration_seconds", "Call latency inside the host", &["adapter", "func_id"]);
        let outbound = counter(
            "crm_outbound_requests_total",
            "Outbound request attempts by adapter, declared CRM origin (or endpoint) and status (or error)",
            &["adapter", "host", "status"],
        );
        let outbound_seconds = histogram("crm_outbound_duration_seconds", "Outbound request attempt latency", &["adapter", "host"]);
        let outbound_retries =
            counter("crm_outbound_retries_total", "Outbound requests retried, by reason", &["adapter", "host", "reason"]);
        let deploys = counter("crm_deploys_total", "Deploys by adapter and result", &["adapter", "result"]);
        let replays = counter("crm_replays_total", "Replays of recorded calls by adapter and verdict", &["adapter", "verdict"]);
        let canaries = counter("crm_canaries_ended_total", "Canary rollouts ended, by adapter and how", &["adapter", "state"]);
        let webhooks = counter("crm_webhooks_total", "Webhook requests by adapter and answered status", &["adapter", "status"]);
        let inbound_events =
            counter("crm_inbound_events_total", "Inbound messages by adapter: stored, or dropped as duplicates", &["adapter", "result"]);
        let compile_cache = counter("crm_compile_cache_total", "On-disk compile cache lookups by result", &["result"]);
        let instances_in_flight = IntGauge::new("crm_instances_in_flight", "Wasm instances running now").expect("valid metric");
        registry.register(Box::new(instances_in_flight.clone())).expect("metric registered once");
        let traces_dropped = prometheus::IntCounter::new(
            "crm_call_traces_dropped_total",
            "Call traces not recorded: the recorder was behind, or the database failed",
        )
        .expect("valid metric");
        registry.register(Box::new(traces_dropped.clone())).expect("metric registered once");
        let registry_cursor =
            IntGauge::new("crm_registry_cursor", "The last audit entry this host's view includes").expect("valid metric");
        registry.register(Box::new(registry_cursor.clone())).expect("metric registered once");
        let plain = |name: &str, help: &str| {
            let c = prometheus::IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let instances = plain("crm_instances_total", "Wasm instances created (calls, webhooks and deploy checks)");
        let registry_changes = plain("crm_registry_changes_applied_total", "Audit entries of the shared store applied to this host's view");
        let registry_follow_failures =
            plain("crm_registry_follow_failures_total", "Attempts to follow the shared store that failed (the database did not answer)");
        Metrics {
            registry,
            calls,
            call_seconds,
            outbound,
            outbound_seconds,
            outbound_retries,
            deploys,
            replays,
            canaries,
            instances_in_flight,
            instances,
            compile_cache,
            traces_dropped,
            webhooks,
            inbound_events,
            registry_cursor,
            registry_changes,
            registry_follow_failures,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts an instance as running for as long as it lives.
pub struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    pub fn enter(g: &'a IntGauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
