//! The small XMPP pieces a client with OMEMO answers itself: disco#info with entity caps
//! (XEP-0030, XEP-0115) announcing `+notify` for the device lists of both OMEMO versions,
//! ping, roster pushes, and builders of the plain stanzas the driver sends.

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::caps::{self, Caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::{Algo, Hash};
use xmpp_parsers::presence::Presence;

use crate::error::DriverError;
use omemo::stanza::{carbons, legacy, omemo2};

pub(crate) const NS_CLIENT: &str = "jabber:client";
pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
pub(crate) const NS_ROSTER: &str = "jabber:iq:roster";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The caps node: who made this client.
const CAPS_NODE: &str = "https://crates.io/crates/omemo-tokio";

/// What the client says it is (XEP-0030 identity `client/<kind>`, named `name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identification {
    pub(crate) kind: String,
    pub(crate) name: String,
}

impl Identification {
    /// What the client says it is and supports (XEP-0030), hashed into its caps
    /// (XEP-0115). The `+notify` features ask the server for PEP notifications of the
    /// OMEMO device lists of both versions.
    pub(crate) fn disco_info(&self, node: Option<String>) -> DiscoInfoResult {
        DiscoInfoResult {
            node,
            identities: vec![Identity {
                category: "client".to_owned(),
                type_: self.kind.clone(),
                lang: None,
                name: Some(self.name.clone()),
            }],
            features: [
                NS_DISCO_INFO,
                NS_CAPS,
                NS_PING,
                carbons::NAMESPACE,
                &format!("{}+notify", legacy::DEVICE_LIST_NODE),
                &format!("{}+notify", omemo2::DEVICE_LIST_NODE),
            ]
            .iter()
            .map(|f| (*f).to_owned())
            .collect(),
            extensions: vec![],
        }
    }

    /// The SHA-1 verification string of [`Identification::disco_info`] (XEP-0115 §5).
    fn caps_hash(&self) -> Result<Hash, DriverError> {
        caps::hash_caps(&caps::compute_disco(&self.disco_info(None)), Algo::Sha_1)
            .map_err(DriverError::Protocol)
    }

    /// The caps node and verification string: `NODE#VER`, the node of disco#info
    /// queries for them.
    fn caps_node(&self) -> Result<String, DriverError> {
        Ok(format!("{CAPS_NODE}#{}", self.caps_hash()?.to_base64()))
    }

    /// Available presence with the entity caps.
    pub(crate) fn available_presence(&self) -> Result<Element, DriverError> {
        let caps = Caps::new(CAPS_NODE, self.caps_hash()?);
        Ok(Presence::available().with_payload(caps).into())
    }

    /// The answer to an IQ request (`get`/`set`) the client handles itself: disco#info
    /// (plain or for the caps node), ping, roster pushes; `service-unavailable`
    /// otherwise. Returns `None` for IQs that are not requests.
    pub(crate) fn answer_iq(&self, iq: &Element, own: &BareJid) -> Option<Element> {
        answer_iq(self, iq, own)
    }
}

fn answer_iq(me: &Identification, iq: &Element, own: &BareJid) -> Option<Element> {
    let kind = iq.attr("type")?;
    if kind != "get" && kind != "set" {
        return None;
    }
    let id = iq.attr("id").unwrap_or_default();
    let from = iq.attr("from");
    let child = iq.children().next();
    let result = |payload: Option<Element>| {
        let mut reply = Element::builder("iq", NS_CLIENT)
            .attr("type".try_into().ok()?, "result")
            .attr("id".try_into().ok()?, id);
        if let Some(from) = from {
            reply = reply.attr("to".try_into().ok()?, from);
        }
        if let Some(payload) = payload {
            reply = reply.append(payload);
        }
        Some(reply.build())
    };
    match child {
        Some(c) if kind == "get" && c.is("query", NS_DISCO_INFO) => {
            let node = c.attr("node").map(str::to_owned);
            let known = match &node {
                None => true,
                Some(n) => me.caps_node().is_ok_and(|caps| *n == caps),
            };
            if known {
                result(Some(me.disco_info(node).into()))
            } else {
                error_reply(iq, "item-not-found")
            }
        }
        Some(c) if kind == "get" && c.is("ping", NS_PING) => result(None),
        Some(c) if kind == "set" && c.is("query", NS_ROSTER) => {
            // Roster pushes come from the own account only (RFC 6121 §2.1.6).
            let from_own = from.is_none_or(|f| f == own.as_str());
            if from_own {
                result(None)
            } else {
                error_reply(iq, "service-unavailable")
            }
        }
        _ => error_reply(iq, "service-unavailable"),
    }
}

