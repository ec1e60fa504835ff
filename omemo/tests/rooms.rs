//! Group chats through the in-process PEP router and a scripted XEP-0045 room: members of
//! mixed versions (legacy only, OMEMO 2 only, both), an offline member, a nickname change,
//! an affiliation taken away, a non-member, the own reflection, rooms that cannot carry
//! OMEMO, the nickname map across a restart, and catching up with a room's archive.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::pep::{Archive, Device, World, bare, encrypted_versions};
use minidom::Element;
use omemo::{Event, Handled, ManagerConfig, ManagerError, MemoryStore, Version, Versions, Via};

const ROOM: &str = "room@muc.example.org";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// A room as the MUC service keeps it.
struct Muc {
    non_anonymous: bool,
    members_only: bool,
    /// Whether it says it keeps an archive (XEP-0313).
    archived: bool,
    /// Affiliations by real bare JID (`member`, `admin`, `owner`, `none`, `outcast`).
    affiliations: BTreeMap<String, &'static str>,
    /// Occupants: nickname, full JID.
    occupants: Vec<(String, String)>,
    /// Its message archive (XEP-0313), for the messages given to [`Muc::archive`].
    archive: Archive,
    /// Whether queries of the archive are refused.
    archive_refused: bool,
    /// Someone else who answers each query first, with a copy of its first result.
    forger: Option<&'static str>,
}

