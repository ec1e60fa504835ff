//! The symmetric KDF chain: chain keys, message keys and their expansion.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::consts::{CHAIN_KEY_SEED, MESSAGE_KEY_SEED};
use crate::error::KeyError;
use crate::keys::kdf::{CipherKeys, cipher_keys, hmac};
use crate::version::Version;

/// A chain key with the index of the next message key it yields. The key bytes live in
/// their own heap allocation (as in every secret type here), so moving a chain key, or
/// the collections that hold one growing, copies a pointer and leaves no copy of the key
/// behind.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey {
    key: Box<[u8; 32]>,
    #[zeroize(skip)]
    index: u32,
}

impl ChainKey {
    pub(crate) fn new(key: [u8; 32], index: u32) -> Self {
        Self {
            key: Box::new(key),
            index,
        }
    }

    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The message key for the current index: `HMAC(ck, 0x01)`.
    pub(crate) fn message_key(&self) -> MessageKey {
        MessageKey(Box::new(*hmac(&self.key, &[MESSAGE_KEY_SEED])))
    }

    /// The chain key for the next index: `HMAC(ck, 0x02)`. `None` when the index would
    /// overflow.
    pub(crate) fn next(&self) -> Option<Self> {
        Some(Self {
            key: Box::new(*hmac(&self.key, &[CHAIN_KEY_SEED])),
            index: self.index.checked_add(1)?,
        })
    }
}

/// A 32-byte message key, used once (on the heap, see [`ChainKey`]).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MessageKey(Box<[u8; 32]>);

impl MessageKey {
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Box::new(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HKDF(salt = 0*32, ikm = mk, info = <message key info of version>, L = 80)` split
    /// into the AES-256 key, the HMAC key and the CBC IV. Consumes the key.
    pub(crate) fn expand(self, version: Version) -> Result<CipherKeys, KeyError> {
        cipher_keys(self.0.as_slice(), version.message_key_info())
    }
}