/// A `type='error'` reply to an IQ request with a `cancel` condition.
fn error_reply(iq: &Element, condition: &str) -> Option<Element> {
    let mut reply = Element::builder("iq", NS_CLIENT)
        .attr("type".try_into().ok()?, "error")
        .attr("id".try_into().ok()?, iq.attr("id").unwrap_or_default());
    if let Some(from) = iq.attr("from") {
        reply = reply.attr("to".try_into().ok()?, from);
    }
    let error = Element::builder("error", NS_CLIENT)
        .attr("type".try_into().ok()?, "cancel")
        .append(Element::bare(condition, NS_STANZAS))
        .build();
    Some(reply.append(error).build())
}

/// An IQ request with our own id.
pub(crate) fn iq_request(kind: &str, id: &str, payload: Element) -> Option<Element> {
    Some(
        Element::builder("iq", NS_CLIENT)
            .attr("type".try_into().ok()?, kind)
            .attr("id".try_into().ok()?, id)
            .append(payload)
            .build(),
    )
}

/// A chat message with a plain body to `to`.
pub(crate) fn chat_message(to: &str, id: &str, body: &str) -> Option<Element> {
    Some(
        Element::builder("message", NS_CLIENT)
            .attr("type".try_into().ok()?, "chat")
            .attr("to".try_into().ok()?, to)
            .attr("id".try_into().ok()?, id)
            .append(
                Element::builder("body", NS_CLIENT)
                    .append(body.to_owned())
                    .build(),
            )
            .build(),
    )
}

/// A presence of `kind` (`subscribe`, `subscribed`, `unavailable`…) to `to`.
pub(crate) fn presence(kind: &str, to: Option<&str>) -> Option<Element> {
    let mut builder = Element::builder("presence", NS_CLIENT).attr("type".try_into().ok()?, kind);
    if let Some(to) = to {
        builder = builder.attr("to".try_into().ok()?, to);
    }
    Some(builder.build())
}

/// The presence that enters `room` as `nick` (XEP-0045 §7.2), asking for no history: the
/// room's replay would hand over again what this client may have read (reading the
/// room's archive after time offline is not done yet).
pub(crate) fn room_join_presence(
    room: &BareJid,
    nick: &str,
    password: Option<&str>,
) -> Option<Element> {
    let to = format!("{room}/{nick}");
    jid::FullJid::new(&to).ok()?;
    let history = Element::builder("history", NS_MUC)
        .attr("maxstanzas".try_into().ok()?, "0")
        .build();
    let mut x = Element::builder("x", NS_MUC).append(history);
    if let Some(password) = password {
        x = x.append(
            Element::builder("password", NS_MUC)
                .append(password)
                .build(),
        );
    }
    Some(
        Element::builder("presence", NS_CLIENT)
            .attr("to".try_into().ok()?, to)
            .append(x.build())
            .build(),
    )
}

/// The bare JID in an IQ's `to` or `from` when it is another account's (or a service's):
/// `None` for the own account (no address, or the own bare or full JID). A response
/// counts only when this is the same for it as for its request.
pub(crate) fn other_account(address: Option<&str>, own: &BareJid) -> Option<String> {
    let address = address?;
    match jid::Jid::new(address) {
        Ok(jid) => {
            let bare = jid.to_bare();
            (bare != *own).then(|| bare.to_string())
        }
        // No JID: nobody's, so it matches no request.
        Err(_) => Some(address.to_owned()),
    }
}

/// An invitation to a room: who invites, to which room, with which password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invitation {
    pub(crate) room: BareJid,
    pub(crate) inviter: BareJid,
    pub(crate) password: Option<String>,
    /// Whether the server vouches for the inviter: a direct invitation (from the
    /// inviter's own JID), not one relayed by a room (which names the inviter itself).
    pub(crate) direct: bool,
}

