//! The own bundle (prekey refill, signed prekey rotation, publishing) and the bundles of
//! other devices (verification, identity checks, building sessions from them).

use rand_core::CryptoRng;

use super::events::Event;
use super::request::{Pending, Publication};
use super::{Manager, SkipReason};
use crate::consts::BUNDLE_RETRY_SECS;
use crate::error::ManagerError;
use crate::stanza::{self, StanzaError, legacy, omemo2};
use crate::store::{Batch, Op, Store};
use crate::version::Versions;
use crate::{PreKeyBundle, Session, Version};

impl<S: Store> Manager<S> {
    /// The bundle this device publishes in `version`; `None` for a version the manager
    /// does not speak ([`ManagerConfig::versions`](super::ManagerConfig::versions)).
    pub fn own_bundle(&self, version: Version) -> Option<PreKeyBundle> {
        self.own.bundle(version)
    }

    /// Queues the publication of this device's bundles, one per version spoken (and,
    /// through the own device list fetches in [`Manager::open`], its device id).
    pub fn publish_bundle(&mut self) {
        self.publish_bundles(self.config.versions);
    }

    /// Queues the publication of this device's bundles of `versions`.
    pub(super) fn publish_bundles(&mut self, versions: Versions) {
        for version in versions.iter() {
            self.publish(Publication::Bundle(version), Some(0));
        }
    }

    /// Queues fetches of the own device lists; the manager adds this device to each
    /// where it is missing.
    pub fn publish_device(&mut self) {
        let jid = self.own.jid.clone();
        self.fetch_device_lists(&jid, Versions::BOTH);
    }

    /// Rotates the signed prekey when it is older than the rotation period, and drops
    /// replaced ones whose grace period is over.
    pub(super) fn rotate_signed_pre_key(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let mut batch = Batch::default();
        let rotation = self.own.plan_rotation(
            rng,
            now,
            self.config.signed_pre_key_rotation_secs,
            self.config.signed_pre_key_grace_secs,
            &mut batch,
        );
        if let Some(rotation) = rotation {
            self.store.commit(batch)?;
            let versions = rotation.versions();
            self.own.apply_rotation(rotation);
            self.publish_bundles(versions);
        }
        Ok(())
    }

    /// Queues bundle fetches for the active devices of `jid` without a session in the
    /// version they are encrypted in, and for devices whose bundle failed more than a
    /// day ago (it may have been fixed).
    pub(super) fn fetch_missing_bundles(
        &mut self,
        jid: &str,
        now: u64,
    ) -> Result<(), ManagerError> {
        let own_device = (jid == self.own.jid).then_some(self.own.device_id);
        let candidates: Vec<(u32, Version)> = self
            .device_records(jid)?
            .clone()
            .iter()
            .filter(|r| Some(r.device_id) != own_device)
            .filter(|r| match self.inactivity(r, now) {
                None => true,
                Some(SkipReason::BundleUnavailable) => r
                    .bundle_failed_at
                    .is_some_and(|at| now.saturating_sub(at) >= BUNDLE_RETRY_SECS),
                Some(_) => false,
            })
            .filter_map(|r| Some((r.device_id, self.version_for(r)?)))
            .collect();
        for (device_id, version) in candidates {
            if self.session(jid, device_id, version)?.is_some() {
                continue;
            }
            let pending = Pending::FetchBundle {
                jid: jid.to_owned(),
                device_id,
                version,
            };
            if !self.is_pending(&pending) {
                let to = jid.to_owned();
                self.queue(pending, |id| match version {
                    Version::Legacy => {
                        stanza::fetch_items_iq(id, &to, &legacy::bundle_node(device_id), None)
                    }
                    Version::Omemo2 => stanza::fetch_item_iq(
                        id,
                        &to,
                        omemo2::BUNDLES_NODE,
                        &omemo2::bundle_item_id(device_id),
                    ),
                });
            }
        }
        Ok(())
    }

    /// A bundle arrived (or failed to): verify it, check the identity against what is
    /// known of the device, and build a session from it.
    pub(super) fn bundle_fetched(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
        bundle: Result<PreKeyBundle, StanzaError>,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let identity = self.own.identity.clone();
        let result = bundle.map_err(ManagerError::from).and_then(|bundle| {
            let session = Session::initiate(rng, &identity, &bundle)?;
            Ok((bundle, session))
        });
        let initial_trust = self.initial_trust(jid)?;
        // A session that came into being while the fetch was under way (an incoming key
        // exchange) is kept; the bundle is not needed any more.
        if self.session(jid, device_id, version)?.is_some() {
            return Ok(());
        }
        let Some(mut record) = self
            .device_records(jid)?
            .iter()
            .find(|r| r.device_id == device_id)
            .cloned()
        else {
            return Ok(());
        };
        let mut batch = Batch::default();
        let mut new_session = None;
        let (mut identity_learned, mut identity_refused) = (false, false);
        match result {
            Ok((bundle, session)) => {
                let key = *bundle.identity_key.curve25519().as_bytes();
                match record.identity_key {
                    Some(known) if known != key => {
                        tracing::warn!(%jid, device_id, "bundle identity key differs from the known one; refused");
                        record.bundle_failed_at = Some(now);
                        identity_refused = true;
                    }
                    known => {
                        if known.is_none() {
                            record.identity_key = Some(key);
                            record.trust = initial_trust;
                            identity_learned = true;
                        }
                        record.bundle_failed_at = None;
                        batch.ops.push(Op::PutSession {
                            jid: jid.to_owned(),
                            device_id,
                            version: session.version(),
                            state: session.to_bytes(),
                        });
                        new_session = Some(session);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%jid, device_id, %version, %error, "bundle unusable; device inactive");
                record.bundle_failed_at = Some(now);
            }
        }
        batch.ops.push(Op::PutDevice(record.clone()));
        self.store.commit(batch)?;
        // Committed: now memory.
        if identity_learned {
            self.identity_learned(&record);
        }
        if identity_refused {
            self.events.push_back(Event::IdentityChangeRefused {
                jid: jid.to_owned(),
                device_id,
            });
        }
        self.cache_device(record)?;
        if let Some(session) = new_session {
            self.sessions.insert(jid, device_id, session);
        }
        Ok(())
    }
}
