//! Redaction: every secret crmConfig value (the fields an adapter marks secret), in each
//! spelling it takes on the wire, replaced by `[redacted]` before anything leaves a call:
//! failure messages, traces, logs. The spellings: raw; form- and percent-encoded; JSON-escaped
//! (as serde writes it, and as PHP's `json_encode` does, `\/` and `\uXXXX`); base64, standard
//! and URL-safe, wherever the secret starts in the encoded bytes (so also inside `Basic`
//! credentials and base64 bodies that hold more than the secret).

use base64::Engine as _;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Shown instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Replaces secret values, and the ways they get encoded on the wire, in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole. Shared: a call's
    /// redactor goes to its scope and its trace.
    needles: std::sync::Arc<[String]>,
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
            let php = php_json(&json);
            let base64 = base64_cores(raw.as_bytes());
            for n in [raw, form, percent, json, php].into_iter().chain(base64) {
                if !n.is_empty() && !needles.contains(&n) {
                    needles.push(n);
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles: needles.into() }
    }

    pub fn text(&self, s: &str) -> String {
        self.replaced(s.as_bytes()).map_or_else(|| s.to_string(), text)
    }

    /// Redacts bytes that need not be text (a binary body), before they are cut or encoded,
    /// so that neither can split a secret out of a needle's reach.
    pub fn bytes<'a>(&self, b: &'a [u8]) -> Cow<'a, [u8]> {
        match self.replaced(b) {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(b),
        }
    }

    /// `b` with every needle replaced, longest first; `None` when none occurs (the common
    /// case, which allocates nothing).
    fn replaced(&self, b: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for n in self.needles.iter() {
            let n = n.as_bytes();
            let current = out.as_deref().unwrap_or(b);
            let mut at = find(current, n);
            if at.is_none() {
                continue;
            }
            let mut replaced = Vec::with_capacity(current.len());
            let mut from = 0;
            while let Some(i) = at {
                replaced.extend_from_slice(&current[from..from + i]);
                replaced.extend_from_slice(REDACTED.as_bytes());
                from += i + n.len();
                at = find(&current[from..], n);
            }
            replaced.extend_from_slice(&current[from..]);
            out = Some(replaced);
        }
        out
    }

    /// Whether any needle occurs in `b`.
    pub(crate) fn holds(&self, b: &[u8]) -> bool {
        self.needles.iter().any(|n| find(b, n.as_bytes()).is_some())
    }

    /// A header value: as text, and a `Basic` credential whose decoded `user:password` holds a
    /// secret is redacted whole (base64 hides it from [`Redactor::text`]).
    pub fn header(&self, value: &str) -> String {
        if let Some((scheme, encoded)) = value.split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("basic")) {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            if self.holds(&decoded) {
                return format!("{scheme} {REDACTED}");
            }
        }
        self.text(value)
    }

    /// Redacts every string (and key) in a JSON value, in place: only what holds a secret
    /// is rewritten.
    pub fn json(&self, mut v: Value) -> Value {
        if !self.needles.is_empty() {
            self.json_in_place(&mut v);
        }
        v
    }

    fn json_in_place(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(out) = self.replaced(s.as_bytes()) {
                    *s = text(out);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.json_in_place(x)),
            Value::Object(m) => {
                if m.keys().any(|k| self.holds(k.as_bytes())) {
                    *m = std::mem::take(m).into_iter().map(|(k, x)| (self.text(&k), x)).collect();
                }
                m.values_mut().for_each(|x| self.json_in_place(x));
            }
            _ => {}
        }
    }
}

/// Where `needle` first occurs in `haystack`. Texts here are short (headers, URLs, small
/// bodies): a plain scan for the first byte beats building a searcher per call.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = memchr::memchr(first, &haystack[from..]) {
        let at = from + i;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Redacted text back as a string. Needles are whole UTF-8 strings, so in text they match
