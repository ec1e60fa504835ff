//! Identity backups: a device's identity (account, device id, identity key pair; no
//! sessions, no prekeys) sealed under a passphrase, to bring the device back on a new
//! store with the same device id and fingerprint. Contacts' trust in it still holds; its
//! sessions are rebuilt by the healing path on first contact (restoring old ratchets
//! would desynchronise them, which is why none are saved).
//!
//! The file: `OMEMO-ID`, a format byte (1), the Argon2id cost (memory in KiB, passes,
//! lanes; big-endian `u32`s), a 16-byte salt and a 12-byte nonce, then AES-256-GCM
//! (key: Argon2id of the passphrase, the header as associated data) over the device id
//! (big-endian `u32`), the 32-byte Curve25519 identity secret and the bare JID, and the
//! 16-byte tag.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::keys::aead::{gcm256_open, gcm256_seal};
use crate::keys::kdf::{PassphraseCost, passphrase_key};

const MAGIC: &[u8; 8] = b"OMEMO-ID";
const FORMAT: u8 = 1;
const SALT_LENGTH: usize = 16;
const NONCE_LENGTH: usize = 12;
const TAG_LENGTH: usize = 16;
const HEADER_LENGTH: usize = MAGIC.len() + 1 + 3 * 4 + SALT_LENGTH + NONCE_LENGTH;
/// Device id and identity secret, before the JID.
const FIXED_SECRET_LENGTH: usize = 4 + 32;

/// The Argon2id cost of new backups: 64 MiB, 3 passes, one lane (RFC 9106's second
/// recommended setting).
const COST: PassphraseCost = PassphraseCost {
    memory_kib: 64 * 1024,
    passes: 3,
    lanes: 1,
};
/// The most a backup may ask for when it is opened (a hostile file must not make the
/// importer allocate gigabytes or spin for minutes): 4× the memory and about 3× the
/// passes of new backups.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_PASSES: u32 = 10;
const MAX_LANES: u32 = 4;

/// Why a backup could not be made or opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The bytes are not an identity backup of this format.
    #[error("not an OMEMO identity backup")]
    NotABackup,
    /// A newer format than this release reads.
    #[error("identity backup format {0} is not supported by this release")]
    UnsupportedFormat(u8),
    /// The backup asks for a key derivation beyond the limits.
    #[error("the identity backup asks for an unreasonable key derivation cost")]
    UnreasonableCost,
    /// The passphrase is wrong, or the file was changed.
    #[error("wrong passphrase for the identity backup (or the file was altered)")]
    WrongPassphrase,
    /// An empty passphrase.
    #[error("the backup passphrase is empty")]
    EmptyPassphrase,
    /// Importing needs a store without an identity.
    #[error("the store already holds an identity; import into a new store")]
    StoreNotEmpty,
}

/// What a backup holds.
pub(crate) struct Identity {
    pub(crate) jid: String,
    pub(crate) device_id: u32,
    pub(crate) secret: Zeroizing<[u8; 32]>,
}

