//! The only way out of the sandbox: every `wasi:http` request an adapter makes comes here.
//! In order: the tenant's egress policy (deny by default), `--upstream` routing (or the
//! `--upstream-only` refusal, or the public-address check), capped timeouts, then the send
//! itself with retries for idempotent requests, each attempt recorded in the call's trace
//! and counted in the metrics, and the response body capped.

use crate::egress::{is_public, EgressPolicy, Upstreams};
use crate::trace::{BodyRecord, CallScope, Exchange};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime_wasi_http::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::types::{
    default_send_request_handler, HostFutureIncomingResponse, IncomingResponse, OutgoingRequestConfig,
};
use wasmtime_wasi_http::HttpResult;

/// The header through which the SDK says whether a request is safe to retry (`1` or `0`;
/// `Request::idempotent`, `Request::not_idempotent`). The host removes it: it never reaches
/// the CRM.
pub const IDEMPOTENT_HEADER: &str = "x-crm-idempotent";

/// Largest request body an adapter may send (buffered: retries resend it).
const MAX_REQUEST_BODY: usize = 4 << 20;

/// Statuses worth another attempt of an idempotent request.
const RETRY_STATUSES: &[u16] = &[429, 502, 503, 504];

/// Retries of idempotent requests: capped exponential backoff with jitter, at least what
/// `Retry-After` asks for, never past the call's deadline.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each.
    pub base: Duration,
    /// Largest backoff (a longer `Retry-After` is still honoured, within the deadline).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, base: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Backoff after `attempt` (1-based): half fixed, half random, so clients that failed
    /// together do not come back together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << (attempt - 1).min(16)).min(self.max_backoff);
        let half = exp / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }
}

/// Where outbound requests may go, host-wide.
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub upstreams: Upstreams,
    /// Refuse every request that no `--upstream` routes (no DNS, nothing leaves the machine).
    pub upstream_only: bool,
    pub retry: RetryPolicy,
}

/// One call's outbound side: its policy, caps and trace.
pub(crate) struct CallOutbound {
    pub policy: EgressPolicy,
    pub config: Arc<OutboundConfig>,
    pub request_timeout: Duration,
    pub max_response_bytes: u64,
    /// Outbound requests (attempts) the call may make.
    pub max_requests: u32,
    pub scope: Arc<CallScope>,
}

/// A request that passed every check, ready to be sent (perhaps several times).
struct Prepared {
    method: http::Method,
    /// As the adapter wrote it, for the trace and logs.
    url: String,
    /// Where it really goes.
    uri: http::Uri,
    routed: bool,
    host: String,
    port: u16,
    use_tls: bool,
    headers: http::HeaderMap,
    idempotent: bool,
}

