//! Differences between two JSON values, as paths (`crmData.contact.name`, `items[2]`) with
//! the value on each side (`null` where a side has none).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Changes listed per call at most; a report says how many more there were.
pub const MAX_CHANGES: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Change {
    pub path: String,
    pub recorded: Value,
    pub candidate: Value,
}

/// Every leaf where `a` and `b` differ, under `path`.
pub fn diff_values(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                diff_values(&format!("{path}.{k}"), va, y.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, vb) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                diff_values(&format!("{path}.{k}"), &Value::Null, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                diff_values(&format!("{path}[{i}]"), x.get(i).unwrap_or(&Value::Null), y.get(i).unwrap_or(&Value::Null), out);
            }
        }
        _ if a == b => {}
        _ => out.push(Change { path: path.to_string(), recorded: a.clone(), candidate: b.clone() }),
    }
}

/// Differences between two call outcomes in their compared form
/// (`{"outcome", "crmData"}` or `{"outcome", "error": {"kind", ...}}`), paths without a prefix.
pub fn diff_outcomes(recorded: &Value, candidate: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_values("", recorded, candidate, &mut out);
    for c in &mut out {
        c.path = c.path.trim_start_matches('.').to_string();
    }
    out
}

/// Whether `path` is `noisy` or lies under it.
pub fn is_under(path: &str, noisy: &str) -> bool {
    path == noisy || (path.starts_with(noisy) && matches!(path.as_bytes().get(noisy.len()), Some(b'.' | b'[')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_leaf_paths_with_both_sides() {
        let a = json!({"outcome": "complete", "crmData": {"name": "Dana", "tags": [1, 2], "same": true}});
        let b = json!({"outcome": "complete", "crmData": {"fullName": "Dana", "tags": [1], "same": true}});
        let d = diff_outcomes(&a, &b);
        let paths: Vec<(&str, &Value, &Value)> = d.iter().map(|c| (c.path.as_str(), &c.recorded, &c.candidate)).collect();
        assert_eq!(
            paths,
            vec![
                ("crmData.name", &json!("Dana"), &Value::Null),
                ("crmData.tags[1]", &json!(2), &Value::Null),
                ("crmData.fullName", &Value::Null, &json!("Dana")),
            ]
        );
        assert!(diff_outcomes(&a, &a).is_empty());
    }

    #[test]
    fn noise_covers_a_path_and_what_is_under_it() {
        assert!(is_under("crmData.nonce", "crmData.nonce"));
        assert!(is_under("crmData.nonce.hi", "crmData.nonce"));
        assert!(is_under("crmData.list[3]", "crmData.list"));
        assert!(!is_under("crmData.nonces", "crmData.nonce"));
    }
}
