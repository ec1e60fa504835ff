#!/usr/bin/env python3
"""OMEMO XMPP test peer for the end-to-end tests (slixmpp + slixmpp-omemo), legacy or OMEMO 2.

Speaks one OMEMO version per run, chosen with --omemo-version:
  legacy  (default) XEP-0384 0.3.0, namespace eu.siacs.conversations.axolotl;
  omemo2  XEP-0384 0.8+, namespace urn:xmpp:omemo:2, with XEP-0420 SCE envelopes.
The OMEMO work is done by slixmpp-omemo 2.2.0 and the python-omemo stack (oldmemo or twomemo
backend) from the project's venv (scripts/setup-test-env); only their public API (plus
slixmpp-omemo's session-manager factory) is called here, none of their code is copied.
slixmpp-omemo cannot encrypt or decrypt OMEMO 2 content (it has no SCE), so in omemo2 mode the
peer uses only its python-omemo SessionManager (pubsub, trust, empty messages) and does the rest
itself: SessionManager.encrypt/decrypt, twomemo.etree.serialize_message/parse_message, and the
SCE envelope built and parsed here.

Subcommands (run with the venv's python):

  echo   --jid J --password P --server HOST:PORT --store DIR [--resource R]
         [--omemo-version legacy|omemo2]
      Echo bot. Decrypts every OMEMO message and answers the sender's bare JID with the same
      text, OMEMO-encrypted (type chat). Runs until SIGTERM/SIGINT (exit 0) or until the
      connection is lost (exit 1). stdout, one line each, flushed:
        DEVICE {"jid": ..., "device_id": N}       once, just before READY
        READY                                      online, device list and bundle published
        ECHO {"from": ..., "device_id": N, "text": ...}          per echoed message
        EMPTY {"from": ..., "device_id": N}        an empty OMEMO (key transport) message
        PLAINTEXT {"from": ..., "text": ...}       an unencrypted message (not answered)
        ERROR {"from": ..., "error": ...}          a message that could not be decrypted
                                                   or answered (omemo2: also a bad SCE
                                                   envelope, "error": "SCE ...")
      (ECHO, EMPTY, PLAINTEXT and ERROR also carry "via": direct, carbon_received or
      carbon_sent.)

  client --jid J --password P --server HOST:PORT --store DIR --to JID --count N
         [--timeout S] [--resource R] [--subscribe] [--sequential]
         [--second-device-store DIR2 [--second-resource R2]
          [--second-device-omemo-version legacy|omemo2]] [--omemo-version legacy|omemo2]
      Sends N OMEMO messages with distinct texts to JID and waits for the N echoes. With
      --second-device-store, a second device of the same account (own resource, own store,
      own device id) is online too and must also receive and decrypt every echo (directly or
      as a carbon). The second device speaks --second-device-omemo-version (default: the
      same as the first), so one account can hold a legacy-only and an OMEMO 2-only device.
      Two devices of one version start their session with each other first (a message from
      the primary to the own bare JID, read by the second, whose empty answer reaches the
      primary), so that the peer's first answer to the second device cannot take a prekey
      the primary took from the same bundle (python-omemo does not heal that).
      Prints one JSON summary line on stdout:
        {"ok": bool, "sent": N, "echoed": k, "mismatches": [...], "missing": [...],
         "empty_messages": n, "sessions": {DEVICE: {"pre_key_id": ..., ...}}, ...}
      and exits 0 iff every echo decrypted to the right text on every device in time.

  race   --jid J --password P --server HOST:PORT --store DIR --second-device-store DIR2
         --to BOT --mode first-contact|crossing [--count N] [--timeout S]
         [--second-resource R2] [--omemo-version legacy|omemo2]
      Two devices of one account (both of --omemo-version) against a bot with one device;
      they pair first (as in client). Then:
        first-contact  both devices build their session with the bot from one fetch of its
                       bundle each and encrypt a first message, before either is sent (the
                       key exchanges must name the same prekey: checked); the primary's is
                       sent, and when its echo has reached both devices, the second's; then
                       the bot's empty key exchange to the second device (the healed session)
                       is awaited. The second's first message is never echoed (checked).
        crossing       the primary holds every stanza it receives; the second device sends
                       its first message; when the bot's echo with a key exchange for the
                       primary has arrived (unread), the primary builds its session with the
                       bot (on another prekey: checked), sends its first message, then reads
                       what it held. The echoes of both first messages must reach the second
                       device; the bot's messages the primary cannot read until the echo of a
                       probe it sends next are listed ("unreadable_in_crossing").
      Then each device sends --count messages (default 10): every echo must be read on both
      devices, each device must read the other's messages (carbons), and nothing from the
      bot may fail to decrypt any more. Prints one JSON summary line on stdout ("ok",
      "devices", "bot_device", "key_exchanges", "primary"/"second": echoes, "problems",
      "errors", ...) and exits 0 iff ok.

  devices --jid J --password P --server HOST:PORT --store DIR --of JID [--timeout S]
      Prints the devices of JID that python-omemo knows in our version after refreshing
      the list, one JSON line: {"ok": bool, "devices": [{"id", "active", "label"}], ...}.
      python-omemo keeps a label only when its labelsig verifies with the identity key.

Common options: --omemo-version (default legacy; the output is the same in both modes),
--log-level (ours, default info), --lib-log-level (slixmpp/omemo, default warning; "debug" logs
every stanza). Logs go to stderr.

Behaviour worth knowing when writing the other side (both modes unless stated):
* Connects in plaintext (no STARTTLS) with SASL PLAIN/SCRAM: meant for loopback servers.
* Publishes only the device list and bundle of its version, with pubsub#access_model=open,
  and checks on the server that both are there and open before READY:
  - legacy: list eu.siacs.conversations.axolotl.devicelist (item current), bundle on
    eu.siacs.conversations.axolotl.bundles:<device id>; no urn:xmpp:omemo:2 node.
  - omemo2: list urn:xmpp:omemo:2:devices, item current,
    <devices xmlns='urn:xmpp:omemo:2'><device id='N'/></devices> (publish-options
    access_model=open, persist_items=true, max_items=1); bundle as item <device id> of the
    shared node urn:xmpp:omemo:2:bundles (publish-options access_model=open,
    persist_items=true, max_items=max). slixmpp-omemo's publishing, for both nodes: on
    precondition-not-met (an existing node configured otherwise) the node is reconfigured
    with the same options and the item published again; if all that fails, it is retried
    without max_items. Prosody 0.12 accepts max (stored as "max", 256 items with the default
    pep_max_items). The check also refuses a bundles node that keeps only one item. No
    legacy node.
* Fetches the recipient's and its own device list (of its version) from the server before
  *every* encryption and the sender's device list when a message comes from an unknown
  device, so it never depends on PEP notifications.
* Trust: everything is trusted (blind trust).
* Incoming messages are recognised by their <encrypted> element; no <body> is needed (stock
  slixmpp only dispatches messages that have a <body>; this peer has its own handler). Direct
  messages and carbons (received and sent) are decrypted; type chat and normal only. A
  message with only the other version's <encrypted> is reported as ERROR, unless it has no
  <payload> (a key transport for another device of the account: ignored); one with both is
  handled with our version's element.
* The sender's device must already be in the sender's published device list (of our
  version), with a fetchable bundle, when its first message arrives: python-omemo refetches
  the list once and otherwise refuses the message (SenderNotFound, reported as ERROR).
* Outgoing messages: type chat, to the bare JID, <store xmlns='urn:xmpp:hints'/>. They are
  encrypted for every device of the recipient and every other device of our own account;
  each carries key exchanges (legacy prekey='true', omemo2 kex='true') until the other device
  has sent something back on the session.
  - legacy: fallback <body>This message is OMEMO encrypted.</body>, no EME element.
  - omemo2: no <body> at all, and <encryption xmlns='urn:xmpp:eme:0'
    namespace='urn:xmpp:omemo:2' name='OMEMO'/> after <encrypted xmlns='urn:xmpp:omemo:2'>
    (<header sid><keys jid><key rid [kex='true']>...</key></keys>...</header><payload>).
* omemo2, SCE: the payload decrypts to
    <envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>TEXT</body>
    </content><rpad>0-200 random letters/digits</rpad><time stamp='YYYY-MM-DDThh:mm:ssZ'/>
    <from jid='sender bare JID'/><to jid='recipient bare JID'/></envelope>
  (one line, no whitespace between elements, the <rpad> may be empty). On receipt the
  envelope must parse, <from jid> must be the stanza sender's bare JID and <to jid> our
  bare JID (for a sent carbon: the bare JID the stanza was sent to), compared as JIDs
  (normalised, a resource does not match), and <content> must hold a
  <body xmlns='jabber:client'>; otherwise the message is not echoed and is reported as
  ERROR {"from": ..., "error": "SCE ..."}. <time> is not checked; other <content> children
  are ignored.
* Storage: DIR/omemo-storage.json (device id, keys, sessions, trust); reusing DIR keeps the
  device. Written at most once per event-loop iteration and at exit. A store made in the
  other mode is refused (python-omemo would purge the other backend's data).
* python-omemo answers every received key exchange with an empty OMEMO message (no
  <payload>, no <body>, type normal) sent to the sender's bare JID, and sends one after 53
  received messages without an answer. They must be accepted silently and must not be
  answered.
* All OMEMO operations of one device are serialised with an asyncio.Lock (python-omemo has no
  locking; slixmpp runs handlers concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import copy
import json
import logging
import os
import secrets
import signal
import string
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple
from xml.sax.saxutils import escape, quoteattr

import omemo
import oldmemo
import twomemo
import twomemo.etree
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID, ClientXMPP, InvalidJID
from slixmpp.exceptions import IqError
from slixmpp.plugins import register_plugin
from slixmpp.stanza import Message
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import XEP_0384, TrustLevel
from slixmpp_omemo.xep_0384 import _make_session_manager

LOG = logging.getLogger("slixmpp_peer")

OLD_NS = oldmemo.oldmemo.NAMESPACE  # eu.siacs.conversations.axolotl
TWO_NS = twomemo.twomemo.NAMESPACE  # urn:xmpp:omemo:2
OLD_DEVICE_LIST_NODE = "eu.siacs.conversations.axolotl.devicelist"
TWO_DEVICE_LIST_NODE = "urn:xmpp:omemo:2:devices"
TWO_BUNDLES_NODE = "urn:xmpp:omemo:2:bundles"  # one node, item id = device id
SCE_NS = "urn:xmpp:sce:1"
EME_NS = "urn:xmpp:eme:0"
CLIENT_NS = "jabber:client"


def old_bundle_node(device_id: int) -> str:
    return f"eu.siacs.conversations.axolotl.bundles:{device_id}"


@dataclass(frozen=True)
class Flavour:
    """The OMEMO version one device speaks (--omemo-version)."""

    name: str  # "legacy" or "omemo2"
    ns: str  # the backend's namespace
    device_list_node: str
    other_device_list_node: str  # the other version's list: no interest, never touched
    description: str  # for messages


LEGACY = Flavour("legacy", OLD_NS, OLD_DEVICE_LIST_NODE, TWO_DEVICE_LIST_NODE, "legacy OMEMO")
OMEMO2 = Flavour("omemo2", TWO_NS, TWO_DEVICE_LIST_NODE, OLD_DEVICE_LIST_NODE, "OMEMO 2")
FLAVOURS = {f.name: f for f in (LEGACY, OMEMO2)}


def out(line: str) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def jdump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


class PeerFailure(Exception):
    """A fatal problem of this peer (connection, login, publishing)."""


# ---------------------------------------------------------------------------------------------
# Storage


class JsonFileStorage(Storage):
    """python-omemo storage kept in one JSON file (DIR/omemo-storage.json).

    The library's own cache sits in front of it, so the file is only read once at start.
    Changes are written back atomically (temporary file + rename) once per event-loop
    iteration: one decryption stores dozens of keys, and a rename per key costs several
    milliseconds on overlay file systems. `flush()` is also called on shutdown and at exit,
    so only a SIGKILL at exactly the wrong moment can lose the last changes.
    """

    def __init__(self, path: str, owner: str) -> None:
        super().__init__()
        self._path = path
        self._data: Dict[str, JSONType] = {}
        self._dirty = False
        self._scheduled = False
        if os.path.exists(path):
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
            stored_owner = doc.get("owner")
            if stored_owner is not None and stored_owner != owner:
                raise PeerFailure(
                    f"store {path} belongs to {stored_owner}, not {owner}: use another --store"
                )
            self._data = doc.get("data", {})
        self._owner = owner
        atexit.register(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._dirty:
            return
        directory = os.path.dirname(self._path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".omemo-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"owner": self._owner, "data": self._data}, separators=(",", ":")))
            os.replace(tmp, self._path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._dirty = False

    def _changed(self) -> None:
        self._dirty = True
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:  # no loop running: write now
            self.flush()

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self._data:
            return Just(copy.deepcopy(self._data[key]))
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._data[key] = copy.deepcopy(value)
        self._changed()

    async def _delete(self, key: str) -> None:
        if key in self._data:
            del self._data[key]
            self._changed()


# ---------------------------------------------------------------------------------------------
# SCE envelopes (XEP-0420) for OMEMO 2: built and parsed here (slixmpp-omemo has no SCE)

# Padding alphabet: letters and digits (no XML escaping needed, one byte per character).
_RPAD_CHARS = string.ascii_letters + string.digits


class SceViolation(Exception):
    """An envelope that is malformed or whose affixes do not fit the stanza."""


def sce_seal(text: str, sender_bare: str, recipient_bare: str) -> bytes:
    """The envelope OMEMO 2 encrypts for a chat message with body `text`:
    <envelope xmlns='urn:xmpp:sce:1'><content><body xmlns='jabber:client'>TEXT</body></content>
    <rpad>0-200 random chars</rpad><time stamp='XEP-0082'/><from jid/><to jid/></envelope>
    (one line, no whitespace between elements)."""
    rpad = "".join(secrets.choice(_RPAD_CHARS) for _ in range(secrets.randbelow(201)))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"<envelope xmlns='{SCE_NS}'>"
        f"<content><body xmlns='{CLIENT_NS}'>{escape(text)}</body></content>"
        f"<rpad>{rpad}</rpad>"
        f"<time stamp='{stamp}'/>"
        f"<from jid={quoteattr(sender_bare)}/>"
        f"<to jid={quoteattr(recipient_bare)}/>"
        "</envelope>"
    ).encode("utf-8")


def _is_bare_jid(claimed: Optional[str], want_bare: str) -> bool:
    """`claimed` names the bare JID `want_bare` (normalised; a resource makes it differ)."""
    if claimed is None:
        return False
    try:
        j = JID(claimed.strip())
    except InvalidJID:
        return False
    return not j.resource and j.bare == JID(want_bare).bare


def sce_open(data: bytes, sender_bare: str, recipient_bare: str) -> str:
    """Parses an envelope, checks <from> against the sender's and <to> against the
    recipient's bare JID, and returns the text of <content>'s <body xmlns='jabber:client'>.
    Raises SceViolation (message starting with "SCE") for anything else."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise SceViolation("SCE: envelope with a DTD refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise SceViolation(f"SCE: malformed envelope: {e}") from e
    if root.tag != f"{{{SCE_NS}}}envelope":
        raise SceViolation(f"SCE: root element is {root.tag}, not {{{SCE_NS}}}envelope")
    problems = []
    frm = root.find(f"{{{SCE_NS}}}from")
    to = root.find(f"{{{SCE_NS}}}to")
    if frm is None:
        problems.append("no <from>")
    elif not _is_bare_jid(frm.get("jid"), sender_bare):
        problems.append(f"<from jid={frm.get('jid')!r}> is not the sender {sender_bare}")
    if to is None:
        problems.append("no <to>")
    elif not _is_bare_jid(to.get("jid"), recipient_bare):
        problems.append(f"<to jid={to.get('jid')!r}> is not the recipient {recipient_bare}")
    if problems:
        raise SceViolation("SCE affix violation: " + "; ".join(problems))
    content = root.find(f"{{{SCE_NS}}}content")
    if content is None:
        raise SceViolation("SCE: envelope without <content>")
    body = content.find(f"{{{CLIENT_NS}}}body")
    if body is None:
        raise SceViolation(f"SCE: no <body xmlns='{CLIENT_NS}'> in <content>")
    return body.text or ""


