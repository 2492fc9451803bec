//! The attempts of one outbound request: each one connects (through the connector's checks),
//! sends, reads the response whole within the response cap, and is recorded in the call's
//! trace and metrics; idempotent requests are retried on connection errors and
//! 429/502/503/504, with backoff, within the call's deadline and request budget.

use super::connect::{hyper_error, ConnectError, ExchangeTimeouts, Target};
use super::{buffer, held_too_much, OutboundConfig, Prepared};
use crate::limits::{Overflow, Within, MAX_RECORDED_URL, MAX_RETRY_AFTER};
use crate::replay::{Answer, Replayer};
use crate::runtime::CallScope;
use crate::trace::{BodyRecord, Exchange};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::Rng;
use std::time::{Duration, Instant, SystemTime};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::WasiBody;

type Response = http::Response<WasiBody>;

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


#[derive(Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// What an outbound request may take: the response's size, the call's requests and the
/// bytes its bodies may hold.
#[derive(Clone, Copy)]
pub(super) struct Caps {
    pub max_body: u64,
    pub max_requests: u32,
    pub max_held: u64,
}

pub(super) async fn send_with_retries(
    p: &Prepared,
    body: Bytes,
    t: Timeouts,
    config: &OutboundConfig,
    caps: Caps,
    scope: &CallScope,
    target: &str,
) -> Result<Response, ErrorCode> {
    let retry = &config.retry;
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result = match send_once(p, body.clone(), t, caps, config, scope, target).await {
            Ok(r) => Ok(r),
            Err(ConnectError::Failed(e)) => Err(e),
            // Not an exchange: nothing was sent. The call learns why through its scope.
            Err(ConnectError::Denied(why)) => {
                tracing::warn!(call_id = %scope.call_id, request = %target, "outbound request denied: {why}");
                scope.deny(format!("{target}: {why}"));
                return Err(ErrorCode::HttpRequestDenied);
            }
        };
        let duration = started.elapsed();
        record(p, &body, attempt, started, duration, &result, scope);
        if let Err(ErrorCode::HttpResponseBodySize(Some(max))) = &result {
            // A limit, not a transport failure: the call ends on it, naming it.
            scope.budget.hit(
                crate::error::FailureKind::ResponseLimitExceeded,
                format!("the answer to {target} was larger than the {max} bytes allowed (--max-response-bytes)"),
            );
        }

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
            if let Some(after) = resp.headers().get(http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.to_str().ok()?)) {
                wait = wait.max(after);
            }
        }
        // Another attempt must fit in what is left of the call, and in its request budget.
        let fits = Instant::now()
            .checked_add(wait + t.connect.min(Duration::from_millis(50)))
            .is_some_and(|next| next < scope.deadline);
        if !fits || !scope.budget.take_retry(caps.max_requests) {
            return result.map(|(_, resp, _)| resp);
        }
        if scope.replay.is_none() {
            scope.metrics.outbound_retries.with_label_values(&[&scope.adapter, &p.origin_label, &reason]).inc();
            tracing::info!(call_id = %scope.call_id, host = %p.hostname, attempt, reason, wait_ms = wait.as_millis() as u64, "retrying outbound request");
            // A replay's answers are recorded: nothing to wait for.
            tokio::time::sleep(wait).await;
        }
        attempt += 1;
    }
}

