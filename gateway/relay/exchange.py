"""One generation request's state: what the relay's tasks share, and its outcome.

An ``Exchange`` is created by the generation handler before admission and lives until the
request's row is written. The upstream calls feed it events (it is the providers' ``Sink``
through each call), the writer drains ``pending`` to the client, and its properties say how
the request ended (``outcome``, ``usage``, ``cancel_phase``).

Rules:
- ``emit`` never checkpoints: a block of upstream bytes becomes one write.
- ``pending`` holds whole events only (keepalive comments go between them) and is bounded
  by ``HIGH_WATER``: past it the upstream read waits for the client (``writable``).
- ``stop(error)`` ends the request from outside (the drain, an output cap) with that error
  as its terminal event; every cancel here carries its reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from gateway.canonical import ChatRequest, StreamEvent, Usage
from gateway.config import Deadlines
from gateway.errors import GatewayError, OutputLimitExceeded, UpstreamTimeout
from gateway.relay.transcript import NOTHING, Transcript
from gateway.routing.targets import Target
from gateway.wire.encoder import Encoder

HIGH_WATER = 256 * 1024  # bytes buffered for a slow client before the upstream read pauses


class UpstreamCall(Protocol):
    """One call to a deployment, as the exchange sees it (``attempts.Attempt`` is one)."""

    @property
    def target(self) -> Target: ...

    @property
    def outcome(self) -> str: ...

    def abort(self) -> None:
        """Close the call's connection at once (sync)."""


