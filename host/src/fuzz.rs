//! Property-based fuzzing of what the outside world hands the host before any adapter runs:
//! the call body, the tenant body (crmConfig, pin, limits) and the limits check. Each
//! target runs 256 cases in the test suite; `cargo xtask fuzz [SECONDS]` runs each for that
//! long (60 s by default). A failure prints the smallest input found: add it to
//! `regressions()` below before fixing it.

use crate::chat::{parse_call, parse_json};
use crate::limits::TenantLimits;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// Runs `test` over `strategy` for `CRM_FUZZ_SECS` seconds (at least one round).
pub(crate) fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("CRM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let started = std::time::Instant::now();
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed after {cases} cases: {e}");
        }
        cases += 256;
        if started.elapsed().as_secs() >= secs {
            break;
        }
    }
    if secs > 0 {
        eprintln!("fuzz target {name}: {cases} cases in {:.0?}, no failure", started.elapsed());
    }
}

/// Any JSON value, nested a few levels, with the keys the host looks for mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("chat".to_string()),
        Just("params".to_string()),
        Just("id".to_string()),
        Just("phone".to_string()),
        Just("messages".to_string()),
        Just("media".to_string()),
        Just("nodes".to_string()),
        Just("crmData".to_string()),
        Just("agent".to_string()),
        Just("adapter".to_string()),
        Just("crmConfig".to_string()),
        Just("limits".to_string()),
        Just("memoryMb".to_string()),
        Just("pin".to_string()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Bodies: raw bytes, JSON text of any value, and call-shaped objects with odd fields.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), json_value(), json_value())
            .prop_map(|(chat, params, extra)| json!({"chat": chat, "params": params, "x": extra}).to_string().into_bytes()),
        // Truncated JSON: every prefix of a valid body.
        (json_value(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let text = json!({"chat": v}).to_string().into_bytes();
            let cut = i.index(text.len() + 1);
            text[..cut].to_vec()
        }),
    ]
}

#[test]
fn call_body_parser_never_panics_and_errors_say_what() {
    fuzz("call-body", body(), |bytes| {
        match parse_call(&bytes) {
            Ok(req) => {
                // Whatever parsed must convert for the adapter.
                let _ = crate::chat::into_wit(req, "p", &Map::new());
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
        Ok(())
    });
}

#[test]
fn tenant_bodies_and_limits_never_panic() {
    fuzz("tenant-body", body(), |bytes| {
        if let Ok(t) = parse_json::<crate::service::TenantBody>("tenant body", &bytes) {
            if let Some(limits) = t.limits {
                if limits.check(true).is_ok() {
                    let _ = limits.apply(&crate::limits::Limits::default());
                }
            }
        }
        Ok(())
    });
    let limit = prop::option::of(any::<u64>());
    let all = (limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit.clone(), limit);
    fuzz("tenant-limits", all, |(m, d, r, b, o, ob, c, cc, res, f)| {
        let l = TenantLimits {
            memory_mb: m,
            deadline_ms: d,
            request_timeout_ms: r,
            max_response_bytes: b,
            max_outbound_requests: o,
            max_outbound_bytes: ob,
            max_crm_data_bytes: c,
            max_concurrent_calls: cc,
            max_resources: res,
            fuel: f,
        };
        if l.check(true).is_ok() {
            let applied = l.apply(&crate::limits::Limits::default());
            prop_assert!(applied.memory_bytes <= 4096 << 20);
            prop_assert!(applied.deadline <= std::time::Duration::from_secs(300));
            let most = 256 * crate::limits::host_bytes_per_call(&crate::limits::Limits::default());
            prop_assert!(crate::limits::host_bytes_per_call(&applied) <= most);
        }
        Ok(())
    });
}

/// Inputs fuzzing (or review) once found wrong, kept as tests.
#[test]
fn regressions() {
    // `[chat, params]` used to parse as a call body (serde takes sequences for structs).
    assert!(parse_call(br#"[{"id": "c"}, {}]"#).is_err());
    // Deep nesting stops at serde_json's recursion limit instead of the stack.
    let deep = format!(r#"{{"chat": {{"crmData": {{"x": {}1{}}}}}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_call(deep.as_bytes()).unwrap_err().contains("recursion limit"));
}
