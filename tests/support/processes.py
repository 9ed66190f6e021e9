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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.accounts import keys
from gateway.store.base import Store
from tests.support.gateways import FAKE_PROVIDER_KEY, Sim

ROOT = Path(__file__).resolve().parents[2]
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


def write_config(path: Path, sim: Sim, *, store_url: str | None = None,
                 redis_url: str | None = None, **accounts: float) -> Path:
    """A config with the fake upstream's provider, and ``accounts`` settings beside a 0.5 s
    heartbeat."""
    lines = [
        "[providers.fake]",
        'dialect = "openai"',
        f'base_url = "{sim.url}/v1"',
        'api_key_env = "AROUTER_TEST_FAKE_KEY"',
        "[providers.fake.prices.lorem]",
        "prompt = 1",  # dollars per million tokens: 1 micro-dollar per token
        "completion = 2",
        "[accounts]",
        *(f"{name} = {value}" for name, value in {"heartbeat": 0.5, **accounts}.items()),
    ]
    if redis_url:
        lines.append(f'redis_url = "{redis_url}"')
    if store_url:
        lines += ["[store]", f'url = "{store_url}"']
    path.write_text("\n".join(lines) + "\n")
    return path


ENV = {"AROUTER_TEST_FAKE_KEY": FAKE_PROVIDER_KEY}


async def add_store_key(store: Store, **policy: Any) -> tuple[str, keys.ApiKey]:
    """A key with ``policy`` in a store the test opens and closes (no gateway running)."""
    await store.open()
    try:
        secret, row = keys.generate(name="proc", created_at=time.time(), **policy)
        await store.add_key(row)
        return secret, row
    finally:
        await store.aclose()


def payload(tag: str, directive: str = "tokens=5", max_tokens: int = 10) -> dict[str, Any]:
    return {"model": "fake/lorem", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhi"}]}


def dechunk(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 response with a chunked body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, rest
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    return status, body
