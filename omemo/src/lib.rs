//! OMEMO (XEP-0384) end-to-end encryption for XMPP, in both protocol versions: legacy
//! OMEMO (`eu.siacs.conversations.axolotl`, spoken by Conversations, Dino, Gajim, Monal,
//! Profanity and slixmpp-omemo) and OMEMO 2 (`urn:xmpp:omemo:2`), see [`Version`].
//!
//! The [`Manager`] is the crate's entry point. It does no I/O: every incoming stanza and
//! the time go in ([`Manager::handle_stanza`], [`Manager::handle_timeout`]); stanzas to
//! send and [`Event`]s come out ([`Manager::poll_transmit`], [`Manager::poll_event`]). It
//! speaks both versions from one identity and keeps identity, devices, sessions and trust
//! in a [`Store`] ([`SqliteStore`] on disk, [`MemoryStore`] for tests). The XML it speaks
//! lives in version-named modules ([`stanza::legacy`], [`stanza::omemo2`]).
//! What devices publish ([`PreKeyBundle`], [`IdentityKey`], [`PublicKey`]) is at the
//! root too. The low-level layers (key pairs and secrets, X3DH, the Double Ratchet, wire
//! messages, the payload cipher) are in `omemo::hazmat`, behind the `hazmat` feature.
//!
//! # Opening a manager
//!
//! ```
//! use omemo::{BareJid, Manager, ManagerConfig, MemoryStore};
//!
//! let mut rng = omemo::os_rng();
//! let me = BareJid::new("alice@example.org")?;
//! let mut manager = Manager::open(MemoryStore::default(), &me, ManagerConfig::default(), &mut rng, 0)?;
//! println!("device {} with fingerprint {}", manager.device_id(), manager.fingerprint());
//!
//! // A new device first fetches its device lists and publishes its bundles: the IQ
//! // requests go to your XMPP connection, their answers back to `handle_stanza`.
//! let mut requests = 0;
//! while let Some(stanza) = manager.poll_transmit()? {
//!     assert_eq!(stanza.name(), "iq");
//!     requests += 1;
//! }
//! assert_eq!(requests, 4); // two device lists, two bundles
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `sqlite` (default): [`SqliteStore`], with SQLite bundled through rusqlite. Turn it
//!   off to bring your own [`Store`].
//! - `encrypted-store`: SQLCipher bundled instead of SQLite, for stores encrypted at rest
//!   (`SqliteStore::open_encrypted`, `SqliteStore::change_passphrase`; the key comes from
//!   Argon2id of a passphrase). Build it with
//!   `LIBSQLITE3_FLAGS=-DSQLCIPHER_CRYPTO_CUSTOM=omemo_sqlcipher_crypto_setup` to have
//!   SQLCipher use this crate's RustCrypto primitives instead of loading OpenSSL's
//!   libcrypto (3.4 MB less resident memory).
//! - `hazmat`: the module `omemo::hazmat` with the low-level layers.
//! - `qr`: `VerificationUri::qr_code`.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Without `hazmat`, the low-level types are public in their modules but not exported, and
// the accessors only `hazmat` users call are unused (the `hazmat` build checks both).
#![cfg_attr(not(feature = "hazmat"), allow(unreachable_pub, dead_code))]

mod backup;
mod bundle;
mod consts;
mod error;
#[cfg(feature = "hazmat")]
#[cfg_attr(docsrs, doc(cfg(feature = "hazmat")))]
pub mod hazmat;
mod keys;
mod manager;
mod payload;
mod ratchet;
pub mod stanza;
mod store;
mod uri;
mod version;
mod wire;
mod x3dh;

#[cfg(test)]
mod known_answer_tests;
#[cfg(test)]
mod testing;

pub use consts::{DEFAULT_MAX_SKIP_PER_MESSAGE, DEFAULT_MAX_STORED_SKIPPED_KEYS};
pub use error::{
    DecodeError, DecryptError, Error, KeyError, ManagerError, RoomRefusal, SessionError,
    StanzaError,
};
// What devices publish (bundles and their public keys) is no secret and is what the
// stanza layer hands out; everything that holds secrets or runs the protocol is in
// `hazmat`.
pub use backup::BackupError;
pub use bundle::PreKeyBundle;
pub use keys::{Fingerprint, IdentityKey, PublicKey};
pub use manager::{
    Decrypted, DeviceInfo, Encrypted, Event, Handled, Manager, ManagerConfig, MessageId, Recipient,
    SkipReason, SkippedDevice, TrustPolicy, Via,
};
pub use ratchet::RatchetLimits;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;
pub use store::{
    AccountRecord, ArchivePosition, Batch, DeviceRecord, MemoryStore, Op, PreKeyRecord,
    SignedPreKeyRecord, Store, StoreError, Trust,
};
pub use uri::{UriError, VerificationUri};
pub use version::{Version, Versions};

// The crate's own code names the low-level types from the root, as the `hazmat` module
// exports them.
use bundle::{PreKey, SignedPreKey};
use keys::{IdentityKeyPair, KeyPair, SecretKey};
use payload::{EncryptedPayload, KeyMaterial, decrypt_payload, encrypt_payload};
use ratchet::Session;
use wire::RatchetMessage;

pub use jid::BareJid;

/// The examples in the README compile.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The version of this crate (the protocol versions are [`Version`]).
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The operating system's random number generator, for every `rng` parameter.
pub fn os_rng() -> impl rand_core::CryptoRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}
