"""The Responses API toward an upstream that serves it itself (``responses = "native"``):
the client's body out, and what the relay needs from the answer's events.

``upstream_body`` is the client's body with our model, the conversation a
``previous_response_id`` named written out as input items (the upstream never saw our
ids), and the upstream told to store nothing (the gateway keeps the conversation) while
returning reasoning's encrypted content (so the items can come back). ``parse_event`` and
``parse_whole`` give the relay the canonical events inside (text, reasoning, calls,
usage, the end); the bytes go to the client as sent (``render.StreamEncoder.frame``).

Rules: pure; an upstream's event is untrusted: a malformed one is an
``UpstreamProtocolError``, an error one an ``UpstreamError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.wire.jsonbody import is_int, upstream_object
from gateway.wire.responses.render import input_items

ENDS = ("response.completed", "response.incomplete")


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    body = {k: v for k, v in request.raw.items() if k != "previous_response_id"}
    if request.history:
        body["input"] = [*request.history, *input_items(request.raw.get("input"), "x")]
    include = list(body.get("include") or [])
    if "reasoning.encrypted_content" not in include:
        include.append("reasoning.encrypted_content")
    body.update(model=model, store=False, include=include)
    return body


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream response has no usage")
    prompt, completion = raw.get("input_tokens"), raw.get("output_tokens")
    if not (is_int(prompt) and is_int(completion)):
        raise UpstreamProtocolError("upstream usage is malformed")
    details = raw.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    out = raw.get("output_tokens_details")
    reasoning = out.get("reasoning_tokens") if isinstance(out, dict) else 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 cached_tokens=cached if is_int(cached) else 0,
                 reasoning_tokens=reasoning if is_int(reasoning) else 0)


def _failure(response: Mapping[str, Any]) -> UpstreamError:
    error = response.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return UpstreamError(f"upstream response failed: {message}" if isinstance(message, str)
                         else "upstream response failed")


def _end(response: Any) -> list[StreamEvent]:
    if not isinstance(response, dict):
        raise UpstreamProtocolError("upstream end event has no response")
    if response.get("status") == "failed":
        raise _failure(response)
    incomplete = response.get("incomplete_details")
    reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
    finish: FinishReason = "length" if reason == "max_output_tokens" else (
        "content_filter" if reason == "content_filter" else "stop")
    if any(isinstance(i, dict) and i.get("type") == "function_call"
           for i in response.get("output") or []):
        finish = "tool_calls"
    return [Finish(finish), UsageReport(_usage(response.get("usage")))]


def parse_event(obj: Mapping[str, Any]) -> list[StreamEvent]:
    """The canonical events in one upstream Responses event."""
    kind = obj.get("type")
    if kind == "error":
        message = obj.get("message")
        raise UpstreamError(f"upstream reported an error: {message}" if isinstance(
            message, str) else "upstream reported an error")
    if kind == "response.failed":
        response = obj.get("response")
        raise _failure(response if isinstance(response, dict) else {})
    if kind in ENDS:
        return _end(obj.get("response"))
    delta = obj.get("delta")
    if not isinstance(delta, str) or not delta:
        return []
    if kind == "response.output_text.delta":
        return [TextDelta(delta)]
    if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        return [ReasoningDelta(delta)]
    if kind == "response.function_call_arguments.delta":
        index = obj.get("output_index")
        return [ToolCallDelta(index if is_int(index) else 0, arguments=delta)]
    return []  # everything else (items opening, built-in tools at work) says nothing new


def parse_whole(body: bytes | dict[str, Any]) -> list[StreamEvent]:
    """The events a whole upstream ``response`` object holds."""
    response = upstream_object(body, "an answer")
    if response.get("error") is not None and response.get("status") == "failed":
        raise _failure(response)
    out: list[StreamEvent] = []
    for index, item in enumerate(response.get("output") or []):
        if not isinstance(item, dict):
            raise UpstreamProtocolError("upstream output item is not an object")
        if item.get("type") == "message":
            for part in item.get("content") or []:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str) and text:
                    out.append(TextDelta(text))
        elif item.get("type") == "function_call":
            arguments = item.get("arguments")
            out.append(ToolCallDelta(index, item.get("call_id"), item.get("name"),
                                     arguments if isinstance(arguments, str) else ""))
        elif item.get("type") == "reasoning":
            for part in item.get("summary") or []:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str) and text:
                    out.append(ReasoningDelta(text))
    return out + _end(response)
