//! HMAC-SHA-256 and HKDF-SHA-256 as the ratchet and X3DH use them.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::KeyError;

/// HKDF's "no salt": 32 zero bytes.
const ZERO_SALT: [u8; 32] = [0u8; 32];

/// An HMAC-SHA-256 instance keyed with a 32-byte key.
///
/// A key shorter than the 64-byte block is zero-padded by HMAC itself, so padding it here
/// gives the same MAC and makes keying infallible.
pub(crate) fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    Hmac::<Sha256>::new((&*block).into())
}

/// `HMAC-SHA-256(key, data)`.
pub(crate) fn hmac(key: &[u8; 32], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = hmac_sha256(key);
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// `HKDF-SHA-256(salt, ikm, info)` with `N` bytes of output; `salt = None` means 32 zero
/// bytes.
pub(crate) fn hkdf<const N: usize>(
    salt: Option<&[u8; 32]>,
    ikm: &[u8],
    info: &[u8],
) -> Result<Zeroizing<[u8; N]>, KeyError> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(salt.unwrap_or(&ZERO_SALT)), ikm)
        .expand(info, out.as_mut())
        .map_err(|_| KeyError::InvalidLength {
            what: "HKDF output",
            expected: 255 * 32,
            actual: N,
        })?;
    Ok(out)
}
