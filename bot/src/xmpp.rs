//! The XMPP connection (tokio-xmpp): login, stanzas in and out as `minidom` elements,
//! and the small protocol pieces the bot answers itself (disco#info with entity caps,
//! ping, roster pushes).

use std::time::Duration;

use futures::StreamExt;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};
use xmpp_parsers::caps::{self, Caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::{Algo, Hash};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::Message;
use xmpp_parsers::presence::Presence;

use crate::cli::ServerAddr;
use crate::error::BotError;
use omemo::stanza::legacy::DEVICE_LIST_NODE;

/// How long one stanza may wait to be written before the bot gives up on it.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) const NS_CLIENT: &str = "jabber:client";
pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
pub(crate) const NS_ROSTER: &str = "jabber:iq:roster";
pub(crate) const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The caps node: who made this client.
const CAPS_NODE: &str = "https://crates.io/crates/omemo-bot";

/// Where and how to connect. Its Debug output hides the password.
#[derive(Clone)]
pub(crate) struct Target {
    /// The account.
    pub(crate) jid: BareJid,
    /// The password.
    pub(crate) password: String,
    /// A fixed server address instead of DNS.
    pub(crate) server: Option<ServerAddr>,
    /// Plain TCP (loopback only).
    pub(crate) plaintext: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("jid", &self.jid)
            .field("server", &self.server)
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

/// Something that came from the connection.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// A (new) session is bound: the stream was (re)established and any earlier state on
    /// the server side (presence, carbons, pending IQs) is gone.
    Online(FullJid),
    /// A stanza.
    Stanza(Element),
}

/// One client connection; tokio-xmpp reconnects it by itself (with backoff from 1 s to
/// 30 s) and reports each new session as [`NetEvent::Online`].
pub(crate) struct Connection {
    client: Client,
    bound: Option<FullJid>,
}

impl Connection {
    /// Starts connecting (in the background).
    pub(crate) fn start(target: Target) -> Result<Self, BotError> {
        let jid = Jid::from(target.jid.clone());
        let timeouts = Timeouts::default();
        let client = match (&target.server, target.plaintext) {
            (Some(server), true) => {
                if !server.is_loopback() {
                    return Err(BotError::Usage(format!(
                        "--insecure-plaintext only talks to loopback servers, not {}",
                        server.host
                    )));
                }
                Client::new_plaintext(
                    jid,
                    target.password,
                    DnsConfig::no_srv(&server.host, server.port),
                    timeouts,
                )
            }
            (Some(server), false) => Client::new_starttls(
                jid,
                target.password,
                DnsConfig::no_srv(&server.host, server.port),
                timeouts,
            ),
            (None, false) => Client::new(jid, target.password),
            (None, true) => {
                return Err(BotError::Usage(
                    "--insecure-plaintext needs --server with a loopback address".to_owned(),
                ));
            }
        };
        Ok(Self {
            client,
            bound: None,
        })
    }

    /// The bound full JID of the current session.
    pub(crate) fn bound(&self) -> Option<&FullJid> {
        self.bound.as_ref()
    }

    /// The next event. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<NetEvent, BotError> {
        loop {
            match self.client.next().await {
                None => return Err(BotError::Closed),
                Some(Event::Online {
                    bound_jid,
                    resumed: true,
                    ..
                }) => {
                    tracing::info!(jid = %bound_jid, "stream resumed");
                }
                Some(Event::Online { bound_jid, .. }) => {
                    let full = bound_jid.try_into_full().map_err(|jid| {
                        BotError::Protocol(format!("bound JID {jid} is not full"))
                    })?;
                    self.bound = Some(full.clone());
                    return Ok(NetEvent::Online(full));
                }
                Some(Event::Disconnected(error)) => {
                    tracing::warn!(%error, "disconnected; reconnecting");
                }
                Some(Event::Stanza(stanza)) => {
                    return Ok(NetEvent::Stanza(stanza_to_element(stanza)));
                }
            }
        }
    }

    /// Sends one stanza (`<message>`, `<presence>` or `<iq>`), waiting until it is
    /// written.
    pub(crate) async fn send(&mut self, element: Element) -> Result<(), BotError> {
        let stanza = element_to_stanza(element)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.client.send_stanza(stanza)).await {
            Ok(Ok(_token)) => Ok(()),
            Ok(Err(error)) => Err(BotError::Io(error)),
            Err(_) => Err(BotError::Timeout("writing a stanza")),
        }
    }

    /// Closes the stream cleanly (bounded in time).
    pub(crate) async fn close(self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.client.send_end())
            .await
            .is_err()
        {
            tracing::debug!("stream close timed out");
        }
    }
}

