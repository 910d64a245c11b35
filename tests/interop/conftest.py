"""Fixtures: a real `starling serve` process on loopback with its own data directory.

Users are created with the real CLI before the server starts; ports are read from the
`starling: <listener> listening on <addr>` lines the server prints on stdout.
"""

import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STARLING_BIN", str(REPO / "target" / "debug" / "starling"))
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}
COMPONENT = ("echo.localhost", "s3cret")


class Server:
    def __init__(self, registration=False):
        self.dir = tempfile.TemporaryDirectory(prefix="starling-interop-")
        self.data = pathlib.Path(self.dir.name)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "STARLING_DATA_DIR": f'"{self.data}"',
            "STARLING_C2S__LISTEN": "127.0.0.1:0",
            "STARLING_C2S__DIRECT_TLS_LISTEN": "127.0.0.1:0",
            "STARLING_COMPONENTS__LISTEN": "127.0.0.1:0",
            "STARLING_COMPONENTS__SECRETS": '{ "%s" = "%s" }' % COMPONENT,
            "STARLING_REGISTRATION__ENABLED": "true" if registration else "false",
            # Many logins from one address in a test run.
            "STARLING_AUTH__FAILURES_PER_MINUTE": "50",
            "STARLING_LOG__LEVEL": "debug",
        }
        for user, pw in USERS.items():
            subprocess.run([BIN, "user", "add", f"{user}@localhost", "--password", pw],
                           env=self.env, check=True, capture_output=True, timeout=30)
        self.stderr_path = self.data / "stderr.log"
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env, stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, "wb"), text=True)
        self.ports = {}
        deadline = time.monotonic() + 15
        while len(self.ports) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + self.stderr())
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited:\n" + self.stderr())
            if line.startswith("starling: ") and " listening on " in line:
                what, addr = line[len("starling: "):].strip().split(" listening on ")
                self.ports[what] = int(addr.rsplit(":", 1)[1])
        # Keep draining stdout so the pipe never fills.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.cert = self.data / "tls" / "cert.pem"

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("server did not exit within 10 s of SIGTERM")
            assert code == 0, f"server exited with {code}:\n{self.stderr()}"
        self.dir.cleanup()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def registration_server():
    s = Server(registration=True)
    yield s
    s.stop()


def pytest_exception_interact(node, call, report):
    """On failure, show the server's log: the first thing anyone debugging will want."""
    srv = node.funcargs.get("server") or node.funcargs.get("registration_server") if hasattr(node, "funcargs") else None
    if srv is not None:
        tail = srv.stderr()[-6000:]
        report.sections.append(("starling stderr (tail)", tail))
