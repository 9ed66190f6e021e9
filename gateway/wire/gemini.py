"""The Gemini ``generateContent`` dialect, both directions, sans-I/O.

Client side: ``parse_request`` turns an untrusted ``GenerateContentRequest`` (the model comes
from the URL path) into a ``ChatRequest``; ``StreamEncoder`` renders stream events as
``GenerateContentResponse`` chunks, either as SSE (``?alt=sse``, what the SDKs ask for) or as
the one JSON array ``streamGenerateContent`` sends otherwise; ``render_response`` renders a
non-streaming answer; ``error_body`` renders Google's error shape.

Upstream side: ``upstream_body`` builds the body sent to a Gemini upstream; ``StreamParser``
and ``parse_response`` turn its answers back into canonical events.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Keys are read in camelCase or snake_case, as the REST API reads them (the SDKs mix both,
  even within one object). Enum fields also take the integers that proto-JSON clients send.
  An unknown field is a 400 naming it, and so is a known feature the gateway cannot honour
  (``cachedContent``, built-in tools such as ``googleSearch``).
- Gemini function calls carry no ids. The client side numbers them ``call_<n>`` in request
  order and pairs each ``functionResponse`` with the earliest unanswered call of its name.
- Gemini sends a function call whole, never in fragments, so the encoder holds tool-call
  deltas until the next other event and then emits each call complete.
- Keepalives are chunks the SDKs accept: the Python and JS SDKs fail on SSE comments, so the
  SSE keepalive is an empty text chunk; in the JSON array it is a newline (JSON whitespace).
- Upstream bodies are untrusted: malformed ones raise ``UpstreamProtocolError``, and upstream
  error text is never repeated (Gemini errors can echo the API key in a URL).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

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
from gateway.wire.jsonbody import has_surrogate, without_surrogates
from gateway.wire.openai import MAX_TOKENS_LIMIT

MAX_STOP_SEQUENCES = 5
MAX_SCHEMA_DEPTH = 64

# google.rpc status names for the HTTP statuses the gateway answers with. The Gemini docs
# list 400 INVALID_ARGUMENT/FAILED_PRECONDITION, 403, 404, 429, 500, 503 and 504; the rest
# follow google.rpc.Code's HTTP mapping. 402 (out of credits) is FAILED_PRECONDITION, as
# Gemini answers a project without billing; 502 (the provider failed us) is UNAVAILABLE, a
# transient condition the SDKs retry. Other 4xx read INVALID_ARGUMENT, other 5xx INTERNAL.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# The words an upstream error may be labelled with: google.rpc status names, nothing else.
UPSTREAM_STATUSES = frozenset(STATUS_NAMES.values()) | {
    "UNKNOWN", "OUT_OF_RANGE", "ALREADY_EXISTS", "DATA_LOSS",
}

FINISH_TO_GEMINI: dict[FinishReason, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "tool_calls": "STOP",
    "error": "OTHER",
}
FINISH_FROM_GEMINI: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

MODES = {0: "MODE_UNSPECIFIED", 1: "AUTO", 2: "ANY", 3: "NONE", 4: "VALIDATED"}
SCHEMA_TYPES = {1: "string", 2: "number", 3: "integer", 4: "boolean", 5: "array",
                6: "object", 7: "null"}
# Tool kinds Gemini offers that the gateway cannot run on every upstream.
BUILTIN_TOOLS = frozenset({
    "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext", "fileSearch",
    "computerUse", "googleMaps", "retrieval", "enterpriseWebSearch", "mcpServers",
})
UNSUPPORTED_PARTS = frozenset({
    "executableCode", "codeExecutionResult", "videoMetadata", "toolCall", "toolResponse",
})
# generationConfig fields without a canonical field: validated, kept in ``extra`` and
# forwarded only to Gemini upstreams. ``safetySettings`` travels the same way at top level.
GENERATION_EXTRA = (
    "topK", "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
    "responseJsonSchema", "responseModalities", "responseLogprobs", "logprobs",
    "thinkingConfig", "mediaResolution",
)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".gif": "image/gif", ".heic": "image/heic",
               ".heif": "image/heif"}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _join(param: str, name: str | int) -> str:
    return f"{param}.{name}" if param else str(name)


def _fields(raw: Any, allowed: frozenset[str], param: str, what: str) -> dict[str, Any]:
    """An object's fields under their camelCase names; null fields count as absent."""
    if not isinstance(raw, dict):
        raise _fail(f"{what} must be an object", param or "body")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _camel(key)
        if name not in allowed:
            where = f" at '{param}'" if param else ""
            raise _fail(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: '
                "Cannot find field.",
                _join(param, key),
            )
        if name in out:
            raise _fail(f"'{name}' is given twice (camelCase and snake_case)",
                        _join(param, name))
        if value is not None:
            out[name] = value
    return out


