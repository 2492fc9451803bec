//! Answers a replayed call's outbound requests from its recording. A request matches a
//! recorded exchange by method, URL (query order-insensitive) and body (JSON and form fields
//! compared structurally), after the caller redacted it as recordings are redacted; each
//! recorded exchange answers once, in order among identical requests. What matches nothing
//! is kept, with the closest recorded request and what differs.

use crate::trace::Exchange;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Mutex;

/// What a matched request gets back: the recorded response, or the recorded transport error
/// (`ErrorCode`'s debug text, as the trace holds it).
#[derive(Debug, Clone)]
pub enum Answer {
    Response { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    Failed(String),
}

/// A request of the replayed version that no recorded exchange answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Unmatched {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest: Option<Closest>,
    pub difference: String,
}

/// The recorded request most like an unmatched one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Closest {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Shown of a recorded body in a report.
const BODY_EXCERPT: usize = 2048;

struct Recorded {
    method: String,
    url: String,
    body: Vec<u8>,
    answer: Answer,
}

/// One replayed execution's view of its recording.
pub struct Replayer {
    recorded: Vec<Recorded>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: Vec<bool>,
    unmatched: Vec<Unmatched>,
}

impl Replayer {
    /// Why a recording cannot answer a replay (an exchange whose request or answer was not
    /// kept whole), if it cannot.
    pub fn incomplete(exchanges: &[Exchange]) -> Option<String> {
        exchanges.iter().find_map(|e| {
            let cut = e.request_body.as_ref().is_some_and(|b| b.truncated) || e.response_body.as_ref().is_some_and(|b| b.truncated);
            let what = format!("{} {}", e.method, e.url);
            if e.omitted {
                Some(format!("the recording left out the bodies of {what} (the call's trace was full)"))
            } else if cut {
                Some(format!("a body of {what} was larger than a recording keeps"))
            } else if e.status.is_none() && e.error.is_none() {
                Some(format!("the recording of {what} has neither an answer nor an error"))
            } else {
                None
            }
        })
    }

    pub fn new(exchanges: &[Exchange]) -> Self {
        let recorded: Vec<Recorded> = exchanges
            .iter()
            .map(|e| Recorded {
                method: e.method.clone(),
                url: e.url.clone(),
                body: e.request_body.as_ref().map(|b| b.bytes()).unwrap_or_default(),
                answer: match (e.status, &e.error) {
                    (Some(status), _) => Answer::Response {
                        status,
                        headers: e.response_headers.clone(),
                        body: e.response_body.as_ref().map(|b| b.bytes()).unwrap_or_default(),
                    },
                    (None, error) => Answer::Failed(error.clone().unwrap_or_default()),
                },
            })
            .collect();
        let state = State { used: vec![false; recorded.len()], unmatched: Vec::new() };
        Replayer { recorded, state: Mutex::new(state) }
    }

    /// The recorded answer to a request (its URL and body redacted with the tenant's
    /// secrets), or `None` when no unused recorded exchange matches (then kept as unmatched).
    pub fn answer(&self, method: &str, url: &str, body: &[u8]) -> Option<Answer> {
        let mut state = crate::lock(&self.state);
        let found = self
            .recorded
            .iter()
            .enumerate()
            .find(|(i, r)| !state.used[*i] && r.method == method && same_url(&r.url, url) && body_difference(&r.body, body).is_none());
        if let Some((i, r)) = found {
            state.used[i] = true;
            return Some(r.answer.clone());
        }
        let unmatched = self.closest(method, url, body, &state.used);
        state.unmatched.push(unmatched);
        None
    }

    /// Every request that matched nothing, in order.
    pub fn unmatched(&self) -> Vec<Unmatched> {
        crate::lock(&self.state).unmatched.clone()
    }

    /// The recorded requests this execution made, by their place in the recording
    /// (`{"0": "POST https://…", …}`, as [`recorded_requests`] lists them all).
    pub fn requests(&self) -> serde_json::Map<String, Value> {
        let state = crate::lock(&self.state);
        request_list(self.recorded.iter().map(|r| (r.method.as_str(), r.url.as_str())), |i| state.used[i])
    }

