//! Store wrappers for the tests.

use omemo::{MemoryStore, Store, Version};

/// A store that counts commits and disk writes and can be made to fail them. It defers
/// commits like `SqliteStore` (a failed sync brings back the state of the last one).
#[derive(Default)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    /// Transactions applied (deferred or not).
    pub commits: usize,
    /// Times the deferred state went to "disk" (a commit, or a sync with work to do).
    pub disk_writes: usize,
    /// Every commit fails.
    pub fail: bool,
    /// Every sync with work to do fails (settable through `Manager::store`).
    pub fail_sync: std::cell::Cell<bool>,
    /// The state at the last sync, while commits are deferred.
    synced: Option<MemoryStore>,
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
    fn load_archive_position(
        &self,
        archive: &str,
    ) -> Result<Option<omemo::ArchivePosition>, omemo::StoreError> {
        self.inner.load_archive_position(archive)
    }
    fn load_room_occupants(&self, room: &str) -> Result<Vec<(String, String)>, omemo::StoreError> {
        self.inner.load_room_occupants(room)
    }
    fn commit(&mut self, batch: omemo::Batch) -> Result<(), omemo::StoreError> {
        self.commit_deferred(batch)?;
        self.sync()
    }
    fn commit_deferred(&mut self, batch: omemo::Batch) -> Result<(), omemo::StoreError> {
        if self.fail {
            return Err(omemo::StoreError::Backend("disk full".into()));
        }
        self.commits += 1;
        if self.synced.is_none() {
            self.synced = Some(self.inner.clone());
        }
        self.inner.commit(batch)
    }
    fn sync(&mut self) -> Result<(), omemo::StoreError> {
        let Some(synced) = self.synced.take() else {
            return Ok(());
        };
        if self.fail_sync.get() {
            self.inner = synced;
            return Err(omemo::StoreError::Backend("I/O error".into()));
        }
        self.disk_writes += 1;
        Ok(())
    }
}
