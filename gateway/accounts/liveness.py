"""Live gateway processes, and the settling of what dead ones left open.

Each gateway process (each hypercorn worker) is an ``Instance`` with a random id. Before it
admits anything it writes its row (host, PID) and takes its liveness *claim* in the store
(``Store.claim``: on PostgreSQL a session-level advisory lock that the server frees the
moment the process's session ends); it renews both every ``heartbeat`` seconds. A process
killed with requests open leaves their reservations behind; ``reconcile`` (run at start and
with every upkeep, by every process) settles them as ``interrupted``, charging exactly their
last checkpoint (the output relayed so far, with its prompt; nothing if there was none), and
frees their rate-limit slots; then it returns what their credit leases still hold to the
keys' balances.

Who is dead, in order (``Liveness.dead``):

    on this host        its PID is gone, or now belongs to another process (its start
                        tick since boot differs: no wall clock involved)
    elsewhere, a store  its claim has been seen free, continuously, for ``stale_after``
    that can tell       seconds, while this process's own claim was held without a break
    elsewhere, a store  its heartbeat is older than ``stale_after`` (SQLite only, where the
    that cannot tell    processes of one file share a host, so this is the rare case; and a
                        process of an older version, which takes no claim)

A heartbeat's age alone never kills on PostgreSQL: after an outage of the store itself
every heartbeat is old, and every claim may have been lost with the server's sessions; each
live process takes its claim back within one heartbeat, well inside ``stale_after``, and a
reconciler whose own claim broke forgets what it suspected and starts again.

Rule: reservations are read *before* instances and claims. An instance writes its row and
takes its claim before its first reservation, so every reservation read belongs to an
instance that is visible, or held a claim, when they are read after it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import attrs

from gateway.store.base import Store
from gateway.store.rows import (
    Batch,
    Instance,
    LeaseReturn,
    RequestRecord,
    Reservation,
    Settlement,
)

log = logging.getLogger("arouter.instances")


def host_identity() -> str:
    """This host, as PIDs see it: the hostname, this boot (PIDs start over at every boot) and
    the PID namespace (containers that share a hostname do not share PIDs). Two machines
    with one hostname differ by boot id."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            parts.append(f"boot:{boot.read().strip()[:8]}")
        parts.append(f"pidns:{os.stat('/proc/self/ns/pid').st_ino}")
    except OSError:
        pass
    return "/".join(parts)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (immune to clock steps); None
    if there is no such process; 0 if it exists but /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # Field 22, after the parenthesised command name (which may hold spaces).
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # someone else's process: it exists
    return 0


def new_instance() -> Instance:
    now = time.time()
    pid = os.getpid()
    return Instance(id=secrets.token_hex(8), host=host_identity(), pid=pid, started_at=now,
                    heartbeat_at=now, pid_start=process_start(pid) or 0, claims=True)


def _gone(other: Instance) -> bool:
    """A process on this host that no longer runs the instance: its PID is free, or taken
    by another process (one that started at another tick)."""
    started = process_start(other.pid)
    if started is None:
        return True
    return bool(other.pid_start and started and started != other.pid_start)


