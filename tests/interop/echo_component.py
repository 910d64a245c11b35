"""An XEP-0114 echo component written with Twisted Words: answers every message with 'echo: <body>'.

Usage: python echo_component.py PORT DOMAIN SECRET — prints READY once the handshake succeeded.
"""

import sys

from twisted.internet import reactor
from twisted.words.protocols.jabber import component
from twisted.words.xish import domish


class Echo(component.Service):
    def componentConnected(self, xs):
        self.xs = xs
        xs.addObserver("/message", self.on_message)
        print("READY", flush=True)

    def on_message(self, el):
        reply = domish.Element((None, "message"))
        reply["to"] = el["from"]
        reply["from"] = el["to"]
        reply["type"] = el.getAttribute("type", "chat")
        body = str(el.body) if el.body is not None else ""
        reply.addElement("body", content="echo: " + body)
        self.xs.send(reply)


def main():
    port, domain, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sm = component.buildServiceManager(domain, secret, f"tcp:127.0.0.1:{port}")
    Echo().setServiceParent(sm)
    sm.startService()
    reactor.run()


if __name__ == "__main__":
    main()
