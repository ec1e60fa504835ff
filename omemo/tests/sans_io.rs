//! The sans-I/O surface: `handle_stanza` for every incoming stanza, `send` that waits
//! for what it needs until a deadline, events, timeouts and reconnection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::pep::{Device, World, bare, device_list_event, with_from};
use common::stores::FlakyStore;
use minidom::Element;
use omemo::stanza::omemo2;
use omemo::{
    Decrypted, Event, Handled, Manager, ManagerConfig, ManagerError, MemoryStore, SkipReason,
    Store, Trust, TrustPolicy, Version, Via,
};

/// Sends `device`'s stanzas: IQ requests are answered by the PEP service unless `hold`
/// keeps them (they are returned, unanswered); messages go to `device.sent`.
fn pump(
    world: &mut World,
    device: &mut Device<MemoryStore>,
    hold: impl Fn(&Element) -> bool,
) -> Vec<Element> {
    let mut rng = omemo::os_rng();
    let jid = device.manager.jid().to_owned();
    let mut held = Vec::new();
    while let Some(stanza) = device.manager.poll_transmit().unwrap() {
        if stanza.name() != "iq" {
            device.sent.push_back(stanza);
        } else if hold(&stanza) {
            held.push(stanza);
        } else {
            let answer = world.pep.answer(&jid, &stanza);
            let handled = device
                .manager
                .handle_stanza(&answer, &mut rng, world.now)
                .unwrap();
            assert_eq!(handled, Handled::Response);
        }
    }
    held
}

/// What `device` decrypted from `stanza`; fails the test when it was no message.
fn decrypted<S: Store>(device: &mut Device<S>, stanza: &Element, now: u64) -> (Decrypted, Via) {
    let mut rng = omemo::os_rng();
    match device.manager.handle_stanza(stanza, &mut rng, now).unwrap() {
        Handled::Message { message, via } => (message, via),
        other => panic!("not decrypted: {other:?}"),
    }
}

fn events<S: Store>(device: &mut Device<S>) -> Vec<Event> {
    std::iter::from_fn(|| device.manager.poll_event()).collect()
}

/// Whether `iq` fetches the OMEMO 2 bundle of `device_id`.
fn fetches_bundle_of(iq: &Element, device_id: u32) -> bool {
    let xml = String::from(iq).replace('"', "'");
    xml.contains(omemo2::BUNDLES_NODE) && xml.contains(&format!("id='{device_id}'"))
}

#[test]
fn send_waits_for_a_late_bundle_and_gives_up_on_one_that_never_comes() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let bob2 = world.device("bob@example.org", "tablet");
    world.notify(&mut bob);
    events(&mut alice);
    let (late, never) = (bob.manager.device_id(), bob2.manager.device_id());
    let mut rng = omemo::os_rng();
    let id = alice
        .manager
        .send(&[bare("bob@example.org")], "hello", &mut rng, world.now)
        .unwrap();
    // The lists come at once; both bundles are late.
    let held = pump(&mut world, &mut alice, |iq| {
        fetches_bundle_of(iq, late) || fetches_bundle_of(iq, never)
    });
    assert_eq!(held.len(), 2);
    assert!(alice.sent.is_empty(), "the message waits for the bundles");
    assert_eq!(alice.manager.queued_messages(), 1);
    let deadline = world.now + ManagerConfig::default().send_timeout_secs;
    assert_eq!(alice.manager.poll_timeout(), Some(deadline));
    // One bundle arrives late: still waiting for the other.
    world.now += 3;
    let late_fetch = held.iter().find(|iq| fetches_bundle_of(iq, late)).unwrap();
    let answer = world.pep.answer("alice@example.org", late_fetch);
    alice
        .manager
        .handle_stanza(&answer, &mut rng, world.now)
        .unwrap();
    assert!(alice.manager.poll_transmit().unwrap().is_none());
    assert!(
        events(&mut alice)
            .iter()
            .all(|e| !matches!(e, Event::Sent { .. }))
    );
    // The deadline passes: the message goes to the device whose bundle came, and the
    // event names the other.
    world.now = deadline;
    alice.manager.handle_timeout(&mut rng, world.now).unwrap();
    let message = alice.manager.poll_transmit().unwrap().expect("the message");
    let sent = events(&mut alice);
    let Some(Event::Sent {
        id: sent_id,
        recipients,
        skipped,
    }) = sent.iter().find(|e| matches!(e, Event::Sent { .. }))
    else {
        panic!("no Sent event in {sent:?}")
    };
    assert_eq!(*sent_id, id);
    assert_eq!(
        recipients.iter().map(|r| r.device_id).collect::<Vec<_>>(),
        vec![late]
    );
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].device_id, skipped[0].reason),
        (never, SkipReason::NoSession)
    );
    let message = with_from(message, &alice.full_jid);
    let (message, via) = decrypted(&mut bob, &message, world.now);
    assert_eq!((message.body.as_deref(), via), (Some("hello"), Via::Direct));
    // A contact none of whose bundles ever comes: the message is not sent, and the
    // event says which devices and why.
    let mut carol = world.device("carol@example.org", "pc");
    let carol_id = carol.manager.device_id();
    let id = alice
        .manager
        .send(&[bare("carol@example.org")], "anyone?", &mut rng, world.now)
        .unwrap();
    let held = pump(&mut world, &mut alice, |iq| fetches_bundle_of(iq, carol_id));
    assert_eq!(held.len(), 1);
    world.now += 60;
    alice.manager.handle_timeout(&mut rng, world.now).unwrap();
    let not_sent = events(&mut alice);
    let expected = ManagerError::NoRecipientDevices {
        skipped: vec![omemo::SkippedDevice {
            jid: "carol@example.org".into(),
            device_id: carol_id,
            reason: SkipReason::NoSession,
        }],
    };
    assert!(
        not_sent.contains(&Event::NotSent {
            id,
            error: expected
        }),
        "{not_sent:?}"
    );
    assert_eq!(alice.manager.queued_messages(), 0);
    drop(carol.manager.poll_transmit().unwrap());
    assert!(matches!(
        alice.manager.send(&[], "to nobody", &mut rng, world.now),
        Err(ManagerError::NoRecipients)
    ));
}

