"""What ``arouter`` checks before it serves, and how it explains a failure to the operator.

A newcomer's first start meets a port already taken or a store that does not answer. Each
such failure becomes one ``CannotStart`` line saying what happened, where, and what to do
(exit status 1), never a traceback:

    cannot listen on 127.0.0.1:8080: the address is already in use, by PID 4242 (another
    arouter). Stop it, or choose another port: arouter serve --port 8081 (free now)
    cannot open the store postgresql://arouter@127.0.0.1:5433/arouter (AROUTER_DATABASE_URL):
    nothing listens on 127.0.0.1:5433 (connection refused). Is PostgreSQL running there? ...

Rules:
1. Nothing secret is printed. A PostgreSQL store is named ``postgresql://user@host:port/db``,
   never with its password; the driver's text only classifies the failure, and the one
   server reason ever quoted (after ``FATAL:``) has the password masked too.
2. Every probe is bounded (a TCP connect, a connect timeout) and changes nothing the store
   itself would not (the SQLite probe makes the same folder and file the store would).
3. The explanation runs only after a real failure, so a healthy start pays for nothing but
   its ordinary open.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any

from gateway.config import Config

# A probe's TCP connect to the database server; a start should not hang on a firewall.
PROBE_SECONDS = 3.0


class CannotStart(Exception):
    """The gateway cannot serve in this environment; the message says why and what to do."""


# -- the listening address ------------------------------------------------------------------


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(config: Config) -> tuple[Any, Any]:
    """Hypercorn's config and the listening sockets for ``config``'s address, bound and
    listening; a failure to bind becomes ``CannotStart`` naming the address."""
    from gateway.serve.server import hypercorn_config

    hconfig = hypercorn_config(config)
    try:
        sockets = hconfig.create_sockets()
    except OSError as exc:
        raise CannotStart(cannot_listen(config.host, config.port, exc)) from None
    for sock in sockets.insecure_sockets:
        # Listening now: connections queue in the backlog until the server accepts them.
        sock.listen(hconfig.backlog)
    return hconfig, sockets


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {address(host, port)}"
    if isinstance(exc, socket.gaierror):
        return (f"{where}: the host name {host!r} does not resolve. Give an address of this "
                "machine: --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every "
                "interface)")
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        by = f", by {holder}" if holder else (
            f" (by a process this user cannot see; as root, `ss -ltnp 'sport = :{port}'` "
            "names it)")
        return (f"{where}: the address is already in use{by}. Stop it, or choose another "
                f"port: arouter serve --port {_free_port_near(host, port)}")
    if exc.errno == errno.EACCES:
        return (f"{where}: permission denied (ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE). Use a port of 1024 or above, e.g. --port 8080, and "
                "put nginx in front (deploy/nginx)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{where}: no network interface of this machine has the address {host}. "
                "Use --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every "
                "interface)")
    return f"{where}: {exc.strerror or exc}"


def _free_port_near(host: str, port: int) -> str:
    """The next port that binds now (a suggestion, not a promise), else "0" (any port)."""
    for candidate in range(port + 1, min(port + 20, 65536)):
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                sock.bind((host, candidate))
        except OSError:
            continue
        return f"{candidate} (free now)"
    return "0 (any free port)"


def port_holder(port: int) -> str | None:
    """Which process listens on TCP ``port``, from /proc, as far as this user may see:
    "PID 4242 (another arouter)" or "PID 77 (nginx)". Only a process's name is used, never
    its command line (which may hold secrets), except to recognise arouter itself."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 the inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1],
                                                             16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                continue
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to look at
        ours = any(arg.endswith((b"arouter", b"gateway")) for arg in argv[:3])
        return f"PID {pid} ({'another arouter' if ours else name})"
    return None


# -- the store --------------------------------------------------------------------------------


def store_label(config: Config) -> str:
    """The store in use, safe to print: ``postgresql://user@host:port/db`` (no password) or
    ``SQLite <path>``."""
    if not config.database_url:
        return f"SQLite {config.database_path}"
    params = _postgres_params(config.database_url)
    if params is None:
        return "postgresql://(an unparsable URL)"
    host = params.get("host") or "localhost (unix socket)"
    port = params.get("port") or "5432"
    return f"postgresql://{_user(params)}@{host}:{port}/{params.get('dbname') or _user(params)}"


def explain_store(config: Config, failure: str) -> str:
    """Why the store in ``config`` cannot be opened, found by bounded probes; ``failure``
    is the store's own (class-level) message, the fallback. Blocking: call from a thread."""
    if config.database_url:
        source = ("AROUTER_DATABASE_URL"
                  if os.environ.get("AROUTER_DATABASE_URL") == config.database_url
                  else "[store] url in the config")
        cause = _postgres_cause(config.database_url, source, failure)
        return f"cannot open the store {store_label(config)} ({source}): {cause}"
    return f"cannot open the store {store_label(config)}: {_sqlite_cause(config, failure)}"


