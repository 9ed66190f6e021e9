"""OpenAI Responses API, client requests: an untrusted ``POST /v1/responses`` body into a
``ChatRequest``.

``parse_request`` validates the body (already strict-JSON-parsed) and returns the canonical
request; ``history`` is the conversation a ``previous_response_id`` names, as stored input
and output items (``http/responses.py`` loads it), which comes before ``input``.

Input items become canonical messages: ``message`` items (the ``{role, content}`` shorthand
too) with ``input_text``/``output_text``/``input_image``/``input_file`` parts,
``function_call`` and ``function_call_output`` items, and ``reasoning`` items, whose
``encrypted_content`` is a signature the gateway handed out (``wire/signatures.py``: a
provider reads only its own) and whose summary is the reasoning text.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- A provider marked ``responses = "native"`` serves this API itself and takes the body as
  sent; every other upstream gets it translated, so a field without a canonical meaning
  is the feature ``responses:<field>``, refused by name there (dropped where the operator
  allows). Built-in tools and their items are such features (the paid ones surcharges);
  file search and MCP are refused outright: they reach the operator's account.
- What the gateway itself honours: ``store``, ``previous_response_id``, ``metadata``,
  ``include`` of ``reasoning.encrypted_content`` (always sent), ``truncation: disabled``.
- Resources of the operator's OpenAI account (``file_id``, stored prompts, conversations)
  are refused: every client of the gateway shares them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.canonical import (
    EFFORTS,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ResponseFormat,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.errors import RequestError
from gateway.wire.features import Features, note_media, note_tools
from gateway.wire.jsonbody import is_int
from gateway.wire.openai.request import pdf_data, refuse_endpoint_fields
from gateway.wire.signatures import from_client

DIALECT = "responses"
# What marks an encrypted reasoning block (Anthropic's redacted thinking) inside the
# ``encrypted_content`` of a reasoning item, after the signature wrapper.
REDACTED = "redacted:"
SHARED = ("names a resource of the gateway's own upstream account, which every client of "
          "this gateway shares: not honoured (send the content itself)")
# Fields the gateway reads; any other is ``responses:<field>``, which no upstream honours.
HANDLED = frozenset({
    "model", "input", "instructions", "stream", "max_output_tokens", "temperature", "top_p",
    "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning", "user", "metadata",
    "store", "previous_response_id", "include", "truncation", "stream_options",
    "service_tier",
})
REFUSED = {
    "prompt": "stored prompts " + SHARED,
    "conversation": "conversations " + SHARED,
    "background": "background responses are not run by this gateway: stream instead",
}
# Built-in tools, and the items their calls leave in a conversation, that an upstream which
# serves this API itself runs (``responses = "native"``); the paid ones are surcharges.
NATIVE_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_2025_08_26",
    "web_search_preview_2025_03_11", "code_interpreter", "image_generation",
    "computer_use_preview", "local_shell", "shell", "apply_patch", "custom",
})
PAID_TOOLS = ("web_search", "code_interpreter", "image_generation")
NATIVE_ITEMS = frozenset({
    "web_search_call", "code_interpreter_call", "image_generation_call", "computer_call",
    "computer_call_output", "local_shell_call", "local_shell_call_output", "shell_call",
    "shell_call_output", "apply_patch_call", "apply_patch_call_output", "custom_tool_call",
    "custom_tool_call_output",
})
REFUSED_TOOLS = {
    "file_search": "searches vector stores of the gateway's own upstream account, which "
    "every client of this gateway shares: not honoured",
    "mcp": "reaches MCP servers and connectors on the gateway's upstream account's behalf: "
    "not honoured",
}
INCLUDABLE = frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"})
ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user",
                         "assistant": "assistant"}
MAX_METADATA = 16


def _fail(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _fail(f"'{key}' must be a number between {low:g} and {high:g}", key)
    return float(value)


def _data_file(raw: Mapping[str, Any], param: str) -> FilePart:
    if raw.get("file_id") is not None:
        raise _fail("'file_id' " + SHARED, f"{param}.file_id")
    if raw.get("file_url") is not None:
        raise _fail("'file_url' is not fetched by this gateway: send 'file_data'",
                    f"{param}.file_url")
    return pdf_data(raw, param)


def _part(raw: Any, param: str) -> Part:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("input_text", "output_text", "text"):
        text = raw.get("text")
        if not isinstance(text, str):
            raise _fail("a text part needs a string 'text'", param)
        return TextPart(text)
    if kind == "refusal":
        refusal = raw.get("refusal")
        if not isinstance(refusal, str):
            raise _fail("a refusal part needs a string 'refusal'", param)
        return TextPart(refusal)
    if kind == "input_image":
        if raw.get("file_id") is not None:
            raise _fail("'file_id' " + SHARED, f"{param}.file_id")
        url, detail = raw.get("image_url"), raw.get("detail")
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
            raise _fail("an input_image part needs an http(s) or data: 'image_url'", param)
        if detail is not None and detail not in ("auto", "low", "high"):
            raise _fail("'detail' must be auto, low or high", f"{param}.detail")
        return ImagePart(url, None if detail == "auto" else detail)
    if kind == "input_file":
        return _data_file(raw, param)
    raise _fail(f"unsupported content part type {kind!r}: input_text, input_image, "
                "input_file, output_text or refusal", param)


def _content(raw: Any, param: str) -> tuple[Part, ...]:
    if isinstance(raw, str):
        return (TextPart(raw),)
    if isinstance(raw, list):
        return tuple(_part(item, f"{param}.{i}") for i, item in enumerate(raw))
    raise _fail("'content' must be a string or an array of parts", param)


def _text(raw: Any, param: str) -> str:
    if not isinstance(raw, str):
        raise _fail("must be a string", param)
    return raw


class _Conversation:
    """Input items folded into canonical messages: an assistant turn gathers its reasoning,
    its text and its function calls, as the chat dialects hold them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._turn: dict[str, Any] | None = None  # the assistant turn being gathered
        self.native: dict[str, str] = {}  # native-only items: feature -> where

    def _assistant(self) -> dict[str, Any]:
        if self._turn is None:
            self._turn = {"content": [], "calls": [], "reasoning": "", "signature": "",
                          "by": "", "redacted": []}
        return self._turn

    def flush(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            self.messages.append(Message(
                "assistant", tuple(turn["content"]), tool_calls=tuple(turn["calls"]),
                reasoning=turn["reasoning"], signature=turn["signature"],
                signed_by=turn["by"], redacted=tuple(turn["redacted"])))

    def add(self, item: Any, param: str) -> None:
        if isinstance(item, str):
            raise _fail("an input item must be an object", param)
        if not isinstance(item, dict):
            raise _fail("an input item must be an object", param)
        kind = item.get("type", "message")
        if kind == "message":
            raw_role = item.get("role")
            role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
            if role is None:
                raise _fail("'role' must be one of user, assistant, system, developer",
                            f"{param}.role")
            content = _content(item.get("content"), f"{param}.content")
            if role == "assistant":
                turn = self._assistant()
                if turn["calls"]:  # text after calls: a new turn
                    self.flush()
                    turn = self._assistant()
                turn["content"].extend(content)
                return
            self.flush()
            self.messages.append(Message(role, content))
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            arguments = item.get("arguments", "")
            if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name
                    and isinstance(arguments, str)):
                raise _fail("a function_call item needs 'call_id', 'name' and 'arguments' "
                            "strings", param)
            self._assistant()["calls"].append(ToolCall(call_id, name, arguments))
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not call_id:
                raise _fail("a function_call_output item needs a 'call_id'", f"{param}.call_id")
            parts = (TextPart(output),) if isinstance(output, str) else _content(
                output, f"{param}.output")
            self.flush()
            self.messages.append(Message("tool", parts, tool_call_id=call_id))
        elif kind == "reasoning":
            self._reasoning(item, param)
        elif isinstance(kind, str) and kind in NATIVE_ITEMS:
            # Built-in tool calls and their outputs: only an upstream that runs those tools
            # (``responses = "native"``) reads them; the canonical turns leave them out.
            self.native.setdefault(f"input.{kind}", f"{param}.type")
        elif kind == "item_reference":
            raise _fail("'item_reference' items are not resolved by this gateway: send the "
                        "item, or use previous_response_id", param)
        else:
            raise _fail(f"unsupported input item type {kind!r}: message, function_call, "
                        "function_call_output or reasoning (built-in tools need an upstream "
                        "that runs them)", f"{param}.type")

    def _reasoning(self, item: Mapping[str, Any], param: str) -> None:
        turn = self._assistant()
        if turn["content"] or turn["calls"]:  # reasoning opens a new assistant turn
            self.flush()
            turn = self._assistant()
        summary = item.get("summary", [])
        if not isinstance(summary, list):
            raise _fail("'summary' must be an array", f"{param}.summary")
        texts = []
        for i, part in enumerate(summary):
            text = part.get("text") if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise _fail("a summary part needs a string 'text'", f"{param}.summary.{i}")
            texts.append(text)
        turn["reasoning"] += "".join(texts)
        encrypted = item.get("encrypted_content")
        if encrypted is None:
            return
        if not isinstance(encrypted, str):
            raise _fail("'encrypted_content' must be a string", f"{param}.encrypted_content")
        value, by = from_client(encrypted, DIALECT)
        if by == DIALECT:
            # Not one the gateway handed out (OpenAI's own encrypted reasoning, say): no
            # upstream here can read it.
            raise _fail("this 'encrypted_content' was not written by a provider of this "
                        "gateway: no upstream can read it", f"{param}.encrypted_content")
        turn["by"] = by
        if value.startswith(REDACTED):
            turn["redacted"].append(value[len(REDACTED):])
        else:
            turn["signature"] = value


