//! The low-level layers, for tests, benchmarks, other protocols built on OMEMO's
//! primitives, and experts (feature `hazmat`).
//!
//! **Misuse breaks the security of OMEMO**, and nothing here stops it: reusing a session
//! state restored from a backup, keeping a used one-time prekey, encrypting to an identity
//! key that was never checked, or mixing up the versions of keys and messages. The
//! [`Manager`](crate::Manager) does all of that right; use it unless you must not. These
//! names may change in any release.
//!
//! | layer | types |
//! |---|---|
//! | keys | [`IdentityKeyPair`], [`IdentityKey`], [`KeyPair`], [`PublicKey`], [`SecretKey`], [`WireKey`] |
//! | bundles | [`PreKey`], [`SignedPreKey`], [`PreKeyBundle`] |
//! | X3DH and the Double Ratchet | [`Session`] |
//! | wire messages | [`RatchetMessage`], [`AuthenticatedMessage`], [`KeyExchange`] |
//! | payload cipher | [`encrypt_payload`], [`decrypt_payload`], [`KeyMaterial`], [`EncryptedPayload`] |
//!
//! Each takes the [`Version`](crate::Version) where the two protocol versions differ; a
//! bundle, a session and a message know their version.
//!
//! # Two devices talk
//!
//! ```
//! use omemo::Version;
//! use omemo::hazmat::{
//!     IdentityKeyPair, KeyMaterial, PreKey, PreKeyBundle, RatchetMessage, Session, SignedPreKey,
//!     decrypt_payload, encrypt_payload,
//! };
//!
//! let mut rng = omemo::os_rng();
//! for version in Version::ALL {
//!     // Bob publishes a bundle.
//!     let bob = IdentityKeyPair::generate(&mut rng);
//!     let bob_signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
//!     let bob_pre_keys: Vec<PreKey> = (1..=100).map(|id| PreKey::generate(&mut rng, id)).collect();
//!     let bundle = PreKeyBundle::new(&bob, &bob_signed, &bob_pre_keys);
//!
//!     // Alice builds a session from it and encrypts a message.
//!     let alice = IdentityKeyPair::generate(&mut rng);
//!     let mut to_bob = Session::initiate(&mut rng, &alice, &bundle)?;
//!     let (key, payload) = encrypt_payload(version, &mut rng, "Hi Bob".as_bytes());
//!     let sent = to_bob.encrypt(key.as_bytes())?;
//!     assert!(sent.is_key_exchange());
//!
//!     // Bob receives the key exchange, finds the prekeys it names, and decrypts.
//!     let RatchetMessage::KeyExchange(received) =
//!         RatchetMessage::from_bytes(version, sent.as_bytes(), true)?
//!     else {
//!         unreachable!()
//!     };
//!     let pre_key = bob_pre_keys.iter().find(|k| Some(k.id()) == received.pre_key_id()).unwrap();
//!     let (mut to_alice, key) = Session::respond(&mut rng, &bob, &bob_signed, pre_key, &received)?;
//!     let key = KeyMaterial::from_bytes(key.to_vec());
//!     let body = decrypt_payload(version, &key, &payload.iv, &payload.ciphertext)?;
//!     assert_eq!(body.as_slice(), b"Hi Bob");
//!
//!     // Bob answers; once Alice decrypts, her messages stop carrying the key exchange.
//!     let empty = KeyMaterial::empty_message(version, &mut rng);
//!     let RatchetMessage::Authenticated(reply) = to_alice.encrypt(empty.as_bytes())? else {
//!         unreachable!()
//!     };
//!     assert_eq!(to_bob.decrypt(&mut rng, &reply)?.as_slice(), empty.as_bytes());
//!     assert!(!to_bob.encrypt(b"more")?.is_key_exchange());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use crate::bundle::{PreKey, PreKeyBundle, SignedPreKey};
pub use crate::keys::{IdentityKey, IdentityKeyPair, KeyPair, PublicKey, SecretKey, WireKey};
pub use crate::payload::{EncryptedPayload, KeyMaterial, decrypt_payload, encrypt_payload};
pub use crate::ratchet::Session;
pub use crate::wire::{AuthenticatedMessage, KeyExchange, RatchetMessage};
