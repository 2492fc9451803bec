//! The wasm side: generated bindings (private to the SDK), conversion between WIT and SDK
//! types, and the wasi-http transport. Adapter authors never see this module.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "crm:adapter/adapter",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_crm_adapter",
        default_bindings_module: "crm_sdk::__private::bindings",
    });
}

/// The wall clock, from a world of the SDK's own: the adapter world is unchanged, and a
/// component that never asks the time imports nothing more.
mod clock_bindings {
    wit_bindgen::generate!({
        path: ["../../wit/deps/io", "../../wit/deps/clocks", "wit"],
        world: "crm:sdk/clock",
        generate_all,
    });
}

/// The time the host gives this call (Unix ms): the call's start, the same on every read.
pub fn now_ms() -> i64 {
    let t = clock_bindings::wasi::clocks::wall_clock::now();
    i64::try_from(t.seconds).unwrap_or(i64::MAX).saturating_mul(1000) + i64::from(t.nanoseconds / 1_000_000)
}

use crate::{Adapter, Call, Chat, CrmError, Direction, Media, Message, Origin, Request, Response, Timestamp, Transport, Values};
use bindings::exports::crm::adapter::crm as w;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{self as wasi_http, ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};
use bindings::wasi::io::streams::StreamError;

pub use w::{
    CallContext, CrmError as WitError, Description, Guest, WebhookOutcome as WitWebhookOutcome,
    WebhookRequest as WitWebhookRequest,
};

