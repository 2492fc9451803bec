//! The operator console in a real browser: Debian's chromium, headless, driven through
//! chromedriver (WebDriver) on loopback, against the real host. Every test saves a screenshot
//! under `target/console/` and checks that it is not blank. And the API document
//! (`/openapi.json`) against what the host really serves.

use crm_tests::emulator::{Emulator, Fault, Recorded, Reply};
use crm_tests::plando;
use crm_tests::{component, TempDir, TestHost, TestHostConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

const ADMIN: &str = "console-admin-token";

/// chromium under chromedriver, for one test; both go with it.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let profile = TempDir::new("chromium");
        // Chromium's temporary files (its singleton socket's directory among them) go under
        // the profile, which goes with the test: killed, chromium cannot remove them itself.
        let tmp = profile.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        // A process group of its own: the browser it starts goes with it (`Drop`).
        let driver = tokio::process::Command::new(chromedriver())
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (cargo xtask test installs Debian's chromium-driver)");
        // The flags that keep chromium off the network: nothing of it may leave the machine.
        // The console is on 127.0.0.1 (an address, never resolved); every name resolves to
        // nothing, so no background service of the browser can reach out either.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-breakpad",
            "--no-pings",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium(), "args": args}));
        let mut client = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Browser { client: client.expect("a chromium session"), _driver: driver, _profile: profile }
    }

    async fn open(&self, host: &TestHost, route: &str) {
        self.client.goto(&format!("{}/console#/{route}", host.url)).await.unwrap();
    }

    async fn sign_in(&self, host: &TestHost, token: &str) {
        self.open(host, "").await;
        let field = self.wait(Locator::Css("#token")).await;
        field.send_keys(token).await.unwrap();
        self.client.find(Locator::Css("#signin button")).await.unwrap().click().await.unwrap();
    }

    async fn wait(&self, l: Locator<'_>) -> fantoccini::elements::Element {
        self.client.wait().at_most(Duration::from_secs(10)).for_element(l).await.unwrap_or_else(|e| panic!("waiting for {l:?}: {e}"))
    }

    /// The page's text, once it contains `needle`.
    async fn text_with(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.client.find(Locator::Css("body")).await.unwrap().text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the page never showed {needle:?}; it shows:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves `target/console/NAME.png` and checks that it shows something.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let pixel = info.color_type.samples();
        let colors: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(pixel).collect();
        assert!(colors.len() > 16, "{name}.png is blank ({} colours)", colors.len());
    }

    async fn pwned(&self) -> Value {
        self.client.execute("return window.__pwned === undefined ? null : window.__pwned;", vec![]).await.unwrap()
    }
}

