//! OMEMO 2 elements (namespace `urn:xmpp:omemo:2`, XEP-0384 0.8 and later): the encrypted
//! message, the device list with its signed labels, and the bundle.
//!
//! Parsers are lenient where deployed clients differ (wrapped base64, `kex='1'`, unknown
//! children, children of `<bundle>` in any order) and strict where security needs it
//! (key lengths, sizes, labels only with a valid signature). Builders write what
//! python-omemo's `twomemo` writes.

use std::collections::HashSet;

use minidom::Element;

pub use super::EncryptedKey;
use super::bundle::BundleLayout;
use super::encrypted::message_with;
use super::xml::{
    children_named, decode_base64, decode_base64_attr, element, encode_base64, expect_element,
    parse_u32, required_child, same_bare_jid, set_attr, text_element, u32_attr,
};
use crate::bundle::PreKeyBundle;
use crate::consts::{
    MAX_FIELD_TEXT_LENGTH, MAX_KEYS_PER_MESSAGE, MAX_PAYLOAD_TEXT_LENGTH, OMEMO2_NAMESPACE,
};
use crate::error::StanzaError;
use crate::keys::IdentityKey;
use crate::version::Version;

/// The namespace of OMEMO 2 elements.
pub const NAMESPACE: &str = OMEMO2_NAMESPACE;

/// The pubsub node of the OMEMO 2 device list. Publish it with item id `current`.
pub const DEVICE_LIST_NODE: &str = "urn:xmpp:omemo:2:devices";

/// The one pubsub node that holds the bundles of all devices of an account, one item per
/// device, named by [`bundle_item_id`]. Publish with [`bundles_node_options`]; take a
/// removed device's bundle off with [`retract_iq`](super::retract_iq).
pub const BUNDLES_NODE: &str = "urn:xmpp:omemo:2:bundles";

/// The `pubsub#max_items` values to try for [`BUNDLES_NODE`], best first: `max`, as
/// XEP-0384 asks, then numbers for servers that refuse it. Servers refuse numbers above
/// their own limit (Prosody: `pep_max_items`, 256 by default, so 1000 fails there), hence
/// the descending list (QXmpp tries 1000, 100, 10).
pub const BUNDLES_NODE_MAX_ITEMS: &[&str] = &["max", "1000", "256", "100", "10"];

/// The publish options of [`BUNDLES_NODE`] with `max_items` (one of
/// [`BUNDLES_NODE_MAX_ITEMS`]): open access, persistent items, for
/// [`publish_iq_with_options`](super::publish_iq_with_options) and
/// [`configure_node_iq`](super::configure_node_iq).
///
/// ```
/// use omemo::stanza::omemo2::{BUNDLES_NODE_MAX_ITEMS, bundles_node_options};
///
/// let options = bundles_node_options(BUNDLES_NODE_MAX_ITEMS[0]);
/// assert!(options.contains(&("pubsub#max_items", "max")));
/// assert!(options.contains(&("pubsub#access_model", "open")));
/// ```
pub fn bundles_node_options(max_items: &str) -> [(&'static str, &str); 3] {
    [
        ("pubsub#access_model", "open"),
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", max_items),
    ]
}

/// The names of the OMEMO 2 `<bundle>`.
const BUNDLE: BundleLayout = BundleLayout {
    version: Version::Omemo2,
    namespace: OMEMO2_NAMESPACE,
    signed_pre_key: ("spk", "id"),
    signature: "spks",
    identity_key: "ik",
    pre_key: ("pk", "id"),
};

/// Longest device label accepted, in bytes (XEP-0384 asks for labels under 53 code points;
/// deployed clients are not held to it, but a label is no place for a kilobyte).
pub const MAX_LABEL_LENGTH: usize = 256;
/// Length of a `labelsig`: an Ed25519 signature.
const LABEL_SIGNATURE_LENGTH: usize = 64;

/// The item id of the bundle of `device_id` on [`BUNDLES_NODE`]: the id in decimal.
///
/// ```
/// assert_eq!(omemo::stanza::omemo2::bundle_item_id(42), "42");
/// ```
pub fn bundle_item_id(device_id: u32) -> String {
    device_id.to_string()
}

/// The keys for the devices of one JID (`<keys jid=…>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientKeys {
    /// The bare JID the keys are for, as written by the sender.
    pub jid: String,
    /// The keys, in document order. One device may have several.
    pub keys: Vec<EncryptedKey>,
}

