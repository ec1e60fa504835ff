//! Stanza Content Encryption (XEP-0420) envelopes, as OMEMO 2 encrypts them (XEP-0384
//! §SCE profile): what the payload of an OMEMO 2 message decrypts to.
//!
//! ```text
//! <envelope xmlns='urn:xmpp:sce:1'>
//!   <content>
//!     <body xmlns='jabber:client'>text</body>
//!     … other elements the application encrypts …
//!   </content>
//!   <rpad>random padding</rpad>
//!   <time stamp='2026-11-30T12:00:00Z'/>
//!   <from jid='romeo@montague.lit'/>
//!   <to jid='juliet@capulet.lit'/>
//! </envelope>
//! ```
//!
//! [`seal`] builds an envelope; [`open`] parses one, takes out what must stay outside of
//! it, and [`Envelope::check`] reports every affix that does not fit the stanza it came
//! in as an [`AffixViolation`], for the application to act on.
//!
//! ```
//! use omemo::stanza::{Element, sce};
//!
//! let body: Element = "<body xmlns='jabber:client'>Hi Juliet</body>".parse()?;
//! let bytes = sce::seal(vec![body], "romeo@montague.lit", "juliet@capulet.lit", None, &mut omemo::os_rng());
//! let envelope = sce::open(&bytes)?;
//! assert_eq!(envelope.body(), Some("Hi Juliet".to_owned()));
//! assert!(envelope.check("romeo@montague.lit", "juliet@capulet.lit").is_empty());
//! assert_eq!(
//!     envelope.check("tybalt@capulet.lit", "juliet@capulet.lit"),
//!     [sce::AffixViolation::FromMismatch { claimed: "romeo@montague.lit".into() }]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use minidom::Element;
use rand_core::CryptoRng;

use super::xml::{
    NS_CLIENT, NS_EME, NS_HINTS, element, element_with, encode_base64, expect_element,
    required_child, same_bare_jid, shorten, text_element,
};
use crate::consts::OMEMO2_NAMESPACE;
use crate::error::StanzaError;

/// The SCE namespace.
pub const NAMESPACE: &str = "urn:xmpp:sce:1";

/// XEP-0359 unique and stable stanza ids.
const NS_STANZA_ID: &str = "urn:xmpp:sid:0";
/// XEP-0033 extended stanza addressing.
const NS_ADDRESS: &str = "http://jabber.org/protocol/address";

/// Most random bytes in `<rpad>` (its base64 text is up to 4/3 of that): SCE asks for
/// 0–200 characters of random length.
const MAX_PAD_BYTES: usize = 150;

/// Largest envelope [`open`] parses, in bytes: a payload is at most 1 MiB of base64.
const MAX_ENVELOPE_BYTES: usize = 800 * 1024;

/// Namespaces of elements that must stay outside the envelope (XEP-0420 §Server-processed
/// elements): hints, stanza ids, addressing and EME.
const OUTSIDE_ONLY: [&str; 4] = [NS_HINTS, NS_STANZA_ID, NS_ADDRESS, NS_EME];

/// A received envelope, with the elements that must not be inside taken out. Its `Debug`
/// output names the content elements but never shows their text (the message body).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The children of `<content>`, in document order, without the forbidden ones.
    pub content: Vec<Element>,
    /// The `jid` of `<from>`, if present.
    pub from: Option<String>,
    /// The `jid` of `<to>`, if present.
    pub to: Option<String>,
    /// The `stamp` of `<time>` (XEP-0082), if present, unchecked.
    pub time: Option<String>,
    /// Elements of `<content>` that must stay outside an envelope and were dropped, as
    /// `(name, namespace)`.
    pub dropped: Vec<(String, String)>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content: Vec<&str> = self.content.iter().map(Element::name).collect();
        f.debug_struct("Envelope")
            .field("content", &content)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("time", &self.time)
            .field("dropped", &self.dropped)
            .finish()
    }
}

/// An affix of an envelope that does not fit the stanza it came in. Each one is a reason
/// the application may refuse or flag the message; which ones it accepts is its choice.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AffixViolation {
    /// There is no `<from>` (SCE: SHOULD be present).
    MissingFrom,
    /// `<from>` names someone other than the sender of the stanza.
    FromMismatch {
        /// The JID the envelope claims.
        claimed: String,
    },
    /// There is no `<to>` (SCE: MUST be present in group chats).
    MissingTo,
    /// `<to>` names someone other than the recipient (or, in a group chat, the room).
    ToMismatch {
        /// The JID the envelope claims.
        claimed: String,
    },
    /// `<content>` held an element that must stay outside the envelope (a hint, stanza
    /// id, address or EME element); it was dropped.
    ForbiddenContent {
        /// The element's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
}

