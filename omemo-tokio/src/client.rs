//! [`Client`]: a tokio-xmpp stream with the OMEMO [`Manager`] built in.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt as _;
use jid::{BareJid, FullJid};
use minidom::Element;
use omemo::stanza::carbons;
use omemo::{Decrypted, Event, Handled, Manager, ManagerError, MessageId, Store, Via};
use rand_core::Rng as _;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::connection::{Connection, Login, NetEvent, Unreachable};
use crate::error::DriverError;
use crate::protocol::{self, Identification, NS_CLIENT, NS_ROSTER};

/// How long the driver sleeps when the manager has no timeout (nothing queued).
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Stanzas already received that are handled together before the client writes (their
/// state goes to disk in one write: group commit).
const MAX_BATCH: usize = 64;

/// The current time in Unix seconds, as the manager wants it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the client presents itself and what it does on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Accept every presence subscription request and subscribe back, as a bot that
    /// serves anyone does (device lists of contacts are often visible to subscribed
    /// contacts only). Otherwise each request is a [`ClientEvent::SubscriptionRequest`].
    pub accept_subscriptions: bool,
    /// The XEP-0030 identity type in category `client` (`pc`, `phone`, `bot`, …).
    pub kind: String,
    /// The name in the XEP-0030 identity.
    pub name: String,
    /// What to do when the server cannot be reached at the first login: fail at once
    /// (one-shot tools) or wait for it (services; the default). A refused login always
    /// fails at once with [`DriverError::AuthFailed`]. Later disconnections are always
    /// retried.
    pub unreachable: Unreachable,
    /// At every login, read what arrived while offline from the account's archive
    /// (XEP-0313, [`omemo::Manager::catch_up`]): its messages come as
    /// [`ClientEvent::Message`] with [`Via::Archive`], each once even when the server
    /// also delivers a stored copy, and [`Event::CaughtUp`] says when it is over. For a
    /// long-running client or bot; a one-shot tool leaves it off (what it reads it would
    /// take from the client that runs later). Rooms joined with [`Client::join_room`]
    /// are caught up with too, at every join ([`omemo::Manager::catch_up_room`]; their
    /// messages come with [`Via::RoomArchive`]).
    pub catch_up: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            accept_subscriptions: false,
            kind: "pc".to_owned(),
            name: "omemo-tokio".to_owned(),
            unreachable: Unreachable::Retry,
            catch_up: false,
        }
    }
}

/// What the client hands the application, from [`Client::next`].
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Logged in, the own device is on its device lists with its bundles, and the
    /// presence is sent. Comes again after each reconnection.
    Online {
        /// The bound full JID.
        jid: FullJid,
    },
    /// A decrypted OMEMO message (either version).
    Message {
        /// The message.
        message: Decrypted,
        /// How it arrived.
        via: Via,
    },
    /// An OMEMO message that could not be decrypted (nothing was stored).
    Undecryptable {
        /// The `from` of the stanza.
        from: String,
        /// Why.
        error: ManagerError,
        /// How it arrived.
        via: Via,
    },
    /// An unencrypted chat message sent directly to this account by someone else.
    Plain {
        /// The full `from`, to answer to.
        from: String,
        /// The body.
        body: String,
    },
    /// Someone asks to see this account's presence (with
    /// [`ClientConfig::accept_subscriptions`] off).
    SubscriptionRequest {
        /// Who.
        from: BareJid,
    },
    /// A contact approved our presence subscription ([`Client::request_subscription`],
    /// or one asked back): nodes it shows to subscribed contacts only (device lists and
    /// bundles with the `presence` access model) can be fetched now.
    SubscriptionApproved {
        /// Who.
        from: BareJid,
    },
    /// An invitation to a room (XEP-0249 direct, or XEP-0045 mediated through the room).
    /// Join with [`Client::join_room`] if the inviter is someone to follow.
    Invitation {
        /// The room.
        room: BareJid,
        /// Who invites: the sender of a direct invitation; for a mediated one, whom the
        /// room names (anyone can send such a message and name anyone).
        inviter: BareJid,
        /// Whether it is a direct invitation, whose inviter the server vouches for.
        direct: bool,
        /// The room's password, if the invitation carries one.
        password: Option<String>,
    },
    /// What the OMEMO manager reports: messages sent or not, devices, trust, failed
    /// publications, rooms ready.
    Omemo(Event),
}

