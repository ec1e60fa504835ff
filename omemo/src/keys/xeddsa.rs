//! XEdDSA: Ed25519-style signatures made and checked with Curve25519 keys.
//!
//! Signing follows the XEdDSA specification: the Edwards form of the key is forced to
//! sign bit 0 (by negating the scalar when needed), so the signature's top bit is always
//! clear. Verification accepts both conventions in the wild: the sign of the Edwards key
//! is read from bit 7 of the signature's last byte, then cleared before the Ed25519 check.
//! Proper XEdDSA signatures have that bit clear; libsignal's `curve25519_sign` (and
//! python-omemo) store the signer's real sign bit there.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::curve25519::{PublicKey, SecretKey};
use super::ed25519::{self, SIGNATURE_LENGTH, edwards_from_montgomery};
use crate::error::KeyError;

/// Signs `message` with a Curve25519 secret key, using the 64 random bytes `nonce`.
pub(crate) fn sign(secret: &SecretKey, message: &[u8], nonce: &[u8; 64]) -> [u8; SIGNATURE_LENGTH] {
    let clamped = secret.clamped_scalar_bytes();
    let k = Zeroizing::new(Scalar::from_bytes_mod_order(*clamped));
    let public = (&*k * ED25519_BASEPOINT_TABLE).compress();
    // Force the Edwards public key to sign bit 0: use -k when k·B is "negative".
    let negate = public.as_bytes()[31] >> 7 == 1;
    let (a, a_bytes) = if negate {
        let negated = Zeroizing::new(-*k);
        let bytes = Zeroizing::new(negated.to_bytes());
        (negated, bytes)
    } else {
        // libxeddsa and libsignal hash the clamped (unreduced) scalar here.
        (k, clamped)
    };
    let mut public_bytes = *public.as_bytes();
    public_bytes[31] &= 0x7f;

    let mut hash = Sha512::new();
    hash.update([0xfe]);
    hash.update([0xff; 31]);
    hash.update(a_bytes.as_ref());
    hash.update(message);
    hash.update(nonce);
    let r = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&hash.finalize().into()));
    let big_r = (&*r * ED25519_BASEPOINT_TABLE).compress();

    let mut hash = Sha512::new();
    hash.update(big_r.as_bytes());
    hash.update(public_bytes);
    hash.update(message);
    let h = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    let s = *r + h * *a;

    let mut signature = [0u8; SIGNATURE_LENGTH];
    signature[..32].copy_from_slice(big_r.as_bytes());
    signature[32..].copy_from_slice(s.as_bytes());
    signature
}

/// Verifies an XEdDSA (or libsignal-style) signature by a Curve25519 public key.
pub(crate) fn verify(public: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
    let signature = ed25519::signature_bytes(signature)?;
    let sign = signature[63] >> 7;
    let mut cleared = signature;
    cleared[63] &= 0x7f;
    // A low-order key would let anyone forge signatures; the conversion refuses it.
    let edwards = edwards_from_montgomery(public.as_bytes(), sign)?;
    VerifyingKey::from(edwards)
        .verify(message, &Signature::from_bytes(&cleared))
        .map_err(|_| KeyError::BadSignature)
}
