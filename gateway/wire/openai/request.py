"""OpenAI Chat Completions, client requests: an untrusted body into a ``ChatRequest``.

``parse_request`` validates a ``POST /v1/chat/completions`` body (already strict-JSON-parsed)
and returns the canonical request.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- The fields the gateway interprets (model, messages, stream, token caps, tools, and every
  field with a canonical meaning) are validated here. Any other field is the client's
  business with an OpenAI-dialect upstream: it goes there as sent, and is the feature
  ``openai:<field>`` that no other dialect honours (refused by name there, or dropped where
  allowed: ``routing/fidelity.py``).
- Endpoint fields (``api_base``, ``base_url``, ``api_key``, ``extra_headers``, ...) are a
  400 (FAULTS.md S6); the routing preferences ``models`` and ``provider`` only choose among
  names the catalog knows.
- OpenRouter's extensions are honoured where they mean something to a self-hosted gateway
  (``reasoning``, ``usage``, ``provider.sort``, ``provider.require_parameters``, ``top_k``,
  ``min_p``, ``repetition_penalty``) and the rest is a 400 naming them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.canonical import (
    AUDIO_TYPES,
    DOCUMENT_TYPES,
    EFFORTS,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ResponseFormat,
    RoutingPrefs,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.errors import RequestError
from gateway.wire.features import note_media, note_tools
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


PART_KEYS = {"text": {"type", "text"}, "image_url": {"type", "image_url"},
             "file": {"type", "file"}, "input_audio": {"type", "input_audio"}}


def _file(raw: Any, param: str) -> FilePart | None:
    """A ``file`` part: inline PDF ``file_data`` (a data: URL) is a document every dialect
    reads; a ``file_id`` (OpenAI's Files API) only an OpenAI-dialect upstream can."""
    spec = raw.get("file")
    if not isinstance(spec, dict):
        raise _fail("a file part needs a 'file' object", param)
    if spec.get("file_data") is None or spec.get("file_id") is not None:
        # A file_id reads the operator's OpenAI files: another tenant's, possibly.
        raise _fail("'file_id' " + SHARED, f"{param}.file.file_id")
    return pdf_data(spec, param)


def pdf_data(spec: Mapping[str, Any], param: str) -> FilePart:
    """``file_data`` (a base64 data: URL of a PDF) and ``filename``, as OpenAI's file parts
    carry them (Chat Completions' ``file`` and the Responses API's ``input_file``)."""
    data, name = spec.get("file_data"), spec.get("filename")
    if name is not None and not isinstance(name, str):
        raise _fail("'filename' must be a string", param)
    header, comma, payload = data.partition(",") if isinstance(data, str) else ("", "", "")
    media = header.removeprefix("data:").removesuffix(";base64")
    if not comma or not header.startswith("data:") or not header.endswith(";base64") or (
            media not in DOCUMENT_TYPES):
        raise _fail("'file_data' must be a base64 data: URL of a PDF", param)
    return FilePart(media, payload, name)


def _audio(raw: Any, param: str) -> FilePart:
    spec = raw.get("input_audio")
    data = spec.get("data") if isinstance(spec, dict) else None
    kind = spec.get("format") if isinstance(spec, dict) else None
    if not isinstance(data, str) or not isinstance(kind, str) or kind not in AUDIO_TYPES:
        raise _fail("an input_audio part needs base64 'data' and a 'format' of wav or mp3",
                    param)
    return FilePart(AUDIO_TYPES[kind], data)


def _part(raw: Any, param: str) -> Part | None:
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
    if kind == "file":
        return _file(raw, param)
    if kind == "input_audio":
        return _audio(raw, param)
    raise _fail(f"unsupported content part type {kind!r}", param)


def _content(raw: Any, param: str) -> tuple[Part, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (TextPart(raw),)
    if isinstance(raw, list):
        parts = (_part(item, f"{param}.{i}") for i, item in enumerate(raw))
        return tuple(p for p in parts if p is not None)
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


# Message fields the canonical model carries (a null ``refusal`` is what the SDKs echo
# back from an answer); any other is the feature ``openai:messages.<field>``.
MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content",
                "reasoning_details", "refusal"}


# OpenRouter's ``reasoning_details`` formats: which provider's signature a detail carries.
FORMATS = {"anthropic-claude-v1": "anthropic", "google-gemini-v1": "gemini",
           "openai-responses-v1": "openai"}


def _reasoning_history(raw: Mapping[str, Any],
                       param: str) -> tuple[str, str, str, tuple[str, ...]]:
    """An assistant message's ``reasoning_content`` and OpenRouter's ``reasoning_details``
    (``reasoning.text`` with its signature, ``reasoning.encrypted``, ``reasoning.summary``)
    as (text, signature, the dialect that wrote it, encrypted parts)."""
    text = raw.get("reasoning_content") or ""
    if not isinstance(text, str):
        raise _fail("'reasoning_content' must be a string", f"{param}.reasoning_content")
    details = raw.get("reasoning_details") or []
    if not isinstance(details, list):
        raise _fail("'reasoning_details' must be an array", f"{param}.reasoning_details")
    signature, by, redacted = "", "", []
    for i, detail in enumerate(details):
        at = f"{param}.reasoning_details.{i}"
        kind = detail.get("type") if isinstance(detail, dict) else None
        fmt = detail.get("format") if isinstance(detail, dict) else None
        if fmt is not None and not isinstance(fmt, str):
            raise _fail("'format' must be a string", f"{at}.format")
        if kind is not None:
            by = FORMATS.get(fmt or "", by)
        if kind == "reasoning.encrypted" and isinstance(detail.get("data"), str):
            redacted.append(detail["data"])
        elif kind in ("reasoning.text", "reasoning.summary") and isinstance(
                detail.get("signature", ""), str | None):
            signature = detail.get("signature") or signature
            extra = detail.get("text") or detail.get("summary") or ""
            text = text or (extra if isinstance(extra, str) else "")
        else:
            raise _fail("a reasoning detail must be {type: reasoning.text, text?, signature?} "
                        "or {type: reasoning.encrypted, data}", at)
    return text, signature, by, tuple(redacted)


def _message(raw: Any, index: int, features: dict[str, str]) -> Message:
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
    if raw.get("content") in (None, []) and not tool_calls and role != "assistant":
        raise _fail("'content' is required", f"{param}.content")
    tool_call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise _fail("a tool message needs 'tool_call_id'", f"{param}.tool_call_id")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail("'name' must be a string", f"{param}.name")
    audio = raw.get("audio")
    if isinstance(audio, dict) and audio.get("id") is not None:
        raise _fail("an earlier answer's audio 'id' " + SHARED, f"{param}.audio.id")
    for key in sorted(raw.keys() - MESSAGE_KEYS | {"refusal"}):
        if raw.get(key) is not None:  # an earlier refusal is OpenAI's own to read back
            features.setdefault(f"openai:messages.{key}", f"{param}.{key}")
    reasoning, signature, by = "", "", ""
    redacted: tuple[str, ...] = ()
    if role == "assistant":
        reasoning, signature, by, redacted = _reasoning_history(raw, param)
    return Message(
        role=role,  # type: ignore[arg-type]
        content=content,
        tool_calls=tool_calls,
        tool_call_id=tool_call_id if role == "tool" else None,
        name=name,
        reasoning=reasoning,
        signature=signature,
        signed_by=by,
        redacted=redacted,
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


# OpenAI parameters the gateway does not interpret: each value is checked where OpenAI
# documents its type, then forwarded as sent. Fields not listed are forwarded unchecked.
PASSTHROUGH: dict[str, Callable[[Any], bool]] = {
    "logit_bias": lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
    "logprobs": _is(bool),
    "top_logprobs": lambda v: is_int(v) and 0 <= v <= 20,
    "verbosity": _is(str),
    "service_tier": _is(str),
    "store": _is(bool),
    "prompt_cache_key": _is(str),
    "safety_identifier": _is(str),
    "metadata": lambda v: isinstance(v, dict)
    and len(v) <= 16
    and all(isinstance(x, str) for x in v.values()),
}
SHARED = ("names a resource of the gateway's own upstream account, which every client of "
          "this gateway shares: not honoured (send the content itself)")
# Never honoured from a body: where a request goes is the gateway's configuration.
# (Compared lower-case: ``API_BASE`` is the same request to a lenient proxy upstream.)
ENDPOINT_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "extra_headers", "extra_query",
    "custom_llm_provider", "organization", "deployment_id",
    # What OpenAI-compatible proxies (LiteLLM, OpenRouter) read as routing or credentials.
    "user_config", "extra_body", "preset", "litellm_params", "mock_response",
})
# OpenRouter's routing fields: the chat route reads them as preferences among what the
# catalog serves; a route that passes its body on as sent must never let them through.
ROUTING_FIELDS = ("models", "provider", "route", "transforms", "plugins")


