//! The long run (`cargo xtask soak [MINUTES]`, and one minute of it in the test suite): the
//! real `crm-host` binary serving 100 tenants of all three adapters (emulated CRMs on
//! loopback) at a fixed call rate, Planfix webhooks, a hot deploy every minute and a
//! rollback (and the rolled-back version deleted) half a minute later, traces read. Every
//! minute it prints the host's RSS, open file descriptors, database size, call p50/p99 and
//! failed calls. A benchmark: it prints figures; only failed calls make it fail.

use crate::{leadim, planfix, plando};
use anyhow::{ensure, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ADMIN: &str = "soak-admin-token-0123456789";
const TENANTS: usize = 100;
const KNOWN_PHONE: &str = "972501234567";

pub struct SoakOptions {
    pub host_bin: PathBuf,
    pub plugins: PathBuf,
    pub data_dir: PathBuf,
    pub minutes: u64,
    /// Calls per second, every tenant together.
    pub rate: u64,
}

/// One minute of the run.
#[derive(Debug, Clone)]
pub struct Minute {
    pub minute: u64,
    pub calls: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub webhooks: u64,
    pub rss_mb: f64,
    pub fds: u64,
    pub db_mb: f64,
}

pub struct SoakReport {
    pub minutes: Vec<Minute>,
    /// The first few failures, as answered.
    pub failures: Vec<String>,
}

impl SoakReport {
    pub fn failed(&self) -> u64 {
        self.minutes.iter().map(|m| m.failed).sum()
    }

    /// The table BENCHMARKS.md records, and a verdict on flatness after the first fifth.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| minute | calls | failed | p50 ms | p99 ms | webhooks | RSS MB | fds | DB MB |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for m in &self.minutes {
            out.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {} | {:.1} | {} | {:.1} |\n",
                m.minute, m.calls, m.failed, m.p50_ms, m.p99_ms, m.webhooks, m.rss_mb, m.fds, m.db_mb
            ));
        }
        let settled = &self.minutes[self.minutes.len() / 5..];
        let spread = |f: fn(&Minute) -> f64| {
            let (lo, hi) = settled.iter().map(f).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            if lo > 0.0 { (hi - lo) / lo * 100.0 } else { 0.0 }
        };
        out.push_str(&format!(
            "\nFrom minute {} on: RSS within {:.1}%, fds within {:.1}%, database within {:.1}%; {} failed calls.\n",
            settled.first().map_or(0, |m| m.minute),
            spread(|m| m.rss_mb),
            spread(|m| m.fds as f64),
            spread(|m| m.db_mb),
            self.failed()
        ));
        out
    }
}

/// What the callers saw in the current minute.
#[derive(Default)]
struct Tally {
    latencies_us: Mutex<Vec<u64>>,
    failed: AtomicU64,
    webhooks: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 10 {
            f.push(what);
        }
    }
}

struct Host {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
        let mut r = self.http.request(method.parse()?, format!("{}{path}", self.url)).bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn expect(&self, method: &str, path: &str, body: Option<Vec<u8>>, status: u16) -> anyhow::Result<Value> {
        let (s, v) = self.send(method, path, body).await?;
        ensure!(s == status, "{method} {path}: {s} {v}");
        Ok(v)
    }
}

/// Tenant `i`'s chat; `phone` is the known customer's for lookups and a new one for every
/// write (so the CRMs' answers to lookups, and the traces of them, keep their size).
fn chat(i: usize, phone: &str) -> Value {
    json!({"id": format!("chat-{i}"), "phone": phone, "title": "Dana Levi",
           "messages": [{"id": "m1", "direction": "incoming", "text": "Hello", "timestamp": 1767000000000u64}]})
}

/// Each tenant's adapter and the call it makes; a few calls in ten write to the CRM.
fn tenant(i: usize) -> (&'static str, Value) {
    match i % 3 {
        0 => ("plando", json!({"token": "soak-token", "chat": "77"})),
        1 => ("leadim", json!({"lm_form": "form-1", "lm_key": "form-key", "token": "leadim-auth", "getCustomerDetailsUrl": leadim::LOOKUP_URL})),
        _ => ("planfix", json!({"planfixUrl": format!("https://t{i}.planfix.com"), "token": "planfix-token", "providerId": "texter", "chatToken": format!("hook-{i}")})),
    }
}

