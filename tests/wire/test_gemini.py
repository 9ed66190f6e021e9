"""The Gemini dialect, both directions: request validation, upstream bodies, chunk bytes.

Pure: dicts and bytes in, canonical values or bytes out. SDK compatibility is checked
offline: the bodies the two Google SDKs really send are parsed, and what the encoder writes
is read back by the SDKs' own stream readers (google-genai over an ``httpx.MockTransport``,
google-generativeai through google-api-core's REST stream iterator).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import attrs
import httpx
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
    ModelNotFound,
    NoProviderAvailable,
    NotFound,
    RateLimited,
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire.gemini.render import (
    StreamEncoder,
    error_body,
    render_response,
    wants_thoughts,
)
from gateway.wire.gemini.request import parse_request
from gateway.wire.gemini.upstream import (
    StreamParser,
    parse_response,
    upstream_body,
    upstream_error,
)
from gateway.wire.sse import Decoder

with warnings.catch_warnings():
    # Both SDKs warn on import (Python 3.11 support ending; google-generativeai deprecated).
    warnings.simplefilter("ignore")
    import google.generativeai as old_genai
    from google.ai.generativelanguage_v1beta.services.generative_service.transports import (
        rest_base,
    )
    from google.ai.generativelanguage_v1beta.types import GenerateContentResponse as OldProto
    from google.api_core.rest_streaming import ResponseIterator
    from google.genai import Client, errors, types
    from google.generativeai.types import generation_types as old_types

MODEL = "gemini-2.5-flash"
DROP = object()


def body(**changes: Any) -> dict[str, Any]:
    """A minimal valid client body with ``changes`` applied (``DROP`` removes a key)."""
    out: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


def parse(raw: Any, *, stream: bool = False) -> ChatRequest:
    return parse_request(raw, MODEL, stream=stream)


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model_turn(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def answer(name: str, **response: Any) -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": response}}


def messages(*contents: dict[str, Any]) -> tuple[Message, ...]:
    return parse(body(contents=list(contents))).messages


# ---------------------------------------------------------------------------------------
# parse_request: accepted bodies


def test_minimal_body_gives_defaults() -> None:
    request = parse(body())
    assert request == ChatRequest(
        model=MODEL,
        messages=(Message(role="user", content=(TextPart("hi"),)),),
        stream=False,
        dialect="gemini",
    )
    assert request.extra == {}


@pytest.mark.parametrize("stream", [True, False])
def test_the_model_and_stream_come_from_the_route(stream: bool) -> None:
    request = parse_request(body(model="models/other"), "gemini-x", stream=stream)
    assert (request.model, request.stream) == ("gemini-x", stream)


@pytest.mark.parametrize("turn", [{"parts": [{"text": "hi"}]}, {"role": None,
                                                                "parts": [{"text": "hi"}]}])
def test_a_turn_without_role_is_the_user(turn: dict[str, Any]) -> None:
    assert messages(turn) == (Message(role="user", content=(TextPart("hi"),)),)


def test_snake_case_and_camel_case_bodies_mean_the_same() -> None:
    camel = {
        "contents": [user({"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                          {"fileData": {"fileUri": "https://e.test/a.png"}})],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {"maxOutputTokens": 9, "topP": 0.5, "stopSequences": ["x"],
                             "thinkingConfig": {"includeThoughts": True}},
        "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                                 "allowedFunctionNames": ["f"]}},
        "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {}}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
    }
    snake = {
        "contents": [user({"inline_data": {"mime_type": "image/png", "data": "AAAA"}},
                          {"file_data": {"file_uri": "https://e.test/a.png"}})],
        "system_instruction": {"parts": [{"text": "Be terse."}]},
        "generation_config": {"max_output_tokens": 9, "top_p": 0.5, "stop_sequences": ["x"],
                              "thinking_config": {"include_thoughts": True}},
        "tool_config": {"function_calling_config": {"mode": "ANY",
                                                    "allowed_function_names": ["f"]}},
        "tools": [{"function_declarations": [{"name": "f", "parameters_json_schema": {}}]}],
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}],
    }
    assert parse(snake) == parse(camel)


def test_system_instruction_is_a_leading_system_message() -> None:
    request = parse(body(systemInstruction={"role": "system",
                                            "parts": [{"text": "Be "}, {"text": "terse."}]}))
    assert request.messages[0] == Message(role="system",
                                          content=(TextPart("Be "), TextPart("terse.")))
    assert request.messages[0].text == "Be terse."
    assert request.messages[1].role == "user"


def test_media_parts_become_image_parts_in_order() -> None:
    [message] = messages(user(
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "-_8="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.test/a.png"}},
        {"fileData": {"fileUri": "http://example.test/b"}},
    ))
    assert message.content == (
        TextPart("What is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo="),
        ImagePart("data:image/jpeg;base64,+/8="),  # URL-safe base64 made standard
        ImagePart("https://example.test/a.png"),
        ImagePart("http://example.test/b"),
    )


def test_function_calls_get_ids_in_request_order_and_responses_pair_by_name() -> None:
    got = messages(
        user({"text": "weather in Paris and Rome, then the time?"}),
        model_turn({"text": "Checking."}, call("weather", city="Paris"),
                   call("weather", city="Rome")),
        user(answer("weather", temp=20), answer("weather", temp=25)),
        model_turn(call("now")),
        {"role": "function", "parts": [answer("now", output="noon")]},  # the JS SDK's role
    )
    assert got[1:] == (
        Message(role="assistant", content=(TextPart("Checking."),), tool_calls=(
            ToolCall("call_0", "weather", '{"city":"Paris"}'),
            ToolCall("call_1", "weather", '{"city":"Rome"}'),
        )),
        Message(role="tool", content=(TextPart('{"temp":20}'),), tool_call_id="call_0"),
        Message(role="tool", content=(TextPart('{"temp":25}'),), tool_call_id="call_1"),
        Message(role="assistant", tool_calls=(ToolCall("call_2", "now", "{}"),)),
        Message(role="tool", content=(TextPart('{"output":"noon"}'),), tool_call_id="call_2"),
    )


def test_ids_the_client_gave_are_kept_and_matched() -> None:
    got = messages(
        user({"text": "go"}),
        model_turn({"functionCall": {"id": "a1", "name": "f"}},
                   {"functionCall": {"id": "a2", "name": "f"}}),
        user({"functionResponse": {"id": "a2", "name": "f", "response": {"n": 2}}},
             answer("f", n=1)),
    )
    assert got[1].tool_calls == (ToolCall("a1", "f", "{}"), ToolCall("a2", "f", "{}"))
    assert [(m.tool_call_id, m.text) for m in got[2:]] == [("a2", '{"n":2}'), ("a1", '{"n":1}')]


def test_function_responses_come_before_the_other_parts_of_their_turn() -> None:
    got = messages(user({"text": "go"}), model_turn(call("f")),
                   user({"text": "and then?"}, answer("f", ok=True)))
    assert [m.role for m in got] == ["user", "assistant", "tool", "user"]
    assert got[3].text == "and then?"


def test_thoughts_of_earlier_model_turns_are_dropped() -> None:
    got = messages(
        user({"text": "a"}),
        model_turn({"text": "pondering", "thought": True, "thoughtSignature": "c2ln"},
                   {"text": "Answer.", "thoughtSignature": "c2ln"}),
        model_turn({"text": "only a thought", "thought": True}),
        user({"text": "b"}),
    )
    assert got == (
        Message(role="user", content=(TextPart("a"),)),
        Message(role="assistant", content=(TextPart("Answer."),)),
        Message(role="user", content=(TextPart("b"),)),
    )


def test_generation_config_maps_to_canonical_fields_and_extra() -> None:
    thinking = {"include_thoughts": True, "thinking_budget": 128, "thinkingLevel": "low"}
    config = {
        "maxOutputTokens": 100, "temperature": 0, "topP": 1, "stopSequences": ["END", "STOP"],
        "candidateCount": 1, "seed": -3, "topK": 40.0, "presencePenalty": 0.5,
        "frequencyPenalty": -1, "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT"}, "responseModalities": ["TEXT"],
        "responseLogprobs": True, "logprobs": 3, "mediaResolution": "MEDIA_RESOLUTION_LOW",
        "thinkingConfig": thinking,
    }
    request = parse(body(generationConfig=config))
    assert (request.max_tokens, request.temperature, request.top_p, request.stop,
            request.seed) == (100, 0.0, 1.0, ("END", "STOP"), -3)
    assert dict(request.extra) == {
        "topK": 40.0, "presencePenalty": 0.5, "frequencyPenalty": -1,
        "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"},
        "responseModalities": ["TEXT"], "responseLogprobs": True, "logprobs": 3,
        "mediaResolution": "MEDIA_RESOLUTION_LOW",
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 128,
                           "thinkingLevel": "low"},
    }
    assert wants_thoughts(request)


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [(None, False), ({"includeThoughts": False}, False), ({"thinkingBudget": 0}, False),
     ({"includeThoughts": True}, True)],
)
def test_wants_thoughts_only_when_the_client_asked(thinking: Any, expected: bool) -> None:
    request = parse(body(generationConfig={"thinkingConfig": thinking}))
    assert wants_thoughts(request) is expected
    assert wants_thoughts(attrs.evolve(request, dialect="openai")) is False


def test_null_fields_count_as_absent() -> None:
    assert parse(body(generationConfig={"temperature": None}, tools=None,
                      systemInstruction=None)) == parse(body())


def test_safety_settings_are_kept_in_extra_with_names_or_numbers() -> None:
    settings = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
                {"category": 7, "threshold": 4, "method": "SEVERITY"}]
    assert parse(body(safetySettings=settings)).extra == {"safetySettings": settings}


def test_gemini_schemas_become_json_schema() -> None:
    parameters = {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "a city", "nullable": True},
            "days": {"type": 3, "minimum": 1},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]},
                     "max_items": 3},
            "either": {"any_of": [{"type": "NUMBER"}, {"type": "BOOLEAN"}]},
            "my_field": {"type": "TYPE_UNSPECIFIED"},
        },
        "required": ["city"],
        "property_ordering": ["city", "days"],
    }
    [tool] = parse(body(tools=[{"functionDeclarations": [
        {"name": "plan", "description": "Plan a trip", "parameters": parameters,
         "response": {"type": "STRING"}}]}])).tools
    assert tool == Tool("plan", "Plan a trip", {
        "type": "object",
        "properties": {
            "city": {"type": ["string", "null"], "description": "a city"},
            "days": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]},
                     "maxItems": 3},
            "either": {"anyOf": [{"type": "number"}, {"type": "boolean"}]},
            "my_field": {},  # property names are data, never renamed
        },
        "required": ["city"],
        "propertyOrdering": ["city", "days"],
    })


def test_json_schema_parameters_are_taken_as_they_are() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}},
              "additionalProperties": False, "required": ["q"]}
    tools = [{"functionDeclarations": [
        {"name": "lookup", "parametersJsonSchema": schema,
         "response_json_schema": {"type": "string"}},
        {"name": "now"},
    ]}, {"function_declarations": [{"name": "later"}]}]
    assert parse(body(tools=tools)).tools == (
        Tool("lookup", None, schema), Tool("now"), Tool("later"))


TWO_TOOLS = [{"functionDeclarations": [{"name": "f"}, {"name": "g"}, {"name": "h"}]}]


@pytest.mark.parametrize(
    ("config", "choice", "names"),
    [
        ({}, None, "fgh"),
        ({"mode": "MODE_UNSPECIFIED"}, None, "fgh"),
        ({"mode": "AUTO"}, "auto", "fgh"),
        ({"mode": "NONE"}, "none", "fgh"),
        ({"mode": "ANY"}, "required", "fgh"),
        ({"mode": "VALIDATED"}, "auto", "fgh"),
        ({"mode": 1}, "auto", "fgh"),
        ({"mode": 2}, "required", "fgh"),
        ({"mode": 3}, "none", "fgh"),
        ({"mode": "ANY", "allowedFunctionNames": ["g"]},
         {"type": "function", "function": {"name": "g"}}, "fgh"),
        # Several allowed names: the tool list itself says which ones.
        ({"mode": "ANY", "allowedFunctionNames": ["h", "f"]}, "required", "fh"),
        ({"mode": "VALIDATED", "allowedFunctionNames": ["g", "h"]}, "auto", "gh"),
    ],
)
def test_function_calling_modes(config: dict[str, Any], choice: Any, names: str) -> None:
    request = parse(body(tools=TWO_TOOLS, toolConfig={"functionCallingConfig": config}))
    assert request.tool_choice == choice
    assert "".join(t.name for t in request.tools) == names


# ---------------------------------------------------------------------------------------
# parse_request: rejections, each blaming the right param

F = {"functionDeclarations": [{"name": "f"}]}
FC = "tools.0.functionDeclarations.0"
GC = "generationConfig"
TC = "toolConfig.functionCallingConfig"
P0 = "contents.0.parts.0"


def part(p: dict[str, Any]) -> dict[str, Any]:
    return body(contents=[user(p)])


def gen(**config: Any) -> dict[str, Any]:
    return body(generationConfig=config)


def calling(**config: Any) -> dict[str, Any]:
    return body(tools=[F], toolConfig={"functionCallingConfig": config})


def declared(**decl: Any) -> dict[str, Any]:
    return body(tools=[{"functionDeclarations": [decl]}])


REJECTIONS: list[tuple[str, Any, str | None]] = [
    ("array body", [], None),
    ("null body", None, None),
    ("unknown field", body(foo=1), "foo"),
    ("routing field api_key", body(api_key="AIza-x"), "api_key"),
    ("vertex labels", body(labels={"a": "b"}), "labels"),
    ("cached content", body(cachedContent="cachedContents/x"), "cachedContent"),
    ("cached content snake", body(cached_content="cachedContents/x"), "cachedContent"),
    ("field in both cases", body(generationConfig={}, generation_config={}), "generationConfig"),
    ("model not a string", body(model=5), "model"),
    ("missing contents", body(contents=DROP), "contents"),
    ("empty contents", body(contents=[]), "contents"),
    ("contents object", body(contents={"parts": []}), "contents"),
    ("content not object", body(contents=["hi"]), "contents.0"),
    ("content unknown field", body(contents=[{"parts": [{"text": "a"}], "x": 1}]),
     "contents.0.x"),
    ("system role in contents", body(contents=[{"role": "system", "parts": [{"text": "a"}]}]),
     "contents.0.role"),
    ("numeric role", body(contents=[{"role": 1, "parts": [{"text": "a"}]}]), "contents.0.role"),
    ("missing parts", body(contents=[{"role": "user"}]), "contents.0.parts"),
    ("empty parts", body(contents=[user()]), "contents.0.parts"),
    ("second turn blamed", body(contents=[user({"text": "a"}), user({"text": 1})]),
     "contents.1.parts.0.text"),
    ("part not object", body(contents=[{"parts": ["hi"]}]), P0),
    ("empty part", part({}), P0),
    ("part with two kinds", part({"text": "a", "inlineData": {}}), P0),
    ("part unknown field", part({"text": "a", "bogus": 1}), f"{P0}.bogus"),
    ("code execution part", part({"executableCode": {"code": "1"}}), f"{P0}.executableCode"),
    ("text number", part({"text": 5}), f"{P0}.text"),
    ("pdf inline data", part({"inlineData": {"mimeType": "application/pdf", "data": "AA=="}}),
     f"{P0}.inlineData.mimeType"),
    ("inline data without type", part({"inlineData": {"data": "AA=="}}),
     f"{P0}.inlineData.mimeType"),
    ("inline data not base64", part({"inlineData": {"mimeType": "image/png", "data": "a b"}}),
     f"{P0}.inlineData.data"),
    ("inline data empty", part({"inlineData": {"mimeType": "image/png", "data": ""}}),
     f"{P0}.inlineData.data"),
    ("inline data unknown field",
     part({"inlineData": {"mimeType": "image/png", "data": "AA==", "x": 1}}),
     f"{P0}.inlineData.x"),
    ("gs file uri", part({"fileData": {"fileUri": "gs://bucket/a.png"}}),
     f"{P0}.fileData.fileUri"),
    ("video file", part({"fileData": {"fileUri": "https://e.test/v", "mimeType": "video/mp4"}}),
     f"{P0}.fileData.mimeType"),
    ("function call from the user", part(call("f")), f"{P0}.functionCall"),
    ("function response from the model",
     body(contents=[model_turn(answer("f"))]), f"{P0}.functionResponse"),
    ("function call without name",
     body(contents=[model_turn({"functionCall": {"args": {}}})]), f"{P0}.functionCall.name"),
    ("function call list args",
     body(contents=[model_turn({"functionCall": {"name": "f", "args": [1]}})]),
     f"{P0}.functionCall.args"),
    ("function call numeric id",
     body(contents=[model_turn({"functionCall": {"name": "f", "id": 1}})]),
     f"{P0}.functionCall.id"),
    ("function response string",
     body(contents=[model_turn(call("f")), user({"functionResponse": {
         "name": "f", "response": "ok"}})]), "contents.1.parts.0.functionResponse.response"),
    ("function response answering nothing", part(answer("f", ok=1)), P0),
    ("function response of another name",
     body(contents=[model_turn(call("f")), user(answer("g"))]), "contents.1.parts.0"),
    ("function response answering twice",
     body(contents=[model_turn(call("f")), user(answer("f"), answer("f"))]),
     "contents.1.parts.1"),
    ("function response with unknown id",
     body(contents=[model_turn(call("f")), user({"functionResponse": {
         "id": "zz", "name": "f", "response": {}}})]), "contents.1.parts.0"),
    ("user thought", part({"text": "a", "thought": True}), f"{P0}.thought"),
    ("thought not boolean", body(contents=[model_turn({"text": "a", "thought": "yes"})]),
     f"{P0}.thought"),
    ("numeric thought signature", part({"text": "a", "thoughtSignature": 1}),
     f"{P0}.thoughtSignature"),
    ("nothing but thoughts", body(contents=[model_turn({"text": "a", "thought": True})]),
     "contents"),
    ("system instruction string", body(systemInstruction="Be terse."), "systemInstruction"),
    ("system instruction image",
     body(systemInstruction={"parts": [{"inlineData": {"mimeType": "image/png",
                                                       "data": "AA=="}}]}),
     "systemInstruction.parts.0.inlineData"),
    ("system instruction without parts", body(systemInstruction={"parts": []}),
     "systemInstruction.parts"),
    ("system instruction numeric role", body(systemInstruction={"role": 1, "parts": []}),
     "systemInstruction.role"),
    ("generation config list", body(generationConfig=[]), GC),
    ("generation config unknown field", gen(speechConfig={}), f"{GC}.speechConfig"),
    ("two candidates", gen(candidateCount=2), f"{GC}.candidateCount"),
    ("max tokens zero", gen(maxOutputTokens=0), f"{GC}.maxOutputTokens"),
    ("max tokens float", gen(maxOutputTokens=1.5), f"{GC}.maxOutputTokens"),
    ("max tokens string", gen(maxOutputTokens="10"), f"{GC}.maxOutputTokens"),
    ("max tokens bool", gen(maxOutputTokens=True), f"{GC}.maxOutputTokens"),
    ("max tokens huge", gen(maxOutputTokens=10**30), f"{GC}.maxOutputTokens"),
    ("temperature too high", gen(temperature=2.5), f"{GC}.temperature"),
    ("temperature negative", gen(temperature=-0.1), f"{GC}.temperature"),
    ("temperature string", gen(temperature="1"), f"{GC}.temperature"),
    ("top_p above one", gen(top_p=1.01), f"{GC}.topP"),
    ("top_k zero", gen(topK=0), f"{GC}.topK"),
    ("six stop sequences", gen(stopSequences=list("abcdef")), f"{GC}.stopSequences"),
    ("stop sequence string", gen(stopSequences="END"), f"{GC}.stopSequences"),
    ("stop sequence number", gen(stopSequences=[1]), f"{GC}.stopSequences"),
    ("seed float", gen(seed=1.5), f"{GC}.seed"),
    ("image output", gen(responseModalities=["TEXT", "IMAGE"]), f"{GC}.responseModalities"),
    ("mime type number", gen(responseMimeType=5), f"{GC}.responseMimeType"),
    ("schema list", gen(responseSchema=[]), f"{GC}.responseSchema"),
    ("logprobs 21", gen(logprobs=21), f"{GC}.logprobs"),
    ("penalty out of range", gen(presencePenalty=3), f"{GC}.presencePenalty"),
    ("include thoughts string", gen(thinkingConfig={"includeThoughts": "yes"}),
     f"{GC}.thinkingConfig.includeThoughts"),
    ("thinking budget float", gen(thinkingConfig={"thinkingBudget": 1.5}),
     f"{GC}.thinkingConfig.thinkingBudget"),
    ("thinking unknown field", gen(thinkingConfig={"effort": "high"}),
     f"{GC}.thinkingConfig.effort"),
    ("tools object", body(tools=F), "tools"),
    ("google search tool", body(tools=[{"googleSearch": {}}]), "tools.0.googleSearch"),
    ("google search tool snake", body(tools=[F, {"google_search": {}}]),
     "tools.1.googleSearch"),
    ("code execution tool", body(tools=[{"codeExecution": {}}]), "tools.0.codeExecution"),
    ("unknown tool kind", body(tools=[{"bogus": {}}]), "tools.0.bogus"),
    ("declarations object", body(tools=[{"functionDeclarations": {"name": "f"}}]),
     "tools.0.functionDeclarations"),
    ("declaration without name", declared(description="x"), f"{FC}.name"),
    ("declaration with empty name", declared(name=""), f"{FC}.name"),
    ("declaration description number", declared(name="f", description=1), f"{FC}.description"),
    ("declaration unknown field", declared(name="f", strict=True), f"{FC}.strict"),
    ("both parameter forms", declared(name="f", parameters={}, parametersJsonSchema={}), FC),
    ("parameters list", declared(name="f", parameters=[]), f"{FC}.parameters"),
    ("json schema list", declared(name="f", parametersJsonSchema=[]),
     f"{FC}.parametersJsonSchema"),
    ("schema type object",
     declared(name="f", parameters={"type": "OBJECT", "properties": {"q": {"type": {}}}}),
     f"{FC}.parameters.properties.q"),
    ("schema property not object",
     declared(name="f", parameters={"type": "OBJECT", "properties": {"q": "STRING"}}),
     f"{FC}.parameters.properties.q"),
    ("tool config unknown field", body(tools=[F], toolConfig={"retrievalConfig": {}}),
     "toolConfig.retrievalConfig"),
    ("calling config unknown field", calling(mode="ANY", strict=True), f"{TC}.strict"),
    ("mode word", calling(mode="SOMETIMES"), f"{TC}.mode"),
    ("mode number", calling(mode=9), f"{TC}.mode"),
    ("allowed names with AUTO", calling(mode="AUTO", allowedFunctionNames=["f"]),
     f"{TC}.allowedFunctionNames"),
    ("allowed names undeclared", calling(mode="ANY", allowedFunctionNames=["g"]),
     f"{TC}.allowedFunctionNames"),
    ("allowed names string", calling(mode="ANY", allowedFunctionNames="f"),
     f"{TC}.allowedFunctionNames"),
    ("safety settings object", body(safetySettings={}), "safetySettings"),
    ("safety setting without threshold",
     body(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT"}]),
     "safetySettings.0.threshold"),
    ("safety setting unknown field",
     body(safetySettings=[{"category": 1, "threshold": 1, "x": 1}]), "safetySettings.0.x"),
]


@pytest.mark.parametrize(
    ("raw", "param"), [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS]
)
def test_rejection_names_its_param(raw: Any, param: str | None) -> None:
    with pytest.raises(RequestError) as info:
        parse(raw)
    assert info.value.param == param
    assert info.value.status == 400
    assert info.value.message


def test_unknown_field_is_named_like_gemini_does() -> None:
    with pytest.raises(RequestError) as info:
        parse(gen(bogus_field=1))
    assert info.value.message == (
        'Invalid JSON payload received. Unknown name "bogus_field" at \'generationConfig\': '
        "Cannot find field."
    )


def test_the_route_must_name_a_model() -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body(), "", stream=False)
    assert info.value.param == "model"


@pytest.mark.parametrize("nested", ["args", "response"])
def test_values_nested_too_deep_are_a_400(nested: str) -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"a": deep}
    turns = [model_turn({"functionCall": {"name": "f", "args": deep if nested == "args"
                                          else {}}})]
    if nested == "response":
        turns.append(user({"functionResponse": {"name": "f", "response": deep}}))
    with pytest.raises(RequestError) as info:
        parse(body(contents=[user({"text": "a"}), *turns]))
    assert info.value.param is not None and info.value.param.endswith(nested)


def test_schemas_nested_too_deep_are_a_400() -> None:
    schema: dict[str, Any] = {"type": "STRING"}
    for _ in range(100):
        schema = {"type": "ARRAY", "items": schema}
    with pytest.raises(RequestError) as info:
        parse(declared(name="f", parameters=schema))
    assert info.value.param is not None and info.value.param.startswith(f"{FC}.parameters")


# ---------------------------------------------------------------------------------------
# The bodies the Google SDKs really send


def genai_client(handler: Any) -> Client:
    transport = httpx.MockTransport(handler)
    return Client(api_key="AIza-test", http_options=types.HttpOptions(
        base_url="http://gateway.test", client_args={"transport": transport}))


def test_google_genai_request_body_is_accepted() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=render_response(
            "r-1", MODEL, text="ok", reasoning="", tool_calls=[], finish="stop", usage=Usage()))

    config = types.GenerateContentConfig(
        system_instruction="Be terse.", max_output_tokens=10, temperature=0.5, top_p=0.9,
        top_k=40, stop_sequences=["x"], candidate_count=1, seed=3,
        response_mime_type="application/json",
        thinking_config=types.ThinkingConfig(thinking_budget=100, include_thoughts=True),
        safety_settings=[types.SafetySetting(category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                                             threshold=types.HarmBlockThreshold.BLOCK_NONE)],
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
            name="lookup", description="Look it up", parameters=types.Schema(
                type=types.Type.OBJECT, properties={"q": types.Schema(type=types.Type.STRING)},
                required=["q"]))])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["lookup"])),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        types.Content(role="user", parts=[
            types.Part(text="hi"), types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png"),
            types.Part.from_uri(file_uri="https://e.test/a.png", mime_type="image/png")]),
        types.Content(role="model", parts=[types.Part(
            function_call=types.FunctionCall(name="lookup", args={"q": "c"}),
            thought_signature=b"sig")]),
        types.Content(role="user", parts=[
            types.Part.from_function_response(name="lookup", response={"r": 1})]),
    ]
    client = genai_client(handler)  # held: a collected Client closes its transport
    reply = client.models.generate_content(model=MODEL, contents=contents, config=config)
    assert reply.text == "ok"
    request = parse(sent[0])
    assert request.messages == (
        Message(role="system", content=(TextPart("Be terse."),)),
        Message(role="user", content=(TextPart("hi"), ImagePart("data:image/png;base64,iVBORw=="),
                                      ImagePart("https://e.test/a.png"))),
        Message(role="assistant", tool_calls=(ToolCall("call_0", "lookup", '{"q":"c"}'),)),
        Message(role="tool", content=(TextPart('{"r":1}'),), tool_call_id="call_0"),
    )
    assert request.tools == (Tool("lookup", "Look it up", {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),)
    assert request.tool_choice == {"type": "function", "function": {"name": "lookup"}}
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (
        10, 0.5, 0.9, 3)
    assert wants_thoughts(request)


def test_google_genai_python_function_tools_are_accepted() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=render_response(
            "r-1", MODEL, text="ok", reasoning="", tool_calls=[], finish="stop", usage=Usage()))

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return city

    client = genai_client(handler)
    client.models.generate_content(model=MODEL, contents="hi", config=(
        types.GenerateContentConfig(
            tools=[get_weather],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))))
    [tool] = parse(sent[0]).tools
    assert tool.name == "get_weather"
    assert tool.parameters == {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}


def test_google_generativeai_rest_request_body_is_accepted() -> None:
    """The old SDK's REST transport sends proto JSON with enums as integers."""
    protos = old_genai.protos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = old_genai.GenerativeModel(
            MODEL, system_instruction="Be terse.",
            generation_config={"max_output_tokens": 10, "temperature": 0.5,
                               "stop_sequences": ["x"], "candidate_count": 1},
            safety_settings={"HARASSMENT": "BLOCK_NONE"},
            tools=[protos.Tool(function_declarations=[protos.FunctionDeclaration(
                name="lookup", description="d", parameters={
                    "type_": "OBJECT", "properties": {"q": {"type_": "STRING"}}})])],
            tool_config={"function_calling_config": {"mode": "ANY"}})
        request = model._prepare_request(contents=[
            protos.Content(role="user", parts=[protos.Part(text="hi")]),
            protos.Content(role="model", parts=[protos.Part(function_call=protos.FunctionCall(
                name="lookup", args={"q": "c"}))]),
            protos.Content(role="user", parts=[
                protos.Part(function_response=protos.FunctionResponse(name="lookup",
                                                                      response={"r": 1})),
                protos.Part(inline_data=protos.Blob(mime_type="image/png", data=b"\x89PNG"))]),
        ], tools=None, tool_config=None)
    stream = rest_base._BaseGenerativeServiceRestTransport._BaseStreamGenerateContent
    transcoded = stream._get_transcoded_request(stream._get_http_options(), request)
    sent = json.loads(stream._get_request_body_json(transcoded))
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": 2}}
    parsed = parse(sent)
    assert parsed.tool_choice == "required"
    assert parsed.tools == (Tool("lookup", "d", {"type": "object",
                                                 "properties": {"q": {"type": "string"}}}),)
    assert [m.role for m in parsed.messages] == ["system", "user", "assistant", "tool", "user"]
    assert parsed.messages[3].text == '{"r":1.0}'
    assert parsed.extra["safetySettings"] == sent["safetySettings"]


