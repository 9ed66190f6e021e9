"""PostgreSQL-specific behaviour of ``PostgresStore`` against a real server
(``tests/support/pg_server.py``).

The store contract itself is checked for every backend by ``test_contract.py``; this module
covers what only a multi-process server exposes: migrations raced by several processes,
reservations raced over separate connections, connection loss, and an unreachable server.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import psycopg
import pytest
import trio

from gateway.errors import NotMetered, StoreUnavailable
from gateway.store import postgres
from gateway.store.base import INSTANCE_FIELDS, KEY_FIELDS, RECORD_FIELDS, RESERVATION_FIELDS
from gateway.store.postgres import MIGRATIONS, PostgresStore
from gateway.store.rows import ApiKey, Instance, RequestRecord, Reservation, Settlement
from tests.support import pg_server
from tests.support.pg_server import free_port

pytestmark = pytest.mark.system


def key(key_id: str, balance: int | None = None, **fields: Any) -> ApiKey:
    return ApiKey(id=key_id, hash="0" * 64, created_at=time.time(), balance=balance, **fields)


def reservation(generation_id: str, key_id: str, amount: int, instance: str = "i1") -> Reservation:
    return Reservation(
        generation_id=generation_id, key_id=key_id, amount=amount, instance=instance,
        model="m", deployment="p/m", client_dialect="openai", upstream_dialect="openai",
        stream=True, prompt_tokens=10, created_at=time.time(),
    )


def record(generation_id: str, key_id: str, cost: int, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = dict(
        generation_id=generation_id, key_id=key_id, model="m", deployment="p/m",
        client_dialect="openai", upstream_dialect="openai", stream=True, status="ok",
        http_status=200, prompt_tokens=10, completion_tokens=20, cached_tokens=0,
        reasoning_tokens=0, usage_estimated=False, cost=cost, error_type=None, ttft_ms=12.5,
        duration_ms=40.0, cancelled=False, created_at=time.time(),
    )
    values.update(fields)
    return RequestRecord(**values)


@asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A side channel into the database, on a connection of its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), args or None).fetchall()


async def balance(store: PostgresStore, key_id: str) -> int | None:
    found = await store.find_key(key_id)
    assert found is not None
    return found.balance


# -- migrations ---------------------------------------------------------------------------


async def test_migrations_apply_once_and_match_the_fields(postgres_db: str) -> None:
    store = PostgresStore(postgres_db)
    try:
        assert await store.migrate() == (0, len(MIGRATIONS))  # usable before open()
        await store.open()
        assert await store.migrate() == (len(MIGRATIONS), len(MIGRATIONS))
    finally:
        await store.aclose()
    async with opened(postgres_db) as again:
        assert await again.migrate() == (len(MIGRATIONS), len(MIGRATIONS))

    versions = query(postgres_db, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, len(MIGRATIONS) + 1))
    # Every attrs field has its column and no column lacks a field.
    for table, fields in (("api_keys", KEY_FIELDS), ("requests", RECORD_FIELDS),
                          ("reservations", RESERVATION_FIELDS), ("instances", INSTANCE_FIELDS)):
        columns = query(postgres_db, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_schema = 'public' AND table_name = %s", table)
        legacy = postgres.LEGACY_COLUMNS.get(table, set())
        assert {c for (c,) in columns} == set(fields) | legacy, table
    money = query(postgres_db, "SELECT table_name, column_name, data_type FROM "
                               "information_schema.columns WHERE column_name IN "
                               "('balance', 'cost', 'amount', 'served_cost')")
    assert {data_type for (_, _, data_type) in money} == {"bigint"}


async def test_stores_opening_at_once_migrate_exactly_once(postgres_db: str) -> None:
    stores = [PostgresStore(postgres_db, pool_size=1) for _ in range(8)]
    try:
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(store.open)
        results = []
        for store in stores:
            results.append(await store.migrate())
            assert await store.count_keys() == 0
    finally:
        for store in stores:
            await store.aclose()
    assert set(results) == {(len(MIGRATIONS), len(MIGRATIONS))}
    assert query(postgres_db, "SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


# -- credits under concurrency ------------------------------------------------------------


async def race_reserve(url: str, key_id: str, amount: int, stores: int) -> list[bool]:
    """``stores`` separate stores (one connection each) reserve ``amount`` at once."""
    opened_stores = [PostgresStore(url, pool_size=1) for _ in range(stores)]
    results: list[bool] = []
    try:
        for store in opened_stores:
            await store.open()
        start = trio.Event()

        async def one(store: PostgresStore, n: int) -> None:
            await start.wait()
            results.extend(await store.reserve([reservation(f"g{n}", key_id, amount)]))

        async with trio.open_nursery() as nursery:
            for n, store in enumerate(opened_stores):
                nursery.start_soon(one, store, n)
            await trio.sleep(0.05)  # every task parked on the event, then all go at once
            start.set()
    finally:
        for store in opened_stores:
            await store.aclose()
    return results


async def test_fifty_concurrent_reserves_admit_exactly_one(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", balance=1000))
        results = await race_reserve(postgres_db, "k1", 1000, stores=50)
        assert sorted(results) == [False] * 49 + [True]
        assert await balance(store, "k1") == 0
        assert len(await store.reservations()) == 1


async def test_concurrent_reserves_take_what_the_balance_covers(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", balance=1050))
        results = await race_reserve(postgres_db, "k1", 100, stores=50)
        assert results.count(True) == 10
        assert await balance(store, "k1") == 50
        held = await store.reservations()
        assert sum(r.amount for r in held) == 1000


async def test_batches_locking_keys_in_opposite_orders_all_commit(postgres_db: str) -> None:
    """Key-id ordering inside each transaction: crossing batches cannot deadlock (and a
    deadlock would be retried rather than surface as StoreUnavailable)."""
    keys = [f"k{n}" for n in range(6)]
    async with opened(postgres_db) as setup:
        for key_id in keys:
            await setup.add_key(key(key_id, balance=1_000_000))
    stores = [PostgresStore(postgres_db, pool_size=1) for _ in range(10)]
    try:
        for store in stores:
            await store.open()

        async def churn(n: int, store: PostgresStore) -> None:
            order = keys if n % 2 else keys[::-1]
            for round_ in range(10):
                ids = [f"g{n}-{round_}-{k}" for k in order]
                admitted = await store.reserve(
                    [reservation(g, k, 10) for g, k in zip(ids, order, strict=True)]
                )
                assert admitted == [True] * len(order)
                await store.settle(
                    [Settlement(record(g, k, 7)) for g, k in zip(ids, order, strict=True)]
                )

        async with trio.open_nursery() as nursery:
            for n, store in enumerate(stores):
                nursery.start_soon(churn, n, store)
    finally:
        for store in stores:
            await store.aclose()
    async with opened(postgres_db) as check:
        for key_id in keys:
            # 10 stores x 10 rounds, each charged 7 of a 10 held.
            assert await balance(check, key_id) == 1_000_000 - 100 * 7
        assert await check.reservations() == []
        assert len(await check.records()) == 10 * 10 * len(keys)


async def test_batch_results_come_back_in_batch_order(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.add_key(key("b-rich", balance=500))
        await store.add_key(key("a-poor", balance=5))
        await store.add_key(key("c-free"))
        await store.add_key(key("d-revoked", balance=500, revoked=True))
        batch = [
            reservation("g1", "b-rich", 100),
            reservation("g2", "a-poor", 100),
            reservation("g3", "c-free", 0),
            reservation("g4", "missing", 1),
            reservation("g5", "d-revoked", 1),
            reservation("g6", "a-poor", 5),
        ]
        assert await store.reserve(batch) == [True, False, True, False, False, True]
        assert [r.generation_id for r in await store.reservations()] == ["g1", "g3", "g6"]
        assert await balance(store, "b-rich") == 400
        assert await balance(store, "a-poor") == 0
        assert await balance(store, "c-free") is None


# -- settle -------------------------------------------------------------------------------


async def test_settle_is_idempotent_and_floors_at_zero(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", balance=1000))
        assert await store.reserve([reservation("g1", "k1", 300)]) == [True]
        assert await balance(store, "k1") == 700

        settled = Settlement(record("g1", "k1", 120))
        await store.settle([settled])
        assert await balance(store, "k1") == 880
        await store.settle([settled])  # again: nothing changes
        await store.settle([attrs.evolve(settled, record=record("g1", "k1", 999))])
        assert await balance(store, "k1") == 880
        assert await store.reservations() == []
        assert [r.cost for r in await store.records(key_id="k1")] == [120]

        # No reservation (reconciled elsewhere): the cost is charged, floored at zero.
        await store.settle([Settlement(record("g2", "k1", 5000))])
        assert await balance(store, "k1") == 0
        assert await store.record("g2") is not None


async def test_records_filter_by_equality_including_null(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.settle([
            Settlement(record("g1", "k1", 1, error_type=None, ttft_ms=None)),
            Settlement(record("g2", "k1", 2, status="upstream_error",
                              error_type="upstream_error", http_status=502)),
            Settlement(record("g3", "k2", 3)),
        ])
        assert [r.generation_id for r in await store.records(error_type=None)] == ["g1", "g3"]
        assert [r.generation_id for r in await store.records(key_id="k1", http_status=502)] \
            == ["g2"]
        found = await store.record("g1")
        assert found is not None and found.ttft_ms is None and found.stream is True
        with pytest.raises(ValueError):
            await store.records(**{"key_id = key_id OR 1=1 --": "x"})


async def test_keys_policy_and_top_up(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", models=("a", "b"), rpm=60))
        await store.add_key(key("k2", balance=10))
        assert await store.count_keys() == 2
        found = await store.find_key("k1")
        assert found is not None and found.models == ("a", "b") and found.rpm == 60
        with pytest.raises(NotMetered):
            await store.top_up("k1", 100)
        assert await store.top_up("nope", 100) is None
        topped = await store.top_up("k2", 2**40)  # BIGINT: more than 32 bits of micro-units
        assert topped is not None and topped.balance == 10 + 2**40
        topped = await store.top_up("k2", -(2**41))
        assert topped is not None and topped.balance == 0
        updated = await store.update_key("k1", {"models": (), "revoked": True, "tpm": 5})
        assert updated is not None and updated.models == () and updated.revoked
        assert updated.tpm == 5
        assert await store.update_key("nope", {"rpm": 1}) is None
        with pytest.raises(ValueError):
            await store.update_key("k1", {"hash": "x"})
        assert [k.id for k in await store.list_keys()] == ["k1", "k2"]


async def test_instances_heartbeat_upserts(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        first = Instance(id="i1", host="h", pid=1, started_at=1.0, heartbeat_at=1.0)
        await store.heartbeat(first)
        await store.heartbeat(attrs.evolve(first, heartbeat_at=2.0))
        assert await store.instances() == [attrs.evolve(first, heartbeat_at=2.0)]
        await store.forget_instance("i1")
        assert await store.instances() == []


# -- failures -----------------------------------------------------------------------------


async def test_unreachable_server_is_unavailable_quickly() -> None:
    port = free_port()  # bound and released: nothing listens there now
    url = f"postgresql://arouter:hunter2-secret@127.0.0.1:{port}/arouter"
    store = PostgresStore(url)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert time.monotonic() - start < 5
    assert "hunter2" not in str(caught.value) and str(port) not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no driver text
    with pytest.raises(StoreUnavailable):
        await store.count_keys()  # a store that failed to open stays closed
    assert "hunter2" not in repr(store)


async def test_a_killed_connection_is_replaced(postgres_db: str) -> None:
    async with opened(postgres_db, pool_size=2) as store:
        await store.add_key(key("k1"))
        mine = await store._run(lambda conn: conn.info.backend_pid)
        query(postgres_db, "SELECT pg_terminate_backend(%s)", mine)
        # The dead connection fails one call at most, and is not pooled again.
        outcomes: list[int | StoreUnavailable] = []
        for _ in range(3):
            try:
                outcomes.append(await store.count_keys())
            except StoreUnavailable as exc:
                outcomes.append(exc)
        assert isinstance(outcomes[0], StoreUnavailable)  # fails closed, once
        assert outcomes[1:] == [1, 1]
        pids = await store._run(lambda conn: conn.info.backend_pid)
        assert pids != mine


async def test_a_process_of_the_previous_version_still_reserves_after_the_migration(
    postgres_db: str,
) -> None:
    """A rolling upgrade: the old code's INSERT names prompt_cost, and the new one's not."""
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", balance=100))
        query(postgres_db, "INSERT INTO reservations (generation_id, key_id, amount, instance, "
                           "model, deployment, client_dialect, upstream_dialect, stream, "
                           "prompt_tokens, prompt_cost, created_at) VALUES ('old', 'k1', 10, "
                           "'i0', 'm', 'p/m', 'openai', 'openai', true, 5, 3, 1.0) RETURNING 1")
        assert await store.reserve([reservation("new", "k1", 10)]) == [True]
        assert {r.generation_id for r in await store.reservations()} == {"old", "new"}


async def test_connections_carry_server_side_timeouts(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        def show(conn: psycopg.Connection[Any]) -> Any:
            return [conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                    for name in ("statement_timeout", "lock_timeout",
                                 "idle_in_transaction_session_timeout")]

        assert await store._run(show) == ["10s", "5s", "30s"]

        def keepalive(conn: psycopg.Connection[Any]) -> Any:
            return [conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                    for name in ("tcp_keepalives_idle", "tcp_user_timeout")]

        # Over TCP the server's side of the socket gives up on a dead client host too.
        assert await store._run(keepalive) == ["5", "15000"]  # the test server is on TCP


async def test_a_blocked_statement_times_out_and_the_store_recovers(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(postgres.SESSION_SETTINGS, "statement_timeout", "200")
    async with opened(postgres_db) as store:
        await store.add_key(key("k1", balance=100))
        # Another session holds the key's row lock and never lets go (until we say so).
        with psycopg.connect(postgres_db) as blocker:
            blocker.execute("SELECT 1 FROM api_keys WHERE id = 'k1' FOR UPDATE")
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="a statement timed out"):
                await store.reserve([reservation("g1", "k1", 10)])
            assert time.monotonic() - start < 2
            blocker.rollback()
        assert await store.reserve([reservation("g1", "k1", 10)]) == [True]
        assert await balance(store, "k1") == 90


async def test_a_liveness_claim_is_held_by_its_session_and_freed_with_it(
    postgres_db: str,
) -> None:
    me, other = Instance("me", "h1", 1, 0.0, 0.0), Instance("other", "h2", 2, 0.0, 0.0)
    async with opened(postgres_db) as store, opened(postgres_db) as peer:
        assert await store.claimed(["me", "other"]) == set()
        assert await store.claim(me) is False  # taken now
        assert await store.claim(me) is True  # held since, without a break
        assert await peer.claim(other) is False
        assert await store.claimed(["me", "other", "nobody"]) == {"me", "other"}
        # The server ends the session (a restart, a killed process): the claim is free at
        # once, and the next renewal takes it back, saying there was a break.
        query(postgres_db, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                           "locktype = 'advisory' AND classid = %s AND objid = %s",
              *postgres.liveness_key("other"))
        with trio.fail_after(5):
            while "other" in (await store.claimed(["other"]) or set()):  # noqa: ASYNC110
                await trio.sleep(0.01)  # the server's doing
        assert await peer.claim(other) is False
        assert await peer.claim(other) is True
    # Closing the store ends its session: its claim goes with it.
    async with opened(postgres_db) as store:
        assert await store.claimed(["me", "other"]) == set()


async def test_a_frozen_server_gives_a_fast_error_to_reads(postgres_db: str) -> None:
    async with opened(postgres_db) as store:
        store._timeout = 0.3
        await store.add_key(key("k1"))
        # A lock nobody releases (for longer than the read's deadline) stands in for a
        # server that answers nothing: the read gives up on its own clock.
        with psycopg.connect(postgres_db) as blocker:
            blocker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.3 s"):
                await store.find_key("k1")
            assert time.monotonic() - start < 2
            blocker.rollback()
        assert await store.find_key("k1") is not None  # and it recovers


async def test_an_unreachable_server_is_described_in_words(postgres_db: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = PostgresStore(f"postgresql://arouter:s3cret-pw@127.0.0.1:{port}/x")
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    message = info.value.message
    assert message == "the store is unavailable: PostgreSQL could not be reached"
    assert "s3cret" not in message and not re.search(r"[A-Z][a-z]+Error", message)


async def test_closed_store_fails_closed(postgres_db: str) -> None:
    store = PostgresStore(postgres_db)
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.count_keys()
    await store.open()
    await store.open()  # idempotent
    assert await store.count_keys() == 0
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.find_key("k1")
    await store.aclose()


def test_missing_binaries_skip_unless_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pg_server, "find_binary", lambda name: None)
    monkeypatch.delenv("AROUTER_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pg_server.PostgresUnavailable):
        pg_server.PostgresServer()
    with pytest.raises(pytest.skip.Exception):
        pg_server._unavailable("no binaries")
    monkeypatch.setenv("AROUTER_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="AROUTER_REQUIRE_SERVICES"):
        pg_server._unavailable("no binaries")


async def test_a_bounded_pool_serves_many_callers(postgres_db: str) -> None:
    async with opened(postgres_db, pool_size=2) as store:
        await store.add_key(key("k1", balance=10_000))
        results: list[bool] = []

        async def one(n: int) -> None:
            results.extend(await store.reserve([reservation(f"g{n}", "k1", 10)]))

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(one, n)
        assert results == [True] * 40
        assert await balance(store, "k1") == 10_000 - 400
        backends = query(postgres_db, "SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = 'arouter'")
        assert backends[0][0] <= 2
