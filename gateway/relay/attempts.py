"""The attempts: which deployments serve a request, retried and hedged until its first token.

``Attempts.run`` is what the relay's reader runs (``nursery.Upstream``). Each upstream call
is an ``Attempt``, a child task of ``run`` inside the request's nursery, so the client
leaving, a deadline or the drain cancels every attempt at once. Which deployment to call
next is a pure decision (``routing/choice.py``); how each call ends feeds its circuit
(``routing/circuits.py``).

Before the first token nothing has reached the client but keepalive comments, so a failed
attempt is retried invisibly: on another deployment if one is available, else on the same
one after a backoff, up to ``max_attempts`` calls. What may be retried:

    connect errors, 408/429/5xx/529, first-token timeouts, protocol garbage   retry or fall back
    the provider refusing our credentials (401/403)                        fall back only
    the request itself refused (4xx that blames it), internal errors        no retry

**Hedging**: if the first token has not come ``hedge_after`` seconds into an attempt, the
next deployment starts alongside it. The first attempt to produce an event wins (``emit``
is synchronous, so exactly one can); every other attempt is cancelled on the spot and its
upstream connection closed. After the first token there is no silent switch: a failure is
the stream's terminal error event, and the ledger names the deployment that failed.

Every cancel says why: "hedge lost", "client disconnected", "stopped: ..." (the drain, an
output cap).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from gateway.canonical import StreamEvent
from gateway.config import Routing
from gateway.errors import (
    GatewayError,
    InternalError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.providers.base import Provider
from gateway.relay.exchange import HIGH_WATER, Exchange
from gateway.routing.catalog import Route
from gateway.routing.choice import choose, none_available
from gateway.routing.circuits import Circuits
from gateway.routing.targets import Target

log = logging.getLogger("arouter.routing")


@attrs.define(eq=False)
class Attempt:
    """One upstream call of a request: the provider's ``Sink`` until it wins or loses."""

    exchange: Exchange
    target: Target
    started: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    first: trio.CancelScope = attrs.field(factory=trio.CancelScope)  # first-token deadline
    ended_at: float | None = None
    outcome: str = "running"  # ok | hedge_lost | cancelled | an error type
    error: GatewayError | None = None
    _abort: Callable[[], None] | None = None
    _held: list[tuple[str | None, str, dict[str, Any]]] = attrs.field(factory=list)
    _held_bytes: int = 0
    # The circuit's, at the first event, with the seconds since the call started.
    on_answer: Callable[[float], None] = lambda waited: None

    # -- Sink -----------------------------------------------------------------------------

    @property
    def passthrough(self) -> str | None:
        return self.exchange.passthrough

    def claim(self) -> bool:
        """Become the answer, if no other attempt did first. Losers are cancelled now."""
        exchange = self.exchange
        winner = exchange.winner
        if winner is self:
            return True
        if winner is not None:
            return False
        exchange.winner = self
        exchange.target = self.target
        answering = self.target.public
        if answering and answering != exchange.request.model and exchange.encoder is not None:
            exchange.rename(answering)  # a fallback answered: the stream names it
        self.first.deadline = math.inf
        # A half-open circuit closes at its probe's first token; the latency is measured.
        self.on_answer(trio.current_time() - self.started)
        for other in exchange.attempts:
            if isinstance(other, Attempt) and other is not self and other.ended_at is None:
                other.lose()
        return True

    def emit(self, event: StreamEvent) -> None:
        if self.claim():
            self.exchange.emit(event)

    def emit_spliced(self, data: str, at: int, chars: int) -> None:
        if self.claim():
            self._release_held()
            self.exchange.emit_spliced(data, at, chars)

    def emit_frame(self, kind: str | None, data: str, obj: dict[str, Any],
                   events: Sequence[StreamEvent]) -> None:
        # An event that says nothing yet (an opening, an empty block) does not make this
        # call the answer: it waits for the first that does, and goes out just before it.
        if not events and self.exchange.winner is not self:
            self._held_bytes += len(data)
            if self._held_bytes > HIGH_WATER:  # events that say nothing, without end
                raise UpstreamProtocolError("the upstream sent over "
                                            f"{HIGH_WATER} bytes of events before any answer")
            self._held.append((kind, data, obj))
            return
        if self.claim():
            self._release_held()
            self.exchange.emit_frame(kind, data, obj, events)

    def _release_held(self) -> None:
        """The events held until this call answered go out first, in order."""
        for held in self._held:
            self.exchange.emit_frame(*held, ())
        self._held.clear()

    def keep_whole(self, answer: dict[str, Any]) -> None:
        if self.claim():
            self.exchange.whole = answer

    async def writable(self) -> None:
        await self.exchange.writable()

    def abort_with(self, abort: Callable[[], None]) -> None:
        self._abort = abort

    # -- control --------------------------------------------------------------------------

    def abort(self) -> None:
        """Close this attempt's upstream connection at once (sync; before cancellation)."""
        if self._abort is not None and self.ended_at is None:
            self._abort()

    def lose(self) -> None:
        self.outcome = "hedge_lost"
        self.abort()
        self.scope.cancel("hedge lost")


