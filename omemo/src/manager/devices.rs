//! Device lists (own and others', of both versions), device activity, and trust
//! decisions.

use minidom::Element;

use super::events::Event;
use super::request::{Pending, Publication};
use super::{Manager, SkipReason};
use crate::error::ManagerError;
use crate::stanza::omemo2::{self, ListedDevice};
use crate::stanza::{self, legacy};
use crate::store::{Batch, DeviceRecord, Op, Store, Trust};
use crate::version::{Version, Versions};
use crate::{Fingerprint, VerificationUri};

/// What the manager knows of one device, for display and trust decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id.
    pub device_id: u32,
    /// Its fingerprint, once its identity key is known (the same in both versions).
    pub fingerprint: Option<Fingerprint>,
    /// The trust decision, shared by both versions.
    pub trust: Trust,
    /// Whether messages are encrypted to it (listed, bundle fine, not silent for long).
    pub active: bool,
    /// The device lists of its owner it is on: the versions it speaks.
    pub versions: Versions,
    /// Its label from the OMEMO 2 device list, only when the label's signature verifies
    /// with the device's identity key.
    pub label: Option<String>,
    /// When this device first saw it, seconds since the Unix epoch (`None`: known from
    /// before such times were kept, and its list not read since).
    pub first_seen: Option<u64>,
    /// When a message from it last decrypted here (to the minute), seconds since the
    /// Unix epoch; `None` if it never wrote.
    pub last_seen: Option<u64>,
}

impl<S: Store> Manager<S> {
    /// The records of `jid`'s devices, loaded from the store once.
    pub(super) fn device_records(
        &mut self,
        jid: &str,
    ) -> Result<&mut Vec<DeviceRecord>, ManagerError> {
        self.directory.records(&self.store, jid)
    }

    /// The versions a device is listed in that this manager speaks.
    pub(super) fn listed_versions(&self, record: &DeviceRecord) -> Versions {
        record.listed.intersection(self.config.versions)
    }

    /// The version messages to a device are encrypted in: OMEMO 2 when it is on its
    /// owner's OMEMO 2 list, legacy when only on the legacy list (of the versions this
    /// manager speaks), leaving out a version whose bundle failed; `None` when none is
    /// left.
    pub(super) fn version_for(&self, record: &DeviceRecord) -> Option<Version> {
        self.listed_versions(record)
            .difference(record.bundle_failed)
            .newest()
    }