/// An OMEMO 2 `<encrypted xmlns='urn:xmpp:omemo:2'>` element.
///
/// ```text
/// <encrypted xmlns='urn:xmpp:omemo:2'>
///   <header sid='SENDER_DEVICE'>
///     <keys jid='juliet@capulet.lit'>
///       <key rid='DEVICE'>b64(OMEMOAuthenticatedMessage)</key>
///       <key rid='DEVICE' kex='true'>b64(OMEMOKeyExchange)</key>
///     </keys>
///     <keys jid='romeo@montague.lit'> … the sender's other devices … </keys>
///   </header>
///   <payload>b64(AES-256-CBC of the SCE envelope)</payload>   (absent in empty messages)
/// </encrypted>
/// ```
///
/// ```
/// use omemo::stanza::omemo2::{EncryptedKey, EncryptedMessage, RecipientKeys};
///
/// let message = EncryptedMessage {
///     sender_device: 1,
///     recipients: vec![RecipientKeys {
///         jid: "juliet@capulet.lit".into(),
///         keys: vec![EncryptedKey { recipient_device: 2, key_exchange: true, data: vec![8, 1] }],
///     }],
///     payload: Some(b"ciphertext".to_vec()),
/// };
/// let parsed = EncryptedMessage::from_element(&message.to_element())?;
/// assert_eq!(parsed, message);
/// assert_eq!(parsed.keys_for("juliet@capulet.lit", 2).count(), 1);
/// assert_eq!(parsed.keys_for("romeo@montague.lit", 2).count(), 0);
/// # Ok::<(), omemo::stanza::StanzaError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedMessage {
    /// The sending device (`sid`).
    pub sender_device: u32,
    /// The keys by recipient JID, in document order.
    pub recipients: Vec<RecipientKeys>,
    /// The payload ciphertext; `None` for an empty message.
    pub payload: Option<Vec<u8>>,
}

impl EncryptedMessage {
    /// Parses an `<encrypted>` element.
    ///
    /// Requires `<header>` with a numeric `sid`, a `jid` on every `<keys>`, and a numeric
    /// `rid` and non-empty base64 on every `<key>`. At most 10 000 keys in all, 8 KiB of
    /// text per key and 1 MiB of payload text are accepted. Unknown children are ignored;
    /// an `<iv>` (there is none in OMEMO 2) too.
    pub fn from_element(encrypted: &Element) -> Result<Self, StanzaError> {
        expect_element(encrypted, "encrypted", NAMESPACE)?;
        let header = required_child(encrypted, "header", NAMESPACE)?;
        let sender_device = u32_attr(header, "header", "sid")?;
        let total: usize = children_named(header, "keys", NAMESPACE)
            .map(|keys| children_named(keys, "key", NAMESPACE).count())
            .sum();
        if total > MAX_KEYS_PER_MESSAGE {
            return Err(StanzaError::TooMany {
                what: "key",
                count: total,
                cap: MAX_KEYS_PER_MESSAGE,
            });
        }
        let recipients = children_named(header, "keys", NAMESPACE)
            .map(|keys| {
                let jid = keys.attr("jid").ok_or(StanzaError::MissingAttribute {
                    element: "keys",
                    attribute: "jid",
                })?;
                Ok(RecipientKeys {
                    jid: jid.trim_ascii().to_owned(),
                    keys: children_named(keys, "key", NAMESPACE)
                        .map(|key| EncryptedKey::from_element(key, "kex"))
                        .collect::<Result<_, StanzaError>>()?,
                })
            })
            .collect::<Result<Vec<_>, StanzaError>>()?;
        let payload = encrypted
            .get_child("payload", NAMESPACE)
            .map(|p| decode_base64("payload", p, MAX_PAYLOAD_TEXT_LENGTH))
            .transpose()?;
        Ok(Self {
            sender_device,
            recipients,
            payload,
        })
    }