impl Muc {
    fn new(affiliations: &[(&str, &'static str)]) -> Self {
        Self {
            non_anonymous: true,
            members_only: true,
            archived: true,
            affiliations: affiliations
                .iter()
                .map(|(jid, a)| ((*jid).to_owned(), *a))
                .collect(),
            occupants: Vec::new(),
            archive: Archive {
                room: Some(ROOM.to_owned()),
                ..Archive::default()
            },
            archive_refused: false,
            forger: None,
        }
    }

    /// Archives the groupchat message `nick` (whose real JID is `jid`) sent, as a
    /// non-anonymous room does (with an `<x>` naming `jid`); returns it as the room
    /// hands it out live, with its archive id.
    fn archive(&mut self, nick: &str, jid: &str, message: &Element, now: u64) -> Element {
        let mut stored = message.clone();
        stored.set_attr(
            minidom::rxml::Namespace::NONE,
            "from".try_into().unwrap(),
            format!("{ROOM}/{nick}"),
        );
        stored
            .attrs_mut()
            .retain(|_, name, _| name.as_str() != "to");
        stored.append_child(
            format!("<x xmlns='{MUC_USER}'><item affiliation='member' jid='{jid}'/></x>")
                .parse()
                .unwrap(),
        );
        self.archive.keep(&stored, now, ROOM)
    }

    /// The answer to a disco#info or affiliation list query.
    fn answer(&self, iq: &Element) -> Element {
        let id = iq.attr("id").unwrap();
        let children = if iq.has_child("query", "http://jabber.org/protocol/disco#info") {
            let mut features = String::new();
            features += if self.non_anonymous {
                "<feature var='muc_nonanonymous'/>"
            } else {
                "<feature var='muc_semianonymous'/>"
            };
            features += if self.members_only {
                "<feature var='muc_membersonly'/>"
            } else {
                "<feature var='muc_open'/>"
            };
            if self.archived {
                features += "<feature var='urn:xmpp:mam:2'/>";
            }
            format!("<query xmlns='http://jabber.org/protocol/disco#info'>{features}</query>")
        } else {
            let admin = "http://jabber.org/protocol/muc#admin";
            let wanted = iq
                .get_child("query", admin)
                .unwrap()
                .get_child("item", admin)
                .unwrap()
                .attr("affiliation")
                .unwrap();
            let items: String = self
                .affiliations
                .iter()
                .filter(|(_, a)| **a == wanted)
                .map(|(jid, a)| format!("<item affiliation='{a}' jid='{jid}'/>"))
                .collect();
            format!("<query xmlns='{admin}'>{items}</query>")
        };
        format!("<iq xmlns='jabber:client' type='result' id='{id}' from='{ROOM}'>{children}</iq>")
            .parse()
            .unwrap()
    }

    fn affiliation(&self, full: &str) -> &'static str {
        let bare = full.split('/').next().unwrap();
        self.affiliations.get(bare).copied().unwrap_or("none")
    }

    /// The presence of occupant `nick` as `to` receives it.
    fn presence(&self, nick: &str, full: &str, to: &str, extra: &str, kind: &str) -> Element {
        let jid = if self.non_anonymous {
            format!(" jid='{full}'")
        } else {
            String::new()
        };
        let own = if to == full {
            "<status code='110'/>"
        } else {
            ""
        };
        let affiliation = self.affiliation(full);
        format!(
            "<presence xmlns='jabber:client' from='{ROOM}/{nick}' to='{to}'{kind}>\
               <x xmlns='{MUC_USER}'><item affiliation='{affiliation}' role='participant'{jid}{extra}/>\
               {own}</x></presence>"
        )
        .parse()
        .unwrap()
    }

    /// `full` enters as `nick`: what each occupant (the newcomer too) receives.
    fn enter(&mut self, nick: &str, full: &str) -> Vec<(String, Element)> {
        self.occupants.push((nick.to_owned(), full.to_owned()));
        let mut out = Vec::new();
        // The newcomer gets everyone's presence, its own last; the others get its.
        for (other, other_full) in self.occupants.clone() {
            out.push((
                full.to_owned(),
                self.presence(&other, &other_full, full, "", ""),
            ));
            if other_full != full {
                out.push((
                    other_full.clone(),
                    self.presence(nick, full, &other_full, "", ""),
                ));
            }
        }
        out
    }

    /// `nick` becomes `new`: the unavailable presence with 303, then the new one.
    fn rename(&mut self, nick: &str, new: &str) -> Vec<(String, Element)> {
        let index = self.occupants.iter().position(|(n, _)| n == nick).unwrap();
        let full = self.occupants[index].1.clone();
        let mut out = Vec::new();
        for (_, to) in self.occupants.clone() {
            let mut gone = self.presence(
                nick,
                &full,
                &to,
                &format!(" nick='{new}'"),
                " type='unavailable'",
            );
            let x = gone.get_child_mut("x", MUC_USER).unwrap();
            x.append_child(
                "<status xmlns='http://jabber.org/protocol/muc#user' code='303'/>"
                    .parse()
                    .unwrap(),
            );
            out.push((to.clone(), gone));
        }
        self.occupants[index].0 = new.to_owned();
        for (_, to) in self.occupants.clone() {
            out.push((to.clone(), self.presence(new, &full, &to, "", "")));
        }
        out
    }

    /// An affiliation change, as the room tells every occupant.
    fn set_affiliation(&mut self, jid: &str, affiliation: &'static str) -> Vec<(String, Element)> {
        self.affiliations.insert(jid.to_owned(), affiliation);
        self.occupants
            .iter()
            .map(|(_, to)| {
                let notice = format!(
                    "<message xmlns='jabber:client' from='{ROOM}' to='{to}'>\
                       <x xmlns='{MUC_USER}'><item affiliation='{affiliation}' jid='{jid}'/>\
                       <status code='321'/></x></message>"
                );
                (to.clone(), notice.parse().unwrap())
            })
            .collect()
    }

    /// A groupchat message from occupant `nick`, as the occupant `to` receives it.
    fn reflect_to(&self, nick: &str, message: &Element, to: &str) -> Vec<(String, Element)> {
        self.reflect(nick, message)
            .into_iter()
            .filter(|(full, _)| full == to)
            .collect()
    }

    /// A groupchat message from occupant `nick`, as each occupant receives it.
    fn reflect(&self, nick: &str, message: &Element) -> Vec<(String, Element)> {
        self.occupants
            .iter()
            .map(|(_, to)| {
                let mut copy = message.clone();
                for (name, value) in [("from", format!("{ROOM}/{nick}")), ("to", to.clone())] {
                    copy.set_attr(
                        minidom::rxml::Namespace::NONE,
                        name.try_into().unwrap(),
                        value,
                    );
                }
                (to.clone(), copy)
            })
            .collect()
    }
}

/// A device's stanzas until nothing is queued: IQs to the room (its archive's queries
/// too) or to the PEP service, messages and queries of the own archive kept in
/// `device.sent`. Returns how the room archive's results were handled.
fn run(world: &mut World, muc: &Muc, device: &mut Device<MemoryStore>) -> Vec<Handled> {
    let mut rng = common::rng::rng();
    let jid = device.manager.jid().to_owned();
    let mut archived = Vec::new();
    while let Some(stanza) = device.manager.poll_transmit().unwrap() {
        // (A query of the own archive is the test's to answer, from `device.sent`.)
        let own_archive =
            stanza.has_child("query", "urn:xmpp:mam:2") && stanza.attr("to").is_none();
        if stanza.name() != "iq" || own_archive {
            device.sent.push_back(stanza);
            continue;
        }
        let answers = if stanza.has_child("query", "urn:xmpp:mam:2") {
            assert_eq!(stanza.attr("to"), Some(ROOM));
            let mut answers = muc.archive.answer(&stanza);
            if muc.archive_refused {
                answers = vec![common::pep::error(
                    stanza.attr("id").unwrap(),
                    ROOM,
                    "forbidden",
                )];
            }
            if let Some(forger) = muc.forger
                && let Some(first) = answers.first().filter(|a| a.name() == "message")
            {
                // A copy of the first result from someone else, and before it, the
                // page's end from an occupant.
                let mut forged = first.clone();
                forged.set_attr(
                    minidom::rxml::Namespace::NONE,
                    "from".try_into().unwrap(),
                    forger,
                );
                answers.insert(0, forged);
                let mut end = answers.last().unwrap().clone();
                end.set_attr(
                    minidom::rxml::Namespace::NONE,
                    "from".try_into().unwrap(),
                    format!("{ROOM}/mallory"),
                );
                answers.insert(0, end);
            }
            answers
        } else if stanza.attr("to") == Some(ROOM) {
            vec![muc.answer(&stanza)]
        } else {
            vec![world.pep.answer(&jid, &stanza)]
        };
        for answer in answers {
            let handled = device
                .manager
                .handle_stanza(&answer, &mut rng, world.now)
                .unwrap();
            if answer.name() == "message" {
                archived.push(handled);
            }
        }
    }
    archived
}

/// Hands each stanza to the device whose full JID it is addressed to; returns how each
/// was handled, by recipient (followed by the archived messages a catch-up it started
/// read).
fn deliver(
    world: &mut World,
    muc: &Muc,
    devices: &mut [&mut Device<MemoryStore>],
    stanzas: Vec<(String, Element)>,
) -> Vec<(String, Handled)> {
    let mut rng = common::rng::rng();
    let mut handled = Vec::new();
    for (to, stanza) in stanzas {
        let device = devices
            .iter_mut()
            .find(|d| d.full_jid == to)
            .unwrap_or_else(|| panic!("no device {to}"));
        let outcome = device
            .manager
            .handle_stanza(&stanza, &mut rng, world.now)
            .unwrap();
        let archived = run(world, muc, device);
        handled.push((to.clone(), outcome));
        handled.extend(archived.into_iter().map(|h| (to.clone(), h)));
    }
    handled
}

fn room_ready(device: &mut Device<MemoryStore>) -> Vec<(usize, Option<omemo::RoomRefusal>)> {
    std::iter::from_fn(|| device.manager.poll_event())
        .filter_map(|event| match event {
            Event::RoomReady {
                members, refusal, ..
            } => Some((members, refusal)),
            _ => None,
        })
        .collect()
}

/// `sender` (occupant `nick`) writes `body` to the room; returns the id `send_to_room`
/// gave, the stanza, and the devices its `Event::Sent` names.
fn write(
    world: &mut World,
    muc: &Muc,
    sender: &mut Device<MemoryStore>,
    body: &str,
) -> (omemo::MessageId, Element, Vec<(String, u32)>) {
    let mut rng = common::rng::rng();
    let id = sender
        .manager
        .send_to_room(&bare(ROOM), body, &mut rng, world.now)
        .unwrap();
    run(world, muc, sender);
    // (Empty messages completing sessions, to single contacts, may come first.)
    let stanza = std::iter::from_fn(|| sender.next_message())
        .find(|m| m.attr("to") == Some(ROOM))
        .expect("the room message");
    assert_eq!(stanza.attr("type"), Some("groupchat"));
    let recipients = std::iter::from_fn(|| sender.manager.poll_event())
        .find_map(|event| match event {
            Event::Sent {
                id: sent,
                recipients,
                ..
            } if sent == id => Some(recipients),
            _ => None,
        })
        .expect("sent");
    let devices = recipients
        .iter()
        .map(|r| (r.jid.clone(), r.device_id))
        .collect();
    (id, stanza, devices)
}

fn speaking(versions: Versions) -> ManagerConfig {
    ManagerConfig {
        versions,
        ..ManagerConfig::default()
    }
}

#[test]
fn members_of_both_versions_read_each_other_and_the_room_keeps_up_with_changes() {
    let mut world = World::new();
    // Alice speaks both versions, bob OMEMO 2 only (Kaidan), carol legacy only
    // (a Conversations-era client).
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with(
        "bob@example.org",
        "pc",
        MemoryStore::new(),
        speaking(Versions::only(Version::Omemo2)),
    );
    let mut carol = world.device_with(
        "carol@example.org",
        "tablet",
        MemoryStore::new(),
        speaking(Versions::only(Version::Legacy)),
    );
    // A member who never comes online here, and a stranger.
    let erin = world.device("erin@example.org", "laptop");
    let mut dave = world.device("dave@example.org", "pc");
    let mut muc = Muc::new(&[
        ("alice@example.org", "owner"),
        ("bob@example.org", "member"),
        ("carol@example.org", "admin"),
        ("erin@example.org", "member"),
        ("mallory@example.org", "outcast"),
    ]);

    // Everyone joins: the managers read the room, then the presences.
    for (device, nick) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        device
            .manager
            .join_room(&bare(ROOM), nick, world.now)
            .unwrap();
        run(&mut world, &muc, device);
        // Not ready before the room has let it in.
        assert_eq!(room_ready(device), [], "{nick}");
        assert_eq!(
            device
                .manager
                .encrypt_for_room(&bare(ROOM), "too early", &mut common::rng::rng(), world.now)
                .err(),
            Some(ManagerError::RoomNotUsable {
                room: ROOM.to_owned(),
                reason: omemo::RoomRefusal::NotEntered
            })
        );
    }
    for (nick, full) in [
        ("alice", "alice@example.org/phone"),
        ("bob", "bob@example.org/pc"),
        ("carol", "carol@example.org/tablet"),
    ] {
        let presences = muc.enter(nick, full);
        let handled = deliver(
            &mut world,
            &muc,
            &mut [&mut alice, &mut bob, &mut carol],
            presences,
        );
        assert!(
            handled.iter().all(|(_, h)| *h == Handled::Room),
            "{handled:?}"
        );
    }
    for (device, nick) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        assert_eq!(room_ready(device), [(4, None)], "{nick}: once");
    }

    // Alice writes: bob (in OMEMO 2) and carol (in legacy OMEMO) read the one stanza,
    // from alice, in the room; the offline member erin gets a key too; alice's own copy
    // is recognised.
    let (id, stanza, devices) = write(&mut world, &muc, &mut alice, "hello room");
    assert_eq!(
        encrypted_versions(&stanza),
        [Version::Legacy, Version::Omemo2]
    );
    let ids = |devices: &[(String, u32)]| -> Vec<String> {
        let mut jids: Vec<String> = devices.iter().map(|(j, _)| j.clone()).collect();
        jids.sort();
        jids
    };
    assert_eq!(
        ids(&devices),
        ["bob@example.org", "carol@example.org", "erin@example.org"]
    );
    assert!(devices.contains(&("erin@example.org".to_owned(), erin.manager.device_id())));
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut carol],
        muc.reflect("alice", &stanza),
    );
    for (to, outcome) in &handled {
        match outcome {
            Handled::Reflected { room, id: own } => {
                assert_eq!(to, "alice@example.org/phone");
                assert_eq!((room.as_str(), *own), (ROOM, Some(id)));
            }
            Handled::Message { message, via } => {
                assert_eq!(*via, Via::Room);
                assert_eq!(message.sender, "alice@example.org");
                assert_eq!(message.room.as_deref(), Some(ROOM));
                assert_eq!(message.body.as_deref(), Some("hello room"));
                assert!(
                    message.affix_violations.is_empty(),
                    "{:?}",
                    message.affix_violations
                );
            }
            other => panic!("{to}: {other:?}"),
        }
    }
    assert_eq!(handled.len(), 3);
    let versions_read: Vec<Version> = handled
        .iter()
        .filter_map(|(_, h)| match h {
            Handled::Message { message, .. } => Some(message.version),
            _ => None,
        })
        .collect();
    assert_eq!(versions_read, [Version::Omemo2, Version::Legacy]);

    // Bob writes in OMEMO 2 (the SCE `to` is the room), changes his nickname, writes
    // again: alice attributes both to him.
    let (_, first, _) = write(&mut world, &muc, &mut bob, "from bob");
    let renamed = muc.rename("bob", "robert");
    deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut carol],
        renamed,
    );
    let (_, second, _) = write(&mut world, &muc, &mut bob, "from robert");
    for (nick, stanza, body) in [
        ("bob", &first, "from bob"),
        ("robert", &second, "from robert"),
    ] {
        let copies: Vec<(String, Element)> =
            muc.reflect_to(nick, stanza, "alice@example.org/phone");
        let handled = deliver(&mut world, &muc, &mut [&mut alice], copies);
        let Handled::Message { message, .. } = &handled[0].1 else {
            panic!("{handled:?}")
        };
        assert_eq!(
            (message.sender.as_str(), message.body.as_deref()),
            ("bob@example.org", Some(body))
        );
        assert!(
            message.affix_violations.is_empty(),
            "{:?}",
            message.affix_violations
        );
    }

    // Carol loses her membership: alice's next message has no key for her.
    let notices = muc.set_affiliation("carol@example.org", "none");
    deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut carol],
        notices,
    );
    let (_, stanza, devices) = write(&mut world, &muc, &mut alice, "carol is gone");
    assert_eq!(ids(&devices), ["bob@example.org", "erin@example.org"]);
    let copies: Vec<(String, Element)> =
        muc.reflect_to("alice", &stanza, "carol@example.org/tablet");
    let handled = deliver(&mut world, &muc, &mut [&mut carol], copies);
    // (No legacy element at all: nobody left who needs one.)
    assert_eq!(handled[0].1, Handled::Unhandled, "{handled:?}");
    assert_eq!(encrypted_versions(&stanza), [Version::Omemo2]);

    // A message from an occupant who is no member is refused, unread.
    let presences = muc.enter("dave", "dave@example.org/pc");
    let to_alice: Vec<(String, Element)> = presences
        .into_iter()
        .filter(|(to, _)| to == "alice@example.org/phone")
        .collect();
    deliver(&mut world, &muc, &mut [&mut alice], to_alice);
    let mut rng = common::rng::rng();
    world.prepare(&mut dave, "alice@example.org");
    let mut from_dave = dave
        .manager
        .encrypt(
            &[bare("alice@example.org")],
            "let me in",
            &mut rng,
            world.now,
        )
        .unwrap()
        .stanza;
    from_dave.set_attr(
        minidom::rxml::Namespace::NONE,
        "type".try_into().unwrap(),
        "groupchat",
    );
    let copies: Vec<(String, Element)> =
        muc.reflect_to("dave", &from_dave, "alice@example.org/phone");
    let handled = deliver(&mut world, &muc, &mut [&mut alice], copies);
    assert_eq!(
        handled[0].1,
        Handled::Undecryptable {
            error: ManagerError::NotARoomMember {
                room: ROOM.to_owned(),
                jid: "dave@example.org".to_owned()
            },
            via: Via::Room
        }
    );
    // An unknown nickname is not attributed to anyone.
    let copies: Vec<(String, Element)> =
        muc.reflect_to("nobody", &from_dave, "alice@example.org/phone");
    let handled = deliver(&mut world, &muc, &mut [&mut alice], copies);
    assert!(matches!(
        handled[0].1,
        Handled::Undecryptable {
            error: ManagerError::UnknownOccupant { .. },
            ..
        }
    ));
}

