//! A small blocking HTTP client API. Adapters build [`Request`]s and hand them to a
//! [`Transport`]: wasi-http inside a component, ureq natively, a recorder in unit tests.

use crate::error::excerpt;
use crate::CrmError;
use serde::de::DeserializeOwned;

/// Largest response body an adapter reads unless it asks for another cap. CRM answers are
/// small JSON documents; a bigger body is a misbehaving CRM, and reading it costs memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    /// Absolute URL. Adapters always use the CRM's real production URL; the host decides
    /// where it really goes.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The response body is refused beyond this many bytes.
    pub max_response_bytes: usize,
    /// Safe to send again: the host may retry it on connection errors, 429, 502, 503 and
    /// 504. GET and HEAD are idempotent by default; mark a POST that only reads (a search)
    /// with [`Request::idempotent`]. Never mark a create.
    pub idempotent: bool,
}

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            idempotent: matches!(method, Method::Get),
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends query pairs, percent-encoded, to the URL.
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        let mut enc = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            enc.append_pair(k.as_ref(), v.as_ref());
        }
        let q = enc.finish();
        if !q.is_empty() {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            self.url = format!("{}{sep}{q}", self.url);
        }
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, form: &Form) -> Self {
        let mut r = self.header("content-type", "application/x-www-form-urlencoded");
        r.body = form.encode().into_bytes();
        r
    }

    /// A JSON body.
    pub fn json(self, value: &serde_json::Value) -> Self {
        let mut r = self.header("content-type", "application/json");
        r.body = value.to_string().into_bytes();
        r
    }

    /// Marks the request as safe to retry (see [`Request::idempotent`](Request#structfield.idempotent)).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Sends it with `http`.
    pub fn send(self, http: &dyn Transport) -> Result<Response, CrmError> {
        http.send(self)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON; an unreadable body is an `upstream` error carrying an excerpt.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CrmError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CrmError::upstream(self.status, format!("response is not the expected JSON: {e}"), &self.body)
        })
    }

    /// Turns a non-2xx answer into the matching error: 401/403 `unauthorized`, 429
    /// `rate-limited` (with `Retry-After`), anything else `upstream`.
    pub fn error_for_status(self) -> Result<Response, CrmError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(self.status_error())
    }

    /// The error a non-success answer stands for (see [`Response::error_for_status`]).
    pub fn status_error(&self) -> CrmError {
        match self.status {
            401 | 403 => CrmError::Unauthorized(format!(
                "CRM refused the credentials (HTTP {}): {}",
                self.status,
                excerpt(&self.body)
            )),
            429 => CrmError::RateLimited {
                message: format!("CRM is rate limiting (HTTP 429): {}", excerpt(&self.body)),
                retry_after_ms: self.header("retry-after").and_then(parse_retry_after),
            },
            s => CrmError::upstream(s, format!("unexpected HTTP status {s}"), &self.body),
        }
    }
}

/// `Retry-After` in seconds (HTTP dates are not honoured: adapters have no clock).
fn parse_retry_after(v: &str) -> Option<u64> {
    v.trim().parse::<u64>().ok().map(|s| s.saturating_mul(1000))
}

/// Sends requests. Implementations map every failure to a [`CrmError`]: a denied host is
/// `egress-denied`, a timeout `timeout`, everything else below HTTP `transport`.
pub trait Transport {
    fn send(&self, request: Request) -> Result<Response, CrmError>;
}

/// An ordered `application/x-www-form-urlencoded` body. Keys may repeat and may carry
/// brackets (`contact[first_name]`, `attachments[name]`); order is kept as appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), value.into()));
        self
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn encode(&self) -> String {
        let mut enc = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            enc.append_pair(k, v);
        }
        enc.finish()
    }

    pub fn decode(body: &[u8]) -> Form {
        Form { pairs: form_urlencoded::parse(body).into_owned().collect() }
    }
}

/// Strips everything but ASCII digits: `+972-50-123 4567` -> `972501234567`.
pub fn digits_only(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_keeps_order_brackets_and_repeats() {
        let mut f = Form::new();
        f.push("contact[first_name]", "דנה").push("attachments[name]", "a b.pdf").push("attachments[name]", "c&d");
        let enc = f.encode();
        assert_eq!(
            enc,
            "contact%5Bfirst_name%5D=%D7%93%D7%A0%D7%94&attachments%5Bname%5D=a+b.pdf&attachments%5Bname%5D=c%26d"
        );
        assert_eq!(Form::decode(enc.as_bytes()), f);
    }

    #[test]
    fn digits_only_strips_formatting() {
        assert_eq!(digits_only("+972-50-123 4567"), "972501234567");
        assert_eq!(digits_only("(050) 1234567"), "0501234567");
        assert_eq!(digits_only("none"), "");
    }

    #[test]
    fn query_appends_encoded_pairs() {
        let r = Request::get("https://x.test/a?b=1").query(&[("by_phone", "+972 5")]);
        assert_eq!(r.url, "https://x.test/a?b=1&by_phone=%2B972+5");
    }

    #[test]
    fn status_errors_have_kinds() {
        let resp = |status, headers: Vec<(String, String)>| Response { status, headers, body: b"nope".to_vec() };
        assert_eq!(resp(401, vec![]).status_error().kind(), "unauthorized");
        assert_eq!(
            resp(429, vec![("retry-after".into(), "7".into())]).status_error(),
            CrmError::RateLimited {
                message: "CRM is rate limiting (HTTP 429): nope".into(),
                retry_after_ms: Some(7000)
            }
        );
        assert_eq!(
            resp(502, vec![]).status_error(),
            CrmError::upstream(502, "unexpected HTTP status 502", b"nope")
        );
        assert!(resp(204, vec![]).error_for_status().is_ok());
    }

    #[test]
    fn json_errors_carry_an_excerpt() {
        let r = Response { status: 200, headers: vec![], body: b"<html>oops".to_vec() };
        match r.json::<serde_json::Value>() {
            Err(CrmError::Upstream { status: 200, body_excerpt, .. }) => assert_eq!(body_excerpt, "<html>oops"),
            other => panic!("{other:?}"),
        }
    }
}
