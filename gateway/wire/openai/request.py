"""OpenAI Chat Completions, client requests: an untrusted body into a ``ChatRequest``.

``parse_request`` validates a ``POST /v1/chat/completions`` body (already strict-JSON-parsed)
and returns the canonical request; ``PASSTHROUGH`` lists the OpenAI parameters the gateway
forwards to OpenAI-dialect upstreams without interpreting them.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Every field of a client body is validated here; an unknown field is a 400 naming it, as
  OpenAI itself answers. Endpoint fields (``api_base``, ``base_url``, ``api_key``,
  ``extra_headers``, ...) are therefore never honoured (FAULTS.md S6); the routing
  preferences ``models`` and ``provider`` only choose among names the catalog knows.
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
    RoutingPrefs,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.errors import RequestError
from gateway.wire.jsonbody import is_int

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool"}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


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


def _tool_choice(raw: Any) -> ToolChoice | None:
    """``none``, ``auto``, ``required`` or ``{type: function, function: {name}}``."""
    if raw is None:
        return None
    if raw in ("none", "auto", "required"):
        return ToolChoice(raw)
    fn = raw.get("function") if isinstance(raw, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return ToolChoice("tool", fn["name"])
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
