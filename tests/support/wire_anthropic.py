"""Helpers the anthropic wire tests share (request bodies, encoders, the model name)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.canonical import (
    FinishReason,
    StreamEvent,
    Usage,
)
from gateway.errors import (
    GatewayError,
)
from gateway.wire import sse
from gateway.wire.anthropic.render import StreamEncoder

MODEL = "anthropic/claude-sonnet"
DROP = object()
USER_HI = {"role": "user", "content": "hi"}


def body(**changes: Any) -> dict[str, Any]:
    """A minimal valid client body with ``changes`` applied (``DROP`` removes a key)."""
    out: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": [USER_HI]}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


PASSTHROUGH_VALUES: dict[str, Any] = {
    "top_k": 40,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "service_tier": "standard_only",
    "output_config": {"effort": "high"},
    "cache_control": {"type": "ephemeral"},
    "inference_geo": "us",
    "speed": "fast",
}


def encode(
    events: Iterable[StreamEvent],
    usage: Usage | None = None,
    finish: FinishReason | None = None,
    *,
    error: GatewayError | None = None,
) -> bytes:
    """A whole stream, in the order the relay drives an encoder."""
    enc = StreamEncoder("msg_1", MODEL)
    out = enc.start()
    for event in events:
        out += enc.event(event)
    usage = usage or Usage()
    return out + (enc.error(error, usage) if error is not None else enc.tail(usage, finish))


def sse_events(stream: bytes, chunk: int | None = None) -> list[sse.Event]:
    decoder = sse.Decoder()
    size = chunk or len(stream) or 1
    events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i:i + size])]
    assert not decoder.pending
    return events
