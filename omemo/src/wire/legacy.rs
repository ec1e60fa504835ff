//! The legacy OMEMO wire messages (libsignal v3): `SignalMessage` and
//! `PreKeySignalMessage`.
//!
//! ```text
//! SignalMessage        | 0x33 | protobuf SignalMessage              | MAC (8 bytes) |
//!                        MAC = HMAC-SHA-256(mac key, sender IK33 || receiver IK33 || 0x33 || protobuf)[..8]
//! PreKeySignalMessage  | 0x33 | protobuf PreKeySignalMessage (field 4 holds a whole SignalMessage) |
//! ```

use hmac::Mac;
use prost::Message;
use subtle::ConstantTimeEq;

use super::proto;
use crate::consts::{LEGACY_MAC_LENGTH, LEGACY_VERSION_BYTE};
use crate::error::DecodeError;
use crate::keys::kdf::hmac_sha256;
use crate::keys::{IdentityKey, PublicKey};

/// Checks the version byte: only 0x33 (message version 3, current version 3) is spoken.
fn check_version(bytes: &[u8], minimum: usize) -> Result<&[u8], DecodeError> {
    if bytes.len() < minimum {
        return Err(DecodeError::TooShort {
            minimum,
            actual: bytes.len(),
        });
    }
    match bytes[0] {
        LEGACY_VERSION_BYTE => Ok(&bytes[1..]),
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

fn key_field(field: &'static str, bytes: Option<Vec<u8>>) -> Result<PublicKey, DecodeError> {
    let bytes = bytes.ok_or(DecodeError::MissingField(field))?;
    PublicKey::from_wire(&bytes).map_err(|source| DecodeError::Key { field, source })
}

/// A ratchet message: `0x33 || protobuf || MAC8`. Parsing keeps the received bytes, which
/// the MAC is checked over.
#[derive(Clone, PartialEq, Eq)]
pub struct SignalMessage {
    ratchet_key: PublicKey,
    counter: u32,
    previous_counter: u32,
    ciphertext: Vec<u8>,
    serialized: Vec<u8>,
}

impl SignalMessage {
    /// The sender's current ratchet public key.
    pub fn ratchet_key(&self) -> &PublicKey {
        &self.ratchet_key
    }

    /// The index of this message in the sender's chain (`n`).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The length of the sender's previous chain (`pn`).
    pub fn previous_counter(&self) -> u32 {
        self.previous_counter
    }

    /// The complete message as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.serialized
    }

    pub(crate) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// Builds and MACs a message.
    pub(crate) fn new(
        mac_key: &[u8; 32],
        sender: &IdentityKey,
        receiver: &IdentityKey,
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
    ) -> Self {
        let body = proto::SignalMessage {
            ratchet_key: Some(ratchet_key.to_wire().to_vec()),
            counter: Some(counter),
            previous_counter: Some(previous_counter),
            ciphertext: Some(ciphertext),
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len() + LEGACY_MAC_LENGTH);
        serialized.push(LEGACY_VERSION_BYTE);
        body.encode_raw(&mut serialized);
        let mac = compute_mac(mac_key, sender, receiver, &serialized);
        serialized.extend_from_slice(&mac);
        let ciphertext = body.ciphertext.unwrap_or_default();
        Self {
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            serialized,
        }
    }

    /// Checks the MAC in constant time.
    pub(crate) fn verify_mac(
        &self,
        mac_key: &[u8; 32],
        sender: &IdentityKey,
        receiver: &IdentityKey,
    ) -> bool {
        let (body, mac) = self
            .serialized
            .split_at(self.serialized.len() - LEGACY_MAC_LENGTH);
        compute_mac(mac_key, sender, receiver, body)
            .ct_eq(mac)
            .into()
    }
}

fn compute_mac(
    mac_key: &[u8; 32],
    sender: &IdentityKey,
    receiver: &IdentityKey,
    body: &[u8],
) -> [u8; LEGACY_MAC_LENGTH] {
    let mut mac = hmac_sha256(mac_key);
    mac.update(&sender.to_wire());
    mac.update(&receiver.to_wire());
    mac.update(body);
    let full = mac.finalize().into_bytes();
    let mut truncated = [0u8; LEGACY_MAC_LENGTH];
    truncated.copy_from_slice(&full[..LEGACY_MAC_LENGTH]);
    truncated
}

impl TryFrom<&[u8]> for SignalMessage {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let rest = check_version(bytes, 1 + LEGACY_MAC_LENGTH)?;
        let body = proto::SignalMessage::decode(&rest[..rest.len() - LEGACY_MAC_LENGTH])
            .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        Ok(Self {
            ratchet_key: key_field("ratchetKey", body.ratchet_key)?,
            counter: body.counter.ok_or(DecodeError::MissingField("counter"))?,
            previous_counter: body.previous_counter.unwrap_or(0),
            ciphertext: body
                .ciphertext
                .ok_or(DecodeError::MissingField("ciphertext"))?,
            serialized: bytes.to_vec(),
        })
    }
}

