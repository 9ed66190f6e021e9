"""The store contract: keys, credit reservations, the usage ledger, and live instances.

Every backend (``sqlite.py`` embedded, ``postgres.py`` for fleets) implements ``Store`` with
the same semantics, checked by one contract suite (``tests/store/test_contract.py``).

Semantics every backend keeps:
- **Credits never go negative through admission.** ``reserve`` takes a batch; for each item,
  in one transaction, a metered key's balance drops by ``amount`` only if it covers it
  (a single conditional ``UPDATE``, so concurrent reservations from any number of processes
  cannot overspend), and the reservation row is written. Unmetered keys (``balance`` NULL)
  always succeed and still get a reservation row, so a crash can be reconciled.
- **Exactly one ledger row per accepted request.** ``settle`` takes a batch; for each item,
  in one transaction: delete the reservation, insert the ledger row unless one exists for
  that generation id, and, only if the row was inserted, return ``reserved - cost`` to the
  balance. The balance is floored at zero if the real cost overran the reservation.
  A second settle of the same generation therefore changes nothing.
  A settlement that finds the row settled as ``interrupted`` (a reconciler's estimate)
  replaces it, once: the real usage wins, and the balance moves by the difference.
- **A checkpoint** writes a streaming request's output so far (tokens, and what it would
  cost now) into its open reservation; it changes nothing once the request has settled.
  ``interrupted`` rows charge exactly the last checkpoint (nothing if there was none).
- **A lease** (``LeaseTake``) moves credit from a metered key's balance to one instance, in
  the same kind of conditional update as a reservation, so however many processes lease
  from one key, they hold no more than its balance (``lease_grant`` sizes it). Requests
  the instance admits against its lease write *leased* reservation rows, which only record
  them (their amount 0); their settlement names the lease, and their cost comes out of it
  (the rest, if the lease no longer holds enough, out of the balance, floored at zero).
  ``LeaseReturn`` gives credit back. A key's ``balance`` as read includes what its leases
  hold, so it is what the key may still spend; setting it sets that.
- **A release** deletes a reservation whose admission gave up waiting for it (a deadline)
  and returns its whole amount, with no ledger row: that request was answered 503.
- **Reservations belong to an instance** (one gateway process). The reservations of a dead
  instance are settled by whoever reconciles (``accounts/liveness.py``); whether an instance
  is alive is for the store to say where it can (``claimed``), never a heartbeat's age.
- Foreign driver errors become ``StoreUnavailable`` inside the backend, nowhere else.
- Blocking drivers run in worker threads under a bounded limiter; no lock or transaction is
  held across an ``await``. Reads take a deadline (``timeout``) and abandon their thread
  when it passes (a hung server must not hold a request); a batch of writes is waited for,
  since the ledger must know what it did (``accounts/ledger.py`` bounds the waiters instead).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import trio

from gateway.errors import StoreUnavailable
from gateway.store.rows import (
    POLICY_FIELDS,
    ApiKey,
    Batch,
    Instance,
    Lease,
    LeaseTake,
    RequestRecord,
    Reservation,
    Settlement,
    StoredResponse,
)

T = TypeVar("T")


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def aclose(self) -> None: ...

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations; (version before, version after)."""

    # keys
    async def count_keys(self) -> int: ...

    async def add_key(self, key: ApiKey) -> None: ...

    async def find_key(self, key_id: str) -> ApiKey | None: ...

    async def find_keys(self, key_ids: Sequence[str]) -> list[ApiKey]:
        """The rows of those of ``key_ids`` that exist (any order)."""

    async def list_keys(self) -> list[ApiKey]: ...

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> ApiKey | None:
        """Set policy fields (``keys.POLICY_FIELDS`` and ``revoked``); None if no such key."""

    async def top_up(self, key_id: str, amount: int) -> ApiKey | None:
        """Add ``amount`` (may be negative, floored at 0) to a metered key's balance.
        ``NotMetered`` for a key without a balance; None if no such key."""

    # credits and the ledger
    async def reserve(self, batch: Sequence[Reservation]) -> list[bool]:
        """One transaction; ``[admitted?]`` in batch order."""

    async def settle(self, batch: Sequence[Settlement]) -> None:
        """One transaction; idempotent per generation id."""

    async def commit(self, batch: Batch) -> list[int]:
        """Everything in one transaction (the ledger's group commit): one result per
        reservation (admitted: 1 or 0), then one per lease take (the amount moved)."""

    async def reservations(self, instance: str | None = None) -> list[Reservation]: ...

    async def leases(self, instance: str | None = None) -> list[Lease]: ...

    async def reservation(self, generation_id: str) -> Reservation | None:
        """The open reservation of one generation (an admitted request not yet settled)."""

    async def record(self, generation_id: str) -> RequestRecord | None: ...

    async def records(self, **where: Any) -> list[RequestRecord]: ...

    # instances
    async def heartbeat(self, instance: Instance) -> None:
        """Insert or refresh this instance's row (``heartbeat_at``)."""

    async def instances(self) -> list[Instance]: ...

    async def forget_instance(self, instance_id: str) -> None: ...

    async def claim(self, instance: Instance) -> bool:
        """Hold ``instance``'s liveness claim for the life of this store (PostgreSQL: a
        session-level advisory lock on a connection of its own, which the server frees the
        moment that session ends). Called again with every heartbeat: True if the claim is
        held now, having been held without a break since the last call."""

    async def claimed(self, instance_ids: Sequence[str]) -> set[str] | None:
        """Which of these instances hold their claim right now; None if this store cannot
        tell (SQLite: every process is on one host, where PIDs tell)."""

    # stored Responses API answers
    async def save_response(self, response: StoredResponse) -> None:
        """Insert (an id is never reused: a second save of one is ignored)."""

    async def find_response(self, response_id: str, key_id: str,
                            now: float) -> StoredResponse | None:
        """The response if ``key_id`` made it and it has not expired."""

    async def delete_response(self, response_id: str, key_id: str) -> bool:
        """Delete it if ``key_id`` made it; whether there was one."""

    async def purge_responses(self, now: float) -> int:
        """Delete the expired; how many."""


