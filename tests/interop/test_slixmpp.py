"""Starling driven by slixmpp, an XMPP client library written outside this project.

Each test gets its own freshly started server (see conftest.py) with alice, bob and carol.
Every wait is bounded (clients.STEP_TIMEOUT per expected event, 60 s per scenario).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from clients import (
    NS_DELAY,
    NS_PRIVATE,
    Client,
    LoginFailed,
    close,
    login,
    push_item,
    roster_items,
    run,
)
from conftest import STEP_TIMEOUT

NS_VCARD = "vcard-temp"


# slixmpp reports an available presence's type as its <show/> value when there is one.
AVAILABLE = {"available", "away", "chat", "dnd", "xa"}


def presence_from(full_jid: str, ptype: str = "available"):
    types = AVAILABLE if ptype == "available" else {ptype}
    return lambda p: p["from"].full == full_jid and p["type"] in types


# ---------------------------------------------------------------------------------------------
# 1. Logins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mech, expected",
    [
        (None, "SCRAM-SHA-256"),  # slixmpp's own choice among what the server offers
        ("SCRAM-SHA-256", "SCRAM-SHA-256"),
        ("SCRAM-SHA-1", "SCRAM-SHA-1"),
        ("PLAIN", "PLAIN"),
    ],
)
def test_login_starttls(server, mech, expected):
    async def scenario():
        c = await login(server, "alice", mech=mech, resource="starttls")
        assert c.is_tls(), "stream is not encrypted after STARTTLS"
        assert "starttls" in c.features, f"STARTTLS was not negotiated: {c.features}"
        assert c.mechanism == expected
        assert c.boundjid.full == "alice@localhost/starttls"
        # The session is usable: the server answers a ping.
        await c.plugin["xep_0199"].ping(jid="localhost", timeout=STEP_TIMEOUT)
        await close(c)

    run(scenario())


def test_login_direct_tls(server):
    async def scenario():
        c = await login(server, "bob", direct_tls=True, resource="direct")
        assert c.is_tls()
        assert "starttls" not in c.features, "STARTTLS offered/used inside direct TLS"
        assert c.socket.selected_alpn_protocol() == "xmpp-client"
        assert c.mechanism == "SCRAM-SHA-256"
        assert c.boundjid.full == "bob@localhost/direct"
        await c.plugin["xep_0199"].ping(jid="localhost", timeout=STEP_TIMEOUT)
        await close(c)

    run(scenario())


def test_server_assigned_resource(server):
    async def scenario():
        c = Client(server, "carol@localhost", server.password("carol"))
        c.start()
        await asyncio.wait_for(asyncio.shield(c.outcome), STEP_TIMEOUT)
        assert c.boundjid.bare == "carol@localhost"
        assert c.boundjid.resource, f"server bound no resource: {c.boundjid}"
        await close(c)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 5. Wrong password
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mech", [None, "PLAIN"])
def test_wrong_password_then_correct_login(server, mech):
    async def scenario():
        with pytest.raises(LoginFailed) as failed:
            await login(server, "alice", password="not-the-password", mech=mech)
        bad = failed.value.client
        failure = bad.inbox.find("failed_auth")
        assert failure is not None, (
            f"no SASL <failure/> (slixmpp failed_auth) but: {failed.value.reason}\n"
            f"{bad.inbox.describe()}"
        )
        assert failure["condition"] == "not-authorized", str(failure)
        assert bad.inbox.find("event", lambda e: e == "session_start") is None
        c = await login(server, "alice", mech=mech)
        assert c.boundjid.bare == "alice@localhost"
        await close(c)

    run(scenario())


def test_unknown_user_is_not_authorized(server):
    async def scenario():
        with pytest.raises(LoginFailed) as failed:
            await login(server, "mallory", password="whatever", mech="SCRAM-SHA-256")
        failure = failed.value.client.inbox.find("failed_auth")
        assert failure is not None, failed.value.reason
        assert failure["condition"] == "not-authorized", str(failure)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 2. Roster
# ---------------------------------------------------------------------------------------------


def test_roster_add_get_remove(server):
    async def scenario():
        a = await login(server, "alice")
        a2 = await login(server, "alice", resource="other")

        await a.update_roster("bob@localhost", name="Bobby", groups=["Friends"], timeout=STEP_TIMEOUT)
        for client in (a, a2):  # pushed to every resource (RFC 6121 §2.1.6)
            push = await client.inbox.expect(
                "roster_push", lambda iq: push_item(iq, "bob@localhost"), "push adding bob"
            )
            assert push_item(push, "bob@localhost") == {
                "name": "Bobby",
                "subscription": "none",
                "ask": None,
                "groups": ["Friends"],
            }
            assert push["from"].full in ("", "alice@localhost"), f"push from {push['from']}"

        items = roster_items(await a.roster_get())
        assert items.get("bob@localhost") == {
            "name": "Bobby",
            "subscription": "none",
            "ask": None,
            "groups": ["Friends"],
        }, items

        # Update: new name and two groups.
        await a.update_roster(
            "bob@localhost", name="Bob B.", groups=["Friends", "Work"], timeout=STEP_TIMEOUT
        )
        await a.inbox.expect(
            "roster_push",
            lambda iq: push_item(iq, "bob@localhost")["name"] == "Bob B.",
            "push renaming bob",
        )
        items = roster_items(await a2.roster_get())
        assert items["bob@localhost"]["groups"] == ["Friends", "Work"]

        await asyncio.wait_for(a.del_roster_item("bob@localhost"), STEP_TIMEOUT)
        for client in (a, a2):
            push = await client.inbox.expect(
                "roster_push",
                lambda iq: push_item(iq, "bob@localhost")["subscription"] == "remove",
                "push removing bob",
            )
        items = roster_items(await a.roster_get())
        assert "bob@localhost" not in items, items
        await close(a, a2)

    run(scenario())


def test_roster_replies_come_from_the_account(server):
    """RFC 6120 §8.1.2.1: a reply the server sends on behalf of the account (roster, private
    storage, vCard of the user) has no 'from' or the account's bare JID, not the server domain."""

    async def scenario():
        a = await login(server, "alice")
        got = await a.roster_get()
        iq = a.make_iq_set()
        iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query>"))
        set_reply = (await iq.send(timeout=STEP_TIMEOUT)).xml
        await close(a)
        for what, reply in (("roster get", got), ("roster set", set_reply)):
            assert reply.get("from") in (None, "alice@localhost"), (
                f"{what} result addressed from {reply.get('from')!r}: "
                f"{ET.tostring(reply, encoding='unicode')}"
            )

    run(scenario())


