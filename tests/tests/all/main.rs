//! Every integration test, as modules of one binary (as wasmtime's `tests/all` does): one
//! link of wasmtime, cranelift, sqlx and axum instead of one per file. Each module tests one
//! area against the real host and real components; the emulators and the harness are the
//! `crm_tests` library (`tests/src`).

mod canary;
mod cli;
mod console;
mod front_door;
mod host_api;
mod hostile_input;
mod isolation;
mod leadim;
mod native_parity;
mod outbound_fuzz;
mod outside;
mod plando;
mod planfix;
mod process;
mod replay;
mod replicas;
mod service;
mod soak;
mod stores;

/// The `crm-host` command line as its own binary, built from the same library function as
/// the shipped one (cargo rebuilds it with the tests; it does not rebuild other packages' bins).
pub fn host_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_crm-host-under-test"))
}
