//! Identity keys: the long-term key pair of one device, its public key in the forms of
//! both protocol versions, and fingerprints.

use std::fmt;
use std::hash::{Hash, Hasher};

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::curve25519::{KeyPair, PublicKey, SecretKey, WireKey, key_from_wire};
use super::{ed25519, xeddsa};
use crate::error::KeyError;
use crate::version::Version;

/// The public identity key of a device.
///
/// One key serves both versions: legacy OMEMO sends its Curve25519 form (`0x05 ‖ u`),
/// OMEMO 2 its Ed25519 form. Two values are equal when their Curve25519 forms are, which
/// is also what the [`Fingerprint`] shows: the Ed25519 forms `A` and `−A` of one key
/// belong to the same secret.
#[derive(Clone, Copy)]
pub struct IdentityKey {
    curve: PublicKey,
    /// The Ed25519 form, when it came over the OMEMO 2 wire or from the secret key.
    ed25519: Option<[u8; 32]>,
}

impl IdentityKey {
    /// The key whose Curve25519 form is `key`. Its Ed25519 form is unknown (`u` fixes it
    /// up to its sign), so it serves legacy OMEMO only.
    pub const fn from_curve25519(key: PublicKey) -> Self {
        Self {
            curve: key,
            ed25519: None,
        }
    }

    /// The key with both forms given, unchecked (they come from a session this crate
    /// stored).
    pub(crate) const fn from_both_forms(curve: PublicKey, ed25519: [u8; 32]) -> Self {
        Self {
            curve,
            ed25519: Some(ed25519),
        }
    }

    /// Parses an Ed25519 public key (as OMEMO 2 sends identity keys), refusing
    /// non-canonical encodings and keys of low order.
    pub fn from_ed25519(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidLength {
            what: "Ed25519 identity key",
            expected: 32,
            actual: bytes.len(),
        })?;
        let curve = ed25519::montgomery_from_ed25519(&bytes)?;
        Ok(Self {
            curve: PublicKey::from_bytes(curve),
            ed25519: Some(bytes),
        })
    }

    /// Parses the wire form of `version`: `0x05 ‖ u` (legacy) or the Ed25519 key
    /// (OMEMO 2).
    pub fn from_wire(version: Version, bytes: &[u8]) -> Result<Self, KeyError> {
        match version {
            Version::Legacy => key_from_wire(version, bytes)
                .map(|key| Self::from_curve25519(PublicKey::from_bytes(key))),
            Version::Omemo2 => Self::from_ed25519(bytes),
        }
    }

    /// The wire form of `version`; for OMEMO 2 the Ed25519 form must be known.
    pub fn to_wire(self, version: Version) -> Result<WireKey, KeyError> {
        match version {
            Version::Legacy => Ok(self.curve.to_wire(version)),
            Version::Omemo2 => Ok(WireKey::new(version, &self.ed25519()?)),
        }
    }

    /// The Curve25519 form (the Montgomery u-coordinate).
    pub const fn curve25519(&self) -> &PublicKey {
        &self.curve
    }

    /// The Ed25519 form: as received over the OMEMO 2 wire or derived from the secret
    /// key. A key from the legacy wire has none: guessing the sign would name another key
    /// for half of all identities made from an Ed25519 seed.
    pub fn ed25519(&self) -> Result<[u8; 32], KeyError> {
        self.ed25519.ok_or(KeyError::UnknownEd25519Form)
    }

    /// The fingerprint users compare to verify this device, the same in both versions.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(*self.curve.as_bytes())
    }

    /// Checks a signature by this identity over `message`: in legacy OMEMO an XEdDSA
    /// signature (either sign-bit convention, see [`IdentityKeyPair::sign`]), in OMEMO 2
    /// a plain Ed25519 signature by the Ed25519 form.
    pub fn verify(
        &self,
        version: Version,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        match version {
            Version::Legacy => xeddsa::verify(&self.curve, message, signature),
            Version::Omemo2 => ed25519::verify(&self.ed25519()?, message, signature),
        }
    }
}

impl PartialEq for IdentityKey {
    fn eq(&self, other: &Self) -> bool {
        self.curve == other.curve
    }
}

impl Eq for IdentityKey {}

impl Hash for IdentityKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.curve.hash(state);
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.fingerprint().to_hex())
    }
}

/// The fingerprint of an identity key: the 32-byte Curve25519 key without the 0x05
/// prefix, which Conversations, Gajim, Dino and python-omemo all render as the same 64
/// hex digits, in both protocol versions.
///
/// ```
/// use omemo::Fingerprint;
///
/// let fingerprint = Fingerprint::from_bytes([0xab; 32]);
/// assert_eq!(fingerprint.to_hex(), "ab".repeat(32));
/// assert_eq!(fingerprint.to_string(), ["abababab"; 8].join(" "));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the identity whose Curve25519 key is `key`.
    pub const fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

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

/// The long-term identity key pair of this device, for both protocol versions. Zeroized
/// on drop.
///
/// Identities made here ([`IdentityKeyPair::generate`]) are Curve25519 key pairs, as
/// legacy OMEMO has always had them; their Ed25519 form is the one with sign bit 0, which
/// python-omemo and other OMEMO 2 clients accept (it is XEdDSA's convention), and they sign with
/// XEdDSA in both versions (an XEdDSA signature is a valid Ed25519 signature by that
/// form). An identity made from an Ed25519 seed (python-omemo keeps its identities that
/// way) keeps the seed's own Ed25519 key and signs OMEMO 2 data with RFC 8032.
#[derive(Clone)]
pub struct IdentityKeyPair {
    /// The X25519 key pair: the stored secret, or `clamp(SHA-512(seed)[..32])`.
    key_pair: KeyPair,
    /// The Ed25519 seed the identity was made from, if any.
    seed: Option<Zeroizing<[u8; 32]>>,
    public: IdentityKey,
}

