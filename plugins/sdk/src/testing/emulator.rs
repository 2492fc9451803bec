//! A CRM emulator on loopback: a real HTTP/1.1 server on `127.0.0.1`, answering with a
//! closure, recording every request. Small on purpose (blocking, a thread per connection):
//! it serves one adapter's tests, not load.

use crate::native::NativeTransport;
use crate::{Method, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request head larger than this is refused: an adapter's requests are small, and a test
/// should not hang on a runaway one.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a connection may sit idle between requests before the emulator closes it.
const IDLE: Duration = Duration::from_secs(30);

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    requests: Mutex<Vec<Request>>,
    panics: Mutex<Vec<String>>,
    stopping: AtomicBool,
}

/// A CRM on `127.0.0.1`, for an adapter's end-to-end tests:
///
/// ```no_run
/// use crm_sdk::testing::{reply, Emulator};
/// use crm_sdk::{json, Request};
///
/// let crm = Emulator::start(|r: &Request| match r.path() {
///     "/v1/contacts" => reply::json(200, json!({"contacts": [{"id": 7}]})),
///     _ => reply::json(404, json!({"message": "no such route"})),
/// });
/// let http = crm.transport(&["api.acme.example"]);
/// // crm_sdk::run(&Acme, "getCustomerDetails", &call, &http) ...
/// assert_eq!(crm.requests_to("/v1/contacts").len(), 1);
/// ```
///
/// The handler sees each request as a [`Request`] whose URL is `http://` + the `Host` the
/// adapter addressed + the path and query it sent. A handler that panics answers 500 and
/// fails the test when the emulator is dropped.
pub struct Emulator {
    url: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Listens on a free loopback port and answers every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Emulator {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the emulator");
        let url = format!("http://{}", listener.local_addr().expect("the emulator's address"));
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            requests: Mutex::new(Vec::new()),
            panics: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Emulator { url, shared, accept: Some(accept) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A transport that sends requests for each of `hosts` (the CRM's production hosts, as
    /// the adapter writes them) here, and refuses every other host.
    pub fn transport(&self, hosts: &[&str]) -> NativeTransport {
        hosts.iter().fold(NativeTransport::new(Duration::from_secs(10)), |t, host| t.route(host, &self.url))
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The requests to `path` (the URL's path, without the query).
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path() == path).collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let panics = std::mem::take(&mut *self.shared.panics.lock().unwrap_or_else(|e| e.into_inner()));
        if !panics.is_empty() && !std::thread::panicking() {
            panic!("the emulator's handler panicked: {}", panics.join("; "));
        }
    }
}

/// Answers requests on one connection until the client closes it, goes idle or errs.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut input = BufReader::new(stream);
    while !shared.stopping.load(Ordering::SeqCst) {
        let (response, keep_alive) = match read_request(&mut input) {
            Ok(None) => return,
            Ok(Some((request, keep_alive))) => {
                shared.requests.lock().unwrap_or_else(|e| e.into_inner()).push(request.clone());
                match catch_unwind(AssertUnwindSafe(|| (shared.handler)(&request))) {
                    Ok(response) => (response, keep_alive),
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic".into());
                        let message = format!("{} {}: {what}", request.method.as_str(), request.url);
                        shared.panics.lock().unwrap_or_else(|e| e.into_inner()).push(message.clone());
                        (reply::text(500, &format!("emulator handler panicked: {message}")), false)
                    }
                }
            }
            Err(refusal) => (refusal, false),
        };
        if write_response(&mut out, &response, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

/// One request, or `None` at a clean end of the connection. A request the emulator cannot
/// read is answered (`Err`) with what was wrong, and the connection closed.
fn read_request(input: &mut BufReader<TcpStream>) -> Result<Option<(Request, bool)>, Response> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = input
            .by_ref()
            .take((MAX_HEAD_BYTES + 1 - head.len()) as u64)
            .read_until(b'\n', &mut head)
            .map_err(|_| reply::text(400, "unreadable request"))?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(reply::text(400, "the connection closed inside a request head")) };
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err(reply::text(431, "request head over 64 KiB"));
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| reply::text(400, "request head is not UTF-8"))?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => return Err(reply::text(405, &format!("the emulator does not serve {other}"))),
    };
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let host = header("host").unwrap_or("localhost").to_string();
    let keep_alive = !header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        read_chunked(input)?
    } else {
        let length = match header("content-length") {
            None => 0,
            Some(n) => n.parse::<usize>().map_err(|_| reply::text(400, "bad content-length"))?,
        };
        let mut body = vec![0; length];
        input.read_exact(&mut body).map_err(|_| reply::text(400, "the body is shorter than its content-length"))?;
        body
    };
    let mut request = Request::new(method, format!("http://{host}{target}"));
    request.headers = headers;
    request.body = body;
    Ok(Some((request, keep_alive)))
}

