//! Tenants, their keys, their calls and traces, their inbound events; and the call itself
//! (tenant key or admin) and the CRM's webhook (the CRM's own token, checked by the adapter).

use super::model::*;
use super::{number, ApiResult, Authed, Shared, CALL_ID_HEADER};
use crate::error::{ErrorBody, HostError};
use crate::limits::MAX_WEBHOOK_BYTES;
use crate::service::{TenantPage, TenantStats};
use crate::trace::CallTrace;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

/// Tenants by id, a page at a time, searchable.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    params(
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-1000, default 100"),
        ("adapter" = Option<String>, Query, description = "Only this adapter's tenants"),
        ("q" = Option<String>, Query, description = "Only tenants whose id or project id contains this (any case)"),
    ),
    responses((status = 200, body = TenantPage)))]
pub(super) async fn list_tenants(State(host): Shared, auth: Authed, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<TenantPage>> {
    auth.admin()?;
    let limit = number(&q, "limit", 100usize)?.clamp(1, 1000);
    let text = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    Ok(Json(host.list_tenants(text("after"), limit, text("adapter"), text("q"))))
}

/// Creates or replaces a tenant, after the version it will run validated its crmConfig.
#[utoipa::path(put, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    request_body = crate::service::TenantBody,
    responses((status = 200, body = TenantResponse), (status = 404, body = ErrorBody),
              (status = 422, description = "invalid_config, invalid_pin, invalid_limits", body = ErrorBody)))]
pub(super) async fn put_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>, body: Bytes) -> ApiResult<Json<TenantResponse>> {
    let actor = auth.admin()?;
    Ok(Json(host.put_tenant(&tenant, &body, &actor).await?.into()))
}

/// A tenant, its secret crmConfig values redacted.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = TenantResponse), (status = 404, body = ErrorBody)))]
pub(super) async fn get_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Json<TenantResponse>> {
    auth.admin()?;
    Ok(Json(host.get_tenant(&tenant)?.into()))
}

/// Deletes a tenant with its keys, recorded calls and inbound events.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn delete_tenant(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.delete_tenant(&tenant, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issues an API key for the tenant (shown once).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/keys", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 201, body = KeyCreated), (status = 404, body = ErrorBody)))]
pub(super) async fn create_key(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Response> {
    let actor = auth.admin()?;
    let (key_id, key) = host.create_key(&tenant, &actor).await?;
    Ok((StatusCode::CREATED, Json(KeyCreated { key_id, key })).into_response())
}

/// Revokes a key.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/keys/{key_id}", tag = "tenants",
    params(("tenant" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_key(State(host): Shared, auth: Authed, Path((tenant, key_id)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.revoke_key(&tenant, &key_id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs an adapter function for the tenant: `on_complete` with crmData, or `on_failure`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/crm/{func_id}", tag = "calls",
    params(("tenant" = String, Path), ("func_id" = String, Path, description = "getCustomerDetails, newOpportunity, openTicket, closeTicket, ...")),
    request_body(content = Object, description = "{\"chat\": {id, phone, title, agent, crmData, nodes, messages, url}, \"params\": {...}} (README, Calls)"),
    responses(
        (status = 200, body = CallResponse, headers(("x-call-id" = String, description = "The call's id, as its trace is found"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, description = "rate_limited: the tenant's or host's places are taken", body = ErrorBody),
    ))]
pub(super) async fn call(State(host): Shared, auth: Authed, Path((tenant, func_id)): Path<(String, String)>, body: Bytes) -> Response {
    let call_id = crate::service::new_id();
    let answer = match auth.0.require_tenant(&tenant) {
        Ok(()) => host.call(&tenant, &func_id, &body, &call_id).await.map(|outcome| Json(CallResponse::from(&*outcome)).into_response()),
        Err(e) => Err(e),
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert(CALL_ID_HEADER, v);
    }
    response
}

/// A CRM's request to the platform (Planfix), handed to the tenant's adapter; authenticated
/// by the CRM's own token, which the adapter checks, not by the admin token.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/webhook", tag = "calls", params(("tenant" = String, Path)),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "As the CRM sends it"),
    responses((status = 200, description = "The adapter's answer to the CRM, as it wrote it"),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn webhook(
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

/// The tenant's inbound messages after a cursor, in order (admin or the tenant's key).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/events", tag = "calls",
    params(("tenant" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody)))]
pub(super) async fn events(
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

/// The tenant's calls, webhooks and messages on this host since it started.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/stats", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = TenantStats), (status = 404, body = ErrorBody)))]
pub(super) async fn stats(State(host): Shared, auth: Authed, Path(tenant): Path<String>) -> ApiResult<Json<TenantStats>> {
    auth.admin()?;
    Ok(Json(host.tenant_stats(&tenant)?))
}

/// The tenant's recent calls, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/calls", tag = "calls",
    params(("tenant" = String, Path), ("limit" = Option<u32>, Query), ("outcome" = Option<String>, Query, description = "complete or failure")),
    responses((status = 200, body = CallList), (status = 404, body = ErrorBody)))]
pub(super) async fn calls(
    State(host): Shared,
    auth: Authed,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<CallList>> {
    auth.admin()?;
    let limit = number(&q, "limit", 50u32)?.clamp(1, 1000);
    let outcome = match q.get("outcome").map(String::as_str) {
        None | Some("") => None,
        Some(o @ ("complete" | "failure")) => Some(o),
        Some(other) => return Err(HostError::BadRequest(format!("query parameter outcome={other}: expected complete or failure"))),
    };
    Ok(Json(CallList { calls: host.calls(&tenant, limit, outcome).await?.into_iter().map(CallSummary::from).collect() }))
}

/// One recorded call: the request, every outbound exchange (secrets redacted), the outcome.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/calls/{call_id}", tag = "calls",
    params(("tenant" = String, Path), ("call_id" = String, Path)),
    responses((status = 200, body = CallTrace), (status = 404, body = ErrorBody)))]
pub(super) async fn call_trace(State(host): Shared, auth: Authed, Path((tenant, call_id)): Path<(String, String)>) -> ApiResult<Response> {
    auth.admin()?;
    let trace = host.call_trace(&tenant, &call_id).await?.trace;
    Ok(([(header::CONTENT_TYPE, "application/json")], trace).into_response())
}
