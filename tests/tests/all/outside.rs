//! An adapter in a repository of its own: `cargo xtask new-adapter` writes it to a temporary
//! directory outside this tree, its own native tests (unit, and end to end against the SDK's
//! loopback emulator) pass, `cargo xtask plugins --path` builds it into a component, and the
//! host hot-deploys it and runs it against an emulator.

use crm_tests::emulator::{Emulator, Recorded, Reply};
use crm_tests::{TempDir, TestHost};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

/// The xtask binary: `cargo xtask test` names it; otherwise the one cargo built last.
fn xtask() -> PathBuf {
    std::env::var_os("CRM_XTASK").map(PathBuf::from).unwrap_or_else(|| {
        let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xtask");
        assert!(built.is_file(), "no xtask binary: run the tests with `cargo xtask test` (or `cargo build -p xtask` first)");
        built
    })
}

/// A command that does not inherit the outer cargo's build settings.
fn clean(mut c: Command) -> Command {
    for var in ["CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "CARGO_BUILD_TARGET", "RUSTUP_TOOLCHAIN"] {
        c.env_remove(var);
    }
    c
}

/// Runs `c` to success; its standard output.
fn run(what: &str, mut c: Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The JSON CRM the skeleton is written for.
async fn crm() -> Emulator<()> {
    fn handle(_: &mut (), r: &Recorded) -> Reply {
        if r.header("authorization") != Some("Bearer t0k-SECRET") {
            return (401, json!({"message": "bad token"}));
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/v1/contacts") if r.query == "phone=972501234567" => (200, json!({"contacts": [{"id": 7, "name": "Dana"}]})),
            ("GET", "/v1/contacts") => (200, json!({"contacts": []})),
            ("POST", "/v1/deals") => (201, json!({"id": "d-1"})),
            _ => (404, json!({"message": "no such route"})),
        }
    }
    Emulator::start((), handle).await
}

#[tokio::test]
async fn an_adapter_written_outside_the_tree_builds_passes_its_tests_and_hot_deploys() {
    let outside = TempDir::new("outside-adapter");
    let dir = outside.path().join("acme-crm");
    let mut new = clean(Command::new(xtask()));
    new.args(["new-adapter", "acme-crm", "--dir"]).arg(&dir);
    run("xtask new-adapter", new);
    let mut tests = clean(Command::new("cargo"));
    tests.arg("test").arg("--manifest-path").arg(dir.join("Cargo.toml"));
    let ran = run("the adapter's own tests", tests);
    for test in ["tests::a_contact_is_found_by_phone", "a_contact_is_found_and_a_deal_created_over_http", "the_crms_refusals_are_typed_errors"] {
        assert!(ran.contains(&format!("{test} ... ok")), "the skeleton's unit and emulator tests ran: {test} missing from\n{ran}");
    }
    let mut build = clean(Command::new(xtask()));
    build.args(["plugins", "--path"]).arg(&dir);
    run("xtask plugins --path", build);
    let component = std::fs::read(dir.join("target/plugins/acme-crm.wasm")).expect("the component");

    let crm = crm().await;
    let host = TestHost::start(&[("api.acme.test", &crm.url)]).await;
    let (s, deployed) = host.put_raw("/v1/adapters/acme-crm", component).await;
    assert_eq!((s, deployed["version"].as_str()), (201, Some("0.1.0")), "{deployed}");
    let config = json!({"baseUrl": "https://api.acme.test/v1", "token": "t0k-SECRET"});
    let (s, b) = host.put_tenant("acme", json!({"adapter": "acme-crm", "crmConfig": config})).await;
    assert_eq!(s, 200, "{b}");
    let chat = json!({"chat": {"id": "c1", "phone": "972501234567", "title": "Dana"}});
    assert_eq!(host.complete("acme", "getCustomerDetails", chat.clone()).await, json!({"contact_id": 7, "name": "Dana"}));
    assert_eq!(host.complete("acme", "newOpportunity", chat).await, json!({"deal_id": "d-1"}));
    let other = json!({"chat": {"id": "c2", "phone": "1"}});
    assert_eq!(host.failure("acme", "getCustomerDetails", other).await["kind"], "not_found");
    let deal = crm.requests_to("/v1/deals").pop().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&deal.body).unwrap();
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'), "the call's time, from call.now(): {body}");
}
