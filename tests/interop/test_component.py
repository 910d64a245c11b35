"""External components (XEP-0114): a Twisted Words component serves echo.localhost.

The component runs as its own process (echo_component.py, Twisted's reactor) and reports what
happens on stdout; the tests read those lines with bounded waits.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from clients import close, login, run
from conftest import COMPONENT_DOMAIN, COMPONENT_SECRET, STEP_TIMEOUT

HERE = Path(__file__).resolve().parent


class TwistedComponent:
    """The echo component process and the lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, server, secret: str = COMPONENT_SECRET) -> "TwistedComponent":
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "echo_component.py"),
            server.host,
            str(server.component_port),
            COMPONENT_DOMAIN,
            secret,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def wait_line(self, pred, what: str, timeout: float = STEP_TIMEOUT) -> str:
        async def read():
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"component exited while waiting for {what}")
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                if pred(line):
                    return line

        try:
            return await asyncio.wait_for(read(), timeout)
        except (asyncio.TimeoutError, AssertionError) as e:
            raise AssertionError(
                f"Twisted component: no {what} within {timeout}s ({e!r}); its output:\n"
                + "\n".join(self.lines[-40:])
            ) from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def test_twisted_component_echo(server):
    async def scenario():
        comp = await TwistedComponent.start(server)
        try:
            await comp.wait_line(lambda l: l == "READY", "READY (handshake accepted)")
            a = await login(server, "alice")

            # To the component's domain itself.
            a.send_message(mto=COMPONENT_DOMAIN, mbody="marco", mtype="chat")
            m = await a.inbox.expect("message", lambda m: m["body"] == "echo: marco", "echo from echo.localhost")
            assert m["from"].full == COMPONENT_DOMAIN
            assert m["type"] == "chat"
            # The component saw alice's full JID as the sender.
            line = await comp.wait_line(lambda l: l.startswith("RECV <message"), "the message at the component")
            assert "alice@localhost/slix" in line, line

            # To a user at the component's domain.
            a.send_message(mto=f"bot@{COMPONENT_DOMAIN}", mbody="polo", mtype="chat")
            m = await a.inbox.expect("message", lambda m: m["body"] == "echo: polo", "echo from bot@")
            assert m["from"].full == f"bot@{COMPONENT_DOMAIN}"

            # iq round trip client -> component -> client (the component answers every get).
            await a.plugin["xep_0199"].ping(jid=COMPONENT_DOMAIN, timeout=STEP_TIMEOUT)
            await close(a)
        finally:
            await comp.stop()

    run(scenario())


def test_twisted_component_wrong_secret_is_rejected(server):
    async def scenario():
        comp = await TwistedComponent.start(server, secret="not-the-secret")
        try:
            line = await comp.wait_line(
                lambda l: l == "READY" or l.startswith(("STREAM_ERROR", "DISCONNECTED", "INIT_FAILED")),
                "the outcome of a handshake with a wrong secret",
            )
            assert line != "READY", "a wrong component secret was accepted"
            if line.startswith("STREAM_ERROR"):
                assert "not-authorized" in line, line
        finally:
            await comp.stop()
        # The right secret still works afterwards.
        comp = await TwistedComponent.start(server)
        try:
            await comp.wait_line(lambda l: l == "READY", "READY after a failed attempt")
        finally:
            await comp.stop()

    run(scenario())


def test_message_to_absent_component_bounces(server):
    async def scenario():
        a = await login(server, "alice")
        a.send_message(mto=f"bot@{COMPONENT_DOMAIN}", mbody="anyone there?", mtype="chat")
        err = await a.inbox.expect("message_error", what="an error bounce for the absent component")
        assert err["from"].bare == f"bot@{COMPONENT_DOMAIN}", str(err)
        assert err["error"]["condition"] in (
            "service-unavailable",
            "remote-server-not-found",
            "recipient-unavailable",
        ), str(err)
        await close(a)

    run(scenario())
