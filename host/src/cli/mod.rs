//! The `crm-host` command line: `serve` runs the host; every other subcommand is a client
//! of a running host's HTTP API ([`client`]).

mod client;

use crate::egress::Upstreams;
use crate::limits::{FrontDoor, TraceRetention};
use crate::setup::HostSettings;
use crate::{HostOptions, Limits, OutboundConfig, RetryPolicy};
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "crm-host", version, about = "Runs CRM adapter components for tenants over HTTP")]
struct Cli {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the JSON API.
    Serve(Box<Serve>),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// The defaults of every limit flag: `limits.rs` declares them, once.
const DEFAULTS: Limits = Limits::DEFAULT;
const FRONT: FrontDoor = FrontDoor::DEFAULT;

#[derive(Parser)]
struct Serve {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port; the bound
    /// address is printed).
    #[arg(long)]
    listen: String,
    /// Directory of the SQLite database and the compile cache (created if missing).
    #[arg(long, default_value = "./crm-host-data")]
    data_dir: PathBuf,
    /// A PostgreSQL database several hosts share (postgres://USER:PASS@HOST:PORT/DB): their
    /// adapters, tenants, keys, events and traces, with every change served by every host.
    /// Without it, SQLite in --data-dir (one host). The compile cache stays in --data-dir.
    #[arg(long, env = "CRM_HOST_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// With --database: how often to look for changes of other hosts besides their
    /// notices (which a lost connection misses), in ms.
    #[arg(long, default_value_t = 1000)]
    sync_interval_ms: u64,
    /// Bearer token for the admin API (deploys, tenants, keys, traces, audit), at least 16
    /// characters. Without one the host runs open and binds only to loopback.
    #[arg(long, env = "CRM_HOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file whose first line is the admin token, so that the token is in no process list
    /// or environment (a mounted secret).
    #[arg(long, env = "CRM_HOST_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Deploy every *.wasm in this directory at start-up (under the name each component
    /// declares; digests already stored are skipped), then watch it for new or changed files.
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
    #[arg(long, default_value_t = DEFAULTS.memory_bytes >> 20)]
    memory_mb: usize,
    /// Deadline of one call (CPU and wall clock, outbound requests included), in ms.
    #[arg(long, default_value_t = DEFAULTS.deadline.as_millis() as u64)]
    deadline_ms: u64,
    /// Timeout of one outbound request (connect, first byte, between chunks), in ms.
    #[arg(long, default_value_t = DEFAULTS.request_timeout.as_millis() as u64)]
    request_timeout_ms: u64,
    /// Largest outbound response body, in bytes.
    #[arg(long, default_value_t = DEFAULTS.max_response_bytes)]
    max_response_bytes: u64,
    /// Outbound requests one call may make, retries included.
    #[arg(long, default_value_t = DEFAULTS.max_outbound_requests)]
    max_outbound_requests: u32,
    /// Bytes of outbound bodies (requests buffered for retries, responses read whole) one
    /// call may make the host hold at once.
    #[arg(long, default_value_t = DEFAULTS.max_outbound_bytes)]
    max_outbound_bytes: u64,
    /// Largest crmData (JSON text, in bytes) a call may return.
    #[arg(long, default_value_t = DEFAULTS.max_crm_data_bytes)]
    max_crm_data_bytes: usize,
    /// Calls of one tenant running at once; more are refused at once (rate_limited).
    #[arg(long, default_value_t = DEFAULTS.max_concurrent_calls_per_tenant)]
    max_concurrent_calls: u32,
    /// Instances running at once on this host, all tenants together.
    #[arg(long, default_value_t = DEFAULTS.max_instances)]
    max_instances: u32,
    /// Webhooks handled at once on this host (apart from calls: a webhook never takes a
    /// call's place).
    #[arg(long, default_value_t = DEFAULTS.max_webhooks)]
    max_webhooks: u32,
    /// Webhooks of one tenant handled at once; more are refused at once (429).
    #[arg(long, default_value_t = DEFAULTS.max_webhooks_per_tenant)]
    max_webhooks_per_tenant: u32,
    /// Host-side resources (wasi-http fields, requests, bodies, streams) one call may hold.
    #[arg(long, default_value_t = DEFAULTS.max_resources)]
    max_resources: usize,
    /// Bytes of one header map an adapter builds.
    #[arg(long, default_value_t = DEFAULTS.max_header_bytes)]
    max_header_bytes: usize,
    /// Header entries one call may create in all.
    #[arg(long, default_value_t = DEFAULTS.max_header_entries)]
    max_header_entries: u32,
    /// Threads that run guest code, apart from the threads serving the API (0: guests run on
    /// the API's threads). Default: one per CPU.
    #[arg(long)]
    guest_threads: Option<usize>,
    /// Threads that serve the API (connections, routing, tenants, traces; guest code only
    /// with --guest-threads 0). Default: a third of the CPUs, at least one; one per CPU with
    /// --guest-threads 0.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    api_threads: Option<u16>,
    /// Microseconds a thread spins before it sleeps while the host is nearly idle: a guest
    /// thread that has just answered, waiting for the next call, and the API's thread while
    /// a single call is out, waiting for its answer. It saves two thread wake-ups per call
    /// at low load, and spends idle CPU on it; nothing spins under load (0: never).
    #[arg(long, default_value_t = crate::runtime::DEFAULT_IDLE_SPIN.as_micros() as u64)]
    idle_spin_us: u64,
    /// Turns on fuel metering with this default budget per call (about one unit per wasm
    /// instruction); tenants may then have their own (`limits.fuel`). Off by default: the
    /// deadline bounds CPU, and metering costs every call some speed.
    #[arg(long)]
    fuel: Option<u64>,
    /// How instances get memory: `pooling` (slots reserved at start-up for --max-instances
    /// calls, reset copy-on-write between calls) or `on-demand` (mapped per call).
    #[arg(long, default_value = "pooling")]
    allocator: crate::runtime::Allocator,
    /// Attempts of an idempotent outbound request, the first included (1: no retries).
    #[arg(long, default_value_t = 3)]
    retry_attempts: u32,
    /// Backoff before the first retry, in ms (doubles per attempt, at most 2 s, jittered).
    #[arg(long, default_value_t = 100)]
    retry_base_ms: u64,
    /// Serve `/metrics` on this address instead of the API's (e.g. 127.0.0.1:9100, reachable by
    /// Prometheus and not by API clients).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Connections the API holds open at once; past it a new one is answered 503 and closed.
    #[arg(long, default_value_t = FRONT.max_connections)]
    max_connections: usize,
    /// How long a client may take to send a request's head, from the connection's start or
    /// its previous answer (so also how long an idle keep-alive connection stays open), in ms.
    #[arg(long, default_value_t = FRONT.header_timeout.as_millis() as u64)]
    header_timeout_ms: u64,
    /// How long a client may take to send a request's whole body, from its head, in ms.
    #[arg(long, default_value_t = FRONT.body_timeout.as_millis() as u64)]
    body_timeout_ms: u64,
    /// Request-body bytes the host reads or holds at once, all requests together (an eighth
    /// of it for webhooks); a body that does not fit is refused (503) before it is read.
    #[arg(long, default_value_t = FRONT.max_inflight_body_bytes)]
    max_inflight_body_bytes: usize,
    /// Recorded calls kept per tenant (the newest).
    #[arg(long, default_value_t = TraceRetention::DEFAULT.calls)]
    trace_retention: u32,
    /// Bytes of recorded calls' traces kept per tenant (the newest calls that fit).
    #[arg(long, default_value_t = TraceRetention::DEFAULT.trace_bytes)]
    trace_retention_bytes: u64,
    /// Days inbound events are kept (fractions too: 0.5 is twelve hours); older ones are
    /// deleted in the background.
    #[arg(long, default_value_t = crate::limits::DEFAULT_EVENT_RETENTION.as_secs_f64() / 86_400.0, value_parser = days)]
    event_retention_days: f64,
    /// Log lines for people (human) or machines (json).
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

/// Runs the `crm-host` command line (the binary is a one-line wrapper, so tests can run the
/// very same code as their own binary).
pub fn main() -> anyhow::Result<()> {
    let cli = parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let rt = match &cli.command {
        Command::Serve(args) => {
            crate::runtime::SPIN.set_budget(Duration::from_micros(args.idle_spin_us));
            api_runtime(args.api_threads())?
        }
        Command::Client(_) => tokio::runtime::Runtime::new()?,
    };
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(*args)),
        Command::Client(c) => {
            let code = rt.block_on(c.run(cli.conn));
            drop(rt);
            std::process::exit(code);
        }
    }
}

