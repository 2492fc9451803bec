//! `wasi:http/types` as adapters get it: wasmtime-wasi-http's implementation, except that the
//! strings an adapter sets on an outgoing request (method, scheme, authority,
//! path-with-query) are bounded. The host keeps each for as long as the request resource
//! lives; unbounded, a few requests with paths the size of the instance's memory would make
//! the host hold many times what `--memory-mb` allows. wasmtime offers no hook for these
//! setters and a linker instance cannot be reopened, so the interface is linked here with
//! every other function handed to wasmtime-wasi-http unchanged (the impls below are that
//! delegation, one line each, for wasi:http@0.2.6 as wasmtime-wasi-http 48 defines it).

use super::state::{CallHooks, HostState};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};
use wasmtime_wasi_http::p2::bindings::http::types::{self, Method, Scheme, StatusCode, Trailers};
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse, HostResponseOutparam,
};
use wasmtime_wasi_http::p2::{HeaderError, HeaderResult, HttpError, HttpResult};
use wasmtime_wasi_http::{FieldMap, WasiHttpCtxView, WasiHttpView};

/// Longest method, scheme, authority or path-with-query an outgoing request may keep.
pub(crate) const MAX_REQUEST_STRING: usize = 8 << 10;

type Http<'a> = WasiHttpCtxView<'a>;

/// wasmtime-wasi-http's implementation, with the setters bounded.
struct Bounded<'a> {
    ctx: &'a mut wasmtime_wasi_http::WasiHttpCtx,
    table: &'a mut wasmtime::component::ResourceTable,
    hooks: &'a mut CallHooks,
}

struct BoundedHttp;
impl HasData for BoundedHttp {
    type Data<'a> = Bounded<'a>;
}

struct PlainHttp;
impl HasData for PlainHttp {
    type Data<'a> = Http<'a>;
}

/// `wasi:http/outgoing-handler` (wasmtime-wasi-http's, which sends through
/// [`crate::outbound`]) and the bounded `wasi:http/types`.
pub(super) fn add_to_linker(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
    outgoing_handler::add_to_linker::<_, PlainHttp>(l, |s| s.http())?;
    types::add_to_linker::<_, BoundedHttp>(l, &Default::default(), |s| Bounded {
        ctx: &mut s.http,
        table: &mut s.table,
        hooks: &mut s.hooks,
    })?;
    Ok(())
}

impl Bounded<'_> {
    fn http(&mut self) -> Http<'_> {
        WasiHttpCtxView { ctx: self.ctx, table: self.table, hooks: self.hooks }
    }

    /// Past [`MAX_REQUEST_STRING`]: the setter fails (as for a malformed value) and the call
    /// ends on the limit.
    fn too_long(&mut self, what: &str, len: usize) -> bool {
        let over = len > MAX_REQUEST_STRING;
        if over {
            self.hooks.outbound.scope.budget.hit(
                crate::error::FailureKind::ResourceLimitExceeded,
                format!("the adapter set an outgoing request's {what} of {len} bytes; at most {MAX_REQUEST_STRING} are kept"),
            );
        }
        over
    }
}

fn method_len(m: &Method) -> usize {
    if let Method::Other(o) = m {
        o.len()
    } else {
        0
    }
}

fn scheme_len(s: &Option<Scheme>) -> usize {
    if let Some(Scheme::Other(o)) = s {
        o.len()
    } else {
        0
    }
}

fn authority_len(a: &Option<String>) -> usize {
    a.as_ref().map_or(0, String::len)
}

fn path_with_query_len(p: &Option<String>) -> usize {
    p.as_ref().map_or(0, String::len)
}

impl types::Host for Bounded<'_> {
    fn convert_error_code(&mut self, err: HttpError) -> wasmtime::Result<types::ErrorCode> {
        <Http<'_> as types::Host>::convert_error_code(&mut self.http(), err)
    }
    fn convert_header_error(&mut self, err: HeaderError) -> wasmtime::Result<types::HeaderError> {
        <Http<'_> as types::Host>::convert_header_error(&mut self.http(), err)
    }
    fn http_error_code(&mut self, err: wasmtime::component::Resource<types::IoError>) -> wasmtime::Result<Option<types::ErrorCode>> {
        <Http<'_> as types::Host>::http_error_code(&mut self.http(), err)
    }
}