#[test]
fn rooms_that_cannot_carry_omemo_are_refused_with_the_reason() {
    for (non_anonymous, members_only, reason) in [
        (false, true, omemo::RoomRefusal::Anonymous),
        (true, false, omemo::RoomRefusal::NotMembersOnly),
    ] {
        let mut world = World::new();
        let mut rng = common::rng::rng();
        let mut alice = world.device("alice@example.org", "phone");
        let _bob = world.device("bob@example.org", "pc");
        let mut muc = Muc::new(&[
            ("alice@example.org", "owner"),
            ("bob@example.org", "member"),
        ]);
        muc.non_anonymous = non_anonymous;
        muc.members_only = members_only;
        alice
            .manager
            .join_room(&bare(ROOM), "alice", world.now)
            .unwrap();
        run(&mut world, &muc, &mut alice);
        let presences = muc.enter("alice", "alice@example.org/phone");
        deliver(&mut world, &muc, &mut [&mut alice], presences);
        assert_eq!(room_ready(&mut alice), [(2, Some(reason))]);
        let id = alice
            .manager
            .send_to_room(&bare(ROOM), "hello", &mut rng, world.now)
            .unwrap();
        run(&mut world, &muc, &mut alice);
        assert!(alice.next_message().is_none(), "nothing goes out");
        let not_sent = std::iter::from_fn(|| alice.manager.poll_event()).find_map(|e| match e {
            Event::NotSent { id: i, error } if i == id => Some(error),
            _ => None,
        });
        assert_eq!(
            not_sent,
            Some(ManagerError::RoomNotUsable {
                room: ROOM.to_owned(),
                reason
            })
        );
    }
    // A room not joined.
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let mut alice = world.device("alice@example.org", "phone");
    assert_eq!(
        alice
            .manager
            .send_to_room(&bare(ROOM), "hello", &mut rng, world.now)
            .err(),
        Some(ManagerError::RoomNotJoined {
            room: ROOM.to_owned()
        })
    );
}