fn stanza_to_element(stanza: Stanza) -> Element {
    match stanza {
        Stanza::Iq(iq) => iq.into(),
        Stanza::Message(message) => message.into(),
        Stanza::Presence(presence) => presence.into(),
    }
}

fn element_to_stanza(element: Element) -> Result<Stanza, BotError> {
    let name = element.name().to_owned();
    let bad = |e: xmpp_parsers::Error| BotError::Protocol(format!("cannot send <{name}>: {e}"));
    Ok(match element.name() {
        "iq" => Stanza::Iq(Iq::try_from(element).map_err(|e| bad(e.into()))?),
        "message" => Stanza::Message(Message::try_from(element).map_err(|e| bad(e.into()))?),
        "presence" => Stanza::Presence(Presence::try_from(element).map_err(|e| bad(e.into()))?),
        other => return Err(BotError::Protocol(format!("<{other}> is not a stanza"))),
    })
}

/// What the bot says it is and supports (XEP-0030), hashed into its caps (XEP-0115).
/// The `+notify` feature asks the server for PEP notifications of OMEMO device lists.
pub(crate) fn disco_info(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity {
            category: "client".to_owned(),
            type_: "bot".to_owned(),
            lang: None,
            name: Some("omemo-bot".to_owned()),
        }],
        features: [
            NS_DISCO_INFO,
            NS_CAPS,
            NS_PING,
            NS_CARBONS,
            &format!("{DEVICE_LIST_NODE}+notify"),
        ]
        .iter()
        .map(|f| (*f).to_owned())
        .collect(),
        extensions: vec![],
    }
}

/// The SHA-1 verification string of [`disco_info`] (XEP-0115 §5).
fn caps_hash() -> Result<Hash, BotError> {
    caps::hash_caps(&caps::compute_disco(&disco_info(None)), Algo::Sha_1)
        .map_err(BotError::Protocol)
}

/// The caps node and verification string: `NODE#VER`, the node of disco#info queries
/// for them.
fn caps_node() -> Result<String, BotError> {
    Ok(format!("{CAPS_NODE}#{}", caps_hash()?.to_base64()))
}

/// The entity caps of [`disco_info`].
pub(crate) fn caps() -> Result<Caps, BotError> {
    Ok(Caps::new(CAPS_NODE, caps_hash()?))
}

/// Available presence with the caps.
pub(crate) fn available_presence() -> Result<Element, BotError> {
    Ok(Presence::available().with_payload(caps()?).into())
}

/// The answer to an IQ request (`get`/`set`) that the bot handles itself: disco#info
/// (plain or for the caps node), ping, roster pushes; `service-unavailable` otherwise.
/// Returns `None` for IQs that are not requests.
pub(crate) fn answer_iq(iq: &Element, own: &BareJid) -> Option<Element> {
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
                Some(n) => caps_node().is_ok_and(|caps| *n == caps),
            };
            if known {
                result(Some(disco_info(node).into()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> BareJid {
        BareJid::new("bot@example.org").unwrap()
    }

    #[test]
    fn disco_info_advertises_device_list_notifications() {
        let info = disco_info(None);
        assert!(
            info.features
                .contains("eu.siacs.conversations.axolotl.devicelist+notify")
        );
    }

    #[test]
    fn caps_node_query_is_answered_and_unknown_nodes_are_not() {
        let node = caps_node().unwrap();
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
        assert_eq!(rehash, caps_hash().unwrap());

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
    fn outgoing_elements_convert_to_stanzas() {
        let message = chat_message("alice@example.org", "m1", "hint").unwrap();
        assert!(matches!(element_to_stanza(message), Ok(Stanza::Message(_))));
        let presence = available_presence().unwrap();
        assert!(matches!(
            element_to_stanza(presence),
            Ok(Stanza::Presence(_))
        ));
        let iq = iq_request("set", "c1", Element::bare("enable", NS_CARBONS)).unwrap();
        assert!(matches!(element_to_stanza(iq), Ok(Stanza::Iq(_))));
        assert!(element_to_stanza(Element::bare("foo", NS_CLIENT)).is_err());
    }
}
