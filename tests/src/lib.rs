//! Test support: CRM emulators on loopback and a harness that runs the real host (the same
//! library the `crm-host` binary runs) on 127.0.0.1:0 with components built by
//! `cargo xtask plugins`.

pub mod emulator;
pub mod plando;

use crm_host::egress::Upstreams;
use crm_host::registry::Registry;
use crm_host::{Host, Limits, OutboundConfig, Runtime};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// Limits for tests: short timeouts so hanging CRMs fail fast.
pub fn test_limits() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        deadline: Duration::from_secs(5),
        request_timeout: Duration::from_millis(1500),
        max_response_bytes: 256 << 10,
    }
}

/// The real host, in process, serving HTTP on loopback.
pub struct TestHost {
    pub url: String,
    client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TestHost {
    /// A host whose outbound requests may only go to the given `(host, url)` routes.
    pub async fn start(routes: &[(&str, &str)]) -> TestHost {
        Self::start_with(test_limits(), routes).await
    }

    pub async fn start_with(limits: Limits, routes: &[(&str, &str)]) -> TestHost {
        let mut upstreams = Upstreams::default();
        for (host, url) in routes {
            upstreams.add(&format!("{host}={url}")).expect("valid upstream");
        }
        let runtime = Runtime::new(limits, OutboundConfig { upstreams, upstream_only: true }).expect("runtime");
        let host = Arc::new(Host::new(runtime, Registry::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind host");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            crm_host::api::serve(listener, host, async {
                let _ = rx.await;
            })
            .await
            .expect("host server");
        });
        TestHost { url, client: reqwest::Client::new(), _shutdown: tx }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
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

    /// Deploys a component built by `cargo xtask plugins`; asserts 201.
    pub async fn deploy(&self, name: &str) -> Value {
        let (status, body) = self.put_raw(&format!("/v1/adapters/{name}"), component(name)).await;
        assert_eq!(status, 201, "deploying {name}: {body}");
        body
    }

    pub async fn put_tenant(&self, tenant: &str, body: Value) -> (u16, Value) {
        self.put_raw(&format!("/v1/tenants/{tenant}"), body.to_string().into_bytes()).await
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