#[test]
fn the_nickname_map_survives_a_restart() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device("bob@example.org", "pc");
    let mut muc = Muc::new(&[
        ("alice@example.org", "owner"),
        ("bob@example.org", "member"),
    ]);
    for (device, nick) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        device
            .manager
            .join_room(&bare(ROOM), nick, world.now)
            .unwrap();
        run(&mut world, &muc, device);
    }
    for (nick, full) in [
        ("alice", "alice@example.org/phone"),
        ("bob", "bob@example.org/pc"),
    ] {
        let presences = muc.enter(nick, full);
        deliver(&mut world, &muc, &mut [&mut alice, &mut bob], presences);
    }
    let (_, stanza, _) = write(&mut world, &muc, &mut bob, "before the restart");

    // Alice restarts on her store and joins again; bob's message (say, from the room's
    // history) comes before any presence: the stored nickname names him.
    let store = alice.manager.into_store().unwrap();
    let mut alice = world.device_with(
        "alice@example.org",
        "phone",
        store,
        ManagerConfig::default(),
    );
    alice
        .manager
        .join_room(&bare(ROOM), "alice", world.now)
        .unwrap();
    run(&mut world, &muc, &mut alice);
    let copies: Vec<(String, Element)> = muc.reflect_to("bob", &stanza, "alice@example.org/phone");
    let handled = deliver(&mut world, &muc, &mut [&mut alice], copies);
    let Handled::Message { message, .. } = &handled[0].1 else {
        panic!("{handled:?}")
    };
    assert_eq!(message.sender, "bob@example.org");
    assert_eq!(message.body.as_deref(), Some("before the restart"));
}

