//! What an adapter's own tests use, natively:
//! - [`Recorder`], a scripted [`Transport`](crate::Transport) for unit tests of the mapping;
//! - [`Emulator`] (feature `native`), a CRM on loopback that answers real HTTP, for
//!   end-to-end tests beside the adapter: the adapter sends through
//!   [`NativeTransport`](crate::native::NativeTransport), which routes the CRM's production
//!   host to the emulator.

#[cfg(feature = "native")]
mod emulator;
mod recorder;

#[cfg(feature = "native")]
pub use emulator::{reply, Emulator};
pub use recorder::Recorder;
