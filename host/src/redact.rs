//! Redaction: every secret crmConfig value (the fields an adapter marks secret), in each
//! spelling it takes on the wire, replaced by `[redacted]` before anything leaves a call:
//! failure messages, traces, logs.

use serde_json::{Map, Value};

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
}
