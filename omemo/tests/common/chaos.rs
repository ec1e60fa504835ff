//! A network of three devices for the stateful tests (`tests/chaos.rs`, and the fuzz
//! target `manager` in `fuzz/`): two speak both versions, one legacy only; they talk
//! through the in-process PEP router and a network that drops, duplicates, reorders and
//! tampers messages, while devices restart from their stores. Delivering checks that a
//! message that fails to decrypt commits nothing; [`Net::check_fair_delivery`] that every
//! device reads what every other sends once the network is fair again.

use minidom::Element;
use omemo::{Handled, ManagerConfig, Version, Versions};

use super::pep::{Device, World, bare, with_from};
use super::stores::FlakyStore;

pub const JIDS: [&str; 3] = ["alice@example.org", "bob@example.org", "carol@example.org"];

#[derive(Clone, Debug)]
pub enum Action {
    Send { from: usize, to: usize },
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Tamper { message: usize, at: usize },
    Restart(usize),
}

/// A stanza on its way to the device with index `to`.
struct InFlight {
    to: usize,
    stanza: Element,
}

pub struct Net {
    world: World,
    devices: Vec<Device<FlakyStore>>,
    flight: Vec<InFlight>,
    sent: usize,
    /// Every stanza delivered, in order, as XML.
    pub transcript: Vec<String>,
}

fn config(index: usize) -> ManagerConfig {
    ManagerConfig {
        versions: if index == 2 {
            Versions::only(Version::Legacy)
        } else {
            Versions::BOTH
        },
        ..ManagerConfig::default()
    }
}

impl Net {
    pub fn new() -> Self {
        let mut world = World::new();
        let devices = (0..3)
            .map(|i| world.device_with(JIDS[i], "r", FlakyStore::default(), config(i)))
            .collect();
        Self {
            world,
            devices,
            flight: Vec::new(),
            sent: 0,
            transcript: Vec::new(),
        }
    }

    /// Moves what device `from` wants sent into the network (to the bare JID's device).
    fn collect(&mut self, from: usize) {
        while let Some(stanza) = self.devices[from].next_message() {
            if let Some(to) = stanza
                .attr("to")
                .and_then(|to| JIDS.iter().position(|j| *j == to))
            {
                self.flight.push(InFlight { to, stanza });
            }
        }
    }

    fn send(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        self.sent += 1;
        let text = format!("m{}", self.sent);
        let device = &mut self.devices[from];
        self.world.prepare(device, JIDS[to]);
        let mut rng = super::rng::rng();
        // No device may be reachable yet (a bundle was tampered away): that is fine.
        if let Ok(encrypted) =
            device
                .manager
                .encrypt(&[bare(JIDS[to])], &text, &mut rng, self.world.now)
        {
            let stanza = with_from(encrypted.stanza, &device.full_jid);
            self.flight.push(InFlight { to, stanza });
        }
        self.collect(from);
    }

    /// Delivers `stanza` to device `to`; a failure must commit nothing. Returns the body.
    fn deliver(&mut self, to: usize, stanza: &Element) -> Option<String> {
        self.transcript.push(String::from(stanza));
        let device = &mut self.devices[to];
        let before = device.manager.store().commits;
        let mut rng = super::rng::rng();
        let handled = device
            .manager
            .handle_stanza(stanza, &mut rng, self.world.now)
            .unwrap();
        let body = match handled {
            Handled::Message { message, .. } => message.body,
            Handled::Undecryptable { error, .. } => {
                assert_eq!(
                    device.manager.store().commits,
                    before,
                    "a failed decrypt committed: {error}"
                );
                None
            }
            _ => None,
        };
        // Requests the message caused (list fetches, a rebuild) are answered.
        self.world.run(device);
        self.collect(to);
        body
    }

    pub fn apply(&mut self, action: &Action) {
        let pick = |n: usize, len: usize| (len > 0).then(|| n % len);
        match *action {
            Action::Send { from, to } => self.send(from, to),
            Action::Deliver(n) => {
                if let Some(i) = pick(n, self.flight.len()) {
                    let InFlight { to, stanza } = self.flight.remove(i);
                    self.deliver(to, &stanza);
                }
            }
            Action::Duplicate(n) => {
                if let Some(i) = pick(n, self.flight.len()) {
                    let (to, stanza) = (self.flight[i].to, self.flight[i].stanza.clone());
                    self.deliver(to, &stanza);
                }
            }
            Action::Drop(n) => {
                if let Some(i) = pick(n, self.flight.len()) {
                    self.flight.remove(i);
                }
            }
            Action::Tamper { message, at } => {
                if let Some(i) = pick(message, self.flight.len()) {
                    let (to, stanza) = (self.flight[i].to, tamper(&self.flight[i].stanza, at));
                    self.deliver(to, &stanza);
                }
            }
            Action::Restart(i) => {
                let store = self.devices.remove(i).manager.into_store().unwrap();
                let device = self.world.device_with(JIDS[i], "r", store, config(i));
                self.devices.insert(i, device);
            }
        }
    }

    /// Delivers everything in flight, in order, until nothing is left.
    pub fn settle(&mut self) {
        for _ in 0..20 {
            if self.flight.is_empty() {
                return;
            }
            for InFlight { to, stanza } in std::mem::take(&mut self.flight) {
                self.deliver(to, &stanza);
            }
        }
    }
    /// The network is fair again: what was in flight arrives, sessions that broke heal
    /// (an hour later, past the rebuild rate limit), and then every device must read what
    /// every other sends (within three attempts). Names the first pair that cannot.
    pub fn check_fair_delivery(&mut self) -> Result<(), String> {
        self.settle();
        self.world.now += 2 * 3600;
        for (from, from_jid) in JIDS.iter().enumerate() {
            for (to, to_jid) in JIDS.iter().enumerate() {
                if from == to {
                    continue;
                }
                let mut read = false;
                for _attempt in 0..3 {
                    self.send(from, to);
                    let pending = std::mem::take(&mut self.flight);
                    let expected = format!("m{}", self.sent);
                    for InFlight { to: target, stanza } in pending {
                        if self.deliver(target, &stanza).as_deref() == Some(expected.as_str())
                            && target == to
                        {
                            read = true;
                        }
                    }
                    self.settle();
                    if read {
                        break;
                    }
                }
                if !read {
                    return Err(format!("{from_jid} could not reach {to_jid}"));
                }
            }
        }
        Ok(())
    }
}

/// `stanza` with one base64 character of its `<encrypted>` content changed.
fn tamper(stanza: &Element, at: usize) -> Element {
    let mut copy = stanza.clone();
    let Some(encrypted) = copy.children_mut().find(|c| c.name() == "encrypted") else {
        return copy;
    };
    let mut texts: Vec<&mut Element> = Vec::new();
    fn leaves<'a>(element: &'a mut Element, out: &mut Vec<&'a mut Element>) {
        if element.children().next().is_none() && !element.text().is_empty() {
            out.push(element);
        } else {
            for child in element.children_mut() {
                leaves(child, out);
            }
        }
    }
    leaves(encrypted, &mut texts);
    if texts.is_empty() {
        return copy;
    }
    let index = at % texts.len();
    let leaf = &mut texts[index];
    let text = leaf.text();
    let position = (at / 7) % text.len().max(1);
    let mut chars: Vec<char> = text.chars().collect();
    chars[position] = if chars[position] == 'A' { 'B' } else { 'A' };
    let _ = leaf.take_nodes();
    leaf.append_text(chars.into_iter().collect::<String>());
    copy
}
