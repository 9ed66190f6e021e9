"""A real nginx for tests, running the shipped site config (``deploy/nginx/``).

The shipped ``upstream.conf`` and ``arouter.conf`` are copied into a temp folder with only
what a test must change substituted: the gateway addresses, the listen address, and,
optionally, ``proxy_read_timeout`` (set low to prove that keepalives cross nginx). A small
``nginx.conf`` around them keeps every path (pid, logs, temp files) in that folder.

nginx runs in the foreground (``daemon off``) and is stopped by its own PID. Without an
nginx binary the test skips, unless ``AROUTER_REQUIRE_SERVICES=1`` makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)),
        None)
    if found is None:
        if os.environ.get("AROUTER_REQUIRE_SERVICES") == "1":
            pytest.fail("nginx not found, and AROUTER_REQUIRE_SERVICES=1 requires it",
                        pytrace=False)
        pytest.skip("nginx not found")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def site_config(folder: Path, gateways: list[int], port: int,
                read_timeout: str | None = None) -> None:
    upstream = (SHIPPED / "upstream.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n"
                      for p in gateways)
    upstream, count = re.subn(r"(    server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, upstream)
    assert count == 1, "upstream.conf no longer has the server lines this test replaces"
    site = (SHIPPED / "arouter.conf").read_text()
    site, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    assert count == 1
    if read_timeout is not None:
        site, count = re.subn(r"proxy_read_timeout \S+;", f"proxy_read_timeout {read_timeout};",
                              site)
        assert count == 1
    (folder / "upstream.conf").write_text(upstream)
    (folder / "arouter.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}"
        f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n"
        + "".join(f"  {kind}_temp_path {folder}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"  include {folder}/upstream.conf;\n  include {folder}/arouter.conf;\n}}\n")


@contextmanager
def nginx(folder: Path, gateways: list[int], read_timeout: str | None = None) -> Iterator[str]:
    """nginx in front of ``gateways`` (ports); yields its URL."""
    binary = nginx_binary()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site_config(folder, gateways, port, read_timeout)
    check = subprocess.run([binary, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {process.stderr.read()!r}"
                                         if process.stderr else "nginx did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown, by its own PID
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()
