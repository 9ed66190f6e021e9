"""A race of acquires over several limiters: a fleet of processes on one shared backend."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from gateway.errors import RateLimited
from gateway.limits.base import Limiter, Limits


async def race(limiters: Sequence[Limiter], key: str, limits: Limits,
               attempts: int) -> list[str]:
    """``attempts`` acquires at once, spread over ``limiters``; the admitted generations."""
    admitted: list[str] = []

    async def attempt(n: int) -> None:
        try:
            await limiters[n % len(limiters)].acquire(key, limits, f"g{n}", 1, 60.0)
        except RateLimited:
            return
        admitted.append(f"g{n}")

    async with trio.open_nursery() as nursery:
        for n in range(attempts):
            nursery.start_soon(attempt, n)
    return admitted
