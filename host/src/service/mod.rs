//! The host's operations, independent of HTTP, one concern per file, each an `impl Host`:
//!
//! - [`registry`]: what the host serves from, in memory (adapters, versions, tenants, keys,
//!   compiled components), built from the [`Store`] at start-up.
//! - **Changes** ([`versions`]: deploy, stage, activate, rollback; [`tenants`]: tenants, pins,
//!   keys) are written to the store first, in one transaction with their audit entry, then
//!   applied to the registry. A mutex orders them, so store and registry always agree.
//! - **Calls** ([`calls`]) read only the registry: tenant -> its pin, a canary's candidate or
//!   the active digest -> the compiled component -> a fresh instance ([`Runtime::invoke`]) ->
//!   crmData or a typed failure; then [`Host::finish_call`] counts it, logs it and hands its
//!   trace to the writer.
//! - **Replays** ([`replays`]): recorded calls run offline through another version and
//!   compared with their recordings; the gate that activates a deploy only when they pass.
//! - **Canaries** ([`canary`]): a candidate for a share of the tenants, watched per call and
//!   rolled back by the host when it fails more.
//! - **Webhooks** ([`webhooks`]): a CRM's request -> the adapter -> inbound events, committed
//!   before the CRM gets its 2xx.
//! - **Following** ([`follow`]): with a store other hosts write too, the registry also takes
//!   their changes (the audit log is the change log).

mod calls;
mod canary;
mod follow;
mod overview;
mod registry;
mod replays;
mod retention;
mod stats;
mod tenants;
mod versions;
mod webhooks;

pub use calls::CallOutcome;
pub use canary::{CanaryStart, CanaryStatus};
pub use follow::{DeepHealth, HealthStatus};
pub use overview::{AdapterActivity, MinuteCount, Overview, TenantPage, TenantSummary};
pub use registry::VersionState;
pub use stats::TenantStats;
pub(crate) use tenants::TenantBody;
pub use tenants::RedactedTenant;
pub use versions::{DeployOptions, Deployed, VersionInfo};
pub use webhooks::{WebhookAnswer, EVENT_DEDUP_WINDOW_MS};

use crate::auth::{Auth, Caller};
use crate::error::HostError;
use crate::limits::{Admission, TraceRetention, DEFAULT_EVENT_RETENTION};
use crate::runtime::{Compiled, Runtime};
use crate::store::{Audit, AuditAction, AuditEntry, Store};
use crate::trace::TraceWriter;
use bytes::Bytes;
use registry::Registry;
use serde_json::Value;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Host-wide settings that are not the runtime's.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Recorded calls kept per tenant.
    pub traces: TraceRetention,
    /// How long inbound events are kept.
    pub event_retention: std::time::Duration,
    pub admin_token: Option<String>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions { traces: TraceRetention::DEFAULT, event_retention: DEFAULT_EVENT_RETENTION, admin_token: None }
    }
}

pub struct Host {
    runtime: Runtime,
    store: Arc<dyn Store>,
    registry: RwLock<Registry>,
    writes: tokio::sync::Mutex<()>,
    traces: TraceWriter,
    auth: Auth,
    admission: Arc<Admission>,
    webhook_admission: Arc<Admission>,
    /// Why the last attempt to follow the shared store failed; `None` while it works.
    follow_error: std::sync::Mutex<Option<String>>,
    stats: stats::Stats,
    /// Calls per adapter per minute, for the overview.
    activity: overview::Activity,
    event_retention: std::time::Duration,
    /// Replayed calls running at once, host-wide ([`replays::REPLAY_CONCURRENCY`]).
    replay_slots: tokio::sync::Semaphore,
}