def _messages(body: Mapping[str, Any],
              history: Sequence[Any]) -> tuple[list[Message], dict[str, str]]:
    conversation = _Conversation()
    instructions = body.get("instructions")
    if instructions is not None:
        conversation.messages.append(Message("system", (
            TextPart(_text(instructions, "instructions")),)))
    for i, item in enumerate(history):
        conversation.add(item, f"previous_response_id (item {i})")
    raw = body.get("input")
    if isinstance(raw, str):
        conversation.flush()
        conversation.messages.append(Message("user", (TextPart(raw),)))
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            conversation.add(item, f"input.{i}")
    else:
        raise _fail("'input' must be a string or an array of items", "input")
    conversation.flush()
    if not any(m.role != "system" for m in conversation.messages):
        raise _fail("'input' holds no message", "input")
    return conversation.messages, conversation.native


def _tools(raw: Any, features: Features) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail("'tools' must be an array", "tools")
    tools = []
    for i, item in enumerate(raw):
        param = f"tools.{i}"
        kind = item.get("type") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind in NATIVE_TOOLS:
            # A built-in tool: run by an upstream that speaks this API itself.
            features.own(f"tools.{kind}", f"{param}.type")
            if kind.startswith(PAID_TOOLS):
                features.paid("web_search" if kind.startswith("web_search") else
                              "server_tools", f"{param}.type")
            continue
        if kind != "function":
            why = REFUSED_TOOLS.get(kind) if isinstance(kind, str) else None
            raise _fail(f"the {kind!r} tool {why or 'is not run by any upstream here'}: "
                        "function tools, or built-in tools on a provider with responses = "
                        "\"native\"", f"{param}.type")
        name, parameters = item.get("name"), item.get("parameters")
        description, strict = item.get("description"), item.get("strict")
        if not isinstance(name, str) or not name:
            raise _fail("a function tool needs a non-empty 'name'", f"{param}.name")
        if not isinstance(parameters, dict | None) or not isinstance(description, str | None) \
                or not isinstance(strict, bool | None):
            raise _fail("a function tool is {name, parameters (a JSON schema), description?, "
                        "strict?}", param)
        for key in item.keys() - {"type", "name", "parameters", "description", "strict"}:
            features.own(f"tools.{key}", f"{param}.{key}")
        tools.append(Tool(name, description, parameters, strict))
    return tuple(tools)


