"""Shared limits while the backend answers, local limits while it does not.

``FallbackLimiter`` wraps a primary limiter (Redis, shared by the fleet) and a local one. A
request is never refused because the limiter's backend is down: it is limited locally
instead, which is looser (each gateway allows the full limit) but never unlimited.

Rules:
- The primary is asked first. ``LimiterUnavailable`` switches to *degraded*: one warning
  on the way in, one info line on the way out, and ``on_degraded(True/False)`` on each
  transition (the metrics gauge), never once per request.
- While degraded, the primary is tried again at most once per ``probe_interval`` seconds,
  by one request at a time; every other request goes straight to the local limiter, so a
  dead backend costs nothing per request (no connect attempt, no timeout).
- The limiter that admitted a generation is the one that releases it: a slot taken in
  Redis is released in Redis even if the gateway degraded in between, and a slot taken
  locally is released locally even after recovery.
- ``release`` never raises: a release the primary could not record is logged (and counts
  as the backend being down); its slot expires by its TTL and the token difference is
  forgone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence

import trio

from gateway.errors import LimiterUnavailable
from gateway.limits.base import Held, Limiter, Limits

log = logging.getLogger("arouter.limits")


class FallbackLimiter:
    def __init__(
        self,
        primary: Limiter,
        local: Limiter,
        on_degraded: Callable[[bool], None] = lambda d: None,
        *,
        probe_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._on_degraded = on_degraded
        self._probe_interval = probe_interval
        self._clock = clock
        self.degraded = False
        self._next_probe = 0.0
        # Generations admitted by the local limiter -> when their receipt may be forgotten.
        # Anything not listed was admitted by the primary (the common case costs nothing).
        self._local_admitted: dict[str, float] = {}
        # Primary slots that may be held though nobody will release them there: an acquire
        # whose reply timed out (the script may have run), or a release that failed. They
        # are released when the primary answers again, or expire there on their own.
        self._owed: dict[str, tuple[str, Limits, float]] = {}
        self._next_sweep = 0.0

    async def acquire(
        self, key_id: str, limits: Limits, generation_id: str, tokens: int, slot_ttl: float
    ) -> None:
        if limits.none:
            # Nothing to take; and a primary that answers without asking its backend must
            # not pass for a successful probe.
            await trio.lowlevel.checkpoint()
            return
        if self._primary_due():
            try:
                await self._primary.acquire(key_id, limits, generation_id, tokens, slot_ttl)
            except LimiterUnavailable as exc:
                self._failed(exc)
                self._owed[generation_id] = (key_id, limits, self._clock() + slot_ttl)
            else:
                self._recovered()
                return
            # A refusal (RateLimited) from the primary is an answer: it propagates, and the
            # backend counts as reachable.
        await self._local.acquire(key_id, limits, generation_id, tokens, slot_ttl)
        now = self._clock()
        self._local_admitted[generation_id] = now + slot_ttl
        self._sweep(now)

    async def release(
        self, key_id: str, limits: Limits, generation_id: str, extra_tokens: int
    ) -> None:
        # Shielded for the reason RedisLimiter.release is: teardown runs in cancelled scopes.
        with trio.CancelScope(shield=True):
            if self._local_admitted.pop(generation_id, None) is not None:
                await self._local.release(key_id, limits, generation_id, extra_tokens)
                if generation_id not in self._owed or self.degraded:
                    return
                self._owed.pop(generation_id)  # the primary may hold it too: free it there
            try:
                await self._primary.release(key_id, limits, generation_id, extra_tokens)
                await self._settle_owed()
            except LimiterUnavailable as exc:
                self._owed[generation_id] = (key_id, limits, self._clock() + 3600.0)
                # The same evidence as a failed acquire; when the backend dies under a full
                # house, every stream in flight fails its release, and one warning (the
                # transition's) says all there is to say.
                self._failed(exc)
                log.debug("rate limit release for %s not recorded: %s", generation_id,
                          exc.message)
            except Exception:
                log.exception("rate limit release for %s failed", generation_id)

    async def _settle_owed(self, at_most: int = 16) -> None:
        """Release a few owed primary slots (idempotent there); the rest wait their turn."""
        now = self._clock()
        for generation_id in list(self._owed)[:at_most]:
            key_id, limits, expires = self._owed.pop(generation_id)
            if expires > now:
                try:
                    await self._primary.release(key_id, limits, generation_id, 0)
                except LimiterUnavailable:
                    self._owed[generation_id] = (key_id, limits, expires)
                    raise

    async def forget(self, held: Sequence[tuple[str, str]]) -> None:
        # Both: a dead process's slots are in Redis, or (while degraded) in no process at
        # all; and receipts here that name them are stale.
        for _, generation_id in held:
            self._owed.pop(generation_id, None)
        await self._local.forget(held)
        try:
            await self._primary.forget(held)
        except LimiterUnavailable as exc:
            self._failed(exc)
            log.warning("could not free %d rate-limit slots of a dead process; they expire "
                        "by their TTL", len(held))

    async def usage(self, key_id: str, limits: Limits) -> Held:
        if self._primary_due():
            try:
                usage = await self._primary.usage(key_id, limits)
            except LimiterUnavailable as exc:
                self._failed(exc)
            else:
                self._recovered()
                return usage
        return await self._local.usage(key_id, limits)

    async def forget_instances(self, keys: Mapping[str, Collection[str]]) -> None:
        try:
            await self._primary.forget_instances(keys)
        except LimiterUnavailable as exc:
            self._failed(exc)

    async def run(self) -> None:
        await self._primary.run()  # the shared limiter's syncing (the local one has none)

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            await self._local.aclose()

    def _primary_due(self) -> bool:
        if not self.degraded:
            return True
        now = self._clock()
        if now < self._next_probe:
            return False
        # Claimed before the await, so concurrent requests do not all probe at once.
        self._next_probe = now + self._probe_interval
        return True

    def _failed(self, exc: LimiterUnavailable) -> None:
        self._next_probe = self._clock() + self._probe_interval
        if self.degraded:
            return
        self.degraded = True
        log.warning("shared rate limiter unreachable, limiting locally: %s", exc.message)
        self._on_degraded(True)

    def _recovered(self) -> None:
        if not self.degraded:
            return
        self.degraded = False
        log.info("shared rate limiter reachable again, limiting through it")
        self._on_degraded(False)

    def _sweep(self, now: float) -> None:
        # Receipts of generations that were never released (a bug elsewhere) would otherwise
        # accumulate; past their slot TTL the local limiter has forgotten them too.
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60.0
        for generation_id in [g for g, until in self._local_admitted.items() if until <= now]:
            del self._local_admitted[generation_id]
