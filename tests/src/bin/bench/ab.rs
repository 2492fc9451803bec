//! Two builds side by side (`cargo xtask bench ab`): this build's host and another, or the
//! same host with another build of the adapters, under the same load at the same time, each
//! its own process with its own 32 clients. Their CPU per call is compared round by round.
//!
//! Why at the same time: this VM's speed drifts by up to a third within minutes, so two
//! builds measured one after the other differ by more than most changes do. Run at once,
//! both see the same drift, and the ratio keeps only what the builds differ in. What is left
//! is a bias of the two sides' places (which process the scheduler favours): each round
//! swaps them, and the ratio is the geometric mean over both places. Point both sides at the
//! same build to see the noise that remains (an A/A run).

use super::{acme_target, host_args, setup_acme_with, spawn_host_of, Table};
use crate::load::{self, us};
use anyhow::{ensure, Context, Result};
use crm_tests::TempDir;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

/// One side: a host binary, the plando component it serves, and the running process.
struct Side {
    name: &'static str,
    host: Child,
    target: load::Target,
    _data: TempDir,
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = self.host.kill();
        let _ = self.host.wait();
    }
}

impl Side {
    fn start(name: &'static str, binary: &std::path::Path, plando: Vec<u8>, crm: &str, tenants: usize) -> Result<Side> {
        let data = TempDir::new(&format!("bench-ab-{name}"));
        let (host, url, _) = spawn_host_of(binary, data.path(), &host_args(crm))?;
        let side = Side { name, target: acme_target(&url, Some(host.id()), tenants), host, _data: data };
        setup_acme_with(&reqwest::blocking::Client::new(), &url, plando, tenants)?;
        Ok(side)
    }
}

/// `BENCH_AB` names side B's host binary (side A is this build's), `BENCH_AB_PLUGINS` a
/// directory with side B's `plando.wasm` (side A's comes from `CRM_PLUGINS_DIR`); either,
/// both, or neither (an A/A run). `BENCH_AB_ROUNDS` (default 6) rounds of `duration`;
/// `BENCH_AB_TENANTS` (default 1) tenants, each client calling them in turn (what the trace
/// retention costs grows with the tenants a batch of traces holds).
pub fn side_by_side(t: &mut Table, crm: &str, duration: Duration) -> Result<()> {
    let this = super::host_binary()?;
    let binary_b = std::env::var_os("BENCH_AB").map(PathBuf::from).unwrap_or_else(|| this.clone());
    let plugins_a = crm_tests::plugins_dir();
    let plugins_b = std::env::var_os("BENCH_AB_PLUGINS").map_or_else(|| plugins_a.clone(), PathBuf::from);
    let path = plugins_b.join("plando.wasm");
    let plando_b = std::fs::read(&path).with_context(|| format!("reading side B's adapter {}", path.display()))?;
    let rounds: usize = std::env::var("BENCH_AB_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let tenants: usize = std::env::var("BENCH_AB_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let a = Side::start("A", &this, crm_tests::component("plando"), crm, tenants)?;
    let b = Side::start("B", &binary_b, plando_b, crm, tenants)?;
    eprintln!(
        "bench: side by side: A = {} with {}, B = {} with {}",
        this.display(),
        plugins_a.display(),
        binary_b.display(),
        plugins_b.display()
    );
    let mut ratios = Vec::new();
    let (mut cpu_a, mut cpu_b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Swapped every round: which side's load starts first, and so whose threads the
        // scheduler met first.
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (l1, l2) = std::thread::scope(|s| {
            let h = s.spawn(|| load::run(&first.target, 32, duration, 1));
            let l2 = load::run(&second.target, 32, duration, 1);
            (h.join().expect("load thread"), l2)
        });
        let (la, lb) = if round % 2 == 0 { (l1, l2) } else { (l2, l1) };
        for (side, l) in [(&a, &la), (&b, &lb)] {
            ensure!(l.failed == 0, "side {}: {} failed requests under load", side.name, l.failed);
        }
        let (ca, cb) = (la.cpu_per_call.context("CPU time of side A")?, lb.cpu_per_call.context("CPU time of side B")?);
        let r = cb.as_secs_f64() / ca.as_secs_f64();
        eprintln!("bench: round {}: A {} ({:.0}/s), B {} ({:.0}/s), B/A {r:.3}", round + 1, us(ca), la.rps, us(cb), lb.rps);
        ratios.push(r);
        cpu_a.push(ca);
        cpu_b.push(cb);
    }
    let mean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
    let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    cpu_a.sort();
    cpu_b.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    t.row(
        "ab",
        "CPU per call, side by side, 2 × 32 clients: B / A (geometric mean of the rounds)",
        format!("{mean:.3}"),
        String::new(),
        format!("{rounds} rounds, {lo:.3}–{hi:.3}; A median {}, B median {}", us(median(&cpu_a)), us(median(&cpu_b))),
    );
    Ok(())
}