impl types::HostFields for Bounded<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<FieldMap>> {
        <Http<'_> as types::HostFields>::new(&mut self.http())
    }
    fn from_list(&mut self, entries: Vec<(String, Vec<u8>)>) -> HeaderResult<Resource<FieldMap>> {
        <Http<'_> as types::HostFields>::from_list(&mut self.http(), entries)
    }
    fn drop(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostFields>::drop(&mut self.http(), fields)
    }
    fn get(&mut self, fields: Resource<FieldMap>, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        <Http<'_> as types::HostFields>::get(&mut self.http(), fields, name)
    }
    fn has(&mut self, fields: Resource<FieldMap>, name: String) -> wasmtime::Result<bool> {
        <Http<'_> as types::HostFields>::has(&mut self.http(), fields, name)
    }
    fn set(&mut self, fields: Resource<FieldMap>, name: String, values: Vec<Vec<u8>>) -> HeaderResult<()> {
        <Http<'_> as types::HostFields>::set(&mut self.http(), fields, name, values)
    }
    fn delete(&mut self, fields: Resource<FieldMap>, name: String) -> HeaderResult<()> {
        <Http<'_> as types::HostFields>::delete(&mut self.http(), fields, name)
    }
    fn append(&mut self, fields: Resource<FieldMap>, name: String, value: Vec<u8>) -> HeaderResult<()> {
        <Http<'_> as types::HostFields>::append(&mut self.http(), fields, name, value)
    }
    fn entries(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        <Http<'_> as types::HostFields>::entries(&mut self.http(), fields)
    }
    fn clone(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<Resource<FieldMap>> {
        <Http<'_> as types::HostFields>::clone(&mut self.http(), fields)
    }
}

