//! The sans-I/O surface: one entry point for every incoming stanza, `send` that holds a
//! message until what it needs has arrived, and the queues and timer the caller drives.

use jid::BareJid;
use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use super::events::{Event, Handled, MessageId, Via};
use crate::consts::REPAIR_EVERY_SECS;
use crate::error::ManagerError;
use crate::stanza;
use crate::stanza::carbons::{self, Carbon};
use crate::stanza::mam::{self, ArchiveResult};
use crate::store::Store;

impl<S: Store> Manager<S> {
    /// Takes any stanza that arrived on the stream and says what it was: an answer to
    /// one of the manager's requests, a device-list notification, an OMEMO message of
    /// either version (directly or as a carbon copy), or something that is not the
    /// manager's ([`Handled::Unhandled`]). Then sends what became due: follow-up
    /// stanzas and messages given to [`Manager::send`] whose fetches are done go to
    /// [`Manager::poll_transmit`], events to [`Manager::poll_event`].
    ///
    /// Fails only when the store fails; a message that does not decrypt is
    /// [`Handled::Undecryptable`].
    pub fn handle_stanza(
        &mut self,
        stanza: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        let handled = self.classify(stanza, rng, now)?;
        self.flush_outbox(rng, now);
        Ok(handled)
    }

    fn classify(
        &mut self,
        stanza: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        match stanza.name() {
            "iq" if matches!(stanza.attr("type"), Some("result" | "error")) => {
                Ok(if self.handle_iq(stanza, rng, now)? {
                    Handled::Response
                } else {
                    Handled::Unhandled
                })
            }
            "presence" => Ok(self.room_update(stanza, now).unwrap_or(Handled::Unhandled)),
            "message" if stanza.attr("type") == Some("groupchat") => self
                .room_message(stanza, rng, now)
                .unwrap_or(Ok(Handled::Unhandled)),
            "message" if stanza.attr("type") != Some("error") => {
                // A joined room's notice of an affiliation change (from its bare JID).
                if let Some(handled) = self.room_update(stanza, now) {
                    return Ok(handled);
                }
                if let Some(event) = stanza::parse_event(stanza) {
                    // PEP notifications come from the bare JID that owns the node; a
                    // message from anywhere else (a full JID: any client) is no event.
                    let Some(owner) = stanza
                        .attr("from")
                        .and_then(|from| jid::Jid::new(from).ok())
                        .filter(|from| from.resource().is_none())
                    else {
                        tracing::warn!(
                            from = stanza.attr("from").unwrap_or_default(),
                            "pubsub event not from a bare JID; dropped"
                        );
                        return Ok(Handled::Dropped(
                            "pubsub event not from its owner's bare JID",
                        ));
                    };
                    let owner = owner.to_bare().to_string();
                    return Ok(if self.handle_event(&owner, event, now)? {
                        Handled::DeviceList
                    } else {
                        Handled::Unhandled
                    });
                }
                match mam::unwrap(stanza) {
                    ArchiveResult::Result(archived) => {
                        return self.archived(stanza, archived, rng, now);
                    }
                    ArchiveResult::Invalid(why) => return Ok(Handled::Dropped(why)),
                    ArchiveResult::None => {}
                }
                let own = BareJid::new(&self.own.jid).map_err(|_| ManagerError::MissingSender)?;
                let handled = match carbons::unwrap(stanza, &own) {
                    Carbon::None => self.receive(stanza, Via::Direct, rng, now),
                    Carbon::Received(inner) => self.receive(&inner, Via::CarbonReceived, rng, now),
                    Carbon::Sent(inner) => self.receive(&inner, Via::CarbonSent, rng, now),
                    Carbon::Invalid(why) => {
                        tracing::warn!(
                            from = stanza.attr("from").unwrap_or_default(),
                            why,
                            "carbon dropped"
                        );
                        return Ok(Handled::Dropped(why));
                    }
                }?;
                self.note_read_online(None, stanza, now);
                Ok(handled)
            }
            _ => Ok(Handled::Unhandled),
        }
    }