#[test]
fn messages_to_known_devices_go_out_at_once_and_in_order() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let bob = world.device("bob@example.org", "laptop");
    world.prepare(&mut alice, "bob@example.org");
    let mut rng = omemo::os_rng();
    let first = alice
        .manager
        .send(&[bare("bob@example.org")], "one", &mut rng, world.now)
        .unwrap();
    let second = alice
        .manager
        .send(&[bare("bob@example.org")], "two", &mut rng, world.now)
        .unwrap();
    assert!(first < second);
    // Each message's Sent follows when its stanza is handed out.
    assert!(
        !events(&mut alice)
            .iter()
            .any(|e| matches!(e, Event::Sent { .. }))
    );
    let stanzas: Vec<_> = std::iter::from_fn(|| alice.manager.poll_transmit().unwrap()).collect();
    assert_eq!(stanzas.len(), 2);
    let ids: Vec<_> = events(&mut alice)
        .into_iter()
        .filter_map(|e| match e {
            Event::Sent { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![first, second]);
    assert_eq!(alice.manager.queued_messages(), 0);
    drop(bob);
}

#[test]
fn carbons_of_both_directions_decrypt_and_forged_ones_are_dropped() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut alice2 = world.device("alice@example.org", "desktop");
    let mut bob = world.device("bob@example.org", "laptop");
    world.notify(&mut alice);
    world.notify(&mut bob);
    let mut rng = omemo::os_rng();
    let to_alice = world.send(&mut bob, "alice@example.org", "for both of you");
    let carbon = |kind: &str, from: &str, inner: &Element| {
        Element::builder("message", "jabber:client")
            .attr("from".try_into().unwrap(), from)
            .attr("to".try_into().unwrap(), "alice@example.org/desktop")
            .append(
                Element::builder(kind, "urn:xmpp:carbons:2")
                    .append(
                        Element::builder("forwarded", "urn:xmpp:forward:0")
                            .append(inner.clone())
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    let received = carbon("received", "alice@example.org", &to_alice);
    let (message, via) = decrypted(&mut alice2, &received, world.now);
    assert_eq!(via, Via::CarbonReceived);
    assert_eq!(message.body.as_deref(), Some("for both of you"));
    assert!(message.affix_violations.is_empty());
    // The desktop republishes its bundle without the prekey Bob used before the phone
    // fetches it (two first contacts on one prekey are the healing issue's).
    world.run(&mut alice2);
    let from_alice = world.send(&mut alice, "bob@example.org", "from the phone");
    // A copy of what the phone sent: from Alice to Bob, and its envelope says so.
    let sent = carbon("sent", "alice@example.org", &from_alice);
    let (message, via) = decrypted(&mut alice2, &sent, world.now);
    assert_eq!(via, Via::CarbonSent);
    assert_eq!(message.sender, "alice@example.org");
    assert!(message.affix_violations.is_empty(), "{message:?}");
    // Mallory wraps Bob's message in a carbon of her own: dropped, nothing decrypted.
    let forged = carbon("received", "mallory@example.org", &to_alice);
    assert!(matches!(
        alice2
            .manager
            .handle_stanza(&forged, &mut rng, world.now)
            .unwrap(),
        Handled::Dropped(_)
    ));
    // The same message again (live and as a copy) is consumed silently; a plain
    // message, presence and foreign IQs are the application's.
    assert_eq!(
        alice2
            .manager
            .handle_stanza(
                &with_from(to_alice.clone(), "bob@example.org/laptop"),
                &mut rng,
                world.now
            )
            .unwrap(),
        Handled::Consumed
    );
    for other in [
        "<message xmlns='jabber:client' from='bob@example.org/x' type='chat'><body>hi</body></message>",
        "<presence xmlns='jabber:client' from='bob@example.org/x'/>",
        "<iq xmlns='jabber:client' type='get' id='p1' from='bob@example.org/x'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq xmlns='jabber:client' type='result' id='not-ours'/>",
    ] {
        let stanza: Element = other.parse().unwrap();
        assert_eq!(
            alice2
                .manager
                .handle_stanza(&stanza, &mut rng, world.now)
                .unwrap(),
            Handled::Unhandled,
            "{other}"
        );
    }
    // Its own message coming back is consumed, not a failure.
    assert_eq!(
        alice
            .manager
            .handle_stanza(&from_alice, &mut rng, world.now)
            .unwrap(),
        Handled::Consumed
    );
}

#[test]
fn a_message_not_for_this_device_is_reported_and_repairs_the_own_lists_once() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let stanza = world.send(&mut alice, "bob@example.org", "hi");
    world.receive(&mut bob, &stanza).unwrap();
    let mut carol = world.device("carol@example.org", "pc");
    let mut rng = omemo::os_rng();
    // Carol got the stanza by mistake: not for her device.
    let handled = carol
        .manager
        .handle_stanza(&stanza, &mut rng, world.now)
        .unwrap();
    assert_eq!(
        handled,
        Handled::Undecryptable {
            error: ManagerError::NotForThisDevice,
            via: Via::Direct
        }
    );
    let repair = pump(&mut world, &mut carol, |_| true);
    assert_eq!(
        repair.len(),
        4,
        "both lists fetched, both bundles published"
    );
    carol
        .manager
        .handle_stanza(&stanza, &mut rng, world.now)
        .unwrap();
    assert!(
        carol.manager.poll_transmit().unwrap().is_none(),
        "once a minute at most"
    );
}

#[test]
fn device_and_trust_events_reach_the_application() {
    let mut world = World::new();
    let manual = ManagerConfig {
        trust_policy: TrustPolicy::Manual,
        ..ManagerConfig::default()
    };
    let mut alice = world.device_with("alice@example.org", "phone", MemoryStore::new(), manual);
    let bob = world.device("bob@example.org", "laptop");
    let bob_id = bob.manager.device_id();
    events(&mut alice);
    world.prepare(&mut alice, "bob@example.org");
    let seen = events(&mut alice);
    assert!(seen.iter().any(|e| matches!(e,
        Event::DeviceAdded { jid, device_id, .. } if jid == "bob@example.org" && *device_id == bob_id
    )));
    assert!(
        seen.contains(&Event::TrustDecisionNeeded {
            jid: "bob@example.org".into(),
            device_id: bob_id,
            fingerprint: bob.manager.fingerprint(),
        }),
        "{seen:?}"
    );
    alice
        .manager
        .set_trust(&bare("bob@example.org"), bob_id, Trust::Verified)
        .unwrap();
    // Bob's device leaves both lists.
    let mut rng = omemo::os_rng();
    for version in Version::ALL {
        let event = device_list_event(version, "bob@example.org", &[&[]]);
        alice
            .manager
            .handle_stanza(&event, &mut rng, world.now)
            .unwrap();
    }
    assert_eq!(
        events(&mut alice),
        vec![Event::DeviceRemoved {
            jid: "bob@example.org".into(),
            device_id: bob_id
        }],
        "one event, when it left the last list"
    );
}

#[test]
fn an_omemo2_bundle_with_another_identity_than_the_legacy_one_is_refused_and_legacy_goes_on() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let legacy_only = ManagerConfig {
        versions: omemo::Versions::only(Version::Legacy),
        ..ManagerConfig::default()
    };
    let mut bob = world.device_with("bob@example.org", "pc", MemoryStore::new(), legacy_only);
    let bob_id = bob.manager.device_id();
    let first = world.send(&mut alice, "bob@example.org", "legacy");
    world.receive(&mut bob, &first).unwrap();
    events(&mut alice);
    // Mallory, who can write Bob's nodes, lists Bob's device id in OMEMO 2 with a bundle
    // of her own identity.
    let mallory = world.device("mallory@example.org", "x");
    let fake = world.pep.bundle(
        "mallory@example.org",
        Version::Omemo2,
        mallory.manager.device_id(),
    );
    world
        .pep
        .set_bundle("bob@example.org", Version::Omemo2, bob_id, &fake);
    let mut rng = omemo::os_rng();
    let event = device_list_event(Version::Omemo2, "bob@example.org", &[&[bob_id]]);
    alice
        .manager
        .handle_stanza(&event, &mut rng, world.now)
        .unwrap();
    let id = alice
        .manager
        .send(&[bare("bob@example.org")], "to whom?", &mut rng, world.now)
        .unwrap();
    pump(&mut world, &mut alice, |_| false);
    let seen = events(&mut alice);
    assert!(
        seen.contains(&Event::IdentityChangeRefused {
            jid: "bob@example.org".into(),
            device_id: bob_id
        }),
        "{seen:?}"
    );
    // The message goes on the real legacy session: the forged OMEMO 2 entry gains
    // Mallory nothing.
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Sent { id: sent, recipients, .. }
                if *sent == id && recipients.iter().any(|r| r.device_id == bob_id && r.version == Version::Legacy)
        )),
        "{seen:?}"
    );
    let info = alice
        .manager
        .devices(&bare("bob@example.org"), world.now)
        .unwrap();
    assert_eq!(info[0].fingerprint, Some(bob.manager.fingerprint()));
}

