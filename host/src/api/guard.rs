//! The front door, decided from a request's head before its body is read: who may call
//! what (the admin routes, a tenant's calls and events), and, in open mode, that the request
//! comes from this machine. A refusal closes the connection, so a body the client is still
//! sending is never read.

use super::Shared;
use crate::auth::Caller;
use crate::error::HostError;
use crate::service::Host;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

pub(super) fn caller(host: &Host, headers: &HeaderMap) -> Caller {
    host.identify(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// Admin routes: refused unless the caller is the admin.
pub(super) async fn admin_only(State(host): Shared, request: Request, next: Next) -> Response {
    let who = caller(&host, request.headers());
    match who.require_admin() {
        Ok(()) => next.run(identified(request, who)).await,
        Err(e) => refused(e),
    }
}

/// A tenant's calls and events: refused unless the caller is the admin or holds one of that
/// tenant's keys.
pub(super) async fn tenant_or_admin(
    State(host): Shared,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let tenant = params.iter().find_map(|(name, value)| (name == "tenant").then_some(value)).unwrap_or_default();
    let who = caller(&host, request.headers());
    match who.require_tenant(tenant) {
        Ok(()) => next.run(identified(request, who)).await,
        Err(e) => refused(e),
    }
}

/// Hands the caller to the handler (`Authed`), so a key is looked up and hashed once.
fn identified(mut request: Request, who: Caller) -> Request {
    request.extensions_mut().insert(who);
    request
}

/// Open mode (no admin token) is for one developer's machine, where any web page the
/// developer opens can make the browser send requests to the host. So the request must
/// name the host by a loopback name or address (a page that rebinds its own name to
/// 127.0.0.1 still sends its own name: 421), and a request that changes something must not
/// come from another site's page (its `Origin`: 403).
pub(super) fn refuse_unless_local(host: &Host, request: &Request) -> Option<Response> {
    if !host.is_open() {
        return None;
    }
    let named = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or(request.uri().authority().map(|a| a.as_str()));
    if !named.is_some_and(|a| authority_host(a).is_some_and(is_loopback_name)) {
        return Some(refused(HostError::MisdirectedRequest(format!(
            "this host runs without an admin token and answers only requests addressed to a loopback name or address \
             (Host: {})",
            named.unwrap_or("none")
        ))));
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(origin) = request.headers().get(header::ORIGIN).filter(|_| changes_state) {
        let local = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()).and_then(|u| u.host_str().map(is_loopback_name));
        if local != Some(true) {
            return Some(refused(HostError::Forbidden(format!(
                "this host runs without an admin token and takes no changes from another site's page (Origin: {})",
                String::from_utf8_lossy(origin.as_bytes())
            ))));
        }
    }
    None
}

/// The host part of `host[:port]` or `[v6]:port`.
fn authority_host(authority: &str) -> Option<&str> {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h)).filter(|h| !h.is_empty())
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = host.as_bytes();
    name.eq_ignore_ascii_case(b"localhost")
        || name.len() >= 10 && name[name.len() - 10..].eq_ignore_ascii_case(b".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The refusal, on a connection that closes after it.
fn refused(e: HostError) -> Response {
    let mut response = e.into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_only() {
        for ok in ["localhost", "localhost:8080", "LocalHost:80", "127.0.0.1:9", "127.3.4.5", "[::1]:80", "dev.localhost:1", "Dev.LOCALHOST"] {
            assert!(authority_host(ok).is_some_and(is_loopback_name), "{ok}");
        }
        for bad in ["evil.example", "evil.example:80", "10.0.0.1:80", "[::2]:80", "localhost.evil.example", "evillocalhost", "", ":80"] {
            assert!(!authority_host(bad).is_some_and(is_loopback_name), "{bad}");
        }
    }
}
