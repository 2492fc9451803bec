//! Adapters and their versions: deploy (with the replay gate), activate, roll back, delete;
//! replays and their reports; canaries. Admin only.

use super::model::*;
use super::{flag, number, ApiResult, Authed, Shared};
use crate::error::{ErrorBody, HostError};
use crate::replay::{ReplayHead, ReplayReport, ReplayRequest};
use crate::service::{CanaryStart, CanaryStatus, DeployOptions};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;

/// The adapters with an active version.
#[utoipa::path(get, path = "/v1/adapters", tag = "adapters", responses((status = 200, body = AdapterList)))]
pub(super) async fn list_adapters(State(host): Shared, auth: Authed) -> ApiResult<Json<AdapterList>> {
    auth.admin()?;
    Ok(Json(AdapterList { adapters: host.list_adapters().iter().map(|c| AdapterSummary::of(c)).collect() }))
}

/// Deploys (hot) a component under `name`: active at once, or staged; with `replay=N`, staged,
/// replayed against the last N recorded calls, and activated only if that passes.
#[utoipa::path(put, path = "/v1/adapters/{name}", tag = "adapters",
    params(
        ("name" = String, Path, description = "The adapter's name, as the component describes itself"),
        ("stage" = Option<bool>, Query, description = "Store and compile without activating"),
        ("force" = Option<bool>, Query, description = "Activate although tenants' crmConfig is refused, or the replay failed"),
        ("replay" = Option<u32>, Query, description = "Replay the last N recorded calls first; activate only on pass"),
    ),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses(
        (status = 201, body = DeployResponse),
        (status = 400, description = "invalid_component, wrong_world, forbidden_import, name_mismatch", body = ErrorBody),
        (status = 409, description = "invalid_tenants, replay_failed (the report is in the error)", body = ErrorBody),
    ))]
pub(super) async fn deploy(
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

/// The active version in detail, and the adapter's history.
#[utoipa::path(get, path = "/v1/adapters/{name}", tag = "adapters", params(("name" = String, Path)),
    responses((status = 200, body = AdapterDetails), (status = 404, body = ErrorBody)))]
pub(super) async fn get_adapter(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<AdapterDetails>> {
    auth.admin()?;
    let (compiled, history) = host.adapter(&name)?;
    let size = host.component_size(&compiled.digest).await?;
    Ok(Json(AdapterDetails::new(&compiled, &history, size)))
}

/// Every stored version, newest first.
#[utoipa::path(get, path = "/v1/adapters/{name}/versions", tag = "adapters", params(("name" = String, Path)),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)))]
pub(super) async fn versions(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<VersionList>> {
    auth.admin()?;
    Ok(Json(VersionList { versions: host.versions(&name)?.into_iter().map(VersionEntry::from).collect() }))
}

/// Deletes a version that is neither active, pinned nor a running canary's candidate.
#[utoipa::path(delete, path = "/v1/adapters/{name}/versions/{digest}", tag = "adapters",
    params(("name" = String, Path), ("digest" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, description = "version_in_use", body = ErrorBody)))]
