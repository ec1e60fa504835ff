//! One account online: the sans-I/O OMEMO [`Manager`] driven by the XMPP
//! [`Connection`]. Everything OMEMO happens in the library; this module only moves
//! stanzas between the two, answers the little XMPP housekeeping (presence
//! subscriptions, disco, pings, carbons) and orders outgoing messages after the fetches
//! they need.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jid::BareJid;
use minidom::Element;
use omemo::stanza::legacy::NAMESPACE as LEGACY_NAMESPACE;
use omemo::stanza::{self, legacy::EncryptedMessage};
use omemo::{Manager, ManagerConfig, ManagerError, SqliteStore, Trust};
use tokio::time::Instant;

use crate::carbons::{self, Carbon};
use crate::error::BotError;
use crate::xmpp::{self, Connection, NetEvent, Target};

/// How long an outgoing message waits for the device lists and bundles it needs before
/// it is encrypted with whatever is known.
const PREPARE_WAIT: Duration = Duration::from_secs(15);
/// Rounds of `prepare` (each one waits for its fetches) before encrypting anyway. A
/// first message to a contact needs two or three: the device list, then the bundles of
/// devices that the list named.
const MAX_PREPARE_ROUNDS: u8 = 4;
/// At most one repair of the own device list per this period, however many messages
/// arrive that were not encrypted for this device.
const REPUBLISH_EVERY: Duration = Duration::from_secs(60);
/// At most one "I only talk OMEMO" hint per contact per this period, so that two bots
/// cannot keep each other busy.
const HINT_EVERY: Duration = Duration::from_secs(5);

/// The plaintext answer to unencrypted messages.
pub(crate) const OMEMO_ONLY_HINT: &str = "I only talk OMEMO. Please turn on OMEMO encryption \
(legacy OMEMO, eu.siacs.conversations.axolotl) for this chat and write again.";
/// The plaintext answer to messages that carry only OMEMO 2 (`urn:xmpp:omemo:2`).
pub(crate) const OMEMO2_HINT: &str = "I only talk legacy OMEMO (eu.siacs.conversations.axolotl), \
not OMEMO 2. Please switch this chat to legacy OMEMO and write again.";

/// The current time in Unix seconds, as the library wants it.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens (or creates) the store and the OMEMO account in it.
pub(crate) fn open_manager(jid: &BareJid, store: &Path) -> Result<Manager<SqliteStore>, BotError> {
    if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let store = SqliteStore::open(store)?;
    let manager = Manager::open(
        store,
        jid,
        ManagerConfig::default(),
        &mut omemo::os_rng(),
        unix_now(),
    )?;
    Ok(manager)
}

/// How a message reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Addressed to this resource or the bare JID.
    Direct,
    /// A carbon of a message another resource of the account received.
    CarbonReceived,
    /// A carbon of a message another resource of the account sent.
    CarbonSent,
}

/// A message for the caller to act on.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A decrypted OMEMO message with a body.
    Text {
        /// The sender's bare JID.
        sender: BareJid,
        /// The sending device.
        device_id: u32,
        /// The plaintext.
        text: String,
        /// The sending device's trust.
        trust: Trust,
        /// How it arrived.
        via: Via,
    },
    /// An unencrypted message with a body, sent to us directly by someone else.
    Plain {
        /// The full `from` to answer to.
        from: String,
        /// Whether it carried an OMEMO 2 element (which this bot does not speak).
        omemo2: bool,
    },
}

/// A message waiting to be encrypted and sent.
#[derive(Debug)]
struct Outgoing {
    to: BareJid,
    text: String,
    queued: Instant,
    rounds: u8,
}

/// What became of an outgoing message.
#[derive(Debug)]
pub(crate) struct SendOutcome {
    /// The recipient.
    pub(crate) to: BareJid,
    /// The number of devices that got a key, or why nothing was sent.
    pub(crate) result: Result<usize, String>,
}