async def read_within(seconds: float, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` (a backend's thread call, abandoned when cancelled), or ``StoreUnavailable``
    once ``seconds`` have passed: a hung server must not hold its caller."""
    try:
        with trio.fail_after(seconds):
            return await read()
    except trio.TooSlowError:
        raise StoreUnavailable(f"the store did not answer within {seconds:g} s") from None


LEASE_SHARE = 4  # a lease takes at most this fraction (1/n) of a balance, unless it must


def lease_grant(balance: int, take: LeaseTake) -> int:
    """How much of ``balance`` a lease take moves (``LeaseTake``): all it wants while that
    is a small share of the balance, less as the balance runs low, down to exactly what
    the waiting request needs; nothing if even that is not there."""
    if balance < max(take.minimum, 1):
        return 0
    return max(take.minimum, min(take.want, balance // LEASE_SHARE))


# Columns shared by the backends' schemas and row mapping.
KEY_FIELDS = tuple(f.name for f in attrs.fields(ApiKey))
RECORD_FIELDS = tuple(f.name for f in attrs.fields(RequestRecord))
RESERVATION_FIELDS = tuple(f.name for f in attrs.fields(Reservation)
                           if f.metadata.get("stored", True))
INSTANCE_FIELDS = tuple(f.name for f in attrs.fields(Instance))
RESPONSE_FIELDS = tuple(f.name for f in attrs.fields(StoredResponse))
KEY_UPDATABLE = frozenset(POLICY_FIELDS) | {"revoked"}


def check_where(where: Mapping[str, Any]) -> None:
    unknown = set(where) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"no such record field: {sorted(unknown)}")


def check_changes(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - KEY_UPDATABLE
    if unknown:
        raise ValueError(f"not an updatable key field: {sorted(unknown)}")


def models_to_text(models: Sequence[str]) -> str:
    """The allowlist as one column: newline-separated (names never contain newlines)."""
    return "\n".join(models)


def models_from_text(text: str | None) -> tuple[str, ...]:
    return tuple(text.split("\n")) if text else ()