@attrs.define
class Liveness:
    """This process's view of who else lives: its own claim's continuity and what it
    suspects of the others (in memory, per process)."""

    me: Instance
    stale_after: float
    clock: Callable[[], float] = time.monotonic
    epoch: int = 0  # bumped whenever this process's own claim had a break
    held: bool = False  # whether the last renewal found our claim held without a break
    suspects: dict[str, tuple[int, float]] = attrs.field(factory=dict)  # id -> (epoch, since)

    def renewed(self, unbroken: bool) -> None:
        """The result of ``Store.claim`` at a heartbeat."""
        if not unbroken:
            self.epoch += 1
            self.suspects.clear()  # seen while our own view was not continuous: start again
        self.held = unbroken

    def dead(
        self, candidates: Collection[str], known: Mapping[str, Instance],
        claimed: set[str] | None, now: float,
    ) -> set[str]:
        """Which ``candidates`` (instance ids, from rows and reservations) are dead now."""
        dead: set[str] = set()
        if claimed is not None and self.me.id not in claimed:
            # Our own claim is not held: nothing we see of the others' claims can be trusted.
            self.renewed(False)
        for other_id in candidates:
            if other_id == self.me.id:
                continue
            other = known.get(other_id)
            if other is not None and other.host == self.me.host:
                if other.pid != self.me.pid and _gone(other):
                    dead.add(other_id)
            elif claimed is not None and (other is None or other.claims):
                if self._unclaimed_long_enough(other_id, other_id in claimed):
                    dead.add(other_id)
            elif other is None or other.heartbeat_at < now - self.stale_after:
                # The store cannot tell, or the instance takes no claims (an older version).
                dead.add(other_id)
        return dead

    def _unclaimed_long_enough(self, other_id: str, holds: bool) -> bool:
        if holds or not self.held:
            self.suspects.pop(other_id, None)
            return False
        epoch, since = self.suspects.setdefault(other_id, (self.epoch, self.clock()))
        if epoch != self.epoch:
            self.suspects[other_id] = (self.epoch, self.clock())
            return False
        return self.clock() - since >= self.stale_after


def interrupted(reservation: Reservation, now: float) -> RequestRecord:
    """The ledger row of a request whose process died: its last checkpoint, honestly."""
    output = reservation.completion_tokens
    return reservation.record(
        deployment=reservation.deployment,
        upstream_dialect=reservation.upstream_dialect,
        status="interrupted",
        http_status=0,  # unknown: the process died before it could say
        # No checkpoint: no output is known of, and a request that produced none is free.
        prompt_tokens=reservation.prompt_tokens if output else 0,
        completion_tokens=output,
        cached_tokens=0,
        reasoning_tokens=0,
        usage_estimated=True,
        cost=reservation.served_cost,
        error_type="interrupted",
        ttft_ms=None,
        duration_ms=max(0.0, now - reservation.created_at) * 1000,
        cancelled=True,
        created_at=now,
    )


Orphans = Callable[[Sequence[Reservation]], Awaitable[None]]


async def reconcile(store: Store, liveness: Liveness, on_orphans: Orphans | None = None) -> int:
    """Settle every reservation of a dead instance (then ``on_orphans`` frees what else they
    held, such as rate-limit slots); forget those instances. Returns how many reservations
    were settled."""
    me = liveness.me
    open_ = await store.reservations()
    leases = await store.leases()
    known = {i.id: i for i in await store.instances()}
    candidates = (set(known) | {r.instance for r in open_} | {x.instance for x in leases}
                  ) - {me.id}
    claimed = await store.claimed(sorted(candidates | {me.id}))
    now = time.time()
    dead = liveness.dead(candidates, known, claimed, now)
    orphans = [r for r in open_ if r.instance in dead]
    if orphans:
        # Charged to the lease that paid for them (the balance, past what it holds).
        await store.settle([Settlement(interrupted(r, now), lease=r.instance)
                            for r in orphans])
        log.warning("settled the open requests of dead gateway processes",
                    extra={"reservations": len(orphans), "instances": len(dead)})
        if on_orphans is not None:
            await on_orphans(orphans)
    # Then what their leases still hold goes back to the keys.
    returns = [LeaseReturn(x.key_id, x.instance) for x in leases if x.instance in dead]
    if returns:
        await store.commit(Batch(returns=returns))
        log.warning("returned the credit leases of dead gateway processes",
                    extra={"leases": len(returns),
                           "amount": sum(x.amount for x in leases if x.instance in dead)})
    for instance_id in dead:
        await store.forget_instance(instance_id)
        liveness.suspects.pop(instance_id, None)
    return len(orphans)


async def beat(store: Store, liveness: Liveness) -> None:
    """Renew this process's row and its claim."""
    me = liveness.me
    await store.heartbeat(attrs.evolve(me, heartbeat_at=time.time()))
    liveness.renewed(await store.claim(me))
