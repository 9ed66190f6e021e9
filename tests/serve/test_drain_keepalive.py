"""Kept-alive and pipelined connections as the drain begins (FAULTS.md F7), over raw sockets.

A request on an open connection as the drain begins gets a 503 in the route's JSON shape
(with ``Retry-After`` and ``Connection: close``), or the connection is closed before the
request is read: never a request read and left unanswered. And whatever the connections
hold, a server with nothing open stops at once, not at hypercorn's graceful timeout.
The drain here is 120 s, the default: any wait for it or for the graceful timeout (127 s)
shows as a test that fails its bounds.
"""

from __future__ import annotations

import time

import trio

from tests.support.gateways import GatewayFactory, Gw
from tests.support.raw_http import RawConnection, Reply, chat, request

READYZ = request("GET", "/readyz")


async def _draining(gw: Gw) -> None:
    gw.running.stop()
    for _ in range(400):  # the server's shutdown trigger runs on its next turn
        if gw.running.gateway.draining:
            return
        await trio.sleep(0.005)
    raise AssertionError("the drain did not begin")


def _refused(reply: Reply | None) -> None:
    """A 503 in the chat route's error shape, telling the client to go elsewhere."""
    assert isinstance(reply, Reply)
    assert reply.status == 503, reply
    assert reply.json()["error"]["code"] == 503
    assert "shutting down" in reply.json()["error"]["message"]
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["connection"] == "close"


async def test_a_request_on_its_way_in_as_the_drain_begins_is_answered_503(
    start_gateway: GatewayFactory,
) -> None:
    """Half a request head on a kept-alive connection at drain start, the rest after: the
    request is read and refused, never dropped with the idle connections."""
    async with start_gateway(drain=120.0) as gw:
        connection = await RawConnection.open(gw.url)
        await connection.send(READYZ)
        assert (first := await connection.reply()) is not None and first.status == 200
        head = chat(gw.key, "#sim tokens=3\nhi")
        await connection.send(head[:40])
        await _draining(gw)
        await trio.sleep(0.05)
        await connection.send(head[40:])
        _refused(await connection.reply(within=5))
        assert await connection.wait_closed(within=5) == b""
        await connection.aclose()
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2


async def test_an_idle_kept_alive_connection_is_closed_at_once(
    start_gateway: GatewayFactory,
) -> None:
    async with start_gateway(drain=120.0) as gw:
        connection = await RawConnection.open(gw.url)
        await connection.send(READYZ)
        assert (first := await connection.reply()) is not None and first.status == 200
        began = time.monotonic()
        await _draining(gw)
        assert await connection.wait_closed(within=2) == b""
        closed = time.monotonic() - began
        await connection.aclose()
    stopped = time.monotonic() - began
    print(f"idle connection closed {closed * 1000:.1f} ms after the drain began; "
          f"server stopped after {stopped * 1000:.1f} ms")
    assert stopped < 1.0


async def test_requests_racing_the_drain_are_answered_or_never_read(
    start_gateway: GatewayFactory,
) -> None:
    """Many kept-alive connections each send a request right as the drain begins. Each one
    gets a whole response, or a close with no response; and then the gateway must not have
    read it: every request it refused reached its client."""
    connections = 40
    async with start_gateway(drain=120.0) as gw:
        metrics = gw.running.gateway.metrics
        opened = [await RawConnection.open(gw.url) for _ in range(connections)]
        replies: list[Reply | None] = []
        try:
            for connection in opened:
                await connection.send(READYZ)
                assert (reply := await connection.reply()) is not None and reply.status == 200

            async def late(connection: RawConnection, delay: float) -> None:
                await trio.sleep(delay)
                try:
                    await connection.send(chat(gw.key, "#sim tokens=3\nhi"))
                except trio.BrokenResourceError:
                    replies.append(None)  # closed before it could even be sent
                    return
                replies.append(await connection.reply(within=10))

            async with trio.open_nursery() as nursery:
                for n, connection in enumerate(opened):
                    nursery.start_soon(late, connection, n * 0.0005)
                await trio.sleep(connections * 0.00025)
                gw.running.stop()
        finally:
            for connection in opened:
                await connection.aclose()
    # Read once the gateway has stopped: a request admitted as the drain began is answered
    # 503 first and counted when it settles, just after. Refused before admission, or
    # admitted as the drain began and stopped at once:
    refused = sum(metrics.registry.get_sample_value(name, labels) or 0 for name, labels in (
        ("arouter_rejections_total", {"route": "chat_completions", "status": "503"}),
        ("arouter_requests_total",
         {"route": "chat_completions", "dialect": "openai", "status": "503"}),
    ))
    dropped = metrics.registry.get_sample_value(
        "arouter_cancellations_total", {"phase": "upload"}) or 0
    served = [reply for reply in replies if reply is not None and reply.status == 200]
    refusals = [reply for reply in replies if reply is not None and reply.status != 200]
    print(f"{len(served)} served before the drain, {len(refusals)} answered 503, "
          f"{connections - len(served) - len(refusals)} closed unread (the gateway refused "
          f"{refused:.0f} and dropped {dropped:.0f} it had read)")
    assert len(replies) == connections
    assert dropped == 0, "requests read, then dropped with their connection"
    assert len(refusals) == refused, "refusals that never reached their client"
    for reply in refusals:
        _refused(reply)


async def test_a_pipelined_request_behind_a_stream_as_the_drain_begins(
    start_gateway: GatewayFactory,
) -> None:
    """A stream and a second request written in one send; the drain begins while the stream
    runs. The stream finishes (200), the second request gets a 503 or the connection closes
    unread, and the server then stops at once, not at hypercorn's graceful timeout."""
    with trio.fail_after(20):  # not hypercorn's graceful timeout (127 s)
        async with start_gateway(drain=120.0) as gw:
            connection = await RawConnection.open(gw.url)
            stream = chat(gw.key, "#sim tokens=10 interval_ms=50\nhi", stream=True)
            await connection.send(stream + READYZ)
            assert await connection.until(b"\r\n")  # the status line: the stream has begun
            await _draining(gw)
            began = time.monotonic()
            first = await connection.reply(within=10)
            assert first is not None and first.status == 200
            assert first.body.rstrip().endswith(b"data: [DONE]")
            second = await connection.reply(within=5)
            if second is not None:
                assert second.status == 503
                assert second.headers["connection"] == "close"
            assert await connection.wait_closed(within=5) == b""
            await connection.aclose()
            stream_ended = time.monotonic() - began
    stopped = time.monotonic() - began
    print(f"second request: {'503' if second else 'closed unread'}; stream ended "
          f"{stream_ended:.2f} s and server stopped {stopped:.2f} s after the drain began")
    assert stopped - stream_ended < 1.0
