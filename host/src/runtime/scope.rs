//! What one execution (a call, a webhook, a deploy's describe) shares with its outbound
//! requests: who it is for (logs, metrics), its deadline, the redactor for what it records,
//! its per-call budgets, its time, and what happened on the way out (exchanges, denials).

use crate::error::FailureKind;
use crate::limits::CallBudget;
use crate::lock;
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::replay::Replayer;
use crate::trace::Exchange;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct CallScope {
    pub call_id: String,
    pub adapter: String,
    pub started: Instant,
    pub deadline: Instant,
    pub redactor: Redactor,
    pub metrics: Arc<Metrics>,
    /// Outbound requests and header entries spent, and the first limit that ended the call.
    pub budget: CallBudget,
    /// The wall-clock time the guest sees, in Unix ms: one time for the whole execution (its
    /// start), so a call is deterministic and a replay can give it the recorded call's.
    pub wall_ms: i64,
    /// When replaying: where outbound requests are answered from, instead of the network.
    pub replay: Option<Arc<Replayer>>,
    /// Every outbound attempt so far, as the items of the trace's `outbound` array (JSON):
    /// serialised on the guest's thread, where the exchange was made and is still in the
    /// cache, so that the trace writer on the API's thread copies one text instead of
    /// walking (and freeing) the two dozen blocks of each exchange another thread wrote.
    exchanges: Mutex<Vec<u8>>,
    /// Why requests were denied, for the failure message.
    denials: Mutex<Vec<String>>,
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
            budget: CallBudget::default(),
            wall_ms: crate::service::now_ms(),
            replay: None,
            exchanges: Mutex::default(),
            denials: Mutex::default(),
        }
    }

    /// The limit that ended the call, if one did: its failure kind and a message naming it.
    pub fn limit_hit(&self) -> Option<(FailureKind, String)> {
        self.budget.limit_hit()
    }

    pub fn record(&self, e: Exchange) {
        let mut items = lock(&self.exchanges);
        let sep = if items.is_empty() { b'[' } else { b',' };
        items.push(sep);
        serde_json::to_writer(&mut *items, &e).expect("an exchange serialises");
    }

    /// Every outbound attempt so far, in order, as a JSON array; taken once the execution
    /// is over.
    pub fn take_exchanges(&self) -> String {
        let mut items = std::mem::take(&mut *lock(&self.exchanges));
        if items.is_empty() {
            items.push(b'[');
        }
        items.push(b']');
        String::from_utf8(items).expect("serde_json writes UTF-8")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{CallTrace, Exchange};

    fn exchange(attempt: u32, status: Option<u16>) -> Exchange {
        Exchange {
            attempt,
            method: "POST".into(),
            url: "https://plando.co.il/contact_details".into(),
            routed_to: None,
            request_headers: vec![("content-type".into(), "application/json".into())],
            request_body: None,
            status,
            response_headers: Vec::new(),
            response_body: None,
            omitted: false,
            error: status.is_none().then(|| "ConnectionRefused".into()),
            started_ms: 0.5,
            duration_ms: 1.25,
        }
    }

    /// The exchanges are serialised as they are made; the stored trace reads back with all
    /// of them, in order, and with none when there were none.
    #[test]
    fn a_stored_trace_holds_every_exchange_in_order() {
        let scope = || CallScope::new("c1".into(), "plando".into(), Duration::from_secs(1), Redactor::default(), Arc::default());
        let trace = |outbound: &str| {
            let trace = CallTrace {
                call_id: "c1".into(),
                tenant: "acme".into(),
                func_id: "getCustomerDetails".into(),
                adapter: "plando".into(),
                version: "0.1.0".into(),
                digest: "sha256:00".into(),
                started_at_ms: 1,
                duration_ms: 2.0,
                config_digest: None,
                request: serde_json::value::RawValue::from_string(r#"{"chat":{"id":"c1"}}"#.into()).unwrap(),
                request_body: None,
                outbound: Vec::new(),
                outcome: "complete".into(),
                crm_data: Some(serde_json::value::RawValue::from_string(r#"{"id":"501"}"#.into()).unwrap()),
                error: None,
            };
            let stored = trace.into_record(outbound, Duration::from_millis(2)).trace;
            serde_json::from_str::<CallTrace>(&stored).unwrap_or_else(|e| panic!("{e}: {stored}"))
        };
        let none = scope();
        let read = trace(&none.take_exchanges());
        assert!(read.outbound.is_empty());
        assert_eq!(read.crm_data.as_deref().map(|d| d.get()), Some(r#"{"id":"501"}"#));

        let two = scope();
        two.record(exchange(1, None));
        two.record(exchange(2, Some(200)));
        let read = trace(&two.take_exchanges());
        let got: Vec<(u32, Option<u16>, Option<&str>)> = read.outbound.iter().map(|e| (e.attempt, e.status, e.error.as_deref())).collect();
        assert_eq!(got, [(1, None, Some("ConnectionRefused")), (2, Some(200), None)]);
        assert_eq!(read.outbound[1].request_headers, [("content-type".to_string(), "application/json".to_string())]);
        assert_eq!((read.call_id.as_str(), read.outcome.as_str()), ("c1", "complete"));
    }
}