impl Serve {
    fn guest_threads(&self) -> usize {
        self.guest_threads.unwrap_or_else(crate::runtime::default_guest_threads)
    }

    fn api_threads(&self) -> usize {
        match self.api_threads {
            Some(n) => n.into(),
            None => default_api_threads(crate::runtime::default_guest_threads(), self.guest_threads()),
        }
    }
}

/// A third of the CPUs, at least one: under load a call costs the API's threads about a
/// third of what it costs the guest threads, and an idle API thread is one more for tokio
/// to wake per call. On 2 CPUs one API thread instead of two took a call from 7.1 to 4.7
/// context switches and its 1-client p50 from 425 to 320 µs (BENCHMARKS.md). With
/// `--guest-threads 0` guests run on the API's threads: one per CPU, as for guest threads.
pub fn default_api_threads(cpus: usize, guest_threads: usize) -> usize {
    if guest_threads == 0 {
        cpus.max(1)
    } else {
        cpus.div_ceil(3).max(1)
    }
}

/// The runtime that serves the API (work-stealing, `threads` workers).
pub fn api_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .on_thread_park(|| crate::runtime::SPIN.before_api_park())
        .enable_all()
        .build()?;
    crate::runtime::keep_a_timer_armed(rt.handle());
    Ok(rt)
}

