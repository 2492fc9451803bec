//! Generated bindings for the adapter world. Private to the host: nothing outside `runtime`
//! and `chat` sees generated types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "crm:adapter/adapter",
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use exports::crm::adapter::crm as wit;
