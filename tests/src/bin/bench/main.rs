//! `cargo xtask bench`: what the sandbox costs, measured against the same adapter code
//! compiled natively, in one run on this machine. Everything runs on loopback: a fast Plando
//! emulator and the load generator in this process, the host (`crm-host serve`, release)
//! and the native baseline server as child processes. Prints one table; every ratio is
//! computed from figures of the same run. BENCHMARKS.md records the figures and targets.
//!
//! `BENCH_SECS` (default 5) sets the length of each throughput run. `bench ab` instead
//! compares two builds side by side (`ab.rs`).

mod ab;
mod fast_plando;
mod load;
mod native;
mod replicas;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use crm_host::runtime::Allocator;
use crm_host::{Host, Limits, OutboundConfig, Runtime};
use crm_tests::{component, with_custom_section, TempDir};
use load::{time_async, time_sync, us, Sample};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("native-server") {
        return native::serve(args.get(1).context("native-server CRM_URL MODE")?, args.get(2).map_or("pool", String::as_str));
    }
    let secs = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5u64);
    let crm = format!("http://{}", fast_plando::start());
    let mut t = Table::default();
    if args.first().map(String::as_str) == Some("ab") {
        ab::side_by_side(&mut t, &crm, Duration::from_secs(secs))?;
        t.print();
        return Ok(());
    }
    println!("crm-host benchmark: {} CPUs, {}s throughput runs, release build", crm_host::runtime::default_guest_threads(), secs);
    println!();
    // `BENCH_ONLY=1,2`: some sections only (for profiling one).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let on = |n: &str| only.is_empty() || only.split(',').any(|x| x == n);
    if on("1") {
        host_overhead(&mut t)?;
    }
    if on("2") || on("3") {
        latency_vs_native(&mut t, &crm)?;
    }
    if on("4") || on("5") || on("7") {
        let servers = Servers::start(&crm)?;
        if on("4") {
            throughput(&mut t, &servers, Duration::from_secs(secs))?;
        }
        if on("5") {
            hot_deploy(&mut t, &servers)?;
        }
        if on("7") {
            scaling(&mut t, &servers, Duration::from_secs(secs.div_ceil(2).max(2)))?;
        }
    }
    if on("6") {
        many_tenants(&mut t)?;
    }
    if on("8") {
        replicas::replicas(&mut t, &crm, Duration::from_secs(secs))?;
    }
    println!();
    t.print();
    Ok(())
}

/// The rows, printed together at the end (and each as it is measured, on stderr).
#[derive(Default)]
struct Table(Vec<[String; 5]>);

impl Table {
    fn row(&mut self, n: &str, what: &str, median: String, p99: String, note: String) {
        eprintln!("  {n} {what}: {median} (p99 {p99}) {note}");
        self.0.push([n.into(), what.into(), median, p99, note]);
    }

    fn sample(&mut self, n: &str, what: &str, s: &Sample, note: String) {
        self.row(n, what, us(s.p50()), us(s.p99()), note);
    }

