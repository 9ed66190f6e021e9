"""Anthropic Messages, client requests: an untrusted body into a ``ChatRequest``.

``parse_request`` validates a ``POST /v1/messages`` body (already strict-JSON-parsed) and
returns the canonical request.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- The fields the gateway interprets (model, max_tokens, messages, system, stream, tools,
  and every field with a canonical meaning) are validated here. Anything else, at the top
  level or in a block (``cache_control``, ``citations``, thinking blocks and their
  signatures, documents, server tools, ...), goes to an Anthropic upstream as sent and is
  the feature ``anthropic:<name>``, which no other dialect honours: refused by name there,
  or dropped where allowed (``routing/fidelity.py``).
- Endpoint fields are a 400 (FAULTS.md S6). Anthropic's error body has no ``param``, so
  each message starts with the field's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
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
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from gateway.errors import RequestError
from gateway.wire.features import PAID_SERVER_TOOLS, note_media, note_tools
from gateway.wire.features import Features as BaseFeatures
from gateway.wire.jsonbody import compact, is_int
from gateway.wire.signatures import from_client

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _fail(message: str, param: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _block(raw: Any, param: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise _fail("a content block must be an object with a string 'type'", param)
    return raw["type"], raw


# What the canonical model carries of each block type; any other key is the client's
# business with an Anthropic upstream (``Features.extras``).
BLOCK_KEYS = {
    "text": {"type", "text"},
    "image": {"type", "source"},
    "tool_use": {"type", "id", "name", "input"},
    "tool_result": {"type", "tool_use_id", "content", "is_error"},
    "thinking": {"type", "thinking", "signature"},
    "redacted_thinking": {"type", "data"},
    "document": {"type", "source", "title"},
}


# Block types a place cannot hold, and OpenAI's part types sent here by mistake: a 400 now
# rather than an upstream's refusal later (or a refusal by name on another dialect).
MISPLACED = {
    "user": {"tool_use", "thinking", "redacted_thinking"},
    "assistant": {"tool_result", "image"},
    "tool_result": {"tool_result", "tool_use", "thinking", "redacted_thinking"},
}
OPENAI_PARTS = {"image_url", "input_audio", "file", "function"}


def _check_role(kind: str, place: str, at: str) -> None:
    if kind in OPENAI_PARTS:
        raise _fail(f"unsupported block type {kind!r} (an OpenAI Chat Completions shape; "
                    "this is the Anthropic Messages API)", at)
    if kind in MISPLACED[place]:
        where = "a tool result" if place == "tool_result" else f"an {place} message" \
            if place == "assistant" else f"a {place} message"
        raise _fail(f"unsupported block type {kind!r} in {where}", at)


class Features(BaseFeatures):
    def __init__(self) -> None:
        super().__init__("anthropic")

    def extras(self, block: Mapping[str, Any], kind: str, where: str) -> None:
        """A block's keys beyond what the canonical model carries of its type, or the block
        itself when the canonical model has no such type."""
        known = BLOCK_KEYS.get(kind)
        if known is None:
            self.own(kind, f"{where} ({kind} block)")
            return
        for key in sorted(block.keys() - known):
            self.own(key, f"{where}.{key}")


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


def _document(block: Mapping[str, Any]) -> FilePart | None:
    """A base64 PDF ``document`` block, which every dialect reads; None for another kind."""
    source, title = block.get("source"), block.get("title")
    if (isinstance(source, dict) and source.get("type") == "base64"
            and source.get("media_type") in DOCUMENT_TYPES
            and isinstance(source.get("data"), str) and isinstance(title, str | None)):
        return FilePart(source["media_type"], source["data"], title)
    return None


def _tool_result(block: Mapping[str, Any], param: str, features: Features) -> Message:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _fail("a tool_result block needs a string 'tool_use_id'", param)
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise _fail("'is_error' must be true or false", param)
    if is_error:
        features.note("tool_errors", f"{param}.is_error")
    raw = block.get("content")
    parts: list[Part] = []
    if isinstance(raw, str):
        parts.append(TextPart(raw))
    elif isinstance(raw, list):
        for k, item in enumerate(raw):
            at = f"{param}.content.{k}"
            kind, inner = _block(item, at)
            _check_role(kind, "tool_result", at)
            document = _document(inner) if kind == "document" else None
            if kind != "document" or document is not None:
                features.extras(inner, kind, at)
            else:
                features.own("document", f"{at} (document block)")
            if kind == "text":
                parts.append(_text(inner, at))
            elif kind == "image":
                parts.append(_image(inner, at))
            elif document is not None:
                parts.append(document)
            if kind in ("image", "document"):
                features.note("tool_result_media", f"{at} ({kind} block)")
    elif raw is not None:
        raise _fail("a tool result's 'content' must be a string or an array of blocks", param)
    return Message(role="tool", content=tuple(parts), tool_call_id=tool_use_id,
                   is_error=is_error)


def _user_messages(content: Any, param: str, features: Features) -> list[Message]:
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
        _check_role(kind, "user", at)
        _shared_source(block, at)
        document = _document(block) if kind == "document" else None
        if kind != "document" or document is not None:
            features.extras(block, kind, at)
        else:  # a text, URL or Files API document: Anthropic's own
            features.own("document", f"{at} (document block)")
        if kind == "text":
            parts.append(_text(block, at))
        elif kind == "image":
            parts.append(_image(block, at))
        elif document is not None:
            parts.append(document)
        elif kind == "tool_result":
            if parts:
                out.append(Message(role="user", content=tuple(parts)))
                parts = []
            out.append(_tool_result(block, at, features))
        # Any other block (a document, a search result, ...) is an Anthropic upstream's to
        # read: ``extras`` noted it.
    if parts:
        out.append(Message(role="user", content=tuple(parts)))
    return out


def _assistant_message(content: Any, param: str, features: Features) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=(TextPart(content),))
    if not isinstance(content, list):
        raise _fail("must be a string or an array of content blocks", f"{param}.content")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    thoughts: list[str] = []
    signature, by = "", ""
    redacted: list[str] = []
    for j, raw in enumerate(content):
        at = f"{param}.content.{j}"
        kind, block = _block(raw, at)
        _check_role(kind, "assistant", at)
        features.extras(block, kind, at)
        if kind == "text":
            parts.append(_text(block, at))
        elif kind == "tool_use":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input")
            if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name
                    and isinstance(args, dict)):
                raise _fail("a tool_use block needs string 'id' and 'name' and an object "
                            "'input'", at)
            calls.append(ToolCall(call_id, name, compact(args)))
        elif kind in ("thinking", "redacted_thinking"):
            # Anthropic wants them back, signed, for multi-turn tool use with thinking.
            value = block.get("thinking" if kind == "thinking" else "data")
            sign = block.get("signature", "")
            if not isinstance(value, str) or not isinstance(sign, str):
                raise _fail(f"a {kind} block needs string fields", at)
            if kind == "thinking":
                thoughts.append(value)
                if sign:
                    signature, by = from_client(sign, "anthropic")
            else:
                redacted.append(value)
                by = by or "anthropic"
        # Server tool blocks and anything else: ``extras`` noted them.
    return Message(role="assistant", content=tuple(parts), tool_calls=tuple(calls),
                   reasoning="".join(thoughts), signature=signature, signed_by=by,
                   redacted=tuple(redacted))


def _messages(raw: Any, features: Features) -> list[Message]:
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
        for key in sorted(item.keys() - {"role", "content"}):
            features.own(f"messages.{key}", f"{param}.{key}")
        if role == "user":
            out.extend(_user_messages(item["content"], param, features))
        elif role == "assistant":
            out.append(_assistant_message(item["content"], param, features))
        elif role in ("system", "developer"):
            raise _fail(
                f"role {role!r} is not allowed in the Anthropic Messages API; put system "
                "text in the top-level 'system' field", f"{param}.role"
            )
        else:
            raise _fail("'role' must be 'user' or 'assistant'", f"{param}.role")
    return out


def _system(raw: Any, features: Features) -> Message | None:
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
            features.extras(block, kind, f"system.{j}")
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


def _tools(raw: Any, features: Features) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("must be an array of tools", "tools")
    tools = []
    for i, item in enumerate(raw):
        param = f"tools.{i}"
        if not isinstance(item, dict):
            raise _fail("a tool must be an object", param)
        kind = item.get("type", "custom")
        if kind == "function":
            raise _fail("an OpenAI-shaped tool; Anthropic tools are {name, description, "
                        "input_schema}", param)
        if kind not in ("custom", None):
            # A server tool (web search, code execution, ...): an Anthropic upstream runs it.
            features.own(str(kind), param)
            if str(kind).startswith(PAID_SERVER_TOOLS):
                features.paid("server_tools", param)
            continue
        for key in item.keys() - {"type", "name", "description", "input_schema", "strict"}:
            features.own(key, f"{param}.{key}")
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


def _tool_choice(raw: Any) -> tuple[ToolChoice | None, bool | None]:
    """``{type: auto|any|none}`` or ``{type: tool, name}``, each with an optional
    ``disable_parallel_tool_use`` (returned apart, negated: whether calls may be parallel)."""
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    disable = raw.get("disable_parallel_tool_use") if isinstance(raw, dict) else None
    if disable is not None and not isinstance(disable, bool):
        raise _fail("'disable_parallel_tool_use' must be true or false", "tool_choice")
    parallel = None if disable is None else not disable
    if isinstance(kind, str) and kind in MODES:
        return ToolChoice(MODES[kind]), parallel
    if kind == "tool":
        assert isinstance(raw, dict)
        name = raw.get("name")
        if isinstance(name, str) and name:
            return ToolChoice("tool", name), parallel
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


def _reasoning(thinking: Any, config: Any) -> Reasoning | None:
    """``thinking`` ({type: enabled, budget_tokens} | disabled | adaptive | between_tools,
    with an optional ``display``) and ``output_config.effort``."""
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None and effort not in EFFORTS:
        raise _fail(f"must be one of {', '.join(EFFORTS)}", "output_config.effort")
    if thinking is None:
        return None if effort is None else Reasoning(effort=effort)
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    display = thinking.get("display") if isinstance(thinking, dict) else None
    if display not in (None, "summarized", "omitted"):
        raise _fail("must be 'summarized' or 'omitted'", "thinking.display")
    include = None if display is None else display == "summarized"
    if kind == "enabled":
        assert isinstance(thinking, dict)
        budget = thinking.get("budget_tokens")
        if not (is_int(budget) and 1 <= budget <= MAX_TOKENS_LIMIT):
            raise _fail(f"must be an integer between 1 and {MAX_TOKENS_LIMIT}",
                        "thinking.budget_tokens")
        return Reasoning(effort=effort, budget=budget, include=include)
    if kind == "disabled":
        return Reasoning(enabled=False)
    if kind in ("adaptive", "between_tools"):
        return Reasoning(effort=effort, include=include)
    raise _fail("must be {type: enabled, budget_tokens} or {type: disabled|adaptive}",
                "thinking")


def _output_format(config: Any) -> ResponseFormat | None:
    """``output_config.format``: ``{type: json_schema, schema}``."""
    if config is None:
        return None
    if not isinstance(config, dict) or set(config) - {"effort", "format"}:
        raise _fail("must be an object with 'effort' and 'format'", "output_config")
    fmt = config.get("format")
    if fmt is None:
        return None
    if (not isinstance(fmt, dict) or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), dict)):
        raise _fail("must be {type: json_schema, schema}", "output_config.format")
    return ResponseFormat("json_schema", fmt["schema"], strict=True)


# Never honoured from a body: where a request goes is the gateway's configuration.
ENDPOINT_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "extra_headers", "extra_query",
    "custom_llm_provider", "organization", "deployment_id",
})
# The keys of the objects the canonical model reads, beyond which an Anthropic upstream's.
KNOWN_KEYS = {"tool_choice": {"type", "name", "disable_parallel_tool_use"},
              "thinking": {"type", "budget_tokens", "display"}}
HANDLED = {
    "model", "max_tokens", "messages", "system", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "metadata", "thinking", "output_config",
}
CANONICAL = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
             "stop_sequences": "stop", "metadata": "user"}
# OpenAI Chat Completions fields a client may send here by mistake, and what to use instead.
OPENAI_NAMES = {"stop": "stop_sequences", "user": "metadata.user_id",
                "max_completion_tokens": "max_tokens"}
OPENAI_ONLY = frozenset({"n", "seed", "stream_options", "response_format", "logit_bias",
                         "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty",
                         "parallel_tool_calls", "functions", "function_call"})


SHARED = ("names a resource of the gateway's own upstream account, which every client of "
          "this gateway shares: not honoured (send the content itself)")
# Fields that name resources of the operator's Anthropic account (a code-execution
# container, Files API uploads): one tenant could reach another's.
ACCOUNT_FIELDS = frozenset({"container"})


def _shared_source(block: Any, at: str, depth: int = 0) -> None:
    """No Files API reference anywhere in a block: a ``file`` source, a ``file_id``
    (``container_upload``, ...), in tool results and nested sources too."""
    if depth > 32:
        raise _fail("content nested too deeply", at)
    if isinstance(block, dict):
        if block.get("type") == "file" or "file_id" in block:
            raise _fail("a Files API reference " + SHARED, at)
        for key in ("source", "content"):  # never a tool's own input
            if key in block:
                _shared_source(block[key], f"{at}.{key}", depth + 1)
    elif isinstance(block, list):
        for i, value in enumerate(block):
            _shared_source(value, f"{at}.{i}", depth + 1)


def _mistaken(key: str) -> RequestError | None:
    """An OpenAI field sent here: Anthropic would refuse it, so the gateway says why."""
    message = "Extra inputs are not permitted"
    if key in OPENAI_NAMES:
        return _fail(f"{message} (this is the Anthropic Messages API: use "
                     f"'{OPENAI_NAMES[key]}')", key)
    if key in OPENAI_ONLY:
        return _fail(f"{message} (an OpenAI Chat Completions field; this is the Anthropic "
                     "Messages API)", key)
    if key in ENDPOINT_FIELDS:
        return _fail(f"{message} (where a request goes is the gateway's configuration)", key)
    if key in ACCOUNT_FIELDS:
        return _fail(f"'{key}' " + SHARED, key)
    return None


# Headers of the Messages API that an Anthropic upstream reads; the SDKs send some of their
# parameters this way. Another dialect's upstream cannot honour them.
API_HEADERS = ("anthropic-beta", "anthropic-user-profile-id")
# Never honoured from a client: the operator's key and configuration decide.
REFUSED_HEADERS = {"anthropic-workspace-id": "the operator's API key decides the workspace"}


def _api_headers(headers: Mapping[str, str], features: Features) -> dict[str, str]:
    for name, why in REFUSED_HEADERS.items():
        if name in headers:
            raise _fail(f"the {name} header is not honoured: {why}", name)
    kept = {name: headers[name] for name in API_HEADERS if name in headers}
    for name in kept:
        features.own(name, f"{name} header")
    if "context-1m" in kept.get("anthropic-beta", ""):
        features.paid("long_context", "anthropic-beta header")
    return kept


def parse_request(body: Any, headers: Mapping[str, str] | None = None) -> ChatRequest:
    """Validate a client's Messages body (already strict-JSON-parsed) and its API headers
    (names lower-case)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    features = Features()
    api_headers = _api_headers(headers or {}, features)
    for key, value in body.items():
        if key in HANDLED:
            continue
        mistake = _mistaken(key)
        if mistake is not None:
            raise mistake
        if value is not None:
            features.own(key, key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("must be a non-empty string", "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _fail("Field required (the Anthropic Messages API needs it; OpenAI-style "
                    "bodies belong on /v1/chat/completions)", "max_tokens")
    if not is_int(max_tokens) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise _fail(f"must be an integer between 1 and {MAX_TOKENS_LIMIT}", "max_tokens")
    messages = _messages(body.get("messages"), features)
    system = _system(body.get("system"), features)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _fail("must be true or false", "stream")
    tool_choice, parallel = _tool_choice(body.get("tool_choice"))
    for field, known in KNOWN_KEYS.items():  # what the canonical model does not carry
        value = body.get(field)
        for key in sorted(value.keys() - known) if isinstance(value, dict) else ():
            features.own(f"{field}.{key}", f"{field}.{key}")
    top_k = body.get("top_k")
    if top_k is not None and not (is_int(top_k) and top_k >= 0):
        raise _fail("must be a non-negative integer", "top_k")
    found = features.found
    for key, feature in CANONICAL.items():
        if body.get(key) is not None:
            found[feature] = key
    if parallel is not None:
        found["parallel_tool_calls"] = "tool_choice.disable_parallel_tool_use"
    response_format = _output_format(body.get("output_config"))
    if response_format is not None:
        found["response_format"] = "output_config.format"
    reasoning = _reasoning(body.get("thinking"), body.get("output_config"))
    if reasoning is not None:
        found["reasoning"] = "thinking" if "thinking" in body else "output_config.effort"
    parsed = (system, *messages) if system is not None else tuple(messages)
    note_media(parsed, found, images="image", documents="document", audio="audio")
    tools = _tools(body.get("tools"), features)
    note_tools(tools, found)
    return ChatRequest(
        model=model,
        messages=parsed,
        stream=stream,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        top_k=top_k,
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        user=_user(body.get("metadata")),
        response_format=response_format,
        reasoning=reasoning,
        dialect="anthropic",
        raw=body,
        features=found,
        headers=api_headers,
    )