/// The client flags are global (they go anywhere on a client command line), so clap would
/// also list them under `serve`, which has no use for them: there they are hidden, and
/// refused when given.
const CLIENT_FLAGS: [&str; 3] = ["server", "token", "json"];

fn command() -> clap::Command {
    let command = Cli::command();
    // A subcommand that has an arg of a global's name keeps its own: a hidden copy.
    let hidden: Vec<clap::Arg> =
        command.get_arguments().filter(|a| CLIENT_FLAGS.contains(&a.get_id().as_str())).map(|a| a.clone().hide(true)).collect();
    command.mut_subcommand("serve", |serve| serve.args(hidden))
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, clap::Error> {
    let mut command = command();
    let matches = command.try_get_matches_from_mut(args)?;
    if let Some(("serve", serve)) = matches.subcommand() {
        let given = CLIENT_FLAGS.iter().find(|f| serve.value_source(f) == Some(clap::parser::ValueSource::CommandLine));
        if let Some(flag) = given {
            let message = format!("--{flag} is a flag of the client subcommands: `serve` does not take it\n");
            return Err(clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, message).with_cmd(&command));
        }
    }
    Cli::from_arg_matches(&matches)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

async fn serve(args: Serve) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let admin_token = admin_token(args.admin_token.clone(), args.admin_token_file.as_deref())?;

    let mut upstreams = Upstreams::default();
    for spec in &args.upstreams {
        upstreams.add(spec).map_err(anyhow::Error::msg)?;
    }
    // Open mode is for a developer's machine: refuse to expose it before doing anything.
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| format!("--listen {}: not an address", args.listen))?
        .collect();
    if admin_token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "refusing to listen on {} without an admin token: anyone who reaches it could deploy code. \
             Set --admin-token or CRM_HOST_ADMIN_TOKEN (or --admin-token-file), or listen on a loopback address (127.0.0.1)",
            args.listen
        );
    }
    let limits = Limits {
        memory_bytes: args.memory_mb << 20,
        deadline: Duration::from_millis(args.deadline_ms),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_response_bytes: args.max_response_bytes,
        max_outbound_requests: args.max_outbound_requests,
        max_outbound_bytes: args.max_outbound_bytes,
        max_crm_data_bytes: args.max_crm_data_bytes,
        max_concurrent_calls_per_tenant: args.max_concurrent_calls,
        max_instances: args.max_instances,
        max_webhooks: args.max_webhooks,
        max_webhooks_per_tenant: args.max_webhooks_per_tenant,
        max_resources: args.max_resources,
        max_header_bytes: args.max_header_bytes,
        max_header_entries: args.max_header_entries,
        fuel: args.fuel,
    };
    let retry = RetryPolicy { max_attempts: args.retry_attempts.max(1), base: Duration::from_millis(args.retry_base_ms), ..Default::default() };
    let settings = HostSettings {
        data_dir: args.data_dir.clone(),
        database: args.database.clone().filter(|d| !d.is_empty()),
        limits,
        outbound: OutboundConfig { upstreams, upstream_only: args.upstream_only, retry, ..Default::default() },
        allocator: args.allocator,
        guest_threads: args.guest_threads(),
        options: HostOptions {
            traces: TraceRetention { calls: args.trace_retention, trace_bytes: args.trace_retention_bytes },
            event_retention: Duration::from_secs_f64(args.event_retention_days * 86_400.0),
            admin_token,
        },
    };
    let database = settings.database_shown()?;
    let host = Arc::new(settings.open().await?);
    host.follow(Duration::from_millis(args.sync_interval_ms.max(10)));
    host.keep_tidy();
    tracing::info!(%database, adapters = host.list_adapters().len(), "state restored");
    tracing::info!(api_threads = args.api_threads(), guest_threads = args.guest_threads(), "threads");

    if let Some(dir) = &args.plugins {
        let failures = host.deploy_dir(dir, "plugins-dir").await.with_context(|| format!("reading --plugins {}", dir.display()))?;
        for (path, e) in &failures {
            tracing::error!("not deployed: {path}: {} ({})", e, e.kind());
        }
        crate::watch::spawn(host.clone(), dir.clone());
    }

    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let metrics_listener = match &args.metrics_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding --metrics-listen {a}"))?),
        None => None,
    };
    let addr = listener.local_addr()?;
    println!("crm-host listening on http://{addr}");
    if let Some(l) = &metrics_listener {
        // Whoever read the first line may have closed stdout since: not a reason to stop.
        let _ = writeln!(std::io::stdout(), "crm-host metrics on http://{}/metrics", l.local_addr()?);
    }
    let _ = std::io::stdout().flush();
    if host.is_open() {
        tracing::warn!("no admin token configured: the API is open to anyone who can reach {addr}");
    }

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let front = FrontDoor {
        max_connections: connections_within_fd_limit(args.max_connections),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
        max_inflight_body_bytes: args.max_inflight_body_bytes,
    };
    crate::api::serve(listener, metrics_listener, host.clone(), front, shutdown).await?;
    // Calls answered before the shutdown keep their traces.
    host.flush_traces().await;
    Ok(())
}

