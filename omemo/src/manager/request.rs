//! IQ requests the manager asks the caller to send, and the routing of their responses.

use std::collections::{HashMap, VecDeque};

use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use crate::consts::REQUEST_TIMEOUT_SECS;
use crate::error::ManagerError;
use crate::stanza::{self, StanzaError};
use crate::store::Store;

/// An IQ stanza to send. Its response goes to [`Manager::handle_iq`].
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The IQ id, also set on `stanza`.
    pub id: String,
    /// The `<iq>` element.
    pub stanza: Element,
}

/// The node a publish went to, to publish again after configuring it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Publication {
    DeviceList(Vec<u32>),
    Bundle,
}

/// What a sent request was for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    FetchDeviceList {
        jid: String,
    },
    FetchBundle {
        jid: String,
        device_id: u32,
    },
    Publish {
        publication: Publication,
        with_options: bool,
    },
    Configure {
        publication: Publication,
    },
}

/// IQ errors that mean the bundle is not there (rather than not reachable right now).
fn is_permanent(condition: &str) -> bool {
    matches!(
        condition,
        "item-not-found" | "forbidden" | "not-authorized" | "presence-subscription-required"
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
/// not answered yet (queued or sent) with what it is for and when it was queued.
#[derive(Default)]
pub(super) struct Requests {
    queue: VecDeque<Request>,
    pending: HashMap<String, (Pending, u64)>,
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

    /// Queues the request `build` makes from its id, for `pending`, stamped `now`.
    pub(super) fn push(&mut self, pending: Pending, now: u64, build: impl FnOnce(&str) -> Element) {
        self.next += 1;
        let id = format!("omemo-{:08x}-{}", self.prefix, self.next);
        let stanza = build(&id);
        self.pending.insert(id.clone(), (pending, now));
        self.queue.push_back(Request { id, stanza });
    }

    /// The next request to send.
    pub(super) fn poll(&mut self) -> Option<Request> {
        self.queue.pop_front()
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

    /// Forgets requests unanswered for longer than [`REQUEST_TIMEOUT_SECS`] (the answer
    /// was lost), so that what they asked for is asked again.
    pub(super) fn expire(&mut self, now: u64) {
        let before = self.pending.len();
        self.pending
            .retain(|_, (_, at)| now.saturating_sub(*at) < REQUEST_TIMEOUT_SECS);
        let pending = &self.pending;
        self.queue.retain(|r| pending.contains_key(&r.id));
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

    /// What the request `id` is for, if it is one of ours and unanswered.
    pub(super) fn get(&self, id: &str) -> Option<&Pending> {
        self.pending.get(id).map(|(pending, _)| pending)
    }

    /// Takes the request `id` as answered.
    pub(super) fn answered(&mut self, id: &str) -> Option<Pending> {
        self.pending.remove(id).map(|(pending, _)| pending)
    }

    /// Brings a queued, unsent publication of the same kind as `publication` up to date
    /// (`build` gets its id and whether it carries publish options) instead of queueing
    /// another one; gives `publication` back when there is none.
    fn update_queued(
        &mut self,
        publication: Publication,
        now: u64,
        build: impl FnOnce(&str, bool) -> Element,
    ) -> Result<(), Publication> {
        let pending = &self.pending;
        let queued = self.queue.iter_mut().find(|r| {
            matches!(pending.get(&r.id), Some((Pending::Publish { publication: p, .. }, _))
                if std::mem::discriminant(p) == std::mem::discriminant(&publication))
        });
        let Some(request) = queued else {
            return Err(publication);
        };
        let with_options = matches!(
            pending.get(&request.id),
            Some((
                Pending::Publish {
                    with_options: true,
                    ..
                },
                _
            ))
        );
        request.stanza = build(&request.id, with_options);
        self.pending.insert(
            request.id.clone(),
            (
                Pending::Publish {
                    publication,
                    with_options,
                },
                now,
            ),
        );
        Ok(())
    }
}

impl<S: Store> Manager<S> {
    pub(super) fn queue(&mut self, pending: Pending, build: impl FnOnce(&str) -> Element) {
        self.requests.push(pending, self.clock, build);
    }

    pub(super) fn expire_requests(&mut self, now: u64) {
        self.requests.expire(now);
    }

    pub(super) fn is_pending(&self, wanted: &Pending) -> bool {
        self.requests.is_pending(wanted)
    }

    /// Handles an IQ response (`type='result'` or `type='error'`). Returns `false` when
    /// the IQ is not the answer to one of this manager's requests.
    pub fn handle_iq(
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
            Pending::FetchDeviceList { jid } | Pending::FetchBundle { jid, .. } => jid.as_str(),
            Pending::Publish { .. } | Pending::Configure { .. } => self.own.jid.as_str(),
        };
        let from_ok = match iq.attr("from") {
            Some(from) => jid::Jid::new(from).is_ok_and(|from| from.to_bare().as_str() == expected),
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
        let result = stanza::parse_items_result(iq);
        match pending {
            Pending::FetchDeviceList { jid } => match result {
                Ok(payloads) => self.device_list_fetched(&jid, &payloads, now)?,
                Err(StanzaError::IqError { condition, .. }) if condition == "item-not-found" => {
                    self.device_list_fetched(&jid, &[], now)?
                }
                Err(error) => tracing::warn!(%jid, %error, "device list fetch failed"),
            },
            Pending::FetchBundle { jid, device_id } => match result {
                // A temporary failure (wait, timeout, server trouble) is retried on the
                // next `prepare`; a missing or broken bundle makes the device inactive.
                Err(StanzaError::IqError { condition, .. }) if !is_permanent(&condition) => {
                    tracing::info!(%jid, device_id, %condition, "bundle fetch failed; will retry");
                }
                result => {
                    let bundle = result.and_then(|payloads| match payloads.first() {
                        Some(payload) => stanza::legacy::parse_bundle(payload),
                        None => Err(StanzaError::MissingElement("bundle")),
                    });
                    self.bundle_fetched(&jid, device_id, bundle, rng, now)?;
                }
            },
            Pending::Publish {
                publication,
                with_options,
            } => {
                if iq.attr("type") == Some("error") {
                    let condition = stanza::iq_error_condition(iq).unwrap_or_default();
                    if with_options && needs_configuration(&condition) {
                        tracing::info!(%condition, "publish refused, configuring the node");
                        let node = self.node_of(&publication);
                        self.queue(Pending::Configure { publication }, |id| {
                            stanza::configure_node_iq(id, &node, stanza::OPEN_ACCESS_OPTIONS)
                        });
                    } else {
                        tracing::warn!(%condition, "publish failed");
                    }
                }
            }
            Pending::Configure { publication } => {
                if iq.attr("type") == Some("error") {
                    let condition = stanza::iq_error_condition(iq).unwrap_or_default();
                    tracing::warn!(%condition, "node configuration failed; publishing without options");
                }
                self.publish(publication, false);
            }
        }
        Ok(true)
    }

    fn node_of(&self, publication: &Publication) -> String {
        match publication {
            Publication::DeviceList(_) => stanza::legacy::DEVICE_LIST_NODE.to_owned(),
            Publication::Bundle => stanza::legacy::bundle_node(self.own.device_id),
        }
    }

    pub(super) fn publish(&mut self, publication: Publication, with_options: bool) {
        let node = self.node_of(&publication);
        let payload = match &publication {
            Publication::DeviceList(ids) => stanza::legacy::device_list_element(ids),
            Publication::Bundle => match stanza::legacy::bundle_element(&self.own.bundle()) {
                Ok(element) => element,
                // Not reached: the manager's signed prekeys are all of its one version.
                Err(error) => {
                    tracing::error!(%error, "own bundle not published");
                    return;
                }
            },
        };
        // A publication of the same node that is queued and not sent yet is brought up
        // to date instead of queueing another one (a burst of new senders refills the
        // bundle many times).
        let update = |id: &str, with_options| {
            stanza::publish_iq(id, &node, "current", payload.clone(), with_options)
        };
        let Err(publication) = self.requests.update_queued(publication, self.clock, update) else {
            return;
        };
        self.queue(
            Pending::Publish {
                publication,
                with_options,
            },
            |id| stanza::publish_iq(id, &node, "current", payload, with_options),
        );
    }
}
