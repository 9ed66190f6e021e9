"""HTTP/1.1 over one upstream connection: a request written at once, a response streamed in.

The lean replacement for httpx/httpcore/h11 on the upstream hot path. The response is parsed
by httptools (llhttp, in C) into a small state machine held by ``Response``; this module does
the I/O around it. The pool that owns connections between requests is ``gateway.providers.http``.

Rules:
- One request at a time per connection, written with a single ``send_all`` of head and body
  (always with a body length; HEAD, whose answer has no body, is not supported).
  The client owns framing: ``host``, ``content-length`` and hop-by-hop headers given by the
  caller are dropped; a header name that is not a token, or a value with a control
  character, is refused before any byte is sent (no header injection).
- The response is untrusted: llhttp is strict (no bare LF, no CL with TE, no duplicate
  CL), the head is bounded (``MAX_HEAD``), and 1xx interim heads are skipped. Bodies are
  framed by ``Transfer-Encoding: chunked`` or ``Content-Length``, else they run to EOF; the
  blocks handed out are the dechunked bytes as received, joined only when one receive held
  several pieces.
- A connection is reusable only if its response was parsed to its end, the server allows
  keep-alive (``Connection: close`` and HTTP/1.0 without keep-alive do not) and no byte
  followed the response. Anything else - cancellation, an error, an abandoned body - closes
  the socket synchronously (``close``), so the upstream sees EOF at once.
- ``StaleConnection`` is raised instead of an error only for a reused connection that broke
  before the first byte of the response. That is how a server closing an idle connection
  looks, and like browsers and Go's net/http the pool retries it once on a fresh connection
  (a server that died after reading the request, answering nothing, would see it twice).
- ``transport_error`` is the only place where socket, TLS and parser failures become
  ``GatewayError``s. Messages are generic: they never carry URLs (some providers put keys in
  query strings) nor the foreign exception's text.
"""

from __future__ import annotations

import errno
import logging
import re
import select
import ssl
from collections.abc import Awaitable, Callable, Mapping

import httptools
import trio

from gateway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

log = logging.getLogger("arouter.upstream")

MAX_HEAD = 64 * 1024  # bytes of response head (status line and headers, 1xx included)
DEFAULT_LIMIT = 4 * 1024 * 1024  # bytes of one answer held at once ([server] max_answer_bytes)
# 16 KiB, not 64: on a saturated loop a smaller read keeps each task's turn short, so a
# disconnect waits less behind other streams (cancel p99 under saturation 36 -> ~28 ms).
RECEIVE_SIZE = 16 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HTAB
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f-\xff]")
# Framing and hop-by-hop headers belong to this module, whatever the caller passes.
_OWN_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "proxy-connection", "expect",
})


class StaleConnection(Exception):
    """A reused connection broke before any byte of the response: safe to retry once."""


class _TrailingData(Exception):
    """Bytes followed the end of the response (raised inside the parser's callback)."""


def render_request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The request's bytes: head and body, ready for one ``send_all``."""
    if _BAD_TARGET.search(target) or not _TOKEN.fullmatch(method):
        raise UpstreamProtocolError("the upstream request target is invalid")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n"]
    for name, value in headers.items():
        if name.lower() in _OWN_HEADERS:
            continue
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise UpstreamProtocolError("a header for the upstream is invalid")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    try:
        head = "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise UpstreamProtocolError("a header for the upstream is invalid") from None
    return head + body


def transport_error(exc: BaseException, *, connecting: bool = False) -> GatewayError:
    """Map a foreign failure of the upstream connection into the gateway's error tree."""
    if isinstance(exc, trio.TooSlowError):
        return UpstreamTimeout("upstream connect timed out", deadline="connect")
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        if connecting:
            return UpstreamConnectError("upstream TLS handshake failed")
        return UpstreamProtocolError("upstream TLS connection failed")
    if connecting:
        return UpstreamConnectError("could not connect to the upstream")
    if isinstance(exc, httptools.HttpParserError | httptools.HttpParserUpgrade):
        return UpstreamProtocolError("upstream sent a malformed response")
    return UpstreamProtocolError("upstream connection closed unexpectedly")


Receive = Callable[[int], Awaitable[bytes | bytearray]]

# Exceptions a send or receive on an upstream stream can raise (anything else is a bug).
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


async def connect(
    scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None, within: float
) -> Connection:
    """Open a TCP (and, for https, TLS) connection within ``within`` seconds.

    Cancellation or failure at any point closes whatever was opened. No proxy is consulted;
    TLS verifies the chain and the hostname (the context's settings) before any request byte.
    """
    try:
        with trio.fail_after(within):
            stream = await trio.open_tcp_stream(host, port)  # sets TCP_NODELAY
            if scheme != "https":
                return Connection(stream, stream.socket)
            assert ssl_context is not None
            tls = trio.SSLStream(
                stream, ssl_context, server_hostname=host, https_compatible=True
            )
            try:
                await tls.do_handshake()
            except BaseException:
                stream.socket.close()
                raise
            return Connection(tls, stream.socket)
    except (trio.TooSlowError, *_IO_ERRORS) as exc:
        # The client hears a generic 502 (no internal topology); the log says what and why.
        log.warning("upstream connect failed: %s", _cause(exc),
                    extra={"target": f"{scheme}://{host}:{port}", "cause": _cause(exc)})
        raise transport_error(exc, connecting=True) from None


