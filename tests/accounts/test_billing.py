"""The billing table: what a request costs for every way it can end, on SQLite and PostgreSQL.

Each test is one row of the README's "What a request costs" table, driven through a real
gateway on loopback sockets in front of the fake upstream, and checked against the ledger
row and the key's balance. The policy: **a request that produced no output is free**
(whatever its HTTP status) unless its provider reported usage for it; one that relayed
output and then failed pays for the prompt and the output relayed; a refused request leaves
no row. (The crash rows, which need whole processes, are in
``tests/system/test_accounts_processes.py``.)

``fake/lorem`` costs 1 micro-dollar per prompt token and 2 per completion token, so every
expected amount is exact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from gateway.canonical import ChatRequest, Message, TextPart
from gateway.config import Routing
from gateway.store.rows import RequestRecord
from gateway.tokens import estimate_prompt_tokens, estimate_tokens
from gateway.wire import sse
from tests.support.gateways import GatewayFactory, Gw, Sim, new_key
from tests.support.pg_server import drop_database, fresh_database, server_url

START = 10_000_000  # micro-dollars on every key here


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Any:
    """None (the embedded SQLite file) or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        yield None
        return
    url = fresh_database(server_url(request.config))
    yield url
    drop_database(url)


def body(tag: str, directive: str = "", *, model: str = "fake/lorem", stream: bool = True,
         max_tokens: int = 50) -> dict[str, Any]:
    return {"model": model, "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"#sim tag={tag} {directive}\nhello"}]}


def prompt_estimate(payload: dict[str, Any]) -> int:
    text = payload["messages"][0]["content"]
    return estimate_prompt_tokens(
        ChatRequest(model=payload["model"], messages=(Message("user", (TextPart(text),)),)))


async def post(gw: Gw, secret: str, payload: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{gw.url}/v1/chat/completions", json=payload,
                                 headers={"authorization": f"Bearer {secret}"})


async def read_stream(gw: Gw, secret: str, payload: dict[str, Any],
                      leave: Callable[[bytes], bool]) -> bytes:
    """A streamed request's raw body, read until ``leave(what came so far)`` says to close
    the connection, or to its end."""
    raw = b""
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "POST", f"{gw.url}/v1/chat/completions", json=payload,
        headers={"authorization": f"Bearer {secret}"},
    ) as response:
        async for chunk in response.aiter_raw():
            raw += chunk
            if leave(raw):
                break
    return raw


def relayed_text(raw: bytes) -> str:
    """The text deltas a streamed answer carried, before whatever ended it."""
    text = []
    for event in sse.Decoder().feed(raw):
        if event.data == "[DONE]":
            continue
        for choice in json.loads(event.data).get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


