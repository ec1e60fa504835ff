#!/usr/bin/env python3
"""A stranger who floods the OMEMO echo bot (end-to-end tests of omemo-bot,
tests/e2e/bot_e2e.sh scenario 12). Plain slixmpp for the XMPP; the key exchanges are made
by the python-omemo reference peer of the cross-implementation tests
(tests/interop/oldmemo_peer.py, in this process), so each one is a real, valid legacy
OMEMO key exchange from a fresh identity.

  bot_flood_sender.py --phase lists --jid J --password P --server HOST:PORT --to BOT
                      [--list-size N] [--list-rounds N]
  bot_flood_sender.py --phase messages --jid J --password P --server HOST:PORT --to BOT
                      --bot-device N [--events N] [--list-size N] [--devices N]

--phase lists, in this order:
  lists         publishes a device list of --list-size made-up devices in each version
                (eu.siacs.conversations.axolotl.devicelist, item current;
                urn:xmpp:omemo:2:devices, item current, access model open);
  subscription  asks for the bot's presence (the bot accepts and asks back, which is
                accepted) and waits until the subscription is mutual: the server then
                sends the bot the last item of both lists from this account's bare JID
                (whenever it has learnt that the bot wants them);
  more lists    publishes both lists --list-rounds - 1 times more (new device ids): the
                server notifies the bot of each from the bare JID.
--phase messages, in this order:
  events        sends --events direct messages (half legacy, half OMEMO 2) holding a pubsub
                <event> with such a list (from this client's full JID: the server stamps
                every client stanza with it);
  devices       fetches the bot's legacy bundle and sends --devices OMEMO messages, each a
                key exchange from another made-up device id with its own identity, each on
                another one-time prekey of that bundle (texts "flood #i").

Prints one JSON object on stdout: {"subscribed": bool, "lists_published": N} or
{"events_sent": N, "key_exchanges_sent": N, "device_ids": [...], "answers": N} ("answers":
messages from the bot's bare JID received meanwhile), and exits 0 (1 on a connection, login,
publishing or bundle failure).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import random
import sys
import xml.etree.ElementTree as StdET
from typing import Any, Dict, List

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

from plain_client import PlainClient

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import oldmemo_peer  # noqa: E402  pylint: disable=wrong-import-position

OLD_NS = "eu.siacs.conversations.axolotl"
TWO_NS = "urn:xmpp:omemo:2"
OLD_LIST_NODE = "eu.siacs.conversations.axolotl.devicelist"
TWO_LIST_NODE = "urn:xmpp:omemo:2:devices"
EVENT_NS = "http://jabber.org/protocol/pubsub#event"
FALLBACK = "This message is OMEMO encrypted."
MAX_DEVICE_ID = 2**31 - 1


def device_list(ns: str, ids: List[int]) -> ET.Element:
    """<list xmlns=legacy> or <devices xmlns=OMEMO 2> naming `ids`."""
    root = ET.Element(f"{{{ns}}}{'list' if ns == OLD_NS else 'devices'}")
    for device_id in ids:
        ET.SubElement(root, f"{{{ns}}}device", {"id": str(device_id)})
    return root


def made_up_ids(count: int) -> List[int]:
    return random.sample(range(1, MAX_DEVICE_ID), count)


class Stranger(PlainClient):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")
        self.roster.auto_authorize = True
        self.roster.auto_subscribe = False
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self.answers = 0
        self.bot = ""
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda *_: self._fail("authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        self.add_event_handler("roster_update", lambda *_: self.changed.set())
        self.add_event_handler("presence_subscribed", lambda *_: self.changed.set())
        self.add_event_handler("presence_subscribe", lambda *_: self.changed.set())
        self.add_event_handler("message", self._on_message)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))

    async def _on_start(self, _event: Any) -> None:
        await self.get_roster()
        self.send_presence()
        if not self.ready.done():
            self.ready.set_result(True)

    def _on_message(self, msg: Any) -> None:
        if JID(msg["from"]).bare == self.bot:
            self.answers += 1

    def subscription(self, bare: str) -> str:
        return self.client_roster[bare]["subscription"]

    async def subscribe_mutually(self, bare: str, timeout: float) -> bool:
        """Asks for `bare`'s presence; True once the subscription is mutual ("both")."""
        self.send_presence_subscription(pto=bare)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.subscription(bare) != "both":
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass
        return True

    async def publish_list(self, node: str, payload: ET.Element) -> None:
        form = self.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/pubsub#publish-options")
        form.add_field(var="pubsub#access_model", value="open")
        await self.plugin["xep_0060"].publish(JID(self.boundjid.bare), node, id="current",
                                              payload=payload, options=form)

    def send_event(self, to: str, ns: str, node: str, ids: List[int]) -> None:
        msg = self.make_message(mto=to, mtype="headline")
        event = ET.Element(f"{{{EVENT_NS}}}event")
        items = ET.SubElement(event, f"{{{EVENT_NS}}}items", {"node": node})
        item = ET.SubElement(items, f"{{{EVENT_NS}}}item", {"id": "current"})
        item.append(device_list(ns, ids))
        msg.append(event)
        msg.send()

    async def bot_bundle(self, bot: str, device_id: int) -> ET.Element:
        node = f"{OLD_NS}.bundles:{device_id}"
        result = await self.plugin["xep_0060"].get_items(JID(bot), node, max_items=1)
        for item in result["pubsub"]["items"]:
            bundle = item.xml.find(f"{{{OLD_NS}}}bundle")
            if bundle is not None:
                return bundle
        raise RuntimeError(f"no <bundle> in {node}")


