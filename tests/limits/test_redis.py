"""The Redis limiter as a fleet sees it, and the fallback when Redis goes away.

Real redis-server processes on unix sockets (tests/redis_server.py): the session's shared
one, flushed per test, and private ones that tests stop and start again.
"""

from __future__ import annotations

import logging
import time

import pytest
import redis

from gateway.errors import LimiterUnavailable, RateLimited
from gateway.limits.base import Held, Limiter, Limits
from gateway.limits.fallback import FallbackLimiter
from gateway.limits.local import LocalLimiter
from gateway.limits.redis import RedisLimiter
from tests.support.clocks import FakeClock
from tests.support.limiters import race
from tests.support.redis_server import RedisServer, redis_server

KEY = "key-1"


@pytest.mark.parametrize("limits", [Limits(concurrent=1), Limits(rpm=1)], ids=["concurrent",
                                                                                "rpm"])
async def test_two_gateways_racing_admit_exactly_one(redis_clean_url: str, limits: Limits) -> None:
    clock = FakeClock()
    # Two limiters with their own pools and threads: two gateway processes, one Redis.
    fleet = [RedisLimiter(redis_clean_url, clock), RedisLimiter(redis_clean_url, clock)]
    try:
        admitted = await race(fleet, KEY, limits, 50)
        assert len(admitted) == 1
        usage = await fleet[0].usage(KEY, limits)
        assert usage.concurrent == 1
    finally:
        for limiter in fleet:
            await limiter.aclose()


async def test_missing_socket_is_unavailable_quickly() -> None:
    missing = f"unix:///nonexistent-arouter-{time.monotonic_ns()}/redis.sock"
    limiter = RedisLimiter(missing)
    started = time.monotonic()
    try:
        with pytest.raises(LimiterUnavailable) as caught:
            await limiter.acquire(KEY, Limits(rpm=1), "g1", 1, 60.0)
        with pytest.raises(LimiterUnavailable):
            await limiter.usage(KEY, Limits(rpm=1))
        with pytest.raises(LimiterUnavailable):
            await limiter.release(KEY, Limits(rpm=1), "g1", 0)
    finally:
        await limiter.aclose()
    assert time.monotonic() - started < 1.0
    assert "nonexistent" not in caught.value.message
    assert caught.value.status == 503


async def test_unavailable_message_keeps_the_password_out() -> None:
    # Port 1 on loopback: nothing listens, the connect is refused at once.
    limiter = RedisLimiter("redis://:hunter2-CANARY@127.0.0.1:1/0")
    try:
        with pytest.raises(LimiterUnavailable) as caught:
            await limiter.acquire(KEY, Limits(rpm=1), "g1", 1, 60.0)
    finally:
        await limiter.aclose()
    assert "CANARY" not in caught.value.message
    assert "127.0.0.1" not in caught.value.message


def test_bad_url_is_a_config_error_without_the_url() -> None:
    with pytest.raises(ValueError) as caught:
        RedisLimiter("http://:hunter2-CANARY@example/")
    assert "CANARY" not in str(caught.value)


async def test_keys_expire_when_idle(redis_clean_url: str) -> None:
    limiter = RedisLimiter(redis_clean_url, FakeClock())
    client = redis.Redis.from_url(redis_clean_url)
    base = f"arouter:limits:{{{KEY}}}"
    try:
        await limiter.acquire(KEY, Limits(rpm=60, tpm=600, concurrent=2), "g1", 60, 90.0)
        assert client.dbsize() == 3
        rpm, tpm, slots = (client.pttl(f"{base}:{name}") for name in ("rpm", "tpm", "slots"))
    finally:
        client.close()
        await limiter.aclose()
    assert 1000 < rpm <= 2000  # one token short of full: one second, plus slack
    assert 6000 < tpm <= 7000  # 60 tokens short at 10 per second
    assert 90_000 < slots <= 91_000  # the slot's TTL


async def test_scripts_reload_after_script_flush(redis_server_session: RedisServer,
                                                 redis_clean_url: str) -> None:
    limiter = RedisLimiter(redis_clean_url, FakeClock())
    limits = Limits(concurrent=1)
    try:
        await limiter.acquire(KEY, limits, "g1", 0, 60.0)
        redis_server_session.command(b"SCRIPT", b"FLUSH")  # as a restarted server would be
        with pytest.raises(RateLimited):
            await limiter.acquire(KEY, limits, "g2", 0, 60.0)
        redis_server_session.command(b"SCRIPT", b"FLUSH")
        await limiter.release(KEY, limits, "g1", 0)
        await limiter.acquire(KEY, limits, "g2", 0, 60.0)
    finally:
        await limiter.aclose()


# --- fallback ----------------------------------------------------------------------------


