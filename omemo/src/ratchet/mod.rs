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

    /// The previous-sessions slot holds a list; one written before the list (a single
    /// session) still reads, as a list of one, and entries that do not decode are skipped.
    #[test]
    fn previous_sessions_round_trip_and_read_the_single_session_of_schema_3() {
        use crate::bundle::{PreKey, PreKeyBundle, SignedPreKey};
        use crate::keys::IdentityKeyPair;
        use crate::version::Version;

        let mut rng = crate::os_rng();
        let bob = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(Version::Omemo2, &mut rng, &bob, 1);
        let bundle = PreKeyBundle::new(&bob, &signed, &[PreKey::generate(&mut rng, 1)]);
        let sessions: Vec<super::Session> = (0..3)
            .map(|_| {
                let alice = IdentityKeyPair::generate(&mut rng);
                super::Session::initiate(&mut rng, &alice, &bundle).unwrap()
            })
            .collect();
        let encoded = |list: &[super::Session]| {
            list.iter()
                .map(|s| s.to_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let list = super::Session::list_to_bytes(&sessions);
        assert_eq!(
            encoded(&super::Session::list_from_bytes(&list)),
            encoded(&sessions)
        );
        let single = sessions[0].to_bytes();
        assert_eq!(
            encoded(&super::Session::list_from_bytes(&single)),
            encoded(&sessions[..1])
        );
        assert!(super::Session::list_from_bytes(&[0xff, 0x01]).is_empty());
    }
}
