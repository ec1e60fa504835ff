//! Stores encrypted at rest (feature `encrypted-store`): the whole database file, its WAL
//! and its journal encrypted by SQLCipher (AES-256 per page, each page authenticated with
//! HMAC-SHA-512), under a key made from a passphrase by Argon2id.
//!
//! SQLCipher's own key derivation (PBKDF2) is not memory-hard, so the store hands it a raw
//! key instead: Argon2id of the passphrase with the 16-byte salt SQLCipher keeps at the
//! start of the file. A new store gets a random salt; the cost is fixed for this format
//! (see [`STORE_COST`]).

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use zeroize::Zeroizing;

use super::{
    FileKind, SqliteStore, backend, check_version, create_private, file_kind, lock, open_file,
    schema_version, with_suffix,
};
use crate::keys::kdf::{PassphraseCost, passphrase_key};
use crate::store::StoreError;

/// The Argon2id cost of a store key: 19 MiB, 2 passes, 1 lane, OWASP's recommended
/// setting. Lighter than an identity backup's (64 MiB, 3 passes): the store is opened at
/// every start of a process whose memory budget is a few MiB, and its file stays on the
/// device instead of travelling. About 60 ms here (release build).
const STORE_COST: PassphraseCost = PassphraseCost {
    memory_kib: 19 * 1024,
    passes: 2,
    lanes: 1,
};

/// The suffix of the new file that [`SqliteStore::change_passphrase`] writes before it
/// replaces the store with it.
const REKEY_SUFFIX: &str = ".rekeyed";

impl SqliteStore {
    /// Opens (or creates) the encrypted database file at `path` and brings its schema up
    /// to date. A new store is created encrypted under `passphrase`.
    ///
    /// Everything in the file is encrypted: keys, sessions, trust, and which JIDs the
    /// account talks to; so are the WAL and the journal beside it. Without the
    /// passphrase the file is 16 bytes of salt and random-looking pages.
    ///
    /// ```
    /// use omemo::{SqliteStore, StoreError};
    ///
    /// let dir = std::env::temp_dir().join(format!("omemo-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("state.db");
    /// drop(SqliteStore::open_encrypted(&path, "correct horse battery staple")?);
    ///
    /// assert!(matches!(
    ///     SqliteStore::open_encrypted(&path, "wrong"),
    ///     Err(StoreError::WrongPassphrase { .. })
    /// ));
    /// assert!(matches!(SqliteStore::open(&path), Err(StoreError::Encrypted { .. })));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), StoreError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongPassphrase`] if the passphrase does not open it;
    /// [`StoreError::NotEncrypted`] if it is a plain store (encrypt it with
    /// [`SqliteStore::change_passphrase`]); [`StoreError::EmptyPassphrase`]; otherwise as
    /// [`SqliteStore::open`].
    pub fn open_encrypted(path: impl AsRef<Path>, passphrase: &str) -> Result<Self, StoreError> {
        Self::open_keyed(path.as_ref(), passphrase, true)
    }

    /// [`SqliteStore::open_alongside`] for an encrypted store: without its lock, for
    /// short administrative changes beside a running process.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open_encrypted`], but never [`StoreError::InUse`].
    pub fn open_encrypted_alongside(
        path: impl AsRef<Path>,
        passphrase: &str,
    ) -> Result<Self, StoreError> {
        Self::open_keyed(path.as_ref(), passphrase, false)
    }

    fn open_keyed(path: &Path, passphrase: &str, locked: bool) -> Result<Self, StoreError> {
        check_passphrase(passphrase)?;
        let (conn, mut lock, mut kind) = open_file(path, locked)?;
        if kind == FileKind::New && lock.is_none() {
            // Two processes creating one store would pick different salts: the creator
            // holds the lock until the store is made (and looks again once it has it).
            lock = Some(super::lock(path)?);
            kind = file_kind(path)?;
        }
        let salt = match kind {
            FileKind::New => random_salt(),
            FileKind::Plain => {
                return Err(StoreError::NotEncrypted {
                    path: path.display().to_string(),
                });
            }
            FileKind::Encrypted(salt) => salt,
        };
        apply_key(&conn, passphrase, &salt, path)?;
        Self::setup(conn, true, lock)
    }

