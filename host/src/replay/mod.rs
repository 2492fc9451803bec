//! Replay: recorded production calls run again through another version of their adapter,
//! offline, and compared with what the recording says happened.
//!
//! ```text
//! recorded call (store, trace JSON) ──► skip? (body cut, tenant gone, config changed, exchange cut)
//!   │ the tenant's crmConfig and limits, the recorded body, the recorded wall-clock time
//!   ├─► baseline (the version that recorded it)  ─┐ outbound requests answered by a
//!   └─► candidate                                 ─┘ Replayer over the recording (answer.rs)
//!         │
//!         ▼ outcome vs recording (diff.rs); paths where the baseline already differs are noise
//!   same | changed | newFailure | fixed | unmatched | noisy | skipped  ──► report (report.rs)
//! ```
//!
//! Nothing a replay does leaves the host: the outbound hook ([`crate::outbound`]) hands every
//! request of a replayed call to its [`Replayer`] instead of the network. The orchestration
//! (which calls, which versions, the gate on deploys) is `service/replays.rs`.

mod answer;
mod diff;
mod report;

pub use answer::{recorded_requests, Answer, Replayer, Unmatched};
pub use diff::{diff_outcomes, is_under as is_noise, Change, MAX_CHANGES};
pub use report::{CallResult, ReplayHead, ReplayReport, ReplayRequest, Status, Summary, Verdict, VersionRef, MAX_REPLAY_CALLS};
