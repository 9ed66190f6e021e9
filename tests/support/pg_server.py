"""A real, throwaway PostgreSQL server for tests, started from the binaries on this machine.

The root ``tests/conftest.py`` registers this module as a plugin
(``pytest_plugins = ["tests.support.pg_server", ...]``), so any test can ask for the fixtures
``postgres_url`` and ``postgres_db`` by name::

    async def test_something(postgres_db: str) -> None:   # a new empty database per test
        store = PostgresStore(postgres_db)

``postgres_url`` (session scope) is the server's ``postgres`` database; ``fresh_database(url)``
creates another empty database on the same server and returns its URL.

Rules:
- One server per pytest process, started on first use and stopped when pytest ends
  (``config.add_cleanup``), however many modules import the fixtures.
- It lives in a fresh temp folder: data directory, log, and the unix socket; TCP only on
  127.0.0.1 at a free port; trust authentication; ``fsync=off`` and friends, since a crash
  only loses test data.
- It is stopped by its own PID (SIGINT: fast shutdown, then SIGQUIT/SIGKILL if it lingers),
  never by process name. ``setpriv --pdeathsig`` also takes it down if pytest dies first.
- PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the
  ``postgres`` system user (else ``nobody``), with the temp folder chowned to it.
- Missing binaries skip the test, unless ``AROUTER_REQUIRE_SERVICES=1`` (CI), which fails it.
- Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

START_TIMEOUT = 30.0  # seconds for the server to accept connections
STOP_TIMEOUT = 30.0
INITDB_TIMEOUT = 120.0
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",  # the concurrency tests open one connection per store
    "shared_buffers": "32MB",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
    "timezone": "UTC",
}


class PostgresUnavailable(Exception):
    """This machine cannot run a PostgreSQL server for the tests."""


def _unavailable(reason: str) -> None:
    if os.environ.get("AROUTER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"PostgreSQL is required (AROUTER_REQUIRE_SERVICES=1): {reason}",
                    pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # Debian/Ubuntu keep the server binaries off PATH; prefer the newest major version.
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda path: _major(Path(path).parent.parent.name), reverse=True)
    return candidates[0] if candidates else None


def _major(text: str) -> int:
    return int(text) if text.isdigit() else -1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        initdb, postgres = find_binary("initdb"), find_binary("postgres")
        if initdb is None or postgres is None:
            raise PostgresUnavailable("no initdb/postgres on PATH or in /usr/lib/postgresql")
        self.initdb, self.postgres = initdb, postgres
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = _unprivileged_user()
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        """``args`` as the unprivileged user when we are root; with a parent-death signal
        (SIGQUIT: postgres's immediate shutdown) where setpriv can set it."""
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            prefix = [setpriv]
            # The signal fires when the forking *thread* exits: only the main one lives as
            # long as pytest.
            if threading.current_thread() is threading.main_thread():
                prefix += ["--pdeathsig", "SIGQUIT"]
            if self.user is not None:
                prefix += [f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                           "--init-groups"]
            return [*prefix, "--", *args]
        if self.user is not None:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root without setpriv or runuser")
            return [runuser, "-u", self.user.pw_name, "--", *args]
        return list(args)

    def _env(self) -> dict[str, str]:
        # No PG* variables of the caller's leak into the server or initdb.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self.user is not None:
            env["HOME"] = str(self.root)
        return env

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="arouter-pg-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        data = self.root / "data"
        try:
            subprocess.run(
                self._command(self.initdb, "-D", str(data), "-U", "postgres", "-A", "trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"),
                cwd=self.root, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=INITDB_TIMEOUT, check=True,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed:\n{exc.stdout.decode(errors='replace')}") from None
        # A free port can be taken between probing and binding: try a few.
        for _ in range(3):
            if self._launch(data):
                return
        raise RuntimeError(f"postgres did not start:\n{self.log_tail()}")

    def restart(self, down_for: float) -> None:
        """An outage: stop the server (every session ends), keep it down ``down_for``
        seconds, start it again on the same port and data."""
        assert self.root is not None
        self._terminate()
        time.sleep(down_for)
        for _ in range(10):  # the port may still be held for a moment
            if self._launch(self.root / "data", self.port):
                return
            time.sleep(0.5)
        raise RuntimeError(f"postgres did not restart:\n{self.log_tail()}")

    def processes(self) -> list[int]:
        """The postmaster and every backend it forked (by PID, from /proc)."""
        assert self.proc is not None
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def freeze(self) -> list[int]:
        """SIGSTOP the server and its backends: sockets stay open, the kernel still ACKs,
        nothing answers (a hung host). Returns the PIDs stopped, for ``thaw``."""
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    def thaw(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _launch(self, data: Path, port: int | None = None) -> bool:
        assert self.root is not None
        self.port = port or free_port()
        args = [self.postgres, "-D", str(data), "-p", str(self.port), "-k", str(self.root)]
        for name, value in SERVER_SETTINGS.items():
            args += ["-c", f"{name}={value}"]
        with open(self.root / "postgres.log", "ab") as log:
            # A session of its own: a Ctrl-C to pytest does not reach the server directly;
            # pytest's teardown stops it in order.
            self.proc = subprocess.Popen(
                self._command(*args), cwd=self.root, env=self._env(), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        # Ready once our own unix socket answers (a TCP probe could reach another server
        # that took the port); then the URL must work too.
        own = make_conninfo(host=str(self.root), port=self.port, user="postgres",
                            dbname="postgres", connect_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False  # most likely lost the port to someone else: try another
            try:
                with psycopg.connect(own), psycopg.connect(self.url, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self._terminate()
        raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT}s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.root is None:
            return ""
        try:
            text = (self.root / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: fast shutdown (roll back sessions, checkpoint, exit); then immediate; then
        # kill. Each signal goes to this one PID (setpriv exec()s, so it is the postmaster).
        for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0),
                          (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        self._terminate()
        root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run as")


_lock = threading.Lock()
_server: PostgresServer | None = None
_failed: str | None = None  # why the server could not start: later tests fail at once


def server_url(config: pytest.Config) -> str:
    """The shared server's URL, starting it on first use (stopped when pytest ends)."""
    global _server, _failed
    with _lock:
        if _failed is not None:
            pytest.fail(_failed, pytrace=False)
        if _server is None:
            try:
                server = PostgresServer()
            except PostgresUnavailable as exc:
                _unavailable(str(exc))
                raise  # not reached: _unavailable skips or fails
            try:
                server.start()
            except BaseException as exc:
                server.stop()
                if isinstance(exc, Exception):
                    _failed = f"the test PostgreSQL server did not start: {exc}"
                raise
            _server = server
            config.add_cleanup(_stop_server)
        return _server.url


def _stop_server() -> None:
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.stop()


@contextlib.contextmanager
def private_server() -> Iterator[PostgresServer]:
    """A server of the test's own, to stop, restart and freeze (the shared one serves every
    other test). Missing binaries skip, or fail under AROUTER_REQUIRE_SERVICES=1."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
        raise  # not reached
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None:  # never leave it stopped: SIGCONT before stopping
            server.thaw(server.processes())
        server.stop()


def fresh_database(url: str) -> str:
    """A new, empty database on the server at ``url``; its URL."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_dbname(url, name)


def drop_database(url: str) -> None:
    """Drop the database ``url`` names, disconnecting anyone still in it."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(_with_dbname(url, "postgres"), autocommit=True,
                         connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def _with_dbname(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    host, port, user = params.get("host"), params.get("port"), params.get("user")
    if host and port and user and set(params) <= {"host", "port", "user", "dbname"}:
        return f"postgresql://{user}@{host}:{port}/{name}"  # keep the URL form readable
    params["dbname"] = name
    return make_conninfo("", **params)


# Named ``fixture_*`` so that a test's ``postgres_db`` argument does not shadow the import
# (the pattern pytest's docs recommend); the fixtures are still requested by their names.
@pytest.fixture(scope="session", name="postgres_url")
def fixture_postgres_url(request: pytest.FixtureRequest) -> str:
    """libpq URL of the session's server (database ``postgres``, user ``postgres``)."""
    return server_url(request.config)


@pytest.fixture(name="postgres_db")
def fixture_postgres_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """libpq URL of a new empty database, dropped after the test."""
    url = fresh_database(server_url(request.config))
    yield url
    drop_database(url)
