"""The Anthropic Messages dialect of the fake upstream: ``POST /v1/messages``.

Rules:
- Pure (see ``gateway.sim.dialect``): reads a body, renders events and errors; no I/O.
- Requests as the Messages API takes them: ``model``, ``max_tokens`` (required), ``messages``
  with string or block content, optional ``system`` and ``stream``. The key comes in
  ``x-api-key`` (or, as recent SDKs send it, ``Authorization: Bearer``); ``anthropic-version``
  is accepted, whatever its value.
- A stream is the Messages event sequence: ``message_start`` (with the input tokens),
  ``content_block_start`` of text block 0 and a ``ping`` (these three go with the first
  token), a ``content_block_delta``/``text_delta`` per token, then ``content_block_stop``,
  ``message_delta`` (``stop_reason`` ``end_turn`` or ``max_tokens``, the output tokens) and
  ``message_stop``. Hidden usage leaves out both ``usage`` objects.
- A tool call (``tools`` declared, no ``tool_result`` block yet) is block 0 of type
  ``tool_use`` (``toolu_...``, empty ``input``), an empty then one ``input_json_delta`` per
  argument fragment, and ``stop_reason`` ``tool_use``. A user turn of tool results only is
  no prompt: the directive is read from the last user turn with text.
- Errors are ``{"type": "error", "error": {"type", "message"}}``; the mid-stream error is an
  ``event: error`` with ``overloaded_error``, Anthropic's usual mid-stream failure (529).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from gateway.sim.dialect import (
    Answer,
    Asked,
    BadRequest,
    Counted,
    Dialect,
    Finish,
    Headers,
    Render,
    Request,
    bearer,
    dumps,
    json_object,
    json_string,
    plan_of,
    text_of,
)
from gateway.sim.scenarios import Plan, prompt_tokens

__all__ = ["DIALECT", "PATH", "error"]

PATH: Final = "/v1/messages"

# Anthropic's error (type, message) per status.
_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    405: ("invalid_request_error", "Method not allowed."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}
_STOP_REASONS: Final[dict[Finish, str]] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"
}
_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("transfer-encoding", "chunked"),
)
_MIDSTREAM_STATUS: Final = 529
_TOKEN_OPEN: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)
_TOKEN_CLOSE: Final = b"}}\n\n"
_INPUT_OPEN: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)
_PING: Final = b'event: ping\ndata: {"type": "ping"}\n\n'
_BLOCK_START: Final = (
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    b"\n\n"
    + _PING
)
_BLOCK_STOP: Final = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
)
_MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_MALFORMED_EVENT: Final = b"event: content_block_delta\ndata: {not json\n\n"


_THOUGHT: Final = "Which tool answers this best?"


def _thinking_block(signature: str) -> bytes:
    """A whole thinking block at index 0, as Anthropic streams one: text, then signature."""
    events = (
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "thinking_delta", "thinking": _THOUGHT}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "signature_delta", "signature": signature}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    )
    return b"".join(b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n"
                    for name, obj in events)


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    fallback = ("api_error" if status >= 500 else "invalid_request_error", "Error.")
    kind, default = _ERRORS.get(status, fallback)
    text = f"{message or default} (simulated by arouter sim)"
    return {"type": "error", "error": {"type": kind, "message": text}}


def error(status: int, message: str | None = None, retry_after: int | None = None) -> Answer:
    headers: Headers = (("content-type", "application/json"),)
    if retry_after is not None:
        headers = (*headers, ("retry-after", str(retry_after)))
    return Answer(status, dumps(_error_body(status, message)), headers)


def _usage(input_tokens: int, output_tokens: int, cache: int, hit: bool) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` leaves out what was read from or written to the
    prompt cache."""
    return {
        "input_tokens": input_tokens - cache,
        "cache_creation_input_tokens": 0 if hit else cache,
        "cache_read_input_tokens": cache if hit else 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _marked(value: Any) -> bool:
    """Whether a body holds a ``cache_control`` marker anywhere."""
    if isinstance(value, dict):
        return "cache_control" in value or any(_marked(v) for v in value.values())
    if isinstance(value, list):
        return any(_marked(v) for v in value)
    return False


@attrs.frozen
class _Events:
    """One request's answer in Messages events; a token costs one escape and a join."""

    message_id: str
    model: str
    prompt_tokens: int
    usage: bool  # usage is reported at all
    cache_tokens: int = 0  # of ``prompt_tokens``, behind a cache marker
    cache_hit: bool = False
    thinking: bool = False  # a thinking block (with its signature) comes first

    @property
    def _signature(self) -> str:
        return "EqSim" + self.message_id.removeprefix("msg_sim")

    def _after_thinking(self, events: bytes) -> bytes:
        """``events`` of the block that would be first, moved behind the thinking block."""
        return events.replace(b'"index":0', b'"index":1') if self.thinking else events

    def _content(self, blocks: list[Any]) -> list[Any]:
        if not self.thinking:
            return blocks
        return [{"type": "thinking", "thinking": _THOUGHT, "signature": self._signature},
                *blocks]

    stream_headers: Headers = _SSE_HEADERS
    midstream_status: int = _MIDSTREAM_STATUS

    @classmethod
    def render(cls, model: str, prompt_tokens: int, cache: tuple[int, bool], thinking: bool,
               record_id: int, usage: bool) -> _Events:
        return cls(f"msg_sim{record_id}", model, prompt_tokens, usage, *cache, thinking)

    def _message(self, content: list[Any], stop_reason: str | None, output: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        if self.usage:
            message["usage"] = _usage(self.prompt_tokens, output, self.cache_tokens,
                                      self.cache_hit)
        return message

    def _message_start(self) -> bytes:
        # As Anthropic does, message_start counts one output token before any is sent.
        start = {"type": "message_start", "message": self._message([], None, 1)}
        return b"event: message_start\ndata: " + dumps(start) + b"\n\n"

    def _thinking_first(self) -> bytes:
        return _thinking_block(self._signature) if self.thinking else b""

    def opening(self) -> bytes:
        return (self._message_start() + self._thinking_first()
                + self._after_thinking(_BLOCK_START))

    def token(self, text: str) -> bytes:
        return self._after_thinking(_TOKEN_OPEN) + json_string(text) + _TOKEN_CLOSE

    def closing(self, finish: Finish, usage: Counted) -> bytes:
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS[finish], "stop_sequence": None},
        }
        if self.usage:
            delta["usage"] = {"output_tokens": usage.completion}
        return (
            self._after_thinking(_BLOCK_STOP) + b"event: message_delta\ndata: " + dumps(delta)
            + b"\n\n" + _MESSAGE_STOP
        )

    def error_event(self) -> bytes:
        return b"event: error\ndata: " + dumps(_error_body(self.midstream_status)) + b"\n\n"

    def malformed_event(self) -> bytes:
        return _MALFORMED_EVENT

    def whole(self, text: str, finish: Finish, usage: Counted) -> Answer:
        content = self._content([{"type": "text", "text": text}])
        return Answer(200, dumps(self._message(content, _STOP_REASONS[finish], usage.completion)))

    @property
    def _tool_use_id(self) -> str:
        return "toolu_" + self.message_id.removeprefix("msg_")

    def tool_stream(self, name: str, fragments: Sequence[str], usage: Counted) -> list[bytes]:
        # As Anthropic streams a call: a tool_use block with an empty input, an empty
        # input_json_delta, one per fragment, then the usual ends with stop_reason tool_use.
        block = {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": self._tool_use_id, "name": name, "input": {}}}
        start = self._message_start() + self._thinking_first() + self._after_thinking(
            b"event: content_block_start\ndata: " + dumps(block)
            + b"\n\n" + _PING + _INPUT_OPEN + b'""' + _TOKEN_CLOSE
        )
        delta = self._after_thinking(_INPUT_OPEN)
        pieces = [delta + json_string(part) + _TOKEN_CLOSE for part in fragments] or [b""]
        pieces[0] = start + pieces[0]
        pieces[-1] += self.closing("tool_calls", usage)
        return pieces

    def tool_whole(self, name: str, fragments: Sequence[str], usage: Counted) -> Answer:
        content = self._content([{"type": "tool_use", "id": self._tool_use_id, "name": name,
                                  "input": json.loads("".join(fragments))}])
        message = self._message(content, _STOP_REASONS["tool_calls"], usage.completion)
        return Answer(200, dumps(message))

    def error(self, status: int, retry_after: int | None = None) -> Answer:
        return error(status, None, retry_after)


def _tool_results(message: Mapping[str, Any]) -> bool:
    """Whether a message carries a tool_result block."""
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def _credential(request: Request) -> str | None:
    key = request.header("x-api-key")
    return key if key is not None else bearer(request)


def _thinks(thinking: object) -> bool:
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _schema(config: object) -> Mapping[str, object] | None:
    """``output_config.format``: {type: json_schema, schema}."""
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    return None


def read(request: Request, defaults: Plan) -> tuple[Asked, Render]:
    data = json_object(
        request.body,
        "There was an error parsing the body of your request: not valid JSON.",
        "The request body must be a JSON object.",
    )
    model, max_tokens, messages = data.get("model"), data.get("max_tokens"), data.get("messages")
    for name, value in (("model", model), ("max_tokens", max_tokens), ("messages", messages)):
        if value is None:
            raise BadRequest(f"{name}: Field required")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Input should be a non-empty string")
    if type(max_tokens) is not int or max_tokens < 1:
        raise BadRequest("max_tokens: Input should be an integer greater than or equal to 1")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: Input should be a valid list of objects")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: Input should be a valid boolean")
    system = data.get("system")
    if not isinstance(system, str | list | None):
        raise BadRequest("system: Input should be a valid string or list of text blocks")
    tools = data.get("tools")
    if not isinstance(tools, list | None):
        raise BadRequest("tools: Input should be a valid list")
    # A turn that only returns tool results carries no prompt: the directive stays in the
    # user's message that asked for the call.
    users = [m for m in messages if m.get("role") == "user"
             and (text_of(m.get("content")) or not _tool_results(m))]
    prompt = text_of(users[-1].get("content")) if users else ""
    everything = text_of(system) + "".join(text_of(m.get("content")) for m in messages)
    call = Asked(
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        prompt=prompt,
        prompt_tokens=prompt_tokens(everything),
        plan=plan_of(prompt, defaults),
        tools=tuple(t["name"] for t in tools or ()
                    if isinstance(t, dict) and isinstance(t.get("name"), str)),
        tool_result=any(_tool_results(m) for m in messages if m.get("role") == "user"),
        schema=_schema(data.get("output_config")),
        # A fake has no memory: with a cache marker anywhere, every prompt token but one
        # is the cached prefix, read or written as the directive says.
        cache_tokens=max(0, prompt_tokens(everything) - 1) if _marked(data) else 0,
        thinking=_thinks(data.get("thinking")),
    )
    cache = (call.cache_tokens, call.plan.cache_hit)
    return call, functools.partial(_Events.render, model, call.prompt_tokens, cache,
                                   call.thinking)


DIALECT: Final = Dialect(
    name="anthropic",
    serves=lambda path: path == PATH,
    read=read,
    credential=_credential,
    error=error,
)


COUNT_PATH: Final = "/v1/messages/count_tokens"


def count(request: Request) -> Answer:
    """``POST /v1/messages/count_tokens``: the prompt's tokens, as the simulator counts
    them (what its answers report as input tokens)."""
    try:
        data = json_object(request.body, "not valid JSON", "not a JSON object")
    except BadRequest as exc:
        return error(400, str(exc))
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return error(400, "messages: Input should be a valid list of objects")
    if "max_tokens" in data:
        return error(400, "max_tokens: Extra inputs are not permitted")
    everything = text_of(data.get("system")) + "".join(text_of(m.get("content"))
                                                       for m in messages)
    return Answer(200, dumps({"input_tokens": prompt_tokens(everything)}))