def test_roster_versioning(server):
    async def scenario():
        a = await login(server, "alice")
        assert "rosterver" in a.features, f"roster versioning not advertised: {a.features}"
        reply = await a.roster_get(ver="")
        query = reply.find("{jabber:iq:roster}query")
        assert query is not None and query.get("ver"), "full roster without a version"
        v0 = query.get("ver")

        await a.update_roster("carol@localhost", name="Carol", timeout=STEP_TIMEOUT)
        push = await a.inbox.expect("roster_push", lambda iq: push_item(iq, "carol@localhost"))
        v1 = push.xml.find("{jabber:iq:roster}query").get("ver")
        assert v1 and v1 != v0, f"push version {v1!r} after {v0!r}"

        # Up to date: an empty result (RFC 6121 §2.6.3), no items.
        reply = await a.roster_get(ver=v1)
        assert roster_items(reply) == {}, "items returned although the version is current"

        # Stale version: either the full roster or pushes of the differences, ending at v1.
        a2 = await login(server, "alice", resource="stale", roster=False, presence=False)
        reply = await a2.roster_get(ver=v0)
        items = roster_items(reply)
        if reply.find("{jabber:iq:roster}query") is not None:
            assert "carol@localhost" in items, "full roster answer misses carol"
        else:
            await a2.inbox.expect(
                "roster_push", lambda iq: push_item(iq, "carol@localhost"), "catch-up push"
            )
        await close(a, a2)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 3. Subscriptions and presence
