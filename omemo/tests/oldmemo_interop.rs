//! Cross-implementation tests against python-omemo's legacy backend (`oldmemo`,
//! `doubleratchet`, `x3dh` from PyPI), driven through `tests/interop/oldmemo_peer.py`
//! (protocol in `tests/interop/PROTOCOL.md`). The venv comes from
//! `scripts/setup-test-env`, which `scripts/test` runs first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::interop::{
    peer_initiates_and_this_crate_responds, peer_rejects_what_this_crate_tampered,
    this_crate_initiates_and_peer_responds, this_crate_rejects_what_peer_tampered,
};
use omemo::Version;
use omemo::hazmat::IdentityKeyPair;

#[test]
fn oldmemo_initiates_and_this_crate_responds() {
    let identity = IdentityKeyPair::generate(&mut omemo::os_rng());
    peer_initiates_and_this_crate_responds(Version::Legacy, identity);
}

#[test]
fn this_crate_initiates_and_oldmemo_responds() {
    this_crate_initiates_and_peer_responds(Version::Legacy);
}

#[test]
fn oldmemo_rejects_what_this_crate_tampered() {
    peer_rejects_what_this_crate_tampered(Version::Legacy);
}

#[test]
fn this_crate_rejects_what_oldmemo_tampered() {
    this_crate_rejects_what_peer_tampered(Version::Legacy);
}
