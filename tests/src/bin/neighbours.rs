//! Noisy-neighbour benchmark (`cargo xtask bench neighbours`): how much one tenant's
//! spinning adapter slows another tenant's Plando lookup and the host's `/healthz`.
//!
//! The host runs in this process on a runtime built exactly as `crm-host serve` builds its
//! own (its default API threads), plus its guest threads; the client and the Plando
//! emulator run on a separate single-threaded runtime. For each host configuration it
//! measures the neighbour quiet, then with 1 and 2 tenants' calls spinning until their
//! deadline, and prints p50/p99 of both against the targets:
//!   neighbour p99 <= max(50 ms, 4 x quiet p99); /healthz p99 <= 10 ms.
//! A last phase replays the neighbour's recorded lookups (1,000 at a time, back to back)
//! instead of spinning, and reports how long 1,000 replayed calls take (target: 10 s).

use crm_tests::{plando, TestHost, TestHostConfig};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PHASE: Duration = Duration::from_secs(6);

fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("NEIGHBOURS_PHASE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(PHASE.as_secs());
    let phase = Duration::from_secs(secs);
    let cpus = crm_host::runtime::default_guest_threads();
    println!("noisy neighbours: {cpus} CPUs, {}s per phase, host deps at the dev profile's opt-level", phase.as_secs());
    println!();
    println!("| guest threads | spinners | neighbour p50 | neighbour p99 | /healthz p50 | /healthz p99 | neighbour calls | verdict |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut replay_lines = Vec::new();
    for guest_threads in [0, cpus] {
        run(guest_threads, phase, &mut replay_lines)?;
    }
    println!();
    for line in replay_lines {
        println!("{line}");
    }
    Ok(())
}

fn run(guest_threads: usize, phase: Duration, replay_lines: &mut Vec<String>) -> anyhow::Result<()> {
    // As `crm-host serve` does, with its default number of API threads.
    let cpus = crm_host::runtime::default_guest_threads();
    let host_rt = crm_host::cli::api_runtime(crm_host::cli::default_api_threads(cpus, guest_threads))?;
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let crm = client_rt.block_on(plando::start("bench-token"));
    crm.with_state(|s| {
        s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567",
                             "email": "dana@example.com", "category_1": "gold", "category_2": "active"}))
    });
    let config = TestHostConfig {
        limits: crm_host::Limits::default(),
        guest_threads: Some(guest_threads),
        ..TestHostConfig::default().routes(&[("plando.co.il", &crm.url)])
    };
    let host = Arc::new(host_rt.block_on(TestHost::start_config(config)));
    client_rt.block_on(async {
        host.deploy("plando").await;
        host.deploy("chaos").await;
        let (s, b) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "bench-token", "chat": "1"}})).await;
        anyhow::ensure!(s == 200, "tenant: {b}");
        for t in ["noisy1", "noisy2"] {
            let (s, b) = host
                .put_tenant(t, json!({"adapter": "chaos", "crmConfig": {}, "limits": {"deadlineMs": 2000}}))
                .await;
            anyhow::ensure!(s == 200, "tenant: {b}");
        }
        let digest = host.get("/v1/adapters/plando").await.1["digest"].as_str().unwrap_or_default().to_string();
        let mut quiet_p99 = 0.0;
        // Phases: 0, 1 and 2 spinners; then replays of acme's recorded lookups back to back
        // (the quiet phase recorded them), which must not slow live calls more than spinners may.
        for phase_no in 0..=3 {
            let spinners = if phase_no == 3 { 0 } else { phase_no };
            let replaying = phase_no == 3;
            let stop = Arc::new(AtomicBool::new(false));
            let mut noise = Vec::new();
            let replays = Arc::new(std::sync::Mutex::new(Vec::<(u64, Duration)>::new()));
            if replaying {
                let (host, stop, replays, digest) = (host.clone(), stop.clone(), replays.clone(), digest.clone());
                noise.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let (s, report) = host.post_json(&format!("/v1/adapters/plando/versions/{digest}/replay"), json!({"limit": 1000})).await;
                        assert_eq!((s, report["verdict"].as_str()), (200, Some("pass")), "{report}");
                        replays.lock().unwrap().push((report["calls"].as_u64().unwrap_or(0), started.elapsed()));
                    }
                }));
            }
            for i in 0..spinners {
                let (host, stop) = (host.clone(), stop.clone());
                noise.push(tokio::spawn(async move {
                    let tenant = format!("noisy{}", i + 1);
                    while !stop.load(Ordering::Relaxed) {
                        let (_, out) = host.call(&tenant, "spin", json!({"chat": {"id": "c", "phone": "1"}})).await;
                        assert_eq!(out["error"]["kind"], "deadline_exceeded", "{out}");
                    }
                }));
            }
            if spinners > 0 || replaying {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let until = Instant::now() + phase;
            let lookups = async {
                let mut samples = Vec::new();
                let body = json!({"chat": {"id": "c1", "phone": "972501234567"}});
                while Instant::now() < until {
                    let started = Instant::now();
                    let data = host.complete("acme", "getCustomerDetails", body.clone()).await;
                    samples.push(started.elapsed());
                    assert_eq!(data["contact_id"], "501", "{data}");
                }
                samples
            };
            let health = async {
                let mut samples = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    assert_eq!(host.get("/healthz").await.0, 200);
                    samples.push(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                samples
            };
            let (lookups, health) = tokio::join!(lookups, health);
            stop.store(true, Ordering::Relaxed);
            for n in noise {
                n.await?;
            }
            let (n50, n99) = (percentile(&lookups, 50.0), percentile(&lookups, 99.0));
            let (h50, h99) = (percentile(&health, 50.0), percentile(&health, 99.0));
            if spinners == 0 {
                quiet_p99 = n99;
            }
            let neighbour_ok = n99 <= (4.0 * quiet_p99).max(50.0);
            let verdict = match (phase_no, neighbour_ok, h99 <= 10.0) {
                (0, _, true) => "quiet baseline",
                (0, _, false) => "quiet, /healthz slow",
                (_, true, true) => "within targets",
                (_, false, true) => "MISS: neighbour",
                (_, true, false) => "MISS: /healthz",
                (_, false, false) => "MISS: both",
            };
            let noise_label = if replaying { "replays".to_string() } else { spinners.to_string() };
            println!(
                "| {} | {noise_label} | {n50:.2} ms | {n99:.2} ms | {h50:.2} ms | {h99:.2} ms | {} | {verdict} |",
                if guest_threads == 0 { "0 (API runtime)".to_string() } else { guest_threads.to_string() },
                lookups.len()
            );
            if replaying {
                let runs = replays.lock().unwrap().clone();
                let per_1000: Vec<f64> =
                    runs.iter().filter(|(n, _)| *n > 0).map(|(n, d)| d.as_secs_f64() * 1000.0 / *n as f64).collect();
                let calls = runs.iter().map(|(n, _)| n).sum::<u64>();
                let worst = per_1000.iter().cloned().fold(0.0, f64::max);
                replay_lines.push(format!(
                    "guest threads {guest_threads}: {} replays, {calls} calls replayed; slowest {worst:.2} s per 1,000 calls (target ≤ 10 s: {})",
                    runs.len(),
                    if worst > 0.0 && worst <= 10.0 { "met" } else { "MISSED" }
                ));
            }
        }
        anyhow::Ok(())
    })?;
    drop(host);
    host_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if ms.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (ms.len() - 1) as f64).round() as usize;
    ms[i.min(ms.len() - 1)]
}
