//! The OMEMO 2 layouts: `OMEMOAuthenticatedMessage { mac, OMEMOMessage }` and
//! `OMEMOKeyExchange { pk_id, spk_id, ik, ek, OMEMOAuthenticatedMessage }`.

use prost::Message;

use super::omemo2_proto as proto;
use super::{
    AuthenticatedMessage, Header, KeyExchange, KeyExchangeHeader, identity_field, key_field,
    protobuf, required,
};
use crate::consts::OMEMO2_MAC_LENGTH;
use crate::error::{DecodeError, KeyError};
use crate::version::Version;

const VERSION: Version = Version::Omemo2;

/// Protobuf key of field 1 with the length-delimited wire type.
const FIELD_1_BYTES: u8 = 0x0a;
/// Protobuf key of field 2 with the length-delimited wire type.
const FIELD_2_BYTES: u8 = 0x12;
/// Protobuf key of field 5 with the length-delimited wire type.
const FIELD_5_BYTES: u8 = 0x2a;

/// Appends a length-delimited field: its key, the length, the bytes.
fn put_field(out: &mut Vec<u8>, key: u8, bytes_len: usize) {
    out.push(key);
    // Writing a varint to a Vec cannot fail.
    let _ = prost::encode_length_delimiter(bytes_len, out);
}

/// `OMEMOAuthenticatedMessage { 1: mac, 2: OMEMOMessage }` in field order, with the MAC
/// bytes zero until the caller fills them in.
pub(super) fn encode_message(header: &Header, ciphertext: Vec<u8>) -> AuthenticatedMessage {
    let body = proto::OmemoMessage {
        n: Some(header.counter),
        pn: Some(header.previous_counter),
        dh_pub: Some(header.ratchet_key.as_bytes().to_vec()),
        ciphertext: Some(ciphertext),
    };
    let body_len = body.encoded_len();
    let mut serialized = Vec::with_capacity(2 + OMEMO2_MAC_LENGTH + 1 + 2 + body_len);
    put_field(&mut serialized, FIELD_1_BYTES, OMEMO2_MAC_LENGTH);
    let mac = serialized.len()..serialized.len() + OMEMO2_MAC_LENGTH;
    serialized.resize(mac.end, 0);
    put_field(&mut serialized, FIELD_2_BYTES, body_len);
    let start = serialized.len();
    body.encode_raw(&mut serialized);
    AuthenticatedMessage {
        version: VERSION,
        header: *header,
        ciphertext: body.ciphertext.unwrap_or_default(),
        covered: start..serialized.len(),
        mac,
        serialized,
    }
}

pub(super) fn decode_message(bytes: &[u8]) -> Result<AuthenticatedMessage, DecodeError> {
    let outer = proto::OmemoAuthenticatedMessage::decode(bytes).map_err(protobuf)?;
    from_parts(outer)
}

/// The message from its decoded outer layer. Its `serialized` is the canonical encoding
/// of the two fields; the MAC covers the `message` bytes as received.
fn from_parts(
    outer: proto::OmemoAuthenticatedMessage,
) -> Result<AuthenticatedMessage, DecodeError> {
    let mac = required(outer.mac, "mac")?;
    if mac.len() != OMEMO2_MAC_LENGTH {
        return Err(DecodeError::FieldLength {
            field: "mac",
            expected: OMEMO2_MAC_LENGTH,
            actual: mac.len(),
        });
    }
    let inner = required(outer.message, "message")?;
    let body = proto::OmemoMessage::decode(inner.as_slice()).map_err(protobuf)?;
    let header = Header {
        counter: required(body.n, "n")?,
        previous_counter: required(body.pn, "pn")?,
        ratchet_key: key_field(VERSION, "dh_pub", body.dh_pub)?,
    };
    let ciphertext = required(body.ciphertext, "ciphertext")?;
    let mut serialized = Vec::with_capacity(2 + OMEMO2_MAC_LENGTH + 1 + 2 + inner.len());
    put_field(&mut serialized, FIELD_1_BYTES, mac.len());
    let mac_range = serialized.len()..serialized.len() + mac.len();
    serialized.extend_from_slice(&mac);
    put_field(&mut serialized, FIELD_2_BYTES, inner.len());
    let start = serialized.len();
    serialized.extend_from_slice(&inner);
    Ok(AuthenticatedMessage {
        version: VERSION,
        header,
        ciphertext,
        covered: start..serialized.len(),
        mac: mac_range,
        serialized,
    })
}

/// The bytes of an `OMEMOKeyExchange` in field order; field 5 holds the message's own
/// encoding.
pub(super) fn encode_key_exchange(
    header: &KeyExchangeHeader,
    message: &AuthenticatedMessage,
) -> Result<Vec<u8>, KeyError> {
    let fields = proto::OmemoKeyExchange {
        pk_id: Some(header.pre_key_id),
        spk_id: Some(header.signed_pre_key_id),
        ik: Some(header.identity_key.to_wire(VERSION)?.to_vec()),
        ek: Some(header.base_key.as_bytes().to_vec()),
        message: None,
    };
    let mut serialized = Vec::with_capacity(fields.encoded_len() + 3 + message.serialized.len());
    fields.encode_raw(&mut serialized);
    put_field(&mut serialized, FIELD_5_BYTES, message.serialized.len());
    serialized.extend_from_slice(&message.serialized);
    Ok(serialized)
}

pub(super) fn decode_key_exchange(bytes: &[u8]) -> Result<KeyExchange, DecodeError> {
    let fields = proto::OmemoKeyExchange::decode(bytes).map_err(protobuf)?;
    Ok(KeyExchange {
        version: VERSION,
        registration_id: None,
        // The XEP: a key exchange without a one-time prekey MUST be rejected.
        pre_key_id: Some(required(fields.pk_id, "pk_id")?),
        signed_pre_key_id: required(fields.spk_id, "spk_id")?,
        identity_key: identity_field(VERSION, "ik", fields.ik)?,
        base_key: key_field(VERSION, "ek", fields.ek)?,
        message: from_parts(required(fields.message, "message")?)?,
        serialized: bytes.to_vec(),
    })
}
