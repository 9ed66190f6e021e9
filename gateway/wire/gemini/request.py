"""Gemini ``generateContent``, client requests: an untrusted body into a ``ChatRequest``.

``parse_request`` turns an untrusted ``GenerateContentRequest`` (the model comes from the URL
path, streaming from the method) into a ``ChatRequest``.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Keys are read in camelCase or snake_case, as the REST API reads them (the SDKs mix both,
  even within one object). Enum fields also take the integers that proto-JSON clients send.
- The fields the gateway interprets (contents, system instruction, function tools, token
  caps, and every field with a canonical meaning) are validated here. Anything else, at the
  top level, in ``generationConfig``, in a tool or in a part (``safetySettings``,
  ``cachedContent``, built-in tools, thought signatures, PDF and audio data, ...) goes to a
  Gemini upstream as sent and is the feature ``gemini:<name>``, which no other dialect
  honours: refused by name there, or dropped where allowed (``routing/fidelity.py``).
- Gemini function calls carry no ids. This module numbers them ``call_<n>`` in request
  order and pairs each ``functionResponse`` with the earliest unanswered call of its name.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from gateway.canonical import (
    AUDIO_TYPES,
    DOCUMENT_TYPES,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    Effort,
    FilePart,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from gateway.errors import RequestError
from gateway.wire.features import PAID_GEMINI_TOOLS, Features, note_media
from gateway.wire.jsonbody import compact, is_int
from gateway.wire.signatures import from_client

MAX_STOP_SEQUENCES = 5
MAX_SCHEMA_DEPTH = 64

MODES = {0: "MODE_UNSPECIFIED", 1: "AUTO", 2: "ANY", 3: "NONE", 4: "VALIDATED"}
CHOICE_MODES: dict[str, ToolChoiceMode | None] = {
    "MODE_UNSPECIFIED": None, "AUTO": "auto", "VALIDATED": "auto", "NONE": "none",
    "ANY": "required",
}
SCHEMA_TYPES = {1: "string", 2: "number", 3: "integer", 4: "boolean", 5: "array",
                6: "object", 7: "null"}


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _join(param: str, name: str | int) -> str:
    return f"{param}.{name}" if param else str(name)


_INDEX = re.compile(r"\.\d+")  # a feature is named without array indexes


def _fields(raw: Any, allowed: frozenset[str], param: str, what: str,
            own: Features | None = None) -> dict[str, Any]:
    """An object's fields under their camelCase names; null fields count as absent. An
    unknown field is a 400 naming it, or, given ``own``, a Gemini upstream's business."""
    if not isinstance(raw, dict):
        raise _fail(f"{what} must be an object", param or "body")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _camel(key)
        if name not in allowed and own is not None:
            own.own(_INDEX.sub("", _join(param, name)), _join(param, key))
            continue
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


def _media_type(raw: Any, param: str, *, required: bool) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or "/" not in raw:
        raise _fail("'mimeType' must be a media type", param)
    return raw


def _is_image(mime: str | None) -> bool:
    return mime is None or mime.lower().startswith("image/")


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def _inline_data(raw: Any, param: str, own: Features) -> ImagePart | FilePart | None:
    """An image, a PDF or a recording (every dialect's, where it takes them), or other
    media (video, ...) that only a Gemini upstream reads."""
    blob = _fields(raw, frozenset({"mimeType", "data", "displayName"}), param, "'inlineData'")
    mime = _media_type(blob.get("mimeType"), _join(param, "mimeType"), required=True)
    data = blob.get("data")
    if not isinstance(data, str) or not data or not _BASE64.fullmatch(data):
        raise _fail("'data' must be base64 text", _join(param, "data"))
    assert mime is not None
    if mime in DOCUMENT_TYPES or mime in AUDIO_TYPES.values():
        return FilePart(mime, data.replace("-", "+").replace("_", "/"))
    if not _is_image(mime):
        own.own("inlineData", f"{param} ({mime})")
        return None
    # The REST API also reads URL-safe base64; a data: URL holds the standard alphabet.
    data = data.replace("-", "+").replace("_", "/")
    return ImagePart(f"data:{mime};base64,{data}")


