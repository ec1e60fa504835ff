//! Session manager scenarios: several managers exchange stanzas through an in-process
//! router that behaves like a PEP service (XEP-0163 on XEP-0060).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use jid::BareJid;
use minidom::Element;
use omemo::{
    Manager, ManagerConfig, ManagerError, MemoryStore, SkipReason, SqliteStore, Store, Trust,
};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const DEVICE_LIST_NODE: &str = "eu.siacs.conversations.axolotl.devicelist";
const DAY: u64 = 24 * 3600;

fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap()
}

/// PEP nodes of every account: (owner, node) -> items (id, payload), oldest first.
#[derive(Default)]
struct Pep {
    nodes: HashMap<(String, String), Vec<(String, Element)>>,
    /// Notifications produced by publishes: (owner, event message).
    events: Vec<Element>,
}

impl Pep {
    /// Answers one IQ request sent by `from` (a bare JID).
    fn answer(&mut self, from: &str, iq: &Element) -> Element {
        let id = iq.attr("id").unwrap();
        let to = iq.attr("to").unwrap_or(from).to_owned();
        let result = |children: Vec<Element>| {
            let mut builder = Element::builder("iq", "jabber:client")
                .attr("type".try_into().unwrap(), "result")
                .attr("id".try_into().unwrap(), id)
                .attr("from".try_into().unwrap(), to.as_str());
            for child in children {
                builder = builder.append(child);
            }
            builder.build()
        };
        if let Some(pubsub) = iq.get_child("pubsub", PUBSUB) {
            if let Some(publish) = pubsub.get_child("publish", PUBSUB) {
                let node = publish.attr("node").unwrap().to_owned();
                let item = publish.get_child("item", PUBSUB).unwrap();
                let item_id = item.attr("id").unwrap_or("current").to_owned();
                let payload = item.children().next().unwrap().clone();
                let items = self
                    .nodes
                    .entry((from.to_owned(), node.clone()))
                    .or_default();
                items.retain(|(i, _)| *i != item_id);
                items.push((item_id.clone(), payload.clone()));
                let event = Element::builder("message", "jabber:client")
                    .attr("from".try_into().unwrap(), from)
                    .append(
                        Element::builder("event", PUBSUB_EVENT).append(
                            Element::builder("items", PUBSUB_EVENT)
                                .attr("node".try_into().unwrap(), node.as_str())
                                .append(
                                    Element::builder("item", PUBSUB_EVENT)
                                        .attr("id".try_into().unwrap(), item_id.as_str())
                                        .append(payload)
                                        .build(),
                                )
                                .build(),
                        ),
                    )
                    .build();
                self.events.push(event);
                return result(vec![]);
            }
            if let Some(items) = pubsub.get_child("items", PUBSUB) {
                let node = items.attr("node").unwrap().to_owned();
                let Some(stored) = self.nodes.get(&(to.clone(), node.clone())) else {
                    return error(id, &to, "item-not-found");
                };
                let mut list = Element::builder("items", PUBSUB)
                    .attr("node".try_into().unwrap(), node.as_str());
                for (item_id, payload) in stored {
                    list = list.append(
                        Element::builder("item", PUBSUB)
                            .attr("id".try_into().unwrap(), item_id.as_str())
                            .append(payload.clone())
                            .build(),
                    );
                }
                return result(vec![
                    Element::builder("pubsub", PUBSUB)
                        .append(list.build())
                        .build(),
                ]);
            }
        }
        if iq.get_child("pubsub", PUBSUB_OWNER).is_some() {
            return result(vec![]);
        }
        panic!("unexpected request {}", String::from(iq));
    }
}

fn error(id: &str, from: &str, condition: &str) -> Element {
    Element::builder("iq", "jabber:client")
        .attr("type".try_into().unwrap(), "error")
        .attr("id".try_into().unwrap(), id)
        .attr("from".try_into().unwrap(), from)
        .append(
            Element::builder("error", "jabber:client")
                .attr("type".try_into().unwrap(), "cancel")
                .append(Element::bare(
                    condition,
                    "urn:ietf:params:xml:ns:xmpp-stanzas",
                ))
                .build(),
        )
        .build()
}

