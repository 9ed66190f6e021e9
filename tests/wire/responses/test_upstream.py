"""A provider that serves the Responses API itself: the body it gets, the events the relay
reads from its answer, and the encoder relaying its events as sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.canonical import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage, UsageReport
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.wire.responses.render import StreamEncoder
from gateway.wire.responses.request import parse_request
from gateway.wire.responses.upstream import parse_event, parse_whole, upstream_body
from gateway.wire.sse import Decoder

USAGE = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
         "input_tokens_details": {"cached_tokens": 1},
         "output_tokens_details": {"reasoning_tokens": 2}}


def test_the_body_writes_out_the_conversation_and_stores_nothing_upstream() -> None:
    history = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "first"}]}]
    request = parse_request({"model": "public", "input": "second", "previous_response_id": "r",
                             "tools": [{"type": "web_search_preview"}]}, history)
    body = upstream_body(request, "up")
    assert body["model"] == "up" and body["store"] is False
    assert "previous_response_id" not in body
    assert body["include"] == ["reasoning.encrypted_content"]
    assert [i["content"][0]["text"] for i in body["input"]] == ["first", "second"]
    assert body["tools"] == [{"type": "web_search_preview"}]


def test_events_the_relay_reads() -> None:
    assert parse_event({"type": "response.output_text.delta", "delta": "hi"}) == [
        TextDelta("hi")]
    assert parse_event({"type": "response.reasoning_summary_text.delta", "delta": "t"}) == [
        ReasoningDelta("t")]
    assert parse_event({"type": "response.function_call_arguments.delta", "delta": "{",
                        "output_index": 2}) == [ToolCallDelta(2, arguments="{")]
    assert parse_event({"type": "response.web_search_call.searching"}) == []
    assert parse_event({"type": "response.completed", "response": {
        "status": "completed", "output": [], "usage": USAGE}}) == [
        Finish("stop"), UsageReport(Usage(prompt_tokens=5, completion_tokens=3,
                                          cached_tokens=1, reasoning_tokens=2))]
    with pytest.raises(UpstreamError):
        parse_event({"type": "response.failed", "response": {"error": {"message": "x"}}})
    with pytest.raises(UpstreamError):
        parse_event({"type": "error", "message": "boom"})
    with pytest.raises(UpstreamProtocolError):
        parse_event({"type": "response.completed", "response": {"usage": {}}})


def test_a_whole_answer_s_events() -> None:
    events = parse_whole({"status": "incomplete", "usage": USAGE,
                          "incomplete_details": {"reason": "max_output_tokens"},
                          "output": [{"type": "message", "content": [
                              {"type": "output_text", "text": "hi"}]}]})
    assert events[0] == TextDelta("hi") and Finish("length") in events


def test_the_encoder_relays_a_native_stream_with_our_id_and_model() -> None:
    encoder = StreamEncoder("gen-abc", parse_request({"model": "public", "input": "hi"}), 1)
    encoder.start()  # ours, replaced by the upstream's while unsent (the relay's part)
    upstream: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": 0, "response": {
            "id": "resp_up", "model": "up", "status": "in_progress", "output": [],
            "service_tier": "default"}},
        {"type": "response.in_progress", "sequence_number": 1, "response": {"id": "resp_up"}},
        {"type": "response.web_search_call.searching", "sequence_number": 2,
         "item_id": "ws_1", "output_index": 0},
        {"type": "response.completed", "sequence_number": 3, "response": {
            "id": "resp_up", "model": "up", "status": "completed", "output": [],
            "usage": USAGE}},
    ]
    out = b""
    for obj in upstream:
        out += encoder.frame(obj["type"], json.dumps(obj), obj)
        out += encoder.start()  # the relay's part (``Exchange._reopen``): the new opening
    out += encoder.tail(Usage(), None)
    events = [(e.event, json.loads(e.data)) for e in Decoder().feed(out)]
    assert [name for name, _ in events] == [
        "response.created", "response.in_progress", "response.web_search_call.searching",
        "response.completed"]
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert (created["id"], created["model"], created["service_tier"]) == (
        "resp_abc", "public", "default")
    assert (completed["id"], completed["model"]) == ("resp_abc", "public")
    assert events[2][1] == upstream[2]  # as sent
    assert encoder.response == completed  # what the route stores
