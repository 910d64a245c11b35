"""slixmpp clients for the interop tests.

Everything here waits on events or futures with a bound (at most STEP_TIMEOUT seconds per
expected event); nothing sleeps in the hope that something arrived.

TLS: each client trusts exactly the server's generated self-signed certificate
(`data_dir/tls/cert.pem`) as its only CA, with hostname checking on (the certificate's SAN is
`localhost`). Verification is never disabled.
"""

from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET
from typing import Any, Callable

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from conftest import STEP_TIMEOUT, StarlingServer

NS_DELAY = "urn:xmpp:delay"
NS_ROSTER = "jabber:iq:roster"
NS_PRIVATE = "jabber:iq:private"

DEFAULT_PLUGINS = ("xep_0030", "xep_0049", "xep_0054", "xep_0092", "xep_0199", "xep_0203")


class LoginFailed(AssertionError):
    """The session did not start; `reason` says which event ended the attempt."""

    def __init__(self, reason: str, client: "Client"):
        super().__init__(reason)
        self.reason = reason
        self.client = client


def tls_context(server: StarlingServer, direct_tls: bool) -> ssl.SSLContext:
    """A context that trusts only the server's own certificate and checks the host name."""
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if direct_tls:
        # XEP-0368: direct TLS clients offer ALPN "xmpp-client".
        ctx.set_alpn_protocols(["xmpp-client"])
    return ctx


class Inbox:
    """Everything a client received, with bounded waits for a matching item.

    Each item can satisfy one `expect` only, so consecutive expectations see new stanzas.
    """

    def __init__(self, name: str):
        self.name = name
        self.items: list[tuple[str, Any]] = []
        self._consumed: set[int] = set()
        self._waiters: list[tuple[str, Callable[[Any], bool], asyncio.Future]] = []

    def put(self, kind: str, item: Any) -> None:
        idx = len(self.items)
        self.items.append((kind, item))
        for w in list(self._waiters):
            wkind, pred, fut = w
            if fut.done():
                self._waiters.remove(w)
                continue
            if wkind == kind and _safe(pred, item):
                self._waiters.remove(w)
                self._consumed.add(idx)
                fut.set_result(item)
                return

    def find(self, kind: str, pred: Callable[[Any], bool] = lambda _: True) -> Any | None:
        """An unconsumed item already received, without waiting."""
        for idx, (k, item) in enumerate(self.items):
            if idx not in self._consumed and k == kind and _safe(pred, item):
                self._consumed.add(idx)
                return item
        return None

    async def expect(
        self,
        kind: str,
        pred: Callable[[Any], bool] = lambda _: True,
        what: str = "",
        timeout: float = STEP_TIMEOUT,
    ) -> Any:
        found = self.find(kind, pred)
        if found is not None:
            return found
        fut = asyncio.get_running_loop().create_future()
        waiter = (kind, pred, fut)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.name}: timed out after {timeout}s waiting for {kind} {what}\n"
                f"{self.name} received:\n{self.describe()}"
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def describe(self, last: int = 30) -> str:
        out = []
        for kind, item in self.items[-last:]:
            text = str(item) if not isinstance(item, str) else item
            out.append(f"  [{kind}] {text[:600]}")
        return "\n".join(out) or "  (nothing)"


def _safe(pred: Callable[[Any], bool], item: Any) -> bool:
    try:
        return bool(pred(item))
    except Exception:  # a predicate that cannot read the item simply does not match
        return False