    /// An OMEMO message of a version spoken, or [`Handled::Unhandled`].
    pub(super) fn receive(
        &mut self,
        message: &Element,
        via: Via,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        // Group chat messages of joined rooms are read elsewhere; others are the
        // application's.
        if message.attr("type") == Some("groupchat") {
            return Ok(Handled::Unhandled);
        }
        // A private message through a joined room comes from its bare JID plus a
        // nickname: its sender would be taken for the room.
        if via == Via::Direct
            && !self.rooms.is_empty()
            && self.is_encrypted(message)
            && message
                .attr("from")
                .and_then(|from| jid::Jid::new(from).ok())
                .is_some_and(|from| self.rooms.contains_key(from.to_bare().as_str()))
        {
            return Ok(Handled::Dropped(
                "OMEMO private message through a room: its sender cannot be told",
            ));
        }
        // The envelope of a copy of a sent message names the contact it went to; the
        // archive holds the messages the account sent too.
        let to_bare = |attr: &str| {
            message
                .attr(attr)
                .and_then(|jid| jid::Jid::new(jid).ok())
                .map(|jid| jid.to_bare().to_string())
                .unwrap_or_default()
        };
        let sent_by_own_account = match via {
            Via::CarbonSent => true,
            Via::Archive => to_bare("from") == self.own.jid,
            Via::Direct | Via::CarbonReceived | Via::Room | Via::RoomArchive => false,
        };
        let recipient = if sent_by_own_account {
            to_bare("to")
        } else {
            self.own.jid.clone()
        };
        match self.decrypt_for(message, &recipient, rng, now) {
            Ok(message) if message.body.is_some() || !message.content.is_empty() => {
                Ok(Handled::Message { message, via })
            }
            Ok(_) => Ok(Handled::Consumed),
            Err(ManagerError::NotEncrypted) => Ok(Handled::Unhandled),
            Err(error @ ManagerError::Store(_)) => Err(error),
            Err(error) if error.is_duplicate() || error == ManagerError::OwnMessage => {
                Ok(Handled::Consumed)
            }
            Err(ManagerError::NotForThisDevice) if !has_payload(message) => Ok(Handled::Consumed),
            Err(error) => {
                if error == ManagerError::NotForThisDevice && via == Via::Direct {
                    self.repair_own_device(now);
                }
                // Not for archived messages: an old one whose keys are gone says nothing
                // about the session now.
                if heals(&error) && via != Via::Archive {
                    self.heal(message, now);
                }
                tracing::warn!(from = message.attr("from").unwrap_or_default(), %error, ?via, "OMEMO message not decrypted");
                Ok(Handled::Undecryptable { error, via })
            }
        }
    }

    /// A message for this device that no session can read (its prekey is gone, or there
    /// is no session): builds a new session to the sender's device and sends it an empty
    /// key exchange (XEP-0384: "create a session and notify the sender"), at most once
    /// per [`ManagerConfig::rebuild_every_secs`](super::ManagerConfig::rebuild_every_secs)
    /// per device.
    fn heal(&mut self, message: &Element, now: u64) {
        let Some(sender) = message
            .attr("from")
            .and_then(|from| jid::Jid::new(from).ok())
            .map(|from| from.to_bare().to_string())
        else {
            return;
        };
        let Some((device_id, version)) = self.addressed_element(message) else {
            return;
        };
        let every = self.config.rebuild_every_secs;
        if self
            .directory
            .rebuild_due(&sender, device_id, version, now, every)
        {
            tracing::info!(%sender, device_id, %version, "rebuilding the session");
            self.fetch_bundle(&sender, device_id, version, true);
        } else {
            tracing::info!(%sender, device_id, %version, "session rebuild held back");
            self.events.push_back(Event::RebuildHeldBack {
                jid: sender,
                device_id,
                version,
            });
        }
    }

