//! Fuzzing the way out: a loopback server answers every request with an arbitrary response
//! (status lines valid and not, headers of any bytes and size, `Retry-After` of any size or
//! year, `Content-Length` that lies, broken chunking, bodies of any bytes, connections that
//! close early or hang), and real adapters call it through the real outbound path (the SDK's
//! Plando adapter, and raw `fetch`). Whatever the answer, the call must end as `complete` or
//! with a documented failure kind the CRM can cause, in time, and the host must go on
//! serving. 64 cases in the suite; `cargo xtask fuzz [SECONDS]` runs it for longer.

use crm_tests::TestHost;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One arbitrary answer, and how the connection ends after it.
#[derive(Debug, Clone)]
struct Answer {
    status_line: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    framing: Framing,
    body: Vec<u8>,
    end: End,
}

#[derive(Debug, Clone)]
enum Framing {
    /// `Content-Length` off by this much from the body's length.
    Length(i64),
    /// Chunked, the last chunk left out or a size line broken.
    Chunked { broken: bool },
    /// Neither: the body ends where the connection does.
    UntilClose,
}

#[derive(Debug, Clone)]
enum End {
    Close,
    /// Waits this long (ms) before closing.
    Hang(u64),
}

impl Answer {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.status_line.clone();
        out.extend_from_slice(b"\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        match &self.framing {
            Framing::Length(delta) => {
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", self.body.len() as i64 + delta).as_bytes());
                out.extend_from_slice(&self.body);
            }
            Framing::Chunked { broken } => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                for chunk in self.body.chunks(7) {
                    let size = if *broken { format!("{:x}zz", chunk.len() + 3) } else { format!("{:x}", chunk.len()) };
                    out.extend_from_slice(size.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                if !broken {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
            }
            Framing::UntilClose => {
                out.extend_from_slice(b"connection: close\r\n\r\n");
                out.extend_from_slice(&self.body);
            }
        }
        out
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    let status_line = prop_oneof![
        4 => (prop_oneof![Just(200u16), Just(201), Just(204), Just(301), Just(400), Just(401), Just(404), Just(429), Just(500), Just(502), Just(503), Just(504), 0u16..1000])
            .prop_map(|code| format!("HTTP/1.1 {code} X").into_bytes()),
        1 => Just(b"HTTP/1.0 200 OK".to_vec()),
        1 => Just(b"ICY 200 OK".to_vec()),
        1 => Just(b"HTTP/1.1 99999999999999999999 Huge".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    let retry_after = prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("10000000000000000000".to_string()),
        Just("-5".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_string()),
        Just("soon".to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    let header = prop_oneof![
        retry_after.prop_map(|v| (b"retry-after".to_vec(), v.into_bytes())),
        Just((b"content-type".to_vec(), b"application/json".to_vec())),
        Just((b"content-type".to_vec(), b"text/html; charset=\xff".to_vec())),
        Just((b"content-length".to_vec(), b"-1".to_vec())),
        Just((b"content-length".to_vec(), b"99999999999999999999".to_vec())),
        Just((b"transfer-encoding".to_vec(), b"gzip".to_vec())),
        Just((b"location".to_vec(), b"http://127.0.0.1:1/".to_vec())),
        (1usize..70_000).prop_map(|n| (b"x-long".to_vec(), vec![b'a'; n])),
        (prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(any::<u8>(), 0..40)),
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        Just(br#"{"result":{"contacts":[{"contact_id":"1","first_name":"Dana"}]}}"#.to_vec()),
        Just(br#"{"error":"Invalid access key"}"#.to_vec()),
        Just(br#"{"result":{"contacts":[]}}"#.to_vec()),
        Just(b"[1,2".to_vec()),
        prop::collection::vec(any::<u8>(), 0..2000),
        (1usize..600_000).prop_map(|n| vec![b'{'; n]),
    ];
    let framing = prop_oneof![
        4 => prop_oneof![Just(0i64), -3i64..4, Just(1_000_000)].prop_map(Framing::Length),
        1 => any::<bool>().prop_map(|broken| Framing::Chunked { broken }),
        1 => Just(Framing::UntilClose),
    ];
    let end = prop_oneof![3 => Just(End::Close), 1 => (0u64..300).prop_map(End::Hang)];
    (status_line, prop::collection::vec(header, 0..5), framing, body, end)
        .prop_map(|(status_line, headers, framing, body, end)| Answer { status_line, headers, framing, body, end })
}

/// A loopback server that answers every request with the current case's answer.
async fn server(current: Arc<Mutex<Answer>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = current.lock().unwrap().clone();
            tokio::spawn(async move {
                // The request's head (and a form body, announced by its length).
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
                let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok()).unwrap_or(0);
                while seen.len() < head_end + length {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&answer.bytes()).await;
                if let End::Hang(ms) = answer.end {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

/// The kinds a CRM's answer may lead to. (`internal` is the host failing, `trap` the adapter:
/// neither is something a CRM may cause.)
const CRM_CAUSED: &[&str] = &[
    "not_found",
    "ambiguous",
    "unauthorized",
    "rate_limited",
    "upstream",
    "timeout",
    "transport",
    "response_limit_exceeded",
    "invalid_output",
    "deadline_exceeded",
    "outbound_limit_exceeded",
];

#[test]
fn any_crm_answer_ends_the_call_in_a_documented_kind() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let current = Arc::new(Mutex::new(Answer {
        status_line: b"HTTP/1.1 200 OK".to_vec(),
        headers: Vec::new(),
        framing: Framing::Length(0),
        body: Vec::new(),
        end: End::Close,
    }));
    let (host, crm_url) = rt.block_on(async {
        let url = server(current.clone()).await;
        let limits = crm_host::Limits {
            deadline: Duration::from_secs(3),
            request_timeout: Duration::from_millis(500),
            max_response_bytes: 512 << 10,
            ..crm_tests::test_limits()
        };
        let host = TestHost::start_with(limits, &[("plando.co.il", &url), ("api.chaos.test", &url)]).await;
        host.deploy("plando").await;
        host.deploy("chaos").await;
        host.put_tenant("p", json!({"adapter": "plando", "crmConfig": {"token": "k", "chat": "1"}})).await;
        host.put_tenant("c", json!({"adapter": "chaos", "crmConfig": {}})).await;
        (host, url)
    });
    let secs: u64 = std::env::var("CRM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let started = Instant::now();
    let mut cases = 0;
    // How the cases ended, to show what the run reached.
    let seen: Mutex<std::collections::BTreeMap<String, u32>> = Mutex::default();
    loop {
        let mut runner = TestRunner::new(Config { cases: 64, failure_persistence: None, ..Config::default() });
        let outcome = runner.run(&(answer(), any::<bool>()), |(a, plando)| {
            *current.lock().unwrap() = a.clone();
            let (tenant, op, body) = match plando {
                true => ("p", "getCustomerDetails", json!({"chat": {"id": "c", "phone": "972501234567"}})),
                false => ("c", "fetch", json!({"chat": {"id": "c", "phone": "1"}, "params": {"url": "https://api.chaos.test/x"}})),
            };
            let took = Instant::now();
            let (status, out): (u16, Value) = rt.block_on(host.call(tenant, op, body));
            prop_assert_eq!(status, 200, "the host answered {}: {}", status, out);
            let ended = out["error"]["kind"].as_str().or(out["outcome"].as_str()).unwrap_or("?");
            *seen.lock().unwrap().entry(format!("{op}: {ended}")).or_default() += 1;
            match out["outcome"].as_str() {
                Some("complete") => {}
                Some("failure") => {
                    let kind = out["error"]["kind"].as_str().unwrap_or_default();
                    prop_assert!(CRM_CAUSED.contains(&kind), "{} {} ended {}: {}", tenant, op, kind, out);
                }
                _ => prop_assert!(false, "not a call answer: {}", out),
            }
            prop_assert!(took.elapsed() < Duration::from_secs(5), "the call took {:?}", took.elapsed());
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("outbound fuzz failed after {cases} cases (CRM at {crm_url}): {e}");
        }
        cases += 64;
        if started.elapsed().as_secs() >= secs {
            break;
        }
    }
    // And the host still serves.
    *current.lock().unwrap() = Answer {
        status_line: b"HTTP/1.1 200 OK".to_vec(),
        headers: Vec::new(),
        framing: Framing::Length(0),
        body: b"fine".to_vec(),
        end: End::Close,
    };
    let out = rt.block_on(host.complete("c", "fetch", json!({"chat": {"id": "c"}, "params": {"url": "https://api.chaos.test/x"}})));
    assert_eq!(out["body"], "fine");
    if secs > 0 {
        eprintln!("fuzz target outbound: {cases} cases in {:.0?}, no failure; {:?}", started.elapsed(), seen.lock().unwrap());
    }
}
