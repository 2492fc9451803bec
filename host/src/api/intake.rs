//! Request bodies: read whole, within the route's cap, within `body_timeout` of the head,
//! and only while the host-wide budget of body bytes in flight has room for them. The
//! budget counts the buffers bodies are read into (a [`CountedBuffer`]) and is held until
//! the answer is made, so bodies being read or held by handlers never add
//! up to more than `--max-inflight-body-bytes`. Routes take their body through this layer, after
//! the guard has checked credentials: a caller without them never gets here.

use crate::error::HostError;
use crate::limits::{CountedBuffer, FrontDoor, Overflow, Room};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget of body bytes in flight, split so that unauthenticated webhooks can never
/// take the room of authenticated requests.
pub(super) struct Intake {
    authenticated: Budget,
    webhooks: Budget,
    body_timeout: Duration,
}

#[derive(Clone)]
struct Budget {
    bytes: Arc<Semaphore>,
    size: usize,
}

impl Budget {
    fn new(size: usize) -> Self {
        Budget { bytes: Arc::new(Semaphore::new(size.min(Semaphore::MAX_PERMITS))), size }
    }

    fn take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }
}

/// What one body holds of its budget.
struct Share {
    budget: Budget,
    held: OwnedSemaphorePermit,
}

impl Room for Share {
    fn take(&mut self, bytes: usize) -> bool {
        self.budget.take(bytes).map(|more| self.held.merge(more)).is_some()
    }
}

/// What one route takes: its cap, from which budget.
#[derive(Clone)]
pub(super) struct Taking {
    intake: Arc<Intake>,
    what: &'static str,
    cap: usize,
    webhook: bool,
}

impl Intake {
    pub fn new(front: &FrontDoor) -> Arc<Self> {
        let webhooks = front.max_inflight_body_bytes / 8;
        Arc::new(Intake {
            authenticated: Budget::new(front.max_inflight_body_bytes - webhooks),
            webhooks: Budget::new(webhooks),
            body_timeout: front.body_timeout,
        })
    }

    /// A route whose body (`what`, for messages) may hold `cap` bytes.
    pub fn taking(self: &Arc<Self>, what: &'static str, cap: usize) -> Taking {
        Taking { intake: self.clone(), what, cap, webhook: false }
    }

    /// The webhook route, on the webhooks' share of the budget.
    pub fn taking_webhooks(self: &Arc<Self>, cap: usize) -> Taking {
        Taking { intake: self.clone(), what: "webhook body", cap, webhook: true }
    }
}

/// The layer: buffers the body, then hands the request on with the bytes in it and holds
/// their share of the budget until the answer is made.
pub(super) async fn read_body(State(taking): State<Taking>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, Body::empty())).await;
    }
    let intake = &taking.intake;
    let budget = if taking.webhook { &intake.webhooks } else { &intake.authenticated };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let cap = taking.cap.min(budget.size);
    let too_large = || HostError::PayloadTooLarge { what: taking.what, limit: cap };
    if declared.is_some_and(|n| n > cap as u64) {
        return closing(too_large());
    }
    // Refused before a byte is read if the declared body does not fit now; otherwise the
    // budget is taken as the buffer grows (by doubling, to at most the declared length), so
    // a client that announces much and sends little holds little.
    if declared.is_some_and(|n| n > budget.bytes.available_permits() as u64) {
        return closing(overloaded(&taking));
    }
    let Some(held) = budget.take(0) else { return closing(overloaded(&taking)) };
    let announced = declared.map(|n| n as usize);
    let mut bytes = CountedBuffer::new(Share { budget: budget.clone(), held }, cap, announced);
    let deadline = tokio::time::Instant::now() + intake.body_timeout;
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return closing(HostError::RequestTimeout(format!(
                    "the request body did not arrive within {} s of its head (after {} bytes)",
                    intake.body_timeout.as_secs_f64(),
                    bytes.len()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return closing(HostError::BadRequest(format!("the request body could not be read: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        match bytes.push(&data) {
            Ok(()) => {}
            Err(Overflow::Cap) => return closing(too_large()),
            Err(Overflow::Room) => return closing(overloaded(&taking)),
        }
    }
    let (bytes, share) = bytes.finish();
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(share);
    response
}

fn overloaded(taking: &Taking) -> HostError {
    let (size, whose) = match taking.webhook {
        true => (taking.intake.webhooks.size, "webhooks"),
        false => (taking.intake.authenticated.size, "authenticated requests"),
    };
    HostError::Overloaded(format!(
        "the host holds as many request-body bytes as it may (the {size} bytes of --max-inflight-body-bytes that {whose} \
         may use); retry shortly"
    ))
}

/// A refusal after which the connection closes, so what the client still sends is not read.
fn closing(e: HostError) -> Response {
    let retry = matches!(e, HostError::Overloaded(_));
    let mut response = e.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if retry {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