class Counting:
    """A limiter wrapper counting the calls that reach it."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.calls = 0

    async def acquire(self, key_id: str, limits: Limits, generation_id: str, tokens: int,
                      slot_ttl: float) -> None:
        self.calls += 1
        await self.inner.acquire(key_id, limits, generation_id, tokens, slot_ttl)

    async def release(self, key_id: str, limits: Limits, generation_id: str,
                      extra_tokens: int) -> None:
        self.calls += 1
        await self.inner.release(key_id, limits, generation_id, extra_tokens)

    async def usage(self, key_id: str, limits: Limits) -> Held:
        self.calls += 1
        return await self.inner.usage(key_id, limits)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_fallback_degrades_and_recovers_with_a_real_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="arouter.limits")
    limits = Limits(concurrent=10)
    probe_clock = FakeClock()
    transitions: list[bool] = []
    with redis_server() as server:
        primary = Counting(RedisLimiter(server.url))
        local = LocalLimiter()
        limiter = FallbackLimiter(primary, local, transitions.append, probe_interval=5.0,
                                  clock=probe_clock)
        try:
            await limiter.acquire(KEY, limits, "shared-1", 0, 60.0)
            assert (await primary.inner.usage(KEY, limits)).concurrent == 1
            assert transitions == []

            server.stop()
            await limiter.acquire(KEY, limits, "local-1", 0, 60.0)
            assert transitions == [True]
            assert (await local.usage(KEY, limits)).concurrent == 1
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "limiting locally" in warnings[0].getMessage()

            # Until the probe interval passes, requests never touch the dead primary.
            calls = primary.calls
            for n in range(20):
                await limiter.acquire("other", Limits(rpm=1000), f"local-burst-{n}", 0, 60.0)
            assert primary.calls == calls
            assert transitions == [True]

            # Released where it was admitted: in Redis, which is down. Not raised, and no
            # second warning.
            await limiter.release(KEY, limits, "shared-1", 0)
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

            server.start()  # same socket, empty data
            await limiter.acquire(KEY, limits, "local-2", 0, 60.0)
            assert primary.calls == calls + 1  # the release above; no probe yet
            assert (await local.usage(KEY, limits)).concurrent == 2

            probe_clock.advance(5.0)
            await limiter.acquire(KEY, limits, "shared-2", 0, 60.0)
            assert transitions == [True, False]
            assert not limiter.degraded
            assert any(r.levelno == logging.INFO and "reachable again" in r.getMessage()
                       for r in caplog.records)
            assert (await primary.inner.usage(KEY, limits)).concurrent == 1

            # Each generation is released where it was admitted.
            await limiter.release(KEY, limits, "local-1", 0)
            await limiter.release(KEY, limits, "local-2", 0)
            assert (await local.usage(KEY, limits)).concurrent == 0
            await limiter.release(KEY, limits, "shared-2", 0)
            assert (await primary.inner.usage(KEY, limits)).concurrent == 0
            assert transitions == [True, False]
        finally:
            await limiter.aclose()


async def test_fallback_probe_failure_stays_degraded_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="arouter.limits")
    probe_clock = FakeClock()
    transitions: list[bool] = []
    with redis_server() as server:
        primary = Counting(RedisLimiter(server.url))
        limiter = FallbackLimiter(primary, LocalLimiter(), transitions.append, clock=probe_clock)
        try:
            await limiter.acquire(KEY, Limits(rpm=100), "shared", 0, 60.0)
            server.kill()  # as a crashed host: the socket file stays, nobody listens
            await limiter.release(KEY, Limits(rpm=100), "shared", 0)  # fails: not raised
            assert transitions == [True]
            for n in range(3):
                probe_clock.advance(5.0)  # every acquire is a probe, and each fails
                await limiter.acquire(KEY, Limits(rpm=100), f"g{n}", 0, 60.0)
                # An unlimited key is no probe: it would pass without asking Redis.
                await limiter.acquire(KEY, Limits(), f"free{n}", 0, 60.0)
            assert primary.calls == 5
            assert transitions == [True]
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        finally:
            await limiter.aclose()


async def test_fallback_usage_and_refusals_come_from_the_primary(redis_clean_url: str) -> None:
    transitions: list[bool] = []
    limiter = FallbackLimiter(RedisLimiter(redis_clean_url, FakeClock()), LocalLimiter(),
                              transitions.append)
    limits = Limits(rpm=1)
    try:
        await limiter.acquire(KEY, limits, "g1", 0, 60.0)
        with pytest.raises(RateLimited):
            await limiter.acquire(KEY, limits, "g2", 0, 60.0)
        assert (await limiter.usage(KEY, limits)).rpm_left == pytest.approx(0)
        assert transitions == []
    finally:
        await limiter.aclose()


class Broken(Counting):
    async def release(self, key_id: str, limits: Limits, generation_id: str,
                      extra_tokens: int) -> None:
        raise RuntimeError("a bug in the primary")


async def test_fallback_release_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    limiter = FallbackLimiter(Broken(LocalLimiter()), LocalLimiter())
    await limiter.acquire(KEY, Limits(rpm=1), "g1", 0, 60.0)
    await limiter.release(KEY, Limits(rpm=1), "g1", 0)
    assert any("g1 failed" in r.getMessage() for r in caplog.records)
    assert not limiter.degraded
    await limiter.aclose()
