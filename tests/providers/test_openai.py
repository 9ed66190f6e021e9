"""``OpenAIProvider`` over the upstream client, against a scripted loopback server."""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
import pytest
import trio

from gateway.canonical import StreamEvent
from gateway.config import ProviderConfig
from gateway.errors import (
    RequestError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from gateway.providers.http import ClientPool
from gateway.providers.openai import OpenAIProvider
from gateway.routing.targets import Target
from gateway.wire.openai import request as openai_request
from tests.support.loopback import Handler, Peer, Server, serve

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(data: bytes) -> bytes:
    return chunked(b"data: " + data + b"\n\n")


@attrs.define
class Collect:
    """A sink that parses everything (no passthrough), keeping the events."""

    events: list[StreamEvent] = attrs.field(factory=list)
    writable_calls: int = 0
    passthrough: str | None = None

    def emit(self, item: StreamEvent) -> None:
        self.events.append(item)

    def emit_spliced(self, data: str, at: int, chars: int) -> None:
        raise AssertionError("no passthrough was offered")

    def abort_with(self, abort: Callable[[], None]) -> None:
        pass

    async def writable(self) -> None:
        self.writable_calls += 1


async def run(pool: ClientPool, server: Server, *, stream: bool = True) -> Collect:
    request = openai_request.parse_request({"model": "p/m", "stream": stream,
                                  "messages": [{"role": "user", "content": "hello"}]})
    target = Target(ProviderConfig(name="p", dialect="openai",
                                   base_url=f"http://127.0.0.1:{server.port}/v1"), "m")
    sink = Collect()
    await OpenAIProvider(pool).run(request, target, sink, {})
    return sink


def answer(*pieces: bytes, then: str = "linger") -> Handler:
    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            for piece in pieces:
                await peer.send(piece)
                await trio.sleep(0.001)
            if then == "reset":
                peer.reset()
                return

    return handler


async def test_stream_to_done_reuses_the_connection(nursery: trio.Nursery,
                                                    pool: ClientPool) -> None:
    data = json.dumps(CHUNK).encode()
    server = await serve(nursery, answer(HEAD, event(data), event(data), event(b"[DONE]"),
                                         b"0\r\n\r\n"))
    for _ in range(2):
        sink = await run(pool, server)
        assert len(sink.events) >= 2
        assert 1 <= sink.writable_calls <= 2  # once per block before the one with [DONE]
    assert len(server.connections) == 1 and server.connections[0].requests == 2


async def test_a_broken_tail_after_done_costs_only_the_connection(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    data = json.dumps(CHUNK).encode()
    server = await serve(nursery, answer(HEAD, event(data), event(b"[DONE]"),
                                         then="reset"))
    sink = await run(pool, server)
    assert sink.events
    assert pool.idle_count == 0


async def test_eof_before_done_is_an_error(nursery: trio.Nursery, pool: ClientPool) -> None:
    data = json.dumps(CHUNK).encode()
    server = await serve(nursery, answer(HEAD, event(data), b"0\r\n\r\n"))
    with pytest.raises(UpstreamError, match="ended before it finished"):
        await run(pool, server)


async def test_reset_mid_stream_is_a_protocol_error(nursery: trio.Nursery,
                                                    pool: ClientPool) -> None:
    data = json.dumps(CHUNK).encode()
    server = await serve(nursery, answer(HEAD, event(data), then="reset"))
    with pytest.raises(UpstreamProtocolError, match="closed unexpectedly"):
        await run(pool, server)


async def test_status_error_is_read_redacted_and_the_connection_kept(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    body = b'{"error": {"message": "too busy"}}'
    server = await serve(nursery, answer(
        b"HTTP/1.1 503 Busy\r\nretry-after: 3\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body))
    with pytest.raises(UpstreamStatusError) as info:
        await run(pool, server)
    assert (info.value.upstream_status, info.value.retry_after) == (503, 3.0)
    assert pool.idle_count == 1


async def test_a_400_relays_only_the_useful_part_of_the_upstreams_message(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    """Item 8 of the hardening issue: a context-length error reaches the user; a file path,
    a stack trace, a key and kilobytes of text do not."""
    message = ("This model's maximum context length is 8192 tokens, you asked for 9000. "
               "(loaded from /opt/vllm/models/llama/config.json; key sk-proj-abc123) "
               + "detail " * 200 + "Traceback (most recent call last):\n  File "
               '"/usr/lib/python3.11/site-packages/vllm/engine.py", line 42, in check')
    body = json.dumps({"error": {"message": message}}).encode()
    server = await serve(nursery, answer(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n" % len(body) + body))
    with pytest.raises(RequestError) as info:
        await run(pool, server)
    relayed = info.value.message
    assert "maximum context length is 8192 tokens" in relayed
    for secret in ("/opt/vllm", "config.json", "sk-proj", "Traceback", "engine.py", "\n"):
        assert secret not in relayed
    assert len(relayed) <= len("upstream rejected the request: ") + 300
