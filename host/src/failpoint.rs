//! Crash-test hooks. `CRM_HOST_FAILPOINT=NAME` makes the host stop for a minute at the named
//! point (e.g. `deploy-commit`: inside the deploy transaction, just before it commits), so
//! a test can `kill -9` it there. Unset, a hit costs one environment lookup.

pub async fn hit(name: &str) {
    if std::env::var("CRM_HOST_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!("failpoint {name}: pausing for 60 s");
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}
