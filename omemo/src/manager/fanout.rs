//! Encryption to every active, trusted device of the recipients and of the own account.

use jid::BareJid;
use rand_core::CryptoRng;

use super::Manager;
use crate::error::ManagerError;
use crate::stanza::{self, EncryptedKey, EncryptedMessage};
use crate::store::{Batch, Op, Store, Trust};
use crate::{KeyMaterial, Session, encrypt_payload};

/// Why a device got no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// No trust decision yet, or distrusted.
    Untrusted(Trust),
    /// No session and no usable bundle (not fetched, missing or invalid).
    NoSession,
    /// Not on the device list any more, its bundle failed, or silent for too long.
    Inactive,
}

/// A device that got no key, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedDevice {
    /// The bare JID.
    pub jid: String,
    /// The device id.
    pub device_id: u32,
    /// Why.
    pub reason: SkipReason,
}

/// An encrypted message ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Encrypted {
    /// The `<message>` stanza (type `chat`, to the first recipient).
    pub stanza: minidom::Element,
    /// Devices that got a key, as (bare JID, device id).
    pub recipients: Vec<(String, u32)>,
    /// Devices that got no key, and why.
    pub skipped: Vec<SkippedDevice>,
}

impl<S: Store> Manager<S> {
    /// The session with a device, from memory or the store.
    pub(super) fn session(
        &mut self,
        jid: &str,
        device_id: u32,
    ) -> Result<Option<&mut Session>, ManagerError> {
        let key = (jid.to_owned(), device_id);
        if !self.sessions.contains_key(&key) {
            let Some(bytes) = self.store.load_session(jid, device_id)? else {
                return Ok(None);
            };
            let mut session = Session::from_bytes(&bytes)?;
            session.set_limits(self.config.ratchet_limits);
            self.sessions.insert(key.clone(), session);
        }
        Ok(self.sessions.get_mut(&key))
    }

    /// Queues what [`Manager::encrypt`] needs for `recipients` (and the own other
    /// devices): device lists not known yet, and bundles of devices without a session.
    /// Returns the number of requests now pending; answer them, then encrypt.
    pub fn prepare(&mut self, recipients: &[BareJid], now: u64) -> Result<usize, ManagerError> {
        let own = self.jid.clone();
        for jid in recipients.iter().map(|j| j.as_str()).chain([own.as_str()]) {
            if !self.known_lists.contains(jid) && self.device_records(jid)?.is_empty() {
                self.wanted.insert(jid.to_owned());
                self.fetch_device_list(jid);
            } else {
                self.fetch_missing_bundles(jid, now)?;
            }
        }
        Ok(self.pending.len())
    }

    /// Encrypts `body` for every active, trusted device of `recipients` and the own
    /// other devices, in one `<message>` to the first recipient. Devices without a key
    /// are reported in [`Encrypted::skipped`]; it fails only when no recipient device at
    /// all can read the message. All session updates are committed in one transaction.
    pub fn encrypt(
        &mut self,
        recipients: &[BareJid],
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Encrypted, ManagerError> {
        let to = recipients
            .first()
            .ok_or(ManagerError::NoRecipients)?
            .to_string();
        let (key, payload) = encrypt_payload(rng, body.as_bytes());
        let (keys, recipients_done, skipped) = self.encrypt_key(recipients, &key, now, false)?;
        if !recipients_done.iter().any(|(jid, _)| *jid != self.jid) {
            return Err(ManagerError::NoRecipientDevices { skipped });
        }
        let encrypted = EncryptedMessage {
            sender_device: self.device_id,
            keys,
            iv: payload.iv,
            payload: Some(payload.ciphertext),
        };
        let id = message_id(rng);
        let stanza = stanza::message_element(
            &to,
            &id,
            "chat",
            &encrypted,
            self.config.fallback_body.as_deref(),
        );
        Ok(Encrypted {
            stanza,
            recipients: recipients_done,
            skipped,
        })
    }

    /// Encrypts `key` for the devices of `recipients` (plus the own other devices unless
    /// `only_recipients`), committing the changed sessions in one batch.
    #[allow(clippy::type_complexity)]
    pub(super) fn encrypt_key(
        &mut self,
        recipients: &[BareJid],
        key: &KeyMaterial,
        now: u64,
        only_recipients: bool,
    ) -> Result<(Vec<EncryptedKey>, Vec<(String, u32)>, Vec<SkippedDevice>), ManagerError> {
        let mut jids: Vec<String> = recipients.iter().map(|j| j.as_str().to_owned()).collect();
        if !only_recipients && !jids.contains(&self.jid) {
            jids.push(self.jid.clone());
        }
        let mut keys = Vec::new();
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        let mut batch = Batch::default();
        for jid in &jids {
            let records = self.device_records(jid)?.clone();
            for record in records {
                if *jid == self.jid && record.device_id == self.device_id {
                    continue;
                }
                let skip = |reason| SkippedDevice {
                    jid: jid.clone(),
                    device_id: record.device_id,
                    reason,
                };
                if !self.is_active(&record, now) {
                    skipped.push(skip(SkipReason::Inactive));
                    continue;
                }
                if !matches!(record.trust, Trust::Blind | Trust::Verified) {
                    skipped.push(skip(SkipReason::Untrusted(record.trust)));
                    continue;
                }
                let Some(session) = self.session(jid, record.device_id)? else {
                    skipped.push(skip(SkipReason::NoSession));
                    continue;
                };
                let message = session.encrypt(key.as_bytes())?;
                batch.ops.push(Op::PutSession {
                    jid: jid.clone(),
                    device_id: record.device_id,
                    state: session.to_bytes(),
                });
                keys.push(EncryptedKey {
                    recipient_device: record.device_id,
                    pre_key: message.is_pre_key(),
                    data: message.as_bytes().to_vec(),
                });
                done.push((jid.clone(), record.device_id));
            }
        }
        if let Err(error) = self.store.commit(batch) {
            // The in-memory sessions moved on; drop them so the stored state rules.
            for (jid, device_id) in &done {
                self.sessions.remove(&(jid.clone(), *device_id));
            }
            return Err(error.into());
        }
        Ok((keys, done, skipped))
    }

    /// An empty OMEMO message (fresh key, no payload) to one device, to complete a
    /// session or as a heartbeat; queued for [`Manager::poll_message`].
    pub(super) fn queue_empty_message(
        &mut self,
        jid: &str,
        device_id: u32,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ManagerError> {
        let key = KeyMaterial::empty_message(rng);
        let Some(session) = self.session(jid, device_id)? else {
            return Ok(());
        };
        let message = session.encrypt(key.as_bytes())?;
        let state = session.to_bytes();
        self.store.commit(Batch {
            ops: vec![Op::PutSession {
                jid: jid.to_owned(),
                device_id,
                state,
            }],
        })?;
        let mut iv = vec![0u8; 12];
        rng.fill_bytes(&mut iv);
        let encrypted = EncryptedMessage {
            sender_device: self.device_id,
            keys: vec![EncryptedKey {
                recipient_device: device_id,
                pre_key: message.is_pre_key(),
                data: message.as_bytes().to_vec(),
            }],
            iv,
            payload: None,
        };
        let id = message_id(rng);
        self.messages
            .push_back(stanza::message_element(jid, &id, "chat", &encrypted, None));
        Ok(())
    }
}

/// A random message id.
fn message_id(rng: &mut impl CryptoRng) -> String {
    format!("omemo-{:016x}", rng.next_u64())
}
