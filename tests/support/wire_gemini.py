"""Helpers the gemini wire tests share (request bodies, encoders, the model name)."""

from __future__ import annotations

import warnings
from typing import Any

import httpx

from gateway.canonical import (
    ChatRequest,
)
from gateway.wire.gemini.request import parse_request

with warnings.catch_warnings():
    # The SDK warns on import (Python 3.11 support ending).
    warnings.simplefilter("ignore")
    from google.genai import Client, types


DROP = object()

MODEL = "gemini-2.5-flash"


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


def genai_client(handler: Any) -> Client:
    transport = httpx.MockTransport(handler)
    return Client(api_key="AIza-test", http_options=types.HttpOptions(
        base_url="http://gateway.test", client_args={"transport": transport}))
