#!/usr/bin/env python3
"""One legacy-OMEMO (eu.siacs.conversations.axolotl) device, driven over stdin/stdout.

This is the reference peer of the cross-implementation tests; the JSON-lines protocol it
speaks is specified in PROTOCOL.md beside this file. The cryptography is entirely done by
python-omemo's stack (the `oldmemo` backend over `omemo`, `x3dh`, `doubleratchet` and
`xeddsa`), installed into the project's venv by scripts/setup-test-env. Only that stack's
public API is called here; none of its code is copied.

What this script adds around the backend is the bit of python-omemo's SessionManager
logic that the protocol asks for, without any XMPP (device lists, trust, bundles on PEP):

* An actively built session keeps sending its key exchange (prekey=true) until something
  has been decrypted on it (oldmemo marks the session "confirmed" then).
* A received key exchange for which a passive session built from the same key exchange
  already exists is decrypted with that session; any other key exchange replaces the
  session. After a successful passive build the used prekey is deleted (no refill).
* The session is stored only after the whole message decrypted successfully.

The *_xml requests do the same with XEP-0384 v0.3 XML instead of JSON shapes, serialized
and parsed by oldmemo's own `oldmemo.etree` (which validates against its XML schema).

stdout carries only protocol lines (flushed after each one); all logging goes to stderr.
Set OLDMEMO_PEER_LOG=debug (or info, warning...) to change the log level (default:
warning).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import sys
import traceback
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import x3dh
import xeddsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from omemo import DeviceListDownloadFailed, Just, Maybe, Message, Nothing, Storage
from omemo.session import Initiation
from omemo.types import JSONType
from oldmemo import etree as oldmemo_etree
from oldmemo.oldmemo import (
    NAMESPACE,
    BundleImpl,
    ContentImpl,
    EncryptedKeyMaterialImpl,
    KeyExchangeImpl,
    Oldmemo,
    PlainKeyMaterialImpl,
    SessionImpl,
    StateImpl,
)

LOG = logging.getLogger("oldmemo_peer")

# Number of prekeys a fresh device publishes (as python-omemo does).
NUM_PRE_KEYS = 100


class ProtocolError(Exception):
    """A request that is malformed or cannot be served; reported as {"ok": false}."""


class MemoryStorage(Storage):
    """The simplest omemo.Storage: a dict of JSON values, gone when the process exits."""

    def __init__(self) -> None:
        # The base class cache would only duplicate the dict.
        super().__init__(disable_cache=True)
        self.__data: Dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self.__data:
            return Just(copy.deepcopy(self.__data[key]))
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.__data[key] = copy.deepcopy(value)

    async def _delete(self, key: str) -> None:
        self.__data.pop(key, None)


# ---------------------------------------------------------------------------------------
# JSON <-> python-omemo objects
# ---------------------------------------------------------------------------------------


def field(obj: Any, name: str, kind: type, *, nullable: bool = False) -> Any:
    """Fetch a required member of a JSON object, checking its type."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object holding {name!r}, got {obj!r}")
    if name not in obj:
        raise ProtocolError(f"missing field {name!r}")
    value = obj[name]
    if value is None and nullable:
        return None
    # bool is a subclass of int: do not accept true/false where a number is expected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {name!r} must be {kind.__name__}, got {value!r}")
    return value


def hex_field(obj: Any, name: str, *, length: Optional[int] = None, nullable: bool = False) -> Any:
    """Fetch a hex-encoded bytes member, optionally checking its decoded length."""
    value = field(obj, name, str, nullable=nullable)
    if value is None:
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError as e:
        raise ProtocolError(f"field {name!r} is not hex: {e}") from e
    if length is not None and len(data) != length:
        raise ProtocolError(f"field {name!r} must be {length} bytes, got {len(data)}")
    return data


