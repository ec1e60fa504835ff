//! Catching up with the message archive (XEP-0313) through the in-process PEP router and
//! a scripted archive, in both versions: each message read once whether its archived or
//! its live copy comes first, a prekey two contacts picked while the device was away
//! hidden from the bundle at once and deleted after, one empty message per new session
//! after the catch-up and no heartbeat during it, and archive results that are not the
//! catch-up's left alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::pep::{Archive, Device, World, with_from};
use minidom::Element;
use omemo::{Event, Handled, ManagerConfig, MemoryStore, Version, Versions, Via};

const BOT: &str = "bot@example.org";

/// The bot's stanzas until nothing is queued: IQs to the PEP service, the rest kept in
/// `bot.sent`, and none of them may go out while a catch-up runs; MAM queries are
/// answered from `archive` (results handled as they come) only when nothing else is
/// queued, so that what a catch-up holds back shows before it ends. Returns how each
/// archive result was handled.
fn serve(world: &mut World, bot: &mut Device<MemoryStore>, archive: &Archive) -> Vec<Handled> {
    serve_with_queries(world, bot, archive).0
}

/// [`serve`], also returning the MAM queries the bot sent.
fn serve_with_queries(
    world: &mut World,
    bot: &mut Device<MemoryStore>,
    archive: &Archive,
) -> (Vec<Handled>, Vec<Element>) {
    let mut rng = common::rng::rng();
    let mut handled = Vec::new();
    let mut sent_queries = Vec::new();
    loop {
        let mut queries = Vec::new();
        while let Some(stanza) = bot.manager.poll_transmit().unwrap() {
            if stanza.name() != "iq" {
                assert!(
                    !bot.manager.is_catching_up(),
                    "a message went out during the catch-up: {}",
                    String::from(&stanza)
                );
                bot.sent.push_back(stanza);
            } else if stanza.get_child("query", "urn:xmpp:mam:2").is_some() {
                queries.push(stanza);
            } else {
                let answer = world.pep.answer(BOT, &stanza);
                bot.manager
                    .handle_stanza(&answer, &mut rng, world.now)
                    .unwrap();
            }
        }
        if queries.is_empty() {
            return (handled, sent_queries);
        }
        sent_queries.extend(queries.iter().cloned());
        for query in queries {
            for answer in archive.answer(&query) {
                let outcome = bot
                    .manager
                    .handle_stanza(&answer, &mut rng, world.now)
                    .unwrap();
                if answer.name() == "message" {
                    handled.push(outcome);
                }
            }
        }
    }
}

/// The `start` (seconds) and `after` of a MAM query.
fn query_position(query: &Element) -> (Option<i64>, Option<String>) {
    let inner = query.get_child("query", "urn:xmpp:mam:2").unwrap();
    let start = inner
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("start"))
        .map(|f| {
            let stamp = f.children().next().unwrap().text();
            chrono::DateTime::parse_from_rfc3339(&stamp)
                .unwrap()
                .timestamp()
        });
    let after = inner
        .get_child("set", "http://jabber.org/protocol/rsm")
        .unwrap()
        .get_child("after", "http://jabber.org/protocol/rsm")
        .map(Element::text);
    (start, after)
}

/// The events of the bot so far that say a catch-up ended.
fn caught_up(bot: &mut Device<MemoryStore>) -> Vec<(usize, bool)> {
    std::iter::from_fn(|| bot.manager.poll_event())
        .filter_map(|event| match event {
            Event::CaughtUp {
                messages, complete, ..
            } => Some((messages, complete)),
            _ => None,
        })
        .collect()
}

/// Bodies of the messages among `handled`, with how often each was read.
fn read(handled: &[Handled]) -> BTreeMap<String, usize> {
    let mut bodies = BTreeMap::new();
    for outcome in handled {
        if let Handled::Message { message, .. } = outcome {
            *bodies.entry(message.body.clone().unwrap()).or_insert(0) += 1;
        }
    }
    bodies
}

