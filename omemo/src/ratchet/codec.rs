//! Session state <-> bytes (`schemas/session.proto`, with a format version).

use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use super::chain::{ChainKey, MessageKey};
use super::receiver::{Receiver, ReceivingChain, SkippedKey};
use super::root::RootKey;
use super::session::{Identities, Origin, RatchetLimits, Session};
use crate::consts::{MAX_RECEIVING_CHAINS, SESSION_FORMAT_VERSION};
use crate::error::SessionError;
use crate::keys::{IdentityKey, KeyPair, PublicKey, SecretKey};
use crate::version::Version;
use crate::wire::state;

fn chain_to_proto(chain: &ChainKey) -> state::Chain {
    state::Chain {
        chain_key: chain.key().to_vec(),
        index: chain.index(),
    }
}

fn bytes32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], SessionError> {
    bytes.try_into().map_err(|_| SessionError::Corrupt(what))
}

fn chain_from_proto(chain: Option<&state::Chain>) -> Result<ChainKey, SessionError> {
    let chain = chain.ok_or(SessionError::Corrupt("chain missing"))?;
    Ok(ChainKey::new(
        bytes32(&chain.chain_key, "chain key")?,
        chain.index,
    ))
}

fn wipe(record: &mut state::Session) {
    record.root_key.zeroize();
    record.own_ratchet_private.zeroize();
    if let Some(chain) = record.sending.as_mut() {
        chain.chain_key.zeroize();
    }
    for receiving in &mut record.receiving {
        if let Some(chain) = receiving.chain.as_mut() {
            chain.chain_key.zeroize();
        }
    }
    for skipped in &mut record.skipped {
        skipped.message_key.zeroize();
    }
}

