//! This device: its account, identity and device id, and the keys of the bundle it
//! publishes (signed prekeys with their rotation, one-time prekeys with their refill).
//! It owns this state; the manager asks it for keys and for the store operations of a
//! change, commits them, and only then tells it to apply the change.

use std::collections::BTreeMap;

use rand_core::CryptoRng;

use super::VERSION;
use crate::consts::MAX_DEVICE_ID;
use crate::error::ManagerError;
use crate::store::{AccountRecord, Batch, Op, PreKeyRecord, SignedPreKeyRecord, Store};
use crate::{IdentityKeyPair, KeyPair, PreKey, PreKeyBundle, SecretKey, SignedPreKey};

/// A signed prekey with its creation time.
#[derive(Clone)]
struct DatedSignedPreKey {
    key: SignedPreKey,
    created_at: u64,
}

/// This device.
pub(super) struct OwnDevice {
    /// The own bare JID.
    pub(super) jid: String,
    pub(super) device_id: u32,
    pub(super) identity: IdentityKeyPair,
    /// Oldest first; the last one is published.
    signed_pre_keys: Vec<DatedSignedPreKey>,
    pre_keys: BTreeMap<u32, PreKey>,
    next_pre_key_id: u32,
}

/// A used one-time prekey and the fresh ones that replace it.
pub(super) struct Refill {
    used: u32,
    fresh: Vec<PreKey>,
    next_id: u32,
}

/// A signed prekey rotation: the keys after it.
pub(super) struct Rotation {
    keys: Vec<DatedSignedPreKey>,
}

impl OwnDevice {
    /// A new identity, device id (1..2^31-1, as XEP-0384 asks), signed prekey and
    /// `pre_key_count` one-time prekeys, with the store operations that save them.
    pub(super) fn create(
        jid: String,
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
        let signed = SignedPreKey::generate(VERSION, rng, &identity, 1);
        let pre_keys: BTreeMap<u32, PreKey> = (1..=pre_key_count)
            .map(|id| (id, PreKey::generate(rng, id)))
            .collect();
        let device = Self {
            jid,
            device_id,
            identity,
            signed_pre_keys: vec![DatedSignedPreKey {
                key: signed,
                created_at: now,
            }],
            pre_keys,
            next_pre_key_id: pre_key_count + 1,
        };
        let mut batch = Batch::default();
        batch.ops.push(Op::PutAccount(device.account_record()));
        batch.ops.extend(
            device
                .signed_pre_keys
                .iter()
                .map(|k| Op::PutSignedPreKey(signed_record(&k.key, k.created_at))),
        );
        batch.ops.extend(
            device
                .pre_keys
                .values()
                .map(|k| Op::PutPreKey(pre_key_record(k))),
        );
        (device, batch)
    }

    /// The device stored in `store` under `account`, with the keys of the manager's
    /// version (keys of other versions are left alone).
    pub(super) fn load(store: &impl Store, account: AccountRecord) -> Result<Self, ManagerError> {
        let identity =
            IdentityKeyPair::from_secret(SecretKey::from_bytes(*account.identity_secret));
        let signed_pre_keys = store
            .load_signed_pre_keys()?
            .into_iter()
            .filter(|r| r.version == VERSION)
            .map(|r| DatedSignedPreKey {
                key: SignedPreKey::from_parts(
                    r.version,
                    r.id,
                    KeyPair::from_secret(SecretKey::from_bytes(*r.secret)),
                    r.signature,
                ),
                created_at: r.created_at,
            })
            .collect::<Vec<_>>();
        if signed_pre_keys.is_empty() {
            return Err(ManagerError::Store(crate::StoreError::Corrupt(
                "no signed prekey".into(),
            )));
        }
        let pre_keys = store
            .load_pre_keys()?
            .into_iter()
            .filter(|r| r.version == VERSION)
            .map(|r| {
                (
                    r.id,
                    PreKey::from_parts(
                        r.id,
                        KeyPair::from_secret(SecretKey::from_bytes(*r.secret)),
                    ),
                )
            })
            .collect();
        Ok(Self {
            jid: account.jid,
            device_id: account.device_id,
            identity,
            signed_pre_keys,
            pre_keys,
            next_pre_key_id: account.next_pre_key_id,
        })
    }

