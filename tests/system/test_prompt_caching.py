"""Anthropic prompt caching through the gateway: markers reach the upstream where the client
put them, and cache writes and reads come back in usage and are priced at their own rates.

The Anthropic SDK sends ``cache_control`` on a system block, a message block and a tool to
an Anthropic upstream (the fake one reports the marked prefix as written, or with
``#sim cache=hit`` as read). The SDK's usage, the ledger row and its cost must all agree.
"""

from __future__ import annotations

from typing import Any

import anthropic
import attrs
import trio

from gateway.accounts.pricing import Price
from gateway.config import ProviderConfig
from tests.support.gateways import Gw, Sim

MARK = {"type": "ephemeral"}
LONG = "You are a meticulous assistant. " * 40
PRICE = Price(prompt=3_000_000, completion=15_000_000, cached_prompt=300_000,
              cache_write=3_750_000)


def _ask(gw: Gw, directive: str) -> Any:
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0) as client:
        return client.messages.create(
            model="anthropic-lorem", max_tokens=64,
            system=[{"type": "text", "text": LONG, "cache_control": MARK}],
            tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}},
                    "cache_control": MARK}],
            messages=[{"role": "user", "content": [
                {"type": "text", "text": f"#sim tokens=3 interval_ms=0 {directive}\n"},
                {"type": "text", "text": "Some long document. " * 20, "cache_control": MARK},
            ]}])


async def test_cache_writes_then_reads_are_reported_and_priced_apart(
        start_gateway: Any, sim: Sim) -> None:
    providers = {"fake-anthropic": attrs.evolve(_fake_anthropic(sim), prices={"lorem": PRICE})}
    async with start_gateway(providers=providers) as gw:
        first = await trio.to_thread.run_sync(_ask, gw, "cache=miss")
        second = await trio.to_thread.run_sync(_ask, gw, "cache=hit")
        rows = sorted(await gw.wait_records(2), key=lambda r: r.created_at)
    # The markers reached the upstream exactly where the client put them.
    body = sim.records()[0].body
    assert body["system"][0]["cache_control"] == MARK
    assert body["tools"][0]["cache_control"] == MARK
    assert body["messages"][0]["content"][1]["cache_control"] == MARK
    written = first.usage.cache_creation_input_tokens
    assert written > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == second.usage.input_tokens == 1
    miss, hit = rows
    assert (miss.cache_write_tokens, miss.cached_tokens) == (written, 0)
    assert (hit.cache_write_tokens, hit.cached_tokens) == (0, written)
    assert miss.prompt_tokens == hit.prompt_tokens == written + 1
    # Micro-dollars, rounded up once: 1 plain prompt token at 3, the prefix written at 3.75
    # or read at 0.3, 3 output tokens at 15 (per million tokens).
    assert miss.cost == -(-(1 * 3_000_000 + written * 3_750_000 + 3 * 15_000_000)
                          // 1_000_000)
    assert hit.cost == -(-(1 * 3_000_000 + written * 300_000 + 3 * 15_000_000) // 1_000_000)
    assert miss.cost > hit.cost


def _fake_anthropic(sim: Sim) -> ProviderConfig:
    return ProviderConfig(name="fake-anthropic", dialect="anthropic", base_url=sim.url,
                          api_key_env="AROUTER_TEST_FAKE_KEY")
