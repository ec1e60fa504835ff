//! HMAC-SHA-256 and HKDF-SHA-256 as the ratchet and X3DH use them, and Argon2id for keys
//! made from passphrases (identity backups, encrypted stores).

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KeyError;

/// The cost of an Argon2id derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PassphraseCost {
    /// Memory in KiB.
    pub(crate) memory_kib: u32,
    /// Passes over the memory.
    pub(crate) passes: u32,
    /// Lanes (parallelism).
    pub(crate) lanes: u32,
}

/// A 32-byte key from `passphrase` and `salt` by Argon2id (version 0x13); `None` when the
/// cost is outside what Argon2 accepts (the caller says why in its own terms).
pub(crate) fn passphrase_key(
    passphrase: &str,
    salt: &[u8],
    cost: PassphraseCost,
) -> Option<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32)).ok()?;
    let mut key = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .ok()?;
    Some(key)
}

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

/// An AES-256-CBC key, an HMAC-SHA-256 key and a CBC IV, as both the ratchet (per
/// message) and the OMEMO 2 payload cipher derive them.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct CipherKeys {
    pub(crate) cipher_key: [u8; 32],
    pub(crate) mac_key: [u8; 32],
    pub(crate) iv: [u8; 16],
}

/// `HKDF(salt = 32 zero bytes, ikm, info, L = 80)` split into the AES-256 key, the HMAC
/// key and the IV.
pub(crate) fn cipher_keys(ikm: &[u8], info: &[u8]) -> Result<CipherKeys, KeyError> {
    let out: Zeroizing<[u8; 80]> = hkdf(None, ikm, info)?;
    let mut keys = CipherKeys {
        cipher_key: [0; 32],
        mac_key: [0; 32],
        iv: [0; 16],
    };
    keys.cipher_key.copy_from_slice(&out[..32]);
    keys.mac_key.copy_from_slice(&out[32..64]);
    keys.iv.copy_from_slice(&out[64..]);
    Ok(keys)
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
