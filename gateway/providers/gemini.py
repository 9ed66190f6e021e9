"""Adapter for Gemini upstreams (``{base_url}/v1beta/models/{model}:streamGenerateContent``).

Rules: as ``providers/openai.py``. The upstream model name becomes part of the URL path,
so it must be a plain model id (letters, digits, ``.``, ``_``, ``-``): anything else is a
400 before any connection is made. The key travels in ``x-goog-api-key``, never in the
URL (URLs end up in logs). A stream is complete once a chunk carried a ``finishReason``.
"""

from __future__ import annotations

import json
import re

from gateway.canonical import ChatRequest, Embeddings, EmbedRequest
from gateway.errors import RequestError, UpstreamProtocolError
from gateway.providers import call as upstream_call
from gateway.providers.base import Sink
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.routing.targets import Target
from gateway.wire import sse
from gateway.wire.gemini import embeddings, upstream
from gateway.wire.jsonbody import is_int, upstream_object

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class GeminiProvider:
    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        if not _MODEL_ID.fullmatch(target.model):
            raise RequestError("Invalid model specified", param="model")
        body = json.dumps(upstream.upstream_body(request), ensure_ascii=False).encode()
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        key = target.provider.api_key
        extra = {**headers, **({"x-goog-api-key": key} if key else {})}
        await upstream_call.call(
            self._clients, f"{target.provider.base_url}/v1beta/models/{target.model}:{method}",
            upstream_call.request_headers(request.stream, extra), body, key, sink,
            stream=request.stream, relay=_relay_stream, parse_whole=upstream.parse_response,
            same_dialect=request.dialect == "gemini",
        )


    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        """The upstream's own count of ``request``'s input (``:countTokens``), for the
        body the client sent (its contents, or its whole generateContentRequest)."""
        if not _MODEL_ID.fullmatch(target.model):
            raise RequestError("Invalid model specified", param="model")
        raw = {k: v for k, v in request.raw.items() if k != "model"}
        body = {"generateContentRequest": {**raw, "model": f"models/{target.model}"}}
        key = target.provider.api_key
        answer = await upstream_call.post_json(
            self._clients,
            f"{target.provider.base_url}/v1beta/models/{target.model}:countTokens",
            upstream_call.request_headers(False, {"x-goog-api-key": key} if key else {}),
            json.dumps(body, ensure_ascii=False).encode(), key)
        count = answer.get("totalTokens")
        if not is_int(count) or count < 0:
            raise UpstreamProtocolError("upstream token count has no totalTokens")
        return int(count)


    async def embed(self, request: EmbedRequest, target: Target) -> Embeddings:
        """``:batchEmbedContents``: the vectors, in input order (Gemini counts no tokens)."""
        if not _MODEL_ID.fullmatch(target.model):
            raise RequestError("Invalid model specified", param="model")
        body = json.dumps(embeddings.upstream_body(request, target.model),
                          ensure_ascii=False).encode()
        key = target.provider.api_key
        answer = await upstream_call.post_json(
            self._clients,
            f"{target.provider.base_url}/v1beta/models/{target.model}:batchEmbedContents",
            upstream_call.request_headers(False, {"x-goog-api-key": key} if key else {}),
            body, key)
        return embeddings.parse_answer(answer, len(request.inputs))


async def _relay_stream(response: Response, sink: Sink) -> None:
    parser = upstream.StreamParser()
    # A client speaking Gemini gets every chunk as sent, not parsed and re-encoded.
    relay = sink.passthrough == "gemini"

    def handle(event: sse.Event) -> bool:
        if relay:
            at, chars = upstream.text_chunk(event.data)
            if chars > 0:  # the bulk of a stream: relayed as sent, not parsed
                parser.passed(event.data)
                sink.emit_spliced(event.data, at, chars)
                return False
        obj = upstream_object(event.data, "an event")
        items = parser.feed(obj)
        if relay:
            sink.emit_frame(event.event, event.data, obj, items)
        else:
            for item in items:
                sink.emit(item)
        return parser.done

    await upstream_call.relay_events(response, sink, handle)
