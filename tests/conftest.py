"""Shared fixtures: a fake upstream and gateways on real loopback sockets.

Everything here serves over real TCP on 127.0.0.1 inside the test's own Trio run: the fake
upstream (``gateway.sim.server``) and the gateway through ``gateway.server.running``, the
same composition ``arouter serve`` uses.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from gateway.accounts import keys
from gateway.accounts.pricing import Price
from gateway.app import open_store
from gateway.config import (
    Config,
    Deadlines,
    ModelRoute,
    ProviderConfig,
    Routing,
    SimConfig,
)
from gateway.observe.logs import JsonFormatter, TextFormatter
from gateway.serve.server import Running, running
from gateway.sim.scenarios import Plan
from gateway.sim.server import Record, SimServer
from gateway.store.rows import ApiKey

FAKE_PROVIDER_KEY = "sk-fake-upstream-CANARY-0123456789"
# fake/lorem's price: 1 micro-dollar per prompt token, 2 per completion token.
TEST_PRICE = Price(prompt=1_000_000, completion=2_000_000)


@attrs.frozen
class Sim:
    server: SimServer
    url: str  # http://127.0.0.1:PORT

    def records(self, tag: str | None = None) -> list[Record]:
        return self.server.find(tag) if tag is not None else list(self.server.records)

    async def wait_record(
        self, tag: str, predicate: Callable[[Record], bool], within: float = 5.0
    ) -> Record:
        """Poll (real time) until this tag's record satisfies ``predicate``."""
        deadline = time.monotonic() + within
        while True:
            found = [r for r in self.server.find(tag) if predicate(r)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no record for {tag!r} satisfied the condition: "
                                     f"{self.server.find(tag)}")
            await trio.sleep(0.001)


@pytest.fixture
async def sim(nursery: trio.Nursery) -> Sim:
    server = SimServer(defaults=Plan(tokens=10, interval=0.002))
    port = await nursery.start(server.serve)
    return Sim(server, f"http://127.0.0.1:{port}")


@attrs.frozen
class Gw:
    running: Running
    key: str

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    async def records(self, **where: Any) -> list[Any]:
        return await self.running.gateway.store.records(**where)

    async def wait_records(self, count: int, within: float = 5.0, **where: Any) -> list[Any]:
        """The store's records, once ``count`` of them exist (settling is asynchronous)."""
        deadline = time.monotonic() + within
        while True:
            found = await self.records(**where)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await trio.sleep(0.005)


def make_config(data_dir: Path, sim_url: str | None, **deadlines: float) -> Config:
    providers = {"sim": ProviderConfig(name="sim", dialect="sim", models=("echo", "lorem"))}
    models = {}
    if sim_url is not None:
        providers["fake"] = ProviderConfig(
            name="fake",
            dialect="openai",
            base_url=f"{sim_url}/v1",
            api_key_env="AROUTER_TEST_FAKE_KEY",
            prices={"lorem": TEST_PRICE},
        )
        models["fast"] = ModelRoute(name="fast", provider="fake", model="lorem")
        # The same fake upstream, spoken to in its two other dialects.
        providers["fake-anthropic"] = ProviderConfig(
            name="fake-anthropic", dialect="anthropic", base_url=sim_url,
            api_key_env="AROUTER_TEST_FAKE_KEY",
        )
        providers["fake-gemini"] = ProviderConfig(
            name="fake-gemini", dialect="gemini", base_url=sim_url,
            api_key_env="AROUTER_TEST_FAKE_KEY",
        )
        # Gemini SDKs put the model in a path segment and refuse a "/" in it: aliases.
        for dialect, provider in (("openai", "fake"), ("anthropic", "fake-anthropic"),
                                  ("gemini", "fake-gemini")):
            models[f"{dialect}-lorem"] = ModelRoute(name=f"{dialect}-lorem", provider=provider,
                                                    model="lorem")
        # Nothing listens on port 1 of the loopback: every connect is refused at once.
        providers["dead"] = ProviderConfig(
            name="dead", dialect="openai", base_url="http://127.0.0.1:1/v1",
            prices={"x": TEST_PRICE},
        )
    return Config(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        # A short drain: a test that ends with a stream open does not wait two minutes.
        deadlines=attrs.evolve(Deadlines(), **{"drain": 1.0, **deadlines}),
        sim=SimConfig(tokens=10, tokens_per_second=500.0),
        providers=providers,
        models=models,
    )


async def add_key(config: Config, name: str = "test") -> str:
    store = open_store(config)  # the config's own store: SQLite, or PostgreSQL by URL
    await store.open()
    try:
        secret, row = keys.generate(name=name, created_at=time.time())
        await store.add_key(row)
    finally:
        await store.aclose()
    return secret


async def new_key(gw: Gw, **policy: Any) -> tuple[str, ApiKey]:
    """A key with ``policy`` (balance, rpm, ...), added to a running gateway's store."""
    secret, row = keys.generate(name="policy", created_at=time.time(), **policy)
    await gw.running.gateway.store.add_key(row)
    return secret, row


GatewayFactory = Callable[..., Any]


@pytest.fixture
def start_gateway(
    tmp_path: Path, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> GatewayFactory:
    """``async with start_gateway(commit_grace=0.1) as gw:`` — a gateway in front of ``sim``;
    ``routing``, extra ``models`` and ``providers`` change the config too, and ``store_url``
    puts its store on PostgreSQL instead of SQLite."""
    monkeypatch.setenv("AROUTER_TEST_FAKE_KEY", FAKE_PROVIDER_KEY)
    counter = iter(range(1000))

    @asynccontextmanager
    async def start(routing: Routing | None = None, models: dict[str, ModelRoute] | None = None,
                    providers: dict[str, ProviderConfig] | None = None,
                    store_url: str | None = None, max_answer_bytes: int | None = None,
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
        async with running(config) as run:
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
