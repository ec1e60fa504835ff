//! Payload encryption: the `<payload>` of a message and the key material the ratchet
//! carries to every recipient device.
//!
//! - **Legacy OMEMO**: AES-128-GCM over the UTF-8 `<body>` text. The sender draws a
//!   16-byte key and a 12-byte IV, puts the ciphertext without its tag in `<payload>` and
//!   the IV in the header, and ratchet-encrypts `key ‖ tag` (32 bytes). Receivers also
//!   accept a 16-byte IV, and a 16-byte key with the tag at the end of the payload, which
//!   clients sent until about 2020.
//! - **OMEMO 2**: a random 32-byte key is expanded with `HKDF-SHA-256(salt = 0×32, info =
//!   "OMEMO Payload", L = 80)` into an AES-256 key, an HMAC key and an IV; the payload
//!   (the SCE envelope) is encrypted with AES-256-CBC and authenticated with the first 16
//!   bytes of HMAC-SHA-256 over the ciphertext; the ratchet carries `key ‖ tag` (48 bytes).
//!   There is no `<iv>`.
//!
//! An empty message (key transport, session completion, heartbeat) has no payload; its
//! key material is 16 random bytes in legacy OMEMO and 32 zero bytes in OMEMO 2.

use std::fmt;

use hmac::Mac;
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::{
    OMEMO2_PAYLOAD_INFO, OMEMO2_PAYLOAD_KEY_LENGTH, OMEMO2_PAYLOAD_TAG_LENGTH, PAYLOAD_IV_LENGTH,
    PAYLOAD_KEY_LENGTH, PAYLOAD_LEGACY_IV_LENGTH, PAYLOAD_TAG_LENGTH,
};
use crate::error::DecryptError;
use crate::keys::aead::{cbc_decrypt, cbc_encrypt, gcm_decrypt, gcm_encrypt};
use crate::keys::kdf::{cipher_keys, hmac_sha256};
use crate::version::Version;