impl Host {
    /// Builds the registry from the store: every adapter's active version, staged versions
    /// and pinned versions are compiled (or taken from the disk cache) before the host serves.
    pub async fn open(runtime: Runtime, store: Arc<dyn Store>, options: HostOptions) -> anyhow::Result<Self> {
        let snapshot = store.snapshot().await?;
        let admission = Admission::new(runtime.limits());
        let webhook_admission = Admission::webhooks(runtime.limits());
        let traces = TraceWriter::start(store.clone(), options.traces.clone(), runtime.metrics().clone());
        let mut registry = Registry::from_snapshot(snapshot);
        runtime.metrics().registry_cursor.set(registry.cursor);
        let mut needed: Vec<String> = registry.needed().into_iter().collect();
        needed.sort();
        for digest in needed {
            let started = Instant::now();
            match load_stored(&runtime, store.as_ref(), &digest).await {
                Ok(c) => {
                    tracing::info!(adapter = %c.description.name, %digest, ms = started.elapsed().as_millis() as u64, "loaded");
                    registry.compiled.insert(digest, c);
                }
                Err(e) => tracing::error!(%digest, "stored version cannot be loaded; its tenants fail until it is replaced: {e}"),
            }
        }
        let host = Host {
            runtime,
            store,
            registry: RwLock::new(registry),
            writes: tokio::sync::Mutex::new(()),
            traces,
            auth: Auth::new(options.admin_token.as_deref()),
            admission,
            webhook_admission,
            follow_error: std::sync::Mutex::new(None),
            stats: stats::Stats::default(),
            activity: overview::Activity::default(),
            event_retention: options.event_retention,
            replay_slots: tokio::sync::Semaphore::new(replays::REPLAY_CONCURRENCY),
        };
        let canaries: Vec<_> = host.read().canaries.values().filter(|c| c.running()).cloned().collect();
        for c in canaries {
            host.seed_canary(&c).await;
        }
        host.prune_compile_cache(true).await;
        Ok(host)
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.runtime.metrics()
    }

    /// A panic elsewhere while holding the lock leaves the registry as it was (every change
    /// to it is a handful of map inserts after the store committed), so go on.
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn identify(&self, authorization: Option<&str>) -> Caller {
        self.auth.identify(authorization, |id| self.read().keys.get(id).cloned())
    }

    pub fn is_open(&self) -> bool {
        self.auth.is_open()
    }

    pub async fn audit_log(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, HostError> {
        Ok(self.store.audit_after(after, limit).await?)
    }
}

/// The audit entry a change commits with.
fn audit(actor: &str, action: AuditAction, adapter: Option<&str>, tenant: Option<&str>, digest: Option<&str>, detail: Option<Value>) -> Audit {
    Audit {
        at_ms: now_ms(),
        actor: actor.to_string(),
        action,
        adapter: adapter.map(str::to_string),
        tenant: tenant.map(str::to_string),
        digest: digest.map(str::to_string),
        detail,
    }
}

/// A stored version compiled: from the store's blob, through the disk cache (so usually
/// without compiling).
async fn load_stored(runtime: &Runtime, store: &dyn Store, digest: &str) -> Result<Arc<Compiled>, HostError> {
    let bytes = store
        .blob(digest)
        .await?
        .ok_or_else(|| HostError::Internal(format!("the component bytes of {digest} are missing from the store")))?;
    runtime.load(Bytes::from(bytes)).await
}

/// Names that appear in URL paths: letters, digits, `.`, `_`, `-`; 1-128 chars.
fn check_id(what: &str, id: &str) -> Result<(), HostError> {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(HostError::BadRequest(format!("{what} '{id}' must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'")))
    }
}

/// 128 bits, hex: the time in milliseconds (48 bits, as in a UUIDv7), then 80 random bits,
/// unique without coordination between hosts (call ids, report ids). Time first, so that the
/// unique index on call ids (a B-tree, in SQLite as in PostgreSQL) takes each new one at its
/// end: random ids land on random leaf pages, and with 50 tenants' traces stored a batch of
/// traces wrote a third more bytes and read back 2.4 times as many (BENCHMARKS.md).
pub(crate) fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&(now_ms() as u64).to_be_bytes()[2..]);
    rand::thread_rng().fill_bytes(&mut b[6..]);
    crate::auth::hex(&b)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_in_the_order_they_were_minted() {
        let first = super::new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ids: Vec<String> = (0..1000).map(|_| super::new_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())), "{ids:?}");
        assert!(ids.iter().all(|id| *id > first), "a later millisecond sorts after an earlier one");
        // Within a millisecond the 80 random bits keep them apart (and apart across hosts).
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let now = super::now_ms() as u64;
        let stamped = u64::from_str_radix(&ids[0][..12], 16).unwrap();
        assert!(stamped <= now && now - stamped < 60_000, "the first 48 bits are the time in ms: {stamped} against {now}");
    }
}
