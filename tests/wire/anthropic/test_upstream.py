"""The Anthropic upstream side: the bodies sent to Anthropic providers (from any client
dialect), and their streams and whole messages read back as canonical events.

Pure: canonical values and bytes in, dicts and canonical events out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import RequestError, UpstreamError, UpstreamProtocolError, UpstreamStatusError
from gateway.wire.anthropic.render import StreamEncoder, render_message
from gateway.wire.anthropic.request import parse_request
from gateway.wire.anthropic.upstream import (
    StreamParser,
    parse_message,
    upstream_body,
    upstream_error,
)
from gateway.wire.openai import request as openai_request
from tests.support.wire_anthropic import MODEL, PASSTHROUGH_VALUES, body, encode, sse_events

# ---------------------------------------------------------------------------------------
# upstream_body

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


FULL_CLIENT_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Be kind."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these images?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.test/c.jpg"}},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}},
            {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "dog"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "dog"}]},
            {"type": "text", "text": "Summarise."},
        ]},
        {"role": "assistant", "content": "A cat and a dog."},
        {"role": "user", "content": "Thanks"},
    ],
    "stream": True,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop_sequences": ["END"],
    "tools": [{"name": "lookup", "description": "Look it up", "input_schema": SCHEMA},
              {"name": "strict_one", "input_schema": {"type": "object"}, "strict": True}],
    "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
    "metadata": {"user_id": "u-1"},
    **PASSTHROUGH_VALUES,
}


def test_upstream_body_round_trips_what_parse_request_accepted() -> None:
    sent = upstream_body(parse_request(FULL_CLIENT_BODY), "claude-sonnet-4-5")
    assert sent == dict(FULL_CLIENT_BODY, model="claude-sonnet-4-5")
    assert json.loads(json.dumps(sent)) == sent  # plain JSON types only


def test_an_anthropic_client_s_body_goes_as_sent_but_for_the_model() -> None:
    assert upstream_body(parse_request(body()), "m") == dict(body(), model="m")
    full = body(**PASSTHROUGH_VALUES, brand_new_field=[1], system=[
        {"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    assert upstream_body(parse_request(full), "m") == dict(full, model="m")


def translated(request: ChatRequest) -> dict[str, Any]:
    """The body built for a client of another dialect (the canonical request alone)."""
    return upstream_body(attrs.evolve(request, dialect="openai", raw={}), "m")


def test_what_the_canonical_model_cannot_hold_is_left_out_of_a_translation() -> None:
    # (fidelity.py refuses such a request for another dialect's client, unless the operator
    # allowed dropping what it names: this is what such a client's upstream gets then.)
    client = body(messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x",
                                           "signature": "s"}, {"type": "text", "text": "yo"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "d"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "is_error": True, "content": "boom"}]},
    ])
    assert translated(parse_request(client))["messages"] == [
        {"role": "user", "content": "hi"},
        # Thinking Anthropic wrote goes back to Anthropic, signed.
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "x", "signature": "s"},
            {"type": "text", "text": "yo"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "d"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "boom", "is_error": True}]},
    ]


OPENAI_CLIENT_BODY: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look"},
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg==",
                                                "detail": "low"}},
        ]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q":"cat"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "developer", "content": "Still terse."},
        {"role": "user", "content": "So?"},
        {"role": "assistant", "content": None},
        {"role": "user", "name": "bob", "content": "Hello?"},
    ],
    "temperature": 1.7,
    "stop": "END",
    "user": "u-9",
    "seed": 3,
    "tools": [{"type": "function", "function": {"name": "lookup"}}],
    "tool_choice": "required",
    "logprobs": True,
    "parallel_tool_calls": False,
}


def test_an_openai_client_request_becomes_a_valid_anthropic_body() -> None:
    sent = upstream_body(openai_request.parse_request(OPENAI_CLIENT_BODY), "claude")
    assert sent == {
        "model": "claude",
        "max_tokens": 4096,  # Anthropic requires it; OpenAI clients may leave it out
        "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Still terse."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp",
                                             "data": "UklGRg=="}},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
                {"type": "text", "text": "So?"},
            ]},
            {"role": "user", "content": "Hello?"},
        ],
        "stream": False,
        "temperature": 1.0,  # OpenAI allows up to 2; Anthropic up to 1
        "stop_sequences": ["END"],
        "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-9"},
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [(ToolChoice("auto"), None, {"type": "auto"}), (ToolChoice("none"), None, {"type": "none"}),
     (ToolChoice("tool", "f"), None, {"type": "tool", "name": "f"}),
     (ToolChoice("required"), None, {"type": "any"}),
     (ToolChoice("tool", "f"), False,
      {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
     (ToolChoice("auto"), True, {"type": "auto", "disable_parallel_tool_use": False}),
     # No choice but a say on parallel calls: auto, with the flag.
     (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
     # Anthropic's none takes no parallel flag.
     (ToolChoice("none"), False, {"type": "none"})],
)
def test_canonical_tool_choice_maps_back(choice: ToolChoice | None, parallel: bool | None,
                                         expected: dict[str, Any]) -> None:
    request = ChatRequest(model="m", messages=(Message("user", (TextPart("x"),)),),
                          tool_choice=choice, parallel_tool_calls=parallel, dialect="openai")
    assert upstream_body(request, "m")["tool_choice"] == expected


def test_own_parameters_reach_only_an_anthropic_upstream() -> None:
    request = parse_request(body(tool_choice={"type": "auto", "disable_parallel_tool_use": False},
                                 **PASSTHROUGH_VALUES))
    assert upstream_body(request, "m")["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": False}
    foreign = translated(request)
    # What has a canonical meaning is rebuilt from it (the budget, below max_tokens 256 but
    # never below Anthropic's least, 1024), the rest is not sent.
    assert {k: foreign[k] for k in set(PASSTHROUGH_VALUES) & set(foreign)} == {
        "top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert foreign["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": False}
    # And the other way: OpenAI's own parameters never reach an Anthropic upstream.
    assert "logprobs" not in upstream_body(openai_request.parse_request(OPENAI_CLIENT_BODY), "m")


@pytest.mark.parametrize(("fmt", "sent"), [
    ({"type": "json_object"}, {"type": "json_schema", "schema": {"type": "object"}}),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "array"}}},
     {"type": "json_schema", "schema": {"type": "array"}}),
])
def test_structured_output_becomes_output_config_format(fmt: dict[str, Any],
                                                        sent: dict[str, Any]) -> None:
    request = openai_request.parse_request({**OPENAI_CLIENT_BODY, "response_format": fmt})
    assert upstream_body(request, "m")["output_config"] == {"format": sent}


@pytest.mark.parametrize(("reasoning", "max_tokens", "thinking"), [
    # An effort is a share of max_tokens (OpenRouter's reading), leaving room to answer.
    ({"reasoning_effort": "low"}, 8000, {"type": "enabled", "budget_tokens": 1600}),
    ({"reasoning_effort": "high"}, 8000, {"type": "enabled", "budget_tokens": 6400}),
    ({"reasoning_effort": "high"}, 100_000, {"type": "enabled", "budget_tokens": 16384}),
    ({"reasoning": {"effort": "medium", "exclude": True}}, 8000,
     {"type": "enabled", "budget_tokens": 4000, "display": "omitted"}),
    ({"reasoning_effort": "none"}, 8000, {"type": "disabled"}),
    ({"reasoning": {"max_tokens": 3000}}, None, {"type": "enabled", "budget_tokens": 3000}),
    ({"reasoning": {"max_tokens": 10}}, None, {"type": "enabled", "budget_tokens": 1024}),
])
def test_reasoning_becomes_a_thinking_budget_below_max_tokens(
        reasoning: dict[str, Any], max_tokens: int | None, thinking: dict[str, Any]) -> None:
    sent = {**OPENAI_CLIENT_BODY, **reasoning}
    if max_tokens is not None:
        sent["max_tokens"] = max_tokens
    assert upstream_body(openai_request.parse_request(sent), "m")["thinking"] == thinking


@pytest.mark.parametrize("choice", [
    {"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": "lookup"},
    {"type": "any", "disable_parallel_tool_use": True},
    {"type": "tool", "name": "lookup", "disable_parallel_tool_use": False},
])
def test_every_tool_choice_goes_upstream_as_the_client_sent_it(choice: dict[str, Any]) -> None:
    assert upstream_body(parse_request(body(tool_choice=choice)), "m")["tool_choice"] == choice


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"', ""])
def test_tool_arguments_that_are_not_an_object_are_sent_as_empty_input(arguments: str) -> None:
    request = ChatRequest(model="m", messages=(
        Message("assistant", tool_calls=(ToolCall("c", "f", arguments),)),))
    [message] = upstream_body(request, "m")["messages"]
    assert message["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


def test_an_image_data_url_that_is_not_base64_is_a_request_error() -> None:
    request = ChatRequest(model="m", messages=(
        Message("user", (ImagePart("data:image/svg+xml,%3Csvg%3E"),)),))
    with pytest.raises(RequestError) as info:
        upstream_body(request, "m")
    assert info.value.param == "messages"


# ---------------------------------------------------------------------------------------
# StreamParser

# An upstream stream shaped as Anthropic's streaming docs show it (their spacing, a ping).
UPSTREAM_PAYLOADS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 10,
                  "cache_read_input_tokens": 100, "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "The user wants"}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "text_delta", "text": "Okay, let me check."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": 'ncisco"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89, "output_tokens_details": {"thinking_tokens": 20}}},
    {"type": "message_stop"},
]


UPSTREAM_STREAM = b"".join(
    f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()
    for payload in UPSTREAM_PAYLOADS
)


UPSTREAM_EVENTS = [
    ReasoningDelta("The user wants"),
    ReasoningSignature("EqQBCgIYAhIM", "anthropic"),  # a client must send it back
    TextDelta("Okay, let me check."),
    ToolCallDelta(0, "toolu_01T1", "get_weather", ""),
    ToolCallDelta(0, arguments='{"location": "San Fra'),
    ToolCallDelta(0, arguments='ncisco"}'),
    Finish("tool_calls"),
    # input 472 + cache reads 100 + cache writes 10, the writes counted apart too.
    UsageReport(Usage(prompt_tokens=582, completion_tokens=89, cached_tokens=100,
                      reasoning_tokens=20, cache_write_tokens=10)),
]


def parse_stream(stream: bytes, chunk: int | None = None) -> tuple[list[StreamEvent], bool]:
    parser = StreamParser()
    events = [e for event in sse_events(stream, chunk) for e in parser.feed(event.event,
                                                                            event.data)]
    return events, parser.done


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_parser_reads_a_documented_stream_fed_in_any_pieces(chunk: int | None) -> None:
    assert parse_stream(UPSTREAM_STREAM, chunk) == (UPSTREAM_EVENTS, True)


def test_parser_is_not_done_before_message_stop() -> None:
    truncated = UPSTREAM_STREAM[:UPSTREAM_STREAM.index(b"event: message_stop")]
    assert parse_stream(truncated) == (UPSTREAM_EVENTS, False)


def test_tool_calls_are_numbered_among_tool_blocks_only() -> None:
    parser = StreamParser()
    starts = [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "a", "name": "f", "input": {}},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
        {"type": "tool_use", "id": "b", "name": "g", "input": {"x": 1}},
    ]
    events = [e for i, block in enumerate(starts) for e in parser.feed(
        "content_block_start",
        json.dumps({"type": "content_block_start", "index": i, "content_block": block}))]
    assert events == [ToolCallDelta(0, "a", "f", ""), ToolCallDelta(1, "b", "g", '{"x":1}')]
    delta = {"type": "content_block_delta", "index": 3,
             "delta": {"type": "input_json_delta", "partial_json": "{}"}}
    assert parser.feed(None, json.dumps(delta)) == [ToolCallDelta(1, arguments="{}")]


def test_usage_without_message_delta_is_reported_at_message_stop() -> None:
    parser = StreamParser()
    parser.feed("message_start", json.dumps({"type": "message_start", "message": {
        "usage": {"input_tokens": 3, "output_tokens": 1}}}))
    assert parser.feed("message_stop", '{"type": "message_stop"}') == [UsageReport(Usage(3, 1))]
    assert parser.done


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop"),
     ("model_context_window_exceeded", "length"), ("something_new", "stop")],
)
def test_stop_reason_mapping(stop_reason: str, finish: FinishReason) -> None:
    data = json.dumps({"type": "message_delta", "delta": {"stop_reason": stop_reason},
                       "usage": {"output_tokens": 1}})
    assert StreamParser().feed("message_delta", data) == [
        Finish(finish), UsageReport(Usage(completion_tokens=1))]


def test_nonsense_usage_counts_read_as_zero() -> None:
    data = json.dumps({"type": "message_delta", "delta": {"stop_reason": None}, "usage": {
        "output_tokens": -5, "input_tokens": True, "cache_read_input_tokens": "7"}})
    assert StreamParser().feed("message_delta", data) == []


@pytest.mark.parametrize("event", ["error", None])
def test_upstream_error_event_raises_without_echoing_the_provider_message(
    event: str | None,
) -> None:
    data = json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "bad key sk-ant-secret-123"}})
    with pytest.raises(UpstreamError) as info:
        StreamParser().feed(event, data)
    error = info.value
    assert not isinstance(error, UpstreamProtocolError)
    assert error.message == "upstream reported an error (invalid_request_error)"
    assert "sk-ant" not in str(error) and "sk-ant" not in repr(error)


def test_an_overloaded_event_is_retried_like_a_529() -> None:
    data = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    with pytest.raises(UpstreamStatusError) as info:
        StreamParser().feed("error", data)
    assert (info.value.upstream_status, info.value.status, info.value.retryable) == (
        529, 503, True)


@pytest.mark.parametrize(
    "raw",
    ["sk-secret", {"type": "sk-secret key=value"}, {"type": ["x"]}, None, [1],
     {"error": {"type": "sk-secret"}}],
)
def test_upstream_error_of_any_shape_is_labelled_generically(raw: Any) -> None:
    error = upstream_error(raw)
    assert type(error) is UpstreamError
    assert error.message == "upstream reported an error (error)"


def test_upstream_error_reads_a_whole_error_body_too() -> None:
    raw = {"type": "error", "error": {"type": "rate_limit_error", "message": "sk-secret"}}
    error = upstream_error(raw)
    assert isinstance(error, UpstreamStatusError)
    assert (error.status, error.message) == (429, "upstream reported an error (rate_limit_error)")


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "",
        "[]",
        "null",
        '{"type": "message_start", "message": "x"}',
        '{"type": "message_start", "message": {"usage": [1]}}',
        '{"type": "content_block_start", "index": "0", "content_block": {}}',
        '{"type": "content_block_start", "index": 0}',
        '{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}',
        '{"type": "content_block_start", "index": 0, "content_block": {"type": "text", '
        '"text": 5}}',
        '{"type": "content_block_delta", "index": 0}',
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}',
        '{"type": "content_block_delta", "index": 9, "delta": {"type": "input_json_delta", '
        '"partial_json": "{}"}}',
        '{"type": "message_delta"}',
        '{"type": "message_delta", "delta": {"stop_reason": ["end_turn"]}}',
        '{"type": "message_delta", "delta": {}, "usage": "lots"}',
        '{"type": "content_block_delta", "index": 0, "delta": ' + "[" * 100_000,
    ],
)
def test_malformed_event_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        StreamParser().feed(None, data)


def test_unknown_events_and_deltas_are_ignored() -> None:
    parser = StreamParser()
    for event, data in [
        ("ping", '{"type": "ping"}'),
        ("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
        ("something_new", '{"type": "something_new", "x": 1}'),
        ("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": '
                                '{"type": "citations_delta", "citation": {}}}'),
    ]:
        assert parser.feed(event, data) == []
    assert not parser.done


def test_lone_surrogate_in_upstream_text_never_reaches_the_encoder() -> None:
    data = '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", ' \
           '"text": "ok\\ud800"}}'
    [event] = StreamParser().feed(None, data)
    assert event == TextDelta("ok\ufffd")
    StreamEncoder("m", "m").event(event).decode("utf-8")


def normalized(events: Sequence[StreamEvent]) -> list[StreamEvent]:
    """What a stream's events look like after the encoder and the parser: no empty deltas,
    a tool call's id and name alone in its first delta, never repeated."""
    out: list[StreamEvent] = []
    seen: set[int] = set()
    for event in events:
        if isinstance(event, TextDelta | ReasoningDelta):
            out += [event] if event.text else []
        elif isinstance(event, ToolCallDelta):
            if event.index not in seen:
                seen.add(event.index)
                out.append(ToolCallDelta(event.index, event.id, event.name))
            out += [ToolCallDelta(event.index, arguments=event.arguments)] if event.arguments \
                else []
    return out