    /// Encrypts a plain store (`old` `None`), changes the passphrase of an encrypted one,
    /// or decrypts one (`new` `None`). The store is copied into a new file under the new
    /// key (with a new salt), which then replaces it; a failure leaves the store as it
    /// was. Nothing may have the store open meanwhile, not even alongside.
    ///
    /// The replaced file's blocks are freed, not overwritten: on disk, the old contents of
    /// a store that was plain may linger until reused. Create stores encrypted where that
    /// matters.
    ///
    /// ```
    /// use omemo::{SqliteStore, StoreError};
    ///
    /// let dir = std::env::temp_dir().join(format!("omemo-doc-rekey-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("state.db");
    /// drop(SqliteStore::open(&path)?);
    ///
    /// SqliteStore::change_passphrase(&path, None, Some("first"))?;
    /// SqliteStore::change_passphrase(&path, Some("first"), Some("second"))?;
    /// drop(SqliteStore::open_encrypted(&path, "second")?);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), StoreError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::WrongPassphrase`], [`StoreError::Encrypted`] (no `old` for an
    /// encrypted store), [`StoreError::NotEncrypted`] (an `old` for a plain one),
    /// [`StoreError::EmptyPassphrase`], [`StoreError::InUse`], and
    /// [`StoreError::Backend`] if there is no store at `path` or writing fails.
    pub fn change_passphrase(
        path: impl AsRef<Path>,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<(), StoreError> {
        let path = path.as_ref();
        old.map(check_passphrase).transpose()?;
        new.map(check_passphrase).transpose()?;
        let display = || path.display().to_string();
        let no_store = || StoreError::Backend(format!("no store at {}", display()));
        if !path.exists() {
            return Err(no_store());
        }
        let _lock = lock(path)?;
        let key = match (file_kind(path)?, old) {
            (FileKind::New, _) => return Err(no_store()),
            (FileKind::Plain, None) => None,
            (FileKind::Plain, Some(_)) => return Err(StoreError::NotEncrypted { path: display() }),
            (FileKind::Encrypted(_), None) => {
                return Err(StoreError::Encrypted { path: display() });
            }
            (FileKind::Encrypted(salt), Some(old)) => Some((old, salt)),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        if let Some((old, salt)) = key {
            apply_key(&conn, old, &salt, path)?;
        }
        let version = schema_version(&conn)?;
        check_version(version)?;
        // Everything into the main file first: the copy reads through the WAL anyway,
        // and the old WAL must not outlive the file it belongs to. A checkpoint that
        // could not finish means another connection is reading.
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(backend)?;
        if busy != 0 {
            return Err(StoreError::InUse { path: display() });
        }

        let target = with_suffix(path, REKEY_SUFFIX);
        let _ = std::fs::remove_file(&target);
        create_private(&target)?;
        let copied = copy_into(&conn, &target, new, version).and_then(|()| {
            conn.close().map_err(|(_, e)| backend(e))?;
            sync_file(&target)
        });
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&target);
            return Err(error);
        }
        // The closed connection removed the (checkpointed) WAL; what is left of it and of
        // the shared-memory index belongs to the old file.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(path, suffix));
        }
        std::fs::rename(&target, path)
            .map_err(|e| StoreError::Backend(format!("cannot replace {}: {e}", display())))?;
        // Done: the new file is whole on disk; only the rename may not be yet.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(error) = sync_file(dir)
        {
            tracing::warn!(%error, "the store was replaced, but its directory could not be synced");
        }
        Ok(())
    }
}

/// Copies the whole database (`sqlcipher_export`) into the empty file `target`, encrypted
/// under `new` with a fresh salt, or plain.
fn copy_into(
    conn: &Connection,
    target: &Path,
    new: Option<&str>,
    version: u32,
) -> Result<(), StoreError> {
    let key = match new {
        Some(passphrase) => key_spec(passphrase, &random_salt())?,
        None => Zeroizing::new(String::new()),
    };
    let target_name = target
        .to_str()
        .ok_or_else(|| StoreError::Backend(format!("{} is not UTF-8", target.display())))?;
    conn.execute(
        "ATTACH DATABASE ?1 AS rekeyed KEY ?2",
        params![target_name, key.as_str()],
    )
    .map_err(backend)?;
    let copied = conn
        .query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))
        .and_then(|()| conn.pragma_update(Some("rekeyed"), "user_version", version));
    let detached = conn.execute_batch("DETACH DATABASE rekeyed");
    copied.and(detached).map_err(backend)
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| StoreError::Backend(format!("cannot sync {}: {e}", path.display())))
}