/// One device of one account.
struct Device<S: Store> {
    full_jid: String,
    manager: Manager<S>,
}

/// Every device, the PEP service and the message queues between them.
struct World {
    pep: Pep,
    now: u64,
}

impl World {
    fn new() -> Self {
        Self {
            pep: Pep::default(),
            now: 1_700_000_000,
        }
    }

    fn device(&mut self, jid: &str, resource: &str) -> Device<MemoryStore> {
        self.device_with(jid, resource, MemoryStore::new(), ManagerConfig::default())
    }

    fn device_with<S: Store>(
        &mut self,
        jid: &str,
        resource: &str,
        store: S,
        config: ManagerConfig,
    ) -> Device<S> {
        let mut rng = omemo::os_rng();
        let manager = Manager::open(store, &bare(jid), config, &mut rng, self.now).unwrap();
        let mut device = Device {
            full_jid: format!("{jid}/{resource}"),
            manager,
        };
        self.run(&mut device);
        device
    }

    /// Sends every queued request of `device` to the PEP service and feeds the answers
    /// back, until nothing is pending.
    fn run<S: Store>(&mut self, device: &mut Device<S>) {
        let mut rng = omemo::os_rng();
        let jid = device.manager.jid().to_owned();
        while let Some(request) = device.manager.poll_request() {
            let answer = self.pep.answer(&jid, &request.stanza);
            assert!(
                device
                    .manager
                    .handle_iq(&answer, &mut rng, self.now)
                    .unwrap()
            );
        }
        assert_eq!(device.manager.pending_requests(), 0);
    }

    /// Delivers the PEP notifications so far to `device`.
    fn notify<S: Store>(&mut self, device: &mut Device<S>) {
        for event in self.pep.events.clone() {
            device.manager.handle_event(&event, self.now).unwrap();
        }
        self.run(device);
    }

    /// Encrypts `body` from `sender` to `to`, fetching what is missing first.
    fn send<S: Store>(&mut self, sender: &mut Device<S>, to: &str, body: &str) -> Element {
        let mut rng = omemo::os_rng();
        sender.manager.prepare(&[bare(to)], self.now).unwrap();
        self.run(sender);
        let encrypted = sender
            .manager
            .encrypt(&[bare(to)], body, &mut rng, self.now)
            .unwrap();
        with_from(encrypted.stanza, &sender.full_jid)
    }

    fn receive<S: Store>(
        &mut self,
        receiver: &mut Device<S>,
        stanza: &Element,
    ) -> Result<omemo::Decrypted, ManagerError> {
        let mut rng = omemo::os_rng();
        let result = receiver.manager.decrypt(stanza, &mut rng, self.now);
        self.run(receiver);
        result
    }
}

fn with_from(mut stanza: Element, from: &str) -> Element {
    stanza.set_attr(
        minidom::rxml::Namespace::NONE,
        "from".try_into().unwrap(),
        from.to_owned(),
    );
    stanza
}

fn body(result: Result<omemo::Decrypted, ManagerError>) -> String {
    result.unwrap().body.unwrap()
}

#[test]
fn first_contact_by_prekey_message_and_reply() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let stanza = world.send(&mut alice, "bob@example.org", "Hi Bob");
    let received = world.receive(&mut bob, &stanza).unwrap();
    assert_eq!(received.body.as_deref(), Some("Hi Bob"));
    assert_eq!(received.sender, "alice@example.org");
    assert_eq!(received.device_id, alice.manager.device_id());
    assert_eq!(received.trust, Trust::Blind);
    // Bob completes the session with an empty message, which Alice takes silently.
    let completion = bob.manager.poll_message().expect("session completion");
    let completion = with_from(completion, &bob.full_jid);
    assert_eq!(world.receive(&mut alice, &completion).unwrap().body, None);
    assert!(
        alice.manager.poll_message().is_none(),
        "an empty message is never answered"
    );
    let reply = world.send(&mut bob, "alice@example.org", "Hi Alice");
    assert_eq!(body(world.receive(&mut alice, &reply)), "Hi Alice");
    // The same prekey message again (archive and live) is a silent duplicate.
    let again = world.receive(&mut bob, &stanza).unwrap_err();
    assert!(again.is_duplicate(), "{again}");
    // The bundle still offers 100 prekeys after one was used.
    assert_eq!(bob.manager.own_bundle().pre_keys.len(), 100);
}

