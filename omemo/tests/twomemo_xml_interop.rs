//! Cross-implementation tests at the XML level for OMEMO 2: python-omemo's `twomemo`
//! (through `twomemo.etree`) parses the bundles, device lists and `<encrypted>` elements
//! of `omemo::stanza::omemo2`, and this crate parses twomemo's. The sessions are the
//! low-level ones (`omemo::hazmat`); the dual-version manager comes next.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::interop::{PY_DEVICE, PY_JID, RUST_DEVICE, RUST_JID, RustDevice};
use common::python_peer::{Peer, hex};
use minidom::Element;
use omemo::Version;
use omemo::hazmat::{
    IdentityKeyPair, KeyMaterial, RatchetMessage, Session, decrypt_payload, encrypt_payload,
};
use omemo::stanza::omemo2::{self, EncryptedKey, EncryptedMessage, ListedDevice, RecipientKeys};
use serde_json::{Value, json};

const VERSION: Version = Version::Omemo2;

fn rust_peer() -> Value {
    json!({"jid": RUST_JID, "device_id": RUST_DEVICE})
}

fn xml(value: &Value) -> Element {
    value
        .as_str()
        .expect("an XML string")
        .parse()
        .expect("well-formed XML")
}

fn start() -> Peer {
    let mut peer = Peer::start_version(VERSION);
    peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}));
    peer
}

/// `text` (or an empty message) from this crate's session, as an `<encrypted>` element.
fn encrypt(rust: &mut RustDevice, text: Option<&str>) -> Element {
    let mut rng = omemo::os_rng();
    let (key, payload) = match text {
        Some(text) => {
            let (key, payload) = encrypt_payload(VERSION, &mut rng, text.as_bytes());
            (key, Some(payload.ciphertext))
        }
        None => (KeyMaterial::empty_message(VERSION, &mut rng), None),
    };
    let message = rust
        .session
        .as_mut()
        .unwrap()
        .encrypt(key.as_bytes())
        .unwrap();
    EncryptedMessage {
        sender_device: RUST_DEVICE,
        recipients: vec![RecipientKeys {
            jid: PY_JID.into(),
            keys: vec![EncryptedKey {
                recipient_device: PY_DEVICE,
                key_exchange: message.is_key_exchange(),
                data: message.as_bytes().to_vec(),
            }],
        }],
        payload,
    }
    .to_element()
}

/// Decrypts twomemo's `<encrypted>` on this crate's side (building the session from a key
/// exchange); `None` for an empty message.
fn decrypt(rust: &mut RustDevice, encrypted: &Element) -> Option<String> {
    let mut rng = omemo::os_rng();
    let message = EncryptedMessage::from_element(encrypted).unwrap();
    assert_eq!(message.sender_device, PY_DEVICE);
    let keys: Vec<_> = message.keys_for(RUST_JID, RUST_DEVICE).collect();
    assert_eq!(keys.len(), 1, "one key for this device");
    let key = keys[0];
    let material = match RatchetMessage::from_bytes(VERSION, &key.data, key.key_exchange).unwrap() {
        RatchetMessage::KeyExchange(kex) if rust.session.is_none() => {
            let pre_key = rust.pre_keys.remove(&kex.pre_key_id().unwrap()).unwrap();
            let (session, material) =
                Session::respond(&mut rng, &rust.identity, &rust.signed, &pre_key, &kex).unwrap();
            rust.session = Some(session);
            material
        }
        RatchetMessage::KeyExchange(kex) => rust
            .session
            .as_mut()
            .unwrap()
            .decrypt_key_exchange(&mut rng, &kex)
            .unwrap(),
        RatchetMessage::Authenticated(m) => rust
            .session
            .as_mut()
            .unwrap()
            .decrypt(&mut rng, &m)
            .unwrap(),
    };
    let payload = message.payload?;
    let body = decrypt_payload(
        VERSION,
        &KeyMaterial::from_bytes(material.to_vec()),
        &[],
        &payload,
    )
    .unwrap();
    Some(String::from_utf8(body.to_vec()).unwrap())
}

fn peer_decrypts(peer: &mut Peer, encrypted: &Element) -> Result<Value, String> {
    peer.call(json!({"op": "decrypt_xml", "peer": rust_peer(), "xml": String::from(encrypted)}))
        .map(|r| r["plaintext"].clone())
}

fn peer_encrypts(peer: &mut Peer, text: Option<&str>, bundle: Option<Element>) -> Element {
    xml(&peer.ok(json!({
        "op": "encrypt_xml", "peer": rust_peer(), "plaintext": text,
        "bundle_xml": bundle.as_ref().map(String::from),
    }))["xml"])
}

#[test]
fn this_crate_builds_a_session_from_twomemo_bundle_xml() {
    let mut peer = start();
    let bundle = omemo2::parse_bundle(&xml(&peer.ok(json!({"op": "bundle_xml"}))["xml"])).unwrap();
    assert_eq!(bundle.verify(), Ok(()));
    assert!(
        bundle.pre_keys.len() >= 25,
        "twomemo publishes about 100 prekeys"
    );
    let mut rust = RustDevice::new(VERSION);
    rust.session = Some(Session::initiate(&mut omemo::os_rng(), &rust.identity, &bundle).unwrap());

    let first = encrypt(&mut rust, Some("first contact over XML"));
    assert_eq!(
        peer_decrypts(&mut peer, &first),
        Ok(json!("first contact over XML"))
    );
    let reply = peer_encrypts(&mut peer, Some("reply from twomemo ✓"), None);
    assert_eq!(
        decrypt(&mut rust, &reply).as_deref(),
        Some("reply from twomemo ✓")
    );
    let empty = peer_encrypts(&mut peer, None, None);
    assert!(
        EncryptedMessage::from_element(&empty)
            .unwrap()
            .payload
            .is_none()
    );
    assert_eq!(decrypt(&mut rust, &empty), None);
    for i in 0..5 {
        let text = format!("message {i} over XML");
        assert_eq!(
            peer_decrypts(&mut peer, &encrypt(&mut rust, Some(&text))),
            Ok(json!(text))
        );
    }
}

