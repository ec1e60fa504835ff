//! [`SqliteStore`]: the state in one SQLite database file.
//!
//! The schema is built by numbered migrations (`migrations/NNNN_*.sql`); the number of
//! the newest one applied is the database's `PRAGMA user_version`. Opening a database
//! applies the missing migrations in one transaction and refuses a database written by a
//! newer schema.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::{
    AccountRecord, ArchivePosition, Batch, DeviceRecord, Op, PreKeyRecord, SignedPreKeyRecord,
    Store, StoreError, Trust,
};
use crate::version::{Version, Versions};

#[cfg(feature = "encrypted-store")]
mod cipher;
#[cfg(feature = "encrypted-store")]
mod crypto_provider;

/// The migrations, in order; migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: [&str; 5] = [
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_protocol_versions.sql"),
    include_str!("migrations/0003_device_lists_of_both_versions.sql"),
    include_str!("migrations/0004_device_first_seen.sql"),
    include_str!("migrations/0005_archives_and_rooms.sql"),
];

/// The schema version this crate writes: the number of migrations.
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the database file readable by its owner only (it holds secret keys), unless
/// it exists. The `-wal` and `-shm` files SQLite adds take the same permissions.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Backend(format!(
            "cannot create {}: {error}",
            path.display()
        ))),
    }
}

/// The first 16 bytes of every plain SQLite database file; an encrypted one (SQLCipher)
/// starts with the 16-byte salt of its key instead.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What a store file holds, from its first 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    /// An empty file: a new store.
    New,
    /// A plain SQLite database.
    Plain,
    /// An encrypted database, starting with its salt.
    Encrypted([u8; 16]),
}

fn file_kind(path: &Path) -> Result<FileKind, StoreError> {
    let mut header = Vec::with_capacity(PLAIN_HEADER.len());
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(PLAIN_HEADER.len() as u64)
                .read_to_end(&mut header)
        })
        .map_err(|e| StoreError::Backend(format!("cannot read {}: {e}", path.display())))?;
    match <[u8; 16]>::try_from(header.as_slice()) {
        _ if header.is_empty() => Ok(FileKind::New),
        Ok(first) if &first == PLAIN_HEADER => Ok(FileKind::Plain),
        Ok(salt) => Ok(FileKind::Encrypted(salt)),
        Err(_) => Err(StoreError::Corrupt(format!(
            "{} is shorter than a database header",
            path.display()
        ))),
    }
}

/// `path` with `suffix` appended to its file name (`store.db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The size the WAL file is cut back to after a checkpoint.
const WAL_SIZE_LIMIT_BYTES: i64 = 1 << 20;

/// WAL pages after which a commit checkpoints (SQLite's default is 1000).
const WAL_AUTOCHECKPOINT_PAGES: u32 = 100;

/// Prepared statements kept per connection (the store uses about a dozen).
const STATEMENT_CACHE_CAPACITY: usize = 32;

