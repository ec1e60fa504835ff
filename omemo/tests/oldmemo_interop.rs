//! Cross-implementation tests against python-omemo's legacy backend (`oldmemo`,
//! `doubleratchet`, `x3dh` from PyPI), driven through `tests/interop/oldmemo_peer.py`
//! (protocol in `tests/interop/PROTOCOL.md`). The venv comes from
//! `scripts/setup-test-env`, which `scripts/test` runs first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::oldmemo::{Peer, hex, unhex};

use omemo::{
    IdentityKey, IdentityKeyPair, KeyMaterial, PreKey, PreKeyBundle, PublicKey, RatchetMessage,
    Session, SignedPreKey,
};
use rand_core::Rng;
use serde_json::{Value, json};

const PY_JID: &str = "python@example.org";
const PY_DEVICE: u32 = 31_337;
const RUST_JID: &str = "rust@example.org";
const RUST_DEVICE: u32 = 4_242;

fn bundle_to_json(bundle: &PreKeyBundle) -> Value {
    json!({
        "identity_key": hex(&bundle.identity_key.to_wire()),
        "signed_pre_key_id": bundle.signed_pre_key_id,
        "signed_pre_key": hex(&bundle.signed_pre_key.to_wire()),
        "signed_pre_key_signature": hex(&bundle.signed_pre_key_signature),
        "pre_keys": bundle.pre_keys.iter().map(|(id, key)| json!({"id": id, "key": hex(&key.to_wire())})).collect::<Vec<_>>(),
    })
}

fn bundle_from_json(value: &Value) -> PreKeyBundle {
    PreKeyBundle {
        identity_key: IdentityKey::from_wire(&unhex(&value["identity_key"])).unwrap(),
        signed_pre_key_id: value["signed_pre_key_id"].as_u64().unwrap() as u32,
        signed_pre_key: PublicKey::from_wire(&unhex(&value["signed_pre_key"])).unwrap(),
        signed_pre_key_signature: unhex(&value["signed_pre_key_signature"]),
        pre_keys: value["pre_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_u64().unwrap() as u32,
                    PublicKey::from_wire(&unhex(&k["key"])).unwrap(),
                )
            })
            .collect(),
    }
}

/// This crate's side: one device with its prekeys and its session with the peer.
struct RustDevice {
    identity: IdentityKeyPair,
    signed: SignedPreKey,
    pre_keys: HashMap<u32, PreKey>,
    session: Option<Session>,
}

impl RustDevice {
    fn new() -> Self {
        let mut rng = omemo::os_rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(&mut rng, &identity, 1);
        let pre_keys = (1..=100)
            .map(|id| (id, PreKey::generate(&mut rng, id)))
            .collect();
        Self {
            identity,
            signed,
            pre_keys,
            session: None,
        }
    }

    fn bundle(&self) -> PreKeyBundle {
        let mut pre_keys: Vec<PreKey> = self.pre_keys.values().cloned().collect();
        pre_keys.sort_by_key(PreKey::id);
        PreKeyBundle::new(&self.identity, &self.signed, &pre_keys)
    }

    /// Encrypts `text` (or an empty message) for the peer, as one `<encrypted>` element.
    fn encrypt(&mut self, text: Option<&str>) -> Value {
        let mut rng = omemo::os_rng();
        let (key, iv, payload) = match text {
            Some(text) => {
                let (key, payload) = omemo::encrypt_payload(&mut rng, text.as_bytes());
                (key, payload.iv, Some(payload.ciphertext))
            }
            None => {
                let mut iv = [0u8; 12];
                rng.fill_bytes(&mut iv);
                (KeyMaterial::empty_message(&mut rng), iv.to_vec(), None)
            }
        };
        let message = self
            .session
            .as_mut()
            .expect("session")
            .encrypt(key.as_bytes())
            .unwrap();
        json!({
            "sid": RUST_DEVICE, "rid": PY_DEVICE, "prekey": message.is_pre_key(),
            "key": hex(message.as_bytes()), "iv": hex(&iv), "payload": payload.map(|p| hex(&p)),
        })
    }