def _upstream_failed(error: GatewayError) -> bool:
    """The deployment failed us (the request itself was fine): it counts against the
    deployment's health, and another deployment may be tried."""
    return isinstance(error, UpstreamError)


class Attempts:
    """The retry and hedge loop over a route's deployments (one per gateway process)."""

    def __init__(
        self, policy: Routing, circuits: Circuits, providers: Mapping[str, Provider],
        on_attempt: Callable[[Attempt], None] = lambda attempt: None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.circuits = circuits
        self.providers = providers
        self._on_attempt = on_attempt
        self._rng = rng or random.Random()

    def _choose(self, route: Route, tried: Mapping[str, int],
                excluded: set[str]) -> Target | None:
        return choose(route, self.circuits, tried, excluded, strategy=self.policy.strategy,
                      rng=self._rng)

    async def run(
        self, exchange: Exchange, route: Route, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Call deployments until one answers; raise the last failure if none did.
        ``headers`` are the client's, of which each provider gets its allowlist."""
        policy = self.policy
        deadlines = exchange.deadlines
        send, receive = trio.open_memory_channel[Attempt](math.inf)
        tried: dict[str, int] = {}
        excluded: set[str] = set()  # refused us for good (credentials) or ran now
        failures: list[Attempt] = []
        running: list[Attempt] = []
        hedge_due = False
        async with trio.open_nursery() as nursery:
            while exchange.winner is None:
                launched = len(exchange.attempts)
                if launched < policy.max_attempts and (not running or hedge_due):
                    # A request ended before its next call (the drain, the client gone, a
                    # deadline) makes no call: ``attempts`` lists only calls really made.
                    # (No checkpoint unless cancelled: choosing and launching stay together.)
                    await trio.lowlevel.checkpoint_if_cancelled()
                    busy = {a.target.label for a in running}
                    target = self._choose(route, tried, excluded | busy)
                    if target is not None and tried.get(target.label) and not running:
                        # Only deployments already tried are left: back off, then choose
                        # again, since a circuit may have opened meanwhile. Choosing and
                        # launching must not be split by a checkpoint.
                        await trio.sleep(policy.backoff * 2 ** (tried[target.label] - 1))
                        target = self._choose(route, tried, excluded)
                    if target is not None:
                        retries = tried.get(target.label, 0)
                        attempt = self._launch(nursery, exchange, target, headers, send,
                                               deadlines.first_token)
                        tried[target.label] = retries + 1
                        running.append(attempt)
                hedge_due = False
                if not running:
                    break
                more = len(exchange.attempts) < policy.max_attempts
                hedge = route.hedge_after if more and len(route.targets) > 1 else None
                with trio.move_on_after(hedge if hedge is not None else math.inf) as waited:
                    ended = await receive.receive()
                if waited.cancelled_caught:
                    hedge_due = True  # the running attempts go on; one more joins them
                    continue
                running.remove(ended)
                if ended is exchange.winner:
                    break
                if ended.error is not None:
                    failures.append(ended)
                    if not _upstream_failed(ended.error):
                        break
                    if not ended.error.retryable:
                        excluded.add(ended.target.label)
            # Leaving the nursery waits for the winner's whole answer (or the last hedges).
        winner = exchange.winner
        if winner is None:
            if failures:
                exchange.target = failures[-1].target  # the ledger names who failed last
            raise self._failure(route, failures)
        assert isinstance(winner, Attempt)  # only attempts claim an exchange
        if winner.error is not None:
            raise winner.error  # after the first token: the stream's terminal error

    def _launch(
        self, nursery: trio.Nursery, exchange: Exchange, target: Target,
        headers: list[tuple[bytes, bytes]], send: trio.MemorySendChannel[Attempt],
        first_token: float,
    ) -> Attempt:
        attempt = Attempt(exchange, target, trio.current_time(),
                          on_answer=partial(self.circuits.answered, target.label))
        attempt.first.deadline = attempt.started + first_token
        exchange.attempts.append(attempt)
        self.circuits.started(target.label)
        nursery.start_soon(self._attempt, attempt, headers, send)
        return attempt

    async def _attempt(
        self, attempt: Attempt, headers: list[tuple[bytes, bytes]],
        send: trio.MemorySendChannel[Attempt],
    ) -> None:
        exchange = attempt.exchange
        target = attempt.target
        provider = self.providers[target.provider.dialect]
        allowed = target.provider.forward_headers
        forwarded = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if allowed and name.decode("latin-1") in allowed
        }
        try:
            with attempt.scope:
                with attempt.first:
                    await provider.run(exchange.request, target, attempt, forwarded)
                if attempt.first.cancelled_caught:
                    raise UpstreamTimeout("the upstream sent no first token in time",
                                          deadline="first_token")
                attempt.claim()  # an answer with no events at all is still the answer
            if attempt.outcome == "running":
                attempt.outcome = "ok"
        except GatewayError as exc:
            if attempt.outcome != "hedge_lost":  # else: its socket was closed by the winner
                attempt.error, attempt.outcome = exc, exc.type
        except Exception:
            log.exception("provider failed", extra={"generation_id": exchange.generation_id})
            attempt.error = InternalError()
            if attempt.outcome != "hedge_lost":
                attempt.outcome = attempt.error.type
        finally:
            attempt.ended_at = now = trio.current_time()
            if exchange.client_gone_at is not None and attempt.outcome not in ("ok",
                                                                               "hedge_lost"):
                attempt.outcome = "cancelled"  # the client left: whatever broke, we broke it
            elif attempt.outcome == "running":  # the request ended around it
                if exchange.stopped is not None:
                    attempt.outcome = exchange.stopped.type  # the drain, the output cap
                elif now >= exchange.scope.deadline:
                    attempt.error = exchange.deadline_failure()  # idle or total
                    attempt.outcome = attempt.error.type
                else:
                    attempt.outcome = "cancelled"
            self._judge(attempt)
            self._on_attempt(attempt)
            send.send_nowait(attempt)

    def _judge(self, attempt: Attempt) -> None:
        label, error = attempt.target.label, attempt.error
        exchange = attempt.exchange
        if error is None and attempt.outcome == "ok":
            self.circuits.succeeded(label)
        elif attempt.outcome == "hedge_lost" or exchange.client_gone_at is not None or (
            exchange.stopped is not None
        ):
            # Closed under it by us (the client left, a hedge won, the drain): its errors
            # say nothing about the deployment.
            self.circuits.ended(label)
        elif error is not None and _upstream_failed(error) and not (
            isinstance(error, UpstreamTimeout) and error.deadline == "total"
        ):  # a request too long for its total deadline says nothing about the deployment
            retry_after = getattr(error, "retry_after", None)
            is_429 = isinstance(error, UpstreamStatusError) and error.upstream_status == 429
            self.circuits.failed(label, error.type, retry_after if is_429 else None)
        else:
            self.circuits.ended(label)

    def _failure(self, route: Route, failures: list[Attempt]) -> GatewayError:
        if failures:
            error = failures[-1].error
            assert error is not None
            return error
        return none_available(route, self.circuits)