impl types::HostIncomingRequest for Bounded<'_> {
    fn method(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Method> {
        <Http<'_> as types::HostIncomingRequest>::method(&mut self.http(), id)
    }
    fn path_with_query(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Option<String>> {
        <Http<'_> as types::HostIncomingRequest>::path_with_query(&mut self.http(), id)
    }
    fn scheme(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Option<Scheme>> {
        <Http<'_> as types::HostIncomingRequest>::scheme(&mut self.http(), id)
    }
    fn authority(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Option<String>> {
        <Http<'_> as types::HostIncomingRequest>::authority(&mut self.http(), id)
    }
    fn headers(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Resource<FieldMap>> {
        <Http<'_> as types::HostIncomingRequest>::headers(&mut self.http(), id)
    }
    fn consume(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        <Http<'_> as types::HostIncomingRequest>::consume(&mut self.http(), id)
    }
    fn drop(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostIncomingRequest>::drop(&mut self.http(), id)
    }
}

impl types::HostOutgoingRequest for Bounded<'_> {
    fn new(&mut self, headers: Resource<FieldMap>) -> wasmtime::Result<Resource<HostOutgoingRequest>> {
        <Http<'_> as types::HostOutgoingRequest>::new(&mut self.http(), headers)
    }
    fn body(&mut self, request: Resource<HostOutgoingRequest>) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        <Http<'_> as types::HostOutgoingRequest>::body(&mut self.http(), request)
    }
    fn drop(&mut self, request: Resource<HostOutgoingRequest>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostOutgoingRequest>::drop(&mut self.http(), request)
    }
    fn method(&mut self, request: wasmtime::component::Resource<types::OutgoingRequest>) -> wasmtime::Result<Method> {
        <Http<'_> as types::HostOutgoingRequest>::method(&mut self.http(), request)
    }
    fn set_method(
        &mut self,
        request: wasmtime::component::Resource<types::OutgoingRequest>,
        method: Method,
    ) -> wasmtime::Result<Result<(), ()>> {
        if self.too_long("method", method_len(&method)) {
            return Ok(Err(()));
        }
        <Http<'_> as types::HostOutgoingRequest>::set_method(&mut self.http(), request, method)
    }
    fn path_with_query(&mut self, request: wasmtime::component::Resource<types::OutgoingRequest>) -> wasmtime::Result<Option<String>> {
        <Http<'_> as types::HostOutgoingRequest>::path_with_query(&mut self.http(), request)
    }
    fn set_path_with_query(
        &mut self,
        request: wasmtime::component::Resource<types::OutgoingRequest>,
        path_with_query: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        if self.too_long("path", path_with_query_len(&path_with_query)) {
            return Ok(Err(()));
        }
        <Http<'_> as types::HostOutgoingRequest>::set_path_with_query(&mut self.http(), request, path_with_query)
    }
    fn scheme(&mut self, request: wasmtime::component::Resource<types::OutgoingRequest>) -> wasmtime::Result<Option<Scheme>> {
        <Http<'_> as types::HostOutgoingRequest>::scheme(&mut self.http(), request)
    }
    fn set_scheme(
        &mut self,
        request: wasmtime::component::Resource<types::OutgoingRequest>,
        scheme: Option<Scheme>,
    ) -> wasmtime::Result<Result<(), ()>> {
        if self.too_long("scheme", scheme_len(&scheme)) {
            return Ok(Err(()));
        }
        <Http<'_> as types::HostOutgoingRequest>::set_scheme(&mut self.http(), request, scheme)
    }
    fn authority(&mut self, request: wasmtime::component::Resource<types::OutgoingRequest>) -> wasmtime::Result<Option<String>> {
        <Http<'_> as types::HostOutgoingRequest>::authority(&mut self.http(), request)
    }
    fn set_authority(
        &mut self,
        request: wasmtime::component::Resource<types::OutgoingRequest>,
        authority: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        if self.too_long("authority", authority_len(&authority)) {
            return Ok(Err(()));
        }
        <Http<'_> as types::HostOutgoingRequest>::set_authority(&mut self.http(), request, authority)
    }
    fn headers(
        &mut self,
        request: wasmtime::component::Resource<types::OutgoingRequest>,
    ) -> wasmtime::Result<wasmtime::component::Resource<FieldMap>> {
        <Http<'_> as types::HostOutgoingRequest>::headers(&mut self.http(), request)
    }
}

impl types::HostResponseOutparam for Bounded<'_> {
    fn drop(&mut self, id: Resource<HostResponseOutparam>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostResponseOutparam>::drop(&mut self.http(), id)
    }
    fn set(
        &mut self,
        id: Resource<HostResponseOutparam>,
        resp: Result<Resource<HostOutgoingResponse>, types::ErrorCode>,
    ) -> wasmtime::Result<()> {
        <Http<'_> as types::HostResponseOutparam>::set(&mut self.http(), id, resp)
    }
    fn send_informational(&mut self, _id: Resource<HostResponseOutparam>, _status: u16, _headers: Resource<FieldMap>) -> HttpResult<()> {
        <Http<'_> as types::HostResponseOutparam>::send_informational(&mut self.http(), _id, _status, _headers)
    }
}

impl types::HostIncomingResponse for Bounded<'_> {
    fn drop(&mut self, response: Resource<HostIncomingResponse>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostIncomingResponse>::drop(&mut self.http(), response)
    }
    fn status(&mut self, response: Resource<HostIncomingResponse>) -> wasmtime::Result<StatusCode> {
        <Http<'_> as types::HostIncomingResponse>::status(&mut self.http(), response)
    }
    fn headers(&mut self, response: Resource<HostIncomingResponse>) -> wasmtime::Result<Resource<FieldMap>> {
        <Http<'_> as types::HostIncomingResponse>::headers(&mut self.http(), response)
    }
    fn consume(&mut self, response: Resource<HostIncomingResponse>) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        <Http<'_> as types::HostIncomingResponse>::consume(&mut self.http(), response)
    }
}

impl types::HostFutureTrailers for Bounded<'_> {
    fn drop(&mut self, id: Resource<HostFutureTrailers>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostFutureTrailers>::drop(&mut self.http(), id)
    }
    fn subscribe(&mut self, index: Resource<HostFutureTrailers>) -> wasmtime::Result<Resource<DynPollable>> {
        <Http<'_> as types::HostFutureTrailers>::subscribe(&mut self.http(), index)
    }
    fn get(
        &mut self,
        id: Resource<HostFutureTrailers>,
    ) -> wasmtime::Result<Option<Result<Result<Option<Resource<Trailers>>, types::ErrorCode>, ()>>> {
        <Http<'_> as types::HostFutureTrailers>::get(&mut self.http(), id)
    }
}

impl types::HostIncomingBody for Bounded<'_> {
    fn stream(&mut self, id: Resource<HostIncomingBody>) -> wasmtime::Result<Result<Resource<DynInputStream>, ()>> {
        <Http<'_> as types::HostIncomingBody>::stream(&mut self.http(), id)
    }
    fn finish(&mut self, id: Resource<HostIncomingBody>) -> wasmtime::Result<Resource<HostFutureTrailers>> {
        <Http<'_> as types::HostIncomingBody>::finish(&mut self.http(), id)
    }
    fn drop(&mut self, id: Resource<HostIncomingBody>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostIncomingBody>::drop(&mut self.http(), id)
    }
}

