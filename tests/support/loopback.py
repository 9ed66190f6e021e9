"""A scripted HTTP/1.1 server on a loopback port, for the upstream client's tests.

Handlers answer byte for byte what a test wants (also what no real server should send);
each connection's ``Conn`` records the bytes received and when the client's EOF or reset
arrived (``time.monotonic()``), so tests can measure how fast the client lets go.
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from gateway.providers.http import ClientPool

CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
    b"6\r\ndata: \r\n"
    b"c;ext=1\r\nhello world\n\r\n"
    b"1\r\n\n\r\n"
    b"0\r\nx-trailer: t\r\n\r\n"
)
CHUNKED_BODY = b"data: hello world\n\n"
LENGTH = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
    b'{"a": "bc"}'
)
LENGTH_BODY = b'{"a": "bc"}'


@attrs.define
class Conn:
    received: bytearray = attrs.field(factory=bytearray)
    requests: int = 0
    closed_at: float | None = None  # time.monotonic() of EOF or reset from the client
    handshake_failed: bool = False
    closed: trio.Event = attrs.field(factory=trio.Event)

    def stamp_closed(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self.closed.set()


Handler = Callable[["Peer"], Awaitable[None]]


@attrs.define
class Peer:
    """The server side of one connection, as a handler sees it."""

    stream: trio.abc.Stream
    conn: Conn
    buffer: bytearray = attrs.field(factory=bytearray)

    async def request(self) -> bytes | None:
        """One whole request (head and content-length body), or None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._more():
                return None
        head, _, _ = bytes(self.buffer).partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        size = len(head) + 4 + length
        while len(self.buffer) < size:
            if not await self._more():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.conn.requests += 1
        return data

    async def _more(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        except trio.ClosedResourceError:
            return False  # the handler closed this end itself
        if not data:
            self.conn.stamp_closed()
            return False
        self.conn.received += data
        self.buffer += data
        return True

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0)."""
        sock = self.stream.socket if isinstance(self.stream, trio.SocketStream) else None
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def wait_eof(self) -> None:
        while await self._more():
            pass


@attrs.define
class Server:
    port: int
    connections: list[Conn]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/x"

    async def wait_closed(self, index: int, within: float = 2.0) -> float:
        with trio.fail_after(within):
            await self.connections[index].closed.wait()
        closed = self.connections[index].closed_at
        assert closed is not None
        return closed


async def serve(
    nursery: trio.Nursery, handler: Handler, tls: ssl.SSLContext | None = None
) -> Server:
    connections: list[Conn] = []

    async def on_connection(stream: trio.SocketStream) -> None:
        conn = Conn()
        connections.append(conn)
        wrapped: trio.abc.Stream = stream
        if tls is not None:
            wrapped = trio.SSLStream(stream, tls, server_side=True)
            try:
                await wrapped.do_handshake()
            except trio.BrokenResourceError:
                conn.handshake_failed = True
                conn.stamp_closed()
                return
        peer = Peer(wrapped, conn)
        try:
            await handler(peer)
            await peer.wait_eof()  # linger until the client leaves
        except trio.BrokenResourceError:
            conn.stamp_closed()
        finally:
            await trio.aclose_forcefully(wrapped)

    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return Server(port, connections)


def reply(*pieces: bytes, requests: int = 1, pause: float = 0.0) -> Handler:
    """A handler answering ``requests`` requests, each with ``pieces`` sent one by one."""

    async def handler(peer: Peer) -> None:
        for _ in range(requests):
            if await peer.request() is None:
                return
            for piece in pieces:
                await peer.send(piece)
                if pause:
                    await trio.sleep(pause)

    return handler


async def fetch(pool: ClientPool, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    async with pool.stream("POST", url, {"content-type": "application/json"}, body) as response:
        data = await response.read(1 << 20)
    assert data is not None
    return response.status, data