# ---------------------------------------------------------------------------------------
# upstream_body

FULL_CLIENT_BODY: dict[str, Any] = {
    "contents": [
        user({"text": "What is in this image?"},
             {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
             {"fileData": {"mimeType": "image/png", "fileUri": "https://example.test/cat.png"}}),
        model_turn({"text": "Let me look."}, call("lookup", q="cat"), call("now")),
        user(answer("lookup", result="a cat"), answer("now", output="noon"),
             {"text": "And so?"}),
        model_turn({"text": "It is a cat."}),
        user({"text": "Thanks"}),
    ],
    "systemInstruction": {"parts": [{"text": "Be terse."}]},
    "generationConfig": {
        "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"],
        "seed": 7, "topK": 20, "responseMimeType": "text/plain",
        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 512},
    },
    "tools": [{"functionDeclarations": [
        {"name": "lookup", "description": "Look it up", "parametersJsonSchema": {
            "type": "object", "properties": {"q": {"type": "string"}}}},
        {"name": "now"},
    ]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                             "allowedFunctionNames": ["lookup"]}},
    "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
}


def test_upstream_body_round_trips_what_parse_request_accepted() -> None:
    sent = upstream_body(parse(FULL_CLIENT_BODY))
    assert sent == FULL_CLIENT_BODY
    assert json.loads(json.dumps(sent)) == sent  # plain JSON types only


