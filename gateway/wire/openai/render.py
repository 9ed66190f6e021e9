"""OpenAI Chat Completions, client answers: everything the gateway sends to an OpenAI client.

``StreamEncoder`` renders stream events as ``chat.completion.chunk`` SSE events exactly as
``spec/streaming-api.txt`` shows them, with SSE comments as keepalives;
``render_completion`` renders a non-streaming answer; ``error_body`` renders the spec's
pre-stream error body.

Rules:
- Pure: no sockets, no clock (callers pass ``created``), no globals but constant tables.
- Chunks are rendered from pre-built byte prefixes; only the varying text is JSON-encoded.
"""

from __future__ import annotations

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
from gateway.wire.jsonbody import compact, relayed
from gateway.wire.sse import KEEPALIVE


def usage_json(usage: Usage) -> dict[str, Any]:
    """Canonical usage in OpenAI's terms; prompt-cache writes (another dialect's upstream
    reported them) as OpenRouter names them, ``prompt_tokens_details.cache_write_tokens``."""
    prompt: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class StreamEncoder:
    """Renders canonical events as the spec's ``chat.completion.chunk`` SSE events
    (an ``Encoder``, see ``wire/encoder.py``)."""

    DONE = b"data: [DONE]\n\n"
    keepalive: bytes = KEEPALIVE
    splices: str | None = "openai"

    def __init__(self, generation_id: str, model: str, created: int) -> None:
        self._id, self._created = generation_id, created
        self.rename(model)

    def rename(self, model: str) -> None:
        self._head = (
            f'data: {{"id":{compact(self._id)},"object":"chat.completion.chunk",'
            f'"created":{self._created},"model":{compact(model)},'
        )
        self._choice = self._head + '"choices":[{"index":0,"delta":'

    def _delta(self, delta: str, finish: str = "null") -> bytes:
        return f'{self._choice}{delta},"finish_reason":{finish}}}]}}\n\n'.encode()

    def start(self) -> bytes:
        return self._delta('{"role":"assistant","content":""}')

    def event(self, event: StreamEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._delta(f'{{"content":{compact(event.text)}}}')
        if isinstance(event, ReasoningDelta):
            return self._delta(f'{{"reasoning_content":{compact(event.text)}}}')
        if isinstance(event, ReasoningSignature | RedactedReasoning):
            return self._delta(compact({"reasoning_details": [reasoning_detail(event)]}))
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            fn: dict[str, str] = {"arguments": event.arguments}
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            return self._delta(compact({"tool_calls": [call]}))
        if isinstance(event, Finish):
            return self._delta("{}", f'"{event.reason}"')
        return b""  # usage is sent once, at the end, by ``usage``

    def splice(self, data: str, at: int) -> bytes:
        """An upstream OpenAI chunk relayed as ours: our id, created and model, then the
        upstream's own ``"choices":...`` onwards, untouched (see ``plain_delta``)."""
        return f"{self._head}{data[at:]}\n\n".encode()

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        raise NotImplementedError("an OpenAI upstream's plain deltas are relayed by splice")

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """The finish chunk if the upstream sent none, the usage chunk, ``[DONE]``."""
        closing = b"" if finish is not None else self.event(Finish("stop"))
        return closing + self.usage(usage) + self.DONE

    def usage(self, usage: Usage) -> bytes:
        return f'{self._head}"choices":[],"usage":{compact(usage_json(usage))}}}\n\n'.encode()

    def error(self, error: GatewayError, usage: Usage | None) -> bytes:
        """The spec's mid-stream error event: the stream's terminal event."""
        body = compact({"code": error.type, "message": error.message})
        tail = f',"usage":{compact(usage_json(usage))}' if usage is not None else ""
        return (
            f'{self._head}"error":{body},"choices":[{{"index":0,"delta":{{"content":""}},'
            f'"finish_reason":"error"}}]{tail}}}\n\n'
        ).encode()


def reasoning_detail(event: ReasoningSignature | RedactedReasoning,
                     text: str | None = None) -> dict[str, Any]:
    """A reasoning signature or encrypted reasoning as OpenRouter's ``reasoning_details``
    entry, which an OpenAI-dialect client keeps and sends back with its history."""
    detail: dict[str, Any]
    if isinstance(event, RedactedReasoning):
        detail = {"type": "reasoning.encrypted", "data": event.data, "index": 0}
    else:
        detail = {"type": "reasoning.text", "signature": event.signature, "index": 0}
        if text is not None:
            detail["text"] = text
    if event.by in FORMATS:  # whose it is: the client's history brings it back there
        detail["format"] = FORMATS[event.by]
    return detail


# OpenRouter's names for whose reasoning a detail carries (``request.FORMATS`` reversed).
FORMATS = {"anthropic": "anthropic-claude-v1", "gemini": "google-gemini-v1",
           "openai": "openai-responses-v1"}


def render_completion(
    generation_id: str,
    model: str,
    created: int,
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
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning_content"] = reasoning
    details = [reasoning_detail(RedactedReasoning(d, signed_by)) for d in redacted]
    if signature:
        details.insert(0, reasoning_detail(ReasoningSignature(signature, signed_by), reasoning))
    if details:
        message["reasoning_details"] = details
    if tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in tool_calls
        ]
    message.setdefault("refusal", None)
    return compact(
        {
            "id": generation_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": usage_json(usage),
        }
    ).encode()


def relay_whole(answer: dict[str, Any], generation_id: str, model: str,
                usage: Usage) -> bytes:
    """An OpenAI upstream's whole answer for an OpenAI client: every field as sent
    (``logprobs``, ``refusal``, ``system_fingerprint``, ``service_tier``, ...), with the
    gateway's id and the model the client named; usage added if the upstream sent none."""
    return relayed(answer, {"id": generation_id, "model": model}, "usage", usage_json(usage))


def error_body(error: GatewayError, request_id: str | None = None) -> bytes:
    """The spec's pre-stream error body: ``{"error": {"code": <status>, "message": ...}}``."""
    inner: dict[str, Any] = {"code": error.status, "message": error.message, "type": error.type}
    if error.param is not None:
        inner["param"] = error.param
    if request_id is not None:
        inner["request_id"] = request_id
    return compact({"error": inner}).encode()
