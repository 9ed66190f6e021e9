"""The relay: one generation request, one Trio nursery, from the first byte to the last.

A streamed request runs as siblings in one nursery owned by the ASGI handler:

    reader    runs the upstream call (``attempts.py``: retries, fallbacks and hedges, all inside the
              nursery), feeds events to the ``Exchange`` and appends the stream's tail
              (usage + [DONE], or the error)
    ticker    an SSE comment after ``keepalive`` seconds of client-side silence
    watcher   waits on ASGI ``receive()`` for ``http.disconnect`` and cancels the nursery
    saver     every ``checkpoint`` seconds while output flows, hands the output so far to
              ``Exchange.save`` (the ledger writes it into the reservation: what a crash
              would charge); it never holds the stream up
    (writer)  the handler's own body: decides the commit point, then drains the pending

Whichever ends the request cancels the group; the upstream connection closes when the
reader's ``async with`` unwinds. Bookkeeping then runs shielded with a deadline.

The commit point: the status line is held until the first upstream event, the end of the
upstream call, or ``commit_grace`` seconds. A failure before it is an HTTP error with a JSON
body; after it, the dialect's terminal error event. A stream never ends cleanly unless the
upstream finished.

Rules:
- Never catch ``trio.Cancelled`` except to re-raise; never yield inside a cancel scope.
- The hand-over from reader to writer never checkpoints (``Exchange.emit`` is sync), so a
  block of upstream bytes becomes one write; the pending is bounded (backpressure).
- Deadlines: ``total`` and, from the first event, ``idle`` (moved on every event, not on
  bytes, so a slow drip cannot defeat it) on one cancel scope around the upstream call;
  ``first_token`` per attempt (``attempts.py``), since a retry gets its own.
- ``stop(error)`` ends a request from outside (the drain, an output cap) with that error as
  its terminal event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from gateway.errors import GatewayError, InternalError
from gateway.relay.attempts import Attempts
from gateway.relay.exchange import Exchange
from gateway.routing.catalog import Route

log = logging.getLogger("arouter.relay")

# The ASGI callables, as the relay uses them (the HTTP side's types are above this layer).
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@attrs.frozen
class Upstream:
    """What the reader runs: the route's attempts (``attempts.Attempts.run``: retries,
    fallbacks and hedges until one deployment answers), for this request."""

    attempts: Attempts
    route: Route
    headers: Headers  # the client's, of which each provider gets its allowlist

    async def run(self, exchange: Exchange) -> None:
        await self.attempts.run(exchange, self.route, self.headers)


async def read_upstream(exchange: Exchange, upstream: Upstream) -> None:
    """The reader task: run the upstream call under the deadlines, then queue the tail."""
    try:
        try:
            with exchange.scope:
                await upstream.run(exchange)
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
            cancel_scope.cancel("client disconnected")
            return


async def tick_keepalive(exchange: Exchange) -> None:
    """The ticker task: an SSE comment whenever the client has heard nothing for a while."""
    interval = exchange.deadlines.keepalive
    while True:
        await trio.sleep_until(exchange.last_write + interval)
        if trio.current_time() < exchange.last_write + interval:
            continue  # the writer sent something meanwhile
        if exchange.pending:
            # Bytes are waiting on a slow client: that is not silence.
            await trio.sleep(interval)
            continue
        # Comments only ever go between whole events: the pending holds whole events.
        assert exchange.encoder is not None  # only streams tick
        exchange.pending += exchange.encoder.keepalive
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
        if not exchange.pending and not exchange.finished:
            exchange.wake = trio.Event()
            await exchange.wake.wait()
        if exchange.finished and exchange.closing is not None:
            closing, exchange.closing = exchange.closing, None
            await closing()
        last = exchange.delivered = exchange.finished
        data = bytes(exchange.pending)
        exchange.pending.clear()
        exchange.opening_sent = True
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
            committing = exchange.failure is None or exchange.transcript.events > 0
            if committing and not await exchange.commit_recorded():
                committing = False  # the store has no row of it: answered as an error
            if not committing:
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
            nursery.cancel_scope.cancel("the response is complete")


async def relay_unary(exchange: Exchange, upstream: Upstream, receive: ASGIReceive) -> None:
    """Run a non-streamed request to its end; the caller renders the answer or the error."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_disconnect, exchange, receive, nursery.cancel_scope)
        await read_upstream(exchange, upstream)
        if exchange.failure is None and not exchange.aborted:
            await exchange.commit_recorded()
        nursery.cancel_scope.cancel("the answer is complete")
