//! Receiving chains and skipped message keys, both bounded.

use std::collections::VecDeque;

use super::chain::{ChainKey, MessageKey};
use crate::consts::MAX_RECEIVING_CHAINS;
use crate::keys::PublicKey;

/// The receiving chain for one ratchet key of the other side.
#[derive(Clone)]
pub(crate) struct ReceivingChain {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) chain: ChainKey,
}

/// A message key kept for a message that has not arrived yet.
#[derive(Clone)]
pub(crate) struct SkippedKey {
    pub(crate) ratchet_key: PublicKey,
    pub(crate) index: u32,
    pub(crate) key: MessageKey,
}

/// Receiving chains (newest first, at most [`MAX_RECEIVING_CHAINS`]) and skipped keys
/// (oldest first, at most `max_skipped`, the oldest dropped first).
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) chains: VecDeque<ReceivingChain>,
    pub(crate) skipped: VecDeque<SkippedKey>,
}

impl Receiver {
    pub(crate) fn chain_position(&self, ratchet_key: &PublicKey) -> Option<usize> {
        self.chains
            .iter()
            .position(|c| &c.ratchet_key == ratchet_key)
    }

    pub(crate) fn skipped_position(&self, ratchet_key: &PublicKey, index: u32) -> Option<usize> {
        self.skipped
            .iter()
            .position(|k| k.index == index && &k.ratchet_key == ratchet_key)
    }

    /// Adds a new newest chain, dropping the oldest beyond the limit.
    pub(crate) fn push_chain(&mut self, chain: ReceivingChain) {
        self.chains.push_front(chain);
        self.chains.truncate(MAX_RECEIVING_CHAINS);
    }

    /// Stores skipped keys, dropping the oldest beyond `max_skipped`.
    pub(crate) fn store_skipped(&mut self, keys: Vec<SkippedKey>, max_skipped: usize) {
        self.skipped.extend(keys);
        while self.skipped.len() > max_skipped {
            self.skipped.pop_front();
        }
    }
}
