"""An XEP-0114 external component written with Twisted Words (run as a separate process).

Usage: python echo_component.py HOST PORT DOMAIN SECRET

It answers every message with a message whose body is "echo: <body>" (from the address the
message was sent to), answers every iq get with an empty result, and reports on stdout, one
line each, flushed:

    CONNECTED                      TCP connection up, stream opened
    READY                          handshake accepted (authenticated as DOMAIN)
    RECV <xml>                     a stanza it received
    STREAM_ERROR <xml>             the server sent a stream error
    INIT_FAILED <reason>           the handshake failed
    DISCONNECTED                   the stream ended (the process then exits)

Twisted's reactor runs in its own process so it never meets the tests' asyncio loop.
"""

import sys

from twisted.internet import reactor
from twisted.words.protocols.jabber import component, xmlstream
from twisted.words.xish import domish


def say(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


class Echo(component.Service):
    xs = None

    def transportConnected(self, xs):
        say("CONNECTED")
        xs.addObserver(xmlstream.STREAM_ERROR_EVENT, lambda f: say("STREAM_ERROR", _xml(f.value)))
        xs.addObserver(xmlstream.INIT_FAILED_EVENT, lambda f: say("INIT_FAILED", f.getErrorMessage()))

    def componentConnected(self, xs):
        self.xs = xs
        xs.addObserver("/message", self.on_message)
        xs.addObserver("/iq", self.on_iq)
        xs.addObserver("/presence", lambda el: say("RECV", el.toXml()))
        say("READY")

    def componentDisconnected(self):
        pass  # reported (and the process stopped) by the STREAM_END bootstrap in main()

    def on_message(self, el):
        say("RECV", el.toXml())
        if el.getAttribute("type") == "error":
            return
        reply = domish.Element((None, "message"))
        reply["to"] = el["from"]
        reply["from"] = el["to"]
        reply["type"] = el.getAttribute("type", "normal")
        if el.getAttribute("id"):
            reply["id"] = el["id"]
        body = str(el.body) if el.body is not None else ""
        reply.addElement("body", content="echo: " + body)
        self.xs.send(reply)

    def on_iq(self, el):
        say("RECV", el.toXml())
        if el.getAttribute("type") != "get":
            return
        reply = domish.Element((None, "iq"))
        reply["type"] = "result"
        reply["to"] = el["from"]
        reply["from"] = el["to"]
        reply["id"] = el.getAttribute("id", "")
        self.xs.send(reply)


def _xml(err):
    try:
        return err.getElement().toXml()
    except Exception:
        return repr(err)


def main():
    host, port, domain, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sm = component.buildServiceManager(domain, secret, f"tcp:{host}:{port}")
    # The server closing the stream ends the process (no reconnection loop in tests).
    sm.addBootstrap(xmlstream.STREAM_END_EVENT, lambda _: _stop())
    Echo().setServiceParent(sm)
    sm.startService()
    reactor.run()


def _stop():
    say("DISCONNECTED")
    if reactor.running:
        reactor.stop()


if __name__ == "__main__":
    main()
