"""Circuit breakers: one per deployment, and how busy each one is.

    closed     calls flow; ``failure_threshold`` consecutive failures open the circuit
    open       no calls for ``cooldown`` seconds (or the upstream's Retry-After, if longer)
    half-open  after the cooldown, one probe call at a time; its first token closes the
               circuit (a long stream must not hold the deployment shut while it runs),
               its failure before that opens it again for another cooldown

A deployment that answers 429 with ``Retry-After`` is opened at once for that long: the
provider said when to come back (FAULTS.md C2). What counts as a failure is the router's
call (``relay/attempts.py``): upstream faults and first-token timeouts, not a client's bad request
and not a client that left.

Pure state on a clock: the router feeds outcomes in, the admin API and the metrics read
``snapshot``. Per process: each gateway process learns its deployments' health itself.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Each new first-token time moves a deployment's latency this far toward it: the last
# dozen answers or so decide.
LATENCY_WEIGHT = 0.2
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # the metric's encoding


@attrs.define
class _Circuit:
    failures: int = 0  # consecutive
    open_until: float | None = None
    probing: bool = False  # a half-open probe is in flight
    in_flight: int = 0
    successes: int = 0
    total_failures: int = 0
    last_error: str | None = None
    latency: float | None = None  # time to a first token, moving average (seconds)


class Circuits:
    def __init__(
        self, failure_threshold: int, cooldown: float, clock: Callable[[], float],
        on_change: Callable[[str, str], None] = lambda label, state: None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, label: str) -> _Circuit:
        circuit = self._circuits.get(label)
        if circuit is None:
            circuit = self._circuits[label] = _Circuit()
        return circuit

    def state(self, label: str) -> str:
        circuit = self._circuits.get(label)
        if circuit is None or circuit.open_until is None:
            return CLOSED
        return OPEN if self._clock() < circuit.open_until else HALF_OPEN

    def available(self, label: str) -> bool:
        """May a call go to this deployment now (closed, or a free half-open probe)?"""
        state = self.state(label)
        return state == CLOSED or (state == HALF_OPEN and not self._get(label).probing)

    def in_flight(self, label: str) -> int:
        circuit = self._circuits.get(label)
        return 0 if circuit is None else circuit.in_flight

    def started(self, label: str) -> None:
        circuit = self._get(label)
        circuit.in_flight += 1
        if self.state(label) == HALF_OPEN:
            circuit.probing = True

    def succeeded(self, label: str) -> None:
        circuit = self._get(label)
        circuit.in_flight -= 1
        circuit.successes += 1
        was = self.state(label)
        circuit.failures, circuit.open_until, circuit.probing = 0, None, False
        if was != CLOSED:
            self._on_change(label, CLOSED)

    def answered(self, label: str, waited: float | None = None) -> None:
        """A call's first token (or the whole answer's arrival), ``waited`` seconds after
        the call started: a half-open probe has succeeded, so the circuit closes now, while
        the call goes on; the deployment's latency moves toward ``waited``."""
        circuit = self._get(label)
        if waited is not None:
            last = circuit.latency
            circuit.latency = waited if last is None else last + LATENCY_WEIGHT * (waited - last)
        if circuit.probing:
            circuit.probing = False
            circuit.failures, circuit.open_until = 0, None
            self._on_change(label, CLOSED)

    def failed(self, label: str, error: str, retry_after: float | None = None) -> None:
        circuit = self._get(label)
        circuit.in_flight -= 1
        circuit.failures += 1
        circuit.total_failures += 1
        circuit.last_error = error
        probe_failed = circuit.probing
        circuit.probing = False
        if retry_after is not None or probe_failed or circuit.failures >= self.failure_threshold:
            wait = max(self.cooldown if retry_after is None else retry_after, 0.0)
            circuit.open_until = max(circuit.open_until or 0.0, self._clock() + wait)
            self._on_change(label, OPEN)

    def latency(self, label: str) -> float | None:
        """The deployment's time to a first token, averaged over its recent answers (None
        until one answered here)."""
        circuit = self._circuits.get(label)
        return None if circuit is None else circuit.latency

    def ended(self, label: str) -> None:
        """A call that neither succeeded nor failed (cancelled: the client left, or a hedge
        lost): it frees its slot and its probe without judging the deployment."""
        circuit = self._get(label)
        circuit.in_flight -= 1
        circuit.probing = False

    def snapshot(self) -> list[dict[str, object]]:
        now = self._clock()
        return [
            {
                "deployment": label,
                "state": self.state(label),
                "consecutive_failures": c.failures,
                "open_for_seconds": None if c.open_until is None
                else round(max(0.0, c.open_until - now), 3),
                "in_flight": c.in_flight,
                "successes": c.successes,
                "failures": c.total_failures,
                "last_error": c.last_error,
            }
            for label, c in sorted(self._circuits.items())
        ]
