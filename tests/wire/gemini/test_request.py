"""Gemini client requests: the bodies ``parse_request`` accepts and the canonical values it
gives, each rejection blaming the right field, and the bodies the Google SDKs really send.

Pure: dicts in, canonical values out. The SDKs' bodies are captured offline (google-genai
over an ``httpx.MockTransport``).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import attrs
import httpx
import pytest

from gateway.canonical import (
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    Reasoning,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    Usage,
)
from gateway.errors import RequestError
from gateway.wire.gemini.render import render_response, wants_thoughts
from gateway.wire.gemini.request import parse_request
from tests.support.wire_gemini import (
    DROP,
    MODEL,
    answer,
    body,
    call,
    genai_client,
    model_turn,
    parse,
    user,
)

with warnings.catch_warnings():
    # Both SDKs warn on import (Python 3.11 support ending; google-generativeai deprecated).
    warnings.simplefilter("ignore")
    import google.generativeai as old_genai
    from google.ai.generativelanguage_v1beta.services.generative_service.transports import (
        rest_base,
    )
    from google.genai import types


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
        raw=body(),
    )
    assert request.features == {}


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
    assert meaning(parse(snake)) == meaning(parse(camel))


def meaning(request: ChatRequest) -> ChatRequest:
    """What a request means, whatever its spelling: not the raw body, nor where each
    feature was asked for."""
    return attrs.evolve(request, raw={},
                        features=dict.fromkeys(request.features, ""))


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


def test_a_model_turn_keeps_its_thoughts_and_signature_for_gemini() -> None:
    got = messages(
        user({"text": "a"}),
        model_turn({"text": "pondering", "thought": True, "thoughtSignature": "c2ln"},
                   {"text": "Answer.", "thoughtSignature": "c2ln"}),
        model_turn({"text": "only a thought", "thought": True}),
        user({"text": "b"}),
    )
    # A turn of thoughts alone, unsigned, is left out: no provider reads it back.
    assert got == (
        Message(role="user", content=(TextPart("a"),)),
        Message(role="assistant", content=(TextPart("Answer."),), reasoning="pondering",
                signature="c2ln", signed_by="gemini"),
        Message(role="user", content=(TextPart("b"),)),
    )


def test_generation_config_maps_to_canonical_fields_and_features() -> None:
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
            request.seed, request.top_k, request.presence_penalty,
            request.frequency_penalty) == (100, 0.0, 1.0, ("END", "STOP"), -3, 40, 0.5, -1.0)
    assert request.response_format == ResponseFormat("json_schema", {"type": "object"})
    assert request.reasoning == Reasoning(effort="low", budget=128, include=True)
    assert request.features == {
        "temperature": "generationConfig.temperature", "top_p": "generationConfig.topP",
        "stop": "generationConfig.stopSequences", "seed": "generationConfig.seed",
        "top_k": "generationConfig.topK",
        "presence_penalty": "generationConfig.presencePenalty",
        "frequency_penalty": "generationConfig.frequencyPenalty",
        "response_format": "generationConfig.responseMimeType",
        "reasoning": "generationConfig.thinkingConfig",
        # Gemini's own: only a Gemini upstream reads them (text-only modalities are what
        # every answer is, so they are no feature).
        "gemini:generationConfig.responseLogprobs": "generationConfig.responseLogprobs",
        "gemini:generationConfig.logprobs": "generationConfig.logprobs",
        "gemini:generationConfig.mediaResolution": "generationConfig.mediaResolution",
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


def test_null_fields_count_as_absent() -> None:
    assert meaning(parse(body(generationConfig={"temperature": None}, tools=None,
                              systemInstruction=None))) == meaning(parse(body()))


def test_safety_settings_are_checked_and_noted_as_gemini_s_own() -> None:
    settings = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
                {"category": 7, "threshold": 4, "method": "SEVERITY"}]
    request = parse(body(safetySettings=settings))
    assert request.raw["safetySettings"] == settings  # as sent, for a Gemini upstream
    assert request.features == {"gemini:safetySettings": "safetySettings"}


def test_what_only_gemini_reads_is_noted_where_it_first_appears() -> None:
    request = parse(body(
        contents=[user({"text": "hi"}, {"inlineData": {"mimeType": "video/mp4",
                                                      "data": "AA=="}},
                       {"fileData": {"fileUri": "https://e.test/v.mp4", "mimeType": "video/mp4"}},
                       {"executableCode": {}}),
                  model_turn({"text": "t", "thought": True, "thoughtSignature": "c2ln"},
                             {"text": "a"}),
                  user({"text": "more", "bogus": 1})],
        tools=[{"googleSearch": {}}],
        generationConfig={"speechConfig": {}}))
    assert request.features == {
        "gemini:inlineData": "contents.0.parts.1.inlineData (video/mp4)",
        "gemini:fileData": "contents.0.parts.2.fileData (video/mp4)",
        "gemini:contents.parts.executableCode": "contents.0.parts.3.executableCode",
        "gemini:contents.parts.bogus": "contents.2.parts.0.bogus",
        "gemini:tools.googleSearch": "tools.0.googleSearch",
        "paid:grounding": "tools.0.googleSearch",  # charged per prompt: a surcharge
        "gemini:generationConfig.speechConfig": "generationConfig.speechConfig",
    }
    assert [m.text for m in request.messages] == ["hi", "a", "more"]


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
        ({"mode": "AUTO"}, ToolChoice("auto"), "fgh"),
        ({"mode": "NONE"}, ToolChoice("none"), "fgh"),
        ({"mode": "ANY"}, ToolChoice("required"), "fgh"),
        ({"mode": "VALIDATED"}, ToolChoice("auto"), "fgh"),
        ({"mode": 1}, ToolChoice("auto"), "fgh"),
        ({"mode": 2}, ToolChoice("required"), "fgh"),
        ({"mode": 3}, ToolChoice("none"), "fgh"),
        ({"mode": "ANY", "allowedFunctionNames": ["g"]}, ToolChoice("tool", "g"), "fgh"),
        # Several allowed names: the tool list itself says which ones.
        ({"mode": "ANY", "allowedFunctionNames": ["h", "f"]}, ToolChoice("required"), "fh"),
        ({"mode": "VALIDATED", "allowedFunctionNames": ["g", "h"]}, ToolChoice("auto"), "gh"),
    ],
)
def test_function_calling_modes(
    config: dict[str, Any], choice: ToolChoice | None, names: str
) -> None:
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
    ("routing field api_key", body(api_key="AIza-x"), "api_key"),
    # Resources of the operator's project, which every client shares.
    ("cached content", body(cachedContent="cachedContents/x"), "cachedContent"),
    ("cached content snake", body(cached_content="cachedContents/x"), "cachedContent"),
    ("files api uri", part({"fileData": {"fileUri": "https://generativelanguage.googleapis.com"
                                                    "/v1beta/files/abc"}}),
     f"{P0}.fileData.fileUri"),
    ("files api uri in capitals", part({"fileData": {
        "fileUri": " HTTPS://GenerativeLanguage.googleapis.com/v1beta/files/abc"}}),
     f"{P0}.fileData.fileUri"),
    ("cloud storage uri", part({"fileData": {"fileUri": "gs://bucket/a.pdf"}}),
     f"{P0}.fileData.fileUri"),
    ("file search tool", body(tools=[{"file_search": {"file_search_store_names": ["s"]}}]),
     "tools.0.file_search"),
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
    ("text number", part({"text": 5}), f"{P0}.text"),
    ("inline data without type", part({"inlineData": {"data": "AA=="}}),
     f"{P0}.inlineData.mimeType"),
    ("inline data not base64", part({"inlineData": {"mimeType": "image/png", "data": "a b"}}),
     f"{P0}.inlineData.data"),
    ("inline data empty", part({"inlineData": {"mimeType": "image/png", "data": ""}}),
     f"{P0}.inlineData.data"),
    ("inline data unknown field",
     part({"inlineData": {"mimeType": "image/png", "data": "AA==", "x": 1}}),
     f"{P0}.inlineData.x"),
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
    ("no candidates", gen(candidateCount=0), f"{GC}.candidateCount"),
    ("nine candidates", gen(candidateCount=9), f"{GC}.candidateCount"),
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


def test_an_unknown_field_nested_where_gemini_s_own_are_not_is_named_like_gemini_does(
) -> None:
    with pytest.raises(RequestError) as info:
        parse(body(toolConfig={"functionCallingConfig": {"bogus_field": 1}}))
    assert info.value.message == (
        'Invalid JSON payload received. Unknown name "bogus_field" at '
        "'toolConfig.functionCallingConfig': Cannot find field."
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
        Message(role="assistant", tool_calls=(ToolCall("call_0", "lookup", '{"q":"c"}'),),
                signature="c2ln", signed_by="gemini"),
        Message(role="tool", content=(TextPart('{"r":1}'),), tool_call_id="call_0"),
    )
    assert request.tools == (Tool("lookup", "Look it up", {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),)
    assert request.tool_choice == ToolChoice("tool", "lookup")
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
    assert parsed.tool_choice == ToolChoice("required")
    assert parsed.tools == (Tool("lookup", "d", {"type": "object",
                                                 "properties": {"q": {"type": "string"}}}),)
    assert [m.role for m in parsed.messages] == ["system", "user", "assistant", "tool", "user"]
    assert parsed.messages[3].text == '{"r":1.0}'
    assert parsed.features["gemini:safetySettings"] == "safetySettings"


@pytest.mark.parametrize(("mime", "feature"), [("application/pdf", "documents"),
                                               ("audio/wav", "audio")])
def test_pdf_and_audio_data_are_canonical_files(mime: str, feature: str) -> None:
    request = parse(body(contents=[user({"text": "read"}, {"inlineData": {
        "mimeType": mime, "data": "AA-_"}})]))
    assert request.messages[0].content[1] == FilePart(mime, "AA+/")
    assert request.features == {feature: "inlineData"}


def test_several_candidates_are_a_whole_answer_of_a_gemini_upstream_only() -> None:
    request = parse(gen(candidateCount=3))
    assert request.choices == 3
    assert request.features["gemini:generationConfig.candidateCount"] == (
        "generationConfig.candidateCount")
    with pytest.raises(RequestError) as info:
        parse(gen(candidateCount=3), stream=True)  # a stream relays one candidate
    assert info.value.param == "generationConfig.candidateCount"
    assert "stream" in info.value.message
