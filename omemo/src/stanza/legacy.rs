//! Legacy OMEMO elements (namespace `eu.siacs.conversations.axolotl`, XEP-0384 0.3.0): the
//! encrypted message, the device list and the bundle.
//!
//! Parsers accept what deployed clients send: base64 wrapped over several lines or
//! without padding, `prekey='1'` as well as `prekey='true'`, 12- or 16-byte IVs, ids of
//! 0, repeated `rid`s and unknown children. Builders write what Conversations writes.

use std::collections::HashSet;

use minidom::Element;

pub use super::EncryptedKey;
use super::bundle::BundleLayout;
use super::encrypted::message_with;
use super::xml::{
    check_count, children_named, decode_base64, element, encode_base64, expect_element, parse_u32,
    required_child, set_attr, text_element, u32_attr,
};
use crate::bundle::PreKeyBundle;
use crate::consts::{
    LEGACY_NAMESPACE, MAX_FIELD_TEXT_LENGTH, MAX_KEYS_PER_MESSAGE, MAX_PAYLOAD_TEXT_LENGTH,
};
use crate::error::StanzaError;
use crate::version::Version;

/// The namespace of legacy OMEMO elements.
pub const NAMESPACE: &str = LEGACY_NAMESPACE;

/// The pubsub node of the legacy device list. Publish it with item id `current`.
pub const DEVICE_LIST_NODE: &str = "eu.siacs.conversations.axolotl.devicelist";

/// The names of the legacy `<bundle>`.
const BUNDLE: BundleLayout = BundleLayout {
    version: Version::Legacy,
    namespace: LEGACY_NAMESPACE,
    signed_pre_key: ("signedPreKeyPublic", "signedPreKeyId"),
    signature: "signedPreKeySignature",
    identity_key: "identityKey",
    pre_key: ("preKeyPublic", "preKeyId"),
};

/// Prefix of the per-device legacy bundle nodes; see [`bundle_node`].
const BUNDLE_NODE_PREFIX: &str = "eu.siacs.conversations.axolotl.bundles:";

/// The pubsub node that holds the legacy bundle of `device_id`.
///
/// ```
/// assert_eq!(omemo::stanza::legacy::bundle_node(42), "eu.siacs.conversations.axolotl.bundles:42");
/// ```
pub fn bundle_node(device_id: u32) -> String {
    format!("{BUNDLE_NODE_PREFIX}{device_id}")
}

/// A legacy `<encrypted xmlns='eu.siacs.conversations.axolotl'>` element.
///
/// ```text
/// <encrypted xmlns='eu.siacs.conversations.axolotl'>
///   <header sid='SENDER_DEVICE'>
///     <key rid='DEVICE'>b64(SignalMessage)</key>
///     <key rid='DEVICE' prekey='true'>b64(PreKeySignalMessage)</key>
///     <iv>b64(12 bytes)</iv>
///   </header>
///   <payload>b64(AES-GCM ciphertext)</payload>   (absent in key transports)
/// </encrypted>
/// ```
///
/// ```
/// use omemo::stanza::legacy::{EncryptedKey, EncryptedMessage};
///
/// let message = EncryptedMessage {
///     sender_device: 1,
///     keys: vec![EncryptedKey { recipient_device: 2, key_exchange: true, data: vec![0x33, 1] }],
///     iv: vec![0; 12],
///     payload: Some(b"ciphertext".to_vec()),
/// };
/// let parsed = EncryptedMessage::from_element(&message.to_element())?;
/// assert_eq!(parsed, message);
/// assert_eq!(parsed.keys_for(2).count(), 1);
/// # Ok::<(), omemo::stanza::StanzaError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The sending device (`sid`).
    pub sender_device: u32,
    /// The keys, in document order. One recipient may have several.
    pub keys: Vec<EncryptedKey>,
    /// The payload IV; 12 bytes from current senders, 16 from some old ones. Its length is
    /// not checked here.
    pub iv: Vec<u8>,
    /// The payload ciphertext; `None` for a key-transport (empty) message.
    pub payload: Option<Vec<u8>>,
}

impl EncryptedMessage {
    /// Parses an `<encrypted>` element.
    ///
    /// Requires `<header>` with a numeric `sid`, a non-empty `<iv>`, and a numeric `rid`
    /// and non-empty base64 on every `<key>`. At most 10 000 keys, 8 KiB of text per key
    /// and IV and 1 MiB of payload text are accepted. Unknown children are ignored.
    pub fn from_element(encrypted: &Element) -> Result<Self, StanzaError> {
        expect_element(encrypted, "encrypted", LEGACY_NAMESPACE)?;
        let header = required_child(encrypted, "header", LEGACY_NAMESPACE)?;
        let sender_device = u32_attr(header, "header", "sid")?;
        check_count(header, "key", LEGACY_NAMESPACE, MAX_KEYS_PER_MESSAGE)?;
        let keys = children_named(header, "key", LEGACY_NAMESPACE)
            .map(|key| EncryptedKey::from_element(key, "prekey"))
            .collect::<Result<Vec<_>, _>>()?;
        let iv = decode_base64(
            "iv",
            required_child(header, "iv", LEGACY_NAMESPACE)?,
            MAX_FIELD_TEXT_LENGTH,
        )?;
        if iv.is_empty() {
            return Err(StanzaError::EmptyElement("iv"));
        }
        let payload = encrypted
            .get_child("payload", LEGACY_NAMESPACE)
            .map(|p| decode_base64("payload", p, MAX_PAYLOAD_TEXT_LENGTH))
            .transpose()?;
        Ok(Self {
            sender_device,
            keys,
            iv,
            payload,
        })
    }

