"""Classifying OpenAI stream events without parsing JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.bench.events import CONTENT, DONE, ERROR, MALFORMED, OTHER, classify


def chunk(delta: dict[str, object], **extra: object) -> str:
    body = {"id": "x", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}
    return json.dumps(body)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ("[DONE]", DONE),
        (chunk({"content": " Lorem"}), CONTENT),
        (chunk({"role": "assistant", "content": ""}), OTHER),
        (chunk({"content": None}), OTHER),
        (chunk({}), OTHER),
        ('{"choices":[{"delta":{"content" : "spaced"}}]}', CONTENT),
        (chunk({"content": "\"content\":\"x\""}), CONTENT),
        (chunk({"content": "error"}), CONTENT),  # the word, not an error event
        (chunk({"reasoning_content": "thinking"}), OTHER),
        ('{"choices":[],"usage":{"completion_tokens":3}}', OTHER),
        ('{"error":{"code":"upstream_error","message":"cut"},"choices":[{"index":0,'
         '"delta":{"content":""},"finish_reason":"error"}]}', ERROR),
        ('{"error": {"message": "boom"}}', ERROR),
        ('{"error": null, "choices": []}', OTHER),
        ("{not json", MALFORMED),
        ("{not json but braced}", OTHER),  # only the ends are checked on the fast path
        ('{"error": not json', MALFORMED),
        ("not json at all", MALFORMED),
        ("  {\"choices\":[]}", OTHER),
    ],
)
def test_classify(data: str, kind: int) -> None:
    assert classify(data) == kind


@given(st.text())
def test_text_in_strings_never_fools_the_search(text: str) -> None:
    assert classify(chunk({"content": text})) == (CONTENT if text else OTHER)
    empty = json.loads(chunk({"role": "assistant", "content": ""}))
    empty["model"] = text  # before "choices": any quotes in it are escaped
    assert classify(json.dumps(empty)) == OTHER
    assert classify(json.dumps(empty, ensure_ascii=False)) == OTHER
