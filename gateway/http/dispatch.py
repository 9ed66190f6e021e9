"""The ASGI front: generation routes served raw, everything else by the quart-trio app.

Generation routes need to decide their status line *after* the first upstream event, inside
the request's own nursery (``relay/nursery.py``); Quart sends the status before it iterates
a body, so those routes are plain ASGI callables. The Quart app keeps lifecycle, models,
health and admin. Routing is on the exact path and method: no prefix matching but the
Gemini method paths, no empty segment, and nothing ever depends on ``Host`` (FAULTS.md S10).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import trio

from gateway.errors import MethodNotAllowed, NotFound
from gateway.http.messages import ErrorRenderer, Handler, Receive, Scope, Send, send_json
from gateway.wire.openai import render as openai_render


class Draining(Protocol):
    """What the front needs of the gateway process: whether it drains."""

    @property
    def draining(self) -> bool: ...


G = TypeVar("G", bound=Draining)


class Dispatcher(Generic[G]):
    """The application hypercorn serves; ``gateway`` is the process it serves for (the
    composition root's, typed as such for the CLI and the server)."""

    def __init__(
        self,
        routes: dict[tuple[str, str], Handler],
        fallback: Handler,
        gateway: G,
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
            send = _draining(_closing_shielded(send), self.gateway)
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


def _draining(send: Send, gateway: Draining) -> Send:
    """``send`` that, once the gateway drains, marks every response ``Connection: close``
    and gives a 503 ``Retry-After``.

    The server no longer keeps connections alive (``serve/server.py``) and closes each after its
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
