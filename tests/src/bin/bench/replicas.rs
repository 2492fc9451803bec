//! Section 8, several hosts on one PostgreSQL database (a real server, started here like the tests
//! do): calls/s per replica against the SQLite default in the same run, how long until the
//! other replica serves a deploy, and what a deploy and a call write to the database (WAL
//! bytes, exact; PostgreSQL's own per-transaction statistics lag by up to 10 s, so they are
//! not used).

use super::{call_body, deploy_plando, load, setup_acme, spawn_host, stop, us, Table};
use anyhow::{ensure, Result};
use crm_tests::postgres::Postgres;
use crm_tests::{component, with_custom_section, TempDir};
use serde_json::Value;
use std::process::Child;
use std::time::{Duration, Instant};

struct Replica {
    child: Child,
    url: String,
    _data: TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn start(crm: &str, database: Option<&str>) -> Result<Replica> {
    let data = TempDir::new("bench-replica");
    let mut args: Vec<String> = vec![
        "--upstream".into(),
        format!("plando.co.il={crm}"),
        "--upstream-only".into(),
        "--max-concurrent-calls".into(),
        "128".into(),
    ];
    if let Some(db) = database {
        args.extend(["--database".into(), db.into()]);
    }
    let (child, url, _) = spawn_host(data.path(), &args)?;
    Ok(Replica { child, url, _data: data })
}

fn target(r: &Replica) -> load::Target {
    super::acme_target(&r.url, Some(r.child.id()), 1)
}

fn active(client: &reqwest::blocking::Client, r: &Replica) -> Result<Option<String>> {
    let v: Value = client.get(format!("{}/v1/adapters/plando/versions", r.url)).send()?.json()?;
    Ok(v["versions"].as_array().and_then(|a| a.iter().find(|x| x["state"] == "active")).and_then(|x| x["digest"].as_str()).map(String::from))
}

/// Bytes of WAL the database has written so far.
fn wal(rt: &tokio::runtime::Runtime, url: &str) -> Result<i64> {
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await?;
        Ok(sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::BIGINT").fetch_one(&mut c).await?)
    })
}

