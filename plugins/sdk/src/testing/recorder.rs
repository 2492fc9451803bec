//! A [`Transport`] for unit tests: records every request and answers from a script. A reply
//! queued and never asked for fails the test when the recorder is dropped: the adapter made
//! fewer requests than the test expected.

use crate::{CrmError, Request, Response, Transport};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Answers requests in order from queued replies; records what was sent.
#[derive(Default)]
pub struct Recorder {
    replies: RefCell<VecDeque<Result<Response, CrmError>>>,
    requests: RefCell<Vec<Request>>,
}

impl Recorder {
    /// A recorder with nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an answer with `status` and `body`.
    pub fn reply(self, status: u16, body: impl Into<Vec<u8>>) -> Self {
        self.respond(Response { status, headers: Vec::new(), body: body.into() })
    }

    /// Queues a whole answer: status, headers (a `Retry-After`, a CRM's rate-limit header) and body.
    pub fn respond(self, response: Response) -> Self {
        self.replies.borrow_mut().push_back(Ok(response));
        self
    }

    /// Queues an answer with headers.
    pub fn reply_with_headers(self, status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        let headers = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        self.respond(Response { status, headers, body: body.into() })
    }

    /// Queues a JSON answer.
    pub fn reply_json(self, status: u16, body: serde_json::Value) -> Self {
        self.reply(status, body.to_string())
    }

    /// Queues a transport failure.
    pub fn fail(self, error: CrmError) -> Self {
        self.replies.borrow_mut().push_back(Err(error));
        self
    }

    /// Every request sent so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.borrow().clone()
    }

    /// The only request sent; panics unless exactly one was.
    pub fn single(&self) -> Request {
        let r = self.requests.borrow();
        assert_eq!(r.len(), 1, "expected exactly one request, got {}", r.len());
        r[0].clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let left = self.replies.borrow().len();
        if left > 0 && !std::thread::panicking() {
            panic!("Recorder: {left} queued replies were never asked for (the adapter sent fewer requests than expected)");
        }
    }
}

impl Transport for Recorder {
    fn send(&self, request: Request) -> Result<Response, CrmError> {
        let url = request.url.clone();
        self.requests.borrow_mut().push(request);
        self.replies
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| panic!("Recorder: no reply queued for {url}"))
    }
}
