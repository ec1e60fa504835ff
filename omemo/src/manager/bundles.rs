//! The own bundle (prekey refill, signed prekey rotation, publishing) and the bundles of
//! other devices (verification, identity checks, building sessions from them).

use rand_core::CryptoRng;

use super::request::{Pending, Publication};
use super::{DatedSignedPreKey, Manager, SkipReason, VERSION, pre_key_record, signed_record};
use crate::consts::{BUNDLE_RETRY_SECS, MAX_DEVICE_ID};
use crate::error::ManagerError;
use crate::stanza::{self, StanzaError};
use crate::store::{AccountRecord, Batch, Op, Store};
use crate::{PreKey, PreKeyBundle, Session, SignedPreKey, Version};

/// A used one-time prekey and the fresh ones that replace it.
pub(super) struct Refill {
    used: u32,
    fresh: Vec<PreKey>,
    next_id: u32,
}

impl<S: Store> Manager<S> {
    /// The bundle this device publishes in `version`; `None` for a version the manager
    /// does not speak (so far it speaks legacy OMEMO only).
    pub fn own_bundle(&self, version: Version) -> Option<PreKeyBundle> {
        (version == VERSION).then(|| self.published_bundle())
    }

    /// The bundle of the manager's version.
    pub(super) fn published_bundle(&self) -> PreKeyBundle {
        let pre_keys: Vec<PreKey> = self.pre_keys.values().cloned().collect();
        PreKeyBundle::new(
            &self.identity,
            &self.current_signed_pre_key().key,
            &pre_keys,
        )
    }

    fn current_signed_pre_key(&self) -> &DatedSignedPreKey {
        // `load` and `create` guarantee at least one.
        &self.signed_pre_keys[self.signed_pre_keys.len() - 1]
    }

    /// Queues the publication of this device's bundle (and, through the own device
    /// list fetch in [`Manager::open`], its device id).
    pub fn publish_bundle(&mut self) {
        self.publish(Publication::Bundle, true);
    }

    /// Queues a fetch of the own device list; the manager adds this device to it when
    /// missing.
    pub fn publish_device(&mut self) {
        let jid = self.jid.clone();
        self.fetch_device_list(&jid);
    }

    pub(super) fn signed_pre_key(&self, id: u32) -> Option<&SignedPreKey> {
        self.signed_pre_keys
            .iter()
            .rev()
            .map(|k| &k.key)
            .find(|k| k.id() == id)
    }

    /// Plans the replacement of a used one-time prekey by a fresh one, so that the
    /// bundle keeps its size; nothing changes until [`Manager::apply_refill`].
    pub(super) fn plan_refill(&self, used: u32, rng: &mut impl CryptoRng) -> Refill {
        let mut next_id = self.next_pre_key_id;
        let missing = (self.config.pre_key_count as usize + 1).saturating_sub(self.pre_keys.len());
        let fresh = (0..missing)
            .map(|_| {
                let id = next_id;
                next_id = if id >= MAX_DEVICE_ID { 1 } else { id + 1 };
                PreKey::generate(rng, id)
            })
            .collect();
        Refill {
            used,
            fresh,
            next_id,
        }
    }

    /// The store ops of a refill.
    pub(super) fn refill_ops(&self, refill: &Refill, batch: &mut Batch) {
        batch.ops.push(Op::DeletePreKey {
            version: VERSION,
            id: refill.used,
        });
        batch.ops.extend(
            refill
                .fresh
                .iter()
                .map(|k| Op::PutPreKey(pre_key_record(k))),
        );
        let mut account = self.account_record();
        account.next_pre_key_id = refill.next_id;
        batch.ops.push(Op::PutAccount(account));
    }

    /// Applies a committed refill in memory.
    pub(super) fn apply_refill(&mut self, refill: Refill) {
        self.pre_keys.remove(&refill.used);
        self.pre_keys
            .extend(refill.fresh.into_iter().map(|k| (k.id(), k)));
        self.next_pre_key_id = refill.next_id;
    }

