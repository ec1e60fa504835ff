//! The cross-implementation scenarios against python-omemo, one body for both versions:
//! `oldmemo_interop.rs` runs them against oldmemo (legacy OMEMO), `twomemo_interop.rs`
//! against twomemo (OMEMO 2).

use std::collections::HashMap;

use omemo::Version;
use omemo::hazmat::{
    IdentityKey, IdentityKeyPair, KeyMaterial, PreKey, PreKeyBundle, PublicKey, RatchetMessage,
    Session, SignedPreKey, decrypt_payload, encrypt_payload,
};
use rand_core::Rng;
use serde_json::{Value, json};

use super::python_peer::{Peer, hex, unhex};

pub const PY_JID: &str = "python@example.org";
pub const PY_DEVICE: u32 = 31_337;
pub const RUST_JID: &str = "rust@example.org";
pub const RUST_DEVICE: u32 = 4_242;

pub fn bundle_to_json(bundle: &PreKeyBundle) -> Value {
    let version = bundle.version;
    json!({
        "identity_key": hex(&bundle.identity_key.to_wire(version).unwrap()),
        "signed_pre_key_id": bundle.signed_pre_key_id,
        "signed_pre_key": hex(&bundle.signed_pre_key.to_wire(version)),
        "signed_pre_key_signature": hex(&bundle.signed_pre_key_signature),
        "pre_keys": bundle.pre_keys.iter().map(|(id, key)| json!({"id": id, "key": hex(&key.to_wire(version))})).collect::<Vec<_>>(),
    })
}

pub fn bundle_from_json(version: Version, value: &Value) -> PreKeyBundle {
    PreKeyBundle {
        version,
        identity_key: IdentityKey::from_wire(version, &unhex(&value["identity_key"])).unwrap(),
        signed_pre_key_id: value["signed_pre_key_id"].as_u64().unwrap() as u32,
        signed_pre_key: PublicKey::from_wire(version, &unhex(&value["signed_pre_key"])).unwrap(),
        signed_pre_key_signature: unhex(&value["signed_pre_key_signature"]),
        pre_keys: value["pre_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_u64().unwrap() as u32,
                    PublicKey::from_wire(version, &unhex(&k["key"])).unwrap(),
                )
            })
            .collect(),
    }
}

/// This crate's side: one device with its prekeys and its session with the peer.
pub struct RustDevice {
    pub version: Version,
    pub identity: IdentityKeyPair,
    pub signed: SignedPreKey,
    pub pre_keys: HashMap<u32, PreKey>,
    pub session: Option<Session>,
    /// The length of the key material the ratchet yielded for the last message.
    pub last_key_length: usize,
}

impl RustDevice {
    /// A device with a Curve25519 identity, as the manager creates it (for OMEMO 2 it
    /// publishes the sign-0 Ed25519 form).
    pub fn new(version: Version) -> Self {
        Self::with_identity(version, IdentityKeyPair::generate(&mut omemo::os_rng()))
    }

    pub fn with_identity(version: Version, identity: IdentityKeyPair) -> Self {
        let mut rng = omemo::os_rng();
        let signed = SignedPreKey::generate(version, &mut rng, &identity, 1);
        let pre_keys = (1..=100)
            .map(|id| (id, PreKey::generate(&mut rng, id)))
            .collect();
        Self {
            version,
            identity,
            signed,
            pre_keys,
            session: None,
            last_key_length: 0,
        }
    }

    pub fn bundle(&self) -> PreKeyBundle {
        let mut pre_keys: Vec<PreKey> = self.pre_keys.values().cloned().collect();
        pre_keys.sort_by_key(PreKey::id);
        PreKeyBundle::new(&self.identity, &self.signed, &pre_keys)
    }

    /// Encrypts `text` (or an empty message) for the peer, as one `<encrypted>` element.
    pub fn encrypt(&mut self, text: Option<&str>) -> Value {
        let mut rng = omemo::os_rng();
        let version = self.version;
        let (key, iv, payload) = match text {
            Some(text) => {
                let (key, payload) = encrypt_payload(version, &mut rng, text.as_bytes());
                (key, payload.iv, Some(payload.ciphertext))
            }
            None => {
                let mut iv = vec![0u8; if version == Version::Legacy { 12 } else { 0 }];
                rng.fill_bytes(&mut iv);
                (KeyMaterial::empty_message(version, &mut rng), iv, None)
            }
        };
        // OMEMO 2 has no <iv>.
        let iv = (!iv.is_empty()).then(|| hex(&iv));
        let message = self
            .session
            .as_mut()
            .expect("session")
            .encrypt(key.as_bytes())
            .unwrap();
        json!({
            "sid": RUST_DEVICE, "rid": PY_DEVICE, "prekey": message.is_key_exchange(),
            "key": hex(message.as_bytes()), "iv": iv, "payload": payload.map(|p| hex(&p)),
        })
    }

