//! A small blocking HTTP client API. Adapters build [`Request`]s and hand them to a
//! [`Transport`]: wasi-http inside a component, ureq natively, a recorder in unit tests.

use crate::error::excerpt;
use crate::CrmError;
use serde::de::DeserializeOwned;

/// Largest response body an adapter reads unless it asks for another cap. CRM answers are
/// small JSON documents; a bigger body is a misbehaving CRM, and reading it costs memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The HTTP methods adapters send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: idempotent by default.
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name, `GET`.
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

/// A request to the CRM, built step by step: `Request::get(url).bearer(token).send(http)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Absolute URL. Adapters always use the CRM's real production URL; the host decides
    /// where it really goes.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The response body is refused beyond this many bytes.
    pub max_response_bytes: usize,
    /// Safe to send again: the host may retry it on connection errors, 429, 502, 503 and
    /// 504. Only GET is idempotent by default; mark a POST that only reads (a search), or a
    /// PUT or DELETE the CRM treats as idempotent, with [`Request::idempotent`]. Never mark a
    /// create.
    pub idempotent: bool,
}

impl Request {
    /// A request with no headers or body (idempotent when `GET`).
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

    /// A `GET` (idempotent).
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `POST` (not idempotent unless marked).
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` (not idempotent unless marked).
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// A `PATCH` (not idempotent unless marked).
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new(Method::Patch, url)
    }

    /// A `DELETE` (not idempotent unless marked).
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: impl AsRef<str>) -> Self {
        self.header("authorization", format!("Bearer {}", token.as_ref()))
    }

    /// Adds a header.
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

    /// A JSON body, from anything serde serialises (a `json!` value, a struct of the CRM's
    /// shape).
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Self {
        let mut r = self.header("content-type", "application/json");
        // Serialising a value into memory fails only for maps with non-string keys.
        r.body = serde_json::to_vec(value).unwrap_or_default();
        r
    }

    /// Marks the request as safe to retry (see [`Request::idempotent`](Request#structfield.idempotent)).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Marks the request as unsafe to retry: a GET that creates something.
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// The URL's path, without the query (`/v1/contacts`).
    pub fn path(&self) -> &str {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        path.split(['?', '#']).next().unwrap_or(path)
    }

    /// The URL's query, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::Url::parse(&self.url).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default()
    }

    /// The body as a decoded form, in order.
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        Form::decode(&self.body).pairs
    }

    /// The body as JSON (tests of JSON CRMs read what an adapter sent with it).
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// A header's value (names compare case-insensitively).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Refuses a response body over `n` bytes (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Sends it with `http`.
    pub fn send(self, http: &dyn Transport) -> Result<Response, CrmError> {
        http.send(self)
    }
}

/// The CRM's answer, read whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON; an unreadable body is an `upstream` error carrying an excerpt.
    pub fn json<T: DeserializeOwned + 'static>(&self) -> Result<T, CrmError> {
        let bad = |e: &dyn std::fmt::Display| {
            CrmError::upstream(self.status, format!("response is not the expected JSON: {e}"), &self.body)
        };
        // Read without recursion (`crate::json`): a CRM's answer may nest as deep as JSON
        // allows, and the adapter's stack is small. A `Value` is the answer as read; any
        // other type is made from it, as deep as that type goes.
        let mut value = Some(crate::json::from_slice(&self.body).map_err(|e| bad(&e))?);
        if let Some(v) = (&mut value as &mut dyn std::any::Any).downcast_mut::<Option<T>>() {
            return Ok(v.take().expect("the value read"));
        }
        serde_json::from_value(value.take().expect("the value read")).map_err(|e| bad(&e))
    }

    /// The body as JSON, or `T::default()` when there is none (204, or an empty 2xx body: what
    /// many JSON CRMs answer to an update or a delete).
    pub fn json_or_empty<T: DeserializeOwned + Default + 'static>(&self) -> Result<T, CrmError> {
        if self.status == 204 || self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        self.json()
    }

    /// Turns a non-2xx answer into the matching error: 401/403 `unauthorized`, 429
    /// `rate-limited` (with `Retry-After` in seconds), anything else `upstream`, a 404
    /// included: for an RPC-style CRM (form posts to fixed endpoints) a 404 means a wrong
    /// URL, not a missing record. A REST CRM wants [`Response::check`] and [`ErrorMapping`].
    pub fn error_for_status(self) -> Result<Response, CrmError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(self.status_error())
    }

    /// The error a non-success answer stands for (see [`Response::error_for_status`]).
    pub fn status_error(&self) -> CrmError {
        match self.status {
            401 | 403 => {
                CrmError::Unauthorized(format!("CRM refused the credentials (HTTP {}): {}", self.status, excerpt(&self.body)))
            }
            429 => CrmError::RateLimited {
                message: format!("CRM is rate limiting (HTTP 429): {}", excerpt(&self.body)),
                retry_after_ms: self.header("retry-after").and_then(|v| parse_wait(v, false, None)),
            },
            s => CrmError::upstream(s, format!("unexpected HTTP status {s}"), &self.body),
        }
    }

    /// A 2xx answer as it is; anything else as the error `mapping` makes of it (`now`, the
    /// call's time, reads a `Retry-After` given as an HTTP date).
    pub fn check(self, mapping: &ErrorMapping, now: crate::Timestamp) -> Result<Response, CrmError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(mapping.error(&self, Some(now)))
    }

    /// The CRM's own message in a JSON error body, from the shapes CRMs use: `{"message"}`,
    /// `{"error": "..."}`, `{"error": {"message"}}`, `{"errors": [{"message"}]}`,
    /// `{"detail"}`, `{"error_description"}`, `{"title"}`.
    pub fn error_message(&self) -> Option<String> {
        let v = crate::json::from_slice(&self.body).ok()?;
        let text = |v: &serde_json::Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let e = &v["error"];
        text(&v["message"])
            .or_else(|| text(e))
            .or_else(|| text(&e["message"]))
            .or_else(|| text(&v["errors"][0]["message"]))
            .or_else(|| text(&v["errors"][0]))
            .or_else(|| text(&v["detail"]))
            .or_else(|| text(&v["error_description"]))
            .or_else(|| text(&v["title"]))
    }
}

/// How an adapter turns a CRM's error answers into [`CrmError`]s: the defaults, a header of
/// the CRM's own that says when to retry, and a hook that decides first.
///
/// ```
/// # use crm_sdk::{CrmError, ErrorMapping, Response};
/// fn hubspot(r: &Response) -> Option<CrmError> {
///     (r.status == 400 && r.text().contains("INVALID_EMAIL")).then(|| CrmError::invalid_params("email", "HubSpot refuses it"))
/// }
/// const ERRORS: ErrorMapping = ErrorMapping::DEFAULT.retry_header("x-hubspot-ratelimit-interval-milliseconds").hook(hubspot);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorMapping {
    retry_header: Option<&'static str>,
    hook: Option<fn(&Response) -> Option<CrmError>>,
}

