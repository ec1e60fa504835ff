//! The session manager: the only module that knows keys, sessions, stanzas, devices,
//! trust and the store. Sans-I/O, in the manner of quinn-proto's `Connection`: stanzas
//! and `now` go in; stanzas to send, events and the next timeout come out.
//!
//! The caller drives it:
//! - after [`Manager::open`] and after every call, send each stanza
//!   [`Manager::poll_transmit`] yields, and act on each [`Event`] from
//!   [`Manager::poll_event`];
//! - give every incoming stanza to [`Manager::handle_stanza`], which says what it was
//!   ([`Handled`]): the answer to a request, a device-list notification, an OMEMO
//!   message of either version (directly or as a carbon copy), or the application's;
//! - send with [`Manager::send`], which holds a message until the device lists and
//!   bundles it needs have arrived (or a deadline passed);
//! - call [`Manager::handle_timeout`] when [`Manager::poll_timeout`] says;
//! - on a lost connection call [`Manager::connection_lost`], and
//!   [`Manager::connected`] on the new stream.
//!
//! [`Manager::prepare`], [`Manager::encrypt`] and [`Manager::decrypt`] are the immediate
//! layer underneath, for callers that order the fetches themselves.
//!
//! Group commit: the sans-I/O calls commit with [`Store::commit_deferred`], and
//! [`Manager::poll_transmit`] puts those commits on disk ([`Store::sync`]) before it
//! hands out the first stanza after them. A caller that handles every stanza that has
//! arrived before it polls pays one disk write for all of them. The immediate layer's
//! state is on disk when its call returns.
//!
//! Parts that own their state: [`own_device`] (identity, device id, the keys of the
//! published bundles, their rotation and refill), [`request::Requests`] (IQ requests
//! queued and unanswered), [`session_cache`] (the sessions in memory), [`directory`]
//! (device records and trust, which lists arrived, which bundles are wanted) and
//! [`outbox`] (messages waiting for what they need).

mod bundles;
mod devices;
mod directory;
mod driving;
mod events;
mod fanout;
mod history;
mod outbox;
mod own_device;
mod receive;
mod request;
mod rooms;
mod session_cache;

use std::collections::VecDeque;

use minidom::Element;
use rand_core::CryptoRng;

pub use devices::DeviceInfo;
pub use events::{Event, Handled, MessageId, Via};
pub use fanout::{Encrypted, Recipient, SkipReason, SkippedDevice};
pub use receive::Decrypted;

use directory::DeviceDirectory;
use outbox::Outbox;
use own_device::{NewKeys, OwnDevice};
use request::Requests;
use session_cache::{SessionCache, SkippedKeyTally};

use crate::backup::{self, BackupError};
use crate::consts::{
    DEFAULT_HEARTBEAT_AFTER, DEFAULT_INACTIVE_AFTER_SECS, DEFAULT_MAX_DEVICES_PER_JID,
    DEFAULT_MAX_SKIPPED_KEYS_PER_JID, DEFAULT_NEW_SESSIONS_PER_HOUR, DEFAULT_PRE_KEY_COUNT,
    DEFAULT_REBUILD_EVERY_SECS, DEFAULT_SEND_TIMEOUT_SECS, DEFAULT_SESSION_CACHE_SIZE,
    DEFAULT_SIGNED_PRE_KEY_GRACE_SECS, DEFAULT_SIGNED_PRE_KEY_ROTATION_SECS,
};
use crate::error::ManagerError;
use crate::ratchet::RatchetLimits;
use crate::stanza::omemo2::MAX_LABEL_LENGTH;
use crate::store::{AccountRecord, ArchivePosition, Batch, Op, Store, StoreError};
use crate::version::Versions;
use crate::{Fingerprint, IdentityKeyPair, SecretKey};

/// How new devices are trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustPolicy {
    /// Blind trust before verification: a new device is trusted blindly as long as the
    /// user has made no manual decision for any device of that JID.
    BlindTrustBeforeVerification,
    /// Every new device waits for a manual decision.
    Manual,
}

