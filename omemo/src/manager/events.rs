//! What the manager tells the application: what an incoming stanza was ([`Handled`]),
//! and what happened meanwhile ([`Event`], from [`Manager::poll_event`]).
//!
//! [`Manager::poll_event`]: super::Manager::poll_event

use std::fmt;

use minidom::Element;

use super::{Decrypted, Recipient, SkippedDevice};
use crate::Fingerprint;
use crate::error::ManagerError;
use crate::version::{Version, Versions};

/// The handle of a message given to [`Manager::send`](super::Manager::send), named
/// again in its [`Event::Sent`] or [`Event::NotSent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub(super) u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {}", self.0)
    }
}

/// How an OMEMO message reached this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// Addressed to this account.
    Direct,
    /// A carbon copy (XEP-0280) of a message another device of this account received.
    CarbonReceived,
    /// A carbon copy of a message another device of this account sent.
    CarbonSent,
    /// Read from the own account's archive while catching up ([`Manager::catch_up`](super::Manager::catch_up)):
    /// sent to this account while it was offline, or sent by another of its devices.
    Archive,
    /// From a joined room ([`Manager::join_room`](super::Manager::join_room));
    /// [`Decrypted::room`](super::Decrypted::room) names it.
    Room,
    /// Read from a joined room's archive while catching up
    /// ([`Manager::catch_up_room`](super::Manager::catch_up_room)): said there while this
    /// device was not in it. [`Decrypted::room`](super::Decrypted::room) names it.
    RoomArchive,
}

/// What [`Manager::handle_stanza`](super::Manager::handle_stanza) found a stanza to be.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Handled {
    /// The answer to one of the manager's requests.
    Response,
    /// A device-list notification (PEP), applied.
    DeviceList,
    /// An OMEMO message with content for the application.
    Message {
        /// The decrypted message.
        message: Decrypted,
        /// How it arrived.
        via: Via,
    },
    /// An OMEMO message with nothing for the application: an empty message (session
    /// completion, heartbeat), a duplicate (the archive and the live copy), this
    /// device's own message coming back, or a key transport for another device.
    Consumed,
    /// An OMEMO message that could not be decrypted. Show it to the user; nothing was
    /// stored.
    Undecryptable {
        /// Why.
        error: ManagerError,
        /// How it arrived.
        via: Via,
    },
    /// This device's own message to a room, coming back from it: sent, not to be
    /// decrypted (this device never encrypts to itself).
    Reflected {
        /// The room.
        room: String,
        /// The id [`Manager::send_to_room`](super::Manager::send_to_room) returned for it
        /// (`None` when it came from [`Manager::encrypt_for_room`](super::Manager::encrypt_for_room)).
        id: Option<MessageId>,
    },
    /// A message from the own archive read during a catch-up that is not OMEMO (a plain
    /// message, a chat state): the archived message, unwrapped, for the application.
    Archived(Element),
    /// A joined room's presence or notice, applied (real JIDs, nicknames, affiliations);
    /// the application may read it too.
    Room,
    /// A stanza that claims to be something it cannot be (a carbon copy from someone
    /// else than this account, XEP-0280 §11), dropped.
    Dropped(&'static str),
    /// Not an OMEMO stanza (a plain message, presence, another IQ): the application's.
    Unhandled,
}

/// Something the application must see, from [`Manager::poll_event`](super::Manager::poll_event).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message given to [`Manager::send`](super::Manager::send) was encrypted; its
    /// stanza is in [`Manager::poll_transmit`](super::Manager::poll_transmit).
    Sent {
        /// The message.
        id: MessageId,
        /// The devices that got a key.
        recipients: Vec<Recipient>,
        /// The devices that got none, and why (a bundle that never came is
        /// [`SkipReason::NoSession`](super::SkipReason::NoSession)).
        skipped: Vec<SkippedDevice>,
    },
    /// A message given to [`Manager::send`](super::Manager::send) was not sent.
    NotSent {
        /// The message.
        id: MessageId,
        /// Why (for example no device of the recipients could read it).
        error: ManagerError,
    },
    /// A device appeared on a device list.
    DeviceAdded {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
        /// The lists it is on.
        versions: Versions,
    },
    /// A device left the last device list (of the versions spoken) it was on.
    DeviceRemoved {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
    },
    /// A bundle (signed by its identity) showed another identity key for a known
    /// device; it was refused and the device keeps its old one. A key exchange that
    /// claims another identity is [`Handled::Undecryptable`] with
    /// [`ManagerError::IdentityChanged`] instead: it is not authenticated.
    IdentityChangeRefused {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
    },
    /// A device's identity key became known and waits for a trust decision
    /// ([`Manager::set_trust`](super::Manager::set_trust)) before it gets messages.
    TrustDecisionNeeded {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
        /// The fingerprint to compare.
        fingerprint: Fingerprint,
    },
    /// A session with a device was rebuilt from its bundle, and an empty key exchange
    /// sent to it, because its message named a prekey this device no longer has or came
    /// without a session (see [`Manager::reset_session`](super::Manager::reset_session)
    /// for doing it by hand).
    SessionRebuilt {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
        /// The version of the session.
        version: Version,
    },
    /// A rebuild was due but held back: the session with this device was rebuilt too
    /// recently ([`ManagerConfig::rebuild_every_secs`](super::ManagerConfig::rebuild_every_secs)).
    RebuildHeldBack {
        /// Its owner.
        jid: String,
        /// The device.
        device_id: u32,
        /// The version of the session.
        version: Version,
    },
    /// A joined room's features and member lists arrived
    /// ([`Manager::join_room`](super::Manager::join_room)): messages to it can be
    /// encrypted, unless `refusal` says why not.
    RoomReady {
        /// The room.
        room: String,
        /// Its members, admins and owners.
        members: usize,
        /// Why it cannot carry OMEMO, if it cannot.
        refusal: Option<crate::error::RoomRefusal>,
    },
    /// A catch-up with an archive ([`Manager::catch_up`](super::Manager::catch_up),
    /// [`Manager::catch_up_room`](super::Manager::catch_up_room)) is over. After the last
    /// one under way, the prekeys used during them are deleted and the new sessions got
    /// their empty messages.
    CaughtUp {
        /// The archive: the own bare JID, or the room's.
        archive: String,
        /// Archived messages read.
        messages: usize,
        /// Whether the archive was read to its end (otherwise the server failed, did not
        /// answer, or had more than 10 000 messages; the next catch-up goes on after the
        /// last message this one read).
        complete: bool,
    },
    /// The server refused to publish one of this device's nodes (device list or
    /// bundle): contacts may not find it.
    PublicationFailed {
        /// The node.
        node: String,
        /// The error condition the server gave.
        condition: String,
    },
}
