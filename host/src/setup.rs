//! Building a host from its settings, once: the command line (`crm-host serve`), the test
//! harness and the benchmark all describe a host as [`HostSettings`] and open it here.

use crate::runtime::{default_guest_threads, Allocator};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::{Host, HostOptions, Limits, OutboundConfig, Runtime};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a host is made of.
pub struct HostSettings {
    /// The SQLite database (without `database`) and the compile cache.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL several hosts share; `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    pub limits: Limits,
    pub outbound: OutboundConfig,
    pub allocator: Allocator,
    /// Threads of their own for guest code (0: on the API's threads).
    pub guest_threads: usize,
    pub options: HostOptions,
}

impl HostSettings {
    /// The defaults of `crm-host serve`, on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        HostSettings {
            data_dir: data_dir.into(),
            database: None,
            limits: Limits::default(),
            outbound: OutboundConfig::default(),
            allocator: Allocator::default(),
            guest_threads: default_guest_threads(),
            options: HostOptions::default(),
        }
    }

    /// Where the host keeps its state, fit for logs (a PostgreSQL password shown as `***`).
    pub fn database_shown(&self) -> anyhow::Result<String> {
        match &self.database {
            None => Ok(self.data_dir.join(crate::store::sqlite::DB_FILE).display().to_string()),
            Some(url) => without_password(url),
        }
    }

    /// The runtime, the store and the host on them, with every stored version loaded.
    pub async fn open(self) -> anyhow::Result<Host> {
        let runtime = Runtime::with_allocator(self.limits.clone(), self.outbound.clone(), self.allocator)?
            .with_guest_threads(self.guest_threads)?
            .with_compile_cache(self.data_dir.join("compiled"))
            .with_context(|| format!("creating the compile cache in {}", self.data_dir.display()))?;
        let shown = self.database_shown()?;
        let store: Arc<dyn Store> = match &self.database {
            None => Arc::new(
                SqliteStore::open(&self.data_dir)
                    .await
                    .with_context(|| format!("opening the database in {}", self.data_dir.display()))?,
            ),
            Some(url) => Arc::new(PgStore::open(url).await.with_context(|| format!("--database {shown}"))?),
        };
        Host::open(runtime, store, self.options).await
    }
}

/// A `--database` URL fit for logs, after checking it is one this host takes.
fn without_password(url: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--database: not a URL ({e}); expected postgres://USER:PASS@HOST:PORT/DB"))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        anyhow::bail!(
            "--database {}://…: only PostgreSQL (postgres://USER:PASS@HOST:PORT/DB) is supported; without --database the host uses SQLite in --data-dir",
            u.scheme()
        );
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    Ok(u.to_string())
}
