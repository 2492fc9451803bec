//! A call's store data and the linker: what a component can reach. The adapter world's
//! imports (wasi-http through [`crate::outbound`]) and the inert wasip2 baseline, nothing else.

use crate::limits::MemoryCap;
use crate::outbound::CallOutbound;
use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::types::{HostFutureIncomingResponse, OutgoingRequestConfig};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

/// Links the adapter world's imports and the inert wasip2 baseline; nothing else.
pub(super) fn adapter_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
    let mut linker = Linker::<HostState>::new(engine);
    let l = &mut linker;
    wasmtime_wasi_io::add_to_linker_async(l)?;
    super::http_types::add_to_linker(l)?;
    clocks::monotonic_clock::add_to_linker::<_, Wasi>(l, wasi_view)?;
    clocks::wall_clock::add_to_linker::<_, Wasi>(l, wasi_view)?;
    random::random::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<_, Random>(l, |s| s.wasi.random())?;
    cli::environment::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::exit::add_to_linker::<_, Wasi>(l, &Default::default(), wasi_view)?;
    cli::stdin::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::stdout::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::stderr::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_input::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_output::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stdin::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stdout::add_to_linker::<_, Wasi>(l, wasi_view)?;
    cli::terminal_stderr::add_to_linker::<_, Wasi>(l, wasi_view)?;
    filesystem::types::add_to_linker::<_, Wasi>(l, wasi_view)?;
    filesystem::preopens::add_to_linker::<_, Wasi>(l, wasi_view)?;
    Ok(linker)
}

fn wasi_view(s: &mut HostState) -> WasiCtxView<'_> {
    WasiView::ctx(s)
}

struct Wasi;
impl HasData for Wasi {
    type Data<'a> = WasiCtxView<'a>;
}

struct Random;
impl HasData for Random {
    type Data<'a> = &'a mut wasmtime_wasi::random::WasiRandomCtx;
}

/// One call's store data.
pub(crate) struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) http: WasiHttpCtx,
    pub(super) memory: MemoryCap,
    pub(super) outbound: CallOutbound,
    pub(super) max_header_entries: u32,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_io::IoView for HostState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiHttpView for HostState {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Every header entry a guest creates passes here first: past the per-call count it is
    /// refused (the guest sees `forbidden`, and the call ends on the limit), before a flood of
    /// names can reach `http::HeaderMap`'s own capacity panic.
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        !self.outbound.scope.budget.take_header(self.max_header_entries)
            || wasmtime_wasi_http::types::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    /// The only way out of the sandbox; see [`crate::outbound`].
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::body::HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        self.outbound.send(request, config)
    }
}
