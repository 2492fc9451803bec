//! `cargo xtask soak [MINUTES] [RATE]`: the long run of [`crm_tests::soak`] against a release
//! `crm-host`, printing a line a minute and, at the end, the table BENCHMARKS.md records.
//! Exits non-zero if any call failed.

use crm_tests::soak::{run, SoakOptions};
use std::path::PathBuf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let minutes: u64 = args.next().map(|m| m.parse()).transpose()?.unwrap_or(60);
    let rate: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(50);
    let host_bin = PathBuf::from(std::env::var("CRM_HOST_BIN").unwrap_or_else(|_| "target/release/crm-host".into()));
    let data_dir = std::env::temp_dir().join(format!("crm-soak-{}", std::process::id()));
    eprintln!("soak: {minutes} minutes, {rate} calls/s over 100 tenants, {} (data in {})", host_bin.display(), data_dir.display());
    let report = run(SoakOptions { host_bin, plugins: crm_tests::plugins_dir(), data_dir: data_dir.clone(), minutes, rate }).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let report = report?;
    println!("{}", report.table());
    for f in &report.failures {
        println!("failed: {f}");
    }
    anyhow::ensure!(report.failed() == 0, "{} calls failed", report.failed());
    Ok(())
}