def _shared_uri(uri: str) -> bool:
    """A URI naming a resource of the operator's Google account or project: a Files API
    upload, any Google API host, a Cloud Storage object."""
    text = uri.strip().lower()
    if text.startswith(("files/", "gs://")):
        return True
    host = urllib.parse.urlsplit(text).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def _file_data(raw: Any, param: str, own: Features) -> ImagePart | None:
    ref = _fields(raw, frozenset({"mimeType", "fileUri", "displayName"}), param, "'fileData'")
    mime = _media_type(ref.get("mimeType"), _join(param, "mimeType"), required=False)
    uri = ref.get("fileUri")
    if not isinstance(uri, str) or not uri:
        raise _fail("'fileUri' must be a URI", _join(param, "fileUri"))
    if _shared_uri(uri):
        raise _fail("a Files API 'fileUri' names a resource of the gateway's own upstream "
                    "account, which every client of this gateway shares: not honoured "
                    "(send the content itself)", _join(param, "fileUri"))
    if not _is_image(mime) or not uri.lower().startswith(("https://", "http://")):
        own.own("fileData", f"{param} ({mime or uri})")  # a Files API upload, a video, ...
        return None
    return ImagePart(uri)


def _json_text(value: Any, param: str) -> str:
    try:
        return compact(value)
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
PART_FIELDS = frozenset(DATA_FIELDS) | {"thought", "thoughtSignature"}
ROLE_PARTS = {
    "user": {"text", "inlineData", "fileData", "functionResponse"},
    "model": {"text", "inlineData", "fileData", "functionCall"},
    "system": {"text"},
}


def _part(
    raw: Any, param: str, role: str, calls: _Calls, own: Features
) -> Part | ToolCall | _Response | None:
    """One part; None for what only a Gemini upstream reads (a model's earlier thought,
    code execution, PDF data, ...), which ``own`` notes."""
    before = len(own.found)
    part = _fields(raw, PART_FIELDS, param, "a part", own)
    kinds = [name for name in DATA_FIELDS if name in part]
    if not kinds and len(own.found) > before:
        return None  # executableCode, videoMetadata, ...: noted
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
        if thought:
            return None  # the turn's reasoning (``_reasoning_of``)
        return TextPart(value)
    if kind == "inlineData":
        return _inline_data(value, where, own)
    if kind == "fileData":
        return _file_data(value, where, own)
    if kind == "functionCall":
        return _function_call(value, where, calls)
    return _function_response(value, where)


ROLES = {"user": "user", "function": "user", "model": "model"}


def _reasoning_of(parts: list[Any]) -> tuple[str, str]:
    """A model turn's thought text and its (first) thought signature, which Gemini wants
    back on the part that carried it: the first function call of the turn, as a rule."""
    thoughts, signature = [], ""
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("thought") is True and isinstance(part.get("text"), str):
            thoughts.append(part["text"])
        given = part.get("thoughtSignature", part.get("thought_signature"))
        if isinstance(given, str) and given and not signature:
            signature = given
    return "".join(thoughts), signature


def _content(raw: Any, index: int, calls: _Calls, own: Features) -> list[Message]:
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
        part = _part(raw_part, where, role, calls, own)
        if isinstance(part, ToolCall):
            tool_calls.append(part)
        elif isinstance(part, _Response):
            call_id = calls.answer(part, where)
            answers.append(Message(role="tool", content=(TextPart(part.content),),
                                   tool_call_id=call_id))
        elif part is not None:
            content.append(part)
    if role == "model":
        reasoning, signature = _reasoning_of(parts)
        if not content and not tool_calls and not signature:
            return []  # only thoughts, which no provider reads back
        signature, by = from_client(signature, "gemini") if signature else ("", "")
        return [Message(role="assistant", content=tuple(content), tool_calls=tuple(tool_calls),
                        reasoning=reasoning, signature=signature, signed_by=by)]
    if content:
        answers.append(Message(role="user", content=tuple(content)))
    return answers


def _system(raw: Any, own: Features) -> Message:
    param = "systemInstruction"
    instruction = _fields(raw, frozenset({"role", "parts"}), param, "'systemInstruction'")
    if not isinstance(instruction.get("role", ""), str):
        raise _fail("'role' must be a string", _join(param, "role"))
    parts = instruction.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _fail("'parts' must be a non-empty array", _join(param, "parts"))
    calls = _Calls()
    content = [_part(p, f"{param}.parts.{i}", "system", calls, own)
               for i, p in enumerate(parts)]
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
    if is_int(value) and value in SCHEMA_TYPES:
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
            if value != "TYPE_UNSPECIFIED" and not (is_int(value) and value == 0):
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