#[test]
fn twomemo_builds_a_session_from_this_crates_bundle_xml() {
    for identity in [
        IdentityKeyPair::generate(&mut omemo::os_rng()),
        // A seed identity whose Ed25519 key has sign bit 1.
        (0u8..)
            .map(|i| IdentityKeyPair::from_ed25519_seed([i; 32]))
            .find(|id| id.identity_key().ed25519().unwrap()[31] >> 7 == 1)
            .unwrap(),
    ] {
        let mut peer = start();
        let mut rust = RustDevice::with_identity(VERSION, identity);
        let bundle = omemo2::bundle_element(&rust.bundle()).unwrap();
        let first = peer_encrypts(&mut peer, Some("first contact from twomemo"), Some(bundle));
        let parsed = EncryptedMessage::from_element(&first).unwrap();
        assert!(
            parsed
                .keys_for(RUST_JID, RUST_DEVICE)
                .all(|k| k.key_exchange)
        );
        assert_eq!(
            decrypt(&mut rust, &first).as_deref(),
            Some("first contact from twomemo")
        );
        assert_eq!(rust.pre_keys.len(), 99);
        // The empty answer completes the session; twomemo stops sending key exchanges.
        assert_eq!(
            peer_decrypts(&mut peer, &encrypt(&mut rust, None)),
            Ok(Value::Null)
        );
        let next = peer_encrypts(&mut peer, Some("confirmed"), None);
        let parsed = EncryptedMessage::from_element(&next).unwrap();
        assert!(
            parsed
                .keys_for(RUST_JID, RUST_DEVICE)
                .all(|k| !k.key_exchange)
        );
        assert_eq!(decrypt(&mut rust, &next).as_deref(), Some("confirmed"));
    }
}

#[test]
fn tampered_encrypted_elements_are_refused_by_twomemo() {
    let mut peer = start();
    let bundle = omemo2::parse_bundle(&xml(&peer.ok(json!({"op": "bundle_xml"}))["xml"])).unwrap();
    let mut rust = RustDevice::new(VERSION);
    rust.session = Some(Session::initiate(&mut omemo::os_rng(), &rust.identity, &bundle).unwrap());
    let good = encrypt(&mut rust, Some("tamper with me"));
    let mut message = EncryptedMessage::from_element(&good).unwrap();
    let payload = message.payload.as_mut().unwrap();
    payload[0] ^= 1;
    assert!(peer_decrypts(&mut peer, &message.to_element()).is_err());
    let mut message = EncryptedMessage::from_element(&good).unwrap();
    message.sender_device += 1;
    assert!(
        peer_decrypts(&mut peer, &message.to_element()).is_err(),
        "sid must be the sender"
    );
    assert_eq!(peer_decrypts(&mut peer, &good), Ok(json!("tamper with me")));
}

#[test]
fn device_labels_signed_by_either_side_verify_on_the_other() {
    let mut peer = start();
    let bundle = omemo2::parse_bundle(&xml(&peer.ok(json!({"op": "bundle_xml"}))["xml"])).unwrap();
    let list = xml(&peer.ok(json!({"op": "own_device_list_xml", "label": "Phone ✓"}))["xml"]);
    let devices = omemo2::parse_device_list(&list, 10).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, PY_DEVICE);
    assert_eq!(
        devices[0].verified_label(&bundle.identity_key),
        Some("Phone ✓")
    );
    let stranger = IdentityKeyPair::generate(&mut omemo::os_rng()).identity_key();
    assert_eq!(devices[0].verified_label(&stranger), None);

    let mut rng = omemo::os_rng();
    for identity in [
        IdentityKeyPair::generate(&mut rng),
        IdentityKeyPair::from_ed25519_seed([9; 32]),
    ] {
        let label = "Laptop";
        let signed = ListedDevice {
            id: RUST_DEVICE,
            label: Some(label.into()),
            label_signature: Some(identity.sign(VERSION, &mut rng, label.as_bytes()).to_vec()),
        };
        let mut forged = signed.clone();
        forged.id = RUST_DEVICE + 1;
        forged.label = Some("Laptop!".into());
        let list = omemo2::device_list_element(&[signed, forged, ListedDevice::new(7)]);
        let ed25519 = identity.identity_key().ed25519().unwrap();
        let checked = peer.ok(json!({
            "op": "device_list_xml", "xml": String::from(&list), "identity_key": hex(&ed25519),
        }))["devices"]
            .clone();
        assert_eq!(
            checked,
            json!([
                {"id": RUST_DEVICE, "label": "Laptop", "label_valid": true},
                {"id": RUST_DEVICE + 1, "label": "Laptop!", "label_valid": false},
                {"id": 7, "label": null, "label_valid": null},
            ])
        );
    }
}
