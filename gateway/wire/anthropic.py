"""The Anthropic Messages dialect, both directions, sans-I/O.

Client side: ``parse_request`` turns an untrusted ``POST /v1/messages`` body into a
``ChatRequest``; ``StreamEncoder`` renders stream events as Anthropic's SSE sequence
(``message_start``, ``content_block_start``/``_delta``/``_stop`` per block, ``message_delta``,
``message_stop``); ``render_message`` renders a non-streaming ``Message``; ``error_body``
renders Anthropic's error body.

Upstream side: ``upstream_body`` builds the body sent to an Anthropic upstream;
``StreamParser`` and ``parse_message`` turn its answers back into canonical events.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Every field of a client body is validated here; an unknown top-level field is a 400
  naming it, as Anthropic answers, so routing fields are never honoured (FAULTS.md S6).
  Anthropic's error body has no ``param``, so each message starts with the field's path.
- What the canonical model cannot hold is dropped knowingly: thinking blocks in the
  history, ``cache_control`` and ``citations`` on blocks, a tool result's ``is_error``.
- Every SSE event we send has an ``event:`` line: the SDKs skip events without one.
- Upstream bodies are untrusted too: anything malformed raises ``UpstreamProtocolError``,
  and an upstream error names only a known error type, never the provider's text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.errors import (
    GatewayError,
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from gateway.wire.jsonbody import without_surrogates
from gateway.wire.openai import MAX_TOKENS_LIMIT

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; other dialects may leave it unset
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",  # never a clean finish in practice: errors end with an error event
}
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types by HTTP status (docs "HTTP errors"; 502/504/503 as the SDK names
# them). Another 4xx is an invalid_request_error, another 5xx an api_error.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Error types that may be named to the client: known words, never provider free text.
UPSTREAM_ERROR_TYPES = frozenset({*ERROR_TYPES.values(), "conflict_error"})
# In-band errors that mean what these statuses mean, so retry and fallback treat them alike.
UPSTREAM_ERROR_STATUS = {"overloaded_error": 529, "rate_limit_error": 429}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------
# Client requests


def _block(raw: Any, param: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise _fail("a content block must be an object with a string 'type'", param)
    return raw["type"], raw


def _text(block: Mapping[str, Any], param: str) -> TextPart:
    text = block.get("text")
    if not isinstance(text, str):
        raise _fail("a text block needs a string 'text'", param)
    return TextPart(text)


def _image(block: Mapping[str, Any], param: str) -> ImagePart:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        assert isinstance(source, dict)
        media, data = source.get("media_type"), source.get("data")
        if media in IMAGE_MEDIA_TYPES and isinstance(data, str) and data:
            return ImagePart(f"data:{media};base64,{data}")
        raise _fail(
            "a base64 image needs 'data' and a 'media_type' of " + ", ".join(IMAGE_MEDIA_TYPES),
            param,
        )
    if kind == "url":
        assert isinstance(source, dict)
        url = source.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return ImagePart(url)
        raise _fail("an image url source needs an http(s) 'url'", param)
    raise _fail("an image block needs a 'source' of type base64 or url", param)


def _tool_result(block: Mapping[str, Any], param: str) -> Message:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _fail("a tool_result block needs a string 'tool_use_id'", param)
    if not isinstance(block.get("is_error", False), bool):
        raise _fail("'is_error' must be true or false", param)
    raw = block.get("content")
    parts: list[Part] = []
    if isinstance(raw, str):
        parts.append(TextPart(raw))
    elif isinstance(raw, list):
        for k, item in enumerate(raw):
            kind, inner = _block(item, f"{param}.content.{k}")
            if kind == "text":
                parts.append(_text(inner, f"{param}.content.{k}"))
            elif kind == "image":
                parts.append(_image(inner, f"{param}.content.{k}"))
            else:
                raise _fail(f"unsupported block type {kind!r} in a tool result",
                            f"{param}.content.{k}")
    elif raw is not None:
        raise _fail("a tool result's 'content' must be a string or an array of blocks", param)
    return Message(role="tool", content=tuple(parts), tool_call_id=tool_use_id)


def _user_messages(content: Any, param: str) -> list[Message]:
    """One user turn as canonical messages: each tool result becomes a tool message."""
    if isinstance(content, str):
        return [Message(role="user", content=(TextPart(content),))]
    if not isinstance(content, list) or not content:
        raise _fail("must be a string or a non-empty array of content blocks", f"{param}.content")
    out: list[Message] = []
    parts: list[Part] = []
    for j, raw in enumerate(content):
        at = f"{param}.content.{j}"
        kind, block = _block(raw, at)
        if kind == "text":
            parts.append(_text(block, at))
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            if parts:
                out.append(Message(role="user", content=tuple(parts)))
                parts = []
            out.append(_tool_result(block, at))
        else:
            raise _fail(f"unsupported block type {kind!r} in a user message", at)
    if parts:
        out.append(Message(role="user", content=tuple(parts)))
    return out


def _assistant_message(content: Any, param: str) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=(TextPart(content),))
    if not isinstance(content, list):
        raise _fail("must be a string or an array of content blocks", f"{param}.content")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for j, raw in enumerate(content):
        at = f"{param}.content.{j}"
        kind, block = _block(raw, at)
        if kind == "text":
            parts.append(_text(block, at))
        elif kind == "tool_use":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input")
            if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name
                    and isinstance(args, dict)):
                raise _fail("a tool_use block needs string 'id' and 'name' and an object "
                            "'input'", at)
            calls.append(ToolCall(call_id, name, _dumps(args)))
        elif kind not in ("thinking", "redacted_thinking"):
            # Thinking blocks are dropped: the canonical history has no place for them.
            raise _fail(f"unsupported block type {kind!r} in an assistant message", at)
    return Message(role="assistant", content=tuple(parts), tool_calls=tuple(calls))


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise _fail("must be a non-empty array of messages", "messages")
    out: list[Message] = []
    for i, item in enumerate(raw):
        param = f"messages.{i}"
        if not isinstance(item, dict):
            raise _fail("each message must be an object", param)
        role = item.get("role")
        if role in ("user", "assistant") and "content" not in item:
            raise _fail("Field required", f"{param}.content")
        if role == "user":
            out.extend(_user_messages(item["content"], param))
        elif role == "assistant":
            out.append(_assistant_message(item["content"], param))
        elif role in ("system", "developer"):
            raise _fail(
                f"role {role!r} is not allowed in the Anthropic Messages API; put system "
                "text in the top-level 'system' field", f"{param}.role"
            )
        else:
            raise _fail("'role' must be 'user' or 'assistant'", f"{param}.role")
    return out


def _system(raw: Any) -> Message | None:
    if raw is None:
        return None
    parts: list[Part] = []
    if isinstance(raw, str):
        parts = [TextPart(raw)] if raw else []
    elif isinstance(raw, list):
        for j, item in enumerate(raw):
            kind, block = _block(item, f"system.{j}")
            if kind != "text":
                raise _fail("'system' blocks must be text blocks", f"system.{j}")
            parts.append(_text(block, f"system.{j}"))
    else:
        raise _fail("must be a string or an array of text blocks", "system")
    return Message(role="system", content=tuple(parts)) if parts else None


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _fail(f"must be a number between {low:g} and {high:g}", key)
    return float(value)


def _tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("must be an array of tools", "tools")
    tools = []
    for i, item in enumerate(raw):
        param = f"tools.{i}"
        if not isinstance(item, dict):
            raise _fail("a tool must be an object", param)
        if item.get("type", "custom") not in ("custom", None):
            raise _fail(f"unsupported tool type {item['type']!r}; only custom tools "
                        "{name, description, input_schema} are supported", param)
        name, schema = item.get("name"), item.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _fail("a tool needs a non-empty string 'name'", param)
        if not isinstance(schema, dict):
            raise _fail("a tool needs an 'input_schema' JSON schema object", param)
        description, strict = item.get("description"), item.get("strict")
        if description is not None and not isinstance(description, str):
            raise _fail("'description' must be a string", param)
        if strict is not None and not isinstance(strict, bool):
            raise _fail("'strict' must be true or false", param)
        tools.append(Tool(name, description, schema, strict))
    return tuple(tools)


def _tool_choice(raw: Any) -> tuple[Any, bool | None]:
    """The canonical (OpenAI-shaped) choice, and ``disable_parallel_tool_use``."""
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    disable = raw.get("disable_parallel_tool_use") if isinstance(raw, dict) else None
    if disable is not None and not isinstance(disable, bool):
        raise _fail("'disable_parallel_tool_use' must be true or false", "tool_choice")
    if kind == "auto":
        return "auto", disable
    if kind == "any":
        return "required", disable
    if kind == "none":
        return "none", disable
    if kind == "tool":
        assert isinstance(raw, dict)
        name = raw.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}, disable
    raise _fail("must be {type: auto|any|none} or {type: tool, name}", "tool_choice")


def _user(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"user_id"}:
        raise _fail("must be an object with only 'user_id'", "metadata")
    user = raw.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _fail("must be a string", "metadata.user_id")
    return user


def _stop_sequences(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _fail("must be an array of strings", "stop_sequences")
    return tuple(raw)


def _thinking(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    kind, budget = value.get("type"), value.get("budget_tokens")
    if kind == "enabled":
        return _is_int(budget) and 1 <= budget <= MAX_TOKENS_LIMIT
    return kind in ("disabled", "adaptive", "between_tools")


# Anthropic parameters the gateway does not interpret but forwards to Anthropic upstreams.
# Each is type-checked; anything not listed here or handled above is rejected.
PASSTHROUGH: dict[str, Callable[[Any], bool]] = {
    "top_k": lambda v: _is_int(v) and v >= 0,
    "thinking": _thinking,
    "service_tier": lambda v: v in ("auto", "standard_only"),
    "output_config": lambda v: isinstance(v, dict),
    "cache_control": lambda v: isinstance(v, dict),
    "inference_geo": lambda v: isinstance(v, str),
    "speed": lambda v: v in ("standard", "fast"),
}
HANDLED = {
    "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p",
    "stop_sequences", "tools", "tool_choice", "metadata",
}
# OpenAI Chat Completions fields a client may send here by mistake, and what to use instead.
OPENAI_NAMES = {"stop": "stop_sequences", "user": "metadata.user_id",
                "max_completion_tokens": "max_tokens"}
OPENAI_ONLY = frozenset({"n", "seed", "stream_options", "response_format", "logit_bias",
                         "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty",
                         "parallel_tool_calls", "functions", "function_call"})


def _unknown(key: str) -> RequestError:
    message = "Extra inputs are not permitted"
    if key in OPENAI_NAMES:
        message += f" (this is the Anthropic Messages API: use '{OPENAI_NAMES[key]}')"
    elif key in OPENAI_ONLY:
        message += " (an OpenAI Chat Completions field; this is the Anthropic Messages API)"
    return _fail(message, key)


def parse_request(body: Any) -> ChatRequest:
    """Validate a client's Messages body (already strict-JSON-parsed)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in body:
        if key not in HANDLED and key not in PASSTHROUGH:
            raise _unknown(key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("must be a non-empty string", "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _fail("Field required (the Anthropic Messages API needs it; OpenAI-style "
                    "bodies belong on /v1/chat/completions)", "max_tokens")
    if not _is_int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise _fail(f"must be an integer between 1 and {MAX_TOKENS_LIMIT}", "max_tokens")
    messages = _messages(body.get("messages"))
    system = _system(body.get("system"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("must be true or false", "stream")
    tool_choice, disable_parallel = _tool_choice(body.get("tool_choice"))
    extra: dict[str, Any] = {}
    for key, check in PASSTHROUGH.items():
        if key in body and body[key] is not None:
            if not check(body[key]):
                raise _fail("invalid value", key)
            extra[key] = body[key]
    if disable_parallel is not None:
        # Folded back into tool_choice by ``upstream_body``; other dialects drop it.
        extra["disable_parallel_tool_use"] = disable_parallel
    return ChatRequest(
        model=model,
        messages=(system, *messages) if system is not None else tuple(messages),
        stream=stream,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=_tools(body.get("tools")),
        tool_choice=tool_choice,
        user=_user(body.get("metadata")),
        dialect="anthropic",
        extra=extra,
    )


# ---------------------------------------------------------------------------------------
# Upstream requests


def _part_block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if not part.url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    header, comma, data = part.url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        raise RequestError("an image data: URL must be base64-encoded", param="messages")
    media = header.split(";", 1)[0]
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Blocks as Anthropic accepts them: no empty text beside others; one text as a string."""
    if len(blocks) > 1:
        blocks = [b for b in blocks if b["type"] != "text" or b["text"]] or blocks[:1]
    if not blocks:
        return ""
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _arguments(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic requires ({} if they are not one)."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _tool_choice_body(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    return None


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body for an Anthropic upstream.

    System messages, wherever they were, become the top-level ``system``. Tool messages
    become ``tool_result`` blocks of one user message, with the user text that follows
    them. An assistant message with nothing left to say is left out (Anthropic rejects
    empty turns). A temperature above Anthropic's 1.0 (OpenAI allows 2) is sent as 1.0.
    """
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the user turn that tool results open
    for message in request.messages:
        blocks = [_part_block(p) for p in message.content]
        if message.role == "system":
            system.extend(b for b in blocks if b["type"] == "text")
        elif message.role == "tool":
            block = {"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                     "content": _content(blocks)}
            if results is None:
                results = []
                messages.append({"role": "user", "content": results})
            results.append(block)
        elif message.role == "user":
            if results is not None:
                results.extend(b for b in blocks if b["type"] != "text" or b["text"])
                results = None
            else:
                messages.append({"role": "user", "content": _content(blocks)})
        else:
            results = None
            blocks = [b for b in blocks if b["type"] != "text" or b["text"]]
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name,
                        "input": _arguments(c.arguments)} for c in message.tool_calls]
            if blocks:
                messages.append({"role": "assistant", "content": _content(blocks)})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
        "stream": request.stream,
    }
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 else system
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description is not None else {}),
                "input_schema": dict(t.parameters) if t.parameters is not None
                else {"type": "object", "properties": {}},
                **({"strict": t.strict} if t.strict is not None else {}),
            }
            for t in request.tools
        ]
    extra = dict(request.extra) if request.dialect == "anthropic" else {}
    disable = extra.pop("disable_parallel_tool_use", None)
    choice = _tool_choice_body(request.tool_choice)
    if choice is not None:
        if disable is not None and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = disable
        body["tool_choice"] = choice
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    body.update(extra)
    return body