#[test]
fn a_room_that_refuses_this_device_or_never_answers_is_not_written_to() {
    let mut world = World::new();
    let mut rng = common::rng::rng();
    let mut alice = world.device("alice@example.org", "phone");
    let _bob = world.device("bob@example.org", "pc");
    let muc = Muc::new(&[("bob@example.org", "owner")]);
    alice
        .manager
        .join_room(&bare(ROOM), "alice", world.now)
        .unwrap();
    run(&mut world, &muc, &mut alice);
    // A message to a contact queued behind a room message that waits is not held up.
    let to_room = alice
        .manager
        .send_to_room(&bare(ROOM), "to the room", &mut rng, world.now)
        .unwrap();
    world.prepare(&mut alice, "bob@example.org");
    let to_bob = alice
        .manager
        .send(&[bare("bob@example.org")], "to bob", &mut rng, world.now)
        .unwrap();
    run(&mut world, &muc, &mut alice);
    let sent: Vec<omemo::MessageId> = std::iter::from_fn(|| alice.manager.poll_event())
        .filter_map(|e| match e {
            Event::Sent { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [to_bob]);
    // Not a member: the room answers the join with an error presence.
    let refusal: Element = format!(
        "<presence xmlns='jabber:client' type='error' from='{ROOM}/alice' to='alice@example.org/phone'>\
           <x xmlns='http://jabber.org/protocol/muc'/><error type='auth'>\
           <registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    )
    .parse()
    .unwrap();
    assert_eq!(
        alice
            .manager
            .handle_stanza(&refusal, &mut rng, world.now)
            .unwrap(),
        Handled::Room
    );
    run(&mut world, &muc, &mut alice);
    let events: Vec<Event> = std::iter::from_fn(|| alice.manager.poll_event()).collect();
    assert!(
        events.contains(&Event::RoomReady {
            room: ROOM.to_owned(),
            members: 1,
            refusal: Some(omemo::RoomRefusal::NotEntered)
        }),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::NotSent { id, error: ManagerError::RoomNotUsable { .. } } if *id == to_room)), "{events:?}");

    // A room whose queries go unanswered is given up after a minute, and said so.
    let mut carol = world.device("carol@example.org", "pc");
    carol
        .manager
        .join_room(&bare(ROOM), "carol", world.now)
        .unwrap();
    while carol.manager.poll_transmit().unwrap().is_some() {}
    world.now += 61;
    carol.manager.handle_timeout(&mut rng, world.now).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| carol.manager.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::RoomReady {
                refusal: Some(omemo::RoomRefusal::Unreadable),
                ..
            }
        )),
        "{events:?}"
    );

    // A lost stream is no unanswered query: the room waits for the next join.
    let mut erin = world.device("erin@example.org", "pc");
    erin.manager
        .join_room(&bare(ROOM), "erin", world.now)
        .unwrap();
    while erin.manager.poll_transmit().unwrap().is_some() {}
    erin.manager.connection_lost();
    world.now += 61;
    erin.manager.handle_timeout(&mut rng, world.now).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| erin.manager.poll_event()).collect();
    assert!(
        !events.iter().any(|e| matches!(e, Event::RoomReady { .. })),
        "{events:?}"
    );

    // Leaving a room fails what waits for it at once.
    let mut dave = world.device("dave@example.org", "pc");
    dave.manager
        .join_room(&bare(ROOM), "dave", world.now)
        .unwrap();
    let waiting = dave
        .manager
        .send_to_room(&bare(ROOM), "later", &mut rng, world.now)
        .unwrap();
    dave.manager.leave_room(&bare(ROOM));
    let events: Vec<Event> = std::iter::from_fn(|| dave.manager.poll_event()).collect();
    assert!(
        events.contains(&Event::NotSent {
            id: waiting,
            error: ManagerError::RoomNotJoined {
                room: ROOM.to_owned()
            }
        }),
        "{events:?}"
    );
}

