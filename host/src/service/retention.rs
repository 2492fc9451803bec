//! What the host keeps, kept bounded off the request path: inbound events older than the
//! retention are deleted in batches (recorded calls are bounded as they are written, by
//! [`TraceRetention`](crate::limits::TraceRetention)), and the compile cache holds entries of
//! stored versions for this engine build only.

use super::{now_ms, Host};
use crate::error::HostError;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often old events are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Events deleted per statement: short transactions, so webhooks never wait long for one.
const SWEEP_BATCH: u32 = 1000;

impl Host {
    /// Deletes old inbound events now and every [`SWEEP_EVERY`], for as long as the host runs.
    pub fn keep_tidy(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(h) = host.upgrade() else { return };
                match h.sweep_events().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "deleted inbound events past their retention"),
                    Err(e) => tracing::warn!("could not delete old inbound events (retried later): {e}"),
                }
                drop(h);
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
    }

    /// Deletes every inbound event received longer than the retention ago, a batch at a time;
    /// how many.
    pub async fn sweep_events(&self) -> Result<u64, HostError> {
        let before = now_ms().saturating_sub(self.event_retention.as_millis() as i64);
        let mut deleted = 0;
        loop {
            let n = self.store.delete_events_before(before, SWEEP_BATCH).await?;
            deleted += n;
            if n < u64::from(SWEEP_BATCH) {
                return Ok(deleted);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes compile-cache entries of versions no longer stored (and, at start-up, of other
    /// engine builds and interrupted writes).
    pub(super) async fn prune_compile_cache(&self, at_start: bool) {
        let Some(cache) = self.runtime.compile_cache().cloned() else { return };
        let keep: HashSet<String> = self.read().versions.values().flatten().map(|v| v.digest.clone()).collect();
        let removed = tokio::task::spawn_blocking(move || cache.retain(&keep, at_start)).await.unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "removed compile-cache entries of versions no longer stored or of other engine builds");
        }
    }
}
