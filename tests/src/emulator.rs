//! The machinery every CRM emulator shares: a loopback HTTP server on port 0 that records
//! every request and can be told to misbehave (error status, garbage, hang, flood).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the emulator received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The form body's pairs, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The value of a form field that must appear at most once (a duplicated or leaked
    /// field fails the test instead of passing on its first copy).
    pub fn field(&self, name: &str) -> Option<String> {
        let mut values: Vec<String> = self.form().into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
        assert!(values.len() <= 1, "form field {name} appears {} times: {:?}", values.len(), self.form());
        values.pop()
    }

    /// A form field that holds JSON text, parsed.
    pub fn json_field(&self, name: &str) -> Value {
        let text = self.field(name).unwrap_or_else(|| panic!("form has no field {name}: {:?}", self.form()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("field {name} is not JSON ({e}): {text}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// How to misbehave on a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status and body.
    Status(u16, String),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Never answer.
    Hang,
    /// Answer 200 with this many bytes of JSON-looking filler (with a Content-Length).
    Flood(usize),
    /// The same, streamed in 16 KiB chunks without a Content-Length.
    FloodChunked(usize),
    /// Answer normally after a delay.
    Delay(Duration),
    /// Answer this status, headers and body.
    StatusHeaders(u16, Vec<(String, String)>, String),
    /// The inner fault for the next N requests, then normal answers again.
    Times(u32, Box<Fault>),
}

/// What an emulator's normal behaviour returns: a status and a JSON body (a JSON string is
/// sent as plain text).
pub type Reply = (u16, Value);

/// Shared state of one emulator: its recordings and faults, plus the CRM's own state `S`.
pub struct Emulator<S> {
    pub url: String,
    pub port: u16,
    inner: Arc<Mutex<Inner<S>>>,
    _server: tokio::task::JoinHandle<()>,
}

struct Inner<S> {
    state: S,
    requests: Vec<Recorded>,
    faults: HashMap<String, Fault>,
}

impl<S: Send + 'static> Emulator<S> {
    /// Serves on 127.0.0.1:0; `handle` is the CRM's normal behaviour.
    pub async fn start(state: S, handle: fn(&mut S, &Recorded) -> Reply) -> Self {
        let inner = Arc::new(Mutex::new(Inner { state, requests: Vec::new(), faults: HashMap::new() }));
        let shared = inner.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { respond(shared, handle, method, uri, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind emulator");
        let port = listener.local_addr().expect("emulator address").port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("emulator server");
        });
        Emulator { url: format!("http://127.0.0.1:{port}"), port, inner, _server: server }
    }

    /// Misbehave on `path` from now on.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.inner.lock().unwrap().faults.insert(path.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.inner.lock().unwrap().faults.clear();
    }

    /// Drops what was recorded so far (a long run keeps its memory flat).
    pub fn forget_requests(&self) {
        self.inner.lock().unwrap().requests.clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests received on `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// The only request received on `path`; panics unless there was exactly one.
    pub fn single(&self, path: &str) -> Recorded {
        let mut r = self.requests_to(path);
        assert_eq!(r.len(), 1, "expected one request to {path}, got {}: {:?}", r.len(), self.requests());
        r.remove(0)
    }

    /// Reads or changes the CRM's state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.inner.lock().unwrap().state)
    }
}

async fn respond<S>(
    shared: Arc<Mutex<Inner<S>>>,
    handle: fn(&mut S, &Recorded) -> Reply,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let fault = {
        let mut inner = shared.lock().unwrap();
        inner.requests.push(rec.clone());
        match inner.faults.get_mut(&rec.path) {
            Some(Fault::Times(0, _)) => None,
            Some(Fault::Times(n, f)) => {
                *n -= 1;
                Some((**f).clone())
            }
            other => other.cloned(),
        }
    };
    match fault {
        Some(Fault::StatusHeaders(status, headers, body)) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (k, v) in headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    axum::http::HeaderValue::from_str(&v).unwrap(),
                );
            }
            return r;
        }
        Some(Fault::Times(..)) => unreachable!("nested Times"),
        Some(Fault::Status(status, body)) => return (StatusCode::from_u16(status).unwrap(), body).into_response(),
        Some(Fault::Garbage) => return (StatusCode::OK, "<html><body>502 Bad Gateway</body></html>").into_response(),
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(Fault::Flood(n)) => {
            let mut body = String::with_capacity(n + 32);
            body.push_str("{\"err\":\"0\",\"filler\":\"");
            body.extend(std::iter::repeat_n('x', n));
            body.push_str("\"}");
            return (StatusCode::OK, Body::from(body)).into_response();
        }
        Some(Fault::FloodChunked(n)) => {
            let chunks = (0..n.div_ceil(16 << 10)).map(move |i| {
                let len = (16usize << 10).min(n - i * (16 << 10));
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; len]))
            });
            return (StatusCode::OK, Body::from_stream(futures::stream::iter(chunks))).into_response();
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let (status, value) = handle(&mut shared.lock().unwrap().state, &rec);
    match value {
        // A string is answered as plain text (Planfix's `OK`), anything else as JSON.
        Value::String(text) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        other => (StatusCode::from_u16(status).unwrap(), axum::Json(other)).into_response(),
    }
}