/// `device`'s events until none is left: the catch-ups that ended, with the archive,
/// the messages read and whether they completed.
fn caught_up(device: &mut Device<MemoryStore>) -> Vec<(String, usize, bool)> {
    std::iter::from_fn(|| device.manager.poll_event())
        .filter_map(|event| match event {
            Event::CaughtUp {
                archive,
                messages,
                complete,
            } => Some((archive, messages, complete)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_member_back_after_time_away_reads_the_room_archive_once() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut bob = world.device_with(
        "bob@example.org",
        "pc",
        MemoryStore::new(),
        speaking(Versions::only(Version::Omemo2)),
    );
    let mut carol = world.device("carol@example.org", "tablet");
    let mut eve = world.device("eve@example.org", "laptop");
    let mut muc = Muc::new(&[
        ("alice@example.org", "owner"),
        ("bob@example.org", "member"),
        ("carol@example.org", "member"),
        ("eve@example.org", "member"),
    ]);
    let room = bare(ROOM);

    // Carol asks for the catch-up as she joins: it waits until the room is ready, and
    // reads nothing the first time (nothing was said since her device was made).
    for (device, nick) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        device.manager.join_room(&room, nick, world.now).unwrap();
        run(&mut world, &muc, device);
    }
    carol.manager.catch_up_room(&room, world.now).unwrap();
    assert!(run(&mut world, &muc, &mut carol).is_empty());
    assert!(
        !carol.manager.is_catching_up(),
        "not before the room is ready"
    );
    for (nick, full) in [
        ("alice", "alice@example.org/phone"),
        ("bob", "bob@example.org/pc"),
        ("carol", "carol@example.org/tablet"),
    ] {
        let presences = muc.enter(nick, full);
        deliver(
            &mut world,
            &muc,
            &mut [&mut alice, &mut bob, &mut carol],
            presences,
        );
    }
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 0, true)]);

    // Alice writes while carol is in: carol reads it live (and the room's archive id of
    // it is where her next catch-up starts).
    let (_, stanza, _) = write(&mut world, &muc, &mut alice, "while carol is in");
    let live = muc.archive("alice", "alice@example.org", &stanza, world.now);
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut carol],
        muc.reflect_to("alice", &live, "carol@example.org/tablet"),
    );
    assert!(
        matches!(&handled[0].1, Handled::Message { message, via: Via::Room } if message.body.as_deref() == Some("while carol is in")),
        "{handled:?}"
    );
    while carol.next_message().is_some() {}

    // Carol goes away. Alice and bob write (bob's first message to her is a key
    // exchange); one message names a second sender in an `<x>` of its own; bob becomes
    // robert, and eve takes the nickname bob.
    world.now += 60;
    carol.manager.connection_lost();
    muc.occupants.retain(|(nick, _)| nick != "carol");
    let mut lives = Vec::new();
    for (nick, body) in [("alice", "one"), ("bob", "two"), ("alice", "three")] {
        let sender = if nick == "bob" { &mut bob } else { &mut alice };
        let jid = format!("{nick}@example.org");
        let (_, stanza, devices) = write(&mut world, &muc, sender, body);
        assert!(devices.iter().any(|(j, _)| j == "carol@example.org"));
        lives.push(muc.archive(nick, &jid, &stanza, world.now));
    }
    let (_, mut forged, _) = write(&mut world, &muc, &mut bob, "forged");
    forged.append_child(
        format!("<x xmlns='{MUC_USER}'><item jid='alice@example.org'/></x>")
            .parse()
            .unwrap(),
    );
    muc.archive("bob", "bob@example.org", &forged, world.now);
    let renamed = muc.rename("bob", "robert");
    deliver(&mut world, &muc, &mut [&mut alice, &mut bob], renamed);
    eve.manager.join_room(&room, "bob", world.now).unwrap();
    run(&mut world, &muc, &mut eve);
    let presences = muc.enter("bob", "eve@example.org/laptop");
    deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut eve],
        presences,
    );

    // Carol is back: the catch-up reads after the last message she read, attributes by
    // the JID the archive names (the nickname bob is eve's now), refuses the message
    // that names two, and completes bob's new session once, after it.
    world.now += 60;
    carol.manager.connected(world.now).unwrap();
    // (Her own archive's catch-up runs too, and ends last.)
    carol.manager.catch_up(world.now).unwrap();
    run(&mut world, &muc, &mut carol);
    let own_query = carol.sent.pop_back().unwrap();
    assert_eq!(own_query.name(), "iq");
    carol.manager.join_room(&room, "carol", world.now).unwrap();
    carol.manager.catch_up_room(&room, world.now).unwrap();
    // A message before the room's lists are in cannot be attributed yet (nor move the
    // position): the archive gives it.
    let (_, stanza, _) = write(&mut world, &muc, &mut alice, "during the join");
    let live = muc.archive("alice", "alice@example.org", &stanza, world.now);
    let mut early = live.clone();
    early.set_attr(
        minidom::rxml::Namespace::NONE,
        "to".try_into().unwrap(),
        "carol@example.org/tablet",
    );
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut carol],
        vec![("carol@example.org/tablet".to_owned(), early)],
    );
    assert_eq!(
        handled[0].1,
        Handled::Undecryptable {
            error: ManagerError::RoomNotUsable {
                room: ROOM.to_owned(),
                reason: omemo::RoomRefusal::NotReady
            },
            via: Via::Room
        }
    );
    let presences = muc.enter("carol", "carol@example.org/tablet");
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut eve, &mut carol],
        presences,
    );
    let read: Vec<(String, String)> = handled
        .iter()
        .filter_map(|(_, h)| match h {
            Handled::Message {
                message,
                via: Via::RoomArchive,
            } => {
                assert_eq!(message.room.as_deref(), Some(ROOM));
                Some((message.sender.clone(), message.body.clone().unwrap()))
            }
            _ => None,
        })
        .collect();
    let pair = |jid: &str, body: &str| (jid.to_owned(), body.to_owned());
    assert_eq!(
        read,
        [
            pair("alice@example.org", "one"),
            pair("bob@example.org", "two"),
            pair("alice@example.org", "three"),
            pair("alice@example.org", "during the join"),
        ]
    );
    let refused: Vec<&Handled> = handled
        .iter()
        .map(|(_, h)| h)
        .filter(|h| matches!(h, Handled::Undecryptable { .. }))
        .collect();
    assert_eq!(
        refused,
        [&Handled::Undecryptable {
            error: ManagerError::UnknownOccupant {
                room: ROOM.to_owned(),
                nick: "bob".to_owned()
            },
            via: Via::RoomArchive
        }]
    );
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 5, true)]);
    // Bob's new session is completed once both catch-ups are over, not before.
    assert!(carol.next_message().is_none());
    assert!(carol.manager.is_catching_up());
    let own_end: Element = format!(
        "<iq xmlns='jabber:client' type='result' id='{}'>\
           <fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'/></fin></iq>",
        own_query.attr("id").unwrap()
    )
    .parse()
    .unwrap();
    deliver(
        &mut world,
        &muc,
        &mut [&mut carol],
        vec![("carol@example.org/tablet".to_owned(), own_end)],
    );
    assert_eq!(
        caught_up(&mut carol),
        [("carol@example.org".to_owned(), 0, true)]
    );
    let completions: Vec<Element> = std::iter::from_fn(|| carol.next_message()).collect();
    assert_eq!(
        completions
            .iter()
            .map(|m| m.attr("to").unwrap())
            .collect::<Vec<_>>(),
        ["bob@example.org"],
        "one empty message, to the new session's device"
    );

    // The live copy of a message the archive gave is a duplicate; the next catch-up
    // reads nothing again.
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut carol],
        muc.reflect_to("alice", &lives[2], "carol@example.org/tablet"),
    );
    assert_eq!(handled[0].1, Handled::Consumed);
    carol.manager.connection_lost();
    carol.manager.connected(world.now).unwrap();
    carol.manager.join_room(&room, "carol", world.now).unwrap();
    carol.manager.catch_up_room(&room, world.now).unwrap();
    run(&mut world, &muc, &mut carol);
    muc.occupants.retain(|(nick, _)| nick != "carol");
    let presences = muc.enter("carol", "carol@example.org/tablet");
    let handled = deliver(
        &mut world,
        &muc,
        &mut [&mut alice, &mut bob, &mut eve, &mut carol],
        presences,
    );
    assert!(
        handled
            .iter()
            .all(|(_, h)| !matches!(h, Handled::Message { .. })),
        "{handled:?}"
    );
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 0, true)]);
}