def _loads_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, or None; escaped lone surrogates become U+FFFD."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if "\\u" in text:
        dumped = _dumps(value)
        if has_surrogate(dumped):
            fixed = json.loads(without_surrogates(dumped))
            assert isinstance(fixed, dict)
            return fixed
    return value


# ---------------------------------------------------------------------------------------
# Client requests


@attrs.frozen
class _Response:
    """A ``functionResponse`` part, before it becomes a tool message."""

    name: str
    content: str
    id: str | None


@attrs.define
class _Calls:
    """The function calls of one request so far, for ids and for pairing responses."""

    count: int = 0
    ids: set[str] = attrs.field(factory=set)
    pending: dict[str, list[str]] = attrs.field(factory=dict)

    def call(self, name: str, given: str | None) -> str:
        call_id = given or f"call_{self.count}"
        self.count += 1
        self.ids.add(call_id)
        self.pending.setdefault(name, []).append(call_id)
        return call_id

    def answer(self, response: _Response, param: str) -> str:
        waiting = self.pending.get(response.name, [])
        if response.id is not None:
            if response.id not in self.ids:
                raise _fail(f"no earlier functionCall has id {response.id!r}", param)
            if response.id in waiting:
                waiting.remove(response.id)
            return response.id
        if not waiting:
            raise _fail(
                f"functionResponse {response.name!r} answers no earlier functionCall", param
            )
        return waiting.pop(0)


def _image_type(raw: Any, param: str, *, required: bool) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not raw.lower().startswith("image/"):
        raise _fail("only image media is supported ('mimeType' must be image/...)", param)
    return raw


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def _inline_data(raw: Any, param: str) -> ImagePart:
    blob = _fields(raw, frozenset({"mimeType", "data", "displayName"}), param, "'inlineData'")
    mime = _image_type(blob.get("mimeType"), _join(param, "mimeType"), required=True)
    data = blob.get("data")
    if not isinstance(data, str) or not data or not _BASE64.fullmatch(data):
        raise _fail("'data' must be base64 text", _join(param, "data"))
    # The REST API also reads URL-safe base64; a data: URL holds the standard alphabet.
    data = data.replace("-", "+").replace("_", "/")
    return ImagePart(f"data:{mime};base64,{data}")


def _file_data(raw: Any, param: str) -> ImagePart:
    ref = _fields(raw, frozenset({"mimeType", "fileUri", "displayName"}), param, "'fileData'")
    _image_type(ref.get("mimeType"), _join(param, "mimeType"), required=False)
    uri = ref.get("fileUri")
    if not isinstance(uri, str) or not uri.lower().startswith(("https://", "http://")):
        raise _fail("'fileUri' must be an http(s) URL", _join(param, "fileUri"))
    return ImagePart(uri)


def _json_text(value: Any, param: str) -> str:
    try:
        return _dumps(value)
    except (ValueError, RecursionError):
        raise _fail("value nested too deeply", param) from None


def _name_and_id(fields: Mapping[str, Any], param: str) -> tuple[str, str | None]:
    name = fields.get("name")
    if not isinstance(name, str) or not name:
        raise _fail("'name' must be a non-empty string", _join(param, "name"))
    given = fields.get("id")
    if given is not None and not isinstance(given, str):
        raise _fail("'id' must be a string", _join(param, "id"))
    return name, given or None


def _function_call(raw: Any, param: str, calls: _Calls) -> ToolCall:
    call = _fields(raw, frozenset({"name", "args", "id"}), param, "'functionCall'")
    name, given = _name_and_id(call, param)
    args = call.get("args", {})
    if not isinstance(args, dict):
        raise _fail("'args' must be an object", _join(param, "args"))
    arguments = _json_text(args, _join(param, "args"))
    return ToolCall(calls.call(name, given), name, arguments)


def _function_response(raw: Any, param: str) -> _Response:
    answer = _fields(raw, frozenset({"name", "response", "id"}), param, "'functionResponse'")
    name, given = _name_and_id(answer, param)
    response = answer.get("response")
    if not isinstance(response, dict):
        raise _fail("'response' must be an object", _join(param, "response"))
    return _Response(name, _json_text(response, _join(param, "response")), given)


DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
PART_FIELDS = frozenset(DATA_FIELDS) | UNSUPPORTED_PARTS | {"thought", "thoughtSignature"}
ROLE_PARTS = {
    "user": {"text", "inlineData", "fileData", "functionResponse"},
    "model": {"text", "inlineData", "fileData", "functionCall"},
    "system": {"text"},
}


def _part(
    raw: Any, param: str, role: str, calls: _Calls
) -> Part | ToolCall | _Response | None:
    """One part; None for a model's earlier thought, which no upstream takes back."""
    part = _fields(raw, PART_FIELDS, param, "a part")
    unsupported = sorted(UNSUPPORTED_PARTS & part.keys())
    if unsupported:
        raise _fail(f"'{unsupported[0]}' parts are not supported", _join(param, unsupported[0]))
    kinds = [name for name in DATA_FIELDS if name in part]
    if len(kinds) != 1:
        raise _fail("a part must hold exactly one of " + ", ".join(DATA_FIELDS), param)
    [kind] = kinds
    if kind not in ROLE_PARTS[role]:
        raise _fail(f"a {role} turn cannot hold a '{kind}' part", _join(param, kind))
    thought = part.get("thought", False)
    if not isinstance(thought, bool) or (thought and role != "model"):
        raise _fail("'thought' must be a boolean, and only model parts are thoughts",
                    _join(param, "thought"))
    if not isinstance(part.get("thoughtSignature", ""), str):
        raise _fail("'thoughtSignature' must be base64 text", _join(param, "thoughtSignature"))
    value = part[kind]
    where = _join(param, kind)
    if kind == "text":
        if not isinstance(value, str):
            raise _fail("'text' must be a string", where)
        return None if thought else TextPart(value)
    if kind == "inlineData":
        return _inline_data(value, where)
    if kind == "fileData":
        return _file_data(value, where)
    if kind == "functionCall":
        return _function_call(value, where, calls)
    return _function_response(value, where)


ROLES = {"user": "user", "function": "user", "model": "model"}


def _content(raw: Any, index: int, calls: _Calls) -> list[Message]:
    """One ``Content`` turn as canonical messages: a user turn's function responses become
    tool messages placed before its other parts, as chat APIs need them."""
    param = f"contents.{index}"
    turn = _fields(raw, frozenset({"role", "parts"}), param, "each content")
    raw_role = turn.get("role", "user")
    role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise _fail("'role' must be user or model", _join(param, "role"))
    parts = turn.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _fail("'parts' must be a non-empty array", _join(param, "parts"))
    content: list[Part] = []
    tool_calls: list[ToolCall] = []
    answers: list[Message] = []
    for i, raw_part in enumerate(parts):
        where = f"{param}.parts.{i}"
        part = _part(raw_part, where, role, calls)
        if isinstance(part, ToolCall):
            tool_calls.append(part)
        elif isinstance(part, _Response):
            call_id = calls.answer(part, where)
            answers.append(Message(role="tool", content=(TextPart(part.content),),
                                   tool_call_id=call_id))
        elif part is not None:
            content.append(part)
    if role == "model":
        if not content and not tool_calls:
            return []  # only thoughts
        return [Message(role="assistant", content=tuple(content), tool_calls=tuple(tool_calls))]
    if content:
        answers.append(Message(role="user", content=tuple(content)))
    return answers


def _system(raw: Any) -> Message:
    param = "systemInstruction"
    instruction = _fields(raw, frozenset({"role", "parts"}), param, "'systemInstruction'")
    if not isinstance(instruction.get("role", ""), str):
        raise _fail("'role' must be a string", _join(param, "role"))
    parts = instruction.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _fail("'parts' must be a non-empty array", _join(param, "parts"))
    calls = _Calls()
    content = [_part(p, f"{param}.parts.{i}", "system", calls) for i, p in enumerate(parts)]
    return Message(role="system", content=tuple(p for p in content if isinstance(p, TextPart)))


def _number(config: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _fail(f"'{key}' must be a number between {low:g} and {high:g}",
                    f"generationConfig.{key}")
    return float(value)


def _schema_type(value: Any, param: str) -> Any:
    if _is_int(value) and value in SCHEMA_TYPES:
        return SCHEMA_TYPES[value]
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.lower() for v in value]
    raise _fail("a schema 'type' must be a type name", param)


