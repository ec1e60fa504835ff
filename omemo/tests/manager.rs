//! Session manager scenarios: several managers exchange stanzas through an in-process
//! router that behaves like a PEP service (XEP-0163 on XEP-0060).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pep::{
    Device, PUBSUB_EVENT, World, bare, body, bundle_item, device_list_event, device_list_node,
    with_from,
};
use common::stores::FlakyStore;
use minidom::Element;
use omemo::{
    Fingerprint, Handled, Manager, ManagerConfig, ManagerError, MemoryStore, SkipReason,
    SqliteStore, Store, Trust, VerificationUri, Version, Versions,
};

/// Runs each scenario (a function of the versions every device speaks) three times:
/// with legacy OMEMO only, OMEMO 2 only, and both (where devices talk OMEMO 2).
macro_rules! in_every_setup {
    ($($scenario:ident),* $(,)?) => {
        mod legacy_only {
            $(#[test] fn $scenario() { super::$scenario(omemo::Versions::only(omemo::Version::Legacy)) })*
        }
        mod omemo2_only {
            $(#[test] fn $scenario() { super::$scenario(omemo::Versions::only(omemo::Version::Omemo2)) })*
        }
        mod both_versions {
            $(#[test] fn $scenario() { super::$scenario(omemo::Versions::BOTH) })*
        }
    };
}

in_every_setup!(
    first_contact_by_prekey_message_and_reply,
    messages_reach_every_device_of_both_accounts,
    added_and_removed_devices_are_followed,
    prekeys_are_refilled_after_many_new_senders,
    signed_prekey_rotation_keeps_the_old_key_for_messages_in_flight,
    distrusted_devices_get_no_key,
    conversation_survives_a_restart_from_the_sqlite_file,
    absurd_device_lists_are_refused,
    bundle_with_a_bad_signature_makes_the_device_inactive,
    temporary_bundle_fetch_errors_are_retried_and_lost_connections_forgotten,
    refused_publish_options_lead_to_node_configuration_and_a_new_publish,
    device_lists_with_several_items_merge_and_only_their_owner_sends_them,
    unsolicited_empty_key_exchange_is_consumed_silently,
    heartbeat_after_many_messages_without_reply,
    devices_silent_for_too_long_are_not_encrypted_to,
    changed_identity_under_a_known_device_id_is_refused,
    manual_trust_policy_and_blind_trust_until_the_first_decision,
    a_verification_uri_marks_its_devices_and_a_wrong_fingerprint_changes_nothing,
    decrypt_commits_once_and_only_after_authentication,
    a_burst_of_new_senders_queues_one_bundle_publication,
    iq_answers_from_anyone_but_the_asked_entity_are_ignored,
    trust_needs_a_known_identity_and_device_id_zero_is_ignored,
    requests_without_an_answer_are_forgotten_and_asked_again,
    a_bad_own_device_list_is_never_replaced_by_this_device_alone,
    an_unreadable_session_skips_its_device_and_not_the_message,
);

/// The bundle a manager publishes in the version of `world`.
fn own_bundle<S: Store>(world: &World, manager: &Manager<S>) -> omemo::PreKeyBundle {
    manager.own_bundle(world.version()).unwrap()
}

/// The number of versions the devices of `world` speak: a device list fetch per JID.
fn lists(world: &World) -> usize {
    world.config.versions.iter().count()
}

const DAY: u64 = 24 * 3600;

/// The reasons of an encryption that reached no device.
fn skip_reasons(result: Result<omemo::Encrypted, ManagerError>) -> Vec<SkipReason> {
    match result {
        Err(ManagerError::NoRecipientDevices { skipped }) => {
            skipped.iter().map(|s| s.reason).collect()
        }
        other => panic!("expected NoRecipientDevices, got {other:?}"),
    }
}

fn first_contact_by_prekey_message_and_reply(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let stanza = world.send(&mut alice, "bob@example.org", "Hi Bob");
    let received = world.receive(&mut bob, &stanza).unwrap();
    assert_eq!(received.body.as_deref(), Some("Hi Bob"));
    assert_eq!(received.sender, "alice@example.org");
    assert_eq!(received.device_id, alice.manager.device_id());
    assert_eq!(received.trust, Trust::Blind);
    // Bob completes the session with an empty message, which Alice takes silently.
    let completion = bob.next_message().expect("session completion");
    let completion = with_from(completion, &bob.full_jid);
    assert_eq!(world.receive(&mut alice, &completion).unwrap().body, None);
    assert!(
        alice.next_message().is_none(),
        "an empty message is never answered"
    );
    let reply = world.send(&mut bob, "alice@example.org", "Hi Alice");
    assert_eq!(body(world.receive(&mut alice, &reply)), "Hi Alice");
    // The same prekey message again (archive and live) is a silent duplicate.
    let again = world.receive(&mut bob, &stanza).unwrap_err();
    assert!(again.is_duplicate(), "{again}");
    assert_eq!(received.version, world.version());
    // It publishes a bundle in each version it speaks, and in none other.
    for version in Version::ALL {
        assert_eq!(
            bob.manager.own_bundle(version).is_some(),
            versions.contains(version)
        );
    }
    // The bundle still offers 100 prekeys after one was used.
    assert_eq!(own_bundle(&world, &bob.manager).pre_keys.len(), 100);
}

fn messages_reach_every_device_of_both_accounts(versions: Versions) {
    let mut world = World::speaking(versions);
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

fn added_and_removed_devices_are_followed(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob1 = world.device("bob@example.org", "one");
    let first = world.send(&mut alice, "bob@example.org", "one device");
    assert_eq!(body(world.receive(&mut bob1, &first)), "one device");
    let mut bob2 = world.device("bob@example.org", "two");
    world.notify(&mut alice);
    let second = world.send(&mut alice, "bob@example.org", "two devices");
    assert_eq!(body(world.receive(&mut bob1, &second)), "two devices");
    assert_eq!(body(world.receive(&mut bob2, &second)), "two devices");
    // Bob's second device is removed from his lists: Alice stops encrypting to it.
    // While it is still on one of them, it gets a key in that version.
    let remaining = vec![bob1.manager.device_id()];
    let mut rng = omemo::os_rng();
    for (i, version) in versions.iter().rev().enumerate() {
        let event = device_list_event(version, "bob@example.org", &[&remaining]);
        let handled = alice
            .manager
            .handle_stanza(&event, &mut rng, world.now)
            .unwrap();
        assert_eq!(handled, Handled::DeviceList);
        if i + 1 < lists(&world) {
            let on_one_list = world.encrypt(&mut alice, "bob@example.org", "still");
            let bob2_key = on_one_list
                .recipients
                .iter()
                .find(|r| r.device_id == bob2.manager.device_id())
                .expect("a device on one list stays active");
            assert_eq!(bob2_key.version, Version::Legacy);
            let stanza = with_from(on_one_list.stanza, &alice.full_jid);
            assert_eq!(body(world.receive(&mut bob2, &stanza)), "still");
            assert_eq!(body(world.receive(&mut bob1, &stanza)), "still");
        }
    }
    let mut rng = omemo::os_rng();
    let third = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "one again", &mut rng, world.now)
        .unwrap();
    assert!(
        third
            .skipped
            .iter()
            .any(|s| s.device_id == bob2.manager.device_id() && s.reason == SkipReason::NotListed)
    );
    let third = with_from(third.stanza, &alice.full_jid);
    assert!(matches!(
        world.receive(&mut bob2, &third),
        Err(ManagerError::NotForThisDevice)
    ));
    assert_eq!(body(world.receive(&mut bob1, &third)), "one again");
    // A list notification that drops a device's own id makes it re-add itself.
    let own_drop = device_list_event(world.version(), "bob@example.org", &[&remaining]);
    bob2.manager
        .handle_stanza(&own_drop, &mut rng, world.now)
        .unwrap();
    let request = bob2
        .manager
        .poll_transmit()
        .unwrap()
        .expect("re-publish of the device list");
    assert!(String::from(&request).contains(&bob2.manager.device_id().to_string()));
}

fn prekeys_are_refilled_after_many_new_senders(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut bob = world.device("bob@example.org", "laptop");
    for i in 0..105 {
        let jid = format!("sender{i}@example.org");
        let mut sender = world.device(&jid, "r");
        let stanza = world.send(&mut sender, "bob@example.org", &format!("hello {i}"));
        assert_eq!(body(world.receive(&mut bob, &stanza)), format!("hello {i}"));
        assert_eq!(own_bundle(&world, &bob.manager).pre_keys.len(), 100);
    }
    // The published bundle was refreshed too.
    let bundle = world
        .pep
        .bundle("bob@example.org", world.version(), bob.manager.device_id());
    assert_eq!(bundle.pre_keys, own_bundle(&world, &bob.manager).pre_keys);
}

fn signed_prekey_rotation_keeps_the_old_key_for_messages_in_flight(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut carol = world.device("carol@example.org", "tablet");
    let mut bob = world.device("bob@example.org", "laptop");
    let old_spk = own_bundle(&world, &bob.manager).signed_pre_key_id;
    // Two sessions are built from the current bundle; their messages are in flight.
    let in_flight = world.send(&mut alice, "bob@example.org", "sent before the rotation");
    let very_late = world.send(
        &mut carol,
        "bob@example.org",
        "delivered after the grace period",
    );
    let mut rng = omemo::os_rng();
    world.now += 8 * DAY;
    bob.manager.handle_timeout(&mut rng, world.now).unwrap();
    world.run(&mut bob);
    let new_spk = own_bundle(&world, &bob.manager).signed_pre_key_id;
    assert_ne!(new_spk, old_spk);
    assert_eq!(
        body(world.receive(&mut bob, &in_flight)),
        "sent before the rotation"
    );
    // Once the grace period is over, the old key is gone.
    world.now += 8 * DAY;
    bob.manager.handle_timeout(&mut rng, world.now).unwrap();
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

fn distrusted_devices_get_no_key(versions: Versions) {
    let mut world = World::speaking(versions);
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
    assert_eq!(
        skip_reasons(result),
        vec![SkipReason::Untrusted(Trust::Distrusted)]
    );
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(devices[0].trust, Trust::Distrusted);
    assert_eq!(devices[0].fingerprint, Some(bob.manager.fingerprint()));
}

fn conversation_survives_a_restart_from_the_sqlite_file(versions: Versions) {
    let dir = std::env::temp_dir().join(format!(
        "omemo-manager-test-{}-{versions:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bob.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with(
        "bob@example.org",
        "laptop",
        SqliteStore::open(&path).unwrap(),
        world.config.clone(),
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
        world.config.clone(),
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

fn absurd_device_lists_are_refused(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let ids: Vec<u32> = (1..=10_000).collect();
    for version in versions.iter() {
        let list = common::pep::device_list_element(version, &ids);
        world.pep.nodes.insert(
            (
                "mallory@example.org".to_owned(),
                device_list_node(version).to_owned(),
            ),
            vec![("current".to_owned(), list)],
        );
    }
    let pending = alice
        .manager
        .prepare(&[bare("mallory@example.org")], world.now)
        .unwrap();
    assert_eq!(pending, lists(&world));
    world.run(&mut alice);
    assert!(
        alice
            .manager
            .devices(&bare("mallory@example.org"), world.now)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        alice.manager.poll_transmit().unwrap(),
        None,
        "no bundle fetches for a refused list"
    );
}

fn bundle_with_a_bad_signature_makes_the_device_inactive(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    // Broken in every version it publishes (one version alone is the dual-version
    // tests': the device is reached in the other).
    let bob_id = bob.manager.device_id();
    for version in versions.iter() {
        let mut bundle = world.pep.bundle("bob@example.org", version, bob_id);
        bundle.signed_pre_key_signature[0] ^= 1;
        world
            .pep
            .set_bundle("bob@example.org", version, bob_id, &bundle);
    }
    world.prepare(&mut alice, "bob@example.org");
    let mut rng = omemo::os_rng();
    let result = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "x", &mut rng, world.now);
    assert_eq!(skip_reasons(result), vec![SkipReason::BundleUnavailable]);
    // Bob republishes a good bundle; a day later it is tried again and works.
    world.run(&mut bob);
    bob.manager.connected(world.now).unwrap();
    world.run(&mut bob);
    assert_eq!(
        alice
            .manager
            .prepare(&[bare("bob@example.org")], world.now)
            .unwrap(),
        0
    );
    world.now += DAY;
    assert_eq!(
        alice
            .manager
            .prepare(&[bare("bob@example.org")], world.now)
            .unwrap(),
        1
    );
    world.run(&mut alice);
    let stanza = with_from(
        alice
            .manager
            .encrypt(&[bare("bob@example.org")], "fixed", &mut rng, world.now)
            .unwrap()
            .stanza,
        &alice.full_jid,
    );
    assert_eq!(body(world.receive(&mut bob, &stanza)), "fixed");
}

fn temporary_bundle_fetch_errors_are_retried_and_lost_connections_forgotten(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    alice
        .manager
        .prepare(&[bare("bob@example.org")], world.now)
        .unwrap();
    // The device lists come; the bundle fetch times out at the server.
    for _ in 0..lists(&world) {
        let list = alice.manager.poll_transmit().unwrap().unwrap();
        let answer = world.pep.answer("alice@example.org", &list);
        let handled = alice
            .manager
            .handle_stanza(&answer, &mut rng, world.now)
            .unwrap();
        assert_eq!(handled, Handled::Response);
    }
    let fetch = alice.manager.poll_transmit().unwrap().unwrap();
    let timeout = common::pep::error(
        fetch.attr("id").unwrap(),
        "bob@example.org",
        "remote-server-timeout",
    );
    assert!(
        alice
            .manager
            .handle_stanza(&timeout, &mut rng, world.now)
            .unwrap()
            == Handled::Response
    );
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert!(devices[0].active, "a timeout does not disable the device");
    // The next prepare tries again; the connection drops before the answer.
    assert_eq!(
        alice
            .manager
            .prepare(&[bare("bob@example.org")], world.now)
            .unwrap(),
        1
    );
    alice.manager.connection_lost();
    assert_eq!(alice.manager.pending_requests(), 0);
    assert!(alice.manager.poll_transmit().unwrap().is_none());
    // An answer to a forgotten request is not ours any more.
    assert!(
        alice
            .manager
            .handle_stanza(&timeout, &mut rng, world.now)
            .unwrap()
            != Handled::Response
    );
    world.send(&mut alice, "bob@example.org", "works after reconnecting");
    drop(bob);
}

fn refused_publish_options_lead_to_node_configuration_and_a_new_publish(versions: Versions) {
    let mut world = World::speaking(versions);
    world.pep.refuse_publish_options = true;
    let alice = world.device("alice@example.org", "phone");
    let id = alice.manager.device_id();
    for version in versions.iter() {
        let list_node = device_list_node(version).to_owned();
        for node in [list_node.clone(), bundle_item(version, id).0] {
            let key = ("alice@example.org".to_owned(), node.clone());
            assert!(world.pep.configured.contains(&key), "{node}");
            assert!(world.pep.nodes.contains_key(&key), "{node}");
        }
        let list = &world.pep.nodes[&("alice@example.org".to_owned(), list_node)][0].1;
        let ids: Vec<u32> = match version {
            Version::Legacy => omemo::stanza::legacy::parse_device_list(list, 10).unwrap(),
            Version::Omemo2 => omemo::stanza::omemo2::parse_device_list(list, 10)
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect(),
        };
        assert_eq!(ids, vec![id]);
    }
}

fn device_lists_with_several_items_merge_and_only_their_owner_sends_them(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut rng = omemo::os_rng();
    let mut alice = world.device("alice@example.org", "phone");
    let now = world.now;
    // Two items (clients that did not use 'current'), from the owner's bare JID written
    // in another case: they belong to the normalised JID, as messages from it do.
    assert!(
        alice
            .manager
            .handle_stanza(
                &device_list_event(world.version(), "Bob@EXAMPLE.org", &[&[1, 2], &[3]]),
                &mut rng,
                now
            )
            .unwrap()
            == Handled::DeviceList
    );
    let ids: Vec<u32> = alice
        .manager
        .devices(&bare("bob@example.org"), now)
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // PEP notifications come from the owner's bare JID; one from a full JID is a message
    // anyone could send (200 made-up devices per message): dropped, nothing stored.
    let forged = device_list_event(world.version(), "mallory@example.org/x", &[&[4, 5, 6]]);
    assert!(matches!(
        alice.manager.handle_stanza(&forged, &mut rng, now).unwrap(),
        Handled::Dropped(_)
    ));
    assert!(
        alice
            .manager
            .devices(&bare("mallory@example.org"), now)
            .unwrap()
            .is_empty()
    );
    // An event without a sender is attributed to nobody.
    let mut anonymous = device_list_event(world.version(), "x@example.org", &[&[9]]);
    anonymous.attrs_mut().clear();
    assert_eq!(
        alice
            .manager
            .handle_stanza(&anonymous, &mut rng, now)
            .unwrap(),
        Handled::Unhandled
    );
    assert!(
        alice
            .manager
            .devices(&bare("x@example.org"), now)
            .unwrap()
            .is_empty()
    );
    // Events of other nodes are not ours.
    let other = Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), "bob@example.org")
        .append(
            Element::builder("event", PUBSUB_EVENT)
                .append(
                    Element::builder("items", PUBSUB_EVENT)
                        .attr("node".try_into().unwrap(), "urn:xmpp:avatar:metadata")
                        .build(),
                )
                .build(),
        )
        .build();
    assert_eq!(
        alice.manager.handle_stanza(&other, &mut rng, now).unwrap(),
        Handled::Unhandled
    );
}

fn unsolicited_empty_key_exchange_is_consumed_silently(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut gajim = world.device("gajim@example.org", "pc");
    let mut bob = world.device("bob@example.org", "laptop");
    // Gajim builds a session as soon as it sees a device and sends an empty key exchange.
    world.prepare(&mut gajim, "bob@example.org");
    let mut rng = omemo::os_rng();
    gajim
        .manager
        .queue_empty_message(&bare("bob@example.org"), bob.manager.device_id(), &mut rng)
        .unwrap();
    world.run(&mut gajim);
    let empty = with_from(gajim.next_message().unwrap(), &gajim.full_jid);
    let flag = match world.version() {
        Version::Legacy => "prekey='true'",
        Version::Omemo2 => "kex='true'",
    };
    assert!(
        String::from(&empty).replace('"', "'").contains(flag),
        "an empty key exchange"
    );
    let received = world.receive(&mut bob, &empty).unwrap();
    assert_eq!(received.body, None);
    assert!(
        bob.next_message().is_none(),
        "an empty message is never answered"
    );
    // The session it built carries the next real message.
    let stanza = world.send(&mut gajim, "bob@example.org", "now with text");
    assert_eq!(body(world.receive(&mut bob, &stanza)), "now with text");
    // A session repair for a device without a session is refused with a clear error.
    assert_eq!(
        bob.manager
            .queue_empty_message(&bare("nobody@example.org"), 5, &mut rng),
        Err(ManagerError::NoSession)
    );
}

fn heartbeat_after_many_messages_without_reply(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let first = world.send(&mut alice, "bob@example.org", "m0");
    world.receive(&mut bob, &first).unwrap();
    let completion = with_from(bob.next_message().unwrap(), &bob.full_jid);
    world.receive(&mut alice, &completion).unwrap();
    for i in 1..=53 {
        let stanza = world.send(&mut alice, "bob@example.org", &format!("m{i}"));
        world.receive(&mut bob, &stanza).unwrap();
        assert!(bob.next_message().is_none(), "no heartbeat after {i}");
    }
    let stanza = world.send(&mut alice, "bob@example.org", "m54");
    world.receive(&mut bob, &stanza).unwrap();
    let heartbeat = with_from(bob.next_message().expect("heartbeat"), &bob.full_jid);
    // One heartbeat per one-sided chain: while it is under way, more messages on the
    // same chain get none (python-omemo sends one for each).
    let mut late = Vec::new();
    for i in 55..=60 {
        let stanza = world.send(&mut alice, "bob@example.org", &format!("m{i}"));
        world.receive(&mut bob, &stanza).unwrap();
        late.extend(bob.next_message());
    }
    assert!(late.is_empty(), "{} more heartbeats", late.len());
    assert_eq!(world.receive(&mut alice, &heartbeat).unwrap().body, None);
    // After the heartbeat Alice ratchets: Bob's count starts again.
    let stanza = world.send(&mut alice, "bob@example.org", "m61");
    world.receive(&mut bob, &stanza).unwrap();
    assert!(bob.next_message().is_none());
}

fn devices_silent_for_too_long_are_not_encrypted_to(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let reply_to = world.send(&mut bob, "alice@example.org", "hello");
    world.receive(&mut alice, &reply_to).unwrap();
    world.now += 91 * DAY;
    let mut rng = omemo::os_rng();
    let result = alice.manager.encrypt(
        &[bare("bob@example.org")],
        "anyone there?",
        &mut rng,
        world.now,
    );
    assert_eq!(skip_reasons(result), vec![SkipReason::Silent]);
}

fn changed_identity_under_a_known_device_id_is_refused(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let bob_id = bob.manager.device_id();
    let first = world.send(&mut bob, "alice@example.org", "hi");
    world.receive(&mut alice, &first).unwrap();
    // Another identity claims Bob's device id (a reinstall reusing the id, or an attack).
    let mut rng = omemo::os_rng();
    let identity = omemo::hazmat::IdentityKeyPair::generate(&mut rng);
    let mut store = MemoryStore::new();
    store
        .commit(omemo::Batch {
            ops: vec![omemo::Op::PutAccount(omemo::AccountRecord {
                jid: "bob@example.org".into(),
                device_id: bob_id,
                identity_secret: identity.secret_key().to_bytes(),
                next_pre_key_id: 1,
            })],
        })
        .unwrap();
    let signed = omemo::hazmat::SignedPreKey::generate(Version::Legacy, &mut rng, &identity, 1);
    store
        .commit(omemo::Batch {
            ops: vec![omemo::Op::PutSignedPreKey(omemo::SignedPreKeyRecord {
                version: Version::Legacy,
                id: 1,
                secret: signed.key_pair().secret_key().to_bytes(),
                signature: *signed.signature(),
                created_at: world.now,
            })],
        })
        .unwrap();
    let mut impostor = world.device_with("bob@example.org", "other", store, world.config.clone());
    assert_eq!(impostor.manager.device_id(), bob_id);
    // The impostor has no session with Alice and must build one from her bundle.
    let stanza = world.send(&mut impostor, "alice@example.org", "trust me");
    assert_eq!(
        world.receive(&mut alice, &stanza).unwrap_err(),
        ManagerError::IdentityChanged {
            jid: "bob@example.org".into(),
            device_id: bob_id
        }
    );
}

fn manual_trust_policy_and_blind_trust_until_the_first_decision(versions: Versions) {
    let mut world = World::speaking(versions);
    let manual = ManagerConfig {
        trust_policy: omemo::TrustPolicy::Manual,
        ..world.config.clone()
    };
    let mut alice = world.device_with("alice@example.org", "phone", MemoryStore::new(), manual);
    let mut bob = world.device("bob@example.org", "laptop");
    world.prepare(&mut alice, "bob@example.org");
    let mut rng = omemo::os_rng();
    let result = alice
        .manager
        .encrypt(&[bare("bob@example.org")], "x", &mut rng, world.now);
    assert_eq!(
        skip_reasons(result),
        vec![SkipReason::Untrusted(Trust::Undecided)]
    );
    alice
        .manager
        .set_trust(
            &bare("bob@example.org"),
            bob.manager.device_id(),
            Trust::Verified,
        )
        .unwrap();
    let stanza = with_from(
        alice
            .manager
            .encrypt(&[bare("bob@example.org")], "verified", &mut rng, world.now)
            .unwrap()
            .stanza,
        &alice.full_jid,
    );
    assert_eq!(body(world.receive(&mut bob, &stanza)), "verified");

    // Blind trust: Carol trusts Bob's first device blindly; after she verifies it, Bob's
    // next new device waits for a decision.
    let mut carol = world.device("carol@example.org", "tablet");
    world.prepare(&mut carol, "bob@example.org");
    let devices = carol
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(devices[0].trust, Trust::Blind);
    carol
        .manager
        .set_trust(
            &bare("bob@example.org"),
            bob.manager.device_id(),
            Trust::Verified,
        )
        .unwrap();
    let bob2 = world.device("bob@example.org", "second");
    world.notify(&mut carol);
    world.prepare(&mut carol, "bob@example.org");
    let devices = carol
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    let second = devices
        .iter()
        .find(|d| d.device_id == bob2.manager.device_id())
        .unwrap();
    assert_eq!(second.trust, Trust::Undecided);
    assert!(matches!(
        carol
            .manager
            .set_trust(&bare("bob@example.org"), 12345, Trust::Verified),
        Err(ManagerError::UnknownDevice {
            device_id: 12345,
            ..
        })
    ));
}

fn a_verification_uri_marks_its_devices_and_a_wrong_fingerprint_changes_nothing(
    versions: Versions,
) {
    let mut world = World::speaking(versions);
    let mut bob = world.device("bob@example.org", "laptop");
    let bob_phone = world.device("bob@example.org", "phone");
    let mut carol = world.device("carol@example.org", "tablet");
    world.notify(&mut bob);
    world.prepare(&mut carol, "bob@example.org");
    let now = world.now;
    let trust_of = |carol: &mut Device<MemoryStore>, id: u32| {
        let devices = carol
            .manager
            .devices(&bare("bob@example.org"), now)
            .unwrap();
        devices.iter().find(|d| d.device_id == id).unwrap().trust
    };
    let laptop = bob.manager.device_id();
    let phone = bob_phone.manager.device_id();
    assert_eq!(trust_of(&mut carol, laptop), Trust::Blind);

    // The URI Bob's laptop shows, read from its text as a scanner would.
    let shown = VerificationUri::new(
        bare("bob@example.org"),
        vec![(laptop, bob.manager.fingerprint())],
    );
    let scanned: VerificationUri = shown.to_string().parse().unwrap();
    // A tampered fingerprint for one of two devices: refused, nothing changes.
    let mut wrong = *bob_phone.manager.fingerprint().as_bytes();
    wrong[31] ^= 1;
    let tampered = VerificationUri::new(
        bare("bob@example.org"),
        vec![
            (laptop, bob.manager.fingerprint()),
            (phone, Fingerprint::from_bytes(wrong)),
        ],
    );
    assert_eq!(
        carol.manager.verify_uri(&tampered),
        Err(ManagerError::FingerprintMismatch {
            jid: "bob@example.org".to_owned(),
            device_id: phone
        })
    );
    assert_eq!(trust_of(&mut carol, laptop), Trust::Blind);
    assert_eq!(trust_of(&mut carol, phone), Trust::Blind);
    let unknown = VerificationUri::new(
        bare("bob@example.org"),
        vec![
            (laptop, bob.manager.fingerprint()),
            (4242, bob.manager.fingerprint()),
        ],
    );
    assert!(matches!(
        carol.manager.verify_uri(&unknown),
        Err(ManagerError::UnknownDevice {
            device_id: 4242,
            ..
        })
    ));
    assert_eq!(trust_of(&mut carol, laptop), Trust::Blind);

    assert_eq!(carol.manager.verify_uri(&scanned), Ok(vec![laptop]));
    assert_eq!(trust_of(&mut carol, laptop), Trust::Verified);
    assert_eq!(trust_of(&mut carol, phone), Trust::Blind);
    // Blind trust until verified: Bob's next new device waits for a decision.
    let bob_new = world.device("bob@example.org", "new");
    world.notify(&mut carol);
    world.prepare(&mut carol, "bob@example.org");
    assert_eq!(
        trust_of(&mut carol, bob_new.manager.device_id()),
        Trust::Undecided
    );
    // A URI naming this device checks its fingerprint and marks the others.
    world.prepare(&mut bob, "bob@example.org");
    let own = VerificationUri::new(
        bare("bob@example.org"),
        vec![
            (laptop, bob.manager.fingerprint()),
            (phone, bob_phone.manager.fingerprint()),
        ],
    );
    assert_eq!(bob.manager.verify_uri(&own), Ok(vec![phone]));
}

fn decrypt_commits_once_and_only_after_authentication(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let flaky = FlakyStore::default();
    let mut bob = world.device_with("bob@example.org", "laptop", flaky, world.config.clone());
    let stanza = world.send(&mut alice, "bob@example.org", "first contact");
    // A tampered copy: nothing is written.
    let mut tampered = stanza.clone();
    let namespace = world.version().namespace();
    let encrypted = tampered.get_child_mut("encrypted", namespace).unwrap();
    let payload = encrypted.get_child_mut("payload", namespace).unwrap();
    let text = payload.text();
    let first = if text.starts_with('A') { "B" } else { "A" };
    let flipped = format!("{first}{}", &text[1..]);
    let _ = payload.take_nodes();
    payload.append_text(flipped);
    let before = bob.manager.store().commits;
    assert!(world.receive(&mut bob, &tampered).is_err());
    assert_eq!(
        bob.manager.store().commits,
        before,
        "nothing written for a failed message"
    );
    // A failing store: the decrypt fails, and nothing changed in memory either.
    bob.manager = {
        let mut store = std::mem::replace(&mut bob.manager, dummy_manager(&mut world))
            .into_store()
            .unwrap();
        store.fail = true;
        Manager::open(
            store,
            &bare("bob@example.org"),
            world.config.clone(),
            &mut omemo::os_rng(),
            world.now,
        )
        .unwrap()
    };
    let pre_keys = own_bundle(&world, &bob.manager).pre_keys;
    assert!(matches!(
        world.receive(&mut bob, &stanza),
        Err(ManagerError::Store(_))
    ));
    assert_eq!(
        own_bundle(&world, &bob.manager).pre_keys,
        pre_keys,
        "the prekey is still there"
    );
    // Once the store works again, the same message decrypts, in exactly one commit.
    let mut store = std::mem::replace(&mut bob.manager, dummy_manager(&mut world))
        .into_store()
        .unwrap();
    store.fail = false;
    bob.manager = Manager::open(
        store,
        &bare("bob@example.org"),
        world.config.clone(),
        &mut omemo::os_rng(),
        world.now,
    )
    .unwrap();
    while bob.manager.poll_transmit().unwrap().is_some() {}
    let before = bob.manager.store().commits;
    let mut rng = omemo::os_rng();
    assert_eq!(
        bob.manager
            .decrypt(&stanza, &mut rng, world.now)
            .unwrap()
            .body
            .as_deref(),
        Some("first contact")
    );
    // One commit for the decrypt (session, prekey and device together), one for the
    // session completion message it queued.
    assert_eq!(bob.manager.store().commits, before + 2);
}

fn dummy_manager(world: &mut World) -> Manager<FlakyStore> {
    let store = FlakyStore::default();
    Manager::open(
        store,
        &bare("dummy@example.org"),
        world.config.clone(),
        &mut omemo::os_rng(),
        world.now,
    )
    .unwrap()
}

fn a_burst_of_new_senders_queues_one_bundle_publication(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    let (version, bob_id) = (world.version(), bob.manager.device_id());
    let (bundle_node, bundle_item_id) = bundle_item(version, bob_id);
    for i in 0..5 {
        let mut sender = world.device(&format!("s{i}@example.org"), "r");
        let stanza = world.send(&mut sender, "bob@example.org", &format!("hi {i}"));
        bob.manager.decrypt(&stanza, &mut rng, world.now).unwrap();
        // Bob's own publications stay queued; the server shows his current bundle so that
        // the next sender does not pick a prekey that is already used.
        let current = own_bundle(&world, &bob.manager);
        world
            .pep
            .set_bundle("bob@example.org", version, bob_id, &current);
    }
    let requests: Vec<_> = std::iter::from_fn(|| bob.manager.poll_transmit().unwrap()).collect();
    let publications = requests
        .iter()
        .filter(|r| {
            let xml = String::from(*r).replace('"', "'");
            xml.contains("<publish ")
                && xml.contains(&format!("node='{bundle_node}'"))
                && xml.contains(&format!("id='{bundle_item_id}'"))
        })
        .count();
    assert_eq!(publications, 1, "one up-to-date bundle publication");
    for request in requests.iter().filter(|r| r.name() == "iq") {
        let answer = world.pep.answer("bob@example.org", request);
        let handled = bob
            .manager
            .handle_stanza(&answer, &mut rng, world.now)
            .unwrap();
        assert_eq!(handled, Handled::Response);
    }
    world.run(&mut bob);
    assert_eq!(
        world
            .pep
            .bundle("bob@example.org", version, bob_id)
            .pre_keys,
        own_bundle(&world, &bob.manager).pre_keys
    );
}

fn iq_answers_from_anyone_but_the_asked_entity_are_ignored(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    alice
        .manager
        .prepare(&[bare("bob@example.org")], world.now)
        .unwrap();
    let request = alice.manager.poll_transmit().unwrap().unwrap();
    // Mallory answers Alice's fetch of Bob's device list with a list of her choice.
    let mut forged = world.pep.answer("bob@example.org", &request);
    forged.set_attr(
        minidom::rxml::Namespace::NONE,
        "from".try_into().unwrap(),
        "mallory@example.org/x".to_owned(),
    );
    assert!(
        alice
            .manager
            .handle_stanza(&forged, &mut rng, world.now)
            .unwrap()
            != Handled::Response
    );
    assert_eq!(
        alice.manager.pending_requests(),
        lists(&world),
        "the request still waits for Bob's server"
    );
    // A stanza of the wrong type with the right id and sender is not an answer either.
    let mut wrong_type = world.pep.answer("bob@example.org", &request);
    wrong_type.set_attr(
        minidom::rxml::Namespace::NONE,
        "type".try_into().unwrap(),
        "set".to_owned(),
    );
    assert!(
        alice
            .manager
            .handle_stanza(&wrong_type, &mut rng, world.now)
            .unwrap()
            != Handled::Response
    );
    // The real answer (from Bob's bare JID) is taken.
    let genuine = world.pep.answer("bob@example.org", &request);
    assert!(
        alice
            .manager
            .handle_stanza(&genuine, &mut rng, world.now)
            .unwrap()
            == Handled::Response
    );
    world.run(&mut alice);
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(
        devices.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        vec![bob.manager.device_id()]
    );
}

fn trust_needs_a_known_identity_and_device_id_zero_is_ignored(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut rng = omemo::os_rng();
    let mut alice = world.device("alice@example.org", "phone");
    let now = world.now;
    assert!(
        alice
            .manager
            .handle_stanza(
                &device_list_event(world.version(), "bob@example.org", &[&[0, 7]]),
                &mut rng,
                now,
            )
            .unwrap()
            == Handled::DeviceList
    );
    let ids: Vec<u32> = alice
        .manager
        .devices(&bare("bob@example.org"), now)
        .unwrap()
        .iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, vec![7], "device id 0 is not a device");
    assert_eq!(
        alice
            .manager
            .set_trust(&bare("bob@example.org"), 7, Trust::Verified),
        Err(ManagerError::NoIdentityKey {
            jid: "bob@example.org".into(),
            device_id: 7
        })
    );
}

fn requests_without_an_answer_are_forgotten_and_asked_again(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let _bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    assert_eq!(
        alice
            .manager
            .prepare(&[bare("bob@example.org")], world.now)
            .unwrap(),
        lists(&world)
    );
    let lost = alice.manager.poll_transmit().unwrap().unwrap();
    while alice.manager.poll_transmit().unwrap().is_some() {}
    // The answer never comes; asking again is suppressed while the request is pending.
    assert_eq!(
        alice
            .manager
            .prepare(&[bare("bob@example.org")], world.now)
            .unwrap(),
        lists(&world)
    );
    assert!(alice.manager.poll_transmit().unwrap().is_none());
    world.now += 30;
    alice.manager.handle_timeout(&mut rng, world.now).unwrap();
    assert_eq!(
        alice.manager.pending_requests(),
        lists(&world),
        "still within the timeout"
    );
    world.now += 31;
    alice.manager.handle_timeout(&mut rng, world.now).unwrap();
    assert_eq!(alice.manager.pending_requests(), 0);
    // A late answer to the forgotten request is not taken; a new request goes out.
    let late = world.pep.answer("alice@example.org", &lost);
    assert!(
        alice
            .manager
            .handle_stanza(&late, &mut rng, world.now)
            .unwrap()
            != Handled::Response
    );
    let stanza = world.send(&mut alice, "bob@example.org", "asked again");
    assert!(String::from(&stanza).contains("encrypted"));
}

fn a_bad_own_device_list_is_never_replaced_by_this_device_alone(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let _desktop = world.device("alice@example.org", "desktop");
    let mut rng = omemo::os_rng();
    let node = device_list_node(world.version());
    let event_with = |payload: Element| {
        Element::builder("message", "jabber:client")
            .attr("from".try_into().unwrap(), "alice@example.org")
            .append(
                Element::builder("event", PUBSUB_EVENT)
                    .append(
                        Element::builder("items", PUBSUB_EVENT)
                            .attr("node".try_into().unwrap(), node)
                            .append(
                                Element::builder("item", PUBSUB_EVENT)
                                    .attr("id".try_into().unwrap(), "current")
                                    .append(payload)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    // A list that does not parse, and one over the cap: neither is a list without the
    // other devices, so neither is "fixed" by publishing this device alone.
    let garbage = Element::builder("list", "urn:example:not-omemo").build();
    let ids: Vec<u32> = (1..=10_000).collect();
    let huge = common::pep::device_list_element(world.version(), &ids);
    for payload in [garbage, huge] {
        let handled = alice
            .manager
            .handle_stanza(&event_with(payload), &mut rng, world.now)
            .unwrap();
        assert_eq!(handled, Handled::DeviceList);
        assert!(
            alice.manager.poll_transmit().unwrap().is_none(),
            "the own list was republished from a bad one"
        );
    }
    // An empty list (a reset by another client) is taken: this device puts itself back.
    let empty = common::pep::device_list_element(world.version(), &[]);
    alice
        .manager
        .handle_stanza(&event_with(empty), &mut rng, world.now)
        .unwrap();
    let republished = alice
        .manager
        .poll_transmit()
        .unwrap()
        .expect("republication");
    assert!(String::from(&republished).contains(&alice.manager.device_id().to_string()));
}

fn an_unreadable_session_skips_its_device_and_not_the_message(versions: Versions) {
    let mut world = World::speaking(versions);
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob1 = world.device("bob@example.org", "one");
    let bob2 = world.device("bob@example.org", "two");
    let first = world.send(&mut alice, "bob@example.org", "both");
    assert_eq!(body(world.receive(&mut bob1, &first)), "both");
    // Bob's second session in Alice's store becomes unreadable (corrupt, or written by a
    // newer release).
    let mut store = alice.manager.into_store().unwrap();
    store
        .commit(omemo::Batch {
            ops: vec![omemo::Op::PutSession {
                jid: "bob@example.org".into(),
                device_id: bob2.manager.device_id(),
                version: world.version(),
                state: vec![0xff; 40].into(),
            }],
        })
        .unwrap();
    let config = world.config.clone();
    let mut alice = world.device_with("alice@example.org", "phone", store, config);
    let sent = world.encrypt(&mut alice, "bob@example.org", "one of you");
    assert_eq!(
        sent.recipients
            .iter()
            .map(|r| r.device_id)
            .collect::<Vec<_>>(),
        vec![bob1.manager.device_id()]
    );
    assert!(
        sent.skipped
            .iter()
            .any(|s| s.device_id == bob2.manager.device_id()
                && s.reason == SkipReason::SessionUnreadable)
    );
    let stanza = with_from(sent.stanza, &alice.full_jid);
    assert_eq!(body(world.receive(&mut bob1, &stanza)), "one of you");
    // The devices are still listed for the user to see.
    let devices = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(devices.len(), 2);
}

#[test]
fn a_trust_decision_made_by_another_process_holds_in_a_running_manager() {
    let dir = std::env::temp_dir().join(format!("omemo-trust-elsewhere-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bot.sqlite");
    let _ = std::fs::remove_file(&path);
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let config = world.config.clone();
    let mut bot = world.device_with(
        "bot@example.org",
        "run",
        SqliteStore::open(&path).unwrap(),
        config,
    );
    let first = world.send(&mut alice, "bot@example.org", "hello");
    assert_eq!(world.receive(&mut bot, &first).unwrap().trust, Trust::Blind);
    // While the bot runs, the command-line tool distrusts Alice's device in the same
    // file (its own connection, its own manager).
    let alice_id = alice.manager.device_id();
    // The running bot holds the store's lock: the tool opens it alongside.
    assert!(matches!(
        SqliteStore::open(&path),
        Err(omemo::StoreError::InUse { .. })
    ));
    let mut cli = Manager::open(
        SqliteStore::open_alongside(&path).unwrap(),
        &bare("bot@example.org"),
        ManagerConfig::default(),
        &mut omemo::os_rng(),
        world.now,
    )
    .unwrap();
    cli.set_trust(&bare("alice@example.org"), alice_id, Trust::Distrusted)
        .unwrap();
    drop(cli);
    // The running bot sees it at the next message, and does not write its cached
    // record back over it.
    let second = world.send(&mut alice, "bot@example.org", "still there?");
    assert_eq!(
        world.receive(&mut bot, &second).unwrap().trust,
        Trust::Distrusted
    );
    let mut rng = omemo::os_rng();
    assert_eq!(
        skip_reasons(bot.manager.encrypt(
            &[bare("alice@example.org")],
            "echo",
            &mut rng,
            world.now
        )),
        vec![SkipReason::Untrusted(Trust::Distrusted)]
    );
    let stored = SqliteStore::open_alongside(&path)
        .unwrap()
        .load_devices("alice@example.org")
        .unwrap();
    assert_eq!(stored[0].trust, Trust::Distrusted);
    drop(bot);
    std::fs::remove_dir_all(&dir).unwrap();
}
