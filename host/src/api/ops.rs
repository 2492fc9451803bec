//! The host itself: health, metrics, the audit log, the overview.

use super::model::*;
use super::{flag, number, ApiResult, Authed, Shared};
use crate::error::ErrorBody;
use crate::service::{DeepHealth, HealthStatus, Overview};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

/// Liveness and readiness: the host serves calls from memory, so plain `/healthz` is ok
/// whenever it answers. `?deep=1` also asks the database (and, with a shared store, whether
/// this host follows it): 503 while it does not, though calls go on being served.
/// The database's error text and the cursor are the admin's to read: anyone else learns
/// only whether the host is healthy.
#[utoipa::path(get, path = "/healthz", tag = "host", security(()),
    params(("deep" = Option<bool>, Query, description = "Also ask the database (details for the admin only)")),
    responses((status = 200, body = DeepHealth, description = "`{\"status\"}` only, unless deep and admin"),
              (status = 503, body = DeepHealth)))]
pub(super) async fn healthz(State(host): Shared, auth: Authed, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
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

/// Prometheus metrics (no tenant names; see SECURITY.md).
#[utoipa::path(get, path = "/metrics", tag = "host", security(()),
    responses((status = 200, content_type = "text/plain", body = String)))]
pub(super) async fn metrics(State(host): Shared) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], host.metrics().render()).into_response()
}

/// Every change, oldest first, from a cursor.
#[utoipa::path(get, path = "/v1/audit", tag = "host",
    params(("after" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = AuditList), (status = 401, body = ErrorBody)))]
pub(super) async fn audit(State(host): Shared, auth: Authed, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<AuditList>> {
    auth.admin()?;
    let after = number(&q, "after", 0i64)?;
    let limit = number(&q, "limit", 100u32)?.clamp(1, 1000);
    let entries = host.audit_log(after, limit).await?;
    let next = entries.last().map(|e| e.cursor).unwrap_or(after).to_string();
    Ok(Json(AuditList { entries: entries.into_iter().map(AuditItem::from).collect(), next }))
}

/// Calls and failures per adapter, minute by minute over the last hour on this host, and its health.
#[utoipa::path(get, path = "/v1/overview", tag = "host", responses((status = 200, body = Overview)))]
pub(super) async fn overview(State(host): Shared, auth: Authed) -> ApiResult<Json<Overview>> {
    auth.admin()?;
    Ok(Json(host.overview().await))
}
