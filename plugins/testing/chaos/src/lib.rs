//! A hostile and introspective adapter for the host's tests. Never deploy it for real.

use crm_sdk::{json, Adapter, AdapterSpec, Call, Config, ConfigField, CrmData, CrmError, Request, Transport, Value};
use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(target_arch = "wasm32")]
mod extras {
    wit_bindgen::generate!({ path: "wit", world: "crm:chaos/extras", generate_all });
}

#[derive(Default)]
pub struct Chaos;

/// How many arrays and objects nest in `v`, counted without recursion.
fn depth(v: &Value) -> usize {
    let (mut deepest, mut pending) = (0, vec![(v, 0)]);
    while let Some((v, d)) = pending.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => pending.extend(items.iter().map(|v| (v, d + 1))),
            Value::Object(map) => pending.extend(map.values().map(|v| (v, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Survives between calls only if the host reuses instances (it must not).
static CALLS: AtomicU32 = AtomicU32::new(0);

impl Adapter for Chaos {
    const SPEC: AdapterSpec = AdapterSpec {
        name: "chaos",
        version: "0.1.0",
        operations: &["echo", "fetch", "spin", "hog", "panic", "env", "counter", "flood", "big", "fields", "headers", "recurse", "trap", "rawget", "hoard", "longpath", "churn"],
        config: &[ConfigField::string("token").secret(), ConfigField::endpoint("hookUrl")],
        outbound_hosts: &["https://api.chaos.test"],
    };

    /// With `leakOnValidate`, refuses the config with a message that repeats the secret, as a
    /// careless (or hostile) adapter would.
    fn validate_config(&self, config: &Config) -> Result<(), CrmError> {
        if config.get("leakOnValidate").is_some() {
            let token = config.str("token")?.unwrap_or_default();
            return Err(CrmError::config("token", format!("token '{token}' was refused (JSON: {})", json!(token))));
        }
        Self::SPEC.validate(config)
    }

    fn invoke(&self, func_id: &str, call: &Call, http: &dyn Transport) -> Result<CrmData, CrmError> {
        let data = match func_id {
            "echo" => json!({
                "projectId": call.project_id,
                "chat": serde_chat(call),
                "params": Value::Object(call.params.map().clone()),
                "config": Value::Object(call.config.map().clone()),
            }),
            "fetch" => {
                let url = call.params.required_str("url")?;
                let mut request = Request::get(url);
                // One header of the caller's choosing, which may be one the host refuses.
                if let (Some(name), Some(value)) = (call.params.str("headerName")?, call.params.str("headerValue")?) {
                    request = request.header(name, value);
                }
                let resp = request.send(http)?;
                // How deep the answer nests, read as a `Value` or as a type made from one.
                match call.params.str("read")?.as_deref() {
                    Some("value") => json!({"status": resp.status, "depth": depth(&resp.json::<Value>()?)}),
                    Some("typed") => json!({"status": resp.status, "depth": depth(&Value::Array(resp.json::<Vec<Value>>()?))}),
                    _ => json!({"status": resp.status, "body": resp.text(), "host": resp.header("x-seen-host")}),
                }
            }
            // Requests until one fails (or 1,000 went out), as a runaway adapter would.
            "flood" => {
                let url = call.params.required_str("url")?;
                let mut sent = 0u32;
                while sent < 1000 && Request::get(url.as_str()).send(http).is_ok() {
                    sent += 1;
                }
                json!({"sent": sent})
            }
            // crmData of about `bytes` bytes.
            "big" => {
                let n = call.params.uint("bytes", 0)? as usize;
                json!({"filler": "x".repeat(n)})
            }
            "fields" => hold_fields(),
            // Unbounded recursion: the wasm stack overflows.
            "recurse" => json!({"depth": recurse(std::hint::black_box(1))}),
            "trap" => trap(),
            "rawget" => raw_get(
                call.params.required_str("scheme")?,
                call.params.required_str("authority")?,
                call.params.str("method")?.unwrap_or_else(|| "GET".into()),
            )?,
            "headers" => header_flood(),
            "longpath" => long_path(call.params.uint("bytes", 0)? as usize),
            "hoard" => hoard(call.params.required_str("authority")?, call.params.uint("requests", 8)? as usize),
            "spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("chaos adapter panicked on purpose"),
            "env" => env_report(),
            "counter" => json!({"count": CALLS.fetch_add(1, Ordering::SeqCst) + 1}),
            "churn" => churn(call.params.uint("rounds", 20_000)? as usize, call.params.uint("seed", 1)?),
            other => return Err(CrmError::unsupported_function(other)),
        };
        match data {
            Value::Object(m) => Ok(m),
            _ => unreachable!("every arm builds an object"),
        }
    }
}

fn serde_chat(call: &Call) -> Value {
    crm_sdk::serde_json::to_value(&call.chat).expect("chat serialises")
}

/// Host-side memory, as an attacker takes it: wasi-http `fields` holding 60 KB each, kept
/// alive in a loop (raw bindings, no SDK).
#[cfg(target_arch = "wasm32")]
fn hold_fields() -> Value {
    use crm_sdk::__private::bindings::wasi::http::types::Fields;
    let value = vec![b'a'; 60_000];
    let mut held = Vec::new();
    for _ in 0..100_000 {
        let f = Fields::new();
        if f.append(&"x-big".to_string(), &value).is_err() {
            break;
        }
        held.push(f);
    }
    json!({"held": held.len()})
}

/// 40,000 distinct header names in one `fields.from-list` (http's HeaderMap holds 32,768).
#[cfg(target_arch = "wasm32")]
fn header_flood() -> Value {
    use crm_sdk::__private::bindings::wasi::http::types::Fields;
    let entries: Vec<(String, Vec<u8>)> = (0..40_000).map(|i| (format!("x-h{i}"), b"v".to_vec())).collect();
    let ok = Fields::from_list(&entries).is_ok();
    json!({"accepted": ok})
}

// Unbounded on purpose: the test wants the stack to run out.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    recurse(n + 1).wrapping_add(pad[(n % 64) as usize])
}

#[cfg(target_arch = "wasm32")]
fn trap() -> Value {
    core::arch::wasm32::unreachable()
}

/// A GET with exactly the scheme and authority given (no URL parser normalising them), sent
/// through the raw outgoing-handler.
#[cfg(target_arch = "wasm32")]
/// A request through the raw bindings, without the SDK's idempotency marker.
fn raw_get(scheme: String, authority: String, method: String) -> Result<Value, CrmError> {
    use crm_sdk::__private::bindings::wasi::http::outgoing_handler;
    use crm_sdk::__private::bindings::wasi::http::types::{ErrorCode, Fields, Method, OutgoingRequest, Scheme};
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_method(&match method.as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    });
    let scheme = match scheme.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let _ = req.set_scheme(Some(&scheme));
    if req.set_authority(Some(&authority)).is_err() {
        return Err(CrmError::Internal(format!("authority {authority} refused by the bindings")));
    }
    let _ = req.set_path_with_query(Some("/raw"));
    let outcome = outgoing_handler::handle(req, None).and_then(|future| {
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(resp))) => Ok(resp.status()),
            Some(Ok(Err(e))) => Err(e),
            _ => Err(ErrorCode::InternalError(None)),
        }
    });
    match outcome {
        Ok(status) => Ok(json!({"status": status})),
        Err(ErrorCode::HttpRequestDenied) => Err(CrmError::EgressDenied(format!("{authority} denied"))),
        Err(e) => Err(CrmError::Transport(format!("{e:?}"))),
    }
}