    /// The `<encrypted>` element as twomemo writes it: `kex='true'` only on key
    /// exchanges, `<payload>` only when there is one.
    pub fn to_element(&self) -> Element {
        let mut header = element("header", NAMESPACE);
        set_attr(&mut header, "sid", self.sender_device.to_string());
        for recipient in &self.recipients {
            let mut keys = element("keys", NAMESPACE);
            set_attr(&mut keys, "jid", recipient.jid.clone());
            for key in &recipient.keys {
                keys.append_child(key.to_element(NAMESPACE, "kex"));
            }
            header.append_child(keys);
        }
        let mut encrypted = element("encrypted", NAMESPACE);
        encrypted.append_child(header);
        if let Some(payload) = &self.payload {
            encrypted.append_child(text_element("payload", NAMESPACE, encode_base64(payload)));
        }
        encrypted
    }

    /// The OMEMO 2 `<encrypted>` child of a `<message>`, if any.
    pub fn find(message: &Element) -> Option<&Element> {
        message.get_child("encrypted", NAMESPACE)
    }

    /// The keys addressed to `device` of `jid` (a bare JID), in document order. Devices
    /// are matched by JID and id together: two accounts may have devices of one id. JIDs
    /// compare as parsed bare JIDs (`Juliet@Capulet.LIT` is `juliet@capulet.lit`).
    pub fn keys_for<'a>(
        &'a self,
        jid: &'a str,
        device: u32,
    ) -> impl Iterator<Item = &'a EncryptedKey> + 'a {
        self.recipients
            .iter()
            .filter(move |r| same_bare_jid(&r.jid, jid))
            .flat_map(|r| &r.keys)
            .filter(move |k| k.recipient_device == device)
    }
}

/// A `<message>` carrying `encrypted`: `<body>` with `fallback_body` when given, the
/// `<encrypted>`, the XEP-0380 `<encryption namespace='urn:xmpp:omemo:2' name='OMEMO'/>`
/// when there is a payload, and the XEP-0334 `<store/>` hint. The message is in the
/// `jabber:client` namespace.
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
        encrypted.payload.is_some().then_some(NAMESPACE),
        fallback_body,
    )
}

/// One `<device>` of an OMEMO 2 device list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDevice {
    /// The device id.
    pub id: u32,
    /// The label as published, not yet checked; use [`ListedDevice::verified_label`].
    pub label: Option<String>,
    /// The `labelsig`: an Ed25519 signature of the label by the device's identity key.
    pub label_signature: Option<Vec<u8>>,
}

impl ListedDevice {
    /// A device without a label.
    pub fn new(id: u32) -> Self {
        Self {
            id,
            label: None,
            label_signature: None,
        }
    }

    /// The label, if its signature verifies with `identity` (the identity key from the
    /// device's bundle). A label without a valid signature must be ignored (XEP-0384
    /// 0.9): anyone who can write the list could have put it there.
    pub fn verified_label(&self, identity: &IdentityKey) -> Option<&str> {
        let label = self.label.as_deref()?;
        let signature = self.label_signature.as_deref()?;
        identity
            .verify(Version::Omemo2, label.as_bytes(), signature)
            .ok()
            .map(|()| label)
    }
}