/// Tunables of a [`Manager`]; [`Default`] gives the values deployed clients use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerConfig {
    /// One-time prekeys kept published (XEP-0384 asks for about 100).
    pub pre_key_count: u32,
    /// Age after which the signed prekey is replaced, in seconds (7 days, as python-omemo).
    pub signed_pre_key_rotation_secs: u64,
    /// How long a replaced signed prekey still accepts key exchanges, in seconds.
    pub signed_pre_key_grace_secs: u64,
    /// Devices accepted from one device list; a longer list is refused.
    pub max_devices_per_jid: usize,
    /// Received messages in one chain without a reply after which an empty message is
    /// sent (python-omemo: 53).
    pub heartbeat_after: u32,
    /// A device whose last message is older than this is no longer encrypted to, in
    /// seconds.
    pub inactive_after_secs: u64,
    /// How new devices are trusted.
    pub trust_policy: TrustPolicy,
    /// The `<body>` for clients without OMEMO; `None` sends no body.
    pub fallback_body: Option<String>,
    /// Skip limits of every session.
    pub ratchet_limits: RatchetLimits,
    /// Skipped message keys kept for all the sessions (current and previous) with the
    /// devices of one JID together; past it the oldest of the session a message updates
    /// go.
    pub max_skipped_keys_per_jid: usize,
    /// The protocol versions spoken: device lists and bundles are published, messages
    /// sent and received in these (both by default). The keys of a version turned off
    /// stay in the store.
    pub versions: Versions,
    /// This device's label in the OMEMO 2 device list (signed with the identity key),
    /// shown by other clients next to its fingerprint; at most
    /// [`stanza::omemo2::MAX_LABEL_LENGTH`](crate::stanza::omemo2::MAX_LABEL_LENGTH)
    /// bytes.
    pub label: Option<String>,
    /// How long [`Manager::send`] holds a message for the device lists and bundles it
    /// needs, in seconds; then it goes to the devices known by then.
    pub send_timeout_secs: u64,
    /// At most one automatic session rebuild per device in this many seconds (a message
    /// naming a used prekey, or one without a session, triggers one).
    pub rebuild_every_secs: u64,
    /// Sessions one JID's key exchanges may start per hour (each costs a prekey and
    /// memory; a stranger can make up device ids at will).
    pub new_sessions_per_hour: u32,
    /// Sessions kept in memory; past this the least recently used one is dropped (it
    /// stays in the store and is loaded again when needed).
    pub session_cache_size: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            pre_key_count: DEFAULT_PRE_KEY_COUNT,
            signed_pre_key_rotation_secs: DEFAULT_SIGNED_PRE_KEY_ROTATION_SECS,
            signed_pre_key_grace_secs: DEFAULT_SIGNED_PRE_KEY_GRACE_SECS,
            max_devices_per_jid: DEFAULT_MAX_DEVICES_PER_JID,
            heartbeat_after: DEFAULT_HEARTBEAT_AFTER,
            inactive_after_secs: DEFAULT_INACTIVE_AFTER_SECS,
            trust_policy: TrustPolicy::BlindTrustBeforeVerification,
            fallback_body: Some(
                "I sent you an OMEMO encrypted message but your client doesn't seem to support that."
                    .to_owned(),
            ),
            ratchet_limits: RatchetLimits::default(),
            max_skipped_keys_per_jid: DEFAULT_MAX_SKIPPED_KEYS_PER_JID,
            versions: Versions::BOTH,
            label: None,
            send_timeout_secs: DEFAULT_SEND_TIMEOUT_SECS,
            rebuild_every_secs: DEFAULT_REBUILD_EVERY_SECS,
            new_sessions_per_hour: DEFAULT_NEW_SESSIONS_PER_HOUR,
            session_cache_size: DEFAULT_SESSION_CACHE_SIZE,
        }
    }
}

