//! Benchmarks of the session manager with its SQLite store on a real file (WAL mode).
//!
//! `cargo bench -p omemo --bench manager` builds a few in-process worlds (an account
//! "alice" whose `Manager` keeps its state in a `SqliteStore` file under the temp dir,
//! recipients whose managers use a `MemoryStore`, and a PEP router that answers the
//! managers' IQ requests), then
//!
//! 1. runs the criterion benchmarks (group `manager`): encryption of one message to 1,
//!    10 and 100 devices over established sessions, steady-state decryption, first
//!    contact by a prekey message, and encryption to one device with 10 and with 10 000
//!    other sessions in the store; every operation includes its SQLite commit(s);
//! 2. measures each operation again, [`RUNS`] times, with its own `Instant` loop, to
//!    show the distribution (median, p99, max) and the time spent in `Store::commit`
//!    (the store is wrapped in [`Timed`], which clocks every commit);
//! 3. measures the sub-parts of the 100-device fan-out: the ratchet step, session
//!    serialisation, and the SQLite transaction split into statements, `COMMIT` and the
//!    WAL checkpoint (on a second, raw `rusqlite` connection to the same file);
//! 4. prints the tables and whether the targets are met.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use jid::BareJid;
use minidom::Element;
use omemo::hazmat::{
    IdentityKeyPair, PreKey, PreKeyBundle, RatchetMessage, SecretKey, Session, SignedPreKey,
    encrypt_payload,
};
use omemo::stanza::legacy::{EncryptedKey, EncryptedMessage};
use omemo::{
    AccountRecord, Batch, DeviceRecord, Manager, ManagerConfig, MemoryStore, Op, PreKeyRecord,
    SignedPreKeyRecord, SqliteStore, Store, StoreError, Trust, Version, Versions, os_rng,
};
use zeroize::Zeroizing;

/// Runs per operation in the own timing loop (the distribution table).
const RUNS: usize = 2_000;
/// Sessions in the big store of the flatness check.
const MANY_SESSIONS: usize = 10_000;
/// The clock every manager sees (constant: nothing expires during the run).
const NOW: u64 = 1_700_000_000;
const ALICE: &str = "alice@example.org";
const ALICE_FULL: &str = "alice@example.org/bench";
const BODY: &str =
    "A message of typical length: about a hundred characters of chat text, no more, no less. Bye.";
/// Messages a peer sends on one chain before alice answers (below the heartbeat limit
/// of 53, so that no decryption also sends a heartbeat).
const PER_CHAIN: usize = 40;
/// The fan-out target: 100 devices including the commit.
const FANOUT_TARGET: Duration = Duration::from_millis(3);
/// A commit slower than this ran a WAL checkpoint (the others take well under 1 ms).
const SLOW_COMMIT: Duration = Duration::from_millis(2);
/// "Flat" store cost: the 10 000-session store within this factor of the 10-session one.
const FLAT_RATIO: f64 = 1.25;

fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap()
}

// ---------------------------------------------------------------------------------------
// A store that clocks its commits
// ---------------------------------------------------------------------------------------

/// Forwards to `inner` and adds up the time spent in [`Store::commit`].
struct Timed<S> {
    inner: S,
    commit_time: Duration,
    commits: u64,
}

impl<S> Timed<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            commit_time: Duration::ZERO,
            commits: 0,
        }
    }
}

impl<S: Store> Store for Timed<S> {
    fn load_account(&self) -> Result<Option<AccountRecord>, StoreError> {
        self.inner.load_account()
    }
    fn load_signed_pre_keys(&self) -> Result<Vec<SignedPreKeyRecord>, StoreError> {
        self.inner.load_signed_pre_keys()
    }
    fn load_pre_keys(&self) -> Result<Vec<PreKeyRecord>, StoreError> {
        self.inner.load_pre_keys()
    }
    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.inner.load_session(jid, device_id, version)
    }
    fn load_devices(&self, jid: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        self.inner.load_devices(jid)
    }
    fn load_archive_position(
        &self,
        archive: &str,
    ) -> Result<Option<omemo::ArchivePosition>, StoreError> {
        self.inner.load_archive_position(archive)
    }
    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.load_room_occupants(room)
    }
    fn commit(&mut self, batch: Batch) -> Result<(), StoreError> {
        let start = Instant::now();
        let result = self.inner.commit(batch);
        self.commit_time += start.elapsed();
        self.commits += 1;
        result
    }
}

// ---------------------------------------------------------------------------------------
// The PEP service (as in tests/manager.rs, without notifications)
// ---------------------------------------------------------------------------------------

/// The in-process PEP service of the integration tests.
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/pep.rs"]
mod pep;
#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/rng.rs"]
mod rng;

use pep::{Pep, with_from};