/// Seals `identity` under `passphrase`.
pub(crate) fn seal(
    identity: &Identity,
    passphrase: &str,
    rng: &mut impl CryptoRng,
) -> Result<Vec<u8>, BackupError> {
    let mut salt = [0u8; SALT_LENGTH];
    rng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LENGTH];
    rng.fill_bytes(&mut nonce);
    let mut out =
        Vec::with_capacity(HEADER_LENGTH + FIXED_SECRET_LENGTH + identity.jid.len() + TAG_LENGTH);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    for cost in [COST.memory_kib, COST.passes, COST.lanes] {
        out.extend_from_slice(&cost.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = derive_key(passphrase, &salt, COST)?;
    let mut secret = Zeroizing::new(Vec::with_capacity(FIXED_SECRET_LENGTH + identity.jid.len()));
    secret.extend_from_slice(&identity.device_id.to_be_bytes());
    secret.extend_from_slice(identity.secret.as_ref());
    secret.extend_from_slice(identity.jid.as_bytes());
    let tag = gcm256_seal(&key, &nonce, &out, &mut secret);
    out.extend_from_slice(&secret);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a backup made by [`seal`].
pub(crate) fn open(backup: &[u8], passphrase: &str) -> Result<Identity, BackupError> {
    if backup.len() < HEADER_LENGTH + FIXED_SECRET_LENGTH + TAG_LENGTH || !backup.starts_with(MAGIC)
    {
        return Err(BackupError::NotABackup);
    }
    let (header, sealed) = backup.split_at(HEADER_LENGTH);
    let format = header[MAGIC.len()];
    if format != FORMAT {
        return Err(BackupError::UnsupportedFormat(format));
    }
    let cost = |i: usize| {
        let at = MAGIC.len() + 1 + 4 * i;
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let cost = PassphraseCost {
        memory_kib: cost(0),
        passes: cost(1),
        lanes: cost(2),
    };
    if cost.memory_kib > MAX_MEMORY_KIB || cost.passes > MAX_PASSES || cost.lanes > MAX_LANES {
        return Err(BackupError::UnreasonableCost);
    }
    let salt = &header[HEADER_LENGTH - NONCE_LENGTH - SALT_LENGTH..HEADER_LENGTH - NONCE_LENGTH];
    let mut nonce = [0u8; NONCE_LENGTH];
    nonce.copy_from_slice(&header[HEADER_LENGTH - NONCE_LENGTH..]);
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LENGTH);
    let mut tag_bytes = [0u8; TAG_LENGTH];
    tag_bytes.copy_from_slice(tag);
    let key = derive_key(passphrase, salt, cost)?;
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    if !gcm256_open(&key, &nonce, header, &mut plain, &tag_bytes) {
        return Err(BackupError::WrongPassphrase);
    }
    let device_id = u32::from_be_bytes([plain[0], plain[1], plain[2], plain[3]]);
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&plain[4..FIXED_SECRET_LENGTH]);
    // Authenticated, so written by `seal`; a JID that is not UTF-8 means another writer.
    let jid = std::str::from_utf8(&plain[FIXED_SECRET_LENGTH..])
        .map_err(|_| BackupError::NotABackup)?
        .to_owned();
    Ok(Identity {
        jid,
        device_id,
        secret,
    })
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    cost: PassphraseCost,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    if passphrase.is_empty() {
        return Err(BackupError::EmptyPassphrase);
    }
    passphrase_key(passphrase, salt, cost).ok_or(BackupError::UnreasonableCost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            jid: "bot@example.org".to_owned(),
            device_id: 1_234_567,
            secret: Zeroizing::new([7u8; 32]),
        }
    }

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let sealed = seal(&identity(), "correct horse", &mut crate::os_rng()).unwrap();
        let opened = open(&sealed, "correct horse").unwrap();
        assert_eq!(opened.jid, "bot@example.org");
        assert_eq!(opened.device_id, 1_234_567);
        assert_eq!(*opened.secret, [7u8; 32]);
        assert!(!sealed.windows(15).any(|w| w == b"bot@example.org"));
        assert!(!sealed.windows(32).any(|w| w == [7u8; 32]));
        assert_eq!(
            open(&sealed, "wrong horse").err(),
            Some(BackupError::WrongPassphrase)
        );
        assert_eq!(
            seal(&identity(), "", &mut crate::os_rng()).err(),
            Some(BackupError::EmptyPassphrase)
        );
    }

    #[test]
    fn damaged_or_foreign_files_are_refused_with_their_reason() {
        let sealed = seal(&identity(), "pw", &mut crate::os_rng()).unwrap();
        // Any changed byte after the magic, header included, fails authentication.
        for at in [
            MAGIC.len() + 4,
            HEADER_LENGTH - 1,
            HEADER_LENGTH + 2,
            sealed.len() - 1,
        ] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert_eq!(
                open(&changed, "pw").err(),
                Some(BackupError::WrongPassphrase),
                "byte {at}"
            );
        }
        assert_eq!(open(b"hello", "pw").err(), Some(BackupError::NotABackup));
        assert_eq!(
            open(&sealed[..sealed.len() - 20], "pw").err(),
            Some(BackupError::NotABackup)
        );
        let mut newer = sealed.clone();
        newer[MAGIC.len()] = 2;
        assert_eq!(
            open(&newer, "pw").err(),
            Some(BackupError::UnsupportedFormat(2))
        );
        let mut costly = sealed;
        costly[MAGIC.len() + 1] = 0xff;
        assert_eq!(
            open(&costly, "pw").err(),
            Some(BackupError::UnreasonableCost)
        );
    }
}