/// The one-time prekey ids the bot holds in its store, with whether each is hidden.
fn stored_pre_key(bot: &Device<MemoryStore>, version: Version, id: u32) -> Option<bool> {
    use omemo::Store;
    bot.manager
        .store()
        .load_pre_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.version == version && k.id == id)
        .map(|k| k.hidden)
}

#[test]
fn a_catch_up_reads_each_message_once_and_completes_each_new_session_once_after_it() {
    for version in Version::ALL {
        let mut world = World::speaking(Versions::only(version));
        let mut rng = common::rng::rng();
        // Heartbeats after 2 messages without a reply: the 4 messages below would cause
        // one outside a catch-up.
        let config = ManagerConfig {
            heartbeat_after: 2,
            ..world.config.clone()
        };
        let mut bot = world.device_with(BOT, "bot", MemoryStore::new(), config);
        let bot_id = bot.manager.device_id();
        let mut archive = Archive {
            page_size: 2,
            ..Archive::default()
        };

        // The first catch-up of a new store: nothing archived yet.
        bot.manager.catch_up(world.now).unwrap();
        assert!(serve(&mut world, &mut bot, &archive).is_empty());
        assert_eq!(caught_up(&mut bot), [(0, true)], "{version}");
        assert!(!bot.manager.is_catching_up());

        // While the bot is away, its bundle offers a single prekey, so both contacts'
        // first messages name it.
        let mut bundle = world.pep.bundle(BOT, version, bot_id);
        bundle.pre_keys.truncate(1);
        let shared = bundle.pre_keys[0].0;
        world.pep.set_bundle(BOT, version, bot_id, &bundle);
        let mut alice = world.device("alice@example.org", "phone");
        let mut carol = world.device("carol@example.org", "pc");
        let mut live = Vec::new();
        for (from_carol, body) in [
            (false, "a1"),
            (true, "c1"),
            (false, "a2"),
            (false, "a3"),
            (false, "a4"),
        ] {
            let sender = if from_carol { &mut carol } else { &mut alice };
            let stanza = world.send(sender, BOT, body);
            live.push(archive.keep(&stanza, world.now, BOT));
        }
        world.now += 3600;

        // Back online: the catch-up starts, the offline copies of a1 and c1 arrive
        // before the archive answers, those of the others after it.
        bot.manager.catch_up(world.now).unwrap();
        let mut handled = Vec::new();
        for stanza in &live[..2] {
            handled.push(
                bot.manager
                    .handle_stanza(stanza, &mut rng, world.now)
                    .unwrap(),
            );
        }
        assert!(bot.manager.is_catching_up());
        assert_eq!(
            stored_pre_key(&bot, version, shared),
            Some(true),
            "hidden, kept"
        );
        // The query is still queued: serve publishes the bundle first, then the archive.
        let archived = serve(&mut world, &mut bot, &archive);
        let republished = world.pep.bundle(BOT, version, bot_id);
        assert!(
            republished.pre_keys.iter().all(|(id, _)| *id != shared),
            "{version}: the used prekey left the bundle at once"
        );
        assert_eq!(republished.pre_keys.len(), 100);
        for stanza in &live[2..] {
            handled.push(
                bot.manager
                    .handle_stanza(stanza, &mut rng, world.now)
                    .unwrap(),
            );
        }
        handled.extend(archived.iter().cloned());

        let once: BTreeMap<String, usize> = ["a1", "a2", "a3", "a4", "c1"]
            .map(|b| (b.to_owned(), 1))
            .into();
        assert_eq!(read(&handled), once, "{version}: each message read once");
        assert!(
            archived.iter().all(|h| match h {
                Handled::Message { via, .. } => *via == Via::Archive,
                other => *other == Handled::Consumed,
            }),
            "{version}: {archived:?}"
        );
        assert_eq!(caught_up(&mut bot), [(5, true)], "{version}");
        assert_eq!(stored_pre_key(&bot, version, shared), None, "deleted after");

        // One empty message per new session, after the catch-up; no heartbeat.
        let empties: Vec<Element> = std::iter::from_fn(|| bot.next_message()).collect();
        assert_eq!(empties.len(), 2, "{version}: {empties:?}");
        for (contact, jid) in [
            (&mut alice, "alice@example.org"),
            (&mut carol, "carol@example.org"),
        ] {
            let to_contact: Vec<&Element> = empties
                .iter()
                .filter(|m| m.attr("to") == Some(jid))
                .collect();
            assert_eq!(to_contact.len(), 1, "{version}: {jid}");
            let outcome = contact
                .manager
                .handle_stanza(to_contact[0], &mut rng, world.now)
                .unwrap();
            assert_eq!(outcome, Handled::Consumed, "{version}: an empty message");
        }

        // The next catch-up goes on after the last result read: nothing new.
        world.now += 600;
        bot.manager.catch_up(world.now).unwrap();
        let (again, queries) = serve_with_queries(&mut world, &mut bot, &archive);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(query_position(&queries[0]), (None, Some("A5".to_owned())));
        assert_eq!(caught_up(&mut bot), [(0, true)]);
        assert!(bot.next_message().is_none());

        // And the sessions go on.
        let reply = world.send(&mut bot, "alice@example.org", "welcome back");
        let outcome = alice
            .manager
            .handle_stanza(&reply, &mut rng, world.now)
            .unwrap();
        assert!(matches!(outcome, Handled::Message { .. }), "{outcome:?}");
    }
}