#[test]
fn poll_timeout_names_the_next_rotation_and_expired_requests_are_asked_again() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let config = ManagerConfig::default();
    assert_eq!(
        alice.manager.poll_timeout(),
        Some(world.now + config.signed_pre_key_rotation_secs)
    );
    let mut rng = omemo::os_rng();
    alice
        .manager
        .send(&[bare("bob@example.org")], "hi", &mut rng, world.now)
        .unwrap();
    let held = pump(&mut world, &mut alice, |_| true);
    assert_eq!(held.len(), 2, "both device lists of Bob");
    assert_eq!(
        alice.manager.poll_timeout(),
        Some(world.now + config.send_timeout_secs)
    );
    // The connection drops: the requests are forgotten, the message stays queued and
    // its fetches are asked again on the new stream.
    alice.manager.connection_lost();
    assert_eq!(alice.manager.pending_requests(), 0);
    assert_eq!(alice.manager.queued_messages(), 1);
    let bob = world.device("bob@example.org", "laptop");
    alice.manager.connected(world.now).unwrap();
    pump(&mut world, &mut alice, |_| false);
    let sent = events(&mut alice);
    assert!(
        sent.iter()
            .any(|e| matches!(e, Event::Sent { recipients, .. }
            if recipients.iter().any(|r| r.device_id == bob.manager.device_id()))),
        "{sent:?}"
    );
    // The signed prekeys rotate when poll_timeout says.
    let due = alice.manager.poll_timeout().unwrap();
    let before = alice.manager.own_bundle(Version::Omemo2).unwrap();
    world.now = due;
    alice.manager.handle_timeout(&mut rng, world.now).unwrap();
    let after = alice.manager.own_bundle(Version::Omemo2).unwrap();
    assert_ne!(before.signed_pre_key_id, after.signed_pre_key_id);
    assert!(alice.manager.poll_timeout().unwrap() > due);
}

