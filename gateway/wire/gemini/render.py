"""Gemini ``generateContent``, client answers: everything the gateway sends to a Gemini
client.

``StreamEncoder`` renders stream events as ``GenerateContentResponse`` chunks, either as SSE
(``?alt=sse``, what the SDKs ask for) or as the one JSON array ``streamGenerateContent`` sends
otherwise; ``render_response`` renders a non-streaming answer; ``error_body`` renders Google's
error shape; ``wants_thoughts`` tells whether the client asked to see thoughts.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Gemini sends a function call whole, never in fragments, so the encoder holds tool-call
  deltas until the next other event and then emits each call complete.
- Keepalives are chunks the SDKs accept: the Python and JS SDKs fail on SSE comments, so the
  SSE keepalive is an empty text chunk; in the JSON array it is a newline (JSON whitespace).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from gateway.canonical import (
    ChatRequest,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.errors import GatewayError
from gateway.wire.gemini.common import STATUS_NAMES, loads_object
from gateway.wire.jsonbody import compact, relayed
from gateway.wire.signatures import for_client

FINISH_TO_GEMINI: dict[FinishReason, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "tool_calls": "STOP",
    "error": "OTHER",
}


def wants_thoughts(request: ChatRequest) -> bool:
    """Whether a Gemini client asked to see thoughts (``thinkingConfig.includeThoughts``);
    Gemini sends thought parts only then (the ``thoughts`` flag of ``StreamEncoder``)."""
    return request.reasoning is not None and request.reasoning.include is True



def usage_json(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": max(0, usage.completion_tokens - usage.reasoning_tokens),
        "totalTokenCount": usage.total_tokens,
        "cachedContentTokenCount": usage.cached_tokens,
        "thoughtsTokenCount": usage.reasoning_tokens,
    }


def _error_json(error: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    status = STATUS_NAMES.get(error.status) or (
        "INVALID_ARGUMENT" if error.status < 500 else "INTERNAL"
    )
    inner: dict[str, Any] = {"code": error.status, "message": error.message, "status": status}
    details = []
    if error.param is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": error.param,
                                             "description": error.message}]})
    if request_id is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RequestInfo",
                        "requestId": request_id})
    if details:
        inner["details"] = details
    return {"error": inner}


def error_body(error: GatewayError, request_id: str | None = None) -> bytes:
    """Google's error body: ``{"error": {"code", "message", "status"}}``, with the blamed
    field and the request id as the standard ``details`` entries."""
    return compact(_error_json(error, request_id)).encode()


def _call_part(name: str, arguments: str) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": loads_object(arguments) or {}}}


def _safe_for_js(text: str) -> str:
    # The JS SDKs match each event with ``/^data: (.*)\n\n/``: ``.`` stops at U+2028/9.
    if "\u2028" in text or "\u2029" in text:
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text


@attrs.define
class _PendingCall:
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


class StreamEncoder:
    """Renders canonical events as ``GenerateContentResponse`` chunks (an ``Encoder``, see
    ``wire/encoder.py``): SSE events if ``sse``, else the elements of one JSON array.

    ``thoughts=False`` leaves reasoning out, as Gemini does unless the client asked for it
    (see ``wants_thoughts``); clients of the old SDK would otherwise read it as answer text.

    A Gemini upstream's chunks come through ``frame`` instead and go out as sent (safety
    ratings, citations, grounding, whatever Google adds) with our ``responseId`` and
    ``modelVersion``; the chunk with the finish reason waits for ``tail``, which gives it
    the usage the request is billed.
    """

    splices: str | None = "gemini"  # a Gemini upstream's chunks go by ``frame``

    def __init__(self, generation_id: str, model: str, *, sse: bool,
                 thoughts: bool = True) -> None:
        self._sse = sse
        self._thoughts = thoughts
        self._first = True
        self._calls: dict[int, _PendingCall] = {}
        # A thought signature goes on the next part written, as Gemini sent it.
        self._signature: str | None = None
        self._open = '{"candidates":[{"content":{"role":"model","parts":['
        self._id = generation_id
        self._end: dict[str, Any] | None = None  # an upstream's finishing chunk, for ``tail``
        self.rename(model)

    def rename(self, model: str) -> None:
        self._model = model
        self._meta = f'"modelVersion":{compact(model)},"responseId":{compact(self._id)}}}'
        self._close = ']},"index":0}],' + self._meta
        empty = self._open + '{"text":""}' + self._close
        self.keepalive = f"data: {_safe_for_js(empty)}\n\n".encode() if self._sse else b"\n"

    def _frame(self, chunk: str) -> bytes:
        chunk = _safe_for_js(chunk)
        if self._sse:
            return f"data: {chunk}\n\n".encode()
        if self._first:
            self._first = False
            return chunk.encode()
        return f",\r\n{chunk}".encode()

    def _parts(self, parts: str) -> bytes:
        return self._frame(self._open + parts + self._close)

    def _signed(self, part: str) -> str:
        """``part`` (a JSON object) with the pending thought signature, if any."""
        if self._signature is None:
            return part
        signed = f'{part[:-1]},"thoughtSignature":{compact(self._signature)}}}'
        self._signature = None
        return signed

    def _flush(self) -> bytes:
        if not self._calls:
            return b""
        parts = ",".join(
            self._signed(compact(_call_part(c.name, "".join(c.arguments))))
            for _, c in sorted(self._calls.items())
        )
        self._calls.clear()
        return self._parts(parts)

    def start(self) -> bytes:
        return b"" if self._sse else b"["

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, ToolCallDelta):
            call = self._calls.setdefault(event.index, _PendingCall())
            call.name += event.name or ""
            call.arguments.append(event.arguments)
            return b""
        if isinstance(event, UsageReport):
            return b""  # usage is sent once, at the end, by ``tail``
        flushed = self._flush()
        if isinstance(event, ReasoningSignature):
            self._signature = for_client(event.signature, event.by, "gemini")
            return flushed
        if isinstance(event, TextDelta) and event.text:
            return flushed + self._parts(self._signed(f'{{"text":{compact(event.text)}}}'))
        if isinstance(event, ReasoningDelta) and event.text and self._thoughts:
            return flushed + self._parts(
                self._signed(f'{{"text":{compact(event.text)},"thought":true}}'))
        return flushed  # a Finish (its reason goes out with ``tail``), or nothing to say

    def splice(self, data: str, at: int) -> bytes:
        """A plain text chunk of a Gemini upstream (``upstream.text_chunk``): as sent up to
        ``at``, then our ``modelVersion`` and ``responseId``."""
        held, self._end = self._end, None  # a held end was not the end: it goes out first
        out = self._frame(self._ours(held)) if held is not None else b""
        return out + self._frame(f"{data[:at]},{self._meta}")

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        """One chunk of a Gemini upstream, relayed as sent (see the class docstring)."""
        # A chunk held as the end was not the end if another follows: it goes out first.
        held, self._end = self._end, None
        out = self._frame(self._ours(held)) if held is not None else b""
        candidates = obj.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates else None
        reason = first.get("finishReason") if isinstance(first, dict) else None
        if reason and reason != "FINISH_REASON_UNSPECIFIED":  # where the parser ends too
            self._end = obj
            return out
        return out + self._frame(self._ours(obj))

    def _ours(self, chunk: dict[str, Any]) -> str:
        # Escaped ASCII, as ``relayed``: text the upstream escaped goes out as escaped.
        return json.dumps({**chunk, "modelVersion": self._model, "responseId": self._id},
                          separators=(",", ":"))

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """Any held function calls, then the closing chunk: finish reason and usage."""
        if self._end is not None:  # an upstream's own, with the usage billed
            given = self._end.get("usageMetadata")
            meta = {**(given if isinstance(given, dict) else {}), **usage_json(usage)}
            return (self._frame(self._ours({**self._end, "usageMetadata": meta}))
                    + (b"" if self._sse else b"]"))
        reason = FINISH_TO_GEMINI[finish or "stop"]
        flushed = self._flush()
        closing_part = self._signed('{"text":""}')  # a signature nothing carried yet
        last = (
            f'{self._open}{closing_part}]}},"finishReason":"{reason}","index":0}}],'
            f'"usageMetadata":{compact(usage_json(usage))},{self._meta}'
        )
        return flushed + self._frame(last) + (b"" if self._sse else b"]")

    def error(self, error: GatewayError, usage: Usage | None) -> bytes:
        """The terminal error, in the shape of Google's error body. Function calls still
        held are dropped: their arguments may be cut short."""
        self._calls.clear()
        return self._frame(compact(_error_json(error))) + (b"" if self._sse else b"]")


def relay_whole(answer: dict[str, Any], generation_id: str, model: str,
                usage: Usage) -> bytes:
    """A Gemini upstream's whole response for a Gemini client: every field as sent (safety
    ratings, grounding, citations, ...), with the gateway's id and the model the client
    named."""
    return relayed(answer, {"responseId": generation_id, "modelVersion": model},
                   "usageMetadata", usage_json(usage))


def render_response(
    generation_id: str,
    model: str,
    *,
    text: str,
    reasoning: str,
    tool_calls: list[ToolCall],
    finish: FinishReason,
    usage: Usage,
    signature: str = "",
    signed_by: str = "",
) -> bytes:
    """A non-streaming ``GenerateContentResponse`` (pass ``reasoning=""`` to leave thoughts
    out, see ``wants_thoughts``). A thought signature goes on the first function call, else
    on the first answer part, where Gemini puts it."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"text": reasoning, "thought": True})
    if text or not tool_calls:
        parts.append({"text": text})
    parts.extend(_call_part(c.name, c.arguments) for c in tool_calls)
    if signature:
        part = parts[len(parts) - len(tool_calls) if tool_calls else -1]
        part["thoughtSignature"] = for_client(signature, signed_by, "gemini")
    return _safe_for_js(compact({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": FINISH_TO_GEMINI[finish],
            "index": 0,
        }],
        "usageMetadata": usage_json(usage),
        "modelVersion": model,
        "responseId": generation_id,
    })).encode()
