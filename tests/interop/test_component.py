"""An external component written with Twisted Words serves a subdomain (XEP-0114)."""

import asyncio
import pathlib
import subprocess
import sys

from clients import close, login, wait_for
from conftest import COMPONENT

HERE = pathlib.Path(__file__).resolve().parent


def test_twisted_component_round_trip(server):
    domain, secret = COMPONENT
    proc = subprocess.Popen([sys.executable, str(HERE / "echo_component.py"), str(server.ports["component"]),
                             domain, secret], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        async def scenario():
            loop = asyncio.get_running_loop()
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 10)
            assert line.strip() == "READY", f"component did not connect: {line!r}"
            a = await login(server, "alice")
            a.send_message(mto=f"bot@{domain}", mbody="marco", mtype="chat")
            m = await wait_for(a.messages, lambda m: m["body"] == "echo: marco", "echo from the component")
            assert m["from"].full == f"bot@{domain}"
            # Disco of the server lists the connected component.
            items = await a.plugin["xep_0030"].get_items(jid="localhost", timeout=10)
            assert domain in [i[0] for i in items["disco_items"]["items"]]
            await close(a)
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
