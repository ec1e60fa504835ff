//! SQLCipher's cryptography from this crate's RustCrypto dependencies instead of OpenSSL.
//!
//! SQLCipher calls a *crypto provider*, a table of C functions, for everything it
//! encrypts: AES-256-CBC for the pages, HMAC-SHA-512 over each page, PBKDF2 for the
//! page-HMAC key, and random bytes for salts and IVs. Its bundled build uses OpenSSL's
//! libcrypto for that, which costs 3.4 MB of resident memory in every process that
//! links it, encrypted store or not (SQLCipher seeds itself from OpenSSL when SQLite
//! initialises). Built with `-DSQLCIPHER_CRYPTO_CUSTOM=omemo_sqlcipher_crypto_setup`
//! (this workspace's `.cargo/config.toml` sets it through `LIBSQLITE3_FLAGS`), SQLCipher
//! leaves OpenSSL out and calls [`omemo_sqlcipher_crypto_setup`] to fill in the table
//! with the functions below. They use the `aes`, `cbc`, `hmac`, `sha2` and `pbkdf2`
//! crates and the operating system's generator: no primitive is written here, only the
//! glue. Files are the same either way (`PRAGMA cipher_provider` tells which provider a
//! build has); the test `a_store_written_with_the_openssl_provider_opens` reads one
//! written with OpenSSL. (On Apple targets libsqlite3-sys builds SQLCipher on
//! CommonCrypto, which takes precedence over a custom provider; a `LIBSQLITE3_FLAGS`
//! already in the environment replaces the workspace's.)
//!
//! Only SQLCipher 4's algorithms are offered (HMAC-SHA-512 and PBKDF2-HMAC-SHA-512, and
//! their SHA-256 variants); the SHA-1 settings of SQLCipher 3 files are refused with an
//! error, never computed wrongly. This crate writes SQLCipher 4 files only.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};

use aes::Aes256;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};

const SQLITE_OK: c_int = 0;
const SQLITE_ERROR: c_int = 1;

/// `SQLCIPHER_ENCRYPT` (`SQLCIPHER_DECRYPT` is 0).
const ENCRYPT: c_int = 1;
const DECRYPT: c_int = 0;
/// `SQLCIPHER_HMAC_SHA256` and `SQLCIPHER_HMAC_SHA512`, also the PBKDF2 algorithm ids.
const SHA256: c_int = 1;
const SHA512: c_int = 2;

const KEY_BYTES: usize = 32;
const BLOCK_BYTES: usize = 16;

const PROVIDER_NAME: &CStr = c"rustcrypto";
const CIPHER_NAME: &CStr = c"aes-256-cbc";
const PROVIDER_VERSION: &CStr = match CStr::from_bytes_with_nul(
    concat!("omemo ", env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(version) => version,
    Err(_) => c"omemo",
};

/// SQLCipher's `struct sqlcipher_provider`, field for field (SQLCipher 4.x,
/// `src/sqlcipher.h`). SQLCipher allocates it and hands it to
/// [`omemo_sqlcipher_crypto_setup`]; `next` is SQLCipher's own list link.
#[repr(C)]
pub(crate) struct SqlcipherProvider {
    init: Option<unsafe extern "C" fn() -> c_int>,
    shutdown: Option<unsafe extern "C" fn()>,
    get_provider_name: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    add_random: Option<unsafe extern "C" fn(*mut c_void, *const c_void, c_int) -> c_int>,
    random: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int>,
    hmac: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *const u8,
            c_int,
            *const u8,
            c_int,
            *const u8,
            c_int,
            *mut u8,
        ) -> c_int,
    >,
    kdf: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *const u8,
            c_int,
            *const u8,
            c_int,
            c_int,
            c_int,
            *mut u8,
        ) -> c_int,
    >,
    cipher: Option<
        unsafe extern "C" fn(
            *mut c_void,
            c_int,
            *const u8,
            c_int,
            *const u8,
            *const u8,
            c_int,
            *mut u8,
        ) -> c_int,
    >,
    get_cipher: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    get_key_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_iv_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_block_sz: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_hmac_sz: Option<unsafe extern "C" fn(*mut c_void, c_int) -> c_int>,
    ctx_init: Option<unsafe extern "C" fn(*mut *mut c_void) -> c_int>,
    ctx_free: Option<unsafe extern "C" fn(*mut *mut c_void) -> c_int>,
    fips_status: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
    get_provider_version: Option<unsafe extern "C" fn(*mut c_void) -> *const c_char>,
    next: *mut SqlcipherProvider,
}

