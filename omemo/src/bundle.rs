//! Prekeys and the public bundle a device publishes so that others can start sessions.

use std::fmt;

use rand_core::CryptoRng;

use crate::error::KeyError;
use crate::keys::{IdentityKey, IdentityKeyPair, KeyPair, PublicKey};
use crate::version::Version;

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

/// A signed prekey pair of one protocol version: its id, the key pair and the identity's
/// signature over the wire form of its public key (legacy: XEdDSA over `0x05 ‖ key`;
/// OMEMO 2: Ed25519 over the 32-byte key).
#[derive(Clone)]
pub struct SignedPreKey {
    version: Version,
    id: u32,
    key_pair: KeyPair,
    signature: [u8; 64],
}

impl SignedPreKey {
    /// A fresh signed prekey of `version` with the given id, signed by `identity`.
    pub fn generate(
        version: Version,
        rng: &mut impl CryptoRng,
        identity: &IdentityKeyPair,
        id: u32,
    ) -> Self {
        let key_pair = KeyPair::generate(rng);
        let signature = identity.sign(version, rng, &key_pair.public_key().to_wire(version));
        Self {
            version,
            id,
            key_pair,
            signature,
        }
    }

    /// A signed prekey from stored parts.
    pub fn from_parts(version: Version, id: u32, key_pair: KeyPair, signature: [u8; 64]) -> Self {
        Self {
            version,
            id,
            key_pair,
            signature,
        }
    }

    /// The protocol version it is signed for.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The id published with it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key pair.
    pub fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }

    /// The identity's signature over the public key's wire form.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("version", &self.version)
            .field("id", &self.id)
            .field("public", self.key_pair.public_key())
            .finish_non_exhaustive()
    }
}

/// The public keys another device needs to start a session with this one, in one
/// protocol version.
///
/// ```
/// use omemo::Version;
/// use omemo::hazmat::{IdentityKeyPair, PreKey, PreKeyBundle, SignedPreKey};
///
/// # let mut rng = omemo::os_rng();
/// let identity = IdentityKeyPair::generate(&mut rng);
/// let pre_keys: Vec<_> = (1..=100).map(|id| PreKey::generate(&mut rng, id)).collect();
/// for version in Version::ALL {
///     let signed = SignedPreKey::generate(version, &mut rng, &identity, 1);
///     let bundle = PreKeyBundle::new(&identity, &signed, &pre_keys);
///     assert_eq!(bundle.version, version);
///     assert!(bundle.verify().is_ok());
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The protocol version the bundle was published for.
    pub version: Version,
    /// The identity key of the device.
    pub identity_key: IdentityKey,
    /// The id of the signed prekey.
    pub signed_pre_key_id: u32,
    /// The signed prekey.
    pub signed_pre_key: PublicKey,
    /// The identity's signature over the signed prekey's wire form.
    pub signed_pre_key_signature: Vec<u8>,
    /// The one-time prekeys, by id.
    pub pre_keys: Vec<(u32, PublicKey)>,
}

impl PreKeyBundle {
    /// The bundle that publishes `signed` (and its version) and `pre_keys` for `identity`.
    pub fn new(identity: &IdentityKeyPair, signed: &SignedPreKey, pre_keys: &[PreKey]) -> Self {
        Self {
            version: signed.version,
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

    /// Checks the signed prekey's signature by the identity key, as its version signs.
    pub fn verify(&self) -> Result<(), KeyError> {
        self.identity_key.verify(
            self.version,
            &self.signed_pre_key.to_wire(self.version),
            &self.signed_pre_key_signature,
        )
    }

    /// A one-time prekey picked at random, never id 0 while another is offered (some
    /// clients publish id 0 and cannot complete a key exchange that used it).
    pub(crate) fn pick_pre_key(&self, rng: &mut impl CryptoRng) -> Option<(u32, PublicKey)> {
        let usable: Vec<&(u32, PublicKey)> =
            self.pre_keys.iter().filter(|(id, _)| *id != 0).collect();
        match usable.len() {
            0 => self.pre_keys.first().copied(),
            1 => Some(*usable[0]),
            n => Some(*usable[(rng.next_u64() % n as u64) as usize]),
        }
    }
}