def _cause(exc: BaseException) -> str:
    """Why a connect failed, for the log: the errno's name and text, the TLS reason, or the
    deadline (never a traceback)."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    # trio.open_tcp_stream raises "all attempts to connect ... failed" from a group of the
    # per-address errors: those hold the errno.
    found: list[BaseException] = []
    for error in (exc.__cause__, exc.__context__):
        if isinstance(error, BaseExceptionGroup):
            found += error.exceptions
        elif error is not None:
            found.append(error)
    for error in (*found, exc):
        if isinstance(error, ssl.SSLError):
            return f"TLS: {error.reason or error.strerror or 'handshake failed'}"
        if isinstance(error, OSError) and error.errno is not None:
            name = errno.errorcode.get(error.errno, str(error.errno))
            return f"{name} ({error.strerror})" if error.strerror else name
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
    return "the connection failed"


class Connection:
    """One upstream connection, owned by one request at a time (or idle in the pool)."""

    __slots__ = ("_poll", "_receive", "_send_all", "_socket", "idle_since", "pooled", "served")

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
                 socket: trio.socket.SocketType) -> None:
        self._socket = socket
        # Plain TCP reads the trio socket directly: the stream wrapper adds a context
        # manager per call and nothing else we need. (Waiting for readability before each
        # read, to skip the EAGAIN attempt, measured slower on a busy gateway: there the
        # next block has often arrived by the time the reader asks.)
        self._receive: Receive = (
            socket.recv if isinstance(stream, trio.SocketStream) else stream.receive_some
        )
        self._send_all = stream.send_all
        self._poll: select.poll | None = None
        self.served = 0  # responses completed on this connection
        self.idle_since = 0.0
        self.pooled = False

    def close(self) -> None:
        """Close at once, without a checkpoint (so also while cancelled); idempotent.

        TLS ends without close_notify: the HTTP framing already says where answers end."""
        self._socket.close()

    def readable(self) -> bool:
        """Whether an idle connection has something to read: EOF, a reset or stray bytes.

        Either way it cannot carry a new request."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self._socket.fileno(), select.POLLIN)
        return bool(self._poll.poll(0))

    async def request(self, data: bytes) -> Response:
        """Send a rendered request and read the response head.

        Raises ``StaleConnection`` if a reused connection broke before the first byte of the
        response. On any other exception (cancellation included) the caller closes."""
        retry_safe = self.served > 0
        try:
            await self._send_all(data)
        except _IO_ERRORS as exc:
            if retry_safe:
                raise StaleConnection from None
            raise transport_error(exc) from None
        response = Response(self._receive, retry_safe=retry_safe)
        await response.read_head()
        return response


class Response:
    """A response being read: ``status``, ``headers`` (names lowercased), then body blocks.

    ``async for block in response`` yields the body as it arrives, without copying more
    than the parser does; ``reusable`` says whether the connection may serve again.
    """

    __slots__ = ("_blocks", "_complete", "_head_done", "_keep_alive", "_parser",
                 "_receive", "_received", "_until_eof", "headers", "limit", "retry_safe",
                 "status")

    def __init__(self, receive: Receive, *, retry_safe: bool) -> None:
        self._receive = receive
        self._parser = httptools.HttpResponseParser(self)
        self._blocks: list[bytes] = []
        self._received = 0
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._until_eof = False
        self.retry_safe = retry_safe  # a reused connection, and nothing received yet
        # The most of its body held in memory at once (a whole answer, one SSE event); the
        # pool sets its own.
        self.limit = DEFAULT_LIMIT
        self.status = 0
        self.headers: dict[str, str] = {}

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive

    # -- parser callbacks (called by httptools inside ``feed_data``) ----------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _TrailingData

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer after a chunked body: not part of the head
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self.headers = {}  # an interim head (100, 103): the real one follows
            return
        self.status = status
        self._head_done = True
        encoding = self.headers.get("transfer-encoding")
        if encoding is None:
            self._until_eof = "content-length" not in self.headers
        else:
            self._until_eof = not encoding.rstrip(" \t").lower().endswith("chunked")

    def on_body(self, body: bytes) -> None:
        self._blocks.append(body)

    def on_message_complete(self) -> None:
        if self._head_done:  # else the end of an interim head
            self._complete = True
            self._keep_alive = self._parser.should_keep_alive()

    # -- reading --------------------------------------------------------------------------

    async def _fill(self) -> None:
        """Receive once and parse what came; raise if the connection broke too early."""
        try:
            data = await self._receive(RECEIVE_SIZE)
        except _IO_ERRORS as exc:
            if self.retry_safe:
                raise StaleConnection from None
            raise transport_error(exc) from None
        if not data:
            if self._head_done and self._until_eof:
                self._complete = True  # the body ran to EOF, as announced
                return
            if self.retry_safe:
                raise StaleConnection
            raise transport_error(EOFError())
        self.retry_safe = False
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._complete:
                raise transport_error(exc) from None
            self._keep_alive = False  # bytes after the end: the connection is not clean
        if not self._head_done and self._received > MAX_HEAD:
            raise transport_error(httptools.HttpParserError("head too large"))

    async def read_head(self) -> None:
        while not self._head_done:
            await self._fill()

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        blocks = self._blocks
        while not blocks:
            if self._complete:
                raise StopAsyncIteration
            await self._fill()
        if len(blocks) == 1:
            return blocks.pop()
        data = b"".join(blocks)
        blocks.clear()
        return data

    async def read(self, limit: int | None = None) -> bytes | None:
        """The whole body, or None once it exceeds ``limit`` bytes (default: ``self.limit``;
        the rest is not read)."""
        limit = self.limit if limit is None else limit
        chunks = bytearray()
        async for block in self:
            chunks += block
            if len(chunks) > limit:
                return None
        return bytes(chunks)