pub fn describe<A: Adapter>() -> Description {
    let spec = A::SPEC;
    Description {
        name: spec.name.to_string(),
        version: spec.version.to_string(),
        operations: spec.operations.iter().map(|s| s.to_string()).collect(),
        config_schema: spec.config_schema().to_string(),
        secret_fields: spec.secret_fields(),
        endpoint_fields: spec.endpoint_fields(),
        outbound_hosts: spec.outbound_hosts.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn validate_config<A: Adapter>(crm_config: String) -> Result<(), WitError> {
    let config = Values::parse(Origin::Config, &crm_config).map_err(to_wit)?;
    A::default().validate_config(&config).map_err(to_wit)
}

pub fn invoke<A: Adapter>(func_id: String, ctx: CallContext) -> Result<String, WitError> {
    let call = call_from_wit(ctx).map_err(to_wit)?;
    let data = crate::run(&A::default(), &func_id, &call, &WasiTransport).map_err(to_wit)?;
    Ok(crate::json::object_to_string(&data))
}

pub fn handle_webhook<A: Adapter>(
    project_id: String,
    crm_config: String,
    request: WitWebhookRequest,
) -> Result<WitWebhookOutcome, WitError> {
    let config = Values::parse(Origin::Config, &crm_config).map_err(to_wit)?;
    let adapter = A::default();
    adapter.validate_config(&config).map_err(to_wit)?;
    let request = crate::WebhookRequest {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers,
        body: request.body,
    };
    let out = adapter.handle_webhook(&project_id, &config, &request, &WasiTransport).map_err(to_wit)?;
    Ok(WitWebhookOutcome {
        response: w::WebhookResponse {
            status: out.response.status,
            headers: out.response.headers,
            body: out.response.body,
        },
        messages: out
            .messages
            .into_iter()
            .map(|m| w::InboundMessage {
                chat_id: m.chat_id,
                phone: m.phone,
                text: m.text,
                author: m.author,
                media: m.media.into_iter().map(media_to_wit).collect(),
                extra: crate::json::object_to_string(&m.extra),
            })
            .collect(),
    })
}

fn call_from_wit(ctx: CallContext) -> Result<Call, CrmError> {
    let c = ctx.chat;
    let crm_data = Values::parse(Origin::Params, &c.crm_data)
        .map_err(|e| CrmError::invalid_params("chat.crmData", e.to_string()))?
        .into_map();
    Ok(Call {
        now: Timestamp::from_unix_ms(now_ms()),
        project_id: ctx.project_id,
        config: Values::parse(Origin::Config, &ctx.crm_config)?,
        params: Values::parse(Origin::Params, &ctx.params)?,
        chat: Chat {
            id: c.id,
            phone: c.phone,
            title: c.title,
            agent: c.agent.map(|a| crate::Agent { email: a.email, name: a.name }),
            crm_data,
            nodes: c.nodes.into_iter().map(|n| (n.node, serde_json::Value::String(n.text))).collect(),
            messages: c
                .messages
                .into_iter()
                .map(|m| Message {
                    id: m.id,
                    direction: match m.direction {
                        w::Direction::Incoming => Direction::Incoming,
                        w::Direction::Outgoing => Direction::Outgoing,
                    },
                    text: m.text,
                    timestamp: m.timestamp,
                    from: m.from,
                    to: m.to,
                    media: m
                        .media
                        .into_iter()
                        .map(|x| Media { url: x.url, file_name: x.file_name, mime_type: x.mime_type })
                        .collect(),
                })
                .collect(),
            url: c.url,
        },
    })
}

fn media_to_wit(m: Media) -> w::Media {
    w::Media { url: m.url, file_name: m.file_name, mime_type: m.mime_type }
}

fn to_wit(e: CrmError) -> WitError {
    match e {
        CrmError::Config { field, message } => WitError::Config(w::FieldError { field, message }),
        CrmError::InvalidParams { field, message } => WitError::InvalidParams(w::FieldError { field, message }),
        CrmError::NotFound(m) => WitError::NotFound(m),
        CrmError::Ambiguous(m) => WitError::Ambiguous(m),
        CrmError::Unauthorized(m) => WitError::Unauthorized(m),
        CrmError::RateLimited { message, retry_after_ms } => {
            WitError::RateLimited(w::RateLimit { message, retry_after_ms })
        }
        CrmError::Upstream { status, message, body_excerpt } => {
            WitError::Upstream(w::UpstreamError { status, message, body_excerpt })
        }
        CrmError::Unsupported(m) => WitError::Unsupported(m),
        CrmError::EgressDenied(m) => WitError::EgressDenied(m),
        CrmError::Timeout(m) => WitError::Timeout(m),
        CrmError::Transport(m) => WitError::Transport(m),
        CrmError::Internal(m) => WitError::Internal(m),
    }
}

/// wasi-http writes at most this much per `blocking-write-and-flush`.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;

/// Must match `crm_host::outbound::IDEMPOTENT_HEADER`.
const IDEMPOTENT_HEADER: &str = "x-crm-idempotent";

/// Sends requests through `wasi:http/outgoing-handler`; the host applies egress policy,
/// timeouts and its own size caps.
pub struct WasiTransport;

impl Transport for WasiTransport {
    fn send(&self, req: Request) -> Result<Response, CrmError> {
        let target = Target(&req);
        let url = url::Url::parse(&req.url).map_err(|e| CrmError::Internal(format!("bad URL {}: {e}", req.url)))?;
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(CrmError::Internal(format!("unsupported URL scheme '{other}' in {}", req.url))),
        };
        let host = url.host_str().ok_or_else(|| CrmError::Internal(format!("URL without host: {}", req.url)))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };

        let mut fields: Vec<(String, Vec<u8>)> = req.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
        // Read (and removed) by the host, which decides about retries.
        fields.push((IDEMPOTENT_HEADER.to_string(), if req.idempotent { b"1".to_vec() } else { b"0".to_vec() }));
        if !req.body.is_empty() {
            fields.push(("content-length".to_string(), req.body.len().to_string().into_bytes()));
        }
        // One host call for all of them; only a refusal looks for the header at fault.
        let headers = Fields::from_list(&fields).map_err(|e| {
            let at_fault = fields.iter().find(|(k, v)| Fields::new().append(k, v).is_err()).map_or("", |(k, _)| k.as_str());
            CrmError::Internal(format!("header {at_fault}: {e:?}"))
        })?;
        let request = OutgoingRequest::new(headers);
        let method = match req.method {
            crate::Method::Get => wasi_http::Method::Get,
            crate::Method::Post => wasi_http::Method::Post,
            crate::Method::Put => wasi_http::Method::Put,
            crate::Method::Patch => wasi_http::Method::Patch,
            crate::Method::Delete => wasi_http::Method::Delete,
        };
        let internal = |what: &str| CrmError::Internal(format!("{target}: cannot set {what}"));
        // GET is a new request's method already.
        if !matches!(method, wasi_http::Method::Get) {
            request.set_method(&method).map_err(|_| internal("method"))?;
        }
        request.set_scheme(Some(&scheme)).map_err(|_| internal("scheme"))?;
        request.set_authority(Some(&authority)).map_err(|_| internal("authority"))?;
        request.set_path_with_query(Some(&path)).map_err(|_| internal("path"))?;

        let body = request.body().map_err(|_| internal("body"))?;
        let future = outgoing_handler::handle(request, None).map_err(|e| map_error(&target, e))?;
        {
            let out = body.write().map_err(|_| internal("body stream"))?;
            for chunk in req.body.chunks(WRITE_CHUNK) {
                out.blocking_write_and_flush(chunk).map_err(|e| stream_error(&target, e))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| map_error(&target, e))?;

        // The answer is seldom there before a wait (the host runs the exchange while the guest
        // waits), so wait first: a ready pollable returns at once.
        let incoming = loop {
            future.subscribe().block();
            if let Some(r) = future.get() {
                break r;
            }
        };
        let response = incoming
            .map_err(|_| CrmError::Internal(format!("{target}: response taken twice")))?
            .map_err(|e| map_error(&target, e))?;

        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let cap = req.max_response_bytes;
        let too_large = || CrmError::Transport(format!("{target}: response body is larger than {cap} bytes"));
        let declared = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > cap) {
            return Err(too_large());
        }

        let incoming_body = response.consume().map_err(|_| CrmError::Internal(format!("{target}: body taken twice")))?;
        let mut buf = Vec::with_capacity(declared.unwrap_or(0));
        {
            let stream = incoming_body.stream().map_err(|_| CrmError::Internal(format!("{target}: body stream")))?;
            loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) => {
                        if buf.len() + chunk.len() > cap {
                            return Err(too_large());
                        }
                        buf.extend_from_slice(&chunk);
                        // All the declared bytes: the end of the stream needs no read of its own.
                        if declared == Some(buf.len()) {
                            break;
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(&target, e)),
                }
            }
        }
        IncomingBody::finish(incoming_body);
        Ok(Response { status, headers, body: buf })
    }
}

/// A request as errors name it (`POST https://…`), written out only when one is.
struct Target<'a>(&'a Request);

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.method.as_str(), self.0.url)
    }
}

fn stream_error(target: &Target, e: StreamError) -> CrmError {
    match e {
        StreamError::Closed => CrmError::Transport(format!("{target}: connection closed early")),
        StreamError::LastOperationFailed(io) => match wasi_http::http_error_code(&io) {
            Some(code) => map_error(target, code),
            None => CrmError::Transport(format!("{target}: {}", io.to_debug_string())),
        },
    }
}

fn map_error(target: &Target, e: ErrorCode) -> CrmError {
    match e {
        ErrorCode::HttpRequestDenied => {
            CrmError::EgressDenied(format!("{target}: the host does not allow this adapter to reach that host"))
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => CrmError::Timeout(format!("{target}: timed out ({e:?})")),
        ErrorCode::HttpResponseBodySize(limit) => CrmError::Transport(format!(
            "{target}: response body is larger than the host allows{}",
            limit.map(|l| format!(" ({l} bytes)")).unwrap_or_default()
        )),
        other => CrmError::Transport(format!("{target}: {other:?}")),
    }
}