#[test]
fn messages_reach_every_device_of_both_accounts() {
    let mut world = World::new();
    let mut alice1 = world.device("alice@example.org", "phone");
    let mut alice2 = world.device("alice@example.org", "desktop");
    let mut bob = world.device("bob@example.org", "laptop");
    world.notify(&mut alice1);
    let stanza = world.send(&mut bob, "alice@example.org", "to both of you");
    assert_eq!(body(world.receive(&mut alice1, &stanza)), "to both of you");
    assert_eq!(body(world.receive(&mut alice2, &stanza)), "to both of you");
    // Alice's phone writes; Bob and her own desktop (carbon copy) can read it.
    let stanza = world.send(&mut alice1, "bob@example.org", "from the phone");
    assert_eq!(body(world.receive(&mut bob, &stanza)), "from the phone");
    assert_eq!(body(world.receive(&mut alice2, &stanza)), "from the phone");
    // The sender itself gets no key.
    assert!(matches!(
        world.receive(&mut alice1, &stanza),
        Err(ManagerError::OwnMessage)
    ));
}

#[test]
fn added_and_removed_devices_are_followed() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob1 = world.device("bob@example.org", "one");
    let first = world.send(&mut alice, "bob@example.org", "one device");
    assert_eq!(body(world.receive(&mut bob1, &first)), "one device");
    let mut bob2 = world.device("bob@example.org", "two");
    world.notify(&mut alice);
    let second = world.send(&mut alice, "bob@example.org", "two devices");
    assert_eq!(body(world.receive(&mut bob1, &second)), "two devices");
    assert_eq!(body(world.receive(&mut bob2, &second)), "two devices");
    // Bob's second device is removed from his list: Alice stops encrypting to it.
    let remaining = vec![bob1.manager.device_id()];
    let list = omemo::stanza::device_list_element(&remaining);
    let event = Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), "bob@example.org")
        .append(
            Element::builder("event", PUBSUB_EVENT)
                .append(
                    Element::builder("items", PUBSUB_EVENT)
                        .attr("node".try_into().unwrap(), DEVICE_LIST_NODE)
                        .append(
                            Element::builder("item", PUBSUB_EVENT)
                                .attr("id".try_into().unwrap(), "current")
                                .append(list)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build();
    assert!(alice.manager.handle_event(&event, world.now).unwrap());
    let mut rng = omemo::os_rng();
    let third = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "one again", &mut rng, world.now)
        .unwrap();
    assert!(
        third
            .skipped
            .iter()
            .any(|s| s.device_id == bob2.manager.device_id() && s.reason == SkipReason::Inactive)
    );
    let third = with_from(third.stanza, &alice.full_jid);
    assert!(matches!(
        world.receive(&mut bob2, &third),
        Err(ManagerError::NotForThisDevice)
    ));
    assert_eq!(body(world.receive(&mut bob1, &third)), "one again");
    // A list notification that drops a device's own id makes it re-add itself.
    let own_drop = Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), "bob@example.org")
        .append(
            Element::builder("event", PUBSUB_EVENT)
                .append(
                    Element::builder("items", PUBSUB_EVENT)
                        .attr("node".try_into().unwrap(), DEVICE_LIST_NODE)
                        .append(
                            Element::builder("item", PUBSUB_EVENT)
                                .attr("id".try_into().unwrap(), "current")
                                .append(omemo::stanza::device_list_element(&remaining))
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build();
    bob2.manager.handle_event(&own_drop, world.now).unwrap();
    let request = bob2
        .manager
        .poll_request()
        .expect("re-publish of the device list");
    assert!(String::from(&request.stanza).contains(&bob2.manager.device_id().to_string()));
}

#[test]
fn prekeys_are_refilled_after_many_new_senders() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "laptop");
    for i in 0..105 {
        let jid = format!("sender{i}@example.org");
        let mut sender = world.device(&jid, "r");
        let stanza = world.send(&mut sender, "bob@example.org", &format!("hello {i}"));
        assert_eq!(body(world.receive(&mut bob, &stanza)), format!("hello {i}"));
        assert_eq!(bob.manager.own_bundle().pre_keys.len(), 100);
    }
    // The published bundle was refreshed too.
    let published = world.pep.nodes[&(
        "bob@example.org".to_owned(),
        omemo::stanza::bundle_node(bob.manager.device_id()),
    )]
        .clone();
    let bundle = omemo::stanza::parse_bundle(&published[0].1).unwrap();
    assert_eq!(bundle.pre_keys, bob.manager.own_bundle().pre_keys);
}

