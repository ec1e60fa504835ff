//! Bytes <-> message types, for both protocol versions. The prost structs stay private to
//! this module.
//!
//! One type per kind of message serves both versions; the [`Version`] decides the layout:
//!
//! ```text
//! AuthenticatedMessage
//!   legacy   | 0x33 | protobuf SignalMessage                          | MAC (8 bytes) |
//!              MAC = HMAC-SHA-256(mac key, AD || 0x33 || protobuf)[..8]
//!   OMEMO 2  protobuf OMEMOAuthenticatedMessage { 1: MAC (16 bytes), 2: OMEMOMessage }
//!              MAC = HMAC-SHA-256(mac key, AD || OMEMOMessage)[..16]
//! KeyExchange
//!   legacy   | 0x33 | protobuf PreKeySignalMessage (field 4: the whole SignalMessage as bytes) |
//!   OMEMO 2  protobuf OMEMOKeyExchange (field 5: the OMEMOAuthenticatedMessage, embedded)
//! ```
//!
//! AD, the associated data, is two identity keys in the version's wire form: legacy
//! sender ‖ recipient (33 bytes each), OMEMO 2 initiator ‖ responder (Ed25519, 32 each).
//! Received messages keep the bytes their MAC covers, exactly as received.

mod legacy;
mod omemo2;

use std::fmt;
use std::ops::Range;

use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::error::{DecodeError, KeyError};
use crate::keys::kdf::hmac_sha256;
use crate::keys::{IdentityKey, PublicKey, WireKey};
use crate::version::Version;

/// Generated from `schemas/legacy.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod legacy_proto {
    include!(concat!(env!("OUT_DIR"), "/omemo.legacy.rs"));
}

/// Generated from `schemas/omemo2.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod omemo2_proto {
    include!(concat!(env!("OUT_DIR"), "/omemo.omemo2.rs"));
}

/// Generated from `schemas/session.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod state {
    include!(concat!(env!("OUT_DIR"), "/omemo.state.rs"));
}

/// The associated data a ratchet MAC covers first: two identity keys in the wire form of
/// the message's version, in the order the version prescribes.
pub(crate) struct AssociatedData {
    pub(crate) first: WireKey,
    pub(crate) second: WireKey,
}

/// The header of a ratchet message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The sender's current ratchet public key.
    pub(crate) ratchet_key: PublicKey,
    /// `n`: the index of the message in the sender's chain.
    pub(crate) counter: u32,
    /// `pn`: the length of the sender's previous chain.
    pub(crate) previous_counter: u32,
}

/// A Double Ratchet message: the header, the encrypted key material and a MAC. Legacy
/// OMEMO calls it `SignalMessage`, OMEMO 2 `OMEMOAuthenticatedMessage`. Parsing keeps the
/// bytes the MAC covers exactly as received.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticatedMessage {
    version: Version,
    header: Header,
    ciphertext: Vec<u8>,
    /// The whole message as sent (for OMEMO 2, the canonical encoding of what arrived).
    serialized: Vec<u8>,
    /// The bytes of `serialized` that the MAC covers after the associated data.
    covered: Range<usize>,
    /// The bytes of `serialized` that hold the MAC.
    mac: Range<usize>,
}

impl AuthenticatedMessage {
    /// Parses a received message of `version`.
    pub fn from_bytes(version: Version, bytes: &[u8]) -> Result<Self, DecodeError> {
        match version {
            Version::Legacy => legacy::decode_message(bytes),
            Version::Omemo2 => omemo2::decode_message(bytes),
        }
    }

    /// Builds and MACs a message.
    pub(crate) fn new(
        version: Version,
        mac_key: &[u8; 32],
        associated_data: &AssociatedData,
        header: Header,
        ciphertext: Vec<u8>,
    ) -> Self {
        let mut message = match version {
            Version::Legacy => legacy::encode_message(&header, ciphertext),
            Version::Omemo2 => omemo2::encode_message(&header, ciphertext),
        };
        let mac = message.compute_mac(mac_key, associated_data);
        let range = message.mac.clone();
        message.serialized[range].copy_from_slice(&mac[..version.mac_length()]);
        message
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The sender's current ratchet public key.
    pub fn ratchet_key(&self) -> &PublicKey {
        &self.header.ratchet_key
    }

    /// The index of this message in the sender's chain (`n`).
    pub fn counter(&self) -> u32 {
        self.header.counter
    }

    /// The length of the sender's previous chain (`pn`).
    pub fn previous_counter(&self) -> u32 {
        self.header.previous_counter
    }

    /// The complete message as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.serialized
    }