    /// Why a device is not encrypted to, or `None` when it is active.
    pub(super) fn inactivity(&self, record: &DeviceRecord, now: u64) -> Option<SkipReason> {
        if self.listed_versions(record).is_empty() {
            Some(SkipReason::NotListed)
        } else if self.version_for(record).is_none() {
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
        self.notice_external_changes()?;
        let records = self.device_records(jid.as_str())?.clone();
        let mut devices = Vec::with_capacity(records.len());
        for record in records {
            let label = self.verified_label(&record)?;
            devices.push(DeviceInfo {
                device_id: record.device_id,
                fingerprint: record.identity_key.map(Fingerprint::from_bytes),
                trust: record.trust,
                active: self.inactivity(&record, now).is_none(),
                versions: record.listed,
                label,
                first_seen: record.first_seen_at,
                last_seen: record.last_message_at,
            });
        }
        Ok(devices)
    }

    /// The device's label, if its signature verifies with the identity key of the
    /// OMEMO 2 session with it (the only place its Ed25519 form is kept).
    fn verified_label(&mut self, record: &DeviceRecord) -> Result<Option<String>, ManagerError> {
        if record.label.is_none() {
            return Ok(None);
        }
        let listed = ListedDevice {
            id: record.device_id,
            label: record.label.clone(),
            label_signature: record.label_signature.clone(),
        };
        let session = match self.session(&record.jid, record.device_id, Version::Omemo2) {
            Ok(session) => session,
            Err(error @ ManagerError::Store(_)) => return Err(error),
            // An unreadable session cannot vouch for a label.
            Err(_) => None,
        };
        Ok(session
            .and_then(|s| listed.verified_label(s.remote_identity()))
            .map(str::to_owned))
    }

    /// Records a manual trust decision for a device; it holds in both versions.
    pub fn set_trust(
        &mut self,
        jid: &jid::BareJid,
        device_id: u32,
        trust: Trust,
    ) -> Result<(), ManagerError> {
        self.notice_external_changes()?;
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
        self.commit(Batch {
            ops: vec![Op::SetTrust {
                jid: record.jid.clone(),
                device_id,
                trust,
            }],
        })?;
        self.sync()?;
        self.cache_device(record)
    }

    /// Marks the devices a verification URI names (see [`VerificationUri`]) verified, in
    /// both versions, after checking each fingerprint against the identity key known for
    /// that device. One that does not match fails with
    /// [`ManagerError::FingerprintMismatch`], one never seen with
    /// [`ManagerError::UnknownDevice`], one whose key is not known yet with
    /// [`ManagerError::NoIdentityKey`]; then nothing is changed. This device may be named
    /// (its fingerprint is checked too). Returns the devices marked.
    ///
    /// With [`TrustPolicy::BlindUntilVerified`](super::TrustPolicy), the account's new
    /// devices need a decision from then on.
    pub fn verify_uri(&mut self, uri: &VerificationUri) -> Result<Vec<u32>, ManagerError> {
        self.notice_external_changes()?;
        let jid = uri.jid.as_str();
        let this_device = (jid == self.own.jid).then_some(self.own.device_id);
        let own_fingerprint = self.fingerprint();
        let records = self.device_records(jid)?.clone();
        let mut marked = Vec::new();
        for &(device_id, fingerprint) in &uri.devices {
            let known = if this_device == Some(device_id) {
                own_fingerprint
            } else {
                let record = records
                    .iter()
                    .find(|r| r.device_id == device_id)
                    .ok_or_else(|| ManagerError::UnknownDevice {
                        jid: jid.to_owned(),
                        device_id,
                    })?;
                let key = record
                    .identity_key
                    .ok_or_else(|| ManagerError::NoIdentityKey {
                        jid: jid.to_owned(),
                        device_id,
                    })?;
                marked.push(record.clone());
                Fingerprint::from_bytes(key)
            };
            if known != fingerprint {
                return Err(ManagerError::FingerprintMismatch {
                    jid: jid.to_owned(),
                    device_id,
                });
            }
        }
        let ops = marked
            .iter()
            .map(|record| Op::SetTrust {
                jid: record.jid.clone(),
                device_id: record.device_id,
                trust: Trust::Verified,
            })
            .collect();
        self.commit(Batch { ops })?;
        self.sync()?;
        let ids = marked.iter().map(|r| r.device_id).collect();
        for mut record in marked {
            record.trust = Trust::Verified;
            self.cache_device(record)?;
        }
        Ok(ids)
    }

    /// Removes one of this account's other devices (a lost phone, a reinstalled client):
    /// it leaves the own device lists of every version spoken and its bundles are
    /// retracted, so that contacts stop encrypting to it. Its record stays, so late
    /// messages from it still decrypt. A device that is still running puts itself back
    /// on the lists when it sees them. Fails with [`ManagerError::OwnListsUnknown`] until
    /// the own lists have arrived (the lists published are the ones fetched, minus the
    /// device).
    pub fn remove_own_device(&mut self, device_id: u32, now: u64) -> Result<(), ManagerError> {
        if device_id == self.own.device_id {
            return Err(ManagerError::RemovingThisDevice);
        }
        let jid = self.own.jid.clone();
        if !self
            .own_lists_known()?
            .iter()
            .any(|r| r.device_id == device_id)
        {
            return Err(ManagerError::UnknownDevice { jid, device_id });
        }
        self.remove_own_devices(&[device_id], now)
    }

    /// Removes this account's other devices that have been silent for more than
    /// `older_than_secs`: no message from them decrypted here within that time, and, for
    /// those that never wrote, first seen before it. They leave the own lists of every
    /// version spoken and their bundles are retracted, as with
    /// [`Manager::remove_own_device`]. Returns their ids (none: nothing is published).
    /// Devices whose first sight predates the times this store keeps are never stale
    /// until their list has been read once.
    ///
    /// # Errors
    ///
    /// [`ManagerError::OwnListsUnknown`] until the own lists have arrived.
    pub fn prune_own_devices(
        &mut self,
        older_than_secs: u64,
        now: u64,
    ) -> Result<Vec<u32>, ManagerError> {
        let stale = |at: u64| now.saturating_sub(at) > older_than_secs;
        let (this, spoken) = (self.own.device_id, self.config.versions);
        let ids: Vec<u32> = self
            .own_lists_known()?
            .iter()
            .filter(|r| r.device_id != this && listed_in(r, spoken))
            .filter(|r| match r.last_message_at {
                Some(at) => stale(at),
                None => r.first_seen_at.is_some_and(stale),
            })
            .map(|r| r.device_id)
            .collect();
        self.remove_own_devices(&ids, now)?;
        Ok(ids)
    }

    /// Clears the own device lists of every version spoken down to this device and
    /// retracts the bundles of all the others (after a lost phone, or years of
    /// reinstalls): contacts then encrypt to this device only. Another device that still
    /// runs puts itself back when it sees the lists. Returns the ids removed.
    ///
    /// # Errors
    ///
    /// [`ManagerError::OwnListsUnknown`] until the own lists have arrived.
    pub fn reset_own_device_lists(&mut self, now: u64) -> Result<Vec<u32>, ManagerError> {
        let (this, spoken) = (self.own.device_id, self.config.versions);
        let ids: Vec<u32> = self
            .own_lists_known()?
            .iter()
            .filter(|r| r.device_id != this && listed_in(r, spoken))
            .map(|r| r.device_id)
            .collect();
        self.remove_own_devices(&ids, now)?;
        // Published even with no other device: the lists then hold this one alone.
        if ids.is_empty() {
            self.publish_own_lists(&[])?;
        }
        Ok(ids)
    }

    /// The records of the own other devices, once the own lists of every version spoken
    /// have arrived and were read whole (a failed fetch or an unreadable item says
    /// nothing of the devices other clients added or removed).
    fn own_lists_known(&mut self) -> Result<&Vec<DeviceRecord>, ManagerError> {
        if !self
            .config
            .versions
            .iter()
            .all(|v| self.own_lists_read.contains(v))
        {
            return Err(ManagerError::OwnListsUnknown);
        }
        let jid = self.own.jid.clone();
        Ok(self.device_records(&jid)?)
    }

    /// Takes `ids` (own other devices) off the own lists and retracts their bundles, in
    /// one commit; nothing when `ids` is empty.
    fn remove_own_devices(&mut self, ids: &[u32], now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        if ids.is_empty() {
            return Ok(());
        }
        let jid = self.own.jid.clone();
        let mut removed: Vec<DeviceRecord> = self
            .device_records(&jid)?
            .iter()
            .filter(|r| ids.contains(&r.device_id))
            .cloned()
            .collect();
        for record in &mut removed {
            record.listed = Versions::NONE;
            record.left_lists_at = Some(now);
        }
        self.commit(Batch {
            ops: removed.iter().cloned().map(Op::PutDevice).collect(),
        })?;
        for record in removed {
            self.cache_device(record)?;
        }
        self.publish_own_lists(ids)?;
        tracing::info!(
            count = ids.len(),
            ?ids,
            "own devices removed from the device lists"
        );
        Ok(())
    }

    /// Publishes the own lists of every version spoken as the records say (this device
    /// included), and retracts the bundles of `retracted`.
    fn publish_own_lists(&mut self, retracted: &[u32]) -> Result<(), ManagerError> {
        let jid = self.own.jid.clone();
        let records = self.device_records(&jid)?.clone();
        for version in self.config.versions.iter() {
            let mut list: Vec<ListedDevice> = records
                .iter()
                .filter(|r| r.listed.contains(version))
                .map(|r| ListedDevice {
                    id: r.device_id,
                    label: r.label.clone(),
                    label_signature: r.label_signature.clone(),
                })
                .collect();
            list.push(self.own.list_entry(version));
            list.sort_by_key(|d| d.id);
            self.publish(Publication::DeviceList(version, list), Some(0));
            for &device_id in retracted {
                self.retract_bundle(version, device_id);
            }
        }
        Ok(())
    }

    /// Reports a device whose identity key just became known, when it waits for a trust
    /// decision.
    pub(super) fn identity_learned(&mut self, record: &DeviceRecord) {
        if let (Trust::Undecided, Some(key)) = (record.trust, record.identity_key) {
            self.events.push_back(Event::TrustDecisionNeeded {
                jid: record.jid.clone(),
                device_id: record.device_id,
                fingerprint: Fingerprint::from_bytes(key),
            });
        }
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

    /// Queues fetches of `jid`'s device lists of `versions` (of those spoken) unless
    /// one is under way.
    pub(super) fn fetch_device_lists(&mut self, jid: &str, versions: Versions) {
        for version in self
            .config
            .versions
            .iter()
            .filter(|v| versions.contains(*v))
        {
            let pending = Pending::FetchDeviceList {
                jid: jid.to_owned(),
                version,
            };
            if !self.is_pending(&pending) {
                let to = jid.to_owned();
                self.queue(pending, |id| {
                    stanza::fetch_items_iq(id, &to, device_list_node(version), None)
                });
            }
        }
    }

    /// Applies a PEP notification from `owner` (a normalised bare JID). Returns `false`
    /// for events of other nodes (and of versions not spoken).
    pub(super) fn handle_event(
        &mut self,
        owner: &str,
        event: stanza::PubsubEvent,
        now: u64,
    ) -> Result<bool, ManagerError> {
        self.clock = self.clock.max(now);
        let Some(version) = self
            .config
            .versions
            .iter()
            .find(|v| event.node == device_list_node(*v))
        else {
            return Ok(false);
        };
        self.device_list_fetched(owner, version, &event.payloads, now)?;
        Ok(true)
    }

    /// A device list fetch failed: nothing is known of the list, but what waited for the
    /// lists goes on.
    pub(super) fn device_list_failed(
        &mut self,
        jid: &str,
        version: Version,
        now: u64,
    ) -> Result<(), ManagerError> {
        if self
            .directory
            .list_answered(jid, version, None, self.config.versions)
        {
            self.fetch_missing_bundles(jid, now)?;
        }
        Ok(())
    }

    /// Applies the device list of `version` of `jid` (the union of all items of the
    /// node).
    pub(super) fn device_list_fetched(
        &mut self,
        jid: &str,
        version: Version,
        payloads: &[Element],
        now: u64,
    ) -> Result<(), ManagerError> {
        // A list that arrives can be read.
        self.directory.note_hidden(jid, None, false);
        let cap = self.config.max_devices_per_jid;
        let mut entries: Vec<ListedDevice> = Vec::new();
        let mut broken = false;
        for payload in payloads {
            // A broken item (stale clients leave many) does not spoil the others.
            let parsed = match version {
                Version::Legacy => legacy::parse_device_list(payload, cap)
                    .map(|ids| ids.into_iter().map(ListedDevice::new).collect()),
                Version::Omemo2 => omemo2::parse_device_list(payload, cap),
            };
            match parsed {
                Ok(list) => entries.extend(list),
                Err(error) => {
                    broken = true;
                    tracing::warn!(%jid, %version, %error, "device list item skipped");
                }
            }
        }
        entries.retain(|d| d.id != 0);
        entries.sort_by_key(|d| d.id);
        entries.dedup_by_key(|d| d.id);
        let own = jid == self.own.jid;
        if entries.len() > cap {
            tracing::warn!(%jid, %version, count = entries.len(), cap, "device list refused: too many devices");
            return Ok(());
        }
        let own_device = self.own.device_id;
        let mut republish = None;
        // The own list is republished with this device added only when it was read
        // whole: a list that did not parse says nothing of the other devices, and
        // publishing this device alone would take them off it.
        if own && broken {
            tracing::warn!(%version, "own device list unreadable; not republished");
        } else if own {
            let own_entry = self.own.list_entry(version);
            let published = entries.iter().find(|d| d.id == own_device);
            // Taken off a list read whole before (by a reset or prune elsewhere): its
            // bundle was retracted too, so it goes back with the list.
            if published.is_none() && self.own_lists_read.contains(version) {
                self.publish_bundles(Versions::only(version));
            }
            if published.is_none_or(|d| d.label != own_entry.label) {
                let mut republished: Vec<ListedDevice> = entries
                    .iter()
                    .filter(|d| d.id != own_device)
                    .cloned()
                    .collect();
                republished.push(own_entry);
                republished.sort_by_key(|d| d.id);
                republish = Some(Publication::DeviceList(version, republished));
            }
        }
        if own {
            self.own_lists_read.set(version, !broken);
        }
        let mut records = self.device_records(jid)?.clone();
        let mut changed = Vec::new();
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for record in records.iter_mut() {
            let entry = entries.iter().find(|d| d.id == record.device_id);
            let mut updated = record.clone();
            updated.listed.set(version, entry.is_some());
            // A device known from before first-seen times were kept ages from now on.
            updated.first_seen_at.get_or_insert(now);
            if !updated.listed.is_empty() {
                updated.left_lists_at = None;
            } else if !record.listed.is_empty() {
                updated.left_lists_at = Some(now);
            }
            if let (Version::Omemo2, Some(entry)) = (version, entry) {
                updated.label.clone_from(&entry.label);
                updated.label_signature.clone_from(&entry.label_signature);
            }
            if updated != *record {
                let spoken = self.config.versions;
                if !listed_in(record, spoken) && listed_in(&updated, spoken) {
                    added.push((updated.device_id, updated.listed));
                } else if listed_in(record, spoken) && !listed_in(&updated, spoken) {
                    removed.push(updated.device_id);
                }
                *record = updated;
                changed.push(record.clone());
            }
        }
        for entry in &entries {
            if (own && entry.id == own_device) || records.iter().any(|r| r.device_id == entry.id) {
                continue;
            }
            let mut record = new_device(jid, entry.id, Versions::only(version), now);
            record.label.clone_from(&entry.label);
            record.label_signature.clone_from(&entry.label_signature);
            added.push((record.device_id, record.listed));
            records.push(record.clone());
            changed.push(record);
        }
        records.sort_by_key(|r| r.device_id);
        // Devices on no list any more that have been silent for long (since their last
        // message or since they left the lists, whichever came later) are dropped with
        // their sessions, and so are those of unknown silence once the JID has more
        // records than a list may name (a list that changes often would pile them up).
        // A manual trust decision keeps its record.
        let inactive_after = self.config.inactive_after_secs;
        let crowded = records.len() > cap;
        let prune: Vec<u32> = records
            .iter()
            .filter(|r| {
                r.listed.is_empty()
                    && matches!(r.trust, Trust::Undecided | Trust::Blind)
                    && match r.last_message_at.max(r.left_lists_at) {
                        Some(quiet_since) => now.saturating_sub(quiet_since) > inactive_after,
                        None => crowded,
                    }
            })
            .map(|r| r.device_id)
            .collect();
        records.retain(|r| !prune.contains(&r.device_id));
        changed.retain(|r| !prune.contains(&r.device_id));
        if !changed.is_empty() || !prune.is_empty() {
            tracing::debug!(%jid, %version, devices = entries.len(), changed = changed.len(), pruned = prune.len(), now, "device list updated");
            let mut ops: Vec<Op> = changed.into_iter().map(Op::PutDevice).collect();
            ops.extend(prune.iter().map(|&device_id| Op::DeleteDevice {
                jid: jid.to_owned(),
                device_id,
            }));
            self.commit(Batch { ops })?;
        }
        for &device_id in &prune {
            for version in Version::ALL {
                self.sessions.forget(jid, device_id, version);
            }
        }
        if !prune.is_empty() {
            // Their sessions are gone: their skipped keys no longer count.
            self.skipped.forget(jid);
        }
        // Committed: now memory and the follow-ups.
        if let Some(publication) = republish {
            self.publish(publication, Some(0));
        }
        for (device_id, versions) in added {
            self.events.push_back(Event::DeviceAdded {
                jid: jid.to_owned(),
                device_id,
                versions,
            });
        }
        for device_id in removed {
            self.events.push_back(Event::DeviceRemoved {
                jid: jid.to_owned(),
                device_id,
            });
        }
        if self
            .directory
            .list_answered(jid, version, Some(records), self.config.versions)
        {
            self.fetch_missing_bundles(jid, now)?;
        }
        Ok(())
    }
}

/// Whether `record` is on a list of one of the `spoken` versions.
fn listed_in(record: &DeviceRecord, spoken: Versions) -> bool {
    spoken.iter().any(|v| record.listed.contains(v))
}

/// The PEP node of the device list of `version`.
pub(super) fn device_list_node(version: Version) -> &'static str {
    match version {
        Version::Legacy => legacy::DEVICE_LIST_NODE,
        Version::Omemo2 => omemo2::DEVICE_LIST_NODE,
    }
}

/// The record of a device seen for the first time (`now`): no identity key, no trust
/// decision.
pub(super) fn new_device(jid: &str, device_id: u32, listed: Versions, now: u64) -> DeviceRecord {
    DeviceRecord {
        jid: jid.to_owned(),
        device_id,
        listed,
        identity_key: None,
        trust: Trust::Undecided,
        first_seen_at: Some(now),
        left_lists_at: None,
        last_message_at: None,
        bundle_failed_at: None,
        bundle_failed: Versions::NONE,
        label: None,
        label_signature: None,
    }
}
