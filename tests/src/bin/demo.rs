//! The main job, end to end on loopback: start a Plando emulator and the real `crm-host`
//! binary with the built components, configure a tenant, run every Plando function and one
//! failure, and show what Plando received. Exits non-zero if anything is off.

use crm_tests::plando::{self, CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let crm = plando::start("demo-token").await;
    crm.with_state(|s| {
        s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567",
                             "email": "dana@example.com", "category_1": "gold", "category_2": "active"}))
    });
    println!("== Plando emulator on {} (stands in for https://plando.co.il)", crm.url);

    let bin = std::env::var("CRM_HOST_BIN").unwrap_or_else(|_| "target/debug/crm-host".into());
    let plugins = crm_tests::plugins_dir();
    let upstream = format!("plando.co.il={}", crm.url);
    println!("== {bin} serve --listen 127.0.0.1:0 --plugins {} --upstream {upstream} --upstream-only", plugins.display());
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream-only", "--upstream", &upstream])
        .arg("--plugins")
        .arg(&plugins)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .spawn()?;
    let (line, url) = crm_tests::read_listen_url(child.stdout.take().expect("piped"))?;
    println!("   {line}");

    let result = run(&url, &crm).await;
    let _ = child.kill();
    let _ = child.wait();
    result?;
    println!("\n== demo complete: every call behaved as documented");
    Ok(())
}

async fn run(url: &str, crm: &plando::PlandoEmulator) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let show = |label: &str, method: &str, path: &str, body: Option<&Value>, status: u16, answer: &Value| {
        println!("\n$ curl -X {method} {url}{path}{}", body.map(|b| format!(" -d '{b}'")).unwrap_or_default());
        println!("# {label}\n{status} {}", serde_json::to_string_pretty(answer).unwrap());
    };

    let (s, adapters) = get(&http, &format!("{url}/v1/adapters")).await?;
    show("deployed adapters", "GET", "/v1/adapters", None, s, &adapters);

    let tenant = json!({"adapter": "plando", "projectId": "acme",
        "crmConfig": {"token": "demo-token", "chat": "77", "attrFields": "category_1,category_2",
                      "statusField": "category_2", "defaultEmail": "support@acme.example"}});
    let (s, t) = send(&http, "PUT", &format!("{url}/v1/tenants/acme"), &tenant).await?;
    show("configure tenant acme (the token comes back redacted)", "PUT", "/v1/tenants/acme", Some(&tenant), s, &t);
    anyhow::ensure!(s == 200, "tenant not configured");

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
    for (func, body, expected) in calls {
        let path = format!("/v1/tenants/acme/crm/{func}");
        let (s, out) = send(&http, "POST", &format!("{url}{path}"), &body).await?;
        show(&format!("{func} -> {expected}"), "POST", &path, Some(&body), s, &out);
        anyhow::ensure!(s == 200 && out["outcome"] == expected, "{func}: expected {expected}, got {out}");
    }

    println!("\n== what Plando received");
    for path in [CONTACT_DETAILS, LEAD_FORM, WHATSAPP_SESSION] {
        for r in crm.requests_to(path) {
            let form: Vec<String> = r
                .form()
                .into_iter()
                .map(|(k, v)| if k == "access_key" { format!("{k}=***") } else { format!("{k}={v}") })
                .collect();
            println!("POST {path} (Host: {})\n    {}", r.header("host").unwrap_or("-"), form.join("\n    "));
        }
    }
    Ok(())
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let r = http.get(url).send().await?;
    Ok((r.status().as_u16(), r.json().await?))
}

async fn send(http: &reqwest::Client, method: &str, url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let r = http.request(method.parse()?, url).json(body).send().await?;
    Ok((r.status().as_u16(), r.json().await?))
}
