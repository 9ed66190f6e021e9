"""A real redis-server for tests: private, on a unix socket, gone without a trace afterwards.

The server runs from ``redis-server`` on PATH (else ``/usr/bin/redis-server``) in a fresh
temporary folder, listens only on a unix socket in that folder (``port 0``: no TCP at all),
and persists nothing. It is stopped by its own PID, never by name, so parallel test runs and
an operator's own Redis are never touched.

Use:
- ``redis_server_session`` (session fixture): that server's ``RedisServer``; do not stop it.
- ``redis_url`` (session fixture): ``unix:///.../redis.sock`` of one server for the session.
- ``redis_clean_url`` (function fixture): the same URL, flushed (FLUSHALL) before the test.
- ``redis_server()`` (context manager): a server of one's own, to stop, kill and restart
  (``RedisServer.stop/kill/start``) when testing what happens while Redis is down.

The root ``tests/conftest.py`` registers this module as a plugin
(``pytest_plugins = [..., "tests.support.redis_server"]``), so the fixtures' own dependencies
resolve too; the context manager is ``from tests.support.redis_server import redis_server``.
Being imported before being registered would make pytest warn that it cannot rewrite this
module's asserts (an error under ``filterwarnings = error``); it has none worth rewriting:
PYTEST_DONT_REWRITE.
Without a redis-server binary the tests skip, unless ``AROUTER_REQUIRE_SERVICES=1`` asks
for a failure instead (CI, where a skip would hide that nothing ran).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_WITHIN = 10.0  # seconds until the server must answer PING
STOP_WITHIN = 5.0  # seconds a SIGTERM gets before SIGKILL


def redis_binary() -> str:
    """The redis-server to run, or a skip (a failure under AROUTER_REQUIRE_SERVICES=1)."""
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    if found is None:
        message = "redis-server not found on PATH or at /usr/bin/redis-server"
        if os.environ.get("AROUTER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}, and AROUTER_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(message)
    return found


class RedisServer:
    """One redis-server process on a unix socket in ``folder``; restartable on that socket."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same socket) and wait until it answers PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        self._reap()
        self.socket.unlink(missing_ok=True)  # left behind by a SIGKILL
        command = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]
        # The child keeps its own copy of the log's descriptor; ours closes at once.
        with open(self.folder / "redis.log", "ab") as output:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        deadline = time.monotonic() + START_WITHIN
        while not self._answers_ping():
            if self._process.poll() is not None:
                tail = self.log_tail()
                self._reap()
                raise RuntimeError(f"redis-server exited at start:\n{tail}")
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING within "
                                   f"{START_WITHIN} s:\n{tail}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: the socket file goes too), SIGKILL if it lingers."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as a crashed host would, socket file left behind."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        reply = self.command(b"FLUSHALL")
        if reply != b"+OK\r\n":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def command(self, *parts: bytes) -> bytes:
        """Send one command over a fresh connection; return the raw reply's first read."""
        request = b"*%d\r\n" % len(parts) + b"".join(
            b"$%d\r\n%s\r\n" % (len(part), part) for part in parts
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.socket))
            sock.sendall(request)
            return sock.recv(65536)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.folder / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _answers_ping(self) -> bool:
        try:
            return self.command(b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def _signal(self, signum: int) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signum)  # by its PID: Popen signals its own child only
            try:
                process.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A started server in a fresh temporary folder; stopped and removed on exit."""
    binary = redis_binary()
    # Not pytest's tmp_path: a unix socket path must fit in 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="arouter-redis-"))
    server = RedisServer(binary, folder)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server_session: RedisServer) -> str:
    return redis_server_session.url


@pytest.fixture
def redis_clean_url(redis_server_session: RedisServer) -> str:
    redis_server_session.flushall()
    return redis_server_session.url
