//! The measuring side: a closed-loop HTTP/1.1 load generator on hyper (each client one
//! keep-alive connection, one request in flight), and the statistics every row prints.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Latencies of one measurement, sorted.
pub struct Sample(Vec<Duration>);

impl Sample {
    pub fn new(mut v: Vec<Duration>) -> Sample {
        v.sort_unstable();
        Sample(v)
    }

    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i]
    }

    pub fn p50(&self) -> Duration {
        self.pct(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.pct(0.99)
    }
}

/// Times `n` sequential runs of `f` after `n / 10` unrecorded ones.
pub fn time_sync(n: usize, mut f: impl FnMut()) -> Sample {
    for _ in 0..n / 10 {
        f();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    Sample::new(v)
}

/// The same for an async operation.
pub async fn time_async<F, Fut>(n: usize, mut f: F) -> Sample
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    Sample::new(v)
}

/// One load run's result.
pub struct Load {
    pub rps: f64,
    pub latency: Sample,
    pub failed: u64,
    /// The server's CPU time (user + system, all its threads) per request answered within
    /// the measured window, when the target names its process.
    pub cpu_per_call: Option<Duration>,
    /// The server's context switches (all its threads, voluntary or not) per request: how
    /// many times a call hands the CPU over between threads.
    pub switches_per_call: Option<f64>,
    /// The server's page faults (minor and major) per request: what resetting a sandbox's
    /// memory by `madvise` costs the next call.
    pub faults_per_call: Option<f64>,
}

/// A request the load generator repeats: each client takes the paths in turn, from its own
/// place in the list.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub paths: Vec<String>,
    pub body: Bytes,
    /// A substring every good answer holds.
    pub expect: &'static str,
    /// The server's process, for its CPU time.
    pub pid: Option<u32>,
}

/// A process's context switches so far, all its threads together.
pub fn switches(pid: u32) -> Option<u64> {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(n)
}

/// The sum of some numeric fields of `/proc/PID/stat`, counted from the field after the
/// command name (which may hold spaces, so fields start past its closing ')').
fn stat_sum(pid: u32, fields: &[usize]) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let all: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    fields.iter().map(|&i| all.get(i)?.parse::<u64>().ok()).sum()
}

/// A process's page faults so far: minor and major.
pub fn page_faults(pid: u32) -> Option<u64> {
    stat_sum(pid, &[7, 9])
}

/// A process's CPU time so far: utime + stime, in clock ticks.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let ticks = stat_sum(pid, &[11, 12])?;
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// `clients` keep-alive connections, each sending `target` back to back for `duration`
/// (after a one-second warm-up), on a runtime of its own with `threads` workers.
pub fn run(target: &Target, clients: usize, duration: Duration, threads: usize) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async {
        let warmup = Instant::now() + Duration::from_secs(1);
        let end = warmup + duration;
        let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(client(target.clone(), i, warmup, end))).collect();
        let cpu = target.pid.map(|pid| {
            tokio::spawn(async move {
                tokio::time::sleep_until(warmup.into()).await;
                let before = (cpu_time(pid)?, switches(pid)?, page_faults(pid)?);
                tokio::time::sleep_until(end.into()).await;
                Some((cpu_time(pid)? - before.0, switches(pid)? - before.1, page_faults(pid)? - before.2))
            })
        });
        let (mut lat, mut done, mut failed) = (Vec::new(), 0u64, 0u64);
        for t in tasks {
            let (l, f) = t.await.expect("client task");
            done += l.len() as u64;
            failed += f;
            lat.extend(l);
        }
        let cpu = match cpu {
            Some(task) => task.await.expect("CPU sampler"),
            None => None,
        };
        let per_call = cpu.filter(|_| done > 0);
        let cpu_per_call = per_call.map(|(c, _, _)| c / done as u32);
        let switches_per_call = per_call.map(|(_, n, _)| n as f64 / done as f64);
        let faults_per_call = per_call.map(|(_, _, n)| n as f64 / done as f64);
        Load { rps: done as f64 / duration.as_secs_f64(), latency: Sample::new(lat), failed, cpu_per_call, switches_per_call, faults_per_call }
    })
}

async fn client(t: Target, first: usize, warmup: Instant, end: Instant) -> (Vec<Duration>, u64) {
    let (mut lat, mut failed) = (Vec::new(), 0u64);
    let mut sender = connect(t.addr).await;
    for n in first.. {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let request = hyper::Request::post(t.paths[n % t.paths.len()].as_str())
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(t.body.clone()))
            .unwrap();
        let ok = match sender.send_request(request).await {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(b) => status == 200 && memfind(&b.to_bytes(), t.expect.as_bytes()),
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        if !ok {
            failed += 1;
            sender = connect(t.addr).await;
            continue;
        }
        if started >= warmup {
            lat.push(started.elapsed());
        }
    }
    (lat, failed)
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the server under load");
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

pub fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}
