"""``arouter serve --workers 2`` as real processes: a supervisor SIGKILLed with streams open
(FAULTS.md F6), and how soon its workers stop saying "ready" after SIGTERM (F7).

Every process is found and checked by its PID: the supervisor is this test's child, its
workers are read from /proc before it dies, and a worker counts as gone once its PID is gone,
is a zombie, or belongs to a process started later (the PID reused).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import trio

from gateway.accounts import keys
from gateway.store.sqlite import SqliteStore
from tests.support.gateways import Sim
from tests.support.processes import ENV, Served, dechunk, free_port, serve, write_config
from tests.support.raw_http import RawConnection, Reply, chat, ready, request

DRAIN = 3.0


async def workers_of(served: Served, url: str) -> dict[int, str]:
    """The supervisor's worker processes (PID -> /proc start time), once both serve."""
    pid = served.process.pid
    with trio.fail_after(30):  # the spawned workers import and start
        while True:
            children = await trio.Path(f"/proc/{pid}/task/{pid}/children").read_text()
            workers = {}
            for child in children.split():
                # Workers, not multiprocessing's resource tracker.
                cmdline = await trio.Path(f"/proc/{child}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    workers[int(child)] = _started(int(child))
            if len(workers) == 2 and all(workers.values()) and await ready(url):
                return workers
            await trio.sleep(0.1)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # procfs: never blocks
            return stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _started(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields else ""  # starttime (field 22 of stat)


def alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


async def _config(tmp_path: Path, sim: Sim) -> tuple[Path, Path, str]:
    data = tmp_path / "data"
    config = write_config(tmp_path / "arouter.toml", sim)
    config.write_text(config.read_text() + f"[timeouts]\ndrain = {DRAIN}\n")
    store = SqliteStore(data / "arouter.db")
    await store.open()
    secret, row = keys.generate(name="workers", created_at=time.time())
    await store.add_key(row)
    await store.aclose()
    return data, config, secret


async def test_workers_of_a_killed_supervisor_drain_exit_and_free_the_port(
    tmp_path: Path, sim: Sim
) -> None:
    data, config, secret = await _config(tmp_path, sim)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    options = ("--port", str(port), "--workers", "2")
    streams = 6
    ends: dict[int, tuple[float, bytes]] = {}
    async with serve(data, None, *options, config=config, extra_env=ENV) as served:
        workers = await workers_of(served, url)
        opened = [await RawConnection.open(url) for _ in range(streams)]
        try:
            for n, connection in enumerate(opened):
                await connection.send(chat(secret, f"#sim tag=k{n} tokens=100000 "
                                           "interval_ms=20\nhi", stream=True))
            for connection in opened:  # every stream has committed and is flowing
                assert await connection.until(b"data: ")
            killed_at = time.monotonic()
            os.kill(served.process.pid, signal.SIGKILL)  # our own child, by its PID
            await served.process.wait()

            async def read(n: int, connection: RawConnection) -> None:
                rest = await connection.wait_closed(within=DRAIN + 15)
                ends[n] = (time.monotonic() - killed_at, rest)

            async with trio.open_nursery() as nursery:
                for n, connection in enumerate(opened):
                    nursery.start_soon(read, n, connection)
                # Meanwhile, a new supervisor on the same port: the old listening socket
                # is closed in every process.
                async with serve(data, None, *options, config=config,
                                 extra_env=ENV) as second:
                    bound = time.monotonic() - killed_at
                    await workers_of(second, url)
                    serving = time.monotonic() - killed_at
                    second.process.send_signal(signal.SIGTERM)
                    with trio.fail_after(15):
                        assert await second.process.wait() == 0
        finally:
            for connection in opened:
                await connection.aclose()
        for _ in range(300):  # 15 s
            if not any(alive(pid, started) for pid, started in workers.items()):
                break
            await trio.sleep(0.05)
        exited = time.monotonic() - killed_at
    print(f"after SIGKILL of the supervisor: port bound again after {bound:.2f} s, new "
          f"workers ready after {serving:.2f} s; old streams ended after "
          f"{min(t for t, _ in ends.values()):.2f}-{max(t for t, _ in ends.values()):.2f} s; "
          f"old workers gone after {exited:.2f} s (drain {DRAIN} s)")
    assert bound < 5
    # Each open stream ran until the drain deadline, then got the terminal error event.
    for took, rest in ends.values():
        assert took >= DRAIN - 0.5
        status, body = dechunk(rest)
        assert status == 200
        events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
        last = json.loads(events[-1][6:])
        assert last["choices"][0]["finish_reason"] == "error"
        assert "shutting down" in last["error"]["message"]
    assert exited < DRAIN + 10
    for n in range(streams):  # and each settled: the fake upstream saw its client leave
        await sim.wait_record(f"k{n}", lambda r: r.ended_at is not None)
    store = SqliteStore(data / "arouter.db")
    await store.open()
    try:
        assert await store.reservations() == []
        rows = await store.records()
        assert sum(row.status == "partial" for row in rows) == streams
    finally:
        await store.aclose()


async def test_readyz_on_kept_alive_connections_turns_503_at_once_after_sigterm(
    tmp_path: Path, sim: Sim
) -> None:
    """Requests on open connections, each completed at its own offset after SIGTERM: from
    the moment the workers hear of it, each gets 503 with ``Connection: close``; none is
    dropped unanswered."""
    data, config, _ = await _config(tmp_path, sim)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    offsets = [*range(0, 20, 2), *range(20, 100, 10), *range(100, 800, 100)]  # ms
    replies: dict[int, Reply | None] = {}
    answered: dict[int, float] = {}
    async with serve(data, None, "--port", str(port), "--workers", "2", config=config,
                     extra_env=ENV) as served:
        await workers_of(served, url)
        head = request("GET", "/readyz")
        opened = [await RawConnection.open(url) for _ in offsets]
        try:
            for connection in opened:  # kept alive, with the next request on its way in
                await connection.send(head)
                assert (reply := await connection.reply()) is not None and reply.status == 200
                await connection.send(head[:-2])
            await trio.sleep(0.2)
            signalled = trio.current_time()
            served.process.send_signal(signal.SIGTERM)

            async def complete(offset: int, connection: RawConnection) -> None:
                await trio.sleep_until(signalled + offset / 1000)
                await connection.send(b"\r\n")
                replies[offset] = await connection.reply(within=5)
                answered[offset] = trio.current_time() - signalled

            async with trio.open_nursery() as nursery:
                for offset, connection in zip(offsets, opened, strict=True):
                    nursery.start_soon(complete, offset, connection)
            with trio.fail_after(5):  # nothing else is open: the workers exit at once
                assert await served.process.wait() == 0
            exited = trio.current_time() - signalled
        finally:
            for connection in opened:
                await connection.aclose()
    statuses = {offset: reply.status if reply else None for offset, reply in sorted(
        replies.items())}
    ready = [offset for offset, status in statuses.items() if status == 200]
    print(f"readyz completed 0-{offsets[-1]} ms after SIGTERM: 200 up to "
          f"{max(ready, default=-1)} ms, 503 from then on (the one completed at once was "
          f"answered {statuses[0]} {answered[0] * 1000:.1f} ms after SIGTERM); the "
          f"supervisor exited after {exited:.2f} s; by offset (ms): {statuses}")
    assert None not in statuses.values(), "requests left unanswered"
    assert max(ready, default=0) < 100
    for offset, reply in replies.items():
        assert reply is not None
        if offset > max(ready, default=-1):
            assert reply.status == 503, (offset, reply)
            assert reply.headers["connection"] == "close"
            assert reply.headers["retry-after"] == "1"
