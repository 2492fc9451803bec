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

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn replies_come_whole_and_in_order() {
        let http = Recorder::new()
            .reply_with_headers(429, &[("Retry-After", "3"), ("X-Rate", "0")], "slow down")
            .respond(Response { status: 204, headers: Vec::new(), body: Vec::new() })
            .fail(CrmError::Timeout("no answer".into()));
        let first = Request::get("https://crm.test/a").send(&http).unwrap();
        assert_eq!((first.status, first.header("retry-after"), first.header("x-rate")), (429, Some("3"), Some("0")));
        assert_eq!(first.headers[0].0, "retry-after", "names lowercase, as every transport gives them");
        assert_eq!(Request::post("https://crm.test/b").send(&http).unwrap().status, 204);
        assert_eq!(Request::get("https://crm.test/c").send(&http).unwrap_err().kind(), "timeout");
        let urls: Vec<String> = http.requests().into_iter().map(|r| r.url).collect();
        assert_eq!(urls, ["https://crm.test/a", "https://crm.test/b", "https://crm.test/c"]);
    }

    #[test]
    fn replies_never_asked_for_fail_the_test() {
        let http = Recorder::new().reply(200, "{}").reply(200, "{}");
        Request::get("https://crm.test/a").send(&http).unwrap();
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(http)));
        let message = dropped.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("1 queued replies were never asked for"), "{message}");
    }
}