/// Host-side memory through responses: `n` requests at once, each response kept unread, so
/// the host holds every body it read for them.
#[cfg(target_arch = "wasm32")]
fn hoard(authority: String, n: usize) -> Value {
    use crm_sdk::__private::bindings::wasi::http::outgoing_handler;
    use crm_sdk::__private::bindings::wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let mut futures = Vec::new();
    for _ in 0..n {
        let req = OutgoingRequest::new(Fields::new());
        let _ = req.set_scheme(Some(&Scheme::Http));
        let _ = req.set_authority(Some(&authority));
        let _ = req.set_path_with_query(Some("/big"));
        if let Ok(f) = outgoing_handler::handle(req, None) {
            futures.push(f);
        }
    }
    let (mut kept, mut failed) = (Vec::new(), 0);
    for f in &futures {
        f.subscribe().block();
        match f.get() {
            Some(Ok(Ok(resp))) => kept.push(resp),
            _ => failed += 1,
        }
    }
    json!({"kept": kept.len(), "failed": failed})
}

/// Host-side memory through a request's strings: 64 requests, each with a path of `bytes`.
#[cfg(target_arch = "wasm32")]
fn long_path(bytes: usize) -> Value {
    use crm_sdk::__private::bindings::wasi::http::types::{Fields, OutgoingRequest};
    let path = format!("/{}", "p".repeat(bytes));
    let mut kept = Vec::new();
    for _ in 0..64 {
        let req = OutgoingRequest::new(Fields::new());
        if req.set_path_with_query(Some(&path)).is_ok() {
            kept.push(req);
        }
    }
    json!({"kept": kept.len()})
}

#[cfg(not(target_arch = "wasm32"))]
fn long_path(_: usize) -> Value {
    json!({})
}