def wire_key(obj: Any, name: str) -> bytes:
    """Fetch a public key in the 33-byte wire form (05 || u) and return the 32-byte u."""
    data = hex_field(obj, name, length=33)
    if data[0] != 0x05:
        raise ProtocolError(f"field {name!r} must start with the 0x05 key type byte")
    return data[1:]


def peer_of(req: Dict[str, Any]) -> Tuple[str, int]:
    peer = field(req, "peer", dict)
    return field(peer, "jid", str), field(peer, "device_id", int)


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
    ids = bundle.pre_key_ids
    return {
        "identity_key": StateImpl.serialize_public_key(identity_curve).hex(),
        "signed_pre_key_id": bundle.signed_pre_key_id,
        "signed_pre_key": StateImpl.serialize_public_key(inner.signed_pre_key).hex(),
        "signed_pre_key_signature": bytes(signature).hex(),
        "pre_keys": [
            {"id": ids[key], "key": StateImpl.serialize_public_key(key).hex()}
            for key in sorted(inner.pre_keys, key=lambda k: ids[k])
        ],
    }


def bundle_from_json(obj: Any, jid: str, device_id: int) -> BundleImpl:
    """Parse a peer's bundle (the inverse of bundle_to_json, for any legacy client).

    The identity key's Ed25519 sign bit is taken from the signature's top bit, then
    cleared there so that a plain Ed25519 verification of the signature works.
    """
    identity_curve = wire_key(obj, "identity_key")
    signed_pre_key = wire_key(obj, "signed_pre_key")
    signature = bytearray(hex_field(obj, "signed_pre_key_signature", length=64))
    sign_bit = bool(signature[63] & 0x80)
    signature[63] &= 0x7F
    pre_key_ids: Dict[bytes, int] = {}
    for entry in field(obj, "pre_keys", list):
        pre_key_ids[wire_key(entry, "key")] = field(entry, "id", int)
    return BundleImpl(
        jid,
        device_id,
        x3dh.Bundle(
            xeddsa.curve25519_pub_to_ed25519_pub(identity_curve, sign_bit),
            signed_pre_key,
            bytes(signature),
            frozenset(pre_key_ids),
        ),
        field(obj, "signed_pre_key_id", int),
        pre_key_ids,
    )


def describe(exc: BaseException) -> str:
    """One line naming an exception and its explicit causes (`raise ... from`): oldmemo
    wraps the interesting error, e.g. DecryptionFailed <- AuthenticationFailedException."""
    parts = []
    seen = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        reason = getattr(cur, "reason", None)
        if isinstance(reason, str) and hasattr(cur, "path"):
            # xmlschema's errors print the schema component and the whole instance;
            # the reason and where it applies are enough.
            text = f"{reason} (at {cur.path})"
        else:
            text = str(cur)
        parts.append(f"{type(cur).__name__}: {text}" if text else type(cur).__name__)
        cur = cur.__cause__
    return " <- ".join(parts)


# ---------------------------------------------------------------------------------------
# XML (XEP-0384 v0.3, eu.siacs.conversations.axolotl) through oldmemo.etree
# ---------------------------------------------------------------------------------------


# Write the OMEMO namespace as the default namespace (xmlns='...'), as XMPP clients do;
# ElementTree would otherwise invent an `ns0:` prefix. (tostring's default_namespace
# option cannot be used: it rejects the unqualified attributes.)
ET.register_namespace("", NAMESPACE)


def xml_to_string(element: ET.Element) -> str:
    """An oldmemo.etree element as a string."""
    return ET.tostring(element, encoding="unicode")


def xml_field(obj: Any, name: str) -> ET.Element:
    """Fetch a member holding one XML element as a string and parse it."""
    text = field(obj, name, str)
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        raise ProtocolError(f"field {name!r} is not well-formed XML: {e}") from e


def oldmemo_xml_hint() -> ProtocolError:
    """oldmemo.etree reads some things the schema lets through with int(None) or
    b64decode(None); say what that usually means."""
    return ProtocolError(
        "oldmemo.etree failed on schema-valid XML: a missing sid or signedPreKeyId "
        "attribute, or an empty element such as <payload/>?"
    )


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


