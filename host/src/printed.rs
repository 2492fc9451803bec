//! JSON the host passes on: the crmData an adapter answers (to the platform and the trace)
//! and the call body (to the trace).
//!
//! The host writes such JSON out as serde_json prints what it parses from the text it got.
//! Most text is already exactly that (no whitespace, no escapes, integers, no key twice),
//! and then it is kept as it came: checking so is one pass over the text, where parsing it
//! into maps, printing it again (crmData twice: the answer and the trace) and freeing it
//! cost about 2% of a call's CPU under load (BENCHMARKS.md). Any other text is parsed and
//! printed again, so the platform and the trace see the same bytes either way.

use crate::error::{CallFailure, FailureKind};
use crate::redact::Redactor;
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON object, as the host prints it.
#[derive(Debug, Clone)]
pub struct CrmData(Box<RawValue>);

impl CrmData {
    /// The adapter's answer, which must be a JSON object.
    pub fn from_adapter(text: String) -> Result<CrmData, CallFailure> {
        if printed_as_parsed(text.as_bytes()) {
            // serde's own check of the syntax, which the parse below would make as well.
            return RawValue::from_string(text).map(CrmData).map_err(|_| not_an_object());
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(v @ Value::Object(_)) => Ok(CrmData(printed(&v))),
            _ => Err(not_an_object()),
        }
    }

    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("crmData is JSON")
    }

    /// For the trace: with every secret redacted as [`Redactor::json`] does.
    pub fn redacted(self, redactor: &Redactor) -> Box<RawValue> {
        if !may_hold_secrets(self.0.get(), redactor) {
            return self.0;
        }
        printed(&redactor.json(self.to_value()))
    }
}