@st.composite
def canonical_streams(draw: st.DrawFn) -> list[StreamEvent]:
    """Text, reasoning and tool-call deltas in any order; tool calls numbered in order of
    first appearance (as the parser numbers tool blocks), each first delta with id and name."""
    raw = draw(st.lists(
        st.builds(TextDelta, st.text()) | st.builds(ReasoningDelta, st.text())
        | st.tuples(st.integers(0, 2), st.text(), st.text(max_size=3)),
        max_size=15,
    ))
    numbers: dict[int, int] = {}
    events: list[StreamEvent] = []
    for item in raw:
        if not isinstance(item, tuple):
            events.append(item)
            continue
        which, arguments, noise = item
        if which in numbers:  # later deltas may repeat a name: the encoder ignores it
            events.append(ToolCallDelta(numbers[which], None, noise or None, arguments))
        else:
            n = numbers[which] = len(numbers)
            events.append(ToolCallDelta(n, f"call_{n}", f"fn_{n}", arguments))
    return events


@settings(max_examples=200, deadline=None)
@given(
    events=canonical_streams(),
    usage=st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6), st.just(0),
                    st.integers(0, 1000)),
    cached=st.integers(0, 10**6),
    finish=st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    chunk=st.integers(1, 40),
)
def test_the_parser_reads_back_what_the_encoder_wrote(
    events: list[StreamEvent], usage: Usage, cached: int, finish: FinishReason, chunk: int
) -> None:
    usage = attrs.evolve(usage, prompt_tokens=usage.prompt_tokens + cached, cached_tokens=cached)
    parsed, done = parse_stream(encode(events, usage, finish), chunk)
    assert parsed == [*normalized(events), Finish(finish), UsageReport(usage)]
    assert done


