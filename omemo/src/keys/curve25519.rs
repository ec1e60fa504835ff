//! Curve25519 key pairs and the wire forms of their public keys.

use std::fmt;
use std::ops::Deref;

use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::consts::CURVE25519_KEY_TYPE;
use crate::error::KeyError;
use crate::version::Version;

/// A public key as one protocol version writes it: 33 bytes `0x05 ‖ key` in legacy OMEMO,
/// the 32 bytes alone in OMEMO 2. Dereferences to the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WireKey {
    bytes: [u8; 33],
    len: u8,
}

impl WireKey {
    /// The wire form of the 32-byte key `key` in `version`.
    pub(crate) fn new(version: Version, key: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 33];
        let len = match version {
            Version::Legacy => {
                bytes[0] = CURVE25519_KEY_TYPE;
                bytes[1..].copy_from_slice(key);
                33
            }
            Version::Omemo2 => {
                bytes[..32].copy_from_slice(key);
                32
            }
        };
        Self { bytes, len }
    }
}

impl Deref for WireKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for WireKey {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for WireKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "WireKey({hex})")
    }
}

/// Parses `bytes` as a 32-byte key in the wire form of `version` (see [`WireKey`]).
pub(crate) fn key_from_wire(version: Version, bytes: &[u8]) -> Result<[u8; 32], KeyError> {
    let raw = match (version, bytes) {
        (Version::Legacy, [CURVE25519_KEY_TYPE, rest @ ..]) if rest.len() == 32 => rest,
        (Version::Legacy, [other, ..]) if bytes.len() == 33 => {
            return Err(KeyError::InvalidKeyType(*other));
        }
        (Version::Omemo2, raw) if raw.len() == 32 => raw,
        _ => {
            return Err(KeyError::InvalidLength {
                what: "serialized public key",
                expected: if version == Version::Legacy { 33 } else { 32 },
                actual: bytes.len(),
            });
        }
    };
    let mut key = [0u8; 32];
    key.copy_from_slice(raw);
    if !is_canonical(&key) {
        return Err(KeyError::NonCanonical);
    }
    Ok(key)
}

/// Whether `u` is the one encoding of its key: bit 255 clear (X25519 ignores it, RFC 7748
/// §5) and `u < p = 2^255 - 19`. Keys made by scalar multiplication always are; other
/// encodings would let one key appear under several byte strings.
fn is_canonical(u: &[u8; 32]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    // u >= p only for 0x7f ff … ff followed by a low byte of at least 0xed.
    let at_least_p = u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed;
    !at_least_p
}

/// A Curve25519 (X25519) public key.
///
/// On the legacy wire every public key is 33 bytes, the type byte `0x05` followed by the
/// 32-byte Montgomery u-coordinate; OMEMO 2 sends the 32 bytes alone
/// ([`PublicKey::to_wire`], [`PublicKey::from_wire`]).
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

    /// The wire form in `version`: `0x05 || u` (legacy) or `u` (OMEMO 2).
    pub fn to_wire(self, version: Version) -> WireKey {
        WireKey::new(version, &self.0)
    }

    /// Parses the wire form of `version`.
    ///
    /// ```
    /// use omemo::Version;
    /// use omemo::hazmat::PublicKey;
    ///
    /// let key = PublicKey::from_bytes([9; 32]);
    /// assert_eq!(PublicKey::from_wire(Version::Legacy, &key.to_wire(Version::Legacy)), Ok(key));
    /// assert_eq!(PublicKey::from_wire(Version::Omemo2, &[9; 32]), Ok(key));
    /// assert!(PublicKey::from_wire(Version::Legacy, &[9; 32]).is_err());
    /// ```
    pub fn from_wire(version: Version, bytes: &[u8]) -> Result<Self, KeyError> {
        key_from_wire(version, bytes).map(Self)
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

/// A Curve25519 secret key. Zeroized on drop; its Debug output shows nothing secret. It
/// lives in its own heap allocation, so moving it (or a key pair, a prekey, a session
/// holding it), or a collection of them growing, leaves no copy behind.
#[derive(Clone)]
pub struct SecretKey(Box<StaticSecret>);

impl SecretKey {
    /// A fresh random secret key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(Box::new(StaticSecret::from(*bytes)))
    }

    /// The key from 32 secret bytes (clamped when used, as X25519 does).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Box::new(StaticSecret::from(bytes)))
    }

    /// The 32 secret bytes, for persisting them.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&*self.0).to_bytes())
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
        let mut wire = PublicKey::from_bytes([7; 32])
            .to_wire(Version::Legacy)
            .to_vec();
        wire[0] = 0x06;
        assert_eq!(
            PublicKey::from_wire(Version::Legacy, &wire),
            Err(KeyError::InvalidKeyType(0x06))
        );
        assert!(matches!(
            PublicKey::from_wire(Version::Legacy, &wire[..20]),
            Err(KeyError::InvalidLength { actual: 20, .. })
        ));
        assert!(matches!(
            PublicKey::from_wire(Version::Legacy, &[]),
            Err(KeyError::InvalidLength { actual: 0, .. })
        ));
        // OMEMO 2 keys are the 32 bytes alone; a legacy 33-byte form is refused.
        assert!(matches!(
            PublicKey::from_wire(
                Version::Omemo2,
                &PublicKey::from_bytes([7; 32]).to_wire(Version::Legacy)
            ),
            Err(KeyError::InvalidLength {
                expected: 32,
                actual: 33,
                ..
            })
        ));
        assert_eq!(
            PublicKey::from_wire(Version::Omemo2, &[7; 32]),
            Ok(PublicKey::from_bytes([7; 32]))
        );
    }

    #[test]
    fn non_canonical_public_keys_are_refused_in_both_versions() {
        let mut high_bit = [7u8; 32];
        high_bit[31] |= 0x80;
        let mut p = [0xffu8; 32];
        p[31] = 0x7f;
        p[0] = 0xed;
        let mut below_p = p;
        below_p[0] = 0xec;
        for version in Version::ALL {
            for bad in [high_bit, p, [0xff; 32]] {
                let wire = PublicKey::from_bytes(bad).to_wire(version);
                assert_eq!(
                    PublicKey::from_wire(version, &wire),
                    Err(KeyError::NonCanonical)
                );
            }
            let wire = PublicKey::from_bytes(below_p).to_wire(version);
            assert_eq!(
                PublicKey::from_wire(version, &wire),
                Ok(PublicKey::from_bytes(below_p))
            );
        }
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
