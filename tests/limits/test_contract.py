"""The limiter contract (gateway/limits/base.py), held against every limiter alike.

Each test runs once per limiter: ``local`` (in-process) and ``redis`` (a real redis-server
on a unix socket, flushed before the test). Both read a fake clock the test moves by hand,
so refills and expiries happen exactly when the test says, never by the wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from gateway.errors import RateLimited
from gateway.limits.base import Held, Limiter, Limits
from gateway.limits.local import LocalLimiter
from gateway.limits.redis import RedisLimiter
from tests.support.clocks import FakeClock

KEY = "key-1"
TTL = 300.0  # slot TTL when a test does not care


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Limiter]:
    made: Limiter
    if request.param == "local":
        made = LocalLimiter(clock)
    else:
        made = RedisLimiter(request.getfixturevalue("redis_clean_url"), clock)
    yield made
    await made.aclose()


class Gen:
    """Generation ids: g1, g2, ... (unique per test)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"g{self.count}"


async def admit(limiter: Limiter, limits: Limits, gen: str, tokens: int = 0,
                slot_ttl: float = TTL, key: str = KEY) -> None:
    await limiter.acquire(key, limits, gen, tokens, slot_ttl)


async def refuse(limiter: Limiter, limits: Limits, gen: str, tokens: int = 0,
                 key: str = KEY) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(key, limits, gen, tokens, TTL)
    return caught.value


# --- rpm ---------------------------------------------------------------------------------

async def test_rpm_admits_a_burst_of_exactly_rpm(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=5), Gen()
    for _ in range(5):
        await admit(limiter, limits, gen())
    refusal = await refuse(limiter, limits, gen())
    assert refusal.retry_after == 12  # one token per 60/5 s
    assert "requests per minute: 5" in refusal.message
    assert refusal.status == 429


async def test_rpm_refills_over_time(limiter: Limiter, clock: FakeClock) -> None:
    limits, gen = Limits(rpm=5), Gen()
    for _ in range(5):
        await admit(limiter, limits, gen())
    clock.advance(5)
    assert (await refuse(limiter, limits, gen())).retry_after == 7
    clock.advance(7)
    await admit(limiter, limits, gen())  # exactly one token refilled
    await refuse(limiter, limits, gen())
    clock.advance(600)  # long idle: full again, but never above capacity
    for _ in range(5):
        await admit(limiter, limits, gen())
    await refuse(limiter, limits, gen())


async def test_retry_after_is_whole_seconds_and_at_least_one(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=600), Gen()  # a token every 0.1 s
    for _ in range(600):
        await admit(limiter, limits, gen())
    refusal = await refuse(limiter, limits, gen())
    assert refusal.retry_after == 1
    assert isinstance(refusal.retry_after, int)


# --- tpm ---------------------------------------------------------------------------------

async def test_tpm_admits_while_positive_and_may_overdraw(limiter: Limiter) -> None:
    limits, gen = Limits(tpm=100), Gen()
    await admit(limiter, limits, gen(), tokens=60)
    await admit(limiter, limits, gen(), tokens=60)  # 40 left: admitted, into debt
    assert (await limiter.usage(KEY, limits)).tpm_left == pytest.approx(-20)
    refusal = await refuse(limiter, limits, gen(), tokens=1)
    assert refusal.retry_after == 13  # 21 tokens at 100/60 per second: 12.6 s
    assert "tokens per minute: 100" in refusal.message


async def test_tpm_needs_a_whole_token(limiter: Limiter, clock: FakeClock) -> None:
    limits, gen = Limits(tpm=60), Gen()  # one token per second
    await admit(limiter, limits, gen(), tokens=60)
    clock.advance(0.5)
    await refuse(limiter, limits, gen())
    clock.advance(0.5)
    await admit(limiter, limits, gen(), tokens=5)


async def test_tpm_debt_from_release_blocks(limiter: Limiter, clock: FakeClock) -> None:
    limits, gen = Limits(tpm=100), Gen()
    first = gen()
    await admit(limiter, limits, first, tokens=10)
    await limiter.release(KEY, limits, first, 150)  # the answer ran far past the estimate
    assert (await limiter.usage(KEY, limits)).tpm_left == pytest.approx(-60)
    assert (await refuse(limiter, limits, gen())).retry_after == 37  # 61 tokens: 36.6 s
    clock.advance(36)
    await refuse(limiter, limits, gen())
    clock.advance(1)
    await admit(limiter, limits, gen())