#[test]
fn room_catch_ups_refused_forged_or_for_rooms_without_omemo() {
    let mut world = World::new();
    let mut alice = world.device("alice@example.org", "phone");
    let mut carol = world.device("carol@example.org", "tablet");
    let mut muc = Muc::new(&[
        ("alice@example.org", "owner"),
        ("carol@example.org", "member"),
    ]);
    let room = bare(ROOM);
    assert_eq!(
        carol.manager.catch_up_room(&room, world.now).err(),
        Some(ManagerError::RoomNotJoined {
            room: ROOM.to_owned()
        })
    );
    alice.manager.join_room(&room, "alice", world.now).unwrap();
    run(&mut world, &muc, &mut alice);
    let presences = muc.enter("alice", "alice@example.org/phone");
    deliver(&mut world, &muc, &mut [&mut alice], presences);
    let (_, stanza, _) = write(&mut world, &muc, &mut alice, "before carol came");
    muc.archive("alice", "alice@example.org", &stanza, world.now);
    // (A copy the archive says a non-member sent.)
    muc.archive("alice", "mallory@example.org", &stanza, world.now);

    // Carol's first catch-up reads what was said since her device was made; a result
    // from anyone but the room, and an answer from an occupant, are ignored; a message
    // the archive says a non-member sent is refused.
    muc.forger = Some("mallory@example.org");
    let join = |world: &mut World, muc: &mut Muc, carol: &mut Device<MemoryStore>| {
        carol.manager.join_room(&room, "carol", world.now).unwrap();
        carol.manager.catch_up_room(&room, world.now).unwrap();
        run(world, muc, carol);
        muc.occupants.retain(|(nick, _)| nick != "carol");
        let presences: Vec<(String, Element)> = muc
            .enter("carol", "carol@example.org/tablet")
            .into_iter()
            .filter(|(to, _)| to.starts_with("carol"))
            .collect();
        let handled = deliver(world, muc, &mut [carol], presences);
        handled.into_iter().map(|(_, h)| h).collect::<Vec<_>>()
    };
    let handled = join(&mut world, &mut muc, &mut carol);
    assert!(handled.contains(&Handled::Dropped(
        "archive result not from the archive queried"
    )));
    let read: Vec<&str> = handled
        .iter()
        .filter_map(|h| match h {
            Handled::Message { message, .. } => message.body.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(read, ["before carol came"]);
    assert!(handled.contains(&Handled::Undecryptable {
        error: ManagerError::NotARoomMember {
            room: ROOM.to_owned(),
            jid: "mallory@example.org".to_owned()
        },
        via: Via::RoomArchive
    }));
    // (The end of the page from an occupant did not end it before its results.)
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 2, true)]);
    muc.forger = None;

    // A refused query ends the catch-up early; the next one reads what it missed.
    carol.manager.connection_lost();
    let (_, stanza, _) = write(&mut world, &muc, &mut alice, "while carol was away");
    muc.archive("alice", "alice@example.org", &stanza, world.now);
    muc.archive_refused = true;
    join(&mut world, &mut muc, &mut carol);
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 0, false)]);
    assert!(!carol.manager.is_catching_up());
    muc.archive_refused = false;
    carol.manager.connection_lost();
    let handled = join(&mut world, &mut muc, &mut carol);
    assert!(
        handled.iter().any(
            |h| matches!(h, Handled::Message { message, via: Via::RoomArchive }
            if message.body.as_deref() == Some("while carol was away"))
        ),
        "{handled:?}"
    );
    assert_eq!(caught_up(&mut carol), [(ROOM.to_owned(), 1, true)]);

    // A room that keeps no archive is not asked; nor is one that cannot carry OMEMO.
    carol.manager.connection_lost();
    muc.archived = false;
    muc.archive_refused = true;
    join(&mut world, &mut muc, &mut carol);
    assert_eq!(caught_up(&mut carol), []);
    assert!(!carol.manager.is_catching_up());
    carol.manager.connection_lost();
    muc.non_anonymous = false;
    join(&mut world, &mut muc, &mut carol);
    assert_eq!(caught_up(&mut carol), []);
    assert!(!carol.manager.is_catching_up());
    assert_eq!(
        carol
            .manager
            .encrypt_for_room(&room, "no", &mut common::rng::rng(), world.now)
            .err(),
        Some(ManagerError::RoomNotUsable {
            room: ROOM.to_owned(),
            reason: omemo::RoomRefusal::Anonymous
        })
    );
}