/// The OMEMO session manager of one account on one device, speaking legacy OMEMO and
/// OMEMO 2 from one identity and one device id (see [`ManagerConfig::versions`]).
///
/// ```
/// use omemo::{BareJid, Manager, ManagerConfig, MemoryStore};
///
/// let mut rng = omemo::os_rng();
/// let jid = BareJid::new("alice@example.org")?;
/// let now = 1_700_000_000; // seconds since the Unix epoch
/// let mut manager = Manager::open(MemoryStore::new(), &jid, ManagerConfig::default(), &mut rng, now)?;
/// // The first requests fetch the own device lists and publish the bundles: send each
/// // `<iq>` and give the answer to `manager.handle_stanza(&answer, &mut rng, now)`.
/// let first = manager.poll_transmit()?.expect("a request");
/// assert_eq!(first.name(), "iq");
/// println!("device {} has fingerprint {}", manager.device_id(), manager.fingerprint());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Manager<S: Store> {
    store: S,
    config: ManagerConfig,
    /// This device: identity, device id and the keys of its bundle.
    own: OwnDevice,
    sessions: SessionCache,
    /// Skipped message keys per JID, for its bound.
    skipped: SkippedKeyTally,
    /// Other devices (and the own other ones): records, trust, lists, wanted bundles.
    directory: DeviceDirectory,
    /// IQ requests queued for the caller and waiting for their answers.
    requests: Requests,
    /// Messages given to `send` that wait for what they need.
    outbox: Outbox,
    /// The latest `now` any call brought (requests are stamped with it).
    clock: u64,
    /// Message stanzas to send (encrypted messages, completions, heartbeats), each with
    /// the event to report once it is handed out.
    messages: VecDeque<Outgoing>,
    /// How many of `messages`, from the front, depend only on state that is on disk.
    durable_messages: usize,
    /// Whether commits were deferred since the last sync.
    unsynced: bool,
    /// Events for the application.
    events: VecDeque<Event>,
    /// When the own device lists were last checked because a message was not for this
    /// device.
    last_repair: Option<u64>,
    /// The versions whose own device list arrived and was read whole (every item parsed)
    /// at its last arrival: only those may be rewritten from the records.
    own_lists_read: Versions,
    /// The catch-ups with archives under way, and what waits for them.
    history: history::History,
    /// The rooms joined, by bare JID.
    rooms: std::collections::HashMap<String, rooms::Room>,
}

