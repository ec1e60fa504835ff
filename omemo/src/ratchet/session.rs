//! A Double Ratchet session between this device and one remote device, in either
//! protocol version: one algorithm, whose KDF infos, associated data and wire format the
//! [`Version`] chooses.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::chain::{ChainKey, MessageKey};
use super::receiver::{Receiver, ReceivingChain, SkippedKey};
use super::root::RootKey;
use crate::bundle::{PreKey, PreKeyBundle, SignedPreKey};
use crate::consts::{DEFAULT_MAX_SKIP_PER_MESSAGE, DEFAULT_MAX_STORED_SKIPPED_KEYS};
use crate::error::{DecryptError, Error, KeyError, SessionError};
use crate::keys::aead::{cbc_decrypt, cbc_encrypt};
use crate::keys::{IdentityKey, IdentityKeyPair, KeyPair, PublicKey, WireKey};
use crate::version::Version;
use crate::wire::{
    AssociatedData, AuthenticatedMessage, Header, KeyExchange, KeyExchangeHeader, RatchetMessage,
};
use crate::x3dh;

/// Bounds on the work and memory one session spends on out-of-order messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatchetLimits {
    /// How many message keys one incoming message may skip in its chain.
    pub max_skip_per_message: u32,
    /// How many skipped message keys the session keeps; the oldest go first.
    pub max_stored_skipped_keys: usize,
}

impl Default for RatchetLimits {
    /// python-omemo's defaults: 1000 and 1000.
    fn default() -> Self {
        Self {
            max_skip_per_message: DEFAULT_MAX_SKIP_PER_MESSAGE,
            max_stored_skipped_keys: DEFAULT_MAX_STORED_SKIPPED_KEYS,
        }
    }
}

/// The key exchange a session was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) pre_key_id: u32,
    pub(crate) signed_pre_key_id: u32,
    pub(crate) base_key: PublicKey,
}

/// The identity keys of both ends, and their wire forms for the associated data.
#[derive(Clone, Copy)]
pub(crate) struct Identities {
    pub(crate) local: IdentityKey,
    pub(crate) remote: IdentityKey,
    pub(crate) local_wire: WireKey,
    pub(crate) remote_wire: WireKey,
}

impl Identities {
    /// Fails for a key that has no form in `version` (for OMEMO 2, a key whose Ed25519
    /// form is unknown).
    pub(crate) fn new(
        version: Version,
        local: IdentityKey,
        remote: IdentityKey,
    ) -> Result<Self, KeyError> {
        Ok(Self {
            local_wire: local.to_wire(version)?,
            remote_wire: remote.to_wire(version)?,
            local,
            remote,
        })
    }
}

/// A Double Ratchet session with one remote device, in one protocol version.
///
/// Decryption is transactional: every value is computed and the MAC checked before the
/// session changes, so a message that fails leaves the session exactly as it was.
#[derive(Clone)]
pub struct Session {
    pub(crate) version: Version,
    pub(crate) identities: Identities,
    pub(crate) root_key: RootKey,
    pub(crate) own_ratchet: KeyPair,
    pub(crate) sending: ChainKey,
    pub(crate) previous_sending_length: u32,
    pub(crate) receiver: Receiver,
    pub(crate) origin: Origin,
    pub(crate) initiator: bool,
    pub(crate) confirmed: bool,
    pub(crate) limits: RatchetLimits,
}

/// What a successful decryption changes, computed before anything is changed.
enum Update {
    UsedSkipped(usize),
    Advanced {
        chain: usize,
        next: ChainKey,
        skipped: Vec<SkippedKey>,
    },
    NewChain {
        root_key: RootKey,
        previous: Option<ChainKey>,
        receiving: ReceivingChain,
        skipped: Vec<SkippedKey>,
        own_ratchet: KeyPair,
        sending: ChainKey,
    },
}

