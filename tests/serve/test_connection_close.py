"""A ``Connection: close`` client sees the end of every response: the server closes.

Hypercorn closes the socket inside the app's last ``send``; an app that cancels its own
tasks on the ``http.disconnect`` this produces (the relay's watcher, quart-trio) used to
cancel that close, leaving the connection open until the client gave up.
"""

from __future__ import annotations

import json

import pytest
import trio

from tests.support.gateways import Gw


async def _until_eof(gw: Gw, request: bytes) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    raw = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(5):  # EOF, not this deadline, must end the read
            while chunk := await stream.receive_some(65536):
                raw += chunk
    return raw


@pytest.mark.parametrize("stream", [True, False])
async def test_generation_responses_end_with_the_connection(gw: Gw, stream: bool) -> None:
    body = json.dumps({"model": "fake/lorem", "stream": stream,
                       "messages": [{"role": "user", "content": "#sim tokens=3\nhi"}]})
    raw = await _until_eof(gw, (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {gw.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    assert raw.startswith(b"HTTP/1.1 200")
    assert (b"data: [DONE]" in raw) == stream


@pytest.mark.parametrize("path", ["/healthz", "/nothing-here", "/v1/models"])
async def test_other_routes_end_with_the_connection(gw: Gw, path: str) -> None:
    raw = await _until_eof(gw, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               f"Authorization: Bearer {gw.key}\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 ")
