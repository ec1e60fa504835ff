//! Every decoder takes arbitrary input without panicking: wire messages, session state,
//! and the XML parsers (fuzz-style property tests, run by `cargo test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use minidom::Element;
use omemo::stanza::{self, EncryptedMessage};
use omemo::{PreKeySignalMessage, RatchetMessage, Session, SignalMessage};
use proptest::prelude::*;

/// Bytes that often look like the real thing: a version byte and protobuf-ish fields.
fn wire_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
            v.insert(0, 0x33);
            v
        }),
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(tag, body)| {
            let mut v = vec![0x33, tag, body.len() as u8];
            v.extend(body);
            v.extend([0u8; 8]);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn wire_decoders_never_panic(bytes in wire_like()) {
        let _ = SignalMessage::try_from(bytes.as_slice());
        let _ = PreKeySignalMessage::try_from(bytes.as_slice());
        let _ = RatchetMessage::from_bytes(&bytes, true);
        let _ = Session::from_bytes(&bytes);
    }

    #[test]
    fn xml_decoders_never_panic(
        sid in "[0-9a-z ]{0,12}",
        rid in "[0-9a-z-]{0,12}",
        prekey in "(true|1|false|TRUE|yes|)",
        key in "[A-Za-z0-9+/= \n]{0,80}",
        iv in "[A-Za-z0-9+/= ]{0,30}",
        payload in prop::option::of("[A-Za-z0-9+/=]{0,60}"),
        id in "[0-9a-z]{0,12}",
    ) {
        let xml = format!(
            "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='{sid}'>\
             <key rid='{rid}' prekey='{prekey}'>{key}</key><iv>{iv}</iv></header>{}</encrypted>",
            payload.map(|p| format!("<payload>{p}</payload>")).unwrap_or_default()
        );
        let element: Element = xml.parse().unwrap();
        if let Ok(message) = EncryptedMessage::from_element(&element) {
            for key in &message.keys {
                let _ = RatchetMessage::from_bytes(&key.data, key.pre_key);
            }
        }
        let list: Element = format!("<list xmlns='eu.siacs.conversations.axolotl'><device id='{id}'/><device id='{rid}'/></list>").parse().unwrap();
        let _ = stanza::parse_device_list(&list, 10);
        let bundle: Element = format!(
            "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='{id}'>{key}</signedPreKeyPublic>\
             <signedPreKeySignature>{iv}</signedPreKeySignature><identityKey>{key}</identityKey>\
             <prekeys><preKeyPublic preKeyId='{rid}'>{key}</preKeyPublic></prekeys></bundle>"
        ).parse().unwrap();
        if let Ok(bundle) = stanza::parse_bundle(&bundle) {
            let _ = bundle.verify();
        }
        let iq: Element = format!("<iq xmlns='jabber:client' type='{prekey}' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{rid}'><item>{}</item></items></pubsub></iq>", "<x xmlns='y'/>").parse().unwrap();
        let _ = stanza::parse_items_result(&iq);
        let _ = stanza::iq_error_condition(&iq);
    }
}