impl<S: Store> Manager<S> {
    /// Opens the account in `store`, creating identity, device id, signed prekey and
    /// prekeys on first use. Queues the requests that fetch the own device list (to add
    /// this device to it) and publish the bundle.
    pub fn open(
        store: S,
        jid: &jid::BareJid,
        config: ManagerConfig,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Self, ManagerError> {
        let jid = jid.as_str().to_owned();
        Self::check_config(&config)?;
        let manager = match store.load_account()? {
            Some(account) => Self::load(store, config, account, rng, now)?,
            None => Self::create(store, config, jid.clone(), rng, now)?,
        };
        if manager.own.jid != jid {
            return Err(ManagerError::WrongAccount {
                stored: manager.own.jid,
                requested: jid,
            });
        }
        Ok(manager.started(rng, now))
    }

    /// Opens a new `store` with the identity of a backup made by
    /// [`Manager::export_identity`]: the same device id and fingerprint, new prekeys, no
    /// sessions (contacts' next messages rebuild them through the healing path, see
    /// [`Event::SessionRebuilt`]). Fails with [`BackupError::WrongPassphrase`] for a
    /// wrong passphrase, [`BackupError::StoreNotEmpty`] when the store has an identity
    /// already and [`ManagerError::WrongAccount`] when the backup is of another JID;
    /// then nothing is written.
    pub fn restore_identity(
        mut store: S,
        jid: &jid::BareJid,
        backup: &[u8],
        passphrase: &str,
        config: ManagerConfig,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Self, ManagerError> {
        Self::check_config(&config)?;
        let identity = backup::open(backup, passphrase)?;
        if identity.jid != jid.as_str() {
            return Err(ManagerError::WrongAccount {
                stored: identity.jid,
                requested: jid.to_string(),
            });
        }
        if store.load_account()?.is_some() {
            return Err(BackupError::StoreNotEmpty.into());
        }
        let keys = IdentityKeyPair::from_secret(SecretKey::from_bytes(*identity.secret));
        let new_keys = NewKeys::restored(config.versions, config.pre_key_count, rng);
        let (own, batch) =
            OwnDevice::with_identity(identity.jid, identity.device_id, keys, &new_keys, rng, now);
        store.commit(batch)?;
        tracing::info!(jid = %own.jid, device_id = own.device_id, "restored OMEMO identity from a backup");
        Ok(Self::assemble(store, config, own).started(rng, now))
    }

    /// This device's identity (account, device id, identity key pair; no sessions, no
    /// prekeys) sealed under `passphrase` (Argon2id, AES-256-GCM), for
    /// [`Manager::restore_identity`]. Keep it as safe as the store: it is the identity.
    pub fn export_identity(
        &self,
        passphrase: &str,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u8>, ManagerError> {
        let account = self.own.account_record();
        let identity = backup::Identity {
            jid: account.jid,
            device_id: account.device_id,
            secret: account.identity_secret,
        };
        Ok(backup::seal(&identity, passphrase, rng)?)
    }

    fn check_config(config: &ManagerConfig) -> Result<(), ManagerError> {
        if config.versions.is_empty() {
            return Err(ManagerError::NoVersions);
        }
        let label_length = config.label.as_ref().map_or(0, String::len);
        if label_length > MAX_LABEL_LENGTH {
            return Err(ManagerError::LabelTooLong {
                length: label_length,
                max: MAX_LABEL_LENGTH,
            });
        }
        Ok(())
    }

    /// The last steps of opening: the label, a fresh request id space, the clock, and
    /// the own device lists and bundles checked and republished.
    fn started(mut self, rng: &mut impl CryptoRng, now: u64) -> Self {
        let manager = &mut self;
        manager.own.set_label(manager.config.label.as_deref(), rng);
        manager.requests = Requests::new(rng.next_u32());
        manager.clock = now;
        manager.republish();
        self
    }

    fn create(
        mut store: S,
        config: ManagerConfig,
        jid: String,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Self, ManagerError> {
        let (own, mut batch) =
            OwnDevice::create(jid, config.versions, config.pre_key_count, rng, now);
        // Nothing archived before this device existed was encrypted for it.
        batch.ops.push(Op::PutArchivePosition {
            archive: own.jid.clone(),
            position: ArchivePosition {
                at: now,
                last_id: None,
            },
        });
        store.commit(batch)?;
        tracing::info!(jid = %own.jid, device_id = own.device_id, "created OMEMO identity");
        Ok(Self::assemble(store, config, own))
    }

    fn load(
        mut store: S,
        config: ManagerConfig,
        account: AccountRecord,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Self, ManagerError> {
        let (own, mut batch) = OwnDevice::load(
            &store,
            account,
            config.versions,
            config.pre_key_count,
            rng,
            now,
        )?;
        // A store from before catch-ups (schema 4) reads its archive from now on: what it
        // had read is not known, and reading it all again would find old messages whose
        // keys are gone.
        if store.load_archive_position(&own.jid)?.is_none() {
            batch.ops.push(Op::PutArchivePosition {
                archive: own.jid.clone(),
                position: ArchivePosition {
                    at: now,
                    last_id: None,
                },
            });
        }
        if !batch.is_empty() {
            store.commit(batch)?;
        }
        Ok(Self::assemble(store, config, own))
    }

    fn assemble(store: S, config: ManagerConfig, own: OwnDevice) -> Self {
        let sessions = SessionCache::new(config.ratchet_limits, config.session_cache_size);
        Self {
            store,
            config,
            own,
            sessions,
            skipped: SkippedKeyTally::default(),
            directory: DeviceDirectory::default(),
            requests: Requests::default(),
            outbox: Outbox::default(),
            clock: 0,
            messages: VecDeque::new(),
            durable_messages: 0,
            unsynced: false,
            events: VecDeque::new(),
            last_repair: None,
            own_lists_read: Versions::NONE,
            history: history::History::default(),
            rooms: std::collections::HashMap::new(),
        }
    }

    /// The own bare JID.
    pub fn jid(&self) -> &str {
        &self.own.jid
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.own.device_id
    }

    /// This device's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.own.identity.identity_key().fingerprint()
    }

    /// Sessions held in memory (at most
    /// [`ManagerConfig::session_cache_size`]).
    pub fn cached_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The store, for reading.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Closes the manager and hands back its store, with every commit on disk.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when the deferred commits cannot be written (the store
    /// is back at its last sync).
    pub fn into_store(mut self) -> Result<S, ManagerError> {
        self.sync()?;
        Ok(self.store)
    }

    /// Number of IQ requests not yet answered (through [`Manager::handle_stanza`]).
    pub fn pending_requests(&self) -> usize {
        self.requests.pending_count()
    }

    /// Forgets every request that was queued or sent: call it when the connection was
    /// lost (their answers will never come), then [`Manager::connected`] on the new
    /// stream. Messages given to [`Manager::send`] stay queued.
    pub fn connection_lost(&mut self) {
        self.requests.clear();
        self.archive_connection_lost();
        self.rooms_connection_lost();
    }

    /// A stream is up (the first one too): fetches the own device lists (this device is
    /// put back where missing) and republishes the bundles, and asks again for what
    /// queued messages wait for. Requests already queued are not duplicated.
    pub fn connected(&mut self, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        self.republish();
        let waiting: Vec<jid::BareJid> = self.outbox.recipients();
        if !waiting.is_empty() {
            self.prepare(&waiting, now)?;
        }
        Ok(())
    }

    /// Drops the cached device records and sessions, so that changes another process made
    /// to the store (for example a trust decision) are seen. Everything in the cache is
    /// already committed. The manager does this by itself when the store says another
    /// process committed ([`Store::changed_elsewhere`]).
    pub fn reload_from_store(&mut self) {
        self.directory.forget_records();
        self.sessions.clear();
        self.skipped.clear();
    }

    /// Commits `batch` now for the loads, on disk at the next [`Manager::sync`].
    pub(super) fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        // Set first: a failed batch may have opened the transaction, or cost the
        // deferred ones before it; the next sync closes or reports it.
        self.unsynced = true;
        self.store.commit_deferred(batch)
    }

    /// Puts the deferred commits on disk now, as [`Manager::poll_transmit`] does first:
    /// call it before a pause in which no stanza is taken (offline, say), since another
    /// process waits for the store meanwhile.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when they cannot be written. The store is then back at
    /// its last sync: the cached records and sessions are dropped, and neither the
    /// message stanzas built on the lost state nor the queued requests (a bundle
    /// publication may name prekeys the store lost) are handed out (a message given to
    /// [`Manager::send`] gets an [`Event::NotSent`]). The own prekeys in memory may
    /// differ from the store's: reopen the manager (the `omemo-tokio` client ends with
    /// this error, and `omemo-bot run` exits).
    pub fn sync(&mut self) -> Result<(), ManagerError> {
        if !self.unsynced {
            return Ok(());
        }
        self.unsynced = false;
        let positions = std::mem::take(&mut self.history.unsaved);
        let written = if positions.is_empty() {
            Ok(())
        } else {
            self.store.commit_deferred(Batch {
                ops: positions
                    .into_iter()
                    .map(|(archive, position)| Op::PutArchivePosition { archive, position })
                    .collect(),
            })
        };
        if let Err(error) = written.and_then(|()| self.store.sync()) {
            tracing::error!(%error, "OMEMO state could not be written; its stanzas are dropped");
            self.reload_from_store();
            self.requests.clear();
            for lost in self.messages.drain(self.durable_messages..) {
                if let Some(Event::Sent { id, .. }) = lost.sent {
                    self.events.push_back(Event::NotSent {
                        id,
                        error: ManagerError::Store(error.clone()),
                    });
                }
            }
            return Err(error.into());
        }
        self.durable_messages = self.messages.len();
        Ok(())
    }

    /// Queues a message stanza; `sent` is reported when it is handed out.
    pub(super) fn queue_message(&mut self, stanza: Element, sent: Option<Event>) {
        self.messages.push_back(Outgoing { stanza, sent });
    }

    /// Reloads when another process committed to the store since the last look.
    pub(super) fn notice_external_changes(&mut self) -> Result<(), ManagerError> {
        if self.store.changed_elsewhere()? {
            tracing::debug!("the store changed elsewhere; reloading");
            self.reload_from_store();
        }
        Ok(())
    }
}

/// A message stanza waiting for [`Manager::poll_transmit`].
struct Outgoing {
    stanza: Element,
    /// The [`Event::Sent`] of a message given to [`Manager::send`].
    sent: Option<Event>,
}
