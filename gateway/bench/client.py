"""One request over a keep-alive connection: connect or reuse, send, parse, time, abort.

Rules:
- ``connection.Connection`` (plain TCP on Trio's I/O waits) and the sans-I/O ``http1``
  parser; body bytes go straight to ``gateway.wire.sse.Decoder``, events to
  ``events.classify``. No JSON per token.
- Timestamps are ``time.monotonic()``, taken right after the receive that brought the bytes
  (events that arrive in one read share it, so their gap is 0: what the client saw).
- The planned abort and the per-request timeout are one cancel-scope deadline around connect,
  send and the read loop. When it passes, the socket is closed at once (no checkpoint first)
  and ``aborted_at`` is stamped right after the close (``abort_began_at`` just before it:
  the close wakes the server, and the kernel may run it before the bench reads its clock).
- A connection goes back to the pool only after a complete response that allows keep-alive;
  every other ending closes it. A reused connection that the server closed while idle (EOF
  or reset before any response byte) is retried once on a fresh connection.
- Network and protocol trouble never raises out of ``perform``: it becomes the result's
  ``outcome`` and ``error_kind``. ``trio.Cancelled`` from outside is never caught.
"""

from __future__ import annotations

import errno
import json
import math
import socket
import time
from typing import Any, Final

import attrs
import trio

from gateway.bench import events
from gateway.bench.connection import Connection, resolve
from gateway.bench.http1 import Endpoint, ProtocolError, ResponseParser, render_request
from gateway.bench.routes import ROUTES, Route
from gateway.bench.samples import Outcome, RequestResult
from gateway.wire.sse import Decoder, SSEError

__all__ = ["Pool", "RequestSpec", "fetch_json", "perform", "render", "render_chat"]

MAX_BODY: Final = 64 * 1024 * 1024  # a non-streamed body is kept whole: bound it


@attrs.frozen
class RequestSpec:
    """One request of the workload, rendered once so sending costs one ``send_all``."""

    index: int
    target: str
    tag: str
    stream: bool
    payload: bytes  # the whole HTTP request
    abort_after: float | None  # seconds after the start, or None to read to the end
    route: Route = ROUTES["chat"]  # how its answer is read
    # When it was due (``time.monotonic()``): an open-loop run times it from there, so a
    # request that waited for a free worker counts its wait (no coordinated omission).
    due: float | None = None


def render_chat(endpoint: Endpoint, key: str | None, body: dict[str, Any]) -> bytes:
    """The bytes of one chat-completions POST to ``endpoint``."""
    return render(endpoint, key, ROUTES["chat"], body, "", stream=True)


def render(endpoint: Endpoint, key: str | None, route: Route, body: dict[str, Any],
           model: str, *, stream: bool) -> bytes:
    """The bytes of one POST of ``body`` to ``endpoint`` in ``route``'s dialect."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return render_request("POST", route.target(endpoint, model, stream), endpoint.host_header,
                          route.headers(key), data)


class Pool:
    """Idle keep-alive connections to one endpoint, shared by the workers of a run.

    The host is resolved once (a name like ``localhost`` would otherwise cost a thread per
    connect). ``close`` closes the idle connections; a connection in use belongs to its
    request until it is given back or closed.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.connects = 0
        self._idle: list[Connection] = []
        self._address: tuple[socket.AddressFamily, str] | None = None

    async def connect(self) -> Connection:
        """A new connection. Raises ``OSError`` when the connect fails."""
        if self._address is None:
            self._address = await resolve(self.endpoint.host, self.endpoint.port)
        connection = await Connection.open(*self._address, self.endpoint.port)
        self.connects += 1
        return connection

    def take(self) -> Connection | None:
        return self._idle.pop() if self._idle else None

    def give(self, connection: Connection) -> None:
        self._idle.append(connection)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class _Broken(Exception):
    """The connection failed; ``fresh`` says whether no response byte had arrived yet."""

    def __init__(self, kind: str, *, fresh: bool) -> None:
        super().__init__(kind)
        self.kind = kind
        self.fresh = fresh


def _errno_name(exc: BaseException) -> str:
    """``ECONNRESET`` and the like, from ``exc`` or what it was raised from."""
    current: BaseException | None = exc
    for _ in range(8):  # a chain is short; bound the walk anyway
        if current is None:
            break
        if isinstance(current, OSError) and current.errno is not None:
            return errno.errorcode.get(current.errno, "error")
        if isinstance(current, BaseExceptionGroup):  # several attempts failed: take the first
            current = current.exceptions[0]
            continue
        current = current.__cause__ or current.__context__
    return "error"


