//! IQ requests the manager asks the caller to send, and the routing of their responses.

use std::collections::{HashMap, VecDeque};

use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use super::events::Event;
use crate::consts::REQUEST_TIMEOUT_SECS;
use crate::error::ManagerError;
use crate::stanza::omemo2::{self, ListedDevice};
use crate::stanza::{self, StanzaError, legacy};
use crate::store::Store;
use crate::version::Version;

/// An IQ stanza to send, with its id.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Request {
    pub(super) id: String,
    pub(super) stanza: Element,
}

/// What a publish put on the own PEP service, to publish again after configuring the
/// node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Publication {
    /// The device list of a version (legacy lists carry ids only).
    DeviceList(Version, Vec<ListedDevice>),
    /// This device's bundle of a version.
    Bundle(Version),
}

impl Publication {
    fn version(&self) -> Version {
        match self {
            Self::DeviceList(version, _) | Self::Bundle(version) => *version,
        }
    }

    /// Whether `other` replaces this publication (same node and item).
    fn same_item(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.version() == other.version()
    }

    /// The publish-options (and node configuration) of attempt `attempt`, `None` when
    /// there are no more: the open access model for every node, and for the shared
    /// OMEMO 2 bundles node a `max_items` that falls back from `max` to smaller numbers
    /// for servers that refuse it.
    fn options(&self, attempt: usize) -> Option<Vec<(&'static str, &'static str)>> {
        match self {
            Self::Bundle(Version::Omemo2) => omemo2::BUNDLES_NODE_MAX_ITEMS
                .get(attempt)
                .map(|max_items| omemo2::bundles_node_options(max_items).to_vec()),
            _ => (attempt == 0).then(|| stanza::OPEN_ACCESS_OPTIONS.to_vec()),
        }
    }
}

/// What a sent request was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    FetchDeviceList {
        jid: String,
        version: Version,
    },
    FetchBundle {
        jid: String,
        device_id: u32,
        version: Version,
        /// Build a new session even if one exists (healing), and announce it with an
        /// empty key exchange.
        rebuild: bool,
    },
    /// A publish with the options of attempt `options` ([`Publication::options`]), or
    /// without options.
    Publish {
        publication: Publication,
        options: Option<usize>,
    },
    Configure {
        publication: Publication,
        attempt: usize,
    },
    /// The retraction of a removed device's bundle.
    Retract,
    /// A page of an archive (the own account's, or a room's), for a catch-up.
    ArchivePage {
        archive: String,
    },
    /// A joined room's disco#info.
    RoomFeatures {
        room: String,
    },
    /// One of a joined room's affiliation lists.
    RoomList {
        room: String,
        affiliation: crate::stanza::muc::Affiliation,
    },
}

/// Bundle fetches sent and not answered at most. The answers (a bundle with 100 prekeys
/// is about 10 kB of XML, parsed into a tree) wait in the client's queue until the
/// manager reads them: a first message to an account with 100 devices would otherwise
/// hold 100 of them at once (BENCHMARKS.md, "1 000 sessions in use").
pub(super) const MAX_BUNDLE_FETCHES_IN_FLIGHT: usize = 8;

/// IQ errors that mean the bundle is not there (rather than not reachable right now).
fn is_permanent(condition: &str) -> bool {
    matches!(
        condition,
        "item-not-found" | "forbidden" | "not-authorized" | "presence-subscription-required"
    )
}

/// Whether a fetch was refused because the node's owner shows it to subscribed contacts
/// only (Prosody's default `presence` access model answers `forbidden`; XEP-0060 §6.5.3
/// names `not-authorized` with `presence-subscription-required`).
fn hidden_from_strangers<T>(result: &Result<T, StanzaError>) -> bool {
    matches!(
        result,
        Err(StanzaError::IqError { condition, .. })
            if matches!(condition.as_str(), "forbidden" | "not-authorized" | "presence-subscription-required")
    )
}

/// Pubsub errors after which the node is configured to the open access model and the
/// item published again (XEP-0060 §7.1.5 precondition, and servers that refuse
/// publish-options outright).
fn needs_configuration(condition: &str) -> bool {
    matches!(
        condition,
        "precondition-not-met"
            | "conflict"
            | "not-acceptable"
            | "bad-request"
            | "feature-not-implemented"
    )
}

/// The IQ requests of one manager: those queued for the caller to send, and every one
/// not answered yet (queued or sent) with what it is for and, once handed out, when.
/// Only requests handed out expire: one still queued (the stream is not up yet) waits.
#[derive(Default)]
pub(super) struct Requests {
    queue: VecDeque<Request>,
    pending: HashMap<String, (Pending, Option<u64>)>,
    next: u64,
    /// Random per-instance prefix of request ids, so two managers never collide.
    prefix: u32,
}

