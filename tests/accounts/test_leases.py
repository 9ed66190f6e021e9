"""Credit leases (``gateway/accounts/leases.py``) against a real store and ledger: admission
without a store call, no overspend across processes, and credit given back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from gateway.accounts.leases import Leases
from gateway.accounts.ledger import Ledger
from gateway.store.base import Store
from gateway.store.rows import Batch, LeaseTake, Settlement
from gateway.store.sqlite import SqliteStore
from tests.support.clocks import FakeClock
from tests.support.rows import balance, make_key, record, reservation


@attrs.define
class Counted:
    """A store whose commits are counted: the round trips admission makes."""

    store: Store
    commits: int = 0

    async def commit(self, batch: Batch) -> list[int]:
        self.commits += 1
        return await self.store.commit(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "arouter.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


LedgerFactory = Callable[[], Ledger]


@pytest.fixture
def ledger(store: SqliteStore, nursery: trio.Nursery) -> Callable[[], Any]:
    """Starts a ledger over a counted view of the store; several = several processes."""

    async def start() -> tuple[Ledger, Counted]:
        counted = Counted(store)
        made = Ledger(counted)  # type: ignore[arg-type]
        await nursery.start(made.run)
        return made, counted

    return start


async def test_a_busy_key_is_admitted_with_no_store_call_after_its_first_take(
    store: SqliteStore, ledger: Any
) -> None:
    key = await make_key(store, balance=1_000_000)
    made, counted = await ledger()
    leases = Leases(made, "i1", slice_requests=32)
    assert await leases.hold(key.id, 1000)  # the first take
    assert counted.commits == 1
    for _ in range(20):  # then everything in memory, settle included
        assert await leases.hold(key.id, 1000)
        leases.release(key.id, 1000, 300)
    assert counted.commits == 1
    assert leases.holding(key.id) == 32_000 - 20 * 300
    # The store moved exactly that much out of the balance; reading the key counts it.
    assert (await store.leases())[0].amount == 32_000
    assert await balance(store, key) == 1_000_000


async def test_fifty_parallel_holds_against_a_balance_for_one_admit_one_in_few_trips(
    store: SqliteStore, ledger: Any
) -> None:
    key = await make_key(store, balance=1000)
    made, counted = await ledger()
    leases = Leases(made, "i1")
    admitted: list[bool] = []

    async def one() -> None:
        admitted.append(await leases.hold(key.id, 1000))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert sorted(admitted) == [False] * 49 + [True]
    assert counted.commits <= 3  # one take that got it, one that found it dry


async def test_two_processes_never_admit_more_than_the_balance(
    store: SqliteStore, ledger: Any
) -> None:
    """Random request sizes from two processes at once, some settling as they go: the
    credit reserved in flight plus what was spent never exceeds the balance."""
    rng = random.Random(16)
    start = 200_000
    key = await make_key(store, balance=start)
    processes = [Leases((await ledger())[0], f"i{n}", slice_requests=8) for n in range(2)]
    spent = in_flight = peak = 0

    async def client(leases: Leases, seed: int) -> None:
        nonlocal spent, in_flight, peak
        mine = random.Random(seed)
        for _ in range(60):
            amount = mine.randrange(500, 5000)
            if not await leases.hold(key.id, amount):
                await trio.lowlevel.checkpoint()
                continue
            in_flight += amount
            peak = max(peak, spent + in_flight)
            await trio.sleep(mine.random() / 1000)
            cost = mine.randrange(0, amount + 1)
            leases.release(key.id, amount, cost)
            in_flight -= amount
            spent += cost

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(client, processes[n % 2], rng.random())
    assert peak <= start
    assert spent > start // 2  # the balance was really contended


async def test_a_short_lease_gives_back_what_no_request_holds(
    store: SqliteStore, ledger: Any
) -> None:
    key = await make_key(store, balance=10_000)
    made, _ = await ledger()
    leases = Leases(made, "i1", slice_requests=32)
    assert await leases.hold(key.id, 1000)  # wants 32 000: gets a quarter, short
    assert leases.holding(key.id) == 2_500
    made.record(Settlement(record(key, "g1", 400), lease="i1"))
    leases.release(key.id, 1000, 400)
    assert leases.holding(key.id) == 0  # all of it given back at once
    await made.aclose()
    assert [x.amount for x in await store.leases()] == [0]
    assert await balance(store, key) == 10_000 - 400


async def test_an_idle_lease_is_given_back_whole(store: SqliteStore, ledger: Any) -> None:
    key = await make_key(store, balance=1_000_000)
    made, _ = await ledger()
    clock = FakeClock()
    leases = Leases(made, "i1", idle_after=60.0, clock=clock)
    assert await leases.hold(key.id, 1000)
    leases.release(key.id, 1000, 250)
    clock.advance(59)
    leases.sweep()
    assert leases.holding(key.id) > 0  # in use a minute ago
    clock.advance(2)
    leases.sweep()
    assert leases.holding(key.id) == 0
    await made.aclose()
    assert await store.leases() == []
    assert await balance(store, key) == 1_000_000


async def test_a_settlement_charges_the_lease_in_the_store_as_in_memory(
    store: SqliteStore, ledger: Any
) -> None:
    key = await make_key(store, balance=1_000_000)
    made, _ = await ledger()
    leases = Leases(made, "i1")
    assert await leases.hold(key.id, 5000)
    made.record(attrs.evolve(reservation(key, 5000, "g1"), leased=True))
    leases.release(key.id, 5000, 1234)
    made.record(Settlement(record(key, "g1", 1234), lease="i1"))
    await made.aclose()
    [lease] = await store.leases()
    assert lease.amount == leases.holding(key.id)
    assert await store.reservations() == []
    assert await balance(store, key) == 1_000_000 - 1234


async def test_a_take_moves_a_share_of_the_balance_and_exactly_the_need_at_the_end(
    store: SqliteStore,
) -> None:
    key = await make_key(store, balance=100_000)
    take = LeaseTake(key.id, "i1", want=10_000, minimum=2_000)
    granted = [(await store.commit(Batch(takes=[take])))[0] for _ in range(40)]
    # All it wants while that is at most a quarter of the balance...
    assert granted[:7] == [10_000] * 7  # 100 000 down to 30 000
    assert granted[7] == 7_500  # ...then a quarter of what is left...
    assert granted == sorted(granted, reverse=True)
    # ...down to exactly what the waiting request needs, then nothing at all.
    assert granted.count(2_000) >= 2 and granted[-1] == 0
    leased = sum(x.amount for x in await store.leases())
    assert leased == sum(granted) and 100_000 - leased < 2_000
    assert await balance(store, key) == 100_000  # as read, a key's leases are its credit