/// Sends every queued request of `manager` to the PEP service and feeds the answers
/// back, until nothing is pending; returns the messages it wanted sent.
fn drive<S: Store>(pep: &mut Pep, manager: &mut Manager<S>) -> Vec<Element> {
    let jid = manager.jid().to_owned();
    let mut messages = Vec::new();
    while let Some(stanza) = manager.poll_transmit().unwrap() {
        if stanza.name() != "iq" {
            messages.push(stanza);
            continue;
        }
        let answer = pep.answer(&jid, &stanza);
        let handled = manager.handle_stanza(&answer, &mut os_rng(), NOW).unwrap();
        assert_eq!(handled, omemo::Handled::Response);
    }
    assert_eq!(manager.pending_requests(), 0);
    messages
}

// ---------------------------------------------------------------------------------------
// Worlds
// ---------------------------------------------------------------------------------------

/// The devices of one recipient account (MemoryStore managers).
struct Peer {
    jid: String,
    devices: Vec<Manager<MemoryStore>>,
}

/// Alice (the measured manager) and her peers.
/// The protocol version measured: legacy OMEMO, or OMEMO 2 with
/// `OMEMO_BENCH_VERSION=omemo2`.
fn bench_version() -> Version {
    match std::env::var("OMEMO_BENCH_VERSION").as_deref() {
        Ok("omemo2") => Version::Omemo2,
        _ => Version::Legacy,
    }
}

/// The managers' configuration: the one version measured.
fn config() -> ManagerConfig {
    ManagerConfig {
        versions: Versions::only(bench_version()),
        ..ManagerConfig::default()
    }
}

struct World<S: Store> {
    pep: Pep,
    alice: Manager<Timed<S>>,
    peers: Vec<Peer>,
    /// The database file, for SQLite worlds.
    path: Option<PathBuf>,
}

impl<S: Store> World<S> {
    fn new(store: S, path: Option<PathBuf>) -> Self {
        let mut pep = Pep::default();
        let mut alice = Manager::open(
            Timed::new(store),
            &bare(ALICE),
            config(),
            &mut os_rng(),
            NOW,
        )
        .unwrap();
        drive(&mut pep, &mut alice);
        Self {
            pep,
            alice,
            peers: Vec::new(),
            path,
        }
    }

    /// Creates `jid` with `devices` devices and establishes confirmed sessions between
    /// alice and each of them: alice sends a key exchange to all, each answers with the
    /// empty completion message, which alice decrypts. Returns the peer's index.
    fn add_peer(&mut self, jid: &str, devices: usize) -> usize {
        let mut managers = Vec::with_capacity(devices);
        for _ in 0..devices {
            let mut manager =
                Manager::open(MemoryStore::new(), &bare(jid), config(), &mut os_rng(), NOW)
                    .unwrap();
            drive(&mut self.pep, &mut manager);
            managers.push(manager);
        }
        self.alice.prepare(&[bare(jid)], NOW).unwrap();
        drive(&mut self.pep, &mut self.alice);
        let first = self
            .alice
            .encrypt(&[bare(jid)], "hello", &mut os_rng(), NOW)
            .unwrap();
        assert_eq!(first.recipients.len(), devices, "{:?}", first.skipped);
        let first = with_from(first.stanza, ALICE_FULL);
        for (i, device) in managers.iter_mut().enumerate() {
            let received = device.decrypt(&first, &mut os_rng(), NOW).unwrap();
            assert_eq!(received.body.as_deref(), Some("hello"));
            let sent = drive(&mut self.pep, device);
            let completion = sent.into_iter().next().expect("session completion");
            let completion = with_from(completion, &format!("{jid}/d{i}"));
            let done = self.alice.decrypt(&completion, &mut os_rng(), NOW).unwrap();
            assert_eq!(done.body, None);
            drive(&mut self.pep, &mut self.alice);
        }
        self.peers.push(Peer {
            jid: jid.to_owned(),
            devices: managers,
        });
        self.peers.len() - 1
    }
}