/// The devices of a `<devices xmlns='urn:xmpp:omemo:2'>`, in document order without
/// duplicates (the first entry of an id wins).
///
/// `<device>` entries whose `id` is missing or not a `u32` are skipped, and so are labels
/// longer than [`MAX_LABEL_LENGTH`] bytes and `labelsig`s that are not 64 bytes of base64
/// (the device stays, its label goes). An empty list is valid. Fails when the element is not an OMEMO 2 `<devices>` or
/// names more than `cap` distinct devices.
pub fn parse_device_list(devices: &Element, cap: usize) -> Result<Vec<ListedDevice>, StanzaError> {
    expect_element(devices, "devices", NAMESPACE)?;
    let mut seen = HashSet::new();
    let mut listed = Vec::new();
    for device in children_named(devices, "device", NAMESPACE) {
        let Some(id) = device.attr("id").and_then(parse_u32) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let label = device
            .attr("label")
            .filter(|label| label.len() <= MAX_LABEL_LENGTH);
        let label_signature = device
            .attr("labelsig")
            .and_then(|sig| decode_base64_attr("labelsig", sig, MAX_FIELD_TEXT_LENGTH).ok())
            .filter(|sig| sig.len() == LABEL_SIGNATURE_LENGTH);
        let (label, label_signature) = match (label, label_signature) {
            (Some(label), Some(signature)) => (Some(label.to_owned()), Some(signature)),
            _ => (None, None),
        };
        listed.push(ListedDevice {
            id,
            label,
            label_signature,
        });
    }
    if listed.len() > cap {
        return Err(StanzaError::TooManyDevices {
            count: listed.len(),
            cap,
        });
    }
    Ok(listed)
}

/// The `<devices xmlns='urn:xmpp:omemo:2'>` of `devices`, in the order given; `label` and
/// `labelsig` only where both are present.
pub fn device_list_element(devices: &[ListedDevice]) -> Element {
    let mut list = element("devices", NAMESPACE);
    for device in devices {
        let mut entry = element("device", NAMESPACE);
        set_attr(&mut entry, "id", device.id.to_string());
        if let (Some(label), Some(signature)) = (&device.label, &device.label_signature) {
            set_attr(&mut entry, "label", label.clone());
            set_attr(&mut entry, "labelsig", encode_base64(signature));
        }
        list.append_child(entry);
    }
    list
}

/// Parses a `<bundle xmlns='urn:xmpp:omemo:2'>`.
///
/// The identity key must be a 32-byte Ed25519 key (canonical, not of low order), the
/// signed prekey and the prekeys 32-byte X25519 keys, and the signature base64 (its
/// length and validity are left to [`PreKeyBundle::verify`], which the caller must run).
/// Children may come in any order. One-time prekeys with a bad id or key are skipped;
/// more than 1000 `<pk>` elements fail.
pub fn parse_bundle(bundle: &Element) -> Result<PreKeyBundle, StanzaError> {
    BUNDLE.parse(bundle)
}

