//! Redaction: every secret crmConfig value (the fields an adapter marks secret), in each
//! spelling it takes on the wire, replaced by `[redacted]` before anything leaves a call:
//! failure messages, traces, logs.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Shown instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Replaces secret values, and the ways they get encoded on the wire, in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    /// The values of `secret_fields` in `crm_config` (strings, or numbers as text).
    pub fn new(secret_fields: &[String], crm_config: &Map<String, Value>) -> Self {
        let mut needles = Vec::new();
        for field in secret_fields {
            let raw = match crm_config.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            if raw.is_empty() {
                continue;
            }
            let form: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            let percent = form.replace('+', "%20");
            let json = Value::String(raw.clone()).to_string();
            let json = json[1..json.len() - 1].to_string();
            for n in [raw, form, percent, json] {
                if !needles.contains(&n) {
                    needles.push(n);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts bytes that need not be text (a binary body), before they are cut or encoded,
    /// so that neither can split a secret out of a needle's reach.
    pub fn bytes<'a>(&self, b: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out = Cow::Borrowed(b);
        for n in &self.needles {
            let n = n.as_bytes();
            if out.windows(n.len()).any(|w| w == n) {
                let mut replaced = Vec::with_capacity(out.len());
                let mut rest: &[u8] = &out;
                while let Some(i) = rest.windows(n.len()).position(|w| w == n) {
                    replaced.extend_from_slice(&rest[..i]);
                    replaced.extend_from_slice(REDACTED.as_bytes());
                    rest = &rest[i + n.len()..];
                }
                replaced.extend_from_slice(rest);
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// A header value: as text, and a `Basic` credential whose decoded `user:password` holds a
    /// secret is redacted whole (base64 hides it from [`Redactor::text`]).
    pub fn header(&self, value: &str) -> String {
        if let Some((scheme, encoded)) = value.split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("basic")) {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            if matches!(self.bytes(&decoded), Cow::Owned(_)) {
                return format!("{scheme} {REDACTED}");
            }
        }
        self.text(value)
    }

    /// Redacts every string (and key) in a JSON value.
    pub fn json(&self, v: &Value) -> Value {
        if self.needles.is_empty() {
            return v.clone();
        }
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (self.text(k), self.json(x))).collect()),
            other => other.clone(),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_raw_form_and_percent_encoded_secrets() {
        let config = json!({"token": "s3c ret+/x", "chat": "77", "empty": ""});
        let r = Redactor::new(&["token".into(), "empty".into()], config.as_object().unwrap());
        assert_eq!(r.text("a=s3c ret+/x"), "a=[redacted]");
        assert_eq!(r.text("access_key=s3c+ret%2B%2Fx&chat=77"), "access_key=[redacted]&chat=77");
        assert_eq!(r.text("/p?k=s3c%20ret%2B%2Fx"), "/p?k=[redacted]");
        assert_eq!(r.json(&json!({"s3c ret+/x": ["s3c ret+/x", 1]})), json!({"[redacted]": ["[redacted]", 1]}));
        assert_eq!(r.text("77"), "77", "only secret fields are redacted");
    }

    #[test]
    fn bytes_and_basic_credentials_are_redacted() {
        let config = json!({"token": "s3cret-tok"});
        let r = Redactor::new(&["token".into()], config.as_object().unwrap());
        let body = [&[0xff, 0x00][..], b"s3cret-tok", &[0xfe]].concat();
        let out = r.bytes(&body);
        assert!(!out.windows(10).any(|w| w == b"s3cret-tok") && out.starts_with(&[0xff, 0x00]), "{out:?}");
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("user:s3cret-tok"));
        assert_eq!(r.header(&basic), "Basic [redacted]");
        let other = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("user:other"));
        assert_eq!(r.header(&other), other, "only a credential holding a secret");
    }
}
