//! Cross-implementation tests at the XML level: python-omemo's `oldmemo` parses the
//! bundles, device lists and `<encrypted>` elements the session manager publishes and
//! sends, and the manager parses oldmemo's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pep::{DEVICE_LIST_NODE, World, body, with_from};
use common::python_peer::Peer;
use minidom::Element;
use omemo::stanza::{self, legacy::EncryptedMessage};
use serde_json::{Value, json};

const PY_JID: &str = "python@example.org";
const PY_DEVICE: u32 = 31_337;
const RUST_JID: &str = "rust@example.org";

/// Starts the python peer and publishes its device list and bundle (as oldmemo writes
/// them) on the in-process PEP service.
fn python(world: &mut World) -> Peer {
    let mut peer = Peer::start();
    peer.ok(json!({"op": "init", "jid": PY_JID, "device_id": PY_DEVICE}));
    let bundle: Element = peer.ok(json!({"op": "bundle_xml"}))["xml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let list = stanza::legacy::device_list_element(&[PY_DEVICE]);
    world.pep.nodes.insert(
        (PY_JID.into(), stanza::legacy::bundle_node(PY_DEVICE)),
        vec![("1".into(), bundle)],
    );
    world.pep.nodes.insert(
        (PY_JID.into(), DEVICE_LIST_NODE.into()),
        vec![("current".into(), list)],
    );
    peer
}

/// Wraps oldmemo's `<encrypted>` in a message from the python device.
fn from_python(encrypted_xml: &Value) -> Element {
    let encrypted: Element = encrypted_xml.as_str().unwrap().parse().unwrap();
    Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), format!("{PY_JID}/py"))
        .attr("type".try_into().unwrap(), "chat")
        .append(
            Element::builder("body", "jabber:client")
                .append("This message is OMEMO encrypted.")
                .build(),
        )
        .append(encrypted)
        .build()
}

/// The `<encrypted>` element of a message the manager built, as text for oldmemo.
fn encrypted_xml(message: &Element) -> String {
    String::from(EncryptedMessage::find(message).expect("an <encrypted> child"))
}

fn py_decrypt(peer: &mut Peer, rust_device: u32, message: &Element) -> Value {
    peer.ok(json!({
        "op": "decrypt_xml",
        "peer": {"jid": RUST_JID, "device_id": rust_device},
        "xml": encrypted_xml(message),
    }))["plaintext"]
        .clone()
}

fn py_encrypt(
    peer: &mut Peer,
    rust_device: u32,
    text: &str,
    bundle_xml: Option<String>,
) -> Element {
    from_python(
        &peer.ok(json!({
            "op": "encrypt_xml",
            "peer": {"jid": RUST_JID, "device_id": rust_device},
            "plaintext": text,
            "bundle_xml": bundle_xml,
        }))["xml"],
    )
}

#[test]
fn oldmemo_builds_a_session_from_the_published_bundle_xml() {
    let mut world = World::new();
    let mut rust = world.device(RUST_JID, "bot");
    let rust_device = rust.manager.device_id();
    let mut peer = python(&mut world);
    // The bundle exactly as this crate published it on PEP.
    let bundle = &world.pep.nodes[&(
        RUST_JID.to_owned(),
        stanza::legacy::bundle_node(rust_device),
    )][0]
        .1;
    let first = py_encrypt(
        &mut peer,
        rust_device,
        "first contact via XML",
        Some(String::from(bundle)),
    );
    let received = world.receive(&mut rust, &first).unwrap();
    assert_eq!(received.body.as_deref(), Some("first contact via XML"));
    assert_eq!(
        (received.sender.as_str(), received.device_id),
        (PY_JID, PY_DEVICE)
    );
    // The manager's session completion (an empty message) parses and decrypts in oldmemo.
    let completion = rust.next_message().expect("session completion");
    assert_eq!(py_decrypt(&mut peer, rust_device, &completion), Value::Null);
    // Conversation both ways through the XML of both sides.
    for i in 0..20 {
        let reply = world.send(&mut rust, PY_JID, &format!("rust says {i}"));
        assert_eq!(
            py_decrypt(&mut peer, rust_device, &reply),
            json!(format!("rust says {i}"))
        );
        let message = py_encrypt(&mut peer, rust_device, &format!("python says {i}"), None);
        assert_eq!(
            body(world.receive(&mut rust, &message)),
            format!("python says {i}")
        );
    }
    // The device list this crate published parses in oldmemo too.
    let list = &world.pep.nodes[&(RUST_JID.to_owned(), DEVICE_LIST_NODE.to_owned())][0].1;
    let devices =
        peer.ok(json!({"op": "device_list_xml", "xml": String::from(list)}))["devices"].clone();
    assert_eq!(devices, json!([rust_device]));
}