    fn closest(&self, method: &str, url: &str, body: &[u8], used: &[bool]) -> Unmatched {
        let scored = self.recorded.iter().enumerate().map(|(i, r)| {
            let mut differences = Vec::new();
            let mut score = 0;
            if r.method == method {
                score += 4;
            } else {
                differences.push(format!("method: {} recorded, {method} sent", r.method));
            }
            if same_url(&r.url, url) {
                score += 4;
            } else {
                if url_path(&r.url) == url_path(url) {
                    score += 2;
                }
                differences.push(format!("url: {} recorded, {url} sent", r.url));
            }
            match body_difference(&r.body, body) {
                None => score += 1,
                Some(d) => differences.push(d),
            }
            if used[i] && differences.is_empty() {
                differences.push("the same request was recorded, but fewer times: its answers were used up".into());
            }
            // Unused exchanges first among equals, then the earliest.
            (score * 2 + usize::from(!used[i]), std::cmp::Reverse(i), r, differences)
        });
        let Some((_, _, r, differences)) = scored.max_by_key(|(score, i, ..)| (*score, *i)) else {
            return Unmatched {
                method: method.into(),
                url: url.into(),
                closest: None,
                difference: "the recorded call made no outbound request".into(),
            };
        };
        let excerpt = String::from_utf8_lossy(&r.body[..r.body.len().min(BODY_EXCERPT)]).into_owned();
        Unmatched {
            method: method.into(),
            url: url.into(),
            closest: Some(Closest { method: r.method.clone(), url: r.url.clone(), body: (!excerpt.is_empty()).then_some(excerpt) }),
            difference: differences.join("; "),
        }
    }
}

/// Every request of a recording, by its place in it (`{"0": "POST https://…", …}`).
pub fn recorded_requests(exchanges: &[Exchange]) -> serde_json::Map<String, Value> {
    request_list(exchanges.iter().map(|e| (e.method.as_str(), e.url.as_str())), |_| true)
}

fn request_list<'a>(requests: impl Iterator<Item = (&'a str, &'a str)>, keep: impl Fn(usize) -> bool) -> serde_json::Map<String, Value> {
    requests.enumerate().filter(|(i, _)| keep(*i)).map(|(i, (method, url))| (i.to_string(), Value::String(format!("{method} {url}")))).collect()
}

/// The URL without its query, and its query pairs sorted.
fn url_key(u: &str) -> (String, Vec<(String, String)>) {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            let mut pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
            pairs.sort();
            parsed.set_query(None);
            parsed.set_fragment(None);
            (parsed.to_string(), pairs)
        }
        Err(_) => (u.to_string(), Vec::new()),
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a == b || url_key(a) == url_key(b)
}

fn url_path(u: &str) -> String {
    url_key(u).0
}

/// What differs between a recorded body and a sent one, `None` when they are the same:
/// equal bytes, equal JSON values (whatever the key order or spacing), or the same form
/// fields (whatever their order).
pub(super) fn body_difference(recorded: &[u8], sent: &[u8]) -> Option<String> {
    if recorded == sent {
        return None;
    }
    if let (Ok(a), Ok(b)) = (serde_json::from_slice::<Value>(recorded), serde_json::from_slice::<Value>(sent)) {
        if a == b {
            return None;
        }
        let mut changes = Vec::new();
        super::diff::diff_values("body", &a, &b, &mut changes);
        let shown: Vec<String> =
            changes.iter().take(5).map(|c| format!("{}: {} recorded, {} sent", c.path, c.recorded, c.candidate)).collect();
        return Some(shown.join("; "));
    }
    if let (Some(mut a), Some(mut b)) = (form(recorded), form(sent)) {
        a.sort();
        b.sort();
        if a == b {
            return None;
        }
        let mut shown = Vec::new();
        for (k, v) in &a {
            match b.iter().find(|(k2, _)| k2 == k) {
                None => shown.push(format!("body field {k} recorded ({v:?}), not sent")),
                Some((_, v2)) if v2 != v => shown.push(format!("body field {k}: {v:?} recorded, {v2:?} sent")),
                _ => {}
            }
        }
        for (k, v) in b.iter().filter(|(k, _)| !a.iter().any(|(k2, _)| k2 == k)) {
            shown.push(format!("body field {k} sent ({v:?}), not recorded"));
        }
        if shown.is_empty() {
            shown.push("the body's form fields repeat differently".into());
        }
        return Some(shown.into_iter().take(5).collect::<Vec<_>>().join("; "));
    }
    Some(format!("the body differs ({} bytes recorded, {} sent)", recorded.len(), sent.len()))
}

