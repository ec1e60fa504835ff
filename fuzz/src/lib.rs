//! Fuzz targets of the omemo crate: one per decoder of both protocol versions (wire
//! messages, session state, stanzas, SCE envelopes) and a stateful one that drives three
//! managers through a hostile network (`manager`). Each target takes arbitrary bytes and
//! panics only on a defect: a panic inside the library, a failed operation that changed
//! state, a re-encoding that does not decode, or a conversation that does not resume once
//! the network is fair.
//!
//! `scripts/fuzz TARGET SECONDS` runs one under AFL++ (cargo-afl); `cargo test -p
//! omemo-fuzz` replays the corpora in `fuzz/corpus/TARGET/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use minidom::Element;
use omemo::hazmat::{
    AuthenticatedMessage, IdentityKey, IdentityKeyPair, KeyExchange, PreKey, PreKeyBundle,
    PublicKey, RatchetMessage, Session, SignedPreKey,
};
use omemo::stanza::{self, carbons, legacy, omemo2, sce};
use omemo::{BareJid, Manager, ManagerConfig, MemoryStore, Version};
use rand::SeedableRng;
use rand::rngs::StdRng;

// The in-process PEP router and the hostile network of the library's own tests.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../omemo/tests/common/chaos.rs"]
mod chaos;
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../omemo/tests/common/pep.rs"]
mod pep;
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../omemo/tests/common/rng.rs"]
mod rng;
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../omemo/tests/common/stores.rs"]
mod stores;

/// A fuzz target: takes any bytes, panics only on a defect.
pub type Target = fn(&[u8]);

/// Every target, by name (the name is also its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("wire", wire),
    ("session_state", session_state),
    ("stanza", stanza),
    ("sce", sce_envelope),
    ("manager", manager),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The names of the targets.
pub fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|(name, _)| *name).collect()
}

/// The same generator in every run.
fn seeded() -> StdRng {
    StdRng::seed_from_u64(0x0e0e_0384)
}

/// A conversation in one version, made from [`seeded`] randomness: Bob's keys and his
/// session after he answered Alice's first message, and what Alice sent then.
pub struct Conversation {
    bob: IdentityKeyPair,
    signed: SignedPreKey,
    pre_key: PreKey,
    /// Bob's session, before Alice's later messages arrive.
    bob_session: Session,
    /// Alice's session after those messages.
    pub alice_session: Session,
    /// Alice's first message (a key exchange), then three later ones.
    pub from_alice: Vec<RatchetMessage>,
}

/// The [`Conversation`] of `version` (built once per process).
pub fn conversation(version: Version) -> &'static Conversation {
    static CONVERSATIONS: OnceLock<[Conversation; 2]> = OnceLock::new();
    let [legacy, omemo2] = CONVERSATIONS.get_or_init(|| {
        [
            build_conversation(Version::Legacy),
            build_conversation(Version::Omemo2),
        ]
    });
    match version {
        Version::Legacy => legacy,
        Version::Omemo2 => omemo2,
    }
}

fn build_conversation(version: Version) -> Conversation {
    let mut rng = seeded();
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
    let pre_key = PreKey::generate(&mut rng, 7);
    let bundle = PreKeyBundle::new(&bob, &signed, std::slice::from_ref(&pre_key));
    let mut alice_session = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let first = alice_session.encrypt(b"hello").unwrap();
    let RatchetMessage::KeyExchange(kex) = &first else {
        panic!("a first message carries the key exchange")
    };
    let (mut bob_session, _) = Session::respond(&mut rng, &bob, &signed, &pre_key, kex).unwrap();
    let RatchetMessage::Authenticated(reply) = bob_session.encrypt(b"reply").unwrap() else {
        panic!("a reply is a plain message")
    };
    alice_session.decrypt(&mut rng, &reply).unwrap();
    let mut from_alice = vec![first];
    for text in [b"one".as_slice(), b"two", b"three"] {
        from_alice.push(alice_session.encrypt(text).unwrap());
    }
    Conversation {
        bob,
        signed,
        pre_key,
        bob_session,
        alice_session,
        from_alice,
    }
}

/// The version a selector byte names.
fn version_of(selector: u8) -> Version {
    if selector & 1 == 0 {
        Version::Legacy
    } else {
        Version::Omemo2
    }
}

