"""Keepalive comments during upstream silence, on a virtual clock.

The whole stack (client, gateway, fake upstream) runs in this test's Trio run over real
loopback sockets, on a ``MockClock`` that jumps ahead whenever every task has been idle for
50 ms of real time: 40 seconds of upstream silence pass in a fraction of a second, and the
timing of every comment is exact. (Not threshold 0: the SQLite store works in a thread, and
the clock must not leap over deadlines while a thread is busy. For the same reason the
store's own deadlines are set out of reach: a thread slower than 50 ms would otherwise let
the clock jump straight to them.)
"""

from __future__ import annotations

import httpx
import trio

from gateway.wire import sse
from tests.support.gateways import GatewayFactory, Sim

STORE = {"admission": 1e6, "store": 1e6}  # virtual seconds no jump reaches


async def test_comments_fill_silence_and_sit_between_events(
    start_gateway: GatewayFactory, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.05
    async with start_gateway(commit_grace=2, keepalive=15, first_token=120, **STORE) as gw:
        body = {
            "model": "fake/lorem",
            "stream": True,
            "messages": [{"role": "user", "content":
                          "#sim scenario=slow_first_token first_token_ms=40000 tokens=3\nhi"}],
        }
        started = trio.current_time()
        arrivals: list[tuple[float, bytes]] = []
        async with httpx.AsyncClient(timeout=None) as client, client.stream(
            "POST", f"{gw.url}/v1/chat/completions", json=body, headers=gw.headers
        ) as response:
            assert response.status_code == 200
            committed = trio.current_time() - started
            async for block in response.aiter_raw():
                arrivals.append((trio.current_time() - started, block))

    raw = b"".join(block for _, block in arrivals)
    # Every comment stands alone between events: decoding sees only whole events.
    decoder = sse.Decoder()
    events = decoder.feed(raw)
    assert not decoder.pending
    assert events[-1].data == "[DONE]"
    assert decoder.comments == 2
    assert 2 <= committed < 2.5  # the status line waited out the commit grace
    comment_times = [t for t, block in arrivals if block.startswith(b":")]
    # Silence from the commit (t=2 s) to the first token (t=40 s): comments at 17 and 32 s.
    assert [round(t) for t in comment_times] == [17, 32]
    assert all(block == sse.KEEPALIVE for _, block in arrivals if block.startswith(b":"))


async def test_no_comments_while_tokens_flow(
    start_gateway: GatewayFactory, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.05
    async with start_gateway(commit_grace=2, keepalive=1, **STORE) as gw:
        body = {
            "model": "fake/lorem",
            "stream": True,
            "messages": [{"role": "user", "content": "#sim tokens=30 interval_ms=500\nhi"}],
        }
        async with httpx.AsyncClient(timeout=None) as client:
            response = await client.post(f"{gw.url}/v1/chat/completions", json=body,
                                         headers=gw.headers)
    assert b": keepalive" not in response.content
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_long_streams_are_not_cut_by_server_timeouts(
    start_gateway: GatewayFactory, sim: Sim, mock_clock: trio.testing.MockClock
) -> None:
    """Quart's 60 s response timeout and hypercorn's own timers never end a stream."""
    mock_clock.autojump_threshold = 0.05
    async with start_gateway(keepalive=15, **STORE) as gw:
        body = {
            "model": "fake/lorem",
            "stream": True,
            "messages": [{"role": "user", "content": "#sim tokens=15 interval_ms=6000\nhi"}],
        }
        started = trio.current_time()
        async with httpx.AsyncClient(timeout=None) as client:
            response = await client.post(f"{gw.url}/v1/chat/completions", json=body,
                                         headers=gw.headers)
        assert trio.current_time() - started >= 84  # 14 gaps of 6 s
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert response.content.count(b'"content":" ') == 15
