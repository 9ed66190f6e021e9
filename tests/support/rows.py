"""Rows for the store and ledger tests: a key in a store, a reservation, a settled row."""

from __future__ import annotations

import time
from typing import Any

import attrs

from gateway.accounts import keys
from gateway.store.base import Store
from gateway.store.rows import ApiKey, RequestRecord, Reservation


async def make_key(store: Store, **policy: Any) -> ApiKey:
    _, row = keys.generate(name="t", created_at=time.time(), **policy)
    await store.add_key(row)
    return row


def reservation(key: ApiKey, amount: int, gen: str, instance: str = "i1") -> Reservation:
    return Reservation(
        generation_id=gen, key_id=key.id, amount=amount, instance=instance, model="m",
        deployment="p/m", client_dialect="openai", upstream_dialect="openai", stream=True,
        prompt_tokens=10, created_at=time.time(),
    )


def record(key: ApiKey, gen: str, cost: int, **changes: Any) -> RequestRecord:
    row = RequestRecord(
        generation_id=gen, key_id=key.id, model="m", deployment="p/m", client_dialect="openai",
        upstream_dialect="anthropic", stream=True, status="ok", http_status=200,
        prompt_tokens=11, completion_tokens=22, cached_tokens=3, reasoning_tokens=4,
        usage_estimated=False, cost=cost, error_type=None, ttft_ms=1.5, duration_ms=20.25,
        cancelled=False, created_at=1_700_000_000.5,
    )
    return attrs.evolve(row, **changes)


async def balance(store: Store, key: ApiKey) -> int | None:
    found = await store.find_key(key.id)
    assert found is not None
    return found.balance
