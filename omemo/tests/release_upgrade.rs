//! A store written by release 0.1 (legacy only, no protocol versions in its schema) opens
//! with this release, migrates, and its conversations go on: the messages that were in
//! flight across the upgrade decrypt, the devices keep their ids and fingerprints, and the
//! old Curve25519-only identity also speaks OMEMO 2 (with python-omemo's `twomemo`).
//!
//! The fixture files in `tests/fixtures/release-0.1/` were written by release 0.1 (commit
//! d4f5c5b); how is in the README there. The test works on copies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::interop::peer_initiates_and_this_crate_responds;
use common::pep::{World, body};
use minidom::Element;
use omemo::hazmat::{IdentityKeyPair, SecretKey};
use omemo::{ManagerConfig, SqliteStore, Store, Version};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/release-0.1")
        .join(name)
}

fn stanza(name: &str) -> Element {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn devices() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("devices.json")).unwrap()).unwrap()
}

/// A copy of a fixture store in `dir`, so the checked-in file is never migrated. The copy
/// is checked to be of schema version 1, the one release 0.1 wrote.
fn copy_store(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(fixture(name), &to).unwrap();
    let schema: i64 = rusqlite::Connection::open(&to)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(schema, 1, "{name} must be as release 0.1 wrote it");
    to
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "omemo-release-upgrade-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn conversation_goes_on_from_a_release_0_1_store() {
    let dir = temp_dir();
    let facts = devices();
    let mut world = World::new();
    let open = |path: PathBuf| SqliteStore::open(path).unwrap();
    let mut alice = world.device_with(
        "alice@example.org",
        "phone",
        open(copy_store(&dir, "alice.sqlite")),
        ManagerConfig::default(),
    );
    let mut bob = world.device_with(
        "bob@example.org",
        "laptop",
        open(copy_store(&dir, "bob.sqlite")),
        ManagerConfig::default(),
    );
    for (name, device) in [("alice", &alice.manager), ("bob", &bob.manager)] {
        assert_eq!(
            u64::from(device.device_id()),
            facts[name]["device_id"].as_u64().unwrap(),
            "{name} keeps its device id"
        );
        assert_eq!(
            device.fingerprint().to_hex(),
            facts[name]["fingerprint"].as_str().unwrap(),
            "{name} keeps its fingerprint"
        );
    }

    // The messages in flight across the upgrade decrypt on the migrated sessions...
    assert_eq!(
        body(world.receive(&mut bob, &stanza("alice_to_bob.xml"))),
        "sent by alice before the upgrade"
    );
    assert_eq!(
        body(world.receive(&mut alice, &stanza("bob_to_alice.xml"))),
        "sent by bob before the upgrade"
    );
    // ... and a first contact on a migrated one-time prekey and signed prekey.
    let from_carol = world
        .receive(&mut bob, &stanza("carol_to_bob.xml"))
        .unwrap();
    assert_eq!(
        from_carol.body.as_deref(),
        Some("first contact from carol before the upgrade")
    );
    assert_eq!(
        u64::from(from_carol.device_id),
        facts["carol"]["device_id"].as_u64().unwrap()
    );

    // Both now speak OMEMO 2 as well (the manager made its keys on opening), and each
    // lists itself in both versions: the conversation goes on in OMEMO 2, over ratchet
    // steps, in both directions.
    world.notify(&mut alice);
    world.notify(&mut bob);
    for round in 0..3 {
        let text = format!("alice after the upgrade, round {round}");
        let sent = world.send(&mut alice, "bob@example.org", &text);
        let received = world.receive(&mut bob, &sent).unwrap();
        assert_eq!(received.body.as_deref(), Some(text.as_str()));
        assert_eq!(received.version, Version::Omemo2);
        let text = format!("bob after the upgrade, round {round}");
        let sent = world.send(&mut bob, "alice@example.org", &text);
        assert_eq!(body(world.receive(&mut alice, &sent)), text);
    }

    // What the migration made of the rows: the old keys are legacy, kept beside the
    // new OMEMO 2 ones; the legacy session stays beside the new OMEMO 2 one.
    let store = bob.manager.into_store().unwrap();
    let signed: Vec<Version> = store
        .load_signed_pre_keys()
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(signed, vec![Version::Legacy, Version::Omemo2]);
    let pre_keys = store.load_pre_keys().unwrap();
    for version in Version::ALL {
        assert_eq!(
            pre_keys.iter().filter(|k| k.version == version).count(),
            100,
            "{version}"
        );
    }
    // An upgraded store reads its archive from the upgrade on (what it read before is
    // not known; reading it all again would find old messages whose keys are gone).
    assert_eq!(
        store.load_archive_position("bob@example.org").unwrap(),
        Some(omemo::ArchivePosition {
            at: world.now,
            last_id: None
        })
    );
    let alice_id = facts["alice"]["device_id"].as_u64().unwrap() as u32;
    assert!(
        store
            .load_session("alice@example.org", alice_id, Version::Legacy)
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .load_session("alice@example.org", alice_id, Version::Omemo2)
            .unwrap()
            .is_some()
    );
    drop(store);
    drop(alice);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The identity release 0.1 created (a Curve25519 key, no Ed25519 seed) talks OMEMO 2 with
/// twomemo, and shows the same fingerprint in both versions.
#[test]
fn release_0_1_identity_speaks_omemo2_with_twomemo() {
    let dir = temp_dir();
    let store = SqliteStore::open(copy_store(&dir, "alice.sqlite")).unwrap();
    let account = store.load_account().unwrap().unwrap();
    let identity = IdentityKeyPair::from_secret(SecretKey::from_bytes(*account.identity_secret));
    let fingerprint = identity.identity_key().fingerprint().to_hex();
    assert_eq!(
        fingerprint,
        devices()["alice"]["fingerprint"].as_str().unwrap()
    );
    // The OMEMO 2 wire form converts back to the same identity and fingerprint.
    let wire = identity.identity_key().to_wire(Version::Omemo2).unwrap();
    let back = omemo::hazmat::IdentityKey::from_wire(Version::Omemo2, &wire).unwrap();
    assert_eq!(back.fingerprint().to_hex(), fingerprint);
    drop(store);
    peer_initiates_and_this_crate_responds(Version::Omemo2, identity);
    std::fs::remove_dir_all(&dir).unwrap();
}
