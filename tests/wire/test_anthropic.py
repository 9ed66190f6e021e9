"""The Anthropic dialect, both directions: request validation, upstream bodies, event bytes.

Pure: dicts and bytes in, canonical values or bytes out. SDK compatibility is proved without
a network: the encoder's bytes go through the official ``anthropic`` SDK's own SSE decoder,
pydantic event types and stream accumulator, and through a real SDK client whose HTTP
transport is an in-process handler.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anthropic
import attrs
import httpx2
import pytest
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gateway.canonical import (
    MAX_TOKENS_LIMIT,
    ChatRequest,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    StreamEvent,
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
    BodyTooLarge,
    GatewayError,
    InsufficientCredits,
    InternalError,
    MethodNotAllowed,
    ModelNotFound,
    NoProviderAvailable,
    NotFound,
    RateLimited,
    RequestError,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire import jsonbody, sse
from gateway.wire.anthropic.render import StreamEncoder, error_body, render_message
from gateway.wire.anthropic.request import parse_request
from gateway.wire.anthropic.upstream import (
    StreamParser,
    parse_message,
    upstream_body,
    upstream_error,
)
from gateway.wire.encoder import Encoder
from gateway.wire.openai import request as openai_request

MODEL = "anthropic/claude-sonnet"
DROP = object()
USER_HI = {"role": "user", "content": "hi"}


def body(**changes: Any) -> dict[str, Any]:
    """A minimal valid client body with ``changes`` applied (``DROP`` removes a key)."""
    out: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": [USER_HI]}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


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
    )
    assert request.extra == {}


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
    # Thinking is dropped knowingly: the canonical history has no place for it.
    assert message == Message(
        role="assistant",
        content=(TextPart("Looking it up."),),
        tool_calls=(ToolCall("toolu_1", "lookup", '{"q":"caf\u00e9"}'),
                    ToolCall("toolu_2", "now", "{}")),
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
                tool_call_id="toolu_2"),
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
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
    ],
)
def test_tool_choice_maps_to_the_canonical_shape(choice: Any, expected: Any) -> None:
    request = parse_request(body(tool_choice=choice))
    assert request.tool_choice == expected
    assert request.extra == {}


def test_disable_parallel_tool_use_is_kept_for_anthropic_upstreams() -> None:
    request = parse_request(body(tool_choice={"type": "any", "disable_parallel_tool_use": True}))
    assert request.tool_choice == "required"
    assert request.extra == {"disable_parallel_tool_use": True}


def test_sampling_metadata_and_stop_sequences() -> None:
    request = parse_request(body(
        stream=True, temperature=1, top_p=0.5, stop_sequences=["END", "\n\nHuman:"],
        metadata={"user_id": "u-1"},
    ))
    assert (request.stream, request.temperature, request.top_p) == (True, 1.0, 0.5)
    assert request.stop == ("END", "\n\nHuman:")
    assert request.user == "u-1"
    assert parse_request(body(metadata={"user_id": None})).user is None


PASSTHROUGH_VALUES: dict[str, Any] = {
    "top_k": 40,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "service_tier": "standard_only",
    "output_config": {"effort": "high"},
    "cache_control": {"type": "ephemeral"},
    "inference_geo": "us",
    "speed": "fast",
}


def test_passthrough_parameters_land_in_extra_unchanged() -> None:
    assert dict(parse_request(body(**PASSTHROUGH_VALUES)).extra) == PASSTHROUGH_VALUES


@pytest.mark.parametrize("thinking", [{"type": "disabled"}, {"type": "adaptive"}])
def test_other_thinking_modes(thinking: dict[str, Any]) -> None:
    assert parse_request(body(thinking=thinking)).extra == {"thinking": thinking}


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
    ("workspace_id", body(workspace_id="w"), "workspace_id"),
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
    ("document block", user_block({"type": "document", "source": {}}), "messages.0.content.0"),
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
    ("image file source",
     user_block({"type": "image", "source": {"type": "file", "file_id": "f"}}),
     "messages.0.content.0"),
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
    ("server tool", body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
     "tools.0"),
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
    ("thinking without budget", body(thinking={"type": "enabled"}), "thinking"),
    ("thinking unknown type", body(thinking={"type": "maximum"}), "thinking"),
    ("thinking string", body(thinking="on"), "thinking"),
    ("service_tier unknown", body(service_tier="flex"), "service_tier"),
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
    assert info.value.message == "api_base: Extra inputs are not permitted"


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


def test_minimal_body_round_trips() -> None:
    assert upstream_body(parse_request(body()), "m") == dict(body(), model="m", stream=False)


def test_what_the_canonical_model_cannot_hold_is_dropped() -> None:
    client = body(messages=[
        {"role": "user", "content": [{"type": "text", "text": "hi",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "x",
                                           "signature": "s"}, {"type": "text", "text": "yo"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "d"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "is_error": True, "content": "boom"}]},
    ])
    assert upstream_body(parse_request(client), "m")["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},  # the thinking-only turn is left out
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "boom"}]},
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
        "tool_choice": {"type": "any"},
        "metadata": {"user_id": "u-9"},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("none", {"type": "none"}),
     ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"})],
)
def test_canonical_tool_choice_maps_back(choice: Any, expected: dict[str, Any]) -> None:
    request = ChatRequest(model="m", messages=(Message("user", (TextPart("x"),)),),
                          tool_choice=choice)
    assert upstream_body(request, "m")["tool_choice"] == expected


def test_extra_is_forwarded_only_to_the_anthropic_dialect() -> None:
    request = parse_request(body(tool_choice={"type": "auto", "disable_parallel_tool_use": False},
                                 **PASSTHROUGH_VALUES))
    assert upstream_body(request, "m")["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": False}
    foreign = upstream_body(attrs.evolve(request, dialect="openai"), "m")
    assert not set(PASSTHROUGH_VALUES) & set(foreign)
    assert foreign["tool_choice"] == {"type": "auto"}
    # And the other way: OpenAI's own parameters never reach an Anthropic upstream.
    assert "logprobs" not in upstream_body(openai_request.parse_request(OPENAI_CLIENT_BODY), "m")


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
# StreamEncoder: the event sequence


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {data}\n\n".encode()


def start_event(generation: str = "msg_1", model: str = MODEL) -> bytes:
    return sse_event("message_start", {"type": "message_start", "message": {
        "id": generation, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse_event("content_block_start",
                     {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_event("content_block_delta",
                     {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason: str, usage: dict[str, Any]) -> bytes:
    return sse_event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage}) + sse_event("message_stop", {"type": "message_stop"})


def encode(
    events: Iterable[StreamEvent],
    usage: Usage | None = None,
    finish: FinishReason | None = None,
    *,
    error: GatewayError | None = None,
) -> bytes:
    """A whole stream, in the order the relay drives an encoder."""
    enc = StreamEncoder("msg_1", MODEL)
    out = enc.start()
    for event in events:
        out += enc.event(event)
    usage = usage or Usage()
    return out + (enc.error(error, usage) if error is not None else enc.tail(usage, finish))


def test_keepalive_is_anthropics_ping_event_and_nothing_is_spliced() -> None:
    assert StreamEncoder.keepalive == b'event: ping\ndata: {"type": "ping"}\n\n'
    enc: Encoder = StreamEncoder("msg_1", MODEL)  # the relay's contract, checked by mypy
    assert enc.splices is None
    with pytest.raises(NotImplementedError):
        enc.splice("{}", 0)


def test_text_only_stream() -> None:
    stream = encode([TextDelta("Hello"), TextDelta(" world"), Finish("stop")],
                    Usage(prompt_tokens=10, completion_tokens=2))
    assert stream == (
        start_event()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": "Hello"})
        + block_delta(0, {"type": "text_delta", "text": " world"})
        + block_stop(0)
        + message_end("end_turn", {"input_tokens": 10, "output_tokens": 2,
                                   "cache_read_input_tokens": 0})
    )


def test_tool_call_stream() -> None:
    stream = encode(
        [TextDelta("Let me check."),
         ToolCallDelta(0, "call_1", "lookup", ""),
         ToolCallDelta(0, arguments='{"q":'),
         ToolCallDelta(0, arguments='"cat"}'),
         ToolCallDelta(1, "call_2", "now", "{}"),
         Finish("tool_calls")],
        Usage(prompt_tokens=30, completion_tokens=9, cached_tokens=20),
    )
    assert stream == (
        start_event()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": "Let me check."})
        + block_stop(0)
        + block_start(1, {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {}})
        + block_delta(1, {"type": "input_json_delta", "partial_json": '{"q":'})
        + block_delta(1, {"type": "input_json_delta", "partial_json": '"cat"}'})
        + block_stop(1)
        + block_start(2, {"type": "tool_use", "id": "call_2", "name": "now", "input": {}})
        + block_delta(2, {"type": "input_json_delta", "partial_json": "{}"})
        + block_stop(2)
        + message_end("tool_use", {"input_tokens": 10, "output_tokens": 9,
                                   "cache_read_input_tokens": 20})
    )


def test_thinking_then_text_stream() -> None:
    stream = encode([ReasoningDelta("Let me "), ReasoningDelta("think."), TextDelta("42")],
                    Usage(5, 7, reasoning_tokens=4), "stop")
    assert stream == (
        start_event()
        + block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + block_delta(0, {"type": "thinking_delta", "thinking": "Let me "})
        + block_delta(0, {"type": "thinking_delta", "thinking": "think."})
        + block_stop(0)
        + block_start(1, {"type": "text", "text": ""})
        + block_delta(1, {"type": "text_delta", "text": "42"})
        + block_stop(1)
        + message_end("end_turn", {"input_tokens": 5, "output_tokens": 7,
                                   "cache_read_input_tokens": 0,
                                   "output_tokens_details": {"thinking_tokens": 4}})
    )


def test_an_error_after_some_text_is_the_terminal_event() -> None:
    error = UpstreamTimeout("the upstream went silent mid-stream", deadline="idle")
    stream = encode([TextDelta("Hel")], Usage(3, 1), error=error)
    assert stream == (
        start_event()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": "Hel"})
        + sse_event("error", {"type": "error", "error": {
            "type": "timeout_error", "message": "the upstream went silent mid-stream"}})
    )


def test_a_stream_without_any_event_is_still_a_valid_empty_message() -> None:
    assert encode([]) == start_event() + message_end(
        "end_turn", {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0})


def test_the_opening_is_sent_once_even_if_the_relay_skipped_start() -> None:
    enc = StreamEncoder("msg_1", MODEL)
    first = enc.event(TextDelta("a"))
    assert first.startswith(start_event())
    assert enc.start() == b""
    assert not enc.tail(Usage(), None).startswith(b"event: message_start")


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
     ("content_filter", "refusal"), (None, "end_turn")],
)
def test_finish_reason_mapping(finish: FinishReason | None, stop_reason: str) -> None:
    tail = StreamEncoder("m", "m").tail(Usage(), finish)
    assert f'"stop_reason":"{stop_reason}"'.encode() in tail


def test_a_finish_event_is_held_for_the_tail() -> None:
    enc = StreamEncoder("msg_1", MODEL)
    enc.start()
    assert enc.event(Finish("length")) == b""
    assert enc.event(UsageReport(Usage(1, 1))) == b""
    assert b'"stop_reason":"max_tokens"' in enc.tail(Usage(), None)


def test_empty_deltas_open_no_block() -> None:
    assert encode([TextDelta(""), ReasoningDelta("")]) == encode([])


def test_a_tool_call_without_an_id_gets_one() -> None:
    stream = encode([ToolCallDelta(0, None, "f", "{}")])
    assert block_start(0, {"type": "tool_use", "id": "toolu_msg_1_0", "name": "f",
                           "input": {}}) in stream


def test_a_late_delta_for_an_earlier_tool_call_goes_to_its_block() -> None:
    stream = encode([ToolCallDelta(0, "a", "f", "{"), ToolCallDelta(1, "b", "g", "{}"),
                     ToolCallDelta(0, arguments="}")])
    assert stream.endswith(
        block_delta(0, {"type": "input_json_delta", "partial_json": "}"}) + block_stop(1)
        + message_end("end_turn", {"input_tokens": 0, "output_tokens": 0,
                                   "cache_read_input_tokens": 0}))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UpstreamError("upstream reported an error (error)"), "api_error"),
        (UpstreamStatusError("overloaded", upstream_status=529), "overloaded_error"),
        (UpstreamStatusError("slow down", upstream_status=429), "rate_limit_error"),
        (InternalError(), "api_error"),
    ],
)
def test_error_event_type_follows_the_status(error: GatewayError, kind: str) -> None:
    event = StreamEncoder("m", "m").error(error, Usage())
    assert event == sse_event("error", {"type": "error",
                                        "error": {"type": kind, "message": error.message}})


TRICKY_TEXT = [
    'say "hi"',
    "back\\slash \\u0000 \\n",
    "line\nbreak\r\nand\rcarriage",
    "event: message_stop\ndata: {}\n\n",
    "tab\tnul\x00bell\x07",
    "h\u00e9llo \u4e16\u754c \U0001f30d \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2028\u2029\x85",
]


def sse_events(stream: bytes, chunk: int | None = None) -> list[sse.Event]:
    decoder = sse.Decoder()
    size = chunk or len(stream) or 1
    events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i:i + size])]
    assert not decoder.pending
    return events


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_every_event_is_one_named_json_event_whatever_the_text(text: str) -> None:
    enc = StreamEncoder(f'msg_"{text}', f"m\\{text}")
    stream = (enc.start() + enc.event(TextDelta(text)) + enc.event(ReasoningDelta(text))
              + enc.event(ToolCallDelta(0, text, text, text)) + enc.tail(Usage(), None)
              + enc.error(InternalError(text), Usage()))
    events = sse_events(stream)
    assert [e.event for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop", "error"]
    payloads = [json.loads(e.data) for e in events]
    assert [p["type"] for p in payloads] == [e.event for e in events]
    assert payloads[0]["message"]["id"] == f'msg_"{text}'
    assert payloads[2]["delta"]["text"] == text
    assert payloads[5]["delta"]["thinking"] == text
    assert payloads[7]["content_block"]["name"] == text
    assert payloads[8]["delta"]["partial_json"] == text
    assert payloads[-1]["error"]["message"] == text


# ---------------------------------------------------------------------------------------
# The official SDK reads what the encoder writes

STREAM_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def sdk_accumulate(stream: bytes, chunk: int = 7) -> dict[str, Any]:
    """The final message as the SDK's own SSE decoder, pydantic event types and stream
    accumulator build it (``chunk`` bytes at a time)."""
    chunks = [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for event in SSEDecoder().iter_bytes(iter(chunks)):
        assert event.event is not None  # the SDK skips events without an event: line
        if event.event == "ping":
            continue
        parsed = STREAM_EVENT.validate_json(event.data)  # strict: raises if a field is off
        assert parsed.type == event.event
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    message: dict[str, Any] = anthropic.types.Message.model_validate(
        snapshot.model_dump()).model_dump(exclude_none=True)
    return message


def sdk_usage(**counts: Any) -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, **counts}


def test_the_sdk_accumulates_a_tool_call_stream() -> None:
    stream = encode(
        [ReasoningDelta("plan"), TextDelta("Let me "), TextDelta("check."),
         ToolCallDelta(0, "call_1", "lookup", ""), ToolCallDelta(0, arguments='{"q":'),
         ToolCallDelta(0, arguments='"caf\u00e9"}'), Finish("tool_calls")],
        Usage(prompt_tokens=30, completion_tokens=9, cached_tokens=20, reasoning_tokens=3),
    )
    assert sdk_accumulate(stream) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "plan", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "caf\u00e9"}},
        ],
        "stop_reason": "tool_use",
        "usage": sdk_usage(input_tokens=10, output_tokens=9, cache_read_input_tokens=20,
                           output_tokens_details={"thinking_tokens": 3}),
    }


def test_the_sdk_accepts_an_empty_stream() -> None:
    assert sdk_accumulate(encode([])) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": "end_turn", "usage": sdk_usage(cache_read_input_tokens=0),
    }


def test_a_ping_between_events_is_skipped_by_the_sdk() -> None:
    enc = StreamEncoder("msg_1", MODEL)
    stream = (enc.start() + enc.keepalive + enc.event(TextDelta("a")) + enc.keepalive
              + enc.tail(Usage(), None))
    assert sdk_accumulate(stream, chunk=1)["content"] == [{"type": "text", "text": "a"}]


@st.composite
def sdk_streams(draw: st.DrawFn) -> tuple[list[StreamEvent], list[dict[str, Any]]]:
    """Interleaved text, reasoning and tool-call deltas (each call's arguments a valid JSON
    object cut into pieces), and the content blocks the SDK should build from them."""
    kinds = draw(st.lists(st.sampled_from(["text", "thinking", 0, 1, 2]), max_size=12))
    pieces: dict[Any, list[str]] = {}
    for which in {k for k in kinds if isinstance(k, int)}:
        value = draw(st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4),
                                     max_size=3))
        whole = json.dumps(value, ensure_ascii=False)
        cuts = sorted(draw(st.lists(st.integers(0, len(whole)), min_size=kinds.count(which) - 1,
                                    max_size=kinds.count(which) - 1)))
        bounds = [0, *cuts, len(whole)]
        pieces[which] = [whole[a:b] for a, b in itertools.pairwise(bounds)]
    events: list[StreamEvent] = []
    blocks: list[dict[str, Any]] = []
    tools: dict[Any, int] = {}  # which -> canonical index
    block_of: dict[int, int] = {}  # canonical index -> block
    open_kind: Any = None
    for kind in kinds:
        if isinstance(kind, int):
            piece = pieces[kind].pop(0)
            if kind not in tools:
                index = tools[kind] = len(tools)
                events.append(ToolCallDelta(index, f"call_{index}", f"fn_{index}", piece))
                block_of[index] = len(blocks)
                blocks.append({"type": "tool_use", "id": f"call_{index}",
                               "name": f"fn_{index}", "input": {}, "_json": ""})
                open_kind = ("tool", index)
            else:
                events.append(ToolCallDelta(tools[kind], arguments=piece))
            blocks[block_of[tools[kind]]]["_json"] += piece
            continue
        text = draw(st.text(max_size=6))
        events.append(TextDelta(text) if kind == "text" else ReasoningDelta(text))
        if not text:
            continue
        if open_kind != kind:
            blocks.append({"type": "text", "text": ""} if kind == "text"
                          else {"type": "thinking", "thinking": "", "signature": ""})
            open_kind = kind
        blocks[-1]["text" if kind == "text" else "thinking"] += text
    for block in blocks:
        if block["type"] == "tool_use":
            block["input"] = json.loads(block.pop("_json"))
    return events, blocks


@settings(max_examples=150, deadline=None)
@given(case=sdk_streams(), chunk=st.integers(1, 64))
def test_the_sdk_builds_the_same_content_from_any_stream(
    case: tuple[list[StreamEvent], list[dict[str, Any]]], chunk: int
) -> None:
    events, blocks = case
    message = sdk_accumulate(encode(events, Usage(4, 2), "stop"), chunk)
    assert message["content"] == blocks
    assert message["stop_reason"] == "end_turn"


# A real SDK client whose transport is an in-process handler: the whole SDK path, no socket.


def sdk_client(handler: Callable[[ChatRequest], httpx2.Response]) -> anthropic.Anthropic:
    def serve(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        try:
            parsed = parse_request(jsonbody.parse(request.content))
        except RequestError as exc:
            return httpx2.Response(exc.status, content=error_body(exc, "req_1"),
                                   headers={"content-type": "application/json"})
        return handler(parsed)

    return anthropic.Anthropic(
        api_key="sk-test", base_url="http://gateway.test", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(serve)),
    )


def event_stream(content: bytes) -> httpx2.Response:
    return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})


def test_the_sdk_client_streams_through_the_encoder() -> None:
    seen: list[ChatRequest] = []

    def handler(request: ChatRequest) -> httpx2.Response:
        seen.append(request)
        enc = StreamEncoder("msg_9", request.model)
        body = enc.start() + enc.keepalive
        events: list[StreamEvent] = [
            TextDelta("It is "), TextDelta("sunny."),
            ToolCallDelta(0, "toolu_9", "weather", '{"city":"Paris"}'), Finish("tool_calls"),
        ]
        for event in events:
            body += enc.event(event)
        return event_stream(body + enc.tail(Usage(12, 8, 2), None))

    with sdk_client(handler) as client, client.messages.stream(
        model="claude-x", max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[{"name": "weather", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto"}, metadata={"user_id": "u-1"}, stop_sequences=["END"],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "It is sunny."
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_9", "weather", {"city": "Paris"})
    assert (final.id, final.model, final.stop_reason) == ("msg_9", "claude-x", "tool_use")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 8)
    assert final.usage.cache_read_input_tokens == 2
    [request] = seen
    assert (request.stream, request.user, request.stop) == (True, "u-1", ("END",))
    assert request.messages[0] == Message("system", (TextPart("Be brief."),))


def test_the_sdk_client_reads_a_rendered_message() -> None:
    def handler(request: ChatRequest) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=render_message(
                                   "msg_2", request.model, text="Hi!", reasoning="hmm",
                                   tool_calls=[ToolCall("toolu_1", "f", '{"a":[1]}')],
                                   finish="length", usage=Usage(5, 3, 1, 2)))

    with sdk_client(handler) as client:
        message = client.messages.create(model="claude-x", max_tokens=5,
                                         messages=[{"role": "user", "content": "hi"}])
    assert message.model_dump(exclude_none=True) == {
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": ""},
                    {"type": "text", "text": "Hi!"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}}],
        "stop_reason": "max_tokens",
        "usage": sdk_usage(input_tokens=4, output_tokens=3, cache_read_input_tokens=1,
                           output_tokens_details={"thinking_tokens": 2}),
    }


def test_the_sdk_client_raises_a_typed_error_from_the_error_body() -> None:
    with sdk_client(lambda _: event_stream(b"")) as client, pytest.raises(
        anthropic.BadRequestError
    ) as info:
        client.messages.create(model="claude-x", messages=[{"role": "user", "content": "x"}],
                               max_tokens=10, extra_body={"api_base": "http://evil.test"})
    assert info.value.body == {"type": "error", "request_id": "req_1", "error": {
        "type": "invalid_request_error", "message": "api_base: Extra inputs are not permitted"}}


def test_the_sdk_client_raises_on_a_mid_stream_error_event() -> None:
    def handler(request: ChatRequest) -> httpx2.Response:
        enc = StreamEncoder("msg_3", request.model)
        return event_stream(enc.start() + enc.event(TextDelta("partial"))
                            + enc.error(UpstreamStatusError("overloaded", upstream_status=529),
                                        Usage()))

    with sdk_client(handler) as client, client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream, pytest.raises(anthropic.APIStatusError) as info:
        for _ in stream:
            pass
    assert info.value.body == {"type": "error",
                               "error": {"type": "overloaded_error", "message": "overloaded"}}


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
    TextDelta("Okay, let me check."),
    ToolCallDelta(0, "toolu_01T1", "get_weather", ""),
    ToolCallDelta(0, arguments='{"location": "San Fra'),
    ToolCallDelta(0, arguments='ncisco"}'),
    Finish("tool_calls"),
    UsageReport(Usage(prompt_tokens=582, completion_tokens=89, cached_tokens=100,
                      reasoning_tokens=20)),
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
                              usage=Usage(9, 4, 3, 1))
    assert parse_message(rendered) == [
        ReasoningDelta("hmm"), TextDelta("Hi"), ToolCallDelta(0, "t", "f", '{"a":1}'),
        Finish("tool_calls"), UsageReport(Usage(9, 4, 3, 1)),
    ]


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


# ---------------------------------------------------------------------------------------
# render_message and error_body


def test_render_message_text_answer_is_compact_utf8() -> None:
    rendered = render_message("msg_1", MODEL, text="h\u00e9llo", reasoning="", tool_calls=[],
                              finish="stop", usage=Usage(10, 20, 4))
    assert rendered == (
        '{"id":"msg_1","type":"message","role":"assistant","model":"anthropic/claude-sonnet",'
        '"content":[{"type":"text","text":"h\u00e9llo"}],"stop_reason":"end_turn",'
        '"stop_sequence":null,"usage":{"input_tokens":6,"output_tokens":20,'
        '"cache_read_input_tokens":4}}'
    ).encode()


def test_render_message_tool_calls_with_bad_arguments_or_no_id() -> None:
    value = json.loads(render_message(
        "msg_1", MODEL, text="", reasoning="", finish="tool_calls", usage=Usage(),
        tool_calls=[ToolCall("", "f", "{oops"), ToolCall("t2", "g", "[1]")]))
    assert value["content"] == [
        {"type": "tool_use", "id": "toolu_msg_1_0", "name": "f", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
    ]
    assert value["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RequestError("bad", param="x"), "invalid_request_error"),
        (ModelNotFound(), "invalid_request_error"),
        (UnsupportedMediaType("json only"), "invalid_request_error"),
        (BodyTooLarge("too big"), "request_too_large"),
        (AuthenticationError(), "authentication_error"),
        (InsufficientCredits("no credits"), "billing_error"),
        (NotFound("no route"), "not_found_error"),
        (MethodNotAllowed("GET"), "invalid_request_error"),
        (RateLimited("slow down", retry_after=1), "rate_limit_error"),
        (InternalError(), "api_error"),
        (UpstreamError("gone"), "api_error"),
        (UpstreamStatusError("x", upstream_status=529), "overloaded_error"),
        (NoProviderAvailable("none"), "overloaded_error"),
        (UpstreamTimeout("late", deadline="total"), "timeout_error"),
    ],
)
def test_error_body_type_follows_the_status(error: GatewayError, kind: str) -> None:
    assert json.loads(error_body(error)) == {
        "type": "error", "error": {"type": kind, "message": error.message}}


def test_error_body_bytes_and_request_id() -> None:
    assert error_body(RequestError('max_tokens: "x"', param="max_tokens"), "req_1") == (
        b'{"type":"error","error":{"type":"invalid_request_error",'
        b'"message":"max_tokens: \\"x\\""},"request_id":"req_1"}'
    )