def _postgres_params(url: str) -> dict[str, Any] | None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(url)
    except ProgrammingError:
        return None


def _user(params: dict[str, Any]) -> str:
    return str(params.get("user") or os.environ.get("PGUSER") or getpass.getuser())


def _postgres_cause(url: str, source: str, failure: str) -> str:
    params = _postgres_params(url)
    if params is None:
        return f"the URL cannot be parsed. Fix {source} (postgresql://user:password@host:port/db)"
    host, port = str(params.get("host") or ""), str(params.get("port") or "5432")
    if host and not host.startswith("/") and "," not in host and port.isdigit():
        unreachable = _tcp_probe(host, int(port))
        if unreachable:
            return unreachable
    elif not host or host.startswith("/"):
        folder = host or "/var/run/postgresql"
        path = Path(folder) / f".s.PGSQL.{port}"
        if not path.exists():
            return (f"no PostgreSQL socket at {path}. Is PostgreSQL running on this host? "
                    f"Or give host:port in {source}")
    return _connect_cause(params, source, failure)


def _tcp_probe(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return None
    except ConnectionRefusedError:
        return (f"nothing listens on {address(host, port)} (connection refused). Is "
                "PostgreSQL running there? Check the host and port in the URL")
    except socket.gaierror:
        return f"the host name {host!r} does not resolve. Check the host in the URL"
    except TimeoutError:
        return (f"{address(host, port)} does not answer (no reply within {PROBE_SECONDS:g} s: "
                "a firewall, or the wrong address)")
    except OSError as exc:
        return f"cannot reach {address(host, port)}: {exc.strerror or type(exc).__name__}"


def _connect_cause(params: dict[str, Any], source: str, failure: str) -> str:
    """Connect once with the driver and say, in our words, why the server refused."""
    import psycopg

    user, db = _user(params), params.get("dbname") or _user(params)
    try:
        with psycopg.connect(**{**params, "connect_timeout": int(PROBE_SECONDS) + 2}) as conn:
            # The migrations create tables in the current schema (PostgreSQL 15 and later
            # grant that on "public" to the database's owner only).
            row = conn.execute("SELECT current_schema(), "
                               "has_schema_privilege(current_schema(), 'CREATE')").fetchone()
    except psycopg.Error as exc:
        text = str(exc)
        password = str(params.get("password") or "")
        if password:
            text = text.replace(password, "***")
        if "password authentication failed" in text:
            return f"authentication failed for user {user!r}: check the password in {source}"
        if "no password supplied" in text:
            return f"the server wants a password for {user!r}; {source} gives none"
        found = re.search(r'database "([^"]*)" does not exist', text)
        if found:
            return (f"the database {db!r} does not exist. Create it (sudo -u postgres "
                    f"createdb --owner {user} {db}) or fix the name in {source}")
        if re.search(r'role "([^"]*)" does not exist', text):
            return (f"the role {user!r} does not exist on the server. Create it (sudo -u "
                    f"postgres createuser --pwprompt {user}) or fix the user in {source}")
        if "no pg_hba.conf entry" in text:
            return (f"the server's pg_hba.conf does not let {user!r} connect to {db!r} from "
                    "this host")
        if "timeout expired" in text:
            return "the server accepted the connection but did not answer in time"
        reason = text.rsplit("FATAL:", 1)[-1].strip().splitlines()[0] if "FATAL:" in text \
            else type(exc).__name__
        return f"the server refused the connection: {reason}"
    # The server takes us: what failed is a statement (a migration, a permission).
    if row is not None and row[1] is False:
        return (f"the role {user!r} may not create the gateway's tables in schema {row[0]!r} "
                f"of {db!r}. Make it the database's owner (ALTER DATABASE {db} OWNER TO "
                f"{user}) or GRANT CREATE ON SCHEMA {row[0]} TO {user}")
    return f"connected, but opening the store failed: {failure}"


def _sqlite_cause(config: Config, failure: str) -> str:
    """Redo what ``SqliteStore`` does on open, keeping the operating system's own reason."""
    from gateway.store.files import private_file, private_folder

    path = config.database_path
    hint = "choose a writable data directory (--data-dir or AROUTER_DATA_DIR)"
    try:
        private_folder(path.parent)
        private_file(path)
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except PermissionError as exc:
        return (f"permission denied on {exc.filename or path} for user {getpass.getuser()!r}: "
                f"{hint}")
    except (NotADirectoryError, FileExistsError):
        # The operating system names the path it could not make; the culprit is the file
        # standing where a folder should be.
        culprit = next((p for p in (path.parent, *path.parent.parents)
                        if p.exists() and not p.is_dir()), path.parent)
        return f"{culprit} is a file, not a directory: {hint}"
    except OSError as exc:
        return f"{exc.filename or path}: {exc.strerror or type(exc).__name__}: {hint}"
    except sqlite3.DatabaseError as exc:
        return (f"SQLite says {str(exc)!r} about {path}: move that file away, or point "
                "[server] database or --data-dir elsewhere")
    return failure
