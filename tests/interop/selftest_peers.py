#!/usr/bin/env python3
"""Python-to-Python self-test of the python-omemo reference peers (see PROTOCOL.md).

Starts instances of oldmemo_peer.py and twomemo_peer.py and drives them through the
JSON-lines protocol, the way the Rust cross-implementation tests will. For each protocol
version (legacy: A, B, C; OMEMO 2: A2, B2, C2), the same JSON scenario:

* init, then a first prekey message from A to B built from B's bundle;
* A keeps sending prekey messages until it has received something from B;
* 200+ messages each way in batches, shuffled within a batch, a few dropped and a few
  held back and delivered after later ratchet steps;
* empty (key transport) messages both ways;
* a lost first prekey message delivered late (C to A);
* error cases (replay, tampering, missing session or bundle, the prekey flag wrong) answer
  {"ok": false}, leave the peer running and its session intact.

Then, for each version, the XML requests between two more peers (legacy: D, E; OMEMO 2: D2,
E2): bundle_xml, first contact with encrypt_xml / decrypt_xml, messages both ways (also
mixed with the JSON requests and written by hand with a namespace prefix), empty messages
and zero-length bodies, tampering (refused, session intact), XML the schema rejects or
the parser cannot read. The XML is also read here with plain ElementTree and compared with
the JSON shapes. Then device_list_xml (legacy <list>; OMEMO 2 <devices> with labels).

OMEMO 2 only: a non-null iv, a zero-length payload, a stripped payload and a legacy-shaped
bundle are refused, with the session intact; in XML, keys under another JID's <keys> and a
whitespace or missing <payload> are refused; own_device_list_xml signs the label (checked
here as plain Ed25519 over its UTF-8 with `cryptography`), and device_list_xml finds it
valid with the right identity key, invalid with another one or a corrupted labelsig.

It also checks the wire bytes independently of python-omemo, with a minimal protobuf
reader (see LegacyWire and Omemo2Wire): for legacy 0x33 || PreKeySignalMessage (with the
SignalMessage in field 4), or 0x33 || SignalMessage || 8-byte MAC; for OMEMO 2
OMEMOKeyExchange {pk_id, spk_id, ik, ek, message} or OMEMOAuthenticatedMessage {mac,
message: OMEMOMessage {n, pn, dh_pub, ciphertext}}, all fields present, and the size of the
encrypted key material (48 bytes, 32 for an empty message); the counters n and pn; the
OMEMO 2 bundle signature (plain Ed25519, checked with `cryptography`).

Run with the venv's interpreter (the peers are started with the same one):
    scripts/setup-test-env && .venv/bin/python tests/interop/selftest_peers.py [--seed N]
Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HERE = os.path.dirname(os.path.abspath(__file__))
RESPONSE_TIMEOUT = 60.0  # seconds for one response; generous for a slow CI machine


class Failure(Exception):
    pass


PASSED = 0


def check(cond: bool, what: str) -> None:
    """Count a passed check or stop the test."""
    global PASSED
    if not cond:
        raise Failure(what)
    PASSED += 1


# ---------------------------------------------------------------------------------------
# Driving one peer process
# ---------------------------------------------------------------------------------------


class PeerProcess:
    def __init__(self, name: str, jid: str, device_id: int, script: str) -> None:
        self.name = name
        self.jid = jid
        self.device_id = device_id
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the peer's log goes straight to our stderr
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    @property
    def address(self) -> Dict[str, Any]:
        return {"jid": self.jid, "device_id": self.device_id}

    def call(self, req: Dict[str, Any]) -> Dict[str, Any]:
        """Send one request and read its one response line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        # The peer answers each request with exactly one line and writes nothing else,
        # so the pipe (not Python's buffer) holds the answer when select says so.
        ready, _, _ = select.select([self.proc.stdout], [], [], RESPONSE_TIMEOUT)
        if not ready:
            raise Failure(f"{self.name}: no response within {RESPONSE_TIMEOUT}s to {req.get('op')}")
        line = self.proc.stdout.readline()
        if not line:
            raise Failure(f"{self.name}: peer exited (code {self.proc.poll()}) on {req.get('op')}")
        resp = json.loads(line)
        if not isinstance(resp, dict) or not isinstance(resp.get("ok"), bool):
            raise Failure(f"{self.name}: malformed response {line!r}")
        if not resp["ok"] and not isinstance(resp.get("error"), str):
            raise Failure(f"{self.name}: error response without an error text: {line!r}")
        return resp

    def ok(self, req: Dict[str, Any]) -> Dict[str, Any]:
        resp = self.call(req)
        if not resp["ok"]:
            raise Failure(f"{self.name}: {req.get('op')} failed: {resp['error']}")
        return resp

    def fails(self, req: Dict[str, Any], what: str) -> str:
        resp = self.call(req)
        check(not resp["ok"], f"{self.name}: {what} was accepted")
        return resp["error"]

    def init(self) -> Dict[str, Any]:
        return self.ok({"op": "init", "jid": self.jid, "device_id": self.device_id})["bundle"]

    def bundle(self) -> Dict[str, Any]:
        return self.ok({"op": "bundle"})["bundle"]

    def encrypt(self, to: "PeerProcess", plaintext: Optional[str],
                bundle: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        req: Dict[str, Any] = {"op": "encrypt", "peer": to.address, "plaintext": plaintext}
        if bundle is not None:
            req["bundle"] = bundle
        return self.ok(req)["message"]

    def decrypt_req(self, sender: "PeerProcess", message: Dict[str, Any]) -> Dict[str, Any]:
        return {"op": "decrypt", "peer": sender.address, "message": message}

    def decrypt(self, sender: "PeerProcess", message: Dict[str, Any]) -> Optional[str]:
        return self.ok(self.decrypt_req(sender, message))["plaintext"]

    def bundle_xml(self) -> str:
        return self.ok({"op": "bundle_xml"})["xml"]

    def encrypt_xml_req(self, to: "PeerProcess", plaintext: Optional[str],
                        bundle_xml: Optional[str] = None) -> Dict[str, Any]:
        return {"op": "encrypt_xml", "peer": to.address, "plaintext": plaintext,
                "bundle_xml": bundle_xml}

    def encrypt_xml(self, to: "PeerProcess", plaintext: Optional[str],
                    bundle_xml: Optional[str] = None) -> str:
        return self.ok(self.encrypt_xml_req(to, plaintext, bundle_xml))["xml"]

    def decrypt_xml_req(self, sender: "PeerProcess", xml: str) -> Dict[str, Any]:
        return {"op": "decrypt_xml", "peer": sender.address, "xml": xml}

    def decrypt_xml(self, sender: "PeerProcess", xml: str) -> Optional[str]:
        return self.ok(self.decrypt_xml_req(sender, xml))["plaintext"]

    def device_list_xml(self, xml: str) -> List[int]:
        return self.ok({"op": "device_list_xml", "xml": xml})["devices"]

    def quit(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        self.proc.stdin.flush()
        try:
            return self.proc.wait(timeout=RESPONSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise Failure(f"{self.name}: did not exit on quit")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------
# Independent wire-format checks (a minimal protobuf reader)
# ---------------------------------------------------------------------------------------


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise Failure("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def parse_proto(data: bytes) -> Dict[int, Any]:
    """Fields of a flat protobuf message: varints as int, length-delimited as bytes."""
    fields: Dict[int, Any] = {}
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            value = data[pos:pos + length]
            if len(value) != length:
                raise Failure("truncated length-delimited field")
            pos += length
        else:
            raise Failure(f"unexpected wire type {wire_type} (field {number})")
        check(number not in fields, f"field {number} repeated")
        fields[number] = value
    return fields


class Wire:
    """The wire forms of one OMEMO version (and the peer script that speaks it), checked
    here independently of python-omemo."""

    label = ""  # in log lines
    script = ""  # the peer, beside this file
    key_form = ""  # how a public key looks, for failure messages
    # The payload length of plaintext "": AES-GCM has none, AES-CBC one padding block.
    zero_length_payload = 0
    # The XML: namespace; the bundle's element and attribute names (signed prekey and its
    # id attribute, signature, identity key, prekey and its id attribute); the attribute
    # marking a key exchange on <key>.
    xml_ns = ""
    xml_bundle: Tuple[str, str, str, str, str, str] = ("", "", "", "", "", "")
    xml_kex = ""

    def q(self, name: str) -> str:
        """An element name in the version's namespace, as ElementTree spells it."""
        return f"{{{self.xml_ns}}}{name}"

    def xml_key(self, header: ET.Element, recipient: "PeerProcess") -> Tuple[ET.Element, Optional[str]]:
        """Check the children of the <header> of a message for one recipient device;
        returns its <key> element and the hex IV (None where there is none)."""
        raise NotImplementedError

    def xml_header_body(self, key: str, msg: Dict[str, Any], recipient: "PeerProcess", p: str) -> str:
        """What goes around a hand-written <key> element (the string `key`) inside
        <header>; `p` is the namespace prefix with its colon, or ""."""
        raise NotImplementedError

    def public_key_ok(self, key: bytes) -> bool:
        raise NotImplementedError

    def check_signature(self, bundle: Dict[str, Any]) -> None:
        """Verify the signed prekey signature, where this test can."""

    def check_iv(self, msg: Dict[str, Any]) -> None:
        raise NotImplementedError

    def ratchet_header(self, authenticated: bytes) -> Tuple[bytes, int, int]:
        """Check a serialized ratchet message; returns (ratchet key, n, pn)."""
        raise NotImplementedError

    def check_key_exchange(self, data: bytes, sender_bundle: Dict[str, Any],
                           recipient_bundle: Dict[str, Any]) -> Tuple[int, bytes]:
        """Check the <key> bytes of a key exchange; returns (prekey id, the ratchet message
        in it)."""
        raise NotImplementedError

    def check_key_material(self, msg: Dict[str, Any], empty: bool) -> None:
        """Check what can be seen of the key material the ratchet encrypted."""

    def flip_mac(self, key: str) -> str:
        """The hex <key> bytes of a normal message with one bit of its MAC flipped."""
        raise NotImplementedError

    def check_bundle(self, bundle: Dict[str, Any], num_pre_keys: int) -> None:
        for name in ("identity_key", "signed_pre_key"):
            check(self.public_key_ok(bytes.fromhex(bundle[name])), f"bundle {name} is {self.key_form}")
        check(len(bytes.fromhex(bundle["signed_pre_key_signature"])) == 64, "bundle signature is 64 bytes")
        check(isinstance(bundle["signed_pre_key_id"], int), "bundle signed prekey id")
        check(len(bundle["pre_keys"]) == num_pre_keys,
              f"bundle has {len(bundle['pre_keys'])} prekeys, expected {num_pre_keys}")
        check(len({p["id"] for p in bundle["pre_keys"]}) == num_pre_keys, "bundle prekey ids are distinct")
        for p in bundle["pre_keys"]:
            check(self.public_key_ok(bytes.fromhex(p["key"])), f"bundle prekey is {self.key_form}")
        self.check_signature(bundle)

    def check_message(self, msg: Dict[str, Any], sender: PeerProcess, recipient: PeerProcess,
                      empty: bool) -> None:
        check(msg["sid"] == sender.device_id and msg["rid"] == recipient.device_id, "message sid/rid")
        self.check_iv(msg)
        if empty:
            check(msg["payload"] is None, "empty message has no payload")
        else:
            check(isinstance(msg["payload"], str), "message has a payload")
        self.check_key_material(msg, empty)


class LegacyWire(Wire):
    """eu.siacs.conversations.axolotl: 0x33 || PreKeySignalMessage (with the SignalMessage
    in field 4), or 0x33 || SignalMessage || 8-byte MAC; keys 05 || u; a 12-byte GCM IV."""

    label = "legacy"
    script = "oldmemo_peer.py"
    key_form = "05 || u"
    xml_ns = "eu.siacs.conversations.axolotl"
    xml_bundle = ("signedPreKeyPublic", "signedPreKeyId", "signedPreKeySignature", "identityKey",
                  "preKeyPublic", "preKeyId")
    xml_kex = "prekey"

    def xml_key(self, header: ET.Element, recipient: "PeerProcess") -> Tuple[ET.Element, Optional[str]]:
        check([c.tag for c in header] == [self.q("key"), self.q("iv")], "header holds one key, then iv")
        return header[0], b64(header[1].text).hex()

    def xml_header_body(self, key: str, msg: Dict[str, Any], recipient: "PeerProcess", p: str) -> str:
        return f"{key}<{p}iv>{b64_of_hex(msg['iv'])}</{p}iv>"

    def public_key_ok(self, key: bytes) -> bool:
        return len(key) == 33 and key[0] == 5

    def check_iv(self, msg: Dict[str, Any]) -> None:
        check(len(bytes.fromhex(msg["iv"])) == 12, "message iv is 12 bytes")

    def ratchet_header(self, authenticated: bytes) -> Tuple[bytes, int, int]:
        data = authenticated
        check(len(data) > 9 and data[0] == 0x33, "SignalMessage version byte 0x33")
        fields = parse_proto(data[1:-8])
        check(set(fields) == {1, 2, 3, 4}, f"SignalMessage fields {sorted(fields)}")
        ratchet_key, n, pn, ciphertext = fields[1], fields[2], fields[3], fields[4]
        check(isinstance(ratchet_key, bytes) and self.public_key_ok(ratchet_key),
              "SignalMessage ratchet key is 05 || u")
        check(isinstance(n, int) and isinstance(pn, int), "SignalMessage counters are varints")
        # AES-256-CBC of the 32 (or 16) byte key material, PKCS#7 padded.
        check(isinstance(ciphertext, bytes) and len(ciphertext) in (32, 48),
              f"SignalMessage ciphertext length {len(ciphertext)}")
        return ratchet_key, n, pn

    def check_key_exchange(self, data: bytes, sender_bundle: Dict[str, Any],
                           recipient_bundle: Dict[str, Any]) -> Tuple[int, bytes]:
        check(len(data) > 1 and data[0] == 0x33, "PreKeySignalMessage version byte 0x33")
        fields = parse_proto(data[1:])
        check({1, 2, 3, 4, 6} <= set(fields) <= {1, 2, 3, 4, 5, 6},
              f"PreKeySignalMessage fields {sorted(fields)}")
        check(fields[3].hex() == sender_bundle["identity_key"],
              "PreKeySignalMessage identity key is the sender's bundle identity key")
        check(self.public_key_ok(fields[2]), "PreKeySignalMessage base key is 05 || u")
        check(fields[6] == recipient_bundle["signed_pre_key_id"], "PreKeySignalMessage signed prekey id")
        ids = {p["id"] for p in recipient_bundle["pre_keys"]}
        check(fields[1] in ids, f"PreKeySignalMessage prekey id {fields[1]} is in the bundle")
        self.ratchet_header(fields[4])
        return fields[1], fields[4]

    def flip_mac(self, key: str) -> str:
        return flip_hex(key, -1)  # the MAC8 at the end


class Omemo2Wire(Wire):
    """urn:xmpp:omemo:2: OMEMOKeyExchange {1 pk_id, 2 spk_id, 3 ik, 4 ek, 5 message} around
    OMEMOAuthenticatedMessage {1 mac, 2 message: OMEMOMessage {1 n, 2 pn, 3 dh_pub,
    4 ciphertext}}; raw 32-byte keys; a plain Ed25519 bundle signature; no IV."""

    label = "omemo2"
    script = "twomemo_peer.py"
    key_form = "32 raw bytes"
    zero_length_payload = 16
    xml_ns = "urn:xmpp:omemo:2"
    xml_bundle = ("spk", "id", "spks", "ik", "pk", "id")
    xml_kex = "kex"

    def xml_key(self, header: ET.Element, recipient: "PeerProcess") -> Tuple[ET.Element, Optional[str]]:
        check([c.tag for c in header] == [self.q("keys")], "header holds one keys")
        keys = header[0]
        check(keys.attrib == {"jid": recipient.jid}, "keys has the recipient's bare jid")
        check([c.tag for c in keys] == [self.q("key")], "keys holds one key")
        return keys[0], None

    def xml_header_body(self, key: str, msg: Dict[str, Any], recipient: "PeerProcess", p: str) -> str:
        return f"<{p}keys jid='{recipient.jid}'>{key}</{p}keys>"

    def public_key_ok(self, key: bytes) -> bool:
        return len(key) == 32

    def check_signature(self, bundle: Dict[str, Any]) -> None:
        identity = Ed25519PublicKey.from_public_bytes(bytes.fromhex(bundle["identity_key"]))
        try:
            identity.verify(bytes.fromhex(bundle["signed_pre_key_signature"]),
                            bytes.fromhex(bundle["signed_pre_key"]))
        except InvalidSignature:
            check(False, "bundle signature is plain Ed25519 of the raw signed prekey")
        check(True, "bundle signature is plain Ed25519 of the raw signed prekey")

    def check_iv(self, msg: Dict[str, Any]) -> None:
        check(msg["iv"] is None, "message iv is null")

    def omemo_message(self, authenticated: bytes) -> Dict[int, Any]:
        """The OMEMOMessage fields of an OMEMOAuthenticatedMessage."""
        outer = parse_proto(authenticated)
        check(set(outer) == {1, 2}, f"OMEMOAuthenticatedMessage fields {sorted(outer)}")
        check(isinstance(outer[1], bytes) and len(outer[1]) == 16, "OMEMOAuthenticatedMessage mac is 16 bytes")
        check(isinstance(outer[2], bytes), "OMEMOAuthenticatedMessage message is bytes")
        fields = parse_proto(outer[2])
        check(set(fields) == {1, 2, 3, 4}, f"OMEMOMessage fields {sorted(fields)} (n and pn even when 0)")
        check(isinstance(fields[1], int) and isinstance(fields[2], int), "OMEMOMessage counters are varints")
        check(isinstance(fields[3], bytes) and len(fields[3]) == 32, "OMEMOMessage dh_pub is 32 bytes")
        # AES-256-CBC of the 48 (or 32) byte key material, PKCS#7 padded.
        check(isinstance(fields[4], bytes) and len(fields[4]) in (48, 64),
              f"OMEMOMessage ciphertext length {len(fields[4])}")
        return fields

    def ratchet_header(self, authenticated: bytes) -> Tuple[bytes, int, int]:
        fields = self.omemo_message(authenticated)
        return fields[3], fields[1], fields[2]

    def check_key_exchange(self, data: bytes, sender_bundle: Dict[str, Any],
                           recipient_bundle: Dict[str, Any]) -> Tuple[int, bytes]:
        fields = parse_proto(data)
        check(set(fields) == {1, 2, 3, 4, 5}, f"OMEMOKeyExchange fields {sorted(fields)}")
        ids = {p["id"] for p in recipient_bundle["pre_keys"]}
        check(fields[1] in ids, f"OMEMOKeyExchange pk_id {fields[1]} is in the bundle")
        check(fields[2] == recipient_bundle["signed_pre_key_id"], "OMEMOKeyExchange spk_id")
        check(isinstance(fields[3], bytes) and fields[3].hex() == sender_bundle["identity_key"],
              "OMEMOKeyExchange ik is the sender's bundle identity key")
        check(isinstance(fields[4], bytes) and len(fields[4]) == 32, "OMEMOKeyExchange ek is 32 bytes")
        check(isinstance(fields[5], bytes), "OMEMOKeyExchange message is bytes")
        self.omemo_message(fields[5])
        return fields[1], fields[5]

    def check_key_material(self, msg: Dict[str, Any], empty: bool) -> None:
        key = bytes.fromhex(msg["key"])
        authenticated = parse_proto(key)[5] if msg["prekey"] else key
        # 32-byte key || 16-byte HMAC tag pads to 64; an empty message's 32 zero bytes to 48.
        length = len(self.omemo_message(authenticated)[4])
        check(length == (48 if empty else 64), f"key material ciphertext length {length}, empty={empty}")
        if msg["payload"] is not None:
            payload = bytes.fromhex(msg["payload"])
            check(len(payload) > 0 and len(payload) % 16 == 0, "the payload is whole AES blocks")

    def flip_mac(self, key: str) -> str:
        check(key.startswith("0a10"), "OMEMOAuthenticatedMessage starts with its 16-byte mac")
        return flip_hex(key, 2)


LEGACY = LegacyWire()
OMEMO2 = Omemo2Wire()


class ChainTracker:
    """Checks a sender's n / pn against the Double Ratchet: n counts from 0 within a
    sending chain, pn is the number of messages sent in the previous sending chain (the
    python-doubleratchet semantics; libsignal sends that number minus one)."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.ratchet_key: Optional[bytes] = None
        self.count = 0  # messages sent on the current chain
        self.previous = 0

    def feed(self, authenticated: bytes, who: str) -> None:
        ratchet_key, n, pn = self.wire.ratchet_header(authenticated)
        if ratchet_key != self.ratchet_key:
            if self.ratchet_key is not None:
                self.previous = self.count
            self.ratchet_key, self.count = ratchet_key, 0
        check(n == self.count, f"{who}: n={n}, expected {self.count}")
        check(pn == self.previous, f"{who}: pn={pn}, expected {self.previous}")
        self.count += 1


def flip_hex(h: str, index: int) -> str:
    data = bytearray(bytes.fromhex(h))
    data[index] ^= 1
    return data.hex()


# ---------------------------------------------------------------------------------------
# XML, read and written here with plain ElementTree, not oldmemo / twomemo
# ---------------------------------------------------------------------------------------


def b64(text: Optional[str]) -> bytes:
    check(text is not None, "base64 element has text")
    return base64.b64decode(text, validate=True)


def b64_of_hex(h: str) -> str:
    return base64.b64encode(bytes.fromhex(h)).decode("ascii")


def xml_bundle_to_json(wire: Wire, xml: str) -> Dict[str, Any]:
    """The JSON shape of a bundle_xml answer, for comparing it with the bundle op's."""
    spk, spk_id, spks, ik, pk, pk_id = wire.xml_bundle
    check(xml.startswith(f'<bundle xmlns="{wire.xml_ns}">'), "bundle_xml writes the namespace as the default one")
    root = ET.fromstring(xml)
    check([c.tag for c in root] == [wire.q(spk), wire.q(spks), wire.q(ik), wire.q("prekeys")],
          "bundle_xml children")
    check(set(root[0].attrib) == {spk_id}, f"{spk} has {spk_id}")
    pre_keys = []
    for e in root[3]:
        check(e.tag == wire.q(pk) and set(e.attrib) == {pk_id}, f"prekeys holds {pk} {pk_id}")
        pre_keys.append({"id": int(e.attrib[pk_id]), "key": b64(e.text).hex()})
    return {
        "identity_key": b64(root[2].text).hex(),
        "signed_pre_key_id": int(root[0].attrib[spk_id]),
        "signed_pre_key": b64(root[0].text).hex(),
        "signed_pre_key_signature": b64(root[1].text).hex(),
        "pre_keys": sorted(pre_keys, key=lambda p: p["id"]),
    }


def xml_message_to_json(wire: Wire, xml: str, recipient: PeerProcess) -> Dict[str, Any]:
    """The JSON shape (see PROTOCOL.md) of an encrypt_xml answer for one recipient."""
    check(xml.startswith(f'<encrypted xmlns="{wire.xml_ns}">'), "encrypt_xml writes the namespace as the default one")
    root = ET.fromstring(xml)
    check([c.tag for c in root] in ([wire.q("header")], [wire.q("header"), wire.q("payload")]),
          "encrypted children")
    header = root[0]
    check(set(header.attrib) == {"sid"}, "header has sid")
    key, iv = wire.xml_key(header, recipient)
    check(key.attrib.get("rid") == str(recipient.device_id), f"key rid is {recipient.device_id}")
    check(key.attrib.get(wire.xml_kex, "true") == "true" and set(key.attrib) <= {"rid", wire.xml_kex},
          f"key has rid and maybe {wire.xml_kex}='true'")
    payload = root.find(wire.q("payload"))
    return {
        "sid": int(header.attrib["sid"]),
        "rid": recipient.device_id,
        "prekey": wire.xml_kex in key.attrib,
        "key": b64(key.text).hex(),
        "iv": iv,
        "payload": None if payload is None else b64(payload.text).hex(),
    }


def json_message_to_xml(wire: Wire, msg: Dict[str, Any], recipient: PeerProcess, prefix: str = "",
                        payload_first: bool = False, true: str = "true") -> str:
    """An <encrypted> element written by hand, the way another client might: single
    quotes, optionally a namespace prefix, the payload before the header, and `true` (or
    "1") for a key exchange."""
    p = f"{prefix}:" if prefix else ""
    xmlns = f"xmlns:{prefix}='{wire.xml_ns}'" if prefix else f"xmlns='{wire.xml_ns}'"
    kex = f" {wire.xml_kex}='{true}'" if msg["prekey"] else ""
    key = f"<{p}key rid='{msg['rid']}'{kex}>{b64_of_hex(msg['key'])}</{p}key>"
    header = f"<{p}header sid='{msg['sid']}'>{wire.xml_header_body(key, msg, recipient, p)}</{p}header>"
    payload = "" if msg["payload"] is None else f"<{p}payload>{b64_of_hex(msg['payload'])}</{p}payload>"
    body = payload + header if payload_first else header + payload
    return f"<{p}encrypted {xmlns}>{body}</{p}encrypted>"


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------


def text_for(rng: random.Random, i: int, direction: str) -> str:
    """Distinct plaintexts of varied length and content."""
    kind = rng.randrange(4)
    if kind == 0:
        return f"{direction} #{i}"
    if kind == 1:
        return f"{direction} #{i} ünïcødé ✓ 😀"
    if kind == 2:
        return f"{direction} #{i} " + "x" * rng.randrange(1, 3000)
    return f"{direction} #{i} " + "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(64)))


def run_xml(rng: random.Random, wire: Wire, peers: List[PeerProcess]) -> Dict[str, PeerProcess]:
    """The XML requests between two fresh peers D and E of one protocol version (names
    suffixed with "2" for OMEMO 2); returns them by their letter."""
    suffix = "" if wire is LEGACY else "2"
    d = PeerProcess("D" + suffix, "dave@example.org", 4444, wire.script)
    e = PeerProcess("E" + suffix, "erin@example.org", 5555, wire.script)
    peers += [d, e]
    d.fails({"op": "bundle_xml"}, "bundle_xml before init")
    bundle_d, bundle_e = d.init(), e.init()
    ns, kex = wire.xml_ns, wire.xml_kex

    # --- bundles ---------------------------------------------------------------------
    xd = d.bundle_xml()
    check(xml_bundle_to_json(wire, xd) == bundle_d, f"{d.name}'s bundle_xml holds the bundle op's bundle")
    check(xml_bundle_to_json(wire, e.bundle_xml()) == bundle_e, f"{e.name}'s bundle_xml holds the bundle op's bundle")
    e.fails(e.encrypt_xml_req(d, "x"), "encrypt_xml without session or bundle")
    e.fails(e.encrypt_xml_req(d, "x", "<bundle"), "a bundle that is not XML")
    e.fails(e.encrypt_xml_req(d, "x", xd.replace(f' xmlns="{ns}"', "")), "a bundle outside the namespace")
    e.fails(e.encrypt_xml_req(d, "x", xd.replace("<prekeys>", "<prekeys><foo/>")), "a schema-invalid bundle")
    sig = wire.xml_bundle[2]
    zero_sig = base64.b64encode(bytes(64)).decode("ascii")
    e.fails(e.encrypt_xml_req(d, "x", re.sub(f"<{sig}>[^<]*<", f"<{sig}>{zero_sig}<", xd)),
            "a bundle_xml with a bad signature")

    sent_e, sent_d = ChainTracker(wire), ChainTracker(wire)

    # --- first contact through XML ----------------------------------------------------
    x1 = e.encrypt_xml(d, "hello dave", xd)
    m1 = xml_message_to_json(wire, x1, d)
    check(m1["prekey"] is True, f"{e.name}'s first XML message is a key exchange ({kex}='true')")
    wire.check_message(m1, e, d, empty=False)
    pk_id, inner = wire.check_key_exchange(bytes.fromhex(m1["key"]), bundle_e, bundle_d)
    sent_e.feed(inner, e.name)
    d.fails({"op": "decrypt_xml", "peer": {"jid": e.jid, "device_id": 9999}, "xml": x1},
            "a message whose sid is not the peer's")
    d.fails(d.decrypt_xml_req(e, x1.replace(f'sid="{e.device_id}"', "")), "a message without sid")
    d.fails(d.decrypt_xml_req(e, x1.replace(f'rid="{d.device_id}"', 'rid="9999"')),
            "a message without a key for us")
    d.fails(d.decrypt_xml_req(e, x1.replace(f' {kex}="true"', "")), f"a key exchange without {kex}='true'")
    d.fails(d.decrypt_xml_req(e, x1.replace(f' {kex}="true"', f' {kex}=" true"')),
            f"a key exchange with {kex}=' true' (schema-valid, but not read as true)")
    d.fails(d.decrypt_xml_req(e, re.sub(r"(<key [^>]*>[^<]*</key>)", r"\1\1", x1)),
            "a message with its key for us twice")
    d.fails(d.decrypt_xml_req(e, re.sub(r"<payload>[^<]*</payload>", "<payload/>", x1)),
            "an empty <payload/> (the parser fails on it)")
    d.fails(d.decrypt_xml_req(e, x1.replace("</encrypted>", "<store xmlns='urn:xmpp:hints'/></encrypted>")),
            "a foreign element inside <encrypted>")
    check(d.decrypt_xml(e, x1) == "hello dave", f"{d.name} decrypts {e.name}'s first XML message")
    bundle_d_now = d.bundle()
    wire.check_bundle(bundle_d_now, 99)
    check(pk_id not in {p["id"] for p in bundle_d_now["pre_keys"]}, f"{d.name} deleted the prekey {e.name} used")
    check(xml_bundle_to_json(wire, d.bundle_xml()) == bundle_d_now, "bundle_xml follows the prekey deletion")
    d.fails(d.decrypt_xml_req(e, x1), "a replayed XML prekey message")

    x2 = e.encrypt_xml(d, "still unanswered", xd)  # the bundle is ignored now
    m2 = xml_message_to_json(wire, x2, d)
    check(m2["prekey"] is True, f"{e.name} repeats the key exchange until it hears from {d.name}")
    pk_id2, inner = wire.check_key_exchange(bytes.fromhex(m2["key"]), bundle_e, bundle_d)
    check(pk_id2 == pk_id, "the repeated key exchange names the same prekey")
    sent_e.feed(inner, e.name)
    # The same message as another client might write it.
    x2_by_hand = json_message_to_xml(wire, m2, d, prefix="o", payload_first=True, true=rng.choice(["true", "1"]))
    check(d.decrypt_xml(e, x2_by_hand) == "still unanswered",
          f"{d.name} decrypts a hand-written, prefixed <encrypted> element")

    r1 = d.encrypt_xml(e, "hi erin")
    check(f" {kex}=" not in r1, f"{d.name}'s answer has no {kex} attribute")
    m = xml_message_to_json(wire, r1, e)
    wire.check_message(m, d, e, empty=False)
    sent_d.feed(bytes.fromhex(m["key"]), d.name)
    check(e.decrypt_xml(d, r1) == "hi erin", f"{e.name} decrypts {d.name}'s XML answer")
    x3 = e.encrypt_xml(d, "confirmed")
    m = xml_message_to_json(wire, x3, d)
    check(m["prekey"] is False, f"{e.name} stops sending the key exchange once it heard from {d.name}")
    sent_e.feed(bytes.fromhex(m["key"]), e.name)
    check(d.decrypt_xml(e, x3) == "confirmed", f"{d.name} decrypts {e.name}'s first normal XML message")

    # --- the JSON and XML requests share the sessions ------------------------------------
    x4 = e.encrypt_xml(d, "xml to json")
    m4 = xml_message_to_json(wire, x4, d)
    sent_e.feed(bytes.fromhex(m4["key"]), e.name)
    check(d.decrypt(e, m4) == "xml to json", "an encrypt_xml message decrypts with decrypt")
    j5 = d.encrypt(e, "json to xml")
    sent_d.feed(bytes.fromhex(j5["key"]), d.name)
    check(e.decrypt_xml(d, json_message_to_xml(wire, j5, e)) == "json to xml",
          "an encrypt message, written as XML by hand, decrypts with decrypt_xml")

    # --- tampering and replay leave the session intact ------------------------------------
    x6 = e.encrypt_xml(d, "tamper target")
    m6 = xml_message_to_json(wire, x6, d)
    sent_e.feed(bytes.fromhex(m6["key"]), e.name)
    d.fails(d.decrypt_xml_req(e, json_message_to_xml(wire, dict(m6, key=wire.flip_mac(m6["key"])), d)),
            "an XML message with a bad MAC")
    d.fails(d.decrypt_xml_req(e, json_message_to_xml(wire, dict(m6, key=flip_hex(m6["key"], len(m6["key"]) // 4)),
                                                     d)),
            "an XML message with a flipped bit in the middle of its key")
    d.fails(d.decrypt_xml_req(e, json_message_to_xml(wire, dict(m6, payload=flip_hex(m6["payload"], 0)), d)),
            "an XML message with a bad payload")
    d.fails(d.decrypt_xml_req(e, x6.replace('<header sid', '<header x="1" sid')),
            "an XML message with an attribute the schema does not know")
    d.fails(d.decrypt_xml_req(e, x6.replace(f' xmlns="{ns}"', "")), "an XML message outside the namespace")
    check(d.decrypt_xml(e, x6) == "tamper target", "the untampered XML message still decrypts")
    d.fails(d.decrypt_xml_req(e, x6), "a replayed XML message")

    # --- empty messages and zero-length bodies -----------------------------------------
    for sender, recipient, tracker in ((e, d, sent_e), (d, e, sent_d)):
        x = sender.encrypt_xml(recipient, None)
        m = xml_message_to_json(wire, x, recipient)
        wire.check_message(m, sender, recipient, empty=True)
        tracker.feed(bytes.fromhex(m["key"]), sender.name)
        check(recipient.decrypt_xml(sender, x) is None,
              f"{recipient.name} decrypts an empty XML message as null")
    xz = e.encrypt_xml(d, "")
    mz = xml_message_to_json(wire, xz, d)
    sent_e.feed(bytes.fromhex(mz["key"]), e.name)
    if wire.zero_length_payload == 0:
        check(mz["payload"] is None, "oldmemo's XML leaves out a zero-length payload")
        check(d.decrypt_xml(e, xz) is None, "so a zero-length body arrives as an empty message")
    else:
        check(mz["payload"] is not None and len(bytes.fromhex(mz["payload"])) == wire.zero_length_payload,
              f"an empty string is a {wire.zero_length_payload}-byte <payload>")
        check(d.decrypt_xml(e, xz) == "", "and arrives as an empty string")

    # --- a few batches both ways, shuffled, some lost ------------------------------------
    target = 40
    counts = {d.name: 0, e.name: 0}
    trackers = {d.name: sent_d, e.name: sent_e}
    turn = 0
    while min(counts.values()) < target:
        sender, recipient = (d, e) if turn % 2 == 0 else (e, d)
        turn += 1
        batch: List[Tuple[str, Optional[str]]] = []
        for _ in range(rng.randint(1, 8)):
            i = counts[sender.name]
            counts[sender.name] += 1
            plaintext = None if rng.random() < 0.05 else text_for(rng, i, sender.name)
            x = sender.encrypt_xml(recipient, plaintext)
            m = xml_message_to_json(wire, x, recipient)
            check(m["prekey"] is False, "no key exchange on a confirmed session")
            wire.check_message(m, sender, recipient, empty=plaintext is None)
            trackers[sender.name].feed(bytes.fromhex(m["key"]), sender.name)
            if rng.random() < 0.05:
                continue  # lost
            if rng.random() < 0.3:
                x = json_message_to_xml(wire, m, recipient, prefix=rng.choice(["", "omemo"]),
                                        payload_first=rng.random() < 0.5)
            batch.append((x, plaintext))
        rng.shuffle(batch)
        for x, plaintext in batch:
            got = recipient.decrypt_xml(sender, x)
            check(got == plaintext, f"{recipient.name} got {got!r} from XML, expected {plaintext!r}")
    print(f"{wire.label} xml: sent {counts} in {turn} batches", file=sys.stderr)
    return {"D": d, "E": e}


def run_legacy_device_lists(p: Dict[str, PeerProcess]) -> None:
    """device_list_xml of the legacy peer: <list> of <device id>."""
    d, e = p["D"], p["E"]
    ns = LEGACY.xml_ns
    check(d.device_list_xml(f"<list xmlns='{ns}'><device id='{d.device_id}'/><device id='{e.device_id}'/></list>")
          == [d.device_id, e.device_id], "device_list_xml gives the ids in order")
    check(d.device_list_xml(f"<list xmlns='{ns}'/>") == [], "an empty device list")
    check(d.device_list_xml(f"<o:list xmlns:o='{ns}'>\n  <o:device id='4294967295'/>\n"
                            f"  <o:device id='0'/>\n  <o:device id='0'/>\n</o:list>") == [4294967295, 0],
          "a prefixed, indented device list with extreme and repeated ids")
    d.fails({"op": "device_list_xml", "xml": f"<list xmlns='{ns}'><device id='1' label='x'/></list>"},
            "a device with a label attribute")
    d.fails({"op": "device_list_xml", "xml": f"<list xmlns='{ns}'><device id='4294967296'/></list>"},
            "a device id beyond 32 bits")
    d.fails({"op": "device_list_xml", "xml": "<list><device id='1'/></list>"}, "a device list outside the namespace")
    d.fails({"op": "device_list_xml", "xml": "<list"}, "a device list that is not XML")


def run_omemo2_xml_only(p: Dict[str, PeerProcess]) -> None:
    """What only twomemo's XML has: <keys jid>, a payload that cannot be stripped, and
    device lists with signed labels."""
    d, e = p["D"], p["E"]
    ns = OMEMO2.xml_ns
    bundle_d, bundle_e = d.bundle(), e.bundle()

    # --- messages ----------------------------------------------------------------------
    x = e.encrypt_xml(d, "keys for someone else")
    d.fails(d.decrypt_xml_req(e, x.replace(f'jid="{d.jid}"', 'jid="eve@example.org"')),
            "a message whose key for our device id is in another JID's <keys>")
    d.fails(d.decrypt_xml_req(e, re.sub(r"<payload>[^<]*</payload>", "<payload> </payload>", x)),
            "a payload of only whitespace (parsed as no payload: the 48-byte key material gives it away)")
    d.fails(d.decrypt_xml_req(e, re.sub(r"<payload>[^<]*</payload>", "", x)), "a message with its payload removed")
    check(d.decrypt_xml(e, x) == "keys for someone else", "the untouched message still decrypts")

    # --- own device lists with labels ----------------------------------------------------
    def devices(xml: str, identity_key: Optional[str]) -> List[Dict[str, Any]]:
        req = {"op": "device_list_xml", "xml": xml, "identity_key": identity_key}
        return e.ok(req)["devices"]

    label = "Dave's phone \"ü\" <&> ✓"
    xl = d.ok({"op": "own_device_list_xml", "label": label})["xml"]
    check(xl.startswith(f'<devices xmlns="{ns}"><device id="{d.device_id}" label="'), "own_device_list_xml form")
    root = ET.fromstring(xl)
    check(root.tag == OMEMO2.q("devices") and [c.tag for c in root] == [OMEMO2.q("device")]
          and set(root[0].attrib) == {"id", "label", "labelsig"}, "one <device id label labelsig>")
    check(root[0].attrib["label"] == label, "the label round-trips through the XML escaping")
    signature = b64(root[0].attrib["labelsig"])
    check(len(signature) == 64, "labelsig is 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(bundle_d["identity_key"])).verify(
            signature, label.encode("utf-8"))
        check(True, "labelsig is plain Ed25519 of the label's UTF-8 by the identity key")
    except InvalidSignature:
        check(False, "labelsig is plain Ed25519 of the label's UTF-8 by the identity key")
    check(devices(xl, bundle_d["identity_key"]) == [{"id": d.device_id, "label": label, "label_valid": True}],
          "the label verifies with D's identity key")
    check(devices(xl, bundle_e["identity_key"]) == [{"id": d.device_id, "label": label, "label_valid": False}],
          "the label does not verify with E's identity key")
    check(devices(xl, None) == [{"id": d.device_id, "label": label, "label_valid": None}],
          "no identity key: label_valid null")
    bad_sig = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode("ascii")
    check(devices(xl.replace(root[0].attrib["labelsig"], bad_sig), bundle_d["identity_key"])[0]["label_valid"]
          is False, "a corrupted labelsig is invalid")
    check(devices(xl.replace(label.replace("<", "&lt;")[:5], "Eve's"), bundle_d["identity_key"])[0]["label_valid"]
          is False, "a changed label is invalid")
    check(devices(xl.replace(root[0].attrib["labelsig"], "AAAA"), bundle_d["identity_key"])[0]["label_valid"]
          is False, "a 3-byte labelsig is invalid")
    xn = d.ok({"op": "own_device_list_xml", "label": None})["xml"]
    check(xn == f'<devices xmlns="{ns}"><device id="{d.device_id}" /></devices>', "own_device_list_xml without label")
    check(devices(xn, bundle_d["identity_key"]) == [{"id": d.device_id, "label": None, "label_valid": None}],
          "no label: label and label_valid null")
    xe = d.ok({"op": "own_device_list_xml", "label": ""})["xml"]
    check(devices(xe, bundle_d["identity_key"]) == [{"id": d.device_id, "label": "", "label_valid": True}],
          "an empty label is signed and verifies")

    # --- device lists written by hand ----------------------------------------------------
    sig64 = base64.b64encode(bytes(64)).decode("ascii")
    check(devices(f"<o:devices xmlns:o='{ns}'>\n  <o:device id='4294967295'/>\n  <o:device id='0' label='a'/>\n"
                  f"  <o:device id='7' labelsig='{sig64}'/>\n  <o:device id='0' label='b' labelsig='{sig64}'/>\n"
                  f"</o:devices>", bundle_d["identity_key"])
          == [{"id": 4294967295, "label": None, "label_valid": None},
              {"id": 0, "label": "b", "label_valid": False},
              {"id": 7, "label": None, "label_valid": None}],
          "a prefixed device list: a label needs its labelsig and vice versa; a repeated id keeps "
          "its first place and its last attributes")
    check(devices(f"<devices xmlns='{ns}'/>", None) == [], "an empty device list")
    for bad, what in ((f"<devices xmlns='{ns}'><device id='1' x='1'/></devices>", "a device with a foreign attribute"),
                      (f"<devices xmlns='{ns}'><device id='4294967296'/></devices>", "a device id beyond 32 bits"),
                      (f"<devices xmlns='{ns}'><device/></devices>", "a device without id"),
                      (f"<devices xmlns='{ns}'><device id='1' label='a' labelsig='AAA'/></devices>",
                       "an unpadded labelsig"),
                      (f"<list xmlns='{ns}'><device id='1'/></list>", "a legacy-shaped <list>"),
                      ("<devices><device id='1'/></devices>", "a device list outside the namespace")):
        e.fails({"op": "device_list_xml", "xml": bad, "identity_key": None}, what)
    e.fails({"op": "device_list_xml", "xml": xn, "identity_key": "05" + bundle_d["identity_key"]},
            "a 33-byte identity key")


def run_json(rng: random.Random, wire: Wire, peers: List[PeerProcess]) -> Dict[str, PeerProcess]:
    """The JSON requests between peers A, B and C of one protocol version (names suffixed
    with "2" for OMEMO 2); returns them by their letter."""
    suffix = "" if wire is LEGACY else "2"
    a = PeerProcess("A" + suffix, "alice@example.org", 1111, wire.script)
    b = PeerProcess("B" + suffix, "bob@example.org", 2222, wire.script)
    peers += [a, b]

    # --- errors before init, malformed requests ---------------------------------
    a.fails({"op": "bundle"}, "bundle before init")
    a.fails({"op": "frobnicate"}, "an unknown op")
    a.fails({"no_op": 1}, "a request without op")

    # --- init ----------------------------------------------------------------
    t0 = time.monotonic()
    bundle_a = a.init()
    init_seconds = time.monotonic() - t0
    bundle_b = b.init()
    wire.check_bundle(bundle_a, 100)
    wire.check_bundle(bundle_b, 100)
    check(a.bundle() == bundle_a, "the bundle op returns the init bundle")
    print(f"{wire.label}: init took {init_seconds:.3f}s", file=sys.stderr)

    a.fails({"op": "encrypt", "peer": b.address, "plaintext": "x"}, "encrypt without session or bundle")
    bad = dict(bundle_b, signed_pre_key_signature="00" * 64)
    a.fails({"op": "encrypt", "peer": b.address, "plaintext": "x", "bundle": bad},
            "a bundle with a bad signature")

    sent_a, sent_b = ChainTracker(wire), ChainTracker(wire)

    # --- first contact: prekey messages until B answers --------------------------
    m1 = a.encrypt(b, "hello bob", bundle_b)
    check(m1["prekey"] is True, "first message is a prekey message")
    wire.check_message(m1, a, b, empty=False)
    pk_id, inner = wire.check_key_exchange(bytes.fromhex(m1["key"]), bundle_a, bundle_b)
    sent_a.feed(inner, a.name)
    b.fails(b.decrypt_req(a, dict(m1, prekey=False)), "a prekey message flagged prekey=false")
    check(b.decrypt(a, m1) == "hello bob", "B decrypts the first prekey message")
    bundle_b_now = b.bundle()
    wire.check_bundle(bundle_b_now, 99)
    check(pk_id not in {p["id"] for p in bundle_b_now["pre_keys"]}, "B deleted the used prekey")
    b.fails(b.decrypt_req(a, m1), "a replayed prekey message")

    m2 = a.encrypt(b, "still unanswered", bundle_b)  # bundle is ignored now
    check(m2["prekey"] is True, "A repeats the key exchange until it hears from B")
    pk_id2, inner = wire.check_key_exchange(bytes.fromhex(m2["key"]), bundle_a, bundle_b)
    check(pk_id2 == pk_id, "the repeated key exchange names the same prekey")
    sent_a.feed(inner, a.name)
    check(b.decrypt(a, m2) == "still unanswered", "B decrypts the repeated key exchange")

    r1 = b.encrypt(a, "hi alice")
    check(r1["prekey"] is False, "the passive side sends normal messages")
    wire.check_message(r1, b, a, empty=False)
    sent_b.feed(bytes.fromhex(r1["key"]), b.name)
    a.fails(a.decrypt_req(b, dict(r1, prekey=True)), "a normal message flagged prekey=true")
    check(a.decrypt(b, r1) == "hi alice", "A decrypts B's answer")

    m3 = a.encrypt(b, "now confirmed")
    check(m3["prekey"] is False, "A stops sending the key exchange once it heard from B")
    sent_a.feed(bytes.fromhex(m3["key"]), a.name)
    check(b.decrypt(a, m3) == "now confirmed", "B decrypts A's first normal message")

    # --- tampering and replay leave the session intact ---------------------------
    m4 = a.encrypt(b, "tamper target")
    sent_a.feed(bytes.fromhex(m4["key"]), a.name)
    b.fails(b.decrypt_req(a, dict(m4, key=wire.flip_mac(m4["key"]))), "a message with a bad MAC")
    b.fails(b.decrypt_req(a, dict(m4, key=flip_hex(m4["key"], len(m4["key"]) // 4))),
            "a message with a flipped bit in the middle of its key")
    b.fails(b.decrypt_req(a, dict(m4, payload=flip_hex(m4["payload"], 0))), "a message with a bad payload")
    b.fails(b.decrypt_req(a, dict(m4, rid=9999)), "a message for another device")
    check(b.decrypt(a, m4) == "tamper target", "the untampered message still decrypts")
    b.fails(b.decrypt_req(a, m4), "a replayed message")
    b.fails({"op": "decrypt", "peer": {"jid": "eve@example.org", "device_id": 1111}, "message": m4},
            "a message from a peer without session")

    # --- empty messages ---------------------------------------------------------
    e1 = a.encrypt(b, None)
    wire.check_message(e1, a, b, empty=True)
    sent_a.feed(bytes.fromhex(e1["key"]), a.name)
    check(b.decrypt(a, e1) is None, "B decrypts an empty message as null")
    e2 = b.encrypt(a, None)
    wire.check_message(e2, b, a, empty=True)
    sent_b.feed(bytes.fromhex(e2["key"]), b.name)
    check(a.decrypt(b, e2) is None, "A decrypts an empty message as null")
    z = a.encrypt(b, "")
    sent_a.feed(bytes.fromhex(z["key"]), a.name)
    check(z["payload"] is not None and len(bytes.fromhex(z["payload"])) == wire.zero_length_payload,
          f"an empty string is a {wire.zero_length_payload}-byte payload, not an empty message")
    check(b.decrypt(a, z) == "", "B decrypts the payload of an empty string")

    # --- bulk: batches both ways, shuffled, with loss and late delivery ------------
    target = 200
    counts = {a.name: 0, b.name: 0}
    dropped = {a.name: 0, b.name: 0}
    late = {a.name: 0, b.name: 0}
    empties = 0
    # messages held back for later delivery: recipient name -> [(message, plaintext)]
    held: Dict[str, List[Tuple[Dict[str, Any], Optional[str]]]] = {a.name: [], b.name: []}
    trackers = {a.name: sent_a, b.name: sent_b}
    turn = 0
    while min(counts.values()) < target or held[a.name] or held[b.name]:
        sender, recipient = (a, b) if turn % 2 == 0 else (b, a)
        turn += 1
        batch: List[Tuple[Dict[str, Any], Optional[str]]] = []
        if counts[sender.name] < target:
            for _ in range(rng.randint(1, 15)):
                i = counts[sender.name]
                counts[sender.name] += 1
                plaintext = None if rng.random() < 0.03 else text_for(rng, i, sender.name)
                empties += plaintext is None
                msg = sender.encrypt(recipient, plaintext)
                check(msg["prekey"] is False, "no key exchange on a confirmed session")
                wire.check_message(msg, sender, recipient, empty=plaintext is None)
                trackers[sender.name].feed(bytes.fromhex(msg["key"]), sender.name)
                fate = rng.random()
                if fate < 0.05:
                    dropped[sender.name] += 1  # lost for good
                elif fate < 0.12:
                    held[recipient.name].append((msg, plaintext))  # delivered later
                else:
                    batch.append((msg, plaintext))
        # Deliver some of the messages held back earlier (older chains), mixed in.
        waiting = held[recipient.name]
        if waiting and (rng.random() < 0.5 or counts[sender.name] >= target):
            k = rng.randint(1, len(waiting))
            late[sender.name] += k
            batch += waiting[:k]
            del waiting[:k]
        rng.shuffle(batch)
        for msg, plaintext in batch:
            got = recipient.decrypt(sender, msg)
            check(got == plaintext, f"{recipient.name} got {got!r}, expected {plaintext!r}")
    print(f"{wire.label} bulk: sent {counts}, dropped {dropped}, delivered late {late}, "
          f"empty {empties}, {turn} batches", file=sys.stderr)

    # --- a lost first prekey message arriving late (C -> A) ----------------------
    c = PeerProcess("C" + suffix, "carol@example.org", 3333, wire.script)
    peers.append(c)
    bundle_c = c.init()
    bundle_a = a.bundle()
    c1 = c.encrypt(a, "first (delayed)", bundle_a)
    c2 = c.encrypt(a, "second", bundle_a)
    pk_c, _ = wire.check_key_exchange(bytes.fromhex(c1["key"]), bundle_c, bundle_a)
    check(c2["prekey"] is True, "C repeats the key exchange")
    check(a.decrypt(c, c2) == "second", "A builds the session from the second prekey message")
    check(a.decrypt(c, c1) == "first (delayed)", "A decrypts the delayed first prekey message")
    bundle_a_now = a.bundle()
    wire.check_bundle(bundle_a_now, 99)
    check(pk_c not in {p["id"] for p in bundle_a_now["pre_keys"]}, "A deleted the prekey C used")
    r = a.encrypt(c, "hello carol")
    check(r["prekey"] is False, "A answers C with a normal message")
    check(c.decrypt(a, r) == "hello carol", "C decrypts A's answer")
    check(c.encrypt(a, "confirmed")["prekey"] is False, "C stops sending the key exchange")

    # The A-B session is unaffected by the new one.
    last = b.encrypt(a, "still there?")
    check(a.decrypt(b, last) == "still there?", "A-B session still works")
    return {"A": a, "B": b, "C": c}


def run_omemo2_only(p: Dict[str, PeerProcess]) -> None:
    """What only the OMEMO 2 shapes have: no IV, raw keys, no zero-length payload."""
    a, b, c = p["A"], p["B"], p["C"]
    m = a.encrypt(b, "no iv")
    b.fails(b.decrypt_req(a, dict(m, iv="00" * 12)), "a message with a 12-byte iv")
    b.fails(b.decrypt_req(a, dict(m, iv="00" * 16)), "a message with a 16-byte iv")
    b.fails(b.decrypt_req(a, dict(m, iv="")), "a message with a zero-length iv")
    b.fails(b.decrypt_req(a, dict(m, payload="")), "a zero-length payload")
    b.fails(b.decrypt_req(a, dict(m, payload=None)), "a message with its payload removed")
    absent = {k: v for k, v in m.items() if k != "iv"}
    check(b.decrypt(a, absent) == "no iv", "a message without an iv member decrypts (state unchanged)")

    e = a.encrypt(b, None)
    b.fails(b.decrypt_req(a, dict(e, payload=m["payload"])), "an empty message given a payload")
    check(b.decrypt(a, e) is None, "the empty message still decrypts as null")

    # A legacy-shaped bundle (05 || u keys) is refused.
    bundle_c = c.bundle()
    legacy = dict(bundle_c, identity_key="05" + bundle_c["identity_key"],
                  signed_pre_key="05" + bundle_c["signed_pre_key"],
                  pre_keys=[{"id": k["id"], "key": "05" + k["key"]} for k in bundle_c["pre_keys"]])
    b.fails({"op": "encrypt", "peer": c.address, "plaintext": "x", "bundle": legacy},
            "a bundle with 33-byte 05 || u keys")


def run(seed: int) -> None:
    rng = random.Random(seed)
    peers: List[PeerProcess] = []
    try:
        run_json(rng, LEGACY, peers)
        # --- the XML requests (D and E) -----------------------------------------------
        run_legacy_device_lists(run_xml(rng, LEGACY, peers))
        run_omemo2_only(run_json(rng, OMEMO2, peers))
        run_omemo2_xml_only(run_xml(rng, OMEMO2, peers))

        for p in peers:
            check(p.quit() == 0, f"{p.name} exits 0 on quit")
    finally:
        for p in peers:
            p.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"selftest_peers: seed {seed} (rerun with --seed {seed})", file=sys.stderr)
    t0 = time.monotonic()
    try:
        run(seed)
    except Failure as e:
        print(f"selftest_peers: FAILED: {e} (seed {seed})", file=sys.stderr)
        print(f"selftest_peers: {PASSED} passed, 1 failed")
        return 1
    print(f"selftest_peers: all checks passed in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    print(f"selftest_peers: {PASSED} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
