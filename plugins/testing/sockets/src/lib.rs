//! A component that imports wasi:sockets: the host must refuse to deploy it.

use crm_sdk::{Adapter, AdapterSpec, Call, CrmData, CrmError, Transport};

#[cfg(target_arch = "wasm32")]
mod extras {
    wit_bindgen::generate!({ path: "wit", world: "crm:sockets-test/extras", generate_all });
}

#[derive(Default)]
pub struct Sockets;

impl Adapter for Sockets {
    const SPEC: AdapterSpec =
        AdapterSpec { name: "sockets", version: "0.1.0", operations: &["open"], config: &[], outbound_hosts: &[] };

    fn invoke(&self, _func_id: &str, _call: &Call, _http: &dyn Transport) -> Result<CrmData, CrmError> {
        #[cfg(target_arch = "wasm32")]
        drop(extras::wasi::sockets::instance_network::instance_network());
        Err(CrmError::Internal("unreachable in a host that links no sockets".into()))
    }
}

crm_sdk::export_adapter!(Sockets);
