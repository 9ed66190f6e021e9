"""What an OpenAI client receives: stream chunks, whole answers and error bodies.

Pure: canonical events in, bytes out. Byte-exact expectations are the spec's own example
lines (spec/streaming-api.txt) with the ``created`` field OpenAI's SDKs expect inserted after
``object``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import (
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
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
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.wire.openai.render import StreamEncoder, error_body, render_completion
from tests.support.wire_openai import CREATED, MODEL, encoder, payload

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


def test_reasoning_signatures_reach_openai_clients_as_reasoning_details() -> None:
    enc = encoder()
    signed = payload(enc.event(ReasoningSignature("sig")))
    hidden = payload(enc.event(RedactedReasoning("enc")))
    assert signed["choices"][0]["delta"] == {"reasoning_details": [
        {"type": "reasoning.text", "signature": "sig", "index": 0}]}
    assert hidden["choices"][0]["delta"] == {"reasoning_details": [
        {"type": "reasoning.encrypted", "data": "enc", "index": 0}]}
    whole = json.loads(render_completion("g", MODEL, CREATED, text="", reasoning="plan",
                                         tool_calls=[], finish="stop", usage=Usage(),
                                         signature="sig", redacted=["enc"]))
    assert whole["choices"][0]["message"]["reasoning_details"] == [
        {"type": "reasoning.text", "signature": "sig", "index": 0, "text": "plan"},
        {"type": "reasoning.encrypted", "data": "enc", "index": 0}]
