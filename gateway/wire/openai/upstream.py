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
- A client of this dialect is passed through: its body goes as sent, with only the
  gateway's rewrites (model, usage on streams, OpenRouter's extensions translated or
  removed). Any other client's request is built from the canonical fields this dialect
  honours (``HONOURS``); ``routing/fidelity.py`` has refused or allowed dropping the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    AUDIO_TYPES,
    ChatRequest,
    FilePart,
    Finish,
    FinishReason,
    Message,
    Part,
    ReasoningDelta,
    ResponseFormat,
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
    if isinstance(part, FilePart):
        if part.audio:
            kind = next(k for k, v in AUDIO_TYPES.items() if v == part.media_type)
            return {"type": "input_audio", "input_audio": {"data": part.data, "format": kind}}
        return {"type": "file", "file": {"filename": part.name or "document.pdf",
                                         "file_data": f"data:{part.media_type};base64,"
                                                      f"{part.data}"}}
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
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


# The canonical features an OpenAI-compatible upstream honours (``routing/fidelity.py``);
# a provider may accept more (``accepts``: top_k, min_p, repetition_penalty).
RESPONSES_SHARED = ("prompt_cache_key", "safety_identifier", "prompt_cache_retention")
HONOURS = frozenset({
    "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "user",
    "parallel_tool_calls", "response_format", "reasoning", "images", "documents", "audio",
    "strict_tools", "message_names", "image_detail",
    # An Anthropic client's prompt-cache markers: OpenAI caches prompt prefixes on its own
    # (cache reads come back as cached_tokens, priced at the cached rate): nothing to send.
    "anthropic:cache_control",
    # A Responses API client's fields that Chat Completions takes under the same names.
    *(f"responses:{key}" for key in RESPONSES_SHARED),
})
# OpenRouter's request extensions, which the gateway itself interprets: never forwarded as
# such (``reasoning`` becomes ``reasoning_effort``; the sampling ones go where accepted).
ROUTER_FIELDS = ("models", "provider", "reasoning", "usage", "top_k", "min_p",
                 "repetition_penalty")
SAMPLING_EXTENSIONS = ("top_k", "min_p", "repetition_penalty")


def response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.kind == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": fmt.name, "schema": dict(fmt.schema or {})}
    if fmt.description is not None:
        schema["description"] = fmt.description
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


def upstream_body(request: ChatRequest, model: str,
                  accepts: frozenset[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The body for an OpenAI-compatible upstream; usage is always asked for on streams.
    ``accepts``: the sampling extensions this provider takes beyond OpenAI's."""
    if request.dialect == "openai":
        body = _same_dialect(request, model, accepts)
    else:
        body = _translated(request, model, accepts)
        if request.dialect == "responses":  # its fields Chat Completions has too
            body.update({k: request.raw[k] for k in RESPONSES_SHARED
                         if request.raw.get(k) is not None})
    # The gateway owns stream_options (the usage chunk is its own): usage always comes on a
    # stream, and a request that does not stream carries none (OpenAI refuses them there).
    if request.stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def _same_dialect(request: ChatRequest, model: str,
                  accepts: frozenset[str] | tuple[str, ...]) -> dict[str, Any]:
    body = {k: v for k, v in request.raw.items()
            if k not in ROUTER_FIELDS or (k in SAMPLING_EXTENSIONS and k in accepts)}
    body["model"] = model
    if request.reasoning is not None and "reasoning_effort" not in body:
        effort = request.reasoning.as_effort  # OpenRouter's ``reasoning`` object
        if effort is not None:
            body["reasoning_effort"] = effort
    return body


def _translated(request: ChatRequest, model: str,
                accepts: frozenset[str] | tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [_render_message(m) for m in request.messages],
        "stream": request.stream,
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    for key in ("temperature", "top_p", "user", "seed", "presence_penalty",
                "frequency_penalty", "parallel_tool_calls"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.top_k is not None and "top_k" in accepts:
        body["top_k"] = request.top_k
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
    if request.response_format is not None:
        body["response_format"] = response_format(request.response_format)
    if request.reasoning is not None and request.reasoning.as_effort is not None:
        body["reasoning_effort"] = request.reasoning.as_effort
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
    """Where the upstream's own part of ``data`` starts if it is a chunk holding nothing
    but a non-empty text delta (the bulk of any stream), so that it can be relayed by
    splicing; else -1. The own part is everything after the ``model``, the last of the
    fields the gateway rewrites (id, object, created, model): ``system_fingerprint``,
    ``service_tier``, ``choices`` (``logprobs`` in them), ``obfuscation``... (from
    ``"choices":`` if the fields come in another order).

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
    # The model comes before the choices (searched only there): no copy, a few finds.
    model = data.find('"model":"', 0, at)
    end = data.find('",', model + 9, at) if model >= 0 else -1
    if end > 0 and data.find("\\", model, end) < 0:
        return end + 2  # after the model's value and its comma
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


def parse_completion(body: bytes | dict[str, Any]) -> list[StreamEvent]:
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