def _tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    if raw in ("none", "auto", "required"):
        return ToolChoice(raw)
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(
            raw.get("name"), str):
        return ToolChoice("tool", raw["name"])
    raise _fail("'tool_choice' must be none, auto, required or {type: function, name}",
                "tool_choice")


def _format(raw: Any) -> ResponseFormat | None:
    """``text.format``: ``{type: text}``, ``{type: json_object}`` or ``{type: json_schema,
    name, schema, description?, strict?}``."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        name, schema = raw.get("name"), raw.get("schema")
        description, strict = raw.get("description"), raw.get("strict")
        if (isinstance(name, str) and name and isinstance(schema, dict)
                and isinstance(description, str | None) and isinstance(strict, bool | None)):
            return ResponseFormat("json_schema", schema, name, description, strict)
    raise _fail("'text.format' must be {type: text}, {type: json_object} or {type: "
                "json_schema, name, schema, strict?}", "text.format")


def _reasoning(raw: Any) -> Reasoning | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"effort", "summary", "generate_summary"}:
        raise _fail("'reasoning' must be an object with keys effort, summary", "reasoning")
    effort = raw.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise _fail(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}",
                    "reasoning.effort")
    summary = raw.get("summary", raw.get("generate_summary"))
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        raise _fail("'reasoning.summary' must be auto, concise or detailed",
                    "reasoning.summary")
    # A summary asked for: the reasoning text comes back (as the summary).
    return Reasoning(enabled=effort != "none", effort=effort,
                     include=True if summary is not None else None)


def _metadata(raw: Any) -> None:
    if raw is None:
        return
    if not (isinstance(raw, dict) and len(raw) <= MAX_METADATA and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in raw.items())):
        raise _fail(f"'metadata' must be an object of at most {MAX_METADATA} string values "
                    "(keys up to 64 characters, values up to 512)", "metadata")


def parse_request(body: Any, history: Sequence[Any] = ()) -> ChatRequest:
    """Validate a client's Responses body; ``history`` is what ``previous_response_id``
    names (stored items, in order), already loaded."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    # A native provider gets the body as sent: no endpoint or routing field may ride along.
    refuse_endpoint_fields(body, routing=True)
    for key in body:
        if key in REFUSED and body[key] is not None:
            raise _fail(f"'{key}': {REFUSED[key]}", key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("'model' must be a non-empty string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _fail("'stream' must be true or false", "stream")
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and not (is_int(max_tokens)
                                       and 16 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise _fail(f"'max_output_tokens' must be an integer between 16 and "
                    f"{MAX_TOKENS_LIMIT}", "max_output_tokens")
    for key, kind in (("store", bool), ("parallel_tool_calls", bool), ("user", str),
                      ("previous_response_id", str)):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise _fail(f"'{key}' has the wrong type", key)
    _metadata(body.get("metadata"))
    include = body.get("include") or []
    if not isinstance(include, list) or any(i not in INCLUDABLE for i in include):
        raise _fail(f"'include' may hold {', '.join(sorted(INCLUDABLE))}", "include")
    if body.get("truncation") not in (None, "disabled"):
        raise _fail("'truncation' must be disabled: the gateway does not cut a conversation",
                    "truncation")
    features = Features(DIALECT)
    for key, value in body.items():
        if key not in HANDLED and value is not None:
            features.own(key, key)
    text = body.get("text") or {}
    if not isinstance(text, dict):
        raise _fail("'text' must be an object", "text")
    for key in text.keys() - {"format"}:
        features.own(f"text.{key}", f"text.{key}")
    if "message.output_text.logprobs" in include:
        features.own("include.logprobs", "include")
    if body.get("service_tier") not in (None, "auto", "default"):
        features.paid("service_tier", "service_tier")
    messages, native = _messages(body, history)
    for feature, where in native.items():
        features.own(feature, where)
    tools = _tools(body.get("tools"), features)
    response_format = _format(text["format"]) if text.get("format") is not None else None
    reasoning = _reasoning(body.get("reasoning"))
    found = features.found
    note_media(messages, found, images="input_image", documents="input_file",
               audio="input_audio")
    note_tools(tools, found)
    for key in ("temperature", "top_p", "user", "parallel_tool_calls"):
        if body.get(key) is not None:
            found[key] = key
    if response_format is not None:
        found["response_format"] = "text.format"
    if reasoning is not None:
        found["reasoning"] = "reasoning"
    if any(m.role == "tool" and m.is_error for m in messages):
        found["tool_errors"] = "input"
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=bool(stream),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice")),
        user=body.get("user"),
        parallel_tool_calls=body.get("parallel_tool_calls"),
        response_format=response_format,
        reasoning=reasoning,
        dialect=DIALECT,
        raw=body,
        features=found,
        history=tuple(history),
    )
