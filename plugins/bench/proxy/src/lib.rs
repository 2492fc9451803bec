//! The benchmark's peer for `wasmtime serve`, the upstream tool: the host's call API
//! (`POST /v1/tenants/{t}/crm/getCustomerDetails`, the same JSON in and out) as a
//! `wasi:http/proxy` component that runs Plando's own lookup mapping
//! (`crm_plando::ContactLookup`) and sends its request through `wasi:http/outgoing-handler`
//! with the SDK's transport, the same code path as an adapter inside the host. What it does
//! not do, the host does: tenants, crmConfig, egress policy, limits, traces, metrics.
//!
//! `wasmtime serve` gives it no routing override, so the CRM's address comes from the
//! environment: `PLANDO_URL` (the loopback emulator) replaces `https://plando.co.il`, and
//! `PLANDO_TOKEN` is the crmConfig's token.

// Natively only the mapping's tests run; the server is the component's.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
mod component {
    mod bindings {
        wit_bindgen::generate!({
            path: [
                "../../../wit/deps/io",
                "../../../wit/deps/clocks",
                "../../../wit/deps/random",
                "../../../wit/deps/filesystem",
                "../../../wit/deps/sockets",
                "../../../wit/deps/cli",
                "../../../wit/deps/http",
                "wit",
            ],
            world: "crm:bench-proxy/proxy",
            generate_all,
        });
    }

    use bindings::exports::wasi::http::incoming_handler::Guest;
    use bindings::wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};
    use bindings::wasi::io::streams::StreamError;

    struct Proxy;

    impl Guest for Proxy {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let env = bindings::wasi::cli::environment::get_environment();
            let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
            let path = request.path_with_query().unwrap_or_default();
            let is_post = matches!(request.method(), Method::Post);
            let (status, body) = match read_body(request) {
                Some(body) => super::answer(is_post, &path, &body, &var("PLANDO_URL"), &var("PLANDO_TOKEN")),
                None => (400, br#"{"error":{"code":"bad_request","message":"unreadable body"}}"#.to_vec()),
            };
            let headers = Fields::from_list(&[
                ("content-type".to_string(), b"application/json".to_vec()),
                ("content-length".to_string(), body.len().to_string().into_bytes()),
            ])
            .expect("valid headers");
            let response = OutgoingResponse::new(headers);
            response.set_status_code(status).expect("a valid status");
            let outgoing = response.body().expect("the response body, once");
            ResponseOutparam::set(out, Ok(response));
            {
                let stream = outgoing.write().expect("the body stream, once");
                for chunk in body.chunks(4096) {
                    if stream.blocking_write_and_flush(chunk).is_err() {
                        return;
                    }
                }
            }
            let _ = OutgoingBody::finish(outgoing, None);
        }
    }

    /// The whole body, at most 1 MiB (as the lean native server reads it).
    fn read_body(request: IncomingRequest) -> Option<Vec<u8>> {
        let body = request.consume().ok()?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().ok()?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(_) => return None,
                }
                if bytes.len() > 1 << 20 {
                    return None;
                }
            }
        }
        Some(bytes)
    }

    bindings::export!(Proxy with_types_in bindings);

    pub fn send(request: crm_sdk::Request) -> Result<crm_sdk::Response, crm_sdk::CrmError> {
        request.send(&crm_sdk::__private::WasiTransport)
    }
}

use crm_sdk::{json, Call, CrmError, Value};

/// Status and JSON body for one request; `send` is the transport (wasi-http in the component).
fn answer(is_post: bool, path: &str, body: &[u8], plando_url: &str, token: &str) -> (u16, Vec<u8>) {
    let route: Vec<&str> = path.split('?').next().unwrap_or_default().trim_matches('/').split('/').collect();
    let (tenant, func) = match route[..] {
        ["v1", "tenants", tenant, "crm", func] if is_post => (tenant, func),
        _ => return (404, br#"{"error":{"code":"not_found"}}"#.to_vec()),
    };
    let Ok(Value::Object(mut body)) = crm_sdk::serde_json::from_slice::<Value>(body) else {
        return (400, br#"{"error":{"code":"bad_request","message":"malformed JSON"}}"#.to_vec());
    };
    let chat = body.remove("chat").unwrap_or(Value::Null);
    let params = body.remove("params").unwrap_or_else(|| json!({}));
    let outcome = match Call::from_json(tenant, json!({"token": token, "chat": "1"}), chat, params) {
        Err(e) => Err(CrmError::Internal(e)),
        Ok(_) if func != "getCustomerDetails" => Err(CrmError::unsupported_function(func)),
        Ok(call) => lookup(&call, plando_url),
    };
    let out = match outcome {
        Ok(data) => json!({"outcome": "complete", "crmData": data}),
        Err(e) => json!({"outcome": "failure", "error": {"message": e.to_string()}}),
    };
    (200, out.to_string().into_bytes())
}

fn lookup(call: &Call, plando_url: &str) -> Result<crm_sdk::CrmData, CrmError> {
    let (mut request, lookup) = crm_plando::ContactLookup::new(call)?;
    let path = request.url.strip_prefix(crm_plando::BASE).ok_or_else(|| CrmError::Internal(format!("not Plando: {}", request.url)))?;
    request.url = format!("{}{path}", plando_url.trim_end_matches('/'));
    lookup.answer(send(request)?)
}

#[cfg(target_arch = "wasm32")]
use component::send;

#[cfg(not(target_arch = "wasm32"))]
fn send(request: crm_sdk::Request) -> Result<crm_sdk::Response, CrmError> {
    Err(CrmError::Internal(format!("{}: the proxy sends only from inside a component", request.url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_call_api_is_served_and_bad_bodies_are_refused() {
        let call = br#"{"chat": {"id": "c", "phone": "972501234567"}}"#;
        assert_eq!(answer(false, "/v1/tenants/acme/crm/getCustomerDetails", call, "", "").0, 404);
        assert_eq!(answer(true, "/v1/other", call, "", "").0, 404);
        assert_eq!(answer(true, "/v1/tenants/acme/crm/getCustomerDetails", b"{", "", "").0, 400);
        let (status, body) = answer(true, "/v1/tenants/acme/crm/newOpportunity", call, "", "");
        let body: Value = crm_sdk::serde_json::from_slice(&body).unwrap();
        assert_eq!((status, body["outcome"].as_str()), (200, Some("failure")), "{body}");
    }
}
