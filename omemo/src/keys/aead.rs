//! AES-256-CBC with PKCS#7 (inside the ratchet), AES-128-GCM (legacy payloads) and
//! AES-256-GCM (identity backups).

use aes::{Aes128, Aes256};
use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::{Aes256Gcm, AesGcm, KeyInit};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use zeroize::Zeroizing;

/// AES-256-CBC with PKCS#7 padding.
pub(crate) fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<Aes256>::new(key.into(), iv.into()).encrypt_padded_vec::<Pkcs7>(plaintext)
}

/// AES-256-CBC with PKCS#7 padding; `None` when the length or the padding is wrong.
pub(crate) fn cbc_decrypt(
    key: &[u8; 32],
    iv: &[u8; 16],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .ok()
        .map(Zeroizing::new)
}

/// AES-128-GCM with a 12-byte nonce, no associated data; the tag is returned apart.
pub(crate) fn gcm_encrypt(key: &[u8; 16], iv: &[u8; 12], buffer: &mut [u8]) -> [u8; 16] {
    let cipher = AesGcm::<Aes128, U12>::new(key.into());
    // The only error is a message longer than GCM's 64 GiB limit, which no caller can
    // reach with an in-memory buffer; an empty tag would fail every decryption anyway.
    cipher
        .encrypt_inout_detached(iv.into(), b"", buffer.into())
        .map(Into::into)
        .unwrap_or([0u8; 16])
}

/// AES-128-GCM decryption for a 12- or 16-byte nonce; `false` when the tag is wrong or
/// the nonce length is unsupported.
pub(crate) fn gcm_decrypt(key: &[u8; 16], iv: &[u8], buffer: &mut [u8], tag: &[u8; 16]) -> bool {
    if let Ok(iv) = <&[u8; 12]>::try_from(iv) {
        AesGcm::<Aes128, U12>::new(key.into())
            .decrypt_inout_detached(iv.into(), b"", buffer.into(), tag.into())
            .is_ok()
    } else if let Ok(iv) = <&[u8; 16]>::try_from(iv) {
        AesGcm::<Aes128, U16>::new(key.into())
            .decrypt_inout_detached(iv.into(), b"", buffer.into(), tag.into())
            .is_ok()
    } else {
        false
    }
}

/// AES-256-GCM with a 12-byte nonce over `buffer` in place, authenticating `aad` too; the
/// tag is returned apart.
pub(crate) fn gcm256_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    buffer: &mut [u8],
) -> [u8; 16] {
    // As in `gcm_encrypt`: the only error is a buffer beyond GCM's limit.
    Aes256Gcm::new(key.into())
        .encrypt_inout_detached(nonce.into(), aad, buffer.into())
        .map(Into::into)
        .unwrap_or([0u8; 16])
}

/// Opens what [`gcm256_seal`] sealed; `false` (the buffer then holds garbage) when the
/// key, the data or the tag is wrong.
pub(crate) fn gcm256_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    buffer: &mut [u8],
    tag: &[u8; 16],
) -> bool {
    Aes256Gcm::new(key.into())
        .decrypt_inout_detached(nonce.into(), aad, buffer.into(), tag.into())
        .is_ok()
}
