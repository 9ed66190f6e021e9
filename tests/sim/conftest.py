"""Fixtures of the fake upstream's own tests: its server on a loopback port, an httpx client,
and the speaker of each dialect (``tests/support/sim_clients.py``)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trio

from gateway.sim.server import SimServer
from tests.support.sim_clients import DEFAULTS, SPEAKERS, SimAt, Speaker


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimAt:
    server = SimServer(defaults=DEFAULTS)
    port = await nursery.start(server.serve)
    return SimAt(server, port)


@pytest.fixture
async def client(sim: SimAt) -> AsyncIterator[httpx.AsyncClient]:
    # Plain HTTP on loopback: verify=False only skips loading CA certificates (20 ms a client).
    async with httpx.AsyncClient(base_url=sim.url, timeout=5, verify=False) as client:
        yield client


@pytest.fixture(params=list(SPEAKERS))
def speaker(request: pytest.FixtureRequest) -> Speaker:
    return SPEAKERS[request.param]


@pytest.fixture
def no_gc_pauses() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a latency measurement: a full collection
    of the test process's heap (the SDKs are big) takes 25-65 ms, as long as the
    ``GONE_WITHIN`` being measured. Off until the test ends; the next collection after it
    catches up."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