    pub(crate) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// HMAC-SHA-256 over the associated data and the covered bytes (untruncated).
    fn compute_mac(&self, mac_key: &[u8; 32], associated_data: &AssociatedData) -> [u8; 32] {
        let mut mac = hmac_sha256(mac_key);
        mac.update(&associated_data.first);
        mac.update(&associated_data.second);
        mac.update(&self.serialized[self.covered.clone()]);
        mac.finalize().into_bytes().into()
    }

    /// Checks the MAC in constant time.
    pub(crate) fn verify_mac(&self, mac_key: &[u8; 32], associated_data: &AssociatedData) -> bool {
        let expected = self.compute_mac(mac_key, associated_data);
        expected[..self.version.mac_length()]
            .ct_eq(&self.serialized[self.mac.clone()])
            .into()
    }
}

impl fmt::Debug for AuthenticatedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedMessage")
            .field("version", &self.version)
            .field("ratchet_key", &self.header.ratchet_key)
            .field("counter", &self.header.counter)
            .field("previous_counter", &self.header.previous_counter)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A key exchange: the X3DH values the responder needs and the first
/// [`AuthenticatedMessage`]. Legacy OMEMO calls it `PreKeySignalMessage`, OMEMO 2
/// `OMEMOKeyExchange`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyExchange {
    version: Version,
    registration_id: Option<u32>,
    pre_key_id: Option<u32>,
    signed_pre_key_id: u32,
    base_key: PublicKey,
    identity_key: IdentityKey,
    message: AuthenticatedMessage,
    serialized: Vec<u8>,
}

/// The X3DH values of a key exchange, without the message.
#[derive(Clone, Copy)]
pub(crate) struct KeyExchangeHeader {
    pub(crate) pre_key_id: u32,
    pub(crate) signed_pre_key_id: u32,
    pub(crate) base_key: PublicKey,
    pub(crate) identity_key: IdentityKey,
}

impl KeyExchange {
    /// Parses a received key exchange of `version`.
    pub fn from_bytes(version: Version, bytes: &[u8]) -> Result<Self, DecodeError> {
        match version {
            Version::Legacy => legacy::decode_key_exchange(bytes),
            Version::Omemo2 => omemo2::decode_key_exchange(bytes),
        }
    }

    /// Wraps `message` (of the same version) in a key exchange.
    pub(crate) fn new(
        header: KeyExchangeHeader,
        message: AuthenticatedMessage,
    ) -> Result<Self, KeyError> {
        let serialized = match message.version {
            Version::Legacy => legacy::encode_key_exchange(&header, &message),
            Version::Omemo2 => omemo2::encode_key_exchange(&header, &message)?,
        };
        Ok(Self {
            version: message.version,
            registration_id: None,
            pre_key_id: Some(header.pre_key_id),
            signed_pre_key_id: header.signed_pre_key_id,
            base_key: header.base_key,
            identity_key: header.identity_key,
            message,
            serialized,
        })
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The id of the one-time prekey used (absent only in legacy messages, which
    /// deployed clients refuse).
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

    /// libsignal's registration id, which libsignal senders set in legacy messages and
    /// nobody else does.
    pub fn registration_id(&self) -> Option<u32> {
        self.registration_id
    }

    /// The ratchet message inside.
    pub fn message(&self) -> &AuthenticatedMessage {
        &self.message
    }

    /// The complete message as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.serialized
    }
}

impl fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyExchange")
            .field("version", &self.version)
            .field("pre_key_id", &self.pre_key_id)
            .field("signed_pre_key_id", &self.signed_pre_key_id)
            .field("base_key", &self.base_key)
            .field("identity_key", &self.identity_key)
            .field("message", &self.message)
            .finish()
    }
}

/// What one `<key>` element carries: a ratchet message, or a key exchange wrapping one
/// while the session is not yet confirmed by the other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RatchetMessage {
    /// A ratchet message (`<key>` without `prekey` / `kex`).
    Authenticated(AuthenticatedMessage),
    /// A key exchange (`<key prekey='true'>` in legacy OMEMO, `<key kex='true'>` in
    /// OMEMO 2).
    KeyExchange(KeyExchange),
}

