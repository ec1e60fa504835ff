//! The one test suite every [`Store`] backend passes.
//!
//! Each check is a function over `&mut S: Store` that starts from an empty store;
//! [`suite!`] runs all of them against a backend. The backends: [`MemoryStore`], an
//! in-memory [`SqliteStore`], and a [`SqliteStore`] on a temporary file.

#[cfg(feature = "sqlite")]
use std::path::{Path, PathBuf};
#[cfg(feature = "sqlite")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "sqlite")]
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

#[cfg(feature = "sqlite")]
use super::SqliteStore;
use super::{
    AccountRecord, ArchivePosition, Batch, DeviceRecord, MemoryStore, Op, PreKeyRecord,
    SignedPreKeyRecord, Store, StoreError, Trust,
};
use crate::version::{Version, Versions};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// A file path in the temp directory, unique to this process and call; the database
/// and its `-wal` and `-shm` files are removed on drop.
#[cfg(feature = "sqlite")]
pub(super) struct TempPath(PathBuf);

#[cfg(feature = "sqlite")]
impl TempPath {
    pub(super) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "omemo-store-test-{}-{}-{nanos}.sqlite3",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Self(std::env::temp_dir().join(name))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(feature = "sqlite")]
impl Drop for TempPath {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal", ".lock", ".rekeyed"] {
            let mut file = self.0.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A [`SqliteStore`] on a temporary file, deleted on drop.
#[cfg(feature = "sqlite")]
struct FileStore {
    // Declared first: the connection closes before the files are removed.
    store: SqliteStore,
    _path: TempPath,
}

#[cfg(feature = "sqlite")]
impl FileStore {
    fn new() -> Self {
        let path = TempPath::new();
        Self {
            store: SqliteStore::open(path.path()).unwrap(),
            _path: path,
        }
    }
}

#[cfg(feature = "sqlite")]
impl Store for FileStore {
    fn load_account(&self) -> Result<Option<AccountRecord>, StoreError> {
        self.store.load_account()
    }
    fn load_signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        self.store.load_signed_pre_keys()
    }
    fn load_pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        self.store.load_pre_keys()
    }
    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.store.load_session(jid, device_id, version)
    }
    fn load_devices(&self, jid: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        self.store.load_devices(jid)
    }
    fn load_archive_position(&self, archive: &str) -> Result<Option<ArchivePosition>, StoreError> {
        self.store.load_archive_position(archive)
    }
    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.store.load_room_occupants(room)
    }
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        self.store.commit(batch)
    }
}

pub(super) fn sample_account() -> AccountRecord {
    AccountRecord {
        jid: "romeo@montague.example".to_owned(),
        device_id: 1_234_567,
        identity_secret: Zeroizing::new([0x11; 32]),
        next_pre_key_id: 101,
    }
}

pub(super) fn sample_signed_pre_key(id: u32, created_at: u64) -> SignedPreKeyRecord {
    SignedPreKeyRecord {
        version: Version::Legacy,
        id,
        secret: Zeroizing::new([id as u8; 32]),
        signature: [0x5a; 64],
        created_at,
    }
}

fn pre_key(id: u32) -> PreKeyRecord {
    PreKeyRecord {
        version: Version::Legacy,
        id,
        secret: Zeroizing::new([id as u8 ^ 0xa5; 32]),
        hidden: false,
    }
}

pub(super) fn sample_device(jid: &str, device_id: u32) -> DeviceRecord {
    DeviceRecord {
        jid: jid.to_owned(),
        device_id,
        listed: Versions::only(Version::Legacy),
        identity_key: Some([device_id as u8; 32]),
        trust: Trust::Blind,
        first_seen_at: Some(1_600_000_000),
        left_lists_at: None,
        last_message_at: Some(1_700_000_000),
        bundle_failed_at: None,
        bundle_failed: Versions::NONE,
        label: None,
        label_signature: None,
    }
}

fn put_session(jid: &str, device_id: u32, state: &[u8]) -> Op {
    put_session_of(Version::Legacy, jid, device_id, state)
}

fn put_session_of(version: Version, jid: &str, device_id: u32, state: &[u8]) -> Op {
    Op::PutSession {
        jid: jid.to_owned(),
        device_id,
        version,
        state: Zeroizing::new(state.to_vec()),
    }
}

