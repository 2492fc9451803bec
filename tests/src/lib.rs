//! Test support: CRM emulators on loopback and a harness that runs the real host (the same
//! library the `crm-host` binary runs) on 127.0.0.1:0 with components built by
//! `cargo xtask plugins`.

pub mod emulator;
pub mod leadim;
pub mod planfix;
pub mod plando;
pub mod postgres;
pub mod process;
pub mod soak;

use crm_host::egress::Upstreams;
use crm_host::outbound::connect::{Connector, Dial, Resolve};
use crm_host::setup::HostSettings;
use crm_host::{HostOptions, Limits, OutboundConfig, RetryPolicy};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "crm-{label}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where `cargo xtask plugins` puts components.
pub fn plugins_dir() -> PathBuf {
    match std::env::var_os("CRM_PLUGINS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
    }
}

/// A built component's bytes (adapters, then test-only components under `testing/`); fails
/// with the command to run when it was not built.
pub fn component(name: &str) -> Vec<u8> {
    let file = format!("{name}.wasm");
    let path = [plugins_dir().join(&file), plugins_dir().join("testing").join(&file)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| plugins_dir().join(&file));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("component {} is missing ({e}): run `cargo xtask test` (or `cargo xtask plugins` first)", path.display())
    })
}

/// Appends a custom section: a different, equally valid component, as a rebuild of the
/// same code would be (a new digest, the same behaviour).
pub fn with_custom_section(mut bytes: Vec<u8>, tag: &str) -> Vec<u8> {
    let name = b"build-tag";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0);
    bytes.push(payload.len() as u8);
    bytes.extend(payload);
    bytes
}

/// Reads the line `crm-host serve` prints first (`crm-host listening on http://ADDR`) and
/// returns the line and the URL in it.
pub fn read_listen_url(stdout: std::process::ChildStdout) -> std::io::Result<(String, String)> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let line = line.trim().to_string();
    let url = line.rsplit(' ').next().unwrap_or_default().to_string();
    Ok((line, url))
}

/// Writes `request` (a request head, and a body if any) as is to the server at `url` and reads
/// until the server closes; `None` if it has not within 3 s. For what a client library would
/// not send: any `Host`, a body announced but never sent.
pub async fn raw_http(url: &str, request: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).to_lowercase()),
        Err(_) => None,
    }
}

/// Limits for tests: short timeouts so hanging CRMs fail fast.
pub fn test_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        deadline: Duration::from_secs(5),
        request_timeout: Duration::from_millis(1500),
        max_response_bytes: 256 << 10,
        ..Limits::default()
    }
}

/// How to start a [`TestHost`].
#[derive(Clone)]
pub struct TestHostConfig {
    pub limits: Limits,
    /// `(host, url)` routes; everything else is refused (`--upstream-only`).
    pub routes: Vec<(String, String)>,
    pub admin_token: Option<String>,
    /// Fast by default, so retry tests do not wait.
    pub retry: RetryPolicy,
    pub traces: crm_host::limits::TraceRetention,
    pub event_retention: Duration,
    /// Refuse whatever no route covers (the default). Tests that exercise the connector's
    /// address checks turn it off and install a `connector` that cannot reach the network.
    pub upstream_only: bool,
    pub connector: Option<Connector>,
    /// `--guest-threads` (`None`: the host's default, one per CPU).
    pub guest_threads: Option<usize>,
}

impl Default for TestHostConfig {
    fn default() -> Self {
        TestHostConfig {
            limits: test_limits(),
            routes: Vec::new(),
            admin_token: None,
            retry: RetryPolicy { max_attempts: 3, base: Duration::from_millis(20), max_backoff: Duration::from_millis(200) },
            traces: crm_host::limits::TraceRetention::DEFAULT,
            event_retention: crm_host::limits::DEFAULT_EVENT_RETENTION,
            upstream_only: true,
            connector: None,
            guest_threads: None,
        }
    }
}

impl TestHostConfig {
    pub fn routes(mut self, routes: &[(&str, &str)]) -> Self {
        self.routes = routes.iter().map(|(h, u)| (h.to_string(), u.to_string())).collect();
        self
    }
}

