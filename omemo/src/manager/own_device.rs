//! This device: its account, identity and device id, and the keys of the bundles it
//! publishes, one per protocol version (signed prekeys with their rotation, one-time
//! prekeys with their refill). It owns this state; the manager asks it for keys and for
//! the store operations of a change, commits them, and only then tells it to apply the
//! change.

use std::collections::BTreeMap;

use rand_core::CryptoRng;

use crate::consts::MAX_DEVICE_ID;
use crate::error::ManagerError;
use crate::stanza::omemo2::ListedDevice;
use crate::store::{AccountRecord, Batch, Op, PreKeyRecord, SignedPreKeyRecord, Store};
use crate::version::{Version, Versions};
use crate::{IdentityKeyPair, KeyPair, PreKey, PreKeyBundle, SecretKey, SignedPreKey};

/// A signed prekey with its creation time.
#[derive(Clone)]
struct DatedSignedPreKey {
    key: SignedPreKey,
    created_at: u64,
}

/// The keys of the bundle of one version.
#[derive(Clone)]
struct BundleKeys {
    /// Oldest first; the last one is published.
    signed_pre_keys: Vec<DatedSignedPreKey>,
    /// The one-time prekeys published.
    pre_keys: BTreeMap<u32, PreKey>,
    /// Used during a catch-up: no longer published, kept until it is over.
    hidden: BTreeMap<u32, PreKey>,
}

impl BundleKeys {
    fn current_signed_pre_key(&self) -> &DatedSignedPreKey {
        // Creation and loading guarantee at least one, and a rotation never drops the last.
        &self.signed_pre_keys[self.signed_pre_keys.len() - 1]
    }
}

/// This device.
pub(super) struct OwnDevice {
    /// The own bare JID.
    pub(super) jid: String,
    pub(super) device_id: u32,
    pub(super) identity: IdentityKeyPair,
    /// The bundle keys of each version the manager speaks.
    bundles: BTreeMap<Version, BundleKeys>,
    /// The id the next one-time prekey gets, in either version.
    next_pre_key_id: u32,
    /// The label of this device in the OMEMO 2 device list, with its signature.
    label: Option<(String, Vec<u8>)>,
}

/// A used one-time prekey and the fresh ones that replace it.
pub(super) struct Refill {
    version: Version,
    used: u32,
    /// Keep the used key (hidden) instead of deleting it.
    hide: bool,
    fresh: Vec<PreKey>,
    next_id: u32,
}

/// A signed prekey rotation: the keys of the versions it changes.
pub(super) struct Rotation {
    keys: BTreeMap<Version, Vec<DatedSignedPreKey>>,
}

impl Rotation {
    /// The versions whose bundle changes.
    pub(super) fn versions(&self) -> Versions {
        self.keys.keys().copied().collect()
    }
}

impl OwnDevice {
    /// When the oldest signed prekey kept (of any version) was made: no key exchange
    /// from before it can be read any more.
    pub(super) fn oldest_signed_pre_key_at(&self) -> u64 {
        self.bundles
            .values()
            .filter_map(|keys| keys.signed_pre_keys.first())
            .map(|key| key.created_at)
            .min()
            .unwrap_or(0)
    }

