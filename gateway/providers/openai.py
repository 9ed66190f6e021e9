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

from gateway.canonical import ChatRequest
from gateway.errors import (
    UpstreamError,
    UpstreamProtocolError,
)
from gateway.providers.answers import MAX_COMPLETION_BODY, drain_after_end, status_error
from gateway.providers.base import Sink, Target
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.wire import openai as wire
from gateway.wire import sse


class OpenAIProvider:
    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        body = json.dumps(wire.upstream_body(request, target.model), ensure_ascii=False).encode()
        out_headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if request.stream else "application/json",
            "accept-encoding": "identity",
            **headers,
        }
        key = target.provider.api_key
        if key:
            out_headers["authorization"] = f"Bearer {key}"
        url = f"{target.provider.base_url}/chat/completions"
        call = self._clients.stream("POST", url, out_headers, body)
        sink.abort_with(call.abort)
        async with call as response:
            if response.status != 200:
                raise await status_error(response, key)
            streaming = response.headers.get("content-type", "").startswith("text/event-stream")
            if request.stream and streaming:
                await _relay_stream(response, sink)
            else:
                data = await response.read(MAX_COMPLETION_BODY)
                if data is None:
                    raise UpstreamError("upstream answer is too large")
                for event in wire.parse_completion(data):
                    sink.emit(event)


async def _relay_stream(response: Response, sink: Sink) -> None:
    decoder = sse.Decoder()
    # A client speaking OpenAI gets plain text deltas spliced, not parsed and re-encoded.
    splice = sink.passthrough == "openai"
    async for block in response:
        try:
            events = decoder.feed(block)
        except sse.SSEError:
            raise UpstreamProtocolError("upstream sent an oversized event") from None
        for event in events:
            if event.data == "[DONE]":
                await drain_after_end(response)
                return
            if event.event == "error":
                raise wire.upstream_error(_json_or_none(event.data))
            if splice:
                at = wire.plain_delta(event.data)
                if at >= 0:
                    sink.emit_spliced(event.data, at, wire.delta_chars(event.data))
                    continue
            for item in wire.parse_chunk(event.data):
                sink.emit(item)
        await sink.writable()
    raise UpstreamError("upstream stream ended before it finished")


def _json_or_none(data: str) -> object:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value.get("error", value) if isinstance(value, dict) else None
