//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`): the query that pages through
//! an archive from a point in time, the result messages that carry the archived
//! messages, and the `<fin>` that ends each page (with XEP-0059 result set paging).
//!
//! Who may send a result (the archive's own JID) is the caller's check: these functions
//! only read the shapes.

use minidom::Element;

use super::xml::{NS_CLIENT, element, element_with, iq, text_element};

/// The namespace of MAM 2.
pub const NAMESPACE: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0359 unique and stable stanza ids.
const NS_STANZA_ID: &str = "urn:xmpp:sid:0";

/// Messages one page asks for (Prosody's default cap is 50).
pub const PAGE_SIZE: u32 = 50;

/// The query of one page: archived messages from `start` (seconds since the Unix epoch;
/// the whole archive when `None`), after the archive id `after` (the last of the page
/// before), at most [`PAGE_SIZE`]. `archive` is the archive's JID (`None`: the own
/// account's); the results carry `query_id`.
pub fn query_iq(
    id: &str,
    archive: Option<&str>,
    query_id: &str,
    start: Option<u64>,
    after: Option<&str>,
) -> Element {
    let mut form = element_with("x", NS_DATA, &[("type", "submit")]);
    let mut form_type = element_with(
        "field",
        NS_DATA,
        &[("var", "FORM_TYPE"), ("type", "hidden")],
    );
    form_type.append_child(text_element("value", NS_DATA, NAMESPACE));
    form.append_child(form_type);
    if let Some(stamp) = start.and_then(timestamp) {
        let mut field = element_with("field", NS_DATA, &[("var", "start")]);
        field.append_child(text_element("value", NS_DATA, stamp));
        form.append_child(field);
    }
    let mut set = element("set", NS_RSM);
    set.append_child(text_element("max", NS_RSM, PAGE_SIZE.to_string()));
    if let Some(after) = after {
        set.append_child(text_element("after", NS_RSM, after));
    }
    let mut query = element_with("query", NAMESPACE, &[("queryid", query_id)]);
    query.append_child(form);
    query.append_child(set);
    iq("set", id, archive, query)
}

/// The id the archive of `by` (a bare JID) gave `message` (XEP-0359 `<stanza-id>`), also
/// inside a carbon copy. Servers remove such elements a sender put in, so the id is the
/// archive's.
pub fn stanza_id<'a>(message: &'a Element, by: &str) -> Option<&'a str> {
    let own = |m: &'a Element| {
        m.children()
            .filter(|c| c.is("stanza-id", NS_STANZA_ID))
            .find(|c| c.attr("by") == Some(by))
            .and_then(|c| c.attr("id"))
            .filter(|id| !id.is_empty())
    };
    own(message).or_else(|| {
        message
            .children()
            .filter(|c| c.ns() == "urn:xmpp:carbons:2")
            .filter_map(|c| c.get_child("forwarded", NS_FORWARD))
            .filter_map(|f| f.get_child("message", NS_CLIENT))
            .find_map(own)
    })
}