/// The `<bundle xmlns='urn:xmpp:omemo:2'>` of an OMEMO 2 `bundle`, children in the order
/// twomemo writes them. Publish it on [`BUNDLES_NODE`] with item id [`bundle_item_id`].
/// A legacy bundle is refused: its signature is over the `0x05`-prefixed key, which no
/// OMEMO 2 client verifies.
pub fn bundle_element(bundle: &PreKeyBundle) -> Result<Element, StanzaError> {
    BUNDLE.build(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{PreKey, SignedPreKey};
    use crate::error::KeyError;
    use crate::keys::IdentityKeyPair;
    use crate::stanza::test_support::{parse, reparse};
    use crate::stanza::xml::{NS_CLIENT, NS_EME};

    fn encrypted(inner: &str) -> Result<EncryptedMessage, StanzaError> {
        EncryptedMessage::from_element(&parse(&format!(
            "<encrypted xmlns='urn:xmpp:omemo:2'>{inner}</encrypted>"
        )))
    }

    fn sample_message() -> EncryptedMessage {
        let key = |rid, kex, data: &[u8]| EncryptedKey {
            recipient_device: rid,
            key_exchange: kex,
            data: data.to_vec(),
        };
        EncryptedMessage {
            sender_device: 31_337,
            recipients: vec![
                RecipientKeys {
                    jid: "juliet@capulet.lit".into(),
                    keys: vec![key(1, true, &[8, 2, 16, 1]), key(2, false, &[10, 16])],
                },
                RecipientKeys {
                    jid: "romeo@montague.lit".into(),
                    keys: vec![key(1, false, &[10; 40])],
                },
            ],
            payload: Some(b"ciphertext".to_vec()),
        }
    }

    fn generated_bundle(pre_key_ids: std::ops::Range<u32>) -> (IdentityKeyPair, PreKeyBundle) {
        let mut rng = crate::os_rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed = SignedPreKey::generate(Version::Omemo2, &mut rng, &identity, 5);
        let pre_keys: Vec<_> = pre_key_ids
            .map(|id| PreKey::generate(&mut rng, id))
            .collect();
        let bundle = PreKeyBundle::new(&identity, &signed, &pre_keys);
        (identity, bundle)
    }

    // ---- encrypted messages ----

    #[test]
    fn encrypted_message_round_trips_and_matches_devices_by_jid_and_id() {
        let message = sample_message();
        let element = message.to_element();
        assert_eq!(
            EncryptedMessage::from_element(&element),
            Ok(message.clone())
        );
        let parsed = EncryptedMessage::from_element(&reparse(&element)).unwrap();
        assert_eq!(parsed, message);
        let kex: Vec<_> = parsed
            .keys_for("juliet@capulet.lit", 1)
            .map(|k| k.key_exchange)
            .collect();
        assert_eq!(kex, [true]);
        assert_eq!(parsed.keys_for("romeo@montague.lit", 1).count(), 1);
        assert_eq!(parsed.keys_for("romeo@montague.lit", 2).count(), 0);
        assert_eq!(parsed.keys_for("nurse@capulet.lit", 1).count(), 0);
        assert_eq!(parsed.keys_for("Juliet@Capulet.LIT", 1).count(), 1);
    }

    #[test]
    fn senders_write_kex_true_only_on_key_exchanges_and_no_iv() {
        let element = sample_message().to_element();
        let header = element.get_child("header", NAMESPACE).unwrap();
        assert!(header.get_child("iv", NAMESPACE).is_none());
        let flags: Vec<_> = header
            .children()
            .flat_map(|keys| keys.children())
            .map(|k| k.attr("kex"))
            .collect();
        assert_eq!(flags, [Some("true"), None, None]);
        let jids: Vec<_> = header.children().map(|k| k.attr("jid")).collect();
        assert_eq!(
            jids,
            [Some("juliet@capulet.lit"), Some("romeo@montague.lit")]
        );
    }

    #[test]
    fn kex_attribute_accepts_true_and_1_in_any_case() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("TRUE", true),
            ("false", false),
            ("0", false),
            ("yes", false),
        ] {
            let parsed = encrypted(&format!(
                "<header sid='7'><keys jid='a@b'><key rid='2' kex='{value}'>CAE=</key></keys></header>"
            ))
            .unwrap();
            assert_eq!(
                parsed.recipients[0].keys[0].key_exchange, expected,
                "kex='{value}'"
            );
        }
    }

    #[test]
    fn empty_message_has_no_payload_and_no_eme() {
        let mut message = sample_message();
        message.payload = None;
        let element = message.to_element();
        assert!(element.get_child("payload", NAMESPACE).is_none());
        assert_eq!(
            EncryptedMessage::from_element(&element).unwrap().payload,
            None
        );
        let stanza = message_element("juliet@capulet.lit", "m1", "chat", &message, None);
        assert!(stanza.get_child("encryption", NS_EME).is_none());
    }

    #[test]
    fn message_element_carries_eme_for_omemo2_and_the_store_hint() {
        let stanza = message_element(
            "juliet@capulet.lit",
            "m1",
            "chat",
            &sample_message(),
            Some("I sent you an OMEMO 2 encrypted message."),
        );
        assert!(stanza.is("message", NS_CLIENT));
        let names: Vec<_> = stanza.children().map(|c| c.name().to_owned()).collect();
        assert_eq!(names, ["body", "encrypted", "encryption", "store"]);
        let eme = stanza.get_child("encryption", NS_EME).unwrap();
        assert_eq!(eme.attr("namespace"), Some(NAMESPACE));
        assert_eq!(eme.attr("name"), Some("OMEMO"));
        let found = EncryptedMessage::find(&stanza).unwrap();
        assert_eq!(EncryptedMessage::from_element(found), Ok(sample_message()));
        // A legacy <encrypted> is not an OMEMO 2 one.
        let legacy = parse(
            "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
        );
        assert!(EncryptedMessage::find(&legacy).is_none());
    }

    #[test]
    fn malformed_encrypted_elements_are_typed_errors() {
        assert_eq!(encrypted(""), Err(StanzaError::MissingElement("header")));
        assert_eq!(
            encrypted("<header><keys jid='a@b'/></header>"),
            Err(StanzaError::MissingAttribute {
                element: "header",
                attribute: "sid"
            })
        );
        assert_eq!(
            encrypted("<header sid='7'><keys><key rid='1'>CAE=</key></keys></header>"),
            Err(StanzaError::MissingAttribute {
                element: "keys",
                attribute: "jid"
            })
        );
        assert_eq!(
            encrypted("<header sid='7'><keys jid='a@b'><key rid='x'>CAE=</key></keys></header>"),
            Err(StanzaError::InvalidAttribute {
                element: "key",
                attribute: "rid",
                value: "x".into()
            })
        );
        assert_eq!(
            encrypted("<header sid='7'><keys jid='a@b'><key rid='1'/></keys></header>"),
            Err(StanzaError::EmptyElement("key"))
        );
        assert_eq!(
            encrypted("<header sid='7'/><payload>not base64!</payload>"),
            Err(StanzaError::Base64 { what: "payload" })
        );
        assert!(matches!(
            EncryptedMessage::from_element(&parse(
                "<encrypted xmlns='eu.siacs.conversations.axolotl'/>"
            )),
            Err(StanzaError::UnexpectedElement { .. })
        ));
    }

    #[test]
    fn more_than_ten_thousand_keys_across_recipients_are_rejected() {
        let keys = "<key rid='1'>CAE=</key>".repeat(5_001);
        let inner = format!(
            "<header sid='7'><keys jid='a@b'>{keys}</keys><keys jid='c@d'>{keys}</keys></header>"
        );
        assert_eq!(
            encrypted(&inner),
            Err(StanzaError::TooMany {
                what: "key",
                count: 10_002,
                cap: 10_000
            })
        );
    }

    // ---- device lists ----

    #[test]
    fn device_list_parses_in_order_without_duplicates_and_round_trips() {
        let signature = crate::stanza::xml::encode_base64(&[0; 64]);
        let list = parse(&format!(
            "<devices xmlns='urn:xmpp:omemo:2'><device id='7'/><device id='x'/><device/>\
             <device id='8' label='Phone' labelsig='{signature}'/>\
             <device id='7' label='dup' labelsig='{signature}'/></devices>",
        ));
        let devices = parse_device_list(&list, 10).unwrap();
        assert_eq!(
            devices,
            [
                ListedDevice::new(7),
                ListedDevice {
                    id: 8,
                    label: Some("Phone".into()),
                    label_signature: Some(vec![0; 64]),
                }
            ]
        );
        assert_eq!(
            parse_device_list(&reparse(&device_list_element(&devices)), 10),
            Ok(devices)
        );
        let empty = parse("<devices xmlns='urn:xmpp:omemo:2'/>");
        assert_eq!(parse_device_list(&empty, 10), Ok(Vec::new()));
    }

    #[test]
    fn device_lists_are_capped_and_must_be_omemo2() {
        let ids: String = (1..=11).map(|id| format!("<device id='{id}'/>")).collect();
        let list = parse(&format!(
            "<devices xmlns='urn:xmpp:omemo:2'>{ids}</devices>"
        ));
        assert_eq!(
            parse_device_list(&list, 10),
            Err(StanzaError::TooManyDevices { count: 11, cap: 10 })
        );
        let legacy = parse("<list xmlns='eu.siacs.conversations.axolotl'><device id='1'/></list>");
        assert!(matches!(
            parse_device_list(&legacy, 10),
            Err(StanzaError::UnexpectedElement { .. })
        ));
    }

    #[test]
    fn a_label_counts_only_with_a_valid_signature_by_the_devices_identity() {
        let mut rng = crate::os_rng();
        let identity = IdentityKeyPair::generate(&mut rng);
        let other = IdentityKeyPair::generate(&mut rng);
        let signature = identity.sign(Version::Omemo2, &mut rng, "Laptop".as_bytes());
        let device = ListedDevice {
            id: 3,
            label: Some("Laptop".into()),
            label_signature: Some(signature.to_vec()),
        };
        let parsed = parse_device_list(&reparse(&device_list_element(&[device])), 10).unwrap();
        assert_eq!(
            parsed[0].verified_label(&identity.identity_key()),
            Some("Laptop")
        );
        assert_eq!(parsed[0].verified_label(&other.identity_key()), None);
        let mut changed = parsed[0].clone();
        changed.label = Some("Lapt0p".into());
        assert_eq!(changed.verified_label(&identity.identity_key()), None);
        // A label without labelsig, or with one that is not base64, is dropped at parse.
        let list = parse(
            "<devices xmlns='urn:xmpp:omemo:2'><device id='1' label='a'/>\
             <device id='2' label='b' labelsig='%%%'/><device id='3' labelsig='AAAA'/></devices>",
        );
        let parsed = parse_device_list(&list, 10).unwrap();
        assert!(
            parsed
                .iter()
                .all(|d| d.label.is_none() && d.label_signature.is_none())
        );
        assert_eq!(parsed.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2, 3]);
        // An oversized label is dropped, the device stays.
        let long = "x".repeat(MAX_LABEL_LENGTH + 1);
        let list = parse(&format!(
            "<devices xmlns='urn:xmpp:omemo:2'><device id='4' label='{long}' labelsig='AAAA'/></devices>"
        ));
        assert_eq!(parse_device_list(&list, 10), Ok(vec![ListedDevice::new(4)]));
        // So is a signature that cannot be an Ed25519 one (too short or too long).
        for length in [63, 65, 2000] {
            let signature = crate::stanza::xml::encode_base64(&vec![7u8; length]);
            let list = parse(&format!(
                "<devices xmlns='urn:xmpp:omemo:2'><device id='5' label='x' labelsig='{signature}'/></devices>"
            ));
            assert_eq!(parse_device_list(&list, 10), Ok(vec![ListedDevice::new(5)]));
        }
    }

    // ---- bundles ----

    #[test]
    fn bundle_round_trips_and_verifies() {
        let (_, bundle) = generated_bundle(1..101);
        let element = bundle_element(&bundle).unwrap();
        let names: Vec<_> = element.children().map(|c| c.name().to_owned()).collect();
        assert_eq!(names, ["spk", "spks", "ik", "prekeys"]);
        let parsed = parse_bundle(&reparse(&element)).unwrap();
        assert_eq!(parsed, bundle);
        assert_eq!(
            parsed.identity_key.ed25519(),
            bundle.identity_key.ed25519(),
            "the Ed25519 form is kept, not just the Curve25519 one"
        );
        assert_eq!(parsed.verify(), Ok(()));
        assert_eq!(parsed.version, Version::Omemo2);
        assert_eq!(bundle_item_id(7), "7");
    }

    #[test]
    fn bundle_of_the_other_version_is_refused_both_ways() {
        let (_, bundle) = generated_bundle(1..3);
        assert_eq!(
            crate::stanza::legacy::bundle_element(&bundle),
            Err(StanzaError::WrongVersion {
                what: "bundle",
                expected: Version::Legacy,
                found: Version::Omemo2
            })
        );
        let mut legacy = bundle;
        legacy.version = Version::Legacy;
        assert_eq!(
            bundle_element(&legacy),
            Err(StanzaError::WrongVersion {
                what: "bundle",
                expected: Version::Omemo2,
                found: Version::Legacy
            })
        );
    }

    #[test]
    fn bundle_children_may_come_in_any_order_and_bad_prekeys_are_skipped() {
        let (_, bundle) = generated_bundle(1..3);
        let element = bundle_element(&bundle).unwrap();
        let text = |name: &str| element.get_child(name, NAMESPACE).unwrap().text();
        let prekeys = element.get_child("prekeys", NAMESPACE).unwrap();
        let pk: Vec<_> = prekeys.children().map(Element::text).collect();
        let xml = format!(
            "<bundle xmlns='urn:xmpp:omemo:2'><prekeys><pk id='1'>{}</pk><pk id='x'>{}</pk>\
             <pk id='3'>BQ==</pk><pk id='2'>{}</pk></prekeys><ik>{}</ik><spks>{}</spks>\
             <spk id='5'>{}</spk></bundle>",
            pk[0],
            pk[1],
            pk[1],
            text("ik"),
            text("spks"),
            text("spk")
        );
        let parsed = parse_bundle(&parse(&xml)).unwrap();
        assert_eq!(parsed, bundle);
        assert_eq!(parsed.verify(), Ok(()));
    }

    #[test]
    fn bundle_keys_of_the_wrong_form_are_refused() {
        let (_, bundle) = generated_bundle(1..2);
        let element = bundle_element(&bundle).unwrap();
        let with = |name: &str, value: &str| {
            let mut copy = element.clone();
            let child = copy.get_child_mut(name, NAMESPACE).unwrap();
            *child = text_element(name, NAMESPACE, value);
            if name == "spk" {
                set_attr(child, "id", "5");
            }
            parse_bundle(&copy)
        };
        // A legacy 0x05-prefixed identity key (33 bytes) is not an Ed25519 key.
        let legacy_ik = encode_base64(&bundle.identity_key.to_wire(Version::Legacy).unwrap());
        assert!(matches!(
            with("ik", &legacy_ik),
            Err(StanzaError::InvalidKey {
                what: "ik",
                source: KeyError::InvalidLength { actual: 33, .. }
            })
        ));
        // The Ed25519 identity point (low order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            with("ik", &encode_base64(&identity)),
            Err(StanzaError::InvalidKey {
                what: "ik",
                source: KeyError::InvalidPoint
            })
        );
        let legacy_spk = encode_base64(&bundle.signed_pre_key.to_wire(Version::Legacy));
        assert!(matches!(
            with("spk", &legacy_spk),
            Err(StanzaError::InvalidKey {
                what: "spk",
                source: KeyError::InvalidLength { actual: 33, .. }
            })
        ));
        assert_eq!(with("spks", ""), Err(StanzaError::EmptyElement("spks")));
        for missing in ["spk", "spks", "ik", "prekeys"] {
            let mut copy = element.clone();
            copy.remove_child(missing, NAMESPACE);
            assert_eq!(
                parse_bundle(&copy),
                Err(StanzaError::MissingElement(missing)),
                "{missing}"
            );
        }
        let pks = "<pk id='1'>AAAA</pk>".repeat(1001);
        let xml = format!(
            "<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>{}</spk><spks>AAAA</spks><ik>{}</ik><prekeys>{pks}</prekeys></bundle>",
            encode_base64(&bundle.signed_pre_key.to_wire(Version::Omemo2)),
            encode_base64(&bundle.identity_key.to_wire(Version::Omemo2).unwrap()),
        );
        assert_eq!(
            parse_bundle(&parse(&xml)),
            Err(StanzaError::TooMany {
                what: "pk",
                count: 1001,
                cap: 1000
            })
        );
    }
}