def test_upstream_body_is_a_fixed_point_of_parse_request() -> None:
    """Whatever a client wrote, what goes upstream parses back to the same request."""
    first = parse({
        "contents": [
            user({"text": "x"}),
            model_turn(call("f", a=1), call("f", a=2)),
            {"role": "function", "parts": [answer("f", n=1)]},
            user({"text": "more"}, answer("f", n=2)),
        ],
        "tools": [{"function_declarations": [{"name": "f", "parameters": {
            "type": "OBJECT", "properties": {"a": {"type": "INTEGER", "nullable": True}}}}]}],
        "tool_config": {"function_calling_config": {"mode": 1}},
        "generation_config": {"top_k": 3, "stop_sequences": ["a", "b", "c", "d", "e"]},
    })
    assert parse(upstream_body(first)) == first


def test_unset_optional_fields_are_not_sent() -> None:
    assert upstream_body(parse(body())) == {"contents": [user({"text": "hi"})]}


def openai_request(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, **fields)


def test_an_openai_conversation_becomes_gemini_contents() -> None:
    request = openai_request(
        Message(role="system", content=(TextPart("Be terse."),)),
        Message(role="user", content=(TextPart("hi"), TextPart(""),
                                      ImagePart("data:image/png,%89PNG"),
                                      ImagePart("https://e.test/photo?id=1", "low"))),
        Message(role="system", content=(TextPart("Really terse."),)),
        Message(role="assistant"),
        Message(role="assistant", tool_calls=(ToolCall("tc_1", "lookup", '{"q":"cat"}'),
                                              ToolCall("tc_2", "now", ""),
                                              ToolCall("tc_3", "bad", '["not an object"]'))),
        Message(role="tool", tool_call_id="tc_2", content=(TextPart("noon"),)),
        Message(role="tool", tool_call_id="tc_1", content=(TextPart('{"found": "a cat"}'),)),
        Message(role="tool", tool_call_id="tc_9", content=(TextPart("[1, 2]"),)),
        Message(role="assistant", content=(TextPart("A cat, at noon."),)),
        tools=(Tool("lookup", "Find", {"type": "object"}, strict=True), Tool("now")),
        tool_choice="required",
        user="u-1",
    )
    assert upstream_body(request) == {
        "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Really terse."}]},
        "contents": [
            user({"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
                 {"fileData": {"fileUri": "https://e.test/photo?id=1"}}),
            model_turn(call("lookup", q="cat"), call("now"), call("bad")),
            user(answer("now", output="noon"), answer("lookup", found="a cat"),
                 {"functionResponse": {"name": "tc_9", "response": {"output": "[1, 2]"}}}),
            model_turn({"text": "A cat, at noon."}),
        ],
        "tools": [{"functionDeclarations": [
            {"name": "lookup", "description": "Find", "parametersJsonSchema": {"type": "object"}},
            {"name": "now"},
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}},
         {"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ({"type": "allowed_tools"}, None),
    ],
)
def test_tool_choice_becomes_a_function_calling_mode(choice: Any, config: Any) -> None:
    sent = upstream_body(openai_request(Message(role="user", content=(TextPart("a"),)),
                                        tools=(Tool("f"),), tool_choice=choice))
    assert sent.get("toolConfig") == (None if config is None
                                      else {"functionCallingConfig": config})


def test_extra_is_forwarded_only_to_the_gemini_dialect() -> None:
    request = parse(FULL_CLIENT_BODY)
    foreign = upstream_body(attrs.evolve(request, dialect="openai"))
    assert "safetySettings" not in foreign
    assert foreign["generationConfig"] == {"maxOutputTokens": 100, "temperature": 0.5,
                                           "topP": 0.9, "stopSequences": ["END"], "seed": 7}
    openai_extra = openai_request(Message(role="user", content=(TextPart("a"),)),
                                  extra={"logit_bias": {"1": 2}, "topK": 3})
    assert upstream_body(openai_extra) == {"contents": [user({"text": "a"})]}


def test_escaped_lone_surrogates_in_tool_text_never_reach_the_upstream_body() -> None:
    request = openai_request(
        Message(role="assistant", tool_calls=(ToolCall("c", "f", '{"a":"\\ud800"}'),)),
        Message(role="tool", tool_call_id="c", content=(TextPart('{"b":"\\udfff"}'),)),
    )
    json.dumps(upstream_body(request), ensure_ascii=False).encode()  # must not raise


# ---------------------------------------------------------------------------------------
# StreamParser


def chunk(*parts: dict[str, Any], finish: str | None = None, **top: Any) -> str:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return json.dumps({"candidates": [candidate], **top})


def feed_all(*chunks: str) -> list[StreamEvent]:
    parser = StreamParser()
    return [event for data in chunks for event in parser.feed(data)]


USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 20, "totalTokenCount": 36,
         "cachedContentTokenCount": 4, "thoughtsTokenCount": 6}