impl RatchetMessage {
    /// Parses received bytes of `version`; `key_exchange` is the `<key>` element's
    /// `prekey` (legacy) or `kex` (OMEMO 2) attribute.
    pub fn from_bytes(
        version: Version,
        bytes: &[u8],
        key_exchange: bool,
    ) -> Result<Self, DecodeError> {
        Ok(if key_exchange {
            Self::KeyExchange(KeyExchange::from_bytes(version, bytes)?)
        } else {
            Self::Authenticated(AuthenticatedMessage::from_bytes(version, bytes)?)
        })
    }

    /// The bytes to put in the `<key>` element.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Authenticated(m) => m.as_bytes(),
            Self::KeyExchange(m) => m.as_bytes(),
        }
    }

    /// Whether this is a key exchange (`prekey='true'` / `kex='true'`).
    pub fn is_key_exchange(&self) -> bool {
        matches!(self, Self::KeyExchange(_))
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        match self {
            Self::Authenticated(m) => m.version(),
            Self::KeyExchange(m) => m.version(),
        }
    }

    /// The ratchet message, inside the key exchange if it is one.
    pub fn authenticated(&self) -> &AuthenticatedMessage {
        match self {
            Self::Authenticated(m) => m,
            Self::KeyExchange(m) => m.message(),
        }
    }
}

/// A required field, or [`DecodeError::MissingField`].
fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField(field))
}

/// A required public key field in the wire form of `version`.
fn key_field(
    version: Version,
    field: &'static str,
    bytes: Option<Vec<u8>>,
) -> Result<PublicKey, DecodeError> {
    PublicKey::from_wire(version, &required(bytes, field)?)
        .map_err(|source| DecodeError::Key { field, source })
}

/// A required identity key field in the wire form of `version`.
fn identity_field(
    version: Version,
    field: &'static str,
    bytes: Option<Vec<u8>>,
) -> Result<IdentityKey, DecodeError> {
    IdentityKey::from_wire(version, &required(bytes, field)?)
        .map_err(|source| DecodeError::Key { field, source })
}

