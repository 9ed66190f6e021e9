"""Adapter for Gemini upstreams (``{base_url}/v1beta/models/{model}:streamGenerateContent``).

Rules: as ``providers/openai.py``. The upstream model name becomes part of the URL path,
so it must be a plain model id (letters, digits, ``.``, ``_``, ``-``): anything else is a
400 before any connection is made. The key travels in ``x-goog-api-key``, never in the
URL (URLs end up in logs). A stream is complete once a chunk carried a ``finishReason``.
"""

from __future__ import annotations

import json
import re

from gateway.canonical import ChatRequest
from gateway.errors import RequestError, UpstreamError, UpstreamProtocolError
from gateway.providers.answers import MAX_COMPLETION_BODY, drain_after_end, status_error
from gateway.providers.base import Sink, Target
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.wire import gemini as wire
from gateway.wire import sse

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class GeminiProvider:
    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        if not _MODEL_ID.fullmatch(target.model):
            raise RequestError("Invalid model specified", param="model")
        body = json.dumps(wire.upstream_body(request), ensure_ascii=False).encode()
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        out_headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if request.stream else "application/json",
            "accept-encoding": "identity",
            **headers,
        }
        key = target.provider.api_key
        if key:
            out_headers["x-goog-api-key"] = key
        url = f"{target.provider.base_url}/v1beta/models/{target.model}:{method}"
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
                for event in wire.parse_response(data):
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
            for item in parser.feed(event.data):
                sink.emit(item)
            if parser.done:
                await drain_after_end(response)
                return
        await sink.writable()
    raise UpstreamError("upstream stream ended before it finished")
