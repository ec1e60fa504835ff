//! The sessions with other devices in memory: loaded from the store on first use, kept
//! up to date by the manager after each commit, dropped when a commit failed so that the
//! stored state rules, and bounded: past its capacity the least recently used session
//! goes (it is in the store, and comes back on its next use). Beside it, the tally of
//! skipped message keys per JID that bounds them.

use std::collections::{BTreeMap, HashMap};

use crate::consts::MAX_PREVIOUS_SESSIONS;
use crate::error::ManagerError;
use crate::ratchet::{RatchetLimits, Session};
use crate::store::{Op, Store};
use crate::version::Version;

type Key = (String, u32, Version);

/// The sessions by (bare JID, device id, protocol version), every one with the manager's
/// skip limits, each with the tick of its last use; `by_use` orders them by that tick, so
/// the least recently used one is found without a scan.
pub(super) struct SessionCache {
    sessions: HashMap<Key, (Session, u64)>,
    by_use: BTreeMap<u64, Key>,
    limits: RatchetLimits,
    capacity: usize,
    tick: u64,
}

impl SessionCache {
    pub(super) fn new(limits: RatchetLimits, capacity: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            by_use: BTreeMap::new(),
            limits,
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    /// The session of `version` with `device_id` of `jid`, from memory or `store`.
    pub(super) fn get(
        &mut self,
        store: &impl Store,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<&mut Session>, ManagerError> {
        let key = (jid.to_owned(), device_id, version);
        if !self.sessions.contains_key(&key) {
            let Some(bytes) = store.load_session(jid, device_id, version)? else {
                return Ok(None);
            };
            let session = Session::from_bytes(&bytes)?;
            self.insert(jid, device_id, session);
        }
        self.tick += 1;
        let tick = self.tick;
        let Some((session, used)) = self.sessions.get_mut(&key) else {
            return Ok(None);
        };
        let key = self.by_use.remove(used).unwrap_or(key);
        *used = tick;
        self.by_use.insert(tick, key);
        Ok(Some(session))
    }

    /// Keeps `session` (committed to the store) as the one of its version with
    /// `device_id` of `jid`, making room by dropping the least recently used one.
    pub(super) fn insert(&mut self, jid: &str, device_id: u32, mut session: Session) {
        session.set_limits(self.limits);
        let key = (jid.to_owned(), device_id, session.version());
        if !self.sessions.contains_key(&key)
            && self.sessions.len() >= self.capacity
            && let Some((_, oldest)) = self.by_use.pop_first()
        {
            self.sessions.remove(&oldest);
        }
        self.tick += 1;
        self.by_use.insert(self.tick, key.clone());
        if let Some((_, used)) = self.sessions.insert(key, (session, self.tick)) {
            self.by_use.remove(&used);
        }
        debug_assert_eq!(self.sessions.len(), self.by_use.len());
    }

    /// Forgets the session of `version` with `device_id` of `jid` (its stored state
    /// rules).
    pub(super) fn forget(&mut self, jid: &str, device_id: u32, version: Version) {
        if let Some((_, used)) = self.sessions.remove(&(jid.to_owned(), device_id, version)) {
            self.by_use.remove(&used);
        }
    }

    /// Forgets every session.
    pub(super) fn clear(&mut self) {
        self.sessions.clear();
        self.by_use.clear();
    }

    /// Sessions in memory.
    pub(super) fn len(&self) -> usize {
        self.sessions.len()
    }
}

/// The skipped message keys `sessions` hold together.
pub(super) fn skipped_keys_of(sessions: &[Session]) -> usize {
    sessions.iter().map(Session::skipped_key_count).sum()
}

/// The op that stores `previous` (newest first, at most [`MAX_PREVIOUS_SESSIONS`]) as the
/// sessions of `version` with `device_id` of `jid` that its current one replaced.
pub(super) fn previous_sessions_op(
    jid: &str,
    device_id: u32,
    version: Version,
    previous: &[Session],
) -> Op {
    let kept = &previous[..previous.len().min(MAX_PREVIOUS_SESSIONS)];
    Op::PutPreviousSession {
        jid: jid.to_owned(),
        device_id,
        version,
        state: (!kept.is_empty()).then(|| Session::list_to_bytes(kept)),
    }
}

/// Which of a device's sessions of one version: the current one, or (together) those it
/// replaced.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Slot {
    Current,
    Previous,
}

/// The skipped message keys held by the sessions with each JID's devices, for
/// [`ManagerConfig::max_skipped_keys_per_jid`](super::ManagerConfig::max_skipped_keys_per_jid).
/// A JID is counted from the store the first time one of its messages leaves skipped
/// keys, then kept up to date after each commit.
#[derive(Default)]
pub(super) struct SkippedKeyTally {
    by_jid: HashMap<String, HashMap<(u32, Version, Slot), usize>>,
}

impl SkippedKeyTally {
    /// Whether `jid` is counted.
    pub(super) fn counts(&self, jid: &str) -> bool {
        self.by_jid.contains_key(jid)
    }

    /// The keys held by the sessions of `jid` (whose devices are `device_ids`) except
    /// those in the `excluded` slots, counting the JID from `store` first if needed.
    pub(super) fn held_except(
        &mut self,
        store: &impl Store,
        jid: &str,
        device_ids: &[u32],
        excluded: &[(u32, Version, Slot)],
    ) -> Result<usize, ManagerError> {
        if !self.by_jid.contains_key(jid) {
            let mut counts = HashMap::new();
            for &device_id in device_ids {
                for version in Version::ALL {
                    for slot in [Slot::Current, Slot::Previous] {
                        let bytes = match slot {
                            Slot::Current => store.load_session(jid, device_id, version)?,
                            Slot::Previous => {
                                store.load_previous_session(jid, device_id, version)?
                            }
                        };
                        // An unreadable session is skipped when used; it holds no keys.
                        let held = bytes.map_or(0, |bytes| {
                            skipped_keys_of(&Session::list_from_bytes(&bytes))
                        });
                        if held > 0 {
                            counts.insert((device_id, version, slot), held);
                        }
                    }
                }
            }
            self.by_jid.insert(jid.to_owned(), counts);
        }
        Ok(self.by_jid.get(jid).map_or(0, |counts| {
            counts
                .iter()
                .filter(|(slot, _)| !excluded.contains(slot))
                .map(|(_, held)| held)
                .sum()
        }))
    }

    /// The keys a committed session now holds (for a JID that is counted).
    pub(super) fn record(&mut self, jid: &str, slot: (u32, Version, Slot), held: usize) {
        if let Some(counts) = self.by_jid.get_mut(jid) {
            if held == 0 {
                counts.remove(&slot);
            } else {
                counts.insert(slot, held);
            }
        }
    }

    /// Forgets the counts of `jid` (its sessions moved between slots).
    pub(super) fn forget(&mut self, jid: &str) {
        self.by_jid.remove(jid);
    }

    /// Forgets every count (the store changed elsewhere).
    pub(super) fn clear(&mut self) {
        self.by_jid.clear();
    }
}