fn delete_session(jid: &str, device_id: u32) -> Op {
    Op::DeleteSession {
        jid: jid.to_owned(),
        device_id,
        version: Version::Legacy,
    }
}

fn delete_pre_key(id: u32) -> Op {
    Op::DeletePreKey {
        version: Version::Legacy,
        id,
    }
}

fn delete_signed_pre_key(id: u32) -> Op {
    Op::DeleteSignedPreKey {
        version: Version::Legacy,
        id,
    }
}

fn commit<S: Store>(store: &mut S, ops: Vec<Op>) {
    store.commit(Batch { ops }).unwrap();
}

fn session<S: Store>(store: &S, jid: &str, device_id: u32) -> Option<Vec<u8>> {
    session_of(store, Version::Legacy, jid, device_id)
}

fn session_of<S: Store>(store: &S, version: Version, jid: &str, device_id: u32) -> Option<Vec<u8>> {
    store
        .load_session(jid, device_id, version)
        .unwrap()
        .map(|state| state.to_vec())
}

fn device_ids<S: Store>(store: &S, jid: &str) -> Vec<u32> {
    store
        .load_devices(jid)
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect()
}

/// Everything a store holds for the jids and device ids the checks use.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    account: Option<AccountRecord>,
    signed_pre_keys: Vec<SignedPreKeyRecord>,
    pre_keys: Vec<PreKeyRecord>,
    sessions: Vec<(String, u32, Version, Vec<u8>)>,
    devices: Vec<DeviceRecord>,
}

fn snapshot<S: Store>(store: &S) -> Snapshot {
    let mut sessions = Vec::new();
    let mut devices = Vec::new();
    for jid in [ALICE, BOB] {
        for device_id in [1, 2, 3, 4, 5, u32::MAX] {
            for version in Version::ALL {
                if let Some(state) = session_of(store, version, jid, device_id) {
                    sessions.push((jid.to_owned(), device_id, version, state));
                }
            }
        }
        devices.extend(store.load_devices(jid).unwrap());
    }
    Snapshot {
        account: store.load_account().unwrap(),
        signed_pre_keys: store.load_signed_pre_keys().unwrap(),
        pre_keys: store.load_pre_keys().unwrap(),
        sessions,
        devices,
    }
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

pub(super) fn empty_store_loads_nothing<S: Store>(store: &mut S) {
    assert_eq!(store.load_account().unwrap(), None);
    assert!(store.load_signed_pre_keys().unwrap().is_empty());
    assert!(store.load_pre_keys().unwrap().is_empty());
    assert_eq!(session(store, ALICE, 1), None);
    assert!(store.load_devices(ALICE).unwrap().is_empty());
}

pub(super) fn empty_batch_commits_and_changes_nothing<S: Store>(store: &mut S) {
    commit(store, Vec::new());
    assert_eq!(store.load_account().unwrap(), None);
    commit(store, vec![Op::PutAccount(sample_account())]);
    let before = snapshot(store);
    commit(store, Vec::new());
    assert_eq!(snapshot(store), before);
}

pub(super) fn account_round_trips_and_put_replaces<S: Store>(store: &mut S) {
    let account = sample_account();
    commit(store, vec![Op::PutAccount(account.clone())]);
    assert_eq!(store.load_account().unwrap(), Some(account.clone()));

    let updated = AccountRecord {
        next_pre_key_id: 201,
        ..account
    };
    commit(store, vec![Op::PutAccount(updated.clone())]);
    assert_eq!(store.load_account().unwrap(), Some(updated));

    let extremes = AccountRecord {
        jid: "ünïcödé@例え.jp".to_owned(),
        device_id: i32::MAX as u32,
        identity_secret: Zeroizing::new([0xff; 32]),
        next_pre_key_id: u32::MAX,
    };
    commit(store, vec![Op::PutAccount(extremes.clone())]);
    assert_eq!(store.load_account().unwrap(), Some(extremes));
}

pub(super) fn signed_pre_keys_round_trip_oldest_first<S: Store>(store: &mut S) {
    let newest = sample_signed_pre_key(1, 3_000);
    let oldest = sample_signed_pre_key(2, 1_000);
    let middle = sample_signed_pre_key(3, 2_000);
    let same_time = sample_signed_pre_key(4, 2_000);
    commit(
        store,
        vec![
            Op::PutSignedPreKey(newest.clone()),
            Op::PutSignedPreKey(same_time.clone()),
            Op::PutSignedPreKey(oldest.clone()),
            Op::PutSignedPreKey(middle.clone()),
        ],
    );
    assert_eq!(
        store.load_signed_pre_keys().unwrap(),
        vec![
            oldest.clone(),
            middle.clone(),
            same_time.clone(),
            newest.clone()
        ]
    );

    let replaced = SignedPreKeyRecord {
        signature: [0x77; 64],
        created_at: 500,
        ..newest
    };
    commit(store, vec![Op::PutSignedPreKey(replaced.clone())]);
    assert_eq!(
        store.load_signed_pre_keys().unwrap(),
        vec![replaced.clone(), oldest.clone(), middle, same_time.clone()]
    );

    commit(store, vec![delete_signed_pre_key(3)]);
    assert_eq!(
        store.load_signed_pre_keys().unwrap(),
        vec![replaced, oldest, same_time]
    );

    let extremes = sample_signed_pre_key(u32::MAX, i64::MAX as u64);
    commit(store, vec![Op::PutSignedPreKey(extremes.clone())]);
    assert_eq!(
        store.load_signed_pre_keys().unwrap().last(),
        Some(&extremes)
    );
}

pub(super) fn pre_keys_round_trip_by_ascending_id<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            Op::PutPreKey(pre_key(30)),
            Op::PutPreKey(pre_key(0)),
            Op::PutPreKey(pre_key(u32::MAX)),
            Op::PutPreKey(pre_key(2)),
        ],
    );
    assert_eq!(
        store.load_pre_keys().unwrap(),
        vec![pre_key(0), pre_key(2), pre_key(30), pre_key(u32::MAX)]
    );

    // Replaced, and hidden (a key used during a catch-up).
    let replaced = PreKeyRecord {
        version: Version::Legacy,
        id: 30,
        secret: Zeroizing::new([0xee; 32]),
        hidden: true,
    };
    commit(store, vec![Op::PutPreKey(replaced.clone())]);
    assert_eq!(
        store.load_pre_keys().unwrap(),
        vec![pre_key(0), pre_key(2), replaced, pre_key(u32::MAX)]
    );

    commit(store, vec![delete_pre_key(2), delete_pre_key(u32::MAX)]);
    assert_eq!(
        store
            .load_pre_keys()
            .unwrap()
            .iter()
            .map(|k| k.id)
            .collect::<Vec<_>>(),
        [0, 30]
    );
}

