"""Which deployment to call next: a pure decision over a route, its circuits and the tries.

The order of candidates: the route's order (the client's ``models`` and ``provider``
preferences, folded into priorities by the catalog), then by priority, then weighted-random
or least-busy among deployments whose circuit lets a call through; untried deployments
before tried ones. A client's ``provider.sort = "latency"`` puts the deployments with the
shortest measured time to a first token first instead. No I/O, no clock of its own: the
circuits answer for now.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from gateway.errors import NoProviderAvailable
from gateway.routing.catalog import Route
from gateway.routing.circuits import Circuits
from gateway.routing.targets import Target


def choose(
    route: Route, circuits: Circuits, tried: Mapping[str, int], excluded: set[str], *,
    strategy: str, rng: random.Random,
) -> Target | None:
    """The next deployment to call, or None if none may be called now."""
    pool = [t for t in route.targets
            if t.label not in excluded and circuits.available(t.label)]
    fresh = [t for t in pool if not tried.get(t.label)]
    pool = fresh or pool
    if not pool:
        return None
    if route.by_latency:
        # Measured ones by their latency, then the rest in the route's order: a deployment
        # this process has not heard from yet is not assumed fast.
        return min(pool, key=lambda t: (_latency(circuits, t), t.priority))
    top = min(t.priority for t in pool)
    pool = [t for t in pool if t.priority == top]
    if len(pool) == 1:
        return pool[0]
    if strategy == "least_busy":
        return min(pool, key=lambda t: (circuits.in_flight(t.label), -t.weight))
    return rng.choices(pool, weights=[t.weight for t in pool])[0]


def _latency(circuits: Circuits, target: Target) -> float:
    latency = circuits.latency(target.label)
    return math.inf if latency is None else latency


def none_available(route: Route, circuits: Circuits) -> NoProviderAvailable:
    """The answer when no deployment of ``route`` may be called: 503, and Retry-After for
    when the first circuit half-opens."""
    labels = {t.label for t in route.targets}
    waits = [s["open_for_seconds"] for s in circuits.snapshot()
             if s["deployment"] in labels and isinstance(s["open_for_seconds"], float)]
    return NoProviderAvailable(
        "no available providers: every deployment of this model is cooling down after "
        "failures", retry_after=min(waits) if waits else None)
