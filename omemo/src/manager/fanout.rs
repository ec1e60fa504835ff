//! Encryption to every active, trusted device of the recipients and of the own account,
//! each in the version it is listed with: one `<encrypted>` element per version used, in
//! one stanza.

use jid::BareJid;
use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use crate::consts::PAYLOAD_IV_LENGTH;
use crate::error::ManagerError;
use crate::stanza::omemo2::RecipientKeys;
use crate::stanza::{self, EncryptedKey, legacy, omemo2, sce};
use crate::store::{Batch, Op, Store, Trust};
use crate::version::Version;
use crate::{EncryptedPayload, KeyMaterial, Session, encrypt_payload};

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
    /// The stored session with it cannot be read (corrupt, or written by a newer
    /// release); the other devices still get the message.
    SessionUnreadable,
    /// Not on its owner's device list of a version this manager speaks (any more).
    NotListed,
    /// No message from it for longer than [`ManagerConfig::inactive_after_secs`].
    ///
    /// [`ManagerConfig::inactive_after_secs`]: super::ManagerConfig::inactive_after_secs
    Silent,
    /// The server shows its owner's device list (then [`SkippedDevice::device_id`] is 0:
    /// no device is known) or its bundle to contacts with a presence subscription only:
    /// ask for one (or ask the contact to publish with the `open` access model).
    SubscriptionRequired,
}

/// One line for a person: which device, or whose devices, and why.
impl std::fmt::Display for SkippedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jid = &self.jid;
        let device = self.device_id;
        match self.reason {
            SkipReason::SubscriptionRequired if device == 0 => write!(
                f,
                "{jid}'s OMEMO devices are visible to subscribed contacts only"
            ),
            SkipReason::SubscriptionRequired => write!(
                f,
                "the bundle of device {device} of {jid} is visible to subscribed contacts only"
            ),
            SkipReason::Untrusted(trust) => {
                write!(f, "device {device} of {jid} is not trusted ({trust:?})")
            }
            SkipReason::NoSession => write!(f, "device {device} of {jid} has no session yet"),
            SkipReason::BundleUnavailable => {
                write!(
                    f,
                    "the bundle of device {device} of {jid} is missing or invalid"
                )
            }
            SkipReason::SessionUnreadable => {
                write!(
                    f,
                    "the session with device {device} of {jid} cannot be read"
                )
            }
            SkipReason::NotListed => {
                write!(f, "device {device} of {jid} is not on its device list")
            }
            SkipReason::Silent => write!(f, "device {device} of {jid} has been silent for long"),
        }
    }
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

/// A device that got a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The bare JID.
    pub jid: String,
    /// The device id.
    pub device_id: u32,
    /// The version its key is in.
    pub version: Version,
}

/// An encrypted message ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Encrypted {
    /// The `<message>` stanza (type `chat`, to the first recipient), with one
    /// `<encrypted>` element per version used.
    pub stanza: Element,
    /// Devices that got a key.
    pub recipients: Vec<Recipient>,
    /// Devices that got no key, and why.
    pub skipped: Vec<SkippedDevice>,
}

/// The payload of one message in each version, encrypted once per version.
struct Payloads {
    legacy: Option<(KeyMaterial, EncryptedPayload)>,
    omemo2: Option<(KeyMaterial, EncryptedPayload)>,
}

impl Payloads {
    fn key(&self, version: Version) -> Option<&KeyMaterial> {
        match version {
            Version::Legacy => self.legacy.as_ref().map(|(key, _)| key),
            Version::Omemo2 => self.omemo2.as_ref().map(|(key, _)| key),
        }
    }
}

/// The keys of one fan-out, by version, and what it changes.
#[derive(Default)]
struct Fanout {
    legacy_keys: Vec<EncryptedKey>,
    omemo2_keys: Vec<RecipientKeys>,
    done: Vec<Recipient>,
    batch: Batch,
}

impl Fanout {
    fn add(&mut self, recipient: Recipient, key: EncryptedKey) {
        match recipient.version {
            Version::Legacy => self.legacy_keys.push(key),
            Version::Omemo2 => match self.omemo2_keys.iter_mut().find(|k| k.jid == recipient.jid) {
                Some(group) => group.keys.push(key),
                None => self.omemo2_keys.push(RecipientKeys {
                    jid: recipient.jid.clone(),
                    keys: vec![key],
                }),
            },
        }
        self.done.push(recipient);
    }
}