pub(super) fn sessions_are_keyed_by_jid_and_device<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            put_session(ALICE, 1, b"alice one"),
            put_session(ALICE, 2, b"alice two"),
            put_session(BOB, 1, b"bob one"),
        ],
    );
    assert_eq!(session(store, ALICE, 1).as_deref(), Some(&b"alice one"[..]));
    assert_eq!(session(store, ALICE, 2).as_deref(), Some(&b"alice two"[..]));
    assert_eq!(session(store, BOB, 1).as_deref(), Some(&b"bob one"[..]));
    assert_eq!(session(store, BOB, 2), None);
    assert_eq!(session(store, "alice@example.org/phone", 1), None);

    // Put replaces only its own key.
    commit(store, vec![put_session(ALICE, 1, b"alice one, advanced")]);
    assert_eq!(
        session(store, ALICE, 1).as_deref(),
        Some(&b"alice one, advanced"[..])
    );
    assert_eq!(session(store, ALICE, 2).as_deref(), Some(&b"alice two"[..]));
    assert_eq!(session(store, BOB, 1).as_deref(), Some(&b"bob one"[..]));

    // Delete removes only its own key.
    commit(store, vec![delete_session(ALICE, 1)]);
    assert_eq!(session(store, ALICE, 1), None);
    assert_eq!(session(store, ALICE, 2).as_deref(), Some(&b"alice two"[..]));
    assert_eq!(session(store, BOB, 1).as_deref(), Some(&b"bob one"[..]));
}