def refuse_endpoint_fields(body: Mapping[str, Any], *, routing: bool = False) -> None:
    """A 400 naming any endpoint or proxy field of ``body`` (every OpenAI-family route
    checks the same list) and, with ``routing``, any of OpenRouter's routing fields (for
    the routes whose bodies an upstream gets as sent: Responses, legacy completions)."""
    for key in body:
        if key.lower() in ENDPOINT_FIELDS:
            raise _fail(f"Unrecognized request argument supplied: {key} (where a request "
                        "goes is the gateway's configuration, never the body's)", key)
        if routing and key in ROUTING_FIELDS:
            raise _fail(f"'{key}' routes a request: only /v1/chat/completions takes "
                        "OpenRouter's routing fields; here the gateway's configuration "
                        "decides", key)


# OpenRouter fields with no meaning for a self-hosted gateway, and why.
ROUTER_REFUSED = {
    "transforms": "arouter does not compress prompts (OpenRouter's 'transforms')",
    "plugins": "arouter runs no plugins (web search, file parsing)",
    "route": "arouter's fallbacks are 'models' and its own routing configuration",
}
# The canonical fields, under the names OpenAI (or OpenRouter) gives them.
CANONICAL = ("temperature", "top_p", "stop", "seed", "user", "presence_penalty",
             "frequency_penalty", "parallel_tool_calls", "response_format", "top_k")
