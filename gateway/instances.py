"""Live gateway processes, and the settling of what dead ones left open.

Each gateway process (each hypercorn worker) is an ``Instance`` with a random id. It writes
a heartbeat to the store before it admits anything and then every ``heartbeat`` seconds.
A process killed with requests open leaves their reservations behind; ``reconcile`` (run
at start and with every heartbeat, by every process) settles them as ``interrupted``:
usage estimated, the estimated prompt charged, the rest of the reservation returned.

An instance is dead when its heartbeat is older than ``stale_after`` seconds, or at once
when it ran on this host and its process no longer exists (so a restart after SIGKILL
settles its predecessor's requests immediately, not after the staleness window).

Rule: reservations are read *before* instances. An instance writes its heartbeat before
its first reservation, so every reservation read belongs to an instance in the list read
after it, unless that instance was forgotten, which happens only once it is dead.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

from gateway.records import RequestRecord
from gateway.store.base import Instance, Reservation, Settlement, Store

log = logging.getLogger("arouter.instances")


def host_identity() -> str:
    """This host, as PIDs see it: the hostname plus the PID namespace, since containers that
    share a hostname (host networking) do not share PIDs."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/pidns:{namespace}"


def new_instance() -> Instance:
    now = time.time()
    return Instance(id=secrets.token_hex(8), host=host_identity(), pid=os.getpid(),
                    started_at=now, heartbeat_at=now)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def is_dead(other: Instance, me: Instance, now: float, stale_after: float) -> bool:
    if other.id == me.id:
        return False
    if other.heartbeat_at < now - stale_after:
        return True
    return other.host == me.host and other.pid != me.pid and not _process_exists(other.pid)


def interrupted(reservation: Reservation, now: float) -> RequestRecord:
    """The ledger row of a request whose process died: what can honestly be said of it."""
    return RequestRecord(
        generation_id=reservation.generation_id,
        key_id=reservation.key_id,
        model=reservation.model,
        deployment=reservation.deployment,
        client_dialect=reservation.client_dialect,
        upstream_dialect=reservation.upstream_dialect,
        stream=reservation.stream,
        status="interrupted",
        http_status=0,  # unknown: the process died before it could say
        prompt_tokens=reservation.prompt_tokens,
        completion_tokens=0,
        cached_tokens=0,
        reasoning_tokens=0,
        usage_estimated=True,
        cost=reservation.prompt_cost,
        error_type="interrupted",
        ttft_ms=None,
        duration_ms=max(0.0, now - reservation.created_at) * 1000,
        cancelled=True,
        created_at=now,
    )


async def reconcile(store: Store, me: Instance, stale_after: float) -> int:
    """Settle every reservation of a dead instance; forget those instances. Returns how many
    reservations were settled."""
    open_ = await store.reservations()
    known = await store.instances()
    now = time.time()
    dead = {i.id for i in known if is_dead(i, me, now, stale_after)}
    live = {i.id for i in known} - dead
    orphans = [r for r in open_ if r.instance not in live and r.instance != me.id]
    if orphans:
        await store.settle([Settlement(interrupted(r, now)) for r in orphans])
        log.warning("settled the open requests of dead gateway processes",
                    extra={"reservations": len(orphans), "instances": len(dead)})
    for instance_id in dead:
        await store.forget_instance(instance_id)
    return len(orphans)


async def beat(store: Store, me: Instance) -> None:
    await store.heartbeat(Instance(me.id, me.host, me.pid, me.started_at, time.time()))