    /// Decrypts one `<encrypted>` element from the peer; `None` for an empty message.
    fn decrypt(&mut self, message: &Value) -> Option<String> {
        let mut rng = omemo::os_rng();
        let parsed =
            RatchetMessage::from_bytes(&unhex(&message["key"]), message["prekey"] == true).unwrap();
        let key = match (&parsed, self.session.as_mut()) {
            (RatchetMessage::PreKey(kex), Some(session)) if session.matches_key_exchange(kex) => {
                session.decrypt_pre_key(&mut rng, kex).unwrap()
            }
            (RatchetMessage::PreKey(kex), _) => {
                let pre_key = &self.pre_keys[&kex.pre_key_id().expect("prekey id")];
                let (session, key) =
                    Session::respond(&mut rng, &self.identity, &self.signed, pre_key, kex).unwrap();
                self.pre_keys.remove(&kex.pre_key_id().unwrap());
                self.session = Some(session);
                key
            }
            (RatchetMessage::Signal(m), Some(session)) => session.decrypt(&mut rng, m).unwrap(),
            (RatchetMessage::Signal(_), None) => panic!("ratchet message without a session"),
        };
        let payload = message["payload"].as_str()?;
        let body = omemo::decrypt_payload(
            &KeyMaterial::from_bytes(key.to_vec()),
            &unhex(&message["iv"]),
            &unhex(&json!(payload)),
        )
        .unwrap();
        Some(String::from_utf8(body.to_vec()).unwrap())
    }
}

/// A small deterministic generator for the delivery schedule (not for keys).
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// Messages flow both ways in batches, delivered shuffled, with some lost and some held
/// back past later ratchet steps. Every delivered plaintext must match.
fn converse(rust: &mut RustDevice, peer: &mut Peer, seed: u64) {
    let mut schedule = Schedule(seed);
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});
    let mut delivered = [0usize; 2];
    let mut held: [Vec<(String, Value)>; 2] = [Vec::new(), Vec::new()];
    let mut round = 0;
    while delivered[0] < 110 || delivered[1] < 110 {
        round += 1;
        for direction in [0usize, 1] {
            let count = 1 + schedule.next(8);
            let mut batch: Vec<(String, Value)> = (0..count)
                .map(|i| {
                    let text = format!("round {round} direction {direction} message {i} ✓");
                    let message = if direction == 0 {
                        rust.encrypt(Some(&text))
                    } else {
                        peer.ok(
                                json!({"op": "encrypt", "peer": python_peer, "plaintext": text}),
                            )["message"]
                                .clone()
                    };
                    (text, message)
                })
                .collect();
            // Shuffle, lose about 5%, hold back about 10% for a later round.
            for i in (1..batch.len()).rev() {
                batch.swap(i, schedule.next(i + 1));
            }
            let mut deliver = Vec::new();
            for item in batch {
                match schedule.next(20) {
                    0 => {}
                    1 | 2 => held[direction].push(item),
                    _ => deliver.push(item),
                }
            }
            if schedule.next(3) == 0 {
                deliver.append(&mut held[direction]);
            }
            for (text, message) in deliver {
                let plaintext = if direction == 0 {
                    peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": message}))["plaintext"]
                        .as_str()
                        .map(str::to_owned)
                } else {
                    rust.decrypt(&message)
                };
                assert_eq!(
                    plaintext.as_deref(),
                    Some(text.as_str()),
                    "direction {direction}"
                );
                delivered[direction] += 1;
            }
        }
    }
    // Late messages from old chains still decrypt.
    for direction in [0usize, 1] {
        for (text, message) in std::mem::take(&mut held[direction]) {
            let plaintext = if direction == 0 {
                peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": message}))["plaintext"]
                    .as_str()
                    .map(str::to_owned)
            } else {
                rust.decrypt(&message)
            };
            assert_eq!(plaintext.as_deref(), Some(text.as_str()));
            delivered[direction] += 1;
        }
    }
    assert!(delivered[0] + delivered[1] >= 200, "{delivered:?}");
}

