//! Encryption to every active, trusted device of the recipients and of the own account.

use jid::BareJid;
use rand_core::CryptoRng;

use super::{Manager, VERSION};
use crate::consts::PAYLOAD_IV_LENGTH;
use crate::error::ManagerError;
use crate::stanza::{self, legacy::EncryptedKey, legacy::EncryptedMessage};
use crate::store::{Batch, Op, Store, Trust};
use crate::{KeyMaterial, Session, encrypt_payload};

/// Why a device got no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// No trust decision yet, or distrusted.
    Untrusted(Trust),
    /// No session yet and no bundle fetched ([`Manager::prepare`] fetches it).
    NoSession,
    /// Its bundle is missing, invalid (bad signature, malformed) or shows another
    /// identity key than the one known for the device.
    BundleUnavailable,
    /// Not on its owner's device list (any more).
    NotListed,
    /// No message from it for longer than [`ManagerConfig::inactive_after_secs`].
    ///
    /// [`ManagerConfig::inactive_after_secs`]: super::ManagerConfig::inactive_after_secs
    Silent,
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

/// The keys of one fan-out and what it changes.
#[derive(Default)]
struct Fanout {
    keys: Vec<EncryptedKey>,
    done: Vec<(String, u32)>,
    skipped: Vec<SkippedDevice>,
    batch: Batch,
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
        self.sessions.get(&self.store, jid, device_id)
    }

    /// Queues what [`Manager::encrypt`] needs for `recipients` (and the own other
    /// devices): device lists not known yet, and bundles of devices without a session.
    /// Returns the number of requests now pending; answer them, then encrypt.
    pub fn prepare(&mut self, recipients: &[BareJid], now: u64) -> Result<usize, ManagerError> {
        self.clock = self.clock.max(now);
        let own = self.own.jid.clone();
        for jid in recipients.iter().map(|j| j.as_str()).chain([own.as_str()]) {
            if !self.directory.has_list(jid) && self.device_records(jid)?.is_empty() {
                self.directory.want_bundles(jid);
                self.fetch_device_list(jid);
            } else {
                self.fetch_missing_bundles(jid, now)?;
            }
        }
        Ok(self.requests.pending_count())
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
        self.clock = self.clock.max(now);
        let to = recipients
            .first()
            .ok_or(ManagerError::NoRecipients)?
            .to_string();
        let (key, payload) = encrypt_payload(VERSION, rng, body.as_bytes());
        let Fanout {
            keys,
            done,
            skipped,
            ..
        } = self.encrypt_key(recipients, &key, now)?;
        let encrypted = EncryptedMessage {
            sender_device: self.own.device_id,
            keys,
            iv: payload.iv,
            payload: Some(payload.ciphertext),
        };
        let id = message_id(rng);
        let stanza = stanza::legacy::message_element(
            &to,
            &id,
            "chat",
            &encrypted,
            self.config.fallback_body.as_deref(),
        );
        Ok(Encrypted {
            stanza,
            recipients: done,
            skipped,
        })
    }

    /// Encrypts `key` for the devices of `recipients` and the own other devices,
    /// committing the changed sessions in one batch.
    fn encrypt_key(
        &mut self,
        recipients: &[BareJid],
        key: &KeyMaterial,
        now: u64,
    ) -> Result<Fanout, ManagerError> {
        let mut jids: Vec<String> = recipients.iter().map(|j| j.as_str().to_owned()).collect();
        if !jids.contains(&self.own.jid) {
            jids.push(self.own.jid.clone());
        }
        let mut fanout = Fanout::default();
        let result = self
            .encrypt_for(&jids, key, now, &mut fanout)
            .and_then(|()| {
                // Nothing is stored for a message no recipient device could read.
                if !fanout.done.iter().any(|(jid, _)| *jid != self.own.jid) {
                    return Err(ManagerError::NoRecipientDevices {
                        skipped: fanout.skipped.clone(),
                    });
                }
                Ok(self.store.commit(std::mem::take(&mut fanout.batch))?)
            });
        if let Err(error) = result {
            // The in-memory sessions moved on; drop them so the stored state rules.
            for (jid, device_id) in &fanout.done {
                self.sessions.forget(jid, *device_id);
            }
            return Err(error);
        }
        Ok(fanout)
    }

    fn encrypt_for(
        &mut self,
        jids: &[String],
        key: &KeyMaterial,
        now: u64,
        out: &mut Fanout,
    ) -> Result<(), ManagerError> {
        for jid in jids {
            let records = self.device_records(jid)?.clone();
            for record in records {
                if *jid == self.own.jid && record.device_id == self.own.device_id {
                    continue;
                }
                let skip = |reason| SkippedDevice {
                    jid: jid.clone(),
                    device_id: record.device_id,
                    reason,
                };
                if let Some(reason) = self.inactivity(&record, now) {
                    out.skipped.push(skip(reason));
                    continue;
                }
                if !matches!(record.trust, Trust::Blind | Trust::Verified) {
                    out.skipped.push(skip(SkipReason::Untrusted(record.trust)));
                    continue;
                }
                let Some(session) = self.session(jid, record.device_id)? else {
                    out.skipped.push(skip(SkipReason::NoSession));
                    continue;
                };
                let message = session.encrypt(key.as_bytes())?;
                out.batch.ops.push(Op::PutSession {
                    jid: jid.clone(),
                    device_id: record.device_id,
                    version: VERSION,
                    state: session.to_bytes(),
                });
                out.keys.push(EncryptedKey {
                    recipient_device: record.device_id,
                    key_exchange: message.is_key_exchange(),
                    data: message.as_bytes().to_vec(),
                });
                out.done.push((jid.clone(), record.device_id));
            }
        }
        Ok(())
    }

    /// Queues an empty OMEMO message (a fresh key and no payload) for one device, to
    /// complete or refresh a session, for [`Manager::poll_message`]. Fails with
    /// [`ManagerError::NoSession`] when there is no session with the device.
    pub fn queue_empty_message(
        &mut self,
        jid: &BareJid,
        device_id: u32,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ManagerError> {
        self.empty_message_to(jid.as_str(), device_id, rng)
    }

    pub(super) fn empty_message_to(
        &mut self,
        jid: &str,
        device_id: u32,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ManagerError> {
        let key = KeyMaterial::empty_message(VERSION, rng);
        let session = self
            .session(jid, device_id)?
            .ok_or(ManagerError::NoSession)?;
        let message = session.encrypt(key.as_bytes())?;
        let state = session.to_bytes();
        let batch = Batch {
            ops: vec![Op::PutSession {
                jid: jid.to_owned(),
                device_id,
                version: VERSION,
                state,
            }],
        };
        if let Err(error) = self.store.commit(batch) {
            self.sessions.forget(jid, device_id);
            return Err(error.into());
        }
        let mut iv = vec![0u8; PAYLOAD_IV_LENGTH];
        rng.fill_bytes(&mut iv);
        let encrypted = EncryptedMessage {
            sender_device: self.own.device_id,
            keys: vec![EncryptedKey {
                recipient_device: device_id,
                key_exchange: message.is_key_exchange(),
                data: message.as_bytes().to_vec(),
            }],
            iv,
            payload: None,
        };
        let id = message_id(rng);
        self.messages.push_back(stanza::legacy::message_element(
            jid, &id, "chat", &encrypted, None,
        ));
        Ok(())
    }
}

/// A random message id.
fn message_id(rng: &mut impl CryptoRng) -> String {
    format!("omemo-{:016x}", rng.next_u64())
}
