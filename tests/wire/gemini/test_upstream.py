"""The Gemini upstream side: the bodies sent to Gemini providers (from any client dialect),
and their streams and whole answers read back as canonical events.

Pure: canonical values and bytes in, dicts and canonical events out.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import attrs
import pytest

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningSignature,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageReport,
)
from gateway.errors import UpstreamError, UpstreamProtocolError, UpstreamStatusError
from gateway.wire.gemini.render import StreamEncoder
from gateway.wire.gemini.upstream import StreamParser, parse_response, upstream_body, upstream_error
from tests.support.wire_gemini import answer, body, call, model_turn, parse, user

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
        tool_choice=ToolChoice("required"),
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
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("tool", "f"), {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice_becomes_a_function_calling_mode(
    choice: ToolChoice | None, config: Any
) -> None:
    sent = upstream_body(openai_request(Message(role="user", content=(TextPart("a"),)),
                                        tools=(Tool("f"),), tool_choice=choice))
    assert sent.get("toolConfig") == (None if config is None
                                      else {"functionCallingConfig": config})


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, {"mode": "VALIDATED"}),  # strict: the model may choose, calls match schemas
        (ToolChoice("auto"), {"mode": "VALIDATED"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("required"), {"mode": "ANY"}),  # ANY adheres to the schemas already
    ],
)
def test_strict_tools_are_gemini_s_validated_mode(choice: ToolChoice | None,
                                                  config: Any) -> None:
    sent = upstream_body(openai_request(Message(role="user", content=(TextPart("a"),)),
                                        tools=(Tool("f", strict=True),), tool_choice=choice))
    assert sent["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize("config", [
    {"mode": "AUTO"}, {"mode": "NONE"}, {"mode": "ANY"},
    {"mode": "ANY", "allowedFunctionNames": ["f"]},
])
def test_every_function_calling_mode_goes_upstream_as_the_client_sent_it(
    config: dict[str, Any]
) -> None:
    sent = {"contents": [user({"text": "a"})], "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": config}}
    assert upstream_body(parse(sent))["toolConfig"] == sent["toolConfig"]


def test_own_parameters_reach_only_a_gemini_upstream() -> None:
    request = parse(FULL_CLIENT_BODY)
    foreign = upstream_body(attrs.evolve(request, dialect="openai", raw={}))
    assert "safetySettings" not in foreign
    # What has a canonical meaning is rebuilt from it.
    assert foreign["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"],
        "seed": 7, "topK": 20, "thinkingConfig": {"includeThoughts": True,
                                                  "thinkingBudget": 512}}
    # Another client's own fields (its raw body) never reach a Gemini upstream.
    openai_own = openai_request(Message(role="user", content=(TextPart("a"),)), dialect="openai",
                                raw={"logit_bias": {"1": 2}, "topK": 3})
    assert upstream_body(openai_own) == {"contents": [user({"text": "a"})]}


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
        # The part's thought signature comes just before its event: a Gemini client gets it
        # back on the same part.
        ReasoningSignature("c2ln", "gemini"),
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


def test_a_thought_signature_another_dialect_wrote_never_reaches_gemini() -> None:
    wrapped = base64.b64encode(b"arouter.anthropic.EqSig").decode()
    client = {"contents": [
        user({"text": "hi"}),
        model_turn({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": wrapped}),
        user({"functionResponse": {"name": "f", "response": {"r": 1}}}),
        model_turn({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}),
        user({"functionResponse": {"name": "f", "response": {"r": 2}}}),
    ]}
    sent = upstream_body(parse(client))["contents"]
    assert "thoughtSignature" not in sent[1]["parts"][0]
    assert sent[3]["parts"][0]["thoughtSignature"] == "c2ln"
