//! Test support shared by the integration tests; each test uses only part of it.

#![allow(dead_code, unreachable_pub)]

pub mod chaos;
pub mod interop;
pub mod pep;
pub mod python_peer;
pub mod rng;
pub mod sessions;
pub mod stores;