class Peer:
    def __init__(self) -> None:
        self.backend: Optional[Oldmemo] = None
        self.jid = ""
        self.device_id = 0

    def require_init(self) -> Oldmemo:
        if self.backend is None:
            raise ProtocolError("not initialised: send {\"op\": \"init\"} first")
        return self.backend

    async def handle(self, req: Any) -> Dict[str, Any]:
        op = field(req, "op", str)
        if op == "init":
            return await self.op_init(req)
        if op == "bundle":
            return {"bundle": bundle_to_json(await self.own_bundle())}
        if op == "bundle_xml":
            return {"xml": xml_to_string(oldmemo_etree.serialize_bundle(await self.own_bundle()))}
        if op == "encrypt":
            return await self.op_encrypt(req)
        if op == "encrypt_xml":
            return await self.op_encrypt_xml(req)
        if op == "decrypt":
            return await self.op_decrypt(req)
        if op == "decrypt_xml":
            return await self.op_decrypt_xml(req)
        if op == "device_list_xml":
            return self.op_device_list_xml(req)
        raise ProtocolError(f"unknown op {op!r}")

    async def own_bundle(self) -> BundleImpl:
        backend = self.require_init()
        return await backend.get_bundle(self.jid, self.device_id)

    async def op_init(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid = field(req, "jid", str)
        device_id = field(req, "device_id", int)
        # A new storage means a new identity: the backend creates the identity key (a
        # random Ed25519 seed) and the signed prekey lazily on first use.
        backend = Oldmemo(MemoryStorage())
        await backend.generate_pre_keys(NUM_PRE_KEYS)
        self.backend, self.jid, self.device_id = backend, jid, device_id
        LOG.info("initialised %s/%d", jid, device_id)
        return {"bundle": bundle_to_json(await self.own_bundle())}

    # --- encryption ----------------------------------------------------------------

    async def encrypt(
        self,
        jid: str,
        device_id: int,
        plaintext: Optional[str],
        peer_bundle: Callable[[], Optional[BundleImpl]],
    ) -> Tuple[ContentImpl, EncryptedKeyMaterialImpl, Optional[KeyExchangeImpl]]:
        """Encrypt for one device: the content, the ratchet message, and the session's key
        exchange while it has to be repeated (else None). `peer_bundle` is called only when
        there is no session yet."""
        backend = self.require_init()

        # Legacy payload: AES-128-GCM with a 12-byte IV; the ratchet carries key || tag.
        # An empty message carries a random 16-byte key and has no payload.
        if plaintext is None:
            content, key_material = await backend.encrypt_empty()
        else:
            content, key_material = await backend.encrypt_plaintext(plaintext.encode("utf-8"))

        session = await backend.load_session(jid, device_id)
        if session is None:
            bundle = peer_bundle()
            if bundle is None:
                raise ProtocolError(f"no session with {jid}/{device_id} and no bundle given")
            # Verifies the signed prekey signature and picks one of the bundle's prekeys
            # at random.
            session, encrypted = await backend.build_session_active(
                jid, device_id, bundle, key_material
            )
            LOG.info("built session with %s/%d actively (prekey id %d)",
                     jid, device_id, session.key_exchange.pre_key_id)
        else:
            encrypted = await backend.encrypt_key_material(session, key_material)

        key_exchange: Optional[KeyExchangeImpl] = None
        if session.initiation is Initiation.ACTIVE and not session.confirmed:
            key_exchange = session.key_exchange

        await backend.store_session(session)
        return content, encrypted, key_exchange

    async def op_encrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, device_id = peer_of(req)
        plaintext = field(req, "plaintext", str, nullable=True)

        def peer_bundle() -> Optional[BundleImpl]:
            if req.get("bundle") is None:
                return None
            return bundle_from_json(req["bundle"], jid, device_id)

        content, encrypted, key_exchange = await self.encrypt(jid, device_id, plaintext, peer_bundle)
        # 0x33 || SignalMessage || MAC8
        key = encrypted.serialize()
        if key_exchange is not None:
            # 0x33 || PreKeySignalMessage, which holds the above in its field 4.
            key, _sign_bit = key_exchange.serialize(key)
        return {
            "message": {
                "sid": self.device_id,
                "rid": device_id,
                "prekey": key_exchange is not None,
                "key": key.hex(),
                "iv": content.initialization_vector.hex(),
                "payload": None if plaintext is None else content.ciphertext.hex(),
            }
        }

    async def op_encrypt_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, device_id = peer_of(req)
        plaintext = field(req, "plaintext", str, nullable=True)

        def peer_bundle() -> Optional[BundleImpl]:
            if req.get("bundle_xml") is None:
                return None
            try:
                return oldmemo_etree.parse_bundle(xml_field(req, "bundle_xml"), jid, device_id)
            except TypeError as e:
                raise oldmemo_xml_hint() from e

        content, encrypted, key_exchange = await self.encrypt(jid, device_id, plaintext, peer_bundle)
        # serialize_message writes <key rid prekey='true'> for a key exchange, and leaves
        # out <payload> when the content is empty, which includes a zero-length ciphertext
        # (plaintext ""): oldmemo's XML cannot tell that from an empty message.
        message = Message(NAMESPACE, self.jid, self.device_id, content,
                          frozenset([(encrypted, key_exchange)]))
        return {"xml": xml_to_string(oldmemo_etree.serialize_message(message))}

    # --- decryption ----------------------------------------------------------------

    async def decrypt(
        self,
        jid: str,
        device_id: int,
        key_exchange: Optional[KeyExchangeImpl],
        encrypted: EncryptedKeyMaterialImpl,
        iv: bytes,
        payload: Optional[bytes],
    ) -> Optional[str]:
        """Decrypt one parsed message from jid/device_id (payload None: empty message)."""
        backend = self.require_init()
        session = await backend.load_session(jid, device_id)
        key_material: PlainKeyMaterialImpl
        if key_exchange is None:
            if session is None:
                raise ProtocolError(f"no session with {jid}/{device_id} and not a prekey message")
            key_material = await backend.decrypt_key_material(session, encrypted)
        elif (
            session is not None
            and session.initiation is Initiation.PASSIVE
            and session.key_exchange.builds_same_session(key_exchange)
        ):
            # A repeated key exchange of the session we already built from it.
            key_material = await backend.decrypt_key_material(session, encrypted)
        else:
            if session is not None:
                LOG.warning("key exchange from %s/%d replaces the existing session", jid, device_id)
            session, key_material = await backend.build_session_passive(
                jid, device_id, key_exchange, encrypted
            )
            LOG.info("built session with %s/%d passively (prekey id %d)",
                     jid, device_id, key_exchange.pre_key_id)

        plaintext: Optional[str]
        if payload is None:
            plaintext = None
        else:
            content = ContentImpl(payload, iv)
            if content.empty:
                # oldmemo treats a zero-length ciphertext as an empty message and refuses
                # to decrypt it; a zero-length payload is still a valid GCM message.
                data = AESGCM(key_material.key).decrypt(iv, key_material.auth_tag, None)
            else:
                data = await backend.decrypt_plaintext(content, key_material)
            plaintext = data.decode("utf-8")

        # Only a fully successful decryption advances the stored session.
        await backend.store_session(session)
        if key_exchange is not None:
            if await backend.delete_pre_key(session):
                LOG.info("deleted prekey id %d", key_exchange.pre_key_id)
        return plaintext

    async def op_decrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        self.require_init()
        jid, device_id = peer_of(req)
        msg = field(req, "message", dict)
        sid = field(msg, "sid", int)
        rid = field(msg, "rid", int)
        prekey = field(msg, "prekey", bool)
        key = hex_field(msg, "key")
        iv = hex_field(msg, "iv")
        payload = hex_field(msg, "payload", nullable=True)
        if sid != device_id:
            raise ProtocolError(f"message sid {sid} is not the peer's device id {device_id}")
        if rid != self.device_id:
            raise ProtocolError(f"message rid {rid} is not our device id {self.device_id}")

        key_exchange: Optional[KeyExchangeImpl] = None
        authenticated = key
        if prekey:
            # The Ed25519 sign bit of the sender's identity key is not on the wire; python-
            # omemo looks it up in the sender's bundle. It only matters for comparing
            # identity keys, never for the crypto (X3DH and the associated data use the
            # Curve25519 form), so a fixed False keeps our comparisons consistent.
            key_exchange, authenticated = KeyExchangeImpl.parse(key, False)
        encrypted = EncryptedKeyMaterialImpl.parse(authenticated, jid, device_id)
        return {"plaintext": await self.decrypt(jid, device_id, key_exchange, encrypted, iv, payload)}

    async def op_decrypt_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        self.require_init()
        jid, device_id = peer_of(req)
        element = xml_field(req, "xml")
        # Validates against oldmemo's XML schema, then parses every <key> (prekey='true'
        # or '1' marks a key exchange, parsed with the sign bit SenderLookup gives: 0,
        # as in op_decrypt). Each key's material is labelled with our own bare JID and
        # its rid.
        try:
            message = await oldmemo_etree.parse_message(
                element, jid, self.jid, SenderLookup(jid, device_id)  # type: ignore[arg-type]
            )
        except TypeError as e:
            raise oldmemo_xml_hint() from e
        if message.device_id != device_id:
            raise ProtocolError(f"message sid {message.device_id} is not the peer's device id {device_id}")
        ours = [
            (encrypted, key_exchange)
            for encrypted, key_exchange in message.keys
            if encrypted.device_id == self.device_id
        ]
        if len(ours) != 1:
            raise ProtocolError(f"message has {len(ours)} keys for our device id {self.device_id}")
        encrypted, key_exchange = ours[0]
        assert isinstance(encrypted, EncryptedKeyMaterialImpl)
        assert key_exchange is None or isinstance(key_exchange, KeyExchangeImpl)
        content = message.content
        assert isinstance(content, ContentImpl)
        # parse_message makes the content empty when <payload> is absent.
        payload = None if content.empty else content.ciphertext
        plaintext = await self.decrypt(jid, device_id, key_exchange, encrypted,
                                       content.initialization_vector, payload)
        return {"plaintext": plaintext}

    def op_device_list_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        # Schema-validated; ids in document order, a repeated id once.
        device_list = oldmemo_etree.parse_device_list(xml_field(req, "xml"))
        return {"devices": list(device_list)}


# ---------------------------------------------------------------------------------------
# The JSON-lines loop
# ---------------------------------------------------------------------------------------


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("OLDMEMO_PEER_LOG", "warning").upper(),
        format="oldmemo_peer[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # Keep the protocol stream to ourselves: anything else printing to "stdout" (a
    # library, a stray print) ends up on stderr instead.
    out = sys.stdout
    sys.stdout = sys.stderr

    def respond(obj: Dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    peer = Peer()
    loop = asyncio.new_event_loop()
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if isinstance(req, dict) and req.get("op") == "quit":
                    LOG.info("quit")
                    return 0
                LOG.debug("request: %s", line)
                resp = {"ok": True, **loop.run_until_complete(peer.handle(req))}
            except Exception as e:  # errors never end the peer
                LOG.debug("request failed:\n%s", traceback.format_exc())
                LOG.warning("error: %s", describe(e))
                resp = {"ok": False, "error": describe(e)}
            respond(resp)
        return 0
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