@attrs.define(eq=False)
class Exchange:
    """Task-local state of one generation request; also the providers' ``Sink``."""

    generation_id: str
    request: ChatRequest
    target: Target
    deadlines: Deadlines
    encoder: Encoder | None  # None for a non-streaming answer
    started: float = attrs.field(factory=trio.current_time)
    transcript: Transcript = attrs.field(factory=Transcript)
    pending: bytearray = attrs.field(factory=bytearray)
    # A whole answer's body as an upstream of the client's own dialect sent it: relayed
    # with only the gateway's rewrites, every field the canonical model has no place for.
    whole: dict[str, Any] | None = None
    opening: bytes = b""  # what the encoder opened the stream with
    opening_sent: bool = False  # the writer sent what was pending (the opening with it)
    wake: trio.Event = attrs.field(factory=trio.Event)
    drained: trio.Event | None = None
    ready: trio.Event = attrs.field(factory=trio.Event)  # first event, or the end
    finished: bool = False
    failure: GatewayError | None = None
    first_event_at: float | None = None
    committed_at: float | None = None
    ended_at: float | None = None
    upstream_closed_at: float | None = None  # the provider call returned or unwound
    delivered: bool = False  # the last byte of the answer was handed to the server
    client_gone_at: float | None = None
    last_write: float = 0.0
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _moved_at: float = -1e9  # when the idle deadline was last moved
    stopped: GatewayError | None = None  # why ``stop`` ended the request
    # Characters of output relayed before ``stop`` (an upstream that ignores max_tokens).
    output_cap: int | None = None

    attempts: list[UpstreamCall] = attrs.field(factory=list)  # every call, in launch order
    winner: UpstreamCall | None = None  # the call whose answer this is
    # Checkpoints the output so far (streams only); set by the generation handler.
    save: Callable[[], Awaitable[None]] | None = None
    # Awaited once by the writer before the answer's last bytes go out (streams only): the
    # Responses route stores the answer there, so that a next turn can already name it.
    closing: Callable[[], Awaitable[None]] | None = None
    checkpoint_every: float = 5.0
    # Awaited at the commit point: the request's row is in the store (else the error that
    # is answered instead, and nothing is charged: ``withheld``).
    recorded: Callable[[], Awaitable[GatewayError | None]] | None = None
    withheld: bool = False

    def __attrs_post_init__(self) -> None:
        self.scope.deadline = self.started + self.deadlines.total
        if self.encoder is not None:
            self.opening = self.encoder.start()
            self.pending += self.opening

    def rename(self, model: str) -> None:
        """A fallback answers: the stream names ``model`` from here on, and from its
        opening too unless that went out already (the commit grace passed first)."""
        assert self.encoder is not None
        self.encoder.rename(model)
        self._reopen()

    def _reopen(self) -> None:
        """The encoder's opening changed (a new model, the upstream's own opening): it
        replaces the one pending, or is dropped if the old one went out already."""
        assert self.encoder is not None
        new = self.encoder.start()  # b"" while the encoder's opening stands
        if new and new != self.opening:
            if not self.opening_sent and self.pending.startswith(self.opening):
                self.pending[:len(self.opening)] = new
            self.opening = new

    # -- Sink -----------------------------------------------------------------------------

    def _heard(self) -> None:
        """The upstream produced an event: the first one commits; each one is liveness."""
        now = trio.current_time()
        if self.first_event_at is None:
            self.first_event_at = now
            self.ready.set()
        # Moving a deadline costs more than the rest of an emit; moving it at most every
        # idle/64 seconds keeps the idle deadline within 1.6 % of its nominal value.
        if now - self._moved_at >= self.deadlines.idle / 64:
            self._moved_at = now
            self.scope.deadline = min(
                self.started + self.deadlines.total, now + self.deadlines.idle
            )

    @property
    def passthrough(self) -> str | None:
        """The client's dialect if its encoder can splice that dialect's upstream chunks."""
        return self.encoder.splices if self.encoder is not None else None

    def _check_cap(self) -> None:
        if self.output_cap is not None and self.transcript.chars > self.output_cap:
            self.stop(OutputLimitExceeded())

    def emit(self, event: StreamEvent) -> None:
        self._heard()
        self.transcript.add(event)
        self._check_cap()
        if self.encoder is not None:
            data = self.encoder.event(event)
            if data:
                self.pending += data
                self.wake.set()

    def emit_spliced(self, data: str, at: int, chars: int) -> None:
        """The fast path for the bulk of a same-dialect stream: no parse, no re-encode."""
        assert self.encoder is not None  # passthrough is only offered to streams
        self._heard()
        self.transcript.events += 1
        self.transcript.chars += chars
        self._check_cap()
        self.pending += self.encoder.splice(data, at)
        self.wake.set()

    def emit_frame(self, kind: str | None, data: str, obj: dict[str, Any],
                   events: Sequence[StreamEvent]) -> None:
        """An event of an upstream of the client's own dialect: ``events`` are counted as
        ``emit`` counts them, and the event goes out as sent (``Encoder.frame``)."""
        assert self.encoder is not None  # passthrough is only offered to streams
        if events:
            self._heard()
            for event in events:
                self.transcript.add(event)
            self._check_cap()
        data_out = self.encoder.frame(kind, data, obj)
        if data_out:
            self.pending += data_out
            self.wake.set()
        else:  # only an event the encoder takes in (an opening) can change the opening
            self._reopen()

    def abort_all(self) -> None:
        """Close every running attempt's upstream connection at once (sync)."""
        for attempt in self.attempts:
            attempt.abort()

    def stop(self, error: GatewayError) -> None:
        """End the upstream call now; ``error`` becomes the request's terminal event."""
        if self.stopped is None and self.ended_at is None:
            self.stopped = error
            self.abort_all()  # the sockets close now, ahead of the cancellation
            self.scope.cancel(f"stopped: {error.message}")

    async def writable(self) -> None:
        # Deliberately no checkpoint on the fast path: the read loop already checkpoints
        # on every network read, and one here would undo write coalescing.
        if len(self.pending) > HIGH_WATER:
            # A slow client is not a silent upstream: the idle deadline pauses while we
            # wait (``client_stall`` and ``total`` still bound the wait).
            total = self.started + self.deadlines.total
            self.scope.deadline = total
            self.drained = trio.Event()
            await self.drained.wait()
            self.scope.deadline = min(total, trio.current_time() + self.deadlines.idle)

    # -- Outcome --------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """What the request is charged for: nothing if its answer was withheld."""
        return NOTHING if self.withheld else self.transcript.usage(self.request)

    async def commit_recorded(self) -> bool:
        """At the commit point: whether the store has the request's row. If not, the answer
        is withheld and ``failure`` says why."""
        if self.recorded is None:
            return True
        error = await self.recorded()
        if error is not None:
            self.failure, self.withheld = error, True
        return error is None

    def deadline_failure(self) -> GatewayError:
        now = trio.current_time()
        if now >= self.started + self.deadlines.total:
            return UpstreamTimeout("the request exceeded its total deadline", deadline="total")
        if self.first_event_at is None:
            return UpstreamTimeout("the upstream sent no first token in time",
                                   deadline="first_token")
        return UpstreamTimeout("the upstream went silent mid-stream", deadline="idle")

    def end(self) -> None:
        """Record the upstream call's end and queue the stream's tail."""
        self.ended_at = trio.current_time()
        if self.encoder is not None:
            if self.failure is not None:
                self.pending += self.encoder.error(self.failure, self.usage)
            else:
                self.pending += self.encoder.tail(self.usage, self.transcript.finish)
        self.finished = True
        self.ready.set()
        self.wake.set()

    @property
    def aborted(self) -> bool:
        """The client left before the whole answer was handed to the server."""
        return self.client_gone_at is not None and not self.delivered

    @property
    def cancel_phase(self) -> str | None:
        """Where the request was when its client left, or None if it did not."""
        if not self.aborted:
            return None
        if self.first_event_at is None:
            return "before_first_token"
        return "streaming" if self.ended_at is None else "after_upstream_done"

    @property
    def propagation(self) -> float | None:
        """Seconds from seeing the client leave to the upstream connection closing."""
        gone, closed = self.client_gone_at, self.upstream_closed_at
        if not self.aborted or gone is None or closed is None or closed < gone:
            return None  # no abort, or the upstream had finished before the client left
        return closed - gone

    @property
    def outcome(self) -> str:
        """The record's status: ok, partial, upstream_error or client_abort."""
        if self.aborted:
            return "client_abort"
        if self.failure is None and self.finished:
            return "ok"
        return "partial" if self.committed_at is not None else "upstream_error"
