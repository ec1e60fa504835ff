//! Test support: a random number generator that plays back fixed bytes.

use std::collections::VecDeque;
use std::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};

/// Yields queued byte strings, one per `fill_bytes` call, and panics on a draw of a
/// different size or when the queue is empty, so a test also checks the order of draws.
pub(crate) struct QueueRng(VecDeque<Vec<u8>>);

impl QueueRng {
    pub(crate) fn new<I: IntoIterator<Item = Vec<u8>>>(draws: I) -> Self {
        Self(draws.into_iter().collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryRng for QueueRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unimplemented!("QueueRng only fills byte strings")
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unimplemented!("QueueRng only fills byte strings")
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let next = self.0.pop_front().expect("QueueRng: no more queued draws");
        assert_eq!(next.len(), dst.len(), "QueueRng: draw of unexpected size");
        dst.copy_from_slice(&next);
        Ok(())
    }
}

impl TryCryptoRng for QueueRng {}