impl Envelope {
    /// Checks the affixes against the stanza: `sender` is the bare JID the stanza came
    /// from, `recipient` the bare JID it was for (this account, or the room in a group
    /// chat). Returns every violation, in the order of this enum; none for a good
    /// envelope.
    pub fn check(&self, sender: &str, recipient: &str) -> Vec<AffixViolation> {
        let mut violations = Vec::new();
        match &self.from {
            None => violations.push(AffixViolation::MissingFrom),
            Some(claimed) if !same_bare_jid(claimed, sender) => {
                violations.push(AffixViolation::FromMismatch {
                    claimed: claimed.clone(),
                });
            }
            Some(_) => {}
        }
        match &self.to {
            None => violations.push(AffixViolation::MissingTo),
            Some(claimed) if !same_bare_jid(claimed, recipient) => {
                violations.push(AffixViolation::ToMismatch {
                    claimed: claimed.clone(),
                });
            }
            Some(_) => {}
        }
        violations.extend(self.dropped.iter().map(|(name, namespace)| {
            AffixViolation::ForbiddenContent {
                name: name.clone(),
                namespace: namespace.clone(),
            }
        }));
        violations
    }

    /// The text of the `<body xmlns='jabber:client'>` in the content, if any.
    pub fn body(&self) -> Option<String> {
        self.content
            .iter()
            .find(|e| e.is("body", NS_CLIENT))
            .map(Element::text)
    }

    /// The reason of an OMEMO 2 `<opt-out>` in the content: the sender asks to stop
    /// encrypting. `Some("")` for an opt-out without a reason.
    pub fn opt_out(&self) -> Option<String> {
        let opt_out = self
            .content
            .iter()
            .find(|e| e.is("opt-out", OMEMO2_NAMESPACE))?;
        Some(
            opt_out
                .get_child("reason", OMEMO2_NAMESPACE)
                .map(Element::text)
                .unwrap_or_default(),
        )
    }
}

/// The serialized envelope of `content` from `from` to `to` (bare JIDs; `to` is the room
/// in a group chat), with `<time stamp>` when `now` (Unix seconds) is given and a
/// `<rpad>` of random length.
/// Elements that must stay outside an envelope (hints, stanza ids, addresses, EME) are
/// left out of `content`; put them on the stanza.
pub fn seal(
    content: Vec<Element>,
    from: &str,
    to: &str,
    now: Option<u64>,
    rng: &mut impl CryptoRng,
) -> Vec<u8> {
    let mut wrapped = element("content", NAMESPACE);
    for child in content
        .into_iter()
        .filter(|c| !OUTSIDE_ONLY.contains(&c.ns().as_str()))
    {
        wrapped.append_child(child);
    }
    let mut envelope = element("envelope", NAMESPACE);
    envelope.append_child(wrapped);
    let mut length = [0u8; 1];
    rng.fill_bytes(&mut length);
    // 0..=MAX_PAD_BYTES from one random byte.
    let mut pad = vec![0u8; usize::from(length[0]) * (MAX_PAD_BYTES + 1) / 256];
    rng.fill_bytes(&mut pad);
    envelope.append_child(text_element("rpad", NAMESPACE, encode_base64(&pad)));
    if let Some(stamp) = now.and_then(date_time) {
        envelope.append_child(element_with("time", NAMESPACE, &[("stamp", &stamp)]));
    }
    envelope.append_child(element_with("from", NAMESPACE, &[("jid", from)]));
    envelope.append_child(element_with("to", NAMESPACE, &[("jid", to)]));
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = envelope.write_to(&mut out);
    out
}