/// A room invitation in `message`: mediated (XEP-0045 §7.8.2: from the room, naming the
/// inviter; Prosody adds a direct one to it, which is then ignored) or direct (XEP-0249:
/// from the inviter, naming the room). Not in group chat messages.
pub(crate) fn parse_invitation(message: &Element) -> Option<Invitation> {
    if message.attr("type") == Some("groupchat") {
        return None;
    }
    let from = jid::Jid::new(message.attr("from")?).ok()?.to_bare();
    if let Some(invite) = message
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("invite", NS_MUC_USER))
    {
        let inviter = jid::Jid::new(invite.attr("from")?).ok()?.to_bare();
        let password = message
            .get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("password", NS_MUC_USER))
            .map(Element::text);
        return Some(Invitation {
            room: from,
            inviter,
            password,
            direct: false,
        });
    }
    let direct = message.get_child("x", NS_CONFERENCE)?;
    let room = BareJid::new(direct.attr("jid")?).ok()?;
    Some(Invitation {
        room,
        inviter: from,
        password: direct.attr("password").map(str::to_owned),
        direct: true,
    })
}

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_CONFERENCE: &str = "jabber:x:conference";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitations_of_both_kinds_name_room_and_inviter() {
        let mediated: Element =
            "<message xmlns='jabber:client' from='room@muc.example' to='bot@example.org'>\
            <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@example.org/phone'>\
            <reason>join us</reason></invite><password>secret</password></x>\
            <x xmlns='jabber:x:conference' jid='room@muc.example'/></message>"
                .parse()
                .unwrap();
        assert_eq!(
            parse_invitation(&mediated),
            Some(Invitation {
                room: BareJid::new("room@muc.example").unwrap(),
                inviter: BareJid::new("alice@example.org").unwrap(),
                password: Some("secret".into()),
                direct: false,
            })
        );
        let direct: Element = "<message xmlns='jabber:client' from='alice@example.org/phone'>\
            <x xmlns='jabber:x:conference' jid='room@muc.example' reason='hi'/></message>"
            .parse()
            .unwrap();
        assert_eq!(
            parse_invitation(&direct),
            Some(Invitation {
                room: BareJid::new("room@muc.example").unwrap(),
                inviter: BareJid::new("alice@example.org").unwrap(),
                password: None,
                direct: true,
            })
        );
        // In a group chat message, an invitation element is anyone's text.
        let in_room: Element =
            "<message xmlns='jabber:client' type='groupchat' from='room@muc.example/eve'>\
            <x xmlns='jabber:x:conference' jid='evil@muc.example'/></message>"
                .parse()
                .unwrap();
        assert_eq!(parse_invitation(&in_room), None);
        let plain: Element = "<message xmlns='jabber:client' from='a@b'><body>x</body></message>"
            .parse()
            .unwrap();
        assert_eq!(parse_invitation(&plain), None);
        let room = BareJid::new("room@muc.example").unwrap();
        let join = room_join_presence(&room, "bot", None).unwrap();
        assert_eq!(join.attr("to"), Some("room@muc.example/bot"));
        let x = join.get_child("x", NS_MUC).unwrap();
        assert!(x.has_child("history", NS_MUC));
        assert!(!x.has_child("password", NS_MUC));
        let join = room_join_presence(&room, "bot", Some("secret")).unwrap();
        let x = join.get_child("x", NS_MUC).unwrap();
        assert_eq!(x.get_child("password", NS_MUC).unwrap().text(), "secret");
        assert_eq!(room_join_presence(&room, "", None), None);
    }

    #[test]
    fn responses_are_matched_to_the_account_asked() {
        let own = own();
        assert_eq!(other_account(None, &own), None);
        assert_eq!(other_account(Some("bot@example.org"), &own), None);
        assert_eq!(other_account(Some("bot@example.org/res"), &own), None);
        assert_eq!(
            other_account(Some("eve@example.org/x"), &own),
            Some("eve@example.org".to_owned())
        );
        assert_eq!(
            other_account(Some("room@muc.example.org"), &own),
            Some("room@muc.example.org".to_owned())
        );
        assert_eq!(other_account(Some("@@"), &own), Some("@@".to_owned()));
    }

    fn own() -> BareJid {
        BareJid::new("bot@example.org").unwrap()
    }

    fn me() -> Identification {
        Identification {
            kind: "bot".into(),
            name: "omemo-bot".into(),
        }
    }

    fn answer_iq(iq: &Element, own: &BareJid) -> Option<Element> {
        me().answer_iq(iq, own)
    }

    #[test]
    fn disco_info_advertises_device_list_notifications_of_both_versions() {
        let info = me().disco_info(None);
        assert!(
            info.features
                .contains("eu.siacs.conversations.axolotl.devicelist+notify")
        );
        assert!(info.features.contains("urn:xmpp:omemo:2:devices+notify"));
        assert!(info.features.contains("urn:xmpp:carbons:2"));
    }

    #[test]
    fn caps_node_query_is_answered_and_unknown_nodes_are_not() {
        let node = me().caps_node().unwrap();
        let query: Element = format!(
            "<iq xmlns='jabber:client' type='get' id='d1' from='example.org'>\
               <query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"
        )
        .parse()
        .unwrap();
        let answer = answer_iq(&query, &own()).unwrap();
        assert_eq!(answer.attr("type"), Some("result"));
        assert_eq!(answer.attr("to"), Some("example.org"));
        let info = answer.get_child("query", NS_DISCO_INFO).unwrap();
        assert_eq!(info.attr("node"), Some(node.as_str()));
        // The hash of the answer is the advertised one.
        let parsed = DiscoInfoResult::try_from(info.clone()).unwrap();
        let rehash = caps::hash_caps(&caps::compute_disco(&parsed), Algo::Sha_1).unwrap();
        assert_eq!(rehash, me().caps_hash().unwrap());

        let other: Element = "<iq xmlns='jabber:client' type='get' id='d2'>\
            <query xmlns='http://jabber.org/protocol/disco#info' node='x#y'/></iq>"
            .parse()
            .unwrap();
        assert_eq!(
            answer_iq(&other, &own()).unwrap().attr("type"),
            Some("error")
        );
    }

    #[test]
    fn pings_and_roster_pushes_get_results_and_the_rest_errors() {
        let ping: Element =
            "<iq xmlns='jabber:client' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"
                .parse()
                .unwrap();
        assert_eq!(
            answer_iq(&ping, &own()).unwrap().attr("type"),
            Some("result")
        );
        let push: Element = "<iq xmlns='jabber:client' type='set' id='r' from='bot@example.org'>\
            <query xmlns='jabber:iq:roster'><item jid='a@example.org'/></query></iq>"
            .parse()
            .unwrap();
        assert_eq!(
            answer_iq(&push, &own()).unwrap().attr("type"),
            Some("result")
        );
        let forged: Element = "<iq xmlns='jabber:client' type='set' id='r' from='eve@example.org'>\
            <query xmlns='jabber:iq:roster'/></iq>"
            .parse()
            .unwrap();
        assert_eq!(
            answer_iq(&forged, &own()).unwrap().attr("type"),
            Some("error")
        );
        let version: Element =
            "<iq xmlns='jabber:client' type='get' id='v' from='a@example.org/x'>\
            <query xmlns='jabber:iq:version'/></iq>"
                .parse()
                .unwrap();
        let answer = answer_iq(&version, &own()).unwrap();
        assert_eq!(answer.attr("type"), Some("error"));
        assert!(
            answer
                .get_child("error", NS_CLIENT)
                .unwrap()
                .has_child("service-unavailable", NS_STANZAS)
        );
        let result: Element = "<iq xmlns='jabber:client' type='result' id='x'/>"
            .parse()
            .unwrap();
        assert!(answer_iq(&result, &own()).is_none());
    }

    #[test]
    fn outgoing_elements_are_stanzas() {
        use crate::connection::element_to_stanza;
        let message = chat_message("alice@example.org", "m1", "hint").unwrap();
        assert!(element_to_stanza(message).is_ok());
        assert!(element_to_stanza(me().available_presence().unwrap()).is_ok());
        let iq = iq_request("get", "r1", Element::bare("query", NS_ROSTER)).unwrap();
        assert!(element_to_stanza(iq).is_ok());
        assert!(element_to_stanza(presence("subscribed", Some("a@example.org")).unwrap()).is_ok());
    }
}
