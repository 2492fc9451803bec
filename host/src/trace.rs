//! Per-call traces: what the platform sent, every outbound exchange (each retry attempt
//! too) and what the call answered, with every secret crmConfig value replaced by
//! `[redacted]`. Recorded off the response path by [`Recorder`] and kept per tenant up to a
//! retention. These records are what a later replay runs candidate versions against, so
//! bodies are kept as exact text (or base64 for non-UTF-8 bytes) up to 64 KiB each.

use crate::error::FailureKind;
use crate::metrics::Metrics;
use crate::store::{CallRecord, Store};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Shown instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Largest body kept per request or response in a trace.
pub const MAX_TRACE_BODY: usize = 64 << 10;

/// Replaces secret values, and the ways they get encoded on the wire, in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    /// The values of `secret_fields` in `crm_config` (strings, or numbers as text).
    pub fn new(secret_fields: &[String], crm_config: &Map<String, Value>) -> Self {
        let mut needles = Vec::new();
        for field in secret_fields {
            let raw = match crm_config.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            if raw.is_empty() {
                continue;
            }
            let form: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            let percent = form.replace('+', "%20");
            let json = Value::String(raw.clone()).to_string();
            let json = json[1..json.len() - 1].to_string();
            for n in [raw, form, percent, json] {
                if !needles.contains(&n) {
                    needles.push(n);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts every string (and key) in a JSON value.
    pub fn json(&self, v: &Value) -> Value {
        if self.needles.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (self.text(k), self.json(x))).collect()),
            other => other.clone(),
        }
    }
}

/// A request or response body as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BodyRecord {
    /// `utf8` (the text as is) or `base64`.
    pub encoding: &'static str,
    pub data: String,
    /// The body's full size in bytes.
    pub size: usize,
    /// Only the first 64 KiB were kept.
    pub truncated: bool,
}

impl BodyRecord {
    pub fn new(bytes: &[u8], redactor: &Redactor) -> Self {
        let kept = &bytes[..bytes.len().min(MAX_TRACE_BODY)];
        let (encoding, data) = match std::str::from_utf8(kept) {
            Ok(text) => ("utf8", redactor.text(text)),
            // A cut through a multi-byte character is still text.
            Err(e) if bytes.len() > MAX_TRACE_BODY && e.error_len().is_none() => {
                ("utf8", redactor.text(std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default()))
            }
            Err(_) => ("base64", base64::engine::general_purpose::STANDARD.encode(kept)),
        };
        BodyRecord { encoding, data, size: bytes.len(), truncated: bytes.len() > MAX_TRACE_BODY }
    }
}

/// One outbound attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    pub attempt: u32,
    pub method: String,
    /// As the adapter asked for it (the CRM's production URL).
    pub url: String,
    /// Where `--upstream` sent it, when routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_to: Option<String>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: BodyRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<BodyRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from the start of the call.
    pub started_ms: f64,
    pub duration_ms: f64,
}

/// Everything recorded about one call, as `GET /v1/tenants/{t}/calls/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallTrace {
    pub call_id: String,
    pub tenant: String,
    pub func_id: String,
    pub adapter: String,
    pub version: String,
    pub digest: String,
    pub started_at_ms: i64,
    pub duration_ms: f64,
    /// The call body as received (`chat`, `params`).
    pub request: Value,
    /// Every outbound attempt, in order.
    pub outbound: Vec<Exchange>,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm_data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::CallFailure>,
}

impl CallTrace {
    /// The row that stores this trace: its summary columns and the whole of it.
    pub fn into_record(self, elapsed: Duration) -> CallRecord {
        CallRecord {
            call_id: self.call_id.clone(),
            tenant: self.tenant.clone(),
            func_id: self.func_id.clone(),
            adapter: self.adapter.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
            started_at_ms: self.started_at_ms,
            duration_us: elapsed.as_micros() as i64,
            outcome: self.outcome.clone(),
            error_kind: self.error.as_ref().map(|f| f.kind.as_str().to_string()),
            trace: serde_json::to_value(&self).unwrap_or(Value::Null),
        }
    }
}

/// What one execution (a call, or a deploy's describe) shares with its outbound requests.
pub struct CallScope {
    pub call_id: String,
    pub adapter: String,
    pub started: Instant,
    pub deadline: Instant,
    pub redactor: Redactor,
    pub metrics: Arc<Metrics>,
    exchanges: Mutex<Vec<Exchange>>,
    /// Why requests were denied, for the failure message.
    denials: Mutex<Vec<String>>,
    /// Outbound requests started, for the per-call cap.
    requests: std::sync::atomic::AtomicU32,
    /// Header entries created, for the per-call cap.
    headers: std::sync::atomic::AtomicU32,
    /// A limit that ended the call: its failure kind and a message naming it.
    limit_hit: Mutex<Option<(FailureKind, String)>>,
}

impl CallScope {
    pub fn new(call_id: String, adapter: String, deadline: Duration, redactor: Redactor, metrics: Arc<Metrics>) -> Self {
        let started = Instant::now();
        CallScope {
            call_id,
            adapter,
            started,
            deadline: started + deadline,
            redactor,
            metrics,
            exchanges: Mutex::default(),
            denials: Mutex::default(),
            requests: Default::default(),
            headers: Default::default(),
            limit_hit: Mutex::default(),
        }
    }

