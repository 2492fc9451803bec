//! The native baseline server: the host's call API (`POST /v1/tenants/{t}/crm/{func}`, the
//! same JSON in and out) on the same HTTP stack (axum on a runtime with one worker per
//! CPU), running the same Plando adapter code compiled natively, in process, with the SDK's
//! native transport (a pooled keep-alive client). No sandbox, no traces, no metrics.
//!
//! The SDK's transport blocks (ureq), as adapter code does, so there are two honest ways to
//! serve it and the benchmark runs both and compares against the faster: `pool` hands each
//! call to tokio's blocking threads; `inline` runs it on the async worker itself (a worker
//! per CPU, one call at a time each, no hand-off).

use crm_plando::Plando;
use crm_sdk::native::NativeTransport;
use crm_sdk::Call;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// `bench native-server CRM_URL pool|inline`: prints `listening on http://ADDR`, serves
/// until killed.
pub fn serve(crm_url: &str, mode: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let inline = match mode {
        "pool" => false,
        "inline" => true,
        other => anyhow::bail!("unknown mode {other} (pool, inline)"),
    };
    rt.block_on(async {
        let http = Arc::new(Native { transport: NativeTransport::new(Duration::from_secs(10)).route("plando.co.il", crm_url), inline });
        let app = axum::Router::new()
            .route("/v1/tenants/{tenant}/crm/{func}", axum::routing::post(call))
            .with_state(http);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

struct Native {
    transport: NativeTransport,
    inline: bool,
}

async fn call(
    axum::extract::State(native): axum::extract::State<Arc<Native>>,
    axum::extract::Path((tenant, func)): axum::extract::Path<(String, String)>,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "malformed JSON").into_response();
    };
    let chat = req.remove("chat").unwrap_or(Value::Null);
    let params = req.remove("params").unwrap_or_else(|| json!({}));
    let config = json!({"token": crate::fast_plando::TOKEN, "chat": "1"});
    let inline = native.inline;
    let run = move || {
        let call = Call::from_json(&tenant, config, chat, params).map_err(|e| e.to_string())?;
        crm_sdk::run(&Plando, &func, &call, &native.transport).map_err(|e| e.to_string())
    };
    let out = if inline { run() } else { tokio::task::spawn_blocking(run).await.expect("adapter task") };
    axum::Json(match out {
        Ok(data) => json!({"outcome": "complete", "crmData": data}),
        Err(e) => json!({"outcome": "failure", "error": {"message": e}}),
    })
    .into_response()
}