/// One attempt. The response body is read whole here (capped, with the between-bytes
/// timeout), so that it can be recorded and a retry decided before the adapter sees it.
async fn send_once(
    p: &Prepared,
    body: Bytes,
    t: Timeouts,
    caps: Caps,
    config: &OutboundConfig,
    scope: &CallScope,
    what: &str,
) -> Result<(u16, Response, Bytes), ConnectError> {
    if let Some(replayer) = &scope.replay {
        return replay_once(replayer, p, &body, caps, scope, what).map_err(ConnectError::Failed);
    }
    let max_body = caps.max_body;
    let failed = ConnectError::Failed;
    let host = p.uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')).unwrap_or_default();
    let port = p.uri.port_u16().unwrap_or(if p.use_tls { 443 } else { 80 });
    let target = Target { host, port, use_tls: p.use_tls, routed: p.routed };
    // On the wire the request line carries the path only; Host says where it is going.
    let path = p.uri.path_and_query().map(|x| x.as_str()).unwrap_or("/");
    let mut request = hyper::Request::builder().method(p.method.clone()).uri(path);
    if let Some(h) = request.headers_mut() {
        *h = p.headers.clone();
        // The host frames every request itself (from the body it holds): a guest's own
        // Content-Length could desynchronise a connection the next request reuses.
        h.remove(http::header::CONTENT_LENGTH);
    }
    let request = request.body(Full::new(body)).map_err(|_| failed(ErrorCode::HttpRequestUriInvalid))?;
    let timeouts = ExchangeTimeouts { connect: t.connect, first_byte: t.first_byte };
    let (response, lease) = config.connector.send(&target, timeouts, request).await?;
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(failed(ErrorCode::HttpResponseBodySize(Some(max_body))));
    }
    let (parts, mut incoming) = response.into_parts();
    let mut buffer = buffer(scope, max_body, caps.max_held);
    loop {
        let frame = match tokio::time::timeout(t.between_bytes, incoming.frame()).await {
            Err(_) => return Err(failed(ErrorCode::ConnectionReadTimeout)),
            Ok(None) => break,
            Ok(Some(f)) => f.map_err(|e| failed(hyper_error(&e)))?,
        };
        if let Some(data) = frame.data_ref() {
            match buffer.push(data) {
                Ok(()) => {}
                Err(Overflow::Cap) => return Err(failed(ErrorCode::HttpResponseBodySize(Some(max_body)))),
                Err(Overflow::Room) => return Err(failed(held_too_much(scope, caps.max_held, what))),
            }
        }
    }
    // Read to its end: the connection can carry the next request.
    lease.release();
    let (bytes, held) = buffer.finish();
    let status = parts.status.as_u16();
    // The response's bytes stay held until the adapter is done with its body.
    let body = HeldBody { body: Full::new(bytes.clone()), _held: held };
    let resp = hyper::Response::from_parts(parts, body.map_err(|never| match never {}).boxed_unsync());
    Ok((status, resp, bytes))
}

/// One attempt of a replayed call: the recording's answer to the request (redacted as the
/// recording was, so `[redacted]` matches the real secret), under the same response caps.
/// A request the recording cannot answer gets a transport error the host never retries.
fn replay_once(
    replayer: &Replayer,
    p: &Prepared,
    body: &[u8],
    caps: Caps,
    scope: &CallScope,
    what: &str,
) -> Result<(u16, Response, Bytes), ErrorCode> {
    let sent = scope.redactor.bytes(body);
    let (status, headers, recorded) = match replayer.answer(p.method.as_str(), &p.url, &sent) {
        Some(Answer::Response { status, headers, body }) => (status, headers, body),
        Some(Answer::Failed(error)) => return Err(recorded_error(&error)),
        None => {
            return Err(ErrorCode::InternalError(Some("replay: the recording holds no exchange that answers this request".into())))
        }
    };
    if recorded.len() as u64 > caps.max_body {
        return Err(ErrorCode::HttpResponseBodySize(Some(caps.max_body)));
    }
    let mut buffer = buffer(scope, caps.max_body, caps.max_held);
    if buffer.push(&recorded).is_err() {
        return Err(held_too_much(scope, caps.max_held, what));
    }
    let (bytes, held) = buffer.finish();
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in &headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = HeldBody { body: Full::new(bytes.clone()), _held: held };
    let response = response
        .body(body.map_err(|never| match never {}).boxed_unsync())
        .map_err(|e| ErrorCode::InternalError(Some(format!("replay: the recorded answer does not make a response: {e}"))))?;
    Ok((status, response, bytes))
}