impl World<SqliteStore> {
    fn sqlite(dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("{name}.sqlite3"));
        Self::new(SqliteStore::open(&path).unwrap(), Some(path))
    }

    /// Writes `count` sessions of alice with devices of other accounts (two devices per
    /// JID), with their device records, through a second connection in one commit.
    /// The sessions are real ones (X3DH as initiator with alice's identity) against a
    /// few generated bundles; they are never loaded by the manager.
    fn add_other_sessions(&mut self, count: usize) {
        let mut rng = os_rng();
        let account = self.alice.store().inner.load_account().unwrap().unwrap();
        let identity =
            IdentityKeyPair::from_secret(SecretKey::from_bytes(*account.identity_secret));
        let bundles: Vec<PreKeyBundle> = (0..16)
            .map(|_| {
                let identity = IdentityKeyPair::generate(&mut rng);
                let signed = SignedPreKey::generate(bench_version(), &mut rng, &identity, 1);
                let pre_keys: Vec<PreKey> =
                    (1..=100).map(|id| PreKey::generate(&mut rng, id)).collect();
                PreKeyBundle::new(&identity, &signed, &pre_keys)
            })
            .collect();
        let mut ops = Vec::with_capacity(2 * count);
        for k in 0..count {
            let jid = format!("contact{}@example.org", k / 2);
            let device_id = 1_000 + k as u32;
            let bundle = &bundles[k % bundles.len()];
            let session = Session::initiate(&mut rng, &identity, bundle).unwrap();
            ops.push(Op::PutSession {
                jid: jid.clone(),
                device_id,
                version: bench_version(),
                state: session.to_bytes(),
            });
            ops.push(Op::PutDevice(DeviceRecord {
                jid,
                device_id,
                listed: Versions::only(bench_version()),
                identity_key: Some(*bundle.identity_key.curve25519().as_bytes()),
                trust: Trust::Blind,
                first_seen_at: Some(NOW),
                left_lists_at: None,
                last_message_at: Some(NOW),
                bundle_failed_at: None,
                bundle_failed: Versions::NONE,
                label: None,
                label_signature: None,
            }));
        }
        let mut second = SqliteStore::open_alongside(self.path.as_ref().unwrap()).unwrap();
        second.commit(Batch { ops }).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Cases: one operation per call, with its untimed preparation
// ---------------------------------------------------------------------------------------

/// One timed operation.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// The whole manager call.
    total: Duration,
    /// Of which in `Store::commit`.
    commit: Duration,
    /// Number of commits it made.
    commits: u64,
}

struct Case {
    /// The criterion id, in group `manager`.
    id: &'static str,
    /// The row label of the table.
    label: String,
    /// Prepares (untimed) and runs one operation.
    once: Box<dyn FnMut() -> Sample>,
}

/// Times `op` on alice; the commit time and count come from her [`Timed`] store.
fn timed<S: Store, T>(
    alice: &mut Manager<Timed<S>>,
    op: impl FnOnce(&mut Manager<Timed<S>>) -> T,
) -> (Sample, T) {
    let (commit_before, commits_before) = (alice.store().commit_time, alice.store().commits);
    let start = Instant::now();
    let out = op(alice);
    let total = start.elapsed();
    let sample = Sample {
        total,
        commit: alice.store().commit_time - commit_before,
        commits: alice.store().commits - commits_before,
    };
    (sample, out)
}

/// Alice encrypts one message to every device of `peer`.
fn encrypt_case<S: Store + 'static>(
    world: &Rc<RefCell<World<S>>>,
    peer: usize,
    id: &'static str,
    label: String,
) -> Case {
    let world = Rc::clone(world);
    let (to, expected) = {
        let w = world.borrow();
        (bare(&w.peers[peer].jid), w.peers[peer].devices.len())
    };
    let recipients = [to];
    Case {
        id,
        label,
        once: Box::new(move || {
            let mut w = world.borrow_mut();
            let (sample, encrypted) = timed(&mut w.alice, |alice| {
                alice.encrypt(&recipients, BODY, &mut os_rng(), NOW)
            });
            let encrypted = encrypted.unwrap();
            assert_eq!(encrypted.recipients.len(), expected);
            black_box(encrypted);
            sample
        }),
    }
}

/// Alice decrypts the next message of `peer`'s single device. The peer sends
/// `per_chain` messages on one chain, then alice answers (untimed), so the peer's next
/// message starts a new chain (one DH ratchet step on alice's side).
fn decrypt_case(
    world: &Rc<RefCell<World<SqliteStore>>>,
    peer: usize,
    per_chain: usize,
    id: &'static str,
    label: String,
) -> Case {
    let world = Rc::clone(world);
    let mut queue: VecDeque<Element> = VecDeque::new();
    let mut started = false;
    Case {
        id,
        label,
        once: Box::new(move || {
            let mut guard = world.borrow_mut();
            let w = &mut *guard;
            if queue.is_empty() {
                let jid = w.peers[peer].jid.clone();
                if started {
                    let answer = w
                        .alice
                        .encrypt(&[bare(&jid)], "ok", &mut os_rng(), NOW)
                        .unwrap();
                    let answer = with_from(answer.stanza, ALICE_FULL);
                    let device = &mut w.peers[peer].devices[0];
                    device.decrypt(&answer, &mut os_rng(), NOW).unwrap();
                    drive(&mut w.pep, device);
                }
                started = true;
                let device = &mut w.peers[peer].devices[0];
                for _ in 0..per_chain {
                    let message = device
                        .encrypt(&[bare(ALICE)], BODY, &mut os_rng(), NOW)
                        .unwrap();
                    queue.push_back(with_from(message.stanza, &format!("{jid}/d0")));
                }
            }
            let message = queue.pop_front().unwrap();
            let (sample, decrypted) = timed(&mut w.alice, |alice| {
                alice.decrypt(&message, &mut os_rng(), NOW)
            });
            assert_eq!(decrypted.unwrap().body.as_deref(), Some(BODY));
            assert!(
                w.alice.poll_transmit().unwrap().is_none(),
                "no heartbeat or request expected"
            );
            sample
        }),
    }
}

