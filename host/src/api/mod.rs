//! The JSON HTTP API. Thin: identify the caller, check it may do this, hand bytes to
//! [`Host`], turn records into the typed answers of [`model`], map errors to statuses.

mod conn;
mod guard;
mod intake;
pub mod model;

use crate::auth::Caller;
use crate::error::HostError;
use crate::limits::{FrontDoor, MAX_COMPONENT_BYTES, MAX_JSON_BYTES, MAX_WEBHOOK_BYTES};
use crate::replay::{ReplayReport, ReplayRequest};
use crate::service::{CanaryStart, CanaryStatus, DeployOptions, HealthStatus, Host};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use model::*;
use std::collections::HashMap;
use std::sync::Arc;

/// The header that carries a call's id, in answers and in logs.
pub const CALL_ID_HEADER: &str = "x-call-id";

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Overload refusals are the host working as meant, and come in floods.
        if status.is_server_error() && !matches!(self, HostError::Overloaded(_)) {
            tracing::error!(kind = self.kind(), "answering {}: {self}", status.as_u16());
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type Shared = State<Arc<Host>>;
type ApiResult<T> = Result<T, HostError>;

/// The caller, from `Authorization: Bearer ...`.
struct Authed(Caller);

impl FromRequestParts<Arc<Host>> for Authed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, host: &Arc<Host>) -> Result<Self, Self::Rejection> {
        // Identified already by the route's guard, or (unguarded routes) here.
        let known = parts.extensions.get::<Caller>().cloned();
        Ok(Authed(known.unwrap_or_else(|| guard::caller(host, &parts.headers))))
    }
}

impl Authed {
    /// The admin's actor name, or the refusal.
    fn admin(&self) -> ApiResult<String> {
        self.0.require_admin()?;
        Ok(self.0.actor())
    }
}

/// The API. `/metrics` is on it unless `metrics_apart` (`--metrics-listen`).
pub fn router(host: Arc<Host>, front: &FrontDoor, metrics_apart: bool) -> Router {
    // Who may call what is decided from the request's head, before its body is read: a caller
    // without credentials never makes the host read (and hold) a body. Routes that take a
    // body read it through the intake (its cap, the body timeout, the bytes-in-flight budget).
    let intake = intake::Intake::new(front);
    let body = |taking: intake::Taking| {
        (DefaultBodyLimit::disable(), axum::middleware::from_fn_with_state(taking, intake::read_body))
    };
    let json = || body(intake.taking("JSON body", MAX_JSON_BYTES));
    let admin = Router::new()
        .route("/v1/adapters", get(list_adapters))
        .route(
            "/v1/adapters/{name}",
            put(deploy).layer(body(intake.taking("component", MAX_COMPONENT_BYTES))).get(get_adapter),
        )
        .route("/v1/adapters/{name}/versions", get(versions))
        .route("/v1/adapters/{name}/versions/{digest}", delete(delete_version))
        .route("/v1/adapters/{name}/versions/{digest}/replay", post(replay).layer(json()))
        .route(
            "/v1/adapters/{name}/canary",
            post(start_canary).patch(set_canary).layer(json()).get(canary_status).delete(stop_canary),
        )
        .route("/v1/adapters/{name}/canary/promote", post(promote_canary).layer(json()))
        .route("/v1/adapters/{name}/replays", get(replays))
        .route("/v1/adapters/{name}/replays/{id}", get(replay_report))
        .route("/v1/adapters/{name}/activate", post(activate).layer(json()))
        .route("/v1/adapters/{name}/rollback", post(rollback).layer(json()))
        .route("/v1/tenants/{tenant}", put(put_tenant).layer(json()).get(get_tenant).delete(delete_tenant))
        .route("/v1/tenants/{tenant}/keys", post(create_key).layer(json()))
        .route("/v1/tenants/{tenant}/keys/{key_id}", delete(revoke_key))
        .route("/v1/tenants/{tenant}/stats", get(stats))
        .route("/v1/tenants/{tenant}/calls", get(calls))
        .route("/v1/tenants/{tenant}/calls/{call_id}", get(call_trace))
        .route("/v1/audit", get(audit))
        .route_layer(axum::middleware::from_fn_with_state(host.clone(), guard::admin_only));
    let tenant = Router::new()
        .route("/v1/tenants/{tenant}/crm/{func_id}", post(call).layer(json()))
        .route("/v1/tenants/{tenant}/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(host.clone(), guard::tenant_or_admin));
    let open = Router::new().route("/healthz", get(healthz));
    let open = if metrics_apart { open } else { open.route("/metrics", get(metrics)) };
    open
        // Authenticated by the CRM's own token, which the adapter checks.
        .route("/v1/tenants/{tenant}/webhook", post(webhook).layer(body(intake.taking_webhooks(MAX_WEBHOOK_BYTES))))
        .merge(admin)
        .merge(tenant)
        // Routes without the intake read no body at all.
        .layer(DefaultBodyLimit::max(0))
        .fallback(no_such_endpoint)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(host.clone(), guard::local_only_when_open))
        .layer(axum::middleware::from_fn(catch_panics))
        .with_state(host)
}

