//! The main job, end to end on loopback: an emulated Plando, the real `crm-host` binary on
//! its SQLite default with the bundled adapters, a tenant, the documented flows (look up a
//! contact, create a lead, push a transcript), an API key, a hot deploy under load with
//! every call counted, a rollback, a call's trace. Then it keeps serving and prints what to
//! try next (`--once`: exits instead). Exits non-zero if anything is off.
//!
//! Flags: `--once`, `--data-dir DIR` (default `./crm-host-data`), `--listen ADDR` (default
//! 127.0.0.1:8080, or a free port if that one is taken).

use crm_tests::plando::{self, CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION};
use crm_tests::{leadim, planfix};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ADMIN_TOKEN: &str = "demo-admin-token";

struct Args {
    once: bool,
    data_dir: String,
    listen: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { once: false, data_dir: "crm-host-data".into(), listen: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--once" => a.once = true,
            "--data-dir" => a.data_dir = it.next().ok_or_else(|| anyhow::anyhow!("--data-dir needs a value"))?,
            "--listen" => a.listen = Some(it.next().ok_or_else(|| anyhow::anyhow!("--listen needs a value"))?),
            other => anyhow::bail!("unknown argument {other} (expected --once, --data-dir DIR, --listen ADDR)"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let crm = plando::start("demo-token").await;
    crm.with_state(|s| {
        s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567",
                             "email": "dana@example.com", "category_1": "gold", "category_2": "active"}))
    });
    println!("== EMULATED Plando CRM on {} (stands in for https://plando.co.il; nothing leaves this machine)", crm.url);
    let lead_im = leadim::start("leadim-auth", "form-1", "form-key").await;
    lead_im.with_state(|s| s.add_lead(json!({"aid": leadim::ACCOUNT, "lid": "123", "phone": "972501234567", "שם": "דנה לוי", "מטפל": "אבי"})));
    println!("== EMULATED Lead.IM on {} (stands in for api.lead.im and the account's lookup URL)", lead_im.url);
    let plan_fix = planfix::start("planfix-token", "texter").await;
    println!("== EMULATED Planfix on {} (stands in for https://*.planfix.com)", plan_fix.url);

    let bin = std::env::var("CRM_HOST_BIN").unwrap_or_else(|_| "target/debug/crm-host".into());
    let plugins = crm_tests::plugins_dir();
    let upstream = format!("plando.co.il={}", crm.url);
    let routes = [
        upstream.clone(),
        format!("proxy.leadim.xyz={}", lead_im.url),
        format!("api.lead.im={}", lead_im.url),
        format!("*.planfix.com={}", plan_fix.url),
    ];
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None if !args.once && std::net::TcpListener::bind("127.0.0.1:8080").is_ok() => "127.0.0.1:8080".into(),
        None => "127.0.0.1:0".into(),
    };
    let route_flags: Vec<String> = routes.iter().flat_map(|r| ["--upstream".to_string(), r.clone()]).collect();
    println!(
        "== {bin} serve --listen {listen} --data-dir {} --plugins {} {} --upstream-only",
        args.data_dir,
        plugins.display(),
        route_flags.join(" ")
    );
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &listen, "--upstream-only", "--data-dir", &args.data_dir])
        .args(&route_flags)
        .arg("--plugins")
        .arg(&plugins)
        .env("CRM_HOST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .spawn()?;
    let (line, url) = crm_tests::read_listen_url(child.stdout.take().expect("piped"))?;
    println!("   {line}  (admin token: {ADMIN_TOKEN}; state in {}/)", args.data_dir);
    println!("   the console: {url}/console  (sign in with the admin token)");

    let result = async {
        walk(&url, &crm).await?;
        walk_leadim(&url, &lead_im).await?;
        walk_planfix(&url, &plan_fix).await
    }
    .await;
    if result.is_ok() && !args.once {
        println!("\n== demo complete: every call behaved as documented. The host keeps serving; try:\n");
        println!("open {url}/console in a browser (admin token: {ADMIN_TOKEN}); the API is described at {url}/openapi.json\n");
        println!("export CRM_HOST_SERVER={url} CRM_HOST_TOKEN={ADMIN_TOKEN}");
        println!("{bin} adapters");
        println!("{bin} versions plando");
        println!("{bin} invoke acme getCustomerDetails --chat '{{\"id\": \"c1\", \"phone\": \"972501234567\"}}'");
        println!("{bin} invoke leadco getCustomerDetails --chat '{{\"id\": \"c1\", \"phone\": \"972501234567\"}}'");
        println!("curl -H \"Authorization: Bearer {ADMIN_TOKEN}\" {url}/v1/tenants/planco/events");
        println!("{bin} calls acme          # then: {bin} calls acme --id <callId>");
        println!("{bin} deploy target/plugins/plando.wasm --stage   # or drop a new .wasm into {}", plugins.display());
        println!("curl {url}/metrics");
        println!("\nCtrl-C stops the host and the emulator.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = child.kill();
    let _ = child.wait();
    result?;
    if args.once {
        println!("\n== demo complete: every call behaved as documented");
    }
    Ok(())
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, method: &str, path: &str, token: &str, body: Option<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
        let mut r = self.http.request(method.parse()?, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let call_id = resp.headers().get("x-call-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = resp.bytes().await?;
        let mut value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        if let (Some(id), Value::Object(m)) = (call_id, &mut value) {
            // Shown as the answer's header would be, so the walk-through can name calls.
            m.insert("x-call-id".into(), id.into());
        }
        Ok((status, value))
    }

    /// Sends and prints the exchange as the equivalent curl command.
    async fn show(&self, label: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let (status, answer) = self.send(method, path, ADMIN_TOKEN, body.map(|b| b.to_string().into_bytes())).await?;
        println!("\n# {label}");
        println!("$ curl -X {method} {}{path}{}", self.url, body.map(|b| format!(" -d '{b}'")).unwrap_or_default());
        let mut shown = answer.clone();
        if let Some(id) = shown.as_object_mut().and_then(|m| m.remove("x-call-id")) {
            println!("x-call-id: {}", id.as_str().unwrap_or_default());
        }
        println!("{status} {}", serde_json::to_string_pretty(&shown)?);
        Ok((status, answer))
    }
}

async fn walk(url: &str, crm: &plando::PlandoEmulator) -> anyhow::Result<()> {
    let api = Api { url: url.to_string(), http: reqwest::Client::new() };

    println!("\n== 1. The bundled adapters, deployed from the plugins directory (or restored from the database)");
    let (_, adapters) = api.show("deployed adapters", "GET", "/v1/adapters", None).await?;
    anyhow::ensure!(adapters["adapters"].as_array().is_some_and(|a| a.iter().any(|x| x["name"] == "plando")), "plando is not deployed");

    println!("\n== 2. A tenant on Plando (its token comes back redacted)");
    let tenant = json!({"adapter": "plando", "projectId": "acme",
        "crmConfig": {"token": "demo-token", "chat": "77", "attrFields": "category_1,category_2",
                      "statusField": "category_2", "defaultEmail": "support@acme.example"}});
    let (s, _) = api.show("configure tenant acme", "PUT", "/v1/tenants/acme", Some(&tenant)).await?;
    anyhow::ensure!(s == 200, "tenant not configured");

    println!("\n== 3. The documented flows: look up a contact, create a lead, push the transcript");
    let chat = json!({"id": "chat-1", "phone": "+972-50-123-4567", "title": "Dana Levi",
        "agent": {"email": "avi@acme.example", "name": "Avi"},
        "messages": [
            {"id": "m1", "direction": "incoming", "text": "Hi, I need a quote", "timestamp": 1767000000000u64, "from": "972501234567", "to": "972700000000"},
            {"id": "m2", "direction": "outgoing", "text": "Sure, sending it", "timestamp": 1767000060000u64, "from": "972700000000", "to": "972501234567",
             "media": [{"url": "https://files.example/quote.pdf", "fileName": "quote.pdf", "mimeType": "application/pdf"}]}]});
    let calls = [
        ("getCustomerDetails", json!({"chat": chat}), "complete"),
        ("newOpportunity", json!({"chat": chat, "params": {"contact_first_name": "Dana", "tags": "whatsapp,bot"}}), "complete"),
        ("closeTicket", json!({"chat": chat}), "complete"),
        ("sendInvoice", json!({"chat": chat}), "failure"),
    ];
    let mut call_ids = Vec::new();
    for (func, body, expected) in calls {
        let path = format!("/v1/tenants/acme/crm/{func}");
        let (s, out) = api.show(&format!("{func} -> on_{expected}"), "POST", &path, Some(&body)).await?;
        anyhow::ensure!(s == 200 && out["outcome"] == expected, "{func}: expected {expected}, got {out}");
        call_ids.push(out["x-call-id"].as_str().unwrap_or_default().to_string());
    }

    println!("\n== 4. The platform calls with a tenant API key (shown once, stored hashed)");
    let (s, key) = api.send("POST", "/v1/tenants/acme/keys", ADMIN_TOKEN, None).await?;
    anyhow::ensure!(s == 201, "no key: {key}");
    let tenant_key = key["key"].as_str().unwrap_or_default().to_string();
    println!("key {} issued; a call with it:", key["keyId"]);
    let body = json!({"chat": chat}).to_string().into_bytes();
    let (s, out) = api.send("POST", "/v1/tenants/acme/crm/getCustomerDetails", &tenant_key, Some(body.clone())).await?;
    println!("{s} outcome={} contact_id={}", out["outcome"], out["crmData"]["contact_id"]);
    anyhow::ensure!(out["outcome"] == "complete", "{out}");
    let (s, _) = api.send("POST", "/v1/tenants/acme/crm/getCustomerDetails", "wrong-key", Some(body.clone())).await?;
    println!("{s} with a wrong key");
    anyhow::ensure!(s == 401, "a wrong key was accepted");

    println!("\n== 5. Why did a call go where it went? Its trace (secrets redacted)");
    for id in [&call_ids[0], &call_ids[3]] {
        let (s, trace) = api.send("GET", &format!("/v1/tenants/acme/calls/{id}"), ADMIN_TOKEN, None).await?;
        anyhow::ensure!(s == 200, "no trace for call {id}: {trace}");
        println!("$ crm-host calls acme --id {id}");
        println!("{} {}@{} -> {} {}", trace["funcId"], trace["adapter"], trace["version"], trace["outcome"], trace["error"]["kind"]);
        for e in trace["outbound"].as_array().into_iter().flatten() {
            println!("  attempt {}: {} {} -> {} in {:.1} ms", e["attempt"], e["method"], e["url"], e["status"], e["durationMs"].as_f64().unwrap_or(0.0));
            println!("    request body: {}", e["requestBody"]["data"]);
        }
        anyhow::ensure!(!trace.to_string().contains("demo-token"), "the token leaked into a trace");
    }

    println!("\n== 6. Hot deploy through the replay gate while 8 clients call continuously, then roll back");
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, key, body, failed, done, stop) =
            (url.to_string(), tenant_key.clone(), body.clone(), failed.clone(), done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = match http.post(format!("{url}/v1/tenants/acme/crm/getCustomerDetails")).bearer_auth(&key).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => r.json::<Value>().await.is_ok_and(|v| v["outcome"] == "complete"),
                    _ => false,
                };
                if ok { done.fetch_add(1, Ordering::Relaxed) } else { failed.fetch_add(1, Ordering::Relaxed) };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A rebuild of the adapter: same code, a new digest (as a new build would have).
    let rebuilt = crm_tests::with_custom_section(crm_tests::component("plando"), "demo-rebuild");
    // Staged, checked against the last 200 recorded calls offline, activated only if it passes.
    let (s, deployed) = api.send("PUT", "/v1/adapters/plando?replay=200", ADMIN_TOKEN, Some(rebuilt)).await?;
    anyhow::ensure!(s == 201, "deploy refused: {deployed}");
    let replay = &deployed["replay"];
    println!("$ curl -X PUT {url}/v1/adapters/plando?replay=200 --data-binary @plando.wasm");
    println!(
        "replayed {} recorded calls offline (nothing sent to the CRM): {} -> verdict {}",
        replay["calls"],
        replay["summary"],
        replay["verdict"]
    );
    println!("deployed {} {} ({}) with calls in flight", deployed["version"], deployed["digest"], deployed["state"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, back) = api.send("POST", "/v1/adapters/plando/rollback", ADMIN_TOKEN, None).await?;
    anyhow::ensure!(s == 200, "rollback refused: {back}");
    println!("rolled back to {}", back["digest"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let (ok, bad) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("calls during deploy and rollback: {ok} complete, {bad} failed");
    anyhow::ensure!(bad == 0 && ok > 0, "{bad} calls failed during the hot deploy");
    api.show("versions, newest first", "GET", "/v1/adapters/plando/versions", None).await?;

    println!("\n== 7. What the (emulated) Plando received");
    for path in [CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION] {
        let requests = crm.requests_to(path);
        if let Some(r) = requests.first() {
            let form: Vec<String> = r
                .form()
                .into_iter()
                .map(|(k, v)| if k == "access_key" { format!("{k}=***") } else { format!("{k}={v}") })
                .collect();
            println!("POST {path} x{} (Host: {}), first one:\n    {}", requests.len(), r.header("host").unwrap_or("-"), form.join("\n    "));
        }
    }
    Ok(())
}

/// Lead.IM: look a lead up by phone (Hebrew fields), then create one.
async fn walk_leadim(url: &str, crm: &leadim::LeadImEmulator) -> anyhow::Result<()> {
    let api = Api { url: url.to_string(), http: reqwest::Client::new() };
    println!("\n== 8. Lead.IM: a tenant, a lookup by phone, a new lead");
    let tenant = json!({"adapter": "leadim", "projectId": "leadco", "crmConfig": {
        "lm_form": "form-1", "lm_key": "form-key", "token": "leadim-auth", "getCustomerDetailsUrl": leadim::LOOKUP_URL}});
    let (s, _) = api.show("configure tenant leadco (Lead.IM)", "PUT", "/v1/tenants/leadco", Some(&tenant)).await?;
    anyhow::ensure!(s == 200, "Lead.IM tenant not configured");
    let chat = json!({"id": "chat-2", "phone": "972501234567", "title": "Dana Levi",
        "nodes": {"lead_get_email": "dana@example.com"},
        "messages": [{"id": "m1", "direction": "outgoing", "text": "שלום! איך אפשר לעזור?", "timestamp": 1767000000000u64, "from": "a", "to": "b"}]});
    let (s, out) = api.show("getCustomerDetails -> on_complete", "POST", "/v1/tenants/leadco/crm/getCustomerDetails", Some(&json!({"chat": chat}))).await?;
    anyhow::ensure!(s == 200 && out["outcome"] == "complete", "Lead.IM lookup: {out}");
    let (s, out) = api.show("openTicket (create lead) -> on_complete", "POST", "/v1/tenants/leadco/crm/openTicket", Some(&json!({"chat": chat}))).await?;
    anyhow::ensure!(s == 200 && out["outcome"] == "complete", "Lead.IM create: {out}");
    for r in crm.requests() {
        println!("Lead.IM received: {} {}?{}", r.method, r.path, r.query.replace("form-key", "***"));
    }
    Ok(())
}

/// Planfix: open a ticket (a task), look it up, then Planfix answers through the webhook
/// and the platform reads the message.
async fn walk_planfix(url: &str, crm: &planfix::PlanfixEmulator) -> anyhow::Result<()> {
    let api = Api { url: url.to_string(), http: reqwest::Client::new() };
    println!("\n== 9. Planfix: a ticket becomes a task; Planfix's reply comes back through the webhook");
    let tenant = json!({"adapter": "planfix", "projectId": "planco", "crmConfig": {
        "planfixUrl": "https://planco.planfix.com", "token": "planfix-token", "providerId": "texter", "chatToken": "from-planfix"}});
    let (s, _) = api.show("configure tenant planco (Planfix)", "PUT", "/v1/tenants/planco", Some(&tenant)).await?;
    anyhow::ensure!(s == 200, "Planfix tenant not configured");
    let chat = json!({"id": "chat-3", "phone": "972501234567", "title": "Dana Levi",
        "messages": [{"id": "m1", "direction": "incoming", "text": "My order is late", "timestamp": 1767000000000u64, "from": "a", "to": "b"}]});
    for func in ["openTicket", "getCustomerDetails"] {
        let (s, out) = api.show(&format!("{func} -> on_complete"), "POST", &format!("/v1/tenants/planco/crm/{func}"), Some(&json!({"chat": chat}))).await?;
        anyhow::ensure!(s == 200 && out["outcome"] == "complete", "Planfix {func}: {out}");
    }
    let task = crm.with_state(|s| s.tasks.first().map(|t| (t.number, t.title.clone())));
    println!("Planfix now has task {task:?}");

    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("cmd", "newMessage"), ("providerId", "texter"), ("chatId", "chat-3"), ("token", "from-planfix"),
                   ("message", "We are on it, sorry for the wait"), ("userName", "Peter"), ("userLastName", "Peterson")] {
        form.append_pair(k, v);
    }
    let resp = api.http.post(format!("{url}/v1/tenants/planco/webhook"))
        .header("content-type", "application/x-www-form-urlencoded").body(form.finish()).send().await?;
    let status = resp.status().as_u16();
    println!("\n# Planfix posts its reply (as Planfix would)\n$ curl -X POST {url}/v1/tenants/planco/webhook -d cmd=newMessage -d chatId=chat-3 -d token=… -d message=…");
    println!("{status} {}", resp.text().await?);
    anyhow::ensure!(status == 200, "webhook refused");
    let (s, events) = api.show("the platform reads it (stored before Planfix got its 200)", "GET", "/v1/tenants/planco/events", None).await?;
    anyhow::ensure!(s == 200 && events["events"].as_array().is_some_and(|e| !e.is_empty()), "events: {events}");
    Ok(())
}
