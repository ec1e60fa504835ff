//! Device lists (own and others'), device activity, and trust decisions.

use minidom::Element;

use super::request::{Pending, Publication};
use super::{Manager, SkipReason};
use crate::Fingerprint;
use crate::error::ManagerError;
use crate::stanza;
use crate::store::{Batch, DeviceRecord, Op, Store, Trust};

/// What the manager knows of one device, for display and trust decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id.
    pub device_id: u32,
    /// Its fingerprint, once its identity key is known.
    pub fingerprint: Option<Fingerprint>,
    /// The trust decision.
    pub trust: Trust,
    /// Whether messages are encrypted to it (listed, bundle fine, not silent for long).
    pub active: bool,
}

impl<S: Store> Manager<S> {
    /// The records of `jid`'s devices, loaded from the store once.
    pub(super) fn device_records(
        &mut self,
        jid: &str,
    ) -> Result<&mut Vec<DeviceRecord>, ManagerError> {
        self.directory.records(&self.store, jid)
    }

    /// Why a device is not encrypted to, or `None` when it is active.
    pub(super) fn inactivity(&self, record: &DeviceRecord, now: u64) -> Option<SkipReason> {
        if !record.listed {
            Some(SkipReason::NotListed)
        } else if record.bundle_failed_at.is_some() {
            Some(SkipReason::BundleUnavailable)
        } else if record
            .last_message_at
            .is_some_and(|at| now.saturating_sub(at) > self.config.inactive_after_secs)
        {
            Some(SkipReason::Silent)
        } else {
            None
        }
    }

    /// The devices of `jid` (the own other devices for the own JID).
    pub fn devices(
        &mut self,
        jid: &jid::BareJid,
        now: u64,
    ) -> Result<Vec<DeviceInfo>, ManagerError> {
        let records = self.device_records(jid.as_str())?.clone();
        Ok(records
            .iter()
            .map(|r| DeviceInfo {
                device_id: r.device_id,
                fingerprint: r.identity_key.map(Fingerprint::from_bytes),
                trust: r.trust,
                active: self.inactivity(r, now).is_none(),
            })
            .collect())
    }

    /// Records a manual trust decision for a device.
    pub fn set_trust(
        &mut self,
        jid: &jid::BareJid,
        device_id: u32,
        trust: Trust,
    ) -> Result<(), ManagerError> {
        let unknown = || ManagerError::UnknownDevice {
            jid: jid.to_string(),
            device_id,
        };
        let mut record = self
            .device_records(jid.as_str())?
            .iter()
            .find(|r| r.device_id == device_id)
            .cloned()
            .ok_or_else(unknown)?;
        // A decision is about an identity key; without one it would be replaced by the
        // initial trust as soon as the key shows up.
        if record.identity_key.is_none() {
            return Err(ManagerError::NoIdentityKey {
                jid: jid.to_string(),
                device_id,
            });
        }
        record.trust = trust;
        self.store.commit(Batch {
            ops: vec![Op::PutDevice(record.clone())],
        })?;
        self.cache_device(record)
    }

    /// Puts a committed record into the cache (replacing the one with its id).
    pub(super) fn cache_device(&mut self, record: DeviceRecord) -> Result<(), ManagerError> {
        self.directory.cache(&self.store, record)
    }

    /// The trust a newly seen identity of `jid` gets.
    pub(super) fn initial_trust(&mut self, jid: &str) -> Result<Trust, ManagerError> {
        self.directory
            .initial_trust(&self.store, jid, self.config.trust_policy)
    }

    /// Queues a fetch of `jid`'s device list unless one is under way.
    pub(super) fn fetch_device_list(&mut self, jid: &str) {
        let pending = Pending::FetchDeviceList {
            jid: jid.to_owned(),
        };
        if !self.is_pending(&pending) {
            let to = jid.to_owned();
            self.queue(pending, |id| {
                stanza::fetch_items_iq(id, &to, stanza::legacy::DEVICE_LIST_NODE, None)
            });
        }
    }

    /// Handles a PEP notification (a `<message>` with a pubsub event). Returns `false`
    /// for events of other nodes.
    pub fn handle_event(&mut self, message: &Element, now: u64) -> Result<bool, ManagerError> {
        self.clock = self.clock.max(now);
        let Some(event) = stanza::parse_event(message) else {
            return Ok(false);
        };
        if event.node != stanza::legacy::DEVICE_LIST_NODE {
            return Ok(false);
        }
        self.device_list_fetched(&event.from, &event.payloads, now)?;
        Ok(true)
    }

    /// Applies a device list of `jid` (the union of all items of the node).
    pub(super) fn device_list_fetched(
        &mut self,
        jid: &str,
        payloads: &[Element],
        now: u64,
    ) -> Result<(), ManagerError> {
        let cap = self.config.max_devices_per_jid;
        let mut ids: Vec<u32> = Vec::new();
        for payload in payloads {
            // A broken item (stale clients leave many) does not spoil the others.
            match stanza::legacy::parse_device_list(payload, cap) {
                Ok(list) => ids.extend(list),
                Err(error) => tracing::warn!(%jid, %error, "device list item skipped"),
            }
        }
        ids.retain(|&id| id != 0);
        ids.sort_unstable();
        ids.dedup();
        let own = jid == self.own.jid;
        if ids.len() > cap {
            tracing::warn!(%jid, count = ids.len(), cap, "device list refused: too many devices");
            if !own {
                return Ok(());
            }
            ids.clear();
        }
        if own && !ids.contains(&self.own.device_id) {
            let mut with_self = ids.clone();
            with_self.push(self.own.device_id);
            with_self.sort_unstable();
            self.publish(Publication::DeviceList(with_self), true);
        }
        let own_device = self.own.device_id;
        let mut records = self.device_records(jid)?.clone();
        let mut changed = Vec::new();
        for record in records.iter_mut() {
            let listed = ids.contains(&record.device_id);
            if record.listed != listed {
                record.listed = listed;
                changed.push(record.clone());
            }
        }
        for &device_id in &ids {
            if (own && device_id == own_device) || records.iter().any(|r| r.device_id == device_id)
            {
                continue;
            }
            let record = new_device(jid, device_id, true);
            records.push(record.clone());
            changed.push(record);
        }
        records.sort_by_key(|r| r.device_id);
        if !changed.is_empty() {
            tracing::debug!(%jid, devices = ids.len(), changed = changed.len(), now, "device list updated");
            self.store.commit(Batch {
                ops: changed.into_iter().map(Op::PutDevice).collect(),
            })?;
        }
        // Committed: now memory.
        if self.directory.list_arrived(jid, records) {
            self.fetch_missing_bundles(jid, now)?;
        }
        Ok(())
    }
}

/// The record of a device seen for the first time: no identity key, no trust decision.
pub(super) fn new_device(jid: &str, device_id: u32, listed: bool) -> DeviceRecord {
    DeviceRecord {
        jid: jid.to_owned(),
        device_id,
        listed,
        identity_key: None,
        trust: Trust::Undecided,
        last_message_at: None,
        bundle_failed_at: None,
    }
}
