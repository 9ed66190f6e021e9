"""The in-process limiter: one gateway's rate limits in plain dicts.

Used alone by a single gateway, and by ``FallbackLimiter`` while the shared backend is down.
It is also the reference arithmetic: ``redis.py`` runs the same refill, refusal and refund
rules in Lua, and both answer to one contract suite (``tests/limits/test_contract.py``).

Rules:
- All state changes are synchronous, between awaits, so no lock is needed. ``acquire``
  checkpoints *before* it looks at the state; ``release`` never checkpoints, so a release
  made from a cancelled scope (a client that went away) still frees the slot.
- Every admitted generation leaves a receipt (its slot, with an expiry) whether or not the
  key limits concurrency: the receipt is what makes ``release`` idempotent and what it
  charges the real token count against. A release without a live receipt does nothing.
- Memory is bounded by activity: a key whose buckets have refilled and whose slots have all
  gone is indistinguishable from a key never seen, so a sweep once per window drops it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import attrs
import trio

from gateway.errors import RateLimited
from gateway.limits.base import WINDOW, Held, Limits

# Retry-After is whole seconds; a wait within this of a whole second is not rounded up to
# the next one just because of floating-point noise.
_ROUNDING_SLACK = 1e-3

_NAMES = {
    "concurrent": "concurrent requests",
    "rpm": "requests per minute",
    "tpm": "tokens per minute",
}


def refill(level: float, ts: float, capacity: int, now: float) -> float:
    """A bucket's level at ``now``: refilled at ``capacity / WINDOW`` per second, capped.

    A clock that went backwards (wall clocks of a fleet disagree) refills nothing rather
    than draining the bucket.
    """
    return min(float(capacity), level + max(0.0, now - ts) * capacity / WINDOW)


def wait_for_token(level: float, capacity: int) -> float:
    """Seconds until a bucket at ``level`` holds one token again."""
    if capacity <= 0:
        return WINDOW  # never refills; a minute is as honest an answer as any
    return max(0.0, (1.0 - level) * WINDOW / capacity)


def time_to_full(level: float, capacity: int) -> float:
    if capacity <= 0:
        return 0.0
    return max(0.0, (capacity - level) * WINDOW / capacity)


def refused(limits: Limits, waits: Mapping[str, float]) -> RateLimited:
    """The error for a refusal, naming every limit that refused.

    ``retry_after`` is the longest wait (retrying when only the shortest has passed would be
    refused again), in whole seconds and at least one: it becomes a Retry-After header. The
    concurrency limit's wait is 0 (a slot frees when some stream ends) and so reads as 1 s.
    """
    parts = [f"{_NAMES[name]}: {getattr(limits, name)}" for name in _NAMES if name in waits]
    longest = max(waits.values(), default=0.0)
    retry_after = max(1, math.ceil(longest - _ROUNDING_SLACK))
    return RateLimited(
        f"Rate limit exceeded for this key ({', '.join(parts)})", retry_after=retry_after
    )


@attrs.define
class _Bucket:
    level: float
    ts: float


@attrs.define
class _Key:
    rpm: _Bucket | None = None
    tpm: _Bucket | None = None
    slots: dict[str, float] = attrs.Factory(dict)  # generation id -> expiry
    # When, left alone, this key's state becomes "full buckets, no slots" and may be dropped.
    idle_at: float = 0.0


class LocalLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._next_sweep = clock() + WINDOW

    async def acquire(
        self, key_id: str, limits: Limits, generation_id: str, tokens: int, slot_ttl: float
    ) -> None:
        await trio.lowlevel.checkpoint()
        if limits.none:
            return
        now = self._clock()
        self._sweep(now)
        state = self._keys.get(key_id) or _Key()

        waits: dict[str, float] = {}
        # Expired slots only matter when they would make the count refuse; purging them on
        # every acquire would cost a scan of all of a busy key's receipts each time.
        if limits.concurrent is not None and len(state.slots) >= limits.concurrent:
            _purge(state, now)
            if len(state.slots) >= limits.concurrent:
                waits["concurrent"] = 0.0
        rpm_level = tpm_level = 0.0
        if limits.rpm is not None:
            rpm_level = _level(state.rpm, limits.rpm, now)
            if rpm_level < 1:
                waits["rpm"] = wait_for_token(rpm_level, limits.rpm)
        if limits.tpm is not None:
            tpm_level = _level(state.tpm, limits.tpm, now)
            if tpm_level < 1:
                waits["tpm"] = wait_for_token(tpm_level, limits.tpm)
        if waits:
            raise refused(limits, waits)

        idle_at = now + slot_ttl
        if limits.rpm is not None:
            state.rpm = _Bucket(rpm_level - 1, now)
            idle_at = max(idle_at, now + time_to_full(state.rpm.level, limits.rpm))
        if limits.tpm is not None:
            state.tpm = _Bucket(tpm_level - max(0, tokens), now)
            idle_at = max(idle_at, now + time_to_full(state.tpm.level, limits.tpm))
        state.slots[generation_id] = now + slot_ttl
        state.idle_at = max(state.idle_at, idle_at)
        self._keys[key_id] = state

    async def release(
        self, key_id: str, limits: Limits, generation_id: str, extra_tokens: int
    ) -> None:
        state = self._keys.get(key_id)
        if state is None:
            return
        expiry = state.slots.pop(generation_id, None)
        now = self._clock()
        if expiry is None or expiry <= now:
            return
        if limits.tpm is not None and extra_tokens:
            level = _level(state.tpm, limits.tpm, now) - extra_tokens
            if extra_tokens < 0:
                level = min(level, float(limits.tpm))
            state.tpm = _Bucket(level, now)
            state.idle_at = max(state.idle_at, now + time_to_full(level, limits.tpm))

    async def forget(self, held: Sequence[tuple[str, str]]) -> None:
        await trio.lowlevel.checkpoint()
        for key_id, generation_id in held:
            state = self._keys.get(key_id)
            if state is not None:
                state.slots.pop(generation_id, None)

    async def usage(self, key_id: str, limits: Limits) -> Held:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        state = self._keys.get(key_id) or _Key()
        return Held(
            concurrent=sum(1 for expiry in state.slots.values() if expiry > now),
            rpm_left=None if limits.rpm is None else _level(state.rpm, limits.rpm, now),
            tpm_left=None if limits.tpm is None else _level(state.tpm, limits.tpm, now),
        )

    async def forget_instances(self, keys: Mapping[str, Collection[str]]) -> None:
        await trio.lowlevel.checkpoint()  # slots are per generation here: ``forget``

    async def run(self) -> None:
        await trio.lowlevel.checkpoint()  # nothing in the background

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self._keys.clear()

    @property
    def tracked_keys(self) -> int:
        """How many keys hold state (for tests of the memory bound)."""
        return len(self._keys)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + WINDOW
        idle = []
        for key_id, state in self._keys.items():
            if state.idle_at <= now:
                idle.append(key_id)
            else:
                _purge(state, now)  # receipts of holders that never released
        for key_id in idle:
            del self._keys[key_id]


def _level(bucket: _Bucket | None, capacity: int, now: float) -> float:
    if bucket is None:
        return float(capacity)  # a bucket never used is full
    return refill(bucket.level, bucket.ts, capacity, now)


def _purge(state: _Key, now: float) -> None:
    for generation_id in [g for g, expiry in state.slots.items() if expiry <= now]:
        del state.slots[generation_id]