/// `--max-connections`, after raising the soft limit of open files to the hard one: each
/// connection is a descriptor, and the database, the compile cache and outbound connections
/// need theirs (`SPARE`). A cap the process cannot reach is lowered, with a warning, rather
/// than left to fail as `accept` errors.
fn connections_within_fd_limit(wanted: usize) -> usize {
    const SPARE: u64 = 1024;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let reachable = limit.rlim_cur.saturating_sub(SPARE).max(16) as usize;
    if wanted > reachable {
        tracing::warn!(
            "--max-connections {wanted} lowered to {reachable}: the process may open {} files (ulimit -n), {SPARE} of them kept for the database and outbound connections",
            limit.rlim_cur
        );
        return reachable;
    }
    wanted
}

/// A number of days, more than none and at most a century.
fn days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d > 0.0 && d <= 36_500.0 => Ok(d),
        _ => Err(format!("expected a number of days above 0 and at most 36500, not {s}")),
    }
}

/// The admin token from `--admin-token` or `--admin-token-file` (not both); `None`: open mode.
fn admin_token(given: Option<String>, file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let token = match (given.filter(|t| !t.is_empty()), file) {
        (Some(_), Some(_)) => anyhow::bail!("--admin-token and --admin-token-file (or their environment variables) are both set: use one"),
        (token, None) => token,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--admin-token-file {}", path.display()))?;
            let token = text.lines().next().unwrap_or_default().trim().to_string();
            anyhow::ensure!(!token.is_empty(), "--admin-token-file {}: the file holds no token", path.display());
            Some(token)
        }
    };
    if let Some(t) = &token {
        let n = t.chars().count();
        anyhow::ensure!(
            n >= crate::auth::MIN_ADMIN_TOKEN_CHARS,
            "the admin token has {n} characters, fewer than the {} it needs (a guessable token hands out deploy rights): \
             generate one, e.g. `openssl rand -hex 32`",
            crate::auth::MIN_ADMIN_TOKEN_CHARS
        );
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split(' ').map(Into::into).collect()
    }

    #[test]
    fn serve_neither_lists_nor_takes_the_client_flags() {
        let help = parse(args("crm-host serve --help")).err().expect("help is an early exit").render().to_string();
        assert!(help.contains("--listen"), "{help}");
        for flag in CLIENT_FLAGS {
            assert!(!help.contains(&format!("--{flag}")), "serve --help lists --{flag}:\n{help}");
        }
        let refused = parse(args("crm-host serve --listen 127.0.0.1:0 --token abc")).err().expect("refused").to_string();
        assert!(refused.contains("--token is a flag of the client subcommands"), "{refused}");
        assert!(parse(args("crm-host serve --listen 127.0.0.1:0")).is_ok());
        let client = parse(args("crm-host deploy x.wasm --server http://127.0.0.1:9 --json")).expect("client flags after a client command");
        assert!(client.conn.json && client.conn.server == "http://127.0.0.1:9");
        let help = parse(args("crm-host deploy --help")).err().unwrap().render().to_string();
        assert!(help.contains("--server"), "client commands still list them:\n{help}");
    }

    #[test]
    fn api_threads_are_a_third_of_the_cpus_unless_guests_share_them() {
        assert_eq!(default_api_threads(1, 1), 1);
        assert_eq!(default_api_threads(2, 2), 1);
        assert_eq!(default_api_threads(8, 8), 3);
        assert_eq!(default_api_threads(2, 0), 2, "guests run on the API's threads");
        let serve = |line: &str| match parse(args(line)).expect("parses").command {
            Command::Serve(s) => s,
            Command::Client(_) => unreachable!(),
        };
        assert_eq!(serve("crm-host serve --listen 127.0.0.1:0 --api-threads 3").api_threads(), 3);
        let e = parse(args("crm-host serve --listen 127.0.0.1:0 --api-threads 0")).err().expect("refused").to_string();
        assert!(e.contains("--api-threads"), "{e}");
        let rt = api_runtime(serve("crm-host serve --listen 127.0.0.1:0 --api-threads 2").api_threads()).unwrap();
        assert_eq!(rt.metrics().num_workers(), 2);
    }
}