#[test]
fn signed_prekey_rotation_keeps_the_old_key_for_messages_in_flight() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut carol = world.device("carol@example.org", "tablet");
    let mut bob = world.device("bob@example.org", "laptop");
    let old_spk = bob.manager.own_bundle().signed_pre_key_id;
    // Two sessions are built from the current bundle; their messages are in flight.
    let in_flight = world.send(&mut alice, "bob@example.org", "sent before the rotation");
    let very_late = world.send(
        &mut carol,
        "bob@example.org",
        "delivered after the grace period",
    );
    let mut rng = omemo::os_rng();
    world.now += 8 * DAY;
    bob.manager.tick(&mut rng, world.now).unwrap();
    world.run(&mut bob);
    let new_spk = bob.manager.own_bundle().signed_pre_key_id;
    assert_ne!(new_spk, old_spk);
    assert_eq!(
        body(world.receive(&mut bob, &in_flight)),
        "sent before the rotation"
    );
    // Once the grace period is over, the old key is gone.
    world.now += 8 * DAY;
    bob.manager.tick(&mut rng, world.now).unwrap();
    world.run(&mut bob);
    assert_eq!(
        world.receive(&mut bob, &very_late).unwrap_err(),
        ManagerError::UnknownSignedPreKey(old_spk)
    );
    // New contacts use the new key.
    let mut dave = world.device("dave@example.org", "x");
    let fresh = world.send(&mut dave, "bob@example.org", "after rotation");
    assert_eq!(body(world.receive(&mut bob, &fresh)), "after rotation");
}

#[test]
fn distrusted_devices_get_no_key() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let first = world.send(&mut alice, "bob@example.org", "first");
    assert_eq!(body(world.receive(&mut bob, &first)), "first");
    alice
        .manager
        .set_trust(
            &bare("bob@example.org"),
            bob.manager.device_id(),
            Trust::Distrusted,
        )
        .unwrap();
    let mut rng = omemo::os_rng();
    let result = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "secret", &mut rng, world.now);
    let Err(ManagerError::NoRecipientDevices { skipped }) = result else {
        panic!("{result:?}")
    };
    assert_eq!(skipped[0].reason, SkipReason::Untrusted(Trust::Distrusted));
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(devices[0].trust, Trust::Distrusted);
    assert_eq!(devices[0].fingerprint, Some(bob.manager.fingerprint()));
}

