"""The OpenAI upstream side: the bodies sent to OpenAI-compatible providers, their stream
chunks and whole answers read back as canonical events, and the passthrough splice of plain
text deltas.

Pure: canonical values and bytes in, dicts and canonical events out.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.canonical import (
    ChatRequest,
    Finish,
    Message,
    ReasoningDelta,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.wire.openai.render import StreamEncoder
from gateway.wire.openai.request import parse_request
from gateway.wire.openai.upstream import (
    delta_chars,
    parse_chunk,
    parse_completion,
    plain_delta,
    upstream_body,
)
from tests.support.wire_openai import MODEL, PASSTHROUGH_VALUES, TOOL, body, encoder, payload

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


def translated(request: ChatRequest) -> dict[str, Any]:
    """The body built for a client of another dialect (the canonical request alone)."""
    return upstream_body(attrs.evolve(request, dialect="anthropic", raw={}), "m")


def test_an_openai_client_s_body_goes_as_sent_but_for_the_model() -> None:
    sent = body(messages=[{"role": "developer", "content": [{"type": "text", "text": "x"}]},
                          {"role": "user", "content": "hi", "name": "ann"}],
                brand_new_field={"deep": [1, 2]}, **PASSTHROUGH_VALUES)
    assert upstream_body(parse_request(sent), "upstream-model") == {
        **sent, "model": "upstream-model"}


def test_developer_role_is_sent_as_system_to_other_clients_upstreams() -> None:
    request = parse_request(body(messages=[{"role": "developer", "content": "x"}]))
    assert translated(request)["messages"] == [{"role": "system", "content": "x"}]


def test_several_text_parts_stay_parts_upstream() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    request = parse_request(body(messages=[{"role": "user", "content": parts}]))
    assert translated(request)["messages"] == [{"role": "user", "content": parts}]


def test_one_text_part_is_sent_as_a_string() -> None:
    request = parse_request(body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}]}]))
    assert translated(request)["messages"] == [{"role": "user", "content": "a"}]


@pytest.mark.parametrize("options", [None, {"include_usage": False}, {"include_usage": True},
                                     {"include_obfuscation": False}])
def test_streams_always_ask_upstream_for_usage(options: dict[str, bool] | None) -> None:
    request = parse_request(body(stream=True, stream_options=options))
    same, other = upstream_body(request, "m"), translated(request)
    assert same["stream"] is other["stream"] is True
    assert same["stream_options"] == {**(options or {}), "include_usage": True}
    assert other["stream_options"] == {"include_usage": True}


def test_non_streams_send_no_stream_options() -> None:
    # The gateway owns stream_options (the usage chunk is its own), and OpenAI refuses them
    # on a request that does not stream.
    request = parse_request(body(stream_options={"include_usage": True}))
    assert "stream_options" not in upstream_body(request, "m")
    assert translated(request)["stream"] is False


def test_unset_optional_fields_are_not_sent() -> None:
    assert translated(parse_request(body())) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_own_parameters_reach_only_an_openai_dialect_upstream() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    assert {k: upstream_body(request, "m")[k] for k in PASSTHROUGH_VALUES} == PASSTHROUGH_VALUES
    foreign = translated(request)
    # What has a canonical meaning is rebuilt from it; the rest is not sent (fidelity.py
    # refused it, or the operator allowed dropping it).
    assert {k: foreign[k] for k in set(PASSTHROUGH_VALUES) & set(foreign)} == {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "frequency_penalty": -2, "presence_penalty": 1.5, "parallel_tool_calls": False,
        "reasoning_effort": "low"}


@pytest.mark.parametrize(("accepts", "sent"), [((), {}), (("top_k", "min_p"), {
    "top_k": 40, "min_p": 0.1})])
def test_openrouter_sampling_extensions_go_only_where_accepted(
        accepts: tuple[str, ...], sent: dict[str, Any]) -> None:
    request = parse_request(body(top_k=40, min_p=0.1, reasoning={"effort": "high"},
                                 provider={"sort": "price"}, usage={"include": True}))
    out = upstream_body(request, "m", accepts)
    assert {k: out[k] for k in ("top_k", "min_p", "repetition_penalty") if k in out} == sent
    # OpenRouter's own objects are the gateway's to read: never forwarded as such.
    assert not {"provider", "usage", "reasoning"} & set(out)
    assert out["reasoning_effort"] == "high"


def test_max_completion_tokens_is_forwarded_under_its_own_name() -> None:
    sent = upstream_body(parse_request(body(max_completion_tokens=64)), "m")
    assert sent.get("max_completion_tokens") == 64
    assert "max_tokens" not in sent


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice("auto"), "auto"),
        (ToolChoice("none"), "none"),
        (ToolChoice("required"), "required"),
        (ToolChoice("tool", "f"), {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_canonical_tool_choice_becomes_openai_s(choice: ToolChoice, sent: Any) -> None:
    request = ChatRequest(model="m", messages=(Message("user", (TextPart("x"),)),),
                          tool_choice=choice)
    assert upstream_body(request, "m")["tool_choice"] == sent
    assert "parallel_tool_calls" not in upstream_body(request, "m")


def test_parallel_tool_calls_go_beside_the_choice() -> None:
    # An Anthropic client's disable_parallel_tool_use, as OpenAI says it.
    request = ChatRequest(model="m", messages=(Message("user", (TextPart("x"),)),),
                          tool_choice=ToolChoice("tool", "f"), parallel_tool_calls=False)
    sent = upstream_body(request, "m")
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == (
        {"type": "function", "function": {"name": "f"}}, False)


@pytest.mark.parametrize(
    "choice", ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]
)
def test_every_tool_choice_goes_upstream_as_the_client_sent_it(choice: Any) -> None:
    sent = upstream_body(parse_request(body(tools=[TOOL], tool_choice=choice)), "m")
    assert sent["tool_choice"] == choice


def test_tool_strict_flag_reaches_the_upstream() -> None:
    tool = {"type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    sent = upstream_body(parse_request(body(tools=[tool])), "m")
    assert sent["tools"] == [tool]


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
# The passthrough splice: plain text deltas relayed without parsing

def _upstream_chunk(delta: dict[str, Any], finish: Any = None, **extra: Any) -> str:
    return json.dumps({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7,
                       "model": "upstream-model",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                       **extra}, separators=(",", ":"), ensure_ascii=False)


def test_a_spliced_plain_delta_equals_the_parsed_and_re_encoded_one() -> None:
    enc = StreamEncoder("gen-1", "fake/lorem", 123)
    data = _upstream_chunk({"content": " ipsum"})
    at = plain_delta(data)
    assert at >= 0
    [event] = parse_chunk(data)
    assert enc.splice(data, at) == enc.event(event)
    assert delta_chars(data) == len(" ipsum")


@given(st.text(min_size=1), st.sampled_from([{}, {"usage": None}, {"system_fingerprint": "x"}]))
def test_splice_keeps_ids_ours_and_choices_theirs(text: str, extra: dict[str, Any]) -> None:
    enc = StreamEncoder("gen-1", "fake/lorem", 123)
    data = _upstream_chunk({"content": text}, **extra)
    at = plain_delta(data)
    if at < 0:
        return  # the text itself looked like a marker: parsed in full instead, also fine
    spliced = json.loads(enc.splice(data, at).decode()[len("data: "):])
    upstream = json.loads(data)
    assert (spliced["id"], spliced["model"], spliced["created"]) == ("gen-1", "fake/lorem", 123)
    # Everything else is the upstream's, as it sent it (system_fingerprint included).
    ours = {"id", "object", "created", "model"}
    assert {k: v for k, v in spliced.items() if k not in ours} == {
        k: v for k, v in upstream.items() if k not in ours}


def test_splice_keeps_what_openai_sends_between_the_model_and_the_choices() -> None:
    enc = StreamEncoder("gen-1", "fake/lorem", 123)
    data = ('{"id":"chatcmpl-up","object":"chat.completion.chunk","created":7,'
            '"model":"gpt-x","service_tier":"default","system_fingerprint":"fp_1",'
            '"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":{"content":[]},'
            '"finish_reason":null}],"obfuscation":"ab"}')
    spliced = json.loads(enc.splice(data, plain_delta(data)).decode()[len("data: "):])
    assert spliced == {"id": "gen-1", "object": "chat.completion.chunk", "created": 123,
                       "model": "fake/lorem", "service_tier": "default",
                       "system_fingerprint": "fp_1", "obfuscation": "ab",
                       "choices": [{"index": 0, "delta": {"content": "hi"},
                                    "logprobs": {"content": []}, "finish_reason": None}]}


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
    assert plain_delta(data) == -1
