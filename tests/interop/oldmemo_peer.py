#!/usr/bin/env python3
"""One legacy-OMEMO (eu.siacs.conversations.axolotl) device, driven over stdin/stdout.

This is the legacy reference peer of the cross-implementation tests; the JSON-lines
protocol it speaks is specified in PROTOCOL.md beside this file. The cryptography is
entirely done by python-omemo's stack (the `oldmemo` backend over `omemo`, `x3dh`,
`doubleratchet` and `xeddsa`), installed into the project's venv by scripts/setup-test-env.
Only that stack's public API is called here; none of its code is copied.

The session bookkeeping (key exchange repeated until something was decrypted, passive
sessions, prekey deletion, storing only after success), the storage and the request loop
are shared with twomemo_peer.py in peer_common.py. This file adds the legacy wire forms:
33-byte `05 || u` public keys, XEdDSA sign bits, `0x33`-versioned Signal messages, the
AES-128-GCM payload with its IV.

The *_xml requests (in peer_common.py) do the same with XEP-0384 v0.3 XML instead of JSON
shapes, serialized and parsed by oldmemo's own `oldmemo.etree` (which validates against its
XML schema).

stdout carries only protocol lines (flushed after each one); all logging goes to stderr.
Set OLDMEMO_PEER_LOG=debug (or info, warning...) to change the log level (default:
warning).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import xeddsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from omemo import DeviceList, DeviceListDownloadFailed, Message, Storage
from oldmemo import etree as oldmemo_etree
from oldmemo.oldmemo import (
    NAMESPACE,
    BundleImpl,
    ContentImpl,
    EncryptedKeyMaterialImpl,
    KeyExchangeImpl,
    Oldmemo,
    PlainKeyMaterialImpl,
    StateImpl,
)

import peer_common
from peer_common import BasePeer, ProtocolError, hex_field

# ---------------------------------------------------------------------------------------
# JSON <-> python-omemo objects
# ---------------------------------------------------------------------------------------


def wire_key(obj: Any, name: str) -> bytes:
    """Fetch a public key in the 33-byte wire form (05 || u) and return the 32-byte u."""
    data = hex_field(obj, name, length=33)
    if data[0] != 0x05:
        raise ProtocolError(f"field {name!r} must start with the 0x05 key type byte")
    return data[1:]


def bundle_to_json(bundle: BundleImpl) -> Dict[str, Any]:
    """Serialise our own bundle the way a legacy client publishes it.

    python-omemo's identity key is an Ed25519 key whose sign bit may be 1; the wire form
    is its Curve25519 (Montgomery) u with the 0x05 prefix, and the sign bit travels in the
    top bit of the signature's last byte, which XEdDSA verifiers (libsignal's
    xed25519_verify) read back from there.
    """
    inner = bundle.bundle
    signature = bytearray(inner.signed_pre_key_sig)
    signature[63] |= inner.identity_key[31] & 0x80
    identity_curve = xeddsa.ed25519_pub_to_curve25519_pub(inner.identity_key)
    return peer_common.bundle_to_json(
        bundle,
        StateImpl.serialize_public_key(identity_curve),
        bytes(signature),
        StateImpl.serialize_public_key,
    )


def identity_from_wire(identity_curve: bytes, wire_signature: bytes) -> Tuple[bytes, bytes]:
    """The Ed25519 identity key and plain Ed25519 signature of a legacy bundle.

    The identity key's Ed25519 sign bit is taken from the signature's top bit, then
    cleared there so that a plain Ed25519 verification of the signature works.
    """
    signature = bytearray(wire_signature)
    sign_bit = bool(signature[63] & 0x80)
    signature[63] &= 0x7F
    return xeddsa.curve25519_pub_to_ed25519_pub(identity_curve, sign_bit), bytes(signature)


def bundle_from_json(obj: Any, jid: str, device_id: int) -> BundleImpl:
    """Parse a peer's bundle (the inverse of bundle_to_json, for any legacy client)."""
    return peer_common.bundle_from_json(obj, jid, device_id, BundleImpl, wire_key, identity_from_wire)


# ---------------------------------------------------------------------------------------
# XML (XEP-0384 v0.3, eu.siacs.conversations.axolotl) through oldmemo.etree
# ---------------------------------------------------------------------------------------


