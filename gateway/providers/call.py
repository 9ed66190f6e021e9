"""What every upstream adapter does the same way: the call, its errors, and its end.

``call`` opens the request on the pool inside the caller's task, registers its abort with
the sink, turns a non-200 into an error and a whole answer into events; ``relay_events``
feeds a stream's SSE events to the adapter's own handler until that handler sees the
dialect's end marker. Adapters keep only what differs: URL, headers, body, parsing.

Rules:
- Error bodies are read with a bound and never relayed raw. Only the message of a 4xx that
  blames the request (400, 413, 422: a context too long, a bad parameter) reaches the
  client, and only its useful part (``upstream_text``): key-shaped words redacted, stack
  traces cut, file paths replaced, whitespace collapsed, at most ``MAX_RELAYED`` characters.
  The provider's own auth failures are ours to fix and say nothing more; other statuses and
  every mid-stream error relay only a known error type.
- After a dialect's end-of-stream marker the rest of the body is awaited briefly, so the
  connection can be reused; a broken tail then only costs the connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gateway.canonical import StreamEvent
from gateway.errors import (
    GatewayError,
    OutputLimitExceeded,
    RequestError,
    UpstreamError,
    UpstreamStatusError,
)
from gateway.observe.redact import redact
from gateway.providers.base import Sink
from gateway.providers.http import ClientPool
from gateway.providers.http1 import Response
from gateway.wire import sse
from gateway.wire.jsonbody import upstream_object

MAX_ERROR_BODY = 64 * 1024
AFTER_DONE = 1.0  # seconds to wait for the end of the body after the end marker


async def call(
    clients: ClientPool,
    url: str,
    headers: dict[str, str],
    body: bytes,
    key: str | None,
    sink: Sink,
    *,
    stream: bool,
    relay: Callable[[Response, Sink], Awaitable[None]],
    parse_whole: Callable[[dict[str, Any]], list[StreamEvent]],
    same_dialect: bool = False,
) -> None:
    """One upstream call: ``relay`` a stream, or emit the events of a whole answer (and,
    for a client of the upstream's own dialect, hand over the body as it came)."""
    pending = clients.stream("POST", url, headers, body)
    sink.abort_with(pending.abort)
    async with pending as response:
        if response.status != 200:
            raise await status_error(response, key)
        if stream and response.headers.get("content-type", "").startswith("text/event-stream"):
            await relay(response, sink)
            return
        data = await response.read()  # bounded by the pool's max_answer_bytes
        if data is None:
            # Not retried: another call would cost as much again and end the same way.
            raise OutputLimitExceeded(f"the upstream's answer exceeds {response.limit} bytes "
                                      "([server] max_answer_bytes)")
        answer = upstream_object(data, "an answer")  # parsed once, for both uses
        events = parse_whole(answer)  # an answer that does not parse is never relayed
        if same_dialect:
            sink.keep_whole(answer)
        for event in events:
            sink.emit(event)


async def post_json(clients: ClientPool, url: str, headers: dict[str, str], body: bytes,
                    key: str | None) -> dict[str, Any]:
    """One small JSON call (a token count): the answer parsed, or the status's error."""
    async with clients.stream("POST", url, headers, body) as response:
        if response.status != 200:
            raise await status_error(response, key)
        data = await response.read()
        if data is None:
            raise OutputLimitExceeded(f"the upstream's answer exceeds {response.limit} bytes")
        return upstream_object(data, "an answer")


def request_headers(stream: bool, extra: dict[str, str]) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": "text/event-stream" if stream else "application/json",
        # Undecoded bytes, cheap to relay.
        "accept-encoding": "identity",
        **extra,
    }


async def relay_events(
    response: Response, sink: Sink, handle: Callable[[sse.Event], bool]
) -> None:
    """Feed each SSE event to ``handle`` (which emits into the sink) until it returns True
    at the dialect's end marker. EOF before that marker is never a clean end."""
    decoder = sse.Decoder(max_event_bytes=response.limit)
    async for block in response:
        try:
            events = decoder.feed(block)
        except sse.SSEError:
            raise OutputLimitExceeded(f"the upstream sent an event over {response.limit} "
                                      "bytes ([server] max_answer_bytes)") from None
        for event in events:
            if handle(event):
                await drain_after_end(response)
                return
        await sink.writable()
    raise UpstreamError("upstream stream ended before it finished")


async def drain_after_end(response: Response) -> None:
    with trio.move_on_after(AFTER_DONE):
        try:
            async for _ in response:
                pass
        except UpstreamError:
            pass


def retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 86400 else None


async def status_error(response: Response, key: str | None) -> GatewayError:
    status = response.status
    try:
        body = await response.read(MAX_ERROR_BODY) or b""
    except UpstreamError:
        body = b""  # the status says enough
    if status in (400, 413, 422):
        message = error_message(body)
        if message:
            return RequestError(f"upstream rejected the request: {upstream_text(message, key)}")
    if status in (401, 403):
        return UpstreamStatusError("upstream authentication failed", upstream_status=status)
    return UpstreamStatusError(
        f"upstream answered HTTP {status}", upstream_status=status,
        retry_after=retry_after(response),
    )


def error_message(body: bytes) -> str | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    error = obj.get("error") if isinstance(obj, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message[:MAX_ERROR_BODY] if isinstance(message, str) else None


MAX_RELAYED = 300  # characters of an upstream's message a client may see
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+")
_PATH = re.compile(r"(?<![\w/.:])(?:/[\w.\-]+){2,}/?|\b[A-Za-z]:\\[^\s\"']+")


def upstream_text(message: str, key: str | None) -> str:
    """The part of an upstream's error message worth relaying: redacted, no stack trace, no
    file path, one line, bounded."""
    cut = _TRACEBACK.search(message)
    if cut is not None:
        message = message[:cut.start()]
    message = _PATH.sub("[path]", redact(message, key))
    message = " ".join(message.split())
    if len(message) > MAX_RELAYED:
        message = message[:MAX_RELAYED - 1].rstrip() + "\u2026"
    return message or "no detail given"
