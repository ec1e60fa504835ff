"""A slixmpp client for the throwaway test server (scripts/prosody): SASL PLAIN over plain
TCP on loopback, no TLS. The base of the raw and flood senders of bot_e2e.sh."""

from __future__ import annotations

from slixmpp import ClientXMPP


class PlainClient(ClientXMPP):
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password, plugin_config={
            "feature_mechanisms": {"unencrypted_plain": True, "unencrypted_scram": True},
        })
        self.enable_plaintext = True
        self.enable_starttls = False
        self.enable_direct_tls = False