impl ErrorMapping {
    /// 401/403 `unauthorized`, 404 `not_found`, 429 `rate_limited` (with `Retry-After` in
    /// seconds or as an HTTP date), anything else `upstream` (with the status and an excerpt
    /// of the body: 409 conflicts and 5xx among them). Messages carry the CRM's own words
    /// when its body says them ([`Response::error_message`]).
    pub const DEFAULT: ErrorMapping = ErrorMapping { retry_header: None, hook: None };

    /// Also read this header for how long to wait on a 429: seconds, an HTTP date, or, when
    /// its name ends in `milliseconds`, milliseconds.
    pub const fn retry_header(mut self, name: &'static str) -> Self {
        self.retry_header = Some(name);
        self
    }

    /// Asked first: `Some(error)` decides, `None` falls back to the rules above.
    pub const fn hook(mut self, hook: fn(&Response) -> Option<CrmError>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The error a non-2xx answer stands for.
    pub fn error(&self, r: &Response, now: Option<crate::Timestamp>) -> CrmError {
        if let Some(e) = self.hook.and_then(|hook| hook(r)) {
            return e;
        }
        let said = r.error_message().unwrap_or_else(|| excerpt(&r.body));
        match r.status {
            401 | 403 => CrmError::Unauthorized(format!("CRM refused the credentials (HTTP {}): {said}", r.status)),
            404 => CrmError::NotFound(format!("CRM has no such record (HTTP 404): {said}")),
            429 => {
                let retry_after_ms = self
                    .retry_header
                    .and_then(|h| Some((h, r.header(h)?)))
                    .and_then(|(h, v)| parse_wait(v, h.ends_with("milliseconds"), now))
                    .or_else(|| parse_wait(r.header("retry-after")?, false, now));
                CrmError::RateLimited { message: format!("CRM is rate limiting (HTTP 429): {said}"), retry_after_ms }
            }
            s => CrmError::upstream(s, if s == 409 { format!("conflict: {said}") } else { said }, &r.body),
        }
    }
}

/// A wait in ms: a number (of seconds, or of ms), or an HTTP date measured from `now`.
fn parse_wait(v: &str, millis: bool, now: Option<crate::Timestamp>) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(if millis { n } else { n.saturating_mul(1000) });
    }
    let at = crate::Timestamp::parse_http_date(v)?;
    let now = now.unwrap_or_else(crate::time::clock_now);
    Some(u64::try_from(at.unix_ms() - now.unix_ms()).unwrap_or(0))
}

