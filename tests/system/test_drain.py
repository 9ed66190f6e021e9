"""SIGTERM on a real ``arouter serve`` with 200 streams open (FAULTS.md E6, E7).

Half the streams finish within the drain deadline; the other half are still running at it
and must each end with the dialect's terminal error event, never a clean end and never a
cut. Every one settles in the ledger, the listener stops accepting at once, and the process
exits 0 within the deadline. A second signal ends the wait early but never skips a settle.
And (F7) a request pipelined behind a stream as the drain begins is answered or closed unread,
while an idle process exits at once whatever its kept-alive connections hold.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.accounts import keys
from gateway.store.sqlite import SqliteStore
from tests.support.gateways import Sim
from tests.support.processes import ENV, dechunk, free_port, serve, write_config
from tests.support.raw_http import RawConnection, chat, request, wait_ready

STREAMS = 200
ENDED: dict[str, float] = {}  # tag -> when its stream ended (time.monotonic)
DRAIN = 3.0


async def stream(url: str, secret: str, tag: str, directive: str, started: trio.Semaphore,
                 into: dict[str, tuple[int, bytes]]) -> None:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps({
        "model": "fake/lorem", "stream": True, "max_tokens": 100_000,
        "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhi"}],
    }).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    sock = await trio.open_tcp_stream(host, int(port))
    raw = b""
    async with sock:
        await sock.send_all(head + payload)
        signalled = False
        while chunk := await sock.receive_some(65536):
            raw += chunk
            if not signalled and b"data: " in raw:
                signalled = True
                started.release()
    into[tag] = dechunk(raw)
    ENDED[tag] = time.monotonic()


async def run_drain(tmp_path: Path, sim: Sim, second_signal_after: float | None,
                    workers: int = 1, streams: int = STREAMS) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "arouter.toml", sim)
    config.write_text(config.read_text() + f"[timeouts]\ndrain = {DRAIN}\n")
    store = SqliteStore(data / "arouter.db")
    await store.open()
    secret, row = keys.generate(name="drain", created_at=time.time())
    await store.add_key(row)
    await store.aclose()
    results: dict[str, tuple[int, bytes]] = {}
    started = trio.Semaphore(0)
    options = ("--port", str(free_port()), "--workers", str(workers)) if workers > 1 else ()
    async with serve(data, None, *options, config=config, extra_env=ENV) as served:
        host, port = served.url.removeprefix("http://").split(":")
        async with trio.open_nursery() as nursery:
            for n in range(streams):
                # Even: done in about a second. Odd: still running at the drain deadline.
                directive = ("tokens=20 interval_ms=50" if n % 2 == 0
                             else "tokens=100000 interval_ms=20")
                nursery.start_soon(stream, served.url, secret, f"s{n}", directive, started,
                                   results)
            with trio.fail_after(20):
                for _ in range(streams):
                    await started.acquire()
            signalled_at = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            # The listener stops accepting within a second.
            with trio.fail_after(2):
                while True:
                    try:
                        probe = await trio.open_tcp_stream(host, int(port))
                    except OSError:
                        break
                    await probe.aclose()
                    await trio.sleep(0.05)
            if second_signal_after is not None:
                await trio.sleep(second_signal_after)
                served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(DRAIN + 15):
                code = await served.process.wait()
            took = time.monotonic() - signalled_at
    assert code == 0
    long_ended = [ENDED[f"s{n}"] - signalled_at for n in range(1, streams, 2)]
    if second_signal_after is None:
        # The open streams ran until the drain deadline, not a moment less.
        assert min(long_ended) >= DRAIN - 0.1
    limit = DRAIN + 5 if second_signal_after is None else second_signal_after + 3
    assert took < limit, f"exit took {took:.1f} s"

    assert len(results) == streams
    for tag, (status, body) in results.items():
        n = int(tag[1:])
        assert status == 200
        events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
        if n % 2 == 0 and second_signal_after is None:
            assert events[-1] == b"data: [DONE]", (tag, body[-300:])
            assert b'"finish_reason":"error"' not in body
        elif n % 2 == 1:
            # Cut by the drain: the terminal error event, with the usage so far, no [DONE].
            assert b"data: [DONE]" not in body, tag
            last = json.loads(events[-1][6:])
            assert last["choices"][0]["finish_reason"] == "error"
            assert "shutting down" in last["error"]["message"]

    await store.open()
    try:
        rows = await store.records(key_id=row.id)
        assert len(rows) == streams
        assert await store.reservations() == []
        by_tag = {r.status for r in rows}
        assert "partial" in by_tag
        if second_signal_after is None:
            assert sum(r.status == "ok" for r in rows) == streams // 2
    finally:
        await store.aclose()
    for n in range(streams):
        await sim.wait_record(f"s{n}", lambda r: r.ended_at is not None)


async def test_sigterm_drains_two_hundred_open_streams(tmp_path: Path, sim: Sim) -> None:
    await run_drain(tmp_path, sim, second_signal_after=None)


async def test_a_second_signal_ends_the_drain_at_once_and_still_settles(
    tmp_path: Path, sim: Sim
) -> None:
    await run_drain(tmp_path, sim, second_signal_after=0.3)


async def test_workers_drain_too(tmp_path: Path, sim: Sim) -> None:
    """``--workers 2``: the parent forwards the drain to its workers (``workers.py``)."""
    await run_drain(tmp_path, sim, second_signal_after=None, workers=2, streams=40)


async def test_a_request_admitted_as_the_drain_begins_is_refused_and_settles(
    start_gateway: Any, sim: Sim
) -> None:
    async with start_gateway(drain=5.0) as gw:
        gateway = gw.running.gateway
        admit = gateway.accounts.admit
        admitting = trio.Event()

        async def slow_admit(*args: Any) -> Any:
            admitting.set()
            await trio.sleep(0.3)  # the store is slow: the drain begins meanwhile
            return await admit(*args)

        gateway.accounts.admit = slow_admit  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            responses: list[Any] = []

            async def post() -> None:
                async with httpx.AsyncClient(timeout=30) as client:
                    responses.append(await client.post(
                        f"{gw.url}/v1/chat/completions", headers=gw.headers,
                        json={"model": "fake/lorem", "stream": True, "messages": [
                            {"role": "user", "content": "#sim tag=late tokens=500\nhi"}]}))

            nursery.start_soon(post)
            await admitting.wait()
            gateway.begin_drain()
        [response] = responses
        assert response.status_code == 503
        assert "shutting down" in response.json()["error"]["message"]
        [row] = await gw.wait_records(1)
        assert (row.status, row.http_status) == ("upstream_error", 503)
        assert await gateway.store.reservations() == []
        assert not sim.records("late")  # the upstream was never called


async def test_a_worker_signalled_directly_brings_the_whole_server_down(
    tmp_path: Path, sim: Sim
) -> None:
    config = write_config(tmp_path / "arouter.toml", sim)
    port = free_port()
    async with serve(tmp_path / "data", None, "--port", str(port), "--workers", "2",
                     config=config, extra_env=ENV) as served:
        with trio.fail_after(30):  # the spawned workers import and start
            while True:
                pid = served.process.pid
                children = trio.Path(f"/proc/{pid}/task/{pid}/children")
                workers = []
                for child in (await children.read_text()).split():
                    # Workers, not multiprocessing's resource tracker.
                    cmdline = await trio.Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"spawn_main" in cmdline:
                        workers.append(int(child))
                ready = False
                try:
                    async with httpx.AsyncClient(timeout=2) as client:
                        ready = (await client.get(f"http://127.0.0.1:{port}/readyz")
                                 ).status_code == 200
                except httpx.HTTPError:
                    pass
                if len(workers) >= 2 and ready:
                    break
                await trio.sleep(0.2)
        await trio.sleep(1.0)  # both workers' lifespans listen for signals by now
        os.kill(workers[0], signal.SIGTERM)  # one of our own children, by its PID
        with trio.fail_after(20):
            code = await served.process.wait()
    assert code == 0


async def _served_config(tmp_path: Path, sim: Sim) -> tuple[Path, Path, str]:
    """A data directory with one key, and a config with the default drain (120 s)."""
    data = tmp_path / "data"
    config = write_config(tmp_path / "arouter.toml", sim)
    store = SqliteStore(data / "arouter.db")
    await store.open()
    secret, row = keys.generate(name="drain", created_at=time.time())
    await store.add_key(row)
    await store.aclose()
    return data, config, secret


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_pipelined_request_as_the_drain_begins_then_a_prompt_exit(
    tmp_path: Path, sim: Sim, workers: int
) -> None:
    """FAULTS.md F7: a stream and a second request written in one send, SIGTERM while the
    stream runs. The stream finishes; the second request gets a 503 or the connection
    closes unread; and the process exits once the stream is done, not at hypercorn's
    graceful timeout (drain + settle + 2 s: 127 s here)."""
    data, config, secret = await _served_config(tmp_path, sim)
    options = ("--port", str(free_port()), "--workers", str(workers)) if workers > 1 else ()
    async with serve(data, None, *options, config=config, extra_env=ENV) as served:
        await wait_ready(served.url)
        connection = await RawConnection.open(served.url)
        try:
            await connection.send(chat(secret, "#sim tokens=20 interval_ms=50\nhi",
                                       stream=True) + request("GET", "/readyz"))
            assert await connection.until(b"data: ")
            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            first = await connection.reply(within=10)
            second = await connection.reply(within=10)
            assert await connection.wait_closed(within=10) == b""
        finally:
            await connection.aclose()
        with trio.fail_after(20):
            code = await served.process.wait()
        took = time.monotonic() - signalled
    print(f"workers={workers}: second request {second.status if second else 'closed unread'}"
          f"; exited {took:.2f} s after SIGTERM")
    assert code == 0
    assert first is not None and first.status == 200
    assert first.body.rstrip().endswith(b"data: [DONE]")
    if second is not None:
        assert second.status == 503
        assert second.headers["connection"] == "close"
    assert took < 5


@pytest.mark.parametrize("workers", [1, 2])
async def test_an_idle_server_exits_at_once_whatever_its_connections_hold(
    tmp_path: Path, sim: Sim, workers: int
) -> None:
    """Kept-alive connections, idle or with half a request sent long ago, hold nothing up:
    with no request open, SIGTERM ends the process at once."""
    data, config, _ = await _served_config(tmp_path, sim)
    options = ("--port", str(free_port()), "--workers", str(workers)) if workers > 1 else ()
    async with serve(data, None, *options, config=config, extra_env=ENV) as served:
        await wait_ready(served.url)
        opened = [await RawConnection.open(served.url) for _ in range(6)]
        try:
            for connection in opened:
                await connection.send(request("GET", "/readyz"))
                assert (reply := await connection.reply()) is not None and reply.status == 200
            signalled = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await served.process.wait()
            took = time.monotonic() - signalled
            for connection in opened:
                assert await connection.wait_closed(within=1) == b""
        finally:
            for connection in opened:
                await connection.aclose()
    print(f"workers={workers}: an idle server exited {took * 1000:.0f} ms after SIGTERM")
    assert code == 0
    assert took < 1.0
