"""The OpenAI Chat Completions dialect, both directions, sans-I/O.

Client side: ``parse_request`` turns an untrusted JSON body into a ``ChatRequest``;
``StreamEncoder`` renders stream events as ``chat.completion.chunk`` SSE events exactly as
``spec/streaming-api.txt`` shows them; ``render_completion`` renders a non-streaming answer;
``error_body`` renders the spec's pre-stream error body.

Upstream side: ``upstream_body`` builds the body sent to an OpenAI-compatible provider;
``parse_chunk`` and ``parse_completion`` turn its answers back into canonical events.

Rules:
- Pure: no sockets, no clock (callers pass ``created``), no globals but constant tables.
- Every field of a client body is validated here; an unknown field is a 400 naming it, as
  OpenAI itself answers. Endpoint fields (``api_base``, ``base_url``, ``api_key``,
  ``extra_headers``, ...) are therefore never honoured (FAULTS.md S6); the routing
  preferences ``models`` and ``provider`` only choose among names the catalog knows.
- Upstream bodies are untrusted too: anything malformed raises ``UpstreamProtocolError``.
- Chunks are rendered from pre-built byte prefixes; only the varying text is JSON-encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    RoutingPrefs,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.errors import GatewayError, RequestError, UpstreamError, UpstreamProtocolError
from gateway.wire.jsonbody import compact, is_int, upstream_object, without_surrogates
from gateway.wire.sse import KEEPALIVE

MAX_TOKENS_LIMIT = 1_000_000  # above any model's output window; per-model caps come later
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool"}
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


# ---------------------------------------------------------------------------------------
# Client requests


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _fail(f"'{key}' must be a non-empty string", key)
    return value


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _fail(f"'{key}' must be a number between {low:g} and {high:g}", key)
    return float(value)


def _part(raw: Any, param: str) -> Part:
    if not isinstance(raw, dict):
        raise _fail("a content part must be an object", param)
    kind = raw.get("type")
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            raise _fail("a text part needs a string 'text'", param)
        return TextPart(text)
    if kind == "image_url":
        image = raw.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
            raise _fail("an image_url part needs an http(s) or data: 'url'", param)
        detail = image.get("detail") if isinstance(image, dict) else None
        if detail is not None and detail not in ("auto", "low", "high"):
            raise _fail("'detail' must be auto, low or high", param)
        return ImagePart(url, detail)
    raise _fail(f"unsupported content part type {kind!r}", param)


def _content(raw: Any, param: str) -> tuple[Part, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (TextPart(raw),)
    if isinstance(raw, list):
        return tuple(_part(item, f"{param}.{i}") for i, item in enumerate(raw))
    raise _fail("'content' must be a string, an array of parts or null", param)


def _tool_calls(raw: Any, param: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("'tool_calls' must be an array", param)
    calls = []
    for i, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(item.get("id"), str)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments", ""), str)
        ):
            raise _fail("a tool call needs 'id' and 'function' {name, arguments}", f"{param}.{i}")
        calls.append(ToolCall(item["id"], fn["name"], fn.get("arguments", "")))
    return tuple(calls)


def _message(raw: Any, index: int) -> Message:
    param = f"messages.{index}"
    if not isinstance(raw, dict):
        raise _fail("each message must be an object", param)
    raw_role = raw.get("role")
    role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise _fail(
            "'role' must be one of system, developer, user, assistant, tool", f"{param}.role"
        )
    content = _content(raw.get("content"), f"{param}.content")
    tool_calls = _tool_calls(raw.get("tool_calls"), f"{param}.tool_calls")
    if not content and not tool_calls and role != "assistant":
        raise _fail("'content' is required", f"{param}.content")
    tool_call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise _fail("a tool message needs 'tool_call_id'", f"{param}.tool_call_id")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail("'name' must be a string", f"{param}.name")
    return Message(
        role=role,  # type: ignore[arg-type]
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id if role == "tool" else None,
        name=name,
    )


def _tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("'tools' must be an array", "tools")
    tools = []
    for i, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or item.get("type") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not fn["name"]
        ):
            raise _fail("a tool must be {type: 'function', function: {name, ...}}", f"tools.{i}")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _fail("'parameters' must be a JSON schema object", f"tools.{i}")
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise _fail("'description' must be a string", f"tools.{i}")
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _fail("'strict' must be true or false", f"tools.{i}")
        tools.append(Tool(fn["name"], description, params, strict))
    return tuple(tools)


def _tool_choice(raw: Any) -> Any:
    if raw is None or raw in ("none", "auto", "required"):
        return raw
    fn = raw.get("function") if isinstance(raw, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "function", "function": {"name": fn["name"]}}
    raise _fail("'tool_choice' must be none, auto, required or a function", "tool_choice")


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and len(raw) <= 4 and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    raise _fail("'stop' must be a string or an array of at most 4 strings", "stop")


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


# OpenAI parameters the gateway does not interpret but forwards to OpenAI-dialect upstreams.
# Each is type-checked; anything not listed here or handled above is rejected.
PASSTHROUGH: dict[str, Callable[[Any], bool]] = {
    "frequency_penalty": lambda v: _is_number(v) and -2 <= v <= 2,
    "presence_penalty": lambda v: _is_number(v) and -2 <= v <= 2,
    "logit_bias": lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
    "logprobs": _is(bool),
    "top_logprobs": lambda v: is_int(v) and 0 <= v <= 20,
    "response_format": _is(dict),
    "parallel_tool_calls": _is(bool),
    "reasoning_effort": _is(str),
    "verbosity": _is(str),
    "service_tier": _is(str),
    "store": _is(bool),
    "prompt_cache_key": _is(str),
    "safety_identifier": _is(str),
    "metadata": lambda v: isinstance(v, dict)
    and len(v) <= 16
    and all(isinstance(x, str) for x in v.values()),
}
HANDLED = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "n", "stop", "tools", "tool_choice", "user", "seed",
    "models", "provider",  # routing preferences, as OpenRouter takes them
}
MAX_FALLBACKS = 8
PROVIDER_PREFS = {"order", "allow_fallbacks", "only", "ignore"}


def _names(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_FALLBACKS or not all(
        isinstance(v, str) and 0 < len(v) <= 256 for v in value
    ):
        raise _fail(f"'{key}' must be a list of at most {MAX_FALLBACKS} names", key)
    return tuple(value)


def _routing(body: dict[str, Any]) -> RoutingPrefs:
    """``models`` (fallbacks after ``model``) and ``provider`` {order, allow_fallbacks, only,
    ignore}. Names are only looked up in the catalog, never used to build anything."""
    models = body.get("models")
    fallbacks = () if models is None else _names(models, "models")
    prefs = body.get("provider")
    if prefs is None:
        return RoutingPrefs(fallbacks=fallbacks)
    if not isinstance(prefs, dict) or set(prefs) - PROVIDER_PREFS:
        raise _fail(f"'provider' must be an object with keys {sorted(PROVIDER_PREFS)}",
                    "provider")
    allow = prefs.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise _fail("'provider.allow_fallbacks' must be true or false", "provider")
    lists = {k: _names(prefs[k], f"provider.{k}") if prefs.get(k) is not None else ()
             for k in ("order", "only", "ignore")}
    return RoutingPrefs(fallbacks=fallbacks, allow_fallbacks=allow, **lists)


def parse_request(body: Any) -> ChatRequest:
    """Validate a client's chat-completions body (already strict-JSON-parsed)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in body:
        if key not in HANDLED and key not in PASSTHROUGH:
            raise _fail(f"Unrecognized request argument supplied: {key}", key)
    model = _string(body, "model", required=True)
    assert model is not None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty array", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict)
        or set(options) - {"include_usage", "include_obfuscation"}
        or not all(isinstance(v, bool) for v in options.values())
    ):
        raise _fail("'stream_options' must be {include_usage: bool}", "stream_options")
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not is_int(value) or not 1 <= value <= MAX_TOKENS_LIMIT:
            raise _fail(f"'{key}' must be an integer between 1 and {MAX_TOKENS_LIMIT}", key)
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    n = body.get("n")
    if n is not None and not (is_int(n) and n == 1):
        raise _fail("only n=1 is supported", "n")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise _fail("'seed' must be an integer", "seed")
    extra: dict[str, Any] = {}
    if body.get("max_completion_tokens") is not None:
        # Newer OpenAI models refuse max_tokens; an OpenAI-dialect upstream hears the name
        # the client used.
        extra["max_completion_tokens"] = max_tokens
    for key, check in PASSTHROUGH.items():
        if key in body and body[key] is not None:
            if not check(body[key]):
                raise _fail(f"invalid value for '{key}'", key)
            extra[key] = body[key]
    return ChatRequest(
        model=model,
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        stream=stream,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=_stop(body.get("stop")),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        user=_string(body, "user"),
        seed=seed,
        dialect="openai",
        extra=extra,
        routing=_routing(body),
    )


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
    for key in ("temperature", "top_p", "user", "seed", "tool_choice"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
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


# ---------------------------------------------------------------------------------------
# Client answers


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class StreamEncoder:
    """Renders canonical events as the spec's ``chat.completion.chunk`` SSE events
    (an ``Encoder``, see ``wire/encoder.py``)."""

    DONE = b"data: [DONE]\n\n"
    keepalive: bytes = KEEPALIVE
    splices: str | None = "openai"

    def __init__(self, generation_id: str, model: str, created: int) -> None:
        self._head = (
            f'data: {{"id":{compact(generation_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{compact(model)},'
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
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if reasoning:
        message["reasoning_content"] = reasoning
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


def error_body(error: GatewayError, request_id: str | None = None) -> bytes:
    """The spec's pre-stream error body: ``{"error": {"code": <status>, "message": ...}}``."""
    inner: dict[str, Any] = {"code": error.status, "message": error.message, "type": error.type}
    if error.param is not None:
        inner["param"] = error.param
    if request_id is not None:
        inner["request_id"] = request_id
    return compact({"error": inner}).encode()