/// The XEP-0082 DateTime of `unix_seconds` in UTC (`2026-11-30T12:00:00Z`); `None`
/// beyond what it can name.
fn date_time(unix_seconds: u64) -> Option<String> {
    let seconds = i64::try_from(unix_seconds).ok()?;
    let time = chrono::DateTime::from_timestamp(seconds, 0)?;
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Parses a decrypted envelope. Fails when the bytes are not UTF-8 XML, the root is not
/// an SCE `<envelope>`, or `<content>` is missing; drops (and lists in
/// [`Envelope::dropped`]) content elements that must stay outside. Affixes other than
/// `from`, `to` and `time` (`<rpad>`, unknown ones) are ignored.
pub fn open(bytes: &[u8]) -> Result<Envelope, StanzaError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(StanzaError::TooLarge {
            what: "envelope",
            size: bytes.len(),
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| StanzaError::InvalidXml {
        what: "envelope",
        reason: "not UTF-8".into(),
    })?;
    let envelope: Element = text
        .parse()
        .map_err(|e: minidom::Error| StanzaError::InvalidXml {
            what: "envelope",
            reason: shorten(&e.to_string()),
        })?;
    expect_element(&envelope, "envelope", NAMESPACE)?;
    let mut content = Vec::new();
    let mut dropped = Vec::new();
    for child in required_child(&envelope, "content", NAMESPACE)?.children() {
        let namespace = child.ns();
        if OUTSIDE_ONLY.contains(&namespace.as_str()) {
            dropped.push((child.name().to_owned(), namespace));
        } else {
            content.push(child.clone());
        }
    }
    let affix = |name: &str, attr: &str| {
        envelope
            .get_child(name, NAMESPACE)
            .and_then(|e| e.attr(attr))
            .map(str::to_owned)
    };
    Ok(Envelope {
        content,
        from: affix("from", "jid"),
        to: affix("to", "jid"),
        time: affix("time", "stamp"),
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::test_support::parse;
    use crate::testing::QueueRng;

    const ROMEO: &str = "romeo@montague.lit";
    const JULIET: &str = "juliet@capulet.lit";

    fn body(text: &str) -> Element {
        text_element("body", NS_CLIENT, text)
    }

    fn sealed(content: Vec<Element>) -> Envelope {
        open(&seal(
            content,
            ROMEO,
            JULIET,
            Some(1_796_040_000),
            &mut crate::os_rng(),
        ))
        .unwrap()
    }

    #[test]
    fn sealed_envelopes_open_with_their_content_and_affixes() {
        let receipt = element_with("request", "urn:xmpp:receipts", &[]);
        let envelope = sealed(vec![body("Hi Juliet"), receipt.clone()]);
        assert_eq!(envelope.body(), Some("Hi Juliet".into()));
        assert_eq!(envelope.content.len(), 2);
        assert_eq!(envelope.content[1], receipt);
        assert_eq!(envelope.from.as_deref(), Some(ROMEO));
        assert_eq!(envelope.to.as_deref(), Some(JULIET));
        assert_eq!(envelope.time.as_deref(), Some("2026-11-30T12:00:00Z"));
        assert!(envelope.dropped.is_empty());
        assert_eq!(envelope.check(ROMEO, JULIET), []);
        assert_eq!(envelope.opt_out(), None);
        // A time beyond what XEP-0082 can name is left out, not made up.
        let far = seal(
            vec![body("x")],
            ROMEO,
            JULIET,
            Some(u64::MAX),
            &mut crate::os_rng(),
        );
        assert_eq!(open(&far).unwrap().time, None);
    }

    #[test]
    fn the_body_keeps_its_namespace_and_the_pad_its_bounds() {
        let bytes = seal(
            vec![body("x")],
            ROMEO,
            JULIET,
            None,
            &mut QueueRng::new([vec![255], vec![7; 150]]),
        );
        let text = String::from_utf8(bytes).unwrap();
        let envelope = parse(&text);
        let content = envelope.get_child("content", NAMESPACE).unwrap();
        assert_eq!(content.get_child("body", NS_CLIENT).unwrap().text(), "x");
        let pad = envelope.get_child("rpad", NAMESPACE).unwrap().text();
        assert_eq!(pad.len(), 200);
        assert!(envelope.get_child("time", NAMESPACE).is_none());
    }

    #[test]
    fn the_padding_length_is_random() {
        let mut rng = crate::os_rng();
        let lengths: std::collections::HashSet<usize> = (0..20)
            .map(|_| {
                let bytes = seal(vec![body("x")], ROMEO, JULIET, None, &mut rng);
                let envelope = parse(std::str::from_utf8(&bytes).unwrap());
                envelope.get_child("rpad", NAMESPACE).unwrap().text().len()
            })
            .collect();
        assert!(lengths.len() > 1, "{lengths:?}");
        assert!(lengths.iter().all(|&l| l <= 200));
    }

    #[test]
    fn twomemo_vector_envelopes_open() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/omemo2.json")).unwrap();
        for payload in vectors["payloads"].as_array().unwrap() {
            let text = payload["plaintext"].as_str().unwrap();
            let envelope = open(text.as_bytes()).unwrap();
            let from = envelope.from.clone().unwrap();
            let to = envelope.to.clone().unwrap();
            assert_eq!(envelope.check(&from, &to), []);
            assert!(envelope.body().unwrap().len() > 10);
            assert_eq!(envelope.time.as_deref(), Some("2026-01-15T12:00:00Z"));
        }
    }

    #[test]
    fn every_affix_violation_is_reported() {
        let envelope = sealed(vec![body("Hi")]);
        assert_eq!(
            envelope.check("tybalt@capulet.lit", "nurse@capulet.lit"),
            [
                AffixViolation::FromMismatch {
                    claimed: ROMEO.into()
                },
                AffixViolation::ToMismatch {
                    claimed: JULIET.into()
                }
            ]
        );
        // Case of the domain and local part does not matter; a resource does.
        assert_eq!(envelope.check("Romeo@Montague.LIT", JULIET), []);
        assert_eq!(
            envelope.check(ROMEO, "juliet@capulet.lit/balcony"),
            [AffixViolation::ToMismatch {
                claimed: JULIET.into()
            }]
        );
        let bare = open(
            b"<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>x</body></content></envelope>",
        )
        .unwrap();
        assert_eq!(
            bare.check(ROMEO, JULIET),
            [AffixViolation::MissingFrom, AffixViolation::MissingTo]
        );
        let garbage = open(
            b"<envelope xmlns='urn:xmpp:sce:1'><content/><from jid='not a jid@@'/><to jid=''/></envelope>",
        )
        .unwrap();
        assert_eq!(
            garbage.check(ROMEO, JULIET),
            [
                AffixViolation::FromMismatch {
                    claimed: "not a jid@@".into()
                },
                AffixViolation::ToMismatch { claimed: "".into() }
            ]
        );
    }

    #[test]
    fn elements_that_belong_outside_are_dropped_and_reported() {
        let outside = [
            element("store", NS_HINTS),
            element_with("origin-id", NS_STANZA_ID, &[("id", "x")]),
            element("addresses", NS_ADDRESS),
            element_with("encryption", NS_EME, &[("namespace", OMEMO2_NAMESPACE)]),
        ];
        // The sender leaves them out.
        let mut content = vec![body("Hi")];
        content.extend(outside.iter().cloned());
        let envelope = sealed(content);
        assert_eq!(envelope.content, [body("Hi")]);
        assert!(envelope.dropped.is_empty());
        // A receiver drops them and says so.
        let children: String = outside.iter().map(String::from).collect();
        let xml = format!(
            "<envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>Hi</body>{children}</content>\
             <from jid='{ROMEO}'/><to jid='{JULIET}'/></envelope>"
        );
        let envelope = open(xml.as_bytes()).unwrap();
        assert_eq!(envelope.body(), Some("Hi".into()));
        assert_eq!(envelope.content.len(), 1);
        let violations = envelope.check(ROMEO, JULIET);
        assert_eq!(violations.len(), 4);
        assert_eq!(
            violations[0],
            AffixViolation::ForbiddenContent {
                name: "store".into(),
                namespace: NS_HINTS.into()
            }
        );
    }

    #[test]
    fn debug_output_never_shows_the_body() {
        let envelope = sealed(vec![body("the secret plan")]);
        let shown = format!("{envelope:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("[\"body\"]"), "{shown}");
    }

    #[test]
    fn an_opt_out_reaches_the_application() {
        let mut opt_out = element("opt-out", OMEMO2_NAMESPACE);
        opt_out.append_child(text_element("reason", OMEMO2_NAMESPACE, "no OMEMO here"));
        assert_eq!(
            sealed(vec![opt_out]).opt_out(),
            Some("no OMEMO here".into())
        );
        let bare = element("opt-out", OMEMO2_NAMESPACE);
        let envelope = sealed(vec![bare]);
        assert_eq!(envelope.opt_out(), Some(String::new()));
        assert_eq!(envelope.body(), None);
    }

    #[test]
    fn what_is_not_an_envelope_is_a_typed_error() {
        assert!(matches!(
            open(b"\xff\xfe"),
            Err(StanzaError::InvalidXml {
                what: "envelope",
                ..
            })
        ));
        assert!(matches!(
            open(b"<envelope xmlns='urn:xmpp:sce:1'><content>"),
            Err(StanzaError::InvalidXml {
                what: "envelope",
                ..
            })
        ));
        assert!(matches!(
            open(b"<envelope xmlns='urn:xmpp:sce:0'><content/></envelope>"),
            Err(StanzaError::UnexpectedElement { .. })
        ));
        assert_eq!(
            open(b"<envelope xmlns='urn:xmpp:sce:1'><rpad/></envelope>"),
            Err(StanzaError::MissingElement("content"))
        );
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            open(&big),
            Err(StanzaError::TooLarge {
                what: "envelope",
                ..
            })
        ));
    }
}