@pytest.fixture
async def metered(start_gateway: GatewayFactory, store_url: str | None) -> AsyncIterator[Any]:
    """``async with metered(**gateway options) as (gw, secret, key_id)``: a gateway on the
    parametrised store and a key holding ``START``."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(**options: Any) -> AsyncIterator[tuple[Gw, str, str]]:
        async with start_gateway(store_url=store_url, **options) as gw:
            secret, key = await new_key(gw, balance=START)
            yield gw, secret, key.id

    yield start


async def settled(gw: Gw, key_id: str, count: int = 1) -> list[RequestRecord]:
    rows = await gw.wait_records(count, key_id=key_id)
    assert len(rows) == count
    with trio.fail_after(10):
        while await gw.running.gateway.store.reservations():  # noqa: ASYNC110
            await trio.sleep(0.01)
    return sorted(rows, key=lambda r: r.created_at)


async def balance(gw: Gw, key_id: str) -> int | None:
    row = await gw.running.gateway.store.find_key(key_id)
    assert row is not None
    return row.balance


async def assert_free(gw: Gw, key_id: str, row: RequestRecord) -> None:
    assert (row.cost, row.prompt_tokens, row.completion_tokens) == (0, 0, 0), row
    assert await balance(gw, key_id) == START


# -- served -------------------------------------------------------------------------------------


async def test_ok_pays_the_providers_usage(metered: Any, sim: Sim) -> None:
    async with metered() as (gw, secret, key_id):
        response = await post(gw, secret, body("ok", "tokens=7"))
        assert response.status_code == 200
        [row] = await settled(gw, key_id)
        assert (row.status, row.usage_estimated) == ("ok", False)
        assert row.cost == row.prompt_tokens + 2 * row.completion_tokens > 0
        assert row.completion_tokens == 7
        assert await balance(gw, key_id) == START - row.cost


async def test_no_output_but_reported_usage_pays_the_report(metered: Any, sim: Sim) -> None:
    async with metered() as (gw, secret, key_id):
        response = await post(gw, secret, body("empty", "tokens=0"))
        assert response.status_code == 200
        [row] = await settled(gw, key_id)
        assert (row.status, row.usage_estimated, row.completion_tokens) == ("ok", False, 0)
        assert row.cost == row.prompt_tokens > 0  # the provider counted the prompt
        assert await balance(gw, key_id) == START - row.cost


# -- refused: no row, nothing charged -------------------------------------------------------------


async def test_refused_requests_leave_no_row_and_cost_nothing(metered: Any, sim: Sim) -> None:
    async with metered() as (gw, _, _):
        poor, poor_key = await new_key(gw, balance=1)
        limited, limited_key = await new_key(gw, balance=START, rpm=1)
        fenced, fenced_key = await new_key(gw, balance=START, models=("fast",))
        assert (await post(gw, poor, body("r402"))).status_code == 402
        assert (await post(gw, limited, body("r-ok"))).status_code == 200
        assert (await post(gw, limited, body("r429"))).status_code == 429
        assert (await post(gw, fenced, body("r403"))).status_code == 403
        assert (await post(gw, "lr_live_000000000000_" + "0" * 48, body("r401"))).status_code == 401
        await settled(gw, limited_key.id)  # only the one admitted request has a row
        for key in (poor_key, fenced_key):
            assert await gw.records(key_id=key.id) == []
        assert await balance(gw, poor_key.id) == 1
        assert await balance(gw, fenced_key.id) == START
        assert not sim.records("r402") and not sim.records("r429") and not sim.records("r403")


# -- failed before any output: free --------------------------------------------------------------


async def test_a_refused_connection_is_free(metered: Any, sim: Sim) -> None:
    async with metered(routing=Routing(max_attempts=1)) as (gw, secret, key_id):
        response = await post(gw, secret, body("dead", model="dead/x"))
        assert response.status_code == 502
        [row] = await settled(gw, key_id)
        assert (row.status, row.attempts) == ("upstream_error", "dead/x=upstream_error")
        await assert_free(gw, key_id, row)


async def test_no_available_deployment_is_free_and_names_no_call(metered: Any, sim: Sim) -> None:
    routing = Routing(max_attempts=1, failure_threshold=1, cooldown=60)
    async with metered(routing=routing) as (gw, secret, key_id):
        assert (await post(gw, secret, body("open1", model="dead/x"))).status_code == 502
        response = await post(gw, secret, body("open2", model="dead/x"))
        assert response.status_code == 503
        assert "no available providers" in response.json()["error"]["message"]
        first, second = await settled(gw, key_id, 2)
        assert (second.attempts, second.deployment) == ("", "")  # no call was made
        await assert_free(gw, key_id, first)
        await assert_free(gw, key_id, second)


@pytest.mark.parametrize(("directive", "status"), [
    ("scenario=bogus", 400),  # the upstream refused the request (a 4xx that blames it)
    ("scenario=status_401", 502),  # the upstream refused our credentials
    ("scenario=status_500", 502),  # 5xx on every attempt
])
async def test_an_upstream_error_before_the_first_token_is_free(
    metered: Any, sim: Sim, directive: str, status: int
) -> None:
    async with metered(routing=Routing(max_attempts=2, backoff=0.01)) as (gw, secret, key_id):
        response = await post(gw, secret, body("err", directive))
        assert response.status_code == status
        [row] = await settled(gw, key_id)
        assert row.status == "upstream_error" and row.attempts
        await assert_free(gw, key_id, row)


async def test_a_first_token_timeout_is_free(metered: Any, sim: Sim) -> None:
    async with metered(routing=Routing(max_attempts=1), first_token=0.2) as (gw, secret, key_id):
        response = await post(gw, secret,
                              body("slow", "scenario=slow_first_token first_token_ms=5000"))
        assert response.status_code == 504
        [row] = await settled(gw, key_id)
        assert (row.status, row.error_type) == ("upstream_error", "timeout")
        await assert_free(gw, key_id, row)


async def test_a_client_abort_before_the_first_token_is_free(metered: Any, sim: Sim) -> None:
    async with metered(commit_grace=0.001) as (gw, secret, key_id):
        async with httpx.AsyncClient(timeout=10) as client, client.stream(
            "POST", f"{gw.url}/v1/chat/completions",
            json=body("early", "scenario=slow_first_token first_token_ms=5000"),
            headers={"authorization": f"Bearer {secret}"},
        ) as response:
            assert response.status_code == 200  # committed by the grace, then left
        [row] = await settled(gw, key_id)
        assert (row.status, row.cancelled) == ("client_abort", True)
        await assert_free(gw, key_id, row)


async def test_a_request_caught_in_admission_by_the_drain_is_free(
    metered: Any, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with metered() as (gw, secret, key_id):
        gateway = gw.running.gateway
        admit = gateway.accounts.admit

        async def admit_then_drain(*args: Any, **kwargs: Any) -> Any:
            admission = await admit(*args, **kwargs)
            gateway.begin_drain()  # SIGTERM arrives while this request is being admitted
            return admission

        monkeypatch.setattr(gateway.accounts, "admit", admit_then_drain)
        response = await post(gw, secret, body("drained"))
        assert response.status_code == 503
        assert "shutting down" in response.json()["error"]["message"]
        [row] = await settled(gw, key_id)
        assert (row.attempts, row.deployment) == ("", "")  # the upstream never saw it
        await assert_free(gw, key_id, row)
        assert not sim.records("drained")


# -- output relayed, then an end: the prompt and the output relayed ---------------------------


async def relayed_then(gw: Gw, key_id: str, payload: dict[str, Any], raw: bytes,
                       status: str) -> RequestRecord:
    [row] = await settled(gw, key_id)
    text = relayed_text(raw)
    assert text, "some output was relayed before the end"
    assert (row.status, row.usage_estimated) == (status, True)
    assert row.prompt_tokens == prompt_estimate(payload)
    assert row.completion_tokens == estimate_tokens(text)
    assert row.cost == row.prompt_tokens + 2 * row.completion_tokens
    assert await balance(gw, key_id) == START - row.cost
    return row


async def test_a_mid_stream_failure_pays_the_prompt_and_the_output_relayed(
    metered: Any, sim: Sim
) -> None:
    async with metered() as (gw, secret, key_id):
        payload = body("cut", "scenario=cut tokens=20")
        response = await post(gw, secret, payload)
        assert response.status_code == 200
        await relayed_then(gw, key_id, payload, response.content, "partial")


async def test_a_client_abort_after_output_pays_the_prompt_and_the_output_relayed(
    metered: Any, sim: Sim
) -> None:
    async with metered() as (gw, secret, key_id):
        payload = body("late", "tokens=400 interval_ms=10", max_tokens=400)
        raw = await read_stream(gw, secret, payload, lambda raw: raw.count(b"\n\ndata: ") >= 3)
        # What reached this client is a prefix of what the gateway relayed: compare with the
        # row's own count, which must cover at least what was seen.
        [row] = await settled(gw, key_id)
        assert (row.status, row.usage_estimated) == ("client_abort", True)
        assert row.completion_tokens >= estimate_tokens(relayed_text(raw.rsplit(b"\n\n", 1)[0]))
        assert row.prompt_tokens == prompt_estimate(payload)
        assert row.cost == row.prompt_tokens + 2 * row.completion_tokens > 0
        assert await balance(gw, key_id) == START - row.cost


async def test_a_stream_ended_by_the_drain_pays_the_prompt_and_the_output_relayed(
    metered: Any, sim: Sim
) -> None:
    async with metered(drain=0.3) as (gw, secret, key_id):
        payload = body("drain-late", "tokens=400 interval_ms=10", max_tokens=400)

        def drain_after_two(raw: bytes) -> bool:
            if raw.count(b"\n\ndata: ") == 2:
                gw.running.gateway.begin_drain()
            return False  # read on to the end

        raw = await read_stream(gw, secret, payload, drain_after_two)
        assert b'"finish_reason":"error"' in raw and b"[DONE]" not in raw
        await relayed_then(gw, key_id, payload, raw, "partial")


# -- unpriced models -------------------------------------------------------------------------------


async def test_a_metered_key_is_refused_a_model_without_a_price(metered: Any, sim: Sim) -> None:
    async with metered() as (gw, secret, key_id):
        # fake-anthropic/lorem has no price anywhere (config or built-in table).
        response = await post(gw, secret, body("unpriced", model="fake-anthropic/lorem"))
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["param"] == "model"
        assert "'fake-anthropic/lorem' has no price" in error["message"]
        assert "free = true" in error["message"]
        assert await gw.records(key_id=key_id) == [] and not sim.records("unpriced")
        assert await balance(gw, key_id) == START
        # A key without a balance is not billed: it may use it (its cost is recorded as 0).
        unmetered, _ = await new_key(gw)
        assert (await post(gw, unmetered, body("unpriced-ok",
                                               model="fake-anthropic/lorem"))).status_code == 200


async def test_a_model_marked_free_serves_metered_keys_at_no_cost(
    metered: Any, sim: Sim
) -> None:
    from gateway.accounts.pricing import FREE
    from gateway.config import ModelRoute

    models = {"gratis": ModelRoute(name="gratis", provider="fake-anthropic", model="lorem",
                                   price=FREE)}
    async with metered(models=models) as (gw, secret, key_id):
        response = await post(gw, secret, body("gratis", "tokens=5", model="gratis"))
        assert response.status_code == 200
        [row] = await settled(gw, key_id)
        assert row.status == "ok" and row.completion_tokens == 5 and row.cost == 0
        assert await balance(gw, key_id) == START


async def test_a_metered_key_only_reaches_the_priced_deployments_of_a_route(
    metered: Any, sim: Sim
) -> None:
    from gateway.config import Deployment, ModelRoute

    mixed = ModelRoute(name="mixed", provider="fake-anthropic", model="lorem", deployments=(
        Deployment("fake-anthropic", "lorem", priority=0),  # unpriced, and tried first
        Deployment("fake", "lorem", priority=1)))
    async with metered(models={"mixed": mixed}) as (gw, secret, key_id):
        response = await post(gw, secret, body("mixed", "tokens=3", model="mixed"))
        assert response.status_code == 200
        [row] = await settled(gw, key_id)
        assert (row.deployment, row.attempts) == ("fake/lorem", "fake/lorem=ok")
        assert row.cost == row.prompt_tokens + 2 * row.completion_tokens > 0


async def test_a_balance_set_elsewhere_refuses_unpriced_within_a_key_refresh(
    metered: Any, sim: Sim
) -> None:
    async with metered() as (gw, _, _):
        secret, key = await new_key(gw)  # no balance: may use anything
        assert (await post(gw, secret, body("c1", model="fake-anthropic/lorem"))).status_code \
            == 200
        # Set elsewhere (straight to the store): this process's cached row learns it within
        # a key refresh, and from then on the unpriced model is refused.
        await gw.running.gateway.store.update_key(key.id, {"balance": START})
        refresh = gw.running.gateway.config.accounts.key_refresh
        with trio.fail_after(refresh * 5 + 5):
            model = "fake-anthropic/lorem"
            while (response := await post(gw, secret, body("c2", model=model))  # noqa: ASYNC110
                   ).status_code == 200:
                await trio.sleep(refresh / 10)
        assert response.status_code == 403
        assert "has no price" in response.json()["error"]["message"]