async def test_tpm_refund_on_release(limiter: Limiter) -> None:
    limits, gen = Limits(tpm=100), Gen()
    first, second = gen(), gen()
    await admit(limiter, limits, first, tokens=90)
    await limiter.release(KEY, limits, first, -80)  # used 10 of the 90 estimated
    assert (await limiter.usage(KEY, limits)).tpm_left == pytest.approx(90)
    await admit(limiter, limits, second, tokens=10)
    await limiter.release(KEY, limits, second, -50)  # a refund never overfills the bucket
    assert (await limiter.usage(KEY, limits)).tpm_left == pytest.approx(100)


async def test_release_charges_once(limiter: Limiter) -> None:
    limits, gen = Limits(tpm=100), Gen()
    first = gen()
    await admit(limiter, limits, first, tokens=10)
    await limiter.release(KEY, limits, first, 20)
    await limiter.release(KEY, limits, first, 20)
    assert (await limiter.usage(KEY, limits)).tpm_left == pytest.approx(70)


# --- concurrency -------------------------------------------------------------------------

async def test_concurrency_slots(limiter: Limiter) -> None:
    limits, gen = Limits(concurrent=2), Gen()
    a, b, c, d = gen(), gen(), gen(), gen()
    await admit(limiter, limits, a)
    await admit(limiter, limits, b)
    refusal = await refuse(limiter, limits, c)
    assert refusal.retry_after == 1  # "when a stream ends", reported as 1 s
    assert "concurrent requests: 2" in refusal.message
    await limiter.release(KEY, limits, a, 0)
    await admit(limiter, limits, c)
    # Releasing a again must not free b's or c's slot.
    await limiter.release(KEY, limits, a, 0)
    await refuse(limiter, limits, d)
    assert (await limiter.usage(KEY, limits)).concurrent == 2


async def test_release_of_unknown_generation_is_harmless(limiter: Limiter) -> None:
    limits = Limits(rpm=10, tpm=100, concurrent=1)
    await limiter.release(KEY, limits, "never-acquired", 50)
    await limiter.release("never-seen-key", limits, "never-acquired", -50)
    assert await limiter.usage(KEY, limits) == Held(concurrent=0, rpm_left=10, tpm_left=100)


async def test_expired_slot_frees_itself(limiter: Limiter, clock: FakeClock) -> None:
    limits, gen = Limits(concurrent=1), Gen()
    lost, waiting, later = gen(), gen(), gen()
    await admit(limiter, limits, lost, slot_ttl=30)  # its holder will never release
    clock.advance(29.9)
    await refuse(limiter, limits, waiting)
    assert (await limiter.usage(KEY, limits)).concurrent == 1
    clock.advance(0.1)
    assert (await limiter.usage(KEY, limits)).concurrent == 0
    await admit(limiter, limits, waiting)
    # The lost holder's late release frees nothing of the new holder's.
    await limiter.release(KEY, limits, lost, 0)
    await refuse(limiter, limits, later)


async def test_release_works_in_a_cancelled_scope(limiter: Limiter) -> None:
    limits, gen = Limits(concurrent=1), Gen()
    first = gen()
    await admit(limiter, limits, first)
    with trio.CancelScope() as scope:
        scope.cancel()  # a request torn down by a client going away releases from here
        await limiter.release(KEY, limits, first, 0)
    await admit(limiter, limits, gen())


# --- all or nothing ----------------------------------------------------------------------

async def test_concurrency_refusal_takes_no_tokens(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=10, tpm=100, concurrent=1), Gen()
    await admit(limiter, limits, gen(), tokens=10)
    before = await limiter.usage(KEY, limits)
    await refuse(limiter, limits, gen(), tokens=10)
    assert await limiter.usage(KEY, limits) == before == Held(1, 9, 90)


async def test_rpm_refusal_takes_no_tokens_or_slot(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=1, tpm=100, concurrent=5), Gen()
    await admit(limiter, limits, gen(), tokens=10)
    await refuse(limiter, limits, gen(), tokens=10)
    assert await limiter.usage(KEY, limits) == Held(1, 0, 90)