#[test]
fn a_refused_publication_is_an_event() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    events(&mut alice);
    let mut rng = omemo::os_rng();
    alice.manager.connected(world.now).unwrap();
    // The server refuses outright (not a configuration problem).
    while let Some(iq) = alice.manager.poll_transmit().unwrap() {
        let refusal = common::pep::error(iq.attr("id").unwrap(), "alice@example.org", "forbidden");
        alice
            .manager
            .handle_stanza(&refusal, &mut rng, world.now)
            .unwrap();
    }
    let failed: Vec<String> = events(&mut alice)
        .into_iter()
        .filter_map(|e| match e {
            Event::PublicationFailed { node, condition } => {
                assert_eq!(condition, "forbidden");
                Some(node)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        vec![
            omemo::stanza::legacy::bundle_node(alice.manager.device_id()),
            omemo2::BUNDLES_NODE.to_owned()
        ]
    );
}

#[test]
fn requests_wait_unsent_while_the_stream_is_down_and_expire_only_once_sent() {
    let mut world = World::new();
    let mut rng = omemo::os_rng();
    let mut alice = world.unconnected("alice@example.org");
    // The server cannot be reached for two minutes: nothing is taken, nothing expires.
    assert_eq!(
        alice.poll_timeout(),
        Some(world.now + ManagerConfig::default().signed_pre_key_rotation_secs)
    );
    world.now += 120;
    alice.handle_timeout(&mut rng, world.now).unwrap();
    assert_eq!(alice.pending_requests(), 4);
    // The stream comes up: nothing is asked twice, and the minute starts now.
    alice.connected(world.now).unwrap();
    assert_eq!(alice.pending_requests(), 4);
    let mut sent = Vec::new();
    while let Some(stanza) = alice.poll_transmit().unwrap() {
        sent.push(stanza);
    }
    assert_eq!(sent.len(), 4);
    assert_eq!(alice.poll_timeout(), Some(world.now + 60));
    world.now += 59;
    alice.handle_timeout(&mut rng, world.now).unwrap();
    assert_eq!(alice.pending_requests(), 4, "answers still awaited");
    for request in &sent {
        let answer = world.pep.answer("alice@example.org", request);
        assert_eq!(
            alice.handle_stanza(&answer, &mut rng, world.now).unwrap(),
            Handled::Response
        );
    }
    // The answers asked for the own device lists' republication: all is published.
    while let Some(stanza) = alice.poll_transmit().unwrap() {
        let answer = world.pep.answer("alice@example.org", &stanza);
        alice.handle_stanza(&answer, &mut rng, world.now).unwrap();
    }
    assert_eq!(alice.pending_requests(), 0);
    for version in Version::ALL {
        world
            .pep
            .bundle("alice@example.org", version, alice.device_id());
    }
}

#[test]
fn two_first_contacts_on_one_prekey_heal_with_a_rebuilt_session() {
    let mut world = World::new();
    let single = ManagerConfig {
        pre_key_count: 1,
        ..ManagerConfig::default()
    };
    let mut bob = world.device_with("bob@example.org", "pc", MemoryStore::new(), single);
    let mut alice = world.device("alice@example.org", "phone");
    let mut carol = world.device("carol@example.org", "phone");
    let mut rng = omemo::os_rng();
    // Both fetch Bob's bundle, with its one prekey, before he reads either message.
    let from_alice = world.send(&mut alice, "bob@example.org", "first");
    let from_carol = world.send(&mut carol, "bob@example.org", "second");
    let from_carol_again = world.send(&mut carol, "bob@example.org", "second, again");
    events(&mut bob);
    assert!(matches!(
        bob.manager
            .handle_stanza(&from_alice, &mut rng, world.now)
            .unwrap(),
        Handled::Message { .. }
    ));
    // Carol's key exchange names the prekey Alice's used up: Bob builds a new session
    // from Carol's bundle and tells her with an empty key exchange.
    let handled = bob
        .manager
        .handle_stanza(&from_carol, &mut rng, world.now)
        .unwrap();
    assert!(matches!(
        handled,
        Handled::Undecryptable {
            error: ManagerError::UnknownPreKey(_),
            ..
        }
    ));
    world.run(&mut bob);
    let carol_id = carol.manager.device_id();
    let seen = events(&mut bob);
    assert!(
        seen.contains(&Event::SessionRebuilt {
            jid: "carol@example.org".into(),
            device_id: carol_id,
            version: Version::Omemo2
        }),
        "{seen:?}"
    );
    // Her next message on the old session does not rebuild again (rate limit).
    bob.manager
        .handle_stanza(&from_carol_again, &mut rng, world.now)
        .unwrap();
    assert!(events(&mut bob).contains(&Event::RebuildHeldBack {
        jid: "carol@example.org".into(),
        device_id: carol_id,
        version: Version::Omemo2
    }));
    assert!(
        bob.manager.poll_transmit().unwrap().is_none(),
        "no second rebuild"
    );
    // Carol takes the empty key exchange (the completion of Alice's session went to
    // Alice); from then on both directions work.
    let rebuilt: Vec<Element> = std::iter::from_fn(|| bob.next_message())
        .filter(|m| m.attr("to") == Some("carol@example.org"))
        .collect();
    assert_eq!(rebuilt.len(), 1);
    assert_eq!(world.receive(&mut carol, &rebuilt[0]).unwrap().body, None);
    world.converse(&mut carol, &mut bob, "third");
    world.converse(&mut bob, &mut carol, "hello Carol");
    // A failed MAC never rebuilds: anyone can forge one.
    let mut tampered = world.send(&mut carol, "bob@example.org", "fourth");
    let encrypted = tampered
        .get_child_mut("encrypted", Version::Omemo2.namespace())
        .unwrap();
    let payload = encrypted
        .get_child_mut("payload", Version::Omemo2.namespace())
        .unwrap();
    let text = payload.text();
    let flipped = format!(
        "{}{}",
        if text.starts_with('A') { "B" } else { "A" },
        &text[1..]
    );
    let _ = payload.take_nodes();
    payload.append_text(flipped);
    events(&mut bob);
    bob.manager
        .handle_stanza(&tampered, &mut rng, world.now)
        .unwrap();
    assert!(bob.manager.poll_transmit().unwrap().is_none());
    assert!(events(&mut bob).is_empty());
}

#[test]
fn a_manual_reset_rebuilds_the_sessions_of_a_contact() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "pc");
    let first = world.send(&mut alice, "bob@example.org", "hi");
    world.receive(&mut bob, &first).unwrap();
    world.run(&mut bob);
    events(&mut alice);
    alice
        .manager
        .reset_session(&bare("bob@example.org"), None, world.now)
        .unwrap();
    world.run(&mut alice);
    assert!(events(&mut alice).iter().any(|e| matches!(
        e,
        Event::SessionRebuilt { device_id, .. } if *device_id == bob.manager.device_id()
    )));
    let reset = alice.next_message().expect("the empty key exchange");
    // Bob wrote on the old session before the reset reached him: Alice still reads it.
    world.converse(&mut bob, &mut alice, "sent before the reset arrived");
    assert!(
        String::from(&reset)
            .replace('"', "'")
            .contains("kex='true'")
    );
    assert_eq!(world.receive(&mut bob, &reset).unwrap().body, None);
    world.converse(&mut alice, &mut bob, "after the reset");
    assert!(matches!(
        alice
            .manager
            .reset_session(&bare("bob@example.org"), Some(7), world.now),
        Err(ManagerError::UnknownDevice { device_id: 7, .. })
    ));
}