def test_text_thought_and_usage_chunks() -> None:
    parser = StreamParser()
    assert parser.feed(chunk({"text": "Plan", "thought": True},
                             usageMetadata={"promptTokenCount": 10})) == [ReasoningDelta("Plan")]
    assert not parser.done
    assert parser.feed(chunk({"text": "Hel"}, {"text": "lo"})) == [TextDelta("Hel"),
                                                                    TextDelta("lo")]
    assert parser.feed(chunk({"text": ""}, finish="STOP", usageMetadata=USAGE)) == [
        Finish("stop"), UsageReport(Usage(10, 26, 4, 6))]
    assert parser.done
    assert parser.usage == Usage(10, 26, 4, 6)


def test_function_calls_are_numbered_across_the_stream() -> None:
    events = feed_all(
        chunk({"text": "Let me check."}),
        chunk(call("lookup", q="cat"), call("now")),
        chunk({"functionCall": {"name": "later", "args": {"n": [1, {"x": None}]}},
               "thoughtSignature": "c2ln"}),
        chunk(finish="STOP"),
    )
    assert events == [
        TextDelta("Let me check."),
        ToolCallDelta(index=0, id="call_0", name="lookup", arguments='{"q":"cat"}'),
        ToolCallDelta(index=1, id="call_1", name="now", arguments="{}"),
        ToolCallDelta(index=2, id="call_2", name="later", arguments='{"n":[1,{"x":null}]}'),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("SOMETHING_NEW", "stop"),
    ],
)
def test_finish_reason_mapping(reason: str, expected: FinishReason) -> None:
    assert feed_all(chunk(finish=reason)) == [Finish(expected)]


