//! The only way out of the sandbox: every `wasi:http` request an adapter makes comes here,
//! shaped like Spin's outbound-http factor: [`CallOutbound::send`] is the thin
//! `send_request` hook that prepares and checks a request (the tenant's egress policy, the
//! call's request budget, `--upstream` routing or the `--upstream-only` refusal, capped
//! timeouts); [`send`] makes the attempts (retries, the response cap, trace and metrics);
//! [`connect`] resolves once, checks the address it will dial and dials exactly that (or
//! reuses a keep-alive connection to exactly that address, from `pool.rs`). A replayed
//! call passes the same checks, and its recording answers instead of the network.

pub mod connect;
mod pool;
mod send;

use crate::egress::{EgressPolicy, Upstreams};
use crate::limits::{CountedBuffer, Overflow, Within, MAX_OUTBOUND_REQUEST_BODY};
use crate::runtime::CallScope;
use connect::Connector;
use http_body_util::BodyExt;
pub use send::RetryPolicy;
use send::{send_with_retries, Caps, Timeouts};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{RequestOptions, WasiBody};

/// The header through which the SDK says whether a request is safe to retry (`1` or `0`;
/// `Request::idempotent`, `Request::not_idempotent`). The host removes it: it never reaches
/// the CRM.
pub const IDEMPOTENT_HEADER: &str = "x-crm-idempotent";

/// Where outbound requests may go, host-wide.
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub upstreams: Upstreams,
    /// Refuse every request that no `--upstream` routes (no DNS, nothing leaves the machine).
    pub upstream_only: bool,
    pub retry: RetryPolicy,
    pub connector: Connector,
}

/// One call's outbound side: its policy, caps and trace.
pub(crate) struct CallOutbound {
    pub policy: EgressPolicy,
    pub config: Arc<OutboundConfig>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    /// Outbound requests (attempts) the call may make.
    pub max_requests: u32,
    /// Bytes of outbound bodies the call may make the host hold at once.
    pub max_held_bytes: u64,
    pub scope: Arc<CallScope>,
}

/// A request that passed every check, ready to be sent (perhaps several times).
pub(crate) struct Prepared {
    method: http::Method,
    /// As the adapter wrote it, for the trace and logs.
    url: String,
    /// Where it really goes.
    uri: http::Uri,
    routed: bool,
    /// The CRM's hostname as the adapter named it (for logs).
    hostname: String,
    /// The origin as metrics name it ([`EgressPolicy::metric_label`]).
    origin_label: String,
    use_tls: bool,
    headers: http::HeaderMap,
    idempotent: bool,
}

/// What the hook hands back to wasmtime-wasi-http: the response (read whole here, so the
/// connection is already done with it) and its I/O future (nothing left to drive).
pub(crate) type Exchanged = wasmtime_wasi_http::Result<(http::Response<WasiBody>, Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>)>;

