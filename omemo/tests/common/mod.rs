//! Test support shared by the integration tests; each test uses only part of it.

#![allow(dead_code, unreachable_pub)]

pub mod oldmemo;
pub mod pep;
