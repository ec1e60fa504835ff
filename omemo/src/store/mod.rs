//! Persistence: the [`Store`] trait, its records, and the backends.
//!
//! The manager reads through the trait and writes every change of one operation as one
//! [`Batch`], which a backend commits in one transaction (all or nothing). Secrets travel
//! in zeroizing buffers and never appear in Debug output.

use std::fmt;

use zeroize::Zeroizing;

use crate::version::{Version, Versions};

#[cfg(test)]
mod conformance;
mod memory;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// How far a device is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trust {
    /// No decision yet; never encrypted to.
    Undecided,
    /// Trusted without verification (blind trust before verification).
    Blind,
    /// Verified and trusted by the user.
    Verified,
    /// Distrusted by the user; never encrypted to, its messages are flagged.
    Distrusted,
}

impl Trust {
    /// The stable number stored for this level.
    pub fn to_code(self) -> u8 {
        match self {
            Self::Undecided => 0,
            Self::Blind => 1,
            Self::Verified => 2,
            Self::Distrusted => 3,
        }
    }

    /// The level for a stored number.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Undecided,
            1 => Self::Blind,
            2 => Self::Verified,
            3 => Self::Distrusted,
            _ => return None,
        })
    }
}

/// The own device: its id and identity secret (for both protocol versions). One per
/// store.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The own bare JID.
    pub jid: String,
    /// The own device id, 1..2^31-1, fixed for the life of the store.
    pub device_id: u32,
    /// The Curve25519 identity secret key.
    pub identity_secret: Zeroizing<[u8; 32]>,
    /// The id the next generated one-time prekey gets (in either version).
    pub next_pre_key_id: u32,
}

/// A signed prekey of one protocol version with its signature and creation time.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPreKeyRecord {
    /// The protocol version it is published in.
    pub version: Version,
    /// Its id, unique within its version.
    pub id: u32,
    /// The Curve25519 secret key.
    pub secret: Zeroizing<[u8; 32]>,
    /// The identity's signature over its public key, as its version signs.
    pub signature: [u8; 64],
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// A one-time prekey of one protocol version.
#[derive(Clone, PartialEq, Eq)]
pub struct PreKeyRecord {
    /// The protocol version it is published in.
    pub version: Version,
    /// Its id, unique within its version.
    pub id: u32,
    /// The Curve25519 secret key.
    pub secret: Zeroizing<[u8; 32]>,
    /// Used while catching up with an archive: no longer published, but kept until the
    /// catch-up is over, so that a second key exchange naming it (the archive and the
    /// live copy, or two contacts that picked it) still reads.
    pub hidden: bool,
}

/// What is known of one remote (or own other) device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The bare JID the device belongs to.
    pub jid: String,
    /// The device id.
    pub device_id: u32,
    /// The owner's latest device lists (one per protocol version) that hold the device.
    pub listed: Versions,
    /// Its identity key (32 bytes) once seen in a bundle or key exchange.
    pub identity_key: Option<[u8; 32]>,
    /// The trust decision.
    pub trust: Trust,
    /// When the manager first saw it (on a device list or in a message), seconds since
    /// the Unix epoch; `None` for a device known before schema version 4, until its
    /// owner's list is read again.
    pub first_seen_at: Option<u64>,
    /// When it left the last of its owner's device lists it was on; `None` while listed
    /// (or when it left before schema version 4).
    pub left_lists_at: Option<u64>,
    /// When a message from it last decrypted, seconds since the Unix epoch (updated when
    /// it moved by a minute or more).
    pub last_message_at: Option<u64>,
    /// When its bundle last failed to fetch or verify.
    pub bundle_failed_at: Option<u64>,
    /// The versions whose bundle failed then (the device is not encrypted to in those
    /// until a retry works).
    pub bundle_failed: Versions,
    /// The label its OMEMO 2 list entry gives it, as published (not yet verified).
    pub label: Option<String>,
    /// The signature of `label` by the device's identity key, as published.
    pub label_signature: Option<Vec<u8>>,
}

/// How far an archive (XEP-0313) has been read: the archive id of the last message read,
/// and the time of reading (for when the server no longer knows the id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePosition {
    /// Seconds since the Unix epoch: messages archived before it were read.
    pub at: u64,
    /// The archive id (XEP-0359 stanza id) of the last message read, if known.
    pub last_id: Option<String>,
}

/// Everything one manager operation changes, committed in one transaction.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Writes and deletes, applied in order.
    pub ops: Vec<Op>,
}