/// only at character boundaries and what replaces them leaves it valid.
fn text(redacted: Vec<u8>) -> String {
    String::from_utf8(redacted).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A tenant's redactor for one version of its adapter (whose secret fields it depends on),
/// built by the first execution that needs it and kept with the tenant's record. A record
/// never changes (a changed tenant is a new record, with an empty cache), so neither does
/// what it caches. Boxed: a tenant never called costs one pointer and a lock.
#[derive(Default)]
pub struct RedactorCache(std::sync::Mutex<Option<Box<(String, Redactor)>>>);

impl RedactorCache {
    /// The redactor of `secret_fields` (of version `digest`) over `crm_config`.
    pub fn get(&self, digest: &str, secret_fields: &[String], crm_config: &Map<String, Value>) -> Redactor {
        let mut kept = crate::lock(&self.0);
        match kept.as_deref() {
            Some((d, r)) if d == digest => r.clone(),
            _ => {
                let r = Redactor::new(secret_fields, crm_config);
                *kept = Some(Box::new((digest.to_string(), r.clone())));
                r
            }
        }
    }
}

/// serde's JSON escaping redone as PHP's `json_encode` writes it by default: `/` as `\/`
/// and every character outside ASCII as `\uXXXX` (UTF-16).
fn php_json(serde_escaped: &str) -> String {
    let mut out = String::new();
    for c in serde_escaped.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out
}

/// The base64 text that `secret`'s bytes always encode to, whatever comes before and after
/// them: for each of the three positions it can start at within a 3-byte group, the
/// characters of the groups made of its bytes only. Standard and URL-safe alphabets. A core
/// under 8 characters (from a secret of under 8 bytes) would match unrelated text, so short
/// secrets are looked for in base64 only where they fill whole groups.
fn base64_cores(secret: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut cores = Vec::new();
    for offset in 0..3 {
        // `offset` bytes of whatever precede the secret in its first group.
        let skip = (3 - offset) % 3;
        let whole = secret.len().saturating_sub(skip) / 3 * 3;
        let core = &secret[skip.min(secret.len())..skip.min(secret.len()) + whole];
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(core);
            if text.len() >= 8 {
                cores.push(text);
            }
        }
    }
    cores
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
        assert_eq!(r.json(json!({"s3c ret+/x": ["s3c ret+/x", 1]})), json!({"[redacted]": ["[redacted]", 1]}));
        assert_eq!(r.text("77"), "77", "only secret fields are redacted");
    }

    /// One secret holding every character some encoding escapes, in each spelling it can take
    /// on the wire, inside text that is not secret.
    #[test]
    fn every_spelling_of_a_secret_is_redacted() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let secret = "k\"e\\y/+ =&%?#é€\n\t<>'";
        let r = Redactor::new(&["token".into()], json!({"token": secret}).as_object().unwrap());
        let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let json = serde_json::to_string(secret).unwrap();
        let spellings = [
            ("raw", secret.to_string()),
            ("form", form.clone()),
            ("percent", form.replace('+', "%20")),
            ("json", json[1..json.len() - 1].to_string()),
            ("php json", php_json(&json[1..json.len() - 1])),
        ];
        for (name, spelled) in spellings {
            let text = format!("before {spelled} after");
            assert_eq!(r.text(&text), "before [redacted] after", "{name}: {spelled}");
            assert!(!r.bytes(text.as_bytes()).windows(spelled.len()).any(|w| w == spelled.as_bytes()), "{name} as bytes");
        }
        // base64 of the secret wherever it starts among other bytes, both alphabets.
        for prefix in ["", "u", "us", "user:"] {
            for engine in [&STANDARD, &URL_SAFE] {
                let encoded = engine.encode(format!("{prefix}{secret}:rest"));
                let out = r.text(&format!("data={encoded}"));
                assert!(out.contains(REDACTED), "base64 after {prefix:?}: {encoded} -> {out}");
                let core = &base64_cores(secret.as_bytes());
                assert!(core.iter().all(|c| !out.contains(c.as_str())), "{out}");
            }
        }
        let basic = format!("Basic {}", STANDARD.encode(format!("user:{secret}")));
        assert_eq!(r.header(&basic), "Basic [redacted]");
        // Cut by a truncation: bodies are redacted before they are cut (trace::tests).
    }

    #[test]
    fn every_occurrence_is_redacted_in_values_and_keys_and_the_rest_is_kept() {
        let r = Redactor::new(&["token".into()], json!({"token": "tok"}).as_object().unwrap());
        assert_eq!(r.text("tok"), "[redacted]");
        assert_eq!(r.text("tok-to-tok;ttok"), "[redacted]-to-[redacted];t[redacted]");
        assert_eq!(r.text("to ok t"), "to ok t");
        let v = json!({"a": "x tok", "tok": {"b": ["tok", 2, null]}, "c": "kept"});
        let out = r.json(v);
        assert_eq!(out, json!({"a": "x [redacted]", "[redacted]": {"b": ["[redacted]", 2, null]}, "c": "kept"}));
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "[redacted]", "c"], "keys keep their order");
    }

    #[test]
    fn a_cached_redactor_follows_the_version_whose_secret_fields_it_redacts() {
        let config = json!({"token": "tok-1234", "password": "pw-5678"});
        let config = config.as_object().unwrap();
        let cache = crate::store::Derived::<RedactorCache>::default();
        let v1 = cache.get("sha256:v1", &["token".into()], config);
        assert_eq!(v1.text("tok-1234 pw-5678"), "[redacted] pw-5678");
        let v2 = cache.get("sha256:v2", &["password".into()], config);
        assert_eq!(v2.text("tok-1234 pw-5678"), "tok-1234 [redacted]", "another version, its own fields");
        let again = cache.get("sha256:v2", &[], config);
        assert_eq!(again.text("pw-5678"), "[redacted]", "the same version: the kept redactor");
        assert_eq!(cache.clone().get("sha256:v2", &[], config).text("pw-5678"), "pw-5678", "a copy caches on its own");
    }

    #[test]
    fn short_secrets_are_not_looked_for_in_base64_fragments() {
        assert!(base64_cores(b"abc").is_empty());
        assert!(base64_cores(b"abcdef").iter().all(|c| c.len() >= 8));
        let r = Redactor::new(&["token".into()], json!({"token": "abc"}).as_object().unwrap());
        assert_eq!(r.text("YWJjZGVm and abc"), "YWJjZGVm and [redacted]");
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
