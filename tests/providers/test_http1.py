"""The upstream HTTP/1.1 client (``http1`` and the pool in ``http``) against small trio servers.

Each test scripts its own server on a loopback port, byte for byte, and the server records
what it received and when it saw each connection end. The parser's split-point tests feed
the same bytes through a scripted ``receive`` too, so every boundary is certainly hit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import trio

from gateway.config import Deadlines
from gateway.errors import UpstreamConnectError, UpstreamProtocolError
from gateway.providers.http import ClientPool, split_url
from gateway.providers.http1 import Connection, Response, render_request
from tests.support.loopback import (
    CHUNKED,
    CHUNKED_BODY,
    LENGTH,
    LENGTH_BODY,
    Peer,
    fetch,
    reply,
    serve,
)

CLOSE_BUDGET = 0.050  # seconds from the client giving up to the server seeing EOF


# -- the parser, at every split point ------------------------------------------------------


def scripted(pieces: list[bytes]) -> Callable[[int], Awaitable[bytes]]:
    feed = iter(pieces)

    async def receive(max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return next(feed, b"")

    return receive


async def parse(pieces: list[bytes]) -> tuple[int, dict[str, str], bytes, bool]:
    response = Response(scripted(pieces), retry_safe=False)
    await response.read_head()
    body = b"".join([block async for block in response])
    return response.status, response.headers, body, response.reusable


@pytest.mark.parametrize(("raw", "body"), [(CHUNKED, CHUNKED_BODY), (LENGTH, LENGTH_BODY)])
async def test_every_split_point_gives_the_same_response(raw: bytes, body: bytes) -> None:
    whole = await parse([raw])
    assert whole[0] == 200 and whole[2] == body and whole[3]
    assert "x-trailer" not in whole[1]  # trailers are not headers
    for i in range(1, len(raw)):
        assert await parse([raw[:i], raw[i:]]) == whole, i
    assert await parse([raw[i : i + 1] for i in range(len(raw))]) == whole


async def test_interim_heads_are_skipped() -> None:
    raw = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + LENGTH
    status, headers, body, reusable = await parse([raw])
    assert (status, body, reusable) == (200, LENGTH_BODY, True)
    assert "link" not in headers


@pytest.mark.parametrize(
    ("raw", "reusable"),
    [
        (LENGTH.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
        (LENGTH.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1), False),
        (LENGTH.replace(b"HTTP/1.1", b"HTTP/1.0").replace(
            b"\r\n\r\n", b"\r\nconnection: keep-alive\r\n\r\n", 1), True),
        (LENGTH + b"HTTP/1.1 200 OK\r\n", False),  # bytes after the end
        (LENGTH + b"junk", False),
    ],
)
async def test_keep_alive_follows_the_server(raw: bytes, reusable: bool) -> None:
    status, _, body, can_reuse = await parse([raw])
    assert (status, body, can_reuse) == (200, LENGTH_BODY, reusable)


async def test_body_until_eof() -> None:
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nsome body"
    assert await parse([raw[:40], raw[40:]]) == (200, {"content-type": "text/plain"},
                                                  b"some body", False)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",  # EOF inside the body
        CHUNKED[:-9],  # EOF inside a chunked body
        b"HTTP/1.1 200 OK\r\ncont",  # EOF inside the head
        b"",  # nothing at all
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nfoo: bar\n\n",  # bare LF
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx: \x01\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_malformed_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        await parse([raw[i : i + 4096] for i in range(0, len(raw), 4096)])


# -- request bytes --------------------------------------------------------------------------


def test_request_is_one_buffer_and_the_client_owns_framing() -> None:
    data = render_request("POST", "/v1/x?key=k", "h:81", {
        "content-type": "application/json", "Content-Length": "999", "connection": "close",
        "Host": "evil", "transfer-encoding": "chunked"}, b"{}")
    assert data == (b"POST /v1/x?key=k HTTP/1.1\r\nhost: h:81\r\n"
                    b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}")


@pytest.mark.parametrize(
    "headers",
    [{"x-a": "1\r\nx-evil: 1"}, {"x-a": "nul\x00"}, {"bad name": "1"}, {"x-a\r\n": "1"},
     {"x-a": "\u20ac"}],
)
def test_header_injection_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(UpstreamProtocolError, match="header"):
        render_request("POST", "/", "h", headers, b"")


@pytest.mark.parametrize(("method", "target"), [("POST", "/a b"), ("POST", "/a\r\n"),
                                                 ("PO ST", "/")])
def test_bad_request_line_is_refused(method: str, target: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="target"):
        render_request(method, target, "h", {}, b"")


def test_url_split() -> None:
    origin, target = split_url("https://[::1]:8443/v1beta/models/x:stream?key=AIza")
    assert (origin.scheme, origin.host, origin.port, origin.authority) == (
        "https", "::1", 8443, "[::1]:8443")
    assert target == "/v1beta/models/x:stream?key=AIza"
    assert split_url("http://example.com")[0].authority == "example.com"
    for bad in ["ftp://x/", "/relative", "http://x:99999/"]:
        with pytest.raises(ValueError) as info:
            split_url(bad)
        assert "x" not in str(info.value).replace("absolute", "")  # no URL in the message


# -- over real sockets ----------------------------------------------------------------------


async def test_byte_by_byte_server(nursery: trio.Nursery, pool: ClientPool) -> None:
    for raw, body in [(CHUNKED, CHUNKED_BODY), (LENGTH, LENGTH_BODY)]:
        server = await serve(nursery, reply(*[raw[i : i + 1] for i in range(len(raw))],
                                            pause=0.0005))
        assert await fetch(pool, server.url) == (200, body)


async def test_keep_alive_reuses_one_connection(nursery: trio.Nursery, pool: ClientPool) -> None:
    server = await serve(nursery, reply(CHUNKED[:50], CHUNKED[50:], requests=3))
    for body in (b"{}", b"[1]", b"x" * 100_000):
        assert await fetch(pool, server.url, body) == (200, CHUNKED_BODY)
    assert len(server.connections) == 1
    assert server.connections[0].requests == 3
    assert pool.idle_count == 1


async def test_idle_connections_are_bounded_per_origin(nursery: trio.Nursery) -> None:
    gate = trio.Event()

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await gate.wait()
            await peer.send(LENGTH)

    server = await serve(nursery, handler)
    clients = ClientPool(Deadlines(), max_idle_per_origin=2)
    try:
        async with trio.open_nursery() as inner:
            for _ in range(4):
                inner.start_soon(fetch, clients, server.url)
            await trio.sleep(0.05)
            gate.set()
        assert len(server.connections) == 4
        assert clients.idle_count == 2
        closed = [c for c in server.connections if c.closed_at is not None]
        with trio.fail_after(1):
            while len(closed) < 2:
                await trio.sleep(0.001)
                closed = [c for c in server.connections if c.closed_at is not None]
        await fetch(clients, server.url)
        assert len(server.connections) == 4  # reused, not reconnected
    finally:
        await clients.aclose()
    for i in range(4):
        await server.wait_closed(i)


async def test_the_most_recently_released_connection_is_reused(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    count = 0

    async def later_connections_answer_later(peer: Peer) -> None:
        nonlocal count
        delay, count = 0.03 * count, count + 1
        while await peer.request() is not None:
            await trio.sleep(delay)
            delay = 0
            await peer.send(LENGTH)

    server = await serve(nursery, later_connections_answer_later)
    async with trio.open_nursery() as inner:
        for _ in range(3):
            inner.start_soon(fetch, pool, server.url)
    assert pool.idle_count == 3
    await fetch(pool, server.url)
    assert [c.requests for c in server.connections] == [1, 1, 2]


async def test_connection_close_is_not_reused(nursery: trio.Nursery, pool: ClientPool) -> None:
    raw = LENGTH.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
    server = await serve(nursery, reply(raw))
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert len(server.connections) == 2
    assert pool.idle_count == 0
    await server.wait_closed(0)


async def test_abandoned_body_closes_the_socket_at_once(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    server = await serve(nursery, reply(head + b"5\r\nfirst\r\n"))  # then nothing
    async with pool.stream("POST", server.url, {}, b"{}") as response:
        async for block in response:
            assert block == b"first"
            break
    left = time.monotonic()
    assert await server.wait_closed(0) - left < CLOSE_BUDGET
    assert pool.idle_count == 0


@pytest.mark.parametrize("phase", ["head", "body"])
async def test_cancellation_closes_the_socket_at_once(
    nursery: trio.Nursery, pool: ClientPool, phase: str
) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
    server = await serve(nursery, reply(head + b"part" if phase == "body" else b""))
    with trio.move_on_after(0.1) as scope:
        async with pool.stream("POST", server.url, {}, b"{}") as response:
            async for _ in response:
                pass
    left = time.monotonic()
    assert scope.cancelled_caught
    assert await server.wait_closed(0) - left < CLOSE_BUDGET
    assert pool.idle_count == 0


async def test_an_idle_connection_closed_by_the_server_is_replaced(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    async def answer_once_then_close(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(LENGTH)
        await trio.sleep(0.02)
        await peer.stream.aclose()

    server = await serve(nursery, answer_once_then_close)
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert pool.idle_count == 1
    await trio.sleep(0.1)  # the server has closed its end of the pooled connection
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert len(server.connections) == 2
    assert server.connections[0].requests == 1


async def test_a_reused_connection_closed_before_answering_is_retried_once(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    """The race the readability check cannot see: the server closes just as the request
    arrives, and answers nothing. Retried on a fresh connection, exactly once."""

    async def close_on_second_request(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(LENGTH)
        if await peer.request() is not None:
            await peer.stream.aclose()

    server = await serve(nursery, close_on_second_request)
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert [c.requests for c in server.connections] == [2, 1]


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_stale_connections_the_readability_check_missed_are_retried(
    nursery: trio.Nursery, pool: ClientPool, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The server closed the idle connection (FIN or RST) and the check did not see it in
    time: the send or the first read fails, and the request goes out on a new connection."""
    monkeypatch.setattr(Connection, "readable", lambda self: False)

    async def answer_once_then_close(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(LENGTH)
        if how == "rst":
            peer.reset()
        else:
            await peer.stream.aclose()

    server = await serve(nursery, answer_once_then_close)
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    await trio.sleep(0.05)  # the server has closed its end
    assert await fetch(pool, server.url) == (200, LENGTH_BODY)
    assert [c.requests for c in server.connections] == [1, 1]


async def test_reset_mid_body_is_a_protocol_error(nursery: trio.Nursery,
                                                  pool: ClientPool) -> None:
    async def reset_mid_body(peer: Peer) -> None:
        await peer.request()
        await peer.send(LENGTH[:-3])
        await trio.sleep(0.01)
        peer.reset()

    server = await serve(nursery, reset_mid_body)
    with pytest.raises(UpstreamProtocolError, match="closed unexpectedly"):
        await fetch(pool, server.url)


async def test_a_fresh_connection_closed_before_answering_is_not_retried(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    async def close_at_once(peer: Peer) -> None:
        await peer.request()
        await peer.stream.aclose()

    server = await serve(nursery, close_at_once)
    with pytest.raises(UpstreamProtocolError, match="closed unexpectedly"):
        await fetch(pool, server.url)
    assert len(server.connections) == 1


async def test_a_reused_connection_that_broke_mid_answer_is_not_retried(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    async def half_answer_the_second(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(LENGTH)
        if await peer.request() is not None:
            await peer.send(LENGTH[:20])
            await peer.stream.aclose()

    server = await serve(nursery, half_answer_the_second)
    await fetch(pool, server.url)
    with pytest.raises(UpstreamProtocolError):
        await fetch(pool, server.url)
    assert len(server.connections) == 1


async def test_idle_connections_expire(nursery: trio.Nursery) -> None:
    server = await serve(nursery, reply(LENGTH, requests=5))
    clients = ClientPool(Deadlines(), idle_expiry=0.05)
    try:
        for _ in range(3):
            await fetch(clients, server.url)
        await trio.sleep(0.1)
        await fetch(clients, server.url)
        assert len(server.connections) == 2
        await server.wait_closed(0)  # the expired one was closed, not just forgotten
    finally:
        await clients.aclose()


async def test_an_oversized_body_stops_reading_and_drops_the_connection(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    server = await serve(nursery, reply(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
                                        b"a" * 500))
    async with pool.stream("POST", server.url, {}, b"") as response:
        assert await response.read(100) is None
    await server.wait_closed(0)
    assert pool.idle_count == 0


async def test_redirects_are_answers_not_followed(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    server = await serve(nursery, reply(
        b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n"))
    async with pool.stream("POST", server.url, {}, b"{}") as response:
        assert response.status == 302
        assert response.headers["location"] == "http://169.254.169.254/"
    assert len(server.connections) == 1


async def test_the_request_arrives_as_written(nursery: trio.Nursery, pool: ClientPool) -> None:
    server = await serve(nursery, reply(LENGTH))
    await fetch(pool, server.url.replace("/v1/x", "/v1/x?key=1"), b'{"q": 1}')
    assert bytes(server.connections[0].received) == (
        b"POST /v1/x?key=1 HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json"
        b"\r\ncontent-length: 8\r\n\r\n{\"q\": 1}" % server.port
    )


async def test_connect_refused(pool: ClientPool) -> None:
    with trio.fail_after(1), pytest.raises(UpstreamConnectError) as info:
        await fetch(pool, "http://127.0.0.1:1/v1/x?key=AIzaSECRET")
    assert str(info.value) == "could not connect to the upstream"


async def test_a_bad_url_is_an_upstream_error(pool: ClientPool) -> None:
    with pytest.raises(UpstreamConnectError, match="URL is invalid") as info:
        pool.stream("POST", "http://h:99999/x?key=AIzaSECRET", {}, b"")
    assert "AIza" not in str(info.value)


async def test_header_injection_sends_nothing(nursery: trio.Nursery, pool: ClientPool) -> None:
    server = await serve(nursery, reply(LENGTH))
    with pytest.raises(UpstreamProtocolError):
        async with pool.stream("POST", server.url, {"x": "a\r\nx-evil: 1"}, b""):
            pass
    await trio.sleep(0.01)
    assert server.connections == []


async def test_reading_after_the_block_is_an_error_not_a_stray_fd(
    nursery: trio.Nursery, pool: ClientPool
) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
    server = await serve(nursery, reply(head + b"part"))
    async with pool.stream("POST", server.url, {}, b"") as response:
        pass
    with pytest.raises(UpstreamProtocolError):
        async for _ in response:
            pass