# ---------------------------------------------------------------------------------------------
# The slixmpp-omemo plugin, restricted to one OMEMO version


class PeerOmemo(XEP_0384):  # pylint: disable=invalid-name
    """slixmpp-omemo's XEP_0384 with one backend only (oldmemo or twomemo), blind trust and a
    lock. Legacy mode uses the plugin's encrypt_message/decrypt_message; OMEMO 2 mode only its
    session manager (pubsub, trust and message hooks) and does the stanza work in Peer, since
    the plugin cannot encrypt or decrypt OMEMO 2 content (no SCE).

    Config (plugin_config["xep_0384"]): store_path (JSON file), owner (bare JID), version
    ("legacy" or "omemo2").
    """

    name = "xep_0384"
    description = "OMEMO Encryption (one version only, test peer)"
    dependencies = XEP_0384.dependencies
    default_config = {
        "fallback_message": "This message is OMEMO encrypted.",
        "store_path": None,
        "owner": None,
        "version": "legacy",
    }

    def plugin_init(self) -> None:
        super().plugin_init()
        self.flavour: Flavour = FLAVOURS[self.version]
        # The base plugin asks for notifications of both device lists; we have one backend
        # (and in legacy mode slixmpp-omemo could not decrypt OMEMO 2 anyway: no SCE).
        self.xmpp.plugin["xep_0163"].remove_interest(self.flavour.other_device_list_node)
        self.lock = asyncio.Lock()
        self._storage = JsonFileStorage(self.store_path, self.owner)
        self._sm: Optional[omemo.SessionManager] = None
        self._sm_task: Optional[asyncio.Future] = None
        # The one backend (oldmemo or twomemo), for reading sessions (race mode).
        self.backend: Optional[omemo.Backend] = None

    # --- configuration required by XEP_0384 ---

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(
        self, blindly_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
    ) -> None:
        for dev in blindly_trusted:
            LOG.info("blindly trusting %s device %d", dev.bare_jid, dev.device_id)

    async def _prompt_manual_trust(
        self, manually_trusted: FrozenSet[DeviceInformation], identifier: Optional[str]
    ) -> None:
        # Test peer: trust everything, also where BTBV would ask.
        sm = await self.get_session_manager()
        for dev in manually_trusted:
            LOG.info("trusting %s device %d", dev.bare_jid, dev.device_id)
            await sm.set_trust(dev.bare_jid, dev.identity_key, TrustLevel.TRUSTED.value)

    # --- session manager with one backend ---

    async def get_session_manager(self) -> omemo.SessionManager:
        if self._sm is not None:
            return self._sm
        if self._sm_task is None:
            self._sm_task = asyncio.ensure_future(self._build_session_manager())
        return await asyncio.shield(self._sm_task)

    async def _check_store_version(self) -> None:
        """Refuse a store made in the other mode: python-omemo would purge the other backend's
        data (and its published device list entry and bundle) on a mismatch."""
        own_id = (await self._storage.load_primitive("/own_device_id", int)).maybe(None)
        if own_id is None:
            return
        stored = (await self._storage.load_list(
            f"/devices/{self.xmpp.boundjid.bare}/{own_id}/namespaces", str)).maybe(None)
        if stored is not None and set(stored) != {self.flavour.ns}:
            raise PeerFailure(
                f"store {self.store_path} was made for {sorted(stored)}, not"
                f" --omemo-version {self.flavour.name}: use another --store"
            )

    async def _build_session_manager(self) -> omemo.SessionManager:
        try:
            await self._check_store_version()
            backend: omemo.Backend
            if self.flavour is OMEMO2:
                backend = twomemo.Twomemo(self._storage, 1000, None)
            else:
                backend = oldmemo.Oldmemo(self._storage, 1000, None)
            # slixmpp-omemo's SessionManager implementation: bundles, device lists and empty
            # messages go through its pubsub/stanza code (OMEMO 2 bundles on the shared node
            # with publish-options access_model=open, persist_items=true, max_items=max).
            impl = _make_session_manager(self.xmpp, self)
            sm = await impl.create(
                [backend],
                self._storage,
                self.xmpp.boundjid.bare,
                initial_own_label=None,
                undecided_trust_level_name=TrustLevel.UNDECIDED.value,
            )
            await sm.ensure_data_consistency()
            # No MAM catch-up here: leave "history synchronisation mode" at once, so that used
            # prekeys are deleted and key exchanges are answered immediately.
            await sm.after_history_sync()
        except BaseException as e:  # noqa: B902 - report to whoever waits
            LOG.error("OMEMO initialisation failed: %r", e)
            self._sm_task = None
            raise
        self._sm = sm
        self.backend = backend
        self.xmpp.event("omemo_initialized")
        return sm

    # --- device lists: always fetched from the server, never via the base class logic ---

    async def refresh_device_lists(self, jids: Set[JID], force_download: bool = False) -> None:
        """Called by encrypt_message / Peer.send_encrypted (with the lock held): fetch every
        recipient's device list and our own from the server.

        Reason: python-omemo encrypts for what it has stored; relying on PEP notifications
        fails whenever the +notify caps, the presence subscription or the timing is off (a
        device published a moment ago would not get the message). One pubsub request per JID
        and message is cheap on loopback.
        """
        sm = await self.get_session_manager()
        bare_jids = {JID(j).bare for j in jids} | {self.xmpp.boundjid.bare}
        for bare in sorted(bare_jids):
            try:
                await sm.refresh_device_list(self.flavour.ns, bare)
            except omemo.DeviceListDownloadFailed as e:
                LOG.warning("could not fetch the device list of %s: %r", bare, e)

    async def _on_device_list_update(self, msg: Message) -> None:
        # PEP notification: only our version's device lists, and under the lock.
        items = msg["pubsub_event"]["items"]
        if items["node"] != self.flavour.device_list_node:
            return
        async with self.lock:
            await super()._on_device_list_update(msg)