    fn print(&self) {
        println!("| # | figure | median | p99 | ratio / note |");
        println!("|---|---|---|---|---|");
        for r in &self.0 {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn call_body() -> Value {
    json!({"chat": {"id": "c1", "phone": format!("+{}", fast_plando::PHONE), "title": "Dana Levi"}, "params": {}})
}

// ----- 1. the host's own cost per call --------------------------------------------------

fn host_overhead(t: &mut Table) -> Result<()> {
    let bytes = Bytes::from(component("plando"));
    let n = 20_000;
    let mut inline = Vec::new();
    for (allocator, threads, label) in [
        (Allocator::Pooling, 0, "pooling allocator, on the caller's thread"),
        (Allocator::OnDemand, 0, "on-demand allocator, on the caller's thread"),
        (Allocator::Pooling, crm_host::runtime::default_guest_threads(), "pooling allocator, via the guest threads (as served)"),
    ] {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let s = rt.block_on(async {
            let runtime = Runtime::with_allocator(Limits::default(), OutboundConfig::default(), allocator)?.with_guest_threads(threads)?;
            let plando = runtime.load(bytes.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let probe = runtime.invoke_bare(&plando, "noSuchFunction").await;
            ensure!(matches!(&probe, Err(f) if f.kind.as_str() == "unsupported"), "unexpected answer: {:?}", probe.err());
            Ok(time_async(n, || async {
                let _ = runtime.invoke_bare(&plando, "noSuchFunction").await;
            })
            .await)
        })?;
        if threads == 0 {
            inline.push(s.p50());
        }
        let note = if allocator == Allocator::Pooling && threads == 0 {
            format!("target p50 ≤ 10 µs: {}", verdict(s.p50() <= Duration::from_micros(10)))
        } else {
            String::new()
        };
        t.sample("1", &format!("store + instance + invoke + drop (unsupported func_id), {label}"), &s, note);
    }
    t.row("1", "pooling vs on-demand (p50)", format!("{:.2}x", ratio(inline[1], inline[0])), String::new(), "how much faster pooling is".into());
    Ok(())
}

// ----- 2 and 3. one call against the emulator: wasm, native, and the bare exchange -------

fn latency_vs_native(t: &mut Table, crm: &str) -> Result<()> {
    let n = 5_000;
    let body = call_body().to_string().into_bytes();

    // wasm: the service's call path (tenant, parse, admission, instance, outbound, trace),
    // without the HTTP front (section 4 has that); as served (guest threads), and with guests
    // on the caller's runtime (`--guest-threads 0`) to show what the hop between them costs.
    let mut wasm_runs = Vec::new();
    for threads in [crm_host::runtime::default_guest_threads(), 0] {
        let rt = tokio::runtime::Runtime::new()?;
        let data = TempDir::new("bench-host");
        let s = rt.block_on(async {
            let host = in_process_host(&data, crm, threads).await?;
            let answer = host.call("acme", "getCustomerDetails", &body, "probe").await?;
            ensure!(answer.is_ok(), "wasm call failed: {:?}", (*answer).as_ref().err());
            let mut i = 0u64;
            Ok(time_async(n, || {
                i += 1;
                let (host, body, id) = (&host, &body, format!("b{i}"));
                async move {
                    let a = host.call("acme", "getCustomerDetails", body, &id).await.expect("call");
                    assert!(a.is_ok());
                }
            })
            .await)
        })?;
        wasm_runs.push(s);
    }
    let (wasm, wasm_inline) = (&wasm_runs[0], &wasm_runs[1]);

    // native: the same adapter code, SDK native transport (ureq agent, keep-alive pool).
    let http = crm_sdk::native::NativeTransport::new(Duration::from_secs(10)).route("plando.co.il", crm);
    let config = json!({"token": fast_plando::TOKEN, "chat": "1"});
    let native = time_sync(n, || {
        let mut req: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
        let call = crm_sdk::Call::from_json("acme", config.clone(), req.remove("chat").unwrap(), req.remove("params").unwrap()).unwrap();
        crm_sdk::run(&crm_plando::Plando, "getCustomerDetails", &call, &http).expect("native call");
    });

    // native, lean: the lookup's own mapping around an async pooled hyper client.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let lean = rt.block_on(async {
        let lean = native::lean::Lean::new(crm);
        time_async(n, || async {
            let mut req: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
            let call = crm_sdk::Call::from_json("acme", config.clone(), req.remove("chat").unwrap(), req.remove("params").unwrap()).unwrap();
            lean.lookup(&call).await.expect("lean native call");
        })
        .await
    });
    let native = if lean.p50() < native.p50() { lean } else { native };

    // The floor: the same exchange on a keep-alive hyper connection, no adapter at all.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("access_key", fast_plando::TOKEN)
        .append_pair("phone", fast_plando::PHONE)
        .append_pair("attr", "id")
        .append_pair("search_options", "{}")
        .finish();
    let addr: std::net::SocketAddr = crm.trim_start_matches("http://").parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let floor = rt.block_on(async {
        use http_body_util::{BodyExt, Full};
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let form = Bytes::from(form);
        time_async(n, || {
            let req = hyper::Request::post("/contact_details")
                .header("host", "plando.co.il")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(form.clone()))
                .unwrap();
            let sent = sender.send_request(req);
            async move {
                let resp = sent.await.unwrap();
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                assert!(load::memfind(&b, b"\"501\""));
            }
        })
        .await
    });

    let r = ratio(wasm.p50(), native.p50());
    t.sample("2", "getCustomerDetails, wasm component through the service, as served (1 client)", wasm, format!("wasm/native p50 {r:.2} (target ≤ 1.15: {})", verdict(r <= 1.15)));
    t.sample("2", "the same with guests on the caller's threads (--guest-threads 0)", wasm_inline, format!("wasm/native p50 {:.2}", ratio(wasm_inline.p50(), native.p50())));
    t.sample("2", "getCustomerDetails, native (the faster of the lean async lookup and the SDK's blocking transport; 1 client)", &native, format!("wasm/native p99 {:.2}", ratio(wasm.p99(), native.p99())));
    let over = |s: &Sample| (ratio(s.p50(), floor.p50()) - 1.0) * 100.0;
    t.sample("3", "the bare exchange with the emulator (floor)", &floor, format!("over the floor: wasm +{:.0}%, native +{:.0}%", over(wasm), over(&native)));
    Ok(())
}

/// A host in this process on the store in `data`, with Plando deployed and tenant `acme`.
async fn in_process_host(data: &TempDir, crm: &str, guest_threads: usize) -> Result<Host> {
    let mut upstreams = crm_host::egress::Upstreams::default();
    upstreams.add(&format!("plando.co.il={crm}")).map_err(anyhow::Error::msg)?;
    let outbound = OutboundConfig { upstreams, upstream_only: true, ..Default::default() };
    let host = crm_host::setup::HostSettings { outbound, guest_threads, ..crm_host::setup::HostSettings::new(data.path()) }.open().await?;
    host.deploy("plando", Bytes::from(component("plando")), Default::default(), "bench").await?;
    let tenant = json!({"adapter": "plando", "projectId": "acme", "crmConfig": {"token": fast_plando::TOKEN, "chat": "1"}});
    host.put_tenant("acme", tenant.to_string().as_bytes(), "bench").await?;
    Ok(host)
}

// ----- 4, 5, 7: the host and the native server as processes, under load ------------------

struct Servers {
    host: Child,
    host_url: String,
    /// The native baselines (see native.rs): the lean async server first.
    natives: Vec<(Child, String, &'static str)>,
    /// `wasmtime serve`, the upstream tool, running the same lookup as a `wasi:http/proxy`
    /// component (`plugins/bench/proxy`): a sandboxed peer, not a baseline.
    peer: Option<(Child, String)>,
    _data: TempDir,
    client: reqwest::blocking::Client,
}

impl Drop for Servers {
    fn drop(&mut self) {
        let others = self.natives.iter_mut().map(|n| &mut n.0).chain(self.peer.iter_mut().map(|p| &mut p.0));
        for c in std::iter::once(&mut self.host).chain(others) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The release `crm-host` command line (built as `crm-host-under-test` beside this binary).
fn host_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("crm-host-under-test");
    ensure!(bin.exists(), "{} is missing: run `cargo xtask bench`", bin.display());
    Ok(bin)
}

fn spawn_host(data: &std::path::Path, extra: &[String]) -> Result<(Child, String, Duration)> {
    spawn_host_of(&host_binary()?, data, extra)
}

fn spawn_host_of(binary: &std::path::Path, data: &std::path::Path, extra: &[String]) -> Result<(Child, String, Duration)> {
    let log = std::fs::File::create(data.join("host.log"))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let (_, url) = crm_tests::read_listen_url(child.stdout.take().unwrap())?;
    ensure!(url.starts_with("http://"), "the host did not start; see {}", data.join("host.log").display());
    Ok((child, url, started.elapsed()))
}

/// The host's command line against the fast emulator. 64 clients call one tenant: its
/// concurrency cap (default 16) must let them in.
fn host_args(crm: &str) -> Vec<String> {
    vec!["--upstream".into(), format!("plando.co.il={crm}"), "--upstream-only".into(), "--max-concurrent-calls".into(), "128".into()]
}

/// The `i`-th of the benchmark's tenants on the fast emulator: `acme`, `acme1`, `acme2`…
fn acme(i: usize) -> String {
    if i == 0 {
        "acme".into()
    } else {
        format!("acme{i}")
    }
}

/// `getCustomerDetails` of the first `tenants` of them on the server at `base` (process
/// `pid`), as the load generator repeats it.
fn acme_target(base: &str, pid: Option<u32>, tenants: usize) -> load::Target {
    load::Target {
        addr: base.trim_start_matches("http://").parse().expect("server address"),
        paths: (0..tenants).map(|i| format!("/v1/tenants/{}/crm/getCustomerDetails", acme(i))).collect(),
        body: Bytes::from(call_body().to_string()),
        expect: "\"outcome\":\"complete\"",
        pid,
    }
}

/// Deploys `bytes` as `plando` through a host's API; returns the digest.
fn deploy_plando(client: &reqwest::blocking::Client, base: &str, bytes: Vec<u8>) -> Result<String> {
    let r = client.put(format!("{base}/v1/adapters/plando")).body(bytes).send()?;
    ensure!(r.status().is_success(), "deploy: {}", r.text()?);
    let v: Value = r.json()?;
    Ok(v["digest"].as_str().context("the deploy answer has no digest")?.to_string())
}

/// Plando deployed and tenant `acme` on the fast emulator, through a host's API.
fn setup_acme(client: &reqwest::blocking::Client, base: &str) -> Result<()> {
    setup_acme_with(client, base, component("plando"), 1)
}

/// The same with another build of plando, and `tenants` tenants.
fn setup_acme_with(client: &reqwest::blocking::Client, base: &str, plando: Vec<u8>, tenants: usize) -> Result<()> {
    deploy_plando(client, base, plando)?;
    let tenant = json!({"adapter": "plando", "projectId": "acme", "crmConfig": {"token": fast_plando::TOKEN, "chat": "1"}});
    for i in 0..tenants {
        let r = client.put(format!("{base}/v1/tenants/{}", acme(i))).body(tenant.to_string()).send()?;
        ensure!(r.status() == 200, "tenant: {}", r.text()?);
    }
    Ok(())
}

impl Servers {
    fn start(crm: &str) -> Result<Servers> {
        let data = TempDir::new("bench-served");
        let mut args = host_args(crm);
        // `BENCH_HOST_ARGS="--guest-threads 0"`: measure another host configuration.
        args.extend(std::env::var("BENCH_HOST_ARGS").unwrap_or_default().split_whitespace().map(String::from));
        let (host, host_url, _) = spawn_host(data.path(), &args)?;
        let mut natives = Vec::new();
        for mode in ["lean", "pool", "inline"] {
            let mut native = Command::new(std::env::current_exe()?).args(["native-server", crm, mode]).stdout(Stdio::piped()).spawn()?;
            let mut line = String::new();
            BufReader::new(native.stdout.take().unwrap()).read_line(&mut line)?;
            let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
            natives.push((native, url, mode));
        }
        let peer = start_peer(crm)?;
        let client = reqwest::blocking::Client::new();
        let s = Servers { host, host_url, natives, peer, _data: data, client };
        setup_acme(&s.client, &s.host_url)?;
        for url in std::iter::once(&s.host_url).chain(s.natives.iter().map(|n| &n.1)).chain(s.peer.iter().map(|p| &p.1)) {
            let (ok, _) = s.call(url)?;
            ensure!(ok, "{url} does not answer getCustomerDetails");
        }
        Ok(s)
    }