pub(super) async fn delete_version(State(host): Shared, auth: Authed, Path((name, digest)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let actor = auth.admin()?;
    host.delete_version(&name, &digest, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/adapters/{name}/activate`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActivateBody {
    digest: String,
    #[serde(default)]
    force: bool,
    /// Replay the adapter's last N recorded calls first; activate only if that passes.
    #[serde(default)]
    replay: Option<u32>,
}

/// Makes a stored version the active one.
#[utoipa::path(post, path = "/v1/adapters/{name}/activate", tag = "adapters",
    params(("name" = String, Path), ("force" = Option<bool>, Query)),
    request_body = ActivateBody,
    responses((status = 200, body = DeployResponse), (status = 404, body = ErrorBody),
              (status = 409, description = "invalid_tenants, replay_failed", body = ErrorBody)))]
pub(super) async fn activate(
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

/// Re-activates the previously active version.
#[utoipa::path(post, path = "/v1/adapters/{name}/rollback", tag = "adapters", params(("name" = String, Path)),
    responses((status = 200, body = DeployResponse), (status = 409, description = "no_previous_version", body = ErrorBody)))]
pub(super) async fn rollback(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<DeployResponse>> {
    let actor = auth.admin()?;
    Ok(Json(host.rollback(&name, &actor).await?.into()))
}

/// Re-runs recorded calls through a stored version, offline, and answers the report.
#[utoipa::path(post, path = "/v1/adapters/{name}/versions/{digest}/replay", tag = "replays",
    params(("name" = String, Path), ("digest" = String, Path)),
    request_body(content = ReplayRequest, description = "Every field optional; an empty body replays the newest 200 calls"),
    responses((status = 200, body = ReplayReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn replay(
    State(host): Shared,
    auth: Authed,
    Path((name, digest)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ReplayReport>> {
    auth.admin()?;
    let request: ReplayRequest =
        if body.is_empty() { ReplayRequest::default() } else { crate::chat::parse_json("replay body", &body).map_err(HostError::BadRequest)? };
    Ok(Json(host.replay(&name, &digest, &request).await?))
}

/// `GET /v1/adapters/{name}/replays`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReplayList {
    /// Newest first, without their per-call results.
    replays: Vec<ReplayHead>,
}

/// An adapter's stored replay reports, newest first.
#[utoipa::path(get, path = "/v1/adapters/{name}/replays", tag = "replays",
    params(("name" = String, Path), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = ReplayList), (status = 404, body = ErrorBody)))]
pub(super) async fn replays(
    State(host): Shared,
    auth: Authed,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<ReplayList>> {
    auth.admin()?;
    let limit = number(&q, "limit", 50u32)?.clamp(1, 1000);
    Ok(Json(ReplayList { replays: host.replays(&name, limit).await? }))
}

/// One stored replay report.
#[utoipa::path(get, path = "/v1/adapters/{name}/replays/{id}", tag = "replays",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ReplayReport), (status = 404, description = "unknown_replay", body = ErrorBody)))]
pub(super) async fn replay_report(State(host): Shared, auth: Authed, Path((name, id)): Path<(String, String)>) -> ApiResult<Response> {
    auth.admin()?;
    let report = host.replay_report(&name, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], report).into_response())
}

/// Starts a canary: the candidate serves a stable share of the adapter's unpinned tenants.
#[utoipa::path(post, path = "/v1/adapters/{name}/canary", tag = "canary", params(("name" = String, Path)),
    request_body = CanaryStart,
    responses((status = 201, body = CanaryStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "a canary of the adapter is running", body = ErrorBody)))]
pub(super) async fn start_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    let actor = auth.admin()?;
    let start: CanaryStart = crate::chat::parse_json("canary body", &body).map_err(HostError::BadRequest)?;
    Ok((StatusCode::CREATED, Json(host.start_canary(&name, start, &actor).await?)).into_response())
}

/// The adapter's latest canary, with its live figures.
#[utoipa::path(get, path = "/v1/adapters/{name}/canary", tag = "canary", params(("name" = String, Path)),
    responses((status = 200, body = CanaryStatus), (status = 404, description = "unknown_canary", body = ErrorBody)))]
pub(super) async fn canary_status(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<CanaryStatus>> {
    auth.admin()?;
    Ok(Json(host.canary_status(&name)?))
}

/// The body of `PATCH /v1/adapters/{name}/canary`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CanaryPatch {
    /// 1-100; growing it keeps the tenants already in.
    percent: u8,
}

/// Changes a running canary's share.
#[utoipa::path(patch, path = "/v1/adapters/{name}/canary", tag = "canary", params(("name" = String, Path)),
    request_body = CanaryPatch,
    responses((status = 200, body = CanaryStatus), (status = 409, description = "the canary has ended", body = ErrorBody)))]
pub(super) async fn set_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    let patch: CanaryPatch = crate::chat::parse_json("canary body", &body).map_err(HostError::BadRequest)?;
    Ok(Json(host.set_canary_percent(&name, patch.percent, &actor).await?))
}

/// The body of `POST /v1/adapters/{name}/canary/promote` (optional).
#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PromoteBody {
    /// Activate although tenants' crmConfig is refused.
    #[serde(default)]
    force: bool,
}

/// Activates the candidate for every unpinned tenant; the canary ends `promoted`.
#[utoipa::path(post, path = "/v1/adapters/{name}/canary/promote", tag = "canary", params(("name" = String, Path)),
    request_body(content = PromoteBody, description = "Optional"),
    responses((status = 200, body = CanaryStatus), (status = 409, body = ErrorBody)))]
pub(super) async fn promote_canary(State(host): Shared, auth: Authed, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    let b: PromoteBody =
        if body.is_empty() { PromoteBody::default() } else { crate::chat::parse_json("promote body", &body).map_err(HostError::BadRequest)? };
    Ok(Json(host.promote_canary(&name, b.force, &actor).await?))
}

/// Stops the canary: its tenants go back to the active version.
#[utoipa::path(delete, path = "/v1/adapters/{name}/canary", tag = "canary", params(("name" = String, Path)),
    responses((status = 200, body = CanaryStatus), (status = 409, body = ErrorBody)))]
pub(super) async fn stop_canary(State(host): Shared, auth: Authed, Path(name): Path<String>) -> ApiResult<Json<CanaryStatus>> {
    let actor = auth.admin()?;
    Ok(Json(host.stop_canary(&name, &actor).await?))
}
