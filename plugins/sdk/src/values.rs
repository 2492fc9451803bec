//! Typed access to crmConfig and params, with errors that name the field and the right kind.

use crate::CrmError;
use serde_json::{Map, Value};

/// Where a set of values came from; decides the error kind when one is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The tenant's crmConfig: a bad value is a `config` error.
    Config,
    /// The call's params: a bad value is an `invalid-params` error.
    Params,
}

/// A JSON object of crmConfig fields or call params.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    map: Map<String, Value>,
    origin: Origin,
}

/// The tenant's crmConfig.
pub type Config = Values;
/// The call's params.
pub type Params = Values;

impl Values {
    /// Values of `origin` (which kind of error their accessors make).
    pub fn new(origin: Origin, map: Map<String, Value>) -> Self {
        Values { map, origin }
    }

    /// Parses JSON text that must hold an object (`null` and empty text count as `{}`).
    pub fn parse(origin: Origin, json: &str) -> Result<Self, CrmError> {
        let what = match origin {
            Origin::Config => "crmConfig",
            Origin::Params => "params",
        };
        let bad = |m: String| match origin {
            Origin::Config => CrmError::config("", m),
            Origin::Params => CrmError::invalid_params("", m),
        };
        if json.trim().is_empty() {
            return Ok(Self::new(origin, Map::new()));
        }
        match crate::json::from_str(json) {
            Ok(Value::Object(map)) => Ok(Self::new(origin, map)),
            Ok(Value::Null) => Ok(Self::new(origin, Map::new())),
            Ok(other) => Err(bad(format!("{what} must be a JSON object, got {}", type_name(&other)))),
            Err(e) => Err(bad(format!("{what} is not valid JSON: {e}"))),
        }
    }

