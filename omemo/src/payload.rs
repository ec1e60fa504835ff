//! Legacy OMEMO payload encryption: AES-128-GCM over the UTF-8 `<body>` text.
//!
//! The sender draws a 16-byte key and a 12-byte IV, puts the ciphertext without its tag
//! in `<payload>`, and ratchet-encrypts `key || tag` (32 bytes) for every recipient
//! device. Receivers also accept a 16-byte IV, and a 16-byte key with the tag at the end
//! of the payload, which clients sent until about 2020.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::{
    PAYLOAD_IV_LENGTH, PAYLOAD_KEY_LENGTH, PAYLOAD_LEGACY_IV_LENGTH, PAYLOAD_TAG_LENGTH,
};
use crate::error::DecryptError;
use crate::keys::aead::{gcm_decrypt, gcm_encrypt};

/// The key material the ratchet carries for one message: `key || tag` (32 bytes) for a
/// payload, or a bare 16-byte key for an empty (key transport) message.
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

    /// Fresh key material for an empty (key transport) message: a random 16-byte key.
    pub fn empty_message(rng: &mut impl CryptoRng) -> Self {
        let mut key = vec![0u8; PAYLOAD_KEY_LENGTH];
        rng.fill_bytes(&mut key);
        Self(key)
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
    /// The IV (12 bytes when sent by this crate).
    pub iv: Vec<u8>,
    /// The GCM ciphertext without the tag.
    pub ciphertext: Vec<u8>,
}

/// Encrypts `plaintext` (the UTF-8 body) under a fresh key; returns the key material for
/// the ratchet and the payload for the stanza.
///
/// ```
/// # let mut rng = omemo::os_rng();
/// let (key, payload) = omemo::encrypt_payload(&mut rng, b"hello");
/// let plaintext = omemo::decrypt_payload(&key, &payload.iv, &payload.ciphertext).unwrap();
/// assert_eq!(plaintext.as_slice(), b"hello");
/// ```
pub fn encrypt_payload(
    rng: &mut impl CryptoRng,
    plaintext: &[u8],
) -> (KeyMaterial, EncryptedPayload) {
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

/// Decrypts a `<payload>` with the key material the ratchet yielded.
///
/// Accepts a 12- or 16-byte IV, and either `key || tag` (32 bytes) or a 16-byte key with
/// the tag appended to the payload.
pub fn decrypt_payload(
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