#[test]
fn the_manager_builds_a_session_from_oldmemo_bundle_xml() {
    let mut world = World::new();
    let mut rust = world.device(RUST_JID, "bot");
    let rust_device = rust.manager.device_id();
    let mut peer = python(&mut world);
    // Two messages before any answer: both carry the key exchange; oldmemo reads them
    // in the wrong order.
    let first = world.send(&mut rust, PY_JID, "hello oldmemo");
    let second = world.send(&mut rust, PY_JID, "second");
    assert!(
        String::from(&first).contains("prekey=\"true\"")
            || String::from(&first).contains("prekey='true'")
    );
    assert_eq!(py_decrypt(&mut peer, rust_device, &second), json!("second"));
    assert_eq!(
        py_decrypt(&mut peer, rust_device, &first),
        json!("hello oldmemo")
    );
    // oldmemo's answer confirms the session; later messages carry no key exchange.
    let answer = py_encrypt(&mut peer, rust_device, "hello rust", None);
    assert_eq!(body(world.receive(&mut rust, &answer)), "hello rust");
    let third = world.send(&mut rust, PY_JID, "third");
    let parsed = EncryptedMessage::from_element(EncryptedMessage::find(&third).unwrap()).unwrap();
    assert!(parsed.keys.iter().all(|k| !k.key_exchange));
    assert_eq!(py_decrypt(&mut peer, rust_device, &third), json!("third"));
}

#[test]
fn tampered_stanzas_are_refused_on_both_sides() {
    let mut world = World::new();
    let mut rust = world.device(RUST_JID, "bot");
    let rust_device = rust.manager.device_id();
    let mut peer = python(&mut world);
    let message = world.send(&mut rust, PY_JID, "genuine");
    let mut parsed =
        EncryptedMessage::from_element(EncryptedMessage::find(&message).unwrap()).unwrap();
    let payload = parsed.payload.as_mut().unwrap();
    payload[0] ^= 1;
    let tampered = parsed.to_element();
    let result = peer.call(json!({
        "op": "decrypt_xml",
        "peer": {"jid": RUST_JID, "device_id": rust_device},
        "xml": String::from(&tampered),
    }));
    assert!(result.is_err(), "oldmemo accepted a tampered payload");
    // The other way: oldmemo's message with a flipped payload bit is refused and the
    // untouched one still decrypts.
    assert_eq!(
        py_decrypt(&mut peer, rust_device, &message),
        json!("genuine")
    );
    let answer = py_encrypt(&mut peer, rust_device, "answer", None);
    let mut encrypted =
        EncryptedMessage::from_element(EncryptedMessage::find(&answer).unwrap()).unwrap();
    encrypted.payload.as_mut().unwrap()[0] ^= 1;
    let bad = with_from(
        Element::builder("message", "jabber:client")
            .append(encrypted.to_element())
            .build(),
        &format!("{PY_JID}/py"),
    );
    assert!(world.receive(&mut rust, &bad).is_err());
    assert_eq!(body(world.receive(&mut rust, &answer)), "answer");
}
