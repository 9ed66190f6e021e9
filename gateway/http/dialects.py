"""The client dialects a generation route can speak, each as one value.

A ``ClientDialect`` bundles what differs between the OpenAI (chat and Responses),
Anthropic and Gemini routes:
which header holds the key (``credentials.py`` finds it), how a body becomes a
``ChatRequest``, which ``Encoder`` streams the answer, how a whole answer and an error are
rendered. Everything else — the relay, the
commit point, deadlines, cancellation, records — is the same code for all of them
(``generation.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from gateway.canonical import ChatRequest, FinishReason, ToolCall, Usage
from gateway.errors import GatewayError
from gateway.tokens import estimate_prompt_tokens
from gateway.wire.anthropic import render as anthropic_render
from gateway.wire.anthropic import request as anthropic_request
from gateway.wire.encoder import Encoder
from gateway.wire.gemini import render as gemini_render
from gateway.wire.gemini import request as gemini_request
from gateway.wire.openai import completions
from gateway.wire.openai import render as openai_render
from gateway.wire.openai import request as openai_request
from gateway.wire.responses import render as responses_render
from gateway.wire.responses import request as responses_request


@attrs.frozen
class PathParams:
    """What the route's path and query say about a request, beyond its body."""

    model: str | None = None  # Gemini names the model in the path
    stream: bool | None = None  # Gemini chooses streaming by the method in the path
    sse: bool = True  # Gemini streams SSE only with ?alt=sse, else one JSON array
    key: str | None = None  # Gemini's ?key= query parameter
    headers: Sequence[tuple[bytes, bytes]] = ()  # the client's, as ASGI gives them


@attrs.frozen
class Answer:
    """A whole (non-streamed) answer, as the transcript accumulated it."""

    text: str
    reasoning: str
    tool_calls: list[ToolCall]
    finish: FinishReason
    usage: Usage
    signature: str = ""  # of the reasoning: the client sends it back with the history
    redacted: tuple[str, ...] = ()  # reasoning the provider returned encrypted
    signed_by: str = ""  # the dialect of the provider that wrote them


@attrs.frozen
class ClientDialect:
    name: str
    key_header: bytes | None  # where its clients present a key (else Bearer only)
    parse: Callable[[Any, PathParams], ChatRequest]
    encoder: Callable[[str, ChatRequest, PathParams], Encoder]  # (generation id, request, path)
    render: Callable[[str, ChatRequest, Answer], bytes]  # (generation id, request, answer)
    # A whole answer from an upstream of this dialect: (answer, generation id, model, usage).
    relay_whole: Callable[[dict[str, Any], str, str, Usage], bytes]
    error_body: Callable[[GatewayError, str | None], bytes]


def _openai_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    return openai_render.render_completion(
        generation_id, request.model, int(time.time()), text=answer.text,
        reasoning=answer.reasoning, tool_calls=answer.tool_calls, finish=answer.finish,
        usage=answer.usage, signature=answer.signature, redacted=answer.redacted,
        signed_by=answer.signed_by,
    )


OPENAI = ClientDialect(
    name="openai",
    key_header=None,
    parse=lambda body, call: openai_request.parse_request(body),
    encoder=lambda generation_id, request, call: openai_render.StreamEncoder(
        generation_id, request.model, int(time.time())
    ),
    render=_openai_render,
    relay_whole=openai_render.relay_whole,
    error_body=openai_render.error_body,
)


def _anthropic_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    return anthropic_render.render_message(
        generation_id, request.model, text=answer.text, reasoning=answer.reasoning,
        tool_calls=answer.tool_calls, finish=answer.finish, usage=answer.usage,
        signature=answer.signature, redacted=answer.redacted, signed_by=answer.signed_by,
    )


ANTHROPIC = ClientDialect(
    name="anthropic",
    key_header=b"x-api-key",
    parse=lambda body, call: anthropic_request.parse_request(body, {
        name.decode("latin-1"): value.decode("latin-1")  # only its API's (lower-case)
        for name, value in call.headers if name.startswith(b"anthropic-")}),
    encoder=lambda generation_id, request, call: anthropic_render.StreamEncoder(
        generation_id, request.model, estimate_prompt_tokens(request)
    ),
    render=_anthropic_render,
    relay_whole=anthropic_render.relay_whole,
    error_body=anthropic_render.error_body,
)


def _gemini_parse(body: Any, call: PathParams) -> ChatRequest:
    assert call.model is not None and call.stream is not None  # set by GeminiGeneration
    return gemini_request.parse_request(body, call.model, stream=call.stream)


def _gemini_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    # Gemini shows thoughts only to a client that asked for them (includeThoughts).
    reasoning = answer.reasoning if gemini_render.wants_thoughts(request) else ""
    return gemini_render.render_response(
        generation_id, request.model, text=answer.text, reasoning=reasoning,
        tool_calls=answer.tool_calls, finish=answer.finish, usage=answer.usage,
        signature=answer.signature, signed_by=answer.signed_by,
    )


GEMINI = ClientDialect(
    name="gemini",
    key_header=b"x-goog-api-key",
    parse=_gemini_parse,
    encoder=lambda generation_id, request, call: gemini_render.StreamEncoder(
        generation_id, request.model, sse=call.sse, thoughts=gemini_render.wants_thoughts(request)
    ),
    render=_gemini_render,
    relay_whole=gemini_render.relay_whole,
    error_body=gemini_render.error_body,
)


def _responses_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    events = responses_render.answer_events(
        answer.text, answer.reasoning, answer.tool_calls, answer.finish,
        answer.signature, answer.redacted, answer.signed_by)
    return responses_render.public(responses_render.render_response(
        generation_id, request, int(time.time()), events, answer.usage))


RESPONSES = ClientDialect(
    name="responses",
    key_header=None,
    # The route (``http/responses.py``) parses with the conversation it looked up.
    parse=lambda body, call: responses_request.parse_request(body),
    encoder=lambda generation_id, request, call: responses_render.StreamEncoder(
        generation_id, request, int(time.time())),
    render=_responses_render,
    relay_whole=responses_render.relay_whole,
    error_body=openai_render.error_body,
)


def _completions_render(generation_id: str, request: ChatRequest, answer: Answer) -> bytes:
    raise AssertionError("completions come only from an OpenAI upstream, relayed whole")


COMPLETIONS = ClientDialect(
    name="completions",
    key_header=None,
    parse=lambda body, call: completions.parse_request(body),
    encoder=lambda generation_id, request, call: completions.StreamEncoder(
        generation_id, request.model),
    render=_completions_render,
    relay_whole=completions.relay_whole,
    error_body=openai_render.error_body,
)