def test_max_tokens_after_a_function_call_stays_length() -> None:
    assert feed_all(chunk(call("f")), chunk(finish="MAX_TOKENS"))[-1] == Finish("length")


def test_unspecified_finish_reason_is_no_finish() -> None:
    parser = StreamParser()
    assert parser.feed(chunk({"text": "a"}, finish="FINISH_REASON_UNSPECIFIED")) == [
        TextDelta("a")]
    assert not parser.done


def test_the_last_usage_wins_and_is_reported_once_finished() -> None:
    parser = StreamParser()
    for n in (1, 2, 3):
        assert parser.feed(chunk({"text": "x"}, usageMetadata={
            "promptTokenCount": 5, "candidatesTokenCount": n})) == [TextDelta("x")]
    assert parser.feed(chunk(finish="STOP")) == [Finish("stop"), UsageReport(Usage(5, 3))]
    # A usage-only chunk after the finish is reported too; a repeated finish is not.
    assert parser.feed(json.dumps({"usageMetadata": {"promptTokenCount": 5,
                                                     "candidatesTokenCount": 4}})) == [
        UsageReport(Usage(5, 4))]
    assert parser.feed(chunk(finish="STOP")) == []


def test_a_blocked_prompt_finishes_with_content_filter() -> None:
    data = json.dumps({"promptFeedback": {"blockReason": "SAFETY"},
                       "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}})
    parser = StreamParser()
    assert parser.feed(data) == [Finish("content_filter"), UsageReport(Usage(7, 0))]
    assert parser.done


def test_nonsense_usage_counts_read_as_zero() -> None:
    usage = {"promptTokenCount": -5, "candidatesTokenCount": True, "thoughtsTokenCount": "7",
             "cachedContentTokenCount": 1.5}
    assert feed_all(chunk(finish="STOP", usageMetadata=usage)) == [Finish("stop"),
                                                                   UsageReport(Usage())]


def test_candidates_other_than_the_first_and_other_parts_are_ignored() -> None:
    data = json.dumps({"candidates": [
        {"index": 1, "content": {"parts": [{"text": "other"}]}},
        {"content": {"parts": [{"text": "mine"}, {"executableCode": {"code": "1"}},
                               {"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}},
    ]})
    assert feed_all(data) == [TextDelta("mine")]


def test_empty_candidates_and_content_give_no_events() -> None:
    assert feed_all('{"candidates":[]}', '{"candidates":[{"content":{}}]}', "{}",
                    '{"candidates":[{"content":{"role":"model"},"index":0}]}') == []


GEMINI_ERROR = {"error": {
    "code": 400,
    "message": "API key not valid. Please pass a valid API key. "
               "https://generativelanguage.googleapis.com/v1beta/models?key=AIzaSECRET",
    "status": "INVALID_ARGUMENT",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "API_KEY_INVALID", "metadata": {"key": "AIzaSECRET"}}],
}}


def test_upstream_error_event_raises_without_echoing_the_provider_message() -> None:
    with pytest.raises(UpstreamError) as info:
        StreamParser().feed(json.dumps(GEMINI_ERROR))
    error = info.value
    assert not isinstance(error, UpstreamProtocolError)
    for text in (str(error), error.message, repr(error)):
        assert "AIzaSECRET" not in text
        assert "API key" not in text
    assert error.message == "upstream reported an error (INVALID_ARGUMENT)"


@pytest.mark.parametrize(
    ("raw", "label", "status"),
    [
        ({"code": 429, "message": "x", "status": "RESOURCE_EXHAUSTED"}, "RESOURCE_EXHAUSTED",
         429),
        ({"code": 503, "message": "x", "status": "UNAVAILABLE"}, "UNAVAILABLE", 503),
        ({"code": 500, "status": "AIzaSECRET"}, "error", 502),
        ({"code": "AIzaSECRET", "status": ["x"]}, "error", 502),
        ({"code": True}, "error", 502),
        ("AIzaSECRET upstream exploded", "error", 502),
        (["AIzaSECRET"], "error", 502),
    ],
)
def test_upstream_error_of_any_shape_is_labelled_generically(
    raw: Any, label: str, status: int
) -> None:
    error = upstream_error(raw)
    assert error.message == f"upstream reported an error ({label})"
    assert error.status == status
    assert "AIzaSECRET" not in repr(error)


def test_an_upstream_error_with_a_status_code_keeps_its_retry_meaning() -> None:
    error = upstream_error({"code": 429, "status": "RESOURCE_EXHAUSTED"})
    assert isinstance(error, UpstreamStatusError)
    assert (error.upstream_status, error.retryable, error.type) == (429, True, "rate_limit_error")
    assert upstream_error({"code": 400, "status": "INVALID_ARGUMENT"}).retryable is False


@pytest.mark.parametrize("data", ["not json", "", "data: {}", '{"candidates":', "\x00"])
def test_non_json_event_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        StreamParser().feed(data)


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        "1",
        "null",
        '"text"',
        '{"candidates":{"index":0}}',
        '{"candidates":["x"]}',
        '{"candidates":[{"index":"0"}]}',
        '{"candidates":[{"content":"hi"}]}',
        '{"candidates":[{"content":{"parts":{"text":"a"}}}]}',
        '{"candidates":[{"content":{"parts":["a"]}}]}',
        '{"candidates":[{"content":{"parts":[{"text":1}]}}]}',
        '{"candidates":[{"content":{"parts":[{"functionCall":"f"}]}}]}',
        '{"candidates":[{"content":{"parts":[{"functionCall":{"args":{}}}]}}]}',
        '{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":[1]}}]}}]}',
        '{"candidates":[{"finishReason":1}]}',
        '{"candidates":[{"finishReason":["STOP"]}]}',
        '{"usageMetadata":[1]}',
    ],
)
def test_malformed_event_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        StreamParser().feed(data)


def test_deeply_nested_upstream_event_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        StreamParser().feed('{"candidates":' + "[" * 100_000)


def test_lone_surrogates_in_upstream_text_are_replaced() -> None:
    events = feed_all(chunk({"text": "ok\ud800"}, call("f\udfff", a="\ud800")))
    assert events == [TextDelta("ok\ufffd"),
                      ToolCallDelta(index=0, id="call_0", name="f\ufffd",
                                    arguments='{"a":"\ufffd"}')]
    for event in events:
        StreamEncoder("g", "m", sse=True).event(event)


# ---------------------------------------------------------------------------------------
# parse_response


def test_a_whole_answer_gives_the_same_events_as_a_stream() -> None:
    data = json.dumps({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "plan", "thought": True}, {"text": "Hi"}, call("f", a=1)]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash", "responseId": "abc",
    }).encode()
    # Call ids come from the answer's responseId: another turn's calls get others.
    assert parse_response(data) == [
        ReasoningDelta("plan"), TextDelta("Hi"),
        ToolCallDelta(index=0, id="call_abc_0", name="f", arguments='{"a":1}'),
        Finish("tool_calls"), UsageReport(Usage(10, 26, 4, 6)),
    ]


