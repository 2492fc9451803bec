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
    exchanges: Mutex<Vec<Exchange>>,
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
        lock(&self.exchanges).push(e);
    }

    /// Every outbound attempt so far, in order; taken once the execution is over.
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        std::mem::take(&mut *lock(&self.exchanges))
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