/// `wire`: the first byte picks the version, the rest is a wire message of it, decoded as
/// every kind, then given to Bob's session of [`conversation`] (a failed decrypt must
/// leave it unchanged) and, as a key exchange, to X3DH. (The decoders keep the bytes
/// they were given, so there is no re-encoding to check.)
pub fn wire(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let version = version_of(selector);
    let _ = IdentityKey::from_wire(version, bytes);
    let _ = PublicKey::from_wire(version, bytes);
    let conversation = conversation(version);
    let mut rng = seeded();
    // A failed decryption leaves the session exactly as it was.
    let unchanged_on_failure = |decrypt: &dyn Fn(&mut Session) -> bool| {
        let mut session = conversation.bob_session.clone();
        if !decrypt(&mut session) {
            assert_eq!(
                session.to_bytes(),
                conversation.bob_session.to_bytes(),
                "a failed decryption changed the session"
            );
        }
    };
    if let Ok(message) = AuthenticatedMessage::from_bytes(version, bytes) {
        unchanged_on_failure(&|s| s.decrypt(&mut seeded(), &message).is_ok());
    }
    if let Ok(kex) = KeyExchange::from_bytes(version, bytes) {
        unchanged_on_failure(&|s| s.decrypt_key_exchange(&mut seeded(), &kex).is_ok());
        let _ = Session::respond(
            &mut rng,
            &conversation.bob,
            &conversation.signed,
            &conversation.pre_key,
            &kex,
        );
    }
}

/// `session_state`: stored session state; what decodes re-encodes to bytes that decode
/// to the same encoding, and can encrypt.
pub fn session_state(data: &[u8]) {
    let Ok(mut session) = Session::from_bytes(data) else {
        return;
    };
    let encoded = session.to_bytes();
    let again = Session::from_bytes(&encoded).expect("a re-encoded session decodes");
    assert_eq!(again.to_bytes(), encoded, "re-encoding is not stable");
    let _ = session.encrypt(b"fuzz");
}

/// The account the `stanza` target's manager runs, with its store (made once).
fn template() -> &'static MemoryStore {
    static STORE: OnceLock<MemoryStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let config = small_config();
        let jid = own_jid();
        Manager::open(
            MemoryStore::new(),
            &jid,
            config,
            &mut seeded(),
            1_700_000_000,
        )
        .unwrap()
        .into_store()
        .unwrap()
    })
}

fn small_config() -> ManagerConfig {
    ManagerConfig {
        pre_key_count: 2,
        ..ManagerConfig::default()
    }
}

fn own_jid() -> BareJid {
    BareJid::new("bob@example.org").unwrap()
}

/// `stanza`: UTF-8 XML given to every stanza parser of both versions, then to a manager's
/// `handle_stanza` as if it had arrived.
pub fn stanza(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(element) = text.parse::<Element>() else {
        return;
    };
    for encrypted in [&element]
        .into_iter()
        .chain(legacy::EncryptedMessage::find(&element))
    {
        if let Ok(message) = legacy::EncryptedMessage::from_element(encrypted) {
            for key in &message.keys {
                let _ = RatchetMessage::from_bytes(Version::Legacy, &key.data, key.key_exchange);
            }
        }
    }
    for encrypted in [&element]
        .into_iter()
        .chain(omemo2::EncryptedMessage::find(&element))
    {
        if let Ok(message) = omemo2::EncryptedMessage::from_element(encrypted) {
            for key in message.recipients.iter().flat_map(|r| &r.keys) {
                let _ = RatchetMessage::from_bytes(Version::Omemo2, &key.data, key.key_exchange);
            }
        }
    }
    let _ = legacy::parse_device_list(&element, 200);
    if let Ok(devices) = omemo2::parse_device_list(&element, 200) {
        let identity = conversation(Version::Omemo2).bob.identity_key();
        for device in devices {
            let _ = device.verified_label(&identity);
        }
    }
    if let Ok(bundle) = legacy::parse_bundle(&element) {
        let _ = bundle.verify();
    }
    if let Ok(bundle) = omemo2::parse_bundle(&element) {
        let _ = bundle.verify();
    }
    let _ = stanza::parse_event(&element);
    let _ = stanza::parse_items_result(&element);
    let _ = stanza::iq_error_condition(&element);
    let _ = carbons::unwrap(&element, &own_jid());
    let mut manager = Manager::open(
        template().clone(),
        &own_jid(),
        small_config(),
        &mut seeded(),
        1_700_000_000,
    )
    .unwrap();
    let _ = manager.handle_stanza(&element, &mut seeded(), 1_700_000_100);
    while let Ok(Some(_)) = manager.poll_transmit() {}
}

/// `sce`: an SCE envelope as decrypted from a payload.
pub fn sce_envelope(data: &[u8]) {
    if let Ok(envelope) = sce::open(data) {
        let _ = envelope.check("alice@example.org", "bob@example.org");
        let _ = envelope.body();
        let _ = envelope.opt_out();
    }
}

/// `manager`: the bytes are a script for [`chaos::Net`]: three managers of mixed
/// versions whose messages are delivered, duplicated, dropped, tampered with, while
/// devices restart from their stores. A failed decrypt must commit nothing, and once
/// the network is fair every device must read every other.
pub fn manager(data: &[u8]) {
    manager_transcript(data);
}

