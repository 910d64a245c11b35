"""Fixtures for the interoperability suite: the real `starling` binary on loopback.

Every test gets a fresh server (own temporary data directory, own ports), with the accounts
alice, bob and carol created through `starling user add` before the server starts. The server
is stopped with SIGTERM at teardown and must exit (with status 0) within 10 seconds.

When a test fails, the tail of each of its servers' stderr is attached to the pytest report as a
"starling stderr" section, so a failure shows what the server logged.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STARLING_BIN") or REPO / "target" / "debug" / "starling")

DOMAIN = "localhost"
PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "carol": "carol-Secret-3"}
COMPONENT_DOMAIN = "echo.localhost"
COMPONENT_SECRET = "s3cret"

#: Longest time any single expected event may take.
STEP_TIMEOUT = 10.0

# Server log filter: our crates at debug, the rest at info. Override with INTEROP_LOG_LEVEL
# (deliberately not a STARLING_* variable: those are configuration overrides for the server).
LOG_LEVEL = os.environ.get(
    "INTEROP_LOG_LEVEL",
    "info,starling=debug,starling_edge=debug,starling_router=debug,starling_xmpp=debug",
)

_LISTEN_RE = re.compile(r"^starling: (\S+) listening on (\S+):(\d+)\s*$")


def _server_env() -> dict[str, str]:
    """The environment for the server: ours without STARLING_* variables.

    The server reads every STARLING_* variable as a configuration override (and rejects unknown
    keys), so STARLING_BIN or a developer's STARLING_CONFIG must not leak into it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
    env["NO_COLOR"] = "1"
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class StarlingServer:
    """One server process and everything a test needs to reach it."""

    workdir: Path
    registration: bool = False
    components: dict[str, str] = field(default_factory=lambda: {COMPONENT_DOMAIN: COMPONENT_SECRET})
    users: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))

    host: str = "127.0.0.1"
    domain: str = DOMAIN
    c2s_port: int = 0
    direct_tls_port: int = 0
    component_port: int = 0
    proc: subprocess.Popen | None = None
    listeners: dict[str, int] = field(default_factory=dict)
    _stdout_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    #: Set once `stop` ran (a test may stop the server itself, e.g. to check shutdown).
    stopped: bool = False

    # -- paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.workdir / "starling.toml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def cert_path(self) -> Path:
        """The self-signed certificate the server generates on first start (trusted as CA)."""
        return self.data_dir / "tls" / "cert.pem"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "starling.stderr.log"

    def password(self, user: str) -> str:
        return self.users[user]

    # -- lifecycle -------------------------------------------------------------------------
    def write_config(self) -> None:
        lines = [
            f"domains = [{_toml_str(self.domain)}]",
            f"data_dir = {_toml_str(str(self.data_dir))}",
            "",
            "[c2s]",
            'listen = "127.0.0.1:0"',
            'direct_tls_listen = "127.0.0.1:0"',
            "starttls_required = true",
            "allow_plaintext_auth = false",
            "",
            "[components]",
            'listen = "127.0.0.1:0"',
        ]
        secrets = ", ".join(f"{_toml_str(d)} = {_toml_str(s)}" for d, s in self.components.items())
        lines.append(f"secrets = {{ {secrets} }}")
        lines += [
            "",
            "[registration]",
            f"enabled = {'true' if self.registration else 'false'}",
            "",
            "[log]",
            f"level = {_toml_str(LOG_LEVEL)}",
            "",
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines))

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN), "--config", str(self.config_path), *args],
            env=_server_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def add_user(self, user: str, password: str) -> None:
        r = self.cli("user", "add", f"{user}@{self.domain}", "--password", password)
        assert r.returncode == 0, (
            f"`starling user add {user}@{self.domain}` exited {r.returncode}\n"
            f"stdout: {r.stdout}\nstderr: {r.stderr}"
        )

    def start(self) -> "StarlingServer":
        assert BIN.is_file(), (
            f"starling binary not found at {BIN}: build it with `cargo build -p starling` "
            "or set STARLING_BIN"
        )
        self.write_config()
        # Accounts go in before the server starts: the embedded database is single-process.
        for user, pw in self.users.items():
            self.add_user(user, pw)

        stderr = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(BIN), "--config", str(self.config_path), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_server_env(),
            )
        finally:
            stderr.close()

        lines: queue.Queue[str | None] = queue.Queue()

        def read_stdout() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            # Keep draining for the whole life of the process so the pipe never fills.
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stdout_lines.append(line)
                lines.put(line)
            lines.put(None)

        self._reader = threading.Thread(target=read_stdout, name="starling-stdout", daemon=True)
        self._reader.start()

        wanted = {"c2s", "c2s-direct-tls"}
        if self.components:
            wanted.add("component")
        deadline = time.monotonic() + STEP_TIMEOUT
        while not wanted <= self.listeners.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._abort()
                pytest.fail(
                    f"server did not report listeners {sorted(wanted - self.listeners.keys())} "
                    f"within {STEP_TIMEOUT}s; stdout={self._stdout_lines!r}\n"
                    f"stderr:\n{self.stderr_tail()}"
                )
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait(timeout=STEP_TIMEOUT)
                pytest.fail(
                    f"server exited with status {rc} before listening; "
                    f"stdout={self._stdout_lines!r}\nstderr:\n{self.stderr_tail()}"
                )
            m = _LISTEN_RE.match(line)
            if m:
                self.listeners[m.group(1)] = int(m.group(3))
        self.c2s_port = self.listeners["c2s"]
        self.direct_tls_port = self.listeners["c2s-direct-tls"]
        self.component_port = self.listeners.get("component", 0)
        assert self.cert_path.is_file(), f"no generated certificate at {self.cert_path}"
        return self

    def _abort(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STEP_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM, then wait at most 10 s. Returns the exit status; fails the test otherwise."""
        assert self.proc is not None
        self.stopped = True
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._abort()
            pytest.fail(
                "server did not exit within 10 s of SIGTERM\n" f"stderr:\n{self.stderr_tail()}"
            )
        if self._reader is not None:
            self._reader.join(timeout=STEP_TIMEOUT)
        return rc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 200) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])


# -- pytest wiring ---------------------------------------------------------------------------


@pytest.fixture
def starling(request, tmp_path):
    """Factory: `starling(registration=True)` starts another server; all are stopped at teardown."""
    servers: list[StarlingServer] = []
    request.node._starling_servers = servers

    def start(**kwargs) -> StarlingServer:
        s = StarlingServer(workdir=tmp_path / f"server{len(servers)}", **kwargs)
        servers.append(s)
        return s.start()

    yield start

    problems = []
    for s in servers:
        if s.proc is None:
            continue
        if s.stopped:  # the test stopped it itself; make sure nothing is left behind
            if s.running():
                s._abort()
                problems.append(f"server {s.workdir.name} was still running after the test stopped it")
            continue
        was_running = s.running()
        rc = s.stop()
        if not was_running:
            problems.append(f"server {s.workdir.name} had already exited (status {rc}) before teardown")
        elif rc != 0:
            problems.append(f"server {s.workdir.name} exited with status {rc} after SIGTERM")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def server(starling) -> StarlingServer:
    """A running server with alice, bob and carol, and the echo.localhost component secret."""
    return starling()


@pytest.fixture
def registration_server(starling) -> StarlingServer:
    """A running server with in-band registration (XEP-0077) enabled."""
    return starling(registration=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in getattr(item, "_starling_servers", []):
            rep.sections.append(
                (f"starling stderr ({s.workdir.name}, {rep.when})", s.stderr_tail() or "(empty)")
            )