impl Session {
    /// Starts a session with the device that published `bundle` (X3DH as initiator), in
    /// the bundle's protocol version.
    ///
    /// Verifies the signed prekey's signature and picks one of the bundle's one-time
    /// prekeys at random. Messages from [`Session::encrypt`] carry the key exchange until
    /// the first message from the other side decrypts.
    pub fn initiate(
        rng: &mut impl CryptoRng,
        identity: &IdentityKeyPair,
        bundle: &PreKeyBundle,
    ) -> Result<Self, Error> {
        let version = bundle.version;
        bundle.verify()?;
        let (pre_key_id, pre_key) = bundle.pick_pre_key(rng).ok_or(SessionError::NoPreKeys)?;
        let identities = Identities::new(version, identity.identity_key(), bundle.identity_key)?;
        let ephemeral = KeyPair::generate(rng);
        let root = x3dh::initiate(
            version,
            identity,
            ephemeral.secret_key(),
            &bundle.identity_key,
            &bundle.signed_pre_key,
            &pre_key,
        )?;
        let own_ratchet = KeyPair::generate(rng);
        let (root_key, sending) =
            root.step(version, own_ratchet.secret_key(), &bundle.signed_pre_key)?;
        Ok(Self {
            version,
            identities,
            root_key,
            own_ratchet,
            sending,
            previous_sending_length: 0,
            receiver: Receiver::default(),
            origin: Origin {
                pre_key_id,
                signed_pre_key_id: bundle.signed_pre_key_id,
                base_key: *ephemeral.public_key(),
            },
            initiator: true,
            confirmed: false,
            limits: RatchetLimits::default(),
        })
    }

    /// Builds a session from a received key exchange (X3DH as responder), in the
    /// message's protocol version, and decrypts the message inside it.
    ///
    /// The caller looks up the signed prekey (of the message's version) and the one-time
    /// prekey the message names ([`KeyExchange::signed_pre_key_id`],
    /// [`KeyExchange::pre_key_id`]) and deletes the one-time prekey once this succeeded.
    pub fn respond(
        rng: &mut impl CryptoRng,
        identity: &IdentityKeyPair,
        signed_pre_key: &SignedPreKey,
        pre_key: &PreKey,
        message: &KeyExchange,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), DecryptError> {
        let version = message.version();
        if signed_pre_key.version() != version {
            return Err(DecryptError::VersionMismatch {
                expected: signed_pre_key.version(),
                message: version,
            });
        }
        let pre_key_id = message.pre_key_id().ok_or(DecryptError::MissingPreKey)?;
        if pre_key_id != pre_key.id() {
            return Err(DecryptError::WrongPreKey {
                what: "one-time prekey",
                id: pre_key_id,
            });
        }
        if message.signed_pre_key_id() != signed_pre_key.id() {
            return Err(DecryptError::WrongPreKey {
                what: "signed prekey",
                id: message.signed_pre_key_id(),
            });
        }
        let identities =
            Identities::new(version, identity.identity_key(), *message.identity_key())?;
        let root_key = x3dh::respond(
            version,
            identity,
            signed_pre_key.key_pair().secret_key(),
            pre_key.key_pair().secret_key(),
            message.identity_key(),
            message.base_key(),
        )?;
        let mut session = Self {
            version,
            identities,
            root_key,
            // Until the first DH step, the responder's ratchet key is its signed prekey;
            // its sending chain is replaced by that step before it is ever used.
            own_ratchet: signed_pre_key.key_pair().clone(),
            sending: ChainKey::new([0; 32], 0),
            previous_sending_length: 0,
            receiver: Receiver::default(),
            origin: Origin {
                pre_key_id,
                signed_pre_key_id: message.signed_pre_key_id(),
                base_key: *message.base_key(),
            },
            initiator: false,
            confirmed: false,
            limits: RatchetLimits::default(),
        };
        let plaintext = session.decrypt(rng, message.message())?;
        Ok((session, plaintext))
    }

    /// Sets the skip limits for this session (they are not persisted).
    pub fn set_limits(&mut self, limits: RatchetLimits) {
        self.limits = limits;
    }

    /// The protocol version of the session.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The identity key of this device.
    pub fn local_identity(&self) -> &IdentityKey {
        &self.identities.local
    }

