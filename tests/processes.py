"""``arouter serve`` as a real subprocess, for the tests that need whole processes.

The process is started with the test's own data directory (and optional config file), read
until its banner says where it listens, and ended by its own PID: SIGTERM, then SIGKILL if it
has not exited within 10 s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parent.parent
ARouter = [sys.executable, "-m", "gateway"]


@attrs.frozen
class Served:
    url: str
    key: str | None
    banner: str
    process: trio.Process


def env(data_dir: Path, **extra: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    values["AROUTER_DATA_DIR"] = str(data_dir)
    values.pop("AROUTER_CONFIG", None)
    values.update(extra)
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(
    data_dir: Path, log: Path | None = None, *options: str, config: Path | None = None,
    extra_env: dict[str, str] | None = None, own_pid_namespace: bool = False,
) -> AsyncIterator[Served]:
    """``arouter serve`` as a subprocess, until its banner; SIGTERM (then SIGKILL) at exit.
    With ``own_pid_namespace`` it runs in a PID namespace of its own (``unshare``, as a
    container would): to other gateways on this machine it is on another host."""
    # A real file descriptor for the child; opened once, closed in the finally below.
    log_file = open(log or os.devnull, "ab")  # noqa: SIM115, ASYNC230
    # unshare forwards nothing, but --kill-child passes its own end on as SIGTERM: the
    # gateway inside drains exactly as if it had been signalled itself.
    prefix = (["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"]
              if own_pid_namespace else [])
    process = await trio.lowlevel.open_process(
        [*prefix, *ARouter, *(("--config", str(config)) if config else ()), "serve",
         *(options or ("--port", "0"))],
        stdout=subprocess.PIPE,
        stderr=log_file,
        env=env(data_dir, **(extra_env or {})),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        banner = b""
        with trio.fail_after(30):
            while b"try: curl" not in banner:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"arouter serve exited early: {banner!r}"
                banner += chunk
        text = banner.decode()
        url = re.search(r"listening on (http://\S+)", text)
        key = re.search(r"^\s+(lr_live_[0-9a-f]{12}_[0-9a-f]{48})$", text, re.M)
        assert url is not None
        yield Served(url.group(1), key.group(1) if key else None, text, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        log_file.close()