pub(super) fn session_state_bytes_round_trip_exactly<S: Store>(store: &mut S) {
    let large: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    commit(
        store,
        vec![
            put_session(ALICE, u32::MAX, &large),
            put_session(ALICE, 1, &[]),
        ],
    );
    assert_eq!(session(store, ALICE, u32::MAX), Some(large));
    assert_eq!(session(store, ALICE, 1), Some(Vec::new()));
}

pub(super) fn devices_are_sorted_by_id_and_isolated_by_jid<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            Op::PutDevice(sample_device(ALICE, 300)),
            Op::PutDevice(sample_device(BOB, 2)),
            Op::PutDevice(sample_device(ALICE, u32::MAX)),
            Op::PutDevice(sample_device(ALICE, 1)),
            Op::PutDevice(sample_device(ALICE, 20)),
        ],
    );
    assert_eq!(device_ids(store, ALICE), [1, 20, 300, u32::MAX]);
    assert_eq!(
        store.load_devices(BOB).unwrap(),
        vec![sample_device(BOB, 2)]
    );
    assert!(store.load_devices("carol@example.org").unwrap().is_empty());
    assert_eq!(
        store.load_devices(ALICE).unwrap()[1],
        sample_device(ALICE, 20)
    );

    // Put replaces the whole record but its trust, and only its own; the trust changes
    // with SetTrust alone (a decision made elsewhere is never written back over).
    let replaced = DeviceRecord {
        listed: Versions::only(Version::Omemo2),
        label: Some("Laptop".to_owned()),
        label_signature: Some(vec![1; 64]),
        identity_key: None,
        trust: Trust::Distrusted,
        first_seen_at: Some(1_600_000_000),
        left_lists_at: None,
        last_message_at: None,
        bundle_failed_at: Some(1_800_000_000),
        bundle_failed: Versions::only(Version::Omemo2),
        ..sample_device(ALICE, 20)
    };
    commit(store, vec![Op::PutDevice(replaced.clone())]);
    let alice = store.load_devices(ALICE).unwrap();
    assert_eq!(alice.len(), 4);
    assert_eq!(
        alice[1],
        DeviceRecord {
            trust: sample_device(ALICE, 20).trust,
            ..replaced.clone()
        }
    );
    commit(
        store,
        vec![Op::SetTrust {
            jid: ALICE.to_owned(),
            device_id: 20,
            trust: Trust::Distrusted,
        }],
    );
    assert_eq!(store.load_devices(ALICE).unwrap()[1], replaced);
    // SetTrust of an unknown device changes nothing.
    commit(
        store,
        vec![Op::SetTrust {
            jid: "nobody@example.org".to_owned(),
            device_id: 20,
            trust: Trust::Verified,
        }],
    );
    assert!(store.load_devices("nobody@example.org").unwrap().is_empty());
    // DeleteDevice takes the record and its sessions of every version, and nothing else.
    commit(
        store,
        vec![
            put_session_of(Version::Legacy, ALICE, 20, b"legacy"),
            put_session_of(Version::Omemo2, ALICE, 20, b"omemo2"),
            put_session_of(Version::Omemo2, ALICE, 1, b"kept"),
            Op::DeleteDevice {
                jid: ALICE.to_owned(),
                device_id: 20,
            },
        ],
    );
    let alice = store.load_devices(ALICE).unwrap();
    assert!(alice.iter().all(|d| d.device_id != 20));
    assert_eq!(alice.len(), 3);
    for version in Version::ALL {
        assert!(store.load_session(ALICE, 20, version).unwrap().is_none());
    }
    assert!(
        store
            .load_session(ALICE, 1, Version::Omemo2)
            .unwrap()
            .is_some()
    );
    assert_eq!(alice[0], sample_device(ALICE, 1));
    assert_eq!(
        store.load_devices(BOB).unwrap(),
        vec![sample_device(BOB, 2)]
    );
}

