"""Anthropic Messages, upstream side: what the gateway sends to an Anthropic provider, and
its answers read back as canonical events.

``upstream_body`` builds the body sent to an Anthropic upstream; ``StreamParser`` and
``parse_message`` turn its answers back into canonical events; ``upstream_error`` turns an
error it sent into a ``GatewayError``.

Rules:
- Pure: no sockets, no clock, no globals but constant tables.
- Thinking signatures and redacted thinking become ``ReasoningSignature`` and
  ``RedactedReasoning`` (a client sends them back for multi-turn tool use). What the
  canonical model cannot hold is dropped knowingly: citations, and block types Anthropic
  may add later.
- Upstream bodies are untrusted: anything malformed raises ``UpstreamProtocolError``,
  and an upstream error names only a known error type, never the provider's text.
- A client of this dialect is passed through: its body goes as sent, with only the model
  rewritten. Any other client's request is built from the canonical fields this dialect
  honours (``HONOURS``); ``routing/fidelity.py`` has refused or allowed dropping the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    ChatRequest,
    FilePart,
    Finish,
    FinishReason,
    Message,
    Part,
    Reasoning,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import (
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from gateway.wire.anthropic.common import ERROR_TYPES, tool_input
from gateway.wire.jsonbody import compact, is_int, upstream_object, without_surrogates
from gateway.wire.signatures import foreign

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; other dialects may leave it unset
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types that may be named to the client: known words, never provider free text.
UPSTREAM_ERROR_TYPES = frozenset({*ERROR_TYPES.values(), "conflict_error"})
# In-band errors that mean what these statuses mean, so retry and fallback treat them alike.
UPSTREAM_ERROR_STATUS = {"overloaded_error": 529, "rate_limit_error": 429}


# ---------------------------------------------------------------------------------------
# Upstream requests


def _part_block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, FilePart):  # a PDF: fidelity.py refused audio
        block: dict[str, Any] = {"type": "document", "source": {
            "type": "base64", "media_type": part.media_type, "data": part.data}}
        if part.name:
            block["title"] = part.name
        return block
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


TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}


def _tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    """Anthropic's form of a tool choice; whether calls may run in parallel goes in as
    ``disable_parallel_tool_use``, except beside ``none``, where Anthropic has no use for it."""
    if choice is None and parallel is None:
        return None
    mode = choice.mode if choice is not None else "auto"
    out: dict[str, Any] = {"type": TOOL_CHOICE_TYPES[mode]}
    if choice is not None and choice.mode == "tool":
        out["name"] = choice.name
    if parallel is not None and mode != "none":
        out["disable_parallel_tool_use"] = not parallel
    return out


def _own_thinking(messages: list[Any]) -> list[Any]:
    """The client's history without thinking blocks another dialect signed (a fallback of
    another dialect answered those turns): Anthropic can read none of them."""
    out = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = [b for b in content if not (
                isinstance(b, dict) and b.get("type") == "thinking"
                and isinstance(b.get("signature"), str) and foreign(b["signature"], "anthropic"))]
            message = {**message, "content": content}
        out.append(message)
    return out


def _reasoning_blocks(message: Message) -> list[dict[str, Any]]:
    """An assistant turn's thinking, signed, as Anthropic wants it back; reasoning another
    provider wrote (or unsigned text) is left out: Anthropic can read none of it."""
    if message.signed_by != "anthropic":
        return []
    blocks: list[dict[str, Any]] = []
    if message.signature:
        blocks.append({"type": "thinking", "thinking": message.reasoning,
                       "signature": message.signature})
    blocks += [{"type": "redacted_thinking", "data": d} for d in message.redacted]
    return blocks


# The canonical features an Anthropic upstream honours (``routing/fidelity.py``).
HONOURS = frozenset({
    "temperature", "top_p", "stop", "top_k", "user", "parallel_tool_calls",
    "response_format", "reasoning", "images", "tool_errors", "documents",
    "tool_result_media", "strict_tools",
})


def output_format(fmt: ResponseFormat) -> dict[str, Any]:
    """Structured output as Anthropic's ``output_config.format``: any JSON object is the
    schema ``{"type": "object"}``."""
    schema = dict(fmt.schema) if fmt.kind == "json_schema" and fmt.schema else {"type": "object"}
    return {"type": "json_schema", "schema": schema}


MIN_THINKING_BUDGET = 1024  # the least budget Anthropic takes


def thinking(reasoning: Reasoning, max_tokens: int) -> dict[str, Any]:
    """A thinking budget below ``max_tokens`` but never below Anthropic's least (a request
    with less room than that is Anthropic's to refuse); the provider's default amount,
    adaptive, when only "think" was said."""
    if not reasoning.enabled:
        return {"type": "disabled"}
    budget = reasoning.as_budget(max_tokens)
    out: dict[str, Any] = {"type": "adaptive"} if budget is None else {
        "type": "enabled", "budget_tokens": max(budget, MIN_THINKING_BUDGET)}
    if reasoning.include is False:  # OpenRouter's exclude: think, but show nothing
        out["display"] = "omitted"
    return out


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The body for an Anthropic upstream: a client of this dialect's own, or the
    translation of another's.

    System messages, wherever they were, become the top-level ``system``. Tool messages
    become ``tool_result`` blocks of one user message, with the user text that follows
    them. An assistant message with nothing left to say is left out (Anthropic rejects
    empty turns). A temperature above Anthropic's 1.0 (OpenAI allows 2) is sent as 1.0.
    """
    if request.dialect == "anthropic":
        own = {**request.raw, "model": model}
        if any(m.signed_by not in ("", "anthropic") for m in request.messages):
            own["messages"] = _own_thinking(own["messages"])
        return own
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the user turn that tool results open
    for message in request.messages:
        # Audio has no Anthropic form: fidelity.py refused it, or the operator let it drop.
        blocks = [_part_block(p) for p in message.content
                  if not (isinstance(p, FilePart) and p.audio)]
        if message.role == "system":
            system.extend(b for b in blocks if b["type"] == "text")
        elif message.role == "tool":
            block: dict[str, Any] = {"type": "tool_result",
                                     "tool_use_id": message.tool_call_id or "",
                                     "content": _content(blocks)}
            if message.is_error:
                block["is_error"] = True
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
            blocks = _reasoning_blocks(message) + blocks
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name,
                        "input": tool_input(c.arguments)} for c in message.tool_calls]
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
    choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    if choice is not None:
        body["tool_choice"] = choice
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.response_format is not None:
        body["output_config"] = {"format": output_format(request.response_format)}
    if request.reasoning is not None:
        body["thinking"] = thinking(request.reasoning, body["max_tokens"])
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
        if is_int(value) and value >= 0:
            into[key] = value
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    if is_int(thinking) and thinking >= 0:
        into["thinking_tokens"] = thinking


