"""The rate-limit contract: requests per minute, tokens per minute, concurrent requests.

Every limiter (``local.py`` in-process, ``redis.py`` shared by a fleet one request at a time)
keeps these semantics, checked by one contract suite (``tests/limits/test_contract.py``);
``quota.py``, what a fleet uses, keeps them within the bounds its docstring states:

- **rpm** is a token bucket of capacity ``rpm`` refilled at ``rpm / 60`` per second; each
  admitted request takes one.
- **tpm** is a token bucket of capacity ``tpm`` refilled at ``tpm / 60`` per second. A request
  is admitted while the bucket holds at least one token; admission takes the request's
  prompt estimate, and ``release`` takes (or returns) the difference to the real total, so
  the bucket may go into debt and later requests wait until it refills.
- **concurrent** counts held slots; a slot is held from ``acquire`` to ``release``. A slot
  whose holder vanished without releasing (a process killed) expires after ``slot_ttl``.
- ``acquire`` is all-or-nothing: if any limit refuses, nothing is taken, and ``RateLimited``
  says which limit and carries ``retry_after`` seconds (0 for the concurrency limit: retry
  when a stream ends, reported as 1 s).
- ``release`` is idempotent per generation id and never raises for a slot that is gone.
- A slot belongs to its generation, and a generation to the process that admitted it (its
  reservation says which). ``forget`` frees the slots of generations whose process died,
  as soon as reconciliation finds them, rather than at their TTL; no token is corrected.
- A limiter that cannot reach its backend raises ``LimiterUnavailable``; ``FallbackLimiter``
  turns that into local limiting, says so in the log and metrics, and returns to the shared
  backend when it answers again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import attrs

WINDOW = 60.0  # seconds: the "minute" of rpm and tpm


@attrs.frozen
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None

    @property
    def none(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrent is None


@attrs.frozen
class Held:
    """What a key holds right now, for ``GET /v1/key`` and the contract tests."""

    concurrent: int
    rpm_left: float | None  # tokens in the rpm bucket
    tpm_left: float | None  # tokens in the tpm bucket (negative: in debt)


class Limiter(Protocol):
    async def acquire(
        self, key_id: str, limits: Limits, generation_id: str, tokens: int, slot_ttl: float
    ) -> None:
        """Admit one request or raise ``RateLimited`` (or ``LimiterUnavailable``)."""

    async def release(
        self, key_id: str, limits: Limits, generation_id: str, extra_tokens: int
    ) -> None:
        """Free the slot and charge ``extra_tokens`` (real total - estimate) to tpm."""

    async def forget(self, held: Sequence[tuple[str, str]]) -> None:
        """Free the slots of these (key id, generation id) pairs, if still held."""

    async def forget_instances(self, keys: Mapping[str, Collection[str]]) -> None:
        """Free whatever these dead processes (instance id -> key ids) held for those keys
        (a shared limiter's quotas); nothing for a limiter that keeps no such thing."""

    async def usage(self, key_id: str, limits: Limits) -> Held: ...

    async def run(self) -> None:
        """Background upkeep for the life of the process (a shared limiter's syncing);
        returns at once if there is none."""

    async def aclose(self) -> None: ...