pub(super) fn device_fields_round_trip_at_their_extremes<S: Store>(store: &mut S) {
    let none = DeviceRecord {
        jid: ALICE.to_owned(),
        device_id: 1,
        listed: Versions::NONE,
        identity_key: None,
        trust: Trust::Undecided,
        first_seen_at: None,
        left_lists_at: None,
        last_message_at: None,
        bundle_failed_at: None,
        bundle_failed: Versions::NONE,
        label: None,
        label_signature: None,
    };
    let full = DeviceRecord {
        jid: ALICE.to_owned(),
        device_id: u32::MAX,
        listed: Versions::BOTH,
        identity_key: Some([0xff; 32]),
        trust: Trust::Verified,
        first_seen_at: Some(i64::MAX as u64),
        left_lists_at: Some(i64::MAX as u64),
        last_message_at: Some(i64::MAX as u64),
        bundle_failed_at: Some(0),
        bundle_failed: Versions::BOTH,
        label: Some("ü".repeat(128)),
        label_signature: Some(vec![0xff; 64]),
    };
    commit(
        store,
        vec![Op::PutDevice(full.clone()), Op::PutDevice(none.clone())],
    );
    assert_eq!(store.load_devices(ALICE).unwrap(), vec![none, full]);
}

pub(super) fn every_trust_level_round_trips<S: Store>(store: &mut S) {
    let levels = [
        Trust::Undecided,
        Trust::Blind,
        Trust::Verified,
        Trust::Distrusted,
    ];
    let ops = levels
        .iter()
        .zip(1..)
        .map(|(&trust, device_id)| {
            Op::PutDevice(DeviceRecord {
                trust,
                ..sample_device(ALICE, device_id)
            })
        })
        .collect();
    commit(store, ops);
    let stored: Vec<Trust> = store
        .load_devices(ALICE)
        .unwrap()
        .iter()
        .map(|d| d.trust)
        .collect();
    assert_eq!(stored, levels);

    // And each level replaces any other (through SetTrust).
    commit(store, vec![Op::PutDevice(sample_device(BOB, 9))]);
    let set = |trust| Op::SetTrust {
        jid: BOB.to_owned(),
        device_id: 9,
        trust,
    };
    for (from, to) in levels.iter().zip(levels.iter().rev()) {
        commit(store, vec![set(*from)]);
        commit(store, vec![set(*to)]);
        assert_eq!(store.load_devices(BOB).unwrap()[0].trust, *to);
    }
}

pub(super) fn ops_apply_in_batch_order<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            put_session(ALICE, 1, b"first"),
            put_session(ALICE, 1, b"second"),
            put_session(ALICE, 2, b"doomed"),
            delete_session(ALICE, 2),
            delete_pre_key(5),
            Op::PutPreKey(pre_key(5)),
            Op::PutPreKey(pre_key(6)),
            delete_pre_key(6),
            Op::PutSignedPreKey(sample_signed_pre_key(1, 1)),
            delete_signed_pre_key(1),
            Op::PutSignedPreKey(sample_signed_pre_key(2, 2)),
        ],
    );
    assert_eq!(session(store, ALICE, 1).as_deref(), Some(&b"second"[..]));
    assert_eq!(session(store, ALICE, 2), None);
    assert_eq!(store.load_pre_keys().unwrap(), vec![pre_key(5)]);
    assert_eq!(
        store.load_signed_pre_keys().unwrap(),
        vec![sample_signed_pre_key(2, 2)]
    );
}

pub(super) fn deleting_what_is_absent_is_not_an_error<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            delete_signed_pre_key(1),
            delete_pre_key(1),
            delete_session(ALICE, 1),
            delete_session(ALICE, 0),
        ],
    );
    assert_eq!(snapshot(store), snapshot(&MemoryStore::new()));
}

