//! Multi-user chat rooms (XEP-0045) as OMEMO needs them (XEP-0384 §Group Chats): the
//! room's features (non-anonymous, members-only), its member, admin and owner lists, and
//! the occupants' real JIDs from their presences and from the room's affiliation notices.
//!
//! Pure functions over [`Element`]s; which room a stanza may speak for is the caller's
//! check.

use minidom::Element;

use super::xml::{element, element_with, iq};

/// `http://jabber.org/protocol/muc#user`.
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
/// `http://jabber.org/protocol/muc#admin`.
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

/// An affiliation that makes someone a member of a members-only room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    /// `member`.
    Member,
    /// `admin`.
    Admin,
    /// `owner`.
    Owner,
}

impl Affiliation {
    /// The three lists a members-only room's members are on.
    pub const ALL: [Self; 3] = [Self::Member, Self::Admin, Self::Owner];

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// A membership from an `affiliation` attribute; `None` for `none`, `outcast` and
    /// anything else (not a member).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// What a room's disco#info says about who may read OMEMO in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomFeatures {
    /// `muc_nonanonymous`: every occupant sees the others' real JIDs.
    pub non_anonymous: bool,
    /// `muc_membersonly`: only members may enter.
    pub members_only: bool,
    /// `urn:xmpp:mam:2`: the room keeps an archive (XEP-0313) its occupants may read.
    pub archived: bool,
}

/// The disco#info query of `room`.
pub fn room_info_iq(id: &str, room: &str) -> Element {
    iq("get", id, Some(room), element("query", NS_DISCO_INFO))
}

/// The features of a disco#info result; `None` when it is no such result.
pub fn parse_room_features(result: &Element) -> Option<RoomFeatures> {
    let query = result.get_child("query", NS_DISCO_INFO)?;
    let has = |var: &str| {
        query
            .children()
            .any(|c| c.is("feature", NS_DISCO_INFO) && c.attr("var") == Some(var))
    };
    Some(RoomFeatures {
        non_anonymous: has("muc_nonanonymous"),
        members_only: has("muc_membersonly"),
        archived: has(super::mam::NAMESPACE),
    })
}

/// The query of the room's list of `affiliation` (XEP-0045 §9.5, §10.5, §10.8).
pub fn affiliation_list_iq(id: &str, room: &str, affiliation: Affiliation) -> Element {
    let mut query = element("query", NS_ADMIN);
    query.append_child(element_with(
        "item",
        NS_ADMIN,
        &[("affiliation", affiliation.as_str())],
    ));
    iq("get", id, Some(room), query)
}

/// The bare JIDs on an affiliation list result.
pub fn parse_affiliation_list(result: &Element) -> Vec<String> {
    result
        .get_child("query", NS_ADMIN)
        .into_iter()
        .flat_map(|q| q.children().filter(|c| c.is("item", NS_ADMIN)))
        .filter_map(|item| item.attr("jid").and_then(bare))
        .collect()
}

/// What one occupant presence (or affiliation notice) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccupantUpdate {
    /// The occupant's nickname (`None` for a notice from the room's bare JID).
    pub nick: Option<String>,
    /// The occupant's real bare JID, when the room shows it.
    pub jid: Option<String>,
    /// Its affiliation, when given: `Some(None)` for `none` or `outcast` (not a member).
    pub affiliation: Option<Option<Affiliation>>,
    /// Status 110: the presence is this client's own.
    pub own: bool,
    /// The presence is `unavailable` (left, or changed its nickname).
    pub left: bool,
    /// Status 303: the nickname it changed to.
    pub new_nick: Option<String>,
}

/// Reads the `<x xmlns='muc#user'>` of a presence or message from a room; `None` when it
/// has none. Several `<item>`s (one per session of a multi-session occupant) name the
/// same real JID; the first is taken.
pub fn parse_occupant(stanza: &Element) -> Option<OccupantUpdate> {
    let x = stanza.get_child("x", NS_USER)?;
    let item = x.get_child("item", NS_USER);
    let codes: Vec<&str> = x
        .children()
        .filter(|c| c.is("status", NS_USER))
        .filter_map(|c| c.attr("code"))
        .collect();
    let nick = stanza
        .attr("from")
        .and_then(|from| jid::Jid::new(from).ok())
        .and_then(|from| from.resource().map(|r| r.to_string()));
    Some(OccupantUpdate {
        nick,
        jid: item.and_then(|i| i.attr("jid")).and_then(bare),
        affiliation: item
            .and_then(|i| i.attr("affiliation"))
            .map(Affiliation::parse),
        own: codes.contains(&"110"),
        left: stanza.attr("type") == Some("unavailable"),
        new_nick: codes
            .contains(&"303")
            .then(|| item.and_then(|i| i.attr("nick")).map(str::to_owned))
            .flatten(),
    })
}

/// The real bare JIDs an archived room message names as its sender's (`<x
/// xmlns='muc#user'><item jid>`, which a non-anonymous room's archive adds), without
/// repeats. More than one means a sender put one in itself: the room's own cannot be
/// told apart.
pub fn archived_senders(message: &Element) -> Vec<String> {
    let mut jids: Vec<String> = Vec::new();
    let named = message
        .children()
        .filter(|c| c.is("x", NS_USER))
        .flat_map(|x| x.children().filter(|c| c.is("item", NS_USER)))
        .filter_map(|item| item.attr("jid"));
    for jid in named {
        // One that is no JID counts too: it is not the room's.
        let jid = bare(jid).unwrap_or_else(|| jid.to_owned());
        if !jids.contains(&jid) {
            jids.push(jid);
        }
    }
    jids
}