/// Fills in SQLCipher's provider table; SQLCipher calls it once, when SQLite initialises
/// (the name is given to SQLCipher's build as `SQLCIPHER_CRYPTO_CUSTOM`).
///
/// # Safety
/// `provider` is null or points to a writable `sqlcipher_provider`.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn omemo_sqlcipher_crypto_setup(
    provider: *mut SqlcipherProvider,
) -> c_int {
    // SAFETY: the caller passes a valid, exclusive pointer or null.
    let Some(provider) = (unsafe { provider.as_mut() }) else {
        return SQLITE_ERROR;
    };
    provider.init = None;
    provider.shutdown = None;
    provider.get_provider_name = Some(provider_name);
    provider.add_random = Some(add_random);
    provider.random = Some(random);
    provider.hmac = Some(hmac);
    provider.kdf = Some(kdf);
    provider.cipher = Some(cipher);
    provider.get_cipher = Some(cipher_name);
    provider.get_key_sz = Some(key_size);
    provider.get_iv_sz = Some(block_size);
    provider.get_block_sz = Some(block_size);
    provider.get_hmac_sz = Some(hmac_size);
    provider.ctx_init = Some(no_context);
    provider.ctx_free = Some(no_context);
    provider.fips_status = Some(not_fips);
    provider.get_provider_version = Some(provider_version);
    SQLITE_OK
}