    /// Counts one more outbound request; `false` once `max` are spent (and the call is
    /// marked as ended by that limit).
    pub fn take_request(&self, max: u32) -> bool {
        let n = self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n < max
            || self.hit(
                FailureKind::OutboundLimitExceeded,
                format!("the adapter made more than the {max} outbound requests a call may make (--max-outbound-requests)"),
            )
    }

    /// Takes one more request for a retry if any is left; never ends the call (a retry that
    /// does not fit is simply not made).
    pub fn take_retry(&self, max: u32) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Counts one more header entry; `false` once `max` are spent.
    pub fn take_header(&self, max: u32) -> bool {
        let n = self.headers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n < max
            || self.hit(
                FailureKind::ResourceLimitExceeded,
                format!("the adapter created more than the {max} header entries a call may create (--max-header-entries)"),
            )
    }

    /// Records the first limit that ended the call; always `false` (nothing more is allowed).
    pub fn hit(&self, kind: FailureKind, why: String) -> bool {
        lock(&self.limit_hit).get_or_insert((kind, why));
        false
    }

    pub fn limit_hit(&self) -> Option<(FailureKind, String)> {
        lock(&self.limit_hit).clone()
    }

    pub fn record(&self, e: Exchange) {
        lock(&self.exchanges).push(e);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.exchanges).clone()
    }

    pub fn deny(&self, why: String) {
        lock(&self.denials).push(why);
    }

    pub fn denials(&self) -> Vec<String> {
        lock(&self.denials).clone()
    }

    pub fn elapsed_ms(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64() * 1000.0
    }
}

/// A poisoned lock only means another thread panicked while holding it; the vectors behind
/// these locks stay valid, so later requests go on instead of panicking in turn.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Job {
    Record(Box<CallRecord>),
    Flush(oneshot::Sender<()>),
}

/// How long a batch of traces waits for more before it is written. Readers never wait for
/// it: the API's trace reads flush first.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes call records in batches on a task of its own, so a call's answer never waits for
/// the database. `flush` lets readers see every call answered before it.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn start(store: Arc<dyn Store>, keep_per_tenant: u32, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        let dropped = metrics.clone();
        tokio::spawn(async move {
            let mut batch: Vec<CallRecord> = Vec::new();
            let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
            while let Some(job) = rx.recv().await {
                let mut next = Some(job);
                // A batch closes after 256 records, on a flush, or BATCH_LINGER after its
                // first record: one transaction per batch, not per call.
                let closes = tokio::time::Instant::now() + BATCH_LINGER;
                while let Some(job) = next {
                    match job {
                        Job::Record(r) => batch.push(*r),
                        Job::Flush(w) => waiting.push(w),
                    }
                    next = if batch.len() >= 256 || !waiting.is_empty() {
                        None
                    } else {
                        tokio::time::timeout_at(closes, rx.recv()).await.ok().flatten()
                    };
                }
                if !batch.is_empty() {
                    if let Err(e) = store.record_calls(&batch, keep_per_tenant).await {
                        tracing::error!("could not record {} call traces: {e}", batch.len());
                        dropped.traces_dropped.inc_by(batch.len() as u64);
                    }
                    batch.clear();
                }
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        Recorder { tx, metrics }
    }

    pub fn record(&self, r: CallRecord) {
        if self.tx.try_send(Job::Record(Box::new(r))).is_err() {
            self.metrics.traces_dropped.inc();
        }
    }

    /// Waits until every record sent before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_raw_form_and_percent_encoded_secrets() {
        let config = json!({"token": "s3c ret+/x", "chat": "77", "empty": ""});
        let r = Redactor::new(&["token".into(), "empty".into()], config.as_object().unwrap());
        assert_eq!(r.text("a=s3c ret+/x"), "a=[redacted]");
        assert_eq!(r.text("access_key=s3c+ret%2B%2Fx&chat=77"), "access_key=[redacted]&chat=77");
        assert_eq!(r.text("/p?k=s3c%20ret%2B%2Fx"), "/p?k=[redacted]");
        assert_eq!(r.json(&json!({"s3c ret+/x": ["s3c ret+/x", 1]})), json!({"[redacted]": ["[redacted]", 1]}));
        assert_eq!(r.text("77"), "77", "only secret fields are redacted");
    }

    #[test]
    fn bodies_keep_text_exactly_and_bytes_as_base64() {
        let r = Redactor::default();
        let b = BodyRecord::new("שלום".as_bytes(), &r);
        assert_eq!((b.encoding, b.data.as_str(), b.size, b.truncated), ("utf8", "שלום", 8, false));
        let b = BodyRecord::new(&[0xff, 0x00], &r);
        assert_eq!((b.encoding, b.data.as_str()), ("base64", "/wA="));
        let big = "é".repeat(MAX_TRACE_BODY);
        let b = BodyRecord::new(big.as_bytes(), &r);
        assert!(b.truncated && b.encoding == "utf8" && b.data.len() <= MAX_TRACE_BODY);
    }
}
