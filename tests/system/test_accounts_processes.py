"""Accounts across whole processes: real ``arouter serve`` subprocesses, SIGKILL, a fleet.

- SIGKILL with streams open, then a restart: the dead process's reservations are settled
  as ``interrupted`` at once (same host, its PID is gone), nothing lost, nothing twice.
- Two gateway processes on one PostgreSQL database and one Redis: a balance that covers one
  request admits exactly one of 50, and a requests-per-minute limit holds across both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import trio

from gateway import keys
from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore
from tests.conftest import FAKE_PROVIDER_KEY, Sim
from tests.pg_server import fixture_postgres_db  # noqa: F401
from tests.processes import Served, serve
from tests.redis_server import redis_clean_url, redis_server_session  # noqa: F401


def write_config(path: Path, sim: Sim, *, store_url: str | None = None,
                 redis_url: str | None = None) -> Path:
    lines = [
        "[providers.fake]",
        'dialect = "openai"',
        f'base_url = "{sim.url}/v1"',
        'api_key_env = "AROUTER_TEST_FAKE_KEY"',
        "[providers.fake.prices.lorem]",
        "prompt = 1",  # dollars per million tokens: 1 micro-dollar per token
        "completion = 2",
        "[accounts]",
        "heartbeat = 0.5",
    ]
    if redis_url:
        lines.append(f'redis_url = "{redis_url}"')
    if store_url:
        lines += ["[store]", f'url = "{store_url}"']
    path.write_text("\n".join(lines) + "\n")
    return path


ENV = {"AROUTER_TEST_FAKE_KEY": FAKE_PROVIDER_KEY}


async def add_key(store: Store, **policy: Any) -> tuple[str, keys.ApiKey]:
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


async def test_sigkill_with_open_streams_then_restart_settles_every_reservation(
    tmp_path: Path, sim: Sim
) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "arouter.toml", sim)
    db = SqliteStore(data / "arouter.db")
    secret, key = await add_key(db, balance=1_000_000)
    started = trio.Semaphore(0)

    async def hold_open(served: Served, n: int) -> None:
        try:
            async with httpx.AsyncClient(timeout=30) as client, client.stream(
                "POST", f"{served.url}/v1/chat/completions",
                json=payload(f"kill{n}", "tokens=500 interval_ms=20", max_tokens=500),
                headers={"authorization": f"Bearer {secret}"},
            ) as response:
                first = True
                async for line in response.aiter_lines():
                    if first and line.startswith("data: "):
                        first = False
                        started.release()
        except httpx.HTTPError:
            pass  # the gateway died under us: that is the point

    async with (
        serve(data, None, config=config, extra_env=ENV) as served,
        trio.open_nursery() as nursery,
    ):
        for n in range(5):
            nursery.start_soon(hold_open, served, n)
        with trio.fail_after(10):
            for _ in range(5):
                await started.acquire()
        served.process.kill()  # SIGKILL: no drain, no settle
        await served.process.wait()

    await db.open()
    try:
        assert len(await db.reservations()) == 5
        assert await db.records() == []
        held = (await db.find_key(key.id)).balance  # type: ignore[union-attr]
        assert held is not None and held < 1_000_000
    finally:
        await db.aclose()

    async with serve(data, None, config=config, extra_env=ENV) as again:
        await db.open()
        try:
            with trio.fail_after(10):
                while await db.reservations():  # noqa: ASYNC110  # another process's work
                    await trio.sleep(0.05)
            rows = await db.records(key_id=key.id)
            assert len(rows) == 5
            assert {r.status for r in rows} == {"interrupted"}
            assert all(r.usage_estimated and r.cancelled for r in rows)
            left = (await db.find_key(key.id)).balance  # type: ignore[union-attr]
            assert left == 1_000_000 - sum(r.cost for r in rows)
        finally:
            await db.aclose()
        # The restarted gateway serves, and the old process's upstream calls are all closed.
        async with httpx.AsyncClient(timeout=30) as client:
            ok = await client.post(f"{again.url}/v1/chat/completions", json=payload("after"),
                                   headers={"authorization": f"Bearer {secret}"})
        assert ok.status_code == 200
    for n in range(5):
        await sim.wait_record(f"kill{n}", lambda r: r.ended_at is not None)


async def test_two_processes_on_postgres_and_redis_share_credits_and_limits(
    tmp_path: Path, sim: Sim, postgres_db: str, redis_clean_url: str  # noqa: F811
) -> None:
    from gateway.store.postgres import PostgresStore

    config = write_config(tmp_path / "arouter.toml", sim, store_url=postgres_db,
                          redis_url=redis_clean_url)
    one_request = payload("fleet")
    # What admission reserves for this payload: its prompt estimate plus 10 output tokens.
    from tests.test_accounts import reservation_for

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
