//! The session manager: the only module that knows keys, sessions, stanzas, devices,
//! trust and the store. Sans-I/O: stanzas and `now` go in; stanzas to send, IQ requests
//! and results come out.
//!
//! The caller drives it:
//! - after [`Manager::open`], and after every call, send what [`Manager::poll_request`]
//!   and [`Manager::poll_message`] yield;
//! - feed IQ responses to [`Manager::handle_iq`] and PEP notifications (messages with a
//!   pubsub event) to [`Manager::handle_event`];
//! - before encrypting, call [`Manager::prepare`] and wait until the requests it queued
//!   are answered; then [`Manager::encrypt`];
//! - feed incoming OMEMO messages to [`Manager::decrypt`];
//! - call [`Manager::tick`] now and then (signed prekey rotation, forgetting requests
//!   whose answer never came).

mod bundles;
mod devices;
mod fanout;
mod receive;
mod request;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use minidom::Element;
use rand_core::CryptoRng;

pub use devices::DeviceInfo;
pub use fanout::{Encrypted, SkipReason, SkippedDevice};
pub use receive::Decrypted;
pub use request::Request;

use crate::consts::{
    DEFAULT_HEARTBEAT_AFTER, DEFAULT_INACTIVE_AFTER_SECS, DEFAULT_MAX_DEVICES_PER_JID,
    DEFAULT_PRE_KEY_COUNT, DEFAULT_SIGNED_PRE_KEY_GRACE_SECS, DEFAULT_SIGNED_PRE_KEY_ROTATION_SECS,
    MAX_DEVICE_ID,
};
use crate::error::ManagerError;
use crate::ratchet::RatchetLimits;
use crate::store::{
    AccountRecord, Batch, DeviceRecord, Op, PreKeyRecord, SignedPreKeyRecord, Store,
};
use crate::version::Version;
use crate::{Fingerprint, IdentityKeyPair, KeyPair, PreKey, SecretKey, Session, SignedPreKey};

/// The protocol version the manager speaks so far; its keys of other versions in the
/// store are left alone.
const VERSION: Version = Version::Legacy;

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
        }
    }
}

/// A signed prekey with its creation time.
#[derive(Clone)]
struct DatedSignedPreKey {
    key: SignedPreKey,
    created_at: u64,
}

