//! The `crm-host` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use crate::egress::Upstreams;
use crate::registry::Registry;
use crate::{Host, Limits, OutboundConfig, Runtime};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "crm-host", version, about = "Runs CRM adapter components for tenants over HTTP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the JSON API.
    Serve(Serve),
}

#[derive(Parser)]
struct Serve {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port; the bound
    /// address is printed).
    #[arg(long)]
    listen: String,
    /// Deploy every *.wasm in this directory at start-up, each under the name its component
    /// declares (a broken or refused file is logged and skipped).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// HOST=URL: after the egress check, send requests for HOST to URL instead
    /// (e.g. plando.co.il=http://127.0.0.1:9001). Repeatable.
    #[arg(long = "upstream", value_name = "HOST=URL")]
    upstreams: Vec<String>,
    /// Refuse outbound requests that no --upstream routes (nothing leaves the machine).
    #[arg(long)]
    upstream_only: bool,
    /// Memory cap of one call's instance, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mb: usize,
    /// Deadline of one call (CPU and wall clock, outbound requests included), in ms.
    #[arg(long, default_value_t = 15_000)]
    deadline_ms: u64,
    /// Timeout of one outbound request (connect, first byte, between chunks), in ms.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Largest outbound response body, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_response_bytes: u64,
}

/// Runs the `crm-host` command line (the binary is a one-line wrapper, so tests can run the
/// very same code as their own binary).
pub fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Command::Serve(args) = Cli::parse().command;

    let mut upstreams = Upstreams::default();
    for spec in &args.upstreams {
        upstreams.add(spec).map_err(anyhow::Error::msg)?;
    }
    let limits = Limits {
        memory_bytes: args.memory_mb << 20,
        deadline: Duration::from_millis(args.deadline_ms),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_response_bytes: args.max_response_bytes,
    };
    let runtime = Runtime::new(limits, OutboundConfig { upstreams, upstream_only: args.upstream_only })?;
    let host = Arc::new(Host::new(runtime, Registry::new()));

    if let Some(dir) = &args.plugins {
        let failures = host.deploy_dir(dir).await.with_context(|| format!("reading --plugins {}", dir.display()))?;
        for (path, e) in &failures {
            tracing::error!("not deployed: {path}: {} ({})", e, e.kind());
        }
    }

    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("crm-host listening on http://{addr}");
    std::io::stdout().flush()?;

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::api::serve(listener, host, shutdown).await?;
    Ok(())
}
