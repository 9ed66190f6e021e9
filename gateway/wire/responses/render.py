"""OpenAI Responses API, client answers: the streamed event sequence and the whole
``response`` object.

``StreamEncoder`` renders canonical events as Responses events (``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``, ``response.function_call_arguments.delta``,
``response.reasoning_summary_text.delta``, the ``.done`` events, then
``response.completed``, ``response.incomplete`` or ``response.failed``), each numbered by
``sequence_number``, and keeps the ``response`` object they build. ``render_response``
runs the same encoder over a whole answer's events, so a whole answer and a stream agree
item for item.

A provider that serves this API itself (``responses = "native"``) has its events relayed
as sent instead (``frame``): its ``response.created`` becomes the opening and its terminal
event the end, with our id and model.

Rules:
- Pure: no sockets, no clock (``created_at`` is given), no globals but constant tables.
- Reasoning goes out as a ``reasoning`` item: its text as the summary when the client asked
  for one (``reasoning.summary``), its signature as ``encrypted_content`` always (the client
  sends the item back and the provider that wrote it reads it: ``wire/signatures.py``).
- Function-call items stay open while calls stream (an upstream may interleave them) and
  close together, before any other item opens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.errors import GatewayError
from gateway.wire.openai.render import error_body as error_body
from gateway.wire.responses.request import DIALECT, REDACTED
from gateway.wire.signatures import for_client
from gateway.wire.sse import KEEPALIVE

_EVENT_NAME = re.compile(r"[a-z][a-z0-9_.]{0,79}")
# Why a response ended short of complete, in the Responses API's words.
INCOMPLETE: dict[FinishReason, str] = {"length": "max_output_tokens",
                                       "content_filter": "content_filter"}


def response_id(generation_id: str) -> str:
    """The response's id: the generation's, in the Responses API's form (``resp_``)."""
    return "resp_" + generation_id.removeprefix("gen-")


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                 "cache_write_tokens": usage.cache_write_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _echo(request: ChatRequest) -> dict[str, Any]:
    """The request's own settings, as the response object repeats them."""
    raw = request.raw
    reasoning = raw.get("reasoning") or {}
    return {
        "instructions": raw.get("instructions"),
        "max_output_tokens": raw.get("max_output_tokens"),
        "metadata": raw.get("metadata") or {},
        "parallel_tool_calls": raw.get("parallel_tool_calls", True),
        "previous_response_id": raw.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": raw.get("store", True),
        "temperature": raw.get("temperature", 1.0),
        "text": {"format": (raw.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": raw.get("tool_choice", "auto"),
        "tools": raw.get("tools") or [],
        "top_p": raw.get("top_p", 1.0),
        "truncation": "disabled",
        "user": raw.get("user"),
    }


class StreamEncoder:
    """Renders canonical events as Responses events (an ``Encoder``, see
    ``wire/encoder.py``); ``response`` is the object they describe, complete after ``tail``
    or ``error``."""

    keepalive: bytes = KEEPALIVE
    # An upstream that serves this API itself (``responses = "native"``): its events come
    # by ``frame`` and go out as sent, but for our id and model in the response objects.
    splices: str | None = "responses"

    def __init__(self, generation_id: str, request: ChatRequest, created_at: int) -> None:
        self._hex = generation_id.removeprefix("gen-")
        # Reasoning text goes out only as a summary the client asked for.
        self._summaries = request.reasoning is not None and request.reasoning.include is True
        self.response: dict[str, Any] = {
            "id": response_id(generation_id), "object": "response", "created_at": created_at,
            "status": "in_progress", "error": None, "incomplete_details": None,
            "model": request.model, "output": [], "usage": None, **_echo(request),
        }
        self._seq = 0
        self._started = False
        self._item: dict[str, Any] | None = None  # the open message or reasoning item
        self._calls: dict[int, dict[str, Any]] = {}  # tool call index -> its open item
        self._finish: FinishReason | None = None
        self._count = 0  # items opened, for their ids
        self._end: dict[str, Any] | None = None  # a native upstream's terminal event

    # -- framing ------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return f"event: {kind}\ndata: {data}\n\n".encode()

    def _snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = json.loads(json.dumps(self.response))
        return snapshot  # as it is now, not as it will be

    def rename(self, model: str) -> None:
        self.response["model"] = model
        self._started = False  # the opening names the model: it is rendered anew

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._seq = 0
        snapshot = self._snapshot()
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    # -- items --------------------------------------------------------------------------

    def _open(self, item: dict[str, Any]) -> bytes:
        output = self.response["output"]
        output.append(item)
        self._count += 1
        return self._event("response.output_item.added", output_index=len(output) - 1,
                           item=dict(item, **({"content": []} if "content" in item else {}),
                                     **({"summary": []} if "summary" in item else {})))

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, x in enumerate(self.response["output"]) if x is item)

    def _close_item(self) -> bytes:
        item, self._item = self._item, None
        if item is None:
            return b""
        at = self._index(item)
        out = b""
        if item["type"] == "message":
            part = item["content"][0]
            out += self._event("response.output_text.done", item_id=item["id"],
                               output_index=at, content_index=0, text=part["text"],
                               logprobs=[])
            out += self._event("response.content_part.done", item_id=item["id"],
                               output_index=at, content_index=0, part=part)
        elif item["summary"]:
            part = item["summary"][0]
            out += self._event("response.reasoning_summary_text.done", item_id=item["id"],
                               output_index=at, summary_index=0, text=part["text"])
            out += self._event("response.reasoning_summary_part.done", item_id=item["id"],
                               output_index=at, summary_index=0, part=part)
        item["status"] = "completed"
        return out + self._event("response.output_item.done", output_index=at, item=item)

    def _close_calls(self) -> bytes:
        out = b""
        for item in self._calls.values():
            item["status"] = "completed"
            at = self._index(item)
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=at, arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=at, item=item)
        self._calls.clear()
        return out

    def _message(self) -> bytes:
        if self._item is not None and self._item["type"] == "message":
            return b""
        out = self._close_calls() + self._close_item()
        part = {"type": "output_text", "text": "", "annotations": []}
        item = self._item = {"id": f"msg_{self._hex}_{self._count}", "type": "message",
                             "status": "in_progress", "role": "assistant", "content": [part]}
        out += self._open(item)
        return out + self._event("response.content_part.added", item_id=item["id"],
                                 output_index=self._index(item), content_index=0,
                                 part=dict(part))

    def _reasoning(self) -> bytes:
        if self._item is not None and self._item["type"] == "reasoning":
            return b""
        out = self._close_calls() + self._close_item()
        self._item = {"id": f"rs_{self._hex}_{self._count}", "type": "reasoning",
                      "summary": []}
        return out + self._open(self._item)

    # -- events -------------------------------------------------------------------------

    def event(self, event: StreamEvent) -> bytes:
        out = self.start()
        if isinstance(event, TextDelta) and event.text:
            out += self._message()
            item = self._item
            assert item is not None
            item["content"][0]["text"] += event.text
            return out + self._event("response.output_text.delta", item_id=item["id"],
                                     output_index=self._index(item), content_index=0,
                                     delta=event.text, logprobs=[])
        if isinstance(event, ReasoningDelta) and event.text:
            if not self._summaries:
                return out + self._reasoning()  # the item, for its signature
            out += self._reasoning()
            item = self._item
            assert item is not None
            at = self._index(item)
            if not item["summary"]:
                item["summary"].append({"type": "summary_text", "text": ""})
                out += self._event("response.reasoning_summary_part.added",
                                   item_id=item["id"], output_index=at, summary_index=0,
                                   part={"type": "summary_text", "text": ""})
            item["summary"][0]["text"] += event.text
            return out + self._event("response.reasoning_summary_text.delta",
                                     item_id=item["id"], output_index=at, summary_index=0,
                                     delta=event.text)
        if isinstance(event, ReasoningSignature):
            out += self._reasoning()
            assert self._item is not None
            self._item["encrypted_content"] = for_client(event.signature, event.by, DIALECT)
            return out + self._close_item()  # a signature ends its reasoning block
        if isinstance(event, RedactedReasoning):
            out += self._close_calls() + self._close_item()
            self._item = {"id": f"rs_{self._hex}_{self._count}", "type": "reasoning",
                          "summary": [],
                          "encrypted_content": for_client(REDACTED + event.data, event.by,
                                                          DIALECT)}
            return out + self._open(self._item) + self._close_item()
        if isinstance(event, ToolCallDelta):
            item = self._calls.get(event.index)
            if item is None:
                out += self._close_item()
                item = self._calls[event.index] = {
                    "id": f"fc_{self._hex}_{self._count}", "type": "function_call",
                    "status": "in_progress",
                    "call_id": event.id or f"call_{self._hex}_{event.index}",
                    "name": event.name or "", "arguments": ""}
                out += self._open(item)
            if event.arguments:
                item["arguments"] += event.arguments
                out += self._event("response.function_call_arguments.delta",
                                   item_id=item["id"], output_index=self._index(item),
                                   delta=event.arguments)
            return out
        if isinstance(event, Finish):
            self._finish = event.reason
        return out  # usage comes once, with the terminal event

    def tail(self, usage: Usage, finish: FinishReason | None) -> bytes:
        """Close what is open, then ``response.completed`` (or ``response.incomplete`` when
        the output was cut by its cap or a filter) with the whole response and its usage."""
        if self._end is not None:  # a native upstream's own end, with our id and model
            end = json.dumps(self._end, ensure_ascii=False, separators=(",", ":"))
            return self.start() + f"event: {self._end['type']}\ndata: {end}\n\n".encode()
        out = self.start() + self._close_calls() + self._close_item()
        reason = INCOMPLETE.get(finish or self._finish or "stop")
        self.response["usage"] = usage_json(usage)
        if reason is None:
            self.response["status"] = "completed"
            return out + self._event("response.completed", response=self.response)
        self.response["status"] = "incomplete"
        self.response["incomplete_details"] = {"reason": reason}
        return out + self._event("response.incomplete", response=self.response)

    def error(self, error: GatewayError, usage: Usage) -> bytes:
        """``response.failed``: the response as far as it got, its error and usage."""
        # The API's codes are a closed set: ours (upstream_error, timeout, ...) rides along.
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        self.response.update(status="failed", usage=usage_json(usage),
                             error={"code": code, "message": error.message,
                                    "type": error.type})
        return self.start() + self._event("response.failed", response=self.response)

    def splice(self, data: str, at: int) -> bytes:
        raise NotImplementedError("a native upstream's events come by frame")

    def _ours(self, response: Any) -> dict[str, Any]:
        given = response if isinstance(response, dict) else {}
        return {**given, "id": self.response["id"], "model": self.response["model"]}

    def frame(self, kind: str | None, data: str, obj: dict[str, Any]) -> bytes:
        """One event of a native upstream: its ``response.created`` becomes our opening
        (rendered anew), ``response.in_progress`` is ours already, the terminal event waits
        for ``tail``; the rest goes out as sent."""
        name = obj.get("type", kind)
        if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
            return b""  # an event name is never free text
        if name == "response.created":
            self.response = self._ours(obj.get("response"))
            self._started = False
            return b""
        if name == "response.in_progress":
            return b""
        if name in ("response.completed", "response.incomplete", "response.failed"):
            self.response = self._ours(obj.get("response"))
            self._end = {**obj, "response": self.response}
            return b""
        if "\n" in data:
            data = data.replace("\n", "\ndata: ")
        return f"event: {name}\ndata: {data}\n\n".encode()


