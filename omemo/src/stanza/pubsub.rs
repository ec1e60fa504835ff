//! The XEP-0060 pubsub and XEP-0223 PEP stanzas OMEMO needs: publish with publish
//! options, node configuration, item fetches, results, event notifications and errors.
//!
//! Every IQ is in the `jabber:client` namespace; `id` is the IQ id the caller tracks.
//!
//! # Publish options
//!
//! [`publish_iq`] with `with_open_access_options` asks for `pubsub#access_model=open`,
//! which contacts without a presence subscription (MUC members, first contacts) need to
//! read the device list and bundles, and `pubsub#persist_items=true`, the PEP default, so
//! the precondition holds on nodes other clients created. It does **not** send
//! `pubsub#max_items`: every OMEMO item is published with id `current`, so the node keeps
//! one item of ours anyway, and a `max_items` that differs from a node's existing
//! configuration fails the precondition on every publish (python-omemo has to retry
//! without it). Callers who want it use [`publish_iq_with_options`].
//!
//! When the server answers `precondition-not-met` ([`iq_error_condition`]), send
//! [`configure_node_iq`] (the same two fields as node configuration) and publish again,
//! as python-omemo and Conversations do.

use minidom::Element;

use super::xml::{
    FORM_NODE_CONFIG, FORM_PUBLISH_OPTIONS, NS_DATA_FORMS, NS_PUBSUB, NS_PUBSUB_ERRORS,
    NS_PUBSUB_EVENT, NS_PUBSUB_OWNER, NS_STANZA_ERRORS, bare_jid, check_count, children_named,
    element, element_with, iq, required_child, set_attr, shorten, text_element,
};
use crate::consts::MAX_PUBSUB_ITEMS;
use crate::error::StanzaError;

/// The publish options [`publish_iq`] sends when asked for open access.
pub const OPEN_ACCESS_OPTIONS: &[(&str, &str)] = &[
    ("pubsub#access_model", "open"),
    ("pubsub#persist_items", "true"),
];

/// `<iq type='set'>` publishing `payload` as item `item_id` on `node` of the own PEP
/// service, with [`OPEN_ACCESS_OPTIONS`] as XEP-0223 publish options when
/// `with_open_access_options`.
///
/// ```text
/// <iq xmlns='jabber:client' type='set' id='ID'>
///   <pubsub xmlns='http://jabber.org/protocol/pubsub'>
///     <publish node='NODE'><item id='ITEM'>PAYLOAD</item></publish>
///     <publish-options>
///       <x xmlns='jabber:x:data' type='submit'>
///         <field var='FORM_TYPE' type='hidden'>
///           <value>http://jabber.org/protocol/pubsub#publish-options</value>
///         </field>
///         <field var='pubsub#access_model'><value>open</value></field>
///         <field var='pubsub#persist_items'><value>true</value></field>
///       </x>
///     </publish-options>
///   </pubsub>
/// </iq>
/// ```
pub fn publish_iq(
    id: &str,
    node: &str,
    item_id: &str,
    payload: Element,
    with_open_access_options: bool,
) -> Element {
    let options = if with_open_access_options {
        OPEN_ACCESS_OPTIONS
    } else {
        &[]
    };
    publish_iq_with_options(id, node, item_id, payload, options)
}

/// Like [`publish_iq`] with any publish-options fields, given as `(var, value)` pairs,
/// for example `("pubsub#max_items", "1")`. No `<publish-options>` is sent when
/// `options` is empty.
pub fn publish_iq_with_options(
    id: &str,
    node: &str,
    item_id: &str,
    payload: Element,
    options: &[(&str, &str)],
) -> Element {
    let mut item = element_with("item", NS_PUBSUB, &[("id", item_id)]);
    item.append_child(payload);
    let mut publish = element_with("publish", NS_PUBSUB, &[("node", node)]);
    publish.append_child(item);
    let mut pubsub = element("pubsub", NS_PUBSUB);
    pubsub.append_child(publish);
    if !options.is_empty() {
        let mut publish_options = element("publish-options", NS_PUBSUB);
        publish_options.append_child(submit_form(FORM_PUBLISH_OPTIONS, options));
        pubsub.append_child(publish_options);
    }
    iq("set", id, None, pubsub)
}