    pub(super) fn account_record(&self) -> AccountRecord {
        AccountRecord {
            jid: self.jid.clone(),
            device_id: self.device_id,
            identity_secret: self.identity.secret_key().to_bytes(),
            next_pre_key_id: self.next_pre_key_id,
        }
    }

    /// Rotates the signed prekey when it is older than the rotation period, and drops
    /// replaced ones whose grace period is over.
    pub(super) fn rotate_signed_pre_key(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let mut keys = self.signed_pre_keys.clone();
        let mut batch = Batch::default();
        let current = &keys[keys.len() - 1];
        if now.saturating_sub(current.created_at) >= self.config.signed_pre_key_rotation_secs {
            let id = if current.key.id() >= MAX_DEVICE_ID {
                1
            } else {
                current.key.id() + 1
            };
            let key = SignedPreKey::generate(VERSION, rng, &self.identity, id);
            batch
                .ops
                .push(Op::PutSignedPreKey(signed_record(&key, now)));
            keys.push(DatedSignedPreKey {
                key,
                created_at: now,
            });
            tracing::info!(id, "rotated the signed prekey");
        }
        // A replaced key stays for the grace period counted from its replacement.
        let grace = self.config.signed_pre_key_grace_secs;
        while keys.len() > 1 && now.saturating_sub(keys[1].created_at) >= grace {
            let old = keys.remove(0);
            batch.ops.push(Op::DeleteSignedPreKey {
                version: old.key.version(),
                id: old.key.id(),
            });
        }
        if !batch.is_empty() {
            self.store.commit(batch)?;
            self.signed_pre_keys = keys;
            self.publish_bundle();
        }
        Ok(())
    }

    /// Queues bundle fetches for the active devices of `jid` that have no session, and
    /// for devices whose bundle failed more than a day ago (it may have been fixed).
    pub(super) fn fetch_missing_bundles(
        &mut self,
        jid: &str,
        now: u64,
    ) -> Result<(), ManagerError> {
        let own_device = (jid == self.jid).then_some(self.device_id);
        let candidates: Vec<u32> = self
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
            .map(|r| r.device_id)
            .collect();
        for device_id in candidates {
            if self.session(jid, device_id)?.is_some() {
                continue;
            }
            let pending = Pending::FetchBundle {
                jid: jid.to_owned(),
                device_id,
            };
            if !self.is_pending(&pending) {
                let to = jid.to_owned();
                self.queue(pending, |id| {
                    stanza::fetch_items_iq(id, &to, &stanza::legacy::bundle_node(device_id), None)
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
        bundle: Result<PreKeyBundle, StanzaError>,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let identity = self.identity.clone();
        let result = bundle.map_err(ManagerError::from).and_then(|bundle| {
            let session = Session::initiate(rng, &identity, &bundle)?;
            Ok((bundle, session))
        });
        let initial_trust = self.initial_trust(jid)?;
        // A session that came into being while the fetch was under way (an incoming key
        // exchange) is kept; the bundle is not needed any more.
        if self.session(jid, device_id)?.is_some() {
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
        match result {
            Ok((bundle, session)) => {
                let key = *bundle.identity_key.curve25519().as_bytes();
                match record.identity_key {
                    Some(known) if known != key => {
                        tracing::warn!(%jid, device_id, "bundle identity key differs from the known one; refused");
                        record.bundle_failed_at = Some(now);
                    }
                    known => {
                        if known.is_none() {
                            record.identity_key = Some(key);
                            record.trust = initial_trust;
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
                tracing::warn!(%jid, device_id, %error, "bundle unusable; device inactive");
                record.bundle_failed_at = Some(now);
            }
        }
        batch.ops.push(Op::PutDevice(record.clone()));
        self.store.commit(batch)?;
        // Committed: now memory.
        self.cache_device(record)?;
        if let Some(mut session) = new_session {
            session.set_limits(self.config.ratchet_limits);
            self.sessions.insert((jid.to_owned(), device_id), session);
        }
        Ok(())
    }
}