/// Sends requests. Implementations map every failure to a [`CrmError`]: a denied host is
/// `egress-denied`, a timeout `timeout`, everything else below HTTP `transport`.
pub trait Transport {
    /// Sends `request` and reads the whole answer.
    fn send(&self, request: Request) -> Result<Response, CrmError>;
}

/// An ordered `application/x-www-form-urlencoded` body. Keys may repeat and may carry
/// brackets (`contact[first_name]`, `attachments[name]`); order is kept as appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Appends a JSON value as form text (see [`form_text`](crate::form_text)).
    pub fn push_value(&mut self, key: impl Into<String>, value: &serde_json::Value) -> &mut Self {
        self.push(key, crate::form_text(value))
    }

    /// Sets `key` to `value`: the first pair with that key keeps its place and takes the
    /// value, later pairs with the key go; a new key is appended.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.pairs.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.pairs[i].1 = value;
                let mut seen = 0;
                self.pairs.retain(|(k, _)| k != key || {
                    seen += 1;
                    seen == 1
                });
            }
            None => self.pairs.push((key.to_string(), value)),
        }
        self
    }

    /// Appends every pair, in order.
    pub fn extend<K: Into<String>, V: Into<String>>(&mut self, pairs: impl IntoIterator<Item = (K, V)>) -> &mut Self {
        self.pairs.extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Every value of `key`, in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The form as `application/x-www-form-urlencoded` text.
    pub fn encode(&self) -> String {
        let mut enc = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            enc.append_pair(k, v);
        }
        enc.finish()
    }

    /// Reads an `application/x-www-form-urlencoded` body.
    pub fn decode(body: &[u8]) -> Form {
        Form { pairs: form_urlencoded::parse(body).into_owned().collect() }
    }
}

/// `base` with `path` appended below its own path (`https://a.test/crm` + `webchat/api` ->
/// `https://a.test/crm/webchat/api`), the way a tenant's endpoint field is meant; the query
/// and fragment of `base` are dropped. `Url::join` would replace the last segment instead.
pub fn join_path(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
    url.set_path(&joined);
    url
}

