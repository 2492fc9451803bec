//! What a deploy refuses before a component ever runs for a tenant: not WebAssembly, a core
//! module, imports beyond the adapter world (sockets above all), the wrong export, and a
//! `describe` answer that does not hold up.

use super::Description;
use crate::bindings::wit;
use crate::egress::OriginRule;
use crate::error::HostError;
use serde_json::Value;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Interfaces a component may import. The adapter world needs wasi-http and what it uses;
/// the rest is the set every `wasm32-wasip2` std program imports, linked to an empty
/// context (no env vars, no args, no preopened dirs, stdin closed, stdout/stderr discarded)
/// so third-party components built for wasip2 load without gaining any capability.
/// Everything else (sockets above all) is refused at deploy.
const ALLOWED_IMPORTS: &[&str] = &[
    // the adapter world
    "wasi:http/outgoing-handler",
    "wasi:http/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    // the call's time (the SDK's `call.now()`): pinned to the call's start (`execute.rs`)
    "wasi:clocks/wall-clock",
    // inert wasip2 baseline
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The export every adapter must provide (any 0.1.x).
const ADAPTER_EXPORT: &str = "crm:adapter/crm@0.1.";

/// `\0asm`, then a version and a layer: layer 1 is a component, layer 0 a core module.
pub(super) fn check_header(bytes: &[u8]) -> Result<(), HostError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(HostError::InvalidComponent("the body is not WebAssembly (no \\0asm header)".into()));
    }
    if bytes[6..8] == [0, 0] {
        return Err(HostError::InvalidComponent(
            "the body is a core wasm module, not a component: turn it into one \
             (`cargo xtask plugins` does, or `wasm-tools component new`)"
                .into(),
        ));
    }
    Ok(())
}

pub(super) fn check_imports_exports(engine: &Engine, component: &Component) -> Result<(), HostError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        let interface = name.split('@').next().unwrap_or(name);
        let version_ok = name.split_once('@').is_some_and(|(_, v)| v.starts_with("0.2."));
        if !ALLOWED_IMPORTS.contains(&interface) || !version_ok {
            return Err(HostError::ForbiddenImport {
                import: name.to_string(),
                message: format!(
                    "the component imports `{name}`, which adapters may not use: adapters reach their CRM \
                     only through wasi:http/outgoing-handler@0.2.x (the inert wasip2 std imports are also \
                     accepted; sockets, and anything else, are not)"
                ),
            });
        }
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    if !exports.iter().any(|e| e.starts_with(ADAPTER_EXPORT)) {
        return Err(HostError::WrongWorld(format!(
            "the component does not export crm:adapter/crm@0.1.x (it exports: {})",
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
        )));
    }
    Ok(())
}

pub(super) fn check_description(d: wit::Description) -> Result<Description, HostError> {
    let bad = |m: String| HostError::InvalidComponent(format!("describe returned an invalid description: {m}"));
    let name_ok = !d.name.is_empty()
        && d.name.len() <= 64
        && d.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !name_ok {
        return Err(bad(format!("name '{}' must be 1-64 chars of a-z, 0-9, '-', '_'", d.name)));
    }
    if d.operations.is_empty() {
        return Err(bad("no operations".into()));
    }
    let config_schema: Value =
        serde_json::from_str(&d.config_schema).map_err(|e| bad(format!("config-schema is not JSON: {e}")))?;
    if !config_schema.is_object() {
        return Err(bad("config-schema is not a JSON object".into()));
    }
    let outbound = d.outbound_hosts.iter().map(|h| OriginRule::parse(h)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    Ok(Description {
        name: d.name,
        version: d.version,
        operations: d.operations,
        config_schema,
        secret_fields: d.secret_fields,
        endpoint_fields: d.endpoint_fields,
        outbound_hosts: d.outbound_hosts,
        outbound,
    })
}