impl Drop for Browser {
    /// chromedriver and every chromium process it started, whatever the test's outcome.
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            // SAFETY: a signal to the process group this test started.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

fn chromium() -> String {
    std::env::var("CRM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("CRM_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

async fn plando_host(crm: &plando::PlandoEmulator) -> TestHost {
    let host = TestHost::start_config(TestHostConfig {
        admin_token: Some(ADMIN.into()),
        ..TestHostConfig::default().routes(&[("plando.co.il", &crm.url)])
    })
    .await;
    host.deploy("plando").await;
    let (s, b) = host.put_tenant("acme", json!({"adapter": "plando", "crmConfig": {"token": "tok-SECRET-77", "chat": "77"}, "projectId": "acme"})).await;
    assert_eq!(s, 200, "{b}");
    host
}

async fn plando_crm() -> plando::PlandoEmulator {
    let crm = plando::start("tok-SECRET-77").await;
    crm.with_state(|s| s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567"})));
    crm
}

fn lookup() -> Value {
    json!({"chat": {"id": "c1", "phone": "972501234567", "title": "Dana Levi"}})
}

#[tokio::test]
async fn sign_in_deploy_by_upload_roll_back_and_edit_a_tenant_through_its_form() {
    let crm = plando_crm().await;
    let host = plando_host(&crm).await;
    let first = host.get("/v1/adapters/plando").await.1["digest"].clone();
    let b = Browser::start().await;

    b.sign_in(&host, "not-the-token-at-all").await;
    b.text_with("401 unauthorized").await;
    b.sign_in(&host, ADMIN).await;
    b.text_with("Calls per minute").await;
    host.complete("acme", "getCustomerDetails", lookup()).await;
    b.client.refresh().await.unwrap();
    b.text_with("1 calls, 0 failed").await;
    b.screenshot("overview").await;

    // A new build of Plando, uploaded through the form.
    let dir = TempDir::new("upload");
    let file = dir.path().join("plando-rebuilt.wasm");
    std::fs::write(&file, crm_tests::with_custom_section(component("plando"), "console-upload")).unwrap();
    b.open(&host, "adapters").await;
    b.wait(Locator::Css("#component")).await.send_keys(&file.display().to_string()).await.unwrap();
    b.client.find(Locator::Css("#deploy button")).await.unwrap().click().await.unwrap();
    b.text_with("Deployed plando").await;
    let second = host.get("/v1/adapters/plando").await.1["digest"].clone();
    assert_ne!(second, first, "the upload is the active version");
    // Then the console shows the adapter's page, the upload active.
    b.wait(Locator::XPath("//h1[text()='Adapter plando']")).await;
    b.text_with(&format!("Active: 0.1.0 ({})", second.as_str().unwrap())).await;
    b.screenshot("adapter").await;

    let rollback = b.wait(Locator::XPath("//button[text()='Roll back']")).await;
    rollback.click().await.unwrap();
    b.text_with("rolled back to").await;
    assert_eq!(host.get("/v1/adapters/plando").await.1["digest"], first, "rolled back");

    // The tenant's form: generated from Plando's configSchema, the token write-only.
    b.open(&host, "tenants/acme").await;
    let chat = b.wait(Locator::Css("#cfg-chat")).await;
    let token = b.client.find(Locator::Css("#cfg-token")).await.unwrap();
    assert_eq!(token.attr("type").await.unwrap().as_deref(), Some("password"));
    assert_eq!(token.prop("value").await.unwrap().as_deref(), Some(""), "a secret's value never reaches the page");
    assert!(!b.text_with("crmConfig").await.contains("tok-SECRET-77"));
    chat.clear().await.unwrap();
    chat.send_keys("88").await.unwrap();
    b.client.find(Locator::Css("#tenant-form button.primary")).await.unwrap().click().await.unwrap();
    b.text_with("Saved tenant acme").await;
    b.screenshot("tenant").await;
    let stored = host.host.get_tenant("acme").unwrap();
    assert_eq!(stored.record.crm_config["chat"], "88");
    assert_eq!(stored.record.crm_config["token"], "tok-SECRET-77", "the secret the form left blank is kept");
    assert_eq!(host.complete("acme", "getCustomerDetails", lookup()).await["contact_id"], "501", "and still works");
}

#[tokio::test]
async fn a_failed_call_shows_its_outbound_exchange_with_the_secret_redacted() {
    let crm = plando_crm().await;
    let host = plando_host(&crm).await;
    crm.fault(plando::CONTACT_DETAILS, Fault::Status(500, "access_key tok-SECRET-77 is over quota".into()));
    let (_, out, call_id) = host.call_with_id("acme", "getCustomerDetails", lookup()).await;
    assert_eq!(out["outcome"], "failure", "{out}");
    let b = Browser::start().await;
    b.sign_in(&host, ADMIN).await;
    b.text_with("Calls per minute").await;
    b.open(&host, "tenants/acme/calls?outcome=failure").await;
    b.wait(Locator::Css(&format!("a[href$='{call_id}']"))).await.click().await.unwrap();
    let page = b.text_with("Outbound exchanges").await;
    assert!(page.contains("https://plando.co.il/contact_details"), "{page}");
    assert!(page.contains("500"), "{page}");
    assert!(page.contains("access_key=[redacted]") || page.contains("access_key [redacted]"), "{page}");
    assert!(!page.contains("tok-SECRET-77"), "the secret reached the page:\n{page}");
    b.screenshot("failed-call").await;
}

#[tokio::test]
async fn inbound_events_and_the_audit_log_are_read_page_by_page() {
    let crm = crm_tests::planfix::start("pf-token", "texter").await;
    let host = TestHost::start_config(TestHostConfig {
        admin_token: Some(ADMIN.into()),
        ..TestHostConfig::default().routes(&[("*.planfix.com", &crm.url)])
    })
    .await;
    host.deploy("planfix").await;
    let config = json!({"planfixUrl": "https://acme.planfix.com", "token": "pf-token", "providerId": "texter", "chatToken": "in-token"});
    assert_eq!(host.put_tenant("planco", json!({"adapter": "planfix", "crmConfig": config})).await.0, 200);
    let form = "cmd=newMessage&providerId=texter&chatId=chat-1&contactPhone=%2B972+50-123-4567&channel=whatsapp&token=in-token\
                &message=Hello+from+Planfix&userName=Peter&userLastName=Peterson&taskEmail=task%2B1014%40acme.planfix.com";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tenants/planco/webhook", host.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let b = Browser::start().await;
    b.sign_in(&host, ADMIN).await;
    b.text_with("Calls per minute").await;
    b.open(&host, "tenants/planco/events").await;
    b.text_with("Hello from Planfix").await;
    b.screenshot("events").await;
    b.open(&host, "audit").await;
    let audit = b.text_with("tenant_put").await;
    assert!(audit.contains("deploy") && audit.contains("planfix"), "{audit}");
    b.screenshot("audit").await;
}

#[tokio::test]
async fn a_list_of_100000_tenants_pages_and_searches_quickly() {
    let data = std::sync::Arc::new(TempDir::new("many-tenants"));
    let config = TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default() };
    {
        let host = TestHost::start_in(config.clone(), data.clone()).await;
        host.deploy("whoami").await;
    }
    // 100,000 tenants written straight into the store: validating each through the API is
    // not what is measured here.
    {
        use sqlx::Connection;
        let db = data.path().join(crm_host::store::sqlite::DB_FILE);
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for i in 0..100_000 {
            sqlx::query("INSERT INTO tenants (id, adapter, project_id, crm_config, updated_at_ms) VALUES ($1, 'whoami', $2, '{}', 0)")
                .bind(format!("tenant-{i:06}"))
                .bind(format!("project-{}", i % 977))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let host = TestHost::start_in(config, data.clone()).await;
    let b = Browser::start().await;
    b.sign_in(&host, ADMIN).await;
    b.text_with("100000 tenants").await;
    let started = Instant::now();
    b.open(&host, "tenants").await;
    b.wait(Locator::LinkText("tenant-000099")).await;
    let first_page = started.elapsed();
    let shown = b.client.find(Locator::Css("#page-time")).await.unwrap().text().await.unwrap();
    println!("console: the first page of 100,000 tenants: {} ms in the browser ({shown})", first_page.as_millis());
    b.client.find(Locator::Css("#next-page")).await.unwrap().click().await.unwrap();
    b.wait(Locator::LinkText("tenant-000199")).await;
    b.wait(Locator::Css("#search")).await.send_keys("tenant-09999").await.unwrap();
    b.client.find(Locator::Css("form.row button")).await.unwrap().click().await.unwrap();
    let page = b.text_with("tenant-099999").await;
    assert!(page.contains("tenant-099990") && !page.contains("tenant-000001"), "{page}");
    b.screenshot("tenants").await;
}

/// A CRM whose every answer is markup and script, in bodies and headers.
async fn hostile_crm() -> Emulator<()> {
    fn handle(_: &mut (), r: &Recorded) -> Reply {
        if r.path == "/create" {
            return (500, json!("<img src=x onerror=\"window.__pwned=3\"> failed"));
        }
        (200, json!("<img src=x onerror=\"window.__pwned=1\"></script><script>window.__pwned=2</script><a href=\"javascript:window.__pwned=4\">x</a>"))
    }
    Emulator::start((), handle).await
}

#[tokio::test]
async fn markup_and_script_from_crms_and_adapters_render_as_text() {
    let crm = hostile_crm().await;
    crm.fault("/lookup", Fault::StatusHeaders(200, vec![("x-evil".into(), "<script>window.__pwned=5</script>".into())], "<svg onload=\"window.__pwned=6\">".into()));
    let host = TestHost::start_config(TestHostConfig {
        admin_token: Some(ADMIN.into()),
        ..TestHostConfig::default().routes(&[("crm.test", &crm.url)])
    })
    .await;
    host.deploy("whoami").await;
    let (s, b) = host.put_tenant("evil", json!({"adapter": "whoami", "crmConfig": {"url": "http://crm.test", "token": "t"}, "projectId": "<b>bold</b>"})).await;
    assert_eq!(s, 200, "{b}");
    let (_, ok, ok_id) = host.call_with_id("evil", "lookup", json!({"chat": {"id": "<i>c</i>", "phone": "1"}})).await;
    assert_eq!(ok["outcome"], "complete", "{ok}");
    let (_, failed, failed_id) = host.call_with_id("evil", "create", json!({"chat": {"id": "c", "phone": "1"}, "params": {"x": "<script>window.__pwned=7</script>"}})).await;
    assert_eq!(failed["outcome"], "failure", "{failed}");

    let b = Browser::start().await;
    b.sign_in(&host, ADMIN).await;
    b.text_with("Calls per minute").await;
    for (id, needle) in [(&ok_id, "<svg onload="), (&failed_id, "<img src=x onerror=")] {
        b.open(&host, &format!("tenants/evil/calls/{id}")).await;
        let page = b.text_with(needle).await;
        assert!(page.contains("Outbound exchanges"), "{page}");
        assert_eq!(b.pwned().await, Value::Null, "script from a CRM ran");
        let injected = b.client.execute("return document.querySelectorAll('main img, main script, main svg:not(.chart), main iframe').length;", vec![]).await.unwrap();
        assert_eq!(injected, json!(0), "markup became elements");
        let hrefs = b.client.execute("return [...document.querySelectorAll('a')].map(a => a.getAttribute('href')).filter(h => !h.startsWith('#/') && h !== '/openapi.json');", vec![]).await.unwrap();
        assert_eq!(hrefs, json!([]), "a link that is not the console's own");
    }
    b.screenshot("hostile-call").await;
    b.open(&host, "tenants").await;
    b.text_with("<b>bold</b>").await;
    assert_eq!(b.pwned().await, Value::Null);
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_content_security_policy() {
    let host = TestHost::start_config(TestHostConfig { admin_token: Some(ADMIN.into()), ..TestHostConfig::default() }).await;
    for path in ["/console", "/console/console.js", "/console/console.css"] {
        let r = reqwest::get(format!("{}{path}", host.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h.get("set-cookie").is_none(), "the console sets no cookie: nothing for a cross-site request to ride");
    }
    let html = reqwest::get(format!("{}/console", host.url)).await.unwrap().text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains(" style=") && !html.contains("http"), "inline script, style or outside URL:\n{html}");
    let api = reqwest::get(format!("{}/healthz", host.url)).await.unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff", "API answers are never sniffed");
}

// ----- the API document --------------------------------------------------------------------

/// Every field of `value` is in `schema` (following `$ref`, `allOf`, `oneOf`, arrays,
/// additional properties); `path` names where, for the failure message.
fn check_fields(doc: &Value, schema: &Value, value: &Value, path: &str, missing: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(variants) = schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array) {
        let fits = variants.iter().find(|v| {
            let mut m = Vec::new();
            check_fields(doc, v, value, path, &mut m);
            m.is_empty()
        });
        if fits.is_none() {
            missing.push(format!("{path}: no variant of the documented schema fits {value}"));
        }
        return;
    }
    match value {
        Value::Object(fields) => {
            let mut props = Map::new();
            let mut open = false;
            collect_properties(doc, schema, &mut props, &mut open);
            for (k, v) in fields {
                match props.get(k) {
                    Some(s) => check_fields(doc, s, v, &format!("{path}.{k}"), missing),
                    None if open => {}
                    None => missing.push(format!("{path}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_fields(doc, s, v, &format!("{path}[{i}]"), missing);
                }
            }
        }
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn collect_properties(doc: &Value, schema: &Value, props: &mut Map<String, Value>, open: &mut bool) {
    let schema = resolve(doc, schema);
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        props.extend(p.clone());
    }
    match schema.get("additionalProperties") {
        Some(Value::Bool(false)) => {}
        Some(_) => *open = true,
        None if schema.get("properties").is_none() && schema.get("allOf").is_none() => *open = true,
        None => {}
    }
    for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        collect_properties(doc, part, props, open);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_field_the_host_answers() {
    let crm = plando_crm().await;
    let host = plando_host(&crm).await;
    let (s, doc) = host.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    // Every documented route is served (not the fallback, not 405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys().filter(|m| ["get", "put", "post", "patch", "delete"].contains(&m.as_str())) {
            // Names that exist nowhere: probing must not change anything.
            let concrete = path.replace("{name}", "ghost").replace("{tenant}", "ghost").replace("{digest}", "sha256:00").replace("{func_id}", "x");
            let concrete = concrete.replace("{key_id}", "k").replace("{call_id}", "c").replace("{id}", "r");
            let r = reqwest::Client::new()
                .request(method.to_uppercase().parse().unwrap(), format!("{}{concrete}", host.url))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(status != 405 && !body.contains("no such endpoint"), "{method} {path} is documented but not served: {status} {body}");
        }
    }
    // Every field the host answers is documented, for each kind of answer.
    host.complete("acme", "getCustomerDetails", lookup()).await;
    let (_, calls) = host.get("/v1/tenants/acme/calls").await;
    let call_id = calls["calls"][0]["callId"].as_str().unwrap().to_string();
    let digest = host.get("/v1/adapters/plando").await.1["digest"].as_str().unwrap().to_string();
    let (_, report) = host.post_json(&format!("/v1/adapters/plando/versions/{digest}/replay"), json!({})).await;
    let staged = host.put_raw("/v1/adapters/plando?stage=true", crm_tests::with_custom_section(component("plando"), "doc")).await.1;
    let (s, _) = host.post_json("/v1/adapters/plando/canary", json!({"digest": staged["digest"], "percent": 50})).await;
    assert_eq!(s, 201);
    let (_, key) = host.post_raw("/v1/tenants/acme/keys", vec![]).await;
    let checks: Vec<(&str, &str, String, Value)> = vec![
        ("/healthz", "get", "200".into(), host.get("/healthz?deep=1").await.1),
        ("/v1/adapters", "get", "200".into(), host.get("/v1/adapters").await.1),
        ("/v1/adapters/{name}", "get", "200".into(), host.get("/v1/adapters/plando").await.1),
        ("/v1/adapters/{name}", "put", "201".into(), staged.clone()),
        ("/v1/adapters/{name}/versions", "get", "200".into(), host.get("/v1/adapters/plando/versions").await.1),
        ("/v1/adapters/{name}/versions/{digest}/replay", "post", "200".into(), report.clone()),
        ("/v1/adapters/{name}/replays", "get", "200".into(), host.get("/v1/adapters/plando/replays").await.1),
        ("/v1/adapters/{name}/canary", "get", "200".into(), host.get("/v1/adapters/plando/canary").await.1),
        ("/v1/tenants", "get", "200".into(), host.get("/v1/tenants").await.1),
        ("/v1/tenants/{tenant}", "get", "200".into(), host.get("/v1/tenants/acme").await.1),
        ("/v1/tenants/{tenant}/keys", "post", "201".into(), key),
        ("/v1/tenants/{tenant}/stats", "get", "200".into(), host.get("/v1/tenants/acme/stats").await.1),
        ("/v1/tenants/{tenant}/calls", "get", "200".into(), calls.clone()),
        ("/v1/tenants/{tenant}/calls/{call_id}", "get", "200".into(), host.get(&format!("/v1/tenants/acme/calls/{call_id}")).await.1),
        ("/v1/tenants/{tenant}/crm/{func_id}", "post", "200".into(), host.call("acme", "getCustomerDetails", lookup()).await.1),
        ("/v1/tenants/{tenant}/crm/{func_id}", "post", "200".into(), host.call("acme", "nope", lookup()).await.1),
        ("/v1/tenants/{tenant}/events", "get", "200".into(), host.get("/v1/tenants/acme/events").await.1),
        ("/v1/audit", "get", "200".into(), host.get("/v1/audit").await.1),
        ("/v1/overview", "get", "200".into(), host.get("/v1/overview").await.1),
        ("/v1/tenants/{tenant}", "get", "404".into(), host.get("/v1/tenants/ghost").await.1),
    ];
    let mut missing = Vec::new();
    for (path, method, status, answer) in &checks {
        let response = &doc["paths"][path][method]["responses"][status];
        assert!(response.is_object(), "{method} {path} {status} is not documented");
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} {status} documents no JSON body");
        check_fields(&doc, schema, answer, &format!("{method} {path}"), &mut missing);
    }
    assert!(missing.is_empty(), "fields the host answers but the document does not describe:\n{}", missing.join("\n"));
}