impl Requests {
    pub(super) fn new(prefix: u32) -> Self {
        Self {
            prefix,
            ..Self::default()
        }
    }

    /// Queues the request `build` makes from its id, for `pending`.
    pub(super) fn push(&mut self, pending: Pending, build: impl FnOnce(&str) -> Element) {
        self.next += 1;
        let id = format!("omemo-{:08x}-{}", self.prefix, self.next);
        let stanza = build(&id);
        self.pending.insert(id.clone(), (pending, None));
        self.queue.push_back(Request { id, stanza });
    }

    /// The next request to send, stamped as sent at `now`. Bundle fetches wait while
    /// [`MAX_BUNDLE_FETCHES_IN_FLIGHT`] are unanswered; other requests pass them.
    pub(super) fn poll(&mut self, now: u64) -> Option<Request> {
        let full = self.bundle_fetches_in_flight() >= MAX_BUNDLE_FETCHES_IN_FLIGHT;
        let index = self
            .queue
            .iter()
            .position(|r| !full || !self.is_bundle_fetch(&r.id))?;
        let request = self.queue.remove(index)?;
        if let Some((_, sent)) = self.pending.get_mut(&request.id) {
            *sent = Some(now);
        }
        Some(request)
    }

    fn is_bundle_fetch(&self, id: &str) -> bool {
        matches!(self.pending.get(id), Some((Pending::FetchBundle { .. }, _)))
    }

    fn bundle_fetches_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|(pending, sent)| {
                sent.is_some() && matches!(pending, Pending::FetchBundle { .. })
            })
            .count()
    }

    /// Whether a request waits to be sent.
    pub(super) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Requests not answered yet.
    pub(super) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Forgets every request (the connection was lost).
    pub(super) fn clear(&mut self) {
        self.pending.clear();
        self.queue.clear();
    }

    /// Forgets requests sent and unanswered for longer than [`REQUEST_TIMEOUT_SECS`]
    /// (the answer was lost), so that what they asked for is asked again.
    pub(super) fn expire(&mut self, now: u64) {
        let before = self.pending.len();
        self.pending.retain(|_, (_, sent)| {
            sent.is_none_or(|at| now.saturating_sub(at) < REQUEST_TIMEOUT_SECS)
        });
        if self.pending.len() < before {
            tracing::info!(
                expired = before - self.pending.len(),
                "IQ requests without an answer forgotten"
            );
        }
    }

    pub(super) fn is_pending(&self, wanted: &Pending) -> bool {
        self.pending.values().any(|(p, _)| p == wanted)
    }

    /// Whether a device list or bundle of `jid` is being fetched.
    pub(super) fn fetching(&self, jid: &str) -> bool {
        self.pending.values().any(|(p, _)| match p {
            Pending::FetchDeviceList { jid: j, .. } | Pending::FetchBundle { jid: j, .. } => {
                j == jid
            }
            _ => false,
        })
    }

    /// When the oldest request sent and unanswered expires.
    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.pending
            .values()
            .filter_map(|(_, sent)| *sent)
            .map(|at| at + REQUEST_TIMEOUT_SECS)
            .min()
    }

    /// What the request `id` is for, if it is one of ours and unanswered.
    pub(super) fn get(&self, id: &str) -> Option<&Pending> {
        self.pending.get(id).map(|(pending, _)| pending)
    }

    /// Takes the request `id` as answered.
    pub(super) fn answered(&mut self, id: &str) -> Option<Pending> {
        self.pending.remove(id).map(|(pending, _)| pending)
    }

    /// Brings a queued, unsent publication of the same item as `publication` up to date
    /// (`build` gets its id and options attempt) instead of queueing another one; gives
    /// `publication` back when there is none.
    fn update_queued(
        &mut self,
        publication: Publication,
        build: impl FnOnce(&Publication, &str, Option<usize>) -> Element,
    ) -> Result<(), Publication> {
        let pending = &self.pending;
        let queued = self
            .queue
            .iter_mut()
            .find_map(|r| match pending.get(&r.id) {
                Some((
                    Pending::Publish {
                        publication: p,
                        options,
                    },
                    _,
                )) if p.same_item(&publication) => Some((r, *options)),
                _ => None,
            });
        let Some((request, options)) = queued else {
            return Err(publication);
        };
        request.stanza = build(&publication, &request.id, options);
        self.pending.insert(
            request.id.clone(),
            (
                Pending::Publish {
                    publication,
                    options,
                },
                None,
            ),
        );
        Ok(())
    }
}

impl<S: Store> Manager<S> {
    pub(super) fn queue(&mut self, pending: Pending, build: impl FnOnce(&str) -> Element) {
        self.requests.push(pending, build);
    }

    pub(super) fn expire_requests(&mut self, now: u64) {
        self.requests.expire(now);
    }