/// Form fields, when the body reads as `application/x-www-form-urlencoded`.
fn form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.is_empty() || !text.contains('=') || text.contains(|c: char| c.is_whitespace()) {
        return None;
    }
    Some(form_urlencoded::parse(body).into_owned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;
    use crate::trace::BodyRecord;

    fn exchange(method: &str, url: &str, body: &str, status: u16, answer: &str) -> Exchange {
        let r = Redactor::default();
        Exchange {
            attempt: 1,
            method: method.into(),
            url: url.into(),
            routed_to: None,
            request_headers: Vec::new(),
            request_body: Some(BodyRecord::new(body.as_bytes(), &r)),
            status: Some(status),
            response_headers: vec![("content-type".into(), "application/json".into())],
            response_body: Some(BodyRecord::new(answer.as_bytes(), &r)),
            omitted: false,
            error: None,
            started_ms: 0.0,
            duration_ms: 1.0,
        }
    }

    fn status(a: Option<Answer>) -> Option<u16> {
        match a {
            Some(Answer::Response { status, .. }) => Some(status),
            _ => None,
        }
    }

    #[test]
    fn requests_match_structurally_and_each_answer_is_used_once_in_order() {
        let r = Replayer::new(&[
            exchange("POST", "https://crm.test/a?x=1&y=2", "b=2&a=1", 503, "{}"),
            exchange("POST", "https://crm.test/a?x=1&y=2", "b=2&a=1", 200, "{}"),
            exchange("PUT", "https://crm.test/j", r#"{"a":1,"b":[1,2]}"#, 201, "{}"),
        ]);
        assert_eq!(status(r.answer("PUT", "https://crm.test/j", br#"{ "b": [1, 2], "a": 1 }"#)), Some(201), "JSON in another order");
        assert_eq!(status(r.answer("POST", "https://crm.test/a?y=2&x=1", b"a=1&b=2")), Some(503), "query and form in another order");
        assert_eq!(status(r.answer("POST", "https://crm.test/a?x=1&y=2", b"a=1&b=2")), Some(200), "the second, in order");
        assert_eq!(status(r.answer("POST", "https://crm.test/a?x=1&y=2", b"a=1&b=2")), None, "used up");
        let u = r.unmatched();
        assert_eq!(u.len(), 1);
        assert!(u[0].difference.contains("used up"), "{u:?}");
    }

    #[test]
    fn an_unmatched_request_names_the_closest_recording_and_what_differs() {
        let r = Replayer::new(&[
            exchange("GET", "https://crm.test/contacts?phone=1", "", 200, "[]"),
            exchange("POST", "https://crm.test/leads", "name=Dana&phone=1", 200, "{}"),
        ]);
        assert!(r.answer("POST", "https://crm.test/leads", b"name=Dana&phone=2").is_none());
        assert!(r.answer("DELETE", "https://crm.test/other", b"").is_none());
        let u = r.unmatched();
        let closest = u[0].closest.as_ref().unwrap();
        assert_eq!((closest.method.as_str(), closest.url.as_str()), ("POST", "https://crm.test/leads"));
        assert_eq!(u[0].difference, r#"body field phone: "1" recorded, "2" sent"#);
        assert!(u[1].difference.contains("method: GET recorded, DELETE sent"), "{:?}", u[1]);
    }

    #[test]
    fn bodies_compare_as_json_forms_or_bytes() {
        assert_eq!(body_difference(b"", b""), None);
        assert_eq!(body_difference(br#"{"a":{"b":1}}"#, br#"{"a":{"b":2}}"#).unwrap(), "body.a.b: 1 recorded, 2 sent");
        assert!(body_difference(b"x=1", b"x=1&y=2").unwrap().contains("body field y sent"));
        assert_eq!(body_difference(b"\x00\x01", b"\x00\x02").unwrap(), "the body differs (2 bytes recorded, 2 sent)");
    }

    #[test]
    fn recordings_with_cut_or_omitted_exchanges_cannot_answer() {
        let mut e = exchange("GET", "https://crm.test/", "", 200, "{}");
        assert_eq!(Replayer::incomplete(std::slice::from_ref(&e)), None);
        e.omitted = true;
        assert!(Replayer::incomplete(&[e]).unwrap().contains("left out"));
    }
}