/// A new device (of a new account) sends alice a key exchange built from her current
/// bundle; alice builds the session, refills the used prekey (one commit), queues the
/// bundle republish and encrypts the empty completion message (a second commit).
/// A first message from `sender_jid`'s device `sender_device` to Alice's device, on
/// `session` (its key exchange), in the version measured.
fn first_message(
    session: &mut Session,
    sender_device: u32,
    alice_device: u32,
    sender_jid: &str,
    rng: &mut impl rand_core::CryptoRng,
) -> Element {
    let plaintext = match bench_version() {
        Version::Legacy => BODY.as_bytes().to_vec(),
        Version::Omemo2 => {
            let mut body = Element::builder("body", "jabber:client").build();
            body.append_text_node(BODY);
            omemo::stanza::sce::seal(vec![body], sender_jid, ALICE, Some(NOW), rng)
        }
    };
    let (key, payload) = encrypt_payload(bench_version(), rng, &plaintext);
    let message = session.encrypt(key.as_bytes()).unwrap();
    assert!(matches!(message, RatchetMessage::KeyExchange(_)));
    let key = EncryptedKey {
        recipient_device: alice_device,
        key_exchange: true,
        data: message.as_bytes().to_vec(),
    };
    match bench_version() {
        Version::Legacy => {
            let encrypted = EncryptedMessage {
                sender_device,
                keys: vec![key],
                iv: payload.iv,
                payload: Some(payload.ciphertext),
            };
            omemo::stanza::legacy::message_element(ALICE, "m1", "chat", &encrypted, None)
        }
        Version::Omemo2 => {
            let encrypted = omemo::stanza::omemo2::EncryptedMessage {
                sender_device,
                recipients: vec![omemo::stanza::omemo2::RecipientKeys {
                    jid: ALICE.to_owned(),
                    keys: vec![key],
                }],
                payload: Some(payload.ciphertext),
            };
            omemo::stanza::omemo2::message_element(ALICE, "m1", "chat", &encrypted, None)
        }
    }
}

fn first_contact_case(world: &Rc<RefCell<World<SqliteStore>>>) -> Case {
    let world = Rc::clone(world);
    let mut counter = 0u32;
    Case {
        id: "first_contact",
        label: "first contact: decrypt PreKeySignalMessage".to_owned(),
        once: Box::new(move || {
            let mut guard = world.borrow_mut();
            let w = &mut *guard;
            let mut rng = os_rng();
            counter += 1;
            // The sender's side, untimed.
            let sender = IdentityKeyPair::generate(&mut rng);
            let bundle = w.alice.own_bundle(bench_version()).unwrap();
            let mut session = Session::initiate(&mut rng, &sender, &bundle).unwrap();
            let sender_jid = format!("new{counter}@example.org");
            let stanza = first_message(
                &mut session,
                counter,
                w.alice.device_id(),
                &sender_jid,
                &mut rng,
            );
            let stanza = with_from(stanza, &format!("{sender_jid}/r"));
            let (sample, decrypted) = timed(&mut w.alice, |alice| {
                alice.decrypt(&stanza, &mut os_rng(), NOW)
            });
            assert_eq!(decrypted.unwrap().body.as_deref(), Some(BODY));
            // Untimed: the completion message goes out, the bundle republish and the
            // device list fetch of the new account are answered.
            assert!(
                !drive(&mut w.pep, &mut w.alice).is_empty(),
                "session completion"
            );
            sample
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and output
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// Criterion's mean and median of the last run of `manager/<id>`, if it ran in this
/// process.
fn criterion_estimates(id: &str, since: SystemTime) -> Option<(Duration, Duration)> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion"))
        })
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("criterion")
        });
    let file = home
        .join("manager")
        .join(id)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    let ns = |key: &str| {
        json[key]["point_estimate"]
            .as_f64()
            .map(|ns| Duration::from_nanos(ns as u64))
    };
    Some((ns("mean")?, ns("median")?))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The own timing loop over one case.
struct Distribution {
    total: Vec<Duration>,
    commit: Vec<Duration>,
    rest: Vec<Duration>,
    commits: u64,
}

fn distribution(case: &mut Case, runs: usize) -> Distribution {
    let mut samples: Vec<Sample> = (0..runs).map(|_| (case.once)()).collect();
    let commits = samples.iter().map(|s| s.commits).sum::<u64>() / runs as u64;
    let mut total: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    let mut commit: Vec<Duration> = samples.iter().map(|s| s.commit).collect();
    let mut rest: Vec<Duration> = samples.drain(..).map(|s| s.total - s.commit).collect();
    total.sort();
    commit.sort();
    rest.sort();
    Distribution {
        total,
        commit,
        rest,
        commits,
    }
}

// ---------------------------------------------------------------------------------------
// Sub-parts of the 100-device fan-out
// ---------------------------------------------------------------------------------------

