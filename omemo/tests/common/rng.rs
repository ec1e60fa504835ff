//! The randomness of the test network: the operating system's, or a seeded generator on
//! this thread when a run must repeat exactly (the fuzz target `manager`, so that a crash
//! it finds replays from its input).

use std::cell::RefCell;
use std::convert::Infallible;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_core::{Rng, TryCryptoRng, TryRng};

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Every later draw of [`rng`] on this thread comes from a generator seeded with `seed`.
pub fn seed(seed: u64) {
    SEEDED.with(|seeded| *seeded.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// The test network's generator: seeded after [`seed`] on this thread, the OS's otherwise.
pub fn rng() -> TestRng {
    TestRng
}

/// See [`rng`].
pub struct TestRng;

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        SEEDED.with(|seeded| match seeded.borrow_mut().as_mut() {
            Some(generator) => generator.fill_bytes(dst),
            None => omemo::os_rng().fill_bytes(dst),
        });
        Ok(())
    }
}

impl TryCryptoRng for TestRng {}
