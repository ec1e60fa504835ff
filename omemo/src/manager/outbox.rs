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

    /// The messages waiting, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.queue.iter()
    }

    /// Takes the message at `index` of [`Outbox::iter`].
    pub(super) fn take(&mut self, index: usize) -> Option<Queued> {
        self.queue.remove(index)
    }

    /// Drops the messages to `room`; returns their ids.
    pub(super) fn remove_room(&mut self, room: &BareJid) -> Vec<MessageId> {
        let ids = self
            .queue
            .iter()
            .filter(|q| q.room.as_ref() == Some(room))
            .map(|q| q.id)
            .collect();
        self.queue.retain(|q| q.room.as_ref() != Some(room));
        ids
    }

    /// When the first message stops waiting (each waits as long as the one before it).
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.queue.iter().map(|q| q.deadline).min()
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
