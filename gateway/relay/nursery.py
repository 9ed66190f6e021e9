"""The relay: one generation request, one Trio nursery, from the first byte to the last.

A streamed request runs as siblings in one nursery owned by the ASGI handler:

    reader    runs the upstream call (the router's attempts, ``routing.py``, all inside the
              nursery), feeds events to the ``Exchange`` and appends the stream's tail
              (usage + [DONE], or the error)
    ticker    an SSE comment after ``keepalive`` seconds of client-side silence
    watcher   waits on ASGI ``receive()`` for ``http.disconnect`` and cancels the nursery
    saver     every ``checkpoint`` seconds while output flows, hands the output so far to
              ``Exchange.save`` (the ledger writes it into the reservation: what a crash
              would charge); it never holds the stream up
    (writer)  the handler's own body: decides the commit point, then drains the outbox

Whichever ends the request cancels the group; the upstream connection closes when the
reader's ``async with`` unwinds. Bookkeeping then runs shielded with a deadline.

The commit point: the status line is held until the first upstream event, the end of the
upstream call, or ``commit_grace`` seconds. A failure before it is an HTTP error with a JSON
body; after it, the dialect's terminal error event. A stream never ends cleanly unless the
upstream finished.

Rules:
- Never catch ``trio.Cancelled`` except to re-raise; never yield inside a cancel scope.
- The hand-over from reader to writer never checkpoints (``Exchange.emit`` is sync), so a
  block of upstream bytes becomes one write; the outbox is bounded (backpressure).
- Deadlines: ``total`` and, from the first event, ``idle`` (moved on every event, not on
  bytes, so a slow drip cannot defeat it) on one cancel scope around the upstream call;
  ``first_token`` per attempt (``routing.py``), since a retry gets its own.
- ``stop(error)`` ends a request from outside (the drain, an output cap) with that error as
  its terminal event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from gateway.canonical import ChatRequest, StreamEvent, Usage
from gateway.config import Deadlines
from gateway.errors import GatewayError, InternalError, OutputLimitExceeded, UpstreamTimeout
from gateway.providers.base import Target
from gateway.relay.transcript import Transcript
from gateway.wire.encoder import Encoder

log = logging.getLogger("arouter.relay")

HIGH_WATER = 256 * 1024  # bytes buffered for a slow client before the upstream read pauses

ASGIReceive = Any
ASGISend = Any


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
    outbox: bytearray = attrs.field(factory=bytearray)
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
    output_cap: int | None = None  # characters of output relayed before ``stop``

    attempts: list[Any] = attrs.field(factory=list)  # routing.Attempt, in launch order
    winner: Any = None  # the attempt whose answer this is
    # Checkpoints the output so far (streams only); set by the generation handler.
    save: Callable[[], Awaitable[None]] | None = None
    checkpoint_every: float = 5.0

    def __attrs_post_init__(self) -> None:
        self.scope.deadline = self.started + self.deadlines.total
        if self.encoder is not None:
            self.outbox += self.encoder.start()

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
                self.outbox += data
                self.wake.set()

    def emit_spliced(self, data: str, at: int, chars: int) -> None:
        """The fast path for the bulk of a same-dialect stream: no parse, no re-encode."""
        assert self.encoder is not None  # passthrough is only offered to streams
        self._heard()
        self.transcript.events += 1
        self.transcript.chars += chars
        self._check_cap()
        self.outbox += self.encoder.splice(data, at)
        self.wake.set()

    def abort_all(self) -> None:
        """Close every running attempt's upstream connection at once (sync)."""
        for attempt in self.attempts:
            attempt.abort()

    def stop(self, error: GatewayError) -> None:
        """End the upstream call now; ``error`` becomes the request's terminal event."""
        if self.stopped is None and self.ended_at is None:
            self.stopped = error
            self.abort_all()  # the sockets close now, ahead of the cancellation
            self.scope.cancel()

    async def writable(self) -> None:
        # Deliberately no checkpoint on the fast path: the read loop already checkpoints
        # on every network read, and one here would undo write coalescing.
        if len(self.outbox) > HIGH_WATER:
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
        return self.transcript.usage(self.request)

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
                self.outbox += self.encoder.error(self.failure, self.usage)
            else:
                self.outbox += self.encoder.tail(self.usage, self.transcript.finish)
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


Upstream = Callable[[], Awaitable[None]]