impl IdentityKeyPair {
    /// A fresh random identity.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self::from_secret(SecretKey::generate(rng))
    }

    /// The identity for a stored Curve25519 secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        let key_pair = KeyPair::from_secret(secret);
        let ed25519 = ed25519::sign0_public_key(key_pair.secret_key());
        let public = IdentityKey {
            curve: *key_pair.public_key(),
            ed25519: Some(ed25519),
        };
        Self {
            key_pair,
            seed: None,
            public,
        }
    }

    /// The identity of an Ed25519 key given by its 32-byte seed (RFC 8032's private key).
    /// The manager stores Curve25519 identities only; keep the seed yourself.
    pub fn from_ed25519_seed(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        let (secret, ed25519) = ed25519::from_seed(&seed);
        let key_pair = KeyPair::from_secret(secret);
        let public = IdentityKey {
            curve: *key_pair.public_key(),
            ed25519: Some(ed25519),
        };
        Self {
            key_pair,
            seed: Some(seed),
            public,
        }
    }

    /// The public identity key.
    pub fn identity_key(&self) -> IdentityKey {
        self.public
    }

    /// The Curve25519 secret key, for persisting it (for a seed identity, the one
    /// derived from the seed).
    pub fn secret_key(&self) -> &SecretKey {
        self.key_pair.secret_key()
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }

    /// Signs `message` for `version`: XEdDSA with 64 fresh random bytes, whose signatures
    /// have sign bit 0 and verify under the Ed25519 form with sign bit 0; for OMEMO 2 and
    /// an identity made from a seed, RFC 8032 with the seed.
    pub fn sign(&self, version: Version, rng: &mut impl CryptoRng, message: &[u8]) -> [u8; 64] {
        if let (Version::Omemo2, Some(seed)) = (version, &self.seed) {
            return ed25519::sign_with_seed(seed, message);
        }
        let mut nonce = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(nonce.as_mut());
        xeddsa::sign(self.key_pair.secret_key(), message, &nonce)
    }

    /// Signs with XEdDSA and a caller-chosen nonce; for known-answer tests.
    #[cfg(any(test, feature = "hazmat"))]
    pub fn sign_with_nonce(&self, message: &[u8], nonce: &[u8; 64]) -> [u8; 64] {
        xeddsa::sign(self.key_pair.secret_key(), message, nonce)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_signs_for_both_versions_with_one_fingerprint() {
        let mut rng = crate::os_rng();
        for _ in 0..8 {
            let pair = IdentityKeyPair::generate(&mut rng);
            let public = pair.identity_key();
            let ed = public.to_wire(Version::Omemo2).unwrap();
            assert_eq!(ed[31] >> 7, 0, "published with sign bit 0");
            // The OMEMO 2 wire form names the same key.
            let parsed = IdentityKey::from_wire(Version::Omemo2, &ed).unwrap();
            assert_eq!(parsed, public);
            assert_eq!(parsed.fingerprint(), public.fingerprint());
            let legacy =
                IdentityKey::from_wire(Version::Legacy, &public.to_wire(Version::Legacy).unwrap())
                    .unwrap();
            assert_eq!(legacy.fingerprint(), public.fingerprint());
            for version in Version::ALL {
                let signature = pair.sign(version, &mut rng, b"signed prekey");
                assert_eq!(parsed.verify(version, b"signed prekey", &signature), Ok(()));
                assert_eq!(
                    parsed.verify(version, b"other", &signature),
                    Err(KeyError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn a_key_from_the_legacy_wire_is_refused_where_omemo2_needs_its_ed25519_form() {
        let pair = IdentityKeyPair::from_secret(SecretKey::from_bytes([7; 32]));
        // A Curve25519 secret publishes its sign-0 Ed25519 form ...
        let own = pair.identity_key();
        assert_eq!(own.ed25519().map(|key| key[31] >> 7), Ok(0));
        // ... but the Curve25519 form alone does not say which sign the key has.
        let from_legacy = IdentityKey::from_curve25519(*own.curve25519());
        assert_eq!(from_legacy, own, "one identity, one fingerprint");
        assert_eq!(from_legacy.ed25519(), Err(KeyError::UnknownEd25519Form));
        assert_eq!(
            from_legacy.to_wire(Version::Omemo2).map(|_| ()),
            Err(KeyError::UnknownEd25519Form)
        );
        let mut rng = crate::os_rng();
        let signature = pair.sign(Version::Omemo2, &mut rng, b"m");
        assert_eq!(
            from_legacy.verify(Version::Omemo2, b"m", &signature),
            Err(KeyError::UnknownEd25519Form)
        );
        assert_eq!(own.verify(Version::Omemo2, b"m", &signature), Ok(()));
    }

    #[test]
    fn malformed_ed25519_identity_keys_are_refused() {
        assert!(matches!(
            IdentityKey::from_wire(Version::Omemo2, &[1; 33]),
            Err(KeyError::InvalidLength {
                expected: 32,
                actual: 33,
                ..
            })
        ));
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            IdentityKey::from_wire(Version::Omemo2, &identity_point),
            Err(KeyError::InvalidPoint)
        );
    }
}
