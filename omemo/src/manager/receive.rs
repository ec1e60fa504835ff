//! Decryption of incoming OMEMO messages of either version.

use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use super::devices::new_device;
use super::own_device::Refill;
use super::session_cache::{Slot, previous_sessions_op, skipped_keys_of};
use crate::consts::{
    CROSSING_KEY_EXCHANGES, LAST_SEEN_STEP_SECS, MAX_KEY_ATTEMPTS, MAX_PREVIOUS_SESSIONS,
};
use crate::error::{DecryptError, ManagerError};
use crate::stanza::sce::{self, AffixViolation};
use crate::stanza::{EncryptedKey, legacy, omemo2};
use crate::store::{Batch, Op, Store, Trust};
use crate::version::{Version, Versions};
use crate::{KeyMaterial, RatchetMessage, Session, decrypt_payload};

/// A decrypted message. Its Debug output shows the body's length and the names of the
/// content elements, never their text.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The sender's bare JID.
    pub sender: String,
    /// The sender's device id.
    pub device_id: u32,
    /// The version the message came in.
    pub version: Version,
    /// The body, or `None` for an empty (key transport / heartbeat) message.
    pub body: Option<String>,
    /// OMEMO 2: every element of the SCE envelope's `<content>` (the body among them),
    /// without those that must stay outside an envelope. Empty in legacy OMEMO, which
    /// encrypts the body only.
    pub content: Vec<Element>,
    /// OMEMO 2: the ways the envelope's affixes do not fit the stanza (a `from` that is
    /// not the sender, a `to` that is not this account, forbidden content). The
    /// application decides which it accepts; the message decrypted either way.
    pub affix_violations: Vec<AffixViolation>,
    /// OMEMO 2: the reason of an `<opt-out>` in the envelope: the sender asks to stop
    /// encrypting (`Some("")` without a reason).
    pub opt_out: Option<String>,
    /// The trust of the sending device; the caller decides how to show untrusted ones.
    pub trust: Trust,
    /// The room it was sent to, for a group chat message ([`Via::Room`](super::Via::Room)).
    pub room: Option<String>,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let content: Vec<&str> = self.content.iter().map(Element::name).collect();
        f.debug_struct("Decrypted")
            .field("sender", &self.sender)
            .field("device_id", &self.device_id)
            .field("version", &self.version)
            .field("body_len", &self.body.as_ref().map(String::len))
            .field("content", &content)
            .field("affix_violations", &self.affix_violations)
            .field("opt_out", &self.opt_out.is_some())
            .field("trust", &self.trust)
            .finish()
    }
}

/// The `<encrypted>` element of one version.
enum Incoming {
    Legacy(legacy::EncryptedMessage),
    Omemo2(omemo2::EncryptedMessage),
}

impl Incoming {
    /// The `<encrypted>` of `version` in `message`, parsed, if there is one.
    fn find(message: &Element, version: Version) -> Option<Result<Self, ManagerError>> {
        let parsed = match version {
            Version::Legacy => legacy::EncryptedMessage::find(message)
                .map(|e| legacy::EncryptedMessage::from_element(e).map(Self::Legacy)),
            Version::Omemo2 => omemo2::EncryptedMessage::find(message)
                .map(|e| omemo2::EncryptedMessage::from_element(e).map(Self::Omemo2)),
        };
        parsed.map(|result| result.map_err(ManagerError::from))
    }

    fn version(&self) -> Version {
        match self {
            Self::Legacy(_) => Version::Legacy,
            Self::Omemo2(_) => Version::Omemo2,
        }
    }

    fn sender_device(&self) -> u32 {
        match self {
            Self::Legacy(m) => m.sender_device,
            Self::Omemo2(m) => m.sender_device,
        }
    }

    /// The keys for `device` of `jid` (legacy keys name the device only).
    fn keys_for<'a>(&'a self, jid: &'a str, device: u32) -> Vec<&'a EncryptedKey> {
        match self {
            Self::Legacy(m) => m.keys_for(device).collect(),
            Self::Omemo2(m) => m.keys_for(jid, device).collect(),
        }
    }

    /// The payload with its IV (empty in OMEMO 2, whose IV is derived from the key).
    fn payload(&self) -> Option<(&[u8], &[u8])> {
        match self {
            Self::Legacy(m) => m.payload.as_deref().map(|p| (m.iv.as_slice(), p)),
            Self::Omemo2(m) => m.payload.as_deref().map(|p| (&[][..], p)),
        }
    }
}

/// What the payload held.
#[derive(Default)]
struct Plaintext {
    body: Option<String>,
    content: Vec<Element>,
    affix_violations: Vec<AffixViolation>,
    opt_out: Option<String>,
}