    fn deploy(&self, bytes: Vec<u8>) -> Result<()> {
        deploy_plando(&self.client, &self.host_url, bytes).map(drop)
    }

    /// One call; whether it completed, and its call id.
    fn call(&self, base: &str) -> Result<(bool, String)> {
        let r = self.client.post(format!("{base}/v1/tenants/acme/crm/getCustomerDetails")).body(call_body().to_string()).send()?;
        let id = r.headers().get("x-call-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let v: Value = r.json()?;
        Ok((v["outcome"] == "complete", id))
    }

    fn target(&self, base: &str) -> load::Target {
        acme_target(base, self.pid_of(base), 1)
    }

    fn pid_of(&self, base: &str) -> Option<u32> {
        if base == self.host_url {
            return Some(self.host.id());
        }
        self.natives.iter().find(|n| n.1 == base).map(|n| n.0.id()).or_else(|| self.peer.iter().find(|p| p.1 == base).map(|p| p.0.id()))
    }
}

/// `wasmtime serve` (the binary `CRM_WASMTIME` names; `cargo xtask bench` installs
/// wasmtime-cli of the host's wasmtime version) serving the proxy component, with the
/// emulator's address in its environment; `None` when `CRM_WASMTIME` is not set.
fn start_peer(crm: &str) -> Result<Option<(Child, String)>> {
    let Some(wasmtime) = std::env::var_os("CRM_WASMTIME") else { return Ok(None) };
    let proxy = crm_tests::plugins_dir().join("testing/plando-proxy.wasm");
    ensure!(proxy.exists(), "{} is missing: run `cargo xtask plugins`", proxy.display());
    let mut child = Command::new(wasmtime)
        .args(["serve", "--addr", "127.0.0.1:0", "-Scli", "--env", &format!("PLANDO_URL={crm}"), "--env", &format!("PLANDO_TOKEN={}", fast_plando::TOKEN)])
        .arg(&proxy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // "Serving HTTP on http://127.0.0.1:PORT/"; the rest of its log is drained, unread.
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    while err.read_line(&mut line)? > 0 && !line.contains("Serving HTTP on ") {
        line.clear();
    }
    let url = line.trim().rsplit(' ').next().unwrap_or_default().trim_end_matches('/').to_string();
    ensure!(url.starts_with("http://"), "wasmtime serve did not start: {line}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Ok(Some((child, url)))
}

fn cpu(l: &load::Load) -> String {
    l.cpu_per_call.map_or_else(|| "?".into(), us)
}

fn switches(l: &load::Load) -> String {
    let faults = l.faults_per_call.map_or_else(String::new, |n| format!(", {n:.2} page faults"));
    l.switches_per_call.map_or_else(|| "?".into(), |n| format!("{n:.2} context switches{faults} per call"))
}

fn throughput(t: &mut Table, s: &Servers, duration: Duration) -> Result<()> {
    // Alternating runs, three of each server; the median of each. Every client is admitted
    // (the host runs with --max-concurrent-calls 128): no answer is a refusal.
    let targets: Vec<(String, load::Target)> = std::iter::once(("host".to_string(), s.target(&s.host_url)))
        .chain(s.natives.iter().map(|(_, url, mode)| (format!("native ({mode})"), s.target(url))))
        .chain(s.peer.iter().map(|(_, url)| ("wasmtime serve (the same lookup as a wasi:http/proxy component)".to_string(), s.target(url))))
        .collect();
    let natives = 1..=s.natives.len();
    let mut runs: Vec<Vec<load::Load>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..3 {
        for (i, (name, target)) in targets.iter().enumerate() {
            let l = load::run(target, 64, duration, 2);
            ensure!(l.failed == 0, "{name}: {} failed requests under load", l.failed);
            runs[i].push(l);
        }
    }
    let medians: Vec<&load::Load> = runs
        .iter_mut()
        .map(|r| {
            r.sort_by(|a, b| a.rps.partial_cmp(&b.rps).unwrap());
            &r[1]
        })
        .collect();
    let (best, best_native) =
        natives.clone().map(|i| (i, medians[i].rps)).max_by(|a, b| a.1.partial_cmp(&b.1).unwrap()).expect("native servers");
    for (i, (name, _)) in targets.iter().enumerate() {
        let l = medians[i];
        let note = if i == 0 {
            let r = l.rps / best_native;
            format!(
                "host/native {r:.3} against the fastest, {} (target ≥ 0.40: {}); latency p50 {}",
                targets[best].0,
                verdict(r >= 0.40),
                us(l.latency.p50())
            )
        } else if !natives.contains(&i) {
            format!("peer/native {:.3} against the fastest; latency p50 {}", l.rps / best_native, us(l.latency.p50()))
        } else {
            format!("latency p50 {}", us(l.latency.p50()))
        };
        t.row("4", &format!("64 keep-alive clients, {name}, req/s (median of 3)"), format!("{:.0}/s", l.rps), us(l.latency.p99()), note);
    }
    for (i, (name, _)) in targets.iter().enumerate() {
        let l = medians[i];
        let note = if i == 0 {
            format!("target ≤ 120 µs: {}; {}", verdict(l.cpu_per_call.is_some_and(|c| c <= Duration::from_micros(120))), switches(l))
        } else {
            switches(l)
        };
        t.row("4", &format!("CPU per call under 64 clients, {name} (process CPU time / calls answered)"), cpu(l), String::new(), note);
    }
    Ok(())
}

fn hot_deploy(t: &mut Table, s: &Servers) -> Result<()> {
    let base = component("plando");
    let served = |s: &Servers, digest: &str| -> Result<bool> {
        let (ok, id) = s.call(&s.host_url)?;
        let trace: Value = s.client.get(format!("{}/v1/tenants/acme/calls/{id}", s.host_url)).send()?.json()?;
        Ok(ok && trace["digest"] == digest)
    };
    let deploy_and_call = |bytes: &Vec<u8>| -> Result<Duration> {
        let started = Instant::now();
        s.deploy(bytes.clone())?;
        let (ok, _) = s.call(&s.host_url)?;
        ensure!(ok, "the first call after a deploy failed");
        Ok(started.elapsed())
    };
    // Cold: a digest this host has never seen (compiled on upload).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let variants: Vec<Vec<u8>> = (0..8).map(|i| with_custom_section(base.clone(), &format!("bench-{nanos}-{i}"))).collect();
    let mut cold = Vec::new();
    for v in &variants {
        cold.push(deploy_and_call(v)?);
        let digest = Runtime::digest(v);
        std::thread::sleep(Duration::from_millis(300)); // the trace is written in batches
        ensure!(served(s, &digest)?, "the call after the deploy was not served by {digest}");
    }
    // Warm: versions already compiled and stored, deployed again in turn.
    let mut warm = Vec::new();
    for i in 0..40 {
        warm.push(deploy_and_call(&variants[i % 2])?);
    }
    let (cold, warm) = (Sample::new(cold), Sample::new(warm));
    t.sample("5", "hot deploy, new digest: upload -> first call served (cold)", &cold, format!("target ≤ 300 ms: {}", verdict(cold.p50() <= Duration::from_millis(300))));
    t.sample("5", "hot deploy, stored digest: upload -> first call served (warm)", &warm, format!("target ≤ 5 ms: {}", verdict(warm.p50() <= Duration::from_millis(5))));
    Ok(())
}

fn scaling(t: &mut Table, s: &Servers, duration: Duration) -> Result<()> {
    let host = s.target(&s.host_url);
    for clients in [1, 2, 4, 16, 64] {
        let h = load::run(&host, clients, duration, 2);
        ensure!(h.failed == 0, "host: {} failed requests under load", h.failed);
        let mut best: Option<(load::Load, &str)> = None;
        for (_, url, mode) in &s.natives {
            let n = load::run(&s.target(url), clients, duration, 2);
            ensure!(n.failed == 0, "native ({mode}): {} failed requests under load", n.failed);
            if best.as_ref().is_none_or(|(b, _)| n.rps > b.rps) {
                best = Some((n, mode));
            }
        }
        let (n, mode) = best.expect("native servers");
        let peer = match &s.peer {
            Some((_, url)) => {
                let p = load::run(&s.target(url), clients, duration, 2);
                ensure!(p.failed == 0, "wasmtime serve: {} failed requests under load", p.failed);
                format!("; wasmtime serve {:.0}/s, p50 {}, p99 {}", p.rps, us(p.latency.p50()), us(p.latency.p99()))
            }
            None => String::new(),
        };
        let p50 = ratio(h.latency.p50(), n.latency.p50());
        let target = if clients == 1 { format!(" (target ≤ 2.0x: {})", verdict(p50 <= 2.0)) } else { String::new() };
        t.row(
            "7",
            &format!("{clients} clients: host req/s (fastest native: {mode})"),
            format!("{:.0}/s ({:.0}/s)", h.rps, n.rps),
            format!("{} ({})", us(h.latency.p99()), us(n.latency.p99())),
            format!(
                "host/native {:.3}; p50 {} ({}), {p50:.2}x{target}; CPU per call {} ({}){peer}",
                h.rps / n.rps,
                us(h.latency.p50()),
                us(n.latency.p50()),
                cpu(&h),
                cpu(&n)
            ),
        );
    }
    Ok(())
}

// ----- 6. start-up and memory with many tenants ---------------------------------------

fn many_tenants(t: &mut Table) -> Result<()> {
    let data = TempDir::new("bench-tenants");
    // Adapters deployed once, through the API; then tenants written straight into the store
    // (validating 100,000 crmConfigs through the API is not what is measured here).
    let (mut child, url, _) = spawn_host(data.path(), &[])?;
    let client = reqwest::blocking::Client::new();
    for name in ["plando", "leadim", "planfix"] {
        let r = client.put(format!("{url}/v1/adapters/{name}")).body(component(name)).send()?;
        ensure!(r.status().is_success(), "deploy {name}: {}", r.text()?);
    }
    stop(&mut child);

    let mut rss = Vec::new();
    let mut have = 0usize;
    for n in [0usize, 10_000, 100_000] {
        add_tenants(data.path(), have, n)?;
        have = n;
        let mut startups = Vec::new();
        let mut kb = 0u64;
        for _ in 0..3 {
            let (mut child, url, started) = spawn_host(data.path(), &[])?;
            let ok = client.get(format!("{url}/v1/tenants/t{}", n.saturating_sub(1))).send()?.status();
            ensure!(n == 0 || ok == 200, "tenant t{} not served after start-up: {ok}", n - 1);
            startups.push(started);
            kb = rss_kb(child.id())?;
            stop(&mut child);
        }
        let s = Sample::new(startups);
        rss.push((n, kb));
        let note = if n == 100_000 {
            format!("RSS {} MB (targets: start ≤ 2 s {}, RSS ≤ 300 MB {})", kb / 1024, verdict(s.p50() <= Duration::from_secs(2)), verdict(kb <= 300 * 1024))
        } else {
            format!("RSS {} MB", kb / 1024)
        };
        t.sample("6", &format!("start-up with {n} tenants (exec -> listening, median of 3)"), &s, note);
    }
    let per_10k = (rss[2].1 as f64 - rss[0].1 as f64) / 10.0 / 1024.0;
    t.row("6", "RSS growth per 10,000 tenants", format!("{per_10k:.1} MB"), String::new(), "from 0 to 100,000".into());
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Tenants `from..to` across the three adapters, in one transaction.
fn add_tenants(dir: &std::path::Path, from: usize, to: usize) -> Result<()> {
    let db = dir.join(crm_host::store::sqlite::DB_FILE);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
        let mut tx = conn.begin().await?;
        for i in from..to {
            let (adapter, config) = match i % 3 {
                0 => ("plando", json!({"token": format!("key-{i}"), "chat": i.to_string(), "attrFields": "category_1"})),
                1 => ("leadim", json!({"lm_form": format!("form-{i}"), "lm_key": "form-key", "token": format!("t-{i}"), "getCustomerDetailsUrl": "https://proxy.leadim.xyz/lookup"})),
                _ => ("planfix", json!({"planfixUrl": format!("https://t{i}.planfix.com"), "token": format!("pf-{i}"), "providerId": "texter", "chatToken": format!("in-{i}")})),
            };
            sqlx::query("INSERT INTO tenants (id, adapter, project_id, crm_config, pin, updated_at_ms) VALUES (?, ?, ?, ?, NULL, 0)")
                .bind(format!("t{i}"))
                .bind(adapter)
                .bind(format!("p{i}"))
                .bind(config.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        anyhow::Ok(())
    })
}