/// XEP-0082 date and time, UTC: `2026-12-01T17:00:00Z`.
fn timestamp(secs: u64) -> Option<String> {
    let secs = i64::try_from(secs).ok()?;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// An archived message, unwrapped from its result message.
#[derive(Clone, Debug, PartialEq)]
pub struct Archived {
    /// The `queryid` of the query it answers (empty when the server left it out).
    pub query_id: String,
    /// Its id in the archive.
    pub archive_id: String,
    /// The archived message as it was sent.
    pub message: Element,
}

/// What a message stanza is to MAM.
#[derive(Clone, Debug, PartialEq)]
pub enum ArchiveResult {
    /// Not a MAM result.
    None,
    /// A result with its archived message.
    Result(Archived),
    /// A `<result>` without a forwarded message or an id.
    Invalid(&'static str),
}

/// Reads a MAM result message (`<message><result queryid id><forwarded>…`).
pub fn unwrap(message: &Element) -> ArchiveResult {
    let Some(result) = message.get_child("result", NAMESPACE) else {
        return ArchiveResult::None;
    };
    let Some(archive_id) = result.attr("id").filter(|id| !id.is_empty()) else {
        return ArchiveResult::Invalid("archive result without an id");
    };
    let Some(inner) = result
        .get_child("forwarded", NS_FORWARD)
        .and_then(|f| f.get_child("message", NS_CLIENT))
    else {
        return ArchiveResult::Invalid("archive result without a forwarded message");
    };
    ArchiveResult::Result(Archived {
        query_id: result.attr("queryid").unwrap_or_default().to_owned(),
        archive_id: archive_id.to_owned(),
        message: inner.clone(),
    })
}

/// The end of one page: whether the archive has no more, and the id of the page's last
/// message (where the next page starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fin {
    /// `complete='true'`: nothing after this page.
    pub complete: bool,
    /// The archive id of the last message of the page, if it had any.
    pub last: Option<String>,
}

/// The `<fin>` of a query's IQ result, if it has one.
pub fn parse_fin(iq: &Element) -> Option<Fin> {
    let fin = iq.get_child("fin", NAMESPACE)?;
    Some(Fin {
        complete: matches!(fin.attr("complete"), Some("true" | "1")),
        last: fin
            .get_child("set", NS_RSM)
            .and_then(|set| set.get_child("last", NS_RSM))
            .map(Element::text)
            .filter(|last| !last.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_asks_for_one_page_from_a_time_after_an_id() {
        let query = query_iq("q1", None, "catch-up-1", Some(1_764_608_400), Some("A7"));
        assert_eq!(query.attr("type"), Some("set"));
        assert_eq!(query.attr("to"), None);
        let inner = query.get_child("query", NAMESPACE).unwrap();
        assert_eq!(inner.attr("queryid"), Some("catch-up-1"));
        let form = inner.get_child("x", NS_DATA).unwrap();
        let fields: Vec<(String, String)> = form
            .children()
            .map(|f| {
                let value = f.get_child("value", NS_DATA).map(Element::text);
                (f.attr("var").unwrap().to_owned(), value.unwrap())
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("FORM_TYPE".to_owned(), NAMESPACE.to_owned()),
                ("start".to_owned(), "2025-12-01T17:00:00Z".to_owned())
            ]
        );
        let set = inner.get_child("set", NS_RSM).unwrap();
        assert_eq!(set.get_child("max", NS_RSM).unwrap().text(), "50");
        assert_eq!(set.get_child("after", NS_RSM).unwrap().text(), "A7");

        let room = query_iq("q2", Some("room@muc.example"), "c2", None, None);
        assert_eq!(room.attr("to"), Some("room@muc.example"));
        let inner = room.get_child("query", NAMESPACE).unwrap();
        assert_eq!(inner.get_child("x", NS_DATA).unwrap().children().count(), 1);
        assert!(
            inner
                .get_child("set", NS_RSM)
                .unwrap()
                .get_child("after", NS_RSM)
                .is_none()
        );
    }

    #[test]
    fn results_unwrap_to_the_archived_message_and_broken_ones_are_invalid() {
        let result: Element = "<message xmlns='jabber:client' to='bot@example.org/a'>\
            <result xmlns='urn:xmpp:mam:2' queryid='c1' id='28482-98726-73623'>\
              <forwarded xmlns='urn:xmpp:forward:0'>\
                <delay xmlns='urn:xmpp:delay' stamp='2026-12-01T16:00:00Z'/>\
                <message xmlns='jabber:client' from='alice@example.org/phone' \
                  to='bot@example.org' type='chat' id='m1'><body>hi</body></message>\
              </forwarded></result></message>"
            .parse()
            .unwrap();
        let ArchiveResult::Result(archived) = unwrap(&result) else {
            panic!("not unwrapped")
        };
        assert_eq!(archived.query_id, "c1");
        assert_eq!(archived.archive_id, "28482-98726-73623");
        assert_eq!(archived.message.attr("id"), Some("m1"));

        let plain: Element = "<message xmlns='jabber:client'><body>hi</body></message>"
            .parse()
            .unwrap();
        assert_eq!(unwrap(&plain), ArchiveResult::None);
        for broken in [
            "<result xmlns='urn:xmpp:mam:2' queryid='c1' id='x'/>",
            "<result xmlns='urn:xmpp:mam:2' queryid='c1'><forwarded xmlns='urn:xmpp:forward:0'>\
               <message xmlns='jabber:client'/></forwarded></result>",
        ] {
            let message: Element = format!("<message xmlns='jabber:client'>{broken}</message>")
                .parse()
                .unwrap();
            assert!(
                matches!(unwrap(&message), ArchiveResult::Invalid(_)),
                "{broken}"
            );
        }
    }

    #[test]
    fn the_archive_id_is_the_stanza_id_the_own_archive_gave() {
        let message: Element = "<message xmlns='jabber:client' from='alice@example.org/phone'>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example' id='R1'/>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='bot@example.org' id='B7'/></message>"
            .parse()
            .unwrap();
        assert_eq!(stanza_id(&message, "bot@example.org"), Some("B7"));
        assert_eq!(stanza_id(&message, "room@muc.example"), Some("R1"));
        assert_eq!(stanza_id(&message, "other@example.org"), None);
        let carbon: Element = "<message xmlns='jabber:client' from='bot@example.org'>\
            <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
            <message xmlns='jabber:client' from='alice@example.org/phone'>\
            <stanza-id xmlns='urn:xmpp:sid:0' by='bot@example.org' id='B8'/></message>\
            </forwarded></received></message>"
            .parse()
            .unwrap();
        assert_eq!(stanza_id(&carbon, "bot@example.org"), Some("B8"));
    }

    #[test]
    fn fin_says_whether_the_archive_is_complete_and_where_the_page_ended() {
        let fin = |xml: &str| -> Option<Fin> {
            parse_fin(
                &format!("<iq xmlns='jabber:client' type='result' id='q1'>{xml}</iq>")
                    .parse()
                    .unwrap(),
            )
        };
        assert_eq!(
            fin(
                "<fin xmlns='urn:xmpp:mam:2' complete='true'><set xmlns='http://jabber.org/protocol/rsm'>\
                 <first index='0'>A1</first><last>A9</last></set></fin>"
            ),
            Some(Fin {
                complete: true,
                last: Some("A9".to_owned())
            })
        );
        assert_eq!(
            fin(
                "<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><last>B4</last></set></fin>"
            ),
            Some(Fin {
                complete: false,
                last: Some("B4".to_owned())
            })
        );
        assert_eq!(
            fin("<fin xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'/></fin>"),
            Some(Fin {
                complete: false,
                last: None
            })
        );
        assert_eq!(fin(""), None);
    }
}
