"""Gemini ``generateContent``, upstream side: what the gateway sends to a Gemini provider,
and its answers read back as canonical events.

``upstream_body`` builds the body sent to a Gemini upstream; ``StreamParser`` and
``parse_response`` turn its answers back into canonical events; ``upstream_error`` turns an
error object it sent into an ``UpstreamError``.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Gemini function calls carry no ids: the parser uses the upstream's own when it sends them,
  else builds them from the answer's ``responseId`` and the call's number.
- Upstream bodies are untrusted: malformed ones raise ``UpstreamProtocolError``, and upstream
  error text is never repeated (Gemini errors can echo the API key in a URL).
- A client of this dialect is passed through: its body goes as sent (the model is in the
  URL). Any other client's request is built from the canonical fields this dialect honours
  (``HONOURS``); ``routing/fidelity.py`` has refused or allowed dropping the rest.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from typing import Any

from gateway.canonical import (
    ChatRequest,
    FilePart,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    ReasoningSignature,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from gateway.wire.gemini.common import STATUS_NAMES, loads_object
from gateway.wire.jsonbody import compact, is_int, upstream_object, without_surrogates
from gateway.wire.signatures import foreign

# The words an upstream error may be labelled with: google.rpc status names, nothing else.
UPSTREAM_STATUSES = frozenset(STATUS_NAMES.values()) | {
    "UNKNOWN", "OUT_OF_RANGE", "ALREADY_EXISTS", "DATA_LOSS",
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

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp", ".gif": "image/gif", ".heic": "image/heic",
               ".heif": "image/heif"}


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
        {"text": p.text} if isinstance(p, TextPart)
        else {"inlineData": {"mimeType": p.media_type, "data": p.data}}
        if isinstance(p, FilePart) else _render_image(p)
        for p in content
        if not (isinstance(p, TextPart) and not p.text)
    ]


def _tool_result(text: str) -> dict[str, Any]:
    """A tool message as a ``functionResponse.response`` object (Gemini takes only objects;
    other results go under ``output``, the key its docs recommend)."""
    value = loads_object(text)
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
            # A failed call's result is an ``error`` object, as Gemini's docs put it.
            response = ({"error": message.text} if message.is_error
                        else _tool_result(message.text))
            part = {"functionResponse": {"name": names.get(call_id) or message.name or call_id,
                                         "response": response}}
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
        first_call = len(parts)
        for call in message.tool_calls:
            names[call.id] = call.name
            parts.append({"functionCall": {"name": call.name,
                                           "args": loads_object(call.arguments) or {}}})
        if message.signature and message.signed_by == "gemini" and parts:
            # Back on the part Gemini put it on: the first function call, else the first.
            parts[first_call if message.tool_calls else 0]["thoughtSignature"] = (
                message.signature)
        if parts:
            contents.append({"role": "model", "parts": parts})
    return contents, system


FUNCTION_CALLING_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}


def _tool_config(choice: ToolChoice, strict: bool) -> dict[str, Any]:
    """Gemini's ``toolConfig`` for a tool choice: one named tool is ``ANY`` of that one.
    Strict tools (arguments that must match their schema) are ``VALIDATED`` where the model
    may choose (``ANY`` adheres to the schemas already)."""
    mode = FUNCTION_CALLING_MODES[choice.mode]
    calling: dict[str, Any] = {"mode": "VALIDATED" if strict and mode == "AUTO" else mode}
    if choice.mode == "tool":
        calling["allowedFunctionNames"] = [choice.name]
    return {"functionCallingConfig": calling}


# The canonical features a Gemini upstream honours (``routing/fidelity.py``).
HONOURS = frozenset({
    "temperature", "top_p", "stop", "seed", "top_k", "presence_penalty", "frequency_penalty",
    "response_format", "reasoning", "images", "tool_errors", "documents", "audio",
    "strict_tools",  # functionCallingConfig VALIDATED (or ANY): calls match their schemas
    # An Anthropic client's prompt-cache markers: Gemini caches prompt prefixes on its own
    # (implicit caching; reads come back as cachedContentTokenCount): nothing to send.
    "anthropic:cache_control",
})


def _own_signatures(contents: list[Any]) -> list[Any]:
    """The client's history without thought signatures another dialect wrote (a fallback
    of another dialect answered those turns): Gemini can read none of them."""
    out = []
    for turn in contents:
        parts = turn.get("parts") if isinstance(turn, dict) else None
        if isinstance(parts, list):
            parts = [{k: v for k, v in p.items() if k not in ("thoughtSignature",
                                                               "thought_signature")}
                     if isinstance(p, dict) and _foreign_part(p) else p for p in parts]
            turn = {**turn, "parts": parts}
        out.append(turn)
    return out


def _foreign_part(part: dict[str, Any]) -> bool:
    signature = part.get("thoughtSignature", part.get("thought_signature"))
    return isinstance(signature, str) and foreign(signature, "gemini")


def thinking_config(reasoning: Reasoning) -> dict[str, Any]:
    config: dict[str, Any] = {}
    budget = reasoning.as_budget(None)
    if budget is not None:
        config["thinkingBudget"] = budget
    if reasoning.include is not None:
        config["includeThoughts"] = reasoning.include
    return config


def upstream_body(request: ChatRequest) -> dict[str, Any]:
    """The ``GenerateContentRequest`` for a Gemini upstream (the model goes in the URL): a
    client of this dialect's own, or the translation of another's."""
    if request.dialect == "gemini":
        own = {k: v for k, v in request.raw.items() if k != "model"}
        if any(m.signed_by not in ("", "gemini") for m in request.messages):
            own["contents"] = _own_signatures(own["contents"])
        return own
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
    for key, name in (("seed", "seed"), ("top_k", "topK"),
                      ("presence_penalty", "presencePenalty"),
                      ("frequency_penalty", "frequencyPenalty")):
        value = getattr(request, key)
        if value is not None:
            config[name] = value
    fmt = request.response_format
    if fmt is not None:
        config["responseMimeType"] = "application/json"
        if fmt.kind == "json_schema" and fmt.schema is not None:
            config["responseJsonSchema"] = dict(fmt.schema)
    if request.reasoning is not None:
        config["thinkingConfig"] = thinking_config(request.reasoning)
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
    strict = any(t.strict for t in request.tools)
    if request.tool_choice is not None or strict:
        body["toolConfig"] = _tool_config(request.tool_choice or ToolChoice("auto"), strict)
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


# What a plain text chunk ends with: the two fields the gateway rewrites, in Gemini's order.
_TAIL = re.compile(r',"modelVersion":"[^"\\]*","responseId":"[^"\\]*"}$')
# Anything but one candidate's text: parsed in full.
_NOT_PLAIN = ('"finishReason"', '"functionCall"', '"functionResponse"', '"thought',
              '"error"', '"executableCode"', '"codeExecutionResult"', '"inlineData"',
              '"fileData"', '"index":1')


def text_chunk(data: str) -> tuple[int, int]:
    """(where the upstream's ``modelVersion`` field begins, the length of the text) if
    ``data`` is a chunk holding nothing but one candidate's text (the bulk of any stream),
    which a Gemini client gets as sent but for those two fields, without it being parsed;
    else (-1, 0), and it is parsed. Conservative: a finish reason, a call, a thought, an
    error, any part but text, a second candidate or fields in another order say no."""
    if any(word in data for word in _NOT_PLAIN) or data.count('"text":"') != 1:
        return -1, 0
    tail = _TAIL.search(data)
    start = data.find('"text":"') + 8
    end = data.find('"}', start)
    if tail is None or end <= start:
        return -1, 0
    return tail.start(), end - start


class StreamParser:
    """Turns the chunks of one upstream ``streamGenerateContent`` answer into events.

    Function calls are numbered across the whole answer. Their ids are the upstream's own
    when it sends them, else built from the answer's ``responseId`` and the call's number,
    so calls of different turns never share an id. Usage is reported once the answer has
    finished (Gemini repeats growing counts in every chunk; the last one wins).
    """

    def __init__(self) -> None:
        self.done = False
        # The latest usageMetadata as sent: parsed only when it is reported (at the end),
        # not on every chunk that repeats it.
        self._usage: Any = None
        self._calls = 0
        self._response_id = ""

    @property
    def usage(self) -> Usage | None:
        """The usage the upstream reported last, if any."""
        return None if self._usage is None else _usage(self._reported())

    def passed(self, data: str) -> None:
        """A chunk relayed without being parsed (``text_chunk``): its usage, if it holds
        one, is the latest, kept as text and parsed only if it is the one reported."""
        if '"usageMetadata"' in data:
            self._usage = data

    def _reported(self) -> Any:
        if isinstance(self._usage, str):  # a passed chunk's: parsed now, once
            usage = upstream_object(self._usage, "an event").get("usageMetadata")
            if not isinstance(usage, dict):
                raise UpstreamProtocolError("upstream usageMetadata is not an object")
            self._usage = usage
        return self._usage

    def feed(self, data: str | dict[str, Any]) -> list[StreamEvent]:
        """Events in one upstream chunk (an SSE ``data`` payload, or that payload parsed)."""
        return self._chunk(upstream_object(data, "an event"))

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error") is not None:
            raise upstream_error(chunk["error"])
        out: list[StreamEvent] = []
        was_done = self.done
        response_id = chunk.get("responseId")
        if isinstance(response_id, str) and response_id.isascii() and response_id.isprintable():
            self._response_id = response_id[:64]
        if chunk.get("usageMetadata") is not None:
            if not isinstance(chunk["usageMetadata"], dict):
                raise UpstreamProtocolError("upstream usageMetadata is not an object")
            self._usage = chunk["usageMetadata"]
        candidates = chunk.get("candidates")
        if candidates is None:
            candidates = []
        if not isinstance(candidates, list):
            raise UpstreamProtocolError("upstream 'candidates' is not an array")
        reason: FinishReason | None = None
        for candidate in candidates:
            if not isinstance(candidate, dict) or not is_int(candidate.get("index", 0)):
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
        if self.done and self._usage is not None and (
            not was_done or chunk.get("usageMetadata") is not None
        ):
            out.append(UsageReport(_usage(self._reported())))
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
        signature = part.get("thoughtSignature")
        if signature is not None:  # it belongs to this part: it comes just before it
            if not isinstance(signature, str):
                raise UpstreamProtocolError("upstream thoughtSignature is not a string")
            out.append(ReasoningSignature(signature, "gemini"))
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
                arguments = without_surrogates(compact(args))
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


def parse_response(body: bytes | dict[str, Any]) -> list[StreamEvent]:
    """Events equivalent to one non-streaming upstream ``GenerateContentResponse``."""
    answer = upstream_object(body, "an answer")
    if answer.get("error") is None and not answer.get("candidates") and not isinstance(
        answer.get("promptFeedback"), dict
    ):
        raise UpstreamProtocolError("upstream answer has no candidates")
    return StreamParser()._chunk(answer)