fn check_passphrase(passphrase: &str) -> Result<(), StoreError> {
    if passphrase.is_empty() {
        return Err(StoreError::EmptyPassphrase);
    }
    Ok(())
}

fn random_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut crate::os_rng(), &mut salt);
    salt
}

/// SQLCipher's raw-key form, `x'<key><salt>'` in hex: the key is used as it is (no
/// PBKDF2) and the salt is the one the file keeps.
fn key_spec(passphrase: &str, salt: &[u8; 16]) -> Result<Zeroizing<String>, StoreError> {
    let key = passphrase_key(passphrase, salt, STORE_COST)
        .ok_or_else(|| StoreError::Backend("the store key cannot be derived".to_owned()))?;
    let mut spec = Zeroizing::new(String::with_capacity(2 * (32 + 16) + 3));
    spec.push_str("x'");
    for byte in key.iter().chain(salt) {
        // Writing to a String cannot fail.
        let _ = write!(spec, "{byte:02x}");
    }
    spec.push('\'');
    Ok(spec)
}

/// Keys the connection and checks the key by reading the schema: a wrong one fails the
/// first page's authentication, which SQLite reports as "not a database".
fn apply_key(
    conn: &Connection,
    passphrase: &str,
    salt: &[u8; 16],
    path: &Path,
) -> Result<(), StoreError> {
    let spec = key_spec(passphrase, salt)?;
    // SQLCipher logs a page that fails its check to stderr, which is the application's;
    // the failure is reported as an error instead. (A process-wide setting.)
    conn.pragma_update(None, "cipher_log_level", "NONE")
        .map_err(backend)?;
    // The statement holds the key: built in a buffer that is wiped.
    let mut statement = Zeroizing::new(String::with_capacity(spec.len() + 16));
    statement.push_str("PRAGMA key = \"");
    statement.push_str(&spec);
    statement.push_str("\";");
    conn.execute_batch(&statement).map_err(backend)?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        Ok(()) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == ErrorCode::NotADatabase => {
            Err(StoreError::WrongPassphrase {
                path: path.display().to_string(),
            })
        }
        Err(error) => Err(backend(error)),
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::super::with_suffix;
    use crate::store::conformance::{TempPath, sample_account, sample_device};
    use crate::store::{Batch, Op, SqliteStore, Store, StoreError};
    use crate::version::Version;

    const CONTACT: &str = "juliet@capulet.example";
    const SESSION: &[u8] = b"session state: ratchet keys of juliet's phone";

    /// An account, a contact's device and a session with it.
    fn fill(store: &mut SqliteStore) {
        let ops = vec![
            Op::PutAccount(sample_account()),
            Op::PutDevice(sample_device(CONTACT, 7)),
            Op::PutSession {
                jid: CONTACT.to_owned(),
                device_id: 7,
                version: Version::Legacy,
                state: Zeroizing::new(SESSION.to_vec()),
            },
        ];
        store.commit(Batch { ops }).unwrap();
    }

    fn holds_the_data(store: &SqliteStore) -> bool {
        store.load_account().unwrap() == Some(sample_account())
            && store.load_devices(CONTACT).unwrap() == vec![sample_device(CONTACT, 7)]
            && store
                .load_session(CONTACT, 7, Version::Legacy)
                .unwrap()
                .is_some_and(|s| s.as_slice() == SESSION)
    }

    /// The known values found in the store's files (database, WAL, journal).
    fn leaks(path: &TempPath) -> Vec<String> {
        let account = sample_account();
        let needles: [(&str, &[u8]); 4] = [
            ("the contact's JID", CONTACT.as_bytes()),
            ("the own JID", account.jid.as_bytes()),
            ("the session", SESSION),
            ("the identity secret", account.identity_secret.as_slice()),
        ];
        let mut found = Vec::new();
        for suffix in ["", "-wal", "-journal"] {
            let Ok(bytes) = std::fs::read(with_suffix(path.path(), suffix)) else {
                continue;
            };
            for (what, needle) in needles {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(format!("{what} in the file{suffix}"));
                }
            }
        }
        found
    }

    #[test]
    fn an_encrypted_store_shows_nothing_in_its_files_and_opens_with_its_passphrase_only() {
        let path = TempPath::new();
        let mut store = SqliteStore::open_encrypted(path.path(), "open sesame").unwrap();
        fill(&mut store);
        // Open: the last commits are in the WAL.
        assert!(
            std::fs::metadata(with_suffix(path.path(), "-wal"))
                .unwrap()
                .len()
                > 0,
            "the commits are in the WAL"
        );
        assert_eq!(leaks(&path), Vec::<String>::new());
        drop(store);
        assert_eq!(leaks(&path), Vec::<String>::new());

        let files = || {
            ["", "-wal", "-journal"]
                .map(|suffix| std::fs::read(with_suffix(path.path(), suffix)).ok())
        };
        let before = files();
        for wrong in ["open sesame!", "Open sesame"] {
            assert_eq!(
                SqliteStore::open_encrypted(path.path(), wrong).err(),
                Some(StoreError::WrongPassphrase {
                    path: path.path().display().to_string()
                })
            );
        }
        assert!(matches!(
            SqliteStore::open(path.path()),
            Err(StoreError::Encrypted { .. })
        ));
        assert!(matches!(
            SqliteStore::open_encrypted(path.path(), ""),
            Err(StoreError::EmptyPassphrase)
        ));
        assert!(files() == before, "nothing written");

        let store = SqliteStore::open_encrypted(path.path(), "open sesame").unwrap();
        assert!(holds_the_data(&store));
        let beside = SqliteStore::open_encrypted_alongside(path.path(), "open sesame").unwrap();
        assert!(holds_the_data(&beside));
        assert!(matches!(
            SqliteStore::open_encrypted(path.path(), "open sesame"),
            Err(StoreError::InUse { .. })
        ));
    }

    #[test]
    fn a_plain_store_is_encrypted_rekeyed_and_decrypted_with_its_data() {
        let path = TempPath::new();
        let mut store = SqliteStore::open(path.path()).unwrap();
        fill(&mut store);
        drop(store);
        assert!(!leaks(&path).is_empty(), "a plain store shows its data");
        assert!(matches!(
            SqliteStore::open_encrypted(path.path(), "first"),
            Err(StoreError::NotEncrypted { .. })
        ));

        SqliteStore::change_passphrase(path.path(), None, Some("first")).unwrap();
        assert_eq!(leaks(&path), Vec::<String>::new());
        assert!(holds_the_data(
            &SqliteStore::open_encrypted(path.path(), "first").unwrap()
        ));
        assert!(matches!(
            SqliteStore::open(path.path()),
            Err(StoreError::Encrypted { .. })
        ));

        let salt_before = std::fs::read(path.path()).unwrap()[..16].to_vec();
        SqliteStore::change_passphrase(path.path(), Some("first"), Some("second")).unwrap();
        assert_ne!(
            std::fs::read(path.path()).unwrap()[..16],
            salt_before,
            "a new salt"
        );
        assert!(matches!(
            SqliteStore::open_encrypted(path.path(), "first"),
            Err(StoreError::WrongPassphrase { .. })
        ));
        let mut store = SqliteStore::open_encrypted(path.path(), "second").unwrap();
        assert!(holds_the_data(&store));
        // The store goes on being written after the change.
        store
            .commit(Batch {
                ops: vec![Op::PutDevice(sample_device(CONTACT, 8))],
            })
            .unwrap();
        drop(store);

        SqliteStore::change_passphrase(path.path(), Some("second"), None).unwrap();
        let store = SqliteStore::open(path.path()).unwrap();
        assert!(store.load_account().unwrap() == Some(sample_account()));
        assert_eq!(store.load_devices(CONTACT).unwrap().len(), 2);
        assert!(!with_suffix(path.path(), ".rekeyed").exists());
    }

    #[test]
    fn a_refused_passphrase_change_leaves_the_store_as_it_was() {
        let path = TempPath::new();
        let missing = SqliteStore::change_passphrase(path.path(), None, Some("new"));
        assert!(
            matches!(&missing, Err(StoreError::Backend(m)) if m.starts_with("no store at")),
            "{missing:?}"
        );
        assert!(!path.path().exists(), "no store was created");

        let mut store = SqliteStore::open_encrypted(path.path(), "old").unwrap();
        fill(&mut store);
        assert!(matches!(
            SqliteStore::change_passphrase(path.path(), Some("old"), Some("new")),
            Err(StoreError::InUse { .. })
        ));
        drop(store);
        let before = std::fs::read(path.path()).unwrap();
        let shown = path.path().display().to_string();
        let refusals = [
            (
                Some("wrong"),
                Some("new"),
                StoreError::WrongPassphrase {
                    path: shown.clone(),
                },
            ),
            (None, Some("new"), StoreError::Encrypted { path: shown }),
            (Some("old"), Some(""), StoreError::EmptyPassphrase),
            (Some(""), Some("new"), StoreError::EmptyPassphrase),
        ];
        for (old, new, expected) in refusals {
            assert_eq!(
                SqliteStore::change_passphrase(path.path(), old, new),
                Err(expected),
                "{old:?} -> {new:?}"
            );
            assert_eq!(
                std::fs::read(path.path()).unwrap(),
                before,
                "{old:?} -> {new:?}"
            );
            assert!(
                !with_suffix(path.path(), "-wal").exists(),
                "{old:?} -> {new:?}"
            );
            assert!(
                !with_suffix(path.path(), ".rekeyed").exists(),
                "{old:?} -> {new:?}"
            );
        }
        assert!(holds_the_data(
            &SqliteStore::open_encrypted(path.path(), "old").unwrap()
        ));

        let plain = TempPath::new();
        drop(SqliteStore::open(plain.path()).unwrap());
        assert!(matches!(
            SqliteStore::change_passphrase(plain.path(), Some("old"), Some("new")),
            Err(StoreError::NotEncrypted { .. })
        ));
    }

    #[test]
    fn a_store_written_with_the_openssl_provider_opens() {
        // Written by this crate's `fill` with SQLCipher's OpenSSL provider (before
        // `crypto_provider`), passphrase "open sesame".
        let written_with_openssl: &[u8] =
            include_bytes!("../../../tests/fixtures/sqlcipher-openssl-provider.db");
        let path = TempPath::new();
        std::fs::write(path.path(), written_with_openssl).unwrap();
        assert_eq!(
            SqliteStore::open_encrypted(path.path(), "open sesame!").err(),
            Some(StoreError::WrongPassphrase {
                path: path.path().display().to_string()
            })
        );
        let mut store = SqliteStore::open_encrypted(path.path(), "open sesame").unwrap();
        assert!(holds_the_data(&store));
        // Written to and read back by this provider.
        let ops = vec![Op::DeleteSession {
            jid: CONTACT.to_owned(),
            device_id: 7,
            version: Version::Legacy,
        }];
        store.commit(Batch { ops }).unwrap();
        drop(store);
        let store = SqliteStore::open_encrypted(path.path(), "open sesame").unwrap();
        assert_eq!(
            store.load_session(CONTACT, 7, Version::Legacy).unwrap(),
            None
        );
        assert_eq!(store.load_account().unwrap(), Some(sample_account()));
    }

    #[test]
    fn sqlcipher_uses_this_crates_provider_and_openssl_is_never_loaded() {
        let path = TempPath::new();
        let mut store = SqliteStore::open_encrypted(path.path(), "open sesame").unwrap();
        fill(&mut store);
        let provider: String = store
            .conn
            .pragma_query_value(None, "cipher_provider", |row| row.get(0))
            .unwrap();
        assert_eq!(provider, "rustcrypto");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!maps.contains("libcrypto"), "libcrypto is mapped:\n{maps}");
    }
}
