"""ASGI messages: the types, and the small helpers every route uses.

Reading a request's headers and its bounded, deadline-bound body; sending JSON and error
answers (with the headers their status implies). The raw generation routes and the
quart-trio side share them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    RequestError,
    RequestTimeout,
    UnsupportedMediaType,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorRenderer = Callable[[GatewayError, str | None], bytes]


class ClientGone(Exception):
    """The client disconnected before the gateway answered; there is nobody to tell."""


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