/// Prekeys, signed prekeys and sessions of the two versions live side by side: the same
/// ids and the same device do not collide, and each is deleted on its own.
pub(super) fn versions_keep_keys_and_sessions_apart<S: Store>(store: &mut S) {
    let omemo2_signed = SignedPreKeyRecord {
        version: Version::Omemo2,
        signature: [0x22; 64],
        ..sample_signed_pre_key(1, 1_000)
    };
    let omemo2_pre_key = PreKeyRecord {
        version: Version::Omemo2,
        secret: Zeroizing::new([0x99; 32]),
        ..pre_key(7)
    };
    commit(
        store,
        vec![
            Op::PutSignedPreKey(sample_signed_pre_key(1, 1_000)),
            Op::PutSignedPreKey(omemo2_signed.clone()),
            Op::PutPreKey(omemo2_pre_key.clone()),
            Op::PutPreKey(pre_key(7)),
            put_session(ALICE, 1, b"legacy"),
            put_session_of(Version::Omemo2, ALICE, 1, b"omemo 2"),
        ],
    );
    assert_eq!(
        store.load_signed_pre_keys().unwrap(),
        vec![sample_signed_pre_key(1, 1_000), omemo2_signed.clone()]
    );
    assert_eq!(
        store.load_pre_keys().unwrap(),
        vec![pre_key(7), omemo2_pre_key.clone()]
    );
    assert_eq!(session(store, ALICE, 1).as_deref(), Some(&b"legacy"[..]));
    assert_eq!(
        session_of(store, Version::Omemo2, ALICE, 1).as_deref(),
        Some(&b"omemo 2"[..])
    );

    commit(
        store,
        vec![
            delete_signed_pre_key(1),
            delete_pre_key(7),
            delete_session(ALICE, 1),
        ],
    );
    assert_eq!(store.load_signed_pre_keys().unwrap(), vec![omemo2_signed]);
    assert_eq!(store.load_pre_keys().unwrap(), vec![omemo2_pre_key]);
    assert_eq!(session(store, ALICE, 1), None);
    assert_eq!(
        session_of(store, Version::Omemo2, ALICE, 1).as_deref(),
        Some(&b"omemo 2"[..])
    );
}

/// Ops every backend rejects: what the SQLite schema's constraints forbid.
fn invalid_ops() -> Vec<(&'static str, Op)> {
    vec![
        ("session with device id 0", put_session(ALICE, 0, b"x")),
        (
            "device with device id 0",
            Op::PutDevice(sample_device(ALICE, 0)),
        ),
        (
            "own device id 0",
            Op::PutAccount(AccountRecord {
                device_id: 0,
                ..sample_account()
            }),
        ),
        (
            "own device id above 2^31-1",
            Op::PutAccount(AccountRecord {
                device_id: 1 << 31,
                ..sample_account()
            }),
        ),
        (
            "device time beyond i64",
            Op::PutDevice(DeviceRecord {
                last_message_at: Some(u64::MAX),
                ..sample_device(ALICE, 3)
            }),
        ),
        (
            "device failure time beyond i64",
            Op::PutDevice(DeviceRecord {
                bundle_failed_at: Some(i64::MAX as u64 + 1),
                bundle_failed: Versions::NONE,
                ..sample_device(ALICE, 3)
            }),
        ),
        (
            "signed prekey time beyond i64",
            Op::PutSignedPreKey(sample_signed_pre_key(9, u64::MAX)),
        ),
        (
            "archive time beyond i64",
            Op::PutArchivePosition {
                archive: ALICE.to_owned(),
                position: ArchivePosition {
                    at: u64::MAX,
                    last_id: None,
                },
            },
        ),
    ]
}

/// How far each archive was read: nothing at first, then the latest put, per archive.
pub(super) fn archive_positions_are_kept_per_archive<S: Store>(store: &mut S) {
    assert_eq!(store.load_archive_position(ALICE).unwrap(), None);
    let position = |at: u64, last_id: Option<&str>| ArchivePosition {
        at,
        last_id: last_id.map(str::to_owned),
    };
    let put = |archive: &str, position: ArchivePosition| Op::PutArchivePosition {
        archive: archive.to_owned(),
        position,
    };
    commit(
        store,
        vec![
            put(ALICE, position(100, Some("A1"))),
            put(BOB, position(5, None)),
            put(ALICE, position(200, Some("A9"))),
        ],
    );
    assert_eq!(
        store.load_archive_position(ALICE).unwrap(),
        Some(position(200, Some("A9")))
    );
    assert_eq!(
        store.load_archive_position(BOB).unwrap(),
        Some(position(5, None))
    );
    commit(store, vec![put(ALICE, position(i64::MAX as u64, None))]);
    assert_eq!(
        store.load_archive_position(ALICE).unwrap(),
        Some(position(i64::MAX as u64, None))
    );
    assert_eq!(
        store.load_archive_position("room@muc.example").unwrap(),
        None
    );
}

