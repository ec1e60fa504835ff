//! [`MemoryStore`]: the whole state in maps, for tests and for embedders that persist
//! elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use zeroize::Zeroizing;

use super::{
    AccountRecord, ArchivePosition, Batch, DeviceRecord, Op, PreKeyRecord, SignedPreKeyRecord,
    Store, StoreError,
};
use crate::version::Version;

/// Largest own device id (XEP-0384: 1..2^31-1).
const MAX_OWN_DEVICE_ID: u32 = i32::MAX as u32;

/// The serialized sessions with one JID's devices, by device id and version.
type SessionsOfJid = HashMap<(u32, Version), Zeroizing<Vec<u8>>>;

/// A [`Store`] that keeps everything in memory and forgets it on drop.
///
/// It rejects exactly the records that [`SqliteStore`](super::SqliteStore) rejects
/// (device id 0, an own device id above 2^31-1, a time beyond `i64::MAX` seconds), and it
/// checks a whole batch before applying any of it, so a failing commit changes nothing.
#[derive(Clone, Default)]
pub struct MemoryStore {
    account: Option<AccountRecord>,
    /// Signed prekeys by (version, id).
    signed_pre_keys: BTreeMap<(Version, u32), SignedPreKeyRecord>,
    /// One-time prekeys by (version, id), the order `load_pre_keys` returns them in.
    pre_keys: BTreeMap<(Version, u32), PreKeyRecord>,
    /// Sessions by bare JID, then device id and version.
    sessions: HashMap<String, SessionsOfJid>,
    /// The sessions the current ones replaced, by (bare JID, device id, version).
    previous_sessions: HashMap<(String, u32, Version), Zeroizing<Vec<u8>>>,
    /// Devices by bare JID, then device id (ordered, as `load_devices` returns them).
    devices: HashMap<String, BTreeMap<u32, DeviceRecord>>,
    /// How far each archive has been read, by its bare JID.
    archives: HashMap<String, ArchivePosition>,
    /// Real JIDs by room, then nickname.
    rooms: HashMap<String, BTreeMap<String, String>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one op that [`check`] accepted; cannot fail.
    fn apply(&mut self, op: Op) {
        match op {
            Op::PutAccount(record) => self.account = Some(record),
            Op::PutSignedPreKey(record) => {
                self.signed_pre_keys
                    .insert((record.version, record.id), record);
            }
            Op::DeleteSignedPreKey { version, id } => {
                self.signed_pre_keys.remove(&(version, id));
            }
            Op::PutPreKey(record) => {
                self.pre_keys.insert((record.version, record.id), record);
            }
            Op::DeletePreKey { version, id } => {
                self.pre_keys.remove(&(version, id));
            }
            Op::PutSession {
                jid,
                device_id,
                version,
                state,
            } => {
                self.sessions
                    .entry(jid)
                    .or_default()
                    .insert((device_id, version), state);
            }
            Op::PutPreviousSession {
                jid,
                device_id,
                version,
                state,
            } => {
                let current = self
                    .sessions
                    .get(&jid)
                    .is_some_and(|by_device| by_device.contains_key(&(device_id, version)));
                let key = (jid, device_id, version);
                match state {
                    Some(state) if current => {
                        self.previous_sessions.insert(key, state);
                    }
                    _ => {
                        self.previous_sessions.remove(&key);
                    }
                }
            }
            Op::DeleteSession {
                jid,
                device_id,
                version,
            } => {
                self.previous_sessions
                    .remove(&(jid.clone(), device_id, version));
                if let Some(by_device) = self.sessions.get_mut(&jid) {
                    by_device.remove(&(device_id, version));
                    if by_device.is_empty() {
                        self.sessions.remove(&jid);
                    }
                }
            }
            Op::DeleteDevice { jid, device_id } => {
                self.previous_sessions
                    .retain(|(j, id, _), _| !(*j == jid && *id == device_id));
                if let Some(by_device) = self.sessions.get_mut(&jid) {
                    by_device.retain(|(id, _), _| *id != device_id);
                    if by_device.is_empty() {
                        self.sessions.remove(&jid);
                    }
                }
                if let Some(devices) = self.devices.get_mut(&jid) {
                    devices.remove(&device_id);
                    if devices.is_empty() {
                        self.devices.remove(&jid);
                    }
                }
            }
            Op::PutDevice(mut record) => {
                let devices = self.devices.entry(record.jid.clone()).or_default();
                if let Some(existing) = devices.get(&record.device_id) {
                    record.trust = existing.trust;
                }
                devices.insert(record.device_id, record);
            }
            Op::SetTrust {
                jid,
                device_id,
                trust,
            } => {
                if let Some(record) = self
                    .devices
                    .get_mut(&jid)
                    .and_then(|devices| devices.get_mut(&device_id))
                {
                    record.trust = trust;
                }
            }
            Op::PutArchivePosition { archive, position } => {
                self.archives.insert(archive, position);
            }
            Op::PutRoomOccupant { room, nick, jid } => {
                self.rooms.entry(room).or_default().insert(nick, jid);
            }
        }
    }
}

