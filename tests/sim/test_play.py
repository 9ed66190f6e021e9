"""What the play does alike in every dialect, over real loopback HTTP: each test runs once
per dialect (the ``speaker`` fixture), with the same directive and the same expectations
of the records."""

from __future__ import annotations

import time

import httpx
import pytest
import trio

from tests.support.sim_clients import (
    CLIENT_GENERATORS_LEFT_OPEN,
    SimAt,
    Speaker,
    assert_gone_promptly,
    poll,
    read_then_leave,
)

# What ends a complete stream in each dialect: a cut one must not have it.
STREAM_END = {"openai": b"[DONE]", "anthropic": b"message_stop", "gemini": b"finishReason"}


async def test_a_complete_stream_sends_every_token(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    async with client.stream("POST", **speaker.request("tag=ok")) as response:
        raw = await response.aread()
    assert response.status_code == 200
    assert response.headers["x-request-id"] == f"sim-{sim.record('ok').id}"
    assert speaker.tokens_in(raw) == 10 and STREAM_END[speaker.dialect] in raw
    record = sim.record("ok")
    assert (record.dialect, record.outcome, record.tokens_sent) == (
        speaker.dialect, "completed", 10
    )
    assert (record.model, record.stream, record.scenario) == ("sim-echo", True, "ok")
    assert record.client_gone_at is None


async def test_cut_ends_the_connection_mid_body(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", **speaker.request("scenario=cut tag=c")) as response:
            async for chunk in response.aiter_raw():
                received += chunk
    assert speaker.tokens_in(received) == 5
    assert STREAM_END[speaker.dialect] not in received
    record = sim.record("c")
    assert (record.outcome, record.tokens_sent, record.client_gone_at) == ("cut", 5, None)


async def test_non_stream_cut_delivers_half_the_announced_body(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(**speaker.request("scenario=cut tag=c", stream=False))
    assert sim.record("c").outcome == "cut"


async def test_reset_ends_the_connection_with_an_rst(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    received = bytearray()
    with pytest.raises(httpx.ReadError, match="reset"):  # ECONNRESET, not a clean EOF
        async with client.stream("POST", **speaker.request("scenario=reset tag=x")) as response:
            async for chunk in response.aiter_raw():
                received += chunk
    # Bytes that reached the client before the RST are still delivered.
    assert speaker.tokens_in(received) == 5
    record = sim.record("x")
    assert (record.outcome, record.tokens_sent) == ("reset", 5)


async def test_slow_first_token_sends_headers_then_waits(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    request = speaker.request("scenario=slow_first_token first_token_ms=60 tokens=2 tag=f")
    async with client.stream("POST", **request) as response:
        record = sim.record("f")
        assert record.headers_sent and record.first_token_at is None
        raw = await response.aread()
    assert speaker.tokens_in(raw) == 2
    assert record.first_token_at - record.started_at >= 0.06  # type: ignore[operator]
    assert record.outcome == "completed"


@pytest.mark.parametrize("stream", [True, False])
async def test_status_529_is_overloaded_in_every_dialect(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker, stream: bool
) -> None:
    response = await client.post(**speaker.request("scenario=status_529 tag=o", stream=stream))
    assert response.status_code == 529
    error = response.json()["error"]
    assert "overloaded" in error["message"].lower()
    record = sim.record("o")
    assert (record.outcome, record.headers_sent, record.tokens_sent) == ("error_status", True, 0)


async def test_byte_split_sends_the_same_tokens(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    async with client.stream(
        "POST", **speaker.request("scenario=byte_split tokens=6 tag=b")
    ) as response:
        raw = await response.aread()
    assert speaker.tokens_in(raw) == 6 and STREAM_END[speaker.dialect] in raw
    assert sim.record("b").outcome == "completed"


@CLIENT_GENERATORS_LEFT_OPEN
@pytest.mark.usefixtures("no_gc_pauses")
async def test_client_closing_mid_stream_is_seen_at_once(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    closed_at = await read_then_leave(client, speaker, "tokens=100000 tag=g", 3)
    record = sim.record("g")
    await assert_gone_promptly(record, closed_at)
    assert 3 <= record.tokens_sent < 100


@CLIENT_GENERATORS_LEFT_OPEN
@pytest.mark.usefixtures("no_gc_pauses")
async def test_client_leaving_a_stall_is_seen(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    closed_at = await read_then_leave(client, speaker, "scenario=stall tag=st", 5, linger=0.01)
    record = sim.record("st")
    assert record.tokens_sent == 5
    await assert_gone_promptly(record, closed_at)


@CLIENT_GENERATORS_LEFT_OPEN
@pytest.mark.usefixtures("no_gc_pauses")
async def test_client_leaving_before_headers_is_seen(
    sim: SimAt, client: httpx.AsyncClient, speaker: Speaker
) -> None:
    cancel = trio.CancelScope()

    async def wait_for_headers() -> None:
        with cancel:
            await client.post(**speaker.request("scenario=no_headers tag=h"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_headers)
        await poll(lambda: sim.server.find("h"))
        closed_at = time.monotonic()
        cancel.cancel()
    record = sim.record("h")
    await assert_gone_promptly(record, closed_at)
    assert not record.headers_sent
