"""The HTTP edge over raw sockets: framing, paths, slow bodies, methods (FAULTS F8, F9, F11).

No client library here: each would normalise exactly the bytes under test. Every read is
bounded; "the server closed the connection" is a value to assert on (``tests/raw_http.py``).
"""

from __future__ import annotations

import json
import time

import pytest
import trio

from tests.support.gateways import GatewayFactory, Gw
from tests.support.raw_http import RawConnection, request

BODY = json.dumps({"model": "fake/lorem", "messages": [
    {"role": "user", "content": "#sim tokens=2\nhi"}]}).encode()
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


def head(gw: Gw, *headers: str) -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1",
             f"Authorization: Bearer {gw.key}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


FRAMINGS = {
    # Content-Length and Transfer-Encoding both: processed by TE, a second request would
    # ride in the body as far as a CL-framing proxy is concerned.
    "cl+te": lambda gw: head(gw, "Content-Length: 4", "Transfer-Encoding: chunked")
    + chunked(BODY) + SMUGGLED,
    "te+cl": lambda gw: head(gw, "Transfer-Encoding: chunked", f"Content-Length: {len(BODY)}")
    + chunked(BODY) + SMUGGLED,
    # An obs-folded Transfer-Encoding (a proxy may not see it as one).
    "obs-fold te": lambda gw: head(gw, f"Content-Length: {len(BODY)}", "Transfer-Encoding:",
                                   " chunked") + chunked(BODY) + SMUGGLED,
    "obs-fold any": lambda gw: head(gw, f"Content-Length: {len(BODY)}", "X-Note: a",
                                    "\tb") + BODY + SMUGGLED,
    "two lengths": lambda gw: head(gw, f"Content-Length: {len(BODY)}", "Content-Length: 4")
    + BODY + SMUGGLED,
    "te chunked, identity": lambda gw: head(gw, "Transfer-Encoding: chunked, identity")
    + chunked(BODY) + SMUGGLED,
}


# A transfer coding the server does not implement is 501 (RFC 9112 section 6.1); every
# other ambiguity is a malformed request.
STATUS = {"te chunked, identity": 501}


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
async def test_ambiguous_framing_is_refused_and_the_connection_closed(
    gw: Gw, framing: str
) -> None:
    connection = await RawConnection.open(gw.url)
    try:
        await connection.send(FRAMINGS[framing](gw))
        reply = await connection.reply()
        assert reply is not None and reply.status == STATUS.get(framing, 400), reply
        assert reply.headers.get("connection", "").lower() == "close"
        assert reply.headers["content-type"] == "application/json"
        assert "error" in reply.json()
        # Whatever followed the head is never served: no second response, just the close.
        assert await connection.wait_closed() == b""
    finally:
        await connection.aclose()


async def test_a_plain_chunked_request_is_still_served(gw: Gw) -> None:
    connection = await RawConnection.open(gw.url)
    try:
        await connection.send(head(gw, "Transfer-Encoding: chunked") + chunked(BODY))
        reply = await connection.reply()
        assert reply is not None and reply.status == 200
    finally:
        await connection.aclose()


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1//generation"), ("GET", "/admin//keys"), ("GET", "//v1/models"),
    ("POST", "/v1//chat/completions"), ("GET", "/v1/%2Fgeneration"),
    ("POST", "/v1beta/models//x:generateContent"), ("GET", "/healthz//"),
])
async def test_an_empty_path_segment_is_a_404_never_a_redirect(
    gw: Gw, method: str, path: str
) -> None:
    connection = await RawConnection.open(gw.url)
    try:
        # A redirect would be built from this Host: an open redirect.
        await connection.send(request(method, path, body=b"{}" if method == "POST" else None)
                              .replace(b"Host: 127.0.0.1", b"Host: evil.example"))
        reply = await connection.reply()
        assert reply is not None and reply.status == 404
        assert "location" not in reply.headers
        assert "error" in reply.json()
    finally:
        await connection.aclose()


async def test_a_body_that_trickles_in_gets_a_408_at_the_body_deadline(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(body=1.0) as gw:
        connection = await RawConnection.open(gw.url)
        try:
            await connection.send(head(gw, f"Content-Length: {len(BODY)}"))
            began = time.monotonic()

            async def trickle() -> None:
                for byte in BODY:
                    await connection.send(bytes([byte]))
                    await trio.sleep(0.2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                reply = await connection.reply(within=10)
                nursery.cancel_scope.cancel()
            took = time.monotonic() - began
            assert reply is not None and reply.status == 408, reply
            assert reply.json()["error"]["type"] == "request_timeout"
            assert reply.headers.get("connection", "").lower() == "close"
            assert 0.9 < took < 5
            await connection.wait_closed()
        finally:
            await connection.aclose()


async def test_an_admin_body_that_trickles_in_gets_a_408_too(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AROUTER_ADMIN_TOKEN", "t" * 40)
    async with start_gateway(body=1.0) as gw:
        connection = await RawConnection.open(gw.url)
        try:
            await connection.send(
                b"POST /admin/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + b"t" * 40 + b"\r\nContent-Length: 50\r\n\r\n{")
            reply = await connection.reply(within=10)
            assert reply is not None and reply.status == 408
            assert reply.json()["error"]["code"] == 408
        finally:
            await connection.aclose()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_gemini_methods_answer_405_with_allow_like_the_other_routes(
    gw: Gw, method: str
) -> None:
    for path in ("/v1beta/models/gemini-lorem:generateContent",
                 "/v1/models/gemini-lorem:streamGenerateContent", "/v1/chat/completions"):
        connection = await RawConnection.open(gw.url)
        try:
            await connection.send(request(method, path))
            reply = await connection.reply()
            assert reply is not None and reply.status == 405, (path, reply)
            assert reply.headers["allow"] == "POST"
            assert "error" in reply.json()
        finally:
            await connection.aclose()


async def test_an_answer_given_before_the_body_was_read_says_it_closes(gw: Gw) -> None:
    """A 401 (or any refusal before the body) leaves the body unread: the server closes the
    connection after it, so the answer must say Connection: close, or a keep-alive client
    reuses the connection and sees its next request dropped without an answer."""
    connection = await RawConnection.open(gw.url)
    try:
        await connection.send(request(
            "POST", "/v1/chat/completions", body=BODY,
            headers={"Authorization": "Bearer lr_live_000000000000_" + "0" * 48}))
        reply = await connection.reply()
        assert reply is not None and reply.status == 401
        assert reply.headers.get("connection", "").lower() == "close"
        await connection.wait_closed()
    finally:
        await connection.aclose()
    # And with a real keep-alive client: every request gets its answer.
    import httpx

    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        for n in range(6):
            key = gw.key if n % 2 else "lr_live_000000000000_" + "0" * 48
            response = await client.post("/v1/chat/completions", content=BODY, headers={
                "authorization": f"Bearer {key}", "content-type": "application/json"})
            assert response.status_code == (200 if n % 2 else 401)
