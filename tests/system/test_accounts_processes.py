"""Accounts across whole processes: real ``arouter serve`` subprocesses, SIGKILL, a fleet.

- SIGKILL with streams open, then a restart: the dead process's reservations are settled
  as ``interrupted`` at once (same host, its PID is gone), nothing lost, nothing twice.
- Two gateway processes on one PostgreSQL database and one Redis: a balance that covers one
  request admits exactly one of 50, and a requests-per-minute limit holds across both.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore
from tests.support.gateways import FAKE_PROVIDER_KEY, Sim
from tests.support.processes import ENV, payload, serve, write_config
from tests.support.processes import add_store_key as add_key


@attrs.define
class Held:
    """One stream held open until its gateway dies: what reached the client, and when."""

    tag: str
    arrivals: list[tuple[float, int]] = attrs.field(factory=list)  # (time, text chars)

    def chars(self, before: float = math.inf) -> int:
        return sum(n for t, n in self.arrivals if t <= before)


async def hold_open(url: str, secret: str, held: Held, started: trio.Semaphore) -> None:
    try:
        async with httpx.AsyncClient(timeout=30) as client, client.stream(
            "POST", f"{url}/v1/chat/completions",
            json=payload(held.tag, "tokens=2000 interval_ms=20", max_tokens=2000),
            headers={"authorization": f"Bearer {secret}"},
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                text = (choices[0].get("delta") or {}).get("content") or ""
                if not held.arrivals:
                    started.release()
                held.arrivals.append((time.monotonic(), len(text)))
    except httpx.HTTPError:
        pass  # the gateway died under us: that is the point


def store_for(kind: str, data: Path, request: pytest.FixtureRequest) -> tuple[Store, str | None]:
    if kind == "sqlite":
        return SqliteStore(data / "arouter.db"), None
    from gateway.store.postgres import PostgresStore

    url = request.getfixturevalue("postgres_db")
    return PostgresStore(url), url


CHECKPOINT = 0.5


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_sigkill_then_restart_charges_each_stream_its_last_checkpoint(
    tmp_path: Path, sim: Sim, kind: str, request: pytest.FixtureRequest,
) -> None:
    """The crash row of the billing table: an interrupted stream is charged the prompt and
    the output of its last checkpoint (output relayed after it, at most ``checkpoint``
    seconds' worth, is not); one killed before its first checkpoint is free."""
    data = tmp_path / "data"
    db, url = store_for(kind, data, request)
    config = write_config(tmp_path / "arouter.toml", sim, store_url=url, checkpoint=CHECKPOINT)
    secret, key = await add_key(db, balance=10_000_000)
    started = trio.Semaphore(0)
    streams = [Held(f"kill{n}") for n in range(5)]
    young = Held("young")  # killed before its first checkpoint

    async with (
        serve(data, None, config=config, extra_env=ENV) as served,
        trio.open_nursery() as nursery,
    ):
        for held in streams:
            nursery.start_soon(hold_open, served.url, secret, held, started)
        with trio.fail_after(10):
            for _ in streams:
                await started.acquire()
        await trio.sleep(3 * CHECKPOINT)  # a few checkpoints each
        nursery.start_soon(hold_open, served.url, secret, young, started)
        with trio.fail_after(10):
            await started.acquire()
        served.process.kill()  # SIGKILL: no drain, no settle
        killed = time.monotonic()
        await served.process.wait()

    await db.open()
    try:
        assert len(await db.reservations()) == 6
        assert await db.records() == []
    finally:
        await db.aclose()

    async with serve(data, None, config=config, extra_env=ENV) as again:
        await db.open()
        try:
            with trio.fail_after(10):
                while await db.reservations():  # noqa: ASYNC110  # another process's work
                    await trio.sleep(0.05)
            rows = {r.generation_id: r for r in await db.records(key_id=key.id)}
            left = (await db.find_key(key.id)).balance  # type: ignore[union-attr]
        finally:
            await db.aclose()
        # The restarted gateway serves, and the old process's upstream calls are all closed.
        async with httpx.AsyncClient(timeout=30) as client:
            ok = await client.post(f"{again.url}/v1/chat/completions", json=payload("after"),
                                   headers={"authorization": f"Bearer {secret}"})
        assert ok.status_code == 200

    assert len(rows) == 6
    assert {r.status for r in rows.values()} == {"interrupted"}
    assert all(r.usage_estimated and r.cancelled for r in rows.values())
    assert left == 10_000_000 - sum(r.cost for r in rows.values())
    by_cost = sorted(rows.values(), key=lambda r: r.cost)
    assert (by_cost[0].cost, by_cost[0].completion_tokens) == (0, 0)  # the young one
    relayed = sorted(held.chars() for held in streams)
    window = CHECKPOINT + 0.5  # a checkpoint's interval, and slack for the write itself
    unbilled_at_most = max(held.chars() - held.chars(killed - window) for held in streams)
    for row, chars in zip(by_cost[1:], relayed, strict=True):
        assert row.cost == row.prompt_tokens + 2 * row.completion_tokens > 0
        # Charged: the output up to its last checkpoint, never more than was relayed...
        assert 4 * row.completion_tokens <= chars + 200
        # ...and never less than what was relayed before the last checkpoint's interval.
        assert chars - 4 * row.completion_tokens <= unbilled_at_most + 4
    print(f"\ncharged {sum(r.completion_tokens for r in rows.values())} output tokens of "
          f"~{sum(relayed) // 4} relayed; at most {unbilled_at_most} chars per stream unbilled")
    for n in range(5):
        await sim.wait_record(f"kill{n}", lambda r: r.ended_at is not None)


async def test_a_dead_processes_redis_slots_are_freed_when_it_is_reconciled(
    tmp_path: Path, sim: Sim, redis_clean_url: str
) -> None:
    """FAULTS F5: a key with max_concurrent = 5 and 5 streams open on a process that is
    SIGKILLed. Its slots in Redis would otherwise be held until their TTL (about 16
    minutes); the restart's reconciliation frees them at once."""
    data = tmp_path / "data"
    config = write_config(tmp_path / "arouter.toml", sim, redis_url=redis_clean_url)
    db = SqliteStore(data / "arouter.db")
    secret, _ = await add_key(db, balance=10_000_000, max_concurrent=5)
    started = trio.Semaphore(0)
    async with (
        serve(data, None, config=config, extra_env=ENV) as served,
        trio.open_nursery() as nursery,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for n in range(5):
            nursery.start_soon(hold_open, served.url, secret, Held(f"slot{n}"), started)
        with trio.fail_after(10):
            for _ in range(5):
                await started.acquire()
        full = await client.post(f"{served.url}/v1/chat/completions", json=payload("sixth"),
                                 headers={"authorization": f"Bearer {secret}"})
        assert full.status_code == 429  # the limit holds while they run
        served.process.kill()
        killed = time.monotonic()
        await served.process.wait()

    async with serve(data, None, config=config, extra_env=ENV) as again, \
            httpx.AsyncClient(timeout=30) as client:
        up = time.monotonic()
        answer = await client.post(f"{again.url}/v1/chat/completions", json=payload("back"),
                                   headers={"authorization": f"Bearer {secret}"})
        admitted = time.monotonic()
    print(f"\nthe key admitted again {admitted - killed:.2f} s after the SIGKILL "
          f"({admitted - up:.2f} s after the restarted gateway listened)")
    assert answer.status_code == 200  # not 429: the dead process's slots are gone


async def test_two_processes_on_postgres_and_redis_share_credits_and_limits(
    tmp_path: Path, sim: Sim, postgres_db: str, redis_clean_url: str
) -> None:
    from gateway.store.postgres import PostgresStore

    config = write_config(tmp_path / "arouter.toml", sim, store_url=postgres_db,
                          redis_url=redis_clean_url)
    one_request = payload("fleet")
    # What admission reserves for this payload: its prompt estimate plus 10 output tokens.
    from tests.support.gateways import reservation_for

    poor, poor_key = await add_key(PostgresStore(postgres_db),
                                   balance=reservation_for(one_request))
    limited, _ = await add_key(PostgresStore(postgres_db), rpm=5)

    async with (
        serve(tmp_path / "a", None, config=config, extra_env=ENV) as a,
        serve(tmp_path / "b", None, config=config, extra_env=ENV) as b,
        httpx.AsyncClient(timeout=30) as client,
    ):
        async def burst(secret: str, count: int, body: dict[str, Any]) -> list[int]:
            statuses: list[int] = []

            async def one(n: int) -> None:
                url = (a if n % 2 else b).url
                response = await client.post(f"{url}/v1/chat/completions", json=body,
                                             headers={"authorization": f"Bearer {secret}"})
                statuses.append(response.status_code)

            async with trio.open_nursery() as nursery:
                for n in range(count):
                    nursery.start_soon(one, n)
            return sorted(statuses)

        assert await burst(poor, 50, one_request) == [200] + [402] * 49
        assert await burst(limited, 20, payload("rpm")) == [200] * 5 + [429] * 15

    store = PostgresStore(postgres_db)
    await store.open()
    try:
        [row] = await store.records(key_id=poor_key.id)
        left = (await store.find_key(poor_key.id)).balance  # type: ignore[union-attr]
        assert left == reservation_for(one_request) - row.cost >= 0
        assert await store.reservations() == []
    finally:
        await store.aclose()
    # Canaries: no key, nor any part of its secret, in any column of any table.
    dump = await trio.to_thread.run_sync(dump_database, postgres_db)
    assert poor_key.id in dump  # the public id is there: the dump is real
    for secret in (poor, limited, FAKE_PROVIDER_KEY):
        assert secret.split("_")[-1] not in dump


def dump_database(url: str) -> str:
    """Every row of every table of the public schema, as JSON text."""
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(
            str(row[0]) for table in tables
            for row in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_killed_process_lease_goes_back_to_the_key_by_reconciliation(
    tmp_path: Path, sim: Sim, kind: str, request: pytest.FixtureRequest,
) -> None:
    """Two processes on one store serve a metered key, each against its own lease. One is
    SIGKILLed holding credit; the survivor's reconciliation returns that lease to the key:
    the key may again spend its balance less what was served, to the micro-unit."""
    db, url = store_for(kind, tmp_path / "a", request)
    if url is None:  # one SQLite file for both processes
        (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    config = write_config(tmp_path / "arouter.toml", sim, store_url=url, stale_after=1.0)
    start = 10_000_000
    secret, key = await add_key(db, balance=start)
    headers = {"authorization": f"Bearer {secret}"}
    async with (
        serve(tmp_path / "a", None, config=config, extra_env=ENV) as a,
        serve(tmp_path / "b", None, config=config, extra_env=ENV) as b,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for n in range(4):
            for served in (a, b):
                ok = await client.post(f"{served.url}/v1/chat/completions",
                                       json={**payload(f"lease{n}"), "stream": False},
                                       headers=headers)
                assert ok.status_code == 200, ok.text
        await db.open()
        try:
            with trio.fail_after(10):
                while len(await db.records(key_id=key.id)) < 8:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            leases = await db.leases()
            assert len(leases) == 2 and all(x.amount > 0 for x in leases)  # one per process
            a_pid = a.process.pid
            a.process.kill()  # SIGKILL holding its lease: no shutdown returns it
            await a.process.wait()
            with trio.fail_after(20):  # stale_after on PostgreSQL; at once on one host
                while len(await db.leases()) != 1:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            [left] = await db.leases()
            assert left.amount > 0  # the survivor's own lease stands
            rows = await db.records(key_id=key.id)
            spent = sum(r.cost for r in rows)
            assert len(rows) == 8 and spent > 0
            # What the key may spend: the balance and the survivor's lease, nothing lost.
            assert (await db.find_key(key.id)).balance == start - spent  # type: ignore[union-attr]
        finally:
            await db.aclose()
        after = await client.post(f"{b.url}/v1/chat/completions",
                                  json={**payload("after"), "stream": False}, headers=headers)
        assert after.status_code == 200
    print(f"\nprocess {a_pid} killed holding a lease; reconciliation returned it")
    await db.open()
    try:  # the survivor's shutdown returned its lease too: all of it is the balance again
        assert await db.leases() == []
        rows = await db.records(key_id=key.id)
        assert (await db.find_key(key.id)).balance == start - sum(r.cost for r in rows)  # type: ignore[union-attr]
    finally:
        await db.aclose()