fn operation(i: usize, n: u64) -> &'static str {
    match (i % 3, n % 10) {
        (0, 0) => "newOpportunity",
        (2, 0) => "newMessage",
        _ => "getCustomerDetails",
    }
}

pub async fn run(o: SoakOptions) -> anyhow::Result<SoakReport> {
    let plando_crm = plando::start("soak-token").await;
    plando_crm.with_state(|s| s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": KNOWN_PHONE})));
    let leadim_crm = leadim::start("leadim-auth", "form-1", "form-key").await;
    leadim_crm.with_state(|s| s.add_lead(json!({"aid": leadim::ACCOUNT, "lid": "123", "phone": KNOWN_PHONE, "שם": "דנה לוי"})));
    let planfix_crm = planfix::start("planfix-token", "texter").await;

    let routes = [
        format!("plando.co.il={}", plando_crm.url),
        format!("proxy.leadim.xyz={}", leadim_crm.url),
        format!("api.lead.im={}", leadim_crm.url),
        format!("*.planfix.com={}", planfix_crm.url),
    ];
    let _ = std::fs::remove_dir_all(&o.data_dir);
    let mut cmd = Command::new(&o.host_bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--upstream-only", "--admin-token", ADMIN, "--log-format", "json"])
        .arg("--data-dir")
        .arg(&o.data_dir)
        .arg("--plugins")
        .arg(&o.plugins)
        // Retention short enough to reach within the run: traces by count, events by age.
        .args(["--trace-retention", "200", "--event-retention-days", "0.0035"])
        .args(routes.iter().flat_map(|r| ["--upstream".to_string(), r.clone()]))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", o.host_bin.display()))?;
    let (_, url) = crate::read_listen_url(child.stdout.take().context("stdout")?)?;
    let host = Arc::new(Host { child, url, http: reqwest::Client::new() });
    let pid = host.child.id();

    for i in 0..TENANTS {
        let (adapter, config) = tenant(i);
        let body = json!({"adapter": adapter, "projectId": format!("p{i}"), "crmConfig": config}).to_string().into_bytes();
        host.expect("PUT", &format!("/v1/tenants/t{i}"), Some(body), 200).await?;
    }
    // Every Planfix tenant's chat has its task before the run (lookups then find it).
    for i in (2..TENANTS).step_by(3) {
        let body = json!({"chat": chat(i, KNOWN_PHONE), "params": {"message": "first"}}).to_string().into_bytes();
        let out = host.expect("POST", &format!("/v1/tenants/t{i}/crm/newMessage"), Some(body), 200).await?;
        ensure!(out["outcome"] == "complete", "t{i} newMessage: {out}");
    }

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(o.minutes * 60);
    let calls = tokio::spawn(callers(host.clone(), tally.clone(), o.rate, end));
    let webhooks = tokio::spawn(webhooks(host.clone(), tally.clone(), end));
    let readers = tokio::spawn(trace_readers(host.clone(), tally.clone(), end));
    let plando_bytes = std::fs::read(o.plugins.join("plando.wasm")).context("plando.wasm")?;

    let mut minutes = Vec::new();
    for minute in 1..=o.minutes {
        // A hot deploy at the start of the minute, a rollback and a delete half a minute on.
        let tagged = crate::with_custom_section(plando_bytes.clone(), &format!("soak-{minute}"));
        let deployed = host.expect("PUT", "/v1/adapters/plando", Some(tagged), 201).await?;
        tokio::time::sleep_until((started + Duration::from_secs((minute - 1) * 60 + 30)).into()).await;
        host.expect("POST", "/v1/adapters/plando/rollback", None, 200).await?;
        let digest = deployed["digest"].as_str().unwrap_or_default();
        host.expect("DELETE", &format!("/v1/adapters/plando/versions/{digest}"), None, 204).await?;
        tokio::time::sleep_until((started + Duration::from_secs(minute * 60)).into()).await;

        let mut latencies = std::mem::take(&mut *tally.latencies_us.lock().unwrap());
        latencies.sort_unstable();
        let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).map_or(0.0, |us| *us as f64 / 1000.0);
        let m = Minute {
            minute,
            calls: latencies.len() as u64,
            failed: tally.failed.swap(0, Relaxed),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            webhooks: tally.webhooks.swap(0, Relaxed),
            rss_mb: rss_kb(pid) as f64 / 1024.0,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            db_mb: db_bytes(&o.data_dir) as f64 / (1 << 20) as f64,
        };
        eprintln!(
            "soak minute {}: {} calls, {} failed, p50 {:.2} ms, p99 {:.2} ms, {} webhooks, RSS {:.1} MB, {} fds, database {:.1} MB",
            m.minute, m.calls, m.failed, m.p50_ms, m.p99_ms, m.webhooks, m.rss_mb, m.fds, m.db_mb
        );
        minutes.push(m);
        // The emulators' own recordings are not what is measured.
        plando_crm.forget_requests();
        leadim_crm.forget_requests();
        planfix_crm.forget_requests();
    }
    for task in [calls, webhooks, readers] {
        task.await??;
    }
    let failures = tally.failures.lock().unwrap().clone();
    Ok(SoakReport { minutes, failures })
}

/// Calls at a fixed rate, round robin over the tenants, each on a task of its own (a slow
/// call does not slow the rate).
async fn callers(host: Arc<Host>, tally: Arc<Tally>, rate: u64, end: Instant) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let i = (n as usize) % TENANTS;
        let op = operation(i, n / TENANTS as u64);
        let (host, tally) = (host.clone(), tally.clone());
        n += 1;
        let phone = if op == "getCustomerDetails" { KNOWN_PHONE.to_string() } else { format!("97259{n:07}") };
        tokio::spawn(async move {
            let body = json!({"chat": chat(i, &phone), "params": {"message": "soak", "contact_first_name": "Dana"}}).to_string().into_bytes();
            let took = Instant::now();
            match host.send("POST", &format!("/v1/tenants/t{i}/crm/{op}"), Some(body)).await {
                Ok((200, out)) if out["outcome"] == "complete" => tally.latencies_us.lock().unwrap().push(took.elapsed().as_micros() as u64),
                Ok((s, out)) => tally.fail(format!("t{i} {op}: {s} {out}")),
                Err(e) => tally.fail(format!("t{i} {op}: {e}")),
            }
        });
    }
    // The last calls finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// A Planfix message to one Planfix tenant each second, each one new (stored).