/// The roster state that subscription handling needs.
#[derive(Clone, Copy, Debug, Default)]
struct RosterEntry {
    /// We receive their presence (subscription `to` or `both`).
    subscribed_to: bool,
    /// A subscription request of ours is pending.
    asked: bool,
}

/// One account online.
pub(crate) struct Session {
    conn: Connection,
    manager: Manager<SqliteStore>,
    jid: BareJid,
    store: PathBuf,
    /// Serve contacts: accept presence subscriptions, enable carbons, fetch the roster.
    serve: bool,
    /// A session is bound; stanzas can be sent.
    online: bool,
    /// Sessions bound so far (the first one uses the manager opened at start).
    sessions: u32,
    /// The own device list and bundle are published and our presence is sent.
    ready: bool,
    roster: HashMap<BareJid, RosterEntry>,
    outgoing: VecDeque<Outgoing>,
    outcomes: Vec<SendOutcome>,
    last_republish: Option<Instant>,
    last_hint: HashMap<BareJid, Instant>,
    /// Responses to the bot's own IQ requests that a caller waits for, by id.
    awaited: HashMap<String, Option<Element>>,
    next_id: u64,
}

impl Session {
    /// Opens the store and starts connecting.
    pub(crate) fn start(target: Target, store: PathBuf, serve: bool) -> Result<Self, BotError> {
        let jid = target.jid.clone();
        let manager = open_manager(&jid, &store)?;
        tracing::info!(%jid, device_id = manager.device_id(), "OMEMO device opened");
        let conn = Connection::start(target)?;
        Ok(Self {
            conn,
            manager,
            jid,
            store,
            serve,
            online: false,
            sessions: 0,
            ready: false,
            roster: HashMap::new(),
            outgoing: VecDeque::new(),
            outcomes: Vec::new(),
            last_republish: None,
            last_hint: HashMap::new(),
            awaited: HashMap::new(),
            next_id: 0,
        })
    }

    /// The OMEMO manager.
    pub(crate) fn manager(&mut self) -> &mut Manager<SqliteStore> {
        &mut self.manager
    }

    /// Whether the own device is published and presence sent.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether nothing is waiting: no outgoing message, no unanswered request.
    pub(crate) fn is_idle(&self) -> bool {
        self.outgoing.is_empty() && self.manager.pending_requests() == 0
    }

