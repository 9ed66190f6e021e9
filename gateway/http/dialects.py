"""The client dialects a generation route can speak, each as one value.

A ``ClientDialect`` bundles what differs between the OpenAI, Anthropic and Gemini routes:
where the key is presented, how a body becomes a ``ChatRequest``, which ``Encoder`` streams
the answer, how a whole answer and an error are rendered. Everything else — the relay, the
commit point, deadlines, cancellation, records — is the same code for all of them
(``generation.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from gateway.accounts.keys import parse_bearer, parse_key
from gateway.canonical import ChatRequest, FinishReason, ToolCall, Usage
from gateway.errors import AuthenticationError, GatewayError
from gateway.http.messages import Scope, header_values
from gateway.relay.transcript import estimate_prompt_tokens
from gateway.wire.anthropic import render as anthropic_render
from gateway.wire.anthropic import request as anthropic_request
from gateway.wire.encoder import Encoder
from gateway.wire.gemini import render as gemini_render
from gateway.wire.gemini import request as gemini_request
from gateway.wire.openai import render as openai_render
from gateway.wire.openai import request as openai_request


@attrs.frozen
class Call:
    """What the route itself says about a request, beyond its body."""

    model: str | None = None  # Gemini names the model in the path
    stream: bool | None = None  # Gemini chooses streaming by the method in the path
    sse: bool = True  # Gemini streams SSE only with ?alt=sse, else one JSON array
    key: str | None = None  # Gemini's ?key= query parameter


@attrs.frozen
class Answer:
    """A whole (non-streamed) answer, as the transcript accumulated it."""

    text: str
    reasoning: str
    tool_calls: list[ToolCall]
    finish: FinishReason
    usage: Usage


@attrs.frozen
class ClientDialect:
    name: str
    credentials: Callable[[Scope, Call], tuple[str, str]]  # (key id, key), else a 401
    parse: Callable[[Any, Call], ChatRequest]
    encoder: Callable[[str, ChatRequest, Call], Encoder]  # (generation id, request, call)
    render: Callable[[str, ChatRequest, Answer], bytes]  # (generation id, request, answer)
    error_body: Callable[[GatewayError, str | None], bytes]


def bearer(scope: Scope, call: Call) -> tuple[str, str]:
    return parse_bearer(header_values(scope, b"authorization"))


def api_key_header(name: bytes) -> Callable[[Scope, Call], tuple[str, str]]:
    """A key in its own header (or ``?key=``), else ``Authorization: Bearer``."""

    def credentials(scope: Scope, call: Call) -> tuple[str, str]:
        values = header_values(scope, name)
        if call.key is not None:
            values = [*values, call.key.encode("latin-1")]
        if not values:
            return bearer(scope, call)
        if len(values) != 1:
            raise AuthenticationError()
        return parse_key(values[0].decode("latin-1"))

    return credentials


def _openai_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    return openai_render.render_completion(
        generation_id, request.model, int(time.time()), text=answer.text,
        reasoning=answer.reasoning, tool_calls=answer.tool_calls, finish=answer.finish,
        usage=answer.usage,
    )


OPENAI = ClientDialect(
    name="openai",
    credentials=bearer,
    parse=lambda body, call: openai_request.parse_request(body),
    encoder=lambda generation_id, request, call: openai_render.StreamEncoder(
        generation_id, request.model, int(time.time())
    ),
    render=_openai_render,
    error_body=openai_render.error_body,
)


def _anthropic_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    return anthropic_render.render_message(
        generation_id, request.model, text=answer.text, reasoning=answer.reasoning,
        tool_calls=answer.tool_calls, finish=answer.finish, usage=answer.usage,
    )


ANTHROPIC = ClientDialect(
    name="anthropic",
    credentials=api_key_header(b"x-api-key"),
    parse=lambda body, call: anthropic_request.parse_request(body),
    encoder=lambda generation_id, request, call: anthropic_render.StreamEncoder(
        generation_id, request.model, estimate_prompt_tokens(request)
    ),
    render=_anthropic_render,
    error_body=anthropic_render.error_body,
)


def _gemini_parse(body: Any, call: Call) -> ChatRequest:
    assert call.model is not None and call.stream is not None  # set by GeminiGeneration
    return gemini_request.parse_request(body, call.model, stream=call.stream)


def _gemini_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    # Gemini shows thoughts only to a client that asked for them (includeThoughts).
    reasoning = answer.reasoning if gemini_render.wants_thoughts(request) else ""
    return gemini_render.render_response(
        generation_id, request.model, text=answer.text, reasoning=reasoning,
        tool_calls=answer.tool_calls, finish=answer.finish, usage=answer.usage,
    )


GEMINI = ClientDialect(
    name="gemini",
    credentials=api_key_header(b"x-goog-api-key"),
    parse=_gemini_parse,
    encoder=lambda generation_id, request, call: gemini_render.StreamEncoder(
        generation_id, request.model, sse=call.sse, thoughts=gemini_render.wants_thoughts(request)
    ),
    render=_gemini_render,
    error_body=gemini_render.error_body,
)