/// `len` bytes at `ptr` as a slice; `None` for a null pointer or a negative length.
///
/// # Safety
/// A non-null `ptr` points to `len` readable bytes that stay valid and unchanged for
/// `'a`.
unsafe fn readable<'a>(ptr: *const u8, len: c_int) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, `len` readable bytes (the caller's contract).
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `len` writable bytes at `ptr`; `None` for a null pointer or a negative length.
///
/// # Safety
/// A non-null `ptr` points to `len` writable bytes nothing else uses for `'a`.
unsafe fn writable<'a>(ptr: *mut u8, len: c_int) -> Option<&'a mut [u8]> {
    let len = usize::try_from(len).ok()?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null, `len` writable and exclusive bytes (the caller's contract).
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn status(done: Option<()>) -> c_int {
    if done.is_some() {
        SQLITE_OK
    } else {
        SQLITE_ERROR
    }
}

unsafe extern "C" fn provider_name(_ctx: *mut c_void) -> *const c_char {
    PROVIDER_NAME.as_ptr()
}

unsafe extern "C" fn provider_version(_ctx: *mut c_void) -> *const c_char {
    PROVIDER_VERSION.as_ptr()
}

unsafe extern "C" fn cipher_name(_ctx: *mut c_void) -> *const c_char {
    CIPHER_NAME.as_ptr()
}

unsafe extern "C" fn key_size(_ctx: *mut c_void) -> c_int {
    KEY_BYTES as c_int
}

/// AES's block, also CBC's IV.
unsafe extern "C" fn block_size(_ctx: *mut c_void) -> c_int {
    BLOCK_BYTES as c_int
}

unsafe extern "C" fn hmac_size(_ctx: *mut c_void, algorithm: c_int) -> c_int {
    match algorithm {
        SHA256 => 32,
        SHA512 => 64,
        _ => 0,
    }
}

/// The provider keeps no per-database state.
unsafe extern "C" fn no_context(_ctx: *mut *mut c_void) -> c_int {
    SQLITE_OK
}

unsafe extern "C" fn not_fips(_ctx: *mut c_void) -> c_int {
    0
}

/// The operating system's generator needs no seeding: what SQLCipher offers is dropped.
unsafe extern "C" fn add_random(_ctx: *mut c_void, _buffer: *const c_void, _len: c_int) -> c_int {
    SQLITE_OK
}

unsafe extern "C" fn random(_ctx: *mut c_void, buffer: *mut c_void, len: c_int) -> c_int {
    // SAFETY: SQLCipher passes a buffer of `len` writable bytes.
    let filled = unsafe { writable(buffer.cast(), len) }.and_then(|out| getrandom::fill(out).ok());
    status(filled)
}

/// HMAC of `data` followed by `data2` (may be null) into `out`, which has room for the
/// algorithm's [`hmac_size`].
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn hmac(
    _ctx: *mut c_void,
    algorithm: c_int,
    key: *const u8,
    key_len: c_int,
    data: *const u8,
    data_len: c_int,
    data2: *const u8,
    data2_len: c_int,
    out: *mut u8,
) -> c_int {
    fn mac<M: Mac + KeyInit>(key: &[u8], parts: [&[u8]; 2], out: &mut [u8]) -> Option<()> {
        let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
        for part in parts {
            mac.update(part);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
        Some(())
    }
    // SAFETY: SQLCipher passes the lengths of its buffers, and `out` has room for the
    // algorithm's MAC (SQLCipher sized it with `hmac_size`).
    let done =
        unsafe {
            let second = if data2.is_null() {
                Some(&[][..])
            } else {
                readable(data2, data2_len)
            };
            match (readable(key, key_len), readable(data, data_len), second) {
                (Some(key), Some(first), Some(second)) => match algorithm {
                    SHA256 => writable(out, 32)
                        .and_then(|out| mac::<Hmac<Sha256>>(key, [first, second], out)),
                    SHA512 => writable(out, 64)
                        .and_then(|out| mac::<Hmac<Sha512>>(key, [first, second], out)),
                    _ => None,
                },
                _ => None,
            }
        };
    status(done)
}

/// PBKDF2-HMAC of `passphrase` and `salt` with `rounds` iterations into `key_len` bytes.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn kdf(
    _ctx: *mut c_void,
    algorithm: c_int,
    passphrase: *const u8,
    passphrase_len: c_int,
    salt: *const u8,
    salt_len: c_int,
    rounds: c_int,
    key_len: c_int,
    key: *mut u8,
) -> c_int {
    // SAFETY: SQLCipher passes the lengths of its buffers.
    let done = unsafe {
        match (
            readable(passphrase, passphrase_len),
            readable(salt, salt_len),
            u32::try_from(rounds).ok().filter(|&r| r > 0),
            writable(key, key_len),
        ) {
            (Some(passphrase), Some(salt), Some(rounds), Some(key)) => {
                let derive = match algorithm {
                    SHA256 => pbkdf2::pbkdf2_hmac::<Sha256>,
                    SHA512 => pbkdf2::pbkdf2_hmac::<Sha512>,
                    _ => return SQLITE_ERROR,
                };
                derive(passphrase, salt, rounds, key);
                Some(())
            }
            _ => None,
        }
    };
    status(done)
}

/// AES-256-CBC without padding of `len` bytes (whole blocks) from `data` into `out`,
/// which may be the same buffer.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn cipher(
    _ctx: *mut c_void,
    mode: c_int,
    key: *const u8,
    key_len: c_int,
    iv: *const u8,
    data: *const u8,
    len: c_int,
    out: *mut u8,
) -> c_int {
    let Some(bytes) = usize::try_from(len).ok().filter(|n| n % BLOCK_BYTES == 0) else {
        return SQLITE_ERROR;
    };
    if key_len != KEY_BYTES as c_int
        || key.is_null()
        || iv.is_null()
        || data.is_null()
        || out.is_null()
    {
        return SQLITE_ERROR;
    }
    // SAFETY: SQLCipher passes a key of `key_len` bytes, an IV of `block_size` bytes, and
    // input and output buffers of `len` bytes each; `copy` allows them to overlap, and
    // `out` is used only through `buffer` from then on.
    let (key, iv, buffer) = unsafe {
        std::ptr::copy(data, out, bytes);
        (
            std::slice::from_raw_parts(key, KEY_BYTES),
            std::slice::from_raw_parts(iv, BLOCK_BYTES),
            std::slice::from_raw_parts_mut(out, bytes),
        )
    };
    let done = match mode {
        ENCRYPT => cbc::Encryptor::<Aes256>::new_from_slices(key, iv)
            .ok()
            .and_then(|c| c.encrypt_padded::<NoPadding>(buffer, bytes).ok().map(drop)),
        DECRYPT => cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
            .ok()
            .and_then(|c| c.decrypt_padded::<NoPadding>(buffer).ok().map(drop)),
        _ => None,
    };
    status(done)
}
