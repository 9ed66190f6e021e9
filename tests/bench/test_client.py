"""One request against the real fake upstream on loopback: outcomes, timings, reuse, aborts."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

import pytest
import trio

from gateway.bench.client import Pool, RequestSpec, perform, render_chat
from gateway.bench.http1 import Endpoint
from gateway.sim.server import SimServer
from tests.support.gateways import Sim


@pytest.fixture
async def pools() -> AsyncIterator[list[Pool]]:
    """Pools the test opened; their idle connections are closed after it (inside the Trio
    run: closing a Trio socket needs one)."""
    opened: list[Pool] = []
    yield opened
    for pool in opened:
        pool.close()


def spec(url: str, directive: str, *, stream: bool = True, index: int = 0,
         abort_after: float | None = None) -> RequestSpec:
    tag = f"client-{index}"
    body = {
        "model": "fake/lorem",
        "stream": stream,
        "messages": [{"role": "user", "content": f"hi\n#sim tag={tag} {directive}"}],
    }
    payload = render_chat(Endpoint.parse(url), "sk-bench", body)
    return RequestSpec(index, "A", tag, stream, payload, abort_after)


async def test_a_stream_is_timed_token_by_token(pools: list[Pool], sim: Sim) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    result = await perform(pool, spec(sim.url, "tokens=5 interval_ms=3"), 10)
    assert (result.outcome, result.error_kind, result.status) == ("ok", None, 200)
    assert result.tokens == 5 and len(result.gaps) == 4
    assert result.headers_at is not None and result.first_token_at is not None
    assert result.started_at <= result.headers_at <= result.first_token_at <= result.ended_at
    # The upstream sends token i at 3*i ms (absolute slots, never early): the last one
    # comes 12 ms after the start at the earliest, and the gaps add up to first -> last.
    assert result.total >= 0.012
    assert sum(result.gaps) <= result.ended_at - result.first_token_at + 1e-9
    [record] = sim.records("client-0")
    assert record.outcome == "completed" and record.tokens_sent == 5
    assert record.saw_authorization == "sk-bench"


async def test_connections_are_reused(pools: list[Pool], sim: Sim) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    for index in range(3):
        result = await perform(pool, spec(sim.url, "tokens=2 interval_ms=0", index=index), 10)
        assert result.outcome == "ok" and result.reused_connection is (index > 0)
    result = await perform(pool, spec(sim.url, "tokens=2", stream=False, index=3), 10)
    assert (result.outcome, result.tokens, result.first_token_at) == ("ok", 2, None)
    assert pool.connects == 1
    assert len({r.connection_id for r in sim.records()}) == 1
    pool.close()


async def test_a_connection_closed_while_idle_is_retried_once(
    pools: list[Pool], nursery: trio.Nursery
) -> None:
    server = SimServer(idle_timeout=0.05)
    port = await nursery.start(server.serve)
    url = f"http://127.0.0.1:{port}"
    pool = Pool(Endpoint.parse(url))
    pools.append(pool)
    assert (await perform(pool, spec(url, "tokens=1", index=0), 10)).outcome == "ok"
    await trio.sleep(0.2)  # the server drops the idle connection
    result = await perform(pool, spec(url, "tokens=1", index=1), 10)
    assert result.outcome == "ok" and result.reused_connection and pool.connects == 2


async def test_abort_closes_the_socket_and_the_upstream_sees_it(
    pools: list[Pool], sim: Sim
) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    result = await perform(pool, spec(sim.url, "tokens=50 interval_ms=5", abort_after=0.03), 10)
    assert result.outcome == "aborted" and result.error_kind is None
    assert result.aborted_at is not None and result.aborted_at == result.ended_at
    assert result.abort_began_at is not None
    assert result.started_at + 0.03 <= result.abort_began_at <= result.aborted_at
    assert 0.03 <= result.aborted_at - result.started_at < 0.5
    assert 0 < result.tokens < 50
    record = await sim.wait_record("client-0", lambda r: r.client_gone_at is not None)
    assert 0 <= record.client_gone_at - result.aborted_at < 0.05  # type: ignore[operator]
    assert pool.take() is None  # an aborted connection is never reused


async def test_an_abort_planned_after_the_end_does_nothing(pools: list[Pool], sim: Sim) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    result = await perform(pool, spec(sim.url, "tokens=2 interval_ms=1", abort_after=5.0), 10)
    assert result.outcome == "ok" and result.aborted_at is None


@pytest.mark.parametrize(
    ("directive", "stream", "outcome", "kind"),
    [
        ("scenario=status_500", True, "http_error", "http 500"),
        ("scenario=status_429", False, "http_error", "http 429"),
        ("scenario=midstream_error", True, "stream_error", "error event"),
        ("scenario=malformed", True, "stream_error", "malformed event"),
        ("scenario=midstream_error", False, "http_error", "http 500"),
        ("scenario=invalid_json", False, "protocol", "invalid JSON"),
        ("scenario=cut", True, "connection", "connection closed"),
        ("scenario=reset", True, "connection", "connection ECONNRESET"),
        ("scenario=byte_split tokens=3", True, "ok", None),
    ],
)
async def test_failures_become_outcomes(pools: list[Pool],
    sim: Sim, directive: str, stream: bool, outcome: str, kind: str | None
) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    result = await perform(pool, spec(sim.url, directive, stream=stream), 10)
    assert (result.outcome, result.error_kind) == (outcome, kind)


@pytest.mark.parametrize(
    ("directive", "kind"),
    [
        ("scenario=no_headers", "timeout before headers"),
        ("scenario=slow_first_token", "timeout before first token"),
        ("scenario=stall", "timeout mid-body"),
    ],
)
async def test_timeouts_name_their_phase(
    pools: list[Pool], sim: Sim, directive: str, kind: str
) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    result = await perform(pool, spec(sim.url, directive), 0.15)
    assert (result.outcome, result.error_kind, result.aborted_at) == ("timeout", kind, None)
    assert 0.15 <= result.total < 1.0


async def test_connect_errors_are_outcomes() -> None:
    with trio.socket.socket() as probe:  # a port that was free a moment ago: refused
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    result = await perform(Pool(Endpoint.parse(url)), spec(url, ""), 5)
    assert (result.outcome, result.error_kind) == ("connect", "connect ECONNREFUSED")
    assert result.ended_at >= started


async def test_outside_cancellation_propagates_and_closes(pools: list[Pool], sim: Sim) -> None:
    pool = Pool(Endpoint.parse(sim.url))
    pools.append(pool)
    with trio.move_on_after(0.05) as scope:
        await perform(pool, spec(sim.url, "tokens=100 interval_ms=5"), 10)
    assert scope.cancelled_caught
    await sim.wait_record("client-0", lambda r: r.client_gone_at is not None)
    assert functools.reduce(lambda n, _: n + 1, sim.records(), 0) == 1
