//! The own bundle (prekey refill, signed prekey rotation, publishing) and the bundles of
//! other devices (verification, identity checks, building sessions from them).

use rand_core::CryptoRng;

use super::devices::new_device;
use super::events::Event;
use super::request::{Pending, Publication};
use super::session_cache::previous_sessions_op;
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

    /// Queues the publication of this device's bundles of every version spoken, and
    /// fetches of the own device lists (this device is put back where it is missing).
    pub(super) fn republish(&mut self) {
        self.publish_bundles(self.config.versions);
        let jid = self.own.jid.clone();
        self.fetch_device_lists(&jid, Versions::BOTH);
    }

    /// Queues the publication of this device's bundles of `versions`.
    pub(super) fn publish_bundles(&mut self, versions: Versions) {
        for version in versions.iter() {
            self.publish(Publication::Bundle(version), Some(0));
        }
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
            self.commit(batch)?;
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
        let mut candidates: Vec<(u32, Version)> = Vec::new();
        for record in self.device_records(jid)?.clone() {
            if Some(record.device_id) == own_device
                || matches!(
                    self.inactivity(&record, now),
                    Some(SkipReason::NotListed | SkipReason::Silent)
                )
            {
                continue;
            }
            // The version it is encrypted in, and the newest one whose bundle failed
            // once a day has passed (it may have been fixed).
            candidates.extend(self.version_for(&record).map(|v| (record.device_id, v)));
            let retry_due = record
                .bundle_failed_at
                .is_some_and(|at| now.saturating_sub(at) >= BUNDLE_RETRY_SECS);
            let failed = self
                .listed_versions(&record)
                .intersection(record.bundle_failed)
                .newest();
            if let (true, Some(version)) = (retry_due, failed) {
                candidates.push((record.device_id, version));
            }
        }
        for (device_id, version) in candidates {
            if self.has_session(jid, device_id, version)? {
                continue;
            }
            self.fetch_bundle(jid, device_id, version, false);
        }
        Ok(())
    }

    /// Queues a fetch of the bundle of `device_id` of `jid` in `version` unless one is
    /// under way; with `rebuild`, the session built from it replaces an existing one.
    /// Asks again for the bundles of `jid`'s devices that were hidden from
    /// non-contacts at the last try (a subscription may have been approved since). Only
    /// [`Manager::prepare`] does, once per call: a refusal does not ask again by itself.
    pub(super) fn fetch_hidden_bundles(&mut self, jid: &str) -> Result<(), ManagerError> {
        let hidden: Vec<(u32, Version)> = self
            .device_records(jid)?
            .clone()
            .iter()
            .filter(|r| self.directory.is_hidden(jid, Some(r.device_id)))
            .filter_map(|r| {
                let version = self
                    .listed_versions(r)
                    .intersection(r.bundle_failed)
                    .newest()?;
                Some((r.device_id, version))
            })
            .collect();
        for (device_id, version) in hidden {
            self.fetch_bundle(jid, device_id, version, false);
        }
        Ok(())
    }

    pub(super) fn fetch_bundle(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
        rebuild: bool,
    ) {
        let pending = Pending::FetchBundle {
            jid: jid.to_owned(),
            device_id,
            version,
            rebuild,
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

    /// A bundle arrived (or failed to): verify it, check the identity against what is
    /// known of the device, and build a session from it.
    pub(super) fn bundle_fetched(
        &mut self,
        fetched: Fetched<'_>,
        bundle: Result<PreKeyBundle, StanzaError>,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Fetched {
            jid,
            device_id,
            version,
            rebuild,
        } = fetched;
        let identity = self.own.identity.clone();
        let result = bundle.map_err(ManagerError::from).and_then(|bundle| {
            let session = Session::initiate(rng, &identity, &bundle)?;
            Ok((bundle, session))
        });
        let initial_trust = self.initial_trust(jid)?;
        // A session that came into being while the fetch was under way (an incoming key
        // exchange) is kept; the bundle is not needed any more. A rebuild replaces it.
        if !rebuild && self.has_session(jid, device_id, version)? {
            return Ok(());
        }
        let mut replaced = match self.session(jid, device_id, version) {
            Ok(session) if rebuild => session.cloned(),
            Err(error @ ManagerError::Store(_)) => return Err(error),
            _ => None,
        };
        let known = self
            .device_records(jid)?
            .iter()
            .find(|r| r.device_id == device_id)
            .cloned();
        let Some(mut record) =
            known.or_else(|| rebuild.then(|| new_device(jid, device_id, Versions::NONE, now)))
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
                        tracing::warn!(%jid, device_id, %version, "bundle identity key differs from the known one; refused");
                        record.bundle_failed_at = Some(now);
                        record.bundle_failed.insert(version);
                        identity_refused = true;
                    }
                    known => {
                        if known.is_none() {
                            record.identity_key = Some(key);
                            record.trust = initial_trust;
                            identity_learned = true;
                        }
                        record.bundle_failed.set(version, false);
                        if record.bundle_failed.is_empty() {
                            record.bundle_failed_at = None;
                        }
                        batch.ops.push(Op::PutSession {
                            jid: jid.to_owned(),
                            device_id,
                            version: session.version(),
                            state: session.to_bytes(),
                        });
                        // A rebuild keeps the session it replaces as a previous one: the
                        // message that triggered it was not authenticated, and the peer's
                        // next message may still fit the old session.
                        if let Some(old) = replaced.take() {
                            let mut previous = self.previous_sessions(jid, device_id, version)?;
                            previous.insert(0, old);
                            batch
                                .ops
                                .push(previous_sessions_op(jid, device_id, version, &previous));
                            // The JID's skipped keys are counted again when next needed.
                            self.skipped.forget(jid);
                        }
                        new_session = Some(session);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%jid, device_id, %version, %error, "bundle unusable; version not used for the device");
                record.bundle_failed_at = Some(now);
                record.bundle_failed.insert(version);
            }
        }
        batch.ops.push(Op::PutDevice(record.clone()));
        if identity_learned {
            batch.ops.push(Op::SetTrust {
                jid: jid.to_owned(),
                device_id,
                trust: record.trust,
            });
        }
        self.commit(batch)?;
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
        match new_session {
            Some(session) => {
                self.sessions.insert(jid, device_id, session);
                if rebuild {
                    // The empty key exchange lets the device build the same session.
                    self.empty_message_to(jid, device_id, version, rng)?;
                    tracing::info!(%jid, device_id, %version, "session rebuilt");
                    self.events.push_back(Event::SessionRebuilt {
                        jid: jid.to_owned(),
                        device_id,
                        version,
                    });
                }
            }
            // The device may be reachable in its other version: fetch that bundle.
            None => self.fetch_missing_bundles(jid, now)?,
        }
        Ok(())
    }
}

/// Which bundle a fetch was for.
pub(super) struct Fetched<'a> {
    pub(super) jid: &'a str,
    pub(super) device_id: u32,
    pub(super) version: Version,
    /// The session replaces an existing one and is announced (healing).
    pub(super) rebuild: bool,
}