/// A [`Store`] in an SQLite database.
///
/// A file database runs in WAL mode with `synchronous = FULL`: a commit is atomic and on
/// disk when `commit` returns, so it survives a crash of the process and a power failure
/// (the WAL is cut back to 1 MiB after each checkpoint). Deleted rows are overwritten
/// (`secure_delete`), so consumed prekeys and old session states do not linger in free
/// pages. Deferred commits ([`Store::commit_deferred`]) are savepoints inside one
/// `BEGIN IMMEDIATE` transaction that [`Store::sync`] commits (group commit); a
/// [`commit`](Store::commit) is both at once, and dropping the store syncs. Loading checks
/// every value (key lengths, id ranges, trust codes) and reports [`StoreError::Corrupt`].
///
/// ```
/// use omemo::{Batch, DeviceRecord, Op, SqliteStore, Store, Trust, Version, Versions};
///
/// let mut store = SqliteStore::open_in_memory()?;
/// let device = DeviceRecord {
///     jid: "juliet@capulet.example".to_owned(),
///     device_id: 31415,
///     listed: Versions::only(Version::Omemo2),
///     identity_key: None,
///     trust: Trust::Undecided,
///     first_seen_at: Some(1_700_000_000),
///     left_lists_at: None,
///     last_message_at: None,
///     bundle_failed_at: None,
///     bundle_failed: Versions::NONE,
///     label: Some("Phone".to_owned()),
///     label_signature: Some(vec![7; 64]),
/// };
/// store.commit(Batch { ops: vec![Op::PutDevice(device.clone())] })?;
///
/// assert_eq!(store.load_devices("juliet@capulet.example")?, vec![device]);
/// assert!(store.load_devices("romeo@montague.example")?.is_empty());
/// # Ok::<(), omemo::StoreError>(())
/// ```
pub struct SqliteStore {
    conn: Connection,
    /// The exclusive lock on `<file>.lock`, held while the store is open (released by
    /// the system if the process dies); `None` for in-memory stores and stores opened
    /// alongside a running process.
    _lock: Option<std::fs::File>,
    /// SQLite's `data_version` when last looked at: it changes when another connection
    /// commits.
    data_version: std::cell::Cell<i64>,
    /// Deferred commits are waiting for [`Store::sync`] in the open transaction.
    pending: bool,
    /// A failure rolled the open transaction back with deferred commits in it: the next
    /// [`Store::sync`] reports it.
    lost: Option<String>,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnsupportedSchema`] if a newer version of this crate wrote the file;
    /// [`StoreError::InUse`] if another process has it open with this call;
    /// [`StoreError::Encrypted`] if it is encrypted (or not a database);
    /// [`StoreError::Backend`] if it cannot be opened or is locked for longer than the
    /// busy timeout.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_plain(path.as_ref(), true)
    }

    /// Opens a store another process may be running (`omemo-bot run`), without its lock:
    /// for short administrative changes such as a trust decision, which the running
    /// process picks up at its next operation ([`Store::changed_elsewhere`]). Never run
    /// a manager that sends or receives on a store opened this way.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`], but never [`StoreError::InUse`].
    pub fn open_alongside(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_plain(path.as_ref(), false)
    }

    fn open_plain(path: &Path, locked: bool) -> Result<Self, StoreError> {
        let (conn, lock, kind) = open_file(path, locked)?;
        if let FileKind::Encrypted(_) = kind {
            return Err(StoreError::Encrypted {
                path: path.display().to_string(),
            });
        }
        Self::setup(conn, true, lock)
    }

    /// A fresh database that lives in memory and is gone on drop.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if SQLite cannot allocate it.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::setup(conn, false, None)
    }

    fn setup(
        mut conn: Connection,
        file: bool,
        lock: Option<std::fs::File>,
    ) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // Refuse a newer schema before changing anything in the file.
        check_version(schema_version(&conn)?)?;
        if file {
            // The pragma answers with the mode in effect; a database that cannot use WAL
            // keeps its mode and still works.
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
                .map_err(backend)?;
            // FULL: a commit is on disk (the WAL fsynced) when it returns, and the manager
            // syncs deferred ones before it hands out a stanza that depends on them, so a
            // power loss cannot bring back a prekey or message key used in a stanza that
            // left. (A message read since the last sync can be read again after a crash,
            // as if it had arrived after it.) About 0.1 ms per sync here.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(backend)?;
            // The WAL is cut back to 1 MiB after each checkpoint: it does not grow with
            // history, and its frames (old states among them) are soon written over.
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
                .map_err(backend)?;
            // The checkpoint that copies the WAL back runs inside whichever commit crosses
            // the threshold; at SQLite's default of 1000 pages that commit takes ~10 ms,
            // at 100 pages ~1.5 ms (BENCHMARKS.md), which keeps every manager operation
            // within its budget.
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                .map_err(backend)?;
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(backend)?;
        conn.pragma_update(None, "secure_delete", true)
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        migrate(&mut conn)?;
        let store = Self {
            conn,
            _lock: lock,
            data_version: std::cell::Cell::new(0),
            pending: false,
            lost: None,
        };
        store.changed_elsewhere()?;
        Ok(store)
    }
}

