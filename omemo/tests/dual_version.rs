//! Scenarios of both versions at once, through the in-process PEP router: mixed device
//! lists, a device that moves from legacy OMEMO to OMEMO 2, SCE affix checks, signed
//! labels, the bundles-node fallbacks, removing, pruning and resetting own devices, and a
//! restart with sessions of both versions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pep::{Device, World, bare, body, encrypted_versions, with_from};
use minidom::Element;
use omemo::hazmat::{IdentityKeyPair, Session, encrypt_payload};
use omemo::stanza::omemo2::{self, EncryptedKey, EncryptedMessage, RecipientKeys};
use omemo::stanza::sce::AffixViolation;
use omemo::{
    Manager, ManagerConfig, ManagerError, MemoryStore, SqliteStore, Store, Trust, Version, Versions,
};
use rand_core::Rng;

fn speaking(versions: Versions) -> ManagerConfig {
    ManagerConfig {
        versions,
        ..ManagerConfig::default()
    }
}

fn legacy_only() -> ManagerConfig {
    speaking(Versions::only(Version::Legacy))
}

fn omemo2_only() -> ManagerConfig {
    speaking(Versions::only(Version::Omemo2))
}

#[test]
fn each_device_gets_the_version_of_the_lists_it_is_on() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "dual");
    let mut alice_legacy = world.device_with(
        "alice@example.org",
        "old",
        MemoryStore::new(),
        legacy_only(),
    );
    let mut conversations = world.device_with(
        "bob@example.org",
        "phone",
        MemoryStore::new(),
        legacy_only(),
    );
    let mut kaidan = world.device_with(
        "bob@example.org",
        "tablet",
        MemoryStore::new(),
        omemo2_only(),
    );
    let mut converse = world.device("bob@example.org", "web");
    world.notify(&mut alice);

    let sent = world.encrypt(&mut alice, "bob@example.org", "to every kind");
    let version_of = |device: &Device<MemoryStore>| {
        let id = device.manager.device_id();
        sent.recipients
            .iter()
            .find(|r| r.device_id == id)
            .map(|r| r.version)
    };
    assert_eq!(version_of(&conversations), Some(Version::Legacy));
    assert_eq!(version_of(&kaidan), Some(Version::Omemo2));
    assert_eq!(version_of(&converse), Some(Version::Omemo2));
    assert_eq!(version_of(&alice_legacy), Some(Version::Legacy));
    assert!(sent.skipped.is_empty(), "{:?}", sent.skipped);
    // One stanza carries both elements; the fallback body is there for legacy clients.
    let stanza = with_from(sent.stanza, &alice.full_jid);
    assert_eq!(
        encrypted_versions(&stanza),
        vec![Version::Legacy, Version::Omemo2]
    );
    assert!(stanza.get_child("body", "jabber:client").is_some());
    for (device, version) in [
        (&mut conversations, Version::Legacy),
        (&mut kaidan, Version::Omemo2),
        (&mut converse, Version::Omemo2),
        (&mut alice_legacy, Version::Legacy),
    ] {
        let received = world.receive(device, &stanza).unwrap();
        assert_eq!(received.body.as_deref(), Some("to every kind"));
        assert_eq!(received.version, version);
        assert!(received.affix_violations.is_empty() || version == Version::Legacy);
    }
    // The OMEMO 2 envelope names Alice and Bob; Alice's own legacy device reads the body
    // without an envelope.
    let kaidan_reply = world.send(&mut kaidan, "alice@example.org", "from Kaidan");
    let received = world.receive(&mut alice, &kaidan_reply).unwrap();
    assert_eq!(received.body.as_deref(), Some("from Kaidan"));
    assert!(received.affix_violations.is_empty());
    assert_eq!(
        encrypted_versions(&kaidan_reply),
        vec![Version::Omemo2],
        "an OMEMO 2 only device sends OMEMO 2 only"
    );
    assert!(
        kaidan_reply.get_child("body", "jabber:client").is_none(),
        "no fallback body without a legacy element (SCE)"
    );
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    let versions: Vec<Versions> = devices.iter().map(|d| d.versions).collect();
    let expected = |d: &Device<MemoryStore>| {
        let id = d.manager.device_id();
        devices.iter().find(|i| i.device_id == id).unwrap().versions
    };
    assert_eq!(expected(&conversations), Versions::only(Version::Legacy));
    assert_eq!(expected(&kaidan), Versions::only(Version::Omemo2));
    assert_eq!(expected(&converse), Versions::BOTH);
    assert_eq!(versions.len(), 3);
}