impl CallOutbound {
    /// Checks the request now (on the guest's thread, holding its store) and returns the
    /// exchange as a future, which wasmtime-wasi-http runs as a task on the same runtime.
    pub fn send(&self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Box<dyn Future<Output = Exchanged> + Send> {
        match self.prepare(request, options) {
            Ok(exchange) => Box::new(exchange),
            Err(code) => Box::new(std::future::ready(Err(code.into()))),
        }
    }

    fn prepare(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<impl Future<Output = Exchanged> + Send + 'static, ErrorCode> {
        let scope = self.scope.clone();
        let uri = request.uri().clone();
        let url = scope.redactor.text(&uri.to_string());
        let target = format!("{} {url}", request.method());
        let use_tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let scheme = if use_tls { "https" } else { "http" };
        let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()) else {
            return Err(ErrorCode::HttpRequestUriInvalid);
        };
        let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
        let deny = |why: String| {
            tracing::warn!(call_id = %scope.call_id, request = %target, "outbound request denied: {why}");
            scope.deny(format!("{target}: {why}"));
            ErrorCode::HttpRequestDenied
        };
        self.policy.check(scheme, &host, port).map_err(deny)?;
        if !scope.budget.take_request(self.max_requests) {
            return Err(deny(format!("the call's {} outbound requests are spent", self.max_requests)));
        }
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let (uri, routed, use_tls) = match self.config.upstreams.route(&host) {
            // A replay sends nothing: its recording answers (`send.rs`).
            _ if scope.replay.is_some() => (uri, false, use_tls),
            Some(base) => {
                let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let prefix = base.path().trim_end_matches('/');
                let new_uri = format!(
                    "{}://{}{}{prefix}{path}",
                    base.scheme(),
                    base.host_str().unwrap_or_default(),
                    base.port().map(|p| format!(":{p}")).unwrap_or_default()
                );
                (new_uri.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?, true, base.scheme() == "https")
            }
            None if self.config.upstream_only => {
                return Err(deny(format!("no --upstream route for {host} and the host runs with --upstream-only")));
            }
            // The connector checks the address it dials (public only) for every attempt.
            None => (uri, false, use_tls),
        };
        let headers = request.headers_mut();
        let marked = headers.remove(IDEMPOTENT_HEADER).map(|v| v.as_bytes() == b"1");
        // The guest may not set Host; the CRM (or its emulator) still needs to see it.
        if let Ok(v) = http::HeaderValue::from_str(&authority) {
            headers.insert(http::header::HOST, v);
        }
        let method = request.method().clone();
        // The adapter's word (`1`/`0`, through the SDK) wins; otherwise safe methods only.
        let idempotent =
            marked.unwrap_or(matches!(method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS));
        // The guest's timeouts, if it set any, within the host's cap.
        let cap = self.request_timeout;
        let options = options.unwrap_or_default();
        let within = |t: Option<Duration>| t.map_or(cap, |t| t.min(cap));
        let timeouts = Timeouts {
            connect: within(options.connect_timeout),
            first_byte: within(options.first_byte_timeout),
            between_bytes: within(options.between_bytes_timeout),
        };
        let prepared = Prepared {
            method,
            url,
            uri,
            routed,
            origin_label: self.policy.metric_label(scheme, &host, port),
            hostname: host,
            use_tls,
            headers: request.headers().clone(),
            idempotent,
        };
        let body = request.into_body();
        let outbound = self.config.clone();
        let caps = Caps { max_body: self.max_response_bytes, max_requests: self.max_requests, max_held: self.max_held_bytes };
        Ok(async move {
            let exchange = async {
                // Held (for retries) until the last attempt is over.
                let mut buffer = buffer(&scope, MAX_OUTBOUND_REQUEST_BODY as u64, caps.max_held);
                let mut body = body;
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.map(|f| f.into_data()) else { return Err(ErrorCode::HttpRequestBodySize(None)) };
                    let Ok(data) = data else { continue };
                    match buffer.push(&data) {
                        Ok(()) => {}
                        Err(Overflow::Cap) => return Err(ErrorCode::HttpRequestBodySize(Some(MAX_OUTBOUND_REQUEST_BODY as u64))),
                        Err(Overflow::Room) => return Err(held_too_much(&scope, caps.max_held, &target)),
                    }
                }
                let (body, _held) = buffer.finish();
                send_with_retries(&prepared, body, timeouts, &outbound, caps, &scope, &target).await
            };
            match exchange.await {
                Ok(response) => Ok((response, Box::new(std::future::ready(Ok(()))) as Box<dyn Future<Output = _> + Send>)),
                Err(code) => Err(code.into()),
            }
        })
    }
}

/// A body being buffered whole (a request for its retries, a response before the adapter
/// sees it), its capacity held in the call's outbound bytes: what a call makes the host
/// buffer, all its requests together, stays within `--max-outbound-bytes`, however many it
/// runs at once.
pub(crate) fn buffer(scope: &CallScope, cap: u64, max_held: u64) -> CountedBuffer<Within> {
    CountedBuffer::new(Within { held: scope.budget.hold(), max: max_held }, usize::try_from(cap).unwrap_or(usize::MAX), None)
}

/// Ends the call on `--max-outbound-bytes`; what the adapter sees of it is a transport error.
pub(crate) fn held_too_much(scope: &CallScope, max: u64, target: &str) -> ErrorCode {
    scope.budget.hit(
        crate::error::FailureKind::OutboundLimitExceeded,
        format!("{target}: the call's outbound bodies came to more than the {max} bytes a call may hold (--max-outbound-bytes)"),
    );
    ErrorCode::HttpResponseBodySize(None)
}