    /// The `<encrypted>` element, as Conversations writes it: `prekey='true'` only on
    /// key exchanges, `<payload>` only when there is one.
    pub fn to_element(&self) -> Element {
        let mut header = element("header", LEGACY_NAMESPACE);
        set_attr(&mut header, "sid", self.sender_device.to_string());
        for key in &self.keys {
            header.append_child(key.to_element(LEGACY_NAMESPACE, "prekey"));
        }
        header.append_child(text_element(
            "iv",
            LEGACY_NAMESPACE,
            encode_base64(&self.iv),
        ));
        let mut encrypted = element("encrypted", LEGACY_NAMESPACE);
        encrypted.append_child(header);
        if let Some(payload) = &self.payload {
            encrypted.append_child(text_element(
                "payload",
                LEGACY_NAMESPACE,
                encode_base64(payload),
            ));
        }
        encrypted
    }

    /// The legacy `<encrypted>` child of a `<message>`, if any.
    pub fn find(message: &Element) -> Option<&Element> {
        message.get_child("encrypted", LEGACY_NAMESPACE)
    }

    /// The keys addressed to `device`, in document order. Try each in turn: senders may
    /// include several for one device.
    pub fn keys_for(&self, device: u32) -> impl Iterator<Item = &EncryptedKey> + '_ {
        self.keys
            .iter()
            .filter(move |k| k.recipient_device == device)
    }
}

/// A `<message>` carrying `encrypted`.
///
/// Children, in order: `<body>` with `fallback_body` when given, the `<encrypted>`,
/// the XEP-0380 `<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'
/// name='OMEMO'/>` when there is a payload, and the XEP-0334
/// `<store xmlns='urn:xmpp:hints'/>` always. The message is in the `jabber:client`
/// namespace.
///
/// Pass no fallback body for key transports (no payload).
pub fn message_element(
    to: &str,
    id: &str,
    message_type: &str,
    encrypted: &EncryptedMessage,
    fallback_body: Option<&str>,
) -> Element {
    message_with(
        to,
        id,
        message_type,
        [encrypted.to_element()],
        encrypted.payload.is_some().then_some(LEGACY_NAMESPACE),
        fallback_body,
    )
}

/// The device ids of a `<list xmlns='eu.siacs.conversations.axolotl'>`, in document
/// order without duplicates.
///
/// `<device>` entries whose `id` is missing or not a `u32` are skipped. Fails when the
/// element is not a legacy `<list>` or names more than `cap` distinct devices.
pub fn parse_device_list(list: &Element, cap: usize) -> Result<Vec<u32>, StanzaError> {
    expect_element(list, "list", LEGACY_NAMESPACE)?;
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let valid = children_named(list, "device", LEGACY_NAMESPACE)
        .filter_map(|device| device.attr("id").and_then(parse_u32));
    for id in valid {
        if seen.insert(id) {
            ids.push(id);
        }
    }
    if ids.len() > cap {
        return Err(StanzaError::TooManyDevices {
            count: ids.len(),
            cap,
        });
    }
    Ok(ids)
}

/// The `<list xmlns='eu.siacs.conversations.axolotl'>` of `device_ids`, in the order
/// given.
pub fn device_list_element(device_ids: &[u32]) -> Element {
    let mut list = element("list", LEGACY_NAMESPACE);
    for id in device_ids {
        let mut device = element("device", LEGACY_NAMESPACE);
        set_attr(&mut device, "id", id.to_string());
        list.append_child(device);
    }
    list
}

/// Parses a `<bundle xmlns='eu.siacs.conversations.axolotl'>`.
///
/// The identity key and the signed prekey must be 33-byte `0x05`-prefixed keys, and the
/// signature must be base64 (its length is left to [`PreKeyBundle::verify`], which the
/// caller must run). Ids of 0 are accepted (converse.js publishes them). One-time prekeys
/// with a bad id or key are skipped; more than 1000 `<preKeyPublic>` elements fail.
pub fn parse_bundle(bundle: &Element) -> Result<PreKeyBundle, StanzaError> {
    BUNDLE.parse(bundle)
}

