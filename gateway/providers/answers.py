"""What every upstream adapter does with an answer that is not the happy stream.

Rules:
- Error bodies are read with a bound and never relayed raw: only a redacted message of a
  4xx that blames the request reaches the client; the provider's own auth failures are
  ours to fix and say nothing more.
- After a dialect's end-of-stream marker the rest of the body is awaited briefly, so the
  connection can be reused; a broken tail then only costs the connection.
"""

from __future__ import annotations

import json

import trio

from gateway.errors import GatewayError, RequestError, UpstreamError, UpstreamStatusError
from gateway.providers.http1 import Response

MAX_ERROR_BODY = 64 * 1024
MAX_COMPLETION_BODY = 64 * 1024 * 1024
AFTER_DONE = 1.0  # seconds to wait for the end of the body after the end marker


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
            return RequestError(f"upstream rejected the request: {redact(message, key)}")
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
    return message[:500] if isinstance(message, str) else None


def redact(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, "[redacted]")
    # Bearer tokens and key-shaped words never leave, whoever's they are.
    return " ".join(
        "[redacted]" if word.startswith(("sk-", "lr_live_", "AIza", "Bearer")) else word
        for word in text.split(" ")
    )