def test_a_whole_answer_to_a_blocked_prompt() -> None:
    data = b'{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"}}'
    assert parse_response(data) == [Finish("content_filter")]


def test_a_whole_answer_that_is_an_error_raises_generically() -> None:
    with pytest.raises(UpstreamError) as info:
        parse_response(json.dumps(GEMINI_ERROR).encode())
    assert not isinstance(info.value, UpstreamProtocolError)
    assert "AIzaSECRET" not in str(info.value)


@pytest.mark.parametrize(
    "data", [b"{}", b'{"candidates":[]}', b"[]", b"not json", b"", b'{"candidates":"x"}',
             b'{"candidates":[{"content":{"parts":[{"text":"\xff"}]}}]}'],
)
def test_malformed_whole_answer_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_response(data)


# ---------------------------------------------------------------------------------------
# StreamEncoder


def sse_encoder(**kwargs: Any) -> StreamEncoder:
    return StreamEncoder("gen-1", MODEL, sse=True, **kwargs)


def payload(event: bytes) -> dict[str, Any]:
    """The JSON of one SSE event, after checking its framing."""
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    line = event[len(b"data: "):-2]
    assert b"\n" not in line and b"\r" not in line
    value = json.loads(line.decode("utf-8"))
    assert isinstance(value, dict)
    return value


def chunk_parts(event: bytes) -> list[dict[str, Any]]:
    parts = payload(event)["candidates"][0]["content"]["parts"]
    assert isinstance(parts, list)
    return parts


def test_a_text_chunk_is_exactly_a_gemini_chunk() -> None:
    assert sse_encoder().event(TextDelta("Hello")) == (
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},'
        b'"index":0}],"modelVersion":"gemini-2.5-flash","responseId":"gen-1"}\n\n'
    )


def test_sse_stream_has_no_opening() -> None:
    assert sse_encoder().start() == b""


def test_a_reasoning_chunk_is_a_thought_part() -> None:
    assert chunk_parts(sse_encoder().event(ReasoningDelta("Hmm"))) == [
        {"text": "Hmm", "thought": True}]


def test_thoughts_can_be_left_out() -> None:
    enc = sse_encoder(thoughts=False)
    assert enc.event(ReasoningDelta("Hmm")) == b""
    assert enc.event(TextDelta("Hi")) != b""


@pytest.mark.parametrize("event", [TextDelta(""), ReasoningDelta(""), UsageReport(Usage(1, 2)),
                                   Finish("stop")])
def test_events_with_nothing_to_say_render_nothing(event: StreamEvent) -> None:
    assert sse_encoder().event(event) == b""


def test_sse_keepalive_is_an_empty_chunk_the_sdks_accept() -> None:
    enc = sse_encoder()
    assert chunk_parts(enc.keepalive) == [{"text": ""}]
    assert payload(enc.keepalive)["responseId"] == "gen-1"
    assert types.GenerateContentResponse.model_validate_json(
        enc.keepalive[6:]).text == ""


def test_tool_call_deltas_are_held_and_sent_whole() -> None:
    enc = sse_encoder()
    assert enc.event(ToolCallDelta(index=0, id="c1", name="lookup", arguments='{"q":')) == b""
    assert enc.event(ToolCallDelta(index=1, id="c2", name="now")) == b""
    assert enc.event(ToolCallDelta(index=0, arguments='"c\\"a\\nt"}')) == b""
    assert enc.event(ToolCallDelta(index=2, id="c3", name="bad", arguments="{oops")) == b""
    flushed = enc.event(Finish("tool_calls"))
    assert chunk_parts(flushed) == [
        {"functionCall": {"name": "lookup", "args": {"q": 'c"a\nt'}}},
        {"functionCall": {"name": "now", "args": {}}},
        {"functionCall": {"name": "bad", "args": {}}},  # invalid JSON arguments
    ]
    assert enc.event(Finish("tool_calls")) == b""  # sent once


def test_held_tool_calls_go_out_before_the_next_text() -> None:
    enc = sse_encoder()
    enc.event(ToolCallDelta(index=0, id="c1", name="f", arguments="{}"))
    out = enc.event(TextDelta("after"))
    first, second = (e + b"\n\n" for e in out.split(b"\n\n")[:2])
    assert chunk_parts(first) == [{"functionCall": {"name": "f", "args": {}}}]
    assert chunk_parts(second) == [{"text": "after"}]


def test_held_tool_calls_go_out_with_the_tail() -> None:
    enc = sse_encoder()
    enc.event(ToolCallDelta(index=0, id="c1", name="f", arguments='{"a":1}'))
    events = [e + b"\n\n" for e in enc.tail(Usage(1, 2), "tool_calls").split(b"\n\n")[:-1]]
    assert len(events) == 2
    assert chunk_parts(events[0]) == [{"functionCall": {"name": "f", "args": {"a": 1}}}]
    assert payload(events[1])["candidates"][0]["finishReason"] == "STOP"


def test_the_tail_carries_finish_reason_and_usage() -> None:
    tail = sse_encoder().tail(Usage(10, 20, cached_tokens=3, reasoning_tokens=5), "length")
    assert payload(tail) == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                        "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 15,
                          "totalTokenCount": 30, "cachedContentTokenCount": 3,
                          "thoughtsTokenCount": 5},
        "modelVersion": MODEL,
        "responseId": "gen-1",
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "STOP"), (None, "STOP"), ("length", "MAX_TOKENS"), ("tool_calls", "STOP"),
     ("content_filter", "SAFETY"), ("error", "OTHER")],
)
def test_tail_finish_reasons(finish: FinishReason | None, reason: str) -> None:
    assert payload(sse_encoder().tail(Usage(), finish))["candidates"][0]["finishReason"] == reason


def test_the_error_event_is_google_s_error_shape_and_drops_held_calls() -> None:
    enc = sse_encoder()
    enc.event(ToolCallDelta(index=0, id="c1", name="f", arguments='{"a":'))
    error = UpstreamTimeout("the upstream went silent mid-stream", deadline="idle")
    assert enc.error(error, Usage(1, 2)) == (
        b'data: {"error":{"code":504,"message":"the upstream went silent mid-stream",'
        b'"status":"DEADLINE_EXCEEDED"}}\n\n'
    )