/// Rejects what the SQLite schema's constraints reject, so both backends agree.
fn check(op: &Op) -> Result<(), StoreError> {
    match op {
        Op::PutAccount(record) => {
            if record.device_id == 0 || record.device_id > MAX_OWN_DEVICE_ID {
                return Err(StoreError::Backend(format!(
                    "own device id must be in 1..={MAX_OWN_DEVICE_ID}, got {}",
                    record.device_id
                )));
            }
        }
        Op::PutSignedPreKey(record) => {
            check_time("signed prekey created_at", Some(record.created_at))?
        }
        Op::PutSession { device_id, .. } | Op::PutPreviousSession { device_id, .. } => {
            check_device_id(*device_id)?
        }
        Op::PutDevice(record) => {
            check_device_id(record.device_id)?;
            check_time("device last_message_at", record.last_message_at)?;
            check_time("device bundle_failed_at", record.bundle_failed_at)?;
        }
        Op::SetTrust { device_id, .. } | Op::DeleteDevice { device_id, .. } => {
            check_device_id(*device_id)?
        }
        Op::PutArchivePosition { position, .. } => {
            check_time("archive position time", Some(position.at))?
        }
        Op::PutRoomOccupant { .. }
        | Op::DeleteSignedPreKey { .. }
        | Op::PutPreKey(_)
        | Op::DeletePreKey { .. }
        | Op::DeleteSession { .. } => {}
    }
    Ok(())
}

fn check_device_id(device_id: u32) -> Result<(), StoreError> {
    if device_id == 0 {
        return Err(StoreError::Backend("device id must not be 0".to_owned()));
    }
    Ok(())
}

fn check_time(what: &str, time: Option<u64>) -> Result<(), StoreError> {
    match time {
        Some(t) if i64::try_from(t).is_err() => Err(StoreError::Backend(format!(
            "{what} {t} is beyond the storable range"
        ))),
        _ => Ok(()),
    }
}

impl Store for MemoryStore {
    fn load_account(&self) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.account.clone())
    }

    fn load_signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        let mut keys: Vec<_> = self.signed_pre_keys.values().cloned().collect();
        // Already by (version, id); a stable sort makes it by (created_at, version, id).
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    fn load_pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        Ok(self.pre_keys.values().cloned().collect())
    }

    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self
            .sessions
            .get(jid)
            .and_then(|by_device| by_device.get(&(device_id, version)))
            .cloned())
    }

    fn load_previous_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self
            .previous_sessions
            .get(&(jid.to_owned(), device_id, version))
            .cloned())
    }

    fn load_devices(&self, jid: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        Ok(self
            .devices
            .get(jid)
            .map(|by_id| by_id.values().cloned().collect())
            .unwrap_or_default())
    }

    fn load_archive_position(&self, archive: &str) -> Result<Option<ArchivePosition>, StoreError> {
        Ok(self.archives.get(archive).cloned())
    }

    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .rooms
            .get(room)
            .map(|nicks| nicks.iter().map(|(n, j)| (n.clone(), j.clone())).collect())
            .unwrap_or_default())
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        // Check everything first: applying cannot fail, so the batch lands whole or not at all.
        batch.ops.iter().try_for_each(check)?;
        for op in batch.ops {
            self.apply(op);
        }
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("account", &self.account)
            .field("signed_pre_keys", &self.signed_pre_keys.len())
            .field("pre_keys", &self.pre_keys.len())
            .field(
                "sessions",
                &self.sessions.values().map(HashMap::len).sum::<usize>(),
            )
            .field(
                "devices",
                &self.devices.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}
