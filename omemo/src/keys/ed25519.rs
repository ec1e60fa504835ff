//! The Ed25519 form of identity keys: conversions between the Montgomery (X25519) and
//! Edwards (Ed25519) forms, and plain Ed25519 signatures (OMEMO 2).
//!
//! An Ed25519 public key is the Edwards point `A = a·B`; its Montgomery form is
//! `u = (1 + y) / (1 − y)`. One u has two Edwards forms, `A` and `−A`, which differ only
//! in the sign bit (bit 7 of the last byte). A Curve25519 identity (legacy OMEMO) is turned
//! into Ed25519 with the sign forced to 0, as XEdDSA does. Keys of low order are refused
//! in every conversion: with them, signatures and Diffie-Hellman prove nothing.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::curve25519::SecretKey;
use crate::error::KeyError;

/// Length of an Ed25519 signature.
pub(crate) const SIGNATURE_LENGTH: usize = 64;

/// The Edwards point of the Montgomery key `u` with the given sign bit; refuses keys
/// that have no Edwards form or have low order.
pub(crate) fn edwards_from_montgomery(u: &[u8; 32], sign: u8) -> Result<EdwardsPoint, KeyError> {
    let point = MontgomeryPoint(*u)
        .to_edwards(sign)
        .ok_or(KeyError::InvalidPoint)?;
    if point.is_small_order() {
        return Err(KeyError::InvalidPoint);
    }
    Ok(point)
}

/// Checks an Ed25519 public key (a canonical encoding of a point that does not have low
/// order) and returns its Montgomery form.
pub(crate) fn montgomery_from_ed25519(bytes: &[u8; 32]) -> Result<[u8; 32], KeyError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPoint)?;
    // Decompression accepts y ≥ p; only the canonical encoding names the key.
    if key.is_weak() || key.to_edwards().compress().as_bytes() != bytes {
        return Err(KeyError::InvalidPoint);
    }
    Ok(key.to_montgomery().to_bytes())
}

/// The Ed25519 public key, sign bit 0, of a Curve25519 secret key (its clamped scalar
/// times the base point, negated when that has sign bit 1).
pub(crate) fn sign0_public_key(secret: &SecretKey) -> [u8; 32] {
    let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(*secret.clamped_scalar_bytes()));
    let mut bytes = EdwardsPoint::mul_base(&scalar).compress().to_bytes();
    // Negating a point flips the sign bit of its encoding and nothing else.
    bytes[31] &= 0x7f;
    bytes
}

/// A signature of the right length, as an array.
pub(crate) fn signature_bytes(signature: &[u8]) -> Result<[u8; SIGNATURE_LENGTH], KeyError> {
    signature.try_into().map_err(|_| KeyError::InvalidLength {
        what: "signature",
        expected: SIGNATURE_LENGTH,
        actual: signature.len(),
    })
}

/// Checks a plain Ed25519 signature (RFC 8032, strict: canonical S, no low-order R or
/// key) by the Ed25519 key `public` over `message`.
pub(crate) fn verify(public: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let signature = signature_bytes(signature)?;
    let key = VerifyingKey::from(
        CompressedEdwardsY(*public)
            .decompress()
            .ok_or(KeyError::InvalidPoint)?,
    );
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| KeyError::BadSignature)
}

/// An RFC 8032 signature by the Ed25519 key whose seed is `seed`.
pub(crate) fn sign_with_seed(seed: &[u8; 32], message: &[u8]) -> [u8; SIGNATURE_LENGTH] {
    SigningKey::from_bytes(seed).sign(message).to_bytes()
}

/// The X25519 secret key (`clamp(SHA-512(seed)[..32])`) and the Ed25519 public key of an
/// Ed25519 seed.
pub(crate) fn from_seed(seed: &[u8; 32]) -> (SecretKey, [u8; 32]) {
    let signing = SigningKey::from_bytes(seed);
    // Stored clamped, as twomemo stores it: `clamp(SHA-512(seed)[0..32])`.
    let unclamped = SecretKey::from_bytes(signing.to_scalar_bytes());
    (
        SecretKey::from_bytes(*unclamped.clamped_scalar_bytes()),
        signing.verifying_key().to_bytes(),
    )
}

/// `k·B` for a scalar, compressed; for tests of the conversions.
#[cfg(test)]
pub(crate) fn base_mul(scalar: &[u8; 32]) -> [u8; 32] {
    EdwardsPoint::mul_base(&Scalar::from_bytes_mod_order(*scalar))
        .compress()
        .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_of_a_key_share_one_montgomery_form() {
        let secret = SecretKey::from_bytes([0x42; 32]);
        let public = sign0_public_key(&secret);
        assert_eq!(public[31] >> 7, 0, "sign bit");
        let mut negated = public;
        negated[31] |= 0x80;
        let u = secret.public_key();
        assert_eq!(montgomery_from_ed25519(&public), Ok(*u.as_bytes()));
        assert_eq!(montgomery_from_ed25519(&negated), Ok(*u.as_bytes()));
        let sign0 = edwards_from_montgomery(u.as_bytes(), 0).map(|p| p.compress().to_bytes());
        assert_eq!(sign0, Ok(public));
        let real = base_mul(&secret.clamped_scalar_bytes());
        assert!(real == public || real == negated);
    }

    #[test]
    fn low_order_and_non_canonical_keys_are_refused() {
        // The identity point (y = 1) and the point of order 2 (y = -1).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            montgomery_from_ed25519(&identity),
            Err(KeyError::InvalidPoint)
        );
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        assert_eq!(
            montgomery_from_ed25519(&minus_one),
            Err(KeyError::InvalidPoint)
        );
        // y = p + 1 decodes to the identity point too, but is not canonical.
        let mut p_plus_one = minus_one;
        p_plus_one[0] = 0xee;
        assert_eq!(
            montgomery_from_ed25519(&p_plus_one),
            Err(KeyError::InvalidPoint)
        );
        // Montgomery u = 0 and u = 1 have low order.
        for u in [[0; 32], identity] {
            assert_eq!(
                edwards_from_montgomery(&u, 0).map(drop),
                Err(KeyError::InvalidPoint)
            );
        }
    }
}
