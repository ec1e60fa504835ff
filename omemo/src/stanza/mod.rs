//! The XML layer: the OMEMO elements of each protocol version (one module per version:
//! [`legacy`], [`omemo2`]), SCE envelopes ([`sce`]), message carbons ([`carbons`]), message
//! archives ([`mam`]), group chat rooms ([`muc`]) and the
//! pubsub stanzas that carry them ([`pubsub`], re-exported here), as
//! [`minidom::Element`]s, the same type `tokio-xmpp` 6 and `xmpp-parsers` 0.23 use, so
//! elements pass between them without conversion.
//!
//! Pure functions, no I/O. Parsers are lenient where deployed clients differ (wrapped
//! base64, `prekey='1'`, 16-byte IVs, ids of 0, bundle item ids other than `current`)
//! and cap the sizes they accept, failing with a typed [`StanzaError`].
//!
//! ```
//! use omemo::stanza;
//!
//! // Publish the own legacy device list, then read a contact's.
//! let list = stanza::legacy::device_list_element(&[1001, 2002]);
//! let publish = stanza::publish_iq("pub1", stanza::legacy::DEVICE_LIST_NODE, "current", list, true);
//! assert_eq!(publish.attr("type"), Some("set"));
//!
//! let fetch = stanza::fetch_items_iq("get1", "juliet@capulet.lit/balcony", stanza::legacy::DEVICE_LIST_NODE, None);
//! assert_eq!(fetch.attr("to"), Some("juliet@capulet.lit"));
//!
//! let result: minidom::Element = r#"<iq xmlns='jabber:client' type='result' id='get1'>
//!   <pubsub xmlns='http://jabber.org/protocol/pubsub'>
//!     <items node='eu.siacs.conversations.axolotl.devicelist'>
//!       <item id='current'>
//!         <list xmlns='eu.siacs.conversations.axolotl'><device id='7'/><device id='8'/></list>
//!       </item>
//!     </items>
//!   </pubsub>
//! </iq>"#.parse()?;
//! let payloads = stanza::parse_items_result(&result)?;
//! assert_eq!(stanza::legacy::parse_device_list(&payloads[0], 1000)?, vec![7, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// Parses `omemo/tests/fixtures/<name>` (embedded at compile time) into an `Element`.
#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/", $name))
            .parse::<::minidom::Element>()
            .expect(concat!("fixture ", $name, " is well-formed XML"))
    };
}

mod bundle;
pub mod carbons;
mod encrypted;
pub mod mam;
pub mod muc;
pub(crate) use encrypted::message_with;
pub mod legacy;
pub mod omemo2;
pub mod pubsub;
pub mod sce;
mod xml;

pub use crate::error::StanzaError;
pub use encrypted::EncryptedKey;
/// The element type of every builder and parser here (minidom 0.19), re-exported so
/// callers need not depend on minidom themselves.
pub use minidom::Element;
pub use pubsub::{
    OPEN_ACCESS_OPTIONS, PubsubEvent, configure_node_iq, fetch_item_iq, fetch_items_iq,
    iq_error_condition, parse_event, parse_items_result, publish_iq, publish_iq_with_options,
    retract_iq,
};

/// Helpers shared by the tests of this module's files.
#[cfg(test)]
mod test_support {
    use minidom::Element;

    pub(super) fn parse(xml: &str) -> Element {
        xml.parse().expect("test XML parses")
    }

    /// Serializes and parses again, so builders are checked as bytes on the wire.
    pub(super) fn reparse(element: &Element) -> Element {
        let mut out = Vec::new();
        element.write_to(&mut out).expect("element serializes");
        String::from_utf8(out)
            .expect("UTF-8")
            .parse()
            .expect("serialized element parses")
    }
}
