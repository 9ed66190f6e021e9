"""Credit leases: a metered key's requests are admitted and settled in memory.

A process that admits a request for a metered key takes a *lease* on a slice of the key's
balance (``LeaseTake``: one conditional update moves the credit from the key to a lease row
of this instance), then admits and settles that key's requests against it with no store
call on the request path. The store still records every request (a leased reservation row,
written in the background; see ``admission.py``) and every settlement charges the lease in
the store as it charges it here, so the store's lease row is what this process holds.

Rules:
- **No overspend, across processes.** Credit only ever reaches a lease out of the balance,
  by the store's conditional update, and a request is admitted only against credit its
  process holds. So however many processes lease from one key, together they admit no more
  than its balance.
- **A slice, then exact.** A take asks for ``slice`` requests' worth of the reservation at
  hand; the store grants that while it is a small share of the balance (``lease_grant``),
  less as the balance runs low, and at the end exactly what the waiting request needs. A
  lease that was granted less than it asked for is *short*: the balance is low, so it is
  not topped up ahead of need, and whatever its requests leave is given back as they
  settle, where another process (or this one, next time) can take it again.
- **One take at a time per key.** Requests that do not fit wait for the take in flight; if
  it came back short of what they need, they are refused without another round trip
  (exactly one of fifty parallel requests against a balance for one is admitted, and only
  one take's worth of store calls is spent on the rest).
- **Topped up ahead of need** (a full lease only): when what is free falls under a quarter
  of a slice, a background take refills it, so a busy key never waits on the store.
- **Given back** when idle (``idle_after`` seconds without a request), when its key is
  revoked or loses its balance, and at shutdown. A process that dies leaves its leases to
  reconciliation, which settles its requests against them and returns what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from gateway.accounts.ledger import Ledger
from gateway.errors import GatewayError
from gateway.store.rows import LeaseReturn, LeaseTake

log = logging.getLogger("arouter.leases")


@attrs.define(eq=False)
class _Lease:
    key_id: str
    total: int = 0  # what this process's lease row in the store holds, as it knows it
    held: int = 0  # of which reserved by requests in flight
    short: bool = False  # the last take got less than it asked: the balance is low
    dry: int | None = None  # the last take got nothing: the balance was under this need
    used_at: float = 0.0
    takes: int = 0  # takes completed, so a waiter can tell whether one ran meanwhile
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    refilling: bool = False

    @property
    def free(self) -> int:
        return self.total - self.held


class Leases:
    def __init__(
        self, ledger: Ledger, instance: str, *, slice_requests: int = 32,
        idle_after: float = 60.0, spawn: Callable[..., None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.ledger = ledger
        self.instance = instance
        self.slice_requests = slice_requests
        self.idle_after = idle_after
        self.spawn = spawn  # starts a background task (the lifespan's nursery)
        self.clock = clock
        self._leases: dict[str, _Lease] = {}

    def holding(self, key_id: str) -> int:
        """Credit this process holds of ``key_id`` (free and in flight)."""
        lease = self._leases.get(key_id)
        return 0 if lease is None else lease.total

    async def hold(self, key_id: str, amount: int) -> bool:
        """Reserve ``amount`` of the key's credit for one request: at once from the lease,
        else after a take; False if the balance cannot cover it."""
        lease = self._leases.get(key_id)
        if lease is None:
            lease = self._leases[key_id] = _Lease(key_id)
        lease.used_at = self.clock()
        if lease.free < amount:
            seen = lease.takes
            async with lease.lock:
                if lease.free < amount:
                    if (lease.takes != seen and lease.dry is not None
                            and amount - lease.free >= lease.dry):
                        return False  # a take ran while we waited and found the balance dry
                    await self._take(lease, amount)
                    if lease.free < amount:
                        return False
        lease.held += amount
        if (not lease.short and not lease.refilling and self.spawn is not None
                and lease.free < amount * self.slice_requests // 4):
            lease.refilling = True
            self.spawn(self._refill, lease, amount)
        return True

    async def _take(self, lease: _Lease, amount: int) -> None:
        need = max(0, amount - lease.free)
        want = max(need, amount * self.slice_requests)
        try:
            granted = await self.ledger.lease(LeaseTake(lease.key_id, self.instance, want, need))
        finally:
            lease.takes += 1
        lease.total += granted
        lease.short = granted < want
        lease.dry = need if granted == 0 and need > 0 else None

    async def _refill(self, lease: _Lease, amount: int) -> None:
        try:
            async with lease.lock:
                if lease.free < amount * self.slice_requests // 4 and not lease.short:
                    await self._take(lease, amount)
        except GatewayError:
            log.warning("could not top up a credit lease", extra={"key_id": lease.key_id})
        finally:
            lease.refilling = False

    def release(self, key_id: str, reserved: int, cost: int) -> None:
        """A request that held ``reserved`` settled at ``cost``: the lease loses the cost
        (as the store's does, in the settlement's transaction) and frees the rest. A short
        lease gives back at once what no request holds."""
        lease = self._leases.get(key_id)
        if lease is None:
            return
        lease.held -= reserved
        lease.total -= min(cost, lease.total)
        if lease.short and lease.free > 0:
            self._give_back(lease, lease.free)

    def _give_back(self, lease: _Lease, amount: int | None) -> None:
        """Return ``amount`` (None: the whole lease, and forget it) to the key's balance."""
        if amount is None:
            self._leases.pop(lease.key_id, None)
        lease.total -= lease.total if amount is None else amount
        try:
            # Not waited for: a return that fails leaves the credit in the store's lease row,
            # which goes back whole at shutdown or to reconciliation.
            self.ledger.record(LeaseReturn(lease.key_id, self.instance, amount))
        except GatewayError:
            log.warning("could not give back a credit lease", extra={"key_id": lease.key_id})

    def drop(self, key_id: str) -> None:
        """The key was revoked or lost its balance: give back what no request holds."""
        lease = self._leases.get(key_id)
        if lease is not None and lease.free > 0:
            self._give_back(lease, None if lease.held == 0 else lease.free)

    def sweep(self) -> None:
        """Give back the leases no request has used for ``idle_after`` seconds."""
        now = self.clock()
        for lease in list(self._leases.values()):
            if lease.held == 0 and now - lease.used_at >= self.idle_after:
                self._give_back(lease, None)

    def returns(self) -> list[LeaseReturn]:
        """Every lease of this process, returned whole (at shutdown, once nothing is held)."""
        leases, self._leases = list(self._leases), {}
        return [LeaseReturn(key_id, self.instance) for key_id in leases]
