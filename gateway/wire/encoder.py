"""What the relay needs from a client dialect to stream an answer: an ``Encoder``.

Each client dialect's ``render`` module (``wire/openai/render.py``,
``wire/anthropic/render.py``, ``wire/gemini/render.py``) has a ``StreamEncoder`` that renders
the canonical stream events into its own wire bytes. The relay never looks inside
them: it only orders the calls (``start``, ``event`` per event, then ``tail`` or ``error``
exactly once) and puts ``keepalive`` between whole events during silence.

An upstream of the client's own dialect (``splices``) is relayed as it sent its answer, not
re-rendered: OpenAI's plain text deltas by ``splice`` (the rest of an OpenAI stream is parsed
and rendered), every event of an Anthropic or Gemini stream by ``frame``. Either way the
canonical events still reach the relay, for usage, caps and the commit; only the bytes differ.

Rules: pure (no I/O, no clock); every method returns whole events, never a fragment, so the
relay may interleave keepalives anywhere between two calls.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.canonical import FinishReason, StreamEvent, Usage
from gateway.errors import GatewayError


class Encoder(Protocol):
    # Sent during upstream silence: an SSE comment, or the dialect's own ping event.
    keepalive: bytes
    # The dialect an upstream must speak for ``splice`` or ``frame`` to apply, or None.
    splices: str | None

    def start(self) -> bytes:
        """The stream's opening (may be empty)."""

    def event(self, event: StreamEvent) -> bytes:
        """One canonical event (usage is held for ``tail``; may return b"")."""

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """A clean end: what closes the answer, with the usage. ``finish`` is the reason the
        upstream gave, or None if it ended without one (the encoder supplies "stop")."""

    def error(self, error: GatewayError, usage: Usage) -> bytes:
        """The terminal error event, with the usage so far."""

    def splice(self, data: str, at: int) -> bytes:
        """Relay a plain text delta of the ``splices`` dialect without parsing it."""

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        """Relay one upstream event of the ``splices`` dialect as sent (``kind`` its SSE
        event name, ``data`` its payload, ``obj`` that payload parsed) but for the
        gateway's own fields (id, model, the final usage). What closes the answer is held
        for ``tail``; the opening is taken into ``start`` (which then renders anew)."""

    def rename(self, model: str) -> None:
        """Name ``model`` as the one answering (a fallback answered): before ``start``."""