async def read_upstream(exchange: Exchange, upstream: Upstream) -> None:
    """The reader task: run the upstream call under the deadlines, then queue the tail."""
    try:
        try:
            with exchange.scope:
                await upstream()
        finally:
            # Also on cancellation: when the client left, this is when the upstream closed
            # (unless the watcher closed it first and noted the time itself).
            if exchange.upstream_closed_at is None:
                exchange.upstream_closed_at = trio.current_time()
        if exchange.scope.cancelled_caught:
            exchange.failure = exchange.stopped or exchange.deadline_failure()
    except GatewayError as exc:
        exchange.failure = exc
    except Exception:
        # The one task boundary where an unexpected bug becomes a terminal event instead
        # of a silently truncated stream; the traceback goes to the log only.
        log.exception("provider failed", extra={"generation_id": exchange.generation_id})
        exchange.failure = InternalError()
    if exchange.client_gone_at is not None:
        # The client left (and the watcher may have closed the upstream under us, which
        # surfaces as an upstream error): there is nobody to send a tail to.
        exchange.failure = None
        return
    exchange.end()


async def watch_disconnect(
    exchange: Exchange, receive: ASGIReceive, cancel_scope: trio.CancelScope
) -> None:
    """The watcher task: a client that goes away ends the request at once."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.client_gone_at = trio.current_time()
            if exchange.attempts and exchange.upstream_closed_at is None:
                # Close the upstream sockets now rather than when the cancellation reaches
                # the reader: on a saturated loop that is a whole scheduler pass sooner.
                exchange.abort_all()
                exchange.upstream_closed_at = trio.current_time()
            cancel_scope.cancel()
            return


async def tick_keepalive(exchange: Exchange) -> None:
    """The ticker task: an SSE comment whenever the client has heard nothing for a while."""
    interval = exchange.deadlines.keepalive
    while True:
        await trio.sleep_until(exchange.last_write + interval)
        if trio.current_time() < exchange.last_write + interval:
            continue  # the writer sent something meanwhile
        if exchange.outbox:
            # Bytes are waiting on a slow client: that is not silence.
            await trio.sleep(interval)
            continue
        # Comments only ever go between whole events: the outbox holds whole events.
        assert exchange.encoder is not None  # only streams tick
        exchange.outbox += exchange.encoder.keepalive
        exchange.last_write = trio.current_time()
        exchange.wake.set()


async def save_progress(exchange: Exchange) -> None:
    """The saver task: the output so far, every ``checkpoint_every`` seconds while it grows
    (a silent stream costs no writes). ``save`` must not raise: it logs its own failures."""
    assert exchange.save is not None
    saved = 0
    while True:
        await trio.sleep(exchange.checkpoint_every)
        if exchange.transcript.chars != saved:
            saved = exchange.transcript.chars
            await exchange.save()


def stream_headers(generation_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-generation-id", generation_id.encode()),
    ]


async def _drain(exchange: Exchange, send: ASGISend) -> None:
    """The writer: everything pending goes out in one send; the last send ends the body."""
    while True:
        if not exchange.outbox and not exchange.finished:
            exchange.wake = trio.Event()
            await exchange.wake.wait()
        last = exchange.delivered = exchange.finished
        data = bytes(exchange.outbox)
        exchange.outbox.clear()
        if exchange.drained is not None:
            exchange.drained.set()
        # A client that leaves once it has read [DONE] left after the answer, not during it.
        await send({"type": "http.response.body", "body": data, "more_body": not last})
        exchange.last_write = trio.current_time()
        if last:
            return


async def relay_stream(
    exchange: Exchange,
    upstream: Upstream,
    receive: ASGIReceive,
    send: ASGISend,
    send_error: Any,
) -> None:
    """Serve a streamed request; ``send_error(error)`` answers a pre-commit failure."""
    deadlines = exchange.deadlines
    # Bounded as a whole too. (A client that stops reading blocks hypercorn's shielded
    # send, which no cancel scope reaches: ``client_stall`` ends that one in the kernel.)
    with trio.move_on_after(deadlines.total + deadlines.settle):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, exchange, receive, nursery.cancel_scope)
            nursery.start_soon(read_upstream, exchange, upstream)
            with trio.move_on_after(deadlines.commit_grace):
                await exchange.ready.wait()
            if exchange.failure is not None and exchange.transcript.events == 0:
                exchange.delivered = True
                await send_error(exchange.failure)
            else:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": stream_headers(exchange.generation_id),
                    }
                )
                exchange.committed_at = exchange.last_write = trio.current_time()
                nursery.start_soon(tick_keepalive, exchange)
                if exchange.save is not None:
                    nursery.start_soon(save_progress, exchange)
                await _drain(exchange, send)
            nursery.cancel_scope.cancel()


async def relay_unary(exchange: Exchange, upstream: Upstream, receive: ASGIReceive) -> None:
    """Run a non-streamed request to its end; the caller renders the answer or the error."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_disconnect, exchange, receive, nursery.cancel_scope)
        await read_upstream(exchange, upstream)
        nursery.cancel_scope.cancel()