impl CallOutbound {
    pub fn send(
        &self,
        mut request: hyper::Request<wasmtime_wasi_http::body::HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        let scope = self.scope.clone();
        let uri = request.uri().clone();
        let url = scope.redactor.text(&uri.to_string());
        let target = format!("{} {url}", request.method());
        let scheme = if config.use_tls { "https" } else { "http" };
        let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()) else {
            return Err(ErrorCode::HttpRequestUriInvalid.into());
        };
        let port = uri.port_u16().unwrap_or(if config.use_tls { 443 } else { 80 });
        let deny = |why: String| {
            tracing::warn!(call_id = %scope.call_id, request = %target, "outbound request denied: {why}");
            scope.deny(format!("{target}: {why}"));
            Err(ErrorCode::HttpRequestDenied.into())
        };
        if let Err(why) = self.policy.check(scheme, &host, port) {
            return deny(why);
        }
        if !scope.take_request(self.max_requests) {
            return deny(format!("the call's {} outbound requests are spent", self.max_requests));
        }
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let (uri, routed, use_tls) = match self.config.upstreams.route(&host) {
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
                return deny(format!("no --upstream route for {host} and the host runs with --upstream-only"));
            }
            None => {
                if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    if !is_public(ip) {
                        return deny(format!("{ip} is not a public address"));
                    }
                }
                (uri, false, config.use_tls)
            }
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
        let cap = self.request_timeout;
        let timeouts = Timeouts {
            connect: config.connect_timeout.min(cap),
            first_byte: config.first_byte_timeout.min(cap),
            between_bytes: config.between_bytes_timeout.min(cap),
        };
        let prepared = Prepared {
            method,
            url,
            uri,
            routed,
            host,
            port,
            use_tls,
            headers: request.headers().clone(),
            idempotent,
        };
        let body = request.into_body();
        let retry = self.config.retry.clone();
        let caps = (self.max_response_bytes, self.max_requests);
        let handle = wasmtime_wasi::runtime::spawn(async move {
            if !prepared.routed {
                if let Err(why) = resolves_publicly(&prepared.host, prepared.port).await {
                    tracing::warn!(call_id = %scope.call_id, request = %target, "outbound request denied: {why}");
                    scope.deny(format!("{target}: {why}"));
                    return Ok(Err(ErrorCode::HttpRequestDenied));
                }
            }
            let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(Err(ErrorCode::HttpRequestBodySize(Some(MAX_REQUEST_BODY as u64)))),
            };
            Ok(send_with_retries(&prepared, body, timeouts, &retry, caps, &scope).await)
        });
        Ok(HostFutureIncomingResponse::pending(handle))
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

async fn send_with_retries(
    p: &Prepared,
    body: Bytes,
    t: Timeouts,
    retry: &RetryPolicy,
    (max_body, max_requests): (u64, u32),
    scope: &CallScope,
) -> Result<IncomingResponse, ErrorCode> {
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = send_once(p, body.clone(), t, max_body).await;
        let duration = started.elapsed();
        record(p, &body, attempt, started, duration, &result, scope);

        let reason = match &result {
            Ok((status, ..)) if RETRY_STATUSES.contains(status) => Some(status.to_string()),
            Err(e) if is_connection_error(e) => Some(error_label(e)),
            _ => None,
        };
        let Some(reason) = reason.filter(|_| p.idempotent && attempt < retry.max_attempts) else {
            return result.map(|(_, resp, _)| resp);
        };
        let mut wait = retry.backoff(attempt);
        if let Ok((_, resp, _)) = &result {
            if let Some(after) = resp.resp.headers().get(http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.to_str().ok()?)) {
                wait = wait.max(after);
            }
        }
        // Another attempt must fit in what is left of the call, and in its request budget.
        let fits = Instant::now() + wait + t.connect.min(Duration::from_millis(50)) < scope.deadline;
        if !fits || !scope.take_retry(max_requests) {
            return result.map(|(_, resp, _)| resp);
        }
        scope.metrics.outbound_retries.with_label_values(&[&scope.adapter, &p.host, &reason]).inc();
        tracing::info!(call_id = %scope.call_id, host = %p.host, attempt, reason, wait_ms = wait.as_millis() as u64, "retrying outbound request");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// One attempt. The response body is read whole here (capped, with the between-bytes
/// timeout), so that it can be recorded and a retry decided before the adapter sees it.
async fn send_once(
    p: &Prepared,
    body: Bytes,
    t: Timeouts,
    max_body: u64,
) -> Result<(u16, IncomingResponse, Bytes), ErrorCode> {
    let mut request = hyper::Request::builder().method(p.method.clone()).uri(p.uri.clone());
    if let Some(h) = request.headers_mut() {
        *h = p.headers.clone();
    }
    let request = request
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    let config = OutgoingRequestConfig {
        use_tls: p.use_tls,
        connect_timeout: t.connect,
        first_byte_timeout: t.first_byte,
        between_bytes_timeout: t.between_bytes,
    };
    let response = default_send_request_handler(request, config).await?;
    let declared = response
        .resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(ErrorCode::HttpResponseBodySize(Some(max_body)));
    }
    let (parts, incoming) = response.resp.into_parts();
    let mut incoming = incoming;
    let mut bytes = Vec::new();
    loop {
        let frame = match tokio::time::timeout(t.between_bytes, incoming.frame()).await {
            Err(_) => return Err(ErrorCode::ConnectionReadTimeout),
            Ok(None) => break,
            Ok(Some(f)) => f?,
        };
        if let Some(data) = frame.data_ref() {
            if (bytes.len() + data.len()) as u64 > max_body {
                return Err(ErrorCode::HttpResponseBodySize(Some(max_body)));
            }
            bytes.extend_from_slice(data);
        }
    }
    let bytes = Bytes::from(bytes);
    let status = parts.status.as_u16();
    let resp = hyper::Response::from_parts(parts, Full::new(bytes.clone()).map_err(|never| match never {}).boxed());
    Ok((status, IncomingResponse { resp, worker: None, between_bytes_timeout: t.between_bytes }, bytes))
}