/// The key material the ratchet carries for one message: `key ‖ tag` for a payload (32
/// bytes in legacy OMEMO, 48 in OMEMO 2), or that of an empty message (16 random bytes in
/// legacy OMEMO, 32 zero bytes in OMEMO 2).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    /// Key material as received from the ratchet.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes to encrypt with the ratchet.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key material of an empty message of `version`: a random 16-byte key (legacy)
    /// or 32 zero bytes (OMEMO 2).
    pub fn empty_message(version: Version, rng: &mut impl CryptoRng) -> Self {
        match version {
            Version::Legacy => {
                let mut key = vec![0u8; PAYLOAD_KEY_LENGTH];
                rng.fill_bytes(&mut key);
                Self(key)
            }
            Version::Omemo2 => Self(vec![0u8; OMEMO2_PAYLOAD_KEY_LENGTH]),
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// An encrypted `<payload>` with its `<iv>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// The IV for the `<iv>` element: 12 bytes in legacy OMEMO, empty in OMEMO 2 (whose
    /// IV is derived from the key).
    pub iv: Vec<u8>,
    /// The ciphertext (legacy: without the GCM tag).
    pub ciphertext: Vec<u8>,
}

/// Encrypts `plaintext` (legacy: the UTF-8 body; OMEMO 2: the SCE envelope) under a fresh
/// key; returns the key material for the ratchet and the payload for the stanza.
///
/// ```
/// use omemo::Version;
/// use omemo::hazmat::{decrypt_payload, encrypt_payload};
///
/// # let mut rng = omemo::os_rng();
/// for version in Version::ALL {
///     let (key, payload) = encrypt_payload(version, &mut rng, b"hello");
///     let plaintext = decrypt_payload(version, &key, &payload.iv, &payload.ciphertext).unwrap();
///     assert_eq!(plaintext.as_slice(), b"hello");
/// }
/// ```
pub fn encrypt_payload(
    version: Version,
    rng: &mut impl CryptoRng,
    plaintext: &[u8],
) -> (KeyMaterial, EncryptedPayload) {
    match version {
        Version::Legacy => encrypt_gcm(rng, plaintext),
        Version::Omemo2 => encrypt_cbc_hmac(rng, plaintext),
    }
}

/// Decrypts a `<payload>` of `version` with the key material the ratchet yielded.
///
/// Legacy: accepts a 12- or 16-byte IV, and either `key ‖ tag` (32 bytes) or a 16-byte
/// key with the tag appended to the payload. OMEMO 2: the key material must be 48 bytes
/// and `iv` empty; the tag is checked in constant time before anything is decrypted.
pub fn decrypt_payload(
    version: Version,
    key: &KeyMaterial,
    iv: &[u8],
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    match version {
        Version::Legacy => decrypt_gcm(key, iv, payload),
        Version::Omemo2 if !iv.is_empty() => {
            Err(DecryptError::Malformed("OMEMO 2 payloads have no IV"))
        }
        Version::Omemo2 => decrypt_cbc_hmac(key, payload),
    }
}

fn encrypt_gcm(rng: &mut impl CryptoRng, plaintext: &[u8]) -> (KeyMaterial, EncryptedPayload) {
    let mut key = Zeroizing::new([0u8; PAYLOAD_KEY_LENGTH]);
    let mut iv = [0u8; PAYLOAD_IV_LENGTH];
    rng.fill_bytes(key.as_mut());
    rng.fill_bytes(&mut iv);
    let mut ciphertext = plaintext.to_vec();
    let tag = gcm_encrypt(&key, &iv, &mut ciphertext);
    let mut material = Vec::with_capacity(PAYLOAD_KEY_LENGTH + PAYLOAD_TAG_LENGTH);
    material.extend_from_slice(key.as_ref());
    material.extend_from_slice(&tag);
    (
        KeyMaterial(material),
        EncryptedPayload {
            iv: iv.to_vec(),
            ciphertext,
        },
    )
}

fn decrypt_gcm(
    key: &KeyMaterial,
    iv: &[u8],
    payload: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    if iv.len() != PAYLOAD_IV_LENGTH && iv.len() != PAYLOAD_LEGACY_IV_LENGTH {
        return Err(DecryptError::Malformed("payload IV must be 12 or 16 bytes"));
    }
    let material = key.as_bytes();
    let (ciphertext, tag) = match material.len() {
        32 => (payload, &material[PAYLOAD_KEY_LENGTH..]),
        PAYLOAD_KEY_LENGTH if payload.len() >= PAYLOAD_TAG_LENGTH => {
            payload.split_at(payload.len() - PAYLOAD_TAG_LENGTH)
        }
        PAYLOAD_KEY_LENGTH => return Err(DecryptError::Malformed("payload shorter than its tag")),
        _ => {
            return Err(DecryptError::Malformed(
                "key material must be 16 or 32 bytes",
            ));
        }
    };
    let mut aes_key = [0u8; PAYLOAD_KEY_LENGTH];
    aes_key.copy_from_slice(&material[..PAYLOAD_KEY_LENGTH]);
    let aes_key = Zeroizing::new(aes_key);
    let mut tag_bytes = [0u8; PAYLOAD_TAG_LENGTH];
    tag_bytes.copy_from_slice(tag);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    if gcm_decrypt(&aes_key, iv, &mut plaintext, &tag_bytes) {
        Ok(plaintext)
    } else {
        Err(DecryptError::Authentication)
    }
}

fn encrypt_cbc_hmac(rng: &mut impl CryptoRng, plaintext: &[u8]) -> (KeyMaterial, EncryptedPayload) {
    let mut key = Zeroizing::new([0u8; OMEMO2_PAYLOAD_KEY_LENGTH]);
    rng.fill_bytes(key.as_mut());
    let mut material = Vec::with_capacity(OMEMO2_PAYLOAD_KEY_LENGTH + OMEMO2_PAYLOAD_TAG_LENGTH);
    material.extend_from_slice(key.as_ref());
    // HKDF to 80 bytes cannot fail (the limit is 255 × 32); an error would leave the key
    // material without a tag, which every receiver refuses.
    let ciphertext = match cipher_keys(key.as_ref(), OMEMO2_PAYLOAD_INFO) {
        Ok(keys) => {
            let ciphertext = cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext);
            let mut mac = hmac_sha256(&keys.mac_key);
            mac.update(&ciphertext);
            material.extend_from_slice(&mac.finalize().into_bytes()[..OMEMO2_PAYLOAD_TAG_LENGTH]);
            ciphertext
        }
        Err(_) => Vec::new(),
    };
    (
        KeyMaterial(material),
        EncryptedPayload {
            iv: Vec::new(),
            ciphertext,
        },
    )
}

fn decrypt_cbc_hmac(key: &KeyMaterial, payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let material = key.as_bytes();
    if material.len() != OMEMO2_PAYLOAD_KEY_LENGTH + OMEMO2_PAYLOAD_TAG_LENGTH {
        return Err(DecryptError::Malformed(
            "OMEMO 2 key material must be 48 bytes",
        ));
    }
    let (key, tag) = material.split_at(OMEMO2_PAYLOAD_KEY_LENGTH);
    let keys = cipher_keys(key, OMEMO2_PAYLOAD_INFO)?;
    let mut mac = hmac_sha256(&keys.mac_key);
    mac.update(payload);
    mac.verify_truncated_left(tag)
        .map_err(|_| DecryptError::Authentication)?;
    cbc_decrypt(&keys.cipher_key, &keys.iv, payload)
        .ok_or(DecryptError::Malformed("payload has bad padding"))
}
