//! The legacy OMEMO layouts (libsignal v3): `0x33 ‖ SignalMessage ‖ MAC8` and
//! `0x33 ‖ PreKeySignalMessage`.

use prost::Message;

use super::legacy_proto as proto;
use super::{
    AuthenticatedMessage, Header, KeyExchange, KeyExchangeHeader, identity_field, key_field,
    protobuf, required,
};
use crate::consts::{LEGACY_MAC_LENGTH, LEGACY_VERSION_BYTE};
use crate::error::DecodeError;
use crate::version::Version;

const VERSION: Version = Version::Legacy;

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

/// `0x33 ‖ protobuf ‖ MAC8`, with the MAC bytes zero until the caller fills them in.
pub(super) fn encode_message(header: &Header, ciphertext: Vec<u8>) -> AuthenticatedMessage {
    let body = proto::SignalMessage {
        ratchet_key: Some(header.ratchet_key.to_wire(VERSION).to_vec()),
        counter: Some(header.counter),
        previous_counter: Some(header.previous_counter),
        ciphertext: Some(ciphertext),
    };
    let mut serialized = Vec::with_capacity(1 + body.encoded_len() + LEGACY_MAC_LENGTH);
    serialized.push(LEGACY_VERSION_BYTE);
    body.encode_raw(&mut serialized);
    let covered = 0..serialized.len();
    serialized.resize(covered.end + LEGACY_MAC_LENGTH, 0);
    AuthenticatedMessage {
        version: VERSION,
        header: *header,
        ciphertext: body.ciphertext.unwrap_or_default(),
        mac: covered.end..serialized.len(),
        covered,
        serialized,
    }
}

pub(super) fn decode_message(bytes: &[u8]) -> Result<AuthenticatedMessage, DecodeError> {
    let rest = check_version(bytes, 1 + LEGACY_MAC_LENGTH)?;
    let body =
        proto::SignalMessage::decode(&rest[..rest.len() - LEGACY_MAC_LENGTH]).map_err(protobuf)?;
    let end = bytes.len() - LEGACY_MAC_LENGTH;
    Ok(AuthenticatedMessage {
        version: VERSION,
        header: Header {
            ratchet_key: key_field(VERSION, "ratchetKey", body.ratchet_key)?,
            counter: required(body.counter, "counter")?,
            // libsignal does not require it.
            previous_counter: body.previous_counter.unwrap_or(0),
        },
        ciphertext: required(body.ciphertext, "ciphertext")?,
        serialized: bytes.to_vec(),
        covered: 0..end,
        mac: end..bytes.len(),
    })
}

/// The bytes of a `PreKeySignalMessage` (version byte first) carrying `message`.
pub(super) fn encode_key_exchange(
    header: &KeyExchangeHeader,
    message: &AuthenticatedMessage,
) -> Vec<u8> {
    let body = proto::PreKeySignalMessage {
        registration_id: None,
        pre_key_id: Some(header.pre_key_id),
        signed_pre_key_id: Some(header.signed_pre_key_id),
        base_key: Some(header.base_key.to_wire(VERSION).to_vec()),
        identity_key: Some(header.identity_key.curve25519().to_wire(VERSION).to_vec()),
        message: Some(message.serialized.clone()),
    };
    let mut serialized = Vec::with_capacity(1 + body.encoded_len());
    serialized.push(LEGACY_VERSION_BYTE);
    body.encode_raw(&mut serialized);
    serialized
}

pub(super) fn decode_key_exchange(bytes: &[u8]) -> Result<KeyExchange, DecodeError> {
    let rest = check_version(bytes, 1)?;
    let body = proto::PreKeySignalMessage::decode(rest).map_err(protobuf)?;
    let identity_key = identity_field(VERSION, "identityKey", body.identity_key)?;
    let inner = required(body.message, "message")?;
    Ok(KeyExchange {
        version: VERSION,
        registration_id: body.registration_id,
        pre_key_id: body.pre_key_id,
        signed_pre_key_id: required(body.signed_pre_key_id, "signedPreKeyId")?,
        base_key: key_field(VERSION, "baseKey", body.base_key)?,
        identity_key,
        message: decode_message(&inner)?,
        serialized: bytes.to_vec(),
    })
}