/// The real host, in process, serving HTTP on loopback, with its own data directory.
pub struct TestHost {
    pub url: String,
    client: reqwest::Client,
    /// Sent as `Authorization: Bearer` unless a request says otherwise.
    pub token: Option<String>,
    pub data_dir: Arc<TempDir>,
    /// The host itself, for what the API does not reach (the retention sweep on demand).
    pub host: Arc<crm_host::Host>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestHost {
    /// A host whose outbound requests may only go to the given `(host, url)` routes.
    pub async fn start(routes: &[(&str, &str)]) -> TestHost {
        Self::start_config(TestHostConfig::default().routes(routes)).await
    }

    pub async fn start_with(limits: Limits, routes: &[(&str, &str)]) -> TestHost {
        Self::start_config(TestHostConfig { limits, ..TestHostConfig::default().routes(routes) }).await
    }

    pub async fn start_config(config: TestHostConfig) -> TestHost {
        Self::start_in(config, Arc::new(TempDir::new("host"))).await
    }

    /// A host on an existing data directory (a restart).
    pub async fn start_in(config: TestHostConfig, data_dir: Arc<TempDir>) -> TestHost {
        let mut upstreams = Upstreams::default();
        for (host, url) in &config.routes {
            upstreams.add(&format!("{host}={url}")).expect("valid upstream");
        }
        let outbound = OutboundConfig {
            upstreams,
            upstream_only: config.upstream_only,
            retry: config.retry.clone(),
            connector: config.connector.clone().unwrap_or_else(|| Connector::new(Arc::new(LocalResolver::default()), Arc::new(LoopbackDialer::default()))),
        };
        let settings = HostSettings {
            limits: config.limits.clone(),
            outbound,
            guest_threads: config.guest_threads.unwrap_or_else(crm_host::runtime::default_guest_threads),
            options: HostOptions {
                traces: config.traces.clone(),
                event_retention: config.event_retention,
                admin_token: config.admin_token.clone(),
            },
            ..HostSettings::new(data_dir.path())
        };
        let host = Arc::new(settings.open().await.expect("host"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind host");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = host.clone();
        tokio::spawn(async move {
            crm_host::api::serve(listener, None, served, crm_host::limits::FrontDoor::DEFAULT, async {
                let _ = rx.await;
            })
            .await
            .expect("host server");
        });
        TestHost { url, client: reqwest::Client::new(), token: config.admin_token, data_dir, host, _shutdown: tx }
    }

    /// Sends a request with `token` (or none) instead of the host's admin token.
    pub async fn request_as(&self, token: Option<&str>, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        Self::read(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        Self::read(req).await
    }

    async fn read(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("host answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("host body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("host answered non-JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.url))).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(format!("{}{path}", self.url))).await
    }

    pub async fn put_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(self.client.put(format!("{}{path}", self.url)).body(body)).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(self.client.post(format!("{}{path}", self.url)).body(body)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().into_bytes()).await
    }

    /// Deploys a component built by `cargo xtask plugins`; asserts 201.
    pub async fn deploy(&self, name: &str) -> Value {
        let (status, body) = self.put_raw(&format!("/v1/adapters/{name}"), component(name)).await;
        assert_eq!(status, 201, "deploying {name}: {body}");
        body
    }

    pub async fn put_tenant(&self, tenant: &str, body: Value) -> (u16, Value) {
        self.put_raw(&format!("/v1/tenants/{tenant}"), body.to_string().into_bytes()).await
    }

    /// Calls and returns the answer with its `x-call-id`.
    pub async fn call_with_id(&self, tenant: &str, func_id: &str, body: Value) -> (u16, Value, String) {
        let mut req = self.client.post(format!("{}/v1/tenants/{tenant}/crm/{func_id}", self.url)).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("host answers");
        let call_id = resp.headers().get("x-call-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null), call_id)
    }

    pub async fn call(&self, tenant: &str, func_id: &str, body: Value) -> (u16, Value) {
        self.post_raw(&format!("/v1/tenants/{tenant}/crm/{func_id}"), body.to_string().into_bytes()).await
    }

    /// Calls and asserts `outcome: complete`; returns crmData.
    pub async fn complete(&self, tenant: &str, func_id: &str, body: Value) -> Value {
        let (status, out) = self.call(tenant, func_id, body).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["outcome"], "complete", "{func_id}: {out}");
        out["crmData"].clone()
    }

    /// Calls and asserts `outcome: failure`; returns the error.
    pub async fn failure(&self, tenant: &str, func_id: &str, body: Value) -> Value {
        let (status, out) = self.call(tenant, func_id, body).await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["outcome"], "failure", "{func_id}: {out}");
        out["error"].clone()
    }
}

/// A resolver that never asks DNS: `localhost`, and the names a test gives it.
#[derive(Default, Clone)]
pub struct LocalResolver {
    pub names: Vec<(String, std::net::IpAddr)>,
}

impl Resolve for LocalResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> futures::future::BoxFuture<'a, std::io::Result<Vec<std::net::SocketAddr>>> {
        let mut found: Vec<_> =
            self.names.iter().filter(|(n, _)| n.eq_ignore_ascii_case(host)).map(|(_, ip)| std::net::SocketAddr::new(*ip, port)).collect();
        if found.is_empty() && host.eq_ignore_ascii_case("localhost") {
            found = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
        }
        Box::pin(async move {
            if found.is_empty() {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, "tests resolve no names but their own"))
            } else {
                Ok(found)
            }
        })
    }
}

/// Dials loopback addresses only, and records every address it was asked for: a test fails
/// if anything else was ever asked (nothing may leave this machine).
#[derive(Default, Clone)]
pub struct LoopbackDialer {
    pub asked: Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
}

impl LoopbackDialer {
    pub fn asked(&self) -> Vec<std::net::SocketAddr> {
        self.asked.lock().unwrap().clone()
    }
}

impl Dial for LoopbackDialer {
    fn dial(&self, addr: std::net::SocketAddr) -> futures::future::BoxFuture<'_, std::io::Result<tokio::net::TcpStream>> {
        self.asked.lock().unwrap().push(addr);
        Box::pin(async move {
            if !addr.ip().is_loopback() {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("tests never dial {addr}")));
            }
            tokio::net::TcpStream::connect(addr).await
        })
    }
}
