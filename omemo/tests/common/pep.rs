//! An in-process PEP service (XEP-0163 on XEP-0060) and a world of devices whose
//! managers talk through it.

use std::collections::{HashMap, VecDeque};

use jid::BareJid;
use minidom::Element;
use omemo::stanza::{legacy, omemo2};
use omemo::{
    Handled, Manager, ManagerConfig, ManagerError, MemoryStore, PreKeyBundle, Store, Version,
    Versions,
};

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const DEVICE_LIST_NODE: &str = "eu.siacs.conversations.axolotl.devicelist";

/// The device-list node of `version`.
pub fn device_list_node(version: Version) -> &'static str {
    match version {
        Version::Legacy => legacy::DEVICE_LIST_NODE,
        Version::Omemo2 => omemo2::DEVICE_LIST_NODE,
    }
}

/// The node and item id of the bundle of `device_id` in `version`.
pub fn bundle_item(version: Version, device_id: u32) -> (String, String) {
    match version {
        Version::Legacy => (legacy::bundle_node(device_id), "current".to_owned()),
        Version::Omemo2 => (
            omemo2::BUNDLES_NODE.to_owned(),
            omemo2::bundle_item_id(device_id),
        ),
    }
}

/// The device-list payload of `version` listing `ids`.
pub fn device_list_element(version: Version, ids: &[u32]) -> Element {
    match version {
        Version::Legacy => legacy::device_list_element(ids),
        Version::Omemo2 => {
            let devices: Vec<omemo2::ListedDevice> =
                ids.iter().copied().map(omemo2::ListedDevice::new).collect();
            omemo2::device_list_element(&devices)
        }
    }
}

/// A device-list event of `version` from `from` with one item per entry of `items`.
pub fn device_list_event(version: Version, from: &str, items: &[&[u32]]) -> Element {
    let mut list = Element::builder("items", PUBSUB_EVENT)
        .attr("node".try_into().unwrap(), device_list_node(version));
    for (i, ids) in items.iter().enumerate() {
        list = list.append(
            Element::builder("item", PUBSUB_EVENT)
                .attr("id".try_into().unwrap(), format!("item{i}"))
                .append(device_list_element(version, ids))
                .build(),
        );
    }
    Element::builder("message", "jabber:client")
        .attr("from".try_into().unwrap(), from)
        .append(
            Element::builder("event", PUBSUB_EVENT)
                .append(list.build())
                .build(),
        )
        .build()
}

pub fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap()
}

/// PEP nodes of every account: (owner, node) -> items (id, payload), oldest first.
#[derive(Default)]
pub struct Pep {
    pub nodes: HashMap<(String, String), Vec<(String, Element)>>,
    /// Notifications produced by publishes: (owner, event message).
    pub events: Vec<Element>,
    /// Refuse publishes with publish-options (`precondition-not-met`) until the node
    /// was configured, as a server does for a node created with other settings.
    pub refuse_publish_options: bool,
    /// Nodes configured through pubsub#owner, as (owner, node).
    pub configured: Vec<(String, String)>,
    /// `pubsub#max_items` values the server refuses, in publish-options (a publish
    /// error) and in a node configuration (`not-acceptable`), as servers whose limit is
    /// lower than asked do.
    pub refused_max_items: Vec<&'static str>,
    /// The `pubsub#max_items` each node got from the publish-options or configuration
    /// the server accepted last, by (owner, node).
    pub max_items: HashMap<(String, String), String>,
}

/// The value of field `var` in the data form under `parent`, if any.
fn form_value(parent: &Element, var: &str) -> Option<String> {
    let form = parent.get_child("x", "jabber:x:data")?;
    form.children()
        .find(|f| f.attr("var") == Some(var))
        .and_then(|f| f.children().next())
        .map(Element::text)
}

impl Pep {
    /// The published bundle of `device_id` of `owner` in `version`.
    pub fn bundle(&self, owner: &str, version: Version, device_id: u32) -> PreKeyBundle {
        let (node, item) = bundle_item(version, device_id);
        let items = &self.nodes[&(owner.to_owned(), node)];
        let payload = &items.iter().find(|(id, _)| *id == item).unwrap().1;
        match version {
            Version::Legacy => legacy::parse_bundle(payload).unwrap(),
            Version::Omemo2 => omemo2::parse_bundle(payload).unwrap(),
        }
    }

