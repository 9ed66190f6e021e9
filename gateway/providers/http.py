"""The upstream HTTP client: one connection pool, keyed by origin, over ``http1``.

Rules:
- The pool is opened and closed with the app, never per request. Idle connections are kept
  per (scheme, host, port) on a LIFO stack: the most recently used one is taken first, so
  the rest age out together. Nothing scans connections per request; expiry pops from the
  old end of a queue kept in release order (amortised O(1)).
- Idle connections live ``idle_expiry`` seconds (4 s: below the usual upstream keep-alive
  close, uvicorn's 5 s being the low outlier) and at most ``max_idle_per_origin`` of them
  per origin; active connections are unlimited. Expiry is checked when the pool is used:
  a pool nobody uses keeps its last idle sockets until ``aclose``.
- A request runs as ``async with pool.stream(...) as response``. Leaving the block with
  the body read to its end returns the connection; leaving it any other way (cancelled,
  failed, abandoned) closes the socket at once.
- A reused connection that broke before the first byte of the response (the server closed
  it while idle) is retried once on a fresh connection; nothing else is ever retried here.
- No read timeout: silence between chunks is the relay's idle deadline (a cancel scope),
  which a slow drip cannot defeat. The connect (TCP and TLS) is bounded by
  ``Deadlines.connect``.
- No environment variable is consulted: no proxy, no ``SSL_CERT_FILE``, no key log.
  TLS verifies chain and hostname; redirects are answers like any other, never followed.
"""

from __future__ import annotations

import collections
import os
import ssl
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlsplit

import attrs
import trio

from gateway.config import Deadlines
from gateway.errors import UpstreamConnectError
from gateway.providers.http1 import (
    DEFAULT_LIMIT,
    Connection,
    Response,
    StaleConnection,
    connect,
    render_request,
)