class SenderLookup:
    """The one thing oldmemo.etree.parse_message asks of a SessionManager: the sending
    device's identity key, for the Ed25519 sign bit that the legacy key exchange lacks.

    As in op_decrypt, a fixed sign bit of 0 is used (an all-zero key: only its top bit is
    read). A sid other than the peer's device id finds no device, and the device list
    "refresh" fails, so oldmemo reports SenderNotFound.
    """

    def __init__(self, bare_jid: str, device_id: int) -> None:
        self.bare_jid = bare_jid
        self.device_id = device_id

    async def get_device_information(self, bare_jid: str) -> List[SimpleNamespace]:
        if bare_jid != self.bare_jid:
            return []
        return [SimpleNamespace(device_id=self.device_id, identity_key=bytes(32))]

    async def refresh_device_list(self, namespace: str, bare_jid: str) -> None:
        raise DeviceListDownloadFailed(f"the sender is {self.bare_jid}/{self.device_id}")


# ---------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------


class Peer(BasePeer):
    NAME = "oldmemo_peer"
    NAMESPACE = NAMESPACE
    # serialize_message (encrypt_xml) writes <key rid prekey='true'> for a key exchange,
    # and leaves out <payload> when the content is empty, which includes a zero-length
    # ciphertext (plaintext ""): oldmemo's XML cannot tell that from an empty message.
    ETREE = oldmemo_etree
    XML_GAPS = "a missing sid or signedPreKeyId attribute, or an empty element such as <payload/>?"

    # --- the legacy wire forms ---------------------------------------------------------

    def new_backend(self, storage: Storage) -> Oldmemo:
        return Oldmemo(storage)

    def bundle_to_json(self, bundle: Any) -> Dict[str, Any]:
        return bundle_to_json(bundle)

    def bundle_from_json(self, obj: Any, jid: str, device_id: int) -> BundleImpl:
        return bundle_from_json(obj, jid, device_id)

    def serialize_key_exchange(self, key_exchange: Any, authenticated: bytes) -> bytes:
        # 0x33 || PreKeySignalMessage, which holds 0x33 || SignalMessage || MAC8 in its
        # field 4.
        key, _sign_bit = key_exchange.serialize(authenticated)
        return bytes(key)

    def parse_key_exchange(self, key: bytes) -> Tuple[KeyExchangeImpl, bytes]:
        # The Ed25519 sign bit of the sender's identity key is not on the wire; python-
        # omemo looks it up in the sender's bundle. It only matters for comparing
        # identity keys, never for the crypto (X3DH and the associated data use the
        # Curve25519 form), so a fixed False keeps our comparisons consistent.
        return KeyExchangeImpl.parse(key, False)

    def parse_authenticated(self, authenticated: bytes, jid: str, device_id: int) -> EncryptedKeyMaterialImpl:
        # 0x33 || SignalMessage || MAC8
        return EncryptedKeyMaterialImpl.parse(authenticated, jid, device_id)

    def content_iv(self, content: Any) -> Optional[str]:
        # AES-128-GCM with a 12-byte IV; the ratchet carries key || tag. An empty message
        # carries a random 16-byte key (and an IV that means nothing).
        return str(content.initialization_vector.hex())

    def parse_content(self, msg: Dict[str, Any]) -> Optional[ContentImpl]:
        iv = hex_field(msg, "iv")
        payload = hex_field(msg, "payload", nullable=True)
        return None if payload is None else ContentImpl(payload, iv)

    async def decrypt_content(self, content: Any, key_material: Any) -> bytes:
        assert isinstance(content, ContentImpl) and isinstance(key_material, PlainKeyMaterialImpl)
        if content.empty:
            # oldmemo treats a zero-length ciphertext as an empty message and refuses
            # to decrypt it; a zero-length payload is still a valid GCM message.
            return AESGCM(key_material.key).decrypt(content.initialization_vector, key_material.auth_tag, None)
        return await super().decrypt_content(content, key_material)

    # --- XML --------------------------------------------------------------------------

    async def parse_message_xml(self, element: ET.Element, jid: str, device_id: int) -> Message:
        # prekey='true' or '1' marks a key exchange, parsed with the sign bit SenderLookup
        # gives: 0, as in parse_key_exchange. oldmemo's <key> has no JID: each key's
        # material is labelled with our own bare JID and its rid.
        return await oldmemo_etree.parse_message(
            element, jid, self.jid, SenderLookup(jid, device_id)  # type: ignore[arg-type]
        )

    async def describe_devices(self, device_list: DeviceList, req: Dict[str, Any]) -> List[Any]:
        # The legacy <device> has only an id.
        return list(device_list)


if __name__ == "__main__":
    sys.exit(peer_common.main(Peer()))