async def test_tpm_refusal_takes_no_request_or_slot(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=10, tpm=10, concurrent=5), Gen()
    await admit(limiter, limits, gen(), tokens=20)
    await refuse(limiter, limits, gen(), tokens=1)
    assert await limiter.usage(KEY, limits) == Held(1, 9, -10)


async def test_refusal_by_several_limits_waits_for_the_slowest(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=1, tpm=10, concurrent=1), Gen()
    await admit(limiter, limits, gen(), tokens=100)  # tpm now -90: 91 tokens at 1/6 per s
    refusal = await refuse(limiter, limits, gen())
    assert refusal.retry_after == 546
    for words in ("requests per minute: 1", "tokens per minute: 10", "concurrent requests: 1"):
        assert words in refusal.message


# --- no limits, usage, keys --------------------------------------------------------------

async def test_no_limits_means_unlimited(limiter: Limiter) -> None:
    limits, gen = Limits(), Gen()
    assert limits.none
    for _ in range(200):
        await admit(limiter, limits, gen(), tokens=1_000_000)
    assert await limiter.usage(KEY, limits) == Held(0, None, None)


async def test_each_limit_is_off_when_none(limiter: Limiter) -> None:
    gen = Gen()
    for _ in range(50):  # no rpm, no concurrency: only tokens count
        await admit(limiter, Limits(tpm=1_000_000), gen(), tokens=10)
    for _ in range(50):  # no tpm: a huge estimate passes
        await admit(limiter, Limits(rpm=1000), gen(), tokens=10_000_000)
    usage = await limiter.usage(KEY, Limits(concurrent=5))
    assert (usage.rpm_left, usage.tpm_left) == (None, None)


async def test_usage_reports(limiter: Limiter, clock: FakeClock) -> None:
    limits, gen = Limits(rpm=60, tpm=600, concurrent=3), Gen()
    assert await limiter.usage(KEY, limits) == Held(0, 60, 600)
    first = gen()
    await admit(limiter, limits, first, tokens=100)
    await admit(limiter, limits, gen(), tokens=100)
    assert await limiter.usage(KEY, limits) == Held(2, 58, 400)
    clock.advance(1)  # refills 1 request and 10 tokens
    usage = await limiter.usage(KEY, limits)
    assert usage.concurrent == 2
    assert usage.rpm_left == pytest.approx(59)
    assert usage.tpm_left == pytest.approx(410)
    await limiter.release(KEY, limits, first, 0)
    assert (await limiter.usage(KEY, limits)).concurrent == 1


async def test_keys_are_independent(limiter: Limiter) -> None:
    limits, gen = Limits(rpm=1, concurrent=1), Gen()
    await admit(limiter, limits, gen(), key="a")
    await refuse(limiter, limits, gen(), key="a")
    await admit(limiter, limits, gen(), key="b")
    assert (await limiter.usage("c", limits)) == Held(0, 1, None)


async def test_clock_going_back_neither_refills_nor_drains(
    limiter: Limiter, clock: FakeClock
) -> None:
    limits, gen = Limits(rpm=60), Gen()
    await admit(limiter, limits, gen())
    clock.advance(-30)  # another gateway's wall clock lags
    assert (await limiter.usage(KEY, limits)).rpm_left == pytest.approx(59)


# --- the local limiter's memory bound ----------------------------------------------------

async def test_local_limiter_forgets_idle_keys(clock: FakeClock) -> None:
    limiter = LocalLimiter(clock)
    limits, gen = Limits(rpm=60, tpm=600, concurrent=2), Gen()
    for n in range(100):
        await admit(limiter, limits, gen(), tokens=10, slot_ttl=30, key=f"k{n}")
    debtor, holder = gen(), gen()
    await admit(limiter, limits, debtor, tokens=10, key="debtor")
    await limiter.release("debtor", limits, debtor, 6000)  # 10 minutes of debt
    await admit(limiter, limits, holder, slot_ttl=1000, key="holder")
    assert limiter.tracked_keys == 102
    clock.advance(61)
    await admit(limiter, limits, gen(), key="trigger")  # sweeps: refilled, slots expired
    assert limiter.tracked_keys == 3  # the debtor, the long slot's holder, the trigger
    assert (await limiter.usage("k7", limits)) == Held(0, 60, 600)
    clock.advance(1000)
    await admit(limiter, limits, gen(), key="trigger")
    assert limiter.tracked_keys == 1
    await limiter.aclose()