    /// Replaces the published bundle of `device_id` of `owner` in `version`.
    pub fn set_bundle(
        &mut self,
        owner: &str,
        version: Version,
        device_id: u32,
        bundle: &PreKeyBundle,
    ) {
        let (node, item) = bundle_item(version, device_id);
        let payload = match version {
            Version::Legacy => legacy::bundle_element(bundle).unwrap(),
            Version::Omemo2 => omemo2::bundle_element(bundle).unwrap(),
        };
        let items = self.nodes.entry((owner.to_owned(), node)).or_default();
        items.retain(|(id, _)| *id != item);
        items.push((item, payload));
    }

    /// Answers one IQ request sent by `from` (a bare JID).
    pub fn answer(&mut self, from: &str, iq: &Element) -> Element {
        let id = iq.attr("id").unwrap();
        let to = iq.attr("to").unwrap_or(from).to_owned();
        let result = |children: Vec<Element>| {
            let mut builder = Element::builder("iq", "jabber:client")
                .attr("type".try_into().unwrap(), "result")
                .attr("id".try_into().unwrap(), id)
                .attr("from".try_into().unwrap(), to.as_str());
            for child in children {
                builder = builder.append(child);
            }
            builder.build()
        };
        if let Some(pubsub) = iq.get_child("pubsub", PUBSUB) {
            if let Some(retract) = pubsub.get_child("retract", PUBSUB) {
                let node = retract.attr("node").unwrap().to_owned();
                let item = retract
                    .get_child("item", PUBSUB)
                    .unwrap()
                    .attr("id")
                    .unwrap();
                let Some(items) = self.nodes.get_mut(&(from.to_owned(), node)) else {
                    return error(id, &to, "item-not-found");
                };
                items.retain(|(i, _)| i != item);
                return result(vec![]);
            }
            if let Some(publish) = pubsub.get_child("publish", PUBSUB) {
                let node = publish.attr("node").unwrap().to_owned();
                let asked = pubsub
                    .get_child("publish-options", PUBSUB)
                    .and_then(|options| form_value(options, "pubsub#max_items"));
                if let Some(max) = &asked {
                    if self.refused_max_items.contains(&max.as_str()) {
                        return error(id, &to, "not-acceptable");
                    }
                    self.max_items
                        .insert((from.to_owned(), node.clone()), max.clone());
                }
                let configured = self.configured.contains(&(from.to_owned(), node.clone()));
                if self.refuse_publish_options
                    && pubsub.get_child("publish-options", PUBSUB).is_some()
                    && !configured
                {
                    let mut refusal = error(id, &to, "conflict");
                    let condition = Element::bare(
                        "precondition-not-met",
                        "http://jabber.org/protocol/pubsub#errors",
                    );
                    refusal
                        .get_child_mut("error", "jabber:client")
                        .unwrap()
                        .append_child(condition);
                    return refusal;
                }
                let item = publish.get_child("item", PUBSUB).unwrap();
                let item_id = item.attr("id").unwrap_or("current").to_owned();
                let payload = item.children().next().unwrap().clone();
                let items = self
                    .nodes
                    .entry((from.to_owned(), node.clone()))
                    .or_default();
                items.retain(|(i, _)| *i != item_id);
                items.push((item_id.clone(), payload.clone()));
                let event = Element::builder("message", "jabber:client")
                    .attr("from".try_into().unwrap(), from)
                    .append(
                        Element::builder("event", PUBSUB_EVENT).append(
                            Element::builder("items", PUBSUB_EVENT)
                                .attr("node".try_into().unwrap(), node.as_str())
                                .append(
                                    Element::builder("item", PUBSUB_EVENT)
                                        .attr("id".try_into().unwrap(), item_id.as_str())
                                        .append(payload)
                                        .build(),
                                )
                                .build(),
                        ),
                    )
                    .build();
                self.events.push(event);
                return result(vec![]);
            }
            if let Some(items) = pubsub.get_child("items", PUBSUB) {
                let node = items.attr("node").unwrap().to_owned();
                let Some(stored) = self.nodes.get(&(to.clone(), node.clone())) else {
                    return error(id, &to, "item-not-found");
                };
                let wanted: Vec<&str> = items
                    .children()
                    .filter(|c| c.is("item", PUBSUB))
                    .filter_map(|c| c.attr("id"))
                    .collect();
                let mut list = Element::builder("items", PUBSUB)
                    .attr("node".try_into().unwrap(), node.as_str());
                let stored = stored
                    .iter()
                    .filter(|(item_id, _)| wanted.is_empty() || wanted.contains(&item_id.as_str()));
                for (item_id, payload) in stored {
                    list = list.append(
                        Element::builder("item", PUBSUB)
                            .attr("id".try_into().unwrap(), item_id.as_str())
                            .append(payload.clone())
                            .build(),
                    );
                }
                return result(vec![
                    Element::builder("pubsub", PUBSUB)
                        .append(list.build())
                        .build(),
                ]);
            }
        }
        if let Some(owner) = iq.get_child("pubsub", PUBSUB_OWNER) {
            let configure = owner.get_child("configure", PUBSUB_OWNER).unwrap();
            let node = configure.attr("node").unwrap().to_owned();
            if let Some(max) = form_value(configure, "pubsub#max_items") {
                if self.refused_max_items.contains(&max.as_str()) {
                    return error(id, &to, "not-acceptable");
                }
                self.max_items.insert((from.to_owned(), node.clone()), max);
            }
            self.configured.push((from.to_owned(), node));
            return result(vec![]);
        }
        panic!("unexpected request {}", String::from(iq));
    }
}