fn protobuf(error: prost::DecodeError) -> DecodeError {
    DecodeError::Protobuf(error.to_string())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::keys::{IdentityKeyPair, SecretKey};
    use crate::os_rng;

    fn key() -> PublicKey {
        SecretKey::generate(&mut os_rng()).public_key()
    }

    /// A message of `version` with a MAC under an arbitrary key.
    fn authenticated(version: Version, ciphertext: Vec<u8>) -> AuthenticatedMessage {
        let identity = IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let wire = identity.to_wire(version).unwrap();
        let associated_data = AssociatedData {
            first: wire,
            second: wire,
        };
        AuthenticatedMessage::new(version, &[3; 32], &associated_data, header(), ciphertext)
    }

    fn header() -> Header {
        Header {
            ratchet_key: key(),
            counter: 0,
            previous_counter: 0,
        }
    }

    fn key_exchange(version: Version) -> KeyExchange {
        let identity = IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let message = authenticated(version, vec![7; 48]);
        let kex_header = KeyExchangeHeader {
            pre_key_id: 9,
            signed_pre_key_id: 1,
            base_key: key(),
            identity_key: identity,
        };
        KeyExchange::new(kex_header, message).unwrap()
    }

    /// An `OMEMOKeyExchange` of `message`'s fields with `edit` applied, encoded.
    fn edited_omemo2(edit: impl FnOnce(&mut omemo2_proto::OmemoKeyExchange)) -> Vec<u8> {
        let mut fields =
            omemo2_proto::OmemoKeyExchange::decode(key_exchange(Version::Omemo2).as_bytes())
                .unwrap();
        edit(&mut fields);
        fields.encode_to_vec()
    }

    #[test]
    fn messages_decode_to_what_was_encoded_in_both_versions() {
        for version in Version::ALL {
            let kex = key_exchange(version);
            let parsed = KeyExchange::from_bytes(version, kex.as_bytes()).unwrap();
            assert_eq!(parsed.pre_key_id(), Some(9));
            assert_eq!(parsed.signed_pre_key_id(), 1);
            assert_eq!(parsed.base_key(), kex.base_key());
            // Both forms of the identity: equality compares the Curve25519 form only.
            assert_eq!(
                parsed.identity_key().to_wire(version).unwrap(),
                kex.identity_key().to_wire(version).unwrap()
            );
            assert_eq!(parsed.identity_key(), kex.identity_key());
            // The embedded message is rebuilt from its parts (OMEMO 2) or kept (legacy);
            // either way it is the message that was sent.
            assert_eq!(parsed.message().as_bytes(), kex.message().as_bytes());
            assert_eq!(parsed.message().counter(), 0);
            assert_eq!(parsed.message().ciphertext(), &[7; 48]);
            let message = RatchetMessage::from_bytes(version, kex.message().as_bytes(), false);
            assert!(!message.unwrap().is_key_exchange());
            // The other version's parser does not accept it.
            let other = match version {
                Version::Legacy => Version::Omemo2,
                Version::Omemo2 => Version::Legacy,
            };
            assert!(KeyExchange::from_bytes(other, kex.as_bytes()).is_err());
        }
    }

    #[test]
    fn omemo2_zero_counters_are_on_the_wire() {
        let message = authenticated(Version::Omemo2, vec![1; 16]);
        let bytes = message.as_bytes();
        // 0a 10 <mac> 12 <len> 08 00 10 00 1a 20 <dh_pub> 22 10 <ciphertext>
        assert_eq!(&bytes[..2], &[0x0a, 0x10]);
        assert_eq!(&bytes[20..26], &[0x08, 0x00, 0x10, 0x00, 0x1a, 0x20]);
    }

    #[test]
    fn omemo2_fields_of_the_wrong_size_or_missing_are_typed_errors() {
        let outer = |mac: Option<Vec<u8>>, message: Option<Vec<u8>>| {
            omemo2_proto::OmemoAuthenticatedMessage { mac, message }.encode_to_vec()
        };
        let inner = authenticated(Version::Omemo2, vec![1; 16]);
        let body = inner.as_bytes()[20..].to_vec();
        assert_eq!(
            AuthenticatedMessage::from_bytes(
                Version::Omemo2,
                &outer(Some(vec![0; 15]), Some(body.clone()))
            )
            .map(drop),
            Err(DecodeError::FieldLength {
                field: "mac",
                expected: 16,
                actual: 15
            })
        );
        assert_eq!(
            AuthenticatedMessage::from_bytes(Version::Omemo2, &outer(Some(vec![0; 16]), None))
                .map(drop),
            Err(DecodeError::MissingField("message"))
        );
        // A legacy-shaped ratchet key (0x05 and 32 bytes) in an OMEMO 2 message.
        let mut message = omemo2_proto::OmemoMessage::decode(body.as_slice()).unwrap();
        let mut legacy_key = vec![0x05];
        legacy_key.extend_from_slice(message.dh_pub.as_deref().unwrap());
        message.dh_pub = Some(legacy_key);
        assert!(matches!(
            AuthenticatedMessage::from_bytes(
                Version::Omemo2,
                &outer(Some(vec![0; 16]), Some(message.encode_to_vec()))
            ),
            Err(DecodeError::Key {
                field: "dh_pub",
                source: KeyError::InvalidLength { actual: 33, .. }
            })
        ));

        assert_eq!(
            KeyExchange::from_bytes(Version::Omemo2, &edited_omemo2(|f| f.ik = None)).map(drop),
            Err(DecodeError::MissingField("ik"))
        );
        assert_eq!(
            KeyExchange::from_bytes(Version::Omemo2, &edited_omemo2(|f| f.pk_id = None)).map(drop),
            Err(DecodeError::MissingField("pk_id"))
        );
        // The Ed25519 identity point (order 1) and a non-canonical encoding of it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for ik in [identity, [0xff; 32]] {
            assert!(
                matches!(
                    KeyExchange::from_bytes(
                        Version::Omemo2,
                        &edited_omemo2(|f| f.ik = Some(ik.to_vec()))
                    ),
                    Err(DecodeError::Key { field: "ik", .. })
                ),
                "{ik:02x?}"
            );
        }
    }

    #[test]
    fn legacy_keys_in_the_omemo2_form_are_refused() {
        let kex = key_exchange(Version::Legacy);
        let mut fields = legacy_proto::PreKeySignalMessage::decode(&kex.as_bytes()[1..]).unwrap();
        let identity = fields.identity_key.take().unwrap();
        fields.identity_key = Some(identity[1..].to_vec());
        let mut bytes = vec![0x33];
        fields.encode(&mut bytes).unwrap();
        assert!(matches!(
            KeyExchange::from_bytes(Version::Legacy, &bytes),
            Err(DecodeError::Key {
                field: "identityKey",
                source: KeyError::InvalidLength { actual: 32, .. }
            })
        ));
    }
}
