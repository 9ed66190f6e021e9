"""The client dialects the bench speaks: where each request goes, how it presents the key,
what its body says, and how its stream is read.

``chat`` is OpenAI's ``/v1/chat/completions``; ``messages`` Anthropic's ``/v1/messages``;
``gemini`` ``/v1beta/models/{model}:streamGenerateContent?alt=sse`` (``:generateContent``
when not streaming); ``responses`` OpenAI's ``/v1/responses``. Each carries the same text
and ``#sim`` directive, asks for the same output, and counts output tokens as its own wire
format reports them. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import attrs

from gateway.bench import events
from gateway.bench.http1 import Endpoint

__all__ = ["ROUTES", "Route"]

MAX_TOKENS: Final = 4096  # Anthropic requires one; far above what the sim is asked for


def _usage(answer: dict[str, Any], *path: str) -> int | None:
    value: Any = answer
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@attrs.frozen
class Route:
    name: str
    classify: Callable[[str], int]
    key_header: str | None  # None: ``Authorization: Bearer``
    tokens: Callable[[dict[str, Any]], int | None]  # output tokens of a whole answer

    def target(self, endpoint: Endpoint, model: str, stream: bool) -> str:
        root = endpoint.root
        if self.name == "chat":
            return endpoint.chat_target
        if self.name == "gemini":
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            return f"{root}/v1beta/models/{quote(model, safe='/')}:{method}"
        return f"{root}/v1/{self.name}"

    def headers(self, key: str | None) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/json"), ("Accept", "text/event-stream")]
        if key:
            headers.append((self.key_header, key) if self.key_header
                           else ("Authorization", f"Bearer {key}"))
        if self.name == "messages":
            headers.append(("anthropic-version", "2023-06-01"))
        return headers

    def body(self, model: str, stream: bool, text: str) -> dict[str, Any]:
        if self.name == "chat":
            body: dict[str, Any] = {"model": model, "stream": stream,
                                    "messages": [{"role": "user", "content": text}]}
            if stream:
                body["stream_options"] = {"include_usage": True}
            return body
        if self.name == "messages":
            return {"model": model, "stream": stream, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": text}]}
        if self.name == "gemini":  # the model and streaming are in the path
            return {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return {"model": model, "stream": stream, "input": text, "store": False}


ROUTES: Final = {
    route.name: route for route in (
        Route("chat", events.classify, None,
              lambda a: _usage(a, "usage", "completion_tokens")),
        Route("messages", events.classify_messages, "x-api-key",
              lambda a: _usage(a, "usage", "output_tokens")),
        Route("gemini", events.classify_gemini, "x-goog-api-key",
              lambda a: _usage(a, "usageMetadata", "candidatesTokenCount")),
        Route("responses", events.classify_responses, None,
              lambda a: _usage(a, "usage", "output_tokens")),
    )
}