    /// Every value, as sent (nulls included).
    pub fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Every value, as sent, taken.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    /// A value; `null` counts as missing.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` holds a value other than `null`.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The values other than `null`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.map.iter().filter(|(_, v)| !v.is_null())
    }

    /// An error of this origin's kind about `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> CrmError {
        match self.origin {
            Origin::Config => CrmError::config(field, message),
            Origin::Params => CrmError::invalid_params(field, message),
        }
    }

    /// A scalar as text: strings as they are, numbers and booleans printed. Missing or null: None.
    pub fn str(&self, key: &str) -> Result<Option<String>, CrmError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar_text(v)
                .map(Some)
                .ok_or_else(|| self.error(key, format!("must be a string, got {}", type_name(v)))),
        }
    }

    /// Like [`Values::str`], but blank text counts as missing.
    pub fn non_empty_str(&self, key: &str) -> Result<Option<String>, CrmError> {
        Ok(self.str(key)?.filter(|s| !s.trim().is_empty()))
    }

    /// Like [`Values::non_empty_str`], but missing is an error naming the field.
    pub fn required_str(&self, key: &str) -> Result<String, CrmError> {
        self.non_empty_str(key)?.ok_or_else(|| self.error(key, "is required"))
    }

    /// A boolean: `true`/`false`, `"true"`/`"false"`, `1`/`0` or `"1"`/`"0"`.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, CrmError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => truthy(v).ok_or_else(|| {
                self.error(key, format!("must be a boolean (true/false), got {}", short(v)))
            }),
        }
    }

    /// A non-negative integer, as a number or a string of digits.
    pub fn uint(&self, key: &str, default: u64) -> Result<u64, CrmError> {
        let bad = |v: &Value| self.error(key, format!("must be a non-negative integer, got {}", short(v)));
        match self.get(key) {
            None => Ok(default),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(&Value::Number(n.clone()))),
            Some(v @ Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() {
                    Ok(default)
                } else {
                    s.parse::<u64>().map_err(|_| bad(v))
                }
            }
            Some(v) => Err(bad(v)),
        }
    }

    /// An object, given either as a JSON object or as JSON text holding one.
    pub fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, CrmError> {
        let bad = |got: &str| self.error(key, format!("must be a JSON object, got {got}"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => match crate::json::from_str(s) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                Ok(other) => Err(bad(type_name(&other))),
                Err(_) => Err(bad("text that is not JSON")),
            },
            Some(v) => Err(bad(type_name(v))),
        }
    }

    /// A list given as comma-separated text or as an array of strings; items trimmed, blanks dropped.
    pub fn list(&self, key: &str) -> Result<Vec<String>, CrmError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(split_list(s)),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    scalar_text(v).ok_or_else(|| {
                        self.error(key, format!("items must be strings, got {}", type_name(v)))
                    })
                })
                .filter(|r| r.as_ref().map_or(true, |s| !s.trim().is_empty()))
                .map(|r| r.map(|s| s.trim().to_string()))
                .collect(),
            Some(v) => Err(self.error(
                key,
                format!("must be comma-separated text or a list of strings, got {}", type_name(v)),
            )),
        }
    }

    /// A URL with an http or https scheme and a host.
    pub fn url(&self, key: &str) -> Result<Option<url::Url>, CrmError> {
        let Some(text) = self.non_empty_str(key)? else { return Ok(None) };
        let text = text.trim();
        // `url` runs with ASCII-only IDNA (Cargo.toml): a Unicode host is refused here, by
        // name, before the parser hands it to the IDNA stand-in (which debug builds assert on).
        if !url_host(text).is_ascii() {
            return Err(self.error(key, "must be an absolute URL with an ASCII host name (write a Unicode one in punycode, xn--…)"));
        }
        let parsed = url::Url::parse(text)
            .map_err(|e| self.error(key, format!("must be an absolute URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(self.error(key, "must be an http(s) URL with a host"));
        }
        Ok(Some(parsed))
    }
}

/// The host (and port) of an absolute URL as the parser reads it: after the scheme, past
/// any slashes and backslashes, up to the path, query or fragment, without the user info.
fn url_host(url: &str) -> &str {
    let Some((_, rest)) = url.split_once(':') else { return "" };
    let authority = rest.trim_start_matches(['/', '\\']).split(['/', '\\', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

/// Splits comma-separated text into trimmed, non-empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A JSON scalar as the text a form or a comparison would use.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A param value as form or query text: strings as they are, numbers printed, booleans
/// `1`/`0` (what form-based CRM APIs expect), null empty, arrays and objects as JSON text.
pub fn form_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "1" } else { "0" }.into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => crate::json::to_string(v),
    }
}

/// Platform-style truthiness for flags given as booleans, numbers or text.
pub fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = crate::json::to_string(v);
    match s.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Values {
        Values::new(Origin::Config, v.as_object().unwrap().clone())
    }

    #[test]
    fn url_host_names_are_ascii_so_an_idn_is_written_in_punycode() {
        // idna_adapter 1.0.0 (Cargo.toml): no Unicode tables in the adapter.
        let c = cfg(json!({"a": "https://bücher.example/api", "b": "https://xn--bcher-kva.example/api"}));
        assert!(matches!(c.url("a"), Err(CrmError::Config { field, message }) if field == "a" && message.starts_with("must be an absolute URL")));
        assert_eq!(c.url("b").unwrap().unwrap().host_str(), Some("xn--bcher-kva.example"));
        // Found by the fuzz target: no slashes after the scheme, an upper-case letter.
        for odd in ["http:///A\u{1bc70}", "https://u:p\u{e9}@host.example/p\u{e9}", "http:\\\\B\u{fc}.example"] {
            let c = cfg(json!({ "u": odd }));
            let ascii = !odd.contains('\u{1bc70}') && !odd.contains('\u{fc}');
            assert_eq!(c.url("u").is_ok(), ascii, "{odd}");
        }
    }

    #[test]
    fn required_str_names_field_and_kind() {
        let c = cfg(json!({"token": "  "}));
        assert_eq!(c.required_str("token"), Err(CrmError::config("token", "is required")));
        let p = Values::new(Origin::Params, Map::new());
        assert_eq!(p.required_str("id"), Err(CrmError::invalid_params("id", "is required")));
    }

    #[test]
    fn scalars_print_and_objects_are_refused_as_text() {
        let c = cfg(json!({"n": 5, "b": true, "o": {"a": 1}}));
        assert_eq!(c.str("n").unwrap().as_deref(), Some("5"));
        assert_eq!(c.str("b").unwrap().as_deref(), Some("true"));
        assert!(matches!(c.str("o"), Err(CrmError::Config { field, .. }) if field == "o"));
    }

    #[test]
    fn flags_accept_platform_spellings() {
        let c = cfg(json!({"a": "true", "b": 0, "c": "1", "d": "maybe"}));
        assert!(c.bool("a", false).unwrap());
        assert!(!c.bool("b", true).unwrap());
        assert!(c.bool("c", false).unwrap());
        assert!(c.bool("missing", true).unwrap());
        assert!(c.bool("d", false).is_err());
    }

    #[test]
    fn uint_accepts_digits_and_rejects_negatives() {
        let c = cfg(json!({"a": "12", "b": 7, "c": -1, "d": "x"}));
        assert_eq!(c.uint("a", 30).unwrap(), 12);
        assert_eq!(c.uint("b", 30).unwrap(), 7);
        assert_eq!(c.uint("missing", 30).unwrap(), 30);
        assert!(c.uint("c", 30).is_err());
        assert!(c.uint("d", 30).is_err());
    }

    #[test]
    fn object_accepts_json_text() {
        let c = cfg(json!({"a": {"x": "1"}, "b": "{\"y\": \"\"}", "c": "[1]"}));
        assert_eq!(c.object("a").unwrap().unwrap()["x"], "1");
        assert_eq!(c.object("b").unwrap().unwrap()["y"], "");
        assert!(c.object("c").is_err());
    }

    #[test]
    fn lists_from_text_or_arrays() {
        let c = cfg(json!({"a": " x, y ,,z", "b": ["p", " ", "q"]}));
        assert_eq!(c.list("a").unwrap(), vec!["x", "y", "z"]);
        assert_eq!(c.list("b").unwrap(), vec!["p", "q"]);
    }

    #[test]
    fn parse_rejects_non_objects() {
        assert!(Values::parse(Origin::Params, "[1]").is_err());
        assert!(Values::parse(Origin::Params, "{").is_err());
        assert!(Values::parse(Origin::Params, "").unwrap().map().is_empty());
    }
}
