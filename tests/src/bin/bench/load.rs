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
}

/// A request the load generator repeats.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub body: Bytes,
    /// A substring every good answer holds.
    pub expect: &'static str,
}

/// `clients` keep-alive connections, each sending `target` back to back for `duration`
/// (after a one-second warm-up), on a runtime of its own with `threads` workers.
pub fn run(target: &Target, clients: usize, duration: Duration, threads: usize) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async {
        let warmup = Instant::now() + Duration::from_secs(1);
        let end = warmup + duration;
        let tasks: Vec<_> = (0..clients).map(|_| tokio::spawn(client(target.clone(), warmup, end))).collect();
        let (mut lat, mut done, mut failed) = (Vec::new(), 0u64, 0u64);
        for t in tasks {
            let (l, f) = t.await.expect("client task");
            done += l.len() as u64;
            failed += f;
            lat.extend(l);
        }
        Load { rps: done as f64 / duration.as_secs_f64(), latency: Sample::new(lat), failed }
    })
}

async fn client(t: Target, warmup: Instant, end: Instant) -> (Vec<Duration>, u64) {
    let (mut lat, mut failed) = (Vec::new(), 0u64);
    let mut sender = connect(t.addr).await;
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let request = hyper::Request::post(t.path.as_str())
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
