//! Property tests of the Double Ratchet through the public API: random interleavings of
//! sends in both directions with loss and reordering, tampering, and replays.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::sessions::first_contact;
use omemo::hazmat::{
    AuthenticatedMessage, IdentityKeyPair, KeyExchange, PreKey, PreKeyBundle, RatchetMessage,
    Session, SignedPreKey,
};
use omemo::{DecryptError, Version};
use proptest::prelude::*;

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::Legacy), Just(Version::Omemo2)]
}

/// Alice's session (already confirmed) and Bob's, after one key exchange and one reply.
fn established(version: Version) -> (Session, Session) {
    let mut rng = omemo::os_rng();
    let (mut to_bob, _, mut to_alice) = first_contact(version);
    let reply = signal(to_alice.encrypt(b"hi").unwrap());
    assert_eq!(to_bob.decrypt(&mut rng, &reply).unwrap().as_slice(), b"hi");
    (to_bob, to_alice)
}

fn signal(message: RatchetMessage) -> AuthenticatedMessage {
    message.authenticated().clone()
}

#[derive(Clone, Debug)]
enum Op {
    /// Send one message in a direction (false: Alice to Bob).
    Send(bool),
    /// Deliver the pending message at this position (modulo the queue length).
    Deliver(bool, usize),
    /// Lose the pending message at this position.
    Drop(bool, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(Op::Send),
        3 => (any::<bool>(), any::<usize>()).prop_map(|(d, i)| Op::Deliver(d, i)),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(d, i)| Op::Drop(d, i)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every delivered message decrypts to what was sent, whatever the order, loss and
    /// interleaving; each is rejected as a duplicate when delivered again.
    #[test]
    fn interleavings_with_loss_and_reordering_decrypt(
        version in version(), ops in prop::collection::vec(op(), 1..300)
    ) {
        let (mut alice, mut bob) = established(version);
        let mut rng = omemo::os_rng();
        let mut pending: [Vec<(Vec<u8>, AuthenticatedMessage)>; 2] = [Vec::new(), Vec::new()];
        let mut sent = 0u32;
        for op in ops {
            match op {
                Op::Send(direction) => {
                    sent += 1;
                    let text = format!("message {sent}").into_bytes();
                    let sender = if direction { &mut bob } else { &mut alice };
                    let message = signal(sender.encrypt(&text).unwrap());
                    pending[direction as usize].push((text, message));
                }
                Op::Deliver(direction, _) | Op::Drop(direction, _) if pending[direction as usize].is_empty() => {}
                Op::Deliver(direction, i) => {
                    let queue = &mut pending[direction as usize];
                    let (text, message) = queue.remove(i % queue.len());
                    let receiver = if direction { &mut alice } else { &mut bob };
                    let plaintext = receiver.decrypt(&mut rng, &message).unwrap();
                    prop_assert_eq!(plaintext.as_slice(), text.as_slice());
                    let before = receiver.to_bytes();
                    prop_assert!(receiver.decrypt(&mut rng, &message).is_err(), "replay accepted");
                    prop_assert_eq!(&*receiver.to_bytes(), &*before);
                }
                Op::Drop(direction, i) => {
                    let queue = &mut pending[direction as usize];
                    queue.remove(i % queue.len());
                }
            }
        }
        // Whatever is still in flight decrypts too.
        for (direction, queue) in pending.into_iter().enumerate() {
            let receiver = if direction == 1 { &mut alice } else { &mut bob };
            for (text, message) in queue.into_iter().rev() {
                let plaintext = receiver.decrypt(&mut rng, &message).unwrap();
                prop_assert_eq!(plaintext.as_slice(), text.as_slice());
            }
        }
    }

    /// Changing any bit of any message makes it fail, and the session is unchanged.
    #[test]
    fn tampering_any_byte_fails_without_changing_state(
        version in version(), skip in 0usize..5, position in any::<prop::sample::Index>(),
        bit in 0u8..8, new_chain in any::<bool>()
    ) {
        let (mut alice, mut bob) = established(version);
        let mut rng = omemo::os_rng();
        if new_chain {
            // Make the message under test start a new chain at Bob (a DH step).
            let m = signal(bob.encrypt(b"x").unwrap());
            alice.decrypt(&mut rng, &m).unwrap();
        }
        let messages: Vec<AuthenticatedMessage> =
            (0..=skip).map(|i| signal(alice.encrypt(&[i as u8; 32]).unwrap())).collect();
        let target = messages[skip].as_bytes();
        let mut tampered = target.to_vec();
        let at = position.index(tampered.len());
        tampered[at] ^= 1 << bit;
        let before = bob.to_bytes();
        if let Ok(parsed) = AuthenticatedMessage::from_bytes(version, &tampered) {
            prop_assert!(bob.decrypt(&mut rng, &parsed).is_err());
        }
        prop_assert_eq!(&*bob.to_bytes(), &*before);
        // The genuine message still decrypts afterwards.
        let plaintext = bob.decrypt(&mut rng, &messages[skip]).unwrap();
        prop_assert_eq!(plaintext.as_slice(), &[skip as u8; 32][..]);
    }

    /// Changing any bit of a key exchange makes the responder fail.
    #[test]
    fn tampered_key_exchange_builds_no_session(
        version in version(), position in any::<prop::sample::Index>(), bit in 0u8..8
    ) {
        let mut rng = omemo::os_rng();
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
        let pre_key = PreKey::generate(&mut rng, 1);
        let bundle = PreKeyBundle::new(&bob, &signed, std::slice::from_ref(&pre_key));
        let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
        let kex = to_bob.encrypt(b"key material").unwrap();
        let mut tampered = kex.as_bytes().to_vec();
        let at = position.index(tampered.len());
        tampered[at] ^= 1 << bit;
        if let Ok(parsed) = KeyExchange::from_bytes(version, &tampered) {
            prop_assert!(Session::respond(&mut rng, &bob, &signed, &pre_key, &parsed).is_err());
        }
    }
}

#[test]
fn counter_beyond_skip_limit_is_rejected_and_state_kept() {
    for version in Version::ALL {
        let (mut alice, mut bob) = established(version);
        let mut rng = omemo::os_rng();
        bob.set_limits(omemo::RatchetLimits {
            max_skip_per_message: 10,
            max_stored_skipped_keys: 100,
        });
        let messages: Vec<AuthenticatedMessage> = (0..12)
            .map(|_| signal(alice.encrypt(b"k").unwrap()))
            .collect();
        let before = bob.to_bytes();
        assert_eq!(
            bob.decrypt(&mut rng, &messages[11]).map(|_| ()),
            Err(DecryptError::TooFarAhead {
                counter: 11,
                jump: 11,
                limit: 10
            })
        );
        assert_eq!(*bob.to_bytes(), *before);
        // Within the limit it works, and the skipped ones decrypt later.
        bob.decrypt(&mut rng, &messages[10]).unwrap();
        for message in &messages[..10] {
            bob.decrypt(&mut rng, message).unwrap();
        }
        bob.decrypt(&mut rng, &messages[11]).unwrap();
    }
}

#[test]
fn stored_skipped_keys_are_bounded_oldest_first() {
    for version in Version::ALL {
        let (mut alice, mut bob) = established(version);
        let mut rng = omemo::os_rng();
        bob.set_limits(omemo::RatchetLimits {
            max_skip_per_message: 100,
            max_stored_skipped_keys: 5,
        });
        let messages: Vec<AuthenticatedMessage> = (0..9)
            .map(|_| signal(alice.encrypt(b"k").unwrap()))
            .collect();
        bob.decrypt(&mut rng, &messages[8]).unwrap(); // skips 0..8, keeps the newest 5 (3..8)
        for message in &messages[..3] {
            assert!(
                bob.decrypt(&mut rng, message).is_err(),
                "dropped key still usable"
            );
        }
        for message in &messages[3..8] {
            bob.decrypt(&mut rng, message).unwrap();
        }
    }
}

#[test]
fn repeated_key_exchange_decrypts_on_the_existing_session() {
    for version in Version::ALL {
        let mut rng = omemo::os_rng();
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
        let pre_key = PreKey::generate(&mut rng, 7);
        let bundle = PreKeyBundle::new(&bob, &signed, std::slice::from_ref(&pre_key));
        let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
        let RatchetMessage::KeyExchange(first) = to_bob.encrypt(b"one").unwrap() else {
            panic!()
        };
        let RatchetMessage::KeyExchange(second) = to_bob.encrypt(b"two").unwrap() else {
            panic!()
        };
        let (mut to_alice, _) =
            Session::respond(&mut rng, &bob, &signed, &pre_key, &first).unwrap();
        // The second message carries the same key exchange; the prekey may already be gone.
        assert!(to_alice.matches_key_exchange(&second));
        assert_eq!(
            to_alice
                .decrypt_key_exchange(&mut rng, &second)
                .unwrap()
                .as_slice(),
            b"two"
        );
        // The first one again (archive and live) is a duplicate, not a new session.
        assert_eq!(
            to_alice.decrypt_key_exchange(&mut rng, &first).map(|_| ()),
            Err(DecryptError::Duplicate { counter: 0 })
        );
        // A key exchange from another session is refused on this one.
        let mut other = Session::initiate(&mut rng, &alice, &bundle).unwrap();
        let RatchetMessage::KeyExchange(foreign) = other.encrypt(b"x").unwrap() else {
            panic!()
        };
        assert_eq!(
            to_alice
                .decrypt_key_exchange(&mut rng, &foreign)
                .map(|_| ()),
            Err(DecryptError::KeyExchangeMismatch)
        );
    }
}

#[test]
fn responder_checks_the_prekeys_it_is_given() {
    for version in Version::ALL {
        let mut rng = omemo::os_rng();
        let alice = IdentityKeyPair::generate(&mut rng);
        let bob = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
        let other_signed = SignedPreKey::generate(version, &mut rng, &bob, 2);
        let pre_key = PreKey::generate(&mut rng, 7);
        let other_pre_key = PreKey::generate(&mut rng, 8);
        let bundle = PreKeyBundle::new(&bob, &signed, std::slice::from_ref(&pre_key));
        let RatchetMessage::KeyExchange(kex) = Session::initiate(&mut rng, &alice, &bundle)
            .unwrap()
            .encrypt(b"k")
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            Session::respond(&mut rng, &bob, &signed, &other_pre_key, &kex).map(|_| ()),
            Err(DecryptError::WrongPreKey {
                what: "one-time prekey",
                id: 7
            })
        );
        assert_eq!(
            Session::respond(&mut rng, &bob, &other_signed, &pre_key, &kex).map(|_| ()),
            Err(DecryptError::WrongPreKey {
                what: "signed prekey",
                id: 1
            })
        );
        let empty = PreKeyBundle::new(&bob, &signed, &[]);
        assert_eq!(
            Session::initiate(&mut rng, &alice, &empty).map(|_| ()),
            Err(omemo::Error::Session(omemo::SessionError::NoPreKeys))
        );
    }
}

