"""What the relay needs from a client dialect to stream an answer: an ``Encoder``.

Each client dialect's ``render`` module (``wire/openai/render.py``,
``wire/anthropic/render.py``, ``wire/gemini/render.py``) has a ``StreamEncoder`` that renders
the canonical stream events into its own wire bytes. The relay never looks inside
them: it only orders the calls (``start``, ``event`` per event, then ``tail`` or ``error``
exactly once) and puts ``keepalive`` between whole events during silence.

Rules: pure (no I/O, no clock); every method returns whole events, never a fragment, so the
relay may interleave keepalives anywhere between two calls.
"""

from __future__ import annotations

from typing import Protocol

from gateway.canonical import FinishReason, StreamEvent, Usage
from gateway.errors import GatewayError


class Encoder(Protocol):
    # Sent during upstream silence: an SSE comment, or the dialect's own ping event.
    keepalive: bytes
    # The dialect an upstream must speak for ``splice`` to apply, or None.
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

    def rename(self, model: str) -> None:
        """Name ``model`` as the one answering (a fallback answered): before ``start``."""
