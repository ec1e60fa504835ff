//! Curve25519 key pairs and the 33-byte legacy serialization of public keys.

use std::fmt;

use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::consts::CURVE25519_KEY_TYPE;
use crate::error::KeyError;

/// A Curve25519 (X25519) public key.
///
/// On the legacy wire every public key is 33 bytes: the type byte `0x05` followed by the
/// 32-byte Montgomery u-coordinate ([`PublicKey::to_wire`], [`PublicKey::from_wire`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes (the Montgomery u-coordinate).
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 33-byte legacy wire form, `0x05 || u`.
    pub fn to_wire(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = CURVE25519_KEY_TYPE;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// Parses the 33-byte legacy wire form.
    ///
    /// ```
    /// let key = omemo::PublicKey::from_bytes([9; 32]);
    /// assert_eq!(omemo::PublicKey::from_wire(&key.to_wire()), Ok(key));
    /// assert!(omemo::PublicKey::from_wire(&[9; 32]).is_err());
    /// ```
    pub fn from_wire(bytes: &[u8]) -> Result<Self, KeyError> {
        match bytes {
            [CURVE25519_KEY_TYPE, rest @ ..] if rest.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(rest);
                Ok(Self(key))
            }
            [other, ..] if bytes.len() == 33 => Err(KeyError::InvalidKeyType(*other)),
            _ => Err(KeyError::InvalidLength {
                what: "serialized public key",
                expected: 33,
                actual: bytes.len(),
            }),
        }
    }

    /// Parses 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidLength {
                what: "public key",
                expected: 32,
                actual: bytes.len(),
            })
    }

    pub(crate) fn dalek(&self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex32(&self.0))
    }
}

pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Curve25519 secret key. Zeroized on drop; its Debug output shows nothing secret.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

impl SecretKey {
    /// A fresh random secret key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(StaticSecret::from(*bytes))
    }

    /// The key from 32 secret bytes (clamped when used, as X25519 does).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The 32 secret bytes, for persisting them.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// X25519 with `their` public key; refuses an all-zero (non-contributory) result.
    pub(crate) fn diffie_hellman(
        &self,
        their: &PublicKey,
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let shared = self.0.diffie_hellman(&their.dalek());
        if !shared.was_contributory() {
            return Err(KeyError::NonContributory);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }

    /// The clamped scalar bytes, for XEdDSA.
    pub(crate) fn clamped_scalar_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut bytes = self.to_bytes();
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        bytes
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").finish_non_exhaustive()
    }
}

/// A Curve25519 key pair whose public half is computed once.
#[derive(Clone)]
pub struct KeyPair {
    secret: SecretKey,
    public: PublicKey,
}

impl KeyPair {
    /// A fresh random key pair.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self::from_secret(SecretKey::generate(rng))
    }

    /// The pair for a secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        let public = secret.public_key();
        Self { secret, public }
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The secret half.
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_rejects_wrong_type_and_length() {
        let mut wire = PublicKey::from_bytes([7; 32]).to_wire();
        wire[0] = 0x06;
        assert_eq!(
            PublicKey::from_wire(&wire),
            Err(KeyError::InvalidKeyType(0x06))
        );
        assert!(matches!(
            PublicKey::from_wire(&wire[..20]),
            Err(KeyError::InvalidLength { actual: 20, .. })
        ));
        assert!(matches!(
            PublicKey::from_wire(&[]),
            Err(KeyError::InvalidLength { actual: 0, .. })
        ));
    }

    #[test]
    fn low_order_point_is_refused() {
        let secret = SecretKey::from_bytes([0x42; 32]);
        // u = 0 and u = 1 are low-order points; X25519 with them gives all zeros.
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                secret.diffie_hellman(&PublicKey::from_bytes(u)).map(|_| ()),
                Err(KeyError::NonContributory)
            );
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let pair = KeyPair::from_secret(SecretKey::from_bytes([0xab; 32]));
        let shown = format!("{pair:?} {:?}", pair.secret_key());
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.ends_with("SecretKey { .. }"), "{shown}");
    }
}