#[test]
fn archive_results_for_other_queries_or_from_others_are_not_read() {
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let mut bot = world.device(BOT, "bot");
    let mut alice = world.device("alice@example.org", "phone");
    let message = world.send(&mut alice, BOT, "hello");
    let mut archive = Archive::default();
    archive.keep(&message, world.now, BOT);

    bot.manager.catch_up(world.now).unwrap();
    let query = std::iter::from_fn(|| bot.manager.poll_transmit().unwrap())
        .find(|s| s.get_child("query", "urn:xmpp:mam:2").is_some())
        .unwrap();
    let mut answers = archive.answer(&query);
    let fin = answers.pop().unwrap();
    let result = answers.pop().unwrap();

    // Another query's results are the application's; a result from someone else than
    // the own account is a forgery.
    let mut other_query = result.clone();
    other_query
        .get_child_mut("result", "urn:xmpp:mam:2")
        .unwrap()
        .set_attr(
            minidom::rxml::Namespace::NONE,
            "queryid".try_into().unwrap(),
            "the-application's-own",
        );
    assert_eq!(
        bot.manager
            .handle_stanza(&other_query, &mut rng, world.now)
            .unwrap(),
        Handled::Unhandled
    );
    for from in [
        "mallory@example.org",
        "bot@example.org/other",
        "example.org",
    ] {
        let forged = with_from(result.clone(), from);
        assert!(
            matches!(
                bot.manager
                    .handle_stanza(&forged, &mut rng, world.now)
                    .unwrap(),
                Handled::Dropped(_)
            ),
            "{from}"
        );
    }
    // A fin from someone else is no answer either.
    let forged_fin = with_from(fin.clone(), "mallory@example.org");
    assert_eq!(
        bot.manager
            .handle_stanza(&forged_fin, &mut rng, world.now)
            .unwrap(),
        Handled::Unhandled
    );
    assert!(bot.manager.is_catching_up());

    // The real ones, from the own account (or without `from`).
    let real = with_from(result, BOT);
    let Handled::Message { message, via } = bot
        .manager
        .handle_stanza(&real, &mut rng, world.now)
        .unwrap()
    else {
        panic!("not read")
    };
    assert_eq!(
        (message.body.as_deref(), via),
        (Some("hello"), Via::Archive)
    );
    assert_eq!(
        bot.manager
            .handle_stanza(&fin, &mut rng, world.now)
            .unwrap(),
        Handled::Response
    );
    assert!(!bot.manager.is_catching_up());
    // Results after the end are not read.
    assert_eq!(
        bot.manager
            .handle_stanza(&real, &mut rng, world.now)
            .unwrap(),
        Handled::Unhandled
    );
}