def answer_events(text: str, reasoning: str, tool_calls: list[ToolCall], finish: FinishReason,
                  signature: str = "", redacted: tuple[str, ...] = (),
                  signed_by: str = "") -> list[StreamEvent]:
    """A whole answer as the events a stream of it would carry, in the order a provider
    sends them: reasoning and its signature, encrypted reasoning, text, calls, finish."""
    events: list[StreamEvent] = []
    if reasoning:
        events.append(ReasoningDelta(reasoning))
    if signature:
        events.append(ReasoningSignature(signature, signed_by))
    events += [RedactedReasoning(data, signed_by) for data in redacted]
    if text:
        events.append(TextDelta(text))
    events += [ToolCallDelta(i, call.id, call.name, call.arguments)
               for i, call in enumerate(tool_calls)]
    return [*events, Finish(finish)]


def render_response(generation_id: str, request: ChatRequest, created_at: int,
                    events: list[StreamEvent], usage: Usage) -> dict[str, Any]:
    """A whole ``response`` object: the one a stream of ``events`` would end with."""
    encoder = StreamEncoder(generation_id, request, created_at)
    for event in events:
        encoder.event(event)
    encoder.tail(usage, None)
    return encoder.response


def public(response: Mapping[str, Any]) -> bytes:
    return json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode()


# Id prefixes of input items, by type, as OpenAI names its own.
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                "reasoning": "rs"}


def input_items(raw: Any, response: str) -> list[dict[str, Any]]:
    """A request's ``input`` as the items ``GET /v1/responses/{id}/input_items`` lists and a
    next turn continues from: the string form as a user message, each item with an id."""
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": raw}]}]
    items = []
    for n, given in enumerate(raw if isinstance(raw, list) else []):
        item = dict(given)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        item.setdefault("id", f"{_ITEM_PREFIX.get(kind, 'item')}_{response}_in{n}")
        items.append(item)
    return items


def relay_whole(answer: dict[str, Any], generation_id: str, model: str,
                usage: Usage) -> bytes:
    """A native upstream's whole ``response``, as sent but for our id and model."""
    return public({**answer, "id": response_id(generation_id), "model": model,
                   "usage": answer.get("usage") or usage_json(usage)})
