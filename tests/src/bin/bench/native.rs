//! The native baseline servers: the host's call API (`POST /v1/tenants/{t}/crm/{func}`, the
//! same JSON in and out) running the same Plando mapping compiled natively, in process. No
//! sandbox, no traces, no metrics. Every ratio is taken against the fastest of them.
//!
//! - `lean`: what a competent engineer would write instead of the host: hyper's HTTP/1.1
//!   server on a runtime with one worker per CPU, the Plando lookup's own request and answer
//!   mapping (`crm_plando::ContactLookup`) around an async, pooled keep-alive hyper client.
//!   One task per connection, no hand-off: the fastest of the three.
//! - `pool` and `inline`: the whole adapter through the SDK's native transport (ureq,
//!   pooled keep-alive), which blocks as adapter code does; `pool` hands each call to tokio's
//!   blocking threads, `inline` runs it on the async worker itself. Both on axum.

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
    if mode == "lean" {
        return rt.block_on(lean::serve(crm_url));
    }
    let inline = match mode {
        "pool" => false,
        "inline" => true,
        other => anyhow::bail!("unknown mode {other} (lean, pool, inline)"),
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

pub mod lean {
    use bytes::Bytes;
    use crm_plando::ContactLookup;
    use crm_sdk::{Call, CrmError};
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::body::Incoming;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use serde_json::{json, Value};
    use std::sync::Arc;

    pub struct Lean {
        client: Client<HttpConnector, Full<Bytes>>,
        /// Where plando.co.il really is (the emulator), as `http://ADDR`.
        crm: String,
    }

    pub async fn serve(crm_url: &str) -> anyhow::Result<()> {
        let lean = Arc::new(Lean::new(crm_url));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        use std::io::Write;
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let lean = lean.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let lean = lean.clone();
                    async move { Ok::<_, std::convert::Infallible>(lean.call(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    impl Lean {
        pub fn new(crm_url: &str) -> Lean {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
            Lean { client, crm: crm_url.trim_end_matches('/').to_string() }
        }

        async fn call(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
            let path = req.uri().path().to_string();
            let route: Vec<&str> = path.trim_matches('/').split('/').collect();
            let (tenant, func) = match route[..] {
                ["v1", "tenants", tenant, "crm", func] if req.method() == hyper::Method::POST => (tenant.to_string(), func.to_string()),
                _ => return answer(404, json!({"error": {"code": "not_found"}})),
            };
            let Ok(body) = Limited::new(req.into_body(), 1 << 20).collect().await.map(|b| b.to_bytes()) else {
                return answer(400, json!({"error": {"code": "bad_request", "message": "unreadable body"}}));
            };
            let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&body) else {
                return answer(400, json!({"error": {"code": "bad_request", "message": "malformed JSON"}}));
            };
            let chat = body.remove("chat").unwrap_or(Value::Null);
            let params = body.remove("params").unwrap_or_else(|| json!({}));
            let config = json!({"token": crate::fast_plando::TOKEN, "chat": "1"});
            let outcome = match Call::from_json(&tenant, config, chat, params) {
                Err(e) => Err(CrmError::Internal(e)),
                Ok(_) if func != "getCustomerDetails" => Err(CrmError::unsupported_function(&func)),
                Ok(call) => self.lookup(&call).await,
            };
            answer(
                200,
                match outcome {
                    Ok(data) => json!({"outcome": "complete", "crmData": data}),
                    Err(e) => json!({"outcome": "failure", "error": {"message": e.to_string()}}),
                },
            )
        }

        pub async fn lookup(&self, call: &Call) -> Result<crm_sdk::Map<String, Value>, CrmError> {
            let (request, lookup) = ContactLookup::new(call)?;
            let url = crm_sdk::Url::parse(&request.url).map_err(|e| CrmError::Internal(e.to_string()))?;
            let mut builder = hyper::Request::builder()
                .method(request.method.as_str())
                .uri(match url.query() {
                    Some(q) => format!("{}{}?{q}", self.crm, url.path()),
                    None => format!("{}{}", self.crm, url.path()),
                })
                .header("host", url.authority());
            for (k, v) in &request.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let outgoing = builder.body(Full::new(Bytes::from(request.body))).map_err(|e| CrmError::Internal(e.to_string()))?;
            let response = self.client.request(outgoing).await.map_err(|e| CrmError::Transport(e.to_string()))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = Limited::new(response.into_body(), request.max_response_bytes).collect().await.map_err(|e| CrmError::Transport(e.to_string()))?;
            lookup.answer(crm_sdk::Response { status, headers, body: body.to_bytes().to_vec() })
        }
    }

    fn answer(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid response")
    }
}