#[test]
fn a_device_that_moves_to_omemo2_keeps_its_trust_and_its_late_legacy_messages() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with("bob@example.org", "pc", MemoryStore::new(), legacy_only());
    let first = world.send(&mut alice, "bob@example.org", "legacy days");
    assert_eq!(encrypted_versions(&first), vec![Version::Legacy]);
    assert_eq!(body(world.receive(&mut bob, &first)), "legacy days");
    let in_flight = world.send(&mut bob, "alice@example.org", "sent before the update");
    let bob_id = bob.manager.device_id();
    alice
        .manager
        .set_trust(&bare("bob@example.org"), bob_id, Trust::Verified)
        .unwrap();

    // Bob's client learns OMEMO 2: same store, same identity and device id.
    let store = bob.manager.into_store().unwrap();
    let mut bob = world.device_with("bob@example.org", "pc", store, ManagerConfig::default());
    assert_eq!(bob.manager.device_id(), bob_id);
    world.notify(&mut alice);
    let after = world.send(&mut alice, "bob@example.org", "OMEMO 2 now");
    assert_eq!(encrypted_versions(&after), vec![Version::Omemo2]);
    let received = world.receive(&mut bob, &after).unwrap();
    assert_eq!(received.body.as_deref(), Some("OMEMO 2 now"));
    assert_eq!(received.version, Version::Omemo2);
    // The decision was about the identity key: it holds in the new version.
    let info = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(info[0].trust, Trust::Verified);
    assert_eq!(info[0].versions, Versions::BOTH);
    // A legacy message still in flight decrypts on the old session.
    let late = world.receive(&mut alice, &in_flight).unwrap();
    assert_eq!(late.body.as_deref(), Some("sent before the update"));
    assert_eq!(late.version, Version::Legacy);
    assert_eq!(late.trust, Trust::Verified);
}

#[test]
fn a_device_whose_omemo2_bundle_fails_gets_legacy_until_it_is_fixed() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "pc");
    let bob_id = bob.manager.device_id();
    let good = world.pep.bundle("bob@example.org", Version::Omemo2, bob_id);
    let mut broken = good.clone();
    broken.signed_pre_key_signature[0] ^= 1;
    world
        .pep
        .set_bundle("bob@example.org", Version::Omemo2, bob_id, &broken);
    // The OMEMO 2 bundle fails: the legacy one is fetched at once and used.
    let first = world.send(&mut alice, "bob@example.org", "via legacy");
    assert_eq!(encrypted_versions(&first), vec![Version::Legacy]);
    assert_eq!(body(world.receive(&mut bob, &first)), "via legacy");
    let info = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert!(
        info[0].active,
        "a failed bundle of one version leaves the other"
    );
    // Fixed on the server; a day later the OMEMO 2 bundle is tried again and used.
    world
        .pep
        .set_bundle("bob@example.org", Version::Omemo2, bob_id, &good);
    let still = world.send(&mut alice, "bob@example.org", "still legacy");
    assert_eq!(encrypted_versions(&still), vec![Version::Legacy]);
    world.receive(&mut bob, &still).unwrap();
    world.now += 24 * 3600;
    let later = world.send(&mut alice, "bob@example.org", "OMEMO 2 again");
    assert_eq!(encrypted_versions(&later), vec![Version::Omemo2]);
    assert_eq!(body(world.receive(&mut bob, &later)), "OMEMO 2 again");
}

/// An OMEMO 2 message to `to` from a made-up device of `sender` (a full JID, a fresh
/// identity and device id each time) whose payload is `envelope`, on a session built
/// from the recipient's published bundle.
fn forged(world: &World, sender: &str, to: &Device<MemoryStore>, envelope: &str) -> Element {
    let mut rng = omemo::os_rng();
    let to_jid = to.manager.jid().to_owned();
    let bundle = world
        .pep
        .bundle(&to_jid, Version::Omemo2, to.manager.device_id());
    let identity = IdentityKeyPair::generate(&mut rng);
    let mut session = Session::initiate(&mut rng, &identity, &bundle).unwrap();
    let (key, payload) = encrypt_payload(Version::Omemo2, &mut rng, envelope.as_bytes());
    let message = session.encrypt(key.as_bytes()).unwrap();
    let encrypted = EncryptedMessage {
        sender_device: 1 + rng.next_u32() % 1_000_000,
        recipients: vec![RecipientKeys {
            jid: to_jid.clone(),
            keys: vec![EncryptedKey {
                recipient_device: to.manager.device_id(),
                key_exchange: message.is_key_exchange(),
                data: message.as_bytes().to_vec(),
            }],
        }],
        payload: Some(payload.ciphertext),
    };
    with_from(
        omemo2::message_element(&to_jid, "forged", "chat", &encrypted, None),
        sender,
    )
}