/// `<iq type='set'>` configuring the own PEP `node` with `options` as `(var, value)`
/// pairs, such as [`OPEN_ACCESS_OPTIONS`] (`pubsub#owner` `<configure>` with a
/// `pubsub#node_config` form). Send it after a publish with the same options failed with
/// `precondition-not-met`, then publish again.
pub fn configure_node_iq(id: &str, node: &str, options: &[(&str, &str)]) -> Element {
    let mut configure = element_with("configure", NS_PUBSUB_OWNER, &[("node", node)]);
    configure.append_child(submit_form(FORM_NODE_CONFIG, options));
    let mut pubsub = element("pubsub", NS_PUBSUB_OWNER);
    pubsub.append_child(configure);
    iq("set", id, None, pubsub)
}

/// `<iq type='set'>` retracting item `item_id` from the own PEP `node`, with
/// `notify='true'` so subscribers learn of it (how an OMEMO 2 device takes the bundle of a
/// removed device off the shared bundles node).
///
/// ```text
/// <iq xmlns='jabber:client' type='set' id='ID'>
///   <pubsub xmlns='http://jabber.org/protocol/pubsub'>
///     <retract node='NODE' notify='true'><item id='ITEM'/></retract>
///   </pubsub>
/// </iq>
/// ```
pub fn retract_iq(id: &str, node: &str, item_id: &str) -> Element {
    let mut retract = element_with("retract", NS_PUBSUB, &[("node", node), ("notify", "true")]);
    retract.append_child(element_with("item", NS_PUBSUB, &[("id", item_id)]));
    let mut pubsub = element("pubsub", NS_PUBSUB);
    pubsub.append_child(retract);
    iq("set", id, None, pubsub)
}

/// `<iq type='get'>` fetching the items of `node` from the PEP service of `to`, without
/// naming an item (Dino publishes bundles as item `1`, not `current`).
///
/// A resource on `to` is dropped; an empty `to` addresses the own account.
/// `max_items` becomes the `max_items` attribute of `<items>`.
pub fn fetch_items_iq(id: &str, to: &str, node: &str, max_items: Option<u32>) -> Element {
    let mut items = element_with("items", NS_PUBSUB, &[("node", node)]);
    if let Some(max) = max_items {
        set_attr(&mut items, "max_items", max.to_string());
    }
    let mut pubsub = element("pubsub", NS_PUBSUB);
    pubsub.append_child(items);
    let to = bare_jid(to);
    iq("get", id, (!to.is_empty()).then_some(to), pubsub)
}

/// `<iq type='get'>` fetching the item `item_id` of `node` from the PEP service of `to`
/// (the OMEMO 2 bundle of one device from the shared bundles node).
///
/// A resource on `to` is dropped; an empty `to` addresses the own account.
pub fn fetch_item_iq(id: &str, to: &str, node: &str, item_id: &str) -> Element {
    let mut items = element_with("items", NS_PUBSUB, &[("node", node)]);
    items.append_child(element_with("item", NS_PUBSUB, &[("id", item_id)]));
    let mut pubsub = element("pubsub", NS_PUBSUB);
    pubsub.append_child(items);
    let to = bare_jid(to);
    iq("get", id, (!to.is_empty()).then_some(to), pubsub)
}

/// The payloads of the items in an items result, in document order. Items without a
/// payload are skipped.
///
/// Fails with [`StanzaError::IqError`] on `type='error'`, and when the IQ is not a
/// `result` with a `<pubsub>` child, or holds more than 1000 items.
pub fn parse_items_result(iq: &Element) -> Result<Vec<Element>, StanzaError> {
    match iq.attr("type") {
        Some("result") => {}
        Some("error") => return Err(iq_error(iq)),
        Some(other) => {
            return Err(StanzaError::InvalidAttribute {
                element: "iq",
                attribute: "type",
                value: shorten(other),
            });
        }
        None => {
            return Err(StanzaError::MissingAttribute {
                element: "iq",
                attribute: "type",
            });
        }
    }
    let pubsub = required_child(iq, "pubsub", NS_PUBSUB)?;
    let items = required_child(pubsub, "items", NS_PUBSUB)?;
    item_payloads(items, NS_PUBSUB)
}

