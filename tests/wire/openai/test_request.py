"""OpenAI client requests: the bodies ``parse_request`` accepts and the canonical values it
gives, and each rejection blaming the right param.

Pure: dicts in, canonical values out.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
    ChatRequest,
    ImagePart,
    Message,
    Reasoning,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from gateway.errors import RequestError
from gateway.wire.openai.request import parse_request
from tests.support.wire_openai import DROP, MODEL, PASSTHROUGH_VALUES, TOOL, body


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
        raw=body(),
    )
    assert request.features == {}


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
    # Only the name is kept; stray keys do not travel upstream.
    assert request.tool_choice == ToolChoice("tool", "lookup")


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
def test_tool_choice_keywords(choice: str) -> None:
    assert parse_request(body(tool_choice=choice)).tool_choice == ToolChoice(choice)


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


CANONICAL_VALUES = {"response_format", "frequency_penalty", "presence_penalty",
                    "parallel_tool_calls", "reasoning_effort"}


def test_parameters_without_a_canonical_meaning_are_openai_s_own() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    own = {k: v for k, v in PASSTHROUGH_VALUES.items() if k not in CANONICAL_VALUES}
    assert {k: request.raw[k] for k in own} == own  # as sent, for an OpenAI upstream
    # Each is a feature only an OpenAI-dialect upstream honours, named as the client did.
    assert {f: p for f, p in request.features.items() if f.startswith("openai:")} == {
        f"openai:{k}": k for k in own}


def test_fields_with_a_canonical_meaning_are_read_into_it() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    assert (request.frequency_penalty, request.presence_penalty,
            request.parallel_tool_calls) == (-2.0, 1.5, False)
    assert request.response_format == ResponseFormat("json_schema", {}, "x")
    assert request.reasoning == Reasoning(effort="low")
    assert {"response_format", "reasoning", "frequency_penalty", "presence_penalty",
            "parallel_tool_calls"} <= set(request.features)


def test_an_unknown_field_is_the_upstream_s_business() -> None:
    # OpenAI-dialect upstreams get it as sent (and answer it themselves); any other dialect
    # refuses it by name (routing/fidelity.py).
    request = parse_request(body(prediction={"type": "content", "content": "x"},
                                 brand_new_field=1))
    assert request.features == {"openai:prediction": "prediction",
                                "openai:brand_new_field": "brand_new_field"}


@pytest.mark.parametrize(("reasoning", "expected"), [
    ({"effort": "high"}, Reasoning(effort="high")),
    ({"max_tokens": 3000}, Reasoning(budget=3000)),
    ({"max_tokens": 3000, "exclude": True}, Reasoning(budget=3000, include=False)),
    ({"enabled": False}, Reasoning(enabled=False)),
    ({"effort": "none"}, Reasoning(enabled=False, effort="none")),
])
def test_openrouter_reasoning_is_canonical_reasoning(reasoning: dict[str, Any],
                                                     expected: Reasoning) -> None:
    request = parse_request(body(reasoning=reasoning))
    assert request.reasoning == expected
    assert request.features["reasoning"] == "reasoning"


@pytest.mark.parametrize(("field", "value"), [
    ("transforms", ["middle-out"]), ("plugins", [{"id": "web"}]), ("route", "fallback"),
    ("provider", {"data_collection": "deny"}), ("provider", {"sort": "throughput"}),
    ("usage", {"include": "yes"}), ("min_p", 2), ("reasoning", {"effort": "huge"}),
])
def test_openrouter_extensions_without_a_meaning_here_are_refused_by_name(
        field: str, value: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(**{field: value}))
    assert info.value.param is not None and info.value.param.startswith(field)


def test_openrouter_extensions_that_mean_something_here_are_read() -> None:
    request = parse_request(body(usage={"include": True}, top_k=40, min_p=0.1,
                                 repetition_penalty=1.1,
                                 provider={"sort": "price", "require_parameters": True}))
    assert request.top_k == 40
    assert (request.routing.sort, request.routing.require_parameters) == ("price", True)
    assert {"top_k", "min_p", "repetition_penalty"} <= set(request.features)
    assert "openai:usage" not in request.features  # the gateway's to honour


def test_null_parameters_ask_for_nothing() -> None:
    assert parse_request(body(response_format=None, metadata=None)).features == {}


# ---------------------------------------------------------------------------------------
# parse_request: rejections, each blaming the right param


REJECTIONS: list[tuple[str, Any, str | None]] = [
    ("array body", [], None),
    ("null body", None, None),
    ("string body", "hi", None),
    ("routing field api_base", body(api_base="http://evil.test"), "api_base"),
    ("routing field base_url", body(base_url="http://evil.test"), "base_url"),
    ("routing field api_key", body(api_key="sk-x"), "api_key"),
    ("routing field extra_headers", body(extra_headers={"x": "y"}), "extra_headers"),
    ("custom_llm_provider", body(custom_llm_provider="x"), "custom_llm_provider"),
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
    ("file by id: the operator's files",
     body(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]),
     "messages.0.content.0.file.file_id"),
    ("file by id beside its data",
     body(messages=[{"role": "user", "content": [{"type": "file", "file": {
         "file_data": "data:application/pdf;base64,AAAA", "file_id": "f"}}]}]),
     "messages.0.content.0.file.file_id"),
    ("an earlier answer's audio by id",
     body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "audio": {"id": "x"}},
                    {"role": "user", "content": "b"}]), "messages.1.audio.id"),
    ("audio format not a string",
     body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {
         "data": "AAAA", "format": {}}}]}]), "messages.0.content.0"),
    ("reasoning detail format not a string",
     body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b",
                    "reasoning_details": [{"type": "reasoning.text", "format": ["x"]}]}]),
     "messages.1.reasoning_details.0.format"),
    ("proxy routing field", body(user_config={"model_list": []}), "user_config"),
    ("routing field in capitals", body(API_BASE="http://evil.test"), "API_BASE"),
    ("unknown part type",
     body(messages=[{"role": "user", "content": [{"type": "video_clip"}]}]),
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
    ("n=2 streamed", body(n=2, stream=True), "n"),
    ("n=0", body(n=0), "n"),
    ("n above OpenAI's bound", body(n=129), "n"),
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
    assert info.value.message == (
        "Unrecognized request argument supplied: api_base (where a request goes is the "
        "gateway's configuration, never the body's)")
    assert "evil.test" not in info.value.message


@pytest.mark.parametrize("role", [["user"], {"user": 1}])
def test_unhashable_role_is_a_400_on_the_role(role: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(messages=[{"role": role, "content": "hi"}]))
    assert info.value.param == "messages.0.role"


@pytest.mark.parametrize("n", [True, 1.0, "2"])
def test_n_must_be_an_integer(n: Any) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(n=n))
    assert info.value.param == "n"


def test_several_choices_are_a_whole_answer_of_an_openai_upstream_only() -> None:
    request = parse_request(body(n=3))
    assert request.choices == 3 and request.features["openai:n"] == "n"
    assert parse_request(body(n=1)).features == {}  # one choice is every upstream's
