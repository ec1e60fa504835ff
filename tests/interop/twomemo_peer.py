#!/usr/bin/env python3
"""One OMEMO 2 (urn:xmpp:omemo:2) device, driven over stdin/stdout.

This is the OMEMO 2 reference peer of the cross-implementation tests; it speaks the JSON
requests init, bundle, encrypt, decrypt and quit of PROTOCOL.md beside this file, with the
OMEMO 2 shapes of its section "The twomemo peer", and the XML requests of its section
"OMEMO 2 XML". The cryptography is entirely done by
python-omemo's stack (the `twomemo` backend over `omemo`, `x3dh`, `doubleratchet` and
`xeddsa`), installed into the project's venv by scripts/setup-test-env. Only that stack's
public API is called here; none of its code is copied.

The session bookkeeping (key exchange repeated until something was decrypted, passive
sessions, prekey deletion, storing only after success), the storage and the request loop
are shared with oldmemo_peer.py in peer_common.py. This file adds the OMEMO 2 wire forms:
raw 32-byte public keys (the identity key Ed25519, the others X25519), a plain Ed25519
signature of the signed prekey, OMEMOKeyExchange / OMEMOAuthenticatedMessage protobufs,
and the AES-256-CBC payload whose IV comes from the key (so there is no `iv`).

The payload is the plaintext's UTF-8 bytes as they are: the SCE envelope (XEP-0420) that
OMEMO 2 clients put around the body is not made or checked here.

The *_xml requests (in peer_common.py, with own_device_list_xml and the label checks of
device_list_xml here) do the same with OMEMO 2 XML instead of JSON shapes, serialized and
parsed by twomemo's own `twomemo.etree` (which validates against its XML schema); device
labels are signed and verified by twomemo's backend (sign_own_label /
verify_label_signature: a plain Ed25519 signature by the identity key of the label's UTF-8
bytes).

stdout carries only protocol lines (flushed after each one); all logging goes to stderr.
Set TWOMEMO_PEER_LOG=debug (or info, warning...) to change the log level (default:
warning).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from google.protobuf.message import EncodeError
from omemo import DeviceList, Message, SignedLabel, Storage
from twomemo import etree as twomemo_etree
from twomemo.twomemo import (NAMESPACE, BundleImpl, ContentImpl, EncryptedKeyMaterialImpl, KeyExchangeImpl,
                             PlainKeyMaterialImpl, Twomemo)

import peer_common
from peer_common import BasePeer, MemoryStorage, ProtocolError, field, hex_field, xml_to_string


def raw_key(obj: Any, name: str) -> bytes:
    """Fetch a public key: 32 raw bytes, no type prefix."""
    return bytes(hex_field(obj, name, length=32))


def raw_identity(identity_key: bytes, signature: bytes) -> Tuple[bytes, bytes]:
    """OMEMO 2 sends the Ed25519 identity key itself and a plain Ed25519 signature."""
    return identity_key, signature


def optional(req: Dict[str, Any], name: str) -> bool:
    """Whether a request member that may be null or absent is given."""
    return req.get(name) is not None


class Peer(BasePeer):
    NAME = "twomemo_peer"
    NAMESPACE = NAMESPACE
    # serialize_message (encrypt_xml) writes <keys jid><key rid kex='true'> for a key
    # exchange, and leaves out <payload> only for an empty message: plaintext "" is a
    # 16-byte CBC ciphertext.
    ETREE = twomemo_etree
    XML_GAPS = "a missing sid attribute, or an empty element such as <payload/>, <key/> or <ik/>?"

    def __init__(self) -> None:
        super().__init__()
        self.ops["own_device_list_xml"] = self.op_own_device_list_xml

    def new_backend(self, storage: Storage) -> Twomemo:
        return Twomemo(storage)

    def bundle_to_json(self, bundle: Any) -> Dict[str, Any]:
        # x3dh signs the raw 32-byte signed prekey with the Ed25519 identity key.
        inner = bundle.bundle
        return peer_common.bundle_to_json(bundle, inner.identity_key, inner.signed_pre_key_sig, bytes)

    def bundle_from_json(self, obj: Any, jid: str, device_id: int) -> BundleImpl:
        return peer_common.bundle_from_json(obj, jid, device_id, BundleImpl, raw_key, raw_identity)

    def serialize_key_exchange(self, key_exchange: Any, authenticated: bytes) -> bytes:
        # OMEMOKeyExchange {pk_id, spk_id, ik, ek, message: the OMEMOAuthenticatedMessage}
        return bytes(key_exchange.serialize(authenticated))

    def parse_key_exchange(self, key: bytes) -> Tuple[KeyExchangeImpl, bytes]:
        # The identity key is the full Ed25519 key: no sign bit to make up. The result
        # names the signed prekey and prekey by id only; build_session_passive looks them
        # up. protobuf's parser does not enforce the proto2 `required` fields, so bytes
        # without a `message` field parse here and only fail on re-serialisation.
        try:
            return KeyExchangeImpl.parse(key)
        except (ValueError, EncodeError) as e:
            raise ProtocolError("field 'key' is not an OMEMOKeyExchange") from e

    def parse_authenticated(self, authenticated: bytes, jid: str, device_id: int) -> EncryptedKeyMaterialImpl:
        # OMEMOAuthenticatedMessage {mac: 16 bytes, message: OMEMOMessage}
        return EncryptedKeyMaterialImpl.parse(authenticated, jid, device_id)

    def content_iv(self, content: Any) -> Optional[str]:
        # AES-256-CBC key, HMAC key and IV are all derived (HKDF) from the 32-byte key;
        # the ratchet carries key || 16-byte HMAC tag, or 32 zero bytes for an empty
        # message.
        return None

    def parse_content(self, msg: Dict[str, Any]) -> Optional[ContentImpl]:
        if msg.get("iv") is not None:
            raise ProtocolError("field 'iv' must be null or absent: OMEMO 2 derives the IV from the key")
        payload = hex_field(msg, "payload", nullable=True)
        if payload is None:
            return None
        if not payload:
            # twomemo's ContentImpl would take it for an empty message.
            raise ProtocolError("field 'payload' is zero-length: an AES-CBC ciphertext is at least "
                                "one block (an empty message has \"payload\": null)")
        return ContentImpl(payload)

    def check_empty(self, key_material: Any) -> None:
        # Stricter than python-omemo's SessionManager, which ignores the key material of
        # a message without payload: an empty OMEMO 2 message carries 32 zero bytes, so a
        # message whose payload was stripped is refused.
        assert isinstance(key_material, PlainKeyMaterialImpl)
        if key_material.key != bytes(PlainKeyMaterialImpl.KEY_LENGTH) or key_material.auth_tag:
            length = len(key_material.key) + len(key_material.auth_tag)
            raise ProtocolError(f"the key material of a message without payload is {length} bytes, "
                                "not 32 zero bytes (was the payload removed?)")

    # --- XML ------------------------------------------------------------------------------

    async def parse_message_xml(self, element: ET.Element, jid: str, device_id: int) -> Message:
        # kex='true' or '1' marks a key exchange; each key's material is labelled with the
        # JID of its <keys> and its rid.
        return twomemo_etree.parse_message(element, jid)

    async def op_own_device_list_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        backend = self.require_init()
        label = field(req, "label", str) if optional(req, "label") else None
        signed_label = None
        if label is not None:
            # Ed25519 by the identity key of label.encode("UTF-8"), random nonce.
            signed_label = SignedLabel(label=label, signature=await backend.sign_own_label(label))
        return {"xml": xml_to_string(twomemo_etree.serialize_device_list({self.device_id: signed_label}))}

    async def describe_devices(self, device_list: DeviceList, req: Dict[str, Any]) -> List[Any]:
        # parse_device_list gives a label only with both label and labelsig; a repeated id
        # keeps its first place but the attributes of its last <device>.
        identity_key = hex_field(req, "identity_key", length=32) if optional(req, "identity_key") else None
        # Verification is a pure function of the backend: it needs no init.
        backend = self.backend or self.new_backend(MemoryStorage())
        devices = []
        for device_id, signed_label in device_list.items():
            label: Optional[str] = None
            valid: Optional[bool] = None
            if signed_label is not None:
                label = signed_label.label
                if identity_key is not None:
                    valid = await label_valid(backend, signed_label, identity_key)
            devices.append({"id": device_id, "label": label, "label_valid": valid})
        return devices


async def label_valid(backend: Twomemo, signed_label: SignedLabel, identity_key: bytes) -> bool:
    """twomemo's check of a label signature (a plain Ed25519 verification of the label's
    UTF-8 bytes with the 32-byte Ed25519 identity key)."""
    try:
        return bool(await backend.verify_label_signature(signed_label.label, signed_label.signature,
                                                         identity_key))
    except ValueError:
        # xeddsa.ed25519_verify raises on a signature that is not 64 bytes; python-omemo's
        # SessionManager would fail the whole device list update then.
        return False


if __name__ == "__main__":
    sys.exit(peer_common.main(Peer()))
