#!/usr/bin/env python3
"""Sends hand-made stanzas to the OMEMO echo bot and reports what came back (end-to-end
tests of omemo-bot, tests/e2e/bot_e2e.sh). Plain slixmpp, no OMEMO library.

  bot_raw_sender.py --jid J --password P --server HOST:PORT --to BOT --bot-device N
                    [--wait S]

Cases, sent one after the other to the bot's bare JID as type chat, each followed by a
pause of --wait seconds (or until the first answer to a case that expects one):
  plain         an unencrypted message with a body                  -> expects the hint
  garbage-xml   an <encrypted> element that is not valid OMEMO XML  -> expects silence
  garbage-key   a well-formed <encrypted> with a key for the bot's device whose bytes are
                random (not a Signal message)                       -> expects silence
  wrong-device  a well-formed <encrypted> with keys only for other device ids -> silence
Each OMEMO case carries the fallback body slixmpp-omemo sends, so a bot that answered
fallback bodies with the hint would be caught.

Prints one JSON object on stdout: {"plain": [bodies...], "garbage-xml": [...], ...} with
the bodies of every message from the bot's bare JID received during each case's pause,
and exits 0 (1 on connection or login failure).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

from slixmpp import JID
from slixmpp.xmlstream import ET

from plain_client import PlainClient

NS = "eu.siacs.conversations.axolotl"
FALLBACK = "This message is OMEMO encrypted."


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypted_xml(case: str, bot_device: int) -> str:
    iv = b64(os.urandom(12))
    payload = b64(os.urandom(24))
    if case == "garbage-xml":
        return (f"<encrypted xmlns='{NS}'><header sid='not-a-number'>"
                f"<key rid='{bot_device}'>%%% not base64 %%%</key></header>"
                f"<payload>!!!</payload></encrypted>")
    if case == "garbage-key":
        return (f"<encrypted xmlns='{NS}'><header sid='4242'>"
                f"<key prekey='true' rid='{bot_device}'>{b64(os.urandom(80))}</key>"
                f"<iv>{iv}</iv></header><payload>{payload}</payload></encrypted>")
    if case == "wrong-device":
        other = (bot_device % 2_000_000_000) + 1
        return (f"<encrypted xmlns='{NS}'><header sid='4243'>"
                f"<key rid='{other}'>{b64(os.urandom(60))}</key>"
                f"<key rid='{other + 1}'>{b64(os.urandom(60))}</key>"
                f"<iv>{iv}</iv></header><payload>{payload}</payload></encrypted>")
    raise ValueError(case)


class RawSender(PlainClient):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("message", self._on_message)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))

    async def _on_start(self, _event) -> None:
        self.send_presence()
        if not self.ready.done():
            self.ready.set_result(True)

    def _on_message(self, msg) -> None:
        self.inbox.put_nowait((JID(msg["from"]).bare, msg["body"]))


async def collect(peer: RawSender, bot: str, wait: float, want_one: bool) -> List[str]:
    got: List[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return got
        try:
            sender, body = await asyncio.wait_for(peer.inbox.get(), remaining)
        except asyncio.TimeoutError:
            return got
        if sender == bot:
            got.append(body)
            if want_one:
                # A moment more, to catch a second (unwanted) answer.
                await asyncio.sleep(0.5)
                while not peer.inbox.empty():
                    s, b = peer.inbox.get_nowait()
                    if s == bot:
                        got.append(b)
                return got


async def main_async(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    peer = RawSender(f"{JID(args.jid).bare}/raw", args.password)
    peer.connect(host, int(port))
    try:
        await asyncio.wait_for(peer.ready, 30)
    except Exception as e:  # pylint: disable=broad-exception-caught
        print(f"raw sender: not online: {e}", file=sys.stderr)
        return 1
    bot = JID(args.to).bare
    results: Dict[str, List[str]] = {}
    for case in ("plain", "garbage-xml", "garbage-key", "wrong-device"):
        msg = peer.make_message(mto=bot, mtype="chat")
        msg["id"] = f"raw-{case}"
        if case == "plain":
            msg["body"] = "hello, in plaintext"
        else:
            msg["body"] = FALLBACK
            msg.append(ET.fromstring(encrypted_xml(case, args.bot_device)))
        msg.send()
        results[case] = await collect(peer, bot, args.wait if case != "plain" else 10.0,
                                      want_one=(case == "plain"))
    peer.disconnect()
    print(json.dumps(results, ensure_ascii=False, sort_keys=True))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--server", required=True, help="HOST:PORT (plaintext c2s)")
    ap.add_argument("--to", required=True, help="the bot's JID")
    ap.add_argument("--bot-device", type=int, required=True, help="the bot's device id")
    ap.add_argument("--wait", type=float, default=1.5, help="seconds to listen after each case")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