    /// A new identity and device id (1..2^31-1, as XEP-0384 asks), with a signed prekey
    /// and `pre_key_count` one-time prekeys for each of `versions`, and the store
    /// operations that save them.
    pub(super) fn create(
        jid: String,
        versions: Versions,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> (Self, Batch) {
        let identity = IdentityKeyPair::generate(rng);
        let device_id = loop {
            let id = rng.next_u32() & MAX_DEVICE_ID;
            if id != 0 {
                break id;
            }
        };
        let keys = NewKeys {
            first_id: 1,
            versions,
            pre_key_count,
        };
        Self::with_identity(jid, device_id, identity, &keys, rng, now)
    }

    /// A device with a given id and identity (restored from a backup) and new bundle
    /// keys, their ids from `keys.first_id` on; the store operations come back in the
    /// batch.
    pub(super) fn with_identity(
        jid: String,
        device_id: u32,
        identity: IdentityKeyPair,
        keys: &NewKeys,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> (Self, Batch) {
        let (versions, pre_key_count) = (keys.versions, keys.pre_key_count);
        let mut device = Self {
            jid,
            device_id,
            identity,
            bundles: BTreeMap::new(),
            next_pre_key_id: keys.first_id,
            label: None,
        };
        let mut batch = Batch::default();
        device.add_missing_versions(versions, pre_key_count, rng, now, &mut batch);
        (device, batch)
    }

    /// The device stored in `store` under `account`, with the keys of `versions`; keys of
    /// other versions stay in the store untouched. A version without keys yet (a store
    /// from before the manager spoke it) gets them: their store operations come back in
    /// the batch, to commit before the device is used.
    pub(super) fn load(
        store: &impl Store,
        account: AccountRecord,
        versions: Versions,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(Self, Batch), ManagerError> {
        let identity =
            IdentityKeyPair::from_secret(SecretKey::from_bytes(*account.identity_secret));
        let mut bundles: BTreeMap<Version, BundleKeys> = BTreeMap::new();
        for record in store.load_signed_pre_keys()? {
            if versions.contains(record.version) {
                let key = SignedPreKey::from_parts(
                    record.version,
                    record.id,
                    KeyPair::from_secret(SecretKey::from_bytes(*record.secret)),
                    record.signature,
                );
                bundles
                    .entry(record.version)
                    .or_insert_with(|| BundleKeys {
                        signed_pre_keys: Vec::new(),
                        pre_keys: BTreeMap::new(),
                        hidden: BTreeMap::new(),
                    })
                    .signed_pre_keys
                    .push(DatedSignedPreKey {
                        key,
                        created_at: record.created_at,
                    });
            }
        }
        for record in store.load_pre_keys()? {
            // Prekeys of a version without a signed prekey are useless; they are
            // replaced with the rest of that version's keys below.
            if let Some(keys) = bundles.get_mut(&record.version) {
                let key = KeyPair::from_secret(SecretKey::from_bytes(*record.secret));
                let held = if record.hidden {
                    &mut keys.hidden
                } else {
                    &mut keys.pre_keys
                };
                held.insert(record.id, PreKey::from_parts(record.id, key));
            }
        }
        let mut device = Self {
            jid: account.jid,
            device_id: account.device_id,
            identity,
            bundles,
            next_pre_key_id: account.next_pre_key_id,
            label: None,
        };
        let mut batch = Batch::default();
        device.add_missing_versions(versions, pre_key_count, rng, now, &mut batch);
        Ok((device, batch))
    }

    /// Generates the bundle keys of every version in `versions` that has none, with
    /// their store operations (and the account record, whose prekey counter moved).
    fn add_missing_versions(
        &mut self,
        versions: Versions,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
        now: u64,
        batch: &mut Batch,
    ) {
        let missing: Vec<Version> = versions
            .iter()
            .filter(|v| !self.bundles.contains_key(v))
            .collect();
        if missing.is_empty() {
            return;
        }
        for version in missing {
            let signed = DatedSignedPreKey {
                // 1 on a new device; past every id a restored identity used before.
                key: SignedPreKey::generate(version, rng, &self.identity, self.next_pre_key_id),
                created_at: now,
            };
            batch.ops.push(Op::PutSignedPreKey(signed_record(
                &signed.key,
                signed.created_at,
            )));
            let mut next_id = self.next_pre_key_id;
            let pre_keys: BTreeMap<u32, PreKey> = (0..pre_key_count)
                .map(|_| {
                    let key = PreKey::generate(rng, next_id);
                    next_id = following_id(next_id);
                    (key.id(), key)
                })
                .collect();
            self.next_pre_key_id = next_id;
            batch.ops.extend(
                pre_keys
                    .values()
                    .map(|k| Op::PutPreKey(pre_key_record(version, k))),
            );
            self.bundles.insert(
                version,
                BundleKeys {
                    signed_pre_keys: vec![signed],
                    pre_keys,
                    hidden: BTreeMap::new(),
                },
            );
            tracing::info!(%version, "created bundle keys");
        }
        batch.ops.push(Op::PutAccount(self.account_record()));
    }

    /// Labels this device in the OMEMO 2 device list, signing the label with the
    /// identity key as XEP-0384 0.9 asks.
    pub(super) fn set_label(&mut self, label: Option<&str>, rng: &mut impl CryptoRng) {
        self.label = label.map(|label| {
            let signature = self.identity.sign(Version::Omemo2, rng, label.as_bytes());
            (label.to_owned(), signature.to_vec())
        });
    }

    /// This device's entry in its device list of `version` (with the label in OMEMO 2).
    pub(super) fn list_entry(&self, version: Version) -> ListedDevice {
        let mut entry = ListedDevice::new(self.device_id);
        if let (Version::Omemo2, Some((label, signature))) = (version, &self.label) {
            entry.label = Some(label.clone());
            entry.label_signature = Some(signature.clone());
        }
        entry
    }

    /// The bundle this device publishes in `version`, if it speaks it.
    pub(super) fn bundle(&self, version: Version) -> Option<PreKeyBundle> {
        let keys = self.bundles.get(&version)?;
        let pre_keys: Vec<PreKey> = keys.pre_keys.values().cloned().collect();
        Some(PreKeyBundle::new(
            &self.identity,
            &keys.current_signed_pre_key().key,
            &pre_keys,
        ))
    }

    /// The signed prekey `id` of `version`, the current one or one still in its grace
    /// period.
    pub(super) fn signed_pre_key(&self, version: Version, id: u32) -> Option<&SignedPreKey> {
        self.bundles
            .get(&version)?
            .signed_pre_keys
            .iter()
            .rev()
            .map(|k| &k.key)
            .find(|k| k.id() == id)
    }

    /// The one-time prekey `id` of `version`, if not used yet (or used during the
    /// catch-up under way).
    pub(super) fn pre_key(&self, version: Version, id: u32) -> Option<&PreKey> {
        let keys = self.bundles.get(&version)?;
        keys.pre_keys.get(&id).or_else(|| keys.hidden.get(&id))
    }

    /// Plans the replacement of a used one-time prekey of `version` by fresh ones, so
    /// that its bundle keeps `pre_key_count` keys; the used one is deleted, or only
    /// hidden when `hide` (while catching up). `None` when nothing changes: a key
    /// hidden before, used again during the same catch-up. Nothing changes until
    /// [`OwnDevice::apply_refill`].
    pub(super) fn plan_refill(
        &self,
        version: Version,
        used: u32,
        hide: bool,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
    ) -> Option<Refill> {
        let keys = self.bundles.get(&version);
        let published = keys.is_some_and(|k| k.pre_keys.contains_key(&used));
        let hidden = keys.is_some_and(|k| k.hidden.contains_key(&used));
        let remaining = keys.map_or(0, |k| k.pre_keys.len()) - usize::from(published);
        let missing = (pre_key_count as usize).saturating_sub(remaining);
        // Nothing to hide, delete or add.
        if !published && missing == 0 && (hide || !hidden) {
            return None;
        }
        let mut next_id = self.next_pre_key_id;
        let fresh = (0..missing)
            .map(|_| {
                let key = PreKey::generate(rng, next_id);
                next_id = following_id(next_id);
                key
            })
            .collect();
        Some(Refill {
            version,
            used,
            hide,
            fresh,
            next_id,
        })
    }

    /// The store ops of a refill.
    pub(super) fn refill_ops(&self, refill: &Refill, batch: &mut Batch) {
        let used = self
            .bundles
            .get(&refill.version)
            .and_then(|keys| keys.pre_keys.get(&refill.used));
        match used {
            Some(key) if refill.hide => batch.ops.push(Op::PutPreKey(PreKeyRecord {
                hidden: true,
                ..pre_key_record(refill.version, key)
            })),
            // Hidden already, or gone: nothing to change.
            None if refill.hide => {}
            _ => batch.ops.push(Op::DeletePreKey {
                version: refill.version,
                id: refill.used,
            }),
        }
        batch.ops.extend(
            refill
                .fresh
                .iter()
                .map(|k| Op::PutPreKey(pre_key_record(refill.version, k))),
        );
        let mut account = self.account_record();
        account.next_pre_key_id = refill.next_id;
        batch.ops.push(Op::PutAccount(account));
    }

    /// Applies a committed refill; returns the version whose bundle changed.
    pub(super) fn apply_refill(&mut self, refill: Refill) -> Version {
        if let Some(keys) = self.bundles.get_mut(&refill.version) {
            match keys.pre_keys.remove(&refill.used) {
                Some(key) if refill.hide => {
                    keys.hidden.insert(refill.used, key);
                }
                _ if refill.hide => {}
                _ => {
                    keys.hidden.remove(&refill.used);
                }
            }
            keys.pre_keys
                .extend(refill.fresh.into_iter().map(|k| (k.id(), k)));
        }
        self.next_pre_key_id = refill.next_id;
        refill.version
    }

    /// The store ops that delete the prekeys hidden during a catch-up.
    pub(super) fn delete_hidden_ops(&self, batch: &mut Batch) {
        for (version, keys) in &self.bundles {
            batch
                .ops
                .extend(keys.hidden.keys().map(|&id| Op::DeletePreKey {
                    version: *version,
                    id,
                }));
        }
    }

    /// Forgets the hidden prekeys, once [`OwnDevice::delete_hidden_ops`] committed.
    pub(super) fn forget_hidden(&mut self) {
        for keys in self.bundles.values_mut() {
            keys.hidden.clear();
        }
    }

    /// The account record of this device.
    pub(super) fn account_record(&self) -> AccountRecord {
        AccountRecord {
            jid: self.jid.clone(),
            device_id: self.device_id,
            identity_secret: self.identity.secret_key().to_bytes(),
            next_pre_key_id: self.next_pre_key_id,
        }
    }

    /// Plans, for each version, the rotation of the signed prekey when it is at least
    /// `rotation_secs` old, and the removal of replaced ones whose `grace_secs` (counted
    /// from their replacement) are over; `None` when nothing is due. The store ops go
    /// into `batch`.
    pub(super) fn plan_rotation(
        &self,
        rng: &mut impl CryptoRng,
        now: u64,
        rotation_secs: u64,
        grace_secs: u64,
        batch: &mut Batch,
    ) -> Option<Rotation> {
        let mut rotation = Rotation {
            keys: BTreeMap::new(),
        };
        for (&version, bundle) in &self.bundles {
            let mut keys = bundle.signed_pre_keys.clone();
            let before = batch.ops.len();
            let current = &keys[keys.len() - 1];
            if now.saturating_sub(current.created_at) >= rotation_secs {
                let id = following_id(current.key.id());
                let key = SignedPreKey::generate(version, rng, &self.identity, id);
                batch
                    .ops
                    .push(Op::PutSignedPreKey(signed_record(&key, now)));
                keys.push(DatedSignedPreKey {
                    key,
                    created_at: now,
                });
                tracing::info!(%version, id, "rotated the signed prekey");
            }
            while keys.len() > 1 && now.saturating_sub(keys[1].created_at) >= grace_secs {
                let old = keys.remove(0);
                batch.ops.push(Op::DeleteSignedPreKey {
                    version,
                    id: old.key.id(),
                });
            }
            if batch.ops.len() > before {
                rotation.keys.insert(version, keys);
            }
        }
        (!rotation.keys.is_empty()).then_some(rotation)
    }

    /// When [`OwnDevice::plan_rotation`] has something to do next: a signed prekey
    /// rotation or the end of a grace period.
    pub(super) fn next_rotation(&self, rotation_secs: u64, grace_secs: u64) -> Option<u64> {
        self.bundles
            .values()
            .flat_map(|bundle| {
                let keys = &bundle.signed_pre_keys;
                let rotation = keys[keys.len() - 1]
                    .created_at
                    .saturating_add(rotation_secs);
                let grace = keys.get(1).map(|k| k.created_at.saturating_add(grace_secs));
                [Some(rotation), grace]
            })
            .flatten()
            .min()
    }

    /// Applies a committed rotation.
    pub(super) fn apply_rotation(&mut self, rotation: Rotation) {
        for (version, keys) in rotation.keys {
            if let Some(bundle) = self.bundles.get_mut(&version) {
                bundle.signed_pre_keys = keys;
            }
        }
    }
}

/// The id after `id` in 1..2^31-1, wrapping around.
/// The bundle keys a new device gets.
pub(super) struct NewKeys {
    /// The id of the first signed prekey and of the first one-time prekey (ids are per
    /// version).
    pub(super) first_id: u32,
    pub(super) versions: Versions,
    pub(super) pre_key_count: u32,
}

impl NewKeys {
    /// Keys for an identity restored from a backup: ids from a random start between
    /// 2^20 and 2^23, so that none names a key of the old device's bundles (a contact
    /// may still send a key exchange built from one; an unknown id heals, a reused one
    /// would fail its MAC, which never heals).
    pub(super) fn restored(
        versions: Versions,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
    ) -> Self {
        Self {
            first_id: (1 << 20) + rng.next_u32() % ((1 << 23) - (1 << 20)),
            versions,
            pre_key_count,
        }
    }
}

fn following_id(id: u32) -> u32 {
    if id >= MAX_DEVICE_ID { 1 } else { id + 1 }
}

fn signed_record(key: &SignedPreKey, created_at: u64) -> SignedPreKeyRecord {
    SignedPreKeyRecord {
        version: key.version(),
        id: key.id(),
        secret: key.key_pair().secret_key().to_bytes(),
        signature: *key.signature(),
        created_at,
    }
}

fn pre_key_record(version: Version, key: &PreKey) -> PreKeyRecord {
    PreKeyRecord {
        version,
        id: key.id(),
        secret: key.key_pair().secret_key().to_bytes(),
        hidden: false,
    }
}