/// The OMEMO session manager of one account on one device. It speaks legacy OMEMO so
/// far; OMEMO 2 comes next.
///
/// ```
/// use omemo::{BareJid, Manager, ManagerConfig, MemoryStore};
///
/// let mut rng = omemo::os_rng();
/// let jid = BareJid::new("alice@example.org")?;
/// let now = 1_700_000_000; // seconds since the Unix epoch
/// let mut manager = Manager::open(MemoryStore::new(), &jid, ManagerConfig::default(), &mut rng, now)?;
/// // The first requests fetch the own device list and publish the bundle: send each
/// // `<iq>` and give the answer to `manager.handle_iq(&answer, &mut rng, now)`.
/// let first = manager.poll_request().expect("a request");
/// assert_eq!(first.stanza.name(), "iq");
/// println!("device {} has fingerprint {}", manager.device_id(), manager.fingerprint());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Manager<S: Store> {
    store: S,
    config: ManagerConfig,
    jid: String,
    device_id: u32,
    identity: IdentityKeyPair,
    /// Oldest first; the last one is published.
    signed_pre_keys: Vec<DatedSignedPreKey>,
    pre_keys: BTreeMap<u32, PreKey>,
    next_pre_key_id: u32,
    sessions: HashMap<(String, u32), Session>,
    devices: HashMap<String, Vec<DeviceRecord>>,
    /// JIDs whose bundles are fetched as soon as their device list arrives.
    wanted: HashSet<String>,
    /// JIDs whose device list arrived since the manager was opened.
    known_lists: HashSet<String>,
    requests: VecDeque<Request>,
    /// Requests sent or queued, with the time they were queued.
    pending: HashMap<String, (request::Pending, u64)>,
    /// The latest `now` any call brought (requests are stamped with it).
    clock: u64,
    messages: VecDeque<Element>,
    next_request: u64,
    /// Random per-instance prefix of request ids, so two managers never collide.
    request_prefix: u32,
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
        let mut manager = match store.load_account()? {
            Some(account) => Self::load(store, config, account)?,
            None => Self::create(store, config, jid.clone(), rng, now)?,
        };
        if manager.jid != jid {
            return Err(ManagerError::WrongAccount {
                stored: manager.jid,
                requested: jid,
            });
        }
        manager.request_prefix = rng.next_u32();
        manager.clock = now;
        manager.fetch_device_list(&jid);
        manager.publish_bundle();
        Ok(manager)
    }

    fn create(
        mut store: S,
        config: ManagerConfig,
        jid: String,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Self, ManagerError> {
        let identity = IdentityKeyPair::generate(rng);
        // 1..2^31-1, as XEP-0384 asks.
        let device_id = loop {
            let id = rng.next_u32() & MAX_DEVICE_ID;
            if id != 0 {
                break id;
            }
        };
        let signed = SignedPreKey::generate(VERSION, rng, &identity, 1);
        let pre_keys: BTreeMap<u32, PreKey> = (1..=config.pre_key_count)
            .map(|id| (id, PreKey::generate(rng, id)))
            .collect();
        let next_pre_key_id = config.pre_key_count + 1;
        let account = AccountRecord {
            jid: jid.clone(),
            device_id,
            identity_secret: identity.secret_key().to_bytes(),
            next_pre_key_id,
        };
        let mut batch = Batch::default();
        batch.ops.push(Op::PutAccount(account));
        batch
            .ops
            .push(Op::PutSignedPreKey(signed_record(&signed, now)));
        batch
            .ops
            .extend(pre_keys.values().map(|k| Op::PutPreKey(pre_key_record(k))));
        store.commit(batch)?;
        tracing::info!(%jid, device_id, "created OMEMO identity");
        Ok(Self::assemble(
            store,
            config,
            jid,
            device_id,
            identity,
            vec![DatedSignedPreKey {
                key: signed,
                created_at: now,
            }],
            pre_keys,
            next_pre_key_id,
        ))
    }

    fn load(store: S, config: ManagerConfig, account: AccountRecord) -> Result<Self, ManagerError> {
        let identity =
            IdentityKeyPair::from_secret(SecretKey::from_bytes(*account.identity_secret));
        let signed_pre_keys = store
            .load_signed_pre_keys()?
            .into_iter()
            .filter(|r| r.version == VERSION)
            .map(|r| DatedSignedPreKey {
                key: SignedPreKey::from_parts(
                    r.version,
                    r.id,
                    KeyPair::from_secret(SecretKey::from_bytes(*r.secret)),
                    r.signature,
                ),
                created_at: r.created_at,
            })
            .collect::<Vec<_>>();
        if signed_pre_keys.is_empty() {
            return Err(ManagerError::Store(crate::StoreError::Corrupt(
                "no signed prekey".into(),
            )));
        }
        let pre_keys = store
            .load_pre_keys()?
            .into_iter()
            .filter(|r| r.version == VERSION)
            .map(|r| {
                (
                    r.id,
                    PreKey::from_parts(
                        r.id,
                        KeyPair::from_secret(SecretKey::from_bytes(*r.secret)),
                    ),
                )
            })
            .collect();
        let next = account.next_pre_key_id;
        Ok(Self::assemble(
            store,
            config,
            account.jid,
            account.device_id,
            identity,
            signed_pre_keys,
            pre_keys,
            next,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        store: S,
        config: ManagerConfig,
        jid: String,
        device_id: u32,
        identity: IdentityKeyPair,
        signed_pre_keys: Vec<DatedSignedPreKey>,
        pre_keys: BTreeMap<u32, PreKey>,
        next_pre_key_id: u32,
    ) -> Self {
        Self {
            store,
            config,
            jid,
            device_id,
            identity,
            signed_pre_keys,
            pre_keys,
            next_pre_key_id,
            sessions: HashMap::new(),
            devices: HashMap::new(),
            wanted: HashSet::new(),
            known_lists: HashSet::new(),
            requests: VecDeque::new(),
            pending: HashMap::new(),
            clock: 0,
            messages: VecDeque::new(),
            next_request: 0,
            request_prefix: 0,
        }
    }

    /// The own bare JID.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// This device's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.identity_key().fingerprint()
    }

    /// The store, for reading.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Closes the manager and hands back its store. Everything is already committed.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The next IQ request to send, if any.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next message stanza the manager wants sent (session completion and
    /// heartbeat messages), if any.
    pub fn poll_message(&mut self) -> Option<Element> {
        self.messages.pop_front()
    }

    /// Number of IQ requests sent and not yet answered through [`Manager::handle_iq`].
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Forgets every request that was queued or sent: call it when the connection was
    /// lost (their answers will never come), then [`Manager::publish_device`] and
    /// [`Manager::publish_bundle`] on the new stream.
    pub fn connection_lost(&mut self) {
        self.pending.clear();
        self.requests.clear();
    }

    /// Drops the cached device records and sessions, so that changes another process made
    /// to the store (for example a trust decision) are seen. Everything in the cache is
    /// already committed.
    pub fn reload_from_store(&mut self) {
        self.devices.clear();
        self.sessions.clear();
    }

    /// Periodic housekeeping: rotates the signed prekey when it is due, drops replaced
    /// ones past their grace period, and forgets IQ requests whose answer never came
    /// (after a minute), so that they are asked again.
    pub fn tick(&mut self, rng: &mut impl CryptoRng, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        self.expire_requests(now);
        self.rotate_signed_pre_key(rng, now)
    }
}

fn signed_record(key: &SignedPreKey, created_at: u64) -> SignedPreKeyRecord {
    SignedPreKeyRecord {
        version: key.version(),
        id: key.id(),
        secret: key.key_pair().secret_key().to_bytes(),
        signature: *key.signature(),
        created_at,
    }
}

fn pre_key_record(key: &PreKey) -> PreKeyRecord {
    PreKeyRecord {
        version: VERSION,
        id: key.id(),
        secret: key.key_pair().secret_key().to_bytes(),
    }
}