def _usage(counts: Mapping[str, int]) -> Usage:
    cached = counts.get("cache_read_input_tokens", 0)
    return Usage(
        prompt_tokens=counts.get("input_tokens", 0) + cached
        + counts.get("cache_creation_input_tokens", 0),
        completion_tokens=counts.get("output_tokens", 0),
        cached_tokens=cached,
        reasoning_tokens=counts.get("thinking_tokens", 0),
        cache_write_tokens=counts.get("cache_creation_input_tokens", 0),
    )


def _finish(reason: Any) -> list[StreamEvent]:
    if reason is None:
        return []
    if not isinstance(reason, str):
        raise UpstreamProtocolError("upstream stop_reason is not a string")
    return [Finish(FINISH_REASONS.get(reason, "stop"))]


def text_delta(data: str) -> int:
    """The length of the text in ``data`` if it is a ``content_block_delta`` holding nothing
    but a non-empty text delta (the bulk of any stream), which an Anthropic client gets as
    sent without it being parsed (it changes no parser state); else -1, and it is parsed.

    Conservative: anything that might be an error, a citation or another delta type, or
    holds a second ``text``, returns -1."""
    if ('"type":"content_block_delta"' not in data or '"type":"text_delta"' not in data
            or '"error"' in data or '"citation' in data):
        return -1
    start = data.find('"text":"')
    if start < 0 or data.find('"text":"', start + 8) >= 0:
        return -1
    end = data.rfind('"}')
    return end - start - 8 if end > start + 8 else -1


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

    def feed(self, event: str | None, data: str | dict[str, Any]) -> list[StreamEvent]:
        obj = upstream_object(data, "an event")
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
        if not is_int(index) or not isinstance(block, dict):
            raise UpstreamProtocolError("upstream content_block_start is malformed")
        kind = block.get("type")
        if kind == "tool_use":
            tool = self._tools[index] = len(self._tools)
            given = block.get("input")
            arguments = compact(given) if isinstance(given, dict) and given else ""
            return [ToolCallDelta(tool, _string(block, "id"), _string(block, "name"), arguments)]
        if kind == "text" and block.get("text"):
            return [TextDelta(_string(block, "text"))]
        if kind == "thinking":
            return _thinking(block)
        if kind == "redacted_thinking":
            return [RedactedReasoning(_string(block, "data"), "anthropic")]
        return []  # an empty text block, or one the canonical model cannot hold

    def _delta(self, obj: Mapping[str, Any]) -> list[StreamEvent]:
        index, delta = obj.get("index"), obj.get("delta")
        if not is_int(index) or not isinstance(delta, dict):
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
        if kind == "signature_delta":
            signature = _string(delta, "signature")
            return [ReasoningSignature(signature, "anthropic")] if signature else []
        return []  # citations_delta: nothing the canonical model holds


def _thinking(block: Mapping[str, Any]) -> list[StreamEvent]:
    """A whole (or starting) thinking block: its text, then its signature if it has one."""
    out: list[StreamEvent] = []
    if block.get("thinking"):
        out.append(ReasoningDelta(_string(block, "thinking")))
    if block.get("signature"):
        out.append(ReasoningSignature(_string(block, "signature"), "anthropic"))
    return out


def parse_message(body: bytes | dict[str, Any]) -> list[StreamEvent]:
    """Events equivalent to one non-streaming upstream ``Message`` body."""
    obj = upstream_object(body, "an answer")
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
            out += _thinking(block)
        elif kind == "redacted_thinking":
            out.append(RedactedReasoning(_string(block, "data"), "anthropic"))
        elif kind == "tool_use":
            given = block.get("input")
            if not isinstance(given, dict):
                raise UpstreamProtocolError("upstream tool_use input is not an object")
            out.append(ToolCallDelta(tools, _string(block, "id"), _string(block, "name"),
                                     without_surrogates(compact(given))))
            tools += 1
    out += _finish(obj.get("stop_reason"))
    counts: dict[str, int] = {}
    _count(obj.get("usage"), counts)
    if counts:
        out.append(UsageReport(_usage(counts)))
    return out
