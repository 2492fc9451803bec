//! The JSON HTTP API. Thin: identify the caller, check it may do this, hand bytes to
//! [`Host`], turn records into the typed answers of [`model`], map errors to statuses.

mod adapters;
mod conn;
mod console;
mod guard;
mod intake;
pub mod model;
mod ops;
mod tenants;

use crate::auth::Caller;
use crate::error::HostError;
use crate::limits::{FrontDoor, MAX_COMPONENT_BYTES, MAX_JSON_BYTES, MAX_WEBHOOK_BYTES};
use crate::service::Host;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

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
pub fn router(host: Arc<Host>, front: &FrontDoor, metrics_apart: bool) -> Api {
    let (api, doc) = documented(host.clone(), front, metrics_apart).split_for_parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let routes = api
        .route("/openapi.json", get(openapi).layer(axum::Extension(doc)))
        .merge(console::routes())
        .fallback(no_such_endpoint)
        .with_state(host.clone());
    Api { host, routes }
}

/// Every request, whatever its route: the panic guard, then open mode's loopback check, then
/// the routes, whose answers get `nosniff` and, when axum made an error itself, the JSON
/// envelope.
///
/// These are a service around the router, not `Router::layer`s: axum boxes every route once
/// per layer, and a request clones that chain of boxes at each layer it passes, which was
/// about 50 allocations per call (BENCHMARKS.md).
#[derive(Clone)]
pub struct Api {
    host: Arc<Host>,
    routes: Router,
}

impl<B> tower::Service<axum::http::Request<B>> for Api
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.serve(request.map(axum::body::Body::new)).await) })
    }
}

impl Api {
    async fn serve(self, request: axum::extract::Request) -> Response {
        use tower::ServiceExt;
        // Named only if it panics, not formatted for every request.
        let (method, uri) = (request.method().clone(), request.uri().clone());
        catch_panics(&method, &uri, async {
            if let Some(refusal) = guard::refuse_unless_local(&self.host, &request) {
                return refusal;
            }
            // Routes without the intake read no body at all. (A layer of the router would
            // box every route once more.)
            let routes = tower::Layer::layer(&DefaultBodyLimit::max(0), self.routes);
            let Ok(response) = routes.oneshot(request).await;
            no_sniff(json_errors(&uri, response).await)
        })
        .await
    }
}

/// Every API route, each registered with its OpenAPI description (`utoipa::path` on the
/// handler): a route cannot be served without being documented.
fn documented(host: Arc<Host>, front: &FrontDoor, metrics_apart: bool) -> OpenApiRouter<Arc<Host>> {
    // Who may call what is decided from the request's head, before its body is read: a caller
    // without credentials never makes the host read (and hold) a body. Routes that take a
    // body read it through the intake (its cap, the body timeout, the bytes-in-flight budget).
    let intake = intake::Intake::new(front);
    let body = |taking: intake::Taking| {
        (DefaultBodyLimit::disable(), axum::middleware::from_fn_with_state(taking, intake::read_body))
    };
    let json = || body(intake.taking("JSON body", MAX_JSON_BYTES));
    let admin = OpenApiRouter::new()
        .routes(routes!(adapters::list_adapters))
        .routes(routes!(adapters::deploy).layer(body(intake.taking("component", MAX_COMPONENT_BYTES))))
        .routes(routes!(adapters::get_adapter))
        .routes(routes!(adapters::versions))
        .routes(routes!(adapters::delete_version))
        .routes(routes!(adapters::replay).layer(json()))
        .routes(routes!(adapters::start_canary, adapters::set_canary).layer(json()))
        .routes(routes!(adapters::canary_status, adapters::stop_canary))
        .routes(routes!(adapters::promote_canary).layer(json()))
        .routes(routes!(adapters::replays))
        .routes(routes!(adapters::replay_report))
        .routes(routes!(adapters::activate).layer(json()))
        .routes(routes!(adapters::rollback).layer(json()))
        .routes(routes!(tenants::list_tenants))
        .routes(routes!(tenants::put_tenant).layer(json()))
        .routes(routes!(tenants::get_tenant, tenants::delete_tenant))
        .routes(routes!(tenants::create_key).layer(json()))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(tenants::stats))
        .routes(routes!(tenants::calls))
        .routes(routes!(tenants::call_trace))
        .routes(routes!(ops::audit))
        .routes(routes!(ops::overview))
        .route_layer(axum::middleware::from_fn_with_state(host.clone(), guard::admin_only));
    let tenant = OpenApiRouter::new()
        .routes(routes!(tenants::call).layer(json()))
        .routes(routes!(tenants::events))
        .route_layer(axum::middleware::from_fn_with_state(host.clone(), guard::tenant_or_admin));
    let open = OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(ops::healthz));
    let open = if metrics_apart { open } else { open.routes(routes!(ops::metrics)) };
    open
        // Authenticated by the CRM's own token, which the adapter checks.
        .routes(routes!(tenants::webhook).layer(body(intake.taking_webhooks(MAX_WEBHOOK_BYTES))))
        .merge(admin)
        .merge(tenant)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "crm-host", description = "CRM adapters as sandboxed wasm components: the host's HTTP API (README.md)"),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "adapters", description = "Components and their versions"),
        (name = "replays", description = "Recorded calls re-run through a version, offline"),
        (name = "canary", description = "A version for a share of the tenants, rolled back by the host"),
        (name = "tenants", description = "Tenants, their crmConfig, pins, limits and keys"),
        (name = "calls", description = "Adapter calls, their traces, webhooks and inbound messages"),
        (name = "host", description = "Health, metrics, the audit log, the overview"),
    )
)]
struct ApiDoc;

/// Every route but `/healthz`, `/metrics` and the webhook takes `Authorization: Bearer` with
/// the admin token (or, where it says so, the tenant's API key).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// This API's OpenAPI 3.1 document, generated from the routes and their types.
async fn openapi(axum::Extension(doc): axum::Extension<Arc<String>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str().to_owned()).into_response()
}

async fn no_such_endpoint(uri: axum::http::Uri) -> HostError {
    HostError::NoSuchEndpoint(uri.to_string())
}

/// The last line of defence: a bug that panics while serving one request answers that
/// request with a 500 in the API's envelope (and a log line), instead of dropping the
/// connection without a word. Guest input is not supposed to reach a panic; this is for
/// when it does.
async fn catch_panics(method: &axum::http::Method, uri: &axum::http::Uri, serving: impl std::future::Future<Output = Response>) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(serving).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = format!("{method} {}", uri.path());
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

/// Browsers take every answer as the type it says it is (the console renders API data as
/// text; an answer must never be sniffed into HTML).
fn no_sniff(mut response: Response) -> Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Rejections axum makes itself (a body over the limit, a malformed query, a method the path
/// does not take) come as plain text; the API answers every error in its JSON envelope.
/// Webhook answers are the adapter's and pass untouched.
async fn json_errors(uri: &axum::http::Uri, response: Response) -> Response {
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
            .route("/metrics", get(ops::metrics))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_serving_answers_500_in_the_envelope_naming_the_request() {
        let (method, uri) = (axum::http::Method::GET, "/boom?secret=1".parse().unwrap());
        let fine = catch_panics(&method, &uri, async { StatusCode::METHOD_NOT_ALLOWED.into_response() }).await;
        assert_eq!(fine.status(), StatusCode::METHOD_NOT_ALLOWED, "a request that does not panic passes as it is");
        let response = catch_panics(&method, &uri, async { panic!("kaboom") }).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["kind"], "internal", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("GET /boom;") && !message.contains("secret"), "{message}");
    }
}
