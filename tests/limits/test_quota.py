"""The quota limiter (``gateway/limits/quota.py``) on a real Redis: decisions made in each
process, exact near the limit across processes, and no Redis call per request."""

from __future__ import annotations

import random

import pytest
import trio

from gateway.errors import RateLimited
from gateway.limits.base import Limits
from gateway.limits.quota import QuotaLimiter
from gateway.limits.redis import RedisLimiter
from tests.support.clocks import FakeClock
from tests.support.limiters import race

KEY = "key-q"


def fleet(url: str, clock: FakeClock, size: int = 2) -> list[QuotaLimiter]:
    """``size`` processes' limiters on one Redis."""
    return [QuotaLimiter(RedisLimiter(url, clock), clock=clock) for _ in range(size)]


async def close(limiters: list[QuotaLimiter]) -> None:
    for limiter in limiters:
        await limiter.aclose()


@pytest.mark.parametrize("limits", [Limits(rpm=5), Limits(concurrent=3), Limits(tpm=3)],
                         ids=["rpm", "concurrent", "tpm"])
async def test_a_small_limit_is_exact_across_processes(redis_clean_url: str,
                                                       limits: Limits) -> None:
    clock = FakeClock()
    limiters = fleet(redis_clean_url, clock)
    try:
        admitted = await race(limiters, KEY, limits, 40)
        assert len(admitted) == 3 if limits.tpm else len(admitted) == (limits.rpm or 3)
    finally:
        await close(limiters)


async def test_a_busy_key_makes_no_redis_call_per_request(redis_clean_url: str) -> None:
    clock = FakeClock()
    [limiter] = fleet(redis_clean_url, clock, 1)
    limits = Limits(rpm=60_000, tpm=10_000_000, concurrent=200)
    try:
        for n in range(500):
            await limiter.acquire(KEY, limits, f"g{n}", 100, 60.0)
            await limiter.release(KEY, limits, f"g{n}", 20)
        # A twentieth of the limit at a time: a handful of takes for 500 requests.
        assert limiter.calls <= 5, limiter.calls
    finally:
        await close([limiter])


async def test_the_fleet_never_holds_more_than_the_limit(redis_clean_url: str) -> None:
    """Three processes hammer one key for a second with random holds, syncing as they go:
    slots in use across the fleet never exceed the concurrency limit, and the slots move
    between the processes as they free them."""
    clock = FakeClock()
    limiters = fleet(redis_clean_url, clock, 3)
    limits = Limits(concurrent=10, rpm=100_000)
    in_use = peak = 0
    by_process = [0, 0, 0]
    rng = random.Random(7)

    async def client(n: int) -> None:
        nonlocal in_use, peak
        limiter, i = limiters[n % 3], 0
        while True:
            i += 1
            generation = f"g{n}-{i}"
            try:
                await limiter.acquire(KEY, limits, generation, 1, 60.0)
            except RateLimited:
                await trio.sleep(0.02)
                continue
            in_use += 1
            by_process[n % 3] += 1
            peak = max(peak, in_use)
            await trio.sleep(rng.random() / 50)
            in_use -= 1
            await limiter.release(KEY, limits, generation, 0)

    async with trio.open_nursery() as nursery:
        for limiter in limiters:
            nursery.start_soon(limiter.run)
        for n in range(30):
            nursery.start_soon(client, n)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert peak <= 10
    assert all(count > 5 for count in by_process), by_process  # none starved
    assert sum(by_process) > 100, by_process
    await close(limiters)


async def test_unused_quota_goes_back_at_the_next_sync(redis_clean_url: str) -> None:
    clock = FakeClock()
    a, b = fleet(redis_clean_url, clock)
    limits = Limits(rpm=40)
    try:
        await a.acquire(KEY, limits, "g1", 1, 60.0)  # takes a quota: more than one request
        taken = 40 - (await b.usage(KEY, limits)).rpm_left  # type: ignore[operator]
        assert taken > 1
        await a.release(KEY, limits, "g1", 0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run)
            # Real time: the first sync still sizes a quota by the request it saw; the
            # next finds the key idle and gives everything back.
            await trio.sleep(a.sync_interval * 4)
            nursery.cancel_scope.cancel()
        # Only the one request a admitted is gone from the fleet's bucket.
        assert (await b.usage(KEY, limits)).rpm_left == pytest.approx(39, abs=0.01)
    finally:
        await close([a, b])


async def test_a_dead_process_slots_expire_by_themselves(redis_clean_url: str) -> None:
    clock = FakeClock()
    a, b = fleet(redis_clean_url, clock)
    limits = Limits(concurrent=2)
    try:
        await a.acquire(KEY, limits, "g1", 1, 60.0)
        await a.acquire(KEY, limits, "g2", 1, 60.0)
        with pytest.raises(RateLimited):
            await b.acquire(KEY, limits, "g3", 1, 60.0)
        # a dies (no release, no sync); its slots outlive it by slot_ttl at most.
        clock.advance(a.slot_ttl + 0.1)
        await b.acquire(KEY, limits, "g3", 1, 60.0)
    finally:
        await close([a, b])


async def test_reconciliation_frees_a_dead_process_slots_at_once(redis_clean_url: str) -> None:
    clock = FakeClock()
    dead = QuotaLimiter(RedisLimiter(redis_clean_url, clock), instance="deadbeef", clock=clock)
    [alive] = fleet(redis_clean_url, clock, 1)
    limits = Limits(concurrent=2)
    try:
        await dead.acquire(KEY, limits, "g1", 1, 60.0)
        await dead.acquire(KEY, limits, "g2", 1, 60.0)
        with pytest.raises(RateLimited):
            await alive.acquire(KEY, limits, "g3", 1, 60.0)
        await alive.forget_instances({"deadbeef": {KEY}})  # as reconciliation does
        await alive.acquire(KEY, limits, "g3", 1, 60.0)  # no clock moved: freed, not expired
    finally:
        await close([dead, alive])