fn envelope(content: &str, affixes: &str) -> String {
    format!(
        "<envelope xmlns='urn:xmpp:sce:1'><content>{content}</content><rpad>AAAA</rpad>{affixes}</envelope>"
    )
}

#[test]
fn every_sce_affix_violation_reaches_the_application() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "pc");
    let body_xml = "<body xmlns='jabber:client'>hello</body>";
    let good = "<from jid='mallory@example.org'/><to jid='bob@example.org'/>";
    let cases: Vec<(String, Vec<AffixViolation>)> = vec![
        (envelope(body_xml, good), vec![]),
        (
            envelope(body_xml, "<to jid='bob@example.org'/>"),
            vec![AffixViolation::MissingFrom],
        ),
        (
            envelope(
                body_xml,
                "<from jid='alice@example.org'/><to jid='bob@example.org'/>",
            ),
            vec![AffixViolation::FromMismatch {
                claimed: "alice@example.org".into(),
            }],
        ),
        (
            envelope(body_xml, "<from jid='mallory@example.org'/>"),
            vec![AffixViolation::MissingTo],
        ),
        (
            envelope(
                body_xml,
                "<from jid='mallory@example.org'/><to jid='carol@example.org'/>",
            ),
            vec![AffixViolation::ToMismatch {
                claimed: "carol@example.org".into(),
            }],
        ),
        (
            envelope(&format!("{body_xml}<store xmlns='urn:xmpp:hints'/>"), good),
            vec![AffixViolation::ForbiddenContent {
                name: "store".into(),
                namespace: "urn:xmpp:hints".into(),
            }],
        ),
    ];
    for (xml, expected) in cases {
        let stanza = forged(&world, "mallory@example.org/x", &bob, &xml);
        let received = world.receive(&mut bob, &stanza).unwrap();
        assert_eq!(received.body.as_deref(), Some("hello"), "{xml}");
        assert_eq!(received.affix_violations, expected, "{xml}");
        assert_eq!(
            received.content.len(),
            1,
            "the forbidden element is dropped"
        );
    }
    // An opt-out and other content elements reach the application too.
    let opt_out = envelope(
        "<opt-out xmlns='urn:xmpp:omemo:2'><reason>no more</reason></opt-out><reply xmlns='urn:xmpp:reply:0' id='m1'/>",
        good,
    );
    let stanza = forged(&world, "mallory@example.org/x", &bob, &opt_out);
    let received = world.receive(&mut bob, &stanza).unwrap();
    assert_eq!(received.opt_out.as_deref(), Some("no more"));
    assert_eq!(received.body, None);
    assert_eq!(received.content.len(), 2);
    assert!(format!("{received:?}").contains("reply"));
    // A payload that is no envelope fails and changes nothing.
    let broken = forged(&world, "mallory@example.org/x", &bob, "<not-an-envelope/>");
    assert!(matches!(
        world.receive(&mut bob, &broken),
        Err(ManagerError::Stanza(_))
    ));
    // In a message to two recipients, the envelope names the first: the other sees it.
    let mut alice = world.device("alice@example.org", "phone");
    let mut carol = world.device("carol@example.org", "phone");
    world.prepare(&mut alice, "bob@example.org");
    world.prepare(&mut alice, "carol@example.org");
    let mut rng = omemo::os_rng();
    let both = alice
        .manager
        .encrypt(
            &[bare("bob@example.org"), bare("carol@example.org")],
            "to you two",
            &mut rng,
            world.now,
        )
        .unwrap();
    let both = with_from(both.stanza, &alice.full_jid);
    assert!(
        world
            .receive(&mut bob, &both)
            .unwrap()
            .affix_violations
            .is_empty()
    );
    assert_eq!(
        world.receive(&mut carol, &both).unwrap().affix_violations,
        vec![AffixViolation::ToMismatch {
            claimed: "bob@example.org".into()
        }]
    );
}