#[cfg(not(target_arch = "wasm32"))]
fn hoard(_: String, _: usize) -> Value {
    json!({})
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> Value {
    panic!("trap")
}

#[cfg(not(target_arch = "wasm32"))]
fn raw_get(_: String, _: String, _: String) -> Result<Value, CrmError> {
    Err(CrmError::Internal("wasm only".into()))
}

#[cfg(not(target_arch = "wasm32"))]
fn hold_fields() -> Value {
    json!({})
}

#[cfg(not(target_arch = "wasm32"))]
fn header_flood() -> Value {
    json!({})
}

#[cfg(target_arch = "wasm32")]
fn env_report() -> Value {
    let env = extras::wasi::cli::environment::get_environment();
    let args = extras::wasi::cli::environment::get_arguments();
    let preopens = extras::wasi::filesystem::preopens::get_directories();
    json!({"env": env.len(), "args": args.len(), "preopens": preopens.len()})
}

#[cfg(not(target_arch = "wasm32"))]
fn env_report() -> Value {
    json!({"env": std::env::vars().count()})
}

crm_sdk::export_adapter!(Chaos);

/// Allocates, grows, shrinks and frees blocks of many sizes and alignments in a random order
/// through the global allocator (the SDK's: its arena, then dlmalloc on grown pages), each
/// block filled with its own byte and checked before it is resized or freed; zeroed blocks
/// are checked for zeros. Fails on the first block that is not what it should be.
fn churn(rounds: usize, seed: u64) -> Value {
    use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
    let mut state = seed.max(1);
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let check = |p: *mut u8, len: usize, fill: u8, what: &str| {
        // SAFETY: `p` is a live block of at least `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
        if let Some(i) = bytes.iter().position(|b| *b != fill) {
            panic!("churn: byte {i} of a {what} block of {len} holds {} instead of {fill}", bytes[i]);
        }
    };
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    let (mut held, mut most) = (0usize, 0usize);
    for round in 0..rounds {
        let fill = (round % 251) as u8 + 1;
        match next(10) {
            // Mostly small blocks, some of tens of KiB; at most 512 KiB held at once.
            0..=4 if held < 512 << 10 => {
                let size = if next(20) == 0 { 1 + next(48 << 10) } else { 1 + next(512) };
                let layout = Layout::from_size_align(size, 1 << next(7)).unwrap();
                let zeroed = next(4) == 0;
                // SAFETY: the layout's size is not zero.
                let p = unsafe { if zeroed { alloc_zeroed(layout) } else { alloc(layout) } };
                assert!(!p.is_null(), "churn: out of memory holding {held} bytes");
                assert_eq!(p as usize % layout.align(), 0, "churn: a block is not aligned to {}", layout.align());
                if zeroed {
                    check(p, size, 0, "zeroed");
                }
                // SAFETY: the block is `size` bytes.
                unsafe { std::ptr::write_bytes(p, fill, size) };
                live.push((p, layout, fill));
                held += size;
            }
            0..=6 if !live.is_empty() => {
                let i = next(live.len());
                let (p, layout, old_fill) = live[i];
                check(p, layout.size(), old_fill, "resized");
                let bound = if next(2) == 0 { layout.size() } else { 4 * layout.size() + 64 };
                let size = 1 + next(bound);
                // SAFETY: `p` is live with `layout`; the new size is not zero.
                let q = unsafe { realloc(p, layout, size) };
                assert!(!q.is_null(), "churn: out of memory holding {held} bytes");
                check(q, size.min(layout.size()), old_fill, "moved");
                // SAFETY: the block is `size` bytes.
                unsafe { std::ptr::write_bytes(q, fill, size) };
                held = held + size - layout.size();
                live[i] = (q, Layout::from_size_align(size, layout.align()).unwrap(), fill);
            }
            _ if !live.is_empty() => {
                // Often the newest block (the arena takes it back), otherwise any.
                let i = if next(2) == 0 { live.len() - 1 } else { next(live.len()) };
                let (p, layout, fill) = live.swap_remove(i);
                check(p, layout.size(), fill, "freed");
                // SAFETY: `p` is live with `layout`.
                unsafe { dealloc(p, layout) };
                held -= layout.size();
            }
            _ => {}
        }
        most = most.max(held);
    }
    for (p, layout, fill) in live.drain(..) {
        check(p, layout.size(), fill, "freed");
        // SAFETY: `p` is live with `layout`.
        unsafe { dealloc(p, layout) };
    }
    #[cfg(target_arch = "wasm32")]
    let pages = std::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    let pages = 0;
    json!({"rounds": rounds, "mostHeld": most, "pages": pages})
}