def bundle_with_one_pre_key(bundle: ET.Element, index: int) -> str:
    """The bundle with only its `index`-th one-time prekey, as a string."""
    one = copy.deepcopy(bundle)
    prekeys = one.find(f"{{{OLD_NS}}}prekeys")
    if prekeys is None:
        raise RuntimeError("the bot's bundle has no <prekeys>")
    keys = list(prekeys)
    if index >= len(keys):
        raise RuntimeError(f"the bot's bundle has only {len(keys)} prekeys")
    for i, key in enumerate(keys):
        if i != index:
            prekeys.remove(key)
    return StdET.tostring(one, encoding="unicode")


async def main_async(args: argparse.Namespace) -> int:
    host, _, port = args.server.rpartition(":")
    stranger = Stranger(f"{JID(args.jid).bare}/flood", args.password)
    stranger.bot = JID(args.to).bare
    bot = stranger.bot
    stranger.connect(host, int(port))
    try:
        await asyncio.wait_for(stranger.ready, 30)
    except Exception as e:  # pylint: disable=broad-exception-caught
        print(f"flood sender: not online: {e}", file=sys.stderr)
        return 1
    report: Dict[str, Any] = {}
    rc = 0
    try:
        if args.phase == "lists":
            await lists_phase(stranger, bot, args, report)
        else:
            await messages_phase(stranger, bot, args, report)
    except (IqError, IqTimeout, RuntimeError, oldmemo_peer.ProtocolError) as e:
        print(f"flood sender: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    if args.phase == "messages":
        report["answers"] = stranger.answers
    # Waits until everything queued is written and the server closed the stream.
    await stranger.disconnect(wait=5)
    print(json.dumps(report, sort_keys=True))
    return rc


async def lists_phase(stranger: Stranger, bot: str, args: argparse.Namespace,
                      report: Dict[str, Any]) -> None:
    report.update(subscribed=False, lists_published=0)

    async def publish_both() -> None:
        for ns, node in ((OLD_NS, OLD_LIST_NODE), (TWO_NS, TWO_LIST_NODE)):
            await stranger.publish_list(node, device_list(ns, made_up_ids(args.list_size)))
            report["lists_published"] += 1

    await publish_both()
    report["subscribed"] = await stranger.subscribe_mutually(bot, 30)
    if not report["subscribed"]:
        raise RuntimeError(f"no mutual presence subscription with {bot}: "
                           f"{stranger.subscription(bot)}")
    for _ in range(args.list_rounds - 1):
        await publish_both()


async def messages_phase(stranger: Stranger, bot: str, args: argparse.Namespace,
                         report: Dict[str, Any]) -> None:
    report.update(events_sent=0, key_exchanges_sent=0, device_ids=[])
    for i in range(args.events):
        ns, node = (OLD_NS, OLD_LIST_NODE) if i % 2 == 0 else (TWO_NS, TWO_LIST_NODE)
        stranger.send_event(bot, ns, node, made_up_ids(args.list_size))
        report["events_sent"] += 1

    bundle = await stranger.bot_bundle(bot, args.bot_device)
    omemo_peer = oldmemo_peer.Peer()
    own = stranger.boundjid.bare
    for i, device_id in enumerate(made_up_ids(args.devices)):
        # A fresh identity and 100 prekeys of its own for each made-up device.
        await omemo_peer.handle({"op": "init", "jid": own, "device_id": device_id})
        answer = await omemo_peer.handle({
            "op": "encrypt_xml",
            "peer": {"jid": bot, "device_id": args.bot_device},
            "plaintext": f"flood #{i + 1}",
            "bundle_xml": bundle_with_one_pre_key(bundle, i),
        })
        msg = stranger.make_message(mto=bot, mbody=FALLBACK, mtype="chat")
        msg.append(ET.fromstring(answer["xml"]))
        msg.send()
        report["key_exchanges_sent"] += 1
        report["device_ids"].append(device_id)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--phase", choices=["lists", "messages"], required=True)
    ap.add_argument("--jid", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--server", required=True, help="HOST:PORT (plaintext c2s)")
    ap.add_argument("--to", required=True, help="the bot's JID")
    ap.add_argument("--bot-device", type=int, help="the bot's device id (--phase messages)")
    ap.add_argument("--events", type=int, default=100, help="direct messages with a list")
    ap.add_argument("--list-size", type=int, default=250, help="devices per list")
    ap.add_argument("--list-rounds", type=int, default=3, help="publications of each list")
    ap.add_argument("--devices", type=int, default=40, help="made-up devices' key exchanges")
    args = ap.parse_args()
    if args.phase == "messages" and args.bot_device is None:
        ap.error("--phase messages needs --bot-device")
    if args.list_rounds < 1:
        ap.error("--list-rounds must be >= 1")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