/// A pubsub event notification: new items on a node of `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubsubEvent {
    /// The bare JID whose node changed: the message's `from` without its resource (not
    /// otherwise normalised). Check it is the account you expect before trusting the
    /// payloads.
    pub from: String,
    /// The node.
    pub node: String,
    /// The payload of each published item, in document order. Empty for a
    /// notification that only retracts items.
    pub payloads: Vec<Element>,
}

/// The items notification carried by `message`, if it is one.
///
/// `None` when the message has no `from`, no `<event xmlns='…pubsub#event'>` with an
/// `<items node>`, or more than 1000 items.
pub fn parse_event(message: &Element) -> Option<PubsubEvent> {
    let from = bare_jid(message.attr("from")?);
    let items = message
        .get_child("event", NS_PUBSUB_EVENT)?
        .get_child("items", NS_PUBSUB_EVENT)?;
    let node = items.attr("node")?;
    let payloads = item_payloads(items, NS_PUBSUB_EVENT).ok()?;
    Some(PubsubEvent {
        from: from.to_owned(),
        node: node.to_owned(),
        payloads,
    })
}

/// The error condition of a `type='error'` IQ: the pubsub-specific condition (such as
/// `precondition-not-met`) when there is one, otherwise the RFC 6120 defined condition
/// (such as `item-not-found`), or `undefined-condition` when the error names none.
///
/// `None` when the IQ is not of type `error`.
pub fn iq_error_condition(iq: &Element) -> Option<String> {
    if iq.attr("type") != Some("error") {
        return None;
    }
    let Some(error) = error_child(iq) else {
        return Some("undefined-condition".to_owned());
    };
    let pubsub = error.children().find(|c| c.has_ns(NS_PUBSUB_ERRORS));
    let defined = error
        .children()
        .find(|c| c.has_ns(NS_STANZA_ERRORS) && c.name() != "text");
    Some(
        pubsub
            .or(defined)
            .map_or("undefined-condition", Element::name)
            .to_owned(),
    )
}

/// The `<error>` child of a stanza, in whatever stream namespace it came.
fn error_child(stanza: &Element) -> Option<&Element> {
    stanza.children().find(|c| c.name() == "error")
}

fn iq_error(iq: &Element) -> StanzaError {
    StanzaError::IqError {
        condition: iq_error_condition(iq).unwrap_or_else(|| "undefined-condition".to_owned()),
        text: error_child(iq)
            .and_then(|e| e.get_child("text", NS_STANZA_ERRORS))
            .map(|t| shorten(&t.text())),
    }
}

fn item_payloads(items: &Element, namespace: &'static str) -> Result<Vec<Element>, StanzaError> {
    check_count(items, "item", namespace, MAX_PUBSUB_ITEMS)?;
    Ok(children_named(items, "item", namespace)
        .filter_map(|item| item.children().next().cloned())
        .collect())
}

/// `<x xmlns='jabber:x:data' type='submit'>` with a hidden FORM_TYPE and `fields`.
fn submit_form(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let mut form = element_with("x", NS_DATA_FORMS, &[("type", "submit")]);
    form.append_child(form_field("FORM_TYPE", Some("hidden"), form_type));
    for (var, value) in fields {
        form.append_child(form_field(var, None, value));
    }
    form
}

