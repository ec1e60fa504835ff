//! The rooms the bot follows, kept as its own bookmarks (XEP-0402, the PEP node
//! `urn:xmpp:bookmarks:1`, readable by the account only): a room joined on an invitation
//! is joined again after a restart, and an operator adds or removes the bot's rooms from
//! any client that edits the account's bookmarks (taking effect at the bot's next login).
//! Room passwords are not kept: a room with one is not joined again.

use jid::BareJid;
use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use omemo::stanza;

/// The PEP node of the bookmarks.
const NODE: &str = "urn:xmpp:bookmarks:1";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// The publish-options XEP-0402 asks for: every item kept, readable by the account only.
const OPTIONS: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
];

/// A room to join at every login (a bookmark with `autojoin`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bookmark {
    pub(crate) room: BareJid,
    /// The nickname to join with, if the bookmark names one.
    pub(crate) nick: Option<String>,
}

/// The query of the account's bookmarks.
pub(crate) fn fetch_iq(id: &str, own: &BareJid) -> Element {
    stanza::fetch_items_iq(id, own.as_str(), NODE, None)
}

/// The bookmarks to join from the answer to [`fetch_iq`]: those with `autojoin` (`true`
/// or `1`) whose item id is a room's bare JID. An error (no such node yet) is none.
pub(crate) fn autojoin(result: &Element) -> Vec<Bookmark> {
    let Some(items) = result
        .get_child("pubsub", NS_PUBSUB)
        .and_then(|pubsub| pubsub.get_child("items", NS_PUBSUB))
    else {
        return Vec::new();
    };
    items
        .children()
        .filter(|item| item.is("item", NS_PUBSUB))
        .filter_map(|item| {
            let conference = item.get_child("conference", NODE)?;
            let autojoin = matches!(conference.attr("autojoin"), Some("true" | "1"));
            let room = BareJid::new(item.attr("id")?).ok()?;
            autojoin.then(|| Bookmark {
                room,
                nick: conference
                    .get_child("nick", NODE)
                    .map(Element::text)
                    .filter(|nick| !nick.is_empty()),
            })
        })
        .collect()
}

/// The publication of a bookmark of `room`, joined at every login as `nick` (the
/// password, if the room has one, is not kept: it stays with the invitation).
pub(crate) fn publish_iq(id: &str, room: &BareJid, nick: &str) -> Element {
    let mut payload = Element::builder("conference", NODE)
        .append(Element::builder("nick", NODE).append(nick).build())
        .build();
    if let Ok(name) = NcName::try_from("autojoin") {
        payload.set_attr(Namespace::NONE, name, "true");
    }
    stanza::publish_iq_with_options(id, NODE, room.as_str(), payload, OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookmarks_with_autojoin_are_read_and_published_as_xep_0402_says() {
        let result: Element = "<iq xmlns='jabber:client' type='result' id='b1'>\
            <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'>\
              <item id='lounge@muc.example.org'><conference xmlns='urn:xmpp:bookmarks:1' \
                autojoin='true' name='Lounge'><nick>echo</nick></conference></item>\
              <item id='other@muc.example.org'><conference xmlns='urn:xmpp:bookmarks:1' \
                autojoin='1'/></item>\
              <item id='quiet@muc.example.org'><conference xmlns='urn:xmpp:bookmarks:1'/></item>\
              <item id='not a jid@@'><conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/></item>\
              <item id='x@muc.example.org'><other xmlns='urn:example'/></item>\
            </items></pubsub></iq>"
            .parse()
            .unwrap();
        let jid = |s: &str| BareJid::new(s).unwrap();
        assert_eq!(
            autojoin(&result),
            [
                Bookmark {
                    room: jid("lounge@muc.example.org"),
                    nick: Some("echo".to_owned())
                },
                Bookmark {
                    room: jid("other@muc.example.org"),
                    nick: None
                },
            ]
        );
        let none: Element = "<iq xmlns='jabber:client' type='error' id='b1'>\
            <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
            </error></iq>"
            .parse()
            .unwrap();
        assert_eq!(autojoin(&none), []);

        let publish = publish_iq("p1", &jid("lounge@muc.example.org"), "echo");
        let pubsub = publish.get_child("pubsub", NS_PUBSUB).unwrap();
        let item = pubsub
            .get_child("publish", NS_PUBSUB)
            .unwrap()
            .get_child("item", NS_PUBSUB)
            .unwrap();
        assert_eq!(item.attr("id"), Some("lounge@muc.example.org"));
        let conference = item.get_child("conference", NODE).unwrap();
        assert_eq!(conference.attr("autojoin"), Some("true"));
        assert_eq!(conference.get_child("nick", NODE).unwrap().text(), "echo");
        let options = String::from(pubsub.get_child("publish-options", NS_PUBSUB).unwrap());
        assert!(options.contains("whitelist"), "{options}");
        // What it publishes, it reads back.
        let mut back: Element = "<iq xmlns='jabber:client' type='result' id='b2'>\
            <pubsub xmlns='http://jabber.org/protocol/pubsub'>\
            <items node='urn:xmpp:bookmarks:1'/></pubsub></iq>"
            .parse()
            .unwrap();
        back.get_child_mut("pubsub", NS_PUBSUB)
            .unwrap()
            .get_child_mut("items", NS_PUBSUB)
            .unwrap()
            .append_child(item.clone());
        assert_eq!(
            autojoin(&back),
            [Bookmark {
                room: jid("lounge@muc.example.org"),
                nick: Some("echo".to_owned())
            }]
        );
    }
}
