//! The devices of every JID the manager has dealt with: their records (activity, identity
//! key, trust) loaded from the store once and kept in step with it, which JIDs' device
//! lists arrived, and which JIDs' bundles are wanted as soon as their list arrives.

use std::collections::{HashMap, HashSet, VecDeque};

use super::TrustPolicy;
use crate::error::ManagerError;
use crate::store::{DeviceRecord, Store, Trust};
use crate::version::{Version, Versions};

/// The device directory.
#[derive(Default)]
pub(super) struct DeviceDirectory {
    /// Records by bare JID, ordered by device id.
    devices: HashMap<String, Vec<DeviceRecord>>,
    /// JIDs whose bundles are fetched as soon as their device list arrives.
    wanted: HashSet<String>,
    /// The device lists (JID, version) answered since the manager was opened.
    known_lists: HashSet<(String, Version)>,
    /// When each session (JID, device, version) was last rebuilt to heal it.
    rebuilt: HashMap<(String, u32, Version), u64>,
    /// When sessions started by others' key exchanges were built, per JID, within the
    /// last hour.
    new_sessions: HashMap<String, VecDeque<u64>>,
    /// Device lists (device `None`) and bundles whose fetch the server refused because
    /// the owner shows them to subscribed contacts only, since the manager was opened.
    hidden: HashSet<(String, Option<u32>)>,
}

/// The window of [`DeviceDirectory::new_session_allowed`].
const HOUR: u64 = 3600;

impl DeviceDirectory {
    /// The records of `jid`'s devices, loaded from `store` once.
    pub(super) fn records(
        &mut self,
        store: &impl Store,
        jid: &str,
    ) -> Result<&mut Vec<DeviceRecord>, ManagerError> {
        if !self.devices.contains_key(jid) {
            let records = store.load_devices(jid)?;
            self.devices.insert(jid.to_owned(), records);
        }
        Ok(self.devices.entry(jid.to_owned()).or_default())
    }

    /// Puts a committed record in (replacing the one with its id).
    pub(super) fn cache(
        &mut self,
        store: &impl Store,
        record: DeviceRecord,
    ) -> Result<(), ManagerError> {
        let records = self.records(store, &record.jid.clone())?;
        match records.iter().position(|r| r.device_id == record.device_id) {
            Some(i) => records[i] = record,
            None => {
                records.push(record);
                records.sort_by_key(|r| r.device_id);
            }
        }
        Ok(())
    }

    /// The trust a newly seen identity of `jid` gets under `policy`: blind trust before
    /// verification as long as no device of `jid` has a manual decision.
    pub(super) fn initial_trust(
        &mut self,
        store: &impl Store,
        jid: &str,
        policy: TrustPolicy,
    ) -> Result<Trust, ManagerError> {
        if policy == TrustPolicy::Manual {
            return Ok(Trust::Undecided);
        }
        let manual = self
            .records(store, jid)?
            .iter()
            .any(|r| matches!(r.trust, Trust::Verified | Trust::Distrusted));
        Ok(if manual {
            Trust::Undecided
        } else {
            Trust::Blind
        })
    }

    /// Notes that `jid`'s device list of `version` was answered, taking the committed
    /// records it changed (`None` when the fetch failed and nothing changed). `true`
    /// when its bundles were wanted and the lists of every version in `versions` are now
    /// answered: the bundles are due (and no longer wanted).
    pub(super) fn list_answered(
        &mut self,
        jid: &str,
        version: Version,
        records: Option<Vec<DeviceRecord>>,
        versions: Versions,
    ) -> bool {
        if let Some(records) = records {
            self.devices.insert(jid.to_owned(), records);
        }
        self.known_lists.insert((jid.to_owned(), version));
        self.has_lists(jid, versions) && self.wanted.remove(jid)
    }

    /// Whether `jid`'s device list of `version` was answered since the manager was
    /// opened.
    pub(super) fn has_list(&self, jid: &str, version: Version) -> bool {
        self.known_lists.contains(&(jid.to_owned(), version))
    }

    /// Forgets that `jid`'s device lists were answered, so that they are fetched again.
    pub(super) fn forget_lists(&mut self, jid: &str) {
        self.known_lists.retain(|(listed, _)| listed != jid);
    }

    /// Whether `jid`'s device lists of all `versions` were answered.
    pub(super) fn has_lists(&self, jid: &str, versions: Versions) -> bool {
        versions.iter().all(|v| self.has_list(jid, v))
    }

    /// Asks for `jid`'s bundles as soon as its device list arrives.
    pub(super) fn want_bundles(&mut self, jid: &str) {
        self.wanted.insert(jid.to_owned());
    }

    /// Whether the session with `device_id` of `jid` in `version` may be rebuilt at `now`
    /// (not rebuilt in the last `every` seconds); if so, notes the rebuild.
    pub(super) fn rebuild_due(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
        now: u64,
        every: u64,
    ) -> bool {
        let key = (jid.to_owned(), device_id, version);
        if self
            .rebuilt
            .get(&key)
            .is_some_and(|at| now.saturating_sub(*at) < every)
        {
            return false;
        }
        self.rebuilt.insert(key, now);
        true
    }

    /// Whether a key exchange from `jid` may build a new session at `now`: fewer than
    /// `per_hour` were built in the last hour.
    pub(super) fn new_session_allowed(&mut self, jid: &str, now: u64, per_hour: u32) -> bool {
        let Some(times) = self.new_sessions.get_mut(jid) else {
            return per_hour > 0;
        };
        while times
            .front()
            .is_some_and(|at| now.saturating_sub(*at) >= HOUR)
        {
            times.pop_front();
        }
        if times.is_empty() {
            self.new_sessions.remove(jid);
            return per_hour > 0;
        }
        times.len() < per_hour as usize
    }

    /// Notes a session built from `jid`'s key exchange at `now`.
    pub(super) fn note_new_session(&mut self, jid: &str, now: u64) {
        self.new_sessions
            .entry(jid.to_owned())
            .or_default()
            .push_back(now);
    }

    /// Notes whether the server refused to show `jid`'s device list (`device` `None`) or
    /// the bundle of one device for lack of a presence subscription.
    pub(super) fn note_hidden(&mut self, jid: &str, device: Option<u32>, hidden: bool) {
        let key = (jid.to_owned(), device);
        if hidden {
            self.hidden.insert(key);
        } else {
            self.hidden.remove(&key);
        }
    }

    /// Whether the last fetch of `jid`'s device list (`device` `None`) or of a device's
    /// bundle was refused for lack of a presence subscription.
    pub(super) fn is_hidden(&self, jid: &str, device: Option<u32>) -> bool {
        self.hidden.contains(&(jid.to_owned(), device))
    }

    /// Drops the cached records (another process may have changed the store).
    pub(super) fn forget_records(&mut self) {
        self.devices.clear();
    }
}