def _json_schema(raw: Any, param: str, depth: int = 0) -> dict[str, Any]:
    """A Gemini ``Schema`` (OpenAPI subset, upper-case types) as the JSON Schema that the
    canonical ``Tool.parameters`` holds and every upstream reads."""
    if depth > MAX_SCHEMA_DEPTH:
        raise _fail("schema nested too deeply", param)
    if not isinstance(raw, dict):
        raise _fail("a schema must be an object", param)
    out: dict[str, Any] = {}
    nullable = False
    for key, value in raw.items():
        name = {"ref": "$ref", "defs": "$defs"}.get(key) or _camel(key)
        if name == "type":
            if value != "TYPE_UNSPECIFIED" and not (_is_int(value) and value == 0):
                out["type"] = _schema_type(value, param)
        elif name == "nullable":
            nullable = value is True
        elif name in ("properties", "$defs") and isinstance(value, dict):
            out[name] = {k: _json_schema(v, f"{param}.{name}.{k}", depth + 1)
                         for k, v in value.items()}
        elif name in ("items", "additionalProperties") and isinstance(value, dict):
            out[name] = _json_schema(value, f"{param}.{name}", depth + 1)
        elif name == "anyOf" and isinstance(value, list):
            out[name] = [_json_schema(v, f"{param}.anyOf.{i}", depth + 1)
                         for i, v in enumerate(value)]
        else:
            out[name] = value
    if nullable and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _declaration(raw: Any, param: str) -> Tool:
    fields = frozenset({"name", "description", "parameters", "parametersJsonSchema",
                        "response", "responseJsonSchema"})
    decl = _fields(raw, fields, param, "a function declaration")
    name = decl.get("name")
    if not isinstance(name, str) or not name:
        raise _fail("'name' must be a non-empty string", _join(param, "name"))
    description = decl.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail("'description' must be a string", _join(param, "description"))
    if "parameters" in decl and "parametersJsonSchema" in decl:
        raise _fail("'parameters' and 'parametersJsonSchema' are mutually exclusive", param)
    parameters = None
    if "parameters" in decl:
        parameters = _json_schema(decl["parameters"], _join(param, "parameters"))
    elif "parametersJsonSchema" in decl:
        parameters = decl["parametersJsonSchema"]
        if not isinstance(parameters, dict):
            raise _fail("'parametersJsonSchema' must be an object",
                        _join(param, "parametersJsonSchema"))
    # ``response``/``responseJsonSchema`` describe what the client's function returns; no
    # canonical field holds them and no upstream needs them to generate a call.
    return Tool(name, description, parameters)


def _tools(raw: Any) -> tuple[Tool, ...]:
    if not isinstance(raw, list):
        raise _fail("'tools' must be an array", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        param = f"tools.{i}"
        tool = _fields(item, frozenset({"functionDeclarations"}) | BUILTIN_TOOLS, param,
                       "a tool")
        builtin = sorted(BUILTIN_TOOLS & tool.keys())
        if builtin:
            raise _fail(f"the '{builtin[0]}' tool is not supported; only functionDeclarations "
                        "are", _join(param, builtin[0]))
        decls = tool.get("functionDeclarations", [])
        if not isinstance(decls, list):
            raise _fail("'functionDeclarations' must be an array",
                        _join(param, "functionDeclarations"))
        tools.extend(_declaration(d, f"{param}.functionDeclarations.{j}")
                     for j, d in enumerate(decls))
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[Any, tuple[Tool, ...]]:
    """``toolConfig`` as a canonical ``tool_choice``, and the tools the model may call."""
    param = "toolConfig.functionCallingConfig"
    config = _fields(raw, frozenset({"functionCallingConfig"}), "toolConfig", "'toolConfig'")
    calling = _fields(config.get("functionCallingConfig", {}),
                      frozenset({"mode", "allowedFunctionNames"}), param,
                      "'functionCallingConfig'")
    mode = calling.get("mode", "MODE_UNSPECIFIED")
    mode = MODES.get(mode) if _is_int(mode) else mode
    if mode not in MODES.values():
        raise _fail("'mode' must be AUTO, ANY, NONE or VALIDATED", f"{param}.mode")
    names = calling.get("allowedFunctionNames", [])
    where = f"{param}.allowedFunctionNames"
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail("'allowedFunctionNames' must be an array of strings", where)
    if names and mode not in ("ANY", "VALIDATED"):
        raise _fail("'allowedFunctionNames' may be set only when mode is ANY or VALIDATED",
                    where)
    declared = {t.name for t in tools}
    for name in names:
        if name not in declared:
            raise _fail(f"'allowedFunctionNames' names an undeclared function {name!r}", where)
    if mode == "ANY" and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}, tools
    if names:
        # Several allowed names: the model may call only those, which is exactly what the
        # canonical tool list says when it holds only those.
        tools = tuple(t for t in tools if t.name in names)
    choice = {"MODE_UNSPECIFIED": None, "AUTO": "auto", "VALIDATED": "auto", "NONE": "none",
              "ANY": "required"}[str(mode)]
    return choice, tools