#[test]
fn a_stranger_with_made_up_devices_gets_a_few_sessions_an_hour() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "pc");
    let small = ManagerConfig {
        pre_key_count: 1,
        ..ManagerConfig::default()
    };
    let limit = ManagerConfig::default().new_sessions_per_hour as usize;
    let mut rng = omemo::os_rng();
    let mut refused = 0;
    for i in 0..limit + 3 {
        let mut device = world.device_with(
            "mallory@example.org",
            &format!("d{i}"),
            MemoryStore::new(),
            small.clone(),
        );
        let stanza = world.send(&mut device, "bob@example.org", "hi");
        let pre_keys = bob.manager.own_bundle(Version::Omemo2).unwrap().pre_keys;
        match bob
            .manager
            .handle_stanza(&stanza, &mut rng, world.now)
            .unwrap()
        {
            Handled::Message { .. } => {}
            Handled::Undecryptable {
                error: ManagerError::TooManyNewSessions { jid },
                ..
            } => {
                assert_eq!(jid, "mallory@example.org");
                assert_eq!(
                    bob.manager.own_bundle(Version::Omemo2).unwrap().pre_keys,
                    pre_keys,
                    "a refused key exchange uses no prekey"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        world.run(&mut bob);
    }
    assert_eq!(refused, 3);
    // Someone else is still served; an hour later Mallory's devices are too.
    let mut alice = world.device("alice@example.org", "phone");
    world.converse(&mut alice, &mut bob, "hello");
    world.now += 3600;
    let mut late = world.device_with("mallory@example.org", "late", MemoryStore::new(), small);
    world.converse(&mut late, &mut bob, "later");
}

#[test]
fn the_session_cache_is_bounded_and_conversations_go_on_from_the_store() {
    let mut world = World::new();
    let tiny = ManagerConfig {
        session_cache_size: 2,
        ..ManagerConfig::default()
    };
    let mut bob = world.device_with("bob@example.org", "pc", MemoryStore::new(), tiny);
    let mut peers: Vec<_> = ["a", "c", "d", "e"]
        .iter()
        .map(|name| world.device(&format!("{name}@example.org"), "x"))
        .collect();
    for round in 0..3 {
        for peer in peers.iter_mut() {
            let text = format!("round {round} from {}", peer.manager.jid());
            world.converse(peer, &mut bob, &text);
            assert!(bob.manager.cached_sessions() <= 2);
            world.converse(&mut bob, peer, "echo");
        }
    }
}

#[test]
fn device_records_are_capped_per_jid_and_long_silent_unlisted_ones_pruned() {
    let mut world = World::new();
    let config = ManagerConfig {
        max_devices_per_jid: 3,
        ..ManagerConfig::default()
    };
    let mut bob = world.device_with("bob@example.org", "pc", MemoryStore::new(), config);
    let small = ManagerConfig {
        pre_key_count: 1,
        ..ManagerConfig::default()
    };
    let mut rng = omemo::os_rng();
    let mut mallory = Vec::new();
    for i in 0..4 {
        let mut device = world.device_with(
            "mallory@example.org",
            &format!("d{i}"),
            MemoryStore::new(),
            small.clone(),
        );
        let stanza = world.send(&mut device, "bob@example.org", "hi");
        let handled = bob
            .manager
            .handle_stanza(&stanza, &mut rng, world.now)
            .unwrap();
        world.run(&mut bob);
        if i < 3 {
            assert!(
                matches!(handled, Handled::Message { .. }),
                "{i}: {handled:?}"
            );
        } else {
            assert_eq!(
                handled,
                Handled::Undecryptable {
                    error: ManagerError::TooManyDevices {
                        jid: "mallory@example.org".into(),
                        cap: 3
                    },
                    via: Via::Direct
                }
            );
        }
        mallory.push(device);
    }
    let records = |bob: &mut Device<MemoryStore>, now| {
        bob.manager
            .devices(&bare("mallory@example.org"), now)
            .unwrap()
            .len()
    };
    assert_eq!(records(&mut bob, world.now), 3);
    // Mallory's devices leave her lists (a month after they wrote); 91 days later, silent
    // since, the next list drops their records and sessions.
    world.now += 30 * 24 * 3600;
    let mut empty_lists = |bob: &mut Device<MemoryStore>, now| {
        for version in Version::ALL {
            let event = device_list_event(version, "mallory@example.org", &[&[]]);
            bob.manager.handle_stanza(&event, &mut rng, now).unwrap();
        }
    };
    empty_lists(&mut bob, world.now);
    assert_eq!(records(&mut bob, world.now), 3);
    world.now += 91 * 24 * 3600;
    empty_lists(&mut bob, world.now);
    assert_eq!(records(&mut bob, world.now), 0);
    let id = mallory[0].manager.device_id();
    for version in Version::ALL {
        assert!(
            bob.manager
                .store()
                .load_session("mallory@example.org", id, version)
                .unwrap()
                .is_none()
        );
    }
}

#[test]
fn devices_that_left_their_list_without_ever_writing_are_forgotten_once_gone_for_long() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "pc");
    let carol: Vec<u32> = ["phone", "tablet"]
        .iter()
        .map(|r| world.device("carol@example.org", r).manager.device_id())
        .collect();
    world.prepare(&mut bob, "carol@example.org");
    let first_seen = world.now;
    let mut rng = omemo::os_rng();
    let known = |bob: &mut Device<MemoryStore>, now| {
        let devices = bob
            .manager
            .devices(&bare("carol@example.org"), now)
            .unwrap();
        assert!(
            devices
                .iter()
                .all(|d| d.first_seen == Some(first_seen) && d.last_seen.is_none())
        );
        devices.iter().map(|d| d.device_id).collect::<Vec<_>>()
    };
    let mut listed = carol.clone();
    listed.sort_unstable();
    assert_eq!(known(&mut bob, world.now), listed);
    let empty_lists = |bob: &mut Device<MemoryStore>, rng: &mut _, now| {
        for version in Version::ALL {
            let event = device_list_event(version, "carol@example.org", &[&[]]);
            bob.manager.handle_stanza(&event, rng, now).unwrap();
        }
    };
    // Listed for 200 days without ever writing, they leave her lists: they are kept (a
    // list that lost them in a race may name them again), and forgotten at the first
    // list after they have been gone for the inactivity limit (90 days).
    world.now += 200 * 24 * 3600;
    empty_lists(&mut bob, &mut rng, world.now);
    assert_eq!(known(&mut bob, world.now), listed);
    world.now += 91 * 24 * 3600;
    empty_lists(&mut bob, &mut rng, world.now);
    assert_eq!(known(&mut bob, world.now), Vec::<u32>::new());
}