#[test]
fn a_catch_up_the_server_refuses_or_leaves_unanswered_ends_and_sends_what_it_held() {
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let mut bot = world.device(BOT, "bot");
    let mut alice = world.device("alice@example.org", "phone");
    let first = world.send(&mut alice, BOT, "while away");

    // No MAM on the server: the catch-up ends at the error, incomplete, and the new
    // session gets its empty message.
    bot.manager.catch_up(world.now).unwrap();
    bot.manager
        .handle_stanza(&first, &mut rng, world.now)
        .unwrap();
    let query = std::iter::from_fn(|| bot.manager.poll_transmit().unwrap())
        .find(|s| s.get_child("query", "urn:xmpp:mam:2").is_some())
        .unwrap();
    let refusal = common::pep::error(query.attr("id").unwrap(), BOT, "service-unavailable");
    assert_eq!(
        bot.manager
            .handle_stanza(&refusal, &mut rng, world.now)
            .unwrap(),
        Handled::Response
    );
    assert_eq!(caught_up(&mut bot), [(0, false)]);
    let empty = std::iter::from_fn(|| bot.manager.poll_transmit().unwrap())
        .find(|s| s.name() == "message")
        .expect("the completion after the catch-up");
    assert_eq!(empty.attr("to"), Some("alice@example.org"));

    // A lost connection keeps the catch-up; asking again queries again; no answer in
    // time ends it.
    bot.manager.catch_up(world.now).unwrap();
    while bot.manager.poll_transmit().unwrap().is_some() {}
    bot.manager.connection_lost();
    assert!(bot.manager.is_catching_up());
    bot.manager.catch_up(world.now).unwrap();
    let queries = std::iter::from_fn(|| bot.manager.poll_transmit().unwrap())
        .filter(|s| s.get_child("query", "urn:xmpp:mam:2").is_some())
        .count();
    assert_eq!(queries, 1);
    world.now += 61;
    bot.manager.handle_timeout(&mut rng, world.now).unwrap();
    assert_eq!(caught_up(&mut bot), [(0, false)]);
    assert!(!bot.manager.is_catching_up());
}