    /// Decrypts one `<encrypted>` element from the peer; `None` for an empty message.
    pub fn decrypt(&mut self, message: &Value) -> Option<String> {
        self.try_decrypt(message).unwrap()
    }

    /// Decrypts one `<encrypted>` element from the peer; an error leaves the device as it
    /// was.
    pub fn try_decrypt(&mut self, message: &Value) -> Result<Option<String>, omemo::Error> {
        let mut rng = omemo::os_rng();
        let version = self.version;
        let parsed = RatchetMessage::from_bytes(
            version,
            &unhex(&message["key"]),
            message["prekey"] == true,
        )?;
        let key_length = &mut self.last_key_length;
        let mut open = |key: zeroize::Zeroizing<Vec<u8>>, message: &Value| {
            *key_length = key.len();
            open(version, key.to_vec(), message)
        };
        let key = match (&parsed, self.session.as_mut()) {
            (RatchetMessage::KeyExchange(kex), Some(session))
                if session.matches_key_exchange(kex) =>
            {
                let mut trial = session.clone();
                let key = trial.decrypt_key_exchange(&mut rng, kex)?;
                let key = open(key, message)?;
                *session = trial;
                key
            }
            (RatchetMessage::KeyExchange(kex), _) => {
                let pre_key = &self.pre_keys[&kex.pre_key_id().expect("prekey id")];
                let (session, key) =
                    Session::respond(&mut rng, &self.identity, &self.signed, pre_key, kex)?;
                let key = open(key, message)?;
                self.pre_keys.remove(&kex.pre_key_id().unwrap());
                self.session = Some(session);
                key
            }
            (RatchetMessage::Authenticated(m), Some(session)) => {
                let mut trial = session.clone();
                let key = trial.decrypt(&mut rng, m)?;
                let key = open(key, message)?;
                *session = trial;
                key
            }
            (RatchetMessage::Authenticated(_), None) => panic!("ratchet message without a session"),
        };
        Ok(key)
    }
}

/// The plaintext of the payload of `message` under the key material the ratchet yielded;
/// `None` for an empty message.
fn open(version: Version, key: Vec<u8>, message: &Value) -> Result<Option<String>, omemo::Error> {
    let Some(payload) = message["payload"].as_str() else {
        return Ok(None);
    };
    let iv = if message["iv"].is_null() {
        Vec::new()
    } else {
        unhex(&message["iv"])
    };
    let body = decrypt_payload(
        version,
        &KeyMaterial::from_bytes(key),
        &iv,
        &unhex(&json!(payload)),
    )?;
    Ok(Some(String::from_utf8(body.to_vec()).unwrap()))
}

impl RustDevice {}

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

/// Delivers `message` sent in `direction` (0: from this crate to the peer) and returns its
/// plaintext.
fn receive(
    rust: &mut RustDevice,
    peer: &mut Peer,
    direction: usize,
    message: &Value,
) -> Option<String> {
    if direction == 0 {
        let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});
        peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": message}))["plaintext"]
            .as_str()
            .map(str::to_owned)
    } else {
        rust.decrypt(message)
    }
}

/// Messages flow both ways in batches, delivered shuffled, with some lost and some held
/// back past later ratchet steps. Every delivered plaintext must match.
pub fn converse(rust: &mut RustDevice, peer: &mut Peer, seed: u64) {
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
                let plaintext = receive(rust, peer, direction, &message);
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
            let plaintext = receive(rust, peer, direction, &message);
            assert_eq!(plaintext.as_deref(), Some(text.as_str()));
            delivered[direction] += 1;
        }
    }
    assert!(delivered[0] + delivered[1] >= 200, "{delivered:?}");
}

/// The peer publishes a bundle and this crate starts a session from it.
pub fn rust_initiates(version: Version) -> (Peer, RustDevice, PreKeyBundle) {
    let mut peer = Peer::start_version(version);
    let bundle = bundle_from_json(
        version,
        &peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}))["bundle"],
    );
    let mut rust = RustDevice::new(version);
    let mut rng = omemo::os_rng();
    rust.session = Some(Session::initiate(&mut rng, &rust.identity, &bundle).unwrap());
    (peer, rust, bundle)
}