/// One change in a [`Batch`].
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace the account record.
    PutAccount(AccountRecord),
    /// Create or replace a signed prekey.
    PutSignedPreKey(SignedPreKeyRecord),
    /// Delete a signed prekey.
    DeleteSignedPreKey {
        /// Its protocol version.
        version: Version,
        /// Its id.
        id: u32,
    },
    /// Create or replace a one-time prekey.
    PutPreKey(PreKeyRecord),
    /// Delete a one-time prekey.
    DeletePreKey {
        /// Its protocol version.
        version: Version,
        /// Its id.
        id: u32,
    },
    /// Create or replace a session (bytes from `Session::to_bytes`).
    PutSession {
        /// Bare JID of the remote device.
        jid: String,
        /// Its device id.
        device_id: u32,
        /// The protocol version of the session.
        version: Version,
        /// The serialized session.
        state: Zeroizing<Vec<u8>>,
    },
    /// Keep `state` as the session of `version` with a device that the current one
    /// replaced (`None` forgets it). The current session row must exist (put it first
    /// in the same batch).
    PutPreviousSession {
        /// Bare JID of the remote device.
        jid: String,
        /// Its device id.
        device_id: u32,
        /// The protocol version of the session.
        version: Version,
        /// The serialized session it replaced.
        state: Option<Zeroizing<Vec<u8>>>,
    },
    /// Delete a session (and the one it replaced).
    DeleteSession {
        /// Bare JID of the remote device.
        jid: String,
        /// Its device id.
        device_id: u32,
        /// The protocol version of the session.
        version: Version,
    },
    /// Create a device record, or update an existing one in every field but its trust
    /// (which only [`Op::SetTrust`] changes, so that a decision another process made is
    /// never written back over).
    PutDevice(DeviceRecord),
    /// Delete a device record and its sessions of every version (a device that left its
    /// owner's lists long ago).
    DeleteDevice {
        /// Bare JID of the device.
        jid: String,
        /// Its device id.
        device_id: u32,
    },
    /// Set the trust of an existing device record.
    SetTrust {
        /// Bare JID of the device.
        jid: String,
        /// Its device id.
        device_id: u32,
        /// The decision.
        trust: Trust,
    },
    /// Where the next catch-up with `archive` (the own bare JID, or a room's) starts.
    PutArchivePosition {
        /// The bare JID of the archive.
        archive: String,
        /// The position.
        position: ArchivePosition,
    },
    /// The real bare JID behind a nickname in a room (replacing what the nickname was
    /// before).
    PutRoomOccupant {
        /// The room's bare JID.
        room: String,
        /// The nickname.
        nick: String,
        /// The occupant's real bare JID.
        jid: String,
    },
}

impl Batch {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A store backend failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend reported an error (I/O, SQL, locking).
    #[error("store backend: {0}")]
    Backend(String),
    /// Stored data is not valid.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Another process runs a manager on this store file (two would reuse message keys
    /// and undo each other's sessions). Stop it first, or open the store with
    /// `SqliteStore::open_alongside` for a short administrative change.
    #[error("the store {path} is in use by another process")]
    InUse {
        /// The store file.
        path: String,
    },
    /// The store file is encrypted (or is not an SQLite database at all): open it with
    /// its passphrase (`SqliteStore::open_encrypted`, feature `encrypted-store`).
    #[error("the store {path} is encrypted (or is not a database): give its passphrase")]
    Encrypted {
        /// The store file.
        path: String,
    },
    /// A passphrase was given for a store that is not encrypted: it opens without one,
    /// and `SqliteStore::change_passphrase` encrypts it.
    #[error("the store {path} is not encrypted: open it without a passphrase, or encrypt it first")]
    NotEncrypted {
        /// The store file.
        path: String,
    },
    /// An empty passphrase for an encrypted store.
    #[error("the store passphrase is empty")]
    EmptyPassphrase,
    /// The passphrase does not open the encrypted store (or the file was damaged: an
    /// encrypted page that fails its check reads the same). Nothing was written.
    #[error("wrong passphrase for the encrypted store {path} (or the file is damaged)")]
    WrongPassphrase {
        /// The store file.
        path: String,
    },
    /// The store was written by a newer schema than this crate knows.
    #[error("store schema version {found} is newer than supported {supported}")]
    UnsupportedSchema {
        /// The version found.
        found: u32,
        /// The newest version this crate knows.
        supported: u32,
    },
}

