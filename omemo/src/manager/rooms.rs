//! Group chats (XEP-0045; XEP-0384 §Group Chats): rooms the application joined, whose
//! messages are encrypted to every member's devices.
//!
//! A room carries OMEMO only when it is non-anonymous and members-only (its disco#info
//! says so), as Conversations, Dino and QXmpp require: then its member, admin and owner
//! lists name everyone who may read along, offline members included, and every message
//! is encrypted to all of them (outcasts and those removed are not on the lists). The
//! lists are read when the room is joined and kept current from the affiliations in its
//! presences and notices. The real JID behind each nickname comes from the occupants'
//! presences and is kept in the store, across nickname changes and restarts, so that a
//! message is attributed (and its sender's membership checked) even when its author has
//! left or renamed. This device never encrypts to itself: its own messages coming back
//! from the room are recognised by their ids.

use std::collections::{BTreeMap, HashMap, VecDeque};

use jid::BareJid;
use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use super::events::{Event, Handled, MessageId, Via};
use super::request::Pending;
use crate::error::{ManagerError, RoomRefusal};
use crate::stanza::muc::{self, Affiliation, RoomFeatures};
use crate::store::{Batch, Op, Store};

/// Ids of the messages this device sent to one room that are remembered to recognise
/// them when the room reflects them.
const SENT_REMEMBERED: usize = 256;

/// At most once in this many seconds per room, a message to it asks again for the device
/// lists of members whose lists could not be read.
const MEMBER_LISTS_AGAIN_SECS: u64 = 60;

/// A joined room.
pub(super) struct Room {
    /// This device's nickname in it.
    nick: String,
    /// Its disco#info features, once read (`None` also after a failed query).
    features: Option<RoomFeatures>,
    /// The lists still to arrive.
    lists_pending: Vec<Affiliation>,
    /// Whether a query failed or went unanswered (the room is then not usable until
    /// joined again).
    unreadable: bool,
    /// Whether the room showed this device's own presence (status 110): it is in.
    entered: bool,
    /// Whether the room refused to let this device in (an error presence).
    join_failed: bool,
    /// Whether [`Event::RoomReady`] went out for this join.
    announced: bool,
    /// The stream it was joined on is gone: it waits for [`Manager::join_room`] on the
    /// next one (its queries were dropped with the stream, not left unanswered).
    stream_lost: bool,
    /// When a message to it last asked again for members' device lists.
    lists_asked_at: Option<u64>,
    /// Whether the application asked to catch up with its archive once it is ready.
    pub(super) catch_up_wanted: bool,
    /// Whether the store knew occupants of it when it was joined: it was joined before
    /// (an archive position it lacks is then from before room archives were read).
    seen_before: bool,
    /// Members, admins and owners by real bare JID.
    members: BTreeMap<String, Affiliation>,
    /// Real bare JIDs by nickname, as the store keeps them.
    occupants: HashMap<String, String>,
    /// Stanza ids of the messages this device sent here, with the id `send_to_room`
    /// returned (`None` for `encrypt_for_room`), oldest first.
    sent: VecDeque<(String, Option<MessageId>)>,
}

impl Room {
    /// Whether everything it waits for is in: this device entered, its features and all
    /// three lists arrived (or a query failed).
    pub(super) fn ready(&self) -> bool {
        !self.stream_lost
            && (self.unreadable
                || self.join_failed
                || (self.entered && self.features.is_some() && self.lists_pending.is_empty()))
    }

    /// Why it cannot carry OMEMO (now), if it cannot.
    fn refusal(&self) -> Option<RoomRefusal> {
        match self.features {
            _ if self.join_failed => Some(RoomRefusal::NotEntered),
            _ if self.unreadable => Some(RoomRefusal::Unreadable),
            Some(f) if !f.non_anonymous => Some(RoomRefusal::Anonymous),
            Some(f) if !f.members_only => Some(RoomRefusal::NotMembersOnly),
            _ if !self.entered => Some(RoomRefusal::NotEntered),
            None => Some(RoomRefusal::NotReady),
            Some(_) if !self.lists_pending.is_empty() => Some(RoomRefusal::NotReady),
            Some(_) => None,
        }
    }