fn record(
    p: &Prepared,
    body: &[u8],
    attempt: u32,
    started: Instant,
    duration: Duration,
    result: &Result<(u16, IncomingResponse, Bytes), ErrorCode>,
    scope: &CallScope,
) {
    let r = &scope.redactor;
    let headers = |h: &http::HeaderMap| -> Vec<(String, String)> {
        h.iter().map(|(k, v)| (k.as_str().to_string(), r.text(&String::from_utf8_lossy(v.as_bytes())))).collect()
    };
    let status_label = match result {
        Ok((s, ..)) => s.to_string(),
        Err(e) => error_label(e),
    };
    let ms = duration.as_secs_f64() * 1000.0;
    let path = r.text(p.uri.path());
    tracing::info!(
        call_id = %scope.call_id, adapter = %scope.adapter, method = %p.method, host = %p.host, path = %path,
        status = %status_label, attempt, ms, "outbound"
    );
    scope.metrics.outbound.with_label_values(&[&scope.adapter, &p.host, &status_label]).inc();
    scope.metrics.outbound_seconds.with_label_values(&[&scope.adapter, &p.host]).observe(duration.as_secs_f64());
    let (status, response_headers, response_body, error) = match result {
        Ok((s, resp, bytes)) => (Some(*s), headers(resp.resp.headers()), Some(BodyRecord::new(bytes, r)), None),
        Err(e) => (None, Vec::new(), None, Some(format!("{e:?}"))),
    };
    scope.record(Exchange {
        attempt,
        method: p.method.to_string(),
        url: p.url.clone(),
        routed_to: p.routed.then(|| r.text(&p.uri.to_string())),
        request_headers: headers(&p.headers),
        request_body: BodyRecord::new(body, r),
        status,
        response_headers,
        response_body,
        error,
        started_ms: scope.elapsed_ms(started),
        duration_ms: ms,
    });
}

fn is_connection_error(e: &ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::DestinationUnavailable
    )
}

/// A short, label-safe name of an error (`connection_refused`).
fn error_label(e: &ErrorCode) -> String {
    let debug = format!("{e:?}");
    let name = debug.rsplit("::").next().unwrap_or(&debug);
    let name = name.split(['(', ' ', '{']).next().unwrap_or("error");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Refuses hosts that resolve to non-public addresses (DNS pointing into the host's network).
async fn resolves_publicly(host: &str, port: u16) -> Result<(), String> {
    let addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for addr in addrs {
        if !is_public(addr.ip()) {
            return Err(format!("{host} resolves to {}, which is not a public address", addr.ip()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(27) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date: now");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy { max_attempts: 10, base: Duration::from_millis(100), max_backoff: Duration::from_millis(800) };
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100), "{b1:?}");
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400), "{b3:?}");
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(400) && b9 <= Duration::from_millis(800), "{b9:?}");
        }
    }

    #[test]
    fn error_labels_are_snake_case() {
        assert_eq!(error_label(&ErrorCode::ConnectionRefused), "connection_refused");
        assert_eq!(error_label(&ErrorCode::HttpResponseBodySize(Some(3))), "http_response_body_size");
    }
}