/// The `<bundle xmlns='eu.siacs.conversations.axolotl'>` of a legacy `bundle`, children in
/// the order Conversations writes them. Publish it on [`bundle_node`] with item id
/// `current`. A bundle of OMEMO 2 is refused: its signature is over the raw signed
/// prekey, which no legacy client verifies.
pub fn bundle_element(bundle: &PreKeyBundle) -> Result<Element, StanzaError> {
    BUNDLE.build(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{PreKey, SignedPreKey};
    use crate::consts::MAX_BUNDLE_PRE_KEYS;
    use crate::error::KeyError;
    use crate::keys::IdentityKeyPair;
    use crate::stanza::test_support::{parse, reparse};
    use crate::stanza::xml::NS_CLIENT;
    use crate::wire::RatchetMessage;

    fn encrypted(header_inner: &str, rest: &str) -> Result<EncryptedMessage, StanzaError> {
        EncryptedMessage::from_element(&parse(&format!(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'>{header_inner}{rest}</encrypted>"
        )))
    }

    fn header(inner: &str) -> String {
        format!("<header sid='7'>{inner}</header>")
    }

    const KEY: &str = "<key rid='2'>MwohBQ==</key>";
    const IV: &str = "<iv>AAAAAAAAAAAAAAAA</iv>";

    fn sample_message() -> EncryptedMessage {
        EncryptedMessage {
            sender_device: 564_866_972,
            keys: vec![
                EncryptedKey {
                    recipient_device: 1236,
                    key_exchange: true,
                    data: vec![0x33, 1, 2, 3],
                },
                EncryptedKey {
                    recipient_device: 1236,
                    key_exchange: false,
                    data: vec![0x33, 4, 5],
                },
                EncryptedKey {
                    recipient_device: u32::MAX,
                    key_exchange: false,
                    data: vec![0x33; 200],
                },
            ],
            iv: (0..12).collect(),
            payload: Some(b"ciphertext".to_vec()),
        }
    }

    fn generated_bundle(signed_id: u32, pre_key_ids: std::ops::Range<u32>) -> PreKeyBundle {
        let mut rng = crate::os_rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(Version::Legacy, &mut rng, &identity, signed_id);
        let pre_keys: Vec<_> = pre_key_ids
            .map(|id| PreKey::generate(&mut rng, id))
            .collect();
        PreKeyBundle::new(&identity, &signed, &pre_keys)
    }

    // ---- encrypted messages: fixtures of real clients ----

    #[test]
    fn conversations_message_with_wrapped_prekey_key_parses() {
        let message = fixture!("conversations_message.xml");
        let encrypted = EncryptedMessage::find(&message).expect("has <encrypted>");
        let parsed = EncryptedMessage::from_element(encrypted).unwrap();
        assert_eq!(parsed.sender_device, 564_866_972);
        let rids: Vec<_> = parsed.keys.iter().map(|k| k.recipient_device).collect();
        assert_eq!(rids, [1236, 26_052_318, 1_164_059_891]);
        let pre_keys: Vec<_> = parsed.keys.iter().map(|k| k.key_exchange).collect();
        assert_eq!(pre_keys, [true, false, false]);
        assert_eq!(parsed.keys[0].data.len(), 183);
        assert_eq!(parsed.keys[0].data[..4], [51, 8, 233, 244]);
        assert_eq!(parsed.keys[0].data[179..], [141, 2, 48, 22]);
        assert_eq!(
            parsed.iv,
            [73, 143, 210, 8, 99, 237, 208, 41, 192, 218, 135, 65]
        );
        assert_eq!(parsed.payload.as_deref(), Some(&[85, 171][..]));
    }

    #[test]
    fn conversations_prekey_key_decodes_as_key_exchange_from_the_bundle_identity() {
        let message = fixture!("conversations_message.xml");
        let parsed =
            EncryptedMessage::from_element(EncryptedMessage::find(&message).unwrap()).unwrap();
        let key = parsed.keys_for(1236).next().unwrap();
        let RatchetMessage::KeyExchange(exchange) =
            RatchetMessage::from_bytes(Version::Legacy, &key.data, key.key_exchange)
                .expect("the wrapped key is a valid PreKeySignalMessage")
        else {
            panic!("prekey='true' parses as a key exchange");
        };
        let bundle = parse_bundle(&fixture!("xmpp_parsers_bundle.xml")).unwrap();
        assert_eq!(*exchange.identity_key(), bundle.identity_key);
        for plain in &parsed.keys[1..] {
            assert!(matches!(
                RatchetMessage::from_bytes(Version::Legacy, &plain.data, plain.key_exchange),
                Ok(RatchetMessage::Authenticated(_))
            ));
        }
    }

    #[test]
    fn psi_prekey_1_counts_as_key_exchange() {
        let message = fixture!("psi_prekey_1.xml");
        let parsed =
            EncryptedMessage::from_element(EncryptedMessage::find(&message).unwrap()).unwrap();
        assert_eq!(parsed.sender_device, 1_164_059_891);
        assert!(parsed.keys_for(1236).all(|k| k.key_exchange));
        assert!(parsed.keys_for(564_866_972).all(|k| !k.key_exchange));
    }

    #[test]
    fn sixteen_byte_iv_is_passed_through() {
        let message = fixture!("iv16_message.xml");
        let parsed =
            EncryptedMessage::from_element(EncryptedMessage::find(&message).unwrap()).unwrap();
        assert_eq!(parsed.iv.len(), 16);
        assert_eq!(parsed.iv[..4], [0xab, 0xcd, 0xef, 0x01]);
    }

    #[test]
    fn key_transport_has_no_payload() {
        let message = fixture!("conversations_key_transport.xml");
        let parsed =
            EncryptedMessage::from_element(EncryptedMessage::find(&message).unwrap()).unwrap();
        assert_eq!(parsed.payload, None);
        assert_eq!(parsed.iv.len(), 12);
        assert_eq!(parsed.keys.len(), 1);
    }

    #[test]
    fn prekey_attribute_accepts_true_and_1_in_any_case() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("True", true),
            ("1", true),
            (" true ", true),
            ("false", false),
            ("0", false),
            ("", false),
            ("yes", false),
        ] {
            let parsed = encrypted(
                &header(&format!("<key rid='2' prekey='{value}'>MwohBQ==</key>{IV}")),
                "",
            )
            .unwrap();
            assert_eq!(parsed.keys[0].key_exchange, expected, "prekey='{value}'");
        }
        let absent = encrypted(&header(&format!("{KEY}{IV}")), "").unwrap();
        assert!(!absent.keys[0].key_exchange);
    }

    #[test]
    fn keys_with_the_same_rid_are_all_kept_in_order() {
        let parsed = encrypted(
            &header(&format!(
                "<key rid='2'>AQ==</key><key rid='3'>Ag==</key><key rid='2' prekey='true'>Aw==</key>{IV}"
            )),
            "",
        )
        .unwrap();
        let for_two: Vec<_> = parsed.keys_for(2).map(|k| k.data.clone()).collect();
        assert_eq!(for_two, [vec![1], vec![3]]);
        assert_eq!(parsed.keys_for(4).count(), 0);
    }

    #[test]
    fn header_without_keys_parses() {
        let parsed = encrypted(&header(IV), "").unwrap();
        assert!(parsed.keys.is_empty());
    }

    #[test]
    fn unknown_children_and_foreign_namespaces_are_ignored() {
        let parsed = encrypted(
            &header(&format!(
                "<label>phone</label>{KEY}<key xmlns='urn:xmpp:omemo:2' rid='9'>AA==</key>{IV}<extra/>"
            )),
            "<payload>Vas=</payload><future xmlns='urn:example'/>",
        )
        .unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].recipient_device, 2);
        assert_eq!(parsed.payload, Some(vec![85, 171]));
    }

    #[test]
    fn encrypted_message_round_trips() {
        for payload in [Some(b"ciphertext".to_vec()), Some(Vec::new()), None] {
            let message = EncryptedMessage {
                payload,
                ..sample_message()
            };
            let element = message.to_element();
            assert_eq!(
                EncryptedMessage::from_element(&element),
                Ok(message.clone())
            );
            assert_eq!(
                EncryptedMessage::from_element(&reparse(&element)),
                Ok(message)
            );
        }
    }

    #[test]
    fn senders_write_prekey_true_only_on_key_exchanges() {
        let element = sample_message().to_element();
        let header = element.get_child("header", LEGACY_NAMESPACE).unwrap();
        assert_eq!(header.attr("sid"), Some("564866972"));
        let prekeys: Vec<_> = header
            .children()
            .filter(|c| c.name() == "key")
            .map(|k| k.attr("prekey"))
            .collect();
        assert_eq!(prekeys, [Some("true"), None, None]);
        let last = header.children().last().unwrap();
        assert!(last.is("iv", LEGACY_NAMESPACE));
        assert_eq!(last.text(), "AAECAwQFBgcICQoL");
        let no_payload = EncryptedMessage {
            payload: None,
            ..sample_message()
        };
        assert!(
            !no_payload
                .to_element()
                .has_child("payload", LEGACY_NAMESPACE)
        );
    }

    #[test]
    fn find_ignores_messages_without_legacy_encryption() {
        let plain = parse("<message xmlns='jabber:client'><body>hi</body></message>");
        assert!(EncryptedMessage::find(&plain).is_none());
        let omemo2 =
            parse("<message xmlns='jabber:client'><encrypted xmlns='urn:xmpp:omemo:2'/></message>");
        assert!(EncryptedMessage::find(&omemo2).is_none());
    }

    // ---- encrypted messages: errors ----

    #[test]
    fn omemo2_encrypted_element_is_unexpected() {
        let omemo2 = parse("<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted>");
        assert_eq!(
            EncryptedMessage::from_element(&omemo2),
            Err(StanzaError::UnexpectedElement {
                expected: "encrypted",
                expected_namespace: LEGACY_NAMESPACE,
                name: "encrypted".to_owned(),
                namespace: "urn:xmpp:omemo:2".to_owned(),
            })
        );
    }

    #[test]
    fn missing_header_is_rejected() {
        assert_eq!(
            encrypted("", "<payload>Vas=</payload>"),
            Err(StanzaError::MissingElement("header"))
        );
    }

    #[test]
    fn missing_or_non_numeric_sid_is_rejected() {
        assert_eq!(
            encrypted(&format!("<header>{KEY}{IV}</header>"), ""),
            Err(StanzaError::MissingAttribute {
                element: "header",
                attribute: "sid"
            })
        );
        assert_eq!(
            encrypted(&format!("<header sid='-5'>{KEY}{IV}</header>"), ""),
            Err(StanzaError::InvalidAttribute {
                element: "header",
                attribute: "sid",
                value: "-5".to_owned()
            })
        );
    }

    #[test]
    fn missing_or_empty_iv_is_rejected() {
        assert_eq!(
            encrypted(&header(KEY), ""),
            Err(StanzaError::MissingElement("iv"))
        );
        assert_eq!(
            encrypted(&header(&format!("{KEY}<iv> \n </iv>")), ""),
            Err(StanzaError::EmptyElement("iv"))
        );
    }

    #[test]
    fn missing_or_non_numeric_rid_is_rejected() {
        assert_eq!(
            encrypted(&header(&format!("<key>MwohBQ==</key>{IV}")), ""),
            Err(StanzaError::MissingAttribute {
                element: "key",
                attribute: "rid"
            })
        );
        assert_eq!(
            encrypted(&header(&format!("<key rid='abc'>MwohBQ==</key>{IV}")), ""),
            Err(StanzaError::InvalidAttribute {
                element: "key",
                attribute: "rid",
                value: "abc".to_owned()
            })
        );
    }

    #[test]
    fn malformed_base64_is_rejected_naming_the_element() {
        assert_eq!(
            encrypted(&header(&format!("<key rid='2'>Mwoh!BQ==</key>{IV}")), ""),
            Err(StanzaError::Base64 { what: "key" })
        );
        assert_eq!(
            encrypted(&header(&format!("{KEY}<iv>A</iv>")), ""),
            Err(StanzaError::Base64 { what: "iv" })
        );
        assert_eq!(
            encrypted(&header(&format!("{KEY}{IV}")), "<payload>%%%</payload>"),
            Err(StanzaError::Base64 { what: "payload" })
        );
    }

    #[test]
    fn empty_key_is_rejected() {
        assert_eq!(
            encrypted(&header(&format!("<key rid='2'/>{IV}")), ""),
            Err(StanzaError::EmptyElement("key"))
        );
    }

    #[test]
    fn more_than_ten_thousand_keys_are_rejected() {
        let keys = KEY.repeat(MAX_KEYS_PER_MESSAGE + 1);
        assert_eq!(
            encrypted(&header(&format!("{keys}{IV}")), ""),
            Err(StanzaError::TooMany {
                what: "key",
                count: MAX_KEYS_PER_MESSAGE + 1,
                cap: MAX_KEYS_PER_MESSAGE
            })
        );
        let at_cap = KEY.repeat(MAX_KEYS_PER_MESSAGE);
        assert_eq!(
            encrypted(&header(&format!("{at_cap}{IV}")), "")
                .unwrap()
                .keys
                .len(),
            MAX_KEYS_PER_MESSAGE
        );
    }

    #[test]
    fn oversized_payload_and_key_are_rejected() {
        let payload = "A".repeat(MAX_PAYLOAD_TEXT_LENGTH + 4);
        assert_eq!(
            encrypted(
                &header(&format!("{KEY}{IV}")),
                &format!("<payload>{payload}</payload>")
            ),
            Err(StanzaError::TooLarge {
                what: "payload",
                size: MAX_PAYLOAD_TEXT_LENGTH + 4,
                limit: MAX_PAYLOAD_TEXT_LENGTH
            })
        );
        let key = "A".repeat(MAX_FIELD_TEXT_LENGTH + 4);
        assert!(matches!(
            encrypted(&header(&format!("<key rid='1'>{key}</key>{IV}")), ""),
            Err(StanzaError::TooLarge { what: "key", .. })
        ));
    }

    #[test]
    fn invalid_attribute_values_are_shortened_in_errors() {
        let long = "x".repeat(1000);
        let Err(StanzaError::InvalidAttribute { value, .. }) =
            encrypted(&format!("<header sid='{long}'>{IV}</header>"), "")
        else {
            panic!("expected InvalidAttribute");
        };
        assert!(value.len() < 100);
    }

    // ---- message stanza ----

    #[test]
    fn message_element_has_body_encrypted_eme_and_store_in_order() {
        let message = message_element(
            "juliet@capulet.lit",
            "m1",
            "chat",
            &sample_message(),
            Some("This message is OMEMO encrypted."),
        );
        assert!(message.is("message", NS_CLIENT));
        assert_eq!(message.attr("to"), Some("juliet@capulet.lit"));
        assert_eq!(message.attr("id"), Some("m1"));
        assert_eq!(message.attr("type"), Some("chat"));
        let children: Vec<_> = message
            .children()
            .map(|c| (c.name().to_owned(), c.ns()))
            .collect();
        assert_eq!(
            children,
            [
                ("body".to_owned(), NS_CLIENT.to_owned()),
                ("encrypted".to_owned(), LEGACY_NAMESPACE.to_owned()),
                ("encryption".to_owned(), "urn:xmpp:eme:0".to_owned()),
                ("store".to_owned(), "urn:xmpp:hints".to_owned()),
            ]
        );
        let eme = message.get_child("encryption", "urn:xmpp:eme:0").unwrap();
        assert_eq!(eme.attr("namespace"), Some(LEGACY_NAMESPACE));
        assert_eq!(eme.attr("name"), Some("OMEMO"));
        let wire = reparse(&message);
        assert_eq!(
            EncryptedMessage::from_element(EncryptedMessage::find(&wire).unwrap()),
            Ok(sample_message())
        );
        assert_eq!(
            wire.get_child("body", NS_CLIENT).unwrap().text(),
            "This message is OMEMO encrypted."
        );
    }

    #[test]
    fn key_transport_message_has_no_body_and_no_eme_but_a_store_hint() {
        let transport = EncryptedMessage {
            payload: None,
            ..sample_message()
        };
        let message = message_element("juliet@capulet.lit", "kt", "chat", &transport, None);
        let names: Vec<_> = message.children().map(|c| c.name().to_owned()).collect();
        assert_eq!(names, ["encrypted", "store"]);
    }

    // ---- device lists ----

    #[test]
    fn device_list_parses_in_order() {
        let list = parse(
            r#"<list xmlns="eu.siacs.conversations.axolotl">
  <device id="1164059891" />
  <device id="26052318" />
  <device id="564866972" />
</list>"#,
        );
        assert_eq!(
            parse_device_list(&list, 1000),
            Ok(vec![1_164_059_891, 26_052_318, 564_866_972])
        );
    }

    #[test]
    fn device_list_round_trips() {
        for ids in [vec![], vec![0, 1, u32::MAX], (1..=200).collect()] {
            let element = device_list_element(&ids);
            assert_eq!(parse_device_list(&element, 1000), Ok(ids.clone()));
            assert_eq!(parse_device_list(&reparse(&element), 1000), Ok(ids));
        }
    }

    #[test]
    fn device_list_drops_duplicates_and_skips_unusable_ids() {
        let list = parse(
            "<list xmlns='eu.siacs.conversations.axolotl'>\
               <device id='5'/><device id='x'/><device/><device id='5'/>\
               <device id='4294967296'/><device id='-1'/><device id=' 6 '/>\
               <other id='9'/><device xmlns='urn:xmpp:omemo:2' id='10'/>\
             </list>",
        );
        assert_eq!(parse_device_list(&list, 1000), Ok(vec![5, 6]));
    }

    #[test]
    fn element_other_than_list_is_rejected() {
        let devices = parse("<devices xmlns='urn:xmpp:omemo:2'><device id='1'/></devices>");
        assert!(matches!(
            parse_device_list(&devices, 1000),
            Err(StanzaError::UnexpectedElement {
                expected: "list",
                ..
            })
        ));
        let wrong_ns = parse("<list xmlns='urn:example'/>");
        assert!(matches!(
            parse_device_list(&wrong_ns, 1000),
            Err(StanzaError::UnexpectedElement { .. })
        ));
    }

    #[test]
    fn ten_thousand_devices_exceed_a_cap_of_one_thousand() {
        let ids: Vec<u32> = (1..=10_000).collect();
        assert_eq!(
            parse_device_list(&device_list_element(&ids), 1000),
            Err(StanzaError::TooManyDevices {
                count: 10_000,
                cap: 1000
            })
        );
        // Duplicates do not count against the cap.
        let mut repeated = vec![7u32; 5000];
        repeated.extend(1..=1000);
        assert_eq!(
            parse_device_list(&device_list_element(&repeated), 1000).map(|ids| ids.len()),
            Ok(1000)
        );
    }

    // ---- bundles ----

    #[test]
    fn xmpp_parsers_bundle_parses_and_verifies() {
        let bundle = parse_bundle(&fixture!("xmpp_parsers_bundle.xml")).unwrap();
        assert_eq!(
            *bundle.identity_key.to_wire(Version::Legacy).unwrap(),
            [
                5, 1, 93, 218, 159, 206, 171, 222, 239, 0, 7, 75, 40, 13, 61, 14, 87, 18, 131, 76,
                117, 197, 105, 246, 235, 74, 117, 141, 167, 178, 34, 16, 25,
            ]
        );
        assert_eq!(bundle.signed_pre_key_id, 1);
        assert_eq!(
            *bundle.signed_pre_key.to_wire(Version::Legacy),
            [
                5, 128, 27, 0, 32, 53, 229, 179, 231, 247, 154, 123, 68, 96, 182, 93, 184, 16, 202,
                92, 188, 105, 18, 146, 224, 22, 137, 250, 16, 252, 97, 184, 94,
            ]
        );
        assert_eq!(bundle.signed_pre_key_signature.len(), 64);
        assert_eq!(bundle.signed_pre_key_signature[63], 140);
        let ids: Vec<_> = bundle.pre_keys.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            bundle.pre_keys[2].1.to_wire(Version::Legacy)[..4],
            [5, 229, 107, 231]
        );
        assert_eq!(bundle.verify(), Ok(()));
    }

    #[test]
    fn tampered_bundle_signature_parses_but_fails_verification() {
        let mut bundle = parse_bundle(&fixture!("xmpp_parsers_bundle.xml")).unwrap();
        bundle.signed_pre_key_signature[0] ^= 1;
        assert_eq!(bundle.verify(), Err(KeyError::BadSignature));
    }

    #[test]
    fn converse_bundle_with_ids_zero_parses_and_verifies() {
        let event = fixture!("conversejs_bundle_event.xml");
        let bundle_element = event
            .get_child("event", "http://jabber.org/protocol/pubsub#event")
            .and_then(|e| e.get_child("items", "http://jabber.org/protocol/pubsub#event"))
            .and_then(|i| i.get_child("item", "http://jabber.org/protocol/pubsub#event"))
            .and_then(|i| i.get_child("bundle", LEGACY_NAMESPACE))
            .unwrap();
        let bundle = parse_bundle(bundle_element).unwrap();
        assert_eq!(bundle.signed_pre_key_id, 0);
        assert_eq!(bundle.pre_keys[0].0, 0);
        assert_eq!(bundle.pre_keys.len(), 4);
        assert_eq!(bundle.verify(), Ok(()));
    }

    #[test]
    fn bundle_round_trips() {
        let bundle = generated_bundle(1, 1..101);
        let element = bundle_element(&bundle).unwrap();
        assert_eq!(parse_bundle(&element), Ok(bundle.clone()));
        let parsed = parse_bundle(&reparse(&element)).unwrap();
        assert_eq!(parsed, bundle);
        assert_eq!(parsed.verify(), Ok(()));
        let zero_ids = generated_bundle(0, 0..1);
        assert_eq!(
            parse_bundle(&bundle_element(&zero_ids).unwrap()),
            Ok(zero_ids)
        );
        let mut omemo2 = bundle;
        omemo2.version = Version::Omemo2;
        assert_eq!(
            bundle_element(&omemo2),
            Err(StanzaError::WrongVersion {
                what: "bundle",
                expected: Version::Legacy,
                found: Version::Omemo2
            })
        );
    }

    #[test]
    fn bundle_element_writes_children_in_conversations_order() {
        let element = bundle_element(&generated_bundle(7, 1..3)).unwrap();
        let names: Vec<_> = element.children().map(|c| c.name().to_owned()).collect();
        assert_eq!(
            names,
            [
                "signedPreKeyPublic",
                "signedPreKeySignature",
                "identityKey",
                "prekeys"
            ]
        );
        assert_eq!(
            element
                .get_child("signedPreKeyPublic", LEGACY_NAMESPACE)
                .unwrap()
                .attr("signedPreKeyId"),
            Some("7")
        );
    }

    const SPK: &str = "<signedPreKeyPublic signedPreKeyId='1'>BYAbACA15bPn95p7RGC2XbgQyly8aRKS4BaJ+hD8Ybhe</signedPreKeyPublic>";
    const SIG: &str = "<signedPreKeySignature>sIJVNDZi/NgFsry4OBdM+adyGttLEXbUh/h/5dVOZveMgyVoIdgwBUzq8Wgd2xYTQMioNzwYebTX+9p0h9eujA==</signedPreKeySignature>";
    const IK: &str = "<identityKey>BQFd2p/Oq97vAAdLKA09DlcSg0x1xWn260p1jaeyIhAZ</identityKey>";
    const PRE_KEY: &str =
        "<preKeyPublic preKeyId='1'>BbjHsF5ndtNV8ToRcJTYSNGePgAWsFGkSL6OG7B7LXRe</preKeyPublic>";

    fn bundle(inner: &str) -> Result<PreKeyBundle, StanzaError> {
        parse_bundle(&parse(&format!(
            "<bundle xmlns='eu.siacs.conversations.axolotl'>{inner}</bundle>"
        )))
    }

    fn prekeys(inner: &str) -> String {
        format!("<prekeys>{inner}</prekeys>")
    }

    #[test]
    fn bundle_parts_may_come_in_any_order_with_wrapped_base64() {
        let wrapped_ik =
            "<identityKey>\n  BQFd2p/Oq97vAAdLKA09DlcSg0x1\n  xWn260p1jaeyIhAZ\n</identityKey>";
        let parsed = bundle(&format!("{}{wrapped_ik}{SIG}{SPK}", prekeys(PRE_KEY))).unwrap();
        assert_eq!(parsed.verify(), Ok(()));
    }

    #[test]
    fn wrong_length_identity_key_is_rejected() {
        let short_ik = "<identityKey>BQFd2p/Oq97vAAdLKA09DlcSg0x1xWn260p1jaeyIg==</identityKey>";
        assert_eq!(
            bundle(&format!("{SPK}{SIG}{short_ik}{}", prekeys(PRE_KEY))),
            Err(StanzaError::InvalidKey {
                what: "identityKey",
                source: KeyError::InvalidLength {
                    what: "serialized public key",
                    expected: 33,
                    actual: 31
                }
            })
        );
    }

    #[test]
    fn signed_prekey_without_type_byte_is_rejected() {
        // 33 bytes starting 0x06.
        let bad_spk = "<signedPreKeyPublic signedPreKeyId='1'>BoAbACA15bPn95p7RGC2XbgQyly8aRKS4BaJ+hD8Ybhe</signedPreKeyPublic>";
        assert_eq!(
            bundle(&format!("{bad_spk}{SIG}{IK}{}", prekeys(PRE_KEY))),
            Err(StanzaError::InvalidKey {
                what: "signedPreKeyPublic",
                source: KeyError::InvalidKeyType(6)
            })
        );
        // A raw 32-byte key (no 0x05 prefix), as OMEMO 2 publishes.
        let raw_spk = "<signedPreKeyPublic signedPreKeyId='1'>gBsAIDXls+f3mntEYLZduBDKXLxpEpLgFon6EPxhuF4=</signedPreKeyPublic>";
        assert!(matches!(
            bundle(&format!("{raw_spk}{SIG}{IK}{}", prekeys(PRE_KEY))),
            Err(StanzaError::InvalidKey {
                what: "signedPreKeyPublic",
                source: KeyError::InvalidLength { actual: 32, .. }
            })
        ));
    }

    #[test]
    fn bundle_missing_parts_are_rejected() {
        let all = prekeys(PRE_KEY);
        assert_eq!(
            bundle(&format!("{SIG}{IK}{all}")),
            Err(StanzaError::MissingElement("signedPreKeyPublic"))
        );
        assert_eq!(
            bundle(&format!("{SPK}{IK}{all}")),
            Err(StanzaError::MissingElement("signedPreKeySignature"))
        );
        assert_eq!(
            bundle(&format!("{SPK}{SIG}{all}")),
            Err(StanzaError::MissingElement("identityKey"))
        );
        assert_eq!(
            bundle(&format!("{SPK}{SIG}{IK}")),
            Err(StanzaError::MissingElement("prekeys"))
        );
        let no_id =
            "<signedPreKeyPublic>BYAbACA15bPn95p7RGC2XbgQyly8aRKS4BaJ+hD8Ybhe</signedPreKeyPublic>";
        assert_eq!(
            bundle(&format!("{no_id}{SIG}{IK}{all}")),
            Err(StanzaError::MissingAttribute {
                element: "signedPreKeyPublic",
                attribute: "signedPreKeyId"
            })
        );
    }

    #[test]
    fn bad_or_empty_signature_is_rejected() {
        let all = prekeys(PRE_KEY);
        assert_eq!(
            bundle(&format!(
                "{SPK}<signedPreKeySignature>sIJV NDZ=i</signedPreKeySignature>{IK}{all}"
            )),
            Err(StanzaError::Base64 {
                what: "signedPreKeySignature"
            })
        );
        assert_eq!(
            bundle(&format!("{SPK}<signedPreKeySignature/>{IK}{all}")),
            Err(StanzaError::EmptyElement("signedPreKeySignature"))
        );
        let huge = "A".repeat(MAX_FIELD_TEXT_LENGTH + 4);
        assert!(matches!(
            bundle(&format!(
                "{SPK}<signedPreKeySignature>{huge}</signedPreKeySignature>{IK}{all}"
            )),
            Err(StanzaError::TooLarge {
                what: "signedPreKeySignature",
                ..
            })
        ));
    }

    #[test]
    fn unusable_prekeys_are_skipped() {
        let parsed = bundle(&format!(
            "{SPK}{SIG}{IK}{}",
            prekeys(&format!(
                "<preKeyPublic preKeyId='x'>BbjHsF5ndtNV8ToRcJTYSNGePgAWsFGkSL6OG7B7LXRe</preKeyPublic>\
                 <preKeyPublic>BbjHsF5ndtNV8ToRcJTYSNGePgAWsFGkSL6OG7B7LXRe</preKeyPublic>\
                 <preKeyPublic preKeyId='2'>AAAA</preKeyPublic>\
                 <preKeyPublic preKeyId='3'>!!</preKeyPublic>\
                 {PRE_KEY}"
            ))
        ))
        .unwrap();
        let ids: Vec<_> = parsed.pre_keys.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1]);
        let none = bundle(&format!("{SPK}{SIG}{IK}<prekeys/>")).unwrap();
        assert!(none.pre_keys.is_empty());
    }

    #[test]
    fn more_than_one_thousand_prekeys_are_rejected() {
        let many = PRE_KEY.repeat(MAX_BUNDLE_PRE_KEYS + 1);
        assert_eq!(
            bundle(&format!("{SPK}{SIG}{IK}{}", prekeys(&many))),
            Err(StanzaError::TooMany {
                what: "preKeyPublic",
                count: MAX_BUNDLE_PRE_KEYS + 1,
                cap: MAX_BUNDLE_PRE_KEYS
            })
        );
    }

    #[test]
    fn element_other_than_bundle_is_rejected() {
        let omemo2 = parse("<bundle xmlns='urn:xmpp:omemo:2'/>");
        assert!(matches!(
            parse_bundle(&omemo2),
            Err(StanzaError::UnexpectedElement {
                expected: "bundle",
                ..
            })
        ));
    }

    #[test]
    fn bundle_node_names_the_device() {
        assert_eq!(
            bundle_node(1_764_234_561),
            "eu.siacs.conversations.axolotl.bundles:1764234561"
        );
        assert_eq!(bundle_node(0), "eu.siacs.conversations.axolotl.bundles:0");
    }
}
