"""The ASGI front: generation routes served raw, everything else by the quart-trio app.

Generation routes need to decide their status line *after* the first upstream event, inside
the request's own nursery (``relay.py``); Quart sends the status before it iterates a body,
so those routes are plain ASGI callables. The Quart app keeps lifecycle, models, health and
(later) admin. Routing is on the exact normalised path and method: no prefix matching, and
nothing ever depends on ``Host`` (FAULTS.md S10).

Also here: the small ASGI helpers both sides use (reading a bounded body, sending JSON).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    RequestError,
    RequestTimeout,
    UnsupportedMediaType,
)
from gateway.wire.openai import render as openai_render

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorRenderer = Callable[[GatewayError, str | None], bytes]


class ClientGone(Exception):
    """The client disconnected before the gateway answered; there is nobody to tell."""


class Dispatcher:
    """The application hypercorn serves."""

    def __init__(
        self,
        routes: dict[tuple[str, str], Handler],
        fallback: Handler,
        gateway: Any = None,
        lifespan: Callable[[Handler, Scope, Receive, Send], Awaitable[None]] | None = None,
        prefixes: dict[tuple[str, str], Handler] | None = None,
        shape: Callable[[str], ErrorRenderer] = lambda path: openai_render.error_body,
    ) -> None:
        self._routes = routes
        self._shape = shape  # a path's error renderer (its dialect's shape)
        # (method, path prefix) -> handler, for routes that carry a name in the path
        # (Gemini's /v1beta/models/{model}:method); the handler parses the rest.
        self._prefixes = prefixes or {}
        self._paths = {path for _, path in routes}
        self._fallback = fallback
        self._lifespan = lifespan
        self.gateway = gateway  # what the app serves, for the CLI and the tests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._lifespan is not None:
            await self._lifespan(self._fallback, scope, receive, send)
            return
        if scope["type"] == "http":
            send = _closing_shielded(send)
            if self.gateway is not None:
                send = _draining(send, self.gateway)
            path, method = scope["path"], scope["method"]
            if "//" in path:
                # Paths match exactly: no route has an empty segment, and nothing here may
                # answer with a redirect built from the client's Host (werkzeug merges
                # slashes with a 308 otherwise).
                await send_json(send, 404, self._shape(path)(NotFound("no such route"), None))
                return
            handler = self._routes.get((method, path))
            if handler is not None:
                await handler(scope, receive, send)
                return
            allowed = ""
            for (prefixed_method, prefix), prefixed in self._prefixes.items():
                if path.startswith(prefix) and ":" in path[len(prefix):]:
                    if method == prefixed_method:
                        await prefixed(scope, receive, send)
                        return
                    allowed = prefixed_method
            if path in self._paths:
                allowed = ", ".join(m for m, p in self._routes if p == path)
            if allowed:
                error = MethodNotAllowed(f"use {allowed}")
                await send_json(send, 405, self._shape(path)(error, None),
                                [(b"allow", allowed.encode())])
                return
        await self._fallback(scope, receive, send)


def _closing_shielded(send: Send) -> Send:
    """``send`` with the last body message shielded from the caller's cancellation.

    Hypercorn closes (or recycles) the connection inside the call that sends a response's
    last bytes, and in doing so tells the app ``http.disconnect``. Apps that cancel their
    own task group on that message (our relay's watcher, quart-trio) would cancel the very
    call doing the closing: the socket then stays open until the client gives up, and a
    ``Connection: close`` client never sees the end. Hypercorn shields its own socket
    writes already; this only lets the close that follows them finish too."""

    async def shielded(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return shielded


def _draining(send: Send, gateway: Any) -> Send:
    """``send`` that, once the gateway drains, marks every response ``Connection: close``
    and gives a 503 ``Retry-After``.

    The server no longer keeps connections alive (``server.py``) and closes each after its
    response; saying so is what keeps a client from writing its next request into a
    connection that is closing, where it would be lost unread. The 503s of the drain
    (new requests, ``/readyz``) mean "not here, elsewhere now": retry after 1 s."""

    async def marked(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and gateway.draining:
            headers = list(message.get("headers", ()))
            names = {name.lower() for name, _ in headers}
            if b"connection" not in names:
                headers.append((b"connection", b"close"))
            if message["status"] == 503 and b"retry-after" not in names:
                headers.append((b"retry-after", b"1"))
            message = {**message, "headers": headers}
        await send(message)

    return marked


def header_values(scope: Scope, name: bytes) -> list[bytes]:
    return [value for key, value in scope["headers"] if key == name]


def header(scope: Scope, name: bytes) -> bytes | None:
    values = header_values(scope, name)
    return values[0] if len(values) == 1 else None


def has_body(scope: Scope) -> bool:
    """Whether the request carries a body (declared length above zero, or chunked)."""
    length = header(scope, b"content-length")
    return (length is not None and length != b"0") or bool(
        header_values(scope, b"transfer-encoding"))


def check_json_content_type(scope: Scope) -> None:
    """A missing Content-Type is taken as JSON; anything else but JSON is a 415."""
    values = header_values(scope, b"content-type")
    if not values:
        return
    media = values[0].split(b";", 1)[0].strip().lower()
    if len(values) > 1 or media != b"application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")


async def read_body(scope: Scope, receive: Receive, limit: int, within: float) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes as early as possible, or
    one that has not arrived whole ``within`` seconds (a client that trickles it)."""
    with trio.move_on_after(within):
        return await _read_body(scope, receive, limit)
    raise RequestTimeout(f"the request body did not arrive within {within:g} s")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("invalid Content-Length")
        if int(declared) > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def error_headers(error: GatewayError) -> list[tuple[bytes, bytes]]:
    headers = []
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and error.status in (429, 503):  # where RFC 9110/6585 use it
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if error.status in (408, 413):
        # The rest of the body is never read: the connection cannot be reused.
        headers.append((b"connection", b"close"))
    return headers


async def send_error(
    send: Send,
    error: GatewayError,
    render: ErrorRenderer,
    generation_id: str | None = None,
    *,
    close: bool = False,
) -> None:
    """An error answer; ``close`` when the request's body was left unread (the server will
    close the connection after it, and the client must be told so, or it would reuse it and
    see its next request dropped without an answer)."""
    headers = error_headers(error)
    if close and (b"connection", b"close") not in headers:
        headers.append((b"connection", b"close"))
    if generation_id is not None:
        headers.append((b"x-generation-id", generation_id.encode()))
    await send_json(send, error.status, render(error, generation_id), headers)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