fn form_field(var: &str, kind: Option<&str>, value: &str) -> Element {
    let mut field = element_with("field", NS_DATA_FORMS, &[("var", var)]);
    if let Some(kind) = kind {
        set_attr(&mut field, "type", kind);
    }
    field.append_child(text_element("value", NS_DATA_FORMS, value));
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::LEGACY_NAMESPACE;
    use crate::stanza::legacy::{
        DEVICE_LIST_NODE, bundle_node, device_list_element, parse_bundle, parse_device_list,
    };
    use crate::stanza::test_support::{parse, reparse};
    use crate::stanza::xml::NS_CLIENT;

    /// `(var, type, values)` of each field of a data form.
    fn form_fields(form: &Element) -> Vec<(String, Option<String>, Vec<String>)> {
        assert!(form.is("x", NS_DATA_FORMS));
        assert_eq!(form.attr("type"), Some("submit"));
        form.children()
            .map(|f| {
                assert!(f.is("field", NS_DATA_FORMS));
                (
                    f.attr("var").unwrap().to_owned(),
                    f.attr("type").map(str::to_owned),
                    f.children()
                        .filter(|v| v.is("value", NS_DATA_FORMS))
                        .map(Element::text)
                        .collect(),
                )
            })
            .collect()
    }

    fn field(var: &str, kind: Option<&str>, value: &str) -> (String, Option<String>, Vec<String>) {
        (
            var.to_owned(),
            kind.map(str::to_owned),
            vec![value.to_owned()],
        )
    }

    fn items_result(items: &str) -> Element {
        parse(&format!(
            "<iq xmlns='jabber:client' type='result' id='r'>\
               <pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <items node='n'>{items}</items>\
               </pubsub>\
             </iq>"
        ))
    }

    // ---- publish and configure ----

    #[test]
    fn publish_with_open_access_sends_access_model_and_persist_items_only() {
        let payload = device_list_element(&[1, 2]);
        let iq = reparse(&publish_iq(
            "pub1",
            DEVICE_LIST_NODE,
            "current",
            payload.clone(),
            true,
        ));
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("set"));
        assert_eq!(iq.attr("id"), Some("pub1"));
        assert_eq!(iq.attr("to"), None);
        let pubsub = iq.get_child("pubsub", NS_PUBSUB).unwrap();
        let publish = pubsub.get_child("publish", NS_PUBSUB).unwrap();
        assert_eq!(publish.attr("node"), Some(DEVICE_LIST_NODE));
        let item = publish.get_child("item", NS_PUBSUB).unwrap();
        assert_eq!(item.attr("id"), Some("current"));
        assert_eq!(item.children().collect::<Vec<_>>(), [&payload]);
        let form = pubsub
            .get_child("publish-options", NS_PUBSUB)
            .and_then(|o| o.get_child("x", NS_DATA_FORMS))
            .unwrap();
        assert_eq!(
            form_fields(form),
            [
                field("FORM_TYPE", Some("hidden"), FORM_PUBLISH_OPTIONS),
                field("pubsub#access_model", None, "open"),
                field("pubsub#persist_items", None, "true"),
            ]
        );
    }

    #[test]
    fn publish_without_options_has_no_publish_options() {
        let iq = publish_iq(
            "p",
            &bundle_node(5),
            "current",
            device_list_element(&[]),
            false,
        );
        let pubsub = iq.get_child("pubsub", NS_PUBSUB).unwrap();
        assert!(!pubsub.has_child("publish-options", NS_PUBSUB));
        assert_eq!(
            pubsub.get_child("publish", NS_PUBSUB).unwrap().attr("node"),
            Some("eu.siacs.conversations.axolotl.bundles:5")
        );
    }

    #[test]
    fn publish_with_custom_options_sends_them_in_order() {
        let iq = publish_iq_with_options(
            "p",
            DEVICE_LIST_NODE,
            "current",
            device_list_element(&[]),
            &[("pubsub#access_model", "open"), ("pubsub#max_items", "1")],
        );
        let form = iq
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("publish-options", NS_PUBSUB))
            .and_then(|o| o.get_child("x", NS_DATA_FORMS))
            .unwrap();
        assert_eq!(
            form_fields(form),
            [
                field("FORM_TYPE", Some("hidden"), FORM_PUBLISH_OPTIONS),
                field("pubsub#access_model", None, "open"),
                field("pubsub#max_items", None, "1"),
            ]
        );
    }

    #[test]
    fn retract_names_the_item_and_notifies() {
        let iq = reparse(&retract_iq("r1", "urn:xmpp:omemo:2:bundles", "1234"));
        assert_eq!(iq.attr("type"), Some("set"));
        assert_eq!(iq.attr("to"), None);
        let retract = iq
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("retract", NS_PUBSUB))
            .unwrap();
        assert_eq!(retract.attr("node"), Some("urn:xmpp:omemo:2:bundles"));
        assert_eq!(retract.attr("notify"), Some("true"));
        let items: Vec<_> = retract.children().map(|i| i.attr("id")).collect();
        assert_eq!(items, [Some("1234")]);
    }

    #[test]
    fn omemo2_bundles_node_is_configured_with_max_items() {
        use crate::stanza::omemo2::{BUNDLES_NODE, BUNDLES_NODE_MAX_ITEMS, bundles_node_options};
        let options = bundles_node_options(BUNDLES_NODE_MAX_ITEMS[0]);
        let iq = reparse(&configure_node_iq("cfg2", BUNDLES_NODE, &options));
        let form = iq
            .get_child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.get_child("configure", NS_PUBSUB_OWNER))
            .and_then(|c| c.get_child("x", NS_DATA_FORMS))
            .unwrap();
        assert_eq!(
            form_fields(form),
            [
                field("FORM_TYPE", Some("hidden"), FORM_NODE_CONFIG),
                field("pubsub#access_model", None, "open"),
                field("pubsub#persist_items", None, "true"),
                field("pubsub#max_items", None, "max"),
            ]
        );
    }

    #[test]
    fn configure_node_sets_open_access_with_a_node_config_form() {
        let iq = reparse(&configure_node_iq(
            "cfg1",
            DEVICE_LIST_NODE,
            OPEN_ACCESS_OPTIONS,
        ));
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("set"));
        assert_eq!(iq.attr("id"), Some("cfg1"));
        let configure = iq
            .get_child("pubsub", NS_PUBSUB_OWNER)
            .and_then(|p| p.get_child("configure", NS_PUBSUB_OWNER))
            .unwrap();
        assert_eq!(configure.attr("node"), Some(DEVICE_LIST_NODE));
        let form = configure.get_child("x", NS_DATA_FORMS).unwrap();
        assert_eq!(
            form_fields(form),
            [
                field("FORM_TYPE", Some("hidden"), FORM_NODE_CONFIG),
                field("pubsub#access_model", None, "open"),
                field("pubsub#persist_items", None, "true"),
            ]
        );
    }

    // ---- fetch ----

    #[test]
    fn fetch_asks_for_the_node_without_an_item_id() {
        let iq = reparse(&fetch_items_iq(
            "f1",
            "romeo@montague.lit/orchard",
            DEVICE_LIST_NODE,
            Some(1),
        ));
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("get"));
        assert_eq!(iq.attr("id"), Some("f1"));
        assert_eq!(iq.attr("to"), Some("romeo@montague.lit"));
        let items = iq
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("items", NS_PUBSUB))
            .unwrap();
        assert_eq!(items.attr("node"), Some(DEVICE_LIST_NODE));
        assert_eq!(items.attr("max_items"), Some("1"));
        assert_eq!(items.children().count(), 0);
    }

    #[test]
    fn fetch_without_max_items_or_recipient_omits_them() {
        let iq = fetch_items_iq("f2", "", &bundle_node(9), None);
        assert_eq!(iq.attr("to"), None);
        let items = iq
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("items", NS_PUBSUB))
            .unwrap();
        assert_eq!(items.attr("max_items"), None);
    }

    // ---- results ----

    #[test]
    fn dino_bundle_with_item_id_1_is_returned_and_verifies() {
        let payloads = parse_items_result(&fixture!("dino_bundle_result.xml")).unwrap();
        assert_eq!(payloads.len(), 1);
        let bundle = parse_bundle(&payloads[0]).unwrap();
        assert_eq!(bundle.signed_pre_key_id, 1);
        let ids: Vec<_> = bundle.pre_keys.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [31, 32, 33]);
        assert_eq!(bundle.verify(), Ok(()));
    }

    #[test]
    fn device_list_node_with_several_items_yields_every_payload_in_order() {
        let payloads = parse_items_result(&fixture!("device_list_many_items.xml")).unwrap();
        assert_eq!(payloads.len(), 3, "the empty item is skipped");
        let lists: Vec<_> = payloads
            .iter()
            .map(|p| parse_device_list(p, 1000).unwrap())
            .collect();
        assert_eq!(
            lists,
            [
                vec![1_164_059_891, 26_052_318, 564_866_972],
                vec![564_866_972, 1236],
                vec![77],
            ]
        );
    }

    #[test]
    fn publish_payload_comes_back_from_a_result() {
        // What a server returns for a fetch after our publish: the same item.
        let payload = device_list_element(&[3, 4]);
        let published = publish_iq("p", DEVICE_LIST_NODE, "current", payload.clone(), true);
        let item = published
            .get_child("pubsub", NS_PUBSUB)
            .and_then(|p| p.get_child("publish", NS_PUBSUB))
            .and_then(|p| p.get_child("item", NS_PUBSUB))
            .unwrap()
            .clone();
        let mut items = element_with("items", NS_PUBSUB, &[("node", DEVICE_LIST_NODE)]);
        items.append_child(item);
        let mut pubsub = element("pubsub", NS_PUBSUB);
        pubsub.append_child(items);
        let result = reparse(&iq("result", "p", None, pubsub));
        let payloads = parse_items_result(&result).unwrap();
        assert_eq!(payloads.len(), 1);
        assert_eq!(parse_device_list(&payloads[0], 10), Ok(vec![3, 4]));
    }

    #[test]
    fn empty_node_gives_no_payloads() {
        assert_eq!(parse_items_result(&items_result("")), Ok(vec![]));
    }

    #[test]
    fn item_not_found_becomes_an_iq_error() {
        assert_eq!(
            parse_items_result(&fixture!("fetch_item_not_found.xml")),
            Err(StanzaError::IqError {
                condition: "item-not-found".to_owned(),
                text: None
            })
        );
    }

    #[test]
    fn precondition_not_met_is_preferred_over_the_stanza_condition() {
        let iq = fixture!("publish_precondition_not_met.xml");
        assert_eq!(
            iq_error_condition(&iq).as_deref(),
            Some("precondition-not-met")
        );
        assert_eq!(
            parse_items_result(&iq),
            Err(StanzaError::IqError {
                condition: "precondition-not-met".to_owned(),
                text: Some("Field does not match: pubsub#access_model".to_owned())
            })
        );
    }

    #[test]
    fn iq_error_message_names_condition_and_text() {
        let err = parse_items_result(&fixture!("publish_precondition_not_met.xml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "IQ error: precondition-not-met (Field does not match: pubsub#access_model)"
        );
        let err = parse_items_result(&fixture!("fetch_item_not_found.xml")).unwrap_err();
        assert_eq!(err.to_string(), "IQ error: item-not-found");
        assert_eq!(
            crate::Error::from(err).to_string(),
            "IQ error: item-not-found"
        );
    }

    #[test]
    fn iq_error_condition_is_none_unless_the_iq_is_an_error() {
        assert_eq!(iq_error_condition(&items_result("")), None);
        assert_eq!(
            iq_error_condition(&fixture!("fetch_item_not_found.xml")).as_deref(),
            Some("item-not-found")
        );
        let bare = parse("<iq xmlns='jabber:client' type='error' id='e'/>");
        assert_eq!(
            iq_error_condition(&bare).as_deref(),
            Some("undefined-condition")
        );
        let text_only = parse(
            "<iq xmlns='jabber:client' type='error' id='e'><error type='cancel'>\
               <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>nope</text>\
             </error></iq>",
        );
        assert_eq!(
            iq_error_condition(&text_only).as_deref(),
            Some("undefined-condition")
        );
        let subscription = parse(
            "<iq xmlns='jabber:client' type='error' id='e'><error type='auth'>\
               <not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <presence-subscription-required xmlns='http://jabber.org/protocol/pubsub#errors'/>\
             </error></iq>",
        );
        assert_eq!(
            iq_error_condition(&subscription).as_deref(),
            Some("presence-subscription-required")
        );
    }

    #[test]
    fn result_of_the_wrong_type_or_shape_is_rejected() {
        let get = parse("<iq xmlns='jabber:client' type='get' id='g'/>");
        assert_eq!(
            parse_items_result(&get),
            Err(StanzaError::InvalidAttribute {
                element: "iq",
                attribute: "type",
                value: "get".to_owned()
            })
        );
        let untyped = parse("<iq xmlns='jabber:client' id='g'/>");
        assert_eq!(
            parse_items_result(&untyped),
            Err(StanzaError::MissingAttribute {
                element: "iq",
                attribute: "type"
            })
        );
        let empty = parse("<iq xmlns='jabber:client' type='result' id='g'/>");
        assert_eq!(
            parse_items_result(&empty),
            Err(StanzaError::MissingElement("pubsub"))
        );
        let no_items = parse(
            "<iq xmlns='jabber:client' type='result' id='g'>\
               <pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>",
        );
        assert_eq!(
            parse_items_result(&no_items),
            Err(StanzaError::MissingElement("items"))
        );
    }

    #[test]
    fn more_than_one_thousand_items_are_rejected() {
        let many = "<item id='x'><list xmlns='eu.siacs.conversations.axolotl'/></item>"
            .repeat(MAX_PUBSUB_ITEMS + 1);
        assert_eq!(
            parse_items_result(&items_result(&many)),
            Err(StanzaError::TooMany {
                what: "item",
                count: MAX_PUBSUB_ITEMS + 1,
                cap: MAX_PUBSUB_ITEMS
            })
        );
    }

    // ---- events ----

    #[test]
    fn device_list_event_is_parsed() {
        let event = parse_event(&fixture!("device_list_event.xml")).unwrap();
        assert_eq!(event.from, "romeo@montague.lit");
        assert_eq!(event.node, DEVICE_LIST_NODE);
        assert_eq!(event.payloads.len(), 1);
        assert_eq!(
            parse_device_list(&event.payloads[0], 1000),
            Ok(vec![1_164_059_891, 26_052_318])
        );
    }

    #[test]
    fn converse_bundle_event_strips_the_resource_and_yields_the_bundle() {
        let mut message = fixture!("conversejs_bundle_event.xml");
        message.set_attr(
            minidom::rxml::Namespace::NONE,
            minidom::rxml::NcName::try_from("from").unwrap(),
            "juliet@capulet.lit/converse.js-1",
        );
        let event = parse_event(&message).unwrap();
        assert_eq!(event.from, "juliet@capulet.lit");
        assert_eq!(event.node, bundle_node(5085));
        let bundle = parse_bundle(&event.payloads[0]).unwrap();
        assert_eq!(bundle.verify(), Ok(()));
    }

    #[test]
    fn retraction_only_event_has_no_payloads() {
        let message = parse(
            "<message xmlns='jabber:client' from='romeo@montague.lit'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='eu.siacs.conversations.axolotl.devicelist'>\
                   <retract id='current'/>\
                 </items>\
               </event>\
             </message>",
        );
        assert_eq!(
            parse_event(&message),
            Some(PubsubEvent {
                from: "romeo@montague.lit".to_owned(),
                node: DEVICE_LIST_NODE.to_owned(),
                payloads: vec![],
            })
        );
    }

    #[test]
    fn messages_that_are_not_item_events_give_none() {
        let no_from = parse(
            "<message xmlns='jabber:client'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'/></event>\
             </message>",
        );
        assert_eq!(parse_event(&no_from), None);
        let chat = parse("<message xmlns='jabber:client' from='a@b'><body>hi</body></message>");
        assert_eq!(parse_event(&chat), None);
        let purge = parse(
            "<message xmlns='jabber:client' from='a@b'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'><purge node='n'/></event>\
             </message>",
        );
        assert_eq!(parse_event(&purge), None);
        let no_node = parse(
            "<message xmlns='jabber:client' from='a@b'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'><items/></event>\
             </message>",
        );
        assert_eq!(parse_event(&no_node), None);
        let wrong_ns = parse(
            "<message xmlns='jabber:client' from='a@b'>\
               <event xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></event>\
             </message>",
        );
        assert_eq!(parse_event(&wrong_ns), None);
    }

    #[test]
    fn event_payload_may_be_any_element() {
        let message = parse(
            "<message xmlns='jabber:client' from='a@b/c'>\
               <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='n'><item id='1'><list xmlns='eu.siacs.conversations.axolotl'/></item></items>\
               </event>\
             </message>",
        );
        let event = parse_event(&message).unwrap();
        assert!(event.payloads[0].is("list", LEGACY_NAMESPACE));
    }
}