/// A recorded transport error (the trace keeps `ErrorCode`'s debug text) as the error the
/// adapter saw.
fn recorded_error(text: &str) -> ErrorCode {
    match text.split(['(', ' ', '{']).next().unwrap_or_default() {
        "ConnectionRefused" => ErrorCode::ConnectionRefused,
        "ConnectionTerminated" => ErrorCode::ConnectionTerminated,
        "ConnectionTimeout" => ErrorCode::ConnectionTimeout,
        "ConnectionReadTimeout" => ErrorCode::ConnectionReadTimeout,
        "ConnectionWriteTimeout" => ErrorCode::ConnectionWriteTimeout,
        "ConnectionLimitReached" => ErrorCode::ConnectionLimitReached,
        "DestinationUnavailable" => ErrorCode::DestinationUnavailable,
        "DestinationNotFound" => ErrorCode::DestinationNotFound,
        "HttpResponseTimeout" => ErrorCode::HttpResponseTimeout,
        "HttpResponseIncomplete" => ErrorCode::HttpResponseIncomplete,
        "HttpProtocolError" => ErrorCode::HttpProtocolError,
        _ => ErrorCode::InternalError(Some(format!("replay: recorded {text}"))),
    }
}

/// A response body handed to the adapter, holding its bytes' place in the call's budget.
struct HeldBody {
    body: Full<Bytes>,
    _held: Within,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn record(
    p: &Prepared,
    body: &[u8],
    attempt: u32,
    started: Instant,
    duration: Duration,
    result: &Result<(u16, Response, Bytes), ErrorCode>,
    scope: &CallScope,
) {
    let r = &scope.redactor;
    let headers = |h: &http::HeaderMap| -> Vec<(String, String)> {
        h.iter().map(|(k, v)| (k.as_str().to_string(), r.header(&String::from_utf8_lossy(v.as_bytes())))).collect()
    };
    let status_label = match result {
        Ok((s, ..)) => s.to_string(),
        Err(e) => error_label(e),
    };
    let ms = duration.as_secs_f64() * 1000.0;
    // Answered attempts are in the call's trace; only failures are worth a line at info.
    // A replay's answers are recorded ones: nothing happened worth a line.
    let level_info = scope.replay.is_none() && !matches!(result, Ok((s, ..)) if *s < 500);
    if level_info || tracing::enabled!(tracing::Level::DEBUG) {
        let path = r.text(p.uri.path());
        if level_info {
            tracing::info!(call_id = %scope.call_id, adapter = %scope.adapter, method = %p.method, host = %p.hostname, path = %path, status = %status_label, attempt, ms, "outbound");
        } else {
            tracing::debug!(call_id = %scope.call_id, adapter = %scope.adapter, method = %p.method, host = %p.hostname, path = %path, status = %status_label, attempt, ms, "outbound");
        }
    }
    if scope.replay.is_none() {
        scope.metrics.outbound.with_label_values(&[&scope.adapter, &p.origin_label, &status_label]).inc();
        scope.metrics.outbound_seconds.with_label_values(&[&scope.adapter, &p.origin_label]).observe(duration.as_secs_f64());
    }
    let (status, mut response_headers, mut response_body, error) = match result {
        Ok((s, resp, bytes)) => (Some(*s), headers(resp.headers()), Some(BodyRecord::new(bytes, r)), None),
        Err(e) => (None, Vec::new(), None, Some(format!("{e:?}"))),
    };
    let (mut request_headers, mut request_body) = (headers(&p.headers), Some(BodyRecord::new(body, r)));
    // A call's trace keeps so much of its bodies and headers; later exchanges go without.
    let pairs = |h: &[(String, String)]| h.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let size = pairs(&request_headers)
        + pairs(&response_headers)
        + request_body.as_ref().map_or(0, |b| b.data.len())
        + response_body.as_ref().map_or(0, |b| b.data.len());
    let omitted = !scope.budget.take_recorded(size);
    if omitted {
        (request_headers, response_headers, request_body, response_body) = (Vec::new(), Vec::new(), None, None);
    }
    scope.record(Exchange {
        attempt,
        method: p.method.to_string(),
        url: cut(&p.url, MAX_RECORDED_URL),
        routed_to: p.routed.then(|| cut(&r.text(&p.uri.to_string()), MAX_RECORDED_URL)),
        request_headers,
        request_body,
        status,
        response_headers,
        response_body,
        omitted,
        error,
        started_ms: scope.elapsed_ms(started),
        duration_ms: ms,
    });
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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

/// `Retry-After`: delay-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`] (a CRM's
/// answer must not be able to push the host's clock arithmetic past its range).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(v).ok()?;
            at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
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
        assert_eq!(parse_retry_after("10000000000000000000"), Some(MAX_RETRY_AFTER), "clamped");
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_RETRY_AFTER), "clamped");
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
