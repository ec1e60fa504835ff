//! The Double Ratchet: one [`Session`] per pair of devices. No XML, no I/O.

pub(crate) mod chain;
mod codec;
pub(crate) mod receiver;
pub(crate) mod root;
pub(crate) mod session;

pub use session::{RatchetLimits, Session};