#[test]
fn two_devices_that_start_sessions_with_each_other_at_once_converge() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "pc");
    // Both write first, before either message arrives: two key exchanges cross.
    let from_alice = world.send(&mut alice, "bob@example.org", "hi Bob");
    let from_bob = world.send(&mut bob, "alice@example.org", "hi Alice");
    assert_eq!(
        world
            .receive(&mut bob, &from_alice)
            .unwrap()
            .body
            .as_deref(),
        Some("hi Bob")
    );
    assert_eq!(
        world
            .receive(&mut alice, &from_bob)
            .unwrap()
            .body
            .as_deref(),
        Some("hi Alice")
    );
    // Each now holds the session the other's key exchange built, and the one it started
    // as the previous; whatever either sends next decrypts on the other side, and they
    // end up on one session.
    let mut deliver = |from: &mut Device<MemoryStore>, to: &mut Device<MemoryStore>, text: &str| {
        let stanza = world.send(from, to.manager.jid(), text);
        let received = world.receive(to, &stanza);
        assert_eq!(
            received.map(|d| d.body),
            Ok(Some(text.to_owned())),
            "{text}"
        );
        while let Some(completion) = to.next_message() {
            world.receive(from, &completion).unwrap();
        }
    };
    for round in 0..4 {
        deliver(&mut alice, &mut bob, &format!("a{round}"));
        deliver(&mut bob, &mut alice, &format!("b{round}"));
        deliver(&mut bob, &mut alice, &format!("b{round}'"));
    }
}

/// A device whose store counts disk writes and can fail them.
fn flaky_device(world: &mut World, jid: &str) -> Device<FlakyStore> {
    let config = world.config.clone();
    world.device_with(jid, "laptop", FlakyStore::default(), config)
}

#[test]
fn everything_handled_before_a_poll_reaches_the_disk_in_one_write() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = flaky_device(&mut world, "bob@example.org");
    world.prepare(&mut bob, "alice@example.org");
    let incoming: Vec<Element> = (0..10)
        .map(|i| world.send(&mut alice, "bob@example.org", &format!("message {i}")))
        .collect();
    let mut rng = omemo::os_rng();
    let (writes, commits) = (bob.manager.store().disk_writes, bob.manager.store().commits);
    for stanza in &incoming {
        let (message, _) = decrypted(&mut bob, stanza, world.now);
        let reply = format!("re: {}", message.body.unwrap());
        bob.manager
            .send(&[bare("alice@example.org")], &reply, &mut rng, world.now)
            .unwrap();
    }
    assert!(
        bob.manager.store().commits >= commits + 20,
        "one commit per decrypt and per reply"
    );
    assert_eq!(
        bob.manager.store().disk_writes,
        writes,
        "nothing on disk before a poll"
    );
    let stanzas: Vec<Element> =
        std::iter::from_fn(|| bob.manager.poll_transmit().unwrap()).collect();
    assert_eq!(
        bob.manager.store().disk_writes,
        writes + 1,
        "one disk write for all"
    );
    let replies: Vec<&Element> = stanzas.iter().filter(|s| s.name() == "message").collect();
    assert_eq!(
        replies.len(),
        11,
        "ten replies and the completion of the key exchange"
    );
    let with_payload = |m: &&Element| String::from(*m).contains("<payload");
    for (i, reply) in replies.into_iter().filter(with_payload).enumerate() {
        let reply = with_from(reply.clone(), &bob.full_jid);
        let read = world.receive(&mut alice, &reply).unwrap();
        assert_eq!(read.body.unwrap(), format!("re: message {i}"));
    }
}

#[test]
fn a_failed_disk_write_hands_out_nothing_built_on_the_lost_state() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = flaky_device(&mut world, "bob@example.org");
    world.prepare(&mut bob, "alice@example.org");
    let mut rng = omemo::os_rng();
    let first = world.send(&mut alice, "bob@example.org", "first");
    decrypted(&mut bob, &first, world.now);
    while bob.manager.poll_transmit().unwrap().is_some() {}
    drop(events(&mut bob));

    let second = world.send(&mut alice, "bob@example.org", "second");
    decrypted(&mut bob, &second, world.now);
    let lost = bob
        .manager
        .send(
            &[bare("alice@example.org")],
            "lost reply",
            &mut rng,
            world.now,
        )
        .unwrap();
    bob.manager.store().fail_sync.set(true);
    assert!(matches!(
        bob.manager.poll_transmit(),
        Err(ManagerError::Store(_))
    ));
    let reported: Vec<Event> = events(&mut bob);
    assert!(
        reported.iter().any(
            |e| matches!(e, Event::NotSent { id, error: ManagerError::Store(_) } if *id == lost)
        )
    );
    assert!(!reported.iter().any(|e| matches!(e, Event::Sent { .. })));
    bob.manager.store().fail_sync.set(false);
    assert!(
        bob.manager.poll_transmit().unwrap().is_none(),
        "the reply is dropped"
    );

    // Back at the last sync: the second message reads again, and the conversation goes on.
    let (again, _) = decrypted(&mut bob, &second, world.now);
    assert_eq!(again.body.as_deref(), Some("second"));
    bob.manager
        .send(
            &[bare("alice@example.org")],
            "kept reply",
            &mut rng,
            world.now,
        )
        .unwrap();
    let reply = bob.manager.poll_transmit().unwrap().expect("the reply");
    let read = world
        .receive(&mut alice, &with_from(reply, &bob.full_jid))
        .unwrap();
    assert_eq!(read.body.as_deref(), Some("kept reply"));
}

/// The skipped message keys bob's sessions with `jid`'s `devices` hold, in the store.
fn skipped_keys_held(bob: &Device<MemoryStore>, jid: &str, devices: &[u32]) -> usize {
    let store = bob.manager.store();
    devices
        .iter()
        .filter_map(|&id| store.load_session(jid, id, Version::Omemo2).unwrap())
        .map(|bytes| {
            omemo::hazmat::Session::from_bytes(&bytes)
                .unwrap()
                .skipped_key_count()
        })
        .sum()
}

#[test]
fn skipped_keys_are_bounded_per_jid_across_its_devices_and_restarts() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "pc");
    let mallory = "mallory@example.org";
    let per_jid = ManagerConfig::default().max_skipped_keys_per_jid;
    assert_eq!(per_jid, 2000);
    let mut rng = omemo::os_rng();
    let mut devices = Vec::new();
    let mut late = None;
    for i in 0..5 {
        if i == 4 {
            // Counted again from the store after a restart.
            let store = bob.manager.into_store().unwrap();
            bob.manager = Manager::open(
                store,
                &bare("bob@example.org"),
                world.config.clone(),
                &mut rng,
                world.now,
            )
            .unwrap();
            world.run(&mut bob);
        }
        let mut device = world.device(mallory, &format!("d{i}"));
        devices.push(device.manager.device_id());
        // 900 messages lost on the way, then one that arrives: 900 keys skipped.
        let first = world.send(&mut device, "bob@example.org", "lost 0");
        for n in 1..900 {
            let lost = world.send(&mut device, "bob@example.org", &format!("lost {n}"));
            if i == 0 && n == 5 {
                late = Some(lost);
            }
        }
        drop(first);
        let arrives = world.send(&mut device, "bob@example.org", "arrives");
        let (message, _) = decrypted(&mut bob, &arrives, world.now);
        assert_eq!(message.body.as_deref(), Some("arrives"));
        // Bob republishes his bundle without the prekey used (else the next device
        // could pick it from the old one).
        world.run(&mut bob);
        let held = skipped_keys_held(&bob, mallory, &devices);
        assert!(held <= per_jid, "{held} skipped keys held for one JID");
        if i >= 2 {
            assert_eq!(
                held, per_jid,
                "the newest sessions give up their oldest keys"
            );
        }
    }
    // The first device's keys were kept: its late message still reads.
    let (message, _) = decrypted(&mut bob, &late.unwrap(), world.now);
    assert_eq!(message.body.as_deref(), Some("lost 5"));
}

