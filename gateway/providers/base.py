"""What a provider adapter is, and what it reports into.

Rules:
- ``Provider.run`` opens its upstream call, emits canonical events into the ``Sink`` as they
  arrive and returns once the answer is complete. It runs inside the relay's per-request
  nursery, in the reader task, and opens every resource with ``async with`` there: when the
  relay cancels (client gone, deadline, shutdown) the upstream connection closes at once.
- ``Sink.emit`` never checkpoints, so a block of upstream bytes holding many events is handed
  over in one go and the writer sends it in one write.
- Failures are raised as ``GatewayError`` subclasses; foreign exceptions are mapped at the
  adapter's own boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.canonical import ChatRequest, StreamEvent
from gateway.routing.targets import Target


class Sink(Protocol):
    @property
    def passthrough(self) -> str | None:
        """The client's dialect when its encoder relays an upstream event of that same
        dialect as sent (``emit_spliced`` for OpenAI's plain deltas, ``emit_frame`` for
        every Anthropic or Gemini event), else None."""

    def emit(self, event: StreamEvent) -> None:
        """Take one event; never blocks, never checkpoints."""

    def emit_spliced(self, data: str, at: int, chars: int) -> None:
        """Take a plain text delta in the client's own dialect, to relay without parsing:
        ``data`` is the event's payload, ``at`` where the part to keep starts, ``chars``
        the approximate text length (for usage estimates)."""

    def emit_frame(self, kind: str | None, data: str, obj: dict[str, Any],
                   events: Sequence[StreamEvent]) -> None:
        """Take one upstream event in the client's own dialect, to relay as sent: ``kind``
        its SSE event name, ``data`` its payload, ``obj`` that payload parsed, ``events``
        what it means (as ``emit`` would take them, for usage and the commit)."""

    def keep_whole(self, answer: dict[str, Any]) -> None:
        """Take a whole (non-streamed) answer as the upstream sent it (parsed), for a
        client of the same dialect (its events follow through ``emit``)."""

    async def writable(self) -> None:
        """Return once the client side has room (backpressure on the upstream read)."""

    def abort_with(self, abort: Callable[[], None]) -> None:
        """Register a sync callable that closes the upstream connection at once; the relay
        calls it the moment its client leaves, ahead of the cancellation."""


class Provider(Protocol):
    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        """Relay one answer into ``sink``; ``headers`` are client headers allowed upstream."""