#[test]
fn device_labels_show_only_with_a_valid_signature() {
    let mut world = World::new();
    let labelled = ManagerConfig {
        label: Some("Bob's phone".into()),
        ..ManagerConfig::default()
    };
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with("bob@example.org", "phone", MemoryStore::new(), labelled);
    let first = world.send(&mut alice, "bob@example.org", "hi");
    world.receive(&mut bob, &first).unwrap();
    let label = |alice: &mut Device<MemoryStore>, world: &World| {
        alice
            .manager
            .devices(&bare("bob@example.org"), world.now)
            .unwrap()[0]
            .label
            .clone()
    };
    assert_eq!(label(&mut alice, &world).as_deref(), Some("Bob's phone"));

    // The label as published: signed by Bob's identity key.
    let key = (
        "bob@example.org".to_owned(),
        omemo2::DEVICE_LIST_NODE.to_owned(),
    );
    let published = omemo2::parse_device_list(&world.pep.nodes[&key][0].1, 10).unwrap();
    let identity = world
        .pep
        .bundle("bob@example.org", Version::Omemo2, bob.manager.device_id())
        .identity_key;
    assert_eq!(published[0].verified_label(&identity), Some("Bob's phone"));

    // A list whose label signature is wrong, or missing, shows no label.
    let mut tampered = published.clone();
    tampered[0].label_signature.as_mut().unwrap()[0] ^= 1;
    let mut unsigned = published.clone();
    unsigned[0].label_signature = None;
    for list in [tampered, unsigned] {
        let event = list_event("bob@example.org", &list);
        let handled = alice
            .manager
            .handle_stanza(&event, &mut omemo::os_rng(), world.now)
            .unwrap();
        assert_eq!(handled, omemo::Handled::DeviceList);
        assert_eq!(label(&mut alice, &world), None);
    }
    let event = list_event("bob@example.org", &published);
    alice
        .manager
        .handle_stanza(&event, &mut omemo::os_rng(), world.now)
        .unwrap();
    assert_eq!(label(&mut alice, &world).as_deref(), Some("Bob's phone"));
}

