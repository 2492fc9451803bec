//! Per-call traces: what the platform sent, every outbound exchange (each retry attempt
//! too) and what the call answered, secrets redacted ([`crate::redact`]). Written off the
//! response path by [`TraceWriter`] and kept per tenant up to a retention. These records are
//! what a later replay runs candidate versions against, so bodies are kept as exact text (or
//! base64 for non-UTF-8 bytes) up to [`MAX_TRACE_BODY`] each.

use crate::limits::{TraceRetention, MAX_TRACE_BODY};
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::store::{CallHead, CallRecord, Store};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// A request or response body as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct BodyRecord {
    /// `utf8` (the text as is) or `base64`.
    pub encoding: Cow<'static, str>,
    pub data: String,
    /// The body's full size in bytes.
    pub size: usize,
    /// Only the first 64 KiB were kept.
    pub truncated: bool,
}

impl BodyRecord {
    /// Secrets are redacted on the whole body first, then it is cut and encoded: a secret
    /// is caught whether the body is text or not and wherever the cut falls.
    pub fn new(original: &[u8], redactor: &Redactor) -> Self {
        let size = original.len();
        let bytes = redactor.bytes(original);
        let kept = &bytes[..bytes.len().min(MAX_TRACE_BODY)];
        let (encoding, data) = match std::str::from_utf8(kept) {
            Ok(text) => ("utf8", text.to_string()),
            // A cut through a multi-byte character is still text.
            Err(e) if bytes.len() > MAX_TRACE_BODY && e.error_len().is_none() => {
                ("utf8", std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default().to_string())
            }
            Err(_) => ("base64", base64::engine::general_purpose::STANDARD.encode(kept)),
        };
        BodyRecord { encoding: Cow::Borrowed(encoding), data, size, truncated: bytes.len() > MAX_TRACE_BODY }
    }

    /// The recorded bytes (all of them unless `truncated`).
    pub fn bytes(&self) -> Vec<u8> {
        match &*self.encoding {
            "base64" => base64::engine::general_purpose::STANDARD.decode(&self.data).unwrap_or_default(),
            _ => self.data.as_bytes().to_vec(),
        }
    }
}

/// One outbound attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    pub attempt: u32,
    pub method: String,
    /// As the adapter asked for it (the CRM's production URL).
    pub url: String,
    /// Where `--upstream` sent it, when routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_to: Option<String>,
    pub request_headers: Vec<(String, String)>,
    /// `None` only when `omitted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BodyRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub response_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<BodyRecord>,
    /// Headers and bodies left out: the call's trace already holds as much of them as a
    /// call's may (1 MiB).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omitted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds from the start of the call.
    pub started_ms: f64,
    pub duration_ms: f64,
}

/// Everything recorded about one call, as `GET /v1/tenants/{t}/calls/{id}` shows it, and
/// as a replay reads it back.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A digest of the tenant's crmConfig when the call ran ([`config_digest`]): a replay
    /// runs only calls whose tenant still has that config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The call body as received (`chat`, `params`); `null` when it is larger than a recorded
    /// body may be (`requestBody` then holds its first 64 KiB).
    // Kept as printed (`printed::recorded_request`), and written out as it is.
    #[schema(value_type = Value)]
    pub request: Box<serde_json::value::RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BodyRecord>,
    /// Every outbound attempt, in order. A stored trace holds it last (`into_record`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(required = true)]
    pub outbound: Vec<Exchange>,
    pub outcome: String,
    // As the call answered it (redacted), written out as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub crm_data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::CallFailure>,
}

/// A digest of a crmConfig as stored (its JSON text), for telling whether a tenant's config
/// is still the one a recorded call ran with.
pub fn config_digest(config: &serde_json::Map<String, Value>) -> String {
    use sha2::Digest;
    // A map serialises as the object holding it would: no copy of the config.
    let text = serde_json::to_vec(config).unwrap_or_default();
    crate::auth::hex(&sha2::Sha256::digest(&text)[..16])
}

/// [`config_digest`] of a tenant record's crmConfig, made once per record rather than for
/// every call's trace (a changed config is a new record).
#[derive(Default)]
pub struct ConfigDigest(std::sync::OnceLock<String>);

impl ConfigDigest {
    pub fn of(&self, config: &serde_json::Map<String, Value>) -> &str {
        self.0.get_or_init(|| config_digest(config))
    }
}

impl CallTrace {
    /// The row that stores this trace: its summary columns and the whole of it, with
    /// `outbound` (a JSON array, as `CallScope::take_exchanges` gives it) in place of
    /// `self.outbound`.
    pub fn into_record(self, outbound: &str, elapsed: Duration) -> CallRecord {
        let head = CallHead {
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
        };
        // Serialised once, straight to the text that is stored; the exchanges were
        // serialised where they were made, and close the object.
        debug_assert!(self.outbound.is_empty());
        let mut trace = serde_json::to_string(&self).expect("a trace serialises");
        trace.pop();
        for part in [",\"outbound\":", outbound, "}"] {
            trace.push_str(part);
        }
        CallRecord { head, trace }
    }
}

