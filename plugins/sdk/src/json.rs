//! JSON text to [`Value`] and back without recursion.
//!
//! An adapter runs on a small wasm stack (48 KiB), and serde's recursive parser and printer
//! spend a frame per level of nesting whose size the optimiser decides: the deepest params
//! the host accepts fitted at `opt-level = "s"` and overflowed at `3`. These loops keep their
//! own stack on the heap, so reading or writing a value takes no stack in proportion to its
//! depth (dropping one still does: the compiler's drop recurses, in much smaller frames).
//! They read and write exactly what serde_json does: the same grammar, the same
//! numbers (integers that fit `u64`/`i64` stay integers, `-0` is a float), the same limit of
//! 127 nested arrays and objects, later duplicate keys replacing earlier ones in place, and
//! serde_json's compact text with its escapes.

use serde_json::{Map, Number, Value};
use std::fmt;

/// As deep as serde_json nests before its recursion limit.
const MAX_DEPTH: usize = 127;

/// Why text is not JSON, and where (1-based line and column of the byte at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    message: &'static str,
    line: usize,
    column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {} column {}", self.message, self.line, self.column)
    }
}

impl std::error::Error for JsonError {}

/// Parses JSON text.
pub fn from_str(text: &str) -> Result<Value, JsonError> {
    from_slice(text.as_bytes())
}

/// Parses JSON bytes (which must be UTF-8 inside strings, as serde_json requires).
pub fn from_slice(bytes: &[u8]) -> Result<Value, JsonError> {
    Parser { bytes, pos: 0 }.value()
}

/// A value as compact JSON text, as `serde_json::to_string` writes it.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_from(&mut out, Vec::new(), Some(value));
    out
}