# ---------------------------------------------------------------------------------------
# Upstream answers


def upstream_error(raw: Any) -> UpstreamError:
    """An error an upstream sent (the body, or its ``error`` object), provider detail removed.

    The provider's message may echo our credentials or internals; only its type survives.
    Overload and rate limits keep the status they stand for, so they are retried alike.
    """
    if isinstance(raw, dict) and isinstance(raw.get("error"), dict):
        raw = raw["error"]
    kind = raw.get("type") if isinstance(raw, dict) else None
    label = kind if isinstance(kind, str) and kind in UPSTREAM_ERROR_TYPES else "error"
    message = f"upstream reported an error ({label})"
    status = UPSTREAM_ERROR_STATUS.get(label)
    if status is not None:
        return UpstreamStatusError(message, upstream_status=status)
    return UpstreamError(message)


def _json_object(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise UpstreamProtocolError(f"upstream sent {what} that is not JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"upstream sent {what} that is not a JSON object")
    return value


def _string(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream '{key}' is not a string")
    return without_surrogates(value)


COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
          "cache_creation_input_tokens")


def _count(raw: Any, into: dict[str, int]) -> None:
    """Merge an upstream usage object into ``into`` (counts are cumulative: latest wins)."""
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream usage is not an object")
    for key in COUNTS:
        value = raw.get(key)
        if _is_int(value) and value >= 0:
            into[key] = value
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    if _is_int(thinking) and thinking >= 0:
        into["thinking_tokens"] = thinking


def _usage(counts: Mapping[str, int]) -> Usage:
    cached = counts.get("cache_read_input_tokens", 0)
    return Usage(
        prompt_tokens=counts.get("input_tokens", 0) + cached
        + counts.get("cache_creation_input_tokens", 0),
        completion_tokens=counts.get("output_tokens", 0),
        cached_tokens=cached,
        reasoning_tokens=counts.get("thinking_tokens", 0),
    )


def _finish(reason: Any) -> list[StreamEvent]:
    if reason is None:
        return []
    if not isinstance(reason, str):
        raise UpstreamProtocolError("upstream stop_reason is not a string")
    return [Finish(FINISH_REASONS.get(reason, "stop"))]


class StreamParser:
    """Turns an upstream Anthropic SSE stream, one event at a time, into canonical events.

    Tool calls are numbered among tool_use blocks only (block index 1 may be tool call 0).
    Usage from ``message_start`` and ``message_delta`` is reported once, at ``message_delta``.
    ``done`` turns true at ``message_stop``: a stream that ends before it was truncated.
    """

    def __init__(self) -> None:
        self.done = False
        self._tools: dict[int, int] = {}  # block index -> tool call index
        self._counts: dict[str, int] = {}
        self._reported = False

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        obj = _json_object(data, "an event")
        kind = obj.get("type", event)
        if kind == "error" or event == "error":
            raise upstream_error(obj.get("error"))
        if kind == "message_start":
            message = obj.get("message")
            if not isinstance(message, dict):
                raise UpstreamProtocolError("upstream message_start has no message")
            _count(message.get("usage"), self._counts)
            return []
        if kind == "content_block_start":
            return self._start(obj)
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "message_delta":
            delta = obj.get("delta")
            if not isinstance(delta, dict):
                raise UpstreamProtocolError("upstream message_delta has no delta")
            out = _finish(delta.get("stop_reason"))
            _count(obj.get("usage"), self._counts)
            return out + self._report()
        if kind == "message_stop":
            self.done = True
            return [] if self._reported else self._report()
        return []  # ping, content_block_stop, and event types Anthropic may add later

    def _report(self) -> list[StreamEvent]:
        if not self._counts:
            return []
        self._reported = True
        return [UsageReport(_usage(self._counts))]

    def _start(self, obj: Mapping[str, Any]) -> list[StreamEvent]:
        index, block = obj.get("index"), obj.get("content_block")
        if not _is_int(index) or not isinstance(block, dict):
            raise UpstreamProtocolError("upstream content_block_start is malformed")
        kind = block.get("type")
        if kind == "tool_use":
            tool = self._tools[index] = len(self._tools)
            given = block.get("input")
            arguments = _dumps(given) if isinstance(given, dict) and given else ""
            return [ToolCallDelta(tool, _string(block, "id"), _string(block, "name"), arguments)]
        if kind == "text" and block.get("text"):
            return [TextDelta(_string(block, "text"))]
        if kind == "thinking" and block.get("thinking"):
            return [ReasoningDelta(_string(block, "thinking"))]
        return []  # an empty text or thinking block, or one the canonical model cannot hold

    def _delta(self, obj: Mapping[str, Any]) -> list[StreamEvent]:
        index, delta = obj.get("index"), obj.get("delta")
        if not _is_int(index) or not isinstance(delta, dict):
            raise UpstreamProtocolError("upstream content_block_delta is malformed")
        kind = delta.get("type")
        if kind == "text_delta":
            text = _string(delta, "text")
            return [TextDelta(text)] if text else []
        if kind == "thinking_delta":
            text = _string(delta, "thinking")
            return [ReasoningDelta(text)] if text else []
        if kind == "input_json_delta":
            tool = self._tools.get(index)
            if tool is None:
                raise UpstreamProtocolError("upstream sent tool input for a block that is not "
                                            "a tool_use")
            arguments = _string(delta, "partial_json")
            return [ToolCallDelta(tool, arguments=arguments)] if arguments else []
        return []  # signature_delta, citations_delta: nothing the canonical model holds


def parse_message(body: bytes) -> list[StreamEvent]:
    """Events equivalent to one non-streaming upstream ``Message`` body."""
    obj = _json_object(body, "an answer")
    if obj.get("type") == "error" or obj.get("error") is not None:
        raise upstream_error(obj.get("error"))
    content = obj.get("content")
    if not isinstance(content, list):
        raise UpstreamProtocolError("upstream answer has no content array")
    out: list[StreamEvent] = []
    tools = 0
    for block in content:
        if not isinstance(block, dict):
            raise UpstreamProtocolError("upstream content block is not an object")
        kind = block.get("type")
        if kind == "text":
            text = _string(block, "text")
            out += [TextDelta(text)] if text else []
        elif kind == "thinking":
            text = _string(block, "thinking")
            out += [ReasoningDelta(text)] if text else []
        elif kind == "tool_use":
            given = block.get("input")
            if not isinstance(given, dict):
                raise UpstreamProtocolError("upstream tool_use input is not an object")
            out.append(ToolCallDelta(tools, _string(block, "id"), _string(block, "name"),
                                     without_surrogates(_dumps(given))))
            tools += 1
    out += _finish(obj.get("stop_reason"))
    counts: dict[str, int] = {}
    _count(obj.get("usage"), counts)
    if counts:
        out.append(UsageReport(_usage(counts)))
    return out


# ---------------------------------------------------------------------------------------
# Client answers


def usage_json(usage: Usage) -> dict[str, Any]:
    """Canonical usage in Anthropic's terms: ``input_tokens`` excludes cache reads (cache
    writes are not known apart, so they stay in ``input_tokens``)."""
    out: dict[str, Any] = {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
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
    return f"event: {name}\ndata: {_dumps(payload)}\n\n".encode()


def _tool_id(generation_id: str, index: int) -> str:
    """An id for a tool call the upstream gave none (Anthropic clients need one)."""
    return f"toolu_{generation_id}_{index}"


MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class StreamEncoder:
    """Renders canonical events as Anthropic's SSE event sequence (an ``Encoder``, see
    ``wire/encoder.py``).

    One content block is open at a time. A delta of another kind, or of another tool call,
    closes it and opens the next block at the next index. Input usage is only known at the
    end, so ``message_start`` says 0 and ``message_delta`` carries the real counts (the
    SDKs take them from there). A late delta for a tool call whose block was closed (an
    upstream interleaving calls) goes to that block's index; the SDKs accumulate by index.
    """

    keepalive: bytes = b'event: ping\ndata: {"type": "ping"}\n\n'
    splices: str | None = None  # no passthrough yet: every upstream event is re-encoded

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

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self._generation_id, "type": "message", "role": "assistant",
            "model": self._model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
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
            f'"delta":{{"type":"{kind}","{key}":{_dumps(text)}}}}}\n\n'
        ).encode()

    def event(self, event: StreamEvent) -> bytes:
        out = self.start()
        if isinstance(event, TextDelta) and event.text:
            out += self._enter("text", {"type": "text", "text": ""})
            return out + self._delta(self._index, "text_delta", "text", event.text)
        if isinstance(event, ReasoningDelta) and event.text:
            out += self._enter("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            return out + self._delta(self._index, "thinking_delta", "thinking", event.text)
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
        raise NotImplementedError("the Anthropic dialect has no passthrough (splices is None)")


def render_message(
    generation_id: str,
    model: str,
    *,
    text: str,
    reasoning: str,
    tool_calls: list[ToolCall],
    finish: FinishReason,
    usage: Usage,
) -> bytes:
    """A non-streaming ``Message``: thinking, text, then tool_use blocks."""
    content: list[dict[str, Any]] = []
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    content += [
        {"type": "tool_use", "id": c.id or _tool_id(generation_id, i), "name": c.name,
         "input": _arguments(c.arguments)}
        for i, c in enumerate(tool_calls)
    ]
    return _dumps({
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
    return _dumps(body).encode()
