"""Anthropic client requests: the bodies ``parse_request`` accepts and the canonical values
it gives, and each rejection blaming the right field.

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
from gateway.wire.anthropic.request import parse_request
from tests.support.wire_anthropic import DROP, MODEL, PASSTHROUGH_VALUES, USER_HI, body


def messages_of(*raw: dict[str, Any]) -> tuple[Message, ...]:
    return parse_request(body(messages=list(raw))).messages


# ---------------------------------------------------------------------------------------
# parse_request: accepted bodies

def test_minimal_body_gives_defaults() -> None:
    request = parse_request(body())
    assert request == ChatRequest(
        model=MODEL,
        messages=(Message(role="user", content=(TextPart("hi"),)),),
        stream=False,
        max_tokens=256,
        dialect="anthropic",
        raw=body(),
    )
    assert request.features == {}


@pytest.mark.parametrize(
    "system",
    ["Be terse.", [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}]],
)
def test_system_becomes_a_leading_system_message(system: Any) -> None:
    first, second = parse_request(body(system=system)).messages
    assert first == Message(role="system", content=(TextPart("Be terse."),))
    assert second.role == "user"


def test_system_blocks_stay_separate_parts() -> None:
    system = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    [message, _] = parse_request(body(system=system)).messages
    assert message.content == (TextPart("a"), TextPart("b"))


@pytest.mark.parametrize("system", ["", [], None])
def test_empty_system_adds_no_message(system: Any) -> None:
    assert [m.role for m in parse_request(body(system=system)).messages] == ["user"]


def test_user_blocks_keep_text_and_images_in_order() -> None:
    [message] = messages_of({"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.jpg"}},
        {"type": "text", "text": " And this?", "cache_control": {"type": "ephemeral"}},
    ]})
    assert message == Message(role="user", content=(
        TextPart("What is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo="),
        ImagePart("https://example.test/a.jpg"),
        TextPart(" And this?"),
    ))


def test_assistant_tool_use_and_thinking_blocks() -> None:
    [message] = messages_of({"role": "assistant", "content": [
        {"type": "thinking", "thinking": "plan", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "Looking it up."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "caf\u00e9"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]})
    # Thinking blocks reach an Anthropic upstream as sent (the raw body); the canonical
    # history has no place for them, so other dialects refuse them by name.
    assert messages_of(*[{"role": "assistant", "content": []}]) == (
        Message(role="assistant"),)
    assert message == Message(
        role="assistant",
        content=(TextPart("Looking it up."),),
        tool_calls=(ToolCall("toolu_1", "lookup", '{"q":"caf\u00e9"}'),
                    ToolCall("toolu_2", "now", "{}")),
        reasoning="plan", signature="sig", signed_by="anthropic", redacted=("xyz",),
    )


def test_tool_results_become_tool_messages_in_order() -> None:
    messages = messages_of({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
         "content": [{"type": "text", "text": "no "}, {"type": "text", "text": "clock"}]},
        {"type": "tool_result", "tool_use_id": "toolu_3"},
        {"type": "text", "text": "Go on."},
    ]})
    assert messages == (
        Message(role="tool", content=(TextPart("a cat"),), tool_call_id="toolu_1"),
        Message(role="tool", content=(TextPart("no "), TextPart("clock")),
                tool_call_id="toolu_2", is_error=True),
        Message(role="tool", tool_call_id="toolu_3"),
        Message(role="user", content=(TextPart("Go on."),)),
    )


def test_text_before_a_tool_result_stays_before_it() -> None:
    messages = messages_of({"role": "user", "content": [
        {"type": "text", "text": "first"},
        {"type": "tool_result", "tool_use_id": "t", "content": "r"},
    ]})
    assert [(m.role, m.text) for m in messages] == [("user", "first"), ("tool", "r")]


def test_assistant_turn_may_be_empty_or_a_string() -> None:
    messages = messages_of(USER_HI, {"role": "assistant", "content": []},
                           {"role": "assistant", "content": "The answer is"})
    assert messages[1:] == (
        Message(role="assistant"),
        Message(role="assistant", content=(TextPart("The answer is"),)),
    )


def test_tools_and_each_tool_choice() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tools = [
        {"name": "lookup", "description": "Find", "input_schema": schema,
         "cache_control": {"type": "ephemeral"}},
        {"type": "custom", "name": "now", "input_schema": {"type": "object"}, "strict": True},
    ]
    request = parse_request(body(tools=tools))
    assert request.tools == (Tool("lookup", "Find", schema),
                             Tool("now", None, {"type": "object"}, True))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "tool", "name": "lookup"}, ToolChoice("tool", "lookup")),
    ],
)
def test_tool_choice_maps_to_the_canonical_shape(choice: Any, expected: ToolChoice) -> None:
    request = parse_request(body(tool_choice=choice))
    assert request.tool_choice == expected
    assert not any(f.startswith("anthropic:") for f in request.features)


@pytest.mark.parametrize("disable", [True, False])
def test_disable_parallel_tool_use_is_canonical(disable: bool) -> None:
    request = parse_request(body(tool_choice={"type": "any", "disable_parallel_tool_use": disable}))
    assert (request.tool_choice, request.parallel_tool_calls) == (ToolChoice("required"),
                                                                  not disable)
    assert request.features == {
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use"}


def test_sampling_metadata_and_stop_sequences() -> None:
    request = parse_request(body(
        stream=True, temperature=1, top_p=0.5, stop_sequences=["END", "\n\nHuman:"],
        metadata={"user_id": "u-1"},
    ))
    assert (request.stream, request.temperature, request.top_p) == (True, 1.0, 0.5)
    assert request.stop == ("END", "\n\nHuman:")
    assert request.user == "u-1"
    assert parse_request(body(metadata={"user_id": None})).user is None


CANONICAL_VALUES = {"top_k", "thinking", "output_config"}


def test_parameters_without_a_canonical_meaning_are_anthropic_s_own() -> None:
    request = parse_request(body(**PASSTHROUGH_VALUES))
    own = {k: v for k, v in PASSTHROUGH_VALUES.items() if k not in CANONICAL_VALUES}
    assert {k: request.raw[k] for k in own} == own  # as sent, for an Anthropic upstream
    assert {f: p for f, p in request.features.items() if f.startswith("anthropic:")} == {
        f"anthropic:{k}": k for k in own}
    assert (request.top_k, request.reasoning) == (40, Reasoning(effort="high", budget=2048))


@pytest.mark.parametrize(("thinking", "expected"), [
    ({"type": "disabled"}, Reasoning(enabled=False)),
    ({"type": "adaptive"}, Reasoning()),
    ({"type": "adaptive", "display": "omitted"}, Reasoning(include=False)),
    ({"type": "enabled", "budget_tokens": 5000, "display": "summarized"},
     Reasoning(budget=5000, include=True)),
])
def test_thinking_modes_are_canonical_reasoning(thinking: dict[str, Any],
                                                expected: Reasoning) -> None:
    request = parse_request(body(thinking=thinking))
    assert (request.reasoning, request.features) == (expected, {"reasoning": "thinking"})


def test_structured_output_is_a_canonical_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = parse_request(body(output_config={"format": {"type": "json_schema",
                                                           "schema": schema}}))
    assert request.response_format == ResponseFormat("json_schema", schema, strict=True)
    assert request.features == {"response_format": "output_config.format"}


def test_what_only_anthropic_reads_is_noted_where_it_first_appears() -> None:
    request = parse_request(body(
        cache_control={"type": "ephemeral"},
        system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        tools=[{"name": "f", "input_schema": {}, "cache_control": {"type": "ephemeral"}},
               {"type": "web_search_20250305", "name": "web_search"}],
        messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "d"}},
            {"type": "text", "text": "hi", "citations": []}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t", "signature": "sig"},
                {"type": "text", "text": "a"}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "x", "is_error": True}]}]))
    assert request.features == {
        "anthropic:cache_control": "cache_control",
        "anthropic:document": "messages.0.content.0 (document block)",
        "anthropic:citations": "messages.0.content.1.citations",
        "tool_errors": "messages.2.content.0.is_error",
        "anthropic:web_search_20250305": "tools.1",
        "paid:server_tools": "tools.1",  # charged per search: a surcharge
    }


def test_max_tokens_at_the_limit() -> None:
    assert parse_request(body(max_tokens=MAX_TOKENS_LIMIT)).max_tokens == MAX_TOKENS_LIMIT


# ---------------------------------------------------------------------------------------
# parse_request: rejections, each blaming the right param

OPENAI_BODY = {"model": MODEL, "messages": [{"role": "system", "content": "Be terse."}, USER_HI]}


def user_block(block: Any) -> dict[str, Any]:
    return body(messages=[{"role": "user", "content": [block]}])


def assistant_block(block: Any) -> dict[str, Any]:
    return body(messages=[USER_HI, {"role": "assistant", "content": [block]}])


REJECTIONS: list[tuple[str, Any, str | None]] = [
    ("array body", [], None),
    ("null body", None, None),
    ("routing field api_base", body(api_base="http://evil.test"), "api_base"),
    ("routing field base_url", body(base_url="http://evil.test"), "base_url"),
    ("routing field api_key", body(api_key="sk-x"), "api_key"),
    ("routing field extra_headers", body(extra_headers={"x": "y"}), "extra_headers"),
    ("openai stop", body(stop=["x"]), "stop"),
    ("openai user", body(user="u"), "user"),
    ("openai n", body(n=1), "n"),
    ("openai body without max_tokens", OPENAI_BODY, "max_tokens"),
    ("openai body with max_tokens",
     dict(OPENAI_BODY, max_tokens=5), "messages.0.role"),
    ("developer role", body(messages=[{"role": "developer", "content": "x"}]), "messages.0.role"),
    ("tool role", body(messages=[{"role": "tool", "content": "x", "tool_call_id": "c"}]),
     "messages.0.role"),
    ("unhashable role", body(messages=[{"role": ["user"], "content": "x"}]), "messages.0.role"),
    ("missing role", body(messages=[{"content": "x"}]), "messages.0.role"),
    ("missing model", body(model=DROP), "model"),
    ("empty model", body(model=""), "model"),
    ("numeric model", body(model=1), "model"),
    ("missing max_tokens", body(max_tokens=DROP), "max_tokens"),
    ("null max_tokens", body(max_tokens=None), "max_tokens"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens"),
    ("max_tokens negative", body(max_tokens=-1), "max_tokens"),
    ("max_tokens float", body(max_tokens=1.5), "max_tokens"),
    ("max_tokens string", body(max_tokens="100"), "max_tokens"),
    ("max_tokens bool", body(max_tokens=True), "max_tokens"),
    ("max_tokens huge", body(max_tokens=10**30), "max_tokens"),
    ("max_tokens above limit", body(max_tokens=MAX_TOKENS_LIMIT + 1), "max_tokens"),
    ("missing messages", body(messages=DROP), "messages"),
    ("empty messages", body(messages=[]), "messages"),
    ("string messages", body(messages="hi"), "messages"),
    ("message not object", body(messages=["hi"]), "messages.0"),
    ("missing content", body(messages=[{"role": "user"}]), "messages.0.content"),
    ("numeric content", body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    ("null content", body(messages=[{"role": "user", "content": None}]), "messages.0.content"),
    ("empty user block list", body(messages=[{"role": "user", "content": []}]),
     "messages.0.content"),
    ("second message blamed", body(messages=[USER_HI, {"role": "assistant", "content": 1}]),
     "messages.1.content"),
    ("block not object", user_block("hi"), "messages.0.content.0"),
    ("block without type", user_block({"text": "hi"}), "messages.0.content.0"),
    ("openai text part is fine but image_url is not",
     user_block({"type": "image_url", "image_url": {"url": "https://e.test/a.png"}}),
     "messages.0.content.0"),
    ("text block without text", user_block({"type": "text", "text": None}),
     "messages.0.content.0"),
    ("image without source", user_block({"type": "image"}), "messages.0.content.0"),
    ("image bad media type",
     user_block({"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
                                             "data": "AAAA"}}), "messages.0.content.0"),
    ("image empty data",
     user_block({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": ""}}), "messages.0.content.0"),
    ("image ftp url",
     user_block({"type": "image", "source": {"type": "url", "url": "ftp://e.test/a.png"}}),
     "messages.0.content.0"),
    # Files API uploads belong to the operator's account, which every client shares.
    ("image file source",
     user_block({"type": "image", "source": {"type": "file", "file_id": "f"}}),
     "messages.0.content.0.source"),
    ("document file source",
     user_block({"type": "document", "source": {"type": "file", "file_id": "f"}}),
     "messages.0.content.0.source"),
    ("container", body(container="container_1"), "container"),
    ("container upload", user_block({"type": "container_upload", "file_id": "f"}),
     "messages.0.content.0"),
    ("file source inside a tool result",
     user_block({"type": "tool_result", "tool_use_id": "t", "content": [
         {"type": "document", "source": {"type": "file", "file_id": "f"}}]}),
     "messages.0.content.0.content.0.source"),
    ("tool_use in a user message",
     user_block({"type": "tool_use", "id": "t", "name": "f", "input": {}}),
     "messages.0.content.0"),
    ("tool_result without tool_use_id", user_block({"type": "tool_result", "content": "x"}),
     "messages.0.content.0"),
    ("tool_result numeric content",
     user_block({"type": "tool_result", "tool_use_id": "t", "content": 5}),
     "messages.0.content.0"),
    ("tool_result string is_error",
     user_block({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
     "messages.0.content.0"),
    ("tool_result nested tool_result",
     user_block({"type": "tool_result", "tool_use_id": "t",
                 "content": [{"type": "tool_result", "tool_use_id": "u"}]}),
     "messages.0.content.0.content.0"),
    ("tool_result in an assistant message",
     assistant_block({"type": "tool_result", "tool_use_id": "t"}), "messages.1.content.0"),
    ("image in an assistant message",
     assistant_block({"type": "image", "source": {"type": "url", "url": "https://e.test/"}}),
     "messages.1.content.0"),
    ("tool_use without id", assistant_block({"type": "tool_use", "name": "f", "input": {}}),
     "messages.1.content.0"),
    ("tool_use with string input",
     assistant_block({"type": "tool_use", "id": "t", "name": "f", "input": "{}"}),
     "messages.1.content.0"),
    ("system number", body(system=5), "system"),
    ("system image block",
     body(system=[{"type": "image", "source": {"type": "url", "url": "https://e.test/"}}]),
     "system.0"),
    ("stream string", body(stream="true"), "stream"),
    ("stream int", body(stream=1), "stream"),
    ("stream null", body(stream=None), "stream"),
    ("temperature above one", body(temperature=1.5), "temperature"),
    ("temperature negative", body(temperature=-0.1), "temperature"),
    ("temperature bool", body(temperature=True), "temperature"),
    ("top_p above one", body(top_p=1.01), "top_p"),
    ("top_k negative", body(top_k=-1), "top_k"),
    ("top_k float", body(top_k=1.5), "top_k"),
    ("stop_sequences string", body(stop_sequences="END"), "stop_sequences"),
    ("stop_sequences numbers", body(stop_sequences=[1]), "stop_sequences"),
    ("tools object", body(tools={"name": "f"}), "tools"),
    ("tool not object", body(tools=["f"]), "tools.0"),
    ("tool without input_schema", body(tools=[{"name": "f"}]), "tools.0"),
    ("tool with empty name", body(tools=[{"name": "", "input_schema": {}}]), "tools.0"),
    ("openai-shaped tool",
     body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools.0"),
    ("tool description number",
     body(tools=[{"name": "f", "input_schema": {}, "description": 1}]), "tools.0"),
    ("tool strict string", body(tools=[{"name": "f", "input_schema": {}, "strict": "yes"}]),
     "tools.0"),
    ("tool_choice string", body(tool_choice="auto"), "tool_choice"),
    ("tool_choice unknown type", body(tool_choice={"type": "required"}), "tool_choice"),
    ("tool_choice tool without name", body(tool_choice={"type": "tool"}), "tool_choice"),
    ("tool_choice openai function",
     body(tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice"),
    ("tool_choice string disable flag",
     body(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}), "tool_choice"),
    ("metadata string", body(metadata="u"), "metadata"),
    ("metadata unknown key", body(metadata={"user_id": "u", "team": "x"}), "metadata"),
    ("metadata numeric user_id", body(metadata={"user_id": 5}), "metadata.user_id"),
    ("thinking without budget", body(thinking={"type": "enabled"}), "thinking.budget_tokens"),
    ("thinking unknown type", body(thinking={"type": "maximum"}), "thinking"),
    ("thinking string", body(thinking="on"), "thinking"),
]


@pytest.mark.parametrize(
    ("raw", "param"), [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS]
)
def test_rejection_names_its_param(raw: Any, param: str | None) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    error = info.value
    assert (error.param, error.status, error.type) == (param, 400, "invalid_request_error")
    # Anthropic's error body has no param field: the message itself names the field.
    if param is not None:
        assert error.message.startswith(f"{param}: ")


def test_unknown_field_is_named_without_echoing_its_value() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(api_base="http://evil.test"))
    assert info.value.message == ("api_base: Extra inputs are not permitted (where a request "
                                  "goes is the gateway's configuration)")


@pytest.mark.parametrize(("field", "instead"),
                         [("stop", "stop_sequences"), ("user", "metadata.user_id"),
                          ("max_completion_tokens", "max_tokens")])
def test_openai_field_names_point_to_the_anthropic_ones(field: str, instead: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(**{field: 5}))
    assert f"use '{instead}'" in info.value.message


def test_an_openai_shaped_body_gets_a_message_that_says_so() -> None:
    with pytest.raises(RequestError) as missing:
        parse_request(OPENAI_BODY)
    assert "/v1/chat/completions" in missing.value.message
    with pytest.raises(RequestError) as system:
        parse_request(dict(OPENAI_BODY, max_tokens=5))
    assert "top-level 'system'" in system.value.message
