//! The front door of the real binary, attacked as a client would: heads and bodies that never
//! finish, idle connections by the thousand, more connections than the cap, bodies past the
//! bytes-in-flight budget, and unauthenticated uploads that try to make the host hold them.

use crate::host_bin;
use crm_tests::process::{Proc, ADMIN};
use crm_tests::{component, TempDir};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn start(data: &Path, extra: &[&str]) -> Proc {
    Proc::start(&host_bin(), data, extra, &[])
}

async fn connect(p: &Proc) -> TcpStream {
    TcpStream::connect(p.url.trim_start_matches("http://")).await.expect("connect")
}

/// Reads until the host closes the connection; `None` if it has not within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).to_lowercase()),
        Err(_) => None,
    }
}

/// A request with the admin's token whose head announces `length` bytes of body.
fn admin_head(method: &str, path: &str, length: usize) -> String {
    format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n")
}

#[tokio::test]
async fn heads_that_never_finish_and_idle_connections_are_closed_by_the_header_timeout() {
    let data = TempDir::new("header-timeout");
    let p = start(data.path(), &["--header-timeout-ms", "1000"]);
    let mut slow = connect(&p).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n").await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await.is_some(), "a head that never ends keeps its connection");

    let mut idle = connect(&p).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut first = [0u8; 16];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first[..12], b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await.is_some(), "an idle keep-alive connection stays open");

    let mut silent = connect(&p).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some(), "a connection that says nothing stays open");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let data = TempDir::new("body-timeout");
    let p = start(data.path(), &["--body-timeout-ms", "1000"]);
    let mut s = connect(&p).await;
    s.write_all(admin_head("PUT", "/v1/tenants/acme", 100).as_bytes()).await.unwrap();
    // A byte at a time, slower than the whole body may take.
    let started = Instant::now();
    let mut answer = None;
    while started.elapsed() < Duration::from_secs(8) {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        if let Some(a) = closed_within(&mut s, Duration::from_millis(300)).await {
            answer = Some(a);
            break;
        }
    }
    let answer = answer.expect("a trickled body is read for ever");
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("\"kind\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_and_closed() {
    let data = TempDir::new("max-connections");
    let p = start(data.path(), &["--max-connections", "8"]);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(&p).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect(&p).await;
    extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let answer = closed_within(&mut extra, Duration::from_secs(5)).await.expect("turned away at once");
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("--max-connections"), "{answer}");
    drop(held);
    // The places come back.
    crm_tests::process::eventually("a place after the held connections closed", Duration::from_secs(5), async || {
        reqwest::get(format!("{}/healthz", p.url)).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn thousands_of_idle_and_trickling_connections_leave_health_and_calls_answering() {
    let data = TempDir::new("many-connections");
    let p = start(data.path(), &[]);
    assert_eq!(p.req("PUT", "/v1/adapters/chaos", Some(component("chaos"))).await.0, 201);
    let tenant = json!({"adapter": "chaos", "crmConfig": {"hookUrl": "http://127.0.0.1:9"}});
    assert_eq!(p.req("PUT", "/v1/tenants/t", Some(tenant.to_string().into_bytes())).await.0, 200);

    let mut attackers = Vec::new();
    for i in 0..2500 {
        let mut s = connect(&p).await;
        if i % 5 == 0 {
            // Trickling: a head begun and never finished, or a body begun and never sent.
            let start = if i % 10 == 0 { "POST /v1/tenants/t/crm/counter HTTP/1.1\r\nhost: local".to_string() } else { admin_head("PUT", "/v1/tenants/x", 1 << 20) };
            s.write_all(start.as_bytes()).await.unwrap();
        }
        attackers.push(s);
    }
    let started = Instant::now();
    let health = reqwest::get(format!("{}/healthz", p.url)).await.expect("health answers");
    assert_eq!(health.status(), 200);
    let chat = json!({"chat": {"id": "c", "phone": "1"}});
    let (s, out) = p.req("POST", "/v1/tenants/t/crm/counter", Some(chat.to_string().into_bytes())).await;
    assert_eq!((s, out["crmData"]["count"].clone()), (200, json!(1)), "{out}");
    // Coarse: both answered at once, not after a header timeout.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(attackers);
}

#[tokio::test]
async fn body_bytes_in_flight_are_bounded_and_webhooks_have_a_share_of_their_own() {
    let data = TempDir::new("inflight");
    // 875,000 bytes for authenticated requests, 125,000 for webhooks.
    let p = start(data.path(), &["--max-inflight-body-bytes", "1000000"]);
    // An upload that has sent most of its 800,000 bytes, and holds them.
    let held_body = format!("{{\"{}\":1}}", "x".repeat(800_000 - 6));
    let mut holder = connect(&p).await;
    holder.write_all(admin_head("PUT", "/v1/tenants/a", held_body.len()).as_bytes()).await.unwrap();
    holder.write_all(&held_body.as_bytes()[..790_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut refused = connect(&p).await;
    refused.write_all(admin_head("PUT", "/v1/tenants/b", 100_000).as_bytes()).await.unwrap();
    let answer = closed_within(&mut refused, Duration::from_secs(5)).await.expect("refused before its body is read");
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("\"kind\":\"overloaded\""), "{answer}");

    // A body without Content-Length takes its share as it arrives.
    let mut chunked = connect(&p).await;
    let head = format!("PUT /v1/tenants/c HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN}\r\ntransfer-encoding: chunked\r\n\r\n");
    chunked.write_all(head.as_bytes()).await.unwrap();
    chunked.write_all(format!("{:x}\r\n{}\r\n", 100_000, " ".repeat(100_000)).as_bytes()).await.unwrap();
    let answer = closed_within(&mut chunked, Duration::from_secs(5)).await.expect("a chunked body past the budget is refused");
    assert!(answer.starts_with("http/1.1 503"), "{answer}");

    // Webhooks (anyone may post one) are read from their own share, which the admin's
    // upload does not touch; the tenant is unknown, so the body is read and then refused.
    let webhook = format!("POST /v1/tenants/nobody/webhook HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n{}", " ".repeat(100_000));
    let answer = crm_tests::raw_http(&p.url, &webhook).await.expect("webhook answered");
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    let too_big = "POST /v1/tenants/nobody/webhook HTTP/1.1\r\nhost: localhost\r\ncontent-length: 200000\r\n\r\n";
    let answer = crm_tests::raw_http(&p.url, too_big).await.expect("webhook answered");
    assert!(answer.starts_with("http/1.1 413"), "{answer}");

    // Finishing the held body gives its share back.
    holder.write_all(&held_body.as_bytes()[790_000..]).await.unwrap();
    let mut head = [0u8; 12];
    holder.read_exact(&mut head).await.unwrap();
    let (s, out) = p.req("PUT", "/v1/tenants/b", Some(vec![b' '; 100_000])).await;
    assert_eq!(s, 400, "read, and refused as malformed JSON rather than as overload: {out}");
}

/// Resident memory of a process, in KiB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[tokio::test]
async fn unauthenticated_uploads_do_not_grow_the_hosts_memory() {
    let data = TempDir::new("unauth-uploads");
    let p = start(data.path(), &[]);
    let before = rss_kb(p.pid());
    let chunk = vec![0u8; 1 << 20];
    let mut clients = Vec::new();
    for _ in 0..32 {
        let mut s = connect(&p).await;
        s.write_all(format!("PUT /v1/adapters/x HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n", 60 << 20).as_bytes()).await.unwrap();
        // As much as the host will take (it reads none of it), for at most a moment.
        for _ in 0..8 {
            if tokio::time::timeout(Duration::from_millis(50), s.write_all(&chunk)).await.is_err() {
                break;
            }
        }
        clients.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss_kb(p.pid()).saturating_sub(before);
    // Coarse: 32 uploads of 60 MiB would be ~2 GB read; a few MB is allocator noise.
    assert!(grown < 64 << 10, "RSS grew {grown} KiB under 32 unauthenticated 60 MiB uploads");
    drop(clients);
}

/// `--metrics-listen`: `/metrics` on an address of its own, and no longer on the API's.
#[tokio::test]
async fn metrics_can_be_served_apart_from_the_api() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = TempDir::new("metrics-listen");
    let p = start(data.path(), &["--metrics-listen", &format!("127.0.0.1:{port}")]);
    let apart = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
    assert_eq!(apart.status(), 200);
    assert!(apart.text().await.unwrap().contains("crm_instances_in_flight"));
    assert_eq!(reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap().status(), 404, "only metrics there");
    assert_eq!(reqwest::get(format!("{}/metrics", p.url)).await.unwrap().status(), 404, "and not on the API");
    assert_eq!(reqwest::get(format!("{}/healthz", p.url)).await.unwrap().status(), 200);
}