impl Session {
    /// Serializes the whole session state (secret: store it as such).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let Identities {
            local,
            remote,
            local_wire,
            remote_wire,
        } = self.identities;
        // OMEMO 2 sessions keep the Ed25519 forms the associated data is made of (their
        // wire forms, checked when the session was made).
        let ed25519 = |wire: &[u8]| match self.version {
            Version::Legacy => Vec::new(),
            Version::Omemo2 => wire.to_vec(),
        };
        let mut record = state::Session {
            format_version: SESSION_FORMAT_VERSION,
            protocol: u32::from(self.version.to_code()),
            local_identity: local.curve25519().as_bytes().to_vec(),
            remote_identity: remote.curve25519().as_bytes().to_vec(),
            local_identity_ed25519: ed25519(&local_wire),
            remote_identity_ed25519: ed25519(&remote_wire),
            root_key: self.root_key.as_bytes().to_vec(),
            own_ratchet_private: self.own_ratchet.secret_key().to_bytes().to_vec(),
            sending: Some(chain_to_proto(&self.sending)),
            previous_sending_length: self.previous_sending_length,
            receiving: self
                .receiver
                .chains
                .iter()
                .map(|c| state::ReceivingChain {
                    ratchet_key: c.ratchet_key.as_bytes().to_vec(),
                    chain: Some(chain_to_proto(&c.chain)),
                })
                .collect(),
            skipped: self
                .receiver
                .skipped
                .iter()
                .map(|k| state::SkippedKey {
                    ratchet_key: k.ratchet_key.as_bytes().to_vec(),
                    index: k.index,
                    message_key: k.key.as_bytes().to_vec(),
                })
                .collect(),
            origin: Some(state::KeyExchange {
                pre_key_id: self.origin.pre_key_id,
                signed_pre_key_id: self.origin.signed_pre_key_id,
                base_key: self.origin.base_key.as_bytes().to_vec(),
            }),
            initiator: self.initiator,
            confirmed: self.confirmed,
        };
        let bytes = Zeroizing::new(record.encode_to_vec());
        wipe(&mut record);
        bytes
    }

    /// Serializes sessions a device's current one replaced, newest first (secret).
    pub(crate) fn list_to_bytes(sessions: &[Session]) -> Zeroizing<Vec<u8>> {
        let mut record = state::PreviousSessions {
            sessions: sessions.iter().map(|s| s.to_bytes().to_vec()).collect(),
        };
        let bytes = Zeroizing::new(record.encode_to_vec());
        record.sessions.iter_mut().for_each(Zeroize::zeroize);
        bytes
    }

    /// Restores [`Session::list_to_bytes`] output (or a single session, as stored before
    /// the list), skipping entries that do not decode.
    pub(crate) fn list_from_bytes(bytes: &[u8]) -> Vec<Session> {
        if let Ok(session) = Self::from_bytes(bytes) {
            return vec![session];
        }
        let Ok(mut record) = state::PreviousSessions::decode(bytes) else {
            return Vec::new();
        };
        let sessions = record
            .sessions
            .iter()
            .filter_map(|bytes| Self::from_bytes(bytes).ok())
            .collect();
        record.sessions.iter_mut().for_each(Zeroize::zeroize);
        sessions
    }

    /// Restores a session from [`Session::to_bytes`] output, with default limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let mut record = state::Session::decode(bytes)
            .map_err(|_| SessionError::Corrupt("not a session record"))?;
        let session = Self::from_record(&record);
        wipe(&mut record);
        session
    }

    fn from_record(record: &state::Session) -> Result<Self, SessionError> {
        if record.format_version != SESSION_FORMAT_VERSION {
            return Err(SessionError::UnsupportedFormat(record.format_version));
        }
        let version = u8::try_from(record.protocol)
            .ok()
            .and_then(Version::from_code)
            .ok_or(SessionError::Corrupt("unknown protocol"))?;
        if record.receiving.len() > MAX_RECEIVING_CHAINS {
            return Err(SessionError::Corrupt("too many receiving chains"));
        }
        let key = |bytes: &[u8], what| bytes32(bytes, what).map(PublicKey::from_bytes);
        let mut receiver = Receiver::default();
        for chain in &record.receiving {
            receiver.chains.push_back(ReceivingChain {
                ratchet_key: key(&chain.ratchet_key, "receiving ratchet key")?,
                chain: chain_from_proto(chain.chain.as_ref())?,
            });
        }
        for skipped in &record.skipped {
            receiver.skipped.push_back(SkippedKey {
                ratchet_key: key(&skipped.ratchet_key, "skipped ratchet key")?,
                index: skipped.index,
                key: MessageKey::from_bytes(bytes32(&skipped.message_key, "skipped key")?),
            });
        }
        let origin = record
            .origin
            .as_ref()
            .ok_or(SessionError::Corrupt("origin missing"))?;
        let own_private = Zeroizing::new(bytes32(&record.own_ratchet_private, "ratchet key")?);
        // Both forms were checked when the session was made; converting again on every
        // load would cost two field inversions and a square root per key.
        let identity = |curve: &[u8], ed25519: &[u8], what| -> Result<IdentityKey, SessionError> {
            let curve = key(curve, what)?;
            Ok(match version {
                Version::Legacy => IdentityKey::from_curve25519(curve),
                Version::Omemo2 => {
                    IdentityKey::from_both_forms(curve, bytes32(ed25519, "Ed25519 identity key")?)
                }
            })
        };
        let identities = Identities::new(
            version,
            identity(
                &record.local_identity,
                &record.local_identity_ed25519,
                "local identity",
            )?,
            identity(
                &record.remote_identity,
                &record.remote_identity_ed25519,
                "remote identity",
            )?,
        )
        .map_err(|_| SessionError::Corrupt("identity key"))?;
        Ok(Self {
            version,
            identities,
            root_key: RootKey::new(bytes32(&record.root_key, "root key")?),
            own_ratchet: KeyPair::from_secret(SecretKey::from_bytes(*own_private)),
            sending: chain_from_proto(record.sending.as_ref())?,
            previous_sending_length: record.previous_sending_length,
            receiver,
            origin: Origin {
                pre_key_id: origin.pre_key_id,
                signed_pre_key_id: origin.signed_pre_key_id,
                base_key: key(&origin.base_key, "base key")?,
            },
            initiator: record.initiator,
            confirmed: record.confirmed,
            limits: RatchetLimits::default(),
        })
    }
}
