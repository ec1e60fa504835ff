//! The sessions with other devices in memory: loaded from the store on first use, kept
//! up to date by the manager after each commit, and dropped when a commit failed so that
//! the stored state rules.

use std::collections::HashMap;

use crate::error::ManagerError;
use crate::ratchet::{RatchetLimits, Session};
use crate::store::Store;
use crate::version::Version;

/// The sessions by (bare JID, device id, protocol version), every one with the manager's
/// skip limits.
pub(super) struct SessionCache {
    sessions: HashMap<(String, u32, Version), Session>,
    limits: RatchetLimits,
}

impl SessionCache {
    pub(super) fn new(limits: RatchetLimits) -> Self {
        Self {
            sessions: HashMap::new(),
            limits,
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
        Ok(self.sessions.get_mut(&key))
    }

    /// Keeps `session` (committed to the store) as the one of its version with
    /// `device_id` of `jid`.
    pub(super) fn insert(&mut self, jid: &str, device_id: u32, mut session: Session) {
        session.set_limits(self.limits);
        let key = (jid.to_owned(), device_id, session.version());
        self.sessions.insert(key, session);
    }

    /// Forgets the session of `version` with `device_id` of `jid` (its stored state
    /// rules).
    pub(super) fn forget(&mut self, jid: &str, device_id: u32, version: Version) {
        self.sessions.remove(&(jid.to_owned(), device_id, version));
    }

    /// Forgets every session.
    pub(super) fn clear(&mut self) {
        self.sessions.clear();
    }
}
