"""Group commit for the store's hot writes: reservations at admission, settlements at the end.

Requests hand their item to ``Ledger.reserve`` / ``Ledger.settle`` and wait until the batch
that holds it is committed, so "reserved" and "settled" still mean "written"; but under
load a hundred requests cost one transaction and one thread hop instead of a hundred.

Rules:
- One writer task per kind, owned by the app's lifespan nursery; ``aclose`` lets each flush
  what is pending, then they return.
- A waiter that is cancelled does not take its item back: the item stays in its batch and
  is written anyway. Admission therefore waits for its reservation shielded (it must know
  whether credits are held), and a settle that runs out of time is still written.
- A failed batch fails every waiter on it, with the store's own error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs
import trio

from gateway.errors import GatewayError
from gateway.store.base import Reservation, Settlement, Store

Item = TypeVar("Item")
Result = TypeVar("Result")


@attrs.define(eq=False)
class _Ticket:
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: GatewayError | None = None


class GroupCommit(Generic[Item, Result]):
    """Batches items for ``apply`` (one transaction per batch); results in item order."""

    def __init__(self, apply: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._apply = apply
        self._pending: list[tuple[Item, _Ticket]] = []
        self._wake = trio.Event()
        self._closing = False
        self._finished = trio.Event()

    async def submit(self, item: Item) -> Result:
        """Return ``item``'s result once its batch is committed, or raise the batch's error."""
        if self._finished.is_set() or self._closing:
            raise GatewayError("the ledger is closed")
        ticket = _Ticket()
        self._pending.append((item, ticket))
        self._wake.set()
        await ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        result: Result = ticket.result
        return result

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while self._pending or not self._closing:
                if not self._pending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    # One scheduler pass more gathers every item submitted in this pass:
                    # a SQLite transaction costs ~240 us whatever its size, a row ~30 us.
                    await trio.lowlevel.checkpoint()
                    continue
                batch, self._pending = self._pending, []
                try:
                    results = await self._apply([item for item, _ in batch])
                    for (_, ticket), result in zip(batch, results, strict=True):
                        ticket.result = result
                except GatewayError as exc:
                    for _, ticket in batch:
                        ticket.error = exc
                finally:
                    for _, ticket in batch:
                        ticket.done.set()
        finally:
            self._finished.set()

    async def aclose(self) -> None:
        """Flush what is pending and stop the writer."""
        self._closing = True
        self._wake.set()
        await self._finished.wait()


class Ledger:
    """The store's reservations and settlements, each group-committed by its own task."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reserve: GroupCommit[Reservation, bool] = GroupCommit(store.reserve)
        self._settle: GroupCommit[Settlement, None] = GroupCommit(self._settle_batch)

    async def _settle_batch(self, batch: Sequence[Settlement]) -> list[None]:
        await self.store.settle(batch)
        return [None] * len(batch)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._reserve.run)
            await nursery.start(self._settle.run)
            task_status.started()

    async def reserve(self, reservation: Reservation) -> bool:
        return await self._reserve.submit(reservation)

    async def settle(self, settlement: Settlement) -> None:
        await self._settle.submit(settlement)

    async def aclose(self) -> None:
        # Admissions stop first; settlements flush last, so every admitted request settles.
        await self._reserve.aclose()
        await self._settle.aclose()
