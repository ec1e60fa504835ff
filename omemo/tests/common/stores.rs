//! Store wrappers for the tests.

use omemo::{MemoryStore, Store, Version};

/// A store that counts commits and can be made to fail them.
#[derive(Default)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    pub commits: usize,
    pub fail: bool,
}

impl Store for FlakyStore {
    fn load_account(&self) -> Result<Option<omemo::AccountRecord>, omemo::StoreError> {
        self.inner.load_account()
    }
    fn load_signed_pre_keys(&self) -> Result<Vec<omemo::SignedPreKeyRecord>, omemo::StoreError> {
        self.inner.load_signed_pre_keys()
    }
    fn load_pre_keys(&self) -> Result<Vec<omemo::PreKeyRecord>, omemo::StoreError> {
        self.inner.load_pre_keys()
    }
    fn load_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, omemo::StoreError> {
        self.inner.load_session(jid, device_id, version)
    }
    fn load_previous_session(
        &self,
        jid: &str,
        device_id: u32,
        version: Version,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, omemo::StoreError> {
        self.inner.load_previous_session(jid, device_id, version)
    }
    fn load_devices(&self, jid: &str) -> Result<Vec<omemo::DeviceRecord>, omemo::StoreError> {
        self.inner.load_devices(jid)
    }
    fn commit(&mut self, batch: omemo::Batch) -> Result<(), omemo::StoreError> {
        if self.fail {
            return Err(omemo::StoreError::Backend("disk full".into()));
        }
        self.commits += 1;
        self.inner.commit(batch)
    }
}
