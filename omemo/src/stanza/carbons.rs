//! XEP-0280 message carbons: unwrapping `<received>` and `<sent>` copies, and the IQ
//! that turns them on.

use jid::BareJid;
use minidom::Element;

use super::xml::{NS_CLIENT, element, iq};

/// The carbons namespace (XEP-0280 v2).
pub const NAMESPACE: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";

/// What a `<message>` is with respect to carbons.
#[derive(Debug, PartialEq)]
pub enum Carbon {
    /// Not a carbon: an ordinary message.
    None,
    /// A copy of a message another resource of the account received.
    Received(Element),
    /// A copy of a message another resource of the account sent.
    Sent(Element),
    /// A carbon wrapper that did not come from the own account (a forgery: XEP-0280
    /// §11), or without a forwarded `<message>`. To be dropped.
    Invalid(&'static str),
}

/// Classifies `message` and unwraps the forwarded message of a carbon. Only carbons from
/// the own bare JID (or with no `from`, which means the own account) are accepted.
pub fn unwrap(message: &Element, own: &BareJid) -> Carbon {
    let (wrapper, sent) = if let Some(w) = message.get_child("received", NAMESPACE) {
        (w, false)
    } else if let Some(w) = message.get_child("sent", NAMESPACE) {
        (w, true)
    } else {
        return Carbon::None;
    };
    match message.attr("from") {
        None => {}
        Some(from) => match jid::Jid::new(from) {
            Ok(from) if from.resource().is_none() && from.to_bare() == *own => {}
            _ => return Carbon::Invalid("carbon not sent by the own account"),
        },
    }
    let Some(inner) = wrapper
        .get_child("forwarded", NS_FORWARD)
        .and_then(|f| f.get_child("message", NS_CLIENT))
    else {
        return Carbon::Invalid("carbon without a forwarded message");
    };
    if sent {
        Carbon::Sent(inner.clone())
    } else {
        Carbon::Received(inner.clone())
    }
}

/// `<iq type='set'>` that enables carbons for this resource.
pub fn enable_iq(id: &str) -> Element {
    iq("set", id, None, element("enable", NAMESPACE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> BareJid {
        BareJid::new("bot@example.org").unwrap()
    }

    fn carbon(from: Option<&str>, kind: &str, inner: &str) -> Element {
        let from = from.map(|f| format!(" from='{f}'")).unwrap_or_default();
        format!(
            "<message xmlns='jabber:client'{from} to='bot@example.org/a' type='chat'>\
               <{kind} xmlns='urn:xmpp:carbons:2'>\
                 <forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded>\
               </{kind}>\
             </message>"
        )
        .parse()
        .unwrap()
    }

    const INNER: &str = "<message xmlns='jabber:client' from='alice@example.org/phone' \
        to='bot@example.org/b' type='chat' id='m1'><body>hi</body></message>";

    #[test]
    fn a_plain_message_is_no_carbon() {
        let message: Element = INNER.parse().unwrap();
        assert_eq!(unwrap(&message, &own()), Carbon::None);
    }

    #[test]
    fn received_carbon_from_the_own_bare_jid_unwraps_to_the_forwarded_message() {
        let outer = carbon(Some("bot@example.org"), "received", INNER);
        let Carbon::Received(inner) = unwrap(&outer, &own()) else {
            panic!("not unwrapped")
        };
        assert_eq!(inner.attr("from"), Some("alice@example.org/phone"));
        assert_eq!(inner.attr("id"), Some("m1"));
        assert_eq!(inner.get_child("body", NS_CLIENT).unwrap().text(), "hi");
    }

    #[test]
    fn sent_carbon_unwraps_and_no_from_means_the_own_account() {
        let outer = carbon(None, "sent", INNER);
        assert!(matches!(unwrap(&outer, &own()), Carbon::Sent(_)));
    }

    #[test]
    fn carbons_from_anyone_else_are_forgeries() {
        for from in [
            "mallory@example.org",
            "bot@example.org/other",
            "example.org",
            "not a jid@@",
        ] {
            let outer = carbon(Some(from), "received", INNER);
            assert!(
                matches!(unwrap(&outer, &own()), Carbon::Invalid(_)),
                "{from}"
            );
        }
    }

    #[test]
    fn carbon_without_forwarded_message_is_invalid() {
        let outer = carbon(Some("bot@example.org"), "received", "");
        assert!(matches!(unwrap(&outer, &own()), Carbon::Invalid(_)));
    }
}