def _thinking(raw: Any) -> dict[str, Any]:
    param = "generationConfig.thinkingConfig"
    fields = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})
    config = _fields(raw, fields, param, "'thinkingConfig'")
    if not isinstance(config.get("includeThoughts", False), bool):
        raise _fail("'includeThoughts' must be a boolean", f"{param}.includeThoughts")
    if not _is_int(config.get("thinkingBudget", 0)):
        raise _fail("'thinkingBudget' must be an integer", f"{param}.thinkingBudget")
    if not isinstance(config.get("thinkingLevel", ""), str):
        raise _fail("'thinkingLevel' must be a string", f"{param}.thinkingLevel")
    return config


def _text_only(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and v.upper() == "TEXT" for v in value
    )


GENERATION_CHECKS: dict[str, Callable[[Any], bool]] = {
    "topK": lambda v: _is_number(v) and v >= 1,
    "presencePenalty": lambda v: _is_number(v) and -2 <= v <= 2,
    "frequencyPenalty": lambda v: _is_number(v) and -2 <= v <= 2,
    "responseMimeType": lambda v: isinstance(v, str),
    "responseSchema": lambda v: isinstance(v, dict),
    "responseJsonSchema": lambda v: isinstance(v, dict | bool),
    "responseModalities": _text_only,
    "responseLogprobs": lambda v: isinstance(v, bool),
    "logprobs": lambda v: _is_int(v) and 0 <= v <= 20,
    "mediaResolution": lambda v: isinstance(v, str),
}
GENERATION_FIELDS = frozenset(GENERATION_EXTRA) | {
    "maxOutputTokens", "temperature", "topP", "stopSequences", "candidateCount", "seed",
}


@attrs.frozen
class _Generation:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


