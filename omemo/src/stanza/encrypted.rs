//! What the `<encrypted>` elements of both versions share: the `<key>` for one recipient
//! device, and the `<message>` that carries them.

use minidom::Element;

use super::xml::{
    NS_CLIENT, NS_EME, NS_HINTS, decode_base64, element, element_with, encode_base64, set_attr,
    text_element, u32_attr,
};
use crate::consts::MAX_FIELD_TEXT_LENGTH;
use crate::error::StanzaError;

/// One `<key>` of a header: the ratchet message for one recipient device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedKey {
    /// The recipient device (`rid`).
    pub recipient_device: u32,
    /// Whether `data` is a key exchange (legacy `prekey='true'`, OMEMO 2 `kex='true'`;
    /// `'1'` too) rather than a plain ratchet message.
    pub key_exchange: bool,
    /// The serialized ratchet message, decoded from base64.
    pub data: Vec<u8>,
}

impl EncryptedKey {
    /// Parses a `<key rid=…>` whose key-exchange flag is the attribute `flag`.
    pub(crate) fn from_element(key: &Element, flag: &str) -> Result<Self, StanzaError> {
        let recipient_device = u32_attr(key, "key", "rid")?;
        let data = decode_base64("key", key, MAX_FIELD_TEXT_LENGTH)?;
        if data.is_empty() {
            return Err(StanzaError::EmptyElement("key"));
        }
        Ok(Self {
            recipient_device,
            key_exchange: key.attr(flag).is_some_and(is_true),
            data,
        })
    }

    /// The `<key>` in `namespace`, with `flag='true'` only on a key exchange.
    pub(crate) fn to_element(&self, namespace: &str, flag: &'static str) -> Element {
        let mut key = text_element("key", namespace, encode_base64(&self.data));
        set_attr(&mut key, "rid", self.recipient_device.to_string());
        if self.key_exchange {
            set_attr(&mut key, flag, "true");
        }
        key
    }
}

/// `true` and `1`, case-insensitively and around whitespace, as Conversations and
/// python-omemo read them. Any other value, including garbage, counts as false.
fn is_true(value: &str) -> bool {
    let value = value.trim_ascii();
    value.eq_ignore_ascii_case("true") || value == "1"
}

/// A `<message>` in `jabber:client` with, in order: `<body>` with `fallback_body` when
/// given, the `encrypted` elements, the XEP-0380 `<encryption namespace=… name='OMEMO'/>`
/// when `eme_namespace` is given, and the XEP-0334 `<store/>` hint.
pub(crate) fn message_with(
    to: &str,
    id: &str,
    message_type: &str,
    encrypted: impl IntoIterator<Item = Element>,
    eme_namespace: Option<&str>,
    fallback_body: Option<&str>,
) -> Element {
    let mut message = element_with(
        "message",
        NS_CLIENT,
        &[("type", message_type), ("to", to), ("id", id)],
    );
    if let Some(body) = fallback_body {
        message.append_child(text_element("body", NS_CLIENT, body));
    }
    for child in encrypted {
        message.append_child(child);
    }
    if let Some(namespace) = eme_namespace {
        message.append_child(element_with(
            "encryption",
            NS_EME,
            &[("namespace", namespace), ("name", "OMEMO")],
        ));
    }
    message.append_child(element("store", NS_HINTS));
    message
}
