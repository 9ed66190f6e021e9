"""Just enough HTTP/1.1 for a load generator, sans-I/O: request bytes out, response parsed.

The bench shares two cores with the gateway it measures, so its own cost per request must be
small: this parser works on whole buffers (``bytes.find`` and slices, never a Python loop over
bytes) and hands body bytes straight to the SSE decoder.

Rules:
- Pure: no sockets, no clock. ``ResponseParser.feed`` takes bytes and returns the body bytes
  they carry; the head, once complete, is ``parser.head``.
- Framing follows RFC 9112: ``Transfer-Encoding: chunked`` (trailers skipped), else
  ``Content-Length``, else the body runs to EOF (and the connection cannot be kept).
  204 and 304 have no body; 1xx heads are skipped.
- The bytes are untrusted: a malformed or oversized head, a bad chunk size, conflicting
  lengths or an early EOF raise ``ProtocolError``. The parser then stays unusable.
- Split points never change the outcome: feeding one byte at a time yields the same head,
  the same body bytes (joined) and the same errors as feeding everything at once.
- Bytes after the end of the response are kept in ``leftover`` (a server that sends them
  breaks keep-alive; the client then drops the connection).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import attrs

__all__ = ["Endpoint", "Head", "ProtocolError", "ResponseParser", "render_request"]

MAX_HEAD: Final = 64 * 1024
MAX_CHUNK_LINE: Final = 4096
_HEX: Final = b"0123456789abcdefABCDEF"

# Parser states.
_HEAD, _LENGTH, _SIZE, _DATA, _CRLF, _TRAILERS, _TO_EOF, _DONE = range(8)


class ProtocolError(ValueError):
    """The response broke HTTP/1.1 (or a limit of this parser)."""


@attrs.frozen
class Endpoint:
    """A server: scheme, host, port and the path prefix given in its URL."""

    scheme: str
    host: str
    port: int
    base_path: str  # without a trailing slash; "" for ``http://host:port``

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``http://host[:port][/path]``; plain HTTP only (the bench measures local gateways,
        not TLS stacks)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.query:
            raise ValueError(f"{url!r}: expected http://host[:port][/path]")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"{url!r}: bad port") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def chat_target(self) -> str:
        """The chat-completions path: ``/v1/chat/completions`` completed from what the URL
        gives (nothing, ``.../v1``, or the whole path)."""
        if self.base_path.endswith("/chat/completions"):
            return self.base_path
        if self.base_path.endswith("/v1"):
            return self.base_path + "/chat/completions"
        return self.base_path + "/v1/chat/completions"

    @property
    def root(self) -> str:
        """The path the API's own paths (``/v1/...``, ``/v1beta/...``) go under: the URL's,
        less a trailing ``/v1`` or ``/v1/chat/completions``."""
        for suffix in ("/v1/chat/completions", "/v1"):
            if self.base_path.endswith(suffix):
                return self.base_path[:-len(suffix)]
        return self.base_path

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def render_request(
    method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes = b""
) -> bytes:
    """The bytes of one request; a body always gets its ``Content-Length``."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@attrs.frozen