impl SqliteStore {
    /// The `state` or `previous` blob of a session row, if the row and the blob exist.
    fn session_column(
        &self,
        column: &str,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let sql = format!(
            "SELECT {column} FROM sessions WHERE jid = ?1 AND device_id = ?2 AND version = ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(backend)?;
        let mut rows = stmt
            .query(params![jid, device_id, version.to_code()])
            .map_err(backend)?;
        let Some(row) = rows.next().map_err(backend)? else {
            return Ok(None);
        };
        Ok(optional_blob(row, 0, "session state")?.map(|bytes| Zeroizing::new(bytes.to_vec())))
    }
}

/// Creates the store file at `path` if missing (readable by its owner only), takes its
/// lock if `locked`, looks at what it holds and connects to it.
fn open_file(
    path: &Path,
    locked: bool,
) -> Result<(Connection, Option<std::fs::File>, FileKind), StoreError> {
    create_private(path)?;
    let lock = locked.then(|| lock(path)).transpose()?;
    let kind = file_kind(path)?;
    let conn = Connection::open(path).map_err(backend)?;
    Ok((conn, lock, kind))
}

/// Takes the exclusive lock of the store at `path` (on `<path>.lock`, created with the
/// store's permissions).
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let lock_path = with_suffix(path, ".lock");
    create_private(&lock_path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Backend(format!("{}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Backend(format!("{}: {e}", lock_path.display())))
        }
    }
}

/// Applies the missing migrations in one transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if schema_version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    // Read again under the write lock: another connection may have migrated meanwhile.
    let found = schema_version(&tx)?;
    check_version(found)?;
    if found < SCHEMA_VERSION {
        for sql in MIGRATIONS.iter().skip(found as usize) {
            tx.execute_batch(sql).map_err(backend)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

fn schema_version(conn: &Connection) -> Result<u32, StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    u32::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version} is negative")))
}

fn check_version(found: u32) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Writes one op inside the commit transaction.
fn apply(conn: &Connection, op: &Op) -> Result<(), StoreError> {
    let changed = match op {
        Op::PutAccount(r) => conn
            .prepare_cached(
                "INSERT INTO account (id, jid, device_id, identity_secret, next_pre_key_id)
                 VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET jid = excluded.jid,
                     device_id = excluded.device_id,
                     identity_secret = excluded.identity_secret,
                     next_pre_key_id = excluded.next_pre_key_id",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.jid,
                    r.device_id,
                    r.identity_secret.as_slice(),
                    r.next_pre_key_id
                ])
            }),
        Op::PutSignedPreKey(r) => {
            let created_at = time_to_sql("signed prekey created_at", r.created_at)?;
            conn.prepare_cached(
                "INSERT INTO signed_pre_keys (version, id, secret, signature, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (version, id) DO UPDATE SET secret = excluded.secret,
                     signature = excluded.signature, created_at = excluded.created_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.version.to_code(),
                    r.id,
                    r.secret.as_slice(),
                    r.signature.as_slice(),
                    created_at
                ])
            })
        }
        Op::DeleteSignedPreKey { version, id } => conn
            .prepare_cached("DELETE FROM signed_pre_keys WHERE version = ?1 AND id = ?2")
            .and_then(|mut s| s.execute(params![version.to_code(), id])),
        Op::PutPreKey(r) => conn
            .prepare_cached(
                "INSERT INTO pre_keys (version, id, secret, hidden) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (version, id) DO UPDATE
                 SET secret = excluded.secret, hidden = excluded.hidden",
            )
            .and_then(|mut s| {
                s.execute(params![r.version.to_code(), r.id, r.secret.as_slice(), r.hidden])
            }),
        Op::PutPreviousSession {
            jid,
            device_id,
            version,
            state,
        } => conn
            .prepare_cached(
                "UPDATE sessions SET previous = ?4 WHERE jid = ?1 AND device_id = ?2 AND version = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    jid,
                    device_id,
                    version.to_code(),
                    state.as_ref().map(|s| s.as_slice())
                ])
            }),
        Op::DeletePreKey { version, id } => conn
            .prepare_cached("DELETE FROM pre_keys WHERE version = ?1 AND id = ?2")
            .and_then(|mut s| s.execute(params![version.to_code(), id])),
        Op::PutSession {
            jid,
            device_id,
            version,
            state,
        } => conn
            .prepare_cached(
                "INSERT INTO sessions (jid, device_id, version, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (jid, device_id, version) DO UPDATE SET state = excluded.state",
            )
            .and_then(|mut s| {
                s.execute(params![jid, device_id, version.to_code(), state.as_slice()])
            }),
        Op::DeleteSession {
            jid,
            device_id,
            version,
        } => conn
            .prepare_cached(
                "DELETE FROM sessions WHERE jid = ?1 AND device_id = ?2 AND version = ?3",
            )
            .and_then(|mut s| s.execute(params![jid, device_id, version.to_code()])),
        Op::DeleteDevice { jid, device_id } => conn
            .prepare_cached("DELETE FROM sessions WHERE jid = ?1 AND device_id = ?2")
            .and_then(|mut s| s.execute(params![jid, device_id]))
            .and_then(|_| {
                conn.prepare_cached("DELETE FROM devices WHERE jid = ?1 AND device_id = ?2")
            })
            .and_then(|mut s| s.execute(params![jid, device_id])),
        Op::SetTrust {
            jid,
            device_id,
            trust,
        } => conn
            .prepare_cached("UPDATE devices SET trust = ?3 WHERE jid = ?1 AND device_id = ?2")
            .and_then(|mut s| s.execute(params![jid, device_id, trust.to_code()])),
        Op::PutArchivePosition { archive, position } => {
            let at = time_to_sql("archive position time", position.at)?;
            conn.prepare_cached(
                "INSERT INTO archives (archive, read_at, last_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (archive) DO UPDATE
                 SET read_at = excluded.read_at, last_id = excluded.last_id",
            )
            .and_then(|mut s| s.execute(params![archive, at, position.last_id]))
        }
        Op::PutRoomOccupant { room, nick, jid } => conn
            .prepare_cached(
                "INSERT INTO room_occupants (room, nick, jid) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room, nick) DO UPDATE SET jid = excluded.jid",
            )
            .and_then(|mut s| s.execute(params![room, nick, jid])),
        Op::PutDevice(r) => {
            let last_message_at = optional_time_to_sql("device last_message_at", r.last_message_at)?;
            let bundle_failed_at = optional_time_to_sql("device bundle_failed_at", r.bundle_failed_at)?;
            let first_seen_at = optional_time_to_sql("device first_seen_at", r.first_seen_at)?;
            let left_lists_at = optional_time_to_sql("device left_lists_at", r.left_lists_at)?;
            conn.prepare_cached(
                "INSERT INTO devices (jid, device_id, listed_legacy, listed_omemo2,
                     identity_key, trust, last_message_at, bundle_failed_at, label,
                     label_signature, bundle_failed_versions, first_seen_at, left_lists_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (jid, device_id) DO UPDATE SET
                     listed_legacy = excluded.listed_legacy,
                     listed_omemo2 = excluded.listed_omemo2,
                     identity_key = excluded.identity_key,
                     last_message_at = excluded.last_message_at,
                     bundle_failed_at = excluded.bundle_failed_at,
                     label = excluded.label, label_signature = excluded.label_signature,
                     bundle_failed_versions = excluded.bundle_failed_versions,
                     first_seen_at = excluded.first_seen_at,
                     left_lists_at = excluded.left_lists_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.jid,
                    r.device_id,
                    r.listed.contains(Version::Legacy),
                    r.listed.contains(Version::Omemo2),
                    r.identity_key.as_ref().map(|k| k.as_slice()),
                    r.trust.to_code(),
                    last_message_at,
                    bundle_failed_at,
                    r.label,
                    r.label_signature,
                    r.bundle_failed.to_bits(),
                    first_seen_at,
                    left_lists_at,
                ])
            })
        }
    };
    changed.map(drop).map_err(backend)
}