/// Synchronous persistence for one account's OMEMO state. Reads are plain; every write
/// goes through [`Store::commit`], which applies a whole [`Batch`] or nothing.
pub trait Store {
    /// The account record, if the store was initialised.
    fn load_account(&self) -> Result<Option<AccountRecord>, StoreError>;
    /// All signed prekeys of both versions, oldest first (by creation time, then
    /// version, then id).
    fn load_signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError>;
    /// All one-time prekeys of both versions, by version, then ascending id.
    fn load_pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError>;
    /// The session of `version` with one device.
    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// The session of `version` with one device that the current one replaced, if kept
    /// ([`Op::PutPreviousSession`]). A store that keeps none returns `None`: then two
    /// devices that start sessions with each other at once heal by rebuilding instead.
    fn load_previous_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let _ = (jid, device_id, version);
        Ok(None)
    }
    /// The known devices of a bare JID, by ascending device id.
    fn load_devices(&self, jid: &str) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Where the next catch-up with `archive` starts ([`Op::PutArchivePosition`]);
    /// `None` when never written.
    fn load_archive_position(&self, archive: &str) -> Result<Option<ArchivePosition>, StoreError>;
    /// The nicknames seen in `room` with their real bare JIDs
    /// ([`Op::PutRoomOccupant`]), by nickname.
    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Applies every op of `batch` in one transaction, on disk when this returns
    /// (together with every deferred commit before it).
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError>;

    /// Applies every op of `batch` or none, at once for the loads, but maybe on disk
    /// only at the next [`Store::sync`]: group commit, the state of several messages in
    /// one disk write. The manager defers the commits of the sans-I/O calls and syncs
    /// before it hands out a stanza that depends on them. The default commits at once.
    fn commit_deferred(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.commit(batch)
    }

    /// Puts the deferred commits on disk. When it fails, they are all rolled back: the
    /// store holds the state of the last successful sync.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether another process (or connection) committed to the store since the last
    /// call: the manager then reloads what it keeps in memory (a trust decision made
    /// with a command-line tool reaches a running client). A store only one process
    /// uses keeps the default, `false`.
    fn changed_elsewhere(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

impl fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRecord")
            .field("jid", &self.jid)
            .field("device_id", &self.device_id)
            .field("next_pre_key_id", &self.next_pre_key_id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SignedPreKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKeyRecord")
            .field("version", &self.version)
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PreKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreKeyRecord")
            .field("version", &self.version)
            .field("id", &self.id)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PutAccount(r) => f.debug_tuple("PutAccount").field(r).finish(),
            Self::PutSignedPreKey(r) => f.debug_tuple("PutSignedPreKey").field(r).finish(),
            Self::DeleteSignedPreKey { version, id } => f
                .debug_struct("DeleteSignedPreKey")
                .field("version", version)
                .field("id", id)
                .finish(),
            Self::PutPreKey(r) => f.debug_tuple("PutPreKey").field(r).finish(),
            Self::DeletePreKey { version, id } => f
                .debug_struct("DeletePreKey")
                .field("version", version)
                .field("id", id)
                .finish(),
            Self::PutSession {
                jid,
                device_id,
                version,
                ..
            } => f
                .debug_struct("PutSession")
                .field("jid", jid)
                .field("device_id", device_id)
                .field("version", version)
                .finish_non_exhaustive(),
            Self::PutPreviousSession {
                jid,
                device_id,
                version,
                state,
            } => f
                .debug_struct("PutPreviousSession")
                .field("jid", jid)
                .field("device_id", device_id)
                .field("version", version)
                .field("kept", &state.is_some())
                .finish(),
            Self::DeleteSession {
                jid,
                device_id,
                version,
            } => f
                .debug_struct("DeleteSession")
                .field("jid", jid)
                .field("device_id", device_id)
                .field("version", version)
                .finish(),
            Self::PutDevice(r) => f.debug_tuple("PutDevice").field(r).finish(),
            Self::DeleteDevice { jid, device_id } => f
                .debug_struct("DeleteDevice")
                .field("jid", jid)
                .field("device_id", device_id)
                .finish(),
            Self::SetTrust {
                jid,
                device_id,
                trust,
            } => f
                .debug_struct("SetTrust")
                .field("jid", jid)
                .field("device_id", device_id)
                .field("trust", trust)
                .finish(),
            Self::PutArchivePosition { archive, position } => f
                .debug_struct("PutArchivePosition")
                .field("archive", archive)
                .field("position", position)
                .finish(),
            Self::PutRoomOccupant { room, nick, jid } => f
                .debug_struct("PutRoomOccupant")
                .field("room", room)
                .field("nick", nick)
                .field("jid", jid)
                .finish(),
        }
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("ops", &self.ops).finish()
    }
}