/// Shows neither plaintext bodies nor decrypted content.
impl fmt::Debug for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Online { jid } => f.debug_struct("Online").field("jid", jid).finish(),
            Self::Message { message, via } => f
                .debug_struct("Message")
                .field("message", message)
                .field("via", via)
                .finish(),
            Self::Undecryptable { from, error, via } => f
                .debug_struct("Undecryptable")
                .field("from", from)
                .field("error", error)
                .field("via", via)
                .finish(),
            Self::Plain { from, body } => f
                .debug_struct("Plain")
                .field("from", from)
                .field("body_len", &body.len())
                .finish(),
            Self::SubscriptionRequest { from } => f
                .debug_struct("SubscriptionRequest")
                .field("from", from)
                .finish(),
            Self::SubscriptionApproved { from } => f
                .debug_struct("SubscriptionApproved")
                .field("from", from)
                .finish(),
            Self::Invitation { room, inviter, .. } => f
                .debug_struct("Invitation")
                .field("room", room)
                .field("inviter", inviter)
                .finish_non_exhaustive(),
            Self::Omemo(event) => f.debug_tuple("Omemo").field(event).finish(),
        }
    }
}

/// The roster state that subscription handling needs.
#[derive(Clone, Copy, Debug, Default)]
struct RosterEntry {
    /// We receive their presence (subscription `to` or `both`).
    subscribed_to: bool,
    /// A subscription request of ours is pending.
    asked: bool,
}

/// An XMPP client (tokio-xmpp) with OMEMO in both versions: it logs in, reconnects,
/// publishes the own device, keeps the manager's requests, timers and events moving,
/// unwraps carbons, answers disco, caps (with `+notify` for both device-list nodes) and
/// pings, and hands the application decrypted messages and events.
///
/// ```no_run
/// use omemo::{BareJid, Manager, ManagerConfig, SqliteStore};
/// use omemo_tokio::{Client, ClientConfig, ClientEvent, Login};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let jid = BareJid::new("alice@example.org")?;
/// let store = SqliteStore::open("alice.omemo.sqlite")?;
/// let manager = Manager::open(store, &jid, ManagerConfig::default(), &mut omemo::os_rng(), omemo_tokio::unix_now())?;
/// let login = Login { jid, password: "secret".into(), server: None, plaintext: false };
/// let mut client = Client::start(login, manager, ClientConfig::default())?;
/// loop {
///     match client.next().await? {
///         ClientEvent::Online { .. } => {
///             client.send_encrypted(&[BareJid::new("bob@example.org")?], "Hello Bob")?;
///         }
///         ClientEvent::Message { message, .. } => {
///             println!("{}: {:?}", message.sender, message.body);
///         }
///         other => println!("{other:?}"),
///     }
/// }
/// # }
/// ```
///
/// [`Client::next`] is cancel-safe while it waits; a stanza it is writing when the future
/// is dropped may be lost (the manager's state is committed before anything is written).
pub struct Client<S: Store> {
    conn: Connection,
    manager: Manager<S>,
    jid: BareJid,
    config: ClientConfig,
    identification: Identification,
    /// A stream is bound.
    online: bool,
    /// Streams bound so far.
    streams: u32,
    /// The own device is published and the presence sent on the current stream.
    ready: bool,
    /// [`Client::go_offline`] was called: no available presence any more.
    leaving: bool,
    roster: HashMap<BareJid, RosterEntry>,
    events: VecDeque<ClientEvent>,
    /// Messages taken from the manager whose writing failed, sent first on the next
    /// stream (their state is committed; they must not be lost).
    unwritten: VecDeque<Element>,
    /// Responses to [`Client::request`]s, by id, with the bare JID each went to (`None`:
    /// the own account).
    awaited: HashMap<String, (Option<String>, Option<Element>)>,
    next_id: u64,
    /// A random part of every request id, so that nobody who sees one guesses the next.
    id_salt: u32,
    /// The Unix second the manager's timeout last ran.
    last_timeout: Option<u64>,
    /// The rooms joined (entered again on every stream).
    rooms: Vec<RoomToJoin>,
}

