"""What an Anthropic client receives: the SSE event sequence, whole messages, error bodies.

Pure: canonical events in, bytes out. SDK compatibility is proved without a network: the
encoder's bytes go through the official ``anthropic`` SDK's own SSE decoder, pydantic event
types and stream accumulator, and through a real SDK client whose HTTP transport is an
in-process handler.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gateway.canonical import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    TextPart,
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
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire import jsonbody
from gateway.wire.anthropic.render import StreamEncoder, error_body, render_message
from gateway.wire.anthropic.request import parse_request
from gateway.wire.anthropic.upstream import text_delta
from gateway.wire.encoder import Encoder
from tests.support.wire_anthropic import MODEL, encode, sse_events

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


def test_keepalive_is_anthropics_ping_event_and_text_deltas_splice_as_frame_relays() -> None:
    assert StreamEncoder.keepalive == b'event: ping\ndata: {"type": "ping"}\n\n'
    enc: Encoder = StreamEncoder("msg_1", MODEL)  # the relay's contract, checked by mypy
    assert enc.splices == "anthropic"
    data = ('{"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":"Hi \\"x\\""}}')
    chars = text_delta(data)
    assert chars == len('Hi \\"x\\"')
    # Spliced (unparsed) exactly as the full path relays it.
    assert enc.splice(data, 0) == enc.frame("content_block_delta", data, json.loads(data))


@pytest.mark.parametrize("data", [
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}',
    '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":"{\\"text\\":\\"a\\"}"}}',
    '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"t"}}',
    '{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}',
    '{"type":"error","error":{"type":"overloaded_error","message":"text_delta"}}',
    '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"a"}}',
])
def test_only_a_plain_text_delta_is_spliced(data: str) -> None:
    assert text_delta(data) == -1


def named(stream: bytes) -> list[tuple[str | None, Any]]:
    return [(event.event, json.loads(event.data)) for event in sse_events(stream)]


# An Anthropic upstream's own stream, with what the canonical model has no place for:
# a citation delta, a server tool block, extra usage and message fields.
UPSTREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [], "stop_reason": None, "stop_sequence": None, "container": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "service_tier": "standard"}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "server_tool_use", "id": "srvtoolu_1",
                                               "name": "web_search", "input": {}}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "text", "text": "", "citations": []}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "citations_delta", "citation": {"type": "web_search_result_location",
                                                "url": "https://example.com", "title": "Ex",
                                                "cited_text": "c", "encrypted_index": "e"}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 3,
                                 "server_tool_use": {"web_search_requests": 1,
                                                     "web_fetch_requests": 0}}}),
    ("message_stop", {"type": "message_stop"}),
]


def test_an_anthropic_upstreams_events_go_out_as_sent_with_our_id_model_and_usage() -> None:
    enc = StreamEncoder("msg_1", MODEL, input_tokens=99)
    assert enc.start() and not enc.start()  # its own opening stands until the upstream's
    out = b""
    for name, obj in UPSTREAM_EVENTS:
        out += enc.frame(name, json.dumps(obj), obj)
        if name == "message_start":
            # The relay's part (``Exchange._reopen``): the opening rendered anew replaces
            # the encoder's own while neither went out.
            out += enc.start()
            assert not enc.start()
    out += enc.tail(Usage(prompt_tokens=12, completion_tokens=3), "stop")
    events = named(out)
    assert events[0][1]["message"] == {**UPSTREAM_EVENTS[0][1]["message"],
                                       "id": "msg_1", "model": MODEL}
    relayed = [(name, obj) for name, obj in UPSTREAM_EVENTS[2:-2]]
    assert events[1:-2] == relayed  # every block event as sent, pings left to the relay
    name, end = events[-2]
    assert name == "message_delta" and end["delta"] == {"stop_reason": "end_turn",
                                                         "stop_sequence": None}
    assert end["usage"] == {"input_tokens": 12, "output_tokens": 3,
                            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
                            "server_tool_use": {"web_search_requests": 1,
                                                "web_fetch_requests": 0}}
    assert events[-1] == ("message_stop", {"type": "message_stop"})
    # The whole stream is one the SDK accumulates, citation and server tool block included.
    message = sdk_accumulate(out)
    assert [block["type"] for block in message["content"]] == ["server_tool_use", "text"]
    assert message["content"][1]["citations"][0]["url"] == "https://example.com"
    assert message["usage"]["server_tool_use"]["web_search_requests"] == 1


def test_a_relayed_stream_cut_short_closes_the_open_block_itself() -> None:
    enc = StreamEncoder("msg_1", MODEL)
    enc.start()
    for name, obj in UPSTREAM_EVENTS[4:7]:
        enc.frame(name, json.dumps(obj), obj)
    names = [name for name, _ in named(enc.tail(Usage(completion_tokens=1), "length"))]
    assert names == ["content_block_stop", "message_delta", "message_stop"]


@pytest.mark.parametrize("name", ["evil\ndata: {}", "Message_Start", "x" * 65, None])
def test_an_upstream_event_name_is_never_written_unless_plain(name: str | None) -> None:
    enc = StreamEncoder("msg_1", MODEL)
    obj = {"type": name} if name is not None else {}
    assert enc.frame(name, json.dumps(obj), obj) == b""


def test_a_payload_of_several_data_lines_keeps_its_framing() -> None:
    enc = StreamEncoder("msg_1", MODEL)
    obj = {"type": "content_block_stop", "index": 0}
    assert named(enc.frame("content_block_stop", '{"type":"content_block_stop",\n'
                                '"index":0}', obj)) == [("content_block_stop", obj)]


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
                                   "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
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
                                   "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0})
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
                                   "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
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
        "end_turn", {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                     "cache_creation_input_tokens": 0})


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
                                   "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}))


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
                           cache_creation_input_tokens=0,
                           output_tokens_details={"thinking_tokens": 3}),
    }


def test_the_sdk_accepts_an_empty_stream() -> None:
    assert sdk_accumulate(encode([])) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": "end_turn",
        "usage": sdk_usage(cache_read_input_tokens=0, cache_creation_input_tokens=0),
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
                           cache_creation_input_tokens=0,
                           output_tokens_details={"thinking_tokens": 2}),
    }


def test_the_sdk_client_raises_a_typed_error_from_the_error_body() -> None:
    with sdk_client(lambda _: event_stream(b"")) as client, pytest.raises(
        anthropic.BadRequestError
    ) as info:
        client.messages.create(model="claude-x", messages=[{"role": "user", "content": "x"}],
                               max_tokens=10, extra_body={"api_base": "http://evil.test"})
    assert info.value.body == {"type": "error", "request_id": "req_1", "error": {
        "type": "invalid_request_error",
        "message": "api_base: Extra inputs are not permitted (where a request goes is the "
                   "gateway's configuration)"}}


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
# render_message and error_body

def test_render_message_text_answer_is_compact_utf8() -> None:
    rendered = render_message("msg_1", MODEL, text="h\u00e9llo", reasoning="", tool_calls=[],
                              finish="stop", usage=Usage(10, 20, 4))
    assert rendered == (
        '{"id":"msg_1","type":"message","role":"assistant","model":"anthropic/claude-sonnet",'
        '"content":[{"type":"text","text":"h\u00e9llo"}],"stop_reason":"end_turn",'
        '"stop_sequence":null,"usage":{"input_tokens":6,"output_tokens":20,'
        '"cache_read_input_tokens":4,"cache_creation_input_tokens":0}}'
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