/// Whether a message from a room says its configuration changed (XEP-0045 status 104, or
/// 172-174: now non-anonymous, semi-anonymous, fully anonymous).
pub fn configuration_changed(message: &Element) -> bool {
    message
        .get_child("x", NS_USER)
        .into_iter()
        .flat_map(|x| x.children().filter(|c| c.is("status", NS_USER)))
        .any(|status| matches!(status.attr("code"), Some("104" | "172" | "173" | "174")))
}

/// The bare form of a JID attribute, `None` when it is no JID.
fn bare(value: &str) -> Option<String> {
    jid::Jid::new(value).ok().map(|j| j.to_bare().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn room_features_come_from_disco_info() {
        let result = parse(
            "<iq xmlns='jabber:client' type='result' id='i1' from='room@muc.example'>\
               <query xmlns='http://jabber.org/protocol/disco#info'>\
                 <identity category='conference' type='text'/>\
                 <feature var='muc_nonanonymous'/><feature var='muc_membersonly'/>\
                 <feature var='muc_persistent'/><feature var='urn:xmpp:mam:2'/></query></iq>",
        );
        assert_eq!(
            parse_room_features(&result),
            Some(RoomFeatures {
                non_anonymous: true,
                members_only: true,
                archived: true
            })
        );
        let open = parse(
            "<iq xmlns='jabber:client' type='result' id='i1'>\
               <query xmlns='http://jabber.org/protocol/disco#info'>\
                 <feature var='muc_semianonymous'/><feature var='muc_open'/></query></iq>",
        );
        assert_eq!(
            parse_room_features(&open),
            Some(RoomFeatures {
                non_anonymous: false,
                members_only: false,
                archived: false
            })
        );
        assert_eq!(
            parse_room_features(&parse("<iq xmlns='jabber:client' type='error'/>")),
            None
        );
        let query = room_info_iq("i1", "room@muc.example");
        assert_eq!(query.attr("to"), Some("room@muc.example"));
    }

    #[test]
    fn affiliation_lists_are_asked_for_and_read_as_bare_jids() {
        let query = affiliation_list_iq("a1", "room@muc.example", Affiliation::Admin);
        let item = query
            .get_child("query", NS_ADMIN)
            .unwrap()
            .get_child("item", NS_ADMIN)
            .unwrap();
        assert_eq!(item.attr("affiliation"), Some("admin"));
        let result = parse(
            "<iq xmlns='jabber:client' type='result' id='a1'>\
               <query xmlns='http://jabber.org/protocol/muc#admin'>\
                 <item affiliation='member' jid='bob@example.org' nick='bob'/>\
                 <item affiliation='member' jid='carol@example.org/phone'/>\
                 <item affiliation='member'/><item affiliation='member' jid='@@'/>\
               </query></iq>",
        );
        assert_eq!(
            parse_affiliation_list(&result),
            ["bob@example.org", "carol@example.org"]
        );
    }

    #[test]
    fn occupant_presences_give_real_jids_affiliations_and_nick_changes() {
        let join = parse(
            "<presence xmlns='jabber:client' from='room@muc.example/bob'>\
               <x xmlns='http://jabber.org/protocol/muc#user'>\
                 <item affiliation='member' role='participant' jid='bob@example.org/pc'/>\
                 <status code='100'/></x></presence>",
        );
        assert_eq!(
            parse_occupant(&join),
            Some(OccupantUpdate {
                nick: Some("bob".into()),
                jid: Some("bob@example.org".into()),
                affiliation: Some(Some(Affiliation::Member)),
                own: false,
                left: false,
                new_nick: None,
            })
        );
        let renamed = parse(
            "<presence xmlns='jabber:client' type='unavailable' from='room@muc.example/bob'>\
               <x xmlns='http://jabber.org/protocol/muc#user'>\
                 <item affiliation='member' jid='bob@example.org/pc' nick='robert'/>\
                 <status code='303'/><status code='110'/></x></presence>",
        );
        let update = parse_occupant(&renamed).unwrap();
        assert!(update.left && update.own);
        assert_eq!(update.new_nick.as_deref(), Some("robert"));
        let removed = parse(
            "<message xmlns='jabber:client' from='room@muc.example'>\
               <x xmlns='http://jabber.org/protocol/muc#user'>\
                 <item affiliation='none' jid='bob@example.org'/><status code='321'/></x></message>",
        );
        let update = parse_occupant(&removed).unwrap();
        assert_eq!(update.nick, None);
        assert_eq!(update.affiliation, Some(None));
        assert_eq!(
            parse_occupant(&parse("<presence xmlns='jabber:client'/>")),
            None
        );
    }

    #[test]
    fn configuration_changes_are_recognised() {
        let changed = parse(
            "<message xmlns='jabber:client' type='groupchat' from='room@muc.example'>\
               <x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/>\
               <status code='173'/></x></message>",
        );
        assert!(configuration_changed(&changed));
        let other = parse(
            "<message xmlns='jabber:client' type='groupchat' from='room@muc.example'>\
               <x xmlns='http://jabber.org/protocol/muc#user'><status code='170'/></x></message>",
        );
        assert!(!configuration_changed(&other));
    }
}