#[test]
fn conversation_survives_a_restart_from_the_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("omemo-manager-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bob.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with(
        "bob@example.org",
        "laptop",
        SqliteStore::open(&path).unwrap(),
        ManagerConfig::default(),
    );
    let bob_id = bob.manager.device_id();
    for i in 0..5 {
        let stanza = world.send(&mut alice, "bob@example.org", &format!("before {i}"));
        assert_eq!(
            body(world.receive(&mut bob, &stanza)),
            format!("before {i}")
        );
    }
    let in_flight = world.send(&mut alice, "bob@example.org", "while bob was away");
    drop(bob);
    let mut bob = world.device_with(
        "bob@example.org",
        "laptop",
        SqliteStore::open(&path).unwrap(),
        ManagerConfig::default(),
    );
    assert_eq!(
        bob.manager.device_id(),
        bob_id,
        "device id stays for the life of the store"
    );
    assert_eq!(
        body(world.receive(&mut bob, &in_flight)),
        "while bob was away"
    );
    let reply = world.send(&mut bob, "alice@example.org", "back again");
    assert_eq!(body(world.receive(&mut alice, &reply)), "back again");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    let parse = |xml: &str| xml.parse::<Element>().unwrap();
    let now = world.now;
    // Not encrypted at all.
    let plain =
        parse("<message xmlns='jabber:client' from='a@example.org/x'><body>hi</body></message>");
    assert!(matches!(
        bob.manager.decrypt(&plain, &mut rng, now),
        Err(ManagerError::NotEncrypted)
    ));
    // No header.
    let headerless = parse(
        "<message xmlns='jabber:client' from='a@example.org/x'><encrypted xmlns='eu.siacs.conversations.axolotl'><payload>AAAA</payload></encrypted></message>",
    );
    assert!(matches!(
        bob.manager.decrypt(&headerless, &mut rng, now),
        Err(ManagerError::Stanza(_))
    ));
    // A key for another device.
    let other = parse(
        "<message xmlns='jabber:client' from='a@example.org/x'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='5'><key rid='1'>AAAA</key><iv>AAAAAAAAAAAAAAAA</iv></header></encrypted></message>",
    );
    assert!(matches!(
        bob.manager.decrypt(&other, &mut rng, now),
        Err(ManagerError::NotForThisDevice)
    ));
    // A key for this device that is garbage.
    let garbage = format!(
        "<message xmlns='jabber:client' from='a@example.org/x'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='5'><key rid='{}'>AAAA</key><iv>AAAAAAAAAAAAAAAA</iv></header></encrypted></message>",
        bob.manager.device_id()
    );
    assert!(matches!(
        bob.manager.decrypt(&parse(&garbage), &mut rng, now),
        Err(ManagerError::Decode(_))
    ));
    // No sender.
    let anonymous = parse(
        "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
    );
    assert!(matches!(
        bob.manager.decrypt(&anonymous, &mut rng, now),
        Err(ManagerError::MissingSender)
    ));
}

#[test]
fn absurd_device_lists_are_refused() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let ids: Vec<u32> = (1..=10_000).collect();
    let list = omemo::stanza::device_list_element(&ids);
    world.pep.nodes.insert(
        (
            "mallory@example.org".to_owned(),
            DEVICE_LIST_NODE.to_owned(),
        ),
        vec![("current".to_owned(), list)],
    );
    let pending = alice
        .manager
        .prepare(&[bare("mallory@example.org")], world.now)
        .unwrap();
    assert_eq!(pending, 1);
    world.run(&mut alice);
    assert!(
        alice
            .manager
            .devices(&bare("mallory@example.org"), world.now)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        alice.manager.poll_request(),
        None,
        "no bundle fetches for a refused list"
    );
}

#[test]
fn bundle_with_a_bad_signature_makes_the_device_inactive() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let bob = world.device("bob@example.org", "laptop");
    let node = omemo::stanza::bundle_node(bob.manager.device_id());
    let key = ("bob@example.org".to_owned(), node);
    let mut bundle = omemo::stanza::parse_bundle(&world.pep.nodes[&key][0].1).unwrap();
    bundle.signed_pre_key_signature[0] ^= 1;
    world.pep.nodes.insert(
        key,
        vec![("current".to_owned(), omemo::stanza::bundle_element(&bundle))],
    );
    alice
        .manager
        .prepare(&[bare("bob@example.org")], world.now)
        .unwrap();
    world.run(&mut alice);
    let mut rng = omemo::os_rng();
    let result = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "x", &mut rng, world.now);
    let Err(ManagerError::NoRecipientDevices { skipped }) = result else {
        panic!("{result:?}")
    };
    assert_eq!(skipped[0].reason, SkipReason::Inactive);
}
