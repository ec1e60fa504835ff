//! A stateful property test of [`common::chaos::Net`]: three devices of mixed versions
//! over a network that drops, duplicates, reorders and tampers, with restarts. Checked:
//! nothing panics, a message that fails to decrypt commits nothing, and once the network
//! is fair again every device reads what every other sends. The fuzz target `manager`
//! (`fuzz/`) drives the same network from fuzzer input.
//!
//! `cargo test` runs a few cases; `PROPTEST_CASES=500 cargo test --test chaos` runs many.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::chaos::{Action, Net};
use proptest::prelude::*;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| Action::Send { from, to }),
        4 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(message, at)| Action::Tamper { message, at }),
        1 => (0..3usize).prop_map(Action::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn hostile_networks_never_break_the_conversations(actions in prop::collection::vec(action(), 10..50)) {
        let mut net = Net::new();
        for action in &actions {
            net.apply(action);
        }
        if let Err(failure) = net.check_fair_delivery() {
            prop_assert!(false, "{failure} after {actions:?}");
        }
    }
}

/// Found by the fuzz target `manager`: Alice and Bob start sessions with each other at
/// once, a tampered copy of Bob's key exchange makes Alice rebuild, and Alice's first key
/// exchange reaches Bob: three sessions cross. With only one previous session kept per
/// device the pair never converged; with a few it does.
#[test]
fn three_crossing_session_starts_converge() {
    let mut net = Net::new();
    for action in [
        Action::Send { from: 0, to: 1 },
        Action::Send { from: 1, to: 0 },
        Action::Tamper {
            message: 1,
            at: 0x16 * 256 + 0x16,
        },
        Action::Deliver(0),
    ] {
        net.apply(&action);
    }
    net.check_fair_delivery().unwrap();
}
