//! Messages given to `send` that wait for the device lists and bundles they need.

use std::collections::VecDeque;

use jid::BareJid;
use zeroize::Zeroizing;

use super::events::MessageId;

/// A message waiting to be encrypted.
pub(super) struct Queued {
    pub(super) id: MessageId,
    /// The contacts it goes to (empty for a room message).
    pub(super) recipients: Vec<BareJid>,
    /// The room it goes to: its members when it is encrypted.
    pub(super) room: Option<BareJid>,
    pub(super) body: Zeroizing<String>,
    /// When it stops waiting and goes out with what is known, Unix seconds.
    pub(super) deadline: u64,
}

/// The queue of messages, in the order they were given (and are sent).
#[derive(Default)]
pub(super) struct Outbox {
    queue: VecDeque<Queued>,
    next_id: u64,
}

impl Outbox {
    /// Queues a message; returns its handle.
    pub(super) fn push(
        &mut self,
        recipients: Vec<BareJid>,
        room: Option<BareJid>,
        body: &str,
        deadline: u64,
    ) -> MessageId {
        self.next_id += 1;
        let id = MessageId(self.next_id);
        self.queue.push_back(Queued {
            id,
            recipients,
            room,
            body: Zeroizing::new(body.to_owned()),
            deadline,
        });
        id
    }

    /// The first message.
    pub(super) fn front(&self) -> Option<&Queued> {
        self.queue.front()
    }

    /// Takes the first message.
    pub(super) fn pop(&mut self) -> Option<Queued> {
        self.queue.pop_front()
    }

    /// When the first message stops waiting.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.queue.front().map(|q| q.deadline)
    }

    /// The recipients of every message waiting, each once.
    pub(super) fn recipients(&self) -> Vec<BareJid> {
        let mut all: Vec<BareJid> = Vec::new();
        for jid in self.queue.iter().flat_map(|q| &q.recipients) {
            if !all.contains(jid) {
                all.push(jid.clone());
            }
        }
        all
    }

    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}