class Head:
    """A response head. Header names are lower-case; values keep their case."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    keep_alive: bool

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def _parse_head(block: bytes) -> tuple[Head, int | None, bool]:
    """The head, its Content-Length (None if absent) and whether the body is chunked."""
    try:
        text = block.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ProtocolError("undecodable head") from None
    lines = text.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    connection: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name, value = name.lower(), value.strip()
        headers.append((name, value))
        if name == "content-length":
            if (not value.isdigit() or len(value) > 18
                    or (length is not None and int(value) != length)):
                raise ProtocolError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == "transfer-encoding":
            codings = [c.strip().lower() for c in value.split(",")]
            chunked = codings[-1] == "chunked"
            if not chunked:
                raise ProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
        elif name == "connection":
            connection.update(token.strip().lower() for token in value.split(","))
    keep_alive = (
        "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    )
    return Head(int(code), reason, tuple(headers), keep_alive), length, chunked


class ResponseParser:
    """Incremental parser of one response. See the module rules."""

    __slots__ = ("_buffer", "_error", "_remaining", "_state", "head", "leftover")

    def __init__(self) -> None:
        self.head: Head | None = None
        self.leftover = b""
        self._state = _HEAD
        self._buffer = b""  # unconsumed bytes of a head, chunk-size line or chunk CRLF
        self._remaining = 0  # body bytes left in the current chunk or Content-Length body
        self._error: str | None = None

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request now."""
        return (
            self._state == _DONE and self.head is not None and self.head.keep_alive
            and not self.leftover
        )

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the body bytes in it (maybe ``b""``)."""
        if self._error is not None:
            raise ProtocolError(self._error)
        state = self._state
        # The hot path: the middle of a body, nothing buffered.
        if state == _TO_EOF:
            return data
        if state in (_LENGTH, _DATA) and not self._buffer and len(data) <= self._remaining:
            self._remaining -= len(data)
            if self._remaining == 0:
                self._state = _DONE if state == _LENGTH else _CRLF
            return data
        # The hot path of a stream: one whole chunk per read, as servers write them.
        if state == _SIZE and not self._buffer:
            stop = data.find(b"\r\n", 0, 17)
            if stop > 0:
                size_text = data[:stop]
                if not size_text.strip(_HEX):
                    end = stop + 2 + int(size_text, 16)
                    if end > stop + 2 and len(data) == end + 2 and data.endswith(b"\r\n"):
                        return data[stop + 2 : end]
        try:
            return self._feed(data)
        except ProtocolError as exc:
            self._error = str(exc)
            raise

    def feed_eof(self) -> None:
        """The connection closed. Raises ``ProtocolError`` unless the response was complete
        (or ran to EOF by design)."""
        if self._state == _TO_EOF:
            self._state = _DONE
        if self._state != _DONE:
            self._error = self._error or "connection closed before the response ended"
            raise ProtocolError(self._error)

    def _feed(self, data: bytes) -> bytes:
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            state = self._state
            if state == _HEAD:
                stop = buf.find(b"\r\n\r\n", pos)
                if stop < 0:
                    if end - pos > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    self._buffer = buf[pos:]
                    break
                if stop - pos > MAX_HEAD:
                    raise ProtocolError("response head too large")
                self._start_body(buf[pos:stop])
                pos = stop + 4
            elif state in (_LENGTH, _DATA):
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DONE if state == _LENGTH else _CRLF
            elif state in (_SIZE, _TRAILERS):
                stop = buf.find(b"\r\n", pos)
                if stop < 0:
                    if end - pos > MAX_CHUNK_LINE:
                        raise ProtocolError("chunk-size or trailer line too long")
                    self._buffer = buf[pos:]
                    break
                line = buf[pos:stop]
                pos = stop + 2
                if state == _SIZE:
                    self._start_chunk(line)
                elif not line:
                    self._state = _DONE
            elif state == _CRLF:
                if end - pos < 2:
                    if buf[pos:] != b"\r":
                        raise ProtocolError("chunk data not followed by CRLF")
                    self._buffer = buf[pos:]
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _TO_EOF:
                out.append(buf[pos:])
                pos = end
            else:  # _DONE: whatever follows belongs to no request of ours
                self.leftover += buf[pos:]
                pos = end
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _start_body(self, block: bytes) -> None:
        head, length, chunked = _parse_head(block)
        if 100 <= head.status < 200:
            if head.status == 101:
                raise ProtocolError("unexpected 101 Switching Protocols")
            return  # an interim response: the real head follows
        self.head = head
        if head.status in (204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length else _DONE
        else:
            self.head = attrs.evolve(head, keep_alive=False)
            self._state = _TO_EOF

    def _start_chunk(self, line: bytes) -> None:
        size = line.split(b";", 1)[0].strip(b" \t")
        if not size or size.strip(_HEX) or len(size) > 15:
            raise ProtocolError(f"bad chunk size {line[:40]!r}")
        self._remaining = int(size, 16)
        self._state = _DATA if self._remaining else _TRAILERS