/// A container being filled while its items are parsed.
enum Open {
    Array(Vec<Value>),
    /// The map so far and the key whose value is being parsed.
    Object(Map<String, Value>, String),
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn value(&mut self) -> Result<Value, JsonError> {
        let mut open: Vec<Open> = Vec::new();
        'value: loop {
            let mut done = match self.skip_ws() {
                None => return Err(self.error("EOF while parsing a value")),
                Some(b'[') => match self.enter(open.len(), b']')? {
                    true => Value::Array(Vec::new()),
                    false => {
                        open.push(Open::Array(Vec::new()));
                        continue 'value;
                    }
                },
                Some(b'{') => match self.enter(open.len(), b'}')? {
                    true => Value::Object(Map::new()),
                    false => {
                        let key = self.key()?;
                        open.push(Open::Object(Map::new(), key));
                        continue 'value;
                    }
                },
                Some(b'"') => {
                    self.pos += 1;
                    Value::String(self.string()?)
                }
                Some(b'n') => self.literal(b"null", Value::Null)?,
                Some(b't') => self.literal(b"true", Value::Bool(true))?,
                Some(b'f') => self.literal(b"false", Value::Bool(false))?,
                Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
                Some(_) => return Err(self.error("expected value")),
            };
            // `done` is whole: hand it to the container it closes, as often as that closes one.
            loop {
                let close = match open.last_mut() {
                    None => {
                        if self.skip_ws().is_some() {
                            return Err(self.error("trailing characters"));
                        }
                        return Ok(done);
                    }
                    Some(Open::Array(items)) => {
                        items.push(done);
                        b']'
                    }
                    Some(Open::Object(map, key)) => {
                        map.insert(std::mem::take(key), done);
                        b'}'
                    }
                };
                if self.after_item(close)? {
                    if let Some(Open::Object(_, key)) = open.last_mut() {
                        *key = self.key()?;
                    }
                    continue 'value;
                }
                done = match open.pop() {
                    Some(Open::Array(items)) => Value::Array(items),
                    Some(Open::Object(map, _)) => Value::Object(map),
                    None => unreachable!("an item was just added to an open container"),
                };
            }
        }
    }

    /// Past the opening bracket, if one more level is allowed; `true` when the container is
    /// empty (and past its `close` too).
    fn enter(&mut self, depth: usize, close: u8) -> Result<bool, JsonError> {
        self.pos += 1;
        if depth >= MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        let empty = self.skip_ws() == Some(close);
        if empty {
            self.pos += 1;
        }
        Ok(empty)
    }

    /// After an item of the container that `close` ends: `true` past a comma (another item
    /// follows), `false` past `close`.
    fn after_item(&mut self, close: u8) -> Result<bool, JsonError> {
        let (eof, other) = match close {
            b']' => ("EOF while parsing a list", "expected `,` or `]`"),
            _ => ("EOF while parsing an object", "expected `,` or `}`"),
        };
        match self.skip_ws() {
            Some(b',') => {
                self.pos += 1;
                if self.skip_ws() == Some(close) {
                    return Err(self.error("trailing comma"));
                }
                Ok(true)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => Err(self.error(other)),
            None => Err(self.error(eof)),
        }
    }

    /// An object's key and the colon after it.
    fn key(&mut self) -> Result<String, JsonError> {
        match self.skip_ws() {
            Some(b'"') => self.pos += 1,
            Some(_) => return Err(self.error("key must be a string")),
            None => return Err(self.error("EOF while parsing an object")),
        }
        let key = self.string()?;
        match self.skip_ws() {
            Some(b':') => {
                self.pos += 1;
                Ok(key)
            }
            Some(_) => Err(self.error("expected `:`")),
            None => Err(self.error("EOF while parsing an object")),
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        for &expected in word {
            match self.bytes.get(self.pos) {
                Some(&b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.error("expected ident")),
                None => return Err(self.error("EOF while parsing a value")),
            }
        }
        Ok(value)
    }

    /// A string's contents, past its opening quote, up to and past its closing one.
    fn string(&mut self) -> Result<String, JsonError> {
        let mut out = Vec::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.bytes[start..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.error("EOF while parsing a string")),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|_| self.error("invalid unicode code point"));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => {
                    return Err(self.error("control character (\\u0000-\\u001F) found while parsing a string"));
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let Some(&b) = self.bytes.get(self.pos) else { return Err(self.error("EOF while parsing a string")) };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\x08',
            b'f' => '\x0c',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(self.error("unexpected end of hex escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate in hex escape")),
                    n => u32::from(n),
                };
                char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))?
            }
            _ => return Err(self.error("invalid escape")),
        };
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut n = 0u16;
        for _ in 0..4 {
            let Some(&b) = self.bytes.get(self.pos) else { return Err(self.error("EOF while parsing a string")) };
            let digit = (b as char).to_digit(16).ok_or_else(|| self.error("invalid escape"))?;
            self.pos += 1;
            n = n * 16 + digit as u16;
        }
        Ok(n)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: an integer while it fits `u64` (or
    /// `i64` when negative, `-0` aside), a finite `f64` otherwise, as serde_json reads it.
    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.pos;
        let negative = self.bytes[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
                    return Err(self.error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            Some(_) => return Err(self.error("invalid number")),
            None => return Err(self.error("EOF while parsing a value")),
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            self.required_digits()?;
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.required_digits()?;
        }
        // Only ASCII digits, signs, dots and exponents were consumed.
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).expect("ASCII");
        if integer {
            let magnitude = if negative { &text[1..] } else { text };
            if let Ok(m) = magnitude.parse::<u64>() {
                if !negative {
                    return Ok(m.into());
                }
                if m != 0 && m <= 1 << 63 {
                    return Ok((0i64.wrapping_sub_unsigned(m)).into());
                }
            }
        }
        // serde_json's own reading of a float (a scalar: no recursion), so that a number reads
        // here as it reads in the host, and without core's 10 KiB table for exact rounding,
        // which every call's reset would copy back.
        serde_json::from_str::<Number>(text).map_err(|_| self.error("number out of range"))
    }

    fn digits(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), JsonError> {
        match self.bytes.get(self.pos) {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            Some(_) => Err(self.error("invalid number")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }

    /// An error at the byte the parser stands on (one past the end at the end).
    fn error(&self, message: &'static str) -> JsonError {
        let read = &self.bytes[..self.pos.min(self.bytes.len())];
        let line_start = read.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + read.iter().filter(|&&b| b == b'\n').count();
        JsonError { message, line, column: read.len() - line_start + 1 }
    }
}

/// A container being written: its items left (and, beside it, whether one was written yet).
enum Writing<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Iter<'a>),
}

/// A JSON object's compact text (crmData, without wrapping it in a [`Value`]).
pub fn object_to_string(map: &Map<String, Value>) -> String {
    let mut out = String::from("{");
    write_from(&mut out, vec![(Writing::Object(map.iter()), false)], None);
    out
}

