"""The OpenAI dialect, both directions: request validation, upstream bodies, chunk bytes.

Pure: dicts and bytes in, canonical values or bytes out. Byte-exact expectations are the
spec's own example lines (spec/streaming-api.txt) with the ``created`` field OpenAI's SDKs
expect inserted after ``object``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
    ChatRequest,
    Finish,
    ImagePart,
    Message,
    ReasoningDelta,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from gateway.errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    ModelNotFound,
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire.openai import upstream as openai_upstream
from gateway.wire.openai.render import StreamEncoder, error_body, render_completion
from gateway.wire.openai.request import parse_request
from gateway.wire.openai.upstream import parse_chunk, parse_completion, upstream_body

MODEL = "openai/gpt-5.4"
CREATED = 1700000000
DROP = object()


def body(**changes: Any) -> dict[str, Any]:
    """A minimal valid client body with ``changes`` applied (``DROP`` removes a key)."""
    out: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


def one_message(message: dict[str, Any]) -> Message:
    return parse_request(body(messages=[message])).messages[0]


# ---------------------------------------------------------------------------------------
# parse_request: accepted bodies


def test_minimal_body_gives_defaults() -> None:
    request = parse_request(body())
    assert request == ChatRequest(
        model=MODEL,
        messages=(Message(role="user", content=(TextPart("hi"),)),),
        stream=False,
        dialect="openai",
    )
    assert request.extra == {}


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_and_developer_roles_are_both_system(role: str) -> None:
    message = one_message({"role": role, "content": "Be terse."})
    assert message.role == "system"
    assert message.text == "Be terse."


def test_multipart_content_keeps_text_and_image_parts_in_order() -> None:
    message = one_message(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
                {"type": "image_url",
                 "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "text", "text": " And this?"},
            ],
        }
    )
    assert message.content == (
        TextPart("What is this?"),
        ImagePart("https://example.test/a.png", None),
        ImagePart("data:image/png;base64,iVBORw0KGgo=", "low"),
        TextPart(" And this?"),
    )
    assert message.text == "What is this? And this?"


def test_assistant_message_with_tool_calls_and_null_content() -> None:
    message = one_message(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q":"cat"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "now"}},
            ],
        }
    )
    assert message.role == "assistant"
    assert message.content == ()
    assert message.tool_calls == (
        ToolCall("call_1", "lookup", '{"q":"cat"}'),
        ToolCall("call_2", "now", ""),
    )


def test_assistant_message_may_be_empty() -> None:
    assert one_message({"role": "assistant", "content": None}) == Message(role="assistant")


def test_tool_message_keeps_its_tool_call_id() -> None:
    message = one_message({"role": "tool", "tool_call_id": "call_1", "content": "42"})
    assert (message.role, message.tool_call_id, message.text) == ("tool", "call_1", "42")


def test_tool_call_id_is_dropped_from_other_roles() -> None:
    assert one_message({"role": "user", "tool_call_id": "x", "content": "hi"}).tool_call_id is None


def test_message_name_is_kept() -> None:
    assert one_message({"role": "user", "name": "alice", "content": "hi"}).name == "alice"


def test_tools_and_tool_choice() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    request = parse_request(
        body(
            tools=[
                {"type": "function",
                 "function": {"name": "lookup", "description": "Find", "parameters": schema}},
                {"type": "function", "function": {"name": "now"}},
            ],
            tool_choice={"type": "function", "function": {"name": "lookup", "junk": 1}},
        )
    )
    assert request.tools == (Tool("lookup", "Find", schema), Tool("now", None, None))
    # Normalised to exactly the shape OpenAI documents; stray keys do not travel upstream.
    assert request.tool_choice == {"type": "function", "function": {"name": "lookup"}}


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
def test_tool_choice_keywords(choice: str) -> None:
    assert parse_request(body(tool_choice=choice)).tool_choice == choice


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ("END",)), (["a", "b", "c", "d"], ("a", "b", "c", "d")), ([], ()), (None, ())],
)
def test_stop_string_or_list(stop: Any, expected: tuple[str, ...]) -> None:
    assert parse_request(body(stop=stop)).stop == expected


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 100}, 100),
        ({"max_tokens": 50, "max_completion_tokens": 100}, 50),
        ({"max_tokens": 100, "max_completion_tokens": 50}, 50),
        ({"max_tokens": None, "max_completion_tokens": 7}, 7),
        ({"max_tokens": MAX_TOKENS_LIMIT}, MAX_TOKENS_LIMIT),
        ({}, None),
    ],
)
def test_smaller_of_max_tokens_and_max_completion_tokens_wins(
    tokens: dict[str, Any], expected: int | None
) -> None:
    assert parse_request(body(**tokens)).max_tokens == expected


def test_sampling_parameters() -> None:
    request = parse_request(
        body(temperature=0, top_p=1, seed=-3, user="u-1", stream=True,
             stream_options={"include_usage": False, "include_obfuscation": True})
    )
    assert (request.temperature, request.top_p, request.seed, request.user) == (0.0, 1.0, -3, "u-1")
    assert request.stream is True


PASSTHROUGH_VALUES: dict[str, Any] = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "logit_bias": {"50256": -100, "11": 2.5},
    "metadata": {"team": "search", "ticket": "T-1"},
    "frequency_penalty": -2,
    "presence_penalty": 1.5,
    "logprobs": True,
    "top_logprobs": 20,
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "verbosity": "high",
    "service_tier": "flex",
    "store": False,
    "prompt_cache_key": "k",
    "safety_identifier": "s",
}


def test_passthrough_parameters_land_in_extra_unchanged() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    assert dict(request.extra) == PASSTHROUGH_VALUES


def test_null_passthrough_parameters_are_left_out_of_extra() -> None:
    assert parse_request(body(response_format=None, metadata=None)).extra == {}


# ---------------------------------------------------------------------------------------
# parse_request: rejections, each blaming the right param

TOOL = {"type": "function", "function": {"name": "f"}}

REJECTIONS: list[tuple[str, Any, str | None]] = [
    ("array body", [], None),
    ("null body", None, None),
    ("string body", "hi", None),
    ("routing field api_base", body(api_base="http://evil.test"), "api_base"),
    ("routing field base_url", body(base_url="http://evil.test"), "base_url"),
    ("routing field api_key", body(api_key="sk-x"), "api_key"),
    ("routing field extra_headers", body(extra_headers={"x": "y"}), "extra_headers"),
    ("custom_llm_provider", body(custom_llm_provider="x"), "custom_llm_provider"),
    ("legacy functions", body(functions=[]), "functions"),
    ("missing model", body(model=DROP), "model"),
    ("empty model", body(model=""), "model"),
    ("numeric model", body(model=123), "model"),
    ("missing messages", body(messages=DROP), "messages"),
    ("empty messages", body(messages=[]), "messages"),
    ("string messages", body(messages="hi"), "messages"),
    ("message not object", body(messages=["hi"]), "messages.0"),
    ("missing role", body(messages=[{"content": "hi"}]), "messages.0.role"),
    ("bad role", body(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role"),
    ("legacy function role", body(messages=[{"role": "function", "content": "x"}]),
     "messages.0.role"),
    ("numeric content", body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    ("missing user content", body(messages=[{"role": "user"}]), "messages.0.content"),
    ("empty part list", body(messages=[{"role": "user", "content": []}]), "messages.0.content"),
    ("second message blamed",
     body(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": 1}]),
     "messages.1.content"),
    ("part not object", body(messages=[{"role": "user", "content": ["x"]}]),
     "messages.0.content.0"),
    ("unknown part type",
     body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
     "messages.0.content.0"),
    ("text part without text",
     body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
     "messages.0.content.0"),
    ("image part ftp url",
     body(messages=[{"role": "user", "content": [
         {"type": "text", "text": "a"},
         {"type": "image_url", "image_url": {"url": "ftp://example.test/a.png"}}]}]),
     "messages.0.content.1"),
    ("image part bare string url",
     body(messages=[{"role": "user", "content": [
         {"type": "image_url", "image_url": "https://example.test/a.png"}]}]),
     "messages.0.content.0"),
    ("image part bad detail",
     body(messages=[{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "https://e.test/a", "detail": "ultra"}}]}]),
     "messages.0.content.0"),
    ("tool_calls not array",
     body(messages=[{"role": "assistant", "tool_calls": {"id": "x"}}]),
     "messages.0.tool_calls"),
    ("tool call without id",
     body(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]),
     "messages.0.tool_calls.0"),
    ("tool call with object arguments",
     body(messages=[{"role": "assistant", "tool_calls": [
         {"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}]}]),
     "messages.0.tool_calls.0"),
    ("tool message without tool_call_id",
     body(messages=[{"role": "tool", "content": "42"}]), "messages.0.tool_call_id"),
    ("numeric name", body(messages=[{"role": "user", "content": "a", "name": 1}]),
     "messages.0.name"),
    ("stream string", body(stream="true"), "stream"),
    ("stream int", body(stream=1), "stream"),
    ("stream null", body(stream=None), "stream"),
    ("stream_options not object", body(stream_options=True), "stream_options"),
    ("stream_options unknown key", body(stream_options={"api_base": True}), "stream_options"),
    ("stream_options non-bool", body(stream_options={"include_usage": "yes"}), "stream_options"),
    ("max_tokens negative", body(max_tokens=-1), "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens float", body(max_tokens=1.5), "max_tokens"),
    ("max_tokens string", body(max_tokens="100"), "max_tokens"),
    ("max_tokens bool", body(max_tokens=True), "max_tokens"),
    ("max_tokens huge", body(max_tokens=10**30), "max_tokens"),
    ("max_tokens above limit", body(max_tokens=MAX_TOKENS_LIMIT + 1), "max_tokens"),
    ("max_completion_tokens zero", body(max_completion_tokens=0), "max_completion_tokens"),
    ("n=2", body(n=2), "n"),
    ("seed float", body(seed=1.5), "seed"),
    ("seed string", body(seed="1"), "seed"),
    ("temperature too high", body(temperature=2.5), "temperature"),
    ("temperature negative", body(temperature=-0.1), "temperature"),
    ("temperature string", body(temperature="1"), "temperature"),
    ("temperature bool", body(temperature=True), "temperature"),
    ("top_p above one", body(top_p=1.01), "top_p"),
    ("stop five strings", body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("stop number", body(stop=5), "stop"),
    ("stop list of numbers", body(stop=[1]), "stop"),
    ("tools object", body(tools=TOOL), "tools"),
    ("tool without type", body(tools=[{"function": {"name": "f"}}]), "tools.0"),
    ("tool with empty name", body(tools=[TOOL, {"type": "function", "function": {"name": ""}}]),
     "tools.1"),
    ("tool parameters list",
     body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools.0"),
    ("tool description number",
     body(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]), "tools.0"),
    ("tool_choice word", body(tool_choice="sometimes"), "tool_choice"),
    ("tool_choice function without name", body(tool_choice={"type": "function", "function": {}}),
     "tool_choice"),
    ("user number", body(user=5), "user"),
    ("frequency_penalty out of range", body(frequency_penalty=3), "frequency_penalty"),
    ("logit_bias string value", body(logit_bias={"1": "high"}), "logit_bias"),
    ("logprobs int", body(logprobs=1), "logprobs"),
    ("top_logprobs 21", body(top_logprobs=21), "top_logprobs"),
    ("response_format string", body(response_format="json"), "response_format"),
    ("metadata numeric value", body(metadata={"a": 1}), "metadata"),
    ("metadata 17 keys", body(metadata={str(i): "v" for i in range(17)}), "metadata"),
]


@pytest.mark.parametrize(
    ("raw", "param"), [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS]
)
def test_rejection_names_its_param(raw: Any, param: str | None) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    assert info.value.param == param
    assert info.value.status == 400
    assert info.value.message


def test_rejection_of_an_unknown_field_quotes_the_field_like_openai() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(api_base="http://evil.test"))
    assert info.value.message == "Unrecognized request argument supplied: api_base"
    assert "evil.test" not in info.value.message


@pytest.mark.parametrize("role", [["user"], {"user": 1}])
def test_unhashable_role_is_a_400_on_the_role(role: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(messages=[{"role": role, "content": "hi"}]))
    assert info.value.param == "messages.0.role"


@pytest.mark.parametrize("n", [True, 1.0])
def test_n_must_be_the_integer_one(n: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(n=n))
    assert info.value.param == "n"


# ---------------------------------------------------------------------------------------
# upstream_body

FULL_CLIENT_BODY: dict[str, Any] = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "Be terse."},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url",
                 "image_url": {"url": "https://example.test/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q":"cat"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "assistant", "content": "It is a cat."},
    ],
    "stream": True,
    "max_tokens": 100,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["END", "STOP"],
    "tools": [
        {"type": "function", "function": {
            "name": "lookup", "description": "Look it up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "user": "u-1",
    "seed": 7,
    "response_format": {"type": "json_object"},
    "logit_bias": {"50256": -100},
    "metadata": {"team": "a"},
}


def test_upstream_body_round_trips_what_parse_request_accepted() -> None:
    sent = upstream_body(parse_request(FULL_CLIENT_BODY), "gpt-5.4-2026-01-01")
    expected = dict(FULL_CLIENT_BODY, model="gpt-5.4-2026-01-01",
                    stream_options={"include_usage": True})
    assert sent == expected
    assert json.loads(json.dumps(sent)) == sent  # plain JSON types only


def test_developer_role_is_sent_as_system() -> None:
    request = parse_request(body(messages=[{"role": "developer", "content": "x"}]))
    assert upstream_body(request, "m")["messages"] == [{"role": "system", "content": "x"}]


def test_several_text_parts_stay_parts_upstream() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    request = parse_request(body(messages=[{"role": "user", "content": parts}]))
    assert upstream_body(request, "m")["messages"] == [{"role": "user", "content": parts}]


def test_one_text_part_is_sent_as_a_string() -> None:
    request = parse_request(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}]}]))
    assert upstream_body(request, "m")["messages"] == [{"role": "user", "content": "a"}]


@pytest.mark.parametrize("options", [None, {"include_usage": False}, {"include_usage": True}])
def test_streams_always_ask_upstream_for_usage(options: dict[str, bool] | None) -> None:
    request = parse_request(body(stream=True, stream_options=options))
    sent = upstream_body(request, "m")
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_non_streams_send_no_stream_options() -> None:
    sent = upstream_body(parse_request(body(stream_options={"include_usage": True})), "m")
    assert sent["stream"] is False
    assert "stream_options" not in sent


def test_unset_optional_fields_are_not_sent() -> None:
    sent = upstream_body(parse_request(body()), "m")
    assert sent == {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "stream": False}


def test_extra_is_forwarded_only_to_the_openai_dialect() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    assert {k: upstream_body(request, "m")[k] for k in PASSTHROUGH_VALUES} == PASSTHROUGH_VALUES
    foreign = upstream_body(attrs.evolve(request, dialect="anthropic"), "m")
    assert not set(PASSTHROUGH_VALUES) & set(foreign)


def test_max_completion_tokens_is_forwarded_under_its_own_name() -> None:
    sent = upstream_body(parse_request(body(max_completion_tokens=64)), "m")
    assert sent.get("max_completion_tokens") == 64
    assert "max_tokens" not in sent


def test_tool_strict_flag_reaches_the_upstream() -> None:
    tool = {"type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    sent = upstream_body(parse_request(body(tools=[tool])), "m")
    assert sent["tools"] == [tool]


# ---------------------------------------------------------------------------------------
# StreamEncoder: byte-exact against the spec's examples

SPEC_CONTENT = [
    'data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}',
    'data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null}]}',
]
SPEC_FINISH = (
    'data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
)
SPEC_USAGE = (
    'data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,'
    '"prompt_tokens_details":{"cached_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":0}}}'
)
SPEC_ERROR = (
    'data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"error":{"code":"server_error","message":"Provider disconnected unexpectedly"},'
    '"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}'
)


def spec_event(line: str) -> bytes:
    """A spec example line as an SSE event, with ``created`` where OpenAI puts it."""
    marker = '"object":"chat.completion.chunk",'
    assert marker in line
    return (line.replace(marker, f'{marker}"created":{CREATED},') + "\n\n").encode()


def encoder() -> StreamEncoder:
    return StreamEncoder("chatcmpl-xxx", MODEL, CREATED)


def payload(event: bytes) -> dict[str, Any]:
    """The JSON of one rendered event, after checking its SSE framing."""
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    line = event[len(b"data: "):-2]
    assert b"\n" not in line and b"\r" not in line
    value = json.loads(line.decode("utf-8"))
    assert isinstance(value, dict)
    return value


def test_role_chunk_opens_the_stream() -> None:
    expected = SPEC_CONTENT[0].replace('"delta":{"content":"Hello"}',
                                       '"delta":{"role":"assistant","content":""}')
    assert encoder().start() == spec_event(expected)


def test_content_deltas_match_the_spec_bytes() -> None:
    enc = encoder()
    assert enc.event(TextDelta("Hello")) == spec_event(SPEC_CONTENT[0])
    assert enc.event(TextDelta(" world")) == spec_event(SPEC_CONTENT[1])


def test_finish_chunk_matches_the_spec_bytes() -> None:
    assert encoder().event(Finish("stop")) == spec_event(SPEC_FINISH)


@pytest.mark.parametrize("reason", ["length", "tool_calls", "content_filter"])
def test_finish_chunk_carries_each_reason_with_an_empty_delta(reason: Any) -> None:
    chunk = payload(encoder().event(Finish(reason)))
    assert chunk["choices"] == [{"index": 0, "delta": {}, "finish_reason": reason}]


def test_usage_chunk_matches_the_spec_bytes() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=20)
    assert encoder().usage(usage) == spec_event(SPEC_USAGE)


def test_usage_chunk_carries_the_five_usage_fields() -> None:
    usage = Usage(prompt_tokens=7, completion_tokens=5, cached_tokens=3, reasoning_tokens=2)
    chunk = payload(encoder().usage(usage))
    assert chunk["choices"] == []
    assert chunk["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }


def test_done_line() -> None:
    assert StreamEncoder.DONE == b"data: [DONE]\n\n"


def test_error_event_matches_the_spec_bytes() -> None:
    error = InternalError("Provider disconnected unexpectedly")
    assert encoder().error(error, None) == spec_event(SPEC_ERROR)


def test_error_event_may_carry_the_usage_so_far() -> None:
    chunk = payload(encoder().error(UpstreamError("gone"), Usage(3, 4, estimated=True)))
    assert list(chunk) == ["id", "object", "created", "model", "error", "choices", "usage"]
    assert chunk["error"] == {"code": "upstream_error", "message": "gone"}
    assert chunk["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    assert chunk["usage"]["total_tokens"] == 7


def test_error_event_code_is_the_error_type() -> None:
    error = UpstreamTimeout("the upstream went silent mid-stream", deadline="idle")
    assert payload(encoder().error(error, None))["error"]["code"] == "timeout"


def test_reasoning_delta_chunk() -> None:
    chunk = payload(encoder().event(ReasoningDelta("Let me think")))
    assert chunk["choices"][0]["delta"] == {"reasoning_content": "Let me think"}
    assert chunk["choices"][0]["finish_reason"] is None


def test_tool_call_delta_chunks() -> None:
    enc = encoder()
    first = payload(enc.event(ToolCallDelta(index=1, id="call_9", name="lookup")))
    assert first["choices"][0]["delta"] == {"tool_calls": [
        {"index": 1, "id": "call_9", "type": "function",
         "function": {"name": "lookup", "arguments": ""}}]}
    more = payload(enc.event(ToolCallDelta(index=1, arguments='{"q":"c\\"a\\nt"}')))
    assert more["choices"][0]["delta"] == {"tool_calls": [
        {"index": 1, "function": {"arguments": '{"q":"c\\"a\\nt"}'}}]}


def test_usage_report_events_render_nothing() -> None:
    assert encoder().event(UsageReport(Usage(1, 1))) == b""


def test_a_whole_stream_shares_one_id_model_and_created() -> None:
    enc = encoder()
    events = [
        enc.start(),
        enc.event(ReasoningDelta("hmm")),
        enc.event(TextDelta("Hi")),
        enc.event(ToolCallDelta(index=0, id="c1", name="f", arguments="{}")),
        enc.event(Finish("tool_calls")),
        enc.usage(Usage(1, 2, 0, 1)),
        enc.error(InternalError("late"), None),
    ]
    for event in events:
        chunk = payload(event)
        assert list(chunk)[:4] == ["id", "object", "created", "model"]
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-xxx", "chat.completion.chunk", CREATED, MODEL
        )


TRICKY_TEXT = [
    'say "hi"',
    "back\\slash \\u0000 \\n",
    "line\nbreak\r\nand\rcarriage",
    "data: [DONE]\n\ndata: {}",
    "tab\tnul\x00bell\x07",
    "h\u00e9llo \u4e16\u754c \U0001f30d \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2028\u2029\x85",
    "</script><!--",
    "",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_text_survives_any_characters(text: str) -> None:
    enc = StreamEncoder('chatcmpl-"\n', 'm"\\', CREATED)
    chunk = payload(enc.event(TextDelta(text)))
    assert chunk["choices"][0]["delta"]["content"] == text
    assert (chunk["id"], chunk["model"]) == ('chatcmpl-"\n', 'm"\\')
    assert payload(enc.event(ReasoningDelta(text)))["choices"][0]["delta"] == {
        "reasoning_content": text}
    args = payload(enc.event(ToolCallDelta(index=0, arguments=text)))
    assert args["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == text
    assert payload(enc.error(InternalError(text), None))["error"]["message"] == text


@settings(max_examples=60)
@given(text=st.text(), model=st.text(), generation=st.text())
def test_every_rendered_line_is_one_json_event(text: str, model: str, generation: str) -> None:
    enc = StreamEncoder(generation, model, CREATED)
    for event in (
        enc.start(),
        enc.event(TextDelta(text)),
        enc.event(Finish("stop")),
        enc.usage(Usage(1, 2)),
        enc.error(RequestError(text), Usage(1, 2)),
    ):
        chunk = payload(event)
        assert (chunk["id"], chunk["model"], chunk["created"]) == (generation, model, CREATED)
    assert payload(enc.event(TextDelta(text)))["choices"][0]["delta"]["content"] == text


# ---------------------------------------------------------------------------------------
# parse_chunk


def chunk(delta: dict[str, Any] | None = None, finish: Any = None, **top: Any) -> str:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice], **top})


def test_content_chunk() -> None:
    assert parse_chunk(chunk({"content": "Hello"})) == [TextDelta("Hello")]


def test_role_chunk_with_empty_content_gives_no_events() -> None:
    assert parse_chunk(chunk({"role": "assistant", "content": ""})) == []


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_chunk(key: str) -> None:
    assert parse_chunk(chunk({key: "Think"})) == [ReasoningDelta("Think")]


def test_content_and_reasoning_in_one_chunk_keep_their_order() -> None:
    events = parse_chunk(chunk({"content": "a", "reasoning_content": "b"}, finish="stop"))
    assert events == [TextDelta("a"), ReasoningDelta("b"), Finish("stop")]


def test_tool_call_deltas_across_chunks() -> None:
    chunks = [
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "lookup", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2",
                               "function": {"name": "now", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"cat"}'}}]}),
        chunk({}, finish="tool_calls"),
    ]
    events = [event for data in chunks for event in parse_chunk(data)]
    assert events == [
        ToolCallDelta(index=0, id="call_1", name="lookup", arguments=""),
        ToolCallDelta(index=0, arguments='{"q":'),
        ToolCallDelta(index=1, id="call_2", name="now", arguments="{}"),
        ToolCallDelta(index=0, arguments='"cat"}'),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
    ],
)
def test_finish_reason_mapping(reason: str, expected: Any) -> None:
    assert parse_chunk(chunk({}, finish=reason)) == [Finish(expected)]


def test_usage_only_chunk_with_empty_choices() -> None:
    data = json.dumps({
        "id": "x", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 6}},
    })
    assert parse_chunk(data) == [UsageReport(Usage(10, 20, 4, 6))]


def test_nonsense_usage_counts_read_as_zero() -> None:
    data = json.dumps({"choices": [], "usage": {
        "prompt_tokens": -5, "completion_tokens": True, "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": "7"}}})
    assert parse_chunk(data) == [UsageReport(Usage())]


def test_null_usage_and_null_choices_give_no_events() -> None:
    assert parse_chunk('{"choices":null,"usage":null}') == []


def test_choices_other_than_the_first_are_ignored() -> None:
    data = json.dumps({"choices": [{"index": 1, "delta": {"content": "other"}},
                                   {"index": 0, "delta": {"content": "mine"}}]})
    assert parse_chunk(data) == [TextDelta("mine")]


def test_upstream_error_event_raises_without_echoing_the_provider_message() -> None:
    data = json.dumps({"error": {
        "message": "Incorrect API key provided: sk-secret-123. Authorization: Bearer sk-secret",
        "type": "invalid_request_error", "code": "invalid_api_key"}})
    with pytest.raises(UpstreamError) as info:
        parse_chunk(data)
    error = info.value
    assert not isinstance(error, UpstreamProtocolError)
    for text in (str(error), error.message, repr(error)):
        assert "sk-secret" not in text
        assert "Incorrect API key" not in text
    assert "invalid_request_error" in error.message


@pytest.mark.parametrize(
    "error",
    [
        "sk-secret upstream exploded",
        {"message": "sk-secret", "type": "sk-secret key=value"},
        {"message": "x", "code": 500},
        ["sk-secret"],
    ],
)
def test_upstream_error_of_any_shape_is_labelled_generically(error: Any) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_chunk(json.dumps({"error": error}))
    assert "sk-secret" not in str(info.value)
    assert info.value.message == "upstream reported an error (error)"


@pytest.mark.parametrize("data", ["not json", "", "data: {}", '{"choices":', "\x00"])
def test_non_json_event_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_chunk(data)


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        "1",
        "null",
        '"text"',
        '{"choices":{"index":0}}',
        '{"choices":[],"usage":[1]}',
        '{"choices":[{"delta":{"tool_calls":["x"]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]}',
    ],
)
def test_malformed_event_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_chunk(data)


@pytest.mark.parametrize("reason", [[], {"type": "stop"}])
def test_unhashable_finish_reason_is_a_protocol_error(reason: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_chunk(chunk({}, finish=reason))


def test_deeply_nested_upstream_event_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_chunk('{"choices":' + "[" * 100_000)


def test_lone_surrogate_in_upstream_text_never_reaches_the_encoder() -> None:
    enc = encoder()
    try:
        events = parse_chunk('{"choices":[{"delta":{"content":"ok\\ud800"}}]}')
    except UpstreamProtocolError:
        return  # rejecting the event is an acceptable policy
    for event in events:
        payload(enc.event(event))


# ---------------------------------------------------------------------------------------
# parse_completion


def completion(message: dict[str, Any], finish: Any = "stop", **top: Any) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], **top,
    }).encode()


def test_completion_with_content_and_usage() -> None:
    data = completion({"role": "assistant", "content": "Hi there"},
                      usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    assert parse_completion(data) == [TextDelta("Hi there"), Finish("stop"),
                                      UsageReport(Usage(3, 2))]


def test_completion_with_tool_calls_and_reasoning() -> None:
    data = completion(
        {"role": "assistant", "content": None, "reasoning_content": "plan",
         "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": '{"q":"cat"}'}},
             {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
         ]},
        finish="tool_calls",
    )
    assert parse_completion(data) == [
        ReasoningDelta("plan"),
        ToolCallDelta(index=0, id="call_1", name="lookup", arguments='{"q":"cat"}'),
        ToolCallDelta(index=1, id="call_2", name="now", arguments=""),
        Finish("tool_calls"),
    ]


def test_completion_without_finish_reason_or_usage() -> None:
    assert parse_completion(completion({"content": "x"}, finish=None)) == [TextDelta("x")]


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":"x","object":"chat.completion"}',
        b'{"choices":[]}',
        b'{"choices":null}',
        b'{"choices":["x"]}',
        b'{"choices":{"0":{}}}',
        b'{"choices":[{"index":0}]}',
        b'{"choices":[{"message":"hi"}]}',
        b"[]",
        b"not json",
        b"",
        b'{"choices":[{"message":{"content":"\xff"}}]}',
        b'{"choices":[{"message":{}}],"usage":"lots"}',
    ],
)
def test_malformed_completion_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_completion(data)


def test_completion_error_body_raises_without_echoing_the_provider_message() -> None:
    data = json.dumps({"error": {"message": "bad key sk-secret", "type": "auth_error"}})
    with pytest.raises(UpstreamError) as info:
        parse_completion(data.encode())
    assert not isinstance(info.value, UpstreamProtocolError)
    assert "sk-secret" not in str(info.value)


def test_non_list_tool_calls_in_completion_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_completion(completion({"content": "x", "tool_calls": 5}))


# ---------------------------------------------------------------------------------------
# render_completion and error_body


def render(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "text": "Hello \"world\"\n\U0001f30d",
        "reasoning": "",
        "tool_calls": [],
        "finish": "stop",
        "usage": Usage(10, 20, 4, 6),
    }
    args.update(changes)
    rendered = render_completion("chatcmpl-1", MODEL, CREATED, **args)
    value = json.loads(rendered.decode("utf-8"))
    assert isinstance(value, dict)
    return value


def test_render_completion_text_answer() -> None:
    assert render() == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello \"world\"\n\U0001f30d",
                        "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
    }


def test_render_completion_tool_calls_with_null_content_and_reasoning() -> None:
    value = render(text="", reasoning="plan", finish="tool_calls",
                   tool_calls=[ToolCall("call_1", "lookup", '{"q":"cat"}')])
    message = value["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "plan",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":"cat"}'}}],
        "refusal": None,
    }
    assert value["choices"][0]["finish_reason"] == "tool_calls"


def test_render_completion_is_compact_utf8() -> None:
    rendered = render_completion("c", "m", 1, text="\u00e9", reasoning="", tool_calls=[],
                                 finish="stop", usage=Usage())
    assert "\u00e9".encode() in rendered
    assert b": " not in rendered and b", " not in rendered


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ModelNotFound(), {"code": 400, "message": "Invalid model specified",
                           "type": "invalid_request_error", "param": "model"}),
        (AuthenticationError(), {"code": 401, "message": "Invalid API key",
                                 "type": "authentication_error"}),
        (UpstreamStatusError("upstream answered HTTP 429", upstream_status=429),
         {"code": 429, "message": "upstream answered HTTP 429", "type": "rate_limit_error"}),
        (InternalError(), {"code": 500, "message": "internal error", "type": "server_error"}),
    ],
)
def test_error_body_has_the_spec_shape(error: GatewayError, expected: dict[str, Any]) -> None:
    assert json.loads(error_body(error)) == {"error": expected}


def test_error_body_bytes_and_request_id() -> None:
    error = RequestError('bad "stop"', param="stop")
    assert error_body(error, "req-1") == (
        b'{"error":{"code":400,"message":"bad \\"stop\\"","type":"invalid_request_error",'
        b'"param":"stop","request_id":"req-1"}}'
    )


# ---------------------------------------------------------------------------------------
# The passthrough splice: plain text deltas relayed without parsing


def _upstream_chunk(delta: dict[str, Any], finish: Any = None, **extra: Any) -> str:
    return json.dumps({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7,
                       "model": "upstream-model",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                       **extra}, separators=(",", ":"), ensure_ascii=False)


def test_a_spliced_plain_delta_equals_the_parsed_and_re_encoded_one() -> None:
    enc = StreamEncoder("gen-1", "fake/lorem", 123)
    data = _upstream_chunk({"content": " ipsum"})
    at = openai_upstream.plain_delta(data)
    assert at >= 0
    [event] = parse_chunk(data)
    assert enc.splice(data, at) == enc.event(event)
    assert openai_upstream.delta_chars(data) == len(" ipsum")


@given(st.text(min_size=1), st.sampled_from([{}, {"usage": None}, {"system_fingerprint": "x"}]))
def test_splice_keeps_ids_ours_and_choices_theirs(text: str, extra: dict[str, Any]) -> None:
    enc = StreamEncoder("gen-1", "fake/lorem", 123)
    data = _upstream_chunk({"content": text}, **extra)
    at = openai_upstream.plain_delta(data)
    if at < 0:
        return  # the text itself looked like a marker: parsed in full instead, also fine
    spliced = json.loads(enc.splice(data, at).decode()[len("data: "):])
    upstream = json.loads(data)
    assert (spliced["id"], spliced["model"], spliced["created"]) == ("gen-1", "fake/lorem", 123)
    assert spliced["choices"] == upstream["choices"]


@pytest.mark.parametrize("data", [
    _upstream_chunk({"content": "x"}, finish="stop"),
    _upstream_chunk({"role": "assistant", "content": ""}),
    _upstream_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}],
                     "content": "x"}),
    _upstream_chunk({"content": "x", "reasoning_content": "hm"}),
    _upstream_chunk({"content": "x"}, usage={"prompt_tokens": 1}),
    _upstream_chunk({"content": "x", "refusal": "no"}),
    '{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":"x"},'
    '"finish_reason":null}]}',
    '{"id":"a","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null},'
    '{"index":1,"delta":{"content":"y"},"finish_reason":null}]}',
    '{"id":"a","object":"chat.completion.chunk"}',
])
def test_anything_but_a_plain_text_delta_is_parsed_in_full(data: str) -> None:
    assert openai_upstream.plain_delta(data) == -1