pub fn error(id: &str, from: &str, condition: &str) -> Element {
    Element::builder("iq", "jabber:client")
        .attr("type".try_into().unwrap(), "error")
        .attr("id".try_into().unwrap(), id)
        .attr("from".try_into().unwrap(), from)
        .append(
            Element::builder("error", "jabber:client")
                .attr("type".try_into().unwrap(), "cancel")
                .append(Element::bare(
                    condition,
                    "urn:ietf:params:xml:ns:xmpp-stanzas",
                ))
                .build(),
        )
        .build()
}

/// One device of one account.
pub struct Device<S: Store> {
    pub full_jid: String,
    pub manager: Manager<S>,
    /// Message stanzas the manager wanted sent (completions, heartbeats, messages from
    /// `send`), oldest first.
    pub sent: VecDeque<Element>,
}

impl<S: Store> Device<S> {
    /// The oldest message stanza the manager sent, with this device's full JID as
    /// `from`.
    pub fn next_message(&mut self) -> Option<Element> {
        let message = self.sent.pop_front()?;
        Some(with_from(message, &self.full_jid))
    }
}

/// Every device, the PEP service and the message queues between them.
pub struct World {
    pub pep: Pep,
    pub now: u64,
    /// The configuration of the devices [`World::device`] makes.
    pub config: ManagerConfig,
}

impl World {
    pub fn new() -> Self {
        Self::speaking(Versions::BOTH)
    }

    /// A world whose devices speak `versions`.
    pub fn speaking(versions: Versions) -> Self {
        Self {
            pep: Pep::default(),
            now: 1_700_000_000,
            config: ManagerConfig {
                versions,
                ..ManagerConfig::default()
            },
        }
    }

    /// The version two devices of this world talk in.
    pub fn version(&self) -> Version {
        self.config.versions.newest().unwrap()
    }

    /// A manager of this world's configuration whose requests are not answered yet (the
    /// stream is not up).
    pub fn unconnected(&self, jid: &str) -> Manager<MemoryStore> {
        let mut rng = super::rng::rng();
        Manager::open(
            MemoryStore::new(),
            &bare(jid),
            self.config.clone(),
            &mut rng,
            self.now,
        )
        .unwrap()
    }

    pub fn device(&mut self, jid: &str, resource: &str) -> Device<MemoryStore> {
        let config = self.config.clone();
        self.device_with(jid, resource, MemoryStore::new(), config)
    }

    pub fn device_with<S: Store>(
        &mut self,
        jid: &str,
        resource: &str,
        store: S,
        config: ManagerConfig,
    ) -> Device<S> {
        let mut rng = super::rng::rng();
        let manager = Manager::open(store, &bare(jid), config, &mut rng, self.now).unwrap();
        let mut device = Device {
            full_jid: format!("{jid}/{resource}"),
            manager,
            sent: VecDeque::new(),
        };
        self.run(&mut device);
        device
    }

