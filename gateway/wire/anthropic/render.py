"""Anthropic Messages, client answers: everything the gateway sends to an Anthropic client.

``StreamEncoder`` renders stream events as Anthropic's SSE sequence (``message_start``,
``content_block_start``/``_delta``/``_stop`` per block, ``message_delta``, ``message_stop``),
with Anthropic's ``ping`` event as keepalive; ``render_message`` renders a non-streaming
``Message``; ``error_body`` renders Anthropic's error body.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Every SSE event we send has an ``event:`` line: the SDKs skip events without one.
- An error's Anthropic type follows the HTTP status it implies (``common.ERROR_TYPES``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gateway.canonical import (
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.errors import GatewayError
from gateway.wire.anthropic.common import ERROR_TYPES, tool_input
from gateway.wire.jsonbody import compact, relayed
from gateway.wire.signatures import for_client

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",  # never a clean finish in practice: errors end with an error event
}


def usage_json(usage: Usage) -> dict[str, Any]:
    """Canonical usage in Anthropic's terms: ``input_tokens`` excludes cache reads and
    cache writes, which are counted apart."""
    out: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens
                            - usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def error_type(error: GatewayError) -> str:
    """Anthropic's name for an error, chosen by the HTTP status it implies."""
    known = ERROR_TYPES.get(error.status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= error.status < 500 else "api_error"


def _sse(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: {compact(payload)}\n\n".encode()


def _event(name: str, data: str) -> bytes:
    """An event relayed as sent (a payload of several data lines keeps them)."""
    if "\n" in data:
        data = data.replace("\n", "\ndata: ")
    return f"event: {name}\ndata: {data}\n\n".encode()


def _tool_id(generation_id: str, index: int) -> str:
    """An id for a tool call the upstream gave none (Anthropic clients need one)."""
    return f"toolu_{generation_id}_{index}"


_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamEncoder:
    """Renders canonical events as Anthropic's SSE event sequence (an ``Encoder``, see
    ``wire/encoder.py``).

    One content block is open at a time. A delta of another kind, or of another tool call,
    closes it and opens the next block at the next index. Input usage is only known at the
    end, so ``message_start`` says 0 and ``message_delta`` carries the real counts (the
    SDKs take them from there). A late delta for a tool call whose block was closed (an
    upstream interleaving calls) goes to that block's index; the SDKs accumulate by index.

    An Anthropic upstream's events come through ``frame`` instead and go out as sent
    (citations, server tool blocks, whatever Anthropic adds): its ``message_start`` becomes
    the opening with our id and model, its blocks are relayed with their own indices, and
    its ``message_delta`` waits for ``tail``, which gives it the usage the request is billed.
    """

    keepalive: bytes = b'event: ping\ndata: {"type": "ping"}\n\n'
    splices: str | None = "anthropic"  # an Anthropic upstream's events go by ``frame``

    def __init__(self, generation_id: str, model: str, input_tokens: int = 0) -> None:
        self._generation_id = generation_id
        self._model = model
        # Anthropic reports the prompt's size in message_start, before any output; the
        # relay only learns the provider's count at the end (message_delta carries it), so
        # this is the caller's estimate.
        self._input_tokens = input_tokens
        self._started = False
        self._open: str | None = None  # the open block's type
        self._index = -1  # the open (or last) block's index
        self._tools: dict[int, int] = {}  # tool call index -> block index
        self._finish: FinishReason | None = None
        self._message: dict[str, Any] | None = None  # an upstream's own message_start
        self._end: dict[str, Any] | None = None  # an upstream's message_delta, for ``tail``
        self._stop = '{"type":"message_stop"}'

    def rename(self, model: str) -> None:
        self._model = model
        self._started = False  # the opening names the model: it is rendered anew

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self._generation_id, "type": "message", "role": "assistant",
            "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        if self._message is not None:
            message = {**self._message, "id": self._generation_id, "model": self._model}
        return _sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _enter(self, kind: str, block: dict[str, Any]) -> bytes:
        """Close the open block and open a ``kind`` block, unless one is open already."""
        if self._open == kind and kind != "tool_use":
            return b""
        out = self._close()
        self._open, self._index = kind, self._index + 1
        return out + _sse("content_block_start", {
            "type": "content_block_start", "index": self._index, "content_block": block})

    def _delta(self, index: int, kind: str, key: str, text: str) -> bytes:
        return (
            f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":{index},'
            f'"delta":{{"type":"{kind}","{key}":{compact(text)}}}}}\n\n'
        ).encode()

    def event(self, event: StreamEvent) -> bytes:
        out = self.start()
        if isinstance(event, TextDelta) and event.text:
            out += self._enter("text", {"type": "text", "text": ""})
            return out + self._delta(self._index, "text_delta", "text", event.text)
        if isinstance(event, ReasoningDelta) and event.text:
            out += self._enter("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta(self._index, "thinking_delta", "thinking", event.text)
        if isinstance(event, ReasoningSignature):
            # It closes its thinking block, as Anthropic sends it (a signature alone, from
            # another provider, gets an empty thinking block to sit in).
            out += self._enter("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            signature = for_client(event.signature, event.by, "anthropic")
            out += self._delta(self._index, "signature_delta", "signature", signature)
            return out + self._close()
        if isinstance(event, RedactedReasoning):
            out += self._close()
            self._index += 1
            return out + _sse("content_block_start", {
                "type": "content_block_start", "index": self._index,
                "content_block": {"type": "redacted_thinking", "data": event.data}}) + _sse(
                "content_block_stop", {"type": "content_block_stop", "index": self._index})
        if isinstance(event, ToolCallDelta):
            block = self._tools.get(event.index)
            if block is None:
                call_id = event.id or _tool_id(self._generation_id, event.index)
                out += self._enter("tool_use", {"type": "tool_use", "id": call_id,
                                                "name": event.name or "", "input": {}})
                block = self._tools[event.index] = self._index
            if event.arguments:
                out += self._delta(block, "input_json_delta", "partial_json", event.arguments)
            return out
        if isinstance(event, Finish):
            self._finish = event.reason  # sent in message_delta, after the last block
        return out  # usage is sent once, at the end, by ``tail``

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """Close the open block, then ``message_delta`` (stop reason, usage), ``message_stop``."""
        if self._end is not None:  # an upstream's own, with the usage billed
            given = self._end.get("usage")
            usage_out = {**(given if isinstance(given, dict) else {}), **usage_json(usage)}
            return (self.start() + self._close()
                    + _sse("message_delta", {**self._end, "usage": usage_out})
                    + _event("message_stop", self._stop))
        reason = finish or self._finish or "stop"
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASONS[reason], "stop_sequence": None},
            "usage": usage_json(usage),
        }
        return self.start() + self._close() + _sse("message_delta", delta) + MESSAGE_STOP

    def error(self, error: GatewayError, usage: Usage) -> bytes:
        """Anthropic's mid-stream error event; the usage so far has no place in it."""
        return _sse("error", {"type": "error",
                              "error": {"type": error_type(error), "message": error.message}})

    def splice(self, data: str, at: int) -> bytes:
        """A text delta of an Anthropic upstream (``upstream.text_delta``), as sent."""
        return _event("content_block_delta", data)

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        """One event of an Anthropic upstream, relayed as sent (see the class docstring)."""
        name = obj.get("type", kind)
        if name == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._message = message
                self._started = False  # the opening is rendered anew, as the upstream's
            return b""
        if name == "message_delta":
            self._end = obj
            return b""
        if name == "message_stop":
            self._stop = data
            return b""
        if name == "ping" or not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
            return b""  # the relay sends its own keepalives; a name is never free text
        if name == "content_block_start":
            self._open, self._index = "relayed", obj["index"]
        elif name == "content_block_stop":
            self._open = None
        return _event(name, data)


def relay_whole(answer: dict[str, Any], generation_id: str, model: str,
                usage: Usage) -> bytes:
    """An Anthropic upstream's whole ``Message`` for an Anthropic client: every block and
    field as sent (citations, server tool results, ...), with the gateway's id and the
    model the client named."""
    return relayed(answer, {"id": generation_id, "model": model}, "usage", usage_json(usage))


def render_message(
    generation_id: str,
    model: str,
    *,
    text: str,
    reasoning: str,
    tool_calls: list[ToolCall],
    finish: FinishReason,
    usage: Usage,
    signature: str = "",
    redacted: Sequence[str] = (),
    signed_by: str = "",
) -> bytes:
    """A non-streaming ``Message``: thinking (with its signature), redacted thinking, text,
    then tool_use blocks."""
    content: list[dict[str, Any]] = []
    if reasoning or signature:
        content.append({"type": "thinking", "thinking": reasoning,
                        "signature": for_client(signature, signed_by, "anthropic")})
    content += [{"type": "redacted_thinking", "data": data} for data in redacted]
    if text:
        content.append({"type": "text", "text": text})
    content += [
        {"type": "tool_use", "id": c.id or _tool_id(generation_id, i), "name": c.name,
         "input": tool_input(c.arguments)}
        for i, c in enumerate(tool_calls)
    ]
    return compact({
        "id": generation_id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": STOP_REASONS[finish], "stop_sequence": None,
        "usage": usage_json(usage),
    }).encode()


def error_body(error: GatewayError, request_id: str | None = None) -> bytes:
    """Anthropic's error body: ``{"type":"error","error":{"type","message"}}``."""
    body: dict[str, Any] = {
        "type": "error", "error": {"type": error_type(error), "message": error.message}
    }
    if request_id is not None:
        body["request_id"] = request_id
    return compact(body).encode()