fn list_event(from: &str, devices: &[omemo2::ListedDevice]) -> Element {
    let event = "http://jabber.org/protocol/pubsub#event";
    Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), from)
        .append(
            Element::builder("event", event)
                .append(
                    Element::builder("items", event)
                        .attr("node".try_into().unwrap(), omemo2::DEVICE_LIST_NODE)
                        .append(
                            Element::builder("item", event)
                                .attr("id".try_into().unwrap(), "current")
                                .append(omemo2::device_list_element(devices))
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
}

#[test]
fn the_bundles_node_falls_back_to_the_item_limit_the_server_takes() {
    let mut world = World::new();
    world.pep.refused_max_items = vec!["max", "1000"];
    let alice = world.device("alice@example.org", "phone");
    let node = (
        "alice@example.org".to_owned(),
        omemo2::BUNDLES_NODE.to_owned(),
    );
    assert_eq!(world.pep.max_items[&node], "256");
    let bundle = world.pep.bundle(
        "alice@example.org",
        Version::Omemo2,
        alice.manager.device_id(),
    );
    assert_eq!(
        bundle.identity_key.fingerprint(),
        alice.manager.fingerprint()
    );

    // A server that refuses every limit still gets the bundle, without options.
    let mut world = World::new();
    world.pep.refused_max_items = omemo2::BUNDLES_NODE_MAX_ITEMS.to_vec();
    let alice = world.device("alice@example.org", "phone");
    assert!(!world.pep.max_items.contains_key(&node));
    world.pep.bundle(
        "alice@example.org",
        Version::Omemo2,
        alice.manager.device_id(),
    );
}

#[test]
fn a_removed_own_device_leaves_both_lists_and_its_bundles_are_retracted() {
    let mut world = World::new();
    let mut phone = world.device("alice@example.org", "phone");
    let lost = world.device("alice@example.org", "lost");
    let mut bob = world.device("bob@example.org", "pc");
    world.notify(&mut phone);
    let lost_id = lost.manager.device_id();
    drop(lost);
    // Not before the own lists are here: the change could drop devices added meanwhile.
    let mut early = world.unconnected("alice@example.org");
    assert_eq!(
        early.remove_own_device(lost_id, world.now),
        Err(ManagerError::OwnListsUnknown)
    );
    assert_eq!(
        phone
            .manager
            .remove_own_device(phone.manager.device_id(), world.now),
        Err(ManagerError::RemovingThisDevice)
    );
    assert!(matches!(
        phone.manager.remove_own_device(7, world.now),
        Err(ManagerError::UnknownDevice { device_id: 7, .. })
    ));
    phone.manager.remove_own_device(lost_id, world.now).unwrap();
    world.run(&mut phone);
    for version in Version::ALL {
        let list = &world.pep.nodes[&(
            "alice@example.org".to_owned(),
            common::pep::device_list_node(version).to_owned(),
        )][0]
            .1;
        let text = String::from(list);
        assert!(!text.contains(&lost_id.to_string()), "{version}: {text}");
        assert!(text.contains(&phone.manager.device_id().to_string()));
        let (node, item) = common::pep::bundle_item(version, lost_id);
        let items = &world.pep.nodes[&("alice@example.org".to_owned(), node)];
        assert!(items.iter().all(|(id, _)| *id != item), "{version}");
    }
    world.notify(&mut bob);
    let sent = world.encrypt(&mut bob, "alice@example.org", "hi");
    assert!(sent.recipients.iter().all(|r| r.device_id != lost_id));
    assert!(sent.skipped.iter().any(|s| s.device_id == lost_id));
}

/// The device ids on `jid`'s published device list of `version`.
fn listed_ids(world: &World, jid: &str, version: Version) -> Vec<u32> {
    let node = (
        jid.to_owned(),
        common::pep::device_list_node(version).to_owned(),
    );
    let list = &world.pep.nodes[&node][0].1;
    let mut ids: Vec<u32> = list
        .children()
        .filter_map(|d| d.attr("id"))
        .map(|id| id.parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn stale_own_devices_are_pruned_from_both_lists_and_a_reset_leaves_this_device_alone() {
    const DAY: u64 = 24 * 3600;
    let alice = "alice@example.org";
    let mut world = World::new();
    let mut phone = world.device(alice, "phone");
    let stale = world.device(alice, "stale").manager.device_id();
    let mut chatty = world.device(alice, "chatty");
    world.notify(&mut phone);
    // Not before the own lists are here.
    let mut early = world.unconnected(alice);
    assert_eq!(
        early.prune_own_devices(DAY, world.now),
        Err(ManagerError::OwnListsUnknown)
    );
    assert_eq!(
        early.reset_own_device_lists(world.now),
        Err(ManagerError::OwnListsUnknown)
    );
    // Nor when their fetch failed: the records say nothing of what other clients did.
    let mut rng = omemo::os_rng();
    while let Some(request) = early.poll_transmit().unwrap() {
        let id = request.attr("id").unwrap_or_default().to_owned();
        let refusal = common::pep::error(&id, alice, "internal-server-error");
        early.handle_stanza(&refusal, &mut rng, world.now).unwrap();
    }
    assert_eq!(
        early.prune_own_devices(DAY, world.now),
        Err(ManagerError::OwnListsUnknown)
    );

    // Ten days on: one device wrote (to bob; the phone reads its copy), one appeared,
    // one said nothing since first seen.
    world.now += 10 * DAY;
    let mut bob = world.device("bob@example.org", "pc");
    let to_bob = world.send(&mut chatty, "bob@example.org", "still here");
    assert_eq!(body(world.receive(&mut phone, &to_bob)), "still here");
    let fresh = world.device(alice, "fresh").manager.device_id();
    world.notify(&mut phone);
    let ids =
        |devices: &[omemo::DeviceInfo]| devices.iter().map(|d| d.device_id).collect::<Vec<_>>();
    let seen = phone.manager.devices(&bare(alice), world.now).unwrap();
    let chatty_id = chatty.manager.device_id();
    let info = |id: u32| seen.iter().find(|d| d.device_id == id).unwrap().clone();
    assert_eq!(info(chatty_id).last_seen, Some(world.now));
    assert_eq!(info(stale).last_seen, None);
    assert_eq!(info(stale).first_seen, Some(world.now - 10 * DAY));
    assert_eq!(info(fresh).first_seen, Some(world.now));
    assert_eq!(ids(&seen).len(), 3);

    assert_eq!(
        phone.manager.prune_own_devices(5 * DAY, world.now),
        Ok(vec![stale])
    );
    world.run(&mut phone);
    let mut kept = vec![phone.manager.device_id(), chatty_id, fresh];
    kept.sort_unstable();
    for version in Version::ALL {
        assert_eq!(listed_ids(&world, alice, version), kept, "{version}");
        let (node, item) = common::pep::bundle_item(version, stale);
        let items = &world.pep.nodes[&(alice.to_owned(), node)];
        assert!(items.iter().all(|(id, _)| *id != item), "{version}");
    }
    // Nothing stale is left: nothing is published.
    assert_eq!(
        phone.manager.prune_own_devices(5 * DAY, world.now),
        Ok(vec![])
    );
    assert_eq!(phone.manager.poll_transmit().unwrap(), None);

    let mut removed = phone.manager.reset_own_device_lists(world.now).unwrap();
    removed.sort_unstable();
    let mut others = vec![chatty_id, fresh];
    others.sort_unstable();
    assert_eq!(removed, others);
    world.run(&mut phone);
    for version in Version::ALL {
        assert_eq!(
            listed_ids(&world, alice, version),
            vec![phone.manager.device_id()],
            "{version}"
        );
    }
    // A contact now encrypts to the phone alone.
    world.notify(&mut bob);
    let sent = world.encrypt(&mut bob, alice, "hi");
    assert_eq!(
        sent.recipients
            .iter()
            .map(|r| r.device_id)
            .collect::<Vec<_>>(),
        vec![phone.manager.device_id()]
    );
    // A device that still runs puts itself back, with its bundles.
    world.notify(&mut chatty);
    for version in Version::ALL {
        assert!(
            listed_ids(&world, alice, version).contains(&chatty_id),
            "{version}"
        );
        let (node, item) = common::pep::bundle_item(version, chatty_id);
        let items = &world.pep.nodes[&(alice.to_owned(), node)];
        assert!(
            items.iter().any(|(id, _)| *id == item),
            "{version}: no bundle"
        );
    }
    world.notify(&mut bob);
    let sent = world.encrypt(&mut bob, alice, "hi again");
    assert!(sent.recipients.iter().any(|r| r.device_id == chatty_id));
}

#[test]
fn a_restart_keeps_the_sessions_of_both_versions() {
    let dir = std::env::temp_dir().join(format!("omemo-dual-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bob.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut world = World::new();
    let mut carol = world.device_with(
        "carol@example.org",
        "old",
        MemoryStore::new(),
        legacy_only(),
    );
    let mut dave = world.device_with("dave@example.org", "new", MemoryStore::new(), omemo2_only());
    let open = |path: &std::path::Path| SqliteStore::open(path).unwrap();
    let mut bob = world.device_with(
        "bob@example.org",
        "pc",
        open(&path),
        ManagerConfig::default(),
    );
    for peer in [&mut carol, &mut dave] {
        let to_bob = world.send(peer, "bob@example.org", "before");
        assert_eq!(body(world.receive(&mut bob, &to_bob)), "before");
    }
    let from_carol = world.send(&mut carol, "bob@example.org", "while bob was away");
    let from_dave = world.send(&mut dave, "bob@example.org", "while bob was away");
    drop(bob);
    let mut bob = world.device_with(
        "bob@example.org",
        "pc",
        open(&path),
        ManagerConfig::default(),
    );
    for (stanza, version) in [(from_carol, Version::Legacy), (from_dave, Version::Omemo2)] {
        let received = world.receive(&mut bob, &stanza).unwrap();
        assert_eq!(received.version, version);
        assert_eq!(received.body.as_deref(), Some("while bob was away"));
    }
    for (peer, jid) in [
        (&mut carol, "carol@example.org"),
        (&mut dave, "dave@example.org"),
    ] {
        let reply = world.send(&mut bob, jid, "back again");
        assert_eq!(body(world.receive(peer, &reply)), "back again");
    }
    let store = bob.manager.into_store().unwrap();
    let carol_id = carol.manager.device_id();
    let dave_id = dave.manager.device_id();
    assert!(
        store
            .load_session("carol@example.org", carol_id, Version::Legacy)
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .load_session("dave@example.org", dave_id, Version::Omemo2)
            .unwrap()
            .is_some()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_configuration_without_versions_or_with_an_overlong_label_is_refused() {
    let mut rng = omemo::os_rng();
    let result = Manager::open(
        MemoryStore::new(),
        &bare("alice@example.org"),
        speaking(Versions::NONE),
        &mut rng,
        1_700_000_000,
    );
    assert!(matches!(result, Err(ManagerError::NoVersions)));
    // A label longer than a device list carries would never match what is published.
    let result = Manager::open(
        MemoryStore::new(),
        &bare("alice@example.org"),
        ManagerConfig {
            label: Some("x".repeat(omemo2::MAX_LABEL_LENGTH + 1)),
            ..ManagerConfig::default()
        },
        &mut rng,
        1_700_000_000,
    );
    assert!(matches!(
        result,
        Err(ManagerError::LabelTooLong {
            length: 257,
            max: 256
        })
    ));
}
