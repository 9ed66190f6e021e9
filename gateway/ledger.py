"""Group commit for request records: one writer task, one transaction per batch.

Settling requests hand their record to ``RecordWriter.add`` and wait until the batch that
holds it is committed, so a settle still means "written"; but under load a hundred settles
cost one SQLite transaction and one thread hop instead of a hundred of each.

Rules:
- One writer task, owned by the app's lifespan nursery; ``close`` lets it flush what is
  pending, then it returns.
- A settle that gives up waiting (its shielded deadline passed) does not take its record
  back: the record stays in its batch and is written anyway.
- A failed batch fails every settle waiting on it, with the store's own error.
"""

from __future__ import annotations

import attrs
import trio

from gateway.errors import GatewayError
from gateway.records import RequestRecord
from gateway.store.sqlite import SqliteStore


@attrs.define(eq=False)
class _Ticket:
    done: trio.Event = attrs.field(factory=trio.Event)
    error: GatewayError | None = None


class RecordWriter:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._pending: list[tuple[RequestRecord, _Ticket]] = []
        self._wake = trio.Event()
        self._closing = False
        self._finished = trio.Event()

    async def add(self, record: RequestRecord) -> None:
        """Return once ``record`` is committed; raise the store's error if its batch failed."""
        if self._finished.is_set():
            raise GatewayError("the record writer has stopped")
        ticket = _Ticket()
        self._pending.append((record, ticket))
        self._wake.set()
        await ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while self._pending or not self._closing:
                if not self._pending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    # One scheduler pass more gathers every record settled in this pass:
                    # a transaction costs ~240 us whatever its size, a row ~30 us.
                    await trio.lowlevel.checkpoint()
                    continue
                batch, self._pending = self._pending, []
                try:
                    await self._store.add_records([record for record, _ in batch])
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
