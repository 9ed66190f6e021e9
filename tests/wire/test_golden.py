"""Golden streams: event sequences as the providers' documentation (and our spec) show
them, decoded byte by byte and whole, into the canonical events they must mean.

OpenAI: the chunks of shared/spec/streaming-api.txt. Anthropic: the tool-use stream of the
Messages streaming guide (text block, then a tool_use block built from input_json_delta
fragments). Gemini: an ``alt=sse`` stream as the REST reference shows it (text chunks,
then a chunk with ``finishReason`` and ``usageMetadata``).
"""

from __future__ import annotations

import pytest

from gateway.canonical import Finish, StreamEvent, TextDelta, ToolCallDelta, Usage, UsageReport
from gateway.errors import UpstreamError
from gateway.wire import sse
from gateway.wire.anthropic import upstream as anthropic_upstream
from gateway.wire.gemini import upstream as gemini_upstream
from gateway.wire.openai import upstream as openai_upstream

OPENAI_SPEC = b"""\
data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4","choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null}]}

data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"""

OPENAI_SPEC_ERROR = (
    '{"id":"chatcmpl-xxx","object":"chat.completion.chunk","model":"openai/gpt-5.4",'
    '"error":{"code":"server_error","message":"Provider disconnected unexpectedly"},'
    '"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}'
)

ANTHROPIC_TOOL_USE = b"""\
event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""

GEMINI_SSE = b"""\
data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.5-flash"}\r
\r
data: {"candidates": [{"content": {"parts": [{"text": " sky is blue."}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.5-flash"}\r
\r
data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 5,"totalTokenCount": 13},"modelVersion": "gemini-2.5-flash"}\r
\r
"""


def _events(raw: bytes, split: bool) -> list[sse.Event]:
    decoder = sse.Decoder()
    if not split:
        return decoder.feed(raw)
    return [event for i in range(len(raw)) for event in decoder.feed(raw[i:i + 1])]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_openai_spec_stream(split: bool) -> None:
    out: list[StreamEvent] = []
    events = _events(OPENAI_SPEC, split)
    assert events[-1].data == "[DONE]"
    for event in events[:-1]:
        out += openai_upstream.parse_chunk(event.data)
    assert out == [TextDelta("Hello"), TextDelta(" world"), Finish("stop"),
                   UsageReport(Usage(prompt_tokens=10, completion_tokens=20))]


def test_openai_spec_mid_stream_error_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        openai_upstream.parse_chunk(OPENAI_SPEC_ERROR)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_anthropic_documented_tool_use_stream(split: bool) -> None:
    parser = anthropic_upstream.StreamParser()
    out: list[StreamEvent] = []
    for event in _events(ANTHROPIC_TOOL_USE, split):
        out += parser.feed(event.event, event.data)
    assert parser.done
    text = "".join(e.text for e in out if isinstance(e, TextDelta))
    assert text == "Okay, let's check the weather."
    calls = [e for e in out if isinstance(e, ToolCallDelta)]
    assert calls[0].id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0].name == "get_weather"
    assert "".join(c.arguments for c in calls) == '{"location": "San Francisco, CA"}'
    assert Finish("tool_calls") in out
    [usage] = [e.usage for e in out if isinstance(e, UsageReport)]
    assert (usage.prompt_tokens, usage.completion_tokens) == (472, 89)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_gemini_documented_sse_stream(split: bool) -> None:
    parser = gemini_upstream.StreamParser()
    out: list[StreamEvent] = []
    for event in _events(GEMINI_SSE, split):
        out += parser.feed(event.data)
    assert parser.done
    assert out == [TextDelta("The"), TextDelta(" sky is blue."), Finish("stop"),
                   UsageReport(Usage(prompt_tokens=8, completion_tokens=5))]