impl types::HostOutgoingResponse for Bounded<'_> {
    fn new(&mut self, headers: Resource<FieldMap>) -> wasmtime::Result<Resource<HostOutgoingResponse>> {
        <Http<'_> as types::HostOutgoingResponse>::new(&mut self.http(), headers)
    }
    fn body(&mut self, id: Resource<HostOutgoingResponse>) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        <Http<'_> as types::HostOutgoingResponse>::body(&mut self.http(), id)
    }
    fn status_code(&mut self, id: Resource<HostOutgoingResponse>) -> wasmtime::Result<types::StatusCode> {
        <Http<'_> as types::HostOutgoingResponse>::status_code(&mut self.http(), id)
    }
    fn set_status_code(&mut self, id: Resource<HostOutgoingResponse>, status: types::StatusCode) -> wasmtime::Result<Result<(), ()>> {
        <Http<'_> as types::HostOutgoingResponse>::set_status_code(&mut self.http(), id, status)
    }
    fn headers(&mut self, id: Resource<HostOutgoingResponse>) -> wasmtime::Result<Resource<FieldMap>> {
        <Http<'_> as types::HostOutgoingResponse>::headers(&mut self.http(), id)
    }
    fn drop(&mut self, id: Resource<HostOutgoingResponse>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostOutgoingResponse>::drop(&mut self.http(), id)
    }
}

impl types::HostFutureIncomingResponse for Bounded<'_> {
    fn drop(&mut self, id: Resource<HostFutureIncomingResponse>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostFutureIncomingResponse>::drop(&mut self.http(), id)
    }
    fn get(
        &mut self,
        id: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<Option<Result<Result<Resource<HostIncomingResponse>, types::ErrorCode>, ()>>> {
        <Http<'_> as types::HostFutureIncomingResponse>::get(&mut self.http(), id)
    }
    fn subscribe(&mut self, id: Resource<HostFutureIncomingResponse>) -> wasmtime::Result<Resource<DynPollable>> {
        <Http<'_> as types::HostFutureIncomingResponse>::subscribe(&mut self.http(), id)
    }
}

impl types::HostOutgoingBody for Bounded<'_> {
    fn write(&mut self, id: Resource<HostOutgoingBody>) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        <Http<'_> as types::HostOutgoingBody>::write(&mut self.http(), id)
    }
    fn finish(&mut self, id: Resource<HostOutgoingBody>, ts: Option<Resource<Trailers>>) -> HttpResult<()> {
        <Http<'_> as types::HostOutgoingBody>::finish(&mut self.http(), id, ts)
    }
    fn drop(&mut self, id: Resource<HostOutgoingBody>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostOutgoingBody>::drop(&mut self.http(), id)
    }
}

impl types::HostRequestOptions for Bounded<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<types::RequestOptions>> {
        <Http<'_> as types::HostRequestOptions>::new(&mut self.http())
    }
    fn connect_timeout(&mut self, opts: Resource<types::RequestOptions>) -> wasmtime::Result<Option<types::Duration>> {
        <Http<'_> as types::HostRequestOptions>::connect_timeout(&mut self.http(), opts)
    }
    fn set_connect_timeout(
        &mut self,
        opts: Resource<types::RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        <Http<'_> as types::HostRequestOptions>::set_connect_timeout(&mut self.http(), opts, duration)
    }
    fn first_byte_timeout(&mut self, opts: Resource<types::RequestOptions>) -> wasmtime::Result<Option<types::Duration>> {
        <Http<'_> as types::HostRequestOptions>::first_byte_timeout(&mut self.http(), opts)
    }
    fn set_first_byte_timeout(
        &mut self,
        opts: Resource<types::RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        <Http<'_> as types::HostRequestOptions>::set_first_byte_timeout(&mut self.http(), opts, duration)
    }
    fn between_bytes_timeout(&mut self, opts: Resource<types::RequestOptions>) -> wasmtime::Result<Option<types::Duration>> {
        <Http<'_> as types::HostRequestOptions>::between_bytes_timeout(&mut self.http(), opts)
    }
    fn set_between_bytes_timeout(
        &mut self,
        opts: Resource<types::RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        <Http<'_> as types::HostRequestOptions>::set_between_bytes_timeout(&mut self.http(), opts, duration)
    }
    fn drop(&mut self, rep: Resource<types::RequestOptions>) -> wasmtime::Result<()> {
        <Http<'_> as types::HostRequestOptions>::drop(&mut self.http(), rep)
    }
}
