"""OpenAI Chat Completions, upstream side: what the gateway sends to an OpenAI-compatible
provider, and its answers read back as canonical events.

``upstream_body`` builds the request body; ``parse_chunk`` reads one ``data:`` payload of a
stream and ``parse_completion`` a whole ``chat.completion`` body; ``upstream_error`` turns an
error object the provider sent into an ``UpstreamError``. ``plain_delta`` and
``delta_chars`` find the chunks plain enough to relay unparsed (``render.StreamEncoder.splice``).

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Upstream bodies are untrusted: anything malformed raises ``UpstreamProtocolError``, and an
  upstream error names only a known error type, never the provider's text.
- ``extra`` is forwarded only when the client spoke this dialect too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    Part,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.wire.jsonbody import is_int, upstream_object, without_surrogates

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


# ---------------------------------------------------------------------------------------
# Upstream requests


def _render_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _render_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if not message.content:
        out["content"] = None if message.tool_calls else ""
    elif len(message.content) == 1 and isinstance(message.content[0], TextPart):
        out["content"] = message.content[0].text
    else:
        out["content"] = [_render_part(p) for p in message.content]
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    """OpenAI's form of a tool choice. ``parallel`` has no place in it (OpenAI's
    ``parallel_tool_calls`` is a request field, forwarded from ``extra``), so it is dropped."""
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body for an OpenAI-compatible upstream; usage is always asked for on streams."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_render_message(m) for m in request.messages],
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None and not (
        request.dialect == "openai" and "max_completion_tokens" in request.extra
    ):
        body["max_tokens"] = request.max_tokens
    for key in ("temperature", "top_p", "user", "seed"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    k: v
                    for k, v in (
                        ("name", t.name),
                        ("description", t.description),
                        ("parameters", t.parameters),
                        ("strict", t.strict),
                    )
                    if v is not None
                },
            }
            for t in request.tools
        ]
    if request.dialect == "openai":
        body.update(request.extra)
    return body


# ---------------------------------------------------------------------------------------
# Upstream answers


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream usage is not an object")

    def count(obj: Any, key: str) -> int:
        value = obj.get(key) if isinstance(obj, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return Usage(
        prompt_tokens=count(raw, "prompt_tokens"),
        completion_tokens=count(raw, "completion_tokens"),
        cached_tokens=count(raw.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=count(raw.get("completion_tokens_details"), "reasoning_tokens"),
    )


def upstream_error(raw: Any) -> UpstreamError:
    """An error object an upstream sent (in a body or mid-stream), provider detail removed.

    The provider's message may echo our credentials or internals; only its type survives.
    """
    kind = raw.get("type") or raw.get("code") if isinstance(raw, dict) else None
    label = kind if kind in UPSTREAM_ERROR_TYPES else "error"
    return UpstreamError(f"upstream reported an error ({label})")


# Error types that may be named to the client: known words, never provider free text.
UPSTREAM_ERROR_TYPES = frozenset({
    "server_error", "api_error", "overloaded_error", "rate_limit_error", "rate_limit_exceeded",
    "invalid_request_error", "timeout", "internal_error", "service_unavailable",
    "context_length_exceeded", "content_filter",
})


def _delta_events(choice: Mapping[str, Any], out: list[StreamEvent]) -> None:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(TextDelta(without_surrogates(content)))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningDelta(without_surrogates(reasoning)))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if not isinstance(call, dict) or not is_int(call.get("index", 0)):
                    raise UpstreamProtocolError("upstream tool call delta is malformed")
                fn = call.get("function")
                fn = fn if isinstance(fn, dict) else {}
                args = fn.get("arguments")
                out.append(
                    ToolCallDelta(
                        index=call.get("index", 0),
                        id=call.get("id") if isinstance(call.get("id"), str) else None,
                        name=without_surrogates(fn["name"])
                        if isinstance(fn.get("name"), str)
                        else None,
                        arguments=without_surrogates(args) if isinstance(args, str) else "",
                    )
                )
    reason = choice.get("finish_reason")
    if reason is not None:
        if not isinstance(reason, str):
            raise UpstreamProtocolError("upstream finish_reason is not a string")
        out.append(Finish(FINISH_REASONS.get(reason, "stop")))


def plain_delta(data: str) -> int:
    """Where ``"choices":`` starts if ``data`` is a chunk holding nothing but a non-empty
    text delta (the bulk of any stream), so that it can be relayed by splicing; else -1.

    Conservative: anything that might carry a finish reason, tool calls, reasoning, usage
    or an error returns -1 and is parsed in full.
    """
    if (
        '"finish_reason":null' not in data
        or '"content":"' not in data
        or '"content":""' in data
        or '"tool_calls"' in data
        or '"reasoning' in data
        or '"usage":{' in data
        or '"error"' in data
        or '"refusal":"' in data
    ):
        return -1
    at = data.find('"choices":[{')
    # One choice, index 0, as a gateway asking for n=1 gets.
    if at < 0 or '"index":0' not in data or data.count('"index":') != 1:
        return -1
    return at


def delta_chars(data: str) -> int:
    """The approximate length of the text in a ``plain_delta`` chunk (for estimates)."""
    start = data.find('"content":"') + 11
    end = data.find('"}', start)
    return max(0, (end if end > 0 else len(data)) - start)


def parse_chunk(data: str) -> list[StreamEvent]:
    """Events in one upstream ``data:`` payload (not ``[DONE]``)."""
    chunk = upstream_object(data, "an event")
    if chunk.get("error") is not None:
        raise upstream_error(chunk["error"])
    out: list[StreamEvent] = []
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                _delta_events(choice, out)
    elif choices is not None:
        raise UpstreamProtocolError("upstream 'choices' is not an array")
    usage = chunk.get("usage")
    if usage is not None:
        out.append(UsageReport(_usage(usage)))
    return out


def parse_completion(body: bytes) -> list[StreamEvent]:
    """Events equivalent to one non-streaming upstream ``chat.completion`` body."""
    obj = upstream_object(body, "a body")
    if obj.get("error") is not None:
        raise upstream_error(obj["error"])
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("upstream answer has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError("upstream answer has no message")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UpstreamProtocolError("upstream tool_calls is not an array")
    delta = {
        "content": message.get("content"),
        "reasoning_content": message.get("reasoning_content") or message.get("reasoning"),
        "tool_calls": [dict(c, index=i) for i, c in enumerate(calls) if isinstance(c, dict)],
    }
    out: list[StreamEvent] = []
    _delta_events({"delta": delta, "finish_reason": choices[0].get("finish_reason")}, out)
    if obj.get("usage") is not None:
        out.append(UsageReport(_usage(obj["usage"])))
    return out
