"""Who is dead: judged by what the store knows (claims) or the host knows (PIDs), never by a
heartbeat's age alone where the store can tell (FAULTS.md F3)."""

from __future__ import annotations

import os
import time

from gateway.accounts.liveness import Liveness, _gone, new_instance, process_start
from gateway.store.rows import Instance


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def other(instance_id: str = "b", host: str = "elsewhere", heartbeat_at: float = 0.0,
          pid: int = 1, claims: bool = True) -> Instance:
    return Instance(instance_id, host, pid, 0.0, heartbeat_at, claims=claims)


def liveness(clock: Clock) -> Liveness:
    alive = Liveness(new_instance(), stale_after=30.0, clock=clock)
    alive.renewed(True)
    return alive


def test_an_unclaimed_instance_elsewhere_is_dead_only_after_stale_after() -> None:
    clock = Clock()
    view = liveness(clock)
    known = {"b": other()}
    me = view.me.id
    # Its heartbeat is ancient (the store was away), but only the claim counts.
    assert view.dead({"b"}, known, {me, "b"}, time.time()) == set()
    assert view.dead({"b"}, known, {me}, time.time()) == set()  # first seen free
    clock.now += 29
    assert view.dead({"b"}, known, {me}, time.time()) == set()
    clock.now += 2
    assert view.dead({"b"}, known, {me}, time.time()) == {"b"}


def test_a_claim_taken_back_in_time_clears_the_suspicion() -> None:
    clock = Clock()
    view = liveness(clock)
    me = view.me.id
    assert view.dead({"b"}, {}, {me}, time.time()) == set()
    clock.now += 20
    assert view.dead({"b"}, {}, {me, "b"}, time.time()) == set()  # it came back
    clock.now += 20
    assert view.dead({"b"}, {}, {me}, time.time()) == set()  # a new suspicion starts
    clock.now += 31
    assert view.dead({"b"}, {}, {me}, time.time()) == {"b"}


def test_a_break_in_our_own_claim_forgets_every_suspicion() -> None:
    """After an outage of the store, every claim may be gone, ours too: nobody is judged on
    what was seen before ours was back."""
    clock = Clock()
    view = liveness(clock)
    me = view.me.id
    assert view.dead({"b"}, {}, {me}, time.time()) == set()
    clock.now += 25
    view.renewed(False)  # our heartbeat found our claim lost and took it back
    clock.now += 10
    assert view.dead({"b"}, {}, {me}, time.time()) == set()  # not yet held again
    view.renewed(True)
    assert view.dead({"b"}, {}, {me}, time.time()) == set()  # suspicion from now on
    clock.now += 29
    assert view.dead({"b"}, {}, {me}, time.time()) == set()
    clock.now += 2
    assert view.dead({"b"}, {}, {me}, time.time()) == {"b"}


def test_nobody_is_judged_while_our_own_claim_is_not_seen() -> None:
    clock = Clock()
    view = liveness(clock)
    assert view.dead({"b"}, {}, set(), time.time()) == set()
    clock.now += 100
    assert view.dead({"b"}, {}, set(), time.time()) == set()
    assert view.held is False


def test_where_the_store_cannot_tell_a_stale_heartbeat_kills() -> None:
    view = liveness(Clock())
    now = time.time()
    known = {"old": other("old", heartbeat_at=now - 31), "new": other("new", heartbeat_at=now)}
    assert view.dead({"old", "new", "norow"}, known, None, now) == {"old", "norow"}


def test_a_process_of_an_older_version_that_takes_no_claim_is_judged_by_its_heartbeat() -> None:
    """A rolling upgrade: the old process holds no claim, yet lives while it beats."""
    view = liveness(Clock())
    now = time.time()
    known = {"old": other("old", heartbeat_at=now, claims=False),
             "gone": other("gone", heartbeat_at=now - 31, claims=False)}
    assert view.dead({"old", "gone"}, known, {view.me.id}, now) == {"gone"}


def test_on_this_host_the_pid_decides_at_once() -> None:
    view = liveness(Clock())
    host, now = view.me.host, time.time()
    gone_pid = max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100_000
    known = {
        "crashed": Instance("crashed", host, gone_pid, now, now),
        "running": Instance("running", host, os.getpid(), now - 5, 0.0,  # stale beat
                            pid_start=process_start(os.getpid()) or 0),
    }
    assert view.dead(set(known), known, {view.me.id}, now) == {"crashed"}


def test_a_reused_pid_does_not_keep_a_dead_instance_alive() -> None:
    ours = process_start(os.getpid())
    assert ours  # /proc tells
    assert _gone(Instance("x", "h", os.getpid(), 0.0, 0.0, pid_start=ours - 1))
    assert not _gone(Instance("x", "h", os.getpid(), 0.0, 0.0, pid_start=ours))


def test_a_clock_step_does_not_kill_a_live_process() -> None:
    """Start times are ticks since boot: whatever the wall clock says of started_at."""
    ours = process_start(os.getpid()) or 0
    for started_at in (0.0, time.time() + 3600, time.time() - 3600):
        assert not _gone(Instance("x", "h", os.getpid(), started_at, 0.0, pid_start=ours))


def test_the_host_identity_names_the_boot_and_the_pid_namespace() -> None:
    me = new_instance()
    assert "/boot:" in me.host and "/pidns:" in me.host
    assert me.claims and me.pid_start == process_start(os.getpid())