/// The peer starts the session from this crate's bundle (built on `identity`).
pub fn peer_initiates_and_this_crate_responds(version: Version, identity: IdentityKeyPair) {
    let mut peer = Peer::start_version(version);
    peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}));
    let mut rust = RustDevice::with_identity(version, identity);
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});

    let first = peer.ok(json!({
        "op": "encrypt", "peer": python_peer, "plaintext": "first contact from python-omemo",
        "bundle": bundle_to_json(&rust.bundle()),
    }))["message"]
        .clone();
    assert_eq!(first["prekey"], true);
    assert_eq!(
        rust.decrypt(&first).as_deref(),
        Some("first contact from python-omemo")
    );
    assert_eq!(rust.pre_keys.len(), 99, "the used prekey is consumed");
    // The key exchange carries the payload's key material: key and tag.
    let key_material = match version {
        Version::Legacy => 32,
        Version::Omemo2 => 48,
    };
    assert_eq!(rust.last_key_length, key_material);

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

/// This crate starts the session from the peer's bundle.
pub fn this_crate_initiates_and_peer_responds(version: Version) {
    let (mut peer, mut rust, bundle) = rust_initiates(version);
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
    let after = bundle_from_json(version, &peer.ok(json!({"op": "bundle"}))["bundle"]);
    assert_eq!(after.pre_keys.len(), bundle.pre_keys.len() - 1);

    // Its empty reply confirms the session on this side.
    let empty =
        peer.ok(json!({"op": "encrypt", "peer": python_peer, "plaintext": null}))["message"]
            .clone();
    assert_eq!(rust.decrypt(&empty), None);
    assert_eq!(rust.encrypt(Some("confirmed"))["prekey"], false);

    converse(&mut rust, &mut peer, 0x5eed_0002);
}

/// A message this crate sent, tampered with on the way (in the ratchet message or in the
/// payload), is refused by the peer, which can still decrypt the original.
pub fn peer_rejects_what_this_crate_tampered(version: Version) {
    let (mut peer, mut rust, _) = rust_initiates(version);
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});
    let message = rust.encrypt(Some("tamper with me"));
    for (field, at) in [("key", usize::MAX), ("payload", 0)] {
        let mut bytes = unhex(&message[field]);
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 1;
        let mut tampered = message.clone();
        tampered[field] = json!(hex(&bytes));
        assert!(
            peer.call(json!({"op": "decrypt", "peer": python_peer, "message": tampered}))
                .is_err(),
            "{version}: {field} byte {at} tampered"
        );
    }
    assert_eq!(
        peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": message}))["plaintext"],
        json!("tamper with me")
    );
}

/// A message the peer sent, tampered with on the way (in the ratchet message or in the
/// payload), is refused by this crate without changing its state; the original still
/// decrypts. First the key exchange, then a message on the confirmed session.
pub fn this_crate_rejects_what_peer_tampered(version: Version) {
    let mut peer = Peer::start_version(version);
    peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}));
    let mut rust = RustDevice::new(version);
    let python_peer = json!({"jid": RUST_JID, "device_id": RUST_DEVICE});
    let check = |rust: &mut RustDevice, message: Value, text: &str| {
        for (field, at) in [
            ("key", 0),
            ("key", usize::MAX),
            ("payload", 0),
            ("payload", usize::MAX),
        ] {
            let mut bytes = unhex(&message[field]);
            let at = at.min(bytes.len() - 1);
            bytes[at] ^= 1;
            let mut tampered = message.clone();
            tampered[field] = json!(hex(&bytes));
            let pre_keys = rust.pre_keys.len();
            let session = rust.session.as_ref().map(Session::to_bytes);
            assert!(
                rust.try_decrypt(&tampered).is_err(),
                "{version}: {field} byte {at} tampered"
            );
            assert_eq!(rust.pre_keys.len(), pre_keys, "{version}: prekey kept");
            assert_eq!(rust.session.as_ref().map(Session::to_bytes), session);
        }
        assert_eq!(rust.decrypt(&message).as_deref(), Some(text));
    };
    let first = peer.ok(json!({
        "op": "encrypt", "peer": python_peer, "plaintext": "first contact",
        "bundle": bundle_to_json(&rust.bundle()),
    }))["message"]
        .clone();
    assert_eq!(first["prekey"], true);
    check(&mut rust, first, "first contact");
    let empty = rust.encrypt(None);
    peer.ok(json!({"op": "decrypt", "peer": python_peer, "message": empty}));
    let next =
        peer.ok(json!({"op": "encrypt", "peer": python_peer, "plaintext": "confirmed"}))["message"]
            .clone();
    assert_eq!(next["prekey"], false);
    check(&mut rust, next, "confirmed");
}