    /// The bundle this device publishes.
    pub(super) fn bundle(&self) -> PreKeyBundle {
        let pre_keys: Vec<PreKey> = self.pre_keys.values().cloned().collect();
        PreKeyBundle::new(
            &self.identity,
            &self.current_signed_pre_key().key,
            &pre_keys,
        )
    }

    fn current_signed_pre_key(&self) -> &DatedSignedPreKey {
        // `load` and `create` guarantee at least one, and a rotation never drops the last.
        &self.signed_pre_keys[self.signed_pre_keys.len() - 1]
    }

    /// The signed prekey `id`, the current one or one still in its grace period.
    pub(super) fn signed_pre_key(&self, id: u32) -> Option<&SignedPreKey> {
        self.signed_pre_keys
            .iter()
            .rev()
            .map(|k| &k.key)
            .find(|k| k.id() == id)
    }

    /// The one-time prekey `id`, if not used yet.
    pub(super) fn pre_key(&self, id: u32) -> Option<&PreKey> {
        self.pre_keys.get(&id)
    }

    /// Plans the replacement of a used one-time prekey by fresh ones, so that the bundle
    /// keeps `pre_key_count` keys; nothing changes until [`OwnDevice::apply_refill`].
    pub(super) fn plan_refill(
        &self,
        used: u32,
        pre_key_count: u32,
        rng: &mut impl CryptoRng,
    ) -> Refill {
        let mut next_id = self.next_pre_key_id;
        let missing = (pre_key_count as usize + 1).saturating_sub(self.pre_keys.len());
        let fresh = (0..missing)
            .map(|_| {
                let id = next_id;
                next_id = if id >= MAX_DEVICE_ID { 1 } else { id + 1 };
                PreKey::generate(rng, id)
            })
            .collect();
        Refill {
            used,
            fresh,
            next_id,
        }
    }

    /// The store ops of a refill.
    pub(super) fn refill_ops(&self, refill: &Refill, batch: &mut Batch) {
        batch.ops.push(Op::DeletePreKey {
            version: VERSION,
            id: refill.used,
        });
        batch.ops.extend(
            refill
                .fresh
                .iter()
                .map(|k| Op::PutPreKey(pre_key_record(k))),
        );
        let mut account = self.account_record();
        account.next_pre_key_id = refill.next_id;
        batch.ops.push(Op::PutAccount(account));
    }

    /// Applies a committed refill.
    pub(super) fn apply_refill(&mut self, refill: Refill) {
        self.pre_keys.remove(&refill.used);
        self.pre_keys
            .extend(refill.fresh.into_iter().map(|k| (k.id(), k)));
        self.next_pre_key_id = refill.next_id;
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

    /// Plans the rotation of the signed prekey when it is at least `rotation_secs` old,
    /// and the removal of replaced ones whose `grace_secs` (counted from their
    /// replacement) are over; `None` when nothing is due. The store ops go into `batch`.
    pub(super) fn plan_rotation(
        &self,
        rng: &mut impl CryptoRng,
        now: u64,
        rotation_secs: u64,
        grace_secs: u64,
        batch: &mut Batch,
    ) -> Option<Rotation> {
        let mut keys = self.signed_pre_keys.clone();
        let before = batch.ops.len();
        let current = &keys[keys.len() - 1];
        if now.saturating_sub(current.created_at) >= rotation_secs {
            let id = if current.key.id() >= MAX_DEVICE_ID {
                1
            } else {
                current.key.id() + 1
            };
            let key = SignedPreKey::generate(VERSION, rng, &self.identity, id);
            batch
                .ops
                .push(Op::PutSignedPreKey(signed_record(&key, now)));
            keys.push(DatedSignedPreKey {
                key,
                created_at: now,
            });
            tracing::info!(id, "rotated the signed prekey");
        }
        while keys.len() > 1 && now.saturating_sub(keys[1].created_at) >= grace_secs {
            let old = keys.remove(0);
            batch.ops.push(Op::DeleteSignedPreKey {
                version: old.key.version(),
                id: old.key.id(),
            });
        }
        (batch.ops.len() > before).then_some(Rotation { keys })
    }

    /// Applies a committed rotation.
    pub(super) fn apply_rotation(&mut self, rotation: Rotation) {
        self.signed_pre_keys = rotation.keys;
    }
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

fn pre_key_record(key: &PreKey) -> PreKeyRecord {
    PreKeyRecord {
        version: VERSION,
        id: key.id(),
        secret: key.key_pair().secret_key().to_bytes(),
    }
}