/// The session Alice sends to Bob's device on, from her store: whether it is the one she
/// started and nothing was read on yet (its messages still carry her key exchange).
fn sends_own_key_exchange(alice: &Device<MemoryStore>, bob: &Device<MemoryStore>) -> bool {
    let bytes = alice
        .manager
        .store()
        .load_session(bob.manager.jid(), bob.manager.device_id(), Version::Omemo2)
        .unwrap()
        .unwrap();
    omemo::hazmat::Session::from_bytes(&bytes)
        .unwrap()
        .sends_key_exchange()
}

#[test]
fn a_key_exchange_crossing_our_unanswered_one_does_not_replace_it_until_the_peer_insists() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "pc");
    // Alice writes first; Bob writes three times before Alice's message reaches him, so
    // his messages carry his own key exchange.
    let from_alice = world.send(&mut alice, "bob@example.org", "hi Bob");
    let from_bob: Vec<Element> = (0..3)
        .map(|i| world.send(&mut bob, "alice@example.org", &format!("hi Alice {i}")))
        .collect();
    // A peer that makes the newest session current (python-omemo, libsignal) answers on
    // the session Alice's key exchange starts: she keeps sending on hers while Bob's
    // first two messages cross it...
    for (i, stanza) in from_bob.iter().take(2).enumerate() {
        let read = world.receive(&mut alice, stanza).unwrap();
        assert_eq!(read.body, Some(format!("hi Alice {i}")));
        assert!(sends_own_key_exchange(&alice, &bob), "after message {i}");
    }
    // ...but a peer that goes on with its own that long has not read hers (or cannot):
    // its session becomes current.
    let read = world.receive(&mut alice, &from_bob[2]).unwrap();
    assert_eq!(read.body.as_deref(), Some("hi Alice 2"));
    assert!(!sends_own_key_exchange(&alice, &bob));
    // Either way both read each other from then on.
    assert_eq!(
        world
            .receive(&mut bob, &from_alice)
            .unwrap()
            .body
            .as_deref(),
        Some("hi Bob")
    );
    world.converse(&mut alice, &mut bob, "and on");
    world.converse(&mut bob, &mut alice, "and back");
}

#[test]
fn after_a_failed_disk_write_no_bundle_names_prekeys_the_store_lost() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = flaky_device(&mut world, "bob@example.org");
    // A first contact uses one of Bob's prekeys: a republish (with a fresh one) and the
    // completion message are queued, on state that does not reach the disk.
    let first = world.send(&mut alice, "bob@example.org", "first contact");
    decrypted(&mut bob, &first, world.now);
    bob.manager.store().fail_sync.set(true);
    assert!(matches!(
        bob.manager.poll_transmit(),
        Err(ManagerError::Store(_))
    ));
    bob.manager.store().fail_sync.set(false);
    assert!(
        bob.manager.poll_transmit().unwrap().is_none(),
        "nothing built on the lost state goes out"
    );
}

/// Alice sends to Bob while the server refuses (`forbidden`, as Prosody does for nodes
/// with the `presence` access model) every fetch `refused` picks; the world, Alice, Bob and
/// why the message was not sent.
fn send_with_fetches_refused(
    refused: impl Fn(&Element) -> bool + Copy,
) -> (
    World,
    Device<MemoryStore>,
    Device<MemoryStore>,
    ManagerError,
) {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    world.notify(&mut bob);
    events(&mut alice);
    let mut rng = omemo::os_rng();
    let id = alice
        .manager
        .send(&[bare("bob@example.org")], "hello", &mut rng, world.now)
        .unwrap();
    // Refusals make the manager try what is left (another version's bundle).
    loop {
        let held = pump(&mut world, &mut alice, refused);
        if held.is_empty() {
            break;
        }
        for iq in held {
            let refusal =
                common::pep::error(iq.attr("id").unwrap(), "bob@example.org", "forbidden");
            alice
                .manager
                .handle_stanza(&refusal, &mut rng, world.now)
                .unwrap();
        }
    }
    let not_sent = events(&mut alice)
        .into_iter()
        .find_map(|event| match event {
            Event::NotSent { id: failed, error } if failed == id => Some(error),
            _ => None,
        })
        .expect("NotSent");
    (world, alice, bob, not_sent)
}

#[test]
fn device_lists_shown_to_subscribed_contacts_only_are_a_reason_of_their_own() {
    // Bob's nodes have the `presence` access model and Alice is no contact of his.
    let (mut world, mut alice, _bob, not_sent) =
        send_with_fetches_refused(|iq| iq.attr("to") == Some("bob@example.org"));
    let hidden = omemo::SkippedDevice {
        jid: "bob@example.org".to_owned(),
        device_id: 0,
        reason: SkipReason::SubscriptionRequired,
    };
    assert_eq!(
        not_sent,
        ManagerError::NoRecipientDevices {
            skipped: vec![hidden]
        }
    );
    assert_eq!(
        not_sent.to_string(),
        "no device of the recipients can receive the message (1 skipped): \
         bob@example.org's OMEMO devices are visible to subscribed contacts only"
    );

    // Bob approves a subscription: the next `prepare` asks for the hidden list again
    // (no event needed), and the message goes out.
    readable_again(&mut world, &mut alice);
}

