"""The circuit breaker and the router's choice of deployment, as pure state on a clock."""

from __future__ import annotations

import random
from collections import Counter

from gateway.config import SIM_PROVIDER
from gateway.routing.catalog import Route
from gateway.routing.choice import choose
from gateway.routing.circuits import CLOSED, HALF_OPEN, OPEN, Circuits
from gateway.routing.targets import Target


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def health(threshold: int = 3, cooldown: float = 10.0) -> tuple[Circuits, Clock, list[str]]:
    clock, changes = Clock(), []
    return Circuits(threshold, cooldown, clock, lambda label, state: changes.append(state)), \
        clock, changes


def fail(h: Circuits, label: str = "a", retry_after: float | None = None) -> None:
    h.started(label)
    h.failed(label, "upstream_error", retry_after)


def test_consecutive_failures_open_then_a_half_open_probe_closes() -> None:
    h, clock, changes = health()
    fail(h)
    fail(h)
    h.started("a")
    h.succeeded("a")  # a success in between resets the count
    fail(h)
    fail(h)
    assert h.state("a") == CLOSED and h.available("a")
    fail(h)
    assert h.state("a") == OPEN and not h.available("a")
    clock.now += 10
    assert h.state("a") == HALF_OPEN and h.available("a")
    h.started("a")  # the probe
    assert not h.available("a")  # one at a time
    h.succeeded("a")
    assert h.state("a") == CLOSED and changes == [OPEN, CLOSED]


def test_a_probe_closes_the_circuit_at_its_first_token_not_its_end() -> None:
    h, clock, changes = health(threshold=1)
    fail(h)
    clock.now += 10
    h.started("a")  # the probe: a long stream
    assert not h.available("a")
    h.answered("a")  # its first token
    assert h.state("a") == CLOSED and h.available("a") and changes == [OPEN, CLOSED]
    assert h.in_flight("a") == 1  # still streaming
    h.answered("a")  # first tokens of calls that were not probes change nothing
    h.succeeded("a")
    assert h.in_flight("a") == 0 and changes == [OPEN, CLOSED]


def test_a_failed_probe_opens_again_and_retry_after_wins_over_the_cooldown() -> None:
    h, clock, _ = health(threshold=5)
    fail(h, retry_after=30.0)  # one 429 is enough
    assert h.state("a") == OPEN
    clock.now += 29
    assert h.state("a") == OPEN
    clock.now += 1
    h.started("a")
    h.failed("a", "timeout")
    assert h.state("a") == OPEN  # the probe failed
    clock.now += 10
    h.started("a")
    h.ended("a")  # a cancelled probe frees its slot without a verdict
    assert h.available("a")
    [snapshot] = h.snapshot()
    assert snapshot["in_flight"] == 0 and snapshot["failures"] == 2


def target(name: str, weight: float = 1.0, priority: int = 0) -> Target:
    return Target(SIM_PROVIDER, name, weight=weight, priority=priority)


def test_the_choice_is_by_priority_weight_health_and_busyness() -> None:
    h, _, _ = health(threshold=1)
    a, b, c = target("a", weight=3), target("b", weight=1), target("c", priority=1)
    route = Route("m", (a, b, c))
    rng = random.Random(7)

    def pick(tried: dict[str, int], excluded: set[str], strategy: str = "weighted",
             circuits: Circuits = h) -> Target | None:
        return choose(route if strategy == "weighted" else Route("m", (a, b)), circuits,
                      tried, excluded, strategy=strategy, rng=rng)

    picks = Counter(pick({}, set()).model for _ in range(4000))  # type: ignore[union-attr]
    assert set(picks) == {"a", "b"} and 2.6 < picks["a"] / picks["b"] < 3.4
    assert pick({"sim/a": 1}, set()) == b  # untried first
    fail(h, "sim/a")
    fail(h, "sim/b")
    assert pick({}, set()) == c  # both open: the next priority
    assert pick({}, {"sim/c"}) is None

    busy = health()[0]
    busy.started("sim/a")
    assert pick({}, set(), "least_busy", busy) == b


def test_a_deployments_latency_is_a_moving_average_of_its_first_token_times() -> None:
    h, _, _ = health()
    assert h.latency("a") is None
    h.answered("a", 1.0)
    assert h.latency("a") == 1.0
    for _ in range(30):
        h.answered("a", 0.1)
    latency = h.latency("a")
    assert latency is not None and 0.1 < latency < 0.11  # the recent answers decide
    h.answered("a")  # an answer with no time (a probe's) leaves it as it is
    assert h.latency("a") == latency


def test_sort_by_latency_takes_the_fastest_measured_then_the_route_order() -> None:
    h, _, _ = health(threshold=1)
    slow, fast, unheard = target("slow"), target("fast", priority=5), target("new")
    route = Route("m", (slow, fast, unheard), by_latency=True)

    def pick(tried: dict[str, int] | None = None) -> Target | None:
        return choose(route, h, tried or {}, set(), strategy="weighted",
                      rng=random.Random(1))

    assert pick() == slow  # nothing measured: the route's order (priority, then position)
    h.answered("sim/slow", 2.0)
    h.answered("sim/fast", 0.2)
    assert pick() == fast  # despite its lower priority
    assert pick({"sim/fast": 1}) == slow  # untried ones still come first on a retry
    fail(h, "sim/fast")
    assert pick() == slow  # an open circuit is skipped as ever