/// A room joined, with the nickname and password to enter it with.
#[derive(Clone)]
struct RoomToJoin {
    room: BareJid,
    nick: String,
    password: Option<Zeroizing<String>>,
}

impl<S: Store> Client<S> {
    /// Starts connecting (in the background; [`Client::next`] drives it).
    pub fn start(
        login: Login,
        manager: Manager<S>,
        config: ClientConfig,
    ) -> Result<Self, DriverError> {
        let jid = login.jid.clone();
        let conn = Connection::start(login, config.unreachable)?;
        let identification = Identification {
            kind: config.kind.clone(),
            name: config.name.clone(),
        };
        tracing::info!(%jid, device_id = manager.device_id(), "OMEMO device opened");
        Ok(Self {
            conn,
            manager,
            jid,
            config,
            identification,
            online: false,
            streams: 0,
            ready: false,
            leaving: false,
            roster: HashMap::new(),
            events: VecDeque::new(),
            unwritten: VecDeque::new(),
            awaited: HashMap::new(),
            id_salt: omemo::os_rng().next_u32(),
            next_id: 0,
            last_timeout: None,
            rooms: Vec::new(),
        })
    }

    /// The OMEMO manager (devices, trust, fingerprints).
    pub fn manager(&mut self) -> &mut Manager<S> {
        &mut self.manager
    }

    /// The own bare JID.
    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// Whether the own device is published and the presence sent on the current stream.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether nothing is under way: no message waiting, no request unanswered.
    pub fn is_idle(&self) -> bool {
        self.unwritten.is_empty()
            && self.manager.queued_messages() == 0
            && self.manager.pending_requests() == 0
    }