/// After a refusal, the server shows Bob's nodes to Alice: her next `prepare` fetches
/// what was hidden, and a message reaches Bob's device.
fn readable_again(world: &mut World, alice: &mut Device<MemoryStore>) {
    let pending = alice
        .manager
        .prepare(&[bare("bob@example.org")], world.now)
        .unwrap();
    assert!(pending > 0, "nothing asked again");
    pump(world, alice, |_| false);
    let encrypted = alice
        .manager
        .encrypt(
            &[bare("bob@example.org")],
            "now",
            &mut omemo::os_rng(),
            world.now,
        )
        .unwrap();
    assert!(encrypted.skipped.is_empty(), "{:?}", encrypted.skipped);
    assert!(
        encrypted
            .recipients
            .iter()
            .any(|r| r.jid == "bob@example.org")
    );
}

#[test]
fn a_bundle_shown_to_subscribed_contacts_only_names_its_device_and_the_reason() {
    // The lists are open, the bundles (of every version) are not.
    let (mut world, mut alice, bob, not_sent) = send_with_fetches_refused(|iq| {
        iq.attr("to") == Some("bob@example.org") && String::from(iq).contains("bundle")
    });
    let device = bob.manager.device_id();
    assert_eq!(
        not_sent.to_string(),
        format!(
            "no device of the recipients can receive the message (1 skipped): \
             the bundle of device {device} of bob@example.org is visible to subscribed contacts only"
        )
    );
    readable_again(&mut world, &mut alice);
}

#[test]
fn a_restored_identity_keeps_its_device_and_fingerprint_and_its_sessions_heal() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "laptop");
    let mut rng = omemo::os_rng();
    world.converse(&mut alice, &mut bob, "before");
    world.converse(&mut bob, &mut alice, "answer");
    let alice_id = alice.manager.device_id();
    bob.manager
        .set_trust(&bare("alice@example.org"), alice_id, Trust::Verified)
        .unwrap();
    let backup = alice
        .manager
        .export_identity("a long passphrase", &mut rng)
        .unwrap();
    let fingerprint = alice.manager.fingerprint();
    let now = world.now;
    let restore = |store: MemoryStore, jid: &str, passphrase: &str| {
        Manager::restore_identity(
            store,
            &bare(jid),
            &backup,
            passphrase,
            ManagerConfig::default(),
            &mut omemo::os_rng(),
            now,
        )
        .map(|_| ())
    };
    // Refused, and nothing written: a wrong passphrase, another account, a used store.
    assert_eq!(
        restore(
            MemoryStore::new(),
            "alice@example.org",
            "a wrong passphrase"
        ),
        Err(ManagerError::Backup(omemo::BackupError::WrongPassphrase))
    );
    assert!(matches!(
        restore(
            MemoryStore::new(),
            "mallory@example.org",
            "a long passphrase"
        ),
        Err(ManagerError::WrongAccount { .. })
    ));
    let used = world
        .device("alice@example.org", "tablet")
        .manager
        .into_store()
        .unwrap();
    assert_eq!(
        restore(used, "alice@example.org", "a long passphrase"),
        Err(ManagerError::Backup(omemo::BackupError::StoreNotEmpty))
    );

    // The phone is reinstalled: a new store, the identity from the backup.
    drop(alice);
    let manager = Manager::restore_identity(
        MemoryStore::new(),
        &bare("alice@example.org"),
        &backup,
        "a long passphrase",
        ManagerConfig::default(),
        &mut rng,
        world.now,
    )
    .unwrap();
    assert_eq!(manager.device_id(), alice_id);
    assert_eq!(manager.fingerprint(), fingerprint);
    let mut alice = Device {
        full_jid: "alice@example.org/phone".to_owned(),
        manager,
        sent: Default::default(),
    };
    world.run(&mut alice);
    // Bob's next message is on the old session: it cannot be read; Alice rebuilds the
    // session and tells Bob with an empty key exchange.
    let lost = world.send(&mut bob, "alice@example.org", "into the void");
    let handled = alice
        .manager
        .handle_stanza(&lost, &mut rng, world.now)
        .unwrap();
    assert!(
        matches!(handled, Handled::Undecryptable { .. }),
        "{handled:?}"
    );
    world.run(&mut alice);
    let rebuilt = alice.next_message().expect("an empty key exchange to Bob");
    assert!(matches!(
        bob.manager
            .handle_stanza(&rebuilt, &mut rng, world.now)
            .unwrap(),
        Handled::Consumed
    ));
    // From then on both ways work, and Bob's verification of the device still holds.
    world.converse(&mut bob, &mut alice, "after the restore");
    world.converse(&mut alice, &mut bob, "and back");
    let devices = bob
        .manager
        .devices(&bare("alice@example.org"), world.now)
        .unwrap();
    let trust = devices
        .iter()
        .find(|d| d.device_id == alice_id)
        .unwrap()
        .trust;
    assert_eq!(trust, Trust::Verified);
}

#[test]
fn bundle_fetches_go_out_eight_at_a_time_and_all_arrive() {
    let mut world = World::new();
    let mut bob = world.device("bob@example.org", "pc");
    let carol: Vec<u32> = (0..20)
        .map(|i| {
            world
                .device("carol@example.org", &format!("d{i}"))
                .manager
                .device_id()
        })
        .collect();
    let mut rng = omemo::os_rng();
    bob.manager
        .prepare(&[bare("carol@example.org")], world.now)
        .unwrap();
    // The server answers only the oldest request each round.
    let mut unanswered: Vec<Element> = Vec::new();
    let (mut most_in_flight, mut bundle_fetches) = (0, 0);
    loop {
        while let Some(stanza) = bob.manager.poll_transmit().unwrap() {
            if String::from(&stanza).contains("bundles") {
                bundle_fetches += 1;
            }
            unanswered.push(stanza);
        }
        let in_flight = unanswered
            .iter()
            .filter(|iq| String::from(*iq).contains("bundles"))
            .count();
        most_in_flight = most_in_flight.max(in_flight);
        if unanswered.is_empty() {
            break;
        }
        let oldest = unanswered.remove(0);
        let answer = world.pep.answer("bob@example.org", &oldest);
        bob.manager
            .handle_stanza(&answer, &mut rng, world.now)
            .unwrap();
    }
    // 20 devices in OMEMO 2 (the version they speak): 20 bundles, never more than 8 out.
    assert_eq!(bundle_fetches, 20);
    assert_eq!(most_in_flight, 8);
    let sent = world.encrypt(&mut bob, "carol@example.org", "hi all");
    let mut reached: Vec<u32> = sent.recipients.iter().map(|r| r.device_id).collect();
    reached.sort_unstable();
    let mut expected = carol;
    expected.sort_unstable();
    assert_eq!(reached, expected);
}