HANDLED = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "n", "tools", "tool_choice", "reasoning_effort", "reasoning", "usage",
    "min_p", "repetition_penalty",
    "models", "provider",  # routing preferences, as OpenRouter takes them
    *CANONICAL,
}
MAX_FALLBACKS = 8
MAX_CHOICES = 128  # OpenAI's own bound on n
PROVIDER_PREFS = {"order", "allow_fallbacks", "only", "ignore", "sort", "require_parameters"}
SORTS = ("price", "latency")


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
    if not isinstance(prefs, dict):
        raise _fail(f"'provider' must be an object with keys {sorted(PROVIDER_PREFS)}",
                    "provider")
    for key in prefs:
        if key not in PROVIDER_PREFS:
            raise _fail(f"'provider.{key}' is not supported by arouter (it takes "
                        f"{', '.join(sorted(PROVIDER_PREFS))})", f"provider.{key}")
    allow = prefs.get("allow_fallbacks", True)
    if not isinstance(allow, bool):
        raise _fail("'provider.allow_fallbacks' must be true or false", "provider")
    required = prefs.get("require_parameters", False)
    if not isinstance(required, bool):
        raise _fail("'provider.require_parameters' must be true or false",
                    "provider.require_parameters")
    sort = prefs.get("sort")
    if sort is not None and sort not in SORTS:
        raise _fail(f"'provider.sort' must be one of {', '.join(SORTS)}", "provider.sort")
    lists = {k: _names(prefs[k], f"provider.{k}") if prefs.get(k) is not None else ()
             for k in ("order", "only", "ignore")}
    return RoutingPrefs(fallbacks=fallbacks, allow_fallbacks=allow, sort=sort,
                        require_parameters=required, **lists)


def _response_format(raw: Any) -> ResponseFormat | None:
    """``{type: text}``, ``{type: json_object}`` or ``{type: json_schema, json_schema:
    {name, schema, description?, strict?}}``."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    spec = raw.get("json_schema") if isinstance(raw, dict) else None
    if kind == "json_schema" and isinstance(spec, dict):
        name, schema = spec.get("name"), spec.get("schema")
        description, strict = spec.get("description"), spec.get("strict")
        if (isinstance(name, str) and name and isinstance(schema, dict | None)
                and isinstance(description, str | None) and isinstance(strict, bool | None)):
            return ResponseFormat("json_schema", schema, name, description, strict)
    raise _fail("'response_format' must be {type: text}, {type: json_object} or {type: "
                "json_schema, json_schema: {name, schema, strict?}}", "response_format")


def _reasoning(body: Mapping[str, Any]) -> Reasoning | None:
    """``reasoning_effort`` (OpenAI) or ``reasoning`` {effort | max_tokens, exclude,
    enabled} (OpenRouter's)."""
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        raise _fail(f"'reasoning_effort' must be one of {', '.join(EFFORTS)}",
                    "reasoning_effort")
    raw = body.get("reasoning")
    if raw is None:
        return None if effort is None else Reasoning(enabled=effort != "none", effort=effort)
    if not isinstance(raw, dict) or set(raw) - {"effort", "max_tokens", "exclude", "enabled"}:
        raise _fail("'reasoning' must be an object with keys effort, max_tokens, exclude, "
                    "enabled", "reasoning")
    effort = raw.get("effort", effort)
    budget, exclude, enabled = raw.get("max_tokens"), raw.get("exclude"), raw.get("enabled")
    if effort is not None and effort not in EFFORTS:
        raise _fail(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}",
                    "reasoning.effort")
    if budget is not None and not (is_int(budget) and 0 <= budget <= MAX_TOKENS_LIMIT):
        raise _fail("'reasoning.max_tokens' must be a non-negative integer",
                    "reasoning.max_tokens")
    if effort is not None and budget is not None:
        raise _fail("give 'reasoning.effort' or 'reasoning.max_tokens', not both", "reasoning")
    for key, value in (("exclude", exclude), ("enabled", enabled)):
        if value is not None and not isinstance(value, bool):
            raise _fail(f"'reasoning.{key}' must be true or false", f"reasoning.{key}")
    on = enabled is not False and effort != "none" and budget != 0
    return Reasoning(enabled=on, effort=effort, budget=budget or None,
                     include=None if exclude is None else not exclude)


