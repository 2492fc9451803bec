//! `--plugins DIR` is watched: a new or changed `*.wasm` there is deployed under the name
//! it declares. Polling (every 500 ms) rather than inotify: it works the same on every
//! filesystem, including network and container mounts, and a deploy directory holds a
//! handful of files. A file is deployed once it has looked the same (size and mtime) on two
//! consecutive scans, so a copy in progress is not read half-written.

use crate::service::Host;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

type Stamp = (u64, Option<SystemTime>);

fn scan(dir: &Path) -> HashMap<PathBuf, Stamp> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            m.is_file().then(|| (p, (m.len(), m.modified().ok())))
        })
        .collect()
}

/// Watches `dir` until the task is dropped. Files present now count as handled (start-up
/// deployed them).
pub fn spawn(host: Arc<Host>, dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut handled = scan(&dir);
        let mut previous = handled.clone();
        loop {
            tokio::time::sleep(SCAN_INTERVAL).await;
            let current = scan(&dir);
            for (path, stamp) in &current {
                let stable = previous.get(path) == Some(stamp);
                if !stable || handled.get(path) == Some(stamp) {
                    continue;
                }
                handled.insert(path.clone(), *stamp);
                deploy(&host, path).await;
            }
            handled.retain(|p, _| current.contains_key(p));
            previous = current;
        }
    })
}

async fn deploy(host: &Host, path: &Path) {
    let bytes = match std::fs::read(path) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => return tracing::error!(path = %path.display(), "watcher: cannot read: {e}"),
    };
    match host.deploy_file(&bytes, "watcher").await {
        Ok(Some(d)) => tracing::info!(
            path = %path.display(), adapter = %d.compiled.description.name, digest = %d.compiled.digest,
            "watcher: deployed"
        ),
        Ok(None) => tracing::debug!(path = %path.display(), "watcher: already stored, nothing to do"),
        Err(e) => tracing::error!(
            path = %path.display(), kind = e.kind(),
            "watcher: not deployed, the serving version stays: {e}"
        ),
    }
}