def array_encoder(**kwargs: Any) -> StreamEncoder:
    return StreamEncoder("gen-1", MODEL, sse=False, **kwargs)


def test_json_array_stream_framing() -> None:
    enc = array_encoder()
    assert enc.keepalive == b"\n"
    assert enc.start() == b"["
    first = enc.event(TextDelta("a"))
    assert first.startswith(b'{"candidates":')
    second = enc.event(TextDelta("b"))
    assert second.startswith(b',\r\n{"candidates":')
    tail = enc.tail(Usage(1, 1), "stop")
    assert tail.startswith(b",\r\n{") and tail.endswith(b"}]")
    stream = json.loads(b"[" + first + second + tail)
    assert [c["candidates"][0]["content"]["parts"] for c in stream] == [
        [{"text": "a"}], [{"text": "b"}], [{"text": ""}]]


@pytest.mark.parametrize("before", [[], [TextDelta("a")]])
def test_json_array_error_ends_the_array(before: list[StreamEvent]) -> None:
    enc = array_encoder()
    out = enc.start() + b"".join(enc.event(e) for e in before)
    out += enc.error(InternalError("late"), Usage())
    stream = json.loads(out)
    assert stream[-1] == {"error": {"code": 500, "message": "late", "status": "INTERNAL"}}
    assert len(stream) == len(before) + 1


STREAM_EVENTS: list[StreamEvent] = [
    ReasoningDelta("hmm"), TextDelta("Hi"), TextDelta(""),
    ToolCallDelta(index=0, id="c1", name="f", arguments='{"a":'), UsageReport(Usage(1, 1)),
    ToolCallDelta(index=0, arguments="1}"), TextDelta(" there"), Finish("stop"),
]


@settings(max_examples=80)
@given(st.lists(st.integers(0, len(STREAM_EVENTS) + 1), max_size=8),
       st.booleans())
def test_json_array_with_keepalives_anywhere_is_one_json_list(
    keepalive_at: list[int], failed: bool
) -> None:
    enc = array_encoder()
    pieces = [enc.start(), *(enc.event(e) for e in STREAM_EVENTS)]
    pieces.append(enc.error(InternalError("x"), Usage()) if failed
                  else enc.tail(Usage(3, 4), "stop"))
    for at in sorted(keepalive_at, reverse=True):
        pieces.insert(max(1, at), enc.keepalive)  # never before the opening bracket
    value = json.loads(b"".join(pieces))
    assert isinstance(value, list)
    assert len(value) == 5  # reasoning, text, the call, text, then the tail or the error


TRICKY_TEXT = [
    'say "hi"',
    "back\\slash \\u0000 \\n",
    "line\nbreak\r\nand\rcarriage",
    "data: {}\n\ndata: [DONE]",
    "tab\tnul\x00bell\x07",
    "h\u00e9llo \u4e16\u754c \U0001f30d \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2028\u2029\x85",
    "]},{\"candidates\":[",
    "",
]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_text_survives_any_characters(text: str) -> None:
    enc = StreamEncoder('gen-"\n\u2028', 'm"\\', sse=True)
    for event in (enc.event(TextDelta(text or "x")), enc.event(ReasoningDelta(text or "x")),
                  enc.keepalive, enc.tail(Usage(), None), enc.error(InternalError(text), None)):
        # The JS SDKs split events with /^data: (.*)\n\n/, where "." stops at U+2028/9.
        assert "\u2028".encode() not in event and "\u2029".encode() not in event
        value = payload(event)
        if "candidates" in value:
            assert (value["responseId"], value["modelVersion"]) == ('gen-"\n\u2028', 'm"\\')
    assert chunk_parts(enc.event(TextDelta(text or "x"))) == [{"text": text or "x"}]
    assert payload(enc.error(InternalError(text), None))["error"]["message"] == text


def test_a_gemini_stream_never_splices() -> None:
    enc = sse_encoder()
    assert enc.splices is None
    with pytest.raises(NotImplementedError):
        enc.splice("{}", 0)


# ---------------------------------------------------------------------------------------
# The encoder read back by our own parser

SAFE_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1,
                    max_size=20)
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), SAFE_TEXT)
ITEMS = st.one_of(
    st.tuples(st.just("text"), SAFE_TEXT),
    st.tuples(st.just("reasoning"), SAFE_TEXT),
    st.tuples(st.just("call"), st.sampled_from(["lookup", "now", "f_1"]),
              st.dictionaries(SAFE_TEXT, JSON_VALUE, max_size=3)),
)
GEMINI_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "content_filter": "content_filter",
    "tool_calls": "stop",
}


def encoded(enc: StreamEncoder, events: list[StreamEvent], usage: Usage,
            finish: FinishReason) -> list[str]:
    """The chunks an encoder wrote, as the parser receives them (keepalives included)."""
    pieces = [enc.start()]
    for event in events:
        pieces += [enc.event(event), enc.keepalive]
    pieces.append(enc.tail(usage, finish))
    raw = b"".join(pieces)
    if enc.keepalive == b"\n":
        return [json.dumps(element) for element in json.loads(raw)]
    return [event.data for event in Decoder().feed(raw)]


@settings(max_examples=150)
@given(items=st.lists(ITEMS, max_size=10), sse=st.booleans(), data=st.data(),
       finish=st.sampled_from(["stop", "length", "content_filter", "tool_calls"]))
def test_the_parser_reads_back_what_the_encoder_wrote(
    items: list[Any], sse: bool, data: st.DataObject, finish: FinishReason
) -> None:
    events: list[StreamEvent] = []
    expected: list[StreamEvent] = []
    calls = 0
    for item in items:
        if item[0] == "text":
            events.append(TextDelta(item[1]))
            expected.append(TextDelta(item[1]))
        elif item[0] == "reasoning":
            events.append(ReasoningDelta(item[1]))
            expected.append(ReasoningDelta(item[1]))
        else:
            _, name, args = item
            text = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
            cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=3)))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            events.append(ToolCallDelta(index=calls, id=f"up_{calls}", name=name,
                                        arguments=pieces[0]))
            events.extend(ToolCallDelta(index=calls, arguments=p) for p in pieces[1:])
            expected.append(ToolCallDelta(index=calls, id=f"call_gen-1_{calls}", name=name,
                                          arguments=text))
            calls += 1
    usage = Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=2, reasoning_tokens=3)
    reason = GEMINI_FINISH[finish]
    expected += [Finish("tool_calls" if calls and reason == "stop" else reason),
                 UsageReport(usage)]
    parser = StreamParser()
    enc = StreamEncoder("gen-1", MODEL, sse=sse)
    got = [e for chunk_data in encoded(enc, [*events, Finish(finish)], usage, finish)
           for e in parser.feed(chunk_data)]
    assert got == expected
    assert parser.done


# ---------------------------------------------------------------------------------------
# render_response and error_body


def render(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "text": "Hello \"world\"\n\U0001f30d",
        "reasoning": "",
        "tool_calls": [],
        "finish": "stop",
        "usage": Usage(10, 20, 4, 6),
    }
    args.update(changes)
    value = json.loads(render_response("gen-1", MODEL, **args).decode("utf-8"))
    assert isinstance(value, dict)
    return value


def test_render_response_text_answer() -> None:
    assert render() == {
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": "Hello \"world\"\n\U0001f30d"}]},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 14,
                          "totalTokenCount": 30, "cachedContentTokenCount": 4,
                          "thoughtsTokenCount": 6},
        "modelVersion": MODEL,
        "responseId": "gen-1",
    }