pub fn replicas(t: &mut Table, crm: &str, duration: Duration) -> Result<()> {
    let pg = Postgres::start();
    let url = pg.database("bench");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::blocking::Client::new();
    let (a, b) = (start(crm, Some(&url))?, start(crm, Some(&url))?);
    setup_acme(&client, &a.url)?;
    let until = Instant::now() + Duration::from_secs(30);
    while client.post(format!("{}/v1/tenants/acme/crm/getCustomerDetails", b.url)).body(call_body().to_string()).send()?.status() != 200 {
        ensure!(Instant::now() < until, "replica B never served the tenant made on A");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Calls: the SQLite default alone, one replica on PostgreSQL, then both replicas at once.
    let sqlite = start(crm, None)?;
    setup_acme(&client, &sqlite.url)?;
    let base = load::run(&target(&sqlite), 64, duration, 2);
    drop(sqlite);
    ensure!(base.failed == 0, "SQLite host: {} failed requests", base.failed);
    let wal_before = wal(&rt, &url)?;
    let one = load::run(&target(&a), 64, duration, 2);
    let wal_per_call = (wal(&rt, &url)? - wal_before) as f64 / (one.rps * (duration.as_secs_f64() + 1.0));
    ensure!(one.failed == 0, "replica A: {} failed requests", one.failed);
    let (ta, tb) = (target(&a), target(&b));
    let (la, lb) = std::thread::scope(|s| {
        let ha = s.spawn(|| load::run(&ta, 32, duration, 1));
        let hb = s.spawn(|| load::run(&tb, 32, duration, 1));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    ensure!(la.failed + lb.failed == 0, "{} failed requests across two replicas", la.failed + lb.failed);
    t.row("8", "64 clients, one host on SQLite (the default), req/s", format!("{:.0}/s", base.rps), us(base.latency.p99()), "the baseline of this section".into());
    t.row(
        "8",
        "64 clients, one replica on PostgreSQL, req/s",
        format!("{:.0}/s", one.rps),
        us(one.latency.p99()),
        format!("PostgreSQL/SQLite {:.2}; the database takes ~{:.0} WAL bytes per call (its trace)", one.rps / base.rps, wal_per_call),
    );
    t.row(
        "8",
        "2 replicas × 32 clients at once, req/s per replica",
        format!("{:.0}/s + {:.0}/s", la.rps, lb.rps),
        format!("{} / {}", us(la.latency.p99()), us(lb.latency.p99())),
        format!("{:.0}/s in all, on the same 2 CPUs as the database and the load", la.rps + lb.rps),
    );

    // Deploys through A; B's view is polled (memory only) until it serves the new digest.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let variants: Vec<Vec<u8>> = (0..10).map(|i| with_custom_section(component("plando"), &format!("replica-bench-{nanos}-{i}"))).collect();
    let measure = |bytes: &Vec<u8>| -> Result<(Duration, i64)> {
        let before = wal(&rt, &url)?;
        let digest = deploy_plando(&client, &a.url, bytes.clone())?;
        let deployed = Instant::now();
        while active(&client, &b)?.as_deref() != Some(digest.as_str()) {
            ensure!(deployed.elapsed() < Duration::from_secs(30), "replica B never served {digest}");
            std::thread::sleep(Duration::from_millis(2));
        }
        let seen = deployed.elapsed();
        Ok((seen, wal(&rt, &url)? - before))
    };
    let (mut cold, mut cold_wal) = (Vec::new(), 0);
    for v in &variants {
        let (d, w) = measure(v)?;
        cold.push(d);
        cold_wal += w;
    }
    let (mut warm, mut warm_wal) = (Vec::new(), 0);
    for i in 0..20 {
        let (d, w) = measure(&variants[i % 2])?;
        warm.push(d);
        warm_wal += w;
    }
    let (cold, warm) = (load::Sample::new(cold), load::Sample::new(warm));
    let size = variants[0].len();
    t.sample(
        "8",
        "deploy on A (new digest) -> served by B",
        &cold,
        format!(
            "target ≤ 1 s: {}; B compiles it first; {} KB WAL per deploy (component {} KB)",
            super::verdict(cold.pct(1.0) <= Duration::from_secs(1)),
            cold_wal / 10 / 1024,
            size / 1024
        ),
    );
    t.sample(
        "8",
        "deploy on A (stored digest) -> served by B",
        &warm,
        format!("target ≤ 1 s: {}; {} bytes WAL per deploy", super::verdict(warm.pct(1.0) <= Duration::from_secs(1)), warm_wal / 20),
    );
    // A replica joining a registry of 100,000 tenants (written straight into the database:
    // validating that many crmConfigs through the API is not what is measured).
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await?;
        sqlx::query(
            "INSERT INTO tenants (id, adapter, project_id, crm_config, updated_at_ms)
             SELECT 't' || i, 'plando', 'p' || i, '{\"token\":\"key-' || i || '\",\"chat\":\"' || i || '\"}', 0
             FROM generate_series(1, 100000) AS i",
        )
        .execute(&mut c)
        .await?;
        anyhow::Ok(())
    })?;
    let mut startups = Vec::new();
    let mut kb = 0;
    let data = TempDir::new("bench-join");
    for _ in 0..3 {
        let (mut child, joined, started) = spawn_host(data.path(), &["--database".into(), url.clone()])?;
        let status = client.get(format!("{joined}/v1/tenants/t100000")).send()?.status();
        ensure!(status == 200, "the joining replica does not serve tenant t100000: {status}");
        kb = super::rss_kb(child.id())?;
        startups.push(started);
        stop(&mut child);
    }
    t.sample(
        "8",
        "a replica joining 100,000 tenants: start-up (exec -> listening, median of 3)",
        &load::Sample::new(startups),
        format!("RSS {} MB; the first start compiles, the others use its compile cache", kb / 1024),
    );
    // Idle: each replica reads the audit log after its cursor once per --sync-interval-ms.
    let before = wal(&rt, &url)?;
    std::thread::sleep(Duration::from_secs(3));
    t.row("8", "2 idle replicas for 3 s: WAL written", format!("{} bytes", wal(&rt, &url)? - before), String::new(), "the poll only reads".into());
    drop((a, b));
    drop(pg);
    Ok(())
}
