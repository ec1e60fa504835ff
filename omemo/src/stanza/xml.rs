//! Small helpers shared by the stanza builders and parsers: namespaces, element
//! construction, lenient base64 and number parsing.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use minidom::Element;
use minidom::rxml::{Namespace, NcName};

use crate::error::StanzaError;

/// Client stanzas (`<message>`, `<iq>` and their `<body>`, `<error>`).
pub(crate) const NS_CLIENT: &str = "jabber:client";
/// XEP-0060 pubsub.
pub(crate) const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 pubsub event notifications.
pub(crate) const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 pubsub owner operations (node configuration).
pub(crate) const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060 pubsub-specific error conditions.
pub(crate) const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// FORM_TYPE of XEP-0223 publish options.
pub(crate) const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// FORM_TYPE of XEP-0060 node configuration.
pub(crate) const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// XEP-0004 data forms.
pub(crate) const NS_DATA_FORMS: &str = "jabber:x:data";
/// RFC 6120 stanza error conditions.
pub(crate) const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0380 explicit message encryption.
pub(crate) const NS_EME: &str = "urn:xmpp:eme:0";
/// XEP-0334 message processing hints.
pub(crate) const NS_HINTS: &str = "urn:xmpp:hints";

/// Longest stanza value copied into an error.
const MAX_ERROR_VALUE_CHARS: usize = 64;

/// Standard alphabet; padding optional and trailing bits tolerated on decode, canonical
/// padded output on encode.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// An element with no attributes or children.
pub(crate) fn element(name: &str, namespace: &str) -> Element {
    Element::bare(name, namespace)
}

/// Sets an attribute. Every name passed here is a literal XML name; an invalid one would
/// be a bug caught by the builders' tests, so it is dropped rather than panicking.
pub(crate) fn set_attr(element: &mut Element, name: &'static str, value: impl Into<String>) {
    if let Ok(name) = NcName::try_from(name) {
        element.set_attr(Namespace::NONE, name, value.into());
    }
}

/// `element` with the given attributes.
pub(crate) fn element_with(name: &str, namespace: &str, attrs: &[(&'static str, &str)]) -> Element {
    let mut out = element(name, namespace);
    for (attr, value) in attrs {
        set_attr(&mut out, attr, *value);
    }
    out
}

/// `element` holding one text node.
pub(crate) fn text_element(name: &str, namespace: &str, text: impl Into<String>) -> Element {
    let mut out = element(name, namespace);
    out.append_text_node(text);
    out
}

/// Canonical padded base64.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes the text of `element` as base64 after dropping ASCII whitespace. The raw text,
/// whitespace included, may be at most `limit` bytes.
pub(crate) fn decode_base64(
    what: &'static str,
    element: &Element,
    limit: usize,
) -> Result<Vec<u8>, StanzaError> {
    decode_base64_texts(what, || element.texts(), limit)
}

/// [`decode_base64`] of an attribute value.
pub(crate) fn decode_base64_attr(
    what: &'static str,
    value: &str,
    limit: usize,
) -> Result<Vec<u8>, StanzaError> {
    decode_base64_texts(what, || std::iter::once(value), limit)
}

/// The text pieces `texts()` yields (twice: to measure, then to decode) as base64.
fn decode_base64_texts<'a, I: Iterator<Item = &'a str>>(
    what: &'static str,
    texts: impl Fn() -> I,
    limit: usize,
) -> Result<Vec<u8>, StanzaError> {
    let size: usize = texts().map(str::len).sum();
    if size > limit {
        return Err(StanzaError::TooLarge { what, size, limit });
    }
    let compact: Vec<u8> = texts()
        .flat_map(str::bytes)
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(&compact)
        .map_err(|_| StanzaError::Base64 { what })
}

/// The required attribute `attribute` of `element` (named `what` in errors) as a `u32`,
/// surrounding ASCII whitespace allowed.
pub(crate) fn u32_attr(
    element: &Element,
    what: &'static str,
    attribute: &'static str,
) -> Result<u32, StanzaError> {
    let value = element
        .attr(attribute)
        .ok_or(StanzaError::MissingAttribute {
            element: what,
            attribute,
        })?;
    parse_u32(value).ok_or_else(|| StanzaError::InvalidAttribute {
        element: what,
        attribute,
        value: shorten(value),
    })
}

/// A decimal `u32`, surrounding ASCII whitespace allowed.
pub(crate) fn parse_u32(value: &str) -> Option<u32> {
    value.trim_ascii().parse().ok()
}

/// `value`, cut to a few dozen characters for an error message.
pub(crate) fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_ERROR_VALUE_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// The bare part of a JID: everything before the first `/`. No normalisation is done.
pub(crate) fn bare_jid(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

/// Two bare JIDs are the same when they parse to the same JID (case of the domain and
/// local part normalised); a `claimed` JID that does not parse matches nothing.
pub(crate) fn same_bare_jid(claimed: &str, actual: &str) -> bool {
    match (
        jid::BareJid::new(claimed.trim()),
        jid::BareJid::new(actual.trim()),
    ) {
        (Ok(claimed), Ok(actual)) => claimed == actual,
        _ => false,
    }
}

/// Checks that `element` is `<name xmlns=namespace>`.
pub(crate) fn expect_element(
    element: &Element,
    name: &'static str,
    namespace: &'static str,
) -> Result<(), StanzaError> {
    if element.is(name, namespace) {
        Ok(())
    } else {
        Err(StanzaError::UnexpectedElement {
            expected: name,
            expected_namespace: namespace,
            name: shorten(element.name()),
            namespace: shorten(&element.ns()),
        })
    }
}

/// The first child `<name xmlns=namespace>`, or [`StanzaError::MissingElement`].
pub(crate) fn required_child<'a>(
    parent: &'a Element,
    name: &'static str,
    namespace: &str,
) -> Result<&'a Element, StanzaError> {
    parent
        .get_child(name, namespace)
        .ok_or(StanzaError::MissingElement(name))
}

/// Children `<name xmlns=namespace>` of `parent`, in document order.
pub(crate) fn children_named<'a>(
    parent: &'a Element,
    name: &'static str,
    namespace: &'a str,
) -> impl Iterator<Item = &'a Element> + 'a {
    parent.children().filter(move |c| c.is(name, namespace))
}