impl Store for SqliteStore {
    fn load_account(&self) -> Result<Option<AccountRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT jid, device_id, identity_secret, next_pre_key_id FROM account WHERE id = 1",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let Some(row) = rows.next().map_err(backend)? else {
            return Ok(None);
        };
        let device_id = to_u32("own device id", integer(row, 1, "own device id")?)?;
        if device_id == 0 || device_id > i32::MAX as u32 {
            return Err(StoreError::Corrupt(format!(
                "own device id {device_id} is out of range"
            )));
        }
        Ok(Some(AccountRecord {
            jid: text(row, 0, "account jid")?,
            device_id,
            identity_secret: secret(blob(row, 2, "identity secret")?, "identity secret")?,
            next_pre_key_id: to_u32("next prekey id", integer(row, 3, "next prekey id")?)?,
        }))
    }

    fn load_signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, id, secret, signature, created_at FROM signed_pre_keys
                 ORDER BY created_at, version, id",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            keys.push(SignedPreKeyRecord {
                version: version(row, 0, "signed prekey version")?,
                id: to_u32("signed prekey id", integer(row, 1, "signed prekey id")?)?,
                secret: secret(
                    blob(row, 2, "signed prekey secret")?,
                    "signed prekey secret",
                )?,
                signature: fixed(
                    blob(row, 3, "signed prekey signature")?,
                    "signed prekey signature",
                )?,
                created_at: to_u64("signed prekey created_at", integer(row, 4, "created_at")?)?,
            });
        }
        Ok(keys)
    }

    fn load_pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT version, id, secret, hidden FROM pre_keys ORDER BY version, id")
            .map_err(backend)?;
        let mut rows = stmt.query([]).map_err(backend)?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            keys.push(PreKeyRecord {
                version: version(row, 0, "prekey version")?,
                id: to_u32("prekey id", integer(row, 1, "prekey id")?)?,
                secret: secret(blob(row, 2, "prekey secret")?, "prekey secret")?,
                hidden: integer(row, 3, "prekey hidden")? != 0,
            });
        }
        Ok(keys)
    }

    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.session_column("state", jid, device_id, version)
    }

    fn load_previous_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.session_column("previous", jid, device_id, version)
    }

    fn load_archive_position(&self, archive: &str) -> Result<Option<ArchivePosition>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT read_at, last_id FROM archives WHERE archive = ?1")
            .map_err(backend)?;
        let mut rows = stmt.query(params![archive]).map_err(backend)?;
        let Some(row) = rows.next().map_err(backend)? else {
            return Ok(None);
        };
        let at = to_u64(
            "archive position time",
            integer(row, 0, "archive position time")?,
        )?;
        let last_id = row.get(1).map_err(backend)?;
        Ok(Some(ArchivePosition { at, last_id }))
    }

    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT nick, jid FROM room_occupants WHERE room = ?1 ORDER BY nick")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![room], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn load_devices(&self, jid: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT device_id, listed_legacy, identity_key, trust, last_message_at,
                     bundle_failed_at, listed_omemo2, label, label_signature,
                     bundle_failed_versions, first_seen_at, left_lists_at
                 FROM devices WHERE jid = ?1 ORDER BY device_id",
            )
            .map_err(backend)?;
        let mut rows = stmt.query(params![jid]).map_err(backend)?;
        let mut devices = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            let device_id = to_u32("device id", integer(row, 0, "device id")?)?;
            if device_id == 0 {
                return Err(StoreError::Corrupt("device id 0".to_owned()));
            }
            let mut listed = Versions::NONE;
            for (column, version) in [(1, Version::Legacy), (6, Version::Omemo2)] {
                match integer(row, column, "device listed flag")? {
                    0 => {}
                    1 => listed.insert(version),
                    other => {
                        return Err(StoreError::Corrupt(format!("device listed flag {other}")));
                    }
                }
            }
            let trust_code = integer(row, 3, "device trust")?;
            let trust = u8::try_from(trust_code)
                .ok()
                .and_then(Trust::from_code)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown trust code {trust_code}")))?;
            devices.push(DeviceRecord {
                jid: jid.to_owned(),
                device_id,
                listed,
                identity_key: optional_blob(row, 2, "device identity key")?
                    .map(|key| fixed(key, "device identity key"))
                    .transpose()?,
                trust,
                last_message_at: optional_time(row, 4, "device last_message_at")?,
                bundle_failed_at: optional_time(row, 5, "device bundle_failed_at")?,
                bundle_failed: {
                    let bits = integer(row, 9, "device bundle_failed_versions")?;
                    u8::try_from(bits)
                        .ok()
                        .and_then(Versions::from_bits)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("device bundle_failed_versions {bits}"))
                        })?
                },
                label: optional_text(row, 7, "device label")?,
                label_signature: optional_blob(row, 8, "device label signature")?
                    .map(<[u8]>::to_vec),
                first_seen_at: optional_time(row, 10, "device first_seen_at")?,
                left_lists_at: optional_time(row, 11, "device left_lists_at")?,
            });
        }
        Ok(devices)
    }

    fn changed_elsewhere(&self) -> Result<bool, StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "data_version", |row| row.get(0))
            .map_err(backend)?;
        Ok(self.data_version.replace(version) != version)
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        let committed = self.commit_deferred(batch);
        let synced = self.sync();
        committed.and(synced)
    }

    /// A savepoint inside one `BEGIN IMMEDIATE` transaction that stays open until
    /// [`Store::sync`]: other connections wait for it (up to the busy timeout), so the
    /// manager syncs before it waits for the network.
    fn commit_deferred(&mut self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend)?;
        }
        let applied = self.apply_in_savepoint(&batch);
        match &applied {
            Ok(()) => self.pending = true,
            // A full disk or an I/O error makes SQLite roll back the whole transaction,
            // deferred commits included: the next sync says so.
            Err(error) if self.pending && self.conn.is_autocommit() => {
                self.pending = false;
                self.lost = Some(error.to_string());
            }
            // Nothing deferred before: the transaction this call began ends here, so the
            // write lock is not held until some later commit.
            Err(_) if !self.pending && !self.conn.is_autocommit() => {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            Err(_) => {}
        }
        applied
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(lost) = self.lost.take() {
            return Err(StoreError::Backend(format!(
                "deferred commits were rolled back by a failure: {lost}"
            )));
        }
        self.pending = false;
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|error| {
            // A failed COMMIT may leave the transaction open (a busy database): roll it
            // back, so that the store holds the state of the last sync.
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            backend(error)
        })
    }
}

