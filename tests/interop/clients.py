"""slixmpp clients for the interop tests: connect, log in, and wait on events with bounded timeouts."""

import asyncio
import xml.etree.ElementTree as ET

import slixmpp

TIMEOUT = 10


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech=None, plugins=()):
        super().__init__(jid, password, sasl_mech=mech)
        for p in ("xep_0030", "xep_0199", "xep_0092", "xep_0054", "xep_0203", *plugins):
            self.register_plugin(p)
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.roster_pushes = asyncio.Queue()
        # Subscription requests are answered by the test, not automatically.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", self._on_failed)
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("roster_update", self.roster_pushes.put_nowait)

    async def _on_start(self, _event):
        await self.get_roster(timeout=TIMEOUT)
        if not self.started.done():
            self.started.set_result(True)

    def _on_failed(self, _event):
        if not self.started.done():
            self.started.set_exception(PermissionError("authentication failed"))


async def login(server, user, password=None, resource="slix", mech=None, direct_tls=False,
                plugins=(), presence=True):
    """A client logged in as user@localhost over STARTTLS (or direct TLS), session started."""
    from conftest import USERS
    c = Client(f"{user}@localhost/{resource}", password or USERS[user], mech=mech, plugins=plugins)
    c.ca_certs = server.cert
    c.enable_plaintext = False
    if direct_tls:
        c.enable_starttls = False
        c.enable_direct_tls = True
        port = server.ports["c2s-direct-tls"]
    else:
        c.enable_starttls = True
        c.enable_direct_tls = False
        port = server.ports["c2s"]
    c.connect(host="127.0.0.1", port=port)
    try:
        await asyncio.wait_for(c.started, TIMEOUT)
    except BaseException:
        c.disconnect()
        raise
    if presence:
        c.send_presence()
    return c


async def wait_for(queue, pred, what):
    """The first item of `queue` satisfying `pred`, within TIMEOUT."""
    async def loop():
        while True:
            item = await queue.get()
            if pred(item):
                return item
    try:
        return await asyncio.wait_for(loop(), TIMEOUT)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def raw_iq(client, itype, payload, to=None):
    """Send an iq with a raw XML payload; returns the reply's XML element (raises on error)."""
    iq = client.make_iq(ito=to, itype=itype)
    iq.xml.append(ET.fromstring(payload))
    reply = await iq.send(timeout=TIMEOUT)
    return reply.xml


async def close(*clients):
    """Close each stream cleanly and wait (bounded) until the connection is gone."""
    waits = [c.disconnect() for c in clients]
    await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), TIMEOUT)