    /// Sends every queued request of `device` to the PEP service and feeds the answers
    /// back, until nothing is pending; keeps the messages it sends in `device.sent`.
    pub fn run<S: Store>(&mut self, device: &mut Device<S>) {
        let mut rng = super::rng::rng();
        let jid = device.manager.jid().to_owned();
        while let Some(stanza) = device.manager.poll_transmit().unwrap() {
            if stanza.name() != "iq" {
                device.sent.push_back(stanza);
                continue;
            }
            let answer = self.pep.answer(&jid, &stanza);
            let handled = device
                .manager
                .handle_stanza(&answer, &mut rng, self.now)
                .unwrap();
            assert_eq!(handled, Handled::Response);
        }
        assert_eq!(device.manager.pending_requests(), 0);
    }

    /// Delivers the PEP notifications so far to `device`.
    pub fn notify<S: Store>(&mut self, device: &mut Device<S>) {
        let mut rng = super::rng::rng();
        for event in self.pep.events.clone() {
            device
                .manager
                .handle_stanza(&event, &mut rng, self.now)
                .unwrap();
        }
        self.run(device);
    }

    /// Fetches what `device` needs to encrypt to `to` (device lists, bundles).
    pub fn prepare<S: Store>(&mut self, device: &mut Device<S>, to: &str) {
        device.manager.prepare(&[bare(to)], self.now).unwrap();
        self.run(device);
    }

    /// Encrypts `body` from `sender` to `to`, fetching what is missing first.
    pub fn send<S: Store>(&mut self, sender: &mut Device<S>, to: &str, body: &str) -> Element {
        self.encrypt(sender, to, body).stanza
    }

    /// Like [`World::send`], with who got a key and who did not.
    pub fn encrypt<S: Store>(
        &mut self,
        sender: &mut Device<S>,
        to: &str,
        body: &str,
    ) -> omemo::Encrypted {
        let mut rng = super::rng::rng();
        self.prepare(sender, to);
        let mut encrypted = sender
            .manager
            .encrypt(&[bare(to)], body, &mut rng, self.now)
            .unwrap();
        encrypted.stanza = with_from(encrypted.stanza, &sender.full_jid);
        encrypted
    }

    /// Sends `text` from `sender` to the account of `receiver` and asserts that
    /// `receiver` reads it.
    pub fn converse<S: Store, T: Store>(
        &mut self,
        sender: &mut Device<S>,
        receiver: &mut Device<T>,
        text: &str,
    ) {
        let to = receiver.manager.jid().to_owned();
        let stanza = self.send(sender, &to, text);
        let received = self.receive(receiver, &stanza).unwrap();
        assert_eq!(received.body.as_deref(), Some(text));
    }

    pub fn receive<S: Store>(
        &mut self,
        receiver: &mut Device<S>,
        stanza: &Element,
    ) -> Result<omemo::Decrypted, ManagerError> {
        let mut rng = super::rng::rng();
        let result = receiver.manager.decrypt(stanza, &mut rng, self.now);
        self.run(receiver);
        result
    }
}

/// The versions of the `<encrypted>` elements of a stanza, in order.
pub fn encrypted_versions(stanza: &Element) -> Vec<Version> {
    stanza
        .children()
        .filter(|c| c.name() == "encrypted")
        .filter_map(|c| Version::from_namespace(&c.ns()))
        .collect()
}

pub fn with_from(mut stanza: Element, from: &str) -> Element {
    stanza.set_attr(
        minidom::rxml::Namespace::NONE,
        "from".try_into().unwrap(),
        from.to_owned(),
    );
    stanza
}

pub fn body(result: Result<omemo::Decrypted, ManagerError>) -> String {
    result.unwrap().body.unwrap()
}

/// A message archive (XEP-0313) of one account, as the server keeps it: what arrived,
/// in order, each with an archive id and the time it arrived. It answers the manager's
/// queries page by page (`start` and `after` as XEP-0313 and XEP-0059 say; an unknown
/// `after` is `item-not-found`).
#[derive(Default)]
pub struct Archive {
    /// Archived messages, oldest first, with their archive ids and times.
    pub messages: Vec<(String, u64, Element)>,
    /// Results per page at most, below the query's own `max` (0: the query's).
    pub page_size: usize,
    /// The archive's JID when it is a room's (its results and answers come from it);
    /// `None` for the own account's.
    pub room: Option<String>,
}