def _generation(raw: Any) -> _Generation:
    param = "generationConfig"
    config = _fields(raw, GENERATION_FIELDS, param, "'generationConfig'")
    count = config.get("candidateCount", 1)
    if not (_is_int(count) and count == 1):
        raise _fail("only candidateCount=1 is supported", f"{param}.candidateCount")
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and not (_is_int(max_tokens)
                                       and 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise _fail(f"'maxOutputTokens' must be an integer between 1 and {MAX_TOKENS_LIMIT}",
                    f"{param}.maxOutputTokens")
    stop = config.get("stopSequences", [])
    if not (isinstance(stop, list) and len(stop) <= MAX_STOP_SEQUENCES
            and all(isinstance(s, str) for s in stop)):
        raise _fail(f"'stopSequences' must be an array of at most {MAX_STOP_SEQUENCES} strings",
                    f"{param}.stopSequences")
    seed = config.get("seed")
    if seed is not None and not _is_int(seed):
        raise _fail("'seed' must be an integer", f"{param}.seed")
    extra: dict[str, Any] = {}
    for key, check in GENERATION_CHECKS.items():
        if key in config:
            if not check(config[key]):
                raise _fail(f"invalid value for '{key}'", f"{param}.{key}")
            extra[key] = config[key]
    if "thinkingConfig" in config:
        extra["thinkingConfig"] = _thinking(config["thinkingConfig"])
    return _Generation(
        max_tokens=max_tokens,
        temperature=_number(config, "temperature", 0, 2),
        top_p=_number(config, "topP", 0, 1),
        stop=tuple(stop),
        seed=seed,
        extra=extra,
    )


def _safety(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _fail("'safetySettings' must be an array", "safetySettings")
    settings = []
    for i, item in enumerate(raw):
        param = f"safetySettings.{i}"
        setting = _fields(item, frozenset({"category", "threshold", "method"}), param,
                          "a safety setting")
        for key in ("category", "threshold"):
            if not isinstance(setting.get(key), str | int) or isinstance(setting[key], bool):
                raise _fail(f"'{key}' must be an enum name", _join(param, key))
        settings.append(setting)
    return settings


TOP_FIELDS = frozenset({
    "contents", "systemInstruction", "generationConfig", "tools", "toolConfig",
    "safetySettings", "cachedContent", "model",
})


def parse_request(body: Any, model: str, *, stream: bool) -> ChatRequest:
    """Validate a client's ``GenerateContentRequest`` (already strict-JSON-parsed); ``model``
    is the one the URL path names."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    request = _fields(body, TOP_FIELDS, "", "the request body")
    if not isinstance(model, str) or not model:
        raise _fail("the URL must name a model", "model")
    if not isinstance(request.get("model", ""), str):
        raise _fail("'model' must be a string", "model")  # the URL path's model wins
    if "cachedContent" in request:
        raise _fail("cached content is not supported", "cachedContent")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _fail("'contents' must be a non-empty array", "contents")
    messages: list[Message] = []
    if "systemInstruction" in request:
        messages.append(_system(request["systemInstruction"]))
    calls = _Calls()
    for i, turn in enumerate(contents):
        messages.extend(_content(turn, i, calls))
    if not any(m.role != "system" for m in messages):
        raise _fail("'contents' holds nothing but thoughts", "contents")
    tools = _tools(request["tools"]) if "tools" in request else ()
    tool_choice = None
    if "toolConfig" in request:
        tool_choice, tools = _tool_choice(request["toolConfig"], tools)
    generation = _generation(request.get("generationConfig", {}))
    extra = dict(generation.extra)
    if "safetySettings" in request:
        extra["safetySettings"] = _safety(request["safetySettings"])
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=stream,
        max_tokens=generation.max_tokens,
        temperature=generation.temperature,
        top_p=generation.top_p,
        stop=generation.stop,
        tools=tools,
        tool_choice=tool_choice,
        seed=generation.seed,
        dialect="gemini",
        extra=extra,
    )


def wants_thoughts(request: ChatRequest) -> bool:
    """Whether a Gemini client asked to see thoughts (``thinkingConfig.includeThoughts``);
    Gemini sends thought parts only then (the ``thoughts`` flag of ``StreamEncoder``)."""
    thinking = request.extra.get("thinkingConfig") if request.dialect == "gemini" else None
    return isinstance(thinking, Mapping) and thinking.get("includeThoughts") is True


# ---------------------------------------------------------------------------------------
# Upstream requests


def _render_image(part: ImagePart) -> dict[str, Any]:
    if part.url.startswith("data:"):
        header, _, payload = part.url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if encoding != "base64":
            payload = base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime or "application/octet-stream",
                               "data": payload}}
    path = urllib.parse.urlsplit(part.url).path.lower()
    guessed = [m for ext, m in IMAGE_TYPES.items() if path.endswith(ext)]
    return {"fileData": {"mimeType": guessed[0], "fileUri": part.url} if guessed
            else {"fileUri": part.url}}


def _render_parts(content: tuple[Part, ...]) -> list[dict[str, Any]]:
    # Empty text parts are dropped: Gemini refuses them in a request.
    return [
        {"text": p.text} if isinstance(p, TextPart) else _render_image(p)
        for p in content
        if not (isinstance(p, TextPart) and not p.text)
    ]


def _tool_result(text: str) -> dict[str, Any]:
    """A tool message as a ``functionResponse.response`` object (Gemini takes only objects;
    other results go under ``output``, the key its docs recommend)."""
    value = _loads_object(text)
    return value if value is not None else {"output": text}


def _contents(messages: tuple[Message, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    contents: list[dict[str, Any]] = []
    system: list[str] = []
    names: dict[str, str] = {}
    answers: list[dict[str, Any]] | None = None  # the parts of the open function-response turn
    for message in messages:
        if message.role == "system":
            system.extend(p.text for p in message.content if isinstance(p, TextPart))
            continue
        if message.role == "tool":
            call_id = message.tool_call_id or ""
            part = {"functionResponse": {"name": names.get(call_id) or message.name or call_id,
                                         "response": _tool_result(message.text)}}
            if answers is None:
                answers = [part]
                contents.append({"role": "user", "parts": answers})
            else:
                answers.append(part)
            continue
        parts = _render_parts(message.content)
        if message.role == "user":
            if answers is not None:
                answers.extend(parts)  # one user turn: the responses, then the rest
            elif parts:
                contents.append({"role": "user", "parts": parts})
            answers = None
            continue
        answers = None
        for call in message.tool_calls:
            names[call.id] = call.name
            parts.append({"functionCall": {"name": call.name,
                                           "args": _loads_object(call.arguments) or {}}})
        if parts:
            contents.append({"role": "model", "parts": parts})
    return contents, system


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice in ("auto", "none", "required"):
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]
        return {"functionCallingConfig": {"mode": mode}}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}}
    return None


def upstream_body(request: ChatRequest) -> dict[str, Any]:
    """The ``GenerateContentRequest`` for a Gemini upstream (the model goes in the URL)."""
    contents, system = _contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.seed is not None:
        config["seed"] = request.seed
    gemini = request.dialect == "gemini"
    if gemini:
        config.update((k, request.extra[k]) for k in GENERATION_EXTRA if k in request.extra)
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [{"functionDeclarations": [
            {
                k: v
                for k, v in (
                    ("name", t.name),
                    ("description", t.description),
                    ("parametersJsonSchema", t.parameters),
                )
                if v is not None
            }
            for t in request.tools
        ]}]
    tool_config = _tool_config(request.tool_choice)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    if gemini and "safetySettings" in request.extra:
        body["safetySettings"] = request.extra["safetySettings"]
    return body


# ---------------------------------------------------------------------------------------
# Upstream answers


def upstream_error(raw: Any) -> UpstreamError:
    """An error object a Gemini upstream sent, provider text removed.

    Only the status name survives, if it is one of google.rpc's; an HTTP-like ``code`` makes
    it an ``UpstreamStatusError`` so that overload reads as overload.
    """
    status = raw.get("status") if isinstance(raw, dict) else None
    label = status if isinstance(status, str) and status in UPSTREAM_STATUSES else "error"
    message = f"upstream reported an error ({label})"
    code = raw.get("code") if isinstance(raw, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return UpstreamStatusError(message, upstream_status=code)
    return UpstreamError(message)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream usageMetadata is not an object")

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    thoughts = count("thoughtsTokenCount")
    return Usage(
        prompt_tokens=count("promptTokenCount"),
        completion_tokens=count("candidatesTokenCount") + thoughts,
        cached_tokens=count("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def _load(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise UpstreamProtocolError(f"upstream sent {what} that is not JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"upstream sent {what} that is not a JSON object")
    return value


class StreamParser:
    """Turns the chunks of one upstream ``streamGenerateContent`` answer into events.

    Function calls are numbered across the whole answer. Their ids are the upstream's own
    when it sends them, else built from the answer's ``responseId`` and the call's number,
    so calls of different turns never share an id. Usage is reported once the answer has
    finished (Gemini repeats growing counts in every chunk; the last one wins).
    """

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self._calls = 0
        self._response_id = ""

    def feed(self, data: str) -> list[StreamEvent]:
        """Events in one upstream chunk (an SSE ``data`` payload)."""
        return self._chunk(_load(data, "an event"))

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error") is not None:
            raise upstream_error(chunk["error"])
        out: list[StreamEvent] = []
        was_done = self.done
        response_id = chunk.get("responseId")
        if isinstance(response_id, str) and response_id.isascii() and response_id.isprintable():
            self._response_id = response_id[:64]
        if chunk.get("usageMetadata") is not None:
            self.usage = _usage(chunk["usageMetadata"])
        candidates = chunk.get("candidates")
        if candidates is None:
            candidates = []
        if not isinstance(candidates, list):
            raise UpstreamProtocolError("upstream 'candidates' is not an array")
        reason: FinishReason | None = None
        for candidate in candidates:
            if not isinstance(candidate, dict) or not _is_int(candidate.get("index", 0)):
                raise UpstreamProtocolError("upstream candidate is malformed")
            if candidate.get("index", 0) == 0:
                reason = self._candidate(candidate, out) or reason
        feedback = chunk.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason") not in (
            None, "BLOCK_REASON_UNSPECIFIED"
        ):
            reason = "content_filter"
        if reason is not None and not self.done:
            self.done = True
            out.append(Finish(reason))
        if self.done and self.usage is not None and (
            not was_done or chunk.get("usageMetadata") is not None
        ):
            out.append(UsageReport(self.usage))
        return out

    def _candidate(self, candidate: dict[str, Any], out: list[StreamEvent]) -> FinishReason | None:
        content = candidate.get("content") or {}
        parts = (content.get("parts") or []) if isinstance(content, dict) else None
        if not isinstance(parts, list):
            raise UpstreamProtocolError("upstream content has no parts array")
        for part in parts:
            self._part(part, out)
        reason = candidate.get("finishReason")
        if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
            return None
        if not isinstance(reason, str):
            raise UpstreamProtocolError("upstream finishReason is not a string")
        mapped = FINISH_FROM_GEMINI.get(reason, "stop")
        return "tool_calls" if mapped == "stop" and self._calls else mapped

    def _part(self, part: Any, out: list[StreamEvent]) -> None:
        if not isinstance(part, dict):
            raise UpstreamProtocolError("upstream part is not an object")
        if "text" in part:
            text = part["text"]
            if not isinstance(text, str):
                raise UpstreamProtocolError("upstream text part is not a string")
            if text:
                text = without_surrogates(text)
                out.append(ReasoningDelta(text) if part.get("thought") is True
                           else TextDelta(text))
        call = part.get("functionCall")
        if call is not None:
            args = (call.get("args") or {}) if isinstance(call, dict) else None
            if not isinstance(args, dict) or not isinstance(call.get("name"), str):
                raise UpstreamProtocolError("upstream functionCall is malformed")
            try:
                arguments = without_surrogates(_dumps(args))
            except (ValueError, RecursionError):
                raise UpstreamProtocolError("upstream functionCall args are too deep") from None
            index = self._calls
            self._calls += 1
            given = call.get("id")
            if isinstance(given, str) and given.isascii() and given.isprintable() and given:
                call_id = given[:64]
            else:
                call_id = f"call_{self._response_id}_{index}" if self._response_id else (
                    f"call_{index}"
                )
            out.append(ToolCallDelta(index=index, id=call_id,
                                     name=without_surrogates(call["name"]),
                                     arguments=arguments))


def parse_response(body: bytes) -> list[StreamEvent]:
    """Events equivalent to one non-streaming upstream ``GenerateContentResponse``."""
    answer = _load(body, "an answer")
    if answer.get("error") is None and not answer.get("candidates") and not isinstance(
        answer.get("promptFeedback"), dict
    ):
        raise UpstreamProtocolError("upstream answer has no candidates")
    return StreamParser()._chunk(answer)


# ---------------------------------------------------------------------------------------
# Client answers


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
    return _dumps(_error_json(error, request_id)).encode()


def _call_part(name: str, arguments: str) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": _loads_object(arguments) or {}}}


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
    """

    splices: str | None = None

    def __init__(self, generation_id: str, model: str, *, sse: bool,
                 thoughts: bool = True) -> None:
        self._sse = sse
        self._thoughts = thoughts
        self._first = True
        self._calls: dict[int, _PendingCall] = {}
        self._open = '{"candidates":[{"content":{"role":"model","parts":['
        self._meta = f'"modelVersion":{_dumps(model)},"responseId":{_dumps(generation_id)}}}'
        self._close = ']},"index":0}],' + self._meta
        empty = self._open + '{"text":""}' + self._close
        self.keepalive: bytes = f"data: {_safe_for_js(empty)}\n\n".encode() if sse else b"\n"

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

    def _flush(self) -> bytes:
        if not self._calls:
            return b""
        parts = ",".join(
            _dumps(_call_part(c.name, "".join(c.arguments)))
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
        if isinstance(event, TextDelta) and event.text:
            return flushed + self._parts(f'{{"text":{_dumps(event.text)}}}')
        if isinstance(event, ReasoningDelta) and event.text and self._thoughts:
            return flushed + self._parts(f'{{"text":{_dumps(event.text)},"thought":true}}')
        return flushed  # a Finish (its reason goes out with ``tail``), or nothing to say

    def splice(self, data: str, at: int) -> bytes:
        raise NotImplementedError("the Gemini dialect relays nothing unparsed")

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """Any held function calls, then the closing chunk: finish reason and usage."""
        reason = FINISH_TO_GEMINI[finish or "stop"]
        last = (
            f'{self._open}{{"text":""}}]}},"finishReason":"{reason}","index":0}}],'
            f'"usageMetadata":{_dumps(usage_json(usage))},{self._meta}'
        )
        return self._flush() + self._frame(last) + (b"" if self._sse else b"]")

    def error(self, error: GatewayError, usage: Usage | None) -> bytes:
        """The terminal error, in the shape of Google's error body. Function calls still
        held are dropped: their arguments may be cut short."""
        self._calls.clear()
        return self._frame(_dumps(_error_json(error))) + (b"" if self._sse else b"]")


def render_response(
    generation_id: str,
    model: str,
    *,
    text: str,
    reasoning: str,
    tool_calls: list[ToolCall],
    finish: FinishReason,
    usage: Usage,
) -> bytes:
    """A non-streaming ``GenerateContentResponse`` (pass ``reasoning=""`` to leave thoughts
    out, see ``wants_thoughts``)."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"text": reasoning, "thought": True})
    if text or not tool_calls:
        parts.append({"text": text})
    parts.extend(_call_part(c.name, c.arguments) for c in tool_calls)
    return _safe_for_js(_dumps({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": FINISH_TO_GEMINI[finish],
            "index": 0,
        }],
        "usageMetadata": usage_json(usage),
        "modelVersion": model,
        "responseId": generation_id,
    })).encode()