/// The call body for its trace: as [`Redactor::json`] leaves what serde parses from it,
/// printed; `null` when it is not JSON, or when `body` is `None` (too large to record).
pub fn recorded_request(body: Option<Vec<u8>>, redactor: &Redactor) -> Box<RawValue> {
    let Some(body) = body else {
        return printed(&Value::Null);
    };
    let body = match String::from_utf8(body) {
        Ok(text) if printed_as_parsed(text.as_bytes()) && !may_hold_secrets(&text, redactor) => {
            // Text serde refuses here is text it would not parse below either.
            return RawValue::from_string(text).unwrap_or_else(|_| printed(&Value::Null));
        }
        Ok(text) => text.into_bytes(),
        Err(e) => e.into_bytes(),
    };
    printed(&redactor.json(serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Whether [`Redactor::json`] could change the value `text` holds. In text without a
/// backslash every string and key is written as it reads, so when no needle occurs in the
/// text, none occurs in them.
fn may_hold_secrets(text: &str, redactor: &Redactor) -> bool {
    memchr::memchr(b'\\', text.as_bytes()).is_some() || redactor.holds(text.as_bytes())
}

fn printed(v: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("a JSON value prints")
}

fn not_an_object() -> CallFailure {
    CallFailure::new(FailureKind::InvalidOutput, "the adapter returned crmData that is not a JSON object")
}

/// Nesting kept as it came; deeper text is parsed (serde_json's limit is 127 levels).
const MAX_DEPTH: usize = 32;

/// Keys of the open objects checked for repeats; text with more is parsed. The check is one
/// pass with no allocation: its state is these arrays, on the stack.
const MAX_KEYS: usize = 64;

/// Whether `b` is a JSON object exactly as serde_json prints what it parses from it: no
/// whitespace; strings without escapes or control characters; numbers that are integers
/// written in full (no fraction or exponent, no `-0`, within i64 or u64, else serde reads a
/// float and prints it otherwise); no key twice in an object (serde keeps the last value in
/// the first key's place); nesting and keys within the bounds above. `false` says only
/// "parse it": it never decides that the text is not JSON.
fn printed_as_parsed(b: &[u8]) -> bool {
    if b.first() != Some(&b'{') {
        return false;
    }
    let mut s = Scan { b, open: [0; MAX_DEPTH], depth: 0, starts: [0; MAX_DEPTH], keys: [&[]; MAX_KEYS], n_keys: 0 };
    let mut i = 0;
    loop {
        // A value at `i`.
        match b.get(i) {
            Some(&c @ (b'{' | b'[')) => {
                if s.depth == MAX_DEPTH {
                    return false;
                }
                i += 1;
                if b.get(i) == Some(if c == b'{' { &b'}' } else { &b']' }) {
                    i += 1;
                } else {
                    s.open[s.depth] = c;
                    s.starts[s.depth] = s.n_keys;
                    s.depth += 1;
                    if c == b'{' {
                        match s.key(i) {
                            Some(next) => i = next,
                            None => return false,
                        }
                    }
                    continue;
                }
            }
            Some(b'"') => match string_end(b, i) {
                Some(end) => i = end,
                None => return false,
            },
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            Some(b'-' | b'0'..=b'9') => match integer_end(b, i) {
                Some(end) => i = end,
                None => return false,
            },
            _ => return false,
        }
        // After a value: a comma, or the ends of containers.
        loop {
            if s.depth == 0 {
                return i == b.len();
            }
            match (s.open[s.depth - 1], b.get(i)) {
                (b'[', Some(b',')) => {
                    i += 1;
                    break;
                }
                (b'{', Some(b',')) => match s.key(i + 1) {
                    Some(next) => {
                        i = next;
                        break;
                    }
                    None => return false,
                },
                (b'[', Some(b']')) => {
                    s.depth -= 1;
                    i += 1;
                }
                (b'{', Some(b'}')) => {
                    s.depth -= 1;
                    s.n_keys = s.starts[s.depth];
                    i += 1;
                }
                _ => return false,
            }
        }
    }
}

/// The open containers (`{` or `[`), and the keys of the open objects, each object's from
/// its entry in `starts`.
struct Scan<'a> {
    b: &'a [u8],
    open: [u8; MAX_DEPTH],
    depth: usize,
    starts: [usize; MAX_DEPTH],
    keys: [&'a [u8]; MAX_KEYS],
    n_keys: usize,
}

impl Scan<'_> {
    /// A key of the innermost object at `i`, and its colon: where its value starts. `None`
    /// for a repeated key, or one past [`MAX_KEYS`].
    fn key(&mut self, i: usize) -> Option<usize> {
        let b = self.b;
        if b.get(i) != Some(&b'"') || self.n_keys == MAX_KEYS {
            return None;
        }
        let end = string_end(b, i)?;
        let k = &b[i + 1..end - 1];
        if self.keys[self.starts[self.depth - 1]..self.n_keys].contains(&k) {
            return None;
        }
        self.keys[self.n_keys] = k;
        self.n_keys += 1;
        (b.get(end) == Some(&b':')).then_some(end + 1)
    }
}

/// Past the closing quote of the string that opens at `i`, if nothing in it is escaped or a
/// control character (which serde would print escaped, or refuse).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let len = memchr::memchr(b'"', &b[i + 1..])?;
    let s = &b[i + 1..i + 1 + len];
    s.iter().all(|&c| c != b'\\' && c >= 0x20).then_some(i + len + 2)
}

/// Past the integer that starts at `i`, if serde reads it as an integer and prints it the
/// same: no leading zero, no fraction or exponent, not `-0`, within u64 (or i64 below 0).
fn integer_end(b: &[u8], i: usize) -> Option<usize> {
    let negative = b[i] == b'-';
    let start = i + usize::from(negative);
    let digits = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let end = start + digits;
    if digits == 0 || (b[start] == b'0' && digits > 1) || matches!(b.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in &b[start..end] {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative && !(1..=1u64 << 63).contains(&v) {
        return None;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the host printed before crmData was kept as text.
    fn reprinted(text: &str) -> Option<String> {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Some(v.to_string()),
            _ => None,
        }
    }

    fn kept(text: &str) -> Option<String> {
        CrmData::from_adapter(text.to_string()).ok().map(|d| d.raw().get().to_string())
    }

    #[test]
    fn crm_data_must_be_a_json_object() {
        let data = CrmData::from_adapter(r#"{"contactId": "7", "tags": ["a"]}"#.into()).unwrap();
        assert_eq!(data.to_value(), serde_json::json!({"contactId": "7", "tags": ["a"]}));
        for text in ["[1, 2]", "\"text\"", "null", "7", "", "{\"open\": ", "{} {}", "{\"a\":1}x", "{\"a\":01}", "{\"a\":\"\u{1}\"}"] {
            let f = CrmData::from_adapter(text.into()).unwrap_err();
            assert_eq!(f.kind, FailureKind::InvalidOutput, "{text:?}");
            assert!(f.message.contains("not a JSON object"), "{text:?}: {}", f.message);
        }
    }

    #[test]
    fn text_is_kept_only_when_it_is_what_serde_would_print() {
        let as_printed = [
            r#"{}"#,
            r#"{"contactId":"501","name":"Dana Levi","tags":["gold",7,-3,true,false,null],"n":{"a":{},"b":[]}}"#,
            r#"{"max":18446744073709551615,"min":-9223372036854775808,"zero":0,"é":"ünï/'"}"#,
        ];
        for text in as_printed {
            assert!(printed_as_parsed(text.as_bytes()), "{text}");
            assert_eq!(kept(text).as_deref(), Some(text));
        }
        let printed_otherwise = [
            r#"{ "a": 1 }"#,
            r#"{"a":1.0}"#,
            r#"{"a":1e2}"#,
            r#"{"a":-0}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":"x\/y"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"b":[]}}"#,
            "{\"a\":\n1}",
        ];
        for text in printed_otherwise {
            assert!(!printed_as_parsed(text.as_bytes()), "{text}");
            assert_eq!(kept(text), reprinted(text), "{text}");
        }
        // Keys repeat across objects, not within one.
        assert!(printed_as_parsed(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#));
        let wide = format!("{{{}}}", (0..MAX_KEYS + 1).map(|k| format!("\"k{k}\":{k}")).collect::<Vec<_>>().join(","));
        assert!(!printed_as_parsed(wide.as_bytes()));
        assert_eq!(kept(&wide), reprinted(&wide));
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!printed_as_parsed(deep.as_bytes()));
        assert_eq!(kept(&deep), reprinted(&deep));
    }

    /// Generated text, valid and not: whatever the check says, the host writes what it
    /// wrote when it parsed and printed every crmData.
    #[test]
    fn kept_text_is_always_what_parsing_and_printing_gave() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        // Values built from pieces that serde prints as they are, and pieces it does not
        // (or refuses); keys from a small set, so that some repeat.
        fn value(next: &mut impl FnMut(usize) -> usize, depth: usize, out: &mut String) {
            const ATOMS: [&str; 20] = [
                "0", "7", "-1", "-0", "01", "1.5", "2e3", "18446744073709551615", "18446744073709551616",
                "-9223372036854775808", "-9223372036854775809", "\"s\"", "\"a\\\"b\"", "\"\"", "\"\u{e9}/\"",
                "true", "false", "null", "nul", "\"\\u0041\"",
            ];
            let ws = |next: &mut dyn FnMut(usize) -> usize| if next(12) == 0 { " " } else { "" };
            match if depth > 4 { 0 } else { next(4) } {
                0 | 1 => out.push_str(ATOMS[next(ATOMS.len())]),
                2 => {
                    out.push('[');
                    for k in 0..next(4) {
                        out.push_str(if k > 0 { "," } else { "" });
                        out.push_str(ws(next));
                        value(next, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => object(next, depth + 1, out),
            }
        }
        fn object(next: &mut impl FnMut(usize) -> usize, depth: usize, out: &mut String) {
            out.push('{');
            for k in 0..next(5) {
                out.push_str(if k > 0 { "," } else { "" });
                out.push_str(["\"a\"", "\"b\"", "\"c\"", "\"d\"", "\"e\"", "\"f\"", "\"g\"", "\"h\""][next(8)]);
                out.push_str(if next(20) == 0 { ": " } else { ":" });
                value(next, depth, out);
            }
            out.push('}');
        }
        let config = serde_json::json!({"token": "e"});
        let redactors = [Redactor::default(), Redactor::new(&["token".to_string()], config.as_object().unwrap())];
        let mut kept_as_is = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            object(&mut next, 0, &mut text);
            if next(50) == 0 {
                let mut cut = next(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            assert_eq!(kept(&text), reprinted(&text), "{text}");
            let redactor = &redactors[next(2)];
            let recorded = redactor.json(serde_json::from_str(&text).unwrap_or(Value::Null)).to_string();
            assert_eq!(recorded_request(Some(text.clone().into_bytes()), redactor).get(), recorded, "{text}");
            kept_as_is += usize::from(printed_as_parsed(text.as_bytes()));
        }
        assert!(kept_as_is > 2_000, "too few generated texts were kept as they came: {kept_as_is}");
    }

    #[test]
    fn a_recorded_request_is_what_parsing_redacting_and_printing_gave() {
        let config = serde_json::json!({"token": "tok/en"});
        let redactor = Redactor::new(&["token".to_string()], config.as_object().unwrap());
        let bodies: [&[u8]; 8] = [
            br#"{"chat":{"id":"c1","phone":"+972501234567"},"params":{}}"#,
            br#"{"chat":{"id":"c1"},"params":{"note":"tok/en"}}"#,
            br#"{"chat":{"id":"c1"},"params":{"note":"tok\/en"}}"#,
            br#"{ "chat": {"id": "c1"}, "params": {"n": 1.50} }"#,
            br#"[{"id":"c1"},{}]"#,
            br#"{"chat":"#,
            b"{\"chat\":\"\xff\"}",
            br#"{"chat":{"id":"c1","id":"c2"}}"#,
        ];
        for body in bodies {
            let before = redactor.json(serde_json::from_slice(body).unwrap_or(Value::Null)).to_string();
            assert_eq!(recorded_request(Some(body.to_vec()), &redactor).get(), before, "{}", String::from_utf8_lossy(body));
        }
        let kept = recorded_request(Some(bodies[0].to_vec()), &redactor);
        assert_eq!(kept.get().as_bytes(), bodies[0]);
        assert!(!recorded_request(Some(bodies[2].to_vec()), &redactor).get().contains("tok"));
    }

    #[test]
    fn the_trace_gets_crm_data_redacted_as_a_json_value_would_be() {
        let config = serde_json::json!({"token": "s3cr\"et/"});
        let redactor = Redactor::new(&["token".to_string()], config.as_object().unwrap());
        for text in [
            r#"{"id":"501","note":"plain"}"#,
            r#"{"id":"501","echo":"key s3cr\"et/ here"}"#,
            r#"{"s3cr\"et/":1}"#,
            r#"{"nested":[{"x":"s3cr\"et\/"}]}"#,
        ] {
            let data = CrmData::from_adapter(text.into()).unwrap();
            let expected = redactor.json(data.to_value()).to_string();
            assert_eq!(data.redacted(&redactor).get(), expected, "{text}");
        }
        let data = CrmData::from_adapter(r#"{"echo":"s3cr\"et/"}"#.into()).unwrap();
        assert!(!data.redacted(&redactor).get().contains("s3cr"));
        // A string holding the PHP spelling (`\/`) is printed with its backslash escaped, in
        // which no needle occurs; the value's redaction still finds it.
        let config = serde_json::json!({"token": "a/b"});
        let redactor = Redactor::new(&["token".to_string()], config.as_object().unwrap());
        let data = CrmData::from_adapter(r#"{"x":"a\\/b"}"#.into()).unwrap();
        assert_eq!(data.clone().redacted(&redactor).get(), redactor.json(data.to_value()).to_string());
        assert_eq!(data.redacted(&redactor).get(), r#"{"x":"[redacted]"}"#);
    }
}