@attrs.define
class _Exchange:
    """The state of one request while it runs (task-local)."""

    spec: RequestSpec
    result: RequestResult
    connection: Connection | None = None
    saw_done: bool = False
    error: tuple[Outcome, str] | None = None  # the first error seen in the body
    body: list[bytes] = attrs.field(factory=list)  # non-streamed bodies only
    body_size: int = 0

    async def run(self, pool: Pool) -> None:
        connection = pool.take()
        self.result.reused_connection = connection is not None
        for attempt in range(2):
            if connection is None:
                try:
                    connection = await pool.connect()
                except OSError as exc:
                    self._fail("connect", f"connect {_errno_name(exc)}")
                    return
            self.connection = connection
            try:
                parser = await self._exchange(connection)
            except _Broken as exc:
                connection.close()
                self.connection = connection = None
                if exc.fresh and self.result.reused_connection and attempt == 0:
                    continue  # the server closed the idle connection: once more, fresh
                self._fail("connection", exc.kind)
                return
            except (ProtocolError, SSEError) as exc:
                connection.close()
                self.connection = None
                self._fail("protocol", f"bad {'SSE' if isinstance(exc, SSEError) else 'HTTP'}")
                return
            self._settle(parser)
            if parser.reusable:
                pool.give(connection)
            else:
                connection.close()
            self.connection = None
            return

    async def _exchange(self, connection: Connection) -> ResponseParser:
        result = self.result
        parser = ResponseParser()
        decoder: Decoder | None = None
        got_bytes = False
        last = 0.0
        classify = self.spec.route.classify
        try:
            await connection.send_all(self.spec.payload)
            while True:
                data = await connection.receive()
                now = time.monotonic()
                if not data:
                    try:
                        parser.feed_eof()
                    except ProtocolError:
                        raise _Broken("connection closed", fresh=not got_bytes) from None
                    break
                got_bytes = True
                body = parser.feed(data)
                if result.headers_at is None and parser.head is not None:
                    result.headers_at = now
                    result.status = parser.head.status
                    if self.spec.stream and parser.head.status == 200:
                        decoder = Decoder()
                if body:
                    if decoder is None:
                        self.body_size += len(body)
                        if self.body_size > MAX_BODY:
                            raise ProtocolError("response body too large")
                        self.body.append(body)
                    else:
                        for event in decoder.feed(body):
                            kind = classify(event.data)
                            if kind & events.CONTENT:
                                if result.tokens:
                                    result.gaps.append(now - last)
                                else:
                                    result.first_token_at = now
                                result.tokens += 1
                                last = now
                            if kind & events.DONE:
                                self.saw_done = True
                            elif self.error is None and kind & events.ERROR:
                                self.error = ("stream_error", "error event")
                            elif self.error is None and kind & events.MALFORMED:
                                self.error = ("stream_error", "malformed event")
                if parser.done:
                    break
        except (OSError, trio.ClosedResourceError) as exc:
            raise _Broken(f"connection {_errno_name(exc)}", fresh=not got_bytes) from exc
        return parser

    def _settle(self, parser: ResponseParser) -> None:
        """Decide the outcome of a response that arrived whole."""
        result = self.result
        result.ended_at = time.monotonic()
        status = result.status or 0
        if not 200 <= status < 300:
            self._fail("http_error", f"http {status}")
        elif self.error is not None:
            self._fail(*self.error)
        elif self.spec.stream and status == 200 and not self.saw_done:
            self._fail("truncated", "no [DONE]")
        elif not self.spec.stream:
            self._read_whole()

    def _read_whole(self) -> None:
        try:
            answer = json.loads(b"".join(self.body))
        except ValueError:
            self._fail("protocol", "invalid JSON")
            return
        if not isinstance(answer, dict) or answer.get("error") is not None:
            self._fail("stream_error", "error body")
            return
        tokens = self.spec.route.tokens(answer)
        if tokens is not None:
            self.result.tokens = tokens

    def _fail(self, outcome: Outcome, kind: str) -> None:
        self.result.outcome = outcome
        self.result.error_kind = kind
        if not self.result.ended_at:
            self.result.ended_at = time.monotonic()


async def perform(pool: Pool, spec: RequestSpec, time_limit: float) -> RequestResult:
    """Run ``spec`` against ``pool``'s endpoint; never raises for network trouble.

    ``time_limit`` is the per-request timeout: an abort planned later never happens.
    Cancellation from outside propagates (the connection is closed first)."""
    result = RequestResult(
        index=spec.index,
        target=spec.target,
        tag=spec.tag,
        stream=spec.stream,
        started_at=time.monotonic() if spec.due is None else spec.due,
        abort_after=spec.abort_after,
    )
    aborting = spec.abort_after is not None and spec.abort_after <= time_limit
    limit = spec.abort_after if aborting and spec.abort_after is not None else time_limit
    exchange = _Exchange(spec, result)
    deadline = trio.current_time() + limit if math.isfinite(limit) else math.inf
    closing_at = None
    try:
        with trio.CancelScope(deadline=deadline) as scope:
            await exchange.run(pool)
    finally:
        if exchange.connection is not None:  # cancelled mid-exchange, from inside or outside
            closing_at = time.monotonic()
            exchange.connection.close()
    if scope.cancelled_caught:
        now = time.monotonic()
        phase = (
            "before headers" if result.headers_at is None
            else "before first token" if spec.stream and result.first_token_at is None
            else "mid-body"
        )
        if aborting:
            result.outcome, result.aborted_at, result.error_kind = "aborted", now, None
            result.abort_began_at = now if closing_at is None else closing_at
        else:
            result.outcome, result.error_kind = "timeout", f"timeout {phase}"
        result.ended_at = now
    return result


async def fetch_json(endpoint: Endpoint, target: str) -> Any:
    """``GET`` ``target`` on a fresh connection and parse the JSON answer.

    Raises ``OSError`` (network), ``ProtocolError`` (HTTP or a non-2xx status) or
    ``ValueError`` (not JSON). Unbounded in time: the caller sets a deadline."""
    payload = render_request("GET", target, endpoint.host_header, [("Accept", "application/json")])
    connection = await Pool(endpoint).connect()
    try:
        await connection.send_all(payload)
        parser = ResponseParser()
        body: list[bytes] = []
        size = 0
        while not parser.done:
            data = await connection.receive()
            if not data:
                parser.feed_eof()
                break
            piece = parser.feed(data)
            size += len(piece)
            if size > MAX_BODY * 4:
                raise ProtocolError("response body too large")
            body.append(piece)
    finally:
        connection.close()
    assert parser.head is not None  # done implies a head
    if not 200 <= parser.head.status < 300:
        raise ProtocolError(f"GET {target}: HTTP {parser.head.status}")
    return json.loads(b"".join(body))