/// The real JIDs behind a room's nicknames: by nickname, a put replacing, per room.
pub(super) fn room_occupants_are_kept_per_room_and_nickname<S: Store>(store: &mut S) {
    const ROOM: &str = "room@muc.example";
    assert_eq!(store.load_room_occupants(ROOM).unwrap(), vec![]);
    let put = |room: &str, nick: &str, jid: &str| Op::PutRoomOccupant {
        room: room.to_owned(),
        nick: nick.to_owned(),
        jid: jid.to_owned(),
    };
    commit(
        store,
        vec![
            put(ROOM, "bob", BOB),
            put(ROOM, "alice", ALICE),
            put("other@muc.example", "bob", ALICE),
            put(ROOM, "bob", "robert@example.org"),
        ],
    );
    let pair = |nick: &str, jid: &str| (nick.to_owned(), jid.to_owned());
    assert_eq!(
        store.load_room_occupants(ROOM).unwrap(),
        vec![pair("alice", ALICE), pair("bob", "robert@example.org")]
    );
    assert_eq!(
        store.load_room_occupants("other@muc.example").unwrap(),
        vec![pair("bob", ALICE)]
    );
}

/// A batch that fails at its last op leaves nothing of its earlier ops behind, and the
/// store stays usable.
pub(super) fn failed_batch_changes_nothing<S: Store>(store: &mut S) {
    commit(
        store,
        vec![
            Op::PutAccount(sample_account()),
            Op::PutSignedPreKey(sample_signed_pre_key(1, 100)),
            Op::PutPreKey(pre_key(1)),
            Op::PutPreKey(pre_key(2)),
            put_session(ALICE, 1, b"before"),
            put_session(BOB, 1, b"bob before"),
            Op::PutDevice(sample_device(ALICE, 1)),
        ],
    );
    let before = snapshot(store);

    for (what, invalid) in invalid_ops() {
        let batch = Batch {
            ops: vec![
                Op::PutAccount(AccountRecord {
                    next_pre_key_id: 999,
                    ..sample_account()
                }),
                Op::PutSignedPreKey(sample_signed_pre_key(2, 200)),
                delete_signed_pre_key(1),
                delete_pre_key(1),
                Op::PutPreKey(pre_key(3)),
                put_session(ALICE, 1, b"after"),
                put_session(ALICE, 2, b"new"),
                delete_session(BOB, 1),
                Op::PutDevice(DeviceRecord {
                    trust: Trust::Verified,
                    ..sample_device(ALICE, 1)
                }),
                Op::PutDevice(sample_device(ALICE, 2)),
                invalid,
            ],
        };
        match store.commit(batch) {
            Err(StoreError::Backend(_)) => {}
            other => panic!("{what}: expected a backend error, got {other:?}"),
        }
        assert_eq!(
            snapshot(store),
            before,
            "{what}: part of the failed batch was applied"
        );
    }

    commit(store, vec![put_session(ALICE, 1, b"after")]);
    assert_eq!(session(store, ALICE, 1).as_deref(), Some(&b"after"[..]));
}

/// Runs every check against the store that `$make` builds, one `#[test]` per check.
macro_rules! suite {
    ($backend:ident, $make:expr) => {
        suite!(@tests $backend, $make, [
            empty_store_loads_nothing,
            empty_batch_commits_and_changes_nothing,
            account_round_trips_and_put_replaces,
            signed_pre_keys_round_trip_oldest_first,
            pre_keys_round_trip_by_ascending_id,
            sessions_are_keyed_by_jid_and_device,
            session_state_bytes_round_trip_exactly,
            devices_are_sorted_by_id_and_isolated_by_jid,
            device_fields_round_trip_at_their_extremes,
            every_trust_level_round_trips,
            ops_apply_in_batch_order,
            deleting_what_is_absent_is_not_an_error,
            versions_keep_keys_and_sessions_apart,
            failed_batch_changes_nothing,
            archive_positions_are_kept_per_archive,
            room_occupants_are_kept_per_room_and_nickname,
        ]);
    };
    (@tests $backend:ident, $make:expr, [$($check:ident),* $(,)?]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    let mut store = $make;
                    super::$check(&mut store);
                }
            )*
        }
    };
}

suite!(memory, MemoryStore::new());
#[cfg(feature = "sqlite")]
suite!(sqlite_in_memory, SqliteStore::open_in_memory().unwrap());
#[cfg(feature = "sqlite")]
suite!(sqlite_file, FileStore::new());
