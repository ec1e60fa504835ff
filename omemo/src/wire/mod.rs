//! Bytes <-> message types. The prost structs stay private to this module.

pub(crate) mod legacy;

/// Generated from `schemas/legacy.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod proto {
    include!(concat!(env!("OUT_DIR"), "/omemo.legacy.rs"));
}

/// Generated from `schemas/session.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod state {
    include!(concat!(env!("OUT_DIR"), "/omemo.state.rs"));
}

pub use legacy::{PreKeySignalMessage, SignalMessage};