    /// Builds new sessions with the devices of `jid` (only `device_id` when given), each
    /// in its version, from their bundles, and sends each an empty key exchange: the
    /// manual reset XEP-0384 asks clients to offer. Not rate-limited; an
    /// [`Event::SessionRebuilt`] follows per device.
    pub fn reset_session(
        &mut self,
        jid: &BareJid,
        device_id: Option<u32>,
        now: u64,
    ) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        let jid = jid.as_str();
        let records = self.device_records(jid)?.clone();
        let mut targets: Vec<(u32, crate::Version)> = records
            .iter()
            .filter(|r| device_id.is_none_or(|id| id == r.device_id))
            .filter_map(|r| Some((r.device_id, self.version_for(r)?)))
            .collect();
        if jid == self.own.jid {
            targets.retain(|(id, _)| *id != self.own.device_id);
        }
        if let (Some(id), true) = (device_id, targets.is_empty()) {
            return Err(ManagerError::UnknownDevice {
                jid: jid.to_owned(),
                device_id: id,
            });
        }
        for (id, version) in targets {
            self.fetch_bundle(jid, id, version, true);
        }
        Ok(())
    }

    /// A sender did not encrypt for this device: maybe the own device lists lost it.
    /// Fetches them again (this device is put back where missing) and republishes the
    /// bundles, at most once per [`REPAIR_EVERY_SECS`].
    fn repair_own_device(&mut self, now: u64) {
        if self
            .last_repair
            .is_some_and(|at| now.saturating_sub(at) < REPAIR_EVERY_SECS)
        {
            return;
        }
        self.last_repair = Some(now);
        tracing::info!("a message was not for this device: checking the own device lists");
        self.republish();
    }

    /// Queues `body` for `recipients` (bare JIDs; the first one is the `to` of the
    /// stanza) and the own other devices. It is encrypted as soon as the device lists
    /// and bundles it needs have arrived, or when
    /// [`ManagerConfig::send_timeout_secs`](super::ManagerConfig::send_timeout_secs)
    /// have passed (then with the devices known by then); its stanza goes to
    /// [`Manager::poll_transmit`] and an [`Event::Sent`] or [`Event::NotSent`] names the
    /// returned id. Messages go out in the order given.
    pub fn send(
        &mut self,
        recipients: &[BareJid],
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<MessageId, ManagerError> {
        if recipients.is_empty() {
            return Err(ManagerError::NoRecipients);
        }
        self.prepare(recipients, now)?;
        let deadline = now.saturating_add(self.config.send_timeout_secs);
        let id = self.outbox.push(recipients.to_vec(), None, body, deadline);
        self.flush_outbox(rng, now);
        Ok(id)
    }

    /// Queues `body` for every member of the joined `room` (and the own other devices),
    /// as [`Manager::send`] does for contacts: it is encrypted once the room's features
    /// and lists and its members' devices have arrived (or the deadline passed), into a
    /// `groupchat` message to the room; [`Event::Sent`] or [`Event::NotSent`] (for a room
    /// that cannot carry OMEMO, [`ManagerError::RoomNotUsable`]) names the returned id,
    /// and the room's copy coming back is [`Handled::Reflected`] with it.
    ///
    /// # Errors
    ///
    /// [`ManagerError::RoomNotJoined`] for a room not joined.
    pub fn send_to_room(
        &mut self,
        room: &BareJid,
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<MessageId, ManagerError> {
        self.clock = self.clock.max(now);
        if !self.rooms.contains_key(room.as_str()) {
            return Err(ManagerError::RoomNotJoined {
                room: room.to_string(),
            });
        }
        self.refresh_member_lists(room.as_str(), now)?;
        let deadline = now.saturating_add(self.config.send_timeout_secs);
        let id = self
            .outbox
            .push(Vec::new(), Some(room.clone()), body, deadline);
        self.flush_outbox(rng, now);
        Ok(id)
    }

    /// Encrypts the queued messages whose fetches are done (for a room: its features
    /// and lists, and its members' devices) or whose deadline passed; messages to one
    /// destination (a room, or a set of contacts) go in the order given, and one that
    /// waits does not hold up messages to others.
    fn flush_outbox(&mut self, rng: &mut impl CryptoRng, now: u64) {
        loop {
            let mut waiting: Vec<(Option<BareJid>, Vec<BareJid>)> = Vec::new();
            let mut due = None;
            for (index, queued) in self.outbox.iter().enumerate() {
                let destination = (queued.room.clone(), queued.recipients.clone());
                if waiting.contains(&destination) {
                    continue;
                }
                let waits_for = match &queued.room {
                    Some(room) if !self.room_ready(room.as_str()) => None,
                    Some(room) => Some(self.room_recipients(room.as_str()).unwrap_or_default()),
                    None => Some(queued.recipients.clone()),
                };
                let ready = queued.deadline <= now
                    || waits_for.is_some_and(|jids| {
                        !jids
                            .iter()
                            .map(|jid| jid.as_str())
                            .chain([self.own.jid.as_str()])
                            .any(|jid| self.requests.fetching(jid))
                    });
                if ready {
                    due = Some(index);
                    break;
                }
                waiting.push(destination);
            }
            let Some(queued) = due.and_then(|index| self.outbox.take(index)) else {
                return;
            };
            let encrypted = match &queued.room {
                Some(room) => {
                    self.encrypt_room_message(room, Some(queued.id), &queued.body, rng, now)
                }
                None => self.encrypt_message(&queued.recipients, &queued.body, rng, now),
            };
            match encrypted {
                Ok(encrypted) => {
                    tracing::debug!(id = %queued.id, devices = encrypted.recipients.len(), skipped = encrypted.skipped.len(), "message encrypted");
                    let sent = Event::Sent {
                        id: queued.id,
                        recipients: encrypted.recipients,
                        skipped: encrypted.skipped,
                    };
                    self.queue_message(encrypted.stanza, Some(sent));
                }
                Err(error) => {
                    tracing::warn!(id = %queued.id, %error, "message not sent");
                    self.events.push_back(Event::NotSent {
                        id: queued.id,
                        error,
                    });
                }
            }
        }
    }

    /// The next stanza to send: IQ requests (their answers go to
    /// [`Manager::handle_stanza`]), then messages (encrypted ones from
    /// [`Manager::send`], whose [`Event::Sent`] follows now, session completions,
    /// heartbeats). A request's answer is awaited for a minute from the latest `now`
    /// given to the manager, so take stanzas only while the stream is up, and give the
    /// time of a new stream to [`Manager::connected`].
    ///
    /// Before it hands out a stanza it puts the state the stanza depends on on disk
    /// ([`Store::sync`]): one disk write for everything handled since the last one,
    /// however many messages that was. So handle every stanza that has arrived (and send
    /// the answers), then poll; and call [`Manager::sync`] before waiting for more
    /// (another process waits for the store meanwhile).
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when the state cannot be written: the stanzas built on it
    /// are dropped (see [`Store::sync`]; reopen the manager).
    pub fn poll_transmit(&mut self) -> Result<Option<Element>, ManagerError> {
        if self.messages.is_empty() && !self.requests.has_queued() {
            return Ok(None);
        }
        self.sync()?;
        if let Some(request) = self.requests.poll(self.clock) {
            return Ok(Some(request.stanza));
        }
        let Some(outgoing) = self.messages.pop_front() else {
            return Ok(None);
        };
        self.durable_messages -= 1;
        if let Some(sent) = outgoing.sent {
            self.events.push_back(sent);
        }
        Ok(Some(outgoing.stanza))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Manager::handle_timeout`] must run next (Unix seconds): a queued message
    /// that stops waiting, a request whose answer is overdue, a signed prekey rotation.
    pub fn poll_timeout(&self) -> Option<u64> {
        [
            self.outbox.next_deadline(),
            self.requests.next_expiry(),
            self.own.next_rotation(
                self.config.signed_pre_key_rotation_secs,
                self.config.signed_pre_key_grace_secs,
            ),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does what is due at `now`: sends the queued messages whose deadline passed,
    /// forgets requests whose answer never came (after a minute, so that they are asked
    /// again), rotates the signed prekeys.
    pub fn handle_timeout(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        self.expire_requests(now);
        self.archive_pages_lost(rng, now)?;
        self.rooms_expired(now);
        let rotated = self.rotate_signed_pre_key(rng, now);
        self.flush_outbox(rng, now);
        rotated
    }

    /// Messages given to [`Manager::send`] that are still waiting.
    pub fn queued_messages(&self) -> usize {
        self.outbox.len()
    }
}

/// Failures a new session heals: the sender used a prekey this device no longer has, or
/// no session exists. Never a failed MAC or a bad payload, which anyone can forge.
fn heals(error: &ManagerError) -> bool {
    matches!(
        error,
        ManagerError::UnknownPreKey(_)
            | ManagerError::UnknownSignedPreKey(_)
            | ManagerError::NoSession
    )
}

/// Whether an OMEMO message carries a payload in any version (an empty one is a key
/// transport: one for another device is no loss).
fn has_payload(message: &Element) -> bool {
    message.children().any(|encrypted| {
        encrypted.name() == "encrypted" && encrypted.children().any(|c| c.name() == "payload")
    })
}
