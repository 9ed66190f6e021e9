"""Clients of the fake upstream: its server on a loopback port, and how each dialect's tests
talk to it over httpx.

``Speaker`` knows, per dialect, the path, body and headers of a completion request and the
bytes that mark one token in a raw stream, so the tests of what the play does alike in
every dialect (``tests/sim/test_play.py``) are written once and parametrized. The fixtures
(``sim``, ``client``, ``speaker``) are in ``tests/sim/conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from gateway.sim.dialect import DialectName
from gateway.sim.scenarios import Plan
from gateway.sim.server import Record, SimServer

# Small and fast: 10 tokens 2 ms apart unless a directive says otherwise.
DEFAULTS = Plan(tokens=10, interval=0.002)


PROMPT = "one two three"


GONE_WITHIN = 0.05  # seconds from the client's close to client_gone_at


OPENAI_KEY = "sk-test-client-key"


ANTHROPIC_KEY = "sk-ant-test-CANARY-key"


GEMINI_KEY = "AIza-test-CANARY-key"


# Leaving a stream early (httpx) or at its end or an error event (the OpenAI and Anthropic
# SDKs, which break out of their SSE iterators without closing them) leaves the clients'
# inner async generators suspended; under Trio their garbage collection warns, and warnings
# are errors here. The clients' quirk, not the server's: ignored by name, for the tests that
# need it.
CLIENT_GENERATORS_LEFT_OPEN = pytest.mark.filterwarnings(
    "ignore:Async generator '(openai|anthropic|httpx2?|httpcore2?)[.]:ResourceWarning"
)


@attrs.frozen
class SimAt:
    server: SimServer
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, tag: str) -> Record:
        (record,) = self.server.find(tag)
        return record


@attrs.frozen
class Speaker:
    """One dialect as a raw HTTP client speaks it."""

    dialect: DialectName
    token_mark: bytes  # occurs once per token in a raw stream of echo words

    def request(
        self,
        directive: str = "",
        *,
        stream: bool = True,
        prompt: str = PROMPT,
        model: str = "sim-echo",
    ) -> dict[str, Any]:
        """``client.request``/``client.stream`` keyword arguments for a completion whose last
        user message is ``prompt`` and the ``#sim`` line ``directive``."""
        text = f"{prompt}\n#sim {directive}"
        if self.dialect == "openai":
            return {
                "url": "/v1/chat/completions",
                "headers": {"authorization": f"Bearer {OPENAI_KEY}"},
                "json": {
                    "model": model,
                    "stream": stream,
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": text},
                    ],
                },
            }
        if self.dialect == "anthropic":
            return {
                "url": "/v1/messages",
                "headers": {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
                "json": {
                    "model": model,
                    "max_tokens": 1000,
                    "stream": stream,
                    "system": "be brief",
                    "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
                },
            }
        method = "streamGenerateContent" if stream else "generateContent"
        return {
            "url": f"/v1beta/models/{model}:{method}",
            "params": {"alt": "sse"} if stream else {},
            "headers": {"x-goog-api-key": GEMINI_KEY},
            "json": {
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "contents": [{"role": "user", "parts": [{"text": text}]}],
            },
        }

    def tokens_in(self, raw: bytes | bytearray) -> int:
        return raw.count(self.token_mark)


SPEAKERS = {
    "openai": Speaker("openai", b'"content":" '),
    "anthropic": Speaker("anthropic", b'"text_delta","text":" '),
    "gemini": Speaker("gemini", b'"parts":[{"text":" '),
}


async def poll(predicate: Callable[[], object], within: float = 1.0) -> None:
    """Wait until ``predicate()`` holds, looking every millisecond, for ``within`` seconds.
    Records carry their own timestamps, so the polling step never blurs a measurement."""
    for _ in range(int(within / 0.001)):
        if predicate():
            return
        await trio.sleep(0.001)
    raise AssertionError(f"not true within {within} s")


async def read_then_leave(
    client: httpx.AsyncClient, speaker: Speaker, directive: str, count: int, linger: float = 0.0
) -> float:
    """Stream a request, read ``count`` tokens, wait ``linger``, then leave the
    ``client.stream`` block early (which closes the connection); returns when it left."""
    seen = 0
    async with client.stream("POST", **speaker.request(directive)) as response:
        # Keep a reference: a dropped iterator is finalised at once, and httpx's finaliser
        # chain would close the connection before the moment this function reports.
        chunks = response.aiter_raw()
        async for chunk in chunks:
            seen += speaker.tokens_in(chunk)
            if seen >= count:
                break
        assert seen >= count, f"stream ended after {seen} tokens"
        await trio.sleep(linger)
        closed_at = time.monotonic()
    return closed_at


async def assert_gone_promptly(record: Record, closed_at: float) -> None:
    await poll(lambda: record.client_gone_at is not None)
    assert record.client_gone_at is not None
    assert 0 <= record.client_gone_at - closed_at < GONE_WITHIN
    assert record.outcome == "client_gone"
    sent = record.tokens_sent
    await trio.sleep(0.02)  # ten intervals: no token may follow
    assert record.tokens_sent == sent
    assert record.ended_at is not None


async def receive_until(stream: trio.abc.ReceiveStream, done: Callable[[bytes], bool]) -> bytes:
    received = b""
    with trio.fail_after(2):
        while not done(received):
            data = await stream.receive_some()
            assert data, f"connection closed after {received!r}"
            received += data
    return received


def sse_events(raw: bytes, line_end: str = "\n") -> list[tuple[str | None, str]]:
    """The (event, data) pairs of a complete SSE body written one field per line."""
    blocks = raw.decode().split(line_end * 2)
    assert blocks[-1] == "", "the body must end with a complete event"
    events = []
    for block in blocks[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split(line_end))
        events.append((fields.get("event"), fields["data"]))
    return events