/// A confirmed session pair (alice -> bob), built with the core API.
fn confirmed_session() -> Session {
    let mut rng = os_rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(bench_version(), &mut rng, &bob, 1);
    let pre_keys: Vec<PreKey> = (1..=2).map(|id| PreKey::generate(&mut rng, id)).collect();
    let bundle = PreKeyBundle::new(&bob, &signed, &pre_keys);
    let alice = IdentityKeyPair::generate(&mut rng);
    let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let RatchetMessage::KeyExchange(kex) = to_bob.encrypt(&[7; 32]).unwrap() else {
        unreachable!()
    };
    let pre_key = pre_keys
        .iter()
        .find(|k| Some(k.id()) == kex.pre_key_id())
        .unwrap();
    let (mut to_alice, _) = Session::respond(&mut rng, &bob, &signed, pre_key, &kex).unwrap();
    let RatchetMessage::Authenticated(reply) = to_alice.encrypt(&[8; 32]).unwrap() else {
        unreachable!()
    };
    to_bob.decrypt(&mut rng, &reply).unwrap();
    assert!(to_bob.is_confirmed());
    to_bob
}

/// Median of `rounds` timings of `op`.
fn median_of(rounds: usize, mut op: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| op()).collect();
    times.sort();
    times[times.len() / 2]
}

struct SubParts {
    ratchet: Duration,
    to_bytes: Duration,
    statements: Duration,
    statements_secure_delete: Duration,
    statements_no_secure_delete: Duration,
    commit: Duration,
    /// (WAL threshold in pages, checkpoint time, pages copied).
    checkpoints: Vec<(u64, Duration, i64)>,
    wal_pages_per_commit: f64,
    /// (wal_autocheckpoint, sorted times of whole 100-upsert transactions).
    autocheckpoint: Vec<(u64, Vec<Duration>)>,
}

/// The sub-parts of one fan-out to 100 devices, each the median of repeated runs.
fn sub_parts(path: &Path, peer_jid: &str, quick: bool) -> SubParts {
    let rounds = if quick { 3 } else { 200 };
    let mut session = confirmed_session();
    let key = [0x42u8; 32];
    let ratchet = median_of(rounds, || {
        let start = Instant::now();
        for _ in 0..100 {
            black_box(session.encrypt(black_box(&key)).unwrap());
        }
        start.elapsed()
    });
    let to_bytes = median_of(rounds, || {
        let start = Instant::now();
        for _ in 0..100 {
            black_box(session.to_bytes());
        }
        start.elapsed()
    });

    // A copy of the database, written through a raw connection with the store's
    // per-connection settings, except that it never checkpoints on its own: the
    // statements, COMMIT and the checkpoint are timed apart.
    let original = rusqlite::Connection::open(path).unwrap();
    original
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(original);
    let copy = path.with_extension("raw.sqlite3");
    std::fs::copy(path, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "secure_delete", true).unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    let states: Vec<(u32, Vec<u8>)> = conn
        .prepare("SELECT device_id, state FROM sessions WHERE jid = ?1")
        .unwrap()
        .query_map([peer_jid], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(states.len(), 100);
    let states = RefCell::new(states);
    let upsert = "INSERT INTO sessions (jid, device_id, version, state) VALUES (?1, ?2, 1, ?3)
                  ON CONFLICT (jid, device_id, version) DO UPDATE SET state = excluded.state";
    // Frames in the WAL, from its file size (the pragmas that report it would
    // checkpoint). The WAL is truncated to zero after every checkpoint below.
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |row| row.get(0))
        .unwrap();
    let page_size = page_size as u64;
    let mut wal = copy.as_os_str().to_owned();
    wal.push("-wal");
    let frames = move || -> u64 {
        let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        len.saturating_sub(32) / (page_size + 24)
    };
    // Each transaction writes new states of the same size, as a ratchet step does
    // (SQLite skips writing a page whose bytes do not change).
    let advance = || {
        for (_, state) in states.borrow_mut().iter_mut() {
            let (middle, end) = (state.len() / 2, (state.len() / 2 + 32).min(state.len()));
            for byte in &mut state[middle..end] {
                *byte ^= 0xa5;
            }
        }
    };
    let transaction = |conn: &rusqlite::Connection| -> (Duration, Duration) {
        advance();
        let start = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut statement = conn.prepare_cached(upsert).unwrap();
        for (device_id, state) in states.borrow().iter() {
            statement
                .execute(rusqlite::params![peer_jid, device_id, state])
                .unwrap();
        }
        drop(statement);
        let statements = start.elapsed();
        let start = Instant::now();
        conn.execute_batch("COMMIT").unwrap();
        (statements, start.elapsed())
    };
    let mut statement_times = Vec::new();
    let mut commit_times = Vec::new();
    let mut checkpoints = Vec::new();
    let mut pages = 0u64;
    let mut transactions = 0usize;
    // Ten cycles at the store's threshold (wal_autocheckpoint = 1000 pages), then ten
    // at a tenth of it, to see what a checkpoint's cost depends on.
    let cycles = if quick { 1 } else { 10 };
    for threshold in [1000, 100] {
        for _ in 0..cycles {
            // Commit until the WAL holds `threshold` pages, then checkpoint as the
            // store's connection would after that commit.
            for round in 1.. {
                let (statements, commit) = transaction(&conn);
                statement_times.push(statements);
                commit_times.push(commit);
                let wal = frames();
                assert!(round < 10_000, "the WAL does not grow");
                if wal >= threshold || quick {
                    pages += wal;
                    transactions += round;
                    break;
                }
            }
            let start = Instant::now();
            let copied: i64 = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(2))
                .unwrap();
            checkpoints.push((threshold, start.elapsed(), copied));
            // The store's writer would now restart the WAL from its beginning; truncate
            // it (nothing left to copy) so that its size counts frames again.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
    }
    statement_times.sort();
    commit_times.sort();
    // Whole transactions with SQLite's automatic checkpoint at the store's threshold
    // and at a tenth of it.
    let mut autocheckpoint = Vec::new();
    for threshold in [1000, 100] {
        conn.pragma_update(None, "wal_autocheckpoint", threshold as i64)
            .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let mut times: Vec<Duration> = (0..if quick { 3 } else { 2_000 })
            .map(|_| {
                let (statements, commit) = transaction(&conn);
                statements + commit
            })
            .collect();
        times.sort();
        autocheckpoint.push((threshold, times));
    }
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    // secure_delete on and off, interleaved.
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..rounds.min(100) {
        conn.pragma_update(None, "secure_delete", true).unwrap();
        on.push(transaction(&conn).0);
        conn.pragma_update(None, "secure_delete", false).unwrap();
        off.push(transaction(&conn).0);
    }
    on.sort();
    off.sort();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = copy.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    SubParts {
        ratchet,
        to_bytes,
        statements: statement_times[statement_times.len() / 2],
        statements_secure_delete: on[on.len() / 2],
        statements_no_secure_delete: off[off.len() / 2],
        commit: commit_times[commit_times.len() / 2],
        checkpoints,
        wal_pages_per_commit: pages as f64 / transactions as f64,
        autocheckpoint,
    }
}