#[test]
fn a_catch_up_that_ends_early_keeps_its_place_and_reads_the_gap_next_time() {
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let created = world.now;
    let mut bot = world.device(BOT, "bot");
    let mut alice = world.device("alice@example.org", "phone");
    let mut archive = Archive::default();

    // A new store reads from its creation, by time.
    world.now += 10;
    bot.manager.catch_up(world.now).unwrap();
    let first_start = world.now;
    let (_, queries) = serve_with_queries(&mut world, &mut bot, &archive);
    assert_eq!(query_position(&queries[0]), (Some(created as i64), None));
    assert_eq!(caught_up(&mut bot), [(0, true)]);

    // Offline: m1 is archived. Back, the server refuses the query: ended early.
    world.now += 100;
    let m1 = world.send(&mut alice, BOT, "m1");
    archive.keep(&m1, world.now, BOT);
    world.now += 100;
    bot.manager.catch_up(world.now).unwrap();
    let query = std::iter::from_fn(|| bot.manager.poll_transmit().unwrap())
        .find(|s| s.get_child("query", "urn:xmpp:mam:2").is_some())
        .unwrap();
    let refusal = common::pep::error(query.attr("id").unwrap(), BOT, "internal-server-error");
    bot.manager
        .handle_stanza(&refusal, &mut rng, world.now)
        .unwrap();
    assert_eq!(caught_up(&mut bot), [(0, false)]);

    // m2 arrives online and is read: it must not move the position past m1.
    let m2 = world.send(&mut alice, BOT, "m2");
    let live = archive.keep(&m2, world.now, BOT);
    assert!(matches!(
        bot.manager
            .handle_stanza(&live, &mut rng, world.now)
            .unwrap(),
        Handled::Message { .. }
    ));
    world.run(&mut bot);

    // The next catch-up reads from where the last complete one started: m1 at last,
    // m2 again (a duplicate).
    world.now += 100;
    bot.manager.catch_up(world.now).unwrap();
    let (handled, queries) = serve_with_queries(&mut world, &mut bot, &archive);
    assert_eq!(
        query_position(&queries[0]),
        (Some(first_start as i64), None)
    );
    assert_eq!(read(&handled), [("m1".to_owned(), 1)].into());
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert_eq!(caught_up(&mut bot), [(2, true)]);

    // Online again, a message read moves the position to its archive id.
    let m3 = world.send(&mut alice, BOT, "m3");
    let live = archive.keep(&m3, world.now, BOT);
    bot.manager
        .handle_stanza(&live, &mut rng, world.now)
        .unwrap();
    world.run(&mut bot);
    world.now += 100;
    bot.manager.catch_up(world.now).unwrap();
    let (handled, queries) = serve_with_queries(&mut world, &mut bot, &archive);
    assert_eq!(query_position(&queries[0]), (None, Some("A3".to_owned())));
    assert!(handled.is_empty());

    // An id the archive no longer knows: read by time instead.
    let mut forgetful = Archive::default();
    let m4 = world.send(&mut alice, BOT, "m4");
    world.now += 100;
    forgetful.keep(&m4, world.now, BOT);
    world.now += 100;
    bot.manager.catch_up(world.now).unwrap();
    let (handled, queries) = serve_with_queries(&mut world, &mut bot, &forgetful);
    assert_eq!(queries.len(), 2);
    assert_eq!(query_position(&queries[0]).1, Some("A3".to_owned()));
    assert_eq!(query_position(&queries[1]).1, None);
    assert!(query_position(&queries[1]).0.is_some());
    assert_eq!(read(&handled), [("m4".to_owned(), 1)].into());
}

#[test]
fn a_heartbeat_due_during_a_catch_up_goes_out_after_it() {
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let config = ManagerConfig {
        heartbeat_after: 2,
        ..world.config.clone()
    };
    let mut bot = world.device_with(BOT, "bot", MemoryStore::new(), config);
    let mut alice = world.device("alice@example.org", "phone");
    let mut archive = Archive::default();
    bot.manager.catch_up(world.now).unwrap();
    serve(&mut world, &mut bot, &archive);
    caught_up(&mut bot);

    // A session, completed: alice's next messages start a new chain.
    let hello = world.send(&mut alice, BOT, "hello");
    bot.manager
        .handle_stanza(&hello, &mut rng, world.now)
        .unwrap();
    serve(&mut world, &mut bot, &archive);
    let completion = bot.next_message().unwrap();
    alice
        .manager
        .handle_stanza(&completion, &mut rng, world.now)
        .unwrap();

    // Offline: three messages, one past the heartbeat limit.
    for body in ["b1", "b2", "b3"] {
        world.now += 1;
        let stanza = world.send(&mut alice, BOT, body);
        archive.keep(&stanza, world.now, BOT);
    }
    world.now += 100;
    bot.manager.catch_up(world.now).unwrap();
    let handled = serve(&mut world, &mut bot, &archive);
    assert_eq!(read(&handled).len(), 3);
    let empties: Vec<Element> = std::iter::from_fn(|| bot.next_message()).collect();
    assert_eq!(empties.len(), 1, "one heartbeat, after the catch-up");
    assert_eq!(
        alice
            .manager
            .handle_stanza(&empties[0], &mut rng, world.now)
            .unwrap(),
        Handled::Consumed
    );
}
