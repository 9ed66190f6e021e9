"""What a Responses API client receives: the event sequence and the ``response`` object.

Pure: canonical events in, bytes out, read back with the official ``openai`` SDK's own
types (every event validated as ``ResponseStreamEvent``, the response as ``Response``).
"""

from __future__ import annotations

import json
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.canonical import (
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from gateway.errors import UpstreamError
from gateway.wire.responses.render import (
    StreamEncoder,
    answer_events,
    render_response,
    response_id,
)
from gateway.wire.responses.request import parse_request
from gateway.wire.signatures import from_client
from gateway.wire.sse import Decoder

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
USAGE = Usage(prompt_tokens=7, completion_tokens=5, reasoning_tokens=2)


def request(**fields: Any) -> Any:
    return parse_request({"model": "m", "input": "hi", **fields})


def stream(events: list[StreamEvent], **fields: Any) -> tuple[list[Any], StreamEncoder]:
    encoder = StreamEncoder("gen-abc", request(**fields), 1700000000)
    out = encoder.start()
    for event in events:
        out += encoder.event(event)
    out += encoder.tail(USAGE, None)
    decoded = Decoder().feed(out)
    parsed = [EVENT.validate_python(json.loads(e.data)) for e in decoded]
    assert [e.event for e in decoded] == [p.type for p in parsed]  # event: lines agree
    return parsed, encoder


def test_a_text_stream_is_the_documented_sequence() -> None:
    events, encoder = stream([TextDelta("Hel"), TextDelta("lo"), Finish("stop")])
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.id == response_id("gen-abc") == "resp_abc"
    assert final.status == "completed" and final.output_text == "Hello"
    assert final.usage.output_tokens_details.reasoning_tokens == 2
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    Response.model_validate(encoder.response)


def test_calls_and_reasoning_are_items_of_their_own() -> None:
    events, encoder = stream([
        ReasoningDelta("think"), ReasoningSignature("sig", "anthropic"),
        ToolCallDelta(0, "call_1", "f", '{"a":'), ToolCallDelta(1, "call_2", "g", "{}"),
        ToolCallDelta(0, arguments="1}"), Finish("tool_calls")],
        reasoning={"summary": "auto"})
    final = events[-1].response
    reasoning, first, second = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "think"
    assert from_client(reasoning.encrypted_content, "responses") == ("sig", "anthropic")
    assert (first.call_id, first.name, first.arguments) == ("call_1", "f", '{"a":1}')
    assert (second.call_id, second.arguments) == ("call_2", "{}")
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert deltas == ['{"a":', "{}", "1}"]  # the late one goes to its own item
    assert {e.item_id for e in events if e.type.startswith("response.function_call")} == {
        first.id, second.id}
    # The response object's items come back as a next turn's input, as they are.
    again = parse_request({"model": "m", "input": [
        {"role": "user", "content": "hi"}, *encoder.response["output"],
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
        {"type": "function_call_output", "call_id": "call_2", "output": "ok"}]})
    assistant = again.messages[1]
    assert (assistant.reasoning, assistant.signature, assistant.signed_by) == (
        "think", "sig", "anthropic")
    assert [c.id for c in assistant.tool_calls] == ["call_1", "call_2"]


def test_reasoning_text_is_left_out_unless_a_summary_was_asked_for() -> None:
    events, _ = stream([ReasoningDelta("secret"), ReasoningSignature("sig", "gemini"),
                        TextDelta("hi")])
    reasoning = events[-1].response.output[0]
    assert reasoning.summary == [] and reasoning.encrypted_content
    assert not any(e.type.startswith("response.reasoning_summary") for e in events)


def test_encrypted_reasoning_is_an_item_its_writer_gets_back() -> None:
    events, _ = stream([RedactedReasoning("opaque", "anthropic"), TextDelta("hi")])
    item = events[-1].response.output[0]
    assert from_client(item.encrypted_content, "responses") == ("redacted:opaque",
                                                                 "anthropic")


def test_a_cut_output_is_incomplete_and_an_error_is_failed() -> None:
    events, _ = stream([TextDelta("x"), Finish("length")])
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    encoder = StreamEncoder("gen-abc", request(), 1)
    out = encoder.start() + encoder.event(TextDelta("x")) + encoder.error(
        UpstreamError("upstream connection closed unexpectedly"), USAGE)
    last = EVENT.validate_python(json.loads(Decoder().feed(out)[-1].data))
    assert last.type == "response.failed" and last.response.status == "failed"
    assert last.response.error.message == "upstream connection closed unexpectedly"


def test_a_whole_answer_is_the_object_its_stream_would_end_with() -> None:
    calls = [ToolCall("call_1", "f", "{}")]
    whole = render_response("gen-abc", request(reasoning={"summary": "auto"}), 1700000000,
                            answer_events("Hi", "think", calls, "tool_calls", "sig", (),
                                          "anthropic"), USAGE)
    events, _ = stream([ReasoningDelta("think"), ReasoningSignature("sig", "anthropic"),
                        TextDelta("Hi"), ToolCallDelta(0, "call_1", "f", "{}"),
                        Finish("tool_calls")], reasoning={"summary": "auto"})
    assert Response.model_validate(whole) == events[-1].response
