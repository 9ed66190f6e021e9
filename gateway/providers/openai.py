"""Adapter for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, Groq, Together, OpenRouter).

Rules:
- The upstream call is opened inside the caller's task with ``async with``; cancelling the
  caller closes the connection (the pool only takes back a response read to its end).
- Raw body blocks go to the gateway's own SSE decoder (never a line splitter, which may
  split on U+2028); ``Accept-Encoding: identity`` keeps them undecoded and cheap.
- A stream is complete only with ``data: [DONE]``. EOF before it is a protocol error,
  never a clean end.
- Error bodies are read with a bound and never relayed raw: only a redacted message of a
  4xx that blames the request reaches the client.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.canonical import ChatRequest, Embeddings, EmbedRequest
from gateway.providers import call as upstream_call
from gateway.providers.base import Sink
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.routing.targets import Target
from gateway.wire import sse
from gateway.wire.jsonbody import upstream_object
from gateway.wire.openai import completions, embeddings, upstream
from gateway.wire.responses import upstream as responses_upstream


class OpenAIProvider:
    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        # Which API of the upstream: Chat Completions, unless the client spoke the legacy
        # Completions API or the Responses API to a provider that serves it itself (then
        # the body and the answer go as sent).
        api: tuple[str, dict[str, Any], Any, Any, bool]
        if request.dialect == completions.DIALECT:
            api = ("/completions", completions.upstream_body(request, target.model),
                   _relay_completions, completions.parse_whole, True)
        elif request.dialect == "responses" and target.provider.responses == "native":
            api = ("/responses", responses_upstream.upstream_body(request, target.model),
                   _relay_responses, responses_upstream.parse_whole, True)
        else:
            api = ("/chat/completions",
                   upstream.upstream_body(request, target.model, target.provider.accepts),
                   _relay_stream, upstream.parse_completion, request.dialect == "openai")
        path, body, relay, parse_whole, same = api
        key = target.provider.api_key
        auth = {"authorization": f"Bearer {key}"} if key else {}
        await upstream_call.call(
            self._clients, f"{target.provider.base_url}{path}",
            upstream_call.request_headers(request.stream, {**headers, **auth}),
            json.dumps(body, ensure_ascii=False).encode(), key, sink,
            stream=request.stream, relay=relay, parse_whole=parse_whole, same_dialect=same,
        )

    async def embed(self, request: EmbedRequest, target: Target) -> Embeddings:
        """``POST {base_url}/embeddings``: the vectors, in input order."""
        body = json.dumps(embeddings.upstream_body(request, target.model),
                          ensure_ascii=False).encode()
        key = target.provider.api_key
        answer = await upstream_call.post_json(
            self._clients, f"{target.provider.base_url}/embeddings",
            upstream_call.request_headers(False, {"authorization": f"Bearer {key}"}
                                          if key else {}), body, key)
        return embeddings.parse_answer(answer, len(request.inputs))


async def _relay_stream(response: Response, sink: Sink) -> None:
    # A client speaking OpenAI gets plain text deltas spliced, not parsed and re-encoded.
    splice = sink.passthrough == "openai"

    def handle(event: sse.Event) -> bool:
        if event.data == "[DONE]":
            return True
        if event.event == "error":
            raise upstream.upstream_error(_json_or_none(event.data))
        if splice:
            at = upstream.plain_delta(event.data)
            if at >= 0:
                sink.emit_spliced(event.data, at, upstream.delta_chars(event.data))
                return False
        for item in upstream.parse_chunk(event.data):
            sink.emit(item)
        return False

    await upstream_call.relay_events(response, sink, handle)


async def _relay_completions(response: Response, sink: Sink) -> None:
    def handle(event: sse.Event) -> bool:
        if event.data == "[DONE]":
            return True
        obj = upstream_object(event.data, "an event")
        sink.emit_frame(event.event, event.data, obj, completions.parse_chunk(obj))
        return False

    await upstream_call.relay_events(response, sink, handle)


async def _relay_responses(response: Response, sink: Sink) -> None:
    def handle(event: sse.Event) -> bool:
        obj = upstream_object(event.data, "an event")
        sink.emit_frame(event.event, event.data, obj, responses_upstream.parse_event(obj))
        return obj.get("type") in responses_upstream.ENDS

    await upstream_call.relay_events(response, sink, handle)


def _json_or_none(data: str) -> object:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value.get("error", value) if isinstance(value, dict) else None
