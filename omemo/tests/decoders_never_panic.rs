//! Every decoder takes arbitrary input without panicking: wire messages, session state,
//! and the XML parsers (fuzz-style property tests, run by `cargo test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use minidom::Element;
use omemo::Version;
use omemo::hazmat::{
    AuthenticatedMessage, IdentityKey, KeyExchange, PublicKey, RatchetMessage, Session,
};
use omemo::stanza::{self, legacy::EncryptedMessage, omemo2};
use proptest::prelude::*;

/// Real wire messages of both versions (a key exchange, and a message after a DH step),
/// to mutate: random bytes rarely get past the first field.
fn real_messages() -> &'static [(Version, Vec<u8>)] {
    static MESSAGES: OnceLock<Vec<(Version, Vec<u8>)>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        let mut out = Vec::new();
        for version in Version::ALL {
            let (_, kex, mut to_alice) = common::sessions::first_contact(version);
            out.push((version, kex.as_bytes().to_vec()));
            out.push((
                version,
                to_alice.encrypt(b"reply").unwrap().as_bytes().to_vec(),
            ));
            out.push((version, to_alice.to_bytes().to_vec()));
        }
        out
    })
}

/// Bytes that often look like the real thing: a version byte and protobuf-ish fields, or
/// a real message of either version with bytes flipped, cut off or inserted.
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
        (
            any::<prop::sample::Index>(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        )
            .prop_map(|(which, edits)| {
                let messages = real_messages();
                let mut v = messages[which.index(messages.len())].1.clone();
                for (at, byte, kind) in edits {
                    let i = at.index(v.len().max(1));
                    match kind {
                        0 if !v.is_empty() => v[i] ^= byte.max(1),
                        1 => v.truncate(i),
                        _ => v.insert(i.min(v.len()), byte),
                    }
                }
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn wire_decoders_never_panic(bytes in wire_like()) {
        for version in Version::ALL {
            let _ = AuthenticatedMessage::from_bytes(version, &bytes);
            let _ = KeyExchange::from_bytes(version, &bytes);
            let _ = RatchetMessage::from_bytes(version, &bytes, true);
            let _ = RatchetMessage::from_bytes(version, &bytes, false);
            let _ = IdentityKey::from_wire(version, &bytes);
            let _ = PublicKey::from_wire(version, &bytes);
        }
        let _ = Session::from_bytes(&bytes);
        let _ = stanza::sce::open(&bytes);
    }

    #[test]
    fn envelope_parser_never_panics(
        from in "[a-z@. /]{0,20}", to in "[a-z@.]{0,20}", inner in "[<>a-z/ ='\"]{0,40}",
    ) {
        let xml = format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content>{inner}</content><from jid='{from}'/><to jid='{to}'/></envelope>"
        );
        if let Ok(envelope) = stanza::sce::open(xml.as_bytes()) {
            let _ = envelope.check("romeo@montague.lit", "juliet@capulet.lit");
            let _ = envelope.body();
            let _ = envelope.opt_out();
        }
    }

    /// Mutated messages decode to the same bytes they came from, or fail cleanly.
    #[test]
    fn decoded_messages_keep_their_bytes(bytes in wire_like()) {
        for version in Version::ALL {
            if let Ok(message) = RatchetMessage::from_bytes(version, &bytes, true) {
                prop_assert_eq!(message.version(), version);
                prop_assert!(message.is_key_exchange());
            }
            if let Ok(message) = AuthenticatedMessage::from_bytes(version, &bytes) {
                prop_assert_eq!(message.version(), version);
            }
        }
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
            payload.as_ref().map(|p| format!("<payload>{p}</payload>")).unwrap_or_default()
        );
        let element: Element = xml.parse().unwrap();
        if let Ok(message) = EncryptedMessage::from_element(&element) {
            for key in &message.keys {
                let _ = RatchetMessage::from_bytes(Version::Legacy, &key.data, key.key_exchange);
            }
        }
        let list: Element = format!("<list xmlns='eu.siacs.conversations.axolotl'><device id='{id}'/><device id='{rid}'/></list>").parse().unwrap();
        let _ = stanza::legacy::parse_device_list(&list, 10);
        let bundle: Element = format!(
            "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='{id}'>{key}</signedPreKeyPublic>\
             <signedPreKeySignature>{iv}</signedPreKeySignature><identityKey>{key}</identityKey>\
             <prekeys><preKeyPublic preKeyId='{rid}'>{key}</preKeyPublic></prekeys></bundle>"
        ).parse().unwrap();
        if let Ok(bundle) = stanza::legacy::parse_bundle(&bundle) {
            let _ = bundle.verify();
        }
        let xml = format!(
            "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='{sid}'><keys jid='{id}'>\
             <key rid='{rid}' kex='{prekey}'>{key}</key></keys></header>{}</encrypted>",
            payload.as_ref().map(|p| format!("<payload>{p}</payload>")).unwrap_or_default()
        );
        let element: Element = xml.parse().unwrap();
        if let Ok(message) = omemo2::EncryptedMessage::from_element(&element) {
            for key in message.recipients.iter().flat_map(|r| &r.keys) {
                let _ = RatchetMessage::from_bytes(Version::Omemo2, &key.data, key.key_exchange);
            }
        }
        let list: Element = format!(
            "<devices xmlns='urn:xmpp:omemo:2'><device id='{id}' label='{sid}' labelsig='{iv}'/><device id='{rid}'/></devices>"
        ).parse().unwrap();
        if let Ok(devices) = omemo2::parse_device_list(&list, 10) {
            let identity = omemo::hazmat::IdentityKeyPair::generate(&mut omemo::os_rng()).identity_key();
            for device in devices {
                let _ = device.verified_label(&identity);
            }
        }
        let bundle: Element = format!(
            "<bundle xmlns='urn:xmpp:omemo:2'><spk id='{id}'>{key}</spk><spks>{iv}</spks><ik>{key}</ik>\
             <prekeys><pk id='{rid}'>{key}</pk></prekeys></bundle>"
        ).parse().unwrap();
        if let Ok(bundle) = omemo2::parse_bundle(&bundle) {
            let _ = bundle.verify();
        }
        let iq: Element = format!("<iq xmlns='jabber:client' type='{prekey}' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{rid}'><item>{}</item></items></pubsub></iq>", "<x xmlns='y'/>").parse().unwrap();
        let _ = stanza::parse_items_result(&iq);
        let _ = stanza::iq_error_condition(&iq);
    }
}