async fn webhooks(host: Arc<Host>, tally: Arc<Tally>, end: Instant) -> anyhow::Result<()> {
    let mut n = 0usize;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let i = 2 + 3 * (n % (TENANTS / 3));
        let (chat, token, text) = (format!("chat-{i}"), format!("hook-{i}"), format!("reply {n}"));
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("cmd", "newMessage"), ("providerId", "texter"), ("chatId", &chat), ("token", &token), ("message", &text)])
            .finish();
        let resp = host
            .http
            .post(format!("{}/v1/tenants/t{i}/webhook", host.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await;
        match resp.map(|r| r.status().as_u16()) {
            Ok(200) => {
                tally.webhooks.fetch_add(1, Relaxed);
            }
            other => tally.fail(format!("webhook t{i}: {other:?}")),
        }
        n += 1;
    }
    Ok(())
}

/// An operator reading traces every few seconds: a tenant's calls, then the newest one.
async fn trace_readers(host: Arc<Host>, tally: Arc<Tally>, end: Instant) -> anyhow::Result<()> {
    let mut n = 0usize;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let t = format!("t{}", n % TENANTS);
        n += 1;
        let listed = host.send("GET", &format!("/v1/tenants/{t}/calls?limit=20"), None).await;
        let Ok((200, list)) = listed else {
            tally.fail(format!("listing {t}'s calls: {listed:?}"));
            continue;
        };
        if let Some(id) = list["calls"][0]["callId"].as_str() {
            if !matches!(host.send("GET", &format!("/v1/tenants/{t}/calls/{id}"), None).await, Ok((200, _))) {
                tally.fail(format!("reading {t}'s call {id}"));
            }
        }
    }
    Ok(())
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

/// The SQLite database with its write-ahead log.
fn db_bytes(dir: &Path) -> u64 {
    ["crm-host.db", "crm-host.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum()
}
