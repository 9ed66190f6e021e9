"""What a Gemini client receives: ``GenerateContentResponse`` chunks as SSE or as one JSON
array, whole answers and error bodies.

Pure: canonical events in, bytes out. SDK compatibility is checked offline: what the encoder
writes is read back by the SDKs' own stream readers (google-genai over an
``httpx.MockTransport``, google-generativeai through google-api-core's REST stream iterator).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import (
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    StreamEvent,
    TextDelta,
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
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire.gemini.render import StreamEncoder, error_body, render_response, usage_json
from gateway.wire.gemini.upstream import StreamParser, parse_response, text_chunk
from gateway.wire.sse import Decoder
from tests.support.wire_gemini import MODEL, genai_client

with warnings.catch_warnings():
    # Both SDKs warn on import (Python 3.11 support ending; google-generativeai deprecated).
    warnings.simplefilter("ignore")
    from google.ai.generativelanguage_v1beta.types import GenerateContentResponse as OldProto
    from google.api_core.rest_streaming import ResponseIterator
    from google.genai import errors, types
    from google.generativeai.types import generation_types as old_types

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


def test_a_plain_text_chunk_splices_as_frame_relays_it() -> None:
    enc, full = sse_encoder(), sse_encoder()
    assert enc.splices == "gemini"
    data = ('{"candidates":[{"content":{"parts":[{"text":"Hel\\u2028lo"}],"role":"model"},'
            '"index":0,"safetyRatings":[]}],"usageMetadata":{"promptTokenCount":3,'
            '"candidatesTokenCount":1,"totalTokenCount":4},"modelVersion":"up","responseId":"r1"}')
    at, chars = text_chunk(data)
    assert at == data.index(',"modelVersion"') and chars == len("Hel\\u2028lo")
    spliced = enc.splice(data, at)
    assert payload(spliced) == payload(full.frame(None, data, json.loads(data)))
    assert payload(spliced)["modelVersion"] != "up"  # ours


@pytest.mark.parametrize("change", [
    lambda d: d.replace('"index":0', '"index":0,"finishReason":"STOP"'),
    lambda d: d.replace('{"text":"a"}', '{"text":"a","thought":true}'),
    lambda d: d.replace('{"text":"a"}', '{"functionCall":{"name":"f","args":{}}}'),
    lambda d: d.replace('{"text":"a"}', '{"text":"a"},{"text":"b"}'),
    lambda d: d.replace('"responseId":"r"}', '"responseId":"r","extra":1}'),  # another order
    lambda d: d.replace('"modelVersion":"m"', '"modelVersion":"m\\"x"'),
])
def test_only_a_plain_text_chunk_is_spliced(change: Any) -> None:
    plain = ('{"candidates":[{"content":{"parts":[{"text":"a"}],"role":"model"},"index":0}],'
             '"modelVersion":"m","responseId":"r"}')
    assert text_chunk(plain)[0] > 0
    assert text_chunk(change(plain)) == (-1, 0)


def test_usage_of_a_passed_chunk_is_the_one_reported_if_it_is_the_last() -> None:
    parser = StreamParser()
    parser.feed('{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0}],'
                '"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}')
    parser.passed('{"candidates":[{"content":{"parts":[{"text":"b"}]},"index":0}],'
                  '"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}')
    assert parser.usage is not None and parser.usage.completion_tokens == 2


# A Gemini upstream's own chunks, with what the canonical model has no place for.
UPSTREAM_CHUNKS: list[dict[str, Any]] = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0,
                     "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                        "probability": "NEGLIGIBLE"}]}],
     "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4},
     "modelVersion": "gemini-up-001", "responseId": "up-1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo \ud800"}]},
                     "index": 0, "citationMetadata": {"citations": [{"uri": "https://x"}]}}],
     "modelVersion": "gemini-up-001", "responseId": "up-1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "index": 0,
                     "finishReason": "STOP",
                     "groundingMetadata": {"webSearchQueries": ["hello"]}}],
     "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3,
                       "totalTokenCount": 7, "promptTokensDetails": [
                           {"modality": "TEXT", "tokenCount": 4}]},
     "modelVersion": "gemini-up-001", "responseId": "up-1"},
]


@pytest.mark.parametrize("sse", [True, False])
def test_a_gemini_upstreams_chunks_go_out_as_sent_with_our_id_model_and_usage(
        sse: bool) -> None:
    enc = StreamEncoder("gen-1", MODEL, sse=sse)
    out = enc.start()
    for chunk in UPSTREAM_CHUNKS:
        out += enc.frame(None, json.dumps(chunk), chunk)
    out += enc.tail(Usage(prompt_tokens=4, completion_tokens=3), "stop")
    if sse:
        chunks = [payload(event + b"\n\n") for event in out.split(b"\n\n")[:-1]]
        assert b"\\ud800" in out  # a lone surrogate goes out escaped, as it came
    else:
        chunks = json.loads(out)
    ours = {"modelVersion": MODEL, "responseId": "gen-1"}
    assert chunks[:2] == [{**chunk, **ours} for chunk in UPSTREAM_CHUNKS[:2]]
    assert chunks[2] == {**UPSTREAM_CHUNKS[2], **ours, "usageMetadata": {
        **UPSTREAM_CHUNKS[2]["usageMetadata"], **usage_json(Usage(prompt_tokens=4,
                                                                  completion_tokens=3))}}


def test_a_relayed_gemini_stream_cut_short_ends_with_our_own_chunk() -> None:
    enc = sse_encoder()
    enc.frame(None, "", UPSTREAM_CHUNKS[0])
    last = payload(enc.tail(Usage(prompt_tokens=4, completion_tokens=1), "length"))
    assert last["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert last["usageMetadata"]["candidatesTokenCount"] == 1


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


@pytest.mark.parametrize("sse", [True, False])
def test_a_thought_signature_goes_on_the_part_it_came_before(sse: bool) -> None:
    enc = StreamEncoder("gen-1", MODEL, sse=sse)
    chunks = encoded(enc, [TextDelta("Let me check."), ReasoningSignature("c2ln"),
                           ToolCallDelta(0, "c", "lookup", '{"q":"x"}')],
                     Usage(1, 1), "tool_calls")
    parts = [p for c in chunks if '"candidates"' in c
             for p in json.loads(c)["candidates"][0]["content"]["parts"]]
    assert {"functionCall": {"name": "lookup", "args": {"q": "x"}},
            "thoughtSignature": "c2ln"} in parts
    assert sum("thoughtSignature" in p for p in parts) == 1


def test_a_signature_nothing_carried_goes_on_the_closing_part() -> None:
    enc = StreamEncoder("gen-1", MODEL, sse=True)
    chunks = encoded(enc, [TextDelta("Hi"), ReasoningSignature("c2ln")], Usage(1, 1), "stop")
    last = json.loads(chunks[-1])["candidates"][0]["content"]["parts"]
    assert last == [{"text": "", "thoughtSignature": "c2ln"}]


@pytest.mark.parametrize(("calls", "signed"), [([], 0), ([ToolCall("c", "f", "{}")], 1)])
def test_a_whole_answer_signs_its_first_call_else_its_text(calls: list[ToolCall],
                                                           signed: int) -> None:
    value = json.loads(render_response("g", "m", text="Hi", reasoning="", tool_calls=calls,
                                       finish="stop", usage=Usage(), signature="c2ln"))
    parts = value["candidates"][0]["content"]["parts"]
    assert parts[signed]["thoughtSignature"] == "c2ln"
    assert sum("thoughtSignature" in p for p in parts) == 1


def test_a_chunk_held_as_the_end_goes_out_when_another_follows() -> None:
    # FINISH_REASON_UNSPECIFIED is no end (the parser reads on): its text must not be lost.
    enc = sse_encoder()
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello "}]},
                             "finishReason": "FINISH_REASON_UNSPECIFIED", "index": 0}]}
    last = {"candidates": [{"content": {"role": "model", "parts": [{"text": "world"}]},
                            "finishReason": "STOP", "index": 0}]}
    out = enc.frame(None, "", first) + enc.frame(None, "", last) + enc.tail(Usage(), "stop")
    texts = [part["text"] for event in out.split(b"\n\n")[:-1]
             for part in payload(event + b"\n\n")["candidates"][0]["content"]["parts"]]
    assert texts == ["Hello ", "world"]
