"""Group commit for the store's hot writes: reservations at admission, settlements at the
end, and the checkpoints and releases between.

Requests hand their item to ``Ledger.reserve`` / ``settle`` / ``checkpoint`` and wait until
the batch that holds it is committed, so "reserved" and "settled" still mean "written"; but
under load a hundred requests cost one transaction and one thread hop instead of a hundred.

Rules:
- One writer task, owned by the app's lifespan nursery; ``aclose`` lets it flush what is
  pending, then it returns. The writer waits for each batch however long the store takes
  (it must know what it wrote); the *waiters* are what deadlines bound.
- A settlement whose waiter is cancelled (the settle deadline) stays in its batch and is
  written anyway. A reservation (or checkpoint) whose waiter gives up is *withdrawn*: taken
  out if its batch has not started, else, once that batch has committed it, given back by a
  ``Release`` the writer queues itself. So admission can give up after its own deadline
  and answer 503 without leaving credits held by nobody.
- A failed batch fails every waiter on it, with the store's own error, and is handed to
  ``on_failure`` (settlements and releases: to be retried) whether or not anyone still waits.
- The writer never dies of a bad batch: any error becomes that batch's ``StoreUnavailable``.
  When it stops, every item still pending fails at once rather than waiting forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import attrs
import trio

from gateway.accounts.outbox import Outbox
from gateway.errors import GatewayError, StoreUnavailable
from gateway.store.base import Store
from gateway.store.rows import (
    Batch,
    Checkpoint,
    LeaseReturn,
    LeaseTake,
    Release,
    Reservation,
    Settlement,
)

log = logging.getLogger("arouter.ledger")

Item = TypeVar("Item")
Result = TypeVar("Result")


@attrs.define(eq=False)
class Ticket(Generic[Item]):
    """One item's way through the writer: ``done`` once its batch is written or failed
    (``error``)."""

    item: Item
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: GatewayError | None = None
    abandoned: bool = False  # its waiter gave up while its batch was being written


class GroupCommit(Generic[Item, Result]):
    """Batches items for ``apply`` (one transaction per batch); results in item order."""

    def __init__(
        self,
        apply: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        on_failure: Callable[[list[Item]], Awaitable[None]] | None = None,
        on_abandoned: Callable[[Item, Result], None] = lambda item, result: None,
    ) -> None:
        self._apply = apply
        self._on_failure = on_failure
        self._on_abandoned = on_abandoned
        self._pending: dict[Ticket[Item], None] = {}  # insertion order; O(1) withdrawal
        self._wake = trio.Event()
        self._closing = False
        self._finished = trio.Event()
        self.healthy = True  # whether the last batch was written
        self.writing_since: float | None = None  # when the batch being written began

    @property
    def closed(self) -> bool:
        return self._closing or self._finished.is_set()

    def enqueue(self, item: Item) -> Ticket[Item]:
        """Write ``item`` with the next batch; nobody waits for it (failures still go to
        ``on_failure``)."""
        if self._finished.is_set():
            raise StoreUnavailable("the ledger is closed")
        ticket: Ticket[Item] = Ticket(item)
        self._pending[ticket] = None
        self._wake.set()
        return ticket

    async def submit(self, item: Item, *, withdraw: bool = False) -> Result:
        """Return ``item``'s result once its batch is committed, or raise the batch's error.
        With ``withdraw``, a waiter that is cancelled takes its item back (see the rules)."""
        if self._finished.is_set() or self._closing:
            await self._failed([item])  # kept (settlements: the outbox), not dropped
            raise StoreUnavailable("the ledger is closed")
        ticket = Ticket(item)
        self._pending[ticket] = None
        self._wake.set()
        try:
            await ticket.done.wait()
        except BaseException:  # cancelled: re-raised below, after the item is taken back
            if withdraw:
                self._withdraw(ticket)
            raise
        if ticket.error is not None:
            raise ticket.error
        result: Result = ticket.result
        return result

    def _withdraw(self, ticket: Ticket[Item]) -> None:
        if ticket.done.is_set():  # written just as its waiter gave up
            if ticket.error is None:
                self._on_abandoned(ticket.item, ticket.result)
        elif ticket in self._pending:
            del self._pending[ticket]  # never written
        else:
            ticket.abandoned = True  # in the batch being written: the writer gives it back

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
                batch, self._pending = list(self._pending), {}
                error: GatewayError | None = None
                self.writing_since = trio.current_time()
                try:
                    results = await self._apply([ticket.item for ticket in batch])
                    self.healthy = True
                    for ticket, result in zip(batch, results, strict=True):
                        ticket.result = result
                        if ticket.abandoned:
                            self._on_abandoned(ticket.item, result)
                except GatewayError as exc:
                    error = exc
                except Exception:  # a bug or a bad value: fail the batch, not the writer
                    log.exception("a ledger batch failed")
                    error = StoreUnavailable("the ledger could not write a batch (see the log)")
                except BaseException:
                    error = StoreUnavailable("the ledger writer was cancelled")
                    raise
                finally:
                    self.writing_since = None
                    if error is not None:
                        self.healthy = False
                        for ticket in batch:
                            ticket.error = error
                        await self._failed([ticket.item for ticket in batch])
                    for ticket in batch:
                        ticket.done.set()
        finally:
            self._finished.set()
            stranded, self._pending = list(self._pending), {}
            for ticket in stranded:
                ticket.error = StoreUnavailable("the ledger is closed")
                ticket.done.set()
            if stranded:
                await self._failed([ticket.item for ticket in stranded])

    async def _failed(self, items: list[Item]) -> None:
        if self._on_failure is not None:
            # Shielded: this runs on the way out of a cancelled writer too, and what it
            # keeps (the outbox) is what makes the failure recoverable.
            with trio.CancelScope(shield=True):
                await self._on_failure(items)

    async def aclose(self) -> None:
        """Flush what is pending and stop the writer."""
        self._closing = True
        self._wake.set()
        await self._finished.wait()


# A batch this long in the writing makes the store suspect: admission then proves it first
# (waits for its own reservation row) rather than call an upstream for an answer that may
# have to be withheld. A healthy batch takes milliseconds, a slow disk's fsync tens.
SUSPECT_AFTER = 0.25

LedgerItem = Reservation | Settlement | Checkpoint | Release | LeaseTake | LeaseReturn


class Ledger:
    """The store's reservations, settlements, checkpoints and releases, group-committed
    together: one writer task, one transaction per scheduler pass whatever the mix
    (settlements first, so the credits they return are there for the reservations in the
    same pass).

    Settlements and releases whose batch failed wait in ``unsettled`` / ``unreleased`` for
    ``retry_unsettled`` (every heartbeat, and at shutdown); both are idempotent, so a retry
    is always safe."""

    def __init__(self, store: Store, outbox: Outbox | None = None) -> None:
        self.store = store
        self.outbox = outbox
        self.unsettled: list[Settlement] = []
        self.unreleased: list[Release] = []
        self._commit: GroupCommit[LedgerItem, int | None] = GroupCommit(
            self._apply, on_failure=self._failed, on_abandoned=self._abandoned)

    async def _apply(self, items: Sequence[LedgerItem]) -> list[int | None]:
        settlements = [item for item in items if isinstance(item, Settlement)]
        releases = [item for item in items if isinstance(item, Release)]
        ended = {s.record.generation_id for s in settlements}
        ended.update(r.generation_id for r in releases)
        # A leased request that ended within one batch of its admission: its row only
        # recorded it, and its settlement or release (applied first) would leave it behind.
        reservations = [item for item in items if isinstance(item, Reservation)
                        and not (item.leased and item.generation_id in ended)]
        takes = [item for item in items if isinstance(item, LeaseTake)]
        batch = Batch(
            reservations=reservations,
            settlements=settlements,
            checkpoints=[item for item in items if isinstance(item, Checkpoint)],
            releases=releases,
            takes=takes,
            returns=[item for item in items if isinstance(item, LeaseReturn)],
        )
        results = await self.store.commit(batch)
        by_item: dict[int, int] = dict(zip(map(id, [*reservations, *takes]), results,
                                           strict=True))
        return [by_item.get(id(item), 1 if isinstance(item, Reservation) else None)
                for item in items]

    def _abandoned(self, item: LedgerItem, result: int | None) -> None:
        if isinstance(item, Reservation) and result:
            # Held in the store for a request that was answered 503: give it all back.
            self._commit.enqueue(Release(item.generation_id))

    async def _failed(self, items: list[LedgerItem]) -> None:
        settlements = [item for item in items if isinstance(item, Settlement)]
        self.unsettled.extend(settlements)
        self.unreleased.extend(item for item in items if isinstance(item, Release))
        if self.outbox is not None and settlements:
            try:
                await self.outbox.append(settlements)
            except OSError:
                log.exception("could not write the settlement outbox")

    @property
    def healthy(self) -> bool:
        """Whether the store looks able to write: the last batch was written, none has
        been in the writing for ``SUSPECT_AFTER`` seconds (a store that hangs), and the
        writer runs."""
        commit = self._commit
        since = commit.writing_since
        return (commit.healthy and not commit.closed
                and (since is None or trio.current_time() - since < SUSPECT_AFTER))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._commit.run(task_status=task_status)

    async def reserve(self, reservation: Reservation) -> bool:
        """Whether the credits are held. A caller cancelled while waiting (its deadline)
        holds nothing: the reservation is withdrawn or released."""
        return bool(await self._commit.submit(reservation, withdraw=True))

    async def settle(self, settlement: Settlement) -> None:
        await self._commit.submit(settlement)

    def record(self, item: Reservation | Settlement | Release | LeaseReturn
               ) -> Ticket[LedgerItem]:
        """Write ``item`` with the next batch without waiting for it: a leased request's
        reservation row, its settlement, credit a lease gives back. A settlement whose batch
        fails is kept for a retry like any; the ticket tells when the batch is done."""
        return self._commit.enqueue(item)

    async def lease(self, take: LeaseTake) -> int:
        """Move credit into a lease (``LeaseTake``); the amount moved."""
        return int(await self._commit.submit(take) or 0)

    async def checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._commit.submit(checkpoint, withdraw=True)

    async def aclose(self) -> None:
        """Flush everything pending (admissions after this are refused: 503)."""
        await self._commit.aclose()

    async def retry_unsettled(self) -> int:
        """Settle (and release) what failed before: the whole list at once, else item by
        item, so one bad item cannot hold back the rest. Returns how many were settled."""
        releases = list(self.unreleased)
        if releases:
            try:
                await self.store.commit(Batch(releases=releases))
                self.unreleased[:] = [r for r in self.unreleased if r not in releases]
            except GatewayError:
                log.warning("releases still refused; retried later",
                            extra={"count": len(releases)})
        batch = list(self.unsettled)
        if not batch:
            return 0
        try:
            await self.store.settle(batch)
            done = batch
        except GatewayError:
            done = []
            for item in batch:
                try:
                    await self.store.settle([item])
                    done.append(item)
                except GatewayError:
                    pass
        # Removed only once written: a cancellation above loses nothing.
        self.unsettled[:] = [item for item in self.unsettled if item not in done]
        if done:
            log.info("settled requests the store had refused", extra={"count": len(done)})
            if self.outbox is not None:
                try:
                    await self.outbox.keep_only(list(self.unsettled))
                except OSError:  # the rows are in the store; the file is only stale
                    log.exception("could not rewrite the settlement outbox")
        return len(done)

    async def replay_outboxes(self, live: set[str]) -> int:
        """Settle every row in every outbox file (at start, before reconciliation); remove
        the files of instances not in ``live`` once all their rows are in. Returns how many
        rows were settled."""
        if self.outbox is None:
            return 0
        settled = 0
        for path, rows in (await self.outbox.files()).items():
            if path == self.outbox.path:
                self.unsettled.extend(r for r in rows if r not in self.unsettled)
                continue
            try:
                await self.store.settle(rows)
            except GatewayError:
                log.warning("an outbox replay failed; it is retried later",
                            extra={"file": str(path)})
                continue
            settled += len(rows)
            if path.stem not in live:
                await self.outbox.remove(path)
        return settled + await self.retry_unsettled()