/// Writes `next`, then the rest of the `open` containers' items.
fn write_from<'a>(out: &mut String, mut open: Vec<(Writing<'a>, bool)>, mut next: Option<&'a Value>) {
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Null => out.push_str("null"),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => {
                    use fmt::Write;
                    let _ = write!(out, "{n}");
                }
                Value::String(s) => write_str(out, s),
                Value::Array(items) => {
                    out.push('[');
                    open.push((Writing::Array(items.iter()), false));
                }
                Value::Object(map) => {
                    out.push('{');
                    open.push((Writing::Object(map.iter()), false));
                }
            }
        }
        let Some((container, started)) = open.last_mut() else { return };
        let (item, close) = match container {
            Writing::Array(items) => (items.next().map(|v| (None, v)), ']'),
            Writing::Object(entries) => (entries.next().map(|(k, v)| (Some(k), v)), '}'),
        };
        match item {
            Some((key, v)) => {
                if std::mem::replace(started, true) {
                    out.push(',');
                }
                if let Some(k) = key {
                    write_str(out, k);
                    out.push(':');
                }
                next = Some(v);
            }
            None => {
                out.push(close);
                open.pop();
            }
        }
    }
}

/// A string with serde_json's escapes: quote, backslash and the C0 controls, nothing else.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\x08' => "\\b",
            b'\x0c' => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        plain = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Both parsers agree: the same value and text, or both refuse.
    fn same(text: &str) {
        let ours = from_str(text);
        let theirs = serde_json::from_str::<Value>(text);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{text}");
                assert_eq!(to_string(a), serde_json::to_string(b).unwrap(), "{text}");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{text}: ours {ours:?}, serde_json {theirs:?}"),
        }
    }

    #[test]
    fn reads_and_writes_what_serde_json_does() {
        for text in [
            "null", "true", "false", " 0 ", "-0", "-0.0", "1", "-1", "18446744073709551615", "18446744073709551616",
            "-9223372036854775808", "-9223372036854775809", "1.5", "1e3", "1E-3", "2.5e+10", "1e400", "1e-400",
            "0.1", "123456789.123456789", "[]", "{}", "[1,[2,[3]],{}]", r#"{"a":1,"b":{"c":[true,null]}}"#,
            r#"{"a":1,"a":2,"b":3}"#, r#""\u00e9\ud83d\ude00\n\t\"\\\/\b\f\r""#, "\"שלום\"", "\"\\u0001\\u001f\\u007f\"",
            " [ 1 , 2 ] ", "\n{\r\n\"k\"\t:\"v\"}\n",
            // Refused by both:
            "", " ", "[", "[1,]", "{\"a\":1,}", "{,}", "[1 2]", "{\"a\" 1}", "{1:2}", "01", "1.", ".5", "1e", "-", "+1",
            "nul", "tru", "[1]x", "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"a\u{1}b\"",
            "NaN", "Infinity", "[-]", "{\"a\":}", "\"\\u12\"",
        ] {
            same(text);
        }
    }

    #[test]
    fn nests_as_deep_as_serde_json_and_no_deeper() {
        for depth in [126, 127, 128, 129] {
            same(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            same(&format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth)));
        }
        let e = from_str(&"[".repeat(200)).unwrap_err();
        assert_eq!(e.to_string(), "recursion limit exceeded at line 1 column 129");
    }

    #[test]
    fn invalid_utf8_in_a_string_is_refused() {
        assert!(from_slice(b"\"\xff\"").is_err());
        assert!(serde_json::from_slice::<Value>(b"\"\xff\"").is_err());
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(from_str("{\n  \"a\": tru\n}").unwrap_err().to_string(), "expected ident at line 2 column 11");
        assert_eq!(from_str("[1,]").unwrap_err().to_string(), "trailing comma at line 1 column 4");
    }

    /// Values made from a seeded generator, written by serde_json, read back by both.
    #[test]
    fn round_trips_generated_values() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn gen(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            match next() % if depth > 4 { 5 } else { 7 } {
                0 => Value::Null,
                1 => Value::Bool(next().is_multiple_of(2)),
                2 => json!(next() as i64),
                3 => json!(f64::from_bits(next() >> 2) / 1e5),
                4 => Value::String((0..next() % 6).map(|_| char::from_u32((next() % 0x800) as u32).unwrap_or('x')).collect()),
                5 => Value::Array((0..next() % 4).map(|_| gen(next, depth + 1)).collect()),
                _ => Value::Object((0..next() % 4).map(|_| (format!("k{}", next() % 5), gen(next, depth + 1))).collect()),
            }
        }
        for _ in 0..2000 {
            let v = gen(&mut next, 0);
            let text = serde_json::to_string(&v).unwrap();
            same(&text);
            assert_eq!(to_string(&v), text);
            if let Value::Object(map) = &v {
                assert_eq!(object_to_string(map), text);
            }
        }
    }
}
