"""The Anthropic Messages dialect, client side, sans-I/O.

``parse_request`` turns an untrusted ``POST /v1/messages`` body into a ``ChatRequest``;
``StreamEncoder`` renders stream events as Anthropic's SSE sequence (``message_start``,
``content_block_start``/``_delta``/``_stop`` per block, ``message_delta``, ``message_stop``);
``render_message`` renders a non-streaming ``Message``; ``error_body`` renders Anthropic's
error body.

The upstream side (``upstream_body``, ``StreamParser``, ``parse_message``,
``upstream_error``) lives in ``wire.anthropic_upstream`` and is re-exported here, so the
whole dialect is importable from this module.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Every field of a client body is validated here; an unknown top-level field is a 400
  naming it, as Anthropic answers, so routing fields are never honoured (FAULTS.md S6).
  Anthropic's error body has no ``param``, so each message starts with the field's path.
- What the canonical model cannot hold is dropped knowingly: thinking blocks in the
  history, ``cache_control`` and ``citations`` on blocks, a tool result's ``is_error``.
- Every SSE event we send has an ``event:`` line: the SDKs skip events without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
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
)
from gateway.errors import GatewayError, RequestError
from gateway.wire.anthropic_common import ERROR_TYPES as ERROR_TYPES
from gateway.wire.anthropic_common import _arguments
from gateway.wire.anthropic_upstream import COUNTS as COUNTS
from gateway.wire.anthropic_upstream import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from gateway.wire.anthropic_upstream import FINISH_REASONS as FINISH_REASONS
from gateway.wire.anthropic_upstream import UPSTREAM_ERROR_STATUS as UPSTREAM_ERROR_STATUS
from gateway.wire.anthropic_upstream import UPSTREAM_ERROR_TYPES as UPSTREAM_ERROR_TYPES
from gateway.wire.anthropic_upstream import StreamParser as StreamParser
from gateway.wire.anthropic_upstream import parse_message as parse_message
from gateway.wire.anthropic_upstream import upstream_body as upstream_body
from gateway.wire.anthropic_upstream import upstream_error as upstream_error
from gateway.wire.jsonbody import compact, is_int

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",  # never a clean finish in practice: errors end with an error event
}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
            calls.append(ToolCall(call_id, name, compact(args)))
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
        return is_int(budget) and 1 <= budget <= MAX_TOKENS_LIMIT
    return kind in ("disabled", "adaptive", "between_tools")


# Anthropic parameters the gateway does not interpret but forwards to Anthropic upstreams.
# Each is type-checked; anything not listed here or handled above is rejected.
PASSTHROUGH: dict[str, Callable[[Any], bool]] = {
    "top_k": lambda v: is_int(v) and v >= 0,
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
    if not is_int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
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
    return f"event: {name}\ndata: {compact(payload)}\n\n".encode()


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