/// Fails with [`StanzaError::TooMany`] when `parent` has more than `cap` children
/// `<name xmlns=namespace>`.
pub(crate) fn check_count(
    parent: &Element,
    name: &'static str,
    namespace: &str,
    cap: usize,
) -> Result<(), StanzaError> {
    let count = children_named(parent, name, namespace).count();
    if count > cap {
        Err(StanzaError::TooMany {
            what: name,
            count,
            cap,
        })
    } else {
        Ok(())
    }
}

/// `<iq type=kind id=id>` in `jabber:client`, to `to` when given, around `child`.
pub(crate) fn iq(kind: &str, id: &str, to: Option<&str>, child: Element) -> Element {
    let mut iq = element_with("iq", NS_CLIENT, &[("type", kind), ("id", id)]);
    if let Some(to) = to {
        set_attr(&mut iq, "to", to);
    }
    iq.append_child(child);
    iq
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::test_support::parse;

    #[test]
    fn base64_decoding_ignores_whitespace_and_missing_padding() {
        let wrapped = parse("<k xmlns='x'>\n  SGVs\r\n\tbG8=  </k>");
        assert_eq!(decode_base64("k", &wrapped, 100).unwrap(), b"Hello");
        let unpadded = parse("<k xmlns='x'>SGVsbG8</k>");
        assert_eq!(decode_base64("k", &unpadded, 100).unwrap(), b"Hello");
    }

    #[test]
    fn base64_decoding_rejects_garbage_and_oversized_text() {
        let garbage = parse("<k xmlns='x'>not*base64</k>");
        assert_eq!(
            decode_base64("k", &garbage, 100),
            Err(StanzaError::Base64 { what: "k" })
        );
        let long = parse("<k xmlns='x'>AAAAAAAA</k>");
        assert_eq!(
            decode_base64("k", &long, 4),
            Err(StanzaError::TooLarge {
                what: "k",
                size: 8,
                limit: 4
            })
        );
    }

    #[test]
    fn numbers_allow_surrounding_whitespace_only() {
        assert_eq!(parse_u32(" 42\n"), Some(42));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32("4 2"), None);
        assert_eq!(parse_u32(""), None);
    }

    #[test]
    fn bare_jid_drops_the_resource_at_the_first_slash() {
        assert_eq!(
            bare_jid("juliet@capulet.lit/balcony/2"),
            "juliet@capulet.lit"
        );
        assert_eq!(bare_jid("capulet.lit"), "capulet.lit");
    }

    #[test]
    fn long_values_are_shortened_for_errors() {
        let long = "é".repeat(1000);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_ERROR_VALUE_CHARS + 1);
        assert_eq!(shorten("abc"), "abc");
    }

    #[test]
    fn builders_set_every_attribute() {
        let e = element_with("item", NS_PUBSUB, &[("id", "current"), ("node", "n")]);
        assert_eq!(e.attr("id"), Some("current"));
        assert_eq!(e.attr("node"), Some("n"));
    }
}
