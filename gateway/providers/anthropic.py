"""Adapter for Anthropic Messages upstreams (``POST {base_url}/v1/messages``).

Rules: as ``providers/openai.py`` — the call is opened in the caller's task, its abort is
registered with the sink, raw blocks go to our SSE decoder and a stateful parser
(``wire.anthropic.StreamParser``), and a stream is complete only with ``message_stop``.
"""

from __future__ import annotations

import json

from gateway.canonical import ChatRequest
from gateway.errors import UpstreamError, UpstreamProtocolError
from gateway.providers.answers import MAX_COMPLETION_BODY, drain_after_end, status_error
from gateway.providers.base import Sink, Target
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.wire import anthropic as wire
from gateway.wire import sse

API_VERSION = "2023-06-01"


class AnthropicProvider:
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
            "anthropic-version": API_VERSION,
            **headers,
        }
        key = target.provider.api_key
        if key:
            out_headers["x-api-key"] = key
        call = self._clients.stream("POST", f"{target.provider.base_url}/v1/messages",
                                    out_headers, body)
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
                for event in wire.parse_message(data):
                    sink.emit(event)


async def _relay_stream(response: Response, sink: Sink) -> None:
    decoder = sse.Decoder()
    parser = wire.StreamParser()
    async for block in response:
        try:
            events = decoder.feed(block)
        except sse.SSEError:
            raise UpstreamProtocolError("upstream sent an oversized event") from None
        for event in events:
            for item in parser.feed(event.event, event.data):
                sink.emit(item)
            if parser.done:
                await drain_after_end(response)
                return
        await sink.writable()
    raise UpstreamError("upstream stream ended before it finished")