# ---------------------------------------------------------------------------------------------


async def subscribe(user: Client, contact: Client) -> None:
    """user subscribes to contact, contact approves; checks each step on the wire."""
    u, c = user.boundjid.bare, contact.boundjid.bare
    user.send_presence(pto=c, ptype="subscribe")
    await user.inbox.expect(
        "roster_push", lambda iq: push_item(iq, c)["ask"] == "subscribe", f"push with ask=subscribe for {c}"
    )
    req = await contact.inbox.expect(
        "presence", lambda p: p["type"] == "subscribe" and p["from"].bare == u, f"subscribe from {u}"
    )
    assert req["from"].full == u, f"subscribe request must come from the bare JID, got {req['from']}"
    contact.send_presence(pto=u, ptype="subscribed")
    await user.inbox.expect(
        "presence", lambda p: p["type"] == "subscribed" and p["from"].bare == c, f"subscribed from {c}"
    )
    await user.inbox.expect(
        "roster_push",
        lambda iq: push_item(iq, c)["subscription"] in ("to", "both") and not push_item(iq, c)["ask"],
        f"push with subscription to/both for {c}",
    )
    await contact.inbox.expect(
        "roster_push",
        lambda iq: push_item(iq, u)["subscription"] in ("from", "both"),
        f"push with subscription from/both for {u}",
    )


