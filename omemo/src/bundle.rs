//! Prekeys and the public bundle a device publishes so that others can start sessions.

use std::fmt;

use rand_core::CryptoRng;

use crate::error::KeyError;
use crate::keys::{IdentityKey, IdentityKeyPair, KeyPair, PublicKey};

/// A one-time prekey pair with its id.
#[derive(Clone)]
pub struct PreKey {
    id: u32,
    key_pair: KeyPair,
}

impl PreKey {
    /// A fresh prekey with the given id.
    pub fn generate(rng: &mut impl CryptoRng, id: u32) -> Self {
        Self {
            id,
            key_pair: KeyPair::generate(rng),
        }
    }

    /// A prekey from stored parts.
    pub fn from_parts(id: u32, key_pair: KeyPair) -> Self {
        Self { id, key_pair }
    }

    /// The id published with it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key pair.
    pub fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }
}

impl fmt::Debug for PreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKey")
            .field("id", &self.id)
            .field("public", self.key_pair.public_key())
            .finish_non_exhaustive()
    }
}

/// A signed prekey pair: its id, the key pair and the identity's XEdDSA signature over
/// the 33-byte wire form of its public key.
#[derive(Clone)]
pub struct SignedPreKey {
    id: u32,
    key_pair: KeyPair,
    signature: [u8; 64],
}

impl SignedPreKey {
    /// A fresh signed prekey with the given id, signed by `identity`.
    pub fn generate(rng: &mut impl CryptoRng, identity: &IdentityKeyPair, id: u32) -> Self {
        let key_pair = KeyPair::generate(rng);
        let signature = identity.sign(rng, &key_pair.public_key().to_wire());
        Self {
            id,
            key_pair,
            signature,
        }
    }

    /// A signed prekey from stored parts.
    pub fn from_parts(id: u32, key_pair: KeyPair, signature: [u8; 64]) -> Self {
        Self {
            id,
            key_pair,
            signature,
        }
    }

    /// The id published with it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key pair.
    pub fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }

    /// The signature over `0x05 || public key`.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .field("public", self.key_pair.public_key())
            .finish_non_exhaustive()
    }
}

/// The public keys another device needs to start a session with this one.
///
/// ```
/// # let mut rng = omemo::os_rng();
/// let identity = omemo::IdentityKeyPair::generate(&mut rng);
/// let signed = omemo::SignedPreKey::generate(&mut rng, &identity, 1);
/// let pre_keys: Vec<_> = (1..=100).map(|id| omemo::PreKey::generate(&mut rng, id)).collect();
/// let bundle = omemo::PreKeyBundle::new(&identity, &signed, &pre_keys);
/// assert!(bundle.verify().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The identity key of the device.
    pub identity_key: IdentityKey,
    /// The id of the signed prekey.
    pub signed_pre_key_id: u32,
    /// The signed prekey.
    pub signed_pre_key: PublicKey,
    /// The identity's signature over the signed prekey's 33-byte wire form.
    pub signed_pre_key_signature: Vec<u8>,
    /// The one-time prekeys, by id.
    pub pre_keys: Vec<(u32, PublicKey)>,
}

impl PreKeyBundle {
    /// The bundle that publishes `signed` and `pre_keys` for `identity`.
    pub fn new(identity: &IdentityKeyPair, signed: &SignedPreKey, pre_keys: &[PreKey]) -> Self {
        Self {
            identity_key: identity.identity_key(),
            signed_pre_key_id: signed.id,
            signed_pre_key: *signed.key_pair.public_key(),
            signed_pre_key_signature: signed.signature.to_vec(),
            pre_keys: pre_keys
                .iter()
                .map(|k| (k.id, *k.key_pair.public_key()))
                .collect(),
        }
    }

    /// Checks the signed prekey's signature by the identity key.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.identity_key.verify(
            &self.signed_pre_key.to_wire(),
            &self.signed_pre_key_signature,
        )
    }
}
