//! A native [`Transport`] (ureq, blocking, no TLS), so adapter code runs outside wasm for
//! tests and native-vs-wasm benchmarks. Like the host, it routes production hosts to local
//! emulators by explicit override, and it refuses every host that has no route: adapters
//! always build production URLs, and nothing here may reach them by accident.

use crate::{CrmError, Request, Response, Transport};
use std::collections::HashMap;
use std::time::Duration;

/// A [`Transport`] that sends over real HTTP (no TLS) to the hosts it routes.
pub struct NativeTransport {
    agent: ureq::Agent,
    routes: HashMap<String, url::Url>,
}

impl NativeTransport {
    /// `timeout` bounds each request as a whole.
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .new_agent();
        NativeTransport { agent, routes: HashMap::new() }
    }

    /// Sends requests for `host` to `base` (e.g. `plando.co.il` -> `http://127.0.0.1:9001`).
    pub fn route(mut self, host: &str, base: &str) -> Self {
        let base = url::Url::parse(base).expect("route base is an absolute URL");
        self.routes.insert(host.to_ascii_lowercase(), base);
        self
    }
}

impl Transport for NativeTransport {
    fn send(&self, req: Request) -> Result<Response, CrmError> {
        let target = format!("{} {}", req.method.as_str(), req.url);
        let url = url::Url::parse(&req.url).map_err(|e| CrmError::Internal(format!("bad URL {}: {e}", req.url)))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let base = self
            .routes
            .get(&host)
            .ok_or_else(|| CrmError::EgressDenied(format!("{target}: no route for {host} in this NativeTransport")))?;
        let mut routed = base.clone();
        routed.set_path(&format!("{}{}", base.path().trim_end_matches('/'), url.path()));
        routed.set_query(url.query());

        let mut builder = ureq::http::Request::builder().method(req.method.as_str()).uri(routed.as_str());
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder = builder.header("host", url.authority());
        let request = builder.body(req.body).map_err(|e| CrmError::Internal(format!("{target}: {e}")))?;
        let mut resp = self.agent.run(request).map_err(|e| map_error(&target, e, req.max_response_bytes))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(req.max_response_bytes as u64)
            .read_to_vec()
            .map_err(|e| map_error(&target, e, req.max_response_bytes))?;
        Ok(Response { status, headers, body })
    }
}

fn map_error(target: &str, e: ureq::Error, cap: usize) -> CrmError {
    match e {
        ureq::Error::Timeout(t) => CrmError::Timeout(format!("{target}: timed out ({t})")),
        ureq::Error::BodyExceedsLimit(_) => {
            CrmError::Transport(format!("{target}: response body is larger than {cap} bytes"))
        }
        other => CrmError::Transport(format!("{target}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrouted_hosts_are_refused_without_any_traffic() {
        let t = NativeTransport::new(Duration::from_secs(1)).route("plando.co.il", "http://127.0.0.1:9");
        let e = t.send(Request::get("https://api.example.com/x")).unwrap_err();
        assert_eq!(e.kind(), "egress_denied", "{e}");
    }
}