    /// The identity key of the remote device.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.identities.remote
    }

    /// The associated data of a message sent (`sending`) or received on this session:
    /// legacy orders the keys by direction, OMEMO 2 puts the initiator first.
    pub(crate) fn associated_data(&self, sending: bool) -> AssociatedData {
        let local_first = if self.version.orders_by_direction() {
            sending
        } else {
            self.initiator
        };
        let Identities {
            local_wire,
            remote_wire,
            ..
        } = self.identities;
        if local_first {
            AssociatedData {
                first: local_wire,
                second: remote_wire,
            }
        } else {
            AssociatedData {
                first: remote_wire,
                second: local_wire,
            }
        }
    }

    /// Whether a message from the other side has been decrypted on this session.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Whether outgoing messages still carry the key exchange.
    pub fn sends_key_exchange(&self) -> bool {
        self.initiator && !self.confirmed
    }

    /// Whether `message` is the key exchange this session was built from (a repeat, for
    /// example the same message from the archive and live).
    pub fn matches_key_exchange(&self, message: &KeyExchange) -> bool {
        message.version() == self.version
            && message.base_key() == &self.origin.base_key
            && message.identity_key() == &self.identities.remote
            && message.signed_pre_key_id() == self.origin.signed_pre_key_id
            && message.pre_key_id() == Some(self.origin.pre_key_id)
    }

    /// Number of messages received on the newest receiving chain.
    pub fn receiving_chain_length(&self) -> u32 {
        self.receiver.chains.front().map_or(0, |c| c.chain.index())
    }

    /// Encrypts `plaintext` (OMEMO key material) for the remote device.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage, Error> {
        let next = self.sending.next().ok_or(SessionError::CounterOverflow)?;
        let keys = self.sending.message_key().expand(self.version)?;
        let ciphertext = cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext);
        let header = Header {
            ratchet_key: *self.own_ratchet.public_key(),
            counter: self.sending.index(),
            previous_counter: self.previous_sending_length,
        };
        let message = AuthenticatedMessage::new(
            self.version,
            &keys.mac_key,
            &self.associated_data(true),
            header,
            ciphertext,
        );
        let message = if self.sends_key_exchange() {
            let header = KeyExchangeHeader {
                pre_key_id: self.origin.pre_key_id,
                signed_pre_key_id: self.origin.signed_pre_key_id,
                base_key: self.origin.base_key,
                identity_key: self.identities.local,
            };
            RatchetMessage::KeyExchange(KeyExchange::new(header, message)?)
        } else {
            RatchetMessage::Authenticated(message)
        };
        self.sending = next;
        Ok(message)
    }

    /// Decrypts a key exchange on an existing session: only the key exchange this
    /// session was built from is accepted, and then the message inside is decrypted.
    pub fn decrypt_key_exchange(
        &mut self,
        rng: &mut impl CryptoRng,
        message: &KeyExchange,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        self.check_version(message.version())?;
        if message.identity_key() != &self.identities.remote {
            return Err(DecryptError::IdentityMismatch);
        }
        if !self.matches_key_exchange(message) {
            return Err(DecryptError::KeyExchangeMismatch);
        }
        self.decrypt(rng, message.message())
    }

    /// Decrypts a ratchet message. On any error the session is unchanged.
    pub fn decrypt(
        &mut self,
        rng: &mut impl CryptoRng,
        message: &AuthenticatedMessage,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        self.check_version(message.version())?;
        let (update, plaintext) = self.plan(rng, message)?;
        self.apply(update);
        Ok(plaintext)
    }

    fn check_version(&self, message: Version) -> Result<(), DecryptError> {
        if message == self.version {
            Ok(())
        } else {
            Err(DecryptError::VersionMismatch {
                expected: self.version,
                message,
            })
        }
    }

    /// Computes the message key, checks the MAC and decrypts, without changing `self`.
    fn plan(
        &self,
        rng: &mut impl CryptoRng,
        message: &AuthenticatedMessage,
    ) -> Result<(Update, Zeroizing<Vec<u8>>), DecryptError> {
        let their = message.ratchet_key();
        let counter = message.counter();
        let chain_position = self.receiver.chain_position(their);
        // Skipped keys of a stored chain all lie below its index, so the (linear) search
        // of the skipped keys is needed only for an earlier counter or an unknown chain.
        let ahead =
            chain_position.is_some_and(|p| counter >= self.receiver.chains[p].chain.index());
        let skipped = (!ahead)
            .then(|| self.receiver.skipped_position(their, counter))
            .flatten();
        if let Some(position) = skipped {
            let key = self.receiver.skipped[position].key.clone();
            let plaintext = self.open(key, message)?;
            return Ok((Update::UsedSkipped(position), plaintext));
        }
        if let Some(position) = chain_position {
            let chain = &self.receiver.chains[position].chain;
            if counter < chain.index() {
                return Err(DecryptError::Duplicate { counter });
            }
            let (skipped, key, next) = self.advance(their, chain.clone(), counter)?;
            let plaintext = self.open(key, message)?;
            return Ok((
                Update::Advanced {
                    chain: position,
                    next,
                    skipped,
                },
                plaintext,
            ));
        }
        let (root_key, chain) =
            self.root_key
                .step(self.version, self.own_ratchet.secret_key(), their)?;
        let (mut skipped, key, next) = self.advance(their, chain, counter)?;
        let plaintext = self.open(key, message)?;
        // Authenticated. Keep the keys of the sender's previous chain up to `pn`, as
        // python-omemo does; the chain itself stays too, for libsignal senders whose `pn`
        // is one short.
        let previous = self.previous_chain_keys(message.previous_counter());
        if let Some((keys, _)) = &previous {
            skipped.splice(0..0, keys.iter().cloned());
        }
        // Prepare the next sending chain with a fresh ratchet key.
        let own_ratchet = KeyPair::generate(rng);
        let (root_key, sending) = root_key.step(self.version, own_ratchet.secret_key(), their)?;
        let receiving = ReceivingChain {
            ratchet_key: *their,
            chain: next,
        };
        let update = Update::NewChain {
            root_key,
            previous: previous.map(|(_, chain)| chain),
            receiving,
            skipped,
            own_ratchet,
            sending,
        };
        Ok((update, plaintext))
    }

    /// The skipped keys of the newest receiving chain up to `previous_counter` and the
    /// chain after them; `None` when there is nothing to skip or the jump is beyond the
    /// limit (then the keys are not kept, as in python-omemo).
    fn previous_chain_keys(&self, previous_counter: u32) -> Option<(Vec<SkippedKey>, ChainKey)> {
        let newest = self.receiver.chains.front()?;
        if previous_counter <= newest.chain.index() {
            return None;
        }
        let last = previous_counter - 1;
        let (mut keys, key, next) = self
            .advance(&newest.ratchet_key, newest.chain.clone(), last)
            .ok()?;
        keys.push(SkippedKey {
            ratchet_key: newest.ratchet_key,
            index: last,
            key,
        });
        Some((keys, next))
    }

    /// Steps `chain` up to `counter`: the keys skipped on the way, the message key for
    /// `counter`, and the chain after it.
    fn advance(
        &self,
        their: &PublicKey,
        mut chain: ChainKey,
        counter: u32,
    ) -> Result<(Vec<SkippedKey>, MessageKey, ChainKey), DecryptError> {
        let jump = counter
            .checked_sub(chain.index())
            .ok_or(DecryptError::Duplicate { counter })?;
        let limit = self.limits.max_skip_per_message;
        if jump > limit {
            return Err(DecryptError::TooFarAhead {
                counter,
                jump,
                limit,
            });
        }
        let overflow = DecryptError::Malformed("message counter at the end of the chain");
        let mut skipped = Vec::with_capacity(jump as usize);
        while chain.index() < counter {
            skipped.push(SkippedKey {
                ratchet_key: *their,
                index: chain.index(),
                key: chain.message_key(),
            });
            chain = chain.next().ok_or(overflow.clone())?;
        }
        let key = chain.message_key();
        let next = chain.next().ok_or(overflow)?;
        Ok((skipped, key, next))
    }

    /// Checks the MAC and decrypts.
    fn open(
        &self,
        key: MessageKey,
        message: &AuthenticatedMessage,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let keys = key.expand(self.version)?;
        if !message.verify_mac(&keys.mac_key, &self.associated_data(false)) {
            return Err(DecryptError::Authentication);
        }
        cbc_decrypt(&keys.cipher_key, &keys.iv, message.ciphertext()).ok_or(
            DecryptError::Malformed("ratchet ciphertext has bad padding"),
        )
    }

    /// Message keys kept for messages that were skipped and may still arrive.
    pub fn skipped_key_count(&self) -> usize {
        self.receiver.skipped.len()
    }

    /// Drops the oldest skipped message keys beyond `max`.
    pub(crate) fn trim_skipped_keys(&mut self, max: usize) {
        self.receiver.store_skipped(Vec::new(), max);
    }

    fn apply(&mut self, update: Update) {
        let max_skipped = self.limits.max_stored_skipped_keys;
        match update {
            Update::UsedSkipped(position) => {
                self.receiver.skipped.remove(position);
            }
            Update::Advanced {
                chain,
                next,
                skipped,
            } => {
                self.receiver.chains[chain].chain = next;
                self.receiver.store_skipped(skipped, max_skipped);
            }
            Update::NewChain {
                root_key,
                previous,
                receiving,
                skipped,
                own_ratchet,
                sending,
            } => {
                self.root_key = root_key;
                if let (Some(previous), Some(newest)) = (previous, self.receiver.chains.front_mut())
                {
                    newest.chain = previous;
                }
                self.receiver.push_chain(receiving);
                self.receiver.store_skipped(skipped, max_skipped);
                self.own_ratchet = own_ratchet;
                self.previous_sending_length = self.sending.index();
                self.sending = sending;
            }
        }
        self.confirmed = true;
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("version", &self.version)
            .field("local_identity", &self.identities.local)
            .field("remote_identity", &self.identities.remote)
            .field("sending_index", &self.sending.index())
            .field("receiving_chains", &self.receiver.chains.len())
            .field("skipped_keys", &self.receiver.skipped.len())
            .field("confirmed", &self.confirmed)
            .finish_non_exhaustive()
    }
}