/// `base` with `segments` appended below its own path, each percent-encoded as one segment
/// by the `url` crate: ids and names from params or CRM answers (`a/b`, `x?y`, `ä`) cannot
/// change the path or reach the query. `join_segments(&base, &["contacts", &id, "notes"])`.
pub fn join_segments(base: &url::Url, segments: &[&str]) -> url::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Compares secrets (webhook tokens) in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
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
    fn form_set_replaces_in_place_and_extend_appends() {
        let mut f = Form::new();
        f.push("a", "1").push("b", "2").push("a", "3");
        f.set("a", "x").set("c", "4").extend([("d", "5"), ("d", "6")]);
        let pairs: Vec<(&str, &str)> = f.pairs().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("a", "x"), ("b", "2"), ("c", "4"), ("d", "5"), ("d", "6")]);
        assert_eq!(f.get_all("d"), ["5", "6"]);
    }

    #[test]
    fn join_path_appends_below_the_base_path() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(join_path(&u("https://acme.planfix.com"), "webchat/api").as_str(), "https://acme.planfix.com/webchat/api");
        assert_eq!(join_path(&u("https://a.test/crm/?x=1"), "/webchat/api").as_str(), "https://a.test/crm/webchat/api");
        assert_eq!(join_path(&u("https://a.test:8443/crm"), "task/7").as_str(), "https://a.test:8443/crm/task/7");
    }

    #[test]
    fn recorded_requests_decode_their_query_and_form() {
        let mut f = Form::new();
        f.push("שם", "דנה כהן");
        let r = Request::post("https://x.test/a?by_phone=%2B972&q=a+b").form(&f);
        assert_eq!(r.query_pairs(), [("by_phone".to_string(), "+972".to_string()), ("q".into(), "a b".into())]);
        assert_eq!(r.form_pairs(), [("שם".to_string(), "דנה כהן".to_string())]);
        assert_eq!(r.header_value("Content-Type"), Some("application/x-www-form-urlencoded"));
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3creT"));
        assert!(!constant_time_eq("s3cret", "s3cret!"));
        assert!(!constant_time_eq("", "x"));
        assert!(constant_time_eq("", ""));
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

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response { status, headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), body: body.into() }
    }

    #[test]
    fn error_answers_map_by_status_with_the_crms_own_message() {
        let m = ErrorMapping::DEFAULT;
        let e = m.error(&answer(404, &[], r#"{"message":"Contact 7 not found"}"#), None);
        assert_eq!(e, CrmError::NotFound("CRM has no such record (HTTP 404): Contact 7 not found".into()));
        assert!(matches!(m.error(&answer(403, &[], r#"{"error":{"message":"bad token"}}"#), None), CrmError::Unauthorized(x) if x.ends_with("bad token")));
        assert!(matches!(m.error(&answer(409, &[], r#"{"errors":[{"message":"duplicate email"}]}"#), None),
            CrmError::Upstream { status: 409, message, .. } if message == "conflict: duplicate email"));
        assert!(matches!(m.error(&answer(503, &[], "down"), None), CrmError::Upstream { status: 503, .. }));
        assert_eq!(answer(500, &[], r#"{"detail":"boom"}"#).error_message().as_deref(), Some("boom"));
    }

    #[test]
    fn retry_after_is_read_in_seconds_as_a_date_or_from_the_crms_own_header() {
        let now = crate::Timestamp::from_unix_ms(1_767_000_060_000);
        let wait = |r: Response, m: &ErrorMapping| match r.check(m, now) {
            Err(CrmError::RateLimited { retry_after_ms, .. }) => retry_after_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(answer(429, &[("retry-after", "7")], ""), &ErrorMapping::DEFAULT), Some(7_000));
        assert_eq!(wait(answer(429, &[("retry-after", "Mon, 29 Dec 2025 09:21:30 GMT")], ""), &ErrorMapping::DEFAULT), Some(30_000));
        let own = ErrorMapping::DEFAULT.retry_header("x-ratelimit-reset-milliseconds");
        assert_eq!(wait(answer(429, &[("x-ratelimit-reset-milliseconds", "250")], ""), &own), Some(250));
        fn teapot(r: &Response) -> Option<CrmError> {
            (r.status == 418).then(|| CrmError::Internal("teapot".into()))
        }
        let hooked = ErrorMapping::DEFAULT.hook(teapot);
        assert_eq!(answer(418, &[], "").check(&hooked, now).unwrap_err(), CrmError::Internal("teapot".into()));
        assert!(matches!(answer(404, &[], "").check(&hooked, now), Err(CrmError::NotFound(_))), "the defaults after the hook");
    }

    #[test]
    fn json_crms_get_verbs_bearer_tokens_typed_bodies_and_empty_answers() {
        #[derive(serde::Serialize)]
        struct Contact<'a> {
            email: &'a str,
        }
        let r = Request::patch("https://api.crm.test/contacts/7").bearer("tok").json(&Contact { email: "a@b.c" });
        assert_eq!((r.method, r.header_value("authorization"), r.body.as_slice()), (Method::Patch, Some("Bearer tok"), &br#"{"email":"a@b.c"}"#[..]));
        assert!(!Request::delete("https://x.test/1").idempotent && !Request::put("https://x.test/1").idempotent);
        let v: serde_json::Value = answer(204, &[], "").json_or_empty().unwrap();
        assert_eq!(v, serde_json::Value::Null);
        let v: serde_json::Value = answer(200, &[], r#"{"id":1}"#).json_or_empty().unwrap();
        assert_eq!(v["id"], 1);
    }

    #[test]
    fn segments_are_encoded_one_by_one() {
        let base = url::Url::parse("https://api.crm.test/v3/?x=1").unwrap();
        let u = join_segments(&base, &["contacts", "a/b?c=d", "notes"]);
        assert_eq!(u.as_str(), "https://api.crm.test/v3/contacts/a%2Fb%3Fc=d/notes");
    }
}
