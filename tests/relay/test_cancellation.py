"""A client that leaves stops the upstream at once, in every phase of a request.

Real sockets throughout: an httpx client -> the gateway (hypercorn) -> the fake upstream
(trio + h11). The fake upstream records, with ``time.monotonic()``, when it saw the
gateway's connection close; the client records when it closed its own.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from contextlib import aclosing

import httpx
import pytest
import trio

from tests.support.gateways import GatewayFactory, Gw, Sim

# Seconds from the client's close to the upstream seeing its connection close: a generous
# bound for a shared machine (measured: benchmarks/RESULTS.md, column "cancel p99").
PROPAGATION_BUDGET = 0.050


def _body(tag: str, directive: str) -> dict[str, object]:
    return {
        "model": "fake/lorem",
        "stream": True,
        "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhello"}],
    }


async def _abort_after(
    gw: Gw, body: dict[str, object], ready: Callable[[list[str]], bool] | None
) -> float:
    """Stream ``body``; close the connection once ``ready(lines)`` holds (or, with None,
    after 0.2 s without headers). Returns the monotonic time of the close."""
    async with httpx.AsyncClient(timeout=10) as client:
        if ready is None:
            with trio.move_on_after(0.2) as waiting:
                async with client.stream(
                    "POST", f"{gw.url}/v1/chat/completions", json=body, headers=gw.headers
                ):
                    raise AssertionError("headers arrived; the commit point should hold them")
            assert waiting.cancelled_caught
            return time.monotonic()
        seen: list[str] = []
        async with client.stream(
            "POST", f"{gw.url}/v1/chat/completions", json=body, headers=gw.headers
        ) as response:
            assert response.status_code == 200
            async with aclosing(response.aiter_lines()) as lines:
                async for line in lines:
                    seen.append(line)
                    if ready(seen):
                        break
            await response.aclose()
            closed = time.monotonic()
    return closed


def _content_chunks(lines: list[str]) -> int:
    return sum('"content":"' in line and '"content":""' not in line for line in lines)


PHASES: dict[str, tuple[str, Callable[[list[str]], bool] | None]] = {
    # The upstream accepted the request and has not answered: no status line sent yet.
    "before_upstream_answers": ("scenario=no_headers", None),
    # Headers committed after the grace period; the upstream is thinking.
    "before_first_token": (
        "scenario=slow_first_token first_token_ms=60000",
        lambda lines: any('"role":"assistant"' in line for line in lines),
    ),
    "mid_stream": (
        "tokens=100000 interval_ms=2",
        lambda lines: _content_chunks(lines) >= 5,
    ),
    # Half the tokens, then silence; keepalive comments are flowing when the client leaves.
    "long_silent_wait": (
        "scenario=stall tokens=6 interval_ms=1",
        lambda lines: sum(line.startswith(":") for line in lines) >= 2,
    ),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_client_abort_closes_upstream(
    start_gateway: GatewayFactory, sim: Sim, phase: str
) -> None:
    directive, ready = PHASES[phase]
    async with start_gateway(commit_grace=0.3 if ready is None else 0.05,
                             keepalive=0.05) as gw:
        closed_at = await _abort_after(gw, _body(phase, directive), ready)
        record = await sim.wait_record(phase, lambda r: r.client_gone_at is not None)
        delay = record.client_gone_at - closed_at
        assert delay < PROPAGATION_BUDGET, f"upstream saw the close after {delay * 1000:.1f} ms"
        assert record.outcome == "client_gone"
        tokens = record.tokens_sent
        await trio.sleep(0.05)
        assert record.tokens_sent == tokens  # the upstream stopped producing

        [row] = await gw.wait_records(1)
        assert row.status == "client_abort"
        assert row.cancelled
        assert row.http_status == (499 if ready is None else 200)
        if phase == "mid_stream":
            assert row.usage_estimated and row.completion_tokens > 0
    # Nothing the gateway opened upstream is still running.
    assert all(r.outcome != "running" for r in sim.records())


async def test_hundred_aborts_leave_no_upstream_open(start_gateway: GatewayFactory,
                                                      sim: Sim) -> None:
    """Many concurrent clients leaving mid-stream: every upstream sees its close."""
    async with start_gateway(commit_grace=0.05) as gw:

        async def one(i: int) -> None:
            await _abort_after(gw, _body(f"many-{i}", "tokens=100000 interval_ms=5"),
                               lambda lines: _content_chunks(lines) >= 2)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        for i in range(100):
            await sim.wait_record(f"many-{i}", lambda r: r.outcome == "client_gone")
        rows = await gw.wait_records(100)
        assert len(rows) == 100
        assert {row.status for row in rows} == {"client_abort"}


async def test_abort_while_uploading_calls_no_upstream(gw: Gw, sim: Sim) -> None:
    """D1: the body never completes; nothing is sent upstream and nothing is recorded."""
    host, port = gw.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\nauthorization: Bearer " + gw.key.encode()
            + b"\r\ncontent-length: 1000\r\n\r\n" + b'{"model": "fake/lorem", '
        )
        await trio.sleep(0.05)
    await trio.sleep(0.1)
    assert sim.records() == []
    assert await gw.records() == []


async def test_non_stream_abort_closes_upstream(start_gateway: GatewayFactory, sim: Sim) -> None:
    async with start_gateway() as gw:
        body = {**_body("unary", "tokens=100000 interval_ms=2"), "stream": False}
        async with httpx.AsyncClient() as client:
            with trio.move_on_after(0.3):
                await client.post(f"{gw.url}/v1/chat/completions", json=body,
                                  headers=gw.headers)
            closed_at = time.monotonic()
        record = await sim.wait_record("unary", lambda r: r.client_gone_at is not None)
        assert record.client_gone_at - closed_at < PROPAGATION_BUDGET
        [row] = await gw.wait_records(1)
        assert (row.status, row.stream, row.http_status) == ("client_abort", False, 499)


async def test_client_that_stops_reading_is_dropped(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    """A client that keeps its socket open but reads nothing: the kernel's
    ``client_stall`` timer drops it, the request settles as a client abort, the upstream
    closes, and the ticker does not spin while the writer is blocked."""
    async with start_gateway(commit_grace=0.05, keepalive=0.05, client_stall=1.0) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        body = json.dumps(_body("stopped", "tokens=1000000 interval_ms=0")).encode()
        await sock.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\nauthorization: Bearer " + gw.key.encode()
            + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        assert (await sock.recv(100)).startswith(b"HTTP/1.1 200")
        cpu = time.process_time()
        # The kernel gives up after client_stall seconds of unacknowledged data, plus
        # its probe backoff: a generous bound in real time.
        with trio.fail_after(20):
            [row] = await gw.wait_records(1, within=20)
        spent = time.process_time() - cpu
        sock.close()
        assert row.status == "client_abort"
        await sim.wait_record("stopped", lambda r: r.outcome == "client_gone")
        assert spent < 1.5, f"{spent:.2f} s of CPU while the client stalled"
