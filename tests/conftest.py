"""The suite's fixtures: a fake upstream and gateways on loopback sockets, the real servers'
fixtures (PostgreSQL, Redis) as plugins, and the canary watch over every log line.

Helpers and types live in ``tests/support/``; this file only declares fixtures and hooks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from gateway.config import ModelRoute, ProviderConfig, Routing
from gateway.observe.logs import JsonFormatter, TextFormatter
from gateway.serve.server import running
from gateway.sim.scenarios import Plan
from gateway.sim.server import SimServer
from tests.support.gateways import FAKE_PROVIDER_KEY, GatewayFactory, Gw, Sim, add_key, make_config

# Fixtures of the real servers the tests start (by name: postgres_url, postgres_db,
# redis_server_session, redis_url, redis_clean_url).
pytest_plugins = ["tests.support.pg_server", "tests.support.redis_server"]


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Sim:
    server = SimServer(defaults=Plan(tokens=10, interval=0.002))
    port = await nursery.start(server.serve)
    return Sim(server, f"http://127.0.0.1:{port}")


@pytest.fixture
def start_gateway(
    tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> GatewayFactory:
    """``async with start_gateway(commit_grace=0.1) as gw:`` — a gateway in front of ``sim``;
    ``routing``, extra ``models`` and ``providers`` change the config too, and ``store_url``
    puts its store on PostgreSQL instead of SQLite; ``clock`` is the circuits' clock."""
    monkeypatch.setenv("AROUTER_TEST_FAKE_KEY", FAKE_PROVIDER_KEY)
    counter = iter(range(1000))

    @asynccontextmanager
    async def start(routing: Routing | None = None, models: dict[str, ModelRoute] | None = None,
                    providers: dict[str, ProviderConfig] | None = None,
                    store_url: str | None = None, max_answer_bytes: int | None = None,
                    clock: Callable[[], float] = trio.current_time,
                    **deadlines: float) -> AsyncIterator[Gw]:
        config = make_config(tmp_path / f"gw{next(counter)}", sim.url, **deadlines)
        config = attrs.evolve(
            config,
            routing=routing or config.routing,
            models={**config.models, **(models or {})},
            providers={**config.providers, **(providers or {})},
            database_url=store_url,
            max_answer_bytes=max_answer_bytes or config.max_answer_bytes,
        )
        key = await add_key(config)
        async with running(config, clock=clock) as run:
            yield Gw(run, key)

    return start


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> AsyncIterator[Gw]:
    async with start_gateway() as gateway:
        yield gateway


# -- canaries ---------------------------------------------------------------------------------
# The whole suite runs with canary keys: the fake upstream's key says CANARY, and every
# client key is a real lr_live_ key. Whatever any in-process gateway logs, at any level, is
# formatted as the log file would hold it and searched for them; one hit fails the session.
# (Subprocess gateways are searched by tests/system/test_secrets.py.)

_CANARIES = re.compile(r"CANARY|lr_live_[0-9a-f]{12}_[0-9a-f]{48}")


class _CanaryWatch(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []
        self._formats = (JsonFormatter(), TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        for formatter in self._formats:
            line = formatter.format(record)
            if _CANARIES.search(line):
                self.leaks.append(line[:400])


_watch = _CanaryWatch()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_watch)
    logging.getLogger("arouter").setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logging.getLogger().removeHandler(_watch)
    if _watch.leaks:
        print("\nkey canaries found in log lines:\n  " + "\n  ".join(_watch.leaks[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
