//! OMEMO (XEP-0384) end-to-end encryption for XMPP, byte-compatible with the legacy
//! OMEMO that Conversations, Dino, Gajim, Monal, Profanity and slixmpp-omemo speak
//! (namespace `eu.siacs.conversations.axolotl`).
//!
//! This layer is the cryptographic core: identity keys and bundles, X3DH, the Double
//! Ratchet with its wire format, and the payload cipher. It does no I/O. The [`stanza`]
//! module builds and parses the XML that carries it (legacy OMEMO elements and the
//! pubsub requests around them) as `minidom` elements.
//!
//! # Two devices talk
//!
//! ```
//! use omemo::{IdentityKeyPair, PreKey, PreKeyBundle, RatchetMessage, Session, SignedPreKey};
//!
//! let mut rng = omemo::os_rng();
//!
//! // Bob publishes a bundle.
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let bob_signed = SignedPreKey::generate(&mut rng, &bob, 1);
//! let bob_pre_keys: Vec<PreKey> = (1..=100).map(|id| PreKey::generate(&mut rng, id)).collect();
//! let bundle = PreKeyBundle::new(&bob, &bob_signed, &bob_pre_keys);
//!
//! // Alice builds a session from it and encrypts a message.
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let mut to_bob = Session::initiate(&mut rng, &alice, &bundle)?;
//! let (key, payload) = omemo::encrypt_payload(&mut rng, "Hi Bob".as_bytes());
//! let sent = to_bob.encrypt(key.as_bytes())?;
//! assert!(sent.is_pre_key());
//!
//! // Bob receives the key exchange, finds the prekeys it names, and decrypts.
//! let RatchetMessage::PreKey(received) = RatchetMessage::from_bytes(sent.as_bytes(), true)? else {
//!     unreachable!()
//! };
//! let pre_key = bob_pre_keys.iter().find(|k| Some(k.id()) == received.pre_key_id()).unwrap();
//! let (mut to_alice, key) = Session::respond(&mut rng, &bob, &bob_signed, pre_key, &received)?;
//! let body = omemo::decrypt_payload(&omemo::KeyMaterial::from_bytes(key.to_vec()), &payload.iv, &payload.ciphertext)?;
//! assert_eq!(body.as_slice(), b"Hi Bob");
//!
//! // Bob answers; once Alice decrypts, her messages stop carrying the key exchange.
//! let RatchetMessage::Signal(reply) = to_alice.encrypt(b"0123456789abcdef")? else { unreachable!() };
//! assert_eq!(to_bob.decrypt(&mut rng, &reply)?.as_slice(), b"0123456789abcdef");
//! assert!(!to_bob.encrypt(b"more")?.is_pre_key());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bundle;
mod consts;
mod error;
mod keys;
mod manager;
mod payload;
mod ratchet;
pub mod stanza;
mod store;
mod wire;
mod x3dh;

#[cfg(test)]
mod known_answer_tests;
#[cfg(test)]
mod testing;

pub use bundle::{PreKey, PreKeyBundle, SignedPreKey};
pub use consts::{DEFAULT_MAX_SKIP_PER_MESSAGE, DEFAULT_MAX_STORED_SKIPPED_KEYS, LEGACY_NAMESPACE};
pub use error::{
    DecodeError, DecryptError, Error, KeyError, ManagerError, SessionError, StanzaError,
};
pub use keys::{Fingerprint, IdentityKey, IdentityKeyPair, KeyPair, PublicKey, SecretKey};
pub use manager::{
    Decrypted, DeviceInfo, Encrypted, Manager, ManagerConfig, Request, SkipReason, SkippedDevice,
    TrustPolicy,
};
pub use payload::{EncryptedPayload, KeyMaterial, decrypt_payload, encrypt_payload};
pub use ratchet::{RatchetLimits, RatchetMessage, Session};
pub use store::{
    AccountRecord, Batch, DeviceRecord, MemoryStore, Op, PreKeyRecord, SignedPreKeyRecord,
    SqliteStore, Store, StoreError, Trust,
};
pub use wire::{PreKeySignalMessage, SignalMessage};

pub use jid::BareJid;

/// The examples in the README compile.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The operating system's random number generator, for every `rng` parameter.
pub fn os_rng() -> impl rand_core::CryptoRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}