class Client(slixmpp.ClientXMPP):
    """A slixmpp client wired for tests: every inbound stanza and stream event lands in `inbox`."""

    def __init__(
        self,
        server: StarlingServer,
        jid: str,
        password: str,
        *,
        mech: str | None = None,
        direct_tls: bool = False,
        plugins: tuple[str, ...] = (),
    ):
        super().__init__(jid, password, sasl_mech=mech)
        self.starling = server
        self.direct_tls = direct_tls
        for p in (*DEFAULT_PLUGINS, *plugins):
            self.register_plugin(p)
        self.ssl_context = tls_context(server, direct_tls)
        self.enable_plaintext = False
        self.enable_starttls = not direct_tls
        self.enable_direct_tls = direct_tls
        self.whitespace_keepalive = False
        # Subscription requests are answered by the test itself, never automatically.
        self.auto_authorize = None
        self.auto_subscribe = False

        self.inbox = Inbox(jid)
        loop = asyncio.get_running_loop()
        self.outcome: asyncio.Future = loop.create_future()

        self.add_event_handler("message", lambda m: self.inbox.put("message", m))
        self.add_event_handler("message_error", lambda m: self.inbox.put("message_error", m))
        self.add_event_handler("presence", lambda p: self.inbox.put("presence", p))
        self.register_handler(
            Callback(
                "interop roster push",
                StanzaPath("iq@type=set/roster"),
                lambda iq: self.inbox.put("roster_push", iq),
            )
        )
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("failed_all_auth", lambda _e: self._finish(LoginFailed("failed_all_auth", self)))
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("auth_success", lambda _e: self.inbox.put("event", "auth_success"))

    # -- event plumbing --------------------------------------------------------------------
    def _finish(self, result: Any) -> None:
        if not self.outcome.done():
            if isinstance(result, BaseException):
                self.outcome.set_exception(result)
            else:
                self.outcome.set_result(result)

    def _on_session_start(self, _event: Any) -> None:
        self.inbox.put("event", "session_start")
        self._finish(True)

    def _on_failed_auth(self, failure: Any) -> None:
        self.inbox.put("failed_auth", failure)

    def _on_stream_error(self, error: Any) -> None:
        self.inbox.put("stream_error", error)
        self._finish(LoginFailed(f"stream error: {error}", self))

    def _on_connection_failed(self, error: Any) -> None:
        self.inbox.put("event", f"connection_failed: {error}")
        # slixmpp would retry forever; one failure is enough for a test.
        self.cancel_connection_attempt()
        self._finish(LoginFailed(f"connection failed: {error}", self))

    def _on_disconnected(self, reason: Any) -> None:
        self.inbox.put("disconnected", reason)
        self._finish(LoginFailed(f"disconnected before the session started ({reason})", self))

    # -- actions ---------------------------------------------------------------------------
    def start(self) -> None:
        port = self.starling.direct_tls_port if self.direct_tls else self.starling.c2s_port
        self.connect(host=self.starling.host, port=port)

    @property
    def mechanism(self) -> str | None:
        mech = self.plugin["feature_mechanisms"].mech
        return mech.name if mech is not None else None

    def is_tls(self) -> bool:
        return isinstance(self.socket, (ssl.SSLSocket, ssl.SSLObject))

    async def close(self) -> None:
        """Close the stream and wait (bounded) until the connection is gone."""
        if self.transport is None:
            return
        await asyncio.wait_for(self.disconnect(wait=2.0), STEP_TIMEOUT)

    async def iq_raw(self, itype: str, payload: str, to: str | None = None) -> ET.Element:
        """Send an iq carrying a raw XML payload; returns the reply's XML (IqError on error)."""
        iq = self.make_iq(ito=to, itype=itype)
        iq.xml.append(ET.fromstring(payload))
        reply = await iq.send(timeout=STEP_TIMEOUT)
        return reply.xml

    async def roster_get(self, ver: str | None = None) -> ET.Element:
        """A raw roster get (not slixmpp's cached, versioned get_roster)."""
        attr = "" if ver is None else f" ver='{ver}'"
        return await self.iq_raw("get", f"<query xmlns='{NS_ROSTER}'{attr}/>")


def roster_items(reply: ET.Element) -> dict[str, dict[str, Any]]:
    """jid -> {name, subscription, ask, groups} from a roster result or push."""
    query = reply.find(f"{{{NS_ROSTER}}}query")
    items: dict[str, dict[str, Any]] = {}
    if query is None:
        return items
    for item in query.findall(f"{{{NS_ROSTER}}}item"):
        items[item.get("jid")] = {
            "name": item.get("name"),
            "subscription": item.get("subscription", "none"),
            "ask": item.get("ask"),
            "groups": sorted(g.text or "" for g in item.findall(f"{{{NS_ROSTER}}}group")),
        }
    return items


def push_item(iq: Any, jid: str) -> dict[str, Any] | None:
    return roster_items(iq.xml).get(jid)


async def login(
    server: StarlingServer,
    user: str,
    *,
    password: str | None = None,
    resource: str = "slix",
    mech: str | None = None,
    direct_tls: bool = False,
    plugins: tuple[str, ...] = (),
    roster: bool = True,
    presence: bool = True,
) -> Client:
    """A client logged in as user@domain/resource, session started (LoginFailed otherwise).

    Like a real client it then requests the roster (`roster`: which makes the resource an
    "interested resource" that receives roster pushes, RFC 6121 §2.1.6) and sends initial
    presence (`presence`: which also releases stored offline messages).
    """
    c = Client(
        server,
        f"{user}@{server.domain}/{resource}",
        password if password is not None else server.password(user),
        mech=mech,
        direct_tls=direct_tls,
        plugins=plugins,
    )
    c.start()
    try:
        await asyncio.wait_for(asyncio.shield(c.outcome), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        await _abort(c)
        raise LoginFailed(
            f"{user}: no session within {STEP_TIMEOUT}s\nreceived:\n{c.inbox.describe()}", c
        ) from None
    except LoginFailed:
        await _abort(c)
        raise
    if roster:
        await c.get_roster(timeout=STEP_TIMEOUT)
    if presence:
        c.send_presence()
    return c


async def _abort(c: Client) -> None:
    c.cancel_connection_attempt()
    if c.transport is not None:
        try:
            await asyncio.wait_for(c.disconnect(wait=0), STEP_TIMEOUT)
        except Exception:
            c.abort()


async def close(*clients: Client) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(c.close() for c in clients), return_exceptions=True), STEP_TIMEOUT
    )


def run(coro, timeout: float = 60.0):
    """Run one test scenario on a fresh event loop, bounded as a whole."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