def test_render_response_with_thoughts_and_function_calls() -> None:
    value = render(text="", reasoning="plan", finish="tool_calls", tool_calls=[
        ToolCall("call_0", "lookup", '{"q":"cat"}'), ToolCall("call_1", "now", "")])
    assert value["candidates"][0]["content"]["parts"] == [
        {"text": "plan", "thought": True},
        {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
        {"functionCall": {"name": "now", "args": {}}},
    ]
    assert value["candidates"][0]["finishReason"] == "STOP"


def test_an_empty_answer_still_has_a_text_part() -> None:
    value = render(text="", finish="content_filter")
    assert value["candidates"][0]["content"]["parts"] == [{"text": ""}]
    assert value["candidates"][0]["finishReason"] == "SAFETY"


def test_a_rendered_response_parses_back_to_its_events() -> None:
    rendered = render_response("g", "m", text="Hi", reasoning="plan",
                               tool_calls=[ToolCall("x", "f", '{"a":1}')], finish="tool_calls",
                               usage=Usage(3, 4, 1, 2))
    assert parse_response(rendered) == [
        ReasoningDelta("plan"), TextDelta("Hi"),
        ToolCallDelta(index=0, id="call_g_0", name="f", arguments='{"a":1}'),
        Finish("tool_calls"), UsageReport(Usage(3, 4, 1, 2)),
    ]


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (RequestError("bad"), 400, "INVALID_ARGUMENT"),
        (ModelNotFound(), 400, "INVALID_ARGUMENT"),
        (AuthenticationError(), 401, "UNAUTHENTICATED"),
        (InsufficientCredits("no credits"), 402, "FAILED_PRECONDITION"),
        (NotFound("no route"), 404, "NOT_FOUND"),
        (BodyTooLarge("too big"), 413, "INVALID_ARGUMENT"),
        (RateLimited("slow down"), 429, "RESOURCE_EXHAUSTED"),
        (UpstreamStatusError("upstream answered HTTP 429", upstream_status=429), 429,
         "RESOURCE_EXHAUSTED"),
        (InternalError(), 500, "INTERNAL"),
        (UpstreamError("upstream failed"), 502, "UNAVAILABLE"),
        (NoProviderAvailable("none"), 503, "UNAVAILABLE"),
        (UpstreamTimeout("slow", deadline="total"), 504, "DEADLINE_EXCEEDED"),
    ],
)
def test_error_body_has_google_s_shape(error: GatewayError, code: int, status: str) -> None:
    value = json.loads(error_body(error))
    assert value["error"]["code"] == code == error.status
    assert value["error"]["status"] == status
    assert value["error"]["message"] == error.message


def test_error_body_names_the_field_and_the_request_in_details() -> None:
    error = RequestError('bad "x"', param="generationConfig.topP")
    assert json.loads(error_body(error, "req-1")) == {"error": {
        "code": 400, "message": 'bad "x"', "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "generationConfig.topP", "description": 'bad "x"'}]},
            {"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": "req-1"},
        ],
    }}
    assert error_body(AuthenticationError()) == (
        b'{"error":{"code":401,"message":"Invalid API key","status":"UNAUTHENTICATED"}}')


# ---------------------------------------------------------------------------------------
# The SDKs reading what the encoder wrote

SDK_EVENTS: list[StreamEvent] = [
    ReasoningDelta("Thinking it over."),
    TextDelta("Hello"),
    TextDelta(", w\u00f6rld \u2028!"),
    ToolCallDelta(index=0, id="c1", name="get_weather", arguments='{"city":'),
    ToolCallDelta(index=0, arguments='"Paris"}'),
    ToolCallDelta(index=1, id="c2", name="now", arguments=""),
    Finish("tool_calls"),
    UsageReport(Usage(12, 30, 4, 10)),
]


def sdk_stream(*, sse: bool, thoughts: bool = True, fail: bool = False) -> list[bytes]:
    enc = StreamEncoder("gen-1", MODEL, sse=sse, thoughts=thoughts)
    pieces = [enc.start(), enc.keepalive]
    for event in SDK_EVENTS:
        pieces += [enc.event(event), enc.keepalive]
    pieces.append(enc.error(UpstreamError("upstream failed"), Usage()) if fail
                  else enc.tail(Usage(12, 30, 4, 10), "tool_calls"))
    return [p for p in pieces if p]


def test_every_chunk_validates_as_a_google_genai_response() -> None:
    chunks = [event.data for event in Decoder().feed(b"".join(sdk_stream(sse=True)))]
    responses = [types.GenerateContentResponse.model_validate_json(c) for c in chunks]
    assert "".join(r.text or "" for r in responses) == "Hello, w\u00f6rld \u2028!"
    calls = [c for r in responses for c in r.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                 ("now", {})]
    assert responses[-1].usage_metadata == types.GenerateContentResponseUsageMetadata(
        prompt_token_count=12, candidates_token_count=20, total_token_count=42,
        cached_content_token_count=4, thoughts_token_count=10)
    assert responses[-1].candidates and responses[-1].candidates[0].finish_reason == "STOP"
    assert all(r.response_id == "gen-1" and r.model_version == MODEL for r in responses)


def serve(pieces: list[bytes]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get("alt") == "sse"
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=httpx.ByteStream(b"".join(pieces)))
    return handler


def test_google_genai_streams_text_thoughts_calls_and_usage() -> None:
    client = genai_client(serve(sdk_stream(sse=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ``.text`` warns about function-call parts
        chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
        text = "".join(c.text or "" for c in chunks)
    assert text == "Hello, w\u00f6rld \u2028!"
    thoughts = [p.text for c in chunks for p in (c.candidates[0].content.parts or [])
                if c.candidates and c.candidates[0].content and p.thought]
    assert thoughts == ["Thinking it over."]
    calls = [(fc.name, fc.args) for c in chunks for fc in c.function_calls or []]
    assert calls == [("get_weather", {"city": "Paris"}), ("now", {})]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 42


def test_google_genai_raises_the_mid_stream_error() -> None:
    client = genai_client(serve(sdk_stream(sse=True, fail=True)))
    seen = []
    with pytest.raises(errors.ServerError) as info:
        for c in client.models.generate_content_stream(model=MODEL, contents="hi"):
            seen.append(c)
    assert info.value.code == 502
    assert info.value.status == "UNAVAILABLE"
    assert len(seen) > 3


def test_google_genai_reads_a_whole_answer() -> None:
    rendered = render_response("gen-1", MODEL, text="Hi", reasoning="plan",
                               tool_calls=[ToolCall("c", "f", '{"a":1}')],
                               finish="tool_calls", usage=Usage(3, 4, 1, 2))
    client = genai_client(lambda request: httpx.Response(200, content=rendered))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reply = client.models.generate_content(
            model=MODEL, contents="hi",
            config=types.GenerateContentConfig(
                automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
        assert reply.text == "Hi"
    assert reply.function_calls and reply.function_calls[0].args == {"a": 1}
    assert reply.usage_metadata and reply.usage_metadata.thoughts_token_count == 2


def test_google_genai_reads_our_error_body() -> None:
    error = RequestError("'temperature' must be a number between 0 and 2",
                         param="generationConfig.temperature")
    client = genai_client(lambda request: httpx.Response(400, content=error_body(error, "r-1")))
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="hi")
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message == error.message


class _StreamedBody:
    """What google-api-core's ``ResponseIterator`` reads from a ``requests`` response."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def iter_content(self, decode_unicode: bool) -> Any:
        return (p.decode() for p in self.pieces)

    def close(self) -> None:
        pass


def test_every_array_element_parses_as_a_generativelanguage_proto() -> None:
    elements = json.loads(b"".join(sdk_stream(sse=False)))
    for element in elements:
        OldProto.from_json(json.dumps(element), ignore_unknown_fields=True)
    last = OldProto.from_json(json.dumps(elements[-1]), ignore_unknown_fields=True)
    assert last.usage_metadata.total_token_count == 42
    assert last.candidates[0].finish_reason.name == "STOP"


def test_google_generativeai_streams_the_json_array() -> None:
    """The old SDK's REST transport: no ``alt=sse``, one JSON array read incrementally."""
    iterator = ResponseIterator(_StreamedBody(sdk_stream(sse=False, thoughts=False)), OldProto)
    response = old_types.GenerateContentResponse.from_iterator(iterator)
    texts = []
    for piece in response:
        if piece.parts and "text" in piece.parts[0]:
            texts.append(piece.text)
    assert "".join(texts) == "Hello, w\u00f6rld \u2028!"
    calls = [type(p).to_dict(p)["function_call"] for p in response.parts if "function_call" in p]
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                       ("now", {})]
    assert response.usage_metadata.prompt_token_count == 12
    assert response.usage_metadata.candidates_token_count == 20


def test_upstream_call_ids_are_kept_or_unique_per_answer() -> None:
    def answer(response_id: str, part: dict[str, Any]) -> bytes:
        return json.dumps({"candidates": [{"content": {"role": "model", "parts": [part]},
                                           "finishReason": "STOP", "index": 0}],
                           "responseId": response_id}).encode()

    given = {"functionCall": {"name": "f", "args": {}, "id": "fc-123"}}
    bare = {"functionCall": {"name": "f", "args": {}}}
    assert parse_response(answer("r1", given))[0] == ToolCallDelta(
        index=0, id="fc-123", name="f", arguments="{}")
    first, second = parse_response(answer("r1", bare))[0], parse_response(answer("r2", bare))[0]
    assert isinstance(first, ToolCallDelta) and isinstance(second, ToolCallDelta)
    assert first.id != second.id