    /// The next event, driving the stream, the manager's requests and its timers
    /// meanwhile.
    pub async fn next(&mut self) -> Result<ClientEvent, DriverError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            self.step(None).await?;
        }
    }

    /// Like [`Client::next`], but `None` when `deadline` comes first.
    pub async fn next_until(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<ClientEvent>, DriverError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.step(Some(deadline)).await?;
        }
    }

    /// Drives the client until `done` holds, keeping the events for [`Client::next`];
    /// fails with [`DriverError::Timeout`] (naming `what`) after `timeout`.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        what: &'static str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout(what));
            }
            self.step(Some(deadline)).await?;
        }
        Ok(())
    }

    /// Encrypts `body` for every device of `to` (and the own other devices), each in its
    /// version, as soon as their device lists and bundles are here (see
    /// [`Manager::send`]). The outcome is an [`Event::Sent`] or [`Event::NotSent`] with
    /// the returned id, from [`Client::next`].
    pub fn send_encrypted(&mut self, to: &[BareJid], body: &str) -> Result<MessageId, DriverError> {
        let id = self
            .manager
            .send(to, body, &mut omemo::os_rng(), unix_now())?;
        self.collect_events();
        Ok(id)
    }

    /// Joins `room` as `nick` (now, or once online; again after every reconnection) and
    /// has the manager follow it ([`Manager::join_room`]): [`Event::RoomReady`] says
    /// when [`Client::send_to_room`] can encrypt to its members, or why the room cannot
    /// carry OMEMO. Its OMEMO messages come as [`ClientEvent::Message`] with
    /// [`Via::Room`]. `password` is the room's, if it has one (an invitation may carry
    /// it); it is kept, zeroized on drop, to enter again after a reconnection.
    pub async fn join_room(
        &mut self,
        room: &BareJid,
        nick: &str,
        password: Option<&str>,
    ) -> Result<(), DriverError> {
        if protocol::room_join_presence(room, nick, password).is_none() {
            return Err(DriverError::Protocol(format!(
                "{nick:?} is not a valid nickname in {room}"
            )));
        }
        if self
            .rooms
            .iter()
            .any(|joined| joined.room == *room && joined.nick == nick)
        {
            return Ok(());
        }
        self.rooms.retain(|joined| joined.room != *room);
        let joined = RoomToJoin {
            room: room.clone(),
            nick: nick.to_owned(),
            password: password.map(|p| Zeroizing::new(p.to_owned())),
        };
        if self.ready {
            self.enter_room(&joined).await?;
        }
        self.rooms.push(joined);
        Ok(())
    }

    async fn enter_room(&mut self, joined: &RoomToJoin) -> Result<(), DriverError> {
        let RoomToJoin {
            room,
            nick,
            password,
        } = joined;
        let presence =
            protocol::room_join_presence(room, nick, password.as_deref().map(String::as_str))
                .ok_or_else(|| DriverError::Protocol(format!("cannot join {room} as {nick}")))?;
        self.manager.join_room(room, nick, unix_now())?;
        if self.config.catch_up {
            self.manager.catch_up_room(room, unix_now())?;
        }
        self.conn.send(presence).await?;
        tracing::info!(%room, %nick, "joining a room");
        Ok(())
    }

    /// Encrypts `body` for every member of the joined `room` (see
    /// [`Manager::send_to_room`]); the outcome is an [`Event::Sent`] or
    /// [`Event::NotSent`] with the returned id.
    pub fn send_to_room(&mut self, room: &BareJid, body: &str) -> Result<MessageId, DriverError> {
        let id = self
            .manager
            .send_to_room(room, body, &mut omemo::os_rng(), unix_now())?;
        self.collect_events();
        Ok(id)
    }

    /// Asks `jid` for a presence subscription (XEP-0384: a contact's device list may be
    /// visible to subscribed contacts only; see
    /// [`SkipReason::SubscriptionRequired`](omemo::SkipReason::SubscriptionRequired)). A
    /// [`ClientEvent::SubscriptionApproved`] follows when the contact agrees; nothing
    /// when it does not answer.
    pub async fn request_subscription(&mut self, jid: &BareJid) -> Result<(), DriverError> {
        let request = protocol::presence("subscribe", Some(jid.as_str()))
            .ok_or_else(|| DriverError::Protocol(format!("cannot address {jid}")))?;
        self.conn.send(request).await?;
        self.roster.entry(jid.clone()).or_default().asked = true;
        tracing::info!(%jid, "asked for a presence subscription");
        Ok(())
    }

    /// Sends an unencrypted chat message (a hint for clients without OMEMO).
    pub async fn send_plain(&mut self, to: &str, body: &str) -> Result<(), DriverError> {
        let id = self.fresh_id("plain");
        let message = protocol::chat_message(to, &id, body)
            .ok_or_else(|| DriverError::Protocol(format!("cannot address {to}")))?;
        self.conn.send(message).await
    }

    /// Sends an IQ request built by `build` (given a fresh id) and waits for its
    /// response; events that arrive meanwhile are kept for [`Client::next`].
    pub async fn request(
        &mut self,
        build: impl FnOnce(&str) -> Element,
        timeout: Duration,
    ) -> Result<Element, DriverError> {
        let id = self.fresh_id("request");
        let request = build(&id);
        let to = protocol::other_account(request.attr("to"), &self.jid);
        self.awaited.insert(id.clone(), (to, None));
        self.conn.send(request).await?;
        let waited = self
            .wait_until(timeout, "waiting for an IQ response", |c| {
                c.awaited
                    .get(&id)
                    .is_some_and(|(_, answer)| answer.is_some())
            })
            .await;
        let response = self.awaited.remove(&id).and_then(|(_, answer)| answer);
        waited?;
        response.ok_or(DriverError::Timeout("waiting for an IQ response"))
    }

    /// Writes what is due now (requests, messages whose fetches are done) and puts the
    /// OMEMO state on disk.
    pub async fn flush(&mut self) -> Result<(), DriverError> {
        self.after().await?;
        Ok(self.manager.sync()?)
    }

    /// Sends unavailable presence: the server stops routing messages to this resource
    /// and keeps new ones offline. Go on calling [`Client::next_until`] to finish what
    /// is under way, then [`Client::close`].
    pub async fn go_offline(&mut self) -> Result<(), DriverError> {
        // Also after a reconnection: the client does not announce itself again.
        self.leaving = true;
        if !self.online {
            return Ok(());
        }
        self.ready = false;
        match protocol::presence("unavailable", None) {
            Some(presence) => self.conn.send(presence).await,
            None => Ok(()),
        }
    }

    /// Writes what is due, then closes the stream. The OMEMO state is in the store.
    pub async fn close(mut self) {
        if let Err(error) = self.flush().await {
            tracing::warn!(%error, "could not write the last stanzas");
        }
        if self.manager.queued_messages() > 0 {
            tracing::warn!(
                count = self.manager.queued_messages(),
                "closing with unsent messages"
            );
        }
        let device_id = self.manager.device_id();
        let Self { conn, manager, .. } = self;
        drop(manager);
        conn.close().await;
        tracing::info!(device_id, "closed; OMEMO state is saved");
    }

    // --- internals ---

    fn fresh_id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("omemo-tokio-{what}-{:08x}-{}", self.id_salt, self.next_id)
    }

    /// When the manager's next timeout is due, as an `Instant` (at least a second after
    /// the last one ran, so that a timeout it cannot clear does not spin).
    fn timer(&self) -> Instant {
        let now = unix_now();
        match self.manager.poll_timeout() {
            Some(due) => {
                let due = match self.last_timeout {
                    Some(last) if due <= last => last + 1,
                    _ => due,
                };
                Instant::now() + Duration::from_secs(due.saturating_sub(now))
            }
            None => Instant::now() + IDLE_WAKE,
        }
    }

    /// Writes what is due and puts the OMEMO state on disk (the store is shared with
    /// other processes, which wait meanwhile), then waits for one stanza or the next
    /// timeout (or `until`) and handles it with the stanzas that arrived meanwhile (up to
    /// [`MAX_BATCH`]). The state of a batch and of the application's answers to it goes
    /// to disk in one write, at the next step.
    async fn step(&mut self, until: Option<Instant>) -> Result<(), DriverError> {
        self.after().await?;
        self.manager.sync()?;
        let timer = self.timer();
        let wake = until.map_or(timer, |until| until.min(timer));
        tokio::select! {
            event = self.conn.next() => {
                self.handle(event?).await?;
                for _ in 1..MAX_BATCH {
                    let Some(event) = self.conn.next().now_or_never() else {
                        break;
                    };
                    self.handle(event?).await?;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if wake == timer {
                    self.on_timeout();
                }
            }
        }
        self.after().await
    }

    fn on_timeout(&mut self) {
        let now = unix_now();
        self.last_timeout = Some(now);
        if let Err(error) = self.manager.handle_timeout(&mut omemo::os_rng(), now) {
            tracing::error!(%error, "OMEMO housekeeping failed");
        }
    }

    async fn handle(&mut self, event: NetEvent) -> Result<(), DriverError> {
        match event {
            NetEvent::Online(bound) => self.on_online(&bound).await,
            NetEvent::Offline => {
                // Requests of the broken stream are never answered; the manager asks
                // again on the next one and keeps its messages meanwhile.
                self.online = false;
                self.ready = false;
                self.manager.connection_lost();
                Ok(())
            }
            NetEvent::Stanza(stanza) => match stanza.name() {
                "iq" => self.on_iq(&stanza).await,
                "presence" => self.on_presence(&stanza).await,
                "message" => self.on_message(&stanza),
                _ => Ok(()),
            },
        }
    }

    /// Sends the manager's stanzas, declares readiness, collects the manager's events.
    async fn after(&mut self) -> Result<(), DriverError> {
        if self.online {
            loop {
                let stanza = match self.unwritten.pop_front() {
                    Some(stanza) => stanza,
                    None => match self.manager.poll_transmit()? {
                        Some(stanza) => stanza,
                        None => break,
                    },
                };
                let message = (stanza.name() == "message").then(|| stanza.clone());
                if let Err(error) = self.conn.send(stanza).await {
                    // A request is asked again on the next stream; a message is kept.
                    if let Some(message) = message {
                        self.unwritten.push_front(message);
                    }
                    return Err(error);
                }
            }
            if !self.ready && !self.leaving && self.manager.pending_requests() == 0 {
                self.conn
                    .send(self.identification.available_presence()?)
                    .await?;
                self.ready = true;
                for joined in self.rooms.clone() {
                    self.enter_room(&joined).await?;
                }
                if let Some(jid) = self.conn.bound().cloned() {
                    tracing::info!(%jid, device_id = self.manager.device_id(), "online; own device lists and bundles published");
                    self.events.push_back(ClientEvent::Online { jid });
                }
            }
        }
        self.collect_events();
        Ok(())
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.manager.poll_event() {
            self.events.push_back(ClientEvent::Omemo(event));
        }
    }

    async fn on_online(&mut self, bound: &FullJid) -> Result<(), DriverError> {
        tracing::info!(jid = %bound, "logged in");
        self.online = true;
        self.ready = false;
        if self.streams > 0 {
            // A new stream: requests of the old one are never answered.
            self.manager.connection_lost();
        }
        self.manager.connected(unix_now())?;
        if self.config.catch_up {
            self.manager.catch_up(unix_now())?;
        }
        self.streams += 1;
        let carbons = self.fresh_id("carbons");
        self.conn.send(carbons::enable_iq(&carbons)).await?;
        // Fetching the roster makes this resource "interested" (RFC 6121 §2.1.6): the
        // server then hands it subscription requests and approvals.
        let roster = self.fresh_id("roster");
        if let Some(iq) = protocol::iq_request("get", &roster, Element::bare("query", NS_ROSTER)) {
            self.conn.send(iq).await?;
        }
        Ok(())
    }

    async fn on_iq(&mut self, iq: &Element) -> Result<(), DriverError> {
        if matches!(iq.attr("type"), Some("result" | "error")) {
            let handled = self
                .manager
                .handle_stanza(iq, &mut omemo::os_rng(), unix_now())?;
            if handled == Handled::Response {
                return Ok(());
            }
            let id = iq.attr("id").unwrap_or_default();
            let failed = iq.attr("type") == Some("error");
            // Only whom a request went to answers it (the own account: no `from`, or the
            // own bare JID).
            let from = protocol::other_account(iq.attr("from"), &self.jid);
            if let Some((to, slot)) = self.awaited.get_mut(id) {
                if *to == from {
                    *slot = Some(iq.clone());
                } else {
                    tracing::warn!(%id, from = ?from, "IQ response from whom it was not sent to; ignored");
                }
            } else if from.is_some() {
                tracing::debug!(%id, "IQ response from another account to no request of its; ignored");
            } else if id.starts_with("omemo-tokio-roster-") {
                if let Some(query) = iq.get_child("query", NS_ROSTER) {
                    self.apply_roster(query);
                }
            } else if id.starts_with("omemo-tokio-carbons-") && failed {
                tracing::warn!("the server refused to enable carbons");
            } else if failed {
                tracing::debug!(%id, "IQ error for an unknown request");
            }
            return Ok(());
        }
        if let Some(query) = iq.get_child("query", NS_ROSTER) {
            let from_own = iq.attr("from").is_none_or(|f| f == self.jid.as_str());
            if iq.attr("type") == Some("set") && from_own {
                self.apply_roster(query);
            }
        }
        if let Some(answer) = self.identification.answer_iq(iq, &self.jid) {
            self.conn.send(answer).await?;
        }
        Ok(())
    }

    fn apply_roster(&mut self, query: &Element) {
        for item in query.children().filter(|c| c.is("item", NS_ROSTER)) {
            let Some(jid) = item.attr("jid").and_then(|j| BareJid::new(j).ok()) else {
                continue;
            };
            let subscription = item.attr("subscription").unwrap_or("none");
            if subscription == "remove" {
                self.roster.remove(&jid);
                continue;
            }
            self.roster.insert(
                jid,
                RosterEntry {
                    subscribed_to: matches!(subscription, "to" | "both"),
                    asked: item.attr("ask") == Some("subscribe"),
                },
            );
        }
    }

    async fn on_presence(&mut self, presence: &Element) -> Result<(), DriverError> {
        // A joined room's occupants: real JIDs, nicknames, affiliations.
        if self
            .manager
            .handle_stanza(presence, &mut omemo::os_rng(), unix_now())?
            == Handled::Room
        {
            return Ok(());
        }
        let kind = presence.attr("type");
        if !matches!(kind, Some("subscribe" | "subscribed")) {
            return Ok(());
        }
        let Some(from) = presence
            .attr("from")
            .and_then(|f| jid::Jid::new(f).ok())
            .map(|j| j.to_bare())
        else {
            return Ok(());
        };
        if from == self.jid {
            return Ok(());
        }
        if kind == Some("subscribed") {
            let entry = self.roster.entry(from.clone()).or_default();
            entry.subscribed_to = true;
            entry.asked = false;
            tracing::info!(jid = %from, "presence subscription approved");
            self.events
                .push_back(ClientEvent::SubscriptionApproved { from });
            return Ok(());
        }
        if !self.config.accept_subscriptions {
            self.events
                .push_back(ClientEvent::SubscriptionRequest { from });
            return Ok(());
        }
        if let Some(reply) = protocol::presence("subscribed", Some(from.as_str())) {
            self.conn.send(reply).await?;
        }
        let entry = self.roster.entry(from.clone()).or_default();
        let ask_back = !entry.subscribed_to && !entry.asked;
        entry.asked = true;
        if ask_back && let Some(request) = protocol::presence("subscribe", Some(from.as_str())) {
            self.conn.send(request).await?;
        }
        tracing::info!(jid = %from, subscribed_back = ask_back, "accepted a presence subscription");
        Ok(())
    }

    fn on_message(&mut self, message: &Element) -> Result<(), DriverError> {
        let from = message.attr("from").unwrap_or_default().to_owned();
        match self
            .manager
            .handle_stanza(message, &mut omemo::os_rng(), unix_now())?
        {
            Handled::Message { message, via } => {
                tracing::info!(from = %message.sender, device_id = message.device_id, version = %message.version, trust = ?message.trust, ?via, "decrypted an OMEMO message");
                self.events.push_back(ClientEvent::Message { message, via });
            }
            Handled::Undecryptable { error, via } => {
                self.events
                    .push_back(ClientEvent::Undecryptable { from, error, via });
            }
            Handled::Unhandled => {
                if let Some(invitation) = protocol::parse_invitation(message) {
                    tracing::info!(room = %invitation.room, inviter = %invitation.inviter, "invited to a room");
                    self.events.push_back(ClientEvent::Invitation {
                        room: invitation.room,
                        inviter: invitation.inviter,
                        direct: invitation.direct,
                        password: invitation.password,
                    });
                } else if let Some(body) = self.plain_body(message) {
                    self.events.push_back(ClientEvent::Plain { from, body });
                }
            }
            // A plain message sent while this client was offline, from the archive.
            Handled::Archived(archived) => {
                if let Some(body) = self.plain_body(&archived) {
                    let from = archived.attr("from").unwrap_or_default().to_owned();
                    self.events.push_back(ClientEvent::Plain { from, body });
                }
            }
            Handled::Dropped(why) => tracing::warn!(%from, why, "stanza dropped"),
            Handled::Reflected { room, id } => {
                tracing::debug!(%room, ?id, "own room message came back");
            }
            _ => {}
        }
        Ok(())
    }

    /// The body of an unencrypted chat message sent to this account directly by someone
    /// else (not a carbon, a notification, an error or a group chat message).
    fn plain_body(&self, message: &Element) -> Option<String> {
        let kind = message.attr("type").unwrap_or("normal");
        if !matches!(kind, "chat" | "normal")
            || message.has_child("received", carbons::NAMESPACE)
            || message.has_child("sent", carbons::NAMESPACE)
        {
            return None;
        }
        let body = message.get_child("body", NS_CLIENT)?.text();
        let sender = jid::Jid::new(message.attr("from")?).ok()?.to_bare();
        (!body.trim().is_empty() && sender != self.jid).then_some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_debug_output_hides_plaintext() {
        let plain = ClientEvent::Plain {
            from: "eve@example.org/x".into(),
            body: "the secret plan".into(),
        };
        let shown = format!("{plain:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("body_len: 15"), "{shown}");
    }

    #[test]
    fn the_default_configuration_asks_before_accepting_subscriptions() {
        let config = ClientConfig::default();
        assert!(!config.accept_subscriptions);
        assert_eq!(config.kind, "pc");
    }
}
