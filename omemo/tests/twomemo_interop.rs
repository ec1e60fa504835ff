//! Cross-implementation tests against python-omemo's OMEMO 2 backend (`twomemo`,
//! `doubleratchet`, `x3dh` from PyPI), driven through `tests/interop/twomemo_peer.py`
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

/// An identity as today's manager creates it (Curve25519 only: it publishes the sign-0
/// Ed25519 form).
#[test]
fn twomemo_initiates_and_this_crate_responds() {
    let identity = IdentityKeyPair::generate(&mut omemo::os_rng());
    peer_initiates_and_this_crate_responds(Version::Omemo2, identity);
}

/// An Ed25519 seed identity, as twomemo and other OMEMO 2 clients create them (half of
/// them have sign bit 1, which the sign-0 form would not match).
#[test]
fn twomemo_initiates_and_this_crate_responds_with_a_seed_identity() {
    for _ in 0..2 {
        let mut seed = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut omemo::os_rng(), &mut seed);
        peer_initiates_and_this_crate_responds(
            Version::Omemo2,
            IdentityKeyPair::from_ed25519_seed(seed),
        );
    }
}

#[test]
fn this_crate_initiates_and_twomemo_responds() {
    this_crate_initiates_and_peer_responds(Version::Omemo2);
}

#[test]
fn twomemo_rejects_what_this_crate_tampered() {
    peer_rejects_what_this_crate_tampered(Version::Omemo2);
}

#[test]
fn this_crate_rejects_what_twomemo_tampered() {
    this_crate_rejects_what_peer_tampered(Version::Omemo2);
}