/// The peer publishes a bundle and this crate starts a session from it.
fn rust_initiates() -> (Peer, RustDevice, PreKeyBundle) {
    let mut peer = Peer::start();
    let bundle = bundle_from_json(
        &peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}))["bundle"],
    );
    let mut rust = RustDevice::new();
    let mut rng = omemo::os_rng();
    rust.session = Some(Session::initiate(&mut rng, &rust.identity, &bundle).unwrap());
    (peer, rust, bundle)
}

#[test]
fn oldmemo_initiates_and_this_crate_responds() {
    let mut peer = Peer::start();
    peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}));
    let mut rust = RustDevice::new();
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});

    let first = peer.ok(json!({
        "op": "encrypt", "peer": python_peer, "plaintext": "first contact from oldmemo",
        "bundle": bundle_to_json(&rust.bundle()),
    }))["message"]
        .clone();
    assert_eq!(first["prekey"], true);
    assert_eq!(
        rust.decrypt(&first).as_deref(),
        Some("first contact from oldmemo")
    );
    assert_eq!(rust.pre_keys.len(), 99, "the used prekey is consumed");

    // An empty message completes the session; oldmemo then stops sending key exchanges.
    let empty = rust.encrypt(None);
    assert_eq!(empty["prekey"], false);
    assert_eq!(
        peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": empty}))["plaintext"],
        Value::Null
    );
    let next = peer.ok(json!({"op": "encrypt", "peer": python_peer, "plaintext": "now confirmed"}))
        ["message"]
        .clone();
    assert_eq!(next["prekey"], false);
    assert_eq!(rust.decrypt(&next).as_deref(), Some("now confirmed"));

    converse(&mut rust, &mut peer, 0x5eed_0001);
}

#[test]
fn this_crate_initiates_and_oldmemo_responds() {
    let (mut peer, mut rust, bundle) = rust_initiates();
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});

    // Two messages before any answer: both carry the key exchange, and the second one
    // arrives first.
    let first = rust.encrypt(Some("first contact from Rust"));
    let second = rust.encrypt(Some("second, delivered first"));
    assert_eq!(
        (first["prekey"].clone(), second["prekey"].clone()),
        (json!(true), json!(true))
    );
    let decrypt = |peer: &mut Peer, m: &Value| {
        peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": m}))["plaintext"].clone()
    };
    assert_eq!(
        decrypt(&mut peer, &second),
        json!("second, delivered first")
    );
    assert_eq!(decrypt(&mut peer, &first), json!("first contact from Rust"));
    // The peer consumed the prekey Rust used.
    let after = bundle_from_json(&peer.ok(json!({"op": "bundle"}))["bundle"]);
    assert_eq!(after.pre_keys.len(), bundle.pre_keys.len() - 1);

    // Its empty reply confirms the session on this side.
    let empty =
        peer.ok(json!({"op": "encrypt", "peer": python_peer, "plaintext": null}))["message"]
            .clone();
    assert_eq!(rust.decrypt(&empty), None);
    assert_eq!(rust.encrypt(Some("confirmed"))["prekey"], false);

    converse(&mut rust, &mut peer, 0x5eed_0002);
}

#[test]
fn oldmemo_rejects_what_this_crate_tampered() {
    let (mut peer, mut rust, _) = rust_initiates();
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});
    let message = rust.encrypt(Some("tamper with me"));
    let mut key = unhex(&message["key"]);
    let last = key.len() - 1;
    key[last] ^= 1;
    let mut tampered = message.clone();
    tampered["key"] = json!(hex(&key));
    assert!(
        peer.call(json!({"op": "decrypt", "peer": python_peer, "message": tampered}))
            .is_err()
    );
    assert_eq!(
        peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": message}))["plaintext"],
        json!("tamper with me")
    );
}
