"""A slow client throttles the upstream read; an upstream past the output cap is stopped."""

from __future__ import annotations

import json
import socket

import httpx
import trio

from gateway.config import ModelRoute
from gateway.relay.exchange import HIGH_WATER
from gateway.wire import sse
from tests.support.gateways import GatewayFactory, Gw, Sim


async def test_a_client_that_reads_nothing_pauses_the_upstream(gw: Gw, sim: Sim) -> None:
    host, port = gw.url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    body = json.dumps({"model": "fake/lorem", "stream": True, "messages": [
        {"role": "user", "content": "#sim tag=bp tokens=1000000 interval_ms=0\nhi"}]}).encode()
    await sock.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
        b"\r\nauthorization: Bearer " + gw.key.encode()
        + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    assert (await sock.recv(100)).startswith(b"HTTP/1.1 200")
    # Let the buffers fill: socket buffers, then the relay's pending bytes up to their high water.
    record = await sim.wait_record("bp", lambda r: r.tokens_sent > 1000)
    sent = -1
    with trio.fail_after(10):
        while record.tokens_sent != sent:
            sent = record.tokens_sent
            await trio.sleep(0.3)
    # The upstream is paused, far short of its million tokens, and the gateway holds at
    # most its high-water mark (plus one upstream read) for this stream.
    assert sent < 200_000
    [exchange] = gw.running.gateway.open_exchanges
    assert len(exchange.pending) <= HIGH_WATER + 64 * 1024
    sock.close()
    await sim.wait_record("bp", lambda r: r.client_gone_at is not None)


async def test_an_upstream_past_the_output_cap_is_stopped(
    start_gateway: GatewayFactory, sim: Sim
) -> None:
    # The model's cap is 5 tokens, and the request sets no max_tokens of its own: the
    # upstream is not told, ignores it, and is stopped once it has said far more.
    models = {"capped": ModelRoute("capped", "fake", "lorem", max_output_tokens=5)}
    async with start_gateway(models=models) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{gw.url}/v1/chat/completions", headers=gw.headers,
                                         json={"model": "capped", "stream": True, "messages": [
                {"role": "user", "content": "#sim tag=cap tokens=100000 interval_ms=0\nhi"}]})
        [row] = await gw.wait_records(1)
    last = json.loads(sse.Decoder().feed(response.content)[-1].data)
    assert last["choices"][0]["finish_reason"] == "error"
    assert (row.status, row.error_type) == ("partial", "output_limit")
    assert row.attempts == "fake/lorem=output_limit"
    assert row.completion_tokens < 200
    await sim.wait_record("cap", lambda r: r.ended_at is not None)