/// A record, made by the writer: what a call's trace is built of is handed over as it is,
/// and the work of building it (parsing, redacting, serialising) is done off the response
/// path, a batch at a time.
type Build = Box<dyn FnOnce() -> CallRecord + Send>;

enum Job {
    Record(Build),
    Flush(oneshot::Sender<()>),
}

/// How long a batch of traces waits for more before it is written. Readers never wait for
/// it: the API's trace reads flush first.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// Records per transaction.
const BATCH_MAX: usize = 256;

/// Writes call records in batches on a task of its own, so a call's answer never waits for
/// the database. `flush` lets readers see every call answered before it.
#[derive(Clone)]
pub struct TraceWriter {
    tx: mpsc::Sender<Job>,
    /// Ends a batch's linger early (a reader is waiting).
    flush_now: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl TraceWriter {
    pub fn start(store: Arc<dyn Store>, keep: TraceRetention, metrics: Arc<Metrics>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        let flush_now = Arc::new(Notify::new());
        let dropped = metrics.clone();
        let lingering = flush_now.clone();
        tokio::spawn(async move {
            let mut batch: Vec<CallRecord> = Vec::new();
            let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
            let take = |job: Job, batch: &mut Vec<CallRecord>, waiting: &mut Vec<oneshot::Sender<()>>| match job {
                Job::Record(build) => batch.push(build()),
                Job::Flush(w) => waiting.push(w),
            };
            // The first record of a batch wakes this task; the others only queue: while it
            // lingers it does not poll the channel, so a call's trace costs no wake-up.
            while let Some(job) = rx.recv().await {
                take(job, &mut batch, &mut waiting);
                if waiting.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(BATCH_LINGER) => {}
                        _ = lingering.notified() => {}
                    }
                }
                while let Ok(job) = rx.try_recv() {
                    take(job, &mut batch, &mut waiting);
                }
                while !batch.is_empty() {
                    let chunk: Vec<CallRecord> = batch.drain(..batch.len().min(BATCH_MAX)).collect();
                    let n = chunk.len();
                    if let Err(e) = store.record_calls(chunk, &keep).await {
                        tracing::error!("could not record {n} call traces: {e}");
                        dropped.traces_dropped.inc_by(n as u64);
                    }
                }
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        TraceWriter { tx, flush_now, metrics }
    }

    pub fn write(&self, build: impl FnOnce() -> CallRecord + Send + 'static) {
        if self.tx.try_send(Job::Record(Box::new(build))).is_err() {
            self.metrics.traces_dropped.inc();
        }
    }

    /// Waits until every record sent before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            self.flush_now.notify_one();
            let _ = rx.await;
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_text_exactly_and_bytes_as_base64() {
        let r = Redactor::default();
        let b = BodyRecord::new("שלום".as_bytes(), &r);
        assert_eq!((&*b.encoding, b.data.as_str(), b.size, b.truncated), ("utf8", "שלום", 8, false));
        let b = BodyRecord::new(&[0xff, 0x00], &r);
        assert_eq!((&*b.encoding, b.data.as_str()), ("base64", "/wA="));
        let big = "é".repeat(MAX_TRACE_BODY);
        let b = BodyRecord::new(big.as_bytes(), &r);
        assert!(b.truncated && b.encoding == "utf8" && b.data.len() <= MAX_TRACE_BODY);
        assert_eq!(BodyRecord::new(&[0xff, 0x00], &r).bytes(), vec![0xff, 0x00], "base64 decodes back");
    }

    #[test]
    fn config_digests_match_those_older_hosts_recorded() {
        use sha2::Digest;
        let config = serde_json::json!({"token": "tok", "chat": "1"});
        let config = config.as_object().unwrap();
        let older = format!("{:x}", sha2::Sha256::digest(serde_json::to_vec(config).unwrap()))[..32].to_string();
        assert_eq!(config_digest(config), older);
        let cached = ConfigDigest::default();
        assert_eq!((cached.of(config), ConfigDigest::default().of(&serde_json::Map::new())), (older.as_str(), config_digest(&serde_json::Map::new()).as_str()));
    }

    #[test]
    fn secrets_are_redacted_before_bodies_are_cut_or_encoded() {
        let config = serde_json::json!({"token": "s3cret-tok"});
        let r = Redactor::new(&["token".into()], config.as_object().unwrap());
        // Binary: the secret's bytes inside a non-UTF-8 answer.
        let b = BodyRecord::new(&[&[0xff][..], b"key=s3cret-tok"].concat(), &r);
        let decoded = base64::engine::general_purpose::STANDARD.decode(&b.data).unwrap();
        assert_eq!((&*b.encoding, String::from_utf8_lossy(&decoded[1..]).as_ref()), ("base64", "key=[redacted]"));
        // Cut by the truncation: half a secret at the end is not kept either.
        let cut = format!("{}s3cret-tok", "a".repeat(MAX_TRACE_BODY - 5));
        let b = BodyRecord::new(cut.as_bytes(), &r);
        assert!(b.truncated && !b.data.contains("s3cre"), "{}", &b.data[b.data.len() - 12..]);
        assert_eq!(b.size, cut.len(), "the size is the body's own");
    }
}
