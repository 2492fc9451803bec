//! The JSON HTTP API. Thin: parse the path, hand bytes to [`Host`], map errors to statuses.

use crate::error::HostError;
use crate::service::Host;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Largest component upload.
const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Largest JSON body (a chat with a long transcript).
const MAX_JSON_BYTES: usize = 8 << 20;

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

type Shared = State<Arc<Host>>;

pub fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/adapters", get(list_adapters))
        .route(
            "/v1/adapters/{name}",
            put(deploy).get(get_adapter).layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES)),
        )
        .route("/v1/tenants/{tenant}", put(put_tenant).get(get_tenant).delete(delete_tenant))
        .route("/v1/tenants/{tenant}/crm/{func_id}", post(call))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .fallback(|uri: axum::http::Uri| async move {
            let message = format!("no such endpoint: {uri} (see the README for the API)");
            (StatusCode::NOT_FOUND, Json(json!({"error": {"kind": "not_found", "message": message}})))
        })
        .with_state(host)
}

async fn list_adapters(State(host): Shared) -> Json<serde_json::Value> {
    Json(host.list_adapters())
}

async fn deploy(State(host): Shared, Path(name): Path<String>, body: Bytes) -> Result<Response, HostError> {
    let info = host.deploy(&name, body).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_adapter(State(host): Shared, Path(name): Path<String>) -> Result<Json<serde_json::Value>, HostError> {
    host.adapter(&name).map(Json)
}

async fn put_tenant(State(host): Shared, Path(tenant): Path<String>, body: Bytes) -> Result<Json<serde_json::Value>, HostError> {
    host.put_tenant(&tenant, &body).await.map(Json)
}

async fn get_tenant(State(host): Shared, Path(tenant): Path<String>) -> Result<Json<serde_json::Value>, HostError> {
    host.get_tenant(&tenant).map(Json)
}

async fn delete_tenant(State(host): Shared, Path(tenant): Path<String>) -> Result<StatusCode, HostError> {
    host.delete_tenant(&tenant).map(|()| StatusCode::NO_CONTENT)
}

async fn call(
    State(host): Shared,
    Path((tenant, func_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HostError> {
    host.call(&tenant, &func_id, &body).await.map(Json)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    host: Arc<Host>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host)).with_graceful_shutdown(shutdown).await
}
