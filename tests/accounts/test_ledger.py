"""The group commit: batches, failures that never kill the writer, and nothing stranded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.accounts.ledger import GroupCommit, Ledger
from gateway.canonical import Usage
from gateway.errors import StoreUnavailable
from gateway.store.rows import Settlement
from gateway.store.sqlite import SqliteStore
from tests.support.rows import make_key, record, reservation


async def test_a_batch_that_raises_anything_fails_its_waiters_and_the_writer_goes_on(
    nursery: trio.Nursery,
) -> None:
    failed: list[list[int]] = []

    async def apply(batch: Sequence[int]) -> list[int]:
        await trio.lowlevel.checkpoint()
        if 13 in batch:
            raise OverflowError("a value no column holds")
        return [n * 2 for n in batch]

    async def note(items: list[int]) -> None:
        failed.append(items)

    commit: GroupCommit[int, int] = GroupCommit(apply, on_failure=note)
    await nursery.start(commit.run)
    with pytest.raises(StoreUnavailable):
        await commit.submit(13)
    assert failed == [[13]]
    assert await commit.submit(4) == 8  # still writing
    await commit.aclose()
    with pytest.raises(StoreUnavailable):
        await commit.submit(1)


async def test_items_pending_when_the_writer_stops_fail_at_once() -> None:
    failed: list[list[int]] = []

    async def apply(batch: Sequence[int]) -> list[int]:
        await trio.sleep_forever()
        raise AssertionError

    async def note(items: list[int]) -> None:
        failed.append(items)

    commit: GroupCommit[int, int] = GroupCommit(apply, on_failure=note)
    outcomes: list[str] = []

    async def wait(n: int) -> None:
        try:
            await commit.submit(n)
        except StoreUnavailable:
            outcomes.append("failed")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            writer = trio.CancelScope()

            async def run() -> None:
                with writer:
                    await commit.run()

            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait, 1)  # taken into the batch that never ends
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait, 2)  # still pending
            await trio.testing.wait_all_tasks_blocked()
            writer.cancel()
    assert outcomes == ["failed", "failed"]
    assert sorted(n for batch in failed for n in batch) == [1, 2]


async def test_a_failed_settlement_is_kept_and_settled_by_the_retry(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    key = await make_key(store, balance=1000)
    await store.reserve([reservation(key, 600, "g1")])
    ledger = Ledger(store)
    await nursery.start(ledger.run)
    await store.aclose()  # the database goes away
    with pytest.raises(StoreUnavailable):
        await ledger.settle(Settlement(record(key, "g1", cost=100)))
    assert [s.record.generation_id for s in ledger.unsettled] == ["g1"]
    await store.open()  # and comes back
    assert await ledger.retry_unsettled() == 1
    assert ledger.unsettled == []
    assert (await store.find_key(key.id)).balance == 900  # type: ignore[union-attr]
    await ledger.aclose()
    await store.aclose()


async def test_an_unmetered_key_holds_nothing_whatever_admission_asked(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        key = await make_key(store)
        assert await store.reserve([reservation(key, 600, "g1")]) == [True]
        [held] = await store.reservations()
        assert held.amount == 0
        # A balance set meanwhile gets nothing back that was never taken.
        await store.update_key(key.id, {"balance": 50})
        await store.settle([Settlement(record(key, "g1", cost=10))])
        assert (await store.find_key(key.id)).balance == 40  # type: ignore[union-attr]
    finally:
        await store.aclose()


def test_upstream_usage_counts_are_clamped() -> None:
    usage = Usage(prompt_tokens=10**19, completion_tokens=-5)
    assert (usage.prompt_tokens, usage.completion_tokens) == (10**9, 0)




# -- a waiter that gives up -------------------------------------------------------------------


async def test_a_withdrawn_item_not_yet_in_a_batch_is_never_written(
    nursery: trio.Nursery,
) -> None:
    written: list[int] = []
    gate = trio.Event()

    async def apply(batch: Sequence[int]) -> list[int]:
        await gate.wait()  # the store is frozen
        written.extend(batch)
        return list(batch)

    commit: GroupCommit[int, int] = GroupCommit(apply)
    await nursery.start(commit.run)
    nursery.start_soon(commit.submit, 1)  # the batch in flight
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(0.01):
        await commit.submit(2, withdraw=True)  # queued behind it, then given up
    gate.set()
    assert await commit.submit(3) == 3
    assert written == [1, 3]


async def test_a_reservation_abandoned_in_flight_is_released_once_written(
    tmp_path: Path, nursery: trio.Nursery,
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    key = await make_key(store, balance=1000)
    gate = trio.Event()
    commit = store.commit

    batches: list[tuple[Any, list[bool]]] = []

    async def frozen_then_slow(batch: Any) -> list[bool]:
        await gate.wait()
        result = await commit(batch)
        batches.append((batch, result))
        return result

    store.commit = frozen_then_slow  # type: ignore[method-assign]
    ledger = Ledger(store)
    await nursery.start(ledger.run)
    # Admission's deadline passes while its batch is being written (the store hangs).
    with trio.move_on_after(0.05):
        await ledger.reserve(reservation(key, 600, "g1"))
    assert (await store.find_key(key.id)).balance == 1000  # type: ignore[union-attr]
    gate.set()  # the store answers: g1 was reserved, but its request got a 503
    with trio.fail_after(5):
        while len(batches) < 2:  # noqa: ASYNC110  # the writer's second batch
            await trio.sleep(0.001)
    (first, admitted), (second, _) = batches
    assert [r.generation_id for r in first.reservations] == ["g1"] and admitted == [True]
    assert [r.generation_id for r in second.releases] == ["g1"]  # given back
    assert (await store.find_key(key.id)).balance == 1000  # type: ignore[union-attr]
    assert await store.reservations() == []
    assert await store.records() == []  # a release writes no ledger row
    await ledger.aclose()
    await store.aclose()