impl Archive {
    /// Archives `message` (with its `from`), arrived at `now`, under the next id; returns
    /// the message as the server hands it out live, with the archive's `<stanza-id>`.
    pub fn keep(&mut self, message: &Element, now: u64, owner: &str) -> Element {
        let id = format!("A{}", self.messages.len() + 1);
        self.messages.push((id.clone(), now, message.clone()));
        let mut live = message.clone();
        live.append_child(
            format!("<stanza-id xmlns='urn:xmpp:sid:0' by='{owner}' id='{id}'/>")
                .parse()
                .unwrap(),
        );
        live
    }

    /// The answer to a MAM query: one result message per archived message of the page,
    /// then the IQ result with the `<fin>`.
    pub fn answer(&self, query: &Element) -> Vec<Element> {
        const MAM: &str = "urn:xmpp:mam:2";
        const RSM: &str = "http://jabber.org/protocol/rsm";
        let id = query.attr("id").unwrap();
        let inner = query.get_child("query", MAM).unwrap();
        let query_id = inner.attr("queryid").unwrap_or_default();
        let set = inner.get_child("set", RSM).unwrap();
        let max: usize = set.get_child("max", RSM).unwrap().text().parse().unwrap();
        let max = if self.page_size == 0 {
            max
        } else {
            max.min(self.page_size)
        };
        let start: u64 = inner
            .get_child("x", "jabber:x:data")
            .and_then(|form| {
                form.children()
                    .find(|f| f.attr("var") == Some("start"))
                    .and_then(|f| f.children().next())
                    .map(Element::text)
            })
            .map(|stamp| {
                chrono::DateTime::parse_from_rfc3339(&stamp)
                    .unwrap()
                    .timestamp() as u64
            })
            .unwrap_or(0);
        let from_start: Vec<&(String, u64, Element)> = self
            .messages
            .iter()
            .filter(|(_, at, _)| *at >= start)
            .collect();
        let first = match set.get_child("after", RSM) {
            Some(after) => {
                let after = after.text();
                match from_start.iter().position(|(id, _, _)| *id == after) {
                    Some(index) => index + 1,
                    None => {
                        let mut refusal =
                            error(id, self.room.as_deref().unwrap_or(""), "item-not-found");
                        if self.room.is_none() {
                            refusal
                                .attrs_mut()
                                .retain(|_, name, _| name.as_str() != "from");
                        }
                        return vec![refusal];
                    }
                }
            }
            None => 0,
        };
        let page = &from_start[first..(first + max).min(from_start.len())];
        let mut answer: Vec<Element> = page
            .iter()
            .map(|(archive_id, _, message)| {
                let mut forwarded: Element = "<forwarded xmlns='urn:xmpp:forward:0'>\
                    <delay xmlns='urn:xmpp:delay' stamp='2023-11-14T22:13:20Z'/></forwarded>"
                    .parse()
                    .unwrap();
                forwarded.append_child(message.clone());
                let mut result: Element =
                    format!("<result xmlns='{MAM}' queryid='{query_id}' id='{archive_id}'/>")
                        .parse()
                        .unwrap();
                result.append_child(forwarded);
                let from = self
                    .room
                    .as_ref()
                    .map(|room| format!(" from='{room}'"))
                    .unwrap_or_default();
                let mut wrapper: Element = format!("<message xmlns='jabber:client'{from}/>")
                    .parse()
                    .unwrap();
                wrapper.append_child(result);
                wrapper
            })
            .collect();
        let complete = first + page.len() == from_start.len();
        let last = page
            .last()
            .map(|(id, _, _)| format!("<last>{id}</last>"))
            .unwrap_or_default();
        let from = self
            .room
            .as_ref()
            .map(|room| format!(" from='{room}'"))
            .unwrap_or_default();
        answer.push(
            format!(
                "<iq xmlns='jabber:client' type='result' id='{id}'{from}>\
                   <fin xmlns='{MAM}' complete='{complete}'><set xmlns='{RSM}'>{last}</set></fin></iq>"
            )
            .parse()
            .unwrap(),
        );
        answer
    }
}