/// The outcome of the ratchet step, not yet committed.
struct Opened {
    session: Session,
    key: KeyMaterial,
    /// The one-time prekey a new session was built with.
    used_pre_key: Option<u32>,
    /// Messages received on the receiving chain before this one (0 for a new session).
    chain_before: u32,
    /// The sessions to keep as previous ones (newest first) when they change: the
    /// current one when another replaces it, minus one promoted back to current.
    previous: Option<Vec<Session>>,
}

impl<S: Store> Manager<S> {
    /// Decrypts an OMEMO `<message>` (already unwrapped from carbons or MAM by the
    /// caller). Nothing is stored unless the message authenticates; then the session,
    /// a consumed prekey and the device record are committed in one transaction, on
    /// disk when this returns.
    ///
    /// A key exchange that builds a session queues a bundle republish (the used prekey
    /// is replaced) and, when it carried a payload, an empty message that completes the
    /// session. Duplicates (the same message from the archive and live) fail with an
    /// error for which [`ManagerError::is_duplicate`] holds: ignore those silently.
    pub fn decrypt(
        &mut self,
        message: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Decrypted, ManagerError> {
        let own = self.own.jid.clone();
        let decrypted = self.decrypt_for(message, &own, rng, now);
        self.sync()?;
        decrypted
    }

    /// [`Manager::decrypt`] of a message whose SCE `to` must be `recipient` (this
    /// account, or the contact a carbon copy of a sent message went to).
    pub(super) fn decrypt_for(
        &mut self,
        message: &Element,
        recipient: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Decrypted, ManagerError> {
        // A message without `<encrypted>` is not OMEMO, whoever (if anyone) sent it.
        if !self.is_encrypted(message) {
            return Err(ManagerError::NotEncrypted);
        }
        let from = message.attr("from").ok_or(ManagerError::MissingSender)?;
        let sender = jid::Jid::new(from)
            .map_err(|_| ManagerError::MissingSender)?
            .to_bare()
            .to_string();
        self.decrypt_from(message, &sender, recipient, rng, now)
    }

    /// [`Manager::decrypt_for`] of a message from `sender` (a bare JID: the `from` of a
    /// direct message, the real JID of a room occupant).
    pub(super) fn decrypt_from(
        &mut self,
        message: &Element,
        sender: &str,
        recipient: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Decrypted, ManagerError> {
        // OMEMO 2 first: a sender that speaks both addresses each device once, in the
        // version it chose for it. A message without `<encrypted>` costs nothing more.
        let mut last_error = ManagerError::NotEncrypted;
        let mut elements = Vec::new();
        for version in self.config.versions.iter().rev() {
            match Incoming::find(message, version) {
                Some(Ok(incoming)) => elements.push(incoming),
                Some(Err(error)) => last_error = error,
                None => {}
            }
        }
        if last_error == ManagerError::NotEncrypted && elements.is_empty() {
            return Err(last_error);
        }
        if !elements.is_empty() {
            last_error = ManagerError::NotForThisDevice;
        }
        self.clock = self.clock.max(now);
        self.notice_external_changes()?;
        let sender = sender.to_owned();
        let own_jid = self.own.jid.clone();
        for incoming in &elements {
            let device_id = incoming.sender_device();
            if sender == own_jid && device_id == self.own.device_id {
                return Err(ManagerError::OwnMessage);
            }
            let version = incoming.version();
            // Several keys may carry this device's id; try each (as Conversations does),
            // but only a few: each attempt can cost Diffie-Hellman operations.
            for key in incoming
                .keys_for(&own_jid, self.own.device_id)
                .into_iter()
                .take(MAX_KEY_ATTEMPTS)
            {
                let opened = RatchetMessage::from_bytes(version, &key.data, key.key_exchange)
                    .map_err(ManagerError::from)
                    .and_then(|parsed| {
                        let carries_payload = incoming.payload().is_some();
                        self.open_key(&sender, device_id, &parsed, carries_payload, rng, now)
                    })
                    .and_then(|opened| {
                        let plaintext =
                            self.open_payload(&sender, recipient, incoming, &opened.key)?;
                        Ok((opened, plaintext))
                    });
                match opened {
                    Ok((opened, plaintext)) => {
                        return self.finish(&sender, device_id, opened, plaintext, rng, now);
                    }
                    Err(error) => last_error = error,
                }
            }
        }
        Err(last_error)
    }

    /// The sender device and the version of the element of `message` that has a key for
    /// this device, if any.
    pub(super) fn addressed_element(&self, message: &Element) -> Option<(u32, Version)> {
        self.config.versions.iter().rev().find_map(|version| {
            let incoming = Incoming::find(message, version)?.ok()?;
            let keys = incoming.keys_for(&self.own.jid, self.own.device_id);
            (!keys.is_empty()).then(|| (incoming.sender_device(), version))
        })
    }

    /// Decrypts the payload (legacy: the body; OMEMO 2: the SCE envelope, whose affixes
    /// are checked against the sender and this account).
    fn open_payload(
        &self,
        sender: &str,
        recipient: &str,
        incoming: &Incoming,
        key: &KeyMaterial,
    ) -> Result<Plaintext, ManagerError> {
        let Some((iv, payload)) = incoming.payload() else {
            return Ok(Plaintext::default());
        };
        let bytes = decrypt_payload(incoming.version(), key, iv, payload)?;
        match incoming.version() {
            Version::Legacy => Ok(Plaintext {
                body: Some(
                    String::from_utf8(bytes.to_vec()).map_err(|_| ManagerError::BodyNotUtf8)?,
                ),
                ..Plaintext::default()
            }),
            Version::Omemo2 => {
                let envelope = sce::open(&bytes)?;
                Ok(Plaintext {
                    body: envelope.body(),
                    affix_violations: envelope.check(sender, recipient),
                    opt_out: envelope.opt_out(),
                    content: envelope.content,
                })
            }
        }
    }

    /// The ratchet step on a copy of the session (or a new session from a key exchange).
    /// `carries_payload`: the message is more than an empty key exchange.
    fn open_key(
        &mut self,
        sender: &str,
        device_id: u32,
        message: &RatchetMessage,
        carries_payload: bool,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Opened, ManagerError> {
        let version = message.version();
        let existing = self.session(sender, device_id, version)?.cloned();
        let chain_before = existing.as_ref().map_or(0, Session::receiving_chain_length);
        // A message that does not fit the current session may fit one it replaced (both
        // sides started a session at the same moment): that one becomes current again
        // and the other previous, as libsignal does.
        let mut kept = None;
        let (session, key, used_pre_key) = match (message, existing) {
            (RatchetMessage::Authenticated(message), Some(mut session)) => {
                match session.decrypt(rng, message) {
                    Ok(key) => (session, key, None),
                    Err(error) => {
                        let mut previous = self.previous_sessions(sender, device_id, version)?;
                        let (index, key) = previous
                            .iter_mut()
                            .enumerate()
                            .find_map(|(i, p)| p.decrypt(rng, message).ok().map(|key| (i, key)))
                            .ok_or(error)?;
                        let promoted = previous.remove(index);
                        previous.insert(0, session);
                        kept = Some(previous);
                        (promoted, key, None)
                    }
                }
            }
            (RatchetMessage::Authenticated(_), None) => return Err(ManagerError::NoSession),
            (RatchetMessage::KeyExchange(kex), Some(mut session))
                if session.matches_key_exchange(kex) =>
            {
                let key = session.decrypt_key_exchange(rng, kex)?;
                (session, key, None)
            }
            (RatchetMessage::KeyExchange(kex), existing) => {
                let mut previous = self.previous_sessions(sender, device_id, version)?;
                let promoted = previous.iter().position(|p| p.matches_key_exchange(kex));
                if let Some(index) = promoted {
                    let key = previous[index].decrypt_key_exchange(rng, kex)?;
                    let key = KeyMaterial::from_bytes(key.to_vec());
                    let session = match existing {
                        // Still crossing (see below): the peer sent more before it saw
                        // our key exchange; ours stays current unless the peer goes on
                        // and on with its own (then it cannot read ours).
                        Some(current)
                            if crossing(&current, carries_payload)
                                && previous[index].receiving_chain_length()
                                    < CROSSING_KEY_EXCHANGES =>
                        {
                            current
                        }
                        existing => {
                            let promoted = previous.remove(index);
                            previous.splice(0..0, existing);
                            promoted
                        }
                    };
                    return Ok(Opened {
                        session,
                        key,
                        used_pre_key: None,
                        chain_before,
                        previous: Some(previous),
                    });
                }
                let known = self
                    .device_records(sender)?
                    .iter()
                    .find(|r| r.device_id == device_id)
                    .and_then(|r| r.identity_key);
                // Not authenticated yet: an error for this message, no event (anyone on
                // the path could forge the claim).
                if known.is_some_and(|k| k != *kex.identity_key().curve25519().as_bytes()) {
                    return Err(ManagerError::IdentityChanged {
                        jid: sender.to_owned(),
                        device_id,
                    });
                }
                // Each new session costs a prekey and memory: a stranger with made-up
                // device ids gets only a few per hour.
                let limit = self.config.new_sessions_per_hour;
                if !self.directory.new_session_allowed(sender, now, limit) {
                    return Err(ManagerError::TooManyNewSessions {
                        jid: sender.to_owned(),
                    });
                }
                let pre_key_id = kex.pre_key_id().ok_or(DecryptError::MissingPreKey)?;
                let signed = self
                    .own
                    .signed_pre_key(version, kex.signed_pre_key_id())
                    .ok_or(ManagerError::UnknownSignedPreKey(kex.signed_pre_key_id()))?
                    .clone();
                let pre_key = self
                    .own
                    .pre_key(version, pre_key_id)
                    .ok_or(ManagerError::UnknownPreKey(pre_key_id))?;
                let (session, key) =
                    Session::respond(rng, &self.own.identity, &signed, pre_key, kex)?;
                match existing {
                    // Both sides started a session at once (a message crossed ours, which
                    // is unanswered): the peer makes the session our key exchange starts
                    // its current one (python-omemo and libsignal switch to the newest),
                    // so ours stays current and theirs is kept for what they sent before
                    // they saw ours. An empty key exchange is a rebuild (the peer could
                    // not read ours): that one becomes current.
                    Some(current) if crossing(&current, carries_payload) => {
                        previous.insert(0, session);
                        kept = Some(previous);
                        (current, key, Some(pre_key_id))
                    }
                    existing => {
                        previous.splice(0..0, existing);
                        kept = Some(previous);
                        (session, key, Some(pre_key_id))
                    }
                }
            }
        };
        Ok(Opened {
            session,
            key: KeyMaterial::from_bytes(key.to_vec()),
            used_pre_key,
            chain_before,
            previous: kept,
        })
    }

    /// The sessions of `version` with a device that the current one replaced, newest
    /// first (the readable ones).
    pub(super) fn previous_sessions(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Vec<Session>, ManagerError> {
        let Some(bytes) = self.store.load_previous_session(jid, device_id, version)? else {
            return Ok(Vec::new());
        };
        let mut sessions = Session::list_from_bytes(&bytes);
        for session in &mut sessions {
            session.set_limits(self.config.ratchet_limits);
        }
        Ok(sessions)
    }

    /// Keeps the skipped message keys of all the sessions with `sender`'s devices within
    /// [`ManagerConfig::max_skipped_keys_per_jid`](super::ManagerConfig::max_skipped_keys_per_jid):
    /// the oldest keys of the sessions about to be stored go first. Whether the JID is
    /// counted (then its counts are updated after the commit); one whose sessions hold
    /// no skipped keys is not.
    fn bound_skipped_keys(
        &mut self,
        sender: &str,
        device_id: u32,
        session: &mut Session,
        previous: Option<&mut Vec<Session>>,
    ) -> Result<bool, ManagerError> {
        let holds_keys = session.skipped_key_count() > 0
            || previous.as_ref().is_some_and(|p| skipped_keys_of(p) > 0);
        if !holds_keys && !self.skipped.counts(sender) {
            return Ok(false);
        }
        let version = session.version();
        let mut rewritten = vec![(device_id, version, Slot::Current)];
        if previous.is_some() {
            rewritten.push((device_id, version, Slot::Previous));
        }
        let mut device_ids: Vec<u32> = self
            .device_records(sender)?
            .iter()
            .map(|r| r.device_id)
            .collect();
        device_ids.push(device_id);
        let held = self
            .skipped
            .held_except(&self.store, sender, &device_ids, &rewritten)?;
        let mut room = self.config.max_skipped_keys_per_jid.saturating_sub(held);
        session.trim_skipped_keys(room);
        room -= session.skipped_key_count();
        for older in previous.into_iter().flatten() {
            older.trim_skipped_keys(room);
            room -= older.skipped_key_count();
        }
        Ok(true)
    }

    /// Commits everything an authenticated message changes in one transaction, then
    /// updates memory and queues the follow-ups.
    fn finish(
        &mut self,
        sender: &str,
        device_id: u32,
        opened: Opened,
        plaintext: Plaintext,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Decrypted, ManagerError> {
        let version = opened.session.version();
        let Opened {
            mut session,
            used_pre_key,
            chain_before,
            mut previous,
            ..
        } = opened;
        if let Some(previous) = &mut previous {
            previous.truncate(MAX_PREVIOUS_SESSIONS);
        }
        // A device not seen before becomes a record; a JID gets no more records than a
        // device list may name (made-up device ids would fill the store).
        let cap = self.config.max_devices_per_jid;
        let records = self.device_records(sender)?;
        if !records.iter().any(|r| r.device_id == device_id) && records.len() >= cap {
            return Err(ManagerError::TooManyDevices {
                jid: sender.to_owned(),
                cap,
            });
        }
        let tallied =
            self.bound_skipped_keys(sender, device_id, &mut session, previous.as_mut())?;
        let mut batch = Batch::default();
        batch.ops.push(Op::PutSession {
            jid: sender.to_owned(),
            device_id,
            version: session.version(),
            state: session.to_bytes(),
        });
        if let Some(previous) = &previous {
            batch
                .ops
                .push(previous_sessions_op(sender, device_id, version, previous));
        }
        // During a catch-up, the used prekey is hidden, not deleted.
        let hide = self.is_catching_up();
        let refill: Option<Refill> = used_pre_key.and_then(|id| {
            self.own
                .plan_refill(version, id, hide, self.config.pre_key_count, rng)
        });
        if let Some(refill) = &refill {
            self.own.refill_ops(refill, &mut batch);
        }
        let initial_trust = self.initial_trust(sender)?;
        let records = self.device_records(sender)?;
        let known = records.iter().position(|r| r.device_id == device_id);
        let mut record = known
            .map(|i| records[i].clone())
            .unwrap_or_else(|| new_device(sender, device_id, Versions::NONE, now));
        let identity_learned = record.identity_key.is_none();
        if identity_learned {
            record.identity_key = Some(*session.remote_identity().curve25519().as_bytes());
            record.trust = initial_trust;
        }
        // When the device was last heard from only needs to be as fine as the inactivity
        // limit: it is written when it moves by a minute or more, not for every message.
        let seen_moved = record
            .last_message_at
            .is_none_or(|at| now.saturating_sub(at) >= LAST_SEEN_STEP_SECS);
        if seen_moved {
            record.last_message_at = Some(now);
        }
        if known.is_none() || identity_learned || seen_moved {
            batch.ops.push(Op::PutDevice(record.clone()));
        }
        if identity_learned {
            batch.ops.push(Op::SetTrust {
                jid: sender.to_owned(),
                device_id,
                trust: record.trust,
            });
        }
        self.commit(batch)?;

        // Committed: now memory.
        if tallied {
            let current = (device_id, version, Slot::Current);
            self.skipped
                .record(sender, current, session.skipped_key_count());
            if let Some(previous) = &previous {
                let slot = (device_id, version, Slot::Previous);
                self.skipped.record(sender, slot, skipped_keys_of(previous));
            }
        }
        let trust = record.trust;
        if identity_learned {
            self.identity_learned(&record);
        }
        self.cache_device(record)?;
        // One heartbeat when a one-sided chain crosses the limit, not one per message
        // after it; none while catching up with the archive.
        let after = self.config.heartbeat_after;
        let heartbeat = session.receiving_chain_length() > after && chain_before <= after;
        self.sessions.insert(sender, device_id, session);
        if used_pre_key.is_some() {
            self.directory.note_new_session(sender, now);
        }
        if let Some(refill) = refill {
            let version = self.own.apply_refill(refill);
            self.publish_bundles(Versions::only(version));
        }
        if known.is_none() {
            // A device that was not on the lists: refresh them, and fetch the bundles of
            // the other devices on them, so that the answer reaches them all.
            self.directory.want_bundles(sender);
            self.fetch_device_lists(sender, Versions::BOTH);
        }
        // Complete a new session, or answer a long one-sided chain; never answer an
        // empty message with another one.
        // While catching up, once each after it.
        let wants_empty = plaintext.body.is_some() && (used_pre_key.is_some() || heartbeat);
        if wants_empty && !self.defer_completion(sender, device_id, version) {
            // The message is decrypted and committed; failing to answer it must not
            // lose it.
            if let Err(error) = self.empty_message_to(sender, device_id, version, rng) {
                tracing::warn!(%sender, device_id, %error, "could not queue the empty reply");
            }
        }
        Ok(Decrypted {
            sender: sender.to_owned(),
            device_id,
            version,
            body: plaintext.body,
            content: plaintext.content,
            affix_violations: plaintext.affix_violations,
            opt_out: plaintext.opt_out,
            trust,
            room: None,
        })
    }
}

/// Whether a key exchange (with a payload or not) crosses `current`: ours, still
/// unanswered. An empty one is a rebuild by a peer that could not read ours.
fn crossing(current: &Session, carries_payload: bool) -> bool {
    carries_payload && current.sends_key_exchange()
}