    pub(super) fn is_pending(&self, wanted: &Pending) -> bool {
        self.requests.is_pending(wanted)
    }

    /// Handles an IQ response (`type='result'` or `type='error'`). Returns `false` when
    /// the IQ is not the answer to one of this manager's requests.
    pub(super) fn handle_iq(
        &mut self,
        iq: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<bool, ManagerError> {
        self.clock = self.clock.max(now);
        let Some(id) = iq.attr("id") else {
            return Ok(false);
        };
        let Some(pending) = self.requests.get(id) else {
            return Ok(false);
        };
        // Only the entity asked may answer: the contact's account for its nodes, the own
        // account (or the server on its behalf, without `from`) for the own PEP nodes.
        let expected = match pending {
            Pending::FetchDeviceList { jid, .. } | Pending::FetchBundle { jid, .. } => jid.as_str(),
            Pending::RoomFeatures { room } | Pending::RoomList { room, .. } => room.as_str(),
            Pending::Publish { .. } | Pending::Configure { .. } | Pending::Retract => {
                self.own.jid.as_str()
            }
            Pending::ArchivePage { archive } => archive.as_str(),
        };
        // A room answers from its bare JID: an occupant (room/nick) is not the room.
        let bare_only = matches!(
            pending,
            Pending::RoomFeatures { .. } | Pending::RoomList { .. } | Pending::ArchivePage { .. }
        );
        let from_ok = match iq.attr("from") {
            Some(from) => jid::Jid::new(from).is_ok_and(|from| {
                from.to_bare().as_str() == expected && !(bare_only && from.resource().is_some())
            }),
            None => expected == self.own.jid,
        };
        if !from_ok || !matches!(iq.attr("type"), Some("result" | "error")) {
            tracing::warn!(
                id,
                "IQ response from an unexpected sender or of a wrong type; ignored"
            );
            return Ok(false);
        }
        let Some(pending) = self.requests.answered(id) else {
            return Ok(false);
        };
        match pending {
            Pending::ArchivePage { archive } => {
                self.archive_page_answered(&archive, iq, rng, now)?;
                return Ok(true);
            }
            Pending::RoomFeatures { room } => {
                self.room_features_answered(&room, iq, now);
                return Ok(true);
            }
            Pending::RoomList { room, affiliation } => {
                self.room_list_answered(&room, affiliation, iq, now);
                return Ok(true);
            }
            _ => {}
        }
        let result = stanza::parse_items_result(iq);
        match &pending {
            Pending::FetchDeviceList { jid, .. } => {
                self.directory
                    .note_hidden(jid, None, hidden_from_strangers(&result));
            }
            Pending::FetchBundle { jid, device_id, .. } => {
                self.directory
                    .note_hidden(jid, Some(*device_id), hidden_from_strangers(&result));
            }
            _ => {}
        }
        match pending {
            Pending::FetchDeviceList { jid, version } => match result {
                Ok(payloads) => self.device_list_fetched(&jid, version, &payloads, now)?,
                Err(StanzaError::IqError { condition, .. }) if condition == "item-not-found" => {
                    self.device_list_fetched(&jid, version, &[], now)?
                }
                Err(error) => {
                    tracing::warn!(%jid, %version, %error, "device list fetch failed");
                    self.device_list_failed(&jid, version, now)?;
                }
            },
            Pending::FetchBundle {
                jid,
                device_id,
                version,
                rebuild,
            } => match result {
                // A temporary failure (wait, timeout, server trouble) is retried on the
                // next `prepare`; a missing or broken bundle makes the device inactive.
                Err(StanzaError::IqError { condition, .. }) if !is_permanent(&condition) => {
                    tracing::info!(%jid, device_id, %version, %condition, "bundle fetch failed; will retry");
                }
                result => {
                    let bundle = result.and_then(|payloads| match payloads.first() {
                        Some(payload) => match version {
                            Version::Legacy => legacy::parse_bundle(payload),
                            Version::Omemo2 => omemo2::parse_bundle(payload),
                        },
                        None => Err(StanzaError::MissingElement("bundle")),
                    });
                    let fetched = super::bundles::Fetched {
                        jid: &jid,
                        device_id,
                        version,
                        rebuild,
                    };
                    self.bundle_fetched(fetched, bundle, rng, now)?;
                }
            },
            Pending::Publish {
                publication,
                options,
            } => {
                if iq.attr("type") == Some("error") {
                    let condition = stanza::iq_error_condition(iq).unwrap_or_default();
                    match options {
                        Some(attempt) if needs_configuration(&condition) => {
                            tracing::info!(%condition, "publish refused, configuring the node");
                            self.configure(publication, attempt);
                        }
                        _ => {
                            tracing::warn!(%condition, "publish failed");
                            let (node, _) = self.item_of(&publication);
                            self.events
                                .push_back(Event::PublicationFailed { node, condition });
                        }
                    }
                }
            }
            Pending::Retract => {
                if iq.attr("type") == Some("error") {
                    let condition = stanza::iq_error_condition(iq).unwrap_or_default();
                    tracing::info!(%condition, "bundle retraction failed");
                }
            }
            Pending::Configure {
                publication,
                attempt,
            } => {
                if iq.attr("type") == Some("error") {
                    let condition = stanza::iq_error_condition(iq).unwrap_or_default();
                    if publication.options(attempt + 1).is_some() {
                        // The server refused these settings: try the next ones.
                        tracing::info!(%condition, "node configuration refused; trying other settings");
                        self.publish(publication, Some(attempt + 1));
                    } else {
                        tracing::warn!(%condition, "node configuration failed; publishing without options");
                        self.publish(publication, None);
                    }
                } else {
                    self.publish(publication, None);
                }
            }
            // Answered above.
            Pending::ArchivePage { .. }
            | Pending::RoomFeatures { .. }
            | Pending::RoomList { .. } => {}
        }
        Ok(true)
    }

    /// The node and item id of a publication.
    fn item_of(&self, publication: &Publication) -> (String, String) {
        let device_id = self.own.device_id;
        match publication {
            Publication::DeviceList(Version::Legacy, _) => {
                (legacy::DEVICE_LIST_NODE.to_owned(), "current".to_owned())
            }
            Publication::DeviceList(Version::Omemo2, _) => {
                (omemo2::DEVICE_LIST_NODE.to_owned(), "current".to_owned())
            }
            Publication::Bundle(Version::Legacy) => {
                (legacy::bundle_node(device_id), "current".to_owned())
            }
            Publication::Bundle(Version::Omemo2) => (
                omemo2::BUNDLES_NODE.to_owned(),
                omemo2::bundle_item_id(device_id),
            ),
        }
    }

    /// Queues the retraction of the bundle of `device_id` (one of the own devices) in
    /// `version`: its item in the shared OMEMO 2 node, or the item of its legacy node.
    pub(super) fn retract_bundle(&mut self, version: Version, device_id: u32) {
        let (node, item) = match version {
            Version::Legacy => (legacy::bundle_node(device_id), "current".to_owned()),
            Version::Omemo2 => (
                omemo2::BUNDLES_NODE.to_owned(),
                omemo2::bundle_item_id(device_id),
            ),
        };
        self.queue(Pending::Retract, |id| stanza::retract_iq(id, &node, &item));
    }

    /// Queues the configuration of the node of `publication` with the options of
    /// `attempt`.
    fn configure(&mut self, publication: Publication, attempt: usize) {
        let (node, _) = self.item_of(&publication);
        let options = publication.options(attempt).unwrap_or_default();
        self.queue(
            Pending::Configure {
                publication,
                attempt,
            },
            |id| stanza::configure_node_iq(id, &node, &options),
        );
    }

    /// Queues the publication, with the publish-options of attempt `options` or without
    /// any.
    pub(super) fn publish(&mut self, publication: Publication, options: Option<usize>) {
        let (node, item_id) = self.item_of(&publication);
        let version = publication.version();
        let payload = match &publication {
            Publication::DeviceList(Version::Legacy, devices) => {
                let ids: Vec<u32> = devices.iter().map(|d| d.id).collect();
                legacy::device_list_element(&ids)
            }
            Publication::DeviceList(Version::Omemo2, devices) => {
                omemo2::device_list_element(devices)
            }
            Publication::Bundle(version) => {
                let element = match self.own.bundle(*version) {
                    Some(bundle) => match version {
                        Version::Legacy => legacy::bundle_element(&bundle),
                        Version::Omemo2 => omemo2::bundle_element(&bundle),
                    },
                    None => return,
                };
                match element {
                    Ok(element) => element,
                    // Not reached: each bundle's signed prekey is of its version.
                    Err(error) => {
                        tracing::error!(%version, %error, "own bundle not published");
                        return;
                    }
                }
            }
        };
        let stanza_for = |publication: &Publication, id: &str, options: Option<usize>| {
            let fields = options
                .and_then(|attempt| publication.options(attempt))
                .unwrap_or_default();
            stanza::publish_iq_with_options(id, &node, &item_id, payload.clone(), &fields)
        };
        tracing::debug!(%version, node, "publication queued");
        // A publication of the same item that is queued and not sent yet is brought up
        // to date instead of queueing another one (a burst of new senders refills the
        // bundle many times).
        let Err(publication) = self.requests.update_queued(publication, stanza_for) else {
            return;
        };
        let pending = Pending::Publish {
            publication: publication.clone(),
            options,
        };
        self.queue(pending, |id| stanza_for(&publication, id, options));
    }
}