/// [`manager`], returning every stanza delivered (the same for the same input: the
/// generator is seeded, so a crash the fuzzer saved replays from its file).
pub fn manager_transcript(data: &[u8]) -> Vec<String> {
    rng::seed(0);
    let mut net = chaos::Net::new();
    for action in actions(data).iter().take(MAX_ACTIONS) {
        net.apply(action);
    }
    if let Err(failure) = net.check_fair_delivery() {
        panic!("{failure}");
    }
    net.transcript
}

/// Actions a `manager` input may hold (each costs cryptography).
const MAX_ACTIONS: usize = 60;

/// The script in `data`: per action a kind byte, then its arguments (one byte each).
fn actions(data: &[u8]) -> Vec<chaos::Action> {
    let mut bytes = data.iter().map(|&b| usize::from(b));
    let mut out = Vec::new();
    while let Some(kind) = bytes.next() {
        let mut arg = || bytes.next().unwrap_or(0);
        out.push(match kind % 11 {
            0..=2 => chaos::Action::Send {
                from: arg() % 3,
                to: arg() % 3,
            },
            3..=6 => chaos::Action::Deliver(arg()),
            7 => chaos::Action::Duplicate(arg()),
            8 => chaos::Action::Drop(arg()),
            9 => chaos::Action::Tamper {
                message: arg(),
                at: arg() * 256 + arg(),
            },
            _ => chaos::Action::Restart(arg() % 3),
        });
    }
    out
}

/// Inputs to start fuzzing from, per target: real messages, states, stanzas and
/// envelopes of both versions (written by `cargo test -p omemo-fuzz -- --ignored`).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    for version in Version::ALL {
        let selector = match version {
            Version::Legacy => 0u8,
            Version::Omemo2 => 1,
        };
        let conversation = conversation(version);
        for message in &conversation.from_alice {
            seeds.push(("wire", [&[selector], message.as_bytes()].concat()));
        }
        seeds.push((
            "session_state",
            conversation.bob_session.to_bytes().to_vec(),
        ));
        seeds.push((
            "session_state",
            conversation.alice_session.to_bytes().to_vec(),
        ));
    }
    let mut rng = seeded();
    let mut body = Element::builder("body", "jabber:client").build();
    body.append_text_node("hello");
    seeds.push((
        "sce",
        sce::seal(
            vec![body],
            "alice@example.org",
            "bob@example.org",
            Some(1),
            &mut rng,
        ),
    ));
    for versions in [
        omemo::Versions::only(Version::Legacy),
        omemo::Versions::only(Version::Omemo2),
    ] {
        let mut world = pep::World::speaking(versions);
        let mut alice = world.device("alice@example.org", "phone");
        let mut bob = world.device("bob@example.org", "laptop");
        let first = world.send(&mut alice, "bob@example.org", "first contact");
        seeds.push(("stanza", String::from(&first).into_bytes()));
        let read = world.receive(&mut bob, &first).unwrap();
        assert_eq!(read.body.as_deref(), Some("first contact"));
        let reply = world.send(&mut bob, "alice@example.org", "reply");
        seeds.push(("stanza", String::from(&reply).into_bytes()));
        let version = world.version();
        let event = pep::device_list_event(
            version,
            "alice@example.org",
            &[&[1, 2, alice.manager.device_id()]],
        );
        seeds.push(("stanza", String::from(&event).into_bytes()));
        let (node, item) = pep::bundle_item(version, bob.manager.device_id());
        let iq: Element = format!(
            "<iq xmlns='jabber:client' type='get' id='b1' to='bob@example.org'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'>\
             <item id='{item}'/></items></pubsub></iq>"
        )
        .parse()
        .unwrap();
        let answer = world.pep.answer("alice@example.org", &iq);
        seeds.push(("stanza", String::from(&answer).into_bytes()));
    }
    // A few scripts: conversations, then loss, duplicates, tampering and restarts.
    seeds.push(("manager", vec![0, 0, 1, 3, 0, 1, 1, 0, 3, 0]));
    seeds.push((
        "manager",
        vec![0, 0, 1, 0, 1, 2, 0, 2, 0, 7, 0, 3, 0, 3, 0, 3, 0],
    ));
    seeds.push((
        "manager",
        vec![0, 1, 2, 8, 0, 0, 1, 2, 9, 0, 0, 3, 10, 2, 3, 0],
    ));
    seeds.push((
        "manager",
        vec![1, 2, 0, 1, 0, 2, 10, 0, 3, 0, 3, 1, 9, 1, 1, 200, 3, 0],
    ));
    seeds
}
