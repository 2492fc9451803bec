//! Fuzz targets for what tenants and CRMs hand the adapters: every adapter's crmConfig
//! validation, the SDK's form decoding and Planfix's webhook handling (form bodies). Run as
//! tests (256 cases each); `cargo xtask fuzz [SECONDS]` runs each for that long. The same
//! code runs in the component, so a panic here is a trap there. A failure prints the
//! smallest input found: add it to `regressions` before fixing it.

#[cfg(test)]
mod targets {
    use crm_sdk::testing::Recorder;
    use crm_sdk::{json, Adapter, Config, CrmError, Form, Map, Origin, Value, WebhookRequest};
    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

    fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
    where
        S::Value: std::fmt::Debug,
    {
        let secs: u64 = std::env::var("CRM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        let started = std::time::Instant::now();
        let mut cases = 0u64;
        loop {
            let mut runner = TestRunner::new(RunnerConfig { cases: 256, failure_persistence: None, ..RunnerConfig::default() });
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

    /// Config values: the adapters' own field names with values of every JSON type.
    fn config() -> impl Strategy<Value = Map<String, Value>> {
        let key = prop_oneof![
            Just("token"), Just("chat"), Just("defaultEmail"), Just("lm_form"), Just("lm_key"),
            Just("getCustomerDetailsUrl"), Just("planfixUrl"), Just("providerId"), Just("chatToken"),
            Just("channel"), Just("mode"), Just("fields"), Just("x"),
        ];
        let value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "\\PC{0,30}".prop_map(Value::String),
            "(https?|ftp|javascript)://[a-z0-9.\\-\\[\\]:@%]{0,30}(/[\\PC]{0,10})?".prop_map(Value::String),
            prop::collection::vec("\\PC{0,8}", 0..4).prop_map(|v| json!(v)),
            Just(json!({"a": {"b": []}})),
        ];
        prop::collection::vec((key, value), 0..8).prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn check_validation<A: Adapter>(map: Map<String, Value>) -> Result<(), TestCaseError> {
        match A::default().validate_config(&Config::new(Origin::Config, map)) {
            Ok(()) => {}
            Err(CrmError::Config { field, message }) => prop_assert!(!message.is_empty(), "field {field}: empty message"),
            Err(other) => prop_assert!(false, "validation must answer with a config error, not {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn crm_config_validation_never_panics_and_names_the_field() {
        fuzz("plando-config", config(), check_validation::<crm_plando::Plando>);
        fuzz("leadim-config", config(), check_validation::<crm_leadim::LeadIm>);
        fuzz("planfix-config", config(), check_validation::<crm_planfix::Planfix>);
    }

    /// Form bodies: real Planfix field names, odd encodings, broken escapes, raw bytes.
    fn form_body() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("token"), Just("cmd"), Just("providerId"), Just("chatId"), Just("contactPhone"), Just("messageId"),
            Just("message"), Just("contactName"), Just("attachments[name]"), Just("attachments[url]"), Just("x"),
        ];
        let value = prop_oneof![
            Just("in-token".to_string()), Just("newMessage".to_string()), Just("texter".to_string()),
            "\\PC{0,20}", "[%+&=0-9A-Fa-f]{0,12}",
        ];
        prop_oneof![
            prop::collection::vec((name, value), 0..10).prop_map(|kv| {
                let mut s = form_urlencoded_pairs(&kv);
                s.push('&');
                s.into_bytes()
            }),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    fn form_urlencoded_pairs(kv: &[(&str, String)]) -> String {
        let mut f = Form::new();
        for (k, v) in kv {
            f.push(*k, v.as_str());
        }
        f.encode()
    }

    #[test]
    fn form_decoding_and_the_planfix_webhook_never_panic() {
        fuzz("form-decode", prop::collection::vec(any::<u8>(), 0..300), |bytes| {
            let _ = Form::decode(&bytes);
            Ok(())
        });
        let config = json!({"planfixUrl": "https://acme.planfix.com", "token": "t", "providerId": "texter", "chatToken": "in-token"});
        let ct = prop_oneof![
            Just("application/x-www-form-urlencoded"),
            Just("application/x-www-form-urlencoded; charset=utf-8"),
            Just("application/json"),
            Just(""),
        ];
        fuzz("planfix-webhook", (form_body(), ct, prop_oneof![Just("POST"), Just("GET")]), |(body, ct, method)| {
            let request = WebhookRequest {
                method: method.into(),
                path: "/".into(),
                query: String::new(),
                headers: vec![("content-type".into(), ct.into())],
                body,
            };
            let cfg = Config::new(Origin::Config, config.as_object().unwrap().clone());
            let out = crm_planfix::Planfix.handle_webhook("acme", &cfg, &request, &Recorder::new());
            match out {
                Ok(o) => prop_assert!(matches!(o.response.status, 200 | 400 | 401), "status {}", o.response.status),
                Err(e) => prop_assert!(false, "the webhook answers the CRM, it does not fail: {e:?}"),
            }
            Ok(())
        });
    }

    /// Inputs fuzzing once found wrong, kept as tests.
    #[test]
    fn regressions() {
        assert!(Form::decode(b"%").pairs().len() <= 1);
        assert!(Form::decode(b"a=%zz&b=%e2%82").pairs().len() == 2);
        let config = |url: &str| [("planfixUrl".to_string(), json!(url))].into_iter().collect::<Map<String, Value>>();
        check_validation::<crm_planfix::Planfix>(config("http:///A\u{1bc70}")).unwrap();
    }
}