#[test]
fn corrupt_session_state_is_an_error() {
    for version in Version::ALL {
        let (alice, _) = established(version);
        let bytes = alice.to_bytes();
        assert!(Session::from_bytes(&bytes).is_ok());
        assert!(matches!(
            Session::from_bytes(&bytes[..bytes.len() / 2]),
            Err(omemo::SessionError::Corrupt(_))
        ));
        assert!(matches!(
            Session::from_bytes(b"\xff\xff\xff"),
            Err(omemo::SessionError::Corrupt(_))
        ));
        // format_version is field 1 (varint): 1 -> 99.
        let mut future = bytes.to_vec();
        assert_eq!(&future[..2], &[0x08, 0x01]);
        future[1] = 99;
        assert_eq!(
            Session::from_bytes(&future).map(|_| ()),
            Err(omemo::SessionError::UnsupportedFormat(99))
        );
    }
}

#[test]
fn debug_output_shows_no_secrets() {
    for version in Version::ALL {
        let (alice, _) = established(version);
        let shown = format!("{alice:?}");
        assert!(
            shown.starts_with(&format!(
                "Session {{ version: {version:?}, local_identity: IdentityKey("
            )),
            "{shown}"
        );
        assert!(shown.ends_with(", confirmed: true, .. }"), "{shown}");
        let mut rng = omemo::os_rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let secret_hex: String = identity
            .secret_key()
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shown = format!("{identity:?} {:?}", identity.secret_key());
        assert!(!shown.contains(&secret_hex[..16]), "{shown}");
        assert_eq!(format!("{:?}", identity.secret_key()), "SecretKey { .. }");
    }
}
