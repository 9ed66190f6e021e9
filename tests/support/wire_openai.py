"""Helpers the openai wire tests share (request bodies, encoders, the model name)."""

from __future__ import annotations

import json
from typing import Any

from gateway.wire.openai.render import StreamEncoder

DROP = object()

MODEL = "openai/gpt-5.4"


CREATED = 1700000000


def body(**changes: Any) -> dict[str, Any]:
    """A minimal valid client body with ``changes`` applied (``DROP`` removes a key)."""
    out: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


PASSTHROUGH_VALUES: dict[str, Any] = {
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "logit_bias": {"50256": -100, "11": 2.5},
    "metadata": {"team": "search", "ticket": "T-1"},
    "frequency_penalty": -2,
    "presence_penalty": 1.5,
    "logprobs": True,
    "top_logprobs": 20,
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "verbosity": "high",
    "service_tier": "flex",
    "store": False,
    "prompt_cache_key": "k",
    "safety_identifier": "s",
}


TOOL = {"type": "function", "function": {"name": "f"}}


def encoder() -> StreamEncoder:
    return StreamEncoder("chatcmpl-xxx", MODEL, CREATED)


def payload(event: bytes) -> dict[str, Any]:
    """The JSON of one rendered event, after checking its SSE framing."""
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    line = event[len(b"data: "):-2]
    assert b"\n" not in line and b"\r" not in line
    value = json.loads(line.decode("utf-8"))
    assert isinstance(value, dict)
    return value
