//! Primitives only: Curve25519 and Ed25519 keys, XEdDSA, the KDFs and the ciphers. No
//! protocol.

pub(crate) mod aead;
pub(crate) mod curve25519;
pub(crate) mod ed25519;
pub(crate) mod identity;
pub(crate) mod kdf;
pub(crate) mod xeddsa;

pub use curve25519::{KeyPair, PublicKey, SecretKey, WireKey};
pub use identity::{Fingerprint, IdentityKey, IdentityKeyPair};