def _tools(raw: Any, own: Features) -> tuple[Tool, ...]:
    """Function declarations; a built-in tool (``googleSearch``, ``codeExecution``, ...)
    runs at a Gemini upstream only, so ``own`` notes it."""
    if not isinstance(raw, list):
        raise _fail("'tools' must be an array", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(raw):
        param = f"tools.{i}"
        for key in item if isinstance(item, dict) else ():
            if _camel(key) in PAID_GEMINI_TOOLS:
                own.paid("grounding", _join(param, key))
            if _camel(key) in SHARED_TOOLS:
                raise _fail(f"the '{_camel(key)}' tool reads stores of the gateway's own "
                            "upstream account, which every client of this gateway shares: "
                            "not honoured", _join(param, key))
        tool = _fields(item, frozenset({"functionDeclarations"}), param, "a tool", own)
        decls = tool.get("functionDeclarations", [])
        if not isinstance(decls, list):
            raise _fail("'functionDeclarations' must be an array",
                        _join(param, "functionDeclarations"))
        tools.extend(_declaration(d, f"{param}.functionDeclarations.{j}")
                     for j, d in enumerate(decls))
    return tuple(tools)


def _tool_choice(
    raw: Any, tools: tuple[Tool, ...]
) -> tuple[ToolChoice | None, tuple[Tool, ...]]:
    """``toolConfig`` as a canonical ``tool_choice``, and the tools the model may call.
    ``VALIDATED`` (calls checked against their schemas) reads as ``auto``: no other dialect
    can ask for it."""
    param = "toolConfig.functionCallingConfig"
    config = _fields(raw, frozenset({"functionCallingConfig"}), "toolConfig", "'toolConfig'")
    calling = _fields(config.get("functionCallingConfig", {}),
                      frozenset({"mode", "allowedFunctionNames"}), param,
                      "'functionCallingConfig'")
    mode = calling.get("mode", "MODE_UNSPECIFIED")
    mode = MODES.get(mode) if is_int(mode) else mode
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
        return ToolChoice("tool", names[0]), tools
    if names:
        # Several allowed names: the model may call only those, which is exactly what the
        # canonical tool list says when it holds only those.
        tools = tuple(t for t in tools if t.name in names)
    canonical = CHOICE_MODES[str(mode)]
    return (None if canonical is None else ToolChoice(canonical)), tools


def _reasoning(raw: Any) -> Reasoning:
    """``thinkingConfig``: a ``thinkingBudget`` (0: off, -1: the model decides) or a
    ``thinkingLevel``, and ``includeThoughts``."""
    param = "generationConfig.thinkingConfig"
    fields = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})
    config = _fields(raw, fields, param, "'thinkingConfig'")
    include = config.get("includeThoughts")
    if include is not None and not isinstance(include, bool):
        raise _fail("'includeThoughts' must be a boolean", f"{param}.includeThoughts")
    budget = config.get("thinkingBudget")
    if budget is not None and not (is_int(budget) and -1 <= budget <= MAX_TOKENS_LIMIT):
        raise _fail("'thinkingBudget' must be an integer, -1 or more", f"{param}.thinkingBudget")
    level = config.get("thinkingLevel")
    if level is not None and (not isinstance(level, str)
                              or level.lower() not in LEVELS):
        raise _fail(f"'thinkingLevel' must be one of {', '.join(LEVELS)}",
                    f"{param}.thinkingLevel")
    return Reasoning(enabled=budget != 0,
                     effort=None if level is None else LEVELS[level.lower()],
                     budget=budget if budget and budget > 0 else None, include=include)


# Gemini's thinking levels, as efforts ("thinking_level_unspecified" leaves it to the model).
LEVELS: dict[str, Effort | None] = {"thinking_level_unspecified": None, "minimal": "minimal",
                                    "low": "low", "medium": "medium", "high": "high"}