impl<S: Store> Manager<S> {
    /// Whether there is a session of `version` with a device, readable or not (an
    /// unreadable one is not replaced by one built from a bundle behind the user's back).
    pub(super) fn has_session(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<bool, ManagerError> {
        match self.session(jid, device_id, version) {
            Ok(session) => Ok(session.is_some()),
            Err(error @ ManagerError::Store(_)) => Err(error),
            Err(_) => Ok(true),
        }
    }

    /// The session of `version` with a device, from memory or the store.
    pub(super) fn session(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<&mut Session>, ManagerError> {
        self.sessions.get(&self.store, jid, device_id, version)
    }

    /// Queues what [`Manager::encrypt`] needs for `recipients` (and the own other
    /// devices): device lists not fetched since the manager was opened or hidden at the
    /// last try ([`SkipReason::SubscriptionRequired`]: a presence subscription may have
    /// come since), and bundles of devices without a session. Returns the number of
    /// requests now pending; answer them, then encrypt.
    pub fn prepare(&mut self, recipients: &[BareJid], now: u64) -> Result<usize, ManagerError> {
        self.clock = self.clock.max(now);
        let own = self.own.jid.clone();
        for jid in recipients.iter().map(|j| j.as_str()).chain([own.as_str()]) {
            if self.directory.is_hidden(jid, None) {
                self.directory.forget_lists(jid);
            }
            let missing = self
                .config
                .versions
                .iter()
                .filter(|v| !self.directory.has_list(jid, *v))
                .collect();
            if self.directory.has_lists(jid, self.config.versions) {
                self.fetch_hidden_bundles(jid)?;
                self.fetch_missing_bundles(jid, now)?;
            } else {
                self.directory.want_bundles(jid);
                self.fetch_device_lists(jid, missing);
            }
        }
        Ok(self.requests.pending_count())
    }

    /// Encrypts `body` for every active, trusted device of `recipients` and the own
    /// other devices, each in its version (OMEMO 2 when the device is on its owner's
    /// OMEMO 2 list, legacy otherwise), in one `<message>` to the first recipient. In
    /// OMEMO 2 the body travels in an SCE envelope from this account to the first
    /// recipient. Devices without a key are reported in [`Encrypted::skipped`]; it fails
    /// only when no recipient device at all can read the message. All session updates
    /// are committed in one transaction, on disk when this returns.
    pub fn encrypt(
        &mut self,
        recipients: &[BareJid],
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Encrypted, ManagerError> {
        let encrypted = self.encrypt_message(recipients, body, rng, now)?;
        self.sync()?;
        Ok(encrypted)
    }

    /// [`Manager::encrypt`] with the commit deferred.
    pub(super) fn encrypt_message(
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
        self.encrypt_addressed(&to, "chat", recipients, body, rng, now)
    }

    /// Encrypts `body` for the devices of `recipients` and the own other devices in a
    /// message of type `kind` to `to` (also the SCE `to`): a contact, or a room.
    pub(super) fn encrypt_addressed(
        &mut self,
        to: &str,
        kind: &str,
        recipients: &[BareJid],
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Encrypted, ManagerError> {
        self.clock = self.clock.max(now);
        self.notice_external_changes()?;
        let mut jids: Vec<String> = recipients.iter().map(|j| j.as_str().to_owned()).collect();
        if !jids.contains(&self.own.jid) {
            jids.push(self.own.jid.clone());
        }
        let (planned, skipped) = self.plan(&jids, now)?;
        // Nothing is stored for a message no recipient device could read.
        if !planned.iter().any(|r| r.jid != self.own.jid) {
            return Err(ManagerError::NoRecipientDevices { skipped });
        }
        let payloads = Payloads {
            legacy: planned
                .iter()
                .any(|r| r.version == Version::Legacy)
                .then(|| encrypt_payload(Version::Legacy, rng, body.as_bytes())),
            omemo2: planned
                .iter()
                .any(|r| r.version == Version::Omemo2)
                .then(|| {
                    let content = vec![
                        Element::builder("body", "jabber:client")
                            .append(body)
                            .build(),
                    ];
                    let envelope = sce::seal(content, &self.own.jid, to, Some(now), rng);
                    encrypt_payload(Version::Omemo2, rng, &envelope)
                }),
        };
        let fanout = self.encrypt_keys(planned, &payloads)?;
        let mut elements = Vec::new();
        if let Some((_, payload)) = payloads.legacy {
            elements.push(
                legacy::EncryptedMessage {
                    sender_device: self.own.device_id,
                    keys: fanout.legacy_keys,
                    iv: payload.iv,
                    payload: Some(payload.ciphertext),
                }
                .to_element(),
            );
        }
        let legacy_used = !elements.is_empty();
        if let Some((_, payload)) = payloads.omemo2 {
            elements.push(
                omemo2::EncryptedMessage {
                    sender_device: self.own.device_id,
                    recipients: fanout.omemo2_keys,
                    payload: Some(payload.ciphertext),
                }
                .to_element(),
            );
        }
        // EME names the version clients without OMEMO are most likely to know about;
        // the fallback body is for legacy clients (SCE forbids one in OMEMO 2 alone).
        let eme = if legacy_used {
            Version::Legacy
        } else {
            Version::Omemo2
        };
        let fallback = self.config.fallback_body.as_deref().filter(|_| legacy_used);
        let stanza = stanza::message_with(
            to,
            &message_id(rng),
            kind,
            elements,
            Some(eme.namespace()),
            fallback,
        );
        Ok(Encrypted {
            stanza,
            recipients: fanout.done,
            skipped,
        })
    }

    /// The devices of `jids` (but this one) that get a key, with their version, and
    /// those that do not, with the reason.
    fn plan(
        &mut self,
        jids: &[String],
        now: u64,
    ) -> Result<(Vec<Recipient>, Vec<super::SkippedDevice>), ManagerError> {
        let mut planned = Vec::new();
        let mut skipped = Vec::new();
        for jid in jids {
            let records = self.device_records(jid)?.clone();
            let hidden_list = self.directory.is_hidden(jid, None);
            if records.is_empty() && hidden_list {
                skipped.push(SkippedDevice {
                    jid: jid.clone(),
                    device_id: 0,
                    reason: SkipReason::SubscriptionRequired,
                });
            }
            for record in records {
                if *jid == self.own.jid && record.device_id == self.own.device_id {
                    continue;
                }
                let mut skip = |reason| {
                    skipped.push(SkippedDevice {
                        jid: jid.clone(),
                        device_id: record.device_id,
                        reason,
                    });
                };
                if let Some(reason) = self.inactivity(&record, now) {
                    // Known from a message, but its list (or bundle) cannot be read.
                    let hidden = match reason {
                        SkipReason::NotListed => hidden_list,
                        SkipReason::BundleUnavailable => {
                            self.directory.is_hidden(jid, Some(record.device_id))
                        }
                        _ => false,
                    };
                    skip(if hidden {
                        SkipReason::SubscriptionRequired
                    } else {
                        reason
                    });
                    continue;
                }
                let Some(version) = self.version_for(&record) else {
                    skip(SkipReason::NotListed);
                    continue;
                };
                // Without a session the identity (and so the trust) may not be known yet:
                // the missing session is the reason.
                match self.session(jid, record.device_id, version) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        skip(SkipReason::NoSession);
                        continue;
                    }
                    Err(error @ ManagerError::Store(_)) => return Err(error),
                    Err(error) => {
                        tracing::warn!(%jid, device_id = record.device_id, %version, %error, "stored session unreadable; device skipped");
                        skip(SkipReason::SessionUnreadable);
                        continue;
                    }
                }
                if !matches!(record.trust, Trust::Blind | Trust::Verified) {
                    skip(SkipReason::Untrusted(record.trust));
                    continue;
                }
                planned.push(Recipient {
                    jid: jid.clone(),
                    device_id: record.device_id,
                    version,
                });
            }
        }
        Ok((planned, skipped))
    }

    /// Encrypts the payload key of each planned device's version, committing the
    /// changed sessions in one batch.
    fn encrypt_keys(
        &mut self,
        planned: Vec<Recipient>,
        payloads: &Payloads,
    ) -> Result<Fanout, ManagerError> {
        let mut fanout = Fanout::default();
        let mut encrypted: Vec<(String, u32, Version)> = Vec::new();
        let mut result = Ok(());
        for recipient in planned {
            let Some(key) = payloads.key(recipient.version) else {
                continue;
            };
            encrypted.push((
                recipient.jid.clone(),
                recipient.device_id,
                recipient.version,
            ));
            match self.encrypt_key(&recipient, key) {
                Ok((op, key)) => {
                    fanout.batch.ops.push(op);
                    fanout.add(recipient, key);
                }
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        let result = result.and_then(|()| Ok(self.commit(std::mem::take(&mut fanout.batch))?));
        if let Err(error) = result {
            // The in-memory sessions moved on; drop them so the stored state rules.
            for (jid, device_id, version) in &encrypted {
                self.sessions.forget(jid, *device_id, *version);
            }
            return Err(error);
        }
        Ok(fanout)
    }

    /// The ratchet step of one key, with the store op that saves the session.
    fn encrypt_key(
        &mut self,
        recipient: &Recipient,
        key: &KeyMaterial,
    ) -> Result<(Op, EncryptedKey), ManagerError> {
        let session = self
            .session(&recipient.jid, recipient.device_id, recipient.version)?
            .ok_or(ManagerError::NoSession)?;
        let message = session.encrypt(key.as_bytes())?;
        let op = Op::PutSession {
            jid: recipient.jid.clone(),
            device_id: recipient.device_id,
            version: recipient.version,
            state: session.to_bytes(),
        };
        let key = EncryptedKey {
            recipient_device: recipient.device_id,
            key_exchange: message.is_key_exchange(),
            data: message.as_bytes().to_vec(),
        };
        Ok((op, key))
    }

    /// Queues an empty OMEMO message (a fresh key and no payload) for one device in the
    /// version it is encrypted in, to complete or refresh a session, for
    /// [`Manager::poll_transmit`]. Fails with [`ManagerError::NoSession`] when there is no
    /// session with the device.
    pub fn queue_empty_message(
        &mut self,
        jid: &BareJid,
        device_id: u32,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ManagerError> {
        let jid = jid.as_str();
        let record = self
            .device_records(jid)?
            .iter()
            .find(|r| r.device_id == device_id)
            .cloned();
        let version = record
            .and_then(|r| self.version_for(&r))
            .or(self.config.versions.newest())
            .ok_or(ManagerError::NoSession)?;
        self.empty_message_to(jid, device_id, version, rng)
    }

    /// Queues an empty message of `version` for one device.
    pub(super) fn empty_message_to(
        &mut self,
        jid: &str,
        device_id: u32,
        version: Version,
        rng: &mut impl CryptoRng,
    ) -> Result<(), ManagerError> {
        let recipient = Recipient {
            jid: jid.to_owned(),
            device_id,
            version,
        };
        let key = KeyMaterial::empty_message(version, rng);
        let (op, key) = self.encrypt_key(&recipient, &key)?;
        if let Err(error) = self.commit(Batch { ops: vec![op] }) {
            self.sessions.forget(jid, device_id, version);
            return Err(error.into());
        }
        let element = match version {
            Version::Legacy => {
                let mut iv = vec![0u8; PAYLOAD_IV_LENGTH];
                rng.fill_bytes(&mut iv);
                legacy::EncryptedMessage {
                    sender_device: self.own.device_id,
                    keys: vec![key],
                    iv,
                    payload: None,
                }
                .to_element()
            }
            Version::Omemo2 => omemo2::EncryptedMessage {
                sender_device: self.own.device_id,
                recipients: vec![RecipientKeys {
                    jid: jid.to_owned(),
                    keys: vec![key],
                }],
                payload: None,
            }
            .to_element(),
        };
        let id = message_id(rng);
        let stanza = stanza::message_with(jid, &id, "chat", [element], None, None);
        self.queue_message(stanza, None);
        Ok(())
    }
}

/// A random message id.
fn message_id(rng: &mut impl CryptoRng) -> String {
    format!("omemo-{:016x}", rng.next_u64())
}