@attrs.frozen(cache_hash=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        """The ``host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def split_url(url: str) -> tuple[Origin, str]:
    """The origin and request target of an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("bad upstream URL") from None  # no URL in the message
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("upstream URLs must be absolute http(s) URLs")
    default = 443 if parts.scheme == "https" else 80
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Origin(parts.scheme, parts.hostname, port or default), target


def default_ssl_context() -> ssl.SSLContext:
    """Verification on (chain and hostname, SNI sent); CAs from certifi, as httpx used, or
    else OpenSSL's built-in locations; never from environment variables."""
    cafile, capath = _certifi_bundle(), None
    if cafile is None:
        paths = ssl.get_default_verify_paths()
        cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
        capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is None and capath is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and trusts nothing
    else:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    context.keylog_filename = None  # type: ignore[assignment]  # SSLKEYLOGFILE is ignored
    context.set_alpn_protocols(["http/1.1"])
    return context


def _certifi_bundle() -> str | None:
    try:
        import certifi  # installed with httpx
    except ImportError:  # pragma: no cover
        return None
    return str(certifi.where())


class ClientPool:
    """The gateway's upstream connections: one pool that never scans, so it needs no
    sharding across clients (httpcore's pool cost O(n^2) per request, DESIGN.md)."""

    def __init__(
        self,
        deadlines: Deadlines,
        *,
        max_idle_per_origin: int = 128,
        idle_expiry: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        max_answer_bytes: int = DEFAULT_LIMIT,
    ) -> None:
        self._connect_timeout = deadlines.connect
        self.max_answer_bytes = max_answer_bytes  # each Response's ``limit``
        self._max_idle = max_idle_per_origin
        self._expiry = idle_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, collections.deque[Connection]] = {}
        # (idle_since, origin, connection) in release order; an entry is live while the
        # connection is still pooled with that same idle_since.
        self._released: collections.deque[tuple[float, Origin, Connection]] = (
            collections.deque()
        )
        self._urls: dict[str, tuple[Origin, str]] = {}
        self._closed = False

    def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamRequest:
        """``async with pool.stream("POST", url, headers, body) as response: ...``"""
        split = self._urls.get(url)
        if split is None:
            try:
                split = split_url(url)
            except ValueError:
                raise UpstreamConnectError("the upstream URL is invalid") from None
            if len(self._urls) > 1024:  # URLs may carry per-request parts: stay bounded
                self._urls.clear()
            self._urls[url] = split
        origin, target = split
        return UpstreamRequest(self, origin,
                               render_request(method, target, origin.authority, headers, body))

    @property
    def idle_count(self) -> int:
        return sum(len(stack) for stack in self._idle.values())

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()
        self._released.clear()
        await trio.lowlevel.checkpoint()

    # -- used by UpstreamRequest ------------------------------------------------------------

    async def _open(self, origin: Origin) -> Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = default_ssl_context()
            context = self._ssl_context
        return await connect(origin.scheme, origin.host, origin.port, context,
                             self._connect_timeout)

    def _take(self, origin: Origin) -> Connection | None:
        self._expire(trio.current_time())  # what is left is fresh enough
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            connection.pooled = False
            if connection.readable():  # closed by the server while idle
                connection.close()
                continue
            return connection
        return None

    def _give_back(self, origin: Origin, connection: Connection) -> None:
        if self._closed:
            connection.close()
            return
        now = trio.current_time()
        self._expire(now)
        connection.served += 1
        connection.idle_since = now
        connection.pooled = True
        stack = self._idle.get(origin)
        if stack is None:
            stack = self._idle[origin] = collections.deque()
        stack.append(connection)
        self._released.append((now, origin, connection))
        if len(stack) > self._max_idle:
            oldest = stack.popleft()
            oldest.pooled = False
            oldest.close()

    def _expire(self, now: float) -> None:
        released = self._released
        while released and now - released[0][0] > self._expiry:
            since, origin, connection = released.popleft()
            if not connection.pooled or connection.idle_since != since:
                continue  # taken, evicted or pooled again since: a stale entry
            connection.pooled = False
            connection.close()
            # Stacks are ordered by idle_since like this queue: it is its stack's oldest.
            stack = self._idle[origin]
            if stack[0] is connection:
                stack.popleft()
            else:  # pragma: no cover - kept correct should the clock ever tie oddly
                stack.remove(connection)


class UpstreamRequest:
    """One request on the pool, as an async context manager yielding the ``Response``."""

    __slots__ = ("_connection", "_data", "_origin", "_pool", "_response")

    def __init__(self, pool: ClientPool, origin: Origin, data: bytes) -> None:
        self._pool = pool
        self._origin = origin
        self._data = data
        self._connection: Connection | None = None
        self._response: Response | None = None

    def abort(self) -> None:
        """Close this call's connection now, from any task, without a checkpoint: the
        request's owner learnt its client left and wants the upstream to know at once,
        not a scheduler pass later. A no-op once the call has ended (its connection may
        be serving someone else by then)."""
        if self._connection is not None:
            self._connection.close()

    async def __aenter__(self) -> Response:
        pool, origin = self._pool, self._origin
        connection = self._connection = pool._take(origin)
        if connection is not None:
            try:
                response = await connection.request(self._data)
            except StaleConnection:
                connection.close()  # and once more, on a fresh connection
                self._connection = None
            except BaseException:
                connection.close()
                self._connection = None
                raise
            else:
                self._connection, self._response = connection, response
                response.limit = self._pool.max_answer_bytes
                return response
        connection = self._connection = await pool._open(origin)
        try:
            response = await connection.request(self._data)
        except BaseException:
            connection.close()
            self._connection = None
            raise
        self._connection, self._response = connection, response
        response.limit = self._pool.max_answer_bytes
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, response = self._connection, self._response
        self._connection = self._response = None
        if connection is None or response is None:
            return
        if response.reusable:
            self._pool._give_back(self._origin, connection)
        else:
            connection.close()