impl std::fmt::Debug for SignalMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalMessage")
            .field("ratchet_key", &self.ratchet_key)
            .field("counter", &self.counter)
            .field("previous_counter", &self.previous_counter)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A key-exchange message: `0x33 || protobuf`, wrapping the first [`SignalMessage`].
#[derive(Clone, PartialEq, Eq)]
pub struct PreKeySignalMessage {
    registration_id: Option<u32>,
    pre_key_id: Option<u32>,
    signed_pre_key_id: u32,
    base_key: PublicKey,
    identity_key: IdentityKey,
    message: SignalMessage,
    serialized: Vec<u8>,
}

impl PreKeySignalMessage {
    /// The id of the one-time prekey used, if any (deployed clients require one).
    pub fn pre_key_id(&self) -> Option<u32> {
        self.pre_key_id
    }

    /// The id of the signed prekey used.
    pub fn signed_pre_key_id(&self) -> u32 {
        self.signed_pre_key_id
    }

    /// The X3DH ephemeral key of the sender.
    pub fn base_key(&self) -> &PublicKey {
        &self.base_key
    }

    /// The sender's identity key.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    /// libsignal's registration id, which libsignal senders set and python-omemo does not.
    pub fn registration_id(&self) -> Option<u32> {
        self.registration_id
    }

    /// The ratchet message inside.
    pub fn message(&self) -> &SignalMessage {
        &self.message
    }

    /// The complete message as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.serialized
    }

    pub(crate) fn new(
        pre_key_id: u32,
        signed_pre_key_id: u32,
        base_key: PublicKey,
        identity_key: IdentityKey,
        message: SignalMessage,
    ) -> Self {
        let body = proto::PreKeySignalMessage {
            registration_id: None,
            pre_key_id: Some(pre_key_id),
            signed_pre_key_id: Some(signed_pre_key_id),
            base_key: Some(base_key.to_wire().to_vec()),
            identity_key: Some(identity_key.to_wire().to_vec()),
            message: Some(message.serialized.clone()),
        };
        let mut serialized = Vec::with_capacity(1 + body.encoded_len());
        serialized.push(LEGACY_VERSION_BYTE);
        body.encode_raw(&mut serialized);
        Self {
            registration_id: None,
            pre_key_id: Some(pre_key_id),
            signed_pre_key_id,
            base_key,
            identity_key,
            message,
            serialized,
        }
    }
}

impl TryFrom<&[u8]> for PreKeySignalMessage {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let rest = check_version(bytes, 1)?;
        let body = proto::PreKeySignalMessage::decode(rest)
            .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        let identity_key = key_field("identityKey", body.identity_key)?;
        let inner = body.message.ok_or(DecodeError::MissingField("message"))?;
        Ok(Self {
            registration_id: body.registration_id,
            pre_key_id: body.pre_key_id,
            signed_pre_key_id: body
                .signed_pre_key_id
                .ok_or(DecodeError::MissingField("signedPreKeyId"))?,
            base_key: key_field("baseKey", body.base_key)?,
            identity_key: IdentityKey::new(identity_key),
            message: SignalMessage::try_from(inner.as_slice())?,
            serialized: bytes.to_vec(),
        })
    }
}

impl std::fmt::Debug for PreKeySignalMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreKeySignalMessage")
            .field("pre_key_id", &self.pre_key_id)
            .field("signed_pre_key_id", &self.signed_pre_key_id)
            .field("base_key", &self.base_key)
            .field("identity_key", &self.identity_key)
            .field("message", &self.message)
            .finish()
    }
}
