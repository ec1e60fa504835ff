//! The Double Ratchet: one [`Session`] per pair of devices. No XML, no I/O.

pub(crate) mod chain;
mod codec;
pub(crate) mod receiver;
pub(crate) mod root;
pub(crate) mod session;

pub use session::{RatchetLimits, Session};

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::chain::{ChainKey, MessageKey};
    use super::receiver::{ReceivingChain, SkippedKey};
    use super::root::RootKey;
    use crate::keys::{KeyPair, SecretKey};

    /// Secret bytes live in their own heap allocation: the types that hold them are a
    /// pointer (and public data), so moving them, or the collections of skipped keys,
    /// chains, prekeys and sessions growing, copies no key material.
    #[test]
    fn secrets_live_on_the_heap_not_in_the_collections_that_hold_them() {
        let pointer = size_of::<usize>();
        assert_eq!(size_of::<MessageKey>(), pointer);
        assert_eq!(size_of::<RootKey>(), pointer);
        assert_eq!(size_of::<SecretKey>(), pointer);
        assert!(size_of::<ChainKey>() <= 2 * pointer);
        // A key pair: the secret's pointer and the 32-byte public key.
        assert!(size_of::<KeyPair>() <= pointer + 32);
        // A skipped key: public ratchet key, index and the message key's pointer.
        assert!(size_of::<SkippedKey>() <= 32 + 2 * pointer);
        assert!(size_of::<ReceivingChain>() <= 32 + 2 * pointer);
    }
}