async fn no_such_endpoint(uri: axum::http::Uri) -> HostError {
    HostError::NoSuchEndpoint(uri.to_string())
}

/// The last line of defence: a bug that panics while serving one request answers that
/// request with a 500 in the API's envelope (and a log line), instead of dropping the
/// connection without a word. Guest input is not supposed to reach a panic; this is for
/// when it does.
async fn catch_panics(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let what = format!("{} {}", request.method(), request.uri().path());
    match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(request = %what, "panic while serving a request: {why}");
            HostError::Internal(format!("the host failed while serving {what}; the failure is logged")).into_response()
        }
    }
}

/// Rejections axum makes itself (a body over the limit, a malformed query, a method the path
/// does not take) come as plain text; the API answers every error in its JSON envelope.
/// Webhook answers are the adapter's and pass untouched.
async fn json_errors(uri: axum::http::Uri, response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || uri.path().ends_with("/webhook") {
        return response;
    }
    let (kind, default) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is larger than this endpoint accepts"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this endpoint does not take that method (see the README for the API)"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported content type"),
        s if s.is_server_error() => ("internal", "the host failed"),
        _ => ("bad_request", "the request is malformed"),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let bytes = axum::body::to_bytes(response.into_body(), 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if text.is_empty() { default.to_string() } else { format!("{default}: {text}") };
    let body = serde_json::json!({"error": {"kind": kind, "message": message}});
    let mut out = (status, Json(body)).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Liveness and readiness: the host serves calls from memory, so plain `/healthz` is ok
/// whenever it answers. `?deep=1` also asks the database (and, with a shared store, whether
/// this host follows it): 503 while it does not, though calls go on being served.
/// The database's error text and the cursor are the admin's to read: anyone else learns
/// only whether the host is healthy.
async fn healthz(State(host): Shared, auth: Authed, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    if !flag(&q, "deep")? {
        return Ok(Json(Health { status: HealthStatus::Ok }).into_response());
    }
    let health = host.health().await;
    let status = match health.status {
        HealthStatus::Ok => StatusCode::OK,
        HealthStatus::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    };
    if auth.0.require_admin().is_err() {
        return Ok((status, Json(Health { status: health.status })).into_response());
    }
    Ok((status, Json(health)).into_response())
}

async fn metrics(State(host): Shared) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], host.metrics().render()).into_response()
}

/// A boolean query flag: absent is false; `true`, `1`, `yes` or empty (`?stage`) is true.
fn flag(q: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match q.get(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if matches!(v.as_str(), "" | "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => Err(HostError::BadRequest(format!("query parameter {name}={v}: expected true or false"))),
    }
}

fn number<T: std::str::FromStr>(q: &HashMap<String, String>, name: &str, default: T) -> ApiResult<T> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| HostError::BadRequest(format!("query parameter {name}={v}: expected a number"))),
    }
}

async fn list_adapters(State(host): Shared, auth: Authed) -> ApiResult<Json<AdapterList>> {
    auth.admin()?;
    Ok(Json(AdapterList { adapters: host.list_adapters().iter().map(|c| AdapterSummary::of(c)).collect() }))
}