def _response_format(config: Mapping[str, Any]) -> ResponseFormat | None:
    """``responseMimeType: application/json`` with ``responseJsonSchema`` (JSON Schema) or
    ``responseSchema`` (Gemini's OpenAPI subset); any other type is Gemini's own."""
    param = "generationConfig"
    mime = config.get("responseMimeType")
    if mime is not None and not isinstance(mime, str):
        raise _fail("'responseMimeType' must be a string", f"{param}.responseMimeType")
    if "responseSchema" in config and "responseJsonSchema" in config:
        raise _fail("'responseSchema' and 'responseJsonSchema' are mutually exclusive", param)
    schema = None
    named = "responseSchema" if "responseSchema" in config else "responseJsonSchema"
    if "responseSchema" in config:
        schema = _json_schema(config["responseSchema"], f"{param}.responseSchema")
    elif "responseJsonSchema" in config:
        schema = config["responseJsonSchema"]
        if not isinstance(schema, dict):
            raise _fail("'responseJsonSchema' must be an object", f"{param}.responseJsonSchema")
    if mime != "application/json":
        if schema is not None and mime != "text/x.enum":
            raise _fail(f"'{named}' needs responseMimeType application/json",
                        f"{param}.{named}")
        return None
    if schema is None:
        return ResponseFormat("json_object")
    return ResponseFormat("json_schema", schema)


def _safety(raw: Any) -> None:
    if not isinstance(raw, list):
        raise _fail("'safetySettings' must be an array", "safetySettings")
    for i, item in enumerate(raw):
        param = f"safetySettings.{i}"
        setting = _fields(item, frozenset({"category", "threshold", "method"}), param,
                          "a safety setting")
        for key in ("category", "threshold"):
            if not isinstance(setting.get(key), str | int) or isinstance(setting[key], bool):
                raise _fail(f"'{key}' must be an enum name", _join(param, key))


def _text_only(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and v.upper() == "TEXT" for v in value
    )


# Gemini's own generationConfig fields, checked where the gateway knows their type (an
# unknown one goes to a Gemini upstream unchecked). Only text answers can be relayed.
GENERATION_CHECKS: dict[str, Callable[[Any], bool]] = {
    "responseModalities": _text_only,
    "responseLogprobs": lambda v: isinstance(v, bool),
    "logprobs": lambda v: is_int(v) and 0 <= v <= 20,
    "mediaResolution": lambda v: isinstance(v, str),
}
# generationConfig fields with a canonical meaning, under Gemini's names.
GENERATION_CANONICAL = {
    "maxOutputTokens": None, "temperature": "temperature", "topP": "top_p",
    "stopSequences": "stop", "seed": "seed", "topK": "top_k",
    "presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty",
    "responseMimeType": "response_format", "responseSchema": "response_format",
    "responseJsonSchema": "response_format", "thinkingConfig": "reasoning",
    "candidateCount": None,
}


@attrs.frozen
class _Generation:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    reasoning: Reasoning | None = None
    candidates: int = 1