    /// The outcomes of sent messages since the last call.
    pub(crate) fn take_outcomes(&mut self) -> Vec<SendOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// When the oldest outgoing message stops waiting for fetches.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.outgoing.front().map(|o| o.queued + PREPARE_WAIT)
    }

    /// Waits for the next event from the connection. Cancel-safe.
    pub(crate) async fn next_event(&mut self) -> Result<NetEvent, BotError> {
        self.conn.next().await
    }

    /// Handles one event from the connection, then sends what became due.
    pub(crate) async fn handle(&mut self, event: NetEvent) -> Result<Option<Incoming>, BotError> {
        let incoming = match event {
            NetEvent::Online(bound) => {
                self.on_online(&bound).await?;
                None
            }
            NetEvent::Stanza(element) => match element.name() {
                "iq" => {
                    self.on_iq(&element).await?;
                    None
                }
                "presence" => {
                    self.on_presence(&element).await?;
                    None
                }
                "message" => self.on_message(&element),
                _ => None,
            },
        };
        self.after().await?;
        Ok(incoming)
    }

    /// Waits for one event (or `deadline`) and handles it.
    pub(crate) async fn step(&mut self, deadline: Instant) -> Result<Option<Incoming>, BotError> {
        let event = tokio::select! {
            event = self.conn.next() => Some(event?),
            () = tokio::time::sleep_until(deadline) => None,
        };
        match event {
            Some(event) => self.handle(event).await,
            None => {
                self.after().await?;
                Ok(None)
            }
        }
    }

    /// Handles events until `done` holds; fails with `what` at `deadline`.
    pub(crate) async fn wait_until(
        &mut self,
        deadline: Instant,
        what: &'static str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), BotError> {
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(BotError::Timeout(what));
            }
            self.step(deadline).await?;
        }
        Ok(())
    }

    /// Queues `text` for `to`; it is encrypted once the device lists and bundles it needs
    /// are fetched.
    pub(crate) fn queue_message(&mut self, to: BareJid, text: String) {
        self.outgoing.push_back(Outgoing {
            to,
            text,
            queued: Instant::now(),
            rounds: 0,
        });
    }

    /// Fetches what encrypting to `jid` needs (device list, bundles), round after round
    /// until nothing more is missing or `deadline` passes.
    pub(crate) async fn prepare(
        &mut self,
        jid: &BareJid,
        deadline: Instant,
    ) -> Result<(), BotError> {
        for _ in 0..MAX_PREPARE_ROUNDS {
            self.wait_until(deadline, "fetching device lists and bundles", |s| {
                s.manager.pending_requests() == 0
            })
            .await?;
            if self
                .manager
                .prepare(std::slice::from_ref(jid), unix_now())?
                == 0
            {
                return Ok(());
            }
            self.pump().await?;
        }
        Ok(())
    }

    /// Sends an IQ request built by `build` (given a fresh id) and waits for its
    /// response.
    pub(crate) async fn request(
        &mut self,
        build: impl FnOnce(&str) -> Element,
        deadline: Instant,
    ) -> Result<Element, BotError> {
        let id = self.fresh_id("request");
        self.awaited.insert(id.clone(), None);
        self.send(build(&id)).await?;
        let waited = self
            .wait_until(deadline, "waiting for an IQ response", |s| {
                s.awaited.get(&id).is_some_and(Option::is_some)
            })
            .await;
        let response = self.awaited.remove(&id).flatten();
        waited?;
        response.ok_or(BotError::Timeout("waiting for an IQ response"))
    }

    /// Whether messages are still waiting to be sent.
    pub(crate) fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The own bare JID.
    pub(crate) fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// Sends what became due (requests, messages whose fetches are done).
    pub(crate) async fn flush(&mut self) -> Result<(), BotError> {
        self.after().await
    }

    /// Periodic housekeeping of the library (signed prekey rotation).
    pub(crate) async fn tick(&mut self) -> Result<(), BotError> {
        if let Err(error) = self.manager.tick(&mut omemo::os_rng(), unix_now()) {
            tracing::error!(%error, "OMEMO housekeeping failed");
        }
        self.after().await
    }

    /// Answers an unencrypted message with the OMEMO-only hint (rate-limited per contact).
    pub(crate) async fn send_hint(&mut self, to: &str, omemo2: bool) -> Result<(), BotError> {
        let Ok(jid) = jid::Jid::new(to) else {
            return Ok(());
        };
        let bare = jid.to_bare();
        let now = Instant::now();
        if self
            .last_hint
            .get(&bare)
            .is_some_and(|at| now.duration_since(*at) < HINT_EVERY)
        {
            tracing::debug!(to = %bare, "hint suppressed (rate limit)");
            return Ok(());
        }
        self.last_hint.insert(bare.clone(), now);
        let id = self.fresh_id("hint");
        let text = if omemo2 { OMEMO2_HINT } else { OMEMO_ONLY_HINT };
        if let Some(message) = xmpp::chat_message(to, &id, text) {
            self.send(message).await?;
            tracing::info!(to = %bare, "answered an unencrypted message with the OMEMO-only hint");
        }
        Ok(())
    }

    /// Goes offline: unavailable presence first (so the server stops routing messages to
    /// this resource and keeps new ones offline), then up to `grace` to finish what is
    /// under way (queued messages, messages already on the wire), then the stream close.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        if self.online {
            if let Some(presence) = xmpp::presence("unavailable", None)
                && let Err(error) = self.send(presence).await
            {
                tracing::debug!(%error, "could not send unavailable presence");
            }
            let deadline = Instant::now() + grace;
            let quiet = Duration::from_millis(300);
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let wake = if self.is_idle() {
                    (now + quiet).min(deadline)
                } else {
                    deadline
                };
                let event = tokio::select! {
                    event = self.conn.next() => event.ok(),
                    () = tokio::time::sleep_until(wake) => None,
                };
                match event {
                    Some(event) => match self.handle(event).await {
                        Ok(Some(Incoming::Text {
                            sender,
                            text,
                            via: Via::Direct | Via::CarbonReceived,
                            trust,
                            ..
                        })) if self.serve && sender != self.jid && trust != Trust::Distrusted => {
                            self.queue_message(sender, text);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "error while stopping");
                            break;
                        }
                    },
                    None if self.is_idle() => break,
                    None => {
                        let _ = self.after().await;
                    }
                }
            }
            if !self.outgoing.is_empty() {
                tracing::warn!(count = self.outgoing.len(), "stopping with unsent messages");
            }
        }
        let device_id = self.manager.device_id();
        let Self { conn, manager, .. } = self;
        drop(manager);
        conn.close().await;
        tracing::info!(device_id, "stopped; OMEMO state is saved");
    }

    // --- internals ---

    fn fresh_id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("bot-{what}-{}", self.next_id)
    }

    async fn send(&mut self, element: Element) -> Result<(), BotError> {
        self.conn.send(element).await
    }

    /// Sends the manager's queued requests and messages, declares readiness, and sends
    /// the outgoing messages whose fetches are done.
    async fn after(&mut self) -> Result<(), BotError> {
        self.pump().await?;
        if self.online && !self.ready && self.manager.pending_requests() == 0 {
            self.send(xmpp::available_presence()?).await?;
            self.ready = true;
            tracing::info!(
                jid = %self.conn.bound().map(ToString::to_string).unwrap_or_default(),
                device_id = self.manager.device_id(),
                "online; own device list and bundle published"
            );
        }
        self.flush_outgoing().await
    }

    async fn pump(&mut self) -> Result<(), BotError> {
        if !self.online {
            return Ok(());
        }
        while let Some(request) = self.manager.poll_request() {
            self.send(request.stanza).await?;
        }
        while let Some(message) = self.manager.poll_message() {
            self.send(message).await?;
        }
        Ok(())
    }

    /// Encrypts and sends the queued messages in order, each once nothing it needs is
    /// being fetched any more (or it has waited long enough).
    async fn flush_outgoing(&mut self) -> Result<(), BotError> {
        while self.ready {
            let Some(front) = self.outgoing.front_mut() else {
                break;
            };
            let waited_enough = front.queued.elapsed() >= PREPARE_WAIT;
            if !waited_enough {
                if self.manager.pending_requests() > 0 {
                    break;
                }
                if front.rounds < MAX_PREPARE_ROUNDS {
                    front.rounds += 1;
                    let to = front.to.clone();
                    if self.manager.prepare(&[to], unix_now())? > 0 {
                        self.pump().await?;
                        break;
                    }
                }
            }
            let Some(message) = self.outgoing.pop_front() else {
                break;
            };
            let result = self.manager.encrypt(
                std::slice::from_ref(&message.to),
                &message.text,
                &mut omemo::os_rng(),
                unix_now(),
            );
            let outcome = match result {
                Ok(encrypted) => {
                    let devices = encrypted.recipients.len();
                    for skipped in &encrypted.skipped {
                        tracing::debug!(jid = %skipped.jid, device_id = skipped.device_id, reason = ?skipped.reason, "device skipped");
                    }
                    self.send(encrypted.stanza).await?;
                    tracing::info!(
                        to = %message.to,
                        devices,
                        skipped = encrypted.skipped.len(),
                        "sent an OMEMO message"
                    );
                    Ok(devices)
                }
                Err(error) => {
                    tracing::warn!(to = %message.to, %error, "could not encrypt a message");
                    Err(error.to_string())
                }
            };
            self.outcomes.push(SendOutcome {
                to: message.to,
                result: outcome,
            });
            self.pump().await?;
        }
        Ok(())
    }

    async fn on_online(&mut self, bound: &jid::FullJid) -> Result<(), BotError> {
        tracing::info!(jid = %bound, "logged in");
        self.online = true;
        self.ready = false;
        if self.sessions > 0 {
            // A new stream: requests of the old one will never be answered. The state is
            // in the store; a fresh manager starts over with it (and republishes).
            self.manager = open_manager(&self.jid, &self.store)?;
        }
        self.sessions += 1;
        if self.serve {
            let roster = self.fresh_id("roster");
            if let Some(iq) =
                xmpp::iq_request("get", &roster, Element::bare("query", xmpp::NS_ROSTER))
            {
                self.send(iq).await?;
            }
            let carbons = self.fresh_id("carbons");
            if let Some(iq) =
                xmpp::iq_request("set", &carbons, Element::bare("enable", xmpp::NS_CARBONS))
            {
                self.send(iq).await?;
            }
        }
        Ok(())
    }

    async fn on_iq(&mut self, iq: &Element) -> Result<(), BotError> {
        match iq.attr("type") {
            Some("result" | "error") => {
                match self.manager.handle_iq(iq, &mut omemo::os_rng(), unix_now()) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "OMEMO could not handle an IQ response");
                        return Ok(());
                    }
                }
                let id = iq.attr("id").unwrap_or_default();
                let failed = iq.attr("type") == Some("error");
                if let Some(slot) = self.awaited.get_mut(id) {
                    *slot = Some(iq.clone());
                } else if id.starts_with("bot-roster-") {
                    if let Some(query) = iq.get_child("query", xmpp::NS_ROSTER) {
                        self.apply_roster(query);
                    }
                } else if id.starts_with("bot-carbons-") {
                    if failed {
                        tracing::warn!("the server refused to enable carbons");
                    } else {
                        tracing::debug!("carbons enabled");
                    }
                } else if failed {
                    tracing::debug!(%id, "IQ error for an unknown request");
                }
            }
            _ => {
                if let Some(query) = iq.get_child("query", xmpp::NS_ROSTER) {
                    let from_own = iq.attr("from").is_none_or(|f| f == self.jid.as_str());
                    if iq.attr("type") == Some("set") && from_own {
                        self.apply_roster(query);
                    }
                }
                if let Some(answer) = xmpp::answer_iq(iq, &self.jid) {
                    self.send(answer).await?;
                }
            }
        }
        Ok(())
    }

    fn apply_roster(&mut self, query: &Element) {
        for item in query.children().filter(|c| c.is("item", xmpp::NS_ROSTER)) {
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

    async fn on_presence(&mut self, presence: &Element) -> Result<(), BotError> {
        if !self.serve || presence.attr("type") != Some("subscribe") {
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
        if let Some(reply) = xmpp::presence("subscribed", Some(from.as_str())) {
            self.send(reply).await?;
        }
        let entry = self.roster.entry(from.clone()).or_default();
        let ask_back = !entry.subscribed_to && !entry.asked;
        entry.asked = true;
        if ask_back && let Some(request) = xmpp::presence("subscribe", Some(from.as_str())) {
            self.send(request).await?;
        }
        tracing::info!(jid = %from, subscribed_back = ask_back, "accepted a presence subscription");
        Ok(())
    }

    fn on_message(&mut self, message: &Element) -> Option<Incoming> {
        match carbons::unwrap(message, &self.jid) {
            Carbon::None => self.on_plain_message(message, Via::Direct),
            Carbon::Received(inner) => self.on_plain_message(&inner, Via::CarbonReceived),
            Carbon::Sent(inner) => self.on_plain_message(&inner, Via::CarbonSent),
            Carbon::Invalid(why) => {
                tracing::warn!(
                    from = message.attr("from").unwrap_or_default(),
                    why,
                    "dropped a carbon"
                );
                None
            }
        }
    }

    fn on_plain_message(&mut self, message: &Element, via: Via) -> Option<Incoming> {
        let kind = message.attr("type").unwrap_or("normal");
        if via == Via::Direct && stanza::parse_event(message).is_some() {
            match self.manager.handle_event(message, unix_now()) {
                Ok(true) => tracing::debug!(
                    from = message.attr("from").unwrap_or_default(),
                    "device list notification"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "device list notification not applied"),
            }
            return None;
        }
        if matches!(kind, "error" | "groupchat") {
            return None;
        }
        if EncryptedMessage::find(message).is_some() {
            return self.decrypt(message, via);
        }
        let has_body = message
            .get_child("body", xmpp::NS_CLIENT)
            .is_some_and(|b| !b.text().trim().is_empty());
        if via != Via::Direct || kind == "headline" || !has_body {
            return None;
        }
        let from = message.attr("from")?;
        let sender = jid::Jid::new(from).ok()?.to_bare();
        if sender == self.jid {
            return None;
        }
        Some(Incoming::Plain {
            from: from.to_owned(),
            omemo2: message.has_child("encrypted", "urn:xmpp:omemo:2"),
        })
    }

    fn decrypt(&mut self, message: &Element, via: Via) -> Option<Incoming> {
        let from = message.attr("from").unwrap_or_default().to_owned();
        let has_payload = EncryptedMessage::find(message)
            .is_some_and(|e| e.has_child("payload", LEGACY_NAMESPACE));
        match self
            .manager
            .decrypt(message, &mut omemo::os_rng(), unix_now())
        {
            Ok(decrypted) => {
                let sender = BareJid::new(&decrypted.sender).ok()?;
                match decrypted.body {
                    Some(text) => {
                        tracing::info!(from = %sender, device_id = decrypted.device_id, trust = ?decrypted.trust, ?via, "decrypted an OMEMO message");
                        Some(Incoming::Text {
                            sender,
                            device_id: decrypted.device_id,
                            text,
                            trust: decrypted.trust,
                            via,
                        })
                    }
                    None => {
                        tracing::debug!(from = %sender, device_id = decrypted.device_id, "empty OMEMO message (key exchange or heartbeat)");
                        None
                    }
                }
            }
            Err(error) if error.is_duplicate() => {
                tracing::debug!(%from, "duplicate OMEMO message ignored");
                None
            }
            Err(ManagerError::OwnMessage) => None,
            Err(ManagerError::NotForThisDevice) if !has_payload => {
                tracing::debug!(%from, "empty OMEMO message for another device");
                None
            }
            Err(ManagerError::NotForThisDevice) => {
                tracing::warn!(%from, device_id = self.manager.device_id(), ?via, "OMEMO message not encrypted for this device");
                if via == Via::Direct {
                    self.repair_own_device();
                }
                None
            }
            Err(error) => {
                tracing::warn!(%from, %error, ?via, "could not decrypt an OMEMO message");
                None
            }
        }
    }

    /// The sender did not encrypt for this device: maybe the own device list lost it.
    /// Fetch the list again (the library re-adds this device when missing) and republish
    /// the bundle; at most once per [`REPUBLISH_EVERY`].
    fn repair_own_device(&mut self) {
        let now = Instant::now();
        if self
            .last_republish
            .is_some_and(|at| now.duration_since(at) < REPUBLISH_EVERY)
        {
            return;
        }
        self.last_republish = Some(now);
        tracing::info!("checking the own device list and republishing the bundle");
        self.manager.publish_device();
        self.manager.publish_bundle();
    }
}