impl Drop for SqliteStore {
    /// Commits what was deferred: its stanzas may not have gone out, but a received
    /// message it consumed is not decrypted twice.
    fn drop(&mut self) {
        if let Err(error) = self.sync() {
            tracing::warn!(%error, "deferred OMEMO state not committed on close");
        }
    }
}

impl SqliteStore {
    /// Applies `batch` in a savepoint of the open transaction (all or nothing).
    fn apply_in_savepoint(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let savepoint = self.conn.savepoint().map_err(backend)?;
        for op in &batch.ops {
            // On error the savepoint rolls back when dropped; earlier commits stay.
            apply(&savepoint, op)?;
        }
        savepoint.commit().map_err(backend)
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

fn time_to_sql(what: &str, time: u64) -> Result<i64, StoreError> {
    i64::try_from(time)
        .map_err(|_| StoreError::Backend(format!("{what} {time} is beyond the storable range")))
}

fn optional_time_to_sql(what: &str, time: Option<u64>) -> Result<Option<i64>, StoreError> {
    time.map(|t| time_to_sql(what, t)).transpose()
}

fn to_u32(what: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is not a u32")))
}

fn to_u64(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn wrong_type(what: &str, expected: &str, found: ValueRef<'_>) -> StoreError {
    StoreError::Corrupt(format!(
        "{what} must be {expected}, found {}",
        found.data_type()
    ))
}

fn integer(row: &Row<'_>, idx: usize, what: &str) -> Result<i64, StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Integer(value) => Ok(value),
        other => Err(wrong_type(what, "an integer", other)),
    }
}

fn version(row: &Row<'_>, idx: usize, what: &str) -> Result<Version, StoreError> {
    let code = integer(row, idx, what)?;
    u8::try_from(code)
        .ok()
        .and_then(Version::from_code)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: unknown protocol version {code}")))
}

fn optional_integer(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<i64>, StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(value) => Ok(Some(value)),
        other => Err(wrong_type(what, "an integer or null", other)),
    }
}

/// A time column that may be null.
fn optional_time(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<u64>, StoreError> {
    optional_integer(row, idx, what)?
        .map(|t| to_u64(what, t))
        .transpose()
}

fn blob<'r>(row: &'r Row<'_>, idx: usize, what: &str) -> Result<&'r [u8], StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(wrong_type(what, "a blob", other)),
    }
}