def _generation(raw: Any, own: Features) -> _Generation:
    param = "generationConfig"
    config = _fields(raw, frozenset(GENERATION_CANONICAL) | frozenset(GENERATION_CHECKS),
                     param, "'generationConfig'", own)
    for key, check in GENERATION_CHECKS.items():
        if key in config:
            if not check(config[key]):
                raise _fail(f"invalid value for '{key}'", f"{param}.{key}")
            if key != "responseModalities":  # text only: what every answer is
                own.own(f"generationConfig.{key}", f"{param}.{key}")
    count = config.get("candidateCount", 1)
    if not (is_int(count) and 1 <= count <= MAX_CANDIDATES):
        raise _fail(f"'candidateCount' must be an integer between 1 and {MAX_CANDIDATES}",
                    f"{param}.candidateCount")
    if count > 1:  # several candidates: only a Gemini upstream's whole answer carries them
        own.own("generationConfig.candidateCount", f"{param}.candidateCount")
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and not (is_int(max_tokens)
                                       and 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise _fail(f"'maxOutputTokens' must be an integer between 1 and {MAX_TOKENS_LIMIT}",
                    f"{param}.maxOutputTokens")
    stop = config.get("stopSequences", [])
    if not (isinstance(stop, list) and len(stop) <= MAX_STOP_SEQUENCES
            and all(isinstance(s, str) for s in stop)):
        raise _fail(f"'stopSequences' must be an array of at most {MAX_STOP_SEQUENCES} strings",
                    f"{param}.stopSequences")
    seed = config.get("seed")
    if seed is not None and not is_int(seed):
        raise _fail("'seed' must be an integer", f"{param}.seed")
    top_k = config.get("topK")
    if top_k is not None and not (_is_number(top_k) and top_k >= 1):
        raise _fail("'topK' must be a positive number", f"{param}.topK")
    for key, feature in GENERATION_CANONICAL.items():
        if feature is not None and key in config:
            own.note(feature, f"{param}.{key}")
    response_format = _response_format(config)
    if response_format is None:
        own.found.pop("response_format", None)  # text/plain is no constraint
        if config.get("responseMimeType") not in (None, "text/plain"):
            own.own("generationConfig.responseMimeType", f"{param}.responseMimeType")
    return _Generation(
        max_tokens=max_tokens,
        temperature=_number(config, "temperature", 0, 2),
        top_p=_number(config, "topP", 0, 1),
        stop=tuple(stop),
        seed=seed,
        top_k=None if top_k is None else int(top_k),
        presence_penalty=_number(config, "presencePenalty", -2, 2),
        frequency_penalty=_number(config, "frequencyPenalty", -2, 2),
        response_format=response_format,
        reasoning=_reasoning(config["thinkingConfig"]) if "thinkingConfig" in config else None,
        candidates=count,
    )


# Built-in tools that read the operator's project's stores.
SHARED_TOOLS = frozenset({"fileSearch", "retrieval", "enterpriseWebSearch"})
# Never honoured from a body: where a request goes is the gateway's configuration.
ENDPOINT_FIELDS = frozenset({"apiBase", "baseUrl", "apiKey", "apiVersion", "extraHeaders",
                             "customLlmProvider", "httpOptions"})
MAX_CANDIDATES = 8  # Gemini's own bound on candidateCount
DEFAULT_TIERS = ("unspecified", "standard", "service_tier_unspecified", "service_tier_standard")
TOP_FIELDS = frozenset({
    "contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "model",
    "safetySettings",
})


def parse_request(body: Any, model: str, *, stream: bool) -> ChatRequest:
    """Validate a client's ``GenerateContentRequest`` (already strict-JSON-parsed); ``model``
    is the one the URL path names."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in body:
        if _camel(key) == "cachedContent":
            # Cached contents belong to the operator's project: one tenant could read
            # another's by name.
            raise _fail("'cachedContent' names a resource of the gateway's own upstream "
                        "account, which every client of this gateway shares: not honoured "
                        "(send the content itself)", "cachedContent")
        if _camel(key) in ENDPOINT_FIELDS:
            raise _fail(f'Invalid JSON payload received. Unknown name "{key}": Cannot find '
                        "field. (where a request goes is the gateway's configuration)", key)
    own = Features("gemini")
    for key, value in body.items():
        if _camel(key) == "serviceTier" and str(value).lower() not in DEFAULT_TIERS:
            own.paid("service_tier", key)  # flex or priority: priced apart
    request = _fields(body, TOP_FIELDS, "", "the request body", own)
    if not isinstance(model, str) or not model:
        raise _fail("the URL must name a model", "model")
    if not isinstance(request.get("model", ""), str):
        raise _fail("'model' must be a string", "model")  # the URL path's model wins
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _fail("'contents' must be a non-empty array", "contents")
    messages: list[Message] = []
    if "systemInstruction" in request:
        messages.append(_system(request["systemInstruction"], own))
    calls = _Calls()
    for i, turn in enumerate(contents):
        messages.extend(_content(turn, i, calls, own))
    if not any(m.role != "system" for m in messages) and not own.found:
        raise _fail("'contents' holds nothing but thoughts", "contents")
    tools = _tools(request["tools"], own) if "tools" in request else ()
    tool_choice = None
    if "toolConfig" in request:
        tool_choice, tools = _tool_choice(request["toolConfig"], tools)
    generation = _generation(request.get("generationConfig", {}), own)
    if generation.candidates > 1 and stream:
        raise _fail("candidateCount > 1 is answered whole only: a stream relays one "
                    "candidate (call generateContent for several)",
                    "generationConfig.candidateCount")
    if "safetySettings" in request:
        _safety(request["safetySettings"])  # a Gemini upstream's: checked, then noted
        own.own("safetySettings", "safetySettings")
    note_media(messages, own.found, images="inlineData", documents="inlineData",
               audio="inlineData")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=stream,
        max_tokens=generation.max_tokens,
        choices=generation.candidates,
        temperature=generation.temperature,
        top_p=generation.top_p,
        stop=generation.stop,
        tools=tools,
        tool_choice=tool_choice,
        seed=generation.seed,
        top_k=generation.top_k,
        presence_penalty=generation.presence_penalty,
        frequency_penalty=generation.frequency_penalty,
        response_format=generation.response_format,
        reasoning=generation.reasoning,
        dialect="gemini",
        raw=body,
        features=own.found,
    )
