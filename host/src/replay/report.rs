//! What a replay is asked for and what it answers: the request body of
//! `POST /v1/adapters/{name}/versions/{digest}/replay`, and the report (stored as JSON, read
//! back by `GET .../replays/{id}`).

use super::{Change, Unmatched};
use serde::{Deserialize, Serialize};

/// Recorded calls one replay runs at most.
pub const MAX_REPLAY_CALLS: u32 = 5_000;
/// Recorded calls a replay runs when not told.
pub const DEFAULT_REPLAY_CALLS: u32 = 200;

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only these tenants' calls.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// Only these functions.
    #[serde(default)]
    pub functions: Option<Vec<String>>,
    /// Only calls started at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// The newest calls up to this many (default 200, at most 5,000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only these recorded calls (by `callId`).
    #[serde(default)]
    pub call_ids: Option<Vec<String>>,
}

impl ReplayRequest {
    pub fn last(n: u32) -> Self {
        ReplayRequest { limit: Some(n), ..Default::default() }
    }

    /// The number of calls asked for, checked.
    pub fn limit(&self) -> Result<u32, String> {
        match self.limit.unwrap_or(DEFAULT_REPLAY_CALLS) {
            n @ 1..=MAX_REPLAY_CALLS => Ok(n),
            n => Err(format!("limit: {n} is not within 1-{MAX_REPLAY_CALLS}")),
        }
    }
}

/// A version, as a report names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct VersionRef {
    pub digest: String,
    pub version: String,
}

/// How one replayed call compares with its recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// The candidate answered what the recording says.
    Same,
    /// It answered differently (see `diff`).
    Changed,
    /// The call completed when recorded; the candidate fails it.
    NewFailure,
    /// The call failed when recorded; the candidate completes it.
    Fixed,
    /// The candidate sent a request the recording cannot answer.
    Unmatched,
    /// Only values that the recording version does not reproduce either differ.
    Noisy,
    /// Not replayed (see `reason`).
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallResult {
    pub call_id: String,
    pub tenant: String,
    pub func_id: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Vec<Change>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<Vec<Unmatched>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CallResult {
    pub fn skipped(call_id: &str, tenant: &str, func_id: &str, reason: impl Into<String>) -> Self {
        CallResult {
            call_id: call_id.into(),
            tenant: tenant.into(),
            func_id: func_id.into(),
            status: Status::Skipped,
            diff: None,
            unmatched: None,
            reason: Some(reason.into()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub same: u32,
    pub changed: u32,
    pub new_failure: u32,
    pub fixed: u32,
    pub unmatched: u32,
    pub noisy: u32,
    pub skipped: u32,
}

impl Summary {
    pub fn of(results: &[CallResult]) -> Self {
        let mut s = Summary::default();
        for r in results {
            *match r.status {
                Status::Same => &mut s.same,
                Status::Changed => &mut s.changed,
                Status::NewFailure => &mut s.new_failure,
                Status::Fixed => &mut s.fixed,
                Status::Unmatched => &mut s.unmatched,
                Status::Noisy => &mut s.noisy,
                Status::Skipped => &mut s.skipped,
            } += 1;
        }
        s
    }

    /// `fail` when any call changed, newly fails or sent what the recording cannot answer.
    pub fn verdict(&self) -> Verdict {
        if self.changed + self.new_failure + self.unmatched > 0 {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// A report without its per-call results, as `GET /v1/adapters/{name}/replays` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayHead {
    pub id: String,
    pub adapter: String,
    pub created_at: String,
    pub candidate: VersionRef,
    /// The version that recorded most of the replayed calls (each call is compared with, and
    /// its noise measured by, the version that recorded it).
    pub baseline: VersionRef,
    /// Calls replayed (skipped ones included).
    pub calls: u32,
    pub summary: Summary,
    pub verdict: Verdict,
}

/// A whole report: its head, and a result per call.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayReport {
    #[serde(flatten)]
    pub head: ReplayHead,
    pub results: Vec<CallResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_new_failures_and_unmatched_requests_fail() {
        let result = |status| CallResult { status, ..CallResult::skipped("c", "t", "f", "") };
        for (status, verdict) in [
            (Status::Same, Verdict::Pass),
            (Status::Fixed, Verdict::Pass),
            (Status::Noisy, Verdict::Pass),
            (Status::Skipped, Verdict::Pass),
            (Status::Changed, Verdict::Fail),
            (Status::NewFailure, Verdict::Fail),
            (Status::Unmatched, Verdict::Fail),
        ] {
            assert_eq!(Summary::of(&[result(Status::Same), result(status)]).verdict(), verdict, "{status:?}");
        }
        assert_eq!(serde_json::to_value(Status::NewFailure).unwrap(), "newFailure");
    }

    #[test]
    fn the_limit_is_checked() {
        assert_eq!(ReplayRequest::default().limit(), Ok(200));
        assert!(ReplayRequest::last(5_001).limit().unwrap_err().contains("1-5000"));
        assert!(ReplayRequest::last(0).limit().is_err());
    }
}