async fn deploy(
    State(host): Shared,
    auth: Authed,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let actor = auth.admin()?;
    let replay = match q.get("replay") {
        Some(_) => Some(number(&q, "replay", 0u32)?),
        None => None,
    };
    let opts = DeployOptions { stage: flag(&q, "stage")?, force: flag(&q, "force")?, replay };
    let deployed = host.deploy(&name, body, opts, &actor).await?;
    Ok((StatusCode::CREATED, Json(DeployResponse::from(deployed))).into_response())
}

async fn get_adapter(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<AdapterDetails>> {
    auth.admin()?;
    let (compiled, history) = host.adapter(&name)?;
    let size = host.component_size(&compiled.digest).await?;
    Ok(Json(AdapterDetails::new(&compiled, &history, size)))
}

async fn versions(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<VersionList>> {
    auth.admin()?;
    Ok(Json(VersionList { versions: host.versions(&name)?.into_iter().map(VersionEntry::from).collect() }))
}

async fn delete_version(State(host): Shared, auth: Authed, Path((name, digest)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.delete_version(&name, &digest, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Recorded calls re-run through a stored version, offline; the report.
async fn replay(State(host): Shared, auth: Authed, Path((name, digest)): Path<(String, String)>, body: Bytes) -> ApiResult<Json<ReplayReport>> {
    auth.admin()?;
    let request: ReplayRequest =
        if body.is_empty() { ReplayRequest::default() } else { crate::chat::parse_json("replay body", &body).map_err(HostError::BadRequest)? };
    Ok(Json(host.replay(&name, &digest, &request).await?))
}

async fn replays(State(host): Shared, auth: Authed, Path(name): Path<String>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    auth.admin()?;
    let limit = number(&q, "limit", 50u32)?.clamp(1, 1000);
    Ok(Json(serde_json::json!({"replays": host.replays(&name, limit).await?})).into_response())
}

async fn replay_report(State(host): Shared, auth: Authed, Path((name, id)): Path<(String, String)>) -> ApiResult<Response> {
    auth.admin()?;
    let report = host.replay_report(&name, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], report).into_response())
}

async fn start_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    let actor = auth.admin()?;
    let start: CanaryStart = crate::chat::parse_json("canary body", &body).map_err(HostError::BadRequest)?;
    Ok((StatusCode::CREATED, Json(host.start_canary(&name, start, &actor).await?)).into_response())
}

async fn canary_status(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<CanaryStatus>> {
    auth.admin()?;
    Ok(Json(host.canary_status(&name)?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryPatch {
    percent: u8,
}

async fn set_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    let patch: CanaryPatch = crate::chat::parse_json("canary body", &body).map_err(HostError::BadRequest)?;
    Ok(Json(host.set_canary_percent(&name, patch.percent, &actor).await?))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    #[serde(default)]
    force: bool,
}

async fn promote_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    let b: PromoteBody =
        if body.is_empty() { PromoteBody::default() } else { crate::chat::parse_json("promote body", &body).map_err(HostError::BadRequest)? };
    Ok(Json(host.promote_canary(&name, b.force, &actor).await?))
}

async fn stop_canary(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    Ok(Json(host.stop_canary(&name, &actor).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    digest: String,
    #[serde(default)]
    force: bool,
    /// Replay the adapter's last N recorded calls first; activate only if that passes.
    #[serde(default)]
    replay: Option<u32>,
}

async fn activate(
    State(host): Shared,
    auth: Authed,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<DeployResponse>> {
    let actor = auth.admin()?;
    let b: ActivateBody = crate::chat::parse_json("activate body", &body).map_err(HostError::BadRequest)?;
    let force = b.force || flag(&q, "force")?;
    let deployed = match b.replay {
        Some(calls) => host.activate_after_replay(&name, &b.digest, calls, force, &actor).await?,
        None => host.activate(&name, &b.digest, force, &actor).await?,
    };
    Ok(Json(deployed.into()))
}

async fn rollback(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<DeployResponse>> {
    let actor = auth.admin()?;
    Ok(Json(host.rollback(&name, &actor).await?.into()))
}

async fn put_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>, body: Bytes) -> ApiResult<Json<TenantResponse>> {
    let actor = auth.admin()?;
    Ok(Json(host.put_tenant(&tenant, &body, &actor).await?.into()))
}

async fn get_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Json<TenantResponse>> {
    auth.admin()?;
    Ok(Json(host.get_tenant(&tenant)?.into()))
}

async fn delete_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.delete_tenant(&tenant, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_key(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Response> {
    let actor = auth.admin()?;
    let (key_id, key) = host.create_key(&tenant, &actor).await?;
    Ok((StatusCode::CREATED, Json(KeyCreated { key_id, key })).into_response())
}

async fn revoke_key(State(host): Shared, auth: Authed, Path((tenant, key_id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.revoke_key(&tenant, &key_id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn call(State(host): Shared, auth: Authed, Path((tenant, func_id)): Path<(String, String)>, body: Bytes) -> Response {
    let call_id = crate::service::new_id();
    let answer = match auth.0.require_tenant(&tenant) {
        Ok(()) => host.call(&tenant, &func_id, &body, &call_id).await.map(|outcome| Json(CallResponse::from(outcome)).into_response()),
        Err(e) => Err(e),
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert(CALL_ID_HEADER, v);
    }
    response
}

/// Authenticated by the CRM's own token, which the adapter checks; not by the admin token.
async fn webhook(
    State(host): Shared,
    Path(tenant): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => HostError::PayloadTooLarge { what: "webhook body", limit: MAX_WEBHOOK_BYTES },
        _ => HostError::BadRequest(format!("cannot read the webhook body: {e}")),
    })?;
    let request = crate::runtime::WebhookRequest {
        method: method.to_string(),
        path: String::new(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let answer = host.webhook(&tenant, request).await?;
    let mut response = (StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY), answer.body).into_response();
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            response.headers_mut().insert(k, v);
        }
    }
    Ok(response)
}

async fn events(
    State(host): Shared,
    auth: Authed,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<EventList>> {
    auth.0.require_tenant(&tenant)?;
    let after = number(&q, "after", 0i64)?;
    let limit = number(&q, "limit", 100u32)?.clamp(1, 1000);
    let events = host.events(&tenant, after, limit).await?;
    let next = events.last().map(|e| e.cursor).unwrap_or(after).to_string();
    Ok(Json(EventList { events: events.into_iter().map(EventItem::from).collect(), next }))
}

async fn stats(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Json<crate::service::TenantStats>> {
    auth.admin()?;
    Ok(Json(host.tenant_stats(&tenant)?))
}

async fn calls(
    State(host): Shared,
    auth: Authed,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<CallList>> {
    auth.admin()?;
    let limit = number(&q, "limit", 50u32)?.clamp(1, 1000);
    Ok(Json(CallList { calls: host.calls(&tenant, limit).await?.into_iter().map(CallSummary::from).collect() }))
}

async fn call_trace(
    State(host): Shared,
    auth: Authed,
    Path((tenant, call_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    auth.admin()?;
    let trace = host.call_trace(&tenant, &call_id).await?.trace;
    Ok(([(header::CONTENT_TYPE, "application/json")], trace).into_response())
}

async fn audit(State(host): Shared, auth: Authed, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<AuditList>> {
    auth.admin()?;
    let after = number(&q, "after", 0i64)?;
    let limit = number(&q, "limit", 100u32)?.clamp(1, 1000);
    let entries = host.audit_log(after, limit).await?;
    let next = entries.last().map(|e| e.cursor).unwrap_or(after).to_string();
    Ok(Json(AuditList { entries: entries.into_iter().map(AuditItem::from).collect(), next }))
}


/// Serves the API on `listener` until `shutdown` resolves, with the connection and body
/// limits of `front`; with a `metrics` listener, `/metrics` is served there instead (an
/// address Prometheus reaches and API clients do not).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    host: Arc<Host>,
    front: FrontDoor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let apart = metrics_listener.map(|l| {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .fallback(no_such_endpoint)
            .with_state(host.clone());
        let (front, mut stopped) = (front.clone(), stopped.clone());
        tokio::spawn(async move {
            conn::serve(l, app, &front, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        })
    });
    let app = router(host, &front, apart.is_some());
    conn::serve(listener, app, &front, async move {
        shutdown.await;
        let _ = stop.send(true);
    })
    .await?;
    if let Some(task) = apart {
        task.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}
