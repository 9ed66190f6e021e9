"""Gateways and fake upstreams on loopback sockets, as the tests start and talk to them.

Everything serves over real TCP on 127.0.0.1 inside the test's own Trio run: the fake
upstream (``gateway.sim.server``) and the gateway through ``gateway.serve.server.running``,
the same composition ``arouter serve`` uses. The fixtures (``sim``, ``start_gateway``,
``gw``) are in ``tests/conftest.py``; these are the types and helpers they and the tests
share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.accounts import keys
from gateway.accounts.pricing import Price
from gateway.app import open_store
from gateway.canonical import ChatRequest, Message, TextPart
from gateway.config import (
    Config,
    Deadlines,
    ModelRoute,
    ProviderConfig,
    SimConfig,
)
from gateway.serve.server import Running
from gateway.sim.server import Record, SimServer
from gateway.store.rows import ApiKey
from gateway.tokens import estimate_prompt_tokens

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
        """The store's records, once ``count`` of them exist (settling is asynchronous).

        Fewer than ``count`` after ``within`` seconds fails the test: a lenient wait would
        let a missing row pass as slowness."""
        deadline = time.monotonic() + within
        while True:
            found = await self.records(**where)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} records after {within} s: {found}")
            await trio.sleep(0.005)


def make_config(data_dir: Path, sim_url: str | None, **deadlines: float) -> Config:
    providers = {"sim": ProviderConfig(name="sim", dialect="sim",
                                       models=("echo", "lorem", "embed"))}
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


def reservation_for(payload: dict[str, Any]) -> int:
    """What admission reserves for ``payload`` at fake/lorem's prices."""
    text = payload["messages"][0]["content"]
    request = ChatRequest(model="fake/lorem", messages=(Message("user", (TextPart(text),)),))
    return estimate_prompt_tokens(request) * 1 + payload["max_tokens"] * 2
