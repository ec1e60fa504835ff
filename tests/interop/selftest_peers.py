#!/usr/bin/env python3
"""Python-to-Python self-test of the oldmemo peer bridge (see PROTOCOL.md).

Starts two (then three) instances of oldmemo_peer.py and drives them through the
JSON-lines protocol, the way the Rust cross-implementation tests will:

* init, then a first prekey message from A to B built from B's bundle;
* A keeps sending prekey messages until it has received something from B;
* 200+ messages each way in batches, shuffled within a batch, a few dropped and a few
  held back and delivered after later ratchet steps;
* empty (key transport) messages both ways;
* a lost first prekey message delivered late (C to A);
* error cases (replay, tampering, missing session or bundle) answer {"ok": false}, leave
  the peer running and its session intact.

It also checks the wire bytes independently of oldmemo, with a minimal protobuf reader:
0x33 || PreKeySignalMessage (with the SignalMessage in field 4), or 0x33 || SignalMessage
|| 8-byte MAC, and the counters n and pn.

Run with the venv's interpreter (the peers are started with the same one):
    scripts/setup-test-env && .venv/bin/python tests/interop/selftest_peers.py [--seed N]
Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oldmemo_peer.py")
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
    def __init__(self, name: str, jid: str, device_id: int) -> None:
        self.name = name
        self.jid = jid
        self.device_id = device_id
        self.proc = subprocess.Popen(
            [sys.executable, PEER],
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


def check_signal_message(data: bytes) -> Tuple[bytes, int, int]:
    """0x33 || SignalMessage || MAC8; returns (ratchet key, n, pn)."""
    check(len(data) > 9 and data[0] == 0x33, "SignalMessage version byte 0x33")
    fields = parse_proto(data[1:-8])
    check(set(fields) == {1, 2, 3, 4}, f"SignalMessage fields {sorted(fields)}")
    ratchet_key, n, pn, ciphertext = fields[1], fields[2], fields[3], fields[4]
    check(isinstance(ratchet_key, bytes) and len(ratchet_key) == 33 and ratchet_key[0] == 5,
          "SignalMessage ratchet key is 05 || u")
    check(isinstance(n, int) and isinstance(pn, int), "SignalMessage counters are varints")
    # AES-256-CBC of the 32 (or 16) byte key material, PKCS#7 padded.
    check(isinstance(ciphertext, bytes) and len(ciphertext) in (32, 48),
          f"SignalMessage ciphertext length {len(ciphertext)}")
    return ratchet_key, n, pn


def check_prekey_message(data: bytes, sender_bundle: Dict[str, Any],
                         recipient_bundle: Dict[str, Any]) -> Tuple[int, bytes]:
    """0x33 || PreKeySignalMessage; returns (prekey id, inner SignalMessage bytes)."""
    check(len(data) > 1 and data[0] == 0x33, "PreKeySignalMessage version byte 0x33")
    fields = parse_proto(data[1:])
    check({1, 2, 3, 4, 6} <= set(fields) <= {1, 2, 3, 4, 5, 6},
          f"PreKeySignalMessage fields {sorted(fields)}")
    check(fields[3].hex() == sender_bundle["identity_key"],
          "PreKeySignalMessage identity key is the sender's bundle identity key")
    check(len(fields[2]) == 33 and fields[2][0] == 5, "PreKeySignalMessage base key is 05 || u")
    check(fields[6] == recipient_bundle["signed_pre_key_id"], "PreKeySignalMessage signed prekey id")
    ids = {p["id"] for p in recipient_bundle["pre_keys"]}
    check(fields[1] in ids, f"PreKeySignalMessage prekey id {fields[1]} is in the bundle")
    check_signal_message(fields[4])
    return fields[1], fields[4]


def check_bundle(bundle: Dict[str, Any], num_pre_keys: int) -> None:
    for name in ("identity_key", "signed_pre_key"):
        key = bytes.fromhex(bundle[name])
        check(len(key) == 33 and key[0] == 5, f"bundle {name} is 05 || u")
    check(len(bytes.fromhex(bundle["signed_pre_key_signature"])) == 64, "bundle signature is 64 bytes")
    check(isinstance(bundle["signed_pre_key_id"], int), "bundle signed prekey id")
    check(len(bundle["pre_keys"]) == num_pre_keys,
          f"bundle has {len(bundle['pre_keys'])} prekeys, expected {num_pre_keys}")
    check(len({p["id"] for p in bundle["pre_keys"]}) == num_pre_keys, "bundle prekey ids are distinct")
    for p in bundle["pre_keys"]:
        key = bytes.fromhex(p["key"])
        check(len(key) == 33 and key[0] == 5, "bundle prekey is 05 || u")


class ChainTracker:
    """Checks a sender's n / pn against the Double Ratchet: n counts from 0 within a
    sending chain, pn is the number of messages sent in the previous sending chain (the
    python-doubleratchet semantics; libsignal sends that number minus one)."""

    def __init__(self) -> None:
        self.ratchet_key: Optional[bytes] = None
        self.count = 0  # messages sent on the current chain
        self.previous = 0

    def feed(self, signal_message: bytes, who: str) -> None:
        ratchet_key, n, pn = check_signal_message(signal_message)
        if ratchet_key != self.ratchet_key:
            if self.ratchet_key is not None:
                self.previous = self.count
            self.ratchet_key, self.count = ratchet_key, 0
        check(n == self.count, f"{who}: n={n}, expected {self.count}")
        check(pn == self.previous, f"{who}: pn={pn}, expected {self.previous}")
        self.count += 1


def check_message(msg: Dict[str, Any], sender: PeerProcess, recipient: PeerProcess,
                  empty: bool) -> None:
    check(msg["sid"] == sender.device_id and msg["rid"] == recipient.device_id, "message sid/rid")
    check(len(bytes.fromhex(msg["iv"])) == 12, "message iv is 12 bytes")
    if empty:
        check(msg["payload"] is None, "empty message has no payload")
    else:
        check(isinstance(msg["payload"], str), "message has a payload")


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


def run(seed: int) -> None:
    rng = random.Random(seed)
    peers: List[PeerProcess] = []
    try:
        a = PeerProcess("A", "alice@example.org", 1111)
        b = PeerProcess("B", "bob@example.org", 2222)
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
        check_bundle(bundle_a, 100)
        check_bundle(bundle_b, 100)
        check(a.bundle() == bundle_a, "the bundle op returns the init bundle")
        print(f"init took {init_seconds:.3f}s", file=sys.stderr)

        a.fails({"op": "encrypt", "peer": b.address, "plaintext": "x"}, "encrypt without session or bundle")
        bad = dict(bundle_b, signed_pre_key_signature="00" * 64)
        a.fails({"op": "encrypt", "peer": b.address, "plaintext": "x", "bundle": bad},
                "a bundle with a bad signature")

        sent_a, sent_b = ChainTracker(), ChainTracker()

        # --- first contact: prekey messages until B answers --------------------------
        m1 = a.encrypt(b, "hello bob", bundle_b)
        check(m1["prekey"] is True, "first message is a prekey message")
        check_message(m1, a, b, empty=False)
        pk_id, inner = check_prekey_message(bytes.fromhex(m1["key"]), bundle_a, bundle_b)
        sent_a.feed(inner, "A")
        b.fails(b.decrypt_req(a, dict(m1, prekey=False)), "a prekey message flagged prekey=false")
        check(b.decrypt(a, m1) == "hello bob", "B decrypts the first prekey message")
        bundle_b_now = b.bundle()
        check_bundle(bundle_b_now, 99)
        check(pk_id not in {p["id"] for p in bundle_b_now["pre_keys"]}, "B deleted the used prekey")
        b.fails(b.decrypt_req(a, m1), "a replayed prekey message")

        m2 = a.encrypt(b, "still unanswered", bundle_b)  # bundle is ignored now
        check(m2["prekey"] is True, "A repeats the key exchange until it hears from B")
        pk_id2, inner = check_prekey_message(bytes.fromhex(m2["key"]), bundle_a, bundle_b)
        check(pk_id2 == pk_id, "the repeated key exchange names the same prekey")
        sent_a.feed(inner, "A")
        check(b.decrypt(a, m2) == "still unanswered", "B decrypts the repeated key exchange")

        r1 = b.encrypt(a, "hi alice")
        check(r1["prekey"] is False, "the passive side sends normal messages")
        check_message(r1, b, a, empty=False)
        sent_b.feed(bytes.fromhex(r1["key"]), "B")
        check(a.decrypt(b, r1) == "hi alice", "A decrypts B's answer")

        m3 = a.encrypt(b, "now confirmed")
        check(m3["prekey"] is False, "A stops sending the key exchange once it heard from B")
        sent_a.feed(bytes.fromhex(m3["key"]), "A")
        check(b.decrypt(a, m3) == "now confirmed", "B decrypts A's first normal message")

        # --- tampering and replay leave the session intact ---------------------------
        m4 = a.encrypt(b, "tamper target")
        sent_a.feed(bytes.fromhex(m4["key"]), "A")
        key = bytearray(bytes.fromhex(m4["key"]))
        key[-1] ^= 1  # the MAC
        b.fails(b.decrypt_req(a, dict(m4, key=key.hex())), "a message with a bad MAC")
        payload = bytearray(bytes.fromhex(m4["payload"]))
        payload[0] ^= 1
        b.fails(b.decrypt_req(a, dict(m4, payload=payload.hex())), "a message with a bad payload")
        b.fails(b.decrypt_req(a, dict(m4, rid=9999)), "a message for another device")
        check(b.decrypt(a, m4) == "tamper target", "the untampered message still decrypts")
        b.fails(b.decrypt_req(a, m4), "a replayed message")
        b.fails({"op": "decrypt", "peer": {"jid": "eve@example.org", "device_id": 1111}, "message": m4},
                "a message from a peer without session")

        # --- empty messages ---------------------------------------------------------
        e1 = a.encrypt(b, None)
        check_message(e1, a, b, empty=True)
        sent_a.feed(bytes.fromhex(e1["key"]), "A")
        check(b.decrypt(a, e1) is None, "B decrypts an empty message as null")
        e2 = b.encrypt(a, None)
        check_message(e2, b, a, empty=True)
        sent_b.feed(bytes.fromhex(e2["key"]), "B")
        check(a.decrypt(b, e2) is None, "A decrypts an empty message as null")
        z = a.encrypt(b, "")
        sent_a.feed(bytes.fromhex(z["key"]), "A")
        check(z["payload"] == "", "an empty string is a zero-length payload, not an empty message")
        check(b.decrypt(a, z) == "", "B decrypts a zero-length payload")

        # --- bulk: batches both ways, shuffled, with loss and late delivery ------------
        target = 200
        counts = {"A": 0, "B": 0}
        dropped = {"A": 0, "B": 0}
        late = {"A": 0, "B": 0}
        empties = 0
        # messages held back for later delivery: recipient name -> [(message, plaintext)]
        held: Dict[str, List[Tuple[Dict[str, Any], Optional[str]]]] = {"A": [], "B": []}
        trackers = {"A": sent_a, "B": sent_b}
        turn = 0
        while min(counts.values()) < target or held["A"] or held["B"]:
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
                    check_message(msg, sender, recipient, empty=plaintext is None)
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
        print(f"bulk: sent {counts}, dropped {dropped}, delivered late {late}, empty {empties}, "
              f"{turn} batches", file=sys.stderr)

        # --- a lost first prekey message arriving late (C -> A) ----------------------
        c = PeerProcess("C", "carol@example.org", 3333)
        peers.append(c)
        bundle_c = c.init()
        bundle_a = a.bundle()
        c1 = c.encrypt(a, "first (delayed)", bundle_a)
        c2 = c.encrypt(a, "second", bundle_a)
        pk_c, _ = check_prekey_message(bytes.fromhex(c1["key"]), bundle_c, bundle_a)
        check(c2["prekey"] is True, "C repeats the key exchange")
        check(a.decrypt(c, c2) == "second", "A builds the session from the second prekey message")
        check(a.decrypt(c, c1) == "first (delayed)", "A decrypts the delayed first prekey message")
        bundle_a_now = a.bundle()
        check_bundle(bundle_a_now, 99)
        check(pk_c not in {p["id"] for p in bundle_a_now["pre_keys"]}, "A deleted the prekey C used")
        r = a.encrypt(c, "hello carol")
        check(r["prekey"] is False, "A answers C with a normal message")
        check(c.decrypt(a, r) == "hello carol", "C decrypts A's answer")
        check(c.encrypt(a, "confirmed")["prekey"] is False, "C stops sending the key exchange")

        # The A-B session is unaffected by the new one.
        last = b.encrypt(a, "still there?")
        check(a.decrypt(b, last) == "still there?", "A-B session still works")

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