fn optional_blob<'r>(
    row: &'r Row<'_>,
    idx: usize,
    what: &str,
) -> Result<Option<&'r [u8]>, StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => Ok(Some(bytes)),
        other => Err(wrong_type(what, "a blob or null", other)),
    }
}

fn text(row: &Row<'_>, idx: usize, what: &str) -> Result<String, StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8"))),
        other => Err(wrong_type(what, "text", other)),
    }
}

fn optional_text(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<String>, StoreError> {
    match row.get_ref(idx).map_err(backend)? {
        ValueRef::Null => Ok(None),
        _ => text(row, idx, what).map(Some),
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(bytes).map_err(|_| length_error(what, N, bytes.len()))
}

/// Copies a 32-byte secret straight into zeroizing memory.
fn secret(bytes: &[u8], what: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != out.len() {
        return Err(length_error(what, out.len(), bytes.len()));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

fn length_error(what: &str, expected: usize, actual: usize) -> StoreError {
    StoreError::Corrupt(format!("{what} must be {expected} bytes, got {actual}"))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{SCHEMA_VERSION, SqliteStore};
    use crate::store::conformance::{
        TempPath, sample_account, sample_device, sample_signed_pre_key,
    };
    use crate::store::{Batch, Op, PreKeyRecord, Store, StoreError};
    use crate::version::Version;

    fn commit(store: &mut SqliteStore, ops: Vec<Op>) {
        store.commit(Batch { ops }).unwrap();
    }

    fn raw(path: &TempPath) -> Connection {
        let conn = Connection::open(path.path()).unwrap();
        conn.pragma_update(None, "ignore_check_constraints", true)
            .unwrap();
        conn
    }

    #[test]
    fn migration_count_is_the_schema_version() {
        assert_eq!(SCHEMA_VERSION as usize, super::MIGRATIONS.len());
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(super::schema_version(&store.conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn file_store_uses_wal_full_sync_a_bounded_wal_and_foreign_keys() {
        let path = TempPath::new();
        let store = SqliteStore::open(path.path()).unwrap();
        let pragma = |name: &str| -> String {
            store
                .conn
                .pragma_query_value(None, name, |row| {
                    Ok(match row.get_ref(0)? {
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        other => other.as_i64()?.to_string(),
                    })
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        // FULL: a commit is on disk before the stanza it precedes leaves.
        assert_eq!(pragma("synchronous"), "2");
        assert_eq!(pragma("journal_size_limit"), (1 << 20).to_string());
        assert_eq!(pragma("wal_autocheckpoint"), "100");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(pragma("secure_delete"), "1");
    }

    #[test]
    fn deferred_commits_are_read_at_once_and_reach_other_processes_at_sync() {
        let path = TempPath::new();
        let mut store = SqliteStore::open(path.path()).unwrap();
        let first = sample_device("juliet@capulet.example", 5);
        let second = sample_device("juliet@capulet.example", 6);
        store
            .commit_deferred(Batch {
                ops: vec![Op::PutDevice(first.clone())],
            })
            .unwrap();
        // A failed batch rolls back alone; the deferred one before it stays.
        let failing = Batch {
            ops: vec![
                Op::PutDevice(second.clone()),
                Op::PutDevice(sample_device("juliet@capulet.example", 0)),
            ],
        };
        assert!(store.commit_deferred(failing).is_err());
        assert_eq!(
            store.load_devices("juliet@capulet.example").unwrap(),
            vec![first.clone()]
        );
        let other = SqliteStore::open_alongside(path.path()).unwrap();
        assert!(
            other
                .load_devices("juliet@capulet.example")
                .unwrap()
                .is_empty()
        );
        store.sync().unwrap();
        assert_eq!(
            other.load_devices("juliet@capulet.example").unwrap(),
            vec![first.clone()]
        );
        // A store dropped with deferred commits writes them.
        store
            .commit_deferred(Batch {
                ops: vec![Op::PutDevice(second.clone())],
            })
            .unwrap();
        drop(store);
        assert_eq!(
            other.load_devices("juliet@capulet.example").unwrap(),
            vec![first, second]
        );
    }

    #[test]
    fn a_failed_commit_does_not_keep_the_store_locked() {
        let path = TempPath::new();
        let mut store = SqliteStore::open(path.path()).unwrap();
        let bad = || Batch {
            ops: vec![Op::PutDevice(sample_device("juliet@capulet.example", 0))],
        };
        assert!(store.commit(bad()).is_err());
        assert!(store.commit_deferred(bad()).is_err());
        // Another process can write at once (it would wait for the lock otherwise).
        let mut other = SqliteStore::open_alongside(path.path()).unwrap();
        other
            .conn
            .busy_timeout(std::time::Duration::from_millis(10))
            .unwrap();
        commit(
            &mut other,
            vec![Op::PutDevice(sample_device("juliet@capulet.example", 5))],
        );
        assert_eq!(
            store.load_devices("juliet@capulet.example").unwrap().len(),
            1
        );
    }

    #[test]
    fn deferred_commits_lost_to_a_full_disk_are_reported_by_sync() {
        let path = TempPath::new();
        let mut store = SqliteStore::open(path.path()).unwrap();
        commit(&mut store, vec![Op::PutAccount(sample_account())]);
        store
            .commit_deferred(Batch {
                ops: vec![Op::PutDevice(sample_device("juliet@capulet.example", 2))],
            })
            .unwrap();
        // The file may not grow any more: a big session state does not fit.
        let pages: i64 = store
            .conn
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = Batch {
            ops: vec![Op::PutSession {
                jid: "juliet@capulet.example".into(),
                device_id: 2,
                version: Version::Omemo2,
                state: vec![7; 1 << 20].into(),
            }],
        };
        assert!(store.commit_deferred(big).is_err());
        // SQLite rolled the whole transaction back, the deferred device with it: sync
        // must not claim success.
        let synced = store.sync();
        assert!(
            store
                .load_devices("juliet@capulet.example")
                .unwrap()
                .is_empty()
        );
        assert!(matches!(synced, Err(StoreError::Backend(_))), "{synced:?}");
        // Reported once; the store goes on.
        store.sync().unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = TempPath::new();
        let mut store = SqliteStore::open(path.path()).unwrap();
        commit(&mut store, vec![Op::PutAccount(sample_account())]);
        let mode = std::fs::metadata(path.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reopened_file_store_keeps_everything() {
        let path = TempPath::new();
        let account = sample_account();
        let signed = sample_signed_pre_key(7, 1_700_000_000);
        let pre_key = PreKeyRecord {
            version: Version::Omemo2,
            id: 42,
            secret: [9u8; 32].into(),
            hidden: true,
        };
        let device = sample_device("juliet@capulet.example", 5);
        {
            let mut store = SqliteStore::open(path.path()).unwrap();
            commit(
                &mut store,
                vec![
                    Op::PutAccount(account.clone()),
                    Op::PutSignedPreKey(signed.clone()),
                    Op::PutPreKey(pre_key.clone()),
                    Op::PutSession {
                        jid: "juliet@capulet.example".into(),
                        device_id: 5,
                        version: Version::Omemo2,
                        state: vec![1, 2, 3].into(),
                    },
                    Op::PutDevice(device.clone()),
                ],
            );
        }
        let store = SqliteStore::open(path.path()).unwrap();
        assert_eq!(store.load_account().unwrap(), Some(account));
        assert_eq!(store.load_signed_pre_keys().unwrap(), vec![signed]);
        assert_eq!(store.load_pre_keys().unwrap(), vec![pre_key]);
        assert_eq!(
            store
                .load_session("juliet@capulet.example", 5, Version::Omemo2)
                .unwrap()
                .as_deref()
                .map(Vec::as_slice),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(
            store.load_devices("juliet@capulet.example").unwrap(),
            vec![device]
        );
        assert_eq!(super::schema_version(&store.conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let path = TempPath::new();
        drop(SqliteStore::open(path.path()).unwrap());
        raw(&path).pragma_update(None, "user_version", 999).unwrap();

        let err = SqliteStore::open(path.path()).unwrap_err();
        assert_eq!(
            err,
            StoreError::UnsupportedSchema {
                found: 999,
                supported: SCHEMA_VERSION
            }
        );
        let version: i64 = raw(&path)
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 999);
    }

    #[test]
    fn failed_migration_leaves_the_file_unchanged() {
        let path = TempPath::new();
        // A version-0 file that already has a table the first migration creates.
        raw(&path)
            .execute_batch("CREATE TABLE sessions (x INTEGER)")
            .unwrap();
        assert!(matches!(
            SqliteStore::open(path.path()),
            Err(StoreError::Backend(_))
        ));
        let conn = raw(&path);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, 0);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "the migration's other tables were rolled back");
    }

    #[test]
    fn a_second_process_on_one_store_gets_a_clear_error_and_tools_open_it_alongside() {
        let path = TempPath::new();
        let first = SqliteStore::open(path.path()).unwrap();
        match SqliteStore::open(path.path()) {
            Err(StoreError::InUse { path: named }) => {
                assert_eq!(named, path.path().display().to_string());
            }
            other => panic!("expected InUse, got {:?}", other.map(drop)),
        }
        let error = SqliteStore::open(path.path()).map(drop).unwrap_err();
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );
        // A tool's administrative change goes in alongside, and the running side sees
        // that someone else committed.
        assert!(!first.changed_elsewhere().unwrap());
        let mut tool = SqliteStore::open_alongside(path.path()).unwrap();
        commit(&mut tool, vec![Op::PutAccount(sample_account())]);
        assert!(first.changed_elsewhere().unwrap());
        assert!(!first.changed_elsewhere().unwrap(), "reported once");
        drop(first);
        assert!(
            SqliteStore::open(path.path()).is_ok(),
            "the lock goes with the store"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_untouched() {
        let path = TempPath::new();
        let garbage = vec![0x42u8; 4096];
        std::fs::write(path.path(), &garbage).unwrap();
        // Without a SQLite header it may be an encrypted store: the error says both.
        assert_eq!(
            SqliteStore::open(path.path()).err(),
            Some(StoreError::Encrypted {
                path: path.path().display().to_string()
            })
        );
        assert_eq!(std::fs::read(path.path()).unwrap(), garbage);
        std::fs::write(path.path(), b"SQLite").unwrap();
        assert!(matches!(
            SqliteStore::open(path.path()),
            Err(StoreError::Corrupt(m)) if m.contains("shorter than a database header")
        ));
    }

    /// Writes `sql` past the CHECK constraints, then expects `load` to report corruption.
    fn assert_corrupt_after(sql: &str, load: impl Fn(&SqliteStore) -> Result<(), StoreError>) {
        let path = TempPath::new();
        {
            let mut store = SqliteStore::open(path.path()).unwrap();
            commit(
                &mut store,
                vec![
                    Op::PutAccount(sample_account()),
                    Op::PutSignedPreKey(sample_signed_pre_key(1, 10)),
                    Op::PutPreKey(PreKeyRecord {
                        version: Version::Legacy,
                        id: 1,
                        secret: [1u8; 32].into(),
                        hidden: false,
                    }),
                    Op::PutSession {
                        jid: "juliet@capulet.example".into(),
                        device_id: 5,
                        version: Version::Legacy,
                        state: vec![7].into(),
                    },
                    Op::PutDevice(sample_device("juliet@capulet.example", 5)),
                ],
            );
            load(&store).unwrap();
        }
        raw(&path).execute_batch(sql).unwrap();
        let store = SqliteStore::open(path.path()).unwrap();
        match load(&store) {
            Err(StoreError::Corrupt(_)) => {}
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_rows_are_reported_not_trusted() {
        let devices = |s: &SqliteStore| s.load_devices("juliet@capulet.example").map(drop);
        let account = |s: &SqliteStore| s.load_account().map(drop);
        let signed = |s: &SqliteStore| s.load_signed_pre_keys().map(drop);
        let pre_keys = |s: &SqliteStore| s.load_pre_keys().map(drop);
        let session = |s: &SqliteStore| {
            s.load_session("juliet@capulet.example", 5, Version::Legacy)
                .map(drop)
        };

        assert_corrupt_after("UPDATE devices SET identity_key = zeroblob(31)", devices);
        assert_corrupt_after("UPDATE devices SET trust = 7", devices);
        assert_corrupt_after("UPDATE devices SET listed_legacy = 2", devices);
        assert_corrupt_after("UPDATE devices SET listed_omemo2 = -1", devices);
        assert_corrupt_after("UPDATE devices SET bundle_failed_versions = 4", devices);
        assert_corrupt_after("UPDATE devices SET label = CAST(x'ff' AS TEXT)", devices);
        assert_corrupt_after("UPDATE devices SET last_message_at = -1", devices);
        assert_corrupt_after("UPDATE devices SET device_id = 0", devices);
        assert_corrupt_after("UPDATE account SET identity_secret = zeroblob(33)", account);
        assert_corrupt_after("UPDATE account SET device_id = 2147483648", account);
        assert_corrupt_after(
            "UPDATE signed_pre_keys SET signature = zeroblob(63)",
            signed,
        );
        assert_corrupt_after("UPDATE signed_pre_keys SET secret = zeroblob(31)", signed);
        assert_corrupt_after("UPDATE pre_keys SET id = 4294967296", pre_keys);
        assert_corrupt_after("UPDATE pre_keys SET secret = zeroblob(0)", pre_keys);
        assert_corrupt_after("UPDATE pre_keys SET version = 3", pre_keys);
        assert_corrupt_after("UPDATE signed_pre_keys SET version = 0", signed);
        // A table without STRICT typing (an older or hand-made file) can hold any type.
        assert_corrupt_after(
            "DROP TABLE sessions;
             CREATE TABLE sessions (jid, device_id, version, state,
                                    PRIMARY KEY (jid, device_id, version));
             INSERT INTO sessions VALUES ('juliet@capulet.example', 5, 1, 'text, not a blob')",
            session,
        );
    }
}