/// The sub-parts of a first contact on alice's side, each the median of `rounds` runs.
struct FirstContactParts {
    /// `Session::respond`: X3DH as responder and the first decryption (DH step).
    respond: Duration,
    /// One fresh one-time prekey (the refill).
    pre_key: Duration,
    /// The bundle republished after the refill: `own_bundle` and its XML.
    bundle_xml: Duration,
}

fn first_contact_parts<S: Store>(alice: &Manager<S>, quick: bool) -> FirstContactParts {
    let rounds = if quick { 3 } else { 200 };
    let mut rng = os_rng();
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(bench_version(), &mut rng, &bob, 1);
    let respond = median_of(rounds, || {
        let pre_key = PreKey::generate(&mut rng, 1);
        let bundle = PreKeyBundle::new(&bob, &signed, std::slice::from_ref(&pre_key));
        let sender = IdentityKeyPair::generate(&mut rng);
        let mut session = Session::initiate(&mut rng, &sender, &bundle).unwrap();
        let RatchetMessage::KeyExchange(kex) = session.encrypt(&[1; 32]).unwrap() else {
            unreachable!()
        };
        let start = Instant::now();
        let out = Session::respond(&mut rng, &bob, &signed, &pre_key, &kex).unwrap();
        let time = start.elapsed();
        black_box(out);
        time
    });
    let pre_key = median_of(rounds, || {
        let start = Instant::now();
        black_box(PreKey::generate(&mut rng, 7));
        start.elapsed()
    });
    let bundle_xml = median_of(rounds, || {
        let start = Instant::now();
        let bundle = alice.own_bundle(bench_version()).unwrap();
        let element = match bench_version() {
            Version::Legacy => omemo::stanza::legacy::bundle_element(&bundle),
            Version::Omemo2 => omemo::stanza::omemo2::bundle_element(&bundle),
        };
        black_box(element.unwrap());
        start.elapsed()
    });
    FirstContactParts {
        respond,
        pre_key,
        bundle_xml,
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------

fn manager_benches(c: &mut Criterion) {
    let started = SystemTime::now();
    let clock = Instant::now();
    // `cargo test --benches` runs this without `--bench`: one quick pass only.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 3 } else { RUNS };
    let many = if quick { 200 } else { MANY_SESSIONS };
    let dir = std::env::temp_dir().join(format!("omemo-manager-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load_before = load_average();

    // World A: alice on an SQLite file, with recipients of 1, 10 and 100 devices and
    // two single-device chat partners for decryption.
    let mut a = World::sqlite(&dir, "alice");
    let one = a.add_peer("one@example.org", 1);
    let ten = a.add_peer("ten@example.org", 10);
    let hundred = a.add_peer("hundred@example.org", 100);
    let chat1 = a.add_peer("chat1@example.org", 1);
    let chat2 = a.add_peer("chat2@example.org", 1);
    let a_path = a.path.clone().unwrap();
    let a = Rc::new(RefCell::new(a));
    // The same fan-out with the MemoryStore, as the cost without persistence.
    let mut m = World::new(MemoryStore::new(), None);
    let m_hundred = m.add_peer("hundred@example.org", 100);
    let m = Rc::new(RefCell::new(m));
    // Flatness: one recipient device, with 10 or 10 000 other sessions in the store.
    let mut few = World::sqlite(&dir, "few");
    few.add_other_sessions(10);
    let few_bob = few.add_peer("bob@example.org", 1);
    let few = Rc::new(RefCell::new(few));
    let mut lots = World::sqlite(&dir, "many");
    lots.add_other_sessions(many);
    let lots_bob = lots.add_peer("bob@example.org", 1);
    let lots = Rc::new(RefCell::new(lots));
    let setup = clock.elapsed();

    let mut cases = vec![
        encrypt_case(&a, one, "encrypt_1_device", "encrypt to 1 device".into()),
        encrypt_case(
            &a,
            ten,
            "encrypt_10_devices",
            "encrypt to 10 devices".into(),
        ),
        encrypt_case(
            &a,
            hundred,
            "encrypt_100_devices",
            "encrypt to 100 devices".into(),
        ),
        encrypt_case(
            &m,
            m_hundred,
            "encrypt_100_devices_memory_store",
            "encrypt to 100 devices, MemoryStore".into(),
        ),
        decrypt_case(
            &a,
            chat1,
            PER_CHAIN,
            "decrypt",
            format!("decrypt, steady state ({PER_CHAIN} per chain)"),
        ),
        decrypt_case(
            &a,
            chat2,
            1,
            "decrypt_new_chain",
            "decrypt, first of a new chain (DH step)".into(),
        ),
        first_contact_case(&a),
        encrypt_case(
            &few,
            few_bob,
            "encrypt_1_device_10_other_sessions",
            "encrypt to 1 device, 10 other sessions".into(),
        ),
        encrypt_case(
            &lots,
            lots_bob,
            "encrypt_1_device_10000_other_sessions",
            format!("encrypt to 1 device, {many} other sessions"),
        ),
    ];

    let mut group = c.benchmark_group("manager");
    for case in &mut cases {
        group.bench_function(case.id, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| (case.once)().total).sum())
        });
    }
    group.finish();

    let loop_clock = Instant::now();
    let results: Vec<Distribution> = cases
        .iter_mut()
        .map(|case| distribution(case, runs))
        .collect();
    let loop_time = loop_clock.elapsed();
    let parts = sub_parts(&a_path, "hundred@example.org", quick);
    let first = first_contact_parts(&a.borrow().alice, quick);
    let load_after = load_average();

    println!();
    println!(
        "Session manager ({}) with SqliteStore on a file ({}), own loop of {runs} runs per op",
        bench_version(),
        dir.display()
    );
    println!(
        "setup {:.1} s, own loop {:.1} s, total {:.1} s; 1-minute load average before/after: {load_before} / {load_after} ({} cores)",
        setup.as_secs_f64(),
        loop_time.as_secs_f64(),
        clock.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "| operation | criterion mean | criterion median | median | p99 | max | commits | commit median | commit p99 | commit max | commits > 2 ms | rest median |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, d) in cases.iter().zip(&results) {
        let (mean, median) = criterion_estimates(case.id, started)
            .map(|(mean, median)| (human(mean), human(median)))
            .unwrap_or(("-".into(), "-".into()));
        println!(
            "| {} | {mean} | {median} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.label,
            human(percentile(&d.total, 50.0)),
            human(percentile(&d.total, 99.0)),
            human(*d.total.last().unwrap()),
            d.commits,
            human(percentile(&d.commit, 50.0)),
            human(percentile(&d.commit, 99.0)),
            human(*d.commit.last().unwrap()),
            d.commit.iter().filter(|&&c| c > SLOW_COMMIT).count(),
            human(percentile(&d.rest, 50.0)),
        );
    }

    // Targets.
    let fanout = &results[2];
    let over = fanout.total.iter().filter(|&&t| t > FANOUT_TARGET).count();
    let median = percentile(&fanout.total, 50.0);
    println!();
    println!(
        "Fan-out to 100 devices incl. its commit, target ≤ {}: median {} {}, p99 {} {}, max {} {}; {over} of {runs} runs over the target",
        human(FANOUT_TARGET),
        human(median),
        verdict(median <= FANOUT_TARGET),
        human(percentile(&fanout.total, 99.0)),
        verdict(percentile(&fanout.total, 99.0) <= FANOUT_TARGET),
        human(*fanout.total.last().unwrap()),
        verdict(*fanout.total.last().unwrap() <= FANOUT_TARGET),
    );
    let (small, big) = (&results[7], &results[8]);
    let ratio = |f: fn(&Distribution) -> &Vec<Duration>| {
        percentile(f(big), 50.0).as_secs_f64() / percentile(f(small), 50.0).as_secs_f64()
    };
    let commit_ratio = ratio(|d| &d.commit);
    println!(
        "Flat store cost, {many} vs 10 other sessions (medians), target ratio ≤ {FLAT_RATIO}: commit {commit_ratio:.2} {}, whole encrypt {:.2}, p99 of the commit {} vs {}",
        verdict(commit_ratio <= FLAT_RATIO),
        ratio(|d| &d.total),
        human(percentile(&big.commit, 99.0)),
        human(percentile(&small.commit, 99.0)),
    );

    println!();
    println!("Where the fan-out to 100 devices goes (medians):");
    println!();
    println!("| part | time |");
    println!("|---|---:|");
    println!(
        "| whole `Manager::encrypt`, SqliteStore | {} |",
        human(median)
    );
    println!(
        "| of which `Store::commit` (1 transaction, 100 upserts) | {} |",
        human(percentile(&fanout.commit, 50.0))
    );
    println!(
        "| of which the rest (ratchet, serialisation, stanza, bookkeeping) | {} |",
        human(percentile(&fanout.rest, 50.0))
    );
    println!(
        "| whole `Manager::encrypt`, MemoryStore | {} |",
        human(percentile(&results[3].total, 50.0))
    );
    println!(
        "| 100 × `Session::encrypt` (core) | {} |",
        human(parts.ratchet)
    );
    println!(
        "| 100 × `Session::to_bytes` (core) | {} |",
        human(parts.to_bytes)
    );
    println!(
        "| raw SQLite: BEGIN IMMEDIATE + 100 upserts (secure_delete on) | {} |",
        human(parts.statements)
    );
    println!(
        "| raw SQLite: the same, interleaved runs with secure_delete on / off | {} / {} |",
        human(parts.statements_secure_delete),
        human(parts.statements_no_secure_delete)
    );
    println!(
        "| raw SQLite: COMMIT (WAL append, synchronous=NORMAL, no checkpoint) | {} |",
        human(parts.commit)
    );
    for threshold in [1000, 100] {
        let mut times: Vec<Duration> = parts
            .checkpoints
            .iter()
            .filter(|c| c.0 == threshold)
            .map(|c| c.1)
            .collect();
        times.sort();
        let copied: Vec<i64> = parts
            .checkpoints
            .iter()
            .filter(|c| c.0 == threshold)
            .map(|c| c.2)
            .collect();
        let copied = copied.iter().sum::<i64>() / copied.len().max(1) as i64;
        println!(
            "| raw SQLite: WAL checkpoint (PASSIVE) of ~{copied} pages (median of {}, max {}) | {} |",
            times.len(),
            human(*times.last().unwrap()),
            human(times[times.len() / 2])
        );
    }
    println!(
        "| WAL pages per fan-out commit (so a checkpoint every ~{:.0} commits) | {:.1} |",
        1000.0 / parts.wal_pages_per_commit,
        parts.wal_pages_per_commit
    );
    println!();
    println!(
        "The 100-upsert transaction alone (raw SQLite, {} runs each) by wal_autocheckpoint:",
        parts.autocheckpoint[0].1.len()
    );
    println!();
    println!(
        "| wal_autocheckpoint | median | p99 | max | over {} (3 ms minus the rest of the fan-out) |",
        human(FANOUT_TARGET.saturating_sub(percentile(&fanout.rest, 50.0)))
    );
    println!("|---:|---:|---:|---:|---:|");
    for (threshold, times) in &parts.autocheckpoint {
        let budget = FANOUT_TARGET.saturating_sub(percentile(&fanout.rest, 50.0));
        println!(
            "| {threshold} | {} | {} | {} | {} |",
            human(percentile(times, 50.0)),
            human(percentile(times, 99.0)),
            human(*times.last().unwrap()),
            times.iter().filter(|&&t| t > budget).count()
        );
    }
    println!();
    let contact = &results[6];
    println!("Where a first contact goes (medians):");
    println!();
    println!("| part | time |");
    println!("|---|---:|");
    println!(
        "| whole `Manager::decrypt` of the PreKeySignalMessage | {} |",
        human(percentile(&contact.total, 50.0))
    );
    println!(
        "| of which `Store::commit` ({} transactions: session + refill + device, then the completion message) | {} |",
        contact.commits,
        human(percentile(&contact.commit, 50.0))
    );
    println!(
        "| `Session::respond` (X3DH + first decryption with its DH step, core) | {} |",
        human(first.respond)
    );
    println!(
        "| one fresh prekey (the refill) | {} |",
        human(first.pre_key)
    );
    println!(
        "| `own_bundle` + `bundle_element` (the republish, 100 prekeys) | {} |",
        human(first.bundle_xml)
    );
    println!();

    drop(cases);
    drop((a, m, few, lots));
    let _ = std::fs::remove_dir_all(&dir);
}

fn verdict(ok: bool) -> &'static str {
    if ok { "(met)" } else { "(MISSED)" }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .nresamples(20_000);
    targets = manager_benches
}
criterion_main!(benches);
