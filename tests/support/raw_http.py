"""HTTP/1.1 over a raw loopback socket, for tests that must see exactly what the server does
with a connection: keep-alive, pipelining, a close with or without a response.

No client library here: httpx and friends retry, pool and hide a closed connection, which is
what these tests are about. ``RawConnection.reply`` returns ``None`` when the server closes
the connection (FIN or reset) before a whole response, so "silence" is a value to assert on,
never a hang: every read is bounded.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]  # lowercase names (the last value of a repeated header)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, path: str, *, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chat(key: str, content: str, *, stream: bool = False) -> bytes:
    """A chat completion request to the fake upstream's ``fake/lorem``."""
    body = json.dumps({"model": "fake/lorem", "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()
    return request("POST", "/v1/chat/completions", body=body,
                   headers={"Authorization": f"Bearer {key}"})


class RawConnection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self.closed = False  # the server closed (or reset) the connection

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").split(":")
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        """More bytes into the buffer; False once the server has closed the connection."""
        if self.closed:
            return False
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset: the server closed with our bytes unread
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        return True

    async def _until(self, marker: bytes) -> int | None:
        while (at := self._buffer.find(marker)) < 0:
            if not await self._fill():
                return None
        return at

    async def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if not await self._fill():
                return None
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    async def until(self, marker: bytes, within: float = 10.0) -> bool:
        """Wait (reading, not consuming) until ``marker`` has arrived; False if the
        connection closed first."""
        with trio.fail_after(within):
            return await self._until(marker) is not None

    async def reply(self, within: float = 10.0) -> Reply | None:
        """The next whole response, or None if the connection closed before one arrived."""
        with trio.fail_after(within):
            end = await self._until(b"\r\n\r\n")
            if end is None:
                return None
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[:end + 4]
            status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    line_end = await self._until(b"\r\n")
                    if line_end is None:
                        return None
                    size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
                    del self._buffer[:line_end + 2]
                    chunk = await self._take(size + 2)
                    if chunk is None:
                        return None
                    if size == 0:
                        break
                    body += chunk[:-2]
                return Reply(status, headers, bytes(body))
            taken = await self._take(int(headers.get("content-length", "0")))
            return None if taken is None else Reply(status, headers, taken)

    async def wait_closed(self, within: float = 10.0) -> bytes:
        """Whatever arrives until the server closes the connection."""
        with trio.fail_after(within):
            while await self._fill():
                pass
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


async def ready(url: str) -> bool:
    """``GET /readyz`` on a new connection answers 200."""
    try:
        connection = await RawConnection.open(url)
    except OSError:
        return False
    try:
        await connection.send(request("GET", "/readyz"))
        reply = await connection.reply(within=5)
        return reply is not None and reply.status == 200
    finally:
        await connection.aclose()


async def wait_ready(url: str, within: float = 30.0) -> None:
    """Until the server at ``url`` is ready (``--workers`` spawn and start after the banner)."""
    with trio.fail_after(within):
        while True:
            if await ready(url):
                return
            await trio.sleep(0.1)