    /// Why a message in it cannot be attributed to a member (now), if it cannot: as
    /// [`Room::refusal`], except that messages before this device's own presence (the
    /// room's history) are read once its features and lists are in.
    fn attribution_refusal(&self) -> Option<RoomRefusal> {
        match self.refusal() {
            None | Some(RoomRefusal::NotEntered)
                if self.features.is_none() || !self.lists_pending.is_empty() =>
            {
                Some(RoomRefusal::NotReady)
            }
            None | Some(RoomRefusal::NotEntered) => None,
            other => other,
        }
    }

    /// Whether what it says about its occupants is worth keeping: not for rooms that
    /// cannot carry OMEMO (anyone may come and go, and rename, there).
    fn keeps_occupants(&self) -> bool {
        self.features
            .is_none_or(|f| f.non_anonymous && f.members_only)
    }
}

impl<S: Store> Manager<S> {
    /// Follows `room`, which the application joins (or joined) with the nickname `nick`:
    /// queues the queries of its features and of its member, admin and owner lists, and
    /// loads the nicknames known from earlier sessions. Pass the room's presences and
    /// messages to [`Manager::handle_stanza`]; [`Event::RoomReady`] says when it can be
    /// written to. Joining again (after a reconnection) reads everything again.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when the store cannot be read.
    pub fn join_room(&mut self, room: &BareJid, nick: &str, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        let room = room.as_str().to_owned();
        let occupants: HashMap<String, String> =
            self.store.load_room_occupants(&room)?.into_iter().collect();
        self.rooms.insert(
            room.clone(),
            Room {
                nick: nick.to_owned(),
                features: None,
                lists_pending: Affiliation::ALL.to_vec(),
                unreadable: false,
                entered: false,
                join_failed: false,
                announced: false,
                stream_lost: false,
                lists_asked_at: None,
                catch_up_wanted: false,
                seen_before: !occupants.is_empty(),
                members: BTreeMap::new(),
                occupants,
                sent: VecDeque::new(),
            },
        );
        let target = room.clone();
        self.queue(Pending::RoomFeatures { room: room.clone() }, |id| {
            muc::room_info_iq(id, &target)
        });
        for affiliation in Affiliation::ALL {
            let target = room.clone();
            self.queue(
                Pending::RoomList {
                    room: room.clone(),
                    affiliation,
                },
                |id| muc::affiliation_list_iq(id, &target, affiliation),
            );
        }
        Ok(())
    }

    /// Stops following `room` (the nicknames stay in the store); messages queued for it
    /// are not sent ([`Event::NotSent`] with [`ManagerError::RoomNotJoined`]).
    pub fn leave_room(&mut self, room: &BareJid) {
        self.rooms.remove(room.as_str());
        self.stall_catch_up(room.as_str());
        for id in self.outbox.remove_room(room) {
            self.events.push_back(Event::NotSent {
                id,
                error: ManagerError::RoomNotJoined {
                    room: room.to_string(),
                },
            });
        }
    }

    /// A message to `room` is about to be queued: members whose device lists could not
    /// be read (one who had published none when the room was joined) are asked again, at
    /// most once a minute per room.
    pub(super) fn refresh_member_lists(
        &mut self,
        room: &str,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(joined) = self.rooms.get_mut(room) else {
            return Ok(());
        };
        if !joined.ready()
            || joined
                .lists_asked_at
                .is_some_and(|at| now.saturating_sub(at) < MEMBER_LISTS_AGAIN_SECS)
        {
            return Ok(());
        }
        joined.lists_asked_at = Some(now);
        if let Ok(members) = self.room_recipients(room) {
            self.prepare(&members, now)?;
        }
        Ok(())
    }

    /// The real bare JIDs of `room`'s members, admins and owners, as known now.
    ///
    /// # Errors
    ///
    /// [`ManagerError::RoomNotJoined`] for a room not joined.
    pub fn room_members(&self, room: &BareJid) -> Result<Vec<String>, ManagerError> {
        Ok(self
            .joined(room.as_str())?
            .members
            .keys()
            .cloned()
            .collect())
    }

    fn joined(&self, room: &str) -> Result<&Room, ManagerError> {
        self.rooms
            .get(room)
            .ok_or_else(|| ManagerError::RoomNotJoined {
                room: room.to_owned(),
            })
    }

