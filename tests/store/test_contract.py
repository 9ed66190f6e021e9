"""The store contract (``gateway/store/base.py``), run against every backend.

``sqlite`` is a file in the test's temp folder; ``postgres`` is a fresh database on the real
server ``tests/pg_server.py`` starts. The same assertions hold for both.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import attrs
import pytest
import trio

from gateway.accounts.liveness import Liveness, beat, new_instance, reconcile
from gateway.errors import NotMetered, StoreUnavailable
from gateway.store.base import Store
from gateway.store.rows import (
    ApiKey,
    Batch,
    Checkpoint,
    Instance,
    Release,
    Reservation,
    Settlement,
    StoredResponse,
)
from gateway.store.sqlite import SqliteStore
from tests.support.rows import balance, make_key, record, reservation

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes (unopened) stores on one backend's database: several = several processes."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "arouter.db")
    from gateway.store.postgres import PostgresStore

    url = request.getfixturevalue("postgres_db")
    return lambda: PostgresStore(url)


@pytest.fixture
async def store(new_store: StoreFactory) -> AsyncIterator[Store]:
    opened = new_store()
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


# -- schema -------------------------------------------------------------------------------


async def test_migrations_apply_once_and_are_idempotent(new_store: StoreFactory) -> None:
    first, second = new_store(), new_store()
    try:
        await first.open()
        before, after = await first.migrate()
        assert before == after and after >= 1  # open() applied everything already
        await second.open()  # reopening an up-to-date schema changes nothing
        assert await second.migrate() == (after, after)
    finally:
        await first.aclose()
        await second.aclose()


# -- keys ---------------------------------------------------------------------------------


async def test_a_key_round_trips_with_its_whole_policy(store: Store) -> None:
    row = await make_key(store, balance=5_000_000, rpm=60, tpm=100_000, max_concurrent=3,
                         models=("fast", "sim/echo"), expires_at=1_900_000_000.25)
    assert await store.find_key(row.id) == row
    bare = await make_key(store)
    assert await store.find_key(bare.id) == bare
    assert bare.balance is None and bare.models == () and bare.rpm is None
    assert await store.find_key("000000000000") is None
    assert {k.id for k in await store.list_keys()} == {row.id, bare.id}
    assert await store.count_keys() == 2


async def test_update_key_sets_and_clears_policy_fields(store: Store) -> None:
    row = await make_key(store, rpm=5)
    updated = await store.update_key(row.id, {"rpm": None, "tpm": 9, "models": ("a",),
                                              "name": "renamed", "revoked": True})
    assert updated == attrs.evolve(row, rpm=None, tpm=9, models=("a",), name="renamed",
                                   revoked=True)
    assert await store.find_key(row.id) == updated
    assert await store.update_key("000000000000", {"rpm": 1}) is None
    with pytest.raises(ValueError, match="hash"):
        await store.update_key(row.id, {"hash": "x"})


async def test_top_up_adds_floors_at_zero_and_refuses_unmetered_keys(store: Store) -> None:
    metered = await make_key(store, balance=100)
    assert (await store.top_up(metered.id, 50)).balance == 150  # type: ignore[union-attr]
    assert (await store.top_up(metered.id, -1000)).balance == 0  # type: ignore[union-attr]
    unmetered = await make_key(store)
    with pytest.raises(NotMetered):
        await store.top_up(unmetered.id, 10)
    assert await store.top_up("000000000000", 10) is None


# -- reservations -------------------------------------------------------------------------


async def test_reserve_takes_credits_only_when_they_cover_the_amount(store: Store) -> None:
    key = await make_key(store, balance=100)
    assert await store.reserve([reservation(key, 60, "g1")]) == [True]
    assert await balance(store, key) == 40
    assert await store.reserve([reservation(key, 41, "g2")]) == [False]
    assert await balance(store, key) == 40
    assert await store.reserve([reservation(key, 40, "g3")]) == [True]
    assert await balance(store, key) == 0
    assert {r.generation_id for r in await store.reservations()} == {"g1", "g3"}


async def test_a_batch_is_applied_in_order_and_answers_in_order(store: Store) -> None:
    rich = await make_key(store, balance=1000)
    poor = await make_key(store, balance=10)
    unmetered = await make_key(store)
    revoked = await make_key(store, balance=1000)
    await store.update_key(revoked.id, {"revoked": True})
    ghost = ApiKey(id="000000000000", hash="")
    batch = [
        reservation(poor, 10, "a"), reservation(rich, 600, "b"), reservation(poor, 1, "c"),
        reservation(unmetered, 0, "d"), reservation(rich, 600, "e"),
        reservation(revoked, 1, "f"), reservation(ghost, 0, "g"),
    ]
    assert await store.reserve(batch) == [True, True, False, True, False, False, False]
    assert await balance(store, rich) == 400
    assert await balance(store, poor) == 0
    assert await balance(store, unmetered) is None
    assert {r.generation_id for r in await store.reservations()} == {"a", "b", "d"}


async def test_reservations_are_listed_by_instance(store: Store) -> None:
    key = await make_key(store)
    await store.reserve([reservation(key, 0, "x", "one"), reservation(key, 0, "y", "two")])
    assert [r.generation_id for r in await store.reservations("two")] == ["y"]
    got = (await store.reservations("one"))[0]
    assert attrs.evolve(got, created_at=0) == attrs.evolve(
        reservation(key, 0, "x", "one"), created_at=0
    )


async def test_fifty_parallel_reservations_from_five_stores_admit_exactly_one(
    store: Store, new_store: StoreFactory
) -> None:
    key = await make_key(store, balance=1000)
    others = [new_store() for _ in range(5)]  # five connections: five "processes"
    results: list[bool] = []

    async def one(target: Store, n: int) -> None:
        results.extend(await target.reserve([reservation(key, 1000, f"g{n}")]))

    try:
        for other in others:
            await other.open()
        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(one, others[n % 5], n)
    finally:
        for other in others:
            await other.aclose()
    assert sorted(results) == [False] * 49 + [True]
    assert await balance(store, key) == 0
    assert len(await store.reservations()) == 1


# -- settlement ---------------------------------------------------------------------------


async def test_settle_writes_the_row_and_returns_the_unspent_reservation(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    row = record(key, "g1", cost=250)
    await store.settle([Settlement(row)])
    assert await balance(store, key) == 750  # 1000 - 600 + (600 - 250)
    assert await store.reservations() == []
    assert await store.record("g1") == row
    assert await store.records(key_id=key.id, status="ok") == [row]
    assert await store.records(status="partial") == []


async def test_settle_is_idempotent_per_generation(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    first = record(key, "g1", cost=250)
    await store.settle([Settlement(first)])
    await store.settle([Settlement(record(key, "g1", cost=1, status="partial"))])
    await store.settle([Settlement(first), Settlement(first)])
    assert await balance(store, key) == 750
    assert await store.records() == [first]


async def test_an_overrun_floors_the_balance_at_zero(store: Store) -> None:
    key = await make_key(store, balance=100)
    await store.reserve([reservation(key, 100, "g1")])
    await store.settle([Settlement(record(key, "g1", cost=500))])
    assert await balance(store, key) == 0
    assert (await store.record("g1")).cost == 500  # type: ignore[union-attr]  # the truth


async def test_a_settlement_without_a_reservation_charges_its_cost(store: Store) -> None:
    key = await make_key(store, balance=100)
    await store.settle([Settlement(record(key, "g1", cost=30))])
    assert await balance(store, key) == 70


async def test_an_unmetered_key_keeps_no_balance(store: Store) -> None:
    key = await make_key(store)
    await store.reserve([reservation(key, 0, "g1")])
    await store.settle([Settlement(record(key, "g1", cost=99))])
    assert await balance(store, key) is None
    assert (await store.record("g1")).cost == 99  # type: ignore[union-attr]


async def test_an_open_reservation_is_found_by_its_generation(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    found = await store.reservation("g1")
    assert found is not None and (found.key_id, found.amount) == (key.id, 600)
    await store.settle([Settlement(record(key, "g1", cost=250))])
    assert await store.reservation("g1") is None


async def test_records_refuse_unknown_fields(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.records(nonsense=1)
    assert await store.record("nope") is None


# -- instances and reconciliation -----------------------------------------------------------


async def test_heartbeat_inserts_then_refreshes(store: Store) -> None:
    me = Instance("i1", "host", 1, 10.0, 10.0)
    await store.heartbeat(me)
    await store.heartbeat(attrs.evolve(me, heartbeat_at=20.0))
    assert await store.instances() == [attrs.evolve(me, heartbeat_at=20.0)]
    await store.forget_instance("i1")
    assert await store.instances() == []


async def test_reconcile_settles_what_dead_instances_left_open(store: Store) -> None:
    key = await make_key(store, balance=1000)
    me = new_instance()
    liveness = Liveness(me, stale_after=30.0)
    await beat(store, liveness)
    now = time.time()
    live = Instance("live", me.host, os.getpid(), now - 5, now,  # this very process
                    pid_start=me.pid_start)
    # A process on this host that no longer exists is dead at once, however fresh its beat.
    gone_pid = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100_000
    crashed = Instance("crashed", me.host, gone_pid, now, now)
    for instance in (live, crashed):
        await store.heartbeat(instance)
    await store.reserve([
        reservation(key, 100, "c1", "crashed"), reservation(key, 100, "c2", "crashed"),
        reservation(key, 100, "l1", "live"), reservation(key, 100, "m1", me.id),
    ])
    # c2 had streamed: its last checkpoint is what a crash charges.
    await store.commit(Batch(checkpoints=[Checkpoint("c2", "p/served", "anthropic", 12, 34)]))
    assert await balance(store, key) == 600
    freed: list[str] = []

    async def on_orphans(orphans: Sequence[Reservation]) -> None:
        freed.extend(r.generation_id for r in orphans)

    assert await reconcile(store, liveness, on_orphans) == 2

    assert sorted(freed) == ["c1", "c2"]
    assert {r.generation_id for r in await store.reservations()} == {"l1", "m1"}
    silent = await store.record("c1")
    assert silent is not None and silent.status == "interrupted" and silent.usage_estimated
    # No checkpoint: no output known of, and no output is free.
    assert (silent.cost, silent.prompt_tokens, silent.completion_tokens) == (0, 0, 0)
    streamed = await store.record("c2")
    assert streamed is not None and streamed.status == "interrupted"
    assert (streamed.cost, streamed.prompt_tokens, streamed.completion_tokens) == (34, 10, 12)
    assert (streamed.deployment, streamed.upstream_dialect) == ("p/served", "anthropic")
    assert await balance(store, key) == 600 + 100 + (100 - 34)
    assert {i.id for i in await store.instances()} == {me.id, "live"}
    assert await reconcile(store, liveness) == 0  # nothing twice


async def test_a_real_settlement_replaces_an_interrupted_estimate_once(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    await store.commit(Batch(checkpoints=[Checkpoint("g1", "p/m", "openai", 5, 40)]))
    await store.settle([Settlement(record(key, "g1", cost=40, status="interrupted"))])
    assert await balance(store, key) == 960
    real = record(key, "g1", cost=250)  # the process was alive after all: its own row
    await store.settle([Settlement(real)])
    assert await store.records() == [real]
    assert await balance(store, key) == 750  # as if it had settled first
    # Exactly once: neither the real row again nor another estimate changes anything.
    await store.settle([Settlement(real)])
    await store.settle([Settlement(record(key, "g1", cost=1, status="interrupted"))])
    await store.settle([Settlement(record(key, "g1", cost=999, status="partial"))])
    assert await store.records() == [real]
    assert await balance(store, key) == 750


async def test_a_checkpoint_changes_nothing_once_settled(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    await store.commit(Batch(checkpoints=[Checkpoint("g1", "p/m", "openai", 5, 40)]))
    found = await store.reservation("g1")
    assert found is not None and (found.completion_tokens, found.served_cost) == (5, 40)
    await store.settle([Settlement(record(key, "g1", cost=250))])
    await store.commit(Batch(checkpoints=[Checkpoint("g1", "p/m", "openai", 9, 90)]))
    assert await store.reservations() == [] and await balance(store, key) == 750


async def test_a_release_returns_the_whole_reservation_and_writes_no_row(store: Store) -> None:
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    await store.commit(Batch(releases=[Release("g1")]))
    await store.commit(Batch(releases=[Release("g1"), Release("never")]))  # idempotent
    assert await balance(store, key) == 1000
    assert await store.reservations() == [] and await store.records() == []


async def test_an_unpriced_reservation_is_refused_to_a_metered_key(store: Store) -> None:
    metered = await make_key(store, balance=1000)
    unmetered = await make_key(store)
    unpriced = attrs.evolve(reservation(metered, 0, "g1"), priced=False)
    assert await store.reserve([unpriced]) == [False]
    assert await store.reserve([attrs.evolve(unpriced, key_id=unmetered.id)]) == [True]
    assert await balance(store, metered) == 1000


# -- failure ------------------------------------------------------------------------------


# -- stored Responses API answers ---------------------------------------------------------


def stored(response_id: str, key_id: str = "k1", expires_at: float = 2e9) -> StoredResponse:
    return StoredResponse(id=response_id, key_id=key_id, created_at=1.0,
                          expires_at=expires_at, response=json.dumps({"id": response_id}),
                          input_items="[]", items='[{"type":"message"}]')


async def test_a_stored_response_is_the_key_s_own_until_it_expires(store: Store) -> None:
    await store.save_response(stored("resp_1"))
    await store.save_response(attrs.evolve(stored("resp_1"), items="[]"))  # never replaced
    assert await store.find_response("resp_1", "k1", 100.0) == stored("resp_1")
    assert await store.find_response("resp_1", "k2", 100.0) is None  # another key's
    assert await store.find_response("resp_1", "k1", 3e9) is None  # expired
    assert not await store.delete_response("resp_1", "k2")
    assert await store.delete_response("resp_1", "k1")
    assert await store.find_response("resp_1", "k1", 100.0) is None
    assert not await store.delete_response("resp_1", "k1")


async def test_purging_deletes_only_the_expired(store: Store) -> None:
    await store.save_response(stored("old", expires_at=10.0))
    await store.save_response(stored("new", expires_at=2e9))
    assert await store.purge_responses(100.0) == 1
    assert await store.find_response("new", "k1", 100.0) is not None


async def test_a_closed_store_is_unavailable(new_store: StoreFactory) -> None:
    closed = new_store()
    with pytest.raises(StoreUnavailable):
        await closed.find_key("000000000000")


async def test_one_commit_settles_first_then_reserves(store: Store) -> None:
    key = await make_key(store, balance=100)
    assert await store.reserve([reservation(key, 100, "g1")]) == [True]
    # The credits g1 returns (90) are there for g2 in the same transaction.
    admitted = await store.commit(Batch(
        reservations=[reservation(key, 80, "g2"), reservation(key, 80, "g3")],
        settlements=[Settlement(record(key, "g1", cost=10))]))
    assert admitted == [True, False]
    assert await balance(store, key) == 10
    assert [r.generation_id for r in await store.reservations()] == ["g2"]
