"""What the python-omemo reference peers (oldmemo_peer.py, twomemo_peer.py) share.

Each peer plays one OMEMO device of one protocol version over stdin/stdout JSON lines (the
protocol is in PROTOCOL.md beside this file), with a python-omemo backend doing all the
cryptography (`oldmemo` or `twomemo`, over `omemo`, `x3dh`, `doubleratchet` and `xeddsa`,
installed into the project's venv by scripts/setup-test-env). Only that stack's public API
is called; none of its code is copied.

This module holds the version-independent part: the in-memory storage, the JSON field
readers, the request loop, and the bit of python-omemo's SessionManager logic that the
protocol asks for, without any XMPP (device lists, trust, bundles on PEP):

* An actively built session keeps sending its key exchange (prekey=true) until something
  has been decrypted on it (the backend marks the session "confirmed" then).
* A received key exchange for which a passive session built from the same key exchange
  already exists is decrypted with that session; any other key exchange replaces the
  session. After a successful passive build the used prekey is deleted (no refill).
* The session is stored only after the whole message decrypted successfully, so a failed
  request leaves the state as it was.

It also holds the *_xml requests both peers have (bundle_xml, encrypt_xml, decrypt_xml,
device_list_xml): the same requests with the version's XML elements as strings, written
and read by the backend's own `etree` module (oldmemo.etree or twomemo.etree, which
validate against their XML schemas with `xmlschema`).

A peer script subclasses BasePeer with the version's wire forms (bundle keys, the bytes of
the <key> element, the payload and its IV, its XML namespace and etree module) and calls
main().
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import sys
import traceback
import xml.etree.ElementTree as ET
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Tuple, Type

import x3dh
from omemo import DeviceList, Just, Maybe, Message, Nothing, Storage
from omemo.session import Initiation
from omemo.types import JSONType

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
# JSON fields
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


def peer_of(req: Dict[str, Any]) -> Tuple[str, int]:
    peer = field(req, "peer", dict)
    return field(peer, "jid", str), field(peer, "device_id", int)


def bundle_to_json(
    bundle: Any, identity_key: bytes, signature: bytes, encode_key: Callable[[bytes], bytes]
) -> Dict[str, Any]:
    """The JSON shape of our own bundle (a backend's BundleImpl), prekeys sorted by id.

    `identity_key` and `signature` are given in their wire form; `encode_key` turns a raw
    X25519 public key (signed prekey, prekeys) into its wire form.
    """
    inner = bundle.bundle
    ids = bundle.pre_key_ids
    return {
        "identity_key": identity_key.hex(),
        "signed_pre_key_id": bundle.signed_pre_key_id,
        "signed_pre_key": encode_key(inner.signed_pre_key).hex(),
        "signed_pre_key_signature": signature.hex(),
        "pre_keys": [
            {"id": ids[key], "key": encode_key(key).hex()}
            for key in sorted(inner.pre_keys, key=lambda k: ids[k])
        ],
    }


def bundle_from_json(
    obj: Any,
    jid: str,
    device_id: int,
    bundle_class: Type[Any],
    read_key: Callable[[Any, str], bytes],
    read_identity: Callable[[bytes, bytes], Tuple[bytes, bytes]],
) -> Any:
    """Parse a peer's JSON bundle into the backend's BundleImpl (`bundle_class`).

    `read_key(obj, name)` reads a public key member and returns the raw 32-byte key;
    `read_identity(identity_key, signature)` turns the raw identity key and the signature
    into the Ed25519 public key and the plain Ed25519 signature that x3dh verifies.
    """
    identity_key = read_key(obj, "identity_key")
    signed_pre_key = read_key(obj, "signed_pre_key")
    identity_key, signature = read_identity(
        identity_key, hex_field(obj, "signed_pre_key_signature", length=64)
    )
    pre_key_ids: Dict[bytes, int] = {}
    for entry in field(obj, "pre_keys", list):
        pre_key_ids[read_key(entry, "key")] = field(entry, "id", int)
    return bundle_class(
        jid,
        device_id,
        x3dh.Bundle(identity_key, signed_pre_key, signature, frozenset(pre_key_ids)),
        field(obj, "signed_pre_key_id", int),
        pre_key_ids,
    )


# ---------------------------------------------------------------------------------------
# XML strings
# ---------------------------------------------------------------------------------------


def xml_to_string(element: ET.Element) -> str:
    """An element made by a backend's etree module, as a string.

    The peer registers its namespace as the default one (BasePeer.__init__), so the
    element is written with xmlns='...' as XMPP clients do, not with the `ns0:` prefix
    ElementTree would invent. (tostring's default_namespace option cannot be used: it
    rejects the unqualified attributes.)
    """
    return ET.tostring(element, encoding="unicode")


def xml_field(obj: Any, name: str) -> ET.Element:
    """Fetch a member holding one XML element as a string and parse it."""
    text = field(obj, name, str)
    try:
        return ET.fromstring(text)
    except ET.ParseError as e:
        raise ProtocolError(f"field {name!r} is not well-formed XML: {e}") from e


def describe(exc: BaseException) -> str:
    """One line naming an exception and its explicit causes (`raise ... from`): the
    backends wrap the interesting error, e.g. DecryptionFailed <- AuthenticationFailedException."""
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
# The device
# ---------------------------------------------------------------------------------------

Handler = Callable[[Dict[str, Any]], Awaitable[Dict[str, Any]]]


class BasePeer:
    """One device with the JSON requests init, bundle, encrypt and decrypt.

    A subclass sets NAME (the script's name: logger, log prefix and the <NAME>_LOG
    environment variable), NAMESPACE, ETREE and XML_GAPS, and implements the hooks below;
    it can add requests to self.ops.
    """

    NAME = "peer"
    NAMESPACE = ""  # the version's XML namespace
    ETREE: Any = None  # the backend's etree module (oldmemo.etree or twomemo.etree)
    # The etree parsers read some things their schema lets through with int(None) or
    # b64decode(None), which raises TypeError: what that usually means.
    XML_GAPS = ""

    def __init__(self) -> None:
        self.backend: Any = None  # the version's omemo.backend.Backend once initialised
        self.jid = ""
        self.device_id = 0
        self.log = logging.getLogger(self.NAME)
        self.ops: Dict[str, Handler] = {
            "init": self.op_init,
            "bundle": self.op_bundle,
            "encrypt": self.op_encrypt,
            "decrypt": self.op_decrypt,
            "bundle_xml": self.op_bundle_xml,
            "encrypt_xml": self.op_encrypt_xml,
            "decrypt_xml": self.op_decrypt_xml,
            "device_list_xml": self.op_device_list_xml,
        }
        # Only one peer lives in a process: its namespace becomes the default one.
        ET.register_namespace("", self.NAMESPACE)

    # --- what a protocol version provides -------------------------------------------

    def new_backend(self, storage: Storage) -> Any:
        """A backend over a fresh storage, i.e. a new identity."""
        raise NotImplementedError

    def bundle_to_json(self, bundle: Any) -> Dict[str, Any]:
        """Our BundleImpl in the JSON shape."""
        raise NotImplementedError

    def bundle_from_json(self, obj: Any, jid: str, device_id: int) -> Any:
        """A peer's JSON bundle as a BundleImpl."""
        raise NotImplementedError

    def serialize_key_exchange(self, key_exchange: Any, authenticated: bytes) -> bytes:
        """The <key> bytes of a key exchange wrapping the serialized ratchet message."""
        raise NotImplementedError

    def parse_key_exchange(self, key: bytes) -> Tuple[Any, bytes]:
        """The KeyExchangeImpl in <key> bytes and the serialized ratchet message in it."""
        raise NotImplementedError

    def parse_authenticated(self, authenticated: bytes, jid: str, device_id: int) -> Any:
        """A serialized ratchet message from jid/device_id as an EncryptedKeyMaterialImpl."""
        raise NotImplementedError

    def content_iv(self, content: Any) -> Optional[str]:
        """The `iv` member of an encrypt response for the content."""
        raise NotImplementedError

    def parse_content(self, msg: Dict[str, Any]) -> Any:
        """The ContentImpl of a request's message (its `iv` and `payload`), or None for an
        empty message."""
        raise NotImplementedError

    async def decrypt_content(self, content: Any, key_material: Any) -> bytes:
        """Decrypt a (non-None) content with the key material the ratchet gave."""
        return bytes(await self.backend.decrypt_plaintext(content, key_material))

    def check_empty(self, key_material: Any) -> None:
        """Check the key material the ratchet gave for an empty message (no payload)."""

    async def parse_message_xml(self, element: ET.Element, jid: str, device_id: int) -> Message:
        """The <encrypted> element from jid/device_id, parsed by ETREE.parse_message."""
        raise NotImplementedError

    async def describe_devices(self, device_list: DeviceList, req: Dict[str, Any]) -> List[Any]:
        """The `devices` member of a device_list_xml response, for the device list
        ETREE.parse_device_list made (ids in document order, each once)."""
        raise NotImplementedError

    # --- requests ----------------------------------------------------------------------

    def require_init(self) -> Any:
        if self.backend is None:
            raise ProtocolError("not initialised: send {\"op\": \"init\"} first")
        return self.backend

    async def handle(self, req: Any) -> Dict[str, Any]:
        op = field(req, "op", str)
        handler = self.ops.get(op)
        if handler is None:
            raise ProtocolError(f"unknown op {op!r}")
        return await handler(req)

    async def own_bundle(self) -> Any:
        backend = self.require_init()
        return await backend.get_bundle(self.jid, self.device_id)

    async def op_init(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid = field(req, "jid", str)
        device_id = field(req, "device_id", int)
        # A new storage means a new identity: the backend creates the identity key (a
        # random Ed25519 seed) and the signed prekey lazily on first use.
        backend = self.new_backend(MemoryStorage())
        await backend.generate_pre_keys(NUM_PRE_KEYS)
        self.backend, self.jid, self.device_id = backend, jid, device_id
        self.log.info("initialised %s/%d", jid, device_id)
        return await self.op_bundle(req)

    async def op_bundle(self, req: Dict[str, Any]) -> Dict[str, Any]:
        return {"bundle": self.bundle_to_json(await self.own_bundle())}

    # --- encryption ----------------------------------------------------------------

    async def encrypt(
        self,
        jid: str,
        device_id: int,
        plaintext: Optional[str],
        peer_bundle: Callable[[], Any],
    ) -> Tuple[Any, Any, Any]:
        """Encrypt for one device: the content, the ratchet message (EncryptedKeyMaterialImpl)
        and the session's key exchange while it has to be repeated (else None). `peer_bundle`
        is called only when there is no session yet; it returns a BundleImpl or None."""
        backend = self.require_init()

        # The backend's payload encryption; the ratchet then carries its key material. An
        # empty message has no payload.
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
            self.log.info("built session with %s/%d actively (prekey id %d)",
                          jid, device_id, session.key_exchange.pre_key_id)
        else:
            encrypted = await backend.encrypt_key_material(session, key_material)

        key_exchange = None
        if session.initiation is Initiation.ACTIVE and not session.confirmed:
            key_exchange = session.key_exchange

        await backend.store_session(session)
        return content, encrypted, key_exchange

    async def op_encrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, device_id = peer_of(req)
        plaintext = field(req, "plaintext", str, nullable=True)

        def peer_bundle() -> Any:
            if req.get("bundle") is None:
                return None
            return self.bundle_from_json(req["bundle"], jid, device_id)

        content, encrypted, key_exchange = await self.encrypt(jid, device_id, plaintext, peer_bundle)
        key = encrypted.serialize()
        if key_exchange is not None:
            key = self.serialize_key_exchange(key_exchange, key)
        return {
            "message": {
                "sid": self.device_id,
                "rid": device_id,
                "prekey": key_exchange is not None,
                "key": key.hex(),
                "iv": self.content_iv(content),
                "payload": None if plaintext is None else content.ciphertext.hex(),
            }
        }

    # --- decryption ----------------------------------------------------------------

    async def decrypt(
        self,
        jid: str,
        device_id: int,
        key_exchange: Any,
        encrypted: Any,
        content: Any,
    ) -> Optional[str]:
        """Decrypt one parsed message from jid/device_id: its key exchange (None for a
        normal message), ratchet message and content (None for an empty message)."""
        backend = self.require_init()
        session = await backend.load_session(jid, device_id)
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
                self.log.warning("key exchange from %s/%d replaces the existing session", jid, device_id)
            session, key_material = await backend.build_session_passive(
                jid, device_id, key_exchange, encrypted
            )
            self.log.info("built session with %s/%d passively (prekey id %d)",
                          jid, device_id, key_exchange.pre_key_id)

        plaintext: Optional[str] = None
        if content is None:
            self.check_empty(key_material)
        else:
            plaintext = (await self.decrypt_content(content, key_material)).decode("utf-8")

        # Only a fully successful decryption advances the stored session.
        await backend.store_session(session)
        if key_exchange is not None:
            if await backend.delete_pre_key(session):
                self.log.info("deleted prekey id %d", key_exchange.pre_key_id)
        return plaintext

    async def op_decrypt(self, req: Dict[str, Any]) -> Dict[str, Any]:
        self.require_init()
        jid, device_id = peer_of(req)
        msg = field(req, "message", dict)
        sid = field(msg, "sid", int)
        rid = field(msg, "rid", int)
        prekey = field(msg, "prekey", bool)
        key = hex_field(msg, "key")
        content = self.parse_content(msg)
        if sid != device_id:
            raise ProtocolError(f"message sid {sid} is not the peer's device id {device_id}")
        if rid != self.device_id:
            raise ProtocolError(f"message rid {rid} is not our device id {self.device_id}")

        key_exchange = None
        authenticated = key
        if prekey:
            key_exchange, authenticated = self.parse_key_exchange(key)
        encrypted = self.parse_authenticated(authenticated, jid, device_id)
        return {"plaintext": await self.decrypt(jid, device_id, key_exchange, encrypted, content)}

    # --- XML requests ----------------------------------------------------------------

    @contextlib.contextmanager
    def etree_gaps(self) -> Iterator[None]:
        """Report the TypeError an etree parser raises on schema-valid XML it cannot read."""
        try:
            yield
        except TypeError as e:
            raise ProtocolError(f"{self.ETREE.__name__} failed on schema-valid XML: {self.XML_GAPS}") from e

    async def op_bundle_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        return {"xml": xml_to_string(self.ETREE.serialize_bundle(await self.own_bundle()))}

    async def op_encrypt_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        jid, device_id = peer_of(req)
        plaintext = field(req, "plaintext", str, nullable=True)

        def peer_bundle() -> Any:
            if req.get("bundle_xml") is None:
                return None
            element = xml_field(req, "bundle_xml")
            with self.etree_gaps():
                return self.ETREE.parse_bundle(element, jid, device_id)

        content, encrypted, key_exchange = await self.encrypt(jid, device_id, plaintext, peer_bundle)
        # serialize_message marks a key exchange (prekey='true' / kex='true') and leaves
        # out <payload> when the content is empty.
        message = Message(self.NAMESPACE, self.jid, self.device_id, content,
                          frozenset([(encrypted, key_exchange)]))
        return {"xml": xml_to_string(self.ETREE.serialize_message(message))}

    async def op_decrypt_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        self.require_init()
        jid, device_id = peer_of(req)
        element = xml_field(req, "xml")
        # Validates against the schema, then parses every <key>, also those for other
        # devices, labelled with its recipient's bare JID and device id.
        with self.etree_gaps():
            message = await self.parse_message_xml(element, jid, device_id)
        if message.device_id != device_id:
            raise ProtocolError(f"message sid {message.device_id} is not the peer's device id {device_id}")
        ours = [
            (encrypted, key_exchange)
            for encrypted, key_exchange in message.keys
            if encrypted.bare_jid == self.jid and encrypted.device_id == self.device_id
        ]
        if len(ours) != 1:
            raise ProtocolError(f"message has {len(ours)} keys for us ({self.jid}/{self.device_id})")
        encrypted, key_exchange = ours[0]
        content = message.content
        # parse_message makes the content empty when <payload> is absent (and when its
        # base64 is only whitespace): an empty message, whose key material check_empty
        # checks.
        plaintext = await self.decrypt(jid, device_id, key_exchange, encrypted,
                                       None if content.empty else content)
        return {"plaintext": plaintext}

    async def op_device_list_xml(self, req: Dict[str, Any]) -> Dict[str, Any]:
        # Schema-validated; parse_device_list keeps each id once, at its first place.
        device_list = self.ETREE.parse_device_list(xml_field(req, "xml"))
        return {"devices": await self.describe_devices(device_list, req)}


# ---------------------------------------------------------------------------------------
# The JSON-lines loop
# ---------------------------------------------------------------------------------------


def main(peer: BasePeer) -> int:
    """Serve requests from stdin until EOF or {"op": "quit"}.

    stdout carries only protocol lines (flushed after each one); all logging goes to
    stderr, at the level in the environment variable <NAME>_LOG (default: warning).
    """
    name = peer.NAME
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get(f"{name.upper()}_LOG", "warning").upper(),
        format=f"{name}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger(name)
    # Keep the protocol stream to ourselves: anything else printing to "stdout" (a
    # library, a stray print) ends up on stderr instead.
    out = sys.stdout
    sys.stdout = sys.stderr

    def respond(obj: Dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    loop = asyncio.new_event_loop()
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if isinstance(req, dict) and req.get("op") == "quit":
                    log.info("quit")
                    return 0
                log.debug("request: %s", line)
                resp = {"ok": True, **loop.run_until_complete(peer.handle(req))}
            except Exception as e:  # errors never end the peer
                log.debug("request failed:\n%s", traceback.format_exc())
                log.warning("error: %s", describe(e))
                resp = {"ok": False, "error": describe(e)}
            respond(resp)
        return 0
    finally:
        loop.close()