fn read_chunked(input: &mut BufReader<TcpStream>) -> Result<Vec<u8>, Response> {
    let bad = || reply::text(400, "bad chunked body");
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        input.read_line(&mut size).map_err(|_| bad())?;
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or_default(), 16).map_err(|_| bad())?;
        let mut chunk = vec![0; size + 2];
        input.read_exact(&mut chunk).map_err(|_| bad())?;
        if size == 0 {
            // The last chunk's CRLF was read with it; trailers are not used by clients here.
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn write_response(out: &mut TcpStream, r: &Response, keep_alive: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        if !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n", r.body.len()));
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&r.body)?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Answers for an [`Emulator`]'s handler (or a [`Recorder`](super::Recorder)'s `respond`).
pub mod reply {
    use crate::Response;

    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response { status, headers: vec![("content-type".into(), "application/json".into())], body: body.to_string().into_bytes() }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Response {
        Response { status, headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())], body: body.as_bytes().to_vec() }
    }

    /// An answer with no body (a 204, a 202).
    pub fn empty(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{json, CrmError, Transport};

    #[test]
    fn an_adapters_requests_reach_the_emulator_and_are_recorded() {
        let crm = Emulator::start(|r: &Request| match (r.method, r.path()) {
            (Method::Get, "/v1/contacts") => reply::json(200, json!({"found": r.query_pairs()})),
            (Method::Post, "/v1/deals") => {
                let body: serde_json::Value = r.json_body().unwrap();
                reply::json(201, json!({"id": "d-1", "echo": body}))
            }
            (Method::Delete, _) => reply::empty(204),
            _ => reply::json(404, json!({"message": "no such route"})),
        });
        let http = crm.transport(&["api.acme.example"]);
        let found = Request::get("https://api.acme.example/v1/contacts").query(&[("phone", "+972 50")]).send(&http).unwrap();
        assert_eq!(found.json::<serde_json::Value>().unwrap(), json!({"found": [["phone", "+972 50"]]}));
        let created = Request::post("https://api.acme.example/v1/deals").bearer("t").json(&json!({"title": "ü"})).send(&http).unwrap();
        assert_eq!((created.status, created.json::<serde_json::Value>().unwrap()["echo"].clone()), (201, json!({"title": "ü"})));
        let gone = Request::delete("https://api.acme.example/v1/deals/d-1").send(&http).unwrap();
        assert_eq!((gone.status, gone.json_or_empty::<serde_json::Value>().unwrap()), (204, serde_json::Value::Null));

        let sent = crm.requests();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].url, "http://api.acme.example/v1/contacts?phone=%2B972+50", "the host the adapter addressed");
        assert_eq!(crm.requests_to("/v1/deals")[0].header_value("Authorization"), Some("Bearer t"));
        let e = Request::get("https://elsewhere.example/").send(&http).unwrap_err();
        assert!(matches!(e, CrmError::EgressDenied(_)), "only the routed hosts: {e:?}");
    }

    #[test]
    fn a_panicking_handler_answers_500_and_fails_the_test_at_drop() {
        let crm = Emulator::start(|_: &Request| panic!("unexpected request"));
        let answer = crm.transport(&["api.acme.example"]).send(Request::get("https://api.acme.example/x")).unwrap();
        assert_eq!(answer.status, 500);
        let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| drop(crm)));
        let message = dropped.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("GET http://api.acme.example/x: unexpected request"), "{message}");
    }
}
