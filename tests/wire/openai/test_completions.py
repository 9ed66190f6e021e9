"""Legacy completions bodies and chunks: validation, prompts as tokens, hostile chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.canonical import Finish, TextDelta
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.tokens import estimate_prompt_tokens
from gateway.wire.openai.completions import StreamEncoder, parse_chunk, parse_request


def test_token_prompts_are_counted_as_given_for_the_reservation() -> None:
    request = parse_request({"model": "m", "prompt": [[1] * 5000, [2] * 300]})
    assert request.prompt_tokens == 5300 and estimate_prompt_tokens(request) >= 5300
    assert request.choices == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m", "prompt": "hi", "stream": True, "stream_options": "x"}, "stream_options"),
    ({"model": "m", "prompt": 3}, "prompt"),
    ({"model": "m", "prompt": "hi", "custom_llm_provider": "x"}, "custom_llm_provider"),
    ({"model": "m", "prompt": "hi", "models": ["other/model"]}, "models"),
    ({"model": "m", "prompt": "hi", "n": 2, "stream": True}, "n"),
    ({"model": "m", "prompt": ["a", "b"], "stream": True}, "prompt"),
])
def test_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert info.value.param == param


def test_a_hostile_chunk_is_the_upstream_s_fault() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_chunk({"choices": [{"text": "x", "finish_reason": []}]})


def test_a_stream_answered_whole_still_renders() -> None:
    encoder = StreamEncoder("gen-1", "m")
    out = encoder.event(TextDelta("hi")) + encoder.event(Finish("stop"))
    chunks = [json.loads(line[6:]) for line in out.decode().split("\n\n") if line]
    assert [c["choices"][0]["text"] for c in chunks] == ["hi", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