# ---------------------------------------------------------------------------------------
# parse_message

def upstream_message(content: list[dict[str, Any]], **top: Any) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
                       "content": content, "stop_reason": "end_turn", "stop_sequence": None,
                       "usage": {"input_tokens": 3, "output_tokens": 2}, **top}).encode()


def test_message_with_thinking_text_and_tool_calls() -> None:
    data = upstream_message([
        {"type": "thinking", "thinking": "plan", "signature": "sig"},
        {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "caf\u00e9"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        {"type": "text", "text": ""},
    ], stop_reason="tool_use",
        usage={"input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 2})
    assert parse_message(data) == [
        ReasoningDelta("plan"),
        ReasoningSignature("sig", "anthropic"),
        RedactedReasoning("x", "anthropic"),
        TextDelta("Checking."),
        ToolCallDelta(0, "toolu_1", "lookup", '{"q":"caf\u00e9"}'),
        ToolCallDelta(1, "toolu_2", "now", "{}"),
        Finish("tool_calls"),
        UsageReport(Usage(prompt_tokens=8, completion_tokens=2, cached_tokens=5)),
    ]


def test_message_without_stop_reason_or_usage() -> None:
    data = upstream_message([{"type": "text", "text": "x"}], stop_reason=None, usage=None)
    assert parse_message(data) == [TextDelta("x")]


def test_message_round_trips_through_render_message() -> None:
    rendered = render_message("msg_1", "m", text="Hi", reasoning="hmm",
                              tool_calls=[ToolCall("t", "f", '{"a":1}')], finish="tool_calls",
                              usage=Usage(9, 4, 3, 1), signature="sig", redacted=["x"])
    assert parse_message(rendered) == [
        ReasoningDelta("hmm"), ReasoningSignature("sig", "anthropic"),
        RedactedReasoning("x", "anthropic"), TextDelta("Hi"), ToolCallDelta(0, "t", "f", '{"a":1}'),
        Finish("tool_calls"), UsageReport(Usage(9, 4, 3, 1)),
    ]


def test_a_stream_round_trips_signatures_and_redacted_thinking() -> None:
    events = [ReasoningDelta("hmm"), ReasoningSignature("sig", "anthropic"),
              RedactedReasoning("x", "anthropic"), TextDelta("Hi"), Finish("stop")]
    parser = StreamParser()
    got = [e for chunk in sse_events(encode(events)) for e in parser.feed(chunk.event,
                                                                          chunk.data)]
    assert got[:5] == events


def test_error_body_raises_without_echoing_the_provider_message() -> None:
    data = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                  "message": "invalid x-api-key sk-ant-1"}})
    with pytest.raises(UpstreamError) as info:
        parse_message(data.encode())
    assert not isinstance(info.value, UpstreamProtocolError)
    assert info.value.message == "upstream reported an error (authentication_error)"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"",
        b"[]",
        b'{"type": "message"}',
        b'{"content": {"type": "text"}}',
        b'{"content": ["text"]}',
        b'{"content": [{"type": "text"}]}',
        b'{"content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}',
        b'{"content": [{"type": "tool_use", "name": "f", "input": {}}]}',
        b'{"content": [], "stop_reason": 5}',
        b'{"content": [], "usage": "lots"}',
        b'{"content": [{"type": "text", "text": "\xff"}]}',
    ],
)
def test_malformed_message_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_message(data)


def test_thinking_another_dialect_signed_never_reaches_anthropic() -> None:
    # A fallback of another dialect answered the first turn: Anthropic cannot read its
    # signature, and its own stays.
    client = body(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "x", "signature": "arouter.gemini.c2ln"},
            {"type": "text", "text": "yo"}]},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "y", "signature": "EqOwn"},
            {"type": "text", "text": "so"}]},
        {"role": "user", "content": "ok"},
    ])
    sent = upstream_body(parse_request(client), "m")["messages"]
    assert sent[1]["content"] == [{"type": "text", "text": "yo"}]
    assert sent[3]["content"][0] == {"type": "thinking", "thinking": "y", "signature": "EqOwn"}
    assert client["messages"][1]["content"][0]["signature"] == "arouter.gemini.c2ln"  # untouched