def test_subscription_handshake_and_presence(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")

        await subscribe(a, b)
        # The contact's available resources are sent to the new subscriber (RFC 6121 §3.1.5).
        await a.inbox.expect("presence", presence_from("bob@localhost/slix"), "bob's presence after approval")
        assert roster_items(await a.roster_get())["bob@localhost"]["subscription"] == "to"
        assert roster_items(await b.roster_get())["alice@localhost"]["subscription"] == "from"

        # Mutual.
        await subscribe(b, a)
        await b.inbox.expect("presence", presence_from("alice@localhost/slix"), "alice's presence after approval")
        assert roster_items(await a.roster_get())["bob@localhost"]["subscription"] == "both"
        assert roster_items(await b.roster_get())["alice@localhost"]["subscription"] == "both"

        # Status change is broadcast to the subscriber.
        b.send_presence(pshow="dnd", pstatus="in a meeting")
        p = await a.inbox.expect(
            "presence",
            lambda p: p["from"].full == "bob@localhost/slix" and p["status"] == "in a meeting",
            "bob's new status",
        )
        assert p["show"] == "dnd"

        # A new resource of alice gets bob's current presence (probe) and bob sees it arrive.
        a2 = await login(server, "alice", resource="second")
        p = await a2.inbox.expect("presence", presence_from("bob@localhost/slix"), "probe answer at alice/second")
        assert p["status"] == "in a meeting"
        await b.inbox.expect("presence", presence_from("alice@localhost/second"), "alice/second online at bob")

        # Bob disconnects: alice's resources see him go unavailable.
        await close(b)
        for client in (a, a2):
            await client.inbox.expect(
                "presence", presence_from("bob@localhost/slix", "unavailable"), "bob unavailable"
            )
        await close(a, a2)

    run(scenario())


def test_unsubscribe_and_cancel(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        await subscribe(a, b)
        await subscribe(b, a)

        # alice unsubscribes from bob: both -> from (alice), both -> to (bob).
        a.send_presence(pto="bob@localhost", ptype="unsubscribe")
        await b.inbox.expect(
            "presence", lambda p: p["type"] == "unsubscribe" and p["from"].bare == "alice@localhost"
        )
        await a.inbox.expect(
            "roster_push", lambda iq: push_item(iq, "bob@localhost")["subscription"] == "from"
        )
        await b.inbox.expect(
            "roster_push", lambda iq: push_item(iq, "alice@localhost")["subscription"] == "to"
        )
        # She no longer receives bob's presence: his resources are unavailable to her.
        await a.inbox.expect(
            "presence", presence_from("bob@localhost/slix", "unavailable"), "unavailable after unsubscribe"
        )

        # alice cancels bob's subscription to her: from -> none, to -> none.
        a.send_presence(pto="bob@localhost", ptype="unsubscribed")
        await b.inbox.expect(
            "presence", lambda p: p["type"] == "unsubscribed" and p["from"].bare == "alice@localhost"
        )
        await a.inbox.expect(
            "roster_push", lambda iq: push_item(iq, "bob@localhost")["subscription"] == "none"
        )
        await b.inbox.expect(
            "roster_push", lambda iq: push_item(iq, "alice@localhost")["subscription"] == "none"
        )
        await b.inbox.expect(
            "presence", presence_from("alice@localhost/slix", "unavailable"), "unavailable after cancel"
        )
        assert roster_items(await a.roster_get())["bob@localhost"]["subscription"] == "none"
        assert roster_items(await b.roster_get())["alice@localhost"]["subscription"] == "none"
        await close(a, b)

    run(scenario())


def test_subscription_preapproval(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        assert "preapproval" in b.features, f"pre-approval not advertised: {b.features}"
        # bob pre-approves alice (RFC 6121 §3.4).
        b.send_presence(pto="alice@localhost", ptype="subscribed")
        push = await b.inbox.expect("roster_push", lambda iq: push_item(iq, "alice@localhost"))
        item = push.xml.find("{jabber:iq:roster}query/{jabber:iq:roster}item")
        assert item.get("approved") == "true", f"pre-approved item: {push}"

        a.send_presence(pto="bob@localhost", ptype="subscribe")
        await a.inbox.expect(
            "presence", lambda p: p["type"] == "subscribed" and p["from"].bare == "bob@localhost",
            "automatic approval",
        )
        await b.inbox.expect(
            "roster_push", lambda iq: push_item(iq, "alice@localhost")["subscription"] == "from"
        )
        assert b.inbox.find("presence", lambda p: p["type"] == "subscribe") is None, (
            "the pre-approved request was delivered to bob anyway"
        )
        assert roster_items(await a.roster_get())["bob@localhost"]["subscription"] == "to"
        await close(a, b)

    run(scenario())


def test_subscription_request_to_offline_contact(server):
    async def scenario():
        a = await login(server, "alice")
        a.send_presence(pto="carol@localhost", ptype="subscribe")
        await a.inbox.expect("roster_push", lambda iq: push_item(iq, "carol@localhost")["ask"] == "subscribe")
        # carol was offline: the request is delivered when she sends initial presence.
        c = await login(server, "carol")
        await c.inbox.expect(
            "presence", lambda p: p["type"] == "subscribe" and p["from"].bare == "alice@localhost",
            "stored subscription request",
        )
        await close(a, c)

    run(scenario())


def test_directed_presence(server):
    async def scenario():
        b = await login(server, "bob")
        c = await login(server, "carol")
        # No subscription: carol sends presence directly to bob's full JID.
        c.send_presence(pto="bob@localhost/slix", pstatus="hi bob")
        p = await b.inbox.expect("presence", presence_from("carol@localhost/slix"), "directed presence")
        assert p["status"] == "hi bob"
        # When carol goes offline, bob is told (RFC 6121 §4.6.3).
        await close(c)
        await b.inbox.expect(
            "presence", presence_from("carol@localhost/slix", "unavailable"), "unavailable after directed presence"
        )
        await close(b)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 4. Messages
# ---------------------------------------------------------------------------------------------


def test_chat_message_delivery(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        msg = a.make_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        msg["id"] = "m1"
        msg.send()
        m = await b.inbox.expect("message", lambda m: m["body"] == "hello bob", "chat to bare JID")
        assert m["from"].full == "alice@localhost/slix"
        assert m["type"] == "chat"
        assert m["id"] == "m1"
        assert m["to"].bare == "bob@localhost"

        # To the full JID, and back.
        a.send_message(mto="bob@localhost/slix", mbody="to your resource", mtype="normal")
        m = await b.inbox.expect("message", lambda m: m["body"] == "to your resource")
        assert m["from"].full == "alice@localhost/slix"
        b.send_message(mto=m["from"], mbody="got it", mtype="chat")
        m = await a.inbox.expect("message", lambda m: m["body"] == "got it")
        assert m["from"].full == "bob@localhost/slix"

        # iq between clients is routed both ways: alice pings bob's resource (slixmpp answers).
        await a.plugin["xep_0199"].ping(jid="bob@localhost/slix", timeout=STEP_TIMEOUT)
        await close(a, b)

    run(scenario())


def test_offline_message_with_delay(server):
    async def scenario():
        a = await login(server, "alice")
        sent_at = dt.datetime.now(dt.timezone.utc)
        a.send_message(mto="carol@localhost", mbody="for later", mtype="chat")
        # A round trip on the same stream: the server has handled the message before this answer.
        await a.plugin["xep_0199"].ping(jid="localhost", timeout=STEP_TIMEOUT)

        c = await login(server, "carol")
        m = await c.inbox.expect("message", lambda m: m["body"] == "for later", "offline message")
        assert m["from"].full == "alice@localhost/slix"
        assert m["type"] == "chat"
        delay = m.xml.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None, f"no XEP-0203 <delay/>: {m}"
        stamp = m["delay"]["stamp"]
        assert stamp is not None, f"delay without a parseable stamp: {m}"
        assert abs((stamp - sent_at).total_seconds()) < 30, f"stamp {stamp} vs sent {sent_at}"
        # Delivered once: a second login does not get it again.
        await close(c)
        c2 = await login(server, "carol", resource="again")
        await c2.plugin["xep_0199"].ping(jid="localhost", timeout=STEP_TIMEOUT)
        assert c2.inbox.find("message", lambda m: m["body"] == "for later") is None, "delivered twice"
        await close(a, c2)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 6. Server services
# ---------------------------------------------------------------------------------------------


def test_disco_ping_version(server):
    async def scenario():
        a = await login(server, "alice")
        info = await a.plugin["xep_0030"].get_info(jid="localhost", timeout=STEP_TIMEOUT)
        features = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in features, features
        assert "http://jabber.org/protocol/disco#info" in features, features
        identities = info["disco_info"]["identities"]
        assert any(i[0] == "server" for i in identities), identities

        rtt = await a.plugin["xep_0199"].ping(jid="localhost", timeout=STEP_TIMEOUT)
        assert rtt is not None

        version = await a.plugin["xep_0092"].get_version("localhost", timeout=STEP_TIMEOUT)
        assert version["software_version"]["name"] == "Starling", str(version)
        assert version["software_version"]["version"], str(version)

        # An unknown query to the server is answered with an error, not silence.
        with pytest.raises(IqError) as err:
            await a.iq_raw("get", "<query xmlns='urn:example:nothing'/>", to="localhost")
        assert err.value.condition in ("service-unavailable", "feature-not-implemented"), str(err.value.iq)
        await close(a)

    run(scenario())


def test_vcard_set_then_get_from_other_user(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        vcard = a.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell"
        vcard["NICKNAME"] = "alice"
        await a.plugin["xep_0054"].publish_vcard(vcard, timeout=STEP_TIMEOUT)

        got = await b.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=STEP_TIMEOUT)
        assert got["from"].bare == "alice@localhost"
        assert got.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Alice Liddell", str(got)
        assert got.xml.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}NICKNAME") == "alice", str(got)

        # Her own vCard, fetched without a 'to'.
        reply = await a.iq_raw("get", f"<vCard xmlns='{NS_VCARD}'/>")
        fn = reply.find(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN")
        assert fn is not None and fn.text == "Alice Liddell"
        await close(a, b)

    run(scenario())


def test_private_xml_storage(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        await a.iq_raw(
            "set",
            f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'>"
            "<nick>Hatter</nick></prefs></query>",
        )
        reply = await a.iq_raw("get", f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>")
        nick = reply.find(f"{{{NS_PRIVATE}}}query/{{urn:example:prefs}}prefs/{{urn:example:prefs}}nick")
        assert nick is not None and nick.text == "Hatter", f"got {reply}"

        # Another user cannot read it (XEP-0049 §2.3: "forbidden" or "service-unavailable").
        with pytest.raises(IqError) as err:
            await b.iq_raw(
                "get",
                f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>",
                to="alice@localhost",
            )
        assert err.value.condition in ("forbidden", "service-unavailable"), str(err.value.iq)
        await close(a, b)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# 7. In-band registration
# ---------------------------------------------------------------------------------------------


def make_registering_client(server, user: str, password: str) -> Client:
    c = Client(server, f"{user}@localhost/reg", password, plugins=("xep_0077",))

    async def on_register(form):
        c.inbox.put("event", "register_form")
        resp = c.Iq()
        resp["type"] = "set"
        resp["register"]["username"] = user
        resp["register"]["password"] = password
        try:
            await resp.send(timeout=STEP_TIMEOUT)
        except IqError as e:
            c.inbox.put("register_error", e.iq)
            c.disconnect(wait=0)
        else:
            c.inbox.put("event", "registered")

    c.add_event_handler("register", on_register)
    return c


def test_in_band_registration(registration_server):
    server = registration_server

    async def scenario():
        c = make_registering_client(server, "dora", "dora-Pw-4")
        c.start()
        try:
            await asyncio.wait_for(asyncio.shield(c.outcome), STEP_TIMEOUT)
        except LoginFailed as e:
            raise AssertionError(f"{e.reason}\n{c.inbox.describe()}") from None
        assert c.inbox.find("event", lambda e: e == "register_form"), (
            "the server did not offer in-band registration (no <register/> stream feature)"
        )
        assert c.inbox.find("event", lambda e: e == "registered")
        assert c.boundjid.bare == "dora@localhost"
        await close(c)

        # A fresh connection logs in with the new account.
        d = await login(server, "dora", password="dora-Pw-4", mech="SCRAM-SHA-256")
        assert d.boundjid.bare == "dora@localhost"
        await close(d)

    run(scenario())


def test_in_band_registration_conflict(registration_server):
    server = registration_server

    async def scenario():
        c = make_registering_client(server, "alice", "another-password")
        c.start()
        with pytest.raises(LoginFailed):
            await asyncio.wait_for(asyncio.shield(c.outcome), STEP_TIMEOUT)
        err = c.inbox.find("register_error")
        assert err is not None, f"registering an existing name did not fail\n{c.inbox.describe()}"
        assert err["error"]["condition"] == "conflict", str(err)
        # The existing account is untouched.
        a = await login(server, "alice")
        await close(a)

    run(scenario())


# ---------------------------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------------------------


def test_sigterm_closes_client_streams(server):
    async def scenario():
        a = await login(server, "alice")
        server.proc.send_signal(signal.SIGTERM)
        err = await a.inbox.expect("stream_error", what="<system-shutdown/>")
        assert err["condition"] == "system-shutdown", str(err)
        await a.inbox.expect("disconnected")
        server.stopped = True  # this test owns the shutdown
        loop = asyncio.get_running_loop()
        rc = await loop.run_in_executor(None, lambda: server.proc.wait(timeout=10))
        assert rc == 0, f"exit status {rc} after SIGTERM"

    run(scenario())