register_plugin(PeerOmemo)


# ---------------------------------------------------------------------------------------------
# One XMPP client with one OMEMO device


class Incoming:
    """What a device made of one incoming OMEMO/plain message."""

    def __init__(self, **kw: Any) -> None:
        self.kind: str = kw["kind"]  # "text", "empty", "plaintext", "error"
        self.sender: JID = kw["sender"]
        self.via: str = kw.get("via", "direct")  # "direct", "carbon_received", "carbon_sent"
        self.device_id: Optional[int] = kw.get("device_id")
        self.text: Optional[str] = kw.get("text")
        self.error: Optional[str] = kw.get("error")
        self.has_payload: bool = kw.get("has_payload", False)
        self.stanza_id: str = kw.get("stanza_id", "")

    def describe(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"from": str(self.sender), "via": self.via}
        if self.device_id is not None:
            d["device_id"] = self.device_id
        if self.text is not None:
            d["text"] = self.text
        if self.error is not None:
            d["error"] = self.error
        return d


class Peer(ClientXMPP):
    """slixmpp client + one OMEMO device (legacy or OMEMO 2). `on_incoming` gets every
    processed message."""

    def __init__(
        self,
        jid: str,
        password: str,
        store_dir: str,
        label: str,
        on_incoming: Callable[["Peer", Incoming], Any],
        auto_subscribe: bool = True,
        version: str = "legacy",
    ) -> None:
        os.makedirs(store_dir, exist_ok=True)
        owner = JID(jid).bare
        super().__init__(
            jid,
            password,
            plugin_config={
                "feature_mechanisms": {
                    # Plaintext login on loopback (the test server offers no TLS).
                    "unencrypted_plain": True,
                    "unencrypted_scram": True,
                },
                "xep_0384": {
                    "store_path": os.path.join(store_dir, "omemo-storage.json"),
                    "owner": owner,
                    "version": version,
                },
            },
        )
        self.label = label
        self.on_incoming = on_incoming
        self.flavour: Flavour = FLAVOURS[version]
        # No TLS at all: plain TCP to the given host/port.
        self.enable_plaintext = True
        self.enable_starttls = False
        self.enable_direct_tls = False

        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")
        self.register_plugin("xep_0115")
        self.register_plugin("xep_0163")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0280")
        self.register_plugin("xep_0334")
        # Rooms (the `room` command): slixmpp-omemo finds an occupant's real JID here.
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0249")
        # A room's archive (the `room` command's --archive).
        self.register_plugin("xep_0313")
        self.register_plugin("xep_0384", module=sys.modules[__name__])

        # Accept every subscription request, and ask back (mutual subscription).
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = auto_subscribe

        self.device_id: Optional[int] = None
        # Rooms joined (the `room` command): their OMEMO messages are read.
        self.room_jids: Set[str] = set()
        self.ready = asyncio.get_running_loop().create_future()
        self.stopping = False
        self.lost = asyncio.Event()
        # Race mode: `inspect` sees every OMEMO/plain message before it is processed, and
        # while `hold` is set, processing waits until it is cleared (in arrival order).
        self.inspect: Optional[Callable[["Peer", Message, str], None]] = None
        self.hold: Optional[asyncio.Event] = None  # set: go on

        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        # slixmpp's "message" event only fires for stanzas with a <body>: OMEMO messages without
        # a fallback body (empty/key-transport messages, or senders that add no body) would be
        # lost. So every stanza with an OMEMO element gets its own handler, and "message" only
        # serves unencrypted messages.
        self.register_handler(CoroutineCallback(
            "legacy OMEMO message",
            MatchXPath(f"{{jabber:client}}message/{{{OLD_NS}}}encrypted"),
            self._on_legacy_message,
        ))
        self.register_handler(CoroutineCallback(
            "OMEMO 2 message",
            MatchXPath(f"{{jabber:client}}message/{{{TWO_NS}}}encrypted"),
            self._on_omemo2_message,
        ))
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("carbon_received", self._on_carbon_received)
        self.add_event_handler("carbon_sent", self._on_carbon_sent)

    @property
    def omemo(self) -> PeerOmemo:
        return self.plugin["xep_0384"]

    # --- connection life cycle ---

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(PeerFailure(f"{self.label}: {why}"))

    def _on_failed_auth(self, *_: Any) -> None:
        self._fail("authentication failed")

    def _on_connection_failed(self, err: Any) -> None:
        self._fail(f"connection failed: {err}")

    def _on_disconnected(self, reason: Any) -> None:
        if not self.stopping:
            LOG.error("%s: disconnected: %s", self.label, reason)
            self._fail(f"disconnected: {reason}")
            self.lost.set()

    async def _on_session_start(self, _: Any) -> None:
        try:
            await self._go_online()
        except Exception as e:  # pylint: disable=broad-exception-caught
            LOG.exception("%s: start-up failed", self.label)
            self._fail(f"start-up failed: {e!r}")

    async def _go_online(self) -> None:
        await self.get_roster()

        # Make sure the caps we announce contain our version's device list node +notify
        # (eu.siacs.conversations.axolotl.devicelist or urn:xmpp:omemo:2:devices) for the
        # *bound* full JID (slixmpp's PEP plugin registers the +notify features when the plugin
        # is loaded, for whatever JID was known then), and no interest in the other version's.
        disco = self.plugin["xep_0030"]
        await disco.add_feature(self.flavour.device_list_node + "+notify", jid=self.boundjid)
        try:
            await disco.del_feature(feature=self.flavour.other_device_list_node + "+notify",
                                    jid=self.boundjid)
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        await self.plugin["xep_0115"].update_caps(self.boundjid, broadcast=False)

        # Carbons, so that a second device sees messages sent to another resource.
        await self.plugin["xep_0280"].enable()

        sm = await self.omemo.get_session_manager()
        async with self.omemo.lock:
            own, _ = await sm.get_own_device_information()
            self.device_id = own.device_id
            await self._verify_published()

        self.send_presence()
        LOG.info("%s: online as %s, device %d", self.label, self.boundjid, self.device_id)
        if not self.ready.done():
            self.ready.set_result(self.device_id)

    async def _verify_published(self) -> None:
        """Check on the server that our device is in our device list and that the list and our
        bundle exist with access model open. Repairs the list when needed."""
        if self.flavour is OMEMO2:
            await self._verify_published_omemo2()
            return
        sm = await self.omemo.get_session_manager()
        bare = self.boundjid.bare
        xep_0060 = self.plugin["xep_0060"]
        for attempt in range(10):
            # Downloads our list; python-omemo re-adds and re-publishes our device if missing.
            await sm.refresh_device_list(OLD_NS, bare)
            items = (await xep_0060.get_items(JID(bare), OLD_DEVICE_LIST_NODE))["pubsub"]["items"]
            ids: Set[int] = set()
            for item in items:
                lst = item.xml.find(f"{{{OLD_NS}}}list")
                if lst is not None:
                    ids |= {int(d.get("id")) for d in lst.findall(f"{{{OLD_NS}}}device")}
            if self.device_id in ids:
                break
            LOG.warning("%s: own device %d not yet in the published list %s", self.label,
                        self.device_id, sorted(ids))
            await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise PeerFailure(f"own device {self.device_id} never appeared in the device list")

        bundle_items = (
            await xep_0060.get_items(JID(bare), old_bundle_node(self.device_id), max_items=1)
        )["pubsub"]["items"]
        if len(list(bundle_items)) == 0:
            raise PeerFailure(f"own bundle node {old_bundle_node(self.device_id)} is empty")

        for node in (OLD_DEVICE_LIST_NODE, old_bundle_node(self.device_id)):
            cfg = await xep_0060.get_node_config(JID(bare), node)
            form = cfg["pubsub_owner"]["configure"]["form"]
            access = form.get_values().get("pubsub#access_model")
            if access != "open":
                raise PeerFailure(f"PEP node {node} has access model {access!r}, not 'open'")

    async def _verify_published_omemo2(self) -> None:
        """OMEMO 2: check on the server that our device is in item 'current' of
        urn:xmpp:omemo:2:devices, that our bundle is item <device id> of the shared node
        urn:xmpp:omemo:2:bundles, that both nodes have access model open, and that the bundles
        node keeps more than one item (else our account's devices would evict each other's
        bundles). Repairs the device list when needed."""
        sm = await self.omemo.get_session_manager()
        bare = self.boundjid.bare
        xep_0060 = self.plugin["xep_0060"]
        for attempt in range(10):
            # Downloads our list; python-omemo re-adds and re-publishes our device if missing.
            await sm.refresh_device_list(TWO_NS, bare)
            items = (await xep_0060.get_items(JID(bare), TWO_DEVICE_LIST_NODE))["pubsub"]["items"]
            ids: Set[int] = set()
            for item in items:
                lst = item.xml.find(f"{{{TWO_NS}}}devices")
                if item["id"] == "current" and lst is not None:
                    ids |= {int(d.get("id")) for d in lst.findall(f"{{{TWO_NS}}}device")}
            if self.device_id in ids:
                break
            LOG.warning("%s: own device %d not yet in the published OMEMO 2 list %s", self.label,
                        self.device_id, sorted(ids))
            await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise PeerFailure(f"own device {self.device_id} never appeared in the device list")

        item_id = str(self.device_id)
        try:
            bundle_items = (await xep_0060.get_items(JID(bare), TWO_BUNDLES_NODE,
                                                     item_ids=[item_id]))["pubsub"]["items"]
        except IqError as e:
            raise PeerFailure(f"own bundle (item {item_id} of {TWO_BUNDLES_NODE}) not"
                              f" fetchable: {e.condition}") from e
        if not any(item["id"] == item_id and item.xml.find(f"{{{TWO_NS}}}bundle") is not None
                   for item in bundle_items):
            raise PeerFailure(f"own bundle is not item {item_id} of {TWO_BUNDLES_NODE}")

        for node in (TWO_DEVICE_LIST_NODE, TWO_BUNDLES_NODE):
            cfg = await xep_0060.get_node_config(JID(bare), node)
            values = cfg["pubsub_owner"]["configure"]["form"].get_values()
            access = values.get("pubsub#access_model")
            if access != "open":
                raise PeerFailure(f"PEP node {node} has access model {access!r}, not 'open'")
            if node == TWO_BUNDLES_NODE:
                max_items = str(values.get("pubsub#max_items"))
                LOG.info("%s: %s has pubsub#max_items=%s", self.label, node, max_items)
                if max_items.isdigit() and int(max_items) < 2:
                    raise PeerFailure(f"PEP node {node} keeps only {max_items} item(s): the"
                                      " bundles of our other devices would be evicted")

    async def stop(self) -> None:
        self.stopping = True
        try:
            await asyncio.wait_for(self.disconnect(), 5)
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        self.omemo.storage.flush()

    # --- incoming messages ---

    @staticmethod
    def _has_omemo(msg: Message) -> bool:
        return (msg.xml.find(f"{{{OLD_NS}}}encrypted") is not None
                or msg.xml.find(f"{{{TWO_NS}}}encrypted") is not None)

    async def _on_omemo_message(self, msg: Message) -> None:
        if msg["type"] == "groupchat" and msg["from"].bare in self.room_jids:
            await self._process(msg, "room")
            return
        if msg["type"] not in ("chat", "normal"):
            return
        await self._process(msg, "direct")

    # A stanza with both versions is handled once, by the handler of our version.

    async def _on_legacy_message(self, msg: Message) -> None:
        if self.flavour is OMEMO2 and msg.xml.find(f"{{{TWO_NS}}}encrypted") is not None:
            return
        await self._on_omemo_message(msg)

    async def _on_omemo2_message(self, msg: Message) -> None:
        if self.flavour is LEGACY and msg.xml.find(f"{{{OLD_NS}}}encrypted") is not None:
            return
        await self._on_omemo_message(msg)

    async def _on_message(self, msg: Message) -> None:
        # Unencrypted messages with a body only (OMEMO ones are handled above).
        if msg["type"] not in ("chat", "normal") or self._has_omemo(msg):
            return
        # Carbon wrappers come from our own bare JID and are handled by the carbon handlers.
        if msg.xml.find("{urn:xmpp:carbons:2}received") is not None:
            return
        if msg.xml.find("{urn:xmpp:carbons:2}sent") is not None:
            return
        await self._process(msg, "direct")

    async def _on_carbon_received(self, msg: Message) -> None:
        await self._process(msg["carbon_received"], "carbon_received")

    async def _on_carbon_sent(self, msg: Message) -> None:
        await self._process(msg["carbon_sent"], "carbon_sent")

    async def _process(self, stanza: Message, via: str) -> None:
        if self.inspect is not None:
            self.inspect(self, stanza, via)
        if self.hold is not None:
            await self.hold.wait()
        if self.flavour is OMEMO2:
            await self._process_omemo2(stanza, via)
            return
        sender = stanza["from"]
        old = stanza.xml.find(f"{{{OLD_NS}}}encrypted")
        if old is None:
            two = stanza.xml.find(f"{{{TWO_NS}}}encrypted")
            if two is not None and two.find(f"{{{TWO_NS}}}payload") is None:
                # An empty OMEMO 2 message (key transport) for another of our devices.
                LOG.debug("%s: empty OMEMO 2 message from %s ignored", self.label, sender)
            elif two is not None:
                self._deliver(Incoming(kind="error", sender=sender, via=via,
                                       error="OMEMO 2 only message: not supported by this peer",
                                       has_payload=True, stanza_id=stanza["id"]))
            elif stanza["body"]:
                self._deliver(Incoming(kind="plaintext", sender=sender, via=via,
                                       text=stanza["body"], stanza_id=stanza["id"]))
            return

        has_payload = old.find(f"{{{OLD_NS}}}payload") is not None
        header = old.find(f"{{{OLD_NS}}}header")
        sid = header.get("sid") if header is not None else None

        # slixmpp-omemo prefers an OMEMO 2 element when both are present; we only do legacy.
        work = copy.copy(stanza)
        for elt in work.xml.findall(f"{{{TWO_NS}}}encrypted"):
            work.xml.remove(elt)

        try:
            async with self.omemo.lock:
                decrypted, device = await self.omemo.decrypt_message(work)
        except Exception as e:  # pylint: disable=broad-exception-caught
            err = f"{type(e).__name__}: {e}"
            if isinstance(e, omemo.MessageNotForUs) and not has_payload:
                # Empty (key transport) messages to our bare JID for another of our devices.
                LOG.debug("%s: empty message from %s (sid %s) not for us", self.label, sender, sid)
                return
            LOG.warning("%s: cannot decrypt message %s from %s (sid %s, via %s): %s",
                        self.label, stanza["id"], sender, sid, via, err)
            self._deliver(Incoming(kind="error", sender=sender, via=via, error=err,
                                   device_id=int(sid) if sid and sid.isdigit() else None,
                                   has_payload=has_payload, stanza_id=stanza["id"]))
            return

        if not has_payload:
            LOG.info("%s: empty OMEMO message from %s device %d (via %s)", self.label, sender,
                     device.device_id, via)
            self._deliver(Incoming(kind="empty", sender=sender, via=via,
                                   device_id=device.device_id, stanza_id=stanza["id"]))
            return
        self._deliver(Incoming(kind="text", sender=sender, via=via, device_id=device.device_id,
                               text=decrypted["body"], has_payload=True, stanza_id=stanza["id"]))

    async def _process_omemo2(self, stanza: Message, via: str) -> None:
        """OMEMO 2 mode: twomemo.etree.parse_message + SessionManager.decrypt, then the SCE
        envelope is opened and its affixes checked (an affix violation is an error)."""
        sender = stanza["from"]
        two = stanza.xml.find(f"{{{TWO_NS}}}encrypted")
        if two is None:
            old = stanza.xml.find(f"{{{OLD_NS}}}encrypted")
            if old is not None and old.find(f"{{{OLD_NS}}}payload") is None:
                # An empty legacy message (key transport) for another of our devices.
                LOG.debug("%s: empty legacy message from %s ignored", self.label, sender)
            elif old is not None:
                self._deliver(Incoming(kind="error", sender=sender, via=via,
                                       error="legacy OMEMO only message: not supported in"
                                             " omemo2 mode",
                                       has_payload=True, stanza_id=stanza["id"]))
            elif stanza["body"]:
                self._deliver(Incoming(kind="plaintext", sender=sender, via=via,
                                       text=stanza["body"], stanza_id=stanza["id"]))
            return

        has_payload = two.find(f"{{{TWO_NS}}}payload") is not None
        header = two.find(f"{{{TWO_NS}}}header")
        sid = header.get("sid") if header is not None else None

        try:
            message = twomemo.etree.parse_message(two, sender.bare)
            sm = await self.omemo.get_session_manager()
            async with self.omemo.lock:
                plaintext, device, _ = await sm.decrypt(message)
        except Exception as e:  # pylint: disable=broad-exception-caught
            err = f"{type(e).__name__}: {e}"
            if isinstance(e, omemo.MessageNotForUs) and not has_payload:
                # Empty messages to our bare JID for another of our devices.
                LOG.debug("%s: empty message from %s (sid %s) not for us", self.label, sender, sid)
                return
            LOG.warning("%s: cannot decrypt OMEMO 2 message %s from %s (sid %s, via %s): %s",
                        self.label, stanza["id"], sender, sid, via, err)
            self._deliver(Incoming(kind="error", sender=sender, via=via, error=err,
                                   device_id=int(sid) if sid and sid.isdigit() else None,
                                   has_payload=has_payload, stanza_id=stanza["id"]))
            return

        if plaintext is None:
            LOG.info("%s: empty OMEMO 2 message from %s device %d (via %s)", self.label, sender,
                     device.device_id, via)
            self._deliver(Incoming(kind="empty", sender=sender, via=via,
                                   device_id=device.device_id, stanza_id=stanza["id"]))
            return

        # The envelope's <to> is the stanza's recipient: us, or whoever our other device wrote
        # to for a sent carbon.
        recipient = self.boundjid.bare
        if via == "carbon_sent" and stanza["to"].bare:
            recipient = stanza["to"].bare
        try:
            text = sce_open(plaintext, sender.bare, recipient)
        except SceViolation as e:
            LOG.warning("%s: OMEMO 2 message %s from %s device %d: %s", self.label, stanza["id"],
                        sender, device.device_id, e)
            self._deliver(Incoming(kind="error", sender=sender, via=via, error=str(e),
                                   device_id=device.device_id, has_payload=True,
                                   stanza_id=stanza["id"]))
            return
        self._deliver(Incoming(kind="text", sender=sender, via=via, device_id=device.device_id,
                               text=text, has_payload=True, stanza_id=stanza["id"]))

    def _deliver(self, inc: Incoming) -> None:
        try:
            result = self.on_incoming(self, inc)
            if asyncio.iscoroutine(result):
                asyncio.ensure_future(result)
        except Exception:  # pylint: disable=broad-exception-caught
            LOG.exception("%s: message handler failed", self.label)

    # --- sending ---

    async def send_encrypted(self, to: str, text: str) -> str:
        """Encrypt `text` for every device of `to` (and our other devices) and send it as a
        chat message to the bare JID. Returns the stanza id."""
        msg = await self.encrypt_stanza(to, text)
        msg.send()
        return msg["id"]

    async def encrypt_stanza(self, to: str, text: str) -> Message:
        """The chat message send_encrypted sends, encrypted (sessions built, state stored)
        but not sent yet."""
        if self.flavour is OMEMO2:
            return await self._encrypt_omemo2(to, text)
        to_jid = JID(JID(to).bare)
        msg = self.make_message(mto=to_jid, mbody=text, mtype="chat")
        async with self.omemo.lock:
            encrypted, errors = await self.omemo.encrypt_message(msg, to_jid)
        for err in errors:
            LOG.warning("%s: non-critical encryption error: %r", self.label, err)
        if encrypted is None:
            raise PeerFailure("encrypt_message produced nothing")
        return encrypted

    async def _encrypt_omemo2(self, to: str, text: str) -> Message:
        """OMEMO 2 mode: SCE envelope, SessionManager.encrypt with the twomemo backend,
        twomemo.etree.serialize_message, and the stanza built here (slixmpp-omemo's
        encrypt_message only encrypts legacy bodies). No fallback body."""
        to_bare = JID(to).bare
        to_jid = JID(to_bare)
        envelope = sce_seal(text, self.boundjid.bare, to_bare)
        sm = await self.omemo.get_session_manager()
        async with self.omemo.lock:
            await self.omemo.refresh_device_lists({to_jid})
            messages, errors = await sm.encrypt(
                frozenset({to_bare}), {TWO_NS: envelope}, backend_priority_order=[TWO_NS]
            )
        for err in errors:
            LOG.warning("%s: non-critical encryption error: %r", self.label, err)
        if len(messages) != 1:
            raise PeerFailure(f"SessionManager.encrypt produced {len(messages)} messages, want 1")
        message = next(iter(messages))
        msg = self.make_message(mto=to_jid, mtype="chat")
        msg.append(twomemo.etree.serialize_message(message))
        msg.enable("store")  # <store xmlns='urn:xmpp:hints'/>
        msg.append(ET.Element(f"{{{EME_NS}}}encryption", {"namespace": TWO_NS, "name": "OMEMO"}))
        return msg

    async def session_info(self, bare: str, device_id: int) -> Optional[Dict[str, Any]]:
        """Our stored session with `device_id` of `bare`: how it was built and the prekey
        its key exchange names (an active session: the one we used; a passive one: ours)."""
        async with self.omemo.lock:
            backend = self.omemo.backend
            session = None if backend is None else await backend.load_session(bare, device_id)
        if session is None:
            return None
        kex = session.key_exchange
        return {
            "initiation": session.initiation.name.lower(),
            "confirmed": session.confirmed,
            "pre_key_id": kex.pre_key_id,
            "pre_key": kex.header.pre_key.hex() if kex.header.pre_key else None,
        }

    async def wait_for_devices(self, bare: str, deadline: float) -> FrozenSet[int]:
        """Poll `bare`'s device list (of our version) on the server until it has a device whose
        bundle we can fetch (python-omemo only lists devices with a bundle)."""
        ns = self.flavour.ns
        sm = await self.omemo.get_session_manager()
        delay = 0.2
        while True:
            async with self.omemo.lock:
                try:
                    await sm.refresh_device_list(ns, bare)
                except omemo.DeviceListDownloadFailed as e:
                    LOG.debug("device list of %s not available yet: %r", bare, e)
                devices = await sm.get_device_information(bare)
            ids = frozenset(d.device_id for d in devices if dict(d.active).get(ns, False))
            if ids:
                return ids
            if time.monotonic() >= deadline:
                raise PeerFailure(
                    f"{bare} published no usable {self.flavour.description} device in time")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def parse_server(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 5222
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def with_resource(jid: str, resource: str) -> str:
    j = JID(jid)
    return jid if j.resource else f"{j.bare}/{resource}"


async def start_peer(peer: Peer, server: Tuple[str, int], deadline: float) -> int:
    peer.connect(server[0], server[1])
    remaining = max(0.1, deadline - time.monotonic())
    try:
        return await asyncio.wait_for(asyncio.shield(peer.ready), remaining)
    except asyncio.TimeoutError:
        raise PeerFailure(f"{peer.label}: not online with a published device within the time limit")


async def start_devices(
    args: argparse.Namespace,
    server: Tuple[str, int],
    deadline: float,
    peers: List[Peer],
    primary_on_incoming: Callable[[Peer, Incoming], Any],
    second_on_incoming: Optional[Callable[[Peer, Incoming], Any]],
) -> Tuple[Peer, Optional[Peer]]:
    """Brings the primary device (--store) online and, with `second_on_incoming`, first a
    second device of the same account (--second-device-store), and checks that both are on
    the account's published device lists. The devices are added to `peers` (primary first)
    as they start, so that the caller can stop them whatever happens."""
    second: Optional[Peer] = None
    # The second device goes online first, so that its device is in the account's list
    # before the primary device (and the echo peer) encrypt anything. Starting both at
    # once would also race on the device list (read-modify-write by both).
    if second_on_incoming is not None:
        second_version = args.second_device_omemo_version or args.omemo_version
        second = Peer(with_resource(JID(args.jid).bare, args.second_resource), args.password,
                      args.second_device_store, "second", second_on_incoming,
                      auto_subscribe=args.subscribe, version=second_version)
        peers.append(second)
        await start_peer(second, server, deadline)
        LOG.info("second device %d online", second.device_id)
    primary = Peer(with_resource(args.jid, args.resource or "client"), args.password,
                   args.store, "primary", primary_on_incoming,
                   auto_subscribe=args.subscribe, version=args.omemo_version)
    peers.insert(0, primary)
    await start_peer(primary, server, deadline)
    LOG.info("primary device %d online", primary.device_id)
    # (The race mode has no --access-model: its nodes stay open.)
    access_model = getattr(args, "access_model", "open")
    if access_model != "open":
        await restrict_omemo_nodes(primary, access_model)

    if second is not None:
        # Both devices must be in the published list of their version (each checked its
        # own one, but two read-modify-write updates of one list could still have raced).
        bare = primary.boundjid.bare
        for _ in range(50):
            own = await primary.wait_for_devices(bare, deadline)
            own_second = await second.wait_for_devices(bare, deadline)
            if primary.device_id in own and second.device_id in own_second:
                break
            await second._verify_published()  # pylint: disable=protected-access
            await primary._verify_published()  # pylint: disable=protected-access
        else:
            raise PeerFailure(f"own device lists {sorted(own)} / {sorted(own_second)}"
                              " lack one of our devices")
    return primary, second


# ---------------------------------------------------------------------------------------------
# echo


async def run_echo(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_incoming(peer: Peer, inc: Incoming) -> Any:
        if inc.via == "carbon_sent" or inc.sender.bare == peer.boundjid.bare:
            return None  # copies of our own traffic
        if inc.kind == "plaintext":
            out("PLAINTEXT " + jdump(inc.describe()))
            return None
        if inc.kind == "empty":
            out("EMPTY " + jdump(inc.describe()))
            return None
        if inc.kind == "error":
            out("ERROR " + jdump(inc.describe()))
            return None
        return answer(peer, inc)

    async def answer(peer: Peer, inc: Incoming) -> None:
        try:
            await peer.send_encrypted(inc.sender.bare, inc.text or "")
        except Exception as e:  # pylint: disable=broad-exception-caught
            LOG.exception("could not answer %s", inc.sender)
            d = inc.describe()
            d["error"] = f"reply failed: {type(e).__name__}: {e}"
            out("ERROR " + jdump(d))
            return
        out("ECHO " + jdump(inc.describe()))

    peer = Peer(with_resource(args.jid, args.resource or "echo"), args.password, args.store,
                "echo", on_incoming, auto_subscribe=True, version=args.omemo_version)
    if args.ignore_subscriptions:
        # A contact that never answers a subscription request.
        peer.roster.auto_authorize = None
        peer.roster.auto_subscribe = False
    deadline = time.monotonic() + args.start_timeout
    start_task = asyncio.ensure_future(start_peer(peer, parse_server(args.server), deadline))
    stop_task = asyncio.ensure_future(stop.wait())
    await asyncio.wait({start_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    if not start_task.done():
        LOG.error("interrupted before READY")
        start_task.cancel()
        await peer.stop()
        return 1
    stop_task.cancel()
    try:
        device_id = start_task.result()
    except PeerFailure as e:
        LOG.error("%s", e)
        await peer.stop()
        return 1
    if args.access_model != "open":
        try:
            await restrict_omemo_nodes(peer, args.access_model)
        except Exception as e:  # pylint: disable=broad-exception-caught
            LOG.exception("could not set the access model")
            await peer.stop()
            return 1
    out("DEVICE " + jdump({"jid": str(peer.boundjid), "device_id": device_id}))
    out("READY")

    stop_task = asyncio.ensure_future(stop.wait())
    lost_task = asyncio.ensure_future(peer.lost.wait())
    await asyncio.wait({stop_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    lost_task.cancel()
    if peer.lost.is_set() and not stop.is_set():
        LOG.error("connection lost, exiting")
        return 1
    LOG.info("signal received, disconnecting")
    await peer.stop()
    return 0


async def restrict_omemo_nodes(peer: "Peer", access_model: str) -> None:
    """Set the access model of the peer's OMEMO device list and bundle nodes, as clients
    that publish without publish-options leave them (Prosody's default is 'presence'), and
    check it on the server."""
    bare = JID(peer.boundjid.bare)
    if peer.flavour is OMEMO2:
        nodes = [TWO_DEVICE_LIST_NODE, TWO_BUNDLES_NODE]
    else:
        nodes = [OLD_DEVICE_LIST_NODE, old_bundle_node(peer.device_id)]
    xep_0060 = peer.plugin["xep_0060"]
    for node in nodes:
        form = peer.plugin["xep_0004"].make_form("submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/pubsub#node_config")
        form.add_field(var="pubsub#access_model", value=access_model)
        await xep_0060.set_node_config(bare, node, form)
        cfg = await xep_0060.get_node_config(bare, node)
        got = cfg["pubsub_owner"]["configure"]["form"].get_values().get("pubsub#access_model")
        if got != access_model:
            raise PeerFailure(f"{node} has access model {got!r}, not {access_model!r}")
        LOG.info("%s: %s now has access model %s", peer.label, node, access_model)


# ---------------------------------------------------------------------------------------------
# client


class Tally:
    """Echo bookkeeping for one device."""

    def __init__(self, name: str, expected: Dict[str, int], peer_bare: str,
                 changed: asyncio.Event) -> None:
        self.name = name
        self.expected = expected  # text -> index
        self.peer_bare = peer_bare
        self.got: Dict[str, int] = {}  # text -> count
        self.mismatches: List[Dict[str, Any]] = []
        self.empty = 0
        self.answers = 0  # non-empty messages from the peer (right, wrong or undecryptable)
        self.own_copies = 0
        self.own_texts: List[str] = []  # what our other device sent (decrypted)
        self.own_empty = 0  # empty messages from our other device
        self.notes: List[Dict[str, Any]] = []
        self.done = asyncio.Event()
        self.changed = changed  # set on every message
        self.device_id: Optional[int] = None

    def on_incoming(self, peer: Peer, inc: Incoming) -> None:
        self.changed.set()
        if inc.sender.bare != self.peer_bare:
            # Our other device's messages (carbons of what it sent, python's empty messages).
            if inc.sender.bare == peer.boundjid.bare:
                if inc.kind == "text":
                    self.own_copies += 1
                    self.own_texts.append(inc.text or "")
                elif inc.kind == "empty":
                    self.own_empty += 1
                elif inc.kind == "error":
                    self.notes.append(inc.describe())
            return
        if inc.kind == "empty":
            self.empty += 1
            return
        if inc.kind == "text":
            if inc.text in self.expected:
                self.got[inc.text] = self.got.get(inc.text, 0) + 1
            else:
                d = inc.describe()
                d.update(device=self.name, reason="unexpected text")
                self.mismatches.append(d)
        elif inc.kind == "plaintext":
            d = inc.describe()
            d.update(device=self.name, reason="unencrypted message")
            self.mismatches.append(d)
        else:  # error
            d = inc.describe()
            d.update(device=self.name, reason="decryption failed")
            self.mismatches.append(d)
        self.answers += 1
        # Done when every text came back, or when the peer has answered as many times as we
        # sent (then a wrong answer took the place of a right one: no need to wait longer).
        if all(t in self.got for t in self.expected) or self.answers >= len(self.expected):
            self.done.set()

    def missing(self) -> List[str]:
        return [t for t, _ in sorted(self.expected.items(), key=lambda kv: kv[1]) if t not in self.got]

    def duplicates(self) -> int:
        return sum(c - 1 for c in self.got.values() if c > 1)

@contextlib.asynccontextmanager
async def guarded(what: str, summary: Dict[str, Any], peers: List["Peer"]):
    """Runs the body of a command: SIGTERM and SIGINT cancel it, a failure is logged and
    recorded in summary["errors"] instead of raised, and every peer is stopped at the end."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, me.cancel)
    try:
        yield
    except PeerFailure as e:
        LOG.error("%s", e)
        summary["errors"].append(str(e))
    except asyncio.CancelledError:
        LOG.error("interrupted by a signal")
        summary["errors"].append("interrupted by a signal")
    except Exception as e:  # pylint: disable=broad-exception-caught
        LOG.exception("%s failed", what)
        summary["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for p in peers:
            await p.stop()


async def run_client(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    peer_bare = JID(args.to).bare
    run_id = uuid.uuid4().hex[:8]
    texts = [f"e2e {run_id} #{i + 1}/{args.count}: héllo wörld ✓ <&>" for i in range(args.count)]
    expected = {t: i for i, t in enumerate(texts)}

    server = parse_server(args.server)
    # Devices that exist already (a restart on the same stores) have their sessions.
    fresh_devices = not any(os.path.isdir(d) and os.listdir(d)
                            for d in (args.store, args.second_device_store) if d)
    peers: List[Peer] = []
    waiter = Race(peers)
    primary_tally = Tally("primary", expected, peer_bare, waiter.changed)
    second_tally = (Tally("second", expected, peer_bare, waiter.changed)
                    if args.second_device_store else None)
    summary: Dict[str, Any] = {
        "sent": 0, "echoed": 0, "mismatches": [], "missing": list(texts), "errors": [],
        "second_device": None,
    }
    ok = False
    async with guarded("client", summary, peers):
        primary, _ = await start_devices(
            args, server, deadline, peers, primary_tally.on_incoming,
            second_tally.on_incoming if second_tally is not None else None)
        primary_tally.device_id = primary.device_id
        if second_tally is not None:
            second = peers[1]
            second_tally.device_id = second.device_id
            if second.flavour is primary.flavour and fresh_devices:
                # Before the peer's first answer starts a session with the second device
                # from the same bundle (see pair_own_devices).
                own_texts = second_tally.own_texts
                await pair_own_devices(waiter, primary, lambda hello: hello in own_texts,
                                       lambda: primary_tally.own_empty >= 1, run_id, deadline)

        if args.subscribe:
            primary.client_roster.subscribe(peer_bare)

        their = await primary.wait_for_devices(peer_bare, deadline)
        LOG.info("%s has devices %s", peer_bare, sorted(their))

        tallies = [primary_tally] + ([second_tally] if second_tally else [])
        for i, text in enumerate(texts):
            await primary.send_encrypted(peer_bare, text)
            summary["sent"] = i + 1
            LOG.info("sent %d/%d", i + 1, args.count)
            if args.sequential:
                # Until this text (or some other answer) is back on every device.
                while time.monotonic() < deadline and not all(
                    text in t.got or t.answers > i for t in tallies
                ):
                    await asyncio.sleep(0.02)

        remaining = max(0.0, deadline - time.monotonic())
        all_done = asyncio.ensure_future(asyncio.gather(*(t.done.wait() for t in tallies)))
        lost = [asyncio.ensure_future(p.lost.wait()) for p in peers]
        await asyncio.wait([all_done, *lost], timeout=remaining,
                           return_when=asyncio.FIRST_COMPLETED)
        for fut in [all_done, *lost]:
            fut.cancel()
        if any(p.lost.is_set() for p in peers):
            raise PeerFailure("connection to the server lost")
        if not all(t.done.is_set() for t in tallies):
            LOG.error("timeout: not every echo arrived within %ss", args.timeout)
        # Give late stray messages (e.g. duplicates) a moment to show up as mismatches.
        await asyncio.sleep(args.settle)
        ok = all(not t.missing() for t in tallies) and not any(t.mismatches for t in tallies)
        # How the primary's sessions with the peer's devices were built (the prekey each
        # key exchange named).
        summary["sessions"] = {str(d): await primary.session_info(peer_bare, d) for d in their}

    summary.update(
        ok=ok and not summary["errors"],
        echoed=len(primary_tally.got),
        mismatches=primary_tally.mismatches + (second_tally.mismatches if second_tally else []),
        missing=primary_tally.missing(),
        duplicates=primary_tally.duplicates(),
        empty_messages=primary_tally.empty,
        device_id=primary_tally.device_id,
        to=peer_bare,
        elapsed_s=round(time.monotonic() - started, 3),
    )
    if second_tally is not None:
        summary["second_device"] = {
            "device_id": second_tally.device_id,
            "received": len(second_tally.got),
            "missing": second_tally.missing(),
            "duplicates": second_tally.duplicates(),
            "empty_messages": second_tally.empty,
            "own_copies": second_tally.own_copies,
            "notes": second_tally.notes,
        }
    out(jdump(summary))
    return 0 if summary["ok"] else 1


# ---------------------------------------------------------------------------------------------
# race


def key_exchange_for(stanza: Message, flavour: Flavour, device_id: Optional[int]) -> Optional[bool]:
    """Whether the stanza's OMEMO element of `flavour` carries a key exchange (legacy
    prekey='true', OMEMO 2 kex='true') for `device_id`; None when it has no key for it."""
    encrypted = stanza.xml.find(f"{{{flavour.ns}}}encrypted")
    if encrypted is None or device_id is None:
        return None
    marker = "prekey" if flavour is LEGACY else "kex"
    for key in encrypted.iter(f"{{{flavour.ns}}}key"):
        if key.get("rid") == str(device_id):
            return key.get(marker) in ("true", "1")
    return None


class Recorder:
    """What one device got in race mode: every processed message, and every stanza from the
    other side before processing (whether it carried a key exchange for this device)."""

    def __init__(self, name: str, changed: asyncio.Event) -> None:
        self.name = name
        self.items: List[Incoming] = []
        self.stanzas: List[Dict[str, Any]] = []
        self._changed = changed

    def on_incoming(self, _peer: Peer, inc: Incoming) -> None:
        self.items.append(inc)
        self._changed.set()

    def on_stanza(self, peer: Peer, stanza: Message, via: str) -> None:
        encrypted = stanza.xml.find(f"{{{peer.flavour.ns}}}encrypted")
        self.stanzas.append({
            "from": stanza["from"].bare,
            "via": via,
            "kex": key_exchange_for(stanza, peer.flavour, peer.device_id),
            "payload": encrypted is not None
            and encrypted.find(f"{{{peer.flavour.ns}}}payload") is not None,
        })
        self._changed.set()

    def texts(self, sender_bare: str, via: Optional[str] = None) -> List[str]:
        return [i.text or "" for i in self.items if i.kind == "text"
                and i.sender.bare == sender_bare and (via is None or i.via == via)]

    def count(self, kind: str, sender_bare: str) -> int:
        return sum(1 for i in self.items if i.kind == kind and i.sender.bare == sender_bare)

    def answers(self, sender_bare: str) -> int:
        """Messages with content (decrypted or not) from `sender_bare`."""
        return sum(1 for i in self.items
                   if i.kind in ("text", "error") and i.sender.bare == sender_bare)

    def errors(self, sender_bare: str, start: int = 0) -> List[Dict[str, Any]]:
        return [i.describe() for i in self.items[start:]
                if i.kind == "error" and i.sender.bare == sender_bare]

    def empty_key_exchanges(self, sender_bare: str) -> int:
        """Empty messages from `sender_bare` with a key exchange for this device."""
        return sum(1 for s in self.stanzas
                   if s["from"] == sender_bare and s["kex"] and not s["payload"])


class Race:
    """Shared state of the two devices of a race run."""

    def __init__(self, peers: List[Peer]) -> None:
        self.changed = asyncio.Event()
        self.peers = peers

    async def wait(self, cond: Callable[[], bool], deadline: float, what: str) -> None:
        """Until `cond()` holds (re-checked whenever a device records something), or fails
        at the deadline or when a connection is lost."""
        while not cond():
            if any(p.lost.is_set() for p in self.peers):
                raise PeerFailure(f"connection to the server lost while waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerFailure(f"timed out waiting for {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass


async def pair_own_devices(race: Race, primary: Peer, hello_read: Callable[[str], bool],
                           answered: Callable[[], bool], run_id: str, deadline: float) -> None:
    """The primary device starts its session with the second one (a message to our own bare
    JID) and waits until the second device has read it (`hello_read(text)`) and its empty
    answer has reached the primary (`answered()`): by then the second device has published
    its bundle without the prekey the primary used.

    Without this, two first contacts with the second device come at once: the primary's
    (its first message to anyone also goes to our other devices) and the peer's (its answer
    goes to every device of the account), both from one fetch of the second device's
    bundle. When both pick the same one-time prekey (1 in 100), python-omemo refuses the
    later one (KeyExchangeFailed: no pre key with that id) and never heals: every message
    on that session is lost. And two fresh python-omemo devices that each start a session
    with the other break both (python-omemo replaces a session on every key exchange it
    receives)."""
    hello = f"{run_id}: hello, other device"
    await primary.send_encrypted(primary.boundjid.bare, hello)
    await race.wait(lambda: hello_read(hello) and answered(), deadline,
                    "the session between our two devices (hello read on the second device,"
                    " its empty answer on the primary)")


async def race_first_contact(race: Race, primary: Peer, second: Peer, rec_p: Recorder,
                             rec_s: Recorder, bot: str, bot_device: int, run_id: str,
                             deadline: float, summary: Dict[str, Any]) -> None:
    """Both devices build their session with the bot's device from one fetch of its bundle
    each, before either sends: both key exchanges name the same one-time prekey. The
    primary's first message goes first; the second's then names a prekey the bot has used."""
    text_a = f"race {run_id}: first contact of the primary device"
    text_b = f"race {run_id}: first contact of the second device"
    msg_a = await primary.encrypt_stanza(bot, text_a)
    msg_b = await second.encrypt_stanza(bot, text_b)
    kex_a = await primary.session_info(bot, bot_device)
    kex_b = await second.session_info(bot, bot_device)
    summary["key_exchanges"] = {"primary": kex_a, "second": kex_b}
    if kex_a is None or kex_b is None or "passive" in (kex_a["initiation"], kex_b["initiation"]):
        raise PeerFailure(f"no new active sessions with the bot: {kex_a} / {kex_b}")
    if kex_a["pre_key"] is None or kex_a["pre_key"] != kex_b["pre_key"]:
        raise PeerFailure(f"the two key exchanges name different prekeys: {kex_a} / {kex_b}")
    LOG.info("both key exchanges use prekey %d of the bot's device %d", kex_a["pre_key_id"],
             bot_device)

    msg_a.send()
    await race.wait(lambda: text_a in rec_p.texts(bot) and text_a in rec_s.texts(bot), deadline,
                    "the echo of the primary device's first message on both devices")
    heals_before = rec_s.empty_key_exchanges(bot)
    msg_b.send()
    await race.wait(lambda: rec_s.empty_key_exchanges(bot) > heals_before, deadline,
                    "the bot's empty key exchange to the second device (the healed session)")
    summary["lost_first_message"] = text_b
    summary["heal_key_exchanges"] = rec_s.empty_key_exchanges(bot) - heals_before
    summary["second_session_after_heal"] = await second.session_info(bot, bot_device)


async def race_crossing(race: Race, primary: Peer, second: Peer, rec_p: Recorder,
                        rec_s: Recorder, bot: str, bot_device: int, run_id: str,
                        deadline: float, summary: Dict[str, Any]) -> None:
    """The primary device and the bot's device start sessions with each other at once: the
    primary holds everything it receives; the second device's first message makes the bot
    echo to every device of the account, with a key exchange to the primary. When that
    stanza has arrived (unread), the primary builds its session, sends its own first
    message, then reads what it held. Both key exchanges were made before either was
    read."""
    text_p = f"race {run_id}: first message of the primary device (crossing)"
    text_q = f"race {run_id}: first message of the second device"
    bot_kex = asyncio.Event()

    def spot(peer: Peer, stanza: Message, via: str) -> None:
        rec_p.on_stanza(peer, stanza, via)
        if stanza["from"].bare == bot and key_exchange_for(stanza, peer.flavour, peer.device_id):
            bot_kex.set()

    primary.inspect = spot
    primary.hold = asyncio.Event()  # not set: hold
    try:
        await second.send_encrypted(bot, text_q)
        await race.wait(bot_kex.is_set, deadline,
                        "the bot's key exchange to the primary device (in its echo)")
        held = sum(1 for s in rec_p.stanzas if s["from"] == bot)
        # The primary builds its session only now: the bot has used the second device's
        # prekey and published its bundle without it before it echoed, so the two key
        # exchanges name different prekeys. (Built before the second device sent, they
        # named the same one 1 time in 100: the first-contact race of scenario 10, which
        # loses the primary's first message.)
        msg_p = await primary.encrypt_stanza(bot, text_p)
        before = await primary.session_info(bot, bot_device)
        summary["primary_session_before"] = before
        if before is None or before["initiation"] != "active":
            raise PeerFailure(f"the primary device built no active session with the bot: {before}")
        second_kex = await second.session_info(bot, bot_device)
        summary["second_session"] = second_kex
        if second_kex is not None and second_kex["pre_key_id"] == before["pre_key_id"]:
            raise PeerFailure(f"the bot's bundle still offered prekey {before['pre_key_id']}"
                              " after the second device's key exchange had used it")
        LOG.info("the bot's key exchange to the primary device arrived (%d stanza(s) held);"
                 " sending the primary's own first message (prekey %s)", held,
                 before["pre_key_id"])
        msg_p.send()
    finally:
        primary.hold.set()
        primary.hold = None
    await race.wait(
        lambda: (text_q in rec_p.texts(bot) and text_q in rec_s.texts(bot)
                 and text_p in rec_s.texts(bot) and rec_p.answers(bot) >= 2),
        deadline, "the echoes of both first messages (on the second device; on the primary:"
                  " the second's, and an answer to its own)")
    # python-omemo keeps one session per device, the one built from the last key exchange
    # it received (the bot's); the bot makes the one built from the primary's key exchange
    # current, and goes back to its own when the primary's next message (the empty answer
    # python-omemo sends to every key exchange) fits only that. What the bot sent to the
    # primary in between cannot be read there. A probe from the primary, sent after that
    # answer, is echoed on the session both ends have: all that arrives after its echo
    # must decrypt.
    probe = f"race {run_id}: probe after the crossing"
    await primary.send_encrypted(bot, probe)
    await race.wait(lambda: probe in rec_p.texts(bot), deadline,
                    "the echo of the primary's probe after the crossing, decrypted")
    summary["primary_session_after"] = await primary.session_info(bot, bot_device)
    summary["crossing_echo_on_primary"] = ("decrypted" if text_p in rec_p.texts(bot)
                                           else "not decrypted")
    summary["unreadable_in_crossing"] = rec_p.errors(bot)


async def race_rounds(race: Race, primary: Peer, second: Peer, rec_p: Recorder,
                      rec_s: Recorder, bot: str, run_id: str, count: int, deadline: float,
                      settle: float, summary: Dict[str, Any]) -> List[str]:
    """`count` messages from each device (interleaved); every echo must reach both devices
    and each device must read the other's messages (carbons). Returns the problems."""
    own = primary.boundjid.bare
    texts_p = [f"race {run_id}: round #{i + 1}/{count} from the primary" for i in range(count)]
    texts_s = [f"race {run_id}: round #{i + 1}/{count} from the second" for i in range(count)]
    marks = (len(rec_p.items), len(rec_s.items))
    for text_p, text_s in zip(texts_p, texts_s):
        await primary.send_encrypted(bot, text_p)
        await second.send_encrypted(bot, text_s)
    wanted = set(texts_p) | set(texts_s)

    def echoed(rec: Recorder) -> int:
        return len(wanted & set(rec.texts(bot)))

    try:
        await race.wait(lambda: echoed(rec_p) == len(wanted) and echoed(rec_s) == len(wanted)
                        and set(texts_s) <= set(rec_p.texts(own))
                        and set(texts_p) <= set(rec_s.texts(own)),
                        deadline, "every echo of the rounds on both devices")
    except PeerFailure as e:
        LOG.error("%s", e)
    # A moment more, for late strays (duplicates, errors) to show up.
    await asyncio.sleep(settle)
    problems = []
    for rec, theirs, mark in ((rec_p, texts_s, marks[0]), (rec_s, texts_p, marks[1])):
        got = rec.texts(bot)
        copies = len(set(theirs) & set(rec.texts(own)))
        summary[rec.name] = {"echoes": echoed(rec), "of": len(wanted),
                             "other_device_read": copies,
                             "duplicates": sum(got.count(t) - 1 for t in wanted if t in got)}
        if echoed(rec) != len(wanted):
            problems.append(f"{rec.name}: {echoed(rec)}/{len(wanted)} echoes")
        if copies != len(theirs):
            problems.append(f"{rec.name}: read {copies}/{len(theirs)} of the other device's"
                            " messages")
        if summary[rec.name]["duplicates"]:
            problems.append(f"{rec.name}: {summary[rec.name]['duplicates']} duplicate echoes")
        errors = rec.errors(bot, mark)
        if errors:
            problems.append(f"{rec.name}: {len(errors)} undecryptable messages from the bot after"
                            f" the first contact: {errors[:2]}")
    return problems


async def run_race(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    bot = JID(args.to).bare
    run_id = uuid.uuid4().hex[:8]
    server = parse_server(args.server)
    peers: List[Peer] = []
    race = Race(peers)
    rec_p = Recorder("primary", race.changed)
    rec_s = Recorder("second", race.changed)
    summary: Dict[str, Any] = {"mode": args.mode, "omemo_version": args.omemo_version,
                               "errors": []}
    problems: List[str] = []
    async with guarded("race", summary, peers):
        primary, second = await start_devices(args, server, deadline, peers, rec_p.on_incoming,
                                              rec_s.on_incoming)
        assert second is not None
        primary.inspect = rec_p.on_stanza
        second.inspect = rec_s.on_stanza
        summary["devices"] = {"primary": primary.device_id, "second": second.device_id}
        own = primary.boundjid.bare
        await pair_own_devices(race, primary, lambda hello: hello in rec_s.texts(own),
                               lambda: rec_p.count("empty", own) >= 1, run_id, deadline)
        bot_devices = await primary.wait_for_devices(bot, deadline)
        if await second.wait_for_devices(bot, deadline) != bot_devices or len(bot_devices) != 1:
            raise PeerFailure(f"{bot} should publish one device, got {sorted(bot_devices)}")
        bot_device = next(iter(bot_devices))
        summary["bot_device"] = bot_device
        phase = race_first_contact if args.mode == "first-contact" else race_crossing
        await phase(race, primary, second, rec_p, rec_s, bot, bot_device, run_id, deadline,
                    summary)
        primary.inspect = rec_p.on_stanza
        problems = await race_rounds(race, primary, second, rec_p, rec_s, bot, run_id,
                                     args.count, deadline, args.settle, summary)
        lost = summary.get("lost_first_message")
        if lost is not None and (lost in rec_p.texts(bot) or lost in rec_s.texts(bot)):
            problems.append("the first message on the used prekey was echoed: the bot read it")
    summary["problems"] = problems
    summary["ok"] = not problems and not summary["errors"]
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    out(jdump(summary))
    return 0 if summary["ok"] else 1


async def run_devices(args: argparse.Namespace) -> int:
    """Prints the devices python-omemo knows of --of in our version, after refreshing the
    list: id, whether active, and the label (python-omemo keeps a label only when its
    signature verifies with the device's identity key)."""
    deadline = time.monotonic() + args.timeout
    server = parse_server(args.server)
    of = JID(args.of).bare
    peers: List[Peer] = []
    summary: Dict[str, Any] = {"devices": [], "errors": []}
    async with guarded("devices", summary, peers):
        peer, _ = await start_devices(args, server, deadline, peers, lambda *_: None, None)
        await peer.wait_for_devices(of, deadline)
        ns = peer.flavour.ns
        sm = await peer.omemo.get_session_manager()
        async with peer.omemo.lock:
            devices = await sm.get_device_information(of)
        summary["devices"] = sorted(
            ({"id": d.device_id, "active": bool(dict(d.active).get(ns, False)), "label": d.label}
             for d in devices if ns in dict(d.active)),
            key=lambda d: d["id"])
    summary["ok"] = not summary["errors"]
    out(jdump(summary))
    return 0 if summary["ok"] else 1



# ---------------------------------------------------------------------------------------------
# room


async def run_room(args: argparse.Namespace) -> int:
    """A member of a members-only, non-anonymous room, in legacy OMEMO (slixmpp-omemo's
    group chat support): creates it as owner with --members, or joins it; with --archive,
    first reads what was said while it was away from the room's archive (XEP-0313); waits
    for the --peers nicknames; with --remove, takes that member's affiliation away; sends
    --count messages encrypted to every member (offline ones too), changing its nickname
    to --rename halfway, each after the bot's echo of the one before (all at once with
    --burst); then waits until the bot (--bot, a nickname) has echoed each of them and
    --expect texts from other members have been read. Prints one JSON line: sent,
    echoed, texts read per sender (real JID) live and from the archive, the bot's echoes
    that carry a key for a removed member's device, errors."""
    deadline = time.monotonic() + args.timeout
    server = parse_server(args.server)
    room = JID(args.room)
    run_id = uuid.uuid4().hex[:8]
    texts = [f"room {run_id} {args.nick} #{i + 1}/{args.count}" for i in range(args.count)]
    peers: List[Peer] = []
    summary: Dict[str, Any] = {"sent": 0, "echoed": 0, "read": {}, "archived": {},
                               "errors": [], "undecryptable": 0, "duplicates": 0,
                               "keys_for_removed": 0, "echoes_inspected": 0}
    echoed: Dict[str, int] = {}
    others = 0
    changed = asyncio.Event()

    def on_incoming(peer: Peer, inc: Incoming) -> None:
        nonlocal others
        if inc.via not in ("room", "room_archive"):
            return
        if inc.kind == "error":
            summary["undecryptable"] += 1
            LOG.warning("room message from %s not read: %s", inc.sender, inc.error)
            changed.set()
            return
        if inc.kind != "text":
            return
        nick = inc.sender.resource
        real = peer.plugin["xep_0045"].get_jid_property(room, nick, "jid")
        sender = JID(real).bare if real else f"?{nick}"
        if sender == peer.boundjid.bare:
            return  # our own message coming back
        if inc.via == "room_archive":
            summary["archived"][sender] = summary["archived"].get(sender, 0) + 1
            return
        summary["read"][sender] = summary["read"].get(sender, 0) + 1
        if nick == args.bot and inc.text in texts:
            echoed[inc.text] = echoed.get(inc.text, 0) + 1
        elif nick != args.bot:
            others += 1
        changed.set()

    async def until(done: Callable[[], bool], what: str) -> None:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerFailure(f"timeout: {what}")
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async with guarded("room", summary, peers):
        peer, _ = await start_devices(args, server, deadline, peers, on_incoming, None)
        muc = peer.plugin["xep_0045"]
        peer.room_jids.add(room.bare)
        # Every nickname seen, with its real JID, kept when it leaves or is renamed:
        # slixmpp forgets an occupant at its unavailable presence, so a message handled
        # after a rename (decryption is asynchronous) could not be attributed.
        seen: Dict[str, str] = {}

        def on_room_presence(pr: Any) -> None:
            nick, real = pr["muc"]["nick"], pr["muc"]["jid"]
            if nick and real:
                seen[nick] = JID(real).bare
            changed.set()

        peer.add_event_handler(f"muc::{room.bare}::presence", on_room_presence)
        plain_property = muc.get_jid_property

        def jid_property(room_jid: Any, nick: str, prop: str, pfrom: Any = None) -> Any:
            value = plain_property(room_jid, nick, prop, pfrom)
            if value is None and prop == "jid" and nick in seen:
                value = JID(seen[nick])
            return value

        muc.get_jid_property = jid_property
        await muc.join_muc_wait(room, args.nick, maxstanzas=0,
                                timeout=max(1.0, deadline - time.monotonic()))
        LOG.info("joined %s as %s", room, args.nick)
        if args.archive:
            # Everything the room archived, oldest first; each message's real sender is
            # the JID the (non-anonymous) room's archive names.
            # python-omemo's history mode: a prekey two members picked while we were away
            # is kept until the end, and sessions are completed after it.
            sm = await peer.omemo.get_session_manager()
            sm.before_history_sync()
            try:
                results = peer.plugin["xep_0313"].iterate(jid=room, rsm={"max": 50})
                async for result in results:
                    inner = result["mam_result"]["forwarded"]["stanza"]
                    item = inner.xml.find("{http://jabber.org/protocol/muc#user}x/"
                                          "{http://jabber.org/protocol/muc#user}item")
                    if item is not None and item.get("jid") and inner["from"].resource:
                        seen[inner["from"].resource] = JID(item.get("jid")).bare
                    if inner.xml.find(f"{{{OLD_NS}}}encrypted") is not None:
                        await peer._process(inner, "room_archive")  # pylint: disable=protected-access
            finally:
                async with peer.omemo.lock:
                    await sm.after_history_sync()
            LOG.info("read the room's archive: %s", summary["archived"])
        if args.members:
            for member in args.members.split(","):
                await muc.set_affiliation(room, "member", jid=JID(member))
            LOG.info("members set: %s", args.members)
        if args.invite and args.mediated:
            # A mediated invitation (XEP-0045 §7.8.2): the room passes it on, naming us.
            muc.invite(room, JID(args.invite), "join us")
            LOG.info("invited %s (mediated)", args.invite)
        elif args.invite:
            # A direct invitation (XEP-0249), from our own JID.
            peer.plugin["xep_0249"].send_invitation(JID(args.invite), room)
            LOG.info("invited %s", args.invite)
        wanted = [n for n in (args.peers or "").split(",") if n]
        await until(lambda: all(n in seen for n in wanted), f"occupants {wanted} ({sorted(seen)})")
        members: Set[str] = set()
        for affiliation in ("owner", "admin", "member"):
            for jid in await muc.get_affiliation_list(room, affiliation):
                members.add(JID(jid).bare)
        if args.remove:
            removed = JID(args.remove).bare
            sm = await peer.omemo.get_session_manager()
            removed_devices = {info.device_id for info in
                               await sm.get_device_information(removed)}
            if not removed_devices:
                raise PeerFailure(f"no devices known of {removed}")
            await muc.set_affiliation(room, "none", jid=JID(removed))
            members.discard(removed)
            LOG.info("removed %s (devices %s)", removed, sorted(removed_devices))

            def inspect(_peer: Peer, stanza: Any, via: str) -> None:
                # The keys of the bot's echoes: none may be for the removed member.
                if via != "room" or stanza["from"].resource != args.bot:
                    return
                summary["echoes_inspected"] += 1
                legacy = {int(k.get("rid", "0")) for k in stanza.xml.iter(f"{{{OLD_NS}}}key")}
                two = [k for k in stanza.xml.iter(f"{{{TWO_NS}}}keys")
                       if JID(k.get("jid", "")).bare == removed]
                if legacy & removed_devices or two:
                    summary["keys_for_removed"] += 1

            peer.inspect = inspect
        members.discard(peer.boundjid.bare)
        LOG.info("members of %s: %s", room, sorted(members))
        if args.after:
            # python-omemo cannot heal two sessions started at once between two of its
            # devices: the first message waits for the other member's first.
            await until(lambda: seen.get(args.after) in summary["read"],
                        f"a message from {args.after}")
        nick = args.nick
        for i, text in enumerate(texts):
            if args.rename and i == len(texts) // 2:
                await muc.set_self_nick(room, args.rename)
                nick = args.rename
                LOG.info("now %s", nick)
            msg = peer.make_message(mto=room, mbody=text, mtype="groupchat")
            async with peer.omemo.lock:
                encrypted, errors = await peer.omemo.encrypt_message(
                    msg, {JID(m) for m in members})
            for err in errors:
                LOG.warning("non-critical encryption error: %r", err)
            if encrypted is None:
                raise PeerFailure("encrypt_message produced nothing")
            encrypted.send()
            summary["sent"] = i + 1
            if not args.burst:
                # One at a time: the next goes after the bot's echo of this one.
                await until(lambda: text in echoed, f"the echo of message {i + 1}")
        LOG.info("sent all %d", len(texts))
        await until(lambda: len(echoed) == len(texts), f"the echoes ({len(echoed)} so far)")
        await until(lambda: others >= args.expect,
                    f"{args.expect} messages of other members (have {others})")
        await asyncio.sleep(args.settle)
    summary["echoed"] = len(echoed)
    summary["duplicates"] = sum(n - 1 for n in echoed.values())
    summary["others"] = others
    summary["ok"] = (not summary["errors"] and summary["echoed"] == args.count
                     and not summary["duplicates"] and not summary["undecryptable"]
                     and not summary["keys_for_removed"]
                     and (not args.remove or summary["echoes_inspected"] >= args.count))
    out(jdump(summary))
    return 0 if summary["ok"] else 1


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--jid", required=True)
        p.add_argument("--password", required=True)
        p.add_argument("--server", required=True, help="HOST:PORT (plaintext c2s)")
        p.add_argument("--store", required=True, help="directory for this device's OMEMO data")
        p.add_argument("--resource", default=None)
        p.add_argument("--omemo-version", choices=sorted(FLAVOURS), default="legacy",
                       help="legacy (eu.siacs.conversations.axolotl, default) or omemo2"
                            " (urn:xmpp:omemo:2 with SCE)")
        p.add_argument("--log-level", default="info")
        p.add_argument("--lib-log-level", default="warning")

    pe = sub.add_parser("echo", help="echo bot")
    common(pe)
    pe.add_argument("--start-timeout", type=float, default=30.0)
    pe.add_argument("--access-model", choices=["open", "presence"], default="open",
                    help="the access model of the OMEMO nodes after start-up")
    pe.add_argument("--ignore-subscriptions", action="store_true",
                    help="never answer presence subscription requests")

    pc = sub.add_parser("client", help="send N messages and check the echoes")
    common(pc)
    pc.add_argument("--to", required=True)
    pc.add_argument("--count", type=int, default=1)
    pc.add_argument("--timeout", type=float, default=60.0, help="limit for the whole run")
    pc.add_argument("--second-device-store", default=None)
    pc.add_argument("--second-resource", default="second")
    pc.add_argument("--second-device-omemo-version", choices=sorted(FLAVOURS), default=None,
                    help="the second device's OMEMO version (default: --omemo-version)")
    pc.add_argument("--access-model", choices=["open", "presence"], default="open",
                    help="the access model of the primary device's OMEMO nodes after start-up")
    pc.add_argument("--subscribe", action="store_true",
                    help="ask for a presence subscription to --to (mutual with auto-accept)")
    pc.add_argument("--sequential", action="store_true",
                    help="wait for each echo before sending the next message")
    pc.add_argument("--settle", type=float, default=0.5,
                    help="seconds to keep listening after the last echo")

    pr = sub.add_parser("race", help="two devices of one account in a race with the bot")
    common(pr)
    pr.add_argument("--to", required=True, help="the bot's JID (one device)")
    pr.add_argument("--mode", choices=["first-contact", "crossing"], required=True)
    pr.add_argument("--count", type=int, default=10, help="messages per device afterwards")
    pr.add_argument("--timeout", type=float, default=60.0, help="limit for the whole run")
    pr.add_argument("--second-device-store", required=True)
    pr.add_argument("--second-resource", default="second")
    pr.add_argument("--settle", type=float, default=0.5,
                    help="seconds to keep listening after the last echo")
    pr.set_defaults(second_device_omemo_version=None, subscribe=False)

    pd = sub.add_parser("devices", help="print the devices of a JID as python-omemo sees them")
    common(pd)
    pd.add_argument("--of", required=True, help="whose devices")
    pd.add_argument("--timeout", type=float, default=30.0)
    pd.set_defaults(second_device_omemo_version=None, subscribe=False)

    pm = sub.add_parser("room", help="a member of a room with the bot in it")
    common(pm)
    pm.add_argument("--room", required=True)
    pm.add_argument("--nick", required=True)
    pm.add_argument("--members", default=None,
                    help="comma-separated bare JIDs to make members (as the room's owner)")
    pm.add_argument("--peers", default=None, help="nicknames to wait for before sending")
    pm.add_argument("--bot", required=True, help="the bot's nickname")
    pm.add_argument("--count", type=int, default=3)
    pm.add_argument("--expect", type=int, default=0,
                    help="texts of other members (not the bot) to read")
    pm.add_argument("--rename", default=None, help="nickname to take halfway")
    pm.add_argument("--invite", default=None,
                    help="bare JID to send a direct invitation (XEP-0249) to, after --members")
    pm.add_argument("--mediated", action="store_true",
                    help="send the --invite through the room (XEP-0045) instead")
    pm.add_argument("--after", default=None,
                    help="nickname of a member whose first message comes before ours")
    pm.add_argument("--archive", action="store_true",
                    help="read the room's archive (XEP-0313) after joining")
    pm.add_argument("--remove", default=None,
                    help="bare JID whose affiliation to take away (as owner) before sending;"
                         " the bot's echoes must carry no key for its devices")
    pm.add_argument("--burst", action="store_true",
                    help="send every message at once, then wait for the echoes")
    pm.add_argument("--timeout", type=float, default=90.0)
    pm.add_argument("--settle", type=float, default=1.0)
    pm.set_defaults(second_device_omemo_version=None, subscribe=False)

    args = ap.parse_args()
    if args.cmd in ("client", "race") and args.count < 1:
        ap.error("--count must be >= 1")

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.lib_log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    LOG.setLevel(getattr(logging, args.log_level.upper()))

    runner = {"echo": run_echo, "client": run_client, "race": run_race,
              "devices": run_devices, "room": run_room}[args.cmd]
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