def _extensions(body: Mapping[str, Any]) -> None:
    """OpenRouter's fields that are honoured as a whole (``usage``) or refused by name."""
    for key, why in ROUTER_REFUSED.items():
        if key in body:
            raise _fail(f"'{key}' is not supported: {why}", key)
    usage = body.get("usage")
    if usage is not None and not (isinstance(usage, dict) and set(usage) <= {"include"}
                                  and isinstance(usage.get("include", True), bool)):
        raise _fail("'usage' must be {include: bool} (usage is always reported)", "usage")
    for key, low, high in (("min_p", 0, 1), ("repetition_penalty", 0, 2)):
        value = body.get(key)
        if value is not None and not (_is_number(value) and low <= value <= high):
            raise _fail(f"'{key}' must be a number between {low} and {high}", key)


def parse_request(body: Any) -> ChatRequest:
    """Validate a client's chat-completions body (already strict-JSON-parsed)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    refuse_endpoint_fields(body)
    _extensions(body)
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
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not (is_int(n) and 1 <= n <= MAX_CHOICES):
        raise _fail(f"'n' must be an integer between 1 and {MAX_CHOICES}", "n")
    if n > 1 and stream:
        raise _fail("n > 1 is answered whole only: a stream relays one choice (send "
                    "stream: false for several)", "n")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise _fail("'seed' must be an integer", "seed")
    top_k = body.get("top_k")
    if top_k is not None and not (is_int(top_k) and top_k >= 0):
        raise _fail("'top_k' must be a non-negative integer", "top_k")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _fail("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    features: dict[str, str] = {}
    for key, value in body.items():
        if key in HANDLED or value is None:
            continue
        check = PASSTHROUGH.get(key)
        if check is not None and not check(value):
            raise _fail(f"invalid value for '{key}'", key)
        features[f"openai:{key}"] = key
    parsed = tuple(_message(m, i, features) for i, m in enumerate(messages))
    for i, m in enumerate(messages):  # a part's keys the canonical model does not carry
        for j, part in enumerate(m["content"] if isinstance(m.get("content"), list) else ()):
            kind = part.get("type")  # each part was checked by ``_message``: a dict
            known = PART_KEYS.get(kind, set()) if isinstance(kind, str) else set()
            for key in sorted(part.keys() - known) if known else ():
                features.setdefault(f"openai:content.{key}", f"messages.{i}.content.{j}.{key}")
    note_media(parsed, features, images="image_url", documents="file", audio="input_audio")
    tools = _tools(body.get("tools"))
    note_tools(tools, features)
    for key in CANONICAL:
        if body.get(key) is not None and body.get(key) != {"type": "text"}:
            features[key] = key
    reasoning = _reasoning(body)
    if reasoning is not None:
        features["reasoning"] = "reasoning" if "reasoning" in body else "reasoning_effort"
    for key in ("min_p", "repetition_penalty"):
        if body.get(key) is not None:
            features[key] = key
    if body.get("service_tier") not in (None, "auto", "default"):  # flex, priority, scale
        features["paid:service_tier"] = "service_tier"
    if body.get("web_search_options") is not None:
        features["paid:web_search"] = "web_search_options"
    if n > 1:  # several choices: only an OpenAI upstream's whole answer carries them
        features["openai:n"] = "n"
    return ChatRequest(
        model=model,
        messages=parsed,
        stream=stream,
        max_tokens=max_tokens,
        choices=n,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=_stop(body.get("stop")),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice")),
        user=_string(body, "user"),
        seed=seed,
        top_k=top_k,
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
        parallel_tool_calls=parallel,
        response_format=_response_format(body["response_format"])
        if body.get("response_format") is not None else None,
        reasoning=reasoning,
        dialect="openai",
        routing=_routing(body),
        raw=body,
        features=features,
    )
