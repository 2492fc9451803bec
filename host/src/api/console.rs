//! The operator console at `/console`: static files compiled into the binary (no build step,
//! no CDN), served with a strict Content-Security-Policy. The page holds no data of its own:
//! it signs in with the admin token (kept in the tab's `sessionStorage`, sent as a bearer
//! token; no cookies, so nothing for a cross-site request to ride) and reads the documented
//! API.

use crate::service::Host;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Scripts and styles from this origin only (no inline script, no inline style attribute),
/// API calls to this origin only, never framed, no form posting elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                       base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<Arc<Host>> {
    Router::new()
        .route("/console", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/console.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/console.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