    /// The members to encrypt to (all but this account), or why the room cannot carry
    /// OMEMO.
    pub(super) fn room_recipients(&self, room: &str) -> Result<Vec<BareJid>, ManagerError> {
        let joined = self.joined(room)?;
        if let Some(reason) = joined.refusal() {
            return Err(ManagerError::RoomNotUsable {
                room: room.to_owned(),
                reason,
            });
        }
        Ok(joined
            .members
            .keys()
            .filter(|jid| **jid != self.own.jid)
            .filter_map(|jid| BareJid::new(jid).ok())
            .collect())
    }

    /// Whether `room` is joined, ready, and can carry OMEMO.
    pub(super) fn room_usable(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| r.refusal().is_none())
    }

    /// Starts (or goes on with) the catch-up with the ready `room`'s archive: not for a
    /// room that cannot carry OMEMO (one under way ends a minute later), nor one that
    /// keeps no archive. A room never read is read from when the oldest signed prekey
    /// kept was made (a member added while away reads what was encrypted to it since);
    /// one joined before room archives were read, from now.
    pub(super) fn start_room_catch_up(&mut self, room: &str, now: u64) -> Result<(), ManagerError> {
        let Some(joined) = self.rooms.get(room) else {
            return Ok(());
        };
        if joined.refusal().is_some() {
            self.stall_catch_up(room);
            return Ok(());
        }
        if !joined.features.is_some_and(|f| f.archived) {
            tracing::info!(%room, "the room keeps no archive: nothing to catch up with");
            self.history.held.remove(room);
            return Ok(());
        }
        let first_read_from = if joined.seen_before {
            now
        } else {
            self.own.oldest_signed_pre_key_at()
        };
        self.start_catch_up(room, first_read_from, now)
    }

    /// Whether `room` is joined and its features and lists arrived.
    pub(super) fn room_ready(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(Room::ready)
    }

    /// Encrypts `body` to every member of `room` (and the own other devices), at once,
    /// as a `groupchat` message to the room (in OMEMO 2, the SCE `to` is the room).
    ///
    /// # Errors
    ///
    /// [`ManagerError::RoomNotJoined`], [`ManagerError::RoomNotUsable`] (also while its
    /// features and lists have not arrived), and what [`Manager::encrypt`] fails with.
    pub fn encrypt_for_room(
        &mut self,
        room: &BareJid,
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<super::Encrypted, ManagerError> {
        let encrypted = self.encrypt_room_message(room, None, body, rng, now)?;
        self.sync()?;
        Ok(encrypted)
    }

    /// The stream is gone: every room waits to be joined again (this device is no longer
    /// in it, and its queries were dropped).
    pub(super) fn rooms_connection_lost(&mut self) {
        for joined in self.rooms.values_mut() {
            joined.stream_lost = true;
            joined.entered = false;
        }
    }

    /// Rooms whose queries went unanswered (expired): unreadable, and said so.
    pub(super) fn rooms_expired(&mut self, now: u64) {
        let stuck: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, joined)| !joined.ready() && !joined.stream_lost)
            .filter(|(room, joined)| {
                let features = Pending::RoomFeatures {
                    room: (*room).clone(),
                };
                let waiting = (joined.features.is_none() && self.requests.is_pending(&features))
                    || joined.lists_pending.iter().any(|affiliation| {
                        self.requests.is_pending(&Pending::RoomList {
                            room: (*room).clone(),
                            affiliation: *affiliation,
                        })
                    });
                !waiting && (joined.features.is_none() || !joined.lists_pending.is_empty())
            })
            .map(|(room, _)| room.clone())
            .collect();
        for room in stuck {
            if let Some(joined) = self.rooms.get_mut(&room) {
                joined.unreadable = true;
            }
            self.room_progress(&room, now);
        }
    }

    /// [`Manager::encrypt_for_room`] with the commit deferred, remembering the stanza id
    /// (and `id`) to recognise the room's reflection.
    pub(super) fn encrypt_room_message(
        &mut self,
        room: &BareJid,
        id: Option<MessageId>,
        body: &str,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<super::Encrypted, ManagerError> {
        let recipients = self.room_recipients(room.as_str())?;
        if recipients.is_empty() {
            return Err(ManagerError::NoRecipients);
        }
        let encrypted =
            self.encrypt_addressed(room.as_str(), "groupchat", &recipients, body, rng, now)?;
        if let (Some(joined), Some(stanza_id)) = (
            self.rooms.get_mut(room.as_str()),
            encrypted.stanza.attr("id"),
        ) {
            joined.sent.push_back((stanza_id.to_owned(), id));
            if joined.sent.len() > SENT_REMEMBERED {
                joined.sent.pop_front();
            }
        }
        Ok(encrypted)
    }

    /// The answer to a room's disco#info query.
    pub(super) fn room_features_answered(&mut self, room: &str, iq: &Element, now: u64) {
        let features = (iq.attr("type") == Some("result"))
            .then(|| muc::parse_room_features(iq))
            .flatten();
        if let Some(joined) = self.rooms.get_mut(room) {
            match features {
                Some(features) => joined.features = Some(features),
                None => joined.unreadable = true,
            }
        }
        self.room_progress(room, now);
    }

    /// The answer to one of a room's affiliation list queries.
    pub(super) fn room_list_answered(
        &mut self,
        room: &str,
        affiliation: Affiliation,
        iq: &Element,
        now: u64,
    ) {
        let Some(joined) = self.rooms.get_mut(room) else {
            return;
        };
        joined.lists_pending.retain(|a| *a != affiliation);
        if iq.attr("type") == Some("result") {
            for jid in muc::parse_affiliation_list(iq) {
                // A JID on two lists keeps the higher affiliation.
                let held = joined.members.entry(jid).or_insert(affiliation);
                *held = (*held).max(affiliation);
            }
        } else {
            joined.unreadable = true;
        }
        self.room_progress(room, now);
    }

    /// Once a room's features and lists are in: its members' device lists are fetched,
    /// and the application hears that it is ready (or why it cannot carry OMEMO).
    fn room_progress(&mut self, room: &str, now: u64) {
        let Some(joined) = self.rooms.get_mut(room) else {
            return;
        };
        if !joined.ready() || joined.announced {
            return;
        }
        joined.announced = true;
        let catch_up_wanted = std::mem::take(&mut joined.catch_up_wanted);
        let refusal = joined.refusal();
        let members = joined.members.len();
        if catch_up_wanted && let Err(error) = self.start_room_catch_up(room, now) {
            tracing::warn!(%room, %error, "could not catch up with the room's archive");
        }
        if let Some(reason) = refusal {
            tracing::warn!(%room, %reason, "room cannot carry OMEMO");
            self.events.push_back(Event::RoomReady {
                room: room.to_owned(),
                members,
                refusal: Some(reason),
            });
            return;
        }
        if let Ok(recipients) = self.room_recipients(room)
            && let Err(error) = self.prepare(&recipients, now)
        {
            tracing::warn!(%room, %error, "could not fetch the members' devices");
        }
        self.events.push_back(Event::RoomReady {
            room: room.to_owned(),
            members,
            refusal: None,
        });
    }

    /// A presence, or a message from a joined room: occupants' real JIDs, nickname
    /// changes and affiliations. `None` when it is not from a joined room.
    pub(super) fn room_update(&mut self, stanza: &Element, now: u64) -> Option<Handled> {
        // Every message and presence passes here: no room joined, nothing to parse.
        if self.rooms.is_empty() {
            return None;
        }
        let from = jid::Jid::new(stanza.attr("from")?).ok()?;
        let room = from.to_bare().to_string();
        if stanza.name() == "presence" && stanza.attr("type") == Some("error") {
            // The room refused this device (nickname taken, not a member, banned…).
            let joined = self.rooms.get_mut(&room)?;
            if from
                .resource()
                .is_some_and(|nick| nick.as_str() == joined.nick)
            {
                tracing::warn!(%room, "the room refused to let this device in");
                joined.entered = false;
                joined.join_failed = true;
                self.room_progress(&room, now);
            }
            return Some(Handled::Room);
        }
        let update = muc::parse_occupant(stanza)?;
        // A message counts only as the room's notice of an affiliation change: from its
        // bare JID, naming a JID and an affiliation (invitations and private messages
        // are the application's).
        let notice = update.nick.is_none() && update.jid.is_some() && update.affiliation.is_some();
        if stanza.name() == "message" && !notice {
            return None;
        }
        let own_jid = self.own.jid.clone();
        let joined = self.rooms.get_mut(&room)?;
        let mut ops = Vec::new();
        let mut entered_now = false;
        if update.own && update.new_nick.is_none() {
            if update.left {
                // Kicked, banned, removed, or the room is gone.
                tracing::warn!(%room, "this device is no longer in the room");
                joined.entered = false;
            } else if !joined.entered {
                joined.entered = true;
                entered_now = true;
            }
        }
        if let (Some(nick), Some(jid)) = (&update.nick, &update.jid) {
            if update.own && !update.left {
                joined.nick = nick.clone();
            }
            let names = [Some(nick), update.new_nick.as_ref()];
            let keep = joined.keeps_occupants();
            for name in names.into_iter().flatten() {
                if keep && joined.occupants.get(name) != Some(jid) {
                    joined.occupants.insert(name.clone(), jid.clone());
                    ops.push(Op::PutRoomOccupant {
                        room: room.clone(),
                        nick: name.clone(),
                        jid: jid.clone(),
                    });
                }
            }
            if update.own && update.new_nick.is_some() {
                joined.nick = update.new_nick.clone().unwrap_or_default();
            }
        }
        let mut new_member = None;
        if let (Some(jid), Some(affiliation)) = (&update.jid, update.affiliation) {
            match affiliation {
                Some(affiliation) => {
                    if joined.members.insert(jid.clone(), affiliation).is_none() && *jid != own_jid
                    {
                        new_member = BareJid::new(jid).ok();
                    }
                }
                None => {
                    if joined.members.remove(jid).is_some() {
                        tracing::info!(%room, %jid, "no longer a member");
                    }
                }
            }
        }
        if !ops.is_empty()
            && let Err(error) = self.commit(Batch { ops })
        {
            tracing::warn!(%room, %error, "could not keep the occupants' real JIDs");
        }
        if let Some(member) = new_member
            && let Err(error) = self.prepare(&[member], now)
        {
            tracing::warn!(%room, %error, "could not fetch a new member's devices");
        }
        if entered_now {
            self.room_progress(&room, now);
        }
        Some(Handled::Room)
    }

    /// A `groupchat` message from a joined room: this device's own coming back, or an
    /// OMEMO message from a member (decrypted with the room as the SCE `to`). `None`
    /// when it is not from a joined room.
    /// Once the room is usable, the message moves the room archive's position (one
    /// refused before its members were known is read from the archive later).
    pub(super) fn room_message(
        &mut self,
        message: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Option<Result<Handled, ManagerError>> {
        let from = jid::Jid::new(message.attr("from")?).ok()?;
        let room = from.to_bare().to_string();
        let handled = self.read_room_message(message, &from, room.clone(), rng, now)?;
        if handled.is_ok() && self.room_usable(&room) {
            self.note_read_online(Some(&room), message, now);
        }
        Some(handled)
    }

    fn read_room_message(
        &mut self,
        message: &Element,
        from: &jid::Jid,
        room: String,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Option<Result<Handled, ManagerError>> {
        let joined = self.rooms.get_mut(&room)?;
        let Some(nick) = from.resource().map(|r| r.to_string()) else {
            // From the room itself: a configuration change (XEP-0045 status 104, 172-174)
            // may make it anonymous or open; its features are read again.
            if muc::configuration_changed(message) {
                let target = room.clone();
                self.queue(Pending::RoomFeatures { room: room.clone() }, |id| {
                    muc::room_info_iq(id, &target)
                });
                return Some(Ok(Handled::Room));
            }
            return Some(Ok(Handled::Unhandled));
        };
        if nick == joined.nick
            && let Some(stanza_id) = message.attr("id")
            && let Some(index) = joined.sent.iter().position(|(id, _)| id == stanza_id)
        {
            let (_, id) = joined.sent.remove(index)?;
            return Some(Ok(Handled::Reflected { room, id }));
        }
        let sender = match self.room_sender(&room, &nick, None) {
            Ok(sender) => sender,
            // Not an OMEMO message: the application's, whoever sent it.
            Err(_) if !self.is_encrypted(message) => return Some(Ok(Handled::Unhandled)),
            Err(error) => {
                tracing::warn!(%room, %error, "room message refused");
                return Some(Ok(Handled::Undecryptable {
                    error,
                    via: Via::Room,
                }));
            }
        };
        Some(self.receive_from_room(message, &room, &sender, Via::Room, rng, now))
    }

    /// The real bare JID of `nick` in the joined `room` (this account's own for its own
    /// nickname), a member's: `vouched` when the room's archive names it, else the one
    /// its presences showed.
    fn room_sender(
        &self,
        room: &str,
        nick: &str,
        vouched: Option<String>,
    ) -> Result<String, ManagerError> {
        let joined = self.joined(room)?;
        // Before its members are known (or in a room that cannot carry OMEMO), nobody's
        // membership can be told.
        if let Some(reason) = joined.attribution_refusal() {
            return Err(ManagerError::RoomNotUsable {
                room: room.to_owned(),
                reason,
            });
        }
        let sender = vouched.or_else(|| {
            if nick == joined.nick {
                Some(self.own.jid.clone())
            } else {
                joined.occupants.get(nick).cloned()
            }
        });
        match sender {
            None => Err(ManagerError::UnknownOccupant {
                room: room.to_owned(),
                nick: nick.to_owned(),
            }),
            Some(jid) if jid != self.own.jid && !joined.members.contains_key(&jid) => {
                Err(ManagerError::NotARoomMember {
                    room: room.to_owned(),
                    jid,
                })
            }
            Some(jid) => Ok(jid),
        }
    }

    /// A message read from the archive of the joined `room` during a catch-up:
    /// attributed to the real JID the archive names (a room that is non-anonymous shows
    /// it; one that names two is refused), else through the nicknames known, and read
    /// as a live one. [`Handled::Unhandled`] when it is not OMEMO.
    pub(super) fn room_archived(
        &mut self,
        room: &str,
        message: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        let from = message
            .attr("from")
            .and_then(|from| jid::Jid::new(from).ok());
        let nick = from
            .as_ref()
            .filter(|from| from.to_bare().as_str() == room)
            .and_then(|from| from.resource().map(|r| r.to_string()));
        let (Some(nick), Some("groupchat")) = (nick, message.attr("type")) else {
            return Ok(Handled::Unhandled);
        };
        if !self.is_encrypted(message) {
            return Ok(Handled::Unhandled);
        }
        let mut vouched = muc::archived_senders(message);
        let sender = if vouched.len() > 1 {
            Err(ManagerError::UnknownOccupant {
                room: room.to_owned(),
                nick,
            })
        } else {
            self.room_sender(room, &nick, vouched.pop())
        };
        match sender {
            Ok(sender) => {
                self.receive_from_room(message, room, &sender, Via::RoomArchive, rng, now)
            }
            Err(error) => {
                tracing::warn!(%room, %error, "archived room message refused");
                Ok(Handled::Undecryptable {
                    error,
                    via: Via::RoomArchive,
                })
            }
        }
    }

    /// Whether `message` carries an `<encrypted>` element of a version spoken.
    pub(super) fn is_encrypted(&self, message: &Element) -> bool {
        self.config
            .versions
            .iter()
            .any(|v| message.get_child("encrypted", v.namespace()).is_some())
    }

    fn receive_from_room(
        &mut self,
        message: &Element,
        room: &str,
        sender: &str,
        via: Via,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        match self.decrypt_from(message, sender, room, rng, now) {
            Ok(mut decrypted) if decrypted.body.is_some() || !decrypted.content.is_empty() => {
                decrypted.room = Some(room.to_owned());
                Ok(Handled::Message {
                    message: decrypted,
                    via,
                })
            }
            Ok(_) => Ok(Handled::Consumed),
            Err(ManagerError::NotEncrypted) => Ok(Handled::Unhandled),
            Err(error @ ManagerError::Store(_)) => Err(error),
            Err(error) if error.is_duplicate() || error == ManagerError::OwnMessage => {
                Ok(Handled::Consumed)
            }
            // Said before this device was a member, or before its sender knew it.
            Err(ManagerError::NotForThisDevice) if via == Via::RoomArchive => {
                tracing::debug!(%room, %sender, "archived room message not for this device");
                Ok(Handled::Consumed)
            }
            Err(error) => {
                tracing::warn!(%room, %sender, %error, "room message not decrypted");
                Ok(Handled::Undecryptable { error, via })
            }
        }
    }
}
