//! Identity keys: the long-term Curve25519 key pair of one device, and fingerprints.

use std::fmt;

use rand_core::CryptoRng;

use super::curve25519::{KeyPair, PublicKey, SecretKey};
use super::xeddsa;
use crate::error::KeyError;

/// The public identity key of a device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(PublicKey);

impl IdentityKey {
    /// Wraps a Curve25519 public key.
    pub const fn new(key: PublicKey) -> Self {
        Self(key)
    }

    /// The Curve25519 public key.
    pub const fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// Parses the 33-byte legacy wire form (`0x05 || u`).
    pub fn from_wire(bytes: &[u8]) -> Result<Self, KeyError> {
        PublicKey::from_wire(bytes).map(Self)
    }

    /// The 33-byte legacy wire form.
    pub fn to_wire(&self) -> [u8; 33] {
        self.0.to_wire()
    }

    /// The fingerprint users compare to verify this device.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(*self.0.as_bytes())
    }

    /// Checks an XEdDSA signature by this identity over `message`, accepting both the
    /// proper XEdDSA and the libsignal sign-bit conventions.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        xeddsa::verify(&self.0, message, signature)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.fingerprint().to_hex())
    }
}

/// The fingerprint of an identity key: the 32-byte Curve25519 key without the 0x05
/// prefix, which Conversations, Gajim, Dino and python-omemo all render as the same 64
/// hex digits.
///
/// ```
/// let key = omemo::IdentityKey::new(omemo::PublicKey::from_bytes([0xab; 32]));
/// let fingerprint = key.fingerprint();
/// assert_eq!(fingerprint.to_hex(), "ab".repeat(32));
/// assert_eq!(fingerprint.to_string(), ["abababab"; 8].join(" "));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// 64 lower-case hex digits, as in `xmpp:` verification URIs.
    pub fn to_hex(&self) -> String {
        super::curve25519::hex32(&self.0)
    }
}

/// Eight groups of eight lower-case hex digits, separated by spaces.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        for (i, group) in hex.as_bytes().chunks(8).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The long-term identity key pair of this device. Zeroized on drop.
#[derive(Clone)]
pub struct IdentityKeyPair(KeyPair);

impl IdentityKeyPair {
    /// A fresh random identity.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self(KeyPair::generate(rng))
    }

    /// The identity for a stored secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        Self(KeyPair::from_secret(secret))
    }

    /// The public identity key.
    pub fn identity_key(&self) -> IdentityKey {
        IdentityKey(*self.0.public_key())
    }

    /// The secret key, for persisting it.
    pub fn secret_key(&self) -> &SecretKey {
        self.0.secret_key()
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.0
    }

    /// Signs `message` with XEdDSA and 64 fresh random bytes.
    pub fn sign(&self, rng: &mut impl CryptoRng, message: &[u8]) -> [u8; 64] {
        let mut nonce = zeroize::Zeroizing::new([0u8; 64]);
        rng.fill_bytes(nonce.as_mut());
        xeddsa::sign(self.0.secret_key(), message, &nonce)
    }

    /// Signs with a caller-chosen nonce; for known-answer tests.
    #[cfg(any(test, feature = "hazmat"))]
    pub fn sign_with_nonce(&self, message: &[u8], nonce: &[u8; 64]) -> [u8; 64] {
        xeddsa::sign(self.0.secret_key(), message, nonce)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.identity_key())
            .finish_non_exhaustive()
    }
}
