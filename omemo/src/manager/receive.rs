//! Decryption of incoming OMEMO messages.

use minidom::Element;
use rand_core::CryptoRng;

use super::devices::new_device;
use super::own_device::Refill;
use super::{Manager, VERSION};
use crate::consts::MAX_KEY_ATTEMPTS;
use crate::error::{DecryptError, ManagerError};
use crate::stanza::legacy::EncryptedMessage;
use crate::store::{Batch, Op, Store, Trust};
use crate::{KeyMaterial, RatchetMessage, Session, decrypt_payload};

/// A decrypted message. Its Debug output shows the body's length, not the body.
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The sender's bare JID.
    pub sender: String,
    /// The sender's device id.
    pub device_id: u32,
    /// The body, or `None` for an empty (key transport / heartbeat) message.
    pub body: Option<String>,
    /// The trust of the sending device; the caller decides how to show untrusted ones.
    pub trust: Trust,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("sender", &self.sender)
            .field("device_id", &self.device_id)
            .field("body_len", &self.body.as_ref().map(String::len))
            .field("trust", &self.trust)
            .finish()
    }
}

/// The outcome of the ratchet step, not yet committed.
struct Opened {
    session: Session,
    key: KeyMaterial,
    /// The one-time prekey a new session was built with.
    used_pre_key: Option<u32>,
}

impl<S: Store> Manager<S> {
    /// Decrypts an OMEMO `<message>` (already unwrapped from carbons or MAM by the
    /// caller). Nothing is stored unless the message authenticates; then the session,
    /// a consumed prekey and the device record are committed in one transaction.
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
        self.clock = self.clock.max(now);
        let from = message.attr("from").ok_or(ManagerError::MissingSender)?;
        let sender = jid::Jid::new(from)
            .map_err(|_| ManagerError::MissingSender)?
            .to_bare()
            .to_string();
        let element = EncryptedMessage::find(message).ok_or(ManagerError::NotEncrypted)?;
        let encrypted = EncryptedMessage::from_element(element)?;
        let device_id = encrypted.sender_device;
        if sender == self.own.jid && device_id == self.own.device_id {
            return Err(ManagerError::OwnMessage);
        }
        let mut last_error = ManagerError::NotForThisDevice;
        // Several keys may carry this device's id; try each (as Conversations does), but
        // only a few: each attempt can cost Diffie-Hellman operations.
        for key in encrypted
            .keys_for(self.own.device_id)
            .take(MAX_KEY_ATTEMPTS)
        {
            let opened = RatchetMessage::from_bytes(VERSION, &key.data, key.key_exchange)
                .map_err(ManagerError::from)
                .and_then(|parsed| self.open_key(&sender, device_id, &parsed, rng));
            match opened {
                Ok(opened) => return self.finish(&sender, device_id, &encrypted, opened, rng, now),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The ratchet step on a copy of the session (or a new session from a key exchange).
    fn open_key(
        &mut self,
        sender: &str,
        device_id: u32,
        message: &RatchetMessage,
        rng: &mut impl CryptoRng,
    ) -> Result<Opened, ManagerError> {
        let existing = self.session(sender, device_id)?.cloned();
        let (session, key, used_pre_key) = match (message, existing) {
            (RatchetMessage::Authenticated(message), Some(mut session)) => {
                let key = session.decrypt(rng, message)?;
                (session, key, None)
            }
            (RatchetMessage::Authenticated(_), None) => return Err(ManagerError::NoSession),
            (RatchetMessage::KeyExchange(kex), Some(mut session))
                if session.matches_key_exchange(kex) =>
            {
                let key = session.decrypt_key_exchange(rng, kex)?;
                (session, key, None)
            }
            (RatchetMessage::KeyExchange(kex), _) => {
                let known = self
                    .device_records(sender)?
                    .iter()
                    .find(|r| r.device_id == device_id)
                    .and_then(|r| r.identity_key);
                if known.is_some_and(|k| k != *kex.identity_key().curve25519().as_bytes()) {
                    return Err(ManagerError::IdentityChanged {
                        jid: sender.to_owned(),
                        device_id,
                    });
                }
                let pre_key_id = kex.pre_key_id().ok_or(DecryptError::MissingPreKey)?;
                let signed = self
                    .own
                    .signed_pre_key(kex.signed_pre_key_id())
                    .ok_or(ManagerError::UnknownSignedPreKey(kex.signed_pre_key_id()))?
                    .clone();
                let pre_key = self
                    .own
                    .pre_key(pre_key_id)
                    .ok_or(ManagerError::UnknownPreKey(pre_key_id))?;
                let (session, key) =
                    Session::respond(rng, &self.own.identity, &signed, pre_key, kex)?;
                (session, key, Some(pre_key_id))
            }
        };
        Ok(Opened {
            session,
            key: KeyMaterial::from_bytes(key.to_vec()),
            used_pre_key,
        })
    }

    /// Decrypts the payload, commits everything in one transaction, then updates memory
    /// and queues the follow-ups.
    fn finish(
        &mut self,
        sender: &str,
        device_id: u32,
        encrypted: &EncryptedMessage,
        opened: Opened,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Decrypted, ManagerError> {
        let body = match &encrypted.payload {
            Some(payload) => {
                let bytes = decrypt_payload(VERSION, &opened.key, &encrypted.iv, payload)?;
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| ManagerError::BodyNotUtf8)?)
            }
            None => None,
        };
        let Opened {
            session,
            used_pre_key,
            ..
        } = opened;
        let mut batch = Batch::default();
        batch.ops.push(Op::PutSession {
            jid: sender.to_owned(),
            device_id,
            version: session.version(),
            state: session.to_bytes(),
        });
        let refill: Option<Refill> =
            used_pre_key.map(|id| self.own.plan_refill(id, self.config.pre_key_count, rng));
        if let Some(refill) = &refill {
            self.own.refill_ops(refill, &mut batch);
        }
        let initial_trust = self.initial_trust(sender)?;
        let records = self.device_records(sender)?;
        let known = records.iter().position(|r| r.device_id == device_id);
        let mut record = known
            .map(|i| records[i].clone())
            .unwrap_or_else(|| new_device(sender, device_id, false));
        if record.identity_key.is_none() {
            record.identity_key = Some(*session.remote_identity().curve25519().as_bytes());
            record.trust = initial_trust;
        }
        record.last_message_at = Some(now);
        batch.ops.push(Op::PutDevice(record.clone()));
        self.store.commit(batch)?;

        // Committed: now memory.
        let trust = record.trust;
        self.cache_device(record)?;
        let heartbeat = session.receiving_chain_length() > self.config.heartbeat_after;
        self.sessions.insert(sender, device_id, session);
        if let Some(refill) = refill {
            self.own.apply_refill(refill);
            self.publish_bundle();
        }
        if known.is_none() {
            // A device that was not on the list: refresh the list, and fetch the bundles
            // of the other devices on it, so that the answer reaches them all.
            self.directory.want_bundles(sender);
            self.fetch_device_list(sender);
        }
        // Complete a new session, or answer a long one-sided chain; never answer an
        // empty message with another one.
        if body.is_some() && (used_pre_key.is_some() || heartbeat) {
            // The message is decrypted and committed; failing to answer it must not
            // lose it.
            if let Err(error) = self.empty_message_to(sender, device_id, rng) {
                tracing::warn!(%sender, device_id, %error, "could not queue the empty reply");
            }
        }
        Ok(Decrypted {
            sender: sender.to_owned(),
            device_id,
            body,
            trust,
        })
    }
}
