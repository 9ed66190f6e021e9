"""Anthropic Messages, client requests: an untrusted body into a ``ChatRequest``.

``parse_request`` validates a ``POST /v1/messages`` body (already strict-JSON-parsed) and
returns the canonical request; ``PASSTHROUGH`` lists the Anthropic parameters the gateway
forwards to Anthropic upstreams without interpreting them.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Every field of a client body is validated here; an unknown top-level field is a 400
  naming it, as Anthropic answers, so routing fields are never honoured (FAULTS.md S6).
  Anthropic's error body has no ``param``, so each message starts with the field's path.
- What the canonical model cannot hold is dropped knowingly: thinking blocks in the
  history, ``cache_control`` and ``citations`` on blocks, a tool result's ``is_error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
    ChatRequest,
    ImagePart,
    Message,
    Part,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from gateway.errors import RequestError
from gateway.wire.jsonbody import compact, is_int

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _fail(message: str, param: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


MODES: dict[str, ToolChoiceMode] = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(raw: Any) -> ToolChoice | None:
    """``{type: auto|any|none}`` or ``{type: tool, name}``, each with an optional
    ``disable_parallel_tool_use`` (kept as ``parallel``, negated)."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    disable = raw.get("disable_parallel_tool_use") if isinstance(raw, dict) else None
    if disable is not None and not isinstance(disable, bool):
        raise _fail("'disable_parallel_tool_use' must be true or false", "tool_choice")
    parallel = None if disable is None else not disable
    if isinstance(kind, str) and kind in MODES:
        return ToolChoice(MODES[kind], parallel=parallel)
    if kind == "tool":
        assert isinstance(raw, dict)
        name = raw.get("name")
        if isinstance(name, str) and name:
            return ToolChoice("tool", name, parallel=parallel)
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
    tool_choice = _tool_choice(body.get("tool_choice"))
    extra: dict[str, Any] = {}
    for key, check in PASSTHROUGH.items():
        if key in body and body[key] is not None:
            if not check(body[key]):
                raise _fail("invalid value", key)
            extra[key] = body[key]
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
