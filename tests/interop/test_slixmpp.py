"""Starling driven by slixmpp, an XMPP library written outside this project."""

import asyncio

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from clients import TIMEOUT, close, login, raw_iq, wait_for

NS_DELAY = "{urn:xmpp:delay}delay"


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mech", [None, "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_login_over_starttls_with_each_mechanism(server, mech):
    async def scenario():
        c = await login(server, "alice", mech=mech, resource=f"r{mech}")
        assert str(c.boundjid) == f"alice@localhost/r{mech}"
        await close(c)
    run(scenario())


def test_login_over_direct_tls(server):
    async def scenario():
        c = await login(server, "bob", direct_tls=True, resource="direct")
        assert str(c.boundjid) == "bob@localhost/direct"
        await close(c)
    run(scenario())


def test_wrong_password_then_right_one(server):
    async def scenario():
        with pytest.raises(PermissionError):
            await login(server, "alice", password="not-the-password")
        c = await login(server, "alice")
        await close(c)
    run(scenario())


def test_roster_add_push_and_remove(server):
    async def scenario():
        a = await login(server, "alice")
        await a.update_roster("carol@localhost", name="Carol", groups=["Friends"])
        await wait_for(a.roster_pushes, lambda _: "carol@localhost" in a.client_roster, "roster push")
        # slixmpp keeps its roster from the server's pushes (and versioned fetches).
        item = a.client_roster["carol@localhost"]
        assert item["name"] == "Carol"
        assert item["groups"] == ["Friends"]
        assert item["subscription"] == "none"
        # A fresh login without a cached version receives the full roster.
        a2 = await login(server, "alice", resource="second")
        assert a2.client_roster["carol@localhost"]["name"] == "Carol"
        await a.del_roster_item("carol@localhost")
        await wait_for(a2.roster_pushes, lambda _: "carol@localhost" not in a2.client_roster.keys(),
                       "removal pushed to the other resource")
        await close(a2)
        await close(a)
    run(scenario())


def test_subscription_handshake_and_presence(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        a.send_presence_subscription("bob@localhost", ptype="subscribe")
        req = await wait_for(b.presences, lambda p: p["type"] == "subscribe", "subscribe at bob")
        assert req["from"].bare == "alice@localhost"
        b.send_presence_subscription("alice@localhost", ptype="subscribed")
        await wait_for(a.presences, lambda p: p["type"] == "subscribed", "subscribed at alice")
        # Bob's presence follows the approval.
        await wait_for(a.presences, lambda p: p["from"].full == "bob@localhost/slix" and p["type"] == "available",
                       "bob's presence at alice")
        assert a.client_roster["bob@localhost"]["subscription"] == "to"
        await wait_for(b.roster_pushes, lambda _: b.client_roster["alice@localhost"]["subscription"] == "from",
                       "bob's roster shows from")
        # Mutual: bob subscribes back, alice approves.
        b.send_presence_subscription("alice@localhost", ptype="subscribe")
        await wait_for(a.presences, lambda p: p["type"] == "subscribe", "subscribe at alice")
        a.send_presence_subscription("bob@localhost", ptype="subscribed")
        await wait_for(b.presences, lambda p: p["type"] == "subscribed", "subscribed at bob")
        assert a.client_roster["bob@localhost"]["subscription"] == "both"
        # A status change reaches the contact.
        b.send_presence(pshow="away", pstatus="lunch")
        p = await wait_for(a.presences, lambda p: p["from"].full == "bob@localhost/slix" and p["show"] == "away",
                           "bob away")
        assert p["status"] == "lunch"
        # Bob leaves: alice sees unavailable.
        await close(b)
        await wait_for(a.presences, lambda p: p["from"].full == "bob@localhost/slix" and p["type"] == "unavailable",
                       "bob unavailable")
        await close(a)
    run(scenario())


def test_messages_direct_and_offline_with_delay(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        a.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        m = await wait_for(b.messages, lambda m: m["body"] == "hello bob", "message at bob")
        assert m["from"].full == "alice@localhost/slix"
        # Carol is offline: the message waits for her.
        a.send_message(mto="carol@localhost", mbody="for later", mtype="chat")
        # Make sure the server processed it before carol logs in.
        await a.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        c = await login(server, "carol")
        m = await wait_for(c.messages, lambda m: m["body"] == "for later", "offline message")
        assert m["from"].full == "alice@localhost/slix"
        assert m.xml.find(NS_DELAY) is not None, "XEP-0203 delay stamp"
        await close(a, b, c)
    run(scenario())


def test_server_services(server):
    async def scenario():
        a = await login(server, "alice")
        b = await login(server, "bob")
        info = await a.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)
        features = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in features and "vcard-temp" in features
        await a.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        version = await a.plugin["xep_0092"].get_version("localhost", timeout=TIMEOUT)
        assert version["software_version"]["name"] == "Starling"
        # vCard published by alice, read by bob.
        vcard = a.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell"
        await a.plugin["xep_0054"].publish_vcard(vcard, timeout=TIMEOUT)
        got = await b.plugin["xep_0054"].get_vcard("alice@localhost", timeout=TIMEOUT)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        # Private XML storage (XEP-0049), raw.
        await raw_iq(a, "set", "<query xmlns='jabber:iq:private'><notes xmlns='storage:rosternotes'>"
                               "<note jid='bob@localhost'>builder</note></notes></query>")
        reply = await raw_iq(a, "get", "<query xmlns='jabber:iq:private'><notes xmlns='storage:rosternotes'/></query>")
        assert "builder" in slixmpp.xmlstream.tostring(reply)
        # An unknown iq to the server is service-unavailable.
        with pytest.raises(IqError) as err:
            await raw_iq(a, "get", "<query xmlns='urn:example:nothing'/>", to="localhost")
        assert err.value.condition == "service-unavailable"
        await close(a, b)
    run(scenario())


def test_in_band_registration(registration_server):
    server = registration_server

    async def scenario():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        c = slixmpp.ClientXMPP("dora@localhost", "dorapw")
        c.register_plugin("xep_0077")
        c.plugin["xep_0077"].force_registration = True
        c.ca_certs = server.cert
        c.enable_direct_tls = False

        async def on_register(_event):
            resp = c.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = "dora"
            resp["register"]["password"] = "dorapw"
            try:
                await resp.send(timeout=TIMEOUT)
                done.set_result(True)
            except IqError as e:
                done.set_exception(e)
            c.disconnect()

        c.add_event_handler("register", on_register)
        c.connect(host="127.0.0.1", port=server.ports["c2s"])
        await asyncio.wait_for(done, TIMEOUT)
        d = await login(server, "dora", password="dorapw")
        await close(d)
    run(scenario())
