"""Adapter for Anthropic Messages upstreams (``POST {base_url}/v1/messages``).

Rules: as ``providers/openai.py`` — the call is opened in the caller's task, its abort is
registered with the sink, raw blocks go to our SSE decoder and a stateful parser
(``wire.anthropic.upstream.StreamParser``), and a stream is complete only with ``message_stop``.
"""

from __future__ import annotations

import json

from gateway.canonical import ChatRequest
from gateway.errors import UpstreamProtocolError
from gateway.providers import call as upstream_call
from gateway.providers.base import Sink
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.routing.targets import Target
from gateway.wire import sse
from gateway.wire.anthropic import upstream
from gateway.wire.jsonbody import is_int, upstream_object

API_VERSION = "2023-06-01"


class AnthropicProvider:
    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def run(
        self, request: ChatRequest, target: Target, sink: Sink, headers: dict[str, str]
    ) -> None:
        body = json.dumps(
            upstream.upstream_body(request, target.model), ensure_ascii=False
        ).encode()
        key = target.provider.api_key
        # A client of this dialect has its own API headers (anthropic-beta, ...) go along.
        own = request.headers if request.dialect == "anthropic" else {}
        extra = {**headers, **own, "anthropic-version": API_VERSION,
                 **({"x-api-key": key} if key else {})}
        await upstream_call.call(
            self._clients, f"{target.provider.base_url}/v1/messages",
            upstream_call.request_headers(request.stream, extra), body, key, sink,
            stream=request.stream, relay=_relay_stream, parse_whole=upstream.parse_message,
            same_dialect=request.dialect == "anthropic",
        )


    async def count_tokens(self, request: ChatRequest, target: Target) -> int:
        """The upstream's own count of ``request``'s input (``/v1/messages/count_tokens``):
        the fields that endpoint takes, as the client sent them, for this deployment."""
        body = {k: v for k, v in request.raw.items() if k in COUNTED}
        body["model"] = target.model
        key = target.provider.api_key
        extra = {**request.headers, "anthropic-version": API_VERSION,
                 **({"x-api-key": key} if key else {})}
        answer = await upstream_call.post_json(
            self._clients, f"{target.provider.base_url}/v1/messages/count_tokens",
            upstream_call.request_headers(False, extra),
            json.dumps(body, ensure_ascii=False).encode(), key)
        count = answer.get("input_tokens")
        if not is_int(count) or count < 0:
            raise UpstreamProtocolError("upstream token count has no input_tokens")
        return int(count)


# What Anthropic's count_tokens takes of a Messages body.
COUNTED = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


async def _relay_stream(response: Response, sink: Sink) -> None:
    parser = upstream.StreamParser()
    # A client speaking Anthropic gets every event as sent, not parsed and re-encoded.
    relay = sink.passthrough == "anthropic"

    def handle(event: sse.Event) -> bool:
        if relay and event.event in ("content_block_delta", None):
            chars = upstream.text_delta(event.data)
            if chars > 0:  # the bulk of a stream: relayed as sent, not parsed
                sink.emit_spliced(event.data, 0, chars)
                return False
        obj = upstream_object(event.data, "an event")
        items = parser.feed(event.event, obj)
        if relay:
            sink.emit_frame(event.event, event.data, obj, items)
        else:
            for item in items:
                sink.emit(item)
        return parser.done

    await upstream_call.relay_events(response, sink, handle)
